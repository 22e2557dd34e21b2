//! The preload shim's cost and its out-of-core speed (issue 5).
//!
//! 1. Overhead: each program plainly and under `sbma run --budget 4G`
//!    (larger than the program: nothing pages), best of `--runs` wall
//!    times; ratio = shim / plain (1.00 = free, lower is better).
//! 2. Out of core: a python3 workload (lists, a dict, bytes objects, a
//!    sort, a checksum; ~310 MB peak) with the memory limit at a quarter
//!    of its peak, in one memory cgroup for both modes: `swap` (plain
//!    python, the kernel swapping to a swap file) and `sbma` (`sbma run
//!    --budget` = the limit less 24 MiB for the interpreter, its libraries and sbma's own tables). Same output
//!    required; ratio = swap / sbma (higher is better).
//!
//! Run: `cargo bench -p sbma-benches --bench shim -- [--runs 3]
//! [--backend auto] [--only overhead|outofcore]` (root for part 2).
#![allow(missing_docs, reason = "a benchmark binary")]

use sbma_benches::limit::{Limit, command_in, drop_caches};
use sbma_benches::tools::{build_sbma, on_path};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

const PYTHON_WORK: &str = r#"
import hashlib
n = 3_000_000
a = [i * 7 % 1000003 for i in range(n)]
d = {i: str(i) for i in range(0, n, 3)}
b = [bytes([i % 256]) * 100 for i in range(n // 10)]
a.sort()
h = hashlib.sha256()
for x in a[::1000]:
    h.update(x.to_bytes(8, "little"))
for k in range(0, n, 3000):
    h.update(d[k].encode())
for x in b[::100]:
    h.update(x)
print(h.hexdigest(), len(a), len(d), len(b))
"#;

/// Peak resident size of the workload, measured once plainly (MiB).
const PYTHON_PEAK_MIB: usize = 313;

fn run(cmd: &[String], prefix: &[String], join: Option<&Path>) -> (f64, Output) {
    let mut argv: Vec<String> = prefix.to_vec();
    argv.extend_from_slice(cmd);
    let t = Instant::now();
    let out = command_in(join, &argv).output().unwrap();
    (t.elapsed().as_secs_f64(), out)
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut runs = 3;
    let mut backend = "auto".to_owned();
    let mut only = String::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--runs" => runs = val().parse().expect("--runs"),
            "--backend" => backend = val(),
            "--only" => only = val(),
            _ => {}
        }
    }
    let sbma = build_sbma();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("shim-bench");
    std::fs::create_dir_all(&dir).unwrap();

    // Inputs: a generated C file, a text file for sort and xz.
    let mut src = String::from("#include <stdint.h>\n");
    for i in 0..300 {
        src += &format!(
            "uint64_t f{i}(uint64_t x) {{ for (int k = 0; k < {}; k++) x = x * 6364136223846793005u + {i}u; return x{}; }}\n",
            i % 17 + 3,
            if i > 0 {
                format!(" ^ f{}(x >> 1)", i - 1)
            } else {
                String::new()
            }
        );
    }
    let c_file = dir.join("gen.c");
    std::fs::write(&c_file, src).unwrap();
    let text = dir.join("lines.txt");
    let body: String = (0..400_000u64)
        .map(|i| {
            format!(
                "{:016x} {}\n",
                i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                i % 977
            )
        })
        .collect();
    std::fs::write(&text, body).unwrap();
    let (c, t, o) = (
        c_file.display().to_string(),
        text.display().to_string(),
        dir.join("gen.o").display().to_string(),
    );
    let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v INTEGER); WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300000) INSERT INTO t SELECT x, printf('%08x', (x * 2654435761) % 4294967296), x % 977 FROM c; CREATE INDEX ik ON t(k); SELECT count(*), sum(v), max(k) FROM t;";
    let programs: Vec<(&str, Vec<String>)> = vec![
        ("python3", s(&["/usr/bin/python3", "-c", PYTHON_WORK])),
        ("sqlite3", s(&["sqlite3", ":memory:", sql])),
        (
            "perl",
            s(&[
                "perl",
                "-e",
                r#"my @a; push @a, "x" x ($_ % 100) for 1..300000; my $s = 0; $s += length($_) for @a; print "$s\n";"#,
            ]),
        ),
        ("gcc -O2", s(&["gcc", "-O2", "-c", &c, "-o", &o])),
        ("sort", s(&["sort", &t])),
        (
            "xz round trip",
            s(&["/bin/sh", "-c", &format!("xz -1 -c {t} | xz -d | wc -c")]),
        ),
    ];
    let mut programs = programs;
    if on_path("git").is_some() {
        // init, add, commit 500 generated files, fsck: a shell and a dozen
        // git processes, most of them short (start-up and fork costs).
        let script = format!(
            r#"set -e
            export GIT_AUTHOR_DATE=2026-01-01T00:00:00Z GIT_COMMITTER_DATE=2026-01-01T00:00:00Z
            export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
            top=$(mktemp -d {}/git.XXXXXX); trap 'rm -rf "$top"' EXIT
            cd "$top"; git init -q r; cd r; git config user.email t@example.com; git config user.name t
            i=0; while [ $i -lt 500 ]; do seq $i $((i + 300)) > f$i; i=$((i + 1)); done
            git add .; git commit -q -m one; git fsck --full; git rev-parse HEAD"#,
            dir.display()
        );
        programs.push(("git", s(&["/bin/sh", "-c", &script])));
    }

    if only.is_empty() || only == "overhead" {
        println!(
            "shim overhead: best of {runs} runs, sbma run --budget 4G --backend {backend} (nothing pages)"
        );
        println!(
            "{:<14} {:>9} {:>9} {:>7}",
            "program", "plain s", "shim s", "ratio"
        );
        let shim_prefix = s(&[
            sbma.to_str().unwrap(),
            "run",
            "--budget",
            "4G",
            "--backend",
            &backend,
            "--",
        ]);
        for (name, cmd) in &programs {
            let tool = cmd[0].rsplit('/').next().unwrap_or(&cmd[0]).to_owned();
            if !Path::new(&cmd[0]).exists() && on_path(&tool).is_none() {
                println!("{name:<14} skipped: {tool} not installed");
                continue;
            }
            let best = |prefix: &[String]| {
                let mut best = f64::MAX;
                let mut last = None;
                for _ in 0..runs {
                    let (secs, out) = run(cmd, prefix, None);
                    assert!(out.status.success(), "{name}: {out:?}");
                    best = best.min(secs);
                    last = Some(out.stdout);
                }
                (best, last.unwrap_or_default())
            };
            let (plain, plain_out) = best(&[]);
            let (shim, shim_out) = best(&shim_prefix);
            assert_eq!(
                plain_out, shim_out,
                "{name}: different output under the shim"
            );
            println!("{name:<14} {plain:>9.3} {shim:>9.3} {:>6.2}x", shim / plain);
        }
    }

    if only.is_empty() || only == "outofcore" {
        let limit_bytes = (PYTHON_PEAK_MIB << 20) / 4;
        let budget = limit_bytes - (24 << 20);
        let limit = Limit::set_up(1 << 30, limit_bytes);
        let Some(limit) = limit else {
            return;
        };
        println!(
            "python3 out of core: ~{PYTHON_PEAK_MIB} MiB peak, cgroup limit {} MiB + swap file; sbma budget {} MiB",
            limit_bytes >> 20,
            budget >> 20
        );
        println!("{:<6} {:>9}", "mode", "s");
        let cmd = s(&["/usr/bin/python3", "-c", PYTHON_WORK]);
        let mut times = Vec::new();
        let mut outputs = Vec::new();
        for mode in ["swap", "sbma"] {
            drop_caches();
            let prefix = if mode == "sbma" {
                s(&[
                    sbma.to_str().unwrap(),
                    "run",
                    "--budget",
                    &budget.to_string(),
                    "--backend",
                    &backend,
                    "--stats",
                    "--",
                ])
            } else {
                Vec::new()
            };
            let (secs, out) = run(&cmd, &prefix, Some(&limit.procs()));
            assert!(out.status.success(), "{mode}: {out:?}");
            println!("{mode:<6} {secs:>9.2}");
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            times.push(secs);
            outputs.push(out.stdout);
        }
        assert_eq!(outputs[0], outputs[1], "different output");
        println!(
            "sbma vs swap: {:.2}x (higher is better); same output",
            times[0] / times[1]
        );
    }
}
