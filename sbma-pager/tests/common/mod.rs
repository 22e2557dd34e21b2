//! Helpers shared by the pager's test binaries.
#![allow(
    unsafe_code,
    reason = "tests look at managed memory through raw pointers"
)]
#![allow(dead_code, reason = "each test binary uses a different subset")]

/// Bytes of `[addr, addr + len)` the kernel has resident (`mincore`).
pub fn resident_bytes(addr: *const u8, len: usize) -> usize {
    let os = 4096;
    let pages = len.div_ceil(os);
    let mut vec = vec![0u8; pages];
    // SAFETY: the range is a mapping owned by the pager; mincore only
    // reports on it.
    let r = unsafe { libc::mincore(addr as *mut libc::c_void, len, vec.as_mut_ptr()) };
    assert_eq!(r, 0, "mincore failed: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 != 0).count() * os
}

/// Reads the `i`-th u64 of the memory at `p` (volatile: every access is a
/// real load that may fault).
///
/// # Safety
/// `p + 8 i` lies in a live region.
pub unsafe fn load(p: *const u64, i: usize) -> u64 {
    // SAFETY: forwarded.
    unsafe { p.add(i).read_volatile() }
}

/// Writes the `i`-th u64.
///
/// # Safety
/// As [`load`].
pub unsafe fn store(p: *mut u64, i: usize, v: u64) {
    // SAFETY: forwarded.
    unsafe { p.add(i).write_volatile(v) }
}

/// Scratch directory for backing files: `$TMPDIR` or /tmp.
pub fn tmpdir() -> std::path::PathBuf {
    std::env::var_os("TMPDIR").map_or_else(|| "/tmp".into(), Into::into)
}
