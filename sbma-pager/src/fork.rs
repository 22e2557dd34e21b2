//! What a forked child sees of uffd arenas.
//!
//! `fork` does not carry a userfaultfd registration into the child (the
//! backend does not ask for `UFFD_FEATURE_EVENT_FORK`: nobody would serve
//! the child's faults). The child's copy of the arena is then plain
//! anonymous memory, in which an evicted page would silently read as
//! zeros. So a child handler (`pthread_atfork`) makes every page that was
//! not resident and idle at the fork `PROT_NONE` in the child: touching it
//! raises SIGSEGV, which the pager's handler reports in one line (as for
//! the signal backend: resident pages stay usable, nothing can be paged).
#![allow(unsafe_code, reason = "pthread_atfork and mprotect in the child")]

use crate::registry;
use std::sync::Once;

/// Registers the child handler (once per process).
pub(crate) fn watch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering a handler with no preconditions; it runs in
        // the child, single-threaded, right after fork.
        unsafe {
            libc::pthread_atfork(None, None, Some(in_child));
        }
    });
}

extern "C" fn in_child() {
    registry::for_each(|arena| {
        if arena.uffd().is_some() {
            arena.fence_after_fork();
        }
    });
}
