//! "can't create new thread at interpreter shutdown": from 3.12 on, the
//! built-in refuses to start threads once the interpreter began shutting
//! down, and so must rthread (CPython's `test_threading` checks it).
//!
//! - 3.9 – 3.11: never refused.
//! - 3.12: `RuntimeError` once `Py_FinalizeEx` set `interp->finalizing`,
//!   which it does *before* `threading._shutdown()` and the atexit callbacks
//!   run. No API exposes that flag (`_Py_IsFinalizing()` only turns true after
//!   the atexit callbacks), so it is read from the interpreter state: the
//!   first fields of 3.12's `struct _is` are mirrored below and checked
//!   against public accessors when the module loads; should the check ever
//!   fail, `_Py_IsFinalizing()` is used instead (right after the atexit
//!   callbacks, and during module teardown).
//! - 3.13: `PythonFinalizationError` once the runtime is finalizing
//!   (`Py_IsFinalizing()`: after the atexit callbacks, as the built-in).
//! - 3.14+: the same, and joining a thread that has not finished raises
//!   `PythonFinalizationError` too (`refuse_join`) instead of waiting for a
//!   thread that can no longer run; 3.15+ fails a lock wait the same way
//!   (`refuse_lock_wait`).
//!
//! rthread only loads in the main interpreter, whose state lives as long
//! as the process.

#[cfg(all(Py_3_12, not(Py_3_13)))]
mod imp {
    use std::ffi::{c_int, c_void};
    use std::ptr;
    use std::sync::atomic::{AtomicPtr, Ordering};

    use pyo3::ffi;

    /// The first fields of CPython 3.12's `struct _is`
    /// (Include/internal/pycore_interp.h), up to `finalizing`.
    #[repr(C)]
    struct InterpreterHead {
        next: *mut ffi::PyInterpreterState,
        id: i64,
        id_refcount: i64,
        requires_idref: c_int,
        id_mutex: *mut c_void,
        initialized: c_int,
        finalizing: c_int,
    }

    extern "C" {
        fn _Py_IsFinalizing() -> c_int;
    }

    /// `&main_interpreter->finalizing`, once the layout was checked.
    static FLAG: AtomicPtr<c_int> = AtomicPtr::new(ptr::null_mut());

    /// # Safety
    /// The GIL is held, in the main interpreter, before finalization.
    pub unsafe fn init() {
        // SAFETY: the main interpreter state is alive for the whole process
        // and at least as large as the mirrored head; its fields are only
        // read, under the GIL that guards them.
        unsafe {
            let interp = ffi::PyInterpreterState_Main();
            let head = interp.cast::<InterpreterHead>();
            let matches = ptr::addr_of!((*head).next).read()
                == ffi::PyInterpreterState_Next(interp)
                && ptr::addr_of!((*head).id).read() == ffi::PyInterpreterState_GetID(interp)
                && ptr::addr_of!((*head).initialized).read() == 1
                && ptr::addr_of!((*head).finalizing).read() == 0;
            if matches {
                FLAG.store(ptr::addr_of_mut!((*head).finalizing), Ordering::Relaxed);
            }
        }
    }

    /// # Safety
    /// The GIL is held.
    pub unsafe fn shutting_down() -> bool {
        let flag = FLAG.load(Ordering::Relaxed);
        // SAFETY: `flag` points into the main interpreter state (alive for
        // the process); the field is written under the GIL, which we hold.
        unsafe {
            if flag.is_null() {
                _Py_IsFinalizing() != 0
            } else {
                flag.read_volatile() != 0
            }
        }
    }

    /// # Safety
    /// The GIL is held.
    pub unsafe fn exception() -> *mut ffi::PyObject {
        // SAFETY: initialised by the interpreter at start-up.
        unsafe { ffi::PyExc_RuntimeError }
    }
}

#[cfg(Py_3_13)]
mod imp {
    use pyo3::ffi;

    extern "C" {
        static mut PyExc_PythonFinalizationError: *mut ffi::PyObject;
    }

    /// # Safety
    /// The GIL is held, in the main interpreter.
    pub unsafe fn init() {}

    /// # Safety
    /// The GIL is held.
    pub unsafe fn shutting_down() -> bool {
        // SAFETY: a plain read of the runtime's state.
        unsafe { ffi::Py_IsFinalizing() != 0 }
    }

    /// # Safety
    /// The GIL is held.
    pub unsafe fn exception() -> *mut ffi::PyObject {
        // SAFETY: initialised by the interpreter at start-up, never written
        // afterwards; read by value.
        unsafe { PyExc_PythonFinalizationError }
    }
}

/// Prepares [`refuse_new_thread`].
///
/// # Safety
/// The GIL is held, in the main interpreter, at module initialization.
pub unsafe fn init() {
    #[cfg(Py_3_12)]
    // SAFETY: same contract.
    unsafe {
        imp::init()
    }
}

/// If the interpreter is shutting down (as this version's built-in sees it),
/// raises the built-in's error with `message` and returns true.
///
/// # Safety
/// The GIL is held.
#[cfg(Py_3_12)]
unsafe fn refuse(message: &std::ffi::CStr) -> bool {
    // SAFETY: GIL held (caller).
    unsafe {
        if imp::shutting_down() {
            crate::errors::raise(imp::exception(), message);
            return true;
        }
    }
    false
}

/// If the interpreter no longer accepts new threads, raises the built-in's
/// error and returns true.
///
/// # Safety
/// The GIL is held.
#[inline]
pub unsafe fn refuse_new_thread() -> bool {
    #[cfg(Py_3_12)]
    {
        // SAFETY: GIL held (caller).
        unsafe { refuse(crate::errors::THREAD_AT_SHUTDOWN) }
    }
    #[cfg(not(Py_3_12))]
    false
}

/// 3.14+: once the runtime is finalizing, other threads can no longer run
/// Python code to finish, so joining one that has not finished would wait
/// forever; raises the built-in's error and returns true then.
///
/// # Safety
/// The GIL is held.
#[cfg(Py_3_14)]
pub unsafe fn refuse_join() -> bool {
    // SAFETY: GIL held (caller).
    unsafe { refuse(crate::errors::JOIN_AT_SHUTDOWN) }
}

/// 3.15+: once the runtime is finalizing, a lock wait would never end (the
/// thread that could release the lock can no longer run Python), so the
/// built-in fails it at once; raises that error and returns true then. Only
/// the blocking path asks: a free lock is still taken.
///
/// # Safety
/// The GIL is held.
#[cfg(Py_3_15)]
pub unsafe fn refuse_lock_wait() -> bool {
    // SAFETY: GIL held (caller).
    unsafe { refuse(crate::errors::ACQUIRE_AT_FINALIZATION) }
}

/// Whether the runtime is finalizing, readable without the GIL (an atomic
/// read of the runtime state in every supported version): for a new thread
/// deciding whether it may still enter Python at all.
#[inline]
pub fn runtime_finalizing() -> bool {
    #[cfg(Py_3_13)]
    // SAFETY: an atomic read of the runtime's finalizing thread pointer; no
    // thread state or GIL needed.
    unsafe {
        pyo3::ffi::Py_IsFinalizing() != 0
    }
    #[cfg(not(Py_3_13))]
    {
        extern "C" {
            fn _Py_IsFinalizing() -> std::ffi::c_int;
        }
        // SAFETY: exported by 3.9 - 3.12; an atomic read of the runtime's
        // finalizing pointer, no thread state or GIL needed.
        unsafe { _Py_IsFinalizing() != 0 }
    }
}
