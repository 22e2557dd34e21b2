//! In-core allocator benchmarks (issue 4): `SbmaAlloc` against the system
//! allocator (glibc) and mimalloc, measured in the same run, with a budget
//! larger than the working set (nothing is evicted: this measures the
//! allocator, not the pager).
//!
//! Workloads, each on all three allocators through `GlobalAlloc`:
//! - `ring <size>`: one thread keeps a ring of live blocks; each step frees
//!   the oldest, allocates a new one and writes its first byte (the
//!   scalingtest pattern of Douglas 2011);
//! - `larson`: two threads replace random slots of their own with blocks of
//!   random sizes (16 B to 1 KiB), and swap their slot arrays every 50,000
//!   operations, so the first frees after each swap are remote (about
//!   1,000 of every 50,000: measured 2% of frees; after larson); and
//!   the same with one thread (no remote frees: the allocator's own cost
//!   under random sizes and random frees);
//! - `prodcons`: one thread allocates blocks of 16 to 512 bytes and sends
//!   them in batches to another, which frees them (every free is remote);
//! - `realloc grow`: one thread grows an object from 1 MiB to 64 MiB by
//!   doubling `realloc`s, a 64 KiB block allocated after it each time so
//!   it cannot always grow in place, and touches every 4 KiB of each new
//!   tail (a growing vector). Its figure is MB/s of contents carried
//!   across the `realloc`s (glibc's large blocks are `mmap`ed and moved by
//!   `mremap`; in core, sbma and mimalloc copy).
//!
//! Each workload runs `--reps` times (default 5) per allocator, in
//! rotation; the best run counts. Ratios are sbma's throughput over the
//! other's (above 1: sbma is faster).
//!
//! Run: `cargo bench -p sbma-benches --bench alloc [-- --reps 5 --scale 1.0
//! --only ring,larson,prodcons --allocators glibc,mimalloc,sbma]`
//! (`--allocators` for profiling one; ratios need all three).
#![allow(unsafe_code, reason = "drives allocators through GlobalAlloc")]
#![allow(missing_docs, reason = "a benchmark binary")]

use sbma_alloc::SbmaAlloc;
use sbma_alloc::sbma_pager::Pager;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// An allocator under test; pointers cross threads as `usize`.
#[derive(Clone, Copy)]
struct Under(&'static (dyn GlobalAlloc + Sync));

impl Under {
    #[inline]
    fn alloc(&self, size: usize) -> usize {
        // SAFETY: non-zero size, align 16 (all three serve it).
        let p = unsafe { self.0.alloc(Layout::from_size_align_unchecked(size, 16)) };
        assert!(!p.is_null(), "allocation of {size} bytes failed");
        // SAFETY: at least one byte.
        unsafe { p.write(size as u8) };
        p as usize
    }

    #[inline]
    fn free(&self, p: usize, size: usize) {
        // SAFETY: allocated above with this layout.
        unsafe {
            self.0
                .dealloc(p as *mut u8, Layout::from_size_align_unchecked(size, 16))
        };
    }
}

fn ring(a: Under, size: usize, live: usize, ops: usize) -> Duration {
    let mut blocks: Vec<usize> = (0..live).map(|_| a.alloc(size)).collect();
    let start = Instant::now();
    for i in 0..ops {
        let slot = i % live;
        a.free(blocks[slot], size);
        blocks[slot] = a.alloc(size);
    }
    let t = start.elapsed();
    for b in blocks {
        a.free(b, size);
    }
    t
}

/// Slots hold (pointer, size).
type Slots = Vec<(usize, usize)>;

fn larson(a: Under, threads: usize, slots: usize, ops: usize) -> Duration {
    const ROUND: usize = 50_000;
    let exchange: Arc<Mutex<Vec<Slots>>> = Arc::new(Mutex::new(Vec::new()));
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (exchange, barrier) = (exchange.clone(), barrier.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + t as u64);
                let mut mine: Slots = (0..slots)
                    .map(|_| {
                        let s = 16 + rng.below(1009) as usize;
                        (a.alloc(s), s)
                    })
                    .collect();
                barrier.wait();
                for round in 0..ops / ROUND {
                    for _ in 0..ROUND {
                        let i = rng.below(slots as u64) as usize;
                        let (p, s) = mine[i];
                        a.free(p, s);
                        let s = 16 + rng.below(1009) as usize;
                        mine[i] = (a.alloc(s), s);
                    }
                    // Hand our slots over and take another thread's.
                    let mut x = exchange.lock().unwrap();
                    x.push(std::mem::take(&mut mine));
                    let pick = (t + round) % x.len();
                    mine = x.swap_remove(pick);
                }
                barrier.wait();
                mine
            })
        })
        .collect();
    barrier.wait();
    let start = Instant::now();
    barrier.wait();
    let t = start.elapsed();
    for h in handles {
        for (p, s) in h.join().unwrap() {
            a.free(p, s);
        }
    }
    for slots in exchange.lock().unwrap().drain(..) {
        for (p, s) in slots {
            a.free(p, s);
        }
    }
    t
}

/// The block allocated after the growing object at each step: large
/// enough to be placed right after it (a small block would come from a
/// span of small blocks elsewhere and not block anything).
const BLOCKER: usize = 64 << 10;

/// Grows an object 1 MiB -> 64 MiB `passes` times (see the module doc).
fn realloc_grow(a: Under, passes: usize) -> Duration {
    let t0 = Instant::now();
    for _ in 0..passes {
        let mut len = 1usize << 20;
        let mut p = a.alloc(len) as *mut u8;
        touch(p, 0, len);
        let mut blockers = Vec::new();
        while len < 64 << 20 {
            blockers.push(a.alloc(BLOCKER));
            // SAFETY: `p` is live with this layout; the size is non-zero.
            p = unsafe {
                a.0.realloc(p, Layout::from_size_align_unchecked(len, 16), 2 * len)
            };
            assert!(!p.is_null(), "realloc to {} bytes failed", 2 * len);
            touch(p, len, 2 * len);
            len *= 2;
        }
        a.free(p as usize, len);
        for b in blockers {
            a.free(b, BLOCKER);
        }
    }
    t0.elapsed()
}

/// Writes one byte in every 4 KiB of `[p + from, p + to)`.
fn touch(p: *mut u8, from: usize, to: usize) {
    for i in (from..to).step_by(4096) {
        // SAFETY: inside the caller's live block.
        unsafe { p.add(i).write(i as u8) };
    }
}

fn prodcons(a: Under, blocks: usize) -> Duration {
    const BATCH: usize = 256;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Slots>(64);
    let start = Instant::now();
    let consumer = std::thread::spawn(move || {
        for batch in rx {
            for (p, s) in batch {
                a.free(p, s);
            }
        }
    });
    let mut rng = Rng(42);
    for _ in 0..blocks / BATCH {
        let batch: Slots = (0..BATCH)
            .map(|_| {
                let s = 16 + rng.below(497) as usize;
                (a.alloc(s), s)
            })
            .collect();
        tx.send(batch).unwrap();
    }
    drop(tx);
    consumer.join().unwrap();
    start.elapsed()
}

struct Args {
    reps: usize,
    scale: f64,
    only: Vec<String>,
    /// Run only these allocators (for profiling one of them).
    allocators: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        reps: 5,
        scale: 1.0,
        only: Vec::new(),
        allocators: Vec::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        match argv[i].as_str() {
            "--reps" => {
                a.reps = argv[i + 1].parse().expect("--reps N");
                i += 1;
            }
            "--scale" => {
                a.scale = argv[i + 1].parse().expect("--scale F");
                i += 1;
            }
            "--only" => {
                a.only = argv[i + 1].split(',').map(str::to_owned).collect();
                i += 1;
            }
            "--allocators" => {
                a.allocators = argv[i + 1].split(',').map(str::to_owned).collect();
                i += 1;
            }
            _ => {} // cargo bench passes --bench
        }
        i += 1;
    }
    a
}

fn main() {
    let args = args();
    let sbma: &'static SbmaAlloc = Box::leak(Box::new(
        SbmaAlloc::builder()
            .pager(Pager::builder().budget(8 << 30).max_size(64 << 30))
            .build()
            .expect("sbma starts"),
    ));
    let under: [(&str, Under); 3] = [
        ("glibc", Under(&System)),
        ("mimalloc", Under(&mimalloc::MiMalloc)),
        ("sbma", Under(sbma)),
    ];
    let n = |x: usize| ((x as f64 * args.scale) as usize).max(1000);
    type Work = Box<dyn Fn(Under) -> Duration>;
    let mut work: Vec<(String, usize, Work)> = Vec::new();
    for size in [
        16,
        64,
        256,
        1 << 10,
        4 << 10,
        16 << 10,
        64 << 10,
        256 << 10,
        1 << 20,
    ] {
        let (live, ops) = if size <= 16 << 10 {
            (1000, n(4_000_000))
        } else {
            (100, n(400_000))
        };
        let label = if size >= 1 << 10 {
            format!("ring {}K", size >> 10)
        } else {
            format!("ring {size}")
        };
        work.push((label, ops, Box::new(move |a| ring(a, size, live, ops))));
    }
    let larson_ops = n(2_000_000);
    work.push((
        "larson 2 threads".into(),
        2 * larson_ops,
        Box::new(move |a| larson(a, 2, 1000, larson_ops)),
    ));
    work.push((
        "larson 1 thread".into(),
        larson_ops,
        Box::new(move |a| larson(a, 1, 1000, larson_ops)),
    ));
    let pc = n(4_000_000);
    work.push(("prodcons".into(), pc, Box::new(move |a| prodcons(a, pc))));
    // Bytes carried per pass: 1 + 2 + ... + 32 MiB (the rate's "ops"
    // are bytes, so its figure is MB/s).
    let passes = (n(2_000) / 1000).max(1) * 4;
    work.push((
        "realloc grow MB/s".into(),
        passes * (63 << 20),
        Box::new(move |a| realloc_grow(a, passes)),
    ));

    println!(
        "{:<18} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "workload (Mops/s)", "glibc", "mimalloc", "sbma", "vs glibc", "vs mimalloc"
    );
    for (label, ops, f) in &work {
        // Whole words: "ring" selects every ring, "ring 16" only that one.
        let selected = |o: &String| label == o || label.starts_with(&format!("{o} "));
        if !args.only.is_empty() && !args.only.iter().any(selected) {
            continue;
        }
        let mut best = [Duration::MAX; 3];
        for _ in 0..args.reps {
            for (i, (name, a)) in under.iter().enumerate() {
                if args.allocators.is_empty() || args.allocators.iter().any(|n| n == name) {
                    best[i] = best[i].min(f(*a));
                }
            }
        }
        let rate = |d: Duration| *ops as f64 / d.as_secs_f64() / 1e6;
        let r: Vec<f64> = best.iter().map(|&d| rate(d)).collect();
        println!(
            "{label:<18} {:>12.2} {:>12.2} {:>12.2} {:>9.2}x {:>9.2}x",
            r[0],
            r[1],
            r[2],
            r[2] / r[0],
            r[2] / r[1]
        );
    }
    if let Some(s) = sbma.stats() {
        println!(
            "sbma: {} heaps, {} faults, {} pages evicted, peak resident {} MiB",
            s.heaps,
            s.pager.read_faults + s.pager.write_faults,
            s.pager.pages_evicted,
            s.pager.peak_resident >> 20
        );
    }
}
