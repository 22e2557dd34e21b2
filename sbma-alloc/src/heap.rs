//! Heaps: the per-thread owners of small-block spans.
//!
//! A thread allocates small blocks from its own heap without any lock: per
//! class, the heap has a *current* span and has *claimed* one 64-bit word
//! of its `local` bitmap (cleared there, kept in the heap): taking a block
//! is clearing the lowest bit of the claimed word, touching nothing but the
//! heap. When the word runs out, the next non-empty word is claimed. A block freed
//! by its owner sets its bit back; a block freed by another thread sets its
//! bit in the span's `remote` bitmap (`fetch_or`) and, if the span was not
//! queued yet, pushes the span on its owner's *pending* list (a lock-free
//! stack of span numbers). The owner collects pending spans on its slow
//! path. No link is ever written into a block, so freeing an evicted block
//! does not load it.
//!
//! Spans of a heap are: current (one per class), *available* (not current,
//! some blocks free: a per-class doubly linked list through the metadata),
//! or full. A span whose blocks are all free again goes back to the run
//! allocator (unless it is current, or queued: a remote free may still be
//! pushing it).
//!
//! When a thread exits, its heap is *abandoned* with its spans and adopted
//! whole by the next thread that needs a heap; frees into an abandoned heap
//! keep queueing on its pending list.
//!
//! Double frees are caught exactly for the owner (the bit is already set)
//! and for remote frees (the bit is already set locally or remotely), and
//! abort with a one-line message.

use crate::core::Core;
use crate::runs::Run;
use crate::span::{NONE, SpanMeta, SpanTable};
use crate::sys::fatal;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};

/// Per-class state of a heap (owner only).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct ClassState {
    /// Free blocks claimed from word `word` of the current span.
    bits: AtomicU64,
    /// The address of that word's block 0, and the block size.
    base: AtomicUsize,
    block: AtomicUsize,
    /// `claim_key(span, word)` of the claimed word.
    key: AtomicU64,
    current: AtomicU32,
    avail: AtomicU32,
}

/// Names a bitmap word of a span.
#[inline]
fn claim_key(s: usize, w: usize) -> u64 {
    (s as u64) << 32 | w as u64
}

impl ClassState {
    /// Blocks claimed but not handed out (for statistics).
    pub fn claimed(&self) -> u32 {
        self.bits.load(Relaxed).count_ones()
    }
}

/// A thread's heap. Lives in the core's heap mapping; all-zero is not a
/// valid heap (`init` sets the lists to `NONE`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Heap {
    /// The allocator the heap belongs to (for the thread-exit hook).
    pub core: AtomicPtr<Core>,
    /// Spans with remotely freed blocks, not yet collected.
    pending: AtomicU32,
    /// Heap-pool link (abandoned heaps).
    pub next: AtomicU32,
    /// Freed large objects kept for reuse (owner only): `start << 32 |
    /// len`, 0 when empty; `large_next` is the slot to replace next.
    large: [AtomicU64; LARGE_CACHE],
    large_next: AtomicU32,
    pub classes: [ClassState; crate::classes::MAX_CLASSES],
}

/// How many freed large objects a heap keeps.
pub(crate) const LARGE_CACHE: usize = 8;

fn owner_inc(a: &AtomicU32, by: i32) {
    a.store(a.load(Relaxed).wrapping_add_signed(by), Relaxed);
}

impl Heap {
    /// Prepares a never-used heap slot.
    pub fn init(&self, core: &Core) {
        self.core.store(core as *const Core as *mut Core, Relaxed);
        for slot in &self.large {
            slot.store(0, Relaxed);
        }
        self.pending.store(NONE, Relaxed);
        self.next.store(NONE, Relaxed);
        for c in &self.classes {
            c.current.store(NONE, Relaxed);
            c.avail.store(NONE, Relaxed);
        }
    }

    // ---------------------------------------------------------------
    // Allocation
    // ---------------------------------------------------------------

    /// A block of `class`, or null if the arena is exhausted.
    #[inline]
    pub fn alloc(&self, core: &Core, class: usize) -> *mut u8 {
        let cs = &self.classes[class];
        let bits = cs.bits.load(Relaxed);
        if bits != 0 {
            cs.bits.store(bits & (bits - 1), Relaxed);
            let i = bits.trailing_zeros() as usize;
            return (cs.base.load(Relaxed) + i * cs.block.load(Relaxed)) as *mut u8;
        }
        self.alloc_slow(core, class)
    }

    #[cold]
    #[inline(never)]
    fn alloc_slow(&self, core: &Core, class: usize) -> *mut u8 {
        self.collect(core);
        let cs = &self.classes[class];
        let t = &core.spans;
        let current = cs.current.load(Relaxed);
        if current == NONE || !claim_word(t, cs, current) {
            // The span left behind is full: neither current nor available.
            loop {
                let next = cs.avail.load(Relaxed);
                if next == NONE {
                    let Some(s) = core.new_small_span(self, class) else {
                        cs.current.store(NONE, Relaxed);
                        return core::ptr::null_mut();
                    };
                    cs.current.store(s as u32, Relaxed);
                    let claimed = claim_word(t, cs, s as u32);
                    debug_assert!(claimed);
                    break;
                }
                self.avail_remove(t, class, next);
                if claim_word(t, cs, next) {
                    cs.current.store(next, Relaxed);
                    break;
                }
            }
        }
        self.alloc(core, class)
    }

    /// A cached large run of exactly `n` spans, taken out of the cache.
    #[inline]
    pub fn uncache_large(&self, n: usize) -> Option<Run> {
        for slot in &self.large {
            let v = slot.load(Relaxed);
            if v != 0 && (v & 0xFFFF_FFFF) as usize == n {
                slot.store(0, Relaxed);
                return Some(Run {
                    start: (v >> 32) as usize,
                    len: n,
                    dirty: true,
                });
            }
        }
        None
    }

    /// Keeps a freed large run (its kinds already say CACHED); returns the
    /// run it displaced, if the cache was full.
    pub fn cache_large(&self, r: Run) -> Option<Run> {
        let v = (r.start as u64) << 32 | r.len as u64;
        if let Some(slot) = self.large.iter().find(|s| s.load(Relaxed) == 0) {
            slot.store(v, Relaxed);
            return None;
        }
        let i = self.large_next.load(Relaxed) as usize % LARGE_CACHE;
        self.large_next.store((i + 1) as u32, Relaxed);
        let old = self.large[i].swap(v, Relaxed);
        Some(Run {
            start: (old >> 32) as usize,
            len: (old & 0xFFFF_FFFF) as usize,
            dirty: true,
        })
    }

    /// Empties the large-run cache.
    pub fn drain_large(&self) -> impl Iterator<Item = Run> + '_ {
        self.large.iter().filter_map(|slot| {
            let v = slot.swap(0, Relaxed);
            (v != 0).then_some(Run {
                start: (v >> 32) as usize,
                len: (v & 0xFFFF_FFFF) as usize,
                dirty: true,
            })
        })
    }

    /// Cached large runs (for statistics): spans held.
    pub fn cached_spans(&self) -> usize {
        self.large
            .iter()
            .map(|s| (s.load(Relaxed) & 0xFFFF_FFFF) as usize)
            .sum()
    }

    // ---------------------------------------------------------------
    // Free
    // ---------------------------------------------------------------

    /// Frees block `index` of span `s` (owned by this heap: the caller
    /// checked).
    #[inline]
    pub fn free_local(
        &self,
        core: &Core,
        s: usize,
        m: &SpanMeta,
        class: usize,
        index: usize,
        addr: usize,
    ) {
        let t = &core.spans;
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        let [local, remote] = t.words(s, w);
        let bits = local.load(Relaxed);
        // Free already: in the bitmap, freed remotely and not collected, or
        // in the word this heap claimed.
        let cs = &self.classes[class];
        let claimed = cs.key.load(Relaxed) == claim_key(s, w) && cs.bits.load(Relaxed) & bit != 0;
        if (bits | remote.load(Relaxed)) & bit != 0 || claimed {
            fatal("free(): double free", addr);
        }
        local.store(bits | bit, Relaxed);
        let free = m.free.load(Relaxed) + 1;
        m.free.store(free, Relaxed);
        if (w as u32) < m.cursor.load(Relaxed) {
            m.cursor.store(w as u32, Relaxed);
        }
        // No longer full, or empty: a span that is not current changes list.
        if (free == 1 || free == m.capacity.load(Relaxed)) && cs.current.load(Relaxed) != s as u32 {
            self.settle(core, s, m, class);
        }
    }

    /// Frees block `index` of span `s` owned by another heap (or by none
    /// of this thread's).
    pub fn free_remote(t: &SpanTable, s: usize, m: &SpanMeta, index: usize, addr: usize) {
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        // The application handed this block over, so the owner's taking it
        // (clearing its bit) happened before: a set bit is a double free.
        let [local, remote] = t.words(s, w);
        if local.load(Relaxed) & bit != 0 {
            fatal("free(): double free", addr);
        }
        if remote.fetch_or(bit, SeqCst) & bit != 0 {
            fatal("free(): double free", addr);
        }
        if !m.queued.load(SeqCst) && !m.queued.swap(true, SeqCst) {
            // Queued spans are never released, so the owner is stable.
            unsafe_heap_ref(m.owner.load(Acquire)).push_pending(t, s as u32);
        }
    }

    fn push_pending(&self, t: &SpanTable, s: u32) {
        let m = t.meta(s as usize);
        let mut head = self.pending.load(Acquire);
        loop {
            m.pending_next.store(head, Relaxed);
            match self
                .pending
                .compare_exchange_weak(head, s, Release, Acquire)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }

    /// Collects the remote frees of every pending span (owner only).
    pub fn collect(&self, core: &Core) {
        let t = &core.spans;
        if self.pending.load(Relaxed) == NONE {
            return;
        }
        let mut s = self.pending.swap(NONE, Acquire);
        while s != NONE {
            let i = s as usize;
            let m = t.meta(i);
            let next = m.pending_next.load(Relaxed);
            debug_assert_eq!(m.owner.load(Relaxed), self as *const Heap as *mut Heap);
            // Cleared before collecting: a free landing after this pushes
            // the span again; one before it is seen by the loads below.
            m.queued.store(false, SeqCst);
            let mut got = 0u32;
            for w in 0..m.words.load(Relaxed) as usize {
                let remote = t.word(i, true, w);
                if remote.load(SeqCst) == 0 {
                    continue;
                }
                let bits = remote.swap(0, SeqCst);
                let local = t.word(i, false, w);
                local.store(local.load(Relaxed) | bits, Relaxed);
                got += bits.count_ones();
                if (w as u32) < m.cursor.load(Relaxed) {
                    m.cursor.store(w as u32, Relaxed);
                }
            }
            let class = m.class.load(Relaxed) as usize;
            let cs = &self.classes[class];
            owner_inc(&m.free, got as i32);
            if cs.current.load(Relaxed) != s {
                self.settle(core, i, m, class);
            }
            s = next;
        }
    }

    /// Puts non-current span `s` where its free count says: back to the
    /// run allocator if all blocks are free (and no remote free is pushing
    /// it), on the available list if some are.
    fn settle(&self, core: &Core, s: usize, m: &SpanMeta, class: usize) {
        let free = m.free.load(Relaxed);
        // An empty span is released *closed*: `queued` set by us, so a
        // remote free still between its bit (which we collected) and its
        // queueing finds the span queued and does not push it; a span that
        // is queued already waits for its turn in the pending list.
        // (`format_span` opens it again when it is reused.)
        if free == m.capacity.load(Relaxed) && !m.queued.swap(true, SeqCst) {
            if m.in_avail.load(Relaxed) {
                self.avail_remove(&core.spans, class, s as u32);
            }
            core.release_small_span(s);
        } else if free > 0 && !m.in_avail.load(Relaxed) {
            self.avail_push(&core.spans, class, s as u32);
        }
    }

    fn avail_push(&self, t: &SpanTable, class: usize, s: u32) {
        let cs = &self.classes[class];
        let m = t.meta(s as usize);
        let head = cs.avail.load(Relaxed);
        m.avail_prev.store(NONE, Relaxed);
        m.avail_next.store(head, Relaxed);
        if head != NONE {
            t.meta(head as usize).avail_prev.store(s, Relaxed);
        }
        cs.avail.store(s, Relaxed);
        m.in_avail.store(true, Relaxed);
    }

    fn avail_remove(&self, t: &SpanTable, class: usize, s: u32) {
        let m = t.meta(s as usize);
        let (prev, next) = (m.avail_prev.load(Relaxed), m.avail_next.load(Relaxed));
        if prev == NONE {
            self.classes[class].avail.store(next, Relaxed);
        } else {
            t.meta(prev as usize).avail_next.store(next, Relaxed);
        }
        if next != NONE {
            t.meta(next as usize).avail_prev.store(prev, Relaxed);
        }
        m.in_avail.store(false, Relaxed);
    }

    /// Gets the heap ready to be adopted by another thread: collects,
    /// returns claimed blocks to their spans, and gives back every span
    /// that is entirely free.
    pub fn abandon(&self, core: &Core) {
        core.give_back_cached(self.drain_large());
        self.collect(core);
        let t = &core.spans;
        for class in 0..core.classes.count() {
            let cs = &self.classes[class];
            let s = cs.current.swap(NONE, Relaxed);
            if s == NONE {
                continue;
            }
            let (i, m) = (s as usize, t.meta(s as usize));
            let bits = cs.bits.swap(0, Relaxed);
            let w = (cs.key.load(Relaxed) & 0xFFFF_FFFF) as usize;
            let local = t.word(i, false, w);
            local.store(local.load(Relaxed) | bits, Relaxed);
            owner_inc(&m.free, bits.count_ones() as i32);
            if (w as u32) < m.cursor.load(Relaxed) {
                m.cursor.store(w as u32, Relaxed);
            }
            self.settle(core, i, m, class);
        }
    }
}

/// Claims the first non-empty free word of span `s` for `cs` (which has
/// none claimed); false if the span has no free block.
fn claim_word(t: &SpanTable, cs: &ClassState, s: u32) -> bool {
    let i = s as usize;
    let m = t.meta(i);
    let words = m.words.load(Relaxed);
    let mut w = m.cursor.load(Relaxed);
    while w < words {
        let word = t.word(i, false, w as usize);
        let bits = word.load(Relaxed);
        if bits != 0 {
            word.store(0, Relaxed);
            owner_inc(&m.free, -(bits.count_ones() as i32));
            m.cursor.store(w + 1, Relaxed);
            let block = m.block.load(Relaxed) as usize;
            cs.block.store(block, Relaxed);
            cs.base.store(t.addr(i) + w as usize * 64 * block, Relaxed);
            cs.key.store(claim_key(i, w as usize), Relaxed);
            cs.bits.store(bits, Relaxed);
            return true;
        }
        w += 1;
    }
    m.cursor.store(words, Relaxed);
    false
}

/// Fills in the metadata of span `s` for blocks of `class` owned by `heap`
/// (all free). Called before the span's kind says `SMALL`.
pub(crate) fn format_span(t: &SpanTable, s: usize, heap: &Heap, class: usize, block: usize) {
    let m = t.meta(s);
    let capacity = (1usize << t.shift) / block;
    let words = capacity.div_ceil(64);
    m.class.store(class as u32, Relaxed);
    m.block.store(block as u32, Relaxed);
    m.capacity.store(capacity as u32, Relaxed);
    m.words.store(words as u32, Relaxed);
    m.free.store(capacity as u32, Relaxed);
    m.cursor.store(0, Relaxed);
    m.in_avail.store(false, Relaxed);
    m.owner.store(heap as *const Heap as *mut Heap, Release);
    // Released spans stay closed (queued) until here: see `Heap::settle`.
    m.queued.store(false, SeqCst);
    for w in 0..words {
        let left = capacity - w * 64;
        let bits = if left >= 64 {
            u64::MAX
        } else {
            (1u64 << left) - 1
        };
        t.word(s, false, w).store(bits, Relaxed);
        debug_assert_eq!(t.word(s, true, w).load(Relaxed), 0);
    }
}

#[allow(
    unsafe_code,
    reason = "heaps are referenced by raw pointer from span metadata"
)]
fn unsafe_heap_ref<'a>(h: *mut Heap) -> &'a Heap {
    assert!(!h.is_null(), "small span without an owner");
    // SAFETY: span owners point into the core's heap mapping, which lives
    // as long as the core; a small span's owner is set before its kind says
    // SMALL and stays while any of its blocks is allocated.
    unsafe { &*h }
}
