//! The `sbma` binary as a user runs it.

use std::process::Command;

fn sbma(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sbma"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn demo_verifies_every_byte_out_of_core() {
    for policy in ["clock", "lru", "fifo", "all"] {
        for sim in [false, true] {
            let mut args = vec![
                "demo",
                "--size",
                "8M",
                "--budget",
                "2M",
                "--page-size",
                "16K",
                "--policy",
                policy,
            ];
            if sim {
                args.push("--sim");
            }
            let (code, out, err) = sbma(&args);
            assert_eq!(code, 0, "{policy} sim={sim}: {out}{err}");
            assert!(out.contains("through a 2 MiB budget (4.0x)"), "{out}");
            // Auto: uffd where this process may open a userfaultfd.
            let backend = if sim {
                "backend: sim"
            } else if sbma_pager::Backend::Uffd.available().is_ok() {
                "backend: uffd"
            } else {
                "backend: signal"
            };
            assert!(out.contains(backend), "{out}");
            assert!(out.contains("(0 mismatches)"), "{out}");
            // The background writer keeps some of the budget free, so the
            // peak may stay a little below it; it must never exceed it.
            let held: f64 = out
                .split("peak memory held ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no peak in:\n{out}"));
            assert!(
                held > 1.0 && held <= 2.0,
                "{policy}: peak memory held {held} MiB for a 2 MiB budget\n{out}"
            );
        }
    }
}

#[test]
fn bad_input_is_a_one_line_error() {
    for (args, needle) in [
        (&["demo", "--budget", "1X"][..], "--budget 1X: unknown unit"),
        (
            &["demo", "--policy", "lfu"][..],
            "--policy lfu: unknown eviction policy",
        ),
        (
            &["demo", "--page-size", "3K"][..],
            "--page-size: page size is not a power of two",
        ),
        (
            &["demo", "--budget", "1K"][..],
            "budget of 1024 bytes is too small",
        ),
        (&["demo", "--sim", "--budget", "1K"][..], "cannot hold one"),
        (&["demo", "--size"][..], "--size needs a value"),
        (
            &["demo", "--frobnicate", "1"][..],
            "unknown option --frobnicate",
        ),
        (
            &["run", "--budget", "lots", "--", "true"][..],
            "--budget `lots`",
        ),
        (
            &["run", "--policy", "lfu", "--", "true"][..],
            "--policy `lfu`",
        ),
        (&["run", "--stats=xml", "--", "true"][..], "--stats=`xml`"),
        (
            &["run", "--group", "a/b", "--", "true"][..],
            "--group `a/b`: expected 1-200 characters",
        ),
        (
            &["run", "--backend", "mmap", "--", "true"][..],
            "--backend `mmap`: expected auto, signal or uffd",
        ),
        (&["run", "--budget", "16M"][..], "run needs a program"),
        (
            &["run", "--", "/nonexistent/prog"][..],
            "cannot run `/nonexistent/prog`",
        ),
        (&["bogus"][..], "unknown command `bogus`"),
        (&[][..], "no command given"),
    ] {
        let (code, _, err) = sbma(args);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("sbma: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let (code, out, _) = sbma(&["help"]);
    assert_eq!(code, 0);
    assert!(out.contains("usage: sbma"));
}

/// The shim this build made, where `sbma run` looks for it (its build tree).
fn shim_built() -> bool {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_sbma"));
    let dir = exe.parent().unwrap();
    let found =
        dir.join("deps/libsbma_interpose.so").exists() || dir.join("libsbma_interpose.so").exists();
    assert!(
        found,
        "libsbma_interpose.so is not built: run `cargo test --workspace` (or build sbma-interpose)"
    );
    found
}

#[test]
fn run_passes_the_exit_status_through() {
    assert!(shim_built());
    let (code, _, _) = sbma(&["run", "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(code, 7);
    // The program replaces `sbma run`: its death by a signal is the
    // parent's to see (mpirun signals and waits for its ranks this way).
    let status = Command::new(env!("CARGO_BIN_EXE_sbma"))
        .args(["run", "--", "/bin/sh", "-c", "kill -TERM $$"])
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15), // SIGTERM
        "death by SIGTERM, seen by the parent"
    );
}

#[test]
fn run_puts_a_program_heap_on_disk_and_reports_it() {
    assert!(shim_built());
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        println!("skipped: {python} is not installed (.ci/run installs it)");
        return;
    }
    let script = "x = [bytes([i % 256]) * 1000 for i in range(80000)]; print(sum(b[0] for b in x))";
    let expected = (0..80000u64).map(|i| i % 256).sum::<u64>().to_string();
    // Both backends where uffd is available; the stats line names the one
    // that ran.
    let (backends, missing) = sbma_pager::Backend::usable();
    if let Some(e) = missing {
        println!("SKIPPED: the uffd backend: {e}");
    }
    for backend in backends.iter().map(|b| b.name()) {
        let (code, out, err) = sbma(&[
            "run",
            "--budget",
            "16M",
            "--backend",
            backend,
            "--stats",
            "--",
            python,
            "-c",
            script,
        ]);
        assert_eq!(code, 0, "{err}");
        assert_eq!(out.trim(), expected);
        let line = err
            .lines()
            .rfind(|l| l.starts_with(&format!("sbma ({backend}): ")) && l.contains("pages evicted"))
            .unwrap_or_default();
        let evicted: u64 = line
            .split(", ")
            .find(|f| f.ends_with("pages evicted"))
            .and_then(|f| f.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            evicted > 1000,
            "{backend}: 80 MB through 16 MiB must page: {err}"
        );
    }
    let (code, _, err) = sbma(&["run", "--stats=json", "--", python, "-c", "pass"]);
    assert_eq!(code, 0);
    assert!(err.lines().any(|l| l.starts_with("{\"backend\":")), "{err}");
}

/// Two programs run with the same `--group` share one budget: together they
/// need twice it, both finish with the right output, and their statistics
/// name the group.
#[test]
fn run_group_shares_one_budget() {
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        println!("skipped: {python} is not installed (.ci/run installs it)");
        return;
    }
    let group = format!("cli-{}", std::process::id());
    let script = "x = [bytes([i % 256]) * 1000 for i in range(20000)]; print(sum(b[0] for b in x))";
    let expected = (0..20000u64).map(|i| i % 256).sum::<u64>().to_string();
    let cmd = format!("{python} -c '{script}' & {python} -c '{script}'; wait");
    let (code, out, err) = sbma(&[
        "run", "--budget", "16M", "--group", &group, "--stats", "--", "/bin/sh", "-c", &cmd,
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, [expected.as_str(), expected.as_str()], "{err}");
    let group_lines = err
        .lines()
        .filter(|l| l.starts_with(&format!("sbma: group {group}: ")))
        .count();
    assert!(group_lines >= 2, "each python reports the group: {err}");
    // The shell is a member too (the shim starts in every process) and ends
    // with _exit, after the pythons left: no exit handler removes the
    // segment. The next group started on the machine collects it.
    let collector = sbma_pager::Group::join(&format!("{group}-collector"), 1 << 20).unwrap();
    assert!(
        !std::path::Path::new(&format!("/dev/shm/sbma-group-{group}")).exists(),
        "segment left behind after the next group started"
    );
    drop(collector);
}

/// A group whose every member is killed leaves nothing in /dev/shm: the
/// janitor `sbma run --group` starts removes the segment once the program
/// and all other members are dead, without waiting for another group.
#[test]
fn run_group_killed_whole_leaves_nothing_behind() {
    assert!(shim_built());
    let group = format!("cli-killed-{}", std::process::id());
    let segment = std::path::PathBuf::from(format!("/dev/shm/sbma-group-{group}"));
    // The shell is a member (the shim joins at start-up); it kills itself
    // with SIGKILL, so no exit handler runs.
    let status = Command::new(env!("CARGO_BIN_EXE_sbma"))
        .args(["run", "--group", &group, "--budget", "16M", "--"])
        .args([
            "/bin/sh",
            "-c",
            "test -e /dev/shm/sbma-group-$0 && kill -KILL $$",
            &group,
        ])
        .status()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the member saw its group and was killed"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while segment.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        !segment.exists(),
        "the killed group's segment is still there after 10 s"
    );
}

/// `sbma run` bounds a Python program's whole heap: CPython's small objects
/// live in arenas it maps itself unless `PYTHONMALLOC=malloc`, which `sbma
/// run` sets. A million small strings (~80 MB resident without sbma) run
/// in a 16 MiB budget with the peak resident size well below the data.
#[test]
fn run_bounds_python_small_objects() {
    assert!(shim_built());
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        println!("skipped: {python} is not installed (.ci/run installs it)");
        return;
    }
    let script = "import re; l = [str(i) for i in range(1_000_000)]; print(sum(map(len, l))); \
        print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))";
    let hwm = |extra: &[(&str, &str)]| -> (String, u64) {
        let out = Command::new(env!("CARGO_BIN_EXE_sbma"))
            .args(["run", "--budget", "16M", "--", python, "-c", script])
            .envs(extra.iter().copied())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut lines = text.lines();
        let sum = lines.next().unwrap_or_default().to_owned();
        let kib = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        (sum, kib)
    };
    let (sum, bounded) = hwm(&[]);
    assert_eq!(sum, "5888890");
    // The user's own choice wins: with pymalloc the arenas stay outside.
    let (_, unbounded) = hwm(&[("PYTHONMALLOC", "pymalloc")]);
    println!(
        "peak resident: {bounded} KiB under sbma run, {unbounded} KiB with PYTHONMALLOC=pymalloc"
    );
    assert!(
        bounded < 48 << 10,
        "16 MiB budget, peak {bounded} KiB: the heap is not bounded"
    );
    assert!(unbounded > bounded + (24 << 10), "{unbounded} vs {bounded}");
}
