//! Small helpers for the hand-built types (`PyType_FromSpec`), shared by every
//! type file.
use std::ffi::{c_int, c_uint, CStr};

use pyo3::ffi::{self, PyObject};
use pyo3::prelude::*;

/// The type properties that differ between rthread's types.
pub struct Flags {
    /// May Python code subclass it?
    pub base_type: bool,
    /// May Python code call the type to make an instance?
    pub instantiable: bool,
}

/// Creates a heap type from `slots` (the terminating zero slot is added here).
///
/// `name` is `module.qualname`; it must be `'static` because CPython 3.9 keeps
/// pointing into it as `tp_name`.
pub fn create<'py>(
    py: Python<'py>,
    name: &'static CStr,
    basicsize: usize,
    flags: Flags,
    slots: &mut Vec<ffi::PyType_Slot>,
) -> PyResult<Bound<'py, PyAny>> {
    create_with_flags(py, name, basicsize, flags, 0, slots)
}

/// `Py_TYPE(obj)->tp_name` as a string (e.g. `_thread.lock`, or a
/// subclass's name).
///
/// # Safety
/// The GIL must be held and `obj` live.
pub unsafe fn type_name(obj: *mut PyObject) -> String {
    // SAFETY: a live object's type has a NUL-terminated tp_name.
    unsafe {
        CStr::from_ptr((*ffi::Py_TYPE(obj)).tp_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// A new `str` from Rust text (for reprs).
///
/// # Safety
/// The GIL must be held.
pub unsafe fn repr_string(text: &str) -> *mut PyObject {
    // SAFETY: GIL held; pointer and length describe valid UTF-8.
    unsafe { ffi::PyUnicode_FromStringAndSize(text.as_ptr().cast(), text.len() as ffi::Py_ssize_t) }
}

/// Frees an instance of a heap type and drops its reference to the type.
///
/// # Safety
/// The GIL must be held; `obj` is being deallocated (refcount zero) and its
/// weak references are already cleared.
pub unsafe fn free_instance(obj: *mut PyObject) {
    // SAFETY: per the contract, `obj` is dead to Python; tp_free is the
    // allocator's matching free; the instance owned one reference to its type.
    unsafe {
        let tp = ffi::Py_TYPE(obj);
        match (*tp).tp_free {
            Some(free) => free(obj.cast()),
            None => ffi::PyObject_Free(obj.cast()),
        }
        ffi::Py_DECREF(tp.cast());
    }
}

/// For `tp_new` functions that accept no arguments: raises what CPython's
/// argument clinic raises (keywords are checked first) and returns false if
/// any were given.
///
/// # Safety
/// The GIL must be held; `args` is a tuple and `kwargs` NULL or a dict.
#[cfg(Py_3_13)]
pub unsafe fn no_arguments(name: &CStr, args: *mut PyObject, kwargs: *mut PyObject) -> bool {
    // SAFETY: GIL held; `args` is a tuple, `kwargs` NULL or a dict.
    unsafe {
        let name = name.to_string_lossy();
        if !kwargs.is_null() && ffi::PyDict_Size(kwargs) != 0 {
            crate::errors::raise_string(
                ffi::PyExc_TypeError,
                &format!("{name}() takes no keyword arguments"),
            );
            return false;
        }
        let given = ffi::PyTuple_GET_SIZE(args);
        if given != 0 {
            crate::errors::raise_string(
                ffi::PyExc_TypeError,
                &format!("{name} expected 0 arguments, got {given}"),
            );
            return false;
        }
        true
    }
}

/// [`create`], plus `extra` bits in `tp_flags` (e.g. `Py_TPFLAGS_HAVE_GC`,
/// which needs `Py_tp_traverse` among the slots).
pub fn create_with_flags<'py>(
    py: Python<'py>,
    name: &'static CStr,
    basicsize: usize,
    flags: Flags,
    extra: std::ffi::c_ulong,
    slots: &mut Vec<ffi::PyType_Slot>,
) -> PyResult<Bound<'py, PyAny>> {
    slots.push(ffi::PyType_Slot {
        slot: 0,
        pfunc: std::ptr::null_mut(),
    });
    let mut tp_flags = ffi::Py_TPFLAGS_DEFAULT | extra;
    if flags.base_type {
        tp_flags |= ffi::Py_TPFLAGS_BASETYPE;
    }
    #[cfg(Py_3_10)]
    {
        tp_flags |= ffi::Py_TPFLAGS_IMMUTABLETYPE;
        if !flags.instantiable {
            tp_flags |= ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION;
        }
    }
    let mut spec = ffi::PyType_Spec {
        name: name.as_ptr(),
        basicsize: basicsize as c_int,
        itemsize: 0,
        flags: tp_flags as c_uint,
        slots: slots.as_mut_ptr(),
    };
    // SAFETY: the GIL is held (`py`); the spec and slot array are valid for
    // the call (CPython copies them); the name and every table the slots point
    // to are 'static.
    let tp = unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))? };
    #[cfg(not(Py_3_10))]
    if !flags.instantiable {
        // 3.9 has no DISALLOW_INSTANTIATION flag, and heap types inherit
        // object.__new__. A NULL tp_new makes `type.__call__` raise
        // "cannot create '<name>' instances", as for the built-in's static type.
        // SAFETY: GIL held; the type was just created and is not shared yet.
        unsafe { (*tp.as_ptr().cast::<ffi::PyTypeObject>()).tp_new = None };
    }
    Ok(tp)
}
