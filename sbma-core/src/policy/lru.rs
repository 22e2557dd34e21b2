//! LRU: the least recently accessed page leaves first. Exact: every access
//! moves the page to the most-recent end of an intrusive list (O(1)).

use super::EvictionPolicy;
use super::list::IndexList;
use crate::{PageCount, PageIndex};
use alloc::vec::Vec;

/// Least recently used.
#[derive(Clone, Debug)]
pub struct Lru {
    /// Front: least recent; back: most recent.
    order: IndexList,
}

impl Lru {
    /// An LRU with room for page indices below `pages` without allocating.
    pub fn with_capacity(pages: PageCount) -> Lru {
        Lru {
            order: IndexList::with_capacity(pages.get()),
        }
    }
}

impl EvictionPolicy for Lru {
    fn name(&self) -> &'static str {
        "lru"
    }

    fn admit(&mut self, page: PageIndex) {
        if self.order.contains(page) {
            self.order.move_to_back(page);
        } else {
            self.order.push_back(page);
        }
    }

    fn access(&mut self, page: PageIndex) {
        if self.order.contains(page) {
            self.order.move_to_back(page);
        }
    }

    fn forget(&mut self, page: PageIndex) {
        self.order.remove(page);
    }

    fn tracked(&self) -> PageCount {
        PageCount(self.order.len())
    }

    fn select(
        &mut self,
        want: PageCount,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    ) {
        self.order
            .take_from_front(Some(want.get()), evictable, victims);
    }
}
