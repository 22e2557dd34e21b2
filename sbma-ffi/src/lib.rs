//! # sbma-ffi
//!
//! The C ABI (`libsbma`, `include/sbma.h`): the modern API and the original
//! SBMA names (`SBMA_init`, `SBMA_mtouch`, ...).
//!
//! **Status: not implemented yet** (issue 5): no symbol is exported. Build the
//! artefacts with `--profile preload` (panic = abort) once it is.
#![deny(unsafe_code)]

pub use sbma_alloc as alloc;
