//! A one-shot event: starts unset, is set once, and every waiter wakes.
//!
//! It backs thread handles ("has this thread finished?"): the finishing thread
//! sets it without needing any lock, and joiners wait with a deadline and the
//! same [`Acquire::Interrupted`] contract as the locks.
//!
//! State table for the one `AtomicU32`:
//!
//! | state     | meaning                                        |
//! |-----------|------------------------------------------------|
//! | `UNSET`   | not set, nobody is (known to be) waiting        |
//! | `WAITING` | not set, at least one waiter may be asleep      |
//! | `SET`     | set; final (until [`RawEvent::reset`])          |
//!
//! # Notes about memory ordering
//!
//! [`RawEvent::set`] swaps in `SET` with `Release`, and every check that sees
//! `SET` uses `Acquire`, so whatever the setting thread did before `set` is
//! visible to a waiter that returns `Acquired`. The `UNSET -> WAITING`
//! transition only decides whether `set` must call into the kernel; it orders
//! nothing and is `Relaxed`.
use core::marker::PhantomData;

use crate::deadline::Deadline;
use crate::lock::Acquire;
// `core`'s atomics, or loom's under `cfg(loom)`.
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::const_fn_unless_loom;
use crate::wait::{DefaultWait, Wait, WaitResult};

const UNSET: u32 = 0; // not set, no sleeper registered
const WAITING: u32 = 1; // not set, a sleeper may be in the kernel
const SET: u32 = 2; // set: waiters return at once

/// A one-shot event over any [`Wait`] backend.
pub struct RawEvent<W: Wait = DefaultWait> {
    state: AtomicU32,
    _wait: PhantomData<fn() -> W>,
}

/// The event over the platform's default backend.
pub type Event = RawEvent<DefaultWait>;

impl<W: Wait> Default for RawEvent<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Wait> core::fmt::Debug for RawEvent<W> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

impl<W: Wait> RawEvent<W> {
    const_fn_unless_loom! {
        /// A new, unset event.
        pub const fn new() -> Self {
            RawEvent {
                state: AtomicU32::new(UNSET),
                _wait: PhantomData,
            }
        }
    }

    const_fn_unless_loom! {
        /// A new event that is already set.
        pub const fn new_set() -> Self {
            RawEvent {
                state: AtomicU32::new(SET),
                _wait: PhantomData,
            }
        }
    }

    /// Whether the event has been set.
    #[inline]
    pub fn is_set(&self) -> bool {
        self.state.load(Ordering::Acquire) == SET
    }

    /// The word this event's waiters sleep on (see [`crate::RawLock::wake_word`]). Waking it is
    /// harmless; storing to it breaks the event.
    #[inline]
    #[must_use]
    pub fn wake_word(&self) -> &AtomicU32 {
        &self.state
    }

    /// Sets the event and wakes every waiter. Idempotent.
    pub fn set(&self) {
        if self.state.swap(SET, Ordering::Release) == WAITING {
            W::wake_all(&self.state);
        }
    }

    /// Back to unset, for after `fork()` (no waiter can exist in the child).
    pub fn reset(&self) {
        self.state.store(UNSET, Ordering::Relaxed);
    }

    /// Waits until the event is set (`Acquired`), the deadline passes
    /// (`TimedOut`; never with `None`), or a signal handler interrupts the wait
    /// (`Interrupted`; call again with the same deadline).
    pub fn wait_until(&self, deadline: Option<Deadline>) -> Acquire {
        loop {
            let state = self.state.load(Ordering::Acquire);
            if state == SET {
                return Acquire::Acquired;
            }
            if state == UNSET
                && self
                    .state
                    .compare_exchange(UNSET, WAITING, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue; // set, or another waiter registered: look again
            }
            match W::wait(&self.state, WAITING, deadline) {
                WaitResult::Woken => {}
                WaitResult::TimedOut => {
                    return if self.is_set() {
                        Acquire::Acquired
                    } else {
                        Acquire::TimedOut
                    }
                }
                WaitResult::Interrupted => return Acquire::Interrupted,
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::wait::Fallback;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn set_wakes_all<W: Wait + 'static>() {
        let event = Arc::new(RawEvent::<W>::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let event = Arc::clone(&event);
                std::thread::spawn(move || event.wait_until(None))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!event.is_set());
        event.set();
        for waiter in waiters {
            assert_eq!(waiter.join().unwrap(), Acquire::Acquired);
        }
        assert!(event.is_set());
        event.set(); // idempotent
        assert_eq!(event.wait_until(Some(Deadline::now())), Acquire::Acquired);
    }

    fn times_out<W: Wait>() {
        let event = RawEvent::<W>::new();
        let start = Instant::now();
        let deadline = Deadline::after(Duration::from_millis(30));
        assert_eq!(event.wait_until(Some(deadline)), Acquire::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(30));
        assert_eq!(event.wait_until(Some(Deadline::now())), Acquire::TimedOut);
        event.reset();
        assert!(!event.is_set());
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn futex_set_wakes_all() {
        set_wakes_all::<crate::wait::Futex>();
    }

    #[test]
    fn fallback_set_wakes_all() {
        set_wakes_all::<Fallback>();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn futex_times_out() {
        times_out::<crate::wait::Futex>();
    }

    #[test]
    fn fallback_times_out() {
        times_out::<Fallback>();
    }

    #[test]
    fn new_set_is_set() {
        assert!(Event::new_set().is_set());
        assert_eq!(Event::new_set().wait_until(None), Acquire::Acquired);
    }
}
