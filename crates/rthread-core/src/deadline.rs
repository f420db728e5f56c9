//! Monotonic deadlines and CPython's timeout limits.
//!
//! Lock timeouts are kept as an absolute [`Deadline`] on `CLOCK_MONOTONIC`, the clock CPython uses
//! for lock timeouts. A wait that is interrupted by a signal and then restarted passes the *same*
//! deadline again, so interruptions never stretch the total time a caller waits.

use std::time::Duration;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MICRO: i64 = 1_000;
const MICROS_PER_SEC: i64 = 1_000_000;

/// CPython's `PY_TIMEOUT_MAX`: the largest timeout a lock accepts, in microseconds.
///
/// CPython keeps time as a signed 64-bit count of nanoseconds, so the largest timeout it can
/// express is `i64::MAX` nanoseconds, which it states in whole microseconds.
pub const TIMEOUT_MAX_MICROS: i64 = i64::MAX / NANOS_PER_MICRO;

/// The largest timeout accepted, in nanoseconds: [`TIMEOUT_MAX_MICROS`] stated in nanoseconds.
///
/// This is the limit to validate against: CPython raises `OverflowError` for a timeout above
/// `PY_TIMEOUT_MAX` microseconds (about 9223372036.85 s), which is a little more than the
/// rounded-down [`TIMEOUT_MAX`] it publishes.
pub const TIMEOUT_MAX_NANOS: i64 = TIMEOUT_MAX_MICROS * NANOS_PER_MICRO;

/// The largest timeout accepted, in seconds, exactly as CPython's `_thread.TIMEOUT_MAX`.
///
/// CPython publishes `PY_TIMEOUT_MAX` microseconds as seconds rounded towards minus infinity,
/// as a float: `9223372036.0` on 64-bit Linux. (The conversion is exact: the value is far below
/// 2^53.)
#[allow(clippy::cast_precision_loss)]
pub const TIMEOUT_MAX: f64 = (TIMEOUT_MAX_MICROS / MICROS_PER_SEC) as f64;

/// An absolute point on `CLOCK_MONOTONIC`, in nanoseconds since that clock's epoch.
///
/// Monotonic time never jumps when the wall clock is set, which is why CPython uses it for lock
/// timeouts. All arithmetic saturates: a deadline too far away to represent becomes the largest
/// representable one (about 584 years after boot), which is "forever" for every practical purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    nanos: u64,
}

impl Deadline {
    /// The current time, from `clock_gettime(CLOCK_MONOTONIC)`.
    ///
    /// # Panics
    ///
    /// If `clock_gettime` fails, which it cannot for `CLOCK_MONOTONIC` on a supported system.
    #[cfg(not(loom))]
    #[must_use]
    pub fn now() -> Deadline {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable `timespec` that lives for the whole call, and
        // CLOCK_MONOTONIC is supported on every platform this crate builds for.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
        // Monotonic time is never negative, so these conversions cannot fail; saturate anyway.
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        Deadline {
            nanos: secs.saturating_mul(NANOS_PER_SEC).saturating_add(nanos),
        }
    }

    /// The current time of the calling thread's modelled clock (`cfg(loom)` only; see
    /// `crate::sync::clock`): every read moves it forward a little, so spins end.
    #[cfg(loom)]
    #[must_use]
    pub fn now() -> Deadline {
        Deadline {
            nanos: crate::sync::clock::now_nanos(),
        }
    }

    /// A deadline `nanos` nanoseconds from now (saturating).
    #[must_use]
    pub fn after_nanos(nanos: u64) -> Deadline {
        Deadline {
            nanos: Deadline::now().nanos.saturating_add(nanos),
        }
    }

    /// A deadline `d` from now (saturating).
    #[must_use]
    pub fn after(d: Duration) -> Deadline {
        Deadline::after_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }

    /// The deadline at `nanos` nanoseconds on `CLOCK_MONOTONIC`.
    #[must_use]
    pub const fn from_nanos(nanos: u64) -> Deadline {
        Deadline { nanos }
    }

    /// Nanoseconds on `CLOCK_MONOTONIC`.
    #[must_use]
    pub const fn as_nanos(&self) -> u64 {
        self.nanos
    }

    /// Time left until the deadline; zero once it has passed.
    #[must_use]
    pub fn remaining(&self) -> Duration {
        Duration::from_nanos(self.nanos.saturating_sub(Deadline::now().nanos))
    }

    /// Whether the deadline is now or in the past.
    #[must_use]
    pub fn has_passed(&self) -> bool {
        Deadline::now() >= *self
    }

    /// The deadline as an absolute `timespec` on `CLOCK_MONOTONIC` (for `FUTEX_WAIT_BITSET`,
    /// `sem_clockwait`, `pthread_cond_timedwait` with a monotonic condvar, ...).
    ///
    /// Where `time_t` is too small for the deadline, the seconds saturate at `time_t::MAX`.
    #[must_use]
    pub fn as_timespec(&self) -> libc::timespec {
        let secs = self.nanos / NANOS_PER_SEC;
        let sub = self.nanos % NANOS_PER_SEC;
        libc::timespec {
            tv_sec: libc::time_t::try_from(secs).unwrap_or(libc::time_t::MAX),
            // Below one billion, so it fits every platform's `tv_nsec` type.
            #[allow(clippy::cast_possible_wrap, clippy::cast_possible_truncation)]
            tv_nsec: sub as _,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn timeout_max_matches_cpython() {
        assert_eq!(TIMEOUT_MAX, 9223372036.0);
        assert_eq!(TIMEOUT_MAX_MICROS, 9_223_372_036_854_775);
        assert_eq!(TIMEOUT_MAX_NANOS, 9_223_372_036_854_775_000);
        // The validation limit is just above the published value, as in CPython.
        assert!(TIMEOUT_MAX_NANOS as f64 / 1e9 > TIMEOUT_MAX);
        assert!((TIMEOUT_MAX_NANOS as f64 / 1e9) < TIMEOUT_MAX + 1.0);
    }

    #[test]
    fn now_is_monotonic() {
        let a = Deadline::now();
        let b = Deadline::now();
        assert!(b >= a);
        assert!(a.as_nanos() > 0);
    }

    #[test]
    fn after_and_remaining() {
        let d = Deadline::after(Duration::from_secs(10));
        let left = d.remaining();
        assert!(left <= Duration::from_secs(10));
        assert!(left > Duration::from_secs(9));
        assert!(!d.has_passed());

        let past = Deadline::after_nanos(0);
        assert!(past.has_passed());
        assert_eq!(past.remaining(), Duration::ZERO);
    }

    #[test]
    fn saturates() {
        let far = Deadline::after_nanos(u64::MAX);
        assert_eq!(far.as_nanos(), u64::MAX);
        assert_eq!(Deadline::after(Duration::MAX), far);
        assert!(!far.has_passed());
        // The largest Python timeout still fits without saturating.
        let max = Deadline::after_nanos(TIMEOUT_MAX_NANOS as u64);
        assert!(max < far);
    }

    #[test]
    fn timespec_round_trip() {
        let d = Deadline::from_nanos(12 * NANOS_PER_SEC + 345_678_901);
        let ts = d.as_timespec();
        assert_eq!(ts.tv_sec, 12);
        assert_eq!(ts.tv_nsec, 345_678_901);
        let far = Deadline::from_nanos(u64::MAX).as_timespec();
        assert!(far.tv_sec > 0);
        assert!((0..1_000_000_000).contains(&far.tv_nsec));
    }

    #[test]
    fn ordering_follows_time() {
        let a = Deadline::from_nanos(5);
        let b = Deadline::from_nanos(6);
        assert!(a < b);
        assert_eq!(a.max(b), b);
    }
}
