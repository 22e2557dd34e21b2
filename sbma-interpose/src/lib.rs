//! # sbma-interpose
//!
//! The `LD_PRELOAD` shim behind `sbma run -- prog`: every heap allocation of
//! an unmodified program becomes storage-backed, so the budget bounds the
//! program's whole heap.
//!
//! - Exports the malloc family with glibc's semantics (`malloc`, `free`,
//!   `calloc`, `realloc`, `reallocarray`, `posix_memalign`, `aligned_alloc`,
//!   `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`, `cfree`, C23
//!   `free_sized`/`free_aligned_sized`, glibc's `__libc_malloc`,
//!   `__libc_calloc`, `__libc_realloc`, `__libc_memalign`, `__libc_free`,
//!   `__libc_valloc`, `__libc_pvalloc`, and `mallopt`, `mallinfo`,
//!   `mallinfo2`, `malloc_trim`, `malloc_stats` answering for sbma), plus
//!   libsbma's libc I/O wrappers (`read`, `write`, `fread`, `stat`, ...), so
//!   syscalls into evicted heap memory work.
//! - Configured only by environment: `SBMA_BUDGET`, `SBMA_PAGE_SIZE`,
//!   `SBMA_DIR`, `SBMA_POLICY`, `SBMA_BACKEND`, `SBMA_DECAY`, `SBMA_MIN_SIZE` (smaller
//!   requests go to glibc), `SBMA_STATS` (`1` or `json`: statistics on
//!   stderr at exit). The allocator starts when the library is loaded (an
//!   `.init_array` constructor); a malformed value stops the program there
//!   with one line naming the variable.
//! - Allocation calls made by libc or ld.so themselves get glibc's memory
//!   (`caller.rs`): they touch it where a fault cannot be served (a new
//!   thread's TLS vector with signals blocked, stdio buffers refilled by an
//!   internal `read`).
//! - Threads never block SIGSEGV or SIGBUS (`sigmask.rs`): a fault in a
//!   thread that blocks them kills the process.
//! - Allocations made while sbma itself starts, on its I/O threads and in a
//!   forked child come from glibc (its `__libc_malloc`, found with
//!   `dlsym(RTLD_NEXT)` so the shim's own export is not it); pointers that
//!   are not sbma's (from glibc, from before the shim) are freed by glibc.
//!
//! Not yet: wrappers of the calls that take a path (`open`, `access`, ...).
#![deny(unsafe_code)]

mod caller;
mod exports;
mod sigmask;
