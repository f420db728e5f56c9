//! Thread creation, stack sizes, idents and native ids.

mod common;

use core::ffi::c_void;
use std::collections::HashSet;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;

use rthread_core::thread::{
    self, check_stack_size, current_ident, native_id, spawn, spawn_raw, StackSizeError,
};

/// What a raw thread reports about itself.
#[derive(Debug)]
struct Report {
    ident: u64,
    native: u64,
    stack: usize,
}

/// The calling thread's stack size, from `pthread_getattr_np`.
fn own_stack_size() -> usize {
    let mut attr = core::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
    // SAFETY: `attr` is writable; `pthread_getattr_np` initialises it on success.
    let rc = unsafe { libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) };
    assert_eq!(rc, 0);
    let mut addr = core::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY:
    // - `attr` was initialised by the successful `pthread_getattr_np` above.
    // - `addr` and `size` are valid out-pointers.
    let rc = unsafe { libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size) };
    assert_eq!(rc, 0);
    // SAFETY: `attr` is initialised and destroyed once.
    unsafe { libc::pthread_attr_destroy(attr.as_mut_ptr()) };
    size
}

fn report() -> Report {
    Report {
        ident: current_ident(),
        native: native_id(),
        stack: own_stack_size(),
    }
}

unsafe extern "C-unwind" fn report_entry(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Box<Sender<Report>>` leaked by `spawn_reporter`, owned by this
    // thread now that `spawn_raw` succeeded.
    let tx = unsafe { Box::from_raw(arg.cast::<Sender<Report>>()) };
    let _ = tx.send(report());
    core::ptr::null_mut()
}

/// Starts a raw thread with `stack` and returns (the ident `spawn_raw` returned, its report).
fn spawn_reporter(stack: usize) -> (u64, Report) {
    let (tx, rx) = mpsc::channel();
    let arg = Box::into_raw(Box::new(tx)).cast::<c_void>();
    // SAFETY:
    // - `report_entry` takes ownership of `arg`, a `Box<Sender<Report>>`, which is `Send`.
    // - On error we reclaim the box below.
    let r = unsafe { spawn_raw(stack, report_entry, arg) };
    let ident = match r {
        Ok(ident) => ident,
        Err(e) => {
            // SAFETY: the thread was not started, so the box is still ours.
            drop(unsafe { Box::from_raw(arg.cast::<Sender<Report>>()) });
            panic!("spawn_raw failed: {e}");
        }
    };
    let report = rx
        .recv_timeout(common::HANG)
        .expect("thread did not report");
    (ident, report)
}

fn rlimit_stack_soft() -> Option<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable `rlimit`.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut lim) };
    assert_eq!(rc, 0);
    if lim.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        usize::try_from(lim.rlim_cur).ok()
    }
}

#[test]
fn default_stack_is_rlimit_stack() {
    let (ident, rep) = spawn_reporter(0);
    assert_eq!(ident, rep.ident);
    match rlimit_stack_soft() {
        // glibc's default thread stack is the RLIMIT_STACK soft limit (page-rounded), as
        // CPython's threads get; never Rust std's 2 MiB.
        Some(limit) if limit >= thread::STACK_SIZE_MIN => assert_eq!(rep.stack, limit),
        // Unlimited or tiny: glibc picks its own default.
        _ => assert!(rep.stack >= thread::STACK_SIZE_MIN),
    }
}

#[test]
fn explicit_stack_is_applied() {
    for size in [256 * 1024, 300_001, 1 << 20, 4 << 20] {
        let (_, rep) = spawn_reporter(size);
        assert_stack_applied(size, rep.stack);
    }
}

/// glibc rounds a requested stack size down to its TLS alignment (a few bytes), and may hand
/// a new thread a cached stack of an exited thread that is up to four times larger than asked.
fn assert_stack_applied(requested: usize, got: usize) {
    assert!(
        got + 4096 >= requested && got <= 4 * requested,
        "requested {requested}, got {got}"
    );
}

#[test]
fn idents_and_native_ids() {
    let mine = report();
    // SAFETY: `gettid` has no preconditions.
    let tid = unsafe { libc::gettid() };
    assert_eq!(native_id(), u64::try_from(tid).unwrap());
    assert_ne!(mine.ident, 0);

    let mut idents = HashSet::from([mine.ident]);
    let mut natives = HashSet::from([mine.native]);
    // Keep all threads alive together so that no ident can be reused between them.
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let r = report();
                // SAFETY: `gettid` has no preconditions.
                let tid = unsafe { libc::gettid() };
                assert_eq!(r.native, u64::try_from(tid).unwrap());
                barrier.wait();
                r
            })
        })
        .collect();
    for r in common::join_all_within(handles, common::HANG) {
        assert!(idents.insert(r.ident), "duplicate ident {}", r.ident);
        assert!(natives.insert(r.native), "duplicate native id {}", r.native);
    }
}

#[test]
fn check_stack_size_matches_cpython() {
    assert_eq!(check_stack_size(-1), Err(StackSizeError::Negative));
    assert_eq!(check_stack_size(1), Err(StackSizeError::Invalid(1)));
    assert_eq!(check_stack_size(32767), Err(StackSizeError::Invalid(32767)));
    assert_eq!(check_stack_size(0), Ok(0));
    assert_eq!(check_stack_size(32768), Ok(32768));
    assert_eq!(check_stack_size(32769), Ok(32769));
}

/// Everything that touches the process-wide stack size, in one test so that parallel tests in
/// this binary never see a changed value.
#[test]
fn spawn_uses_process_wide_stack_size() {
    assert_eq!(thread::stack_size(), 0);

    // Default: the closure sees glibc's default stack, as with `spawn_raw(0, ..)`.
    let (tx, rx) = mpsc::channel();
    let ident = spawn(move || tx.send(report()).unwrap()).unwrap();
    let rep = rx.recv_timeout(common::HANG).unwrap();
    assert_eq!(ident, rep.ident);
    let (_, raw_default) = spawn_reporter(0);
    assert_eq!(rep.stack, raw_default.stack);

    // A set size is used, and `set_stack_size` returns the previous one.
    assert_eq!(thread::set_stack_size(512 * 1024), 0);
    let (tx, rx) = mpsc::channel();
    spawn(move || tx.send(report()).unwrap()).unwrap();
    let rep = rx.recv_timeout(common::HANG).unwrap();
    assert_stack_applied(512 * 1024, rep.stack);

    // A size no thread can have: the error comes back and the closure is dropped, not leaked.
    assert_eq!(thread::set_stack_size(1 << 60), 512 * 1024);
    let token = Arc::new(());
    let held = Arc::clone(&token);
    let err = spawn(move || drop(held)).unwrap_err();
    assert!(err.raw_os_error().is_some(), "{err}");
    assert_eq!(Arc::strong_count(&token), 1);

    assert_eq!(thread::set_stack_size(0), 1 << 60);
}

#[test]
fn spawn_survives_a_panicking_closure() {
    let (tx, rx) = mpsc::channel::<()>();
    spawn(move || {
        let _tx = tx;
        panic!("intentional panic from an rthread test (expected in the output)");
    })
    .unwrap();
    // The sender is dropped during unwinding, so the channel reports disconnection.
    assert_eq!(
        rx.recv_timeout(common::HANG),
        Err(mpsc::RecvTimeoutError::Disconnected)
    );
    // And the process carries on starting threads.
    let (tx, rx) = mpsc::channel();
    spawn(move || tx.send(7).unwrap()).unwrap();
    assert_eq!(rx.recv_timeout(common::HANG), Ok(7));
}

extern "C-unwind" {
    // libc declares `pthread_exit` as `extern "C"`; it ends the thread with a forced unwind,
    // which must be allowed to leave the function.
    fn pthread_exit(value: *mut c_void) -> !;
}

unsafe extern "C-unwind" fn exit_entry(arg: *mut c_void) -> *mut c_void {
    {
        // SAFETY: `arg` is the `Box<Sender<u64>>` leaked by the test, owned by this thread.
        let tx = unsafe { Box::from_raw(arg.cast::<Sender<u64>>()) };
        let _ = tx.send(current_ident());
        // Dropped here: nothing with a destructor is alive during the forced unwind.
    }
    // SAFETY: ends only this thread; there are no Rust frames with live destructors between
    // here and the `C-unwind` start routine boundary.
    unsafe { pthread_exit(core::ptr::null_mut()) }
}

#[test]
fn forced_unwind_through_raw_entry() {
    let (tx, rx) = mpsc::channel::<u64>();
    let arg = Box::into_raw(Box::new(tx)).cast::<c_void>();
    // SAFETY: `exit_entry` takes ownership of the boxed sender; the thread was started (unwrap),
    // so we do not reclaim it.
    let ident = unsafe { spawn_raw(0, exit_entry, arg) }.unwrap();
    assert_eq!(rx.recv_timeout(common::HANG), Ok(ident));
    // The thread ended through pthread_exit without aborting the process; another thread
    // still starts and runs.
    let (tx, rx) = mpsc::channel();
    spawn(move || tx.send(1).unwrap()).unwrap();
    assert_eq!(rx.recv_timeout(common::HANG), Ok(1));
}

#[test]
fn current_ident_is_pthread_self_on_every_thread() {
    fn check() -> u64 {
        let me = rthread_core::thread::current_ident();
        // SAFETY: `pthread_self` has no preconditions.
        let pthread = unsafe { libc::pthread_self() } as u64;
        assert_eq!(me, pthread);
        assert_ne!(me, 0);
        me
    }
    let main = check();
    let others: Vec<u64> = (0..4)
        .map(|_| std::thread::spawn(check))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(others.iter().all(|&t| t != main));
}
