//! Python-free thread primitives behind `rthread`, a Rust rewrite of CPython's `_thread`.
//!
//! - [`Lock`]: an eight-byte binary lock that any thread may release (Python's `_thread.lock`),
//!   whose contended path spins for a budget it learns before it sleeps.
//! - [`RLock`]: a reentrant lock with an owner and a recursion count (`_thread.RLock`).
//! - [`Event`]: a one-shot event ("this thread has finished") for thread handles.
//! - [`Deadline`]: absolute `CLOCK_MONOTONIC` deadlines, and CPython's [`TIMEOUT_MAX`].
//! - [`wait`]: the small wait/wake API the locks sleep on, with a futex backend (Linux) and a
//!   portable one.
//! - [`diag`]: who holds what and who waits for whom: wait-for cycles and deadlock reports.
//! - [`thread`]: thread idents, native ids, stack-size rules, OS thread names, and raw
//!   `pthread_create` with CPython's default stack size.
//!
//! Timed and blocking acquires return [`Acquire::Interrupted`] when a signal handler runs during
//! the wait, so that a caller embedded in Python can run the Python-level handlers and then
//! retry with the *same* deadline, as CPython does.
//!
//! # Example
//!
//! ```
//! use rthread_core::{thread, Acquire, Deadline, Lock, NotLocked, RLock};
//! use std::sync::{mpsc, Arc};
//! use std::time::Duration;
//!
//! // A Python-style lock: any thread may release it.
//! let lock = Arc::new(Lock::new());
//! lock.acquire();
//! let (done_tx, done_rx) = mpsc::channel();
//! let remote = Arc::clone(&lock);
//! thread::spawn(move || {
//!     remote.release().unwrap();
//!     done_tx.send(()).unwrap();
//! })?;
//! done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
//! assert!(!lock.is_locked());
//! // Misuse is an error value, and leaves the lock unlocked.
//! assert_eq!(lock.release(), Err(NotLocked));
//!
//! // Timed acquire against an absolute monotonic deadline.
//! assert!(lock.try_acquire());
//! let deadline = Deadline::after(Duration::from_millis(10));
//! assert_eq!(lock.acquire_until(Some(deadline)), Acquire::TimedOut);
//! assert!(deadline.has_passed());
//! lock.release().unwrap();
//!
//! // A reentrant lock, keyed by the caller's thread ident.
//! let rlock = RLock::new();
//! let me = thread::current_ident();
//! assert!(rlock.try_acquire(me));
//! assert_eq!(rlock.acquire_until(me, None), Acquire::Acquired);
//! assert_eq!(rlock.recursion_count(me), 2);
//! // `threading.Condition` releases fully while it waits, then restores.
//! let saved = rlock.release_save().unwrap();
//! assert_eq!(saved, (2, me));
//! assert_eq!(rlock.acquire_restore_until(saved.0, saved.1, None), Acquire::Acquired);
//! rlock.release(me).unwrap();
//! rlock.release(me).unwrap();
//! assert!(!rlock.is_owned(me));
//! # Ok::<(), std::io::Error>(())
//! ```

pub mod deadline;
// The lock-graph diagnostics use real threads and clocks; they are not part of the loom model.
#[cfg(not(loom))]
pub mod diag;
pub mod event;
pub mod lock;
pub mod rlock;
mod sync;
pub mod thread;
pub mod wait;

/// The modelled clock of a loom run (`RUSTFLAGS="--cfg loom"`, `scripts/loom.sh`).
#[cfg(loom)]
pub use sync::clock as loom_clock;

pub use deadline::{Deadline, TIMEOUT_MAX, TIMEOUT_MAX_NANOS};
pub use event::{Event, RawEvent};
pub use lock::{Acquire, Lock, NotLocked, RawLock, SpinPolicy};
pub use rlock::{NotOwner, RLock, RawRLock};
