//! Canaries for `scripts/sanitizers.sh`: each does one thing a sanitizer must report, so the
//! script can check that the sanitizer it asked for is really in the build (a flag dropped on
//! the way would otherwise turn the whole tier into a silent pass).
//!
//! They are ignored, and do nothing unless `RTHREAD_SAN_CANARY` names their sanitizer: the
//! script runs them with `--ignored` and expects the run to fail with the sanitizer's report.

use std::sync::{Arc, Barrier};

fn armed(sanitizer: &str) -> bool {
    std::env::var("RTHREAD_SAN_CANARY").as_deref() == Ok(sanitizer)
}

#[test]
#[ignore = "run by scripts/sanitizers.sh, which expects AddressSanitizer to report it"]
fn address_canary_use_after_free() {
    if !armed("address") {
        return;
    }
    let boxed = Box::new(0x5eed_u64);
    let p: *const u64 = &*boxed;
    drop(boxed);
    // SAFETY: none: this deliberately reads freed memory, for AddressSanitizer to report
    // (heap-use-after-free). It only runs in a sanitizer build, with the variable set.
    let v = unsafe { std::ptr::read_volatile(p) };
    std::hint::black_box(v);
}

#[test]
#[ignore = "run by scripts/sanitizers.sh, which expects LeakSanitizer to report it"]
fn address_canary_leak() {
    if !armed("address") {
        return;
    }
    // The only pointer to the block is dropped without freeing it: a definite leak.
    let v: Vec<u8> = std::hint::black_box(vec![7; 4096]);
    std::mem::forget(v);
}

/// Two threads write one plain (non-atomic) integer with nothing ordering the writes.
#[test]
#[ignore = "run by scripts/sanitizers.sh, which expects ThreadSanitizer to report it"]
fn thread_canary_data_race() {
    if !armed("thread") {
        return;
    }
    struct Shared(*mut u64);
    // SAFETY: deliberately not: the pointer is sent so that two threads race on it.
    unsafe impl Send for Shared {}
    let cell = Box::into_raw(Box::new(0_u64));
    // A barrier makes the two writes close in time; its own synchronisation comes before
    // both writes, so it orders neither after the other.
    let barrier = Arc::new(Barrier::new(2));
    let shared = Shared(cell);
    let b2 = Arc::clone(&barrier);
    let other = std::thread::spawn(move || {
        let shared = shared;
        b2.wait();
        // SAFETY: none: an unsynchronised write racing with the main thread's, for
        // ThreadSanitizer to report. The pointee outlives both writes (freed after join).
        unsafe { std::ptr::write_volatile(shared.0, 1) };
    });
    barrier.wait();
    // SAFETY: as above, the racing write on this side.
    unsafe { std::ptr::write_volatile(cell, 2) };
    other.join().unwrap();
    // SAFETY: `cell` came from `Box::into_raw` and both writers are done.
    drop(unsafe { Box::from_raw(cell) });
}
