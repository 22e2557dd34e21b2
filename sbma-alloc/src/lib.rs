//! # sbma-alloc
//!
//! Size classes carved from storage-backed pages, with metadata kept outside
//! managed memory; `GlobalAlloc` and `allocator_api2::Allocator` front ends.
//!
//! **Status: not implemented yet** (issue 4). The crate exists so the layer
//! order `alloc -> pager -> core` is fixed from the start.
#![deny(unsafe_code)]

pub use sbma_pager as pager;
