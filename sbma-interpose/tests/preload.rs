//! Unmodified programs under the `LD_PRELOAD` shim built by this build
//! (`target/*/deps/libsbma_interpose.so`), with budgets well below their
//! heaps: the output must equal the run without the shim, and the
//! statistics must show pages going to disk.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn shim() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    let so = deps.join("libsbma_interpose.so");
    assert!(so.exists(), "{} not built", so.display());
    so
}

fn tmp() -> PathBuf {
    std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// Runs `cmd` without and with the shim (`env` added); returns both.
/// Runs `cmd` plainly and under the shim on every fault backend available
/// (`SBMA_BACKEND=signal`, and `uffd` where this process may open a
/// userfaultfd).
fn both(cmd: &[&str], env: &[(&str, &str)]) -> (Output, Vec<(&'static str, Output)>) {
    let plain = Command::new(cmd[0]).args(&cmd[1..]).output().unwrap();
    let (backends, missing) = sbma_alloc::sbma_pager::Backend::usable();
    if let Some(e) = missing {
        println!("SKIPPED: the uffd backend: {e}");
    }
    let shimmed = backends
        .into_iter()
        .map(|b| b.name())
        .map(|backend| {
            let mut c = Command::new(cmd[0]);
            c.args(&cmd[1..])
                .env("LD_PRELOAD", shim())
                .env("SBMA_STATS", "1")
                .env("SBMA_BACKEND", backend);
            for (k, v) in env {
                c.env(k, v);
            }
            (backend, c.output().unwrap())
        })
        .collect();
    (plain, shimmed)
}

fn stats_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rfind(|l| l.starts_with("sbma (") && l.contains("pages evicted"))
        .unwrap_or_default()
        .to_owned()
}

/// Pages evicted, from the last statistics line.
fn evicted(line: &str) -> u64 {
    line.split(", ")
        .find(|f| f.ends_with("pages evicted"))
        .and_then(|f| f.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Compiles `tests/programs/<name>.c`; returns the executable's path.
fn compile(name: &str) -> PathBuf {
    compile_with(name, &[])
}

/// [`compile`] with extra compiler arguments (`-shared -fPIC` for a
/// library).
fn compile_with(name: &str, extra: &[&str]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/programs/{name}.c"));
    let exe = tmp().join(format!("sbma-{name}-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = Command::new(&cc)
        .args(["-O1", "-Wall", "-Werror", "-pthread"])
        .args(extra)
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{name}.c does not compile");
    exe
}

/// Compiles `tests/programs/<name>.c`, runs it plainly and under the shim
/// with `SBMA_BUDGET=budget`: see [`same_output_and_paged`].
fn c_program_same_output_and_paged(name: &str, budget: &str) {
    let exe = compile(name);
    let runs = both(&[exe.to_str().unwrap()], &[("SBMA_BUDGET", budget)]);
    let _ = std::fs::remove_file(&exe);
    same_output_and_paged(runs);
}

#[test]
fn c_program_heap_four_times_the_budget() {
    c_program_same_output_and_paged("heap", "16M");
}

/// Without serving libc's and ld.so's own allocations from glibc, a new
/// thread died of SIGSEGV reading its TLS vector from an evicted page with
/// its signals blocked (found with coreutils `sort`).
#[test]
fn threads_start_while_the_heap_is_pushed_out() {
    c_program_same_output_and_paged("threads", "8M");
}

/// fork with the heap six times the budget: three children and a
/// grandchild read the heap of their fork while the parent rewrites all of
/// it, then write part of it, `read(2)` into it, allocate and run a shell
/// (`tests/programs/fork.c`). Before fork snapshots, the first child read
/// of an evicted block aborted the child.
#[test]
fn forked_children_read_their_heap_out_of_core() {
    c_program_same_output_and_paged("fork", "8M");
}

/// Exit paths and dlopen with a heap eight times the budget
/// (`tests/programs/lifecycle.c`, `plugin.c`): a library whose constructor
/// and destructor allocate and free is dlopen'd, used, dlclose'd and
/// loaded again; a thread exits leaving blocks for main to free; an atexit
/// handler and a destructor check and free memory pushed out long before;
/// the process ends by returning from main, and by `exit` on another
/// thread.
#[test]
fn dlopen_and_exit_paths_out_of_core() {
    let plugin = compile_with("plugin", &["-shared", "-fPIC"]);
    let exe = compile("lifecycle");
    for how in ["return", "thread-exit"] {
        let runs = both(
            &[exe.to_str().unwrap(), plugin.to_str().unwrap(), how],
            &[("SBMA_BUDGET", "8M")],
        );
        assert!(
            String::from_utf8_lossy(&runs.0.stdout).ends_with("destructor: ok\n"),
            "{how}: {:?}",
            runs.0
        );
        same_output_and_paged(runs);
    }
    let _ = std::fs::remove_file(&exe);
    let _ = std::fs::remove_file(&plugin);
}

/// git: init, add and commit 1,500 generated files, a second commit, fsck,
/// gc and fsck again, every git process (and the shell running them) on a
/// 1 MiB budget (at 2 MiB, since the allocator reuses blocks better, the
/// busiest process evicts only ~800 pages): the same commit ids and object counts as without the
/// shim. git's `run_command` children touch the parent's heap between
/// fork and exec (they aborted at 2-4 MiB before fork snapshots).
#[test]
fn git_repository_out_of_core() {
    if !installed("git") {
        return;
    }
    let script = r#"set -e
        export GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z
        export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
        top=$(mktemp -d "${TMPDIR:-/tmp}/sbma-git.XXXXXX"); trap 'rm -rf "$top"' EXIT
        cd "$top"; git init -q repo; cd repo
        git config user.email t@example.com; git config user.name t
        i=0
        while [ $i -lt 1500 ]; do
            mkdir -p d$((i % 20)); seq $i $((i + 600)) > d$((i % 20))/f$i.txt; i=$((i + 1))
        done
        git add .; git commit -q -m one
        for f in d1/*.txt; do echo more >> $f; done
        git commit -qam two
        git fsck --full --strict; git log --format='%H %s'
        git gc -q; git fsck --full; git count-objects -v | grep in-pack"#;
    let runs = both(&["sh", "-c", script], &[("SBMA_BUDGET", "1M")]);
    assert!(
        String::from_utf8_lossy(&runs.0.stdout).contains(" two\n"),
        "{:?}",
        runs.0
    );
    same_output_and_one_process_paged(runs);
}

/// coreutils `sort` of 256 MB (sort's own peak ~750 MB: the text, then
/// its line table) through a 64 MiB budget, the output hashed by
/// `md5sum`: the same hash. The lines are in order but shuffled within
/// blocks of 2,000, so the merge sort's comparisons stay mostly local; a
/// random order of this size thrashes through any small budget (one fault
/// per comparison: 135 MB of random lines took 8 min, as it would with
/// swap).
#[test]
fn coreutils_sort_hundreds_of_mb_out_of_core() {
    let path = tmp().join(format!("sbma-bigsort-{}.txt", std::process::id()));
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let (mut written, mut first, mut x) = (0usize, 0u64, 0x9E37_79B9_7F4A_7C15u64);
        let mut block: Vec<u64> = Vec::with_capacity(2000);
        while written < 256 << 20 {
            block.clear();
            block.extend(first..first + 2000);
            for i in (1..block.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                block.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for &k in &block {
                let line = format!("{k:012} {}\n", "x".repeat((k % 40) as usize));
                written += line.len();
                out.write_all(line.as_bytes()).unwrap();
            }
            first += 2000;
        }
    }
    let cmd = format!("LC_ALL=C sort {} | md5sum", path.display());
    let runs = both(&["sh", "-c", &cmd], &[("SBMA_BUDGET", "64M")]);
    let _ = std::fs::remove_file(&path);
    same_output_and_one_process_paged(runs);
}

/// Every run succeeded with the same output, and in each shimmed one some
/// process (of a shell's several) sent more than 1000 pages to disk.
fn same_output_and_one_process_paged((plain, shimmed): (Output, Vec<(&'static str, Output)>)) {
    assert!(plain.status.success(), "{plain:?}");
    for (backend, out) in shimmed {
        same_as_plain(&plain, backend, &out);
        let evicted = max_evicted(&out.stderr);
        assert!(
            evicted > 1000,
            "{backend}: pages must go to disk: {evicted}"
        );
    }
}

/// Every run succeeded with the same output, and each shimmed one sent
/// more than 1000 pages to disk.
fn same_output_and_paged(runs: (Output, Vec<(&'static str, Output)>)) {
    for line in same_output(runs) {
        assert!(evicted(&line) > 1000, "pages must go to disk: {line}");
    }
}

/// A shimmed run succeeded and printed what the plain run printed.
fn same_as_plain(plain: &Output, backend: &str, out: &Output) {
    assert!(
        out.status.success(),
        "under the shim ({backend}): {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(plain.stdout, out.stdout, "{backend}");
}

/// Every run succeeded with the same output; returns each shimmed run's
/// last statistics line (which names its backend).
fn same_output((plain, shimmed): (Output, Vec<(&'static str, Output)>)) -> Vec<String> {
    assert!(plain.status.success(), "{plain:?}");
    shimmed
        .into_iter()
        .map(|(backend, out)| {
            same_as_plain(&plain, backend, &out);
            let line = stats_line(&out.stderr);
            assert!(line.starts_with(&format!("sbma ({backend}): ")), "{line}");
            eprintln!("{line}");
            line
        })
        .collect()
}

#[test]
fn bad_variable_stops_the_program_with_one_line() {
    for (var, value) in [
        ("SBMA_BUDGET", "lots"),
        ("SBMA_MIN_SIZE", "x"),
        ("SBMA_STATS", "yes"),
    ] {
        let out = Command::new("/bin/true")
            .env("LD_PRELOAD", shim())
            .env(var, value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{var}={value} accepted");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("sbma: ") && err.contains(var), "{err}");
    }
}

#[test]
fn python_builds_data_four_times_the_budget() {
    let python = "/usr/bin/python3";
    if !Path::new(python).exists() {
        println!("skipped: {python} is not installed (.ci/run installs it)");
        return;
    }
    let script = r#"
import hashlib
h = hashlib.sha256()
data = [bytes([i % 251]) * 1000 for i in range(60_000)]
d = {i: str(i) * 3 for i in range(200_000)}
lst = list(range(1_000_000))
for b in data[::97]:
    h.update(b)
h.update(str(sum(lst)).encode() + str(len(d)).encode() + d[123456].encode())
print(h.hexdigest())
"#;
    same_output_and_paged(both(&[python, "-c", script], &[("SBMA_BUDGET", "16M")]));
}

/// coreutils `sort` (stdio, fread_unlocked, two threads) over ~8 MB of
/// lines through 8 MiB: same output. Before libc's own allocations were
/// served by glibc it failed with "read failed: Bad address" (stdio
/// refilling a buffer in sbma memory with an internal read) and, with more
/// data, died of SIGSEGV in a new thread.
#[test]
fn coreutils_sort_out_of_core() {
    let path = tmp().join(format!("sbma-sort-{}.txt", std::process::id()));
    let mut text = String::with_capacity(8 << 20);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    while text.len() < 8 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        text.push_str(&format!("{x:016x}{:x}\n", x.rotate_left(17) % 1_000_003));
    }
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    let runs = both(&["sort", "--parallel=2", p], &[("SBMA_BUDGET", "8M")]);
    let _ = std::fs::remove_file(&path);
    same_output_and_paged(runs);
}

/// xz's worker threads block every signal; a thread with SIGSEGV blocked
/// that touches a page which is not resident kills the process, so the shim
/// never lets SIGSEGV or SIGBUS be blocked. (Without that, `xz -T2` died at
/// its first touch of fresh heap memory.)
#[test]
fn xz_threads_that_block_all_signals() {
    if !Path::new("/usr/bin/xz").exists() {
        println!("skipped: /usr/bin/xz is not installed (.ci/run installs it)");
        return;
    }
    let path = tmp().join(format!("sbma-xz-{}.txt", std::process::id()));
    let text: String = (0..200_000u64)
        .map(|i| format!("{:x} {}\n", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i % 977))
        .collect();
    std::fs::write(&path, text).unwrap();
    let cmd = format!("xz -T2 -1 -c {} | xz -d -T2", path.display());
    let lines = same_output(both(&["/bin/sh", "-c", &cmd], &[("SBMA_BUDGET", "16M")]));
    let _ = std::fs::remove_file(&path);
    assert!(
        lines.iter().all(|l| l.contains("write faults")),
        "{lines:?}"
    );
}

/// `SBMA_MIN_SIZE` keeps smaller requests with glibc: sbma then holds only
/// the large blocks (its `mallinfo2` counts the bytes of its live blocks).
#[test]
fn min_size_leaves_small_requests_to_glibc() {
    let exe = compile("minsize");
    let held = |min: Option<&str>| -> usize {
        let mut c = Command::new(&exe);
        c.env("LD_PRELOAD", shim()).env("SBMA_BUDGET", "64M");
        if let Some(m) = min {
            c.env("SBMA_MIN_SIZE", m);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let all = held(None);
    let large_only = held(Some("4K"));
    let _ = std::fs::remove_file(&exe);
    let (small, large) = (10_000 * 112, 10 << 20);
    assert!(all >= small + large, "everything in sbma: {all}");
    assert!(
        large_only >= large && large_only < large + small / 10,
        "only large blocks in sbma: {large_only}"
    );
}

/// sbma's own bookkeeping is not resident up front: page tables and policy
/// lists for the 16 GiB arena come from zeroed memory that costs nothing
/// until used (before: +15 MiB for any program, with an 8 MiB budget).
#[test]
fn start_up_costs_little_memory() {
    let exe = compile("rss");
    let (plain, shimmed) = both(&[exe.to_str().unwrap()], &[("SBMA_BUDGET", "8M")]);
    let _ = std::fs::remove_file(&exe);
    let kib = |o: &Output| -> i64 {
        assert!(o.status.success(), "{o:?}");
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let base = kib(&plain);
    for (backend, out) in &shimmed {
        let extra = kib(out) - base;
        println!("{backend}: {extra} KiB more resident than without the shim");
        assert!(
            extra < 6 << 10,
            "{backend}: the shim costs {extra} KiB at start-up"
        );
    }
}

/// glibc's `__libc_*` allocator names are the shim's too: their blocks are
/// sbma's (counted by its `mallinfo2`) and mix with `malloc`/`free`; the
/// shim's own glibc fallback still reaches glibc (no recursion).
#[test]
fn libc_names_allocate_from_sbma() {
    let exe = compile("libcnames");
    let out = Command::new(&exe)
        .env("LD_PRELOAD", shim())
        .env("SBMA_BUDGET", "8M")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&exe);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("libc names: ok "),
        "{out:?}"
    );
}

/// The most pages any process of a run evicted (every process of a
/// pipeline or script prints its own statistics line).
fn max_evicted(stderr: &[u8]) -> u64 {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("sbma (") && l.contains("pages evicted"))
        .map(evicted)
        .max()
        .unwrap_or(0)
}

/// `program` is installed, or the test says why it skips.
fn installed(program: &str) -> bool {
    let found = Path::new(program).exists()
        || std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).exists()));
    if !found {
        println!("SKIPPED: {program} is not installed (.ci/run installs it)");
    }
    found
}

/// A slice of CPython's own test suite (lists, dicts, bytes, regular
/// expressions) passes with the interpreter's heap four times its budget.
/// Found here: Python's `faulthandler` installs a SIGSEGV handler and an
/// alternate signal stack on the heap; both used to break the signal
/// backend (libsbma's `sigaction` and `sigaltstack`, `sbma-ffi/src/signal.rs`).
#[test]
fn cpython_test_suite_slice_out_of_core() {
    let python = "/usr/bin/python3";
    if !installed(python) {
        return;
    }
    let has_tests = Command::new(python)
        .args(["-c", "import test.test_list, test.test_re"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tests {
        println!(
            "SKIPPED: CPython's test suite is not installed (Debian: libpython3.X-testsuite; .ci/run installs it)"
        );
        return;
    }
    let cmd = [
        python,
        "-m",
        "test",
        "test_list",
        "test_dict",
        "test_bytes",
        "test_re",
        "-q",
    ];
    let (plain, shimmed) = both(&cmd, &[("SBMA_BUDGET", "8M")]);
    assert!(plain.status.success(), "{plain:?}");
    for (backend, out) in shimmed {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("Tests result: SUCCESS"),
            "under the shim ({backend}): {:?}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let evicted = max_evicted(&out.stderr);
        assert!(
            evicted > 1000,
            "{backend}: pages must go to disk: {evicted}"
        );
    }
}

/// sqlite3: 300,000 rows inserted into an in-memory database, indexed and
/// queried, the database on the heap (~17 MB) through a 4 MiB budget.
#[test]
fn sqlite3_300k_rows_out_of_core() {
    if !installed("sqlite3") {
        return;
    }
    let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER); \
        WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) \
        INSERT INTO t SELECT x, printf('%08x', (x * 2654435761) % 4294967296), x % 977 FROM c; \
        CREATE INDEX ik ON t(k); \
        SELECT count(*), sum(v), max(k), min(k) FROM t; \
        SELECT k, v FROM t WHERE k BETWEEN '10000000' AND '10400000' ORDER BY k LIMIT 3; \
        SELECT v, count(*) FROM t GROUP BY v ORDER BY 2 DESC, 1 LIMIT 2;";
    same_output_and_paged(both(
        &["sqlite3", ":memory:", sql],
        &[("SBMA_BUDGET", "4M")],
    ));
}

/// perl: an array of 300,000 strings and a hash of 20,000 entries (~40 MB)
/// through an 8 MiB budget. (A hash of 100,000 random-length strings took
/// 13 s at 16 MiB: perl's allocation pattern scatters them, and random
/// access through 16 KiB pages thrashes; see docs/benchmarks.md.)
#[test]
fn perl_data_out_of_core() {
    if !installed("perl") {
        return;
    }
    let script = r#"my @a; push @a, "x" x ($_ % 100) for 1..300000;
        my $s = 0; $s += length($_) for @a;
        my %h; $h{$_} = $_ for 1..20000; print "$s ", scalar(keys %h), "\n";"#;
    same_output_and_paged(both(&["perl", "-e", script], &[("SBMA_BUDGET", "8M")]));
}

/// gcc: a generated C file of 500 functions compiled with -O2 gives a
/// byte-identical object with every process (the shell, gcc's driver, cc1,
/// as) on a 4 MiB budget (cc1's own garbage-collected heap is mmap'd, not
/// malloc'd: its malloc'd part is what pages).
#[test]
fn gcc_object_is_byte_identical_out_of_core() {
    if !installed("gcc") {
        return;
    }
    let dir = tmp().join(format!("sbma-gcc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut src = String::from("#include <stdint.h>\n");
    let mut seed = 7u64;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed >> 33
    };
    for i in 0..500 {
        src += &format!("uint64_t f{i}(uint64_t x) {{\n  switch (x % 7) {{\n");
        for k in 0..7 {
            src += &format!(
                "  case {k}: x = x * {}u + {}u; x ^= x >> {}; break;\n",
                next() | 1,
                next(),
                next() % 62 + 1
            );
        }
        src += "  }\n";
        src += &if i == 0 {
            "  return x;\n}\n".to_owned()
        } else {
            format!("  return x + f{}(x >> 3);\n}}\n", i - 1)
        };
    }
    let c = dir.join("gen.c");
    std::fs::write(&c, src).unwrap();
    // Through a shell, as make would run it: the shell's child touches
    // the shell's heap between fork and exec.
    let object = |name: &str| dir.join(format!("{name}.o"));
    let line = |name: &str| {
        format!(
            "gcc -O2 -c {} -o {} && test -s {}",
            c.display(),
            object(name).display(),
            object(name).display()
        )
    };
    let plain = Command::new("sh")
        .args(["-c", &line("plain")])
        .output()
        .unwrap();
    assert!(plain.status.success(), "{plain:?}");
    let reference = std::fs::read(object("plain")).unwrap();
    let (backends, _) = sbma_alloc::sbma_pager::Backend::usable();
    for backend in backends.iter().map(|b| b.name()) {
        let out = Command::new("sh")
            .args(["-c", &line(backend)])
            .env("LD_PRELOAD", shim())
            .env("SBMA_STATS", "1")
            .env("SBMA_BACKEND", backend)
            .env("SBMA_BUDGET", "4M")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{backend}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            std::fs::read(object(backend)).unwrap() == reference,
            "{backend}: the object differs from the one built without the shim"
        );
        let evicted = max_evicted(&out.stderr);
        assert!(evicted > 1000, "{backend}: cc1 must page: {evicted}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
