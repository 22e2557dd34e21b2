//! [`Engine`]: the reference driver of the page protocol.
//!
//! It turns requests (a fault on a page, evict, clear, pin) into state
//! machine events, charges the [`Budget`] before a page becomes resident,
//! asks the [`EvictionPolicy`] for victims when the budget is full, runs the
//! resulting [`Actions`] on a [`PageBackend`] in canonical order, and reports
//! each op's completion or failure back to the [`PageTable`].
//!
//! Eviction is done in bulk: victims are sorted, dirty ones are
//! write-protected and written back in contiguous runs (one backend call per
//! run), clean ones are dropped without I/O.
//!
//! This driver is single-threaded (`&mut self`): it is what the model tests,
//! the sim demo and Miri run. The pager's concurrent fault path performs the
//! same steps on the same table, with the waiting and the signal-safety
//! rules that threads need.
//!
//! # Errors are never silent
//!
//! A failed fill leaves the page as it was before the fault (`Evicted` or
//! `Unbacked`), a failed write-back leaves the page `Dirty` and resident (and
//! tracked by the policy), and the error is returned. Nothing is dropped
//! unless the store holds it.

use crate::backend::{PageBackend, run_actions};
use crate::budget::Budget;
use crate::page::runs;
use crate::policy::EvictionPolicy;
use crate::state::{Actions, Event, Outcome, transition};
use crate::table::PageTable;
use crate::{PageCount, PageIndex, PageRange, PageSize};
use alloc::vec::Vec;
use core::fmt;

/// The kind of access that faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// A load.
    Read,
    /// A store.
    Write,
}

/// Why an engine request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError<E> {
    /// The backend failed (I/O error, full disk, mapping error). The pages
    /// involved are left consistent: see the module doc.
    Backend(E),
    /// The budget is full and no resident page may be evicted (all pinned
    /// or busy).
    NoEvictablePages {
        /// Bytes that could not be found.
        needed: usize,
    },
    /// The budget cannot hold even one page.
    BudgetBelowPage {
        /// The budget's limit.
        limit: usize,
        /// The page size.
        page: usize,
    },
    /// A page index outside the engine's table.
    OutOfRange(PageIndex),
    /// The page is pinned and the request would drop it.
    Pinned(PageIndex),
    /// The request is not legal in the page's state (unpin of an unpinned
    /// page, pin overflow, an op left in flight).
    Illegal(PageIndex, Event),
}

impl<E: fmt::Display> fmt::Display for EngineError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Backend(e) => write!(f, "backend error: {e}"),
            EngineError::NoEvictablePages { needed } => write!(
                f,
                "budget exhausted: {needed} B needed and every resident page is pinned or busy"
            ),
            EngineError::BudgetBelowPage { limit, page } => {
                write!(f, "budget of {limit} B cannot hold one {page} B page")
            }
            EngineError::OutOfRange(p) => write!(f, "page {} is out of range", p.0),
            EngineError::Pinned(p) => write!(f, "page {} is pinned", p.0),
            EngineError::Illegal(p, e) => write!(f, "{e:?} is not legal for page {}", p.0),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for EngineError<E> {}

/// Counters of what the engine did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Read faults handled (including spurious ones).
    pub read_faults: u64,
    /// Write faults handled (including spurious ones).
    pub write_faults: u64,
    /// Pages filled from the store.
    pub pages_read: u64,
    /// Pages filled with zeros (never written or cleared).
    pub pages_zeroed: u64,
    /// Pages written to the store.
    pub pages_written: u64,
    /// Backend write-back calls (each a contiguous run).
    pub write_runs: u64,
    /// Pages dropped from memory by eviction.
    pub pages_evicted: u64,
    /// Pages cleared.
    pub pages_cleared: u64,
    /// Backend failures returned to callers.
    pub backend_errors: u64,
}

/// The reference driver: one backend, one policy, one budget, one table.
pub struct Engine<B, P, G> {
    backend: B,
    policy: P,
    budget: G,
    table: PageTable,
    page_size: PageSize,
    stats: EngineStats,
    victims: Vec<PageIndex>,
}

type Result<T, B> = core::result::Result<T, EngineError<<B as PageBackend>::Error>>;

impl<B: PageBackend, P: EvictionPolicy, G: Budget> Engine<B, P, G> {
    /// An engine over `pages` pages of `page_size`, all unbacked.
    ///
    /// # Errors
    /// [`EngineError::BudgetBelowPage`] if the budget cannot hold one page.
    pub fn new(
        backend: B,
        policy: P,
        budget: G,
        page_size: PageSize,
        pages: PageCount,
    ) -> Result<Self, B> {
        if budget.limit() < page_size.bytes() {
            return Err(EngineError::BudgetBelowPage {
                limit: budget.limit(),
                page: page_size.bytes(),
            });
        }
        Ok(Engine {
            backend,
            policy,
            budget,
            table: PageTable::new(pages),
            page_size,
            stats: EngineStats::default(),
            victims: Vec::new(),
        })
    }

    /// The page table.
    pub fn table(&self) -> &PageTable {
        &self.table
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The budget.
    pub fn budget(&self) -> &G {
        &self.budget
    }

    /// The policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// What the engine did so far.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Resolves a fault: makes `page` accessible for `access`, loading it
    /// and evicting others as needed.
    ///
    /// # Errors
    /// [`EngineError::Backend`] if the fill failed (the page is left as it
    /// was) or an eviction needed for room failed (the victim stays dirty
    /// and resident); [`EngineError::NoEvictablePages`] if no room can be
    /// made.
    pub fn fault(&mut self, page: PageIndex, access: Access) -> Result<(), B> {
        self.check_index(page)?;
        let event = match access {
            Access::Read => {
                self.stats.read_faults += 1;
                Event::ReadFault
            }
            Access::Write => {
                self.stats.write_faults += 1;
                Event::WriteFault
            }
        };
        let s = self.table.state(page);
        let t = match transition(s, event) {
            Outcome::Apply(t) => t,
            Outcome::Done => {
                self.policy.access(page);
                return Ok(());
            }
            // Single-threaded: no other op can be in flight.
            Outcome::Busy | Outcome::Pinned | Outcome::Illegal => {
                return Err(EngineError::Illegal(page, event));
            }
        };
        let charge = t.actions.contains(Actions::CHARGE);
        if charge {
            self.make_room(self.page_size.bytes())?;
        }
        if self.table.commit(page, &t).is_err() {
            unreachable!("page {} changed under a single-threaded engine", page.0);
        }
        let range = PageRange::single(page);
        match self.perform(range, t.actions) {
            Ok(()) => {
                self.complete(range, Event::LoadComplete);
                if charge {
                    self.policy.admit(page);
                } else {
                    self.policy.access(page);
                }
                Ok(())
            }
            Err(e) => {
                // Undo: drop whatever was filled, give the charge back.
                let undo = self.step(range, Event::LoadFailed)?.unwrap_or_default();
                let _ = self.perform(range, undo);
                self.complete(range, Event::DropComplete);
                if !charge {
                    self.policy.forget(page);
                }
                Err(self.backend_error(e))
            }
        }
        .inspect(|()| self.check())
    }

    /// Evicts every resident, unpinned page of `range` (writing dirty ones
    /// back). Returns the number of pages dropped.
    ///
    /// # Errors
    /// [`EngineError::Backend`] if a write-back failed; the pages of that run
    /// stay dirty and resident, the others are evicted.
    pub fn evict(&mut self, range: PageRange) -> Result<usize, B> {
        self.check_range(range)?;
        let mut victims = core::mem::take(&mut self.victims);
        victims.clear();
        for p in range.iter() {
            if self.table.state(p).is_evictable() {
                self.policy.forget(p);
                victims.push(p);
            }
        }
        let r = self.evict_pages(&mut victims);
        self.victims = victims;
        self.check();
        r
    }

    /// Evicts every resident, unpinned page.
    ///
    /// # Errors
    /// As [`evict`](Self::evict).
    pub fn evict_all(&mut self) -> Result<usize, B> {
        self.evict(PageRange::new(PageIndex(0), self.table.len()))
    }

    /// Discards the contents of `range`: its pages read as zeros next time
    /// and are never written back; memory and store space are released.
    ///
    /// # Errors
    /// [`EngineError::Pinned`] (and nothing is cleared) if a resident page of
    /// the range is pinned; [`EngineError::Backend`] if releasing failed.
    pub fn clear(&mut self, range: PageRange) -> Result<(), B> {
        self.check_range(range)?;
        if let Some(p) = range.iter().find(|&p| {
            let s = self.table.state(p);
            s.is_resident() && s.is_pinned()
        }) {
            return Err(EngineError::Pinned(p));
        }
        let mut first_error = None;
        for p in range.iter() {
            let one = PageRange::single(p);
            let Some(actions) = self.step(one, Event::Clear)? else {
                continue;
            };
            self.policy.forget(p);
            self.stats.pages_cleared += 1;
            if let Err(e) = self.perform(one, actions) {
                first_error.get_or_insert(e);
            }
            self.complete(one, Event::DropComplete);
        }
        self.check();
        match first_error {
            Some(e) => Err(self.backend_error(e)),
            None => Ok(()),
        }
    }

    /// Pins `page`: it may not be evicted or cleared while resident.
    ///
    /// # Errors
    /// [`EngineError::Illegal`] on pin-count overflow.
    pub fn pin(&mut self, page: PageIndex) -> Result<(), B> {
        self.check_index(page)?;
        self.step(PageRange::single(page), Event::Pin).map(drop)
    }

    /// Removes a pin from `page`.
    ///
    /// # Errors
    /// [`EngineError::Illegal`] if the page is not pinned.
    pub fn unpin(&mut self, page: PageIndex) -> Result<(), B> {
        self.check_index(page)?;
        self.step(PageRange::single(page), Event::Unpin).map(drop)
    }

    /// Checks the table's counters against its words and the budget's charge
    /// against the table (the engine must be the budget's only user).
    ///
    /// # Panics
    /// On any disagreement: that is a bug in the engine or the table.
    pub fn check_invariants(&self) {
        let census = self
            .table
            .audit()
            .unwrap_or_else(|e| panic!("page table audit failed: {e}"));
        assert_eq!(census.busy, 0, "an op was left in flight");
        assert_eq!(
            self.budget.resident(),
            self.table.charged_bytes(self.page_size),
            "budget charge differs from resident pages x page size"
        );
        assert!(self.budget.resident() <= self.budget.limit(), "over budget");
        assert_eq!(
            self.policy.tracked(),
            PageCount(census.resident),
            "policy tracks a different number of pages than are resident"
        );
    }

    // ---------------------------------------------------------------
    // Internals
    // ---------------------------------------------------------------

    fn check(&self) {
        if cfg!(feature = "check-invariants") {
            self.check_invariants();
        }
    }

    fn check_index(&self, page: PageIndex) -> Result<(), B> {
        if page.0 < self.table.len().get() {
            Ok(())
        } else {
            Err(EngineError::OutOfRange(page))
        }
    }

    fn check_range(&self, range: PageRange) -> Result<(), B> {
        match range.end() {
            Ok(end) if end.0 <= self.table.len().get() => Ok(()),
            _ => Err(EngineError::OutOfRange(range.start)),
        }
    }

    fn backend_error(&mut self, e: B::Error) -> EngineError<B::Error> {
        self.stats.backend_errors += 1;
        EngineError::Backend(e)
    }

    /// Applies `event` to every page of `range` (all in the same state) and
    /// returns the actions, or `None` if there is nothing to do.
    fn step(&mut self, range: PageRange, event: Event) -> Result<Option<Actions>, B> {
        let mut actions = None;
        for p in range.iter() {
            match self.table.apply(p, event).outcome {
                Outcome::Apply(t) => {
                    debug_assert!(actions.is_none_or(|a| a == t.actions));
                    actions = Some(t.actions);
                }
                Outcome::Done => {}
                Outcome::Pinned => return Err(EngineError::Pinned(p)),
                Outcome::Busy | Outcome::Illegal => return Err(EngineError::Illegal(p, event)),
            }
        }
        Ok(actions)
    }

    /// Reports the end of the op in flight on every page of `range` and
    /// performs what it asks (at most a protection change or a wake-up).
    fn complete(&mut self, range: PageRange, event: Event) {
        match self.step(range, event) {
            Ok(Some(actions)) => {
                // Completion actions are GRANT_WRITE (failed write-back) and
                // WAKE; a single-threaded engine has no sleepers to wake.
                if let Err(e) = self.perform(range, actions) {
                    self.stats.backend_errors += 1;
                    panic!("restoring access after a failed write-back failed: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => panic!("completing {event:?} on pages {range:?}: {e:?}"),
        }
    }

    /// Runs `actions` on `range` ([`run_actions`]) and counts what was done.
    fn perform(
        &mut self,
        range: PageRange,
        actions: Actions,
    ) -> core::result::Result<(), B::Error> {
        let (budget, shift) = (&self.budget, self.page_size.shift());
        let r = run_actions(&self.backend, range, actions, &mut |n| {
            budget.uncharge(n.get() << shift);
        });
        if r.is_ok() {
            let n = range.count.get() as u64;
            let s = &mut self.stats;
            for (action, counter) in [
                (Actions::READ_IN, &mut s.pages_read),
                (Actions::ZERO_FILL, &mut s.pages_zeroed),
                (Actions::WRITE_BACK, &mut s.pages_written),
            ] {
                if actions.contains(action) {
                    *counter += n;
                }
            }
            if actions.contains(Actions::WRITE_BACK) {
                s.write_runs += 1;
            }
        }
        r
    }

    /// Charges `bytes`, evicting policy-chosen victims until they fit.
    fn make_room(&mut self, bytes: usize) -> Result<(), B> {
        loop {
            let short = match self.budget.try_charge(bytes) {
                Ok(()) => return Ok(()),
                Err(s) => s,
            };
            let mut victims = core::mem::take(&mut self.victims);
            victims.clear();
            let table = &self.table;
            self.policy.select_bytes(
                short.deficit(),
                self.page_size,
                &mut |p| table.state(p).is_evictable(),
                &mut victims,
            );
            let r = self.evict_pages(&mut victims);
            self.victims = victims;
            if r? == 0 {
                return Err(EngineError::NoEvictablePages {
                    needed: short.deficit(),
                });
            }
        }
    }

    /// Evicts `victims` (resident, idle, unpinned, already untracked by the
    /// policy): clean ones dropped, dirty ones written back in contiguous
    /// runs. Returns the pages dropped.
    fn evict_pages(&mut self, victims: &mut [PageIndex]) -> Result<usize, B> {
        victims.sort_unstable();
        let mut dropped = 0;
        let mut first_error = None;
        // Runs: consecutive indices of the same kind (clean or dirty).
        let table = &self.table;
        let split: Vec<(PageRange, bool)> = runs(victims, |p| table.state(p).is_dirty()).collect();
        for (run, dirty) in split {
            let Some(actions) = self.step(run, Event::Evict)? else {
                continue;
            };
            match self.perform(run, actions) {
                Ok(()) if dirty => {
                    let drop_actions = self.step(run, Event::WriteBackComplete)?;
                    let r = self.perform(run, drop_actions.unwrap_or_default());
                    self.complete(run, Event::DropComplete);
                    r.map_err(|e| self.backend_error(e))?;
                }
                Ok(()) => self.complete(run, Event::DropComplete),
                Err(e) if dirty => {
                    self.complete(run, Event::WriteBackFailed);
                    for p in run.iter() {
                        self.policy.admit(p);
                    }
                    first_error.get_or_insert(e);
                    continue;
                }
                Err(e) => {
                    self.complete(run, Event::DropComplete);
                    return Err(self.backend_error(e));
                }
            }
            dropped += run.count.get();
            self.stats.pages_evicted += run.count.get() as u64;
        }
        match first_error {
            Some(e) => Err(self.backend_error(e)),
            None => Ok(dropped),
        }
    }
}

impl<B, P, G> fmt::Debug for Engine<B, P, G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("page_size", &self.page_size)
            .field("table", &self.table)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}
