//! Thread handles: the record of one thread's life that `join` waits on.
//!
//! Every thread started by `start_joinable_thread` (3.13's `threading`) gets
//! a [`Handle`]; `_make_thread_handle` makes running-state handles for threads
//! started elsewhere (the main thread, dummy threads). Non-daemon handles sit
//! in the shutdown list that `_shutdown()` joins at exit. After `fork()`,
//! every handle but the surviving thread's is marked done.
//!
//! On 3.13 this is exposed as `_thread._ThreadHandle`; the Rust side exists on
//! every version because the shutdown and fork bookkeeping does not depend on
//! the Python type.
// Before 3.13 nothing creates handles (threading uses `_set_sentinel`), so
// only the thread-end and fork paths are reachable there.
#![cfg_attr(not(Py_3_13), allow(dead_code))]

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use rthread_core::diag::Cancellable;
use rthread_core::wait::DefaultWait;
use rthread_core::{thread, Acquire, Deadline, RawEvent};

/// The "thread done" event: joins sleep in a `Cancellable` backend, so a "raise" watchdog can
/// end a join that is part of a deadlock.
type Event = RawEvent<Cancellable<DefaultWait>>;

const NOT_STARTED: u8 = 0; // created by _ThreadHandle(), not started yet
const STARTING: u8 = 1; // start_joinable_thread is creating the OS thread
const RUNNING: u8 = 2; // the thread runs (or is an outside thread)
const DONE: u8 = 3; // finished (or marked done by _set_done / fork)

/// One thread's life: its ident, its state, and the event set when it ends.
#[derive(Debug)]
pub struct Handle {
    ident: AtomicU64,
    state: AtomicU8,
    done: Event,
}

/// Every live handle (weakly), for the fork handler.
static ALL: Mutex<Vec<Weak<Handle>>> = Mutex::new(Vec::new());
/// Non-daemon threads still running, joined by `_shutdown()`.
static SHUTDOWN: Mutex<Vec<Arc<Handle>>> = Mutex::new(Vec::new());

/// Locks a bookkeeping list. The lists are only touched in short critical
/// sections that cannot panic, so a poisoned lock still holds valid data.
fn list<T>(mutex: &'static Mutex<Vec<T>>) -> MutexGuard<'static, Vec<T>> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Handle {
    fn register(state: u8, ident: u64) -> Arc<Handle> {
        let handle = Arc::new(Handle {
            ident: AtomicU64::new(ident),
            state: AtomicU8::new(state),
            done: Event::new(),
        });
        let mut all = list(&ALL);
        all.retain(|weak| weak.strong_count() > 0);
        all.push(Arc::downgrade(&handle));
        handle
    }

    /// A handle for a thread not started yet (`_ThreadHandle()`).
    pub fn not_started() -> Arc<Handle> {
        Self::register(NOT_STARTED, 0)
    }

    /// A handle for a thread that is already running (`_make_thread_handle`).
    pub fn running(ident: u64) -> Arc<Handle> {
        Self::register(RUNNING, ident)
    }

    pub fn ident(&self) -> u64 {
        self.ident.load(Ordering::Relaxed)
    }

    pub fn set_ident(&self, ident: u64) {
        self.ident.store(ident, Ordering::Relaxed);
    }

    pub fn is_started(&self) -> bool {
        self.state.load(Ordering::Acquire) != NOT_STARTED
    }

    pub fn is_done(&self) -> bool {
        self.done.is_set()
    }

    /// Claims a not-started handle for a new thread; false if it was
    /// started before ("thread already started").
    pub fn begin_start(self: &Arc<Self>, daemon: bool) -> bool {
        if self
            .state
            .compare_exchange(NOT_STARTED, STARTING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        if !daemon {
            list(&SHUTDOWN).push(Arc::clone(self));
        }
        true
    }

    /// The OS thread exists: record its ident.
    pub fn started(&self, ident: u64) {
        self.set_ident(ident);
        // The thread may already have finished and set DONE: keep that.
        let _ = self
            .state
            .compare_exchange(STARTING, RUNNING, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The OS thread could not be created: back to not started.
    pub fn start_failed(self: &Arc<Self>) {
        self.remove_from_shutdown();
        self.state.store(NOT_STARTED, Ordering::Release);
    }

    /// The thread has finished (or is declared finished): wake every joiner.
    pub fn set_done(&self) {
        self.remove_from_shutdown();
        self.state.store(DONE, Ordering::Release);
        self.done.set();
    }

    fn remove_from_shutdown(&self) {
        // A finishing thread gets here without the GIL: a fork must not split the section,
        // or the child's fork handler would wait for ever on the list's mutex.
        let _inside = crate::forkgate::enter();
        list(&SHUTDOWN).retain(|other| !std::ptr::eq(Arc::as_ptr(other), self));
    }

    /// The word joiners sleep on (for the wait record: a cancelled join is woken through it).
    pub fn wake_word(&self) -> &std::sync::atomic::AtomicU32 {
        self.done.wake_word()
    }

    /// Waits for the end of the thread, as `Lock.acquire` waits for a lock.
    pub fn wait_until(&self, deadline: Option<Deadline>) -> Acquire {
        self.done.wait_until(deadline)
    }
}

/// The next non-daemon thread `_shutdown()` must wait for: any in the list
/// but the caller's own.
pub fn next_to_join() -> Option<Arc<Handle>> {
    let me = thread::current_ident();
    list(&SHUTDOWN).iter().find(|h| h.ident() != me).cloned()
}

/// In the child after `fork()`: only the calling thread survived, so every
/// other thread's handle is done and nothing is left to join.
pub fn after_fork_child() {
    let me = thread::current_ident();
    list(&SHUTDOWN).clear();
    for weak in list(&ALL).iter() {
        if let Some(handle) = weak.upgrade() {
            if handle.ident() != me && handle.is_started() {
                handle.state.store(DONE, Ordering::Release);
                handle.done.set();
            }
        }
    }
}

#[cfg(Py_3_13)]
pub use py::*;

/// The `_thread._ThreadHandle` type (3.13+).
#[cfg(Py_3_13)]
mod py {
    use std::ffi::c_void;
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Arc;

    use pyo3::ffi::{self, PyObject, PyTypeObject};
    use pyo3::prelude::*;
    use rthread_core::thread;

    use super::Handle;
    use crate::acquire::{self, Outcome, Wait};
    use crate::capi::{self, MethodDef, Static};
    use crate::errors;
    use crate::pytype;

    #[repr(C)]
    pub struct HandleObject {
        ob_base: ffi::PyObject,
        handle: *const Handle, // from Arc::into_raw; released in dealloc
    }

    static TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

    /// Wraps `handle` in a new `_ThreadHandle`, or NULL with an error set.
    ///
    /// # Safety
    /// The GIL must be held and the module initialised.
    pub unsafe fn wrap(handle: Arc<Handle>) -> *mut PyObject {
        // SAFETY: GIL held; TYPE is the handle type, whose basicsize is
        // HandleObject's; the field is written before the object escapes.
        unsafe {
            let obj = ffi::PyType_GenericAlloc(TYPE.load(Ordering::Relaxed), 0);
            if !obj.is_null() {
                ptr::addr_of_mut!((*obj.cast::<HandleObject>()).handle)
                    .write(Arc::into_raw(handle));
            }
            obj
        }
    }

    /// The handle inside `obj` if it is a `_ThreadHandle`, else None.
    ///
    /// # Safety
    /// The GIL must be held and `obj` live.
    pub unsafe fn unwrap(obj: *mut PyObject) -> Option<Arc<Handle>> {
        // SAFETY: GIL held; a _ThreadHandle instance holds a live Arc raw
        // pointer, whose count is bumped for the clone returned.
        unsafe {
            if ffi::Py_TYPE(obj) != TYPE.load(Ordering::Relaxed) {
                return None;
            }
            let raw = (*obj.cast::<HandleObject>()).handle;
            Arc::increment_strong_count(raw);
            Some(Arc::from_raw(raw))
        }
    }

    /// # Safety
    /// `obj` is a live `_ThreadHandle`.
    unsafe fn handle_of<'a>(obj: *mut PyObject) -> &'a Handle {
        // SAFETY: the object owns one count of the Arc for its whole life.
        unsafe { &*(*obj.cast::<HandleObject>()).handle }
    }

    unsafe extern "C-unwind" fn new(
        tp: *mut PyTypeObject,
        _args: *mut PyObject,
        _kwargs: *mut PyObject,
    ) -> *mut PyObject {
        let _ = tp; // not subclassable: always the handle type
                    // SAFETY: called by CPython with the GIL held, after module init.
        unsafe { wrap(Handle::not_started()) }
    }

    unsafe extern "C-unwind" fn dealloc(slf: *mut PyObject) {
        // SAFETY: last reference gone, GIL held; the Arc count owned by the
        // object is released exactly once, then the memory.
        unsafe {
            drop(Arc::from_raw((*slf.cast::<HandleObject>()).handle));
            pytype::free_instance(slf);
        }
    }

    unsafe extern "C-unwind" fn repr(slf: *mut PyObject) -> *mut PyObject {
        // SAFETY: called by CPython with the GIL held, `slf` a handle.
        unsafe {
            pytype::repr_string(&format!(
                "<_thread._ThreadHandle object: ident={}>",
                handle_of(slf).ident()
            ))
        }
    }

    /// The `ident` getter. `PyGetSetDef` takes an `extern "C"` function; this
    /// one only reads an atomic and builds an int, so nothing can unwind.
    unsafe extern "C" fn get_ident(slf: *mut PyObject, _: *mut c_void) -> *mut PyObject {
        // SAFETY: called by CPython with the GIL held, `slf` a handle.
        unsafe { ffi::PyLong_FromUnsignedLongLong(handle_of(slf).ident()) }
    }

    /// Raises the built-in's errors for joining a handle that cannot be
    /// joined; true if `join` may wait.
    ///
    /// # Safety
    /// The GIL must be held.
    unsafe fn check_joinable(handle: &Handle) -> bool {
        // SAFETY: the GIL is held (caller).
        unsafe {
            if !handle.is_started() {
                errors::thread_error(errors::THREAD_NOT_STARTED);
                return false;
            }
            if handle.ident() == thread::current_ident() && !handle.is_done() {
                errors::thread_error(errors::JOIN_CURRENT_THREAD);
                return false;
            }
        }
        true
    }

    unsafe extern "C-unwind" fn join(slf: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
        // SAFETY: called by CPython with the GIL held, `slf` a handle and
        // `args` a tuple. The wait releases the GIL only around the core
        // event wait and keeps nothing with a destructor alive across it.
        unsafe {
            let handle = handle_of(slf);
            let mut timeout: *mut PyObject = ptr::null_mut();
            if capi::PyArg_ParseTuple(
                args,
                c"|O:join".as_ptr(),
                &mut timeout as *mut *mut PyObject,
            ) == 0
            {
                return ptr::null_mut();
            }
            let wait = if timeout.is_null() || timeout == ffi::Py_None() {
                Wait::Forever
            } else {
                let mut nanos: i64 = 0;
                if capi::_PyTime_FromSecondsObject(&mut nanos, timeout, capi::PYTIME_ROUND_TIMEOUT)
                    < 0
                {
                    return ptr::null_mut();
                }
                if nanos <= 0 {
                    Wait::NonBlocking
                } else {
                    Wait::Within(nanos as u64)
                }
            };
            if !check_joinable(handle) {
                return ptr::null_mut();
            }
            #[cfg(Py_3_14)]
            if !handle.is_done() && crate::finalizing::refuse_join() {
                return ptr::null_mut();
            }
            let on = crate::debug::WaitOn {
                what: rthread_core::diag::WaitFor::JoinIdent(handle.ident()),
                site: 0,
                held_by: None,
                wake: Some(handle.wake_word()),
            };
            match acquire::acquire_with(wait, || on, || handle.is_done(), |d| handle.wait_until(d))
            {
                Outcome::Error => ptr::null_mut(),
                Outcome::Acquired | Outcome::NotAcquired => capi::none(),
            }
        }
    }

    unsafe extern "C-unwind" fn is_done(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
        // SAFETY: called by CPython with the GIL held, `slf` a handle.
        unsafe { capi::boolean(handle_of(slf).is_done()) }
    }

    unsafe extern "C-unwind" fn set_done(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
        // SAFETY: called by CPython with the GIL held, `slf` a handle.
        unsafe {
            let handle = handle_of(slf);
            if !handle.is_started() {
                return errors::thread_error(errors::THREAD_NOT_STARTED);
            }
            handle.set_done();
            capi::none()
        }
    }

    const METHODS_LIST: &[MethodDef] = &[
        MethodDef::varargs(
            c"join",
            join,
            c"join(timeout=None)\n\nWait for the thread to finish, at most timeout seconds if given.",
        ),
        MethodDef::noargs(
            c"is_done",
            is_done,
            c"is_done($self, /)\n--\n\nWhether the thread has finished.",
        ),
        MethodDef::noargs(
            c"_set_done",
            set_done,
            c"_set_done($self, /)\n--\n\nMark the thread as finished (for the main thread at shutdown).",
        ),
        MethodDef::END,
    ];
    static METHODS: Static<[MethodDef; METHODS_LIST.len()]> =
        Static::new(capi::table(METHODS_LIST));

    static GETSET: Static<[ffi::PyGetSetDef; 2]> = Static::new([
        ffi::PyGetSetDef {
            name: c"ident".as_ptr(),
            get: Some(get_ident),
            set: None,
            doc: c"The thread's identifier (get_ident() in that thread).".as_ptr(),
            closure: ptr::null_mut(),
        },
        ffi::PyGetSetDef {
            name: ptr::null(),
            get: None,
            set: None,
            doc: ptr::null(),
            closure: ptr::null_mut(),
        },
    ]);

    /// Creates the `_ThreadHandle` type (the handle of a thread started by
    /// start_joinable_thread()); called once from module init. No `tp_doc`:
    /// the built-in's type has none (`__doc__` is None).
    pub fn create_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
        let mut slots = vec![
            capi::slot(ffi::Py_tp_new, new as *mut c_void),
            capi::slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
            capi::slot(ffi::Py_tp_repr, repr as *mut c_void),
            capi::slot(ffi::Py_tp_methods, METHODS.get().cast()),
            capi::slot(ffi::Py_tp_getset, GETSET.get().cast()),
        ];
        let tp = pytype::create(
            py,
            c"_thread._ThreadHandle",
            std::mem::size_of::<HandleObject>(),
            pytype::Flags {
                base_type: false,
                instantiable: true,
            },
            &mut slots,
        )?;
        TYPE.store(tp.as_ptr().cast(), Ordering::Relaxed);
        Ok(tp)
    }
}
