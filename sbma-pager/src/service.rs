//! The uffd backend's fault service threads.
//!
//! A thread that touches a missing or write-protected page of a uffd arena
//! sleeps in the kernel; the fault is queued on the arena's userfaultfd.
//! [`SERVICE_THREADS`] threads per arena `poll` the descriptor, read each
//! fault and resolve it exactly as the signal handler would
//! (`Arena::on_fault`: charge, evict, fill with `UFFDIO_COPY`, raise the
//! access), then `UFFDIO_WAKE` the page so the faulting thread retries.
//!
//! These threads are not signal handlers: the code they run could take
//! ordinary locks. It still follows the handler's rules (no allocation,
//! only the pager's own locks), because the same code serves both
//! backends, and it never touches managed memory through a pointer: a
//! service thread that faulted on its own arena would wait for itself.
//!
//! A fault on a page that belongs to no live region (use after free) gets
//! a one-line message and `SIGSEGV` sent to the faulting thread, the
//! closest a uffd backend can come to the signal backend's real fault.
//!
//! One thread per arena ([`SERVICE_THREADS`]). A second would keep serving
//! while the first waits for a page another thread is loading or writing
//! back, or reads one from disk; it was tried (below) and is not what runs:
//! the tests and benchmarks of the uffd backend ran with one.
//!
//! A thread sleeping in `poll` costs every fault a wake-up of the service
//! thread on top of the faulting thread's own, so the service thread keeps
//! reading the (non-blocking) descriptor for [`SPIN_NS`] after its last
//! fault before it sleeps (threads beyond the first, if the constant is
//! raised, always sleep). Measured with
//! `sbma demo --backend uffd --size 512M --budget 128M` (3 runs each,
//! sequential write / random read-modify-write / verify, MiB/s): one
//! thread spinning 100 us 331 / 206 / 339 (what runs); two threads, no
//! spin 227 / 209 / 360; two, the first spinning 370 / 177 / 350; two, both
//! spinning 351 / 179 / 347. The spin stops 100 us after the last fault,
//! so an idle program burns nothing.
#![allow(unsafe_code, reason = "signalling the faulting thread")]

use crate::arena::Arena;
use crate::signals;
use crate::sys;
use rustix::event::{PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use rustix::io::Errno;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Service threads per uffd arena.
pub const SERVICE_THREADS: usize = 1;
/// How long the first service thread keeps reading the descriptor without
/// sleeping after its last fault (any further one sleeps in `poll`).
const SPIN_NS: u64 = 100_000;

/// The running service threads of one arena.
pub(crate) struct Service {
    threads: Vec<JoinHandle<()>>,
    /// Written to stop the threads (an `eventfd`).
    stop: Arc<OwnedFd>,
}

impl Service {
    /// Starts the threads.
    ///
    /// # Errors
    /// The errno of `eventfd` or of a failed thread spawn (the threads
    /// already started are stopped): without a service thread no fault
    /// could ever be resolved.
    pub(crate) fn start(arena: &Arc<Arena>) -> Result<Service, Errno> {
        let stop = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let mut service = Service {
            threads: Vec::new(),
            stop,
        };
        for i in 0..SERVICE_THREADS {
            let (a, stop) = (arena.clone(), service.stop.clone());
            match std::thread::Builder::new()
                .name("sbma-uffd".into())
                .spawn(move || {
                    crate::arena::mark_pager_thread();
                    serve(&a, &stop, if i == 0 { SPIN_NS } else { 0 });
                }) {
                Ok(t) => service.threads.push(t),
                Err(e) => {
                    service.stop(arena);
                    return Err(Errno::from_io_error(&e).unwrap_or(Errno::AGAIN));
                }
            }
        }
        Ok(service)
    }

    /// Stops and joins the threads. In a forked child they do not exist.
    pub(crate) fn stop(self, arena: &Arena) {
        if arena.forked() {
            core::mem::forget(self.threads);
            return;
        }
        let _ = rustix::io::write(self.stop.as_fd(), &1u64.to_ne_bytes());
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn serve(arena: &Arena, stop: &OwnedFd, spin: u64) {
    let Some(uffd) = arena.uffd() else {
        return;
    };
    let page = arena.page_size().bytes();
    let fd = uffd.as_fd();
    loop {
        let mut fds = [
            PollFd::new(&fd, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => sys::die(&[
                b"sbma: polling the userfaultfd failed: ",
                e.to_string().as_bytes(),
            ]),
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let mut idle_since = None;
        loop {
            let fault = match uffd.next_fault() {
                Ok(f) => f,
                Err(Errno::AGAIN) => {
                    // Keep looking for a while before sleeping: the thread
                    // just woken usually faults again within microseconds,
                    // and a sleeping service thread costs it a wake-up.
                    let now = sys::now_ns();
                    let since = *idle_since.get_or_insert(now);
                    if now - since > spin {
                        break;
                    }
                    core::hint::spin_loop();
                    continue;
                }
                Err(e) => sys::die(&[
                    b"sbma: reading the userfaultfd failed: ",
                    e.to_string().as_bytes(),
                ]),
            };
            match arena.on_fault(fault.addr, Some(fault.write), Some(fault.tid)) {
                Some(Ok(())) => {}
                Some(Err(e)) => signals::fatal(fault.addr, e),
                None => outside_regions(fault.addr, fault.tid),
            }
            idle_since = None;
            let start = fault.addr & !(page - 1);
            if let Err(e) = uffd.wake(start, page) {
                sys::die(&[b"sbma: UFFDIO_WAKE failed: ", e.to_string().as_bytes()]);
            }
        }
    }
}

/// A fault on a page of no live region: tell, and deliver `SIGSEGV` to
/// the thread (it dies, or its handler runs and the access faults again).
fn outside_regions(addr: usize, tid: i32) {
    // The thread's own SIGSEGV handler may return and retry the access
    // once before the default action kills it: say it once.
    static LAST: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
    let key = (addr as u64) ^ (u64::from(tid as u32) << 48);
    if LAST.swap(key, core::sync::atomic::Ordering::Relaxed) != key {
        report_outside(addr, tid);
    }
    // SAFETY: tgkill only sends a signal to a thread of this process.
    unsafe {
        libc::syscall(libc::SYS_tgkill, sys::process_id(), tid, libc::SIGSEGV);
    }
}

fn report_outside(addr: usize, tid: i32) {
    let mut hex = [0u8; 18];
    let mut num = [0u8; 20];
    let parts: [&[u8]; 4] = [
        b"sbma: access to storage-backed memory outside any live region at ",
        sys::hex(addr, &mut hex),
        b" (use after free?): SIGSEGV to thread ",
        sys::decimal(tid as usize, &mut num),
    ];
    // SAFETY: fd 2 is standard error; a failed write changes nothing.
    let stderr = unsafe { rustix::fd::BorrowedFd::borrow_raw(2) };
    for p in parts {
        let _ = rustix::io::write(stderr, p);
    }
    let _ = rustix::io::write(stderr, b"\n");
}

/// The thread that serves group peers' requests for memory: it sleeps on
/// this member's doorbell in the group segment, evicts what it is asked
/// for (as a fault would, under the eviction lock, at a safe point: never
/// inside another thread's pager code), and tells the group.
pub(crate) struct PeerService {
    thread: Option<JoinHandle<()>>,
    stop: Arc<core::sync::atomic::AtomicBool>,
}

impl PeerService {
    /// Starts the thread.
    ///
    /// # Errors
    /// The spawn's error: without it, peers could wait on this member in vain.
    pub(crate) fn start(arena: &Arc<Arena>) -> Result<PeerService, Errno> {
        let stop = Arc::new(core::sync::atomic::AtomicBool::new(false));
        let (a, st) = (arena.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("sbma-group".into())
            .spawn(move || {
                crate::arena::mark_pager_thread();
                let Some(g) = a.group.clone() else { return };
                while !st.load(core::sync::atomic::Ordering::Acquire) {
                    let want = g.take_request(100_000_000);
                    if want > 0 {
                        a.give_back(want);
                        g.released();
                    }
                }
            })
            .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::AGAIN))?;
        Ok(PeerService {
            thread: Some(thread),
            stop,
        })
    }

    /// Stops and joins the thread (not in a forked child, where it does not
    /// exist).
    pub(crate) fn stop(mut self, arena: &Arena) {
        self.stop.store(true, core::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            if arena.forked() {
                core::mem::forget(t);
                return;
            }
            if let Some(g) = &arena.group {
                g.wake_self();
            }
            let _ = t.join();
        }
    }
}
