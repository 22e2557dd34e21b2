//! Marks the fault path, so its discipline can be checked from outside.
//!
//! The fault path (the SIGSEGV handler, and the uffd service thread while
//! it resolves a fault) must allocate nothing and take no lock the
//! interrupted thread may hold (docs/signals.md). An allocation there is a
//! latent deadlock: under the preload shim `malloc` is sbma's own, whose
//! memory can fault again inside the handler. [`in_fault_path`] lets an
//! allocator (the test binaries' checking allocator) refuse such calls
//! loudly instead.
//!
//! The marker is a `const`-initialised thread-local `Cell` without a
//! destructor: accessing it is a plain TLS load/store, with nothing to
//! register or allocate, so it may be used inside the signal handler.

use core::cell::Cell;

std::thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether the calling thread is resolving a fault inside sbma (its SIGSEGV
/// handler, or the uffd service thread handling a fault message).
pub fn in_fault_path() -> bool {
    DEPTH.with(|d| d.get() != 0)
}

/// The fault path, entered for the guard's lifetime.
pub(crate) struct FaultPath(());

impl FaultPath {
    /// Enters the fault path (nesting allowed).
    pub(crate) fn enter() -> FaultPath {
        DEPTH.with(|d| d.set(d.get() + 1));
        FaultPath(())
    }
}

impl Drop for FaultPath {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}
