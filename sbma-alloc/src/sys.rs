//! The allocator's few contacts with the OS: anonymous mappings for its
//! metadata, glibc's allocator as the fallback, `errno`, and the one-line
//! fatal message.
//!
//! # Safety
//! Each function wraps one call; the callers' obligations are in each
//! `# Safety` section.
#![allow(
    unsafe_code,
    reason = "mmap, glibc's allocator and raw write(2) are FFI"
)]

use core::ffi::c_void;
use rustix::mm::{MapFlags, ProtFlags};

/// An anonymous, private, read-write mapping that reserves no swap
/// (`MAP_NORESERVE`): metadata pages cost memory only once written.
/// Unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; every field the allocator keeps in it
// is an atomic or is owned by one thread at a time (see `span` and `heap`).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|
    /// MAP_NORESERVE)`: zero-filled.
    pub fn new(len: usize) -> Result<Mapping, rustix::io::Errno> {
        let len = len.max(1);
        // SAFETY: a fresh mapping at an address the kernel picks; nothing
        // else is affected.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The first byte.
    #[inline]
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; its users are gone (owned by the
        // allocator being dropped).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
}

/// glibc's own allocator, reached by the names it exports for this purpose
/// (`__libc_malloc`, `__libc_memalign`, `__libc_free`), which an
/// `LD_PRELOAD`ed `malloc` does not replace. It serves what the allocator
/// must not serve from managed memory: allocations made during its own
/// start-up and by the pager's threads.
pub mod fallback {
    use super::*;

    /// `__libc_memalign(align, size)` (or `__libc_malloc` for `align <=
    /// 16`).
    pub fn alloc(size: usize, align: usize) -> *mut u8 {
        // SAFETY: glibc's allocator is thread-safe and takes any size; a
        // null result is passed on.
        unsafe {
            if align <= crate::MIN_ALIGN {
                __libc_malloc(size).cast()
            } else {
                __libc_memalign(align, size).cast()
            }
        }
    }

    /// `__libc_calloc(n, size)`.
    pub fn calloc(n: usize, size: usize) -> *mut u8 {
        // SAFETY: glibc's allocator checks the product and takes any size.
        unsafe { __libc_calloc(n, size).cast() }
    }

    /// `__libc_realloc(ptr, size)`: a fallback block stays one.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`] (or glibc's malloc) and is not used again
    /// unless null is returned.
    pub unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { __libc_realloc(ptr.cast(), size).cast() }
    }

    /// `__libc_free(ptr)`.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`] (or glibc's malloc) and is not used again.
    pub unsafe fn free(ptr: *mut u8) {
        // SAFETY: the caller's contract.
        unsafe { __libc_free(ptr.cast()) }
    }
}

/// Restores the calling thread's `errno` on drop (around syscalls made on
/// behalf of `free`, which must not change it).
pub(crate) struct ErrnoGuard(i32);

impl ErrnoGuard {
    pub fn save() -> ErrnoGuard {
        // SAFETY: `__errno_location` returns the calling thread's errno slot.
        ErrnoGuard(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// Writes `sbma: <what> <addr>` to stderr and aborts, as glibc does for a
/// bad `free` (`free(): invalid pointer`). Allocation-free.
#[cold]
#[inline(never)]
pub(crate) fn fatal(what: &str, addr: usize) -> ! {
    let mut buf = [0u8; 160];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() - 1 {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"sbma: ");
    put(what.as_bytes());
    put(b" 0x");
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = b"0123456789abcdef"[(addr >> ((15 - i) * 4)) & 0xf];
    }
    put(&hex);
    put(b"\n");
    // SAFETY: writing our own buffer to fd 2, then aborting.
    unsafe {
        let _ = libc::write(2, buf.as_ptr().cast(), n);
        libc::abort()
    }
}

/// Writes `sbma: <message>` to stderr and aborts (start-up errors of the
/// global allocator, which has no caller to return them to).
#[cold]
pub(crate) fn fatal_message(message: &str) -> ! {
    // SAFETY: writing our own buffers to fd 2, then aborting.
    unsafe {
        let _ = libc::write(2, b"sbma: ".as_ptr().cast(), 6);
        let _ = libc::write(2, message.as_ptr().cast(), message.len());
        let _ = libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::abort()
    }
}
