//! Starting a global `SbmaAlloc` before the Rust runtime does.
//!
//! std's runtime start-up (before `main`) checks whether SIGSEGV has a
//! handler and, if not, installs its stack-overflow handler, which does not
//! chain to others. Its check comes *before* its first allocation, so a
//! global allocator that starts (and installs the pager's handler) at that
//! allocation would be overwritten, and the first fault on managed memory
//! would kill the process. So this constructor (`.init_array`, run by the C
//! library before Rust's `main` and its runtime start-up) allocates once
//! through the global allocator: a global `SbmaAlloc` starts there, its
//! handler is in place before std looks, and std leaves SIGSEGV to it
//! (a stack overflow is then reported as a plain SIGSEGV). With any other
//! global allocator this is one malloc and one free.
#![allow(unsafe_code, reason = "placing a function in .init_array")]

/// The constructor; referenced from [`crate::SbmaAlloc`]'s start-up so
/// the linker keeps this object.
#[used]
#[unsafe(link_section = ".init_array")]
pub(crate) static START_GLOBAL_EARLY: extern "C" fn() = start_global_early;

extern "C" fn start_global_early() {
    drop(core::hint::black_box(Box::new(0u8)));
}
