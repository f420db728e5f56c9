//! The module object: its functions, types and constants, per interpreter
//! version (the attribute set of the built-in `_thread` of that version).
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi::{self, PyObject};
use pyo3::prelude::*;

use crate::capi::{self, MethodDef, Static};
use crate::{excepthook, local, lock, rlock, thread};

unsafe extern "C-unwind" fn allocate_lock(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held, after module init.
    unsafe { lock::new_lock() }
}

#[cfg(Py_3_12)]
unsafe extern "C-unwind" fn always_true(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held. rthread loads only in the
    // main interpreter (PyO3 refuses subinterpreters), where daemon threads
    // are allowed.
    unsafe { capi::boolean(true) }
}

const START_DOC: &std::ffi::CStr = c"start_new_thread(function, args[, kwargs])\n\
(start_new() is an obsolete synonym)\n\n\
Run function(*args, **kwargs) in a new thread and return its identifier.\n\
The thread ends when the function returns; SystemExit ends it quietly, any\n\
other exception is passed to sys.unraisablehook.";
const ALLOCATE_DOC: &std::ffi::CStr = c"allocate_lock() -> lock object\n\
(allocate() is an obsolete synonym)\n\n\
Return a new, unlocked lock.";
const EXIT_DOC: &std::ffi::CStr = c"exit()\n(exit_thread() is an obsolete synonym)\n\n\
End the calling thread by raising SystemExit.";
#[cfg(not(Py_3_10))]
const INTERRUPT_DOC: &std::ffi::CStr = c"interrupt_main()\n\n\
Make the main thread act as if SIGINT arrived: its handler runs soon.";
#[cfg(Py_3_10)]
const INTERRUPT_DOC: &std::ffi::CStr = c"interrupt_main(signum=signal.SIGINT, /)\n\n\
Make the main thread act as if the signal arrived: its Python handler runs\n\
soon. Nothing happens if the signal is ignored or has no Python handler.";
const IDENT_DOC: &std::ffi::CStr = c"get_ident() -> integer\n\n\
A non-zero integer identifying the calling thread among the running ones.\n\
It may be reused once the thread has ended.";
const NATIVE_ID_DOC: &std::ffi::CStr = c"get_native_id() -> integer\n\n\
The operating system's id of the calling thread (the kernel TID on Linux).";
const STACK_DOC: &std::ffi::CStr = c"stack_size([size]) -> size\n\n\
Return the stack size used for new threads and set it to size (0 when not\n\
given: the platform default). A non-zero size must be at least 32768 bytes.";
const COUNT_DOC: &std::ffi::CStr = c"_count() -> integer\n\n\
How many threads started by this module are still running their function.";

const FUNCTIONS_LIST: &[MethodDef] = &[
    MethodDef::varargs(c"start_new_thread", thread::start_new_thread, START_DOC),
    MethodDef::varargs(c"start_new", thread::start_new_thread, START_DOC),
    MethodDef::noargs(c"allocate_lock", allocate_lock, ALLOCATE_DOC),
    MethodDef::noargs(c"allocate", allocate_lock, ALLOCATE_DOC),
    MethodDef::noargs(c"exit_thread", thread::exit, EXIT_DOC),
    MethodDef::noargs(c"exit", thread::exit, EXIT_DOC),
    #[cfg(not(Py_3_10))]
    MethodDef::noargs(c"interrupt_main", thread::interrupt_main, INTERRUPT_DOC),
    #[cfg(Py_3_10)]
    MethodDef::varargs(c"interrupt_main", thread::interrupt_main, INTERRUPT_DOC),
    MethodDef::noargs(c"get_ident", thread::get_ident, IDENT_DOC),
    MethodDef::noargs(c"get_native_id", thread::get_native_id, NATIVE_ID_DOC),
    MethodDef::noargs(c"_count", thread::count, COUNT_DOC),
    MethodDef::varargs(c"stack_size", thread::stack_size, STACK_DOC),
    #[cfg(Py_3_12)]
    MethodDef::noargs(
        c"daemon_threads_allowed",
        always_true,
        c"daemon_threads_allowed() -> bool\n\nWhether daemon threads may be started in this interpreter.",
    ),
    #[cfg(Py_3_12)]
    MethodDef::noargs(
        c"_is_main_interpreter",
        always_true,
        c"_is_main_interpreter() -> bool\n\nWhether this is the main interpreter.",
    ),
    MethodDef::END,
];

static FUNCTIONS: Static<[MethodDef; FUNCTIONS_LIST.len()]> =
    Static::new(capi::table(FUNCTIONS_LIST));

/// Fills the module: functions, types, constants.
pub fn populate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // SAFETY: the GIL is held; FUNCTIONS is a 'static, END-terminated table.
    if unsafe { ffi::PyModule_AddFunctions(m.as_ptr(), capi::method_table(&FUNCTIONS)) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let lock_type = lock::create_type(py)?;
    m.add("LockType", &lock_type)?;
    #[cfg(Py_3_13)]
    m.add("lock", &lock_type)?;
    m.add("RLock", rlock::create_type(py)?)?;
    m.add("error", py.get_type::<PyRuntimeError>())?;
    m.add("TIMEOUT_MAX", rthread_core::TIMEOUT_MAX)?;
    local::register(m)?;
    excepthook::register(m)?;
    Ok(())
}
