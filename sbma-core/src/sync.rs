//! The one place that chooses between real atomics and loom's models.
//!
//! Everything in the crate that is shared between threads imports its
//! atomics from here, so `RUSTFLAGS="--cfg loom"` swaps every one of them
//! for loom's instrumented versions and `tests/loom.rs` can explore the
//! interleavings (crossbeam-epoch's `primitive` module is the model).

#[cfg(loom)]
pub use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
