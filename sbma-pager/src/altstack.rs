//! A per-thread alternate signal stack, so the fault handler runs on known
//! stack space even when a thread faults deep in its own stack.
//!
//! [`ensure`] installs a 64 KiB stack with a guard page below it, freed
//! when the thread exits, on threads that have none (threads created by C
//! code) or only a small one (Rust's standard library gives its threads
//! one of `SIGSTKSZ`, too small for the fault path). It
//! is called lazily from the pager's entry points on the calling thread;
//! a thread that faults without ever having called into the pager runs the
//! handler on its own stack, which the handler keeps small (no buffers on
//! the stack; staging buffers come from a pre-allocated pool).
#![allow(unsafe_code, reason = "sigaltstack and its memory")]

use crate::sys;
use std::cell::Cell;

const STACK: usize = 64 << 10;
const GUARD: usize = 4096;
/// An alternate stack at least this large is kept. Rust's standard
/// library gives its threads one of `SIGSTKSZ` (8 KiB, or the kernel's
/// `AT_MINSIGSTKSZ` if larger), for its stack-overflow message: the fault
/// path, which may evict and write back (and copy slots aside for forked
/// children), needs more (a 4 KiB buffer there overflowed it), so that
/// one is replaced. Rust's own exit hook disables whatever alternate stack
/// is installed and frees its own memory; this module's frees ours.
const MIN_KEPT: usize = 32 << 10;

struct AltStack {
    base: Cell<*mut u8>,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let base = self.base.get();
        if base.is_null() {
            return;
        }
        // SAFETY: disable the stack before unmapping it; we installed it on
        // this thread and the thread is exiting (not in a handler).
        unsafe {
            let ss = libc::stack_t {
                ss_sp: core::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&ss, core::ptr::null_mut());
            let _ = sys::unmap(base, STACK + GUARD);
        }
    }
}

thread_local! {
    static ALT: AltStack = const { AltStack { base: Cell::new(core::ptr::null_mut()) } };
}

/// Makes sure the calling thread has an alternate signal stack.
pub fn ensure() {
    let _ = ALT.try_with(|alt| {
        if !alt.base.get().is_null() {
            return;
        }
        // SAFETY: querying the current alternate stack with valid pointers.
        let mut old: libc::stack_t = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::sigaltstack(core::ptr::null(), &mut old) } != 0 {
            return;
        }
        if old.ss_flags & libc::SS_ONSTACK != 0 {
            return; // running on it: it cannot be changed now
        }
        if old.ss_flags & libc::SS_DISABLE == 0 && old.ss_size >= MIN_KEPT {
            return; // the thread has a large enough one (its creator's)
        }
        let Ok(base) = sys::map_rw(STACK + GUARD) else {
            return;
        };
        // SAFETY: the lowest page of our fresh mapping becomes the guard;
        // the rest is handed to the kernel as this thread's signal stack.
        unsafe {
            let _ = sys::protect(base, GUARD, sys::Prot::None);
            let ss = libc::stack_t {
                ss_sp: base.add(GUARD).cast(),
                ss_flags: 0,
                ss_size: STACK,
            };
            if libc::sigaltstack(&ss, core::ptr::null_mut()) != 0 {
                let _ = sys::unmap(base, STACK + GUARD);
                return;
            }
        }
        alt.base.set(base);
    });
}
