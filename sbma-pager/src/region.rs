//! [`Region`]: a run of pages of an arena owned by one allocation, and the
//! first-fit allocator that hands them out.

use sbma_core::{PageCount, PageIndex, PageRange};
use std::collections::BTreeMap;

/// Free page ranges of an arena: start → length, coalesced.
#[derive(Debug)]
pub(crate) struct FreeRanges {
    free: BTreeMap<usize, usize>,
}

impl FreeRanges {
    pub fn new(pages: PageCount) -> FreeRanges {
        let mut free = BTreeMap::new();
        if pages.get() > 0 {
            free.insert(0, pages.get());
        }
        FreeRanges { free }
    }

    /// Takes the first free range of `n` pages.
    pub fn take(&mut self, n: usize) -> Option<PageRange> {
        let (&start, &len) = self.free.iter().find(|&(_, &len)| len >= n)?;
        self.free.remove(&start);
        if len > n {
            self.free.insert(start + n, len - n);
        }
        Some(PageRange::new(PageIndex(start), PageCount(n)))
    }

    /// Takes exactly `[start, start + n)` if it is free (growing in place).
    pub fn take_at(&mut self, start: usize, n: usize) -> bool {
        let Some((&s, &len)) = self.free.range(..=start).next_back() else {
            return false;
        };
        if s + len < start + n {
            return false;
        }
        self.free.remove(&s);
        if start > s {
            self.free.insert(s, start - s);
        }
        if s + len > start + n {
            self.free.insert(start + n, s + len - start - n);
        }
        true
    }

    /// Returns a range, merging with its neighbours.
    pub fn give(&mut self, r: PageRange) {
        let (mut start, mut len) = (r.start.0, r.count.get());
        if len == 0 {
            return;
        }
        if let Some((&s, &l)) = self.free.range(..start).next_back() {
            if s + l == start {
                self.free.remove(&s);
                start = s;
                len += l;
            }
        }
        if let Some(&l) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += l;
        }
        self.free.insert(start, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_fit_split_and_merge() {
        let mut f = FreeRanges::new(PageCount(10));
        let a = f.take(3).unwrap();
        let b = f.take(3).unwrap();
        assert_eq!((a.start.0, b.start.0), (0, 3));
        assert!(f.take(5).is_none());
        f.give(a);
        assert!(f.take_at(1, 2));
        assert!(!f.take_at(1, 1));
        f.give(PageRange::new(PageIndex(1), PageCount(2)));
        f.give(b);
        assert_eq!(f.take(10).unwrap().start.0, 0);
    }
}
