//! C programs compiled with `cc` against `include/sbma.h`, linked with the
//! `libsbma` this build produced, and run: the original SBMA API and the
//! modern one, every function, real faults and real files.

use std::path::PathBuf;
use std::process::Command;

/// The directory holding the `libsbma.so` of this very build: the test
/// binary's own (`target/<profile>/deps`). `cargo test` rebuilds it there
/// but does not copy it to `target/<profile>` (only `cargo build` does), so
/// a library found there could be stale.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().to_path_buf()
}

fn compile_and_run(name: &str) -> String {
    compile_and_run_with(name, &[])
}

/// Compiles `tests/c/<name>.c` against `sbma.h`, links the built
/// `libsbma.so`, runs it with `env`; returns its standard output.
fn compile_and_run_with(name: &str, env: &[(&str, &str)]) -> String {
    let dir = env!("CARGO_MANIFEST_DIR");
    let lib = lib_dir();
    assert!(
        lib.join("libsbma.so").exists(),
        "libsbma.so not built in {}",
        lib.display()
    );
    let out_dir = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let exe = out_dir.join(format!("sbma-c-{name}-{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-std=c11",
            "-D_GNU_SOURCE",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-O1",
        ])
        .arg(format!("-I{dir}/include"))
        .arg(format!("{dir}/tests/c/{name}.c"))
        .arg(format!("-L{}", lib.display()))
        .arg("-lsbma")
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(status.success(), "{name}.c does not compile against sbma.h");
    // cargo's LD_LIBRARY_PATH (searched before the rpath) may name
    // `target/<profile>`, where an older libsbma.so can lie: point it here.
    let out = Command::new(&exe)
        .env("LD_LIBRARY_PATH", &lib)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&exe);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}: {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn original_sbma_api() {
    assert!(compile_and_run("original").contains("original API: ok"));
}

#[test]
fn modern_api_group() {
    let name = format!("test-capi-{}", std::process::id());
    let out = compile_and_run_with("group", &[("SBMA_TEST_GROUP", &name)]);
    assert!(out.contains("group API: ok"), "{out}");
    assert_eq!(out.matches(": ok, ").count(), 3, "{out}");
    print!("{out}");
}

#[test]
fn original_api_shares_a_budget_by_uniq() {
    let out = compile_and_run("original_group");
    assert!(out.contains("original API group: ok"), "{out}");
    assert_eq!(out.matches(": ok, ").count(), 3, "{out}");
    print!("{out}");
}

#[test]
fn modern_api() {
    assert!(compile_and_run("modern").contains("modern API: ok"));
}

/// Runs `tests/c/<name>.c` on every backend this process can use: the
/// signal backend is the one that needs the wrappers (the kernel meets
/// `PROT_NONE` pages); under uffd the same program must work too.
fn on_every_backend(name: &str, ok: &str) -> Vec<(&'static str, String)> {
    let (backends, missing) = sbma_alloc::sbma_pager::Backend::usable();
    if let Some(e) = missing {
        println!("SKIPPED: {name} under the uffd backend: {e}");
    }
    backends
        .iter()
        .map(|b| {
            let out = compile_and_run_with(name, &[("SBMA_BACKEND", b.name())]);
            assert!(out.contains(ok), "{}: {out}", b.name());
            (b.name(), out)
        })
        .collect()
}

#[test]
fn libc_io_on_evicted_memory() {
    for (backend, out) in on_every_backend("io", "libc I/O: ok") {
        assert!(
            out.contains(&format!("backend {backend}")),
            "{backend}: {out}"
        );
    }
}

#[test]
fn program_signal_handlers_and_altstack_keep_paging() {
    on_every_backend("signals", "signals: ok");
}

#[test]
fn calls_taking_paths_on_evicted_memory() {
    on_every_backend("paths", "paths: ok");
}

#[test]
fn event_waits_and_socket_calls_on_evicted_memory() {
    on_every_backend("waits", "waits: ok");
}

/// `sbma.pc` (rendered from `sbma.pc.in` as `install.sh` does, over this
/// build's libraries in a scratch prefix) gives `pkg-config` the flags a C
/// program needs, shared and static: both builds of `modern.c` run.
#[test]
fn pkg_config_file_builds_c_programs() {
    let pkg_config = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("pkg-config"))
            .find(|p| p.exists())
    });
    let Some(pkg_config) = pkg_config else {
        println!("SKIPPED: pkg-config is not installed (.ci/run installs it)");
        return;
    };
    let dir = env!("CARGO_MANIFEST_DIR");
    let tmp = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let prefix = tmp.join(format!("sbma-prefix-{}", std::process::id()));
    let (libdir, includedir) = (prefix.join("lib"), prefix.join("include"));
    std::fs::create_dir_all(libdir.join("pkgconfig")).unwrap();
    std::fs::create_dir_all(&includedir).unwrap();
    for lib in ["libsbma.so", "libsbma.a"] {
        std::fs::copy(lib_dir().join(lib), libdir.join(lib)).unwrap();
    }
    std::fs::copy(format!("{dir}/include/sbma.h"), includedir.join("sbma.h")).unwrap();
    let pc = std::fs::read_to_string(format!("{dir}/sbma.pc.in"))
        .unwrap()
        .replace("@PREFIX@", prefix.to_str().unwrap())
        .replace("@LIBDIR@", libdir.to_str().unwrap())
        .replace("@INCLUDEDIR@", includedir.to_str().unwrap())
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"));
    std::fs::write(libdir.join("pkgconfig/sbma.pc"), pc).unwrap();

    let flags = |args: &[&str]| -> Vec<String> {
        let out = Command::new(&pkg_config)
            .args(args)
            .arg("sbma")
            .env("PKG_CONFIG_PATH", libdir.join("pkgconfig"))
            .output()
            .unwrap();
        assert!(out.status.success(), "pkg-config {args:?}: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let version = flags(&["--modversion"]);
    assert_eq!(version, [env!("CARGO_PKG_VERSION")]);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for (kind, link) in [
        ("shared", flags(&["--cflags", "--libs"])),
        ("static", {
            let mut f = flags(&["--cflags", "--static", "--libs-only-other"]);
            f.push(libdir.join("libsbma.a").display().to_string());
            f.extend(
                flags(&["--static", "--libs-only-l"])
                    .into_iter()
                    .filter(|l| l != "-lsbma"),
            );
            f
        }),
    ] {
        let exe = prefix.join(format!("modern-{kind}"));
        let status = Command::new(&cc)
            .args(["-std=c11", "-D_GNU_SOURCE", "-O1"])
            .arg(format!("{dir}/tests/c/modern.c"))
            .args(&link)
            .arg(format!("-Wl,-rpath,{}", libdir.display()))
            .arg("-o")
            .arg(&exe)
            .status()
            .unwrap();
        assert!(status.success(), "{kind}: cc with {link:?}");
        let out = Command::new(&exe)
            .env_remove("LD_LIBRARY_PATH")
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("modern API: ok"),
            "{kind}: {out:?}"
        );
        if kind == "static" {
            let ldd = Command::new("ldd").arg(&exe).output().unwrap();
            assert!(
                !String::from_utf8_lossy(&ldd.stdout).contains("libsbma"),
                "the static build loads libsbma.so"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&prefix);
}
