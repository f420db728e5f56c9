//! Lock-order checking ("lockdep"): the order in which locks are taken while others are held,
//! recorded per lock *class*, and the first acquire that would close a cycle in that order.
//!
//! A deadlock between two threads that take two locks in opposite orders (ABBA) only happens
//! when their timing lines up; the *order* is visible in every run. Like Linux's lockdep this
//! records, for each acquire that may block while the thread holds other locks, an edge
//! `held class -> new class` in one process-wide graph, and reports the first acquire whose
//! edge would close a cycle, with the path that is already there, even when this run never
//! deadlocked.
//!
//! - **Classes** ([`Class`]): a lock's creation site ([`SiteId`]), optionally refined by the
//!   innermost creation frame when that differs (a `threading.Condition`'s lock is created in
//!   `threading.py` on behalf of the user's line: `(threading.py:..., user line)` is its own
//!   class, not the user line's). Interned by [`class`].
//! - **Held chain**: per thread, the locks it holds in acquire order ([`push`], [`pop`]).
//! - **Check** ([`check`]): before an acquire that may block. With an empty chain it costs a
//!   thread-local read. Otherwise the chain's classes and the new class are hashed and looked
//!   up in a per-thread set of chains already checked: a program that keeps taking the same
//!   locks in the same order pays that lookup, not a graph search. Checked chains stay valid:
//!   edges are only ever added, and a class only ever leaves the ordering.
//! - **Signals** ([`mark_signal`]): a class whose locks are used as signals (released by
//!   another thread than the acquirer, or waited for by their own holder, as
//!   `threading.Condition` waiter locks are) drops out: it is skipped in held chains, makes
//!   no edges, and path searches do not go through it.
//! - Nesting two locks of one class adds nothing (Linux would report "recursive locking"
//!   and ask for a nesting annotation; lock instances of one class taken in a consistent
//!   per-instance order are common in Python and cannot be told from ABBA by class).
//!
//! A cycle is reported once per `(held class, new class)` pair; the edge that would close it
//! is not added, so the graph stays acyclic and later checks of other chains stay correct.
//!
//! ```
//! use rthread_core::diag::{intern_site, lockdep, LockId};
//!
//! lockdep::enable();
//! let a = lockdep::class(None, intern_site("doc.py", 1, "<module>"));
//! let b = lockdep::class(None, intern_site("doc.py", 2, "<module>"));
//! let ctx = || lockdep::Context::default();
//! // One thread: a, then b.
//! lockdep::push(LockId(1), a);
//! assert!(lockdep::check(b, LockId(77), false, ctx).is_none());
//! lockdep::push(LockId(2), b);
//! lockdep::pop(LockId(2));
//! lockdep::pop(LockId(1));
//! // Another time: b, then a -- the reverse order is reported before the acquire blocks.
//! let v = std::thread::spawn(move || {
//!     lockdep::push(LockId(2), b);
//!     let v = lockdep::check(a, LockId(77), false, ctx);
//!     lockdep::pop(LockId(2));
//!     v
//! })
//! .join()
//! .unwrap()
//! .expect("ABBA reported");
//! assert_eq!((v.new.from, v.new.to), (b, a));
//! assert_eq!((v.path[0].from, v.path[0].to), (a, b));
//! ```
//!
//! Everything here is pure Rust and needs no GIL; the Python binding calls it from its lock
//! types with the GIL held. The stacks of [`Context`] are whatever the caller records (the
//! binding: the Python frames, as interned sites).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::registry::LockId;
use super::sites::SiteId;

/// A lock class: an interned `(creation site, innermost creation frame)` pair. Never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class(u32);

impl Class {
    /// The raw id (never 0).
    #[must_use]
    pub const fn as_u32(self) -> u32 {
        self.0
    }

    /// The class from its raw form; `None` for 0.
    #[must_use]
    pub const fn from_u32(raw: u32) -> Option<Class> {
        if raw == 0 {
            None
        } else {
            Some(Class(raw))
        }
    }
}

/// What a class stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassInfo {
    /// The creation site as the program sees it (the first frame outside the standard
    /// library's synchronisation wrappers, for the binding).
    pub site: SiteId,
    /// The innermost creation frame when it differs from `site` (`threading.py`'s line that
    /// made a `Condition`'s lock, say).
    pub inner: Option<SiteId>,
}

/// Where and by whom an edge was first made (or a check was made): recorded lazily, only
/// for a new edge or a report.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// The thread (the binding: its Python ident).
    pub thread: u64,
    /// The thread's name, if known.
    pub thread_name: Option<Arc<str>>,
    /// The stack, innermost frame first (each frame an interned site).
    pub stack: Arc<[SiteId]>,
}

/// One order: a lock of class `to` was (or is about to be) acquired while one of class `from`
/// was held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeRecord {
    pub from: Class,
    pub to: Class,
    /// The held lock and the lock acquired (the ones of the first time this order was seen).
    pub from_lock: LockId,
    pub to_lock: LockId,
    /// Where the held lock (of class `from`) was acquired, if known.
    pub from_acquired_at: Option<SiteId>,
    /// Where the new lock was acquired.
    pub to_acquired_at: Option<SiteId>,
    /// The first time this order was seen.
    pub context: Context,
}

/// An acquire that would close a cycle in the order graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The new order: `new.from` is held, `new.to` is about to be acquired.
    pub new: EdgeRecord,
    /// The orders already recorded that lead from `new.to` back to `new.from`, in path order
    /// (`path[0].from == new.to`, `path.last().to == new.from`).
    pub path: Vec<EdgeRecord>,
    /// The acquire has a timeout: it cannot wait for ever.
    pub timed: bool,
}

// ---------------------------------------------------------------------------------------------
// Class flags: lock-free reads on the check path.

const FLAG_SIGNAL: u8 = 1;

const PAGE: usize = 4096;
const PAGES: usize = 1024;
type Page = [AtomicU8; PAGE];
static FLAGS: [AtomicPtr<Page>; PAGES] = [const { AtomicPtr::new(std::ptr::null_mut()) }; PAGES];

fn flags_of(c: Class) -> u8 {
    let i = c.0 as usize;
    let Some(page) = FLAGS.get(i / PAGE) else {
        return 0;
    };
    let p = page.load(Ordering::Acquire);
    if p.is_null() {
        return 0;
    }
    // SAFETY: a non-null page pointer was published (Release) by `set_flag` from a leaked
    // `Box<Page>` and is never freed; `i % PAGE` is in bounds.
    unsafe { (*p)[i % PAGE].load(Ordering::Relaxed) }
}

fn set_flag(c: Class, flag: u8) {
    let i = c.0 as usize;
    let Some(page) = FLAGS.get(i / PAGE) else {
        return;
    };
    let mut p = page.load(Ordering::Acquire);
    if p.is_null() {
        let fresh: *mut Page = Box::into_raw(Box::new([const { AtomicU8::new(0) }; PAGE]));
        match page.compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => p = fresh,
            Err(current) => {
                // SAFETY: `fresh` came from Box::into_raw above and was never published.
                drop(unsafe { Box::from_raw(fresh) });
                p = current;
            }
        }
    }
    // SAFETY: `p` is a published, never-freed page; the index is in bounds.
    unsafe { (*p)[i % PAGE].fetch_or(flag, Ordering::Relaxed) };
}

/// Takes `class` out of the ordering: its locks are signals (released by another thread
/// than the acquirer, or waited for by their holder). Sticky.
pub fn mark_signal(class: Class) {
    set_flag(class, FLAG_SIGNAL);
}

/// Whether `class` was marked a signal.
#[must_use]
pub fn is_signal(class: Class) -> bool {
    flags_of(class) & FLAG_SIGNAL != 0
}

// ---------------------------------------------------------------------------------------------
// The graph

#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
}

type Fast = BuildHasherDefault<FastHasher>;

struct EdgeData {
    from_lock: LockId,
    to_lock: LockId,
    from_acquired_at: Option<SiteId>,
    to_acquired_at: Option<SiteId>,
    context: Context,
}

#[derive(Default)]
struct Graph {
    /// `classes[id - 1]`.
    classes: Vec<ClassInfo>,
    by_pair: HashMap<(u32, u32), u32, Fast>,
    /// Adjacency: `out[class]` lists the classes acquired while `class` was held.
    out: HashMap<u32, Vec<u32>, Fast>,
    edges: HashMap<(u32, u32), EdgeData, Fast>,
    /// `(from, to)` pairs whose cycle was reported (their edge was not added).
    reported: HashSet<(u32, u32), Fast>,
}

static GRAPH: Mutex<Option<Graph>> = Mutex::new(None);

fn with_graph<R>(f: impl FnOnce(&mut Graph) -> R) -> R {
    let mut g = GRAPH.lock().unwrap_or_else(PoisonError::into_inner);
    f(g.get_or_insert_with(Graph::default))
}

/// The class of a lock created at `site`, whose innermost creation frame was `inner` (pass
/// `None`, or `Some(site)`, when they are the same).
///
/// # Panics
/// If more than `u32::MAX - 1` classes are interned.
pub fn class(inner: Option<SiteId>, site: SiteId) -> Class {
    let inner = inner.filter(|&i| i != site);
    let key = (site.as_u32(), inner.map_or(0, SiteId::as_u32));
    with_graph(|g| {
        if let Some(&id) = g.by_pair.get(&key) {
            return Class(id);
        }
        let id = u32::try_from(g.classes.len() + 1)
            .ok()
            .filter(|&id| id != u32::MAX)
            .expect("too many lock classes");
        g.classes.push(ClassInfo { site, inner });
        g.by_pair.insert(key, id);
        Class(id)
    })
}

/// What `class` stands for (`None` for an id never handed out).
#[must_use]
pub fn class_info(class: Class) -> Option<ClassInfo> {
    with_graph(|g| g.classes.get((class.0 - 1) as usize).copied())
}

impl Graph {
    fn record(&self, from: u32, to: u32) -> Option<EdgeRecord> {
        let e = self.edges.get(&(from, to))?;
        Some(EdgeRecord {
            from: Class(from),
            to: Class(to),
            from_lock: e.from_lock,
            to_lock: e.to_lock,
            from_acquired_at: e.from_acquired_at,
            to_acquired_at: e.to_acquired_at,
            context: e.context.clone(),
        })
    }

    /// The shortest path of recorded edges from `start` to `goal`, through classes that are
    /// not signals.
    fn path(&self, start: u32, goal: u32) -> Option<Vec<EdgeRecord>> {
        let mut came_from: HashMap<u32, u32, Fast> = HashMap::default();
        let mut queue = VecDeque::from([start]);
        came_from.insert(start, start);
        while let Some(node) = queue.pop_front() {
            if node == goal {
                let mut path = Vec::new();
                let mut at = goal;
                while at != start {
                    let prev = came_from[&at];
                    path.push(self.record(prev, at)?);
                    at = prev;
                }
                path.reverse();
                return Some(path);
            }
            for &next in self.out.get(&node).map_or(&[][..], Vec::as_slice) {
                if came_from.contains_key(&next) || (next != goal && is_signal(Class(next))) {
                    continue;
                }
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
        None
    }
}

/// Every recorded order, as `(from, to)` pairs (for tests and tools).
#[must_use]
pub fn edges() -> Vec<(Class, Class)> {
    with_graph(|g| {
        let mut v: Vec<_> = g.edges.keys().map(|&(f, t)| (Class(f), Class(t))).collect();
        v.sort();
        v
    })
}

/// The recorded edge `from -> to`, if any.
#[must_use]
pub fn edge(from: Class, to: Class) -> Option<EdgeRecord> {
    with_graph(|g| g.record(from.0, to.0))
}

// ---------------------------------------------------------------------------------------------
// Per-thread state

/// Bumped by [`enable`]: a thread whose chain was recorded under an older generation drops
/// it (locks taken while checking was off are not known).
static GENERATION: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy)]
struct Held {
    lock: LockId,
    class: Class,
    acquired_at: Option<SiteId>,
}

#[derive(Default)]
struct ThreadState {
    generation: u32,
    held: Vec<Held>,
    checked: HashSet<u64, Fast>,
}

thread_local! {
    static STATE: RefCell<ThreadState> = RefCell::new(ThreadState::default());
}

fn with_state<R>(f: impl FnOnce(&mut ThreadState) -> R) -> Option<R> {
    STATE
        .try_with(|s| {
            let mut s = s.try_borrow_mut().ok()?;
            let generation = GENERATION.load(Ordering::Relaxed);
            if s.generation != generation {
                s.generation = generation;
                s.held.clear();
                s.checked.clear();
            }
            Some(f(&mut s))
        })
        .ok()
        .flatten()
}

/// Starts a new recording generation: every thread forgets its held chain (the locks it
/// took while checking was off were not recorded, so the chain could be wrong). The order
/// graph is kept.
pub fn enable() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Records that the calling thread now holds `lock` (of `class`), acquired at `acquired_at`.
pub fn push_at(lock: LockId, class: Class, acquired_at: Option<SiteId>) {
    if is_signal(class) {
        return;
    }
    with_state(|s| {
        s.held.push(Held {
            lock,
            class,
            acquired_at,
        });
    });
}

/// [`push_at`] without an acquire site.
pub fn push(lock: LockId, class: Class) {
    push_at(lock, class, None);
}

/// Records that the calling thread released `lock` (the latest entry for it). A lock that
/// is not in the chain (taken while checking was off, or a signal) is ignored.
pub fn pop(lock: LockId) {
    with_state(|s| {
        if let Some(i) = s.held.iter().rposition(|h| h.lock == lock) {
            s.held.remove(i);
        }
    });
}

/// The classes the calling thread holds, in acquire order (signals left out).
#[must_use]
pub fn held() -> Vec<Class> {
    with_state(|s| {
        s.held
            .iter()
            .filter(|h| !is_signal(h.class))
            .map(|h| h.class)
            .collect()
    })
    .unwrap_or_default()
}

/// Forgets the calling thread's held chain and checked chains (a fork child's other threads,
/// or a thread that ends).
pub fn clear_thread() {
    with_state(|s| {
        s.held.clear();
        s.checked.clear();
    });
}

/// The check before an acquire of `lock`, of class `to`, that may block (`timed`: with a
/// timeout). Adds the edges `held class -> to` that are new (with `context()`, called at most
/// once, without the graph's lock, and only when an edge is new or a cycle is found), and
/// returns the first cycle that one of them would close. A pair that closes a cycle is
/// reported once; its edge is not added.
pub fn check(
    to: Class,
    lock: LockId,
    timed: bool,
    context: impl FnOnce() -> Context,
) -> Option<Violation> {
    if is_signal(to) {
        return None;
    }
    // The chain (signals pruned) and its key, or None when already checked.
    let chain = with_state(|s| {
        if s.held.is_empty() {
            return None;
        }
        if s.held.iter().any(|h| is_signal(h.class)) {
            s.held.retain(|h| !is_signal(h.class));
        }
        let mut h = FastHasher::default();
        let mut any = false;
        for held in &s.held {
            if held.class != to {
                h.write_u32(held.class.0);
                any = true;
            }
        }
        if !any {
            return None;
        }
        h.write_u64(u64::from(to.0) | 1 << 40);
        let key = h.finish();
        if s.checked.contains(&key) {
            return None;
        }
        let chain: Vec<Held> = s.held.iter().filter(|h| h.class != to).copied().collect();
        Some((key, chain))
    })
    .flatten()?;
    let (key, chain) = chain;
    // First pass: is anything new? (No context needed for a chain whose edges all exist.)
    let new = with_graph(|g| {
        chain.iter().any(|h| {
            !g.edges.contains_key(&(h.class.0, to.0)) && !g.reported.contains(&(h.class.0, to.0))
        })
    });
    let mut violation = None;
    if new {
        let ctx = context();
        let at = ctx.stack.first().copied();
        violation = with_graph(|g| {
            let mut found = None;
            for h in &chain {
                let pair = (h.class.0, to.0);
                if g.edges.contains_key(&pair) || g.reported.contains(&pair) {
                    continue;
                }
                if let Some(path) = g.path(to.0, h.class.0) {
                    g.reported.insert(pair);
                    if found.is_none() {
                        found = Some(Violation {
                            new: EdgeRecord {
                                from: h.class,
                                to,
                                from_lock: h.lock,
                                to_lock: lock,
                                from_acquired_at: h.acquired_at,
                                to_acquired_at: at,
                                context: ctx.clone(),
                            },
                            path,
                            timed,
                        });
                    }
                    continue;
                }
                g.edges.insert(
                    pair,
                    EdgeData {
                        from_lock: h.lock,
                        to_lock: lock,
                        from_acquired_at: h.acquired_at,
                        to_acquired_at: at,
                        context: ctx.clone(),
                    },
                );
                g.out.entry(h.class.0).or_default().push(to.0);
            }
            found
        });
    }
    with_state(|s| s.checked.insert(key));
    violation
}

/// Forgets the whole graph, the classes' signal flags excepted (tests).
pub fn reset_graph() {
    with_graph(|g| {
        g.out.clear();
        g.edges.clear();
        g.reported.clear();
    });
    enable();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diag::intern_site;

    fn cls(name: &str, line: u32) -> Class {
        class(None, intern_site(name, line, "t"))
    }

    fn ctx_of(thread: u64) -> impl FnOnce() -> Context {
        move || Context {
            thread,
            thread_name: Some("t".into()),
            stack: Arc::from(vec![intern_site("stack.py", thread as u32, "f")]),
        }
    }

    /// Runs `f` on a fresh thread (a fresh held chain and checked-chain cache).
    fn on_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        std::thread::spawn(f).join().unwrap()
    }

    #[test]
    fn classes_intern_pairs() {
        let s = intern_site("lockdep_cls.py", 1, "f");
        let i = intern_site("threading.py", 9, "Condition.__init__");
        assert_eq!(class(None, s), class(Some(s), s));
        assert_ne!(class(None, s), class(Some(i), s));
        assert_eq!(class(Some(i), s), class(Some(i), s));
        let info = class_info(class(Some(i), s)).unwrap();
        assert_eq!((info.site, info.inner), (s, Some(i)));
    }

    #[test]
    fn abba_is_reported_once_with_both_orders() {
        let a = cls("lockdep_abba.py", 1);
        let b = cls("lockdep_abba.py", 2);
        on_thread(move || {
            push(LockId(101), a);
            assert!(check(b, LockId(77), false, ctx_of(1)).is_none());
            push(LockId(102), b);
            pop(LockId(102));
            pop(LockId(101));
        });
        assert!(edge(a, b).is_some());
        let v = on_thread(move || {
            push_at(
                LockId(102),
                b,
                Some(intern_site("lockdep_abba.py", 20, "g")),
            );
            let v = check(a, LockId(77), false, ctx_of(2));
            pop(LockId(102));
            v
        })
        .expect("reported");
        assert_eq!((v.new.from, v.new.to), (b, a));
        assert_eq!(v.new.context.thread, 2);
        assert_eq!(
            v.new.from_acquired_at,
            Some(intern_site("lockdep_abba.py", 20, "g"))
        );
        assert_eq!(v.path.len(), 1);
        assert_eq!((v.path[0].from, v.path[0].to), (a, b));
        assert_eq!(v.path[0].context.thread, 1);
        assert!(!v.timed);
        // The closing edge was not added, and the pair is not reported again.
        assert!(edge(b, a).is_none());
        let again = on_thread(move || {
            push(LockId(102), b);
            let v = check(a, LockId(77), true, ctx_of(3));
            pop(LockId(102));
            v
        });
        assert!(again.is_none());
    }

    #[test]
    fn longer_cycle_names_the_whole_path() {
        let a = cls("lockdep_abc.py", 1);
        let b = cls("lockdep_abc.py", 2);
        let c = cls("lockdep_abc.py", 3);
        for (x, y) in [(a, b), (b, c)] {
            on_thread(move || {
                push(LockId(1), x);
                assert!(check(y, LockId(77), false, ctx_of(1)).is_none());
                pop(LockId(1));
            });
        }
        let v = on_thread(move || {
            push(LockId(1), c);
            let v = check(a, LockId(77), true, ctx_of(1));
            pop(LockId(1));
            v
        })
        .unwrap();
        assert!(v.timed);
        let path: Vec<_> = v.path.iter().map(|e| (e.from, e.to)).collect();
        assert_eq!(path, vec![(a, b), (b, c)]);
    }

    #[test]
    fn same_order_is_checked_once_and_needs_no_context() {
        let a = cls("lockdep_cache.py", 1);
        let b = cls("lockdep_cache.py", 2);
        on_thread(move || {
            let calls = std::cell::Cell::new(0);
            for _ in 0..100 {
                push(LockId(1), a);
                let v = check(b, LockId(77), false, || {
                    calls.set(calls.get() + 1);
                    Context::default()
                });
                assert!(v.is_none());
                pop(LockId(1));
            }
            assert_eq!(calls.get(), 1);
        });
    }

    #[test]
    fn signals_drop_out() {
        let a = cls("lockdep_signal.py", 1);
        let w = cls("lockdep_signal.py", 2);
        let x = cls("lockdep_signal.py", 3);
        // a -> w (a Condition's waiter taken under the condition's lock), w -> x.
        for (p, q) in [(a, w), (w, x)] {
            on_thread(move || {
                push(LockId(1), p);
                assert!(check(q, LockId(77), false, ctx_of(1)).is_none());
                pop(LockId(1));
            });
        }
        // w is then waited for by its holder: a signal.
        mark_signal(w);
        assert!(is_signal(w) && !is_signal(a));
        on_thread(move || {
            // Held w (a signal) then a: no edge, no report, and w leaves the chain.
            push(LockId(2), w);
            assert!(held().is_empty());
            // x then a would close a -> w -> x -> a, but the path goes through the signal.
            push(LockId(3), x);
            assert!(check(a, LockId(77), false, ctx_of(1)).is_none());
            pop(LockId(3));
        });
        assert!(edge(x, a).is_some());
        assert!(edge(w, a).is_none());
        // Acquiring a signal class adds nothing either.
        on_thread(move || {
            push(LockId(1), a);
            let calls = std::cell::Cell::new(0);
            assert!(check(w, LockId(77), false, || {
                calls.set(1);
                Context::default()
            })
            .is_none());
            assert_eq!(calls.get(), 0);
            pop(LockId(1));
        });
    }

    #[test]
    fn same_class_nesting_adds_nothing() {
        let a = cls("lockdep_same.py", 1);
        on_thread(move || {
            push(LockId(1), a);
            assert!(check(a, LockId(77), false, ctx_of(1)).is_none());
            pop(LockId(1));
        });
        assert!(edge(a, a).is_none());
    }

    #[test]
    fn enable_forgets_chains() {
        let a = cls("lockdep_gen.py", 1);
        let b = cls("lockdep_gen.py", 2);
        on_thread(move || {
            push(LockId(1), a);
            assert_eq!(held(), vec![a]);
            enable();
            assert!(held().is_empty());
            assert!(check(b, LockId(77), false, ctx_of(1)).is_none());
        });
        assert!(edge(a, b).is_none());
    }

    #[test]
    fn pop_removes_the_latest_entry_of_that_lock() {
        let a = cls("lockdep_pop.py", 1);
        let b = cls("lockdep_pop.py", 2);
        on_thread(move || {
            push(LockId(1), a);
            push(LockId(2), b);
            pop(LockId(1));
            assert_eq!(held(), vec![b]);
            pop(LockId(99));
            assert_eq!(held(), vec![b]);
            clear_thread();
            assert!(held().is_empty());
        });
    }
}
