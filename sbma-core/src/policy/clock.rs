//! CLOCK (second chance): pages sit on a ring with a *referenced* bit; a hand
//! sweeps the ring, clearing set bits and taking the first page whose bit is
//! already clear. An approximation of LRU whose `access` only sets a bit, so
//! the pager can record accesses without reordering anything (the page
//! words' own `referenced` bit can be harvested into it).
//!
//! New pages enter just behind the hand (they are examined last) with their
//! bit set, as a page that was just faulted in has been accessed.

use super::EvictionPolicy;
use super::list::IndexList;
use crate::{PageCount, PageIndex};
use alloc::vec::Vec;

/// Second-chance CLOCK.
#[derive(Clone, Debug)]
pub struct Clock {
    ring: IndexList,
    referenced: Vec<bool>,
    hand: Option<PageIndex>,
}

impl Clock {
    /// A CLOCK with room for page indices below `pages` without allocating.
    pub fn with_capacity(pages: PageCount) -> Clock {
        Clock {
            ring: IndexList::with_capacity(pages.get()),
            referenced: alloc::vec![false; pages.get()],
            hand: None,
        }
    }

    fn set_referenced(&mut self, page: PageIndex, on: bool) {
        if page.0 >= self.referenced.len() {
            let n = (page.0 + 1).max(self.referenced.len() * 2);
            self.referenced.resize(n, false);
        }
        self.referenced[page.0] = on;
    }
}

impl EvictionPolicy for Clock {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn admit(&mut self, page: PageIndex) {
        if !self.ring.contains(page) {
            match self.hand {
                Some(h) => self.ring.insert_before(page, h),
                None => {
                    self.ring.push_back(page);
                    self.hand = Some(page);
                }
            }
        }
        self.set_referenced(page, true);
    }

    fn access(&mut self, page: PageIndex) {
        if self.ring.contains(page) {
            self.referenced[page.0] = true;
        }
    }

    fn forget(&mut self, page: PageIndex) {
        if !self.ring.contains(page) {
            return;
        }
        if self.hand == Some(page) {
            self.hand = self.ring.next_cyclic(page).filter(|&n| n != page);
        }
        self.ring.remove(page);
    }

    fn tracked(&self) -> PageCount {
        PageCount(self.ring.len())
    }

    fn select(
        &mut self,
        want: PageCount,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    ) {
        // Two sweeps suffice: the first clears every evictable page's bit
        // (or takes it), the second takes what is left.
        let mut steps = 2 * self.ring.len();
        let mut taken = 0;
        while taken < want.get() && steps > 0 {
            let Some(p) = self.hand else { break };
            steps -= 1;
            let next = self.ring.next_cyclic(p);
            if !evictable(p) {
                self.hand = next;
            } else if self.referenced[p.0] {
                self.referenced[p.0] = false;
                self.hand = next;
            } else {
                self.forget(p);
                victims.push(p);
                taken += 1;
            }
        }
    }
}
