//! The `sim` backend: an in-memory stand-in for mmap, mprotect, madvise,
//! pread and pwrite, so the whole cycle (fault → admit → evict → reload)
//! runs in tests, under Miri and in the model demo without a syscall.
//!
//! [`SimBackend`] keeps, per page, its memory (absent once discarded, as
//! after `MADV_DONTNEED`), its protection and its store copy (absent for a
//! hole). It counts the memory it holds, so tests can check the budget
//! against what is *really* resident (the sim's `mincore`). It can inject
//! failures: the next N reads or writes fail, or the store is full.
//!
//! [`SimMachine`] is the MMU: [`SimMachine::read`] and
//! [`SimMachine::write`] access bytes only where the protection allows and
//! turn every denied access into a fault for the [`Engine`], then retry, as
//! the hardware would.

use crate::backend::{PageBackend, Protection};
use crate::budget::LocalBudget;
use crate::engine::{Access, Engine, EngineError};
use crate::policy::EvictionPolicy;
use crate::{PageCount, PageIndex, PageRange, PageSize};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;
use spin::Mutex;

/// A sim backend failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// An injected I/O error (see [`SimBackend::fail_next_reads`]).
    Io,
    /// The store is full (see [`SimBackend::limit_store`]): the sim's
    /// `ENOSPC`.
    NoSpace,
    /// An injected protection failure (see
    /// [`SimBackend::fail_next_protects`]): the sim's `ENOMEM` at
    /// `vm.max_map_count`.
    Protect,
    /// A read of a page the store does not hold: the engine asked for data
    /// that was never written back. Always a bug.
    MissingCopy(PageIndex),
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimError::Io => f.write_str("injected I/O error"),
            SimError::NoSpace => f.write_str("no space left in the store"),
            SimError::Protect => f.write_str("injected protection failure"),
            SimError::MissingCopy(p) => write!(f, "store has no copy of page {}", p.0),
        }
    }
}

impl core::error::Error for SimError {}

/// A denied access: which page, and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimFault {
    /// The page.
    pub page: PageIndex,
    /// The access.
    pub access: Access,
}

struct Inner {
    memory: Vec<Option<Box<[u8]>>>,
    prot: Vec<Protection>,
    store: Vec<Option<Box<[u8]>>>,
    stored_pages: usize,
    store_limit: usize,
    fail_reads: usize,
    fail_writes: usize,
    fail_protects: usize,
}

/// In-memory pages and store.
pub struct SimBackend {
    page_size: PageSize,
    inner: Mutex<Inner>,
}

impl SimBackend {
    /// `pages` pages of `page_size`: no memory, no access, empty store.
    pub fn new(page_size: PageSize, pages: PageCount) -> SimBackend {
        let n = pages.get();
        SimBackend {
            page_size,
            inner: Mutex::new(Inner {
                memory: (0..n).map(|_| None).collect(),
                prot: alloc::vec![Protection::None; n],
                store: (0..n).map(|_| None).collect(),
                stored_pages: 0,
                store_limit: usize::MAX,
                fail_reads: 0,
                fail_writes: 0,
                fail_protects: 0,
            }),
        }
    }

    /// Bytes of memory held (the sim's `mincore` / `smaps_rollup`).
    pub fn resident_bytes(&self) -> usize {
        let inner = self.inner.lock();
        inner.memory.iter().filter(|m| m.is_some()).count() << self.page_size.shift()
    }

    /// Bytes held by the store (its allocated, non-hole size).
    pub fn stored_bytes(&self) -> usize {
        self.inner.lock().stored_pages << self.page_size.shift()
    }

    /// The protection of `page`.
    pub fn protection(&self, page: PageIndex) -> Protection {
        self.inner.lock().prot[page.0]
    }

    /// Makes the next `n` page reads (`read_in`) fail with [`SimError::Io`].
    pub fn fail_next_reads(&self, n: usize) {
        self.inner.lock().fail_reads = n;
    }

    /// Makes the next `n` write-backs fail with [`SimError::Io`].
    pub fn fail_next_writes(&self, n: usize) {
        self.inner.lock().fail_writes = n;
    }

    /// Makes the next `n` protection changes fail with
    /// [`SimError::Protect`].
    pub fn fail_next_protects(&self, n: usize) {
        self.inner.lock().fail_protects = n;
    }

    /// Limits the store to `pages` pages; writes that would need more fail
    /// with [`SimError::NoSpace`]. `usize::MAX` lifts the limit.
    pub fn limit_store(&self, pages: usize) {
        self.inner.lock().store_limit = pages;
    }

    /// Copies bytes out of `page` at `offset`, if reads are allowed.
    ///
    /// # Errors
    /// The fault the hardware would raise.
    pub fn load(&self, page: PageIndex, offset: usize, buf: &mut [u8]) -> Result<(), SimFault> {
        let inner = self.inner.lock();
        if inner.prot[page.0] == Protection::None {
            return Err(SimFault {
                page,
                access: Access::Read,
            });
        }
        match &inner.memory[page.0] {
            Some(m) => buf.copy_from_slice(&m[offset..offset + buf.len()]),
            // Accessible but never populated: the kernel's zero page.
            None => buf.fill(0),
        }
        Ok(())
    }

    /// Copies bytes into `page` at `offset`, if writes are allowed.
    ///
    /// # Errors
    /// The fault the hardware would raise.
    pub fn store(&self, page: PageIndex, offset: usize, data: &[u8]) -> Result<(), SimFault> {
        let mut inner = self.inner.lock();
        if inner.prot[page.0] != Protection::ReadWrite {
            return Err(SimFault {
                page,
                access: Access::Write,
            });
        }
        let ps = self.page_size.bytes();
        let m = inner.memory[page.0].get_or_insert_with(|| zeroed(ps));
        m[offset..offset + data.len()].copy_from_slice(data);
        Ok(())
    }
}

fn zeroed(bytes: usize) -> Box<[u8]> {
    alloc::vec![0u8; bytes].into_boxed_slice()
}

impl PageBackend for SimBackend {
    type Error = SimError;
    const DISCARD_ZEROES: bool = true;

    fn protect(&self, range: PageRange, prot: Protection) -> Result<(), SimError> {
        let mut inner = self.inner.lock();
        if inner.fail_protects > 0 {
            inner.fail_protects -= 1;
            return Err(SimError::Protect);
        }
        for p in range.iter() {
            inner.prot[p.0] = prot;
        }
        Ok(())
    }

    fn read_in(&self, range: PageRange) -> Result<(), SimError> {
        let mut inner = self.inner.lock();
        if inner.fail_reads > 0 {
            inner.fail_reads -= 1;
            return Err(SimError::Io);
        }
        // Build every page first, then install: the fill is atomic.
        let mut filled = Vec::with_capacity(range.count.get());
        for p in range.iter() {
            let copy = inner.store[p.0].as_ref().ok_or(SimError::MissingCopy(p))?;
            filled.push(copy.clone());
        }
        for (p, data) in range.iter().zip(filled) {
            inner.memory[p.0] = Some(data);
        }
        Ok(())
    }

    fn zero_fill(&self, range: PageRange) -> Result<(), SimError> {
        let mut inner = self.inner.lock();
        let ps = self.page_size.bytes();
        for p in range.iter() {
            inner.memory[p.0] = Some(zeroed(ps));
        }
        Ok(())
    }

    fn write_back(&self, range: PageRange) -> Result<(), SimError> {
        let mut inner = self.inner.lock();
        if inner.fail_writes > 0 {
            inner.fail_writes -= 1;
            return Err(SimError::Io);
        }
        let new_pages = range.iter().filter(|p| inner.store[p.0].is_none()).count();
        if inner.stored_pages + new_pages > inner.store_limit {
            return Err(SimError::NoSpace);
        }
        let ps = self.page_size.bytes();
        for p in range.iter() {
            let data = inner.memory[p.0].clone().unwrap_or_else(|| zeroed(ps));
            inner.store[p.0] = Some(data);
        }
        inner.stored_pages += new_pages;
        Ok(())
    }

    fn discard(&self, range: PageRange) -> Result<(), SimError> {
        let mut inner = self.inner.lock();
        for p in range.iter() {
            inner.memory[p.0] = None;
        }
        Ok(())
    }

    fn punch_hole(&self, range: PageRange) -> Result<(), SimError> {
        let mut inner = self.inner.lock();
        for p in range.iter() {
            if inner.store[p.0].take().is_some() {
                inner.stored_pages -= 1;
            }
        }
        Ok(())
    }
}

/// A byte-addressed memory of `pages` pages behind an [`Engine`] with a
/// [`SimBackend`] and a [`LocalBudget`]: the whole pager, simulated.
pub struct SimMachine<P> {
    engine: Engine<SimBackend, P, LocalBudget>,
}

/// The error type of [`SimMachine`] operations.
pub type SimResult<T> = Result<T, EngineError<SimError>>;

impl<P: EvictionPolicy> SimMachine<P> {
    /// A machine of `pages` pages of `page_size` with a budget of
    /// `budget_bytes`, evicting with `policy`.
    ///
    /// # Errors
    /// [`EngineError::BudgetBelowPage`].
    pub fn new(
        policy: P,
        page_size: PageSize,
        pages: PageCount,
        budget_bytes: usize,
    ) -> SimResult<Self> {
        let backend = SimBackend::new(page_size, pages);
        let engine = Engine::new(
            backend,
            policy,
            LocalBudget::new(budget_bytes),
            page_size,
            pages,
        )?;
        Ok(SimMachine { engine })
    }

    /// The engine (table, budget, backend, stats).
    pub fn engine(&self) -> &Engine<SimBackend, P, LocalBudget> {
        &self.engine
    }

    /// The engine, for evict/clear/pin requests.
    pub fn engine_mut(&mut self) -> &mut Engine<SimBackend, P, LocalBudget> {
        &mut self.engine
    }

    /// The size in bytes.
    pub fn len(&self) -> usize {
        self.engine.table().len().get() << self.engine.page_size().shift()
    }

    /// Whether the machine has no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `buf.len()` bytes at `offset`, faulting pages in as needed.
    ///
    /// # Errors
    /// A fault the engine could not resolve; [`EngineError::OutOfRange`]
    /// past the end.
    pub fn read(&mut self, offset: usize, buf: &mut [u8]) -> SimResult<()> {
        self.chunks(offset, buf.len(), |m, page, at, start, len| {
            m.engine
                .backend()
                .load(page, at, &mut buf[start..start + len])
        })
    }

    /// Writes `data` at `offset`, faulting pages in as needed.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn write(&mut self, offset: usize, data: &[u8]) -> SimResult<()> {
        self.chunks(offset, data.len(), |m, page, at, start, len| {
            m.engine
                .backend()
                .store(page, at, &data[start..start + len])
        })
    }

    /// Splits `[offset, offset + len)` by page and runs `access` on each
    /// piece, resolving faults. A piece that still faults after its fault
    /// was resolved means the engine did not grant the access: a bug.
    fn chunks(
        &mut self,
        offset: usize,
        len: usize,
        mut access: impl FnMut(&Self, PageIndex, usize, usize, usize) -> Result<(), SimFault>,
    ) -> SimResult<()> {
        let ps = self.engine.page_size();
        let range = ps
            .pages_covering(offset, len)
            .map_err(|_| EngineError::OutOfRange(PageIndex(usize::MAX)))?;
        if range
            .end()
            .map_or(true, |e| e.0 > self.engine.table().len().get())
        {
            return Err(EngineError::OutOfRange(range.start));
        }
        let mut pos = offset;
        while pos < offset + len {
            let page = ps.page_of(pos);
            let at = pos & ps.mask();
            let n = (ps.bytes() - at).min(offset + len - pos);
            let mut faults = 0;
            while let Err(fault) = access(self, page, at, pos - offset, n) {
                faults += 1;
                assert!(
                    faults <= 2,
                    "page {} still faults after its fault was resolved",
                    page.0
                );
                self.engine.fault(fault.page, fault.access)?;
            }
            pos += n;
        }
        Ok(())
    }
}

impl<P> fmt::Debug for SimMachine<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimMachine")
            .field("engine", &self.engine)
            .finish()
    }
}
