//! `_thread._local` (`threading.local`): an object whose attributes are
//! per thread.
//!
//! # Design
//!
//! Every thread's attributes live in a plain `dict` owned by the local. Which
//! dict belongs to the calling thread is found through the *thread-state dict*
//! (`PyThreadState_GetDict()`): CPython creates one per thread state and
//! clears it when the thread state is cleared, which happens when any thread
//! ends — started here, by the built-in `_thread`, or from C with
//! `PyGILState_Ensure` — and, for the main thread, at finalization.
//!
//! Each thread-state dict holds one **registry** (a small hidden object under
//! [`REGISTRY_KEY`]) that lists the locals this thread has a dict in. A local
//! and a registry are joined by a *link*, kept twice, once on each side:
//!
//! ```text
//!   local.links[q]    = LocalLink { registry, dict (owned), at: p }
//!   registry.links[p] = RegLink   { local,    dict (borrowed), at: q }
//!   registry.index    = { local address -> p }
//! ```
//!
//! Neither side holds a strong reference to the other. Whichever dies first
//! removes the link from both tables (an O(1) swap-remove, fixing the `at`
//! of the entry that moved) and releases the dict:
//!
//! * the thread ends: its thread-state dict is cleared, the registry's refcount
//!   drops to zero and its `dealloc` drops every link, freeing this thread's
//!   dict in every local at once (for a thread started here, just before
//!   its thread state is cleared: see [`release_current_thread`]);
//! * the local is dropped (or cleared by the GC): it drops its links, freeing
//!   every thread's dict, and removes itself from each live registry, so no
//!   stale entries pile up in long-lived threads.
//!
//! The local owns the dicts and visits them in `tp_traverse`, so a cycle
//! through user data (`local -> dict -> value -> local`) is collectable. The
//! registry owns nothing and is not a GC object.
//!
//! Compared with one sentinel object per (local, thread) in the thread-state
//! dict, as CPython does: a dropped local here removes its entries from the
//! other threads' registries, which needs no access to other threads' states;
//! and no Python-level weakref callbacks run when a thread ends.
//!
//! # Lookup and the fast path
//!
//! The calling thread's dict is found by one lookup of [`REGISTRY_KEY`] in
//! the thread-state dict, then a probe of the registry's index. Each local
//! also caches its last `(thread-state dict, dict)` pair, so the common case —
//! one thread using the same local repeatedly — is `PyThreadState_GetDict()`
//! and one pointer comparison. The cache is only ever a live link: removing a
//! link resets the cache that points at it. A thread-state dict belongs to one
//! thread state for all its life, and when it is freed its registry dies with
//! it (resetting the caches), so an address reused by a later thread cannot
//! hit a stale entry. The one exception needs code that digs the registry out
//! of interpreter internals with `gc.get_referents` and keeps it alive past
//! its thread's end; nothing then becomes unsafe (the cached dict stays owned
//! by the local), but a later thread whose thread-state dict happens to reuse
//! the address could see the dead thread's attributes.
//!
//! # Re-entrancy
//!
//! Everything here runs with the GIL held, but dropping a dict, allocating a
//! GC object (which may start a collection on 3.9 – 3.11) or calling the
//! generic attribute machinery can run arbitrary Python code, which may use
//! or drop any local. So the link tables are always consistent before such a
//! call, no Rust reference into them is held across one, and no value with a
//! destructor is alive on the stack while Python code runs (see `capi` on
//! forced unwinding). Dicts are released only after their link is gone.
use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::offset_of;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi::{self, PyObject, PyTypeObject};
use pyo3::prelude::*;

use crate::capi::{self, Static};
use crate::errors;
use crate::pytype;

/// The key of the registry in every thread-state dict. Distinct from the
/// built-in's keys, so both modules can be used side by side.
const REGISTRY_KEY: &std::ffi::CStr = c"rthread._local.registry";

/// The `_local` type (for the exact-type fast path of attribute lookup).
static LOCAL_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());
/// The hidden registry type.
static REGISTRY_TYPE: AtomicPtr<PyTypeObject> = AtomicPtr::new(ptr::null_mut());
/// Interned [`REGISTRY_KEY`], owned forever.
static KEY: AtomicPtr<PyObject> = AtomicPtr::new(ptr::null_mut());
/// Interned `"__dict__"`, owned forever.
static DICT_NAME: AtomicPtr<PyObject> = AtomicPtr::new(ptr::null_mut());
// All four are written once at module init, with the GIL held, and only read
// afterwards, with the GIL held: Relaxed is enough, the GIL orders the rest.

/// A local's half of a link.
#[derive(Clone, Copy)]
struct LocalLink {
    registry: *mut RegistryObject,
    /// The thread's dict; this reference is owned.
    dict: *mut PyObject,
    /// Where the twin `RegLink` is in `registry.links`.
    at: usize,
}

/// A registry's half of a link.
#[derive(Clone, Copy)]
struct RegLink {
    local: *mut LocalObject,
    /// The same dict, borrowed from the local's half.
    dict: *mut PyObject,
    /// Where the twin `LocalLink` is in `local.links`.
    at: usize,
}

/// Hashes object addresses for the registry index: a multiplicative hash with
/// the high half folded into the low bits (the table indexes with the low
/// bits, and addresses differ mostly in the middle ones).
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not used for the usize keys here; any reasonable mix will do.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    #[inline]
    fn write_usize(&mut self, n: usize) {
        let h = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 32);
    }
}

type Index = HashMap<usize, usize, BuildHasherDefault<AddressHasher>>;

#[repr(C)]
pub struct LocalObject {
    ob_base: ffi::PyObject,
    /// The arguments of the constructor call, for re-running `__init__`.
    args: *mut PyObject,
    /// NULL or a dict.
    kw: *mut PyObject,
    weakreflist: *mut PyObject,
    /// The thread-state dict of the last thread served (NULL: no cache)...
    cache_tdict: *mut PyObject,
    /// ...and that thread's dict (borrowed from `links`).
    cache_dict: *mut PyObject,
    links: Vec<LocalLink>,
}

/// One thread's registry: the locals that have a dict for this thread.
#[repr(C)]
struct RegistryObject {
    ob_base: ffi::PyObject,
    links: Vec<RegLink>,
    /// Local address -> position in `links`.
    index: Index,
}

// ---------------------------------------------------------------------------
// Links

/// The calling thread's dict of `local` according to `registry`, if any.
///
/// # Safety
/// GIL held; `registry` live.
#[inline]
unsafe fn find(registry: *mut RegistryObject, local: *mut LocalObject) -> *mut PyObject {
    // SAFETY: the registry is live (caller); the shared borrows end before
    // this returns and nothing else runs meanwhile.
    unsafe {
        let reg = &*registry;
        match reg
            .index
            .get(&(local as usize))
            .and_then(|&p| reg.links.get(p))
        {
            Some(l) => {
                debug_assert!(l.local == local, "registry index out of step");
                l.dict
            }
            None => ptr::null_mut(),
        }
    }
}

/// Joins `local` and `registry` with `dict`, whose reference the local takes
/// over. Returns false, with MemoryError set and `dict` not taken, if the
/// tables cannot grow.
///
/// # Safety
/// GIL held; both live; they are not linked yet.
unsafe fn link(
    registry: *mut RegistryObject,
    local: *mut LocalObject,
    dict: *mut PyObject,
) -> bool {
    // SAFETY: both objects are live and distinct; the mutable borrows are
    // short, never overlap, and no Python code runs while they exist.
    unsafe {
        let reg = &mut *registry;
        let loc_links = &mut (*local).links;
        if reg.links.try_reserve(1).is_err()
            || reg.index.try_reserve(1).is_err()
            || loc_links.try_reserve(1).is_err()
        {
            ffi::PyErr_NoMemory();
            return false;
        }
        let p = reg.links.len();
        let q = loc_links.len();
        reg.links.push(RegLink { local, dict, at: q });
        reg.index.insert(local as usize, p);
        loc_links.push(LocalLink {
            registry,
            dict,
            at: p,
        });
        true
    }
}

/// Removes the link at `registry.links[p]` from both tables and returns its
/// dict, whose reference passes to the caller (NULL if there is no such
/// link). Resets the local's cache if it pointed at this dict.
///
/// # Safety
/// GIL held; `registry` is live or being deallocated, and its links are valid.
unsafe fn unlink(registry: *mut RegistryObject, p: usize) -> *mut PyObject {
    // SAFETY: the tables are consistent (every link has a live twin: a local
    // unlinks everything before it is freed, and so does a registry). Each
    // `&mut` below is to one object's table and ends before the next one is
    // made; no Python code runs in between. A local has at most one link per
    // registry, so the entries that move are never the one being removed and
    // never belong to the same pair of objects.
    unsafe {
        let reg = &mut *registry;
        let Some(&RegLink { local, at: q, .. }) = reg.links.get(p) else {
            return ptr::null_mut();
        };
        // Registry side: remove, then repair the entry that moved into `p`.
        reg.links.swap_remove(p);
        reg.index.remove(&(local as usize));
        if let Some(&moved) = reg.links.get(p) {
            reg.index.insert(moved.local as usize, p);
            let twins = &mut (*moved.local).links;
            if let Some(twin) = twins.get_mut(moved.at) {
                twin.at = p;
            }
        }
        shrink(&mut reg.links);
        if reg.index.capacity() > MIN_CAPACITY && reg.index.len() * 4 < reg.index.capacity() {
            reg.index.shrink_to(reg.index.len() * 2);
        }
        // Local side: the same.
        let loc = &mut *local;
        if q >= loc.links.len() {
            return ptr::null_mut(); // unreachable while the tables are consistent
        }
        let dict = loc.links.swap_remove(q).dict;
        if let Some(&moved) = loc.links.get(q) {
            let twins = &mut (*moved.registry).links;
            if let Some(twin) = twins.get_mut(moved.at) {
                twin.at = q;
            }
        }
        shrink(&mut loc.links);
        if loc.cache_dict == dict {
            loc.cache_tdict = ptr::null_mut();
            loc.cache_dict = ptr::null_mut();
        }
        dict
    }
}

/// Tables keep at most four times the room they need (beyond a small size),
/// so a thread that once used many locals does not keep the space forever.
const MIN_CAPACITY: usize = 16;

#[inline]
fn shrink<T>(v: &mut Vec<T>) {
    if v.capacity() > MIN_CAPACITY && v.len() * 4 < v.capacity() {
        v.shrink_to(v.len() * 2);
    }
}

/// Drops every link of `local` (all threads' dicts).
///
/// # Safety
/// GIL held; `local` live or being deallocated.
unsafe fn unlink_all(local: *mut LocalObject) {
    // SAFETY: each round reads the tables afresh, since releasing a dict can
    // run Python code that adds or removes links.
    unsafe {
        while let Some(&LocalLink { registry, at, .. }) = (*local).links.last() {
            let mut dict = unlink(registry, at);
            if dict.is_null() {
                // Unreachable while the tables are consistent; never loop.
                debug_assert!(false, "local link without its registry twin");
                dict = (*local).links.pop().map_or(ptr::null_mut(), |l| l.dict);
            }
            capi::Py_DecRef(dict);
        }
    }
}

/// Rounds of [`release_current_thread`]: each one is needed only when
/// finalizers used a local again in the ending thread.
const RELEASE_ROUNDS: usize = 8;

/// Releases the calling thread's dict in every local, for a thread started
/// here that has finished running Python code; its thread state is about to
/// be cleared.
///
/// CPython's `PyThreadState_Clear` (3.9 – 3.13) unhooks the thread-state
/// dict before releasing it: a finalizer that runs meanwhile and asks for it
/// (a local used again, in a value's `__del__`) gets a new one, which is
/// never freed, with whatever was put in it. Dropping the registry here, while
/// the thread-state dict is still in place, runs those finalizers first; what
/// they add lands in the same dict and is released in the next round or by
/// `PyThreadState_Clear`. Threads not started here keep the built-in's
/// behaviour.
///
/// # Safety
/// GIL held, no exception set; module initialised.
pub unsafe fn release_current_thread() {
    // SAFETY: GIL held (caller). The registry is kept alive by our own
    // reference while it is taken out of the thread-state dict, and released
    // after that; its dealloc may run Python code, after which everything is
    // looked up again.
    unsafe {
        let key = KEY.load(Ordering::Relaxed);
        let tp = REGISTRY_TYPE.load(Ordering::Relaxed);
        for _ in 0..RELEASE_ROUNDS {
            let tdict = ffi::PyThreadState_GetDict();
            if tdict.is_null() {
                return;
            }
            let registry = ffi::PyDict_GetItemWithError(tdict, key);
            if registry.is_null() || ffi::Py_TYPE(registry) != tp {
                ffi::PyErr_Clear();
                return;
            }
            ffi::Py_INCREF(registry);
            let rc = ffi::PyDict_DelItem(tdict, key);
            // Freeing the registry releases the dicts (finalizers run here).
            capi::Py_DecRef(registry);
            if rc < 0 {
                ffi::PyErr_Clear();
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Finding the calling thread's dict

/// The calling thread's registry (created if `create`), borrowed from the
/// thread-state dict; NULL (with an exception set only on error) otherwise.
///
/// # Safety
/// GIL held; `tdict` the calling thread's thread-state dict.
unsafe fn registry_of(tdict: *mut PyObject, create: bool) -> *mut PyObject {
    // SAFETY: GIL held; the key is an interned str, so the lookup compares
    // against the thread-state dict's own keys only (strs set by C code).
    // Creating the registry allocates no GC object, so no Python code runs
    // between its creation and its insertion.
    unsafe {
        let key = KEY.load(Ordering::Relaxed);
        let tp = REGISTRY_TYPE.load(Ordering::Relaxed);
        let found = ffi::PyDict_GetItemWithError(tdict, key);
        if !found.is_null() && ffi::Py_TYPE(found) == tp {
            return found;
        }
        if !create || !ffi::PyErr_Occurred().is_null() {
            return ptr::null_mut();
        }
        let registry = ffi::PyType_GenericAlloc(tp, 0);
        if registry.is_null() {
            return registry;
        }
        let this = registry.cast::<RegistryObject>();
        ptr::addr_of_mut!((*this).links).write(Vec::new());
        ptr::addr_of_mut!((*this).index).write(Index::default());
        let rc = ffi::PyDict_SetItem(tdict, key, registry);
        capi::Py_DecRef(registry); // the thread-state dict owns it now
        if rc < 0 {
            return ptr::null_mut();
        }
        registry
    }
}

/// The calling thread's dict of `local`, borrowed (valid until Python code
/// runs); on first use in a thread it is created and, for a subclass with an
/// `__init__`, that `__init__` is called with the original arguments. NULL
/// with an exception set on failure.
///
/// # Safety
/// GIL held; `local` a live `_local` (or subclass) instance.
#[inline]
unsafe fn thread_dict(local: *mut LocalObject) -> *mut PyObject {
    // SAFETY: GIL held (caller). The cached dict is owned by a live link while
    // the cache is set (see the module docs).
    unsafe {
        let tdict = ffi::PyThreadState_GetDict();
        let cached = (*local).cache_dict;
        if tdict == (*local).cache_tdict && !cached.is_null() {
            return cached;
        }
        thread_dict_slow(local, tdict)
    }
}

#[cold]
unsafe fn thread_dict_slow(local: *mut LocalObject, tdict: *mut PyObject) -> *mut PyObject {
    // SAFETY: GIL held (caller). Borrowed pointers (registry, dict) are
    // re-fetched after every call that can run Python code.
    unsafe {
        let mut tdict = tdict;
        loop {
            if tdict.is_null() {
                return errors::system_error(errors::NO_THREAD_STATE_DICT);
            }
            let registry = registry_of(tdict, false);
            if !registry.is_null() {
                let dict = find(registry.cast(), local);
                if !dict.is_null() {
                    (*local).cache_tdict = tdict;
                    (*local).cache_dict = dict;
                    return dict;
                }
            } else if !ffi::PyErr_Occurred().is_null() {
                return ptr::null_mut();
            }
            // First use in this thread.
            if !new_thread_dict(local) {
                return ptr::null_mut();
            }
            if needs_init(local) && !run_init(local) {
                return ptr::null_mut();
            }
            // Look the dict up again: __init__ may have done anything. Going
            // round again (and re-running __init__) happens only if it made
            // this thread's dict go away, as the next access would anyway.
            tdict = ffi::PyThreadState_GetDict();
        }
    }
}

/// Creates and links an empty dict for the calling thread (no `__init__`).
/// Returns false with an exception set on failure.
///
/// # Safety
/// GIL held; `local` live.
unsafe fn new_thread_dict(local: *mut LocalObject) -> bool {
    // SAFETY: GIL held. PyDict_New may start a collection (3.9 – 3.11) that
    // runs Python code, so the thread-state dict and the registry are fetched
    // after it, and the link is checked again in case that code used this
    // local in this thread.
    unsafe {
        let dict = ffi::PyDict_New();
        if dict.is_null() {
            return false;
        }
        let tdict = ffi::PyThreadState_GetDict();
        if tdict.is_null() {
            capi::Py_DecRef(dict);
            errors::system_error(errors::NO_THREAD_STATE_DICT);
            return false;
        }
        let registry = registry_of(tdict, true);
        if registry.is_null() {
            capi::Py_DecRef(dict);
            return false;
        }
        let registry = registry.cast::<RegistryObject>();
        if !find(registry, local).is_null() {
            capi::Py_DecRef(dict); // empty: releasing it runs no Python code
            return true;
        }
        if !link(registry, local, dict) {
            capi::Py_DecRef(dict);
            return false;
        }
        (*local).cache_tdict = tdict;
        (*local).cache_dict = dict;
        true
    }
}

/// Whether the local's type has an `__init__` other than `object`'s.
///
/// # Safety
/// GIL held; `local` live.
unsafe fn needs_init(local: *mut LocalObject) -> bool {
    // SAFETY: reading tp_init of two live types. Compared as addresses.
    unsafe {
        let own = (*ffi::Py_TYPE(local.cast())).tp_init.map(|f| f as usize);
        let base = (*ptr::addr_of!(ffi::PyBaseObject_Type))
            .tp_init
            .map(|f| f as usize);
        own != base
    }
}

/// `tp_init` as a `"C-unwind"` pointer: it runs Python code.
type InitProc = unsafe extern "C-unwind" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> c_int;

/// Re-runs `__init__` in a new thread; on failure drops the thread's new dict
/// (so the next access tries again) and returns false with the error set.
///
/// # Safety
/// GIL held; `local` live.
#[cold]
unsafe fn run_init(local: *mut LocalObject) -> bool {
    // SAFETY: GIL held. The arguments are kept alive across the call by our
    // own references (tp_clear could drop the local's). The transmute only
    // changes the declared unwind behaviour of a C function pointer with the
    // same signature. After the call, the registry and link are re-fetched.
    unsafe {
        let Some(init) = (*ffi::Py_TYPE(local.cast())).tp_init else {
            return true;
        };
        let init = std::mem::transmute::<ffi::initproc, InitProc>(init);
        let mut args = (*local).args;
        if args.is_null() {
            // Only after tp_clear: call it with no arguments.
            args = ffi::PyTuple_New(0);
            if args.is_null() {
                return false;
            }
        } else {
            ffi::Py_INCREF(args);
        }
        let kw = (*local).kw;
        ffi::Py_XINCREF(kw);
        let rc = init(local.cast(), args, kw);
        capi::Py_DecRef(args);
        if !kw.is_null() {
            capi::Py_DecRef(kw);
        }
        if rc >= 0 {
            return true;
        }
        let tdict = ffi::PyThreadState_GetDict();
        let registry = if tdict.is_null() {
            ptr::null_mut()
        } else {
            registry_of(tdict, false).cast::<RegistryObject>()
        };
        if !registry.is_null() {
            if let Some(&p) = (*registry).index.get(&(local as usize)) {
                // Releasing the dict with the __init__ error set is fine:
                // deallocation (finalizers, weakref callbacks) saves and
                // restores the current exception, as when a frame unwinds.
                capi::Py_DecRef(unlink(registry, p));
            }
        }
        false
    }
}

/// Whether `name` equals `"__dict__"` (1), not (0), or error (-1): the
/// interpreter's comparison, with shortcuts for the usual exact `str` names.
///
/// # Safety
/// GIL held; `name` live.
#[inline]
unsafe fn is_dict_name(name: *mut PyObject) -> c_int {
    // SAFETY: GIL held; DICT_NAME is set at module init. An exact str of
    // another length cannot compare equal to "__dict__".
    unsafe {
        let dict_name = DICT_NAME.load(Ordering::Relaxed);
        if name == dict_name {
            return 1;
        }
        if ffi::PyUnicode_CheckExact(name) != 0 && str_len(name) != 8 {
            return 0;
        }
        capi::PyObject_RichCompareBool(name, dict_name, ffi::Py_EQ)
    }
}

/// The length of an exact `str` (-1 if unknown).
///
/// # Safety
/// GIL held; `name` an exact str.
#[inline]
unsafe fn str_len(name: *mut PyObject) -> ffi::Py_ssize_t {
    // SAFETY: an exact str; from 3.12 every str is "ready", so the length
    // field is always set. Before, it is set once the string is ready, which
    // all but legacy strings from the deprecated wchar_t API are.
    unsafe {
        #[cfg(Py_3_12)]
        {
            ffi::PyUnicode_GET_LENGTH(name)
        }
        #[cfg(not(Py_3_12))]
        {
            if ffi::PyUnicode_IS_READY(name) != 0 {
                ffi::PyUnicode_GET_LENGTH(name)
            } else {
                -1
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The `_local` type

unsafe extern "C-unwind" fn new(
    tp: *mut PyTypeObject,
    args: *mut PyObject,
    kw: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held, `tp` `_local` or a
    // subclass, `args` a tuple (or NULL from C) and `kw` NULL or a dict.
    // tp_alloc returns zeroed memory of at least LocalObject's size, already
    // GC-tracked: the fields are valid before anything else can run.
    unsafe {
        let base_init = (*ptr::addr_of!(ffi::PyBaseObject_Type))
            .tp_init
            .map(|f| f as usize);
        if (*tp).tp_init.map(|f| f as usize) == base_init {
            let has_args = !args.is_null() && ffi::PyTuple_Size(args) != 0;
            let has_kw = !kw.is_null() && ffi::PyDict_Size(kw) != 0;
            if has_args || has_kw {
                return errors::type_error(errors::LOCAL_INIT_ARGS);
            }
        }
        let alloc = (*tp).tp_alloc.unwrap_or(ffi::PyType_GenericAlloc);
        let obj = alloc(tp, 0);
        if obj.is_null() {
            return obj;
        }
        let this = obj.cast::<LocalObject>();
        ptr::addr_of_mut!((*this).links).write(Vec::new());
        let args = if args.is_null() {
            ffi::PyTuple_New(0)
        } else {
            ffi::Py_INCREF(args);
            args
        };
        (*this).args = args;
        ffi::Py_XINCREF(kw);
        (*this).kw = kw;
        if args.is_null() {
            capi::Py_DecRef(obj);
            return ptr::null_mut();
        }
        // The creating thread gets its dict now, without re-running
        // __init__: type.__call__ is about to call it.
        if !new_thread_dict(this) {
            capi::Py_DecRef(obj);
            return ptr::null_mut();
        }
        obj
    }
}

unsafe extern "C-unwind" fn getattro(slf: *mut PyObject, name: *mut PyObject) -> *mut PyObject {
    // SAFETY: called by CPython with the GIL held and `slf` a `_local`. The
    // dict is held by our own reference across every call that can run
    // Python code.
    unsafe {
        let local = slf.cast::<LocalObject>();
        let dict = thread_dict(local);
        if dict.is_null() {
            return dict;
        }
        ffi::Py_INCREF(dict);
        match is_dict_name(name) {
            1 => return dict,
            0 => {}
            _ => {
                capi::Py_DecRef(dict);
                return ptr::null_mut();
            }
        }
        let result = if ffi::Py_TYPE(slf) == LOCAL_TYPE.load(Ordering::Relaxed) {
            // The base type has no descriptors of its own: the thread's dict
            // comes first, then object's attributes (__class__, __doc__...).
            let value = capi::PyDict_GetItemWithError(dict, name);
            if !value.is_null() {
                ffi::Py_INCREF(value);
                value
            } else if !ffi::PyErr_Occurred().is_null() {
                ptr::null_mut()
            } else {
                capi::_PyObject_GenericGetAttrWithDict(slf, name, dict, 0)
            }
        } else {
            // Subclasses: the full protocol, with the thread's dict as the
            // instance dict (descriptors, __slots__, then __getattr__ via
            // the type's own hook).
            capi::_PyObject_GenericGetAttrWithDict(slf, name, dict, 0)
        };
        capi::Py_DecRef(dict);
        result
    }
}

unsafe extern "C-unwind" fn setattro(
    slf: *mut PyObject,
    name: *mut PyObject,
    value: *mut PyObject,
) -> c_int {
    // SAFETY: called by CPython with the GIL held and `slf` a `_local`;
    // `value` NULL means delete. The dict is held as in getattro.
    unsafe {
        let local = slf.cast::<LocalObject>();
        let dict = thread_dict(local);
        if dict.is_null() {
            return -1;
        }
        ffi::Py_INCREF(dict);
        let rc = match is_dict_name(name) {
            1 => errors::attribute_read_only(slf, name),
            0 => capi::_PyObject_GenericSetAttrWithDict(slf, name, value, dict),
            _ => -1,
        };
        capi::Py_DecRef(dict);
        rc
    }
}

unsafe extern "C-unwind" fn traverse(
    slf: *mut PyObject,
    visit: ffi::visitproc,
    arg: *mut c_void,
) -> c_int {
    // SAFETY: called by the collector with the GIL held; visiting runs no
    // Python code, so the link table cannot change while it is walked. An
    // instance of a heap type visits its type, unless the base is a static
    // type (3.9), when subtype_traverse does (see pytype::STATIC_TYPES).
    unsafe {
        let local = slf.cast::<LocalObject>();
        let tp = if pytype::STATIC_TYPES {
            ptr::null_mut()
        } else {
            ffi::Py_TYPE(slf).cast::<PyObject>()
        };
        for obj in [tp, (*local).args, (*local).kw] {
            if !obj.is_null() {
                let rc = visit(obj, arg);
                if rc != 0 {
                    return rc;
                }
            }
        }
        for link in (*local).links.iter() {
            let rc = visit(link.dict, arg);
            if rc != 0 {
                return rc;
            }
        }
        0
    }
}

unsafe extern "C-unwind" fn clear(slf: *mut PyObject) -> c_int {
    // SAFETY: called with the GIL held (by the collector, by subtype_clear,
    // or by dealloc) on a live or dying local; fields are set to NULL before
    // their references are released.
    unsafe {
        let local = slf.cast::<LocalObject>();
        let args = std::mem::replace(&mut (*local).args, ptr::null_mut());
        let kw = std::mem::replace(&mut (*local).kw, ptr::null_mut());
        if !args.is_null() {
            capi::Py_DecRef(args);
        }
        if !kw.is_null() {
            capi::Py_DecRef(kw);
        }
        unlink_all(local);
        0
    }
}

unsafe extern "C-unwind" fn dealloc(slf: *mut PyObject) {
    // SAFETY: called by CPython when the last reference goes, GIL held. For a
    // Python subclass, subtype_dealloc has cleared its own slots and leaves
    // the weak references and the type reference (our base is a heap type)
    // to us. Once every link is gone the Vec is empty and can be dropped.
    unsafe {
        ffi::PyObject_GC_UnTrack(slf.cast());
        let local = slf.cast::<LocalObject>();
        if !(*local).weakreflist.is_null() {
            ffi::PyObject_ClearWeakRefs(slf);
        }
        clear(slf);
        ptr::drop_in_place(ptr::addr_of_mut!((*local).links));
        pytype::free_instance(slf);
    }
}

// ---------------------------------------------------------------------------
// The registry type

unsafe extern "C-unwind" fn registry_dealloc(slf: *mut PyObject) {
    // SAFETY: called when the thread-state dict lets go of the registry (its
    // thread ended), GIL held. Nothing can find the registry any more except
    // through links, and each round re-reads the table, since releasing a
    // dict can run Python code that unlinks other locals from it.
    unsafe {
        let registry = slf.cast::<RegistryObject>();
        while let Some(last) = (*registry).links.len().checked_sub(1) {
            let dict = unlink(registry, last);
            capi::Py_DecRef(dict);
        }
        ptr::drop_in_place(ptr::addr_of_mut!((*registry).links));
        ptr::drop_in_place(ptr::addr_of_mut!((*registry).index));
        pytype::free_instance(slf);
    }
}

static MEMBERS: Static<[ffi::PyMemberDef; 2]> = Static::new([
    capi::weaklist_member(offset_of!(LocalObject, weakreflist)),
    capi::MEMBER_END,
]);

/// Creates the `_local` type (and the hidden registry type) and adds it to
/// the module as `_local`.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // SAFETY: GIL held; the strings are interned and kept forever.
    unsafe {
        let key = ffi::PyUnicode_InternFromString(REGISTRY_KEY.as_ptr());
        let dict_name = ffi::PyUnicode_InternFromString(c"__dict__".as_ptr());
        if key.is_null() || dict_name.is_null() {
            return Err(PyErr::fetch(py));
        }
        KEY.store(key, Ordering::Relaxed);
        DICT_NAME.store(dict_name, Ordering::Relaxed);
    }
    let mut registry_slots = vec![
        capi::slot(ffi::Py_tp_dealloc, registry_dealloc as *mut c_void),
        capi::slot(
            ffi::Py_tp_doc,
            c"Per-thread index of the _local objects this thread has attributes in (internal)."
                .as_ptr() as *mut c_void,
        ),
    ];
    let registry_type = pytype::create(
        py,
        c"_thread._localregistry",
        std::mem::size_of::<RegistryObject>(),
        pytype::Flags {
            base_type: false,
            instantiable: false,
        },
        &mut registry_slots,
    )?;
    // The type lives as long as the process: its reference is kept here.
    REGISTRY_TYPE.store(registry_type.into_ptr().cast(), Ordering::Relaxed);

    let mut slots = vec![
        capi::slot(ffi::Py_tp_new, new as *mut c_void),
        capi::slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
        capi::slot(ffi::Py_tp_getattro, getattro as *mut c_void),
        capi::slot(ffi::Py_tp_setattro, setattro as *mut c_void),
        capi::slot(ffi::Py_tp_traverse, traverse as *mut c_void),
        capi::slot(ffi::Py_tp_clear, clear as *mut c_void),
        capi::slot(ffi::Py_tp_members, MEMBERS.get().cast()),
        capi::slot(
            ffi::Py_tp_doc,
            capi::docstring!(
                "_local()",
                "Thread-local attributes: each thread that uses the object sees its own\n\
set of attributes (its own __dict__). A subclass's __init__ runs again,\n\
with the constructor's arguments, the first time each new thread uses it."
            )
            .as_ptr() as *mut c_void,
        ),
    ];
    let tp = pytype::create_with_flags(
        py,
        c"_thread._local",
        std::mem::size_of::<LocalObject>(),
        pytype::Flags {
            base_type: true,
            instantiable: true,
        },
        ffi::Py_TPFLAGS_HAVE_GC,
        &mut slots,
    )?;
    LOCAL_TYPE.store(tp.as_ptr().cast(), Ordering::Relaxed);
    m.add("_local", tp)?;
    Ok(())
}
