//! Who is allocating: the C library and the dynamic loader get glibc's
//! memory, the program gets sbma's.
//!
//! glibc and ld.so touch some of what they allocate at moments when a page
//! fault cannot be served: a new thread reads its TLS vector (calloc'ed by
//! `_dl_allocate_tls`) while all its signals are still blocked (a SIGSEGV
//! then kills the process: coreutils `sort` died this way), and stdio
//! refills `FILE` buffers with an internal `read` that no wrapper sees
//! (EFAULT on a page that is not resident). So allocation calls whose
//! return address lies in the text of libc or ld.so are served by glibc.
//! The exported allocation functions are naked trampolines that pass their
//! return address on (x86-64; elsewhere there is no caller information and
//! every call is the program's).
//!
//! # Safety
//! `dl_iterate_phdr` hands a valid `dl_phdr_info` to the callback.
#![allow(unsafe_code, reason = "reading the loaded objects' program headers")]

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

/// Executable ranges of libc and ld.so: `[start, end)` pairs.
static RANGES: [(AtomicUsize, AtomicUsize); 8] =
    [const { (AtomicUsize::new(0), AtomicUsize::new(0)) }; 8];

/// Whether `caller` (a return address) is inside libc or ld.so.
#[inline]
pub(crate) fn system(caller: usize) -> bool {
    RANGES.iter().any(|(s, e)| {
        let s = s.load(Ordering::Relaxed);
        s != 0 && caller >= s && caller < e.load(Ordering::Relaxed)
    })
}

/// Finds the executable segments of libc and ld.so (called when the shim
/// starts).
pub(crate) fn init() {
    // SAFETY: our callback only reads the info it is given.
    unsafe { libc::dl_iterate_phdr(Some(visit), core::ptr::null_mut()) };
}

unsafe extern "C" fn visit(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    _data: *mut c_void,
) -> c_int {
    // SAFETY: valid for the call (dl_iterate_phdr's contract).
    let info = unsafe { &*info };
    if info.dlpi_name.is_null() {
        return 0;
    }
    // SAFETY: a NUL-terminated path.
    let name = unsafe { core::ffi::CStr::from_ptr(info.dlpi_name) }.to_bytes();
    let file = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
    if !(file.starts_with(b"libc.so") || file.starts_with(b"ld-linux")) {
        return 0;
    }
    for i in 0..info.dlpi_phnum as usize {
        // SAFETY: `dlpi_phnum` headers at `dlpi_phdr`.
        let ph = unsafe { &*info.dlpi_phdr.add(i) };
        if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
            let start = info.dlpi_addr as usize + ph.p_vaddr as usize;
            let end = start + ph.p_memsz as usize;
            if let Some(slot) = RANGES.iter().find(|r| r.0.load(Ordering::Relaxed) == 0) {
                slot.1.store(end, Ordering::Relaxed);
                slot.0.store(start, Ordering::Release);
            }
        }
    }
    0
}
