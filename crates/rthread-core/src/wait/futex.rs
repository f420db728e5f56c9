//! The Linux backend: `futex(2)`.
//!
//! Waits use `FUTEX_WAIT_BITSET` with an *absolute* `CLOCK_MONOTONIC` timeout (the clock
//! `FUTEX_WAIT_BITSET` uses unless `FUTEX_CLOCK_REALTIME` is given), so retrying after `EINTR`
//! never extends the deadline. Everything is `FUTEX_PRIVATE_FLAG`: the words are never shared
//! between processes, and private futexes skip the kernel's shared-mapping lookup.
//!
//! This file performs no atomic operation of its own (the kernel reads the word), so it has no
//! memory-ordering notes; see the module docs of [`crate::wait`] for the contract.

use core::ptr;
use core::sync::atomic::AtomicU32;

use super::{Wait, WaitResult};
use crate::deadline::Deadline;

/// The `futex(2)` backend (Linux only). Zero-sized.
#[derive(Clone, Copy, Debug, Default)]
pub struct Futex;

impl Wait for Futex {
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult {
        let timespec = deadline.map(|d| d.as_timespec());
        let timeout: *const libc::timespec = match &timespec {
            Some(ts) => ts,
            None => ptr::null(),
        };
        // SAFETY:
        // - `word.as_ptr()` points to a live, aligned u32 for the whole call (we hold `&word`);
        //   the kernel only reads it atomically, which is compatible with our atomic accesses.
        // - `timeout` is null (wait forever) or points to `timespec`, which outlives the call.
        // - The fifth argument (uaddr2) is ignored by FUTEX_WAIT_BITSET; the sixth is the bitset.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET | libc::FUTEX_PRIVATE_FLAG,
                expected,
                timeout,
                ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r >= 0 {
            return WaitResult::Woken;
        }
        match errno() {
            libc::ETIMEDOUT => WaitResult::TimedOut,
            libc::EINTR => WaitResult::Interrupted,
            // EAGAIN: `*word != expected` when the kernel looked: the caller re-checks.
            libc::EAGAIN => WaitResult::Woken,
            other => {
                // EFAULT/EINVAL/ENOSYS cannot happen with the arguments above. Report a
                // spurious wake-up (the caller re-checks) rather than panicking inside a lock.
                debug_assert!(false, "futex wait failed with errno {other}");
                WaitResult::Woken
            }
        }
    }

    fn wake_one(word: &AtomicU32) {
        wake(word, 1);
    }

    fn wake_all(word: &AtomicU32) {
        wake(word, i32::MAX);
    }
}

fn wake(word: &AtomicU32, count: i32) {
    // SAFETY: FUTEX_WAKE only uses the word's address as a key to find waiters; it does not
    // access memory. The address comes from a live reference. The remaining arguments are
    // unused by FUTEX_WAKE.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        )
    };
    debug_assert!(r >= 0, "futex wake failed with errno {}", errno());
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
