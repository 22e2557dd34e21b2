//! [`Memory`]: how an arena's pages are reserved, filled, protected and
//! dropped. This is the part of the pager that differs between the fault
//! backends; the page protocol, the budget, eviction and the backing file
//! are shared (`Arena` drives both through the same `PageBackend` calls).
//!
//! | step | signal backend | uffd backend |
//! |---|---|---|
//! | reservation | `PROT_NONE`, every access faults (SIGSEGV) | read-write, registered missing + WP; missing pages fault to a service thread |
//! | fill (`ReadIn`) | `pread` into staging, then `/proc/self/mem` (or `mremap`) into the still inaccessible page | `pread` into staging, then `UFFDIO_COPY`, write-protected unless the load is for a write |
//! | zeros | nothing: discarded anonymous memory reads as zeros | `UFFDIO_COPY` of a zero buffer, likewise |
//! | `Read` | `mprotect(PROT_READ)` | `UFFDIO_WRITEPROTECT` on |
//! | `ReadWrite` | `mprotect(PROT_READ\|PROT_WRITE)` | `UFFDIO_WRITEPROTECT` off (wakes waiters) |
//! | `None` (revoke) | `mprotect(PROT_NONE)` | nothing: the discard that follows makes the page missing again |
//! | discard | `madvise(MADV_DONTNEED)` | `madvise(MADV_DONTNEED)` |
//!
//! # Requirements (both implementations)
//!
//! The arena calls these on ranges it holds busy (no other thread changes
//! them), inside the reservation, page-aligned.
//! - After `fill`, the range holds the store's bytes; no thread ever
//!   observes a partly filled OS page. It grants no access, or (where
//!   `fill_grants_access`) exactly the access asked for.
//! - After `zero`, the range reads as zeros, with access as after `fill`.
//! - `protect(r, Read)` makes writes fault (to the backend's handler) and
//!   is in force for every thread when it returns; `ReadWrite` lets them
//!   through. `None` may only be relied on together with a `discard`
//!   that follows it: after both, any access faults.
//! - `discard` releases the memory; the next access faults.
//! - None of them touches managed memory through a pointer the program
//!   could fault on, allocates, or takes a lock: they run in the signal
//!   handler (signal backend) or in service threads.
#![allow(unsafe_code, reason = "raw managed memory and syscalls on it")]

use crate::sys::{self, Prot};
use crate::uffd::Uffd;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::io::Errno;
use sbma_core::Protection;

/// Which fault backend a pager uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Backend {
    /// userfaultfd where this process may open one, else the signal
    /// backend (the reason is in [`Stats::backend_note`](crate::Stats)).
    #[default]
    Auto,
    /// `PROT_NONE` reservations and a SIGSEGV handler: works everywhere;
    /// syscalls into evicted memory need [`Pager::prepare_for_kernel`]
    /// (`EFAULT` otherwise).
    ///
    /// [`Pager::prepare_for_kernel`]: crate::Pager::prepare_for_kernel
    Signal,
    /// userfaultfd in missing and write-protect mode, served by pager
    /// threads: no VMA splits, syscalls into evicted memory just work.
    Uffd,
}

impl Backend {
    /// The name used by `SBMA_BACKEND` and in statistics.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Signal => "signal",
            Backend::Uffd => "uffd",
        }
    }
}

impl Backend {
    /// The concrete backends this process can use: `Signal` always, `Uffd`
    /// where a userfaultfd opens; with the reason `Uffd` is missing, if it
    /// is (for tests and benchmarks that run on every backend and say what
    /// they skip).
    pub fn usable() -> (Vec<Backend>, Option<crate::Error>) {
        match Backend::Uffd.available() {
            Ok(()) => (vec![Backend::Signal, Backend::Uffd], None),
            Err(e) => (vec![Backend::Signal], Some(e)),
        }
    }

    /// Whether this process can use the backend: always for `Signal` and
    /// `Auto`; for `Uffd`, whether a userfaultfd with write-protect support
    /// can be opened (see the permission rules in `docs/uffd.md`).
    ///
    /// # Errors
    /// [`Error::Backend`](crate::Error::Backend) saying why not.
    pub fn available(self) -> Result<(), crate::Error> {
        match self {
            Backend::Uffd => Uffd::open().map(drop).map_err(|u| crate::Error::Backend {
                reason: u.reason,
                source: u.errno,
            }),
            Backend::Auto | Backend::Signal => Ok(()),
        }
    }
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Backend::Auto),
            "signal" | "sigsegv" => Ok(Backend::Signal),
            "uffd" | "userfaultfd" => Ok(Backend::Uffd),
            _ => Err(format!(
                "unknown backend {s:?} (expected auto, signal or uffd)"
            )),
        }
    }
}

/// How pages are filled while they stay inaccessible (signal backend).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FillMethod {
    /// Read into a staging buffer, then `pwrite` into the page through
    /// `/proc/self/mem` (the kernel's forced access): no VMA changes.
    SelfMem,
    /// Read into a fresh staging mapping and `mremap` it over the page:
    /// works everywhere, but each moved page stays a separate VMA.
    Remap,
}

/// The operations that differ between backends (see the module doc for
/// the requirements).
pub(crate) trait Memory: Send + Sync {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// Sets the access of `[addr, addr + len)`.
    ///
    /// # Safety
    /// See the module doc.
    unsafe fn protect(&self, addr: *mut u8, len: usize, prot: Protection) -> Result<(), Errno>;

    /// Fills `[addr, addr + len)` with the store's bytes at `offset`, read
    /// through `staging` (a buffer of at least `len` bytes). With
    /// [`fill_grants_access`](Self::fill_grants_access), `writable` says
    /// whether the pages come out writable (else read-only); otherwise it
    /// is ignored and the pages stay inaccessible.
    ///
    /// # Safety
    /// See the module doc; `staging` is valid for `len` bytes and ours.
    unsafe fn fill(
        &self,
        store: BorrowedFd<'_>,
        offset: u64,
        addr: *mut u8,
        len: usize,
        staging: *mut u8,
        writable: bool,
    ) -> Result<(), Errno>;

    /// Makes `[addr, addr + len)` read as zeros (`writable` as in
    /// [`fill`](Self::fill)).
    ///
    /// # Safety
    /// See the module doc.
    unsafe fn zero(&self, addr: *mut u8, len: usize, writable: bool) -> Result<(), Errno>;

    /// Whether a fill installs the page with its final access (uffd: a
    /// `UFFDIO_COPY` is write-protected or not as asked), so the grant
    /// that follows a load is already done. Otherwise the page stays
    /// inaccessible until `protect`.
    fn fill_grants_access(&self) -> bool {
        false
    }

    /// Releases `[addr, addr + len)`.
    ///
    /// # Safety
    /// See the module doc; the contents are lost.
    unsafe fn discard(&self, addr: *mut u8, len: usize) -> Result<(), Errno> {
        // SAFETY: forwarded to the caller.
        unsafe { sys::discard(addr, len) }
    }

    /// Whether `fill` uses the staging buffer it is given (the `Remap`
    /// method reads into a fresh mapping instead).
    fn uses_staging(&self) -> bool {
        true
    }

    /// The userfaultfd to serve, for the uffd backend.
    fn uffd(&self) -> Option<&Uffd> {
        None
    }

    /// Moves the pages of `[src, src + len)`, all resident with access
    /// `prot`, to `[dst, dst + len)` (which holds no page) without copying
    /// them: afterwards `dst` holds them with access `prot` and any access
    /// to `src` faults as to a page never written. Moves a prefix if the
    /// whole cannot be: the error comes with the bytes moved (a multiple
    /// of the OS page), and the rest is untouched.
    ///
    /// Signal backend: `mremap(MREMAP_DONTUNMAP)`, then the source is made
    /// inaccessible again. uffd backend: `UFFDIO_MOVE` (Linux 6.8; where
    /// it cannot, `UFFDIO_COPY` and a discard of the source), then clean
    /// pages are write-protected again. If that second step fails
    /// (`mprotect` splitting past `vm.max_map_count`), the process aborts
    /// with one line: going on would let accesses bypass the pager.
    ///
    /// # Safety
    /// See the module doc; both ranges are busy.
    unsafe fn relocate(
        &self,
        src: *mut u8,
        dst: *mut u8,
        len: usize,
        prot: Protection,
    ) -> Result<(), (usize, Errno)>;
}

/// The signal backend's move: `[src, src + len)` to `dst` by `mremap`
/// (keeping the source mapped), splitting the range where it spans several
/// mappings (`EFAULT`: one `mremap` moves within one mapping); each piece's
/// old place, now empty, is made inaccessible again so it faults. Moves a
/// prefix on error, as [`Memory::relocate`].
///
/// # Safety
/// As [`Memory::relocate`].
unsafe fn move_and_revoke(src: *mut u8, dst: *mut u8, len: usize) -> Result<(), (usize, Errno)> {
    // SAFETY: forwarded to the caller.
    match unsafe { sys::move_pages_keep_source(src, dst, len) } {
        Ok(()) => {
            // SAFETY: the caller's busy source, empty now.
            if let Err(e) = unsafe { sys::protect(src, len, Prot::None) } {
                moved_but(
                    b"revoking access to their old place (mprotect: raise vm.max_map_count)",
                    e,
                );
            }
            Ok(())
        }
        Err(Errno::FAULT) if len > rustix::param::page_size() => {
            let half = (len / 2).next_multiple_of(rustix::param::page_size());
            // SAFETY: both halves are inside the caller's ranges.
            unsafe {
                move_and_revoke(src, dst, half)?;
                move_and_revoke(src.add(half), dst.add(half), len - half)
                    .map_err(|(n, e)| (half + n, e))
            }
        }
        Err(e) => Err((0, e)),
    }
}

/// Aborts with one line naming the syscall that failed after pages moved.
fn moved_but(what: &[u8], e: Errno) -> ! {
    let mut num = [0u8; 20];
    sys::die(&[
        b"sbma: pages were moved but ",
        what,
        b" failed (errno ",
        sys::decimal(e.raw_os_error().unsigned_abs() as usize, &mut num),
        b")",
    ])
}

/// The signal backend's memory: `PROT_NONE` until a fault.
pub(crate) struct SignalMemory {
    fill: FillMethod,
    /// `/proc/self/mem`, for [`FillMethod::SelfMem`].
    mem: Option<OwnedFd>,
}

impl SignalMemory {
    /// Reserves `len` bytes inaccessible; returns the memory and the base.
    pub fn new(
        len: usize,
        fill: FillMethod,
    ) -> Result<(SignalMemory, *mut u8), (&'static str, Errno)> {
        let mem = match fill {
            FillMethod::SelfMem => {
                Some(sys::open_self_mem().map_err(|e| ("opening /proc/self/mem", e))?)
            }
            FillMethod::Remap => None,
        };
        let base = sys::reserve(len).map_err(|e| ("reserving the arena", e))?;
        Ok((SignalMemory { fill, mem }, base))
    }
}

/// The `Remap` fill: `read` fills a fresh private mapping of `len` bytes,
/// which is made inaccessible, then moved over `addr` (so the target only
/// becomes visible through a later protect). Used by the signal backend's
/// [`FillMethod::Remap`] and by a forked child (`snapshot`).
///
/// # Safety
/// As [`Memory::fill`]: the target range is busy and inaccessible.
pub(crate) unsafe fn fill_by_remap(
    addr: *mut u8,
    len: usize,
    read: impl FnOnce(*mut u8) -> Result<(), Errno>,
) -> Result<(), Errno> {
    let tmp = sys::map_rw(len)?;
    // SAFETY: `tmp` is a fresh private mapping of `len` bytes, ours alone
    // until it replaces the target (the caller's).
    unsafe {
        let r = read(tmp)
            .and_then(|()| sys::protect(tmp, len, Prot::None))
            .and_then(|()| sys::move_mapping(tmp, addr, len));
        if r.is_err() {
            let _ = sys::unmap(tmp, len);
        }
        r
    }
}

impl Memory for SignalMemory {
    fn backend(&self) -> Backend {
        Backend::Signal
    }

    unsafe fn protect(&self, addr: *mut u8, len: usize, p: Protection) -> Result<(), Errno> {
        // SAFETY: forwarded to the caller.
        unsafe { sys::protect(addr, len, Prot::from(p)) }
    }

    unsafe fn fill(
        &self,
        store: BorrowedFd<'_>,
        offset: u64,
        addr: *mut u8,
        len: usize,
        staging: *mut u8,
        _writable: bool,
    ) -> Result<(), Errno> {
        match (&self.mem, self.fill) {
            (Some(mem), FillMethod::SelfMem) => {
                // SAFETY: the staging buffer is the caller's; the target is
                // busy and inaccessible, and is written only through
                // /proc/self/mem, which the kernel performs as a whole.
                unsafe {
                    sys::read_full(store, staging, len, offset)?;
                    sys::write_full(mem.as_fd(), staging, len, addr as u64)
                }
            }
            // SAFETY: the target is busy and inaccessible (caller); `tmp` is
            // the fresh mapping of `len` bytes `fill_by_remap` hands over.
            _ => unsafe { fill_by_remap(addr, len, |tmp| sys::read_full(store, tmp, len, offset)) },
        }
    }

    unsafe fn zero(&self, _addr: *mut u8, _len: usize, _writable: bool) -> Result<(), Errno> {
        // Unbacked pages were never touched or were discarded: anonymous
        // memory already reads as zeros.
        Ok(())
    }

    fn uses_staging(&self) -> bool {
        self.fill == FillMethod::SelfMem
    }

    unsafe fn relocate(
        &self,
        src: *mut u8,
        dst: *mut u8,
        len: usize,
        _prot: Protection,
    ) -> Result<(), (usize, Errno)> {
        // The moved mapping keeps its protection.
        // SAFETY: forwarded to the caller.
        unsafe { move_and_revoke(src, dst, len) }
    }
}

/// The uffd backend's memory: read-write, registered with a userfaultfd.
pub(crate) struct UffdMemory {
    uffd: Uffd,
    /// A read-only anonymous mapping of zeros, the source of zero fills.
    zeros: *mut u8,
    zeros_len: usize,
}

// SAFETY: `zeros` is a read-only mapping nobody writes; the descriptor is
// used through ioctls that the kernel serialises.
unsafe impl Send for UffdMemory {}
// SAFETY: as above.
unsafe impl Sync for UffdMemory {}

impl UffdMemory {
    /// Reserves `len` bytes read-write (no commit charge, no huge pages)
    /// and registers them with `uffd`; `page` bytes of zeros serve zero
    /// fills.
    pub fn new(
        uffd: Uffd,
        len: usize,
        page: usize,
    ) -> Result<(UffdMemory, *mut u8), (&'static str, Errno)> {
        let base = sys::reserve_rw(len).map_err(|e| ("reserving the arena", e))?;
        let zeros = match sys::reserve_rw(page) {
            Ok(z) => z,
            Err(e) => {
                // SAFETY: our fresh reservation, used by nobody yet.
                let _ = unsafe { sys::unmap(base, len) };
                return Err(("mapping the zero page", e));
            }
        };
        // SAFETY: both are our fresh mappings; the zero buffer is never
        // written, and the arena is only reached through raw pointers.
        let r = unsafe {
            sys::protect(zeros, page, Prot::Read)
                .and_then(|()| sys::no_huge_pages(base, len))
                .map_err(|e| ("preparing the arena", e))
                .and_then(|()| {
                    uffd.register(base, len)
                        .map_err(|e| ("registering the arena with userfaultfd", e))
                })
        };
        if let Err(e) = r {
            // SAFETY: our own fresh mappings.
            unsafe {
                let _ = sys::unmap(base, len);
                let _ = sys::unmap(zeros, page);
            }
            return Err(e);
        }
        Ok((
            UffdMemory {
                uffd,
                zeros,
                zeros_len: page,
            },
            base,
        ))
    }
}

impl Drop for UffdMemory {
    fn drop(&mut self) {
        // SAFETY: our own mapping, used by nobody once the arena goes.
        let _ = unsafe { sys::unmap(self.zeros, self.zeros_len) };
    }
}

impl Memory for UffdMemory {
    fn backend(&self) -> Backend {
        Backend::Uffd
    }

    unsafe fn protect(&self, addr: *mut u8, len: usize, p: Protection) -> Result<(), Errno> {
        match p {
            // Nothing to revoke: the discard that follows removes the page,
            // and until then its bytes equal the store's copy.
            Protection::None => Ok(()),
            // SAFETY: the range is registered and busy (caller).
            Protection::Read => unsafe { self.uffd.write_protect(addr, len, true) },
            // SAFETY: as above.
            Protection::ReadWrite => unsafe { self.uffd.write_protect(addr, len, false) },
        }
    }

    unsafe fn fill(
        &self,
        store: BorrowedFd<'_>,
        offset: u64,
        addr: *mut u8,
        len: usize,
        staging: *mut u8,
        writable: bool,
    ) -> Result<(), Errno> {
        // SAFETY: the staging buffer is the caller's; the target range is
        // missing and busy, and UFFDIO_COPY installs each page whole.
        unsafe {
            sys::read_full(store, staging, len, offset)?;
            self.uffd.copy(addr, staging, len, !writable)
        }
    }

    fn fill_grants_access(&self) -> bool {
        true
    }

    unsafe fn zero(&self, addr: *mut u8, len: usize, writable: bool) -> Result<(), Errno> {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(self.zeros_len);
            // SAFETY: the target is missing and busy; `zeros` holds
            // `zeros_len` readable zero bytes.
            unsafe { self.uffd.copy(addr.add(done), self.zeros, n, !writable) }?;
            done += n;
        }
        Ok(())
    }

    fn uffd(&self) -> Option<&Uffd> {
        Some(&self.uffd)
    }

    unsafe fn relocate(
        &self,
        src: *mut u8,
        dst: *mut u8,
        len: usize,
        prot: Protection,
    ) -> Result<(), (usize, Errno)> {
        // Page-table entries move; the source is missing again (and
        // registered as before). Moved pages arrive writable: clean ones
        // are write-protected again before anyone can see them.
        // SAFETY: forwarded to the caller.
        let moved = match unsafe { self.uffd.move_pages(dst, src, len) } {
            Ok(()) => len,
            Err((n, _)) => n,
        };
        if prot == Protection::Read && moved > 0 {
            // SAFETY: the moved part of the caller's busy target range.
            if let Err(e) = unsafe { self.uffd.write_protect(dst, moved, true) } {
                moved_but(b"write-protecting them again (UFFDIO_WRITEPROTECT)", e);
            }
        }
        if moved == len {
            return Ok(());
        }
        // Where the kernel cannot move them (before Linux 6.8, or `EBUSY`:
        // pages a forked child still shares), the rest is copied into the
        // missing target pages (`UFFDIO_COPY`, as a fill, write-protected
        // if clean) and dropped from the source.
        let (to, from, rest) = (
            dst.wrapping_add(moved),
            src.wrapping_add(moved),
            len - moved,
        );
        // SAFETY: the unmoved rest of the caller's busy ranges: the source
        // is resident and readable, the target missing.
        if let Err(e) = unsafe { self.uffd.copy(to, from, rest, prot == Protection::Read) } {
            // A partial copy must leave no page in the target (it stays
            // unbacked, where a present page would never fault).
            // SAFETY: the caller's busy target, holding nothing it needs.
            let _ = unsafe { sys::discard(to, rest) };
            return Err((moved, e));
        }
        // SAFETY: the caller's busy source, copied.
        if let Err(e) = unsafe { sys::discard(from, rest) } {
            moved_but(b"dropping their old place (madvise)", e);
        }
        Ok(())
    }
}
