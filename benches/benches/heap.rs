//! The out-of-core heap benchmark (issue 4): a B-tree and a hash map of
//! small boxed values, about four times larger than memory, built and
//! checked by the same program twice, under the same memory cgroup:
//!
//! - `system`: glibc's allocator; the kernel swaps to a swap file;
//! - `sbma`: `SbmaAlloc` as the program's allocator, with a budget of the
//!   limit less 32 MiB for the program itself.
//!
//! The program (one child process per mode, joined to the cgroup):
//! 1. build: `BTreeMap<u64, Box<[u64; 3]>>` and `HashMap<u64, Box<[u64;
//!    3]>>` with `n` entries each (keys in order, a locality-keeping hash);
//! 2. scan: every entry of both, in memory order, checked;
//! 3. lookups: random keys (hits and misses) in both, checked, for 20 s or
//!    `--lookups` lookups; the rate is reported.
//!
//! Run: `cargo bench -p sbma-benches --bench heap -- [--entries 10M]
//! [--limit 256M] [--lookups 100000] [--only sbma]` (as root, for the
//! cgroup and the swap file; without them only sbma runs, unlimited).
#![allow(unsafe_code, reason = "a switchable global allocator")]
#![allow(missing_docs, reason = "a benchmark binary")]

use sbma_alloc::sbma_pager::Pager;
use sbma_alloc::{SbmaAlloc, SbmaAllocBuilder};
use sbma_benches::limit::{Limit, drop_caches};
use sbma_core::units::parse_size;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Memory left to the program itself in sbma mode.
const HEADROOM: usize = 32 << 20;
const LOOKUP_SECONDS: u64 = 20;

fn sbma_config() -> Result<SbmaAllocBuilder, sbma_alloc::Error> {
    let budget: usize = std::env::var("SBMA_BENCH_HEAP_BUDGET")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(256 << 20);
    Ok(SbmaAlloc::builder().pager(Pager::builder().budget(budget).max_size(64 << 30)))
}

static SBMA: SbmaAlloc = SbmaAlloc::with_config(sbma_config);
/// Set once, before the workload: new blocks come from sbma.
static USE_SBMA: AtomicBool = AtomicBool::new(false);

/// The program's allocator: glibc until `USE_SBMA`, sbma after; frees go
/// to whichever owns the block.
struct Switch;

// SAFETY: each block comes from, and goes back to, one of two allocators
// that uphold the trait's contract; ownership is decided by address.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        unsafe {
            if USE_SBMA.load(Ordering::Relaxed) {
                SBMA.alloc(l)
            } else {
                System.alloc(l)
            }
        }
    }

    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: forwarded to the allocator that owns `p`.
        unsafe {
            if USE_SBMA.load(Ordering::Relaxed) && SBMA.owns(p) {
                SBMA.dealloc(p, l)
            } else {
                System.dealloc(p, l)
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch;

/// Keeps a key's low bits (consecutive keys fill consecutive buckets) and
/// mixes the top 7 bits hashbrown keeps in its control bytes.
#[derive(Default)]
struct DenseKeys(u64);

impl Hasher for DenseKeys {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) & (0x7F << 57))
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("u64 keys only")
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = k;
    }
}

fn value(k: u64) -> [u64; 3] {
    [k, k.wrapping_mul(31), !k]
}

fn child(args: &[String]) {
    let mode = args[0].as_str();
    let n: u64 = args[1].parse().unwrap();
    let lookups: u64 = args[2].parse().unwrap();
    if let Some(procs) = args.get(3).filter(|p| !p.is_empty()) {
        std::fs::write(procs, std::process::id().to_string()).expect("joining the cgroup");
    }
    if mode == "sbma" {
        USE_SBMA.store(true, Ordering::SeqCst);
    }
    let t = Instant::now();
    let tree: BTreeMap<u64, Box<[u64; 3]>> = (0..n).map(|k| (k, Box::new(value(k)))).collect();
    let mut map: HashMap<u64, Box<[u64; 3]>, BuildHasherDefault<DenseKeys>> =
        HashMap::with_capacity_and_hasher(n as usize, Default::default());
    for k in 0..n {
        map.insert(k, Box::new(value(k)));
    }
    let build = t.elapsed();
    let t = Instant::now();
    let mut seen = 0u64;
    for (k, v) in &tree {
        assert_eq!(**v, value(*k), "tree entry {k}");
        seen += 1;
    }
    for (k, v) in &map {
        assert_eq!(**v, value(*k), "map entry {k}");
        seen += 1;
    }
    assert_eq!(seen, 2 * n);
    let scan = t.elapsed();
    let t = Instant::now();
    let mut x = 12345u64;
    let mut done = 0u64;
    while done < lookups && t.elapsed() < Duration::from_secs(LOOKUP_SECONDS) {
        for _ in 0..100 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let k = (x >> 20) % (n + n / 8);
            let want = (k < n).then(|| value(k));
            assert_eq!(tree.get(&k).map(|v| **v), want);
            assert_eq!(map.get(&k).map(|v| **v), want);
        }
        done += 100;
    }
    let rate = done as f64 / t.elapsed().as_secs_f64();
    if mode == "sbma" {
        let s = SBMA.stats().unwrap();
        eprintln!(
            "sbma: {} MiB small, {} MiB large, peak resident {} MiB, {} faults, {} pages read, {} written",
            s.small_bytes >> 20,
            s.large_bytes >> 20,
            s.pager.peak_resident >> 20,
            s.pager.read_faults + s.pager.write_faults,
            s.pager.pages_read,
            s.pager.pages_written
        );
    }
    println!(
        "RESULT {} {} {}",
        build.as_secs_f64(),
        scan.as_secs_f64(),
        rate
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(&args[i + 1..]);
        return;
    }
    let (mut n, mut limit_bytes, mut lookups) = (10_000_000u64, 256usize << 20, 100_000u64);
    let mut only: Vec<String> = Vec::new();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--entries" => n = parse_size(&val()).expect("--entries") as u64,
            "--limit" => limit_bytes = parse_size(&val()).expect("--limit"),
            "--lookups" => lookups = val().parse().expect("--lookups"),
            "--only" => only = val().split(',').map(str::to_owned).collect(),
            _ => {} // cargo bench passes --bench
        }
    }
    // About 110 bytes per entry in all (both structures and boxes).
    let data = n as usize * 110;
    let limit = Limit::set_up(data + data / 2, limit_bytes);
    println!(
        "out-of-core heap: {n} entries (~{} MiB), memory limit {} MiB; {}",
        data >> 20,
        limit_bytes >> 20,
        match &limit {
            Some(l) => format!(
                "cgroup {} + swap file {}",
                l.cgroup.display(),
                l.swap.display()
            ),
            None => "NO LIMIT (see above): sbma only".into(),
        }
    );
    let mut modes = vec!["sbma"];
    if limit.is_some() {
        modes.insert(0, "system");
    }
    modes.retain(|m| only.is_empty() || only.iter().any(|o| m.starts_with(o.as_str())));
    println!(
        "{:<8} {:>10} {:>10} {:>14}",
        "mode", "build s", "scan s", "lookups/s"
    );
    let mut results = Vec::new();
    for mode in modes {
        drop_caches();
        let procs = limit
            .as_ref()
            .map_or_else(String::new, |l| l.procs().display().to_string());
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--child",
                mode,
                &n.to_string(),
                &lookups.to_string(),
                &procs,
            ])
            .env(
                "SBMA_BENCH_HEAP_BUDGET",
                limit_bytes.saturating_sub(HEADROOM).to_string(),
            )
            .output()
            .unwrap();
        let v = match sbma_benches::child::result(&out) {
            Ok(v) => v,
            Err(e) => {
                println!("{mode:<8} {e}");
                continue;
            }
        };
        println!("{mode:<8} {:>10.2} {:>10.2} {:>14.0}", v[0], v[1], v[2]);
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        results.push((mode, v));
    }
    if let [(_, sys), (_, sb)] = results.as_slice() {
        println!(
            "sbma vs system+swap: build {:.2}x, scan {:.2}x, lookups {:.2}x (higher is better)",
            sys[0] / sb[0],
            sys[1] / sb[1],
            sb[2] / sys[2]
        );
    }
    drop(limit);
}
