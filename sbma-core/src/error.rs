//! The core's error type: small, `Copy`, allocation-free.
//!
//! Richer errors (with `errno`, paths, variable names) live in the crates
//! that talk to the OS; they wrap this one.

use core::fmt;

/// What can go wrong in pure page arithmetic and configuration checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// A page size that is not a power of two.
    NotPowerOfTwo,
    /// A page size smaller than the OS page (or an OS page below 4 KiB).
    BelowOsPage,
    /// A page size above [`MAX_PAGE_SIZE`](crate::MAX_PAGE_SIZE).
    AbovePageLimit,
    /// A length or offset that is not a multiple of the page size.
    Misaligned,
    /// Arithmetic on page quantities overflowed `usize`.
    Overflow,
    /// A page index outside the table or region it was used with.
    OutOfRange,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::NotPowerOfTwo => "page size is not a power of two",
            Error::BelowOsPage => "page size is smaller than the OS page size (4 KiB minimum)",
            Error::AbovePageLimit => "page size is larger than 1 GiB",
            Error::Misaligned => "value is not a multiple of the page size",
            Error::Overflow => "page arithmetic overflowed",
            Error::OutOfRange => "page index out of range",
        })
    }
}

impl core::error::Error for Error {}
