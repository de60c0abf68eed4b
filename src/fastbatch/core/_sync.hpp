// Portable clock, lock and condition-variable helpers for fastbatch/_core.pyx, plus
// two floating-point helpers: one that must not be left to the compiler (fb_lerp) and
// one the compiler would not vectorize (fb_min_max).
//
// Cython sees only plain noexcept functions: no templates, no RAII objects crossing
// the GIL boundary. Every timestamp of the core is a steady_clock reading in
// nanoseconds, so `monotonic_ns()`, enqueue times and wait deadlines compare directly.
#ifndef FASTBATCH_SYNC_HPP
#define FASTBATCH_SYNC_HPP

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

// "Wait forever" deadline; FB_NO_WAIT is a deadline that has always passed.
#define FB_FOREVER INT64_MAX
#define FB_NO_WAIT INT64_MIN

// One wait never sleeps longer than this: some standard libraries convert an absolute
// steady_clock deadline into a relative native timeout that can overflow (or wrap) for
// deadlines years away. Callers loop on their condition anyway, so a capped wait is
// just an early (spurious) wake-up.
static const int64_t FB_MAX_WAIT_NS = INT64_C(3600) * 1000000000;

static inline int64_t fb_now_ns() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

// lock()/unlock() only throw on programming errors (EDEADLK, EPERM); terminating in
// that case is what a lock_guard inside a noexcept function would do too.
static inline void fb_lock(std::mutex& m) noexcept { m.lock(); }
static inline int fb_try_lock(std::mutex& m) noexcept { return m.try_lock() ? 1 : 0; }
static inline void fb_unlock(std::mutex& m) noexcept { m.unlock(); }
static inline void fb_notify_one(std::condition_variable& cv) noexcept { cv.notify_one(); }
static inline void fb_notify_all(std::condition_variable& cv) noexcept { cv.notify_all(); }

// Wait on `cv`; `m` must be locked by the caller and is locked again on return.
// Returns 1 when `deadline_ns` has passed, 0 on a notification or spurious wake-up.
// The caller keeps ownership of the mutex: the unique_lock only borrows it
// (adopt_lock) and gives it back (release) without unlocking.
static inline int fb_cv_wait_until(std::condition_variable& cv, std::mutex& m,
                                   int64_t deadline_ns) noexcept {
    std::unique_lock<std::mutex> lk(m, std::adopt_lock);
    int timed_out = 0;
    if (deadline_ns == FB_FOREVER) {
        cv.wait(lk);
    } else {
        const int64_t now = fb_now_ns();
        if (now >= deadline_ns) {
            timed_out = 1;
        } else if (deadline_ns - now > FB_MAX_WAIT_NS) {
            cv.wait_for(lk, std::chrono::nanoseconds(FB_MAX_WAIT_NS));
        } else {
            const std::chrono::steady_clock::time_point tp{
                std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                    std::chrono::nanoseconds(deadline_ns))};
            timed_out = cv.wait_until(lk, tp) == std::cv_status::timeout;
        }
    }
    lk.release();
    return timed_out;
}

// numpy's linear interpolation (`_lerp` in numpy/lib/_function_base_impl.py), kept
// bit-identical: numpy multiplies and adds in separate ufunc calls, so the product is
// forced through memory here; otherwise compilers may fuse `a + d * t` into one FMA
// instruction (clang does by default, and GCC on FMA-capable targets such as arm64),
// which rounds once instead of twice.
static inline double fb_lerp(double a, double b, double t) noexcept {
    const double d = b - a;
    volatile double p;
    if (t >= 0.5) {
        p = d * (1.0 - t);
        return b - p;
    }
    p = d * t;
    return a + p;
}

// Min and max of a[0..n) (n >= 1, no NaN: the caller checks). Independent
// accumulators, since one would make every compare wait for the previous one; on x86-64
// (SSE2 is part of the baseline) two doubles per instruction: ~2x faster again.
static inline void fb_min_max(const double* a, std::ptrdiff_t n, double* lo,
                              double* hi) noexcept {
    std::ptrdiff_t i = 0;
    double l = a[0], h = a[0];
#if defined(__SSE2__)
    __m128d l0 = _mm_set1_pd(l), l1 = l0, l2 = l0, l3 = l0;
    __m128d h0 = l0, h1 = l0, h2 = l0, h3 = l0;
    for (; i + 8 <= n; i += 8) {
        const __m128d v0 = _mm_loadu_pd(a + i), v1 = _mm_loadu_pd(a + i + 2);
        const __m128d v2 = _mm_loadu_pd(a + i + 4), v3 = _mm_loadu_pd(a + i + 6);
        l0 = _mm_min_pd(v0, l0); l1 = _mm_min_pd(v1, l1);
        l2 = _mm_min_pd(v2, l2); l3 = _mm_min_pd(v3, l3);
        h0 = _mm_max_pd(v0, h0); h1 = _mm_max_pd(v1, h1);
        h2 = _mm_max_pd(v2, h2); h3 = _mm_max_pd(v3, h3);
    }
    double ls[2], hs[2];
    _mm_storeu_pd(ls, _mm_min_pd(_mm_min_pd(l0, l1), _mm_min_pd(l2, l3)));
    _mm_storeu_pd(hs, _mm_max_pd(_mm_max_pd(h0, h1), _mm_max_pd(h2, h3)));
    l = ls[0] < ls[1] ? ls[0] : ls[1];
    h = hs[0] > hs[1] ? hs[0] : hs[1];
#else
    double l1 = l, l2 = l, l3 = l, h1 = h, h2 = h, h3 = h;
    for (; i + 4 <= n; i += 4) {
        l = a[i] < l ? a[i] : l;             h = a[i] > h ? a[i] : h;
        l1 = a[i + 1] < l1 ? a[i + 1] : l1;  h1 = a[i + 1] > h1 ? a[i + 1] : h1;
        l2 = a[i + 2] < l2 ? a[i + 2] : l2;  h2 = a[i + 2] > h2 ? a[i + 2] : h2;
        l3 = a[i + 3] < l3 ? a[i + 3] : l3;  h3 = a[i + 3] > h3 ? a[i + 3] : h3;
    }
    l = std::min(std::min(l, l1), std::min(l2, l3));
    h = std::max(std::max(h, h1), std::max(h2, h3));
#endif
    for (; i < n; ++i) {
        l = a[i] < l ? a[i] : l;
        h = a[i] > h ? a[i] : h;
    }
    *lo = l;
    *hi = h;
}

#endif  // FASTBATCH_SYNC_HPP
