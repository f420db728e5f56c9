//! `_thread.RLock`: the reentrant lock `threading.RLock` uses.
//!
//! A `rthread_core::RLock` (owner ident + count over the binary lock) inside
//! the object. Instantiable and subclassable, weak-referenceable, like the
//! built-in. Owners are CPython thread idents (`get_ident()`), so
//! `_release_save` / `_acquire_restore` round-trip with `threading.Condition`.
#[cfg(not(Py_3_14))]
use std::ffi::c_ulong;
use std::ffi::c_void;
use std::mem::offset_of;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi::{self, PyObject, PyTypeObject, Py_ssize_t};
use pyo3::prelude::*;
use rthread_core::diag::profile::Counted;
use rthread_core::diag::{Cancellable, HeldBy, LockId, WaitFor};
use rthread_core::wait::DefaultWait;
use rthread_core::{thread, Acquire, RawRLock};

/// The RLock inside the object: the core RLock, counting its sleeps for the contention
/// totals and ending a sleep that a watchdog cancelled (only its sleeping path differs from
/// `rthread_core::RLock`).
type RLock = RawRLock<Cancellable<Counted<DefaultWait>>>;

use crate::acquire;
use crate::capi::{self, MethodDef, Static};
use crate::errors;
use crate::gil;
#[cfg(Py_3_11)]
use crate::lock::exit_signature;
use crate::pytype;

#[repr(C)]
pub struct RLockObject {
    ob_base: ffi::PyObject,
    rlock: RLock,
    /// Interned creation site (0 = unknown); the holder is the owner word.
    site: u32,
    weakreflist: *mut PyObject,
}

/// The RLock base type, for [`record`].
static BASE_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// The report record of `obj` if it is an RLock (or subclass): `(kind, id, None, site, owner)`.
///
/// # Safety
/// The GIL must be held and `obj` live.
pub unsafe fn record(obj: *mut PyObject) -> Option<crate::debug::LockRecord> {
    // SAFETY: GIL held; the subtype check makes the cast valid.
    unsafe {
        let base = BASE_TYPE.load(Ordering::Relaxed);
        if base.is_null() || ffi::PyObject_TypeCheck(obj, base) == 0 {
            return None;
        }
        let this = &*obj.cast::<RLockObject>();
        Some((
            "RLock",
            obj as u64,
            None,
            this.site,
            Some(this.rlock.owner()),
        ))
    }
}

/// The RLock type itself (not a subclass), for `new`'s argument check.
#[cfg(Py_3_15)]
static TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());

/// The reentrant lock inside an RLock object.
///
/// # Safety
/// `obj` must be a live RLock (or subclass) instance.
#[inline]
unsafe fn rlock_of<'a>(obj: *mut PyObject) -> &'a RLock {
    // SAFETY: the caller guarantees `obj` is a live RLockObject; CPython holds
    // a reference for the duration of the method call.
    unsafe { &(*obj.cast::<RLockObject>()).rlock }
}

/// `RLock()`. Up to 3.14 any arguments are accepted and ignored. From 3.15 on
/// `RLock` takes none, and neither does a subclass that keeps the inherited
/// `__init__`; a subclass with its own `__init__` gets its arguments there.
unsafe extern "C-unwind" fn new(
    tp: *mut PyTypeObject,
    _args: *mut PyObject,
    _kwargs: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `tp` the RLock type or a
    // subclass; tp_alloc returns zeroed memory of at least RLockObject's size,
    // whose fields are initialised before the object escapes. `TYPE` is set
    // at module init, before any instance can be made.
    unsafe {
        #[cfg(Py_3_15)]
        {
            let base = TYPE.load(Ordering::Relaxed);
            // Both are CPython's own slot functions (object's __init__ or a
            // subclass's slot wrapper), so their addresses identify them.
            let same_init = match ((*tp).tp_init, (*base).tp_init) {
                (Some(a), Some(b)) => ptr::fn_addr_eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            };
            if (tp == base || same_init) && !pytype::no_arguments(c"RLock", _args, _kwargs) {
                return ptr::null_mut();
            }
        }
        // The RLock type itself (not GC-tracked, no pre-header) takes the
        // plain allocation; a Python subclass may have a __dict__ and be
        // tracked, so it goes through its own tp_alloc.
        let obj = if tp == BASE_TYPE.load(Ordering::Relaxed) {
            pytype::alloc_plain(tp)
        } else {
            let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
            alloc(tp, 0)
        };
        if obj.is_null() {
            return obj;
        }
        let this = obj.cast::<RLockObject>();
        ptr::addr_of_mut!((*this).rlock).write(RLock::new());
        let site = crate::debug::caller_site();
        ptr::addr_of_mut!((*this).site).write(site);
        ptr::addr_of_mut!((*this).weakreflist).write(ptr::null_mut());
        if crate::debug::hooked() {
            crate::lockdep::created(obj, site);
        }
        obj
    }
}

unsafe extern "C-unwind" fn dealloc(slf: *mut PyObject) {
    // SAFETY: called by CPython when the last reference goes, GIL held. For a
    // Python subclass, subtype_dealloc has already untracked the object and
    // cleared its __dict__; it leaves the weak references and the type
    // reference (our base is a heap type) to us.
    unsafe {
        let this = slf.cast::<RLockObject>();
        if crate::debug::hooked() {
            let held = (*this).rlock.is_owned(thread::current_ident());
            crate::lockdep::dropped(held, LockId(slf as u64));
        }
        if !(*this).weakreflist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        pytype::free_instance(slf);
    }
}

unsafe extern "C-unwind" fn acquire(
    slf: *mut PyObject,
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held, `slf` an RLock, and a valid
    // vectorcall argument triple.
    unsafe {
        let Some(wait) = acquire::parse(args, nargs, kwnames, acquire::FORMAT) else {
            return ptr::null_mut();
        };
        acquire_wait(slf, wait)
    }
}

/// Takes the lock as `wait` says; True, False, or NULL with an error set.
///
/// # Safety
/// The GIL must be held and `slf` an RLock.
#[inline(always)]
unsafe fn acquire_wait(slf: *mut PyObject, wait: acquire::Wait) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        // The common case without calls: no hook on, and the lock free or re-entered.
        if crate::debug::hooked() {
            return acquire_hooked(slf, wait);
        }
        if rlock_of(slf).try_acquire_common(thread::current_ident()) {
            return capi::boolean(true);
        }
        acquire_wait_slow(slf, wait)
    }
}

/// [`acquire_wait`] with a hook on. Its common case, in diagnostic mode alone: the thread
/// that ran last finds the lock free (listed with its site) or re-enters it.
///
/// # Safety
/// The GIL must be held and `slf` an RLock.
#[inline(never)]
unsafe fn acquire_hooked(slf: *mut PyObject, wait: acquire::Wait) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        if let Some(me) = crate::debug::held_only() {
            let rlock = rlock_of(slf);
            if rlock.try_acquire_common(thread::current_ident()) {
                if rlock.count() == 1 {
                    me.list(LockId(slf as u64));
                }
                return capi::boolean(true);
            }
        }
        acquire_wait_slow(slf, wait)
    }
}

/// [`acquire_wait`] past its common case.
///
/// # Safety
/// The GIL must be held and `slf` an RLock.
#[inline(never)]
unsafe fn acquire_wait_slow(slf: *mut PyObject, wait: acquire::Wait) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        let rlock = rlock_of(slf);
        let me = thread::current_ident();
        // Only the owner changes the count, so this check cannot race.
        #[cfg(not(Py_3_14))]
        if rlock.is_owned(me) && rlock.count() == u64::MAX {
            return errors::raise(ffi::PyExc_OverflowError, errors::RLOCK_COUNT_OVERFLOW);
        }
        // From 3.14 on the built-in's count is modular (a `size_t` level, count
        // minus one): re-entry at 2^64 - 1 (only `_acquire_restore` makes it)
        // wraps to 0 instead of raising.
        #[cfg(Py_3_14)]
        if rlock.count() == u64::MAX && rlock.set_count_if_owner(me, 0) {
            return capi::boolean(true);
        }
        // Up to 3.13 the built-in re-enters only with a count above 0: after
        // `_acquire_restore((0, me))` its owner waits on the inner lock it holds,
        // as if another thread held it (False, or forever without a timeout);
        // from 3.14 on the owner ident alone decides, as in the core.
        #[cfg(not(Py_3_14))]
        let stuck = rlock.owner() == me && rlock.count() == 0;
        #[cfg(Py_3_14)]
        let stuck = false;
        let id = LockId(slf as u64);
        let hooked = crate::debug::hooked();
        let mut class = None;
        if hooked && crate::lockdep::on() && !rlock.is_owned(me) {
            class = crate::lockdep::class_for(slf, (*slf.cast::<RLockObject>()).site);
            if let Some(class) = class {
                if !matches!(wait, acquire::Wait::NonBlocking)
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
        }
        let outcome = acquire::acquire_with(
            wait,
            || crate::debug::WaitOn {
                what: WaitFor::RLock(id),
                site: (*slf.cast::<RLockObject>()).site,
                held_by: Some(HeldBy::Ident(rlock.owner_word())),
                wake: Some(rlock.wake_word()),
            },
            || {
                if stuck {
                    let now = Some(rthread_core::Deadline::now());
                    rlock.acquire_restore_until(1, me, now) == Acquire::Acquired
                } else {
                    rlock.try_acquire(me)
                }
            },
            |deadline| {
                if stuck {
                    rlock.acquire_restore_until_with(1, me, deadline, gil::spin())
                } else {
                    rlock.acquire_until_with(me, deadline, gil::spin())
                }
            },
        );
        if hooked && outcome == acquire::Outcome::Acquired && rlock.count() == 1 {
            crate::debug::rlock_acquired(id);
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
    // SAFETY: called by CPython with the GIL held and `slf` an RLock.
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
    // SAFETY: called by CPython with the GIL held and `slf` a RLock.
    unsafe {
        #[cfg(Py_3_15)]
        if _nargs != 3 {
            return pytype::positional_count_error("__exit__", 3, _nargs);
        }
        release(slf, ptr::null_mut())
    }
}

unsafe extern "C-unwind" fn release(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` an RLock.
    unsafe {
        // A waiter spinning on this lock leaves it to us while we run.
        gil::held();
        // The common case without calls: no hook on, nobody to wake.
        let rlock = rlock_of(slf);
        if !crate::debug::hooked() {
            if rlock.try_release_common(thread::current_ident()) {
                return capi::none();
            }
        } else if let Some(me) = crate::debug::held_only() {
            // Diagnostic mode's, also without calls: the owner, the thread that ran last, goes
            // one level up or releases the lock, which leaves its held list.
            // (Only the owner changes the count, and `try_release_common` succeeds only for it.)
            let last = rlock.count() == 1;
            if rlock.try_release_common(thread::current_ident()) {
                if last {
                    me.rlock_released(LockId(slf as u64));
                }
                return capi::none();
            }
        }
        release_slow(slf)
    }
}

/// [`release`] past its common case.
///
/// # Safety
/// The GIL must be held and `slf` an RLock.
#[inline(never)]
unsafe fn release_slow(slf: *mut PyObject) -> *mut PyObject {
    // SAFETY: forwarded caller obligations.
    unsafe {
        let rlock = rlock_of(slf);
        let me = thread::current_ident();
        let last = rlock.count() == 1 && rlock.owner() == me;
        // 3.14+ (modular count): the owner releasing at count 0 (after
        // `_acquire_restore((0, me))`) goes to 2^64 - 1 and keeps the lock.
        #[cfg(Py_3_14)]
        if rlock.count() == 0 && rlock.set_count_if_owner(me, u64::MAX) {
            return capi::none();
        }
        // A waiter that was asleep: the profile charges this release with its wait.
        let woke = || crate::profile::released_woke(slf as u64, (*slf.cast::<RLockObject>()).site);
        match rlock.release_then(me, woke) {
            Ok(()) => {
                if last {
                    crate::debug::rlock_released(LockId(slf as u64));
                }
                capi::none()
            }
            Err(_) => errors::thread_error(errors::RELEASE_UNACQUIRED),
        }
    }
}

/// Whether the calling thread owns the lock. From 3.14 on the built-in asks
/// only whether the caller is the recorded owner, which differs from "owner
/// with a count above 0" only after `_acquire_restore((0, me))`.
unsafe extern "C-unwind" fn is_owned(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` an RLock.
    unsafe {
        let rlock = rlock_of(slf);
        let me = thread::current_ident();
        #[cfg(Py_3_14)]
        let owned = rlock.owner() == me;
        #[cfg(not(Py_3_14))]
        let owned = rlock.is_owned(me);
        capi::boolean(owned)
    }
}

/// `locked()` (3.14+): whether any thread holds the lock.
#[cfg(Py_3_14)]
unsafe extern "C-unwind" fn locked(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` an RLock.
    unsafe { capi::boolean(rlock_of(slf).is_locked()) }
}

#[cfg(Py_3_11)]
unsafe extern "C-unwind" fn recursion_count(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` an RLock.
    unsafe {
        ffi::PyLong_FromUnsignedLongLong(rlock_of(slf).recursion_count(thread::current_ident()))
    }
}

/// `_release_save()`. Up to 3.13 any thread may call it while the lock is
/// held; from 3.14 on only the owner, like `release()`.
unsafe extern "C-unwind" fn release_save(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` an RLock; the
    // tuple steals the two new integer references.
    unsafe {
        let rlock = rlock_of(slf);
        #[cfg(Py_3_14)]
        if rlock.owner() != thread::current_ident() {
            return errors::thread_error(errors::RELEASE_UNACQUIRED);
        }
        // 3.14+: the owner may save a count of 0 too (modular count); the core
        // refuses 0, so it is saved as 1 and reported as 0.
        #[cfg(Py_3_14)]
        let zero = rlock.count() == 0 && rlock.set_count_if_owner(thread::current_ident(), 1);
        match rlock.release_save() {
            Ok((count, owner)) => {
                crate::debug::rlock_released(LockId(slf as u64));
                // Up to 3.13 an `unsigned long`; from 3.14 on a `Py_ssize_t`.
                #[cfg(not(Py_3_14))]
                let count = ffi::PyLong_FromUnsignedLongLong(count);
                #[cfg(Py_3_14)]
                let count = ffi::PyLong_FromLongLong(if zero { 0 } else { count as i64 });
                let owner = ffi::PyLong_FromUnsignedLongLong(owner);
                if count.is_null() || owner.is_null() {
                    ffi::Py_XDECREF(count);
                    ffi::Py_XDECREF(owner);
                    return ptr::null_mut();
                }
                let pair = ffi::PyTuple_Pack(2, count, owner);
                ffi::Py_DECREF(count);
                ffi::Py_DECREF(owner);
                pair
            }
            Err(_) => errors::thread_error(errors::RELEASE_UNACQUIRED),
        }
    }
}

/// The `(count, owner)` state `_acquire_restore` was given, or None with an
/// error set. Up to 3.13 both are C `unsigned long`s (`(kk)`, no `__index__`);
/// from 3.14 on the count is a `Py_ssize_t` (stored as its two's complement,
/// as the built-in's `size_t` level does) and the owner an `unsigned long
/// long`. From 3.15 on `state` is the single METH_O argument, parsed with
/// `PyArg_Parse`, whose errors say "argument" rather than "argument 1".
///
/// # Safety
/// The GIL must be held; `state` is the argument tuple (before 3.15) or the
/// argument itself (3.15+).
unsafe fn parse_state(state: *mut PyObject) -> Option<(u64, u64)> {
    // SAFETY: GIL held; the out pointers match the format's C types.
    unsafe {
        #[cfg(not(Py_3_14))]
        {
            let mut count: c_ulong = 0;
            let mut owner: c_ulong = 0;
            let parsed = capi::PyArg_ParseTuple(
                state,
                c"(kk):_acquire_restore".as_ptr(),
                &mut count as *mut c_ulong,
                &mut owner as *mut c_ulong,
            );
            (parsed != 0).then_some((count as u64, owner as u64))
        }
        #[cfg(Py_3_14)]
        {
            let mut count: Py_ssize_t = 0;
            let mut owner: std::ffi::c_ulonglong = 0;
            #[cfg(not(Py_3_15))]
            let parse = capi::PyArg_ParseTuple;
            #[cfg(Py_3_15)]
            let parse = capi::PyArg_Parse;
            let parsed = parse(
                state,
                c"(nK):_acquire_restore".as_ptr(),
                &mut count as *mut Py_ssize_t,
                &mut owner as *mut std::ffi::c_ulonglong,
            );
            (parsed != 0).then_some((count as u64, owner))
        }
    }
}

unsafe extern "C-unwind" fn acquire_restore(
    slf: *mut PyObject,
    state: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held, `slf` an RLock and `state`
    // the argument tuple (METH_VARARGS) or, from 3.15, the argument (METH_O).
    // The GIL is released only around the core wait, which does not touch
    // Python; nothing with a destructor is alive.
    unsafe {
        let rlock = rlock_of(slf);
        let Some((count, owner)) = parse_state(state) else {
            return ptr::null_mut();
        };
        let hooked = crate::debug::hooked();
        let mut class = None;
        if hooked && crate::lockdep::on() {
            class = crate::lockdep::class_for(slf, (*slf.cast::<RLockObject>()).site);
            // The end of a Condition.wait: it must come back holding the lock, so a cycle
            // only warns here.
            if let Some(class) = class {
                if !crate::lockdep::check(slf, class, false, true) {
                    return ptr::null_mut();
                }
            }
        }
        // Like the built-in, this wait is not interruptible: signal handlers
        // run once the caller (threading.Condition.wait) is back in Python.
        if rlock.acquire_restore_until(count, owner, Some(rthread_core::Deadline::now()))
            != Acquire::Acquired
        {
            let on = crate::debug::WaitOn {
                what: WaitFor::RLock(LockId(slf as u64)),
                site: (*slf.cast::<RLockObject>()).site,
                held_by: Some(HeldBy::Ident(rlock.owner_word())),
                wake: None,
            };
            let tstate = gil::save();
            // Not cancellable: `Condition.wait` must come back holding the lock.
            while crate::debug::wait_uncancellable(on, &|d| {
                rlock.acquire_restore_until_with(count, owner, d, gil::SPIN)
            }) != Acquire::Acquired
            {}
            gil::restore(tstate);
        }
        if hooked {
            crate::debug::rlock_acquired(LockId(slf as u64));
            if let Some(class) = class {
                crate::lockdep::acquired(slf, class);
            }
        }
        capi::none()
    }
}

unsafe extern "C-unwind" fn at_fork_reinit(slf: *mut PyObject, _: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` an RLock.
    unsafe {
        rlock_of(slf).reinit();
        if crate::debug::hooked() {
            crate::lockdep::released(rthread_core::diag::Released::Unknown, LockId(slf as u64));
        }
        capi::none()
    }
}

unsafe extern "C-unwind" fn repr(slf: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` an RLock. Owner
    // and count are read as a snapshot, as the built-in does.
    unsafe {
        let rlock = rlock_of(slf);
        let count = rlock.count();
        // From 3.14 on the built-in says "locked" whenever the inner lock is
        // taken, also after a restore with count 0.
        #[cfg(Py_3_14)]
        let held = rlock.is_locked();
        #[cfg(not(Py_3_14))]
        let held = count > 0;
        let state = if held { "locked" } else { "unlocked" };
        // Up to 3.12 the built-in prints the owner as a signed long.
        #[cfg(not(Py_3_13))]
        let owner = rlock.owner() as i64;
        #[cfg(Py_3_13)]
        let owner = rlock.owner();
        pytype::repr_string(&format!(
            "<{state} {} object owner={owner} count={count} at {:p}>",
            pytype::type_name(slf),
            slf
        ))
    }
}

const ACQUIRE_RESTORE_DOC: &std::ffi::CStr = capi::docstring!(
    "_acquire_restore($self, state, /)",
    "Take the lock and restore the (count, owner) pair _release_save returned\n\
(for internal use by threading.Condition)."
);

const METHODS_LIST: &[MethodDef] = &[
    MethodDef::fastcall(
        c"acquire",
        acquire,
        capi::docstring!(
            "acquire($self, /, blocking=True, timeout=-1)",
            "Take the lock. If this thread already owns it, add one level of recursion and\n\
return at once. Otherwise wait for it like Lock.acquire (blocking, timeout),\n\
then become its owner with a recursion level of one."
        ),
    ),
    MethodDef::noargs(
        c"release",
        release,
        capi::method_doc!(
            "release",
            "Drop one level of recursion; at level zero the lock is free again. Only the\n\
owning thread may release, or RuntimeError is raised."
        ),
    ),
    #[cfg(Py_3_14)]
    MethodDef::noargs(
        c"locked",
        locked,
        capi::method_doc!(
            "locked",
            "Whether some thread holds the lock right now (any thread, not only the caller)."
        ),
    ),
    MethodDef::noargs(
        c"_is_owned",
        is_owned,
        capi::method_doc!(
            "_is_owned",
            "Whether the calling thread owns the lock (for internal use by threading)."
        ),
    ),
    #[cfg(Py_3_11)]
    MethodDef::noargs(
        c"_recursion_count",
        recursion_count,
        capi::method_doc!(
            "_recursion_count",
            "The recursion level if the calling thread owns the lock, else 0 (for internal use)."
        ),
    ),
    #[cfg(not(Py_3_15))]
    MethodDef::varargs(c"_acquire_restore", acquire_restore, ACQUIRE_RESTORE_DOC),
    #[cfg(Py_3_15)]
    MethodDef::onearg(c"_acquire_restore", acquire_restore, ACQUIRE_RESTORE_DOC),
    MethodDef::noargs(
        c"_release_save",
        release_save,
        capi::method_doc!(
            "_release_save",
            "Release the lock completely and return its (count, owner) state (for\n\
internal use by threading.Condition)."
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
            "Release one level of the lock (the `with` statement)."
        ),
    ),
    #[cfg(not(Py_3_11))]
    MethodDef::varargs(
        c"__exit__",
        release,
        c"__exit__(*args)\n\nRelease one level of the lock (the `with` statement).",
    ),
    MethodDef::noargs(
        c"_at_fork_reinit",
        at_fork_reinit,
        capi::method_doc!(
            "_at_fork_reinit",
            "Reset the lock to a fresh, unowned state (used after fork())."
        ),
    ),
    MethodDef::END,
];

static METHODS: Static<[MethodDef; METHODS_LIST.len()]> = Static::new(capi::table(METHODS_LIST));

static MEMBERS: Static<[ffi::PyMemberDef; 2]> = Static::new([
    capi::weaklist_member(offset_of!(RLockObject, weakreflist)),
    capi::MEMBER_END,
]);

/// Creates the RLock type; called once from module init.
pub fn create_type(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let mut slots = vec![
        capi::slot(ffi::Py_tp_new, new as *mut c_void),
        capi::slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
        capi::slot(ffi::Py_tp_repr, repr as *mut c_void),
        capi::slot(ffi::Py_tp_methods, METHODS.get().cast()),
        capi::slot(ffi::Py_tp_members, MEMBERS.get().cast()),
        // No type docstring: the built-in's RLock has none (`__doc__` is None)
        // on every version; its methods are documented.
    ];
    let tp = pytype::create(
        py,
        c"_thread.RLock",
        std::mem::size_of::<RLockObject>(),
        pytype::Flags {
            base_type: true,
            instantiable: true,
        },
        &mut slots,
    )?;
    #[cfg(Py_3_15)]
    TYPE.store(tp.as_ptr().cast(), Ordering::Relaxed);
    BASE_TYPE.store(tp.as_ptr().cast(), Ordering::Relaxed);
    Ok(tp)
}
