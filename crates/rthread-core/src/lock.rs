//! The binary lock behind Python's `_thread.lock`.
//!
//! One `AtomicU32` and nothing else: a lock costs four bytes. The design follows the Rust
//! standard library's futex mutex: a one-instruction fast path, and a `#[cold]` slow path that
//! spins briefly and then sleeps in the [`Wait`] backend.
//!
//! Unlike a Rust `Mutex`, a Python lock has no owner: any thread may release it, and releasing an
//! unlocked lock is an error value ([`NotLocked`]), never undefined behaviour.
//!
//! # Notes about memory ordering
//!
//! - Taking the lock (the fast-path `compare_exchange`, the slow path's `compare_exchange` and
//!   `swap` to `CONTENDED`) uses `Acquire`, and releasing it (the `swap` to `UNLOCKED`) uses
//!   `Release`. This is the whole contract of a lock: everything the previous holder wrote
//!   before releasing is visible to the next holder after acquiring.
//! - Failed compare-exchanges and the spinning loads are `Relaxed`: they only decide what to try
//!   next, and every path that ends up holding the lock does so through an `Acquire` operation.
//! - [`RawLock::is_locked`] is a `Relaxed` snapshot: it orders nothing and may be stale by the
//!   time the caller looks at it, exactly like Python's `locked()`.
//! - [`RawLock::reinit`] uses `Release` like a release, so it is also a sound (if blunt) way to
//!   free a lock that other threads still use.

use core::fmt;
use core::hint::spin_loop;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, Ordering};

use crate::deadline::Deadline;
use crate::wait::{DefaultWait, Wait, WaitResult};

/// Nobody holds the lock.
const UNLOCKED: u32 = 0;
/// Held, and no thread is asleep waiting for it (as far as the holder knows).
const LOCKED: u32 = 1;
/// Held, and threads may be asleep in [`Wait::wait`]: the release must wake one.
const CONTENDED: u32 = 2;

/// How many times the slow path polls a `LOCKED` lock before going to sleep.
///
/// The same bound as the standard library's futex mutex. Python code usually holds a lock for a
/// short critical section, and a few microseconds of `spin_loop` hints are much cheaper than a
/// pair of futex system calls and a context switch. The spin is bounded and stops as soon as the
/// state is `CONTENDED` (others are already sleeping, so spinning would only jump the queue), so
/// on a busy or single-core machine it wastes at most those few microseconds.
const SPIN_LIMIT: u32 = 100;

/// What an acquire attempt came to.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Acquire {
    /// The caller now holds the lock.
    Acquired,
    /// The deadline passed first. Never returned when there was no deadline.
    TimedOut,
    /// A signal handler ran while the caller was asleep. The lock is *not* held. The caller may
    /// run its signal machinery (Python's pending calls) and then call again with the same
    /// deadline.
    Interrupted,
}

/// Error returned when releasing a lock that is not locked (Python: "release unlocked lock").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NotLocked;

impl fmt::Display for NotLocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("release unlocked lock")
    }
}

impl std::error::Error for NotLocked {}

/// A binary lock that any thread may release, generic over the [`Wait`] backend.
///
/// Most code wants the [`Lock`] alias, which uses the platform's [`DefaultWait`].
pub struct RawLock<W: Wait = DefaultWait> {
    /// The lock word.
    ///
    /// | state       | value | meaning                                              |
    /// |-------------|-------|------------------------------------------------------|
    /// | `UNLOCKED`  | 0     | free                                                 |
    /// | `LOCKED`    | 1     | held; no thread asleep waiting for it                |
    /// | `CONTENDED` | 2     | held; threads may be asleep: release must wake one   |
    ///
    /// Transitions: `UNLOCKED -> LOCKED` (fast path, or after a short spin),
    /// `UNLOCKED | LOCKED -> CONTENDED` (a thread about to sleep; if the old value was
    /// `UNLOCKED` it took the lock instead), `LOCKED | CONTENDED -> UNLOCKED` (release; wakes one
    /// waiter from `CONTENDED`). A thread that took the lock after sleeping always stores
    /// `CONTENDED`, because it cannot know whether others are still asleep.
    state: AtomicU32,
    _wait: PhantomData<fn() -> W>,
}

/// The binary lock with the platform's default backend (futex on Linux).
pub type Lock = RawLock<DefaultWait>;

impl<W: Wait> RawLock<W> {
    /// A new, unlocked lock.
    pub const fn new() -> Self {
        RawLock {
            state: AtomicU32::new(UNLOCKED),
            _wait: PhantomData,
        }
    }

    /// Takes the lock if it is free, without blocking or spinning.
    #[inline]
    #[must_use]
    pub fn try_acquire(&self) -> bool {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock, blocking until `deadline` (`None` = no limit).
    ///
    /// Returns [`Acquire::Interrupted`] only when a wait was interrupted by a signal handler, so
    /// that a caller holding Python's machinery can run the handlers and then call again with
    /// the *same* deadline. Never returns [`Acquire::TimedOut`] when `deadline` is `None`. A
    /// deadline that has already passed makes this a non-blocking attempt.
    #[inline]
    pub fn acquire_until(&self, deadline: Option<Deadline>) -> Acquire {
        if self.try_acquire() {
            Acquire::Acquired
        } else {
            self.acquire_contended(deadline)
        }
    }

    /// Takes the lock, blocking as long as needed. Interruptions by signals are retried; for
    /// pure-Rust users that have no signal machinery of their own.
    pub fn acquire(&self) {
        while self.acquire_until(None) != Acquire::Acquired {}
    }

    #[cold]
    fn acquire_contended(&self, deadline: Option<Deadline>) -> Acquire {
        let mut state = self.spin();

        // Free after the spin: take it as LOCKED, as the fast path would. Others may still be
        // asleep, but then the release that freed the lock woke one of them, and that thread
        // marks the lock CONTENDED again before it sleeps, so no wake-up is lost.
        if state == UNLOCKED {
            match self.state.compare_exchange(
                UNLOCKED,
                LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Acquire::Acquired,
                Err(s) => state = s,
            }
        }

        // A zero or past timeout is a non-blocking attempt: give up before marking the lock
        // CONTENDED, which would cost the holder a needless wake-up system call.
        if deadline.is_some_and(|d| d.has_passed()) {
            return Acquire::TimedOut;
        }

        loop {
            // Announce that we are going to sleep. If the lock was free meanwhile, this swap
            // takes it (as CONTENDED, since others may be asleep too).
            if state != CONTENDED && self.state.swap(CONTENDED, Ordering::Acquire) == UNLOCKED {
                return Acquire::Acquired;
            }

            match W::wait(&self.state, CONTENDED, deadline) {
                WaitResult::Woken => {}
                WaitResult::TimedOut => {
                    // One last look: the lock may have just been freed. (LOCKED is fine here
                    // for the same reason as above.)
                    return if self.try_acquire() {
                        Acquire::Acquired
                    } else {
                        Acquire::TimedOut
                    };
                }
                WaitResult::Interrupted => return Acquire::Interrupted,
            }

            state = self.spin();
        }
    }

    /// Polls while the lock is `LOCKED` (held, nobody asleep), at most [`SPIN_LIMIT`] times.
    /// Returns the last state seen.
    fn spin(&self) -> u32 {
        let mut spins = SPIN_LIMIT;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state != LOCKED || spins == 0 {
                return state;
            }
            spin_loop();
            spins -= 1;
        }
    }

    /// Releases the lock. Any thread may release it, as with Python locks.
    ///
    /// # Errors
    ///
    /// [`NotLocked`] if the lock was not locked; it is left unlocked.
    #[inline]
    pub fn release(&self) -> Result<(), NotLocked> {
        match self.state.swap(UNLOCKED, Ordering::Release) {
            UNLOCKED => Err(NotLocked),
            CONTENDED => {
                // Waking one waiter is enough: the woken thread takes the lock as CONTENDED
                // (see `acquire_contended`), so its own release will wake the next sleeper.
                // Waking more would only make them fight over the lock and go back to sleep.
                W::wake_one(&self.state);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Whether the lock is held right now (a racy snapshot, like Python's `locked()`).
    #[inline]
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != UNLOCKED
    }

    /// Forces the lock back to `UNLOCKED`, whatever its state (Python's `_at_fork_reinit`).
    ///
    /// Meant for the child after `fork()`, where no other thread, hence no waiter, exists. If it
    /// is called while other threads do use the lock, sleepers are woken (so none is stranded)
    /// and whoever held the lock no longer does.
    pub fn reinit(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            W::wake_all(&self.state);
        }
    }
}

impl<W: Wait> Default for RawLock<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Wait> fmt::Debug for RawLock<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wait::Fallback;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn state<W: Wait>(lock: &RawLock<W>) -> u32 {
        lock.state.load(Ordering::Relaxed)
    }

    fn basic<W: Wait>() {
        let lock = RawLock::<W>::new();
        assert!(!lock.is_locked());
        assert!(lock.try_acquire());
        assert_eq!(state(&lock), LOCKED);
        assert!(lock.is_locked());
        assert!(!lock.try_acquire());
        assert_eq!(lock.release(), Ok(()));
        assert_eq!(state(&lock), UNLOCKED);
        assert_eq!(lock.acquire_until(None), Acquire::Acquired);
        assert_eq!(lock.release(), Ok(()));
        lock.acquire();
        assert_eq!(lock.release(), Ok(()));
    }

    fn release_unlocked_is_error<W: Wait>() {
        let lock = RawLock::<W>::new();
        assert_eq!(lock.release(), Err(NotLocked));
        assert_eq!(state(&lock), UNLOCKED);
        assert_eq!(lock.release(), Err(NotLocked));
        assert!(lock.try_acquire());
        assert_eq!(lock.release(), Ok(()));
        assert_eq!(lock.release(), Err(NotLocked));
        assert_eq!(state(&lock), UNLOCKED);
    }

    fn zero_timeout_does_not_mark_contended<W: Wait>() {
        let lock = RawLock::<W>::new();
        lock.acquire();
        let r = lock.acquire_until(Some(Deadline::now()));
        assert_eq!(r, Acquire::TimedOut);
        assert_eq!(state(&lock), LOCKED);
        lock.release().unwrap();
    }

    fn timed_out_acquire<W: Wait>() {
        let lock = RawLock::<W>::new();
        lock.acquire();
        let timeout = Duration::from_millis(50);
        let start = Instant::now();
        let r = lock.acquire_until(Some(Deadline::after(timeout)));
        let elapsed = start.elapsed();
        assert_eq!(r, Acquire::TimedOut);
        assert!(elapsed >= timeout, "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert!(lock.is_locked());
        lock.release().unwrap();
        assert!(!lock.is_locked());
    }

    fn contended_then_released<W: Wait + 'static>() {
        let lock = Arc::new(RawLock::<W>::new());
        lock.acquire();
        let l2 = Arc::clone(&lock);
        let t = std::thread::spawn(move || {
            let r = l2.acquire_until(Some(Deadline::after(Duration::from_secs(10))));
            assert_eq!(r, Acquire::Acquired);
            l2.release().unwrap();
        });
        // Give the thread time to go to sleep, so the CONTENDED path is exercised.
        let start = Instant::now();
        while state(&lock) != CONTENDED && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(state(&lock), CONTENDED);
        lock.release().unwrap();
        t.join().unwrap();
        assert_eq!(state(&lock), UNLOCKED);
    }

    fn reinit_from_any_state<W: Wait>() {
        let lock = RawLock::<W>::new();
        lock.reinit();
        assert_eq!(state(&lock), UNLOCKED);
        lock.acquire();
        lock.reinit();
        assert_eq!(state(&lock), UNLOCKED);
        lock.state.store(CONTENDED, Ordering::Relaxed);
        lock.reinit();
        assert_eq!(state(&lock), UNLOCKED);
        assert!(lock.try_acquire());
    }

    macro_rules! lock_tests {
        ($modname:ident, $backend:ty) => {
            mod $modname {
                #[test]
                fn basic() {
                    super::basic::<$backend>();
                }
                #[test]
                fn release_unlocked_is_error() {
                    super::release_unlocked_is_error::<$backend>();
                }
                #[test]
                fn zero_timeout_does_not_mark_contended() {
                    super::zero_timeout_does_not_mark_contended::<$backend>();
                }
                #[test]
                fn timed_out_acquire() {
                    super::timed_out_acquire::<$backend>();
                }
                #[test]
                fn contended_then_released() {
                    super::contended_then_released::<$backend>();
                }
                #[test]
                fn reinit_from_any_state() {
                    super::reinit_from_any_state::<$backend>();
                }
            }
        };
    }

    #[cfg(target_os = "linux")]
    lock_tests!(futex, crate::wait::Futex);
    lock_tests!(fallback, crate::wait::Fallback);

    #[test]
    fn four_bytes() {
        assert_eq!(core::mem::size_of::<Lock>(), 4);
        assert_eq!(core::mem::size_of::<RawLock<Fallback>>(), 4);
        assert_eq!(core::mem::align_of::<Lock>(), 4);
    }

    #[test]
    fn const_and_static() {
        static LOCK: Lock = Lock::new();
        assert!(LOCK.try_acquire());
        LOCK.release().unwrap();
    }

    #[test]
    fn not_locked_message() {
        assert_eq!(NotLocked.to_string(), "release unlocked lock");
        let _: &dyn std::error::Error = &NotLocked;
    }

    #[test]
    fn is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Lock>();
        check::<RawLock<Fallback>>();
    }
}
