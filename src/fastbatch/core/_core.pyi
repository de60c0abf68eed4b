"""Type stubs and the behavioural contract of the core.

``fastbatch.core._core`` (compiled, Cython) and ``fastbatch.core._core_py`` (pure Python) both
implement exactly what is written here; ``fastbatch.core._backend`` picks one. The tests in
``tests/core`` run every case against both.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from typing_extensions import disjoint_base

__all__ = ["BatchAssembler", "RequestQueue", "StatsWindow", "assemble_padded", "monotonic_ns"]
import numpy.typing as npt

def monotonic_ns() -> int:
    """The clock every core timestamp uses (monotonic, nanoseconds).

    Compare core timestamps only with this function, never with another clock.
    """

@disjoint_base
class RequestQueue:
    """Bounded multi-producer queue of requests, FIFO or by priority.

    A request is ``(item, future, samples, nbytes, priority)`` plus an enqueue timestamp
    taken by :func:`monotonic_ns` inside ``put``. ``item`` and ``future`` are opaque
    Python objects (``future`` may be ``None``); the queue holds a strong reference to
    each until it hands them out.

    Order: with ``prioritized=False`` strictly FIFO (``priority`` is ignored); with
    ``prioritized=True`` a binary heap on ``(priority, sequence)``: lower priority values
    first, FIFO among equal priorities (sequence is a per-queue counter).

    Lanes: every request is put into one of ``lanes`` lanes, and a batch holds the
    requests of one lane only. Each lane has a tag (any object, held by the queue); a put
    names the lane and the tag it expects, and is refused with ``LaneChangedError`` when
    the lane has another tag by then. Lane 0 is open from the start with the tag
    ``None``, so a queue used without lanes needs none of this. ``open_lane(tag)``
    gives a tag a lane: the next one never opened, else the first empty lane not
    pinned (its old tag is dropped), else -1. The head of the queue is the smallest
    lane head in the order above; ``capacity`` counts the requests of all lanes.

    Every blocking wait happens with the GIL released (compiled core) and wakes on
    ``close()``. Timeouts: ``None`` waits forever, ``0`` does not wait, a negative or NaN
    timeout raises ``ValueError``.
    """

    def __init__(self, capacity: int = 0, prioritized: bool = False, lanes: int = 1) -> None:
        """``capacity`` is the maximum number of queued requests; 0 means unbounded.

        Raises ``ValueError`` for a negative capacity or ``lanes < 1``, ``TypeError`` for
        a non-integer.
        """
    @property
    def capacity(self) -> int: ...
    @property
    def lanes(self) -> int:
        """Number of lanes (the ``lanes`` argument)."""
    def open_lane(self, tag: object) -> int:
        """Give ``tag`` a lane and return its index, or -1 when every lane is in use.

        A lane is in use while it holds requests, is pinned (``set_row_schema``) or a
        lingering ``take_batch`` is filling a batch from it.
        """
    def lane_tag(self, lane: int) -> object:
        """The tag of ``lane`` (``None`` for a lane never opened)."""
    @property
    def closed(self) -> bool: ...
    @property
    def queued_samples(self) -> int:
        """Sum of ``samples`` over the queued requests."""
    @property
    def total_puts(self) -> int:
        """Requests accepted by ``put`` since the queue was created."""
    def __len__(self) -> int:
        """Number of queued requests."""
    def put(
        self,
        item: object,
        future: object | None = None,
        samples: int = 1,
        nbytes: int = 0,
        priority: int = 0,
        timeout: float | None = None,
        lane: int = 0,
        tag: object = None,
    ) -> None:
        """Append a request to ``lane``, waiting while the queue is full.

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds (at once for 0).
            QueueClosedError: the queue is closed, or was closed while waiting.
            LaneChangedError: the lane's tag is not ``tag`` (checked before and again
                after any wait for room).
            ValueError: ``samples < 1``, ``nbytes < 0``, ``lane`` out of range, or a
                negative/NaN ``timeout``.
        """
    def set_row_schema(
        self, dtype: npt.DTypeLike, shape: tuple[int, ...], lane: int = 0, max_samples: int = 0, max_bytes: int = 0
    ) -> None:
        """Set what ``put_row`` accepts: samples of sample shape ``shape`` (1 to 31 sizes)
        and ``dtype``, at most ``max_samples`` of them (0: any number) in at most
        ``max_bytes`` bytes (0: any size) a put, queued into ``lane`` with its tag. The
        lane is pinned: it keeps its tag for the queue's lifetime.

        Replaces any earlier schema; a new queue has none.

        Raises:
            ValueError: ``shape`` is not a tuple of 1 to 31 integers ``>= 0``, a limit is
                negative, or ``lane`` is out of range or was never opened.
            TypeError: ``dtype`` is not a dtype, or a size or limit not an integer.
        """
    def put_row(
        self, item: object, future: object | None = None, timeout: float | None = None
    ) -> bool:
        """``put(item, future, samples, item.nbytes, 2, timeout, lane, tag)`` for samples
        of the schema, into the schema's lane with that lane's tag.

        ``item`` is taken when it is exactly a ``numpy.ndarray`` (not a subclass) whose
        dtype is the schema's (the same object or an equivalent one, as ``==`` on dtypes
        says) and either 1-D and equal in shape to a 1-D sample shape (one sample) or of
        shape ``(n, *shape)`` with ``n >= 1`` (n samples; no more than ``max_samples``
        when set), of no more than ``max_bytes`` bytes when set. Then it is queued as
        ``put`` would, with priority 2, and True is returned. Otherwise — or when no
        schema is set — False is returned, nothing is queued and ``timeout`` is not
        looked at.

        Raises (only for an item taken): as ``put`` — ``QueueFullError``,
        ``QueueClosedError``, ``ValueError`` for a negative/NaN ``timeout``.
        """
    def take_batch(
        self,
        max_samples: int,
        max_bytes: int = 0,
        linger: float = 0.0,
        timeout: float | None = None,
        tagged: bool = False,
        bucket: bool = False,
        until_ns: int = 0,
        generation: int = -1,
    ) -> tuple[Any, ...] | None:
        """Remove and return one batch: ``(items, futures, enqueue_ns)`` in queue order;
        with ``tagged``, ``(items, futures, enqueue_ns, tag)``, ``tag`` being the tag
        the batch's requests were put with.

        1. Wait until the queue holds a request and is not paused (a closed queue is
           drained even when paused). If ``timeout`` passes first, return ``None``; if the
           queue is closed and empty, raise ``QueueClosedError``.
        2. Take the head request, always, even if its ``samples`` exceed ``max_samples``
           or its ``nbytes`` exceed ``max_bytes`` (a request is never split and never
           stuck). Its lane is the batch's lane. The batch deadline is that request's
           enqueue time + ``linger`` seconds, or ``until_ns`` (a ``monotonic_ns`` time;
           0: none) when that is later and ``linger`` is not infinite.
        3. While the batch holds fewer than ``max_samples`` samples (and, when
           ``max_bytes > 0``, fewer than ``max_bytes`` bytes): if the head request of the
           batch's lane fits in the room left (samples and bytes) take it; if it does
           not fit, stop; if the lane is empty, stop when the queue is closed or the
           deadline has passed, otherwise wait for a put until the deadline (puts into
           other lanes do not end the wait). ``pause()`` during this step does not
           interrupt it.

           With ``bucket``: the batch is filled once, when the lane's requests could
           fill the room (samples or bytes), or the queue is closed, or the deadline has
           passed (waiting for a put until then, as above). Then the lane's requests
           are ranked: first those passed over by an earlier bucketed take of this lane
           (queued when it chose), then by distance of their ``nbytes`` to the head
           request's, then in queue order; taken in rank order while they fit (one
           that does not fit is skipped, not a stop), and handed out in queue order.
           So requests of similar size go together and none waits behind requests
           that arrived after it was passed over.

        With a ``generation`` (>= 0): once ``interrupt()`` has moved the queue past it,
        step 1 returns ``None`` and step 3 ends without waiting (see ``interrupt``).

        ``enqueue_ns`` is an int64 array of the requests' enqueue timestamps.
        Raises ``ValueError`` for ``max_samples < 1``, ``max_bytes < 0``, a negative or
        NaN ``linger`` or ``timeout``, or a ``generation`` below -1.
        """
    def drain(self) -> tuple[list[Any], list[Any], npt.NDArray[np.int64]]:
        """Remove and return every queued request at once (paused or not, closed or not),
        all lanes, in queue order."""
    def samples_ahead(self, priority: int) -> int:
        """Queued samples a new request of ``priority`` would wait behind: those of its
        priority level and above in priority order (priorities are counted in five levels,
        below 0 as 0 and above 4 as 4), every queued sample in FIFO order."""
    @property
    def generation(self) -> int:
        """How many times ``interrupt()`` was called."""
    def interrupt(self) -> None:
        """Move the queue to a new generation, ending early every ``take_batch`` given an
        older one: one that has taken nothing yet returns ``None`` (even with requests
        queued); one filling a batch (step 3) stops waiting and goes with what it holds
        and the requests of its lane put before the interrupt that are next in queue
        order and fit — none put after it. For a consumer whose limits changed (a
        smaller ``max_samples``, a shorter ``linger``): it reads ``generation`` before
        its limits, and takes again with the new ones when interrupted. A take given no
        generation (-1) is never interrupted; with ``bucket``, an interrupted step 3 goes
        with what it holds."""
    def pause(self) -> None:
        """Hold ``take_batch`` at step 1 until ``resume()`` or ``close()``."""
    def resume(self) -> None: ...
    def close(self) -> None:
        """Refuse further puts and wake every waiting producer and consumer. Idempotent.

        Queued requests stay and can still be taken or drained.
        """

@disjoint_base
class BatchAssembler:
    """Copies the items of a batch into one reused, C-contiguous array.

    An item is a numpy array with ``ndim >= 1``: a 1-D array is one sample (its shape is
    the sample shape); an array with ``ndim >= 2`` is a mini-batch of ``shape[0]``
    samples of shape ``shape[1:]``. The batch has shape ``(total_samples, *sample_shape)``
    and the dtype of item 0; sample shape and dtype are fixed by item 0.

    The batch returned by ``assemble`` is a view of a buffer the assembler owns: its
    ``base`` is that buffer, a 1-D ``uint8`` array of the buffer's capacity. The buffer
    is grown geometrically and reused by the next ``assemble`` only if nobody else holds
    a reference to it (or to any view of it); otherwise a fresh buffer is taken, so a
    batch (or a result that aliases it) handed to user code never changes afterwards.
    """

    def __init__(self) -> None: ...
    def assemble(self, items: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
        """Return the batch of ``items`` (a non-empty sequence of numpy arrays).

        Raises:
            ValueError: ``items`` is empty, or an item has ``ndim == 0`` or zero samples.
            TypeError: an item is not a numpy array.
            BatchDtypeError: item i's dtype differs from item 0's, or is ``object``
                ("item 3 has dtype float32 but the batch has dtype float64").
            BatchShapeError: item i's sample shape differs from item 0's
                ("item 3 has shape (4,) but the batch has shape (10,)"; for a mini-batch
                "item 3 has sample shape (4,) (array shape (2, 4)) but the batch has
                sample shape (10,)").
        """
    def split(self, result: Any) -> list[Any]:
        """Split a batch function's result back into one piece per item of the last batch.

        ``result`` is any sequence with ``len(result) == total_samples`` (a numpy array,
        a list ...). A 1-D item gets ``result[offset]`` (one row); a mini-batch item of n
        samples gets ``result[offset:offset+n]``.

        Raises:
            ResultMismatchError: ``result`` cannot be split into per-sample pieces: it
                has no length ("the batch function returned int, expected a sequence of
                10 results"), another length ("the batch function returned 7 results
                for a batch of 10 samples"), or indexing or slicing it raises
                ``TypeError`` or ``LookupError`` (a set, a mapping, a ``__len__`` that
                lies: "the batch function returned set of length 10 for a batch of 10
                samples, but it cannot be split by sample: indexing it raised
                TypeError"; that error is the ``__cause__``). Other exceptions of
                ``result.__getitem__`` propagate unchanged.
        """

def assemble_padded(
    items: Sequence[npt.NDArray[Any]], pad_value: Any = 0
) -> tuple[npt.NDArray[Any], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """Stack samples of different lengths into one padded batch: ``(data, lengths, mask)``.

    Each item is one sample, a numpy array of shape ``(L_i, *rest)`` (``ndim >= 1``,
    ``L_i >= 1``); only the first axis may differ between items. Dtype and ``rest`` are
    fixed by item 0; an equivalent dtype (``==``) is accepted; items may have any strides.

    Returns new arrays, nothing shared with the items or with an earlier call:

    * ``data``: C-contiguous, shape ``(len(items), max L_i, *rest)``, item 0's dtype;
      ``data[i, :L_i]`` equals item i and ``data[i, L_i:]`` holds ``pad_value``;
    * ``lengths``: int64, ``lengths[i] == L_i``;
    * ``mask``: bool, shape ``(len(items), max L_i)``, ``mask[i, j] == (j < L_i)``.

    ``pad_value`` becomes one element of the dtype. For bool, integer, float and complex
    dtypes it must be a number the dtype holds exactly, except that float and complex
    dtypes may round it (not overflow it to infinity, nor drop an imaginary part); NaN
    and infinities pad only float and complex dtypes. For other dtypes (structured,
    strings, datetimes) it is assigned to one zeroed element as numpy assigns it.

    The compiled core copies and pads in one pass of C, without the GIL when the output
    is large enough to be worth it (as ``BatchAssembler.assemble`` does).

    Raises (the first error in item order, pad value last):
        ValueError: ``items`` is empty ("cannot assemble a batch of no items"), an item
            is 0-d, an item has length 0 ("item 3 has length 0 (shape (0, 4)); ..."),
            or ``pad_value`` cannot be represented ("pad_value 300 cannot be represented
            in dtype int8").
        TypeError: an item is not a numpy array ("item 3 is list, expected a numpy
            array").
        BatchDtypeError: item i's dtype differs from item 0's ("item 3 has dtype int32
            but the batch has dtype int64"), or holds Python objects.
        BatchShapeError: item i's shape differs from item 0's beyond the first axis, or
            in ``ndim`` ("item 3 has shape (5, 2) but item 0 has shape (7, 3): only the
            first axis (the length) may differ").
    """

@disjoint_base
class StatsWindow:
    """A fixed-size ring of float64 values: the last ``capacity`` values recorded.

    Thread-safe: recording is O(1) per value under a short lock; summaries copy the ring
    under the lock and compute outside it (compiled core: without the GIL), so a reader
    never blocks a recorder for longer than the copy. Percentiles use linear
    interpolation and equal ``numpy.percentile`` (default method) on ``values()``.
    """

    def __init__(self, capacity: int) -> None:
        """``capacity >= 1`` (``ValueError`` otherwise, ``TypeError`` for a non-integer)."""
    def __len__(self) -> int:
        """Values currently in the window: those recorded since ``clear()``, at most
        ``capacity``."""
    def record(self, value: float) -> None:
        """Record one value (``TypeError`` unless it is a real number)."""
    def record_many(self, values: npt.ArrayLike) -> None:
        """Record each value of a 1-D float sequence, in order."""
    def record_elapsed_ms(self, start_ns: npt.NDArray[np.int64], end_ns: int) -> None:
        """Record ``(end_ns - s) / 1e6`` for each ``s`` of ``start_ns`` (milliseconds)."""
    def values(self) -> npt.NDArray[np.float64]:
        """A copy of the window, oldest first."""
    @staticmethod
    def summaries(
        windows: Sequence[StatsWindow], percentiles: Sequence[Sequence[float]]
    ) -> list[tuple[int, float, float, float, tuple[float, ...]]]:
        """``(count, mean, min, max, percentiles)`` of each window, in one call.

        ``count`` is the number of values in window i and ``percentiles`` holds its
        ``q``-th percentile for each ``q`` of ``percentiles[i]`` (0 to 100), in order.
        Mean/min/max/percentiles are NaN when the window is empty; a NaN value makes
        all of them NaN, as in numpy. Each window is copied under its own lock; the
        compiled core then computes all of them in one stretch without the GIL. Every
        ``q`` is checked before any window is read.

        Raises:
            ValueError: ``len(percentiles) != len(windows)``, or a ``q`` outside
                ``[0, 100]`` (or NaN).
            TypeError: an element of ``windows`` is not a ``StatsWindow`` of this core.
        """
    def clear(self) -> None: ...

@disjoint_base
class Histogram:
    """Counts per bucket since creation, with the sum and count of the values observed.

    Bucket ``i`` holds the values ``<= bounds[i]`` and ``> bounds[i - 1]`` (Prometheus's
    ``le``); one more bucket holds the values above every bound (NaN among them).
    Thread-safe: one short lock; ``observe_elapsed`` counts a whole batch in one call.

    Raises:
        ValueError: ``bounds`` is not a non-empty, strictly increasing sequence of
            finite numbers.
    """

    bounds: tuple[float, ...]
    def __init__(self, bounds: Sequence[float]) -> None: ...
    def observe(self, value: float) -> None:
        """Count one value."""
    def observe_elapsed(self, start_ns: npt.NDArray[np.int64], end_ns: int, scale: float) -> None:
        """Count ``(end_ns - s) * scale`` for each ``s`` of ``start_ns``, in order."""
    def snapshot(self) -> tuple[tuple[int, ...], int, float]:
        """``(cumulative count at each bound, count of every value, sum)`` at one moment."""
