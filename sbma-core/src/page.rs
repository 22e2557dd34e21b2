//! Page quantities as newtypes: [`PageSize`], [`PageIndex`], [`PageCount`],
//! [`PageRange`] and [`AlignedLen`].
//!
//! An *SBMA page* is the unit of tracking, I/O and eviction. It is a power of
//! two and a multiple of the OS page (itself a power of two of at least
//! 4 KiB). Because both are powers of two, "multiple of the OS page" is the
//! same as "at least the OS page".
//!
//! All arithmetic that can overflow is checked and returns
//! [`Error::Overflow`]; nothing here panics on bad input except indexing
//! helpers that document it. wasmtime's `HostAlignedByteCount` is the model
//! for [`AlignedLen`]: a byte count that can only be built aligned.

use crate::Error;
use core::fmt;

/// The smallest OS page (and so the smallest SBMA page) accepted: 4 KiB.
pub const MIN_PAGE_SIZE: usize = 4096;
/// The largest SBMA page accepted: 1 GiB.
pub const MAX_PAGE_SIZE: usize = 1 << 30;

/// The size of an SBMA page: a power of two, at least the OS page, at most
/// [`MAX_PAGE_SIZE`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageSize {
    shift: u8,
}

impl PageSize {
    /// Validates `bytes` as an SBMA page size for a system whose page is
    /// `os_page` bytes.
    ///
    /// # Errors
    /// [`Error::NotPowerOfTwo`] if either value is not a power of two,
    /// [`Error::BelowOsPage`] if `os_page` is below 4 KiB or `bytes` below
    /// `os_page`, [`Error::AbovePageLimit`] above 1 GiB.
    ///
    /// # Examples
    /// ```
    /// use sbma_core::{Error, PageSize};
    /// assert_eq!(PageSize::new(65536, 4096).unwrap().bytes(), 65536);
    /// assert_eq!(PageSize::new(3 * 4096, 4096), Err(Error::NotPowerOfTwo));
    /// assert_eq!(PageSize::new(4096, 16384), Err(Error::BelowOsPage));
    /// ```
    pub const fn new(bytes: usize, os_page: usize) -> Result<Self, Error> {
        if !bytes.is_power_of_two() || !os_page.is_power_of_two() {
            return Err(Error::NotPowerOfTwo);
        }
        if os_page < MIN_PAGE_SIZE || bytes < os_page {
            return Err(Error::BelowOsPage);
        }
        if bytes > MAX_PAGE_SIZE {
            return Err(Error::AbovePageLimit);
        }
        Ok(PageSize {
            shift: bytes.trailing_zeros() as u8,
        })
    }

    /// The page size in bytes.
    pub const fn bytes(self) -> usize {
        1 << self.shift
    }

    /// `log2` of the page size.
    pub const fn shift(self) -> u32 {
        self.shift as u32
    }

    /// `bytes() - 1`: the bits of an offset inside a page.
    pub const fn mask(self) -> usize {
        self.bytes() - 1
    }

    /// Whether `bytes` is a multiple of the page size.
    pub const fn is_aligned(self, bytes: usize) -> bool {
        bytes & self.mask() == 0
    }

    /// The page that contains byte `offset` (rounds down).
    pub const fn page_of(self, offset: usize) -> PageIndex {
        PageIndex(offset >> self.shift)
    }

    /// The byte offset of the first byte of page `index`.
    ///
    /// # Errors
    /// [`Error::Overflow`] if the offset does not fit in `usize`.
    pub const fn offset_of(self, index: PageIndex) -> Result<usize, Error> {
        match index.0.checked_mul(self.bytes()) {
            Some(v) => Ok(v),
            None => Err(Error::Overflow),
        }
    }

    /// How many pages hold `bytes` bytes (rounds up).
    ///
    /// # Errors
    /// [`Error::Overflow`] if rounding up overflows.
    pub const fn pages_for(self, bytes: usize) -> Result<PageCount, Error> {
        match bytes.checked_add(self.mask()) {
            Some(v) => Ok(PageCount(v >> self.shift)),
            None => Err(Error::Overflow),
        }
    }

    /// The byte length of `count` pages.
    ///
    /// # Errors
    /// [`Error::Overflow`] if it does not fit in `usize`.
    pub const fn len_of(self, count: PageCount) -> Result<AlignedLen, Error> {
        match count.0.checked_mul(self.bytes()) {
            Some(bytes) => Ok(AlignedLen { bytes, page: self }),
            None => Err(Error::Overflow),
        }
    }

    /// `bytes` rounded up to a whole number of pages.
    ///
    /// # Errors
    /// [`Error::Overflow`] if rounding up overflows.
    pub const fn align_up(self, bytes: usize) -> Result<AlignedLen, Error> {
        match bytes.checked_add(self.mask()) {
            Some(v) => Ok(AlignedLen {
                bytes: v & !self.mask(),
                page: self,
            }),
            None => Err(Error::Overflow),
        }
    }

    /// `bytes` rounded down to a whole number of pages.
    pub const fn align_down(self, bytes: usize) -> AlignedLen {
        AlignedLen {
            bytes: bytes & !self.mask(),
            page: self,
        }
    }

    /// `bytes` as an [`AlignedLen`], if it is already aligned.
    ///
    /// # Errors
    /// [`Error::Misaligned`] otherwise.
    pub const fn aligned(self, bytes: usize) -> Result<AlignedLen, Error> {
        if self.is_aligned(bytes) {
            Ok(AlignedLen { bytes, page: self })
        } else {
            Err(Error::Misaligned)
        }
    }

    /// The pages touched by the byte range `[offset, offset + len)`: from the
    /// page holding `offset` to the page holding its last byte. An empty
    /// byte range gives an empty page range.
    ///
    /// # Errors
    /// [`Error::Overflow`] if `offset + len` overflows.
    pub const fn pages_covering(self, offset: usize, len: usize) -> Result<PageRange, Error> {
        let Some(end) = offset.checked_add(len) else {
            return Err(Error::Overflow);
        };
        let start = offset >> self.shift;
        let count = if len == 0 {
            0
        } else {
            ((end - 1) >> self.shift) - start + 1
        };
        Ok(PageRange {
            start: PageIndex(start),
            count: PageCount(count),
        })
    }
}

impl fmt::Debug for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PageSize({} B)", self.bytes())
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.bytes();
        if b >= 1 << 20 {
            write!(f, "{} MiB", b >> 20)
        } else {
            write!(f, "{} KiB", b >> 10)
        }
    }
}

/// The index of an SBMA page inside a table, region or arena.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageIndex(pub usize);

impl PageIndex {
    /// The index as a `usize`.
    pub const fn get(self) -> usize {
        self.0
    }

    /// `self + count`.
    ///
    /// # Errors
    /// [`Error::Overflow`].
    pub const fn checked_add(self, count: PageCount) -> Result<PageIndex, Error> {
        match self.0.checked_add(count.0) {
            Some(v) => Ok(PageIndex(v)),
            None => Err(Error::Overflow),
        }
    }
}

/// A number of SBMA pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PageCount(pub usize);

impl PageCount {
    /// No pages.
    pub const ZERO: PageCount = PageCount(0);

    /// The count as a `usize`.
    pub const fn get(self) -> usize {
        self.0
    }

    /// `self + other`.
    ///
    /// # Errors
    /// [`Error::Overflow`].
    pub const fn checked_add(self, other: PageCount) -> Result<PageCount, Error> {
        match self.0.checked_add(other.0) {
            Some(v) => Ok(PageCount(v)),
            None => Err(Error::Overflow),
        }
    }

    /// `self - other`.
    ///
    /// # Errors
    /// [`Error::Overflow`] if `other > self`.
    pub const fn checked_sub(self, other: PageCount) -> Result<PageCount, Error> {
        match self.0.checked_sub(other.0) {
            Some(v) => Ok(PageCount(v)),
            None => Err(Error::Overflow),
        }
    }
}

/// A half-open run of pages `[start, start + count)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PageRange {
    /// The first page.
    pub start: PageIndex,
    /// How many pages.
    pub count: PageCount,
}

impl PageRange {
    /// A range of `count` pages from `start`.
    pub const fn new(start: PageIndex, count: PageCount) -> Self {
        PageRange { start, count }
    }

    /// The one-page range holding `page`.
    pub const fn single(page: PageIndex) -> Self {
        PageRange {
            start: page,
            count: PageCount(1),
        }
    }

    /// One past the last page.
    ///
    /// # Errors
    /// [`Error::Overflow`].
    pub const fn end(self) -> Result<PageIndex, Error> {
        self.start.checked_add(self.count)
    }

    /// Whether the range holds no page.
    pub const fn is_empty(self) -> bool {
        self.count.0 == 0
    }

    /// Whether `page` lies in the range.
    pub const fn contains(self, page: PageIndex) -> bool {
        page.0 >= self.start.0 && page.0 - self.start.0 < self.count.0
    }

    /// The pages of the range, in order.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = PageIndex> + ExactSizeIterator {
        (self.start.0..self.start.0 + self.count.0).map(PageIndex)
    }
}

/// Splits sorted page indices into maximal runs of consecutive pages that
/// share the same `key`, e.g. the dirty and the clean stretches of a batch
/// of victims, so each run can be written or dropped with one call.
/// Allocation-free (usable in the fault path).
///
/// # Examples
/// ```
/// use sbma_core::page::{runs, PageCount, PageIndex};
/// let pages = [1, 2, 3, 5, 6].map(PageIndex);
/// let r: Vec<_> = runs(&pages, |p| p.0 == 3).map(|(r, k)| (r.start.0, r.count.0, k)).collect();
/// assert_eq!(r, [(1, 2, false), (3, 1, true), (5, 2, false)]);
/// ```
pub fn runs<K: PartialEq>(
    pages: &[PageIndex],
    mut key: impl FnMut(PageIndex) -> K,
) -> impl Iterator<Item = (PageRange, K)> {
    let mut i = 0;
    core::iter::from_fn(move || {
        let first = *pages.get(i)?;
        let k = key(first);
        let mut j = i + 1;
        while j < pages.len() && pages[j].0 == pages[j - 1].0 + 1 && key(pages[j]) == k {
            j += 1;
        }
        let run = PageRange::new(first, PageCount(j - i));
        i = j;
        Some((run, k))
    })
}

/// A byte length that is a whole number of pages of a given [`PageSize`].
///
/// Only [`PageSize`]'s constructors make one, so holding an `AlignedLen` is
/// proof of alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlignedLen {
    bytes: usize,
    page: PageSize,
}

impl AlignedLen {
    /// The length in bytes.
    pub const fn bytes(self) -> usize {
        self.bytes
    }

    /// The page size it is aligned to.
    pub const fn page_size(self) -> PageSize {
        self.page
    }

    /// The length in pages.
    pub const fn pages(self) -> PageCount {
        PageCount(self.bytes >> self.page.shift)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn page_size_validation() {
        assert_eq!(PageSize::new(4096, 4096).unwrap().shift(), 12);
        assert_eq!(PageSize::new(1 << 30, 4096).unwrap().bytes(), 1 << 30);
        assert_eq!(PageSize::new(1 << 31, 4096), Err(Error::AbovePageLimit));
        assert_eq!(PageSize::new(0, 4096), Err(Error::NotPowerOfTwo));
        assert_eq!(PageSize::new(2048, 2048), Err(Error::BelowOsPage));
        assert_eq!(PageSize::new(8192, 12288), Err(Error::NotPowerOfTwo));
        assert_eq!(PageSize::new(16384, 65536), Err(Error::BelowOsPage));
    }

    #[test]
    fn rounding_and_overflow() {
        let ps = PageSize::new(16384, 4096).unwrap();
        assert_eq!(ps.pages_for(0).unwrap(), PageCount(0));
        assert_eq!(ps.pages_for(1).unwrap(), PageCount(1));
        assert_eq!(ps.pages_for(16384).unwrap(), PageCount(1));
        assert_eq!(ps.pages_for(16385).unwrap(), PageCount(2));
        assert_eq!(ps.pages_for(usize::MAX), Err(Error::Overflow));
        assert_eq!(ps.align_up(1).unwrap().bytes(), 16384);
        assert_eq!(ps.align_up(usize::MAX), Err(Error::Overflow));
        assert_eq!(ps.align_down(16383).bytes(), 0);
        assert_eq!(ps.aligned(16383), Err(Error::Misaligned));
        assert_eq!(ps.aligned(32768).unwrap().pages(), PageCount(2));
        assert_eq!(ps.len_of(PageCount(3)).unwrap().bytes(), 49152);
        assert_eq!(ps.len_of(PageCount(usize::MAX)), Err(Error::Overflow));
        assert_eq!(ps.offset_of(PageIndex(usize::MAX)), Err(Error::Overflow));
        assert_eq!(ps.page_of(16384 * 5 + 7), PageIndex(5));
        assert_eq!(
            PageIndex(usize::MAX).checked_add(PageCount(1)),
            Err(Error::Overflow)
        );
        assert_eq!(PageCount(1).checked_sub(PageCount(2)), Err(Error::Overflow));
    }

    #[test]
    fn covering_ranges() {
        let ps = PageSize::new(4096, 4096).unwrap();
        let r = ps.pages_covering(4095, 2).unwrap();
        assert_eq!((r.start, r.count), (PageIndex(0), PageCount(2)));
        let r = ps.pages_covering(4096, 4096).unwrap();
        assert_eq!((r.start, r.count), (PageIndex(1), PageCount(1)));
        assert!(ps.pages_covering(4096, 0).unwrap().is_empty());
        assert_eq!(ps.pages_covering(usize::MAX, 1), Err(Error::Overflow));
        let r = PageRange::new(PageIndex(3), PageCount(2));
        assert!(r.contains(PageIndex(4)) && !r.contains(PageIndex(5)));
        assert_eq!(r.iter().map(PageIndex::get).sum::<usize>(), 7);
    }
}
