//! Threads at 4x the budget, every word checked, residency sampled.
#![allow(
    unsafe_code,
    reason = "tests access managed memory through raw pointers"
)]

mod common;

use common::Variant;
use common::{load, resident_bytes, store};
use sbma_core::conformance::Rng;
use sbma_pager::{FillMethod, Pager, PolicyKind};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

const THREADS: usize = 4;
const BUDGET: usize = 8 << 20;
const LEN: usize = 4 * BUDGET;
const WORDS: usize = LEN / 8;
/// Pages evicted per reclaim (set explicitly: the sampler's bound uses it).
const BATCH: usize = 16;

/// Word `i` holds `i << 24 | version` once written (version < 2^24), so a
/// read of zeros, stale or misplaced data is detected by anyone; the owner
/// (thread `i % THREADS`) also knows the exact version.
fn value(i: usize, version: u64) -> u64 {
    ((i as u64) << 24) | version
}

fn run(policy: PolicyKind, fill: Variant, page: usize, background: bool) {
    let pager = fill
        .apply(
            Pager::builder()
                .budget(BUDGET)
                .page_size(page)
                .policy(policy)
                .reclaim_batch(BATCH)
                .background_io(background),
        )
        .build()
        .unwrap();
    let in_flight = if background {
        BATCH.max(BUDGET / 4 / page)
    } else {
        BATCH
    };
    let region = pager.alloc(LEN).unwrap();
    let base = region.as_mut_ptr() as usize;
    let done = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS + 2)); // workers, sampler, main

    // Sampler: the pager's charge must stay within the budget at all
    // times. mincore scans the region page by page while other threads
    // load and evict, so one scan can count a page early and another that
    // became resident after the first was released. A page counted in the
    // scan but gone at its end was released during it, and releases happen
    // only in eviction, one reclaim batch at a time under the eviction lock,
    // counted (pages_evicted) as each run of it is done. So the scan may
    // exceed the budget by at most the pages evicted while it ran plus one
    // batch still in flight: BATCH pages for a fault, at most a quarter of
    // the budget for the background writer (it evicts towards twice its
    // reserve, and the reserve is at most an eighth of the budget). (The exact check is at the pass barriers below, with
    // every worker stopped.)
    let sampler = {
        let (pager, done, max_seen, barrier) = (
            pager.clone(),
            done.clone(),
            max_seen.clone(),
            barrier.clone(),
        );
        std::thread::spawn(move || {
            barrier.wait();
            let mut samples = 0;
            while !done.load(Ordering::Relaxed) {
                let before = pager.stats().pages_evicted as usize;
                let kernel = resident_bytes(base as *const u8, LEN);
                let s = pager.stats();
                let released = s.pages_evicted as usize - before + in_flight;
                assert!(
                    kernel <= BUDGET + released * page,
                    "mincore: {kernel} B resident over a {BUDGET} B budget (at most {released} pages released during the scan)"
                );
                assert!(
                    s.resident as usize <= BUDGET,
                    "pager: {} B charged over a {BUDGET} B budget",
                    s.resident
                );
                max_seen.fetch_max(kernel, Ordering::Relaxed);
                samples += 1;
                std::thread::sleep(std::time::Duration::from_micros(500));
            }
            samples
        })
    };
    let quiet = Arc::new(Barrier::new(THREADS + 1));

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (barrier, quiet) = (barrier.clone(), quiet.clone());
            std::thread::spawn(move || {
                let p = base as *mut u64;
                let mut versions = vec![0u64; WORDS / THREADS];
                let mut rng = Rng::new(0x9E37_79B9 * (t as u64 + 1));
                barrier.wait();
                let mut checked = 0usize;
                for pass in 0..3 {
                    for _ in 0..12_000 {
                        let i = rng.below(WORDS);
                        // SAFETY: i < WORDS, inside the region.
                        let v = unsafe { load(p, i) };
                        assert!(
                            v == 0 || v >> 24 == i as u64,
                            "pass {pass}: word {i} holds {v:#x}"
                        );
                        if i % THREADS == t {
                            let mine = &mut versions[i / THREADS];
                            assert_eq!(
                                v,
                                if *mine == 0 { 0 } else { value(i, *mine) },
                                "own word {i} lost a write"
                            );
                            if rng.below(2) == 0 {
                                *mine += 1;
                                // SAFETY: as above.
                                unsafe { store(p, i, value(i, *mine)) };
                            }
                        }
                        checked += 1;
                    }
                    // A sequential sweep over this thread's words.
                    for (k, &version) in versions.iter().enumerate() {
                        let i = k * THREADS + t;
                        // SAFETY: as above.
                        let v = unsafe { load(p, i) };
                        let want = if version == 0 { 0 } else { value(i, version) };
                        assert_eq!(v, want, "pass {pass}: sweep found word {i} = {v:#x}");
                    }
                    // Stop together so the main thread can check the
                    // kernel's residency exactly, then go on.
                    quiet.wait();
                    quiet.wait();
                }
                checked
            })
        })
        .collect();
    barrier.wait();
    for pass in 0..3 {
        quiet.wait();
        let kernel = resident_bytes(base as *const u8, LEN);
        let charged = pager.stats().resident as usize;
        assert!(
            kernel <= charged,
            "pass {pass}: mincore {kernel} B exceeds the {charged} B charged"
        );
        assert!(
            charged <= BUDGET,
            "pass {pass}: {charged} B charged over the budget"
        );
        pager.check_invariants().unwrap();
        quiet.wait();
    }
    let checked: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap();
    let s = pager.stats();
    pager.check_invariants().unwrap();
    assert!(
        s.pages_written > 0 && s.pages_read > 0,
        "no paging happened: {s:?}"
    );
    assert!(s.peak_resident <= BUDGET as u64);
    eprintln!(
        "{policy} {fill:?} {page}: {checked} random checks, {samples} samples (max mincore {} KiB), {s:?}",
        max_seen.load(Ordering::Relaxed) >> 10
    );
}

// Each scenario runs on every backend available (common::backends).

#[test]
fn four_threads_four_times_the_budget_clock() {
    for b in common::backends() {
        run(PolicyKind::Clock, b, 16 << 10, true);
    }
}

#[test]
fn four_threads_four_times_the_budget_clock_without_background_io() {
    for b in common::backends() {
        run(PolicyKind::Clock, b, 16 << 10, false);
    }
}

#[test]
fn four_threads_four_times_the_budget_lru_remap() {
    for b in common::backends_with(FillMethod::Remap) {
        run(PolicyKind::Lru, b, 64 << 10, true);
    }
}

#[test]
fn four_threads_four_times_the_budget_fifo_small_pages() {
    for b in common::backends() {
        run(PolicyKind::Fifo, b, 4 << 10, true);
    }
}
