//! Size classes: which block size serves a small request.
//!
//! A [`SizeClasses`] implementation is a pure table. The allocator turns it
//! into a [`ClassTable`] once (a lookup array indexed by `size / 16`, block
//! and block sizes), so the fast path costs one load whatever
//! the implementation.
//!
//! The default, [`QuarterClasses`], is the jemalloc/snmalloc family: exact
//! 16-byte steps up to 64 bytes, then four classes per doubling
//! (`2^g + k·2^(g-2)`), up to 16 KiB: 36 classes, at most 25% of a block
//! wasted above 64 bytes (20% of the block just above each power of two).

/// The alignment every block has at least (C's `max_align_t` on x86-64 and
/// aarch64).
pub const MIN_ALIGN: usize = 16;
/// The most classes a table may have.
pub const MAX_CLASSES: usize = 64;
/// The largest small size a table may serve; larger requests are *large*
/// (whole spans of their own).
pub const MAX_SMALL: usize = 16 << 10;

/// A table of size classes for small blocks.
///
/// # Requirements
/// Checked by [`ClassTable::new`] (a table that breaks one is refused) and
/// by the conformance test over every bundled table:
/// - `1 <= COUNT <= MAX_CLASSES`;
/// - `size_of` is strictly increasing over `0..COUNT`, every size is a
///   multiple of [`MIN_ALIGN`], and `size_of(COUNT - 1) == MAX_SIZE <=
///   MAX_SMALL`;
/// - `class_of(s)` (for `1 <= s <= MAX_SIZE`) is the *smallest* class whose
///   size is at least `s`;
/// - both are pure (same answer every time, no side effect).
pub trait SizeClasses {
    /// How many classes there are.
    const COUNT: usize;
    /// The largest size served (the last class's size).
    const MAX_SIZE: usize;
    /// The class serving `size` bytes, `1 <= size <= MAX_SIZE`.
    fn class_of(size: usize) -> usize;
    /// The block size of `class`, `class < COUNT`.
    fn size_of(class: usize) -> usize;
}

/// Exact 16-byte steps up to 64 bytes, then four classes per doubling up to
/// 16 KiB (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct QuarterClasses;

impl SizeClasses for QuarterClasses {
    const COUNT: usize = 36;
    const MAX_SIZE: usize = MAX_SMALL;

    fn class_of(size: usize) -> usize {
        if size <= 64 {
            return size.saturating_sub(1) / 16;
        }
        // size in (2^g, 2^(g+1)]: g = floor(log2(size - 1)).
        let g = (usize::BITS - 1 - (size - 1).leading_zeros()) as usize;
        let step_shift = g - 2;
        let k = (size - 1 - (1 << g)) >> step_shift; // 0..=3
        4 + (g - 6) * 4 + k
    }

    fn size_of(class: usize) -> usize {
        if class < 4 {
            return (class + 1) * 16;
        }
        let g = 6 + (class - 4) / 4;
        let k = (class - 4) % 4 + 1;
        (1 << g) + (k << (g - 2))
    }
}

/// Powers of two from 16 bytes to 16 KiB: simple, up to 50% waste (a
/// second table for the conformance suite and for comparisons).
#[derive(Clone, Copy, Debug, Default)]
pub struct PowerOfTwoClasses;

impl SizeClasses for PowerOfTwoClasses {
    const COUNT: usize = 11;
    const MAX_SIZE: usize = MAX_SMALL;

    fn class_of(size: usize) -> usize {
        let p = size.max(MIN_ALIGN).next_power_of_two();
        p.trailing_zeros() as usize - 4
    }

    fn size_of(class: usize) -> usize {
        MIN_ALIGN << class
    }
}

/// A checked, precomputed form of a [`SizeClasses`] table.
#[derive(Clone, Debug)]
pub struct ClassTable {
    count: usize,
    max_size: usize,
    sizes: [u32; MAX_CLASSES],
    /// `lookup[(size + 15) / 16]` = class.
    lookup: [u8; MAX_SMALL / MIN_ALIGN + 1],
}

impl ClassTable {
    /// Builds and checks the table of `C`.
    ///
    /// # Errors
    /// A description of the first requirement `C` breaks.
    pub fn new<C: SizeClasses>() -> Result<ClassTable, String> {
        let count = C::COUNT;
        if count == 0 || count > MAX_CLASSES {
            return Err(format!("{count} classes (1..={MAX_CLASSES} allowed)"));
        }
        if C::MAX_SIZE > MAX_SMALL || C::size_of(count - 1) != C::MAX_SIZE {
            return Err(format!(
                "the last class is {} bytes, MAX_SIZE is {} (at most {MAX_SMALL})",
                C::size_of(count - 1),
                C::MAX_SIZE
            ));
        }
        let mut t = ClassTable {
            count,
            max_size: C::MAX_SIZE,
            sizes: [0; MAX_CLASSES],
            lookup: [0; MAX_SMALL / MIN_ALIGN + 1],
        };
        for c in 0..count {
            let s = C::size_of(c);
            if s == 0 || s % MIN_ALIGN != 0 || (c > 0 && s <= t.sizes[c - 1] as usize) {
                return Err(format!(
                    "class {c} is {s} bytes: sizes must increase in steps of {MIN_ALIGN}"
                ));
            }
            t.sizes[c] = s as u32;
        }
        for size in 1..=C::MAX_SIZE {
            let c = C::class_of(size);
            let smallest = t.sizes[..count].iter().position(|&s| s as usize >= size);
            if Some(c) != smallest {
                return Err(format!(
                    "class_of({size}) is {c}, the smallest class that fits is {smallest:?}"
                ));
            }
        }
        // Sizes in one 16-byte step share a class: the table is exact.
        for i in 1..t.lookup.len() {
            t.lookup[i] = C::class_of((i * MIN_ALIGN).min(C::MAX_SIZE)) as u8;
        }
        Ok(t)
    }

    /// How many classes there are.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The largest small size.
    #[inline]
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// The class of `size` (0 is served by class 0): one shift and one
    /// table load.
    ///
    /// # Panics
    /// If `size > max_size` (callers have checked; the check then folds
    /// into theirs).
    #[inline(always)]
    pub fn class_of(&self, size: usize) -> usize {
        assert!(size <= self.max_size, "class_of({size}): not a small size");
        // (Rounding up by an add and a shift: `div_ceil` compiles to four
        // instructions here.)
        let i = (size + MIN_ALIGN - 1) >> MIN_ALIGN.trailing_zeros();
        // SAFETY: `size <= max_size <= MAX_SMALL` (checked above and by
        // `new`), so `i <= MAX_SMALL / MIN_ALIGN`, the table's last index.
        #[allow(unsafe_code, reason = "a bound the optimizer cannot see")]
        let c = unsafe { *self.lookup.get_unchecked(i) };
        usize::from(c)
    }

    /// The block size of `class`.
    #[inline]
    pub fn size_of(&self, class: usize) -> usize {
        self.sizes[class] as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conformance suite every bundled table passes.
    fn conformance<C: SizeClasses>() {
        let t = ClassTable::new::<C>().unwrap();
        let mut worst = 0.0f64;
        for size in 1..=C::MAX_SIZE {
            let c = t.class_of(size);
            let block = t.size_of(c);
            assert!(block >= size && block % MIN_ALIGN == 0);
            assert!(
                c == 0 || t.size_of(c - 1) < size,
                "{size} not in its smallest class"
            );
            if size > 64 {
                worst = worst.max((block - size) as f64 / size as f64);
            }
        }
        eprintln!("{}: worst waste above 64 B {:.1}%", C::COUNT, worst * 100.0);
    }

    #[test]
    fn quarter_classes_conform_and_waste_at_most_a_quarter() {
        conformance::<QuarterClasses>();
        let t = ClassTable::new::<QuarterClasses>().unwrap();
        for size in 65..=MAX_SMALL {
            let block = t.size_of(t.class_of(size));
            assert!((block - size) * 4 < size, "{size} -> {block}");
        }
        let sizes: Vec<usize> = (0..8).map(|c| t.size_of(c)).collect();
        assert_eq!(sizes, [16, 32, 48, 64, 80, 96, 112, 128]);
        assert_eq!(t.size_of(35), 16384);
    }

    #[test]
    fn power_of_two_classes_conform() {
        conformance::<PowerOfTwoClasses>();
    }

    #[test]
    fn a_broken_table_is_refused() {
        struct Gappy;
        impl SizeClasses for Gappy {
            const COUNT: usize = 2;
            const MAX_SIZE: usize = 64;
            fn class_of(size: usize) -> usize {
                usize::from(size > 16)
            }
            fn size_of(class: usize) -> usize {
                [24, 64][class]
            }
        }
        let e = ClassTable::new::<Gappy>().unwrap_err();
        assert!(e.contains("steps of 16"), "{e}");
    }
}
