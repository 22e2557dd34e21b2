//! The small fixed table of arenas the fault handler searches.
//!
//! The handler must find the arena of a faulting address without locks or
//! allocation. Arenas are published in a fixed array of atomic pointers;
//! the handler scans it (a handful of entries) and checks the range.
//!
//! Removal is safe against a handler running concurrently: the handler
//! announces itself in [`ACTIVE`] before loading any pointer, and
//! [`unpublish`] clears the slot and then waits until it sees no handler
//! active. Both sides use `SeqCst`, so a handler that loaded the pointer
//! before it was cleared is counted by the time the remover looks (a
//! Dekker-style handshake); a handler that comes later cannot see the
//! pointer at all.
#![allow(
    unsafe_code,
    reason = "the handler dereferences published arena pointers"
)]

use crate::arena::Arena;
use crate::sys;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

/// How many arenas can exist at once in a process.
pub const MAX_ARENAS: usize = 64;

static SLOTS: [AtomicPtr<Arena>; MAX_ARENAS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_ARENAS];
static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Publishes `arena`; returns its slot, or `None` if the table is full.
///
/// The arena must stay alive until [`unpublish`] returns.
pub fn publish(arena: *const Arena) -> Option<usize> {
    for (i, slot) in SLOTS.iter().enumerate() {
        if slot
            .compare_exchange(
                core::ptr::null_mut(),
                arena.cast_mut(),
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
        {
            return Some(i);
        }
    }
    None
}

/// Removes the arena in `slot` and waits until no fault handler can still
/// be using it.
pub fn unpublish(slot: usize) {
    SLOTS[slot].store(core::ptr::null_mut(), Ordering::SeqCst);
    while ACTIVE.load(Ordering::SeqCst) != 0 {
        sys::yield_now();
    }
}

/// Runs `f` on the arena containing `addr`, if any, with the arena
/// protected from removal for the duration.
pub fn with_arena<R>(addr: usize, f: impl FnOnce(&Arena) -> R) -> Option<R> {
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let mut result = None;
    for slot in &SLOTS {
        let p = slot.load(Ordering::SeqCst);
        if p.is_null() {
            continue;
        }
        // SAFETY: a published pointer stays valid until `unpublish` has
        // seen ACTIVE drop to zero, and we hold ACTIVE above zero.
        let arena = unsafe { &*p };
        if arena.contains(addr) {
            result = Some(f(arena));
            break;
        }
    }
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    result
}
