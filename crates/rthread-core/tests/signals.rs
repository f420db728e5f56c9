//! Signals during a wait (Linux): the futex backend reports `Interrupted`, and retrying with the
//! same deadline keeps the original deadline, as CPython's lock acquire does.
//!
//! A no-op SIGUSR1 handler is installed *without* `SA_RESTART` (as CPython installs its
//! handlers), and the waiting thread is sent SIGUSR1 with `pthread_kill`. This file is its own
//! test binary, so the handler affects no other tests.

#![cfg(target_os = "linux")]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use common::{join_within, HANG};
use rthread_core::thread::current_ident;
use rthread_core::wait::{Fallback, Futex, Wait, WaitResult};
use rthread_core::{Acquire, Deadline, RawLock, RawRLock};

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Async-signal-safe: one atomic add.
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn install_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: an all-zero `sigaction` is a valid starting value (no flags, empty mask).
        let mut sa: libc::sigaction = unsafe { core::mem::zeroed() };
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        sa.sa_flags = 0; // deliberately no SA_RESTART
                         // SAFETY:
                         // - `sa.sa_mask` is a valid, writable `sigset_t`.
                         // - `sa` is fully initialised, and the handler only does an atomic add, which is
                         //   async-signal-safe.
        let rc = unsafe {
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(libc::SIGUSR1, &sa, core::ptr::null_mut())
        };
        assert_eq!(rc, 0);
    });
}

/// Sends SIGUSR1 to `target` every `every` until `done` is set or `limit` has passed.
///
/// Must be called by the thread that will join `target`, before joining it: the target's id
/// then stays valid for every `pthread_kill`, even after it has finished.
fn pester(target: u64, done: &AtomicBool, every: Duration, limit: Duration) -> usize {
    let start = Instant::now();
    let mut sent = 0;
    while !done.load(Ordering::Acquire) && start.elapsed() < limit {
        // SAFETY: `target` is the `pthread_t` of a thread that has not been joined yet (see
        // above), so it identifies a live or not-yet-reaped thread.
        let rc = unsafe { libc::pthread_kill(target as libc::pthread_t, libc::SIGUSR1) };
        assert_eq!(rc, 0);
        sent += 1;
        std::thread::sleep(every);
    }
    sent
}

#[test]
fn futex_wait_reports_interrupted() {
    install_handler();
    let word = Arc::new(AtomicU32::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let (word, done) = (Arc::clone(&word), Arc::clone(&done));
        std::thread::spawn(move || {
            tx.send(current_ident()).unwrap();
            let deadline = Deadline::after(HANG);
            let r = Futex::wait(&word, 0, Some(deadline));
            done.store(true, Ordering::Release);
            r
        })
    };
    let target = rx.recv_timeout(HANG).unwrap();
    pester(target, &done, Duration::from_millis(10), HANG);
    // A signal that lands before the thread is asleep just runs the handler; the next one
    // interrupts the sleep. Either way the wait ends as Interrupted, long before its deadline.
    assert_eq!(join_within(waiter, HANG), WaitResult::Interrupted);
    assert!(HANDLED.load(Ordering::Relaxed) > 0);
}

/// Acquires in a loop with one fixed deadline while being interrupted every 10 ms, for longer
/// than the deadline. Returns (final result, number of `Interrupted`, time taken).
fn acquire_under_signals(
    acquire: impl Fn(Option<Deadline>) -> Acquire + Send + 'static,
    timeout: Duration,
) -> (Acquire, usize, Duration) {
    install_handler();
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            tx.send(current_ident()).unwrap();
            let start = Instant::now();
            let deadline = Some(Deadline::after(timeout));
            let mut interrupted = 0;
            let r = loop {
                match acquire(deadline) {
                    Acquire::Interrupted => interrupted += 1,
                    other => break other,
                }
            };
            done.store(true, Ordering::Release);
            (r, interrupted, start.elapsed())
        })
    };
    let target = rx.recv_timeout(HANG).unwrap();
    // Keep signalling well past the deadline: a retry that restarted its timeout on every
    // interruption would never finish while this goes on.
    pester(
        target,
        &done,
        Duration::from_millis(10),
        Duration::from_secs(3),
    );
    join_within(waiter, HANG)
}

#[test]
fn lock_retry_keeps_original_deadline() {
    let lock = Arc::new(RawLock::<Futex>::new());
    lock.acquire();
    let timeout = Duration::from_millis(300);
    let l2 = Arc::clone(&lock);
    let (r, interrupted, elapsed) = acquire_under_signals(move |d| l2.acquire_until(d), timeout);
    assert_eq!(r, Acquire::TimedOut);
    assert!(interrupted > 0, "no wait was interrupted");
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "{elapsed:?}: deadline was extended"
    );
    lock.release().unwrap();
}

#[test]
fn rlock_retry_keeps_original_deadline() {
    let lock = Arc::new(RawRLock::<Futex>::new());
    lock.acquire(current_ident());
    let timeout = Duration::from_millis(300);
    let l2 = Arc::clone(&lock);
    let (r, interrupted, elapsed) =
        acquire_under_signals(move |d| l2.acquire_until(current_ident(), d), timeout);
    assert_eq!(r, Acquire::TimedOut);
    assert!(interrupted > 0, "no wait was interrupted");
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(2),
        "{elapsed:?}: deadline was extended"
    );
    lock.release(current_ident()).unwrap();
}

#[test]
fn interrupted_then_acquired_when_released() {
    let lock = Arc::new(RawLock::<Futex>::new());
    lock.acquire();
    let releaser = {
        let lock = Arc::clone(&lock);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            lock.release().unwrap();
        })
    };
    let l2 = Arc::clone(&lock);
    let (r, interrupted, elapsed) =
        acquire_under_signals(move |d| l2.acquire_until(d), Duration::from_secs(10));
    join_within(releaser, HANG);
    assert_eq!(r, Acquire::Acquired);
    assert!(interrupted > 0, "no wait was interrupted");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    lock.release().unwrap();
}

#[test]
fn untimed_acquire_returns_interrupted_not_timed_out() {
    let lock = Arc::new(RawLock::<Futex>::new());
    lock.acquire();
    install_handler();
    let done = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let waiter = {
        let (lock, done) = (Arc::clone(&lock), Arc::clone(&done));
        std::thread::spawn(move || {
            tx.send(current_ident()).unwrap();
            let r = lock.acquire_until(None);
            done.store(true, Ordering::Release);
            r
        })
    };
    let target = rx.recv_timeout(HANG).unwrap();
    pester(target, &done, Duration::from_millis(10), HANG);
    assert_eq!(join_within(waiter, HANG), Acquire::Interrupted);
    assert!(lock.is_locked());
    lock.release().unwrap();
}

#[test]
fn fallback_never_reports_interrupted() {
    let lock = Arc::new(RawLock::<Fallback>::new());
    lock.acquire();
    let timeout = Duration::from_millis(200);
    let l2 = Arc::clone(&lock);
    let (r, interrupted, elapsed) = acquire_under_signals(move |d| l2.acquire_until(d), timeout);
    assert_eq!(r, Acquire::TimedOut);
    assert_eq!(interrupted, 0);
    assert!(elapsed >= timeout, "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    lock.release().unwrap();
}
