//! [`Doorbell`]: wakes a background thread from any thread, including the
//! fault handler.
//!
//! Ringing is one atomic increment and, only if the thread sleeps, one
//! `futex(FUTEX_WAKE_PRIVATE)`: async-signal-safe, no allocation, no lock.
//! The sleeper reads the generation, announces that it sleeps, re-checks
//! its condition and sleeps only while the generation is unchanged, so a
//! ring that comes after the check (or between the check and the sleep)
//! is never lost. All accesses are `SeqCst`: the state the condition reads
//! is published before the ring that follows it.

use crate::sys;
use core::sync::atomic::{AtomicU32, Ordering};

/// A futex-backed wake-up for the threads sleeping on it.
#[derive(Default)]
pub(crate) struct Doorbell {
    generation: AtomicU32,
    sleepers: AtomicU32,
}

impl Doorbell {
    /// Wakes the threads that sleep, and makes a [`wait`](Self::wait) that
    /// is about to sleep return at once. Async-signal-safe.
    pub fn ring(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            sys::futex_wake_all(&self.generation);
        }
    }

    /// Sleeps until rung, unless `idle()` is false when checked (after the
    /// sleep is announced). May also return spuriously (signals).
    pub fn wait(&self, idle: impl FnOnce() -> bool) {
        let seen = self.generation.load(Ordering::SeqCst);
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        if idle() {
            sys::futex_wait(&self.generation, seen);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::Doorbell;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn no_ring_is_lost() {
        // A consumer sleeps while no work is posted; a producer posts and
        // rings 10,000 times. A lost ring would leave the consumer asleep
        // with work posted, and the join would hang.
        let bell = Arc::new(Doorbell::default());
        let posted = Arc::new(AtomicUsize::new(0));
        let consumer = {
            let (bell, posted) = (bell.clone(), posted.clone());
            std::thread::spawn(move || {
                let mut taken = 0;
                while taken < 10_000 {
                    if posted.load(Ordering::SeqCst) > taken {
                        taken += 1;
                        continue;
                    }
                    bell.wait(|| posted.load(Ordering::SeqCst) == taken);
                }
                taken
            })
        };
        for _ in 0..10_000 {
            posted.fetch_add(1, Ordering::SeqCst);
            bell.ring();
            if posted.load(Ordering::Relaxed) % 64 == 0 {
                std::thread::yield_now();
            }
        }
        assert_eq!(consumer.join().unwrap(), 10_000);
    }
}
