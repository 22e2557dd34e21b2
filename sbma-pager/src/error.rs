//! The pager's public error: rich enough to say what to fix.

use rustix::io::Errno;
use std::fmt;
use std::path::PathBuf;

/// Why a pager request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A configuration value is malformed or out of range.
    Config {
        /// The setting (`"budget"`, `"SBMA_PAGE_SIZE"`, ...).
        name: &'static str,
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The budget cannot hold the minimum working set.
    BudgetTooSmall {
        /// The budget asked for, in bytes.
        budget: usize,
        /// The smallest budget that works, in bytes.
        minimum: usize,
    },
    /// The backing-store directory cannot be used.
    Store {
        /// The directory.
        dir: PathBuf,
        /// The error from creating a file there.
        source: Errno,
    },
    /// Reserving or mapping memory failed.
    Map {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: Errno,
    },
    /// The requested fault backend cannot be used in this process (only
    /// for an explicit [`Backend::Uffd`](crate::Backend::Uffd); `Auto`
    /// falls back instead).
    Backend {
        /// Why, and what would allow it.
        reason: &'static str,
        /// The OS error.
        source: Errno,
    },
    /// The arena has no free range of the requested size.
    OutOfAddressSpace {
        /// Bytes requested.
        requested: usize,
        /// The arena's size (`max_size`).
        arena: usize,
    },
    /// Too many pagers exist in this process at once.
    TooManyArenas,
    /// An I/O error on the backing store; the data concerned is still in
    /// memory (write) or still on disk (read).
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error (`ENOSPC`, `EIO`, `EFBIG`, ...).
        source: Errno,
    },
    /// The budget is exhausted and every resident page is pinned or busy.
    NoEvictablePages,
    /// A page in the range is pinned.
    Pinned,
    /// The range is not inside a live region of this pager.
    InvalidRange,
    /// Called in a forked child: the pager's backing file belongs to the
    /// parent. Resident pages stay usable as plain memory; nothing can be
    /// paged.
    Forked,
    /// A thread faulted on managed memory while holding the pager's
    /// eviction lock (a signal handler touching managed memory in the middle
    /// of the pager's own code); not supported.
    Reentered,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config {
                name,
                value,
                reason,
            } => write!(f, "invalid {name} `{value}`: {reason}"),
            Error::BudgetTooSmall { budget, minimum } => write!(
                f,
                "budget of {budget} bytes is too small: at least {minimum} bytes (4 pages) are needed"
            ),
            Error::Store { dir, source } => write!(
                f,
                "cannot create a backing file in {}: {source}",
                dir.display()
            ),
            Error::Map { op, source } => write!(f, "{op} failed: {source}"),
            Error::Backend { reason, source } => {
                write!(
                    f,
                    "the userfaultfd backend is unavailable: {reason} ({source})"
                )
            }
            Error::OutOfAddressSpace { requested, arena } => write!(
                f,
                "no free range of {requested} bytes in the arena ({arena} bytes reserved; raise max_size)"
            ),
            Error::TooManyArenas => write!(
                f,
                "too many pagers in this process (at most {})",
                crate::registry::MAX_ARENAS
            ),
            Error::Io { op, source } => write!(f, "{op} failed: {source}"),
            Error::NoEvictablePages => write!(
                f,
                "budget exhausted and every resident page is pinned or busy"
            ),
            Error::Pinned => write!(f, "a page of the range is pinned"),
            Error::InvalidRange => write!(f, "range is not inside a live region of this pager"),
            Error::Forked => write!(
                f,
                "the pager was created by the parent process; a forked child cannot page its memory"
            ),
            Error::Reentered => write!(
                f,
                "managed memory touched while the pager's eviction lock is held by the same thread"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// A [`Pager::relocate`](crate::Pager::relocate) that stopped part-way:
/// the first `moved` bytes are in their new place, the rest untouched in
/// the old one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartlyMoved {
    /// Bytes moved (whole pages, from the start of the range).
    pub moved: usize,
    /// Why the rest were not.
    pub error: Error,
}

impl fmt::Display for PartlyMoved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "moved only the first {} bytes: {}",
            self.moved, self.error
        )
    }
}

impl std::error::Error for PartlyMoved {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
