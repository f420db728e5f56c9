//! The raw C-API surface this binding needs beyond `pyo3::ffi`.
//!
//! Two reasons to declare a function here instead of using `pyo3::ffi`:
//!
//! 1. **It may take the GIL or run Python code.** Up to CPython 3.13, a daemon
//!    thread that (re)takes the GIL after interpreter finalization started is
//!    ended with `pthread_exit`, a *forced unwind*. Unwinding out of a function
//!    declared `extern "C"` is undefined behaviour and, through Rust frames,
//!    aborts the process. Declared `"C-unwind"`, the unwind is allowed; the
//!    callers keep no value with a destructor alive across these calls, so the
//!    forced unwind passes through their frames without running Rust code.
//! 2. **It is exported by the interpreter but not declared by PyO3**: the
//!    timeout conversion CPython's own `_thread` uses, and the unraisable-hook
//!    entry points, so rthread reports exactly what the built-in reports.
//!
//! The method tables CPython calls into (`MethodDef`) hold `"C-unwind"`
//! function pointers for the same reason.
#![allow(non_snake_case)]

use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void, CStr};

use pyo3::ffi::{self, PyGILState_STATE, PyObject, PyThreadState, Py_ssize_t};

extern "C-unwind" {
    pub fn PyEval_SaveThread() -> *mut PyThreadState;
    pub fn PyEval_RestoreThread(tstate: *mut PyThreadState);
    #[cfg(Py_3_13)]
    pub fn PyGILState_Ensure() -> PyGILState_STATE;
    pub fn PyGILState_Release(state: PyGILState_STATE);
    pub fn PyObject_Call(
        callable: *mut PyObject,
        args: *mut PyObject,
        kwargs: *mut PyObject,
    ) -> *mut PyObject;
    pub fn Py_MakePendingCalls() -> c_int;
    pub fn PyArg_ParseTupleAndKeywords(
        args: *mut PyObject,
        kwargs: *mut PyObject,
        format: *const c_char,
        keywords: *const *const c_char,
        ...
    ) -> c_int;
    pub fn PyArg_ParseTuple(args: *mut PyObject, format: *const c_char, ...) -> c_int;
    pub fn PyArg_UnpackTuple(
        args: *mut PyObject,
        name: *const c_char,
        min: Py_ssize_t,
        max: Py_ssize_t,
        ...
    ) -> c_int;
    /// CPython's own conversion of a timeout object to nanoseconds, with the
    /// interpreter's exact errors (NaN, overflow, wrong type).
    pub fn _PyTime_FromSecondsObject(t: *mut i64, obj: *mut PyObject, round: c_int) -> c_int;
    #[cfg(not(Py_3_13))]
    pub fn _PyErr_WriteUnraisableMsg(err_msg: *const c_char, obj: *mut PyObject);
    #[cfg(Py_3_13)]
    pub fn PyErr_FormatUnraisable(format: *const c_char, ...);
    #[cfg(Py_3_12)]
    pub fn PySys_Audit(event: *const c_char, format: *const c_char, ...) -> c_int;
}

/// `_PyTime_ROUND_TIMEOUT` (== `_PyTime_ROUND_UP`, away from zero) in every
/// supported version.
pub const PYTIME_ROUND_TIMEOUT: c_int = 3;

/// A docstring as a `&'static CStr`. `docstring!("name($module, /)", "text")`: from
/// 3.13 on, the built-in's functions carry text signatures (what
/// `inspect.signature` reads), so the first argument is prepended there in
/// CPython's `name(sig)\n--\n\n` form; before 3.13 it is left out, as there.
macro_rules! docstring {
    ($sig:expr, $body:expr) => {{
        const TEXT: &str = if cfg!(Py_3_13) {
            concat!($sig, "\n--\n\n", $body, "\0")
        } else {
            concat!($body, "\0")
        };
        match ::std::ffi::CStr::from_bytes_with_nul(TEXT.as_bytes()) {
            Ok(text) => text,
            Err(_) => panic!("docstring with an interior NUL"),
        }
    }};
}
pub(crate) use docstring;

/// The docstring of a method that takes no arguments: `method_doc!("name",
/// "text")`, with the `name($self, /)` text signature from 3.13 on.
macro_rules! method_doc {
    ($name:literal, $text:literal) => {
        $crate::capi::docstring!(concat!($name, "($self, /)"), $text)
    };
}
pub(crate) use method_doc;

/// A `METH_NOARGS` / `METH_O` / `METH_VARARGS` function.
pub type CFunction = unsafe extern "C-unwind" fn(*mut PyObject, *mut PyObject) -> *mut PyObject;
/// A `METH_VARARGS | METH_KEYWORDS` function.
pub type CFunctionKw =
    unsafe extern "C-unwind" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> *mut PyObject;
/// A `METH_FASTCALL` function (positional arguments only).
pub type CFunctionFast =
    unsafe extern "C-unwind" fn(*mut PyObject, *const *mut PyObject, Py_ssize_t) -> *mut PyObject;
/// A `METH_FASTCALL | METH_KEYWORDS` function.
pub type CFunctionFastKw = unsafe extern "C-unwind" fn(
    *mut PyObject,
    *const *mut PyObject,
    Py_ssize_t,
    *mut PyObject,
) -> *mut PyObject;

/// The function pointer of a [`MethodDef`], one variant per calling convention.
#[repr(C)]
#[derive(Clone, Copy)]
pub union Meth {
    pub plain: CFunction,
    pub kw: CFunctionKw,
    pub fast: CFunctionFast,
    pub fast_kw: CFunctionFastKw,
    none: *const c_void,
}

/// Layout-identical to CPython's `PyMethodDef`, with `"C-unwind"` pointers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MethodDef {
    name: *const c_char,
    meth: Meth,
    flags: c_int,
    doc: *const c_char,
}

impl MethodDef {
    pub const fn noargs(name: &'static CStr, f: CFunction, doc: &'static CStr) -> Self {
        Self::new(name, Meth { plain: f }, ffi::METH_NOARGS, doc)
    }
    pub const fn varargs(name: &'static CStr, f: CFunction, doc: &'static CStr) -> Self {
        Self::new(name, Meth { plain: f }, ffi::METH_VARARGS, doc)
    }
    pub const fn onearg(name: &'static CStr, f: CFunction, doc: &'static CStr) -> Self {
        Self::new(name, Meth { plain: f }, ffi::METH_O, doc)
    }
    #[cfg_attr(not(Py_3_13), allow(dead_code))] // only 3.13 has one
    pub const fn keywords(name: &'static CStr, f: CFunctionKw, doc: &'static CStr) -> Self {
        Self::new(
            name,
            Meth { kw: f },
            ffi::METH_VARARGS | ffi::METH_KEYWORDS,
            doc,
        )
    }
    #[cfg_attr(not(Py_3_11), allow(dead_code))] // __exit__ uses it from 3.11
    pub const fn fastcall_positional(
        name: &'static CStr,
        f: CFunctionFast,
        doc: &'static CStr,
    ) -> Self {
        Self::new(name, Meth { fast: f }, ffi::METH_FASTCALL, doc)
    }
    pub const fn fastcall(name: &'static CStr, f: CFunctionFastKw, doc: &'static CStr) -> Self {
        Self::new(
            name,
            Meth { fast_kw: f },
            ffi::METH_FASTCALL | ffi::METH_KEYWORDS,
            doc,
        )
    }
    const fn new(name: &'static CStr, meth: Meth, flags: c_int, doc: &'static CStr) -> Self {
        MethodDef {
            name: name.as_ptr(),
            meth,
            flags,
            doc: doc.as_ptr(),
        }
    }
    /// The all-zero sentinel that ends a table.
    pub const END: MethodDef = MethodDef {
        name: std::ptr::null(),
        meth: Meth {
            none: std::ptr::null(),
        },
        flags: 0,
        doc: std::ptr::null(),
    };
}

/// A static that CPython is handed a `*mut` to (method tables, member tables).
/// CPython only reads them, and only while holding the GIL.
#[repr(transparent)]
pub struct Static<T>(UnsafeCell<T>);

// SAFETY: the wrapped tables are written once, at compile time, and afterwards
// only read (by CPython, under the GIL); no `&mut` is ever formed in Rust.
unsafe impl<T> Sync for Static<T> {}

impl<T> Static<T> {
    pub const fn new(value: T) -> Self {
        Static(UnsafeCell::new(value))
    }
    pub fn get(&self) -> *mut T {
        self.0.get()
    }
}

/// Copies a method list into a fixed-size table (`N` is the list's length),
/// so tables whose entries depend on `cfg` need no hand-kept counts.
pub const fn table<const N: usize>(list: &[MethodDef]) -> [MethodDef; N] {
    let mut out = [MethodDef::END; N];
    let mut i = 0;
    while i < N {
        out[i] = list[i];
        i += 1;
    }
    out
}

/// A method table as CPython expects it.
pub fn method_table<const N: usize>(
    table: &'static Static<[MethodDef; N]>,
) -> *mut ffi::PyMethodDef {
    table.get().cast()
}

/// Builds the `__weaklistoffset__` member CPython reads in `PyType_FromSpec`
/// (3.9+) to make instances weak-referenceable.
pub const fn weaklist_member(offset: usize) -> ffi::PyMemberDef {
    ffi::PyMemberDef {
        name: c"__weaklistoffset__".as_ptr(),
        type_code: ffi::Py_T_PYSSIZET,
        offset: offset as Py_ssize_t,
        flags: ffi::Py_READONLY,
        doc: std::ptr::null(),
    }
}

/// The all-zero sentinel that ends a member table.
pub const MEMBER_END: ffi::PyMemberDef = ffi::PyMemberDef {
    name: std::ptr::null(),
    type_code: 0,
    offset: 0,
    flags: 0,
    doc: std::ptr::null(),
};

/// One `PyType_Slot`.
pub fn slot(slot: c_int, pfunc: *mut c_void) -> ffi::PyType_Slot {
    ffi::PyType_Slot { slot, pfunc }
}

/// `Py_None` with a new reference.
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn none() -> *mut PyObject {
    // SAFETY: the caller holds the GIL; Py_None is always alive.
    unsafe { new_ref_to_singleton(ffi::Py_None()) }
}

/// `True` or `False` with a new reference.
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn boolean(value: bool) -> *mut PyObject {
    // SAFETY: the caller holds the GIL; the bool singletons are always alive.
    unsafe {
        new_ref_to_singleton(if value {
            ffi::Py_True()
        } else {
            ffi::Py_False()
        })
    }
}

/// A new reference to `None`, `True` or `False`. From 3.12 on they are immortal and a reference
/// costs nothing (what `Py_RETURN_NONE` and `Py_RETURN_TRUE` do there, since PEP 683); before,
/// their count goes up as for any object.
///
/// # Safety
/// The GIL must be held; `obj` is one of the three singletons.
#[inline(always)]
unsafe fn new_ref_to_singleton(obj: *mut PyObject) -> *mut PyObject {
    #[cfg(not(Py_3_12))]
    // SAFETY: the caller holds the GIL and `obj` is alive.
    unsafe {
        ffi::Py_INCREF(obj)
    };
    obj
}

extern "C-unwind" {
    /// The exported (non-inline) decref, for paths where a deallocation may
    /// run Python code on a thread that can be ended by finalization.
    pub fn Py_DecRef(obj: *mut PyObject);
}

// ---------------------------------------------------------------------------
// Used by `excepthook.rs`: writing the report of an uncaught thread exception.
// Every one of these may run Python code (file methods, `__str__`, attribute
// hooks, the `traceback` module), hence `"C-unwind"`.

extern "C-unwind" {
    pub fn PyFile_WriteString(text: *const c_char, file: *mut PyObject) -> c_int;
    pub fn PyFile_WriteObject(obj: *mut PyObject, file: *mut PyObject, flags: c_int) -> c_int;
    pub fn PyObject_GetAttrString(obj: *mut PyObject, name: *const c_char) -> *mut PyObject;
    pub fn PyObject_CallMethodObjArgs(
        obj: *mut PyObject,
        name: *mut PyObject,
        ...
    ) -> *mut PyObject;
    /// The interpreter's exception display, writing to `file` (exported up to
    /// 3.12; hidden from 3.13 on, where only `PyErr_Display` is reachable).
    #[cfg(not(Py_3_13))]
    pub fn _PyErr_Display(
        file: *mut PyObject,
        exc_type: *mut PyObject,
        value: *mut PyObject,
        tb: *mut PyObject,
    );
    /// The interpreter's exception display, writing to `sys.stderr`.
    #[cfg(Py_3_13)]
    pub fn PyErr_Display(exc_type: *mut PyObject, value: *mut PyObject, tb: *mut PyObject);
    #[cfg(Py_3_13)]
    pub fn PyImport_ImportModule(name: *const c_char) -> *mut PyObject;
    #[cfg(Py_3_13)]
    pub fn PyObject_CallFunctionObjArgs(callable: *mut PyObject, ...) -> *mut PyObject;
    #[cfg(not(Py_3_13))]
    fn _PyObject_LookupAttr(
        obj: *mut PyObject,
        name: *mut PyObject,
        out: *mut *mut PyObject,
    ) -> c_int;
    #[cfg(Py_3_13)]
    fn PyObject_GetOptionalAttrString(
        obj: *mut PyObject,
        name: *const c_char,
        out: *mut *mut PyObject,
    ) -> c_int;
}

/// `getattr(obj, name)` where a missing attribute is not an error: returns 1
/// with `*out` a new reference, 0 with `*out` NULL when the lookup raised
/// AttributeError (cleared), or -1 with `*out` NULL and another error set.
///
/// # Safety
/// The GIL must be held and `obj` live.
pub unsafe fn lookup_attr(obj: *mut PyObject, name: &CStr, out: &mut *mut PyObject) -> c_int {
    #[cfg(Py_3_13)]
    // SAFETY: GIL held, `obj` live, `name` NUL-terminated, `out` writable.
    unsafe {
        PyObject_GetOptionalAttrString(obj, name.as_ptr(), out)
    }
    #[cfg(not(Py_3_13))]
    // SAFETY: GIL held, `obj` live; the name object is created and released
    // here; `out` is writable.
    unsafe {
        *out = std::ptr::null_mut();
        let key = ffi::PyUnicode_InternFromString(name.as_ptr());
        if key.is_null() {
            return -1;
        }
        let found = _PyObject_LookupAttr(obj, key, out);
        ffi::Py_DECREF(key);
        found
    }
}

// ---------------------------------------------------------------------------
// Used by `local.rs`: attribute access through a thread's dict. Each of these
// may run Python code (descriptors, `__eq__` of dict keys or of a `str`
// subclass name), hence `"C-unwind"`.

extern "C-unwind" {
    /// The generic `getattr` with `dict` as the instance dict: what the
    /// built-in `_local` uses (declared in CPython's `cpython/object.h`,
    /// exported in 3.9 – 3.13).
    pub fn _PyObject_GenericGetAttrWithDict(
        obj: *mut PyObject,
        name: *mut PyObject,
        dict: *mut PyObject,
        suppress: c_int,
    ) -> *mut PyObject;
    /// The generic `setattr`/`delattr` (`value` NULL) with `dict` as the
    /// instance dict.
    pub fn _PyObject_GenericSetAttrWithDict(
        obj: *mut PyObject,
        name: *mut PyObject,
        value: *mut PyObject,
        dict: *mut PyObject,
    ) -> c_int;
    pub fn PyDict_GetItemWithError(dict: *mut PyObject, key: *mut PyObject) -> *mut PyObject;
    pub fn PyObject_RichCompareBool(a: *mut PyObject, b: *mut PyObject, op: c_int) -> c_int;
}

#[cfg(Py_3_13)]
extern "C-unwind" {
    pub fn PyImport_GetModule(name: *mut PyObject) -> *mut PyObject;
    pub fn PyObject_SetAttrString(
        obj: *mut PyObject,
        name: *const c_char,
        value: *mut PyObject,
    ) -> c_int;
    /// Replacing a `sys` attribute may free the old value (running Python code).
    pub fn PySys_SetObject(name: *const c_char, value: *mut PyObject) -> c_int;
}

// ---------------------------------------------------------------------------
// Used by `name.rs` (before 3.14): recognising `threading.Thread._bootstrap`
// bound methods. Neither call runs Python code.
#[cfg(not(Py_3_14))]
extern "C" {
    pub static mut PyMethod_Type: ffi::PyTypeObject;
    /// Borrowed reference to the function of a bound method.
    pub fn PyMethod_Function(method: *mut PyObject) -> *mut PyObject;
    /// Borrowed reference to the instance of a bound method.
    pub fn PyMethod_Self(method: *mut PyObject) -> *mut PyObject;
}

// ---------------------------------------------------------------------------
// Used by `rlock.rs`: from 3.15 on `RLock._acquire_restore` takes its state as
// its one (METH_O) argument. Converting the items may call `__index__`, hence
// `"C-unwind"`.

#[cfg(Py_3_15)]
extern "C-unwind" {
    pub fn PyArg_Parse(arg: *mut PyObject, format: *const c_char, ...) -> c_int;
}
