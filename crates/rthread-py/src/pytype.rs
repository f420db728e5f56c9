//! Small helpers for the hand-built types, shared by every type file.
//!
//! From 3.10 on the types are heap types (`PyType_FromSpec`), immutable and,
//! where the built-in's are, not instantiable, as the built-in `_thread`'s
//! are on those versions. On 3.9 the built-in's types are *static* types, and
//! a heap type shows it (settable type attributes, a `__module__` entry, how
//! `copyreg` pickles it), so there the same slot list fills a static
//! `PyTypeObject` instead, made ready with `PyType_Ready` and never freed.
use std::ffi::CStr;
#[cfg(Py_3_10)]
use std::ffi::{c_int, c_uint};

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

/// Frees an instance of one of rthread's types (or of a Python subclass) and,
/// where that is this function's job, drops the instance's reference to its
/// type.
///
/// An instance of a heap type owns a reference to its type. With a heap base
/// type (3.10+) the base's dealloc drops it, also for subclass instances;
/// with a static base (3.9) `subtype_dealloc` drops a subclass's, and
/// instances of the static type itself hold none.
///
/// # Safety
/// The GIL must be held; `obj` is being deallocated (refcount zero) and its
/// weak references are already cleared.
pub unsafe fn free_instance(obj: *mut PyObject) {
    // SAFETY: per the contract, `obj` is dead to Python; tp_free is the
    // allocator's matching free; the reference dropped is the one the
    // instance owned (see above).
    unsafe {
        let tp = ffi::Py_TYPE(obj);
        match (*tp).tp_free {
            Some(free) => free(obj.cast()),
            None => ffi::PyObject_Free(obj.cast()),
        }
        if STATIC_TYPES {
            return;
        }
        ffi::Py_DECREF(tp.cast());
    }
}

/// A new instance of `tp` for the allocation-heavy types (lock, and the
/// exact RLock type): `tp_basicsize` bytes from the object allocator with the
/// object header initialised (and, for a heap type, the reference to it that
/// [`free_instance`] drops), every other field left for the caller to write.
/// Cheaper than `PyType_GenericAlloc`, which also zeroes the memory and checks
/// for the cycle collector and item sizes. NULL with `MemoryError` on failure.
///
/// # Safety
/// The GIL must be held; `tp` is a live type whose instances are fixed-size,
/// not tracked by the cycle collector, without a pre-header (no managed
/// dict or weak references), and freed with `PyObject_Free`.
#[inline]
pub unsafe fn alloc_plain(tp: *mut ffi::PyTypeObject) -> *mut PyObject {
    // SAFETY: per the contract; PyObject_Init sets the type (increfing a heap
    // type, as GenericAlloc does) and the reference count of the new block.
    unsafe {
        debug_assert!((*tp).tp_flags & ffi::Py_TPFLAGS_HAVE_GC == 0);
        debug_assert!((*tp).tp_itemsize == 0);
        let obj = ffi::PyObject_Malloc((*tp).tp_basicsize as usize).cast::<PyObject>();
        if obj.is_null() {
            return ffi::PyErr_NoMemory();
        }
        ffi::PyObject_Init(obj, tp)
    }
}

/// Whether rthread's types are static types (3.9) rather than heap types.
/// Their `tp_traverse` must then not visit the instance's type:
/// `subtype_traverse` visits a subclass's, and a static type is not tracked.
pub const STATIC_TYPES: bool = cfg!(not(Py_3_10));

/// For `tp_new` functions that accept no arguments: raises what the
/// built-in's argument clinic code raises and returns false if any were
/// given. Up to 3.14 keywords are checked first and extra positional
/// arguments are counted ("lock expected 0 arguments, got 1"); from 3.15 on
/// positional arguments are checked first, without a count.
///
/// # Safety
/// The GIL must be held; `args` is a tuple and `kwargs` NULL or a dict.
#[cfg(Py_3_13)]
pub unsafe fn no_arguments(name: &CStr, args: *mut PyObject, kwargs: *mut PyObject) -> bool {
    // SAFETY: GIL held; `args` is a tuple, `kwargs` NULL or a dict.
    unsafe {
        let given = ffi::PyTuple_GET_SIZE(args);
        if cfg!(Py_3_15) && given != 0 {
            crate::errors::raise_string(
                ffi::PyExc_TypeError,
                &format!("{}() takes no positional arguments", name.to_string_lossy()),
            );
            return false;
        }
        if !kwargs.is_null() && ffi::PyDict_Size(kwargs) != 0 {
            crate::errors::raise_string(
                ffi::PyExc_TypeError,
                &format!("{}() takes no keyword arguments", name.to_string_lossy()),
            );
            return false;
        }
        if given != 0 {
            positional_count_error(&name.to_string_lossy(), 0, given);
            return false;
        }
        true
    }
}

/// Raises the TypeError of a call with `given` positional arguments where
/// exactly `expected` are taken (`__exit__ expected 3 arguments, got 0`, the
/// argument clinic's wording), and returns NULL.
///
/// # Safety
/// The GIL must be held.
#[cfg(Py_3_13)]
#[cold]
pub unsafe fn positional_count_error(
    name: &str,
    expected: ffi::Py_ssize_t,
    given: ffi::Py_ssize_t,
) -> *mut PyObject {
    let plural = if expected == 1 { "" } else { "s" };
    // SAFETY: GIL held (caller); PyExc_TypeError is initialised at startup.
    unsafe {
        crate::errors::raise_string(
            ffi::PyExc_TypeError,
            &format!("{name} expected {expected} argument{plural}, got {given}"),
        )
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
    #[cfg(not(Py_3_10))]
    return create_static(py, name, basicsize, flags, tp_flags, slots);
    #[cfg(Py_3_10)]
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
    #[cfg(Py_3_10)]
    unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyType_FromSpec(&mut spec))
    }
}

/// 3.9: a static type from the same slots (see the module docs). The type
/// object is leaked on purpose: static types live as long as the process.
/// Without `Py_tp_new`, `tp_new` stays NULL, which a static type does not
/// inherit, so calling the type raises "cannot create '<name>' instances" as
/// for the built-in's.
#[cfg(not(Py_3_10))]
fn create_static<'py>(
    py: Python<'py>,
    name: &'static CStr,
    basicsize: usize,
    flags: Flags,
    tp_flags: std::ffi::c_ulong,
    slots: &[ffi::PyType_Slot],
) -> PyResult<Bound<'py, PyAny>> {
    use std::ffi::c_void;
    use std::mem::transmute;

    // SAFETY: every field of PyTypeObject is an integer, a raw pointer or an
    // `Option` of a function pointer, for which all-zero bytes are valid
    // (0, NULL, None): this is how C declares a static type before filling it.
    let tp: &'static mut ffi::PyTypeObject = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    tp.ob_base.ob_base.ob_refcnt = 1;
    tp.tp_name = name.as_ptr();
    tp.tp_basicsize = basicsize as ffi::Py_ssize_t;
    tp.tp_flags = tp_flags;
    for slot in slots.iter().take_while(|s| s.slot != 0) {
        let pfunc: *mut c_void = slot.pfunc;
        // SAFETY: each slot's pointer was made from a function (or table) of
        // exactly the type CPython reads that slot as, as for PyType_FromSpec;
        // the transmutes only restore those types. A Py_tp_members pointer is
        // a 'static member table ending in a NULL-named entry, so its first
        // entry, its name (a C string) and, when that entry is named, the
        // second entry can be read.
        unsafe {
            match slot.slot {
                ffi::Py_tp_dealloc => {
                    tp.tp_dealloc = transmute::<*mut c_void, Option<ffi::destructor>>(pfunc)
                }
                ffi::Py_tp_repr => {
                    tp.tp_repr = transmute::<*mut c_void, Option<ffi::reprfunc>>(pfunc)
                }
                ffi::Py_tp_getattro => {
                    tp.tp_getattro = transmute::<*mut c_void, Option<ffi::getattrofunc>>(pfunc)
                }
                ffi::Py_tp_setattro => {
                    tp.tp_setattro = transmute::<*mut c_void, Option<ffi::setattrofunc>>(pfunc)
                }
                ffi::Py_tp_traverse => {
                    tp.tp_traverse = transmute::<*mut c_void, Option<ffi::traverseproc>>(pfunc)
                }
                ffi::Py_tp_clear => {
                    tp.tp_clear = transmute::<*mut c_void, Option<ffi::inquiry>>(pfunc)
                }
                ffi::Py_tp_new => tp.tp_new = transmute::<*mut c_void, Option<ffi::newfunc>>(pfunc),
                ffi::Py_tp_doc => tp.tp_doc = pfunc as *const std::ffi::c_char,
                ffi::Py_tp_methods => tp.tp_methods = pfunc.cast(),
                ffi::Py_tp_getset => tp.tp_getset = pfunc.cast(),
                ffi::Py_tp_members => {
                    // PyType_FromSpec's convention: a `__weaklistoffset__`
                    // member only sets tp_weaklistoffset; rthread's member
                    // tables hold nothing else.
                    let members = pfunc.cast::<ffi::PyMemberDef>();
                    let member = &*members;
                    let only_weaklist = !member.name.is_null()
                        && CStr::from_ptr(member.name) == c"__weaklistoffset__"
                        && (*members.add(1)).name.is_null();
                    if !only_weaklist {
                        return Err(pyo3::exceptions::PySystemError::new_err(
                            "rthread: unexpected member table for a static type",
                        ));
                    }
                    tp.tp_weaklistoffset = member.offset;
                }
                other => {
                    return Err(pyo3::exceptions::PySystemError::new_err(format!(
                        "rthread: slot {other} is not supported for a static type"
                    )))
                }
            }
        }
    }
    if !flags.instantiable {
        tp.tp_new = None;
    }
    let tp: *mut ffi::PyTypeObject = tp;
    // SAFETY: the GIL is held; `tp` is a fully initialised static type whose
    // name, doc and tables are 'static; PyType_Ready fills in the rest. The
    // returned reference is a new one to an object that is never freed.
    unsafe {
        if ffi::PyType_Ready(tp) < 0 {
            return Err(PyErr::fetch(py));
        }
        Ok(Bound::from_borrowed_ptr(py, tp.cast()))
    }
}
