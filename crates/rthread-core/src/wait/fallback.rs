//! The portable backend: a fixed table of `Mutex` + `Condvar` buckets.
//!
//! Each word hashes (by address) to one of [`BUCKETS`] buckets. A waiter locks its bucket,
//! checks the word, and sleeps on the bucket's condvar; a waker locks the bucket and notifies.
//! The table is a `static` array, so there is no allocation and no per-lock memory: a lock stays
//! one `AtomicU32` on every platform.
//!
//! Several words may share a bucket, so `wake_one` has to use `notify_all`: `notify_one` could
//! pick a waiter of another word and the intended waiter would sleep on. Woken waiters of other
//! words see their word unchanged, report [`WaitResult::Woken`], and their lock loops simply wait
//! again. The locks only call `wake_one` when a waiter is known to be asleep (state
//! `CONTENDED`), so this costs little in practice.
//!
//! `std`'s `Condvar` retries `EINTR` internally, so this backend never returns
//! [`WaitResult::Interrupted`].
//!
//! # Notes about memory ordering
//!
//! The check of `*word` is a `Relaxed` load made while holding the bucket mutex. That is enough
//! for the no-lost-wake-up contract: a waker changes the word *before* it locks the bucket, so
//! either the waker's critical section comes first, and the mutex's release/acquire makes the
//! new value visible to the waiter's load, or the waiter's comes first, and the waiter is
//! already queued on the condvar (which unlocks the mutex atomically) when the waker notifies.
//! The caller's own orderings (see [`crate::wait`]) cover everything else.

use core::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use super::{Wait, WaitResult};
use crate::deadline::Deadline;

/// Number of buckets; a power of two. 64 buckets cost a few KiB of static memory and make
/// collisions between a handful of hot locks unlikely.
const BUCKETS: usize = 64;

struct Bucket {
    mutex: Mutex<()>,
    condvar: Condvar,
}

impl Bucket {
    const fn new() -> Bucket {
        Bucket {
            mutex: Mutex::new(()),
            condvar: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The mutex guards no data, so a poisoned one is as good as a healthy one.
        self.mutex.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

static TABLE: [Bucket; BUCKETS] = [const { Bucket::new() }; BUCKETS];

fn bucket(word: &AtomicU32) -> &'static Bucket {
    // Fibonacci hashing of the address; the low two bits are always zero for a u32.
    let addr = word.as_ptr() as usize as u64;
    let hash = (addr >> 2).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // The top bits of the product are the well-mixed ones.
    let index = (hash >> (64 - BUCKETS.trailing_zeros())) as usize;
    &TABLE[index]
}

/// The portable `Mutex` + `Condvar` backend. Zero-sized.
#[derive(Clone, Copy, Debug, Default)]
pub struct Fallback;

impl Wait for Fallback {
    fn wait(word: &AtomicU32, expected: u32, deadline: Option<Deadline>) -> WaitResult {
        let bucket = bucket(word);
        let guard = bucket.lock();
        if word.load(Ordering::Relaxed) != expected {
            return WaitResult::Woken;
        }
        match deadline {
            None => {
                drop(
                    bucket
                        .condvar
                        .wait(guard)
                        .unwrap_or_else(PoisonError::into_inner),
                );
                WaitResult::Woken
            }
            Some(deadline) => {
                let remaining = deadline.remaining();
                if remaining.is_zero() {
                    return WaitResult::TimedOut;
                }
                let (guard, _) = bucket
                    .condvar
                    .wait_timeout(guard, remaining)
                    .unwrap_or_else(PoisonError::into_inner);
                drop(guard);
                // Judge by our own clock, not the condvar's verdict, so "timed out" always
                // means "the deadline has passed".
                if deadline.has_passed() {
                    WaitResult::TimedOut
                } else {
                    WaitResult::Woken
                }
            }
        }
    }

    fn wake_one(word: &AtomicU32) {
        // See the module docs: buckets are shared, so waking one is not enough.
        Self::wake_all(word);
    }

    fn wake_all(word: &AtomicU32) {
        let bucket = bucket(word);
        // Taking the mutex orders this wake-up after any waiter's check of the word.
        drop(bucket.lock());
        bucket.condvar.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_index_in_range_and_spread() {
        let words: Vec<AtomicU32> = (0..256).map(AtomicU32::new).collect();
        let mut used = [false; BUCKETS];
        for w in &words {
            let b = bucket(w) as *const Bucket;
            let index = (b as usize - TABLE.as_ptr() as usize) / core::mem::size_of::<Bucket>();
            used[index] = true;
        }
        // 256 consecutive words should land in most buckets.
        assert!(used.iter().filter(|&&u| u).count() > BUCKETS / 2);
    }
}
