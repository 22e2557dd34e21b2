//! `sbma demo`: an out-of-core workload through a small budget, every byte
//! verified.
//!
//! By default it runs on the real pager: a region of `--size` bytes in an
//! arena whose resident memory is capped at `--budget`, written and read
//! with plain memory accesses that fault pages in and out of a backing file.
//! `--sim` runs the same workload on the core's in-process model instead.
#![allow(
    unsafe_code,
    reason = "the demo accesses storage-backed memory through raw pointers"
)]

use sbma_core::units::parse_size;
use sbma_core::{AnyPolicy, Budget, PageSize, PolicyKind, SimMachine};
use sbma_pager::{Pager, Region};
use std::time::Instant;

/// The demo's settings.
#[derive(Debug)]
pub struct Options {
    size: usize,
    budget: usize,
    page_size: usize,
    policy: PolicyKind,
    backend: sbma_pager::Backend,
    seed: u64,
    sim: bool,
}

impl Options {
    /// Parses the demo's flags.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            size: 1 << 30,
            budget: 128 << 20,
            page_size: sbma_pager::DEFAULT_PAGE_SIZE,
            policy: PolicyKind::Clock,
            backend: sbma_pager::Backend::Auto,
            seed: 1,
            sim: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            if flag == "--sim" {
                o.sim = true;
                continue;
            }
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let size = || parse_size(value).map_err(|e| format!("{flag} {value}: {e}"));
            match flag.as_str() {
                "--size" => o.size = size()?,
                "--budget" => o.budget = size()?,
                "--page-size" => o.page_size = size()?,
                "--backend" => {
                    o.backend = value
                        .parse()
                        .map_err(|e| format!("--backend {value}: {e}"))?
                }
                "--policy" => {
                    o.policy = value
                        .parse()
                        .map_err(|e| format!("--policy {value}: {e}"))?
                }
                "--seed" => {
                    o.seed = value
                        .parse()
                        .map_err(|_| format!("--seed {value}: expected a number"))?
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

/// Byte-addressed memory the workload runs on.
trait Memory {
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), String>;
    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), String>;
    fn evict_all(&mut self) -> Result<(), String>;
    /// Bytes of memory held right now, as the backend itself sees it.
    fn held(&self) -> usize;
}

/// The real pager: plain memory copies; faults do the paging.
struct Real {
    region: Region,
}

impl Memory for Real {
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), String> {
        assert!(offset + buf.len() <= self.region.len());
        // SAFETY: the range lies in the live region; the copy faults pages
        // in as needed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.region.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), String> {
        assert!(offset + data.len() <= self.region.len());
        // SAFETY: as in `read`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.region.as_mut_ptr().add(offset),
                data.len(),
            )
        };
        Ok(())
    }

    fn evict_all(&mut self) -> Result<(), String> {
        self.region
            .pager()
            .evict_all()
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn held(&self) -> usize {
        self.region.pager().stats().resident as usize
    }
}

impl Memory for SimMachine<AnyPolicy> {
    fn read(&mut self, offset: usize, buf: &mut [u8]) -> Result<(), String> {
        SimMachine::read(self, offset, buf).map_err(|e| e.to_string())
    }

    fn write(&mut self, offset: usize, data: &[u8]) -> Result<(), String> {
        SimMachine::write(self, offset, data).map_err(|e| e.to_string())
    }

    fn evict_all(&mut self) -> Result<(), String> {
        self.engine_mut()
            .evict_all()
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn held(&self) -> usize {
        self.engine().backend().resident_bytes()
    }
}

fn byte(seed: u64, generation: u64, offset: usize) -> u8 {
    let x = (offset as u64 ^ seed.rotate_left(32) ^ generation.rotate_left(48))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8
}

/// Runs the demo.
pub fn run(o: Options) -> Result<(), String> {
    let page = PageSize::new(o.page_size, 4096).map_err(|e| format!("--page-size: {e}"))?;
    let pages = page.pages_for(o.size).map_err(|e| format!("--size: {e}"))?;
    let len = page
        .len_of(pages)
        .map_err(|e| format!("--size: {e}"))?
        .bytes();
    println!(
        "sbma demo: {} MiB of data through a {} MiB budget ({:.1}x), {} pages, policy {}",
        len >> 20,
        o.budget >> 20,
        len as f64 / o.budget as f64,
        page,
        o.policy
    );
    if o.sim {
        println!(
            "backend: sim (the core's in-process model: same state machine, table, policy and budget)"
        );
        let mut m = SimMachine::new(o.policy.build(pages), page, pages, o.budget)
            .map_err(|e| format!("--budget: {e}"))?;
        let peak = workload(&mut m, &o, page.bytes(), len)?;
        m.engine().check_invariants();
        let s = m.engine().stats();
        let mib = |n: u64| (n << page.shift()) as f64 / (1 << 20) as f64;
        println!("stats:");
        println!("  faults: {} read, {} write", s.read_faults, s.write_faults);
        println!(
            "  read in {:.1} MiB, written back {:.1} MiB in {} runs, evicted {} pages",
            mib(s.pages_read),
            mib(s.pages_written),
            s.write_runs,
            s.pages_evicted
        );
        finish(
            peak,
            m.engine().budget().limit(),
            m.engine().budget().peak(),
            len,
        )
    } else {
        let pager = Pager::builder()
            .budget(o.budget)
            .page_size(o.page_size)
            .policy(o.policy)
            .backend(o.backend)
            .max_size(len.max(o.budget))
            .build()
            .map_err(|e| e.to_string())?;
        println!(
            "backend: {}, backing file in $TMPDIR or /tmp, background writer and prefetchers",
            match pager.backend() {
                sbma_pager::Backend::Uffd => "uffd (userfaultfd: missing and write-protect faults)",
                _ => "signal (mprotect + SIGSEGV)",
            }
        );
        if let Some(note) = pager.stats().backend_note {
            println!("  (signal because {note})");
        }
        let mut m = Real {
            region: pager.alloc(len).map_err(|e| e.to_string())?,
        };
        let peak = workload(&mut m, &o, page.bytes(), len)?;
        pager.check_invariants()?;
        let s = pager.stats();
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        println!("stats:");
        println!(
            "  faults: {} read, {} write, {} waits",
            s.read_faults, s.write_faults, s.waits
        );
        println!(
            "  read {:.1} MiB in {:.2} s, wrote {:.1} MiB in {:.2} s ({} runs), evicted {} pages",
            mib(s.bytes_read),
            s.read_ns as f64 / 1e9,
            mib(s.bytes_written),
            s.write_ns as f64 / 1e9,
            s.write_runs,
            s.pages_evicted
        );
        println!(
            "  background: {} pages evicted ahead by the writer, {} prefetched; store {}",
            s.pages_evicted_ahead,
            s.pages_prefetched,
            if pager.direct_io() {
                "O_DIRECT"
            } else {
                "buffered (O_DIRECT refused)"
            }
        );
        finish(peak, s.budget as usize, s.peak_resident as usize, len)
    }
}

fn finish(peak_held: usize, budget: usize, peak_charged: usize, len: usize) -> Result<(), String> {
    let mib = |b: usize| b as f64 / (1 << 20) as f64;
    println!(
        "  budget {:.1} MiB, peak charged {:.1} MiB, peak memory held {:.1} MiB",
        mib(budget),
        mib(peak_charged),
        mib(peak_held)
    );
    if peak_held > budget || peak_charged > budget {
        return Err("memory above the budget".into());
    }
    println!(
        "verified: every byte of {} MiB matches (0 mismatches)",
        len >> 20
    );
    Ok(())
}

/// Sequential write, random read-modify-write of a quarter of the pages,
/// evict all, sequential verify. Returns the most memory seen held.
fn workload(m: &mut dyn Memory, o: &Options, chunk: usize, len: usize) -> Result<usize, String> {
    let pages = len / chunk;
    let mut buf = vec![0u8; chunk];
    let mut generation = vec![1u64; pages];
    let mut bad = 0usize;
    let mut peak = 0usize;

    let t = Instant::now();
    for (p, &g) in generation.iter().enumerate() {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = byte(o.seed, g, p * chunk + i);
        }
        m.write(p * chunk, &buf)?;
        peak = peak.max(m.held());
    }
    report("sequential write", len, t);

    let t = Instant::now();
    let mut x = o.seed | 1;
    let touches = (pages / 4).max(1);
    for _ in 0..touches {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = (x % pages as u64) as usize;
        m.read(p * chunk, &mut buf)?;
        bad += count_bad(&buf, o.seed, generation[p], p * chunk);
        generation[p] += 1;
        for (i, b) in buf.iter_mut().enumerate() {
            *b = byte(o.seed, generation[p], p * chunk + i);
        }
        m.write(p * chunk, &buf)?;
        peak = peak.max(m.held());
    }
    report("random read-modify-write", touches * chunk * 2, t);

    let t = Instant::now();
    m.evict_all()?;
    for (p, &g) in generation.iter().enumerate() {
        m.read(p * chunk, &mut buf)?;
        bad += count_bad(&buf, o.seed, g, p * chunk);
        peak = peak.max(m.held());
    }
    report("evict all + sequential verify", len, t);
    if bad != 0 {
        return Err(format!("verification FAILED: {bad} bytes differ"));
    }
    Ok(peak)
}

fn count_bad(buf: &[u8], seed: u64, generation: u64, off: usize) -> usize {
    buf.iter()
        .enumerate()
        .filter(|&(i, &b)| b != byte(seed, generation, off + i))
        .count()
}

fn report(what: &str, bytes: usize, t: Instant) {
    let s = t.elapsed().as_secs_f64();
    let mib = bytes as f64 / (1 << 20) as f64;
    println!(
        "  {what:<32} {mib:>8.1} MiB in {s:>6.2} s ({:>8.1} MiB/s)",
        mib / s.max(1e-9)
    );
}
