// Portable clock, lock and condition-variable helpers for fastbatch/_core.pyx, plus
// the one floating-point helper that must not be left to the compiler (fb_lerp).
//
// Cython sees only plain noexcept functions: no templates, no RAII objects crossing
// the GIL boundary. Every timestamp of the core is a steady_clock reading in
// nanoseconds, so `monotonic_ns()`, enqueue times and wait deadlines compare directly.
#ifndef FASTBATCH_SYNC_HPP
#define FASTBATCH_SYNC_HPP

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

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

#endif  // FASTBATCH_SYNC_HPP
