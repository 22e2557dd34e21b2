//! [`FutexLock`]: a mutex usable from the fault handler.
//!
//! Three-state futex mutex (0 free, 1 held, 2 held with sleepers; Drepper,
//! "Futexes Are Tricky", mutex 2): lock and unlock are atomics plus
//! `futex` syscalls, nothing else, so the fault handler may take it. It
//! records its owner's thread id, so a thread that faults while holding it
//! (an asynchronous signal handler touching managed memory in the middle of
//! the pager's own code) gets [`Reentered`] instead of deadlocking.
//!
//! Callers must not touch managed memory while holding a `FutexLock`: that
//! is what makes the fault path unable to wait on a lock its own thread
//! holds.
#![allow(unsafe_code, reason = "a mutex hands out access to its UnsafeCell")]

use crate::sys;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicI32, AtomicU32, Ordering};

/// A futex mutex that detects re-entry by its owner thread.
pub struct FutexLock<T> {
    state: AtomicU32,
    owner: AtomicI32,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises all access to `data`, which is only sent
// between threads (never shared unsynchronised), so `T: Send` suffices.
unsafe impl<T: Send> Sync for FutexLock<T> {}
// SAFETY: owning the lock owns the `T`.
unsafe impl<T: Send> Send for FutexLock<T> {}

/// The calling thread already holds the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reentered;

impl<T> FutexLock<T> {
    /// A free lock around `data`.
    pub fn new(data: T) -> FutexLock<T> {
        FutexLock {
            state: AtomicU32::new(0),
            owner: AtomicI32::new(0),
            data: UnsafeCell::new(data),
        }
    }

    /// Takes the lock, sleeping while another thread holds it.
    ///
    /// # Errors
    /// [`Reentered`] if the calling thread holds it already.
    pub fn lock(&self) -> Result<FutexGuard<'_, T>, Reentered> {
        let me = sys::thread_id();
        if self.owner.load(Ordering::Relaxed) == me {
            return Err(Reentered);
        }
        if self
            .state
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.state.swap(2, Ordering::Acquire) != 0 {
                sys::futex_wait(&self.state, 2);
            }
        }
        self.owner.store(me, Ordering::Relaxed);
        Ok(FutexGuard { lock: self })
    }
}

impl<T> FutexLock<T> {
    /// Releases the lock without a guard (one taken by `lock` and
    /// forgotten, held across a `fork`).
    ///
    /// # Safety
    /// The lock is held, by the caller's logic, and no guard for it
    /// exists.
    pub unsafe fn force_unlock(&self) {
        self.owner.store(0, Ordering::Relaxed);
        if self.state.swap(0, Ordering::Release) == 2 {
            sys::futex_wake(&self.state, 1);
        }
    }
}

/// Access to the data while the lock is held.
pub struct FutexGuard<'a, T> {
    lock: &'a FutexLock<T>,
}

impl<T> Deref for FutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard's existence means this thread holds the lock.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for FutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes it unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for FutexGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.owner.store(0, Ordering::Relaxed);
        if self.lock.state.swap(0, Ordering::Release) == 2 {
            sys::futex_wake(&self.lock.state, 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn excludes_and_detects_reentry() {
        let l = Arc::new(FutexLock::new(0u64));
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *l.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let g = l.lock().unwrap();
        assert_eq!(*g, 40_000);
        assert_eq!(l.lock().err(), Some(Reentered));
    }
}
