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
    /// `claim_key(span, word)` of the claimed word, with a claim count
    /// above [`KEY_BITS`] (another thread reading `key`, `bits`, `key`
    /// knows the bits it read belong to that claim if both keys agree).
    key: AtomicU64,
    current: AtomicU32,
    avail: AtomicU32,
    /// An empty span kept for this class instead of being given back (a
    /// queue of blocks freed in allocation order empties one span after
    /// another: without it each would go back to the run allocator and
    /// another come out of it).
    spare: AtomicU32,
}

/// The `key` of a class state that never claimed a word (the masked part
/// all ones: no span has that index).
const NO_CLAIM: u64 = u64::MAX;

/// Names a bitmap word of a span.
#[inline]
fn claim_key(s: usize, w: usize) -> u64 {
    (s as u64) << 6 | w as u64
}

/// Bits of `key` that hold `claim_key`; the claim count is above them.
const KEY_BITS: u32 = 38;
const KEY_MASK: u64 = (1 << KEY_BITS) - 1;

impl ClassState {
    /// Whether the claimed word is word `w` of span `s` (owner only).
    #[inline(always)]
    fn claims(&self, s: usize, w: usize) -> bool {
        self.key.load(Relaxed) & KEY_MASK == claim_key(s, w)
    }

    /// Drops the claim (the claim count is kept; only the owner writes the
    /// key, so no read-modify-write is needed); returns the old key.
    fn unclaim(&self) -> u64 {
        let key = self.key.load(Relaxed);
        self.key.store(key | KEY_MASK, Relaxed);
        key
    }

    /// Whether block `bit` of word `w` of span `s` is among the claimed
    /// blocks, read from another thread while the owner may be taking
    /// from them: true only if it was, at one moment (the claim count
    /// rules out bits of another claim of the same word; it would have to
    /// wrap around, 2^26 claims, between two loads).
    fn holds(&self, s: usize, w: usize, bit: u64) -> bool {
        let k = self.key.load(Acquire);
        if k & KEY_MASK != claim_key(s, w) {
            return false;
        }
        let bits = self.bits.load(Acquire);
        bits & bit != 0 && self.key.load(Relaxed) == k
    }

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
            c.spare.store(NONE, Relaxed);
            c.key.store(NO_CLAIM, Relaxed);
        }
    }

    // ---------------------------------------------------------------
    // Allocation
    // ---------------------------------------------------------------

    /// A block of `class`, or null if the arena is exhausted.
    #[inline]
    pub fn alloc(&self, core: &Core, class: usize) -> *mut u8 {
        let p = self.alloc_claimed(class);
        if !p.is_null() {
            return p;
        }
        self.alloc_slow(core, class)
    }

    /// A block of `class` from the claimed word, or null if it is empty.
    /// Calls nothing (a leaf, so the fast path saves no registers).
    #[inline(always)]
    pub fn alloc_claimed(&self, class: usize) -> *mut u8 {
        let cs = &self.classes[class];
        let bits = cs.bits.load(Relaxed);
        if bits == 0 {
            return core::ptr::null_mut();
        }
        // Release: see `ClassState::holds` (a plain store on x86-64).
        cs.bits.store(bits & (bits - 1), Release);
        let i = bits.trailing_zeros() as usize;
        (cs.base.load(Relaxed) + i * cs.block.load(Relaxed)) as *mut u8
    }

    /// The common case of [`free_local`](Self::free_local), calling
    /// nothing: frees block `index` of span `s` and returns true, or
    /// changes nothing and returns false when anything needs more (a
    /// double free to report, a span changing lists).
    #[inline(always)]
    pub fn try_free_local(
        &self,
        t: &SpanTable,
        s: usize,
        m: &SpanMeta,
        class: usize,
        index: usize,
    ) -> bool {
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        // SAFETY: `s` is a span (its kind was read) and `index` is below
        // the class's blocks per span (`Core::block_of`), so `w < wmax`.
        #[allow(unsafe_code, reason = "the bounds are established above")]
        let [local, remote] = unsafe { t.words_unchecked(s, w) };
        let bits = local.load(Relaxed);
        let taken = bits | remote.load(Relaxed);
        let cs = &self.classes[class];
        if cs.claims(s, w) {
            // A block of the claimed word goes straight back to it: the
            // next allocation of the class reuses it (last freed, first
            // reused: still in the cache), and the span's counts do not
            // change (claimed blocks are not counted free).
            let claimed = cs.bits.load(Relaxed);
            if (taken | claimed) & bit != 0 {
                return false;
            }
            cs.bits.store(claimed | bit, Release);
            return true;
        }
        let free = m.free.load(Relaxed) + 1;
        if taken & bit != 0 || free == 1 || free == m.capacity.load(Relaxed) {
            return false;
        }
        local.store(bits | bit, Relaxed);
        m.free.store(free, Relaxed);
        true
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
                    let spare = cs.spare.swap(NONE, Relaxed);
                    if spare != NONE {
                        // Kept empty and closed by `settle`: open it again.
                        let m = t.meta(spare as usize);
                        m.cursor.store(0, Relaxed);
                        m.queued.store(false, SeqCst);
                        cs.current.store(spare, Relaxed);
                        let claimed = claim_word(t, cs, spare);
                        debug_assert!(claimed);
                        break;
                    }
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
        if self.try_free_local(t, s, m, class, index) {
            return;
        }
        // Left by the common case: a double free, or a free that moves the
        // span between lists.
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        let [local, remote] = t.words(s, w);
        let bits = local.load(Relaxed);
        let cs = &self.classes[class];
        // Free already: in the bitmap, freed remotely and not collected, or
        // in the claimed word (the only way back to it fails on that).
        if (bits | remote.load(Relaxed)) & bit != 0 || cs.claims(s, w) {
            fatal("free(): double free", addr);
        }
        local.store(bits | bit, Relaxed);
        let free = m.free.load(Relaxed) + 1;
        m.free.store(free, Relaxed);
        // No longer full, or empty: a span that is not current changes list.
        if (free == 1 || free == m.capacity.load(Relaxed)) && cs.current.load(Relaxed) != s as u32 {
            self.settle(core, s, m, class);
        }
    }

    /// Frees block `index` of span `s` owned by another heap (or by none
    /// of this thread's).
    pub fn free_remote(
        t: &SpanTable,
        s: usize,
        m: &SpanMeta,
        class: usize,
        index: usize,
        addr: usize,
    ) {
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        // The application handed this block over, so the owner's taking it
        // (clearing its bit) happened before: a set bit is a double free.
        let [local, remote] = t.words(s, w);
        if local.load(Relaxed) & bit != 0 {
            fatal("free(): double free", addr);
        }
        // Freed already by its owner into the word it has claimed: the
        // owner's bits are read while it may be taking from them (a block
        // it hands out meanwhile is caught by `collect` instead).
        let owner = m.owner.load(Acquire);
        if !owner.is_null() && unsafe_heap_ref(owner).classes[class].holds(s, w, bit) {
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
            let class = m.class.load(Relaxed) as usize;
            let cs = &self.classes[class];
            let mut got = 0u32;
            for w in 0..m.words.load(Relaxed) as usize {
                let remote = t.word(i, true, w);
                if remote.load(SeqCst) == 0 {
                    continue;
                }
                let bits = remote.swap(0, SeqCst);
                let local = t.word(i, false, w);
                let mut free = local.load(Relaxed);
                if cs.claims(i, w) {
                    free |= cs.bits.load(Relaxed);
                }
                if bits & free != 0 {
                    // Freed remotely and by its owner (or twice remotely
                    // around a collection): the first such block.
                    let block = (w * 64) + (bits & free).trailing_zeros() as usize;
                    let size = m.block.load(Relaxed) as usize;
                    fatal("free(): double free", t.addr(i) + block * size);
                }
                local.store(local.load(Relaxed) | bits, Relaxed);
                got += bits.count_ones();
            }
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
            // Kept closed as the class's spare if it has none (reopened
            // when taken), else given back.
            let cs = &self.classes[class];
            if cs.spare.load(Relaxed) == NONE {
                cs.spare.store(s as u32, Relaxed);
            } else {
                core.release_small_span(s);
            }
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
            let key = cs.unclaim();
            if key & KEY_MASK != KEY_MASK {
                let local = t.word(i, false, (key & 63) as usize);
                local.store(local.load(Relaxed) | bits, Relaxed);
                owner_inc(&m.free, bits.count_ones() as i32);
            }
            self.settle(core, i, m, class);
        }
        self.release_spares(core);
    }

    /// Gives back the spare spans (a heap without a thread keeps none).
    pub fn release_spares(&self, core: &Core) {
        for cs in &self.classes[..core.classes.count()] {
            let spare = cs.spare.swap(NONE, Relaxed);
            if spare != NONE {
                core.release_small_span(spare as usize);
            }
        }
    }
}

/// A claimed word with at least this many free blocks is taken at once.
const DENSE: u32 = 32;
/// Words looked at past the first non-empty one for a denser word.
const LOOK_AHEAD: usize = 8;

/// Claims a free word of span `s` for `cs` (which has none claimed);
/// false if the span has no free block.
///
/// Next fit: the search starts after the word claimed last (`cursor`)
/// and wraps around, taking the first word with [`DENSE`] free blocks,
/// else the fullest among the first non-empty one and [`LOOK_AHEAD`]
/// words after it. Taking the lowest non-empty word instead starves under
/// a queue of blocks (freed in the order they were allocated): the word
/// being refilled is claimed again with only the few blocks freed since
/// the last claim (11 per claim measured for 16-byte blocks, a slow path
/// every 11 allocations).
fn claim_word(t: &SpanTable, cs: &ClassState, s: u32) -> bool {
    let i = s as usize;
    let m = t.meta(i);
    let words = m.words.load(Relaxed) as usize;
    if m.free.load(Relaxed) == 0 {
        cs.unclaim();
        m.cursor.store(0, Relaxed);
        return false;
    }
    let start = m.cursor.load(Relaxed) as usize % words;
    let (mut best, mut best_n, mut left) = (0, 0, usize::MAX);
    for k in 0..words {
        let w = if start + k < words {
            start + k
        } else {
            start + k - words
        };
        let n = t.word(i, false, w).load(Relaxed).count_ones();
        if n > best_n {
            (best, best_n) = (w, n);
            if n >= DENSE {
                break;
            }
        }
        if best_n > 0 {
            left = left.min(LOOK_AHEAD + 1) - 1;
            if left == 0 {
                break;
            }
        }
    }
    debug_assert!(
        best_n > 0,
        "free count {} but no free bit",
        m.free.load(Relaxed)
    );
    let word = t.word(i, false, best);
    let bits = word.load(Relaxed);
    word.store(0, Relaxed);
    owner_inc(&m.free, -(bits.count_ones() as i32));
    m.cursor.store((best + 1) as u32, Relaxed);
    let block = m.block.load(Relaxed) as usize;
    cs.block.store(block, Relaxed);
    cs.base.store(t.addr(i) + best * 64 * block, Relaxed);
    // The claim count goes up with every claim; `bits` is 0 here (claims
    // happen when it runs out), and the release orders the stores for
    // `ClassState::holds`.
    let count = (cs.key.load(Relaxed) >> KEY_BITS).wrapping_add(1);
    cs.key
        .store(count << KEY_BITS | claim_key(i, best), Release);
    cs.bits.store(bits, Release);
    true
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
