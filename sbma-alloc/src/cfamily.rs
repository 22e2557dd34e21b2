//! The C allocation family with glibc's behaviour (what the C API and the
//! `LD_PRELOAD` shim export): `malloc(0)` returns a unique pointer, sizes
//! that overflow give null with `ENOMEM`, `posix_memalign` checks its
//! alignment and does not touch `errno`, `realloc(p, 0)` frees, `free(NULL)`
//! does nothing and keeps `errno`, bad pointers abort with one line.
//!
//! # Safety
//! The `unsafe fn`s take pointers whose validity only the caller knows, as
//! in C.
#![allow(
    unsafe_code,
    reason = "the C contract: raw pointers in, raw pointers out"
)]

use crate::SbmaAlloc;
use crate::classes::MIN_ALIGN;
use crate::sys::{fallback, set_errno};
use core::ffi::c_void;

impl SbmaAlloc {
    /// `size` bytes, or `(null, ENOMEM)`. Also reports whether the memory
    /// may hold stale data.
    #[inline]
    fn raw(&self, size: usize, align: usize) -> (*mut u8, bool) {
        let (p, dirty) = match self.core() {
            Some(core) => core.alloc(size.max(1), align),
            None => (fallback::alloc(size.max(1), align), true),
        };
        if p.is_null() {
            set_errno(libc::ENOMEM);
        }
        (p, dirty)
    }

    /// `malloc(size)`: at least `size` bytes aligned to 16, or null with
    /// `errno = ENOMEM`.
    #[inline]
    pub fn malloc(&self, size: usize) -> *mut u8 {
        if let Some((core, h)) = self.local() {
            if let Some(p) = core.try_alloc_fast(h, size) {
                return p;
            }
        }
        self.malloc_slow(size)
    }

    /// Out of line: the fast path above stays a leaf.
    #[inline(never)]
    fn malloc_slow(&self, size: usize) -> *mut u8 {
        self.raw(size, MIN_ALIGN).0
    }

    /// `calloc(n, size)`: `n × size` zeroed bytes; null with `ENOMEM` if
    /// the product overflows or memory is exhausted. Fresh runs (which read
    /// as zeros) are not written.
    pub fn calloc(&self, n: usize, size: usize) -> *mut u8 {
        let Some(total) = n.checked_mul(size) else {
            set_errno(libc::ENOMEM);
            return core::ptr::null_mut();
        };
        let Some(core) = self.core() else {
            return fallback_calloc(n, size);
        };
        let (p, dirty) = core.alloc(total.max(1), MIN_ALIGN);
        if p.is_null() {
            set_errno(libc::ENOMEM);
        } else if dirty {
            if core.spans.index_of(p as usize).is_some() {
                core.zero(p, total);
            } else {
                // Served by glibc (start-up, pager threads, forked child):
                // glibc's own calloc knows which of its chunks are fresh
                // zero pages and writes none of those, where a memset here
                // would make a large table resident at once.
                // SAFETY: just allocated by glibc, not yet handed out.
                unsafe { fallback::free(p) };
                return fallback_calloc(n, size);
            }
        }
        p
    }

    /// `free(p)`: null is ignored; `errno` is preserved.
    ///
    /// # Safety
    /// `p` is null or a live allocation of this allocator (or of glibc's
    /// allocator) that is not used again. An invalid or double free of a
    /// pointer in the arena aborts with a one-line message.
    #[inline]
    pub unsafe fn free(&self, p: *mut u8) {
        // (A null `p` is outside the arena: the slow path takes it.)
        if let Some((core, h)) = self.local() {
            if core.try_free_fast(h, p) {
                return;
            }
        }
        // SAFETY: the caller's contract.
        unsafe { self.free_slow(p) }
    }

    /// Out of line: the fast path above stays a leaf.
    ///
    /// # Safety
    /// As [`SbmaAlloc::free`].
    #[inline(never)]
    unsafe fn free_slow(&self, p: *mut u8) {
        if p.is_null() {
            return;
        }
        // Nothing on this path sets errno (the pager calls that may are
        // wrapped, and glibc's free keeps it since 2.33). The fast case
        // was tried already (or the core has just started).
        match self.core() {
            Some(core) => core.free_general(p),
            // SAFETY: before start-up every pointer is glibc's.
            None => unsafe { fallback::free(p) },
        }
    }

    /// `realloc(p, size)`: null `p` allocates; size 0 frees and returns
    /// null (glibc); otherwise the contents up to the smaller size are kept,
    /// in place when the block or the spans after it allow; a large object
    /// (from [`MOVE_MIN`](crate::MOVE_MIN)) that must move while mostly
    /// out of memory has its pages moved, not its bytes copied. On failure null with `ENOMEM`, and `p`
    /// is untouched.
    ///
    /// # Safety
    /// As [`SbmaAlloc::free`] for `p`.
    pub unsafe fn realloc(&self, p: *mut u8, size: usize) -> *mut u8 {
        if p.is_null() {
            return self.malloc(size);
        }
        if size == 0 {
            // SAFETY: the caller's contract.
            unsafe { self.free(p) };
            return core::ptr::null_mut();
        }
        let Some(core) = self
            .core()
            .filter(|c| c.spans.index_of(p as usize).is_some())
        else {
            // SAFETY: not in the arena: glibc's block, which stays one.
            let q = unsafe { fallback::realloc(p, size) };
            if q.is_null() {
                set_errno(libc::ENOMEM);
            }
            return q;
        };
        let Some(old) = core.usable_size(p) else {
            unreachable!("checked in the arena above")
        };
        if let Some(s) = core.large_span(p) {
            if size > core.classes.max_size() {
                if core.resize_large_in_place(s, size) {
                    return p;
                }
                if let Some(q) = core.move_large(p, s, size) {
                    return q;
                }
            }
        } else if size <= old
            && (size > core.classes.max_size()
                || core.classes.class_of(size) == core.classes.class_of(old))
        {
            return p;
        }
        let q = self.malloc(size);
        if !q.is_null() {
            // SAFETY: both live, distinct; `old` bytes are readable at `p`.
            unsafe { core::ptr::copy_nonoverlapping(p, q, old.min(size)) };
            core.free(p);
        }
        q
    }

    /// `reallocarray(p, n, size)`: `realloc(p, n × size)` with the product
    /// checked (null with `ENOMEM` on overflow, `p` untouched).
    ///
    /// # Safety
    /// As [`SbmaAlloc::realloc`].
    pub unsafe fn reallocarray(&self, p: *mut u8, n: usize, size: usize) -> *mut u8 {
        match n.checked_mul(size) {
            // SAFETY: the caller's contract.
            Some(total) => unsafe { self.realloc(p, total) },
            None => {
                set_errno(libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }

    /// `size` bytes aligned to `align` (a power of two; smaller than 16 is
    /// 16), or null with `ENOMEM`.
    pub fn aligned(&self, align: usize, size: usize) -> *mut u8 {
        debug_assert!(align.is_power_of_two());
        self.raw(size, align.max(MIN_ALIGN)).0
    }

    /// `posix_memalign(out, align, size)`: `EINVAL` unless `align` is a
    /// power of two multiple of `sizeof(void *)`, `ENOMEM` on failure, 0 on
    /// success; `errno` is not changed.
    ///
    /// # Safety
    /// `out` is valid for a pointer write.
    pub unsafe fn posix_memalign(&self, out: *mut *mut c_void, align: usize, size: usize) -> i32 {
        if !align.is_power_of_two() || align % size_of::<*mut c_void>() != 0 {
            return libc::EINVAL;
        }
        // SAFETY: the errno slot of this thread.
        let saved = unsafe { *libc::__errno_location() };
        let p = self.aligned(align, size);
        set_errno(saved);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller's contract.
        unsafe { *out = p.cast() };
        0
    }

    /// `aligned_alloc(align, size)`: null with `EINVAL` unless `align` is a
    /// power of two (glibc 2.38; any size is accepted, as C17 allows).
    pub fn aligned_alloc(&self, align: usize, size: usize) -> *mut u8 {
        if !align.is_power_of_two() {
            set_errno(libc::EINVAL);
            return core::ptr::null_mut();
        }
        self.aligned(align, size)
    }

    /// `memalign(align, size)`: any alignment, rounded up to a power of
    /// two.
    pub fn memalign(&self, align: usize, size: usize) -> *mut u8 {
        match align.checked_next_power_of_two() {
            Some(a) => self.aligned(a, size),
            None => {
                set_errno(libc::EINVAL);
                core::ptr::null_mut()
            }
        }
    }

    /// `valloc(size)`: aligned to the OS page.
    pub fn valloc(&self, size: usize) -> *mut u8 {
        self.aligned(rustix::param::page_size(), size)
    }

    /// `pvalloc(size)`: aligned to the OS page, size rounded up to whole
    /// pages (`pvalloc(0)` is one page).
    pub fn pvalloc(&self, size: usize) -> *mut u8 {
        let page = rustix::param::page_size();
        match size.max(1).checked_next_multiple_of(page) {
            Some(s) => self.aligned(page, s),
            None => {
                set_errno(libc::ENOMEM);
                core::ptr::null_mut()
            }
        }
    }

    /// `malloc_usable_size(p)` for a pointer of this allocator: every byte
    /// of it may be written. `Some(0)` for null; `None` if `p` is not in
    /// the arena (glibc's block: ask glibc).
    ///
    /// # Safety
    /// `p` is null or a live allocation.
    pub unsafe fn usable_size(&self, p: *const u8) -> Option<usize> {
        if p.is_null() {
            return Some(0);
        }
        self.core()?.usable_size(p)
    }
}

/// glibc's `calloc`, with `errno` set on failure.
fn fallback_calloc(n: usize, size: usize) -> *mut u8 {
    let p = fallback::calloc(n, size);
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p
}
