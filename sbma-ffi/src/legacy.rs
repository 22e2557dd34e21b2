//! The original SBMA API (`SBMA_init`, `SBMA_malloc`, `SBMA_mtouch`, ...),
//! so code written for SBMA and BDMPI compiles against `sbma.h` and runs.
//! One process-wide instance, created by `SBMA_init` and dropped by
//! `SBMA_destroy`. Return conventions are the original's: 0 or -1 (with
//! `errno` and `sbma_last_error` set), page counts in *system* pages.
//!
//! Differences from the original, where its behaviour was unsound or tied
//! to its design (research/sbma.md lists the bugs):
//! - Processes that call `SBMA_init` with the same `uniq` and `n_procs > 1`
//!   share one budget (a `Group` named `uniq-<uniq>`, whose budget is the
//!   first member's `max_mem`; a different `max_mem` is an error, not a
//!   silent choice). With `n_procs <= 1` the budget is the process's own.
//!   `SBMA_sigon`/`SBMA_sigoff` declare the process blocked/running: blocked
//!   members give memory back first. Unlike the original, nobody is ever
//!   evicted inside a signal handler in the middle of its own pager code:
//!   a member's pager thread serves requests (docs in `sbma-pager`'s
//!   `group.rs`).
//! - Option tokens are all accepted. `osvmm` is honoured (the malloc family
//!   goes to libc); the others become no-ops because sbma always does the
//!   sound thing: fills are always atomic (`ghost`), reads load one page and
//!   read ahead on sequential access (`lzyrd`/`aggrd`), new pages start
//!   evicted (`rsdnt`), `aggch`, `merge`, `metach`, `mlock`, `admitr`,
//!   `admitd`, `check`, `extra` have nothing to change.
//! - `SBMA_calloc` checks `n × size` for overflow; `SBMA_free` validates
//!   its pointer (a bad one aborts with one line, like glibc).
//! - `SBMA_mclear` discards whole pages only (as the original meant), also
//!   the first page of a block; `SBMA_mclearall` discards the whole pages of
//!   every large object and never corrupts counters.
//! - `SBMA_mallinfo` fills every field it documents (the original left
//!   `hblks` and `keepcost` at 0); `SBMA_timeinfo` fills read and write
//!   time, and `tv_ev` with write-back time (the original left `tv_ad` and
//!   `tv_ev` at 0); `tv_ad` is the time faults waited for group peers to
//!   release memory.
//!
//! # Safety
//! Pointers come from C; each function's `# Safety` says what it needs.
#![allow(unsafe_code, reason = "the C ABI")]
#![allow(non_snake_case, reason = "the original SBMA names")]

use crate::api::sbma_t;
use crate::result::{boundary, sbma_result, set_last_error};
use core::ffi::{CStr, c_char, c_int, c_void};
use core::sync::atomic::{AtomicI32, AtomicPtr, Ordering};
use sbma_alloc::SbmaAlloc;
use sbma_alloc::sbma_pager::{Access, Pager};
use std::sync::Mutex;

/// Option bits, as the original numbered them (HEAD).
pub const VMM_RSDNT: c_int = 1 << 0;
/// Lazy read: load one page on a read fault.
pub const VMM_LZYRD: c_int = 1 << 1;
/// Admit by fewest dirty pages.
pub const VMM_ADMITD: c_int = 1 << 2;
/// Charge whole allocations at first touch.
pub const VMM_AGGCH: c_int = 1 << 3;
/// Fill through a temporary mapping.
pub const VMM_GHOST: c_int = 1 << 4;
/// Merge mappings before `mremap`.
pub const VMM_MERGE: c_int = 1 << 5;
/// Charge metadata pages.
pub const VMM_METACH: c_int = 1 << 6;
/// Lock pages in memory.
pub const VMM_MLOCK: c_int = 1 << 7;
/// Consistency checks.
pub const VMM_CHECK: c_int = 1 << 8;
/// More consistency checks.
pub const VMM_EXTRA: c_int = 1 << 9;
/// The malloc family goes to libc (the OS swap baseline).
pub const VMM_OSVMM: c_int = 1 << 10;
/// Returned by `SBMA_parse_optstr` for a bad string.
pub const VMM_INVLD: c_int = 1 << 11;
/// `SBMA_mallopt` parameter: replace the option bits.
pub const M_VMMOPTS: c_int = 0;

/// The instance of the original API.
static GLOBAL: AtomicPtr<sbma_t> = AtomicPtr::new(core::ptr::null_mut());
/// Serializes `SBMA_init` and `SBMA_destroy`.
static LIFECYCLE: Mutex<()> = Mutex::new(());
static OPTS: AtomicI32 = AtomicI32::new(0);

fn global<'a>() -> Option<&'a SbmaAlloc> {
    let h = GLOBAL.load(Ordering::Acquire);
    // SAFETY: set by SBMA_init to a leaked box and only freed by
    // SBMA_destroy, which the original API requires to come last.
    unsafe { h.as_ref() }.map(|i| &i.alloc)
}

fn fail(code: sbma_result, errno: c_int) -> c_int {
    if code != sbma_result::SBMA_OK && errno != 0 {
        // SAFETY: this thread's errno slot.
        unsafe { *libc::__errno_location() = errno };
    }
    -1
}

fn sys_page() -> usize {
    rustix::param::page_size()
}

/// Parses option tokens (`"lzyrd,ghost"`, comma-separated; each at most
/// once; `default` alone means `lzyrd,merge`). Returns the bits, or
/// `VMM_INVLD`.
///
/// # Safety
/// `s` is NULL (no options) or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn SBMA_parse_optstr(s: *const c_char) -> c_int {
    if s.is_null() {
        return 0;
    }
    // SAFETY: the caller's contract.
    let Ok(text) = unsafe { CStr::from_ptr(s) }.to_str() else {
        return VMM_INVLD;
    };
    parse_opts(text).unwrap_or(VMM_INVLD)
}

fn parse_opts(text: &str) -> Option<c_int> {
    let (mut bits, mut seen) = (0, 0);
    for tok in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (bit, on) = match tok {
            "default" => {
                if seen != 0 {
                    return None;
                }
                seen = !0;
                bits = VMM_LZYRD | VMM_MERGE;
                continue;
            }
            "evict" => (VMM_RSDNT, false),
            "rsdnt" => (VMM_RSDNT, true),
            "aggrd" => (VMM_LZYRD, false),
            "lzyrd" => (VMM_LZYRD, true),
            "admitr" => (VMM_ADMITD, false),
            "admitd" => (VMM_ADMITD, true),
            "noaggch" => (VMM_AGGCH, false),
            "aggch" => (VMM_AGGCH, true),
            "noghost" => (VMM_GHOST, false),
            "ghost" => (VMM_GHOST, true),
            "nomerge" => (VMM_MERGE, false),
            "merge" => (VMM_MERGE, true),
            "nometach" => (VMM_METACH, false),
            "metach" => (VMM_METACH, true),
            "nomlock" => (VMM_MLOCK, false),
            "mlock" => (VMM_MLOCK, true),
            "nocheck" => (VMM_CHECK | VMM_EXTRA, false),
            "check" => (VMM_CHECK, true),
            "extra" => (VMM_CHECK | VMM_EXTRA, true),
            "noosvmm" => (VMM_OSVMM, false),
            "osvmm" => (VMM_OSVMM, true),
            _ => return None,
        };
        if seen & bit != 0 {
            return None;
        }
        seen |= bit;
        if on {
            bits |= bit;
        }
    }
    if bits & VMM_OSVMM != 0 && seen != VMM_OSVMM {
        return None; // `osvmm` must be the only token
    }
    Some(bits)
}

/// Starts the process-wide instance: backing file in `fstem` (a directory;
/// NULL: `$TMPDIR`), SBMA pages of `page_size` bytes, a budget of `max_mem`
/// *system* pages, option bits `opts` (from `SBMA_parse_optstr`). With
/// `n_procs > 1`, processes with the same `uniq` share the budget (see the
/// module doc).
/// Returns 0, or -1 with `errno` set (`EINVAL` bad settings, `EEXIST`
/// already started, `ENOMEM`/`EIO` otherwise) and `sbma_last_error`.
///
/// # Safety
/// `fstem` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn SBMA_init(
    fstem: *const c_char,
    uniq: c_int,
    page_size: usize,
    n_procs: c_int,
    max_mem: usize,
    opts: c_int,
) -> c_int {
    boundary(-1, || {
        let _l = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
        if !GLOBAL.load(Ordering::Acquire).is_null() {
            set_last_error("SBMA_init: already initialized (call SBMA_destroy first)");
            return fail(sbma_result::SBMA_ALREADY_INITIALIZED, libc::EEXIST);
        }
        if opts & VMM_INVLD != 0 || opts & !(VMM_INVLD - 1) != 0 {
            set_last_error("SBMA_init: invalid option bits");
            return fail(sbma_result::SBMA_INVALID_CONFIG, libc::EINVAL);
        }
        let Some(budget) = max_mem.checked_mul(sys_page()) else {
            set_last_error("SBMA_init: max_mem overflows");
            return fail(sbma_result::SBMA_INVALID_CONFIG, libc::EINVAL);
        };
        let mut b = Pager::builder().budget(budget).page_size(page_size);
        if n_procs > 1 {
            b = b.group(format!("uniq-{uniq}"));
        }
        // The original API has no backend argument: SBMA_BACKEND chooses.
        if let Ok(v) = std::env::var("SBMA_BACKEND") {
            match v.parse() {
                Ok(backend) => b = b.backend(backend),
                Err(e) => {
                    set_last_error(&format!("SBMA_init: invalid SBMA_BACKEND `{v}`: {e}"));
                    return fail(sbma_result::SBMA_INVALID_CONFIG, libc::EINVAL);
                }
            }
        }
        if !fstem.is_null() {
            // SAFETY: the caller's contract.
            let Ok(dir) = unsafe { CStr::from_ptr(fstem) }.to_str() else {
                set_last_error("SBMA_init: fstem is not valid UTF-8");
                return fail(sbma_result::SBMA_INVALID_CONFIG, libc::EINVAL);
            };
            if !dir.is_empty() {
                b = b.dir(dir.trim_end_matches('/').to_owned() + "/");
            }
        }
        match SbmaAlloc::builder().pager(b).build() {
            Ok(alloc) => {
                OPTS.store(opts, Ordering::Relaxed);
                GLOBAL.store(Box::into_raw(Box::new(sbma_t { alloc })), Ordering::Release);
                0
            }
            Err(e) => {
                set_last_error(&format!("SBMA_init: {e}"));
                let code: sbma_result = (&e).into();
                let errno = match code {
                    sbma_result::SBMA_INVALID_CONFIG | sbma_result::SBMA_BUDGET_TOO_SMALL => {
                        libc::EINVAL
                    }
                    sbma_result::SBMA_STORE => libc::EACCES,
                    _ => libc::ENOMEM,
                };
                fail(code, errno)
            }
        }
    })
}

/// Drops the process-wide instance: every block of it is gone, memory and
/// backing file are released. Returns 0, or -1 if it was not started.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_destroy() -> c_int {
    boundary(-1, || {
        let _l = LIFECYCLE.lock().unwrap_or_else(|e| e.into_inner());
        let h = GLOBAL.swap(core::ptr::null_mut(), Ordering::AcqRel);
        if h.is_null() {
            set_last_error("SBMA_destroy: not initialized");
            return fail(sbma_result::SBMA_NOT_INITIALIZED, libc::EINVAL);
        }
        // SAFETY: made by SBMA_init with Box::into_raw; no longer published.
        drop(unsafe { Box::from_raw(h) });
        0
    })
}

fn osvmm() -> bool {
    OPTS.load(Ordering::Relaxed) & VMM_OSVMM != 0
}

/// `malloc` from the instance (libc's before `SBMA_init`, or with
/// `osvmm`).
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_malloc(size: usize) -> *mut c_void {
    match global().filter(|_| !osvmm()) {
        Some(a) => a.malloc(size).cast(),
        // SAFETY: plain libc malloc.
        None => unsafe { libc::malloc(size) },
    }
}

/// `calloc` (overflow-checked).
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_calloc(n: usize, size: usize) -> *mut c_void {
    match global().filter(|_| !osvmm()) {
        Some(a) => a.calloc(n, size).cast(),
        // SAFETY: plain libc calloc.
        None => unsafe { libc::calloc(n, size) },
    }
}

/// `realloc`; a block of libc's stays libc's.
///
/// # Safety
/// `p` is NULL or a live block of this API or of libc.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn SBMA_realloc(p: *mut c_void, size: usize) -> *mut c_void {
    match global().filter(|a| !osvmm() && (p.is_null() || a.owns(p.cast()))) {
        // SAFETY: the caller's contract.
        Some(a) => unsafe { a.realloc(p.cast(), size) }.cast(),
        // SAFETY: plain libc realloc of libc's block.
        None => unsafe { libc::realloc(p, size) },
    }
}

/// `free`; returns 0. A block of libc's goes back to libc.
///
/// # Safety
/// `p` is NULL or a live block of this API or of libc.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn SBMA_free(p: *mut c_void) -> c_int {
    match global().filter(|a| a.owns(p.cast())) {
        // SAFETY: the caller's contract.
        Some(a) => unsafe { a.free(p.cast()) },
        // SAFETY: libc's block (or NULL).
        None => unsafe { libc::free(p) },
    }
    0
}

/// System pages per SBMA page.
fn ratio(p: &Pager) -> isize {
    (p.page_size() / sys_page()) as isize
}

/// Runs a paging call on the instance: its result in system pages, or -1.
fn paging(
    f: impl FnOnce(&SbmaAlloc, &Pager) -> Result<isize, sbma_alloc::sbma_pager::Error>,
) -> isize {
    boundary(-1, || {
        let Some(a) = global() else {
            set_last_error("not initialized: call SBMA_init first");
            return fail(sbma_result::SBMA_NOT_INITIALIZED, libc::EINVAL) as isize;
        };
        let Some(p) = a.pager() else {
            return -1;
        };
        match f(a, p) {
            Ok(n) => n,
            Err(e) => {
                set_last_error(&e.to_string());
                let errno = match sbma_result::from(&e) {
                    sbma_result::SBMA_INVALID_RANGE => libc::EINVAL,
                    sbma_result::SBMA_IO => libc::EIO,
                    _ => libc::ENOMEM,
                };
                fail(sbma_result::from(&e), errno) as isize
            }
        }
    })
}

/// Resident system pages now.
fn resident(p: &Pager) -> isize {
    (p.stats().resident / sys_page() as u64) as isize
}

/// Loads `[addr, addr + len)` (readable); returns the system pages newly
/// charged (other threads' activity can blur it), or -1.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mtouch(addr: *const c_void, len: usize) -> isize {
    paging(|_, p| {
        let before = resident(p);
        p.touch(addr.cast(), len, Access::Read)?;
        Ok((resident(p) - before).max(0))
    })
}

/// Loads several ranges together: each stays pinned until all are loaded,
/// so loading one cannot evict another (the original's single admission).
/// Use the `SBMA_mtouch_atomic(a1, l1, a2, l2, ...)` macro of `sbma.h`.
///
/// # Safety
/// `addrs` and `lens` hold `n` entries each.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sbma_mtouch_ranges(
    addrs: *const *const c_void,
    lens: *const usize,
    n: usize,
) -> isize {
    if n > 0 && (addrs.is_null() || lens.is_null()) {
        return fail(sbma_result::SBMA_NULL_PARAMETER, libc::EINVAL) as isize;
    }
    paging(|_, p| {
        let before = resident(p);
        let mut guards = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: `i < n` (the caller's contract).
            let (a, l) = unsafe { (*addrs.add(i), *lens.add(i)) };
            guards.push(p.prepare_for_kernel(a.cast(), l, Access::Read)?);
        }
        let n = resident(p) - before;
        drop(guards);
        Ok(n.max(0))
    })
}

/// Loads every block (as far as the budget allows: later pages evict
/// earlier ones); returns system pages newly charged.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mtouchall() -> isize {
    paging(|a, p| {
        let before = resident(p);
        if let Some((base, len)) = a.used().filter(|u| u.1 > 0) {
            p.touch(base, len, Access::Read)?;
        }
        Ok((resident(p) - before).max(0))
    })
}

/// Discards the pages lying entirely inside `[addr, addr + len)`: they read
/// as zeros next time and are never written back. 0 or -1.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mclear(addr: *const c_void, len: usize) -> c_int {
    paging(|_, p| p.clear(addr.cast(), len).map(|()| 0)) as c_int
}

/// `SBMA_mclear` over every large object. 0 or -1.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mclearall() -> c_int {
    paging(|a, p| {
        for (ptr, len) in a.large_objects() {
            p.clear(ptr, len)?;
        }
        Ok(0)
    }) as c_int
}

/// Writes back and drops the pages covering `[addr, addr + len)`; returns
/// the system pages released, or -1.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mevict(addr: *const c_void, len: usize) -> isize {
    paging(|_, p| Ok(p.evict(addr.cast(), len)? as isize * ratio(p)))
}

/// Writes back and drops every resident page; returns the system pages
/// released, or -1.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mevictall() -> isize {
    paging(|_, p| Ok(p.evict_all()? as isize * ratio(p)))
}

/// 1 if `addr` is in the instance's heap, 0 if not (or before
/// `SBMA_init`).
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mexist(addr: *const c_void) -> c_int {
    global().map_or(0, |a| c_int::from(a.owns(addr.cast())))
}

/// `SBMA_mallopt(M_VMMOPTS, bits)`: replaces the option bits. 0, or -1
/// (`EINVAL`) for another parameter or invalid bits.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mallopt(param: c_int, value: c_int) -> c_int {
    if param != M_VMMOPTS || value & VMM_INVLD != 0 || value < 0 {
        set_last_error("SBMA_mallopt: unknown parameter or invalid option bits");
        return fail(sbma_result::SBMA_INVALID_CONFIG, libc::EINVAL);
    }
    OPTS.store(value, Ordering::Relaxed);
    0
}

/// Marks this process as blocked: in a shared budget, blocked members give
/// memory back to their peers first. Returns 0 (also without a group or an
/// instance, where it changes nothing). Under the preload shim it applies
/// to the shim's heap too.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_sigon() -> c_int {
    set_blocked(true);
    0
}

/// Ends `SBMA_sigon`: the process runs again. Returns 0.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_sigoff() -> c_int {
    set_blocked(false);
    0
}

/// Applies to the `SBMA_init` instance and to the preload shim's heap
/// (a program run by `sbma run --group` declares itself blocked the same
/// way as one that called `SBMA_init`).
fn set_blocked(on: bool) {
    boundary((), || {
        // SAFETY: the global instance lives until SBMA_destroy, which the
        // caller does not run concurrently (the original's contract).
        let global = unsafe { GLOBAL.load(Ordering::Acquire).as_ref() }.map(|i| &i.alloc);
        for a in global.into_iter().chain(crate::io::static_alloc()) {
            if let Some(p) = a.pager() {
                p.set_blocked(on);
            }
        }
    });
}

/// Statistics in the original's `struct mallinfo` fields (system pages):
/// `smblks`/`ordblks` requests from group peers received/honoured (the
/// original's signals; sbma's doorbells),
/// `usmblks`/`fsmblks` pages read/written, `uordblks`/`fordblks` read/write
/// faults, `hblks` resident pages, `hblkhd` resident high-water mark,
/// `keepcost` pages of heap in use, `arena` the budget in pages. Values
/// beyond `INT_MAX` saturate.
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_mallinfo() -> libc::mallinfo {
    let mut m = libc::mallinfo {
        arena: 0,
        ordblks: 0,
        smblks: 0,
        hblks: 0,
        hblkhd: 0,
        usmblks: 0,
        fsmblks: 0,
        uordblks: 0,
        fordblks: 0,
        keepcost: 0,
    };
    let Some(s) = global().and_then(SbmaAlloc::stats) else {
        return m;
    };
    let pg = sys_page() as u64;
    let c = |v: u64| v.min(c_int::MAX as u64) as c_int;
    let p = &s.pager;
    m.arena = c(p.budget / pg);
    m.smblks = c(p.requests_received);
    m.ordblks = c(p.requests_honoured);
    m.usmblks = c(p.bytes_read / pg);
    m.fsmblks = c(p.bytes_written / pg);
    m.uordblks = c(p.read_faults);
    m.fordblks = c(p.write_faults);
    m.hblks = c(p.resident / pg);
    m.hblkhd = c(p.peak_resident / pg);
    m.keepcost = c((s.small_spans * s.span_bytes + s.large_bytes) as u64 / pg);
    m
}

/// Seconds spent in I/O (the original's `struct sbma_timeinfo`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct sbma_timeinfo {
    /// Reading pages in.
    pub tv_rd: f64,
    /// Writing pages back.
    pub tv_wr: f64,
    /// Waiting for group peers to release memory (admission).
    pub tv_ad: f64,
    /// Evicting (the write-back time).
    pub tv_ev: f64,
}

/// Time spent in I/O so far (zeros before `SBMA_init`).
#[unsafe(no_mangle)]
pub extern "C" fn SBMA_timeinfo() -> sbma_timeinfo {
    global()
        .and_then(SbmaAlloc::stats)
        .map_or_else(sbma_timeinfo::default, |s| sbma_timeinfo {
            tv_rd: s.pager.read_ns as f64 / 1e9,
            tv_wr: s.pager.write_ns as f64 / 1e9,
            tv_ad: s.pager.peer_wait_ns as f64 / 1e9,
            tv_ev: s.pager.write_ns as f64 / 1e9,
        })
}

/// The process-wide instance as a modern handle (for `sbma_stats_get`,
/// `sbma_touch`, ...), or NULL before `SBMA_init`.
#[unsafe(no_mangle)]
pub extern "C" fn sbma_global() -> *mut sbma_t {
    GLOBAL.load(Ordering::Acquire)
}
