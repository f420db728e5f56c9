//! Who holds what, for Python: the binding's side of `rthread_core::diag`.
//!
//! - **Sites**: the creation site of every lock and `RLock` (and, in diagnostic mode, the
//!   acquire site of every held lock) is the first Python frame outside the standard
//!   library's synchronisation modules, interned once per `(code object, line)`.
//! - **Holders**: [`acquired`] / [`releasing_slow`] keep a lock's [`Holder`] word; an `RLock` is
//!   read through its owner-ident word. In diagnostic mode they also keep the held lists.
//! - **Waits**: [`wait`] wraps the blocking part of an acquire or join (GIL released) in a
//!   [`WaitGuard`] armed with the lock's (or thread handle's) wake word: the binding's locks
//!   sleep in a `diag::Cancellable` backend, so a wait that a "raise" watchdog cancels is
//!   woken and ends without the lock, however long before the watchdog it began.
//! - **The `rthread._rthread_debug` module**: the native helpers of `rthread.debug`, created
//!   beside `_rthread` (never one of its attributes, so `_thread`'s namespace stays the
//!   built-in's), and the watchdog thread.
//!
//! Nothing here touches Python while the GIL is released; [`wait`] keeps its guard alive only
//! between the GIL release and the re-acquire, never across the re-acquire (see `acquire.rs`
//! on forced unwinds). [`LongWait`], the main thread's, keeps its record across them, and has
//! no destructor for that reason.
use std::cell::{Cell, UnsafeCell};
use std::collections::{HashMap, HashSet};
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use pyo3::ffi::{self, PyObject};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rthread_core::diag::{
    self, Certainty, Cycle, HeldBy, Holder, LockId, LockKind, Released, Snapshot, ThreadSlot,
    WaitFor, WaitGuard, WaitToken,
};
use rthread_core::{Acquire, Deadline};

use crate::capi;

// ---------------------------------------------------------------------------------------------
// Sites

/// Path fragments of the modules whose frames are skipped when naming a site: the standard
/// library's synchronisation wrappers, so a `Condition` or a `Queue` is named by its user.
const SKIPPED: &[&str] = &[
    "/threading.py",
    "/queue.py",
    "/_threading_local.py",
    "/concurrent/futures/",
    "/multiprocessing/dummy/",
    "/multiprocessing/pool.py",
    "\\threading.py",
    "\\queue.py",
    "\\concurrent\\futures\\",
    "\\multiprocessing\\dummy\\",
];

/// The bookkeeping is compiled out (the `no-diag` feature: the bench's baseline).
const COMPILED_OUT: bool = cfg!(feature = "no-diag");

/// Frames looked at before giving up on a site.
const MAX_FRAMES: usize = 16;

/// A multiply-shift hasher for the site cache's two-word keys (SipHash would cost more than
/// the rest of a cache hit).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_i32(&mut self, v: i32) {
        self.write_u64(u64::from(v as u32));
    }
}

type SiteMap = HashMap<(usize, c_int), u32, std::hash::BuildHasherDefault<KeyHasher>>;

/// `(code object address, position)` -> site id, 0 meaning "skip this frame". The position
/// is the instruction offset from 3.11 on (no line-table walk on a hit), the line before.
/// Every code object in it is kept alive by one reference taken when it was added, so an
/// address is never reused while it is a key. Used with the GIL held only (the mutex is
/// never contended).
static SITE_CACHE: GilCell<Option<SiteMap>> = GilCell(UnsafeCell::new(None));

/// A value only touched with the GIL held (the module is never used without the GIL:
/// `gil_used = true`), so the GIL serialises every access; cheaper than a mutex on the
/// allocation path.
pub(crate) struct GilCell<T>(pub(crate) UnsafeCell<T>);

// SAFETY: every access goes through `GilCell::with`, whose callers hold the GIL, and the GIL
// lets one thread at a time run them; the closure cannot reach Python (it gets only `&mut T`).
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    /// # Safety
    /// The GIL must be held, and `f` must not release it or reach Python.
    pub(crate) unsafe fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: the GIL serialises the callers (see the `Sync` impl); `f` cannot re-enter.
        f(unsafe { &mut *self.0.get() })
    }
}

/// A direct-mapped front for [`SITE_CACHE`]: `(code, position, site)`, where every code
/// address in it is also a key of the map (so kept alive). A loop that allocates at one site
/// hits it with two compares and no hashing. 1024 entries (16 KiB), so that the dozen sites of
/// a hot loop rarely share one: two that do evict each other on every pass.
static FRONT: GilCell<[(usize, c_int, u32); FRONT_SIZE]> =
    GilCell(UnsafeCell::new([(0, 0, 0); FRONT_SIZE]));
const FRONT_BITS: u32 = 10;
const FRONT_SIZE: usize = 1 << FRONT_BITS;

/// The position part of a [`FRONT`] key whose first part is an instruction address (3.13+),
/// not a code object: no real position is negative below -1.
#[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
const IP_KEY: c_int = c_int::MIN;

/// A cache in front of [`FRONT`] on 3.11+: `(instruction address, site)` of the current frame
/// (`top_frame::instr_ptr`, `cframe_top::current_instr_ptr`), two ways per set, the newer
/// first, so that two sites of a hot loop that hash alike do not evict each other. Filled only
/// from [`SITE_CACHE`] hits, whose code objects it keeps alive (the bytecode lies inside the
/// code object from 3.11 on), so an address cannot be reused by another code object while
/// its entry exists.
#[cfg(all(Py_3_11, not(Py_GIL_DISABLED)))]
static IP_FRONT: GilCell<[[(usize, u32); 2]; IP_SETS]> =
    GilCell(UnsafeCell::new([[(0, 0); 2]; IP_SETS]));
#[cfg(all(Py_3_11, not(Py_GIL_DISABLED)))]
const IP_SET_BITS: u32 = 8;
#[cfg(all(Py_3_11, not(Py_GIL_DISABLED)))]
const IP_SETS: usize = 1 << IP_SET_BITS;

#[cfg(all(Py_3_11, not(Py_GIL_DISABLED)))]
#[inline]
fn ip_index(ip: usize) -> usize {
    ((ip as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - IP_SET_BITS)) as usize
}

/// The site [`IP_FRONT`] holds for `ip`, 0 if none.
///
/// # Safety
/// The GIL must be held.
#[cfg(all(Py_3_11, not(Py_GIL_DISABLED)))]
#[inline(always)]
unsafe fn ip_front_get(ip: usize) -> u32 {
    // SAFETY: GIL held (caller); the closure only reads the array.
    unsafe {
        IP_FRONT.with(|f| {
            let set = &f[ip_index(ip)];
            if set[0].0 == ip {
                set[0].1
            } else if set[1].0 == ip {
                set[1].1
            } else {
                0
            }
        })
    }
}

/// Records `site` for `ip` in [`IP_FRONT`] (the set's older entry goes).
///
/// # Safety
/// The GIL must be held, and `ip` must lie in a code object [`SITE_CACHE`] keeps alive.
#[cfg(all(Py_3_11, not(Py_GIL_DISABLED)))]
unsafe fn ip_front_put(ip: usize, site: u32) {
    // SAFETY: GIL held (caller); the closure only writes the array.
    unsafe {
        IP_FRONT.with(|f| {
            let set = &mut f[ip_index(ip)];
            if set[0].0 != ip {
                set[1] = set[0];
            }
            set[0] = (ip, site);
        });
    }
}

#[inline]
fn front_index(key: (usize, c_int)) -> usize {
    let h = (key.0 as u64 >> 4) ^ u64::from(key.1 as u32).wrapping_mul(0x9E37_79B9);
    (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - FRONT_BITS)) as usize
}

/// The frame's position for the cache key.
///
/// # Safety
/// The GIL must be held and `frame` live.
#[inline]
pub(crate) unsafe fn frame_position(frame: *mut ffi::PyFrameObject) -> c_int {
    // SAFETY: forwarded.
    unsafe {
        #[cfg(Py_3_11)]
        {
            ffi::PyFrame_GetLasti(frame)
        }
        #[cfg(not(Py_3_11))]
        {
            // The instruction offset when the frame's fields can be read (decided once, at
            // import, before any lock exists: keys never mix the two kinds of position).
            if object_frame::usable() {
                object_frame::key(frame).1
            } else {
                ffi::PyFrame_GetLineNumber(frame)
            }
        }
    }
}

/// Frame objects read by their fields before 3.11, where every running Python frame is a
/// frame object and `PyThreadState.frame` the innermost: the site caches are looked up by
/// `(f_code, f_lasti)` with no call but `PyEval_GetFrame`, and no line-table walk (which is
/// what `PyFrame_GetLineNumber` does on every call). The offsets are the 3.9 and 3.10 x86-64
/// layouts, checked at import against the frame API ([`object_frame::verify`]); if they do
/// not match, sites are looked up as before, by line.
#[cfg(not(Py_3_11))]
mod object_frame {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicBool, Ordering};

    use pyo3::ffi::{self, PyObject};

    /// `offsetof(PyFrameObject, f_back)`.
    const BACK_OFFSET: usize = 24;
    /// `offsetof(PyFrameObject, f_code)`.
    const CODE_OFFSET: usize = 32;
    /// `offsetof(PyFrameObject, f_lasti)`: 3.10 dropped `f_stacktop` and moved the flags.
    #[cfg(not(Py_3_10))]
    const LASTI_OFFSET: usize = 104;
    #[cfg(Py_3_10)]
    const LASTI_OFFSET: usize = 96;

    /// [`verify`] confirmed the three offsets.
    static USABLE: AtomicBool = AtomicBool::new(false);

    #[inline(always)]
    pub fn usable() -> bool {
        USABLE.load(Ordering::Relaxed)
    }

    /// # Safety
    /// `frame` must be a live frame object and `offset` one of the confirmed offsets of a
    /// field of type `T`.
    #[inline(always)]
    unsafe fn field<T: Copy>(frame: *mut ffi::PyFrameObject, offset: usize) -> T {
        // SAFETY: forwarded: the field lies inside the live object.
        unsafe { frame.cast::<u8>().add(offset).cast::<T>().read() }
    }

    /// `(f_code, f_lasti)` of `frame`: the site caches' key (the code object is borrowed).
    ///
    /// # Safety
    /// The GIL must be held, [`usable`] true and `frame` a live frame object.
    #[inline(always)]
    pub unsafe fn key(frame: *mut ffi::PyFrameObject) -> (usize, c_int) {
        // SAFETY: forwarded; `verify` confirmed both offsets.
        unsafe { (field(frame, CODE_OFFSET), field(frame, LASTI_OFFSET)) }
    }

    /// `f_back` of `frame` (borrowed; null at the bottom of the stack).
    ///
    /// # Safety
    /// As for [`key`].
    #[inline(always)]
    pub unsafe fn back(frame: *mut ffi::PyFrameObject) -> *mut ffi::PyFrameObject {
        // SAFETY: forwarded; `verify` confirmed the offset.
        unsafe { field(frame, BACK_OFFSET) }
    }

    /// Whether the fields of `frame` at the three offsets are what the frame API reports.
    ///
    /// # Safety
    /// The GIL must be held and `frame` live.
    unsafe fn agrees(frame: *mut ffi::PyFrameObject) -> bool {
        // SAFETY: GIL held; every new reference is released; the reads lie inside the object
        // on the layouts the offsets name (checked here before any other use).
        unsafe {
            let code = ffi::PyFrame_GetCode(frame);
            let code_ok = field::<usize>(frame, CODE_OFFSET) == code as usize;
            ffi::Py_DECREF(code.cast());
            let back = ffi::PyFrame_GetBack(frame);
            let back_ok = field::<usize>(frame, BACK_OFFSET) == back as usize;
            if !back.is_null() {
                ffi::Py_DECREF(back.cast());
            }
            // 3.10's field counts code units and its attribute bytes (-1 before the first
            // instruction); 3.9's both count bytes.
            let raw = std::ffi::c_long::from(field::<c_int>(frame, LASTI_OFFSET));
            let expected = if cfg!(Py_3_10) && raw >= 0 {
                raw * 2
            } else {
                raw
            };
            let lasti = ffi::PyObject_GetAttrString(frame.cast::<PyObject>(), c"f_lasti".as_ptr());
            let lasti_ok = !lasti.is_null() && ffi::PyLong_AsLong(lasti) == expected;
            if lasti.is_null() {
                ffi::PyErr_Clear();
            } else {
                ffi::Py_DECREF(lasti);
            }
            code_ok && back_ok && lasti_ok
        }
    }

    /// Enables the field reads if they agree with the frame API on the importing frame and
    /// its caller (two frames at different instructions). Called once, from module
    /// initialisation, before any lock exists.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn verify() {
        // SAFETY: GIL held; `PyEval_GetFrame` is borrowed, and its caller is read only once
        // the offsets agreed on it.
        unsafe {
            let frame = ffi::PyEval_GetFrame();
            if frame.is_null() || !agrees(frame) {
                return;
            }
            let back = field::<*mut ffi::PyFrameObject>(frame, BACK_OFFSET);
            if back.is_null() || !agrees(back) {
                return;
            }
            USABLE.store(true, Ordering::Relaxed);
        }
    }
}

/// The current interpreter frame's instruction address on 3.11 and 3.12, read through
/// `PyThreadState.cframe->current_frame->prev_instr` without making a frame object (which
/// `PyEval_GetFrame` does): the key of [`IP_FRONT`]'s hits. The offsets are the 3.11 and 3.12
/// x86-64 layouts, checked at import ([`cframe_top::verify`]) against the frame API.
#[cfg(all(Py_3_11, not(Py_3_13), not(Py_GIL_DISABLED)))]
mod cframe_top {
    use std::sync::atomic::{AtomicBool, Ordering};

    use pyo3::ffi::{self, PyObject};

    extern "C" {
        fn _PyThreadState_UncheckedGet() -> *mut ffi::PyThreadState;
    }

    /// `offsetof(PyThreadState, cframe)`.
    const CFRAME_OFFSET: usize = 56;
    /// `offsetof(_PyCFrame, current_frame)`: 3.12 dropped `use_tracing` before it.
    #[cfg(not(Py_3_12))]
    const CURRENT_OFFSET: usize = 8;
    #[cfg(Py_3_12)]
    const CURRENT_OFFSET: usize = 0;
    /// `offsetof(_PyInterpreterFrame, f_code)`: first from 3.12 on.
    #[cfg(not(Py_3_12))]
    const CODE_OFFSET: usize = 32;
    #[cfg(Py_3_12)]
    const CODE_OFFSET: usize = 0;
    /// `offsetof(_PyInterpreterFrame, prev_instr)`.
    const PREV_INSTR_OFFSET: usize = 56;
    /// `offsetof(PyFrameObject, f_frame)`: the interpreter frame behind a frame object.
    const F_FRAME_OFFSET: usize = 24;
    /// `offsetof(PyCodeObject, co_code_adaptive)`: where the bytecode starts.
    #[cfg(not(Py_3_12))]
    const BYTECODE_OFFSET: usize = 184;
    #[cfg(Py_3_12)]
    const BYTECODE_OFFSET: usize = 192;

    /// [`verify`] confirmed the offsets.
    static USABLE: AtomicBool = AtomicBool::new(false);

    pub fn usable() -> bool {
        USABLE.load(Ordering::Relaxed)
    }

    /// # Safety
    /// `base` must point to a live object with a pointer-sized field at `offset`.
    #[inline(always)]
    unsafe fn word(base: *mut u8, offset: usize) -> usize {
        // SAFETY: forwarded.
        unsafe { base.add(offset).cast::<usize>().read() }
    }

    /// The current interpreter frame, or null (none, or the layout was not confirmed).
    ///
    /// # Safety
    /// The GIL must be held.
    #[inline(always)]
    unsafe fn current() -> *mut u8 {
        if !USABLE.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the GIL is held, so the thread state is this thread's and alive, and so is
        // its C frame record while it runs Python; `verify` confirmed both offsets.
        unsafe {
            let ts = _PyThreadState_UncheckedGet().cast::<u8>();
            if ts.is_null() {
                return std::ptr::null_mut();
            }
            let cframe = word(ts, CFRAME_OFFSET) as *mut u8;
            if cframe.is_null() {
                return std::ptr::null_mut();
            }
            word(cframe, CURRENT_OFFSET) as *mut u8
        }
    }

    /// The current frame's last instruction's address, or 0 (no frame, or not confirmed).
    /// Inside the code object while it lives, so it names a code and an offset at once.
    ///
    /// # Safety
    /// The GIL must be held.
    #[inline(always)]
    pub unsafe fn current_instr_ptr() -> usize {
        // SAFETY: GIL held (caller); the current frame is live while we run.
        unsafe {
            let frame = current();
            if frame.is_null() {
                return 0;
            }
            word(frame, PREV_INSTR_OFFSET)
        }
    }

    /// Whether the current interpreter frame is the one behind the frame object `frame`
    /// (not an incomplete frame that frame objects skip).
    ///
    /// # Safety
    /// The GIL must be held and `frame` live.
    pub unsafe fn is_current(frame: *mut ffi::PyFrameObject) -> bool {
        // SAFETY: forwarded; the field lies inside the frame object.
        unsafe {
            let raw = current();
            !raw.is_null() && word(frame.cast(), F_FRAME_OFFSET) == raw as usize
        }
    }

    /// Enables [`current_instr_ptr`] if, on the importing frame, the thread state leads to the
    /// interpreter frame behind `PyEval_GetFrame`'s frame object, whose code is the frame's
    /// and whose last instruction lies at the frame's `f_lasti` in the code's bytecode.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn verify() {
        // SAFETY: GIL held; `PyEval_GetFrame` is borrowed and the code reference released;
        // each read is checked against the API before the next one goes further.
        unsafe {
            let ts = _PyThreadState_UncheckedGet().cast::<u8>();
            let frame = ffi::PyEval_GetFrame();
            if ts.is_null() || frame.is_null() {
                return;
            }
            let cframe = word(ts, CFRAME_OFFSET) as *mut u8;
            // Before reading through it: the C frame record is the thread state's root one or
            // a local of an evaluation loop further up this thread's stack; any other word
            // means the offset is wrong.
            let here = 0u8;
            let sp = std::ptr::addr_of!(here) as usize;
            let c = cframe as usize;
            let in_state = c >= ts as usize && c < ts as usize + 4096;
            let up_the_stack = c > sp && c - sp < 64 << 20;
            if cframe.is_null() || !(in_state || up_the_stack) {
                return;
            }
            let raw = word(cframe, CURRENT_OFFSET) as *mut u8;
            if raw.is_null() || word(frame.cast(), F_FRAME_OFFSET) != raw as usize {
                return;
            }
            let code = ffi::PyFrame_GetCode(frame).cast::<PyObject>();
            ffi::Py_DECREF(code);
            if word(raw, CODE_OFFSET) != code as usize {
                return;
            }
            let Ok(lasti) = usize::try_from(ffi::PyFrame_GetLasti(frame)) else {
                return;
            };
            if word(raw, PREV_INSTR_OFFSET) != code as usize + BYTECODE_OFFSET + lasti {
                return;
            }
            USABLE.store(true, Ordering::Relaxed);
        }
    }
}

/// The interned site of `frame` (whose code is `code`), or 0 if its file is one of
/// [`SKIPPED`].
///
/// # Safety
/// The GIL must be held, `frame` live and `code` its code object.
unsafe fn code_site(code: *mut PyObject, frame: *mut ffi::PyFrameObject) -> u32 {
    // SAFETY: forwarded.
    let key = (code as usize, unsafe { frame_position(frame) });
    let slot = front_index(key);
    // SAFETY: GIL held (caller); the closure only reads the array.
    let front = unsafe { FRONT.with(|f| f[slot]) };
    if front.0 == key.0 && front.1 == key.1 && key.0 != 0 {
        return front.2;
    }
    // SAFETY: GIL held (caller); the closure only reads the map.
    let hit = unsafe { SITE_CACHE.with(|c| c.as_ref().and_then(|c| c.get(&key).copied())) };
    if let Some(id) = hit {
        // SAFETY: GIL held (caller).
        unsafe { FRONT.with(|f| f[slot] = (key.0, key.1, id)) };
        return id;
    }
    // SAFETY: GIL held; `code` is live and `frame` its frame.
    let id = unsafe { intern_frame(code, frame, true) };
    // SAFETY: GIL held (caller); the closure only touches the map.
    let new = unsafe {
        SITE_CACHE.with(|c| {
            c.get_or_insert_with(SiteMap::default)
                .insert(key, id)
                .is_none()
        })
    };
    if new {
        // SAFETY: GIL held; the reference keeps the key's address from being reused.
        unsafe { ffi::Py_INCREF(code) };
    }
    id
}

/// Interns `frame`'s `(file, line, function)` (`code` is its code object); 0 if `skip_sync` and
/// the file is one of [`SKIPPED`]. The uncached path of every site look-up.
///
/// # Safety
/// The GIL must be held, `frame` live and `code` its code object.
unsafe fn intern_frame(
    code: *mut PyObject,
    frame: *mut ffi::PyFrameObject,
    skip_sync: bool,
) -> u32 {
    // SAFETY: GIL held (caller); `code` is live; attribute reads only, errors cleared.
    unsafe {
        let line = ffi::PyFrame_GetLineNumber(frame);
        let file = attr_string(code, c"co_filename").unwrap_or_default();
        if skip_sync && SKIPPED.iter().any(|s| file.contains(s)) {
            return 0;
        }
        let func = attr_string(code, c"co_qualname")
            .or_else(|| attr_string(code, c"co_name"))
            .unwrap_or_default();
        diag::intern_site(&file, u32::try_from(line).unwrap_or(0), &func).as_u32()
    }
}

/// `(code address, position)` -> raw site of that frame, the synchronisation modules included
/// (for stacks and lockdep's classes). Every code object in it is kept alive by one reference
/// taken when it was added.
static FRAME_SITES: GilCell<Option<SiteMap>> = GilCell(UnsafeCell::new(None));

/// The site of `frame`, whatever its file (0 if it cannot be named).
///
/// # Safety
/// The GIL must be held and `frame` live.
pub(crate) unsafe fn frame_site(frame: *mut ffi::PyFrameObject) -> u32 {
    // SAFETY: GIL held (caller); the code reference is released before returning, or kept
    // (once per key) to pin the address used as a key; the closures only touch the map.
    unsafe {
        let code = ffi::PyFrame_GetCode(frame).cast::<PyObject>();
        let key = (code as usize, frame_position(frame));
        let hit = FRAME_SITES.with(|m| m.as_ref().and_then(|m| m.get(&key).copied()));
        if let Some(id) = hit {
            ffi::Py_DECREF(code);
            return id;
        }
        let id = intern_frame(code, frame, false);
        let new = FRAME_SITES.with(|m| {
            m.get_or_insert_with(SiteMap::default)
                .insert(key, id)
                .is_none()
        });
        if !new {
            ffi::Py_DECREF(code);
        }
        id
    }
}

/// The calling Python stack, innermost frame first, as interned sites (at most `max`).
///
/// # Safety
/// The GIL must be held.
pub(crate) unsafe fn stack_sites(max: usize) -> Vec<diag::SiteId> {
    let mut out = Vec::with_capacity(max.min(16));
    // SAFETY: GIL held (caller). `PyEval_GetFrame` is borrowed; every frame from
    // `PyFrame_GetBack` is a new reference, released once the next one is taken.
    unsafe {
        let mut frame = ffi::PyEval_GetFrame();
        let mut owned: *mut ffi::PyFrameObject = std::ptr::null_mut();
        while !frame.is_null() && out.len() < max {
            if let Some(site) = diag::SiteId::from_u32(frame_site(frame)) {
                out.push(site);
            }
            let back = ffi::PyFrame_GetBack(frame);
            if !owned.is_null() {
                ffi::Py_DECREF(owned.cast());
            }
            owned = back;
            frame = back;
        }
        if !owned.is_null() {
            ffi::Py_DECREF(owned.cast());
        }
    }
    out
}

/// `obj.name` as a Rust string, or `None` (any error is cleared).
///
/// # Safety
/// The GIL must be held and `obj` live.
pub(crate) unsafe fn attr_string(obj: *mut PyObject, name: &std::ffi::CStr) -> Option<String> {
    // SAFETY: GIL held (caller); the attribute reference is released before returning.
    unsafe {
        let v = ffi::PyObject_GetAttrString(obj, name.as_ptr());
        if v.is_null() {
            ffi::PyErr_Clear();
            return None;
        }
        let out = str_of(v);
        ffi::Py_DECREF(v);
        out
    }
}

/// `v` as a Rust string if it is a `str`, else `None` (any error is cleared).
///
/// # Safety
/// The GIL must be held and `v` live.
pub(crate) unsafe fn str_of(v: *mut PyObject) -> Option<String> {
    // SAFETY: GIL held (caller); the UTF-8 buffer belongs to `v`, which outlives the copy.
    unsafe {
        let mut size: ffi::Py_ssize_t = 0;
        let p = if ffi::PyUnicode_Check(v) != 0 {
            ffi::PyUnicode_AsUTF8AndSize(v, &mut size)
        } else {
            std::ptr::null()
        };
        if p.is_null() {
            ffi::PyErr_Clear();
            None
        } else {
            let bytes = std::slice::from_raw_parts(p.cast::<u8>(), size as usize);
            Some(String::from_utf8_lossy(bytes).into_owned())
        }
    }
}

/// The calling thread's innermost interpreter frame, read from its thread state (3.13+ with the
/// GIL): `PyEval_GetFrame` would first give it a frame object, an allocation the first time
/// per call of the calling function. Only the cached sites are looked up this way; a miss goes
/// through the frame objects as before.
#[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
mod top_frame {
    use std::ffi::c_int;
    use std::sync::atomic::{AtomicBool, Ordering};

    use pyo3::ffi::{self, PyObject};

    /// CPython's `struct _PyInterpreterFrame`, only ever handled by address.
    #[repr(C)]
    pub struct InterpreterFrame {
        _private: [u8; 0],
    }

    extern "C" {
        fn PyThreadState_GetUnchecked() -> *mut ffi::PyThreadState;
        fn PyUnstable_InterpreterFrame_GetCode(frame: *mut InterpreterFrame) -> *mut PyObject;
        fn PyUnstable_InterpreterFrame_GetLasti(frame: *mut InterpreterFrame) -> c_int;
    }

    /// `offsetof(PyThreadState, current_frame)` on 3.13, 3.14 and 3.15 (default builds),
    /// checked against `PyEval_GetFrame` once by [`verify`] before it is ever used.
    const CURRENT_FRAME_OFFSET: usize = 72;

    /// `offsetof(_PyInterpreterFrame, previous)` on 3.13, 3.14 and 3.15, checked by [`verify`].
    const PREVIOUS_OFFSET: usize = 8;

    /// `offsetof(_PyInterpreterFrame, instr_ptr)` on 3.13, 3.14 and 3.15, checked by [`verify`].
    const INSTR_PTR_OFFSET: usize = 56;

    /// [`verify`] found the offset right.
    static USABLE: AtomicBool = AtomicBool::new(false);

    /// [`verify`] found [`INSTR_PTR_OFFSET`] right: [`instr_ptr`] may be used.
    static IP_READABLE: AtomicBool = AtomicBool::new(false);

    /// [`USABLE`] and [`IP_READABLE`] both: [`current_instr_ptr`]'s one test.
    static CURRENT_IP: AtomicBool = AtomicBool::new(false);

    /// [`verify`] found [`PREVIOUS_OFFSET`] right too: [`key_of`] may walk to callers.
    static WALKABLE: AtomicBool = AtomicBool::new(false);

    pub fn usable() -> bool {
        USABLE.load(Ordering::Relaxed)
    }

    /// The current frame's instruction address, or 0 (no frame, or the layout was not
    /// confirmed). While the frame's code object lives, the address names one instruction of
    /// it, so it identifies a call site as `(code, offset)` does, in a few loads.
    ///
    /// # Safety
    /// The GIL must be held.
    #[inline(always)]
    pub unsafe fn current_instr_ptr() -> usize {
        // (`current` and `instr_ptr` in one, with one test of the layout flags.)
        if !CURRENT_IP.load(Ordering::Relaxed) {
            return 0;
        }
        // SAFETY: GIL held (caller), so the thread state is this thread's and its current
        // frame live while we run; `verify` confirmed the offsets (`CURRENT_IP`).
        unsafe {
            let ts = PyThreadState_GetUnchecked();
            if ts.is_null() {
                return 0;
            }
            let frame = ts
                .cast::<u8>()
                .add(CURRENT_FRAME_OFFSET)
                .cast::<*mut u8>()
                .read();
            if frame.is_null() || frame.cast::<usize>().read() & !7 == 0 {
                return 0;
            }
            frame.add(INSTR_PTR_OFFSET).cast::<usize>().read()
        }
    }

    /// The current interpreter frame, or null (none, or the layout was not confirmed).
    ///
    /// # Safety
    /// The GIL must be held.
    #[inline]
    unsafe fn current() -> *mut InterpreterFrame {
        if !USABLE.load(Ordering::Relaxed) {
            return std::ptr::null_mut();
        }
        // SAFETY: the GIL is held, so the thread state is this thread's and stays alive;
        // `verify` confirmed that the word at the offset is `current_frame`.
        unsafe {
            let ts = PyThreadState_GetUnchecked();
            if ts.is_null() {
                return std::ptr::null_mut();
            }
            ts.cast::<u8>()
                .add(CURRENT_FRAME_OFFSET)
                .cast::<*mut InterpreterFrame>()
                .read()
        }
    }

    /// The calling thread's current interpreter frame (null if none or not usable).
    ///
    /// # Safety
    /// The GIL must be held.
    #[inline]
    pub unsafe fn top() -> *mut InterpreterFrame {
        // SAFETY: forwarded.
        unsafe { current() }
    }

    /// The frame that called `frame` (maybe an entry frame of the C stack, whose key is
    /// `None`; null at the bottom of the stack), or `None` if walking was not confirmed by
    /// [`verify`].
    ///
    /// # Safety
    /// The GIL must be held and `frame` a live frame of the calling thread.
    #[inline]
    pub unsafe fn previous(frame: *mut InterpreterFrame) -> Option<*mut InterpreterFrame> {
        if !WALKABLE.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: `frame` is live (caller) and `verify` confirmed the offset of `previous`.
        Some(unsafe {
            frame
                .cast::<u8>()
                .add(PREVIOUS_OFFSET)
                .cast::<*mut InterpreterFrame>()
                .read()
        })
    }

    /// `(code object address, instruction offset)` of `frame`, the key the site cache uses
    /// for frame objects; `None` for a frame without a code object (an entry frame).
    ///
    /// # Safety
    /// The GIL must be held and `frame` a live frame of the calling thread.
    #[inline]
    pub unsafe fn key_of(frame: *mut InterpreterFrame) -> Option<(usize, c_int)> {
        // SAFETY: GIL held; the frame is live (caller); `verify` confirmed that its first word
        // is `f_executable` (an entry frame's may be empty: no code to ask for); the code
        // reference is returned at once, the frame keeps the code alive.
        unsafe {
            if frame.cast::<usize>().read() & !7 == 0 {
                return None;
            }
            let code = PyUnstable_InterpreterFrame_GetCode(frame);
            if code.is_null() {
                return None;
            }
            let is_code = ffi::Py_TYPE(code) == std::ptr::addr_of_mut!(ffi::PyCode_Type);
            ffi::Py_DECREF(code);
            if !is_code {
                return None;
            }
            Some((code as usize, PyUnstable_InterpreterFrame_GetLasti(frame)))
        }
    }

    /// The address of `frame`'s current instruction, inside its code object (so it names the
    /// code and the position at once while the code lives), or `None` if not confirmed by
    /// [`verify`] or the frame has no code.
    ///
    /// # Safety
    /// The GIL must be held and `frame` a live frame of the calling thread.
    #[inline]
    pub unsafe fn instr_ptr(frame: *mut InterpreterFrame) -> Option<usize> {
        if !IP_READABLE.load(Ordering::Relaxed) {
            return None;
        }
        // SAFETY: `frame` is live (caller); `verify` confirmed both offsets.
        unsafe {
            if frame.cast::<usize>().read() & !7 == 0 {
                return None;
            }
            Some(
                frame
                    .cast::<u8>()
                    .add(INSTR_PTR_OFFSET)
                    .cast::<usize>()
                    .read(),
            )
        }
    }

    /// `instr_ptr - code - lasti` for `frame`: the offset of the bytecode inside the code
    /// object if [`INSTR_PTR_OFFSET`] is right, the same for every frame.
    ///
    /// # Safety
    /// The GIL must be held and `frame` live, with code.
    unsafe fn bytecode_offset(frame: *mut InterpreterFrame) -> Option<usize> {
        // SAFETY: forwarded; the code reference is released at once (the frame keeps it).
        unsafe {
            let code = PyUnstable_InterpreterFrame_GetCode(frame);
            if code.is_null() {
                return None;
            }
            ffi::Py_DECREF(code);
            let lasti = usize::try_from(PyUnstable_InterpreterFrame_GetLasti(frame)).ok()?;
            let ip = frame
                .cast::<u8>()
                .add(INSTR_PTR_OFFSET)
                .cast::<usize>()
                .read();
            ip.checked_sub(code as usize)?.checked_sub(lasti)
        }
    }

    /// `offsetof(PyFrameObject, f_frame)` on 3.13, 3.14 and 3.15 default builds.
    const F_FRAME_OFFSET: usize = 24;

    /// The interpreter frame a frame object points to (its `f_frame`).
    ///
    /// # Safety
    /// `frame` must be a live frame object.
    unsafe fn behind(frame: *mut ffi::PyFrameObject) -> *mut InterpreterFrame {
        // SAFETY: the field lies inside the live object (its fourth word).
        unsafe {
            frame
                .cast::<u8>()
                .add(F_FRAME_OFFSET)
                .cast::<*mut InterpreterFrame>()
                .read()
        }
    }

    /// Whether `raw` is the interpreter frame behind the frame object `frame`: same code, same
    /// instruction.
    ///
    /// # Safety
    /// The GIL must be held, `raw` and `frame` live.
    unsafe fn same(raw: *mut InterpreterFrame, frame: *mut ffi::PyFrameObject) -> bool {
        // SAFETY: forwarded; the code references are released.
        unsafe {
            let code = ffi::PyFrame_GetCode(frame).cast::<PyObject>();
            let raw_code = PyUnstable_InterpreterFrame_GetCode(raw);
            let same = !raw_code.is_null()
                && raw_code == code
                && PyUnstable_InterpreterFrame_GetLasti(raw) == ffi::PyFrame_GetLasti(frame);
            ffi::Py_DECREF(code);
            if !raw_code.is_null() {
                ffi::Py_DECREF(raw_code);
            }
            same
        }
    }

    /// Enables [`key`] if the thread state's word at the offset is the frame `PyEval_GetFrame`
    /// reports (same code, same instruction), else leaves it off. Called once, from module
    /// initialisation, which runs in the importing Python frame.
    ///
    /// # Safety
    /// The GIL must be held.
    pub unsafe fn verify() {
        // SAFETY: GIL held; `PyEval_GetFrame` is borrowed; the code references are released.
        unsafe {
            let ts = PyThreadState_GetUnchecked();
            let frame = ffi::PyEval_GetFrame();
            if ts.is_null() || frame.is_null() {
                return;
            }
            let raw = ts
                .cast::<u8>()
                .add(CURRENT_FRAME_OFFSET)
                .cast::<*mut InterpreterFrame>()
                .read();
            // Before reading through it: the frame object's own pointer to its interpreter
            // frame must be that word.
            if raw.is_null() || behind(frame) != raw || !same(raw, frame) {
                return;
            }
            // `f_executable` first (a tagged reference from 3.14 on: the low bits are flags).
            let code = ffi::PyFrame_GetCode(frame);
            let first = raw.cast::<usize>().read();
            ffi::Py_DECREF(code.cast());
            if first & !7 != code as usize {
                return;
            }
            USABLE.store(true, Ordering::Relaxed);
            // The caller's frame (module initialisation runs inside the import machinery's
            // Python frames, called from Python): confirmed only if both agree.
            let back = ffi::PyFrame_GetBack(frame);
            if back.is_null() {
                return;
            }
            let raw_back = raw
                .cast::<u8>()
                .add(PREVIOUS_OFFSET)
                .cast::<*mut InterpreterFrame>()
                .read();
            let walkable = !raw_back.is_null() && behind(back) == raw_back && same(raw_back, back);
            ffi::Py_DECREF(back.cast());
            WALKABLE.store(walkable, Ordering::Relaxed);
            // Two frames of different code objects, at different positions, put their
            // bytecode at the same small offset into the code object: the instruction pointer.
            if walkable {
                let (a, b) = (bytecode_offset(raw), bytecode_offset(raw_back));
                let ok = matches!((a, b), (Some(a), Some(b)) if a == b && a > 0 && a < 1024);
                IP_READABLE.store(ok, Ordering::Relaxed);
                CURRENT_IP.store(ok, Ordering::Relaxed);
            }
        }
    }

    /// Whether [`previous`] and [`instr_ptr`] are enabled. For the tests.
    pub fn walkable() -> bool {
        WALKABLE.load(Ordering::Relaxed) && IP_READABLE.load(Ordering::Relaxed)
    }
}

/// Whether sites are looked up by direct frame reads once the layout check at import passed:
/// the interpreter frames walked to callers on 3.13+ (`top_frame`), the current instruction
/// address on 3.11 and 3.12 (`cframe_top`), frame objects' fields before (`object_frame`).
/// False on free-threaded builds. For the tests.
#[pyfunction]
fn fast_frames() -> bool {
    #[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
    {
        top_frame::usable() && top_frame::walkable()
    }
    #[cfg(all(Py_3_11, not(Py_3_13), not(Py_GIL_DISABLED)))]
    {
        cframe_top::usable()
    }
    #[cfg(not(Py_3_11))]
    {
        object_frame::usable()
    }
    #[cfg(all(Py_3_11, Py_GIL_DISABLED))]
    {
        false
    }
}

/// Checks the fast current-frame read (3.13+) and hooks the thread cache of [`cached_self`]
/// to thread ends; the module's initialisation calls it.
///
/// # Safety
/// The GIL must be held.
pub unsafe fn init_frames() {
    diag::on_thread_end(forget_thread);
    #[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
    // SAFETY: forwarded.
    unsafe {
        top_frame::verify()
    };
    #[cfg(all(Py_3_11, not(Py_3_13), not(Py_GIL_DISABLED)))]
    // SAFETY: forwarded.
    unsafe {
        cframe_top::verify()
    };
    #[cfg(not(Py_3_11))]
    // SAFETY: forwarded.
    unsafe {
        object_frame::verify()
    };
}

/// The cached user site of the calling code, without frame objects (3.13+): the interpreter
/// frames are walked from the innermost while the cache knows each (frames of the skipped
/// modules are cached as 0). `Some(0)` when every frame down to the bottom of the stack is
/// one to skip (a thread that runs only the synchronisation modules' code); `None` at the
/// first frame the cache does not know, where the caller walks frame objects instead and
/// fills the cache.
///
/// # Safety
/// The GIL must be held.
#[inline]
unsafe fn cached_top_site() -> Option<u32> {
    #[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
    // SAFETY: GIL held (caller); every frame walked is live (the calling thread's stack, which
    // does not change while we run); the closures only read or fill the caches.
    unsafe {
        let mut frame = top_frame::top();
        if frame.is_null() {
            return None;
        }
        for depth in 0..MAX_FRAMES {
            // The front first, by instruction address (no calls); then the map, by code and
            // position, whose answer the front keeps under the address. (An address inside a
            // code object the map holds a reference to: it names one code and position.)
            let ip = top_frame::instr_ptr(frame);
            let ip_key = ip.map(|ip| (ip, IP_KEY));
            let ip_slot = ip_key.map(front_index);
            let mut id = None;
            if let (Some(key), Some(slot)) = (ip_key, ip_slot) {
                let front = FRONT.with(|f| f[slot]);
                if front.0 == key.0 && front.1 == key.1 {
                    id = Some(front.2);
                }
            }
            if id.is_none() {
                if let Some(key) = top_frame::key_of(frame) {
                    let slot = front_index(key);
                    let front = FRONT.with(|f| f[slot]);
                    let found = if front.0 == key.0 && front.1 == key.1 && key.0 != 0 {
                        front.2
                    } else {
                        let hit =
                            SITE_CACHE.with(|c| c.as_ref().and_then(|c| c.get(&key).copied()));
                        let found = hit?;
                        FRONT.with(|f| f[slot] = (key.0, key.1, found));
                        found
                    };
                    if let (Some(key), Some(slot)) = (ip_key, ip_slot) {
                        FRONT.with(|f| f[slot] = (key.0, key.1, found));
                    }
                    id = Some(found);
                }
            }
            if let Some(id) = id {
                if id != 0 {
                    if let (0, Some(ip)) = (depth, ip) {
                        // The calling frame itself: next time `ip_front_hit` answers.
                        ip_front_put(ip, id);
                    }
                    return Some(id);
                }
            }
            // A frame of a synchronisation module (or an entry frame of the C stack, which
            // frame objects skip too): its caller names the site.
            frame = top_frame::previous(frame)?;
            if frame.is_null() {
                return Some(0);
            }
        }
    }
    #[cfg(not(Py_3_11))]
    // SAFETY: GIL held (caller); every frame walked is a live frame object of the calling
    // thread's stack (borrowed: the stack does not change while we run); the closures only
    // read or fill the caches.
    unsafe {
        if !object_frame::usable() {
            return None;
        }
        let mut frame = ffi::PyEval_GetFrame();
        for _ in 0..MAX_FRAMES {
            if frame.is_null() {
                return Some(0);
            }
            let key = object_frame::key(frame);
            let slot = front_index(key);
            let front = FRONT.with(|f| f[slot]);
            let id = if front.0 == key.0 && front.1 == key.1 && key.0 != 0 {
                front.2
            } else {
                let found = SITE_CACHE.with(|c| c.as_ref().and_then(|c| c.get(&key).copied()))?;
                FRONT.with(|f| f[slot] = (key.0, key.1, found));
                found
            };
            if id != 0 {
                return Some(id);
            }
            frame = object_frame::back(frame);
        }
    }
    None
}

/// Teaches the cache the interpreter frames that frame objects skip (the shim frame through
/// which the interpreter runs a Python `__init__`, say), so that [`cached_top_site`] can
/// walk past them: walks the interpreter frames from `raw` to the one whose key is `key` (the
/// next frame object's), caching every frame with code on the way as one to skip, and returns
/// that frame's caller (null when the two walks part: nothing more is learnt).
///
/// # Safety
/// The GIL must be held and `raw` null or a live frame of the calling thread.
#[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
unsafe fn learn_skipped(
    mut raw: *mut top_frame::InterpreterFrame,
    key: (usize, c_int),
) -> *mut top_frame::InterpreterFrame {
    let mut skipped: [(usize, c_int); 4] = [(0, 0); 4];
    let mut n = 0;
    // SAFETY: GIL held (caller); frames of the calling thread's stack are live while we run;
    // the closure only touches the map.
    unsafe {
        while !raw.is_null() {
            match top_frame::key_of(raw) {
                Some(k) if k == key => {
                    for &(code, position) in &skipped[..n] {
                        let new = SITE_CACHE.with(|c| {
                            let map = c.get_or_insert_with(SiteMap::default);
                            match map.entry((code, position)) {
                                std::collections::hash_map::Entry::Occupied(_) => false,
                                std::collections::hash_map::Entry::Vacant(v) => {
                                    v.insert(0);
                                    true
                                }
                            }
                        });
                        if new {
                            // The key's address stays reserved while it is a key.
                            ffi::Py_INCREF(code as *mut PyObject);
                        }
                    }
                    return top_frame::previous(raw).unwrap_or(std::ptr::null_mut());
                }
                Some(k) => {
                    if n == skipped.len() {
                        return std::ptr::null_mut();
                    }
                    skipped[n] = k;
                    n += 1;
                }
                None => {}
            }
            raw = match top_frame::previous(raw) {
                Some(p) => p,
                None => return std::ptr::null_mut(),
            };
        }
    }
    std::ptr::null_mut()
}

/// The site of the calling Python code: the first frame outside [`SKIPPED`] modules, as a raw
/// site id (0 = unknown). Never raises.
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn caller_site() -> u32 {
    if COMPILED_OUT {
        return 0;
    }
    // SAFETY: GIL held (caller).
    let hit = unsafe { ip_front_hit() };
    if hit != 0 {
        return hit;
    }
    // SAFETY: GIL held (caller).
    unsafe { caller_site_slow() }
}

/// The current frame's instruction address (0 if unknown): the key of [`IP_FRONT`].
#[cfg(all(Py_3_11, not(Py_3_13), not(Py_GIL_DISABLED)))]
use cframe_top::current_instr_ptr;
#[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
use top_frame::current_instr_ptr;

/// The site cached for the current instruction (3.11+): a few loads, kept out of the larger
/// [`caller_site_slow`] so that a hit pays no register saves. 0 if not cached.
///
/// # Safety
/// The GIL must be held.
#[cfg(all(Py_3_11, not(Py_GIL_DISABLED)))]
#[inline(always)]
unsafe fn ip_front_hit() -> u32 {
    // SAFETY: GIL held (caller).
    unsafe {
        let ip = current_instr_ptr();
        if ip == 0 {
            return 0;
        }
        ip_front_get(ip)
    }
}

/// [`ip_front_hit`] before 3.11: the current frame object's `(f_code, f_lasti)` in [`FRONT`].
///
/// # Safety
/// The GIL must be held.
#[cfg(not(Py_3_11))]
#[inline(always)]
unsafe fn ip_front_hit() -> u32 {
    if !object_frame::usable() {
        return 0;
    }
    // SAFETY: GIL held (caller); the frame is borrowed and live while we run; the closure
    // only reads the array.
    unsafe {
        let frame = ffi::PyEval_GetFrame();
        if frame.is_null() {
            return 0;
        }
        let key = object_frame::key(frame);
        let e = FRONT.with(|f| f[front_index(key)]);
        if e.0 == key.0 && e.1 == key.1 && key.0 != 0 {
            e.2
        } else {
            0
        }
    }
}

#[cfg(all(Py_3_11, Py_GIL_DISABLED))]
#[inline(always)]
unsafe fn ip_front_hit() -> u32 {
    0
}

/// [`caller_site`] past the instruction cache: the other caches, then the frame walk.
///
/// # Safety
/// The GIL must be held.
#[inline(never)]
unsafe fn caller_site_slow() -> u32 {
    // SAFETY: GIL held (caller).
    if let Some(cached) = unsafe { cached_top_site() } {
        return cached;
    }
    // SAFETY: GIL held (caller). `PyEval_GetFrame` is borrowed; every frame from
    // `PyFrame_GetBack` and every code object is a new reference released below.
    unsafe {
        let mut frame = ffi::PyEval_GetFrame();
        let mut owned: *mut ffi::PyFrameObject = std::ptr::null_mut();
        let mut site = 0;
        #[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
        let mut raw = top_frame::top();
        // 3.11 and 3.12: the current instruction, which [`ip_front_hit`] will know by its
        // address if the calling frame names the site (and is the frame object's: an
        // incomplete frame has none).
        #[cfg(all(Py_3_11, not(Py_3_13), not(Py_GIL_DISABLED)))]
        let ip = if !frame.is_null() && cframe_top::is_current(frame) {
            current_instr_ptr()
        } else {
            0
        };
        for _depth in 0..MAX_FRAMES {
            if frame.is_null() {
                break;
            }
            let code = ffi::PyFrame_GetCode(frame);
            #[cfg(all(Py_3_13, not(Py_GIL_DISABLED)))]
            {
                raw = learn_skipped(raw, (code as usize, frame_position(frame)));
            }
            let id = code_site(code.cast(), frame);
            ffi::Py_DECREF(code.cast());
            if id != 0 {
                site = id;
                // `code_site` keeps the code object (so its bytecode address) alive.
                #[cfg(all(Py_3_11, not(Py_3_13), not(Py_GIL_DISABLED)))]
                if _depth == 0 && ip != 0 {
                    ip_front_put(ip, id);
                }
                break;
            }
            let back = ffi::PyFrame_GetBack(frame);
            if !owned.is_null() {
                ffi::Py_DECREF(owned.cast());
            }
            owned = back;
            frame = back;
        }
        if !owned.is_null() {
            ffi::Py_DECREF(owned.cast());
        }
        site
    }
}

// ---------------------------------------------------------------------------------------------
// Holders and waits (the lock types call these)

/// Some per-acquire hook is on: diagnostic mode ([`HELD`]) or lock-order checking
/// (`crate::lockdep`). The one static the lock types' fast paths read.
static DIAGNOSTIC: AtomicBool = AtomicBool::new(false);

/// Diagnostic mode (per-acquire sites and times), mirrored from `diag::track_held`.
static HELD: AtomicBool = AtomicBool::new(false);

/// Whether the acquire and release paths must call the hooked functions below.
#[inline(always)]
pub fn hooked() -> bool {
    !COMPILED_OUT && DIAGNOSTIC.load(Ordering::Relaxed)
}

/// Recomputes [`DIAGNOSTIC`] from the hooks that are on. The GIL must be held.
pub fn refresh_hooks() {
    let on = HELD.load(Ordering::Relaxed) || crate::lockdep::on();
    DIAGNOSTIC.store(on, Ordering::Relaxed);
    // A hit in the thread cache stands for "no hook on": the next release looks again. Both
    // caches, so that the next miss refills the first one once hooks are off again (a hit in
    // the second would keep every later acquire off the fast path).
    forget_thread();
}

thread_local! {
    /// The calling thread's packed registry slot (0: not registered yet). A `const`
    /// thread-local without destructor: one load, no lazy-init check, on the acquire path.
    static PACKED: Cell<u32> = const { Cell::new(0) };
}

/// The calling thread's packed slot, registering it on first use (0 if it cannot be).
#[inline(always)]
pub fn my_packed() -> u32 {
    let p = PACKED.with(Cell::get);
    if p != 0 {
        p
    } else {
        register_packed()
    }
}

#[cold]
fn register_packed() -> u32 {
    let p = diag::register_current_thread().map_or(0, ThreadSlot::packed);
    PACKED.with(|c| c.set(p));
    p
}

/// The thread that last asked [`cached_self`] while no per-acquire hook was on: its thread
/// pointer (0: none) and its packed slot. Written under the GIL; the key is also cleared
/// by [`forget_thread`] as a registered thread ends (a new thread may reuse its thread pointer),
/// hence atomics (relaxed: plain loads and stores).
static SELF_KEY: AtomicUsize = AtomicUsize::new(0);
static SELF_PACKED: AtomicU32 = AtomicU32::new(0);

/// The same for [`my_packed_gil`] whatever the hooks: filled on every miss, so that diagnostic
/// mode's slow paths do not read the thread-local either. Cleared with [`SELF_KEY`] as threads
/// end.
static ANY_KEY: AtomicUsize = AtomicUsize::new(0);
static ANY_PACKED: AtomicU32 = AtomicU32::new(0);
/// And that thread's held list (`diag::OwnHeld::to_bits`, 0: none), for diagnostic mode.
static ANY_HELD: AtomicUsize = AtomicUsize::new(0);

/// [`ANY_KEY`] again, or 0, when diagnostic mode is the only per-acquire hook on (no lock-order
/// checking) and the thread has a held list: [`held_only`]'s cache, which lets the lock types
/// record an uncontended acquire or release with one check. Written whenever [`ANY_KEY`] is
/// and cleared with it, so that while it is a thread's, [`ANY_PACKED`] and [`ANY_HELD`] are
/// that thread's too.
static HELD_KEY: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's thread pointer (`%fs:0`): see `rthread_core::thread::thread_pointer`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use rthread_core::thread::thread_pointer;

/// The calling thread's packed slot if it is the cached one, which also means that no
/// per-acquire hook is on ([`refresh_hooks`] empties the cache and [`my_packed_gil`] does not
/// fill it while one is). Two loads and two compares: with the GIL one thread runs Python at a
/// time, so a run of acquires and releases on one thread finds itself here. With the
/// bookkeeping compiled out (`no-diag`), always `Some(0)`: no hook can be on and nothing is
/// recorded.
///
/// # Safety
/// The GIL must be held.
#[inline(always)]
pub unsafe fn cached_self() -> Option<u32> {
    if COMPILED_OUT {
        return Some(0);
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if SELF_KEY.load(Ordering::Relaxed) == thread_pointer() {
        return Some(SELF_PACKED.load(Ordering::Relaxed));
    }
    // (Elsewhere there is no cheap thread pointer and the cache stays empty.)
    None
}

/// [`my_packed`] for the lock types' paths: the cached slot, else the thread-local one, which
/// is then cached for this thread unless a per-acquire hook is on.
///
/// # Safety
/// The GIL must be held.
#[inline(always)]
unsafe fn my_packed_gil() -> u32 {
    // SAFETY: forwarded.
    if let Some(packed) = unsafe { cached_self() } {
        return packed;
    }
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if !COMPILED_OUT && ANY_KEY.load(Ordering::Relaxed) == thread_pointer() {
        return ANY_PACKED.load(Ordering::Relaxed);
    }
    // SAFETY: forwarded.
    unsafe { refresh_self() }
}

/// [`my_packed_gil`]'s miss.
///
/// # Safety
/// The GIL must be held.
#[cold]
#[inline(never)]
unsafe fn refresh_self() -> u32 {
    let packed = my_packed();
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if packed != 0 {
        // The GIL orders these against every reader (they all hold it); a thread ending now
        // clears the keys only for its own, other, thread pointer. (A thread pointer is never
        // 0, the empty key.)
        ANY_PACKED.store(packed, Ordering::Relaxed);
        let held = diag::OwnHeld::of(packed).map_or(0, diag::OwnHeld::to_bits);
        ANY_HELD.store(held, Ordering::Relaxed);
        ANY_KEY.store(thread_pointer(), Ordering::Relaxed);
        let hooked = hooked();
        if !hooked {
            SELF_PACKED.store(packed, Ordering::Relaxed);
            SELF_KEY.store(thread_pointer(), Ordering::Relaxed);
        }
        let held_only =
            hooked && held != 0 && HELD.load(Ordering::Relaxed) && !crate::lockdep::on();
        HELD_KEY.store(
            if held_only { thread_pointer() } else { 0 },
            Ordering::Relaxed,
        );
    }
    packed
}

/// The held list of `me`, the calling thread's packed slot from [`my_packed_gil`]: the one
/// kept with the thread cache (no registry look-up), else looked up.
///
/// # Safety
/// The GIL must be held (the cache's words are only consistent for its holders).
#[inline(always)]
unsafe fn my_held_gil(me: u32) -> Option<diag::OwnHeld> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if !COMPILED_OUT && ANY_KEY.load(Ordering::Relaxed) == thread_pointer() {
        let bits = ANY_HELD.load(Ordering::Relaxed);
        if bits != 0 {
            // SAFETY: `refresh_self` stored it from `to_bits`, for this thread's registration,
            // which lives while the key is this thread's (`forget_thread` clears the key as a
            // registered thread ends).
            return Some(unsafe { diag::OwnHeld::from_bits(bits) });
        }
    }
    diag::OwnHeld::of(me)
}

/// Empties the thread caches ([`cached_self`]'s, [`my_packed_gil`]'s and [`held_only`]'s): a
/// registered thread ended, or the hooks changed.
fn forget_thread() {
    SELF_KEY.store(0, Ordering::Relaxed);
    ANY_KEY.store(0, Ordering::Relaxed);
    HELD_KEY.store(0, Ordering::Relaxed);
}

/// The calling thread in diagnostic mode with no other per-acquire hook on, from
/// [`held_only`]: what an uncontended acquire or release records, in one place.
#[derive(Clone, Copy)]
pub struct HeldOnly {
    me: u32,
    held: diag::OwnHeld,
}

/// The calling thread as [`HeldOnly`] if it is the cached one, which also means that
/// diagnostic mode is on and lock-order checking off ([`refresh_hooks`] empties the cache).
/// Two loads and a compare; `None` sends the caller to the general hooked path.
///
/// # Safety
/// The GIL must be held (the cache's words are only consistent for its holders).
#[inline(always)]
pub unsafe fn held_only() -> Option<HeldOnly> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if !COMPILED_OUT && HELD_KEY.load(Ordering::Relaxed) == thread_pointer() {
        // `ANY_*` are this thread's while `HELD_KEY` is (see there).
        return Some(HeldOnly {
            me: ANY_PACKED.load(Ordering::Relaxed),
            // SAFETY: `refresh_self` stored it from `to_bits` (never 0 when it set
            // `HELD_KEY`), for this thread's registration, which lives while the key is this
            // thread's (`forget_thread` clears the keys as a registered thread ends).
            held: unsafe { diag::OwnHeld::from_bits(ANY_HELD.load(Ordering::Relaxed)) },
        });
    }
    None
}

impl HeldOnly {
    /// The calling thread acquired a plain lock (`holder` its holder word): records it as the
    /// holder and lists the lock with its acquire site.
    ///
    /// # Safety
    /// The GIL must be held (the site is read from the Python frame).
    #[inline(always)]
    pub unsafe fn acquired(self, holder: &Holder, id: LockId) {
        holder.set_slot_packed(self.me);
        // SAFETY: forwarded.
        unsafe { self.list(id) };
    }

    /// Lists a lock the calling thread just acquired with its acquire site (an `RLock`'s first
    /// acquire records only this).
    ///
    /// # Safety
    /// The GIL must be held.
    #[inline(always)]
    pub unsafe fn list(self, id: LockId) {
        // SAFETY: forwarded.
        let site = unsafe { caller_site() };
        self.held.push(id, diag::SiteId::from_u32(site));
    }

    /// The calling thread is about to release a plain lock: if it is the recorded holder (not
    /// a signal), forgets it and unlists the lock, and returns true. False changes nothing:
    /// the general path ([`releasing_slow`]) tells the other cases apart.
    #[inline(always)]
    pub fn releasing(self, holder: &Holder, id: LockId) -> bool {
        if holder.release_if_holder(self.me) {
            self.held.pop(id);
            true
        } else {
            false
        }
    }

    /// An `RLock`'s last release by its owner, the calling thread: unlists it.
    #[inline(always)]
    pub fn rlock_released(self, id: LockId) {
        self.held.pop(id);
    }
}

/// Records `me`, what [`cached_self`] returned, as a plain lock's holder (call right after
/// acquiring).
#[inline(always)]
pub fn set_holder_to(holder: &Holder, me: u32) {
    if COMPILED_OUT {
        return;
    }
    holder.set_slot_packed(me);
}

/// Records the calling thread as a plain lock's holder (call right after acquiring), when
/// [`hooked`] was false.
///
/// # Safety
/// The GIL must be held.
#[inline(always)]
pub unsafe fn set_holder(holder: &Holder) {
    if COMPILED_OUT {
        return;
    }
    // SAFETY: forwarded.
    holder.set_slot_packed(unsafe { my_packed_gil() });
}

/// Records the calling thread as a plain lock's holder, and what the hooks that are on
/// record (call right after acquiring, when [`hooked`] was true).
///
/// # Safety
/// The GIL must be held (diagnostic mode reads the Python frame).
#[inline]
pub unsafe fn acquired(holder: &Holder, id: LockId) {
    if COMPILED_OUT {
        return;
    }
    // SAFETY: forwarded.
    let me = unsafe { my_packed_gil() };
    holder.set_slot_packed(me);
    // (`me` is 0 if the thread could not be registered: nothing to list.)
    if HELD.load(Ordering::Relaxed) && me != 0 {
        // SAFETY: forwarded.
        unsafe { push_held(me, id) };
    }
}

/// Diagnostic mode: adds a held lock with its acquire site to the held list of `me`, the
/// calling thread's packed slot.
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn push_held(me: u32, id: LockId) {
    // SAFETY: forwarded.
    if let Some(held) = unsafe { my_held_gil(me) } {
        // SAFETY: forwarded.
        let site = unsafe { caller_site() };
        held.push(id, diag::SiteId::from_u32(site));
    }
}

/// Forgets a plain lock's holder (call just before releasing it) past the common case, which
/// the lock's release path handles inline (the thread cache hit, then
/// `Holder::release_if_holder`): a signal, a release by another thread, a hook on.
///
/// # Safety
/// The GIL must be held.
#[cold]
#[inline(never)]
pub unsafe fn releasing_slow(holder: &Holder, id: LockId) {
    if COMPILED_OUT {
        return;
    }
    // SAFETY: forwarded. (An unregistered thread gets registered here; either way it is not
    // the holder.)
    let me = unsafe { my_packed_gil() };
    let outcome = holder.release_packed(me);
    if DIAGNOSTIC.load(Ordering::Relaxed) {
        // SAFETY: the GIL is held (caller).
        unsafe { released_hooked(outcome, me, id, true) };
    }
}

/// [`releasing_slow`] from a thread that may not hold the GIL (thread-exit sentinels, before 3.13).
#[cfg(not(Py_3_13))]
pub fn releasing_without_gil(holder: &Holder, id: LockId) {
    if COMPILED_OUT {
        return;
    }
    let me = PACKED.with(Cell::get);
    let outcome = holder.release_packed(me);
    if DIAGNOSTIC.load(Ordering::Relaxed) {
        // SAFETY: `gil` false: nothing that needs the GIL.
        unsafe { released_hooked(outcome, me, id, false) };
    }
}

/// The hooks' part of a release by `me`, the calling thread's packed slot. Inline:
/// diagnostic mode releases every lock through [`releasing_slow`].
///
/// # Safety
/// If `gil`, the GIL must be held.
#[inline(always)]
unsafe fn released_hooked(outcome: Released, me: u32, id: LockId, gil: bool) {
    if HELD.load(Ordering::Relaxed) {
        // SAFETY: forwarded.
        unsafe { remove_held(outcome, me, id, gil) };
    }
    crate::lockdep::released(outcome, id);
}

/// A lock is freed: drop it from its holder's held list (diagnostic mode) and from the
/// lock-order records.
#[inline]
pub fn forget(holder: &Holder, id: LockId) {
    if DIAGNOSTIC.load(Ordering::Relaxed) {
        if HELD.load(Ordering::Relaxed) {
            if let Some(packed) = holder.holder_packed() {
                diag::held_remove(packed, id);
            }
        }
        crate::lockdep::dropped(holder.holder_packed() == Some(my_packed()), id);
    }
}

/// Drops a released lock from the held list of the thread that acquired it (`me`, the
/// releaser's packed slot, when the releaser did).
///
/// # Safety
/// If `gil`, the GIL must be held (the releaser's list comes from the thread cache then).
#[inline]
unsafe fn remove_held(outcome: Released, me: u32, id: LockId, gil: bool) {
    match outcome {
        // The releaser (`me`) acquired it: its own list, where only it adds entries.
        Released::ByAcquirer if gil => {
            // SAFETY: the GIL is held (caller).
            if let Some(held) = unsafe { my_held_gil(me) } {
                held.pop(id);
            }
        }
        Released::ByAcquirer => diag::held_pop_own(me, id),
        Released::ByOther(acquirer) => diag::held_remove(acquirer, id),
        Released::Unknown => {}
    }
}

/// An `RLock`'s first acquire by its owner, when [`hooked`] was true: diagnostic mode's
/// held list (lock-order checking is done by the caller).
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn rlock_acquired(id: LockId) {
    // SAFETY: forwarded.
    if let Some(me) = unsafe { held_only() } {
        // SAFETY: forwarded.
        unsafe { me.list(id) };
    } else if HELD.load(Ordering::Relaxed) {
        // SAFETY: forwarded.
        unsafe { push_held(my_packed_gil(), id) };
    }
}

/// An `RLock`'s last release by its owner.
///
/// # Safety
/// The GIL must be held.
#[inline(always)]
pub unsafe fn rlock_released(id: LockId) {
    if DIAGNOSTIC.load(Ordering::Relaxed) {
        // SAFETY: forwarded.
        if let Some(me) = unsafe { held_only() } {
            me.rlock_released(id);
            return;
        }
        if HELD.load(Ordering::Relaxed) {
            // SAFETY: forwarded.
            unsafe { remove_held(Released::ByAcquirer, my_packed_gil(), id, true) };
        }
        crate::lockdep::released(Released::ByAcquirer, id);
    }
}

/// What a blocked acquire or join waits on, for its wait record.
#[derive(Clone, Copy)]
pub struct WaitOn<'a> {
    pub what: WaitFor,
    pub site: u32,
    pub held_by: Option<HeldBy<'a>>,
    /// The word the wait sleeps on (the lock's or the thread handle's), woken by a watchdog
    /// that cancels the wait; `None` for a wait no cancel should reach.
    pub wake: Option<&'a AtomicU32>,
}

/// How a recorded wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    Done(Acquire),
    /// A watchdog abandoned the wait to break a deadlock; nothing was taken.
    Cancelled,
}

/// Runs `block` (GIL released) as a recorded wait on `on`. The guard lives only inside this
/// call, which runs entirely without the GIL.
pub fn wait(
    on: WaitOn<'_>,
    deadline: Option<Deadline>,
    block: &impl Fn(Option<Deadline>) -> Acquire,
) -> Waited {
    if COMPILED_OUT {
        return Waited::Done(block(deadline));
    }
    let guard = WaitGuard::begin(on.what, diag::SiteId::from_u32(on.site), deadline.is_some());
    sleep_recorded(&guard, on, deadline, block)
}

/// A recorded wait that lasts across several sleeps, with the GIL taken back between them:
/// the main thread's, which leaves its sleep every few milliseconds to run the signal handlers
/// (see `acquire.rs`). To the watchdog and in snapshots it stays one wait (one token, one
/// start), so a deadlock through the main thread is confirmed over two scans as any other.
///
/// It has no destructor, on purpose: it lives in a frame that re-takes the GIL, where a forced
/// unwind must find no landing pad. [`LongWait::end`] clears the record; a forced unwind (only
/// for a thread that is not the finalizing one) would skip that and leave the record, and the
/// thread's registry slot, in place: harmless for a thread that is being ended at exit.
pub struct LongWait {
    guard: std::mem::ManuallyDrop<Option<WaitGuard>>,
}

impl LongWait {
    /// Starts the record of a wait on `on` (none when the bookkeeping is compiled out).
    #[must_use]
    pub fn begin(on: &WaitOn<'_>, deadline: Option<Deadline>) -> LongWait {
        let guard = (!COMPILED_OUT).then(|| {
            WaitGuard::begin(on.what, diag::SiteId::from_u32(on.site), deadline.is_some())
        });
        LongWait {
            guard: std::mem::ManuallyDrop::new(guard),
        }
    }

    /// Runs one sleep of the wait (GIL released), as [`wait`] does. A watchdog's cancel that
    /// came while the GIL was held ends the wait here without sleeping; a record that a wait
    /// nested in between (a signal handler that waited) replaced is begun again.
    pub fn sleep(
        &mut self,
        on: WaitOn<'_>,
        deadline: Option<Deadline>,
        block: &impl Fn(Option<Deadline>) -> Acquire,
    ) -> Waited {
        let Some(guard) = self.guard.as_mut() else {
            return Waited::Done(block(deadline));
        };
        if guard.is_cancelled() {
            return Waited::Cancelled;
        }
        if !guard.is_current() {
            *guard = WaitGuard::begin(on.what, diag::SiteId::from_u32(on.site), deadline.is_some());
        }
        sleep_recorded(guard, on, deadline, block)
    }

    /// Ends the wait and clears its record.
    pub fn end(self) {
        drop(std::mem::ManuallyDrop::into_inner(self.guard));
    }
}

/// One sleep of a recorded wait, `guard` armed with `on`'s holder and wake words.
fn sleep_recorded(
    guard: &WaitGuard,
    on: WaitOn<'_>,
    deadline: Option<Deadline>,
    block: &impl Fn(Option<Deadline>) -> Acquire,
) -> Waited {
    // The lock sleeps in a `Cancellable` backend: a cancelled wait comes back `Interrupted`.
    guard.armed(on.held_by, on.wake, || match block(deadline) {
        Acquire::Interrupted if guard.is_cancelled() => Waited::Cancelled,
        r => Waited::Done(r),
    })
}

/// [`wait`] that no watchdog can cancel, waiting as long as needed (`RLock._acquire_restore`).
pub fn wait_uncancellable(on: WaitOn<'_>, block: &impl Fn(Option<Deadline>) -> Acquire) -> Acquire {
    let guard = WaitGuard::begin(on.what, diag::SiteId::from_u32(on.site), false);
    guard.armed_uncancellable(on.held_by, || block(None))
}

/// The `DeadlockError` type (set by `rthread.debug`), and the last report of the watchdog.
static DEADLOCK_ERROR: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());
static LAST_REPORT: Mutex<String> = Mutex::new(String::new());

/// Raises `DeadlockError(report)` (a `RuntimeError` before `rthread.debug` is imported).
///
/// # Safety
/// The GIL must be held.
#[cold]
pub unsafe fn raise_deadlock() {
    // Never blocks: in a forked child the mutex may have been inherited locked by the
    // watchdog thread (which does not exist there); elsewhere it is held for a string copy.
    let mut report = None;
    for _ in 0..1000 {
        match LAST_REPORT.try_lock() {
            Ok(r) => report = Some(r.clone()),
            Err(std::sync::TryLockError::Poisoned(p)) => report = Some(p.into_inner().clone()),
            Err(std::sync::TryLockError::WouldBlock) => {
                std::thread::yield_now();
                continue;
            }
        }
        break;
    }
    let report = report.unwrap_or_else(|| "(the watchdog's report could not be read)".into());
    // SAFETY: GIL held (caller); the message object is released after PyErr_SetObject took
    // its own reference.
    unsafe {
        let mut tp = DEADLOCK_ERROR.load(Ordering::Acquire);
        if tp.is_null() {
            tp = ffi::PyExc_RuntimeError;
        }
        let msg = ffi::PyUnicode_FromStringAndSize(
            report.as_ptr().cast(),
            report.len() as ffi::Py_ssize_t,
        );
        if msg.is_null() {
            return;
        }
        ffi::PyErr_SetObject(tp, msg);
        ffi::Py_DECREF(msg);
    }
}

// ---------------------------------------------------------------------------------------------
// The watchdog

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Report,
    Exit,
    Raise,
}

#[derive(Clone, Copy, Debug)]
struct Config {
    limit: Duration,
    action: Action,
    fd: c_int,
}

/// The watchdog's settings (`None`: stopped) and whether its thread runs.
struct Watch {
    config: Option<Config>,
    running: bool,
}

static WATCH: Mutex<Watch> = Mutex::new(Watch {
    config: None,
    running: false,
});
static WATCH_CV: Condvar = Condvar::new();

/// How long the watchdog waits for the GIL to render Python stacks.
const GIL_BOUND: Duration = Duration::from_secs(2);
/// How long the Python renderer may take once it has the GIL.
const RENDER_BOUND: Duration = Duration::from_secs(10);

/// The Python renderer: `rthread.debug._watchdog_fire(reason, action) -> str`, which writes
/// the report to the watchdog's file and returns it.
static RENDER: AtomicPtr<PyObject> = AtomicPtr::new(std::ptr::null_mut());

/// Requests from the watchdog to the render helper thread.
struct Render {
    /// Request number; the helper serves `requested > served`.
    requested: u64,
    served: u64,
    /// The helper holds the GIL for request `served + 1`.
    started: u64,
    reason: &'static str,
    action: &'static str,
    result: Option<(u64, String)>,
    helper: bool,
}

static RENDER_STATE: Mutex<Render> = Mutex::new(Render {
    requested: 0,
    served: 0,
    started: 0,
    reason: "",
    action: "",
    result: None,
    helper: false,
});
static RENDER_CV: Condvar = Condvar::new();

fn interval(limit: Duration) -> Duration {
    (limit / 4).clamp(Duration::from_millis(5), Duration::from_millis(100))
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Report => "report",
        Action::Exit => "exit",
        Action::Raise => "raise",
    }
}

/// The watchdog thread: snapshots every interval, reports each episode once, and acts.
fn watchdog_main() {
    let mut prev: Option<Snapshot> = None;
    let mut reported: HashSet<(ThreadSlot, WaitToken)> = HashSet::new();
    loop {
        let cfg = {
            let mut w = WATCH.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(cfg) = w.config else {
                w.running = false;
                return;
            };
            let (mut w, _) = WATCH_CV
                .wait_timeout(w, interval(cfg.limit))
                .unwrap_or_else(PoisonError::into_inner);
            match w.config {
                Some(c) => c,
                None => {
                    w.running = false;
                    return;
                }
            }
        };
        if crate::finalizing::runtime_finalizing() {
            continue;
        }
        let snap = diag::snapshot();
        let min_age = cfg.limit.min(Duration::from_millis(200));
        let cycles: Vec<Cycle> = prev
            .as_ref()
            .map(|p| snap.confirmed_cycles(p))
            .unwrap_or_default()
            .into_iter()
            .filter(|c| {
                c.threads.iter().all(|&t| {
                    snap.thread(t)
                        .and_then(|t| t.waited(snap.taken_at))
                        .is_some_and(|d| d >= min_age)
                })
            })
            .collect();
        let long: Vec<(ThreadSlot, WaitToken)> = snap
            .long_waits(cfg.limit)
            .into_iter()
            .filter(|t| !is_helper(t.ident))
            .filter_map(|t| Some((t.slot, t.wait.as_ref()?.token)))
            .collect();
        let current: HashSet<(ThreadSlot, WaitToken)> = snap
            .threads
            .iter()
            .filter_map(|t| Some((t.slot, t.wait.as_ref()?.token)))
            .collect();
        reported.retain(|w| current.contains(w));
        let trigger: Vec<(ThreadSlot, WaitToken)> = cycles
            .iter()
            .flat_map(|c| c.waits(&snap))
            .chain(long.iter().copied())
            .collect();
        if trigger.iter().any(|w| !reported.contains(w)) {
            let reason = if cycles.is_empty() {
                "hang"
            } else {
                "deadlock"
            };
            let text = render(reason, cfg, &snap);
            *LAST_REPORT.lock().unwrap_or_else(PoisonError::into_inner) = text;
            reported.extend(current.iter().copied());
            if cfg.action == Action::Exit {
                // SAFETY: `_exit` ends the process at once, as `os._exit` does; the report was
                // written (and flushed by the renderer) first.
                unsafe { libc::_exit(1) };
            }
        }
        if cfg.action == Action::Raise {
            for c in &cycles {
                if let Some((slot, token)) = victim(c, &snap) {
                    let _ = diag::cancel_wait(slot, token);
                }
            }
        }
        prev = Some(snap);
    }
}

/// Ident of the render helper thread (0 = none): its waits are not hangs of the program.
static HELPER_IDENT: AtomicU64 = AtomicU64::new(0);

fn is_helper(ident: u64) -> bool {
    ident != 0 && HELPER_IDENT.load(Ordering::Relaxed) == ident
}

/// The wait to abandon: the main thread's when it is in the cycle, or waits (through a chain)
/// on one of its threads; else the cycle's own choice.
fn victim(c: &Cycle, snap: &Snapshot) -> Option<(ThreadSlot, WaitToken)> {
    if let Some(main) = snap.thread_by_ident(crate::thread::main_ident()) {
        let mut t = main;
        for _ in 0..=snap.threads.len() {
            if c.threads.contains(&t.slot) {
                if let Some(w) = main.wait.as_ref() {
                    return Some((main.slot, w.token));
                }
                break;
            }
            match snap.edge(t).and_then(|e| snap.thread(e.to)) {
                Some(next) => t = next,
                None => break,
            }
        }
    }
    c.victim(snap)
}

/// Renders and writes the report: through Python (names, stacks, the user's file) if the GIL
/// can be had within [`GIL_BOUND`], else the native report, without stacks, to `cfg.fd`.
fn render(reason: &'static str, cfg: Config, snap: &Snapshot) -> String {
    if !RENDER.load(Ordering::Acquire).is_null() {
        let mut r = RENDER_STATE.lock().unwrap_or_else(PoisonError::into_inner);
        if !r.helper {
            r.helper = true;
            if std::thread::Builder::new()
                .name("rthread-report".into())
                .spawn(helper_main)
                .is_err()
            {
                r.helper = false;
            }
        }
        if r.helper {
            r.requested += 1;
            let id = r.requested;
            r.reason = reason;
            r.action = action_name(cfg.action);
            RENDER_CV.notify_all();
            // GIL_BOUND to get the GIL; once the helper runs Python for this request, up to
            // RENDER_BOUND more to write the report (a renderer stuck on, say, a file lock held
            // by a deadlocked thread must not stop the watchdog).
            let gil_end = Deadline::after(GIL_BOUND);
            let mut render_end: Option<Deadline> = None;
            loop {
                if let Some((rid, text)) = r.result.take() {
                    if rid == id {
                        return text;
                    }
                }
                if r.started == id && render_end.is_none() {
                    render_end = Some(Deadline::after(RENDER_BOUND));
                }
                let left = render_end.unwrap_or(gil_end).remaining();
                if left.is_zero() {
                    break;
                }
                r = RENDER_CV
                    .wait_timeout(r, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            // Abandoned: the helper skips it when it finally gets the GIL.
            r.served = r.served.max(id);
        }
    }
    let text = format!(
        "rthread watchdog: {reason} ({} waits of at least {:.3}s)\n\
         (Python thread names and stacks unavailable: the GIL could not be taken within {}s)\n{}",
        snap.long_waits(cfg.limit).len(),
        cfg.limit.as_secs_f64(),
        GIL_BOUND.as_secs(),
        snap.text()
    );
    write_fd(cfg.fd, text.as_bytes());
    text
}

fn write_fd(fd: c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer of its length; a bad fd only makes write fail.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// The render helper: takes the GIL for each request and calls the Python renderer.
fn helper_main() {
    HELPER_IDENT.store(rthread_core::thread::current_ident(), Ordering::Relaxed);
    loop {
        let (id, reason, action) = {
            let mut r = RENDER_STATE.lock().unwrap_or_else(PoisonError::into_inner);
            while r.requested <= r.served {
                r = RENDER_CV.wait(r).unwrap_or_else(PoisonError::into_inner);
            }
            (r.requested, r.reason, r.action)
        };
        if crate::finalizing::runtime_finalizing() {
            let mut r = RENDER_STATE.lock().unwrap_or_else(PoisonError::into_inner);
            r.served = r.served.max(id);
            continue;
        }
        // SAFETY: this thread has no Python thread state; `ensure_new_thread` makes one (inside
        // the fork gate where CPython needs it, as for the threads rthread starts) and takes
        // the GIL, and the matching release follows. The runtime is not finalizing (checked
        // just above; a finalization starting in between is the one race left).
        let gstate = unsafe { crate::forkgate::ensure_new_thread() };
        let text = {
            let mut r = RENDER_STATE.lock().unwrap_or_else(PoisonError::into_inner);
            if r.served >= id {
                None
            } else {
                r.started = id;
                drop(r);
                // SAFETY: the GIL is held (`ensure_new_thread` above).
                let py = unsafe { Python::assume_attached() };
                Some(call_renderer(py, reason, action))
            }
        };
        // SAFETY: pairs with the Ensure above; nothing of Python is kept.
        unsafe { capi::PyGILState_Release(gstate) };
        let mut r = RENDER_STATE.lock().unwrap_or_else(PoisonError::into_inner);
        r.served = r.served.max(id);
        if let Some(text) = text {
            r.result = Some((id, text));
        }
        RENDER_CV.notify_all();
    }
}

fn call_renderer(py: Python<'_>, reason: &str, action: &str) -> String {
    let f = RENDER.load(Ordering::Acquire);
    if f.is_null() {
        return String::new();
    }
    // SAFETY: GIL held; RENDER holds a strong reference for the life of the process.
    let f = unsafe { Bound::from_borrowed_ptr(py, f) };
    match f
        .call1((reason, action))
        .and_then(|r| r.extract::<String>())
    {
        Ok(s) => s,
        Err(e) => {
            e.write_unraisable(py, Some(&f));
            String::new()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The `rthread._rthread_debug` module

/// Whether `obj` is one of rthread's lock objects, and its record: `(kind, id, holder
/// word, site, owner ident)`.
pub type LockRecord = (&'static str, u64, Option<u32>, u32, Option<u64>);

fn site_tuple(py: Python<'_>, id: Option<diag::SiteId>) -> PyResult<Py<PyAny>> {
    Ok(match id.and_then(diag::site) {
        Some(s) => (s.file.to_string(), s.line, s.function.to_string())
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        None => py.None(),
    })
}

fn kind_name(k: Option<LockKind>) -> Option<&'static str> {
    k.map(|k| match k {
        LockKind::Mutex => "mutex",
        LockKind::Signal => "signal",
        LockKind::Reentrant => "reentrant",
    })
}

fn wait_kind(w: WaitFor) -> (&'static str, u64) {
    match w {
        WaitFor::Lock(id) => ("lock", id.0),
        WaitFor::RLock(id) => ("rlock", id.0),
        WaitFor::Join(slot) => ("join", u64::from(slot.index())),
        WaitFor::JoinIdent(ident) => ("join", ident),
        WaitFor::Other { object, .. } => ("other", object),
    }
}

#[pyfunction]
fn set_enabled(on: bool) {
    diag::set_track_held(on);
    HELD.store(on, Ordering::Relaxed);
    refresh_hooks();
}

#[pyfunction]
fn is_enabled() -> bool {
    HELD.load(Ordering::Relaxed)
}

/// `configure(deadlock_error, renderer)`: the types and callback of `rthread.debug`.
#[pyfunction]
fn configure(error: Bound<'_, PyAny>, renderer: Bound<'_, PyAny>) {
    DEADLOCK_ERROR.store(error.into_ptr(), Ordering::Release);
    RENDER.store(renderer.into_ptr(), Ordering::Release);
}

/// In a fork child: the watchdog and render threads did not survive, and only the forking
/// thread is left in the registry.
pub fn after_fork_child() {
    // (This also empties the thread caches, through the thread-end hook of every thread of
    // the parent it drops: a thread started here may get one's thread pointer again.)
    diag::after_fork_child();
    // A mutex held by a thread that is gone stays held in the child: only try them.
    if let Ok(mut w) = WATCH.try_lock() {
        w.running = false;
        w.config = None;
    }
    if let Ok(mut r) = RENDER_STATE.try_lock() {
        r.helper = false;
        r.served = r.requested;
    }
    HELPER_IDENT.store(0, Ordering::Relaxed);
}

/// The raw snapshot: `(taken_at_ns, threads, cycles)`; times are monotonic nanoseconds
/// (`time.monotonic_ns()` uses the same clock).
#[pyfunction]
fn snapshot(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let snap = py.detach(diag::snapshot);
    snapshot_to_py(py, &snap)
}

fn snapshot_to_py(py: Python<'_>, snap: &Snapshot) -> PyResult<Py<PyAny>> {
    let ident_of = |slot: ThreadSlot| snap.thread(slot).map(|t| t.ident);
    let threads = PyList::empty(py);
    for t in &snap.threads {
        if is_helper(t.ident) {
            continue;
        }
        let d = PyDict::new(py);
        d.set_item("ident", t.ident)?;
        d.set_item("native_id", t.native_id)?;
        d.set_item("torn", t.torn)?;
        match &t.wait {
            Some(w) => {
                let wd = PyDict::new(py);
                let (kind, object) = wait_kind(w.what);
                wd.set_item("kind", kind)?;
                wd.set_item("object", object)?;
                wd.set_item("site", site_tuple(py, w.site)?)?;
                wd.set_item("timed", w.timed)?;
                wd.set_item("since_ns", w.since.as_nanos())?;
                wd.set_item("holder", w.holder.and_then(ident_of))?;
                wd.set_item("lock_kind", kind_name(w.lock_kind))?;
                wd.set_item("stable", w.stable)?;
                wd.set_item("cancel_requested", w.cancel_requested)?;
                d.set_item("wait", wd)?;
            }
            None => d.set_item("wait", py.None())?,
        }
        let held = PyList::empty(py);
        for h in &t.held {
            let hd = PyDict::new(py);
            hd.set_item("object", h.lock.0)?;
            hd.set_item("site", site_tuple(py, h.site)?)?;
            hd.set_item("since_ns", h.since.as_nanos())?;
            held.append(hd)?;
        }
        d.set_item("held", held)?;
        threads.append(d)?;
    }
    let cycles = PyList::empty(py);
    for c in snap.cycles() {
        let cd = PyDict::new(py);
        cd.set_item(
            "certainty",
            if c.certainty == Certainty::Certain {
                "certain"
            } else {
                "suspected"
            },
        )?;
        let edges = PyList::empty(py);
        for e in &c.edges {
            let ed = PyDict::new(py);
            let (kind, object) = wait_kind(e.via);
            ed.set_item("from", ident_of(e.from))?;
            ed.set_item("to", ident_of(e.to))?;
            ed.set_item("kind", kind)?;
            ed.set_item("object", object)?;
            ed.set_item("lock_kind", kind_name(e.lock_kind))?;
            ed.set_item(
                "certainty",
                if e.certainty == Certainty::Certain {
                    "certain"
                } else {
                    "suspected"
                },
            )?;
            edges.append(ed)?;
        }
        cd.set_item("edges", edges)?;
        cycles.append(cd)?;
    }
    Ok((snap.taken_at.as_nanos(), threads, cycles)
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

/// The record of a lock or RLock object: `(kind, id, holder ident or None, signal, site,
/// locked)`, or None for other objects.
#[pyfunction]
fn lock_info(py: Python<'_>, obj: Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    // SAFETY: GIL held; `obj` is alive for the call.
    let rec: Option<LockRecord> =
        unsafe { crate::lock::record(obj.as_ptr()).or_else(|| crate::rlock::record(obj.as_ptr())) };
    let Some((kind, id, word, site, owner)) = rec else {
        return Ok(py.None());
    };
    let (holder, signal) = match (word, owner) {
        (Some(word), _) => {
            let snap = py.detach(diag::snapshot);
            let packed = word & 0x7FFF_FFFF;
            let holder = snap
                .threads
                .iter()
                .find(|t| packed != 0 && t.slot.matches_packed(packed))
                .map(|t| t.ident);
            (holder, word & 0x8000_0000 != 0)
        }
        (None, Some(owner)) => ((owner != 0).then_some(owner), false),
        (None, None) => (None, false),
    };
    Ok((
        kind,
        id,
        holder,
        signal,
        site_tuple(py, diag::SiteId::from_u32(site))?,
    )
        .into_pyobject(py)?
        .into_any()
        .unbind())
}

/// The native text report (no Python names or stacks): what the watchdog prints when the GIL
/// cannot be had.
#[pyfunction]
fn native_report(py: Python<'_>) -> String {
    py.detach(|| diag::snapshot().text())
}

/// `watchdog(seconds or None, action, fd)`.
#[pyfunction]
fn watchdog(seconds: Option<f64>, action: &str, fd: c_int) -> PyResult<()> {
    let action = match action {
        "report" => Action::Report,
        "exit" => Action::Exit,
        "raise" => Action::Raise,
        _ => {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "action must be 'report', 'exit' or 'raise'",
            ))
        }
    };
    let mut w = WATCH.lock().unwrap_or_else(PoisonError::into_inner);
    match seconds {
        None => {
            w.config = None;
        }
        Some(s) => {
            if !(s.is_finite() && s > 0.0) {
                return Err(pyo3::exceptions::PyValueError::new_err(
                    "seconds must be a positive number",
                ));
            }
            w.config = Some(Config {
                limit: Duration::from_secs_f64(s),
                action,
                fd,
            });
            if !w.running {
                std::thread::Builder::new()
                    .name("rthread-watchdog".into())
                    .spawn(watchdog_main)
                    .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
                w.running = true;
            }
        }
    }
    WATCH_CV.notify_all();
    Ok(())
}

/// Creates `rthread._rthread_debug` and registers it in `sys.modules` (not as an attribute of
/// `_rthread`, whose namespace must stay `_thread`'s).
pub fn create_module(py: Python<'_>) -> PyResult<()> {
    let m = PyModule::new(py, "rthread._rthread_debug")?;
    m.add_function(wrap_pyfunction!(set_enabled, &m)?)?;
    m.add_function(wrap_pyfunction!(is_enabled, &m)?)?;
    m.add_function(wrap_pyfunction!(configure, &m)?)?;
    m.add_function(wrap_pyfunction!(snapshot, &m)?)?;
    m.add_function(wrap_pyfunction!(lock_info, &m)?)?;
    m.add_function(wrap_pyfunction!(native_report, &m)?)?;
    m.add_function(wrap_pyfunction!(watchdog, &m)?)?;
    m.add_function(wrap_pyfunction!(fast_frames, &m)?)?;
    crate::lockdep::add_functions(&m)?;
    let modules = py.import("sys")?.getattr("modules")?;
    modules.set_item("rthread._rthread_debug", m)?;
    Ok(())
}
