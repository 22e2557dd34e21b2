//! The out-of-core sweep (issue 3): data larger than memory, three ways, in
//! one run, under the same memory limit.
//!
//! - `swap`: anonymous memory; the kernel swaps to a swap file.
//! - `file`: a `MAP_SHARED` mapping of a file; the kernel writes back and
//!   reclaims page cache.
//! - `sbma`: a region of the pager, at several page sizes, on each fault
//!   backend (`sig`: SIGSEGV handler; `uffd`: userfaultfd).
//!
//! Each mode runs in a child process that first joins a memory cgroup
//! limited to the budget. The harness creates the swap file and the cgroup
//! and removes both at the end. Where it lacks root (or a memory cgroup),
//! it says so and measures sbma alone, without the limit or the ratios.
//!
//! sbma's budget is the limit less 32 MiB for the program itself when its
//! backing file uses direct I/O (the default). With buffered I/O
//! (`SBMA_BENCH_BUFFERED=1`, or a filesystem without `O_DIRECT`) it is 7/8
//! of the limit: the cgroup also charges the page cache of sbma's own
//! backing file, and a budget equal to the limit would let the kernel swap
//! sbma's resident pages behind its back.
//!
//! The workload over `size` bytes, identical in every mode:
//! 1. sequential write: every 8-byte word gets `f(offset)`;
//! 2. sequential read-modify-write: every word is checked, then incremented;
//! 3. random read-modify-write: `ops` random words (or as many as fit in
//!    20 s) are checked and incremented, with an exact shadow of the
//!    increments; the rate is reported.
//!
//! Any mismatch fails the run.
//!
//! Run: `cargo bench -p sbma-benches --bench outofcore -- [--size 2G]
//! [--budget 512M] [--pages 16K,64K,256K] [--backends signal,uffd]
//! [--ops 100000] [--only swap,sbma]`
//! `--only` keeps the modes whose names start with one of the prefixes;
//! `--verbose` prints sbma's statistics after each phase. For comparisons,
//! sbma's children honour `SBMA_BENCH_BUFFERED=1` (no `O_DIRECT`),
//! `SBMA_BENCH_SYNC=1` (no background I/O threads) and
//! `SBMA_BENCH_REMAP=1` (fill by `mremap` instead of `/proc/self/mem`).
#![allow(unsafe_code, reason = "the workload runs on raw mappings")]
#![allow(missing_docs, reason = "a benchmark binary")]

use sbma_benches::limit::{Limit, drop_caches};
use sbma_core::units::parse_size;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The most time the random phase may take per mode.
const RANDOM_SECONDS: u64 = 20;
/// Memory left to the benchmark program itself (code, heap, the random
/// phase's shadow map, the pager's tables) when sbma's backing file uses
/// no page cache.
const HEADROOM: usize = 32 << 20;

struct Config {
    size: usize,
    budget: usize,
    pages: Vec<usize>,
    backends: Vec<String>,
    ops: usize,
    /// Run only the modes whose name starts with one of these.
    only: Vec<String>,
    /// Print each child's diagnostics (sbma's statistics per phase).
    verbose: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    let mut cfg = Config {
        size: 2 << 30,
        budget: 512 << 20,
        pages: vec![16 << 10, 64 << 10, 256 << 10],
        backends: vec!["signal".into(), "uffd".into()],
        ops: 100_000,
        only: Vec::new(),
        verbose: false,
    };
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--size" => cfg.size = parse_size(&val()).expect("--size"),
            "--budget" => cfg.budget = parse_size(&val()).expect("--budget"),
            "--pages" => {
                cfg.pages = val()
                    .split(',')
                    .map(|p| parse_size(p).expect("--pages"))
                    .collect()
            }
            "--ops" => cfg.ops = val().parse().expect("--ops"),
            "--backends" => cfg.backends = val().split(',').map(str::to_owned).collect(),
            "--verbose" => cfg.verbose = true,
            "--only" => cfg.only = val().split(',').map(str::to_owned).collect(),
            _ => {} // cargo bench passes --bench
        }
    }
    let limit = Limit::set_up(cfg.size + cfg.size / 4, cfg.budget);
    println!(
        "out-of-core sweep: {} MiB of data, memory limit {} MiB, {} random ops; {}",
        cfg.size >> 20,
        cfg.budget >> 20,
        cfg.ops,
        match &limit {
            Some(l) => format!(
                "cgroup {} + swap file {}",
                l.cgroup.display(),
                l.swap.display()
            ),
            None => "NO LIMIT (see above): sbma only, no baselines".into(),
        }
    );
    let mut modes = Vec::new();
    if limit.is_some() {
        modes.push(("swap".to_string(), "swap".to_string()));
        modes.push(("file".to_string(), "file".to_string()));
    }
    for b in &cfg.backends {
        let backend: sbma_pager::Backend = b.parse().expect("--backends");
        if let Err(e) = backend.available() {
            println!("{b}: skipped: {e}");
            continue;
        }
        let short = if backend == sbma_pager::Backend::Signal {
            "sig"
        } else {
            b.as_str()
        };
        for p in &cfg.pages {
            modes.push((
                format!("sbma-{short} {}K", p >> 10),
                format!("sbma:{b}:{p}"),
            ));
        }
    }
    if !cfg.only.is_empty() {
        modes.retain(|(name, _)| cfg.only.iter().any(|o| name.starts_with(o.as_str())));
    }
    let mut results: HashMap<String, [f64; 3]> = HashMap::new();
    println!(
        "{:<15} {:>14} {:>14} {:>14}",
        "mode", "seq write MB/s", "seq rmw MB/s", "random ops/s"
    );
    for (name, mode) in &modes {
        drop_caches();
        let procs = limit
            .as_ref()
            .map_or_else(String::new, |l| l.procs().display().to_string());
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--child",
                mode,
                &cfg.size.to_string(),
                &cfg.budget.to_string(),
                &cfg.ops.to_string(),
                &procs,
            ])
            .output()
            .unwrap();
        let v = match sbma_benches::child::result(&out) {
            Ok(v) => v,
            Err(e) => {
                println!("{name:<15} {e}");
                continue;
            }
        };
        println!("{name:<15} {:>14.1} {:>14.1} {:>14.0}", v[0], v[1], v[2]);
        if cfg.verbose {
            print!("{}", String::from_utf8_lossy(&out.stderr));
        }
        results.insert(name.clone(), [v[0], v[1], v[2]]);
    }
    if limit.is_some() {
        println!("\nratios (sbma / baseline, higher is better)");
        println!(
            "{:<15} {:>22} {:>22} {:>22}",
            "mode", "seq write vs swap|file", "seq rmw vs swap|file", "random vs swap|file"
        );
        for (name, _) in modes.iter().filter(|m| m.0.starts_with("sbma")) {
            let (Some(s), Some(sw), Some(f)) =
                (results.get(name), results.get("swap"), results.get("file"))
            else {
                continue;
            };
            let r = |i: usize| format!("{:.2}x | {:.2}x", s[i] / sw[i], s[i] / f[i]);
            println!("{name:<15} {:>22} {:>22} {:>22}", r(0), r(1), r(2));
        }
    }
    drop(limit);
}

// ---------------------------------------------------------------------
// The child: join the cgroup, map the memory, run the workload.
// ---------------------------------------------------------------------

fn child(args: &[String]) {
    let mode = &args[0];
    let size: usize = args[1].parse().unwrap();
    let budget: usize = args[2].parse().unwrap();
    let ops: usize = args[3].parse().unwrap();
    if let Some(procs) = args.get(4).filter(|p| !p.is_empty()) {
        std::fs::write(procs, std::process::id().to_string()).expect("joining the cgroup");
    }
    let tmp = std::env::var_os("TMPDIR").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    let mut keep = None;
    let mut stats_of: Option<sbma_pager::Pager> = None;
    let base: *mut u8 = match mode.as_str() {
        "swap" => {
            // SAFETY: a fresh private anonymous mapping.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            p.cast()
        }
        "file" => {
            let path = tmp.join(format!("sbma-bench-map-{}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            std::fs::remove_file(&path).unwrap();
            f.set_len(size as u64).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: a shared mapping of our own unlinked file.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            keep = Some(Box::new(f) as Box<dyn std::any::Any>);
            p.cast()
        }
        m => {
            let (backend, page) = m.strip_prefix("sbma:").unwrap().split_once(':').unwrap();
            let backend: sbma_pager::Backend = backend.parse().unwrap();
            let page: usize = page.parse().unwrap();
            let direct = std::env::var("SBMA_BENCH_BUFFERED").is_err();
            let build = |budget: usize| {
                sbma_pager::Pager::builder()
                    .budget(budget)
                    .page_size(page)
                    .max_size(size)
                    .backend(backend)
                    .dir(&tmp)
                    .direct_io(direct)
                    .background_io(std::env::var("SBMA_BENCH_SYNC").is_err())
                    .fill_method(if std::env::var("SBMA_BENCH_REMAP").is_ok() {
                        sbma_pager::FillMethod::Remap
                    } else {
                        sbma_pager::FillMethod::SelfMem
                    })
                    .build()
                    .unwrap()
            };
            // With direct I/O the backing file uses no page cache: the
            // budget is the limit less room for the program itself.
            // Buffered, the cgroup also charges the file's page cache.
            let mut pager = build(budget - HEADROOM);
            if !pager.direct_io() {
                drop(pager);
                pager = build(budget / 8 * 7);
            }
            let region = pager.alloc(size).unwrap();
            let p = region.as_mut_ptr();
            stats_of = Some(pager.clone());
            keep = Some(Box::new((pager, region)) as Box<dyn std::any::Any>);
            p
        }
    };
    let words = size / 8;
    let w = base.cast::<u64>();
    let f = |i: usize| (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let t = Instant::now();
    for i in 0..words {
        // SAFETY: i < words, inside the mapping.
        unsafe { w.add(i).write(f(i)) };
    }
    let seq_write = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    let report = |phase: &str| {
        if let Some(p) = &stats_of {
            eprintln!("  after {phase}: {:?}", p.stats());
        }
    };
    report("seq write");
    let t = Instant::now();
    let mut bad = 0usize;
    for i in 0..words {
        // SAFETY: as above.
        unsafe {
            let v = w.add(i).read();
            bad += usize::from(v != f(i));
            w.add(i).write(v.wrapping_add(1));
        }
    }
    let seq_rmw = size as f64 / t.elapsed().as_secs_f64() / 1e6;
    report("seq rmw");
    let mut bumps: HashMap<usize, u64> = HashMap::new();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let t = Instant::now();
    let mut done = 0usize;
    for n in 0..ops {
        // Bounded in time: some baselines manage ~100 ops/s; the rate over
        // the operations done is what is reported.
        if n % 1024 == 0 && t.elapsed().as_secs() >= RANDOM_SECONDS {
            break;
        }
        done += 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = (x % words as u64) as usize;
        let extra = bumps.entry(i).or_insert(0);
        // SAFETY: as above.
        unsafe {
            let v = w.add(i).read();
            bad += usize::from(v != f(i).wrapping_add(1 + *extra));
            w.add(i).write(v.wrapping_add(1));
        }
        *extra += 1;
    }
    let random = done as f64 / t.elapsed().as_secs_f64();
    report("random");
    assert_eq!(bad, 0, "{mode}: {bad} words differ");
    println!("RESULT {seq_write:.1} {seq_rmw:.1} {random:.0}");
    drop(keep);
}
