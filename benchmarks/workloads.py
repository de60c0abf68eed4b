"""The six benchmark workloads, each driving any of three contenders.

A *contender* is a way to get a batcher: fastbatch with the compiled core, fastbatch with
the pure-Python twin, or the plain-stdlib batcher of ``stdlib_batcher.py``. The core is
chosen by patching ``fastbatch.core._backend`` (as ``tests/processor/conftest.py`` does) for
the lifetime of one processor, so all three contenders run in one process and one run.

Every workload function takes a contender (plus sizes) and returns a flat dict of
metrics. Workloads check what they measure: wrong results raise ``BenchmarkError``, and
every wait is bounded (``WAIT_S``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import importlib
import importlib.util
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

_SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
if importlib.util.find_spec("fastbatch") is None and os.path.isdir(_SRC):
    sys.path.insert(0, _SRC)  # the working tree, as `PYTHONPATH=src` gives it

with warnings.catch_warnings():
    # The selector warns when the compiled core is missing; the contender list says so.
    warnings.simplefilter("ignore", RuntimeWarning)
    import fastbatch
    from fastbatch.core import _backend

try:  # works both as `benchmarks.workloads` and with benchmarks/ on sys.path
    from .stdlib_batcher import StdlibBatcher
except ImportError:
    from stdlib_batcher import StdlibBatcher  # type: ignore[no-redef]

__all__ = [
    "BenchmarkError", "Contender", "contenders", "fastbatch_config", "predict_one_producer",
    "enqueue_no_futures", "predict_four_producers", "light_load_latency", "image_items",
    "stats_on_full_window", "copy_bandwidth", "make_images", "WAIT_S",
]

#: Upper bound of any single wait in a workload (seconds): a hang fails, never blocks.
WAIT_S = 120.0
ROW_WIDTH = 10
IMAGE_SHAPE = (3, 224, 224)
_BACKEND_NAMES = ("RequestQueue", "BatchAssembler", "StatsWindow", "monotonic_ns", "NAME")


class BenchmarkError(RuntimeError):
    """A workload saw a wrong result, a lost item or a hang."""


# -- contenders ------------------------------------------------------------------------


def fastbatch_config(max_batch_size: int, batch_timeout: float,
                     monitoring_window: int = 100) -> fastbatch.BatchProcessorConfig:
    """fastbatch configured for throughput, as a user tuning it would.

    Fixed batch size (adaptive sizing off), unbounded queue, no health-monitor thread, no
    periodic ``gc.collect`` by the worker. Statistics stay on (they are part of what
    fastbatch does; workload 6 reads them), and so does the priority queue (the stdlib
    batcher uses ``queue.PriorityQueue`` too).
    """
    return fastbatch.BatchProcessorConfig(
        initial_batch_size=max_batch_size, min_batch_size=1, max_batch_size=max_batch_size,
        max_queue_size=0, batch_timeout=batch_timeout, enable_adaptive_batching=False,
        enable_health_monitoring=False, enable_memory_optimization=False,
        enable_priority_queue=True, enable_monitoring=True,
        monitoring_window=monitoring_window, retry_delay=0.0,
    )


@dataclass(frozen=True)
class Contender:
    """One way of batching: ``name`` is ``"compiled"``, ``"python"`` or ``"stdlib"``."""

    name: str
    core: ModuleType | None  # the fastbatch core to patch in; None for the stdlib batcher

    @property
    def is_fastbatch(self) -> bool:
        return self.core is not None

    @contextlib.contextmanager
    def batcher(self, max_batch_size: int, batch_timeout: float,
                monitoring_window: int = 100) -> Iterator[Any]:
        """An unstarted batcher; stopped (and the backend restored) on exit."""
        if self.core is None:
            b = StdlibBatcher(max_batch_size=max_batch_size, batch_timeout=batch_timeout)
            try:
                yield b
            finally:
                b.stop(timeout=WAIT_S)
            return
        saved = {name: getattr(_backend, name) for name in _BACKEND_NAMES}
        try:
            for name in _BACKEND_NAMES[:-1]:
                setattr(_backend, name, getattr(self.core, name))
            _backend.NAME = self.name
            processor: Any = fastbatch.BatchProcessor(
                fastbatch_config(max_batch_size, batch_timeout, monitoring_window),
                name=f"bench-{self.name}")
            try:
                yield processor
                _check_core(processor, self.core)
            finally:
                processor.stop(timeout=WAIT_S)
        finally:
            for name, value in saved.items():
                setattr(_backend, name, value)

    def as_image_item(self, image: np.ndarray) -> np.ndarray:
        """One image as this contender's one-sample item.

        fastbatch reads an ``ndim >= 2`` array as a mini-batch of ``shape[0]`` samples, so
        one image is passed as ``(1, 3, 224, 224)``; the stdlib batcher stacks items, so it
        gets ``(3, 224, 224)``. Both are views of the same memory.
        """
        return image[np.newaxis] if self.is_fastbatch else image


def _check_core(processor: Any, core: ModuleType) -> None:
    """Fail if the processor did not actually run on ``core`` (a patch that missed)."""
    found = [getattr(processor, "_queue", None),
             getattr(getattr(processor, "_worker", None), "assembler", None),
             getattr(getattr(processor, "stats", None), "_latency_ms", None)]
    for obj in found:
        if obj is not None and type(obj).__module__ != core.__name__:
            raise BenchmarkError(f"processor used {type(obj).__module__}.{type(obj).__name__}, "
                                 f"expected the core {core.__name__}: the backend patch missed")


def contenders(names: tuple[str, ...] = ("compiled", "python", "stdlib")) -> list[Contender]:
    """The contenders available here, in the order asked (a missing compiled core is left out)."""
    out = []
    for name in names:
        if name == "stdlib":
            out.append(Contender("stdlib", None))
            continue
        module = {"compiled": "fastbatch.core._core", "python": "fastbatch.core._core_py"}[name]
        try:
            out.append(Contender(name, importlib.import_module(module)))
        except ImportError as exc:
            if name == "compiled":
                # Measuring without it would compare the wrong things and look like a result.
                raise BenchmarkError(
                    f"the compiled core cannot be imported from {os.path.dirname(fastbatch.__file__)} ({exc}): "
                    "run the benchmarks against the installed package (`pip install .`, then run them "
                    "without PYTHONPATH=src), or build the core in place first (`python setup.py "
                    "build_ext --inplace`); leave the compiled contender out only on purpose "
                    "(--contenders python,stdlib)") from None
            raise
    return out


# -- helpers ---------------------------------------------------------------------------


def _times_two(batch: np.ndarray) -> np.ndarray:
    return batch * 2


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, ROW_WIDTH))


def _wait_all(futures: list[Any], t_last: float) -> float:
    """The time every future was done: ``t_last`` if they all were, else later."""
    if all(f.done() for f in futures):
        return t_last
    deadline = time.monotonic() + WAIT_S
    for f in futures:  # result() per future: relies on nothing but the Future API
        try:
            f.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise BenchmarkError(f"futures still pending after {WAIT_S} s") from None
        except Exception:  # noqa: BLE001 - a failed item is done; _check_rows reports it
            pass
    return time.perf_counter()


def _results(futures: list[Any]) -> list[Any]:
    """Every future's result, as the producer of (1), (3), (5) collects them (on the clock).

    The last future is waited for first (results come in enqueue order), so the others
    are normally done already and ``result`` just returns.
    """
    futures[-1].result(timeout=WAIT_S)
    return [f.result(timeout=WAIT_S) for f in futures]


def _check_rows(results: list[Any], rows: np.ndarray) -> None:
    got = np.stack(results)
    if got.shape != rows.shape or not np.array_equal(got, rows * 2):
        bad = int(np.sum(np.any(got != rows * 2, axis=1))) if got.shape == rows.shape else len(rows)
        raise BenchmarkError(f"{bad} of {len(rows)} results differ from row * 2")


def _percentile(values: Any, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# -- (1) one producer, enqueue_predict --------------------------------------------------


def predict_one_producer(contender: Contender, n: int = 50_000, batch: int = 200,
                         timeout: float = 0.005, seed: int = 1) -> dict[str, Any]:
    """(1) One producer, ``n`` ``enqueue_predict`` of 10-float64 rows; every result checked.

    Clock: first enqueue → every result collected with ``result()`` (what a caller of
    ``enqueue_predict`` does with its futures). Comparing the results with ``row * 2``
    is off the clock.
    """
    rows = _rows(n, seed)
    items = list(rows)
    gc.collect()
    with contender.batcher(batch, timeout) as b:
        b.start(_times_two)
        enqueue = b.enqueue_predict
        t0 = time.perf_counter()
        futures = [enqueue(x) for x in items]
        results = _results(futures)
        t1 = time.perf_counter()
    _check_rows(results, rows)
    return {"items_per_s": n / (t1 - t0), "seconds": t1 - t0, "n": n}


# -- (2) one producer, enqueue (no futures) ---------------------------------------------


class _RowCounter:
    """Batch function of workload 2: counts rows and sums them; sets ``done`` at ``n``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.checksum = 0.0
        self.done = threading.Event()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = batch * 2
        self.checksum += float(batch.sum())
        self.seen += len(batch)
        if self.seen >= self.n:
            self.done.set()
        return out


def enqueue_no_futures(contender: Contender, n: int = 50_000, batch: int = 200,
                       timeout: float = 0.005, seed: int = 2) -> dict[str, Any]:
    """(2) As (1) with ``enqueue`` (no futures); clock stops when the function saw every row."""
    rows = _rows(n, seed)
    items = list(rows)
    counter = _RowCounter(n)
    gc.collect()
    with contender.batcher(batch, timeout) as b:
        b.start(counter)
        enqueue = b.enqueue
        t0 = time.perf_counter()
        for x in items:
            enqueue(x)
        if not counter.done.wait(WAIT_S):
            raise BenchmarkError(f"the batch function saw {counter.seen} of {n} rows")
        t1 = time.perf_counter()
    if counter.seen != n or not np.isclose(counter.checksum, float(rows.sum()), rtol=1e-9):
        raise BenchmarkError(f"the batch function saw {counter.seen} rows (expected {n}) "
                             f"or a wrong checksum {counter.checksum} != {rows.sum()}")
    return {"items_per_s": n / (t1 - t0), "seconds": t1 - t0, "n": n}


# -- (3) four producers ---------------------------------------------------------------


def predict_four_producers(contender: Contender, n: int = 50_000, batch: int = 200,
                           timeout: float = 0.005, producers: int = 4,
                           seed: int = 3) -> dict[str, Any]:
    """(3) ``producers`` threads doing (1) concurrently, ``n`` items in all.

    Clock: the start barrier → the last producer has collected all its results.
    """
    rows = _rows(n, seed)
    parts = np.array_split(np.arange(n), producers)
    chunks = [list(rows[p]) for p in parts]
    results: list[list[Any]] = [[] for _ in range(producers)]
    ends = [0.0] * producers
    errors: list[BaseException] = []
    gc.collect()
    with contender.batcher(batch, timeout) as b:
        b.start(_times_two)
        barrier = threading.Barrier(producers + 1)

        def produce(k: int) -> None:
            try:
                enqueue = b.enqueue_predict
                barrier.wait(WAIT_S)
                futures = [enqueue(x) for x in chunks[k]]
                got = _results(futures)
                ends[k] = time.perf_counter()
                results[k] = got
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(k,), name=f"bench-producer-{k}")
                   for k in range(producers)]
        for t in threads:
            t.start()
        barrier.wait(WAIT_S)
        t0 = time.perf_counter()
        for t in threads:
            t.join(WAIT_S)
        if errors or any(t.is_alive() for t in threads):
            raise BenchmarkError(f"a producer failed or hung: {errors!r}")
        t1 = max(ends)
    _check_rows([r for part in results for r in part], rows[np.concatenate(parts)])
    return {"items_per_s": n / (t1 - t0), "seconds": t1 - t0, "n": n}


# -- (4) light load: latency ------------------------------------------------------------


class _SlowModel:
    """Batch function of workload 4: sleeps ``seconds`` (releasing the GIL, as a real
    model does) and records how long each call really took."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.durations_ns: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter_ns()
        time.sleep(self.seconds)
        out = batch * 2
        self.durations_ns.append(time.perf_counter_ns() - t0)
        return out


def _stamp(store: list[int], i: int, _future: Any) -> None:
    store[i] = time.perf_counter_ns()


def light_load_latency(contender: Contender, rate: float = 2_000.0, duration: float = 3.0,
                       batch: int = 200, timeout: float = 0.005, batch_s: float = 0.001,
                       warmup: int = 20, seed: int = 4) -> dict[str, Any]:
    """(4) Arrivals paced at ``rate``/s (the producer sleeps in between), a 1 ms function.

    Latency per item: ``perf_counter_ns`` just before ``enqueue_predict`` → its done
    callback. The bound checked is ``timeout + batch time + 1 ms``, batch time being the
    median measured duration of the batch function. The first ``warmup`` items are not
    counted. ``latencies_ms`` holds every counted item's latency (ms, 0.1 µs resolution),
    in enqueue order, for the latency CDF of ``plot.py``.
    """
    n = int(rate * duration)
    rows = _rows(n, seed)
    items = list(rows)
    period = 1.0 / rate
    start_ns = [0] * n
    done_ns = [0] * n
    model = _SlowModel(batch_s)
    gc.collect()
    with contender.batcher(batch, timeout) as b:
        b.start(model)
        enqueue = b.enqueue_predict
        futures = []
        perf, perf_ns, sleep = time.perf_counter, time.perf_counter_ns, time.sleep
        t_begin = perf()
        for i in range(n):
            delay = t_begin + i * period - perf()
            if delay > 0:
                sleep(delay)
            start_ns[i] = perf_ns()
            f = enqueue(items[i])
            f.add_done_callback(functools.partial(_stamp, done_ns, i))
            futures.append(f)
        t_end = perf()
        results = _results(futures)
    _check_rows(results, rows)
    lat_ms = (np.array(done_ns[warmup:], dtype=np.int64)
              - np.array(start_ns[warmup:], dtype=np.int64)) / 1e6
    if np.any(lat_ms <= 0):
        raise BenchmarkError("a done callback was never stamped")
    fn_ms = np.array(model.durations_ns, dtype=np.float64) / 1e6
    bound_ms = timeout * 1e3 + float(np.median(fn_ms)) + 1.0
    p99 = _percentile(lat_ms, 99)
    return {
        "p50_ms": _percentile(lat_ms, 50), "p99_ms": p99, "max_ms": float(lat_ms.max()),
        "bound_ms": bound_ms, "p99_within_bound": bool(p99 <= bound_ms),
        "batch_fn_ms_median": float(np.median(fn_ms)), "batches": len(fn_ms),
        "achieved_rate": n / (t_end - t_begin), "n": n,
        "latencies_ms": np.round(lat_ms, 4).tolist(),
    }


# -- (5) image-sized items ---------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def make_images(n: int, seed: int = 5) -> np.ndarray:
    """``n`` distinct random float32 images of ``IMAGE_SHAPE`` in one array (cached)."""
    return np.random.default_rng(seed).random((n, *IMAGE_SHAPE), dtype=np.float32)


def copy_bandwidth(images: np.ndarray, batch: int = 32) -> float:
    """Single-thread ``np.copyto`` of every image into a preallocated batch buffer: GB/s.

    The same bytes, in the same order and the same per-item pieces, that a batcher must
    copy into its batch buffer; this is the ceiling workload 5 is compared with.
    """
    buf = np.empty((batch, *IMAGE_SHAPE), dtype=np.float32)
    items = list(images)
    copyto = np.copyto
    buf.fill(0.0)  # fault the pages in before the clock starts
    t0 = time.perf_counter()
    j = 0
    for item in items:
        copyto(buf[j], item)
        j = j + 1 if j + 1 < batch else 0
    t1 = time.perf_counter()
    return images.nbytes / (t1 - t0) / 1e9


def _first_value(batch: np.ndarray) -> np.ndarray:
    return batch[:, 0, 0, 0].copy()  # one value per image: new memory, cheap, checkable


def image_items(contender: Contender, n: int = 2_000, batch: int = 32,
                timeout: float = 0.005) -> dict[str, Any]:
    """(5) ``n`` image items (3×224×224 float32), batch ``batch``: items/s and GB/s.

    Each batcher first runs one untimed batch (warm-up). Compared with the machine's
    own single-thread copy bandwidth on the same images,
    measured just before and just after the run and averaged (``copy_gbps``):
    ``fraction_of_copy`` = GB/s / copy GB/s.
    """
    images = make_images(n)
    items = [contender.as_image_item(img) for img in images]
    gc.collect()
    copy_before = copy_bandwidth(images, batch)
    with contender.batcher(batch, timeout) as b:
        b.start(_first_value)
        enqueue = b.enqueue_predict
        # One batch before the clock: the first touch of a fresh batch buffer costs page
        # faults (on this VM ~50 ms for 19 MB), a one-off that every contender pays once.
        _results([enqueue(x) for x in items[:batch]])
        t0 = time.perf_counter()
        futures = [enqueue(x) for x in items]
        results = _results(futures)
        t1 = time.perf_counter()
    got = np.array([np.ravel(r)[0] for r in results])
    if not np.array_equal(got, images[:, 0, 0, 0]):
        raise BenchmarkError("an image's result is not its own first value")
    copy_gbps = (copy_before + copy_bandwidth(images, batch)) / 2  # brackets the run
    gbps = images.nbytes / (t1 - t0) / 1e9
    return {"items_per_s": n / (t1 - t0), "gbps": gbps, "copy_gbps": copy_gbps,
            "fraction_of_copy": gbps / copy_gbps, "seconds": t1 - t0, "n": n}


# -- (6) get_stats on a full window --------------------------------------------------------


def _poll_stats(processor: Any, stop: threading.Event, interval: float, calls: list[int]) -> None:
    get_stats = processor.get_stats
    while not stop.is_set():
        get_stats()
        calls[0] += 1
        if interval:
            stop.wait(interval)


def _busy_python(processor: Any, stop: threading.Event, interval: float, calls: list[int]) -> None:
    """The control for the poller: Python work that holds the GIL, and nothing else."""
    while not stop.is_set():
        x = 0
        for i in range(2_000):
            x += i
        calls[0] += 1
        if interval:
            stop.wait(interval)


def _drain_rate(processor: Any, items: list[np.ndarray],
                competitor: Callable[..., None] | None, interval: float) -> tuple[float, int]:
    """Worker-only throughput: queue ``items`` while paused, then time the drain while
    ``competitor`` (if any) runs in another thread."""
    processor.pause()
    futures = [processor.enqueue_predict(x) for x in items]
    stop, calls = threading.Event(), [0]
    thread = None
    if competitor is not None:
        thread = threading.Thread(target=competitor, args=(processor, stop, interval, calls),
                                  name="bench-stats-poller")
        thread.start()
        while calls[0] == 0:  # the competitor is running before the clock starts
            time.sleep(0.0005)
    t0 = time.perf_counter()
    processor.resume()
    futures[-1].result(timeout=WAIT_S)
    t1 = _wait_all(futures, time.perf_counter())
    stop.set()
    if thread is not None:
        thread.join(WAIT_S)
    return len(items) / (t1 - t0), calls[0]


def stats_on_full_window(contender: Contender, calls: int = 200, fill: int = 12_000,
                         drain: int = 100_000, interval: float = 0.0, rounds: int = 3,
                         batch: int = 200, seed: int = 6) -> dict[str, Any]:
    """(6) ``get_stats()`` with the 10,000-item latency window full.

    ``stats_us_p50``: time per call, over ``calls`` calls, each made right after one more
    batch of ``batch`` rows was processed (so the window changed since the last call).

    Pause check: ``drain`` items are queued while the processor is paused, then the
    worker drains them alone, once without and once with a thread calling ``get_stats()``
    back to back (``interval`` seconds apart; 0 by default, the harshest case: some
    ``get_stats`` is running all the time), and once with a control thread that only
    spins in Python. ``drain_ratio`` = worker rate with the poller / without (1.0: the
    worker never waited for ``get_stats``; 0.5: it stood still half the time);
    ``drain_ratio_control`` the same for the control, for context: what any thread busy
    in Python costs the worker on CPython (often well below 0.5: the worker releases the
    GIL around every core call and then waits up to the 5 ms switch interval to get it
    back). ``pause_vs_control`` = poller rate / control rate: above 1, ``get_stats``
    costs the worker less than plain Python work would (it releases the GIL for part of
    its work); below 1, it stalls the worker beyond its share of the GIL. Each of the
    three drains runs ``rounds`` times, interleaved; medians are kept. The stdlib
    batcher has no statistics: ``{"n/a": True}``.
    """
    if not contender.is_fastbatch:
        return {"n/a": True}
    rows = _rows(max(fill, drain), seed)
    gc.collect()
    with contender.batcher(batch, 0.005, monitoring_window=100) as p:
        p.start(_times_two)
        futures = [p.enqueue_predict(x) for x in rows[:fill]]
        _wait_all(futures, 0.0)
        window = getattr(getattr(p, "stats", None), "_latency_ms", None)
        if window is not None and len(window) < 10_000:
            raise BenchmarkError(f"the latency window holds {len(window)} values, not 10,000")
        p.get_stats()
        times = []
        fresh = list(rows[:batch])
        stats = getattr(p, "stats", None)
        for _ in range(calls):
            # A batch between two calls: every call sees a window that changed, so a
            # cached snapshot cannot stand in for the computation.
            before = getattr(stats, "batch_count", None)
            done = [p.enqueue_predict(x) for x in fresh]
            done[-1].result(timeout=WAIT_S)
            deadline = time.monotonic() + 1.0
            while (before is not None and getattr(stats, "batch_count", before) == before
                   and time.monotonic() < deadline):
                time.sleep(0.0001)  # the worker records the batch just after resolving it
            t0 = time.perf_counter_ns()
            p.get_stats()
            times.append(time.perf_counter_ns() - t0)
        items = list(rows[:drain])
        runs: dict[str, list[float]] = {"alone": [], "poller": [], "control": []}
        polls = 0
        for _ in range(rounds):  # interleaved, so that drift hits all three alike
            runs["alone"].append(_drain_rate(p, items, None, interval)[0])
            rate, calls_made = _drain_rate(p, items, _poll_stats, interval)
            runs["poller"].append(rate)
            polls += calls_made
            runs["control"].append(_drain_rate(p, items, _busy_python, interval)[0])
    base, polled, control = (float(np.median(runs[k])) for k in ("alone", "poller", "control"))
    us = np.array(times, dtype=np.float64) / 1e3
    return {"stats_us_p50": float(np.median(us)), "stats_us_p99": _percentile(us, 99),
            "drain_items_per_s": base, "drain_items_per_s_polled": polled,
            "drain_ratio": polled / base, "drain_ratio_control": control / base,
            "pause_vs_control": polled / control, "polls": polls}
