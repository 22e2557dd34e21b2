//! FIFO: the oldest admitted page leaves first; accesses are ignored. The
//! baseline every other policy should beat.

use super::EvictionPolicy;
use super::list::IndexList;
use crate::{PageCount, PageIndex};
use alloc::vec::Vec;

/// First in, first out.
#[derive(Clone, Debug)]
pub struct Fifo {
    queue: IndexList,
}

impl Fifo {
    /// A FIFO with room for page indices below `pages` without allocating.
    pub fn with_capacity(pages: PageCount) -> Fifo {
        Fifo {
            queue: IndexList::with_capacity(pages.get()),
        }
    }
}

impl EvictionPolicy for Fifo {
    fn name(&self) -> &'static str {
        "fifo"
    }

    fn admit(&mut self, page: PageIndex) {
        if !self.queue.contains(page) {
            self.queue.push_back(page);
        }
    }

    fn access(&mut self, _page: PageIndex) {}

    fn forget(&mut self, page: PageIndex) {
        self.queue.remove(page);
    }

    fn tracked(&self) -> PageCount {
        PageCount(self.queue.len())
    }

    fn select(
        &mut self,
        want: PageCount,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    ) {
        self.queue
            .take_from_front(Some(want.get()), evictable, victims);
    }
}
