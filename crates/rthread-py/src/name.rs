//! `set_name(name)`, `_get_name()` and `_NAME_MAXLEN`: the OS-visible name of
//! the calling thread (what `top -H`, `ps -L`, gdb and py-spy show).
//!
//! CPython offers these from 3.14 on (and `threading` names its threads with
//! them); rthread offers them on every version. The name is encoded with the
//! filesystem encoding (unencodable characters replaced) and cut to
//! `_NAME_MAXLEN` bytes, on a character boundary when the encoding is UTF-8.
//!
//! These are plain PyO3 functions: they neither block nor run Python code
//! that could release the GIL, so no forced unwind can pass through them.
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use rthread_core::thread::{self, NAME_MAXLEN};

fn fs_encoding(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    py.import("sys")?.getattr("getfilesystemencoding")?.call0()
}

/// set_name(name)
/// --
///
/// Set the name of the calling thread, as the operating system shows it.
#[pyfunction]
fn set_name(py: Python<'_>, name: &Bound<'_, PyString>) -> PyResult<()> {
    let encoding = fs_encoding(py)?;
    let encoded = name.call_method1("encode", (&encoding, "replace"))?;
    let bytes = encoded.cast::<PyBytes>()?.as_bytes();
    if bytes.contains(&0) {
        return Err(PyValueError::new_err("embedded null character"));
    }
    let utf8 = encoding
        .extract::<String>()
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "utf-8" | "utf8"))
        .unwrap_or(false);
    let mut end = bytes.len().min(NAME_MAXLEN);
    if utf8 {
        // Never leave half a character at the end: back off over UTF-8
        // continuation bytes (0b10xx_xxxx) at the cut.
        while end > 0 && end < bytes.len() && bytes[end] & 0xC0 == 0x80 {
            end -= 1;
        }
    }
    thread::set_current_name_bytes(&bytes[..end]).map_err(PyErr::from)
}

/// _get_name()
/// --
///
/// The name of the calling thread, as the operating system shows it.
#[pyfunction]
fn _get_name(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let raw = thread::current_name_bytes()?;
    PyBytes::new(py, &raw).call_method1("decode", (fs_encoding(py)?, "replace"))
}

/// Adds `set_name`, `_get_name` and `_NAME_MAXLEN` to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_name, m)?)?;
    m.add_function(wrap_pyfunction!(_get_name, m)?)?;
    m.add("_NAME_MAXLEN", NAME_MAXLEN)?;
    Ok(())
}
