//! Result codes (fixed numbers: they are part of the ABI) and the boundary
//! every export goes through.
//!
//! # Safety
//! `sbma_strerror` returns pointers to static strings; `last_error` copies
//! into a thread's own buffer.
#![allow(unsafe_code, reason = "static C strings and the errno slot")]

use core::ffi::c_char;
use sbma_alloc::sbma_pager::Error as PagerError;

/// What a call did. The numbers never change; new codes get new numbers.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C naming")]
pub enum sbma_result {
    /// Success.
    SBMA_OK = 0,
    /// A required pointer argument was NULL.
    SBMA_NULL_PARAMETER = 1,
    /// The range is not inside live storage-backed memory.
    SBMA_INVALID_RANGE = 2,
    /// A setting is malformed (see `sbma_last_error`).
    SBMA_INVALID_CONFIG = 3,
    /// The budget holds fewer than 4 SBMA pages.
    SBMA_BUDGET_TOO_SMALL = 4,
    /// No backing file can be created in the directory.
    SBMA_STORE = 5,
    /// Reading or writing the backing file failed (disk full, I/O error).
    SBMA_IO = 6,
    /// Every resident page is pinned: nothing can be evicted.
    SBMA_NO_EVICTABLE_PAGES = 7,
    /// A page in the range is pinned.
    SBMA_PINNED = 8,
    /// Called in a forked child (paging belongs to the parent).
    SBMA_FORKED = 9,
    /// Out of memory or address space.
    SBMA_OUT_OF_MEMORY = 10,
    /// The original API was used before `SBMA_init`.
    SBMA_NOT_INITIALIZED = 11,
    /// `SBMA_init` was called twice without `SBMA_destroy`.
    SBMA_ALREADY_INITIALIZED = 12,
    /// Reserving memory or installing the fault handler failed.
    SBMA_SYSTEM = 13,
    /// A bug in sbma (a panic was caught at the boundary).
    SBMA_INTERNAL = 14,
}

impl From<&PagerError> for sbma_result {
    fn from(e: &PagerError) -> Self {
        match e {
            PagerError::Config { .. } => sbma_result::SBMA_INVALID_CONFIG,
            PagerError::BudgetTooSmall { .. } => sbma_result::SBMA_BUDGET_TOO_SMALL,
            PagerError::Store { .. } => sbma_result::SBMA_STORE,
            PagerError::Io { .. } => sbma_result::SBMA_IO,
            PagerError::NoEvictablePages => sbma_result::SBMA_NO_EVICTABLE_PAGES,
            PagerError::Pinned => sbma_result::SBMA_PINNED,
            PagerError::InvalidRange => sbma_result::SBMA_INVALID_RANGE,
            PagerError::Forked => sbma_result::SBMA_FORKED,
            PagerError::OutOfAddressSpace { .. } => sbma_result::SBMA_OUT_OF_MEMORY,
            _ => sbma_result::SBMA_SYSTEM,
        }
    }
}

impl From<&sbma_alloc::Error> for sbma_result {
    fn from(e: &sbma_alloc::Error) -> Self {
        match e {
            sbma_alloc::Error::Pager(p) => p.into(),
            sbma_alloc::Error::Config { .. } | sbma_alloc::Error::SizeClasses(_) => {
                sbma_result::SBMA_INVALID_CONFIG
            }
            _ => sbma_result::SBMA_SYSTEM,
        }
    }
}

/// A static, NUL-terminated description of `code` (never NULL).
#[unsafe(no_mangle)]
pub extern "C" fn sbma_strerror(code: sbma_result) -> *const c_char {
    let s: &'static [u8] = match code {
        sbma_result::SBMA_OK => b"success\0",
        sbma_result::SBMA_NULL_PARAMETER => b"a required pointer was NULL\0",
        sbma_result::SBMA_INVALID_RANGE => b"the range is not in live storage-backed memory\0",
        sbma_result::SBMA_INVALID_CONFIG => b"invalid configuration\0",
        sbma_result::SBMA_BUDGET_TOO_SMALL => b"the budget holds fewer than 4 pages\0",
        sbma_result::SBMA_STORE => b"no backing file can be created in the directory\0",
        sbma_result::SBMA_IO => b"reading or writing the backing file failed\0",
        sbma_result::SBMA_NO_EVICTABLE_PAGES => b"every resident page is pinned\0",
        sbma_result::SBMA_PINNED => b"a page in the range is pinned\0",
        sbma_result::SBMA_FORKED => b"paging is not available in a forked child\0",
        sbma_result::SBMA_OUT_OF_MEMORY => b"out of memory or address space\0",
        sbma_result::SBMA_NOT_INITIALIZED => b"SBMA_init has not been called\0",
        sbma_result::SBMA_ALREADY_INITIALIZED => b"SBMA_init was already called\0",
        sbma_result::SBMA_SYSTEM => b"a system call failed while starting\0",
        sbma_result::SBMA_INTERNAL => b"internal error in sbma\0",
    };
    s.as_ptr().cast()
}

std::thread_local! {
    /// The calling thread's last error message (no destructor: `const`).
    static LAST: core::cell::Cell<[u8; 256]> = const { core::cell::Cell::new([0; 256]) };
}

/// Records `message` as the calling thread's last error (truncated).
pub(crate) fn set_last_error(message: &str) {
    let mut buf = [0u8; 256];
    let n = message.len().min(buf.len() - 1);
    buf[..n].copy_from_slice(&message.as_bytes()[..n]);
    LAST.with(|l| l.set(buf));
}

/// Copies the calling thread's last error message (NUL-terminated, empty
/// if none) into `buf` of `len` bytes; returns the message's length.
///
/// # Safety
/// `buf` is NULL or valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_last_error(buf: *mut c_char, len: usize) -> usize {
    let msg = LAST.with(core::cell::Cell::get);
    let n = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
    if !buf.is_null() && len > 0 {
        let k = n.min(len - 1);
        // SAFETY: `buf` holds `len > k` bytes (the caller's contract).
        unsafe {
            core::ptr::copy_nonoverlapping(msg.as_ptr(), buf.cast(), k);
            *buf.add(k) = 0;
        }
    }
    n
}

/// Runs `f`, turning a panic into `on_panic` (nothing unwinds into C).
pub(crate) fn boundary<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        set_last_error("internal error: a panic was caught at the C boundary");
        on_panic
    })
}

/// Records a pager error as the last error and returns its code.
pub(crate) fn fail(e: &PagerError) -> sbma_result {
    set_last_error(&e.to_string());
    e.into()
}
