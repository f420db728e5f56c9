//! The call-free common cases of `RawRLock` (`try_acquire_common`, `try_release_common`) agree
//! with the general calls, and decline (changing nothing) where those must decide.
use std::sync::Arc;
use std::time::Duration;

use rthread_core::{Deadline, RLock};

fn me() -> u64 {
    rthread_core::thread::current_ident()
}

#[test]
fn take_reenter_and_release() {
    let r = RLock::new();
    let me = me();
    assert!(r.try_acquire_common(me));
    assert!(r.try_acquire_common(me));
    assert_eq!((r.owner(), r.count()), (me, 2));
    assert!(r.try_release_common(me));
    assert_eq!((r.owner(), r.count(), r.is_locked()), (me, 1, true));
    assert!(r.try_release_common(me));
    assert_eq!((r.owner(), r.count(), r.is_locked()), (0, 0, false));
    // Not the owner (nobody is): declines, like `release` which would fail.
    assert!(!r.try_release_common(me));
    assert!(r.release(me).is_err());
}

#[test]
fn declines_what_the_general_calls_decide() {
    let r = RLock::new();
    let me = me();
    // A count of 0 left by `_acquire_restore`: no re-entry, no release here.
    let now = Some(Deadline::now());
    assert_eq!(
        r.acquire_restore_until(0, me, now),
        rthread_core::Acquire::Acquired
    );
    assert!(!r.try_acquire_common(me));
    assert!(!r.try_release_common(me));
    assert_eq!((r.owner(), r.count(), r.is_locked()), (me, 0, true));
    // A count at its top: declines (overflow or wrap is the binding's decision).
    assert!(r.set_count_if_owner(me, u64::MAX - 1));
    assert!(!r.try_acquire_common(me));
    assert_eq!(r.count(), u64::MAX - 1);
}

#[test]
fn declines_a_lock_held_elsewhere_and_a_release_with_a_waiter() {
    let me = me();
    // Each attempt: hold the lock, let a waiter go to sleep on it, then try the common
    // release, which must decline and leave the lock as it was. If the waiter was not asleep
    // yet the release goes through (correctly), the waiter takes the lock, and the next
    // attempt waits longer.
    for attempt in 1..=30u64 {
        let r = Arc::new(RLock::new());
        assert!(r.try_acquire_common(me));
        let r2 = Arc::clone(&r);
        let waiter = std::thread::spawn(move || {
            let them = rthread_core::thread::current_ident();
            assert!(!r2.try_acquire_common(them), "held by the main thread");
            assert_eq!(
                r2.acquire_until(them, None),
                rthread_core::Acquire::Acquired
            );
            assert_eq!((r2.owner(), r2.count()), (them, 1));
            r2.release(them).unwrap();
        });
        std::thread::sleep(Duration::from_millis(10 * attempt));
        if r.try_release_common(me) {
            waiter.join().unwrap();
            continue;
        }
        assert_eq!((r.owner(), r.count(), r.is_locked()), (me, 1, true));
        r.release(me).unwrap();
        waiter.join().unwrap();
        assert!(!r.is_locked());
        return;
    }
    panic!("the waiter never went to sleep on the lock");
}
