//! `_set_sentinel()` (3.9 – 3.12): a new lock that, if it is held then, is
//! released when the calling thread's Python thread state goes away.
//!
//! `threading` acquires it at once, keeps it as `Thread._tstate_lock`, and
//! waits on it in `join()` and at shutdown. The release rides on public C-API: the lock is held by a
//! small hook object stored in the thread state's dict
//! (`PyThreadState_GetDict`), which CPython clears when it clears the thread
//! state — at the end of threads started here, of threads created from C,
//! and of the main thread at finalization — and, in a forked child, for every
//! thread that did not survive the fork.
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi::{self, PyObject, PyTypeObject};
use pyo3::prelude::*;

use crate::capi;
use crate::errors;
use crate::lock;
use crate::pytype;

/// The hook: holds one reference to the sentinel lock, and releases the lock
/// when it is deallocated (unless disarmed).
#[repr(C)]
struct HookObject {
    ob_base: ffi::PyObject,
    lock: *mut PyObject,
}

static HOOK_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());
/// The thread-state dict key, an interned str (kept alive for the process).
static KEY: AtomicPtr<PyObject> = AtomicPtr::new(ptr::null_mut());

unsafe extern "C-unwind" fn hook_dealloc(slf: *mut PyObject) {
    // SAFETY: last reference gone, GIL held. The hook owns one reference to
    // its lock (or NULL when disarmed), given back after the release.
    unsafe {
        let lock = (*slf.cast::<HookObject>()).lock;
        if !lock.is_null() {
            lock::release_quietly(lock);
            ffi::Py_DECREF(lock);
        }
        pytype::free_instance(slf);
    }
}

/// `_set_sentinel()`.
pub unsafe extern "C-unwind" fn set_sentinel(_: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held, after module init. The
    // hook takes a new reference to the lock; the thread-state dict takes one
    // to the hook. A previous hook of this thread (a sentinel made before a
    // fork) is disarmed first: like the built-in, re-creating the sentinel
    // drops the old lock without releasing it.
    unsafe {
        let dict = ffi::PyThreadState_GetDict();
        if dict.is_null() {
            return errors::thread_error(c"no current thread state");
        }
        let lock = lock::new_lock();
        if lock.is_null() {
            return lock;
        }
        // Held for the thread's whole life and waited for by joiners: not an order.
        crate::lockdep::exclude(lock);
        let hook = ffi::PyType_GenericAlloc(HOOK_TYPE.load(Ordering::Relaxed), 0);
        if hook.is_null() {
            ffi::Py_DECREF(lock);
            return hook;
        }
        ffi::Py_INCREF(lock);
        (*hook.cast::<HookObject>()).lock = lock;
        let key = KEY.load(Ordering::Relaxed);
        let old = ffi::PyDict_GetItemWithError(dict, key);
        if !old.is_null() && ffi::Py_TYPE(old) == HOOK_TYPE.load(Ordering::Relaxed) {
            let old_lock =
                std::mem::replace(&mut (*old.cast::<HookObject>()).lock, ptr::null_mut());
            if !old_lock.is_null() {
                ffi::Py_DECREF(old_lock);
            }
        } else if old.is_null() && !ffi::PyErr_Occurred().is_null() {
            ffi::Py_DECREF(hook);
            ffi::Py_DECREF(lock);
            return ptr::null_mut();
        }
        let stored = ffi::PyDict_SetItem(dict, key, hook);
        ffi::Py_DECREF(hook);
        if stored < 0 {
            ffi::Py_DECREF(lock);
            return ptr::null_mut();
        }
        lock
    }
}

/// Creates the (private, unexported) hook type and the dict key.
pub fn init(py: Python<'_>) -> PyResult<()> {
    let mut slots = vec![
        capi::slot(ffi::Py_tp_dealloc, hook_dealloc as *mut c_void),
        capi::slot(
            ffi::Py_tp_doc,
            c"Releases a thread's _set_sentinel() lock when the thread state is cleared.".as_ptr()
                as *mut c_void,
        ),
    ];
    let tp = pytype::create(
        py,
        c"_thread._sentinel_hook",
        std::mem::size_of::<HookObject>(),
        pytype::Flags {
            base_type: false,
            instantiable: false,
        },
        &mut slots,
    )?;
    // SAFETY: the GIL is held; the interned key is leaked on purpose (one per
    // process, like the type).
    let key = unsafe { ffi::PyUnicode_InternFromString(c"rthread._set_sentinel".as_ptr()) };
    if key.is_null() {
        return Err(PyErr::fetch(py));
    }
    KEY.store(key, Ordering::Relaxed);
    HOOK_TYPE.store(tp.into_ptr().cast(), Ordering::Relaxed);
    Ok(())
}
