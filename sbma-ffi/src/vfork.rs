//! `vfork` becomes `fork`.
//!
//! A `vfork` child shares its parent's memory until it execs, and runs
//! code in it: dash (0.5.11 and later) builds a command's arguments and
//! environment in its heap, then `vfork`s and execs from the child. Under
//! sbma that child touches managed pages with a process id that is not
//! the pager's, without the `pthread_atfork` handlers having run (`vfork`
//! runs none), so it could neither page as its parent (other threads of
//! the parent keep running and evicting) nor as a forked child (no fork
//! snapshot). `fork` gives it a snapshot and a copy of the memory (see
//! `sbma_pager`'s fork snapshots); the price is copying the page tables,
//! which is what `vfork` saves. POSIX leaves undefined everything a `vfork`
//! child does besides `_exit` and the exec family, so a correct program
//! cannot tell the difference.
//!
//! `posix_spawn` (glibc's `clone(CLONE_VM | CLONE_VFORK)`) is not affected:
//! its child runs only glibc's code and execs, and the wrapper in `path`
//! pins what the kernel reads.
#![allow(unsafe_code, reason = "exported C entry points")]

/// `vfork(2)`, run as `fork(2)` (see the module doc).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vfork() -> libc::pid_t {
    // SAFETY: fork has no preconditions beyond vfork's.
    unsafe { libc::fork() }
}

/// glibc's other name for `vfork`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __vfork() -> libc::pid_t {
    // SAFETY: as above.
    unsafe { libc::fork() }
}
