//! The modern C API: explicit instances (`sbma_t`), configured by a struct,
//! with the malloc family, paging control and statistics.
//!
//! Every function returns an `sbma_result` (or, for the malloc family,
//! NULL with `errno` set), checks its pointer arguments, and cannot unwind
//! into C.
//!
//! # Safety
//! Pointers come from C; each function's `# Safety` says what it needs.
#![allow(unsafe_code, reason = "the C ABI")]

use crate::result::{boundary, fail, sbma_result, set_last_error};
use core::ffi::{CStr, c_char, c_int, c_void};
use sbma_alloc::SbmaAlloc;
use sbma_alloc::sbma_pager::{Access, Backend, Pager, PolicyKind};

/// An allocator instance: its own budget, arena and backing file.
#[allow(non_camel_case_types, reason = "C naming")]
pub struct sbma_t {
    pub(crate) alloc: SbmaAlloc,
}

/// The eviction policy.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C naming")]
pub enum sbma_policy {
    /// Second chance (the default).
    SBMA_POLICY_CLOCK = 0,
    /// Least recently used.
    SBMA_POLICY_LRU = 1,
    /// First in, first out.
    SBMA_POLICY_FIFO = 2,
    /// Evict everything when full.
    SBMA_POLICY_ALL = 3,
}

/// The fault backend (see docs/uffd.md).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C naming")]
pub enum sbma_backend {
    /// userfaultfd where the process may open one, else the signal backend
    /// (the default).
    #[default]
    SBMA_BACKEND_AUTO = 0,
    /// `PROT_NONE` pages and a SIGSEGV handler.
    SBMA_BACKEND_SIGNAL = 1,
    /// userfaultfd; `sbma_new` fails with `SBMA_INVALID_CONFIG` where it
    /// cannot be opened.
    SBMA_BACKEND_UFFD = 2,
}

/// Reads only, or reads and writes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types, reason = "C naming")]
pub enum sbma_access {
    /// The memory will be read.
    SBMA_READ = 0,
    /// The memory will be written (and read).
    SBMA_WRITE = 1,
}

impl From<sbma_access> for Access {
    fn from(a: sbma_access) -> Access {
        match a {
            sbma_access::SBMA_READ => Access::Read,
            sbma_access::SBMA_WRITE => Access::Write,
        }
    }
}

/// Settings of an instance. Start from `sbma_config_default`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(non_camel_case_types, reason = "C naming")]
pub struct sbma_config {
    /// Resident-memory budget in bytes.
    pub budget: usize,
    /// SBMA page size in bytes (a power of two, at least the system page).
    pub page_size: usize,
    /// Address space reserved for the instance's heap, in bytes.
    pub arena_size: usize,
    /// Directory of the (unlinked) backing file; NULL: `$TMPDIR` or /tmp.
    pub dir: *const c_char,
    /// Eviction policy.
    pub policy: sbma_policy,
    /// Background write-back and prefetch threads (1) or none (0).
    pub background_io: c_int,
    /// The fault backend.
    pub backend: sbma_backend,
    /// NULL, or the name of a group: the instances of every process on
    /// this machine that use the same name share one budget (the first
    /// member's; a different `budget` makes `sbma_new` fail). Letters,
    /// digits, `-`, `_` and `.`, at most 200 bytes.
    pub group: *const c_char,
}

/// Fills `cfg` with the defaults: 256 MiB budget, 16 KiB pages, 16 GiB of
/// address space, `$TMPDIR`, CLOCK, background I/O, backend chosen
/// automatically, no group.
///
/// # Safety
/// `cfg` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_config_default(cfg: *mut sbma_config) -> sbma_result {
    if cfg.is_null() {
        return sbma_result::SBMA_NULL_PARAMETER;
    }
    // SAFETY: checked non-null; the caller's contract.
    unsafe {
        cfg.write(sbma_config {
            budget: sbma_alloc::sbma_pager::DEFAULT_BUDGET,
            page_size: sbma_alloc::sbma_pager::DEFAULT_PAGE_SIZE,
            arena_size: 16 << 30,
            dir: core::ptr::null(),
            policy: sbma_policy::SBMA_POLICY_CLOCK,
            background_io: 1,
            backend: sbma_backend::SBMA_BACKEND_AUTO,
            group: core::ptr::null(),
        })
    };
    sbma_result::SBMA_OK
}

/// Builds the pager settings of `cfg`.
///
/// # Safety
/// `cfg.dir` and `cfg.group` are NULL or NUL-terminated strings.
pub(crate) unsafe fn pager_builder(
    cfg: &sbma_config,
) -> Result<sbma_alloc::sbma_pager::PagerBuilder, sbma_result> {
    let mut b = Pager::builder()
        .budget(cfg.budget)
        .page_size(cfg.page_size)
        .max_size(cfg.arena_size)
        .background_io(cfg.background_io != 0)
        .backend(match cfg.backend {
            sbma_backend::SBMA_BACKEND_AUTO => Backend::Auto,
            sbma_backend::SBMA_BACKEND_SIGNAL => Backend::Signal,
            sbma_backend::SBMA_BACKEND_UFFD => Backend::Uffd,
        })
        .policy(match cfg.policy {
            sbma_policy::SBMA_POLICY_CLOCK => PolicyKind::Clock,
            sbma_policy::SBMA_POLICY_LRU => PolicyKind::Lru,
            sbma_policy::SBMA_POLICY_FIFO => PolicyKind::Fifo,
            sbma_policy::SBMA_POLICY_ALL => PolicyKind::EvictAll,
        });
    if !cfg.dir.is_null() {
        // SAFETY: the caller's contract.
        let dir = unsafe { CStr::from_ptr(cfg.dir) };
        let Ok(dir) = dir.to_str() else {
            set_last_error("the directory is not valid UTF-8");
            return Err(sbma_result::SBMA_INVALID_CONFIG);
        };
        b = b.dir(dir);
    }
    if !cfg.group.is_null() {
        // SAFETY: the caller's contract.
        let group = unsafe { CStr::from_ptr(cfg.group) };
        let Ok(group) = group.to_str() else {
            set_last_error("the group name is not valid UTF-8");
            return Err(sbma_result::SBMA_INVALID_CONFIG);
        };
        b = b.group(group);
    }
    Ok(b)
}

/// Creates an instance; `*out` receives it (NULL on failure, with the
/// reason in `sbma_last_error`).
///
/// # Safety
/// `cfg` points to a valid `sbma_config`; `out` is valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_new(cfg: *const sbma_config, out: *mut *mut sbma_t) -> sbma_result {
    if cfg.is_null() || out.is_null() {
        return sbma_result::SBMA_NULL_PARAMETER;
    }
    boundary(sbma_result::SBMA_INTERNAL, || {
        // SAFETY: checked non-null; the caller's contract.
        unsafe { out.write(core::ptr::null_mut()) };
        // SAFETY: as above.
        let builder = match unsafe { pager_builder(&*cfg) } {
            Ok(b) => b,
            Err(e) => return e,
        };
        match SbmaAlloc::builder().pager(builder).build() {
            Ok(alloc) => {
                let h = Box::into_raw(Box::new(sbma_t { alloc }));
                if !crate::io::register(h) {
                    set_last_error(
                        "more than 64 live instances: libc I/O into this one is not wrapped",
                    );
                }
                // SAFETY: as above.
                unsafe { out.write(h) };
                sbma_result::SBMA_OK
            }
            Err(e) => {
                set_last_error(&e.to_string());
                (&e).into()
            }
        }
    })
}

/// Destroys an instance: every block it handed out is gone, memory and
/// backing file are released. NULL is ignored.
///
/// # Safety
/// `h` came from `sbma_new` and is not used again.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_destroy(h: *mut sbma_t) {
    if !h.is_null() {
        crate::io::unregister(h);
        // SAFETY: the caller's contract.
        boundary((), || drop(unsafe { Box::from_raw(h) }));
    }
}

/// The instance behind `h`, or NULL-parameter.
fn inst<'a>(h: *const sbma_t) -> Result<&'a sbma_t, sbma_result> {
    // SAFETY: a non-null `h` came from `sbma_new` and is alive (every
    // function's contract).
    unsafe { h.as_ref() }.ok_or(sbma_result::SBMA_NULL_PARAMETER)
}

/// `malloc` in instance `h`: NULL with `errno = ENOMEM` on failure.
///
/// # Safety
/// `h` is a live instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_malloc(h: *mut sbma_t, size: usize) -> *mut c_void {
    inst(h).map_or(core::ptr::null_mut(), |i| i.alloc.malloc(size).cast())
}

/// `calloc` in instance `h` (overflow-checked).
///
/// # Safety
/// `h` is a live instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_calloc(h: *mut sbma_t, n: usize, size: usize) -> *mut c_void {
    inst(h).map_or(core::ptr::null_mut(), |i| i.alloc.calloc(n, size).cast())
}

/// `realloc` in instance `h`.
///
/// # Safety
/// `h` is a live instance; `p` is NULL or a live block of it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_realloc(h: *mut sbma_t, p: *mut c_void, size: usize) -> *mut c_void {
    inst(h).map_or(core::ptr::null_mut(), |i| {
        // SAFETY: the caller's contract.
        unsafe { i.alloc.realloc(p.cast(), size) }.cast()
    })
}

/// `aligned_alloc` in instance `h`.
///
/// # Safety
/// `h` is a live instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_aligned_alloc(
    h: *mut sbma_t,
    align: usize,
    size: usize,
) -> *mut c_void {
    inst(h).map_or(core::ptr::null_mut(), |i| {
        i.alloc.aligned_alloc(align, size).cast()
    })
}

/// `free` in instance `h` (NULL ignored; a bad pointer aborts with one
/// line, like glibc).
///
/// # Safety
/// `h` is a live instance; `p` is NULL or a live block of it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_free(h: *mut sbma_t, p: *mut c_void) {
    if let Ok(i) = inst(h) {
        // SAFETY: the caller's contract.
        unsafe { i.alloc.free(p.cast()) }
    }
}

/// The usable size of a block of `h` (0 for NULL or a foreign pointer).
///
/// # Safety
/// `h` is a live instance; `p` is NULL or a live block.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_usable_size(h: *mut sbma_t, p: *const c_void) -> usize {
    // SAFETY: the caller's contract.
    inst(h).map_or(0, |i| unsafe { i.alloc.usable_size(p.cast()) }.unwrap_or(0))
}

/// Runs `f` on the pager of `h` inside the boundary.
fn with_pager(h: *const sbma_t, f: impl FnOnce(&Pager) -> sbma_result) -> sbma_result {
    boundary(sbma_result::SBMA_INTERNAL, || match inst(h) {
        Ok(i) => i.alloc.pager().map_or(sbma_result::SBMA_NOT_INITIALIZED, f),
        Err(e) => e,
    })
}

/// A count-returning call's result: the count into `*out` (if not NULL).
fn counted(r: Result<usize, sbma_alloc::sbma_pager::Error>, out: *mut usize) -> sbma_result {
    match r {
        Ok(n) => {
            if !out.is_null() {
                // SAFETY: `out` is NULL or writable (every caller's contract).
                unsafe { out.write(n) };
            }
            sbma_result::SBMA_OK
        }
        Err(e) => fail(&e),
    }
}

/// Makes `[addr, addr + len)` resident for `access` (SBMA's `mtouch`).
///
/// # Safety
/// `h` is a live instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_touch(
    h: *mut sbma_t,
    addr: *const c_void,
    len: usize,
    access: sbma_access,
) -> sbma_result {
    with_pager(h, |p| {
        p.touch(addr.cast(), len, access.into())
            .map_or_else(|e| fail(&e), |()| sbma_result::SBMA_OK)
    })
}

/// Writes back and drops the pages covering `[addr, addr + len)`;
/// `*evicted` (if not NULL) receives how many pages left memory.
///
/// # Safety
/// `h` is a live instance; `evicted` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_evict(
    h: *mut sbma_t,
    addr: *const c_void,
    len: usize,
    evicted: *mut usize,
) -> sbma_result {
    with_pager(h, |p| counted(p.evict(addr.cast(), len), evicted))
}

/// Writes back and drops every resident page of `h`.
///
/// # Safety
/// `h` is a live instance; `evicted` is NULL or valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_evict_all(h: *mut sbma_t, evicted: *mut usize) -> sbma_result {
    with_pager(h, |p| counted(p.evict_all(), evicted))
}

/// Discards the pages lying entirely inside `[addr, addr + len)` (zeros
/// next time, never written back; SBMA's `mclear`).
///
/// # Safety
/// `h` is a live instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_clear(
    h: *mut sbma_t,
    addr: *const c_void,
    len: usize,
) -> sbma_result {
    with_pager(h, |p| {
        p.clear(addr.cast(), len)
            .map_or_else(|e| fail(&e), |()| sbma_result::SBMA_OK)
    })
}

/// Declares this process blocked (`blocked != 0`: waiting, e.g. inside a
/// blocking MPI call) or running again (0). In a group, blocked members
/// give memory back to their peers first; without a group nothing changes.
/// The original API's `SBMA_sigon`/`SBMA_sigoff` do the same for the
/// process-wide heap.
///
/// # Safety
/// `h` is a live instance.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_set_blocked(h: *mut sbma_t, blocked: c_int) -> sbma_result {
    with_pager(h, |p| {
        p.set_blocked(blocked != 0);
        sbma_result::SBMA_OK
    })
}

/// 1 if `addr` is in the heap of `h`, else 0 (SBMA's `mexist`).
///
/// # Safety
/// `h` is a live instance or NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_exists(h: *mut sbma_t, addr: *const c_void) -> c_int {
    inst(h).map_or(0, |i| c_int::from(i.alloc.owns(addr.cast())))
}

/// Statistics of an instance.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(non_camel_case_types, reason = "C naming")]
pub struct sbma_stats {
    /// Faults on pages that were read.
    pub read_faults: u64,
    /// Faults on pages that were written.
    pub write_faults: u64,
    /// Pages read from the backing file.
    pub pages_read: u64,
    /// Pages written to the backing file.
    pub pages_written: u64,
    /// Pages that left memory.
    pub pages_evicted: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Nanoseconds spent reading.
    pub read_ns: u64,
    /// Nanoseconds spent writing.
    pub write_ns: u64,
    /// Bytes resident now.
    pub resident: u64,
    /// Bytes resident and dirty now.
    pub dirty: u64,
    /// The most bytes resident at once.
    pub peak_resident: u64,
    /// The budget in bytes.
    pub budget: u64,
    /// Bytes in live small blocks.
    pub small_bytes: u64,
    /// Bytes of spans held by large objects.
    pub large_bytes: u64,
    /// The fault backend in use (never `SBMA_BACKEND_AUTO`).
    pub backend: sbma_backend,
    /// In a group: its live members, this process included (0: no group).
    pub group_members: u64,
    /// In a group: bytes charged by all members now (`budget` is the
    /// group's); `resident` is this process's part.
    pub group_resident: u64,
    /// In a group: times this process asked peers to give memory back.
    pub peer_requests: u64,
    /// In a group: pages this process evicted because peers asked.
    pub pages_given_to_peers: u64,
    /// 1 while this process is declared blocked (`sbma_set_blocked`).
    pub blocked: c_int,
}

/// Fills `*out` with the statistics of `h`.
///
/// # Safety
/// `h` is a live instance; `out` is valid for writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_stats_get(h: *mut sbma_t, out: *mut sbma_stats) -> sbma_result {
    if out.is_null() {
        return sbma_result::SBMA_NULL_PARAMETER;
    }
    boundary(sbma_result::SBMA_INTERNAL, || {
        let i = match inst(h) {
            Ok(i) => i,
            Err(e) => return e,
        };
        let Some(s) = i.alloc.stats() else {
            return sbma_result::SBMA_NOT_INITIALIZED;
        };
        let p = &s.pager;
        // SAFETY: checked non-null; the caller's contract.
        unsafe {
            out.write(sbma_stats {
                read_faults: p.read_faults,
                write_faults: p.write_faults,
                pages_read: p.pages_read,
                pages_written: p.pages_written,
                pages_evicted: p.pages_evicted,
                bytes_read: p.bytes_read,
                bytes_written: p.bytes_written,
                read_ns: p.read_ns,
                write_ns: p.write_ns,
                resident: p.resident,
                dirty: p.dirty,
                peak_resident: p.peak_resident,
                budget: p.budget,
                small_bytes: s.small_bytes,
                large_bytes: s.large_bytes as u64,
                backend: match p.backend {
                    Backend::Uffd => sbma_backend::SBMA_BACKEND_UFFD,
                    _ => sbma_backend::SBMA_BACKEND_SIGNAL,
                },
                group_members: i
                    .alloc
                    .pager()
                    .and_then(Pager::group)
                    .map_or(0, |g| g.members().len() as u64),
                group_resident: p.group_resident,
                peer_requests: p.peer_requests,
                pages_given_to_peers: p.pages_given_to_peers,
                blocked: c_int::from(i.alloc.pager().is_some_and(Pager::is_blocked)),
            })
        };
        sbma_result::SBMA_OK
    })
}
