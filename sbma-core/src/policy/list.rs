//! An intrusive doubly-linked list over page indices, stored in two dense
//! arrays (`prev`, `next`). O(1) insert, remove, move and membership test;
//! deterministic; allocates only when an index beyond the current capacity
//! is inserted.

use crate::PageIndex;
use alloc::vec::Vec;

/// End of list.
const NIL: u32 = u32::MAX;
/// Not a member (stored in `prev` of a page that is not linked).
const OUT: u32 = u32::MAX - 1;

/// The largest page index a policy can track (`u32::MAX - 2`).
pub const MAX_TRACKED_INDEX: usize = (u32::MAX - 2) as usize;

/// One link per page, stored XOR the array's default so that a fresh
/// array is all zero bytes: `vec![0; n]` gets zeroed memory from the
/// allocator (`calloc`, fresh `mmap` pages), which costs nothing until a page
/// is linked. A policy sized for a 2^20-page arena would otherwise write
/// 8 MiB at creation, resident for the process's life.
#[derive(Clone, Debug)]
struct Links {
    raw: Vec<u32>,
    default: u32,
}

impl Links {
    fn new(len: usize, default: u32) -> Links {
        Links {
            raw: alloc::vec![0; len],
            default,
        }
    }

    fn len(&self) -> usize {
        self.raw.len()
    }

    fn get(&self, i: usize) -> u32 {
        self.raw[i] ^ self.default
    }

    fn try_get(&self, i: usize) -> Option<u32> {
        self.raw.get(i).map(|v| v ^ self.default)
    }

    fn set(&mut self, i: usize, v: u32) {
        self.raw[i] = v ^ self.default;
    }

    fn grow(&mut self, len: usize) {
        self.raw.resize(len, 0);
    }
}

#[derive(Clone, Debug)]
pub(crate) struct IndexList {
    prev: Links,
    next: Links,
    head: u32,
    tail: u32,
    len: usize,
}

impl IndexList {
    pub(crate) fn with_capacity(pages: usize) -> IndexList {
        IndexList {
            prev: Links::new(pages, OUT),
            next: Links::new(pages, NIL),
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn contains(&self, p: PageIndex) -> bool {
        self.prev.try_get(p.0).is_some_and(|v| v != OUT)
    }

    pub(crate) fn front(&self) -> Option<PageIndex> {
        (self.head != NIL).then_some(PageIndex(self.head as usize))
    }

    /// The page after `p`, if any. `p` must be a member.
    pub(crate) fn next_of(&self, p: PageIndex) -> Option<PageIndex> {
        let n = self.next.get(p.0);
        (n != NIL).then_some(PageIndex(n as usize))
    }

    /// The page after `p`, wrapping to the front. `p` must be a member.
    pub(crate) fn next_cyclic(&self, p: PageIndex) -> Option<PageIndex> {
        self.next_of(p).or_else(|| self.front())
    }

    fn slot(&mut self, p: PageIndex) -> u32 {
        assert!(
            p.0 <= MAX_TRACKED_INDEX,
            "page index {} exceeds what a policy can track",
            p.0
        );
        if p.0 >= self.prev.len() {
            let n = (p.0 + 1).max(self.prev.len() * 2);
            self.prev.grow(n);
            self.next.grow(n);
        }
        p.0 as u32
    }

    /// Appends `p` (not a member) at the back.
    pub(crate) fn push_back(&mut self, p: PageIndex) {
        let i = self.slot(p);
        debug_assert!(self.prev.get(p.0) == OUT, "page {} already listed", p.0);
        self.prev.set(p.0, self.tail);
        self.next.set(p.0, NIL);
        match self.tail {
            NIL => self.head = i,
            t => self.next.set(t as usize, i),
        }
        self.tail = i;
        self.len += 1;
    }

    /// Inserts `p` (not a member) just before `at` (a member).
    pub(crate) fn insert_before(&mut self, p: PageIndex, at: PageIndex) {
        let i = self.slot(p);
        debug_assert!(self.prev.get(p.0) == OUT, "page {} already listed", p.0);
        let before = self.prev.get(at.0);
        self.prev.set(p.0, before);
        self.next.set(p.0, at.0 as u32);
        self.prev.set(at.0, i);
        match before {
            NIL => self.head = i,
            b => self.next.set(b as usize, i),
        }
        self.len += 1;
    }

    /// Unlinks `p`; returns whether it was a member.
    pub(crate) fn remove(&mut self, p: PageIndex) -> bool {
        if !self.contains(p) {
            return false;
        }
        let (prev, next) = (self.prev.get(p.0), self.next.get(p.0));
        match prev {
            NIL => self.head = next,
            v => self.next.set(v as usize, next),
        }
        match next {
            NIL => self.tail = prev,
            v => self.prev.set(v as usize, prev),
        }
        self.prev.set(p.0, OUT);
        self.next.set(p.0, NIL);
        self.len -= 1;
        true
    }

    /// Takes pages from the front: evictable ones are unlinked and
    /// appended to `victims`, ineligible ones are moved to the back (so they
    /// are not walked over again by the next call), until `want` were taken
    /// (`None`: all of them) or every member was visited once.
    pub(crate) fn take_from_front(
        &mut self,
        want: Option<usize>,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    ) {
        let mut taken = 0;
        for _ in 0..self.len {
            if want.is_some_and(|w| taken >= w) {
                break;
            }
            let Some(p) = self.front() else { break };
            if evictable(p) {
                self.remove(p);
                victims.push(p);
                taken += 1;
            } else {
                self.move_to_back(p);
            }
        }
    }

    /// Moves member `p` to the back.
    pub(crate) fn move_to_back(&mut self, p: PageIndex) {
        if self.tail as usize != p.0 && self.remove(p) {
            self.push_back(p);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn order(l: &IndexList) -> Vec<usize> {
        let mut v = Vec::new();
        let mut cur = l.front();
        while let Some(p) = cur {
            v.push(p.0);
            cur = l.next_of(p);
        }
        v
    }

    #[test]
    fn link_operations_keep_order() {
        let mut l = IndexList::with_capacity(2);
        for i in [3, 1, 4] {
            l.push_back(PageIndex(i));
        }
        l.insert_before(PageIndex(9), PageIndex(3));
        assert_eq!(order(&l), [9, 3, 1, 4]);
        l.move_to_back(PageIndex(3));
        assert_eq!(order(&l), [9, 1, 4, 3]);
        assert!(l.remove(PageIndex(4)) && !l.remove(PageIndex(4)));
        assert_eq!(order(&l), [9, 1, 3]);
        assert_eq!(l.next_cyclic(PageIndex(3)), Some(PageIndex(9)));
        assert_eq!(l.len(), 3);
        assert!(!l.contains(PageIndex(100)));
    }
}
