//! Socket addresses, socket options and descriptor pairs in managed
//! memory: `accept`, `accept4`, `connect`, `bind`, `getsockname`,
//! `getpeername`, `getsockopt`, `setsockopt`, `pipe`, `pipe2`,
//! `socketpair`.
//!
//! Addresses (at most a `sockaddr_storage`), option lengths and descriptor
//! pairs travel as stack copies (`bounce.rs`): `accept` and `connect` may
//! block, and a pin would hold budget for the wait. Option values, of any
//! size, are pinned for their (non-blocking) call.
//!
//! # Safety
//! The wrappers have libc's contracts; they forward pointers or copies.
#![allow(unsafe_code, reason = "libc's socket functions, forwarded")]

use crate::bounce::Bounce;
use crate::io::{needs_help, pin};
use crate::libc_fn;
use core::ffi::{c_int, c_void};
use libc::{sockaddr, sockaddr_storage, socklen_t};
use sbma_alloc::sbma_pager::Access;

type AcceptFn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t) -> c_int;
type Accept4Fn = unsafe extern "C" fn(c_int, *mut sockaddr, *mut socklen_t, c_int) -> c_int;
type AddrFn = unsafe extern "C" fn(c_int, *const sockaddr, socklen_t) -> c_int;
type GetOptFn = unsafe extern "C" fn(c_int, c_int, c_int, *mut c_void, *mut socklen_t) -> c_int;
type SetOptFn = unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, socklen_t) -> c_int;
type PipeFn = unsafe extern "C" fn(*mut c_int) -> c_int;
type Pipe2Fn = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type SocketpairFn = unsafe extern "C" fn(c_int, c_int, c_int, *mut c_int) -> c_int;

/// Runs a call that writes an address and its length (`accept`,
/// `getsockname`, ...) with both on the stack where managed.
///
/// # Safety
/// `addr` is NULL or valid for `*len` bytes; `len` is NULL or valid (the
/// wrapped call's contract).
unsafe fn address_out(
    addr: *mut sockaddr,
    len: *mut socklen_t,
    call: impl FnOnce(*mut sockaddr, *mut socklen_t) -> c_int,
) -> c_int {
    if !needs_help(addr.cast()) && !needs_help(len.cast()) {
        return call(addr, len);
    }
    // SAFETY: the caller's contract.
    let mut n = unsafe { Bounce::new(len) };
    if addr.is_null() || len.is_null() {
        let r = call(addr, n.ptr());
        // SAFETY: as above.
        unsafe { n.back() };
        return r;
    }
    // SAFETY: `n` holds the caller's length (read by an ordinary load).
    let given = unsafe { *n.ptr() };
    let mut storage = core::mem::MaybeUninit::<sockaddr_storage>::uninit();
    let room = given.min(size_of::<sockaddr_storage>() as socklen_t);
    let mut got = room;
    let r = call(storage.as_mut_ptr().cast(), &mut got);
    if r >= 0 {
        // SAFETY: the kernel wrote min(got, room) bytes of address; the
        // caller's buffer holds `given` >= room.
        unsafe {
            core::ptr::copy_nonoverlapping(
                storage.as_ptr().cast::<u8>(),
                addr.cast::<u8>(),
                got.min(room) as usize,
            );
            *n.ptr() = got;
            n.back();
        }
    }
    r
}

/// `accept(2)` with the address or its length in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let f = libc_fn!("accept", AcceptFn);
    // SAFETY: the caller's contract; forwarded.
    unsafe { address_out(addr, len, |a, l| f(fd, a, l)) }
}

/// `accept4(2)` with the address or its length in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(
    fd: c_int,
    addr: *mut sockaddr,
    len: *mut socklen_t,
    flags: c_int,
) -> c_int {
    let f = libc_fn!("accept4", Accept4Fn);
    // SAFETY: the caller's contract; forwarded.
    unsafe { address_out(addr, len, |a, l| f(fd, a, l, flags)) }
}

/// `getsockname(2)` with the address or its length in managed memory.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockname(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let f = libc_fn!("getsockname", AcceptFn);
    // SAFETY: the caller's contract; forwarded.
    unsafe { address_out(addr, len, |a, l| f(fd, a, l)) }
}

/// `getpeername(2)` with the address or its length in managed memory.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getpeername(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int {
    let f = libc_fn!("getpeername", AcceptFn);
    // SAFETY: the caller's contract; forwarded.
    unsafe { address_out(addr, len, |a, l| f(fd, a, l)) }
}

/// Runs a call that reads an address (`connect`, `bind`) with it on the
/// stack where managed (pinned if larger than a `sockaddr_storage`).
fn address_in(
    addr: *const sockaddr,
    len: socklen_t,
    call: impl FnOnce(*const sockaddr) -> c_int,
) -> c_int {
    if !needs_help(addr.cast()) {
        return call(addr);
    }
    let n = len as usize;
    if n > size_of::<sockaddr_storage>() {
        let Some(_pinned) = pin(addr.cast(), n, Access::Read) else {
            return -1;
        };
        return call(addr);
    }
    let mut storage = core::mem::MaybeUninit::<sockaddr_storage>::uninit();
    // SAFETY: the caller's address holds `len` bytes (the call's contract).
    unsafe {
        core::ptr::copy_nonoverlapping(addr.cast::<u8>(), storage.as_mut_ptr().cast::<u8>(), n)
    };
    call(storage.as_ptr().cast())
}

/// `connect(2)` with the address in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let f = libc_fn!("connect", AddrFn);
    // SAFETY: forwarded with the caller's address or our copy.
    address_in(addr, len, |a| unsafe { f(fd, a, len) })
}

/// `bind(2)` with the address in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bind(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int {
    let f = libc_fn!("bind", AddrFn);
    // SAFETY: forwarded with the caller's address or our copy.
    address_in(addr, len, |a| unsafe { f(fd, a, len) })
}

/// `getsockopt(2)` with the value or its length in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *mut c_void,
    len: *mut socklen_t,
) -> c_int {
    let f = libc_fn!("getsockopt", GetOptFn);
    // SAFETY: NULL or valid (the caller's contract).
    let mut n = unsafe { Bounce::new(len) };
    let room = if len.is_null() {
        0
    } else {
        // SAFETY: as above; an ordinary load of our copy or the caller's.
        unsafe { *n.ptr() as usize }
    };
    let Some(_pinned) = pin(value, room, Access::Write) else {
        return -1;
    };
    // SAFETY: forwarded with the caller's value (pinned) and length (copy).
    let r = unsafe { f(fd, level, name, value, n.ptr()) };
    // SAFETY: the caller's length is writable.
    unsafe { n.back() };
    r
}

/// `setsockopt(2)` with the value in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn setsockopt(
    fd: c_int,
    level: c_int,
    name: c_int,
    value: *const c_void,
    len: socklen_t,
) -> c_int {
    let f = libc_fn!("setsockopt", SetOptFn);
    let Some(_pinned) = pin(value, len as usize, Access::Read) else {
        return -1;
    };
    // SAFETY: forwarded (pinned if managed).
    unsafe { f(fd, level, name, value, len) }
}

/// Runs a call that writes two descriptors with them on the stack where
/// managed.
///
/// # Safety
/// `fds` is valid for two `int`s (the call's contract).
unsafe fn pair(fds: *mut c_int, call: impl FnOnce(*mut c_int) -> c_int) -> c_int {
    // SAFETY: the caller's contract.
    let mut b = unsafe { Bounce::new(fds.cast::<[c_int; 2]>()) };
    let r = call(b.ptr().cast());
    if r == 0 {
        // SAFETY: as above.
        unsafe { b.back() };
    }
    r
}

/// `pipe(2)` with the descriptor pair in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe(fds: *mut c_int) -> c_int {
    let f = libc_fn!("pipe", PipeFn);
    // SAFETY: the caller's contract; forwarded.
    unsafe { pair(fds, |p| f(p)) }
}

/// `pipe2(2)` with the descriptor pair in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pipe2(fds: *mut c_int, flags: c_int) -> c_int {
    let f = libc_fn!("pipe2", Pipe2Fn);
    // SAFETY: the caller's contract; forwarded.
    unsafe { pair(fds, |p| f(p, flags)) }
}

/// `socketpair(2)` with the descriptor pair in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn socketpair(
    domain: c_int,
    kind: c_int,
    protocol: c_int,
    fds: *mut c_int,
) -> c_int {
    let f = libc_fn!("socketpair", SocketpairFn);
    // SAFETY: the caller's contract; forwarded.
    unsafe { pair(fds, |p| f(domain, kind, protocol, p)) }
}
