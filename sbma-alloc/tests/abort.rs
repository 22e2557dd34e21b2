//! Bad input that must end the process with a one-line message, as glibc
//! does: double and invalid frees, and a bad `SBMA_*` value for a global
//! allocator. The parent re-executes this binary once per scenario and
//! checks how the child ended.
//!
//! This binary's own global allocator is `SbmaAlloc::new()` (configured from
//! the environment), so every scenario also runs on it.

use sbma_alloc::SbmaAlloc;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

#[global_allocator]
static GLOBAL: SbmaAlloc = SbmaAlloc::new();

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
    ]
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
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.env("SBMA_TEST_SCENARIO", name);
        if name == "bad_budget_variable" {
            cmd.env("SBMA_BUDGET", "lots");
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines = stderr.lines().filter(|l| l.starts_with("sbma: ")).count();
        if out.status.signal() == Some(libc::SIGABRT) && stderr.contains(text) && lines == 1 {
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
