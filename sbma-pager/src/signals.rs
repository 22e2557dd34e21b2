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
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

/// The dispositions faults that are not ours go to: what SIGSEGV and SIGBUS
/// had before our handler, or what the program installed since through an
/// interposed `sigaction` ([`interpose`]). A seqlock: written under
/// `INSTALL`, read by the handler without a lock (it copies and retries if
/// a write overlapped).
struct Previous {
    seq: AtomicU32,
    segv: UnsafeCell<MaybeUninit<libc::sigaction>>,
    bus: UnsafeCell<MaybeUninit<libc::sigaction>>,
}

// SAFETY: written only under INSTALL with the sequence odd; readers copy
// and retry while the sequence is odd or has moved.
unsafe impl Sync for Previous {}

static PREVIOUS: Previous = Previous {
    seq: AtomicU32::new(0),
    segv: UnsafeCell::new(MaybeUninit::uninit()),
    bus: UnsafeCell::new(MaybeUninit::uninit()),
};

impl Previous {
    fn slot(&self, sig: libc::c_int) -> *mut libc::sigaction {
        if sig == libc::SIGSEGV {
            self.segv.get().cast()
        } else {
            self.bus.get().cast()
        }
    }

    /// A consistent copy of the disposition for `sig` (set before).
    /// Async-signal-safe.
    fn read(&self, sig: libc::c_int) -> libc::sigaction {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before & 1 == 0 {
                // SAFETY: written before (acquire); a torn copy is
                // discarded below. Volatile: the copy is really made.
                let copy = unsafe { self.slot(sig).read_volatile() };
                core::sync::atomic::fence(Ordering::Acquire);
                if self.seq.load(Ordering::Relaxed) == before {
                    return copy;
                }
            }
            core::hint::spin_loop();
        }
    }

    /// Sets the disposition for `sig`; callers hold `INSTALL`.
    fn write(&self, sig: libc::c_int, act: &libc::sigaction) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        // SAFETY: exclusive under INSTALL; readers retry while odd.
        unsafe { self.slot(sig).write_volatile(*act) };
        self.seq.fetch_add(1, Ordering::Release);
    }
}

/// How many pagers need the handler.
static INSTALL: Mutex<usize> = Mutex::new(0);

type SigactionFn =
    unsafe extern "C" fn(libc::c_int, *const libc::sigaction, *mut libc::sigaction) -> libc::c_int;

/// libc's `sigaction`, past any interposer of it (the preload shim and
/// libsbma export one that calls [`interpose`]; the pager's own calls must
/// reach the kernel). Resolved by [`acquire`], before the handler runs.
static REAL_SIGACTION: AtomicUsize = AtomicUsize::new(0);

fn real_sigaction() -> SigactionFn {
    let mut f = REAL_SIGACTION.load(Ordering::Acquire);
    if f == 0 {
        // SAFETY: a NUL-terminated name; RTLD_NEXT from this object finds
        // the next definition (libc's).
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, c"sigaction".as_ptr()) } as usize;
        if f == 0 {
            // A static executable: nothing is interposed.
            f = libc::sigaction as *const () as usize;
        }
        REAL_SIGACTION.store(f, Ordering::Release);
    }
    // SAFETY: libc's sigaction has this signature.
    unsafe { core::mem::transmute::<usize, SigactionFn>(f) }
}

/// Installs the handler (first user) or counts one more user.
pub fn acquire() -> Result<(), rustix::io::Errno> {
    let mut users = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if *users == 0 {
        let sigaction = real_sigaction();
        // SAFETY: no handler of ours is installed, so nothing reads
        // PREVIOUS concurrently; sigaction is given valid pointers.
        unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            for sig in [libc::SIGSEGV, libc::SIGBUS] {
                let mut prev: libc::sigaction = core::mem::zeroed();
                if sigaction(sig, &sa, &mut prev) != 0 {
                    return Err(rustix::io::Errno::from_raw_os_error(
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
                    ));
                }
                PREVIOUS.write(sig, &prev);
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
    let sigaction = real_sigaction();
    for sig in [libc::SIGSEGV, libc::SIGBUS] {
        let prev = PREVIOUS.read(sig);
        // SAFETY: sigaction gets valid pointers.
        unsafe {
            let mut current: libc::sigaction = core::mem::zeroed();
            sigaction(sig, core::ptr::null(), &mut current);
            if current.sa_sigaction == handler as *const () as usize {
                sigaction(sig, &prev, core::ptr::null_mut());
            }
        }
    }
}

/// For an interposed `sigaction(2)` (libsbma and the preload shim export
/// one): while sbma's handler is installed, a program that installs or
/// asks for a SIGSEGV or SIGBUS disposition gets the one sbma chains to,
/// not the kernel's. Its new handler then receives every fault that is not
/// sbma's, as it would have without sbma, instead of replacing sbma's
/// handler (Python's `faulthandler` did that, and the next fault on an
/// evicted page killed the process). Returns `false` (the caller should
/// call libc's `sigaction`) for other signals or without the handler.
///
/// Differences from the kernel's delivery, for such a handler: it runs
/// inside sbma's handler, with sbma's signal mask and flags
/// (`SA_RESETHAND` is not applied).
///
/// # Safety
/// `act` is NULL or a valid `sigaction`; `old` NULL or writable.
pub unsafe fn interpose(
    sig: libc::c_int,
    act: *const libc::sigaction,
    old: *mut libc::sigaction,
) -> bool {
    if sig != libc::SIGSEGV && sig != libc::SIGBUS {
        return false;
    }
    // Copied before the lock: reading `act` may fault (managed memory).
    // SAFETY: the caller's contract.
    let new = unsafe { act.as_ref().copied() };
    let users = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if *users == 0 {
        return false;
    }
    let current = PREVIOUS.read(sig);
    if let Some(new) = &new {
        PREVIOUS.write(sig, new);
    }
    drop(users);
    // SAFETY: the caller's contract.
    if let Some(old) = unsafe { old.as_mut() } {
        *old = current;
    }
    true
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
    #[cfg(all(target_arch = "aarch64", target_os = "linux"))]
    {
        // SAFETY: the kernel passes a valid ucontext_t; its sigcontext's
        // `__reserved` area (4096 bytes, 16-aligned, right after `pstate`)
        // holds the context records, the ESR among them.
        let records = unsafe {
            let mc = core::ptr::addr_of!((*ctx.cast::<libc::ucontext_t>()).uc_mcontext);
            let after = core::ptr::addr_of!((*mc).pstate).cast::<u8>().add(8);
            let start = after.add(after.align_offset(16));
            core::slice::from_raw_parts(start, AARCH64_RESERVED)
        };
        esr_is_write(records)
    }
    #[cfg(not(any(
        all(target_arch = "x86_64", target_os = "linux"),
        all(target_arch = "aarch64", target_os = "linux")
    )))]
    {
        let _ = ctx;
        None
    }
}

/// Bytes of an aarch64 sigcontext's `__reserved` record area.
#[cfg(any(target_arch = "aarch64", test))]
const AARCH64_RESERVED: usize = 4096;

/// Whether an aarch64 data abort was a write, from the `esr_context`
/// record (`ESR_MAGIC`) in the signal frame's record area
/// (arch/arm64/include/uapi/asm/sigcontext.h): ESR_ELx.EC is a data abort
/// (0x24 from EL0, 0x25) and WnR (bit 6) is set, not for a cache
/// maintenance operation (CM, bit 8), as the kernel's `is_write_abort`
/// reads it. `None` without a usable record. Reads only the slice:
/// async-signal-safe, and decoded the same on every architecture (tested
/// on x86-64 with frames built by hand).
#[cfg(any(target_arch = "aarch64", test))]
fn esr_is_write(records: &[u8]) -> Option<bool> {
    const ESR_MAGIC: u32 = 0x4553_5201;
    const EC_DABT_LOW: u64 = 0x24;
    const EC_DABT_CUR: u64 = 0x25;
    const WNR: u64 = 1 << 6;
    const CM: u64 = 1 << 8;
    let word = |at: usize| -> Option<u32> {
        let b = records.get(at..at + 4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut at = 0;
    loop {
        let (magic, size) = (word(at)?, word(at + 4)? as usize);
        if magic == 0 || size < 8 {
            return None; // the terminator, or a malformed record
        }
        if magic == ESR_MAGIC {
            let b = records.get(at + 8..at + 16)?;
            let esr = u64::from_ne_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            let ec = (esr >> 26) & 0x3f;
            return (ec == EC_DABT_LOW || ec == EC_DABT_CUR)
                .then_some(esr & WNR != 0 && esr & CM == 0);
        }
        at = at.checked_add(size)?;
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
        registry::with_arena(addr, |arena| arena.on_fault(addr, write, None)).flatten()
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
    let prev = PREVIOUS.read(sig);
    let action = prev.sa_sigaction;
    if action == libc::SIG_DFL || action == libc::SIG_IGN {
        // Put the default back and return: the access faults again and the
        // kernel applies the default action (a synchronous SIGSEGV cannot
        // be ignored). The process is about to die of it anyway.
        // SAFETY: valid pointers; libc's sigaction (resolved by `acquire`)
        // is async-signal-safe.
        unsafe { real_sigaction()(sig, &prev, core::ptr::null_mut()) };
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
            b"storage-backed memory that is not resident touched in a forked child that has no fork snapshot (16 children that have not exec'd hold them all, or the child was not made by fork)"
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

#[cfg(test)]
mod tests {
    use super::{AARCH64_RESERVED, esr_is_write};

    /// A record area as the arm64 kernel lays it out: an fpsimd record
    /// (528 bytes), then an ESR record, then the terminator.
    fn frame(esr: Option<u64>) -> Vec<u8> {
        let mut f = vec![0u8; AARCH64_RESERVED];
        let mut put = |at: usize, bytes: &[u8]| f[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &0x4650_8001u32.to_ne_bytes()); // FPSIMD_MAGIC
        put(4, &528u32.to_ne_bytes());
        if let Some(esr) = esr {
            put(528, &0x4553_5201u32.to_ne_bytes()); // ESR_MAGIC
            put(532, &16u32.to_ne_bytes());
            put(536, &esr.to_ne_bytes());
        }
        f
    }

    const DABT_LOW: u64 = 0x24 << 26;
    const DABT_CUR: u64 = 0x25 << 26;

    #[test]
    fn data_aborts_read_the_write_bit() {
        assert_eq!(
            esr_is_write(&frame(Some(DABT_LOW | 1 << 6 | 0x7))),
            Some(true)
        );
        assert_eq!(esr_is_write(&frame(Some(DABT_LOW | 0x7))), Some(false));
        assert_eq!(esr_is_write(&frame(Some(DABT_CUR | 1 << 6))), Some(true));
    }

    #[test]
    fn cache_maintenance_is_not_a_write() {
        assert_eq!(
            esr_is_write(&frame(Some(DABT_LOW | 1 << 6 | 1 << 8))),
            Some(false)
        );
    }

    #[test]
    fn other_exceptions_and_missing_records_are_unknown() {
        // An instruction abort (EC 0x20) has no WnR.
        assert_eq!(esr_is_write(&frame(Some(0x20 << 26 | 1 << 6))), None);
        assert_eq!(esr_is_write(&frame(None)), None);
        // A record claiming a size below its header stops the walk.
        let mut bad = frame(None);
        bad[4..8].copy_from_slice(&4u32.to_ne_bytes());
        assert_eq!(esr_is_write(&bad), None);
        // A record running past the area stops it too.
        let mut long = frame(None);
        long[4..8].copy_from_slice(&(AARCH64_RESERVED as u32 + 16).to_ne_bytes());
        assert_eq!(esr_is_write(&long), None);
    }
}
