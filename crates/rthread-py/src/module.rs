//! The module object: its functions, types and constants, per interpreter
//! version (the attribute set of the built-in `_thread` of that version).
use pyo3::exceptions::PyRuntimeError;
use pyo3::ffi::{self, PyObject};
use pyo3::prelude::*;

use std::ffi::CStr;

use crate::capi::{self, docstring, MethodDef, Static};
#[cfg(Py_3_13)]
use crate::handle;
#[cfg(not(Py_3_13))]
use crate::sentinel;
use crate::{acquire, excepthook, forkgate, local, lock, name, rlock, thread};

unsafe extern "C-unwind" fn allocate_lock(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held, after module init.
    unsafe { lock::new_lock() }
}

#[cfg(Py_3_12)]
unsafe extern "C-unwind" fn always_true(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held. rthread loads only in the
    // main interpreter (its init refuses subinterpreters, see lib.rs), where
    // daemon threads are allowed.
    unsafe { capi::boolean(true) }
}

const START_DOC: &CStr = docstring!(
    "start_new_thread($module, function, args, kwargs={}, /)",
    "Run function(*args, **kwargs) in a new thread and return its identifier.\n\
The thread ends when the function returns; SystemExit ends it quietly, any\n\
other exception is passed to sys.unraisablehook."
);
const START_ALIAS_DOC: &CStr = docstring!(
    "start_new($module, function, args, kwargs={}, /)",
    "Old name of start_new_thread()."
);
const ALLOCATE_DOC: &CStr = docstring!(
    "allocate_lock($module, /)",
    "Return a new, unlocked lock object."
);
const ALLOCATE_ALIAS_DOC: &CStr =
    docstring!("allocate($module, /)", "Old name of allocate_lock().");
const EXIT_DOC: &CStr = docstring!(
    "exit($module, /)",
    "End the calling thread by raising SystemExit (quietly, unless caught)."
);
const EXIT_ALIAS_DOC: &CStr = docstring!("exit_thread($module, /)", "Old name of exit().");
#[cfg(not(Py_3_10))]
const INTERRUPT_DOC: &CStr = docstring!(
    "interrupt_main($module, /)",
    "Make the main thread act as if SIGINT arrived: its handler runs soon."
);
#[cfg(Py_3_10)]
const INTERRUPT_DOC: &CStr = docstring!(
    "interrupt_main($module, signum=signal.SIGINT, /)",
    "Make the main thread act as if the signal arrived: its Python handler runs\n\
soon. Nothing happens if the signal is ignored or has no Python handler."
);
const IDENT_DOC: &CStr = docstring!(
    "get_ident($module, /)",
    "A non-zero integer identifying the calling thread among the running ones.\n\
It may be reused once the thread has ended."
);
const NATIVE_ID_DOC: &CStr = docstring!(
    "get_native_id($module, /)",
    "The operating system's id of the calling thread (the kernel TID on Linux)."
);
#[cfg(not(Py_3_14))]
const STACK_DOC: &CStr = docstring!(
    "stack_size($module, size=0, /)",
    "Return the stack size used for new threads and set it to size (0 when not\n\
given: the platform default). A non-zero size must be at least 32768 bytes."
);
#[cfg(Py_3_14)]
const STACK_DOC: &CStr = docstring!(
    "stack_size($module, size=0, /)",
    "Return the stack size used for new threads and set it to size (0 when not\n\
given: the platform default). A non-zero size must be at least 53248 bytes\n\
(on 64-bit platforms), room for the interpreter's stack-overflow margin."
);
const COUNT_DOC: &CStr = docstring!(
    "_count($module, /)",
    "How many threads started by this module are still running their function."
);

const FUNCTIONS_LIST: &[MethodDef] = &[
    MethodDef::varargs(c"start_new_thread", thread::start_new_thread, START_DOC),
    MethodDef::varargs(c"start_new", thread::start_new_thread, START_ALIAS_DOC),
    MethodDef::noargs(c"allocate_lock", allocate_lock, ALLOCATE_DOC),
    MethodDef::noargs(c"allocate", allocate_lock, ALLOCATE_ALIAS_DOC),
    MethodDef::noargs(c"exit_thread", thread::exit, EXIT_ALIAS_DOC),
    MethodDef::noargs(c"exit", thread::exit, EXIT_DOC),
    #[cfg(not(Py_3_10))]
    MethodDef::noargs(c"interrupt_main", thread::interrupt_main, INTERRUPT_DOC),
    #[cfg(Py_3_10)]
    MethodDef::varargs(c"interrupt_main", thread::interrupt_main, INTERRUPT_DOC),
    MethodDef::noargs(c"get_ident", thread::get_ident, IDENT_DOC),
    MethodDef::noargs(c"get_native_id", thread::get_native_id, NATIVE_ID_DOC),
    MethodDef::noargs(c"_count", thread::count, COUNT_DOC),
    MethodDef::varargs(c"stack_size", thread::stack_size, STACK_DOC),
    name::SET_NAME,
    name::GET_NAME,
    #[cfg(not(Py_3_13))]
    MethodDef::noargs(
        c"_set_sentinel",
        sentinel::set_sentinel,
        c"_set_sentinel() -> lock\n\nA new lock which, if held when the calling thread's thread state is\ndeleted, is released then (for threading's join and shutdown).",
    ),
    #[cfg(Py_3_13)]
    MethodDef::keywords(
        c"start_joinable_thread",
        thread::start_joinable_thread,
        docstring!(
            "start_joinable_thread($module, /, function, handle=None, daemon=True)",
            "Run function() in a new thread and return its _ThreadHandle. Non-daemon\n\
threads are waited for by _shutdown()."
        ),
    ),
    #[cfg(Py_3_13)]
    MethodDef::noargs(
        c"_shutdown",
        thread::shutdown,
        docstring!(
            "_shutdown($module, /)",
            "Wait for every non-daemon thread started by start_joinable_thread(),\n\
but the calling one."
        ),
    ),
    #[cfg(Py_3_13)]
    MethodDef::onearg(
        c"_make_thread_handle",
        thread::make_thread_handle,
        docstring!(
            "_make_thread_handle($module, ident, /)",
            "A _ThreadHandle in the running state for a thread started elsewhere."
        ),
    ),
    #[cfg(Py_3_13)]
    MethodDef::noargs(
        c"_get_main_thread_ident",
        thread::get_main_thread_ident,
        docstring!("_get_main_thread_ident($module, /)", "The identifier of the main thread."),
    ),
    #[cfg(Py_3_12)]
    MethodDef::noargs(
        c"daemon_threads_allowed",
        always_true,
        docstring!(
            "daemon_threads_allowed($module, /)",
            "Whether daemon threads may be started in this interpreter."
        ),
    ),
    #[cfg(Py_3_12)]
    MethodDef::noargs(
        c"_is_main_interpreter",
        always_true,
        docstring!("_is_main_interpreter($module, /)", "Whether this is the main interpreter."),
    ),
    MethodDef::END,
];

static FUNCTIONS: Static<[MethodDef; FUNCTIONS_LIST.len()]> =
    Static::new(capi::table(FUNCTIONS_LIST));

/// Fills the module: functions, types, constants.
pub fn populate(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // The importing thread runs Python.
    crate::gil::held();
    // The functions say they belong to `_thread` (their `__module__`, and
    // the "_thread.f() takes no arguments" messages of 3.11+), like the types.
    let module_name = pyo3::types::PyString::new(py, "_thread");
    for index in 0..FUNCTIONS_LIST.len() - 1 {
        // SAFETY: the GIL is held; `index` is inside the 'static FUNCTIONS
        // table (its END entry excluded), which outlives the function object.
        let func = unsafe {
            let def = FUNCTIONS.get().cast::<MethodDef>().add(index);
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyCFunction_NewEx(def.cast(), m.as_ptr(), module_name.as_ptr()),
            )?
        };
        let name = func.getattr("__name__")?;
        m.add(name.cast_into::<pyo3::types::PyString>()?, func)?;
    }
    acquire::init(py)?;
    // SAFETY: the GIL is held (`py`); module initialisation runs in the importing frame.
    unsafe { crate::debug::init_frames() };
    let lock_type = lock::create_type(py)?;
    m.add("LockType", &lock_type)?;
    #[cfg(Py_3_13)]
    m.add("lock", &lock_type)?;
    m.add("RLock", rlock::create_type(py)?)?;
    m.add("error", py.get_type::<PyRuntimeError>())?;
    m.add("TIMEOUT_MAX", rthread_core::TIMEOUT_MAX)?;
    #[cfg(not(Py_3_13))]
    sentinel::init(py)?;
    #[cfg(Py_3_13)]
    m.add("_ThreadHandle", handle::create_type(py)?)?;
    thread::init_main_ident();
    thread::register_fork_handler(py)?;
    forkgate::install();
    local::register(m)?;
    name::register(m)?;
    excepthook::register(m)?;
    Ok(())
}
