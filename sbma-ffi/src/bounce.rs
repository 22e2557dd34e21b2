//! Stack copies standing in for small objects in managed memory.
//!
//! A call that may block (waiting for events, for a connection) must not
//! pin its arguments: a pin holds budget for as long as the wait lasts. For
//! the small objects those calls take (an event array, `fd_set`s, a
//! `timespec`, a signal mask, a socket address) the wrappers give the kernel
//! a copy on the calling thread's stack and copy results back after the
//! call; both copies are ordinary accesses, which fault pages in as needed.
//! Objects outside managed memory are passed through untouched.
#![allow(unsafe_code, reason = "copies of the caller's objects")]

use core::mem::MaybeUninit;

/// A stack copy of the `T` at `user`, used in its place when `user` lies in
/// memory the kernel cannot reach by itself.
pub(crate) struct Bounce<T> {
    user: *mut T,
    copy: MaybeUninit<T>,
    used: bool,
}

impl<T> Bounce<T> {
    /// Copies `*user` (its bytes, initialised or not) if it is managed.
    ///
    /// # Safety
    /// `user` is NULL or valid for reading `size_of::<T>()` bytes (the
    /// wrapped function's contract).
    pub(crate) unsafe fn new(user: *const T) -> Self {
        let used = crate::io::needs_help(user.cast());
        let mut copy = MaybeUninit::<T>::uninit();
        if used {
            // SAFETY: the caller's contract; bytes copied into our own
            // uninitialised storage, so no value of `T` is asserted.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    user.cast::<u8>(),
                    copy.as_mut_ptr().cast::<u8>(),
                    size_of::<T>(),
                );
            }
        }
        Bounce {
            user: user.cast_mut(),
            copy,
            used,
        }
    }

    /// The pointer to give the kernel.
    pub(crate) fn ptr(&mut self) -> *mut T {
        if self.used {
            self.copy.as_mut_ptr()
        } else {
            self.user
        }
    }

    /// Copies what the kernel wrote back to the caller's object.
    ///
    /// # Safety
    /// `user` is valid for writing (the wrapped function's contract for an
    /// object it writes).
    pub(crate) unsafe fn back(&self) {
        if self.used {
            // SAFETY: the caller's contract; bytes of our copy.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    self.copy.as_ptr().cast::<u8>(),
                    self.user.cast::<u8>(),
                    size_of::<T>(),
                );
            }
        }
    }
}
