//! `_thread._local`: per-thread attribute storage (threading.local). Not yet built.
use pyo3::prelude::*;

/// Adds `_local` to the module.
pub fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
