//! Deadlock and hang reports on real threads: cycles through tracked locks, `RLock`s and joins,
//! breaking a cycle, signal classification, slot reuse, and snapshots under churn.
//!
//! Every test is bounded: threads are joined with `join_within`, and conditions that only a
//! snapshot can observe ("that thread is now blocked in the lock") are polled with a bound.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{join_all_within, join_within, HANG};
use rthread_core::diag::{
    self, cancel_wait, intern_site, register_current_thread, site, snapshot, Cancel, Cancelled,
    Certainty, Cycle, LockKind, Snapshot, ThreadSlot, TrackedLock, TrackedRLock, WaitFor,
    WaitGuard,
};
use rthread_core::wait::{DefaultWait, Wait};
use rthread_core::Acquire;

/// Counts each thread's heap allocations, so a test can check that the wait path allocates
/// nothing once the thread is registered.
struct CountingAlloc;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so this
// allocator upholds exactly `System`'s guarantees; the counter is a const-initialised
// thread-local without a destructor, which never allocates.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: the caller's obligations for `alloc` are passed on unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc` above) with `layout`.
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.with(std::cell::Cell::get)
}

/// Takes snapshots until `pred` holds (bounded by [`HANG`]).
fn snapshot_until(what: &str, mut pred: impl FnMut(&Snapshot) -> bool) -> Snapshot {
    let start = Instant::now();
    loop {
        let s = snapshot();
        if pred(&s) {
            return s;
        }
        assert!(
            start.elapsed() < HANG,
            "never saw {what}; last snapshot:\n{}",
            s.text()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The cycle whose threads are exactly `slots` (in any rotation), if the snapshot has it.
fn cycle_of(s: &Snapshot, slots: &[ThreadSlot]) -> Option<Cycle> {
    s.cycles().into_iter().find(|c| {
        let mut a = c.threads.clone();
        let mut b = slots.to_vec();
        a.sort();
        b.sort();
        a == b
    })
}

/// A plain or reentrant tracked lock, for rings of mixed locks.
enum AnyLock {
    Plain(TrackedLock),
    Reentrant(TrackedRLock),
}

impl AnyLock {
    fn acquire(&self) -> Result<(), Cancelled> {
        match self {
            AnyLock::Plain(l) => l.acquire(),
            AnyLock::Reentrant(l) => l.acquire(),
        }
    }

    fn release(&self) {
        match self {
            AnyLock::Plain(l) => l.release().unwrap(),
            AnyLock::Reentrant(l) => l.release().unwrap(),
        }
    }

    fn id(&self) -> diag::LockId {
        match self {
            AnyLock::Plain(l) => l.id(),
            AnyLock::Reentrant(l) => l.id(),
        }
    }

    /// Free now (takes and gives back).
    fn is_free(&self) -> bool {
        match self {
            AnyLock::Plain(l) => {
                let ok = l.try_acquire();
                if ok {
                    l.release().unwrap();
                }
                ok
            }
            AnyLock::Reentrant(l) => {
                let ok =
                    l.acquire_until(Some(rthread_core::Deadline::now())) == Ok(Acquire::Acquired);
                if ok {
                    l.release().unwrap();
                }
                ok
            }
        }
    }
}

/// `locks.len()` threads; thread `i` takes lock `i`, then (once all hold theirs) lock `i + 1`:
/// a deadlock ring. Returns the threads' slots and handles; each thread returns the result of
/// its second acquire, after releasing everything it got.
fn deadlock_ring(
    locks: &Arc<Vec<AnyLock>>,
) -> (Vec<ThreadSlot>, Vec<JoinHandle<Result<(), Cancelled>>>) {
    let n = locks.len();
    let barrier = Arc::new(Barrier::new(n));
    let (slot_tx, slot_rx) = mpsc::channel();
    let handles = (0..n)
        .map(|i| {
            let (locks, barrier, slot_tx) =
                (Arc::clone(locks), Arc::clone(&barrier), slot_tx.clone());
            std::thread::spawn(move || {
                let me = diag::register_current_thread_named(&format!("ring-{i}")).unwrap();
                slot_tx.send((i, me)).unwrap();
                locks[i].acquire().unwrap();
                barrier.wait();
                let r = locks[(i + 1) % n].acquire();
                if r.is_ok() {
                    locks[(i + 1) % n].release();
                }
                locks[i].release();
                r
            })
        })
        .collect();
    let mut slots = vec![None; n];
    for _ in 0..n {
        let (i, s) = slot_rx.recv_timeout(HANG).unwrap();
        slots[i] = Some(s);
    }
    (slots.into_iter().map(Option::unwrap).collect(), handles)
}

/// Finds the ring's certain cycle, checks it, breaks it, and checks that exactly the victim
/// failed and every lock is free afterwards.
fn detect_and_break(locks: Arc<Vec<AnyLock>>) {
    let (slots, handles) = deadlock_ring(&locks);
    let s = snapshot_until("the certain cycle", |s| {
        cycle_of(s, &slots).is_some_and(|c| c.certainty == Certainty::Certain)
    });
    let cycle = cycle_of(&s, &slots).unwrap();
    assert_eq!(cycle.threads.len(), locks.len());
    for e in &cycle.edges {
        let i = slots.iter().position(|&t| t == e.from).unwrap();
        let next = (i + 1) % locks.len();
        // Thread i waits for lock i + 1, which thread i + 1 holds.
        assert_eq!(e.to, slots[next], "{cycle:#?}");
        match &locks[next] {
            AnyLock::Plain(l) => {
                assert_eq!(e.via, WaitFor::Lock(l.id()));
                assert_eq!(e.lock_kind, Some(LockKind::Mutex));
            }
            AnyLock::Reentrant(l) => {
                assert_eq!(e.via, WaitFor::RLock(l.id()));
                assert_eq!(e.lock_kind, Some(LockKind::Reentrant));
            }
        }
    }
    let text = s.text();
    assert!(text.contains("(certain):"), "{text}");
    assert!(text.contains("\"ring-0\""), "{text}");
    for l in locks.iter() {
        assert!(text.contains(&format!("#{}", l.id().0)), "{text}");
    }
    assert!(text.contains("diag.rs:"), "creation sites: {text}");

    // Break it: the victim's acquire fails, everyone else gets through.
    let (victim, token) = cycle.victim(&s).unwrap();
    assert_eq!(cancel_wait(victim, token), Cancel::Requested);
    let results = join_all_within(handles, HANG);
    let failed: Vec<usize> = (0..results.len())
        .filter(|&i| results[i].is_err())
        .collect();
    let vi = slots.iter().position(|&t| t == victim).unwrap();
    assert_eq!(failed, vec![vi]);
    assert_eq!(results[vi], Err(Cancelled));
    for (i, l) in locks.iter().enumerate() {
        assert!(l.is_free(), "lock {i} left held");
    }
    // The ring's threads are gone, and with them their records.
    let after = snapshot();
    assert!(slots.iter().all(|&t| after.thread(t).is_none()));
    assert!(cycle_of(&after, &slots).is_none());
}

#[test]
fn two_threads_in_opposite_order() {
    detect_and_break(Arc::new(vec![
        AnyLock::Plain(TrackedLock::new()),
        AnyLock::Plain(TrackedLock::new()),
    ]));
}

#[test]
fn three_thread_cycle_through_locks_and_an_rlock() {
    detect_and_break(Arc::new(vec![
        AnyLock::Plain(TrackedLock::new()),
        AnyLock::Reentrant(TrackedRLock::new()),
        AnyLock::Plain(TrackedLock::new()),
    ]));
}

/// A "thread handle" as the binding would have one: a done word that the thread sets at its
/// end, and a join that records `WaitFor::Join` and sleeps on the word with no deadline, armed
/// so that `cancel_wait` wakes it.
struct Done(AtomicU32);

impl Done {
    fn set(&self) {
        self.0.store(1, Ordering::Release);
        DefaultWait::wake_all(&self.0);
    }

    fn join(&self, target: ThreadSlot) -> Result<(), Cancelled> {
        let guard = WaitGuard::begin(WaitFor::Join(target), None, false);
        guard.armed(None, Some(&self.0), || loop {
            if self.0.load(Ordering::Acquire) == 1 {
                return Ok(());
            }
            if guard.is_cancelled() {
                return Err(Cancelled);
            }
            // No deadline: only `set` or `cancel_wait` ends this sleep.
            let _ = DefaultWait::wait(&self.0, 0, None);
        })
    }
}

#[test]
fn join_cycle_is_certain_and_cancel_wakes_the_joiner() {
    let lock = Arc::new(TrackedLock::new());
    let done = Arc::new(Done(AtomicU32::new(0)));
    let (slot_tx, slot_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    // The worker wants the lock that its joiner holds.
    let (l2, d2) = (Arc::clone(&lock), Arc::clone(&done));
    let worker = std::thread::spawn(move || {
        slot_tx.send(register_current_thread().unwrap()).unwrap();
        go_rx.recv_timeout(HANG).unwrap();
        let r = l2.acquire();
        if r.is_ok() {
            l2.release().unwrap();
        }
        d2.set();
        r
    });
    let worker_slot = slot_rx.recv_timeout(HANG).unwrap();
    let (l3, d3) = (Arc::clone(&lock), Arc::clone(&done));
    let (held_tx, held_rx) = mpsc::channel();
    let joiner = std::thread::spawn(move || {
        l3.acquire().unwrap();
        held_tx.send(register_current_thread().unwrap()).unwrap();
        let r = d3.join(worker_slot);
        l3.release().unwrap();
        r
    });
    let joiner_slot = held_rx.recv_timeout(HANG).unwrap();
    // Only now that the joiner holds the lock.
    go_tx.send(()).unwrap();
    let s = snapshot_until("the join cycle", |s| {
        cycle_of(s, &[worker_slot, joiner_slot]).is_some_and(|c| c.certainty == Certainty::Certain)
    });
    let c = cycle_of(&s, &[worker_slot, joiner_slot]).unwrap();
    let join_edge = c.edges.iter().find(|e| e.from == joiner_slot).unwrap();
    assert_eq!(join_edge.via, WaitFor::Join(worker_slot));
    assert_eq!(join_edge.to, worker_slot);
    assert!(s.text().contains("the end of thread slot"), "{}", s.text());

    // Cancel the joiner specifically: it sleeps with no deadline, so only the wake-up of
    // `cancel_wait` can end its wait. A wake-up may land just before it sleeps again; a
    // watchdog repeats the request while the same wait is there.
    let token = s.thread(joiner_slot).unwrap().wait.as_ref().unwrap().token;
    let start = Instant::now();
    while !joiner.is_finished() {
        assert!(start.elapsed() < HANG, "cancelled joiner never woke");
        if cancel_wait(joiner_slot, token) == Cancel::WaitEnded {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(join_within(joiner, HANG), Err(Cancelled));
    // The joiner released the lock on its way out, so the worker got it and finished.
    assert_eq!(join_within(worker, HANG), Ok(()));
    assert!(lock.try_acquire());
    lock.release().unwrap();
}

#[test]
fn hang_without_cycle_is_a_long_wait_with_a_holder() {
    let lock = Arc::new(TrackedLock::new());
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let l2 = Arc::clone(&lock);
    // The holder blocks on something untracked (a channel), not on a lock.
    let holder = std::thread::spawn(move || {
        l2.acquire().unwrap();
        held_tx.send(register_current_thread().unwrap()).unwrap();
        go_rx.recv_timeout(HANG).unwrap();
        l2.release().unwrap();
    });
    let holder_slot = held_rx.recv_timeout(HANG).unwrap();
    let (w_tx, w_rx) = mpsc::channel();
    let l3 = Arc::clone(&lock);
    let waiter = std::thread::spawn(move || {
        w_tx.send(register_current_thread().unwrap()).unwrap();
        l3.acquire()
    });
    let waiter_slot = w_rx.recv_timeout(HANG).unwrap();
    let s = snapshot_until("the waiter blocked on the held lock", |s| {
        s.thread(waiter_slot)
            .and_then(|t| t.wait.as_ref())
            .is_some_and(|w| w.holder == Some(holder_slot))
    });
    let w = s.thread(waiter_slot).unwrap().wait.clone().unwrap();
    assert_eq!(w.what, WaitFor::Lock(lock.id()));
    assert_eq!(w.lock_kind, Some(LockKind::Mutex));
    assert!(!w.timed);
    assert_eq!(site(w.site.unwrap()), site(lock.site()));
    assert!(s.thread(holder_slot).unwrap().wait.is_none());
    assert!(s.cycles().iter().all(|c| !c.threads.contains(&waiter_slot)));
    let long: Vec<ThreadSlot> = s
        .long_waits(Duration::ZERO)
        .iter()
        .map(|t| t.slot)
        .collect();
    assert!(long.contains(&waiter_slot));
    assert!(!long.contains(&holder_slot));
    // Nothing has waited for a year.
    assert!(s.long_waits(Duration::from_secs(365 * 86_400)).is_empty());
    assert!(s.text().contains(&format!("for lock #{}", lock.id().0)));

    go_tx.send(()).unwrap();
    join_within(holder, HANG);
    assert_eq!(join_within(waiter, HANG), Ok(()));
    lock.release().unwrap();
    // The wait is over: no record left.
    let s = snapshot();
    assert!(s.thread(waiter_slot).is_none());
}

#[test]
fn cancelled_waiter_leaves_the_lock_to_its_holder() {
    let lock = Arc::new(TrackedLock::new());
    lock.acquire().unwrap();
    let (tx, rx) = mpsc::channel();
    let (l2, (done_tx, done_rx)) = (Arc::clone(&lock), mpsc::channel());
    let waiter = std::thread::spawn(move || {
        tx.send(register_current_thread().unwrap()).unwrap();
        let r = l2.acquire();
        // Still registered, and no longer waiting.
        let me = diag::current_slot().unwrap();
        let still = snapshot().thread(me).unwrap().wait.clone();
        done_tx.send(still).unwrap();
        r
    });
    let waiter_slot = rx.recv_timeout(HANG).unwrap();
    let s = snapshot_until("the waiter", |s| {
        s.thread(waiter_slot).is_some_and(|t| t.wait.is_some())
    });
    let token = s.thread(waiter_slot).unwrap().wait.as_ref().unwrap().token;
    assert_eq!(cancel_wait(waiter_slot, token), Cancel::Requested);
    assert_eq!(join_within(waiter, HANG), Err(Cancelled));
    assert_eq!(done_rx.recv_timeout(HANG).unwrap(), None);
    // The lock is still ours, untouched: not free, released once, then free.
    assert!(lock.is_locked());
    assert_eq!(
        lock.holder().holder_packed(),
        Some(register_current_thread().unwrap().packed())
    );
    lock.release().unwrap();
    assert!(!lock.is_locked());
    assert!(lock.try_acquire());
    lock.release().unwrap();
    assert!(lock.release().is_err());
    // A stale token no longer cancels anything.
    assert_eq!(cancel_wait(waiter_slot, token), Cancel::WaitEnded);
}

#[test]
fn signal_and_mutex_classification() {
    // Released by its acquirer: a mutex.
    let m = TrackedLock::new();
    m.acquire().unwrap();
    m.release().unwrap();
    assert_eq!(m.holder().kind(), LockKind::Mutex);

    // The `threading.Condition` waiter pattern: a thread takes a fresh lock, then waits on it
    // again until another thread releases it.
    let s_lock = Arc::new(TrackedLock::new());
    let (tx, rx) = mpsc::channel();
    let l2 = Arc::clone(&s_lock);
    let waiter = std::thread::spawn(move || {
        l2.acquire().unwrap();
        tx.send(register_current_thread().unwrap()).unwrap();
        let r = l2.acquire();
        l2.release().unwrap();
        r
    });
    let w = rx.recv_timeout(HANG).unwrap();
    let snap = snapshot_until("the self-wait", |s| {
        s.thread(w)
            .and_then(|t| t.wait.as_ref())
            .is_some_and(|x| x.holder == Some(w))
    });
    let info = snap.thread(w).unwrap().wait.clone().unwrap();
    // Waiting on a lock it holds itself: a signal, not a certain self-deadlock.
    assert_eq!(info.lock_kind, Some(LockKind::Signal));
    let c = cycle_of(&snap, &[w]).unwrap();
    assert_eq!(c.certainty, Certainty::Suspected);
    assert!(snap.text().contains("signal"), "{}", snap.text());

    // The notifier releases it from another thread: sticky signal from now on.
    s_lock.release().unwrap();
    assert_eq!(join_within(waiter, HANG), Ok(()));
    assert_eq!(s_lock.holder().kind(), LockKind::Signal);
    s_lock.acquire().unwrap();
    s_lock.release().unwrap();
    assert_eq!(s_lock.holder().kind(), LockKind::Signal);
}

#[test]
fn cycle_through_a_known_signal_is_only_suspected() {
    // Two threads in opposite order, but one of the locks has been used as a signal before.
    let a = TrackedLock::new();
    let b = TrackedLock::new();
    b.holder().mark_signal();
    let locks = Arc::new(vec![AnyLock::Plain(a), AnyLock::Plain(b)]);
    let (slots, handles) = deadlock_ring(&locks);
    let s = snapshot_until("the cycle", |s| {
        cycle_of(s, &slots).is_some_and(|c| c.edges.iter().all(|e| e.lock_kind.is_some()))
            && slots.iter().all(|&t| {
                s.thread(t)
                    .and_then(|t| t.wait.as_ref())
                    .is_some_and(|w| w.stable)
            })
    });
    let c = cycle_of(&s, &slots).unwrap();
    assert_eq!(c.certainty, Certainty::Suspected, "{c:#?}");
    let through_b = c
        .edges
        .iter()
        .find(|e| e.lock_kind == Some(LockKind::Signal))
        .unwrap();
    assert_eq!(through_b.certainty, Certainty::Suspected);
    assert!(s.text().contains("possible deadlock"), "{}", s.text());
    // Break it anyway (a watchdog would only report it).
    let (victim, token) = c.victim(&s).unwrap();
    assert_eq!(cancel_wait(victim, token), Cancel::Requested);
    let results = join_all_within(handles, HANG);
    assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
}

#[test]
fn snapshots_never_block_64_churning_threads() {
    const THREADS: usize = 64;
    const LOCKS: usize = 4;
    let locks: Arc<Vec<TrackedLock>> = Arc::new((0..LOCKS).map(|_| TrackedLock::new()).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let churners: Vec<_> = (0..THREADS)
        .map(|i| {
            let (locks, stop, rounds) =
                (Arc::clone(&locks), Arc::clone(&stop), Arc::clone(&rounds));
            std::thread::spawn(move || {
                let mut k = i;
                while !stop.load(Ordering::Relaxed) {
                    let l = &locks[k % LOCKS];
                    l.acquire().unwrap();
                    std::hint::spin_loop();
                    l.release().unwrap();
                    // Now and then end this registration, so slots are freed and reused
                    // under the snapshots' feet.
                    if k % 50 == 0 {
                        diag::unregister_current_thread();
                    }
                    k += 1;
                    rounds.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // A second snapshotter, so that readers also meet each other on the waiters' pins.
    let other_count = Arc::new(AtomicUsize::new(0));
    let other_snapshots = {
        let (stop, count) = (Arc::clone(&stop), Arc::clone(&other_count));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let s = snapshot();
                let _ = s.cycles();
                count.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Snapshot continuously until one has seen contended waits with their holders, and the
    // churners kept going meanwhile.
    let start = Instant::now();
    let mut snapshots = 0u32;
    let mut seen_waits = 0usize;
    while seen_waits < 20
        || rounds.load(Ordering::Relaxed) < 10_000
        || other_count.load(Ordering::Relaxed) < 20
    {
        assert!(
            start.elapsed() < HANG,
            "churn stalled: {} rounds",
            rounds.load(Ordering::Relaxed)
        );
        let s = snapshot();
        snapshots += 1;
        // Consistency of what was read: unique live slots, holders of our locks among them.
        let mut idx: Vec<u32> = s.threads.iter().map(|t| t.slot.index()).collect();
        let n = idx.len();
        idx.dedup();
        assert_eq!(idx.len(), n, "slots sorted and unique");
        for t in &s.threads {
            if let Some(w) = &t.wait {
                if let WaitFor::Lock(id) = w.what {
                    if locks.iter().any(|l| l.id() == id) {
                        if let Some(h) = w.holder {
                            assert!(s.thread(h).is_some());
                            seen_waits += 1;
                        }
                    }
                }
            }
        }
        let _ = s.cycles();
        let _ = s.text();
    }
    stop.store(true, Ordering::Relaxed);
    join_all_within(churners, HANG);
    join_within(other_snapshots, HANG);
    assert!(snapshots > 0);
    for l in locks.iter() {
        assert!(l.try_acquire());
        l.release().unwrap();
    }
}

#[test]
fn slot_reuse_changes_generation_and_drops_stale_holders() {
    // A thread takes a lock and ends without releasing it (as a thread's "done" lock is).
    let lock = Arc::new(TrackedLock::new());
    let l2 = Arc::clone(&lock);
    let old = join_within(
        std::thread::spawn(move || {
            let me = register_current_thread().unwrap();
            l2.acquire().unwrap();
            me
        }),
        HANG,
    );
    assert!(
        snapshot().thread(old).is_none(),
        "ended thread still listed"
    );
    assert_eq!(lock.holder().holder_packed(), Some(old.packed()));
    // New threads until one gets the same index. Registration takes the lowest free index,
    // so the threads that got another one stay alive (holding those) until one gets it; tests
    // running in parallel may hold it for a while too.
    let start = Instant::now();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let stop_rx = Arc::new(std::sync::Mutex::new(stop_rx));
    let mut parked = Vec::new();
    let reuser_slot = loop {
        assert!(start.elapsed() < HANG, "slot {} never reused", old.index());
        let (tx, rx) = mpsc::channel();
        let stop_rx = Arc::clone(&stop_rx);
        parked.push(std::thread::spawn(move || {
            tx.send(register_current_thread().unwrap()).unwrap();
            // Every parked thread ends when `stop_tx` is dropped.
            let _ = stop_rx.lock().unwrap().recv_timeout(HANG);
        }));
        let s = rx.recv_timeout(HANG).unwrap();
        if s.index() == old.index() {
            break s;
        }
    };
    assert_ne!(reuser_slot.generation(), old.generation());
    assert!(reuser_slot.generation() % 2 == 1);
    // A waiter on the orphaned lock: its holder word names the old registration, which must
    // not be blamed on the thread now in that slot.
    let (tx, rx) = mpsc::channel();
    let l3 = Arc::clone(&lock);
    let waiter = std::thread::spawn(move || {
        tx.send(register_current_thread().unwrap()).unwrap();
        l3.acquire_until(Some(rthread_core::Deadline::after(HANG)))
    });
    let w = rx.recv_timeout(HANG).unwrap();
    let s = snapshot_until("the waiter on the orphaned lock", |s| {
        s.thread(w)
            .and_then(|t| t.wait.as_ref())
            .is_some_and(|x| x.stable)
            && s.thread(reuser_slot).is_some()
    });
    let info = s.thread(w).unwrap().wait.clone().unwrap();
    assert!(info.timed);
    assert_eq!(info.holder, None, "blamed the slot's new thread");
    assert!(s.thread(old).is_none());
    lock.release().unwrap();
    assert_eq!(join_within(waiter, HANG), Ok(Acquire::Acquired));
    lock.release().unwrap();
    drop(stop_tx);
    join_all_within(parked, HANG);
}

#[test]
fn held_lists_in_diagnostic_mode() {
    // Only ever turned on: other tests running meanwhile just get longer reports.
    diag::set_track_held(true);
    let a = TrackedLock::new();
    let b = TrackedLock::new();
    let me = register_current_thread().unwrap();
    a.acquire().unwrap();
    let line = line!() + 1;
    assert!(b.try_acquire());
    let s = snapshot();
    let held = &s.thread(me).unwrap().held;
    assert!(held.iter().any(|h| h.lock == a.id()));
    let hb = held.iter().find(|h| h.lock == b.id()).unwrap();
    let at = site(hb.site.unwrap()).unwrap();
    assert!(at.file.ends_with("diag.rs") && at.line == line, "{at}");
    assert!(s.text().contains(&format!("holding lock #{}", b.id().0)));
    // Released here, and by another thread (a signal): both leave the list.
    b.release().unwrap();
    std::thread::scope(|scope| {
        scope.spawn(|| a.release().unwrap());
    });
    let s = snapshot();
    let held = &s.thread(me).unwrap().held;
    assert!(
        held.iter().all(|h| h.lock != a.id() && h.lock != b.id()),
        "{held:?}"
    );
}

#[test]
fn own_held_handle_is_the_threads_list() {
    diag::set_track_held(true);
    let me = register_current_thread().unwrap();
    // Only a live registration has a list; the handle and the packed calls see one list.
    assert!(diag::OwnHeld::of(0).is_none());
    let held = diag::OwnHeld::of(me.packed()).unwrap();
    // SAFETY: the bits come from `to_bits`.
    let held = unsafe { diag::OwnHeld::from_bits(held.to_bits()) };
    let (x, y) = (diag::LockId(0x5eed_0001), diag::LockId(0x5eed_0002));
    let listed = |id: diag::LockId| {
        snapshot()
            .thread(me)
            .unwrap()
            .held
            .iter()
            .any(|h| h.lock == id)
    };
    assert!(held.push(x, None));
    assert!(diag::held_push_own(me.packed(), y, None));
    assert!(listed(x) && listed(y));
    diag::held_pop_own(me.packed(), x);
    held.pop(y);
    assert!(!listed(x) && !listed(y));
    // A registration that ended has no list, and a new thread's handle is its own.
    let other = std::thread::spawn(|| {
        let t = register_current_thread().unwrap();
        (
            t.packed(),
            diag::OwnHeld::of(t.packed()).map(diag::OwnHeld::to_bits),
        )
    })
    .join()
    .unwrap();
    assert!(other.1.is_some() && other.1 != Some(held.to_bits()));
    assert!(diag::OwnHeld::of(other.0).is_none());
}

#[test]
fn sites_are_interned_once() {
    let x = intern_site("app.py", 12, "worker");
    assert_eq!(x, intern_site("app.py", 12, "worker"));
    assert_ne!(x, intern_site("app.py", 13, "worker"));
    let s = site(x).unwrap();
    assert_eq!(s.to_string(), "app.py:12 in worker");
    let line = line!() + 1;
    let l = TrackedLock::new();
    let s = site(l.site()).unwrap();
    assert!(s.file.ends_with("diag.rs") && s.line == line, "{s}");
}

#[test]
fn names_and_identity_in_snapshots() {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let h = std::thread::spawn(move || {
        let slot = diag::register_current_thread_named("named-worker").unwrap();
        tx.send((
            slot,
            rthread_core::thread::current_ident(),
            rthread_core::thread::native_id(),
        ))
        .unwrap();
        let _ = stop_rx.recv_timeout(HANG);
    });
    let (slot, ident, native) = rx.recv_timeout(HANG).unwrap();
    let s = snapshot();
    let t = s.thread(slot).unwrap();
    assert_eq!((t.ident, t.native_id), (ident, native));
    assert_eq!(t.name.as_deref(), Some("named-worker"));
    assert_eq!(s.thread_by_ident(ident).map(|t| t.slot), Some(slot));
    assert!(s.text().contains("thread \"named-worker\" (slot"));
    drop(stop_tx);
    join_within(h, HANG);
    assert!(snapshot().thread(slot).is_none());
}

#[test]
fn after_fork_child_keeps_only_the_forking_thread() {
    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let slot = register_current_thread().unwrap();
        let g = WaitGuard::begin(WaitFor::Other { tag: 7, object: 7 }, None, false);
        tx.send(slot).unwrap();
        let _ = stop_rx.recv_timeout(HANG);
        drop(g);
    });
    let other_slot = rx.recv_timeout(HANG).unwrap();
    let me = register_current_thread().unwrap();
    assert!(snapshot().thread(other_slot).is_some());

    // SAFETY: `fork` has no preconditions; the child below only runs code that does not
    // depend on the other threads (glibc's malloc is fork-safe) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(|| {
            diag::after_fork_child();
            let s = snapshot();
            s.thread(other_slot).is_none() && s.thread(me).is_some_and(|t| t.wait.is_none())
        })
        .unwrap_or(false);
        // SAFETY: `_exit` is always safe to call; it ends the child without running the
        // parent's atexit handlers or destructors.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: `pid` is our child and `status` a valid, writable int.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child saw the parent's threads: {status}"
    );
    // The parent is untouched.
    assert!(snapshot().thread(other_slot).is_some());
    drop(stop_tx);
    join_within(other, HANG);
}

#[test]
fn contended_acquire_allocates_nothing_after_registration() {
    // Diagnostic mode on from the start: `held_lists_in_diagnostic_mode` turns it on at any
    // moment, and if that fell between the two rounds, the second one interned this call site
    // (3 allocations). Seen under ThreadSanitizer's slower schedule. With it on here, the
    // first round always does any interning, and the second checks the costlier mode.
    diag::set_track_held(true);
    let lock = Arc::new(TrackedLock::new());
    let (slot_tx, slot_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (count_tx, count_rx) = mpsc::channel();
    let l2 = Arc::clone(&lock);
    let waiter = std::thread::spawn(move || {
        slot_tx.send(register_current_thread().unwrap()).unwrap();
        for _ in 0..2 {
            go_rx.recv_timeout(HANG).unwrap();
            let before = allocations();
            // The main thread holds the lock: this is the slow path, with a wait record,
            // an armed holder word and a cancellable sleep.
            l2.acquire().unwrap();
            let during = allocations() - before;
            l2.release().unwrap();
            count_tx.send(during).unwrap();
        }
    });
    let slot = slot_rx.recv_timeout(HANG).unwrap();
    let mut counts = Vec::new();
    for _ in 0..2 {
        lock.acquire().unwrap();
        go_tx.send(()).unwrap();
        let me = diag::current_slot().unwrap();
        snapshot_until("the waiter blocked", |s| {
            s.thread(slot)
                .and_then(|t| t.wait.as_ref())
                .is_some_and(|w| w.holder == Some(me))
        });
        lock.release().unwrap();
        counts.push(count_rx.recv_timeout(HANG).unwrap());
    }
    join_within(waiter, HANG);
    // The first round may intern this call site (diagnostic mode); the second must not
    // allocate at all.
    assert_eq!(counts[1], 0, "{counts:?}");
}

/// A waiter that has been asleep for a while (its spin long over) is woken by `cancel_wait`
/// and leaves without the lock, while a second sleeper of the same lock wakes spuriously,
/// sleeps again, and takes the lock when its holder releases it. Nothing sleeps in slices:
/// without the wake-up, the cancelled waiter would sleep until the release.
fn cancel_wakes_a_long_sleeper(lock: Arc<AnyLock>) {
    lock.acquire().unwrap();
    let spawn_waiter = |name: &'static str| {
        let (tx, rx) = mpsc::channel();
        let l2 = Arc::clone(&lock);
        let h = std::thread::spawn(move || {
            tx.send(diag::register_current_thread_named(name).unwrap())
                .unwrap();
            let r = l2.acquire();
            if r.is_ok() {
                l2.release();
            }
            r
        });
        (rx.recv_timeout(HANG).unwrap(), h)
    };
    let (victim, victim_h) = spawn_waiter("victim");
    let (other, other_h) = spawn_waiter("other");
    let s = snapshot_until("both waiters", |s| {
        [victim, other]
            .iter()
            .all(|&t| s.thread(t).is_some_and(|t| t.wait.is_some()))
    });
    // Long past any spin: both are asleep in the futex.
    std::thread::sleep(Duration::from_millis(100));
    let token = s.thread(victim).unwrap().wait.as_ref().unwrap().token;
    let start = Instant::now();
    assert_eq!(cancel_wait(victim, token), Cancel::Requested);
    assert_eq!(join_within(victim_h, HANG), Err(Cancelled));
    let took = start.elapsed();
    // The other waiter is still in its same wait, and the lock still ours.
    let other_token = snapshot_until("the other waiter", |_| true)
        .thread(other)
        .and_then(|t| t.wait.as_ref().map(|w| w.token));
    assert_eq!(
        other_token,
        s.thread(other).unwrap().wait.as_ref().map(|w| w.token)
    );
    assert!(!lock.is_free_for_others());
    lock.release();
    assert_eq!(join_within(other_h, HANG), Ok(()));
    assert!(lock.is_free(), "lock left held");
    // Generous: the wake-up is immediate; slices or a missed wake would show as HANG.
    assert!(took < Duration::from_secs(5), "cancel took {took:?}");
}

impl AnyLock {
    /// Whether another thread could take it now (the caller holds it: must be false).
    fn is_free_for_others(&self) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::scope(|sc| {
            sc.spawn(|| tx.send(self.is_free()).unwrap());
        });
        rx.recv().unwrap()
    }
}

#[test]
fn cancel_wakes_a_long_sleeper_on_a_lock() {
    cancel_wakes_a_long_sleeper(Arc::new(AnyLock::Plain(TrackedLock::new())));
}

#[test]
fn cancel_wakes_a_long_sleeper_on_an_rlock() {
    cancel_wakes_a_long_sleeper(Arc::new(AnyLock::Reentrant(TrackedRLock::new())));
}
