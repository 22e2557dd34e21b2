//! # sbma-pager
//!
//! Storage-backed memory: regions larger than the memory budget, paged to a
//! backing file by the library itself.
//!
//! A [`Pager`] owns one *arena*: a large reservation (`mmap(PROT_NONE,
//! MAP_NORESERVE)`) with one state word per SBMA page (`sbma_core`'s
//! `PageTable`) and one sparse, unlinked backing file (`O_TMPFILE`) in which
//! page `i` lives at offset `i × page_size`. [`Pager::alloc`] carves
//! [`Region`]s out of it. Every page starts inaccessible; the first access
//! faults, the SIGSEGV handler loads the page (zeros if it was never
//! written) and grants access: reads make it readable (clean), writes make
//! it writable (dirty, one fault). When admitting a page would exceed the
//! budget, victims chosen by the eviction policy leave memory: clean ones
//! are dropped without I/O, dirty ones are write-protected, written in
//! contiguous runs, then dropped.
//!
//! ```no_run
//! use sbma_pager::Pager;
//! let pager = Pager::builder().budget(64 << 20).build()?;
//! let region = pager.alloc(256 << 20)?;          // 4x the budget
//! let p = region.as_mut_ptr();
//! for i in (0..region.len()).step_by(4096) {
//!     // SAFETY: inside the region, which lives until the end of scope.
//!     unsafe { p.add(i).write(i as u8) };        // faults load and evict pages
//! }
//! println!("{:?}", pager.stats());
//! # Ok::<(), sbma_pager::Error>(())
//! ```
//!
//! Data invariants (see `docs/page-states.md`): fills are atomic (the page
//! stays inaccessible until it is complete), no write is lost (a page is
//! write-protected before it is written back and dropped only after), and an
//! I/O error is an error: a fault that cannot be resolved aborts with a
//! one-line message naming the address and the errno, explicit calls return
//! [`Error`].
//!
//! After `fork`, the child keeps paging its copy of the memory: pages
//! are read from the parent's backing file through a *fork snapshot* (the
//! parent copies a slot aside before rewriting it while the child has not
//! exec'd, so the child always reads the data of its fork), clean pages are
//! dropped to stay within the budget, and pages the child dirties stay
//! resident (it cannot write the parent's file; a child dirtying more than
//! the budget goes over it). [`Pager::touch`] and
//! [`Pager::prepare_for_kernel`] work in the child; allocation, explicit
//! eviction and clearing return [`Error::Forked`]; dropping regions or the
//! pager in the child leaves the parent's file alone. With more than
//! 16 children alive that have not exec'd, a further child gets no
//! snapshot and aborts with a one-line message when it touches a page it
//! would have to read. See `docs/fork.md`.
//!
//! Syscalls writing into managed memory (`read`, `stat`, ...) would fail
//! with `EFAULT` on an inaccessible page: use [`Pager::prepare_for_kernel`]
//! first, which makes the buffer resident and accessible and keeps it so
//! until the returned guard drops.
#![deny(unsafe_code)]

mod altstack;
mod arena;
mod bell;
mod error;
mod fault_path;
mod fork;
mod group;
mod lock;
mod memory;
mod recent;
mod region;
mod registry;
mod service;
mod signals;
mod snapshot;
mod staging;
mod stats;
mod streams;
mod sys;
mod uffd;

pub use arena::{Access, is_pager_thread};
pub use error::{Error, PartlyMoved};
pub use fault_path::in_fault_path;

/// Gives the calling thread an alternate signal stack of sbma's (64 KiB,
/// outside managed memory) unless it has one: for an interposed
/// `sigaltstack` that refuses a stack in managed memory.
pub fn ensure_altstack() {
    altstack::ensure();
}
pub use group::{Collected, Group, MAX_MEMBERS, Member, segment_name};
pub use memory::{Backend, FillMethod};
pub use sbma_core;
pub use sbma_core::PolicyKind;
pub use signals::interpose as interpose_sigaction;
pub use stats::Stats;

use arena::{Arena, ArenaConfig, MemoryChoice, Workers};
use region::FreeRanges;
use sbma_core::{LocalBudget, PageCount, PageIndex, PageRange, PageSize};
use service::{PeerService, Service};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The SBMA page size used unless configured (`SBMA_PAGE_SIZE`).
pub const DEFAULT_PAGE_SIZE: usize = 16 << 10;
/// The budget used unless configured (`SBMA_BUDGET`).
pub const DEFAULT_BUDGET: usize = 256 << 20;
/// Pages an arena reserves unless `max_size` is set: 2^20 (16 GiB of
/// address space at the default 16 KiB pages; `max_size` changes it).
pub const DEFAULT_ARENA_PAGES: usize = 1 << 20;
/// The fewest pages a budget must hold: one instruction can touch two
/// pages of a source and two of a destination (`rep movs` across page
/// boundaries), and all four must be resident at once for it to complete.
pub const MIN_BUDGET_PAGES: usize = 4;

/// Configures a [`Pager`].
#[derive(Clone, Debug)]
pub struct PagerBuilder {
    budget: usize,
    page_size: usize,
    dir: Option<PathBuf>,
    policy: PolicyKind,
    max_size: Option<usize>,
    fill: Option<FillMethod>,
    backend: Backend,
    group: Option<String>,
    reclaim_batch: Option<usize>,
    direct_io: bool,
    background_io: bool,
}

impl Default for PagerBuilder {
    fn default() -> Self {
        PagerBuilder {
            budget: DEFAULT_BUDGET,
            page_size: DEFAULT_PAGE_SIZE,
            dir: None,
            policy: PolicyKind::Clock,
            max_size: None,
            fill: None,
            backend: Backend::Auto,
            group: None,
            reclaim_batch: None,
            direct_io: true,
            background_io: true,
        }
    }
}

impl PagerBuilder {
    /// The resident-memory budget in bytes.
    pub fn budget(mut self, bytes: usize) -> Self {
        self.budget = bytes;
        self
    }

    /// The SBMA page size: a power of two, at least the OS page.
    pub fn page_size(mut self, bytes: usize) -> Self {
        self.page_size = bytes;
        self
    }

    /// The directory for the backing file (default `$TMPDIR`, else `/tmp`).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The eviction policy (default CLOCK).
    pub fn policy(mut self, policy: PolicyKind) -> Self {
        self.policy = policy;
        self
    }

    /// The address space to reserve, i.e. the most that can be allocated
    /// at once (default [`DEFAULT_ARENA_PAGES`] pages).
    pub fn max_size(mut self, bytes: usize) -> Self {
        self.max_size = Some(bytes);
        self
    }

    /// How pages are filled (default: [`FillMethod::SelfMem`] where the
    /// kernel allows it, else [`FillMethod::Remap`]).
    pub fn fill_method(mut self, fill: FillMethod) -> Self {
        self.fill = Some(fill);
        self
    }

    /// The fault backend (default [`Backend::Auto`]: userfaultfd where the
    /// process may use it, else the signal backend; see
    /// [`Stats::backend_note`]).
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Shares the budget with every process whose pager joins the same
    /// group (`SBMA_GROUP`): the budget then bounds them all together, and
    /// a process that runs out asks the members over their share to give
    /// memory back ([`Group`]). Every member must give the same budget.
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Pages evicted at least per reclaim, so write-back happens in runs
    /// (default: a sixteenth of the budget, between 1 and 64 pages).
    pub fn reclaim_batch(mut self, pages: usize) -> Self {
        self.reclaim_batch = Some(pages.max(1));
        self
    }

    /// Whether the backing file is read and written with `O_DIRECT`
    /// (default `true`; ignored where the filesystem refuses it, see
    /// [`Pager::direct_io`]). Direct I/O keeps the backing file out of the
    /// page cache, so the pager's memory use is its budget and nothing
    /// more; buffered I/O lets the kernel cache evicted pages as well.
    pub fn direct_io(mut self, on: bool) -> Self {
        self.direct_io = on;
        self
    }

    /// Whether the pager runs its two background threads (default `true`):
    /// a writer that evicts ahead of need so faults find room, and a
    /// prefetcher that reads ahead of sequential faults. Without them every
    /// eviction and read happens in the faulting thread, which is slower
    /// but makes the statistics of a single-threaded program exact.
    pub fn background_io(mut self, on: bool) -> Self {
        self.background_io = on;
        self
    }

    /// Starts from the defaults and applies the `SBMA_*` environment
    /// variables that are set: `SBMA_BUDGET` and `SBMA_PAGE_SIZE` (sizes such
    /// as `512M`, `64K`), `SBMA_DIR`, `SBMA_POLICY` (`clock`, `lru`, `fifo`,
    /// `all`).
    ///
    /// # Errors
    /// [`Error::Config`] naming the variable whose value is malformed.
    pub fn from_env() -> Result<Self, Error> {
        let mut b = PagerBuilder::default();
        let var = |name: &'static str| std::env::var(name).ok();
        let size = |name: &'static str, v: &str| {
            sbma_core::units::parse_size(v).map_err(|e| Error::Config {
                name,
                value: v.to_owned(),
                reason: e.to_string(),
            })
        };
        if let Some(v) = var("SBMA_BUDGET") {
            b.budget = size("SBMA_BUDGET", &v)?;
        }
        if let Some(v) = var("SBMA_PAGE_SIZE") {
            b.page_size = size("SBMA_PAGE_SIZE", &v)?;
        }
        if let Some(v) = var("SBMA_DIR") {
            if v.is_empty() {
                return Err(Error::Config {
                    name: "SBMA_DIR",
                    value: v,
                    reason: "empty path".into(),
                });
            }
            b.dir = Some(v.into());
        }
        if let Some(v) = var("SBMA_POLICY") {
            b.policy = v
                .parse()
                .map_err(|e: sbma_core::policy::UnknownPolicy| Error::Config {
                    name: "SBMA_POLICY",
                    value: v.clone(),
                    reason: e.to_string(),
                })?;
        }
        if let Some(v) = var("SBMA_GROUP") {
            b.group = Some(v);
        }
        if let Some(v) = var("SBMA_BACKEND") {
            b.backend = v.parse().map_err(|reason| Error::Config {
                name: "SBMA_BACKEND",
                value: v.clone(),
                reason,
            })?;
        }
        Ok(b)
    }

    /// Creates the pager: validates the settings, reserves the arena, opens
    /// the backing file, installs the fault handler.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad page size or size, [`Error::BudgetTooSmall`],
    /// [`Error::Store`] if no file can be created in the directory,
    /// [`Error::Map`] if the reservation fails, [`Error::TooManyArenas`].
    pub fn build(self) -> Result<Pager, Error> {
        let os_page = rustix::param::page_size();
        let page = PageSize::new(self.page_size, os_page).map_err(|e| Error::Config {
            name: "page size",
            value: self.page_size.to_string(),
            reason: e.to_string(),
        })?;
        let minimum = MIN_BUDGET_PAGES * page.bytes();
        if self.budget < minimum {
            return Err(Error::BudgetTooSmall {
                budget: self.budget,
                minimum,
            });
        }
        let pages = match self.max_size {
            Some(bytes) => page.pages_for(bytes).map_err(|e| Error::Config {
                name: "max size",
                value: bytes.to_string(),
                reason: e.to_string(),
            })?,
            None => PageCount(DEFAULT_ARENA_PAGES),
        };
        let dir = self.dir.unwrap_or_else(|| {
            std::env::var_os("TMPDIR").map_or_else(|| "/tmp".into(), PathBuf::from)
        });
        let store = sys::open_unlinked_file(&dir).map_err(|source| Error::Store {
            dir: dir.clone(),
            source,
        })?;
        if self.direct_io {
            // Refused by some filesystems (tmpfs): buffered I/O then.
            sys::set_direct(rustix::fd::AsFd::as_fd(&store));
        }
        let budget_pages = self.budget >> page.shift();
        let (memory, backend_note) = match self.backend {
            Backend::Signal => (
                MemoryChoice::Signal(self.fill.unwrap_or_else(default_fill)),
                None,
            ),
            Backend::Uffd => (
                MemoryChoice::Uffd(uffd::Uffd::open().map_err(|u| Error::Backend {
                    reason: u.reason,
                    source: u.errno,
                })?),
                None,
            ),
            Backend::Auto => match uffd::Uffd::open() {
                Ok(u) => (MemoryChoice::Uffd(u), None),
                Err(u) => (
                    MemoryChoice::Signal(self.fill.unwrap_or_else(default_fill)),
                    Some(u.reason),
                ),
            },
        };
        let group = match &self.group {
            Some(name) => Some(Arc::new(Group::join(name, self.budget)?)),
            None => None,
        };
        let budget: Arc<dyn sbma_core::Budget + Send + Sync> = match &group {
            Some(g) => g.clone(),
            None => Arc::new(LocalBudget::new(self.budget)),
        };
        let arena = Arc::new(Arena::new(ArenaConfig {
            page,
            pages,
            policy: self.policy.build(pages),
            budget,
            group,
            store,
            memory,
            backend_note,
            reclaim_batch: self
                .reclaim_batch
                .unwrap_or((budget_pages / 16).clamp(1, 64)),
        })?);
        altstack::ensure();
        signals::acquire().map_err(|source| Error::Map {
            op: "installing the SIGSEGV handler",
            source,
        })?;
        let Some(slot) = registry::publish(&*arena) else {
            signals::release();
            return Err(Error::TooManyArenas);
        };
        fork::watch();
        // From here on, dropping `inner` undoes whatever was started (the
        // same order as a pager's drop).
        let mut inner = Inner {
            arena,
            workers: None,
            service: None,
            peers: None,
            slot,
            free: Mutex::new(FreeRanges::new(pages)),
        };
        if inner.arena.uffd().is_some() {
            let service = Service::start(&inner.arena).map_err(|source| Error::Map {
                op: "starting the userfaultfd service threads",
                source,
            })?;
            inner.service = Some(service);
        }
        if inner.arena.group.is_some() {
            let peers = PeerService::start(&inner.arena).map_err(|source| Error::Map {
                op: "starting the group service thread",
                source,
            })?;
            inner.peers = Some(peers);
        }
        if self.background_io {
            inner.workers = Some(Workers::start(&inner.arena));
        }
        Ok(Pager {
            inner: Arc::new(inner),
        })
    }
}

/// `SelfMem` if writing through `/proc/self/mem` into an inaccessible page
/// works here (checked once per process), else `Remap`.
fn default_fill() -> FillMethod {
    static PROBE: std::sync::OnceLock<FillMethod> = std::sync::OnceLock::new();
    *PROBE.get_or_init(|| {
        if probe_self_mem() {
            FillMethod::SelfMem
        } else {
            FillMethod::Remap
        }
    })
}

#[allow(unsafe_code, reason = "probing a scratch page of our own")]
fn probe_self_mem() -> bool {
    use rustix::fd::AsFd;
    let Ok(mem) = sys::open_self_mem() else {
        return false;
    };
    let len = rustix::param::page_size();
    let Ok(page) = sys::reserve(len) else {
        return false;
    };
    let data = [0x5Au8; 8];
    // SAFETY: `page` is our own fresh reservation; it is read only after
    // being made readable, and unmapped at the end.
    unsafe {
        let ok = sys::write_full(mem.as_fd(), data.as_ptr(), data.len(), page as u64).is_ok()
            && sys::protect(page, len, sys::Prot::Read).is_ok()
            && core::slice::from_raw_parts(page, data.len()) == data;
        let _ = sys::unmap(page, len);
        ok
    }
}

struct Inner {
    arena: Arc<Arena>,
    workers: Option<Workers>,
    service: Option<Service>,
    peers: Option<PeerService>,
    slot: usize,
    free: Mutex<FreeRanges>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(w) = self.workers.take() {
            w.stop(&self.arena);
        }
        if let Some(p) = self.peers.take() {
            p.stop(&self.arena);
        }
        if let Some(s) = self.service.take() {
            s.stop(&self.arena);
        }
        registry::unpublish(self.slot);
        signals::release();
    }
}

/// A storage-backed memory manager with one arena, one budget and one
/// backing file. Cheap to clone (shared).
#[derive(Clone)]
pub struct Pager {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pager")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Pager {
    /// A builder with the defaults.
    pub fn builder() -> PagerBuilder {
        PagerBuilder::default()
    }

    fn arena(&self) -> &Arena {
        &self.inner.arena
    }

    /// The SBMA page size.
    pub fn page_size(&self) -> usize {
        self.arena().page_size().bytes()
    }

    /// The budget in bytes (the group's, for a group member), without
    /// taking a statistics snapshot.
    pub fn budget(&self) -> usize {
        self.arena().budget_limit()
    }

    /// The fault backend in use (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.arena().backend()
    }

    /// Whether the backing file is read and written with `O_DIRECT` (asked
    /// for by default, see [`PagerBuilder::direct_io`], and granted by the
    /// filesystem).
    pub fn direct_io(&self) -> bool {
        self.arena().direct_io()
    }

    /// The bytes of address space the arena reserves (the most all regions
    /// together can hold).
    pub fn max_size(&self) -> usize {
        self.arena().table().len().get() << self.arena().page_size().shift()
    }

    /// Allocates a region of `len` bytes (rounded up to whole pages),
    /// reading as zeros. A zero-length region owns no page.
    ///
    /// # Errors
    /// [`Error::OutOfAddressSpace`] if the arena has no free range that
    /// large.
    pub fn alloc(&self, len: usize) -> Result<Region, Error> {
        if self.arena().forked() {
            return Err(Error::Forked);
        }
        altstack::ensure();
        let page = self.arena().page_size();
        let too_big = || Error::OutOfAddressSpace {
            requested: len,
            arena: self.arena().table().len().get() << page.shift(),
        };
        let pages = page.pages_for(len).map_err(|_| too_big())?;
        let range = if pages.get() == 0 {
            PageRange::new(PageIndex(0), PageCount(0))
        } else {
            let range = self
                .inner
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take(pages.get())
                .ok_or_else(too_big)?;
            self.arena().set_allocated(range, true);
            range
        };
        Ok(Region {
            pager: self.clone(),
            range,
            len,
        })
    }

    /// The page range covering `[addr, addr + len)`, if it lies in live
    /// regions (and this is the process that created the pager, or a
    /// forked child of it that pages: see the crate doc).
    fn pages(&self, addr: *const u8, len: usize) -> Result<PageRange, Error> {
        let a = self.arena();
        if a.forked() && !a.in_child() {
            return Err(Error::Forked);
        }
        let base = a.base() as usize;
        let start = (addr as usize)
            .checked_sub(base)
            .ok_or(Error::InvalidRange)?;
        let range = a
            .page_size()
            .pages_covering(start, len)
            .map_err(|_| Error::InvalidRange)?;
        let end = range.end().map_err(|_| Error::InvalidRange)?;
        if end.0 > a.table().len().get() || !range.iter().all(|p| a.is_allocated(p)) {
            return Err(Error::InvalidRange);
        }
        Ok(range)
    }

    /// Makes `[addr, addr + len)` resident and accessible for `access`
    /// (SBMA's `mtouch`): loads what is missing, evicting others if needed.
    /// For `Write`, pages are loaded before they become writable, so bytes
    /// that are not overwritten keep their contents.
    ///
    /// # Errors
    /// [`Error::InvalidRange`] outside live regions; [`Error::Io`] if a page
    /// cannot be read, or victims cannot be written back.
    #[doc(alias = "mtouch")]
    pub fn touch(&self, addr: *const u8, len: usize, access: Access) -> Result<(), Error> {
        altstack::ensure();
        let range = self.pages(addr, len)?;
        for p in range.iter() {
            self.arena()
                .resolve(p, access)
                .map_err(arena::FaultError::into_error)?;
        }
        Ok(())
    }

    /// Makes a buffer ready for a syscall that reads (`Read`) or writes
    /// (`Write`) it: resident, accessible, and pinned until the guard
    /// drops, so the kernel never sees an inaccessible page (`EFAULT`).
    /// For `Write` the old contents are loaded first, so a short `read(2)`
    /// leaves the bytes beyond it intact.
    ///
    /// # Errors
    /// As [`touch`](Self::touch); [`Error::NoEvictablePages`] if the pins
    /// would fill the budget.
    pub fn prepare_for_kernel(
        &self,
        addr: *const u8,
        len: usize,
        access: Access,
    ) -> Result<KernelGuard, Error> {
        let range = self.pages(addr, len)?;
        self.arena().pin(range, true);
        let guard = KernelGuard {
            pager: self.clone(),
            range,
        };
        for p in range.iter() {
            self.arena()
                .resolve(p, access)
                .map_err(arena::FaultError::into_error)?;
        }
        Ok(guard)
    }

    /// Evicts the resident, unpinned pages covering `[addr, addr + len)`,
    /// writing dirty ones back. Returns the number of pages dropped.
    ///
    /// A page loaded for *another* thread's fault in the last 2 ms is left
    /// in place: that thread is about to make its access, and taking the
    /// page away again would make it fault again (a thread evicting in a
    /// loop could starve the others). The calling thread's own faults get
    /// no such grace.
    ///
    /// # Errors
    /// [`Error::InvalidRange`]; [`Error::Io`] if a write-back failed (those
    /// pages stay dirty and resident).
    #[doc(alias = "mevict")]
    pub fn evict(&self, addr: *const u8, len: usize) -> Result<usize, Error> {
        if self.arena().forked() {
            return Err(Error::Forked);
        }
        let range = self.pages(addr, len)?;
        self.arena().evict(range)
    }

    /// Evicts every resident, unpinned page of the pager (with the same
    /// grace for pages just loaded for other threads as
    /// [`evict`](Self::evict)).
    ///
    /// # Errors
    /// As [`evict`](Self::evict).
    #[doc(alias = "mevictall")]
    pub fn evict_all(&self) -> Result<usize, Error> {
        if self.arena().forked() {
            return Err(Error::Forked);
        }
        self.arena().evict(self.arena().used())
    }

    /// Discards the contents of the pages lying *entirely* inside
    /// `[addr, addr + len)` (SBMA's `mclear`): they read as zeros next
    /// time, are never written back, and release memory and disk. Bytes of
    /// partially covered pages are kept.
    ///
    /// # Errors
    /// [`Error::InvalidRange`]; [`Error::Pinned`] if such a page is pinned.
    #[doc(alias = "mclear")]
    pub fn clear(&self, addr: *const u8, len: usize) -> Result<(), Error> {
        if self.arena().forked() {
            return Err(Error::Forked);
        }
        let outer = self.pages(addr, len)?;
        let page = self.arena().page_size();
        let start = (addr as usize) - self.arena().base() as usize;
        let first = PageIndex(start.div_ceil(page.bytes()));
        let end = (start + len) >> page.shift();
        if end <= first.0 {
            return Ok(());
        }
        debug_assert!(outer.contains(first));
        self.arena()
            .clear(PageRange::new(first, PageCount(end - first.0)), false)
    }

    /// Bytes of the pages covering `[addr, addr + len)` that are resident
    /// now (from the page table: one load per page, no syscall). A hint:
    /// other threads may change it at once.
    ///
    /// # Errors
    /// [`Error::InvalidRange`].
    pub fn resident_bytes(&self, addr: *const u8, len: usize) -> Result<usize, Error> {
        let range = self.pages(addr, len)?;
        let a = self.arena();
        let resident = range
            .iter()
            .filter(|&p| a.table().state(p).is_resident())
            .count();
        Ok(resident << a.page_size().shift())
    }

    /// Moves the contents of `[src, src + len)` to `[dst, dst + len)`
    /// without copying them through memory: resident pages change place by
    /// `mremap` (page tables move, no byte is copied), evicted ones by
    /// `copy_file_range` of their backing-file slots (no read into memory).
    /// What `dst` held is discarded; afterwards `src` reads as zeros or as
    /// before (the caller clears or reuses it). Both ranges are whole
    /// pages (page-aligned address and length), in live regions, and do
    /// not overlap; the budget does not change. `realloc` of large objects
    /// is built on it.
    ///
    /// Other threads must not access either range meanwhile (faults on
    /// them wait; a thread of the program that accesses them is racing
    /// with the move, as with `memcpy`).
    ///
    /// # Errors
    /// [`PartlyMoved`]: the first `moved` bytes were moved and the rest are
    /// untouched in `src` (the caller copies them), with why: as above
    /// [`Error::InvalidRange`] (then nothing moved), [`Error::Forked`],
    /// [`Error::Pinned`] (a source page is pinned), or the `mremap` or
    /// `copy_file_range` that failed ([`Error::Map`], [`Error::Io`]: an
    /// older kernel, a file system without `copy_file_range`, disk full).
    pub fn relocate(&self, src: *const u8, dst: *const u8, len: usize) -> Result<(), PartlyMoved> {
        let nothing = |error| PartlyMoved { moved: 0, error };
        let page = self.arena().page_size();
        let aligned = |a: *const u8| (a as usize) % page.bytes() == 0;
        if !aligned(src) || !aligned(dst) || len % page.bytes() != 0 {
            return Err(nothing(Error::InvalidRange));
        }
        if len == 0 {
            return Ok(());
        }
        let from = self.pages(src, len).map_err(nothing)?;
        let to = self.pages(dst, len).map_err(nothing)?;
        if from.contains(to.start) || to.contains(from.start) {
            return Err(nothing(Error::InvalidRange));
        }
        self.arena()
            .relocate(from, to.start)
            .map_err(|(pages, error)| PartlyMoved {
                moved: pages << page.shift(),
                error,
            })
    }

    /// Whether `addr` lies in a live region of this pager (SBMA's
    /// `mexist`).
    #[doc(alias = "mexist")]
    pub fn contains(&self, addr: *const u8) -> bool {
        self.pages(addr, 1).is_ok()
    }

    /// Declares this process blocked (`true`, e.g. waiting in MPI) or
    /// running again: in a group, blocked members give memory back first
    /// (SBMA's `sigon`/`sigoff`). No effect outside a group. See also
    /// [`blocked`](Self::blocked).
    pub fn set_blocked(&self, on: bool) {
        if let Some(g) = self.arena().group() {
            g.set_blocked(on);
        }
    }

    /// Whether this is a forked child's copy of the pager (it pages
    /// through a fork snapshot, read-only, and cannot allocate, evict or
    /// clear: see the crate doc).
    pub fn forked(&self) -> bool {
        self.arena().forked()
    }

    /// Whether a syscall that reads or writes non-resident managed memory
    /// would fail with `EFAULT` here, so buffers must go through
    /// [`prepare_for_kernel`](Self::prepare_for_kernel) first: under the
    /// signal backend, and in a forked child that pages (whatever the
    /// backend: userfaultfd does not follow a fork). `false` in a child
    /// that cannot load pages (nothing could help it) and under uffd.
    pub fn kernel_needs_help(&self) -> bool {
        // Cheapest checks first: this runs on every wrapped libc call, and
        // `forked` is a getpid syscall.
        let a = self.arena();
        if a.in_child() {
            a.child_can_read()
        } else if a.backend() == Backend::Uffd {
            // Only a child that ran no fork handler gets here (vfork,
            // clone): it shares the registered memory, whose faults the
            // parent's service threads resolve.
            false
        } else {
            !a.forked()
        }
    }

    /// Whether this process is declared blocked (always `false` outside a
    /// group).
    pub fn is_blocked(&self) -> bool {
        self.group().is_some_and(Group::is_blocked)
    }

    /// Declares this process blocked until the guard drops.
    pub fn blocked(&self) -> BlockedGuard {
        self.set_blocked(true);
        BlockedGuard {
            pager: self.clone(),
        }
    }

    /// The group this pager shares its budget with, if any.
    pub fn group(&self) -> Option<&Group> {
        self.arena().group()
    }

    /// Statistics: faults, I/O, evictions, resident/dirty/peak bytes.
    pub fn stats(&self) -> Stats {
        self.arena().stats()
    }

    /// Checks the page table against its counters and the budget (for
    /// tests; only meaningful when no fault is in flight).
    ///
    /// # Errors
    /// A description of the first disagreement.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.arena().check_invariants()
    }

    fn free(&self, range: PageRange) {
        // In a forked child the backing file is the parent's: leave it
        // (and the child's copy of the memory) alone.
        if range.is_empty() || self.arena().forked() {
            return;
        }
        // Drop the contents (memory and disk) and make the pages
        // inaccessible before anyone else can get them.
        let _ = self.arena().clear(range, true);
        self.arena().set_allocated(range, false);
        self.inner
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .give(range);
    }
}

/// The process is declared blocked while this lives ([`Pager::blocked`]).
#[must_use = "the process counts as running again when the guard drops"]
pub struct BlockedGuard {
    pager: Pager,
}

impl Drop for BlockedGuard {
    fn drop(&mut self) {
        self.pager.set_blocked(false);
    }
}

/// Pages pinned for a syscall by [`Pager::prepare_for_kernel`]; unpinned on
/// drop.
#[must_use = "the pages are unpinned when the guard drops"]
pub struct KernelGuard {
    pager: Pager,
    range: PageRange,
}

impl Drop for KernelGuard {
    fn drop(&mut self) {
        self.pager.arena().pin(self.range, false);
    }
}

/// Storage-backed memory owned by one allocation; freed (contents dropped,
/// memory and disk released) on drop.
pub struct Region {
    pager: Pager,
    range: PageRange,
    len: usize,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("addr", &self.as_ptr())
            .field("len", &self.len)
            .finish()
    }
}

impl Region {
    /// The first byte (dangling but non-null for an empty region).
    pub fn as_ptr(&self) -> *const u8 {
        self.as_mut_ptr()
    }

    /// The first byte, for writing. Accesses fault pages in as needed.
    pub fn as_mut_ptr(&self) -> *mut u8 {
        if self.range.is_empty() {
            return core::ptr::NonNull::dangling().as_ptr();
        }
        let a = self.pager.arena();
        a.base()
            .wrapping_add(self.range.start.0 << a.page_size().shift())
    }

    /// The length asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pager the region belongs to.
    pub fn pager(&self) -> &Pager {
        &self.pager
    }

    /// Grows or shrinks the region in place. Shrinking releases the pages
    /// past the new end (their contents are gone); growing succeeds only if
    /// the pages after the region are free, and the new bytes read as zeros.
    ///
    /// # Errors
    /// [`Error::OutOfAddressSpace`] if the region cannot grow in place
    /// (allocate a new region and copy instead).
    pub fn resize(&mut self, new_len: usize) -> Result<(), Error> {
        if self.pager.arena().forked() {
            return Err(Error::Forked);
        }
        let page = self.pager.arena().page_size();
        let err = || Error::OutOfAddressSpace {
            requested: new_len,
            arena: self.pager.arena().table().len().get() << page.shift(),
        };
        let want = page.pages_for(new_len).map_err(|_| err())?.get();
        let have = self.range.count.get();
        if self.range.is_empty() && want > 0 {
            *self = self.pager.alloc(new_len)?;
            return Ok(());
        }
        if want < have {
            let tail = PageRange::new(PageIndex(self.range.start.0 + want), PageCount(have - want));
            self.pager.free(tail);
        } else if want > have {
            let extra =
                PageRange::new(PageIndex(self.range.start.0 + have), PageCount(want - have));
            let end_ok = extra
                .end()
                .is_ok_and(|e| e.0 <= self.pager.arena().table().len().get());
            let taken = end_ok
                && self
                    .pager
                    .inner
                    .free
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take_at(extra.start.0, extra.count.get());
            if !taken {
                return Err(err());
            }
            self.pager.arena().set_allocated(extra, true);
        }
        self.range.count = PageCount(want);
        self.len = new_len;
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.pager.free(self.range);
    }
}
