//! The thread registry: one slot of atomics per registered thread, the wait record in it, the
//! [`Holder`] word that locks embed, and cancellation.
//!
//! See the [module docs](crate::diag) for the data model and the orderings; this file follows
//! them. The short version:
//!
//! - `gen` (even = free, odd = live) is written by registration and unregistration only.
//! - The wait record is a single-writer seqlock (`seq`, odd while the owner writes it).
//! - `pin` guards the two borrowed pointers of an armed wait (holder word, wake word):
//!   `IDLE -> ARMED` and `ARMED -> IDLE` by the owner, `ARMED -> BUSY -> ARMED` by a reader.
//! - `cancel` holds the token of the wait a watchdog wants abandoned.

use core::hint::spin_loop;
use core::marker::PhantomData;
use core::ptr;
use core::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::cell::Cell;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, TryLockError};
use std::time::Duration;

use super::sites::SiteId;
use crate::deadline::Deadline;
use crate::thread;
use crate::wait::{Fallback, Wait, WaitResult};

/// Slots per lazily allocated chunk.
const CHUNK: usize = 256;
/// Chunks in the table: [`MAX_THREADS`] slots in all, which keeps `index + 1` within the
/// 20 bits that a [`Holder`] word has for it.
const MAX_CHUNKS: usize = 4095;
/// Most threads registered at the same time. Registration beyond it returns `None`.
pub const MAX_THREADS: usize = CHUNK * MAX_CHUNKS;

/// Bits of a holder word (see [`Holder`]).
const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
const GEN_BITS: u32 = 11;
const GEN_MASK: u32 = (1 << GEN_BITS) - 1;
const SIGNAL_BIT: u32 = 1 << 31;

/// Bit of a slot's `gen` while a registering thread fills the slot in (readers skip it).
const CLAIMED: u32 = 1 << 31;

/// Entries of the diagnostic held-locks list per thread.
pub const HELD_MAX: usize = 8;

/// Nobody is reading the armed pointers, or nothing is armed.
const PIN_IDLE: u32 = 0;
/// The owner armed its current wait: the pointers are valid while `pin` is not `IDLE`.
const PIN_ARMED: u32 = 1;
/// A reader is using the pointers; the owner must not disarm until it stores `ARMED` again.
const PIN_BUSY: u32 = 2;

/// Wait kinds as stored in `wait_kind`.
const WAIT_NONE: u32 = 0;
const WAIT_LOCK: u32 = 1;
const WAIT_RLOCK: u32 = 2;
const WAIT_JOIN: u32 = 3;
const WAIT_JOIN_IDENT: u32 = 4;
const WAIT_OTHER: u32 = 5;

/// `wait_flags` bit: the wait has a deadline.
const FLAG_TIMED: u32 = 1;

/// A registered thread: its slot index and the generation of that registration.
///
/// Slots of ended threads are reused; the generation (odd, one more than twice the number of
/// earlier registrations of the index) tells two registrations of one index apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ThreadSlot {
    index: u32,
    generation: u32,
}

impl ThreadSlot {
    /// A slot value from its parts, for building test snapshots.
    #[cfg(test)]
    pub(super) const fn from_parts(index: u32, generation: u32) -> ThreadSlot {
        ThreadSlot { index, generation }
    }

    /// Index into the slot table (small, dense, reused after the thread ends).
    #[must_use]
    pub const fn index(self) -> u32 {
        self.index
    }

    /// Generation of this registration of the index.
    #[must_use]
    pub const fn generation(self) -> u32 {
        self.generation
    }

    /// The 31-bit form a [`Holder`] stores: `index + 1` in bits 0..20, the low 11 bits of the
    /// registration count in bits 20..31. Never 0.
    #[must_use]
    pub const fn packed(self) -> u32 {
        (((self.generation >> 1) & GEN_MASK) << INDEX_BITS) | (self.index + 1)
    }

    /// Whether a packed value names this registration (up to the 11 generation bits).
    #[must_use]
    pub const fn matches_packed(self, packed: u32) -> bool {
        packed & !SIGNAL_BIT == self.packed()
    }
}

/// A compact lock identity: unique per lock for the life of the process when made by
/// [`LockId::next`]; the Python binding may use the object's address instead (then ids of
/// freed locks are reused, which only matters for reading old snapshots).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockId(pub u64);

impl LockId {
    /// A fresh id from a process-wide counter (never 0).
    #[must_use]
    pub fn next() -> LockId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        LockId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Identifies one wait of one thread: the wait record's sequence number when it was set.
/// Tokens of a slot only grow, so a token never names a later wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitToken(pub u64);

/// What a thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitFor {
    /// A plain lock (mutex or signal; the snapshot tells which).
    Lock(LockId),
    /// A reentrant lock.
    RLock(LockId),
    /// The end of a registered thread (a join).
    Join(ThreadSlot),
    /// The end of the thread with this ident (a join where only the ident is known).
    JoinIdent(u64),
    /// Anything else: a caller-defined `tag` and object. Never an edge of the graph.
    Other {
        /// Caller-defined kind of wait.
        tag: u32,
        /// Caller-defined object (an address, an id).
        object: u64,
    },
}

impl WaitFor {
    fn encode(self) -> (u32, u64, u32) {
        match self {
            WaitFor::Lock(id) => (WAIT_LOCK, id.0, 0),
            WaitFor::RLock(id) => (WAIT_RLOCK, id.0, 0),
            WaitFor::Join(slot) => (
                WAIT_JOIN,
                u64::from(slot.index) << 32 | u64::from(slot.generation),
                0,
            ),
            WaitFor::JoinIdent(ident) => (WAIT_JOIN_IDENT, ident, 0),
            WaitFor::Other { tag, object } => (WAIT_OTHER, object, tag),
        }
    }

    fn decode(kind: u32, a: u64, b: u32) -> Option<WaitFor> {
        Some(match kind {
            WAIT_LOCK => WaitFor::Lock(LockId(a)),
            WAIT_RLOCK => WaitFor::RLock(LockId(a)),
            WAIT_JOIN => WaitFor::Join(ThreadSlot {
                // Encoded from two u32s above.
                index: u32::try_from(a >> 32).unwrap_or(u32::MAX),
                generation: u32::try_from(a & 0xFFFF_FFFF).unwrap_or(0),
            }),
            WAIT_JOIN_IDENT => WaitFor::JoinIdent(a),
            WAIT_OTHER => WaitFor::Other { tag: b, object: a },
            _ => return None,
        })
    }
}

/// How a lock's holder is to be read while its waiter is parked: the word the lock keeps.
#[derive(Clone, Copy, Debug)]
pub enum HeldBy<'a> {
    /// A [`Holder`] word embedded in the lock.
    Holder(&'a Holder),
    /// A thread-ident word (an `RLock`'s owner field: 0 = nobody).
    Ident(&'a AtomicU64),
}

/// The classification of a lock for the wait-for graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockKind {
    /// A plain lock released by the thread that acquired it: its holder blocks its waiters.
    Mutex,
    /// A plain lock used as a signal (released by another thread than its acquirer, or waited
    /// on by its own holder): its "holder" is not who the waiter waits for.
    Signal,
    /// A reentrant lock: always released by its owner.
    Reentrant,
}

impl LockKind {
    /// Classifies a plain lock from its holder word as seen by `waiter`: `Signal` once any
    /// release came from another thread than the acquirer, or when the waiter holds it itself
    /// (a thread cannot release a lock while it waits for it, so someone else will: the
    /// `threading.Condition` waiter pattern); `Mutex` otherwise.
    #[must_use]
    pub fn classify(holder_word: u32, waiter: ThreadSlot) -> LockKind {
        if holder_word & SIGNAL_BIT != 0 || waiter.matches_packed(holder_word) {
            LockKind::Signal
        } else {
            LockKind::Mutex
        }
    }
}

/// What a release found in the [`Holder`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Released {
    /// Nobody was recorded (never acquired through the holder, or an unregistered thread).
    Unknown,
    /// The releasing thread is the one that acquired.
    ByAcquirer,
    /// Another thread acquired: the lock is a signal from now on. Carries the acquirer.
    ByOther(u32),
}

/// The one `AtomicU32` a lock embeds so that snapshots can name its holder.
///
/// | bits   | meaning                                                                 |
/// |--------|-------------------------------------------------------------------------|
/// | 31     | `SIGNAL`: some release came from another thread than the acquirer (sticky) |
/// | 20..31 | low 11 bits of the holder's registration count (ABA guard)              |
/// | 0..20  | holder's slot index + 1; 0 = no holder                                  |
///
/// Written only by the thread that holds the lock (on acquire, and by the releaser just
/// before the lock word is released), so plain `Relaxed` loads and stores suffice; readers get
/// a racy but untorn value.
#[derive(Debug, Default)]
pub struct Holder(AtomicU32);

impl Holder {
    /// No holder, not a signal.
    #[must_use]
    pub const fn new() -> Self {
        Holder(AtomicU32::new(0))
    }

    /// Records `slot` as the holder (call right after acquiring). Keeps the `SIGNAL` bit.
    #[inline]
    pub fn set(&self, slot: ThreadSlot) {
        let signal = self.0.load(Ordering::Relaxed) & SIGNAL_BIT;
        self.0.store(signal | slot.packed(), Ordering::Relaxed);
    }

    /// Records the calling thread as the holder, registering it on first use. A thread that
    /// cannot register (table full, thread exiting) records "nobody".
    #[inline]
    pub fn set_current(&self) {
        match current_slot_or_register() {
            Some(slot) => self.set(slot),
            None => self.clear(),
        }
    }

    /// Records the holder in its packed form ([`ThreadSlot::packed`]; 0 = nobody), for callers
    /// that cache their own packed slot (a `const` thread-local is cheaper to read than the
    /// registry's). Keeps the `SIGNAL` bit.
    #[inline]
    pub fn set_packed(&self, packed: u32) {
        let signal = self.0.load(Ordering::Relaxed) & SIGNAL_BIT;
        self.0
            .store(signal | (packed & !SIGNAL_BIT), Ordering::Relaxed);
    }

    /// The common release, in one compare: if `me` (a packed slot) is the recorded holder
    /// of a lock not marked a signal, forgets it and returns true (a [`Released::ByAcquirer`]);
    /// otherwise changes nothing and returns false, and the caller goes on with
    /// [`Holder::release_packed`].
    /// (With `me` 0, a word of 0 is a lock with no recorded holder, which stays so.)
    #[inline(always)]
    pub fn release_if_holder(&self, me: u32) -> bool {
        // A packed slot never has the signal bit (index and generation fill 31 bits), so
        // equality means "held by me, not a signal".
        if self.0.load(Ordering::Relaxed) == me {
            self.0.store(0, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// [`Holder::set_packed`] for a value known to be a packed slot ([`ThreadSlot::packed`],
    /// whose top bit is always clear) or 0.
    #[inline(always)]
    pub fn set_slot_packed(&self, packed: u32) {
        debug_assert_eq!(packed & SIGNAL_BIT, 0);
        let signal = self.0.load(Ordering::Relaxed) & SIGNAL_BIT;
        self.0.store(signal | packed, Ordering::Relaxed);
    }

    /// [`Holder::release_by`] with the releaser in packed form (0 = an unregistered thread).
    #[inline]
    pub fn release_packed(&self, releaser: u32) -> Released {
        let old = self.0.load(Ordering::Relaxed);
        let holder = old & !SIGNAL_BIT;
        if holder != 0 && holder == releaser & !SIGNAL_BIT {
            self.0.store(old & SIGNAL_BIT, Ordering::Relaxed);
            return Released::ByAcquirer;
        }
        if holder == 0 {
            return Released::Unknown;
        }
        self.0.store(SIGNAL_BIT, Ordering::Relaxed);
        Released::ByOther(holder)
    }

    /// Forgets the holder (call just before releasing). Keeps the `SIGNAL` bit.
    #[inline]
    pub fn clear(&self) {
        // A load and a store, no read-modify-write: only the thread that holds the lock
        // writes the word (see the type's docs).
        let signal = self.0.load(Ordering::Relaxed) & SIGNAL_BIT;
        self.0.store(signal, Ordering::Relaxed);
    }

    /// Forgets the holder on a release by `releaser` (`None`: an unregistered thread), and
    /// marks the lock a signal when the releaser is not the acquirer. Call just before the
    /// lock word is released.
    pub fn release_by(&self, releaser: Option<ThreadSlot>) -> Released {
        let old = self.0.load(Ordering::Relaxed);
        let holder = old & !SIGNAL_BIT;
        let outcome = match releaser {
            _ if holder == 0 => Released::Unknown,
            Some(me) if me.matches_packed(holder) => Released::ByAcquirer,
            _ => Released::ByOther(holder),
        };
        let signal = if matches!(outcome, Released::ByOther(_)) {
            SIGNAL_BIT
        } else {
            old & SIGNAL_BIT
        };
        self.0.store(signal, Ordering::Relaxed);
        outcome
    }

    /// [`Holder::release_by`] for the calling thread.
    pub fn release_current(&self) -> Released {
        self.release_by(current_slot())
    }

    /// Marks the lock a signal whatever happens (for locks known to be events).
    pub fn mark_signal(&self) {
        self.0.fetch_or(SIGNAL_BIT, Ordering::Relaxed);
    }

    /// The raw word (see the table).
    #[must_use]
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// The holder's packed slot ([`ThreadSlot::packed`]), if any.
    #[must_use]
    pub fn holder_packed(&self) -> Option<u32> {
        Some(self.get() & !SIGNAL_BIT).filter(|&p| p != 0)
    }

    /// `Signal` once a release came from another thread than the acquirer, else `Mutex`.
    #[must_use]
    pub fn kind(&self) -> LockKind {
        if self.get() & SIGNAL_BIT != 0 {
            LockKind::Signal
        } else {
            LockKind::Mutex
        }
    }
}

/// One entry of the diagnostic held-locks list. `lock` (0 = free entry) is claimed by the
/// owner with a compare-exchange from 0 after it wrote `site` and `since`, and given back by
/// whoever releases the lock (the owner, or a foreign releaser of a signal).
struct HeldEntry {
    lock: AtomicU64,
    site: AtomicU32,
    since: AtomicU64,
}

impl HeldEntry {
    const fn new() -> Self {
        HeldEntry {
            lock: AtomicU64::new(0),
            site: AtomicU32::new(0),
            since: AtomicU64::new(0),
        }
    }
}

/// One thread's slot. Every field is an atomic (or a rarely used mutex for the name), so
/// reading a slot that its owner is writing is never a data race, only possibly torn.
struct Slot {
    /// Even: free; odd: live. Bumped by registration and by unregistration.
    gen: AtomicU32,
    ident: AtomicU64,
    native_id: AtomicU64,
    /// Set rarely; snapshots only `try_lock` it.
    name: Mutex<Option<Arc<str>>>,
    /// Seqlock over the `wait_*` fields; odd while the owner writes them.
    seq: AtomicU64,
    wait_kind: AtomicU32,
    wait_flags: AtomicU32,
    wait_a: AtomicU64,
    wait_b: AtomicU32,
    wait_site: AtomicU32,
    wait_since: AtomicU64,
    /// Token of the wait a watchdog asked to abandon (0 = none).
    cancel: AtomicU64,
    /// See `PIN_*`.
    pin: AtomicU32,
    /// Token of the armed wait (written before `pin` becomes `ARMED`).
    pin_token: AtomicU64,
    holder_ptr: AtomicPtr<Holder>,
    owner_ptr: AtomicPtr<AtomicU64>,
    wake_word: AtomicPtr<AtomicU32>,
    held: [HeldEntry; HELD_MAX],
}

impl Slot {
    fn new() -> Self {
        Slot {
            gen: AtomicU32::new(0),
            ident: AtomicU64::new(0),
            native_id: AtomicU64::new(0),
            name: Mutex::new(None),
            seq: AtomicU64::new(0),
            wait_kind: AtomicU32::new(WAIT_NONE),
            wait_flags: AtomicU32::new(0),
            wait_a: AtomicU64::new(0),
            wait_b: AtomicU32::new(0),
            wait_site: AtomicU32::new(0),
            wait_since: AtomicU64::new(0),
            cancel: AtomicU64::new(0),
            pin: AtomicU32::new(PIN_IDLE),
            pin_token: AtomicU64::new(0),
            holder_ptr: AtomicPtr::new(ptr::null_mut()),
            owner_ptr: AtomicPtr::new(ptr::null_mut()),
            wake_word: AtomicPtr::new(ptr::null_mut()),
            held: [const { HeldEntry::new() }; HELD_MAX],
        }
    }

    /// Owner only: writes the wait record under the seqlock and returns the new sequence
    /// number (even), which is the wait's token.
    fn write_wait(&self, kind: u32, a: u64, b: u32, site: u32, flags: u32, since: u64) -> u64 {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s + 1, Ordering::Relaxed);
        fence(Ordering::Release);
        self.wait_kind.store(kind, Ordering::Relaxed);
        self.wait_a.store(a, Ordering::Relaxed);
        self.wait_b.store(b, Ordering::Relaxed);
        self.wait_site.store(site, Ordering::Relaxed);
        self.wait_flags.store(flags, Ordering::Relaxed);
        self.wait_since.store(since, Ordering::Relaxed);
        self.seq.store(s + 2, Ordering::Release);
        s + 2
    }

    /// Owner only: takes the pin back from `ARMED` (waiting out a reader in `BUSY`) and
    /// forgets the pointers.
    fn disarm(&self) {
        let mut spins = 0u32;
        loop {
            match self.pin.compare_exchange_weak(
                PIN_ARMED,
                PIN_IDLE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) | Err(PIN_IDLE) => break,
                Err(_) => {
                    // A reader holds the pin for a few instructions (or one wake system
                    // call); spin briefly, then let it run.
                    spins += 1;
                    if spins < 64 {
                        spin_loop();
                    } else {
                        std::thread::yield_now();
                    }
                }
            }
        }
        self.holder_ptr.store(ptr::null_mut(), Ordering::Relaxed);
        self.owner_ptr.store(ptr::null_mut(), Ordering::Relaxed);
        self.wake_word.store(ptr::null_mut(), Ordering::Relaxed);
    }
}

/// The slot table: chunks allocated on demand, never freed, so a `&'static Slot` stays valid.
static CHUNKS: [OnceLock<Box<[Slot; CHUNK]>>; MAX_CHUNKS] = [const { OnceLock::new() }; MAX_CHUNKS];
/// Indexes below this have been handed out at least once.
static HIGH_WATER: AtomicU32 = AtomicU32::new(0);

/// Called whenever a registration ends (see [`on_thread_end`]).
static END_HOOK: OnceLock<fn()> = OnceLock::new();

/// Sets a function to call whenever a registered thread's slot is freed: as the thread ends
/// (from its thread-local destructors), or in a forked child for every other thread. A caller
/// that caches "this thread is slot S" keyed by something the OS reuses after a thread ends
/// (its thread pointer, its stack) clears the cache there. The hook must not block or
/// allocate. Only the first call sets it; returns whether this one did.
pub fn on_thread_end(hook: fn()) -> bool {
    END_HOOK.set(hook).is_ok()
}

/// The slot at `index`, if its chunk exists.
fn slot_at(index: u32) -> Option<&'static Slot> {
    let i = index as usize;
    CHUNKS.get(i / CHUNK)?.get().map(|c| &c[i % CHUNK])
}

/// The slot at `index`, allocating its chunk.
fn slot_alloc(index: u32) -> Option<&'static Slot> {
    let i = index as usize;
    let chunk = CHUNKS.get(i / CHUNK)?.get_or_init(|| {
        // Built on the heap: a chunk is tens of kilobytes, too much for a small thread stack.
        let v: Box<[Slot]> = (0..CHUNK).map(|_| Slot::new()).collect();
        v.try_into().unwrap_or_else(|_| unreachable!("CHUNK slots"))
    });
    Some(&chunk[i % CHUNK])
}

/// The live slot of `thread`, if that registration is still live.
fn live_slot(thread: ThreadSlot) -> Option<&'static Slot> {
    slot_at(thread.index).filter(|s| s.gen.load(Ordering::Acquire) == thread.generation)
}

/// The calling thread's registration. Dropped (and the slot freed) when the thread exits.
struct Registration {
    slot: Cell<Option<ThreadSlot>>,
    /// Live [`WaitGuard`]s of this thread; the slot is not freed while any exists.
    guards: Cell<u32>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            // A guard that was leaked with `mem::forget` keeps the slot (harmlessly) forever.
            if self.guards.get() == 0 {
                free_slot(slot, false);
            }
        }
    }
}

thread_local! {
    static CURRENT: Registration = const {
        Registration { slot: Cell::new(None), guards: Cell::new(0) }
    };
}

/// Claims a free slot for the calling thread and fills in its identity.
#[cold]
fn claim_slot() -> Option<ThreadSlot> {
    let ident = thread::current_ident();
    let native_id = thread::native_id();
    let fill = |index: u32, slot: &'static Slot, gen: u32| {
        slot.ident.store(ident, Ordering::Relaxed);
        slot.native_id.store(native_id, Ordering::Relaxed);
        slot.cancel.store(0, Ordering::Relaxed);
        // Odd and without CLAIMED: live. Generations wrap after 2^30 registrations of one
        // index, which only weakens the ABA guard.
        let live = (gen + 1) & !CLAIMED;
        // Publishes the identity to snapshots (they load `gen` with `Acquire`). The slot was
        // claimed by a compare-exchange to `gen | CLAIMED`, so nobody else writes it.
        slot.gen.store(live, Ordering::Release);
        ThreadSlot {
            index,
            generation: live,
        }
    };
    // Reuse the slot of an ended thread if there is one (registration is rare: a scan is fine).
    let high = HIGH_WATER.load(Ordering::Acquire);
    for index in 0..high {
        let Some(slot) = slot_at(index) else { continue };
        let gen = slot.gen.load(Ordering::Relaxed);
        // Claim it (free, and nobody else is claiming it); readers skip claimed slots.
        if gen % 2 == 0
            && gen & CLAIMED == 0
            && slot
                .gen
                .compare_exchange(gen, gen | CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            return Some(fill(index, slot, gen));
        }
    }
    loop {
        let index = HIGH_WATER.fetch_add(1, Ordering::AcqRel);
        if index as usize >= MAX_THREADS {
            HIGH_WATER.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        let slot = slot_alloc(index)?;
        // A scanner may have claimed the fresh slot first; then take the next one.
        if slot
            .gen
            .compare_exchange(0, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Some(fill(index, slot, 0));
        }
    }
}

/// Frees `thread`'s slot: clears its records, then bumps the generation to even.
///
/// `after_fork`: in a fork child, where the name mutex may be held forever by a thread of the
/// parent (one that was naming itself, or a snapshot), only try it.
fn free_slot(thread: ThreadSlot, after_fork: bool) {
    let Some(slot) = live_slot(thread) else {
        return;
    };
    slot.disarm();
    slot.write_wait(WAIT_NONE, 0, 0, 0, 0, 0);
    for e in &slot.held {
        e.lock.store(0, Ordering::Relaxed);
    }
    if after_fork {
        if let Ok(mut name) = slot.name.try_lock() {
            *name = None;
        }
    } else {
        *slot.name.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
    slot.gen
        .store((thread.generation + 1) & !CLAIMED, Ordering::Release);
    if let Some(hook) = END_HOOK.get() {
        hook();
    }
}

/// Registers the calling thread (idempotent) and returns its slot. `None` if the table is
/// full or the thread is past its thread-local destructors.
///
/// Threads that use tracked locks register on their first wait or acquire anyway; call this
/// early to appear in snapshots before then. The slot is freed when the thread exits.
pub fn register_current_thread() -> Option<ThreadSlot> {
    current_slot_or_register()
}

/// Registers the calling thread and gives it a name for reports.
pub fn register_current_thread_named(name: &str) -> Option<ThreadSlot> {
    let slot = register_current_thread()?;
    set_current_thread_name(name);
    Some(slot)
}

/// The calling thread's slot if it is registered; never registers.
#[inline]
#[must_use]
pub fn current_slot() -> Option<ThreadSlot> {
    CURRENT.try_with(|r| r.slot.get()).ok().flatten()
}

#[inline]
fn current_slot_or_register() -> Option<ThreadSlot> {
    CURRENT
        .try_with(|r| {
            r.slot.get().or_else(|| {
                let slot = claim_slot();
                r.slot.set(slot);
                slot
            })
        })
        .ok()
        .flatten()
}

/// Unregisters the calling thread now rather than at its exit. Returns false (and keeps the
/// slot) if the thread is not registered or a [`WaitGuard`] of it is alive.
pub fn unregister_current_thread() -> bool {
    CURRENT
        .try_with(|r| match r.slot.get() {
            Some(slot) if r.guards.get() == 0 => {
                r.slot.set(None);
                free_slot(slot, false);
                true
            }
            _ => false,
        })
        .unwrap_or(false)
}

/// Sets the calling thread's name in reports (registering it). Allocates; meant to be rare.
pub fn set_current_thread_name(name: &str) {
    if let Some(slot) = current_slot_or_register().and_then(live_slot) {
        *slot.name.lock().unwrap_or_else(PoisonError::into_inner) = Some(name.into());
    }
}

/// In the child after `fork()`: frees every slot but the calling thread's (the other threads
/// do not exist there). Also clears the caller's wait and pin, which a fork from inside a wait
/// would have left behind.
pub fn after_fork_child() {
    let me = current_slot();
    let high = HIGH_WATER.load(Ordering::Acquire);
    for index in 0..high {
        let Some(slot) = slot_at(index) else { continue };
        let gen = slot.gen.load(Ordering::Relaxed);
        slot.pin.store(PIN_IDLE, Ordering::Relaxed);
        if me.is_some_and(|m| m.index == index) {
            continue;
        }
        if gen & CLAIMED != 0 {
            // A thread of the parent was registering: it does not exist here.
            slot.gen.store((gen & !CLAIMED) + 2, Ordering::Release);
        } else if gen % 2 == 1 {
            free_slot(
                ThreadSlot {
                    index,
                    generation: gen,
                },
                true,
            );
        }
    }
}

/// Whether the held-locks lists are kept (diagnostic mode; off by default).
static TRACK_HELD: AtomicU32 = AtomicU32::new(0);

/// Turns the diagnostic held-locks lists on or off. Costs each tracked acquire a few loads and
/// stores while on; their acquire times come from a ticker thread that runs while the lists
/// are kept (see `diag/clock.rs`: ages read up to about 15 ms long).
pub fn set_track_held(on: bool) {
    TRACK_HELD.store(u32::from(on), Ordering::Relaxed);
    if on {
        super::clock::start();
    }
}

/// Whether the held-locks lists are kept.
#[must_use]
pub fn track_held() -> bool {
    TRACK_HELD.load(Ordering::Relaxed) != 0
}

/// Adds `lock` to the calling thread's held list (diagnostic mode). Returns false if the list
/// is full or the thread is not registered; the lock is then simply not listed.
pub fn held_push(lock: LockId, site: Option<SiteId>) -> bool {
    current_slot_or_register().is_some_and(|me| held_push_own(me.packed(), lock, site))
}

/// The calling thread's own slot from its packed form ([`ThreadSlot::packed`], or a
/// [`Holder`] word it just wrote), if that registration is live.
#[inline]
fn own_slot(packed: u32) -> Option<&'static Slot> {
    let index = (packed & INDEX_MASK).wrapping_sub(1);
    let slot = slot_at(index)?;
    // Relaxed: the calling thread registered this slot itself.
    let gen = slot.gen.load(Ordering::Relaxed);
    let me = ThreadSlot {
        index,
        generation: gen,
    };
    (gen % 2 == 1 && me.matches_packed(packed)).then_some(slot)
}

/// [`held_push`] for a caller that knows its own packed slot (the binding keeps it in a
/// thread-local, or reads it back from the [`Holder`] it just set): no registry look-up.
///
/// `packed` must be the *calling* thread's: only a slot's owner adds entries, which is why
/// this needs plain stores and no compare-exchange (another thread only ever clears an entry
/// that holds its lock, never a free one). Returns false if `packed` is not a live
/// registration or the list is full.
#[inline]
pub fn held_push_own(packed: u32, lock: LockId, site: Option<SiteId>) -> bool {
    own_slot(packed).is_some_and(|slot| push_entry(slot, lock, site))
}

/// The calling thread's own held list, found once from its packed slot (what
/// [`held_push_own`] and [`held_pop_own`] look up on every call), for a caller that keeps it
/// for a run of acquires and releases. It stands for that registration: keep it only while
/// the registration lives (see [`on_thread_end`]), and use it only on the thread it belongs
/// to (only a slot's owner adds entries).
#[derive(Clone, Copy)]
pub struct OwnHeld(&'static Slot);

impl std::fmt::Debug for OwnHeld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OwnHeld")
            .field(&std::ptr::from_ref(self.0))
            .finish()
    }
}

impl OwnHeld {
    /// The held list of the registration `packed` (the calling thread's), if it is live.
    #[inline]
    #[must_use]
    pub fn of(packed: u32) -> Option<OwnHeld> {
        own_slot(packed).map(OwnHeld)
    }

    /// [`held_push_own`] on this list.
    #[inline]
    pub fn push(self, lock: LockId, site: Option<SiteId>) -> bool {
        push_entry(self.0, lock, site)
    }

    /// [`held_pop_own`] on this list.
    #[inline]
    pub fn pop(self, lock: LockId) {
        pop_entry(self.0, lock);
    }

    /// The handle as a non-zero word, to keep in an atomic.
    #[must_use]
    pub fn to_bits(self) -> usize {
        std::ptr::from_ref(self.0) as usize
    }

    /// The handle back from [`OwnHeld::to_bits`].
    ///
    /// # Safety
    /// `bits` must come from [`OwnHeld::to_bits`] (slots are never freed, so the address
    /// stays valid; whether the registration still lives is the caller's to know).
    #[must_use]
    pub unsafe fn from_bits(bits: usize) -> OwnHeld {
        // SAFETY: `bits` is the address of a `'static` slot (caller), which is never freed.
        OwnHeld(unsafe { &*(bits as *const Slot) })
    }
}

/// Adds an entry to `slot`'s held list (its owner calls this; see [`held_push_own`]).
#[inline]
fn push_entry(slot: &Slot, lock: LockId, site: Option<SiteId>) -> bool {
    let now = super::clock::stamp_ns();
    for e in &slot.held {
        if e.lock.load(Ordering::Relaxed) == 0 {
            e.site
                .store(site.map_or(0, SiteId::as_u32), Ordering::Relaxed);
            e.since.store(now, Ordering::Relaxed);
            // Release: a snapshot that sees the lock (Acquire) sees its site and time.
            e.lock.store(lock.0, Ordering::Release);
            return true;
        }
    }
    false
}

/// Removes `lock` from the calling thread's own held list (`packed`: the caller's, as for
/// [`held_push_own`]), when the caller is the thread that acquired it. A plain store: another
/// thread may clear the same entry at the same time (two releases of one lock race, and one of
/// them fails), and both only ever write 0.
#[inline]
pub fn held_pop_own(packed: u32, lock: LockId) {
    if let Some(slot) = own_slot(packed) {
        pop_entry(slot, lock);
    }
}

/// Removes `lock` from `slot`'s held list (its owner calls this; see [`held_pop_own`]).
#[inline]
fn pop_entry(slot: &Slot, lock: LockId) {
    for e in &slot.held {
        if e.lock.load(Ordering::Relaxed) == lock.0 {
            e.lock.store(0, Ordering::Relaxed);
            return;
        }
    }
}

/// Removes `lock` from the held list of the thread whose packed slot is `holder` (the
/// acquirer recorded in the lock's [`Holder`]; the releaser may be another thread).
pub fn held_remove(holder_packed: u32, lock: LockId) {
    let index = (holder_packed & INDEX_MASK).wrapping_sub(1);
    let Some(slot) = slot_at(index) else { return };
    let gen = slot.gen.load(Ordering::Acquire);
    let thread = ThreadSlot {
        index,
        generation: gen,
    };
    if gen % 2 == 0 || !thread.matches_packed(holder_packed) {
        return;
    }
    for e in &slot.held {
        if e.lock
            .compare_exchange(lock.0, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
    }
}

/// The current wait of the calling thread, set on creation and cleared on drop.
///
/// Create it on the slow path only, when the thread is about to sleep: it reads the clock and
/// writes about ten words into the thread's own slot, without allocating (after the thread's
/// first registration) and without taking any lock. A thread has one wait at a time: a nested
/// guard replaces the record, and the outer wait shows as none once the inner one ends.
///
/// Not `Send`: it writes the slot of the thread that made it.
pub struct WaitGuard {
    slot: Option<(ThreadSlot, &'static Slot)>,
    token: WaitToken,
    _not_send: PhantomData<*const ()>,
}

impl WaitGuard {
    /// Records that the calling thread starts waiting for `what` now. `site` is where the
    /// awaited object was created (shown in reports), `timed` whether the wait has a deadline.
    ///
    /// If the thread cannot be registered the guard records nothing and is never cancelled.
    #[must_use]
    pub fn begin(what: WaitFor, site: Option<SiteId>, timed: bool) -> WaitGuard {
        let slot = current_slot_or_register().and_then(|t| live_slot(t).map(|s| (t, s)));
        let Some((thread, s)) = slot else {
            return WaitGuard {
                slot: None,
                token: WaitToken(0),
                _not_send: PhantomData,
            };
        };
        let (kind, a, b) = what.encode();
        let flags = if timed { FLAG_TIMED } else { 0 };
        let since = Deadline::now().as_nanos();
        let token = s.write_wait(kind, a, b, site.map_or(0, SiteId::as_u32), flags, since);
        // `begin` registered the thread, so the thread-local is alive.
        let _ = CURRENT.try_with(|r| r.guards.set(r.guards.get() + 1));
        WaitGuard {
            slot: Some((thread, s)),
            token: WaitToken(token),
            _not_send: PhantomData,
        }
    }

    /// This wait's token (what [`cancel_wait`] takes).
    #[must_use]
    pub fn token(&self) -> WaitToken {
        self.token
    }

    /// The waiting thread's slot, if it is registered.
    #[must_use]
    pub fn thread(&self) -> Option<ThreadSlot> {
        self.slot.map(|(t, _)| t)
    }

    /// Whether this guard's record is still the thread's wait: false once a nested guard
    /// replaced it (and so once that one ended too). A guard that records nothing is always
    /// current. A wait that keeps its guard across code that may wait itself (the binding's
    /// main-thread waits run signal handlers between sleeps) begins a new one when this
    /// turns false, so that the watchdog sees the wait again.
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.slot.is_none_or(|(thread, s)| {
            s.gen.load(Ordering::Relaxed) == thread.generation
                && s.seq.load(Ordering::Relaxed) == self.token.0
        })
    }

    /// Whether a watchdog asked this wait to be abandoned ([`cancel_wait`]). The wait loop
    /// checks this after every wake-up (and every timeout slice) and, if true, gives up
    /// without taking the lock.
    #[inline]
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.slot.is_some_and(|(_, s)| {
            // Acquire: pairs with the watchdog's Release store, for anything it wrote first.
            s.cancel.load(Ordering::Acquire) == self.token.0
        })
    }

    /// Runs `f` (the sleeping part of the wait) with the holder word and the wake word of the
    /// awaited lock made visible to snapshots and to [`cancel_wait`].
    ///
    /// - `held_by`: where the lock records its holder; snapshots read it (while `f` runs)
    ///   to draw the wait-for edge.
    /// - `wake_word`: the word the thread sleeps on; [`cancel_wait`] wakes its sleepers
    ///   (with both of the crate's backends), so the loop in `f` can check
    ///   [`WaitGuard::is_cancelled`].
    ///
    /// Borrowing both for the duration of `f` is what makes them safe to use from other
    /// threads: before `f`'s scope ends (normally or by unwinding), the pointers are withdrawn,
    /// waiting out a reader that is using them (a few instructions, or one wake system call).
    /// Nested calls run `f` without arming again.
    ///
    /// While `f` runs, a [`Cancellable`] backend sleeping in this thread returns
    /// [`WaitResult::Interrupted`](crate::wait::WaitResult) once this wait is cancelled, so
    /// the crate's sleep loops leave (without the lock, its state consistent) as they do for a
    /// signal, and the caller sees [`WaitGuard::is_cancelled`]. A wait that must not be
    /// abandoned uses [`WaitGuard::armed_uncancellable`].
    pub fn armed<R>(
        &self,
        held_by: Option<HeldBy<'_>>,
        wake_word: Option<&AtomicU32>,
        f: impl FnOnce() -> R,
    ) -> R {
        self.arm(held_by, wake_word, true, f)
    }

    /// [`WaitGuard::armed`] for a wait that must end holding the lock (a condition variable
    /// taking its lock back): snapshots see the holder word, but a [`Cancellable`] backend
    /// ignores cancellation of this wait and nothing wakes it for one.
    pub fn armed_uncancellable<R>(&self, held_by: Option<HeldBy<'_>>, f: impl FnOnce() -> R) -> R {
        self.arm(held_by, None, false, f)
    }

    fn arm<R>(
        &self,
        held_by: Option<HeldBy<'_>>,
        wake_word: Option<&AtomicU32>,
        cancellable: bool,
        f: impl FnOnce() -> R,
    ) -> R {
        let Some((_, s)) = self.slot else {
            return f();
        };
        // Only the owner moves the pin away from IDLE, so this is exact.
        if s.pin.load(Ordering::Relaxed) != PIN_IDLE {
            return f();
        }
        let (holder, owner) = match held_by {
            Some(HeldBy::Holder(h)) => (ptr::from_ref(h).cast_mut(), ptr::null_mut()),
            Some(HeldBy::Ident(w)) => (ptr::null_mut(), ptr::from_ref(w).cast_mut()),
            None => (ptr::null_mut(), ptr::null_mut()),
        };
        s.pin_token.store(self.token.0, Ordering::Relaxed);
        s.holder_ptr.store(holder, Ordering::Relaxed);
        s.owner_ptr.store(owner, Ordering::Relaxed);
        s.wake_word.store(
            wake_word.map_or(ptr::null_mut(), |w| ptr::from_ref(w).cast_mut()),
            Ordering::Relaxed,
        );
        // Publishes the pointers to readers, who take the pin with `Acquire`.
        s.pin.store(PIN_ARMED, Ordering::Release);

        // What a `Cancellable` backend checks; set after arming, so a cancel that finds the
        // wake word can also be seen by the sleeper.
        if cancellable {
            let _ = ARMED_CANCEL.try_with(|a| a.set(Some((s, self.token.0))));
        }

        /// Disarms on every way out of `f`, unwinding included. Private, so it cannot be
        /// leaked by the caller.
        struct Disarm(&'static Slot);
        impl Drop for Disarm {
            fn drop(&mut self) {
                let _ = ARMED_CANCEL.try_with(|a| a.set(None));
                self.0.disarm();
            }
        }
        let _disarm = Disarm(s);
        f()
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        let Some((_, s)) = self.slot else {
            return;
        };
        // Clear the record only if it is still ours (a nested guard may have replaced it).
        if self.is_current() {
            s.write_wait(WAIT_NONE, 0, 0, 0, 0, 0);
        }
        let _ = CURRENT.try_with(|r| r.guards.set(r.guards.get().saturating_sub(1)));
    }
}

thread_local! {
    /// The calling thread's armed, cancellable wait: its slot and token (see
    /// [`WaitGuard::armed`]). Read by [`Cancellable`] only when it is about to sleep or has
    /// been woken, never on a fast path.
    static ARMED_CANCEL: Cell<Option<(&'static Slot, u64)>> = const { Cell::new(None) };
}

/// Whether the calling thread's armed wait has been cancelled ([`cancel_wait`]).
#[inline]
fn armed_wait_cancelled() -> bool {
    ARMED_CANCEL
        .try_with(|a| {
            // Acquire: pairs with the watchdog's Release store in `cancel_wait`.
            a.get()
                .is_some_and(|(s, token)| s.cancel.load(Ordering::Acquire) == token)
        })
        .unwrap_or(false)
}

/// A [`Wait`] backend that makes a cancelled wait end: it waits in `W`, but returns
/// [`WaitResult::Interrupted`] instead of sleeping, or instead of `Woken`, once the calling
/// thread's armed wait ([`WaitGuard::armed`]) has been cancelled by [`cancel_wait`].
///
/// This is the hook that lets a watchdog break a deadlock whose waiters were already asleep:
/// [`cancel_wait`] marks the wait and wakes the armed wake word (the lock's own word), the
/// waiter's sleep returns, and the lock's (or event's) sleep loop leaves exactly as it leaves
/// for a signal: without the lock, taking itself out of the lock's count of starving
/// waiters, or taking a lock that was handed off to it (then the acquire succeeded after
/// all). Other sleepers of the same word wake spuriously, look at the lock, and sleep again.
/// The caller tells a cancellation from a signal with [`WaitGuard::is_cancelled`].
///
/// A wake-up that the cancelled sleeper received is passed on to another sleeper of the word
/// (it may have been a release's only wake-up).
///
/// The check is a thread-local read and one load, done only around a sleep: the uncontended
/// paths of a lock with this backend are the same instructions as with `W`. A cancel that
/// lands between the check and the sleep is not seen by that sleep; [`cancel_wait`] is
/// meant to be repeated while the same wait is still there (the watchdog does so every
/// interval).
pub struct Cancellable<W: Wait>(PhantomData<fn() -> W>);

impl<W: Wait> Wait for Cancellable<W> {
    #[inline]
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult {
        if armed_wait_cancelled() {
            return WaitResult::Interrupted;
        }
        match W::wait(word, expected, deadline) {
            WaitResult::Woken if armed_wait_cancelled() => {
                // The wake-up may have been a release's `wake_one`, meant for whichever
                // sleeper it reached: this one leaves without the lock, so pass it on, or
                // another sleeper could stay asleep on a free lock. (A signal never takes a
                // wake-up: `futex` returns `EINTR` only when it was not woken.) A spurious
                // wake-up costs the others a look at the lock.
                W::wake_one(word);
                WaitResult::Interrupted
            }
            r => r,
        }
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

/// What [`cancel_wait`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cancel {
    /// The wait was still in progress: it is marked cancelled, and its sleepers were woken if
    /// the waiter armed a wake word.
    Requested,
    /// That wait is over (or the thread is gone): nothing was done.
    WaitEnded,
}

/// How many times [`cancel_wait`] wakes a cancelled waiter that is still in its wait, and
/// how long it lets the waiter run between two wake-ups.
const CANCEL_WAKES: u32 = 16;
const CANCEL_REWAKE_PAUSE: Duration = Duration::from_micros(250);

/// Asks `thread` to abandon the wait `token` (from a snapshot) and wakes it: its wait loop
/// (sleeping in a [`Cancellable`] backend) sees [`WaitGuard::is_cancelled`] and returns
/// without the lock.
///
/// The wake-up can race with the waiter going to sleep (the watchdog does not change the lock
/// word, so a wake that lands between the waiter's last look at its cancel flag and its sleep
/// is lost). So this call wakes the armed word again, a quarter of a millisecond apart, while
/// the same wait is still there, up to about 4 ms; a watchdog that still sees the wait later
/// calls this again. Other sleepers of the same word wake spuriously and go back to sleep.
pub fn cancel_wait(thread: ThreadSlot, token: WaitToken) -> Cancel {
    let Some(s) = live_slot(thread) else {
        return Cancel::WaitEnded;
    };
    if token.0 == 0 || s.seq.load(Ordering::Acquire) != token.0 {
        return Cancel::WaitEnded;
    }
    // Release: pairs with the waiter's Acquire in `is_cancelled`. If the wait ended just now,
    // the token matches no later wait (tokens only grow), so this is harmless.
    s.cancel.store(token.0, Ordering::Release);
    for round in 0..CANCEL_WAKES {
        if round > 0 {
            std::thread::sleep(CANCEL_REWAKE_PAUSE);
        }
        if s.gen.load(Ordering::Acquire) != thread.generation
            || s.seq.load(Ordering::Acquire) != token.0
        {
            break; // the wait is over
        }
        with_pinned(s, token, |p| {
            if let Some(word) = p.wake_word {
                crate::wait::DefaultWait::wake_all(word);
                Fallback::wake_all(word);
            }
        });
    }
    Cancel::Requested
}

/// The armed pointers of a slot, valid while the pin is held.
pub(super) struct Pinned<'p> {
    pub(super) holder: Option<&'p Holder>,
    pub(super) owner: Option<&'p AtomicU64>,
    pub(super) wake_word: Option<&'p AtomicU32>,
}

/// Runs `f` with the armed pointers of `s` if its armed wait is `token`; `None` if nothing is
/// armed, the armed wait is another one, or another reader kept the pin busy.
fn with_pinned<R>(s: &Slot, token: WaitToken, f: impl FnOnce(Pinned<'_>) -> R) -> Option<R> {
    let mut tries = 0;
    loop {
        match s
            .pin
            .compare_exchange_weak(PIN_ARMED, PIN_BUSY, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(PIN_IDLE) => return None,
            Err(_) => {
                tries += 1;
                if tries > 1000 {
                    return None;
                }
                spin_loop();
            }
        }
    }
    let r = (s.pin_token.load(Ordering::Relaxed) == token.0).then(|| {
        let holder = s.holder_ptr.load(Ordering::Relaxed);
        let owner = s.owner_ptr.load(Ordering::Relaxed);
        let wake = s.wake_word.load(Ordering::Relaxed);
        // SAFETY: for the three dereferences below,
        // - each pointer is null or was made by `WaitGuard::armed` from a reference that
        //   outlives the `armed` call (its borrow covers the whole call);
        // - it was stored before `pin` became ARMED (Release), and we took the pin from ARMED
        //   to BUSY (Acquire), so we see that store;
        // - `armed` cannot return before its `disarm` moves the pin from ARMED to IDLE, which
        //   cannot happen while we hold BUSY; so the referents are alive until we store ARMED
        //   again below, and the references do not escape `f` (their lifetime is local).
        let pinned = unsafe {
            Pinned {
                holder: holder.cast_const().as_ref(),
                owner: owner.cast_const().as_ref(),
                wake_word: wake.cast_const().as_ref(),
            }
        };
        f(pinned)
    });
    // Gives the pin back; Release orders our reads before the owner's disarm (Acquire).
    s.pin.store(PIN_ARMED, Ordering::Release);
    r
}

/// A raw, possibly torn read of one live slot, made by [`read_all`].
#[derive(Clone, Debug)]
pub(super) struct RawThread {
    pub(super) slot: ThreadSlot,
    pub(super) ident: u64,
    pub(super) native_id: u64,
    pub(super) name: Option<Arc<str>>,
    pub(super) wait: Option<RawWait>,
    pub(super) held: Vec<RawHeld>,
    /// The wait record could not be read consistently (the owner kept rewriting it).
    pub(super) torn: bool,
}

/// A raw wait record.
#[derive(Clone, Debug)]
pub(super) struct RawWait {
    pub(super) what: WaitFor,
    pub(super) site: Option<SiteId>,
    pub(super) timed: bool,
    pub(super) since_ns: u64,
    pub(super) token: WaitToken,
    pub(super) cancel_requested: bool,
    /// The holder word read through the armed pointer while the wait was pinned.
    pub(super) holder: Option<HolderRead>,
    /// The same wait was seen before and after every holder read of the snapshot.
    pub(super) stable: bool,
}

/// A holder as read from a lock.
#[derive(Clone, Copy, Debug)]
pub(super) enum HolderRead {
    /// A [`Holder`] word (0 and the signal bit possible).
    Word(u32),
    /// An owner ident (0 = nobody).
    Ident(u64),
}

/// A raw held-list entry.
#[derive(Clone, Copy, Debug)]
pub(super) struct RawHeld {
    pub(super) lock: LockId,
    pub(super) site: Option<SiteId>,
    pub(super) since_ns: u64,
}

/// Attempts at a consistent read of one wait record before giving up and marking it torn.
const READ_TRIES: u32 = 64;

/// Reads one slot's wait record under the seqlock: `Ok(None)` no wait, `Err(())` torn.
fn read_wait(s: &Slot) -> Result<Option<RawWait>, ()> {
    for _ in 0..READ_TRIES {
        let s1 = s.seq.load(Ordering::Acquire);
        if s1 % 2 == 1 {
            spin_loop();
            continue;
        }
        let kind = s.wait_kind.load(Ordering::Relaxed);
        let a = s.wait_a.load(Ordering::Relaxed);
        let b = s.wait_b.load(Ordering::Relaxed);
        let site = s.wait_site.load(Ordering::Relaxed);
        let flags = s.wait_flags.load(Ordering::Relaxed);
        let since_ns = s.wait_since.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != s1 {
            continue;
        }
        return Ok(WaitFor::decode(kind, a, b).map(|what| RawWait {
            what,
            site: SiteId::from_u32(site),
            timed: flags & FLAG_TIMED != 0,
            since_ns,
            token: WaitToken(s1),
            cancel_requested: s.cancel.load(Ordering::Relaxed) == s1,
            holder: None,
            stable: false,
        }));
    }
    Err(())
}

/// Reads every live slot without blocking any thread (see the module docs for the three
/// passes and what "stable" means).
pub(super) fn read_all() -> Vec<RawThread> {
    let mut out = read_threads();
    read_holders(&mut out);
    mark_stable(&mut out);
    out
}

/// Pass 1: identities and wait records.
fn read_threads() -> Vec<RawThread> {
    let high = HIGH_WATER.load(Ordering::Acquire);
    let mut out = Vec::new();
    for index in 0..high {
        let Some(s) = slot_at(index) else { continue };
        let gen = s.gen.load(Ordering::Acquire);
        // Free (even) or being claimed (CLAIMED, whose base is even): not a live thread.
        if gen % 2 == 0 {
            continue;
        }
        let (wait, torn) = match read_wait(s) {
            Ok(w) => (w, false),
            Err(()) => (None, true),
        };
        let name = match s.name.try_lock() {
            Ok(n) => n.clone(),
            Err(TryLockError::Poisoned(p)) => p.into_inner().clone(),
            Err(TryLockError::WouldBlock) => None,
        };
        let held = s
            .held
            .iter()
            .filter_map(|e| {
                let lock = e.lock.load(Ordering::Acquire);
                let site = e.site.load(Ordering::Relaxed);
                let since_ns = e.since.load(Ordering::Relaxed);
                (lock != 0 && e.lock.load(Ordering::Relaxed) == lock).then_some(RawHeld {
                    lock: LockId(lock),
                    site: SiteId::from_u32(site),
                    since_ns,
                })
            })
            .collect();
        let raw = RawThread {
            slot: ThreadSlot {
                index,
                generation: gen,
            },
            ident: s.ident.load(Ordering::Relaxed),
            native_id: s.native_id.load(Ordering::Relaxed),
            name,
            wait,
            held,
            torn,
        };
        // The identity is only valid if the registration did not change meanwhile.
        if s.gen.load(Ordering::Acquire) == gen {
            out.push(raw);
        }
    }
    out
}

/// Pass 2: holders, through the armed pointers of each wait.
fn read_holders(out: &mut [RawThread]) {
    for t in out.iter_mut() {
        let Some(w) = t.wait.as_mut() else { continue };
        let Some(s) = slot_at(t.slot.index) else {
            continue;
        };
        w.holder = with_pinned(s, w.token, |p| {
            p.holder.map(|h| HolderRead::Word(h.get())).or_else(|| {
                p.owner
                    .map(|o| HolderRead::Ident(o.load(Ordering::Relaxed)))
            })
        })
        .flatten();
    }
}

/// Pass 3: which waits lasted across every holder read.
fn mark_stable(out: &mut [RawThread]) {
    for t in out.iter_mut() {
        let Some(w) = t.wait.as_mut() else { continue };
        let Some(s) = slot_at(t.slot.index) else {
            continue;
        };
        w.stable = s.gen.load(Ordering::Acquire) == t.slot.generation
            && s.seq.load(Ordering::Acquire) == w.token.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_round_trip() {
        let t = ThreadSlot {
            index: 5,
            generation: 7,
        };
        assert!(t.matches_packed(t.packed()));
        assert!(t.matches_packed(t.packed() | SIGNAL_BIT));
        assert_ne!(t.packed(), 0);
        let later = ThreadSlot {
            index: 5,
            generation: 9,
        };
        assert!(!later.matches_packed(t.packed()));
        let biggest = ThreadSlot {
            index: (MAX_THREADS - 1) as u32,
            generation: u32::MAX,
        };
        assert_eq!(biggest.packed() & SIGNAL_BIT, 0);
        assert!(biggest.matches_packed(biggest.packed()));
    }

    #[test]
    fn wait_for_round_trip() {
        let slot = ThreadSlot {
            index: 3,
            generation: 11,
        };
        for w in [
            WaitFor::Lock(LockId(9)),
            WaitFor::RLock(LockId(u64::MAX)),
            WaitFor::Join(slot),
            WaitFor::JoinIdent(77),
            WaitFor::Other { tag: 4, object: 5 },
        ] {
            let (k, a, b) = w.encode();
            assert_eq!(WaitFor::decode(k, a, b), Some(w));
        }
        assert_eq!(WaitFor::decode(WAIT_NONE, 0, 0), None);
    }

    #[test]
    fn holder_release_classifies() {
        let a = ThreadSlot {
            index: 1,
            generation: 1,
        };
        let b = ThreadSlot {
            index: 2,
            generation: 3,
        };
        let h = Holder::new();
        assert_eq!(h.release_by(Some(a)), Released::Unknown);
        h.set(a);
        assert_eq!(h.holder_packed(), Some(a.packed()));
        assert_eq!(h.kind(), LockKind::Mutex);
        assert_eq!(h.release_by(Some(a)), Released::ByAcquirer);
        assert_eq!(h.kind(), LockKind::Mutex);
        assert_eq!(h.holder_packed(), None);
        h.set(a);
        assert_eq!(h.release_by(Some(b)), Released::ByOther(a.packed()));
        assert_eq!(h.kind(), LockKind::Signal);
        // Sticky across later acquirer-releases.
        h.set(b);
        assert_eq!(h.holder_packed(), Some(b.packed()));
        assert_eq!(h.release_by(Some(b)), Released::ByAcquirer);
        assert_eq!(h.kind(), LockKind::Signal);
        // The packed forms agree with the slot forms.
        let p = Holder::new();
        p.set_packed(a.packed());
        assert_eq!(p.holder_packed(), Some(a.packed()));
        assert_eq!(p.release_packed(a.packed()), Released::ByAcquirer);
        assert_eq!(p.release_packed(a.packed()), Released::Unknown);
        p.set_packed(a.packed());
        assert_eq!(p.release_packed(0), Released::ByOther(a.packed()));
        assert_eq!(p.kind(), LockKind::Signal);
        // A waiter holding the lock itself makes it a signal; another waiter sees a mutex.
        let m = Holder::new();
        m.set(a);
        assert_eq!(LockKind::classify(m.get(), a), LockKind::Signal);
        assert_eq!(LockKind::classify(m.get(), b), LockKind::Mutex);
    }

    #[test]
    fn guard_sets_and_clears_record() {
        std::thread::spawn(|| {
            let me = register_current_thread().unwrap();
            let s = live_slot(me).unwrap();
            assert_eq!(read_wait(s), Ok(None));
            let g = WaitGuard::begin(WaitFor::Lock(LockId(42)), None, true);
            let w = read_wait(s).unwrap().unwrap();
            assert_eq!(w.what, WaitFor::Lock(LockId(42)));
            assert!(w.timed);
            assert_eq!(w.token, g.token());
            assert!(!g.is_cancelled());
            assert!(!unregister_current_thread(), "guard alive");
            assert_eq!(cancel_wait(me, g.token()), Cancel::Requested);
            assert!(g.is_cancelled());
            drop(g);
            assert_eq!(read_wait(s), Ok(None));
            // The next wait is not cancelled by the old request.
            let g2 = WaitGuard::begin(WaitFor::Other { tag: 1, object: 2 }, None, false);
            assert!(!g2.is_cancelled());
            assert_eq!(
                cancel_wait(me, WaitToken(g2.token().0 - 2)),
                Cancel::WaitEnded
            );
            drop(g2);
            assert!(unregister_current_thread());
            assert_eq!(current_slot(), None);
            assert!(live_slot(me).is_none());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn stable_only_if_the_same_wait_spans_the_holder_reads() {
        std::thread::spawn(|| {
            let me = register_current_thread().unwrap();
            let holder = Holder::new();
            holder.set(me);
            let find = |v: &[RawThread]| v.iter().position(|t| t.slot == me).unwrap();
            let g = WaitGuard::begin(WaitFor::Lock(LockId(1)), None, false);
            g.armed(Some(HeldBy::Holder(&holder)), None, || {
                let mut v = read_threads();
                let i = find(&v);
                read_holders(&mut v);
                mark_stable(&mut v);
                let w = v[i].wait.as_ref().unwrap();
                assert!(w.stable);
                assert!(matches!(w.holder, Some(HolderRead::Word(x)) if me.matches_packed(x)));
            });
            // Read, then the thread moves to another wait before pass 3.
            let mut v = read_threads();
            let i = find(&v);
            drop(g);
            let _g2 = WaitGuard::begin(WaitFor::Lock(LockId(1)), None, false);
            read_holders(&mut v);
            mark_stable(&mut v);
            let w = v[i].wait.as_ref().unwrap();
            assert!(!w.stable);
            // Not armed: no holder either.
            assert!(w.holder.is_none());
        })
        .join()
        .unwrap();
    }

    impl PartialEq for RawWait {
        fn eq(&self, other: &Self) -> bool {
            (self.what, self.token, self.timed) == (other.what, other.token, other.timed)
        }
    }
}
