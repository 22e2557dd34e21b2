//! [`PageBackend`]: the memory and store operations behind the state
//! machine's [`Action`]s.
//!
//! The core never calls the OS. A backend maps each action onto its
//! mechanism: the pager's unix backend onto `mprotect`, `madvise`,
//! `pread`/`pwrite`, `fallocate` and `mremap`; [`SimBackend`] onto vectors.
//! [`Engine`] drives any backend through the protocol, so a backend that
//! meets the requirements below gets correct eviction and reload for free,
//! and the same model tests run against it.
//!
//! The trait is safe to implement and to call: nothing in the core can
//! cause undefined behaviour through it. The requirements are about
//! *data*: a backend that breaks them loses or corrupts page contents, which
//! the conformance and model tests detect.
//!
//! [`Action`]: crate::Action
//! [`SimBackend`]: crate::SimBackend
//! [`Engine`]: crate::Engine

use crate::state::{Action, Actions};
use crate::{PageCount, PageRange};
use core::fmt;

/// The access a page range allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protection {
    /// No access (`PROT_NONE`).
    None,
    /// Reads only (`PROT_READ`).
    Read,
    /// Reads and writes (`PROT_READ | PROT_WRITE`).
    ReadWrite,
}

/// Memory and store operations on page ranges.
///
/// # Requirements
///
/// All ranges are non-empty and inside the backend's pages; the engine
/// calls an operation on a range only while every page of it is busy, so a
/// backend needs no locking of its own per page.
///
/// - `protect(r, p)`: the new protection is in force for every thread when
///   it returns.
/// - `read_in(r)`: afterwards memory equals the store's copy. **Atomic**: no
///   thread can observe a partly filled page; the range is not accessible
///   during the call and the backend must not make it accessible itself
///   (fill a staging area and move it in, or fill through a second mapping).
/// - `zero_fill(r)`: afterwards memory reads as zeros. With
///   [`DISCARD_ZEROES`](Self::DISCARD_ZEROES), memory that was discarded
///   already does.
/// - `write_back(r)`: on `Ok`, the store's copy equals memory. On `Err`,
///   memory is unchanged and the store's copy of the range is unspecified
///   (the page stays dirty and is written again later).
/// - `discard(r)`: memory is released; it reads as zeros if made accessible
///   again.
/// - `punch_hole(r)`: the store's copy is released.
/// - Failures are returned, never panics; short I/O and `EINTR` are retried
///   inside the backend.
pub trait PageBackend {
    /// The backend's error (an errno for the unix backend).
    type Error: Copy + fmt::Debug + fmt::Display;

    /// Whether [`discard`](Self::discard) leaves zeros, making
    /// [`zero_fill`](Self::zero_fill) of discarded memory free.
    const DISCARD_ZEROES: bool;

    /// Sets the protection of `range`.
    ///
    /// # Errors
    /// The backend's error (e.g. `ENOMEM` at `vm.max_map_count`).
    fn protect(&self, range: PageRange, prot: Protection) -> Result<(), Self::Error>;

    /// Fills `range` from the store, atomically.
    ///
    /// # Errors
    /// I/O errors; memory is then unspecified but not accessible.
    fn read_in(&self, range: PageRange) -> Result<(), Self::Error>;

    /// Makes `range` read as zeros.
    ///
    /// # Errors
    /// The backend's error.
    fn zero_fill(&self, range: PageRange) -> Result<(), Self::Error>;

    /// Writes `range` to the store.
    ///
    /// # Errors
    /// I/O errors, including a full disk; memory is unchanged.
    fn write_back(&self, range: PageRange) -> Result<(), Self::Error>;

    /// Releases the memory of `range`.
    ///
    /// # Errors
    /// The backend's error.
    fn discard(&self, range: PageRange) -> Result<(), Self::Error>;

    /// Releases the store's copy of `range`.
    ///
    /// # Errors
    /// The backend's error.
    fn punch_hole(&self, range: PageRange) -> Result<(), Self::Error>;
}

/// Runs `actions` on `range` in canonical order ([`Actions::iter`]).
///
/// `Charge` is the caller's (it happens before the transition is
/// committed) and `Wake` is the caller's too (it needs the page's word);
/// both are skipped here. `Uncharge` calls `uncharge` with the number of
/// pages.
///
/// After a failure, fills and writes stop but releases (`Revoke`,
/// `Discard`, `PunchHole`, `Uncharge`) still run, so memory is still given
/// back and the budget keeps matching the page table; the first error is
/// returned. One exception: if `Revoke` failed, `Discard` is skipped, since
/// the page may still be accessible and must not turn into zeros under a
/// reader. Its memory stays as it was (for an evicted page: equal to the
/// store's copy, which is also what a reload would bring back).
///
/// # Errors
/// The first backend error.
pub fn run_actions<B: PageBackend + ?Sized>(
    backend: &B,
    range: PageRange,
    actions: Actions,
    uncharge: &mut dyn FnMut(PageCount),
) -> Result<(), B::Error> {
    let mut first_error = None;
    let mut revoke_failed = false;
    for action in actions.iter() {
        if first_error.is_some() && !action.is_release() {
            continue;
        }
        if action == Action::Discard && revoke_failed {
            continue;
        }
        let r = match action {
            Action::Charge | Action::Wake => Ok(()),
            Action::WriteProtect | Action::GrantRead => backend.protect(range, Protection::Read),
            Action::WriteBack => backend.write_back(range),
            Action::Revoke => backend.protect(range, Protection::None),
            Action::Discard => backend.discard(range),
            Action::PunchHole => backend.punch_hole(range),
            Action::ReadIn => backend.read_in(range),
            Action::ZeroFill => backend.zero_fill(range),
            Action::GrantWrite => backend.protect(range, Protection::ReadWrite),
            Action::Uncharge => {
                uncharge(range.count);
                Ok(())
            }
        };
        if let Err(e) = r {
            revoke_failed |= action == Action::Revoke;
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
