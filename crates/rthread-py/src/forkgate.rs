//! The fork gate: short sections that run without the GIL and that a `fork()` must not cut in
//! half.
//!
//! A thread started here makes its Python thread state itself, without the GIL (the built-in
//! makes it in the starting thread, which holds the GIL). Making it takes CPython's runtime
//! lock on the list of thread states (`HEAD_LOCK`). If another thread forks at that moment, the
//! child inherits that lock held by a thread that does not exist there. CPython 3.9 – 3.11
//! take it in the child (to delete the other threads' states) *before* they re-initialise it,
//! so the child hung in `os.fork()` for ever: the fork storm's rare stuck child (about 1 in
//! 1000 forks on 3.11, stacks in `_PyThreadState_DeleteExcept`). 3.12 re-initialises the lock
//! first, but a list cut in the middle of an insertion is no better. The same holds for the
//! thread-handle lists a finishing thread updates after it gave up the GIL, and for the thread
//! registry's slot table when a thread registers.
//!
//! (CPython 3.13+ hold HEAD_LOCK across the fork themselves, so there the thread state is made
//! by `PyGILState_Ensure` outside the gate: inside it, it would deadlock with the forking
//! thread, which holds HEAD_LOCK while it waits for the gate to empty.)
//!
//! So those sections run inside the gate, and a `pthread_atfork` prepare handler closes the gate
//! and waits until no thread is inside before the fork goes on; the parent and child handlers
//! open it again. The sections are short and never need the GIL or anything the forking
//! thread holds, so the wait is brief and cannot deadlock. Entering costs one
//! compare-and-swap; a thread that finds the gate closed waits for the fork to end.
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// Low bits: threads inside a section. From `FORK_ONE` up: forks waiting or in progress.
static GATE: AtomicU32 = AtomicU32::new(0);
const FORK_ONE: u32 = 1 << 16;
const INSIDE: u32 = FORK_ONE - 1;

/// A thread inside the gate; leaves it when dropped.
#[must_use]
pub struct Inside(());

impl Drop for Inside {
    fn drop(&mut self) {
        GATE.fetch_sub(1, Ordering::Release);
    }
}

/// Enters the gate, first waiting for any fork in progress to finish.
pub fn enter() -> Inside {
    let mut spins = 0u32;
    let mut state = GATE.load(Ordering::Relaxed);
    loop {
        if state >= FORK_ONE {
            pause(&mut spins);
            state = GATE.load(Ordering::Relaxed);
            continue;
        }
        match GATE.compare_exchange_weak(state, state + 1, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => return Inside(()),
            Err(now) => state = now,
        }
    }
}

/// Yields a few times, then sleeps 50 µs at a time: the waits here last as long as a fork
/// or a thread-state allocation, and nothing needs waking.
fn pause(spins: &mut u32) {
    if *spins < 64 {
        *spins += 1;
        std::thread::yield_now();
    } else {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

extern "C" fn prepare() {
    GATE.fetch_add(FORK_ONE, Ordering::Acquire);
    let mut spins = 0;
    while GATE.load(Ordering::Acquire) & INSIDE != 0 {
        pause(&mut spins);
    }
}

extern "C" fn parent() {
    GATE.fetch_sub(FORK_ONE, Ordering::Release);
}

extern "C" fn child() {
    // Only the forking thread exists here; nobody is inside and no other fork is pending.
    GATE.store(0, Ordering::Release);
}

/// Installs the fork handlers (once per process).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the three handlers are plain functions that only touch an atomic and may
        // sleep; pthread_atfork keeps the pointers for the life of the process, and this
        // library is never unloaded (CPython does not unload extension modules).
        let rc = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
        debug_assert_eq!(rc, 0);
    });
}

/// `PyGILState_Ensure()` for a thread that has no Python thread state yet, with the state made
/// inside the gate. Returns what `PyGILState_Release` expects: the new state's GIL-state count
/// is 1 (`PyThreadState_New` sets it so), so the matching release clears and deletes it, as
/// after `PyGILState_Ensure`.
///
/// # Safety
/// The interpreter is initialised, the calling thread has no thread state and does not hold
/// the GIL. Like `PyGILState_Ensure`, it may end the thread (finalization).
pub unsafe fn ensure_new_thread() -> pyo3::ffi::PyGILState_STATE {
    // 3.13+ hold HEAD_LOCK themselves from before the fork to after it (PyOS_BeforeFork), so a
    // fork cannot split the creation there; and gating it would deadlock: the forking thread
    // holds HEAD_LOCK while it waits in `prepare` for a thread that waits for HEAD_LOCK inside
    // the gate (seen on 3.13 and 3.14: the fork storm's parent hung).
    #[cfg(Py_3_13)]
    {
        // SAFETY: forwarded (no thread state, no GIL, interpreter initialised).
        unsafe { crate::capi::PyGILState_Ensure() }
    }
    #[cfg(not(Py_3_13))]
    // SAFETY: forwarded.
    unsafe {
        ensure_new_thread_gated()
    }
}

/// [`ensure_new_thread`] for 3.9 – 3.12, where CPython does not hold HEAD_LOCK across a fork.
///
/// # Safety
/// As [`ensure_new_thread`].
#[cfg(not(Py_3_13))]
unsafe fn ensure_new_thread_gated() -> pyo3::ffi::PyGILState_STATE {
    let tstate = {
        let _inside = enter();
        // SAFETY: the main interpreter exists (caller); PyThreadState_New needs no GIL and
        // binds the new state to this thread for the PyGILState API, as PyGILState_Ensure
        // would.
        unsafe { pyo3::ffi::PyThreadState_New(pyo3::ffi::PyInterpreterState_Main()) }
    };
    if tstate.is_null() {
        // SAFETY: a constant message; what PyGILState_Ensure does in the same case.
        unsafe { pyo3::ffi::Py_FatalError(c"Couldn't create thread-state for new thread".as_ptr()) }
    }
    // SAFETY: a fresh state of this thread, not current anywhere; this takes the GIL.
    unsafe { crate::capi::PyEval_RestoreThread(tstate) };
    pyo3::ffi::PyGILState_STATE::PyGILState_UNLOCKED
}
