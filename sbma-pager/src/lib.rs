//! # sbma-pager
//!
//! The layer that owns real mappings: arenas reserved with `mmap`
//! (`PROT_NONE`, `MAP_NORESERVE`), the fault backends (SIGSEGV/SIGBUS and,
//! later, userfaultfd), the backing store (one sparse, unlinked file per
//! arena) and the eviction engine that executes [`sbma_core`]'s transitions
//! with syscalls.
//!
//! **Status: not implemented yet.** This crate is the placeholder that fixes
//! the workspace's layer order; the pager is tracked by issue 3 (see
//! `docs/architecture.md`). It exposes nothing but the core it builds on.
#![deny(unsafe_code)]

pub use sbma_core as core;
