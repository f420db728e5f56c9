//! The held lists' clock: a coarse monotonic time kept in one atomic by a ticker thread, so
//! that diagnostic mode's acquire pays one load for its timestamp instead of a clock read.
//!
//! Even `CLOCK_MONOTONIC_COARSE` through the vDSO costs about 6.5 ns per read on the
//! development VM, a third of what all of diagnostic mode may add to a 25 ns
//! `acquire()+release()`. The ages of held locks are shown in seconds, so the acquire stores
//! the ticker's last reading: while diagnostic mode is on, a native thread (`rthread-clock`,
//! no GIL, never touches Python) stores `CLOCK_MONOTONIC_COARSE` every [`TICK`]. A stamp is
//! therefore never later than the acquire, and earlier by at most one tick plus the coarse
//! clock's resolution (a jiffy, 1 - 4 ms) plus any delay in scheduling the ticker: a report's
//! age of a held lock reads up to about 15 ms long on an idle machine.
//!
//! When no ticker runs (diagnostic mode just turned on, a fork child, a spawn that failed) the
//! stored time is 0 and the acquire reads the coarse clock itself, starting the ticker if
//! none is running. The ticker ends at its next tick once diagnostic mode is off.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use crate::deadline::Deadline;

/// How often the ticker refreshes the stored time.
pub const TICK: Duration = Duration::from_millis(10);

/// The ticker's last reading of the coarse clock (ns), or 0 when no ticker keeps it.
static NOW: AtomicU64 = AtomicU64::new(0);
/// A ticker thread exists (or its spawn failed: then nobody retries, and stamps read the
/// clock).
static RUNNING: AtomicBool = AtomicBool::new(false);
static AT_FORK: Once = Once::new();

/// The timestamp for a held-list entry: the ticker's time, or the coarse clock when no
/// ticker keeps it.
#[inline]
pub(super) fn stamp_ns() -> u64 {
    let t = NOW.load(Ordering::Relaxed);
    if t != 0 {
        t
    } else {
        stamp_slow()
    }
}

#[cold]
fn stamp_slow() -> u64 {
    if super::registry::track_held() {
        start();
    }
    coarse_now_ns()
}

/// Starts the ticker unless one is running (diagnostic mode was turned on).
pub(super) fn start() {
    if RUNNING.swap(true, Ordering::AcqRel) {
        return;
    }
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only stores two atomics (async-signal-safe);
        // nothing is unregistered later.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_child)) };
    });
    NOW.store(coarse_now_ns(), Ordering::Relaxed);
    if std::thread::Builder::new()
        .name("rthread-clock".into())
        .stack_size(64 * 1024)
        .spawn(tick)
        .is_err()
    {
        // No ticker: stamps read the clock (RUNNING stays set, so nobody retries on every
        // acquire).
        NOW.store(0, Ordering::Relaxed);
    }
}

fn tick() {
    loop {
        std::thread::sleep(TICK);
        if !super::registry::track_held() {
            // An acquire between these two stores sees 0 and RUNNING set, reads the clock
            // itself, and the next one starts a new ticker if diagnostic mode is back on.
            NOW.store(0, Ordering::Relaxed);
            RUNNING.store(false, Ordering::Release);
            return;
        }
        NOW.store(coarse_now_ns(), Ordering::Relaxed);
    }
}

/// The ticker does not exist in a fork child: its stored time would stand still.
extern "C" fn after_fork_child() {
    NOW.store(0, Ordering::Relaxed);
    RUNNING.store(false, Ordering::Relaxed);
}

/// The monotonic clock at tick resolution (a few ms): on Linux `CLOCK_MONOTONIC_COARSE`
/// (same origin as `CLOCK_MONOTONIC`, never ahead of it), a fraction of the cost of the
/// precise clock.
#[inline]
pub(super) fn coarse_now_ns() -> u64 {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable `timespec` for the whole call.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) } == 0 {
            return u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
                + u64::try_from(ts.tv_nsec).unwrap_or(0);
        }
    }
    Deadline::now().as_nanos()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_follow_the_clock_within_a_few_ticks() {
        super::super::registry::set_track_held(true);
        // Bounded: the ticker starts and stores a time at once.
        let t0 = Deadline::now().as_nanos();
        let s = stamp_ns();
        assert!(s != 0 && s <= Deadline::now().as_nanos());
        std::thread::sleep(Duration::from_millis(100));
        let s2 = stamp_ns();
        // Moved on with the clock, and not by less than the sleep minus a few ticks.
        assert!(s2 >= t0 + 50_000_000, "{s2} vs {t0}");
        assert!(s2 <= Deadline::now().as_nanos());
    }
}
