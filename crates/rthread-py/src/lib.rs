//! The `rthread._rthread` extension module: CPython's `_thread`, on
//! `rthread-core`'s primitives.
//!
//! The functions and methods CPython calls are plain C-API functions declared
//! `"C-unwind"` (see the `capi` module): they must parse arguments with the
//! interpreter's own routines (so every error message is the built-in's), and
//! they must let a forced unwind through (daemon threads at finalization).
//! PyO3 provides the module entry point and the safe glue around it.
mod acquire;
mod capi;
mod debug;
mod errors;
mod excepthook;
mod finalizing;
mod forkgate;
mod gil;
mod handle;
mod local;
mod lock;
mod lockdep;
mod module;
mod name;
mod profile;
mod pytype;
mod rlock;
#[cfg(not(Py_3_13))]
mod sentinel;
mod thread;

use pyo3::prelude::*;

// Free-threaded builds: nothing here has been shown to be safe without the
// GIL (the C-API entry points assume it serialises them), so the module asks
// the interpreter to keep the GIL on rather than let PyO3 declare it unused.
#[pymodule(gil_used = true)]
fn _rthread(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // PyO3 builds the module with multi-phase init, so CPython would run this
    // again in every subinterpreter; but rthread's types, hooks and thread
    // registry are process-wide statics bound to the main interpreter, and a
    // second initialization overwrites them (a subinterpreter's threading
    // then crashed the process). Subinterpreters keep the built-in _thread.
    // SAFETY: the GIL is held (module initialization), so there is a current
    // interpreter; both calls only read the runtime's interpreter pointers.
    if unsafe { pyo3::ffi::PyInterpreterState_Get() != pyo3::ffi::PyInterpreterState_Main() } {
        return Err(pyo3::exceptions::PyImportError::new_err(
            "rthread can only be loaded in the main interpreter; subinterpreters use the built-in _thread",
        ));
    }
    // SAFETY: GIL held, main interpreter, module initialization.
    unsafe { finalizing::init() };
    module::populate(m)?;
    // The main thread is listed in reports from the start.
    let _ = rthread_core::diag::register_current_thread();
    debug::create_module(m.py())?;
    profile::create_module(m.py())
}
