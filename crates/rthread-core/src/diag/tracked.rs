//! [`TrackedLock`] and [`TrackedRLock`]: the crate's locks with holder and wait records, for
//! Rust programs that want deadlock reports without Python.
//!
//! They also show, in a few lines each, what the Python binding's integration has to do: set
//! the holder after acquiring, clear it before releasing, and wrap the sleeping part of a
//! contended acquire in a [`WaitGuard`] armed with the holder word and the lock's wake word,
//! the lock sleeping in a [`Cancellable`] backend so that a watchdog can end the wait.

use core::fmt;
use core::sync::atomic::AtomicU32;
use std::panic::Location;

use super::registry::{
    self, current_slot, Cancellable, HeldBy, Holder, LockId, Released, WaitFor, WaitGuard,
};
use super::sites::{intern_location, SiteId};
use crate::deadline::Deadline;
use crate::lock::{Acquire, NotLocked, RawLock};
use crate::rlock::{NotOwner, RawRLock};
use crate::thread::current_ident;
use crate::wait::DefaultWait;

/// The error of an acquire that a watchdog abandoned to break a deadlock
/// ([`super::cancel_wait`]). The lock was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cancelled;

impl fmt::Display for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadlock: this wait was abandoned to break a wait-for cycle")
    }
}

impl std::error::Error for Cancelled {}

/// The tracked locks' backend: sleeps end when the wait is cancelled ([`Cancellable`]).
type Backend = Cancellable<DefaultWait>;

/// Runs a blocked acquire (`attempt`, which sleeps in [`Backend`]) as the armed wait of
/// `guard`: `Err(Cancelled)` if a watchdog cancelled it. [`super::cancel_wait`] wakes the
/// sleeper through `wake_word`, so a wait that began before any watchdog existed ends too.
fn cancellable_wait(
    guard: &WaitGuard,
    held_by: HeldBy<'_>,
    wake_word: &AtomicU32,
    attempt: impl FnOnce() -> Acquire,
) -> Result<Acquire, Cancelled> {
    guard.armed(Some(held_by), Some(wake_word), || match attempt() {
        Acquire::Interrupted if guard.is_cancelled() => Err(Cancelled),
        r => Ok(r),
    })
}

/// A [`Lock`](crate::Lock) that records its holder and its waiters for [`super::snapshot`].
///
/// Like [`Lock`](crate::Lock), any thread may release it; a release by another thread than the acquirer
/// marks it a signal ([`super::LockKind::Signal`]), whose waits never make a certain cycle.
pub struct TrackedLock {
    lock: RawLock<Backend>,
    holder: Holder,
    id: LockId,
    site: SiteId,
}

impl TrackedLock {
    /// A new unlocked lock, with the caller's location as its creation site.
    #[track_caller]
    #[must_use]
    pub fn new() -> Self {
        Self::with_site(intern_location(Location::caller()))
    }

    /// A new unlocked lock created at `site`.
    #[must_use]
    pub fn with_site(site: SiteId) -> Self {
        TrackedLock {
            lock: RawLock::new(),
            holder: Holder::new(),
            id: LockId::next(),
            site,
        }
    }

    /// This lock's id in snapshots.
    #[must_use]
    pub fn id(&self) -> LockId {
        self.id
    }

    /// Where the lock was created.
    #[must_use]
    pub fn site(&self) -> SiteId {
        self.site
    }

    /// The holder word (for tests and reports).
    #[must_use]
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// Whether the lock is held (racy).
    #[must_use]
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// Takes the lock if it is free; never blocks or records a wait.
    #[track_caller]
    #[must_use]
    pub fn try_acquire(&self) -> bool {
        let ok = self.lock.try_acquire();
        if ok {
            acquired(&self.holder, self.id, Location::caller());
        }
        ok
    }

    /// Takes the lock, blocking until `deadline` (`None` = no limit). A blocked acquire is
    /// recorded as a wait; `Err(Cancelled)` if a watchdog chose it to break a deadlock.
    /// `Ok(Acquire::Interrupted)` as for [`RawLock::acquire_until`].
    ///
    /// # Errors
    ///
    /// [`Cancelled`] as above; the lock is not held then.
    #[track_caller]
    pub fn acquire_until(&self, deadline: Option<Deadline>) -> Result<Acquire, Cancelled> {
        let caller = Location::caller();
        if self.lock.try_acquire() {
            acquired(&self.holder, self.id, caller);
            return Ok(Acquire::Acquired);
        }
        self.acquire_contended(deadline, caller)
    }

    #[cold]
    fn acquire_contended(
        &self,
        deadline: Option<Deadline>,
        caller: &'static Location<'static>,
    ) -> Result<Acquire, Cancelled> {
        let guard = WaitGuard::begin(WaitFor::Lock(self.id), Some(self.site), deadline.is_some());
        let r = cancellable_wait(
            &guard,
            HeldBy::Holder(&self.holder),
            self.lock.wake_word(),
            || self.lock.acquire_until(deadline),
        );
        drop(guard);
        if r == Ok(Acquire::Acquired) {
            acquired(&self.holder, self.id, caller);
        }
        r
    }

    /// Takes the lock, blocking as long as needed (retrying after signals).
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if a watchdog chose this wait to break a deadlock.
    #[track_caller]
    pub fn acquire(&self) -> Result<(), Cancelled> {
        while self.acquire_until(None)? != Acquire::Acquired {}
        Ok(())
    }

    /// Releases the lock (any thread may).
    ///
    /// # Errors
    ///
    /// [`NotLocked`] if it was not locked.
    pub fn release(&self) -> Result<(), NotLocked> {
        let me = current_slot();
        let outcome = self.holder.release_by(me);
        if registry::track_held() {
            match outcome {
                Released::ByAcquirer => {
                    if let Some(me) = me {
                        registry::held_remove(me.packed(), self.id);
                    }
                }
                Released::ByOther(acquirer) => registry::held_remove(acquirer, self.id),
                Released::Unknown => {}
            }
        }
        self.lock.release()
    }
}

impl Default for TrackedLock {
    #[track_caller]
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TrackedLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedLock")
            .field("id", &self.id)
            .field("locked", &self.is_locked())
            .finish_non_exhaustive()
    }
}

/// After a successful acquire: the holder, and the held list in diagnostic mode.
fn acquired(holder: &Holder, id: LockId, caller: &'static Location<'static>) {
    holder.set_current();
    if registry::track_held() {
        registry::held_push(id, Some(intern_location(caller)));
    }
}

/// An [`RLock`](crate::RLock) that records its owner and its waiters for [`super::snapshot`]. Its waits are
/// always owned-lock edges ([`super::LockKind::Reentrant`]).
pub struct TrackedRLock {
    rlock: RawRLock<Backend>,
    holder: Holder,
    id: LockId,
    site: SiteId,
}

impl TrackedRLock {
    /// A new unowned lock, with the caller's location as its creation site.
    #[track_caller]
    #[must_use]
    pub fn new() -> Self {
        TrackedRLock {
            rlock: RawRLock::new(),
            holder: Holder::new(),
            id: LockId::next(),
            site: intern_location(Location::caller()),
        }
    }

    /// This lock's id in snapshots.
    #[must_use]
    pub fn id(&self) -> LockId {
        self.id
    }

    /// Takes the lock (again, if the caller owns it), blocking until `deadline`.
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if a watchdog chose this wait to break a deadlock.
    #[track_caller]
    pub fn acquire_until(&self, deadline: Option<Deadline>) -> Result<Acquire, Cancelled> {
        let caller = Location::caller();
        let me = current_ident();
        if self.rlock.try_acquire(me) {
            if self.rlock.count() == 1 {
                acquired(&self.holder, self.id, caller);
            }
            return Ok(Acquire::Acquired);
        }
        let guard = WaitGuard::begin(WaitFor::RLock(self.id), Some(self.site), deadline.is_some());
        let r = cancellable_wait(
            &guard,
            HeldBy::Holder(&self.holder),
            self.rlock.wake_word(),
            || self.rlock.acquire_until(me, deadline),
        );
        drop(guard);
        if r == Ok(Acquire::Acquired) {
            acquired(&self.holder, self.id, caller);
        }
        r
    }

    /// Takes the lock, blocking as long as needed.
    ///
    /// # Errors
    ///
    /// [`Cancelled`] if a watchdog chose this wait to break a deadlock.
    #[track_caller]
    pub fn acquire(&self) -> Result<(), Cancelled> {
        while self.acquire_until(None)? != Acquire::Acquired {}
        Ok(())
    }

    /// Releases one level.
    ///
    /// # Errors
    ///
    /// [`NotOwner`] if the caller does not own it.
    pub fn release(&self) -> Result<(), NotOwner> {
        let me = current_ident();
        if self.rlock.recursion_count(me) == 1 {
            let slot = current_slot();
            self.holder.release_by(slot);
            if registry::track_held() {
                if let Some(slot) = slot {
                    registry::held_remove(slot.packed(), self.id);
                }
            }
        }
        self.rlock.release(me)
    }
}

impl Default for TrackedRLock {
    #[track_caller]
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TrackedRLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrackedRLock")
            .field("id", &self.id)
            .field("owner", &self.rlock.owner())
            .finish_non_exhaustive()
    }
}
