//! Counters, updated with relaxed atomics from the fault path.

use core::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of a pager's statistics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Read faults resolved.
    pub read_faults: u64,
    /// Write faults resolved (a first write to a page counts once).
    pub write_faults: u64,
    /// Faults that found the page already accessible or had to wait for
    /// another thread's operation on it.
    pub waits: u64,
    /// Pages filled from the backing file.
    pub pages_read: u64,
    /// Pages made accessible as zeros (never written, or cleared).
    pub pages_zeroed: u64,
    /// Pages written to the backing file.
    pub pages_written: u64,
    /// Write-back calls (each one contiguous run of pages).
    pub write_runs: u64,
    /// Pages dropped from memory by eviction.
    pub pages_evicted: u64,
    /// Of those, pages the background writer evicted ahead of need.
    pub pages_evicted_ahead: u64,
    /// Pages read in by the background prefetcher.
    pub pages_prefetched: u64,
    /// Never-written pages made writable ahead of a sequential run of first
    /// writes (counted in `pages_zeroed` too).
    pub pages_zeroed_ahead: u64,
    /// Bytes read from the backing file.
    pub bytes_read: u64,
    /// Bytes written to the backing file.
    pub bytes_written: u64,
    /// Nanoseconds spent in backing-file reads.
    pub read_ns: u64,
    /// Nanoseconds spent in backing-file writes.
    pub write_ns: u64,
    /// Bytes charged to the budget now (by this process, in a group).
    pub resident: u64,
    /// In a group: bytes charged by all its members now.
    pub group_resident: u64,
    /// In a group: times a fault asked peers to give memory back (below
    /// its fair share, or with nothing of its own left to evict).
    pub peer_requests: u64,
    /// In a group: nanoseconds faults spent waiting for peers to release
    /// memory (SBMA's admission time, `tv_ad`).
    pub peer_wait_ns: u64,
    /// In a group: requests from peers this process served (SBMA's
    /// "signals received").
    pub requests_received: u64,
    /// In a group: served requests that freed at least one page (SBMA's
    /// "signals honoured").
    pub requests_honoured: u64,
    /// In a group: pages evicted because peers asked.
    pub pages_given_to_peers: u64,
    /// Pages whose backing-file slot was copied aside before a rewrite,
    /// for forked children that had not exec'd yet (see `docs/fork.md`).
    pub pages_preserved: u64,
    /// Pages whose contents moved to another place without a copy through
    /// memory (`realloc` of large objects: `mremap`, `copy_file_range`).
    pub pages_moved: u64,
    /// In a forked child: loads admitted past the budget because the child
    /// held only pages it had dirtied (which it cannot write back).
    pub child_overcommits: u64,
    /// Dirty bytes now.
    pub dirty: u64,
    /// Highest number of bytes charged at once.
    pub peak_resident: u64,
    /// The budget.
    pub budget: u64,
    /// The fault backend in use.
    pub backend: crate::Backend,
    /// Why [`Backend::Auto`](crate::Backend::Auto) chose the signal
    /// backend (userfaultfd unavailable), if it did.
    pub backend_note: Option<&'static str>,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub read_faults: AtomicU64,
    pub write_faults: AtomicU64,
    pub waits: AtomicU64,
    pub pages_read: AtomicU64,
    pub pages_zeroed: AtomicU64,
    pub pages_written: AtomicU64,
    pub write_runs: AtomicU64,
    pub pages_evicted: AtomicU64,
    pub pages_evicted_ahead: AtomicU64,
    pub pages_prefetched: AtomicU64,
    pub pages_zeroed_ahead: AtomicU64,
    pub peer_requests: AtomicU64,
    pub peer_wait_ns: AtomicU64,
    pub requests_received: AtomicU64,
    pub requests_honoured: AtomicU64,
    pub pages_given_to_peers: AtomicU64,
    pub pages_preserved: AtomicU64,
    pub pages_moved: AtomicU64,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    pub read_ns: AtomicU64,
    pub write_ns: AtomicU64,
    pub peak_resident: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Stats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            read_faults: g(&self.read_faults),
            write_faults: g(&self.write_faults),
            waits: g(&self.waits),
            pages_read: g(&self.pages_read),
            pages_zeroed: g(&self.pages_zeroed),
            pages_written: g(&self.pages_written),
            write_runs: g(&self.write_runs),
            pages_evicted: g(&self.pages_evicted),
            pages_evicted_ahead: g(&self.pages_evicted_ahead),
            pages_prefetched: g(&self.pages_prefetched),
            pages_zeroed_ahead: g(&self.pages_zeroed_ahead),
            peer_requests: g(&self.peer_requests),
            peer_wait_ns: g(&self.peer_wait_ns),
            requests_received: g(&self.requests_received),
            requests_honoured: g(&self.requests_honoured),
            pages_given_to_peers: g(&self.pages_given_to_peers),
            pages_preserved: g(&self.pages_preserved),
            pages_moved: g(&self.pages_moved),
            bytes_read: g(&self.bytes_read),
            bytes_written: g(&self.bytes_written),
            read_ns: g(&self.read_ns),
            write_ns: g(&self.write_ns),
            peak_resident: g(&self.peak_resident),
            ..Stats::default()
        }
    }
}
