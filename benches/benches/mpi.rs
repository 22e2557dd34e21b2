//! The distributed benchmark (issue 7): `examples/mpi/stencil.c`, N MPI
//! ranks on this machine whose grids together need several times the
//! memory limit, run twice under the same memory cgroup:
//!
//! - `swap`: plain `mpirun -np N ./stencil`; the kernel swaps the ranks'
//!   heaps to a swap file;
//! - `sbma`: `mpirun -np N sbma run --group G --budget B -- ./stencil`,
//!   the ranks sharing one budget `B` = the limit less `--headroom` (what
//!   the MPI runtime, the libraries and the shared-memory transport keep
//!   outside the heap).
//!
//! `--no-blocked` keeps the ranks from declaring themselves blocked inside
//! MPI (`STENCIL_NO_BLOCKED=1`), to measure what the declarations bring.
//!
//! Both runs must print the same checksum of the final grid. Reported: the
//! initialisation, the iterations and the whole run, in seconds, and the
//! ratios swap/sbma (higher is better for sbma).
//!
//! Run: `cargo bench -p sbma-benches --bench mpi -- [--ranks 4]
//! [--data 1536M] [--cols 8192] [--iterations 3] [--limit 512M]
//! [--headroom 64M] [--backend auto] [--no-blocked] [--only sbma]` as root (the cgroup and
//! the swap file); needs Open MPI (`mpicc`, `mpirun`) and builds `sbma`
//! and the shim (`cargo build --release -p sbma-cli -p sbma-interpose`).
#![allow(missing_docs, reason = "a benchmark binary")]

use sbma_benches::limit::{Limit, command_in, drop_caches};
use sbma_benches::tools::{build_sbma, on_path, workspace};
use sbma_core::units::parse_size;
use std::path::Path;
use std::process::Command;

/// The cgroup's peak usage so far (v1 `memory.max_usage_in_bytes`, v2
/// `memory.peak`), reset where the kernel allows it.
fn peak(limit: &Limit, reset: bool) -> Option<u64> {
    for file in ["memory.max_usage_in_bytes", "memory.peak"] {
        let p = limit.cgroup.join(file);
        if p.exists() {
            if reset {
                let _ = std::fs::write(&p, "0");
            }
            return std::fs::read_to_string(&p).ok()?.trim().parse().ok();
        }
    }
    None
}

struct Run {
    times: Vec<f64>,
    checksum: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut ranks = 4usize;
    let mut data = 1536usize << 20;
    let mut cols = 8192usize;
    let mut iterations = 3usize;
    let mut limit_bytes = 512usize << 20;
    let mut headroom = 64usize << 20;
    let mut backend = "auto".to_owned();
    let mut only: Vec<String> = Vec::new();
    let mut no_blocked = false;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--ranks" => ranks = val().parse().expect("--ranks"),
            "--data" => data = parse_size(&val()).expect("--data"),
            "--cols" => cols = val().parse().expect("--cols"),
            "--iterations" => iterations = val().parse().expect("--iterations"),
            "--limit" => limit_bytes = parse_size(&val()).expect("--limit"),
            "--headroom" => headroom = parse_size(&val()).expect("--headroom"),
            "--backend" => backend = val(),
            "--no-blocked" => no_blocked = true,
            "--only" => only = val().split(',').map(str::to_owned).collect(),
            _ => {} // cargo bench passes --bench
        }
    }
    let (Some(mpicc), Some(mpirun)) = (on_path("mpicc"), on_path("mpirun")) else {
        println!("skipped: mpicc or mpirun not on PATH (Debian: openmpi-bin libopenmpi-dev)");
        return;
    };
    let exe = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stencil");
    let built = Command::new(&mpicc)
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(workspace().join("examples/mpi/stencil.c"))
        .arg("-ldl")
        .status()
        .is_ok_and(|s| s.success());
    assert!(built, "stencil.c does not compile");
    let sbma = build_sbma();

    // Two grids of rows x cols doubles.
    let rows = data / (2 * cols * 8);
    let budget = limit_bytes.saturating_sub(headroom);
    let limit = Limit::set_up(data + data / 2, limit_bytes);
    println!(
        "MPI stencil: {ranks} ranks, {rows} x {cols} grid x 2 = {} MiB, {iterations} iterations; memory limit {} MiB; {}",
        (2 * rows * cols * 8) >> 20,
        limit_bytes >> 20,
        match &limit {
            Some(l) => format!(
                "cgroup {} + swap file {}; sbma group budget {} MiB, backend {backend}{}",
                l.cgroup.display(),
                l.swap.display(),
                budget >> 20,
                if no_blocked {
                    ", ranks never declare themselves blocked"
                } else {
                    ""
                }
            ),
            None => "NO LIMIT (see above): sbma only".into(),
        }
    );
    let mut modes = vec!["sbma"];
    if limit.is_some() {
        modes.insert(0, "swap");
    }
    modes.retain(|m| only.is_empty() || only.iter().any(|o| m.starts_with(o.as_str())));
    println!(
        "{:<6} {:>9} {:>12} {:>9} {:>14}",
        "mode", "init s", "iterations s", "total s", "cgroup peak MiB"
    );
    let group = format!("bench-mpi-{}", std::process::id());
    let mut results: Vec<(&str, Run)> = Vec::new();
    for mode in modes {
        drop_caches();
        let mut cmd: Vec<String> = vec![
            mpirun.display().to_string(),
            "--oversubscribe".into(),
            "-np".into(),
            ranks.to_string(),
        ];
        if mode == "sbma" {
            cmd.extend([
                sbma.display().to_string(),
                "run".into(),
                "--group".into(),
                group.clone(),
                "--budget".into(),
                budget.to_string(),
                "--backend".into(),
                backend.clone(),
                "--stats".into(),
                "--".into(),
            ]);
        }
        cmd.extend([
            exe.display().to_string(),
            rows.to_string(),
            cols.to_string(),
            iterations.to_string(),
        ]);
        if let Some(l) = &limit {
            peak(l, true);
        }
        // Join the cgroup, then become mpirun: every rank starts inside.
        let procs = limit.as_ref().map(Limit::procs);
        let mut sh = command_in(procs.as_deref(), &cmd);
        if no_blocked {
            sh.env("STENCIL_NO_BLOCKED", "1");
        }
        let out = sh
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMPI_MCA_btl", "self,vader")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let times = match sbma_benches::child::result(&out) {
            Ok(v) => v,
            Err(e) => {
                println!("{mode:<6} {e}\n{stdout}");
                continue;
            }
        };
        let checksum = stdout
            .lines()
            .find(|l| l.starts_with("checksum "))
            .unwrap_or("checksum missing")
            .to_owned();
        let peak_mib = limit
            .as_ref()
            .and_then(|l| peak(l, false))
            .map_or_else(|| "-".into(), |p| (p >> 20).to_string());
        println!(
            "{mode:<6} {:>9.2} {:>12.2} {:>9.2} {:>14}",
            times[0], times[1], times[2], peak_mib
        );
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        results.push((mode, Run { times, checksum }));
    }
    if let [(_, swap), (_, sb)] = results.as_slice() {
        println!(
            "{}",
            if swap.checksum == sb.checksum {
                format!("both runs computed the same grid ({})", sb.checksum)
            } else {
                format!("MISMATCH: swap {} vs sbma {}", swap.checksum, sb.checksum)
            }
        );
        println!(
            "sbma vs swap: init {:.2}x, iterations {:.2}x, total {:.2}x (higher is better)",
            swap.times[0] / sb.times[0],
            swap.times[1] / sb.times[1],
            swap.times[2] / sb.times[2]
        );
    }
    drop(limit);
}
