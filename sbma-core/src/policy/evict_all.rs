//! "Evict all": whenever memory is needed, every evictable page leaves. This
//! is the original SBMA's behaviour (`SBMA_mevictall` on admission
//! pressure), kept for comparison and for BDMPI-style workloads where a
//! process blocks and should give back everything at once.

use super::EvictionPolicy;
use super::list::IndexList;
use crate::{PageCount, PageIndex};
use alloc::vec::Vec;

/// Evict every evictable page, oldest admitted first.
#[derive(Clone, Debug)]
pub struct EvictAll {
    pages: IndexList,
}

impl EvictAll {
    /// An evict-all policy with room for page indices below `pages` without
    /// allocating.
    pub fn with_capacity(pages: PageCount) -> EvictAll {
        EvictAll {
            pages: IndexList::with_capacity(pages.get()),
        }
    }
}

impl EvictionPolicy for EvictAll {
    fn name(&self) -> &'static str {
        "all"
    }

    fn admit(&mut self, page: PageIndex) {
        if !self.pages.contains(page) {
            self.pages.push_back(page);
        }
    }

    fn access(&mut self, _page: PageIndex) {}

    fn forget(&mut self, page: PageIndex) {
        self.pages.remove(page);
    }

    fn tracked(&self) -> PageCount {
        PageCount(self.pages.len())
    }

    fn select(
        &mut self,
        want: PageCount,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    ) {
        if want.get() > 0 {
            self.pages.take_from_front(None, evictable, victims);
        }
    }
}
