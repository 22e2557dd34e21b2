//! Rust front ends: `GlobalAlloc` (for `#[global_allocator]`) and
//! `allocator_api2::alloc::Allocator` for `&SbmaAlloc` (for
//! `allocator_api2` and hashbrown collections placed in a given
//! allocator).
//!
//! # Safety
//! Both traits are `unsafe` to implement: blocks must be valid for their
//! layout until freed. The malloc family guarantees that for any size and
//! power-of-two alignment.
#![allow(unsafe_code, reason = "implementing the unsafe allocator traits")]

use crate::SbmaAlloc;
use allocator_api2::alloc::{AllocError, Allocator};
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

// SAFETY: `aligned` returns null or a block of at least `size` bytes aligned
// to `align`, valid until it is freed; `free` and `realloc` accept exactly
// those blocks.
unsafe impl GlobalAlloc for SbmaAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= crate::MIN_ALIGN {
            self.malloc(layout.size())
        } else {
            self.aligned(layout.align(), layout.size())
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= crate::MIN_ALIGN {
            self.calloc(1, layout.size())
        } else {
            let p = self.aligned(layout.align(), layout.size());
            if !p.is_null() {
                // SAFETY: just allocated, `size` bytes.
                unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
            }
            p
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` is a live block of ours (the trait's contract).
        unsafe { self.free(ptr) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= crate::MIN_ALIGN {
            // SAFETY: the trait's contract (`new_size > 0`).
            return unsafe { SbmaAlloc::realloc(self, ptr, new_size) };
        }
        // Over-aligned: allocate, copy, free (the C realloc keeps only 16).
        let q = self.aligned(layout.align(), new_size);
        if !q.is_null() {
            // SAFETY: both live, distinct, the smaller size readable.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                self.free(ptr);
            }
        }
        q
    }
}

// SAFETY: blocks stay valid until deallocated through this allocator (the
// `SbmaAlloc` outlives the reference); zero-sized requests get a dangling,
// aligned pointer and are never freed.
unsafe impl Allocator for &SbmaAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            let p = NonNull::new(layout.align() as *mut u8).ok_or(AllocError)?;
            return Ok(NonNull::slice_from_raw_parts(p, 0));
        }
        // SAFETY: non-zero size.
        let p = unsafe { GlobalAlloc::alloc(*self, layout) };
        let p = NonNull::new(p).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        if layout.size() == 0 {
            return self.allocate(layout);
        }
        // SAFETY: non-zero size.
        let p = unsafe { GlobalAlloc::alloc_zeroed(*self, layout) };
        let p = NonNull::new(p).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if layout.size() != 0 {
            // SAFETY: allocated by `allocate` with this layout.
            unsafe { self.free(ptr.as_ptr()) }
        }
    }
}
