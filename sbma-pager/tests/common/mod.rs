//! Helpers shared by the pager's test binaries.
#![allow(
    unsafe_code,
    reason = "tests look at managed memory through raw pointers"
)]
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod scenario;

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

/// The ways pages can be served on this machine, for tests that run the
/// same scenario on every one: the signal backend with both fill methods,
/// and the uffd backend where this process may open a userfaultfd (else a
/// line says why it is skipped).
pub fn variants() -> Vec<Variant> {
    let mut v = vec![
        Variant::Signal(sbma_pager::FillMethod::SelfMem),
        Variant::Signal(sbma_pager::FillMethod::Remap),
    ];
    match sbma_pager::Backend::Uffd.available() {
        Ok(()) => v.push(Variant::Uffd),
        Err(e) => eprintln!("SKIPPED: the uffd backend on this machine: {e}"),
    }
    v
}

/// The fault backends available here: the signal backend with `fill`,
/// and uffd if it can be used.
pub fn backends_with(fill: sbma_pager::FillMethod) -> Vec<Variant> {
    variants()
        .into_iter()
        .filter(|v| matches!(v, Variant::Uffd) || *v == Variant::Signal(fill))
        .collect()
}

/// The fault backends available here, the signal one with its default
/// fill method.
pub fn backends() -> Vec<Variant> {
    backends_with(sbma_pager::FillMethod::SelfMem)
}

/// One way of serving faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The signal backend with this fill method.
    Signal(sbma_pager::FillMethod),
    /// The userfaultfd backend.
    Uffd,
}

impl Variant {
    /// Applies the variant to a builder.
    pub fn apply(self, b: sbma_pager::PagerBuilder) -> sbma_pager::PagerBuilder {
        match self {
            Variant::Signal(fill) => b.backend(sbma_pager::Backend::Signal).fill_method(fill),
            Variant::Uffd => b.backend(sbma_pager::Backend::Uffd),
        }
    }
}

/// Defines one `#[test]` per pair, each running `$on(variant)` for every
/// backend available ([`backends`]; after `over`, the list a function
/// gives, e.g. `common::variants` for both fill methods too): the
/// scenario is written once.
#[allow(unused_macros, reason = "each test binary uses a different subset")]
macro_rules! per_backend {
    (over $list:path; $($name:ident => $on:ident;)*) => {$(
        #[test]
        fn $name() {
            for b in $list() {
                $on(b);
            }
        }
    )*};
    ($($name:ident => $on:ident;)*) => {
        per_backend! { over common::backends; $($name => $on;)* }
    };
}

/// The test binaries' allocator: the system's, except that an allocation
/// on the fault path (inside sbma's SIGSEGV handler or the uffd service's
/// fault resolution) aborts with one line. The fault path must allocate
/// nothing (docs/signals.md); under the preload shim such an allocation
/// can fault again inside the handler and deadlock.
pub struct FaultPathChecked;

impl FaultPathChecked {
    fn check() {
        if sbma_pager::in_fault_path() {
            let msg = b"test allocator: allocation on sbma's fault path\n";
            // SAFETY: writing a static buffer to stderr, then aborting.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                libc::abort();
            }
        }
    }
}

// SAFETY: forwards to the system allocator, which upholds the contract.
unsafe impl std::alloc::GlobalAlloc for FaultPathChecked {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded with the caller's layout.
        unsafe { std::alloc::System.alloc(l) }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        Self::check();
        // SAFETY: forwarded (allocated by System above).
        unsafe { std::alloc::System.dealloc(p, l) }
    }

    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        Self::check();
        // SAFETY: forwarded.
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}

#[global_allocator]
static ALLOCATOR: FaultPathChecked = FaultPathChecked;
