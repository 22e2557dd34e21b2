//! The `pthread_atfork` handlers: what a fork does to every arena.
//!
//! - prepare (forking thread, before the fork): forks are serialised;
//!   each arena sets up the child's fork snapshot (`snapshot`) and takes
//!   its reclaim and policy locks, so the child inherits them free and the
//!   structures they guard consistent.
//! - parent: the locks are released, the parent closes its copy of the
//!   snapshot pipe's write end (the child's copy tells it when the child
//!   exec'd or exited).
//! - child (the child's only thread): each arena settles the operations
//!   other threads had in flight, protects every page according to its
//!   state (a userfaultfd registration does not survive `fork`: the
//!   backend does not ask for `UFFD_FEATURE_EVENT_FORK`, nobody would
//!   serve the child's faults), and from then on pages through its
//!   snapshot with its own budget (`Arena::after_fork_in_child`).
//!
//! Only `fork` runs the handlers. `vfork` and `posix_spawn` children share
//! the parent's memory until they exec and must not touch managed memory
//! (glibc's `posix_spawn` does not); a raw `clone` without the handlers
//! gets a child whose arenas refuse to page (`FaultError::Forked`).
#![allow(unsafe_code, reason = "pthread_atfork")]

use crate::registry;
use std::sync::Once;

/// Registers the handlers (once per process).
pub(crate) fn watch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registering handlers with no preconditions; they run
        // around every fork, in the forking thread and in the child.
        unsafe {
            libc::pthread_atfork(Some(prepare), Some(in_parent), Some(in_child));
        }
    });
}

extern "C" fn prepare() {
    crate::snapshot::begin_fork();
    registry::for_each(|arena| arena.before_fork());
}

extern "C" fn in_parent() {
    registry::for_each(|arena| arena.after_fork_in_parent());
    crate::snapshot::end_fork();
}

extern "C" fn in_child() {
    registry::for_each(|arena| arena.after_fork_in_child());
    crate::snapshot::end_fork();
}
