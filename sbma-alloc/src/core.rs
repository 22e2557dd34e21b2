//! One allocator instance: the pager region it carves, span metadata, the
//! run allocator, the heap pool, and the malloc-family operations.
//!
//! The whole pager arena is taken as one [`Region`] when the instance
//! starts; the allocator then never calls the pager on its fast paths. The
//! pager is called only to *clear* runs (decay of freed memory, large
//! `calloc`), always outside the allocator's locks.
//!
//! # Threads and re-entrancy
//! A thread finds its heap through a `const`, destructor-free thread-local
//! `(instance id, heap)` pair, refreshed from a pthread key (whose
//! destructor abandons the heap when the thread exits). Rust thread-locals
//! with destructors are never used: registering one allocates, which would
//! re-enter the allocator.
//!
//! A thread gets no heap (and allocations fall back to glibc's allocator)
//! while it is inside the allocator's own start-up or pager calls (`BUSY`)
//! and on the pager's background threads: the writer must never fault on
//! managed memory while it holds the lock every fault needs.
//!
//! # Safety
//! Heaps are referenced by raw pointer (thread-local, pthread key, span
//! owner); they live in a mapping owned by the core.
#![allow(unsafe_code, reason = "heap pointers, pthread keys and raw memory")]

use crate::classes::{ClassTable, MIN_ALIGN};
use crate::divide::Divider;
use crate::heap::{Heap, format_span};
use crate::runs::{Run, Runs};
use crate::span::{NONE, SpanTable, kind};
use crate::sys::{Mapping, fatal};
use core::cell::Cell;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use sbma_pager::{Pager, Region};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// Heaps one instance can have at once (threads beyond get glibc's
/// allocator).
pub(crate) const MAX_HEAPS: usize = 4096;
/// Freed large objects of at most this many spans (1 MiB with 64 KiB
/// spans) are kept by the freeing thread's heap for reuse, up to
/// `heap::LARGE_CACHE` of them.
pub(crate) const LARGE_CACHE_SPANS: usize = 16;

/// The smallest large object `realloc` moves by pages when it cannot
/// grow in place (and most of it is out of memory): below it, copying the
/// bytes costs less than the pager's lock and syscalls.
pub const MOVE_MIN: usize = 256 << 10;

std::thread_local! {
    /// The heap this thread used last: `(instance id, heap)`.
    static CURRENT: Cell<(u64, *const Heap)> = const { Cell::new((0, core::ptr::null())) };
    /// Inside the allocator's start-up or a pager call.
    static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// The calling thread's heap of the core with id `id`, if it has one.
///
/// A thread records a heap of a core only once it has seen that core
/// started (its `SbmaAlloc` READY, acquired by this thread), and ids are
/// never reused: so a heap returned here means the core with that id has
/// started and its fields may be read, and the heap lives as long as the
/// core.
#[inline(always)]
pub(crate) fn current_heap(id: u64) -> Option<*const Heap> {
    let (current, h) = CURRENT.with(Cell::get);
    (current == id).then_some(h)
}

/// Set in a forked child: the pager cannot page there (the backing file is
/// the parent's), so no block is handed out from the arena any more; the
/// child allocates from glibc. Blocks it inherited stay usable where
/// resident (the pager's fork rule) and can be freed.
static FORKED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// `pthread_atfork` child hook (runs in the child's only thread).
extern "C" fn forked_child() {
    FORKED.store(true, Relaxed);
    CURRENT.with(|c| c.set((0, core::ptr::null())));
}

/// Takes the allocator lock `m`; in a forked child only if it is free. A
/// lock another thread of the parent held at the fork stays held in the
/// child's copy for good (its holder does not exist there), so the child
/// does without: what it frees is kept, and statistics count nothing
/// behind that lock. Every use of the run and pool locks goes through
/// here.
fn lock<T>(m: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    if !FORKED.load(Relaxed) {
        return Some(m.lock().unwrap_or_else(|e| e.into_inner()));
    }
    match m.try_lock() {
        Ok(g) => Some(g),
        Err(TryLockError::Poisoned(e)) => Some(e.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Marks the thread busy (allocations fall back) until dropped.
///
/// The thread's heap is hidden meanwhile (`CURRENT` cleared, put back on
/// drop unless a heap was set in between): a pager call may allocate while
/// it holds the lock every fault needs, and a block from the heap may lie
/// on an evicted page (touching it, say to grow a vector, would wait for
/// that lock forever). Seen under the preload shim: `Pager::relocate`
/// growing a vector in sbma memory while holding the reclaim lock.
pub(crate) struct Busy(bool, (u64, *const Heap));

impl Busy {
    pub fn enter() -> Busy {
        let heap = CURRENT.with(|c| c.replace((0, core::ptr::null())));
        Busy(BUSY.with(|b| b.replace(true)), heap)
    }

    pub fn active() -> bool {
        BUSY.with(Cell::get)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(self.0));
        CURRENT.with(|c| {
            if c.get().1.is_null() {
                c.set(self.1);
            }
        });
    }
}

/// Unused and abandoned heap slots.
#[derive(Debug)]
struct Pool {
    unused: usize,
    abandoned: u32,
}

/// Counters kept by the core (the per-class ones are in the heaps).
#[derive(Debug, Default)]
pub(crate) struct CoreCounters {
    pub small_spans: AtomicUsize,
    pub cleared_bytes: AtomicUsize,
    pub moved_bytes: AtomicUsize,
}

/// An allocator instance.
pub(crate) struct Core {
    pub id: u64,
    pub spans: SpanTable,
    pub classes: ClassTable,
    /// Block indices from span offsets, by class.
    dividers: [Divider; crate::classes::MAX_CLASSES],
    /// The most spans a heap keeps in freed large objects: 8 MiB, at most
    /// a quarter of the decay cap.
    cache_spans: usize,
    pub counters: CoreCounters,
    runs: Mutex<Runs>,
    heaps: Mapping,
    pool: Mutex<Pool>,
    key: libc::pthread_key_t,
    page: usize,
    // Dropped last: the region, then the pager.
    #[expect(dead_code, reason = "held: every span is in it, freed on drop")]
    region: Region,
    pub pager: Pager,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn next_id() -> u64 {
    static NEXT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

impl Core {
    /// Takes the whole arena of `pager` and sets up the metadata. Call with
    /// [`Busy`] entered (the pager and this function allocate).
    pub fn new(pager: Pager, classes: ClassTable, decay: usize) -> Result<Core, crate::Error> {
        debug_assert!(Busy::active());
        static AT_FORK: std::sync::Once = std::sync::Once::new();
        // SAFETY: registering a handler that only stores to atomics and a
        // thread-local cell.
        AT_FORK.call_once(|| unsafe {
            libc::pthread_atfork(None, None, Some(forked_child));
        });
        let page = pager.page_size();
        let span = page.max(64 << 10);
        let shift = span.trailing_zeros();
        let arena = pager.max_size();
        let region = pager.alloc(arena).map_err(crate::Error::Pager)?;
        // Spans start at span-aligned addresses (blocks of a power-of-two
        // class are then aligned to their size).
        let start = region.as_mut_ptr() as usize;
        let base = start.next_multiple_of(span);
        let count = ((start + region.len()).saturating_sub(base) >> shift).min(NONE as usize - 1);
        let map_err = |e| crate::Error::Metadata(e);
        let spans = SpanTable::new(base, count, shift).map_err(map_err)?;
        let heaps = Mapping::new(MAX_HEAPS * size_of::<Heap>()).map_err(map_err)?;
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: creating a key with our destructor; it is deleted on drop.
        if unsafe { libc::pthread_key_create(&mut key, Some(heap_exit)) } != 0 {
            return Err(crate::Error::TooManyThreadKeys);
        }
        let mut dividers = [Divider::default(); crate::classes::MAX_CLASSES];
        for (c, d) in dividers.iter_mut().enumerate().take(classes.count()) {
            let size = classes.size_of(c);
            *d = Divider::new(size, (span / size) as u32);
        }
        Ok(Core {
            id: next_id(),
            spans,
            classes,
            dividers,
            cache_spans: (8 << 20).min(decay / 4) >> shift,
            counters: CoreCounters::default(),
            runs: Mutex::new(Runs::new(decay >> shift)),
            heaps,
            pool: Mutex::new(Pool {
                unused: 0,
                abandoned: NONE,
            }),
            key,
            page,
            region,
            pager,
        })
    }

    /// The span size.
    pub fn span_bytes(&self) -> usize {
        1 << self.spans.shift
    }

    // ---------------------------------------------------------------
    // Heaps
    // ---------------------------------------------------------------

    fn heap_at(&self, i: usize) -> &Heap {
        assert!(i < MAX_HEAPS);
        // SAFETY: in bounds of the heap mapping, which lives as long as
        // `self`; slots are initialized (`Heap::init`) before being handed
        // out, and zero bytes are a valid Heap (atomics) before that.
        unsafe { &*self.heaps.ptr().cast::<Heap>().add(i) }
    }

    fn heap_index(&self, h: &Heap) -> u32 {
        ((h as *const Heap as usize - self.heaps.ptr() as usize) / size_of::<Heap>()) as u32
    }

    /// The calling thread's heap, if it may have one.
    #[inline]
    pub fn heap(&self) -> Option<&Heap> {
        let (id, h) = CURRENT.with(Cell::get);
        if id == self.id {
            // SAFETY: set below from a heap of this core, which is alive.
            return Some(unsafe { &*h });
        }
        self.heap_slow()
    }

    /// The calling thread's heap if it already has one (no creation).
    #[inline]
    pub fn heap_if_any(&self) -> Option<&Heap> {
        // SAFETY: a heap of this core (`current_heap`), in its heap
        // mapping, which lives as long as `self`.
        current_heap(self.id).map(|h| unsafe { &*h })
    }

    #[cold]
    #[inline(never)]
    fn heap_slow(&self) -> Option<&Heap> {
        if Busy::active() || sbma_pager::is_pager_thread() || FORKED.load(Relaxed) {
            return None;
        }
        // SAFETY: reading our own key.
        let h = unsafe { libc::pthread_getspecific(self.key) }.cast::<Heap>();
        if !h.is_null() {
            CURRENT.with(|c| c.set((self.id, h)));
            // SAFETY: the key holds heaps of this core only.
            return Some(unsafe { &*h });
        }
        let h = {
            let mut pool = lock(&self.pool)?;
            if pool.abandoned != NONE {
                let h = self.heap_at(pool.abandoned as usize);
                pool.abandoned = h.next.load(Relaxed);
                h
            } else if pool.unused < MAX_HEAPS {
                pool.unused += 1;
                let h = self.heap_at(pool.unused - 1);
                h.init(self, kind::owner_tag(pool.unused as u32 - 1));
                h
            } else {
                return None;
            }
        };
        let _busy = Busy::enter();
        // SAFETY: our key; glibc may allocate here (keys past 32), which
        // `Busy` sends to the fallback.
        unsafe { libc::pthread_setspecific(self.key, (h as *const Heap).cast()) };
        CURRENT.with(|c| c.set((self.id, h)));
        Some(h)
    }

    /// Abandons `h` (its thread is exiting) and returns it to the pool.
    fn abandon(&self, h: &Heap) {
        CURRENT.with(|c| {
            if core::ptr::eq(c.get().1, h) {
                c.set((0, core::ptr::null()));
            }
        });
        let _busy = Busy::enter();
        h.abandon(self);
        let Some(mut pool) = lock(&self.pool) else {
            return;
        };
        h.next.store(pool.abandoned, Relaxed);
        pool.abandoned = self.heap_index(h);
    }

    /// Collects the frees made into abandoned heaps (whose threads exited)
    /// and gives back the spans they emptied. Abandoned heaps have no owner
    /// thread: whoever holds the pool lock acts as their owner.
    pub fn collect_abandoned(&self) {
        let Some(pool) = lock(&self.pool) else {
            return;
        };
        let _busy = Busy::enter();
        let mut i = pool.abandoned;
        while i != NONE {
            let h = self.heap_at(i as usize);
            h.collect(self);
            h.release_spares(self);
            i = h.next.load(Relaxed);
        }
    }

    /// Heaps ever created (for statistics).
    pub fn heaps_created(&self) -> usize {
        lock(&self.pool).map_or(0, |p| p.unused)
    }

    /// Heap slot `i` (for statistics).
    pub fn heap_slot(&self, i: usize) -> &Heap {
        self.heap_at(i)
    }

    // ---------------------------------------------------------------
    // Spans
    // ---------------------------------------------------------------

    /// A fresh span for blocks of `class`, owned by `heap`.
    pub fn new_small_span(&self, heap: &Heap, class: usize) -> Option<usize> {
        // Before growing, reclaim what exited threads' heaps got back.
        self.collect_abandoned();
        let run = lock(&self.runs)?.alloc(&self.spans, 1, 1, 0)?;
        format_span(
            &self.spans,
            run.start,
            heap,
            class,
            self.classes.size_of(class),
        );
        let k = kind::small(class, heap.tag.load(Relaxed));
        self.spans.set_kinds(run.start, 1, k, k);
        self.counters.small_spans.fetch_add(1, Relaxed);
        Some(run.start)
    }

    /// Gives back a small span whose blocks are all free.
    pub fn release_small_span(&self, s: usize) {
        self.counters.small_spans.fetch_sub(1, Relaxed);
        self.spans
            .meta(s)
            .owner
            .store(core::ptr::null_mut(), Relaxed);
        self.give_back(Run {
            start: s,
            len: 1,
            dirty: true,
        });
    }

    /// Returns a run to the run allocator, clearing it through the pager
    /// if dirty memory exceeds the cap. (In a forked child whose copy of
    /// the lock is held, the run is kept: its kinds already say it is not
    /// an object, so a second free is still caught; see [`lock`].)
    pub fn give_back(&self, run: Run) {
        let clear = lock(&self.runs).and_then(|mut runs| runs.free(&self.spans, run, true));
        if let Some(r) = clear {
            let ok = self.clear(r.start, r.len);
            if let Some(mut runs) = lock(&self.runs) {
                runs.free(&self.spans, Run { dirty: !ok, ..r }, false);
            }
        }
    }

    /// Discards the contents of spans `[start, start + n)` through the
    /// pager (they read as zeros next, memory and disk are released).
    fn clear(&self, start: usize, n: usize) -> bool {
        let _busy = Busy::enter();
        let _errno = crate::sys::ErrnoGuard::save();
        let bytes = n << self.spans.shift;
        let ok = self
            .pager
            .clear(self.spans.addr(start) as *const u8, bytes)
            .is_ok();
        if ok {
            self.counters.cleared_bytes.fetch_add(bytes, Relaxed);
        }
        ok
    }

    /// Spans ever used, free, free and dirty.
    pub fn run_census(&self) -> (usize, usize, usize) {
        lock(&self.runs).map_or((0, 0, 0), |r| r.census())
    }

    // ---------------------------------------------------------------
    // Small and large objects
    // ---------------------------------------------------------------

    /// `size` bytes aligned to `align` (a power of two), or null. The
    /// second value says whether the memory may hold stale data (false:
    /// it reads as zeros).
    #[inline]
    pub fn alloc(&self, size: usize, align: usize) -> (*mut u8, bool) {
        if size <= self.classes.max_size() && align <= MIN_ALIGN {
            let Some(heap) = self.heap() else {
                return (crate::sys::fallback::alloc(size, align), true);
            };
            return (heap.alloc(self, self.classes.class_of(size)), true);
        }
        self.alloc_other(size, align)
    }

    #[cold]
    fn alloc_other(&self, size: usize, align: usize) -> (*mut u8, bool) {
        if FORKED.load(Relaxed) {
            return (crate::sys::fallback::alloc(size, align), true);
        }
        if size <= self.classes.max_size() && align <= self.classes.max_size() {
            // The smallest class at least as large whose blocks (placed at
            // multiples of their size from an aligned span) are aligned.
            let mut c = self.classes.class_of(size.max(align));
            while c < self.classes.count() && self.classes.size_of(c) % align != 0 {
                c += 1;
            }
            if c < self.classes.count() {
                let Some(heap) = self.heap() else {
                    return (crate::sys::fallback::alloc(size, align), true);
                };
                return (heap.alloc(self, c), true);
            }
        }
        self.alloc_large(size, align)
    }

    fn alloc_large(&self, size: usize, align: usize) -> (*mut u8, bool) {
        let shift = self.spans.shift;
        let Some(n) = size
            .checked_add((1 << shift) - 1)
            .map(|s| (s >> shift).max(1))
        else {
            return (core::ptr::null_mut(), false);
        };
        let a = (align >> shift).max(1);
        if a == 1 && n <= LARGE_CACHE_SPANS {
            if let Some(r) = self.heap().and_then(|h| h.uncache_large(n)) {
                return (self.large_at(r.start, n, size), true);
            }
        }
        // The span index `s` with `base + s * span` aligned to `align`.
        let phase = (a - (self.spans.base >> shift) % a) % a;
        let Some(run) = lock(&self.runs).and_then(|mut r| r.alloc(&self.spans, n, a, phase)) else {
            return (core::ptr::null_mut(), false);
        };
        (self.large_at(run.start, n, size), run.dirty)
    }

    /// Makes spans `[s, s + n)` a large object of `size` bytes.
    fn large_at(&self, s: usize, n: usize, size: usize) -> *mut u8 {
        let m = self.spans.meta(s);
        m.len.store(n, Relaxed);
        m.size.store(size, Relaxed);
        self.spans.set_kinds(s, n, kind::LARGE, kind::LARGE_BODY);
        self.spans.addr(s) as *mut u8
    }

    /// Gives back the runs a heap kept for reuse.
    pub fn give_back_cached(&self, runs: impl Iterator<Item = Run>) {
        for r in runs {
            self.give_back(r);
        }
    }

    /// Zeros `len` bytes at `p` just allocated: by the pager for large
    /// dirty runs (no memset, memory released), else with a memset.
    pub fn zero(&self, p: *mut u8, len: usize) {
        let s = self.spans.index_of(p as usize);
        if let Some(s) = s.filter(|_| len >= 1 << 20) {
            if self.spans.kind(s).load(Relaxed) == kind::LARGE
                && self.clear(s, self.spans.meta(s).len.load(Relaxed))
            {
                return;
            }
        }
        // SAFETY: the caller just allocated `len` bytes at `p`.
        unsafe { core::ptr::write_bytes(p, 0, len) };
    }

    /// Frees `p` (not null). Pointers outside the arena go to glibc's
    /// allocator (the fallback, or memory from before the allocator).
    ///
    /// The owner thread's free of a small block is tried first, calling
    /// nothing; everything else (foreign pointers, large objects, remote
    /// frees, errors, spans changing lists) is out of line.
    #[inline]
    pub fn free(&self, p: *mut u8) {
        match self.heap_if_any() {
            Some(h) if self.try_free_fast(h, p) => {}
            _ => self.free_general(p),
        }
    }

    /// The owner thread's free of a small block, calling nothing: true if
    /// done, false (nothing changed) if [`free_general`](Self::free_general)
    /// must do it. `h` is the calling thread's heap.
    #[inline(always)]
    pub fn try_free_fast(&self, h: &Heap, p: *mut u8) -> bool {
        let addr = p as usize;
        let Some((s, off)) = self.spans.locate(addr) else {
            return false;
        };
        // SAFETY: `s < count`, checked by `locate`.
        let k = unsafe { self.spans.kind_unchecked(s) }.load(Acquire);
        let Some(class) = kind::owned_class(k, h.tag.load(Relaxed)) else {
            return false;
        };
        debug_assert!(core::ptr::eq(self.spans.meta(s).owner.load(Relaxed), h));
        let Some(index) = self.block_at(class, off) else {
            return false;
        };
        h.try_free_local(&self.spans, s, class, index, addr)
    }

    /// A small block of `size` from the free cache or the claimed word of
    /// `h` (the calling thread's heap), if `size` is small and either has
    /// one; calls nothing.
    #[inline(always)]
    pub fn try_alloc_fast(&self, h: &Heap, size: usize) -> Option<*mut u8> {
        if size > self.classes.max_size() {
            return None;
        }
        h.alloc_fast(self.classes.class_of(size) & (crate::classes::MAX_CLASSES - 1))
    }

    /// Every case of [`free`](Self::free).
    #[inline(never)]
    pub fn free_general(&self, p: *mut u8) {
        let addr = p as usize;
        let Some(s) = self.spans.index_of(addr) else {
            return free_foreign(p);
        };
        // SAFETY: `s < count`, checked by `index_of`.
        let k = unsafe { self.spans.kind_unchecked(s) }.load(Acquire);
        if k < kind::SMALL {
            return self.free_not_small(s, k, addr);
        }
        let class = kind::class(k);
        // SAFETY: as above.
        let m = unsafe { self.spans.meta_unchecked(s) };
        match self.heap_if_any() {
            Some(h) if core::ptr::eq(m.owner.load(Relaxed), h) => {
                let index = self.block_of(s, class, addr);
                h.free_local(self, s, m, class, index, addr);
            }
            _ => self.free_remote(s, class, addr),
        }
    }

    #[inline(never)]
    fn free_remote(&self, s: usize, class: usize, addr: usize) {
        let index = self.block_of(s, class, addr);
        Heap::free_remote(&self.spans, s, self.spans.meta(s), index, addr);
    }

    #[inline(never)]
    fn free_not_small(&self, s: usize, k: u32, addr: usize) {
        match k {
            kind::LARGE => self.free_large(s, addr),
            kind::LARGE_BODY => fatal("free(): invalid pointer", addr),
            _ => fatal("free(): double free or pointer to free memory", addr),
        }
    }

    /// The index of the block at `addr` in span `s` of `class`; aborts if
    /// `addr` is not the start of a block.
    #[inline]
    fn block_of(&self, s: usize, class: usize, addr: usize) -> usize {
        match self.block_at(class, addr - self.spans.addr(s)) {
            Some(index) => index,
            None => fatal("free(): invalid pointer", addr),
        }
    }

    /// The index of the block of `class` starting at offset `off` of its
    /// span, if a block starts there.
    #[inline(always)]
    fn block_at(&self, class: usize, off: usize) -> Option<usize> {
        self.dividers[class].block(off)
    }

    fn free_large(&self, s: usize, addr: usize) {
        if addr != self.spans.addr(s)
            || self
                .spans
                .kind(s)
                .compare_exchange(kind::LARGE, kind::CLEARING, AcqRel, Relaxed)
                .is_err()
        {
            fatal("free(): double free or pointer to free memory", addr);
        }
        let len = self.spans.meta(s).len.load(Relaxed);
        let run = Run {
            start: s,
            len,
            dirty: true,
        };
        // Kept by the freeing thread's heap for reuse without the lock
        // (marked CACHED: a second free is still caught), or given back.
        let evicted = match self.heap_if_any() {
            Some(h) if h.cached_spans() + len <= self.cache_spans => {
                self.spans.set_kinds(s, len, kind::CACHED, kind::LARGE_BODY);
                h.cache_large(run)
            }
            _ => Some(run),
        };
        if let Some(r) = evicted {
            self.give_back(r);
        }
    }

    /// Bytes usable at `p` (a live allocation), or `None` if `p` is not in
    /// the arena.
    pub fn usable_size(&self, p: *const u8) -> Option<usize> {
        let addr = p as usize;
        let s = self.spans.index_of(addr)?;
        Some(match self.spans.kind(s).load(Acquire) {
            k if k >= kind::SMALL => {
                let class = kind::class(k);
                self.block_of(s, class, addr);
                self.classes.size_of(class)
            }
            kind::LARGE if addr == self.spans.addr(s) => self.large_usable(s),
            _ => fatal("malloc_usable_size(): invalid pointer", addr),
        })
    }

    /// A large object's usable bytes: what was asked for, up to whole SBMA
    /// pages (the rest of its last span is never touched).
    fn large_usable(&self, s: usize) -> usize {
        let m = self.spans.meta(s);
        m.size
            .load(Relaxed)
            .next_multiple_of(self.page)
            .min(m.len.load(Relaxed) << self.spans.shift)
    }

    /// Resizes the large object at span `s` in place to `size` bytes if
    /// its spans allow (shrinking always does; growing takes the free
    /// spans after it).
    pub fn resize_large_in_place(&self, s: usize, size: usize) -> bool {
        let shift = self.spans.shift;
        let m = self.spans.meta(s);
        let len = m.len.load(Relaxed);
        let want = (size.div_ceil(1 << shift)).max(1);
        if want > len {
            let taken =
                lock(&self.runs).and_then(|mut r| r.take_at(&self.spans, s + len, want - len));
            if taken.is_none() {
                return false;
            }
            self.spans
                .set_kinds(s + len, want - len, kind::LARGE_BODY, kind::LARGE_BODY);
        } else if want < len {
            self.spans
                .set_kinds(s + want, len - want, kind::CLEARING, kind::CLEARING);
            m.len.store(want, Relaxed);
            self.give_back(Run {
                start: s + want,
                len: len - want,
                dirty: true,
            });
        }
        m.len.store(want, Relaxed);
        m.size.store(size, Relaxed);
        true
    }

    /// Moves the large object at `p` (span `s`), which cannot grow in
    /// place, to a new one of `size` bytes by moving its pages through the
    /// pager (`Pager::relocate`: file ranges for evicted pages, page
    /// tables for resident ones) instead of copying its bytes, and frees
    /// it. Only when it pays: the object is at least [`MOVE_MIN`] and at
    /// most half of it is in memory (a copy would read the rest back from
    /// disk, evicting as much; for resident pages a copy is faster than
    /// the kernel's moves, which flush the TLB page by page). `None`
    /// otherwise, in a forked child, or if no run is free (the caller
    /// copies, or fails). Pages the pager could not move are copied.
    pub fn move_large(&self, p: *mut u8, s: usize, size: usize) -> Option<*mut u8> {
        let old = self.large_usable(s);
        if old < MOVE_MIN || size <= old || FORKED.load(Relaxed) {
            return None;
        }
        let resident = self.pager.resident_bytes(p, old).unwrap_or(old);
        if resident > old / 2 {
            return None;
        }
        let (q, _) = self.alloc_large(size, MIN_ALIGN);
        if q.is_null() {
            return None;
        }
        let moved = {
            let _busy = Busy::enter();
            let _errno = crate::sys::ErrnoGuard::save();
            match self.pager.relocate(p, q, old) {
                Ok(()) => old,
                Err(e) => e.moved,
            }
        };
        if moved < old {
            // SAFETY: both objects are live and distinct; `old` bytes are
            // readable at `p` and writable at `q` (`size > old`).
            unsafe { core::ptr::copy_nonoverlapping(p.add(moved), q.add(moved), old - moved) };
        }
        self.counters.moved_bytes.fetch_add(moved, Relaxed);
        self.free(p);
        Some(q)
    }

    /// Whether `p` is the start of a large object, and its span.
    pub fn large_span(&self, p: *const u8) -> Option<usize> {
        let s = self.spans.index_of(p as usize)?;
        (self.spans.kind(s).load(Acquire) == kind::LARGE && p as usize == self.spans.addr(s))
            .then_some(s)
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // SAFETY: our key; no destructor runs for it afterwards.
        unsafe { libc::pthread_key_delete(self.key) };
    }
}

/// The pthread-key destructor: the thread owning heap `h` is exiting.
extern "C" fn heap_exit(h: *mut libc::c_void) {
    // SAFETY: the key holds heaps only, whose core set the key and is alive
    // (the key is deleted before the core goes away).
    let h = unsafe { &*h.cast::<Heap>() };
    // SAFETY: as above.
    let core = unsafe { &*h.core.load(Relaxed) };
    core.abandon(h);
}

/// Frees a pointer outside the arena: glibc's.
#[inline(never)]
fn free_foreign(p: *mut u8) {
    // SAFETY: not ours: the fallback's (glibc's) by the contract of `free`.
    unsafe { crate::sys::fallback::free(p) };
}
