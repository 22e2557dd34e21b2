//! Policy decision cost: victims selected per second with 1M tracked pages.
//!
//! Each policy tracks 1,048,576 pages, a quarter of them re-accessed (so
//! CLOCK's bits are mixed and LRU's order is shuffled) and every 64th page
//! ineligible (pinned or busy). One iteration selects a batch of 1024
//! victims and re-admits them (the steady state of a pager under pressure:
//! pages leave and come back), so the figure includes the bookkeeping a
//! pager pays per victim.
//!
//! Criterion prints its own statistics; the summary table at the end gives
//! victims/s per policy and the ratio against FIFO (the cheapest possible
//! decision) measured in the same run.
//!
//! Run: `cargo bench -p sbma-benches --bench policy`

use criterion::{Criterion, Throughput};
use sbma_core::{AnyPolicy, EvictionPolicy, PageCount, PageIndex, PolicyKind};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PAGES: usize = 1 << 20;
const BATCH: usize = 1024;

fn evictable(p: PageIndex) -> bool {
    p.0 % 64 != 0
}

/// A policy tracking every page, a quarter of them accessed again.
fn loaded(kind: PolicyKind) -> AnyPolicy {
    let mut p = kind.build(PageCount(PAGES));
    for i in 0..PAGES {
        p.admit(PageIndex(i));
    }
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for _ in 0..PAGES / 4 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p.access(PageIndex(x as usize % PAGES));
    }
    p
}

/// Selects one batch and re-admits it; returns the number of victims.
fn cycle(p: &mut AnyPolicy, victims: &mut Vec<PageIndex>) -> usize {
    victims.clear();
    p.select(PageCount(BATCH), &mut |i| evictable(i), victims);
    for &v in victims.iter() {
        p.admit(v);
    }
    victims.len()
}

fn criterion_runs(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy_select_1M_pages");
    g.throughput(Throughput::Elements(BATCH as u64));
    for kind in PolicyKind::ALL
        .into_iter()
        .filter(|&k| k != PolicyKind::EvictAll)
    {
        let mut p = loaded(kind);
        let mut victims = Vec::with_capacity(PAGES);
        g.bench_function(kind.name(), |b| {
            b.iter(|| black_box(cycle(&mut p, &mut victims)))
        });
    }
    g.finish();
}

/// Victims per second over about `budget` of wall time.
fn rate(kind: PolicyKind, budget: Duration) -> f64 {
    let mut p = loaded(kind);
    let mut victims = Vec::with_capacity(PAGES);
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < budget {
        n += black_box(cycle(&mut p, &mut victims));
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_runs(&mut c);
    c.final_summary();

    // "Evict all" selects every evictable page per call: one call at 1M
    // pages is its natural unit.
    let mut all = loaded(PolicyKind::EvictAll);
    let mut victims = Vec::with_capacity(PAGES);
    let t = Instant::now();
    all.select(PageCount(1), &mut |i| evictable(i), &mut victims);
    let all_rate = victims.len() as f64 / t.elapsed().as_secs_f64();

    println!("\npolicy decision cost, {PAGES} tracked pages, batches of {BATCH} (summary run)");
    println!("{:<8} {:>16} {:>12}", "policy", "victims/s", "vs fifo");
    let fifo = rate(PolicyKind::Fifo, Duration::from_secs(1));
    for kind in [PolicyKind::Fifo, PolicyKind::Lru, PolicyKind::Clock] {
        let r = if kind == PolicyKind::Fifo {
            fifo
        } else {
            rate(kind, Duration::from_secs(1))
        };
        println!("{:<8} {:>16.0} {:>11.2}x", kind.name(), r, r / fifo);
    }
    println!(
        "{:<8} {:>16.0} {:>11.2}x  (one call, all {} victims)",
        "all",
        all_rate,
        all_rate / fifo,
        victims.len()
    );
}
