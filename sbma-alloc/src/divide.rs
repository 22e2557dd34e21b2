//! Block indices from span offsets: one multiply and one rotate, checking
//! at once that a block starts at the offset.
//!
//! A block size is `d = 2^k × o` with `o` odd. Multiplying by the inverse
//! of `o` modulo 2^64 maps the multiples of `o` below 2^64 onto
//! `[0, 2^64 / o)` in order (`j × o ↦ j`) and every other number above
//! that range. Rotating right by `k` then divides a multiple of `d` by
//! `2^k` exactly and sends anything else (low bits set, or above the
//! range) to at least `2^64 / d`. So `q = rotr(off × inv(o), k)` is the
//! block index `off / d` when `off` is a block start, and is at least
//! `2^64 / d` otherwise: one compare with the blocks per span (far below)
//! tells both that `off` is a block start and that the block is in the
//! span. (The divisibility test of Granlund and Montgomery, 1994, and
//! Hacker's Delight, section 10-17.)

/// Finds the block starting at an offset of a span, for one block size.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Divider {
    /// The inverse of the size's odd part, modulo 2^64.
    mul: u64,
    /// The size's trailing zero bits.
    rot: u32,
    /// Blocks per span.
    cap: u32,
}

impl Divider {
    /// For blocks of `size` bytes (non-zero), `cap` of them per span
    /// (`cap × size` fits a span, so `cap < 2^64 / size`).
    pub fn new(size: usize, cap: u32) -> Divider {
        assert!(size > 0 && (cap as u128) * (size as u128) <= 1 << 63);
        let rot = size.trailing_zeros();
        let odd = (size >> rot) as u64;
        // Newton's iteration: `odd` is its own inverse modulo 8 (3 bits),
        // and each step doubles the correct bits (3, 6, 12, 24, 48, 96).
        let mut inv = odd;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inv)));
        }
        debug_assert_eq!(odd.wrapping_mul(inv), 1);
        Divider { mul: inv, rot, cap }
    }

    /// The index of the block starting at `off`, or `None` if no block of
    /// the span starts there.
    #[inline(always)]
    pub fn block(&self, off: usize) -> Option<usize> {
        let q = (off as u64).wrapping_mul(self.mul).rotate_right(self.rot);
        (q < u64::from(self.cap)).then_some(q as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every offset of a 64 KiB span, for every size up to 1 KiB a class
    /// table may have (multiples of 16) and the default classes above,
    /// and offsets far outside.
    #[test]
    fn finds_exactly_the_block_starts() {
        const SPAN: usize = 64 << 10;
        let t = crate::classes::ClassTable::new::<crate::QuarterClasses>().unwrap();
        let large = (0..t.count()).map(|c| t.size_of(c)).filter(|&s| s > 1024);
        for size in (16..=1024).step_by(16).chain(large) {
            let cap = (SPAN / size) as u32;
            let d = Divider::new(size, cap);
            for off in 0..SPAN {
                let want = (off % size == 0 && off / size < cap as usize).then_some(off / size);
                assert_eq!(d.block(off), want, "size {size} offset {off}");
            }
            for off in [
                SPAN,
                SPAN + size,
                usize::MAX,
                usize::MAX - size + 1,
                1 << 40,
            ] {
                assert_eq!(d.block(off), None, "size {size} offset {off}");
            }
        }
    }

    #[test]
    fn odd_and_large_sizes() {
        for size in [1usize, 3, 7, 24, 48, 80, 1 << 20, 3 << 20, (1 << 32) + 16] {
            let d = Divider::new(size, 100);
            for j in 0..100 {
                assert_eq!(d.block(j * size), Some(j));
                if size > 1 {
                    assert_eq!(d.block(j * size + 1), None);
                }
            }
            assert_eq!(d.block(100 * size), None);
        }
    }
}
