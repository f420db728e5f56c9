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
/// `RLock.acquire()` by its owner at the largest recursion count (up to 3.13;
/// from 3.14 on the count wraps).
#[cfg(not(Py_3_14))]
pub const RLOCK_COUNT_OVERFLOW: &CStr = c"Internal lock count overflowed";
/// `acquire(False, timeout)` with a timeout other than -1.
pub const NONBLOCKING_TIMEOUT: &CStr = c"can't specify a timeout for a non-blocking call";
/// A negative timeout other than -1.
#[cfg(Py_3_13)]
pub const NEGATIVE_TIMEOUT: &CStr = c"timeout value must be a non-negative number";
#[cfg(not(Py_3_13))]
pub const NEGATIVE_TIMEOUT: &CStr = c"timeout value must be positive";
/// A timeout above `PY_TIMEOUT_MAX` microseconds.
pub const TIMEOUT_TOO_LARGE: &CStr = c"timeout value is too large";
/// `pthread_create` failed.
pub const CANT_START_THREAD: &CStr = c"can't start new thread";
/// A thread start once the interpreter is shutting down (3.12+).
#[cfg(Py_3_12)]
pub const THREAD_AT_SHUTDOWN: &CStr = c"can't create new thread at interpreter shutdown";
/// Joining a thread that has not finished once the runtime is finalizing (3.14+).
#[cfg(Py_3_14)]
pub const JOIN_AT_SHUTDOWN: &CStr = c"cannot join thread at interpreter shutdown";
/// A lock wait that would start once the runtime is finalizing (3.15+).
#[cfg(Py_3_15)]
pub const ACQUIRE_AT_FINALIZATION: &CStr = c"cannot acquire lock at interpreter finalization";
/// Thread handles (3.13).
#[cfg(Py_3_13)]
pub const THREAD_NOT_STARTED: &CStr = c"thread not started";
#[cfg(Py_3_13)]
pub const THREAD_ALREADY_STARTED: &CStr = c"thread already started";
#[cfg(Py_3_13)]
pub const JOIN_CURRENT_THREAD: &CStr = c"Cannot join current thread";
#[cfg(Py_3_13)]
pub const NOT_A_HANDLE: &CStr = c"'handle' must be a _ThreadHandle";
#[cfg(Py_3_13)]
pub const THREAD_FUNC_NOT_CALLABLE: &CStr = c"thread function must be callable";
#[cfg(Py_3_13)]
pub const IDENT_NOT_INT: &CStr = c"ident must be an integer";
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

/// `_excepthook(args)` with `args` not exactly an `_ExceptHookArgs`.
pub const EXCEPTHOOK_ARG_TYPE: &CStr = c"_thread.excepthook argument type must be ExceptHookArgs";

/// `_local(...)` with arguments, when the type's `__init__` is `object`'s.
pub const LOCAL_INIT_ARGS: &CStr = c"Initialization arguments are not supported";
/// `PyThreadState_GetDict()` gave nothing (no thread state, or no memory).
pub const NO_THREAD_STATE_DICT: &CStr = c"Couldn't get thread-state dictionary";

/// `SystemError(message)`.
///
/// # Safety
/// The GIL must be held.
#[cold]
pub unsafe fn system_error(message: &CStr) -> *mut PyObject {
    // SAFETY: GIL held (caller); PyExc_SystemError is initialised at startup.
    unsafe { raise(ffi::PyExc_SystemError, message) }
}

/// Assigning or deleting `obj.<name>` where the attribute is read-only (a
/// `_local`'s `__dict__`): AttributeError with the built-in's message.
/// Returns -1, the `tp_setattro` error value.
///
/// # Safety
/// The GIL must be held; `obj` and `name` live.
#[cold]
pub unsafe fn attribute_read_only(obj: *mut PyObject, name: *mut PyObject) -> std::ffi::c_int {
    // SAFETY: GIL held; tp_name is NUL-terminated. `%U` needs a str; any
    // other object equal to "__dict__" is formatted with str() instead.
    unsafe {
        let format = if ffi::PyUnicode_Check(name) != 0 {
            c"'%.100s' object attribute '%U' is read-only"
        } else {
            c"'%.100s' object attribute '%S' is read-only"
        };
        ffi::PyErr_Format(
            ffi::PyExc_AttributeError,
            format.as_ptr(),
            (*ffi::Py_TYPE(obj)).tp_name,
            name,
        );
    }
    -1
}
