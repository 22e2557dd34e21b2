//! Allocator statistics: blocks by class, spans, fragmentation, and the
//! pager's own statistics. Gathered from relaxed counters while other
//! threads run: each figure is a recent value, not a snapshot of one
//! instant.

use crate::SbmaAlloc;
use crate::classes::MAX_CLASSES;
use core::sync::atomic::Ordering::Relaxed;

/// Blocks of one size class.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// The block size.
    pub block: usize,
    /// Blocks allocated and not freed (remote frees count once their owner
    /// collected them).
    pub blocks: u64,
}

/// What an [`SbmaAlloc`] holds.
#[derive(Clone, Debug)]
pub struct AllocStats {
    /// Per class, the first `class_count` entries.
    pub classes: [ClassStats; MAX_CLASSES],
    /// How many classes there are.
    pub class_count: usize,
    /// Bytes in small blocks in use (block sizes, not requests).
    pub small_bytes: u64,
    /// Spans carved into small blocks, and their bytes.
    pub small_spans: usize,
    /// The span size.
    pub span_bytes: usize,
    /// Large objects.
    pub large_objects: usize,
    /// The bytes of their spans.
    pub large_bytes: usize,
    /// Bytes of freed large objects kept by heaps for reuse.
    pub cached_bytes: usize,
    /// Spans ever used (the top of the arena's used part).
    pub spans_used: usize,
    /// Spans in free runs.
    pub spans_free: usize,
    /// Free spans that may hold stale data (kept for reuse, up to the
    /// decay cap).
    pub spans_dirty: usize,
    /// Bytes of freed runs cleared through the pager.
    pub cleared_bytes: usize,
    /// Bytes `realloc` moved to a new place as pages (page tables or file
    /// ranges) rather than copied.
    pub moved_bytes: usize,
    /// Heaps ever created (threads that allocated).
    pub heaps: usize,
    /// The pager's statistics.
    pub pager: sbma_pager::Stats,
}

impl AllocStats {
    /// Small-span fragmentation: the share of small-span bytes not in a
    /// live block (0 when there are no small spans).
    pub fn fragmentation(&self) -> f64 {
        let spans = (self.small_spans * self.span_bytes) as f64;
        if spans == 0.0 {
            0.0
        } else {
            1.0 - self.small_bytes as f64 / spans
        }
    }
}

impl SbmaAlloc {
    /// Statistics, or `None` before the allocator started.
    pub fn stats(&self) -> Option<AllocStats> {
        let core = self.core()?;
        core.collect_abandoned();
        let mut classes = [ClassStats::default(); MAX_CLASSES];
        let count = core.classes.count();
        for (c, cs) in classes.iter_mut().enumerate().take(count) {
            cs.block = core.classes.size_of(c);
        }
        // Blocks in use = capacity - free in the bitmap - claimed by heaps
        // - in their free caches.
        let (spans_used, spans_free, spans_dirty) = core.run_census();
        let (mut large_objects, mut large_spans) = (0, 0);
        for s in 0..spans_used {
            let k = core.spans.kind(s).load(Relaxed);
            if k >= crate::span::kind::SMALL {
                let m = core.spans.meta(s);
                let c = crate::span::kind::class(k);
                let in_use = m
                    .capacity
                    .load(Relaxed)
                    .saturating_sub(m.free.load(Relaxed));
                classes[c].blocks += u64::from(in_use);
            } else if k == crate::span::kind::LARGE {
                large_objects += 1;
                large_spans += core.spans.meta(s).len.load(Relaxed);
            }
        }
        let mut cached_spans = 0;
        for h in 0..core.heaps_created() {
            let heap = core.heap_slot(h);
            cached_spans += heap.cached_spans();
            for (c, cs) in classes.iter_mut().enumerate().take(count) {
                cs.blocks = cs.blocks.saturating_sub(u64::from(
                    heap.classes[c].claimed() + heap.classes[c].cached(),
                ));
            }
        }
        let small_bytes = classes.iter().map(|c| c.blocks * c.block as u64).sum();
        let k = &core.counters;
        Some(AllocStats {
            classes,
            class_count: count,
            small_bytes,
            small_spans: k.small_spans.load(Relaxed),
            span_bytes: core.span_bytes(),
            large_objects,
            large_bytes: large_spans * core.span_bytes(),
            cached_bytes: cached_spans * core.span_bytes(),
            spans_used,
            spans_free,
            spans_dirty,
            cleared_bytes: k.cleared_bytes.load(Relaxed),
            moved_bytes: k.moved_bytes.load(Relaxed),
            heaps: core.heaps_created(),
            pager: core.pager.stats(),
        })
    }
}

impl SbmaAlloc {
    /// The part of the arena ever used, `(first byte, bytes)`: every live
    /// block lies inside it (for whole-heap operations such as touching or
    /// evicting everything). `None` before the allocator started.
    pub fn used(&self) -> Option<(*mut u8, usize)> {
        let core = self.core()?;
        let (top, _, _) = core.run_census();
        Some((core.spans.base as *mut u8, top << core.spans.shift))
    }

    /// The live large objects (above 16 KiB): `(address, usable bytes)`.
    pub fn large_objects(&self) -> Vec<(*mut u8, usize)> {
        let Some(core) = self.core() else {
            return Vec::new();
        };
        let (top, _, _) = core.run_census();
        (0..top)
            .filter(|&s| core.spans.kind(s).load(Relaxed) == crate::span::kind::LARGE)
            .filter_map(|s| {
                let p = core.spans.addr(s) as *mut u8;
                core.usable_size(p).map(|n| (p, n))
            })
            .collect()
    }
}
