//! `sbma demo`: an out-of-core workload through a small budget, every byte
//! verified.
//!
//! Until the pager lands (issue 3) the demo runs on the core's `sim`
//! backend: the same state machine, page table, policy, budget and engine
//! the pager uses, with memory and the store simulated in process. It says
//! so in its output; the figures are the model's, not a disk's.

use sbma_core::units::parse_size;
use sbma_core::{AnyPolicy, Budget, EngineStats, LocalBudget, PageSize, PolicyKind, SimMachine};
use std::time::Instant;

/// The demo's settings.
#[derive(Debug)]
pub struct Options {
    size: usize,
    budget: usize,
    page_size: usize,
    policy: PolicyKind,
    seed: u64,
}

impl Options {
    /// Parses `--size`, `--budget`, `--page-size`, `--policy`, `--seed`.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            size: 256 << 20,
            budget: 64 << 20,
            page_size: 64 << 10,
            policy: PolicyKind::Clock,
            seed: 1,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let size = || parse_size(value).map_err(|e| format!("{flag} {value}: {e}"));
            match flag.as_str() {
                "--size" => o.size = size()?,
                "--budget" => o.budget = size()?,
                "--page-size" => o.page_size = size()?,
                "--policy" => {
                    o.policy = value
                        .parse()
                        .map_err(|e| format!("--policy {value}: {e}"))?;
                }
                "--seed" => {
                    o.seed = value
                        .parse()
                        .map_err(|_| format!("--seed {value}: expected a number"))?;
                }
                _ => return Err(format!("unknown option {flag} (try `sbma help`)")),
            }
        }
        if o.size == 0 {
            return Err("--size must be at least one page".into());
        }
        Ok(o)
    }
}

fn byte(seed: u64, generation: u64, offset: usize) -> u8 {
    let x = (offset as u64 ^ seed.rotate_left(32) ^ generation.rotate_left(48))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

fn mib_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / (1 << 20) as f64 / secs.max(1e-9)
}

/// Runs the demo.
pub fn run(o: Options) -> Result<(), String> {
    let page = PageSize::new(o.page_size, 4096).map_err(|e| format!("--page-size: {e}"))?;
    let pages = page.pages_for(o.size).map_err(|e| format!("--size: {e}"))?;
    let len = page
        .len_of(pages)
        .map_err(|e| format!("--size: {e}"))?
        .bytes();
    let mut m = SimMachine::new(o.policy.build(pages), page, pages, o.budget)
        .map_err(|e| format!("--budget: {e}"))?;
    println!(
        "sbma demo: {} MiB of data through a {} MiB budget ({:.1}x), {} pages, policy {}",
        len >> 20,
        o.budget >> 20,
        len as f64 / o.budget as f64,
        page,
        o.policy
    );
    println!(
        "backend: sim (in-process model of the pager; the mmap/SIGSEGV pager arrives with issue 3)"
    );

    let chunk = page.bytes().min(len);
    let mut buf = vec![0u8; chunk];
    let mut shadow_gen = vec![0u64; pages.get()];
    let mut bad = 0usize;
    let mut peak_held = 0usize;
    let track = |m: &SimMachine<AnyPolicy>, peak: &mut usize| {
        *peak = (*peak).max(m.engine().backend().resident_bytes());
    };

    // Pass 1: sequential write.
    let t = Instant::now();
    for (p, g) in shadow_gen.iter_mut().enumerate() {
        *g = 1;
        let off = p * chunk;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = byte(o.seed, 1, off + i);
        }
        m.write(off, &buf).map_err(|e| e.to_string())?;
        track(&m, &mut peak_held);
    }
    report("sequential write", len, t);

    // Pass 2: random read-modify-write of a quarter of the pages.
    let t = Instant::now();
    let mut x = o.seed | 1;
    let touches = (pages.get() / 4).max(1);
    for _ in 0..touches {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = (x % pages.get() as u64) as usize;
        let off = p * chunk;
        m.read(off, &mut buf).map_err(|e| e.to_string())?;
        bad += count_bad(&buf, o.seed, shadow_gen[p], off);
        shadow_gen[p] += 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = byte(o.seed, shadow_gen[p], off + i);
        }
        m.write(off, &buf).map_err(|e| e.to_string())?;
        track(&m, &mut peak_held);
    }
    report("random read-modify-write", touches * chunk * 2, t);

    // Pass 3: evict everything, then read it all back sequentially.
    let t = Instant::now();
    m.engine_mut().evict_all().map_err(|e| e.to_string())?;
    for (p, &g) in shadow_gen.iter().enumerate() {
        let off = p * chunk;
        m.read(off, &mut buf).map_err(|e| e.to_string())?;
        bad += count_bad(&buf, o.seed, g, off);
        track(&m, &mut peak_held);
    }
    report("evict all + sequential verify", len, t);

    m.engine().check_invariants();
    print_stats(&m.engine().stats(), m.engine().budget(), peak_held, page);
    if bad != 0 {
        return Err(format!("verification FAILED: {bad} bytes differ"));
    }
    println!(
        "verified: every byte of {} MiB matches (0 mismatches)",
        len >> 20
    );
    Ok(())
}

fn count_bad(buf: &[u8], seed: u64, generation: u64, off: usize) -> usize {
    buf.iter()
        .enumerate()
        .filter(|&(i, &b)| b != byte(seed, generation, off + i))
        .count()
}

fn report(what: &str, bytes: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    println!(
        "  {what:<32} {:>8.1} MiB in {s:>6.2} s ({:>8.1} MiB/s, sim)",
        bytes as f64 / (1 << 20) as f64,
        mib_per_s(bytes, s)
    );
}

fn print_stats(s: &EngineStats, b: &LocalBudget, peak_held: usize, page: PageSize) {
    let pages_to_mib = |n: u64| (n << page.shift()) as f64 / (1 << 20) as f64;
    println!("stats:");
    println!("  faults: {} read, {} write", s.read_faults, s.write_faults);
    println!(
        "  read in: {:.1} MiB, zero-filled: {:.1} MiB",
        pages_to_mib(s.pages_read),
        pages_to_mib(s.pages_zeroed)
    );
    println!(
        "  written back: {:.1} MiB in {} runs, evicted: {} pages, errors: {}",
        pages_to_mib(s.pages_written),
        s.write_runs,
        s.pages_evicted,
        s.backend_errors
    );
    println!(
        "  budget {:.1} MiB, peak charged {:.1} MiB, peak memory held {:.1} MiB",
        b.limit() as f64 / (1 << 20) as f64,
        b.peak() as f64 / (1 << 20) as f64,
        peak_held as f64 / (1 << 20) as f64
    );
}
