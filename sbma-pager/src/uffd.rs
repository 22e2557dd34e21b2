//! userfaultfd: the syscall layer of the uffd backend.
//!
//! One descriptor per arena, opened with `userfaultfd(2)` or, where the
//! syscall is refused, through `/dev/userfaultfd` (`USERFAULTFD_IOC_NEW`).
//! The arena's whole reservation is registered in missing and
//! write-protect mode (`UFFDIO_REGISTER_MODE_MISSING | _WP`), so:
//!
//! - a page that is not present (never filled, or dropped with
//!   `MADV_DONTNEED`) raises a *missing* fault; the faulting thread sleeps
//!   in the kernel until a service thread fills the page with
//!   `UFFDIO_COPY`, which installs the whole page atomically;
//! - a write to a write-protected page raises a *write-protect* fault;
//!   `UFFDIO_WRITEPROTECT` sets and clears the protection without
//!   changing the mapping's VMA, so alternating protections never split it.
//!
//! Kernel-side accesses (`read(2)` into a missing page, `stat` into one)
//! fault the same way and wait for the fill: no `EFAULT`. That is why the
//! descriptor is never opened with `UFFD_USER_MODE_ONLY`, which would leave
//! those to fail.
//!
//! # Who may open one
//!
//! - `userfaultfd(2)` without `UFFD_USER_MODE_ONLY`: a process with
//!   `CAP_SYS_PTRACE` in its user namespace, or anyone if the sysctl
//!   `vm.unprivileged_userfaultfd` is 1 (the default is 0 since Linux 5.11).
//! - `/dev/userfaultfd` (Linux 6.1+): anyone who can open the device node;
//!   its permissions decide (often `0600 root`, or a `userfaultfd` group).
//!
//! When neither works, `Backend::Auto` falls back to the signal backend and
//! says why in the statistics.
#![allow(unsafe_code, reason = "userfaultfd ioctls on raw address ranges")]

use linux_raw_sys::general as uapi;
use linux_raw_sys::ioctl as nr;
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use rustix::io::Errno;

/// `USERFAULTFD_IOC_NEW`: `_IO(0xAA, 0x00)` on `/dev/userfaultfd`.
const USERFAULTFD_IOC_NEW: libc::c_ulong = (uapi::USERFAULTFD_IOC as libc::c_ulong) << 8;

/// `UFFDIO_WRITEPROTECT_MODE_WP` (include/uapi/linux/userfaultfd.h; not
/// exported by linux-raw-sys).
const WRITEPROTECT_MODE_WP: u64 = 1;
/// `UFFDIO_WRITEPROTECT_MODE_DONTWAKE`.
const WRITEPROTECT_MODE_DONTWAKE: u64 = 2;

/// `UFFDIO_MOVE`: `_IOWR(0xAA, _UFFDIO_MOVE, struct uffdio_move)` (Linux
/// 6.8; not exported by linux-raw-sys).
const UFFDIO_MOVE: u32 = (3 << 30)
    | ((core::mem::size_of::<uapi::uffdio_move>() as u32) << 16)
    | (0xAA << 8)
    | uapi::_UFFDIO_MOVE;
/// `UFFDIO_MOVE_MODE_DONTWAKE`.
const MOVE_MODE_DONTWAKE: u64 = 1;

/// Features the backend needs: write-protect fault flags, and the faulting
/// thread's id (to signal a thread that touched freed memory).
const FEATURES: u64 = (uapi::UFFD_FEATURE_PAGEFAULT_FLAG_WP | uapi::UFFD_FEATURE_THREAD_ID) as u64;

/// An open, initialised userfaultfd.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

/// Why no userfaultfd could be opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// What failed, for the one-line note.
    pub reason: &'static str,
    /// The errno.
    pub errno: Errno,
}

impl core::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} ({})", self.reason, self.errno)
    }
}

/// A fault read from the descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The faulting address (page-aligned unless the kernel reports exact
    /// addresses; the backend does not ask for them).
    pub addr: usize,
    /// A write (a missing fault by a store, or a write-protect fault).
    pub write: bool,
    /// The faulting thread.
    pub tid: i32,
}

impl Uffd {
    /// Opens a non-blocking, close-on-exec userfaultfd and negotiates the
    /// API and the features the backend needs.
    ///
    /// # Errors
    /// [`Unavailable`] naming the step that failed: both ways of opening
    /// refused (`EPERM`/`EACCES`: see the module doc), or a kernel without
    /// write-protect support for anonymous memory (before 5.7).
    pub fn open() -> Result<Uffd, Unavailable> {
        let flags = rustix::mm::UserfaultfdFlags::CLOEXEC | rustix::mm::UserfaultfdFlags::NONBLOCK;
        // SAFETY: creating the descriptor has no effect on memory; what is
        // registered with it later is the arena's own reservation.
        let fd = match unsafe { rustix::mm::userfaultfd(flags) } {
            Ok(fd) => fd,
            Err(syscall) => Self::open_device().map_err(|device| Unavailable {
                reason: if syscall == Errno::PERM || syscall == Errno::ACCESS {
                    "userfaultfd(2) needs CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1, and /dev/userfaultfd is not accessible"
                } else {
                    "userfaultfd(2) failed and /dev/userfaultfd is not usable"
                },
                errno: if device == Errno::NOENT {
                    syscall
                } else {
                    device
                },
            })?,
        };
        let uffd = Uffd { fd };
        let mut api = uapi::uffdio_api {
            api: uapi::UFFD_API as u64,
            features: FEATURES,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `uffdio_api`.
        unsafe { uffd.ioctl(nr::UFFDIO_API, &mut api) }.map_err(|errno| Unavailable {
            reason: "the kernel's userfaultfd lacks write-protect support (Linux 5.7+)",
            errno,
        })?;
        let needed = 1u64 << uapi::_UFFDIO_REGISTER;
        if api.ioctls & needed != needed || api.features & FEATURES != FEATURES {
            return Err(Unavailable {
                reason: "the kernel's userfaultfd lacks write-protect support (Linux 5.7+)",
                errno: Errno::NOSYS,
            });
        }
        Ok(uffd)
    }

    fn open_device() -> Result<OwnedFd, Errno> {
        let dev = rustix::fs::open(
            "/dev/userfaultfd",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let flags = (libc::O_CLOEXEC | libc::O_NONBLOCK) as libc::c_ulong;
        // SAFETY: USERFAULTFD_IOC_NEW takes its flags by value and returns a
        // new descriptor, which we own from here.
        let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW as _, flags) };
        if fd < 0 {
            return Err(last_errno());
        }
        // SAFETY: a fresh descriptor returned by the kernel.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The descriptor (for `poll`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Registers `[addr, addr + len)` for missing and write-protect faults.
    ///
    /// # Errors
    /// `EINVAL` if the range is not anonymous private memory, `EPERM`...
    ///
    /// # Safety
    /// The range is a mapping the caller owns for the life of `self`.
    pub unsafe fn register(&self, addr: *mut u8, len: usize) -> Result<(), Errno> {
        let mut reg = uapi::uffdio_register {
            range: range(addr, len),
            mode: (uapi::UFFDIO_REGISTER_MODE_MISSING | uapi::UFFDIO_REGISTER_MODE_WP) as u64,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a `uffdio_register`; the
        // range is the caller's.
        unsafe { self.ioctl(nr::UFFDIO_REGISTER, &mut reg) }?;
        let needed = (1u64 << uapi::_UFFDIO_COPY)
            | (1u64 << uapi::_UFFDIO_WAKE)
            | (1u64 << uapi::_UFFDIO_WRITEPROTECT);
        if reg.ioctls & needed == needed {
            Ok(())
        } else {
            Err(Errno::NOTSUP)
        }
    }

    /// Installs `len` bytes from `src` at the missing pages `dst`, all at
    /// once per page, write-protected if `wp`: `UFFDIO_COPY`. Retried on
    /// `EAGAIN` from where it stopped.
    ///
    /// The threads waiting on the pages are *not* woken
    /// (`UFFDIO_COPY_MODE_DONTWAKE`): a faulting thread goes on only once
    /// the whole operation on the page is finished and recorded in the page
    /// table, as with the signal backend ([`wake`](Self::wake)).
    ///
    /// # Errors
    /// `EEXIST` if a page is already present (a bug in the caller's
    /// protocol), `ENOMEM`, `ESRCH`...
    ///
    /// # Safety
    /// `dst` is registered and owned by the caller (no other thread fills
    /// it); `src` is valid for `len` bytes of reads.
    pub unsafe fn copy(
        &self,
        dst: *mut u8,
        src: *const u8,
        len: usize,
        wp: bool,
    ) -> Result<(), Errno> {
        let mode = u64::from(uapi::UFFDIO_COPY_MODE_DONTWAKE)
            | if wp {
                u64::from(uapi::UFFDIO_COPY_MODE_WP)
            } else {
                0
            };
        until_done(len, |done| {
            let mut c = uapi::uffdio_copy {
                dst: dst as u64 + done as u64,
                src: src as u64 + done as u64,
                len: (len - done) as u64,
                mode,
                copy: 0,
            };
            // SAFETY: UFFDIO_COPY reads and writes a `uffdio_copy`; the
            // ranges are as the caller guarantees.
            let r = unsafe { self.ioctl(nr::UFFDIO_COPY, &mut c) };
            (r, c.copy)
        })
        .map_err(|(_, e)| e)
    }

    /// Sets (`on`) or clears the write protection of present pages:
    /// `UFFDIO_WRITEPROTECT`, without waking anyone (see
    /// [`copy`](Self::copy)). The mapping's VMA is not split.
    ///
    /// # Errors
    /// `ENOENT`/`EINVAL` for unregistered ranges.
    ///
    /// # Safety
    /// The range is registered and owned by the caller.
    pub unsafe fn write_protect(&self, addr: *mut u8, len: usize, on: bool) -> Result<(), Errno> {
        let mut wp = uapi::uffdio_writeprotect {
            range: range(addr, len),
            mode: if on {
                WRITEPROTECT_MODE_WP
            } else {
                WRITEPROTECT_MODE_DONTWAKE
            },
        };
        // SAFETY: UFFDIO_WRITEPROTECT reads a `uffdio_writeprotect`.
        unsafe { self.ioctl(nr::UFFDIO_WRITEPROTECT, &mut wp) }
    }

    /// Moves the pages of `[src, src + len)` to `[dst, dst + len)`:
    /// `UFFDIO_MOVE` (Linux 6.8), which moves the page-table entries of
    /// exclusive anonymous pages, leaving `src` missing (it faults again)
    /// and `dst` present and writable; no VMA changes, no copy. Returns
    /// the bytes moved before an error with the error (`EEXIST` if a
    /// target page is present, `ENOENT` for a source hole, `EBUSY` for a
    /// page shared with a forked child, `EINVAL`/`ENOTTY` on kernels
    /// without it).
    ///
    /// # Safety
    /// Both ranges are registered, owned by the caller and busy.
    pub unsafe fn move_pages(
        &self,
        dst: *mut u8,
        src: *mut u8,
        len: usize,
    ) -> Result<(), (usize, Errno)> {
        until_done(len, |done| {
            let mut m = uapi::uffdio_move {
                dst: dst as u64 + done as u64,
                src: src as u64 + done as u64,
                len: (len - done) as u64,
                mode: MOVE_MODE_DONTWAKE,
                move_: 0,
            };
            // SAFETY: UFFDIO_MOVE reads and writes a `uffdio_move`; the
            // ranges are as the caller guarantees.
            let r = unsafe { self.ioctl(UFFDIO_MOVE, &mut m) };
            (r, m.move_)
        })
    }

    /// Wakes the threads waiting on faults in the range: `UFFDIO_WAKE`.
    ///
    /// # Errors
    /// `EINVAL` for a bad range.
    pub fn wake(&self, addr: usize, len: usize) -> Result<(), Errno> {
        let mut r = range(addr as *mut u8, len);
        // SAFETY: UFFDIO_WAKE reads a `uffdio_range`; waking touches no
        // memory.
        unsafe { self.ioctl(nr::UFFDIO_WAKE, &mut r) }
    }

    /// Reads the next pending fault, if any (`read(2)` of one `uffd_msg`;
    /// the descriptor is non-blocking). Events other than page faults are
    /// not enabled, and skipped if they come.
    ///
    /// # Errors
    /// `EAGAIN` when nothing is pending.
    pub fn next_fault(&self) -> Result<Fault, Errno> {
        loop {
            let mut msg = core::mem::MaybeUninit::<uapi::uffd_msg>::zeroed();
            let len = core::mem::size_of::<uapi::uffd_msg>();
            // SAFETY: `msg` is valid for `len` bytes of writes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), msg.as_mut_ptr().cast(), len) };
            if n < 0 {
                match last_errno() {
                    Errno::INTR => continue,
                    e => return Err(e),
                }
            }
            if n as usize != len {
                return Err(Errno::IO);
            }
            // SAFETY: the kernel wrote a whole message.
            let msg = unsafe { msg.assume_init() };
            if u32::from(msg.event) != uapi::UFFD_EVENT_PAGEFAULT {
                continue;
            }
            // SAFETY: a page-fault event carries the `pagefault` member.
            let pf = unsafe { msg.arg.pagefault };
            let flags = pf.flags;
            // SAFETY: with UFFD_FEATURE_THREAD_ID, `ptid` is set.
            let tid = unsafe { pf.feat.ptid };
            return Ok(Fault {
                addr: pf.address as usize,
                write: flags
                    & u64::from(uapi::UFFD_PAGEFAULT_FLAG_WRITE | uapi::UFFD_PAGEFAULT_FLAG_WP)
                    != 0,
                tid: tid as i32,
            });
        }
    }

    /// # Safety
    /// `arg` is the structure `request` reads and writes.
    unsafe fn ioctl<T>(&self, request: u32, arg: &mut T) -> Result<(), Errno> {
        // SAFETY: forwarded to the caller.
        let r = unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                request as _,
                core::ptr::from_mut(arg).cast::<libc::c_void>(),
            )
        };
        if r < 0 { Err(last_errno()) } else { Ok(()) }
    }
}

/// Issues a request that may stop part way (`UFFDIO_COPY`, `UFFDIO_MOVE`:
/// `EAGAIN` when the address space changed, with the bytes done reported
/// in the request) until `len` bytes are done: `step(done)` issues it for
/// `[done, len)` and returns its result and the bytes it reported (a
/// negative count is an error code, not progress). On an error, the
/// bytes done before it come with it.
fn until_done(
    len: usize,
    mut step: impl FnMut(usize) -> (Result<(), Errno>, i64),
) -> Result<(), (usize, Errno)> {
    let mut done = 0usize;
    while done < len {
        let (r, n) = step(done);
        if n > 0 {
            done += n as usize;
        }
        match r {
            Ok(()) => return Ok(()),
            Err(Errno::AGAIN) => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(())
}

fn range(addr: *mut u8, len: usize) -> uapi::uffdio_range {
    uapi::uffdio_range {
        start: addr as u64,
        len: len as u64,
    }
}

fn last_errno() -> Errno {
    Errno::from_raw_os_error(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
}
