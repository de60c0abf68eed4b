"""Leaks: create/use/stop cycles leave no thread, file descriptor, object or memory behind,
and items are freed as soon as their futures are resolved.

Fast tier: ``FAST_CYCLES`` cycles per core; extended tier (``FASTBATCH_EXTENDED=1``):
``EXTENDED_CYCLES``. The cycles rotate through the ways a processor is used (arrays,
generic items one call each or as a list, health monitor, pause, failures, stop(0) with a
batch still running), with batches big enough that a leaked buffer or stats window per
cycle would show in the RSS bound.
"""

from __future__ import annotations

import concurrent.futures
import gc
import os
import threading
import weakref

import numpy as np
import psutil
import pytest

import fastbatch
from fastbatch import BatchProcessor, BatchProcessorConfig

from fb_reliability import EXTENDED, FIGURES, fastbatch_threads, join_threads, same

FAST_CYCLES = 200
EXTENDED_CYCLES = 1000
RSS_BOUND = 16 * 1024 * 1024  # a leaked 64 KiB batch buffer per cycle would exceed it
SANITIZED = any(name in os.environ.get("LD_PRELOAD", "") for name in ("libasan", "libtsan"))


class Tracked(np.ndarray):
    """An array item whose end can be awaited (ndarray itself takes no weak reference)."""


class Tok:
    __slots__ = ("__weakref__", "id")

    def __init__(self, ident: int) -> None:
        self.id = ident


def freed_event(obj) -> threading.Event:
    event = threading.Event()
    weakref.finalize(obj, event.set)
    return event


def cycle(i: int) -> None:
    kind = i % 6
    release = threading.Event()
    fields = dict(min_batch_size=1, initial_batch_size=8, max_batch_size=8, batch_timeout=0.001,
                  enable_health_monitoring=kind == 1, health_check_interval=0.002, retry_delay=0.0,
                  max_retries=1, batch_generic_items=kind == 3, max_workers=2)
    processor = BatchProcessor(BatchProcessorConfig(**fields), name=f"leak-{i}")
    if kind in (2, 3):
        processor.start(lambda x: [("r", t) for t in x] if isinstance(x, list) else ("r", x))
        futures = [processor.enqueue_predict(Tok(j)) for j in range(12)]
    else:
        def func(batch):
            if kind == 4 and batch[0, 0] == 0:
                raise ValueError("fails")
            if kind == 5:
                release.wait(5)
            return batch * 2

        processor.start(func)
        if kind == 1:
            processor.pause()
        futures = [processor.enqueue_predict(np.full(1000, float(j))) for j in range(24)]
        if kind == 1:
            processor.resume()
    if kind == 5:
        # Abandons the running batch, which returns a moment later (within stop's grace).
        timer = threading.Timer(0.02, release.set)
        timer.start()
        processor.stop(timeout=0)
        timer.join()
    concurrent_wait(futures)
    processor.stop(timeout=5)
    left = join_threads(fastbatch_threads(), timeout=5)
    assert not left, f"cycle {i}: threads left {left}"


def concurrent_wait(futures) -> None:
    _, not_done = concurrent.futures.wait(futures, timeout=10)
    assert not not_done, f"{len(not_done)} futures never finished"


def live(types) -> int:
    return sum(1 for o in gc.get_objects() if issubclass(type(o), types))  # type(): no __class__ lookup (torch warns on some)


def test_create_use_stop_cycles_leave_nothing_behind(backend):
    cycles = EXTENDED_CYCLES if EXTENDED else FAST_CYCLES
    process = psutil.Process()
    tracked = (BatchProcessor, fastbatch.BatchFuture, backend.RequestQueue, backend.BatchAssembler,
               backend.StatsWindow)
    for i in range(12):  # warm-up: imports, allocator pools, the first thread stacks
        cycle(i)
    gc.collect()
    fds, rss, objects = process.num_fds(), process.memory_info().rss, live(tracked)
    for i in range(cycles):
        cycle(i)
    gc.collect()
    threads = fastbatch_threads()
    FIGURES["cycles"] += cycles
    FIGURES["threads_left"] += len(threads)
    grown = process.memory_info().rss - rss
    assert not threads, [t.name for t in threads]
    assert process.num_fds() <= fds, f"file descriptors grew from {fds} to {process.num_fds()}"
    assert live(tracked) <= objects, f"fastbatch objects alive grew from {objects} to {live(tracked)}"
    if not SANITIZED:  # ASan's quarantine and TSan's shadow memory grow RSS by design
        assert grown < RSS_BOUND, f"RSS grew by {grown / 2**20:.1f} MiB over {cycles} cycles"


# -- items are freed once their futures are resolved ------------------------------------------

def test_array_item_is_freed_once_its_future_has_a_result(make_processor):
    processor = make_processor(lambda b: b * 2, max_batch_size=4)
    item = np.arange(8.0).view(Tracked)
    freed = freed_event(item)
    future = processor.enqueue_predict(item)
    del item
    assert same(future.result(timeout=5), np.arange(8.0) * 2)
    # Nothing else is enqueued: the worker must not keep the last batch's items alive.
    assert freed.wait(2), "the item is still referenced after its future was resolved"


def test_failed_item_is_freed_while_its_future_is_still_held(make_processor):
    def func(batch):
        raise ValueError("this batch fails")

    processor = make_processor(func, max_retries=0)
    item = np.arange(8.0).view(Tracked)
    freed = freed_event(item)
    future = processor.enqueue_predict(item)
    del item
    assert isinstance(future.exception(timeout=5), ValueError)
    processor.stop(timeout=5)
    gc.collect()
    # The caller keeps the future (and so its exception and traceback): the item must not
    # be kept alive through the worker's frames in that traceback.
    assert freed.wait(2), "a failed future's traceback keeps its batch's items alive"
    assert future.done()


@pytest.mark.parametrize("generic_list", [False, True])
def test_generic_item_is_freed_once_its_future_has_a_result(make_processor, generic_list):
    func = (lambda items: [("r", t.id) for t in items]) if generic_list else (lambda t: ("r", t.id))
    processor = make_processor(func, batch_generic_items=generic_list, max_batch_size=4)
    item = Tok(7)
    freed = freed_event(item)
    future = processor.enqueue_predict(item)
    del item
    assert future.result(timeout=5) == ("r", 7)
    assert freed.wait(2), "the item is still referenced after its future was resolved"


def test_cancelled_item_is_freed_once_the_worker_passes_it(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1)
    processor.enqueue_predict(np.arange(8.0))
    assert gate.entered.wait(5)
    item = np.arange(8.0).view(Tracked)
    freed = freed_event(item)
    future = processor.enqueue_predict(item)
    del item
    assert future.cancel()
    gate.release.set()
    after = processor.enqueue_predict(np.arange(8.0))
    after.result(timeout=5)
    assert freed.wait(2), "a cancelled item is still referenced after the worker skipped it"


def test_refused_item_is_not_kept(make_processor, gate):
    gate.hold()
    processor = make_processor(gate, max_batch_size=1, max_queue_size=1)
    processor.enqueue_predict(np.arange(8.0))
    assert gate.entered.wait(5)
    processor.enqueue_predict(np.arange(8.0))  # fills the queue
    item = np.arange(8.0).view(Tracked)
    freed = freed_event(item)
    refused = processor.enqueue_predict(item, timeout=0)
    del item
    assert isinstance(refused.exception(timeout=0), fastbatch.QueueFullError)
    gc.collect()
    assert freed.wait(2), "a refused item is kept alive"
    gate.release.set()
