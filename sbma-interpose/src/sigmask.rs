//! Threads never block SIGSEGV or SIGBUS.
//!
//! A thread that touches a page which is not resident raises SIGSEGV, and
//! the kernel kills the whole process if that thread has SIGSEGV blocked
//! (a synchronous fault cannot wait). Programs block "all signals" in their
//! worker threads (xz's threads do, and died on their first touch of the
//! heap), so `sigprocmask` and `pthread_sigmask` here drop SIGSEGV and
//! SIGBUS from the signals to block. Blocking them never had an effect on
//! real faults except death, so programs lose nothing.
//!
//! # Safety
//! The wrappers have libc's contracts; they forward pointers.
#![allow(unsafe_code, reason = "libc's signal-mask functions, forwarded")]

use core::ffi::c_int;

type MaskFn = unsafe extern "C" fn(c_int, *const libc::sigset_t, *mut libc::sigset_t) -> c_int;

/// `set` without SIGSEGV and SIGBUS when they would be blocked.
fn filtered(how: c_int, set: *const libc::sigset_t) -> Option<libc::sigset_t> {
    if set.is_null() || how == libc::SIG_UNBLOCK {
        return None;
    }
    // SAFETY: a valid set (the caller's contract), copied.
    let mut s = unsafe { *set };
    // SAFETY: our copy.
    unsafe {
        libc::sigdelset(&mut s, libc::SIGSEGV);
        libc::sigdelset(&mut s, libc::SIGBUS);
    }
    Some(s)
}

/// `pthread_sigmask(3)`, never blocking SIGSEGV or SIGBUS.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pthread_sigmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    let f = sbma::libc_fn!("pthread_sigmask", MaskFn);
    let s = filtered(how, set);
    let set = s.as_ref().map_or(set, |s| s as *const libc::sigset_t);
    // SAFETY: forwarded.
    unsafe { f(how, set, old) }
}

/// `sigprocmask(2)`, never blocking SIGSEGV or SIGBUS.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sigprocmask(
    how: c_int,
    set: *const libc::sigset_t,
    old: *mut libc::sigset_t,
) -> c_int {
    let f = sbma::libc_fn!("sigprocmask", MaskFn);
    let s = filtered(how, set);
    let set = s.as_ref().map_or(set, |s| s as *const libc::sigset_t);
    // SAFETY: forwarded.
    unsafe { f(how, set, old) }
}
