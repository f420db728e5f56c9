//! Where time goes: process-wide contention totals and a per-site contention profile.
//!
//! Everything here is fed from the *contended* (slow) path of an acquire and from a release
//! that had to wake a sleeping waiter; an uncontended acquire or release never calls into it.
//!
//! - **Totals** ([`stats`]): always on, a handful of relaxed atomic adds per contended
//!   acquire (the slow path already costs a spin or a system call): waits, those resolved
//!   while spinning, those that slept, timeouts, and the total wait time. Like Go's
//!   `/sync/mutex/wait/total:seconds`, a cheap "is there contention at all" check.
//! - **Profile** ([`start`] / [`stop`] / [`reset`] / [`snapshot`]): per lock (keyed by the
//!   caller's [`LockKey`]: an id and the lock's creation [`SiteId`]) the contended acquisitions
//!   split spun/slept, total and maximum wait, a log2 histogram of the waits, the hold time of
//!   holds that began with an acquire that slept, the delay charged to holders, and sampled
//!   stacks: the stacks that waited, and the stacks that *held* the lock while others waited.
//!   As in Go's mutex profile, the delay is charged to the releaser: a release that wakes a
//!   waiter is charged with the time every current waiter spent waiting since the previous
//!   charge, so each nanosecond of waiting is charged once, to the hold that caused it.
//! - **Sleep counting** ([`Counted`]): a [`Wait`] backend wrapper that counts, per thread,
//!   the times a thread went to sleep in the OS; a caller compares [`thread_sleeps`] before
//!   and after a contended acquire to tell "spun" from "slept" without any change to the lock
//!   algorithm.
//!
//! A stack is a list of [`SiteId`]s, innermost first, interned into a [`StackId`] with
//! [`intern_stack`]; the caller walks its own stacks (Python frames in the binding, or
//! [`intern_caller`](super::intern_caller) sites in Rust). Which events carry a stack is
//! decided by [`sample`]: one contended event in `rate`.
//!
//! ```
//! use rthread_core::diag::profile::{self, Counted, LockKey};
//! use rthread_core::wait::DefaultWait;
//! use rthread_core::RawLock;
//! use std::sync::Arc;
//!
//! profile::start(1);
//! let lock: Arc<RawLock<Counted<DefaultWait>>> = Arc::new(RawLock::new());
//! let key = LockKey { lock: 1, site: None };
//! lock.acquire();
//! let l2 = Arc::clone(&lock);
//! let t = std::thread::spawn(move || {
//!     let w = profile::begin_wait(key, None);
//!     let sleeps = profile::thread_sleeps();
//!     l2.acquire();
//!     profile::end_wait(w, profile::thread_sleeps() != sleeps, true, 2);
//!     l2.release().unwrap();
//! });
//! std::thread::sleep(std::time::Duration::from_millis(50));
//! if lock.release_woke() == Ok(true) {
//!     profile::released_with_waiters(key, None, 1);
//! }
//! t.join().unwrap();
//! let snap = profile::snapshot();
//! assert_eq!(snap.locks[0].contended, 1);
//! assert!(snap.locks[0].wait_ns > 0);
//! assert!(profile::stats().waits >= 1);
//! profile::stop();
//! ```
use std::cell::Cell;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::deadline::Deadline;
use crate::wait::{Wait, WaitResult};

use super::SiteId;

// ---------------------------------------------------------------------------------------------
// Sleep counting

thread_local! {
    static SLEEPS: Cell<u64> = const { Cell::new(0) };
}

/// A [`Wait`] backend that counts the calling thread's sleeps ([`thread_sleeps`]) and then
/// waits in `W`. Only [`Wait::wait`] counts; wakes are passed through.
pub struct Counted<W: Wait>(PhantomData<fn() -> W>);

impl<W: Wait> Wait for Counted<W> {
    #[inline]
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult {
        SLEEPS.with(|c| c.set(c.get().wrapping_add(1)));
        W::wait(word, expected, deadline)
    }

    #[inline]
    fn wake_one(word: &AtomicU32) {
        W::wake_one(word);
    }

    #[inline]
    fn wake_all(word: &AtomicU32) {
        W::wake_all(word);
    }
}

/// How many times the calling thread went to sleep in a [`Counted`] backend (wrapping).
#[inline]
#[must_use]
pub fn thread_sleeps() -> u64 {
    SLEEPS.with(Cell::get)
}

// ---------------------------------------------------------------------------------------------
// Always-on totals

static T_WAITS: AtomicU64 = AtomicU64::new(0);
static T_SPINS: AtomicU64 = AtomicU64::new(0);
static T_SLEEPS: AtomicU64 = AtomicU64::new(0);
static T_TIMEOUTS: AtomicU64 = AtomicU64::new(0);
static T_WAIT_NS: AtomicU64 = AtomicU64::new(0);

/// Process-wide contention totals since the start of the process ([`stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Contended acquires: acquires that did not get the lock on the first try and waited.
    pub waits: u64,
    /// Of those, the ones that got the lock without sleeping (while spinning).
    pub spins: u64,
    /// Of those, the ones that slept in the OS at least once (acquired or not).
    pub sleeps: u64,
    /// Of those, the ones that ended without the lock (timeout, cancellation, error).
    pub timeouts: u64,
    /// Total time spent in contended acquires, in nanoseconds.
    pub wait_ns: u64,
}

/// The process-wide totals.
#[must_use]
pub fn stats() -> Stats {
    Stats {
        waits: T_WAITS.load(Ordering::Relaxed),
        spins: T_SPINS.load(Ordering::Relaxed),
        sleeps: T_SLEEPS.load(Ordering::Relaxed),
        timeouts: T_TIMEOUTS.load(Ordering::Relaxed),
        wait_ns: T_WAIT_NS.load(Ordering::Relaxed),
    }
}

/// Adds one contended acquire to the totals (called by [`end_wait`]; callers that do not
/// profile call it directly).
#[inline]
pub fn count_wait(slept: bool, acquired: bool, wait_ns: u64) {
    T_WAITS.fetch_add(1, Ordering::Relaxed);
    if slept {
        T_SLEEPS.fetch_add(1, Ordering::Relaxed);
    } else if acquired {
        T_SPINS.fetch_add(1, Ordering::Relaxed);
    }
    if !acquired {
        T_TIMEOUTS.fetch_add(1, Ordering::Relaxed);
    }
    T_WAIT_NS.fetch_add(wait_ns, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------------
// The profile

/// Buckets of the wait histogram: bucket `i` counts waits of `[2^i, 2^(i+1))` ns (bucket 0
/// also holds 0 ns), the last one everything longer.
pub const HISTOGRAM_BUCKETS: usize = 40;

/// Identifies a lock in the profile: the caller's id for the lock (an address, a
/// [`LockId`](super::LockId)) and its creation site. Reports aggregate by site.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LockKey {
    pub lock: u64,
    /// The creation site (`None`: unknown).
    pub site: Option<SiteId>,
}

/// An interned stack ([`intern_stack`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StackId(pub u32);

/// Whether a stack waited for a lock or held it while others waited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    Waited,
    Held,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static RATE: AtomicU32 = AtomicU32::new(DEFAULT_RATE);
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// The default sampling rate: a stack for one contended event in this many.
pub const DEFAULT_RATE: u32 = 4;

#[derive(Default)]
struct LockEntry {
    contended: u64,
    spun: u64,
    slept: u64,
    timeouts: u64,
    wait_ns: u64,
    max_wait_ns: u64,
    histogram: Vec<u64>,
    hold_count: u64,
    hold_ns: u64,
    max_hold_ns: u64,
    charged_ns: u64,
    charges: u64,
    // Live state: waiters registered now, the sum of their charge baselines, the time of the
    // last charge, and the start of the current hold when it began with a sleep.
    waiters: u64,
    base_sum: u64,
    last_charge: u64,
    hold_start: Option<(u64, u64)>,
}

#[derive(Default)]
struct ThreadEntry {
    contended: u64,
    wait_ns: u64,
    charged_ns: u64,
}

#[derive(Default)]
struct State {
    /// Bumped by [`reset`]: a wait registered before a reset is not deregistered after it.
    generation: u64,
    started_ns: u64,
    elapsed_ns: u64,
    locks: HashMap<LockKey, LockEntry>,
    stacks: HashMap<(LockKey, Role, StackId), (u64, u64)>,
    threads: HashMap<u64, ThreadEntry>,
    stack_ids: HashMap<Vec<SiteId>, StackId>,
    stack_list: Vec<Vec<SiteId>>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let mut g = STATE.lock().unwrap_or_else(PoisonError::into_inner);
    f(g.get_or_insert_with(State::default))
}

/// Whether the profile is on (one relaxed load).
#[inline]
#[must_use]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns the profile on, taking a stack for one contended event in `rate` (0 = no stacks).
/// Data gathered before is kept (see [`reset`]).
pub fn start(rate: u32) {
    RATE.store(rate, Ordering::Relaxed);
    with_state(|s| {
        if !ENABLED.load(Ordering::Relaxed) {
            s.started_ns = Deadline::now().as_nanos();
        }
    });
    ENABLED.store(true, Ordering::Relaxed);
}

/// Turns the profile off; the data stays until [`reset`].
pub fn stop() {
    with_state(|s| {
        if ENABLED.swap(false, Ordering::Relaxed) {
            s.elapsed_ns += Deadline::now().as_nanos().saturating_sub(s.started_ns);
        }
    });
}

/// Forgets everything gathered (the totals of [`stats`] are not affected).
pub fn reset() {
    with_state(|s| {
        // Interned stacks are kept: a waiter may hold a `StackId` across the reset.
        s.generation += 1;
        s.elapsed_ns = 0;
        s.started_ns = Deadline::now().as_nanos();
        s.locks.clear();
        s.stacks.clear();
        s.threads.clear();
    });
}

/// The sampling rate given to [`start`].
#[must_use]
pub fn rate() -> u32 {
    RATE.load(Ordering::Relaxed)
}

/// Whether the next contended event should carry a stack (one in [`rate`]).
#[inline]
#[must_use]
pub fn sample() -> bool {
    let rate = RATE.load(Ordering::Relaxed);
    rate != 0 && EVENTS.fetch_add(1, Ordering::Relaxed) % u64::from(rate) == 0
}

/// Interns a stack (innermost frame first).
pub fn intern_stack(frames: &[SiteId]) -> StackId {
    with_state(|s| {
        if let Some(&id) = s.stack_ids.get(frames) {
            return id;
        }
        let id = StackId(u32::try_from(s.stack_list.len()).unwrap_or(u32::MAX));
        s.stack_list.push(frames.to_vec());
        s.stack_ids.insert(frames.to_vec(), id);
        id
    })
}

/// A contended acquire in progress ([`begin_wait`] / [`end_wait`]): plain data, no destructor.
#[derive(Clone, Copy, Debug)]
pub struct WaitStart {
    pub key: LockKey,
    pub start_ns: u64,
    pub stack: Option<StackId>,
    /// Whether the waiter was registered with the profile (it was on).
    pub profiled: bool,
    generation: u64,
}

/// Starts timing a contended acquire of `key`; while the profile is on, registers the waiter
/// so that releases are charged with its wait. `stack` is the waiter's stack if sampled.
pub fn begin_wait(key: LockKey, stack: Option<StackId>) -> WaitStart {
    let start_ns = Deadline::now().as_nanos();
    let profiled = enabled();
    let mut generation = 0;
    if profiled {
        generation = with_state(|s| {
            let e = s.locks.entry(key).or_default();
            e.waiters += 1;
            e.base_sum = e.base_sum.wrapping_add(start_ns);
            s.generation
        });
    }
    WaitStart {
        key,
        start_ns,
        stack,
        profiled,
        generation,
    }
}

/// Ends a contended acquire begun with [`begin_wait`]: `slept` (it slept in the OS at least
/// once), `acquired`, and the waiting thread's `ident`. Returns the wait in nanoseconds.
pub fn end_wait(w: WaitStart, slept: bool, acquired: bool, ident: u64) -> u64 {
    end_wait_at(w, Deadline::now().as_nanos(), slept, acquired, ident)
}

/// [`end_wait`] with the end time given (a caller that re-took other locks after the wait).
pub fn end_wait_at(w: WaitStart, end_ns: u64, slept: bool, acquired: bool, ident: u64) -> u64 {
    let wait_ns = end_ns.saturating_sub(w.start_ns);
    count_wait(slept, acquired, wait_ns);
    if !w.profiled {
        return wait_ns;
    }
    with_state(|s| {
        if s.generation != w.generation {
            return;
        }
        let e = s.locks.entry(w.key).or_default();
        if e.waiters > 0 {
            e.waiters -= 1;
            e.base_sum = e.base_sum.wrapping_sub(w.start_ns.max(e.last_charge));
        }
        if !enabled() {
            return;
        }
        e.contended += 1;
        if slept {
            e.slept += 1;
        } else if acquired {
            e.spun += 1;
        }
        if !acquired {
            e.timeouts += 1;
        }
        e.wait_ns += wait_ns;
        e.max_wait_ns = e.max_wait_ns.max(wait_ns);
        if e.histogram.is_empty() {
            e.histogram = vec![0; HISTOGRAM_BUCKETS];
        }
        e.histogram[bucket(wait_ns)] += 1;
        if acquired && slept {
            e.hold_start = Some((end_ns, ident));
        }
        let t = s.threads.entry(ident).or_default();
        t.contended += 1;
        t.wait_ns += wait_ns;
        if let Some(stack) = w.stack {
            let v = s.stacks.entry((w.key, Role::Waited, stack)).or_default();
            v.0 += 1;
            v.1 += wait_ns;
        }
    });
    wait_ns
}

/// The histogram bucket of a wait.
#[must_use]
pub fn bucket(ns: u64) -> usize {
    if ns == 0 {
        0
    } else {
        (63 - ns.leading_zeros() as usize).min(HISTOGRAM_BUCKETS - 1)
    }
}

/// A release of `key` by thread `ident` woke a waiter: charges the releaser (and its `stack`,
/// if sampled) with the waiting done since the last charge, and ends a hold that began with
/// a slept acquire. Returns the delay charged, in nanoseconds.
pub fn released_with_waiters(key: LockKey, stack: Option<StackId>, ident: u64) -> u64 {
    if !enabled() {
        return 0;
    }
    let now = Deadline::now().as_nanos();
    with_state(|s| {
        let e = s.locks.entry(key).or_default();
        let charge = e
            .waiters
            .wrapping_mul(now)
            .wrapping_sub(e.base_sum)
            .min(e.waiters.saturating_mul(now.saturating_sub(s.started_ns)));
        e.base_sum = e.waiters.wrapping_mul(now);
        e.last_charge = now;
        if let Some((start, holder)) = e.hold_start.take() {
            if holder == ident {
                let hold = now.saturating_sub(start);
                e.hold_count += 1;
                e.hold_ns += hold;
                e.max_hold_ns = e.max_hold_ns.max(hold);
            }
        }
        if charge == 0 {
            return 0;
        }
        e.charged_ns += charge;
        e.charges += 1;
        s.threads.entry(ident).or_default().charged_ns += charge;
        if let Some(stack) = stack {
            let v = s.stacks.entry((key, Role::Held, stack)).or_default();
            v.0 += 1;
            v.1 += charge;
        }
        charge
    })
}

/// Whether [`released_with_waiters`] would charge anything now: the profile is on and `key`
/// has registered waiters (so a caller only walks its stack when it is worth it).
#[must_use]
pub fn has_waiters(key: LockKey) -> bool {
    enabled() && with_state(|s| s.locks.get(&key).is_some_and(|e| e.waiters > 0))
}

/// One lock of a [`ProfileSnapshot`].
#[derive(Clone, Debug, Default)]
pub struct LockProfile {
    pub key: Option<LockKey>,
    /// Contended acquires (acquires that waited), and how they were resolved.
    pub contended: u64,
    pub spun: u64,
    pub slept: u64,
    pub timeouts: u64,
    /// Total and longest wait, in nanoseconds.
    pub wait_ns: u64,
    pub max_wait_ns: u64,
    /// Waits per log2 bucket (see [`bucket`]).
    pub histogram: Vec<u64>,
    /// Holds that began with an acquire that slept and ended in a release that woke a waiter:
    /// how many, their total and longest duration.
    pub hold_count: u64,
    pub hold_ns: u64,
    pub max_hold_ns: u64,
    /// Delay charged to releasers (waiting caused by holds), and how many releases.
    pub charged_ns: u64,
    pub charges: u64,
}

/// One sampled stack of a [`ProfileSnapshot`].
#[derive(Clone, Debug)]
pub struct StackProfile {
    pub key: LockKey,
    pub role: Role,
    pub stack: StackId,
    /// Sampled events and their total nanoseconds (wait, or delay charged).
    pub count: u64,
    pub ns: u64,
}

/// Per-thread totals of a [`ProfileSnapshot`].
#[derive(Clone, Debug)]
pub struct ThreadProfile {
    pub ident: u64,
    pub contended: u64,
    pub wait_ns: u64,
    pub charged_ns: u64,
}

/// A copy of the profile ([`snapshot`]).
#[derive(Clone, Debug, Default)]
pub struct ProfileSnapshot {
    pub running: bool,
    pub rate: u32,
    /// How long the profile has been on, in nanoseconds.
    pub duration_ns: u64,
    pub locks: Vec<LockProfile>,
    pub stacks: Vec<StackProfile>,
    pub threads: Vec<ThreadProfile>,
    /// Interned stacks, by [`StackId`] index, innermost frame first.
    pub stack_frames: Vec<Vec<SiteId>>,
}

/// A copy of everything gathered so far.
#[must_use]
pub fn snapshot() -> ProfileSnapshot {
    let running = enabled();
    let now = Deadline::now().as_nanos();
    with_state(|s| ProfileSnapshot {
        running,
        rate: rate(),
        duration_ns: s.elapsed_ns
            + if running {
                now.saturating_sub(s.started_ns)
            } else {
                0
            },
        locks: s
            .locks
            .iter()
            .filter(|(_, e)| e.contended > 0 || e.charges > 0)
            .map(|(&k, e)| LockProfile {
                key: Some(k),
                contended: e.contended,
                spun: e.spun,
                slept: e.slept,
                timeouts: e.timeouts,
                wait_ns: e.wait_ns,
                max_wait_ns: e.max_wait_ns,
                histogram: if e.histogram.is_empty() {
                    vec![0; HISTOGRAM_BUCKETS]
                } else {
                    e.histogram.clone()
                },
                hold_count: e.hold_count,
                hold_ns: e.hold_ns,
                max_hold_ns: e.max_hold_ns,
                charged_ns: e.charged_ns,
                charges: e.charges,
            })
            .collect(),
        stacks: s
            .stacks
            .iter()
            .map(|(&(key, role, stack), &(count, ns))| StackProfile {
                key,
                role,
                stack,
                count,
                ns,
            })
            .collect(),
        threads: s
            .threads
            .iter()
            .map(|(&ident, t)| ThreadProfile {
                ident,
                contended: t.contended,
                wait_ns: t.wait_ns,
                charged_ns: t.charged_ns,
            })
            .collect(),
        stack_frames: s.stack_list.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 1);
        assert_eq!(bucket(1024), 10);
        assert_eq!(bucket(u64::MAX), HISTOGRAM_BUCKETS - 1);
    }

    #[test]
    fn charges_split_the_waiting_between_releases() {
        use std::time::Duration;
        start(0);
        let key = LockKey {
            lock: 0xdead_beef,
            site: None,
        };
        let a = begin_wait(key, None);
        let b = begin_wait(key, None);
        std::thread::sleep(Duration::from_millis(20));
        // Both waiters waited at least 20 ms: all of it is charged to this release.
        let first = released_with_waiters(key, None, 1);
        assert!(first >= 40_000_000, "{first}");
        end_wait(a, true, true, 2);
        std::thread::sleep(Duration::from_millis(10));
        // Only `b` still waits, and only since the first charge.
        let second = released_with_waiters(key, None, 2);
        assert!(second >= 10_000_000 && second < first, "{second} {first}");
        end_wait(b, false, true, 3);
        assert_eq!(released_with_waiters(key, None, 3), 0);
        let snap = snapshot();
        let lock = snap
            .locks
            .iter()
            .find(|l| l.key == Some(key))
            .expect("the lock is in the profile");
        assert_eq!((lock.contended, lock.slept, lock.spun), (2, 1, 1));
        assert_eq!(lock.charges, 2);
        assert_eq!(lock.charged_ns, first + second);
        // `a` slept and its thread (2) released it: one hold measured.
        assert_eq!(lock.hold_count, 1);
        assert_eq!(lock.histogram.iter().sum::<u64>(), 2);
        stop();
        assert!(!enabled());
    }

    #[test]
    fn stacks_intern_once() {
        let x = crate::diag::intern_site("a.py", 1, "f");
        let y = crate::diag::intern_site("a.py", 2, "g");
        let a = intern_stack(&[x, y]);
        let b = intern_stack(&[x, y]);
        let c = intern_stack(&[y]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
