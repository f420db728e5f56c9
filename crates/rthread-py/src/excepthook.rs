//! `_thread._excepthook` and `_thread._ExceptHookArgs`. Not yet built.
use pyo3::prelude::*;

/// Adds `_excepthook` and `_ExceptHookArgs` to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
