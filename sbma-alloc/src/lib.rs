//! # sbma-alloc
//!
//! A general-purpose allocator whose memory is storage-backed: blocks live
//! in an [`sbma_pager`] arena, so a program's heap can be larger than its
//! memory budget, and in-core it runs from thread-local heaps without locks.
//!
//! ```no_run
//! use sbma_alloc::SbmaAlloc;
//! use sbma_pager::Pager;
//! let alloc = SbmaAlloc::builder()
//!     .pager(Pager::builder().budget(64 << 20))
//!     .build()?;
//! let mut v = allocator_api2::vec::Vec::new_in(&alloc);
//! v.extend(0..1_000_000u64);                     // 8 MB, paged as needed
//! assert_eq!(v.iter().sum::<u64>(), 499_999_500_000);
//! # Ok::<(), sbma_alloc::Error>(())
//! ```
//!
//! Or for a whole program (configured by `SBMA_BUDGET`, `SBMA_PAGE_SIZE`,
//! `SBMA_DIR`, `SBMA_POLICY`, `SBMA_DECAY`; a bad value is a one-line
//! message and an abort at the first allocation):
//!
//! ```no_run
//! #[global_allocator]
//! static GLOBAL: sbma_alloc::SbmaAlloc = sbma_alloc::SbmaAlloc::new();
//! # fn main() {}
//! ```
//!
//! ## Model
//! - The pager arena is cut into *spans* (64 KiB, or one SBMA page if
//!   larger). Requests up to 16 KiB are *small*: rounded to a size class
//!   ([`SizeClasses`], default [`QuarterClasses`]) and served from a span of
//!   that class owned by the calling thread's heap. Larger requests are
//!   *large*: whole spans of their own, usable up to whole SBMA pages.
//! - Metadata (span kinds, free bitmaps, heaps) lives in anonymous mappings
//!   outside managed memory: `free` never loads an evicted block, and the
//!   pager's fault path never faults on allocator state.
//! - Freed memory is kept for reuse up to a *decay* cap (default 1/8 of the
//!   budget); beyond it freed runs are cleared through the pager (memory
//!   and disk released, zeros next time).
//! - Invalid and double frees abort with one line (`sbma: free(): double
//!   free 0x...`), like glibc.
//! - Allocations the allocator must not serve from managed memory (during
//!   its own start-up, on the pager's background threads, in a forked
//!   child) go to glibc's allocator (`__libc_malloc`); `free` recognizes
//!   them by address.
//!
//! ## Syscalls into allocated memory (read this before `#[global_allocator]`)
//! With the pager's signal backend, a page that is not resident is
//! inaccessible (`PROT_NONE`), and the kernel does not raise a signal when a
//! *syscall* touches it: `read(2)`, `readlink(2)`, `execve(2)` and the like
//! fail with `EFAULT` instead. A buffer the program has written to since
//! it was last evicted is fine; a fresh or evicted one is not. Make such a
//! buffer ready first with [`sbma_pager::Pager::prepare_for_kernel`]
//! (through [`SbmaAlloc::pager`]). std does not know to do that, so a
//! program whose *global* allocator is an `SbmaAlloc` can see `EFAULT` from
//! std calls that fill heap buffers (`std::env::current_exe`,
//! `read_to_end`, ...). The userfaultfd backend (issue 6) removes this
//! limit: there the kernel waits for the page like the program does.
#![deny(unsafe_code)]

mod cfamily;
mod classes;
mod core;
mod divide;
mod early;
mod heap;
mod runs;
mod rust;
mod span;
mod stats;
mod sys;

pub use crate::core::MOVE_MIN;
pub use classes::{
    ClassTable, MAX_CLASSES, MAX_SMALL, MIN_ALIGN, PowerOfTwoClasses, QuarterClasses, SizeClasses,
};
pub use sbma_pager;
pub use stats::{AllocStats, ClassStats};
pub use sys::fallback;

use crate::core::{Busy, Core};
use crate::heap::Heap;
use ::core::cell::UnsafeCell;
use ::core::mem::MaybeUninit;
use ::core::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use sbma_pager::PagerBuilder;

/// What can go wrong when an allocator starts.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The pager could not start (bad configuration, unwritable directory,
    /// budget too small, ...).
    Pager(sbma_pager::Error),
    /// Mapping the allocator's metadata failed.
    Metadata(rustix::io::Errno),
    /// No pthread key is left for the thread-exit hook.
    TooManyThreadKeys,
    /// A size-class table breaks its requirements.
    SizeClasses(String),
    /// A bad `SBMA_*` value for the allocator itself.
    Config {
        /// The variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Pager(e) => write!(f, "{e}"),
            Error::Metadata(e) => write!(f, "mapping allocator metadata: {e}"),
            Error::TooManyThreadKeys => write!(f, "no pthread key left for the thread-exit hook"),
            Error::SizeClasses(e) => write!(f, "size classes: {e}"),
            Error::Config {
                name,
                value,
                reason,
            } => write!(f, "{name} `{value}`: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// Configures an [`SbmaAlloc`].
#[derive(Clone, Debug)]
pub struct SbmaAllocBuilder {
    pager: PagerBuilder,
    classes: Result<ClassTable, String>,
    decay: Option<usize>,
}

impl Default for SbmaAllocBuilder {
    fn default() -> Self {
        SbmaAllocBuilder {
            pager: PagerBuilder::default(),
            classes: ClassTable::new::<QuarterClasses>(),
            decay: None,
        }
    }
}

impl SbmaAllocBuilder {
    /// The pager to build (budget, page size, directory, policy, arena
    /// size).
    pub fn pager(mut self, pager: PagerBuilder) -> Self {
        self.pager = pager;
        self
    }

    /// The size-class table (default [`QuarterClasses`]).
    pub fn size_classes<C: SizeClasses>(mut self) -> Self {
        self.classes = ClassTable::new::<C>();
        self
    }

    /// How many bytes of freed memory may stay dirty for reuse before
    /// freed runs are cleared through the pager (default: 1/8 of the
    /// budget).
    pub fn decay(mut self, bytes: usize) -> Self {
        self.decay = Some(bytes);
        self
    }

    /// The pager's `SBMA_*` variables, plus `SBMA_DECAY` (bytes, with an
    /// optional K/M/G suffix).
    ///
    /// # Errors
    /// [`Error::Pager`] or [`Error::Config`] naming the bad variable.
    pub fn from_env() -> Result<Self, Error> {
        let mut b = SbmaAllocBuilder {
            pager: PagerBuilder::from_env().map_err(Error::Pager)?,
            ..SbmaAllocBuilder::default()
        };
        if let Some(v) = std::env::var_os("SBMA_DECAY") {
            let text = v.to_string_lossy().into_owned();
            let bytes =
                sbma_pager::sbma_core::units::parse_size(&text).map_err(|e| Error::Config {
                    name: "SBMA_DECAY",
                    value: text.clone(),
                    reason: e.to_string(),
                })?;
            b.decay = Some(bytes);
        }
        Ok(b)
    }

    fn build_core(self) -> Result<Core, Error> {
        let _busy = Busy::enter();
        let classes = self.classes.map_err(Error::SizeClasses)?;
        let pager = self.pager.build().map_err(Error::Pager)?;
        let decay = self.decay.unwrap_or(pager.stats().budget as usize / 8);
        Core::new(pager, classes, decay)
    }

    /// Starts the allocator.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn build(self) -> Result<SbmaAlloc, Error> {
        let core = self.build_core()?;
        Ok(SbmaAlloc {
            id: AtomicU64::new(core.id),
            state: AtomicU8::new(READY),
            core: UnsafeCell::new(MaybeUninit::new(core)),
            config: SbmaAllocBuilder::from_env,
        })
    }
}

/// `SbmaAlloc::id` before the core starts (no core has it).
const NOT_STARTED: u64 = u64::MAX;

const UNINIT: u8 = 0;
const STARTING: u8 = 1;
const READY: u8 = 2;

/// A storage-backed allocator: the malloc family ([`SbmaAlloc::malloc`],
/// ...), `GlobalAlloc` and `allocator_api2::alloc::Allocator` (for `&SbmaAlloc`).
pub struct SbmaAlloc {
    /// The core's id once started ([`NOT_STARTED`] before): what the fast
    /// paths compare the thread's heap with (see [`SbmaAlloc::local`]).
    id: AtomicU64,
    state: AtomicU8,
    core: UnsafeCell<MaybeUninit<Core>>,
    config: fn() -> Result<SbmaAllocBuilder, Error>,
}

// SAFETY: the core is written once, before `state` becomes READY (release),
// and only read after (acquire); everything in it is thread-safe.
#[allow(unsafe_code, reason = "the lazily started core is shared")]
unsafe impl Sync for SbmaAlloc {}
// SAFETY: as above; nothing in the core is tied to a thread.
#[allow(unsafe_code, reason = "the lazily started core is shared")]
unsafe impl Send for SbmaAlloc {}

impl std::fmt::Debug for SbmaAlloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SbmaAlloc")
            .field("started", &self.started())
            .finish_non_exhaustive()
    }
}

impl Default for SbmaAlloc {
    fn default() -> Self {
        SbmaAlloc::new()
    }
}

impl SbmaAlloc {
    /// An allocator that starts at its first allocation, configured from
    /// the environment ([`SbmaAllocBuilder::from_env`]); for
    /// `#[global_allocator]`. A bad configuration aborts with a one-line
    /// message naming the variable.
    pub const fn new() -> SbmaAlloc {
        SbmaAlloc::with_config(SbmaAllocBuilder::from_env)
    }

    /// An allocator that starts at its first allocation with the settings
    /// `config` returns (called once, on the first allocating thread; what
    /// it allocates comes from glibc's allocator). For a
    /// `#[global_allocator]` configured in code:
    ///
    /// ```no_run
    /// use sbma_alloc::{SbmaAlloc, SbmaAllocBuilder};
    /// fn config() -> Result<SbmaAllocBuilder, sbma_alloc::Error> {
    ///     Ok(SbmaAlloc::builder().pager(sbma_pager::Pager::builder().budget(1 << 30)))
    /// }
    /// #[global_allocator]
    /// static GLOBAL: SbmaAlloc = SbmaAlloc::with_config(config);
    /// # fn main() {}
    /// ```
    pub const fn with_config(config: fn() -> Result<SbmaAllocBuilder, Error>) -> SbmaAlloc {
        SbmaAlloc {
            id: AtomicU64::new(NOT_STARTED),
            state: AtomicU8::new(UNINIT),
            core: UnsafeCell::new(MaybeUninit::uninit()),
            config,
        }
    }

    /// A builder with the defaults.
    pub fn builder() -> SbmaAllocBuilder {
        SbmaAllocBuilder::default()
    }

    /// Whether the allocator has started.
    pub fn started(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }

    #[inline]
    fn core(&self) -> Option<&Core> {
        match self.ready() {
            Some(core) => Some(core),
            None => self.start(),
        }
    }

    /// The core if it has started (never starts it).
    #[inline(always)]
    fn ready(&self) -> Option<&Core> {
        if self.state.load(Ordering::Acquire) == READY {
            // SAFETY: written before READY was published (acquire above).
            #[allow(unsafe_code, reason = "see above")]
            return Some(unsafe { (*self.core.get()).assume_init_ref() });
        }
        None
    }

    /// The core and the calling thread's heap of it, if the thread has
    /// one: one thread-local load and one compare, the fast paths' entry.
    #[inline(always)]
    fn local(&self) -> Option<(&Core, &Heap)> {
        let h = core::current_heap(self.id.load(Ordering::Relaxed))?;
        // SAFETY: the thread holds a heap of this allocator's core, so it
        // saw the core started (`current_heap`): the core was written
        // before READY, which this thread acquired. The heap lives in the
        // core's heap mapping.
        #[allow(unsafe_code, reason = "see above")]
        Some(unsafe { ((*self.core.get()).assume_init_ref(), &*h) })
    }

    #[cold]
    #[inline(never)]
    fn start(&self) -> Option<&Core> {
        ::core::hint::black_box(&early::START_GLOBAL_EARLY);
        if Busy::active() || sbma_pager::is_pager_thread() {
            return None;
        }
        if self
            .state
            .compare_exchange(UNINIT, STARTING, Ordering::Acquire, Ordering::Acquire)
            .is_err()
        {
            // Another thread is starting it: its allocations meanwhile come
            // from the fallback.
            return None;
        }
        let _busy = Busy::enter();
        match (self.config)().and_then(SbmaAllocBuilder::build_core) {
            Ok(core) => {
                let id = core.id;
                // SAFETY: we won the STARTING state: no one else writes or
                // reads the core until READY.
                #[allow(unsafe_code, reason = "see above")]
                unsafe {
                    (*self.core.get()).write(core)
                };
                self.id.store(id, Ordering::Relaxed);
                self.state.store(READY, Ordering::Release);
                self.core()
            }
            Err(e) => sys::fatal_message(&e.to_string()),
        }
    }

    /// The pager under the allocator (its statistics, explicit eviction,
    /// `prepare_for_kernel` for buffers handed to syscalls).
    pub fn pager(&self) -> Option<&sbma_pager::Pager> {
        self.core().map(|c| &c.pager)
    }

    /// Whether `p` points into this allocator's arena.
    pub fn owns(&self, p: *const u8) -> bool {
        self.core()
            .is_some_and(|c| c.spans.index_of(p as usize).is_some())
    }
}

impl Drop for SbmaAlloc {
    fn drop(&mut self) {
        if *self.state.get_mut() == READY {
            // SAFETY: started, and no one can use it any more (`&mut`).
            #[allow(unsafe_code, reason = "see above")]
            unsafe {
                self.core.get_mut().assume_init_drop()
            };
        }
    }
}
