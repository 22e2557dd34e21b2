//! Spans: the arena cut into equal, aligned pieces (64 KiB, or one SBMA
//! page if that is larger), and the metadata that describes them.
//!
//! Metadata lives **outside managed memory**, in two anonymous mappings
//! indexed by span number (`(addr - base) >> span_shift`):
//! - `kinds`: one 32-bit word per span, what the span is (free, small of
//!   which class, head or body of a large object) and, for a small span,
//!   which heap owns it. Every span of a run is written, so any address
//!   resolves to the truth and an interior pointer is never taken for the
//!   start of an object. The owner's free checks "small, mine, of class
//!   c" with one load, one xor and one compare ([`kind::owned_class`]).
//! - `metas`: one [`SpanMeta`] per span.
//! - `bitmaps`: per span, interleaved bitmaps of one bit per block,
//!   grouped by 64 blocks ([`Words`]): `local` (free blocks, written only
//!   by the owning heap), `remote` (blocks freed by other threads, set
//!   with `fetch_or`, collected by the owner) and `cached` (blocks the
//!   owner holds: freed into its heap's free cache, or claimed).
//!
//! Both strides are powers of two, so the free path finds a span's
//! metadata with shifts (no multiply on its critical path).
//!
//! So freeing a block never reads or writes the block itself: an evicted
//! object is freed without being loaded, and the fault path never faults on
//! metadata.
//!
//! # Safety
//! `SpanTable::meta` hands out references into the mapping; indices are
//! checked against the span count.
#![allow(unsafe_code, reason = "span metadata lives in a raw mapping")]

use crate::heap::Heap;
use crate::sys::Mapping;
use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};

/// No span / end of a list.
pub(crate) const NONE: u32 = u32::MAX;

/// What a span is (`SpanTable::kind`): a kind word, the kind in its low
/// byte and, for small spans, the owning heap's tag above it (0 for every
/// other kind).
pub(crate) mod kind {
    /// Not in use: never used (at or past the top), or inside a free run.
    pub const FREE: u32 = 0;
    /// First span of a free run (its meta holds the run's length).
    pub const FREE_HEAD: u32 = 1;
    /// Last span of a free run of two or more (meta holds the length too).
    pub const FREE_TAIL: u32 = 2;
    /// Carved into blocks of class `(k & 0xff) - SMALL` (for any kind
    /// word `k >= SMALL`, see [`class`]), owned by one heap whose tag is in
    /// the word's high bits ([`small`]).
    pub const SMALL: u32 = 16;
    /// First span of a large object.
    pub const LARGE: u32 = 4;
    /// Any other span of a large object.
    pub const LARGE_BODY: u32 = 5;
    /// Being cleared (taken out of the free runs for a moment).
    pub const CLEARING: u32 = 6;
    /// First span of a freed large object kept by a heap for reuse.
    pub const CACHED: u32 = 7;

    /// The tag of heap number `index`: the high bits of the kind words of
    /// its small spans (never 0, so no other kind word has them).
    pub const fn owner_tag(index: u32) -> u32 {
        assert!(index < 1 << 23);
        (index + 1) << 8
    }

    /// The kind word of a small span of `class` owned by the heap with
    /// tag `owner`. For such a word `k`, `(k ^ owner) - SMALL` is `class`,
    /// and for any other word (another kind, another owner) it is at
    /// least 2^8 - SMALL: one compare with the class count tells them
    /// apart.
    pub const fn small(class: usize, owner: u32) -> u32 {
        assert!(class < 256 - SMALL as usize);
        owner | (SMALL + class as u32)
    }

    /// The class of the span whose kind word is `k` if it is a small span
    /// owned by the heap with tag `owner`: one xor and one compare.
    #[inline(always)]
    pub const fn owned_class(k: u32, owner: u32) -> Option<usize> {
        let class = (k ^ owner).wrapping_sub(SMALL) as usize;
        if class < crate::classes::MAX_CLASSES {
            Some(class)
        } else {
            None
        }
    }

    /// The class of a small span's kind word `k` (`k >= SMALL`).
    pub const fn class(k: u32) -> usize {
        ((k & 0xff) - SMALL) as usize
    }
}

/// The metadata of one span.
///
/// Fields marked *owner* are read and written by the owning heap only
/// (relaxed atomics: plain loads and stores); fields marked *runs* are
/// under the run allocator's lock; the rest is documented per field.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct SpanMeta {
    /// *runs*: span count of a free run (head and tail) or large object
    /// (head).
    pub len: AtomicUsize,
    /// Large head: the bytes asked for.
    pub size: AtomicUsize,
    /// *runs*: free-run bin links.
    pub bin_next: AtomicU32,
    pub bin_prev: AtomicU32,
    /// *runs*: the free run's pages may hold stale data (and memory).
    pub dirty: AtomicBool,
    /// Small: set once a remote free queued the span on its owner's
    /// pending list, cleared by the owner before it collects; set by the
    /// owner when it releases the span (closed), cleared when the span is
    /// formatted again.
    pub queued: AtomicBool,
    /// *owner*: on the owner's available list for its class.
    pub in_avail: AtomicBool,
    /// Small: the owning heap (stable while any block is allocated).
    pub owner: AtomicPtr<Heap>,
    /// Small: class, block size, blocks, bitmap words (set before the span
    /// is handed out, stable while any block is allocated).
    pub class: AtomicU32,
    pub block: AtomicU32,
    pub capacity: AtomicU32,
    pub words: AtomicU32,
    /// *owner*: free blocks in `local`.
    pub free: AtomicU32,
    /// *owner*: no free bit below this word.
    pub cursor: AtomicU32,
    /// *owner*: available-list links.
    pub avail_next: AtomicU32,
    pub avail_prev: AtomicU32,
    /// Pending-list link (written by whoever queues the span).
    pub pending_next: AtomicU32,
}

/// The bitmap words of 64 blocks of a span, in one 32-byte group: a free
/// reads all three and writes one, in one cache line.
///
/// A block is free if its bit is set in any of the three; allocated if in
/// none.
#[repr(C, align(32))]
#[derive(Debug, Default)]
pub(crate) struct Words {
    /// Free blocks (written by the owning heap only).
    pub local: AtomicU64,
    /// Blocks freed by other threads and not collected yet.
    pub remote: AtomicU64,
    /// Blocks the owner holds: freed into its heap's free cache, or
    /// claimed (written by the owning heap only; read by frees from other
    /// threads, to catch double frees).
    pub cached: AtomicU64,
    _unused: AtomicU64,
}

impl Words {
    /// Blocks held by the owner (in its free cache, or claimed).
    #[inline(always)]
    pub fn held(&self) -> u64 {
        self.cached.load(Relaxed)
    }

    /// Marks blocks `bits` held (none of them is): owner only.
    #[inline(always)]
    pub fn hold(&self, bits: u64) {
        self.cached.store(self.cached.load(Relaxed) | bits, Relaxed);
    }

    /// Unmarks blocks `bits` (all of them held): owner only. (An xor: all
    /// are set, and it needs no inverted mask.)
    #[inline(always)]
    pub fn release(&self, bits: u64) {
        let held = self.cached.load(Relaxed);
        debug_assert_eq!(held & bits, bits, "releasing blocks not held");
        self.cached.store(held ^ bits, Relaxed);
    }
}

/// Each span's [`SpanMeta`] takes `1 << META_SHIFT` bytes (a constant
/// shift on the free path).
const META_SHIFT: u32 = size_of::<SpanMeta>().next_power_of_two().trailing_zeros();

/// Spans of one arena and their metadata.
#[derive(Debug)]
pub(crate) struct SpanTable {
    pub base: usize,
    pub count: usize,
    pub shift: u32,
    /// `(1 << shift) - 1`: a span offset from an arena offset.
    mask: usize,
    /// Bitmap words per span (`span / 16 / 64`).
    pub wmax: usize,
    /// log2 of the bytes per span in `metas` and in `bitmaps`.
    bitmap_shift: u32,
    metas: Mapping,
    bitmaps: Mapping,
    kinds: Mapping,
}

impl SpanTable {
    pub fn new(base: usize, count: usize, shift: u32) -> Result<SpanTable, rustix::io::Errno> {
        let wmax = ((1usize << shift) / crate::MIN_ALIGN).div_ceil(64);
        let bitmap_shift = (size_of::<Words>() * wmax)
            .next_power_of_two()
            .trailing_zeros();
        Ok(SpanTable {
            base,
            count,
            shift,
            mask: (1 << shift) - 1,
            wmax,
            bitmap_shift,
            metas: Mapping::new(count << META_SHIFT)?,
            bitmaps: Mapping::new(count << bitmap_shift)?,
            kinds: Mapping::new(count * size_of::<AtomicU32>())?,
        })
    }

    /// The span holding `addr`, if it is in the arena.
    #[inline]
    pub fn index_of(&self, addr: usize) -> Option<usize> {
        let i = addr.wrapping_sub(self.base) >> self.shift;
        (i < self.count).then_some(i)
    }

    /// The span holding `addr` and the offset of `addr` in it.
    #[inline]
    pub fn locate(&self, addr: usize) -> Option<(usize, usize)> {
        let rel = addr.wrapping_sub(self.base);
        let i = rel >> self.shift;
        (i < self.count).then_some((i, rel & self.mask))
    }

    /// The first byte of span `i`.
    #[inline]
    pub fn addr(&self, i: usize) -> usize {
        self.base + (i << self.shift)
    }

    /// What span `i` is: its kind word ([`kind`]).
    #[inline]
    pub fn kind(&self, i: usize) -> &AtomicU32 {
        assert!(i < self.count);
        // SAFETY: in bounds (checked above).
        unsafe { self.kind_unchecked(i) }
    }

    /// Sets the kind of spans `[start, start + n)`: `first` for the first,
    /// `rest` for the others.
    pub fn set_kinds(&self, start: usize, n: usize, first: u32, rest: u32) {
        assert!(n > 0 && start + n <= self.count);
        self.kind(start)
            .store(first, core::sync::atomic::Ordering::Release);
        for i in start + 1..start + n {
            // SAFETY: in bounds (checked above).
            unsafe { self.kind_unchecked(i) }.store(rest, Relaxed);
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
    }

    /// [`kind`](Self::kind) without the bounds check.
    ///
    /// # Safety
    /// `i < self.count`.
    #[inline]
    pub unsafe fn kind_unchecked(&self, i: usize) -> &AtomicU32 {
        debug_assert!(i < self.count);
        // SAFETY: in bounds by the caller's contract; the kinds mapping
        // lives as long as `self` and holds one aligned word per span
        // (page-aligned mapping); zero bytes are a valid AtomicU32.
        unsafe { &*self.kinds.ptr().cast::<AtomicU32>().add(i) }
    }

    /// [`meta`](Self::meta) without the bounds check.
    ///
    /// # Safety
    /// `i < self.count`.
    #[inline]
    pub unsafe fn meta_unchecked(&self, i: usize) -> &SpanMeta {
        debug_assert!(i < self.count);
        // SAFETY: in bounds by the caller's contract; the metadata mapping
        // lives as long as `self`, `1 << META_SHIFT` bytes per span; it
        // starts zeroed, all-zero bytes are a valid SpanMeta (atomics and
        // a null pointer), and it is only accessed through atomics.
        unsafe { &*self.metas.ptr().add(i << META_SHIFT).cast::<SpanMeta>() }
    }

    /// The metadata of span `i`.
    #[inline]
    pub fn meta(&self, i: usize) -> &SpanMeta {
        assert!(i < self.count);
        // SAFETY: in bounds (checked above).
        unsafe { self.meta_unchecked(i) }
    }

    /// Bitmap words `w` of span `i` (blocks `64 w` to `64 w + 63`).
    #[inline]
    pub fn words(&self, i: usize, w: usize) -> &Words {
        assert!(i < self.count && w < self.wmax);
        // SAFETY: in bounds (checked above).
        unsafe { self.words_unchecked(i, w) }
    }

    /// [`words`](Self::words) without the bounds check.
    ///
    /// # Safety
    /// `i < self.count` and `w < self.wmax`.
    #[inline]
    pub unsafe fn words_unchecked(&self, i: usize, w: usize) -> &Words {
        debug_assert!(i < self.count && w < self.wmax);
        let off = (i << self.bitmap_shift) + size_of::<Words>() * w;
        // SAFETY: in bounds by the caller's contract (a span's share of
        // `bitmaps` holds `wmax` groups), aligned (the mapping is
        // page-aligned, the share a power of two of at least 32 bytes);
        // zero bytes are valid atomics; the mapping lives as long as
        // `self`.
        unsafe { &*self.bitmaps.ptr().add(off).cast::<Words>() }
    }
}

#[cfg(test)]
mod tests {
    use super::kind;
    use crate::classes::MAX_CLASSES;

    /// `owned_class` finds the class of its own heap's small spans and
    /// nothing else: other kinds, other heaps' spans.
    #[test]
    fn a_kind_word_names_the_owner_and_the_class() {
        let others = [
            kind::FREE,
            kind::FREE_HEAD,
            kind::FREE_TAIL,
            kind::LARGE,
            kind::LARGE_BODY,
            kind::CLEARING,
            kind::CACHED,
        ];
        let heaps = [0, 1, 2, 255, 256, 4095, (1 << 23) - 1];
        for &i in &heaps {
            let me = kind::owner_tag(i);
            for k in others {
                assert_eq!(kind::owned_class(k, me), None, "kind {k} for heap {i}");
            }
            for class in 0..MAX_CLASSES {
                let k = kind::small(class, me);
                assert!(k >= kind::SMALL);
                assert_eq!(kind::class(k), class);
                assert_eq!(kind::owned_class(k, me), Some(class));
                for &j in heaps.iter().filter(|&&j| j != i) {
                    let other = kind::small(class, kind::owner_tag(j));
                    assert_eq!(
                        kind::owned_class(other, me),
                        None,
                        "heap {j}'s span for heap {i}"
                    );
                }
            }
        }
    }
}
