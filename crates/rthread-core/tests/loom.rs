//! Model checks of the core lock, the reentrant lock and the one-shot event under `loom`.
//!
//! Built only with `RUSTFLAGS="--cfg loom"` (`scripts/loom.sh short|long`). Then the locks' atomics,
//! spins and yields are loom's, their clock is a modelled one (`rthread_core::loom_clock`: every
//! read moves the reading thread's time forward, so spins end and deadlines pass), and they sleep
//! in `wait::Loom`, a model of `futex(2)` in which a lost wake-up is a deadlock and a timed sleep
//! may time out at any moment. Loom runs each model below in every interleaving of its threads
//! up to a preemption bound (`LOOM_MAX_PREEMPTIONS`, default [`DEFAULT_PREEMPTIONS`]), with
//! atomics that may also read stale values as the C++ memory model allows, and checks:
//!
//! - no double grant: a non-atomic counter (`loom::cell::UnsafeCell`, which reports any access not
//!   ordered by happens-before) and a holder count guard every critical section;
//! - no lost wake-up: waiters sleep without a deadline, so a missed wake is a loom deadlock;
//! - no release of an unlocked lock accepted, `try_acquire` semantics, timed acquires that either
//!   time out or acquire (never both, never hang), release by another thread, `RLock` owner and
//!   count rules, the event's set/wait;
//! - and that every path of the slow path is reached (spin then take, spin then sleep, timing out
//!   in the spin, asleep, or on the last look after the sleep, gated watches, interruptions).
//!
//! The `mutation_*` models are deliberately broken variants (in this file) that loom must catch.
//!
//! Each model prints how many interleavings loom explored (`--nocapture`).
#![cfg(loom)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};
use std::sync::{Arc as StdArc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use rthread_core::lock::loom_paths;
use rthread_core::loom_clock;
use rthread_core::wait::{Loom, Wait, WaitLog, WaitResult};
use rthread_core::{
    Acquire, Deadline, NotLocked, NotOwner, RawEvent, RawLock, RawRLock, SpinPolicy,
};

type Lock = RawLock<Loom>;
type RLock = RawRLock<Loom>;
type Event = RawEvent<Loom>;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 2;

/// A new lock's first spin budget (`SPIN_INITIAL_NS` in lock.rs).
const FIRST_BUDGET_NS: u64 = 20_000;

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

fn builder() -> loom::model::Builder {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    // The spins make long executions; the default (1000) is for small models.
    b.max_branches = b.max_branches.max(20_000);
    // Never cut a model short: every interleaving within the bound is explored.
    assert!(b.max_permutations.is_none() && b.max_duration.is_none());
    b
}

/// Runs `f` in every interleaving up to the bound and prints how many there were.
fn model<F>(name: &str, f: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    model_at_least(name, 0, f)
}

/// [`model`] with a preemption bound of at least `min_bound`, for models whose interesting
/// interleavings need more preemptions than the short tier's bound.
fn model_at_least<F>(name: &str, min_bound: usize, f: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    let mut b = builder();
    b.preemption_bound = b.preemption_bound.map(|p| p.max(min_bound));
    let count = StdArc::new(StdAtomicUsize::new(0));
    let counter = StdArc::clone(&count);
    let start = Instant::now();
    b.check(move || {
        counter.fetch_add(1, StdOrdering::Relaxed);
        f();
    });
    let n = count.load(StdOrdering::Relaxed);
    println!(
        "loom model {name}: {n} interleavings explored (preemption bound {}) in {:.2} s",
        b.preemption_bound.unwrap_or(0),
        start.elapsed().as_secs_f64()
    );
    n
}

/// The environment variable that makes a `mutation_*` test run its broken model itself (in a
/// child process) instead of checking a child that does.
const MUTANT_ENV: &str = "RTHREAD_LOOM_MUTANT";

/// Checks that loom catches a broken model.
///
/// Loom reports a failure (a deadlock, a causality violation, a failed assertion) by panicking,
/// and the unwinding that follows drops loom objects outside a running execution, which panics
/// again and aborts the process; `catch_unwind` cannot contain that. So the test runs itself in a
/// child process with [`MUTANT_ENV`] set, where the model runs, and asserts that the child
/// failed, with one of `expected` in its output, and prints after how many interleavings.
fn mutation<F>(test: &str, expected: &[&str], f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    if std::env::var(MUTANT_ENV).as_deref() == Ok(test) {
        let b = builder();
        let count = StdArc::new(StdAtomicUsize::new(0));
        let counter = StdArc::clone(&count);
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            static FIRST: StdAtomicUsize = StdAtomicUsize::new(0);
            if FIRST.fetch_add(1, StdOrdering::Relaxed) == 0 {
                eprintln!(
                    "MUTANT CAUGHT after {} interleavings",
                    count.load(StdOrdering::Relaxed)
                );
            }
            default_hook(info);
        }));
        b.check(move || {
            counter.fetch_add(1, StdOrdering::Relaxed);
            f();
        });
        // Reached only if loom explored every interleaving and found nothing.
        println!("MUTANT SURVIVED");
        return;
    }
    let start = Instant::now();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads", "1"])
        .env(MUTANT_ENV, test)
        .output()
        .expect("run the mutant in a child process");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success() && !text.contains("MUTANT SURVIVED"),
        "loom did not catch mutant {test}:\n{text}"
    );
    let caught = text
        .find("MUTANT CAUGHT")
        .and_then(|i| text[i..].lines().next())
        .unwrap_or_else(|| panic!("mutant {test} failed without a loom report:\n{text}"));
    let reason = expected
        .iter()
        .find(|e| text.contains(*e))
        .unwrap_or_else(|| panic!("mutant {test}: none of {expected:?} in:\n{text}"));
    println!(
        "loom mutation {test}: {} (\"{reason}\"), preemption bound {}, {:.2} s",
        caught.to_lowercase(),
        builder().preemption_bound.unwrap_or(0),
        start.elapsed().as_secs_f64()
    );
}

/// Which paths the executions of a model took, collected across all its interleavings.
#[derive(Clone, Default)]
struct Paths(StdArc<StdMutex<BTreeSet<&'static str>>>);

impl Paths {
    fn saw(&self, path: &'static str) {
        self.0.lock().unwrap().insert(path);
    }

    fn assert_saw(&self, model: &str, expected: &[&'static str]) {
        let seen = self.0.lock().unwrap();
        println!("  {model}: paths seen: {seen:?}");
        for path in expected {
            assert!(seen.contains(path), "{model}: path {path:?} never taken");
        }
    }
}

/// A critical section's data: a plain counter that loom checks for unordered access, and a
/// count of threads inside, which must never reach two.
struct Guarded {
    value: UnsafeCell<u32>,
    inside: AtomicUsize,
}

impl Guarded {
    fn new() -> Self {
        Guarded {
            value: UnsafeCell::new(0),
            inside: AtomicUsize::new(0),
        }
    }

    /// The critical section: only ever run while holding the lock.
    fn enter(&self) {
        let before = self.inside.fetch_add(1, Ordering::Relaxed);
        assert_eq!(before, 0, "two holders at once");
        self.value.with_mut(|v| {
            // SAFETY: the lock under test serializes these accesses; loom reports any two that
            // are not ordered by happens-before (and would fail the model) instead of racing.
            unsafe { *v += 1 }
        });
        self.inside.fetch_sub(1, Ordering::Relaxed);
    }

    /// The counter, read once every thread is joined.
    fn value(&self) -> u32 {
        self.value.with(|v| {
            // SAFETY: read after joining every writer; loom checks the ordering.
            unsafe { *v }
        })
    }
}

/// Takes the lock (retrying after interruptions), with a policy.
fn acquire(lock: &Lock, policy: SpinPolicy) {
    while lock.acquire_until_with(None, policy) != Acquire::Acquired {}
}

/// How a waiter's acquire went, from its result, its wait log and its clock.
fn classify(result: Acquire, log: WaitLog, read_clock: bool) -> &'static str {
    match result {
        Acquire::Acquired if log.slept == 0 && !read_clock => "acquired on the fast path",
        Acquire::Acquired if log.slept == 0 => "acquired while spinning",
        Acquire::Acquired if log.timed_out > 0 => "timed out asleep, took it on the last look",
        // Another waiter held the spinner's place (or the policy is `Brief`): straight to sleep.
        Acquire::Acquired if !read_clock => "acquired after a wake-up, without spinning",
        Acquire::Acquired => "acquired after a wake-up",
        Acquire::TimedOut if log.slept == 0 && log.timed_out == 0 => "timed out before sleeping",
        Acquire::TimedOut => "timed out asleep",
        Acquire::Interrupted => "interrupted",
    }
}

loom::thread_local! {
    /// How often this thread's `ready` hint was asked.
    static READY_ASKED: std::cell::Cell<u32> = std::cell::Cell::new(0);
}

/// A `ready` hint that never says yes (and counts the questions): the gated waiter must take
/// the free lock anyway once its watch ends.
fn ready_never() -> bool {
    READY_ASKED.with(|n| n.set(n.get() + 1));
    false
}

loom::lazy_static! {
    /// The `ready` hint of the gated model, set by one of its threads.
    static ref READY: AtomicBool = AtomicBool::new(false);
}

fn ready_flag() -> bool {
    READY.load(Ordering::Relaxed)
}

fn policy_name(policy: SpinPolicy) -> &'static str {
    match policy {
        SpinPolicy::Adaptive => "adaptive",
        SpinPolicy::Brief => "brief",
        SpinPolicy::Gated(_) => "gated",
    }
}

// ---------------------------------------------------------------------------------------------
// Lock
// ---------------------------------------------------------------------------------------------

/// Two threads take the lock (each with a policy) around a critical section: never both inside,
/// no update lost, the lock free at the end, and nobody stranded asleep (which loom would report
/// as a deadlock).
fn exclusion(policies: [SpinPolicy; 2]) -> usize {
    let name = format!(
        "lock_exclusion_{}_{}",
        policy_name(policies[0]),
        policy_name(policies[1])
    );
    model(&name, move || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        let threads: Vec<_> = policies
            .iter()
            .map(|&policy| {
                let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
                thread::spawn(move || {
                    acquire(&lock, policy);
                    data.enter();
                    lock.release().unwrap();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(data.value(), 2);
        assert!(!lock.is_locked());
        assert_eq!(lock.release(), Err(NotLocked));
    })
}

#[test]
fn lock_exclusion_two_threads() {
    exclusion([SpinPolicy::Adaptive, SpinPolicy::Adaptive]);
    exclusion([SpinPolicy::Adaptive, SpinPolicy::Brief]);
    exclusion([SpinPolicy::Brief, SpinPolicy::Gated(ready_never)]);
}

/// Three threads, one per policy, the main thread being one of them.
#[test]
fn lock_exclusion_three_threads() {
    model("lock_exclusion_three_threads", || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        let threads: Vec<_> = [SpinPolicy::Brief, SpinPolicy::Gated(ready_never)]
            .into_iter()
            .map(|policy| {
                let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
                thread::spawn(move || {
                    acquire(&lock, policy);
                    data.enter();
                    lock.release().unwrap();
                })
            })
            .collect();
        acquire(&lock, SpinPolicy::Adaptive);
        data.enter();
        lock.release().unwrap();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(data.value(), 3);
        assert!(!lock.is_locked());
    });
}

/// The main thread holds the lock while a waiter arrives, and releases it at every possible
/// point of the waiter's spin and sleep: the waiter always gets the lock (a lost wake-up would
/// leave it asleep forever: a loom deadlock), and every path to it is taken in some execution.
///
/// A gated waiter also reports whether it watched a free lock (its hint was asked) while
/// spinning or after a wake-up.
fn one_waiter(policy: SpinPolicy, expected: &[&'static str]) -> usize {
    let paths = Paths::default();
    let seen = paths.clone();
    let name = format!("lock_no_lost_wakeup_{}", policy_name(policy));
    let n = model(&name, move || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let waiter = {
            let (lock, data, seen) = (Arc::clone(&lock), Arc::clone(&data), seen.clone());
            thread::spawn(move || {
                let t0 = loom_clock::peek_nanos();
                let r = lock.acquire_until_with(None, policy);
                assert_eq!(r, Acquire::Acquired, "no deadline, no signal");
                let log = Loom::thread_log();
                seen.saw(classify(r, log, loom_clock::peek_nanos() != t0));
                if READY_ASKED.with(std::cell::Cell::get) > 0 {
                    seen.saw(if log.slept == 0 {
                        "gate watched while spinning"
                    } else {
                        "gate watched after a wake-up"
                    });
                }
                data.enter();
                lock.release().unwrap();
            })
        };
        data.enter();
        lock.release().unwrap();
        waiter.join().unwrap();
        assert_eq!(data.value(), 2);
        assert!(!lock.is_locked());
    });
    paths.assert_saw(&name, expected);
    n
}

#[test]
fn lock_no_lost_wakeup_one_waiter() {
    one_waiter(
        SpinPolicy::Adaptive,
        &["acquired while spinning", "acquired after a wake-up"],
    );
    // Brief polls without reading the clock, so its spin looks like the fast path here.
    one_waiter(
        SpinPolicy::Brief,
        &[
            "acquired on the fast path",
            "acquired after a wake-up, without spinning",
        ],
    );
    one_waiter(
        SpinPolicy::Gated(ready_never),
        &[
            "acquired while spinning",
            "acquired after a wake-up",
            "gate watched while spinning",
            "gate watched after a wake-up",
        ],
    );
}

/// Two waiters: one release must lead to both getting the lock in turn, through the
/// `CONTENDED` state that a woken waiter stores (one wake-up per release). With two adaptive
/// waiters, one of them may find the other spinning and sleep at once.
fn two_waiters(policies: [SpinPolicy; 2], expected: &[&'static str]) -> usize {
    let paths = Paths::default();
    let seen = paths.clone();
    let name = format!(
        "lock_no_lost_wakeup_two_waiters_{}_{}",
        policy_name(policies[0]),
        policy_name(policies[1])
    );
    let n = model(&name, move || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let waiters: Vec<_> = policies
            .into_iter()
            .map(|policy| {
                let (lock, data, seen) = (Arc::clone(&lock), Arc::clone(&data), seen.clone());
                thread::spawn(move || {
                    let t0 = loom_clock::peek_nanos();
                    let r = lock.acquire_until_with(None, policy);
                    assert_eq!(r, Acquire::Acquired);
                    if !matches!(policy, SpinPolicy::Brief) {
                        let read_clock = loom_clock::peek_nanos() != t0;
                        seen.saw(classify(r, Loom::thread_log(), read_clock));
                    }
                    data.enter();
                    lock.release().unwrap();
                })
            })
            .collect();
        lock.release().unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(data.value(), 2);
        assert!(!lock.is_locked());
    });
    paths.assert_saw(&name, expected);
    n
}

#[test]
fn lock_no_lost_wakeup_two_waiters() {
    two_waiters(
        [SpinPolicy::Brief, SpinPolicy::Adaptive],
        &["acquired while spinning", "acquired after a wake-up"],
    );
    two_waiters(
        [SpinPolicy::Adaptive, SpinPolicy::Adaptive],
        &[
            "acquired while spinning",
            "acquired after a wake-up",
            "acquired after a wake-up, without spinning",
        ],
    );
}

/// Releases race: one acquisition, two releases from two threads (Python locks may be released
/// by any thread). Exactly one release is accepted, the other is `NotLocked`, and the lock ends
/// free.
#[test]
fn lock_release_unlocked_is_rejected() {
    model("lock_release_unlocked_is_rejected", || {
        let lock = Arc::new(Lock::new());
        assert_eq!(lock.release(), Err(NotLocked));
        let taker = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                acquire(&lock, SpinPolicy::Adaptive);
                lock.release()
            })
        };
        let other = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || lock.release())
        };
        let results = [taker.join().unwrap(), other.join().unwrap()];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(results.contains(&Err(NotLocked)));
        assert!(!lock.is_locked());
        assert_eq!(lock.release(), Err(NotLocked));
    });
}

/// `try_acquire` from two threads on a free lock: exactly one wins, and a third attempt on the
/// held lock fails. Then `try_acquire` racing a sleeper: taking the lock as `LOCKED` while a
/// waiter sleeps never strands that waiter.
#[test]
fn lock_try_acquire() {
    model("lock_try_acquire_race", || {
        let lock = Arc::new(Lock::new());
        let tries: Vec<_> = (0..2)
            .map(|_| {
                let lock = Arc::clone(&lock);
                thread::spawn(move || lock.try_acquire())
            })
            .collect();
        let won: Vec<bool> = tries.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(won.iter().filter(|&&w| w).count(), 1, "{won:?}");
        assert!(!lock.try_acquire());
        lock.release().unwrap();
        assert_eq!(lock.release(), Err(NotLocked));
    });
    model("lock_try_acquire_beside_sleeper", || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let sleeper = {
            let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
            thread::spawn(move || {
                acquire(&lock, SpinPolicy::Brief);
                data.enter();
                lock.release().unwrap();
            })
        };
        let trier = {
            let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
            thread::spawn(move || {
                if lock.try_acquire() {
                    data.enter();
                    lock.release().unwrap();
                    1
                } else {
                    0
                }
            })
        };
        lock.release().unwrap();
        sleeper.join().unwrap();
        let got = trier.join().unwrap();
        assert_eq!(data.value(), 1 + got);
        assert!(!lock.is_locked());
    });
}

/// A timed acquire against a holder that releases (or not): the waiter either acquires or
/// times out, never both (a timed-out waiter leaves the lock to the holder, so the holder's
/// release succeeds and the lock ends free), never hangs, and a time-out means its deadline has
/// passed. Timeouts: zero, inside the first spin budget, and past it (so the waiter sleeps with
/// a deadline).
fn timed(timeout_ns: u64, holder_releases: bool, paths: &Paths) -> usize {
    let seen = paths.clone();
    let name = format!(
        "lock_timed_{}us_{}",
        timeout_ns / 1_000,
        if holder_releases { "released" } else { "held" }
    );
    model(&name, move || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let waiter = {
            let (lock, data, seen) = (Arc::clone(&lock), Arc::clone(&data), seen.clone());
            thread::spawn(move || {
                let deadline = Deadline::after(Duration::from_nanos(timeout_ns));
                let t0 = loom_clock::peek_nanos();
                let r = lock.acquire_until(Some(deadline));
                let path = classify(r, Loom::thread_log(), loom_clock::peek_nanos() != t0);
                seen.saw(path);
                match r {
                    Acquire::Acquired => {
                        data.enter();
                        lock.release().unwrap();
                    }
                    Acquire::TimedOut => {
                        assert!(deadline.has_passed(), "{path} before the deadline");
                    }
                    Acquire::Interrupted => panic!("no signal in this model"),
                }
                r
            })
        };
        data.enter();
        let released = holder_releases && lock.release().is_ok();
        let r = waiter.join().unwrap();
        if !holder_releases {
            assert_eq!(r, Acquire::TimedOut, "got a lock that was never released");
            assert!(lock.is_locked());
            lock.release().unwrap();
        }
        assert!(!holder_releases || released);
        assert_eq!(data.value(), 1 + u32::from(r == Acquire::Acquired));
        assert!(!lock.is_locked(), "{r:?} left the lock held");
        assert_eq!(lock.release(), Err(NotLocked));
    })
}

#[test]
fn lock_timed_acquire() {
    let paths = Paths::default();
    for (timeout_ns, release) in [
        (0, true),
        (FIRST_BUDGET_NS / 2, true),
        (FIRST_BUDGET_NS / 2, false),
        (FIRST_BUDGET_NS * 10, true),
        (FIRST_BUDGET_NS * 10, false),
    ] {
        timed(timeout_ns, release, &paths);
    }
    paths.assert_saw(
        "lock_timed_acquire",
        &[
            "acquired on the fast path",
            "acquired while spinning",
            "acquired after a wake-up",
            "timed out asleep, took it on the last look",
            "timed out before sleeping",
            "timed out asleep",
        ],
    );
}

/// Waits longer than the longest spin teach a lock to only probe (a 2 µs budget, one clock
/// read here): three timed acquires time out asleep against a holder that waits for them
/// (each 1 ms wait moves the estimate a quarter of the way to the 100 µs cap: 40, 55, 66 µs,
/// past the 50 µs maximum), then an untimed acquire with the probe budget races the release.
#[test]
fn lock_probe_only_budget() {
    let paths = Paths::default();
    let seen = paths.clone();
    model("lock_probe_only_budget", move || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        let timed_out = Arc::new(AtomicBool::new(false));
        assert!(lock.try_acquire());
        let waiter = {
            let (lock, data, seen) = (Arc::clone(&lock), Arc::clone(&data), seen.clone());
            let timed_out = Arc::clone(&timed_out);
            thread::spawn(move || {
                for _ in 0..3 {
                    let deadline = Deadline::after(Duration::from_millis(1));
                    assert_eq!(lock.acquire_until(Some(deadline)), Acquire::TimedOut);
                }
                timed_out.store(true, Ordering::Release);
                let before = Loom::thread_log();
                let t0 = loom_clock::peek_nanos();
                let r = lock.acquire_until(None);
                let mut log = Loom::thread_log();
                log.slept -= before.slept;
                log.timed_out -= before.timed_out;
                let spent = loom_clock::peek_nanos() - t0;
                seen.saw(classify(r, log, spent > 0));
                if log.slept > 0 {
                    // A first-budget spin alone reads the clock for 20 µs before it sleeps.
                    assert!(spent < FIRST_BUDGET_NS, "spun {spent} ns, not a probe");
                }
                data.enter();
                lock.release().unwrap();
            })
        };
        while !timed_out.load(Ordering::Acquire) {
            thread::yield_now();
        }
        data.enter();
        lock.release().unwrap();
        waiter.join().unwrap();
        assert_eq!(data.value(), 2);
        assert!(!lock.is_locked());
    });
    paths.assert_saw(
        "lock_probe_only_budget",
        &["acquired while spinning", "acquired after a wake-up"],
    );
}

/// Release by another thread than the acquirer, while a third thread waits: the waiter is
/// woken by that release.
#[test]
fn lock_release_by_another_thread() {
    model("lock_release_by_another_thread", || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let releaser = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || lock.release())
        };
        let waiter = {
            let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
            thread::spawn(move || {
                acquire(&lock, SpinPolicy::Brief);
                data.enter();
                lock.release()
            })
        };
        assert_eq!(releaser.join().unwrap(), Ok(()));
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert_eq!(data.value(), 1);
        assert!(!lock.is_locked());
    });
}

/// Gated spinning: a waiter whose `ready()` hint never turns true still takes the free lock
/// once its watch ends; one whose hint is turned on by a third thread takes it then or after
/// its watch. Either way the lock is exclusive and nobody hangs.
#[test]
fn lock_gated() {
    one_waiter(
        SpinPolicy::Gated(ready_never),
        &[
            "acquired while spinning",
            "acquired after a wake-up",
            "gate watched while spinning",
            "gate watched after a wake-up",
        ],
    );
    model("lock_gated_ready_turns_on", || {
        READY.store(false, Ordering::Relaxed);
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let waiter = {
            let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
            thread::spawn(move || {
                acquire(&lock, SpinPolicy::Gated(ready_flag));
                data.enter();
                lock.release().unwrap();
            })
        };
        let gil = thread::spawn(|| READY.store(true, Ordering::Relaxed));
        data.enter();
        lock.release().unwrap();
        gil.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(data.value(), 2);
        assert!(!lock.is_locked());
    });
}

/// A signal while a waiter sleeps: it returns `Interrupted` without the lock, and its retry
/// (same deadline: none) still gets it.
#[test]
fn lock_interrupted_wait() {
    let paths = Paths::default();
    let seen = paths.clone();
    model("lock_interrupted_wait", move || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let waiter = {
            let (lock, data, seen) = (Arc::clone(&lock), Arc::clone(&data), seen.clone());
            thread::spawn(move || {
                loop {
                    match lock.acquire_until_with(None, SpinPolicy::Brief) {
                        Acquire::Acquired => break,
                        Acquire::Interrupted => seen.saw("interrupted"),
                        Acquire::TimedOut => panic!("timed out without a deadline"),
                    }
                }
                data.enter();
                lock.release().unwrap();
            })
        };
        let signal = thread::spawn(Loom::signal);
        data.enter();
        lock.release().unwrap();
        signal.join().unwrap();
        waiter.join().unwrap();
        assert_eq!(data.value(), 2);
        assert!(!lock.is_locked());
    });
    paths.assert_saw("lock_interrupted_wait", &["interrupted"]);
}

loom::thread_local! {
    /// The calling model thread's cancel flag, if its waits are cancellable (what
    /// `diag::WaitGuard::armed` sets up for `diag::Cancellable`, which is not built under loom).
    static CANCEL_FLAG: std::cell::RefCell<Option<Arc<AtomicBool>>> =
        std::cell::RefCell::new(None);
}

/// Whether the calling model thread's wait has been cancelled.
fn cancel_seen() -> bool {
    CANCEL_FLAG.with(|f| {
        f.borrow()
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Acquire))
    })
}

/// `diag::Cancellable` over the loom backend, step for step: no sleep once cancelled, and a
/// wake-up that finds the wait cancelled becomes `Interrupted` and is passed on.
struct CancellableLoom;

impl Wait for CancellableLoom {
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult {
        if cancel_seen() {
            return WaitResult::Interrupted;
        }
        match Loom::wait(word, expected, deadline) {
            WaitResult::Woken if cancel_seen() => {
                Loom::wake_one(word);
                WaitResult::Interrupted
            }
            r => r,
        }
    }

    fn wake_one(word: &AtomicU32) {
        Loom::wake_one(word);
    }

    fn wake_all(word: &AtomicU32) {
        Loom::wake_all(word);
    }
}

/// A watchdog's "raise" on one of two sleepers (`diag::cancel_wait`: set the flag, wake every
/// sleeper of the lock word) while the holder releases: the cancelled waiter leaves without
/// the lock (or, if the lock reached it first, with it), the other waiter is never stranded
/// (a release's one wake-up that the cancelled waiter took is passed on), and once everyone
/// is done the lock is free.
#[test]
fn lock_cancel_wakes_sleeper() {
    let paths = Paths::default();
    let seen = paths.clone();
    model("lock_cancel_wakes_sleeper", move || {
        let lock = Arc::new(RawLock::<CancellableLoom>::new());
        let data = Arc::new(Guarded::new());
        let flag = Arc::new(AtomicBool::new(false));
        assert!(lock.try_acquire());
        let victim = {
            let (lock, data, flag, seen) = (
                Arc::clone(&lock),
                Arc::clone(&data),
                Arc::clone(&flag),
                seen.clone(),
            );
            thread::spawn(move || {
                CANCEL_FLAG.with(|f| *f.borrow_mut() = Some(flag));
                match lock.acquire_until_with(None, SpinPolicy::Brief) {
                    Acquire::Acquired => {
                        seen.saw("victim acquired");
                        data.enter();
                        lock.release().unwrap();
                        1
                    }
                    Acquire::Interrupted => {
                        assert!(cancel_seen(), "interrupted without a cancel");
                        seen.saw("victim cancelled");
                        0
                    }
                    Acquire::TimedOut => panic!("timed out without a deadline"),
                }
            })
        };
        let other = {
            let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
            thread::spawn(move || {
                assert_eq!(
                    lock.acquire_until_with(None, SpinPolicy::Brief),
                    Acquire::Acquired
                );
                data.enter();
                lock.release().unwrap();
            })
        };
        // The watchdog.
        flag.store(true, Ordering::Release);
        CancellableLoom::wake_all(lock.wake_word());
        data.enter();
        lock.release().unwrap();
        other.join().unwrap();
        let victim_entered = victim.join().unwrap();
        assert_eq!(data.value(), 2 + victim_entered);
        assert!(!lock.is_locked());
    });
    paths.assert_saw(
        "lock_cancel_wakes_sleeper",
        &["victim cancelled", "victim acquired"],
    );
}

/// `reinit` (Python's `_at_fork_reinit`) while the lock is held and a waiter sleeps: the waiter
/// is not stranded, and once everyone is done the lock is free. (Releases may then be refused:
/// after a reinit the holder no longer holds it.)
#[test]
fn lock_reinit_wakes_sleepers() {
    model("lock_reinit_wakes_sleepers", || {
        let lock = Arc::new(Lock::new());
        assert!(lock.try_acquire());
        let waiter = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                acquire(&lock, SpinPolicy::Brief);
                lock.release()
            })
        };
        let reinit = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || lock.reinit())
        };
        let mine = lock.release();
        reinit.join().unwrap();
        let theirs = waiter.join().unwrap();
        // At least one of the two releases had something to release.
        assert!(mine.is_ok() || theirs.is_ok(), "{mine:?} {theirs:?}");
        assert!(!lock.is_locked());
    });
}

/// How the waiter of a handoff model waits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum HandoffWaiter {
    /// Untimed, no signal: it can only leave with the lock.
    Sleeping,
    /// With a deadline: its sleep may time out at any moment, also while it is counted as
    /// starving and while the lock is being handed to it.
    Timed,
    /// Untimed, but a third thread sends a signal: its sleep may end `Interrupted` at any
    /// moment; it retries, as the binding does after running the handlers.
    Interrupted,
}

/// The starvation pattern in miniature: the holder releases the lock and takes it straight
/// back (as a loop that holds it across a call that lets the GIL go does) while a waiter
/// sleeps. Under loom a waiter asks for a handoff at its first lost race after a wake-up
/// (`STARVE_NS` is 0), so the holder's second release hands the lock off in many
/// interleavings, and the holder's second acquire, which has not slept yet, cannot take it.
/// Checked: exclusion, no deadlock (a handoff nobody takes would hang the holder's acquire or
/// leave the lock held at the end), the lock free at the end, and that the handoff paths are
/// reached.
fn handoff(kind: HandoffWaiter, paths: &Paths) -> usize {
    let seen = paths.clone();
    let name = match kind {
        HandoffWaiter::Sleeping => "lock_handoff_to_sleeper",
        HandoffWaiter::Timed => "lock_handoff_vs_timeout",
        HandoffWaiter::Interrupted => "lock_handoff_vs_interrupt",
    };
    // A timed sleep ends at once unless a preemption lets the holder in first (see
    // `wait::Loom`): being woken, losing the race, and then timing out or being handed the lock
    // while counted as starving takes three.
    let min_bound = if kind == HandoffWaiter::Timed { 4 } else { 0 };
    model_at_least(name, min_bound, move || {
        let lock = Arc::new(Lock::new());
        let data = Arc::new(Guarded::new());
        assert!(lock.try_acquire());
        let waiter = {
            let (lock, data, seen) = (Arc::clone(&lock), Arc::clone(&data), seen.clone());
            thread::spawn(move || {
                let r = loop {
                    let deadline = (kind == HandoffWaiter::Timed)
                        .then(|| Deadline::after(Duration::from_millis(1)));
                    match lock.acquire_until_with(deadline, SpinPolicy::Brief) {
                        Acquire::Interrupted if kind == HandoffWaiter::Interrupted => {
                            seen.saw("interrupted");
                        }
                        Acquire::TimedOut if kind == HandoffWaiter::Timed => {
                            seen.saw("timed out");
                            break Acquire::TimedOut;
                        }
                        Acquire::Acquired => break Acquire::Acquired,
                        other => panic!("{other:?} in this model"),
                    }
                };
                let log = Loom::thread_log();
                if loom_paths::handoffs_taken() > 0 {
                    seen.saw(match (log.timed_out, log.interrupted) {
                        (0, 0) => "waiter took a handoff after a wake-up",
                        (_, 0) => "waiter took a handoff on its last look after a timeout",
                        _ => "waiter took a handoff after an interruption",
                    });
                }
                if r == Acquire::Acquired {
                    data.enter();
                    lock.release().unwrap();
                }
                r
            })
        };
        let signal = (kind == HandoffWaiter::Interrupted).then(|| thread::spawn(Loom::signal));
        data.enter();
        lock.release().unwrap();
        acquire(&lock, SpinPolicy::Brief);
        data.enter();
        lock.release().unwrap();
        if loom_paths::is_handed_off(&lock) {
            seen.saw("holder released to a handoff");
        }
        if let Some(signal) = signal {
            signal.join().unwrap();
        }
        let r = waiter.join().unwrap();
        assert_eq!(data.value(), 2 + u32::from(r == Acquire::Acquired));
        assert!(!lock.is_locked(), "left held (a handoff nobody took?)");
        assert!(
            lock.try_acquire(),
            "everybody left, yet the lock cannot be taken"
        );
        lock.release().unwrap();
        assert_eq!(lock.release(), Err(NotLocked));
    })
}

#[test]
fn lock_handoff_to_sleeper() {
    let paths = Paths::default();
    handoff(HandoffWaiter::Sleeping, &paths);
    paths.assert_saw(
        "lock_handoff_to_sleeper",
        &[
            "holder released to a handoff",
            "waiter took a handoff after a wake-up",
        ],
    );
}

#[test]
fn lock_handoff_vs_timeout() {
    let paths = Paths::default();
    handoff(HandoffWaiter::Timed, &paths);
    paths.assert_saw(
        "lock_handoff_vs_timeout",
        &[
            "holder released to a handoff",
            "timed out",
            "waiter took a handoff after a wake-up",
            "waiter took a handoff on its last look after a timeout",
        ],
    );
}

#[test]
fn lock_handoff_vs_interrupt() {
    let paths = Paths::default();
    handoff(HandoffWaiter::Interrupted, &paths);
    paths.assert_saw(
        "lock_handoff_vs_interrupt",
        &[
            "holder released to a handoff",
            "interrupted",
            "waiter took a handoff after a wake-up",
            "waiter took a handoff after an interruption",
        ],
    );
}

/// A release by another thread (Python allows it) racing with the holder's release of a lock
/// it took straight back while a waiter starves: one of the two releases may find the lock
/// handed off and not taken yet, and then waits for the waiter to take it and releases it for
/// them (asleep, woken by the taker). Three acquisitions and four releases (the holder's first
/// one succeeds for sure): every release that succeeded freed exactly one acquisition (so the
/// other three's `Ok`s plus "still held" is two), nobody hangs, and if the lock is still held
/// it is an ordinary held lock.
#[test]
fn lock_handoff_released_by_another_thread() {
    let paths = Paths::default();
    let seen = paths.clone();
    // The holder being woken, losing the race, and the two releases meeting the handoff before
    // the waiter takes it: three preemptions.
    model_at_least("lock_handoff_released_by_another_thread", 3, move || {
        let lock = Arc::new(Lock::new());
        assert!(lock.try_acquire());
        let waiter = {
            let (lock, seen) = (Arc::clone(&lock), seen.clone());
            thread::spawn(move || {
                acquire(&lock, SpinPolicy::Brief);
                if loom_paths::handoffs_taken() > 0 {
                    seen.saw("waiter took a handoff");
                }
                lock.release()
            })
        };
        lock.release().unwrap();
        acquire(&lock, SpinPolicy::Brief);
        let other = {
            let (lock, seen) = (Arc::clone(&lock), seen.clone());
            thread::spawn(move || {
                let r = lock.release();
                if loom_paths::releases_after_handoff() > 0 {
                    seen.saw("another thread's release waited for the taker");
                }
                r
            })
        };
        let mine = lock.release();
        if loom_paths::releases_after_handoff() > 0 {
            seen.saw("holder's release waited for the taker");
        }
        let theirs = other.join().unwrap();
        let waiters = waiter.join().unwrap();
        let ok = [mine, theirs, waiters].iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            ok + usize::from(lock.is_locked()),
            2,
            "{mine:?} {theirs:?} {waiters:?}"
        );
        if lock.is_locked() {
            assert!(!lock.try_acquire());
            lock.release().unwrap();
        }
        assert!(lock.try_acquire());
        lock.release().unwrap();
        assert_eq!(lock.release(), Err(NotLocked));
    });
    paths.assert_saw(
        "lock_handoff_released_by_another_thread",
        &[
            "waiter took a handoff",
            "another thread's release waited for the taker",
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// RLock
// ---------------------------------------------------------------------------------------------

/// Two threads (idents 1 and 2) take the reentrant lock twice each: only the owner can re-enter
/// or release, the count goes 1, 2, 1, 0, a release past zero is `NotOwner`, and the sections
/// never overlap.
#[test]
fn rlock_owner_and_count() {
    model("rlock_owner_and_count", || {
        let rlock = Arc::new(RLock::new());
        let data = Arc::new(Guarded::new());
        let threads: Vec<_> = [1_u64, 2]
            .into_iter()
            .map(|me| {
                let (rlock, data) = (Arc::clone(&rlock), Arc::clone(&data));
                thread::spawn(move || {
                    assert_eq!(rlock.release(me), Err(NotOwner));
                    assert!(!rlock.is_owned(me));
                    assert_eq!(rlock.recursion_count(me), 0);
                    if me == 1 {
                        rlock.acquire(me);
                    } else {
                        while !rlock.try_acquire(me) {
                            thread::yield_now();
                        }
                    }
                    assert!(rlock.try_acquire(me), "re-entry by the owner");
                    assert_eq!(rlock.recursion_count(me), 2);
                    data.enter();
                    rlock.release(me).unwrap();
                    assert!(rlock.is_owned(me));
                    assert_eq!(rlock.recursion_count(me), 1);
                    rlock.release(me).unwrap();
                    assert!(!rlock.is_owned(me));
                    assert_eq!(rlock.release(me), Err(NotOwner));
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(data.value(), 2);
        assert_eq!((rlock.owner(), rlock.count()), (0, 0));
        assert!(!rlock.is_locked());
    });
}

/// `threading.Condition`'s pattern: the owner saves and fully releases (count 2), another
/// thread takes the lock meanwhile (or times out trying), and the owner restores its count.
#[test]
fn rlock_release_save_restore() {
    model("rlock_release_save_restore", || {
        let rlock = Arc::new(RLock::new());
        let data = Arc::new(Guarded::new());
        rlock.acquire(1);
        rlock.acquire(1);
        let other = {
            let (rlock, data) = (Arc::clone(&rlock), Arc::clone(&data));
            thread::spawn(move || {
                let deadline = Deadline::after(Duration::from_nanos(FIRST_BUDGET_NS * 4));
                match rlock.acquire_until(2, Some(deadline)) {
                    Acquire::Acquired => {
                        assert_eq!(rlock.recursion_count(2), 1);
                        data.enter();
                        rlock.release(2).unwrap();
                        true
                    }
                    Acquire::TimedOut => {
                        assert!(!rlock.is_owned(2));
                        assert_eq!(rlock.release(2), Err(NotOwner));
                        false
                    }
                    Acquire::Interrupted => unreachable!("no signal in this model"),
                }
            })
        };
        data.enter();
        assert_eq!(rlock.release_save(), Ok((2, 1)));
        assert_eq!(rlock.acquire_restore_until(2, 1, None), Acquire::Acquired);
        assert_eq!(rlock.recursion_count(1), 2);
        data.enter();
        rlock.release(1).unwrap();
        rlock.release(1).unwrap();
        let got = other.join().unwrap();
        assert_eq!(data.value(), 2 + u32::from(got));
        assert_eq!(rlock.release_save(), Err(NotOwner));
        assert!(!rlock.is_locked());
    });
}

// ---------------------------------------------------------------------------------------------
// Event
// ---------------------------------------------------------------------------------------------

/// Two waiters and a setter that publishes data before `set`: both waiters return `Acquired`
/// (a missed wake-up would be a deadlock) and see the data.
#[test]
fn event_set_wakes_every_waiter() {
    model("event_set_wakes_every_waiter", || {
        let event = Arc::new(Event::new());
        let data = Arc::new(UnsafeCell::new(0_u32));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (event, data) = (Arc::clone(&event), Arc::clone(&data));
                thread::spawn(move || {
                    assert_eq!(event.wait_until(None), Acquire::Acquired);
                    assert!(event.is_set());
                    // SAFETY: written before `set`, read after the wait saw it; loom checks
                    // that the event orders the two.
                    assert_eq!(data.with(|v| unsafe { *v }), 42);
                })
            })
            .collect();
        // SAFETY: no reader reads before the event is set (loom checks it).
        data.with_mut(|v| unsafe { *v = 42 });
        event.set();
        event.set();
        for w in waiters {
            w.join().unwrap();
        }
    });
}

/// A timed wait against a setter: `Acquired` (with the data visible) or `TimedOut` after the
/// deadline, both reached, never a hang.
#[test]
fn event_timed_wait() {
    let paths = Paths::default();
    let seen = paths.clone();
    model("event_timed_wait", move || {
        let event = Arc::new(Event::new());
        let data = Arc::new(UnsafeCell::new(0_u32));
        let waiter = {
            let (event, data, seen) = (Arc::clone(&event), Arc::clone(&data), seen.clone());
            thread::spawn(move || {
                let deadline = Deadline::after(Duration::from_nanos(FIRST_BUDGET_NS));
                match event.wait_until(Some(deadline)) {
                    Acquire::Acquired => {
                        // SAFETY: the set happened before; loom checks the ordering.
                        assert_eq!(data.with(|v| unsafe { *v }), 7);
                        seen.saw(if Loom::thread_log().woken > 0 {
                            "set while asleep"
                        } else {
                            "already set"
                        });
                    }
                    Acquire::TimedOut => {
                        assert!(deadline.has_passed());
                        seen.saw("timed out");
                    }
                    Acquire::Interrupted => unreachable!("no signal in this model"),
                }
            })
        };
        // SAFETY: readers only read after seeing the event set (loom checks it).
        data.with_mut(|v| unsafe { *v = 7 });
        event.set();
        waiter.join().unwrap();
        assert!(event.is_set());
    });
    paths.assert_saw(
        "event_timed_wait",
        &["set while asleep", "already set", "timed out"],
    );
}

// ---------------------------------------------------------------------------------------------
// Mutations: deliberately broken variants that the model must catch.
// ---------------------------------------------------------------------------------------------

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// The lock's protocol reduced to its core (fast path, sleep loop, release), with one mutation
/// each: these models must fail, which shows that the real lock's passing models mean something.
struct Mutant {
    state: AtomicU32,
    mutation: Mutation,
}

#[derive(Clone, Copy)]
enum Mutation {
    /// Release reads the state, then stores `UNLOCKED`, and wakes only if what it read was
    /// `CONTENDED`: a waiter that marks the lock in between is never woken (lost wake-up).
    CheckThenRelease,
    /// Acquire checks the state is free, then stores `LOCKED`: two threads both get in.
    CheckThenSet,
    /// The correct protocol with `Relaxed` in place of `Acquire`/`Release`: the critical
    /// sections are exclusive but not ordered, which loom's cell reports.
    RelaxedOrderings,
}

impl Mutant {
    fn new(mutation: Mutation) -> Self {
        Mutant {
            state: AtomicU32::new(UNLOCKED),
            mutation,
        }
    }

    fn acquire(&self) {
        let (take, fail) = match self.mutation {
            Mutation::RelaxedOrderings => (Ordering::Relaxed, Ordering::Relaxed),
            _ => (Ordering::Acquire, Ordering::Relaxed),
        };
        if let Mutation::CheckThenSet = self.mutation {
            loop {
                // `Acquire`, so that the only bug is the gap between check and set.
                if self.state.load(Ordering::Acquire) == UNLOCKED {
                    self.state.store(LOCKED, Ordering::Relaxed);
                    return;
                }
                thread::yield_now();
            }
        }
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, take, fail)
            .is_ok()
        {
            return;
        }
        while self.state.swap(CONTENDED, take) != UNLOCKED {
            while Loom::wait(&self.state, CONTENDED, None) != WaitResult::Woken {}
        }
    }

    fn release(&self) {
        match self.mutation {
            Mutation::CheckThenRelease => {
                let was = self.state.load(Ordering::Relaxed);
                self.state.store(UNLOCKED, Ordering::Release);
                if was == CONTENDED {
                    Loom::wake_one(&self.state);
                }
            }
            Mutation::CheckThenSet | Mutation::RelaxedOrderings => {
                let order = match self.mutation {
                    Mutation::RelaxedOrderings => Ordering::Relaxed,
                    _ => Ordering::Release,
                };
                if self.state.swap(UNLOCKED, order) == CONTENDED {
                    Loom::wake_one(&self.state);
                }
            }
        }
    }
}

/// Two threads through a mutant lock around the guarded section.
fn mutant_model(mutation: Mutation) {
    let lock = Arc::new(Mutant::new(mutation));
    let data = Arc::new(Guarded::new());
    let other = {
        let (lock, data) = (Arc::clone(&lock), Arc::clone(&data));
        thread::spawn(move || {
            lock.acquire();
            data.enter();
            lock.release();
        })
    };
    lock.acquire();
    data.enter();
    lock.release();
    other.join().unwrap();
    assert_eq!(data.value(), 2);
}

#[test]
fn mutation_check_then_release_loses_a_wakeup() {
    mutation(
        "mutation_check_then_release_loses_a_wakeup",
        &["deadlock"],
        || mutant_model(Mutation::CheckThenRelease),
    );
}

#[test]
fn mutation_check_then_set_grants_twice() {
    mutation(
        "mutation_check_then_set_grants_twice",
        &["two holders", "Causality violation"],
        || mutant_model(Mutation::CheckThenSet),
    );
}

#[test]
fn mutation_relaxed_orderings_race() {
    mutation(
        "mutation_relaxed_orderings_race",
        &["Causality violation"],
        || mutant_model(Mutation::RelaxedOrderings),
    );
}

/// The real `RawLock` over a backend that drops every wake-up: the model must see the sleeping
/// waiter stranded.
struct DropsWakeups;

impl Wait for DropsWakeups {
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult {
        Loom::wait(word, expected, deadline)
    }

    fn wake_one(_word: &AtomicU32) {}

    fn wake_all(_word: &AtomicU32) {}
}

#[test]
fn mutation_lock_without_wakeups_hangs() {
    mutation("mutation_lock_without_wakeups_hangs", &["deadlock"], || {
        let lock = Arc::new(RawLock::<DropsWakeups>::new());
        assert!(lock.try_acquire());
        let waiter = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || {
                while lock.acquire_until_with(None, SpinPolicy::Brief) != Acquire::Acquired {}
                lock.release().unwrap();
            })
        };
        lock.release().unwrap();
        waiter.join().unwrap();
    });
}
