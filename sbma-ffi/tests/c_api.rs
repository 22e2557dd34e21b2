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
fn calls_taking_paths_on_evicted_memory() {
    on_every_backend("paths", "paths: ok");
}

#[test]
fn event_waits_and_socket_calls_on_evicted_memory() {
    on_every_backend("waits", "waits: ok");
}
