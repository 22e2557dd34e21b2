//! Calls that take a path (or several), with the path in managed memory:
//! `open`, `openat`, `creat`, `access`, `faccessat`, `unlink`, `unlinkat`,
//! `mkdir`, `mkdirat`, `rmdir`, `rename`, `renameat`, `renameat2`, `link`,
//! `linkat`, `symlink`, `symlinkat`, `chdir`, `chmod`, `fchmodat`, `chown`,
//! `lchown`, `fchownat`, `truncate`, `utimensat`, `readlinkat`, `statfs`,
//! and libc's own users of paths that call the kernel internally (where no
//! wrapper of `open` is reached): `fopen`, `freopen`, `opendir`, `mkstemp`,
//! `mkostemp`, `mkdtemp`; the exec family, `posix_spawn`, `system`.
//!
//! Under the signal backend the kernel reads a path on an evicted heap page
//! as `EFAULT` (programs build paths on the heap all the time). A path is
//! at most `PATH_MAX` bytes: the kernel gets a copy on the calling thread's
//! stack (`open` of a FIFO may block, and a copy pins nothing), a longer one
//! fails with `ENAMETOOLONG` as the kernel would fail it. The exec family
//! and `posix_spawn` pin their argument and environment vectors instead
//! (an `exec` that succeeds never returns). Under uffd everything passes
//! straight through.
//!
//! # Safety
//! The wrappers have libc's contracts; they forward pointers or copies.
#![allow(unsafe_code, reason = "libc's path functions, forwarded")]

use crate::bounce::Bounce;
use crate::io::{needs_help, pin, pin_into};
use core::ffi::{c_char, c_int, c_uint};
use sbma_alloc::sbma_pager::{Access, KernelGuard};

const PATH_MAX: usize = libc::PATH_MAX as usize;

fn set_errno(e: c_int) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

/// Copies the string at `s` (without its NUL) into `buf`, returning its
/// length; `None` (with `errno = ENAMETOOLONG`) if it is `PATH_MAX` bytes
/// or longer, as the kernel would refuse it.
fn stack_copy(s: *const c_char, buf: &mut [u8; PATH_MAX]) -> Option<usize> {
    // SAFETY: a NUL-terminated string (the caller's contract); ordinary
    // loads fault it in.
    let len = unsafe { libc::strnlen(s, PATH_MAX) };
    if len >= PATH_MAX {
        set_errno(libc::ENAMETOOLONG);
        return None;
    }
    // SAFETY: `len` bytes of the caller's string; `buf` stays zeroed past
    // them (the NUL).
    unsafe { core::ptr::copy_nonoverlapping(s.cast::<u8>(), buf.as_mut_ptr(), len) };
    Some(len)
}

/// Calls `f` with `path`, or with a copy of it on this stack when the
/// kernel could not read it; `err` (with `errno = ENAMETOOLONG`) for a
/// managed path longer than `PATH_MAX`.
pub(crate) fn with_path<R>(path: *const c_char, err: R, f: impl FnOnce(*const c_char) -> R) -> R {
    if !needs_help(path.cast()) {
        return f(path);
    }
    let mut buf = [0u8; PATH_MAX];
    match stack_copy(path, &mut buf) {
        Some(_) => f(buf.as_ptr().cast()),
        None => err,
    }
}

/// [`with_path`] for a template the call rewrites (`mkstemp`): the copy's
/// new bytes are written back.
fn with_template<R>(template: *mut c_char, err: R, f: impl FnOnce(*mut c_char) -> R) -> R {
    if !needs_help(template.cast()) {
        return f(template);
    }
    let mut buf = [0u8; PATH_MAX];
    let Some(len) = stack_copy(template, &mut buf) else {
        return err;
    };
    let r = f(buf.as_mut_ptr().cast());
    // SAFETY: the caller's template holds `len` writable bytes.
    unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), template.cast::<u8>(), len) };
    r
}

/// Nests [`with_path`] over every listed path argument.
macro_rules! with_paths {
    ($err:expr, [], $body:expr) => { $body };
    ($err:expr, [$p:ident $(, $rest:ident)*], $body:expr) => {
        with_path($p, $err, |$p| with_paths!($err, [$($rest),*], $body))
    };
}

/// A wrapper of libc's `$name` whose listed arguments are paths.
macro_rules! path_fn {
    ($(#[$doc:meta])* fn $name:ident($($a:ident: $t:ty),*) -> $ret:ty; paths [$($p:ident),+]; err $err:expr) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// libc's contract.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($a: $t),*) -> $ret {
            type F = unsafe extern "C" fn($($t),*) -> $ret;
            static CACHE: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);
            let f = $crate::io::next_symbol(
                match core::ffi::CStr::from_bytes_with_nul(concat!(stringify!($name), "\0").as_bytes()) {
                    Ok(n) => n,
                    Err(_) => unreachable!(),
                },
                &CACHE,
            );
            assert!(f != 0, concat!("sbma: libc has no ", stringify!($name)));
            // SAFETY: libc's function of this type.
            let f = unsafe { core::mem::transmute::<usize, F>(f) };
            // SAFETY: forwarded with the caller's arguments or copies.
            with_paths!($err, [$($p),+], unsafe { f($($a),*) })
        }
    };
}

type Mode = libc::mode_t;

path_fn! { /// `creat(2)`.
fn creat(path: *const c_char, mode: Mode) -> c_int; paths [path]; err -1 }
path_fn! { /// `creat64`.
fn creat64(path: *const c_char, mode: Mode) -> c_int; paths [path]; err -1 }
path_fn! { /// `access(2)`.
fn access(path: *const c_char, mode: c_int) -> c_int; paths [path]; err -1 }
path_fn! { /// `faccessat(2)`.
fn faccessat(dirfd: c_int, path: *const c_char, mode: c_int, flags: c_int) -> c_int; paths [path]; err -1 }
path_fn! { /// `unlink(2)`.
fn unlink(path: *const c_char) -> c_int; paths [path]; err -1 }
path_fn! { /// `unlinkat(2)`.
fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int; paths [path]; err -1 }
path_fn! { /// `rmdir(2)`.
fn rmdir(path: *const c_char) -> c_int; paths [path]; err -1 }
path_fn! { /// `mkdir(2)`.
fn mkdir(path: *const c_char, mode: Mode) -> c_int; paths [path]; err -1 }
path_fn! { /// `mkdirat(2)`.
fn mkdirat(dirfd: c_int, path: *const c_char, mode: Mode) -> c_int; paths [path]; err -1 }
path_fn! { /// `rename(2)`.
fn rename(from: *const c_char, to: *const c_char) -> c_int; paths [from, to]; err -1 }
path_fn! { /// `renameat(2)`.
fn renameat(fromfd: c_int, from: *const c_char, tofd: c_int, to: *const c_char) -> c_int; paths [from, to]; err -1 }
path_fn! { /// `renameat2(2)`.
fn renameat2(fromfd: c_int, from: *const c_char, tofd: c_int, to: *const c_char, flags: c_uint) -> c_int; paths [from, to]; err -1 }
path_fn! { /// `link(2)`.
fn link(from: *const c_char, to: *const c_char) -> c_int; paths [from, to]; err -1 }
path_fn! { /// `linkat(2)`.
fn linkat(fromfd: c_int, from: *const c_char, tofd: c_int, to: *const c_char, flags: c_int) -> c_int; paths [from, to]; err -1 }
path_fn! { /// `symlink(2)`.
fn symlink(target: *const c_char, path: *const c_char) -> c_int; paths [target, path]; err -1 }
path_fn! { /// `symlinkat(2)`.
fn symlinkat(target: *const c_char, dirfd: c_int, path: *const c_char) -> c_int; paths [target, path]; err -1 }
path_fn! { /// `chdir(2)`.
fn chdir(path: *const c_char) -> c_int; paths [path]; err -1 }
path_fn! { /// `chmod(2)`.
fn chmod(path: *const c_char, mode: Mode) -> c_int; paths [path]; err -1 }
path_fn! { /// `fchmodat(2)`.
fn fchmodat(dirfd: c_int, path: *const c_char, mode: Mode, flags: c_int) -> c_int; paths [path]; err -1 }
path_fn! { /// `chown(2)`.
fn chown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int; paths [path]; err -1 }
path_fn! { /// `lchown(2)`.
fn lchown(path: *const c_char, uid: libc::uid_t, gid: libc::gid_t) -> c_int; paths [path]; err -1 }
path_fn! { /// `fchownat(2)`.
fn fchownat(dirfd: c_int, path: *const c_char, uid: libc::uid_t, gid: libc::gid_t, flags: c_int) -> c_int; paths [path]; err -1 }
path_fn! { /// `truncate(2)`.
fn truncate(path: *const c_char, len: libc::off_t) -> c_int; paths [path]; err -1 }
path_fn! { /// `truncate64`.
fn truncate64(path: *const c_char, len: libc::off_t) -> c_int; paths [path]; err -1 }
path_fn! { /// `fopen(3)`: glibc opens the file with an internal call no
/// wrapper of `open` sees.
fn fopen(path: *const c_char, mode: *const c_char) -> *mut libc::FILE; paths [path, mode]; err core::ptr::null_mut() }
path_fn! { /// `fopen64`.
fn fopen64(path: *const c_char, mode: *const c_char) -> *mut libc::FILE; paths [path, mode]; err core::ptr::null_mut() }
path_fn! { /// `freopen(3)`.
fn freopen(path: *const c_char, mode: *const c_char, file: *mut libc::FILE) -> *mut libc::FILE; paths [path, mode]; err core::ptr::null_mut() }
path_fn! { /// `opendir(3)`.
fn opendir(path: *const c_char) -> *mut libc::DIR; paths [path]; err core::ptr::null_mut() }

type OpenFn = unsafe extern "C" fn(*const c_char, c_int, ...) -> c_int;
type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, ...) -> c_int;

/// `open(2)` with the path in managed memory works. (Declared with the
/// mode as a third argument: the C variadic call passes it in the same
/// register, read only with `O_CREAT` or `O_TMPFILE`.)
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let f = crate::libc_fn!("open", OpenFn);
    // SAFETY: forwarded with the caller's path or our copy.
    with_path(path, -1, |p| unsafe { f(p, flags, mode) })
}

/// `open64`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn open64(path: *const c_char, flags: c_int, mode: c_uint) -> c_int {
    let f = crate::libc_fn!("open64", OpenFn);
    // SAFETY: forwarded with the caller's path or our copy.
    with_path(path, -1, |p| unsafe { f(p, flags, mode) })
}

/// `openat(2)` with the path in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    let f = crate::libc_fn!("openat", OpenatFn);
    // SAFETY: forwarded with the caller's path or our copy.
    with_path(path, -1, |p| unsafe { f(dirfd, p, flags, mode) })
}

/// `openat64`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn openat64(
    dirfd: c_int,
    path: *const c_char,
    flags: c_int,
    mode: c_uint,
) -> c_int {
    let f = crate::libc_fn!("openat64", OpenatFn);
    // SAFETY: forwarded with the caller's path or our copy.
    with_path(path, -1, |p| unsafe { f(dirfd, p, flags, mode) })
}

type UtimensatFn =
    unsafe extern "C" fn(c_int, *const c_char, *const [libc::timespec; 2], c_int) -> c_int;

/// `utimensat(2)` with the path or the times in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn utimensat(
    dirfd: c_int,
    path: *const c_char,
    times: *const [libc::timespec; 2],
    flags: c_int,
) -> c_int {
    let f = crate::libc_fn!("utimensat", UtimensatFn);
    // SAFETY: NULL or readable (the caller's contract).
    let mut times = unsafe { Bounce::new(times) };
    // SAFETY: forwarded with the caller's arguments or copies.
    with_path(path, -1, |p| unsafe { f(dirfd, p, times.ptr(), flags) })
}

type ReadlinkatFn = unsafe extern "C" fn(c_int, *const c_char, *mut c_char, usize) -> isize;

/// `readlinkat(2)` with the path or the buffer in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn readlinkat(
    dirfd: c_int,
    path: *const c_char,
    buf: *mut c_char,
    len: usize,
) -> isize {
    let f = crate::libc_fn!("readlinkat", ReadlinkatFn);
    let Some(_b) = pin(buf.cast(), len, Access::Write) else {
        return -1;
    };
    // SAFETY: forwarded with our copy of the path and the pinned buffer.
    with_path(path, -1, |p| unsafe { f(dirfd, p, buf, len) })
}

type StatfsFn = unsafe extern "C" fn(*const c_char, *mut libc::statfs) -> c_int;

/// `statfs(2)` with the path or the result in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn statfs(path: *const c_char, buf: *mut libc::statfs) -> c_int {
    let f = crate::libc_fn!("statfs", StatfsFn);
    // SAFETY: the result is the caller's, writable.
    let mut out = unsafe { Bounce::new(buf) };
    // SAFETY: forwarded with copies.
    let r = with_path(path, -1, |p| unsafe { f(p, out.ptr()) });
    if r == 0 {
        // SAFETY: as above.
        unsafe { out.back() };
    }
    r
}

type MkstempFn = unsafe extern "C" fn(*mut c_char) -> c_int;
type MkostempFn = unsafe extern "C" fn(*mut c_char, c_int) -> c_int;
type MkdtempFn = unsafe extern "C" fn(*mut c_char) -> *mut c_char;

/// `mkstemp(3)` with the template in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkstemp(template: *mut c_char) -> c_int {
    let f = crate::libc_fn!("mkstemp", MkstempFn);
    // SAFETY: forwarded with a copy written back.
    with_template(template, -1, |t| unsafe { f(t) })
}

/// `mkostemp(3)` with the template in managed memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkostemp(template: *mut c_char, flags: c_int) -> c_int {
    let f = crate::libc_fn!("mkostemp", MkostempFn);
    // SAFETY: forwarded with a copy written back.
    with_template(template, -1, |t| unsafe { f(t, flags) })
}

/// `mkdtemp(3)` with the template in managed memory works (returns the
/// caller's template, as libc does).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn mkdtemp(template: *mut c_char) -> *mut c_char {
    let f = crate::libc_fn!("mkdtemp", MkdtempFn);
    // SAFETY: forwarded with a copy written back.
    let r = with_template(template, core::ptr::null_mut(), |t| unsafe { f(t) });
    if r.is_null() { r } else { template }
}

/// Pins a NULL-terminated vector of strings (argv, envp) and each string.
fn pin_vector(v: *const *const c_char, guards: &mut Vec<KernelGuard>) -> bool {
    if v.is_null() {
        return true;
    }
    let mut i = 0;
    loop {
        // SAFETY: a NULL-terminated vector (exec's contract); ordinary
        // loads fault it in.
        let s = unsafe { *v.add(i) };
        if !pin_into(
            guards,
            v.wrapping_add(i).cast(),
            size_of::<*const c_char>(),
            Access::Read,
        ) {
            return false;
        }
        if s.is_null() {
            return true;
        }
        // SAFETY: a NUL-terminated string.
        let len = unsafe { libc::strlen(s) } + 1;
        if !pin_into(guards, s.cast(), len, Access::Read) {
            return false;
        }
        i += 1;
    }
}

/// Pins a path and two vectors for a call that execs.
fn pin_exec(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> Option<Vec<KernelGuard>> {
    let mut guards = Vec::new();
    // SAFETY: NULL or a NUL-terminated string (exec's contract).
    let path_len = (!path.is_null()).then(|| unsafe { libc::strlen(path) } + 1);
    let pinned = path_len.is_none_or(|len| pin_into(&mut guards, path.cast(), len, Access::Read))
        && pin_vector(argv, &mut guards)
        && pin_vector(envp, &mut guards);
    pinned.then_some(guards)
}

/// Calls `call` (an exec, or `system`) with its path and vectors pinned;
/// -1 with `errno = EFAULT` if they cannot be.
fn exec_pinned(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    call: impl FnOnce() -> c_int,
) -> c_int {
    let Some(_pinned) = pin_exec(path, argv, envp) else {
        set_errno(libc::EFAULT);
        return -1;
    };
    call()
}

type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
type ExecvFn = unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int;

/// `execve(2)` with the path, the arguments or the environment in managed
/// memory works.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let f = crate::libc_fn!("execve", ExecveFn);
    // SAFETY: forwarded, everything pinned.
    exec_pinned(path, argv, envp, || unsafe { f(path, argv, envp) })
}

/// `execvpe(3)`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let f = crate::libc_fn!("execvpe", ExecveFn);
    // SAFETY: forwarded, everything pinned.
    exec_pinned(file, argv, envp, || unsafe { f(file, argv, envp) })
}

/// `execv(3)`: the environment is `environ` (not managed: libc's).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    let f = crate::libc_fn!("execv", ExecvFn);
    // SAFETY: forwarded, everything pinned.
    exec_pinned(path, argv, core::ptr::null(), || unsafe { f(path, argv) })
}

/// `execvp(3)`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    let f = crate::libc_fn!("execvp", ExecvFn);
    // SAFETY: forwarded, everything pinned.
    exec_pinned(file, argv, core::ptr::null(), || unsafe { f(file, argv) })
}

type SystemFn = unsafe extern "C" fn(*const c_char) -> c_int;

/// `system(3)` with the command in managed memory works (it reaches
/// `execve` inside libc; pinned, since a command may exceed `PATH_MAX`).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn system(command: *const c_char) -> c_int {
    let f = crate::libc_fn!("system", SystemFn);
    // SAFETY: forwarded, pinned.
    exec_pinned(command, core::ptr::null(), core::ptr::null(), || unsafe {
        f(command)
    })
}

type SpawnFn = unsafe extern "C" fn(
    *mut libc::pid_t,
    *const c_char,
    *const libc::posix_spawn_file_actions_t,
    *const libc::posix_spawnattr_t,
    *const *mut c_char,
    *const *mut c_char,
) -> c_int;

/// `posix_spawn(3)` with the path, arguments or environment in managed
/// memory works (they stay pinned until the child has exec'd: glibc's
/// `posix_spawn` returns after that).
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut libc::pid_t,
    path: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let f = crate::libc_fn!("posix_spawn", SpawnFn);
    let Some(_pinned) = pin_exec(path, argv.cast(), envp.cast()) else {
        return libc::EFAULT;
    };
    // SAFETY: forwarded, everything pinned.
    unsafe { f(pid, path, actions, attr, argv, envp) }
}

/// `posix_spawnp(3)`, as `posix_spawn`.
///
/// # Safety
/// libc's contract.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut libc::pid_t,
    file: *const c_char,
    actions: *const libc::posix_spawn_file_actions_t,
    attr: *const libc::posix_spawnattr_t,
    argv: *const *mut c_char,
    envp: *const *mut c_char,
) -> c_int {
    let f = crate::libc_fn!("posix_spawnp", SpawnFn);
    let Some(_pinned) = pin_exec(file, argv.cast(), envp.cast()) else {
        return libc::EFAULT;
    };
    // SAFETY: forwarded, everything pinned.
    unsafe { f(pid, file, actions, attr, argv, envp) }
}
