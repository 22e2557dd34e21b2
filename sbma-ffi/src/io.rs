//! libc I/O on storage-backed memory, wrapped as the original SBMA did:
//! `libsbma` exports `read`, `write`, `fread`, `stat`, ... so a C program
//! linked with it gets correct results when it passes managed memory to
//! them, instead of `EFAULT` (the kernel does not fault pages in for the
//! signal backend: `read(2)` into an evicted buffer would fail, and from a
//! pipe or socket the bytes could be lost).
//!
//! Each wrapper checks whether its buffer lies in a live sbma heap (the
//! process-wide instance and every `sbma_new` instance); if so it pins the
//! buffer resident for the call (`Pager::prepare_for_kernel`: for buffers
//! the kernel writes, old contents are loaded first, so a short read leaves
//! the bytes beyond it intact), in chunks of at most a quarter of the
//! budget (a buffer larger than memory is transferred piecewise, with the
//! semantics of several calls: it may stop short, as `read` may). Other
//! buffers go straight to libc's function, found with `dlsym(RTLD_NEXT)`.
//! The vectored and addressed calls (`readv`, `recvmsg`, `sendto`, ...) pin
//! every managed piece for their one call instead of chunking.
//!
//! Under the uffd backend none of this is needed (the kernel's accesses
//! fault pages in): the wrappers then pass every call straight through.
//!
//! # Safety
//! The wrappers have libc's contracts; they only forward pointers.
#![allow(unsafe_code, reason = "libc's I/O functions, forwarded")]
#![allow(non_snake_case, reason = "libc names")]

use crate::api::sbma_t;
use core::ffi::{CStr, c_char, c_int, c_void};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use sbma_alloc::SbmaAlloc;
use sbma_alloc::sbma_pager::{Access, KernelGuard};

/// Live instances of the modern API (the wrappers look in them).
static INSTANCES: [AtomicPtr<sbma_t>; 64] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 64];

/// Records a new instance (false if 64 are already live: its memory then
/// gets no I/O wrapping).
pub(crate) fn register(h: *mut sbma_t) -> bool {
    INSTANCES.iter().any(|slot| {
        slot.compare_exchange(
            core::ptr::null_mut(),
            h,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
    })
}

/// Forgets an instance before it is destroyed.
pub(crate) fn unregister(h: *mut sbma_t) {
    for slot in &INSTANCES {
        let _ = slot.compare_exchange(
            h,
            core::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// A process-wide allocator that is not an `sbma_t` (the preload shim's).
static STATIC: AtomicPtr<SbmaAlloc> = AtomicPtr::new(core::ptr::null_mut());

/// Makes the wrappers look in `alloc` too (the preload shim's allocator).
pub fn register_static(alloc: &'static SbmaAlloc) {
    STATIC.store(
        alloc as *const SbmaAlloc as *mut SbmaAlloc,
        Ordering::Release,
    );
}

/// The allocator registered by [`register_static`], once started.
pub(crate) fn static_alloc() -> Option<&'static SbmaAlloc> {
    // SAFETY: registered once with a 'static reference.
    unsafe { STATIC.load(Ordering::Acquire).as_ref() }.filter(|a| a.started())
}

/// Calls `f` with the allocator whose heap holds `p`, if any.
fn owner_of<R>(p: *const c_void, f: impl FnOnce(&SbmaAlloc) -> R) -> Option<R> {
    if let Some(a) = static_alloc() {
        if a.owns(p.cast()) {
            return Some(f(a));
        }
    }
    let global = crate::legacy::sbma_global();
    let candidates =
        core::iter::once(global).chain(INSTANCES.iter().map(|s| s.load(Ordering::Acquire)));
    for h in candidates {
        // SAFETY: registered instances are alive until unregistered, and
        // using memory of an instance while destroying it is the caller's
        // error, as with free.
        if let Some(i) = unsafe { h.as_ref() } {
            if i.alloc.owns(p.cast()) {
                return Some(f(&i.alloc));
            }
        }
    }
    None
}

/// The pager of `a` if its memory must be pinned for the kernel
/// ([`Pager::kernel_needs_help`]): under the signal backend, and in a
/// forked child that pages (whatever the backend: userfaultfd does not
/// follow a fork). Not under uffd in the parent, where the kernel's own
/// access faults the page in, and not in a child without a fork snapshot,
/// which cannot load pages (the kernel then sees its memory as it is:
/// resident pages work, others fail with `EFAULT`, as without the
/// wrappers; a copy by the wrapper would abort the child).
///
/// [`Pager::kernel_needs_help`]: sbma_alloc::sbma_pager::Pager::kernel_needs_help
fn needs_pinning(a: &SbmaAlloc) -> Option<&sbma_alloc::sbma_pager::Pager> {
    a.pager().filter(|p| p.kernel_needs_help())
}

/// Whether the kernel cannot reach `p` by itself: it lies in a heap whose
/// pages may be protected (the signal backend).
pub(crate) fn needs_help(p: *const c_void) -> bool {
    !p.is_null() && owner_of(p, |a| needs_pinning(a).is_some()).unwrap_or(false)
}

/// The most bytes one chunk pins: a quarter of the owner's budget.
fn chunk_of(a: &SbmaAlloc) -> usize {
    needs_pinning(a).map_or(usize::MAX, |p| (p.budget() / 4).max(p.page_size()))
}

/// Pins `[p, p + len)` for the kernel if it is managed memory: `Some(None)`
/// when it is not ours, `Some(Some(guard))` when pinned; `None` when
/// pinning failed (errno set to `EFAULT`, as the kernel would have).
pub(crate) fn pin(p: *const c_void, len: usize, access: Access) -> Option<Option<KernelGuard>> {
    if p.is_null() || len == 0 {
        return Some(None);
    }
    match owner_of(p, |a| {
        needs_pinning(a).map(|pg| pg.prepare_for_kernel(p.cast(), len, access))
    }) {
        None | Some(None) => Some(None),
        Some(Some(Ok(g))) => Some(Some(g)),
        Some(Some(Err(_))) => {
            // SAFETY: this thread's errno slot.
            unsafe { *libc::__errno_location() = libc::EFAULT };
            None
        }
    }
}

/// [`pin`]s `[p, p + len)` into `guards`; `false` (errno `EFAULT`) if
/// pinning failed.
pub(crate) fn pin_into(
    guards: &mut Vec<KernelGuard>,
    p: *const c_void,
    len: usize,
    access: Access,
) -> bool {
    match pin(p, len, access) {
        Some(Some(g)) => {
            guards.push(g);
            true
        }
        Some(None) => true,
        None => false,
    }
}

/// The chunk size for a transfer of `len` bytes at `p` (`len` itself when
/// the memory is not ours).
fn chunk(p: *const c_void, len: usize) -> usize {
    owner_of(p, chunk_of).unwrap_or(len).max(1)
}

/// `dlsym(RTLD_NEXT, name)`, looked up once into `cache`: the definition
/// of `name` that comes after the calling library's own (libc's function,
/// for a wrapper of it); 0 if there is none.
pub fn next_symbol(name: &CStr, cache: &AtomicUsize) -> usize {
    let mut f = cache.load(Ordering::Relaxed);
    if f == 0 {
        // SAFETY: a NUL-terminated name; dlsym has no other precondition.
        f = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) } as usize;
        cache.store(f, Ordering::Relaxed);
    }
    f
}

/// libc's own function `$name` of type `$ty` (found once, with
/// [`next_symbol`]); panics if libc has none.
#[macro_export]
macro_rules! libc_fn {
    ($name:literal, $ty:ty) => {{
        static CACHE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
        const NAME: &core::ffi::CStr =
            match core::ffi::CStr::from_bytes_with_nul(concat!($name, "\0").as_bytes()) {
                Ok(n) => n,
                Err(_) => panic!("a symbol name without NUL"),
            };
        let f = $crate::io::next_symbol(NAME, &CACHE);
        assert!(f != 0, concat!("sbma: libc has no ", $name));
        // SAFETY: the symbol is libc's function of this type.
        unsafe { core::mem::transmute::<usize, $ty>(f) }
    }};
}

type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
type WriteFn = unsafe extern "C" fn(c_int, *const c_void, usize) -> isize;
type PreadFn = unsafe extern "C" fn(c_int, *mut c_void, usize, i64) -> isize;
type PwriteFn = unsafe extern "C" fn(c_int, *const c_void, usize, i64) -> isize;
type RecvFn = unsafe extern "C" fn(c_int, *mut c_void, usize, c_int) -> isize;
type SendFn = unsafe extern "C" fn(c_int, *const c_void, usize, c_int) -> isize;
type FreadFn = unsafe extern "C" fn(*mut c_void, usize, usize, *mut libc::FILE) -> usize;
type FwriteFn = unsafe extern "C" fn(*const c_void, usize, usize, *mut libc::FILE) -> usize;
type FgetsFn = unsafe extern "C" fn(*mut c_char, c_int, *mut libc::FILE) -> *mut c_char;
type StatFn = unsafe extern "C" fn(*const c_char, *mut libc::stat) -> c_int;
type FstatFn = unsafe extern "C" fn(c_int, *mut libc::stat) -> c_int;

/// Transfers `len` bytes at `buf` in chunks: `op(ptr, n, done)` moves up to
/// `n` bytes, returning how many (or -1); stops at a short transfer.
fn chunked(
    buf: *const c_void,
    len: usize,
    access: Access,
    mut op: impl FnMut(*const c_void, usize, usize) -> isize,
) -> isize {
    let step = chunk(buf, len);
    let mut done = 0usize;
    while done < len || len == 0 {
        let p = buf.cast::<u8>().wrapping_add(done).cast::<c_void>();
        let n = step.min(len - done);
        let Some(_guard) = pin(p, n, access) else {
            return if done > 0 { done as isize } else { -1 };
        };
        let r = op(p, n, done);
        if r < 0 {
            return if done > 0 { done as isize } else { r };
        }
        done += r as usize;
        if (r as usize) < n || len == 0 {
            break;
        }
    }
    done as isize
}

/// `read(2)` into managed memory works (see the module doc).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, len: usize) -> isize {
    let f = libc_fn!("read", ReadFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Write, |p, n, _| unsafe {
        f(fd, p.cast_mut(), n)
    })
}

/// `write(2)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, len: usize) -> isize {
    let f = libc_fn!("write", WriteFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Read, |p, n, _| unsafe { f(fd, p, n) })
}

/// `pread(2)` into managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread(fd: c_int, buf: *mut c_void, len: usize, off: i64) -> isize {
    let f = libc_fn!("pread", PreadFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Write, |p, n, done| unsafe {
        f(fd, p.cast_mut(), n, off + done as i64)
    })
}

/// `pread64` (the same on 64-bit Linux).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pread64(fd: c_int, buf: *mut c_void, len: usize, off: i64) -> isize {
    // SAFETY: the same function.
    unsafe { pread(fd, buf, len, off) }
}

/// `pwrite(2)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwrite(fd: c_int, buf: *const c_void, len: usize, off: i64) -> isize {
    let f = libc_fn!("pwrite", PwriteFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Read, |p, n, done| unsafe {
        f(fd, p, n, off + done as i64)
    })
}

/// `pwrite64` (the same on 64-bit Linux).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwrite64(fd: c_int, buf: *const c_void, len: usize, off: i64) -> isize {
    // SAFETY: the same function.
    unsafe { pwrite(fd, buf, len, off) }
}

/// `recv(2)` into managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, len: usize, flags: c_int) -> isize {
    let f = libc_fn!("recv", RecvFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Write, |p, n, _| unsafe {
        f(fd, p.cast_mut(), n, flags)
    })
}

/// `send(2)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, len: usize, flags: c_int) -> isize {
    let f = libc_fn!("send", SendFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Read, |p, n, _| unsafe {
        f(fd, p, n, flags)
    })
}

/// `fread(3)` into managed memory works (whole elements per chunk).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fread(
    buf: *mut c_void,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    fread_with(libc_fn!("fread", FreadFn), buf, size, n, file)
}

/// `fread`-like `f` in chunks of whole elements, each pinned.
fn fread_with(f: FreadFn, buf: *mut c_void, size: usize, n: usize, file: *mut libc::FILE) -> usize {
    // SAFETY: forwarded within the caller's buffer (libc's contract).
    stdio_chunked(buf, size, n, Access::Write, |p, k| unsafe {
        f(p.cast_mut(), size, k, file)
    })
}

/// `fwrite(3)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fwrite(
    buf: *const c_void,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    fwrite_with(libc_fn!("fwrite", FwriteFn), buf, size, n, file)
}

/// `fwrite`-like `f` in chunks of whole elements, each pinned.
fn fwrite_with(
    f: FwriteFn,
    buf: *const c_void,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    // SAFETY: forwarded within the caller's buffer (libc's contract).
    stdio_chunked(buf, size, n, Access::Read, |p, k| unsafe {
        f(p, size, k, file)
    })
}

/// `fread`/`fwrite` in chunks of whole elements.
fn stdio_chunked(
    buf: *const c_void,
    size: usize,
    n: usize,
    access: Access,
    mut op: impl FnMut(*const c_void, usize) -> usize,
) -> usize {
    let Some(total) = size.checked_mul(n).filter(|&t| t > 0) else {
        return op(buf, n);
    };
    let per = (chunk(buf, total) / size).max(1);
    let mut done = 0;
    while done < n {
        let k = per.min(n - done);
        let p = buf.cast::<u8>().wrapping_add(done * size).cast::<c_void>();
        let Some(_guard) = pin(p, k * size, access) else {
            return done;
        };
        let r = op(p, k);
        done += r;
        if r < k {
            break;
        }
    }
    done
}

/// `fgets(3)` into managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fgets(buf: *mut c_char, n: c_int, file: *mut libc::FILE) -> *mut c_char {
    fgets_with(libc_fn!("fgets", FgetsFn), buf, n, file)
}

/// `fgets`-like `f` with the buffer pinned.
fn fgets_with(f: FgetsFn, buf: *mut c_char, n: c_int, file: *mut libc::FILE) -> *mut c_char {
    let Some(_guard) = pin(buf.cast(), n.max(0) as usize, Access::Write) else {
        return core::ptr::null_mut();
    };
    // SAFETY: forwarded (libc's contract).
    unsafe { f(buf, n, file) }
}

/// Pins a path string (in managed memory or not) for the kernel.
fn pin_path(path: *const c_char) -> Option<Option<KernelGuard>> {
    if path.is_null() {
        return Some(None);
    }
    // SAFETY: a NUL-terminated string (libc's contract); reading it from
    // user space faults it in as needed.
    let len = unsafe { libc::strlen(path) } + 1;
    pin(path.cast(), len, Access::Read)
}

/// Calls a `stat`-like function with its path and result pinned.
fn stat_with(f: StatFn, path: *const c_char, st: *mut libc::stat) -> c_int {
    let (Some(_p), Some(_s)) = (
        pin_path(path),
        pin(st.cast(), size_of::<libc::stat>(), Access::Write),
    ) else {
        return -1;
    };
    // SAFETY: forwarded (the caller's libc contract).
    unsafe { f(path, st) }
}

/// `stat(2)` with the path or the result in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stat(path: *const c_char, st: *mut libc::stat) -> c_int {
    stat_with(libc_fn!("stat", StatFn), path, st)
}

/// `lstat(2)`, as `stat`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lstat(path: *const c_char, st: *mut libc::stat) -> c_int {
    stat_with(libc_fn!("lstat", StatFn), path, st)
}

/// `fstat(2)` with the result in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstat(fd: c_int, st: *mut libc::stat) -> c_int {
    fstat_with(libc_fn!("fstat", FstatFn), fd, st)
}

/// `fstat`-like `f` with the result pinned.
fn fstat_with(f: FstatFn, fd: c_int, st: *mut libc::stat) -> c_int {
    let Some(_s) = pin(st.cast(), size_of::<libc::stat>(), Access::Write) else {
        return -1;
    };
    // SAFETY: forwarded (libc's contract).
    unsafe { f(fd, st) }
}

// ---------------------------------------------------------------------
// Variants real programs call: unlocked stdio, glibc's fortified `_chk`
// entry points (`-D_FORTIFY_SOURCE` builds call these instead of `read`),
// the `64` names, and calls that write into a caller's buffer.
// ---------------------------------------------------------------------

/// `fread_unlocked(3)` (coreutils' `sort` reads with it).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fread_unlocked(
    buf: *mut c_void,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    fread_with(libc_fn!("fread_unlocked", FreadFn), buf, size, n, file)
}

/// `fwrite_unlocked(3)`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fwrite_unlocked(
    buf: *const c_void,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    fwrite_with(libc_fn!("fwrite_unlocked", FwriteFn), buf, size, n, file)
}

type ReadChkFn = unsafe extern "C" fn(c_int, *mut c_void, usize, usize) -> isize;
type PreadChkFn = unsafe extern "C" fn(c_int, *mut c_void, usize, i64, usize) -> isize;
type FreadChkFn = unsafe extern "C" fn(*mut c_void, usize, usize, usize, *mut libc::FILE) -> usize;
type RecvChkFn = unsafe extern "C" fn(c_int, *mut c_void, usize, usize, c_int) -> isize;
type FgetsChkFn = unsafe extern "C" fn(*mut c_char, usize, c_int, *mut libc::FILE) -> *mut c_char;
type ReadlinkFn = unsafe extern "C" fn(*const c_char, *mut c_char, usize) -> isize;
type GetcwdFn = unsafe extern "C" fn(*mut c_char, usize) -> *mut c_char;

/// `__read_chk` (fortified `read`).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    buflen: usize,
) -> isize {
    let f = libc_fn!("__read_chk", ReadChkFn);
    // SAFETY: forwarded within the caller's buffer; libc still checks it.
    chunked(buf, len, Access::Write, |p, n, done| unsafe {
        f(fd, p.cast_mut(), n, buflen.saturating_sub(done))
    })
}

/// `__pread64_chk` (fortified `pread`).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __pread64_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    off: i64,
    buflen: usize,
) -> isize {
    let f = libc_fn!("__pread64_chk", PreadChkFn);
    // SAFETY: as above.
    chunked(buf, len, Access::Write, |p, n, done| unsafe {
        f(
            fd,
            p.cast_mut(),
            n,
            off + done as i64,
            buflen.saturating_sub(done),
        )
    })
}

/// `__pread_chk`, as `__pread64_chk`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __pread_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    off: i64,
    buflen: usize,
) -> isize {
    // SAFETY: the same function on 64-bit Linux.
    unsafe { __pread64_chk(fd, buf, len, off, buflen) }
}

/// `__recv_chk` (fortified `recv`).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    buflen: usize,
    flags: c_int,
) -> isize {
    let f = libc_fn!("__recv_chk", RecvChkFn);
    // SAFETY: as above.
    chunked(buf, len, Access::Write, |p, n, done| unsafe {
        f(fd, p.cast_mut(), n, buflen.saturating_sub(done), flags)
    })
}

/// `__fread_chk` (fortified `fread`).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fread_chk(
    buf: *mut c_void,
    buflen: usize,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    fread_chk_with(
        libc_fn!("__fread_chk", FreadChkFn),
        buf,
        buflen,
        size,
        n,
        file,
    )
}

/// A fortified `fread`-like `f` in pinned chunks (the remaining buffer
/// length passed on, so libc still checks it).
fn fread_chk_with(
    f: FreadChkFn,
    buf: *mut c_void,
    buflen: usize,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    stdio_chunked(buf, size, n, Access::Write, |p, k| {
        let done = p as usize - buf as usize;
        // SAFETY: forwarded within the caller's buffer (libc's contract).
        unsafe { f(p.cast_mut(), buflen.saturating_sub(done), size, k, file) }
    })
}

/// `__fread_unlocked_chk`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fread_unlocked_chk(
    buf: *mut c_void,
    buflen: usize,
    size: usize,
    n: usize,
    file: *mut libc::FILE,
) -> usize {
    fread_chk_with(
        libc_fn!("__fread_unlocked_chk", FreadChkFn),
        buf,
        buflen,
        size,
        n,
        file,
    )
}

/// `__fgets_chk` (fortified `fgets`).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __fgets_chk(
    buf: *mut c_char,
    buflen: usize,
    n: c_int,
    file: *mut libc::FILE,
) -> *mut c_char {
    let f = libc_fn!("__fgets_chk", FgetsChkFn);
    let Some(_guard) = pin(buf.cast(), n.max(0) as usize, Access::Write) else {
        return core::ptr::null_mut();
    };
    // SAFETY: forwarded.
    unsafe { f(buf, buflen, n, file) }
}

/// `fgets_unlocked(3)`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fgets_unlocked(
    buf: *mut c_char,
    n: c_int,
    file: *mut libc::FILE,
) -> *mut c_char {
    fgets_with(libc_fn!("fgets_unlocked", FgetsFn), buf, n, file)
}

/// `stat64` (the same as `stat` on 64-bit Linux).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn stat64(path: *const c_char, st: *mut libc::stat) -> c_int {
    stat_with(libc_fn!("stat64", StatFn), path, st)
}

/// `lstat64`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lstat64(path: *const c_char, st: *mut libc::stat) -> c_int {
    stat_with(libc_fn!("lstat64", StatFn), path, st)
}

/// `fstat64`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn fstat64(fd: c_int, st: *mut libc::stat) -> c_int {
    fstat_with(libc_fn!("fstat64", FstatFn), fd, st)
}

/// `readlink(2)` with the path or the buffer in managed memory.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlink(path: *const c_char, buf: *mut c_char, len: usize) -> isize {
    let f = libc_fn!("readlink", ReadlinkFn);
    let (Some(_p), Some(_b)) = (pin_path(path), pin(buf.cast(), len, Access::Write)) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(path, buf, len) }
}

/// `getcwd(3)` into a buffer in managed memory.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getcwd(buf: *mut c_char, len: usize) -> *mut c_char {
    let f = libc_fn!("getcwd", GetcwdFn);
    let Some(_b) = pin(buf.cast(), len, Access::Write) else {
        return core::ptr::null_mut();
    };
    // SAFETY: forwarded.
    unsafe { f(buf, len) }
}

type StatxFn =
    unsafe extern "C" fn(c_int, *const c_char, c_int, libc::c_uint, *mut libc::statx) -> c_int;
type GetdentsFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
type GetrandomFn = unsafe extern "C" fn(*mut c_void, usize, libc::c_uint) -> isize;

/// `statx(2)` with the path or the result in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn statx(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mask: libc::c_uint,
    st: *mut libc::statx,
) -> c_int {
    let f = libc_fn!("statx", StatxFn);
    let (Some(_p), Some(_s)) = (
        pin_path(path),
        pin(st.cast(), size_of::<libc::statx>(), Access::Write),
    ) else {
        return -1;
    };
    // SAFETY: forwarded (pinned where managed).
    unsafe { f(dirfd, path, flags, mask, st) }
}

/// `getdents64(2)` into managed memory works (in chunks, each a complete
/// set of records, as consecutive calls would return them).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getdents64(fd: c_int, buf: *mut c_void, len: usize) -> isize {
    let f = libc_fn!("getdents64", GetdentsFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Write, |p, n, _| unsafe {
        f(fd, p.cast_mut(), n)
    })
}

/// `getrandom(2)` into managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn getrandom(buf: *mut c_void, len: usize, flags: libc::c_uint) -> isize {
    let f = libc_fn!("getrandom", GetrandomFn);
    // SAFETY: forwarded within the caller's buffer.
    chunked(buf, len, Access::Write, |p, n, _| unsafe {
        f(p.cast_mut(), n, flags)
    })
}

// ---------------------------------------------------------------------
// Vectored and addressed I/O: every managed piece is pinned for the one
// call (not chunked: the pieces together must fit in the budget, or the
// call fails with EFAULT as the kernel's would have).
// ---------------------------------------------------------------------

/// Pins for the kernel every managed byte a call will touch: the pieces of
/// `iov` (with `access`), the vector itself (read by the kernel), and the
/// `extra` ranges (pointer, length, access). `None` when pinning failed
/// (errno is `EFAULT`).
fn pin_all(
    iov: *const libc::iovec,
    n: c_int,
    access: Access,
    extra: &[(*const c_void, usize, Access)],
) -> Option<Vec<KernelGuard>> {
    let mut guards = Vec::new();
    let count = usize::try_from(n).unwrap_or(0);
    let mut add = |p: *const c_void, len: usize, a: Access| pin_into(&mut guards, p, len, a);
    if !iov.is_null() && count > 0 {
        if !add(iov.cast(), count * size_of::<libc::iovec>(), Access::Read) {
            return None;
        }
        for i in 0..count {
            // SAFETY: the caller passes `n` valid iovecs (libc's contract);
            // the vector is resident now.
            let v = unsafe { iov.add(i).read() };
            if !add(v.iov_base, v.iov_len, access) {
                return None;
            }
        }
    }
    for &(p, len, a) in extra {
        if !add(p, len, a) {
            return None;
        }
    }
    Some(guards)
}

type ReadvFn = unsafe extern "C" fn(c_int, *const libc::iovec, c_int) -> isize;
type PreadvFn = unsafe extern "C" fn(c_int, *const libc::iovec, c_int, i64) -> isize;
type MsgFn = unsafe extern "C" fn(c_int, *mut libc::msghdr, c_int) -> isize;
type RecvfromFn = unsafe extern "C" fn(
    c_int,
    *mut c_void,
    usize,
    c_int,
    *mut libc::sockaddr,
    *mut libc::socklen_t,
) -> isize;
type SendtoFn = unsafe extern "C" fn(
    c_int,
    *const c_void,
    usize,
    c_int,
    *const libc::sockaddr,
    libc::socklen_t,
) -> isize;

/// `readv(2)` into managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readv(fd: c_int, iov: *const libc::iovec, n: c_int) -> isize {
    let f = libc_fn!("readv", ReadvFn);
    let Some(_g) = pin_all(iov, n, Access::Write, &[]) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(fd, iov, n) }
}

/// `writev(2)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const libc::iovec, n: c_int) -> isize {
    let f = libc_fn!("writev", ReadvFn);
    let Some(_g) = pin_all(iov, n, Access::Read, &[]) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(fd, iov, n) }
}

/// Shared body of `preadv`/`pwritev` and their 64-bit names.
///
/// # Safety
/// libc's contract for `f`.
unsafe fn positioned_v(
    f: PreadvFn,
    fd: c_int,
    iov: *const libc::iovec,
    n: c_int,
    off: i64,
    access: Access,
) -> isize {
    let Some(_g) = pin_all(iov, n, access, &[]) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(fd, iov, n, off) }
}

/// `preadv(2)` into managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv(fd: c_int, iov: *const libc::iovec, n: c_int, off: i64) -> isize {
    let f = libc_fn!("preadv", PreadvFn);
    // SAFETY: forwarded.
    unsafe { positioned_v(f, fd, iov, n, off, Access::Write) }
}

/// `preadv64` (the same on 64-bit Linux).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn preadv64(fd: c_int, iov: *const libc::iovec, n: c_int, off: i64) -> isize {
    let f = libc_fn!("preadv64", PreadvFn);
    // SAFETY: forwarded.
    unsafe { positioned_v(f, fd, iov, n, off, Access::Write) }
}

/// `pwritev(2)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwritev(fd: c_int, iov: *const libc::iovec, n: c_int, off: i64) -> isize {
    let f = libc_fn!("pwritev", PreadvFn);
    // SAFETY: forwarded.
    unsafe { positioned_v(f, fd, iov, n, off, Access::Read) }
}

/// `pwritev64` (the same on 64-bit Linux).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn pwritev64(
    fd: c_int,
    iov: *const libc::iovec,
    n: c_int,
    off: i64,
) -> isize {
    let f = libc_fn!("pwritev64", PreadvFn);
    // SAFETY: forwarded.
    unsafe { positioned_v(f, fd, iov, n, off, Access::Read) }
}

/// The managed memory of a `msghdr` call: the header itself (the kernel
/// writes `msg_flags` and `msg_controllen` on receive), its address and
/// control buffers, and the pieces (with `access`).
fn pin_msg(msg: *mut libc::msghdr, access: Access) -> Option<Vec<KernelGuard>> {
    if msg.is_null() {
        return Some(Vec::new());
    }
    let header = pin(msg.cast(), size_of::<libc::msghdr>(), Access::Write)?;
    // SAFETY: a valid msghdr (libc's contract), resident now.
    let m = unsafe { msg.read() };
    let mut guards = pin_all(
        m.msg_iov,
        m.msg_iovlen as c_int,
        access,
        &[
            (m.msg_name, m.msg_namelen as usize, access),
            (m.msg_control, m.msg_controllen, access),
        ],
    )?;
    guards.extend(header);
    Some(guards)
}

/// `recvmsg(2)` into managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvmsg(fd: c_int, msg: *mut libc::msghdr, flags: c_int) -> isize {
    let f = libc_fn!("recvmsg", MsgFn);
    let Some(_g) = pin_msg(msg, Access::Write) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(fd, msg, flags) }
}

/// `sendmsg(2)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendmsg(fd: c_int, msg: *const libc::msghdr, flags: c_int) -> isize {
    let f = libc_fn!("sendmsg", MsgFn);
    let Some(_g) = pin_msg(msg.cast_mut(), Access::Read) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(fd, msg.cast_mut(), flags) }
}

/// `recvfrom(2)` into managed memory works (the address too).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    len: usize,
    flags: c_int,
    addr: *mut libc::sockaddr,
    alen: *mut libc::socklen_t,
) -> isize {
    let f = libc_fn!("recvfrom", RecvfromFn);
    // A valid length slot if non-null (libc's contract).
    let addr_len = if alen.is_null() {
        0
    } else {
        // SAFETY: as above.
        (unsafe { alen.read() }) as usize
    };
    let extra = [
        (buf.cast_const(), len, Access::Write),
        (addr.cast_const().cast(), addr_len, Access::Write),
        (
            alen.cast_const().cast(),
            size_of::<libc::socklen_t>(),
            Access::Write,
        ),
    ];
    let Some(_g) = pin_all(core::ptr::null(), 0, Access::Write, &extra) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(fd, buf, len, flags, addr, alen) }
}

/// `sendto(2)` from managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    len: usize,
    flags: c_int,
    addr: *const libc::sockaddr,
    alen: libc::socklen_t,
) -> isize {
    let f = libc_fn!("sendto", SendtoFn);
    let extra = [
        (buf, len, Access::Read),
        (addr.cast(), alen as usize, Access::Read),
    ];
    let Some(_g) = pin_all(core::ptr::null(), 0, Access::Read, &extra) else {
        return -1;
    };
    // SAFETY: forwarded.
    unsafe { f(fd, buf, len, flags, addr, alen) }
}
