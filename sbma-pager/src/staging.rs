//! Staging buffers for fills: the data is read from the store into one of
//! these, then written into the (still inaccessible) page.
//!
//! The pool is allocated when the arena is created, so the fault handler
//! only takes a free slot (a compare-and-swap) and never allocates. With
//! more faulting threads than slots, the extra ones yield until a slot is
//! free.
#![allow(
    unsafe_code,
    reason = "slots are raw memory handed to read/write syscalls"
)]

use crate::sys;
use core::sync::atomic::{AtomicBool, Ordering};
use rustix::io::Errno;

/// A fixed pool of equally sized buffers.
pub struct Staging {
    base: *mut u8,
    slot_len: usize,
    busy: Box<[AtomicBool]>,
}

// SAFETY: the buffers are plain memory; each slot is used by one thread at
// a time, as arbitrated by `busy`.
unsafe impl Send for Staging {}
// SAFETY: as above.
unsafe impl Sync for Staging {}

impl Staging {
    /// `slots` buffers of `slot_len` bytes (lazily committed by the kernel).
    pub fn new(slots: usize, slot_len: usize) -> Result<Staging, Errno> {
        let base = sys::map_rw(slots * slot_len)?;
        Ok(Staging {
            base,
            slot_len,
            busy: (0..slots).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    /// The size of one buffer.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Takes a free buffer, yielding while all are taken.
    pub fn acquire(&self) -> Slot<'_> {
        loop {
            for (i, b) in self.busy.iter().enumerate() {
                if !b.load(Ordering::Relaxed)
                    && b.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                {
                    return Slot {
                        pool: self,
                        index: i,
                    };
                }
            }
            sys::yield_now();
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // SAFETY: the pool owns the mapping and no slot outlives the pool.
        let _ = unsafe { sys::unmap(self.base, self.busy.len() * self.slot_len) };
    }
}

/// One buffer of the pool, returned on drop.
pub struct Slot<'a> {
    pool: &'a Staging,
    index: usize,
}

impl Slot<'_> {
    /// The buffer's address (valid for `slot_len` bytes).
    pub fn as_ptr(&self) -> *mut u8 {
        // SAFETY: index < slots, so the offset stays inside the mapping.
        unsafe { self.pool.base.add(self.index * self.pool.slot_len) }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.pool.busy[self.index].store(false, Ordering::Release);
    }
}
