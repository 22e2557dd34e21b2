//! `sigaction`, `signal` and `sigaltstack`, where the program's choices
//! would break sbma's fault handling.
//!
//! `sigaction` and `signal` for SIGSEGV and SIGBUS, while sbma's fault
//! handler is installed: the program's handler becomes the one sbma
//! chains to for faults that are not its own, instead of replacing sbma's
//! handler (`sbma_pager::interpose_sigaction`). Python's test runner
//! enables `faulthandler`, which installs a SIGSEGV handler; under the
//! signal backend the next fault on an evicted page then went to it and
//! the process died. Other signals, and every call before sbma's handler
//! is installed, go straight to libc.
//!
//! `sigaltstack` with a stack in managed memory (Python's `faulthandler`
//! allocates its alternate stack on the heap): the kernel writes each
//! signal frame there, and under the signal backend a frame on an evicted
//! page cannot be written, so the kernel kills the process with SIGSEGV
//! (`si_code` `SI_KERNEL`) the next time a fault is delivered. The thread
//! keeps (or gets) an alternate stack of sbma's outside managed memory
//! instead, and the program is told its own is in place.
//!
//! # Safety
//! The wrappers have libc's contracts.
#![allow(unsafe_code, reason = "libc's signal functions, forwarded")]

use crate::libc_fn;
use core::ffi::c_int;
use libc::{sigaction as Action, sighandler_t};

type SigactionFn = unsafe extern "C" fn(c_int, *const Action, *mut Action) -> c_int;
type SignalFn = unsafe extern "C" fn(c_int, sighandler_t) -> sighandler_t;

/// `sigaction(2)`: see the module doc.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaction(sig: c_int, act: *const Action, old: *mut Action) -> c_int {
    // SAFETY: the caller's pointers, as libc's contract requires.
    if unsafe { sbma_alloc::sbma_pager::interpose_sigaction(sig, act, old) } {
        return 0;
    }
    let f = libc_fn!("sigaction", SigactionFn);
    // SAFETY: forwarded.
    unsafe { f(sig, act, old) }
}

/// `signal(3)` (glibc's BSD semantics: `SA_RESTART`, the signal blocked
/// in its handler): see the module doc.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn signal(sig: c_int, handler: sighandler_t) -> sighandler_t {
    // SAFETY: a plain struct; every field set below.
    let mut act: Action = unsafe { core::mem::zeroed() };
    act.sa_sigaction = handler;
    act.sa_flags = libc::SA_RESTART;
    // SAFETY: our own set.
    unsafe {
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaddset(&mut act.sa_mask, sig);
    }
    // SAFETY: a zeroed struct is a valid output.
    let mut old: Action = unsafe { core::mem::zeroed() };
    // SAFETY: valid pointers.
    if unsafe { sbma_alloc::sbma_pager::interpose_sigaction(sig, &act, &mut old) } {
        return old.sa_sigaction;
    }
    let f = libc_fn!("signal", SignalFn);
    // SAFETY: forwarded.
    unsafe { f(sig, handler) }
}

type SigaltstackFn = unsafe extern "C" fn(*const libc::stack_t, *mut libc::stack_t) -> c_int;

std::thread_local! {
    /// The alternate stack the program believes this thread has, when its
    /// own was refused (in managed memory).
    static PROGRAM_STACK: core::cell::Cell<Option<libc::stack_t>> =
        const { core::cell::Cell::new(None) };
}

/// `sigaltstack(2)`: see the module doc.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigaltstack(ss: *const libc::stack_t, old: *mut libc::stack_t) -> c_int {
    let f = libc_fn!("sigaltstack", SigaltstackFn);
    // SAFETY: NULL or valid (the caller's contract).
    let new = unsafe { ss.as_ref().copied() };
    let refuse = new.is_some_and(|s| {
        s.ss_flags & libc::SS_DISABLE == 0 && crate::io::needs_help(s.ss_sp.cast_const())
    });
    let shown = PROGRAM_STACK.with(core::cell::Cell::get);
    if refuse {
        // Keep a real one of sbma's in place; remember the program's.
        sbma_alloc::sbma_pager::ensure_altstack();
        let mut current = shown.unwrap_or_else(|| {
            // SAFETY: a zeroed stack_t is a valid output.
            let mut c: libc::stack_t = unsafe { core::mem::zeroed() };
            // SAFETY: querying with a valid pointer.
            unsafe { f(core::ptr::null(), &mut c) };
            c
        });
        current.ss_flags &= !libc::SS_ONSTACK;
        PROGRAM_STACK.with(|p| p.set(new));
        // SAFETY: NULL or writable (the caller's contract).
        if let Some(old) = unsafe { old.as_mut() } {
            *old = current;
        }
        return 0;
    }
    if let (Some(shown), None) = (shown, new) {
        // A query while the program's stack stands in for sbma's.
        // SAFETY: NULL or writable (the caller's contract).
        if let Some(old) = unsafe { old.as_mut() } {
            *old = shown;
        }
        return 0;
    }
    if new.is_some() {
        PROGRAM_STACK.with(|p| p.set(None));
    }
    // SAFETY: forwarded.
    let r = unsafe { f(ss, old) };
    if let (Some(shown), false) = (shown, old.is_null()) {
        // SAFETY: written by libc just now; the program saw its own.
        unsafe { *old = shown };
    }
    r
}
