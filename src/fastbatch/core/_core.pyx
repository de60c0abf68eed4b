# cython: language_level=3, embedsignature=True
# distutils: language = c++
"""Compiled core of fastbatch: the request queue, the batch assembler, the stats window.

The behavioural contract is ``_core.pyi``; ``_core_py.py`` is the pure-Python twin and
the oracle this module is tested against. The numeric kernels (memory growth, sums,
percentiles) are inline functions of ``_numeric.pxd``.

Locking discipline (the reason for most of the shapes below):

* Each object has one ``std::mutex``. Critical sections are short, pure C and never
  need the GIL, so they may run with or without it.
* A thread holding the GIL only ever *try*-locks our mutex. When that fails, or when it
  has to wait on a condition variable, it releases the GIL first and runs the whole
  critical section, waiting included, inside ``with nogil``; it unlocks before taking
  the GIL back. So nobody waits for our mutex while holding the GIL, and nobody holds
  our mutex while waiting for the GIL.
* The uncontended path keeps the GIL: dropping it costs little by itself, but getting it
  back behind a busy Python thread can take a whole switch interval (5 ms) — the GIL
  convoy. For the same reason the assembler's copy and the stats computations release
  the GIL only when the work is large enough to be worth it (``_NOGIL_*`` below).
* "full", "empty", "timed out" and "closed" are status codes of the C functions; they
  become exceptions once the lock is dropped and the GIL is back.
"""

from cpython.exc cimport PyErr_CheckSignals
from cpython.list cimport PyList_New
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF, _Py_REFCNT
from cpython.sequence cimport PySequence_Check, PySequence_GetItem, PySequence_GetSlice
from cpython.tuple cimport PyTuple_GET_ITEM, PyTuple_GET_SIZE
from libc.stdint cimport INT64_MAX, int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.string cimport memcpy, memmove

cimport numpy as cnp

from fastbatch.core._numeric cimport Summary, grow, summarize

import threading

import numpy as np

from fastbatch.core import _messages as msg
from fastbatch._errors import (
    BatchDtypeError,
    BatchShapeError,
    LaneChangedError,
    QueueClosedError,
    QueueFullError,
    ResultMismatchError,
)

cnp.import_array()

__all__ = ["BatchAssembler", "RequestQueue", "StatsWindow", "assemble_padded", "monotonic_ns"]


cdef extern from "_sync.hpp" nogil:
    cppclass mutex "std::mutex":
        pass
    cppclass condition_variable "std::condition_variable":
        pass
    const int64_t FB_FOREVER
    const int64_t FB_NO_WAIT
    int64_t fb_now_ns() noexcept
    void fb_lock(mutex&) noexcept
    bint fb_try_lock(mutex&) noexcept
    void fb_unlock(mutex&) noexcept
    void fb_notify_one(condition_variable&) noexcept
    void fb_notify_all(condition_variable&) noexcept
    int fb_cv_wait_until(condition_variable&, mutex&, int64_t deadline_ns) noexcept

cdef extern from "Python.h":
    # Steals the reference: used to move queued PyObject* into fresh lists.
    void _list_steal_item "PyList_SET_ITEM" (object lst, Py_ssize_t i, PyObject* o)
    # Needs no GIL (cpython/pythread.pxd does not say so).
    unsigned long _thread_ident "PyThread_get_thread_ident" () noexcept nogil

cdef extern from "numpy/arrayobject.h":
    # Declared here because numpy's .pxd leaves it commented out. Steals ``descr``.
    object _new_from_descr "PyArray_NewFromDescr" (
        PyTypeObject* subtype, cnp.PyArray_Descr* descr, int nd, cnp.npy_intp* dims,
        cnp.npy_intp* strides, void* data, int flags, PyObject* obj)
    PyTypeObject _ndarray_type "PyArray_Type"
    bint _holds_objects "PyDataType_REFCHK" (cnp.PyArray_Descr*)

# The assembler copies without the GIL from this many bytes on, and the stats window
# computes without it from this many values on; below, the work takes a few
# microseconds and re-taking a contended GIL could cost a thousand times more.
cdef Py_ssize_t _NOGIL_COPY_BYTES = 256 * 1024
cdef Py_ssize_t _NOGIL_STATS_VALUES = 4096

# Timeouts at least this long (about 146 years, or inf) mean "wait forever".
cdef double _FOREVER_SECONDS = 4611686018.427387904

# Signal handlers (Ctrl-C) run only in the main thread, and only between bytecodes: a
# main thread blocked in put() or take_batch() wakes this often to run them, as a
# blocked threading.Condition.wait() would. Other threads wait without interruption.
cdef int64_t _SIGNAL_CHECK_NS = 50_000_000
cdef unsigned long _MAIN_THREAD = threading.main_thread().ident


def monotonic_ns():
    """The clock every core timestamp uses (monotonic, nanoseconds).

    It is C++ ``std::chrono::steady_clock``; compare core timestamps only with this
    function, never with another clock.
    """
    return fb_now_ns()


# --- helpers -------------------------------------------------------------------------

cdef int64_t _as_int64(object value, str name) except? -1:
    """``value`` as a C integer; ``TypeError`` for a non-integer (floats included)."""
    if type(value) is not int:
        try:
            value = PyNumber_Index(value)
        except TypeError:
            raise TypeError(
                msg.NOT_AN_INTEGER.format(name=name, type=type(value).__name__)) from None
    try:
        return value
    except OverflowError:
        raise OverflowError(msg.OUT_OF_RANGE.format(name=name, value=value)) from None


cdef int64_t _seconds_to_ns(object seconds, str name) except -2:
    """A validated duration in ns: -1 for forever (``None``, huge or inf), else >= 0."""
    cdef double s
    if seconds is None:
        return -1
    s = _as_double(seconds, name)
    if not s >= 0.0:  # catches NaN too
        raise ValueError(msg.NEGATIVE_SECONDS.format(name=name, value=seconds))
    if s >= _FOREVER_SECONDS:
        return -1
    return <int64_t>(s * 1e9 + 0.5)


cdef double _as_double(object value, str name) except? -1.0:
    """``value`` as a C double; ``TypeError`` for strings and non-numbers."""
    try:
        return value
    except TypeError:
        raise TypeError(
            msg.NOT_A_REAL_NUMBER.format(name=name, type=type(value).__name__)) from None


cdef inline int64_t _signal_check_deadline() noexcept nogil:
    """When a wait must return so that the caller can run signal handlers."""
    if _thread_ident() != _MAIN_THREAD:
        return FB_FOREVER
    return fb_now_ns() + _SIGNAL_CHECK_NS


cdef inline int64_t _deadline(int64_t wait_ns) noexcept nogil:
    """Absolute deadline for a relative wait from ``_seconds_to_ns``."""
    if wait_ns < 0:
        return FB_FOREVER
    if wait_ns == 0:
        return FB_NO_WAIT  # no clock read: the fast path never waits
    return fb_now_ns() + wait_ns


# --- RequestQueue --------------------------------------------------------------------

cdef struct Request:
    PyObject* item      # strong reference, owned by the queue while queued
    PyObject* future    # strong reference (Py_None when no future)
    PyObject* tag       # strong reference: the lane's tag when the request was put
    int64_t samples
    int64_t nbytes
    int64_t priority
    uint64_t seq
    int64_t enqueue_ns
    Py_ssize_t lane

# Status codes of the critical sections.
cdef enum:
    ST_OK = 0
    ST_WOULD_WAIT = 1   # the GIL-holding fast path must wait: mutex still held
    ST_FULL = 2
    ST_TIMEOUT = 3
    ST_CLOSED = 4
    ST_NOMEM = 5
    ST_CLOSED_WHILE_WAITING = 6
    ST_CHECK_SIGNALS = 7  # mutex released, nothing changed: run handlers and retry
    ST_LANE_CHANGED = 8

# Operations of RequestQueue._control.
cdef enum:
    OP_READ = 0
    OP_CLOSE = 1
    OP_PAUSE = 2
    OP_RESUME = 3

# Priority levels counted by RequestQueue.samples_ahead (BatchPriority's five).
cdef enum:
    _LEVELS = 5

cdef inline Py_ssize_t _level(int64_t priority) noexcept nogil:
    return 0 if priority < 0 else (_LEVELS - 1 if priority >= _LEVELS else <Py_ssize_t>priority)

cdef struct QueueInfo:
    uint64_t puts
    Py_ssize_t count
    int64_t samples
    bint closed
    bint paused

cdef struct TakeState:
    # Arguments of take_batch.
    int64_t max_samples
    int64_t max_bytes
    int64_t linger_ns       # -1: forever
    int64_t until_ns        # 0, or fill until at least this monotonic time (ns)
    int64_t generation      # -1, or end early once the queue's generation differs
    int64_t wait_deadline   # step 1 (timeout)
    int64_t signal_deadline # step 1: return ST_CHECK_SIGNALS after this
    # Progress, kept here so that the fast path can hand over to the waiting path.
    int stage               # 1 or 3, as in the contract
    Py_ssize_t lane         # the batch's lane (step 3)
    int64_t batch_deadline  # step 3 (first request's enqueue time + linger)
    int64_t samples
    int64_t nbytes
    Request* out            # taken requests, owned by take_batch
    Py_ssize_t n
    Py_ssize_t cap
    Py_ssize_t removed      # requests removed by the current _take call
    bint bucket             # fill with the requests closest in size to the first one

cdef struct Lane:
    # The requests of one lane: a ring in seq order and, when prioritized, a binary heap
    # on (priority, seq) for requests of other priorities than the ring's.
    Request* buf
    Py_ssize_t alloc        # ring records allocated (0: not yet)
    Py_ssize_t head         # ring: index of the oldest record
    Py_ssize_t ring_count
    int64_t ring_priority   # priority of the ring's requests (prioritized)
    Request* heap
    Py_ssize_t heap_alloc
    Py_ssize_t heap_count
    Py_ssize_t count        # ring + heap
    int64_t samples
    int64_t nbytes
    PyObject* tag           # strong reference; NULL: the lane was never opened
    bint pinned             # never reassigned (the row schema's lane)
    Py_ssize_t lingerers    # consumers filling a batch from this lane: not reassigned
    uint64_t passed_before  # bucketed takes: requests with seq below this were passed over

cdef inline bint _before(const Request* a, const Request* b) noexcept nogil:
    return a.priority < b.priority or (a.priority == b.priority and a.seq < b.seq)

cdef int _compare_requests(const void* a, const void* b) noexcept nogil:
    return -1 if _before(<const Request*>a, <const Request*>b) else 1

cdef inline int64_t _after(int64_t start_ns, int64_t wait_ns) noexcept nogil:
    """``start_ns + wait_ns`` as a deadline, saturating to forever."""
    if wait_ns < 0 or start_ns > INT64_MAX - wait_ns:
        return FB_FOREVER
    if wait_ns == 0:
        return FB_NO_WAIT
    return start_ns + wait_ns


# -- one lane's storage (queue mutex held; GIL may or may not be held) -------------------

cdef inline bint _lane_to_ring(const Lane* q, const Request* r, bint prioritized) noexcept nogil:
    """Whether ``r`` goes to the lane's ring (else to its heap)."""
    return not prioritized or q.ring_count == 0 or r.priority == q.ring_priority

cdef int _lane_reserve(Lane* q, bint ring, Py_ssize_t capacity) noexcept nogil:
    """Make room for one more record in the ring or the heap; -1 when out of memory."""
    cdef Py_ssize_t old, new, tail
    if not ring:
        old = q.heap_alloc
        if q.heap_count < old:
            return 0
        new = max(2 * old, 64)
        if capacity and new > capacity:
            new = capacity
        if grow(<void**>&q.heap, <size_t>new, sizeof(Request)) < 0:
            return -1
        q.heap_alloc = new
        return 0
    old = q.alloc
    if q.ring_count < old:
        return 0
    # Start small even when bounded: a queue of capacity 10**6 that never holds more
    # than a batch should not cost 64 MB.
    new = old * 2 if old else 64
    if capacity and new > capacity:
        new = capacity
    if grow(<void**>&q.buf, <size_t>new, sizeof(Request)) < 0:
        return -1
    if q.head > 0:
        # The ring is full and wraps: slide [head, old) to the end of the new space.
        tail = old - q.head
        memmove(&q.buf[new - tail], &q.buf[q.head], tail * sizeof(Request))
        q.head = new - tail
    q.alloc = new
    return 0

cdef void _lane_push(Lane* q, Request* r, bint ring) noexcept nogil:
    """Append ``r`` (room reserved, seq and enqueue time stamped)."""
    cdef Request* h = q.heap
    cdef Py_ssize_t i, parent
    if ring:
        if q.ring_count == 0:
            q.ring_priority = r.priority
        i = q.head + q.ring_count
        if i >= q.alloc:
            i -= q.alloc
        q.buf[i] = r[0]
        q.ring_count += 1
    else:
        i = q.heap_count
        while i > 0:
            parent = (i - 1) >> 1
            if not _before(r, &h[parent]):
                break
            h[i] = h[parent]
            i = parent
        h[i] = r[0]
        q.heap_count += 1
    q.count += 1
    q.samples += r.samples
    q.nbytes += r.nbytes

cdef inline bint _lane_heap_first(const Lane* q) noexcept nogil:
    """Whether the head of the lane (not empty) is the heap's top."""
    return q.heap_count > 0 and (
        q.ring_count == 0 or _before(&q.heap[0], &q.buf[q.head]))

cdef inline Request* _lane_peek(Lane* q) noexcept nogil:
    return &q.heap[0] if _lane_heap_first(q) else &q.buf[q.head]

cdef void _lane_pop(Lane* q, Request* out) noexcept nogil:
    """Move the lane's head record into ``out`` (the lane must not be empty)."""
    cdef Request* h = q.heap
    cdef Request last
    cdef Py_ssize_t i, child, n
    if _lane_heap_first(q):
        out[0] = h[0]
        q.heap_count -= 1
        n = q.heap_count
        if n > 0:
            last = h[n]
            i = 0
            while True:
                child = 2 * i + 1
                if child >= n:
                    break
                if child + 1 < n and _before(&h[child + 1], &h[child]):
                    child += 1
                if not _before(&h[child], &last):
                    break
                h[i] = h[child]
                i = child
            h[i] = last
    else:
        out[0] = q.buf[q.head]
        q.head += 1
        if q.head == q.alloc:
            q.head = 0
        q.ring_count -= 1
    q.count -= 1
    q.samples -= out.samples
    q.nbytes -= out.nbytes

cdef void _release_requests(Request* rs, Py_ssize_t n):
    """Drop the references of ``n`` requests (GIL held)."""
    cdef Py_ssize_t i
    for i in range(n):
        Py_XDECREF(rs[i].item)
        Py_XDECREF(rs[i].future)
        Py_XDECREF(rs[i].tag)


cdef struct Candidate:
    # A queued request as a bucketed take ranks it: passed over before, then closest in
    # size to the batch's first request, then queue order.
    int passed              # 0: passed over by an earlier bucketed take (goes first)
    int64_t distance        # |nbytes - the first request's nbytes|
    int64_t priority
    uint64_t seq
    Py_ssize_t index        # in the lane: ring position from head, then heap position

cdef int _compare_candidates(const void* pa, const void* pb) noexcept nogil:
    cdef const Candidate* a = <const Candidate*>pa
    cdef const Candidate* b = <const Candidate*>pb
    if a.passed != b.passed:
        return -1 if a.passed < b.passed else 1
    if a.distance != b.distance:
        return -1 if a.distance < b.distance else 1
    if a.priority != b.priority:
        return -1 if a.priority < b.priority else 1
    return -1 if a.seq < b.seq else (1 if a.seq > b.seq else 0)

cdef inline Request* _lane_at(Lane* q, Py_ssize_t i) noexcept nogil:
    """The lane's i-th record: ring positions (from the head) first, then the heap."""
    cdef Py_ssize_t k
    if i < q.ring_count:
        k = q.head + i
        if k >= q.alloc:
            k -= q.alloc
        return &q.buf[k]
    return &q.heap[i - q.ring_count]

cdef void _heap_sift_down(Request* h, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    cdef Request moving = h[i]
    cdef Py_ssize_t child
    while True:
        child = 2 * i + 1
        if child >= n:
            break
        if child + 1 < n and _before(&h[child + 1], &h[child]):
            child += 1
        if not _before(&h[child], &moving):
            break
        h[i] = h[child]
        i = child
    h[i] = moving


cdef class RequestQueue:
    """Bounded multi-producer queue of requests in lanes, FIFO or by priority (``_core.pyi``).

    Each lane's storage is C arrays of ``Request`` records: a ring buffer and, when
    prioritized, a binary heap on ``(priority, seq)``. A prioritized lane keeps the
    requests of one priority (that of a put which finds the ring empty) in the ring and
    the others in the heap. The ring is in seq order, hence sorted too, and the head of
    the lane is the smaller of the two heads: traffic of one priority (the usual case)
    costs O(1) per request instead of O(log n) heap sifts. The head of the queue is the
    smallest lane head; a batch is taken from that lane only.

    Producers and consumers wait on two condition variables with the GIL released. A
    waiting consumer publishes how much it still needs, and of which lane, so that
    ``put`` wakes it only when the queue can satisfy it (one context switch per batch,
    not per request).
    """

    cdef mutex _mutex
    cdef condition_variable _not_empty   # consumers wait here
    cdef condition_variable _not_full    # producers wait here
    cdef Lane* _lanes
    cdef Py_ssize_t _n_lanes             # lanes allocated (the lanes argument)
    cdef Py_ssize_t _used_lanes          # lanes [0, _used_lanes) have been opened
    cdef Py_ssize_t _count               # requests, all lanes
    cdef Py_ssize_t _capacity            # 0: unbounded
    cdef bint _prioritized
    cdef bint _closed
    cdef bint _paused
    cdef int64_t _samples
    cdef int64_t _bytes
    # Queued samples per priority level (0..4; priorities outside are counted at the
    # nearest level): what is ahead of a new request in queue order.
    cdef int64_t _level_samples[_LEVELS]
    # Counts interrupt() calls: a take given an older generation ends early, taking no
    # request put after the latest interrupt (seq >= _interrupt_seq).
    cdef int64_t _generation
    cdef uint64_t _interrupt_seq
    cdef uint64_t _seq
    cdef Py_ssize_t _consumers_waiting
    cdef Py_ssize_t _producers_waiting
    # What the (single) waiting consumer needs before a put should wake it.
    cdef int64_t _need_samples
    cdef int64_t _need_bytes             # 0: no byte criterion
    cdef Py_ssize_t _need_lane           # -1: any lane
    # What put_row() accepts (None: no schema): samples of this dtype and this shape
    # (_row_ndim dimensions), at most _row_max_samples of them (0: any) in at most
    # _row_max_bytes bytes (0: any).
    cdef object _row_dtype
    cdef int _row_ndim
    cdef cnp.npy_intp _row_shape[32]  # up to 31 used (ROW_MAX_NDIM)
    cdef int64_t _row_max_samples
    cdef int64_t _row_max_bytes
    cdef Py_ssize_t _row_lane

    def __init__(self, capacity=0, prioritized=False, lanes=1):
        # Arguments are checked and memory allocated in __cinit__; this method exists so
        # that the class's signature is visible to introspection and stubtest.
        pass

    def __cinit__(self, capacity=0, prioritized=False, lanes=1):
        cdef int64_t cap = _as_int64(capacity, "capacity")
        cdef int64_t n_lanes = _as_int64(lanes, "lanes")
        if cap < 0:
            raise ValueError(msg.QUEUE_CAPACITY.format(value=cap))
        if n_lanes < 1 or n_lanes > 1 << 20:
            raise ValueError(msg.QUEUE_LANES.format(value=n_lanes))
        self._capacity = <Py_ssize_t>cap
        self._prioritized = bool(prioritized)
        self._lanes = <Lane*>calloc(<size_t>n_lanes, sizeof(Lane))
        if self._lanes == NULL:
            raise MemoryError()
        self._n_lanes = <Py_ssize_t>n_lanes
        # Lane 0 is open from the start, tagged None: a queue used without lanes.
        self._lanes[0].tag = <PyObject*>None
        Py_INCREF(None)
        self._used_lanes = 1
        if _lane_reserve(&self._lanes[0], True, self._capacity) < 0:
            raise MemoryError()
        self._need_samples = INT64_MAX
        self._need_lane = -1

    def __dealloc__(self):
        cdef Lane* lanes = self._lanes
        cdef Lane* q
        cdef Py_ssize_t i, k
        self._lanes = NULL
        self._count = 0
        if lanes == NULL:
            return
        for k in range(self._used_lanes):
            q = &lanes[k]
            for i in range(q.ring_count):
                _release_requests(&q.buf[(q.head + i) % q.alloc], 1)
            _release_requests(q.heap, q.heap_count)
            free(q.buf)
            free(q.heap)
            Py_XDECREF(q.tag)
        free(lanes)

    # -- storage (mutex held; GIL may or may not be held) -----------------------------

    cdef inline Py_ssize_t _head_lane(self) noexcept nogil:
        """The lane whose head is the head of the queue (the queue must not be empty)."""
        cdef Py_ssize_t k, best = -1
        cdef Request* h
        cdef Request* bh = NULL
        if self._used_lanes == 1:
            return 0
        for k in range(self._used_lanes):
            if self._lanes[k].count == 0:
                continue
            h = _lane_peek(&self._lanes[k])
            if bh == NULL or _before(h, bh):
                best, bh = k, h
        return best

    cdef int _push(self, Request* r) noexcept nogil:
        """Queue ``r`` in its lane, stamping seq and enqueue time; -1 when out of memory."""
        cdef Lane* q = &self._lanes[r.lane]
        cdef bint ring
        if not self._prioritized:
            r.priority = 0  # plain FIFO: only the sequence orders requests, across lanes too
        ring = _lane_to_ring(q, r, self._prioritized)
        if _lane_reserve(q, ring, self._capacity) < 0:
            return -1
        r.seq = self._seq
        self._seq += 1
        # Stamped under the lock so that FIFO order and enqueue times agree.
        r.enqueue_ns = fb_now_ns()
        _lane_push(q, r, ring)
        self._count += 1
        self._samples += r.samples
        self._level_samples[_level(r.priority)] += r.samples
        self._bytes += r.nbytes
        return 0

    cdef inline void _pop(self, Py_ssize_t lane, Request* out) noexcept nogil:
        _lane_pop(&self._lanes[lane], out)
        self._count -= 1
        self._samples -= out.samples
        self._level_samples[_level(out.priority)] -= out.samples
        self._bytes -= out.nbytes

    # -- waiting (mutex held, GIL released) -------------------------------------------

    cdef int _wait_for_put(self, int64_t need_samples, int64_t need_bytes, Py_ssize_t need_lane,
                           int64_t deadline) noexcept nogil:
        """Wait as a consumer; returns 1 when ``deadline`` has passed."""
        cdef int timed_out
        self._consumers_waiting += 1
        self._need_samples = need_samples
        self._need_bytes = need_bytes
        self._need_lane = need_lane
        timed_out = fb_cv_wait_until(self._not_empty, self._mutex, deadline)
        self._consumers_waiting -= 1
        if self._consumers_waiting > 0:
            # The need on record may have been ours: fall back to "wake on any put";
            # a consumer woken too early just publishes its real need and waits again.
            self._need_samples = 1
            self._need_bytes = 0
            self._need_lane = -1
        return timed_out

    cdef inline int _wake_consumers(self, Py_ssize_t lane) noexcept nogil:
        """After a put into ``lane`` (mutex held): 0 no signal, 1 notify_one, 2 notify_all."""
        cdef int64_t samples = self._samples, nbytes = self._bytes
        if self._consumers_waiting == 0:
            return 0
        if self._consumers_waiting > 1:
            return 2
        if self._need_lane >= 0:
            samples = self._lanes[self._need_lane].samples
            nbytes = self._lanes[self._need_lane].nbytes
        if ((self._need_lane < 0 or lane == self._need_lane) and (
                samples >= self._need_samples or (
                    self._need_bytes > 0 and nbytes >= self._need_bytes))) or (
                # A full queue cannot grow to the need: the producers would stall
                # behind a consumer lingering for requests that cannot come.
                self._capacity and self._count >= self._capacity):
            # Signalled once; later puts stay silent until it publishes a new need.
            self._need_samples = INT64_MAX
            self._need_bytes = 0
            self._need_lane = -1
            return 1
        return 0

    # -- critical sections: entered with the mutex held, return with it released ------
    # (except ST_WOULD_WAIT, which leaves it held and the queue untouched)

    cdef int _put(self, Request* r, int64_t deadline, int64_t signal_deadline,
                  bint* waited, bint can_wait) noexcept nogil:
        cdef int status, wake = 0
        while True:
            if self._closed:
                status = ST_CLOSED_WHILE_WAITING if waited[0] else ST_CLOSED
                break
            if self._lanes[r.lane].tag != r.tag:
                status = ST_LANE_CHANGED
                break
            if self._capacity == 0 or self._count < self._capacity:
                if self._push(r) < 0:
                    status = ST_NOMEM
                else:
                    wake = self._wake_consumers(r.lane)
                    status = ST_OK
                break
            if deadline == FB_NO_WAIT:
                status = ST_FULL
                break
            if not can_wait:
                return ST_WOULD_WAIT
            if signal_deadline != FB_FOREVER and fb_now_ns() >= signal_deadline:
                status = ST_CHECK_SIGNALS
                break
            self._producers_waiting += 1
            waited[0] = True
            if fb_cv_wait_until(self._not_full, self._mutex, min(deadline, signal_deadline)):
                if deadline <= signal_deadline:
                    deadline = FB_NO_WAIT  # one last look at the queue, then give up
            self._producers_waiting -= 1
        fb_unlock(self._mutex)
        if wake == 1:
            fb_notify_one(self._not_empty)
        elif wake == 2:
            fb_notify_all(self._not_empty)
        return status

    cdef int _take_closest(self, TakeState* t) noexcept nogil:
        """Fill the batch from its lane with the requests closest in size (``nbytes``) to
        its first one, those passed over by an earlier such take first; the chosen leave
        the lane and join the batch in queue order. Returns -1, changing nothing, when
        out of memory."""
        cdef Lane* q = &self._lanes[t.lane]
        cdef Py_ssize_t n = q.count, nr = q.ring_count, nh = q.heap_count
        cdef Py_ssize_t i, k, w, chosen = 0
        cdef int64_t room = t.max_samples - t.samples
        cdef int64_t byte_room = t.max_bytes - t.nbytes if t.max_bytes > 0 else INT64_MAX
        cdef int64_t target = t.out[0].nbytes
        cdef uint64_t newest = 0
        cdef Request* r
        cdef void* out
        cdef Candidate* c = <Candidate*>malloc(<size_t>n * sizeof(Candidate))
        cdef char* taken = <char*>calloc(<size_t>n, 1)
        if c == NULL or taken == NULL:
            free(c)
            free(taken)
            return -1
        for i in range(n):
            r = _lane_at(q, i)
            c[i].passed = 0 if r.seq < q.passed_before else 1
            c[i].distance = r.nbytes - target if r.nbytes >= target else target - r.nbytes
            c[i].priority = r.priority
            c[i].seq = r.seq
            c[i].index = i
            if r.seq >= newest:
                newest = r.seq + 1
        qsort(c, <size_t>n, sizeof(Candidate), _compare_candidates)
        for k in range(n):
            if room <= 0 or byte_room <= 0:
                break
            r = _lane_at(q, c[k].index)
            if r.samples <= room and r.nbytes <= byte_room:
                taken[c[k].index] = 1
                room -= r.samples
                byte_room -= r.nbytes
                chosen += 1
        free(c)
        if t.n + chosen > t.cap:
            out = t.out
            if grow(&out, <size_t>(t.n + chosen), sizeof(Request)) < 0:
                free(taken)
                return -1
            t.out = <Request*>out
            t.cap = t.n + chosen
        # Hand out the chosen, then close the gaps they leave (ring in order, heap rebuilt).
        k = t.n
        for i in range(n):
            if taken[i]:
                t.out[k] = _lane_at(q, i)[0]
                k += 1
        qsort(&t.out[t.n], <size_t>chosen, sizeof(Request), _compare_requests)
        w = 0
        for i in range(nr):
            if not taken[i]:
                if w != i:
                    _lane_at(q, w)[0] = _lane_at(q, i)[0]
                w += 1
        q.ring_count = w
        w = 0
        for i in range(nh):
            if not taken[nr + i]:
                q.heap[w] = q.heap[i]
                w += 1
        q.heap_count = w
        i = w // 2 - 1
        while i >= 0:
            _heap_sift_down(q.heap, w, i)
            i -= 1
        free(taken)
        for k in range(t.n, t.n + chosen):
            r = &t.out[k]
            q.count -= 1
            q.samples -= r.samples
            q.nbytes -= r.nbytes
            self._count -= 1
            self._samples -= r.samples
            self._level_samples[_level(r.priority)] -= r.samples
            self._bytes -= r.nbytes
            t.samples += r.samples
            t.nbytes += r.nbytes
        t.n += chosen
        t.removed += chosen
        # Whoever was waiting now was passed over: the next bucketed take serves them
        # before anything that arrives later.
        if newest > q.passed_before:
            q.passed_before = newest
        return 0

    cdef int _take(self, TakeState* t, bint can_wait) noexcept nogil:
        cdef int status = ST_OK
        cdef Request* h
        cdef Lane* q
        cdef Py_ssize_t removed
        cdef void* out
        cdef bint wake
        if t.stage == 1 and t.generation >= 0 and t.generation != self._generation:
            status = ST_TIMEOUT  # interrupted before taking anything: the caller starts over
        elif t.stage == 1:
            # Step 1: a request, and not paused (a closed queue drains even when paused).
            while not (self._count > 0 and (not self._paused or self._closed)):
                if self._closed:
                    status = ST_CLOSED
                    break
                if t.generation >= 0 and t.generation != self._generation:
                    status = ST_TIMEOUT  # interrupted, nothing taken: the caller starts over
                    break
                if t.wait_deadline == FB_NO_WAIT:
                    status = ST_TIMEOUT
                    break
                if not can_wait:
                    return ST_WOULD_WAIT
                if t.signal_deadline != FB_FOREVER and fb_now_ns() >= t.signal_deadline:
                    status = ST_CHECK_SIGNALS  # nothing taken yet: safe to retry
                    break
                # While paused no put can help: only resume() and close() wake us.
                if self._wait_for_put(INT64_MAX if self._paused else 1, 0, -1,
                                      min(t.wait_deadline, t.signal_deadline)):
                    if t.wait_deadline <= t.signal_deadline:
                        t.wait_deadline = FB_NO_WAIT
            if status == ST_OK:
                # Step 2: the head request, always; its lane is the batch's.
                t.lane = self._head_lane()
                self._pop(t.lane, &t.out[0])
                t.n = 1
                t.removed += 1
                t.samples = t.out[0].samples
                t.nbytes = t.out[0].nbytes
                t.batch_deadline = _after(t.out[0].enqueue_ns, t.linger_ns)
                if t.until_ns > 0 and t.batch_deadline != FB_FOREVER and (
                        t.batch_deadline == FB_NO_WAIT or t.batch_deadline < t.until_ns):
                    t.batch_deadline = t.until_ns
                t.stage = 3
        if status == ST_OK:
            # Step 3: fill up from the batch's lane to max_samples / max_bytes until the
            # deadline.
            q = &self._lanes[t.lane]
            while t.samples < t.max_samples and (t.max_bytes == 0 or t.nbytes < t.max_bytes):
                if q.tag != t.out[0].tag:
                    break  # reassigned while we looked at signals: its requests are not ours
                if t.generation >= 0 and t.generation != self._generation and (
                        t.bucket or q.count == 0 or _lane_peek(q).seq >= self._interrupt_seq):
                    # Interrupted: the batch's limits changed. It goes now, with what was
                    # put before the interrupt (in queue order, as it fits); what is put
                    # after is taken under the new limits.
                    break
                if t.bucket and q.count > 0:
                    # Choose only once the lane can fill the batch, or the wait is over.
                    if (q.samples >= t.max_samples - t.samples
                            or (t.max_bytes > 0 and q.nbytes >= t.max_bytes - t.nbytes)
                            or self._closed or t.batch_deadline == FB_NO_WAIT
                            or (t.batch_deadline != FB_FOREVER and fb_now_ns() >= t.batch_deadline)):
                        if self._take_closest(t) == 0:
                            break
                        t.bucket = False  # out of memory: fill in queue order instead
                        continue
                elif q.count > 0:
                    h = _lane_peek(q)
                    if h.samples > t.max_samples - t.samples or (
                            t.max_bytes > 0 and h.nbytes > t.max_bytes - t.nbytes):
                        break
                    if t.n == t.cap:
                        out = t.out
                        if grow(&out, <size_t>(2 * t.cap), sizeof(Request)) < 0:
                            break  # out of memory: hand out what we have
                        t.out = <Request*>out
                        t.cap *= 2
                    self._pop(t.lane, &t.out[t.n])
                    t.samples += t.out[t.n].samples
                    t.nbytes += t.out[t.n].nbytes
                    t.n += 1
                    t.removed += 1
                    continue
                if self._closed or t.batch_deadline == FB_NO_WAIT:
                    break
                if t.batch_deadline != FB_FOREVER and fb_now_ns() >= t.batch_deadline:
                    break
                if not can_wait:
                    return ST_WOULD_WAIT
                if t.removed > 0 and self._producers_waiting > 0:
                    # Hand the slots taken so far to blocked producers now, not when
                    # the batch is complete: what they put is what we linger for.
                    fb_notify_all(self._not_full)
                    t.removed = 0
                # Wake when the lane's requests can fill the batch, or one of them
                # cannot fit (then its samples or bytes alone exceed the room).
                q.lingerers += 1
                if self._wait_for_put(t.max_samples - t.samples,
                                      t.max_bytes - t.nbytes if t.max_bytes > 0 else 0,
                                      t.lane, t.batch_deadline):
                    t.batch_deadline = FB_NO_WAIT
                q.lingerers -= 1
        removed = t.removed
        t.removed = 0
        wake = removed > 0 and self._producers_waiting > 0
        fb_unlock(self._mutex)
        if wake:
            if removed == 1:
                fb_notify_one(self._not_full)
            else:
                fb_notify_all(self._not_full)
        return status

    cdef int _drain(self, Request** out, Py_ssize_t* n) noexcept nogil:
        cdef Py_ssize_t k, i = 0, count = self._count, lanes = 0
        cdef Lane* q
        cdef bint wake = count > 0 and self._producers_waiting > 0
        out[0] = <Request*>malloc(<size_t>(count if count > 0 else 1) * sizeof(Request))
        if out[0] == NULL:
            fb_unlock(self._mutex)
            return ST_NOMEM
        for k in range(self._used_lanes):
            q = &self._lanes[k]
            if q.count > 0:
                lanes += 1
            while q.count > 0:
                self._pop(k, &out[0][i])
                i += 1
        if lanes > 1:
            qsort(out[0], <size_t>count, sizeof(Request), _compare_requests)
        n[0] = count
        fb_unlock(self._mutex)
        if wake:
            fb_notify_all(self._not_full)
        return ST_OK

    cdef void _control_locked(self, int op, QueueInfo* info) noexcept nogil:
        cdef bint wake_all = False
        if op == OP_CLOSE:
            wake_all = not self._closed
            self._closed = True
        elif op == OP_PAUSE:
            self._paused = True
        elif op == OP_RESUME:
            wake_all = self._paused
            self._paused = False
        info.puts = self._seq
        info.count = self._count
        info.samples = self._samples
        info.closed = self._closed
        info.paused = self._paused
        fb_unlock(self._mutex)
        if wake_all:
            fb_notify_all(self._not_empty)
            if op == OP_CLOSE:
                fb_notify_all(self._not_full)

    cdef QueueInfo _control(self, int op):
        """Apply ``op`` (or just read) under the lock and return the queue's state."""
        cdef QueueInfo info
        if fb_try_lock(self._mutex):
            self._control_locked(op, &info)
        else:
            with nogil:
                fb_lock(self._mutex)
                self._control_locked(op, &info)
        return info

    cdef inline void _lock_with_gil(self):
        """Take the mutex while holding the GIL (without blocking other GIL users)."""
        if not fb_try_lock(self._mutex):
            with nogil:
                fb_lock(self._mutex)

    # -- Python API -------------------------------------------------------------------

    @property
    def capacity(self):
        """Maximum number of queued requests; 0 means unbounded."""
        return self._capacity

    @property
    def lanes(self):
        """Number of lanes (the ``lanes`` argument)."""
        return self._n_lanes

    @property
    def closed(self):
        """Whether ``close()`` has been called."""
        return self._control(OP_READ).closed

    @property
    def queued_samples(self):
        """Sum of ``samples`` over the queued requests."""
        return self._control(OP_READ).samples

    @property
    def total_puts(self):
        """Requests accepted by ``put`` since the queue was created."""
        return self._control(OP_READ).puts  # under the lock: _push writes it without the GIL

    def __len__(self):
        """Number of queued requests."""
        return self._control(OP_READ).count

    def __repr__(self):
        cdef QueueInfo info = self._control(OP_READ)
        state = "closed" if info.closed else ("paused" if info.paused else "open")
        return (f"<RequestQueue {state} len={info.count} capacity={self._capacity}"
                f" prioritized={self._prioritized}>")

    def open_lane(self, object tag):
        """Give ``tag`` a lane: one never opened, else an empty unpinned one; -1 if none."""
        cdef Py_ssize_t k, lane = -1
        cdef PyObject* old = NULL
        Py_INCREF(tag)
        self._lock_with_gil()
        if self._used_lanes < self._n_lanes:
            lane = self._used_lanes
            self._used_lanes += 1
        else:
            for k in range(self._n_lanes):
                # A lane a batch is being filled from keeps its tag until the batch is
                # out: its requests would otherwise join a batch of another tag.
                if (self._lanes[k].count == 0 and not self._lanes[k].pinned
                        and self._lanes[k].lingerers == 0):
                    lane = k
                    break
        if lane >= 0:
            old = self._lanes[lane].tag
            self._lanes[lane].tag = <PyObject*>tag
        fb_unlock(self._mutex)
        if lane < 0:
            Py_DECREF(tag)
        Py_XDECREF(old)
        return lane

    def lane_tag(self, lane):
        """The tag of ``lane`` (None for a lane never opened)."""
        cdef Py_ssize_t k = self._lane_index(lane)
        cdef object tag
        self._lock_with_gil()
        tag = <object>self._lanes[k].tag if self._lanes[k].tag != NULL else None
        fb_unlock(self._mutex)
        return tag

    cdef Py_ssize_t _lane_index(self, object lane) except -1:
        cdef int64_t k = _as_int64(lane, "lane")
        if k < 0 or k >= self._n_lanes:
            raise ValueError(msg.LANE_RANGE.format(lanes=self._n_lanes, value=k))
        return <Py_ssize_t>k

    def put(self, object item, object future=None, samples=1, nbytes=0, priority=0,
            timeout=None, lane=0, tag=None):
        """Append a request to ``lane``, waiting (GIL released) while the queue is full.

        Raises:
            QueueFullError: the queue stayed full for ``timeout`` seconds (at once for 0).
            QueueClosedError: the queue is closed, or was closed while waiting.
            LaneChangedError: ``tag`` is not (or no longer) the lane's tag.
            ValueError: ``samples < 1``, ``nbytes < 0``, a lane out of range, or a
                negative/NaN ``timeout``.
        """
        cdef Request r
        r.samples = _as_int64(samples, "samples")
        if r.samples < 1:
            raise ValueError(msg.SAMPLES.format(value=r.samples))
        r.nbytes = _as_int64(nbytes, "nbytes")
        if r.nbytes < 0:
            raise ValueError(msg.NBYTES.format(value=r.nbytes))
        r.priority = _as_int64(priority, "priority")
        r.lane = self._lane_index(lane)
        self._enqueue(&r, item, future, tag, timeout)

    def set_row_schema(self, dtype, shape, lane=0, max_samples=0, max_bytes=0):
        """Accept samples of ``shape`` and ``dtype`` in ``put_row``, into ``lane``.

        The lane is pinned: it keeps its tag for the queue's lifetime.
        """
        cdef Py_ssize_t k = self._lane_index(lane)
        cdef int i, ndim
        cdef int64_t most = _as_int64(max_samples, "max_samples")
        cdef int64_t budget = _as_int64(max_bytes, "max_bytes")
        dt = np.dtype(dtype)
        if type(shape) is not tuple or not 1 <= len(shape) <= 31:  # the twin's ROW_MAX_NDIM
            raise ValueError(msg.ROW_SCHEMA_SHAPE.format(shape=shape))
        dims = [_as_int64(n, "shape") for n in shape]
        if min(dims) < 0:
            raise ValueError(msg.ROW_SCHEMA_LENGTH.format(shape=shape))
        if most < 0 or budget < 0:
            raise ValueError(msg.ROW_SCHEMA_LIMIT.format(max_samples=max_samples, max_bytes=max_bytes))
        self._lock_with_gil()
        opened = k < self._used_lanes
        if opened:
            self._lanes[k].pinned = True
        fb_unlock(self._mutex)
        if not opened:
            raise ValueError(msg.LANE_NOT_OPEN.format(lane=k))
        # Written with the GIL held, as put_row reads them: a put sees one schema.
        ndim = len(dims)
        for i in range(ndim):
            self._row_shape[i] = <cnp.npy_intp>dims[i]
        self._row_ndim = ndim
        self._row_max_samples = most
        self._row_max_bytes = budget
        self._row_lane = k
        self._row_dtype = dt

    def put_row(self, object item, object future=None, timeout=None):
        """``put(item, future, samples, item.nbytes, 2, timeout, lane, tag)`` for samples of
        the schema.

        Returns False, queuing nothing, when there is no schema or ``item`` is not
        exactly an ndarray of the schema's samples (see ``_core.pyi``).
        """
        cdef Request r
        cdef object dtype = self._row_dtype
        cdef cnp.PyArray_Descr* dt
        cdef cnp.npy_intp* dims
        cdef int i, nd, ndim = self._row_ndim
        cdef int64_t samples
        if dtype is None or not cnp.PyArray_CheckExact(item):
            return False
        nd = cnp.PyArray_NDIM(<cnp.ndarray>item)
        dims = cnp.PyArray_DIMS(<cnp.ndarray>item)
        if nd == 1:  # one sample, when samples are 1-D
            if ndim != 1 or dims[0] != self._row_shape[0]:
                return False
            samples = 1
        elif nd == ndim + 1:  # (n, *shape): n samples
            for i in range(ndim):
                if dims[i + 1] != self._row_shape[i]:
                    return False
            samples = dims[0]
            if samples < 1 or (self._row_max_samples and samples > self._row_max_samples):
                return False
        else:
            return False
        dt = cnp.PyArray_DESCR(<cnp.ndarray>item)
        if (dt != <cnp.PyArray_Descr*>dtype
                and not cnp.PyArray_EquivTypes(<cnp.dtype>dt, <cnp.dtype>dtype)):
            return False
        r.nbytes = cnp.PyArray_NBYTES(<cnp.ndarray>item)
        if self._row_max_bytes and r.nbytes > self._row_max_bytes:
            return False
        r.samples = samples
        r.priority = 2
        r.lane = self._row_lane
        # A pinned lane's tag never changes: read without the lock.
        self._enqueue(&r, item, future, <object>self._lanes[r.lane].tag, timeout)
        return True

    cdef int _enqueue(self, Request* r, object item, object future, object tag,
                      object timeout) except -1:
        """The push path of ``put`` and ``put_row``; ``r`` holds samples/nbytes/priority/lane."""
        cdef int status = ST_OK
        cdef bint waited = False
        cdef int64_t deadline = _deadline(_seconds_to_ns(timeout, "timeout"))
        r.item = <PyObject*>item
        r.future = <PyObject*>future
        r.tag = <PyObject*>tag
        # The queue's references, taken while we hold the GIL; given back on failure.
        Py_INCREF(item)
        Py_INCREF(future)
        Py_INCREF(tag)
        while True:
            if fb_try_lock(self._mutex):
                status = self._put(r, deadline, FB_FOREVER, &waited, False)
                if status == ST_WOULD_WAIT:
                    with nogil:
                        status = self._put(r, deadline, _signal_check_deadline(),
                                           &waited, True)
            else:
                with nogil:
                    fb_lock(self._mutex)
                    status = self._put(r, deadline, _signal_check_deadline(), &waited,
                                       True)
            if status != ST_CHECK_SIGNALS:
                break
            try:
                PyErr_CheckSignals()
            except BaseException:
                _release_requests(r, 1)
                raise
        if status == ST_OK:
            return 0
        _release_requests(r, 1)
        if status == ST_CLOSED:
            raise QueueClosedError(msg.QUEUE_CLOSED)
        if status == ST_CLOSED_WHILE_WAITING:
            raise QueueClosedError(msg.QUEUE_CLOSED_WHILE_WAITING)
        if status == ST_LANE_CHANGED:
            raise LaneChangedError(msg.LANE_CHANGED.format(lane=r.lane))
        if status == ST_FULL:
            if deadline == FB_NO_WAIT:
                raise QueueFullError(msg.QUEUE_FULL.format(capacity=self._capacity))
            raise QueueFullError(
                msg.QUEUE_STAYED_FULL.format(capacity=self._capacity, timeout=timeout))
        raise MemoryError(msg.NO_MEMORY_QUEUE)

    def take_batch(self, max_samples, max_bytes=0, linger=0.0, timeout=None, tagged=False, bucket=False,
                   until_ns=0, generation=-1):
        """Remove and return one batch: ``(items, futures, enqueue_ns)`` in queue order.

        ``until_ns`` (a ``monotonic_ns`` time, 0: none) lets the batch fill until then
        even when the first request's linger is already over.

        With ``tagged``, ``(items, futures, enqueue_ns, tag)``: the tag of the batch's
        lane. With ``bucket``, the batch is filled with the requests of its lane closest
        in size to its first one (see ``_core.pyi``). With a ``generation`` (>= 0), it ends
        early once ``interrupt()`` moves the queue past it. See ``_core.pyi`` for the three
        steps. Returns ``None`` when ``timeout`` passes (or an interrupt comes) before a
        request is taken; raises ``QueueClosedError`` when the queue
        is closed and empty. All waiting happens with the GIL released.
        """
        cdef TakeState t
        cdef int status
        t.max_samples = _as_int64(max_samples, "max_samples")
        if t.max_samples < 1:
            raise ValueError(msg.MAX_SAMPLES.format(value=t.max_samples))
        t.max_bytes = _as_int64(max_bytes, "max_bytes")
        if t.max_bytes < 0:
            raise ValueError(msg.MAX_BYTES.format(value=t.max_bytes))
        if linger is None:
            # (None means "forever" to _seconds_to_ns, as it does for a timeout)
            raise TypeError(msg.NOT_A_REAL_NUMBER.format(name="linger", type="NoneType"))
        t.linger_ns = _seconds_to_ns(linger, "linger")
        t.wait_deadline = _deadline(_seconds_to_ns(timeout, "timeout"))
        t.until_ns = _as_int64(until_ns, "until_ns")
        if t.until_ns < 0:
            raise ValueError(f"until_ns must be a monotonic_ns time >= 0, not {t.until_ns}")
        t.generation = _as_int64(generation, "generation")
        if t.generation < -1:
            raise ValueError(f"generation must be -1 (none) or a generation >= 0, not {t.generation}")
        t.stage = 1
        t.n = 0
        t.lane = 0
        t.removed = 0
        t.bucket = bool(bucket)
        t.cap = 16 if t.max_samples > 16 else <Py_ssize_t>t.max_samples
        t.out = <Request*>malloc(<size_t>t.cap * sizeof(Request))
        if t.out == NULL:
            raise MemoryError()
        try:
            while True:
                t.signal_deadline = FB_FOREVER
                if fb_try_lock(self._mutex):
                    status = self._take(&t, False)
                    if status == ST_WOULD_WAIT:
                        with nogil:
                            t.signal_deadline = _signal_check_deadline()
                            status = self._take(&t, True)
                else:
                    with nogil:
                        t.signal_deadline = _signal_check_deadline()
                        fb_lock(self._mutex)
                        status = self._take(&t, True)
                if status != ST_CHECK_SIGNALS:
                    break
                PyErr_CheckSignals()
            if status == ST_TIMEOUT:
                return None
            if status == ST_CLOSED:
                raise QueueClosedError(msg.QUEUE_CLOSED_AND_EMPTY)
            return _hand_out(t.out, t.n, tagged)
        finally:
            free(t.out)

    def drain(self):
        """Remove and return every queued request at once (paused or not, closed or not)."""
        cdef Request* out = NULL
        cdef Py_ssize_t n = 0
        cdef int status
        if fb_try_lock(self._mutex):
            status = self._drain(&out, &n)
        else:
            with nogil:
                fb_lock(self._mutex)
                status = self._drain(&out, &n)
        if status == ST_NOMEM:
            raise MemoryError(msg.NO_MEMORY_DRAIN)
        try:
            return _hand_out(out, n, False)
        finally:
            free(out)

    def samples_ahead(self, priority):
        """Queued samples a new request of ``priority`` would wait behind: those of its
        priority level and above (all of them in FIFO order)."""
        cdef Py_ssize_t k, top = _level(_as_int64(priority, "priority")) if self._prioritized else _LEVELS - 1
        cdef int64_t total = 0
        self._lock_with_gil()
        for k in range(top + 1):
            total += self._level_samples[k]
        fb_unlock(self._mutex)
        return total

    @property
    def generation(self):
        """How many times ``interrupt()`` was called."""
        cdef int64_t generation
        self._lock_with_gil()
        generation = self._generation
        fb_unlock(self._mutex)
        return generation

    def interrupt(self):
        """End early every ``take_batch`` given a ``generation`` older than the new one
        (see ``_core.pyi``)."""
        self._lock_with_gil()
        self._generation += 1
        self._interrupt_seq = self._seq
        fb_unlock(self._mutex)
        fb_notify_all(self._not_empty)

    def pause(self):
        """Hold ``take_batch`` at step 1 until ``resume()`` or ``close()``."""
        self._control(OP_PAUSE)

    def resume(self):
        """Let ``take_batch`` proceed again; wakes every waiting consumer."""
        self._control(OP_RESUME)

    def close(self):
        """Refuse further puts and wake every waiting producer and consumer. Idempotent.

        Queued requests stay and can still be taken or drained.
        """
        self._control(OP_CLOSE)


cdef tuple _hand_out(Request* out, Py_ssize_t n, bint tagged):
    """Build ``(items, futures, enqueue_ns[, tag])``, moving the records' references in."""
    cdef Py_ssize_t i
    cdef cnp.npy_intp dim = n
    cdef int64_t* stamps
    cdef object tag = None
    try:
        items = PyList_New(n)
        futures = PyList_New(n)
        enqueue_ns = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_INT64, 0)
    except BaseException:
        # Out of memory with the requests already out of the queue: they are lost,
        # but their references must not leak.
        _release_requests(out, n)
        raise
    if n > 0:
        tag = <object>out[0].tag  # a new reference; the records' are dropped below
    stamps = <int64_t*>cnp.PyArray_DATA(enqueue_ns)
    for i in range(n):
        _list_steal_item(items, i, out[i].item)
        _list_steal_item(futures, i, out[i].future)
        Py_DECREF(<object>out[i].tag)
        stamps[i] = out[i].enqueue_ns
    if tagged:
        return items, futures, enqueue_ns, tag
    return items, futures, enqueue_ns


# --- BatchAssembler ------------------------------------------------------------------

cdef class BatchAssembler:
    """Copies the items of a batch into one reused, C-contiguous array (see ``_core.pyi``).

    The buffer is a 1-D ``uint8`` array; the batch is a C-level view of it whose ``base``
    is the buffer, and numpy points every further view (rows, slices, ``.view()``) at
    the same base. So ``Py_REFCNT(buffer) == 1`` proves that no batch or result handed
    out still aliases it, and only then is it reused.

    Not thread-safe: one worker owns an assembler. A second call while a copy runs
    without the GIL raises ``RuntimeError`` rather than corrupting the copy plan.
    """

    cdef cnp.ndarray _buf
    cdef Py_ssize_t _n_items               # items of the last batch
    cdef Py_ssize_t _plan_alloc            # entries allocated in the arrays below
    # The last batch (what split() uses): start row per item plus the total, and
    # whether each item was 1-D (one sample). assemble() plans the next batch in the
    # _next_* arrays and swaps them in only on success, so that a rejected batch
    # leaves the last one intact.
    cdef int64_t* _offsets
    cdef unsigned char* _one_row
    cdef int64_t* _next_offsets
    cdef unsigned char* _next_one_row
    cdef const char** _src                 # C-contiguous item data, NULL otherwise
    cdef bint _busy

    def __cinit__(self):
        if self._reserve(1) < 0:
            raise MemoryError()
        self._offsets[0] = 0

    def __dealloc__(self):
        free(self._offsets)
        free(self._one_row)
        free(self._next_offsets)
        free(self._next_one_row)
        free(self._src)

    cdef int _reserve(self, Py_ssize_t n_items) noexcept:
        """Room for the plan of ``n_items`` items; -1 when out of memory."""
        cdef size_t new
        if n_items < self._plan_alloc:
            return 0
        new = <size_t>max(n_items + 1, 2 * self._plan_alloc, 16)
        if (grow(<void**>&self._offsets, new, sizeof(int64_t)) < 0
                or grow(<void**>&self._next_offsets, new, sizeof(int64_t)) < 0
                or grow(<void**>&self._one_row, new, 1) < 0
                or grow(<void**>&self._next_one_row, new, 1) < 0
                or grow(<void**>&self._src, new, sizeof(char*)) < 0):
            return -1
        self._plan_alloc = <Py_ssize_t>new
        return 0

    cdef void _commit(self, Py_ssize_t n_items) noexcept:
        """The planned batch becomes the last batch."""
        cdef int64_t* offsets = self._offsets
        cdef unsigned char* one_row = self._one_row
        self._offsets = self._next_offsets
        self._one_row = self._next_one_row
        self._next_offsets = offsets
        self._next_one_row = one_row
        self._n_items = n_items

    def __repr__(self):
        nbytes = 0 if self._buf is None else cnp.PyArray_SIZE(self._buf)
        return f"<{type(self).__name__} buffer_nbytes={nbytes}>"

    def assemble(self, items):
        """Return the batch of ``items`` (a non-empty sequence of numpy arrays).

        Raises:
            ValueError: ``items`` is empty, or an item has ``ndim == 0`` or zero samples.
            TypeError: an item is not a numpy array.
            BatchDtypeError: item i's dtype differs from item 0's, or holds objects.
            BatchShapeError: item i's sample shape differs from item 0's.
        """
        cdef tuple seq
        cdef Py_ssize_t n, i, d, k, total = 0, nbytes, capacity, off
        cdef Py_ssize_t row_bytes, row_elems = 1
        cdef int nd, nd0, snd0
        cdef cnp.npy_intp* shape
        cdef cnp.npy_intp* shape0
        cdef cnp.npy_intp dims[cnp.NPY_MAXDIMS + 1]
        cdef cnp.ndarray a, a0, batch
        cdef cnp.PyArray_Descr* dtype0
        cdef cnp.PyArray_Descr* dt
        cdef char* dst
        cdef PyObject* obj
        cdef int64_t* offsets
        if self._busy:
            raise RuntimeError(msg.ASSEMBLER_BUSY)
        # A tuple of our own: the items stay alive (and in place) while we copy without
        # the GIL, whatever another thread does to the caller's list.
        seq = tuple(items)
        n = PyTuple_GET_SIZE(seq)
        if n == 0:
            raise ValueError(msg.NO_ITEMS)
        a0 = _check_item(seq, 0)
        nd0 = cnp.PyArray_NDIM(a0)
        shape0 = cnp.PyArray_DIMS(a0)
        dtype0 = cnp.PyArray_DESCR(a0)
        if _holds_objects(dtype0):
            raise BatchDtypeError(msg.OBJECT_DTYPE.format(i=0, dtype=a0.dtype))
        # Sample shape: all of a 1-D item, shape[1:] of a mini-batch.
        snd0 = 1 if nd0 == 1 else nd0 - 1
        for d in range(snd0):
            dims[1 + d] = shape0[nd0 - snd0 + d]
            row_elems *= dims[1 + d]
        row_bytes = row_elems * cnp.PyDataType_ELSIZE(<cnp.dtype>dtype0)
        if self._reserve(n) < 0:
            raise MemoryError()
        offsets = self._next_offsets

        # 1. Validate every item and plan the copy, with the GIL.
        for i in range(n):
            a = a0 if i == 0 else _check_item(seq, i)
            nd = cnp.PyArray_NDIM(a)
            shape = cnp.PyArray_DIMS(a)
            dt = cnp.PyArray_DESCR(a)
            if dt != dtype0 and not cnp.PyArray_EquivTypes(<cnp.dtype>dtype0, <cnp.dtype>dt):
                raise BatchDtypeError(
                    msg.DTYPE_MISMATCH.format(i=i, dtype=a.dtype, batch_dtype=a0.dtype))
            if (1 if nd == 1 else nd - 1) != snd0 or not _same_dims(
                    shape + (0 if nd == 1 else 1), &dims[1], snd0):
                _raise_shape_error(i, <object>a, <object>a0)
            k = 1 if nd == 1 else shape[0]
            if k == 0:
                raise ValueError(msg.ZERO_SAMPLES.format(i=i, shape=(<object>a).shape))
            offsets[i] = total
            self._next_one_row[i] = nd == 1
            self._src[i] = cnp.PyArray_BYTES(a) if cnp.PyArray_IS_C_CONTIGUOUS(a) else NULL
            total += k
        offsets[n] = total
        if row_bytes > 0 and total > (<Py_ssize_t>(<size_t>-1 >> 1)) // row_bytes:
            raise MemoryError(msg.BATCH_TOO_LARGE.format(total=total, row_bytes=row_bytes))
        nbytes = total * row_bytes

        # 2. The buffer: reuse it only when nothing else references it.
        capacity = 0 if self._buf is None else cnp.PyArray_SIZE(self._buf)
        if self._buf is None or _Py_REFCNT(<PyObject*>self._buf) != 1 or capacity < nbytes:
            if capacity < nbytes:
                capacity = max(nbytes, 2 * capacity)
            dims[0] = capacity
            self._buf = cnp.PyArray_EMPTY(1, dims, cnp.NPY_UINT8, 0)
        dst = cnp.PyArray_BYTES(self._buf)

        # 3. Copy contiguous items with memcpy; without the GIL when it is worth it.
        if nbytes >= _NOGIL_COPY_BYTES:
            self._busy = True
            with nogil:
                _copy_rows(dst, self._src, offsets, n, row_bytes)
            self._busy = False
        else:
            _copy_rows(dst, self._src, offsets, n, row_bytes)
        self._commit(n)

        # 4. The batch: a view of the buffer, base set so that numpy keeps it alive.
        dims[0] = total
        Py_INCREF(<object>dtype0)
        batch = _new_from_descr(&_ndarray_type, dtype0, 1 + snd0, dims, NULL,
                                dst, cnp.NPY_ARRAY_CARRAY, NULL)
        cnp.set_array_base(batch, self._buf)
        # Non-contiguous items (rare): let numpy walk their strides, with the GIL.
        for i in range(n):
            if self._src[i] == NULL:
                obj = PyTuple_GET_ITEM(seq, i)
                off = self._offsets[i]
                if self._one_row[i]:
                    batch[off] = <object>obj
                else:
                    batch[off:self._offsets[i + 1]] = <object>obj
        return batch

    def split(self, result):
        """Split a batch function's result back into one piece per item of the last batch.

        A 1-D item gets ``result[offset]``; a mini-batch item of n samples gets
        ``result[offset:offset+n]``.

        Raises:
            ResultMismatchError: ``result`` has no length, its length differs, or it
                cannot be indexed (``TypeError`` or ``LookupError``, as the cause).
        """
        cdef Py_ssize_t i, n = self._n_items, total = self._offsets[self._n_items], m
        cdef bint is_seq
        cdef list out
        if self._busy:
            raise RuntimeError(msg.ASSEMBLER_BUSY)
        try:
            m = len(result)
        except TypeError:
            raise ResultMismatchError(msg.RESULT_WITHOUT_LENGTH.format(
                type=type(result).__name__, total=total)) from None
        if m != total:
            raise ResultMismatchError(msg.RESULT_LENGTH.format(n=m, total=total))
        # Slots not filled yet are NULL, which list_dealloc tolerates if a
        # __getitem__ raises half-way.
        out = PyList_New(n)
        is_seq = PySequence_Check(result)
        try:
            for i in range(n):
                if self._one_row[i]:
                    piece = (PySequence_GetItem(result, self._offsets[i]) if is_seq
                             else result[self._offsets[i]])
                else:
                    piece = (PySequence_GetSlice(result, self._offsets[i], self._offsets[i + 1])
                             if is_seq else result[self._offsets[i]:self._offsets[i + 1]])
                Py_INCREF(piece)
                _list_steal_item(out, i, <PyObject*>piece)
        except (TypeError, LookupError) as exc:
            # A set, a mapping, a __len__ that lies: the function's fault, not an item's.
            raise ResultMismatchError(msg.RESULT_NOT_INDEXABLE.format(
                type=type(result).__name__, n=m, total=total, error=type(exc).__name__)) from exc
        return out


cdef void _copy_rows(char* dst, const char** src, const int64_t* offsets, Py_ssize_t n,
                     Py_ssize_t row_bytes) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if src[i] != NULL:
            memcpy(dst + offsets[i] * row_bytes, src[i],
                   <size_t>((offsets[i + 1] - offsets[i]) * row_bytes))


cdef cnp.ndarray _check_item(tuple seq, Py_ssize_t i):
    """Item ``i`` as an ndarray with ``ndim >= 1``, or the contract's error."""
    cdef object obj = <object>PyTuple_GET_ITEM(seq, i)
    if not cnp.PyArray_Check(obj):
        raise TypeError(msg.NOT_AN_ARRAY.format(i=i, type=type(obj).__name__))
    if cnp.PyArray_NDIM(<cnp.ndarray>obj) == 0:
        raise ValueError(msg.ZERO_DIMENSIONAL.format(i=i))
    return <cnp.ndarray>obj


cdef inline bint _same_dims(const cnp.npy_intp* a, const cnp.npy_intp* b,
                            int n) noexcept:
    cdef int d
    for d in range(n):
        if a[d] != b[d]:
            return False
    return True


cdef int _raise_shape_error(Py_ssize_t i, object a, object a0) except -1:
    batch_sample = a0.shape if a0.ndim == 1 else a0.shape[1:]
    if a.ndim == 1:
        raise BatchShapeError(
            msg.ROW_SHAPE_MISMATCH.format(i=i, shape=a.shape, batch_shape=batch_sample))
    raise BatchShapeError(msg.SAMPLE_SHAPE_MISMATCH.format(
        i=i, sample_shape=a.shape[1:], shape=a.shape, batch_shape=batch_sample))


# --- assemble_padded -----------------------------------------------------------------
#
# Samples of different lengths padded into one batch. Fresh outputs each call (nothing
# is reused, so nothing handed out can change later). The items are checked and their
# pointers and strides gathered with the GIL; then one pure-C pass writes every output
# byte once: row i's real part copied from item i, its tail filled with the pad element,
# its mask row and length set.

from cpython.long cimport PyLong_AsLongLongAndOverflow
from libc.math cimport isfinite
from libc.string cimport memset

from fastbatch.items._padding import pad_element

cdef struct PaddedItem:
    const char* data
    Py_ssize_t length              # first axis, >= 1
    const cnp.npy_intp* strides    # a copy in the call's stride table; NULL: C-contiguous

# The pattern the padding is copied from, when its bytes are not all equal: the pad
# element repeated up to this many bytes (at least once).
cdef Py_ssize_t _PAD_PATTERN_BYTES = 4096


def assemble_padded(items, pad_value=0):
    """Stack samples of different lengths into one padded batch (see ``_core.pyi``).

    Returns ``(data, lengths, mask)``: ``data`` a new C-contiguous array of shape
    ``(len(items), max L_i, *rest)``, ``lengths`` int64, ``mask`` bool, True where real.

    Raises:
        ValueError: ``items`` is empty, an item is 0-d or has length 0, or ``pad_value``
            cannot be represented in the dtype.
        TypeError: an item is not a numpy array.
        BatchDtypeError: item i's dtype differs from item 0's, or holds objects.
        BatchShapeError: item i's shape differs from item 0's beyond the first axis.
    """
    # A tuple of our own keeps the items alive (and in place) during the copy.
    cdef tuple seq = tuple(items)
    cdef Py_ssize_t n = PyTuple_GET_SIZE(seq), i, longest = 0, shortest, step_bytes
    cdef Py_ssize_t itemsize, pattern_bytes = 0, nbytes
    cdef int nd, nd0, d, fill_byte
    cdef cnp.ndarray a, a0, data, lengths, mask, pad_array
    cdef cnp.PyArray_Descr* dtype0
    cdef cnp.PyArray_Descr* dt
    cdef cnp.npy_intp* shape
    cdef cnp.npy_intp* shape0
    cdef cnp.npy_intp dims[cnp.NPY_MAXDIMS + 1]
    cdef PaddedItem* plan = NULL
    cdef cnp.npy_intp* stride_table = NULL
    cdef unsigned char pad_small[8]
    cdef const char* pad
    cdef char* pattern = NULL
    if n == 0:
        raise ValueError(msg.NO_ITEMS)
    a0 = _check_item(seq, 0)
    dtype0 = cnp.PyArray_DESCR(a0)
    if _holds_objects(dtype0):
        raise BatchDtypeError(msg.OBJECT_DTYPE.format(i=0, dtype=a0.dtype))
    nd0 = cnp.PyArray_NDIM(a0)
    shape0 = cnp.PyArray_DIMS(a0)
    itemsize = cnp.PyDataType_ELSIZE(<cnp.dtype>dtype0)
    step_bytes = itemsize  # bytes of one row: one step along the first axis
    for d in range(1, nd0):
        step_bytes *= shape0[d]
    plan = <PaddedItem*>malloc(<size_t>n * sizeof(PaddedItem))
    stride_table = <cnp.npy_intp*>malloc(<size_t>n * nd0 * sizeof(cnp.npy_intp))
    try:
        if plan == NULL or stride_table == NULL:
            raise MemoryError()
        shortest = shape0[0]
        for i in range(n):
            a = a0 if i == 0 else _check_item(seq, i)
            dt = cnp.PyArray_DESCR(a)
            if dt != dtype0 and not cnp.PyArray_EquivTypes(<cnp.dtype>dtype0, <cnp.dtype>dt):
                raise BatchDtypeError(
                    msg.DTYPE_MISMATCH.format(i=i, dtype=a.dtype, batch_dtype=a0.dtype))
            nd = cnp.PyArray_NDIM(a)
            shape = cnp.PyArray_DIMS(a)
            if nd != nd0 or not _same_dims(shape + 1, shape0 + 1, nd0 - 1):
                raise BatchShapeError(msg.PADDED_SHAPE_MISMATCH.format(
                    i=i, shape=(<object>a).shape, batch_shape=(<object>a0).shape))
            if shape[0] == 0:
                raise ValueError(msg.ZERO_LENGTH.format(i=i, shape=(<object>a).shape))
            plan[i].data = cnp.PyArray_BYTES(a)
            plan[i].length = shape[0]
            if cnp.PyArray_IS_C_CONTIGUOUS(a):
                plan[i].strides = NULL
            else:
                # Copied: another thread could reshape the array in place meanwhile.
                memcpy(stride_table + i * nd0, cnp.PyArray_STRIDES(a),
                       nd0 * sizeof(cnp.npy_intp))
                plan[i].strides = stride_table + i * nd0
            longest = max(longest, shape[0])
            shortest = min(shortest, shape[0])

        if _fast_pad(pad_value, <cnp.dtype>dtype0, pad_small):
            pad = <const char*>pad_small
        else:
            pad_array = pad_element(pad_value, <object>dtype0)
            pad = cnp.PyArray_BYTES(pad_array)

        dims[0] = n
        dims[1] = longest
        for d in range(1, nd0):
            dims[d + 1] = shape0[d]
        Py_INCREF(<object>dtype0)  # PyArray_NewFromDescr steals it
        data = _new_from_descr(&_ndarray_type, dtype0, nd0 + 1, dims, NULL, NULL, 0, NULL)
        mask = cnp.PyArray_EMPTY(2, dims, cnp.NPY_BOOL, 0)
        lengths = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)

        fill_byte = _uniform_byte(pad, itemsize)
        if fill_byte < 0 and longest > shortest and step_bytes > 0:
            pattern_bytes = min((longest - shortest) * step_bytes,
                                max(1, _PAD_PATTERN_BYTES // itemsize) * itemsize)
            pattern = <char*>malloc(<size_t>pattern_bytes)
            if pattern == NULL:
                raise MemoryError()
            _repeat(pattern, pad, itemsize, pattern_bytes)

        # As the assembler's copy: without the GIL only when the copy is long enough to
        # be worth taking a contended GIL back (see the module's docstring).
        nbytes = cnp.PyArray_NBYTES(data) + cnp.PyArray_NBYTES(mask)
        if nbytes >= _NOGIL_COPY_BYTES:
            with nogil:
                _pad_rows(cnp.PyArray_BYTES(data), <unsigned char*>cnp.PyArray_BYTES(mask),
                          <int64_t*>cnp.PyArray_BYTES(lengths), plan, n, longest, nd0,
                          shape0, itemsize, step_bytes, fill_byte, pattern, pattern_bytes)
        else:
            _pad_rows(cnp.PyArray_BYTES(data), <unsigned char*>cnp.PyArray_BYTES(mask),
                      <int64_t*>cnp.PyArray_BYTES(lengths), plan, n, longest, nd0,
                      shape0, itemsize, step_bytes, fill_byte, pattern, pattern_bytes)
    finally:
        free(plan)
        free(stride_table)
        free(pattern)
    return data, lengths, mask


cdef bint _fast_pad(object value, cnp.dtype dt, unsigned char* out) except -1:
    """Writes the pad element for the common cases (at most 8 bytes) and returns True.

    A Python int into a native bool or integer dtype, a Python int or float into native
    float32/float64, when the value fits. False leaves the rest to ``pad_element``,
    whose rule this follows, errors included.
    """
    cdef char kind = dt.kind
    cdef Py_ssize_t size = cnp.PyDataType_ELSIZE(dt)
    cdef long long v
    cdef int overflow = 0
    cdef double x
    cdef float f
    if dt.byteorder != b'=' and dt.byteorder != b'|':
        return False
    if type(value) is int or type(value) is bool:
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow:
            return False
        if kind == b'b':
            if v != 0 and v != 1:
                return False
            out[0] = <unsigned char>v
            return True
        if kind == b'i' or kind == b'u':
            if kind == b'u' and v < 0:
                return False
            if size == 8:
                (<int64_t*>out)[0] = v
            elif size < 8 and kind == b'i' and -(1LL << (8 * size - 1)) <= v < (1LL << (8 * size - 1)):
                _store_low_bytes(out, v, size)
            elif size < 8 and kind == b'u' and v < (1LL << (8 * size)):
                _store_low_bytes(out, v, size)
            else:
                return False
            return True
        if kind != b'f' or not -(1LL << 53) <= v <= (1LL << 53):
            return False
        x = <double>v
    elif type(value) is float:
        if kind != b'f':
            return False
        x = value
    else:
        return False
    if size == 8:
        memcpy(out, &x, 8)
    elif size == 4:
        f = <float>x
        if isfinite(x) and not isfinite(f):
            return False  # overflows float32: pad_element refuses it
        memcpy(out, &f, 4)
    else:
        return False
    return True


cdef inline void _store_low_bytes(unsigned char* out, long long v, Py_ssize_t size) noexcept:
    """``v`` as a native integer of ``size`` (1, 2 or 4) bytes; it fits."""
    cdef signed char v1
    cdef short v2
    cdef int v4
    if size == 1:
        v1 = <signed char>v
        memcpy(out, &v1, 1)
    elif size == 2:
        v2 = <short>v
        memcpy(out, &v2, 2)
    else:
        v4 = <int>v
        memcpy(out, &v4, 4)


cdef int _uniform_byte(const char* element, Py_ssize_t size) noexcept nogil:
    """The byte every byte of ``element`` equals (so memset can pad), else -1."""
    cdef Py_ssize_t k
    for k in range(1, size):
        if element[k] != element[0]:
            return -1
    return <unsigned char>element[0] if size > 0 else 0


cdef void _repeat(char* dst, const char* element, Py_ssize_t size,
                  Py_ssize_t nbytes) noexcept nogil:
    """Fill ``nbytes`` (a multiple of ``size``) with ``element``: one copy, then doubling."""
    cdef Py_ssize_t done = size
    memcpy(dst, element, <size_t>size)
    while done < nbytes:
        memcpy(dst + done, dst, <size_t>min(done, nbytes - done))
        done += min(done, nbytes - done)


cdef void _pad_rows(char* out, unsigned char* mask, int64_t* lengths,
                    const PaddedItem* plan, Py_ssize_t n, Py_ssize_t longest, int nd,
                    const cnp.npy_intp* shape0, Py_ssize_t itemsize, Py_ssize_t step_bytes,
                    int fill_byte, const char* pattern,
                    Py_ssize_t pattern_bytes) noexcept nogil:
    """The whole output in one pass, each byte written once (see the section comment)."""
    cdef Py_ssize_t i, length, real, rest
    cdef cnp.npy_intp shape[cnp.NPY_MAXDIMS]
    cdef int d
    for d in range(1, nd):
        shape[d] = shape0[d]
    for i in range(n):
        length = plan[i].length
        lengths[i] = length
        memset(mask, 1, <size_t>length)
        memset(mask + length, 0, <size_t>(longest - length))
        mask += longest
        if step_bytes == 0:
            continue  # a trailing axis of length 0: no data at all
        real = length * step_bytes
        if plan[i].strides == NULL:
            memcpy(out, plan[i].data, <size_t>real)
        else:
            shape[0] = length
            _copy_strided(out, plan[i].data, nd, shape, plan[i].strides, itemsize)
        rest = (longest - length) * step_bytes
        if fill_byte >= 0:
            memset(out + real, fill_byte, <size_t>rest)
        else:
            _fill_from(out + real, rest, pattern, pattern_bytes)
        out += longest * step_bytes


cdef inline void _fill_from(char* dst, Py_ssize_t nbytes, const char* pattern,
                            Py_ssize_t pattern_bytes) noexcept nogil:
    cdef Py_ssize_t k
    while nbytes > 0:
        k = min(nbytes, pattern_bytes)
        memcpy(dst, pattern, <size_t>k)
        dst += k
        nbytes -= k


cdef void _copy_strided(char* dst, const char* src, int nd, const cnp.npy_intp* shape,
                        const cnp.npy_intp* strides, Py_ssize_t itemsize) noexcept nogil:
    """Copy a strided array (no axis of length 0) into C order at ``dst``.

    The trailing axes that are contiguous in memory form one block; the innermost
    remaining axis is a loop of block copies, the axes before it an odometer.
    """
    cdef Py_ssize_t block = itemsize, t, count, step
    cdef int inner = nd - 1, d
    cdef cnp.npy_intp index[cnp.NPY_MAXDIMS]
    cdef const char* p
    while inner >= 0 and (shape[inner] == 1 or strides[inner] == block):
        block *= shape[inner]
        inner -= 1
    if inner < 0:
        memcpy(dst, src, <size_t>block)
        return
    for d in range(inner):
        index[d] = 0
    count = shape[inner]
    step = strides[inner]
    while True:
        p = src
        # Fixed sizes let the compiler turn each memcpy into one load and one store.
        if block == 8:
            for t in range(count):
                memcpy(dst, p, 8)
                dst += 8
                p += step
        elif block == 4:
            for t in range(count):
                memcpy(dst, p, 4)
                dst += 4
                p += step
        elif block == 2:
            for t in range(count):
                memcpy(dst, p, 2)
                dst += 2
                p += step
        elif block == 1:
            for t in range(count):
                dst[0] = p[0]
                dst += 1
                p += step
        else:
            for t in range(count):
                memcpy(dst, p, <size_t>block)
                dst += block
                p += step
        d = inner - 1
        while d >= 0:
            index[d] += 1
            src += strides[d]
            if index[d] < shape[d]:
                break
            src -= strides[d] * shape[d]
            index[d] = 0
            d -= 1
        if d < 0:
            return


# --- StatsWindow ---------------------------------------------------------------------

cdef list _summaries(tuple windows, tuple qss):
    """Summaries of ``windows`` (StatsWindow) with the percentiles ``qss[i]`` of each.

    Each window is copied under its own lock, then all copies are computed in one
    stretch, without the GIL once they hold enough values to be worth it.
    """
    cdef Py_ssize_t k = len(windows), i, t, nq = 0, nv = 0, at = 0
    cdef Py_ssize_t* m
    cdef double** values
    cdef double** qs
    cdef Summary* s
    cdef double qv
    cdef void* block
    for i in range(k):
        nq += len(<tuple>qss[i])
        nv += (<StatsWindow>windows[i])._capacity
    # One block: per window its Summary, its m, pointers to its copy and its qs/out.
    block = malloc(<size_t>k * (sizeof(Summary) + sizeof(Py_ssize_t) + 2 * sizeof(double*))
                   + <size_t>(nv + 2 * nq + 1) * sizeof(double))
    if block == NULL:
        raise MemoryError()
    try:
        s = <Summary*>block
        m = <Py_ssize_t*>(s + k)
        values = <double**>(m + k)
        qs = values + k
        for i in range(k):
            values[i] = <double*>(qs + k) + at
            at += (<StatsWindow>windows[i])._capacity
            m[i] = len(<tuple>qss[i])
            qs[i] = <double*>(qs + k) + at  # then the m outputs
            at += 2 * m[i]
            for t in range(m[i]):
                q = (<tuple>qss[i])[t]
                qv = _as_double(q, "q")
                if not 0.0 <= qv <= 100.0:  # NaN fails too
                    raise ValueError(msg.PERCENTILE_RANGE.format(q=q))
                qs[i][t] = qv
        nv = 0
        for i in range(k):
            s[i].count = (<StatsWindow>windows[i])._snapshot(values[i])
            nv += s[i].count
        if nv >= _NOGIL_STATS_VALUES:
            with nogil:
                for i in range(k):
                    summarize(values[i], s[i].count, qs[i], m[i], &s[i], qs[i] + m[i])
        else:
            for i in range(k):
                summarize(values[i], s[i].count, qs[i], m[i], &s[i], qs[i] + m[i])
        return [(s[i].count, s[i].mean, s[i].min, s[i].max,
                 tuple([qs[i][m[i] + t] for t in range(m[i])])) for i in range(k)]
    finally:
        free(block)


cdef cnp.ndarray _vector(object values, int typenum, str name):
    """``values`` as a 1-D C-contiguous array of ``typenum`` (a safe cast), or ValueError."""
    cdef cnp.ndarray arr
    if cnp.PyArray_CheckExact(values):
        # The usual argument (a batch's enqueue times) is such an array already: taken as
        # it is, without PyArray_FromAny's general machinery (several per batch).
        arr = <cnp.ndarray>values
        if (cnp.PyArray_TYPE(arr) == typenum and cnp.PyArray_NDIM(arr) == 1
                and cnp.PyArray_ISCARRAY_RO(arr) and cnp.PyArray_ISNOTSWAPPED(arr)):
            return arr
    arr = cnp.PyArray_FROMANY(values, typenum, 0, 0, cnp.NPY_ARRAY_IN_ARRAY)
    if cnp.PyArray_NDIM(arr) != 1:
        raise ValueError(msg.NOT_ONE_DIMENSIONAL.format(name=name, shape=(<object>arr).shape))
    return arr


cdef class StatsWindow:
    """A fixed-size ring of float64 values: the last ``capacity`` values recorded.

    Recording is O(1) per value under a short ``std::mutex``; readers copy the ring
    under the lock and compute outside it (without the GIL for large windows).
    Percentiles equal ``numpy.percentile`` (linear) on ``values()``, bit for bit.
    """

    cdef mutex _mutex
    cdef double* _ring
    cdef Py_ssize_t _capacity
    cdef Py_ssize_t _head       # next slot to write
    cdef Py_ssize_t _len

    def __init__(self, capacity):
        # Checked in __cinit__; here for the visible signature (see RequestQueue).
        pass

    def __cinit__(self, capacity):
        cdef int64_t cap = _as_int64(capacity, "capacity")
        if cap < 1:
            raise ValueError(msg.WINDOW_CAPACITY.format(value=cap))
        if grow(<void**>&self._ring, <size_t>cap, sizeof(double)) < 0:
            raise MemoryError(msg.NO_MEMORY_WINDOW.format(capacity=cap))
        self._capacity = <Py_ssize_t>cap

    def __dealloc__(self):
        free(self._ring)

    # -- critical sections: mutex held on entry, released on return -----------------

    cdef void _write(self, const double* v, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t cap = self._capacity, first
        if n >= cap:
            memcpy(self._ring, v + (n - cap), <size_t>cap * sizeof(double))
            self._head = 0
            self._len = cap
        else:
            first = min(n, cap - self._head)
            memcpy(self._ring + self._head, v, <size_t>first * sizeof(double))
            memcpy(self._ring, v + first, <size_t>(n - first) * sizeof(double))
            self._head = (self._head + n) % cap
            self._len = min(self._len + n, cap)
        fb_unlock(self._mutex)

    cdef void _write_elapsed(self, const int64_t* start, Py_ssize_t n,
                             int64_t end) noexcept nogil:
        cdef Py_ssize_t i, cap = self._capacity, skip = n - cap if n > cap else 0
        for i in range(skip, n):
            # Wrapping subtraction, as numpy's int64 arithmetic does.
            self._ring[self._head] = <double>(<int64_t>(<uint64_t>end - <uint64_t>start[i])) / 1e6
            self._head += 1
            if self._head == cap:
                self._head = 0
        self._len = min(self._len + (n - skip), cap)
        fb_unlock(self._mutex)

    cdef void _reset(self) noexcept nogil:
        self._head = 0
        self._len = 0
        fb_unlock(self._mutex)

    cdef Py_ssize_t _read(self) noexcept nogil:
        cdef Py_ssize_t n = self._len
        fb_unlock(self._mutex)
        return n

    cdef Py_ssize_t _copy(self, double* dst) noexcept nogil:
        """Copy the window into ``dst``, oldest first; returns its length."""
        cdef Py_ssize_t n = self._len, first
        if n < self._capacity:
            memcpy(dst, self._ring, <size_t>n * sizeof(double))  # not wrapped yet
        else:
            first = self._capacity - self._head
            memcpy(dst, self._ring + self._head, <size_t>first * sizeof(double))
            memcpy(dst + first, self._ring, <size_t>self._head * sizeof(double))
        fb_unlock(self._mutex)
        return n

    # The same lock dance for each: try with the GIL, else lock and run without it.

    cdef Py_ssize_t _snapshot(self, double* dst):
        if fb_try_lock(self._mutex):
            return self._copy(dst)
        with nogil:
            fb_lock(self._mutex)
            return self._copy(dst)

    cdef Py_ssize_t _length(self):
        if fb_try_lock(self._mutex):
            return self._read()
        with nogil:
            fb_lock(self._mutex)
            return self._read()

    cdef void _append(self, const double* v, Py_ssize_t n):
        if fb_try_lock(self._mutex):
            self._write(v, n)
        else:
            with nogil:
                fb_lock(self._mutex)
                self._write(v, n)

    # -- Python API -------------------------------------------------------------------

    def __len__(self):
        """Values currently in the window: those recorded, at most ``capacity``."""
        return self._length()

    def __repr__(self):
        return f"<{type(self).__name__} {len(self)}/{self._capacity} values>"

    def record(self, value):
        """Record one value (a real number; ``TypeError`` otherwise)."""
        cdef double v = _as_double(value, "value")
        self._append(&v, 1)

    def record_many(self, values):
        """Record each value of a 1-D float sequence, in order."""
        cdef cnp.ndarray arr = _vector(values, cnp.NPY_FLOAT64, "values")
        self._append(<const double*>cnp.PyArray_DATA(arr), cnp.PyArray_SIZE(arr))

    def record_elapsed_ms(self, start_ns, end_ns):
        """Record ``(end_ns - s) / 1e6`` for each ``s`` of ``start_ns`` (milliseconds)."""
        cdef int64_t end = _as_int64(end_ns, "end_ns")
        cdef cnp.ndarray arr = _vector(start_ns, cnp.NPY_INT64, "start_ns")
        cdef const int64_t* start = <const int64_t*>cnp.PyArray_DATA(arr)
        cdef Py_ssize_t n = cnp.PyArray_SIZE(arr)
        if fb_try_lock(self._mutex):
            self._write_elapsed(start, n, end)
        else:
            with nogil:
                fb_lock(self._mutex)
                self._write_elapsed(start, n, end)

    def values(self):
        """A copy of the window, oldest first."""
        cdef cnp.npy_intp dim = self._capacity
        arr = cnp.PyArray_EMPTY(1, &dim, cnp.NPY_FLOAT64, 0)
        cdef Py_ssize_t n = self._snapshot(<double*>cnp.PyArray_DATA(arr))
        return arr if n == self._capacity else arr[:n].copy()

    @staticmethod
    def summaries(windows, percentiles):
        """``(count, mean, min, max, percentiles)`` of each window, in one call.

        ``percentiles[i]`` are the ``q`` (0 to 100) of window i; mean/min/max and the
        percentiles are NaN for an empty window. Each window is copied under its own
        lock; all are then computed in one stretch, without the GIL when they hold
        enough values to be worth it.
        """
        ws = tuple(windows)
        qss = tuple([tuple(qs) for qs in percentiles])
        if len(ws) != len(qss):
            raise ValueError(
                msg.WINDOWS_AND_PERCENTILES.format(windows=len(ws), sequences=len(qss)))
        for w in ws:
            if not isinstance(w, StatsWindow):
                raise TypeError(msg.NOT_A_WINDOW.format(type=type(w).__name__))
        return _summaries(ws, qss)

    def clear(self):
        """Forget every value."""
        if fb_try_lock(self._mutex):
            self._reset()
        else:
            with nogil:
                fb_lock(self._mutex)
                self._reset()


cdef class Histogram:
    """Counts per bucket since creation, with the sum and count of the values observed.

    Bucket ``i`` holds the values ``<= bounds[i]`` and ``> bounds[i - 1]`` (Prometheus's
    ``le``); one more bucket holds the values above every bound (NaN among them). The
    worker observes a whole batch in one call, a C loop over its timestamps; readers take
    a snapshot under the same short lock. The GIL is kept throughout: a batch's loop takes
    about a microsecond, and giving the GIL up and taking it back costs a thread that
    competes with busy Python threads up to a switch interval (5 ms) each time.
    """

    cdef mutex _mutex
    cdef double* _bounds
    cdef int64_t* _counts      # _n + 1 buckets
    cdef Py_ssize_t _n
    cdef double _sum
    cdef readonly tuple bounds

    def __init__(self, bounds):
        # Checked in __cinit__; here for the visible signature (see RequestQueue).
        pass

    def __cinit__(self, bounds):
        cdef list values
        try:
            values = [float(b) for b in bounds]
        except (TypeError, ValueError):
            raise ValueError(msg.HISTOGRAM_BOUNDS.format(bounds=bounds)) from None
        if (not values or isinstance(bounds, (str, bytes))
                or any(not (v == v and abs(v) != float("inf")) for v in values)
                or any(b <= a for a, b in zip(values, values[1:]))):
            raise ValueError(msg.HISTOGRAM_BOUNDS.format(bounds=bounds))
        cdef Py_ssize_t n = len(values), i
        if (grow(<void**>&self._bounds, <size_t>n, sizeof(double)) < 0
                or grow(<void**>&self._counts, <size_t>(n + 1), sizeof(int64_t)) < 0):
            raise MemoryError(msg.NO_MEMORY_HISTOGRAM.format(n=n + 1))
        for i in range(n):
            self._bounds[i] = values[i]
        for i in range(n + 1):
            self._counts[i] = 0
        self._n = n
        self.bounds = tuple(values)

    def __dealloc__(self):
        free(self._bounds)
        free(self._counts)

    def __repr__(self):
        return f"<Histogram of {self._n + 1} buckets>"

    cdef inline Py_ssize_t _bucket(self, double v) noexcept nogil:
        """The first i with v <= bounds[i] (binary search); _n when there is none."""
        cdef Py_ssize_t lo = 0, hi = self._n, mid
        while lo < hi:
            mid = (lo + hi) >> 1
            if v <= self._bounds[mid]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def observe(self, value):
        """Count one value."""
        cdef double v = _as_double(value, "value")
        cdef Py_ssize_t i = self._bucket(v)
        fb_lock(self._mutex)
        self._counts[i] += 1
        self._sum += v
        fb_unlock(self._mutex)

    def observe_elapsed(self, start_ns, end_ns, scale):
        """Count ``(end_ns - s) * scale`` for each ``s`` of ``start_ns`` (int64 array)."""
        cdef int64_t end = _as_int64(end_ns, "end_ns")
        cdef double k = _as_double(scale, "scale")
        cdef cnp.ndarray arr = _vector(start_ns, cnp.NPY_INT64, "start_ns")
        cdef const int64_t* start = <const int64_t*>cnp.PyArray_DATA(arr)
        cdef Py_ssize_t n = cnp.PyArray_SIZE(arr), i
        cdef double v, total = 0.0
        cdef Py_ssize_t b = 0, top = self._n
        cdef const double* bounds = self._bounds
        fb_lock(self._mutex)
        for i in range(n):
            v = <double>(end - start[i]) * k
            # A batch's items are in queue order, their times close: most values fall
            # into the bucket of the one before, which two comparisons confirm.
            if i == 0 or not ((b == top or v <= bounds[b]) and (b == 0 or v > bounds[b - 1])):
                b = self._bucket(v)
            self._counts[b] += 1
            total += v
        self._sum += total
        fb_unlock(self._mutex)

    def snapshot(self):
        """``(cumulative counts per bound, count of every value, sum)`` at one moment."""
        cdef Py_ssize_t i, n = self._n
        cdef int64_t running = 0
        cdef double total
        cdef int64_t* copy = <int64_t*>malloc(<size_t>(n + 1) * sizeof(int64_t))
        if copy == NULL:
            raise MemoryError(msg.NO_MEMORY_HISTOGRAM.format(n=n + 1))
        fb_lock(self._mutex)  # no Python object is touched under the lock
        memcpy(copy, self._counts, <size_t>(n + 1) * sizeof(int64_t))
        total = self._sum
        fb_unlock(self._mutex)
        cdef list counts = []
        try:
            for i in range(n + 1):
                running += copy[i]
                if i < n:
                    counts.append(running)
        finally:
            free(copy)
        return tuple(counts), running, total
