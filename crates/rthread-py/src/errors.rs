//! Every exception the binding raises, in one place, with the message the
//! built-in `_thread` of the interpreter being compiled for uses.
//!
//! Messages that CPython generates itself (argument parsing, timeout
//! conversion, arity errors of `METH_NOARGS` functions) are not repeated here:
//! the binding calls the same interpreter routines, so they match by
//! construction.
use std::ffi::CStr;
use std::ptr;

use pyo3::ffi::{self, PyObject};

/// `lock.release()` on an unlocked lock.
pub const RELEASE_UNLOCKED: &CStr = c"release unlocked lock";
/// `RLock.release()` by a non-owner, or of an RLock nobody holds.
pub const RELEASE_UNACQUIRED: &CStr = c"cannot release un-acquired lock";
/// `acquire(False, timeout)` with a timeout other than -1.
pub const NONBLOCKING_TIMEOUT: &CStr = c"can't specify a timeout for a non-blocking call";
/// A negative timeout other than -1.
#[cfg(Py_3_13)]
pub const NEGATIVE_TIMEOUT: &CStr = c"timeout value must be a non-negative number";
#[cfg(not(Py_3_13))]
pub const NEGATIVE_TIMEOUT: &CStr = c"timeout value must be positive";
/// A timeout above `PY_TIMEOUT_MAX` microseconds (reachable from 3.12 on).
#[cfg(Py_3_12)]
pub const TIMEOUT_TOO_LARGE: &CStr = c"timeout value is too large";
/// `pthread_create` failed.
pub const CANT_START_THREAD: &CStr = c"can't start new thread";
/// `start_new_thread` argument checks.
pub const NOT_CALLABLE: &CStr = c"first arg must be callable";
pub const ARGS_NOT_TUPLE: &CStr = c"2nd arg must be a tuple";
pub const KWARGS_NOT_DICT: &CStr = c"optional 3rd arg must be a dictionary";
/// `stack_size()` argument checks.
pub const STACK_SIZE_NEGATIVE: &CStr = c"size must be 0 or a positive value";
/// `interrupt_main(signum)` with a signal number the OS does not have.
#[cfg(Py_3_10)]
pub const SIGNAL_OUT_OF_RANGE: &CStr = c"signal number out of range";

/// Raises `exc(message)` and returns NULL, the C-API error return.
///
/// # Safety
/// The GIL must be held; `exc` must be an exception type.
#[cold]
pub unsafe fn raise(exc: *mut PyObject, message: &CStr) -> *mut PyObject {
    // SAFETY: the caller holds the GIL and passes an exception type.
    unsafe { ffi::PyErr_SetString(exc, message.as_ptr()) };
    ptr::null_mut()
}

/// Raises `exc` with a message built in Rust.
///
/// # Safety
/// The GIL must be held; `exc` must be an exception type.
#[cold]
pub unsafe fn raise_string(exc: *mut PyObject, message: &str) -> *mut PyObject {
    // Interior NULs cannot occur in the messages built here; fall back to a
    // truncated message rather than fail if one ever did.
    let text = std::ffi::CString::new(message).unwrap_or_else(|e| {
        std::ffi::CString::new(&message[..e.nul_position()]).unwrap_or_default()
    });
    // SAFETY: the caller holds the GIL and passes an exception type.
    unsafe { raise(exc, &text) }
}

/// `ValueError(message)`.
///
/// # Safety
/// The GIL must be held.
#[cold]
pub unsafe fn value_error(message: &CStr) -> *mut PyObject {
    // SAFETY: GIL held (caller); PyExc_ValueError is initialised at startup.
    unsafe { raise(ffi::PyExc_ValueError, message) }
}

/// `TypeError(message)`.
///
/// # Safety
/// The GIL must be held.
#[cold]
pub unsafe fn type_error(message: &CStr) -> *mut PyObject {
    // SAFETY: GIL held (caller); PyExc_TypeError is initialised at startup.
    unsafe { raise(ffi::PyExc_TypeError, message) }
}

/// `OverflowError(message)`.
#[cfg(Py_3_12)]
///
/// # Safety
/// The GIL must be held.
#[cold]
pub unsafe fn overflow_error(message: &CStr) -> *mut PyObject {
    // SAFETY: GIL held (caller); PyExc_OverflowError is initialised at startup.
    unsafe { raise(ffi::PyExc_OverflowError, message) }
}

/// `_thread.error`, which is `RuntimeError` (`threading.ThreadError`).
///
/// # Safety
/// The GIL must be held.
#[cold]
pub unsafe fn thread_error(message: &CStr) -> *mut PyObject {
    // SAFETY: GIL held (caller); PyExc_RuntimeError is initialised at startup.
    unsafe { raise(ffi::PyExc_RuntimeError, message) }
}
