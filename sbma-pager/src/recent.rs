//! Pages just loaded for a fault: a grace period against explicit
//! eviction.
//!
//! A thread whose fault was resolved still has to run its access. Under
//! userfaultfd it sleeps until the service thread's `UFFDIO_WAKE` and then
//! waits for a CPU; a thread calling [`Pager::evict_all`] in a loop can take
//! the page away again in between, and again after the next fault (seen:
//! ~18 faults per write with three writers and an evictor on two cores).
//! So an explicit eviction skips a page loaded for *another* thread's fault
//! less than [`GRACE_NS`] ago: that thread is still on its way to the
//! access. The caller's own faults get no grace (it is not waiting: it is
//! running the eviction), so `touch` then `evict_all` on one thread still
//! evicts everything.
//!
//! The record is a small ring written lock-free by the fault path (two
//! atomic stores, no allocation, no lock: async-signal-safe); an eviction
//! reads it once into a sorted array on its stack. A lost or torn entry only
//! changes which page gets the grace, never the data: the ring is a hint.
//!
//! [`Pager::evict_all`]: crate::Pager::evict_all

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// How long a page loaded for another thread's fault is spared by an
/// explicit eviction: a few scheduler wake-ups on a busy machine.
pub(crate) const GRACE_NS: u64 = 2_000_000;

/// Entries in the ring: loads by other threads within [`GRACE_NS`] that
/// can be remembered at once (older ones are overwritten: no grace).
pub(crate) const SLOTS: usize = 32;

/// Bits of the key that hold the page index; the thread id (below
/// `pid_max`'s ceiling of 2^22) is above them, so no key is [`EMPTY`].
const PAGE_BITS: u32 = 41;
const PAGE_MASK: u64 = (1 << PAGE_BITS) - 1;
const EMPTY: u64 = u64::MAX;

/// The ring of recent fault loads.
pub(crate) struct RecentLoads {
    /// `tid << PAGE_BITS | page`, or [`EMPTY`].
    keys: [AtomicU64; SLOTS],
    /// When the load finished (`CLOCK_MONOTONIC` ns).
    stamps: [AtomicU64; SLOTS],
    next: AtomicUsize,
}

impl RecentLoads {
    pub(crate) fn new() -> RecentLoads {
        RecentLoads {
            keys: core::array::from_fn(|_| AtomicU64::new(EMPTY)),
            stamps: core::array::from_fn(|_| AtomicU64::new(0)),
            next: AtomicUsize::new(0),
        }
    }

    /// Records that `page` was loaded for thread `tid`'s fault at `now`.
    /// Async-signal-safe.
    pub(crate) fn record(&self, page: usize, tid: i32, now: u64) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % SLOTS;
        self.stamps[i].store(now, Ordering::Relaxed);
        let key = (u64::from(tid as u32) << PAGE_BITS) | (page as u64 & PAGE_MASK);
        // Release: a reader that sees the key sees a stamp at least as new.
        self.keys[i].store(key, Ordering::Release);
    }

    /// The pages loaded for threads other than `me` since `now - GRACE_NS`,
    /// sorted.
    pub(crate) fn spared(&self, me: i32, now: u64) -> Spared {
        let mut out = Spared {
            pages: [0; SLOTS],
            len: 0,
        };
        for (key, stamp) in self.keys.iter().zip(&self.stamps) {
            let k = key.load(Ordering::Acquire);
            if k == EMPTY || (k >> PAGE_BITS) == u64::from(me as u32) {
                continue;
            }
            let at = stamp.load(Ordering::Relaxed);
            if now.saturating_sub(at) < GRACE_NS {
                out.pages[out.len] = (k & PAGE_MASK) as usize;
                out.len += 1;
            }
        }
        out.pages[..out.len].sort_unstable();
        out
    }
}

/// A snapshot of the pages an eviction leaves alone.
pub(crate) struct Spared {
    pages: [usize; SLOTS],
    len: usize,
}

impl Spared {
    /// Whether `page` is spared.
    pub(crate) fn contains(&self, page: usize) -> bool {
        self.len != 0 && self.pages[..self.len].binary_search(&page).is_ok()
    }

    /// How many pages are spared.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_other_threads_recent_loads_only() {
        let r = RecentLoads::new();
        r.record(7, 100, 1_000);
        r.record(3, 200, 1_000);
        r.record(9, 300, 1_000);
        let s = r.spared(200, 1_000 + GRACE_NS - 1);
        assert!(s.contains(7) && s.contains(9) && !s.contains(3));
        assert_eq!(s.len(), 2);
        // After the grace period nothing is spared.
        assert_eq!(r.spared(200, 1_000 + GRACE_NS).len(), 0);
    }

    #[test]
    fn the_ring_keeps_the_newest_loads() {
        let r = RecentLoads::new();
        for p in 0..SLOTS + 5 {
            r.record(p, 1, 10);
        }
        let s = r.spared(2, 10);
        assert_eq!(s.len(), SLOTS);
        assert!((0..5).all(|p| !s.contains(p)));
        assert!((5..SLOTS + 5).all(|p| s.contains(p)));
    }

    #[test]
    fn large_page_indexes_and_thread_ids_survive_packing() {
        let r = RecentLoads::new();
        let tid = 4_194_303; // pid_max's upper limit - 1
        r.record(PAGE_MASK as usize, tid, 5);
        assert!(r.spared(tid, 5).len() == 0);
        assert!(r.spared(1, 5).contains(PAGE_MASK as usize));
    }
}
