//! `sbma run --group`'s janitor: nothing stays in `/dev/shm` when a whole
//! group is killed.
//!
//! The last member to leave a group removes its shared segment, and a
//! member that dies is reaped by the others; but when every member dies
//! by SIGKILL (an aborted `mpirun`), nobody is left to remove it, and only
//! the next group started on the machine would collect it. So before
//! `sbma run` becomes the program (exec keeps the pid), it starts a
//! janitor: a detached process (its own session, every inherited
//! descriptor closed) that sleeps until the program has died, then removes
//! the segment once every member is dead ([`Group::collect`]) and exits;
//! while other members live it keeps watching. Each process started by
//! `sbma run --group` has one, so whichever member dies last, its janitor
//! cleans up. The janitor is a fork of `sbma` before the program starts:
//! a few hundred KiB, waking every 250 ms.
#![allow(unsafe_code, reason = "fork, setsid and descriptor handling")]

use sbma_pager::{Collected, Group};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(250);

/// Starts the janitor for group `name`, watching this process (which is
/// about to exec the program). Best effort: if it cannot start, the next
/// group started on this machine collects an abandoned segment.
pub fn start(name: &str) {
    let program = std::process::id() as i32;
    let Some(started) = start_time(program) else {
        return;
    };
    // SAFETY: `sbma run` has no other threads (fork copies only this one);
    // the child only sets up a session, forks again and exits.
    let child = unsafe { libc::fork() };
    match child {
        -1 => {}
        0 => {
            // SAFETY: in the child: a new session (no controlling
            // terminal, out of the parent's process group), then the
            // janitor proper in a grandchild, reparented when we exit.
            unsafe {
                libc::setsid();
                if libc::fork() == 0 {
                    detach();
                    watch(name, program, started);
                }
                libc::_exit(0);
            }
        }
        pid => {
            // SAFETY: reaping our own short-lived child.
            unsafe { libc::waitpid(pid, core::ptr::null_mut(), 0) };
        }
    }
}

/// Closes every inherited descriptor (a pipe held open would keep whoever
/// reads the program's output waiting) and points 0-2 at /dev/null.
fn detach() {
    // SAFETY: closing descriptors this process inherited and does not use;
    // close_range(2) with no flags has no other effect.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null == 0 {
            libc::dup2(0, 1);
            libc::dup2(0, 2);
        }
    }
}

/// Waits for the program to die, then until the group is gone.
fn watch(name: &str, program: i32, started: u64) -> ! {
    while start_time(program) == Some(started) {
        std::thread::sleep(POLL);
    }
    while Group::collect(name) == Collected::Live {
        std::thread::sleep(POLL);
    }
    // SAFETY: ending the janitor without running the program's exit
    // handlers (it has none of its own to run).
    unsafe { libc::_exit(0) }
}

/// The start time of `pid` (`/proc/<pid>/stat` field 22), `None` once it
/// is gone: with the pid it names one process, never a recycled pid's.
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // A zombie (state Z) has died: its exit is only not collected yet.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}
