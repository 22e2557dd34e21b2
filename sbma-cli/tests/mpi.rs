//! The distributed case (issue 7): four MPI ranks of
//! `examples/mpi/stencil.c` under `mpirun -np 4 sbma run --group G
//! --budget 8M`, together four times over the group budget, must compute
//! the same grid, bit for bit, as one rank without sbma; every rank pages,
//! the group never holds more than its budget, and nothing is left in
//! /dev/shm. Runs on every backend this process can use.
//!
//! Needs Open MPI (`mpicc`, `mpirun`; `.ci/run` installs Debian's
//! openmpi-bin and libopenmpi-dev); without it the test says SKIPPED.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ROWS: &str = "1024";
const COLS: &str = "2048"; // 16 MiB per grid, 32 MiB for both
const ITERATIONS: &str = "4";
const BUDGET: u64 = 8 << 20;

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// `mpirun` for this machine: as root it needs explicit consent, with more
/// ranks than cores it needs `--oversubscribe`; shared memory only.
fn mpirun(mpirun: &Path, np: &str, args: &[&str]) -> Output {
    Command::new(mpirun)
        .args(["--oversubscribe", "-np", np])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_btl", "self,vader")
        .output()
        .unwrap()
}

fn field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &json[start..];
    let end = rest.find([',', '}'])?;
    Some(rest[..end].trim_matches('"').to_owned())
}

#[test]
fn mpi_ranks_share_one_budget_out_of_core() {
    let (Some(mpicc), Some(mpirun_path)) = (on_path("mpicc"), on_path("mpirun")) else {
        println!(
            "SKIPPED: mpicc or mpirun not on PATH (.ci/run installs openmpi-bin and libopenmpi-dev)"
        );
        return;
    };
    let tmp = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let exe = tmp.join(format!("sbma-stencil-{}", std::process::id()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/mpi/stencil.c");
    let built = Command::new(&mpicc)
        .args(["-O2", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&exe)
        .arg(&source)
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(
        built.success(),
        "stencil.c does not compile with {}",
        mpicc.display()
    );
    let exe_s = exe.to_str().unwrap();

    let reference = mpirun(&mpirun_path, "1", &[exe_s, ROWS, COLS, ITERATIONS]);
    let ref_out = String::from_utf8_lossy(&reference.stdout).into_owned();
    assert!(
        reference.status.success(),
        "{ref_out}{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let checksum = ref_out
        .lines()
        .find(|l| l.starts_with("checksum "))
        .unwrap_or_else(|| panic!("no checksum: {ref_out}"))
        .to_owned();

    let (backends, missing) = sbma_pager::Backend::usable();
    if let Some(e) = missing {
        println!("SKIPPED: the MPI run under the uffd backend: {e}");
    }
    let sbma = env!("CARGO_BIN_EXE_sbma");
    for backend in backends.iter().map(|b| b.name()) {
        let group = format!("test-mpi-{}-{backend}", std::process::id());
        let out = mpirun(
            &mpirun_path,
            "4",
            &[
                sbma,
                "run",
                "--group",
                &group,
                "--budget",
                "8M",
                "--backend",
                backend,
                "--stats=json",
                "--",
                exe_s,
                ROWS,
                COLS,
                ITERATIONS,
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{backend}: {:?}\n{stdout}{stderr}",
            out.status
        );
        assert!(
            stdout.contains(&checksum),
            "{backend}: a different grid:\n{stdout}\nexpected {checksum}"
        );
        assert!(
            stdout.contains("boundary cells wrong: 0"),
            "{backend}: {stdout}"
        );
        assert!(
            stdout.contains("sbma present"),
            "{backend}: the ranks did not find SBMA_sigon: {stdout}"
        );

        // One statistics line and one group line per rank.
        let ranks: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("{\"backend\":"))
            .collect();
        assert_eq!(ranks.len(), 4, "{backend}: {stderr}");
        for r in &ranks {
            assert_eq!(field(r, "backend").as_deref(), Some(backend), "{r}");
            let written: u64 = field(r, "bytes_written").unwrap().parse().unwrap();
            let evicted: u64 = field(r, "pages_evicted").unwrap().parse().unwrap();
            let peak: u64 = field(r, "peak_resident").unwrap().parse().unwrap();
            assert!(
                written > 0 && evicted > 0,
                "{backend}: every rank pages: {r}"
            );
            assert!(
                peak <= BUDGET,
                "{backend}: the group held more than its budget: {r}"
            );
            assert_eq!(field(r, "budget").unwrap(), BUDGET.to_string(), "{r}");
        }
        let groups = stderr
            .lines()
            .filter(|l| field(l, "group").as_deref() == Some(group.as_str()))
            .count();
        assert_eq!(groups, 4, "{backend}: {stderr}");
        assert!(
            !Path::new(&format!("/dev/shm/sbma-group-{group}")).exists(),
            "{backend}: the group's segment outlived its members"
        );
        println!(
            "{backend}: {}",
            stdout
                .lines()
                .find(|l| l.starts_with("time:"))
                .unwrap_or("")
        );
    }
    let _ = std::fs::remove_file(&exe);
}
