//! The switch between the real primitives and `loom`'s models.
//!
//! A normal build re-exports `core`'s atomics, `core::hint::spin_loop` and
//! `std::thread::yield_now` under these names: the same items, so the locks compile to exactly
//! what they did before this module existed. With `RUSTFLAGS="--cfg loom"` (see
//! `scripts/loom.sh`) the same names are loom's mocks, so every atomic access, spin and yield of
//! [`crate::lock`], [`crate::rlock`] and [`crate::event`] is a point where loom may switch
//! threads, and `clock` (under `cfg(loom)`) replaces `CLOCK_MONOTONIC` with a modelled one.
//!
//! Under `cfg(loom)` loom's atomics have no `const fn new`, so the constructors that are `const`
//! in a normal build are declared through [`const_fn_unless_loom`].

/// `AtomicU32`, `AtomicU64`, `Ordering`: `core`'s, or loom's under `cfg(loom)`.
pub(crate) mod atomic {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
}

/// `spin_loop`: the CPU hint; nothing under loom (see [`thread`]).
pub(crate) mod hint {
    #[cfg(not(loom))]
    pub(crate) use core::hint::spin_loop;

    /// Nothing: the poll's atomic load is already a point where loom may switch threads.
    #[cfg(loom)]
    #[inline]
    pub(crate) fn spin_loop() {}
}

/// `yield_now`: `sched_yield`; nothing under loom.
///
/// Loom's own `yield_now` (and `loom::hint::spin_loop`, which is the same) does not let the
/// yielding thread run again while another one can: a spinner would then never see its budget
/// run out while the holder could still run, and the spin-then-sleep path (the one where wake-ups
/// get lost) would never be explored. The locks' spins are bounded by their (modelled) clock,
/// not by other threads, so they need no yield to end; a real `sched_yield` or a CPU's
/// preemption of the spinner is a switch at one of its polls, which loom explores anyway.
pub(crate) mod thread {
    #[cfg(not(loom))]
    pub(crate) use std::thread::yield_now;

    /// Nothing: see the module docs.
    #[cfg(loom)]
    #[inline]
    pub(crate) fn yield_now() {}
}

/// Declares a `const fn` that is a plain `fn` under `cfg(loom)`, where atomics cannot be made in
/// a constant context.
macro_rules! const_fn_unless_loom {
    ($(#[$attr:meta])* $vis:vis const fn $name:ident() -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        $vis const fn $name() -> $ret $body

        #[cfg(loom)]
        $(#[$attr])*
        $vis fn $name() -> $ret $body
    };
}
pub(crate) use const_fn_unless_loom;

/// The monotonic clock of a loom model (only under `cfg(loom)`).
///
/// Each loom thread has its own clock, which starts at [`clock::START_NS`] and moves forward by
/// [`clock::TICK_NS`] at every read, so a spin or a gate watch ends after a bounded number of
/// polls whatever the other threads do, as it does in real time. A timed sleep that times out
/// in the loom backend ([`crate::wait::Loom`]) moves its thread's clock to the deadline.
///
/// Per-thread clocks are enough because the locks never compare one thread's reading with
/// another's: a thread only measures its own spin and its own deadline. How far one thread has
/// got while another spins is what loom's interleavings vary, so a release can land at every
/// poll of a spin, before it, or after the spinner went to sleep.
#[cfg(loom)]
pub mod clock {
    use std::cell::Cell;

    /// The clock of every thread at its start: 1 s, so that deadlines in the past can be made.
    pub const START_NS: u64 = 1_000_000_000;
    /// How far a thread's clock moves at every read: a quarter of a new lock's first spin
    /// budget (20 µs), so that spin takes a few clock reads before it ends.
    pub const TICK_NS: u64 = 5_000;

    loom::thread_local! {
        static NOW: Cell<u64> = Cell::new(START_NS);
    }

    /// Reads (and advances) the calling thread's clock.
    pub fn now_nanos() -> u64 {
        NOW.with(|now| {
            let t = now.get().saturating_add(TICK_NS);
            now.set(t);
            t
        })
    }

    /// The calling thread's clock, without advancing it.
    pub fn peek_nanos() -> u64 {
        NOW.with(Cell::get)
    }

    /// Moves the calling thread's clock forward to `nanos` (never back).
    pub fn advance_to(nanos: u64) {
        NOW.with(|now| now.set(now.get().max(nanos)));
    }
}
