//! `cargo bench -p rthread-core`: the core [`Lock`] next to `std::sync::Mutex` and
//! `parking_lot::Mutex`.
//!
//! - `uncontended`: one thread takes and releases a free lock; time per lock + unlock.
//! - `contended_2`: two threads increment one counter under the lock; time per increment (the
//!   two threads' increments added up).
//! - `handoff`: two threads take strict turns; time per round trip (two handoffs).
//!
//! Every lock runs the same protocol through a small [`BenchLock`] trait, and every release is
//! made by the thread that acquired (std's and parking_lot's guards cannot be released from
//! another thread). That is why the handoff uses three locks instead of Python's two; see
//! [`handoff`].
//!
//! The measurement and warm-up times are kept short so the whole run takes a few tens of
//! seconds; criterion's own flags (`--measurement-time`, `--sample-size`, a name filter) still
//! apply: `cargo bench -p rthread-core -- handoff --measurement-time 10`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use rthread_core::Lock;

/// The operations the benchmarks need from a lock: take it, and release it by dropping a guard.
trait BenchLock: Default + Sync {
    /// Held while alive; dropping it releases the lock.
    type Guard<'a>
    where
        Self: 'a;

    /// Takes the lock, blocking as long as needed.
    fn take(&self) -> Self::Guard<'_>;
}

/// Releases a core [`Lock`] on drop, so the core lock runs the same code as the mutexes.
struct CoreGuard<'a>(&'a Lock);

impl Drop for CoreGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.release().expect("the guard's lock is held");
    }
}

impl BenchLock for Lock {
    type Guard<'a> = CoreGuard<'a>;

    #[inline]
    fn take(&self) -> CoreGuard<'_> {
        self.acquire();
        CoreGuard(self)
    }
}

impl BenchLock for std::sync::Mutex<()> {
    type Guard<'a> = std::sync::MutexGuard<'a, ()>;

    #[inline]
    fn take(&self) -> Self::Guard<'_> {
        self.lock().expect("no thread panics while holding it")
    }
}

impl BenchLock for parking_lot::Mutex<()> {
    type Guard<'a> = parking_lot::MutexGuard<'a, ()>;

    #[inline]
    fn take(&self) -> Self::Guard<'_> {
        self.lock()
    }
}

/// Time for `iters` lock + unlock pairs on a free lock.
fn uncontended<L: BenchLock>(iters: u64) -> Duration {
    let lock = L::default();
    let start = Instant::now();
    for _ in 0..iters {
        let guard = lock.take();
        black_box(&guard);
        drop(guard);
    }
    start.elapsed()
}

/// Time for two threads to make `iters` increments between them, each under the lock.
///
/// The counter is an atomic only so that it needs no `unsafe`; inside the critical section it is
/// read and written with `Relaxed` loads and stores, as a plain integer would be.
fn contended_2<L: BenchLock>(iters: u64) -> Duration {
    let lock = L::default();
    let counter = AtomicU64::new(0);
    let per_thread = iters.div_ceil(2);
    let ready = Barrier::new(3);
    let start = thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                ready.wait();
                for _ in 0..per_thread {
                    let _guard = lock.take();
                    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                }
            });
        }
        ready.wait();
        Instant::now()
    });
    let elapsed = start.elapsed();
    assert_eq!(counter.into_inner(), 2 * per_thread);
    elapsed
}

/// Time for `iters` round trips of two threads taking strict turns.
///
/// Three locks, and only owners release. Thread A starts holding locks 0 and 1, thread B lock 2.
/// In step `j`, A releases lock `j % 3` (B's turn) and then takes lock `(j + 2) % 3` (waits for
/// B); B takes lock `j % 3` (waits for A) and then releases lock `(j + 2) % 3` (A's turn). Each
/// thread always takes a lock the other holds, so the two strictly alternate, and after every
/// step A holds two locks and B one, as at the start.
fn handoff<L: BenchLock>(iters: u64) -> Duration {
    let locks: [L; 3] = Default::default();
    let ready = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            let mut held: [Option<L::Guard<'_>>; 3] = [None, None, Some(locks[2].take())];
            ready.wait();
            for j in 0..iters {
                let j = (j % 3) as usize;
                held[j] = Some(locks[j].take());
                held[(j + 2) % 3] = None;
            }
        });
        let mut held: [Option<L::Guard<'_>>; 3] =
            [Some(locks[0].take()), Some(locks[1].take()), None];
        ready.wait();
        let start = Instant::now();
        for j in 0..iters {
            let j = (j % 3) as usize;
            held[j] = None;
            held[(j + 2) % 3] = Some(locks[(j + 2) % 3].take());
        }
        start.elapsed()
    })
}

/// One benchmark group comparing the three locks on `$run::<L>`.
macro_rules! compare {
    ($c:expr, $group:literal, $run:ident) => {{
        let mut group = $c.benchmark_group($group);
        group.bench_function("rthread_core::Lock", |b| b.iter_custom($run::<Lock>));
        group.bench_function("std::sync::Mutex", |b| {
            b.iter_custom($run::<std::sync::Mutex<()>>)
        });
        group.bench_function("parking_lot::Mutex", |b| {
            b.iter_custom($run::<parking_lot::Mutex<()>>)
        });
        group.finish();
    }};
}

fn locks(c: &mut Criterion) {
    compare!(c, "uncontended", uncontended);
    compare!(c, "contended_2", contended_2);
    compare!(c, "handoff", handoff);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = locks
}
criterion_main!(benches);
