# cython: language_level=3
"""Pure C helpers of the compiled core: memory growth, sums, percentiles, summaries.

Every function here is ``inline``, ``noexcept nogil`` and touches only the memory it is
given, so ``_core.pyx`` can call it under its own mutexes or without the GIL. They are
kept bit-identical to numpy (``mean``, ``percentile`` with the default ``linear``
method), because the pure-Python twin computes the same statistics with numpy itself and
the tests compare the two cores exactly.
"""

from libc.math cimport NAN, floor
from libc.stdlib cimport realloc
from libcpp.algorithm cimport max_element, min_element, nth_element, sort


cdef extern from "_sync.hpp" nogil:
    double fb_lerp(double a, double b, double t) noexcept
    void fb_min_max(const double* a, Py_ssize_t n, double* lo, double* hi) noexcept


cdef struct Summary:
    Py_ssize_t count
    double mean
    double min
    double max


cdef inline int grow(void** ptr, size_t nelems, size_t elsize) noexcept nogil:
    """Resize ``*ptr`` to ``nelems * elsize`` bytes; on failure return -1, ``*ptr`` intact.

    The one place memory grows (overflow-checked, like sklearn's ``safe_realloc``). It
    does not raise: it runs under our mutexes, where taking the GIL is forbidden, so the
    callers turn -1 into ``MemoryError`` once the lock is dropped.
    """
    cdef size_t nbytes
    cdef void* p
    if elsize != 0 and nelems > (<size_t>-1) // elsize:
        return -1
    nbytes = nelems * elsize
    p = realloc(ptr[0], nbytes if nbytes > 0 else 1)
    if p == NULL:
        return -1
    ptr[0] = p
    return 0


cdef inline double pairwise_sum(const double* a, Py_ssize_t n) noexcept nogil:
    """numpy's pairwise summation (``@TYPE@_pairwise_sum``), operation for operation.

    So that ``mean`` equals ``numpy.mean(values())`` to the last bit, not just closely.
    """
    cdef double r0, r1, r2, r3, r4, r5, r6, r7, res
    cdef Py_ssize_t i, n2, stop
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    if n <= 128:
        r0 = a[0]; r1 = a[1]; r2 = a[2]; r3 = a[3]
        r4 = a[4]; r5 = a[5]; r6 = a[6]; r7 = a[7]
        stop = n - n % 8
        i = 8
        while i < stop:
            r0 += a[i]; r1 += a[i + 1]; r2 += a[i + 2]; r3 += a[i + 3]
            r4 += a[i + 4]; r5 += a[i + 5]; r6 += a[i + 6]; r7 += a[i + 7]
            i += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while i < n:
            res += a[i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2)


cdef inline void percentile_rank(Py_ssize_t n, double q, Py_ssize_t* lo, Py_ssize_t* hi,
                                 double* gamma) noexcept nogil:
    """numpy's 'linear' method: neighbours and weight of the q-th percentile of n values."""
    cdef double virtual = <double>(n - 1) * (q / 100.0)
    cdef double below
    if virtual >= <double>(n - 1):
        # numpy takes the last value twice, with the index -1 used in the weight.
        lo[0] = hi[0] = n - 1
        gamma[0] = virtual + 1.0
    else:
        below = floor(virtual)
        lo[0] = <Py_ssize_t>below
        hi[0] = lo[0] + 1
        gamma[0] = virtual - below


cdef inline void percentiles_of(double* a, Py_ssize_t n, const double* qs, Py_ssize_t m,
                                double* out) noexcept nogil:
    """Percentiles of ``a[:n]`` (reordered in place; no NaN in it; n >= 1)."""
    cdef Py_ssize_t idx[16]
    cdef Py_ssize_t lo, hi, i, j, k, start = 0, tmp
    cdef double gamma
    if m > 8:
        sort(a, a + n)
    else:
        # Select only the order statistics needed, left to right: each nth_element
        # works on what lies beyond the previous one.
        k = 0
        for i in range(m):
            percentile_rank(n, qs[i], &lo, &hi, &gamma)
            idx[k] = lo
            idx[k + 1] = hi
            k += 2
        for i in range(1, k):  # insertion sort of at most 16 indices
            tmp = idx[i]
            j = i
            while j > 0 and idx[j - 1] > tmp:
                idx[j] = idx[j - 1]
                j -= 1
            idx[j] = tmp
        for i in range(k):
            if idx[i] < start:
                continue  # a duplicate, already in place
            if idx[i] == start:
                # The smallest of the rest (typically the neighbour of the previous
                # one): a scan, swapped into place to keep the partition valid.
                j = min_element(a + start, a + n) - a
                a[start], a[j] = a[j], a[start]
                start += 1
            elif idx[i] == n - 1:
                j = max_element(a + start, a + n) - a
                a[n - 1], a[j] = a[j], a[n - 1]
                start = n
            else:
                nth_element(a + start, a + idx[i], a + n)
                start = idx[i] + 1
    for i in range(m):
        percentile_rank(n, qs[i], &lo, &hi, &gamma)
        out[i] = fb_lerp(a[lo], a[hi], gamma)


cdef inline bint has_nan(const double* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if a[i] != a[i]:
            return True
    return False


cdef inline void summarize(double* a, Py_ssize_t n, const double* qs, Py_ssize_t m,
                           Summary* s, double* out) noexcept nogil:
    """Count, mean/min/max and percentiles of ``a[:n]`` (reordered); NaN as numpy gives."""
    cdef Py_ssize_t i
    s.count = n
    s.mean = s.min = s.max = NAN
    if n == 0:
        for i in range(m):
            out[i] = NAN
        return
    s.mean = pairwise_sum(a, n) / <double>n
    # A NaN value makes the sum NaN; a NaN sum may also be inf - inf: look.
    if s.mean != s.mean and has_nan(a, n):
        # numpy propagates NaN through min, max and every percentile.
        for i in range(m):
            out[i] = NAN
        return
    fb_min_max(a, n, &s.min, &s.max)
    if m > 0:
        percentiles_of(a, n, qs, m, out)
