//! The lock contention profile, for Python: the binding's side of
//! `rthread_core::diag::profile`, and the `rthread._rthread_profile` module behind
//! `rthread.profile` and `rthread.debug.stats()`.
//!
//! Two hooks, both off the uncontended path:
//! - [`wait_begin`] / [`wait_end`], from `acquire::block_without_gil` (the slow path of
//!   `Lock.acquire` and `RLock.acquire`): the totals always, the profile when it is on. The
//!   stack of a sampled waiter is taken in [`wait_begin`], with the GIL held, before the GIL
//!   is released for the wait.
//! - [`released_woke`], from a `release()` whose lock word said a waiter was asleep (the
//!   branch that makes the wake-up system call): charges the releaser, and its stack when
//!   sampled, with the wait since the last charge.
//!
//! What is counted: waits for a `lock` or an `RLock`, excluding waits that are signals rather
//! than contention (a plain lock waited on by the thread that holds it, or once released by
//! another thread than its acquirer: `threading.Condition`'s waiter locks, `Event`), and
//! locks whose creation site is unknown (the thread-end sentinel locks of 3.9 - 3.12, waited
//! on by `join()`). Joins are never counted.
use std::cell::UnsafeCell;
use std::collections::HashMap;

use pyo3::ffi::{self};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rthread_core::diag::profile::{self, LockKey, Role, WaitStart};
use rthread_core::diag::{self, HeldBy, LockKind, SiteId, WaitFor};
use rthread_core::Deadline;

use crate::debug::WaitOn;

/// Frames kept per stack (innermost first); deeper frames are cut.
const MAX_STACK: usize = 64;

/// A contended acquire in progress: plain data (no destructor), kept across the GIL release.
#[derive(Clone, Copy)]
pub struct Contended {
    start: WaitStart,
    sleeps: u64,
}

/// The profile's key for a lock wait, or `None` when the wait is not counted (see the
/// module docs).
///
/// # Safety
/// The GIL must be held.
#[inline]
unsafe fn counted(on: &WaitOn<'_>) -> Option<LockKey> {
    let id = match on.what {
        WaitFor::Lock(id) | WaitFor::RLock(id) => id,
        _ => return None,
    };
    let site = SiteId::from_u32(on.site)?;
    if let Some(HeldBy::Holder(h)) = on.held_by {
        if h.kind() == LockKind::Signal || h.holder_packed() == Some(crate::debug::my_packed()) {
            return None;
        }
    }
    Some(LockKey {
        lock: id.0,
        site: Some(site),
    })
}

/// Starts a contended acquire (the GIL held, before it is released for the wait).
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn wait_begin(on: &WaitOn<'_>) -> Option<Contended> {
    // SAFETY: forwarded.
    let key = unsafe { counted(on) }?;
    let stack = if profile::enabled() && profile::sample() {
        // SAFETY: forwarded.
        unsafe { current_stack() }
    } else {
        None
    };
    Some(Contended {
        start: profile::begin_wait(key, stack),
        sleeps: profile::thread_sleeps(),
    })
}

/// The end of the wait itself (call without the GIL, right after the wait, so that the time
/// spent re-taking the GIL is not counted): `(end time, slept)`.
#[inline]
pub fn wait_ended(c: &Option<Contended>) -> (u64, bool) {
    match c {
        Some(c) => (
            Deadline::now().as_nanos(),
            profile::thread_sleeps() != c.sleeps,
        ),
        None => (0, false),
    }
}

/// Ends a contended acquire begun by [`wait_begin`] (the GIL held again).
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn wait_end(c: Option<Contended>, ended: (u64, bool), acquired: bool) {
    if let Some(c) = c {
        let ident = rthread_core::thread::current_ident();
        profile::end_wait_at(c.start, ended.0, ended.1, acquired, ident);
        if c.start.profiled {
            // SAFETY: forwarded.
            unsafe { remember_thread(ident) };
        }
    }
}

/// A release woke a sleeping waiter of `lock` (site `site`): charges the releaser.
///
/// # Safety
/// The GIL must be held.
#[cold]
pub unsafe fn released_woke(lock: u64, site: u32) {
    if !profile::enabled() {
        return;
    }
    let Some(site) = SiteId::from_u32(site) else {
        return;
    };
    let key = LockKey {
        lock,
        site: Some(site),
    };
    if !profile::has_waiters(key) {
        return;
    }
    let stack = if profile::sample() {
        // SAFETY: forwarded.
        unsafe { current_stack() }
    } else {
        None
    };
    let ident = rthread_core::thread::current_ident();
    profile::released_with_waiters(key, stack, ident);
    // SAFETY: forwarded.
    unsafe { remember_thread(ident) };
}

// ---------------------------------------------------------------------------------------------
// Stacks and thread names

/// Thread names seen by the profile (ident -> name), taken when a thread first shows up.
static NAMES: crate::debug::GilCell<Option<HashMap<u64, String>>> =
    crate::debug::GilCell(UnsafeCell::new(None));

/// The calling thread's Python stack, interned (`None` without a Python frame).
///
/// # Safety
/// The GIL must be held.
#[cold]
unsafe fn current_stack() -> Option<profile::StackId> {
    // SAFETY: GIL held (caller).
    let frames = unsafe { crate::debug::stack_sites(MAX_STACK) };
    (!frames.is_empty()).then(|| profile::intern_stack(&frames))
}

/// Records the name of thread `ident` (the caller) the first time the profile sees it:
/// `threading`'s name for it if `threading` knows the thread, else nothing.
///
/// # Safety
/// The GIL must be held.
unsafe fn remember_thread(ident: u64) {
    // SAFETY: GIL held; the closure only reads the map.
    if unsafe { NAMES.with(|m| m.as_ref().is_some_and(|m| m.contains_key(&ident))) } {
        return;
    }
    // SAFETY: GIL held. Borrowed and new references are handled as documented; any error is
    // cleared (a name is a nicety, never a reason to fail an acquire).
    let name = unsafe { threading_name(ident) };
    // SAFETY: GIL held.
    unsafe {
        NAMES.with(|m| {
            m.get_or_insert_with(HashMap::new)
                .insert(ident, name.unwrap_or_default())
        })
    };
}

/// `threading._active[ident].name`, without running anything but dict and attribute reads.
///
/// # Safety
/// The GIL must be held.
unsafe fn threading_name(ident: u64) -> Option<String> {
    // SAFETY: GIL held (caller); every new reference is released. The error indicator is
    // clear when a method is called (CPython's contract), so any error set here is ours and
    // is cleared.
    unsafe {
        let modules = ffi::PyImport_GetModuleDict();
        let threading = ffi::PyDict_GetItemString(modules, c"threading".as_ptr());
        let mut out = None;
        if !threading.is_null() {
            let active = ffi::PyObject_GetAttrString(threading, c"_active".as_ptr());
            if !active.is_null() {
                if ffi::PyDict_Check(active) != 0 {
                    let key = ffi::PyLong_FromUnsignedLongLong(ident);
                    if !key.is_null() {
                        let t = ffi::PyDict_GetItem(active, key);
                        if !t.is_null() {
                            out = crate::debug::attr_string(t, c"name");
                        }
                        ffi::Py_DECREF(key);
                    }
                }
                ffi::Py_DECREF(active);
            }
        }
        ffi::PyErr_Clear();
        out
    }
}

// ---------------------------------------------------------------------------------------------
// The `rthread._rthread_profile` module

/// `stats() -> (waits, spins, sleeps, timeouts, wait_ns)`: the always-on totals.
#[pyfunction]
fn stats() -> (u64, u64, u64, u64, u64) {
    let s = profile::stats();
    (s.waits, s.spins, s.sleeps, s.timeouts, s.wait_ns)
}

/// `start(rate)`: profile on, a stack for one contended event in `rate` (0: none).
#[pyfunction]
fn start(rate: u32) {
    profile::start(rate);
}

#[pyfunction]
fn stop() {
    profile::stop();
}

#[pyfunction]
fn reset(py: Python<'_>) {
    profile::reset();
    let _ = py;
    // SAFETY: the GIL is held (`py`).
    unsafe { NAMES.with(|m| *m = None) };
}

#[pyfunction]
fn running() -> bool {
    profile::enabled()
}

fn site_tuple(py: Python<'_>, id: Option<SiteId>) -> PyResult<Py<PyAny>> {
    Ok(match id.and_then(diag::site) {
        Some(s) => (s.file.to_string(), s.line, s.function.to_string())
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        None => py.None(),
    })
}

/// `snapshot() -> dict`: the raw profile (see `rthread/profile.py` for the shape).
#[pyfunction]
fn snapshot(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let snap = py.detach(profile::snapshot);
    let d = PyDict::new(py);
    d.set_item("running", snap.running)?;
    d.set_item("rate", snap.rate)?;
    d.set_item("duration_ns", snap.duration_ns)?;
    let locks = PyList::empty(py);
    for l in &snap.locks {
        let ld = PyDict::new(py);
        let key = l.key.unwrap_or(LockKey {
            lock: 0,
            site: None,
        });
        ld.set_item("object", key.lock)?;
        ld.set_item("site", site_tuple(py, key.site)?)?;
        ld.set_item("contended", l.contended)?;
        ld.set_item("spun", l.spun)?;
        ld.set_item("slept", l.slept)?;
        ld.set_item("timeouts", l.timeouts)?;
        ld.set_item("wait_ns", l.wait_ns)?;
        ld.set_item("max_wait_ns", l.max_wait_ns)?;
        ld.set_item("histogram", l.histogram.clone())?;
        ld.set_item("hold_count", l.hold_count)?;
        ld.set_item("hold_ns", l.hold_ns)?;
        ld.set_item("max_hold_ns", l.max_hold_ns)?;
        ld.set_item("charged_ns", l.charged_ns)?;
        ld.set_item("charges", l.charges)?;
        locks.append(ld)?;
    }
    d.set_item("locks", locks)?;
    let stacks = PyList::empty(py);
    for s in &snap.stacks {
        stacks.append((
            s.key.lock,
            site_tuple(py, s.key.site)?,
            match s.role {
                Role::Waited => "waited",
                Role::Held => "held",
            },
            s.stack.0,
            s.count,
            s.ns,
        ))?;
    }
    d.set_item("stacks", stacks)?;
    let frames = PyDict::new(py);
    let table = PyList::empty(py);
    for f in &snap.stack_frames {
        let ids: Vec<u32> = f.iter().map(|s| s.as_u32()).collect();
        for s in f {
            if !frames.contains(s.as_u32())? {
                frames.set_item(s.as_u32(), site_tuple(py, Some(*s))?)?;
            }
        }
        table.append(ids)?;
    }
    d.set_item("stack_table", table)?;
    d.set_item("frames", frames)?;
    // SAFETY: the GIL is held (`py`); the closure only reads the map.
    let names = unsafe { NAMES.with(|m| m.clone().unwrap_or_default()) };
    let threads = PyList::empty(py);
    for t in &snap.threads {
        threads.append((
            t.ident,
            names.get(&t.ident).cloned().unwrap_or_default(),
            t.contended,
            t.wait_ns,
            t.charged_ns,
        ))?;
    }
    d.set_item("threads", threads)?;
    Ok(d.into_any().unbind())
}

/// Creates `rthread._rthread_profile` and registers it in `sys.modules`.
pub fn create_module(py: Python<'_>) -> PyResult<()> {
    let m = PyModule::new(py, "rthread._rthread_profile")?;
    m.add_function(wrap_pyfunction!(stats, &m)?)?;
    m.add_function(wrap_pyfunction!(start, &m)?)?;
    m.add_function(wrap_pyfunction!(stop, &m)?)?;
    m.add_function(wrap_pyfunction!(reset, &m)?)?;
    m.add_function(wrap_pyfunction!(running, &m)?)?;
    m.add_function(wrap_pyfunction!(snapshot, &m)?)?;
    m.add("DEFAULT_RATE", profile::DEFAULT_RATE)?;
    let modules = py.import("sys")?.getattr("modules")?;
    modules.set_item("rthread._rthread_profile", m)?;
    Ok(())
}
