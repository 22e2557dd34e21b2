//! [`PageTable`]: one atomic state word per page, changed only by
//! compare-and-swap, with counters kept consistent with the words.
//!
//! SBMA kept one flag byte per page behind a per-allocation mutex (its
//! "ate"); here the word *is* the synchronisation: a thread that wins the
//! CAS from an idle state to a busy op owns the page until it reports the
//! op's completion, and every other thread sees [`Outcome::Busy`]. No lock
//! is taken, so the fault path can use the table from a signal handler.
//!
//! The counters (`resident`, `dirty`, `pinned`) are updated right after each
//! successful CAS from the difference between the old and the new word, so
//! they can never drift from the words by more than the transitions in
//! flight at that instant; [`PageTable::audit`] recounts the words and must
//! agree exactly whenever no transition is in flight.

use crate::state::{Event, Outcome, PageState, Transition, transition};
use crate::sync::{AtomicU32, AtomicUsize, Ordering};
use crate::{PageCount, PageIndex, PageSize};
use alloc::boxed::Box;
use core::fmt;

/// The state words of a run of pages, plus their counters.
pub struct PageTable {
    words: Box<[AtomicU32]>,
    resident: AtomicUsize,
    dirty: AtomicUsize,
    pinned: AtomicUsize,
}

/// Page counts obtained by scanning every word ([`PageTable::audit`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Pages that are `Clean` or `Dirty`.
    pub resident: usize,
    /// Pages that are `Dirty`.
    pub dirty: usize,
    /// Pages with a non-zero pin count.
    pub pinned: usize,
    /// Pages with an operation in flight.
    pub busy: usize,
}

/// A disagreement found by [`PageTable::audit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditError {
    /// A word that is not a valid [`PageState`].
    InvalidWord {
        /// Which page.
        page: PageIndex,
        /// The raw word.
        word: u32,
    },
    /// A counter that differs from the scan.
    Counter {
        /// Which counter.
        name: &'static str,
        /// The counter's value.
        recorded: usize,
        /// What the scan found.
        counted: usize,
    },
}

impl fmt::Display for AuditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuditError::InvalidWord { page, word } => {
                write!(f, "page {} holds invalid state word {word:#x}", page.0)
            }
            AuditError::Counter {
                name,
                recorded,
                counted,
            } => write!(f, "{name} counter says {recorded}, the words say {counted}"),
        }
    }
}

/// The result of [`PageTable::apply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The word observed when the outcome was decided.
    pub observed: PageState,
    /// What the state machine decided. If it is [`Outcome::Apply`], the
    /// transition has been stored and its actions are the caller's to do.
    pub outcome: Outcome,
}

/// `n` words in state 0 (unbacked, idle), from zeroed memory: the
/// allocator's `calloc`/fresh pages cost nothing until a page's word is
/// first written, so a table for a 2^20-page arena is not 4 MiB resident
/// from the start (bytemuck's `zeroed_slice_box`: all-zero bytes are a valid
/// `AtomicU32`, and the crate checks that with its `Zeroable` bound).
#[cfg(not(loom))]
fn zeroed_words(n: usize) -> Box<[AtomicU32]> {
    bytemuck::allocation::zeroed_slice_box(n)
}

/// Loom's atomics are not plain memory: built one by one.
#[cfg(loom)]
fn zeroed_words(n: usize) -> Box<[AtomicU32]> {
    (0..n)
        .map(|_| AtomicU32::new(0))
        .collect::<alloc::vec::Vec<_>>()
        .into_boxed_slice()
}

impl PageTable {
    /// A table of `pages` pages, all [`PageState::UNBACKED`].
    pub fn new(pages: PageCount) -> PageTable {
        PageTable {
            words: zeroed_words(pages.get()),
            resident: AtomicUsize::new(0),
            dirty: AtomicUsize::new(0),
            pinned: AtomicUsize::new(0),
        }
    }

    /// The number of pages.
    pub fn len(&self) -> PageCount {
        PageCount(self.words.len())
    }

    /// Whether the table has no page.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    /// The current state of `page` (acquire load).
    ///
    /// # Panics
    /// If `page` is out of range.
    pub fn state(&self, page: PageIndex) -> PageState {
        decode(page, self.words[page.0].load(Ordering::Acquire))
    }

    /// The atomic word of `page`, for sleeping on it (the pager's futex) and
    /// nothing else: every change goes through
    /// [`compare_exchange`](Self::compare_exchange).
    ///
    /// # Panics
    /// If `page` is out of range.
    pub fn word(&self, page: PageIndex) -> &AtomicU32 {
        &self.words[page.0]
    }

    /// Stores `to` if the word still holds `from` (acq-rel CAS), and updates
    /// the counters. On failure returns the state found instead.
    ///
    /// # Panics
    /// If `page` is out of range.
    pub fn compare_exchange(
        &self,
        page: PageIndex,
        from: PageState,
        to: PageState,
    ) -> Result<(), PageState> {
        match self.words[page.0].compare_exchange(
            from.word(),
            to.word(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.account(from, to);
                Ok(())
            }
            Err(w) => Err(decode(page, w)),
        }
    }

    /// Commits a transition computed by [`transition`] (`t.from` → `t.to`).
    ///
    /// # Errors
    /// The state found instead of `t.from`: re-evaluate and try again.
    pub fn commit(&self, page: PageIndex, t: &Transition) -> Result<(), PageState> {
        self.compare_exchange(page, t.from, t.to)
    }

    /// Applies `event` to `page`: evaluates the state machine on the current
    /// word and, for [`Outcome::Apply`], stores the new word (retrying the
    /// CAS on contention). Events that need [`Action::Charge`] should use
    /// [`state`](Self::state) + [`transition`] + [`commit`](Self::commit)
    /// instead, to charge the budget before the page becomes resident.
    ///
    /// [`Action::Charge`]: crate::Action::Charge
    pub fn apply(&self, page: PageIndex, event: Event) -> Applied {
        let mut observed = self.state(page);
        loop {
            let outcome = transition(observed, event);
            let Outcome::Apply(t) = outcome else {
                return Applied { observed, outcome };
            };
            match self.commit(page, &t) {
                Ok(()) => return Applied { observed, outcome },
                Err(now) => observed = now,
            }
        }
    }

    /// Sets the `waiters` bit of a busy page so that whoever ends the op
    /// wakes the sleeper. Returns the state to sleep on (sleep only while the
    /// word still equals it), or `None` if the page is no longer busy.
    pub fn mark_waiting(&self, page: PageIndex) -> Option<PageState> {
        let mut observed = self.state(page);
        loop {
            let want = observed.with_waiters()?;
            if want == observed {
                return Some(want);
            }
            match self.compare_exchange(page, observed, want) {
                Ok(()) => return Some(want),
                Err(now) => observed = now,
            }
        }
    }

    /// Pages currently resident (`Clean` or `Dirty`), per the counter.
    pub fn resident_pages(&self) -> PageCount {
        PageCount(self.resident.load(Ordering::Relaxed))
    }

    /// Pages currently `Dirty`, per the counter.
    pub fn dirty_pages(&self) -> PageCount {
        PageCount(self.dirty.load(Ordering::Relaxed))
    }

    /// Pages currently pinned, per the counter.
    pub fn pinned_pages(&self) -> PageCount {
        PageCount(self.pinned.load(Ordering::Relaxed))
    }

    /// Bytes the resident pages occupy: `resident_pages × page_size`.
    pub fn charged_bytes(&self, page_size: PageSize) -> usize {
        self.resident_pages().get() << page_size.shift()
    }

    /// Scans every word: checks that each is valid and that the counters
    /// equal the counts. Only meaningful when no transition is in flight.
    ///
    /// # Errors
    /// The first disagreement found.
    pub fn audit(&self) -> Result<Census, AuditError> {
        let mut c = Census::default();
        for (i, w) in self.words.iter().enumerate() {
            let word = w.load(Ordering::Acquire);
            let s = PageState::from_word(word).ok_or(AuditError::InvalidWord {
                page: PageIndex(i),
                word,
            })?;
            c.resident += usize::from(s.is_resident());
            c.dirty += usize::from(s.is_dirty());
            c.pinned += usize::from(s.is_pinned());
            c.busy += usize::from(s.is_busy());
        }
        for (name, counter, counted) in [
            ("resident", &self.resident, c.resident),
            ("dirty", &self.dirty, c.dirty),
            ("pinned", &self.pinned, c.pinned),
        ] {
            let recorded = counter.load(Ordering::Relaxed);
            if recorded != counted {
                return Err(AuditError::Counter {
                    name,
                    recorded,
                    counted,
                });
            }
        }
        Ok(c)
    }

    fn account(&self, from: PageState, to: PageState) {
        adjust(&self.resident, from.is_resident(), to.is_resident());
        adjust(&self.dirty, from.is_dirty(), to.is_dirty());
        adjust(&self.pinned, from.is_pinned(), to.is_pinned());
    }
}

fn adjust(counter: &AtomicUsize, before: bool, after: bool) {
    match (before, after) {
        (false, true) => {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        (true, false) => {
            counter.fetch_sub(1, Ordering::Relaxed);
        }
        _ => {}
    }
}

fn decode(page: PageIndex, word: u32) -> PageState {
    match PageState::from_word(word) {
        Some(s) => s,
        // Only `compare_exchange` writes words, and it only stores states
        // that passed `from_word`: an invalid word is memory corruption.
        None => panic!("page {} holds invalid state word {word:#x}", page.0),
    }
}

impl fmt::Debug for PageTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageTable")
            .field("pages", &self.words.len())
            .field("resident", &self.resident_pages().get())
            .field("dirty", &self.dirty_pages().get())
            .field("pinned", &self.pinned_pages().get())
            .finish()
    }
}
