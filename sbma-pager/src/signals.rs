//! The SIGSEGV/SIGBUS handler: install once, resolve faults in managed
//! memory, chain everything else to the previous handler.
//!
//! # What the handler does
//!
//! 1. Saves `errno`.
//! 2. Looks the address up in the arena registry (atomics only).
//! 3. Not in any live region → chains: calls the previous handler, or, if
//!    that was `SIG_DFL`/`SIG_IGN`, reinstalls it and returns, so that the
//!    faulting instruction faults again and gets the default action (the
//!    process dies of SIGSEGV as it would have without sbma).
//! 4. In a live region → resolves the fault (see `Arena::resolve`); on
//!    success restores `errno` and returns, and the instruction is retried.
//! 5. A fault that cannot be resolved (I/O error, full disk, budget full
//!    of pinned pages) writes one line naming the address and the error to
//!    standard error and aborts: continuing would mean running on zeros or
//!    stale data.
//!
//! It allocates nothing, formats nothing with the allocator, and takes only
//! the pager's futex and spin locks, which are never held while managed
//! memory is touched. The complete list of calls it may make is in
//! `docs/signals.md`.
//!
//! Flags: `SA_SIGINFO | SA_ONSTACK | SA_NODEFER`. A first write is
//! classified by the hardware (x86-64: bit 1 of the page-fault error code in
//! `REG_ERR`), so it costs one fault, not two.
#![allow(
    unsafe_code,
    reason = "signal handler installation and ucontext access"
)]

use crate::arena::FaultError;
use crate::registry;
use crate::sys;
use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use std::sync::Mutex;

/// The previous dispositions, written before our handler is installed and
/// only read afterwards.
struct Previous {
    segv: UnsafeCell<MaybeUninit<libc::sigaction>>,
    bus: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: written only by `install` while it holds INSTALL (before the
// handler that reads it can run), read only afterwards.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous {
    segv: UnsafeCell::new(MaybeUninit::uninit()),
    bus: UnsafeCell::new(MaybeUninit::uninit()),
};

/// How many pagers need the handler.
static INSTALL: Mutex<usize> = Mutex::new(0);

/// Installs the handler (first user) or counts one more user.
pub fn acquire() -> Result<(), rustix::io::Errno> {
    let mut users = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if *users == 0 {
        // SAFETY: no handler of ours is installed, so nothing reads
        // PREVIOUS concurrently; sigaction is given valid pointers.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            for (sig, prev) in [
                (libc::SIGSEGV, PREVIOUS.segv.get()),
                (libc::SIGBUS, PREVIOUS.bus.get()),
            ] {
                if libc::sigaction(sig, &sa, (*prev).as_mut_ptr()) != 0 {
                    return Err(rustix::io::Errno::from_raw_os_error(
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                    ));
                }
            }
        }
    }
    *users += 1;
    Ok(())
}

/// One user fewer; the last one restores the previous handlers, unless
/// somebody installed another handler on top of ours since (then ours stays,
/// and keeps chaining to what it replaced).
pub fn release() {
    let mut users = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    *users -= 1;
    if *users > 0 {
        return;
    }
    for (sig, prev) in [
        (libc::SIGSEGV, PREVIOUS.segv.get()),
        (libc::SIGBUS, PREVIOUS.bus.get()),
    ] {
        // SAFETY: PREVIOUS was filled by `acquire`; sigaction gets valid
        // pointers.
        unsafe {
            let mut current: libc::sigaction = core::mem::zeroed();
            libc::sigaction(sig, core::ptr::null(), &mut current);
            if current.sa_sigaction == handler as *const () as usize {
                libc::sigaction(sig, (*prev).as_ptr(), core::ptr::null_mut());
            }
        }
    }
}

/// Whether the faulting access was a write, from the hardware's error
/// code; `None` where the architecture's context is not decoded.
///
/// # Safety
/// `ctx` is the `ucontext_t` the kernel passed to the handler.
unsafe fn is_write(ctx: *mut libc::c_void) -> Option<bool> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        // SAFETY: the kernel passes a valid ucontext_t to SA_SIGINFO
        // handlers; REG_ERR holds the page-fault error code.
        let err =
            unsafe { (*ctx.cast::<libc::ucontext_t>()).uc_mcontext.gregs[libc::REG_ERR as usize] };
        Some(err & 2 != 0)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        let _ = ctx;
        None
    }
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: errno is thread-local; reading and restoring it is what
    // keeps the interrupted code's view intact.
    let errno_slot = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno_slot };
    // SAFETY: the kernel passes a valid siginfo_t for SIGSEGV/SIGBUS.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // SAFETY: ctx comes from the kernel.
    let write = unsafe { is_write(ctx) };
    // Only faults raised by the kernel (si_code > 0) carry an address; a
    // SIGSEGV sent by kill/tgkill (the uffd service's answer to a use
    // after free) is never ours.
    let outcome = if sig == libc::SIGSEGV && code > 0 {
        registry::with_arena(addr, |arena| arena.on_fault(addr, write)).flatten()
    } else {
        None
    };
    match outcome {
        Some(Ok(())) => {
            // SAFETY: see above.
            unsafe { *errno_slot = saved };
        }
        Some(Err(e)) => fatal(addr, e),
        None => {
            // SAFETY: arguments are the kernel's, passed through.
            unsafe { chain(sig, info, ctx) };
            // SAFETY: see above.
            unsafe { *errno_slot = saved };
        }
    }
}

/// Hands a fault that is not ours to whoever had the signal before.
///
/// # Safety
/// Called from the handler with the kernel's arguments.
unsafe fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = if sig == libc::SIGSEGV {
        PREVIOUS.segv.get()
    } else {
        PREVIOUS.bus.get()
    };
    // SAFETY: PREVIOUS was filled before this handler was installed.
    let prev = unsafe { (*prev).assume_init_ref() };
    let action = prev.sa_sigaction;
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // Put the default back and return: the access faults again and the
        // kernel applies the default action (a synchronous SIGSEGV cannot
        // be ignored). The process is about to die of it anyway.
        // SAFETY: valid pointers; sigaction is async-signal-safe.
        unsafe { libc::sigaction(sig, prev, core::ptr::null_mut()) };
    } else if prev.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: an SA_SIGINFO handler has this signature.
        let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { core::mem::transmute(action) };
        f(sig, info, ctx);
    } else {
        // SAFETY: a plain handler has this signature.
        let f: extern "C" fn(libc::c_int) = unsafe { core::mem::transmute(action) };
        f(sig);
    }
}

/// Reports an unresolvable fault in one line and aborts.
pub(crate) fn fatal(addr: usize, e: FaultError) -> ! {
    let mut hex = [0u8; 18];
    let what: &[u8] = match e {
        FaultError::Read(_) => b"reading the page from the backing file failed: ",
        FaultError::Write(_) => b"writing pages back to make room failed: ",
        FaultError::Protect(_) => b"mprotect failed: ",
        FaultError::NoEvictablePages => b"the budget is full and every resident page is pinned",
        FaultError::Reentered => b"managed memory touched while this thread holds the pager's eviction lock (signal handler?)",
        FaultError::Forked => {
            b"storage-backed memory that is not resident touched in a forked child (sbma memory cannot be paged after fork: exec, or use posix_spawn)"
        }
    };
    let errno = match e {
        FaultError::Read(e) | FaultError::Write(e) | FaultError::Protect(e) => Some(e),
        _ => None,
    };
    let mut num = [0u8; 20];
    let (name, number): (&[u8], &[u8]) = match errno {
        Some(e) => (
            errno_name(e),
            sys::decimal(e.raw_os_error().unsigned_abs() as usize, &mut num),
        ),
        None => (b"", b""),
    };
    sys::die(&[
        b"sbma: cannot resolve fault at ",
        sys::hex(addr, &mut hex),
        b": ",
        what,
        name,
        number,
    ])
}

/// A short description for common errnos (followed by the number).
fn errno_name(e: rustix::io::Errno) -> &'static [u8] {
    use rustix::io::Errno;
    match e {
        Errno::NOSPC => b"no space left on device, errno ",
        Errno::IO => b"input/output error, errno ",
        Errno::FBIG => b"file too large, errno ",
        Errno::NOMEM => b"out of memory or vm.max_map_count reached, errno ",
        Errno::DQUOT => b"disk quota exceeded, errno ",
        Errno::ROFS => b"read-only file system, errno ",
        _ => b"errno ",
    }
}
