//! `_thread.lock` (`LockType`): the binary lock.
//!
//! One `rthread_core::Lock` (the lock word and its spin word, eight bytes)
//! inside the object.
//! The type is built with `PyType_FromSpec`: not subclassable, weak-
//! referenceable, no `__dict__`, and instantiable only from 3.13 on, like the
//! built-in.
use std::ffi::c_void;
use std::mem::offset_of;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi::{self, PyObject, PyTypeObject, Py_ssize_t};
use pyo3::prelude::*;
use rthread_core::diag::profile::Counted;
use rthread_core::diag::{Cancellable, HeldBy, Holder, LockId, WaitFor};
use rthread_core::wait::DefaultWait;

/// The lock inside the object: the core lock, counting its sleeps for the contention totals
/// and ending a sleep that a watchdog cancelled (only its sleeping path differs from
/// `rthread_core::Lock`).
pub type Lock = rthread_core::RawLock<Cancellable<Counted<DefaultWait>>>;

use crate::acquire;
use crate::capi::{self, MethodDef, Static};
use crate::errors;
use crate::gil;
use crate::pytype;

#[repr(C)]
pub struct LockObject {
    ob_base: ffi::PyObject,
    pub lock: Lock,
    /// Who holds it, for reports (see `debug`).
    holder: Holder,
    /// Interned creation site (0 = unknown).
    site: u32,
    weakreflist: *mut PyObject,
}

static TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// Creates a new unlocked lock (`allocate_lock()`), or NULL with an error set.
///
/// # Safety
/// The GIL must be held and the module initialised.
pub unsafe fn new_lock() -> *mut PyObject {
    let tp = TYPE.load(Ordering::Relaxed);
    // SAFETY: GIL held; `tp` is the lock type created at module init: not
    // subclassable, not GC-tracked, no pre-header, basicsize `LockObject`'s
    // size; every field is written below before the object is handed out.
    unsafe {
        let obj = pytype::alloc_plain(tp);
        if obj.is_null() {
            return obj;
        }
        let this = obj.cast::<LockObject>();
        ptr::addr_of_mut!((*this).lock).write(Lock::new());
        ptr::addr_of_mut!((*this).holder).write(Holder::new());
        let site = crate::debug::caller_site();
        ptr::addr_of_mut!((*this).site).write(site);
        ptr::addr_of_mut!((*this).weakreflist).write(ptr::null_mut());
        if crate::debug::hooked() {
            crate::lockdep::created(obj, site);
        }
        obj
    }
}

/// Releases the lock if it is held (thread-exit sentinels); never raises.
///
/// # Safety
/// `obj` must be a live lock object.
#[cfg(not(Py_3_13))]
pub unsafe fn release_quietly(obj: *mut PyObject) {
    // SAFETY: forwarded obligation. A lock that is not held stays unlocked
    // (NotLocked is a plain error value), which is what "quietly" means here.
    let this = unsafe { &*obj.cast::<LockObject>() };
    if this.lock.is_locked() {
        crate::debug::releasing_without_gil(&this.holder, LockId(obj as u64));
    }
    let _ = this.lock.release();
}

/// The report record of `obj` if it is a lock: `(kind, id, holder word, site, None)`.
///
/// # Safety
/// The GIL must be held and `obj` live.
pub unsafe fn record(obj: *mut PyObject) -> Option<crate::debug::LockRecord> {
    // SAFETY: GIL held; the type check makes the cast valid.
    unsafe {
        if ffi::Py_TYPE(obj) != TYPE.load(Ordering::Relaxed) {
            return None;
        }
        let this = &*obj.cast::<LockObject>();
        Some(("lock", obj as u64, Some(this.holder.get()), this.site, None))
    }
}

/// The object behind `lock_of`.
///
/// # Safety
/// `obj` must be a live `_thread.lock` instance.
#[inline]
unsafe fn object_of<'a>(obj: *mut PyObject) -> &'a LockObject {
    // SAFETY: as `lock_of`.
    unsafe { &*obj.cast::<LockObject>() }
}

/// The lock inside a lock object.
///
/// # Safety
/// `obj` must be a live `_thread.lock` instance.
#[inline]
unsafe fn lock_of<'a>(obj: *mut PyObject) -> &'a Lock {
    // SAFETY: the caller guarantees `obj` is a live LockObject; CPython holds a
    // reference to it for the duration of the method call.
    unsafe { &(*obj.cast::<LockObject>()).lock }
}

unsafe extern "C-unwind" fn acquire(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held, `slf` a lock, and a valid
    // vectorcall argument triple.
    unsafe { acquire_named(slf, args, nargs, kwnames, acquire::FORMAT) }
}

/// `acquire_lock`: `acquire` under its old name, which argument errors show
/// from 3.15 on.
unsafe extern "C-unwind" fn acquire_lock(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: as `acquire`.
    unsafe { acquire_named(slf, args, nargs, kwnames, acquire::ALIAS_FORMAT) }
}

/// # Safety
/// The GIL must be held, `slf` a lock, and the arguments a valid vectorcall
/// triple.
#[inline(always)]
unsafe fn acquire_named(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
    format: &'static std::ffi::CStr,
) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        let Some(wait) = acquire::parse(args, nargs, kwnames, format) else {
            return ptr::null_mut();
        };
        acquire_wait(slf, wait)
    }
}

/// Takes the lock as `wait` says; True, False, or NULL with an error set.
///
/// # Safety
/// The GIL must be held and `slf` a lock.
#[inline(always)]
unsafe fn acquire_wait(slf: *mut PyObject, wait: acquire::Wait) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        // The common case, without a call: the thread that ran last (so no hook is on, see
        // `debug::cached_self`) finds the lock free, as every wait first tries.
        let this = object_of(slf);
        if let Some(me) = crate::debug::cached_self() {
            if this.lock.try_acquire() {
                crate::debug::set_holder_to(&this.holder, me);
                return capi::boolean(true);
            }
            if matches!(wait, acquire::Wait::NonBlocking) {
                return capi::boolean(false);
            }
        } else if crate::debug::hooked() {
            // (A hook empties the thread cache: this test costs the common case nothing.)
            return acquire_hooked(slf, wait);
        }
        acquire_wait_slow(slf, wait)
    }
}

/// [`acquire_wait`] past its common case, with no hook on.
///
/// # Safety
/// The GIL must be held and `slf` a lock.
#[inline(never)]
unsafe fn acquire_wait_slow(slf: *mut PyObject, wait: acquire::Wait) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        // `acquire_wait` sent a hooked acquire to `acquire_hooked`, and no hook can come on
        // since (the GIL is held throughout; a thread-cache hit means none was on).
        debug_assert!(!crate::debug::hooked());
        let this = object_of(slf);
        let outcome = acquire_outcome(this, LockId(slf as u64), wait);
        if outcome == acquire::Outcome::Acquired {
            crate::debug::set_holder(&this.holder);
        }
        acquire::to_python(outcome)
    }
}

/// The acquire itself (no bookkeeping).
///
/// # Safety
/// The GIL must be held.
#[inline(always)]
unsafe fn acquire_outcome(this: &LockObject, id: LockId, wait: acquire::Wait) -> acquire::Outcome {
    let lock = &this.lock;
    // SAFETY: forwarded caller obligations.
    unsafe {
        acquire::acquire_with(
            wait,
            || crate::debug::WaitOn {
                what: WaitFor::Lock(id),
                site: this.site,
                held_by: Some(HeldBy::Holder(&this.holder)),
                wake: Some(lock.wake_word()),
            },
            || lock.try_acquire(),
            |deadline| lock.acquire_until_with(deadline, gil::spin()),
        )
    }
}

/// [`acquire_wait`] with diagnostic mode or lock-order checking on. Its common case, in
/// diagnostic mode alone: the thread that ran last finds the lock free.
///
/// # Safety
/// The GIL must be held and `slf` a lock.
#[inline(never)]
unsafe fn acquire_hooked(slf: *mut PyObject, wait: acquire::Wait) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        if let Some(me) = crate::debug::held_only() {
            let this = object_of(slf);
            if this.lock.try_acquire() {
                me.acquired(&this.holder, LockId(slf as u64));
                return capi::boolean(true);
            }
        }
        acquire_hooked_rest(slf, wait)
    }
}

/// [`acquire_hooked`] past its common case: the order is checked before the acquire may
/// block (a `LockOrderError` leaves the lock untouched).
///
/// # Safety
/// The GIL must be held and `slf` a lock.
#[cold]
#[inline(never)]
unsafe fn acquire_hooked_rest(slf: *mut PyObject, wait: acquire::Wait) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        let this = object_of(slf);
        let id = LockId(slf as u64);
        let class = if crate::lockdep::on() {
            crate::lockdep::class_for(slf, this.site)
        } else {
            None
        };
        if let Some(class) = class {
            if this.holder.holder_packed() == Some(crate::debug::my_packed()) {
                // Its holder tries to take it again (a `Condition` waiter, whose second
                // acquire may even be non-blocking): only another thread can release it.
                crate::lockdep::waited_by_holder(class);
            } else if !matches!(wait, acquire::Wait::NonBlocking)
                && !crate::lockdep::check(
                    slf,
                    class,
                    matches!(wait, acquire::Wait::Within(_)),
                    false,
                )
            {
                return ptr::null_mut();
            }
        }
        let outcome = acquire_outcome(this, id, wait);
        if outcome == acquire::Outcome::Acquired {
            crate::debug::acquired(&this.holder, id);
            if let Some(class) = class {
                crate::lockdep::acquired(slf, class);
            }
        }
        acquire::to_python(outcome)
    }
}

/// `__enter__()` from 3.15 on, where it takes no arguments: `acquire()`.
#[cfg(Py_3_15)]
unsafe extern "C-unwind" fn enter(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` a lock.
    unsafe { acquire_wait(slf, acquire::Wait::Forever) }
}

#[cfg(Py_3_11)]
/// `__exit__`: `release()`. Up to 3.14 it takes any positional arguments and
/// ignores them; from 3.15 on exactly three (exc_type, exc_value, exc_tb).
/// Vectorcall, so a `with` block builds no argument tuple.
unsafe extern "C-unwind" fn exit(
    slf: *mut PyObject,
    _args: *const *mut PyObject,
    _nargs: Py_ssize_t,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` a lock.
    unsafe {
        #[cfg(Py_3_15)]
        if _nargs != 3 {
            return pytype::positional_count_error("__exit__", 3, _nargs);
        }
        release_inline(slf)
    }
}

unsafe extern "C-unwind" fn release(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` a lock.
    unsafe { release_inline(slf) }
}

/// `release()`, inlined into `__exit__` too (the profile's hook is out of line).
///
/// # Safety
/// The GIL must be held and `slf` a lock.
#[inline(always)]
unsafe fn release_inline(slf: *mut PyObject) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        // A waiter spinning on this lock leaves it to us while we run.
        gil::held();
        let this = object_of(slf);
        // The common case, without a call: the thread that ran last (so no hook is on)
        // releases the lock it holds, which nobody waits for. The holder word goes first:
        // once the lock word is free another thread may take it and set itself as holder.
        let mut holder_done = false;
        if let Some(me) = crate::debug::cached_self() {
            holder_done = this.holder.release_if_holder(me);
            if holder_done && this.lock.try_release() {
                return capi::none();
            }
        } else if let Some(me) = crate::debug::held_only() {
            // Diagnostic mode's common case, also without a call: the same, and the lock
            // leaves the thread's held list.
            holder_done = me.releasing(&this.holder, LockId(slf as u64));
            if holder_done && this.lock.try_release() {
                return capi::none();
            }
        }
        release_rest(slf, holder_done)
    }
}

/// [`release_inline`] past its common case; `holder_done`: the holder word was updated.
///
/// # Safety
/// The GIL must be held and `slf` a lock.
#[inline(never)]
unsafe fn release_rest(slf: *mut PyObject, holder_done: bool) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        let this = object_of(slf);
        if !holder_done {
            // `release_inline` found the thread caches missing or the caller not the holder:
            // the holder word's slow path. (Unlocked: the holder word is empty anyway.)
            crate::debug::releasing_slow(&this.holder, LockId(slf as u64));
        }
        match this.lock.release_woke() {
            Ok(false) => capi::none(),
            Ok(true) => {
                // A waiter was asleep: the profile charges this release with its wait.
                crate::profile::released_woke(slf as u64, this.site);
                capi::none()
            }
            Err(_) => errors::thread_error(errors::RELEASE_UNLOCKED),
        }
    }
}

unsafe extern "C-unwind" fn locked(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` a lock.
    unsafe { capi::boolean(lock_of(slf).is_locked()) }
}

unsafe extern "C-unwind" fn at_fork_reinit(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` a lock.
    unsafe {
        let this = object_of(slf);
        this.lock.reinit();
        this.holder.clear();
        if crate::debug::hooked() {
            crate::lockdep::released(rthread_core::diag::Released::Unknown, LockId(slf as u64));
        }
        capi::none()
    }
}

unsafe extern "C-unwind" fn repr(slf: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` a lock.
    unsafe {
        let state = if lock_of(slf).is_locked() {
            "locked"
        } else {
            "unlocked"
        };
        pytype::repr_string(&format!(
            "<{state} {} object at {:p}>",
            pytype::type_name(slf),
            slf
        ))
    }
}

unsafe extern "C-unwind" fn dealloc(slf: *mut PyObject) {
    // SAFETY: called by CPython when the last reference goes, GIL held. The
    // weak references are cleared before the memory is freed; the instance
    // holds a reference to its heap type, released last.
    unsafe {
        let this = slf.cast::<LockObject>();
        // A lock freed while held (a Condition's spent waiter lock) leaves no held-list entry.
        crate::debug::forget(&(*this).holder, LockId(slf as u64));
        if !(*this).weakreflist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        pytype::free_instance(slf);
    }
}

/// `lock()` on 3.13, where `threading.Lock` is the type itself.
#[cfg(Py_3_13)]
unsafe extern "C-unwind" fn new(
    _tp: *mut PyTypeObject,
    args: *mut PyObject,
    kwargs: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and valid args/kwargs.
    unsafe {
        if !pytype::no_arguments(c"lock", args, kwargs) {
            return ptr::null_mut();
        }
        new_lock()
    }
}

/// `__exit__`'s text signature (for the vectorcall `__exit__` of 3.11+):
/// three named positional parameters from 3.15 on, any positional arguments
/// before.
#[cfg(Py_3_15)]
macro_rules! exit_signature {
    () => {
        "__exit__($self, exc_type, exc_value, exc_tb, /)"
    };
}
#[cfg(all(Py_3_11, not(Py_3_15)))]
macro_rules! exit_signature {
    () => {
        "__exit__($self, /, *exc_info)"
    };
}
#[cfg(Py_3_11)]
pub(crate) use exit_signature;

macro_rules! acquire_doc {
    ($name:literal) => {
        capi::docstring!(
            concat!($name, "($self, /, blocking=True, timeout=-1)"),
            "Lock the lock. Without arguments, block until the lock is free, then take it\n\
and return True. With blocking false, take it only if that needs no wait.\n\
With a non-negative timeout, wait at most that many seconds. Returns whether\n\
the lock was taken. (acquire_lock is an old name of acquire.)"
        )
    };
}
const METHODS_LIST: &[MethodDef] = &[
    MethodDef::fastcall(c"acquire_lock", acquire_lock, acquire_doc!("acquire_lock")),
    MethodDef::fastcall(c"acquire", acquire, acquire_doc!("acquire")),
    MethodDef::noargs(
        c"release_lock",
        release,
        capi::method_doc!(
            "release_lock",
            "Unlock the lock. Any thread may release it; it must be locked, or RuntimeError\n\
is raised. (release_lock is an old name of release.)"
        ),
    ),
    MethodDef::noargs(
        c"release",
        release,
        capi::method_doc!(
            "release",
            "Unlock the lock. Any thread may release it; it must be locked, or RuntimeError\n\
is raised. (release_lock is an old name of release.)"
        ),
    ),
    MethodDef::noargs(
        c"locked_lock",
        locked,
        capi::method_doc!(
            "locked_lock",
            "Whether the lock is held by some thread. (locked_lock is an old name.)"
        ),
    ),
    MethodDef::noargs(
        c"locked",
        locked,
        capi::method_doc!(
            "locked",
            "Whether the lock is held by some thread. (locked_lock is an old name.)"
        ),
    ),
    #[cfg(not(Py_3_15))]
    MethodDef::fastcall(
        c"__enter__",
        acquire,
        capi::method_doc!(
            "__enter__",
            "Take the lock (the `with` statement); same arguments as acquire()."
        ),
    ),
    #[cfg(Py_3_15)]
    MethodDef::noargs(
        c"__enter__",
        enter,
        capi::method_doc!(
            "__enter__",
            "Take the lock, waiting as long as needed (the `with` statement)."
        ),
    ),
    // Vectorcall from 3.11; before, the "takes no keyword arguments" error of
    // METH_FASTCALL named the type and the built-in's (METH_VARARGS) did not.
    #[cfg(Py_3_11)]
    MethodDef::fastcall_positional(
        c"__exit__",
        exit,
        capi::docstring!(
            exit_signature!(),
            "Release the lock (the `with` statement)."
        ),
    ),
    #[cfg(not(Py_3_11))]
    MethodDef::varargs(
        c"__exit__",
        release,
        capi::docstring!(
            "__exit__($self, /, *exc_info)",
            "Release the lock (the `with` statement)."
        ),
    ),
    MethodDef::noargs(
        c"_at_fork_reinit",
        at_fork_reinit,
        capi::method_doc!(
            "_at_fork_reinit",
            "Reset the lock to a fresh, unlocked state (used after fork())."
        ),
    ),
    MethodDef::END,
];

static METHODS: Static<[MethodDef; METHODS_LIST.len()]> = Static::new(capi::table(METHODS_LIST));

static MEMBERS: Static<[ffi::PyMemberDef; 2]> = Static::new([
    capi::weaklist_member(offset_of!(LockObject, weakreflist)),
    capi::MEMBER_END,
]);

/// Creates the lock type; called once from module init.
pub fn create_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let doc = capi::docstring!(
        "lock()",
        "A binary lock with no owner: any thread may release it, and a thread that\n\
acquires it twice without releasing blocks itself. Create one with\n\
allocate_lock() (or threading.Lock()). Use acquire(), release() and\n\
locked(), or a with statement."
    );
    let mut slots = vec![
        capi::slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
        capi::slot(ffi::Py_tp_repr, repr as *mut c_void),
        capi::slot(ffi::Py_tp_methods, METHODS.get().cast()),
        capi::slot(ffi::Py_tp_members, MEMBERS.get().cast()),
    ];
    #[cfg(Py_3_10)]
    slots.push(capi::slot(ffi::Py_tp_doc, doc.as_ptr() as *mut c_void));
    #[cfg(Py_3_13)]
    slots.push(capi::slot(ffi::Py_tp_new, new as *mut c_void));
    let tp = pytype::create(
        py,
        c"_thread.lock",
        std::mem::size_of::<LockObject>(),
        pytype::Flags {
            base_type: false,
            instantiable: cfg!(Py_3_13),
        },
        &mut slots,
    )?;
    // 3.9's built-in sets the lock type's doc only after PyType_Ready, so the
    // type has a `__doc__` but its dict (and so an instance) has None.
    #[cfg(not(Py_3_10))]
    // SAFETY: the GIL is held; on 3.9 the type is rthread's static type, not
    // yet shared, and the doc is 'static.
    unsafe {
        (*tp.as_ptr().cast::<ffi::PyTypeObject>()).tp_doc = doc.as_ptr();
    }
    TYPE.store(tp.as_ptr().cast(), Ordering::Relaxed);
    Ok(tp)
}
