//! The `rthread._rthread` extension module: CPython's `_thread`, on
//! `rthread-core`'s primitives.
//!
//! The functions and methods CPython calls are plain C-API functions declared
//! `"C-unwind"` (see [`capi`]): they must parse arguments with the
//! interpreter's own routines (so every error message is the built-in's), and
//! they must let a forced unwind through (daemon threads at finalization).
//! PyO3 provides the module entry point and the safe glue around it.
mod acquire;
mod capi;
mod errors;
mod excepthook;
mod handle;
mod local;
mod lock;
mod module;
mod pytype;
mod rlock;
#[cfg(not(Py_3_13))]
mod sentinel;
mod thread;

use pyo3::prelude::*;

#[pymodule]
fn _rthread(m: &Bound<'_, PyModule>) -> PyResult<()> {
    module::populate(m)
}
