//! Lock-order checking for Python: the binding's side of `rthread_core::diag::lockdep`.
//!
//! Off, nothing here runs: the lock types read the one flag of `debug` ([`debug::hooked`])
//! that diagnostic mode already has, and take their usual fast path. On:
//!
//! - **Classes**: a lock or `RLock` made while checking is on gets the class of its
//!   `(creation site, innermost creation frame)`; one made before gets its creation site's.
//!   A lock whose creation site is unknown (made entirely inside `threading.py`, such as a
//!   thread's `_tstate_lock`) takes no part. The classes live in a table keyed by the
//!   object's address, filled at creation and emptied at deallocation.
//! - **Before an acquire that may block** (not `acquire(False)`, not an `RLock` re-entry):
//!   a plain lock its own holder waits for is a signal (a `threading.Condition` waiter) and
//!   its class leaves the ordering; otherwise the held chain is checked
//!   ([`lockdep::check`]). A cycle goes to `rthread.debug`'s handler *before* the acquire
//!   blocks, which warns (`warnings.warn`, so `-W error` makes it an exception out of the
//!   acquire), records, or raises `LockOrderError`. A timed acquire, and the re-acquire
//!   that ends a `Condition.wait`, only ever warn: they do not wait for ever, or must not
//!   fail.
//! - **After**: the lock is pushed on the thread's held chain with its acquire site; a
//!   release pops it, and a release by another thread than the acquirer makes the class a
//!   signal.
//!
//! Every Python call made from here (the thread-name helper, the handler) runs with a
//! per-thread guard set, so the locks they take are not checked.
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::sync::Arc;

use pyo3::ffi::{self, PyObject};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rthread_core::diag::lockdep::{self, Class, Context, EdgeRecord, Violation};
use rthread_core::diag::{self, LockId, Released, SiteId};

use crate::debug::{self, GilCell, KeyHasher};

/// Checking is off.
const OFF: u8 = 0;
/// Cycles are kept in `rthread.debug`'s list only.
const RECORD: u8 = 1;
/// Cycles are warnings.
const WARN: u8 = 2;
/// Cycles raise `LockOrderError` (timed acquires and `Condition` re-acquires warn).
const RAISE: u8 = 3;

static MODE: AtomicU8 = AtomicU8::new(OFF);

/// `rthread.debug._lockdep_report(info, action)` and `_lockdep_thread_name()`.
static HANDLER: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());
static NAMER: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// Frames recorded in a stack.
const STACK_FRAMES: usize = 48;

thread_local! {
    /// This thread runs Python on lockdep's behalf: its acquires are not checked.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

type Fast = std::hash::BuildHasherDefault<KeyHasher>;
type Map<K> = GilCell<Option<HashMap<K, u32, Fast>>>;

/// Lock address -> raw class (0: takes no part).
static CLASSES: Map<usize> = GilCell(std::cell::UnsafeCell::new(None));
/// `(site, inner site)` -> raw class, so creating a lock does not take the graph's mutex.
static PAIRS: Map<(u32, u32)> = GilCell(std::cell::UnsafeCell::new(None));

/// Whether checking is on.
#[inline]
pub fn on() -> bool {
    MODE.load(Ordering::Relaxed) != OFF
}

/// The calling Python stack, innermost frame first, as interned sites.
///
/// # Safety
/// The GIL must be held.
unsafe fn stack() -> Arc<[SiteId]> {
    // SAFETY: GIL held (caller).
    unsafe { debug::stack_sites(STACK_FRAMES) }.into()
}

/// The class of `(site, inner)`, through [`PAIRS`].
///
/// # Safety
/// The GIL must be held.
unsafe fn class_of_pair(site: u32, inner: u32) -> u32 {
    let Some(s) = SiteId::from_u32(site) else {
        return 0;
    };
    // SAFETY: GIL held (caller); the closures only touch the maps.
    unsafe {
        if let Some(c) = PAIRS.with(|m| m.as_ref().and_then(|m| m.get(&(site, inner)).copied())) {
            return c;
        }
        let c = lockdep::class(SiteId::from_u32(inner), s).as_u32();
        PAIRS.with(|m| {
            m.get_or_insert_with(HashMap::default)
                .insert((site, inner), c)
        });
        c
    }
}

/// A lock or `RLock` was just made at `site` (its creation site): gives it its class.
///
/// # Safety
/// The GIL must be held; `obj` is the new object.
pub unsafe fn created(obj: *mut PyObject, site: u32) {
    if !on() {
        return;
    }
    // SAFETY: GIL held (caller); the frame is borrowed.
    unsafe {
        let frame = ffi::PyEval_GetFrame();
        let inner = if frame.is_null() || site == 0 {
            0
        } else {
            debug::frame_site(frame)
        };
        let class = class_of_pair(site, inner);
        CLASSES.with(|m| {
            m.get_or_insert_with(HashMap::default)
                .insert(obj as usize, class)
        });
    }
}

/// Takes the lock `obj` out of the ordering (a thread's `_tstate_lock`, made by
/// `_set_sentinel` up to 3.12; 3.13+ threads end through handles, not locks).
///
/// # Safety
/// The GIL must be held; `obj` is a live lock.
#[cfg(not(Py_3_13))]
pub unsafe fn exclude(obj: *mut PyObject) {
    if !on() {
        return;
    }
    // SAFETY: GIL held (caller); the closure only touches the map.
    unsafe {
        CLASSES.with(|m| {
            m.get_or_insert_with(HashMap::default)
                .insert(obj as usize, 0)
        })
    };
}

/// The class of the lock `obj` created at `site` (`None`: it takes no part).
///
/// # Safety
/// The GIL must be held.
pub unsafe fn class_for(obj: *mut PyObject, site: u32) -> Option<Class> {
    // SAFETY: GIL held (caller); the closures only touch the maps.
    unsafe {
        let known = CLASSES.with(|m| m.as_ref().and_then(|m| m.get(&(obj as usize)).copied()));
        let raw = match known {
            Some(c) => c,
            None => {
                // Made before checking was on: its creation site alone. A module-level lock
                // of a standard-library module imported before is named by the import
                // machinery's frame, shared by all of them: such a lock takes no part.
                let frozen = SiteId::from_u32(site)
                    .and_then(diag::site)
                    .is_some_and(|s| s.file.starts_with("<frozen "));
                let c = if frozen { 0 } else { class_of_pair(site, 0) };
                CLASSES.with(|m| {
                    m.get_or_insert_with(HashMap::default)
                        .insert(obj as usize, c)
                });
                c
            }
        };
        Class::from_u32(raw)
    }
}

/// A lock whose holder waits for it (a `Condition` waiter): its class leaves the ordering.
pub fn waited_by_holder(class: Class) {
    if !lockdep::is_signal(class) {
        lockdep::mark_signal(class);
    }
}

/// The check before an acquire that may block. `false`: an exception is set and the
/// acquire must fail without taking the lock.
///
/// # Safety
/// The GIL must be held.
pub unsafe fn check(obj: *mut PyObject, class: Class, timed: bool, restore: bool) -> bool {
    if IN_HOOK.with(Cell::get) {
        return true;
    }
    let violation = lockdep::check(class, LockId(obj as u64), timed, || {
        // SAFETY: GIL held (caller).
        unsafe { context() }
    });
    match violation {
        None => true,
        // SAFETY: GIL held (caller).
        Some(v) => unsafe { report(&v, restore) },
    }
}

/// The calling thread's ident, name and stack.
///
/// # Safety
/// The GIL must be held.
unsafe fn context() -> Context {
    // SAFETY: GIL held (caller).
    let stack = unsafe { stack() };
    let namer = NAMER.load(Ordering::Acquire);
    let mut thread_name = None;
    if !namer.is_null() {
        let _guard = Guard::enter();
        // SAFETY: GIL held; NAMER holds a strong reference for the life of the process; the
        // result is released after being read.
        unsafe {
            let r = ffi::PyObject_CallNoArgs(namer);
            if r.is_null() {
                ffi::PyErr_Clear();
            } else {
                thread_name = debug::str_of(r).map(Arc::from);
                ffi::Py_DECREF(r);
            }
        }
    }
    Context {
        thread: rthread_core::thread::current_ident(),
        thread_name,
        stack,
    }
}

/// Sets [`IN_HOOK`] for its lifetime.
struct Guard(bool);

impl Guard {
    fn enter() -> Guard {
        Guard(IN_HOOK.with(|c| c.replace(true)))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let was = self.0;
        let _ = IN_HOOK.try_with(|c| c.set(was));
    }
}

/// Whether the innermost Python frame is `threading`'s `Condition._acquire_restore` (a
/// `Condition` over a plain lock taking it back at the end of `wait`).
///
/// # Safety
/// The GIL must be held.
unsafe fn in_acquire_restore() -> bool {
    // SAFETY: GIL held (caller); the frame is borrowed, the code a new reference released.
    unsafe {
        let frame = ffi::PyEval_GetFrame();
        if frame.is_null() {
            return false;
        }
        let code = ffi::PyFrame_GetCode(frame).cast::<PyObject>();
        let name = debug::attr_string(code, c"co_name");
        ffi::Py_DECREF(code);
        name.as_deref() == Some("_acquire_restore")
    }
}

/// Hands a cycle to `rthread.debug`; `false` if it raised (the exception is set).
///
/// # Safety
/// The GIL must be held.
#[cold]
unsafe fn report(v: &Violation, restore: bool) -> bool {
    let handler = HANDLER.load(Ordering::Acquire);
    if handler.is_null() {
        return true;
    }
    let mode = MODE.load(Ordering::Relaxed);
    // SAFETY: GIL held (caller).
    let restore = restore || unsafe { in_acquire_restore() };
    let action = match mode {
        RECORD => "record",
        RAISE if !(v.timed || restore) => "raise",
        _ => "warn",
    };
    let _guard = Guard::enter();
    // SAFETY: GIL held (caller).
    let py = unsafe { Python::assume_attached() };
    // SAFETY: HANDLER holds a strong reference for the life of the process.
    let handler = unsafe { Bound::from_borrowed_ptr(py, handler) };
    let result = violation_to_py(py, v, restore).and_then(|info| handler.call1((info, action)));
    match result {
        Ok(_) => true,
        Err(e) => {
            e.restore(py);
            false
        }
    }
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

fn class_to_py(py: Python<'_>, c: Class) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("id", c.as_u32())?;
    let info = lockdep::class_info(c);
    d.set_item("site", site_tuple(py, info.map(|i| i.site))?)?;
    d.set_item("inner", site_tuple(py, info.and_then(|i| i.inner))?)?;
    Ok(d)
}

fn edge_to_py<'py>(py: Python<'py>, e: &EdgeRecord) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("from", class_to_py(py, e.from)?)?;
    d.set_item("to", class_to_py(py, e.to)?)?;
    d.set_item("from_lock", e.from_lock.0)?;
    d.set_item("to_lock", e.to_lock.0)?;
    d.set_item("from_acquired_at", site_tuple(py, e.from_acquired_at)?)?;
    d.set_item("to_acquired_at", site_tuple(py, e.to_acquired_at)?)?;
    d.set_item("thread", e.context.thread)?;
    d.set_item("thread_name", e.context.thread_name.as_deref())?;
    let stack = PyList::empty(py);
    for &s in e.context.stack.iter() {
        stack.append(site_tuple(py, Some(s))?)?;
    }
    d.set_item("stack", stack)?;
    Ok(d)
}

fn violation_to_py<'py>(
    py: Python<'py>,
    v: &Violation,
    restore: bool,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("new", edge_to_py(py, &v.new)?)?;
    let path = PyList::empty(py);
    for e in &v.path {
        path.append(edge_to_py(py, e)?)?;
    }
    d.set_item("path", path)?;
    d.set_item("timed", v.timed)?;
    d.set_item("restore", restore)?;
    Ok(d)
}

/// After a successful acquire (first level, for an `RLock`).
///
/// # Safety
/// The GIL must be held.
pub unsafe fn acquired(obj: *mut PyObject, class: Class) {
    if lockdep::is_signal(class) {
        return; // not kept in chains
    }
    // The innermost frame, whatever its file: one cached look-up. (Skipping the standard
    // library's frames, as creation sites do, would walk and materialise frames on every
    // acquire a `Condition` or `Queue` makes.)
    // SAFETY: GIL held (caller); the frame is borrowed.
    let at = unsafe {
        let frame = ffi::PyEval_GetFrame();
        if frame.is_null() {
            0
        } else {
            debug::frame_site(frame)
        }
    };
    lockdep::push_at(LockId(obj as u64), class, SiteId::from_u32(at));
}

/// A release (see `debug::releasing_slow`): pops the lock off the caller's chain, or, released
/// by another thread than its acquirer, makes its class a signal.
pub fn released(outcome: Released, id: LockId) {
    if !on() {
        return;
    }
    match outcome {
        Released::ByOther(_) => {
            // SAFETY: the lock types call this with the GIL held (release paths).
            let class = unsafe {
                CLASSES.with(|m| m.as_ref().and_then(|m| m.get(&(id.0 as usize)).copied()))
            };
            if let Some(c) = class.and_then(Class::from_u32) {
                lockdep::mark_signal(c);
            }
        }
        _ => lockdep::pop(id),
    }
}

/// A lock is freed (`held_by_me`: by its holder, as a `Condition`'s spent waiter can be).
pub fn dropped(held_by_me: bool, id: LockId) {
    if held_by_me {
        lockdep::pop(id);
    }
    // SAFETY: deallocation runs with the GIL held.
    unsafe {
        CLASSES.with(|m| {
            if let Some(m) = m.as_mut() {
                m.remove(&(id.0 as usize));
            }
        });
    }
}

/// `lockdep_set(mode)`: "off", "record", "warn" or "raise"; returns the previous mode.
#[pyfunction]
fn lockdep_set(mode: &str) -> PyResult<&'static str> {
    let new = match mode {
        "off" => OFF,
        "record" => RECORD,
        "warn" => WARN,
        "raise" => RAISE,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "mode must be 'off', 'record', 'warn' or 'raise'",
            ))
        }
    };
    let old = MODE.swap(new, Ordering::Relaxed);
    if old == OFF && new != OFF {
        // Chains recorded before (or none) are not trusted.
        lockdep::enable();
    }
    if new == OFF {
        // SAFETY: a pyfunction runs with the GIL held. Classes of locks made while on are
        // forgotten: the addresses may be reused by locks made while off.
        unsafe { CLASSES.with(|m| *m = None) };
    }
    debug::refresh_hooks();
    Ok(mode_name(old))
}

fn mode_name(m: u8) -> &'static str {
    match m {
        RECORD => "record",
        WARN => "warn",
        RAISE => "raise",
        _ => "off",
    }
}

#[pyfunction]
fn lockdep_mode() -> &'static str {
    mode_name(MODE.load(Ordering::Relaxed))
}

/// `lockdep_configure(report, thread_name)`: the callbacks of `rthread.debug`.
#[pyfunction]
fn lockdep_configure(report: Bound<'_, PyAny>, thread_name: Bound<'_, PyAny>) {
    let old = HANDLER.swap(report.into_ptr(), Ordering::AcqRel);
    let old_namer = NAMER.swap(thread_name.into_ptr(), Ordering::AcqRel);
    // The old callbacks are leaked on purpose: another thread may be calling them.
    let _ = (old, old_namer);
}

/// The recorded orders as `[(from class, to class)]` of class dicts (tests, tools).
#[pyfunction]
fn lockdep_edges(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let out = PyList::empty(py);
    for (f, t) in lockdep::edges() {
        out.append((class_to_py(py, f)?, class_to_py(py, t)?))?;
    }
    Ok(out.into_any().unbind())
}

/// The classes the calling thread holds, in order (tests).
#[pyfunction]
fn lockdep_held(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let out = PyList::empty(py);
    for c in lockdep::held() {
        out.append(class_to_py(py, c)?)?;
    }
    Ok(out.into_any().unbind())
}

/// The class of a lock or RLock object (None if it takes no part, or checking is off).
#[pyfunction]
fn lockdep_class(py: Python<'_>, obj: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    if !on() {
        return Ok(py.None());
    }
    // SAFETY: GIL held; `obj` alive for the call.
    let rec =
        unsafe { crate::lock::record(obj.as_ptr()).or_else(|| crate::rlock::record(obj.as_ptr())) };
    let Some((_, _, _, site, _)) = rec else {
        return Ok(py.None());
    };
    // SAFETY: GIL held.
    match unsafe { class_for(obj.as_ptr(), site) } {
        Some(c) => Ok(class_to_py(py, c)?.into_any().unbind()),
        None => Ok(py.None()),
    }
}

/// Adds the lockdep functions to `rthread._rthread_debug`.
pub fn add_functions(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(lockdep_set, m)?)?;
    m.add_function(wrap_pyfunction!(lockdep_mode, m)?)?;
    m.add_function(wrap_pyfunction!(lockdep_configure, m)?)?;
    m.add_function(wrap_pyfunction!(lockdep_edges, m)?)?;
    m.add_function(wrap_pyfunction!(lockdep_held, m)?)?;
    m.add_function(wrap_pyfunction!(lockdep_class, m)?)?;
    Ok(())
}
