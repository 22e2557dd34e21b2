//! Parsing byte sizes as users write them (`64M`, `1G`, `16KiB`, `4096`),
//! for configuration such as `SBMA_BUDGET` and `sbma demo --budget`.
//! Allocation-free, so the preload shim can use it before any heap exists.

use core::fmt;

/// Why a size did not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// Empty, or no digits before the unit.
    Empty,
    /// A character that is neither a digit nor a known unit.
    BadUnit,
    /// The value does not fit in `usize`.
    Overflow,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SizeError::Empty => "expected a size such as 4096, 64K, 512M or 2G",
            SizeError::BadUnit => "unknown unit (use K, M, G or T, optionally followed by iB or B)",
            SizeError::Overflow => "size too large",
        })
    }
}

impl core::error::Error for SizeError {}

/// Parses `digits[unit]`, where the unit is `K`, `M`, `G` or `T` (powers of
/// 1024), optionally followed by `B` or `iB`, case-insensitive; a bare `B` or
/// no unit means bytes. Surrounding whitespace is ignored.
///
/// # Errors
/// [`SizeError`].
///
/// # Examples
/// ```
/// use sbma_core::units::parse_size;
/// assert_eq!(parse_size("64M"), Ok(64 << 20));
/// assert_eq!(parse_size("16KiB"), Ok(16 << 10));
/// assert_eq!(parse_size("4096"), Ok(4096));
/// assert!(parse_size("12X").is_err());
/// ```
pub fn parse_size(s: &str) -> Result<usize, SizeError> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(SizeError::Empty);
    }
    let mut value: usize = 0;
    for b in s.as_bytes()[..digits].iter() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(usize::from(b - b'0')))
            .ok_or(SizeError::Overflow)?;
    }
    let unit = &s[digits..];
    let shift = match unit.as_bytes().first().map(u8::to_ascii_uppercase) {
        None => return Ok(value),
        Some(b'B') if unit.len() == 1 => return Ok(value),
        Some(b'K') => 10,
        Some(b'M') => 20,
        Some(b'G') => 30,
        Some(b'T') => 40,
        Some(_) => return Err(SizeError::BadUnit),
    };
    let rest = &unit[1..];
    if !(rest.is_empty() || rest.eq_ignore_ascii_case("B") || rest.eq_ignore_ascii_case("iB")) {
        return Err(SizeError::BadUnit);
    }
    value.checked_mul(1 << shift).ok_or(SizeError::Overflow)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size(" 1g "), Ok(1 << 30));
        assert_eq!(parse_size("2TB"), Ok(2 << 40));
        assert_eq!(parse_size("3kib"), Ok(3 << 10));
        assert_eq!(parse_size("7B"), Ok(7));
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("M"), Err(SizeError::Empty));
        assert_eq!(parse_size("5 M"), Err(SizeError::BadUnit));
        assert_eq!(parse_size("5MiBs"), Err(SizeError::BadUnit));
        assert_eq!(parse_size("-5"), Err(SizeError::Empty));
        assert_eq!(parse_size("99999999999999999999"), Err(SizeError::Overflow));
        assert_eq!(parse_size("99999999999T"), Err(SizeError::Overflow));
    }
}
