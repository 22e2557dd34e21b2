//! Every raw syscall the pager makes, each in a small intent-named wrapper.
//!
//! All of these go through rustix's `linux_raw` backend: direct syscalls,
//! no libc state, no allocation, no locks. So every function here is
//! async-signal-safe and may be called from the fault handler (the list of
//! what the handler may call is in `docs/signals.md`).
//!
//! # Safety
//!
//! The memory functions act on raw address ranges. Callers guarantee that
//! the range lies inside a reservation owned by the pager and that no Rust
//! reference to its bytes exists while its contents or protection change
//! (managed memory is only ever reached through raw pointers).
#![allow(unsafe_code, reason = "this module is the pager's syscall layer")]

use core::ffi::c_void;
use core::sync::atomic::AtomicU32;
use rustix::fd::{BorrowedFd, OwnedFd};
use rustix::io::Errno;
use rustix::mm::{Advice, MapFlags, MprotectFlags, MremapFlags, ProtFlags};
use rustix::thread::futex;

/// Reserves `len` bytes of address space with no access and no commit
/// charge: `mmap(NULL, len, PROT_NONE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE)`.
///
/// # Errors
/// `ENOMEM` if the address space is exhausted.
pub fn reserve(len: usize) -> Result<*mut u8, Errno> {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks
    // cannot alias anything.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            ProtFlags::empty(),
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }?;
    Ok(p.cast())
}

/// Reserves `len` bytes of read-write address space with no commit charge:
/// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_NORESERVE)`
/// (the uffd backend's arena, whose faults are missing-page faults).
///
/// # Errors
/// `ENOMEM` if the address space is exhausted.
pub fn reserve_rw(len: usize) -> Result<*mut u8, Errno> {
    // SAFETY: as in `reserve`.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE | MapFlags::NORESERVE,
        )
    }?;
    Ok(p.cast())
}

/// Keeps transparent huge pages out of a range: `madvise(MADV_NOHUGEPAGE)`
/// (a huge page would be filled and dropped as one, behind the pager's
/// back).
///
/// # Safety
/// See the module doc.
pub unsafe fn no_huge_pages(addr: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller; the advice changes no contents.
    unsafe { rustix::mm::madvise(addr.cast::<c_void>(), len, Advice::LinuxNoHugepage) }
}

/// Allocates `len` bytes of ordinary read-write anonymous memory (staging
/// buffers, alternate signal stacks).
///
/// # Errors
/// `ENOMEM`.
pub fn map_rw(len: usize) -> Result<*mut u8, Errno> {
    map_anonymous_rw(len, MapFlags::PRIVATE)
}

/// Allocates `len` bytes of read-write anonymous memory shared with
/// future forks (fork snapshots' bitmaps): `MAP_SHARED|MAP_ANONYMOUS`,
/// zeroed.
///
/// # Errors
/// `ENOMEM`.
pub fn map_shared(len: usize) -> Result<*mut u8, Errno> {
    map_anonymous_rw(len, MapFlags::SHARED)
}

fn map_anonymous_rw(len: usize, flags: MapFlags) -> Result<*mut u8, Errno> {
    // SAFETY: as in `reserve`.
    let p = unsafe {
        rustix::mm::mmap_anonymous(
            core::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            flags,
        )
    }?;
    Ok(p.cast())
}

/// Unmaps `[addr, addr + len)`: `munmap`.
///
/// # Safety
/// The range was returned by [`reserve`], [`map_rw`] or [`map_shared`]
/// and nothing uses it any more.
pub unsafe fn unmap(addr: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller.
    unsafe { rustix::mm::munmap(addr.cast::<c_void>(), len) }
}

/// The access a managed range allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prot {
    /// `PROT_NONE`.
    None,
    /// `PROT_READ`.
    Read,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

impl From<sbma_core::Protection> for Prot {
    fn from(p: sbma_core::Protection) -> Prot {
        match p {
            sbma_core::Protection::None => Prot::None,
            sbma_core::Protection::Read => Prot::Read,
            sbma_core::Protection::ReadWrite => Prot::ReadWrite,
        }
    }
}

/// Changes the protection of a page-aligned range: `mprotect`.
///
/// # Errors
/// `ENOMEM` when the split would exceed `vm.max_map_count`.
///
/// # Safety
/// See the module doc.
pub unsafe fn protect(addr: *mut u8, len: usize, prot: Prot) -> Result<(), Errno> {
    let flags = match prot {
        Prot::None => MprotectFlags::empty(),
        Prot::Read => MprotectFlags::READ,
        Prot::ReadWrite => MprotectFlags::READ | MprotectFlags::WRITE,
    };
    // SAFETY: forwarded to the caller.
    unsafe { rustix::mm::mprotect(addr.cast::<c_void>(), len, flags) }
}

/// Releases the memory of a private anonymous range; it reads as zeros
/// next time: `madvise(MADV_DONTNEED)`.
///
/// # Safety
/// See the module doc; the contents are lost.
pub unsafe fn discard(addr: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller.
    unsafe { rustix::mm::madvise(addr.cast::<c_void>(), len, Advice::LinuxDontNeed) }
}

/// Moves `len` bytes of mapping from `from` onto `to`, replacing what was
/// there: `mremap(from, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to)`.
///
/// # Safety
/// Both ranges are page-aligned mappings owned by the pager.
pub unsafe fn move_mapping(from: *mut u8, to: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller.
    unsafe { remap_fixed(from, to, len, MremapFlags::MAYMOVE) }
}

/// Moves the pages of `[from, from + len)` to `to`, keeping the source
/// range mapped (empty, same protection): `mremap(from, len, len,
/// MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, to)` (Linux 5.7;
/// private anonymous memory). The target range is replaced by one mapping
/// with the source's protection. (Not for userfaultfd-registered memory:
/// without `UFFD_FEATURE_EVENT_REMAP` the kernel drops registrations,
/// neighbouring ones included.)
/// `EFAULT` if the source spans several mappings; on any error nothing
/// moved.
///
/// # Safety
/// Both ranges are page-aligned parts of mappings owned by the pager; the
/// target's contents are lost.
pub unsafe fn move_pages_keep_source(from: *mut u8, to: *mut u8, len: usize) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller.
    unsafe { remap_fixed(from, to, len, MremapFlags::MAYMOVE | MremapFlags::DONTUNMAP) }
}

/// `mremap(from, len, len, flags | MREMAP_FIXED, to)`.
///
/// # Safety
/// As [`move_mapping`].
unsafe fn remap_fixed(
    from: *mut u8,
    to: *mut u8,
    len: usize,
    flags: MremapFlags,
) -> Result<(), Errno> {
    // SAFETY: forwarded to the caller.
    unsafe { rustix::mm::mremap_fixed(from.cast::<c_void>(), len, len, flags, to.cast::<c_void>()) }
        .map(drop)
}

/// Copies `len` bytes of `fd` from offset `from` to offset `to` inside the
/// kernel (`copy_file_range`, looping over short copies; the ranges must
/// not overlap). A hole reads as zeros and is copied as such.
pub fn copy_within_file(fd: BorrowedFd<'_>, from: u64, to: u64, len: u64) -> Result<(), Errno> {
    let (mut done, mut src, mut dst) = (0u64, from, to);
    while done < len {
        let want = usize::try_from(len - done).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(fd, Some(&mut src), fd, Some(&mut dst), want) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => done += n as u64,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads exactly `len` bytes at `offset` into `buf`, retrying on `EINTR`
/// and short reads. Bytes past the end of the file read as zeros (a sparse
/// store's never-written tail).
///
/// # Safety
/// `buf` is valid for `len` bytes of writes.
pub unsafe fn read_full(
    fd: BorrowedFd<'_>,
    buf: *mut u8,
    len: usize,
    offset: u64,
) -> Result<(), Errno> {
    let mut done = 0;
    while done < len {
        // SAFETY: `buf + done .. buf + len` is valid for writes (caller).
        let dst = unsafe { core::slice::from_raw_parts_mut(buf.add(done), len - done) };
        match rustix::io::pread(fd, &mut *dst, offset + done as u64) {
            Ok(0) => {
                dst.fill(0);
                return Ok(());
            }
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes exactly `len` bytes from `buf` at `offset`, retrying on `EINTR`
/// and short writes.
///
/// # Errors
/// `ENOSPC`, `EIO`, `EFBIG`, ... as `pwrite` reports them.
///
/// # Safety
/// `buf` is valid for `len` bytes of reads and not written concurrently.
pub unsafe fn write_full(
    fd: BorrowedFd<'_>,
    buf: *const u8,
    len: usize,
    offset: u64,
) -> Result<(), Errno> {
    let mut done = 0;
    while done < len {
        // SAFETY: `buf + done .. buf + len` is valid for reads (caller).
        let src = unsafe { core::slice::from_raw_parts(buf.add(done), len - done) };
        match rustix::io::pwrite(fd, src, offset + done as u64) {
            Ok(0) => return Err(Errno::IO),
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Deallocates a file range, keeping the file size:
/// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)`.
pub fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    loop {
        match rustix::fs::fallocate(
            fd,
            rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
            offset,
            len,
        ) {
            Err(Errno::INTR) => {}
            r => return r,
        }
    }
}

/// Opens an unnamed, unlinked file in `dir` (`O_TMPFILE`), or, where the
/// filesystem lacks it, creates a uniquely named one (`O_EXCL`) and unlinks
/// it at once. Either way nothing is left behind by a crash.
pub fn open_unlinked_file(dir: &std::path::Path) -> Result<OwnedFd, Errno> {
    use rustix::fs::{CWD, Mode, OFlags};
    let mode = Mode::RUSR | Mode::WUSR;
    match rustix::fs::openat(
        CWD,
        dir,
        OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
        mode,
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
            for attempt in 0..100u32 {
                let name = dir.join(format!(
                    ".sbma-{}-{}-{attempt}",
                    rustix::process::getpid().as_raw_nonzero(),
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos())
                ));
                match rustix::fs::openat(
                    CWD,
                    &name,
                    OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::CLOEXEC,
                    mode,
                ) {
                    Ok(fd) => {
                        rustix::fs::unlinkat(CWD, &name, rustix::fs::AtFlags::empty())?;
                        return Ok(fd);
                    }
                    Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
            }
            Err(Errno::EXIST)
        }
        Err(e) => Err(e),
    }
}

/// Switches `fd` to direct I/O (`fcntl(F_SETFL, O_DIRECT)`) if the
/// filesystem accepts it (tmpfs and some others refuse with `EINVAL`; the
/// file then stays buffered, see [`is_direct`]). Reads and writes then
/// bypass the page cache, so the backing file costs no memory beyond the
/// budget (and none in the caller's memory cgroup). Every transfer the
/// arena makes is page-aligned in memory and in the file, which is all
/// `O_DIRECT` asks.
pub fn set_direct(fd: BorrowedFd<'_>) {
    use rustix::fs::OFlags;
    if let Ok(flags) = rustix::fs::fcntl_getfl(fd) {
        let _ = rustix::fs::fcntl_setfl(fd, flags | OFlags::DIRECT);
    }
}

/// Whether `fd` is in direct-I/O mode (`fcntl(F_GETFL)`).
pub fn is_direct(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|f| f.contains(rustix::fs::OFlags::DIRECT))
}

/// Opens `/proc/self/mem` for writing, to fill pages that stay
/// inaccessible to the program (the kernel's `FOLL_FORCE` access).
pub fn open_self_mem() -> Result<OwnedFd, Errno> {
    use rustix::fs::{CWD, Mode, OFlags};
    rustix::fs::openat(
        CWD,
        "/proc/self/mem",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Sleeps while `word` holds `expected`: `futex(FUTEX_WAIT_PRIVATE)`.
/// Returns on wake-up, on a changed word, and on signals alike.
pub fn futex_wait(word: &AtomicU32, expected: u32) {
    let _ = futex::wait(word, futex::Flags::PRIVATE, expected, None);
}

/// Sleeps while `word` (in memory shared between processes) holds
/// `expected`, at most `timeout_ns`: `futex(FUTEX_WAIT)` (not private).
pub fn futex_wait_shared(word: &AtomicU32, expected: u32, timeout_ns: u64) {
    let t = rustix::fs::Timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as i64,
        tv_nsec: (timeout_ns % 1_000_000_000) as i64,
    };
    let _ = futex::wait(word, futex::Flags::empty(), expected, Some(&t));
}

/// Wakes every thread of any process sleeping on the shared `word`:
/// `futex(FUTEX_WAKE)` (not private).
pub fn futex_wake_shared(word: &AtomicU32) {
    let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
}

/// Wakes up to `n` threads sleeping on `word`: `futex(FUTEX_WAKE_PRIVATE)`.
pub fn futex_wake(word: &AtomicU32, n: u32) {
    let _ = futex::wake(word, futex::Flags::PRIVATE, n);
}

/// Wakes every thread sleeping on `word`.
pub fn futex_wake_all(word: &AtomicU32) {
    futex_wake(word, i32::MAX as u32);
}

/// The calling process's id: `getpid` (a syscall each time; no cache to
/// go stale across `fork`).
pub fn process_id() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// The calling thread's id: `gettid`.
pub fn thread_id() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Gives up the CPU: `sched_yield`.
pub fn yield_now() {
    rustix::thread::sched_yield();
}

/// Monotonic nanoseconds (vDSO `clock_gettime(CLOCK_MONOTONIC)`).
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Writes `msg` to standard error and aborts: the only way out of the
/// fault handler when the faulting access cannot be completed.
pub fn die(parts: &[&[u8]]) -> ! {
    // SAFETY: fd 2 is standard error; writing to a closed descriptor only
    // fails, it cannot corrupt anything.
    let stderr = unsafe { BorrowedFd::borrow_raw(2) };
    for p in parts {
        let _ = rustix::io::write(stderr, p);
    }
    let _ = rustix::io::write(stderr, b"\n");
    // SAFETY: abort is async-signal-safe and never returns.
    unsafe { libc::abort() }
}

/// Formats `v` in decimal into `buf` without allocating; returns the text.
pub fn decimal(mut v: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// Formats `v` as `0x...` into `buf` without allocating; returns the text.
pub fn hex(v: usize, buf: &mut [u8; 18]) -> &[u8] {
    buf[0] = b'0';
    buf[1] = b'x';
    let mut n = 2;
    let digits = (usize::BITS - v.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in (0..digits).rev() {
        let d = (v >> (i * 4)) & 0xF;
        buf[n] = b"0123456789abcdef"[d];
        n += 1;
    }
    &buf[..n]
}
