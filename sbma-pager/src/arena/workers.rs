//! Background I/O: a writer that keeps room in the budget and a prefetcher
//! that reads ahead of sequential faults, so that faults wait for neither.
//!
//! # Writer
//!
//! When a fault leaves less than `reserve` pages of the budget free, it
//! rings the writer's [`Doorbell`]. The writer takes the reclaim lock (the
//! same one faults take when they must evict for themselves), asks the
//! policy for victims and evicts them as a fault would (write-protect,
//! write back in runs, drop), until twice `reserve` pages are free, at
//! most `batch` pages per lock hold. Faults then find room already made;
//! if the writer falls behind, they evict for themselves as before, so the
//! writer is a speed-up, never a dependency.
//!
//! # Prefetcher
//!
//! A fault that continues a sequential run with a full read-ahead window
//! also claims the next [`PREFETCH_WINDOWS`] chunks of
//! [`PREFETCH_BYTES`](super::PREFETCH_BYTES) (or a sixteenth of the
//! budget if smaller; the pages enter `Load`,
//! charged without evicting) and posts them to a ring of
//! [`PREFETCH_SLOTS`] requests. The prefetcher reads each in one I/O,
//! grants read access and ends the loads; a thread touching such a page
//! before that waits on its word like on any load. If the ring is full, the
//! fault loads the claimed pages itself.
//!
//! # Discipline
//!
//! The fault path only rings doorbells and posts requests (atomics and
//! `futex`). The workers never touch managed memory (they use `pread`,
//! `pwrite`, `mprotect`, `madvise` and `/proc/self/mem` on it), so they
//! cannot fault while holding a lock.

use super::Arena;
use crate::bell::Doorbell;
use crate::stats::Counters;
use crate::sys;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use sbma_core::{PageCount, PageIndex, PageRange};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Prefetch requests that can wait at once.
pub(super) const PREFETCH_SLOTS: usize = 8;
/// Windows a streaming fault claims ahead for the prefetcher.
pub(super) const PREFETCH_WINDOWS: usize = 2;
/// Prefetcher threads: two reads in flight keep the device busier than
/// one.
const PREFETCHERS: usize = 2;
/// The most a writer batch evicts per lock hold.
const WRITER_BATCH_BYTES: usize = 4 << 20;

/// The background threads' shared state, inside the arena.
pub(crate) struct Background {
    /// The threads run (set once they are spawned).
    on: AtomicBool,
    stop: AtomicBool,
    writer: Doorbell,
    /// Free pages below which faults ring the writer.
    reserve: usize,
    /// Most pages per writer batch.
    batch: usize,
    /// Pages per prefetch request.
    chunk: usize,
    /// Requests: `start << 16 | count`, 0 when free.
    slots: [AtomicU64; PREFETCH_SLOTS],
    prefetcher: Doorbell,
    /// Pages claimed for prefetching and not yet loaded.
    in_flight: AtomicUsize,
}

impl Background {
    /// Sizes the reserve for a budget of `budget_pages` pages.
    pub(super) fn new(
        budget_pages: usize,
        window: usize,
        reclaim_batch: usize,
        shift: u32,
    ) -> Self {
        // A prefetch chunk is at most a sixteenth of the budget, so streams
        // cannot fill a small budget with pages nobody asked for yet.
        let chunk = (super::PREFETCH_BYTES >> shift)
            .min(budget_pages / 16)
            .max(1);
        let reserve = (PREFETCH_WINDOWS * chunk + window + reclaim_batch)
            .max(budget_pages / 64)
            .min(budget_pages / 8);
        Background {
            on: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            writer: Doorbell::default(),
            reserve,
            chunk,
            batch: (WRITER_BATCH_BYTES >> shift).max(reclaim_batch).max(1),
            slots: Default::default(),
            prefetcher: Doorbell::default(),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub(super) fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// In a forked child: the threads do not exist there, so nothing may
    /// be posted to them (a posted prefetch would never complete).
    pub(super) fn stop_in_child(&self) {
        self.on.store(false, Ordering::SeqCst);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Posts a prefetch request; `false` if the ring is full.
    /// Async-signal-safe.
    fn post(&self, range: PageRange) -> bool {
        debug_assert!(range.count.get() > 0 && range.count.get() < 1 << 16);
        let request = ((range.start.0 as u64) << 16) | range.count.get() as u64;
        for slot in &self.slots {
            if slot
                .compare_exchange(0, request, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.prefetcher.ring();
                return true;
            }
        }
        false
    }

    /// Takes the waiting request with the lowest start page (the oldest
    /// of a forward stream).
    fn take(&self) -> Option<PageRange> {
        let request = loop {
            let (slot, request) = self
                .slots
                .iter()
                .map(|s| (s, s.load(Ordering::SeqCst)))
                .filter(|&(_, r)| r != 0)
                .min_by_key(|&(_, r)| r)?;
            // Another prefetcher may have taken it (and a producer reused
            // the slot): take only what was seen.
            if slot
                .compare_exchange(request, 0, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break request;
            }
        };
        Some(PageRange::new(
            PageIndex((request >> 16) as usize),
            PageCount((request & 0xFFFF) as usize),
        ))
    }

    fn empty(&self) -> bool {
        self.slots.iter().all(|s| s.load(Ordering::SeqCst) == 0)
    }
}

std::thread_local! {
    /// Set on the pager's own threads (no destructor: `const`, `Copy`).
    static PAGER_THREAD: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

pub(crate) fn mark_pager_thread() {
    PAGER_THREAD.with(|t| t.set(true));
}

/// Whether the calling thread is one of a pager's background threads (the
/// writer or a prefetcher). An allocator serving memory from a pager must
/// not hand such a thread managed memory: the writer would fault on it
/// while holding the lock every fault needs.
pub fn is_pager_thread() -> bool {
    PAGER_THREAD.with(|t| t.get())
}

/// The running background threads of one arena.
pub(crate) struct Workers {
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts the writer and the prefetcher. A thread that cannot be
    /// spawned is done without: its work falls back to the faults.
    pub(crate) fn start(arena: &Arc<Arena>) -> Workers {
        let mut threads = Vec::new();
        if arena.background.reserve > 0 {
            let a = arena.clone();
            if let Ok(t) = std::thread::Builder::new()
                .name("sbma-writer".into())
                .spawn(move || {
                    mark_pager_thread();
                    a.writer_loop()
                })
            {
                threads.push(t);
            }
        }
        for _ in 0..PREFETCHERS {
            let a = arena.clone();
            if let Ok(t) = std::thread::Builder::new()
                .name("sbma-prefetch".into())
                .spawn(move || {
                    mark_pager_thread();
                    a.prefetch_loop()
                })
            {
                threads.push(t);
                // Requests are posted only once a prefetcher runs.
                arena.background.on.store(true, Ordering::SeqCst);
            }
        }
        Workers { threads }
    }

    /// Stops and joins the threads (pending prefetches are completed
    /// first). In a forked child the threads do not exist: they are
    /// neither woken nor joined.
    pub(crate) fn stop(self, arena: &Arena) {
        if arena.forked() {
            core::mem::forget(self.threads);
            return;
        }
        let bg = &arena.background;
        bg.stop.store(true, Ordering::SeqCst);
        bg.writer.ring();
        bg.prefetcher.ring();
        for t in self.threads {
            let _ = t.join();
        }
        bg.on.store(false, Ordering::SeqCst);
    }
}

impl Arena {
    /// Pages of the budget not charged.
    fn free_pages(&self) -> usize {
        self.free_pages_at(self.budget.resident())
    }

    /// Pages of the budget not charged when `resident` bytes are.
    fn free_pages_at(&self, resident: usize) -> usize {
        self.budget.limit().saturating_sub(resident) >> self.page.shift()
    }

    /// Called after a charge: records the peak and rings the writer if
    /// room is running out. Async-signal-safe.
    pub(super) fn after_charge(&self) {
        let resident = self.budget.resident();
        self.counters
            .peak_resident
            .fetch_max(resident as u64, Ordering::Relaxed);
        let bg = &self.background;
        if bg.on() && self.free_pages_at(resident) < bg.reserve {
            bg.writer.ring();
        }
    }

    fn writer_loop(&self) {
        let bg = &self.background;
        while !bg.stopping() {
            let needed = self.free_pages() < bg.reserve;
            if needed && self.evict_ahead().is_ok_and(|n| n > 0) {
                continue;
            }
            // Nothing needed, or nothing could be done (all pinned or
            // loading, or a write error the faults will report): sleep
            // until the next ring.
            bg.writer
                .wait(|| !bg.stopping() && (needed || self.free_pages() >= bg.reserve));
        }
    }

    /// One writer batch: evicts towards `2 * reserve` free pages.
    fn evict_ahead(&self) -> Result<usize, rustix::io::Errno> {
        let bg = &self.background;
        let mut victims = self.reclaim.lock().map_err(|_| rustix::io::Errno::DEADLK)?;
        let free = self.free_pages();
        let target = 2 * bg.reserve;
        if free >= target {
            return Ok(0);
        }
        let n = self.evict_selected(&mut victims, PageCount((target - free).min(bg.batch)))?;
        Counters::add(&self.counters.pages_evicted_ahead, n as u64);
        Ok(n)
    }

    /// After the faulting thread claimed a full window at `next`'s left,
    /// claims up to [`PREFETCH_WINDOWS`] chunks from `next` and hands them
    /// to the prefetcher. Returns one past the last page claimed. Async-signal-safe.
    pub(super) fn prefetch_from(&self, mut next: usize) -> usize {
        let bg = &self.background;
        let window = bg.chunk;
        for _ in 0..PREFETCH_WINDOWS {
            let n = self.claim_evicted(PageIndex(next), window);
            if n == 0 {
                break;
            }
            let range = PageRange::new(PageIndex(next), PageCount(n));
            bg.in_flight.fetch_add(n, Ordering::SeqCst);
            if !bg.post(range) {
                // The prefetcher is behind: load them here.
                self.load_claimed(range);
                bg.in_flight.fetch_sub(n, Ordering::SeqCst);
            }
            next += n;
            if n < window {
                break;
            }
        }
        next
    }

    fn prefetch_loop(&self) {
        let bg = &self.background;
        loop {
            if let Some(range) = bg.take() {
                self.load_claimed(range);
                Counters::add(&self.counters.pages_prefetched, range.count.get() as u64);
                bg.in_flight.fetch_sub(range.count.get(), Ordering::SeqCst);
                continue;
            }
            // Stop only with the ring empty: claimed pages must not stay
            // in `Load`.
            if bg.stopping() {
                return;
            }
            bg.prefetcher.wait(|| !bg.stopping() && bg.empty());
        }
    }

    /// Waits until no prefetch is in flight (so explicit evictions see
    /// every page idle). Not for the fault path.
    pub(crate) fn quiesce(&self) {
        if self.forked() {
            return;
        }
        while self.background.in_flight.load(Ordering::SeqCst) != 0 {
            sys::yield_now();
        }
    }
}
