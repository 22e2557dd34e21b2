//! Heaps: the per-thread owners of small-block spans.
//!
//! A thread allocates small blocks from its own heap without any lock: per
//! class, the heap has a *current* span and has *claimed* one 64-bit word
//! of its `local` bitmap (cleared there, kept in the heap): taking a block
//! is clearing the lowest bit of the claimed word, touching nothing but the
//! heap. When the word runs out, the next non-empty word is claimed.
//!
//! A block freed by its owner goes into the class's *free cache*: a stack
//! of up to [`CACHE`] block addresses in the heap, marked held in the
//! span's bitmaps ([`Words::held`]); the next allocation of the class
//! takes the last one back (last freed, first reused: still in the
//! cache, and neither the span's free bitmap nor its counts are touched). Under random frees and
//! allocations the stack is rarely empty or full, so neither path has a
//! branch that goes either way at random. A block freed by its owner while
//! the cache is full sets its bit back in the span's `local` bitmap; a
//! block freed by another thread sets its
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
//! Double frees are caught exactly for the owner (the bit is already set
//! in one of the three bitmaps or among the claimed bits) and for remote
//! frees (set locally, cached, claimed or remotely), and abort with a
//! one-line message.

use crate::core::Core;
use crate::runs::Run;
use crate::span::{NONE, SpanMeta, SpanTable, Words};
use crate::sys::fatal;
use core::sync::atomic::Ordering::{Acquire, Relaxed, Release, SeqCst};
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};

/// Blocks a heap's free cache holds per class: 14, so a class state
/// (a 64-byte header and 32-byte entries) takes 512 bytes and is found
/// with a shift (16 entries measured 3-5% slower on small rings).
pub(crate) const CACHE: usize = 14;

/// A block in a free cache: its address, its bitmap group ([`Words`]) and
/// its bit there (to find its bits again without a division; 32 bytes,
/// so entries are found with a shift).
#[repr(C, align(32))]
#[derive(Debug, Default)]
struct Cached {
    addr: AtomicUsize,
    group: AtomicPtr<Words>,
    bit: AtomicU64,
}

/// Per-class state of a heap (owner only).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub(crate) struct ClassState {
    /// Free blocks claimed from one bitmap word of the current span (and
    /// marked held in its group, so a second free of one is caught).
    bits: AtomicU64,
    /// The address of that word's block 0, and the block size.
    base: AtomicUsize,
    block: AtomicUsize,
    /// That word's group (null if none is claimed).
    words: AtomicPtr<Words>,
    current: AtomicU32,
    avail: AtomicU32,
    /// An empty span kept for this class instead of being given back (a
    /// queue of blocks freed in allocation order empties one span after
    /// another: without it each would go back to the run allocator and
    /// another come out of it).
    spare: AtomicU32,
    /// Blocks in `cache` (the free cache, a stack: see the module doc).
    cached: AtomicU32,
    cache: [Cached; CACHE],
}

// A power of two: the free paths find a class's state with a shift.
const _: () = assert!(size_of::<ClassState>() == 512);

impl ClassState {
    /// Blocks claimed but not handed out (for statistics).
    pub fn claimed(&self) -> u32 {
        self.bits.load(Relaxed).count_ones()
    }

    /// Blocks in the free cache (for statistics).
    pub fn cached(&self) -> u32 {
        self.cached.load(Relaxed)
    }

    /// Takes the block on top of the free cache (`n > 0` of them) and
    /// unmarks it; returns its address, its bitmap group and its bit there.
    #[inline(always)]
    fn uncache(&self, n: u32) -> (usize, &Words, u64) {
        debug_assert!(n as usize <= CACHE);
        // SAFETY: `cached` counts the entries in use, never above `CACHE`
        // (`push` is called with fewer), and `n > 0`.
        #[allow(unsafe_code, reason = "an invariant the optimizer cannot see")]
        let e = unsafe { self.cache.get_unchecked(n as usize - 1) };
        // SAFETY: groups are set by `push` from a `Words` group of the span
        // table, which outlives every heap.
        #[allow(unsafe_code, reason = "a pointer kept in the entry")]
        let words = unsafe { &*e.group.load(Relaxed) };
        let bit = e.bit.load(Relaxed);
        words.release(bit);
        self.cached.store(n - 1, Relaxed);
        (e.addr.load(Relaxed), words, bit)
    }

    /// Puts block `addr` (bit `index % 64` of `words`) on the free cache,
    /// which holds `n < CACHE`, and marks it held.
    #[inline(always)]
    fn push(&self, n: u32, addr: usize, words: &Words, index: usize) {
        words.hold(1 << (index % 64));
        let e = &self.cache[n as usize];
        e.addr.store(addr, Relaxed);
        e.group.store(words as *const Words as *mut Words, Relaxed);
        e.bit.store(1 << (index % 64), Relaxed);
        self.cached.store(n + 1, Relaxed);
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
    /// This heap's tag in the kind words of its spans
    /// ([`kind::owner_tag`](crate::span::kind::owner_tag)); set once.
    pub tag: AtomicU32,
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
    pub fn init(&self, core: &Core, tag: u32) {
        self.core.store(core as *const Core as *mut Core, Relaxed);
        self.tag.store(tag, Relaxed);
        for slot in &self.large {
            slot.store(0, Relaxed);
        }
        self.pending.store(NONE, Relaxed);
        self.next.store(NONE, Relaxed);
        for c in &self.classes {
            c.current.store(NONE, Relaxed);
            c.avail.store(NONE, Relaxed);
            c.spare.store(NONE, Relaxed);
            c.words.store(core::ptr::null_mut(), Relaxed);
            c.cached.store(0, Relaxed);
        }
    }

    // ---------------------------------------------------------------
    // Allocation
    // ---------------------------------------------------------------

    /// A block of `class`, or null if the arena is exhausted.
    #[inline]
    pub fn alloc(&self, core: &Core, class: usize) -> *mut u8 {
        match self.alloc_fast(class) {
            Some(p) => p,
            None => self.alloc_slow(core, class),
        }
    }

    /// A block of `class` from the free cache or the claimed word, or
    /// `None` if both are empty. Calls nothing (a leaf, so the fast path
    /// saves no registers).
    #[inline(always)]
    pub fn alloc_fast(&self, class: usize) -> Option<*mut u8> {
        let cs = &self.classes[class];
        let n = cs.cached.load(Relaxed);
        if n != 0 {
            return Some(cs.uncache(n).0 as *mut u8);
        }
        let bits = cs.bits.load(Relaxed);
        if bits == 0 {
            return None;
        }
        cs.bits.store(bits & (bits - 1), Relaxed);
        let i = bits.trailing_zeros() as usize;
        // SAFETY: a word is claimed while `bits` is not 0 (`claim_word`),
        // and its group lives in the span table, which outlives the heap.
        #[allow(unsafe_code, reason = "the claimed word's group")]
        unsafe { &*cs.words.load(Relaxed) }.release(1 << i);
        Some((cs.base.load(Relaxed) + i * cs.block.load(Relaxed)) as *mut u8)
    }

    /// The common case of [`free_local`](Self::free_local), calling
    /// nothing: puts block `index` of span `s` (at `addr`) in the free
    /// cache and returns true, or changes nothing and returns false (a
    /// double free to report, or the cache is full: the block then goes to
    /// its span's bitmap, out of line, since that may move the span between
    /// lists). Kept this small, the whole free fast path needs one
    /// callee-saved register (four with the bitmap case inline).
    #[inline(always)]
    pub fn try_free_local(
        &self,
        t: &SpanTable,
        s: usize,
        class: usize,
        index: usize,
        addr: usize,
    ) -> bool {
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        // SAFETY: `s` is a span (its kind was read) and `index` is below
        // the class's blocks per span (`Core::block_of`), so `w < wmax`.
        #[allow(unsafe_code, reason = "the bounds are established above")]
        let words = unsafe { t.words_unchecked(s, w) };
        // Free already: free in the bitmap, freed by another thread and
        // not collected, or cached or claimed by this heap. (`push` loads
        // the held word again: fewer values live at once.)
        if (words.local.load(Relaxed) | words.remote.load(Relaxed) | words.held()) & bit != 0 {
            return false;
        }
        let cs = &self.classes[class];
        let n = cs.cached.load(Relaxed);
        if (n as usize) < CACHE {
            cs.push(n, addr, words, index);
            return true;
        }
        false
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
        if self.try_free_local(t, s, class, index, addr) {
            return;
        }
        // Left by the common case: a double free, or the cache is full.
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        let words = t.words(s, w);
        if (words.local.load(Relaxed) | words.remote.load(Relaxed) | words.held()) & bit != 0 {
            fatal("free(): double free", addr);
        }
        debug_assert_eq!(self.classes[class].cached.load(Relaxed) as usize, CACHE);
        self.free_to_span(core, s, m, class, words, bit);
    }

    /// Sets free block `bit` of `words` in span `s` (not claimed, not
    /// cached) and moves the span between lists if it is no longer full, or
    /// empty.
    fn free_to_span(
        &self,
        core: &Core,
        s: usize,
        m: &SpanMeta,
        class: usize,
        words: &Words,
        bit: u64,
    ) {
        words.local.store(words.local.load(Relaxed) | bit, Relaxed);
        let free = m.free.load(Relaxed) + 1;
        m.free.store(free, Relaxed);
        // No longer full, or empty: a span that is not current changes list.
        if (free == 1 || free == m.capacity.load(Relaxed))
            && self.classes[class].current.load(Relaxed) != s as u32
        {
            self.settle(core, s, m, class);
        }
    }

    /// Empties the free cache of `class` into the spans' bitmaps.
    fn flush_cache(&self, core: &Core, class: usize) {
        let cs = &self.classes[class];
        loop {
            let n = cs.cached.load(Relaxed);
            if n == 0 {
                return;
            }
            let (addr, words, bit) = cs.uncache(n);
            let s = core
                .spans
                .index_of(addr)
                .expect("a cached block is in the arena");
            self.free_to_span(core, s, core.spans.meta(s), class, words, bit);
        }
    }

    /// Frees block `index` of span `s` owned by another heap (or by none
    /// of this thread's).
    pub fn free_remote(t: &SpanTable, s: usize, m: &SpanMeta, index: usize, addr: usize) {
        let (w, bit) = (index / 64, 1u64 << (index % 64));
        // The application handed this block over, so the owner's taking it
        // (clearing its bit) happened before: a set bit is a double free.
        let words = t.words(s, w);
        // (`held` is the owner's: a block it freed into its cache, or
        // claimed; it is read while the owner may be taking blocks out.
        // The application's handing the block over orders this thread's
        // reads after the owner's last write to its bit.)
        if (words.local.load(Relaxed) | words.held()) & bit != 0 {
            fatal("free(): double free", addr);
        }
        if words.remote.fetch_or(bit, SeqCst) & bit != 0 {
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
                let words = t.words(i, w);
                if words.remote.load(SeqCst) == 0 {
                    continue;
                }
                let bits = words.remote.swap(0, SeqCst);
                let local = &words.local;
                let free = local.load(Relaxed) | words.held();
                if bits & free != 0 {
                    // Freed remotely and by its owner (or twice remotely
                    // around a collection; or remotely while in the
                    // owner's cache): the first such block.
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
            self.flush_cache(core, class);
            let cs = &self.classes[class];
            let s = cs.current.swap(NONE, Relaxed);
            if s == NONE {
                continue;
            }
            let (i, m) = (s as usize, t.meta(s as usize));
            let bits = cs.bits.swap(0, Relaxed);
            let words = cs.words.swap(core::ptr::null_mut(), Relaxed);
            if !words.is_null() {
                // SAFETY: the claimed word's group, in the span table.
                #[allow(unsafe_code, reason = "the claimed word's group")]
                let words = unsafe { &*words };
                let local = &words.local;
                local.store(local.load(Relaxed) | bits, Relaxed);
                words.release(bits);
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
        cs.words.store(core::ptr::null_mut(), Relaxed);
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
        let n = t.words(i, w).local.load(Relaxed).count_ones();
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
    let group = t.words(i, best);
    let bits = group.local.load(Relaxed);
    group.local.store(0, Relaxed);
    // Claimed blocks are held: a second free of one is caught.
    group.hold(bits);
    owner_inc(&m.free, -(bits.count_ones() as i32));
    m.cursor.store((best + 1) as u32, Relaxed);
    let block = m.block.load(Relaxed) as usize;
    cs.block.store(block, Relaxed);
    cs.base.store(t.addr(i) + best * 64 * block, Relaxed);
    cs.words.store(group as *const Words as *mut Words, Relaxed);
    cs.bits.store(bits, Relaxed);
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
        let words = t.words(s, w);
        words.local.store(bits, Relaxed);
        debug_assert_eq!(words.remote.load(Relaxed) | words.held(), 0);
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
