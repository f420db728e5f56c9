//! What `Lock.acquire` and `RLock.acquire` share: parsing `(blocking=True,
//! timeout=-1)` exactly as the built-in does, and blocking without the GIL
//! while still running signal handlers promptly.
//!
//! The fast path (`acquire()` with no arguments on a free lock) parses nothing
//! and does one compare-exchange while holding the GIL. The common argument
//! shapes (`blocking` exactly True or False, any `timeout`, positional or by
//! name) are read straight from the vectorcall arguments; anything else takes
//! the slow path through the interpreter's own `PyArg_ParseTupleAndKeywords`,
//! so every error is the built-in's, on every version. Timeouts always go
//! through the interpreter's own conversion.
use std::ffi::{c_char, c_int, CStr};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use pyo3::ffi::{self, PyObject, Py_ssize_t};
use rthread_core::{Acquire, Deadline};

use crate::capi::{self, Static};
use crate::debug::Waited;
use crate::errors;
use crate::gil;

/// What an acquire call asked for.
#[derive(Clone, Copy, Debug)]
pub enum Wait {
    /// `blocking=False`, or a zero timeout: try once, keep the GIL.
    NonBlocking,
    /// Block until acquired.
    Forever,
    /// Block until acquired or this many nanoseconds (> 0) have passed; the
    /// monotonic deadline is fixed when the first try fails.
    Within(u64),
}

/// `-1` seconds in nanoseconds: CPython's "no timeout" marker. Only this exact
/// value means "forever"; any other negative timeout is an error.
const UNSET_TIMEOUT_NS: i64 = -1_000_000_000;

/// The `PyArg_ParseTupleAndKeywords` format of `acquire`; its name after the
/// colon is the one argument errors show. `blocking` became a truth value
/// (`p`) in 3.12; before, an int (`i`).
#[cfg(Py_3_12)]
pub const FORMAT: &CStr = c"|pO:acquire";
#[cfg(not(Py_3_12))]
pub const FORMAT: &CStr = c"|iO:acquire";

/// The format of `lock.acquire_lock`. Up to 3.14 its argument errors say
/// `acquire()`, like the method it aliases; from 3.15 on they name
/// `acquire_lock()` itself.
#[cfg(Py_3_15)]
pub const ALIAS_FORMAT: &CStr = c"|pO:acquire_lock";
#[cfg(not(Py_3_15))]
pub const ALIAS_FORMAT: &CStr = FORMAT;

static KEYWORDS: Static<[*const c_char; 3]> =
    Static::new([c"blocking".as_ptr(), c"timeout".as_ptr(), ptr::null()]);

/// The keyword names, interned, so that the names in a call (interned by the
/// compiler) are recognised by identity.
static BLOCKING_NAME: AtomicPtr<PyObject> = AtomicPtr::new(ptr::null_mut());
static TIMEOUT_NAME: AtomicPtr<PyObject> = AtomicPtr::new(ptr::null_mut());

/// Interns the keyword names; called once from module init.
pub fn init(py: pyo3::Python<'_>) -> pyo3::PyResult<()> {
    for (slot, name) in [(&BLOCKING_NAME, c"blocking"), (&TIMEOUT_NAME, c"timeout")] {
        // SAFETY: the GIL is held (`py`); the interned strings are kept for
        // the life of the process.
        let interned = unsafe { ffi::PyUnicode_InternFromString(name.as_ptr()) };
        if interned.is_null() {
            return Err(pyo3::PyErr::fetch(py));
        }
        slot.store(interned, Ordering::Relaxed);
    }
    Ok(())
}

/// Parses `acquire`'s vectorcall arguments. `None` means an exception is set.
/// `format` ([`FORMAT`] or [`ALIAS_FORMAT`]) is only read on the slow path,
/// for the method name in argument errors.
///
/// # Safety
/// The GIL must be held; `args`, `nargs`, `kwnames` must be a valid
/// vectorcall argument triple.
#[inline]
pub unsafe fn parse(
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
    format: &'static CStr,
) -> Option<Wait> {
    if kwnames.is_null() {
        if nargs == 0 {
            return Some(Wait::Forever);
        }
        if nargs == 1 {
            // SAFETY: one positional argument (vectorcall protocol), borrowed; the bool
            // singletons are compared by address only.
            let (blocking, no, yes) = unsafe { (*args, ffi::Py_False(), ffi::Py_True()) };
            if blocking == no {
                return Some(Wait::NonBlocking);
            }
            if blocking == yes {
                return Some(Wait::Forever);
            }
        }
    }
    // SAFETY: forwarded caller obligations.
    unsafe {
        match parse_common(args, nargs, kwnames) {
            // No timeout: nothing to convert or check (`acquire(False)`, `acquire(True)`).
            Some((true, timeout)) if timeout.is_null() => Some(Wait::Forever),
            Some((false, timeout)) if timeout.is_null() => Some(Wait::NonBlocking),
            Some((blocking, timeout)) => from_values(blocking, timeout),
            None => parse_slow(args, nargs, kwnames, format),
        }
    }
}

/// Reads the common shapes without building a tuple and a dict: at most two
/// values, positional or named `blocking` / `timeout`, each given once, and
/// `blocking` (if given) exactly `True` or `False`, which every version
/// reads the same way. `None` sends the call down the slow path, which raises
/// or converts exactly as the built-in.
///
/// # Safety
/// As [`parse`].
#[inline]
unsafe fn parse_common(
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
) -> Option<(bool, *mut PyObject)> {
    // SAFETY: the GIL is held; `args` has `nargs` positional values followed
    // by one value per name in `kwnames` (vectorcall protocol); only borrowed
    // pointers are read.
    unsafe {
        let nkw = if kwnames.is_null() {
            0
        } else {
            ffi::PyTuple_GET_SIZE(kwnames)
        };
        if nargs + nkw > 2 {
            return None;
        }
        let mut blocking: *mut PyObject = ptr::null_mut();
        let mut timeout: *mut PyObject = ptr::null_mut();
        if nargs >= 1 {
            blocking = *args;
        }
        if nargs == 2 {
            timeout = *args.add(1);
        }
        for i in 0..nkw {
            let name = ffi::PyTuple_GET_ITEM(kwnames, i);
            let value = *args.offset(nargs + i);
            if name == BLOCKING_NAME.load(Ordering::Relaxed) && blocking.is_null() {
                blocking = value;
            } else if name == TIMEOUT_NAME.load(Ordering::Relaxed) && timeout.is_null() {
                timeout = value;
            } else {
                return None;
            }
        }
        let blocking = if blocking.is_null() || blocking == ffi::Py_True() {
            true
        } else if blocking == ffi::Py_False() {
            false
        } else {
            return None;
        };
        Some((blocking, timeout))
    }
}

#[cold]
unsafe fn parse_slow(
    args: *const *mut PyObject,
    nargs: Py_ssize_t,
    kwnames: *mut PyObject,
    format: &'static CStr,
) -> Option<Wait> {
    // SAFETY:
    // - the GIL is held (caller), so the C-API may be called;
    // - `args` holds `nargs` positional values followed by one value per name
    //   in `kwnames` (vectorcall protocol);
    // - the tuple and dict built here own their items and are released after
    //   the parsed (borrowed) `timeout` object has been converted;
    // - no Rust value with a destructor is alive across these calls.
    unsafe {
        let tuple = ffi::PyTuple_New(nargs);
        if tuple.is_null() {
            return None;
        }
        for i in 0..nargs {
            let item = *args.offset(i);
            ffi::Py_INCREF(item);
            ffi::PyTuple_SET_ITEM(tuple, i, item);
        }
        let mut dict: *mut PyObject = ptr::null_mut();
        if !kwnames.is_null() {
            let nkw = ffi::PyTuple_GET_SIZE(kwnames);
            dict = ffi::PyDict_New();
            if dict.is_null() {
                ffi::Py_DECREF(tuple);
                return None;
            }
            for i in 0..nkw {
                let key = ffi::PyTuple_GET_ITEM(kwnames, i);
                if ffi::PyDict_SetItem(dict, key, *args.offset(nargs + i)) < 0 {
                    ffi::Py_DECREF(tuple);
                    ffi::Py_DECREF(dict);
                    return None;
                }
            }
        }
        let mut blocking: c_int = 1;
        let mut timeout: *mut PyObject = ptr::null_mut();
        let parsed = capi::PyArg_ParseTupleAndKeywords(
            tuple,
            dict,
            format.as_ptr(),
            KEYWORDS.get().cast(),
            &mut blocking as *mut c_int,
            &mut timeout as *mut *mut PyObject,
        );
        let wait = if parsed == 0 {
            None
        } else {
            from_values(blocking != 0, timeout)
        };
        ffi::Py_DECREF(tuple);
        if !dict.is_null() {
            ffi::Py_DECREF(dict);
        }
        wait
    }
}

/// Applies the built-in's rules to parsed `blocking` and `timeout` (NULL when
/// not given).
///
/// # Safety
/// The GIL must be held; `timeout` is NULL or a valid object.
unsafe fn from_values(blocking: bool, timeout: *mut PyObject) -> Option<Wait> {
    let mut nanos = UNSET_TIMEOUT_NS;
    // SAFETY: the GIL is held (caller); `timeout` is NULL or a live object;
    // `nanos` is a valid out slot. The raises below only need the GIL.
    unsafe {
        if !timeout.is_null()
            && capi::_PyTime_FromSecondsObject(&mut nanos, timeout, capi::PYTIME_ROUND_TIMEOUT) < 0
        {
            return None;
        }
        if !blocking && nanos != UNSET_TIMEOUT_NS {
            errors::value_error(errors::NONBLOCKING_TIMEOUT);
            return None;
        }
        if nanos < 0 && nanos != UNSET_TIMEOUT_NS {
            errors::value_error(errors::NEGATIVE_TIMEOUT);
            return None;
        }
    }
    if !blocking || nanos == 0 {
        return Some(Wait::NonBlocking);
    }
    if nanos == UNSET_TIMEOUT_NS {
        return Some(Wait::Forever);
    }
    // Rounded up like _PyTime_AsMicroseconds(_PyTime_ROUND_TIMEOUT), against
    // PY_TIMEOUT_MAX, which itself is a valid timeout only from 3.11 on.
    let micros = nanos / 1000 + i64::from(nanos % 1000 != 0);
    let max = rthread_core::deadline::TIMEOUT_MAX_MICROS;
    let too_large = if cfg!(Py_3_11) {
        micros > max
    } else {
        micros >= max
    };
    if too_large {
        // SAFETY: the GIL is held (caller).
        unsafe { errors::overflow_error(errors::TIMEOUT_TOO_LARGE) };
        return None;
    }
    Some(Wait::Within(nanos as u64))
}

/// Outcome of [`acquire_with`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Acquired,
    NotAcquired,
    /// A signal handler raised; the exception is set.
    Error,
}

/// Tries once with the GIL held; if that fails and the call may block,
/// releases the GIL only for the wait. A wait interrupted by a signal runs the
/// Python signal handlers (`Py_MakePendingCalls`): if one raised, the error is
/// returned at once (Ctrl-C now, not at the end of the timeout); otherwise the
/// wait resumes towards the *original* deadline. `on` (what the wait record names) is only
/// built when the call blocks.
///
/// # Safety
/// The GIL must be held by the calling thread. `try_acquire` and `block` must
/// not touch Python (`block` runs without the GIL).
#[inline]
pub unsafe fn acquire_with<'w>(
    wait: Wait,
    on: impl FnOnce() -> crate::debug::WaitOn<'w>,
    try_acquire: impl Fn() -> bool,
    block: impl Fn(Option<Deadline>) -> Acquire,
) -> Outcome {
    if try_acquire() {
        return Outcome::Acquired;
    }
    let deadline = match wait {
        Wait::NonBlocking => return Outcome::NotAcquired,
        Wait::Forever => None,
        Wait::Within(nanos) => Some(Deadline::after_nanos(nanos)),
    };
    // SAFETY: forwarded caller obligations.
    unsafe { block_without_gil(deadline, on(), block) }
}

/// How long the main thread's first sleep of a wait may last before it runs
/// the pending calls. A signal delivered while the waiter is not inside its
/// sleep's system call (it spins after releasing the GIL, and between two
/// sleeps), or delivered to another thread, has its C handler run there and
/// interrupts nothing: with a sleep that waits to the end, the Python handler
/// (Ctrl-C) would only run when the wait ends, which for `acquire()` may be
/// never. So every sleep of a main-thread wait is capped: the first one at
/// this, each next one at twice the last, up to [`SIGNAL_LONGEST_SLEEP_NS`];
/// after each, the GIL is taken back and the pending calls (the handlers) run.
/// A signal that does interrupt a sleep starts the doubling over, as the wait
/// spins again. The wait's record (what the watchdog and snapshots see) stays
/// the same throughout (`debug::LongWait`).
const SIGNAL_FIRST_SLEEP_NS: u64 = 1_000_000;
/// The longest sleep of a main-thread wait (reached after 1, 2, 4, 8 and 16 ms):
/// what a signal that interrupted no system call may wait for its handler, and
/// about 30 wake-ups a second for a long wait.
const SIGNAL_LONGEST_SLEEP_NS: u64 = 32_000_000;

#[cold]
unsafe fn block_without_gil(
    deadline: Option<Deadline>,
    on: crate::debug::WaitOn<'_>,
    block: impl Fn(Option<Deadline>) -> Acquire,
) -> Outcome {
    // From 3.15 on, a wait that starts once the runtime is finalizing (after
    // the atexit callbacks; only the finalizing thread still runs Python
    // then) fails instead of blocking: nobody could release the lock.
    #[cfg(Py_3_15)]
    // SAFETY: the GIL is held (caller).
    if unsafe { crate::finalizing::refuse_lock_wait() } {
        return Outcome::Error;
    }
    // Contention accounting (the totals, and the profile when it is on): plain data only,
    // nothing with a destructor (see below).
    // SAFETY: the GIL is held (caller).
    let contended = unsafe { crate::profile::wait_begin(&on) };
    let mut ended: (u64, bool);
    // Python signal handlers only run in the main thread: only its waits need the cap.
    let main = rthread_core::thread::current_ident() == crate::thread::main_ident();
    // The next sleep's cap; back to the first after a signal interrupted a sleep.
    let cap = std::cell::Cell::new(SIGNAL_FIRST_SLEEP_NS);
    let resuming = std::cell::Cell::new(false);
    // Every sleep after the first resumes the wait: it spins only briefly
    // (`gil::spin`), so that a signal is unlikely to land outside a sleep.
    let capped = |d: Option<Deadline>| {
        let again = resuming.replace(true);
        gil::set_resuming(again);
        let end = Deadline::after_nanos(cap.get());
        let r = block(Some(d.map_or(end, |d| d.min(end))));
        gil::set_resuming(false);
        match r {
            // The cap ended, not the wait: go and run the pending calls.
            Acquire::TimedOut if !d.is_some_and(|d| d.has_passed()) => {
                cap.set((cap.get() * 2).min(SIGNAL_LONGEST_SLEEP_NS));
                Acquire::Interrupted
            }
            r => {
                // A signal interrupted the sleep (or the wait is over): a
                // resumed wait spins again, so its sleeps are short again.
                cap.set(SIGNAL_FIRST_SLEEP_NS);
                r
            }
        }
    };
    // The main thread's wait keeps one record across its sleeps; another
    // thread's is recorded inside `debug::wait`, for one sleep.
    let mut record = main.then(|| crate::debug::LongWait::begin(&on, deadline));
    let outcome = loop {
        // SAFETY:
        // - the GIL is held here (caller), so it may be released, and it is
        //   re-taken before anything else touches Python;
        // - `block` does not touch Python;
        // - nothing alive in this frame has a destructor, so a forced unwind
        //   from PyEval_RestoreThread (daemon thread at finalization) passes
        //   through cleanly: another thread's wait record lives inside
        //   `debug::wait`, which returns before the GIL is re-taken; the main
        //   thread's (`LongWait`) has no destructor, and the main thread is
        //   the one that finalizes, which PyEval_RestoreThread does not end.
        let result = unsafe {
            let tstate = gil::save();
            let result = match record.as_mut() {
                Some(record) => record.sleep(on, deadline, &capped),
                None => crate::debug::wait(on, deadline, &block),
            };
            ended = crate::profile::wait_ended(&contended);
            gil::restore(tstate);
            result
        };
        match result {
            Waited::Done(Acquire::Acquired) => break Outcome::Acquired,
            Waited::Done(Acquire::TimedOut) => break Outcome::NotAcquired,
            Waited::Cancelled => {
                // SAFETY: the GIL is held again.
                unsafe { crate::debug::raise_deadlock() };
                break Outcome::Error;
            }
            Waited::Done(Acquire::Interrupted) => {
                // The handlers may wait themselves: a nested record, which
                // `LongWait::sleep` replaces if this wait goes on.
                // SAFETY: the GIL is held again.
                if unsafe { capi::Py_MakePendingCalls() } < 0 {
                    break Outcome::Error;
                }
            }
        }
    };
    if let Some(record) = record {
        record.end();
    }
    // SAFETY: the GIL is held again.
    unsafe { crate::profile::wait_end(contended, ended, outcome == Outcome::Acquired) };
    outcome
}

/// The Python result of an acquire: `True`, `False`, or NULL with the error set.
///
/// # Safety
/// The GIL must be held.
#[inline]
pub unsafe fn to_python(outcome: Outcome) -> *mut PyObject {
    // SAFETY: GIL held (caller).
    unsafe {
        match outcome {
            Outcome::Acquired => capi::boolean(true),
            Outcome::NotAcquired => capi::boolean(false),
            Outcome::Error => ptr::null_mut(),
        }
    }
}
