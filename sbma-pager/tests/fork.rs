//! Forked children keep paging: they read the data of their fork through
//! a fork snapshot while the parent rewrites, clears and evicts the same
//! pages; they stay correct over their budget, with threads, in their own
//! children, and when snapshots run out. Each scenario runs in a process
//! of its own (it forks), once per backend.
#![allow(unsafe_code, reason = "scenarios fork and touch raw memory")]

mod common;

use common::scenario::{Expect, Scenario, backend, fork_child, in_child, wait};
use common::{load, store};
use sbma_pager::{Access, Error, Pager, Region};
use std::os::unix::process::ExitStatusExt;

const PAGE: usize = 16 << 10;
const WORDS_PER_PAGE: usize = PAGE / 8;
/// Pages of the region: 4x the budget.
const PAGES: usize = 32;
const BUDGET_PAGES: usize = 8;

fn scenarios() -> Vec<Scenario> {
    vec![
        (
            "child_reads_its_fork_while_the_parent_rewrites",
            child_reads_its_fork_while_the_parent_rewrites,
            Expect::Exit0,
        ),
        (
            "child_over_budget_keeps_what_it_wrote",
            child_over_budget_keeps_what_it_wrote,
            Expect::Exit0,
        ),
        (
            "child_api_and_drop_leave_the_parent_alone",
            child_api_and_drop_leave_the_parent_alone,
            Expect::Exit0,
        ),
        (
            "children_beyond_the_snapshots_abort_in_one_line",
            children_beyond_the_snapshots_abort_in_one_line,
            Expect::Exit0,
        ),
        (
            "exec_ends_the_snapshot",
            exec_ends_the_snapshot,
            Expect::Exit0,
        ),
        (
            "forks_while_another_thread_writes_back",
            forks_while_another_thread_writes_back,
            Expect::Exit0,
        ),
        (
            "child_reads_its_fork_while_the_parent_moves_pages",
            child_reads_its_fork_while_the_parent_moves_pages,
            Expect::Exit0,
        ),
    ]
}

fn main() {
    common::scenario::main(scenarios);
}

/// A pager of [`BUDGET_PAGES`] pages on the scenario's backend.
fn small_pager() -> Pager {
    Pager::builder()
        .budget(BUDGET_PAGES * PAGE)
        .page_size(PAGE)
        .backend(backend())
        .build()
        .unwrap()
}

/// A pager with a region of [`PAGES`] pages (4x the budget) holding
/// generation 1 of the data, all of it evicted; and the region's words.
fn generation_one_on_disk() -> (Pager, Region, *mut u64) {
    let pager = small_pager();
    let region = pager.alloc(PAGES * PAGE).unwrap();
    let p = region.as_mut_ptr().cast::<u64>();
    fill(p, 0..PAGES, 1);
    pager.evict_all().unwrap();
    (pager, region, p)
}

/// The word `i` of generation `gen` of the data.
fn value(i: usize, generation: u64) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ generation.wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

fn fill(p: *mut u64, pages: core::ops::Range<usize>, generation: u64) {
    for i in pages.start * WORDS_PER_PAGE..pages.end * WORDS_PER_PAGE {
        // SAFETY: inside the caller's live region.
        unsafe { store(p, i, value(i, generation)) };
    }
}

/// The words of `pages` that differ from `expect(i)`; the first is
/// printed.
fn mismatches(
    p: *const u64,
    pages: impl Iterator<Item = usize>,
    expect: impl Fn(usize) -> u64,
    who: &str,
) -> usize {
    let mut bad = 0;
    for page in pages {
        for i in page * WORDS_PER_PAGE..(page + 1) * WORDS_PER_PAGE {
            // SAFETY: inside the caller's live region.
            let got = unsafe { load(p, i) };
            if got != expect(i) {
                if bad == 0 {
                    eprintln!(
                        "{who}: word {i} (page {page}) is {got:#x}, expected {:#x}",
                        expect(i)
                    );
                }
                bad += 1;
            }
        }
    }
    bad
}

/// A pipe: `(read end, write end)`.
fn pipe() -> (i32, i32) {
    let mut fds = [0; 2];
    // SAFETY: a valid array of two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

fn send(fd: i32) {
    // SAFETY: one byte from a valid buffer.
    assert_eq!(unsafe { libc::write(fd, b"x".as_ptr().cast(), 1) }, 1);
}

/// Blocks until a byte (or end of file) arrives on `fd`.
fn receive(fd: i32) {
    let mut b = 0u8;
    // SAFETY: one byte into a valid buffer.
    let _ = unsafe { libc::read(fd, (&raw mut b).cast(), 1) };
}

/// Whether a byte (or end of file) is waiting on `fd`.
fn ready(fd: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
}

/// The child's side of the main scenario: until the parent says it has
/// finished rewriting (and once more after), two threads read the whole
/// region (one forwards, one backwards; 4x the budget, so clean pages are
/// dropped and read again) and check it is generation 1; the child's own
/// child does the same at the same time. Returns the exit code.
fn verify_generation_one(p: usize, done: i32, who: &'static str) -> i32 {
    let passes = |backwards: bool| {
        let mut bad = 0;
        let mut last = false;
        loop {
            let finished = ready(done);
            let order: Vec<usize> = if backwards {
                (0..PAGES).rev().collect()
            } else {
                (0..PAGES).collect()
            };
            bad += mismatches(p as *const u64, order.into_iter(), |i| value(i, 1), who);
            if last {
                return bad;
            }
            last = finished;
        }
    };
    let bad = std::thread::scope(|s| {
        let back = s.spawn(|| passes(true));
        passes(false) + back.join().unwrap()
    });
    i32::from(bad != 0)
}

/// The parent rewrites every page (generation 2, from two threads), evicts
/// everything (each write-back rewrites a slot the child may still read),
/// clears a few pages (punches their slots), three times, while a child
/// and a grandchild read generation 1 from 4x their budget; then the
/// parent's own data is checked, and once the children are gone nothing
/// more is preserved.
fn child_reads_its_fork_while_the_parent_rewrites() {
    let (pager, _region, p) = generation_one_on_disk();
    pager.touch(p.cast(), 4 * PAGE, Access::Read).unwrap();
    let (go_r, go_w) = pipe();
    let (done_r, done_w) = pipe();
    let addr = p as usize;
    let child = fork_child(|| {
        let grandchild = fork_child(|| {
            receive(go_r);
            verify_generation_one(addr, done_r, "grandchild")
        });
        receive(go_r);
        let mine = verify_generation_one(addr, done_r, "child");
        let theirs = wait(grandchild);
        if theirs.code() != Some(0) {
            eprintln!("grandchild: {theirs:?}");
            return 1;
        }
        mine
    });
    send(go_w);
    send(go_w);
    for round in 0..3 {
        std::thread::scope(|s| {
            let half = PAGES / 2;
            let a = addr;
            s.spawn(move || fill(a as *mut u64, 0..half, 2));
            fill(p, half..PAGES, 2);
        });
        pager.evict_all().unwrap();
        if round == 0 {
            // Cleared pages read as zeros here; the children still read
            // generation 1 (their slots were punched).
            // SAFETY: pages 8..12 of the live region.
            pager
                .clear(unsafe { p.add(8 * WORDS_PER_PAGE) }.cast(), 4 * PAGE)
                .unwrap();
        }
    }
    send(done_w);
    let status = wait(child);
    assert_eq!(status.code(), Some(0), "child: {status:?}");
    let preserved = pager.stats().pages_preserved;
    assert!(
        preserved >= PAGES as u64,
        "every page's slot was rewritten while the child lived: {preserved} preserved"
    );
    // Pages 8..12 were cleared after round 0 and refilled in rounds 1
    // and 2.
    assert_eq!(mismatches(p, 0..PAGES, |i| value(i, 2), "parent"), 0);
    // The children are gone: rewriting again copies nothing aside.
    fill(p, 0..PAGES, 3);
    pager.evict_all().unwrap();
    assert_eq!(pager.stats().pages_preserved, preserved);
    assert_eq!(mismatches(p, 0..PAGES, |i| value(i, 3), "parent"), 0);
    pager.check_invariants().unwrap();
}

/// A move (`Pager::relocate`) while a child reads its fork: the parent's
/// source slots are punched and its target slots rewritten, but the child
/// still reads generation 1 in the source (the snapshot preserved them);
/// the parent reads it at the target. Evicted pages move first (slots),
/// then clean and dirty ones (memory: `mremap`; under uffd `UFFDIO_MOVE`
/// refuses pages the child still shares and the pager copies them). What
/// does not move is copied, as `realloc` does.
fn child_reads_its_fork_while_the_parent_moves_pages() {
    let pager = small_pager();
    let region = pager.alloc(2 * PAGES * PAGE).unwrap();
    let p = region.as_mut_ptr().cast::<u64>();
    let q = p.wrapping_add(PAGES * WORDS_PER_PAGE);
    // The target held other data, part of it on disk.
    fill(q, 0..PAGES, 9);
    fill(p, 0..PAGES, 1);
    pager.evict_all().unwrap();
    // SAFETY: pages 8..14 of the live region.
    let (clean, dirty) = unsafe { (p.add(8 * WORDS_PER_PAGE), p.add(12 * WORDS_PER_PAGE)) };
    pager.touch(clean.cast(), 4 * PAGE, Access::Read).unwrap();
    pager.touch(dirty.cast(), 2 * PAGE, Access::Write).unwrap();
    let (go_r, go_w) = pipe();
    let (done_r, done_w) = pipe();
    let addr = p as usize;
    let child = fork_child(|| {
        receive(go_r);
        verify_generation_one(addr, done_r, "child")
    });
    send(go_w);
    if let Err(e) = pager.relocate(p.cast(), q.cast(), PAGES * PAGE) {
        eprintln!("moved {} bytes, copying the rest: {}", e.moved, e.error);
        // SAFETY: the unmoved rest of both ranges, live and disjoint.
        unsafe {
            core::ptr::copy_nonoverlapping(
                p.cast::<u8>().add(e.moved),
                q.cast::<u8>().add(e.moved),
                PAGES * PAGE - e.moved,
            );
        }
    }
    let moved = pager.stats().pages_moved;
    assert!(moved >= 8, "only {moved} pages moved");
    pager.clear(p.cast(), PAGES * PAGE).unwrap();
    fill(p, 0..PAGES, 2);
    pager.evict_all().unwrap();
    send(done_w);
    let status = wait(child);
    assert_eq!(status.code(), Some(0), "child: {status:?}");
    assert_eq!(mismatches(q, 0..PAGES, |i| value(i, 1), "target"), 0);
    assert_eq!(mismatches(p, 0..PAGES, |i| value(i, 2), "source"), 0);
    pager.evict_all().unwrap();
    assert_eq!(
        mismatches(q, 0..PAGES, |i| value(i, 1), "target reloaded"),
        0
    );
    pager.check_invariants().unwrap();
}

/// A child that writes more than its budget keeps every page it wrote
/// (it cannot write the parent's file, so it goes over its budget and says
/// so in its statistics), while the parent's data stays its own.
fn child_over_budget_keeps_what_it_wrote() {
    let (pager, _region, p) = generation_one_on_disk();
    // The budget full of clean pages at the fork: the child's writes to
    // them must count as dirty (under uffd they only fault because the
    // child handler made them read-only), or dropping them would lose them.
    pager
        .touch(p.cast(), BUDGET_PAGES * PAGE, Access::Read)
        .unwrap();
    let status = in_child(|| {
        // Half the region overwritten from two threads, the rest read.
        let half = PAGES / 2;
        let a = p as usize;
        std::thread::scope(|s| {
            s.spawn(move || fill(a as *mut u64, 0..half / 2, 5));
            fill(p, half / 2..half, 5);
        });
        let bad = mismatches(p, 0..half, |i| value(i, 5), "child (written)")
            + mismatches(p, half..PAGES, |i| value(i, 1), "child (read)");
        let over = pager.stats().child_overcommits;
        if over == 0 {
            eprintln!("child: 16 dirty pages in an 8-page budget, no overcommit counted");
        }
        i32::from(bad != 0 || over == 0)
    });
    assert_eq!(status.code(), Some(0), "child: {status:?}");
    assert_eq!(mismatches(p, 0..PAGES, |i| value(i, 1), "parent"), 0);
    assert_eq!(pager.stats().child_overcommits, 0);
    pager.check_invariants().unwrap();
}

/// In the child, `touch` and `prepare_for_kernel` work (a `read(2)` into
/// an evicted buffer succeeds), allocation, eviction and clearing are
/// refused, and dropping the region and the pager does not touch the
/// parent's backing file.
fn child_api_and_drop_leave_the_parent_alone() {
    let (pager, region, p) = generation_one_on_disk();
    let status = in_child(|| {
        let touched = pager.touch(p.cast(), 2 * PAGE, Access::Read).is_ok();
        let refused = pager.evict_all() == Err(Error::Forked)
            && pager.evict(p.cast(), PAGE) == Err(Error::Forked)
            && pager.clear(p.cast(), PAGE) == Err(Error::Forked)
            && matches!(pager.alloc(PAGE), Err(Error::Forked));
        // A kernel write into an evicted page, through the pager's guard.
        let (r, w) = pipe();
        let word = 42u64.to_ne_bytes();
        // SAFETY: 8 bytes from a valid buffer.
        let sent = unsafe { libc::write(w, word.as_ptr().cast(), 8) };
        assert_eq!(sent, 8);
        // SAFETY: page 20 of the live region.
        let target = unsafe { p.add(20 * WORDS_PER_PAGE) };
        let guard = pager
            .prepare_for_kernel(target.cast(), 8, Access::Write)
            .expect("prepare_for_kernel in the child");
        // SAFETY: the guard keeps the 8 bytes resident and writable.
        let n = unsafe { libc::read(r, target.cast(), 8) };
        drop(guard);
        // SAFETY: as above.
        let read_ok = n == 8
            && unsafe { load(target, 0) } == 42
            && unsafe { load(target, 1) } == value(20 * WORDS_PER_PAGE + 1, 1);
        let data = mismatches(p, (0..PAGES).filter(|&q| q != 20), |i| value(i, 1), "child") == 0;
        // This process's copies of the region and the pager end here (the
        // originals are never dropped in the child: it leaves with _exit).
        // SAFETY: bitwise copies owned by this process alone from now on.
        let (region, pager) = unsafe { (core::ptr::read(&region), core::ptr::read(&pager)) };
        drop(region);
        drop(pager);
        if !(touched && refused && read_ok && data) {
            eprintln!("child: touched {touched} refused {refused} read {read_ok} data {data}");
            return 1;
        }
        0
    });
    assert_eq!(status.code(), Some(0), "child: {status:?}");
    assert_eq!(mismatches(p, 0..PAGES, |i| value(i, 1), "parent"), 0);
    pager.check_invariants().unwrap();
}

/// With every snapshot taken by children that have not exec'd, one more
/// child gets none: its resident pages work, and touching an evicted page
/// aborts with one line. Once those children are gone, children page
/// again.
fn children_beyond_the_snapshots_abort_in_one_line() {
    let (pager, _region, p) = generation_one_on_disk();
    pager.touch(p.cast(), PAGE, Access::Read).unwrap();
    let (go_r, go_w) = pipe();
    let waiting: Vec<_> = (0..16)
        .map(|_| {
            fork_child(|| {
                receive(go_r);
                i32::from(mismatches(p, 0..PAGES, |i| value(i, 1), "waiting child") != 0)
            })
        })
        .collect();
    let no_snapshot = in_child(|| {
        let resident_ok = mismatches(p, 0..1, |i| value(i, 1), "17th child") == 0;
        if !resident_ok {
            return 3;
        }
        // SAFETY: an evicted page of the live region: must abort.
        unsafe { load(p, 20 * WORDS_PER_PAGE) };
        4
    });
    assert_eq!(
        no_snapshot.signal(),
        Some(libc::SIGABRT),
        "17th child: {no_snapshot:?}"
    );
    // Meanwhile the parent rewrites: the 16 must still read generation 1.
    fill(p, 0..PAGES, 2);
    pager.evict_all().unwrap();
    for _ in &waiting {
        send(go_w);
    }
    for pid in waiting {
        let s = wait(pid);
        assert_eq!(s.code(), Some(0), "waiting child: {s:?}");
    }
    let again =
        in_child(|| i32::from(mismatches(p, 0..PAGES, |i| value(i, 2), "later child") != 0));
    assert_eq!(
        again.code(),
        Some(0),
        "a child after the others left: {again:?}"
    );
}

/// A child that execs releases its snapshot: the parent's next rewrites
/// copy nothing aside.
fn exec_ends_the_snapshot() {
    let (pager, _region, p) = generation_one_on_disk();
    let (r, w) = pipe();
    let child = fork_child(|| {
        receive(r);
        let prog = c"/bin/sleep";
        let argv = [c"sleep".as_ptr(), c"1".as_ptr(), core::ptr::null()];
        // SAFETY: valid NUL-terminated strings and a NULL-terminated argv.
        unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
        127
    });
    // While the child has not exec'd, a rewrite preserves the slots.
    fill(p, 0..PAGES, 2);
    pager.evict_all().unwrap();
    let before = pager.stats().pages_preserved;
    assert!(
        before >= PAGES as u64,
        "{before} pages preserved before exec"
    );
    send(w);
    // Wait until the child has exec'd: its /proc/<pid>/exe changes.
    let exe = format!("/proc/{child}/exe");
    let start = std::time::Instant::now();
    while std::fs::read_link(&exe).is_ok_and(|e| !e.ends_with("sleep")) {
        assert!(start.elapsed().as_secs() < 10, "the child never exec'd");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    fill(p, 0..PAGES, 3);
    pager.evict_all().unwrap();
    assert_eq!(
        pager.stats().pages_preserved,
        before,
        "copied after the exec"
    );
    let s = wait(child);
    assert_eq!(s.code(), Some(0), "child: {s:?}");
    assert_eq!(mismatches(p, 0..PAGES, |i| value(i, 3), "parent"), 0);
}

/// Forks while another thread of the parent keeps writing dirty pages
/// back: every child reads the data of its fork. Each round the main
/// thread writes a new generation into every page (4x the budget, so the
/// pages go through write-back while it writes) and forks at once, while
/// an evicting thread writes back whatever is dirty; the child reads every
/// page (dropping clean ones and reading them again) and checks it holds
/// that round's generation. A write-back that finished between the
/// snapshot's set-up and the fork (preserving the slot's *older* bytes)
/// would make the child read the generation before (seen under uffd with
/// git, whose forked children read their argument vectors that way).
fn forks_while_another_thread_writes_back() {
    const ROUNDS: u64 = 150;
    let (pager, _region, p) = generation_one_on_disk();
    let addr = p as usize;
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let evictor = s.spawn(|| {
            let mut passes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                pager.evict_all().unwrap();
                passes += 1;
            }
            passes
        });
        let mut failed = 0;
        for generation in 2..2 + ROUNDS {
            fill(addr as *mut u64, 0..PAGES, generation);
            let child = fork_child(|| {
                let bad = mismatches(
                    addr as *const u64,
                    0..PAGES,
                    |i| value(i, generation),
                    "child",
                );
                i32::from(bad != 0)
            });
            let status = wait(child);
            if status.code() != Some(0) {
                eprintln!("round {generation}: child {status:?}");
                failed += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let passes = evictor.join().unwrap();
        eprintln!("{ROUNDS} forks, {passes} eviction passes meanwhile");
        assert_eq!(failed, 0, "children that read another generation");
    });
    assert_eq!(
        mismatches(p, 0..PAGES, |i| value(i, ROUNDS + 1), "parent"),
        0
    );
    pager.check_invariants().unwrap();
}
