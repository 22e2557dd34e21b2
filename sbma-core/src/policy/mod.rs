//! Eviction policies: which resident pages leave when memory is needed.
//!
//! A policy learns about pages through [`EvictionPolicy::admit`] (became
//! resident), [`EvictionPolicy::access`] (was used) and
//! [`EvictionPolicy::forget`] (left memory by other means: cleared, freed,
//! evicted explicitly), and answers [`EvictionPolicy::select`]: which pages
//! to evict to free a number of pages. It never touches the page table
//! itself; the caller tells it which pages may be chosen right now (resident,
//! idle, unpinned: [`PageState::is_evictable`]).
//!
//! Bundled policies:
//!
//! | policy | victim | cost of `access` | notes |
//! |---|---|---|---|
//! | [`Clock`] (default) | first unreferenced page under the hand | set a bit | second chance; the pager can feed it from the page words' `referenced` bits without any lock |
//! | [`Lru`] | least recently accessed | move in a list | exact LRU |
//! | [`Fifo`] | oldest admitted | none | baseline |
//! | [`EvictAll`] | every evictable page | none | the original SBMA's behaviour |
//!
//! Pages that are not evictable when a policy passes them (pinned, busy)
//! are not walked over again and again: CLOCK's hand moves past them, and
//! the list policies move them to the back of their list (for LRU: an
//! in-use page counts as recently used). Without that, every selection
//! re-scanned all pinned pages at the front: at 1M pages with 1 in 64
//! pinned, FIFO and LRU ran 10x slower than CLOCK (docs/decisions/0002).
//!
//! [`PageState::is_evictable`]: crate::PageState::is_evictable

mod clock;
mod evict_all;
mod fifo;
mod list;
mod lru;

pub use clock::Clock;
pub use evict_all::EvictAll;
pub use fifo::Fifo;
pub use list::MAX_TRACKED_INDEX;
pub use lru::Lru;

use crate::{PageCount, PageIndex, PageSize};
use alloc::vec::Vec;
use core::fmt;
use core::str::FromStr;

/// Chooses victims among resident pages.
///
/// # Requirements
/// Every implementation passes `sbma_core::conformance` (feature `conformance`; one
/// suite for all) and meets these:
///
/// 1. **Only tracked, evictable pages.** `select` appends to `victims` only
///    pages that are tracked (admitted and not since forgotten or selected)
///    and for which `evictable` returned `true` during that call; each page
///    at most once.
/// 2. **Selected pages are forgotten.** A page appended by `select` is no
///    longer tracked; if the caller then fails to evict it, it calls
///    [`admit`](Self::admit) again.
/// 3. **Enough victims.** If at least `want` tracked pages are evictable,
///    `select` appends at least `want` of them. It may append more
///    ([`EvictAll`] appends every evictable page).
/// 4. **Deterministic.** The result depends only on the sequence of calls
///    and the answers of `evictable`; no randomness, no hashing with random
///    seeds, no clocks.
/// 5. **Idempotent bookkeeping.** `admit` of a tracked page acts as
///    `access`; `access` and `forget` of an untracked page do nothing.
/// 6. **Bounded and allocation-aware.** `select` terminates after visiting
///    each tracked page a bounded number of times (at most twice) even when
///    none is evictable, and allocates only by pushing to `victims` (a
///    caller that reserved `tracked()` capacity causes no allocation).
///    `admit` allocates only for page indices beyond the capacity given at
///    construction.
/// 7. Page indices are at most [`MAX_TRACKED_INDEX`].
pub trait EvictionPolicy {
    /// A short name (`"clock"`, `"lru"`, ...).
    fn name(&self) -> &'static str;

    /// `page` became resident.
    fn admit(&mut self, page: PageIndex);

    /// `page` was accessed.
    fn access(&mut self, page: PageIndex);

    /// `page` left memory other than through `select`.
    fn forget(&mut self, page: PageIndex);

    /// The number of tracked pages.
    fn tracked(&self) -> PageCount;

    /// Appends victims to `victims` to free at least `want` pages; see the
    /// trait's requirements.
    fn select(
        &mut self,
        want: PageCount,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    );

    /// [`select`](Self::select) with the need given in bytes (rounded up to
    /// whole pages of `page_size`).
    fn select_bytes(
        &mut self,
        bytes: usize,
        page_size: PageSize,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    ) {
        let want = page_size.pages_for(bytes).unwrap_or(PageCount(usize::MAX));
        self.select(want, evictable, victims);
    }
}

/// The bundled policies by name, as chosen with `SBMA_POLICY`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// [`Clock`] (`clock`), the default.
    #[default]
    Clock,
    /// [`Lru`] (`lru`).
    Lru,
    /// [`Fifo`] (`fifo`).
    Fifo,
    /// [`EvictAll`] (`all`).
    EvictAll,
}

impl PolicyKind {
    /// Every bundled policy.
    pub const ALL: [PolicyKind; 4] = [
        PolicyKind::Clock,
        PolicyKind::Lru,
        PolicyKind::Fifo,
        PolicyKind::EvictAll,
    ];

    /// The name accepted by [`FromStr`].
    pub const fn name(self) -> &'static str {
        match self {
            PolicyKind::Clock => "clock",
            PolicyKind::Lru => "lru",
            PolicyKind::Fifo => "fifo",
            PolicyKind::EvictAll => "all",
        }
    }

    /// A policy of this kind with room for `pages` pages.
    pub fn build(self, pages: PageCount) -> AnyPolicy {
        match self {
            PolicyKind::Clock => AnyPolicy::Clock(Clock::with_capacity(pages)),
            PolicyKind::Lru => AnyPolicy::Lru(Lru::with_capacity(pages)),
            PolicyKind::Fifo => AnyPolicy::Fifo(Fifo::with_capacity(pages)),
            PolicyKind::EvictAll => AnyPolicy::EvictAll(EvictAll::with_capacity(pages)),
        }
    }
}

/// An unknown policy name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnknownPolicy;

impl fmt::Display for UnknownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown eviction policy (expected clock, lru, fifo or all)")
    }
}

impl core::error::Error for UnknownPolicy {}

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, UnknownPolicy> {
        PolicyKind::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(s))
            .ok_or(UnknownPolicy)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One of the bundled policies, chosen at run time without boxing.
#[derive(Clone, Debug)]
#[allow(missing_docs, reason = "each variant is its policy")]
pub enum AnyPolicy {
    Clock(Clock),
    Lru(Lru),
    Fifo(Fifo),
    EvictAll(EvictAll),
}

macro_rules! dispatch {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            AnyPolicy::Clock($p) => $e,
            AnyPolicy::Lru($p) => $e,
            AnyPolicy::Fifo($p) => $e,
            AnyPolicy::EvictAll($p) => $e,
        }
    };
}

impl EvictionPolicy for AnyPolicy {
    fn name(&self) -> &'static str {
        dispatch!(self, p => p.name())
    }
    fn admit(&mut self, page: PageIndex) {
        dispatch!(self, p => p.admit(page))
    }
    fn access(&mut self, page: PageIndex) {
        dispatch!(self, p => p.access(page))
    }
    fn forget(&mut self, page: PageIndex) {
        dispatch!(self, p => p.forget(page))
    }
    fn tracked(&self) -> PageCount {
        dispatch!(self, p => p.tracked())
    }
    fn select(
        &mut self,
        want: PageCount,
        evictable: &mut dyn FnMut(PageIndex) -> bool,
        victims: &mut Vec<PageIndex>,
    ) {
        dispatch!(self, p => p.select(want, evictable, victims))
    }
}
