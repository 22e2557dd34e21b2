//! # sbma-interpose
//!
//! The `LD_PRELOAD` shim behind `sbma run -- prog`: exports the malloc family,
//! configured only by `SBMA_*` environment variables.
//!
//! **Status: not implemented yet** (issue 5): the library exports nothing, so
//! preloading it changes nothing.
#![deny(unsafe_code)]

pub use sbma_alloc as alloc;
