//! Waiting on and waking one `AtomicU32`: the only OS-facing part of the locks.
//!
//! The [`Wait`] trait is the whole interface between lock policy ([`crate::lock`],
//! [`crate::rlock`]) and the operating system, in the spirit of parking_lot's split between
//! `lock_api` and `parking_lot_core`. Two backends implement it:
//!
//! - [`Futex`] (Linux): the `futex(2)` system call, one word, no allocation, no table.
//! - [`Fallback`] (everywhere): a fixed table of `Mutex` + `Condvar` buckets hashed by the word's
//!   address. It is compiled and tested on Linux as well, so it stays honest.
//! - `Loom` (only with `RUSTFLAGS="--cfg loom"`, where it is the only one): a model of the
//!   futex for the `loom` model checker (`loom_model.rs`, `scripts/loom.sh`).
//!
//! [`DefaultWait`] is the backend the public lock types use.
//!
//! # Notes about memory ordering
//!
//! A backend's "is `*word` still `expected`?" check is only a guard against sleeping through a
//! wake-up; it gives no ordering guarantees to the caller. Callers publish their state with their
//! own atomic operations (a `Release` store before [`Wait::wake_one`], an `Acquire` operation after
//! [`Wait::wait`] returns) and must re-check the word after every return, because
//! [`WaitResult::Woken`] may also mean "the value had already changed" or "spurious".
//!
//! What a backend must guarantee is the futex contract: if a waker changes the word and then
//! calls `wake_*`, a waiter that has not yet checked the word either sees the new value (and
//! returns at once) or is already asleep and gets woken. No wake-up may be lost in between.

use crate::deadline::Deadline;
// `core`'s `AtomicU32`, or loom's under `cfg(loom)`, where the only backend is [`Loom`].
use crate::sync::atomic::AtomicU32;

#[cfg(not(loom))]
mod fallback;
#[cfg(all(target_os = "linux", not(loom)))]
mod futex;
#[cfg(loom)]
mod loom_model;

#[cfg(not(loom))]
pub use fallback::Fallback;
#[cfg(all(target_os = "linux", not(loom)))]
pub use futex::Futex;
#[cfg(loom)]
pub use loom_model::{Loom, WaitLog};

/// The backend used by [`crate::Lock`] and [`crate::RLock`]: [`Futex`] on Linux, [`Fallback`]
/// elsewhere.
#[cfg(all(target_os = "linux", not(loom)))]
pub type DefaultWait = Futex;
/// The backend used by [`crate::Lock`] and [`crate::RLock`]: [`Futex`] on Linux, [`Fallback`]
/// elsewhere.
#[cfg(not(any(target_os = "linux", loom)))]
pub type DefaultWait = Fallback;
/// Under `cfg(loom)`, the model of a futex that loom can explore.
#[cfg(loom)]
pub type DefaultWait = Loom;

/// Why [`Wait::wait`] returned.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitResult {
    /// Woken by `wake_*`, or the word was not `expected` to begin with, or a spurious wake-up.
    /// The caller re-checks the word.
    Woken,
    /// The deadline passed.
    TimedOut,
    /// A signal handler ran during the wait (`EINTR`). Only backends that can observe signals
    /// return this; the caller may run its own signal machinery and wait again with the same
    /// deadline.
    Interrupted,
}

/// Blocking wait and wake-up on one `AtomicU32`, implemented by zero-sized backend types.
///
/// This trait is safe to implement: a wrong implementation can make a lock hang or spin, but
/// the locks never rely on it for memory safety.
pub trait Wait {
    /// Blocks while `*word == expected`, until woken, the deadline passes (`None` = forever), or
    /// a signal handler interrupts the wait (`EINTR` -> [`WaitResult::Interrupted`]; backends that
    /// cannot observe signals never return `Interrupted`).
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult;

    /// Wakes at least one thread blocked in [`Wait::wait`] on `word`, if there is any.
    ///
    /// Backends may wake more than one (the [`Fallback`] does); waiters treat extra wake-ups as
    /// spurious.
    fn wake_one(word: &AtomicU32);

    /// Wakes every thread blocked in [`Wait::wait`] on `word`.
    fn wake_all(word: &AtomicU32);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use core::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn value_mismatch_returns_at_once<W: Wait>() {
        let word = AtomicU32::new(1);
        let start = Instant::now();
        let r = W::wait(&word, 0, Some(Deadline::after(Duration::from_secs(5))));
        assert_eq!(r, WaitResult::Woken);
        assert!(start.elapsed() < Duration::from_secs(2));
    }

    fn times_out<W: Wait>() {
        let word = AtomicU32::new(0);
        let timeout = Duration::from_millis(30);
        let deadline = Deadline::after(timeout);
        let start = Instant::now();
        loop {
            match W::wait(&word, 0, Some(deadline)) {
                WaitResult::TimedOut => break,
                WaitResult::Woken | WaitResult::Interrupted => assert!(!deadline.has_passed()),
            }
        }
        assert!(start.elapsed() >= timeout);
        assert!(start.elapsed() < Duration::from_secs(2));
        assert!(deadline.has_passed());
    }

    fn passed_deadline_returns_at_once<W: Wait>() {
        let word = AtomicU32::new(0);
        let r = W::wait(&word, 0, Some(Deadline::from_nanos(1)));
        assert_eq!(r, WaitResult::TimedOut);
    }

    fn wake_one_wakes<W: Wait>() {
        let word = Arc::new(AtomicU32::new(0));
        let w2 = Arc::clone(&word);
        let t = std::thread::spawn(move || {
            let deadline = Deadline::after(Duration::from_secs(10));
            while w2.load(Ordering::Acquire) == 0 {
                assert_ne!(W::wait(&w2, 0, Some(deadline)), WaitResult::TimedOut);
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        word.store(1, Ordering::Release);
        W::wake_one(&word);
        t.join().unwrap();
    }

    fn wake_all_wakes_everyone<W: Wait>() {
        let word = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let w = Arc::clone(&word);
                std::thread::spawn(move || {
                    let deadline = Deadline::after(Duration::from_secs(10));
                    while w.load(Ordering::Acquire) == 0 {
                        assert_ne!(W::wait(&w, 0, Some(deadline)), WaitResult::TimedOut);
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(10));
        word.store(1, Ordering::Release);
        W::wake_all(&word);
        for t in threads {
            t.join().unwrap();
        }
    }

    fn wake_without_waiters_is_harmless<W: Wait>() {
        let word = AtomicU32::new(0);
        W::wake_one(&word);
        W::wake_all(&word);
    }

    macro_rules! backend_tests {
        ($modname:ident, $backend:ty) => {
            mod $modname {
                #[test]
                fn value_mismatch_returns_at_once() {
                    super::value_mismatch_returns_at_once::<$backend>();
                }
                #[test]
                fn times_out() {
                    super::times_out::<$backend>();
                }
                #[test]
                fn passed_deadline_returns_at_once() {
                    super::passed_deadline_returns_at_once::<$backend>();
                }
                #[test]
                fn wake_one_wakes() {
                    super::wake_one_wakes::<$backend>();
                }
                #[test]
                fn wake_all_wakes_everyone() {
                    super::wake_all_wakes_everyone::<$backend>();
                }
                #[test]
                fn wake_without_waiters_is_harmless() {
                    super::wake_without_waiters_is_harmless::<$backend>();
                }
            }
        };
    }

    #[cfg(target_os = "linux")]
    backend_tests!(futex, crate::wait::Futex);
    backend_tests!(fallback, crate::wait::Fallback);

    #[test]
    fn backends_are_zero_sized() {
        assert_eq!(core::mem::size_of::<Fallback>(), 0);
        #[cfg(target_os = "linux")]
        assert_eq!(core::mem::size_of::<Futex>(), 0);
    }
}
