//! Scenarios that must run in a process of their own (handlers, deaths by
//! signal, forks): the test binary re-executes itself once per scenario
//! and backend and checks how each child ended.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

/// How a scenario's process must end.
pub enum Expect {
    /// Exit status 0.
    Exit0,
    /// Killed by the signal, with the text on standard error.
    Signal(i32, &'static str),
    /// Killed by the signal; under uffd the text is on standard error
    /// exactly once (the signal backend's death is the kernel's own).
    SignalSaidOnceUnderUffd(i32, &'static str),
}

/// One scenario: its name, the function run in its process, and how that
/// process must end.
pub type Scenario = (&'static str, fn(), Expect);

/// The binary's `main`: in a scenario process, runs the scenario named by
/// `SBMA_TEST_SCENARIO`; otherwise runs every scenario (or those whose
/// name contains a command-line filter) once per available backend,
/// prints a libtest-like report and exits non-zero on a failure.
pub fn main(scenarios: fn() -> Vec<Scenario>) {
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
    let backends: Vec<&str> = super::backends()
        .into_iter()
        .map(|b| match b {
            super::Variant::Signal(_) => "signal",
            super::Variant::Uffd => "uffd",
        })
        .collect();
    for (name, _, expect) in scenarios() {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        for backend in &backends {
            let out = Command::new(std::env::current_exe().unwrap())
                .env("SBMA_TEST_SCENARIO", name)
                .env("SBMA_TEST_BACKEND", backend)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let ok = match expect {
                Expect::Exit0 => out.status.code() == Some(0),
                Expect::Signal(sig, text) => {
                    out.status.signal() == Some(sig) && stderr.contains(text)
                }
                Expect::SignalSaidOnceUnderUffd(sig, text) => {
                    out.status.signal() == Some(sig)
                        && (*backend != "uffd" || stderr.matches(text).count() == 1)
                }
            };
            let name = format!("{name} [{backend}]");
            if ok {
                passed += 1;
                println!("test {name} ... ok");
            } else {
                failed += 1;
                println!(
                    "test {name} ... FAILED: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{stderr}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout)
                );
            }
        }
    }
    println!("\n{passed} passed, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}

/// The backend the runner chose for this scenario process.
pub fn backend() -> sbma_pager::Backend {
    std::env::var("SBMA_TEST_BACKEND")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(sbma_pager::Backend::Signal)
}

/// Forks a child that runs `f` and leaves with its result as exit code
/// (`_exit`: none of the parent's exit work runs twice); returns how it
/// ended.
pub fn in_child(f: impl FnOnce() -> i32) -> std::process::ExitStatus {
    wait(fork_child(f))
}

/// Forks a child that runs `f` (see [`in_child`]); returns its pid.
pub fn fork_child(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: scenario processes fork only where the test says so; the
    // child runs `f` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = f();
        // SAFETY: leave the child without running the parent's exit work.
        unsafe { libc::_exit(code) };
    }
    pid
}

/// Waits for child `pid`; returns how it ended.
pub fn wait(pid: libc::pid_t) -> std::process::ExitStatus {
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    std::process::ExitStatus::from_raw(status)
}
