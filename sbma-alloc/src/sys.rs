//! The allocator's few contacts with the OS: anonymous mappings for its
//! metadata, glibc's allocator as the fallback, `errno`, and the one-line
//! fatal message.
//!
//! # Safety
//! Each function wraps one call; the callers' obligations are in each
//! `# Safety` section.
#![allow(
    unsafe_code,
    reason = "mmap, glibc's allocator and raw write(2) are FFI"
)]

use core::ffi::c_void;
use rustix::mm::{MapFlags, ProtFlags};

/// An anonymous, private, read-write mapping that reserves no swap
/// (`MAP_NORESERVE`): metadata pages cost memory only once written.
/// Unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; every field the allocator keeps in it
// is an atomic or is owned by one thread at a time (see `span` and `heap`).
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// `mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|
    /// MAP_NORESERVE)`: zero-filled.
    pub fn new(len: usize) -> Result<Mapping, rustix::io::Errno> {
        let len = len.max(1);
        // SAFETY: a fresh mapping at an address the kernel picks; nothing
        // else is affected.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// The first byte.
    #[inline]
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; its users are gone (owned by the
        // allocator being dropped).
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

unsafe extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(n: usize, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
}

/// glibc's own allocator, reached by the names it exports for this purpose
/// (`__libc_malloc`, `__libc_calloc`, `__libc_memalign`, `__libc_realloc`,
/// `__libc_free`). It serves what the allocator must not serve from
/// managed memory: allocations made during its own start-up, by the
/// pager's threads, in forked children.
///
/// The functions are looked up with `dlsym(RTLD_NEXT, ...)`, not bound at
/// link time: the preload shim exports the `__libc_*` names itself (a
/// program calling them gets sbma's memory), and a link-time reference
/// from inside the shim would bind to those exports and recurse. Where the
/// lookup finds nothing (a static executable), the link-time reference is
/// glibc's. `dlsym` does not allocate when it succeeds; if it ever did, the
/// nested allocation on the resolving thread is served from a small static
/// area (never freed) instead of recursing.
pub mod fallback {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    /// A resolved glibc function (0: not yet).
    struct Symbol {
        name: &'static core::ffi::CStr,
        addr: AtomicUsize,
    }

    static MALLOC: Symbol = Symbol::new(c"__libc_malloc");
    static CALLOC: Symbol = Symbol::new(c"__libc_calloc");
    static MEMALIGN: Symbol = Symbol::new(c"__libc_memalign");
    static REALLOC: Symbol = Symbol::new(c"__libc_realloc");
    static FREE: Symbol = Symbol::new(c"__libc_free");

    std::thread_local! {
        static RESOLVING: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
    }

    impl Symbol {
        const fn new(name: &'static core::ffi::CStr) -> Symbol {
            Symbol {
                name,
                addr: AtomicUsize::new(0),
            }
        }

        /// The address of glibc's function; `None` while this thread is
        /// inside `dlsym` for one of them; the link-time `fallback`
        /// (glibc's own in any executable without the shim) if `dlsym`
        /// finds none.
        fn get(&self, fallback: usize) -> Option<usize> {
            let f = self.addr.load(Ordering::Acquire);
            if f != 0 {
                return Some(f);
            }
            if RESOLVING.with(|r| r.replace(true)) {
                return None;
            }
            // SAFETY: a NUL-terminated name; RTLD_NEXT from this object
            // finds the definition after it (glibc's).
            let found = unsafe { libc::dlsym(libc::RTLD_NEXT, self.name.as_ptr()) } as usize;
            RESOLVING.with(|r| r.set(false));
            let f = if found != 0 { found } else { fallback };
            self.addr.store(f, Ordering::Release);
            Some(f)
        }
    }

    /// Allocations made by `dlsym` itself while it resolves (never seen
    /// with glibc; kept so a change there cannot recurse): a bump area.
    mod nested {
        use core::sync::atomic::{AtomicUsize, Ordering};

        const SIZE: usize = 64 << 10;
        #[repr(align(64))]
        struct Area(core::cell::UnsafeCell<[u8; SIZE]>);
        // SAFETY: disjoint pieces are handed out by an atomic bump.
        unsafe impl Sync for Area {}
        static AREA: Area = Area(core::cell::UnsafeCell::new([0; SIZE]));
        static USED: AtomicUsize = AtomicUsize::new(0);

        /// `size` bytes aligned to `align` (at most 64), or null.
        pub fn alloc(size: usize, align: usize) -> *mut u8 {
            let align = align.clamp(16, 64);
            let mut cur = USED.load(Ordering::Relaxed);
            loop {
                let start = cur.next_multiple_of(align);
                let Some(end) = start.checked_add(size).filter(|&e| e <= SIZE) else {
                    return core::ptr::null_mut();
                };
                match USED.compare_exchange_weak(cur, end, Ordering::AcqRel, Ordering::Relaxed) {
                    // SAFETY: inside the area.
                    Ok(_) => return unsafe { AREA.0.get().cast::<u8>().add(start) },
                    Err(now) => cur = now,
                }
            }
        }

        /// Whether `p` was handed out here.
        pub fn owns(p: *const u8) -> bool {
            let base = AREA.0.get() as usize;
            (base..base + SIZE).contains(&(p as usize))
        }
    }

    /// `__libc_memalign(align, size)` (or `__libc_malloc` for `align <=
    /// 16`).
    pub fn alloc(size: usize, align: usize) -> *mut u8 {
        type Malloc = unsafe extern "C" fn(usize) -> *mut c_void;
        type Memalign = unsafe extern "C" fn(usize, usize) -> *mut c_void;
        if align <= crate::MIN_ALIGN {
            let Some(f) = MALLOC.get(__libc_malloc as *const () as usize) else {
                return nested::alloc(size, align);
            };
            // SAFETY: glibc's malloc, thread-safe, any size.
            unsafe { core::mem::transmute::<usize, Malloc>(f)(size).cast() }
        } else {
            let Some(f) = MEMALIGN.get(__libc_memalign as *const () as usize) else {
                return nested::alloc(size, align);
            };
            // SAFETY: glibc's memalign, thread-safe, any size.
            unsafe { core::mem::transmute::<usize, Memalign>(f)(align, size).cast() }
        }
    }

    /// `__libc_calloc(n, size)`.
    pub fn calloc(n: usize, size: usize) -> *mut u8 {
        type Calloc = unsafe extern "C" fn(usize, usize) -> *mut c_void;
        let Some(f) = CALLOC.get(__libc_calloc as *const () as usize) else {
            // The static area is zeroed and never reused.
            return n
                .checked_mul(size)
                .map_or(core::ptr::null_mut(), |b| nested::alloc(b, 16));
        };
        // SAFETY: glibc's calloc checks the product and takes any size.
        unsafe { core::mem::transmute::<usize, Calloc>(f)(n, size).cast() }
    }

    /// `__libc_realloc(ptr, size)`: a fallback block stays one.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`] (or glibc's malloc) and is not used again
    /// unless null is returned.
    pub unsafe fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
        type Realloc = unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void;
        if nested::owns(ptr) {
            // Its size is unknown: it came from dlsym's start-up; keep it.
            return core::ptr::null_mut();
        }
        let Some(f) = REALLOC.get(__libc_realloc as *const () as usize) else {
            return core::ptr::null_mut();
        };
        // SAFETY: the caller's contract; glibc's realloc.
        unsafe { core::mem::transmute::<usize, Realloc>(f)(ptr.cast(), size).cast() }
    }

    /// `__libc_free(ptr)`.
    ///
    /// # Safety
    /// `ptr` came from [`alloc`] (or glibc's malloc) and is not used again.
    pub unsafe fn free(ptr: *mut u8) {
        type Free = unsafe extern "C" fn(*mut c_void);
        if nested::owns(ptr) {
            return;
        }
        // While resolving, a free cannot come from dlsym's own (absent)
        // allocations: nothing to do.
        let Some(f) = FREE.get(__libc_free as *const () as usize) else {
            return;
        };
        // SAFETY: the caller's contract; glibc's free.
        unsafe { core::mem::transmute::<usize, Free>(f)(ptr.cast()) }
    }
}

/// Restores the calling thread's `errno` on drop (around syscalls made on
/// behalf of `free`, which must not change it).
pub(crate) struct ErrnoGuard(i32);

impl ErrnoGuard {
    pub fn save() -> ErrnoGuard {
        // SAFETY: `__errno_location` returns the calling thread's errno slot.
        ErrnoGuard(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        set_errno(self.0);
    }
}

/// Sets the calling thread's `errno`.
pub(crate) fn set_errno(e: i32) {
    // SAFETY: `__errno_location` returns the calling thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// Writes `sbma: <what> <addr>` to stderr and aborts, as glibc does for a
/// bad `free` (`free(): invalid pointer`). Allocation-free.
#[cold]
#[inline(never)]
pub(crate) fn fatal(what: &str, addr: usize) -> ! {
    let mut buf = [0u8; 160];
    let mut n = 0;
    let mut put = |bytes: &[u8]| {
        for &b in bytes {
            if n < buf.len() - 1 {
                buf[n] = b;
                n += 1;
            }
        }
    };
    put(b"sbma: ");
    put(what.as_bytes());
    put(b" 0x");
    let mut hex = [0u8; 16];
    for (i, h) in hex.iter_mut().enumerate() {
        *h = b"0123456789abcdef"[(addr >> ((15 - i) * 4)) & 0xf];
    }
    put(&hex);
    put(b"\n");
    // SAFETY: writing our own buffer to fd 2, then aborting.
    unsafe {
        let _ = libc::write(2, buf.as_ptr().cast(), n);
        libc::abort()
    }
}

/// Writes `sbma: <message>` to stderr and aborts (start-up errors of the
/// global allocator, which has no caller to return them to).
#[cold]
pub(crate) fn fatal_message(message: &str) -> ! {
    // SAFETY: writing our own buffers to fd 2, then aborting.
    unsafe {
        let _ = libc::write(2, b"sbma: ".as_ptr().cast(), 6);
        let _ = libc::write(2, message.as_ptr().cast(), message.len());
        let _ = libc::write(2, b"\n".as_ptr().cast(), 1);
        libc::abort()
    }
}
