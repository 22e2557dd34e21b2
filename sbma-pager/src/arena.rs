//! [`Arena`]: one large reservation, its page table, its backing file, and
//! the concurrent fault and eviction paths over them.
//!
//! Page `i` of the arena lives at `base + i * page_size` in memory and at
//! offset `i * page_size` in the backing file, so a page's state, address
//! and file offset are found by arithmetic. Every state change goes through
//! `sbma_core::transition` and one CAS on the page's word; the actions are
//! run by `sbma_core::run_actions` on the arena's [`PageBackend`]
//! implementation (real `mprotect`, `madvise`, `pread`, `pwrite`,
//! `fallocate`).
//!
//! # Fault path (may run in the SIGSEGV handler)
//!
//! [`Arena::resolve`] evaluates the transition for the faulting page:
//! already accessible → return; busy → set `waiters`, `futex_wait` on the
//! word, retry; otherwise charge the budget (evicting victims if it is
//! full), commit the transition, fill the page while it is still
//! inaccessible (staging buffer + `/proc/self/mem`, or staging mapping +
//! `mremap`), raise the protection, end the op and wake waiters. It
//! allocates nothing; the locks it may take are [`FutexLock`] (reclaim) and
//! a spin lock around the policy, neither of which is ever held while
//! managed memory is touched, so no thread can fault while holding them.
//!
//! # Eviction
//!
//! Victims come from the policy in batches; dirty ones are write-protected
//! and written in contiguous runs (one `pwrite` per run), then dropped with
//! `mprotect(PROT_NONE)` + `madvise(MADV_DONTNEED)` and uncharged; clean
//! ones are dropped without I/O.
#![allow(unsafe_code, reason = "the arena owns raw managed memory")]

use crate::error::Error;
use crate::lock::FutexLock;
use crate::memory::{Backend, FillMethod, Memory, SignalMemory, UffdMemory};
use crate::recent::RecentLoads;
use crate::snapshot::{ChildBudget, Snapshots};
use crate::staging::Staging;
use crate::stats::{Counters, Stats};
use crate::streams::Streams;
use crate::sys;
use crate::uffd::Uffd;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use sbma_core::{
    Actions, AnyPolicy, Budget, Event, EvictionPolicy, Outcome, PageBackend, PageCount, PageIndex,
    PageRange, PageSize, PageState, Protection, Transition, page::runs, run_actions, transition,
};
use std::sync::Arc;

mod workers;
pub(crate) use workers::Workers;
pub use workers::is_pager_thread;
pub(crate) use workers::mark_pager_thread;

/// The most a read-ahead loads in one I/O.
pub const READAHEAD_BYTES: usize = 512 << 10;
/// How long a fault waits in all for group peers to give memory back
/// before it reports that the budget is full.
const GROUP_WAIT_NS: u64 = 30_000_000_000;
/// How many times one charge below the fair share asks the members over
/// theirs before it evicts its own pages instead.
const GROUP_FAIR_ASKS: u32 = 3;
/// How long one wait for a peer's release lasts before asking again.
const GROUP_POLL_NS: u64 = 20_000_000;
/// The most pages [`Arena::clear`] releases with one set of syscalls.
const CLEAR_RUN: usize = 1024;
/// The most the prefetcher reads in one I/O (see `workers`).
pub const PREFETCH_BYTES: usize = 2 << 20;
/// Staging buffers per arena (each `PREFETCH_BYTES`, or one page if
/// larger; mapped lazily): concurrent fills beyond this wait for a free
/// one.
const STAGING_SLOTS: usize = 8;

/// The access that faulted or is requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Reads only.
    Read,
    /// Reads and writes.
    Write,
}

/// Why a fault could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultError {
    /// Reading the page from the backing file failed.
    Read(Errno),
    /// Writing victims back to make room failed (ENOSPC, EIO, EFBIG...).
    Write(Errno),
    /// Changing a protection failed (ENOMEM: `vm.max_map_count`).
    Protect(Errno),
    /// The budget is full of pinned pages.
    NoEvictablePages,
    /// The thread already holds the eviction lock.
    Reentered,
    /// The process is a fork of the one that created the arena.
    Forked,
}

impl FaultError {
    pub(crate) fn into_error(self) -> Error {
        match self {
            FaultError::Read(e) => Error::Io {
                op: "reading a page from the backing file",
                source: e,
            },
            FaultError::Write(e) => Error::Io {
                op: "writing pages to the backing file",
                source: e,
            },
            FaultError::Protect(e) => Error::Map {
                op: "mprotect",
                source: e,
            },
            FaultError::NoEvictablePages => Error::NoEvictablePages,
            FaultError::Reentered => Error::Reentered,
            FaultError::Forked => Error::Forked,
        }
    }
}

/// Settings fixed at arena creation.
pub(crate) struct ArenaConfig {
    pub page: PageSize,
    pub pages: PageCount,
    pub policy: AnyPolicy,
    pub budget: Arc<dyn Budget + Send + Sync>,
    pub store: OwnedFd,
    /// Why `Auto` fell back to the signal backend.
    pub backend_note: Option<&'static str>,
    /// The group whose budget `budget` is, if any.
    pub group: Option<Arc<crate::group::Group>>,
    pub memory: MemoryChoice,
    pub reclaim_batch: usize,
}

/// The backend an arena is created with (already resolved from
/// [`Backend::Auto`]).
pub(crate) enum MemoryChoice {
    Signal(FillMethod),
    Uffd(Uffd),
}

/// One reservation with its table, store, policy and counters.
pub struct Arena {
    base: *mut u8,
    len: usize,
    page: PageSize,
    table: sbma_core::PageTable,
    allocated: Box<[AtomicU64]>,
    store: OwnedFd,
    memory: Box<dyn Memory>,
    backend_note: Option<&'static str>,
    pub(crate) group: Option<Arc<crate::group::Group>>,
    /// Buffers fills read into (when the backend uses them).
    staging: Option<Staging>,
    budget: Arc<dyn Budget + Send + Sync>,
    policy: spin::Mutex<AnyPolicy>,
    reclaim: FutexLock<Vec<PageIndex>>,
    loading: AtomicUsize,
    /// One past the highest page ever allocated: whole-arena scans stop here.
    high_water: AtomicUsize,
    /// One past the highest page ever made resident: every page from here
    /// on is unbacked and idle, so scans for resident or busy pages (fork,
    /// evict-all) stop here. (A heap takes its whole arena as one region;
    /// this is what it has used.)
    touched: AtomicUsize,
    /// Read-ahead: the sequential streams seen, and the largest window.
    streams: Streams,
    /// Pages just loaded for faults: spared by explicit evictions for a
    /// moment (see `recent`).
    recent: RecentLoads,
    max_window: usize,
    reclaim_batch: usize,
    /// The process that created the arena; in any other (a forked child)
    /// the arena's file and `/proc/self/mem` descriptor belong to the
    /// parent and must not be used.
    owner: i32,
    /// Fork snapshots: the parent's live ones, and in a forked child the
    /// one it reads through (see `snapshot`).
    snapshots: Snapshots,
    /// Set in a forked child (by the `pthread_atfork` child handler): the
    /// arena then pages through `snapshots` within `child_budget`.
    child: AtomicBool,
    child_budget: ChildBudget,
    /// The reclaim and policy locks are held across a fork in progress.
    held_for_fork: AtomicBool,
    background: workers::Background,
    pub(crate) counters: Counters,
}

// SAFETY: `base` points to a reservation the arena owns for its whole life;
// all shared state is atomics or behind locks.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

impl Arena {
    /// Reserves the address space and sets everything up.
    pub(crate) fn new(cfg: ArenaConfig) -> Result<Arena, Error> {
        let len = cfg
            .page
            .len_of(cfg.pages)
            .map_err(|_| Error::OutOfAddressSpace {
                requested: usize::MAX,
                arena: 0,
            })?;
        let max_window = (READAHEAD_BYTES >> cfg.page.shift()).max(1);
        let (memory, base): (Box<dyn Memory>, *mut u8) = match cfg.memory {
            MemoryChoice::Signal(fill) => SignalMemory::new(len.bytes(), fill)
                .map(|(m, b)| (Box::new(m) as Box<dyn Memory>, b)),
            MemoryChoice::Uffd(uffd) => UffdMemory::new(uffd, len.bytes(), cfg.page.bytes())
                .map(|(m, b)| (Box::new(m) as Box<dyn Memory>, b)),
        }
        .map_err(|(op, source)| Error::Map { op, source })?;
        let staging = if memory.uses_staging() {
            match Staging::new(STAGING_SLOTS, PREFETCH_BYTES.max(cfg.page.bytes())) {
                Ok(s) => Some(s),
                Err(source) => {
                    // SAFETY: our fresh reservation, used by nobody yet.
                    let _ = unsafe { sys::unmap(base, len.bytes()) };
                    return Err(Error::Map {
                        op: "mapping staging buffers",
                        source,
                    });
                }
            }
        } else {
            None
        };
        let budget_pages = cfg.budget.limit() >> cfg.page.shift();
        Ok(Arena {
            base,
            len: len.bytes(),
            page: cfg.page,
            table: sbma_core::PageTable::new(cfg.pages),
            allocated: zeroed_bitmap(cfg.pages.get().div_ceil(64)),
            store: cfg.store,
            memory,
            backend_note: cfg.backend_note,
            group: cfg.group,
            staging,
            budget: cfg.budget,
            policy: spin::Mutex::new(cfg.policy),
            reclaim: FutexLock::new(Vec::with_capacity(budget_pages + cfg.reclaim_batch + 64)),
            loading: AtomicUsize::new(0),
            high_water: AtomicUsize::new(0),
            touched: AtomicUsize::new(0),
            streams: Streams::default(),
            recent: RecentLoads::new(),
            max_window,
            reclaim_batch: cfg.reclaim_batch,
            owner: sys::process_id(),
            snapshots: Snapshots::new(cfg.pages.get(), cfg.page.shift()),
            child: AtomicBool::new(false),
            child_budget: ChildBudget::new(),
            held_for_fork: AtomicBool::new(false),
            background: workers::Background::new(
                budget_pages,
                max_window,
                cfg.reclaim_batch,
                cfg.page.shift(),
            ),
            counters: Counters::default(),
        })
    }

    /// Whether this process is a fork of the arena's creator.
    pub(crate) fn forked(&self) -> bool {
        sys::process_id() != self.owner
    }

    /// Whether this is a forked child's copy of the arena, set up to page
    /// (the child handler ran).
    pub(crate) fn in_child(&self) -> bool {
        self.child.load(Ordering::Relaxed)
    }

    /// Whether a forked child can read pages (it has a fork snapshot).
    pub(crate) fn child_can_read(&self) -> bool {
        self.in_child() && self.snapshots.readable()
    }

    /// The memory operations in force: the backend's, or in a forked
    /// child the snapshot reader's.
    fn mem(&self) -> &dyn Memory {
        if self.in_child() {
            &self.snapshots
        } else {
            &*self.memory
        }
    }

    /// The budget in force: the pager's, or in a forked child its own.
    fn budget(&self) -> &dyn Budget {
        if self.in_child() {
            &self.child_budget
        } else {
            &*self.budget
        }
    }

    /// The group this arena's budget belongs to (never in a forked child:
    /// the membership is the parent's).
    pub(crate) fn group(&self) -> Option<&crate::group::Group> {
        if self.in_child() {
            None
        } else {
            self.group.as_deref()
        }
    }

    // ---------------------------------------------------------------
    // Fork (see `snapshot` and `fork`)
    // ---------------------------------------------------------------

    /// Prepare handler, in the forking thread: sets up the child's
    /// snapshot (in the arena's creator only) and holds the reclaim and
    /// policy locks across the fork, so the child gets them free and the
    /// structures they guard whole.
    pub(crate) fn before_fork(&self) {
        // The reclaim lock first: every write-back runs under it, so none
        // can finish between the snapshot's set-up and the fork. One that
        // did would preserve the slot's older bytes for the child while
        // the page, now clean or evicted, says the slot is current: the
        // child would read the older bytes.
        if let Ok(guard) = self.reclaim.lock() {
            core::mem::forget(guard);
            core::mem::forget(self.policy.lock());
            self.held_for_fork.store(true, Ordering::Relaxed);
        }
        if !self.forked() {
            self.snapshots.prepare(self.store.as_fd());
        }
    }

    /// Parent handler: lets go of what [`before_fork`](Self::before_fork)
    /// took.
    pub(crate) fn after_fork_in_parent(&self) {
        self.snapshots.after_fork_in_parent();
        self.release_fork_locks();
    }

    fn release_fork_locks(&self) {
        if self.held_for_fork.swap(false, Ordering::Relaxed) {
            // SAFETY: `before_fork` took both and forgot the guards; this
            // thread (the forking one, or the child's only thread) is the
            // one that holds them.
            unsafe {
                self.policy.force_unlock();
                self.reclaim.force_unlock();
            }
        }
    }

    /// Child handler (the child's only thread, nothing else runs): turns
    /// the inherited arena into one that pages through the fork snapshot.
    ///
    /// Operations other threads had in flight at the fork are settled as
    /// if they failed (a load is undone, a write-back leaves the page
    /// dirty, a drop completes); the pages whose memory they may have
    /// changed are discarded. Then every page gets the protection of its
    /// state (a userfaultfd registration does not survive fork, so under
    /// the uffd backend clean pages become read-only and non-resident ones
    /// inaccessible), the budget becomes the child's own, and background
    /// threads (which do not exist here) are not used.
    ///
    /// # Panics
    /// Never; if a protection cannot be set (`vm.max_map_count`), the
    /// child aborts with one line rather than read wrong data.
    pub(crate) fn after_fork_in_child(&self) {
        self.release_fork_locks();
        self.snapshots.after_fork_in_child();
        self.background.stop_in_child();
        self.loading.store(0, Ordering::Relaxed);
        let uffd = self.memory.uffd().is_some();
        let end = self.touched().count.get();
        let mut run: Option<(usize, Protection)> = None;
        for p in 0..=end {
            let target = (p < end).then(|| self.settle(PageIndex(p), uffd)).flatten();
            match (run, target) {
                (Some((_, prot)), Some(t)) if prot == t => continue,
                _ => {}
            }
            if let Some((start, prot)) = run.take() {
                self.protect_in_child(PageRange::new(PageIndex(start), PageCount(p - start)), prot);
            }
            run = target.map(|t| (p, t));
        }
        let used = self.used().count.get();
        if uffd && end < used {
            // Never resident: missing in the child's copy, and it must
            // fault there too (its loads assume discarded memory).
            self.protect_in_child(
                PageRange::new(PageIndex(end), PageCount(used - end)),
                Protection::None,
            );
        }
        self.child_budget
            .start(self.budget.limit(), self.table.charged_bytes(self.page));
        self.child.store(true, Ordering::Release);
    }

    /// Settles page `p` in a new child; returns the protection to give it
    /// (`None`: leave it, it already has the right one).
    fn settle(&self, p: PageIndex, uffd: bool) -> Option<Protection> {
        let s = self.table.state(p);
        let unsettled = s.is_busy();
        match s.op() {
            sbma_core::Op::Idle => {}
            sbma_core::Op::Load => {
                self.table.apply(p, Event::LoadFailed);
                self.table.apply(p, Event::DropComplete);
            }
            sbma_core::Op::WriteBack => {
                self.table.apply(p, Event::WriteBackFailed);
            }
            sbma_core::Op::Drop => {
                self.table.apply(p, Event::DropComplete);
            }
        }
        let s = self.table.state(p);
        if unsettled && !s.is_resident() {
            // SAFETY: the child's own copy of the page; nothing else runs.
            let _ = unsafe { sys::discard(self.addr(p), self.page.bytes()) };
        }
        if !uffd && !unsettled {
            return None;
        }
        Some(match s.kind() {
            sbma_core::Kind::Dirty => Protection::ReadWrite,
            sbma_core::Kind::Clean => Protection::Read,
            sbma_core::Kind::Unbacked | sbma_core::Kind::Evicted => Protection::None,
        })
    }

    fn protect_in_child(&self, run: PageRange, prot: Protection) {
        let p = sys::Prot::from(prot);
        // SAFETY: the child's own copy of the reservation; nothing else of
        // the program runs yet (atfork child handler).
        if let Err(e) = unsafe { sys::protect(self.addr(run.start), self.bytes(run), p) } {
            let mut num = [0u8; 20];
            sys::die(&[
                b"sbma: forked child cannot protect its copy of storage-backed memory (mprotect errno ",
                sys::decimal(e.raw_os_error().unsigned_abs() as usize, &mut num),
                b")",
            ]);
        }
    }

    /// Whether an eviction may take a page in state `s`: any evictable
    /// page in the arena's creator; in a forked child only clean ones
    /// (dirty pages could only be written to the parent's file), and only
    /// if they can be read again (backed ones need the snapshot).
    fn may_evict(&self, s: sbma_core::PageState) -> bool {
        s.is_evictable()
            && (!self.in_child()
                || (s.kind() == sbma_core::Kind::Clean
                    && (!s.is_backed() || self.snapshots.readable())))
    }

    /// Whether `addr` lies in the reservation.
    pub fn contains(&self, addr: usize) -> bool {
        addr.wrapping_sub(self.base as usize) < self.len
    }

    /// The first byte of the reservation.
    pub fn base(&self) -> *mut u8 {
        self.base
    }

    /// The page size.
    pub fn page_size(&self) -> PageSize {
        self.page
    }

    /// The budget's limit in bytes.
    pub(crate) fn budget_limit(&self) -> usize {
        self.budget().limit()
    }

    /// The fault backend in use.
    pub fn backend(&self) -> Backend {
        self.memory.backend()
    }

    /// The userfaultfd to serve (uffd backend).
    pub(crate) fn uffd(&self) -> Option<&Uffd> {
        self.memory.uffd()
    }

    /// Whether the backing file bypasses the page cache (`O_DIRECT`).
    pub fn direct_io(&self) -> bool {
        sys::is_direct(self.store.as_fd())
    }

    /// The page table.
    pub fn table(&self) -> &sbma_core::PageTable {
        &self.table
    }

    fn addr(&self, page: PageIndex) -> *mut u8 {
        // SAFETY: callers only pass pages inside the reservation, so the
        // offset stays inside it.
        unsafe { self.base.add(page.0 << self.page.shift()) }
    }

    fn bytes(&self, range: PageRange) -> usize {
        range.count.get() << self.page.shift()
    }

    fn offset(&self, page: PageIndex) -> u64 {
        (page.0 as u64) << self.page.shift()
    }

    /// Statistics, including the budget's figures.
    pub fn stats(&self) -> Stats {
        let mut s = self.counters.snapshot();
        s.resident = self.budget().resident() as u64;
        s.dirty = (self.table.dirty_pages().get() << self.page.shift()) as u64;
        s.budget = self.budget().limit() as u64;
        s.backend = self.backend();
        s.backend_note = self.backend_note;
        s.child_overcommits = self.child_budget.overcommits();
        if let Some(g) = self.group() {
            s.group_resident = s.resident;
            s.resident = g.charged() as u64;
        }
        s
    }

    // ---------------------------------------------------------------
    // Allocation bitmap: which pages belong to a live region.
    // ---------------------------------------------------------------

    /// Every page that was ever part of a region: `[0, high water)`.
    pub(crate) fn used(&self) -> PageRange {
        PageRange::new(
            PageIndex(0),
            PageCount(self.high_water.load(Ordering::Acquire)),
        )
    }

    /// The pages that were ever resident: `[0, touched)`, within
    /// [`used`](Self::used). Every other page is unbacked and idle.
    pub(crate) fn touched(&self) -> PageRange {
        let end = self
            .touched
            .load(Ordering::Acquire)
            .min(self.high_water.load(Ordering::Acquire));
        PageRange::new(PageIndex(0), PageCount(end))
    }

    /// Records that pages below `end` were made resident.
    fn note_touched(&self, end: usize) {
        self.touched.fetch_max(end, Ordering::AcqRel);
    }

    pub(crate) fn set_allocated(&self, range: PageRange, on: bool) {
        if on {
            if let Ok(end) = range.end() {
                self.high_water.fetch_max(end.0, Ordering::AcqRel);
            }
        }
        // A word at a time (a heap takes its whole arena, millions of
        // pages, at start-up).
        let (mut p, end) = (range.start.0, range.start.0 + range.count.get());
        while p < end {
            let (word, first) = (p / 64, p % 64);
            let n = (64 - first).min(end - p);
            let bits = (u64::MAX >> (64 - n)) << first;
            if on {
                self.allocated[word].fetch_or(bits, Ordering::Release);
            } else {
                self.allocated[word].fetch_and(!bits, Ordering::Release);
            }
            p += n;
        }
    }

    pub(crate) fn is_allocated(&self, p: PageIndex) -> bool {
        self.allocated[p.0 / 64].load(Ordering::Acquire) & (1 << (p.0 % 64)) != 0
    }

    // ---------------------------------------------------------------
    // Fault path
    // ---------------------------------------------------------------

    /// Entry from the signal handler and the uffd service: `None` if `addr`
    /// is not in a live region (not ours to handle: the caller chains),
    /// else the result. `tid` is the faulting thread (`None`: the caller).
    pub(crate) fn on_fault(
        &self,
        addr: usize,
        write: Option<bool>,
        tid: Option<i32>,
    ) -> Option<Result<(), FaultError>> {
        let page = PageIndex((addr - self.base as usize) >> self.page.shift());
        if !self.is_allocated(page) {
            return None;
        }
        let _marked = crate::fault_path::FaultPath::enter();
        if self.forked() && !self.in_child() {
            return Some(Err(FaultError::Forked));
        }
        let access = match write {
            Some(true) => Access::Write,
            Some(false) => Access::Read,
            // No hardware write bit: a fault on a readable page must be a
            // write; otherwise load it readable first (a write faults again).
            None if self.table.state(page).is_resident() => Access::Write,
            None => Access::Read,
        };
        let r = self.resolve_fault(page, access, true);
        if r.is_ok() {
            let tid = tid.unwrap_or_else(sys::thread_id);
            self.recent.record(page.0, tid, sys::now_ns());
        }
        Some(r)
    }

    /// Makes `page` accessible for `access`. Async-signal-safe.
    ///
    /// When raising a protection fails with `ENOMEM` (the mapping would
    /// split past `vm.max_map_count`), every evictable page is evicted,
    /// which turns long stretches back into one `PROT_NONE` mapping, and
    /// the fault is retried.
    pub(crate) fn resolve(&self, page: PageIndex, access: Access) -> Result<(), FaultError> {
        self.resolve_fault(page, access, false)
    }

    /// [`resolve`](Self::resolve); `fault` says it is a real fault (which
    /// may claim fresh pages ahead of a sequential run of first writes;
    /// `touch` makes exactly the pages asked for resident).
    fn resolve_fault(
        &self,
        page: PageIndex,
        access: Access,
        fault: bool,
    ) -> Result<(), FaultError> {
        let mut recovered = false;
        loop {
            match self.resolve_once(page, access, fault) {
                Err(FaultError::Protect(Errno::NOMEM)) if !recovered => {
                    recovered = true;
                    self.evict_locked(self.used()).map_err(|e| match e {
                        Errno::DEADLK => FaultError::Reentered,
                        e => FaultError::Write(e),
                    })?;
                }
                r => return r,
            }
        }
    }

    fn resolve_once(&self, page: PageIndex, access: Access, fault: bool) -> Result<(), FaultError> {
        let event = match access {
            Access::Read => Event::ReadFault,
            Access::Write => Event::WriteFault,
        };
        loop {
            let s = self.table.state(page);
            let t = match transition(s, event) {
                Outcome::Apply(t) => t,
                Outcome::Done => return Ok(()),
                Outcome::Busy => {
                    self.wait_while_busy(page);
                    continue;
                }
                // Faults are legal in every idle state and pins do not
                // stop them: these cannot happen.
                Outcome::Pinned | Outcome::Illegal => unreachable!("{s:?} refused {event:?}"),
            };
            if t.actions.contains(Actions::READ_IN) && self.in_child() && !self.child_can_read() {
                // A forked child without a snapshot cannot read the
                // parent's file safely.
                return Err(FaultError::Forked);
            }
            let charge = t.actions.contains(Actions::CHARGE);
            if charge {
                self.charge_page()?;
            }
            if self.table.commit(page, &t).is_err() {
                if charge {
                    self.uncharge_loading(1);
                }
                continue;
            }
            self.note_touched(page.0 + 1);
            let counter = match access {
                Access::Read => &self.counters.read_faults,
                Access::Write => &self.counters.write_faults,
            };
            Counters::add(counter, 1);
            let ahead = if t.actions.contains(Actions::READ_IN) {
                self.start_readahead(page)
            } else if fault && t.actions.contains(Actions::ZERO_FILL) && access == Access::Write {
                self.start_zero_ahead(page, &t)
            } else {
                0
            };
            return self.finish_load(page, &t, charge, ahead);
        }
    }

    /// Read-ahead: if `page` continues a sequential run of faults, claims
    /// the evicted, idle pages after it (up to the window, which doubles
    /// while the run goes on), charging each without evicting anything.
    /// Returns how many were claimed; they are in `Load`, to be filled with
    /// `page` in one I/O. Once the window is full, the windows after it are
    /// claimed too and handed to the prefetcher (see `workers`).
    fn start_readahead(&self, page: PageIndex) -> usize {
        let o = self.streams.observe(page.0, self.max_window);
        let claimed = self.claim_evicted(PageIndex(page.0 + 1), o.window - 1);
        if o.sequential
            && o.window == self.max_window
            && claimed + 1 == o.window
            && self.background.on()
        {
            let end = self.prefetch_from(page.0 + o.window);
            // The stream's next fault comes after the prefetched pages.
            self.streams.advance(o.slot, end - 1, o.window);
        }
        claimed
    }

    /// Write-ahead of fresh pages: if a first write to a never-written page
    /// continues a sequential run of faults, claims the never-written
    /// pages after it (up to the window, which doubles while the run goes
    /// on) for the same load: zeros, writable, dirty. A program filling
    /// fresh memory front to back then takes one fault per window instead
    /// of one per page (under uffd each fault is a round trip to a service
    /// thread). The cost when the program stops early is at most one
    /// window of zero pages written back later. Returns how many pages
    /// were claimed (charged without evicting, in `Load`).
    fn start_zero_ahead(&self, page: PageIndex, t: &Transition) -> usize {
        let o = self.streams.observe(page.0, self.max_window);
        if !o.sequential {
            return 0;
        }
        let claimed = self.claim(
            PageIndex(page.0 + 1),
            o.window - 1,
            sbma_core::Kind::Unbacked,
            Event::WriteFault,
            Some(t.actions),
        );
        if claimed > 0 {
            // The stream's next fault comes after the claimed pages.
            self.streams.advance(o.slot, page.0 + claimed, o.window);
            Counters::add(&self.counters.pages_zeroed_ahead, claimed as u64);
        }
        claimed
    }

    /// Claims for loading up to `max` consecutive pages from `from` that
    /// are allocated, evicted and idle, charging each without evicting
    /// anything. Returns how many; they are in `Load` and counted in
    /// `loading`.
    fn claim_evicted(&self, from: PageIndex, max: usize) -> usize {
        self.claim(from, max, sbma_core::Kind::Evicted, Event::ReadFault, None)
    }

    /// Claims up to `max` consecutive allocated, idle pages from `from`
    /// whose kind is `kind`, applying `event` to each (so each is in a
    /// `Load` op) and charging each without evicting anything; stops at the
    /// first page that does not qualify or does not fit. With `same_as`,
    /// the transition must also ask for exactly those actions (pages loaded
    /// together with a fault must need what it needs). Returns how many;
    /// they are counted in `loading`.
    fn claim(
        &self,
        from: PageIndex,
        max: usize,
        kind: sbma_core::Kind,
        event: Event,
        same_as: Option<Actions>,
    ) -> usize {
        let mut claimed = 0;
        while claimed < max {
            let p = PageIndex(from.0 + claimed);
            if p.0 >= self.table.len().get() || !self.is_allocated(p) {
                break;
            }
            let s = self.table.state(p);
            if s.kind() != kind || s.is_busy() {
                break;
            }
            let Outcome::Apply(t) = transition(s, event) else {
                break;
            };
            if same_as.is_some_and(|a| a != t.actions)
                || self.budget().try_charge(self.page.bytes()).is_err()
            {
                break;
            }
            if self.table.commit(p, &t).is_err() {
                self.budget().uncharge(self.page.bytes());
                break;
            }
            self.loading.fetch_add(1, Ordering::AcqRel);
            claimed += 1;
            self.note_touched(p.0 + 1);
        }
        if claimed > 0 {
            self.after_charge();
        }
        claimed
    }

    /// Loads pages claimed by [`claim_evicted`](Self::claim_evicted): one
    /// read, read access, loads ended, pages admitted; on failure every
    /// load is undone (the page stays evicted; a fault on it will meet the
    /// error itself).
    fn load_claimed(&self, range: PageRange) {
        let r = self
            .read_in(range)
            .and_then(|()| self.protect(range, Protection::Read));
        match r {
            Ok(()) => {
                for p in range.iter() {
                    self.end_op(p, Event::LoadComplete);
                }
                let mut policy = self.policy.lock();
                for p in range.iter() {
                    policy.admit(p);
                }
            }
            Err(_) => {
                for p in range.iter() {
                    self.undo_load(p);
                }
            }
        }
        self.loading.fetch_sub(range.count.get(), Ordering::AcqRel);
    }

    /// Undoes a failed load of `p` (uncharging it) and ends the op.
    fn undo_load(&self, p: PageIndex) {
        let undo = self.table.apply(p, Event::LoadFailed);
        if let Outcome::Apply(u) = undo.outcome {
            let _ = self.run(PageRange::single(p), u.actions);
        }
        self.end_op(p, Event::DropComplete);
    }

    /// Runs a started load's actions and ends it (or undoes it). `ahead`
    /// pages after `page` were claimed by read-ahead (read-only loads): they
    /// are read in the same I/O.
    fn finish_load(
        &self,
        page: PageIndex,
        t: &Transition,
        charged: bool,
        ahead: usize,
    ) -> Result<(), FaultError> {
        let range = PageRange::single(page);
        let extra = PageRange::new(PageIndex(page.0 + 1), PageCount(ahead));
        let r = if ahead == 0 {
            self.run(range, t.actions)
        } else if !t.actions.contains(Actions::READ_IN) {
            // Write-ahead: every page of the run has the same actions.
            self.run(PageRange::new(page, PageCount(ahead + 1)), t.actions)
        } else {
            // One read for the whole run, then each part's protection.
            let run = PageRange::new(page, PageCount(ahead + 1));
            self.read_in(run)
                .and_then(|()| self.run(range, t.actions.without(Actions::READ_IN)))
                .and_then(|()| self.protect(extra, Protection::Read))
        };
        match r {
            Ok(()) => {
                self.end_op(page, Event::LoadComplete);
                for p in extra.iter() {
                    self.end_op(p, Event::LoadComplete);
                }
                let mut policy = self.policy.lock();
                if charged {
                    policy.admit(page);
                } else {
                    policy.access(page);
                }
                for p in extra.iter() {
                    policy.admit(p);
                }
                drop(policy);
                self.loading
                    .fetch_sub(usize::from(charged) + ahead, Ordering::AcqRel);
                Ok(())
            }
            Err(e) => {
                self.loading
                    .fetch_sub(usize::from(charged) + ahead, Ordering::AcqRel);
                if !charged {
                    self.policy.lock().forget(page);
                }
                for p in range.iter().chain(extra.iter()) {
                    self.undo_load(p);
                }
                Err(if t.actions.contains(Actions::READ_IN) && !e.protect {
                    FaultError::Read(e.errno)
                } else {
                    FaultError::Protect(e.errno)
                })
            }
        }
    }

    /// Ends the op in flight on `page` with `event` and wakes sleepers.
    fn end_op(&self, page: PageIndex, event: Event) {
        let a = self.table.apply(page, event);
        let Outcome::Apply(t) = a.outcome else {
            unreachable!("ending {event:?} on {:?}", a.observed);
        };
        if t.actions.contains(Actions::GRANT_WRITE) {
            let _ = self.run(PageRange::single(page), Actions::GRANT_WRITE);
        }
        if t.actions.contains(Actions::WAKE) {
            sys::futex_wake_all(self.table.word(page));
        }
    }

    fn wait_while_busy(&self, page: PageIndex) {
        Counters::add(&self.counters.waits, 1);
        if let Some(w) = self.table.mark_waiting(page) {
            sys::futex_wait(self.table.word(page), w.word());
        }
    }

    /// Charges one page for a load, evicting victims until it fits.
    fn charge_page(&self) -> Result<(), FaultError> {
        self.charge(self.page.bytes())?;
        self.loading.fetch_add(1, Ordering::AcqRel);
        self.after_charge();
        Ok(())
    }

    fn uncharge_loading(&self, pages: usize) {
        self.budget().uncharge(pages << self.page.shift());
        self.loading.fetch_sub(pages, Ordering::AcqRel);
    }

    fn charge(&self, bytes: usize) -> Result<(), FaultError> {
        let mut group_deadline = None;
        let mut fair_asks = 0;
        loop {
            if self.budget().try_charge(bytes).is_ok() {
                return Ok(());
            }
            // In a group, a member below its fair share gets memory back
            // from the members over theirs (blocked ones first) before it
            // evicts its own: else a late starter would cycle through a
            // page or two while the others keep the budget.
            if let Some(g) = self.group() {
                if fair_asks < GROUP_FAIR_ASKS && g.below_fair_share() {
                    fair_asks += 1;
                    let want = bytes.max(self.reclaim_batch << self.page.shift());
                    if self.ask_peers_and_wait(g, want, false) {
                        continue;
                    }
                }
            }
            let mut victims = self.reclaim.lock().map_err(|_| FaultError::Reentered)?;
            let short = match self.budget().try_charge(bytes) {
                Ok(()) => return Ok(()),
                Err(s) => s,
            };
            let want = self
                .page
                .pages_for(short.deficit())
                .map_or(usize::MAX, PageCount::get);
            let want = PageCount(want.max(self.reclaim_batch));
            let freed = self
                .evict_selected(&mut victims, want)
                .map_err(FaultError::Write)?;
            drop(victims);
            if freed == 0 {
                // Nothing of ours could be evicted. In a group, peers hold
                // the budget: ask those over their share to give some back
                // and wait (bounded) for a release.
                if let Some(g) = self.group() {
                    let now = sys::now_ns();
                    let deadline = *group_deadline.get_or_insert(now + GROUP_WAIT_NS);
                    let want = short.deficit().max(self.page.bytes());
                    if now < deadline && self.ask_peers_and_wait(g, want, true) {
                        continue;
                    }
                }
                // Pages other threads are loading (charged, not yet
                // admitted) or upgrading become evictable when they
                // finish: wait for them. With none in flight, the budget
                // is full of pinned pages.
                if self.in_child() {
                    // The child holds only pages it dirtied (or pinned):
                    // it goes over its budget rather than stop (it cannot
                    // write them anywhere; see `snapshot`).
                    self.child_budget.force(bytes);
                    return Ok(());
                }
                if self.loading.load(Ordering::Acquire) == 0 && !self.any_busy() {
                    return Err(FaultError::NoEvictablePages);
                }
                sys::yield_now();
            }
        }
    }

    /// Asks the policy for `want` evictable victims (into `victims`, the
    /// reclaim lock's buffer) and evicts them; returns the pages dropped.
    fn evict_selected(
        &self,
        victims: &mut Vec<PageIndex>,
        want: PageCount,
    ) -> Result<usize, Errno> {
        victims.clear();
        {
            let table = &self.table;
            let mut policy = self.policy.lock();
            policy.select(want, &mut |p| self.may_evict(table.state(p)), victims);
        }
        self.evict_pages(victims)
    }

    /// Asks group peers to give back `bytes` (those over their share, or,
    /// as a `last_resort`, the largest holder if none is) and, if anyone
    /// was asked, waits up to [`GROUP_POLL_NS`] for a release. Returns
    /// whether anyone was asked.
    fn ask_peers_and_wait(&self, g: &crate::group::Group, bytes: usize, last_resort: bool) -> bool {
        let seen = g.generation();
        let asked = if last_resort {
            g.ask_peers(bytes)
        } else {
            g.ask_over_share(bytes)
        };
        if asked {
            Counters::add(&self.counters.peer_requests, 1);
            let start = sys::now_ns();
            g.wait_for_release(seen, GROUP_POLL_NS);
            Counters::add(&self.counters.peer_wait_ns, sys::now_ns() - start);
        }
        asked
    }

    /// Serves a group peer's request: evicts about `bytes` of this
    /// arena's pages (policy-chosen, as for a fault). Returns the pages
    /// dropped.
    pub(crate) fn give_back(&self, bytes: usize) -> usize {
        let Ok(mut victims) = self.reclaim.lock() else {
            return 0;
        };
        let want = PageCount(bytes.div_ceil(self.page.bytes()).max(1));
        let n = self.evict_selected(&mut victims, want).unwrap_or(0);
        Counters::add(&self.counters.requests_received, 1);
        Counters::add(&self.counters.requests_honoured, u64::from(n > 0));
        Counters::add(&self.counters.pages_given_to_peers, n as u64);
        n
    }

    fn any_busy(&self) -> bool {
        self.touched().iter().any(|p| self.table.state(p).is_busy())
    }

    // ---------------------------------------------------------------
    // Eviction
    // ---------------------------------------------------------------

    /// Evicts `victims` (already forgotten by the policy). Pages that are no
    /// longer evictable are handed back to the policy. Returns the pages
    /// dropped; on a write-back error, the pages of that run stay dirty and
    /// resident (and tracked) and the error is returned after the other
    /// runs were processed.
    fn evict_pages(&self, victims: &mut Vec<PageIndex>) -> Result<usize, Errno> {
        victims.sort_unstable();
        victims.dedup();
        // Start every eviction we can; keep those in `victims`.
        let mut started = 0;
        for i in 0..victims.len() {
            let p = victims[i];
            if self.start_eviction(p) {
                victims[started] = p;
                started += 1;
            } else if self.table.state(p).is_resident() {
                self.policy.lock().admit(p);
            }
        }
        victims.truncate(started);
        let mut dropped = 0;
        let mut first_error = None;
        // Runs: consecutive victims all in WriteBack (dirty) or all in Drop.
        let in_writeback = |p| self.table.state(p).op() == sbma_core::Op::WriteBack;
        for (run, dirty) in runs(victims, in_writeback) {
            match self.evict_run(run, dirty) {
                Ok(()) => dropped += run.count.get(),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(dropped),
        }
    }

    /// Starts evicting `p` (puts it in `WriteBack` or `Drop`) if
    /// [`may_evict`](Self::may_evict) lets it go; whether it started.
    fn start_eviction(&self, p: PageIndex) -> bool {
        loop {
            let s = self.table.state(p);
            if !self.may_evict(s) {
                return false;
            }
            let Outcome::Apply(t) = transition(s, Event::Evict) else {
                return false;
            };
            if self.table.commit(p, &t).is_ok() {
                return true;
            }
        }
    }

    /// Finishes the eviction of a run whose pages are all in `WriteBack`
    /// (dirty) or all in `Drop` (clean).
    fn evict_run(&self, run: PageRange, dirty: bool) -> Result<(), Errno> {
        if dirty {
            if let Err(e) = self.run(run, Actions::WRITE_PROTECT.with(Actions::WRITE_BACK)) {
                for p in run.iter() {
                    self.end_op(p, Event::WriteBackFailed);
                    self.policy.lock().admit(p);
                }
                return Err(e.errno);
            }
            for p in run.iter() {
                let a = self.table.apply(p, Event::WriteBackComplete);
                debug_assert!(matches!(a.outcome, Outcome::Apply(_)));
            }
        }
        let r = self.run(
            run,
            Actions::REVOKE
                .with(Actions::DISCARD)
                .with(Actions::UNCHARGE),
        );
        for p in run.iter() {
            self.end_op(p, Event::DropComplete);
        }
        Counters::add(&self.counters.pages_evicted, run.count.get() as u64);
        r.map_err(|e| e.errno)
    }

    /// Evicts every resident, unpinned page of `range`, once the
    /// prefetches in flight are done (so none of its pages is skipped for
    /// being in the middle of a load).
    pub(crate) fn evict(&self, range: PageRange) -> Result<usize, Error> {
        self.quiesce();
        self.evict_locked(range).map_err(|e| match e {
            Errno::DEADLK => Error::Reentered,
            e => Error::Io {
                op: "writing pages to the backing file",
                source: e,
            },
        })
    }

    /// [`evict`](Self::evict) for the fault path: `EDEADLK` stands for
    /// re-entry.
    ///
    /// The range is scanned before the eviction lock is taken (each page is
    /// re-checked by its CAS anyway), so faults needing room wait only for
    /// the evictions, not for the scan.
    fn evict_locked(&self, range: PageRange) -> Result<usize, Errno> {
        let end = range
            .end()
            .map_or(0, |e| e.0)
            .min(self.touched().count.get());
        // Pages other threads are about to access after their faults.
        let spared = self.recent.spared(sys::thread_id(), sys::now_ns());
        let mut dropped = 0;
        let mut next = range.start.0;
        while next < end {
            let mut victims = self.reclaim.lock().map_err(|_| Errno::DEADLK)?;
            victims.clear();
            let room = victims.capacity().max(1);
            {
                let mut policy = self.policy.lock();
                while next < end && victims.len() < room {
                    let p = PageIndex(next);
                    next += 1;
                    if self.may_evict(self.table.state(p)) && !spared.contains(p.0) {
                        policy.forget(p);
                        victims.push(p);
                    }
                }
            }
            dropped += self.evict_pages(&mut victims)?;
        }
        Ok(dropped)
    }

    /// Discards the contents of `range` (zeros next time, never written
    /// back, memory and disk released).
    ///
    /// Consecutive pages are claimed (put in a `Clear` op) up to
    /// [`CLEAR_RUN`] at a time and released together: the union of their
    /// actions runs once over the whole run (one `mprotect`, `madvise` and
    /// `fallocate`, not one per page; revoking and discarding pages that
    /// were already evicted is harmless, and every page of the run is ours
    /// while it happens). No page is held while waiting for another. Every
    /// page is cleared even if releasing one run fails; the first error is
    /// returned.
    pub(crate) fn clear(&self, range: PageRange, force_unpin: bool) -> Result<(), Error> {
        let mut held: Option<Cleared> = None;
        let mut result = Ok(());
        for p in range.iter() {
            loop {
                let s = self.table.state(p);
                match transition(s, Event::Clear) {
                    Outcome::Done => break,
                    Outcome::Busy => {
                        self.release_cleared(&mut held, &mut result);
                        self.wait_while_busy(p);
                    }
                    Outcome::Pinned if force_unpin => {
                        self.release_cleared(&mut held, &mut result);
                        while self.table.state(p).is_pinned() {
                            self.table.apply(p, Event::Unpin);
                        }
                    }
                    Outcome::Pinned => {
                        self.release_cleared(&mut held, &mut result);
                        return result.and(Err(Error::Pinned));
                    }
                    Outcome::Illegal => unreachable!("clear refused in {s:?}"),
                    Outcome::Apply(t) => {
                        if self.table.commit(p, &t).is_err() {
                            continue;
                        }
                        if s.is_resident() {
                            self.policy.lock().forget(p);
                        }
                        let charged = usize::from(t.actions.contains(Actions::UNCHARGE));
                        match &mut held {
                            Some(c)
                                if c.run.start.0 + c.run.count.0 == p.0
                                    && c.run.count.0 < CLEAR_RUN =>
                            {
                                c.run.count.0 += 1;
                                c.actions = c.actions.with(t.actions);
                                c.charged += charged;
                            }
                            _ => {
                                self.release_cleared(&mut held, &mut result);
                                held = Some(Cleared {
                                    run: PageRange::single(p),
                                    actions: t.actions,
                                    charged,
                                });
                            }
                        }
                        break;
                    }
                }
            }
        }
        self.release_cleared(&mut held, &mut result);
        result
    }

    /// Runs the actions of a run of pages in a `Clear` op and ends it.
    fn release_cleared(&self, held: &mut Option<Cleared>, result: &mut Result<(), Error>) {
        let Some(Cleared {
            run,
            actions,
            charged,
        }) = held.take()
        else {
            return;
        };
        // Uncharge only the pages that were charged, not the whole run.
        let r = run_actions(self, run, actions.without(Actions::UNCHARGE), &mut |_| {});
        self.budget().uncharge(charged << self.page.shift());
        for p in run.iter() {
            self.end_op(p, Event::DropComplete);
        }
        if let (Err(e), Ok(())) = (r, &result) {
            *result = Err(Error::Io {
                op: "releasing cleared pages",
                source: e.errno,
            });
        }
    }

    /// Moves the contents of `src` to the pages starting at `dst` without
    /// copying bytes through memory: resident pages by `mremap`, store
    /// copies by `copy_file_range` (see [`Memory::relocate`] and
    /// `sbma_core::moved_in`). What `dst` held before is discarded; `src`
    /// ends up reading as zeros or as before (the caller clears it). The
    /// budget does not change.
    ///
    /// Work goes [`CLEAR_RUN`] pages at a time under the reclaim lock (no
    /// eviction or fork in between): the chunk's target pages, then its
    /// source pages are held (`Event::Hold`; faults on them wait), runs of
    /// pages needing the same treatment are moved, each moved pair is
    /// committed, and the rest is let go unchanged.
    ///
    /// # Errors
    /// The pages moved so far (a prefix: the others are untouched in
    /// `src`) with why the rest were not: [`Error::Forked`], [`Error::Pinned`]
    /// (a source page is pinned), [`Error::Reentered`], or the failed
    /// `mremap` or `copy_file_range` ([`Error::Map`], [`Error::Io`]; the
    /// caller copies the rest).
    pub(crate) fn relocate(&self, src: PageRange, dst: PageIndex) -> Result<(), (usize, Error)> {
        if self.forked() {
            return Err((0, Error::Forked));
        }
        let n = src.count.get();
        self.clear(PageRange::new(dst, src.count), false)
            .map_err(|e| (0, e))?;
        let _evictions = self.reclaim.lock().map_err(|_| (0, Error::Reentered))?;
        let mut done = 0;
        let mut held: Vec<(PageState, PageState)> = Vec::new();
        while done < n {
            let len = (n - done).min(CLEAR_RUN);
            let from = PageRange::new(PageIndex(src.start.0 + done), PageCount(len));
            let to = PageIndex(dst.0 + done);
            held.clear();
            // A page that cannot be held ends the move there: the pages
            // before it still move.
            let stop = self.hold_for_move(from, to, &mut held).err();
            let (moved, error) = self.move_held(from, to, &held);
            self.let_go(from, to, &held, moved);
            done += moved;
            if let Some(e) = error.or(stop) {
                return Err((done, e));
            }
        }
        Ok(())
    }

    /// Holds the pages of `to..` (each made unbacked if it is not) and
    /// those of `from`, pair by pair, pushing each pair's held states to
    /// `held`; on error, the pairs in `held` are held (a prefix).
    fn hold_for_move(
        &self,
        from: PageRange,
        to: PageIndex,
        held: &mut Vec<(PageState, PageState)>,
    ) -> Result<(), Error> {
        for (i, p) in from.iter().enumerate() {
            let q = PageIndex(to.0 + i);
            let dst = loop {
                let s = self.table.state(q);
                if s.kind() != sbma_core::Kind::Unbacked && !s.is_busy() {
                    // Taken by a write-ahead since the clear: free space
                    // still, so clear it again.
                    self.clear(PageRange::single(q), false)?;
                    continue;
                }
                if let Some(h) = self.hold(q)? {
                    if h.kind() == sbma_core::Kind::Unbacked {
                        break h;
                    }
                    self.end_op(q, release_event(h));
                }
            };
            let src = loop {
                match self.hold(p) {
                    Ok(Some(s)) => break s,
                    Ok(None) => {}
                    Err(e) => {
                        self.end_op(q, Event::DropComplete);
                        return Err(e);
                    }
                }
            };
            held.push((src, dst));
        }
        Ok(())
    }

    /// Holds page `p` (waiting while it is busy); `None` if it changed
    /// under the attempt (try again). A resident page leaves the policy.
    fn hold(&self, p: PageIndex) -> Result<Option<PageState>, Error> {
        let s = self.table.state(p);
        match transition(s, Event::Hold) {
            Outcome::Apply(t) => {
                if self.table.commit(p, &t).is_err() {
                    return Ok(None);
                }
                if s.is_resident() {
                    self.policy.lock().forget(p);
                }
                Ok(Some(t.to))
            }
            Outcome::Busy => {
                self.wait_while_busy(p);
                Ok(None)
            }
            Outcome::Pinned => Err(Error::Pinned),
            Outcome::Done | Outcome::Illegal => unreachable!("hold refused in {s:?}"),
        }
    }

    /// Moves the held pages of `from` to `to..`, run by run; returns how
    /// many pages (a prefix) now have their contents at `to`, and the
    /// error that stopped it, if any.
    fn move_held(
        &self,
        from: PageRange,
        to: PageIndex,
        held: &[(PageState, PageState)],
    ) -> (usize, Option<Error>) {
        let mut i = 0;
        while i < held.len() {
            let how = Treatment::of(held[i].0);
            let mut j = i + 1;
            while j < held.len() && Treatment::of(held[j].0) == how {
                j += 1;
            }
            let (a, b) = (
                PageRange::new(PageIndex(from.start.0 + i), PageCount(j - i)),
                PageRange::new(PageIndex(to.0 + i), PageCount(j - i)),
            );
            let (moved, error) = self.move_run(a, b, how);
            // Skipped pages read as zeros in both places: nothing to commit.
            if moved > 0 && how != Treatment::Skip {
                for k in 0..moved {
                    self.commit_move(
                        PageIndex(a.start.0 + k),
                        PageIndex(b.start.0 + k),
                        held[i + k].0,
                        how,
                    );
                }
                self.note_touched(b.start.0 + moved);
                let backed = held[i..i + moved].iter().any(|h| h.0.is_backed());
                let first = PageRange::new(a.start, PageCount(moved));
                if backed {
                    if let Err(e) = self.punch_hole(first) {
                        // The contents are in place; the old copies stay
                        // on disk, unreferenced (space, not data).
                        let op = "releasing the old store copies of moved pages";
                        return (
                            i + moved,
                            Some(Error::Io {
                                op,
                                source: e.errno,
                            }),
                        );
                    }
                }
            }
            if let Some(e) = error {
                return (i + moved, Some(e));
            }
            i = j;
        }
        (held.len(), None)
    }

    /// Moves one run of held pages needing the same treatment; returns the
    /// pages moved (a prefix) and the error that stopped the rest.
    fn move_run(&self, a: PageRange, b: PageRange, how: Treatment) -> (usize, Option<Error>) {
        let n = a.count.get();
        let (slot, prot) = match how {
            Treatment::Skip => return (n, None),
            Treatment::Slot => (true, None),
            Treatment::Memory { prot, slot } => (slot, Some(prot)),
        };
        let (from_off, to_off, len) = (self.offset(a.start), self.offset(b.start), self.bytes(a));
        if slot {
            let r = self
                .preserve(to_off, len as u64)
                .map_err(|e| e.errno)
                .and_then(|()| {
                    sys::copy_within_file(self.store.as_fd(), from_off, to_off, len as u64)
                });
            if let Err(e) = r {
                let _ = sys::punch_hole(self.store.as_fd(), to_off, len as u64);
                let op = "copying store copies to a new place (copy_file_range)";
                return (0, Some(Error::Io { op, source: e }));
            }
        }
        let Some(prot) = prot else {
            Counters::add(&self.counters.pages_moved, n as u64);
            return (n, None);
        };
        // SAFETY: both runs are held (busy), inside the reservation; the
        // source pages are resident with `prot`, the target's are not.
        let r = unsafe {
            self.mem()
                .relocate(self.addr(a.start), self.addr(b.start), len, prot)
        };
        let moved = match r {
            Ok(()) => n,
            Err((bytes, _)) => bytes >> self.page.shift(),
        };
        Counters::add(&self.counters.pages_moved, moved as u64);
        match r {
            Ok(()) => (n, None),
            Err((_, e)) => {
                if slot {
                    let rest = PageRange::new(PageIndex(b.start.0 + moved), PageCount(n - moved));
                    let _ = sys::punch_hole(
                        self.store.as_fd(),
                        self.offset(rest.start),
                        self.bytes(rest) as u64,
                    );
                }
                (
                    moved,
                    Some(Error::Map {
                        op: "mremap",
                        source: e,
                    }),
                )
            }
        }
    }

    /// Commits the move of held page `p` (held as `was`) to held page `q`.
    /// The budget is left alone: `q` takes `p`'s charge.
    fn commit_move(&self, p: PageIndex, q: PageIndex, was: PageState, how: Treatment) {
        debug_assert_ne!(how, Treatment::Skip);
        let slot = !matches!(how, Treatment::Memory { slot: false, .. });
        loop {
            let cur = self.table.state(q);
            let Outcome::Apply(t) = sbma_core::moved_in(cur, was, slot) else {
                unreachable!("moving {was:?} into {cur:?}");
            };
            if self.table.commit(q, &t).is_ok() {
                if t.actions.contains(Actions::WAKE) {
                    sys::futex_wake_all(self.table.word(q));
                }
                break;
            }
        }
        if was.is_resident() {
            self.policy.lock().admit(q);
        }
        // The store copy was released with the run (`move_held`); the
        // charge went to `q`.
        let a = self.table.apply(p, Event::MovedAway);
        debug_assert!(matches!(a.outcome, Outcome::Apply(_)), "{:?}", a.observed);
        self.end_op(p, Event::DropComplete);
    }

    /// Lets go of the held pairs from the `moved`-th on, unchanged.
    fn let_go(
        &self,
        from: PageRange,
        to: PageIndex,
        held: &[(PageState, PageState)],
        moved: usize,
    ) {
        for (i, &(src, dst)) in held.iter().enumerate() {
            let (p, q) = (PageIndex(from.start.0 + i), PageIndex(to.0 + i));
            let skipped = i < moved && Treatment::of(src) == Treatment::Skip;
            if i >= moved || skipped {
                self.end_op(p, release_event(src));
                if src.is_resident() {
                    self.policy.lock().admit(p);
                }
                self.end_op(q, release_event(dst));
            }
        }
    }

    /// Pins (`true`) or unpins every page of `range`.
    pub(crate) fn pin(&self, range: PageRange, on: bool) {
        let event = if on { Event::Pin } else { Event::Unpin };
        for p in range.iter() {
            let a = self.table.apply(p, event);
            debug_assert!(
                matches!(a.outcome, Outcome::Apply(_)),
                "{event:?} on {:?}",
                a.observed
            );
        }
    }

    /// Runs actions through the backend, uncharging into the budget.
    ///
    /// A load (`READ_IN` or `ZERO_FILL` with its grant) on a backend whose
    /// fill installs the final access runs through [`Load`]: one
    /// `UFFDIO_COPY`, writable or not, instead of a copy and a protection
    /// change.
    fn run(&self, range: PageRange, actions: Actions) -> Result<(), ActionError> {
        let (budget, shift) = (self.budget(), self.page.shift());
        let mut uncharge = |n: PageCount| budget.uncharge(n.get() << shift);
        let fills = actions.contains(Actions::READ_IN) || actions.contains(Actions::ZERO_FILL);
        if fills && self.mem().fill_grants_access() {
            let load = Load {
                arena: self,
                writable: actions.contains(Actions::GRANT_WRITE),
            };
            run_actions(&load, range, actions, &mut uncharge)
        } else {
            run_actions(self, range, actions, &mut uncharge)
        }
    }

    fn fill_range(&self, range: PageRange, writable: bool) -> Result<(), ActionError> {
        let (addr, len, off) = (
            self.addr(range.start),
            self.bytes(range),
            self.offset(range.start),
        );
        let t0 = sys::now_ns();
        let staged = self.mem().uses_staging();
        let slot = self.staging.as_ref().filter(|_| staged).map(|s| {
            debug_assert!(len <= s.slot_len());
            s.acquire()
        });
        let buf = slot.as_ref().map_or(core::ptr::null_mut(), |s| s.as_ptr());
        // SAFETY: the slot is ours and `len` fits in it; the target range
        // is busy and not yet accessible (see `Memory::fill`).
        let r = unsafe {
            self.mem()
                .fill(self.store.as_fd(), off, addr, len, buf, writable)
        }
        .map_err(io);
        drop(slot);
        Counters::add(&self.counters.read_ns, sys::now_ns() - t0);
        if r.is_ok() {
            Counters::add(&self.counters.pages_read, range.count.get() as u64);
            Counters::add(&self.counters.bytes_read, len as u64);
        }
        r
    }

    fn zero_range(&self, range: PageRange, writable: bool) -> Result<(), ActionError> {
        // SAFETY: the range is busy and not yet accessible.
        unsafe {
            self.mem()
                .zero(self.addr(range.start), self.bytes(range), writable)
        }
        .map_err(io)?;
        Counters::add(&self.counters.pages_zeroed, range.count.get() as u64);
        Ok(())
    }

    /// Copies slots about to be rewritten aside for forked children that
    /// may still read them (see `snapshot`).
    fn preserve(&self, offset: u64, len: u64) -> Result<(), ActionError> {
        let n = self
            .snapshots
            .preserve(self.store.as_fd(), offset, len)
            .map_err(io)?;
        Counters::add(&self.counters.pages_preserved, n as u64);
        Ok(())
    }

    /// Checks the page table and the budget against each other (tests; the
    /// program's own threads must be at rest).
    pub fn check_invariants(&self) -> Result<(), String> {
        // No prefetch in flight and no eviction batch (the writer's
        // included) half done while the table is audited.
        self.quiesce();
        let _evictions = self.reclaim.lock().map_err(|_| "re-entered".to_string())?;
        let census = self.table.audit().map_err(|e| e.to_string())?;
        if census.busy != 0 {
            return Err(format!("{} pages busy at rest", census.busy));
        }
        let charged = self.table.charged_bytes(self.page);
        if self.budget().resident() < charged {
            return Err(format!(
                "budget {} B below resident pages {} B",
                self.budget().resident(),
                charged
            ));
        }
        Ok(())
    }
}

/// What moving one held page takes ([`Arena::relocate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Treatment {
    /// Nothing: it reads as zeros (unbacked, or clean and never written),
    /// and so does the target.
    Skip,
    /// Its store copy (evicted).
    Slot,
    /// Its memory, with this access, and its store copy if `slot`
    /// (clean pages; a dirty page's older copy is dropped instead).
    Memory { prot: Protection, slot: bool },
}

impl Treatment {
    fn of(s: PageState) -> Treatment {
        use sbma_core::Kind;
        match s.kind() {
            Kind::Unbacked => Treatment::Skip,
            Kind::Clean if !s.is_backed() => Treatment::Skip,
            Kind::Clean => Treatment::Memory {
                prot: Protection::Read,
                slot: true,
            },
            Kind::Dirty => Treatment::Memory {
                prot: Protection::ReadWrite,
                slot: false,
            },
            Kind::Evicted => Treatment::Slot,
        }
    }
}

/// The event that lets a held page go unchanged (the end of its op).
fn release_event(held: PageState) -> Event {
    if held.is_resident() {
        Event::LoadComplete
    } else {
        Event::DropComplete
    }
}

/// `n` zero words straight from the allocator's zeroed memory: untouched
/// parts of the allocation bitmap cost no memory.
fn zeroed_bitmap(n: usize) -> Box<[AtomicU64]> {
    bytemuck::allocation::zeroed_slice_box(n)
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: the arena owns the reservation; the registry entry was
        // removed before the arena is dropped (Pager's Drop), so no handler
        // can be using it.
        let _ = unsafe { sys::unmap(self.base, self.len) };
    }
}

/// Consecutive pages in a `Clear` op, released together.
struct Cleared {
    run: PageRange,
    /// The union of their actions.
    actions: Actions,
    /// How many of them were charged.
    charged: usize,
}

/// A backend failure, remembering which kind of step failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActionError {
    errno: Errno,
    protect: bool,
}

impl core::fmt::Display for ActionError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", self.errno)
    }
}

fn io(errno: Errno) -> ActionError {
    ActionError {
        errno,
        protect: false,
    }
}

impl PageBackend for Arena {
    type Error = ActionError;
    const DISCARD_ZEROES: bool = true;

    fn protect(&self, range: PageRange, prot: Protection) -> Result<(), ActionError> {
        // SAFETY: the range is inside the reservation and busy (no other
        // thread changes it); managed memory is only reached by raw pointers.
        unsafe {
            self.mem()
                .protect(self.addr(range.start), self.bytes(range), prot)
        }
        .map_err(|errno| ActionError {
            errno,
            protect: true,
        })
    }

    fn read_in(&self, range: PageRange) -> Result<(), ActionError> {
        self.fill_range(range, false)
    }

    fn zero_fill(&self, range: PageRange) -> Result<(), ActionError> {
        self.zero_range(range, false)
    }

    fn write_back(&self, range: PageRange) -> Result<(), ActionError> {
        let (addr, len, off) = (
            self.addr(range.start),
            self.bytes(range),
            self.offset(range.start),
        );
        if self.in_child() {
            // Never reached (`may_evict`): the file is the parent's.
            return Err(io(Errno::ROFS));
        }
        let t0 = sys::now_ns();
        self.preserve(off, len as u64)?;
        // SAFETY: the run is write-protected and busy: nobody writes it
        // while the kernel copies it out.
        let r = unsafe { sys::write_full(self.store.as_fd(), addr, len, off) }.map_err(io);
        Counters::add(&self.counters.write_ns, sys::now_ns() - t0);
        if r.is_ok() {
            Counters::add(&self.counters.pages_written, range.count.get() as u64);
            Counters::add(&self.counters.bytes_written, len as u64);
            Counters::add(&self.counters.write_runs, 1);
        }
        r
    }

    fn discard(&self, range: PageRange) -> Result<(), ActionError> {
        // SAFETY: the range is busy and inaccessible; its contents are
        // either in the store or meant to be dropped.
        unsafe {
            self.mem()
                .discard(self.addr(range.start), self.bytes(range))
        }
        .map_err(io)
    }

    fn punch_hole(&self, range: PageRange) -> Result<(), ActionError> {
        if self.in_child() {
            // The file is the parent's: leave its slots alone.
            return Ok(());
        }
        let (off, len) = (self.offset(range.start), self.bytes(range) as u64);
        self.preserve(off, len)?;
        sys::punch_hole(self.store.as_fd(), off, len).map_err(io)
    }
}

/// The arena's backend for one load on a memory whose fill installs the
/// final access ([`Memory::fill_grants_access`]): the fill is writable or
/// not as the load's grant says, and the grant itself is then done.
struct Load<'a> {
    arena: &'a Arena,
    writable: bool,
}

impl PageBackend for Load<'_> {
    type Error = ActionError;
    const DISCARD_ZEROES: bool = true;

    fn protect(&self, range: PageRange, prot: Protection) -> Result<(), ActionError> {
        match prot {
            // The fill installed it.
            Protection::Read | Protection::ReadWrite => Ok(()),
            Protection::None => self.arena.protect(range, prot),
        }
    }

    fn read_in(&self, range: PageRange) -> Result<(), ActionError> {
        self.arena.fill_range(range, self.writable)
    }

    fn zero_fill(&self, range: PageRange) -> Result<(), ActionError> {
        self.arena.zero_range(range, self.writable)
    }

    fn write_back(&self, range: PageRange) -> Result<(), ActionError> {
        self.arena.write_back(range)
    }

    fn discard(&self, range: PageRange) -> Result<(), ActionError> {
        self.arena.discard(range)
    }

    fn punch_hole(&self, range: PageRange) -> Result<(), ActionError> {
        self.arena.punch_hole(range)
    }
}
