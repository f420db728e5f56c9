//! Who holds what: the pure-Rust foundation for deadlock and hang reports.
//!
//! Every thread that waits on, or holds, a tracked lock has a *slot* in a process-wide table.
//! A watchdog (any thread, no GIL needed) takes a [`snapshot`] of the table, which names every
//! thread, what it waits for and since when, and who holds that; [`Snapshot::cycles`] finds the
//! wait-for cycles, [`Snapshot::long_waits`] the long waits, [`Snapshot::text`] renders a report,
//! and [`cancel_wait`] breaks a certain cycle by making one waiter's acquire fail.
//!
//! ```
//! use rthread_core::diag::{self, Cancel, Cancelled, TrackedLock};
//! use std::sync::{mpsc, Arc};
//! use std::time::Duration;
//!
//! let lock = Arc::new(TrackedLock::new());
//! lock.acquire().unwrap();
//! let me = diag::current_slot().unwrap(); // registered by the acquire
//! let (tx, rx) = mpsc::channel();
//! let l2 = Arc::clone(&lock);
//! let waiter = std::thread::spawn(move || {
//!     tx.send(diag::register_current_thread_named("waiter").unwrap()).unwrap();
//!     l2.acquire() // blocks: the main thread holds the lock
//! });
//! let slot = rx.recv().unwrap();
//! // Poll (bounded) until the waiter is recorded as blocked on the lock we hold.
//! let mut snap = diag::snapshot();
//! for _ in 0..10_000 {
//!     let wait = snap.thread(slot).and_then(|t| t.wait.as_ref());
//!     if wait.is_some_and(|w| w.holder == Some(me)) {
//!         break;
//!     }
//!     std::thread::sleep(Duration::from_millis(1));
//!     snap = diag::snapshot();
//! }
//! let report = snap.text();
//! assert!(report.contains("thread \"waiter\""), "{report}");
//! assert!(report.contains(&format!("for lock #{}", lock.id().0)), "{report}");
//!
//! // What a watchdog does to the waiter it chose to break a deadlock:
//! let token = snap.thread(slot).unwrap().wait.as_ref().unwrap().token;
//! assert_eq!(diag::cancel_wait(slot, token), Cancel::Requested);
//! assert_eq!(waiter.join().unwrap(), Err(Cancelled));
//! lock.release().unwrap();
//! ```
//!
//! # Data model
//!
//! - **Threads** ([`ThreadSlot`]): a dense index into a table of slots, plus a generation
//!   (odd while live) that changes with every registration of the index, so a record that
//!   names an ended thread is recognised and dropped. Slots live in chunks of 256 that are
//!   allocated on first need and never freed, so a `&'static` slot is always valid memory.
//!   A thread registers on its first tracked wait or acquire (or explicitly with
//!   [`register_current_thread`]) and is unregistered by a thread-local destructor at exit.
//! - **Waits**: a slot holds one wait record (what: [`WaitFor`], since when, timed or not,
//!   the awaited object's creation site) written only by its thread through a [`WaitGuard`].
//!   Its sequence number is the wait's [`WaitToken`]: unique per wait, growing per slot.
//! - **Locks** are not in any table. A lock that wants to be reported embeds a [`Holder`]
//!   (one `AtomicU32`: the holder's slot index and generation bits, and a sticky *signal*
//!   bit) and a [`LockId`]. A waiter on the slow path *arms* its wait with a reference to the
//!   holder word ([`WaitGuard::armed`]); that is how a snapshot reaches the lock without a
//!   pointer that could dangle.
//! - **Sites** ([`SiteId`]): `(file, line, function)` interned once in an append-only table, so
//!   records hold a `u32`.
//! - **Held lists** (diagnostic mode, [`set_track_held`]): up to [`HELD_MAX`] locks per thread
//!   with acquire site and time. Off by default: they cost the acquire path a few stores.
//!   The time is a ticker thread's coarse reading ([`HELD_CLOCK_TICK`]), not a clock read per
//!   acquire, so an age reads up to about 15 ms long.
//!
//! # The wait-for graph
//!
//! A thread waits for at most one thing and a lock has at most one holder, so each thread has
//! at most one outgoing edge: to the holder of the lock it waits for, or to the thread it
//! joins. Cycles are therefore disjoint and found in linear time. An edge is *certain* when it
//! goes through an owned lock ([`LockKind::Mutex`]: a plain lock so far always released by its
//! acquirer; [`LockKind::Reentrant`]) or a join, and the waiting thread was seen in the same wait
//! before and after the snapshot read the holders; otherwise it is *suspected*. Through a
//! [`LockKind::Signal`] (a plain lock that some other thread than its acquirer released, or
//! that its own holder waits for, as a `threading.Condition` waiter does) the "holder" is not
//! blamed for certain. Edges to threads that are not live (ended, or slot reused) are dropped.
//!
//! Why "stable" makes a cycle trustworthy: the snapshot reads every wait record (pass 1), then
//! every holder (pass 2), then every wait sequence number again (pass 3). A thread whose token is
//! the same in passes 1 and 3 was inside that one wait during all of pass 2. So when every
//! thread of a cycle is stable, each holder read happened while all of them were blocked, and a
//! blocked thread does not release what it holds: at the end of pass 2 they all still waited
//! for each other. Locks that another thread might release are exactly the signals, which are
//! never certain. A watchdog that wants more margin acts on
//! [`Snapshot::confirmed_cycles`]: certain in two snapshots, with the very same waits.
//!
//! The limit of this: a plain lock is taken for a mutex until a release by another thread
//! shows it is a signal. A lock used as a signal for the first time, whose waiter is not its
//! holder (thread 1 takes it, thread 3 will release it, thread 2 waits for it), can make a
//! cycle look certain when thread 3 could still break it. The binding should therefore mark
//! the locks it knows to be signals with [`Holder::mark_signal`] (a `threading.Condition`'s
//! waiter locks are the common case, and are caught anyway because their holder waits on
//! them), and the watchdog should only "raise" on cycles confirmed over an interval long
//! enough for such a release to have happened.
//!
//! # What is torn-tolerant
//!
//! A snapshot never blocks a thread of the program, so it may see a thread mid-change:
//!
//! - A wait record being rewritten is retried a few times, then reported as `torn` (no wait).
//! - A holder word is read racily; a stale value can only make an edge point to a thread that
//!   no longer holds the lock, and then that thread is not stable (it moved), or the lock is a
//!   signal, so the cycle is not certain.
//! - A slot registered or freed during the snapshot is left out (its generation changed).
//! - Held lists and names are best effort (a name being set reads as none).
//!
//! # Notes about memory ordering
//!
//! - Slot generation (`gen`): registration claims a free slot with an `Acquire`
//!   compare-exchange, writes the identity, and publishes it with a `Release` store of the
//!   odd generation; readers load it with `Acquire` before reading the identity and compare
//!   it again after. Unregistration clears the records and then stores the even generation
//!   with `Release`.
//! - Wait record: a single-writer seqlock of atomics. The writer stores the odd sequence number
//!   (`Relaxed`), a `Release` fence, the fields (`Relaxed`), and the next even number with
//!   `Release`. A reader loads the number with `Acquire`, the fields (`Relaxed`), an `Acquire`
//!   fence, and the number again; equal and even means the fields belong together. Every
//!   field is an atomic, so a torn read is never a data race.
//! - Pin: the owner stores the pointers (`Relaxed`) and then `ARMED` with `Release`; a reader
//!   takes `ARMED -> BUSY` with `Acquire` (so it sees the pointers), uses them, and stores
//!   `ARMED` with `Release`; the owner takes `ARMED -> IDLE` with `Acquire` before its borrow
//!   ends, so every use of the pointers happens before the lock can be freed. This is the one
//!   place a waiter may wait for the observer: leaving an armed wait while a reader holds the
//!   pin (a few instructions, or one wake-up system call) spins, then yields, until it is back.
//! - Cancel: the watchdog stores the token with `Release`; the waiter loads it with `Acquire`.
//! - Holder words and held-list entries are `Relaxed`: written by the lock holder under the
//!   lock's own ordering, read racily by snapshots (see "torn-tolerant").
//!
//! # Integration note (Python binding)
//!
//! The binding (`crates/rthread-py/src/debug.rs`) follows this plan, with one difference: the
//! holder is set from a cached packed slot ([`Holder::set_packed`], [`Holder::release_packed`]:
//! a `const` thread-local is cheaper than the registry's). The plan:
//!
//! - **Lock struct**: add a [`Holder`] (4 bytes) to the binding's lock and `RLock` objects (or,
//!   for `RLock`, point [`HeldBy::Ident`] at its existing owner-ident word: zero extra bytes, the
//!   snapshot maps idents to slots; `RawRLock` then needs a `pub fn owner_word(&self) ->
//!   &AtomicU64` accessor), and a creation [`SiteId`] interned from the Python frame
//!   when the object is created (`intern_site(co_filename, f_lineno, co_qualname)`). The
//!   [`LockId`] can be the object's address.
//! - **Fast path cost**: after a successful acquire, [`Holder::set_current`]: one thread-local
//!   read and one `Relaxed` store (the first call of a thread registers it: allocation once per
//!   thread). Before a release, [`Holder::release_current`]: one thread-local read, one load and
//!   one store. No clock read, no wait record, no allocation. With [`set_track_held`] on, add
//!   [`held_push`]/[`held_remove`] (a clock read and a few stores): diagnostic mode only.
//! - **Slow path** (the thread is about to sleep, GIL released): create a [`WaitGuard`] with
//!   `WaitFor::Lock(id)` / `WaitFor::RLock(id)` / `WaitFor::Join(slot)` (thread handles know the
//!   joined thread's slot or ident), then run the sleeping loop inside
//!   [`WaitGuard::armed`]`(Some(HeldBy::Holder(&holder)), Some(&lock_word), ...)`. Drop the guard
//!   before running Python signal handlers (a handler that waits would replace the record).
//! - **Cancellation ("raise")**: the lock sleeps in a [`Cancellable`] backend (wrapping the
//!   platform's), and the blocked acquire runs inside [`WaitGuard::armed`] with the lock's
//!   [`wake_word`](crate::RawLock::wake_word). The watchdog picks [`Cycle::victim`] of a
//!   *certain* cycle (ideally seen in two snapshots) and calls [`cancel_wait`], which marks
//!   the wait and wakes every sleeper of the armed word. The victim's sleep then returns
//!   `Interrupted`, so the lock's sleep loop leaves as it does for a signal (without the lock,
//!   out of the starving count, or with a lock that was just handed off to it: then the
//!   acquire simply succeeded); the binding sees [`WaitGuard::is_cancelled`] and raises
//!   `DeadlockError` from `acquire()`. No uncontended path changes, and a wait that began
//!   long before the watchdog existed is reached the same way. A wake-up can race with the
//!   waiter going back to sleep, so the watchdog repeats [`cancel_wait`] while the same wait
//!   is still there. A wait that must end holding its lock (`Condition.wait` retaking it)
//!   uses [`WaitGuard::armed_uncancellable`].
//! - **Fork**: call [`after_fork_child`] in the child (with the other at-fork handlers).

mod clock;
mod graph;
pub mod lockdep;
pub mod profile;
mod registry;
mod sites;
mod text;
mod tracked;

pub use clock::TICK as HELD_CLOCK_TICK;
pub use graph::{snapshot, Certainty, Cycle, Edge, HeldLock, Snapshot, ThreadInfo, WaitInfo};
pub use registry::{
    after_fork_child, cancel_wait, current_slot, held_pop_own, held_push, held_push_own,
    held_remove, on_thread_end, register_current_thread, register_current_thread_named,
    set_current_thread_name, set_track_held, track_held, unregister_current_thread, Cancel,
    Cancellable, HeldBy, Holder, LockId, LockKind, OwnHeld, Released, ThreadSlot, WaitFor,
    WaitGuard, WaitToken, HELD_MAX, MAX_THREADS,
};
pub use sites::{intern_caller, intern_location, intern_site, site, Site, SiteId};
pub use tracked::{Cancelled, TrackedLock, TrackedRLock};
