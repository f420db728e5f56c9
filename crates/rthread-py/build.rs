//! Exposes the target interpreter's version as `cfg(Py_3_X)` flags, so the
//! binding compiles each interpreter's own behaviour (rthread is built once per
//! interpreter, like CPython's own `_thread`).
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
