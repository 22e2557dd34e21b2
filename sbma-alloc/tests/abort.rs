//! Scenarios that need a process of their own: bad input that must end it
//! with a one-line message, as glibc does (double and invalid frees, a bad
//! `SBMA_*` value for a global allocator), and `fork`. The parent
//! re-executes this binary once per scenario and checks how the child
//! ended.
//!
//! This binary's own global allocator is `SbmaAlloc::new()` (configured from
//! the environment), so every scenario also runs on it.

use sbma_alloc::SbmaAlloc;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

#[global_allocator]
static GLOBAL: SbmaAlloc = SbmaAlloc::new();

/// Each scenario: its name, its body, and the one line it must abort with
/// (empty: it must exit 0).
fn scenarios() -> Vec<(&'static str, fn(), &'static str)> {
    vec![
        (
            "double_free_by_the_owner",
            double_free_by_the_owner,
            "sbma: free(): double free 0x",
        ),
        (
            "double_free_by_another_thread",
            double_free_by_another_thread,
            "sbma: free(): double free 0x",
        ),
        (
            "freed_by_the_owner_then_by_another_thread",
            freed_by_the_owner_then_by_another_thread,
            "sbma: free(): double free 0x",
        ),
        (
            "freed_by_another_thread_then_by_the_owner",
            freed_by_another_thread_then_by_the_owner,
            "sbma: free(): double free 0x",
        ),
        (
            "double_free_with_the_free_cache_full",
            double_free_with_the_free_cache_full,
            "sbma: free(): double free 0x",
        ),
        (
            "free_of_a_claimed_block_never_handed_out",
            free_of_a_claimed_block_never_handed_out,
            "sbma: free(): double free 0x",
        ),
        (
            "free_of_an_interior_pointer",
            free_of_an_interior_pointer,
            "sbma: free(): invalid pointer 0x",
        ),
        (
            "double_free_of_a_large_object",
            double_free_of_a_large_object,
            "sbma: free(): double free or pointer to free memory 0x",
        ),
        (
            "free_inside_a_large_object",
            free_inside_a_large_object,
            "sbma: free(): invalid pointer 0x",
        ),
        (
            "bad_budget_variable",
            || unreachable!("aborts at start-up"),
            "sbma: invalid SBMA_BUDGET `lots`",
        ),
        (
            "bad_decay_variable",
            || unreachable!("aborts at start-up"),
            "sbma: SBMA_DECAY `bogus`",
        ),
        (
            "forked_child_allocates_and_exits_cleanly",
            forked_child_allocates_and_exits_cleanly,
            "",
        ),
        (
            "forked_child_frees_while_another_thread_used_the_run_lock",
            forked_child_frees_while_another_thread_used_the_run_lock,
            "",
        ),
    ]
}

/// A child forked while another thread was allocating and freeing large
/// objects (under the run allocator's lock) frees, shrinks and grows large
/// objects it inherited and asks for statistics (which take the run and
/// pool locks), 40 times: none hangs (each child has 10 s, by `alarm`) and
/// the data it kept is intact. Before a forked child stopped waiting for
/// locks it inherited held, it waited for them forever.
fn forked_child_frees_while_another_thread_used_the_run_lock() {
    const LARGE: usize = 3 << 19; // 1.5 MiB: past the heaps' large cache
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Never written: the loop is all run-lock work.
                let v: Vec<u8> = Vec::with_capacity(LARGE);
                std::hint::black_box(&v);
            }
        });
        let mut failed = Vec::new();
        for round in 0..40 {
            let mut mine: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8 + 1; LARGE]).collect();
            // SAFETY: the child only frees, resizes, checks and exits.
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                // SAFETY: a timer for this process only.
                unsafe { libc::alarm(10) };
                let ok = mine[2].iter().all(|&b| b == 3);
                drop(mine.pop());
                mine[1].truncate(LARGE / 3);
                mine[1].shrink_to_fit();
                mine[0].resize(2 * LARGE, 9);
                let ok = ok
                    && mine[0][..LARGE].iter().all(|&b| b == 1)
                    && mine[0][LARGE..].iter().all(|&b| b == 9)
                    && mine[1].iter().all(|&b| b == 2);
                drop(mine);
                let ok = ok && GLOBAL.stats().is_some();
                // SAFETY: leaving the child without the parent's exit code.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waiting for our child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                failed.push((round, status));
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(failed.is_empty(), "(round, child status): {failed:x?}");
    });
}

/// After `fork` the pager cannot page (the file is the parent's): the child
/// must still allocate (from glibc) and use what it inherited where
/// resident, and the parent must be unaffected.
fn forked_child_allocates_and_exits_cleanly() {
    let pager = GLOBAL.pager().unwrap();
    let before: Vec<u64> = (0..100_000).collect();
    // SAFETY: fork in a process whose other threads hold no lock we need
    // in the child (the child only allocates, computes and exits).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let v: Vec<u64> = (0..2_000_000).map(|i| i * 3).collect();
        let s: String = (0..1000)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        let ok = v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3)
            && s.len() == 1000
            && !GLOBAL.owns(v.as_ptr().cast())
            && before.iter().sum::<u64>() == 4_999_950_000;
        // SAFETY: leaving the child without running the parent's exit code.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status:#x}"
    );
    let after: Vec<u64> = (0..1000).collect();
    assert!(
        GLOBAL.owns(after.as_ptr().cast()),
        "the parent allocates from sbma again"
    );
    assert_eq!(after.iter().sum::<u64>(), 499_500);
    assert!(pager.stats().resident > 0);
}

fn double_free_by_the_owner() {
    let p = GLOBAL.malloc(40);
    // SAFETY: deliberately freed twice.
    unsafe {
        GLOBAL.free(p);
        GLOBAL.free(p);
    }
}

fn double_free_by_another_thread() {
    // The block's owner stays alive (and never collects) while another
    // thread frees the block twice.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        tx.send(GLOBAL.malloc(100) as usize).unwrap();
        done_rx.recv().ok();
    });
    let p = rx.recv().unwrap() as *mut u8;
    // SAFETY: deliberately freed twice.
    unsafe {
        GLOBAL.free(p);
        GLOBAL.free(p);
    }
    done_tx.send(()).unwrap();
    owner.join().unwrap();
}

/// The owner's free puts the block back into the word it has claimed
/// (not the span's bitmap): another thread's second free must still see it.
/// (A size no allocation of `thread::spawn` has, so the block is still
/// free when the second free comes.)
fn freed_by_the_owner_then_by_another_thread() {
    let p = GLOBAL.malloc(200) as usize;
    // SAFETY: freed once here, deliberately once more below.
    unsafe { GLOBAL.free(p as *mut u8) };
    std::thread::spawn(move || {
        // SAFETY: deliberately a second free.
        unsafe { GLOBAL.free(p as *mut u8) }
    })
    .join()
    .ok();
}

/// A remote free (not yet collected by the owner), then the owner's.
fn freed_by_another_thread_then_by_the_owner() {
    let p = GLOBAL.malloc(200) as usize;
    std::thread::spawn(move || {
        // SAFETY: freed once.
        unsafe { GLOBAL.free(p as *mut u8) }
    })
    .join()
    .unwrap();
    // SAFETY: deliberately a second free.
    unsafe { GLOBAL.free(p as *mut u8) };
}

/// The owner frees more blocks of one class than its free cache holds
/// (the rest go to the span's bitmap), then the last one again.
fn double_free_with_the_free_cache_full() {
    let blocks: Vec<*mut u8> = (0..100).map(|_| GLOBAL.malloc(300)).collect();
    // SAFETY: each freed once, the last deliberately twice.
    unsafe {
        for &p in &blocks {
            GLOBAL.free(p);
        }
        GLOBAL.free(blocks[99]);
    }
}

/// The block after a fresh one is among the blocks the heap claimed but
/// has not handed out: freeing it is freeing free memory. (A size no
/// allocation before has, so the claim is fresh.)
fn free_of_a_claimed_block_never_handed_out() {
    let p = GLOBAL.malloc(720);
    // SAFETY: `p` is live.
    let size = unsafe { GLOBAL.usable_size(p) }.expect("a block of ours");
    // SAFETY: deliberately a block that was never allocated.
    unsafe { GLOBAL.free(p.add(size)) };
}

fn free_of_an_interior_pointer() {
    let p = GLOBAL.malloc(100);
    // SAFETY: deliberately invalid.
    unsafe { GLOBAL.free(p.add(16)) };
}

fn double_free_of_a_large_object() {
    let p = GLOBAL.malloc(1 << 20);
    // SAFETY: deliberately freed twice.
    unsafe {
        GLOBAL.free(p);
        GLOBAL.free(p);
    }
}

fn free_inside_a_large_object() {
    let p = GLOBAL.malloc(1 << 20);
    // SAFETY: deliberately invalid (a span boundary inside the object).
    unsafe { GLOBAL.free(p.add(256 << 10)) };
}

fn main() {
    if let Ok(name) = std::env::var("SBMA_TEST_SCENARIO") {
        let (_, f, _) = scenarios()
            .into_iter()
            .find(|s| s.0 == name)
            .expect("unknown scenario");
        f();
        std::process::exit(0);
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed) = (0, 0);
    for (name, _, text) in scenarios() {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        // Not `current_exe()`: its readlink(2) writes into a heap buffer,
        // which the kernel cannot fault in under the signal backend (EFAULT
        // when the page is not resident; see the crate docs).
        let mut cmd = Command::new(std::env::args_os().next().unwrap());
        cmd.env("SBMA_TEST_SCENARIO", name);
        match name {
            "bad_budget_variable" => cmd.env("SBMA_BUDGET", "lots"),
            "bad_decay_variable" => cmd.env("SBMA_DECAY", "bogus"),
            _ => &mut cmd,
        };
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines = stderr.lines().filter(|l| l.starts_with("sbma: ")).count();
        let ok = if text.is_empty() {
            out.status.code() == Some(0)
        } else {
            out.status.signal() == Some(libc::SIGABRT) && stderr.contains(text) && lines == 1
        };
        if ok {
            passed += 1;
            println!("test {name} ... ok");
        } else {
            failed += 1;
            println!(
                "test {name} ... FAILED: {:?}\n--- stderr ---\n{stderr}",
                out.status
            );
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
