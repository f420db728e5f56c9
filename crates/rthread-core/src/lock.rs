//! The binary lock behind Python's `_thread.lock`.
//!
//! Two `AtomicU32`s: the lock word, and a spin word that only tunes performance; a lock costs
//! eight bytes. The design follows the Rust standard library's futex mutex: a one-instruction
//! fast path, and a `#[cold]` slow path that spins for a while and then sleeps in the [`Wait`]
//! backend.
//!
//! Unlike a Rust `Mutex`, a Python lock has no owner: any thread may release it, and releasing an
//! unlocked lock is an error value ([`NotLocked`]), never undefined behaviour.
//!
//! # Adaptive spinning
//!
//! A handoff between two running threads takes well under a microsecond when the waiter polls
//! the lock word, and several microseconds (two system calls and a context switch, much more on
//! a virtual machine whose idle CPU has to be woken) when it sleeps. So a contended acquire first
//! spins, with a *time* budget, and only then sleeps:
//!
//! - The budget is learned per lock ([`SpinPolicy::Adaptive`]): each spinning waiter records how
//!   long it waited in the spin word, and the next one spins for about twice the recent typical
//!   wait, between [`SPIN_MIN_NS`] and [`SPIN_MAX_NS`]. A lock whose waits are usually longer
//!   than the maximum (a "thread finished" lock, a condition variable's waiter lock) is only
//!   probed for [`SPIN_MIN_NS`] before its waiters sleep, so it does not burn a CPU.
//! - At most one thread spins on a lock at a time (the `SPINNING` bit); other waiters poll
//!   briefly, as the standard library's mutex does, and sleep. On a machine with more waiters
//!   than CPUs, more spinners would take the CPU the holder needs to finish.
//! - After [`SPIN_YIELD_AFTER_NS`] the spinner calls `sched_yield` between polls, so a holder
//!   that was preempted on the spinner's CPU gets to run.
//! - The spin never outlasts the caller's deadline, and it is never interrupted by signals: only
//!   the sleep is ([`Acquire::Interrupted`]), which comes at most [`SPIN_MAX_NS`] later.
//!
//! [`SpinPolicy::Brief`] keeps the standard library's short fixed spin instead, for callers that
//! know a long spin cannot pay off.
//!
//! # Gated spinning
//!
//! Taking a lock is only worth it to a waiter that can then run. A Python thread that gets a lock
//! while it waits without the GIL still has to take the GIL from whoever runs, and that thread,
//! having just released the lock, usually wants it back at once: if the waiter took it, both
//! threads now wait for each other, and every turn of a loop becomes a GIL hand-over.
//! [`SpinPolicy::Gated`] passes a `ready` hint: while the lock is free and `ready()` is false, the
//! spinner leaves it alone (so its releaser can take it back) and keeps watching: once the lock
//! has stayed free for [`GATE_WATCH_NS`], or `ready()` turns true, it takes it, past its budget
//! if need be but never past the deadline. When the lock is taken again by someone else, the
//! spin goes on or ends as usual. A sleeper woken by a release does the same. The hint only
//! moves the moment a free lock is taken, never whether: a waiter that still sees the lock free
//! when its watch ends takes it, however wrong `ready()` is.
//!
//! # Starvation
//!
//! A releaser that wants the lock back at once (a loop that holds it across a call that lets
//! the GIL go) takes it again on the fast path long before a woken sleeper has even been
//! scheduled, so that sleeper can lose every race and wait without bound. As CPython's
//! `PyMutex` does, a sleeper that keeps finding the lock held after its wake-ups for
//! [`STARVE_NS`] (1 ms) *asks for a handoff*: it adds itself to a count of starving waiters in
//! the upper bits of the lock word (so the word is never `UNLOCKED` while it is counted, and
//! the fast path cannot take the lock). A release that sees the count does not free the lock:
//! it sets `HANDOFF` (held by nobody, reserved for the sleepers) and wakes one. The first
//! thread that has slept on the lock and then sees `HANDOFF` takes it as `CONTENDED`, taking
//! itself out of the count if it was in it; a thread that has not slept yet (the releaser
//! coming back) sleeps instead. The lock stays in this mode until the count is zero.
//!
//! Why a `HANDOFF` lock is always taken: when a release sets it, some counted waiter exists.
//! It is asleep (then the release's wake-up wakes a sleeper, and every thread that returns
//! from a sleep, woken, timed out or interrupted, takes a `HANDOFF` lock it sees), or it is
//! awake and its next compare-exchange on the word sees `HANDOFF`. A counted waiter only
//! leaves without the lock through `RawLock::leave`, which takes the lock if it was handed off
//! and otherwise takes the waiter out of the count, in one compare-exchange. Another thread's
//! release of a `HANDOFF` lock (legal in Python) waits for that taker, then releases for it:
//! it sets `RELEASER_WAITS`, passes on a wake-up (in case it took one from a waiter), and
//! sleeps; the taker sees the bit and wakes every sleeper.
//!
//! The count is never more than the number of counted waiters: [`RawLock::reinit`] may reset
//! it to zero, and a waiter only takes itself out of a non-zero count.
//!
//! # Notes about memory ordering
//!
//! - Taking the lock (the fast-path `compare_exchange`, the slow path's compare-exchanges from
//!   `UNLOCKED` or `HANDOFF`) uses `Acquire`, and releasing it (the compare-exchange to
//!   `UNLOCKED` or `HANDOFF`) uses `Release`. Marking a held lock `CONTENDED` or changing the
//!   starving count takes nothing and is `Relaxed`. This is the whole contract of a lock:
//!   everything the previous holder wrote before releasing is visible to the next holder
//!   after acquiring.
//! - Failed compare-exchanges and the spinning loads are `Relaxed`: they only decide what to try
//!   next, and every path that ends up holding the lock does so through an `Acquire` operation.
//! - Every access to the spin word is `Relaxed`. It is a hint: a stale or lost update only makes
//!   one waiter spin longer or shorter than ideal, and the `SPINNING` bit limits CPU use, not
//!   access to anything.
//! - [`RawLock::is_locked`] is a `Relaxed` snapshot: it orders nothing and may be stale by the
//!   time the caller looks at it, exactly like Python's `locked()`.
//! - [`RawLock::reinit`] uses `Release` like a release, so it is also a sound (if blunt) way to
//!   free a lock that other threads still use.

use core::fmt;
use core::marker::PhantomData;

use crate::deadline::Deadline;
// `core`'s atomics and hint and `std::thread::yield_now`, or loom's models under `cfg(loom)`.
use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::hint::spin_loop;
use crate::sync::{const_fn_unless_loom, thread};
use crate::wait::{DefaultWait, Wait, WaitResult};

/// Nobody holds the lock (the whole word is zero: no waiter is starving either).
const UNLOCKED: u32 = 0;
/// Held, and no thread is asleep waiting for it (as far as the holder knows).
const LOCKED: u32 = 1;
/// Held, and threads may be asleep in [`Wait::wait`]: the release must wake one.
const CONTENDED: u32 = 2;
/// Released to the waiters: held by nobody, taken by the next waiter that has slept (see
/// "Starvation" in the module docs). The fast path cannot take it.
const HANDOFF: u32 = 3;
/// The low bits of the lock word: one of the four states above.
const HELD_MASK: u32 = 3;
/// Set only with `HANDOFF`: a thread releasing the lock (Python lets any thread do so) waits
/// asleep for the waiter to take it; the taker wakes it.
const RELEASER_WAITS: u32 = 4;
/// The rest of the lock word counts the starving waiters, in units of this.
const STARVING_ONE: u32 = 8;
/// How long a waiter keeps losing a lock it was woken for before it asks for a handoff (as
/// CPython's `PyMutex` does after 1 ms). Under `cfg(loom)`, zero: the first lost race asks,
/// so that the models reach the handoff in few steps.
pub const STARVE_NS: u64 = if cfg!(loom) { 0 } else { 1_000_000 };

/// `SPINNING` bit of the spin word: a thread is spinning on the lock. Only that thread changes
/// the word until it clears the bit.
const SPINNING: u32 = 1 << 31;
/// The rest of the spin word: the learned estimate, in nanoseconds.
const ESTIMATE_MASK: u32 = SPINNING - 1;

/// Shortest spin budget: what a lock whose waits are long still gets, as a probe, so that a
/// lock that becomes briefly held again is noticed. About the cost of one futex system call.
pub const SPIN_MIN_NS: u32 = 2_000;
/// Longest spin budget ("tens of microseconds"): a little more than the time it takes to wake a
/// sleeping thread on an idle CPU of a virtual machine, which is what a spin saves.
pub const SPIN_MAX_NS: u32 = 50_000;
/// The estimate of a new lock: its first waiter spins this long (the estimate is the budget
/// while it is at most [`SPIN_MAX_NS`]). Many locks are waited on only once:
/// `threading.Condition` makes a fresh waiter lock for every `wait()`, so this first budget
/// decides whether a `notify` reaches a spinning or a sleeping waiter. The notifying thread
/// typically runs some microseconds of Python between the waiter's `wait()` and its
/// `notify()`; 20 µs covers that on a busy ping-pong (5 µs did not: `threading.Event`
/// ping-pong went from 0.87 to 0.48 of the built-in's time on CPython 3.11), and costs a
/// waiter that then sleeps for long only 20 µs of CPU once.
const SPIN_INITIAL_NS: u32 = 20_000;
/// Largest estimate kept. Estimates above [`SPIN_MAX_NS`] mean "waits are long here: only
/// probe"; the cap bounds how many short waits it takes to learn that they are short again.
const ESTIMATE_CAP_NS: u32 = 2 * SPIN_MAX_NS;
/// How much of the distance to a new sample the estimate moves, as a shift: 1/4.
const ESTIMATE_SHIFT: u32 = 2;
/// After spinning this long, the spinner yields its CPU between polls.
pub const SPIN_YIELD_AFTER_NS: u32 = 1_000;
/// Polls of the lock word between two reads of the clock (about 0.1-0.5 µs of `spin_loop`).
/// Fewer under `cfg(loom)`, where every poll is a scheduling point of the model.
const POLLS_PER_CLOCK_READ: u32 = if cfg!(loom) { 2 } else { 8 };
/// How long a waiter watches a free lock whose `ready()` hint stays false
/// ([`SpinPolicy::Gated`]) before it takes it anyway: a little more than a releaser typically
/// runs before it blocks in a handoff, so that a stale hint costs little.
pub const GATE_WATCH_NS: u32 = 10_000;

/// How many times [`SpinPolicy::Brief`] polls a `LOCKED` lock before going to sleep, and how
/// often every waiter polls after being woken.
///
/// The same bound as the standard library's futex mutex: a few microseconds at most. The spin
/// is bounded and stops as soon as the state is `CONTENDED` (others are already sleeping, so
/// spinning would only jump the queue). Under `cfg(loom)`, three polls: enough to reach both
/// ends of the loop, few enough to keep the model small.
const SPIN_LIMIT: u32 = if cfg!(loom) { 3 } else { 100 };

/// How a contended acquire spins before it goes to sleep.
#[derive(Clone, Copy, Debug, Default)]
pub enum SpinPolicy {
    /// Spin for a budget learned per lock, up to [`SPIN_MAX_NS`] (see the module docs). The
    /// default.
    #[default]
    Adaptive,
    /// Poll at most a hundred times (a few microseconds), like the standard library's mutex.
    Brief,
    /// [`SpinPolicy::Adaptive`], but a free lock is taken only once the function says the
    /// waiter could run with it (see "Gated spinning" in the module docs). The function is
    /// called while spinning, so it must be cheap and must not block.
    Gated(fn() -> bool),
}

impl SpinPolicy {
    /// The `ready` hint of this policy: always true unless [`SpinPolicy::Gated`].
    fn ready(self) -> fn() -> bool {
        match self {
            SpinPolicy::Gated(ready) => ready,
            SpinPolicy::Adaptive | SpinPolicy::Brief => always_ready,
        }
    }
}

/// The hint of the policies that have none.
fn always_ready() -> bool {
    true
}

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
    /// | `HANDOFF`   | 3     | released to the sleepers: the next woken one takes it |
    ///
    /// Bit 2, [`RELEASER_WAITS`], is only set with `HANDOFF`. Bits 3..32 count the starving
    /// waiters ([`STARVING_ONE`] each; see "Starvation" in the module docs); they are zero
    /// whenever the low bits are `UNLOCKED` or `LOCKED`.
    ///
    /// Transitions: `UNLOCKED -> LOCKED` (fast path, or after a spin),
    /// `UNLOCKED | LOCKED -> CONTENDED` (a thread about to sleep; if the old value was
    /// `UNLOCKED` it took the lock instead), `LOCKED | CONTENDED -> UNLOCKED` (release with no
    /// starving waiter; wakes one waiter from `CONTENDED`), `CONTENDED + n -> CONTENDED + n±1`
    /// (a sleeper asks for a handoff, or leaves without the lock), `CONTENDED + n ->
    /// HANDOFF + n` (release with starving waiters; wakes one), `HANDOFF + n -> CONTENDED + n`
    /// or `+ n-1` (a thread that has slept takes it), `HANDOFF + n -> HANDOFF + n +
    /// RELEASER_WAITS` (a release by another thread waits for the taker). A thread that took
    /// the lock after sleeping always stores `CONTENDED`, because it cannot know whether others
    /// are still asleep. Spinning never changes this word except to take the lock, so the
    /// release's "wake only from `CONTENDED` or with starving waiters" rule is untouched: a
    /// spinner is awake and needs no wake-up.
    state: AtomicU32,
    /// The spin word: how long this lock's waiters should spin. Performance only.
    ///
    /// | bits  | name         | meaning                                                    |
    /// |-------|--------------|------------------------------------------------------------|
    /// | 31    | `SPINNING`   | a thread is spinning (at most one); only it writes the word |
    /// | 0..31 | estimate     | twice the recent typical wait, in ns (EWMA, 1/4 per sample) |
    ///
    /// Transitions: `estimate -> SPINNING | estimate` (`fetch_or` by a waiter that finds the
    /// bit clear: it now spins), `SPINNING | old -> new` (that waiter, when it has the lock or
    /// gives up, stores the updated estimate, which clears the bit). A waiter that finds the bit
    /// set does not spin and does not write. [`RawLock::reinit`] resets the word; in a child
    /// after `fork()` that does not reinit the lock, a bit left by a thread that was spinning
    /// in the parent only keeps waiters from spinning.
    spin: AtomicU32,
    _wait: PhantomData<fn() -> W>,
}

/// The binary lock with the platform's default backend (futex on Linux).
pub type Lock = RawLock<DefaultWait>;

impl<W: Wait> RawLock<W> {
    const_fn_unless_loom! {
        /// A new, unlocked lock.
        pub const fn new() -> Self {
            RawLock {
                state: AtomicU32::new(UNLOCKED),
                spin: AtomicU32::new(SPIN_INITIAL_NS),
                _wait: PhantomData,
            }
        }
    }

    /// Takes the lock if it is free, without blocking or spinning. A lock seen taken costs a
    /// load, not a failed compare-exchange (a locked read-modify-write even when it fails):
    /// `acquire(False)` on a held lock is a common poll.
    #[inline]
    #[must_use]
    pub fn try_acquire(&self) -> bool {
        self.state.load(Ordering::Relaxed) == UNLOCKED && self.take_free().is_ok()
    }

    /// The one way a free lock is taken without sleeping: `UNLOCKED -> LOCKED` with `Acquire`
    /// (fast path, spin, and after the spin). On failure, returns the state seen.
    #[inline]
    fn take_free(&self) -> Result<(), u32> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| ())
    }

    /// Takes the lock, blocking until `deadline` (`None` = no limit), with the default
    /// [`SpinPolicy::Adaptive`] spin before sleeping.
    ///
    /// Returns [`Acquire::Interrupted`] only when a wait was interrupted by a signal handler, so
    /// that a caller holding Python's machinery can run the handlers and then call again with
    /// the *same* deadline. Never returns [`Acquire::TimedOut`] when `deadline` is `None`. A
    /// deadline that has already passed makes this a non-blocking attempt. A sleeper whose
    /// timeout or signal comes just as the lock is handed to it (see "Starvation" in the module
    /// docs) returns [`Acquire::Acquired`]: it holds the lock, and the caller's signal handlers
    /// run at its next check.
    #[inline]
    pub fn acquire_until(&self, deadline: Option<Deadline>) -> Acquire {
        self.acquire_until_with(deadline, SpinPolicy::Adaptive)
    }

    /// [`RawLock::acquire_until`] with an explicit [`SpinPolicy`].
    #[inline]
    pub fn acquire_until_with(&self, deadline: Option<Deadline>, policy: SpinPolicy) -> Acquire {
        if self.try_acquire() {
            Acquire::Acquired
        } else {
            self.acquire_contended(deadline, policy)
        }
    }

    /// Takes the lock, blocking as long as needed. Interruptions by signals are retried; for
    /// pure-Rust users that have no signal machinery of their own.
    pub fn acquire(&self) {
        while self.acquire_until(None) != Acquire::Acquired {}
    }

    #[cold]
    fn acquire_contended(&self, deadline: Option<Deadline>, policy: SpinPolicy) -> Acquire {
        let ready = policy.ready();
        if !matches!(policy, SpinPolicy::Brief) {
            if let Some(estimate) = self.claim_spinner() {
                return self.acquire_spinning(estimate, deadline, ready);
            }
        }
        // Brief, or another thread is already spinning, or threads are asleep.
        let state = self.spin_brief();
        self.sleep_until(state, deadline, ready)
    }

    /// The adaptive slow path of this lock's one spinner: spin for the learned budget, sleep if
    /// that was not enough, then store the updated estimate (which clears `SPINNING`).
    fn acquire_spinning(
        &self,
        estimate: u32,
        deadline: Option<Deadline>,
        ready: fn() -> bool,
    ) -> Acquire {
        let start = Deadline::now();
        let (result, waited_ns) = match self.spin_for(start, budget_ns(estimate), deadline, ready) {
            Ok(waited_ns) => (Acquire::Acquired, Some(waited_ns)),
            Err(state) => {
                let result = self.sleep_until(state, deadline, ready);
                let waited_ns = elapsed_ns(start);
                let waited_ns = match result {
                    // Overstates how long the lock stayed held by the wake-up latency, which
                    // errs towards sleeping.
                    Acquire::Acquired => Some(waited_ns),
                    // A timeout or an interruption only says "at least this long": that is
                    // news only once it is longer than any spin.
                    Acquire::TimedOut | Acquire::Interrupted => {
                        (waited_ns >= u64::from(SPIN_MAX_NS)).then_some(waited_ns)
                    }
                };
                (result, waited_ns)
            }
        };
        // Clears SPINNING. Nobody else wrote the word since `claim_spinner` (see the table on
        // `spin`).
        let estimate = waited_ns.map_or(estimate, |w| next_estimate(estimate, w));
        self.spin.store(estimate, Ordering::Relaxed);
        result
    }

    /// The sleeping half of the slow path, entered with the last state the spin saw.
    // Under loom, `STARVE_NS` is zero.
    #[cfg_attr(loom, allow(clippy::absurd_extreme_comparisons))]
    fn sleep_until(
        &self,
        mut state: u32,
        deadline: Option<Deadline>,
        ready: fn() -> bool,
    ) -> Acquire {
        // Free after the spin: take it as LOCKED, as the fast path would. Others may still be
        // asleep, but then the release that freed the lock woke one of them, and that thread
        // marks the lock CONTENDED again before it sleeps, so no wake-up is lost.
        if state == UNLOCKED {
            match self.take_free() {
                Ok(()) => return Acquire::Acquired,
                Err(s) => state = s,
            }
        }

        // A zero or past timeout is a non-blocking attempt: give up before marking the lock
        // CONTENDED, which would cost the holder a needless wake-up system call.
        if deadline.is_some_and(|d| d.has_passed()) {
            return Acquire::TimedOut;
        }

        // `woken`: this thread has returned from a sleep, so it may take a HANDOFF lock (a
        // thread that has not slept yet, such as the releaser coming back, must not).
        // `starving`: this thread is counted in the lock word. `first_miss`: when it first
        // found the lock held after a wake-up.
        let mut woken = false;
        let mut starving = false;
        let mut first_miss: Option<Deadline> = None;
        loop {
            if state == UNLOCKED {
                // Free: take it, as CONTENDED since others may be asleep too.
                match self.state.compare_exchange(
                    UNLOCKED,
                    CONTENDED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Acquire::Acquired,
                    Err(s) => {
                        state = s;
                        continue;
                    }
                }
            }
            if state & HELD_MASK == HANDOFF && woken {
                match self.take_handoff(state, starving) {
                    Ok(()) => return Acquire::Acquired,
                    Err(s) => {
                        state = s;
                        continue;
                    }
                }
            }
            // Held (or handed off to another sleeper): announce that we are going to sleep,
            // and once we have kept losing the lock for `STARVE_NS`, ask for a handoff.
            let mut next = state;
            if state & HELD_MASK == LOCKED {
                next = (state & !HELD_MASK) | CONTENDED;
            }
            let ask = woken && !starving && state & HELD_MASK != HANDOFF && {
                let now = Deadline::now();
                let first = *first_miss.get_or_insert(now);
                now.as_nanos().saturating_sub(first.as_nanos()) >= STARVE_NS
            };
            if ask {
                next += STARVING_ONE;
            }
            if next != state {
                match self
                    .state
                    .compare_exchange(state, next, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => {
                        starving |= ask;
                        state = next;
                    }
                    Err(s) => {
                        state = s;
                        continue;
                    }
                }
            }

            let result = W::wait(&self.state, state, deadline);
            woken = true;
            match result {
                WaitResult::Woken => {}
                // One last look: the lock may have just been freed or handed off.
                WaitResult::TimedOut => return self.leave(starving, Acquire::TimedOut),
                WaitResult::Interrupted => return self.leave(starving, Acquire::Interrupted),
            }

            state = self.spin_brief();
            if state == UNLOCKED && !ready() {
                state = self.watch_gate(deadline, ready);
            }
        }
    }

    /// Takes a HANDOFF lock (`state`, as last seen) as CONTENDED, leaving the count of starving
    /// waiters, minus this one if it was `starving`. On failure, returns the state seen.
    fn take_handoff(&self, state: u32, starving: bool) -> Result<(), u32> {
        let mut next = (state & !(HELD_MASK | RELEASER_WAITS)) | CONTENDED;
        if starving && next >= STARVING_ONE {
            next -= STARVING_ONE;
        }
        self.state
            .compare_exchange(state, next, Ordering::Acquire, Ordering::Relaxed)?;
        #[cfg(loom)]
        loom_paths::HANDOFFS_TAKEN.with(|n| n.set(n.get() + 1));
        if state & RELEASER_WAITS != 0 {
            // All: the releaser sleeps among the waiters. The waiters look and sleep again.
            W::wake_all(&self.state);
        }
        Ok(())
    }

    /// A sleeper gives up (`result`: its deadline passed, or a signal came). A HANDOFF lock
    /// is taken all the same: the release that made it may have woken this very thread, and
    /// then nobody else would come for it. After a timeout, a free lock is taken too (LOCKED
    /// is fine, as in [`Self::sleep_until`]). Otherwise a starving waiter takes itself out
    /// of the count, so that no release hands the lock to a waiter that has left.
    #[cold]
    fn leave(&self, starving: bool, result: Acquire) -> Acquire {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            let attempt = if state & HELD_MASK == HANDOFF {
                self.take_handoff(state, starving)
            } else if state == UNLOCKED && result == Acquire::TimedOut {
                self.take_free()
            } else if starving && state >= STARVING_ONE {
                match self.state.compare_exchange(
                    state,
                    state - STARVING_ONE,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return result,
                    Err(s) => {
                        state = s;
                        continue;
                    }
                }
            } else {
                // Not counted (or the count was reset by `reinit`).
                return result;
            };
            match attempt {
                Ok(()) => return Acquire::Acquired,
                Err(s) => state = s,
            }
        }
    }

    /// A waiter (spinning, or woken from sleep) found the lock free but `ready()` false: watch for
    /// up to [`GATE_WATCH_NS`] (and never past the deadline) until the hint turns true or someone
    /// else takes the lock. Returns the state seen last; the caller takes the lock if it is free.
    #[cold]
    fn watch_gate(&self, deadline: Option<Deadline>, ready: fn() -> bool) -> u32 {
        let start = Deadline::now();
        let watch_end = Deadline::from_nanos(start.as_nanos().saturating_add(GATE_WATCH_NS.into()));
        let end = deadline.map_or(watch_end, |d| d.min(watch_end));
        let mut polls: u32 = 0;
        loop {
            let state = self.state.load(Ordering::Relaxed);
            if state != UNLOCKED || ready() {
                return state;
            }
            polls = polls.wrapping_add(1);
            if polls % POLLS_PER_CLOCK_READ == 0 {
                if Deadline::now() >= end {
                    return state;
                }
                thread::yield_now();
            }
            spin_loop();
        }
    }

    /// Polls while the lock is `LOCKED` (held, nobody asleep), at most [`SPIN_LIMIT`] times.
    /// Returns the last state seen.
    fn spin_brief(&self) -> u32 {
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

    /// Becomes this lock's spinner and returns its estimate, unless another thread already
    /// spins.
    ///
    /// A `CONTENDED` lock is spun on too. That state is often stale: a thread that took the
    /// lock after sleeping marks it `CONTENDED` although it was the only sleeper, and in a
    /// handoff that thread is the next waiter. Refusing to spin would make every later wait
    /// sleep as well; spinning through it takes the lock as `LOCKED` and ends the cycle.
    fn claim_spinner(&self) -> Option<u32> {
        let old = self.spin.fetch_or(SPINNING, Ordering::Relaxed);
        (old & SPINNING == 0).then_some(old & ESTIMATE_MASK)
    }

    /// Spins from `start` for up to `budget_ns`, taking the lock as soon as it is free and
    /// `ready()`, or once [`Self::watch_gate`] has watched it stay free (see "Gated spinning").
    ///
    /// `Ok(waited_ns)`: the caller holds the lock, after about `waited_ns` (as of the last
    /// clock read, so up to [`POLLS_PER_CLOCK_READ`] polls early). `Err(state)`: the budget or
    /// the deadline ran out; `state` is the last state seen, for [`Self::sleep_until`].
    ///
    /// Taking the lock as `LOCKED` here is right even if threads are asleep on it, for the
    /// reason given in [`Self::sleep_until`]: the release that freed it woke one of them.
    fn spin_for(
        &self,
        start: Deadline,
        budget_ns: u32,
        deadline: Option<Deadline>,
        ready: fn() -> bool,
    ) -> Result<u64, u32> {
        let budget_end = Deadline::from_nanos(start.as_nanos().saturating_add(budget_ns.into()));
        let end = deadline.map_or(budget_end, |d| d.min(budget_end));
        let yield_after = start.as_nanos().saturating_add(SPIN_YIELD_AFTER_NS.into());
        let mut now = start;
        let mut polls: u32 = 0;
        loop {
            let mut state = self.state.load(Ordering::Relaxed);
            if state == UNLOCKED && !ready() {
                // Past the budget if need be: the lock is free, only not yet worth taking.
                state = self.watch_gate(deadline, ready);
                now = Deadline::now();
            }
            if state == UNLOCKED {
                match self.take_free() {
                    Ok(()) => return Ok(now.as_nanos().saturating_sub(start.as_nanos())),
                    Err(s) => state = s,
                }
            }
            // The first round uses `start`, so a deadline that has already passed ends the
            // spin after one look at the lock.
            if polls % POLLS_PER_CLOCK_READ == 0 {
                if polls != 0 {
                    now = Deadline::now();
                }
                if now >= end {
                    return Err(state);
                }
                if now.as_nanos() >= yield_after {
                    thread::yield_now();
                }
            }
            polls = polls.wrapping_add(1);
            spin_loop();
        }
    }

    /// Releases the lock. Any thread may release it, as with Python locks.
    ///
    /// # Errors
    ///
    /// [`NotLocked`] if the lock was not locked; it is left unlocked.
    #[inline]
    pub fn release(&self) -> Result<(), NotLocked> {
        match self
            .state
            .compare_exchange(LOCKED, UNLOCKED, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            Err(state) => self.release_slow(state).map(|_| ()),
        }
    }

    /// [`RawLock::release`] that also says whether it woke a sleeping waiter (`Ok(true)`: the
    /// lock was `CONTENDED`, or was handed off), for profilers that charge a release with the
    /// wait it caused. The uncontended path is the same single compare-exchange as `release`.
    ///
    /// # Errors
    ///
    /// [`NotLocked`] if the lock was not locked; it is left unlocked.
    #[inline]
    pub fn release_woke(&self) -> Result<bool, NotLocked> {
        match self
            .state
            .compare_exchange(LOCKED, UNLOCKED, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Ok(false),
            Err(state) => self.release_slow(state),
        }
    }

    /// Releases the lock if it is simply LOCKED (held, nobody waiting or handed off) and
    /// returns true; otherwise changes nothing and returns false (then call
    /// [`RawLock::release_woke`] or [`RawLock::release`]). The uncontended release, for a
    /// caller that wants its common case free of calls.
    #[inline(always)]
    pub fn try_release(&self) -> bool {
        self.state
            .compare_exchange(LOCKED, UNLOCKED, Ordering::Release, Ordering::Relaxed)
            .is_ok()
    }

    /// The release of a lock that was not simply LOCKED (`state`, as last seen): unlocked (an
    /// error), CONTENDED (free it and wake one sleeper), with starving waiters (hand it off
    /// and wake one), or handed off but not taken yet.
    #[cold]
    fn release_slow(&self, mut state: u32) -> Result<bool, NotLocked> {
        loop {
            let (next, wake) = match state & HELD_MASK {
                UNLOCKED => return Err(NotLocked),
                // Handed off by an earlier release, and this is a release by another thread
                // (Python allows it) before a waiter took it: let the waiter take it, then
                // release it for them. A waiter is bound to come (see "Starvation"); sleep
                // until it has, with RELEASER_WAITS set so that it wakes us. The wake-up
                // first passes on one that this thread may have taken from a waiter while
                // it slept here (a waiter that is awake does not need it).
                HANDOFF => {
                    #[cfg(loom)]
                    loom_paths::RELEASES_AFTER_HANDOFF.with(|n| n.set(n.get() + 1));
                    if state & RELEASER_WAITS == 0 {
                        if let Err(s) = self.state.compare_exchange(
                            state,
                            state | RELEASER_WAITS,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        ) {
                            state = s;
                            continue;
                        }
                        state |= RELEASER_WAITS;
                    }
                    W::wake_one(&self.state);
                    // Whatever the result: look again.
                    let _ = W::wait(&self.state, state, None);
                    state = self.state.load(Ordering::Relaxed);
                    continue;
                }
                // Starving waiters: the lock stays held, for the next waiter that wakes.
                _ if state >= STARVING_ONE => ((state & !HELD_MASK) | HANDOFF, true),
                // Waking one waiter is enough: the woken thread takes the lock as CONTENDED,
                // so its own release will wake the next sleeper. Waking more would only make
                // them fight over the lock and go back to sleep.
                CONTENDED => (UNLOCKED, true),
                _ => (UNLOCKED, false),
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => {
                    if wake {
                        W::wake_one(&self.state);
                    }
                    return Ok(wake);
                }
                Err(s) => state = s,
            }
        }
    }

    /// The word this lock's sleepers wait on, for code that must wake them so that they look
    /// at something else (a cancelled wait: [`crate::diag::WaitGuard::armed`]). Waking it is
    /// always harmless (a woken sleeper that still finds the lock held sleeps again); storing
    /// to it breaks the lock.
    #[inline]
    #[must_use]
    pub fn wake_word(&self) -> &AtomicU32 {
        &self.state
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
        // A thread that was spinning at fork time does not exist in the child: clear its bit.
        self.spin.store(SPIN_INITIAL_NS, Ordering::Relaxed);
        // Sleepers may exist unless the lock was free or simply LOCKED. Starving waiters that
        // are still counted take themselves out of a count that is now zero, which is a no-op.
        if self.state.swap(UNLOCKED, Ordering::Release) > LOCKED {
            W::wake_all(&self.state);
        }
    }
}

/// What the loom models read to tell which paths of the lock a thread took.
#[cfg(loom)]
pub mod loom_paths {
    loom::thread_local! {
        pub(super) static HANDOFFS_TAKEN: core::cell::Cell<u32> = core::cell::Cell::new(0);
        pub(super) static RELEASES_AFTER_HANDOFF: core::cell::Cell<u32> = core::cell::Cell::new(0);
    }

    /// How many of the calling thread's releases found the lock handed off and waited for the
    /// taker.
    pub fn releases_after_handoff() -> u32 {
        RELEASES_AFTER_HANDOFF.with(core::cell::Cell::get)
    }

    /// How many handed-off locks the calling thread has taken.
    pub fn handoffs_taken() -> u32 {
        HANDOFFS_TAKEN.with(core::cell::Cell::get)
    }

    /// Whether the lock word says "handed off, not taken yet" (a racy snapshot).
    pub fn is_handed_off<W: crate::wait::Wait>(lock: &super::RawLock<W>) -> bool {
        lock.state.load(crate::sync::atomic::Ordering::Relaxed) & super::HELD_MASK == super::HANDOFF
    }
}

/// How long to spin for a given estimate: the estimate itself, at least [`SPIN_MIN_NS`]; only
/// the minimum once the estimate says waits are longer than [`SPIN_MAX_NS`].
fn budget_ns(estimate: u32) -> u32 {
    if estimate > SPIN_MAX_NS {
        SPIN_MIN_NS
    } else {
        estimate.max(SPIN_MIN_NS)
    }
}

/// The estimate after a wait of `waited_ns`: a quarter of the way towards twice the wait
/// (capped at [`ESTIMATE_CAP_NS`]), so one unusual wait moves the budget only a little.
fn next_estimate(estimate: u32, waited_ns: u64) -> u32 {
    let target = i64::from(ESTIMATE_CAP_NS)
        .min(i64::try_from(waited_ns.saturating_mul(2)).unwrap_or(i64::MAX));
    let estimate = i64::from(estimate.min(ESTIMATE_CAP_NS));
    let next = estimate + ((target - estimate) >> ESTIMATE_SHIFT);
    // Between two values in 0..=ESTIMATE_CAP_NS, so it fits and leaves SPINNING clear.
    u32::try_from(next).unwrap_or(ESTIMATE_CAP_NS)
}

/// Nanoseconds since `start`.
fn elapsed_ns(start: Deadline) -> u64 {
    Deadline::now().as_nanos().saturating_sub(start.as_nanos())
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

#[cfg(all(test, not(loom)))]
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

    fn spin_word<W: Wait>(lock: &RawLock<W>) -> u32 {
        lock.spin.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until `cond` holds; false if it never did.
    fn eventually(mut cond: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while !cond() {
            if start.elapsed() > Duration::from_secs(10) {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    /// A deadline shorter than the spin budget ends the spin: the waiter times out without
    /// ever sleeping (the lock never becomes CONTENDED), on time, and leaves SPINNING clear.
    fn deadline_respected_while_spinning<W: Wait>() {
        let lock = RawLock::<W>::new();
        lock.acquire();
        assert!(budget_ns(spin_word(&lock)) >= SPIN_INITIAL_NS);
        for timeout_us in [1, 2, u64::from(SPIN_INITIAL_NS) / 2_000] {
            let timeout = Duration::from_micros(timeout_us);
            let start = Instant::now();
            let r = lock.acquire_until(Some(Deadline::after(timeout)));
            let elapsed = start.elapsed();
            assert_eq!(r, Acquire::TimedOut);
            assert!(elapsed >= timeout, "{elapsed:?}");
            assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
            assert_eq!(
                state(&lock),
                LOCKED,
                "slept although the deadline was in the spin"
            );
            assert_eq!(spin_word(&lock) & SPINNING, 0);
        }
        lock.release().unwrap();
    }

    /// Waits that outlast the longest spin teach the lock to only probe (the way back is
    /// `estimate_recovers_from_long_waits`: short waits depend on the machine's load), and
    /// every exit from the slow path clears SPINNING.
    fn learns_from_waits<W: Wait + 'static>() {
        let lock = Arc::new(RawLock::<W>::new());
        // Long holds: the waiter spins, sleeps, and is woken after >= 5 ms. Three such waits
        // are enough; more rounds are allowed because a waiter preempted between setting
        // SPINNING and reading the clock sees a short wait.
        for _ in 0..10 {
            if spin_word(&lock) > SPIN_MAX_NS {
                break;
            }
            lock.acquire();
            let l2 = Arc::clone(&lock);
            let t = std::thread::spawn(move || {
                assert_eq!(
                    l2.acquire_until(Some(Deadline::after(Duration::from_secs(10)))),
                    Acquire::Acquired
                );
                l2.release().unwrap();
            });
            // SPINNING set: the waiter is about to start its clock.
            assert!(eventually(|| spin_word(&lock) & SPINNING != 0));
            std::thread::sleep(Duration::from_millis(5));
            lock.release().unwrap();
            t.join().unwrap();
            assert_eq!(spin_word(&lock) & SPINNING, 0);
        }
        assert!(spin_word(&lock) > SPIN_MAX_NS, "{}", spin_word(&lock));
        assert_eq!(budget_ns(spin_word(&lock)), SPIN_MIN_NS);
    }

    /// While one thread holds SPINNING, other waiters do not spin: they sleep (CONTENDED) at
    /// once, do not touch the spin word, and are still woken by the release.
    fn one_spinner_at_a_time<W: Wait + 'static>() {
        let lock = Arc::new(RawLock::<W>::new());
        let claimed = SPINNING | 12_345;
        lock.spin.store(claimed, Ordering::Relaxed);
        lock.acquire();
        let l2 = Arc::clone(&lock);
        let t = std::thread::spawn(move || {
            let r = l2.acquire_until(Some(Deadline::after(Duration::from_secs(10))));
            assert_eq!(r, Acquire::Acquired);
            l2.release().unwrap();
        });
        assert!(eventually(|| state(&lock) == CONTENDED));
        lock.release().unwrap();
        t.join().unwrap();
        assert_eq!(spin_word(&lock), claimed);
        assert_eq!(state(&lock), UNLOCKED);
    }

    /// Handoffs timed around the spin budget (released during the spin, at its end, and after
    /// the waiter has gone to sleep) under both policies: every waiter gets the lock well
    /// before its deadline, so no wake-up is lost between spinning and sleeping.
    fn no_lost_wakeups<W: Wait + 'static>(policy: SpinPolicy) {
        const ROUNDS: u32 = 300;
        let lock = Arc::new(RawLock::<W>::new());
        let turn = Arc::new(AtomicU32::new(0));
        lock.acquire();
        let (l2, turn2) = (Arc::clone(&lock), Arc::clone(&turn));
        let t = std::thread::spawn(move || {
            for i in 0..ROUNDS {
                let r =
                    l2.acquire_until_with(Some(Deadline::after(Duration::from_secs(10))), policy);
                assert_eq!(r, Acquire::Acquired, "round {i}");
                turn2.store(i + 1, Ordering::Release);
            }
        });
        for i in 0..ROUNDS {
            // Hold for 0 to ~80 µs: inside, at the edge of, and beyond the spin.
            let hold = Duration::from_micros(u64::from(i % 9) * 10);
            let start = Instant::now();
            while start.elapsed() < hold {
                spin_loop();
            }
            lock.release().unwrap();
            assert!(
                eventually(|| turn.load(Ordering::Acquire) == i + 1),
                "round {i}"
            );
        }
        t.join().unwrap();
        lock.release().unwrap();
        assert_eq!(spin_word(&lock) & SPINNING, 0);
    }

    /// Many threads, both policies mixed, timed and untimed: exclusion holds, no waiter is
    /// stranded, and the spin word ends clear.
    fn mixed_policies_exclusion<W: Wait + 'static>() {
        const THREADS: u32 = 4;
        const ROUNDS: u32 = 3_000;
        let lock = Arc::new(RawLock::<W>::new());
        let counter = Arc::new(AtomicU32::new(0));
        let handles: Vec<_> = (0..THREADS)
            .map(|k| {
                let (lock, counter) = (Arc::clone(&lock), Arc::clone(&counter));
                std::thread::spawn(move || {
                    let policy = match k {
                        0 => SpinPolicy::Adaptive,
                        1 => SpinPolicy::Brief,
                        2 => SpinPolicy::Gated(ready_sometimes),
                        _ => SpinPolicy::Gated(ready_never::<2>),
                    };
                    for _ in 0..ROUNDS {
                        let deadline = (k >= 2).then(|| Deadline::after(Duration::from_secs(10)));
                        assert_eq!(lock.acquire_until_with(deadline, policy), Acquire::Acquired);
                        // A plain read-modify-write: only the lock keeps it exact.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                        lock.release().unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), THREADS * ROUNDS);
        assert_eq!(state(&lock), UNLOCKED);
        assert_eq!(spin_word(&lock) & SPINNING, 0);
    }

    /// Call counters of the `ready` hints of the gated tests. The declining test reads
    /// counter 0 (futex) or 1 (fallback) and no other test uses those, since tests run in
    /// parallel; counter 2 is shared and never read.
    static READY_CALLS: [AtomicU32; 3] = [const { AtomicU32::new(0) }; 3];

    /// Never ready; counts its calls.
    fn ready_never<const ID: usize>() -> bool {
        READY_CALLS[ID].fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Ready on every third call.
    fn ready_sometimes() -> bool {
        static CALLS: AtomicU32 = AtomicU32::new(0);
        CALLS.fetch_add(1, Ordering::Relaxed) % 3 == 0
    }

    /// A gated waiter that finds the lock free while `ready()` is false leaves it alone and asks
    /// again (more than one call of `ready()`), yet still takes the lock in the end, both when
    /// the release comes during its spin and when it had gone to sleep.
    fn gated_waiter_declines_then_takes<W: Wait + 'static, const ID: usize>() {
        // Waiters that sleep longer than this were not woken by our release.
        const HOLD_TO_SLEEP: Duration = Duration::from_millis(5);
        let calls = &READY_CALLS[ID];
        let mut declined = [false; 2];
        for round in 0..20 {
            let asleep = round % 2 == 1;
            let lock = Arc::new(RawLock::<W>::new());
            lock.acquire();
            calls.store(0, Ordering::Relaxed);
            let l2 = Arc::clone(&lock);
            let t = std::thread::spawn(move || {
                let policy = SpinPolicy::Gated(ready_never::<ID>);
                let r =
                    l2.acquire_until_with(Some(Deadline::after(Duration::from_secs(10))), policy);
                assert_eq!(r, Acquire::Acquired);
                l2.release().unwrap();
            });
            if asleep {
                assert!(eventually(|| state(&lock) == CONTENDED));
                std::thread::sleep(HOLD_TO_SLEEP);
            } else {
                assert!(eventually(|| spin_word(&lock) & SPINNING != 0));
            }
            // `ready()` is only asked while the lock is free.
            assert_eq!(calls.load(Ordering::Relaxed), 0);
            lock.release().unwrap();
            t.join().unwrap();
            // One call and a take would be an ungated waiter; a waiter preempted for the whole
            // watch may legitimately call once, hence several rounds.
            declined[usize::from(asleep)] |= calls.load(Ordering::Relaxed) >= 2;
            assert_eq!(state(&lock), UNLOCKED);
            assert_eq!(spin_word(&lock) & SPINNING, 0);
        }
        assert_eq!(declined, [true, true], "[while spinning, after sleeping]");
    }

    /// The starvation pattern: the holder releases and takes the lock straight back while a
    /// waiter sleeps. After losing races for `STARVE_NS` the waiter is counted in the lock
    /// word, and the next release hands the lock to it: a `try_acquire` right after that
    /// release fails, and the waiter has the lock. (A round in which the waiter wins a race on
    /// its own proves nothing, hence up to twenty rounds until one hands off.)
    fn starving_waiter_is_handed_the_lock<W: Wait + 'static>() {
        let mut handed = 0;
        // Each round is a race the waiter may win before it ever starves (on a busy machine, or
        // with the fallback backend's wake-ups, it can win many in a row): try rounds for up to
        // 10 s until one hands the lock off.
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if handed > 0 {
                break;
            }
            let lock = Arc::new(RawLock::<W>::new());
            // 0: waiting, 1: the waiter has the lock, 2: the waiter may release it.
            let phase = Arc::new(AtomicU32::new(0));
            lock.acquire();
            let (l2, p2) = (Arc::clone(&lock), Arc::clone(&phase));
            let t = std::thread::spawn(move || {
                let r = l2.acquire_until(Some(Deadline::after(Duration::from_secs(10))));
                assert_eq!(r, Acquire::Acquired);
                p2.store(1, Ordering::Release);
                assert!(eventually(|| p2.load(Ordering::Acquire) == 2));
                l2.release().unwrap();
            });
            'round: loop {
                // The waiter is asleep (or about to be), or it won a race.
                assert!(eventually(|| {
                    state(&lock) & HELD_MASK == CONTENDED || phase.load(Ordering::Acquire) == 1
                }));
                // Asleep for real, not still polling, so that it does not win the next race.
                std::thread::sleep(Duration::from_micros(200));
                if phase.load(Ordering::Acquire) == 1 {
                    break 'round;
                }
                if state(&lock) >= STARVING_ONE {
                    lock.release().unwrap();
                    assert!(
                        !lock.try_acquire(),
                        "a starving waiter's lock was free to take"
                    );
                    assert!(eventually(|| phase.load(Ordering::Acquire) == 1));
                    handed += 1;
                    break 'round;
                }
                lock.release().unwrap();
                // Straight back, unless the waiter took it.
                while !lock.try_acquire() {
                    if phase.load(Ordering::Acquire) == 1 {
                        break 'round;
                    }
                    std::hint::spin_loop();
                }
            }
            phase.store(2, Ordering::Release);
            t.join().unwrap();
            assert_eq!(state(&lock), UNLOCKED);
            assert!(lock.try_acquire());
            lock.release().unwrap();
        }
        assert!(handed > 0, "no round handed the lock off");
    }

    macro_rules! lock_tests {
        ($modname:ident, $backend:ty, $id:literal) => {
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
                #[test]
                fn deadline_respected_while_spinning() {
                    super::deadline_respected_while_spinning::<$backend>();
                }
                #[test]
                fn learns_from_waits() {
                    super::learns_from_waits::<$backend>();
                }
                #[test]
                fn one_spinner_at_a_time() {
                    super::one_spinner_at_a_time::<$backend>();
                }
                #[test]
                fn no_lost_wakeups_adaptive() {
                    super::no_lost_wakeups::<$backend>(super::SpinPolicy::Adaptive);
                }
                #[test]
                fn no_lost_wakeups_brief() {
                    super::no_lost_wakeups::<$backend>(super::SpinPolicy::Brief);
                }
                #[test]
                fn mixed_policies_exclusion() {
                    super::mixed_policies_exclusion::<$backend>();
                }
                #[test]
                fn no_lost_wakeups_gated() {
                    super::no_lost_wakeups::<$backend>(super::SpinPolicy::Gated(
                        super::ready_never::<2>,
                    ));
                }
                #[test]
                fn starving_waiter_is_handed_the_lock() {
                    super::starving_waiter_is_handed_the_lock::<$backend>();
                }
                #[test]
                fn gated_waiter_declines_then_takes() {
                    super::gated_waiter_declines_then_takes::<$backend, $id>();
                }
            }
        };
    }

    #[cfg(target_os = "linux")]
    lock_tests!(futex, crate::wait::Futex, 0);
    lock_tests!(fallback, crate::wait::Fallback, 1);

    #[test]
    fn eight_bytes() {
        assert_eq!(core::mem::size_of::<Lock>(), 8);
        assert_eq!(core::mem::size_of::<RawLock<Fallback>>(), 8);
        assert_eq!(core::mem::align_of::<Lock>(), 4);
    }

    #[test]
    fn estimate_moves_a_quarter_towards_twice_the_wait() {
        assert_eq!(next_estimate(20_000, 10_000), 20_000);
        assert_eq!(next_estimate(20_000, 0), 15_000);
        assert_eq!(next_estimate(20_000, 30_000), 30_000);
        // Long waits are capped, so SPINNING is never set by an estimate.
        assert_eq!(next_estimate(ESTIMATE_CAP_NS, u64::MAX), ESTIMATE_CAP_NS);
        assert_eq!(
            next_estimate(u32::MAX, 0),
            ESTIMATE_CAP_NS - ESTIMATE_CAP_NS / 4
        );
        let mut e = 20_000;
        for _ in 0..50 {
            e = next_estimate(e, 3_000);
        }
        assert!((6_000..6_100).contains(&e), "{e}");
    }

    #[test]
    fn estimate_recovers_from_long_waits() {
        let mut e = ESTIMATE_CAP_NS;
        let mut rounds = 0;
        while budget_ns(e) == SPIN_MIN_NS {
            e = next_estimate(e, 5_000);
            rounds += 1;
        }
        // Three 5 µs waits (each overstated by a wake-up) and the lock spins again.
        assert_eq!(rounds, 3);
        assert!(budget_ns(e) > 40_000, "{e}");
    }

    #[test]
    fn budget_bounds() {
        assert_eq!(budget_ns(0), SPIN_MIN_NS);
        assert_eq!(budget_ns(SPIN_INITIAL_NS), SPIN_INITIAL_NS);
        assert_eq!(budget_ns(SPIN_MAX_NS), SPIN_MAX_NS);
        assert_eq!(budget_ns(SPIN_MAX_NS + 1), SPIN_MIN_NS);
        assert_eq!(budget_ns(ESTIMATE_CAP_NS), SPIN_MIN_NS);
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
