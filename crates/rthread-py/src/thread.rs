//! Starting threads (`start_new_thread`) and the per-thread functions:
//! `get_ident`, `get_native_id`, `stack_size`, `exit`, `interrupt_main`,
//! `_count`.
//!
//! A thread is an OS thread from `pthread_create` (through
//! `rthread_core::thread::spawn_raw`), with the stack size `stack_size()` set,
//! or else the platform default CPython gets. It enters Python with
//! `PyGILState_Ensure` (its own, `forkgate::ensure_new_thread`) and runs the callable through this crate's
//! `"C-unwind"` declarations. Until 3.14, a daemon thread that touches the GIL
//! after finalization began is ended by `pthread_exit`, a forced unwind: the
//! entry function therefore keeps nothing with a destructor on its stack while
//! Python runs, so the unwind passes through it and the process lives on.
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::ffi::{self, PyObject, Py_ssize_t};
use rthread_core::thread::{self, StackSizeError};

use crate::capi;
use crate::errors;
use crate::finalizing;
use crate::forkgate;
use crate::gil;
use crate::handle::{self, Handle};
use crate::local;
#[cfg(not(Py_3_14))]
use crate::name;

/// Threads started here that are running their callable (`_count()`).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// What the new thread needs; owned by it once `spawn_raw` succeeded.
#[repr(C)]
struct Boot {
    func: *mut PyObject,
    args: *mut PyObject,
    /// NULL when no keyword arguments were given.
    kwargs: *mut PyObject,
    /// From `Arc::into_raw`, or NULL for threads nobody joins
    /// (`start_new_thread`).
    handle: *const Handle,
    /// The OS name for a `threading.Thread` (before 3.14, whose `threading`
    /// names its threads itself through `set_name`).
    #[cfg(not(Py_3_14))]
    name: Option<name::EncodedName>,
}

/// The new thread's entry point.
///
/// # Safety
/// `arg` is a `Box<Boot>` turned into a raw pointer, owning one reference to
/// each object in it; the interpreter is initialised.
unsafe extern "C-unwind" fn thread_main(arg: *mut c_void) -> *mut c_void {
    // SAFETY:
    // - `arg` is the Box<Boot> handed over by `start_new_thread`; it is read
    //   and freed before Python runs, so no Rust value with a destructor is
    //   alive while Python code runs on this stack (see the module docs);
    // - every Python call happens between PyGILState_Ensure and _Release;
    // - the three references owned by Boot are released exactly once, after
    //   `_count` was decremented (a weakref callback on the callable may
    //   observe `_count()`).
    unsafe {
        let Boot {
            func,
            args,
            kwargs,
            handle,
            #[cfg(not(Py_3_14))]
            name,
        } = *Box::from_raw(arg.cast::<Boot>());
        if !handle.is_null() {
            (*handle).set_ident(thread::current_ident());
        }
        // Listed in reports from its start (the slot is freed at thread exit). Inside the
        // fork gate: registering may be setting up a chunk of the slot table.
        {
            let _inside = forkgate::enter();
            let _ = rthread_core::diag::register_current_thread();
        }
        // Named before any Python code of the thread runs; a refusal by the
        // OS is no reason to fail the thread.
        #[cfg(not(Py_3_14))]
        if let Some(name) = name {
            let _ = thread::set_current_name_bytes(name.as_bytes());
        }
        // A thread whose OS thread only starts once the runtime finalizes
        // never runs its function. The built-in gets there by checking (3.12+)
        // or by being ended in the attach (before); rthread checks first in
        // every version: 3.14+ would park it forever in the attach (or, on
        // 3.14, even let a fresh thread state attach), and before 3.14 a
        // thread state made that late can touch a torn-down interpreter
        // (measured on exits that start threads from atexit: SIGSEGV in 16
        // of 60 on 3.13, 5 of 400 on 3.11; the built-in, none). Its
        // references are left alone (taking the GIL to drop them is what
        // must not happen), and its handle reads done.
        if finalizing::runtime_finalizing() {
            abandon(handle);
            return ptr::null_mut();
        }
        // PyGILState_Ensure, with the thread state made inside the fork gate (see there).
        let gstate = forkgate::ensure_new_thread();
        // Finalization may have begun in between; 3.14 then lets the fresh
        // thread state attach. Give it back without running anything.
        #[cfg(Py_3_14)]
        if finalizing::runtime_finalizing() {
            capi::PyGILState_Release(gstate);
            abandon(handle);
            return ptr::null_mut();
        }
        gil::held();
        RUNNING.fetch_add(1, Ordering::Relaxed);
        let result = capi::PyObject_Call(func, args, kwargs);
        if result.is_null() {
            report_exception(func);
        } else {
            capi::Py_DecRef(result);
        }
        RUNNING.fetch_sub(1, Ordering::Relaxed);
        capi::Py_DecRef(func);
        capi::Py_DecRef(args);
        if !kwargs.is_null() {
            capi::Py_DecRef(kwargs);
        }
        // Before the thread state is cleared (see there).
        local::release_current_thread();
        gil::releasing();
        capi::PyGILState_Release(gstate);
        gil::released();
        // Python is done with this thread: wake the joiners. (A thread ended
        // by finalization never gets here; nobody joins it any more.)
        if !handle.is_null() {
            Arc::from_raw(handle).set_done();
        }
    }
    ptr::null_mut()
}

/// The end of a thread that never ran because finalization had begun: no
/// Python object is touched; joiners are woken.
///
/// # Safety
/// `handle` is NULL or an `Arc::into_raw` pointer owned by the caller.
unsafe fn abandon(handle: *const Handle) {
    if !handle.is_null() {
        // SAFETY: the thread's own count of the handle, released once.
        unsafe { Arc::from_raw(handle).set_done() };
    }
}

/// SystemExit ends the thread quietly; anything else goes to
/// `sys.unraisablehook`, reported as the built-in of this version reports it.
///
/// # Safety
/// The GIL is held and an exception is set.
unsafe fn report_exception(func: *mut PyObject) {
    // SAFETY: GIL held with an exception set (caller); `func` is alive (Boot
    // still owns it).
    unsafe {
        if ffi::PyErr_ExceptionMatches(ffi::PyExc_SystemExit) != 0 {
            ffi::PyErr_Clear();
            return;
        }
        #[cfg(Py_3_13)]
        capi::PyErr_FormatUnraisable(c"Exception ignored in thread started by %R".as_ptr(), func);
        #[cfg(not(Py_3_13))]
        capi::_PyErr_WriteUnraisableMsg(c"in thread started by".as_ptr(), func);
    }
}

/// `start_new_thread(function, args[, kwargs])`.
pub unsafe extern "C-unwind" fn start_new_thread(
    _module: *mut PyObject,
    fargs: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `fargs` a tuple. The
    // unpacked objects are borrowed from it; Boot takes new references, which
    // are given back if the thread cannot be started.
    unsafe {
        let mut func: *mut PyObject = ptr::null_mut();
        let mut args: *mut PyObject = ptr::null_mut();
        let mut kwargs: *mut PyObject = ptr::null_mut();
        if capi::PyArg_UnpackTuple(
            fargs,
            c"start_new_thread".as_ptr(),
            2,
            3,
            &mut func as *mut *mut PyObject,
            &mut args as *mut *mut PyObject,
            &mut kwargs as *mut *mut PyObject,
        ) == 0
        {
            return ptr::null_mut();
        }
        if ffi::PyCallable_Check(func) == 0 {
            return errors::type_error(errors::NOT_CALLABLE);
        }
        if ffi::PyTuple_Check(args) == 0 {
            return errors::type_error(errors::ARGS_NOT_TUPLE);
        }
        if !kwargs.is_null() && ffi::PyDict_Check(kwargs) == 0 {
            return errors::type_error(errors::KWARGS_NOT_DICT);
        }
        #[cfg(Py_3_12)]
        if capi::PySys_Audit(
            c"_thread.start_new_thread".as_ptr(),
            c"OOO".as_ptr(),
            func,
            args,
            if kwargs.is_null() {
                ffi::Py_None()
            } else {
                kwargs
            },
        ) < 0
        {
            return ptr::null_mut();
        }
        if finalizing::refuse_new_thread() {
            return ptr::null_mut();
        }
        match spawn(func, args, kwargs, None) {
            Some(ident) => ffi::PyLong_FromUnsignedLongLong(ident),
            None => errors::thread_error(errors::CANT_START_THREAD),
        }
    }
}

/// Starts `func(*args, **kwargs)` on a new thread, whose end sets `handle`
/// done; `None` if the OS refused.
///
/// # Safety
/// The GIL is held; `func` callable, `args` a tuple, `kwargs` NULL or a dict.
unsafe fn spawn(
    func: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
    handle: Option<Arc<Handle>>,
) -> Option<u64> {
    // SAFETY: GIL held (caller). Boot owns one new reference to each object;
    // ownership passes to the thread only when spawn_raw succeeds, and
    // `thread_main` upholds spawn_raw's contract for a Box<Boot> argument.
    unsafe {
        ffi::Py_INCREF(func);
        ffi::Py_INCREF(args);
        if !kwargs.is_null() {
            ffi::Py_INCREF(kwargs);
        }
        let handle = handle.map_or(ptr::null(), Arc::into_raw);
        let boot = Box::into_raw(Box::new(Boot {
            func,
            args,
            kwargs,
            handle,
            #[cfg(not(Py_3_14))]
            name: name::bootstrap_name(func),
        }));
        match thread::spawn_raw(thread::stack_size(), thread_main, boot.cast()) {
            Ok(ident) => Some(ident),
            Err(_) => {
                let Boot {
                    func,
                    args,
                    kwargs,
                    handle,
                    ..
                } = *Box::from_raw(boot);
                if !handle.is_null() {
                    drop(Arc::from_raw(handle));
                }
                ffi::Py_DECREF(func);
                ffi::Py_DECREF(args);
                if !kwargs.is_null() {
                    ffi::Py_DECREF(kwargs);
                }
                None
            }
        }
    }
}

/// `get_ident()`: `pthread_self()`, the same number `threading` uses.
pub unsafe extern "C-unwind" fn get_ident(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held.
    unsafe { ffi::PyLong_FromUnsignedLongLong(thread::current_ident()) }
}

/// `get_native_id()`: the kernel's thread id.
pub unsafe extern "C-unwind" fn get_native_id(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held.
    unsafe { ffi::PyLong_FromUnsignedLongLong(thread::native_id()) }
}

/// `_count()`.
pub unsafe extern "C-unwind" fn count(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held.
    unsafe { ffi::PyLong_FromSize_t(RUNNING.load(Ordering::Relaxed)) }
}

/// `exit()`: raise SystemExit, which ends the thread quietly.
pub unsafe extern "C-unwind" fn exit(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held.
    unsafe {
        ffi::PyErr_SetNone(ffi::PyExc_SystemExit);
    }
    ptr::null_mut()
}

/// `stack_size([size])`: returns the previous size; sets the new one (0 when
/// not given), validated like the built-in.
pub unsafe extern "C-unwind" fn stack_size(_: *mut PyObject, args: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `args` a tuple.
    unsafe {
        let mut size: Py_ssize_t = 0;
        if capi::PyArg_ParseTuple(
            args,
            c"|n:stack_size".as_ptr(),
            &mut size as *mut Py_ssize_t,
        ) == 0
        {
            return ptr::null_mut();
        }
        // 3.14+ first refuses anything non-zero below its own minimum,
        // negative sizes included, with one message.
        #[cfg(Py_3_14)]
        if size != 0 && size < thread::STACK_SIZE_MIN_PY314 as Py_ssize_t {
            return errors::raise_string(
                ffi::PyExc_ValueError,
                &format!(
                    "size must be at least {} bytes",
                    thread::STACK_SIZE_MIN_PY314
                ),
            );
        }
        match thread::check_stack_size(size) {
            Ok(size) => ffi::PyLong_FromSize_t(thread::set_stack_size(size)),
            Err(StackSizeError::Negative) => errors::value_error(errors::STACK_SIZE_NEGATIVE),
            Err(StackSizeError::Invalid(size)) => errors::raise_string(
                ffi::PyExc_ValueError,
                &format!("size not valid: {size} bytes"),
            ),
        }
    }
}

/// `interrupt_main()` (3.9): simulate SIGINT arriving in the main thread.
#[cfg(not(Py_3_10))]
pub unsafe extern "C-unwind" fn interrupt_main(
    _: *mut PyObject,
    _: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held.
    unsafe {
        ffi::PyErr_SetInterrupt();
        capi::none()
    }
}

/// `interrupt_main(signum=SIGINT, /)` (3.10+): simulate `signum` arriving in
/// the main thread.
#[cfg(Py_3_10)]
pub unsafe extern "C-unwind" fn interrupt_main(
    _: *mut PyObject,
    args: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `args` a tuple.
    unsafe {
        let mut signum: std::ffi::c_int = libc::SIGINT;
        // "signum" as the function name is what the built-in's format string
        // says too, so its arity errors read "signum() takes at most ...".
        if capi::PyArg_ParseTuple(
            args,
            c"|i:signum".as_ptr(),
            &mut signum as *mut std::ffi::c_int,
        ) == 0
        {
            return ptr::null_mut();
        }
        if ffi::PyErr_SetInterruptEx(signum) != 0 {
            return errors::value_error(errors::SIGNAL_OUT_OF_RANGE);
        }
        capi::none()
    }
}

/// Ident of the main thread: the thread that imported rthread if it is the
/// process's initial thread (or the thread that survived a fork).
static MAIN_IDENT: AtomicU64 = AtomicU64::new(0);

/// The main thread's ident (see `MAIN_IDENT`).
pub fn main_ident() -> u64 {
    MAIN_IDENT.load(Ordering::Relaxed)
}

/// Records the main thread's ident at module init.
pub fn init_main_ident() {
    MAIN_IDENT.store(thread::current_ident(), Ordering::Relaxed);
}

/// `os.register_at_fork(after_in_child=...)` target: the forking thread is
/// the only one left.
unsafe extern "C-unwind" fn after_fork_child(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    init_main_ident();
    handle::after_fork_child();
    crate::debug::after_fork_child();
    // SAFETY: called by CPython with the GIL held.
    unsafe { capi::none() }
}

static AFTER_FORK_DEF: capi::Static<capi::MethodDef> = capi::Static::new(capi::MethodDef::noargs(
    c"_rthread_after_fork_child",
    after_fork_child,
    c"Marks the threads that did not survive fork() as done.",
));

/// Registers the fork handler with `os.register_at_fork`.
pub fn register_fork_handler(py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
    use pyo3::prelude::*;
    // SAFETY: the GIL is held; the method def is 'static.
    let func = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(
                AFTER_FORK_DEF.get().cast(),
                ptr::null_mut(),
                ptr::null_mut(),
            ),
        )?
    };
    let kwargs = pyo3::types::PyDict::new(py);
    kwargs.set_item("after_in_child", func)?;
    py.import("os")?
        .getattr("register_at_fork")?
        .call((), Some(&kwargs))?;
    Ok(())
}

/// `_get_main_thread_ident()` (3.13).
#[cfg(Py_3_13)]
pub unsafe extern "C-unwind" fn get_main_thread_ident(
    _: *mut PyObject,
    _: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held.
    unsafe { ffi::PyLong_FromUnsignedLongLong(MAIN_IDENT.load(Ordering::Relaxed)) }
}

/// `start_joinable_thread(function, handle=None, daemon=True)` (3.13): runs
/// `function()` in a new thread and returns its `_ThreadHandle`; a non-daemon
/// thread is joined by `_shutdown()`.
#[cfg(Py_3_13)]
pub unsafe extern "C-unwind" fn start_joinable_thread(
    _: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    static KEYWORDS: capi::Static<[*const std::ffi::c_char; 4]> = capi::Static::new([
        c"function".as_ptr(),
        c"handle".as_ptr(),
        c"daemon".as_ptr(),
        ptr::null(),
    ]);
    // SAFETY: called by CPython with the GIL held, `args` a tuple and
    // `kwargs` NULL or a dict. Parsed objects are borrowed from them.
    unsafe {
        let mut func: *mut PyObject = ptr::null_mut();
        let mut hobj: *mut PyObject = ptr::null_mut();
        let mut daemon: std::ffi::c_int = 1;
        if capi::PyArg_ParseTupleAndKeywords(
            args,
            kwargs,
            c"O|Op:start_joinable_thread".as_ptr(),
            KEYWORDS.get().cast(),
            &mut func as *mut *mut PyObject,
            &mut hobj as *mut *mut PyObject,
            &mut daemon as *mut std::ffi::c_int,
        ) == 0
        {
            return ptr::null_mut();
        }
        if ffi::PyCallable_Check(func) == 0 {
            return errors::type_error(errors::THREAD_FUNC_NOT_CALLABLE);
        }
        let given = if hobj.is_null() || hobj == ffi::Py_None() {
            None
        } else {
            match handle::unwrap(hobj) {
                Some(handle) => Some(handle),
                None => return errors::type_error(errors::NOT_A_HANDLE),
            }
        };
        if capi::PySys_Audit(
            c"_thread.start_joinable_thread".as_ptr(),
            c"OiO".as_ptr(),
            func,
            daemon,
            if hobj.is_null() { ffi::Py_None() } else { hobj },
        ) < 0
        {
            return ptr::null_mut();
        }
        if finalizing::refuse_new_thread() {
            return ptr::null_mut();
        }
        let handle = given.unwrap_or_else(Handle::not_started);
        if !handle.begin_start(daemon != 0) {
            return errors::thread_error(errors::THREAD_ALREADY_STARTED);
        }
        let result = handle::wrap(Arc::clone(&handle));
        if result.is_null() {
            handle.start_failed();
            return result;
        }
        let empty = ffi::PyTuple_New(0);
        if empty.is_null() {
            handle.start_failed();
            ffi::Py_DECREF(result);
            return empty;
        }
        let started = spawn(func, empty, ptr::null_mut(), Some(Arc::clone(&handle)));
        ffi::Py_DECREF(empty);
        match started {
            Some(ident) => {
                handle.started(ident);
                if !hobj.is_null() && hobj != ffi::Py_None() {
                    // Return the caller's handle object itself.
                    ffi::Py_DECREF(result);
                    ffi::Py_INCREF(hobj);
                    return hobj;
                }
                result
            }
            None => {
                handle.start_failed();
                ffi::Py_DECREF(result);
                errors::thread_error(errors::CANT_START_THREAD)
            }
        }
    }
}

/// `_make_thread_handle(ident)` (3.13): a running-state handle for a thread
/// not started here.
#[cfg(Py_3_13)]
pub unsafe extern "C-unwind" fn make_thread_handle(
    _: *mut PyObject,
    ident: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `ident` a live object.
    unsafe {
        if ffi::PyLong_Check(ident) == 0 {
            return errors::type_error(errors::IDENT_NOT_INT);
        }
        let value = ffi::PyLong_AsUnsignedLongLong(ident);
        if value == u64::MAX && !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        handle::wrap(Handle::running(value))
    }
}

/// `_shutdown()` (3.13): waits for every non-daemon thread but the caller.
/// A signal handler that raises (Ctrl-C) ends the wait; the error goes to
/// `sys.unraisablehook`.
#[cfg(Py_3_13)]
pub unsafe extern "C-unwind" fn shutdown(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    use crate::acquire::{acquire_with, Outcome, Wait};
    // SAFETY: called by CPython with the GIL held. Each handle is held as a
    // raw Arc pointer across the GIL-free wait, so no destructor is alive
    // there; it is released afterwards.
    unsafe {
        while let Some(next) = handle::next_to_join() {
            let raw = Arc::into_raw(next);
            let on = crate::debug::WaitOn {
                what: rthread_core::diag::WaitFor::JoinIdent((*raw).ident()),
                site: 0,
                held_by: None,
                wake: Some((*raw).wake_word()),
            };
            let outcome = acquire_with(
                Wait::Forever,
                || on,
                || (*raw).is_done(),
                |d| (*raw).wait_until(d),
            );
            drop(Arc::from_raw(raw));
            if outcome == Outcome::Error {
                ffi::PyErr_WriteUnraisable(ptr::null_mut());
                break;
            }
        }
        capi::none()
    }
}
