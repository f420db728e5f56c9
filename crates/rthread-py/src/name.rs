//! `set_name(name)`, `_get_name()` and `_NAME_MAXLEN`: the OS-visible name of
//! the calling thread (what `top -H`, `ps -L`, gdb and py-spy show).
//!
//! CPython offers these from 3.14 on (and `threading` names its threads with
//! them); rthread offers them on every version, with the 3.14 rules
//! everywhere:
//!
//! - the name is encoded with the filesystem encoding, unencodable characters
//!   replaced (`'\udc80'` becomes `'?'`);
//! - the bytes are cut to `_NAME_MAXLEN`, even inside a multi-byte character;
//! - an embedded NUL ends the name there, silently (`'a\0b'` names `'a'`);
//! - `_get_name()` decodes with the filesystem encoding and
//!   `surrogateescape`, so a split character reads back as lone surrogates.
//!
//! Before 3.14, `threading` never calls `set_name`; [`bootstrap_name`] lets
//! the thread starter name the OS thread of a `threading.Thread` instead.
//!
//! Both functions are plain C-API functions like the rest of the module, so
//! their argument errors are the interpreter's own.
use std::ffi::{c_char, CString};
use std::ptr;
use std::sync::OnceLock;

use pyo3::ffi::{self, PyObject};
use pyo3::prelude::*;
use rthread_core::thread::{self, NAME_MAXLEN};

use crate::capi::{self, Static};
use crate::errors;

/// `sys.getfilesystemencoding()`, read once at module init: the interpreter
/// fixes it at start-up, and the thread starter needs it without a lookup.
static FS_ENCODING: OnceLock<CString> = OnceLock::new();

/// An encoded name, at most [`NAME_MAXLEN`] bytes, without NUL.
#[derive(Clone, Copy)]
pub struct EncodedName {
    bytes: [u8; NAME_MAXLEN],
    len: usize,
}

impl EncodedName {
    /// The name as the OS gets it.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn fs_encoding() -> *const c_char {
    FS_ENCODING
        .get()
        .map_or(c"utf-8".as_ptr(), |encoding| encoding.as_ptr())
}

/// Encodes `name` (a str) by the rules in the module docs; `None` with a
/// Python error set if encoding failed.
///
/// # Safety
/// The GIL is held and `name` is a live str object.
pub unsafe fn encode(name: *mut PyObject) -> Option<EncodedName> {
    // SAFETY: GIL held, `name` a str (caller); the bytes object is alive
    // while its buffer is copied and released right after.
    unsafe {
        let encoded = ffi::PyUnicode_AsEncodedString(name, fs_encoding(), c"replace".as_ptr());
        if encoded.is_null() {
            return None;
        }
        let data = ffi::PyBytes_AsString(encoded);
        let size = ffi::PyBytes_Size(encoded);
        if data.is_null() || size < 0 {
            ffi::Py_DECREF(encoded);
            return None;
        }
        let raw = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        let mut out = EncodedName {
            bytes: [0; NAME_MAXLEN],
            len: 0,
        };
        // The OS takes a C string: a NUL ends the name there.
        for &byte in raw.iter().take(NAME_MAXLEN).take_while(|&&b| b != 0) {
            out.bytes[out.len] = byte;
            out.len += 1;
        }
        ffi::Py_DECREF(encoded);
        Some(out)
    }
}

/// `set_name(name)`.
unsafe extern "C-unwind" fn set_name(
    _: *mut PyObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    static KEYWORDS: Static<[*const c_char; 2]> = Static::new([c"name".as_ptr(), ptr::null()]);
    // SAFETY: called by CPython with the GIL held, `args` a tuple and
    // `kwargs` NULL or a dict; `name` is borrowed from them for the call.
    unsafe {
        let mut name: *mut PyObject = ptr::null_mut();
        if capi::PyArg_ParseTupleAndKeywords(
            args,
            kwargs,
            c"O:set_name".as_ptr(),
            KEYWORDS.get().cast(),
            &mut name as *mut *mut PyObject,
        ) == 0
        {
            return ptr::null_mut();
        }
        if ffi::PyUnicode_Check(name) == 0 {
            let type_name = if name == ffi::Py_None() {
                "None".to_owned()
            } else {
                std::ffi::CStr::from_ptr((*ffi::Py_TYPE(name)).tp_name)
                    .to_string_lossy()
                    .into_owned()
            };
            return errors::raise_string(
                ffi::PyExc_TypeError,
                &format!("set_name() argument 'name' must be str, not {type_name}"),
            );
        }
        let Some(encoded) = encode(name) else {
            return ptr::null_mut();
        };
        match thread::set_current_name_bytes(encoded.as_bytes()) {
            Ok(()) => capi::none(),
            Err(err) => {
                PyErr::from(err).restore(Python::assume_attached());
                ptr::null_mut()
            }
        }
    }
}

/// `_get_name()`.
unsafe extern "C-unwind" fn get_name(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held; the buffer outlives the
    // decode call, which copies it.
    unsafe {
        match thread::current_name_bytes() {
            Ok(raw) => ffi::PyUnicode_Decode(
                raw.as_ptr().cast(),
                raw.len() as ffi::Py_ssize_t,
                fs_encoding(),
                c"surrogateescape".as_ptr(),
            ),
            Err(err) => {
                PyErr::from(err).restore(Python::assume_attached());
                ptr::null_mut()
            }
        }
    }
}

pub const SET_NAME: capi::MethodDef = capi::MethodDef::keywords(
    c"set_name",
    set_name,
    capi::docstring!(
        "set_name($module, /, name)",
        "Set the name of the calling thread as the operating system shows it\n\
(encoded with the filesystem encoding, cut to _NAME_MAXLEN bytes)."
    ),
);

pub const GET_NAME: capi::MethodDef = capi::MethodDef::noargs(
    c"_get_name",
    get_name,
    capi::docstring!(
        "_get_name($module, /)",
        "The name of the calling thread as the operating system shows it."
    ),
);

/// The OS name for a thread about to run `func`, if `func` is the bound
/// `_bootstrap` method of a `threading.Thread` with a non-empty name; `None`
/// otherwise. Never fails: any error on the way is cleared.
///
/// Only used before 3.14, whose `threading` does not name threads itself.
///
/// # Safety
/// The GIL is held and `func` is a live object.
#[cfg(not(Py_3_14))]
pub unsafe fn bootstrap_name(func: *mut PyObject) -> Option<EncodedName> {
    // SAFETY: GIL held (caller); every new reference is released on every
    // path, and borrowed ones are used while their owner is alive.
    unsafe {
        if ffi::Py_TYPE(func) != ptr::addr_of_mut!(capi::PyMethod_Type) {
            return None;
        }
        let target = capi::PyMethod_Self(func);
        let function = capi::PyMethod_Function(func);
        if target.is_null() || function.is_null() || ffi::PyFunction_Check(function) == 0 {
            return None;
        }
        let function_name = ffi::PyObject_GetAttrString(function, c"__name__".as_ptr());
        if function_name.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let is_bootstrap = ffi::PyUnicode_Check(function_name) != 0
            && ffi::PyUnicode_CompareWithASCIIString(function_name, c"_bootstrap".as_ptr()) == 0;
        ffi::Py_DECREF(function_name);
        if !is_bootstrap {
            ffi::PyErr_Clear();
            return None;
        }
        let key = ffi::PyUnicode_FromString(c"threading".as_ptr());
        if key.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let threading = ffi::PyImport_GetModule(key);
        ffi::Py_DECREF(key);
        if threading.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let thread_type = ffi::PyObject_GetAttrString(threading, c"Thread".as_ptr());
        ffi::Py_DECREF(threading);
        if thread_type.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let is_thread = ffi::PyObject_IsInstance(target, thread_type);
        ffi::Py_DECREF(thread_type);
        if is_thread != 1 {
            ffi::PyErr_Clear();
            return None;
        }
        let name = ffi::PyObject_GetAttrString(target, c"_name".as_ptr());
        if name.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let encoded = if ffi::PyUnicode_Check(name) != 0 && ffi::PyUnicode_GetLength(name) > 0 {
            encode(name)
        } else {
            None
        };
        ffi::Py_DECREF(name);
        if encoded.is_none() {
            ffi::PyErr_Clear();
        }
        encoded
    }
}

/// Adds `_NAME_MAXLEN` to the module and reads the filesystem encoding
/// (`set_name` and `_get_name` are in the module's function table).
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let encoding: String = m
        .py()
        .import("sys")?
        .getattr("getfilesystemencoding")?
        .call0()?
        .extract()?;
    if let Ok(encoding) = CString::new(encoding) {
        let _ = FS_ENCODING.set(encoding);
    }
    m.add("_NAME_MAXLEN", NAME_MAXLEN)?;
    Ok(())
}
