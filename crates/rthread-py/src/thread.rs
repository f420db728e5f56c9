//! Starting threads (`start_new_thread`) and the per-thread functions:
//! `get_ident`, `get_native_id`, `stack_size`, `exit`, `interrupt_main`,
//! `_count`.
//!
//! A thread is an OS thread from `pthread_create` (through
//! `rthread_core::thread::spawn_raw`), with the stack size `stack_size()` set,
//! or else the platform default CPython gets. It enters Python with
//! `PyGILState_Ensure` and runs the callable through this crate's
//! `"C-unwind"` declarations. Until 3.14, a daemon thread that touches the GIL
//! after finalization began is ended by `pthread_exit`, a forced unwind: the
//! entry function therefore keeps nothing with a destructor on its stack while
//! Python runs, so the unwind passes through it and the process lives on.
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pyo3::ffi::{self, PyObject, Py_ssize_t};
use rthread_core::thread::{self, StackSizeError};

use crate::capi;
use crate::errors;

/// Threads started here that are running their callable (`_count()`).
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// What the new thread needs; owned by it once `spawn_raw` succeeded.
#[repr(C)]
struct Boot {
    func: *mut PyObject,
    args: *mut PyObject,
    /// NULL when no keyword arguments were given.
    kwargs: *mut PyObject,
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
        let Boot { func, args, kwargs } = *Box::from_raw(arg.cast::<Boot>());
        let gil = capi::PyGILState_Ensure();
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
        capi::PyGILState_Release(gil);
    }
    ptr::null_mut()
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
        match spawn(func, args, kwargs) {
            Some(ident) => ffi::PyLong_FromUnsignedLongLong(ident),
            None => errors::thread_error(errors::CANT_START_THREAD),
        }
    }
}

/// Starts `func(*args, **kwargs)` on a new thread; `None` if the OS refused.
///
/// # Safety
/// The GIL is held; `func` callable, `args` a tuple, `kwargs` NULL or a dict.
unsafe fn spawn(func: *mut PyObject, args: *mut PyObject, kwargs: *mut PyObject) -> Option<u64> {
    // SAFETY: GIL held (caller). Boot owns one new reference to each object;
    // ownership passes to the thread only when spawn_raw succeeds, and
    // `thread_main` upholds spawn_raw's contract for a Box<Boot> argument.
    unsafe {
        ffi::Py_INCREF(func);
        ffi::Py_INCREF(args);
        if !kwargs.is_null() {
            ffi::Py_INCREF(kwargs);
        }
        let boot = Box::into_raw(Box::new(Boot { func, args, kwargs }));
        match thread::spawn_raw(thread::stack_size(), thread_main, boot.cast()) {
            Ok(ident) => Some(ident),
            Err(_) => {
                let Boot { func, args, kwargs } = *Box::from_raw(boot);
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
        if capi::PyArg_ParseTuple(
            args,
            c"|i:interrupt_main".as_ptr(),
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
