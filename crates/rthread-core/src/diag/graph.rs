//! Snapshots of the registry, the wait-for graph they imply, and its cycles.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::registry::{
    self, HolderRead, LockId, LockKind, RawThread, ThreadSlot, WaitFor, WaitToken,
};
use super::sites::SiteId;
use crate::deadline::Deadline;

/// How sure a wait-for edge, or a cycle of them, is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Certainty {
    /// Through an owned lock (a mutex-like plain lock, an `RLock`) or a join, with every
    /// thread seen in the same wait before and after the holders were read: a deadlock.
    Certain,
    /// Through a signal (a plain lock that others release), or read while a thread moved:
    /// worth reporting, never worth breaking.
    Suspected,
}

/// A lock held by a thread, from its diagnostic held list ([`super::set_track_held`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldLock {
    /// The lock.
    pub lock: LockId,
    /// Where it was acquired, if recorded.
    pub site: Option<SiteId>,
    /// When it was acquired (monotonic).
    pub since: Deadline,
}

/// A thread's current wait, as seen by a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitInfo {
    /// What it waits for.
    pub what: WaitFor,
    /// Where the awaited object was created, if known.
    pub site: Option<SiteId>,
    /// Whether the wait has a deadline.
    pub timed: bool,
    /// When the wait began (monotonic).
    pub since: Deadline,
    /// Names this wait for [`super::cancel_wait`].
    pub token: WaitToken,
    /// A watchdog already asked this wait to be abandoned.
    pub cancel_requested: bool,
    /// The thread that holds what it waits for (lock holder, or joined thread), if known and
    /// live.
    pub holder: Option<ThreadSlot>,
    /// The classification of the awaited lock (`None` for joins and other waits).
    pub lock_kind: Option<LockKind>,
    /// The same wait was seen before and after the snapshot read the holders.
    pub stable: bool,
}

/// One registered thread in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    /// Slot and generation.
    pub slot: ThreadSlot,
    /// CPython-style ident ([`crate::thread::current_ident`]).
    pub ident: u64,
    /// Kernel thread id.
    pub native_id: u64,
    /// Name given with [`super::set_current_thread_name`], if any (and not being changed at
    /// that moment).
    pub name: Option<Arc<str>>,
    /// Current wait, if any.
    pub wait: Option<WaitInfo>,
    /// Held locks (diagnostic mode only; empty otherwise).
    pub held: Vec<HeldLock>,
    /// The wait record kept changing while it was read; `wait` is then `None`.
    pub torn: bool,
}

impl ThreadInfo {
    /// How long it has waited at `now`, if waiting.
    #[must_use]
    pub fn waited(&self, now: Deadline) -> Option<Duration> {
        self.wait
            .as_ref()
            .map(|w| Duration::from_nanos(now.as_nanos().saturating_sub(w.since.as_nanos())))
    }
}

/// One wait-for edge: `from` waits for `via`, which `to` holds (or is, for a join).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The waiting thread.
    pub from: ThreadSlot,
    /// The thread it waits for.
    pub to: ThreadSlot,
    /// What it waits on.
    pub via: WaitFor,
    /// The lock's classification, for lock waits.
    pub lock_kind: Option<LockKind>,
    /// Certain unless through a signal or read while `from` moved.
    pub certainty: Certainty,
}

/// A cycle of the wait-for graph, starting at its lowest slot index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cycle {
    /// The threads, in wait order: each waits for the next, the last for the first.
    pub threads: Vec<ThreadSlot>,
    /// The edges, `edges[i]` from `threads[i]`.
    pub edges: Vec<Edge>,
    /// `Certain` iff every edge is.
    pub certainty: Certainty,
}

impl Cycle {
    /// The cycle's waits as `(thread, token)`, e.g. to compare two snapshots.
    #[must_use]
    pub fn waits(&self, snapshot: &Snapshot) -> Vec<(ThreadSlot, WaitToken)> {
        self.threads
            .iter()
            .filter_map(|&t| Some((t, snapshot.thread(t)?.wait.as_ref()?.token)))
            .collect()
    }

    /// The wait to abandon to break the cycle: the one that began last among the untimed
    /// waits (a timed wait ends on its own), or among all if every wait is timed.
    #[must_use]
    pub fn victim(&self, snapshot: &Snapshot) -> Option<(ThreadSlot, WaitToken)> {
        let waits: Vec<(ThreadSlot, &WaitInfo)> = self
            .threads
            .iter()
            .filter_map(|&t| Some((t, snapshot.thread(t)?.wait.as_ref()?)))
            .collect();
        let pick = |timed: Option<bool>| {
            waits
                .iter()
                .filter(|(_, w)| timed.is_none_or(|t| w.timed == t))
                .max_by_key(|(t, w)| (w.since, t.index()))
                .map(|(t, w)| (*t, w.token))
        };
        pick(Some(false)).or_else(|| pick(None))
    }
}

/// Every registered thread at one moment (approximately: see the module docs).
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When the snapshot was taken (monotonic).
    pub taken_at: Deadline,
    /// Live threads, by slot index.
    pub threads: Vec<ThreadInfo>,
}

/// Takes a snapshot of every registered thread. Never blocks a thread of the program: it reads
/// atomics, and holds a waiting thread's pin for a few instructions per wait.
#[must_use]
pub fn snapshot() -> Snapshot {
    let taken_at = Deadline::now();
    let raw = registry::read_all();
    let by_index: HashMap<u32, usize> = raw
        .iter()
        .enumerate()
        .map(|(i, t)| (t.slot.index(), i))
        .collect();
    let mut by_ident: HashMap<u64, Option<ThreadSlot>> = HashMap::new();
    for t in &raw {
        by_ident
            .entry(t.ident)
            .and_modify(|e| *e = None) // two live slots with one ident: ambiguous
            .or_insert(Some(t.slot));
    }
    let live = |slot: ThreadSlot| -> Option<ThreadSlot> {
        by_index
            .get(&slot.index())
            .map(|&i| raw[i].slot)
            .filter(|s| *s == slot)
    };
    let from_packed = |packed: u32| -> Option<ThreadSlot> {
        let index = (packed & 0xF_FFFF).checked_sub(1)?;
        let t = raw[*by_index.get(&index)?].slot;
        t.matches_packed(packed).then_some(t)
    };
    let from_ident = |ident: u64| by_ident.get(&ident).copied().flatten();

    let threads = raw
        .iter()
        .map(|t: &RawThread| {
            let wait = t.wait.as_ref().map(|w| {
                let (holder, lock_kind) = match w.what {
                    WaitFor::Lock(_) => match w.holder {
                        Some(HolderRead::Word(word)) => {
                            (from_packed(word), Some(LockKind::classify(word, t.slot)))
                        }
                        Some(HolderRead::Ident(id)) => (from_ident(id), None),
                        None => (None, None),
                    },
                    WaitFor::RLock(_) => (
                        match w.holder {
                            Some(HolderRead::Word(word)) => from_packed(word),
                            Some(HolderRead::Ident(id)) => from_ident(id),
                            None => None,
                        },
                        Some(LockKind::Reentrant),
                    ),
                    WaitFor::Join(target) => (live(target), None),
                    WaitFor::JoinIdent(id) => (from_ident(id), None),
                    WaitFor::Other { .. } => (None, None),
                };
                WaitInfo {
                    what: w.what,
                    site: w.site,
                    timed: w.timed,
                    since: Deadline::from_nanos(w.since_ns),
                    token: w.token,
                    cancel_requested: w.cancel_requested,
                    holder,
                    lock_kind,
                    stable: w.stable,
                }
            });
            ThreadInfo {
                slot: t.slot,
                ident: t.ident,
                native_id: t.native_id,
                name: t.name.clone(),
                wait,
                held: t
                    .held
                    .iter()
                    .map(|h| HeldLock {
                        lock: h.lock,
                        site: h.site,
                        since: Deadline::from_nanos(h.since_ns),
                    })
                    .collect(),
                torn: t.torn,
            }
        })
        .collect();
    Snapshot { taken_at, threads }
}

impl Snapshot {
    /// The thread of `slot` (same registration), if it was live.
    #[must_use]
    pub fn thread(&self, slot: ThreadSlot) -> Option<&ThreadInfo> {
        self.threads
            .binary_search_by_key(&slot.index(), |t| t.slot.index())
            .ok()
            .map(|i| &self.threads[i])
            .filter(|t| t.slot == slot)
    }

    /// The live thread with this ident, if exactly one.
    #[must_use]
    pub fn thread_by_ident(&self, ident: u64) -> Option<&ThreadInfo> {
        let mut it = self.threads.iter().filter(|t| t.ident == ident);
        let first = it.next()?;
        it.next().is_none().then_some(first)
    }

    /// The wait-for edge out of `thread`, if it waits for a known live thread.
    #[must_use]
    pub fn edge(&self, thread: &ThreadInfo) -> Option<Edge> {
        let w = thread.wait.as_ref()?;
        let to = w.holder?;
        self.thread(to)?;
        let certainty = if w.stable && w.lock_kind != Some(LockKind::Signal) {
            Certainty::Certain
        } else {
            Certainty::Suspected
        };
        Some(Edge {
            from: thread.slot,
            to,
            via: w.what,
            lock_kind: w.lock_kind,
            certainty,
        })
    }

    /// Every cycle of the wait-for graph. Each thread has at most one outgoing edge, so the
    /// cycles are disjoint and found in one walk per thread (linear time).
    #[must_use]
    pub fn cycles(&self) -> Vec<Cycle> {
        let n = self.threads.len();
        let pos: HashMap<ThreadSlot, usize> = self
            .threads
            .iter()
            .enumerate()
            .map(|(i, t)| (t.slot, i))
            .collect();
        let edges: Vec<Option<(usize, Edge)>> = self
            .threads
            .iter()
            .map(|t| {
                let e = self.edge(t)?;
                Some((*pos.get(&e.to)?, e))
            })
            .collect();
        // 0 = unvisited; otherwise the number of the walk that first reached the node.
        let mut walk_of = vec![0usize; n];
        let mut cycles = Vec::new();
        for start in 0..n {
            if walk_of[start] != 0 {
                continue;
            }
            let walk = start + 1;
            let mut at = start;
            loop {
                walk_of[at] = walk;
                let Some((next, _)) = &edges[at] else { break };
                let next = *next;
                if walk_of[next] == walk {
                    cycles.push(self.cycle_from(next, &edges));
                    break;
                }
                if walk_of[next] != 0 {
                    break; // joins a path walked before: any cycle there is found already
                }
                at = next;
            }
        }
        cycles.sort_by_key(|c| c.threads[0].index());
        cycles
    }

    fn cycle_from(&self, entry: usize, edges: &[Option<(usize, Edge)>]) -> Cycle {
        let mut members = vec![entry];
        let mut at = entry;
        while let Some((next, _)) = &edges[at] {
            if *next == entry {
                break;
            }
            members.push(*next);
            at = *next;
        }
        // Start at the lowest slot index, so that the same cycle reads the same every time.
        let lowest = (0..members.len())
            .min_by_key(|&i| self.threads[members[i]].slot.index())
            .unwrap_or(0);
        members.rotate_left(lowest);
        let edges: Vec<Edge> = members
            .iter()
            .filter_map(|&m| edges[m].as_ref().map(|(_, e)| e.clone()))
            .collect();
        let certainty = if edges.iter().all(|e| e.certainty == Certainty::Certain) {
            Certainty::Certain
        } else {
            Certainty::Suspected
        };
        Cycle {
            threads: members.iter().map(|&m| self.threads[m].slot).collect(),
            edges,
            certainty,
        }
    }

    /// The certain cycles of this snapshot that were already certain in `earlier`, with every
    /// thread still in the very same wait (same [`WaitToken`]): what a watchdog should act on.
    ///
    /// One certain cycle is already a deadlock (see the module docs); requiring it twice, some
    /// interval apart, also rules out anything the racy holder reads could have got wrong.
    #[must_use]
    pub fn confirmed_cycles(&self, earlier: &Snapshot) -> Vec<Cycle> {
        let mut before: Vec<Vec<(ThreadSlot, WaitToken)>> = earlier
            .cycles()
            .into_iter()
            .filter(|c| c.certainty == Certainty::Certain)
            .map(|c| c.waits(earlier))
            .collect();
        for w in &mut before {
            w.sort();
        }
        self.cycles()
            .into_iter()
            .filter(|c| {
                let mut w = c.waits(self);
                w.sort();
                c.certainty == Certainty::Certain
                    && w.len() == c.threads.len()
                    && before.contains(&w)
            })
            .collect()
    }

    /// Threads that have waited at least `min` when the snapshot was taken, longest first.
    #[must_use]
    pub fn long_waits(&self, min: Duration) -> Vec<&ThreadInfo> {
        let mut v: Vec<&ThreadInfo> = self
            .threads
            .iter()
            .filter(|t| t.waited(self.taken_at).is_some_and(|d| d >= min))
            .collect();
        v.sort_by_key(|t| (t.wait.as_ref().map(|w| w.since), t.slot.index()));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(index: u32) -> ThreadSlot {
        ThreadSlot::from_parts(index, 1)
    }

    fn thread(index: u32) -> ThreadInfo {
        ThreadInfo {
            slot: slot(index),
            ident: 1000 + u64::from(index),
            native_id: 2000 + u64::from(index),
            name: None,
            wait: None,
            held: Vec::new(),
            torn: false,
        }
    }

    fn waiting(
        index: u32,
        what: WaitFor,
        holder: Option<u32>,
        kind: Option<LockKind>,
    ) -> ThreadInfo {
        let mut t = thread(index);
        t.wait = Some(WaitInfo {
            what,
            site: None,
            timed: false,
            since: Deadline::from_nanos(u64::from(index) * 1_000),
            token: WaitToken(2 * u64::from(index) + 2),
            cancel_requested: false,
            holder: holder.map(slot),
            lock_kind: kind,
            stable: true,
        });
        t
    }

    fn mutex(index: u32, lock: u64, holder: u32) -> ThreadInfo {
        waiting(
            index,
            WaitFor::Lock(LockId(lock)),
            Some(holder),
            Some(LockKind::Mutex),
        )
    }

    fn snap(threads: Vec<ThreadInfo>) -> Snapshot {
        Snapshot {
            taken_at: Deadline::from_nanos(1_000_000_000),
            threads,
        }
    }

    #[test]
    fn two_cycle_with_tail() {
        // 0 -> 1 -> 2 -> 1, and 3 idle.
        let s = snap(vec![
            mutex(0, 10, 1),
            mutex(1, 11, 2),
            mutex(2, 12, 1),
            thread(3),
        ]);
        let c = s.cycles();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].threads, vec![slot(1), slot(2)]);
        assert_eq!(c[0].certainty, Certainty::Certain);
        assert_eq!(c[0].edges[0].via, WaitFor::Lock(LockId(11)));
        assert_eq!(c[0].edges[1].to, slot(1));
    }

    #[test]
    fn three_cycle_rotated_to_lowest_and_two_cycles() {
        let s = snap(vec![
            mutex(0, 1, 5),
            mutex(1, 2, 4),
            waiting(
                3,
                WaitFor::RLock(LockId(3)),
                Some(6),
                Some(LockKind::Reentrant),
            ),
            mutex(4, 4, 3),
            waiting(5, WaitFor::Join(slot(0)), Some(0), None),
            waiting(
                6,
                WaitFor::RLock(LockId(7)),
                Some(3),
                Some(LockKind::Reentrant),
            ),
        ]);
        let c = s.cycles();
        assert_eq!(c.len(), 2, "{c:#?}");
        assert_eq!(c[0].threads, vec![slot(0), slot(5)]);
        assert_eq!(c[1].threads, vec![slot(3), slot(6)]);
        assert!(c.iter().all(|c| c.certainty == Certainty::Certain));
        // 1 -> 4 -> 3 is a tail into the second cycle, not part of it.
        assert!(!c[1].threads.contains(&slot(4)));
    }

    #[test]
    fn signal_or_unstable_edge_makes_it_suspected() {
        let mut s = snap(vec![
            mutex(0, 1, 1),
            waiting(1, WaitFor::Lock(LockId(2)), Some(0), Some(LockKind::Signal)),
        ]);
        assert_eq!(s.cycles()[0].certainty, Certainty::Suspected);
        s.threads[1].wait.as_mut().unwrap().lock_kind = Some(LockKind::Mutex);
        assert_eq!(s.cycles()[0].certainty, Certainty::Certain);
        s.threads[0].wait.as_mut().unwrap().stable = false;
        assert_eq!(s.cycles()[0].certainty, Certainty::Suspected);
    }

    #[test]
    fn edges_to_unknown_or_ended_slots_are_dropped() {
        let mut s = snap(vec![mutex(0, 1, 1), mutex(1, 2, 7)]);
        assert!(s.cycles().is_empty());
        assert!(s.edge(&s.threads[1]).is_none());
        // Same index, other generation: an ended registration.
        s.threads[1].wait.as_mut().unwrap().holder = Some(ThreadSlot::from_parts(0, 3));
        assert!(s.cycles().is_empty());
        s.threads[1].wait.as_mut().unwrap().holder = Some(slot(0));
        assert_eq!(s.cycles().len(), 1);
        // No holder known, or a wait that is no edge.
        s.threads[1].wait.as_mut().unwrap().holder = None;
        assert!(s.cycles().is_empty());
        s.threads[1] = waiting(1, WaitFor::Other { tag: 1, object: 2 }, None, None);
        assert!(s.cycles().is_empty());
    }

    #[test]
    fn self_wait_on_own_lock_is_a_suspected_self_cycle() {
        let s = snap(vec![waiting(
            0,
            WaitFor::Lock(LockId(1)),
            Some(0),
            Some(LockKind::Signal),
        )]);
        let c = s.cycles();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].threads, vec![slot(0)]);
        assert_eq!(c[0].certainty, Certainty::Suspected);
    }

    #[test]
    fn long_waits_longest_first() {
        let s = snap(vec![
            mutex(0, 1, 9),
            thread(1),
            mutex(2, 2, 9),
            mutex(3, 3, 9),
        ]);
        // Waits began at 0, 2000, 3000 ns; taken at 1 s.
        let all: Vec<u32> = s
            .long_waits(Duration::ZERO)
            .iter()
            .map(|t| t.slot.index())
            .collect();
        assert_eq!(all, vec![0, 2, 3]);
        let long = s.long_waits(Duration::from_nanos(1_000_000_000 - 2_000));
        assert_eq!(long.len(), 2);
        assert!(s.long_waits(Duration::from_secs(2)).is_empty());
    }

    #[test]
    fn confirmed_cycles_need_the_same_waits_twice() {
        let first = snap(vec![mutex(0, 1, 1), mutex(1, 2, 0), thread(2)]);
        let mut second = first.clone();
        assert_eq!(second.confirmed_cycles(&first).len(), 1);
        // Thread 1 left and re-entered a wait: a new token, not the same deadlock.
        second.threads[1].wait.as_mut().unwrap().token = WaitToken(1_000);
        assert!(second.confirmed_cycles(&first).is_empty());
        // Suspected in the earlier snapshot: not confirmed either.
        let mut early = first.clone();
        early.threads[0].wait.as_mut().unwrap().stable = false;
        assert!(first.confirmed_cycles(&early).is_empty());
        assert_eq!(first.confirmed_cycles(&first).len(), 1);
    }

    #[test]
    fn victim_is_latest_untimed_wait() {
        let mut s = snap(vec![mutex(0, 1, 1), mutex(1, 2, 2), mutex(2, 3, 0)]);
        let c = &s.cycles()[0];
        assert_eq!(c.victim(&s).map(|v| v.0), Some(slot(2)));
        s.threads[2].wait.as_mut().unwrap().timed = true;
        let c = &s.cycles()[0];
        assert_eq!(c.victim(&s).map(|v| v.0), Some(slot(1)));
        assert_eq!(c.waits(&s).len(), 3);
    }
}
