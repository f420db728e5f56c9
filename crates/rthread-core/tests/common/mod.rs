//! Helpers shared by the integration tests: bounded joins, so that a deadlock fails the test
//! instead of hanging the run.

#![allow(dead_code)]

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Generous bound for anything that should finish in milliseconds; a test that takes this
/// long has deadlocked.
pub const HANG: Duration = Duration::from_secs(20);

/// Joins `handle`, failing the test if the thread has not finished within `limit`.
pub fn join_within<T>(handle: JoinHandle<T>, limit: Duration) -> T {
    let start = Instant::now();
    while !handle.is_finished() {
        assert!(
            start.elapsed() < limit,
            "thread did not finish within {limit:?}: deadlock?"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    match handle.join() {
        Ok(v) => v,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

/// Joins every handle within one shared `limit`.
pub fn join_all_within<T>(handles: Vec<JoinHandle<T>>, limit: Duration) -> Vec<T> {
    let start = Instant::now();
    handles
        .into_iter()
        .map(|h| join_within(h, limit.saturating_sub(start.elapsed())))
        .collect()
}
