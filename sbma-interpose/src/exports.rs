//! The exported symbols: one line each into the allocator.
//!
//! # Safety
//! Each export has the C function's contract; they only forward.
#![allow(unsafe_code, reason = "the C allocation ABI")]

use core::ffi::{c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};
use sbma_alloc::{SbmaAlloc, SbmaAllocBuilder, fallback};

/// Requests below this many bytes go to glibc (`SBMA_MIN_SIZE`, default 0).
static MIN_SIZE: AtomicUsize = AtomicUsize::new(0);

fn config() -> Result<SbmaAllocBuilder, sbma_alloc::Error> {
    if let Some(v) = std::env::var_os("SBMA_MIN_SIZE") {
        let text = v.to_string_lossy().into_owned();
        let n = sbma_alloc::sbma_pager::sbma_core::units::parse_size(&text).map_err(|e| {
            sbma_alloc::Error::Config {
                name: "SBMA_MIN_SIZE",
                value: text.clone(),
                reason: e.to_string(),
            }
        })?;
        MIN_SIZE.store(n, Ordering::Relaxed);
    }
    let stats = std::env::var("SBMA_STATS").unwrap_or_default();
    match stats.as_str() {
        "" | "0" => {}
        "1" | "json" => {
            STATS_JSON.store(stats == "json", Ordering::Relaxed);
            // A private copy of stderr: programs may close theirs at exit
            // (coreutils does) before this hook runs.
            // SAFETY: duplicating fd 2 (close-on-exec: children get their own).
            let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
            STATS_FD.store(if fd >= 0 { fd } else { 2 }, Ordering::Relaxed);
            // SAFETY: registering an exit hook that only formats and writes.
            unsafe { libc::atexit(print_stats) };
        }
        _ => {
            return Err(sbma_alloc::Error::Config {
                name: "SBMA_STATS",
                value: stats,
                reason: "expected 0, 1 or json".into(),
            });
        }
    }
    sbma::io::register_static(&ALLOC);
    crate::caller::init();
    SbmaAllocBuilder::from_env()
}

static STATS_JSON: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
static STATS_FD: core::sync::atomic::AtomicI32 = core::sync::atomic::AtomicI32::new(2);

extern "C" fn print_stats() {
    let Some(s) = ALLOC.stats() else { return };
    let p = &s.pager;
    let line = if STATS_JSON.load(Ordering::Relaxed) {
        format!(
            "{{\"backend\":\"{}\",\"read_faults\":{},\"write_faults\":{},\"bytes_read\":{},\"bytes_written\":{},\"pages_evicted\":{},\"peak_resident\":{},\"budget\":{},\"read_ns\":{},\"write_ns\":{},\"small_bytes\":{},\"large_bytes\":{}}}\n",
            p.backend,
            p.read_faults,
            p.write_faults,
            p.bytes_read,
            p.bytes_written,
            p.pages_evicted,
            p.peak_resident,
            p.budget,
            p.read_ns,
            p.write_ns,
            s.small_bytes,
            s.large_bytes
        )
    } else {
        format!(
            "sbma ({}): {} read faults, {} write faults, {:.1} MiB in, {:.1} MiB out, {} pages evicted, peak resident {:.1} of {:.1} MiB, {:.3} s reading, {:.3} s writing\n",
            p.backend,
            p.read_faults,
            p.write_faults,
            p.bytes_read as f64 / 1048576.0,
            p.bytes_written as f64 / 1048576.0,
            p.pages_evicted,
            p.peak_resident as f64 / 1048576.0,
            p.budget as f64 / 1048576.0,
            p.read_ns as f64 / 1e9,
            p.write_ns as f64 / 1e9
        )
    };
    let line = match p.backend_note {
        Some(note) if !STATS_JSON.load(Ordering::Relaxed) => {
            format!("{line}sbma: signal backend because {note}\n")
        }
        _ => line,
    };
    // At exit this process has usually left its group already (its exit
    // handler ran first): count the others, and report the group's peak
    // (the first line's) rather than charges that are gone.
    let me = std::process::id() as i32;
    let group = ALLOC.pager().and_then(|pg| {
        pg.group().map(|g| {
            let others = g.members().iter().filter(|m| m.pid != me).count();
            (g.name().to_owned(), others)
        })
    });
    let line = match group {
        None => line,
        Some((name, others)) if STATS_JSON.load(Ordering::Relaxed) => format!(
            "{}\n{{\"group\":\"{name}\",\"others_at_exit\":{others},\"peer_requests\":{},\"pages_given_to_peers\":{}}}\n",
            line.trim_end(),
            p.peer_requests,
            p.pages_given_to_peers
        ),
        Some((name, others)) => format!(
            "{line}sbma: group {name}: peak above is the group's; {others} other members still in it at exit; {} requests to peers, {} pages given to peers\n",
            p.peer_requests, p.pages_given_to_peers
        ),
    };
    // SAFETY: writing our own buffer to (our copy of) stderr.
    let _ = unsafe {
        libc::write(
            STATS_FD.load(Ordering::Relaxed),
            line.as_ptr().cast(),
            line.len(),
        )
    };
}

/// The shim's allocator.
static ALLOC: SbmaAlloc = SbmaAlloc::with_config(config);

#[inline]
fn small(size: usize) -> bool {
    size < MIN_SIZE.load(Ordering::Relaxed)
}

/// Exports `$name` as a naked trampoline (x86-64) that appends its return
/// address to the arguments (in register `$reg`, the next free argument
/// register) and jumps to `$imp`.
macro_rules! with_caller {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty => $imp:ident, $reg:literal) => {
        $(#[$doc])*
        #[cfg(target_arch = "x86_64")]
        #[unsafe(naked)]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) -> $ret {
            core::arch::naked_asm!(
                concat!("mov ", $reg, ", [rsp]"),
                "jmp {imp}",
                imp = sym $imp,
            )
        }

        $(#[$doc])*
        #[cfg(not(target_arch = "x86_64"))]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($($arg: $ty),*) -> $ret {
            $imp($($arg,)* 0)
        }
    };
}

with_caller! {
    /// `malloc(3)`.
    fn malloc(size: usize) -> *mut c_void => malloc_from, "rsi"
}

extern "C" fn malloc_from(size: usize, caller: usize) -> *mut c_void {
    if small(size) || crate::caller::system(caller) {
        return fallback::alloc(size, sbma_alloc::MIN_ALIGN).cast();
    }
    ALLOC.malloc(size).cast()
}

/// `free(3)`: NULL ignored, glibc's blocks go back to glibc.
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    // SAFETY: C's contract.
    unsafe { ALLOC.free(p.cast()) }
}

/// `cfree` (old name of `free`).
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn cfree(p: *mut c_void) {
    // SAFETY: C's contract.
    unsafe { ALLOC.free(p.cast()) }
}

/// C23 `free_sized`.
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_sized(p: *mut c_void, _size: usize) {
    // SAFETY: C's contract.
    unsafe { ALLOC.free(p.cast()) }
}

/// C23 `free_aligned_sized`.
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn free_aligned_sized(p: *mut c_void, _align: usize, _size: usize) {
    // SAFETY: C's contract.
    unsafe { ALLOC.free(p.cast()) }
}

with_caller! {
    /// `calloc(3)`.
    fn calloc(n: usize, size: usize) -> *mut c_void => calloc_from, "rdx"
}

extern "C" fn calloc_from(n: usize, size: usize, caller: usize) -> *mut c_void {
    if small(n.saturating_mul(size)) || crate::caller::system(caller) {
        return fallback::calloc(n, size).cast();
    }
    ALLOC.calloc(n, size).cast()
}

with_caller! {
    /// `realloc(3)`: a block keeps its allocator (sbma's or glibc's).
    fn realloc(p: *mut c_void, size: usize) -> *mut c_void => realloc_from, "rdx"
}

extern "C" fn realloc_from(p: *mut c_void, size: usize, caller: usize) -> *mut c_void {
    if p.is_null() {
        return malloc_from(size, caller);
    }
    // SAFETY: C's contract (a live block of ours or of glibc's).
    unsafe { ALLOC.realloc(p.cast(), size) }.cast()
}

/// `reallocarray(3)`.
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn reallocarray(p: *mut c_void, n: usize, size: usize) -> *mut c_void {
    // SAFETY: C's contract.
    unsafe { ALLOC.reallocarray(p.cast(), n, size) }.cast()
}

/// `posix_memalign(3)`.
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    // SAFETY: C's contract.
    unsafe { ALLOC.posix_memalign(out, align, size) }
}

with_caller! {
    /// `aligned_alloc(3)`.
    fn aligned_alloc(align: usize, size: usize) -> *mut c_void => aligned_alloc_from, "rdx"
}

extern "C" fn aligned_alloc_from(align: usize, size: usize, caller: usize) -> *mut c_void {
    if crate::caller::system(caller) && align.is_power_of_two() {
        return fallback::alloc(size, align).cast();
    }
    ALLOC.aligned_alloc(align, size).cast()
}

with_caller! {
    /// `memalign(3)`.
    fn memalign(align: usize, size: usize) -> *mut c_void => memalign_from, "rdx"
}

extern "C" fn memalign_from(align: usize, size: usize, caller: usize) -> *mut c_void {
    if crate::caller::system(caller) {
        return fallback::alloc(size, align).cast();
    }
    ALLOC.memalign(align, size).cast()
}

// glibc's own names for its allocator (`__libc_malloc`, ...): a program
// or library that calls them gets sbma's memory like through `malloc`.
// sbma's glibc fallback does not bind to these (it looks glibc's up with
// dlsym(RTLD_NEXT), sbma-alloc's sys.rs).
with_caller! {
    /// `__libc_malloc` (glibc's name for `malloc`).
    fn __libc_malloc(size: usize) -> *mut c_void => malloc_from, "rsi"
}

with_caller! {
    /// `__libc_calloc`.
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void => calloc_from, "rdx"
}

with_caller! {
    /// `__libc_realloc`.
    fn __libc_realloc(p: *mut c_void, size: usize) -> *mut c_void => realloc_from, "rdx"
}

with_caller! {
    /// `__libc_memalign`.
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void => memalign_from, "rdx"
}

/// `__libc_free`.
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __libc_free(p: *mut c_void) {
    // SAFETY: C's contract.
    unsafe { ALLOC.free(p.cast()) }
}

/// `__libc_valloc`.
#[unsafe(no_mangle)]
pub extern "C" fn __libc_valloc(size: usize) -> *mut c_void {
    ALLOC.valloc(size).cast()
}

/// `__libc_pvalloc`.
#[unsafe(no_mangle)]
pub extern "C" fn __libc_pvalloc(size: usize) -> *mut c_void {
    ALLOC.pvalloc(size).cast()
}

/// `valloc(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn valloc(size: usize) -> *mut c_void {
    ALLOC.valloc(size).cast()
}

/// `pvalloc(3)`.
#[unsafe(no_mangle)]
pub extern "C" fn pvalloc(size: usize) -> *mut c_void {
    ALLOC.pvalloc(size).cast()
}

/// `malloc_usable_size(3)`: every reported byte may be written.
///
/// # Safety
/// C's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    // SAFETY: C's contract.
    if let Some(n) = unsafe { ALLOC.usable_size(p.cast()) } {
        return n;
    }
    // glibc's block: ask glibc's own function.
    type Usable = unsafe extern "C" fn(*mut c_void) -> usize;
    static REAL: AtomicUsize = AtomicUsize::new(0);
    let f = sbma::io::next_symbol(c"malloc_usable_size", &REAL);
    if f == 0 {
        return 0;
    }
    // SAFETY: glibc's malloc_usable_size.
    unsafe { core::mem::transmute::<usize, Usable>(f)(p) }
}

/// `mallopt(3)`: accepted and ignored (returns 1, success).
#[unsafe(no_mangle)]
pub extern "C" fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// `malloc_trim(3)`: freed memory beyond the decay cap is already
/// released; returns 0 (nothing more released).
#[unsafe(no_mangle)]
pub extern "C" fn malloc_trim(_pad: usize) -> c_int {
    0
}

/// `mallinfo2(3)`: `arena` = bytes of spans in use, `uordblks` = bytes in
/// live blocks, `hblkhd` = bytes in large objects, `keepcost` = resident
/// bytes.
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo2() -> libc::mallinfo2 {
    let mut m = libc::mallinfo2 {
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
    if let Some(s) = ALLOC.stats() {
        m.arena = s.small_spans * s.span_bytes + s.large_bytes;
        m.uordblks = s.small_bytes as usize + s.large_bytes;
        m.fordblks = m.arena.saturating_sub(m.uordblks);
        m.hblks = s.large_objects;
        m.hblkhd = s.large_bytes;
        m.keepcost = s.pager.resident as usize;
    }
    m
}

/// `mallinfo(3)`: `mallinfo2` in `int`s (saturating).
#[unsafe(no_mangle)]
pub extern "C" fn mallinfo() -> libc::mallinfo {
    let m = mallinfo2();
    let c = |v: usize| v.min(c_int::MAX as usize) as c_int;
    libc::mallinfo {
        arena: c(m.arena),
        ordblks: c(m.ordblks),
        smblks: c(m.smblks),
        hblks: c(m.hblks),
        hblkhd: c(m.hblkhd),
        usmblks: c(m.usmblks),
        fsmblks: c(m.fsmblks),
        uordblks: c(m.uordblks),
        fordblks: c(m.fordblks),
        keepcost: c(m.keepcost),
    }
}

/// `malloc_stats(3)`: sbma's statistics on stderr.
#[unsafe(no_mangle)]
pub extern "C" fn malloc_stats() {
    print_stats();
}
