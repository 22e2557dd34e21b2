//! Benchmarks for sbma; the code lives in `benches/`. This library holds
//! what several harnesses share.

pub mod limit {
    //! The memory limit the baselines run under: a memory cgroup (v1 or
    //! v2) and a swap file, created by the harness (as root) and removed at
    //! the end, with leftovers of killed runs removed first.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// A memory cgroup limited to the budget and a swap file, both removed on
    /// drop.
    pub struct Limit {
        /// The cgroup's directory.
        pub cgroup: PathBuf,
        v2: bool,
        /// The swap file.
        pub swap: PathBuf,
    }

    impl Limit {
        /// Enables a swap file of `swap_bytes` and creates a cgroup limited to
        /// `limit` bytes; `None` (with the reason printed) without root or a
        /// memory cgroup.
        pub fn set_up(swap_bytes: usize, limit: usize) -> Option<Limit> {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                println!("skipped baselines: not root (a memory cgroup and a swap file need root)");
                return None;
            }
            let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
            let parent = if v2 {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/memory")
            };
            if !parent.exists() {
                println!(
                    "skipped baselines: no memory cgroup at {}",
                    parent.display()
                );
                return None;
            }
            let dir = std::env::var_os("SBMA_BENCH_DIR")
                .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
            remove_leftovers(&parent, &dir);
            let swap = dir.join(format!("sbma-bench-{}.swap", std::process::id()));
            let ok = Command::new("fallocate")
                .args(["-l", &swap_bytes.to_string()])
                .arg(&swap)
                .status()
                .is_ok_and(|s| s.success())
                && std::fs::set_permissions(
                    &swap,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .is_ok()
                && Command::new("mkswap")
                    .arg(&swap)
                    .output()
                    .is_ok_and(|o| o.status.success())
                && Command::new("swapon")
                    .arg(&swap)
                    .status()
                    .is_ok_and(|s| s.success());
            if !ok {
                let _ = std::fs::remove_file(&swap);
                println!(
                    "skipped baselines: could not enable a swap file in {}",
                    dir.display()
                );
                return None;
            }
            let cgroup = parent.join(format!("sbma-bench-{}", std::process::id()));
            let limit_file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            let made = std::fs::create_dir(&cgroup).is_ok()
                && std::fs::write(cgroup.join(limit_file), limit.to_string()).is_ok();
            let limit = Limit { cgroup, v2, swap };
            if !made {
                println!("skipped baselines: could not create a memory cgroup");
                return None;
            }
            Some(limit)
        }

        /// The file a process writes its pid to, to join the cgroup.
        pub fn procs(&self) -> PathBuf {
            self.cgroup.join("cgroup.procs")
        }
    }

    impl Drop for Limit {
        fn drop(&mut self) {
            // Move ourselves out (we never joined), remove the group, then swap.
            let _ = std::fs::remove_dir(&self.cgroup);
            let _ = Command::new("swapoff").arg(&self.swap).status();
            let _ = std::fs::remove_file(&self.swap);
            let _ = self.v2;
        }
    }

    /// Removes the cgroups and swap files of earlier runs that were killed
    /// before they could clean up (their pid no longer exists).
    fn remove_leftovers(cgroups: &Path, dir: &Path) {
        let dead = |name: &str| {
            name.strip_prefix("sbma-bench-")
                .and_then(|rest| rest.split('.').next())
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        };
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".swap") && dead(&name) {
                let _ = Command::new("swapoff").arg(entry.path()).status();
                let _ = std::fs::remove_file(entry.path());
            }
        }
        for entry in std::fs::read_dir(cgroups).into_iter().flatten().flatten() {
            if dead(&entry.file_name().to_string_lossy()) {
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }

    /// A command that runs `argv` inside the cgroup whose `cgroup.procs`
    /// is `procs` (a shell joins it, then becomes the program, so every
    /// process the program starts is inside too), or plainly without one.
    pub fn command_in(procs: Option<&Path>, argv: &[String]) -> Command {
        let join = procs.map_or_else(String::new, |p| format!("echo $$ > {} && ", p.display()));
        let mut sh = Command::new("/bin/sh");
        sh.arg("-c")
            .arg(format!("{join}exec \"$@\""))
            .arg("sh")
            .args(argv);
        sh
    }

    /// Drops the page cache (between runs, so each starts cold).
    pub fn drop_caches() {
        let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
    }
}

pub mod child {
    //! Harnesses run each mode in a child process (itself, with `--child`)
    //! that prints one `RESULT x y z` line.

    use std::process::Output;

    /// The numbers of the child's `RESULT` line, or the failure to report
    /// (its status and stderr).
    pub fn result(out: &Output) -> Result<Vec<f64>, String> {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.starts_with("RESULT"))
            .ok_or_else(|| {
                format!(
                    "FAILED: {:?} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        line.split_whitespace()
            .skip(1)
            .map(|x| x.parse().map_err(|e| format!("bad RESULT `{line}`: {e}")))
            .collect()
    }
}

pub mod tools {
    //! Finding programs and building the `sbma` binary and the shim for
    //! harnesses that run other programs.

    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// `name` on `PATH`, if there.
    pub fn on_path(name: &str) -> Option<PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
    }

    /// The workspace's root.
    pub fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// Builds `sbma` and the shim (release) and returns the `sbma` binary
    /// (the shim lies next to it).
    pub fn build_sbma() -> PathBuf {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .current_dir(workspace())
            .args([
                "build",
                "--release",
                "--quiet",
                "-p",
                "sbma-cli",
                "-p",
                "sbma-interpose",
            ])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "cargo build --release -p sbma-cli -p sbma-interpose failed"
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace().join("target"), PathBuf::from);
        target.join("release/sbma")
    }
}
