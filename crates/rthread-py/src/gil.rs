//! A hint of whether some thread runs Python right now, for waiters that
//! spin without the GIL ([`rthread_core::SpinPolicy::Gated`]).
//!
//! A waiter that takes a lock the moment it is released still needs the GIL
//! before it can use it, and the releaser, which holds the GIL, usually comes
//! back for the lock at once: it then has to block, and the two threads swap
//! the GIL on every turn. The gate makes the waiter leave the free lock alone
//! while the releaser runs, and take it once the releaser blocks (often in one
//! of this module's own waits), when the GIL is free to be taken at once.
//!
//! The interpreter's GIL state is private, so this hint only follows what
//! rthread sees: every release of one of our locks (which runs with the GIL)
//! and every return from [`restore`] marks it held, and our own blocking
//! waits mark it free in [`save`].
//! It is wrong whenever the GIL changes hands elsewhere (a `time.sleep`, I/O,
//! the interpreter's switch interval); that only changes *when* a waiter takes
//! a free lock, by at most the core lock's bounded watch, never whether.
//!
//! Every write happens with the GIL held (so the writes are ordered by the
//! GIL itself), except [`released`], which only turns "releasing" into
//! "free" and does nothing if a thread marked the GIL held meanwhile.
use std::sync::atomic::{AtomicU8, Ordering};

use rthread_core::SpinPolicy;

/// A thread that came through rthread runs Python.
const HELD: u8 = 0;
/// A thread is about to release the GIL in one of our waits.
const RELEASING: u8 = 1;
/// The last holder we saw released the GIL.
const FREE: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(HELD);

/// The caller holds the GIL. Cheap when nothing changed: a read, no write,
/// so that spinners reading the hint do not slow down the running thread.
#[inline]
pub fn held() {
    if STATE.load(Ordering::Relaxed) != HELD {
        STATE.store(HELD, Ordering::Relaxed);
    }
}

/// The caller holds the GIL and is about to release it.
#[inline]
pub fn releasing() {
    STATE.store(RELEASING, Ordering::Relaxed);
}

/// The caller has released the GIL (called without it). Leaves a later
/// [`held`] by the next holder in place.
#[inline]
pub fn released() {
    let _ = STATE.compare_exchange(RELEASING, FREE, Ordering::Relaxed, Ordering::Relaxed);
}

/// `PyEval_SaveThread`, telling the hint.
///
/// # Safety
/// As `PyEval_SaveThread`: the calling thread holds the GIL.
#[inline]
pub unsafe fn save() -> *mut pyo3::ffi::PyThreadState {
    releasing();
    // SAFETY: forwarded caller obligation.
    let tstate = unsafe { crate::capi::PyEval_SaveThread() };
    released();
    tstate
}

/// `PyEval_RestoreThread`, telling the hint. Like it, may end the thread by
/// a forced unwind at finalization (nothing here has a destructor).
///
/// # Safety
/// As `PyEval_RestoreThread`: `tstate` is what [`save`] returned on this
/// thread, and the thread does not hold the GIL.
#[inline]
pub unsafe fn restore(tstate: *mut pyo3::ffi::PyThreadState) {
    // SAFETY: forwarded caller obligation.
    unsafe { crate::capi::PyEval_RestoreThread(tstate) };
    held();
}

/// Whether a waiter that takes a lock now could probably take the GIL at once.
fn ready() -> bool {
    STATE.load(Ordering::Relaxed) == FREE
}

/// The spin policy of every Python-facing lock wait.
pub const SPIN: SpinPolicy = SpinPolicy::Gated(ready);

std::thread_local! {
    /// Set while the main thread resumes a wait it left to run the pending
    /// calls (see `acquire::block_without_gil`).
    static RESUMING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// [`SPIN`], or a brief spin while the main thread resumes a wait: by then the
/// lock has been held for a millisecond or more, so a long spin cannot pay
/// off, and a signal that lands during a spin interrupts no system call.
#[inline]
pub fn spin() -> SpinPolicy {
    if RESUMING.try_with(std::cell::Cell::get).unwrap_or(false) {
        SpinPolicy::Brief
    } else {
        SPIN
    }
}

/// Marks the calling thread as resuming a wait (or not).
pub fn set_resuming(on: bool) {
    let _ = RESUMING.try_with(|r| r.set(on));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transitions() {
        held();
        assert!(!ready());
        releasing();
        assert!(!ready());
        released();
        assert!(ready());
        // A release that ends after the next holder marked the GIL held does
        // not undo that mark.
        releasing();
        held();
        released();
        assert!(!ready());
    }
}
