//! The small fixed table of arenas the fault handler searches.
//!
//! The handler must find the arena of a faulting address without locks or
//! allocation. Arenas are published in a fixed array of atomic pointers;
//! the handler scans it (a handful of entries) and checks the range.
//!
//! Removal is safe against handlers running concurrently, and cannot be
//! starved by them (a two-epoch scheme, RCU in miniature):
//!
//! - A handler reads the current epoch `e`, increments `ACTIVE[e]`, loads
//!   slot pointers, uses the arena it found, and decrements `ACTIVE[e]`.
//! - [`unpublish`] clears the slot, then twice: flips the epoch and waits
//!   until the counter of the epoch it left is zero. Handlers that start
//!   after a flip count in the other epoch, so a steady stream of faults (in
//!   other arenas) cannot keep the remover waiting, and handlers that start
//!   after the clear cannot see the pointer.
//!
//! Why twice: a handler may read the epoch, be preempted across a whole
//! earlier removal, then increment the counter of an epoch that is no
//! longer current and load this slot before it is cleared. One flip would
//! wait on the other counter only; after two flips both counters have been
//! drained once after the clear (userspace RCU's two-phase grace period).
//! Everything is `SeqCst`; removers are serialised by a mutex (never taken
//! by the handler).
#![allow(
    unsafe_code,
    reason = "the handler dereferences published arena pointers"
)]

use crate::arena::Arena;
use crate::sys;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

/// How many arenas can exist at once in a process.
pub const MAX_ARENAS: usize = 64;

static SLOTS: [AtomicPtr<Arena>; MAX_ARENAS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_ARENAS];
static EPOCH: AtomicUsize = AtomicUsize::new(0);
static ACTIVE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
static REMOVING: Mutex<()> = Mutex::new(());

/// Publishes `arena`; returns its slot, or `None` if the table is full.
///
/// The arena must stay alive until [`unpublish`] returns.
pub fn publish(arena: *const Arena) -> Option<usize> {
    SLOTS.iter().position(|slot| {
        slot.compare_exchange(
            core::ptr::null_mut(),
            arena.cast_mut(),
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_ok()
    })
}

/// Removes the arena in `slot` and waits until no fault handler can still
/// be using it.
pub fn unpublish(slot: usize) {
    let _serial = REMOVING.lock().unwrap_or_else(|e| e.into_inner());
    SLOTS[slot].store(core::ptr::null_mut(), Ordering::SeqCst);
    for _ in 0..2 {
        let old = EPOCH.fetch_xor(1, Ordering::SeqCst) & 1;
        while ACTIVE[old].load(Ordering::SeqCst) != 0 {
            sys::yield_now();
        }
    }
}

/// Runs `f` on the arena containing `addr`, if any, with the arena
/// protected from removal for the duration.
pub fn with_arena<R>(addr: usize, f: impl FnOnce(&Arena) -> R) -> Option<R> {
    let e = EPOCH.load(Ordering::SeqCst) & 1;
    ACTIVE[e].fetch_add(1, Ordering::SeqCst);
    let mut result = None;
    for slot in &SLOTS {
        let p = slot.load(Ordering::SeqCst);
        if p.is_null() {
            continue;
        }
        // SAFETY: a published pointer stays valid until `unpublish` has
        // seen this epoch's ACTIVE drop to zero, and we hold it above zero.
        let arena = unsafe { &*p };
        if arena.contains(addr) {
            result = Some(f(arena));
            break;
        }
    }
    ACTIVE[e].fetch_sub(1, Ordering::SeqCst);
    result
}

/// Runs `f` on every published arena (used in a forked child, where no
/// other thread exists).
pub fn for_each(mut f: impl FnMut(&Arena)) {
    let e = EPOCH.load(Ordering::SeqCst) & 1;
    ACTIVE[e].fetch_add(1, Ordering::SeqCst);
    for slot in &SLOTS {
        let p = slot.load(Ordering::SeqCst);
        if !p.is_null() {
            // SAFETY: as in `with_arena`.
            f(unsafe { &*p });
        }
    }
    ACTIVE[e].fetch_sub(1, Ordering::SeqCst);
}
