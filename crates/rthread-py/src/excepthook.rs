//! `_thread._excepthook` and `_thread._ExceptHookArgs`: the default
//! `threading.excepthook` and the record it receives.
//!
//! `_ExceptHookArgs` is a struct sequence made by the interpreter itself, so
//! its constructor, repr, length errors and pickling support are the
//! built-in's by construction. It is made the way the built-in's is: up to
//! 3.10 a static type (`PyStructSequence_InitType2`; named
//! `_thread.ExceptHookArgs` in 3.9), from 3.11 on a heap type
//! (`PyStructSequence_NewType`). That decides its `__flags__`, whether its
//! attributes can be set, and the name in its repr and errors.
//!
//! `_excepthook(args)` writes `Exception in thread NAME:` and the exception's
//! report to `sys.stderr` (or, when that is None or missing, to the `_stderr`
//! the thread saved when it was created), then flushes it. The report itself
//! must be the interpreter's own display, byte for byte, so it is produced by
//! the interpreter:
//!
//! - up to 3.12, by `_PyErr_Display(file, …)`, the very function the built-in
//!   calls, which is exported;
//! - from 3.13 on that function is hidden. It first tries
//!   `traceback._print_exception_bltin(value)` (which prints to `sys.stderr`,
//!   or `sys.__stderr__` when that is None, whatever file was asked for) and,
//!   if that raises, falls back to the C display on `file`. When `file` is
//!   `sys.stderr`, the exported `PyErr_Display` does exactly that. Otherwise
//!   the first step is done here, and the C fallback is reached through
//!   `PyErr_Display` as described at [`display`].
//!
//! Everything that may run Python code goes through the `"C-unwind"`
//! declarations of [`capi`], and no Rust value with a destructor is alive
//! across those calls: the hook runs on threads that finalization may end
//! (see `capi`).
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi::{self, PyObject, PyTypeObject};
use pyo3::prelude::*;

use crate::capi::{self, MethodDef, Py_DecRef, Static};
use crate::errors;

/// The `_ExceptHookArgs` type. Set once at module init; this static owns one
/// reference, never released, so the type outlives every `_excepthook` call.
static ARGS_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// The field table. The type keeps pointing at the names and docs, so they
/// are `'static` like the table itself.
static FIELDS: Static<[ffi::PyStructSequence_Field; 5]> = Static::new([
    field(c"exc_type", c"The class of the uncaught exception"),
    field(c"exc_value", c"The exception instance (it may be None)"),
    field(c"exc_traceback", c"Its traceback (it may be None)"),
    field(
        c"thread",
        c"The threading.Thread that raised it, or None when unknown",
    ),
    ffi::PyStructSequence_Field {
        name: ptr::null(),
        doc: ptr::null(),
    },
]);

const fn field(
    name: &'static std::ffi::CStr,
    doc: &'static std::ffi::CStr,
) -> ffi::PyStructSequence_Field {
    ffi::PyStructSequence_Field {
        name: name.as_ptr(),
        doc: doc.as_ptr(),
    }
}

const ARGS_DOC: &std::ffi::CStr = c"_ExceptHookArgs(iterable)\n\n\
What threading.excepthook is called with: (exc_type, exc_value,\n\
exc_traceback, thread), by position or by name.";

/// The start of the header line; the thread's name or ident and `:\n` follow.
const HEADER: &std::ffi::CStr = c"Exception in thread ";
/// Written instead of the ident when even that cannot be formatted.
const NO_NAME: &std::ffi::CStr = c"<failed to get thread name>";
const HEADER_END: &std::ffi::CStr = c":\n";

unsafe extern "C-unwind" fn excepthook(
    _module: *mut PyObject,
    args: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `args` a live object.
    // When its type is exactly `_ExceptHookArgs` it is a 4-item struct
    // sequence (the constructor admits no other length), whose items are
    // immutable and kept alive by `args` for the whole call.
    unsafe {
        if ffi::Py_TYPE(args) != ARGS_TYPE.load(Ordering::Relaxed) {
            return errors::type_error(errors::EXCEPTHOOK_ARG_TYPE);
        }
        let exc_type = ffi::PyTuple_GET_ITEM(args, 0);
        if exc_type == ffi::PyExc_SystemExit {
            // A thread ended by SystemExit (or `_thread.exit()`) is not reported.
            return capi::none();
        }
        let value = ffi::PyTuple_GET_ITEM(args, 1);
        let tb = ffi::PyTuple_GET_ITEM(args, 2);
        let thread = ffi::PyTuple_GET_ITEM(args, 3);

        let file = match output_file(thread) {
            Output::File(file) => file,
            Output::Nowhere => return capi::none(),
            Output::Error => return ptr::null_mut(),
        };
        let written = report(file, exc_type, value, tb, thread);
        Py_DecRef(file);
        if written < 0 {
            return ptr::null_mut();
        }
        capi::none()
    }
}

/// Where the report goes.
enum Output {
    /// This file (a new reference).
    File(*mut PyObject),
    /// Nowhere: there is no stream to write to.
    Nowhere,
    /// Finding the stream raised.
    Error,
}

/// `sys.stderr`; when that is missing or None, the `_stderr` the thread saved
/// when it was created (an error if it has no such attribute); nothing when
/// that is None too, or when there is no thread to ask.
///
/// # Safety
/// The GIL must be held and `thread` live.
unsafe fn output_file(thread: *mut PyObject) -> Output {
    // SAFETY: GIL held; PySys_GetObject returns a borrowed reference (or NULL,
    // with no error set), taken as a new one before any Python code runs.
    unsafe {
        let none = ffi::Py_None();
        let stderr = ffi::PySys_GetObject(c"stderr".as_ptr());
        if !stderr.is_null() && stderr != none {
            ffi::Py_INCREF(stderr);
            return Output::File(stderr);
        }
        if thread == none {
            return Output::Nowhere;
        }
        let saved = capi::PyObject_GetAttrString(thread, c"_stderr".as_ptr());
        if saved.is_null() {
            return Output::Error;
        }
        if saved == none {
            Py_DecRef(saved);
            return Output::Nowhere;
        }
        Output::File(saved)
    }
}

/// Writes the header, the exception's report and flushes `file`. Returns 0, or
/// -1 with an error set.
///
/// # Safety
/// The GIL must be held; every argument is a live object.
unsafe fn report(
    file: *mut PyObject,
    exc_type: *mut PyObject,
    value: *mut PyObject,
    tb: *mut PyObject,
    thread: *mut PyObject,
) -> i32 {
    // SAFETY: GIL held, all objects live (the caller holds references); every
    // new reference made here is released on every path.
    unsafe {
        if capi::PyFile_WriteString(HEADER.as_ptr(), file) < 0 || write_name(file, thread) < 0 {
            return -1;
        }
        if capi::PyFile_WriteString(HEADER_END.as_ptr(), file) < 0 {
            return -1;
        }
        display(file, exc_type, value, tb);

        let flush = ffi::PyUnicode_InternFromString(c"flush".as_ptr());
        if flush.is_null() {
            return -1;
        }
        let result = capi::PyObject_CallMethodObjArgs(file, flush, ptr::null_mut::<PyObject>());
        Py_DecRef(flush);
        if result.is_null() {
            return -1;
        }
        Py_DecRef(result);
        0
    }
}

/// Writes `str(thread.name)`; when `thread` is None or has no `name`, the
/// calling thread's ident (what `get_ident()` returns) instead.
///
/// # Safety
/// The GIL must be held; `file` and `thread` are live.
unsafe fn write_name(file: *mut PyObject, thread: *mut PyObject) -> i32 {
    // SAFETY: GIL held, objects live; `name` and `ident` are new references
    // released on every path.
    unsafe {
        let mut name = ptr::null_mut();
        if thread != ffi::Py_None() && capi::lookup_attr(thread, c"name", &mut name) < 0 {
            return -1;
        }
        if !name.is_null() {
            let written = capi::PyFile_WriteObject(name, file, ffi::Py_PRINT_RAW);
            Py_DecRef(name);
            return written;
        }
        let ident = ffi::PyUnicode_FromFormat(c"%lu".as_ptr(), ffi::PyThread_get_thread_ident());
        if ident.is_null() {
            ffi::PyErr_Clear();
            return capi::PyFile_WriteString(NO_NAME.as_ptr(), file);
        }
        let written = capi::PyFile_WriteObject(ident, file, ffi::Py_PRINT_RAW);
        Py_DecRef(ident);
        written
    }
}

/// The interpreter's display of the exception, on `file`. Never fails: like
/// the built-in's, any error while displaying is swallowed.
///
/// # Safety
/// The GIL must be held and no error set; every argument is a live object.
#[cfg(not(Py_3_13))]
unsafe fn display(
    file: *mut PyObject,
    exc_type: *mut PyObject,
    value: *mut PyObject,
    tb: *mut PyObject,
) {
    // SAFETY: GIL held, objects live, `file` is neither NULL nor None: the
    // preconditions of the interpreter's display function.
    unsafe { capi::_PyErr_Display(file, exc_type, value, tb) }
}

/// The interpreter's display of the exception, as the built-in produces it
/// on `file` (see the module docs for the steps).
///
/// When `file` is not `sys.stderr` and the `traceback` module could not print
/// the report, the built-in's C fallback writes it to `file`. That fallback is
/// reachable only through `PyErr_Display`, which prints to `sys.stderr` and
/// tries the `traceback` module again first. So, for the duration of that one
/// call, `sys.stderr` is set to `file` and `traceback._print_exception_bltin`
/// to None (which sends `PyErr_Display` straight to the fallback), and both
/// are put back afterwards. Other threads that run meanwhile (the file's
/// `write` may let them) see those two values: their own reports of uncaught
/// exceptions take the C display too, and what they print to `sys.stderr`
/// goes to `file`.
///
/// # Safety
/// The GIL must be held and no error set; every argument is a live object.
#[cfg(Py_3_13)]
unsafe fn display(
    file: *mut PyObject,
    _exc_type: *mut PyObject,
    value: *mut PyObject,
    tb: *mut PyObject,
) {
    // SAFETY: GIL held, objects live. PySys_GetObject returns a borrowed
    // reference (or NULL without an error), compared, never used.
    unsafe {
        if ffi::PySys_GetObject(c"stderr".as_ptr()) == file {
            // What the built-in does, step for step.
            capi::PyErr_Display(ptr::null_mut(), value, tb);
            return;
        }
        attach_traceback(value, tb);
        if print_with_traceback_module(value) {
            return;
        }
        ffi::PyErr_Clear();
        display_fallback(file, value, tb);
        ffi::PyErr_Clear();
    }
}

/// The C display of the exception on `file` (the steps are at [`display`]).
///
/// # Safety
/// The GIL must be held and no error set; every argument is a live object.
#[cfg(Py_3_13)]
unsafe fn display_fallback(file: *mut PyObject, value: *mut PyObject, tb: *mut PyObject) {
    const PRINTER: &std::ffi::CStr = c"_print_exception_bltin";
    // SAFETY: GIL held, objects live. The saved stream, module and function
    // are new references (or NULL), held across the swap so that nothing is
    // freed while replaced, and released after both are put back.
    unsafe {
        let module = module_if_loaded(c"traceback");
        let mut printer = ptr::null_mut();
        if !module.is_null() {
            if capi::lookup_attr(module, PRINTER, &mut printer) < 0 {
                ffi::PyErr_Clear();
            }
            if !printer.is_null()
                && capi::PyObject_SetAttrString(module, PRINTER.as_ptr(), ffi::Py_None()) < 0
            {
                ffi::PyErr_Clear();
                Py_DecRef(printer);
                printer = ptr::null_mut();
            }
        }
        let saved = ffi::PySys_GetObject(c"stderr".as_ptr());
        ffi::Py_XINCREF(saved);
        if capi::PySys_SetObject(c"stderr".as_ptr(), file) == 0 {
            capi::PyErr_Display(ptr::null_mut(), value, tb);
            // NULL deletes the attribute again when it was missing.
            capi::PySys_SetObject(c"stderr".as_ptr(), saved);
        }
        ffi::PyErr_Clear();
        if !printer.is_null() {
            capi::PyObject_SetAttrString(module, PRINTER.as_ptr(), printer);
            ffi::PyErr_Clear();
            Py_DecRef(printer);
        }
        if !saved.is_null() {
            Py_DecRef(saved);
        }
        if !module.is_null() {
            Py_DecRef(module);
        }
    }
}

/// `sys.modules[name]` as a new reference, or NULL (no error) when it is not
/// loaded.
///
/// # Safety
/// The GIL must be held.
#[cfg(Py_3_13)]
unsafe fn module_if_loaded(name: &std::ffi::CStr) -> *mut PyObject {
    // SAFETY: GIL held; the name object is created and released here.
    unsafe {
        let key = ffi::PyUnicode_FromString(name.as_ptr());
        if key.is_null() {
            ffi::PyErr_Clear();
            return ptr::null_mut();
        }
        let module = capi::PyImport_GetModule(key);
        Py_DecRef(key);
        if module.is_null() {
            ffi::PyErr_Clear();
        }
        module
    }
}

/// Gives `value` the traceback `tb` when it has none, so the display shows
/// it (the built-in does the same before displaying).
///
/// # Safety
/// The GIL must be held; both objects are live.
#[cfg(Py_3_13)]
unsafe fn attach_traceback(value: *mut PyObject, tb: *mut PyObject) {
    // SAFETY: GIL held, objects live; the current traceback, when there is
    // one, is a new reference released here.
    unsafe {
        if ffi::PyExceptionInstance_Check(value) == 0 || ffi::PyTraceBack_Check(tb) == 0 {
            return;
        }
        let current = ffi::PyException_GetTraceback(value);
        if current.is_null() {
            ffi::PyException_SetTraceback(value, tb);
        } else {
            Py_DecRef(current);
        }
    }
}

/// `traceback._print_exception_bltin(value)`; false (with an error possibly
/// set) when the module, the function or the call fails.
///
/// # Safety
/// The GIL must be held and `value` live.
#[cfg(Py_3_13)]
unsafe fn print_with_traceback_module(value: *mut PyObject) -> bool {
    // SAFETY: GIL held; each new reference is released on every path.
    unsafe {
        let module = capi::PyImport_ImportModule(c"traceback".as_ptr());
        if module.is_null() {
            return false;
        }
        let print = capi::PyObject_GetAttrString(module, c"_print_exception_bltin".as_ptr());
        Py_DecRef(module);
        if print.is_null() {
            return false;
        }
        if ffi::PyCallable_Check(print) == 0 {
            Py_DecRef(print);
            return false;
        }
        let result = capi::PyObject_CallFunctionObjArgs(print, value, ptr::null_mut::<PyObject>());
        Py_DecRef(print);
        if result.is_null() {
            return false;
        }
        Py_DecRef(result);
        true
    }
}

/// The text signature names the one argument: as a tuple of its fields up to
/// 3.13, plainly `args` from 3.14 on (as the built-in of each version).
#[cfg(not(Py_3_14))]
macro_rules! excepthook_signature {
    () => {
        "_excepthook($module, (exc_type, exc_value, exc_traceback, thread), /)"
    };
}
#[cfg(Py_3_14)]
macro_rules! excepthook_signature {
    () => {
        "_excepthook($module, args, /)"
    };
}

const EXCEPTHOOK_DOC: &std::ffi::CStr = capi::docstring!(
    excepthook_signature!(),
    "The default threading.excepthook: report an exception a thread did not\n\
catch. args is an _ExceptHookArgs. Unless the exception is SystemExit, write\n\
\"Exception in thread NAME:\" and the exception's report to sys.stderr (or,\n\
when that is None, to the stream the thread saved when it was created) and\n\
flush it."
);

/// The function's definition; CPython keeps pointing at it.
static EXCEPTHOOK_DEF: Static<[MethodDef; 1]> = Static::new([MethodDef::onearg(
    c"_excepthook",
    excepthook,
    EXCEPTHOOK_DOC,
)]);

/// The type's name: 3.9's built-in lacks the leading underscore.
#[cfg(not(Py_3_10))]
const ARGS_NAME: &std::ffi::CStr = c"_thread.ExceptHookArgs";
#[cfg(Py_3_10)]
const ARGS_NAME: &std::ffi::CStr = c"_thread._ExceptHookArgs";

/// Storage for the static type of 3.9 and 3.10, zeroed until
/// `PyStructSequence_InitType2` fills it.
#[cfg(not(Py_3_11))]
struct StaticType(std::cell::UnsafeCell<std::mem::MaybeUninit<PyTypeObject>>);

// SAFETY: the type object is written by CPython at module init and afterwards
// touched only by CPython (reference counts, attribute caches), always with
// the GIL held; Rust only takes its address.
#[cfg(not(Py_3_11))]
unsafe impl Sync for StaticType {}

#[cfg(not(Py_3_11))]
static STATIC_TYPE: StaticType =
    StaticType(std::cell::UnsafeCell::new(std::mem::MaybeUninit::zeroed()));

/// Creates the `_ExceptHookArgs` type, or returns the one already made.
fn create_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let existing = ARGS_TYPE.load(Ordering::Relaxed);
    if !existing.is_null() {
        // SAFETY: GIL held; the static owns a reference to this type.
        return Ok(unsafe { Bound::from_borrowed_ptr(py, existing.cast()) });
    }
    let mut desc = ffi::PyStructSequence_Desc {
        name: ARGS_NAME.as_ptr(),
        doc: ARGS_DOC.as_ptr(),
        fields: FIELDS.get().cast(),
        n_in_sequence: 4,
    };
    #[cfg(Py_3_11)]
    // SAFETY: the GIL is held (`py`); the descriptor is valid for the call,
    // and the name, docs and field table it points to are 'static (the new
    // type keeps pointing at them).
    let tp = unsafe {
        Bound::from_owned_ptr_or_err(py, ffi::PyStructSequence_NewType(&mut desc).cast())?
    };
    #[cfg(not(Py_3_11))]
    // SAFETY: the GIL is held; the storage is zeroed, 'static and initialised
    // only here, once (ARGS_TYPE is still NULL, and module init runs once);
    // the descriptor is valid for the call and what it points to is 'static.
    let tp = unsafe {
        let tp = STATIC_TYPE.0.get().cast::<PyTypeObject>();
        if ffi::PyStructSequence_InitType2(tp, &mut desc) < 0 {
            return Err(PyErr::fetch(py));
        }
        Bound::from_borrowed_ptr(py, tp.cast())
    };
    // The static takes its own reference, kept for the life of the process.
    ARGS_TYPE.store(tp.clone().into_ptr().cast(), Ordering::Relaxed);
    Ok(tp)
}

/// Adds `_excepthook` and `_ExceptHookArgs` to the module.
///
/// Like the type, the function names `_thread` as its module, so its
/// `__module__` and the arity errors CPython words for it
/// (`_thread._excepthook() takes exactly one argument (0 given)`) are the
/// built-in's.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("_ExceptHookArgs", create_type(py)?)?;

    let module_name = pyo3::types::PyString::new(py, "_thread");
    // SAFETY: the GIL is held; the definition is 'static; `m` and the name
    // are live for the call (the function takes its own references).
    let function = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyCFunction_NewEx(
                capi::method_table(&EXCEPTHOOK_DEF),
                m.as_ptr(),
                module_name.as_ptr(),
            ),
        )?
    };
    m.add("_excepthook", function)
}
