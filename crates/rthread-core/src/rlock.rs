//! The reentrant lock behind Python's `_thread.RLock`.
//!
//! A [`RawLock`] plus the owner's thread ident and a recursion count, after `lock_api`'s
//! `ReentrantMutex`. Callers pass their own ident (`me`, non-zero) so that the Python binding can
//! use exactly CPython's `get_ident()`; [`crate::thread::current_ident`] returns the same value.
//!
//! Idents are only unique among *live* threads: like CPython, a thread that ends while owning an
//! `RLock` leaves it owned by an ident that a later thread may receive, and that thread is then
//! taken for the owner.
//!
//! # Notes about memory ordering
//!
//! `owner` and `count` are only written by the thread holding the inner lock, so the inner
//! lock's `Acquire`/`Release` orders every write to them between successive holders, and all
//! their accesses are `Relaxed`.
//!
//! The one read that happens without holding the inner lock is the "do I own it?" check,
//! `owner == me`. It is exact even though `Relaxed`: only the thread `me` ever stores `me`, and
//! a thread always sees its own latest store, so it reads `me` if and only if it stored `me`
//! and has not cleared it since, i.e. iff it holds the lock. Any other value it may read (stale
//! or not) is not `me`, which is the right answer too.
//!
//! [`RawRLock::owner`] and [`RawRLock::count`] read from other threads are racy snapshots (fine
//! for a `repr`), and the two values may come from different moments.

use core::fmt;

use crate::deadline::Deadline;
use crate::lock::{Acquire, RawLock, SpinPolicy};
// `core`'s atomics, or loom's under `cfg(loom)`.
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::sync::const_fn_unless_loom;
use crate::wait::{DefaultWait, Wait};

/// Error returned when a thread releases an `RLock` it does not hold (Python: "cannot release
/// un-acquired lock").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NotOwner;

impl fmt::Display for NotOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot release un-acquired lock")
    }
}

impl std::error::Error for NotOwner {}

/// A reentrant lock, generic over the [`Wait`] backend. Most code wants the [`RLock`] alias.
///
/// State, as seen by the owner (other threads may see older values):
///
/// | `lock`   | `owner` | `count` | meaning                                   |
/// |----------|---------|---------|-------------------------------------------|
/// | unlocked | 0       | 0       | free                                      |
/// | locked   | `t`     | `n > 0` | held by thread `t`, acquired `n` times    |
///
/// The only other states are transient (inside `acquire`/`release` of the owner), or made by
/// [`RawRLock::acquire_restore_until`] with a count of 0, which CPython also allows.
///
/// The count is a `u64`. Overflowing it would take 2^64 nested acquisitions (centuries at one
/// per nanosecond), so it cannot happen in practice; re-entry still checks, and panics rather
/// than wrap if it ever did.
pub struct RawRLock<W: Wait = DefaultWait> {
    lock: RawLock<W>,
    /// Ident of the owning thread; 0 = nobody.
    owner: AtomicU64,
    /// Recursion depth; only written by the owner (while it holds `lock`).
    count: AtomicU64,
}

/// The reentrant lock with the platform's default backend (futex on Linux).
pub type RLock = RawRLock<DefaultWait>;

impl<W: Wait> RawRLock<W> {
    const_fn_unless_loom! {
        /// A new, unowned lock.
        pub const fn new() -> Self {
            RawRLock {
                lock: RawLock::new(),
                owner: AtomicU64::new(0),
                count: AtomicU64::new(0),
            }
        }
    }

    /// Re-entry by the owner: one more level.
    ///
    /// The count is a `u64`: overflowing it takes 2^64 nested acquisitions, centuries at one per
    /// nanosecond, so it is impossible in practice. It is still checked, and panics rather than
    /// wrapping to an inconsistent state (so the public acquire methods document no panics).
    fn reenter(&self) {
        let count = self.count.load(Ordering::Relaxed);
        let count = count
            .checked_add(1)
            .expect("RLock recursion count overflow");
        self.count.store(count, Ordering::Relaxed);
    }

    /// Records `me` as the owner of the freshly taken inner lock.
    fn set_owned(&self, owner: u64, count: u64) {
        self.owner.store(owner, Ordering::Relaxed);
        self.count.store(count, Ordering::Relaxed);
    }

    /// Takes the inner lock if it is free, with `me` as the owner at a count of 1.
    #[inline(always)]
    fn try_take_free(&self, me: u64) -> bool {
        if self.lock.try_acquire() {
            self.set_owned(me, 1);
            true
        } else {
            false
        }
    }

    /// Takes the lock if it is free or already held by `me` (then the count goes up by one);
    /// never blocks. `me` is the caller's non-zero thread ident.
    #[must_use]
    pub fn try_acquire(&self, me: u64) -> bool {
        debug_assert_ne!(me, 0, "thread idents are non-zero");
        if self.owner.load(Ordering::Relaxed) == me {
            self.reenter();
            return true;
        }
        self.try_take_free(me)
    }

    /// [`RawRLock::try_acquire`] in its common cases only, for callers that want them free of
    /// calls: a free lock is taken, or `me`, owning it with a count of at least 1 and below
    /// `u64::MAX - 1`, goes one level deeper. False, with nothing changed, in every other case
    /// (held by another thread; a count of 0 after [`RawRLock::acquire_restore_until`]; a count
    /// at its top): then use the general calls.
    #[inline(always)]
    #[must_use]
    pub fn try_acquire_common(&self, me: u64) -> bool {
        if self.owner.load(Ordering::Relaxed) == me {
            let count = self.count.load(Ordering::Relaxed);
            if count == 0 || count >= u64::MAX - 1 {
                return false;
            }
            self.count.store(count + 1, Ordering::Relaxed);
            return true;
        }
        self.try_take_free(me)
    }

    /// [`RawRLock::release`] in its common cases only: `me` owns the lock with a count above 1
    /// (one level less), or of exactly 1 and nobody waits for the inner lock (released). False,
    /// with nothing changed, in every other case (not the owner, a count of 0, waiters to wake):
    /// then use [`RawRLock::release`] or [`RawRLock::release_then`].
    #[inline(always)]
    #[must_use]
    pub fn try_release_common(&self, me: u64) -> bool {
        if self.owner.load(Ordering::Relaxed) != me {
            return false;
        }
        match self.count.load(Ordering::Relaxed) {
            0 => false,
            1 => {
                // Ownership goes before the inner lock (once that is free another thread may
                // take it and record itself); nobody else can take it in between.
                self.set_owned(0, 0);
                if self.lock.try_release() {
                    true
                } else {
                    // Waiters (or a hand-off) to deal with: undo, for the general release.
                    self.set_owned(me, 1);
                    false
                }
            }
            n => {
                self.count.store(n - 1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Takes the lock, blocking until `deadline` (`None` = no limit) unless `me` already owns
    /// it. Same [`Acquire::Interrupted`] contract as [`RawLock::acquire_until`].
    pub fn acquire_until(&self, me: u64, deadline: Option<Deadline>) -> Acquire {
        self.acquire_until_with(me, deadline, SpinPolicy::Adaptive)
    }

    /// [`RawRLock::acquire_until`] with an explicit [`SpinPolicy`] for the inner lock.
    pub fn acquire_until_with(
        &self,
        me: u64,
        deadline: Option<Deadline>,
        policy: SpinPolicy,
    ) -> Acquire {
        debug_assert_ne!(me, 0, "thread idents are non-zero");
        if self.owner.load(Ordering::Relaxed) == me {
            self.reenter();
            return Acquire::Acquired;
        }
        let r = self.lock.acquire_until_with(deadline, policy);
        if r == Acquire::Acquired {
            self.set_owned(me, 1);
        }
        r
    }

    /// Takes the lock, blocking as long as needed and retrying after signals.
    pub fn acquire(&self, me: u64) {
        while self.acquire_until(me, None) != Acquire::Acquired {}
    }

    /// Releases one level; the last one frees the lock.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] if `me` does not hold the lock; nothing changes then.
    pub fn release(&self, me: u64) -> Result<(), NotOwner> {
        if self.owner.load(Ordering::Relaxed) != me {
            return Err(NotOwner);
        }
        // We own it, so `count` is ours to read and write.
        match self.count.load(Ordering::Relaxed) {
            // Only reachable with `me == 0` on a free lock, or after a restore with count 0.
            0 => Err(NotOwner),
            1 => {
                self.set_owned(0, 0);
                self.release_inner();
                Ok(())
            }
            n => {
                self.count.store(n - 1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// [`RawRLock::release`] that calls `woke` when the last level's release woke a sleeping
    /// waiter of the inner lock ([`RawLock::release_woke`]), for profilers that charge a
    /// release with the wait it caused. `woke` runs after the wake-up, outside every fast path.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] if `me` does not hold the lock; nothing changes then.
    #[inline]
    pub fn release_then(&self, me: u64, woke: impl FnOnce()) -> Result<(), NotOwner> {
        if self.owner.load(Ordering::Relaxed) != me {
            return Err(NotOwner);
        }
        match self.count.load(Ordering::Relaxed) {
            0 => Err(NotOwner),
            1 => {
                self.set_owned(0, 0);
                if let Ok(true) = self.lock.release_woke() {
                    woke();
                }
                Ok(())
            }
            n => {
                self.count.store(n - 1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn release_inner(&self) {
        let r = self.lock.release();
        // Cannot fail unless `reinit` ran concurrently with the owner, which Python code can only
        // do on purpose; there is nothing useful to report then.
        debug_assert!(r.is_ok(), "RLock inner lock was not locked");
    }

    /// Whether `me` holds the lock (Python's `_is_owned`).
    #[must_use]
    pub fn is_owned(&self, me: u64) -> bool {
        self.owner.load(Ordering::Relaxed) == me && self.count.load(Ordering::Relaxed) > 0
    }

    /// Whether some thread holds the lock (Python 3.14's `RLock.locked()`). Unlike
    /// `count() > 0`, this is also true after [`RawRLock::acquire_restore_until`] with a count of
    /// 0, which leaves the inner lock taken. A snapshot when read from another thread.
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// The owner-ident word itself, for [`crate::diag::HeldBy::Ident`]: a snapshot reads the
    /// holder of a parked waiter's `RLock` through it (0 = nobody).
    #[must_use]
    pub fn owner_word(&self) -> &AtomicU64 {
        &self.owner
    }

    /// The word this lock's sleepers wait on (the inner lock's, see
    /// [`crate::RawLock::wake_word`]).
    #[inline]
    #[must_use]
    pub fn wake_word(&self) -> &AtomicU32 {
        self.lock.wake_word()
    }

    /// The owner's ident, 0 if none. From another thread this is a racy snapshot (for `repr`).
    #[must_use]
    pub fn owner(&self) -> u64 {
        self.owner.load(Ordering::Relaxed)
    }

    /// The recursion count. From another thread this is a racy snapshot (for `repr`).
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The count if `me` owns the lock, else 0 (Python's `_recursion_count`).
    #[must_use]
    pub fn recursion_count(&self, me: u64) -> u64 {
        if self.owner.load(Ordering::Relaxed) == me {
            self.count.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    /// Sets the recursion count of a lock `me` owns, without touching the inner lock; false (and
    /// no change) if `me` is not the owner. For CPython 3.14+'s modular count, which the binding
    /// mirrors only in the states `_acquire_restore` can make (a count of 0, or 2^64 - 1 re-entered).
    pub fn set_count_if_owner(&self, me: u64, count: u64) -> bool {
        if self.owner.load(Ordering::Relaxed) != me {
            return false;
        }
        self.count.store(count, Ordering::Relaxed);
        true
    }

    /// Releases the lock fully and returns `(count, owner)` (Python's `_release_save`, used by
    /// `threading.Condition`).
    ///
    /// Like CPython, this does not check that the caller is the owner.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] when the count is 0 (the lock is not held).
    pub fn release_save(&self) -> Result<(u64, u64), NotOwner> {
        let count = self.count.load(Ordering::Relaxed);
        if count == 0 {
            return Err(NotOwner);
        }
        let owner = self.owner.load(Ordering::Relaxed);
        self.set_owned(0, 0);
        self.release_inner();
        Ok((count, owner))
    }

    /// Blocks until the inner lock is taken (same [`Acquire::Interrupted`] contract as
    /// [`RawLock::acquire_until`]), then sets the count and owner to the given values (Python's
    /// `_acquire_restore`).
    ///
    /// Like CPython, this does not check re-entry: a caller that already owns the lock waits for
    /// itself until the deadline.
    pub fn acquire_restore_until(
        &self,
        count: u64,
        owner: u64,
        deadline: Option<Deadline>,
    ) -> Acquire {
        self.acquire_restore_until_with(count, owner, deadline, SpinPolicy::Adaptive)
    }

    /// [`RawRLock::acquire_restore_until`] with an explicit [`SpinPolicy`] for the inner lock.
    pub fn acquire_restore_until_with(
        &self,
        count: u64,
        owner: u64,
        deadline: Option<Deadline>,
        policy: SpinPolicy,
    ) -> Acquire {
        let r = self.lock.acquire_until_with(deadline, policy);
        if r == Acquire::Acquired {
            self.set_owned(owner, count);
        }
        r
    }

    /// Back to a fresh, unowned, unlocked state (Python's `_at_fork_reinit`). See
    /// [`RawLock::reinit`].
    pub fn reinit(&self) {
        self.set_owned(0, 0);
        self.lock.reinit();
    }
}

impl<W: Wait> Default for RawRLock<W> {
    fn default() -> Self {
        Self::new()
    }
}

impl<W: Wait> fmt::Debug for RawRLock<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawRLock")
            .field("locked", &self.lock.is_locked())
            .field("owner", &self.owner())
            .field("count", &self.count())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::wait::Fallback;

    #[test]
    fn reentry_counts() {
        let r = RLock::new();
        let me = crate::thread::current_ident();
        assert_eq!(r.recursion_count(me), 0);
        assert!(!r.is_owned(me));
        assert!(r.try_acquire(me));
        assert!(r.try_acquire(me));
        assert_eq!(r.acquire_until(me, None), Acquire::Acquired);
        assert_eq!(r.recursion_count(me), 3);
        assert_eq!((r.owner(), r.count()), (me, 3));
        assert!(r.is_owned(me));
        for left in (0..3).rev() {
            r.release(me).unwrap();
            assert_eq!(r.recursion_count(me), left);
        }
        assert_eq!(r.release(me), Err(NotOwner));
        assert_eq!((r.owner(), r.count()), (0, 0));
    }

    #[test]
    fn other_ident_cannot_release_or_reenter() {
        let r = RawRLock::<Fallback>::new();
        assert!(r.try_acquire(7));
        assert_eq!(r.release(8), Err(NotOwner));
        assert!(!r.try_acquire(8));
        assert_eq!(r.recursion_count(8), 0);
        assert!(!r.is_owned(8));
        r.release(7).unwrap();
        assert!(r.try_acquire(8));
        r.release(8).unwrap();
    }

    #[test]
    fn release_save_restore_round_trip() {
        let r = RLock::new();
        assert_eq!(r.release_save(), Err(NotOwner));
        assert!(r.try_acquire(5));
        assert!(r.try_acquire(5));
        assert_eq!(r.release_save(), Ok((2, 5)));
        assert_eq!((r.owner(), r.count()), (0, 0));
        assert!(!r.lock.is_locked());
        assert_eq!(r.acquire_restore_until(2, 5, None), Acquire::Acquired);
        assert_eq!(r.recursion_count(5), 2);
        r.release(5).unwrap();
        r.release(5).unwrap();
        assert_eq!(r.release(5), Err(NotOwner));
    }

    #[test]
    fn is_locked_follows_the_inner_lock() {
        let r = RLock::new();
        assert!(!r.is_locked());
        assert!(r.try_acquire(5));
        assert!(r.try_acquire(5));
        assert!(r.is_locked());
        r.release(5).unwrap();
        assert!(r.is_locked());
        r.release(5).unwrap();
        assert!(!r.is_locked());
        // A restore with count 0 takes the inner lock although nobody holds a level.
        assert_eq!(r.acquire_restore_until(0, 0, None), Acquire::Acquired);
        assert!(r.is_locked());
        assert_eq!(r.count(), 0);
        r.reinit();
        assert!(!r.is_locked());
    }

    #[test]
    fn reinit_frees() {
        let r = RLock::new();
        assert!(r.try_acquire(3));
        assert!(r.try_acquire(3));
        r.reinit();
        assert_eq!((r.owner(), r.count()), (0, 0));
        assert!(r.try_acquire(4));
    }

    #[test]
    fn messages() {
        assert_eq!(NotOwner.to_string(), "cannot release un-acquired lock");
    }

    #[test]
    fn const_static_send_sync() {
        static R: RLock = RLock::new();
        assert!(R.try_acquire(1));
        R.release(1).unwrap();
        fn check<T: Send + Sync>() {}
        check::<RLock>();
    }
}
