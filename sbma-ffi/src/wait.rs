//! Waiting for events with arguments in managed memory: `epoll_wait`,
//! `epoll_pwait`, `epoll_pwait2`, `epoll_ctl`, `poll`, `ppoll` (and their
//! `_chk` forms), `select`, `pselect`.
//!
//! These may block for as long as the caller asks, so their arguments are
//! not pinned (a pin would hold budget for the whole wait): the kernel gets
//! copies on the calling thread's stack (`bounce.rs`), up to
//! [`BOUNCE_EVENTS`] epoll events per call (returning fewer events than
//! `maxevents` is `epoll_wait`'s documented behaviour) and [`BOUNCE_FDS`]
//! poll entries; a larger `poll` array is pinned for its wait. Event loops
//! (libevent in Open MPI's PMIx, Python's selectors) keep these arrays on
//! the heap, where under the signal backend the kernel would fail with
//! `EFAULT` once the page was evicted.
//!
//! # Safety
//! The wrappers have libc's contracts; they forward pointers or copies.
#![allow(unsafe_code, reason = "libc's event-waiting functions, forwarded")]

use crate::bounce::Bounce;
use crate::io::{needs_help, pin};
use crate::libc_fn;
use core::ffi::c_int;
use core::mem::MaybeUninit;
use libc::{epoll_event, fd_set, nfds_t, pollfd, sigset_t, timespec, timeval};
use sbma_alloc::sbma_pager::Access;

/// The most epoll events one call returns when the caller's array is in
/// managed memory (12 bytes each on the stack).
pub const BOUNCE_EVENTS: usize = 128;
/// The most poll entries copied to the stack (8 bytes each); more are
/// pinned for the wait.
pub const BOUNCE_FDS: usize = 256;

type EpollWaitFn = unsafe extern "C" fn(c_int, *mut epoll_event, c_int, c_int) -> c_int;
type EpollPwaitFn =
    unsafe extern "C" fn(c_int, *mut epoll_event, c_int, c_int, *const sigset_t) -> c_int;
type EpollPwait2Fn =
    unsafe extern "C" fn(c_int, *mut epoll_event, c_int, *const timespec, *const sigset_t) -> c_int;
type EpollCtlFn = unsafe extern "C" fn(c_int, c_int, c_int, *mut epoll_event) -> c_int;
type PollFn = unsafe extern "C" fn(*mut pollfd, nfds_t, c_int) -> c_int;
type PollChkFn = unsafe extern "C" fn(*mut pollfd, nfds_t, c_int, usize) -> c_int;
type PpollFn = unsafe extern "C" fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t) -> c_int;
type PpollChkFn =
    unsafe extern "C" fn(*mut pollfd, nfds_t, *const timespec, *const sigset_t, usize) -> c_int;
type SelectFn =
    unsafe extern "C" fn(c_int, *mut fd_set, *mut fd_set, *mut fd_set, *mut timeval) -> c_int;
type PselectFn = unsafe extern "C" fn(
    c_int,
    *mut fd_set,
    *mut fd_set,
    *mut fd_set,
    *const timespec,
    *const sigset_t,
) -> c_int;

/// Runs an epoll wait with `events` on the stack if it is managed.
fn wait_events(
    events: *mut epoll_event,
    max: c_int,
    call: impl FnOnce(*mut epoll_event, c_int) -> c_int,
) -> c_int {
    if max <= 0 || !needs_help(events.cast()) {
        return call(events, max);
    }
    let mut stack = [const { MaybeUninit::<epoll_event>::uninit() }; BOUNCE_EVENTS];
    let r = call(stack.as_mut_ptr().cast(), max.min(BOUNCE_EVENTS as c_int));
    if r > 0 {
        // SAFETY: the kernel filled `r` events; the caller's array holds at
        // least `max` >= `r` (epoll_wait's contract). Ordinary writes.
        unsafe { core::ptr::copy_nonoverlapping(stack.as_ptr().cast(), events, r as usize) };
    }
    r
}

/// `epoll_wait(2)` with the event array in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_wait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
) -> c_int {
    let f = libc_fn!("epoll_wait", EpollWaitFn);
    // SAFETY: forwarded with the caller's arguments or our copy.
    wait_events(events, max, |e, n| unsafe { f(epfd, e, n, timeout) })
}

/// `epoll_pwait(2)` with the events or the mask in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: c_int,
    mask: *const sigset_t,
) -> c_int {
    let f = libc_fn!("epoll_pwait", EpollPwaitFn);
    // SAFETY: the mask is NULL or readable (the caller's contract).
    let mut mask = unsafe { Bounce::new(mask) };
    // SAFETY: forwarded with the caller's arguments or our copies.
    wait_events(events, max, |e, n| unsafe {
        f(epfd, e, n, timeout, mask.ptr())
    })
}

/// `epoll_pwait2(2)` with the events, timeout or mask in managed memory
/// works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_pwait2(
    epfd: c_int,
    events: *mut epoll_event,
    max: c_int,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let f = libc_fn!("epoll_pwait2", EpollPwait2Fn);
    // SAFETY: NULL or readable (the caller's contract).
    let (mut timeout, mut mask) = unsafe { (Bounce::new(timeout), Bounce::new(mask)) };
    // SAFETY: forwarded with the caller's arguments or our copies.
    wait_events(events, max, |e, n| unsafe {
        f(epfd, e, n, timeout.ptr(), mask.ptr())
    })
}

/// `epoll_ctl(2)` with the event in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_ctl(
    epfd: c_int,
    op: c_int,
    fd: c_int,
    event: *mut epoll_event,
) -> c_int {
    let f = libc_fn!("epoll_ctl", EpollCtlFn);
    // SAFETY: NULL (EPOLL_CTL_DEL) or readable (the caller's contract).
    let mut event = unsafe { Bounce::new(event) };
    // SAFETY: forwarded with our copy or the caller's pointer.
    unsafe { f(epfd, op, fd, event.ptr()) }
}

/// Runs a poll with `fds` on the stack if it is managed (pinned if there
/// are more than [`BOUNCE_FDS`]).
fn poll_with(fds: *mut pollfd, n: nfds_t, call: impl FnOnce(*mut pollfd) -> c_int) -> c_int {
    let count = n as usize;
    if count == 0 || !needs_help(fds.cast()) {
        return call(fds);
    }
    if count > BOUNCE_FDS {
        let Some(_pinned) = pin(fds.cast(), count * size_of::<pollfd>(), Access::Write) else {
            return -1;
        };
        return call(fds);
    }
    let mut stack = [const { MaybeUninit::<pollfd>::uninit() }; BOUNCE_FDS];
    // SAFETY: the caller passes `n` valid entries (poll's contract); read
    // by ordinary loads into our storage.
    unsafe { core::ptr::copy_nonoverlapping(fds, stack.as_mut_ptr().cast(), count) };
    let r = call(stack.as_mut_ptr().cast());
    if r >= 0 {
        for (i, s) in stack.iter().take(count).enumerate() {
            // SAFETY: initialised above; the caller's entry `i` is valid
            // for writing. Only `revents` is the kernel's to write.
            unsafe { (*fds.add(i)).revents = s.assume_init_ref().revents };
        }
    }
    r
}

/// `poll(2)` with the array in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int {
    let f = libc_fn!("poll", PollFn);
    // SAFETY: forwarded with the caller's array or our copy.
    poll_with(fds, n, |p| unsafe { f(p, n, timeout) })
}

/// `__poll_chk` (`poll` under `_FORTIFY_SOURCE`): libc's own check of the
/// array's size, then the wrapped `poll`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __poll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: c_int,
    fdslen: usize,
) -> c_int {
    let f = libc_fn!("__poll_chk", PollChkFn);
    if fdslen / size_of::<pollfd>() < n as usize {
        // SAFETY: libc's function reports the overflow and aborts.
        return unsafe { f(fds, n, timeout, fdslen) };
    }
    // SAFETY: forwarded with the caller's array or our copy (of `n`
    // entries, the size we pass).
    poll_with(fds, n, |p| unsafe {
        f(p, n, timeout, n as usize * size_of::<pollfd>())
    })
}

/// `ppoll(2)` with the array, timeout or mask in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ppoll(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let f = libc_fn!("ppoll", PpollFn);
    // SAFETY: NULL or readable (the caller's contract).
    let (mut timeout, mut mask) = unsafe { (Bounce::new(timeout), Bounce::new(mask)) };
    // SAFETY: forwarded with the caller's arguments or our copies.
    poll_with(fds, n, |p| unsafe { f(p, n, timeout.ptr(), mask.ptr()) })
}

/// `__ppoll_chk` (`ppoll` under `_FORTIFY_SOURCE`).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __ppoll_chk(
    fds: *mut pollfd,
    n: nfds_t,
    timeout: *const timespec,
    mask: *const sigset_t,
    fdslen: usize,
) -> c_int {
    let f = libc_fn!("__ppoll_chk", PpollChkFn);
    if fdslen / size_of::<pollfd>() < n as usize {
        // SAFETY: libc's function reports the overflow and aborts.
        return unsafe { f(fds, n, timeout, mask, fdslen) };
    }
    // SAFETY: NULL or readable (the caller's contract).
    let (mut timeout, mut mask) = unsafe { (Bounce::new(timeout), Bounce::new(mask)) };
    // SAFETY: forwarded with the caller's arguments or our copies.
    poll_with(fds, n, |p| unsafe {
        f(
            p,
            n,
            timeout.ptr(),
            mask.ptr(),
            n as usize * size_of::<pollfd>(),
        )
    })
}

/// The three sets of a `select`, as stack copies where managed.
struct Sets([Bounce<fd_set>; 3]);

impl Sets {
    /// # Safety
    /// Each pointer is NULL or a valid `fd_set` (select's contract).
    unsafe fn new(r: *mut fd_set, w: *mut fd_set, e: *mut fd_set) -> Sets {
        // SAFETY: the caller's contract.
        Sets(unsafe { [Bounce::new(r), Bounce::new(w), Bounce::new(e)] })
    }

    fn ptrs(&mut self) -> (*mut fd_set, *mut fd_set, *mut fd_set) {
        let [r, w, e] = &mut self.0;
        (r.ptr(), w.ptr(), e.ptr())
    }

    /// # Safety
    /// As for [`Sets::new`]: the caller's sets are writable.
    unsafe fn back(&self) {
        for s in &self.0 {
            // SAFETY: the caller's contract.
            unsafe { s.back() };
        }
    }
}

/// `select(2)` with the sets or the timeout in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn select(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *mut timeval,
) -> c_int {
    let f = libc_fn!("select", SelectFn);
    // SAFETY: NULL or valid (the caller's contract).
    let (mut sets, mut timeout) = unsafe { (Sets::new(r, w, e), Bounce::new(timeout)) };
    let (rp, wp, ep) = sets.ptrs();
    // SAFETY: forwarded with the caller's arguments or our copies.
    let res = unsafe { f(n, rp, wp, ep, timeout.ptr()) };
    // SAFETY: the sets and the timeout are the caller's to have written
    // (Linux updates the timeout); unchanged copies on failure.
    unsafe {
        sets.back();
        timeout.back();
    }
    res
}

/// `pselect(2)` with the sets, timeout or mask in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pselect(
    n: c_int,
    r: *mut fd_set,
    w: *mut fd_set,
    e: *mut fd_set,
    timeout: *const timespec,
    mask: *const sigset_t,
) -> c_int {
    let f = libc_fn!("pselect", PselectFn);
    // SAFETY: NULL or valid (the caller's contract).
    let (mut sets, mut timeout, mut mask) =
        unsafe { (Sets::new(r, w, e), Bounce::new(timeout), Bounce::new(mask)) };
    let (rp, wp, ep) = sets.ptrs();
    // SAFETY: forwarded with the caller's arguments or our copies.
    let res = unsafe { f(n, rp, wp, ep, timeout.ptr(), mask.ptr()) };
    // SAFETY: the sets are the caller's to have written.
    unsafe { sets.back() };
    res
}
