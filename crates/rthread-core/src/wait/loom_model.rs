//! The loom backend (only under `cfg(loom)`): a model of `futex(2)` that loom can explore.
//!
//! One queue of sleepers for all words, behind a loom `Mutex`, stands for the kernel's futex
//! hash buckets and their lock; one loom `Condvar` parks the sleepers. The model keeps the
//! futex's rules, which are what the locks rely on:
//!
//! - [`Wait::wait`] compares the word with `expected` under the queue lock and queues itself
//!   in the same critical section, and a waker changes the word *before* it takes that lock,
//!   so a wake-up is never lost between the check and the sleep.
//! - [`Wait::wake_one`] wakes exactly one sleeper of that word (the longest queued, as the
//!   kernel's FIFO order among equal priorities does), not all of them: a lock that needs more
//!   than one wake-up per release hangs in the model, as it would on Linux.
//! - A sleeper that was woken returns [`WaitResult::Woken`] even if its timer or a signal came
//!   too (the kernel reports a wake that dequeued the waiter as a wake).
//! - An untimed sleep lasts until a wake-up or a signal ([`Loom::signal`]); nothing else ends
//!   it, so a lost wake-up is a deadlock that loom reports.
//! - A timed sleep may time out at any moment: it leaves the queue lock and takes it again,
//!   and unless it was woken or interrupted meanwhile, its time is up. Loom places that moment
//!   at every point of the other threads' runs. The sleeper's clock then jumps to the deadline
//!   ([`crate::sync::clock::advance_to`]), so "timed out" always means "the deadline passed".
//!
//! What the model does not do: spurious wake-ups (`Woken` with nothing changed), and the
//! ordering is stronger than the kernel promises (the queue lock orders a waker's writes before
//! a woken sleeper's reads). The locks never rely on that ordering: after every wake they take
//! the lock word with an `Acquire` read-modify-write of their own.

use core::cell::Cell;

use loom::sync::{Condvar, Mutex, MutexGuard};

use super::{Wait, WaitResult};
use crate::deadline::Deadline;
use crate::sync::atomic::{AtomicU32, Ordering};

/// One thread asleep (in the model) on one word.
struct Sleeper {
    /// The word's address.
    word: usize,
    /// Which sleeper this is.
    ticket: u64,
    /// Dequeued by a `wake_one`/`wake_all`.
    woken: bool,
    /// Interrupted by [`Loom::signal`].
    interrupted: bool,
}

#[derive(Default)]
struct Queue {
    sleepers: Vec<Sleeper>,
    next_ticket: u64,
}

struct Futexes {
    queue: Mutex<Queue>,
    parked: Condvar,
}

loom::lazy_static! {
    // Made afresh in every execution of a model.
    static ref FUTEXES: Futexes = Futexes {
        queue: Mutex::new(Queue::default()),
        parked: Condvar::new(),
    };
}

loom::thread_local! {
    static LOG: Cell<WaitLog> = Cell::new(WaitLog::default());
}

/// What the calling thread's waits in the model came to: tests read it to tell which path of a
/// lock a thread took (spun to the lock, slept, timed out asleep, ...).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WaitLog {
    /// Calls of [`Wait::wait`] that found the word changed and returned at once.
    pub changed: u32,
    /// Calls that went to sleep.
    pub slept: u32,
    /// Sleeps ended by a wake-up.
    pub woken: u32,
    /// Sleeps (or calls with a deadline already past) that timed out.
    pub timed_out: u32,
    /// Sleeps ended by [`Loom::signal`].
    pub interrupted: u32,
}

fn log(f: impl FnOnce(&mut WaitLog)) {
    LOG.with(|cell| {
        let mut log = cell.get();
        f(&mut log);
        cell.set(log);
    });
}

fn lock_queue() -> MutexGuard<'static, Queue> {
    FUTEXES.queue.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(word: &AtomicU32) -> usize {
    core::ptr::from_ref(word) as usize
}

/// Removes sleeper `ticket` and reports why it leaves, if it has a reason to: woken first,
/// then interrupted, then (for a timed sleep whose timer is taken to have fired) timed out.
fn leave(queue: &mut Queue, ticket: u64, timer_fired: bool) -> Option<WaitResult> {
    let i = queue
        .sleepers
        .iter()
        .position(|s| s.ticket == ticket)
        .expect("a sleeper stays queued until it leaves");
    let s = &queue.sleepers[i];
    let result = if s.woken {
        WaitResult::Woken
    } else if s.interrupted {
        WaitResult::Interrupted
    } else if timer_fired {
        WaitResult::TimedOut
    } else {
        return None;
    };
    queue.sleepers.remove(i);
    Some(result)
}

/// The futex model. Zero-sized, like the real backends.
#[derive(Clone, Copy, Debug, Default)]
pub struct Loom;

impl Loom {
    /// A signal arrives: every thread asleep in the model right now returns
    /// [`WaitResult::Interrupted`] (unless it was woken first), as `futex(2)` returns `EINTR`.
    pub fn signal() {
        let mut queue = lock_queue();
        for s in queue.sleepers.iter_mut().filter(|s| !s.woken) {
            s.interrupted = true;
        }
        drop(queue);
        FUTEXES.parked.notify_all();
    }

    /// How the calling thread's waits went so far in this execution.
    #[must_use]
    pub fn thread_log() -> WaitLog {
        LOG.with(Cell::get)
    }

    /// Wakes up to `count` queued sleepers of `word`, oldest first.
    fn wake(word: &AtomicU32, count: usize) {
        let key = key(word);
        let mut queue = lock_queue();
        let mut woke = 0;
        for s in queue
            .sleepers
            .iter_mut()
            .filter(|s| s.word == key && !s.woken && !s.interrupted)
            .take(count)
        {
            s.woken = true;
            woke += 1;
        }
        drop(queue);
        if woke > 0 {
            // The condvar is shared by every sleeper: the others look at their flags and go
            // back to sleep.
            FUTEXES.parked.notify_all();
        }
    }
}

impl Wait for Loom {
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult {
        let mut queue = lock_queue();
        // Under the queue lock, as the kernel reads the word under its bucket lock.
        if word.load(Ordering::Relaxed) != expected {
            log(|l| l.changed += 1);
            return WaitResult::Woken;
        }
        if deadline.is_some_and(|d| d.has_passed()) {
            log(|l| l.timed_out += 1);
            return WaitResult::TimedOut;
        }
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.sleepers.push(Sleeper {
            word: key(word),
            ticket,
            woken: false,
            interrupted: false,
        });
        log(|l| l.slept += 1);
        let result = match deadline {
            None => loop {
                queue = FUTEXES
                    .parked
                    .wait(queue)
                    .unwrap_or_else(|e| e.into_inner());
                if let Some(result) = leave(&mut queue, ticket, false) {
                    break result;
                }
            },
            Some(deadline) => {
                // The timer fires when this thread next gets the queue lock, unless a wake-up
                // or a signal came first: loom tries every point in between.
                drop(queue);
                let mut queue = lock_queue();
                let result = leave(&mut queue, ticket, true).expect("the timer has fired");
                if result == WaitResult::TimedOut {
                    crate::sync::clock::advance_to(deadline.as_nanos());
                }
                result
            }
        };
        log(|l| match result {
            WaitResult::Woken => l.woken += 1,
            WaitResult::TimedOut => l.timed_out += 1,
            WaitResult::Interrupted => l.interrupted += 1,
        });
        result
    }

    fn wake_one(word: &AtomicU32) {
        Self::wake(word, 1);
    }

    fn wake_all(word: &AtomicU32) {
        Self::wake(word, usize::MAX);
    }
}
