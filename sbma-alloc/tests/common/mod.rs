//! Shared helpers for the allocator's tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use sbma_alloc::SbmaAlloc;
use sbma_alloc::sbma_pager::Pager;

/// An allocator over a 4 GiB arena with `budget` bytes of memory and
/// `page`-byte SBMA pages, backed in `$TMPDIR`.
pub fn alloc(budget: usize, page: usize) -> SbmaAlloc {
    SbmaAlloc::builder()
        .pager(
            Pager::builder()
                .budget(budget)
                .page_size(page)
                .max_size(4 << 30),
        )
        .build()
        .expect("allocator starts")
}

/// The byte expected at offset `i` of a block filled with `seed`.
pub fn pattern(seed: u64, i: usize) -> u8 {
    (seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left((i % 61) as u32) as u8)
        ^ (i as u8)
}

/// Fills `len` bytes at `p` with the pattern of `seed`.
pub fn fill(p: *mut u8, len: usize, seed: u64) {
    for i in 0..len {
        // SAFETY: callers pass live blocks of at least `len` bytes.
        unsafe { p.add(i).write(pattern(seed, i)) };
    }
}

/// How many of `len` bytes at `p` differ from the pattern of `seed`.
pub fn check(p: *const u8, len: usize, seed: u64) -> usize {
    (0..len)
        // SAFETY: as in `fill`.
        .filter(|&i| unsafe { p.add(i).read() } != pattern(seed, i))
        .count()
}
