#![doc = include_str!("../README.md")]
//!
//! # Map of the crate
//!
//! - [`page`]: [`PageSize`], [`PageIndex`], [`PageCount`], [`PageRange`],
//!   [`AlignedLen`]; checked arithmetic.
//! - [`state`]: [`PageState`], [`Event`], [`Actions`] and the pure
//!   [`transition`] function, with the invariants as equations.
//! - [`table`]: [`PageTable`], one atomic word per page, CAS transitions,
//!   counters and [`PageTable::audit`].
//! - [`policy`]: the [`EvictionPolicy`] trait and [`Clock`], [`Lru`],
//!   [`Fifo`], [`EvictAll`].
//! - [`budget`]: the [`Budget`] trait and [`LocalBudget`].
//! - [`backend`]: the [`PageBackend`] trait the engine drives.
//! - [`engine`]: [`Engine`], the reference driver of the protocol over any
//!   backend, policy and budget.
//! - [`sim`]: [`SimBackend`] and [`SimMachine`], the in-memory stand-in for
//!   mmap/mprotect/pread/pwrite.
//! - [`units`]: parsing byte sizes (`64M`, `1G`).
//! - [`sync`]: the loom shim.
//!
//! The SBMA papers this model follows: J. Iverson, G. Karypis, "A Memory
//! Management System Optimized for BDMPI's Memory and Execution Model",
//! EuroMPI '15; and IJHPCA 32(5), 2018.
#![no_std]
#![deny(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "conformance"))]
extern crate std;

pub mod backend;
pub mod budget;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod engine;
mod error;
pub mod page;
pub mod policy;
pub mod sim;
pub mod state;
pub mod sync;
pub mod table;
pub mod units;

pub use backend::{PageBackend, Protection, run_actions};
pub use budget::{Budget, LocalBudget, Shortfall};
pub use engine::{Access, Engine, EngineError, EngineStats};
pub use error::Error;
pub use page::{
    AlignedLen, MAX_PAGE_SIZE, MIN_PAGE_SIZE, PageCount, PageIndex, PageRange, PageSize,
};
pub use policy::{AnyPolicy, Clock, EvictAll, EvictionPolicy, Fifo, Lru, PolicyKind};
pub use sim::{SimBackend, SimError, SimMachine};
pub use state::{
    Action, Actions, Event, Kind, MAX_PINS, Op, Outcome, PageState, Transition, moved_in,
    transition,
};
pub use table::{Applied, AuditError, Census, PageTable};
