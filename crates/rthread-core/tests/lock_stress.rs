//! Multi-threaded tests of `RawLock` and `RawRLock`, run on both wait backends.
//!
//! Every blocking call has a deadline or a bounded join, so a lost wake-up fails a test instead
//! of hanging the run.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::{join_all_within, join_within, HANG};
use rthread_core::thread::current_ident;
use rthread_core::wait::Wait;
use rthread_core::{Acquire, Deadline, NotLocked, NotOwner, RawLock, RawRLock};

fn hang_deadline() -> Option<Deadline> {
    Some(Deadline::after(HANG))
}

/// A counter incremented with a plain load + store: only mutual exclusion (and the lock's
/// acquire/release ordering) keeps updates from being lost.
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn bump(&self) {
        let v = self.0.load(Ordering::Relaxed);
        self.0.store(v + 1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const THREADS: u64 = 4;
const ROUNDS: u64 = 20_000;

fn counter_stress<W: Wait + 'static>() {
    let lock = Arc::new(RawLock::<W>::new());
    let counter = Arc::new(Counter::default());
    let handles = (0..THREADS)
        .map(|_| {
            let (lock, counter) = (Arc::clone(&lock), Arc::clone(&counter));
            std::thread::spawn(move || {
                for _ in 0..ROUNDS {
                    assert_eq!(lock.acquire_until(hang_deadline()), Acquire::Acquired);
                    counter.bump();
                    lock.release().unwrap();
                }
            })
        })
        .collect();
    join_all_within(handles, HANG);
    assert_eq!(counter.get(), THREADS * ROUNDS);
    assert!(!lock.is_locked());
}

/// Mixed acquirers: untimed, tiny timeouts that often expire (and retry), and `try_acquire`
/// spinners. Timeouts under contention must neither break exclusion nor strand a sleeper.
fn mixed_acquirers<W: Wait + 'static>() {
    const PER_THREAD: u64 = 5_000;
    let lock = Arc::new(RawLock::<W>::new());
    let counter = Arc::new(Counter::default());
    let timeouts = Arc::new(AtomicU64::new(0));
    let handles = (0..THREADS)
        .map(|kind| {
            let (lock, counter, timeouts) = (
                Arc::clone(&lock),
                Arc::clone(&counter),
                Arc::clone(&timeouts),
            );
            std::thread::spawn(move || {
                let give_up = Instant::now() + HANG;
                for _ in 0..PER_THREAD {
                    match kind % 3 {
                        0 => assert_eq!(lock.acquire_until(hang_deadline()), Acquire::Acquired),
                        1 => loop {
                            let d = Deadline::after(Duration::from_micros(20));
                            match lock.acquire_until(Some(d)) {
                                Acquire::Acquired => break,
                                Acquire::TimedOut => {
                                    timeouts.fetch_add(1, Ordering::Relaxed);
                                    assert!(Instant::now() < give_up, "starved");
                                }
                                Acquire::Interrupted => unreachable!("no signals here"),
                            }
                        },
                        _ => {
                            while !lock.try_acquire() {
                                assert!(Instant::now() < give_up, "starved");
                                std::thread::yield_now();
                            }
                        }
                    }
                    counter.bump();
                    if counter.get() % 64 == 0 {
                        // Hold it a little longer now and then, so timeouts really happen.
                        std::thread::sleep(Duration::from_micros(50));
                    }
                    lock.release().unwrap();
                }
            })
        })
        .collect();
    join_all_within(handles, HANG);
    assert_eq!(counter.get(), THREADS * PER_THREAD);
    assert!(!lock.is_locked());
}

/// Two locks used as binary semaphores, released by the *other* thread: each round is a
/// forced handoff in both directions.
fn handoff_ping_pong<W: Wait + 'static>() {
    const ROUNDS: u64 = 2_000;
    let ping = Arc::new(RawLock::<W>::new());
    let pong = Arc::new(RawLock::<W>::new());
    ping.acquire();
    pong.acquire();
    let turn = Arc::new(AtomicU64::new(0));
    let t = {
        let (ping, pong, turn) = (Arc::clone(&ping), Arc::clone(&pong), Arc::clone(&turn));
        std::thread::spawn(move || {
            for i in 0..ROUNDS {
                assert_eq!(ping.acquire_until(hang_deadline()), Acquire::Acquired);
                assert_eq!(turn.load(Ordering::Relaxed), 2 * i + 1);
                turn.store(2 * i + 2, Ordering::Relaxed);
                pong.release().unwrap();
            }
        })
    };
    for i in 0..ROUNDS {
        assert_eq!(turn.load(Ordering::Relaxed), 2 * i);
        turn.store(2 * i + 1, Ordering::Relaxed);
        ping.release().unwrap();
        assert_eq!(pong.acquire_until(hang_deadline()), Acquire::Acquired);
    }
    join_within(t, HANG);
    assert_eq!(turn.load(Ordering::Relaxed), 2 * ROUNDS);
    // Each ended where it started: held, waiting for the other side's release.
    assert!(ping.is_locked());
    assert!(pong.is_locked());
}

/// A lock taken on one thread and released on another, with a sleeper waiting for it.
fn release_from_other_thread<W: Wait + 'static>() {
    let lock = Arc::new(RawLock::<W>::new());
    lock.acquire();
    let waiter = {
        let lock = Arc::clone(&lock);
        std::thread::spawn(move || {
            assert_eq!(lock.acquire_until(hang_deadline()), Acquire::Acquired);
        })
    };
    let releaser = {
        let lock = Arc::clone(&lock);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            lock.release().unwrap();
        })
    };
    join_within(releaser, HANG);
    join_within(waiter, HANG);
    // The waiter ended holding it; a third thread frees it; a second release is an error.
    assert!(lock.is_locked());
    let lock2 = Arc::clone(&lock);
    join_within(std::thread::spawn(move || lock2.release()), HANG).unwrap();
    assert_eq!(lock.release(), Err(NotLocked));
    assert!(!lock.is_locked());
}

/// Several sleepers, released one at a time: each release must wake exactly enough.
fn wake_chain<W: Wait + 'static>() {
    let lock = Arc::new(RawLock::<W>::new());
    lock.acquire();
    let counter = Arc::new(Counter::default());
    let handles = (0..6)
        .map(|_| {
            let (lock, counter) = (Arc::clone(&lock), Arc::clone(&counter));
            std::thread::spawn(move || {
                assert_eq!(lock.acquire_until(hang_deadline()), Acquire::Acquired);
                counter.bump();
                std::thread::sleep(Duration::from_millis(1));
                lock.release().unwrap();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(20));
    lock.release().unwrap();
    join_all_within(handles, HANG);
    assert_eq!(counter.get(), 6);
    assert!(!lock.is_locked());
}

/// Timed waiters that give up while the lock stays held: each waits at least its timeout, and
/// none returns early or late by much.
fn concurrent_timeouts<W: Wait + 'static>() {
    let lock = Arc::new(RawLock::<W>::new());
    lock.acquire();
    let handles = (0..4u64)
        .map(|i| {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || {
                let timeout = Duration::from_millis(20 + 10 * i);
                let start = Instant::now();
                assert_eq!(
                    lock.acquire_until(Some(Deadline::after(timeout))),
                    Acquire::TimedOut
                );
                let elapsed = start.elapsed();
                assert!(elapsed >= timeout, "{elapsed:?} < {timeout:?}");
                assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
            })
        })
        .collect();
    join_all_within(handles, HANG);
    assert!(lock.is_locked());
    lock.release().unwrap();
    // Stale CONTENDED state left by the timed-out waiters is harmless.
    assert!(lock.try_acquire());
    lock.release().unwrap();
}

fn rlock_counter_stress<W: Wait + 'static>() {
    const ROUNDS: u64 = 5_000;
    let lock = Arc::new(RawRLock::<W>::new());
    let counter = Arc::new(Counter::default());
    let handles = (0..THREADS)
        .map(|_| {
            let (lock, counter) = (Arc::clone(&lock), Arc::clone(&counter));
            std::thread::spawn(move || {
                let me = current_ident();
                for i in 0..ROUNDS {
                    assert_eq!(lock.acquire_until(me, hang_deadline()), Acquire::Acquired);
                    // Re-enter a varying number of times.
                    let depth = i % 3;
                    for _ in 0..depth {
                        assert!(lock.try_acquire(me));
                    }
                    assert_eq!(lock.recursion_count(me), depth + 1);
                    assert_eq!(lock.owner(), me);
                    counter.bump();
                    for _ in 0..=depth {
                        lock.release(me).unwrap();
                    }
                    assert_eq!(lock.recursion_count(me), 0);
                    assert_eq!(lock.release(me), Err(NotOwner));
                }
            })
        })
        .collect();
    join_all_within(handles, HANG);
    assert_eq!(counter.get(), THREADS * ROUNDS);
    assert_eq!((lock.owner(), lock.count()), (0, 0));
}

/// Ownership seen from other threads: they can neither release nor re-enter, and block until
/// the owner lets go.
fn rlock_ownership_across_threads<W: Wait + 'static>() {
    let lock = Arc::new(RawRLock::<W>::new());
    let me = current_ident();
    lock.acquire(me);
    lock.acquire(me);
    let released = Arc::new(AtomicBool::new(false));
    let other = {
        let (lock, released) = (Arc::clone(&lock), Arc::clone(&released));
        std::thread::spawn(move || {
            let them = current_ident();
            assert_ne!(them, me);
            assert_eq!(lock.release(them), Err(NotOwner));
            assert!(!lock.try_acquire(them));
            assert!(!lock.is_owned(them));
            assert_eq!(lock.recursion_count(them), 0);
            assert_eq!(lock.owner(), me);
            let timeout = Duration::from_millis(30);
            let start = Instant::now();
            assert_eq!(
                lock.acquire_until(them, Some(Deadline::after(timeout))),
                Acquire::TimedOut
            );
            assert!(start.elapsed() >= timeout);
            assert_eq!(lock.acquire_until(them, hang_deadline()), Acquire::Acquired);
            assert!(released.load(Ordering::Relaxed));
            assert_eq!(lock.recursion_count(them), 1);
            lock.release(them).unwrap();
        })
    };
    std::thread::sleep(Duration::from_millis(60));
    lock.release(me).unwrap();
    assert!(lock.is_owned(me));
    released.store(true, Ordering::Relaxed);
    lock.release(me).unwrap();
    join_within(other, HANG);
    assert_eq!((lock.owner(), lock.count()), (0, 0));
}

/// The `threading.Condition` pattern: save, let another thread use the lock, restore.
fn rlock_release_save_handoff<W: Wait + 'static>() {
    let lock = Arc::new(RawRLock::<W>::new());
    let me = current_ident();
    for _ in 0..3 {
        assert!(lock.try_acquire(me));
    }
    let saved = lock.release_save().unwrap();
    assert_eq!(saved, (3, me));
    assert_eq!(lock.release_save(), Err(NotOwner));
    let barrier = Arc::new(Barrier::new(2));
    let other = {
        let (lock, barrier) = (Arc::clone(&lock), Arc::clone(&barrier));
        std::thread::spawn(move || {
            let them = current_ident();
            assert!(lock.try_acquire(them));
            barrier.wait();
            std::thread::sleep(Duration::from_millis(20));
            lock.release(them).unwrap();
        })
    };
    barrier.wait();
    // Blocks until the other thread lets go, then restores our count and ownership.
    assert_eq!(
        lock.acquire_restore_until(saved.0, saved.1, hang_deadline()),
        Acquire::Acquired
    );
    join_within(other, HANG);
    assert_eq!(lock.recursion_count(me), 3);
    assert!(lock.is_owned(me));
    for _ in 0..3 {
        lock.release(me).unwrap();
    }
    assert_eq!(lock.release(me), Err(NotOwner));
}

/// `release_save` does not check the owner (as in CPython): another thread may call it.
fn rlock_release_save_by_non_owner<W: Wait + 'static>() {
    let lock = Arc::new(RawRLock::<W>::new());
    let me = current_ident();
    lock.acquire(me);
    let lock2 = Arc::clone(&lock);
    let saved = join_within(std::thread::spawn(move || lock2.release_save()), HANG);
    assert_eq!(saved, Ok((1, me)));
    assert_eq!((lock.owner(), lock.count()), (0, 0));
    assert_eq!(lock.release(me), Err(NotOwner));
}

macro_rules! backend_tests {
    ($modname:ident, $backend:ty) => {
        mod $modname {
            type W = $backend;

            #[test]
            fn counter_stress() {
                super::counter_stress::<W>();
            }
            #[test]
            fn mixed_acquirers() {
                super::mixed_acquirers::<W>();
            }
            #[test]
            fn handoff_ping_pong() {
                super::handoff_ping_pong::<W>();
            }
            #[test]
            fn release_from_other_thread() {
                super::release_from_other_thread::<W>();
            }
            #[test]
            fn wake_chain() {
                super::wake_chain::<W>();
            }
            #[test]
            fn concurrent_timeouts() {
                super::concurrent_timeouts::<W>();
            }
            #[test]
            fn rlock_counter_stress() {
                super::rlock_counter_stress::<W>();
            }
            #[test]
            fn rlock_ownership_across_threads() {
                super::rlock_ownership_across_threads::<W>();
            }
            #[test]
            fn rlock_release_save_handoff() {
                super::rlock_release_save_handoff::<W>();
            }
            #[test]
            fn rlock_release_save_by_non_owner() {
                super::rlock_release_save_by_non_owner::<W>();
            }
        }
    };
}

#[cfg(target_os = "linux")]
backend_tests!(futex, rthread_core::wait::Futex);
backend_tests!(fallback, rthread_core::wait::Fallback);
