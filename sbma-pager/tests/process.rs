//! Scenarios that must run in a process of their own: handler chaining,
//! death by signal, fatal I/O errors in the fault path, environment
//! configuration. The parent re-executes this binary once per scenario and
//! checks how the child ended.
#![allow(
    unsafe_code,
    reason = "scenarios install handlers and touch raw memory"
)]

mod common;

use common::scenario::{Expect, Scenario, backend};
use sbma_pager::{Backend, Error, Pager, PagerBuilder};
use std::sync::atomic::{AtomicUsize, Ordering};

const PAGE: usize = 16 << 10;

fn scenarios() -> Vec<Scenario> {
    vec![
        (
            "foreign_fault_reaches_previous_handler",
            foreign_fault_reaches_previous_handler,
            Expect::Exit0,
        ),
        (
            "foreign_fault_with_default_handler_kills",
            foreign_fault_with_default_handler_kills,
            Expect::Signal(libc::SIGSEGV, ""),
        ),
        (
            "freed_region_access_kills",
            freed_region_access_kills,
            // Under uffd a use after free is reported in one line before
            // the SIGSEGV (the signal backend's is the kernel's own fault).
            Expect::SignalSaidOnceUnderUffd(libc::SIGSEGV, "outside any live region"),
        ),
        (
            "full_disk_in_fault_path_aborts_with_message",
            full_disk_in_fault_path_aborts_with_message,
            Expect::Signal(
                libc::SIGABRT,
                "writing pages back to make room failed: file too large, errno 27",
            ),
        ),
        (
            "full_disk_in_explicit_evict_is_an_error",
            full_disk_in_explicit_evict_is_an_error,
            Expect::Exit0,
        ),
        (
            "environment_configuration",
            environment_configuration,
            Expect::Exit0,
        ),
        (
            "auto_falls_back_to_signal_without_userfaultfd",
            auto_falls_back_to_signal_without_userfaultfd,
            Expect::Exit0,
        ),
    ]
}

fn main() {
    common::scenario::main(scenarios);
}

fn small_pager() -> Pager {
    Pager::builder()
        .budget(8 * PAGE)
        .page_size(PAGE)
        .backend(backend())
        .build()
        .unwrap()
}

/// Fills a region of `pages` pages with a pattern and checks it.
fn exercise(pager: &Pager, pages: usize) {
    let r = pager.alloc(pages * PAGE).unwrap();
    let p = r.as_mut_ptr();
    for i in (0..r.len()).step_by(512) {
        // SAFETY: inside the region.
        unsafe { p.add(i).write((i / 512) as u8) };
    }
    for i in (0..r.len()).step_by(512) {
        // SAFETY: as above.
        assert_eq!(unsafe { p.add(i).read() }, (i / 512) as u8);
    }
}

/// A page of our own, inaccessible: a fault there is not the pager's.
fn foreign_page() -> *mut u8 {
    // SAFETY: a fresh anonymous mapping.
    let p = unsafe {
        libc::mmap(
            core::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

static FOREIGN: AtomicUsize = AtomicUsize::new(0);
static FOREIGN_HITS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn foreign_handler(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel's siginfo.
    let addr = unsafe { (*info).si_addr() } as usize;
    let page = FOREIGN.load(Ordering::SeqCst);
    if addr & !4095 == page {
        FOREIGN_HITS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: our own page.
        unsafe {
            libc::mprotect(
                page as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
    } else {
        // SAFETY: async-signal-safe exit.
        unsafe { libc::_exit(3) };
    }
}

fn foreign_fault_reaches_previous_handler() {
    let page = foreign_page();
    FOREIGN.store(page as usize, Ordering::SeqCst);
    // SAFETY: installing a valid SA_SIGINFO handler.
    unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        sa.sa_sigaction = foreign_handler as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(libc::SIGSEGV, &sa, core::ptr::null_mut());
    }
    let pager = small_pager();
    exercise(&pager, 32);
    // SAFETY: our own page; the first write faults, the pager's handler
    // passes it on, ours makes the page writable.
    unsafe { page.write_volatile(42) };
    assert_eq!(
        FOREIGN_HITS.load(Ordering::SeqCst),
        1,
        "the previous handler did not see the foreign fault"
    );
    // SAFETY: now writable.
    assert_eq!(unsafe { page.read_volatile() }, 42);
    exercise(&pager, 32);
    drop(pager);
    // The last pager restored the previous handler.
    // SAFETY: querying with valid pointers.
    let current = unsafe {
        let mut sa: libc::sigaction = core::mem::zeroed();
        libc::sigaction(libc::SIGSEGV, core::ptr::null(), &mut sa);
        sa.sa_sigaction
    };
    assert_eq!(
        current, foreign_handler as *const () as usize,
        "handler not restored"
    );
}

fn foreign_fault_with_default_handler_kills() {
    let pager = small_pager();
    exercise(&pager, 32);
    let page = foreign_page();
    // SAFETY: deliberately faults: the process must die of SIGSEGV.
    unsafe { page.write_volatile(1) };
    std::process::exit(4); // not reached if the fault is delivered
}

fn freed_region_access_kills() {
    let pager = small_pager();
    let r = pager.alloc(4 * PAGE).unwrap();
    let p = r.as_mut_ptr();
    // SAFETY: inside the live region.
    unsafe { p.write_volatile(1) };
    drop(r);
    // SAFETY: deliberately a use after free inside the arena: not a page
    // the pager may hand out, so it must be a real SIGSEGV.
    unsafe { p.write_volatile(2) };
    std::process::exit(4);
}

/// Limits the size of files this process may write, with SIGXFSZ ignored,
/// so writes past it fail with EFBIG.
fn limit_file_size(bytes: u64) {
    // SAFETY: plain setrlimit/signal calls.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: bytes,
            rlim_max: bytes,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

fn full_disk_in_fault_path_aborts_with_message() {
    let pager = small_pager();
    limit_file_size(4 * PAGE as u64);
    let r = pager.alloc(64 * PAGE).unwrap();
    let p = r.as_mut_ptr();
    for i in (0..r.len()).step_by(PAGE) {
        // SAFETY: inside the region. Past the budget, victims must be
        // written beyond the file-size limit: the fault cannot be resolved.
        unsafe { p.add(i).write_volatile(1) };
    }
    std::process::exit(4);
}

fn full_disk_in_explicit_evict_is_an_error() {
    let pager = small_pager();
    limit_file_size(4 * PAGE as u64);
    let r = pager.alloc(8 * PAGE).unwrap();
    let p = r.as_mut_ptr();
    for i in 0..8 {
        // SAFETY: inside the region; 8 pages fit the budget.
        unsafe { p.add(i * PAGE).write_volatile(i as u8 + 1) };
    }
    let e = pager.evict_all().unwrap_err();
    assert!(
        matches!(e, Error::Io { source, .. } if source == rustix::io::Errno::FBIG),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("writing pages to the backing file failed"),
        "{e}"
    );
    // Nothing was lost: the pages that could not be written are still
    // resident and intact.
    for i in 0..8 {
        // SAFETY: as above.
        let got = unsafe { p.add(i * PAGE).read_volatile() };
        assert_eq!(got, i as u8 + 1, "page {i}");
    }
    pager.check_invariants().unwrap();
}

fn environment_configuration() {
    let set = |k: &str, v: &str| {
        // SAFETY: this child process is single-threaded here.
        unsafe { std::env::set_var(k, v) }
    };
    let unset = |k: &str| {
        // SAFETY: as above.
        unsafe { std::env::remove_var(k) }
    };
    for (var, value, needle) in [
        (
            "SBMA_BUDGET",
            "12X",
            "invalid SBMA_BUDGET `12X`: unknown unit",
        ),
        ("SBMA_PAGE_SIZE", "lots", "invalid SBMA_PAGE_SIZE `lots`"),
        (
            "SBMA_POLICY",
            "lfu",
            "invalid SBMA_POLICY `lfu`: unknown eviction policy",
        ),
        ("SBMA_DIR", "", "invalid SBMA_DIR ``: empty path"),
        (
            "SBMA_BACKEND",
            "mmap",
            "invalid SBMA_BACKEND `mmap`: unknown backend",
        ),
    ] {
        set(var, value);
        let e = PagerBuilder::from_env().unwrap_err();
        assert!(e.to_string().contains(needle), "{var}: {e}");
        unset(var);
    }
    set("SBMA_BUDGET", "2M");
    set("SBMA_PAGE_SIZE", "32K");
    set("SBMA_POLICY", "lru");
    set("SBMA_DIR", common::tmpdir().to_str().unwrap());
    set("SBMA_BACKEND", backend().name());
    let pager = PagerBuilder::from_env().unwrap().build().unwrap();
    assert_eq!(pager.backend(), backend());
    assert_eq!(pager.page_size(), 32 << 10);
    assert_eq!(pager.stats().budget, 2 << 20);
    exercise(&pager, 128);
    set("SBMA_DIR", "/nonexistent/sbma");
    let e = PagerBuilder::from_env().unwrap().build().unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot create a backing file in /nonexistent/sbma"),
        "{e}"
    );
}

/// Without the right to a userfaultfd, `Auto` runs on the signal backend
/// and says why in the statistics, and an explicit `Uffd` is a clear
/// error. As root, the scenario drops to `nobody` first (which loses
/// CAP_SYS_PTRACE and the device node's permission).
fn auto_falls_back_to_signal_without_userfaultfd() {
    // SAFETY: plain id calls in a single-threaded child process.
    unsafe {
        if libc::geteuid() == 0 {
            assert_eq!(libc::setgroups(0, core::ptr::null()), 0);
            assert_eq!(libc::setgid(65534), 0);
            assert_eq!(libc::setuid(65534), 0);
        }
    }
    if Backend::Uffd.available().is_ok() {
        println!(
            "SKIPPED: userfaultfd is open to everyone here (vm.unprivileged_userfaultfd=1 or /dev/userfaultfd)"
        );
        return;
    }
    let pager = Pager::builder()
        .budget(8 * PAGE)
        .page_size(PAGE)
        .dir("/tmp")
        .build()
        .unwrap();
    assert_eq!(pager.backend(), Backend::Signal);
    let note = pager.stats().backend_note.expect("a note saying why");
    assert!(note.contains("userfaultfd"), "{note}");
    exercise(&pager, 32);
    let e = Pager::builder()
        .budget(8 * PAGE)
        .page_size(PAGE)
        .dir("/tmp")
        .backend(Backend::Uffd)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::Backend { .. }), "{e:?}");
    assert!(
        e.to_string().starts_with(
            "the userfaultfd backend is unavailable: userfaultfd(2) needs CAP_SYS_PTRACE"
        ),
        "{e}"
    );
}
