//! The background writer and prefetcher against real faults and a real
//! backing file: they do the work (their counters move), they lose nothing
//! (every word checked, several threads), they race safely with explicit
//! evictions, and a pager is dropped cleanly with prefetches in flight.
#![allow(
    unsafe_code,
    reason = "tests access managed memory through raw pointers"
)]

#[macro_use]
mod common;

use common::{Variant, load, store};
use sbma_pager::Pager;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const BUDGET: usize = 8 << 20;
const LEN: usize = 4 * BUDGET;
const WORDS: usize = LEN / 8;
const THREADS: usize = 4;

fn value(i: usize, pass: u64) -> u64 {
    (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ pass
}

fn pager(b: Variant, background: bool) -> Pager {
    b.apply(
        Pager::builder()
            .budget(BUDGET)
            .page_size(16 << 10)
            .background_io(background),
    )
    .build()
    .unwrap()
}

/// Each thread streams through its own quarter: write, then read-check-
/// rewrite, then check. Returns the pager's statistics.
fn streams(pager: &Pager) -> sbma_pager::Stats {
    let region = pager.alloc(LEN).unwrap();
    let base = region.as_mut_ptr() as usize;
    let share = WORDS / THREADS;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            s.spawn(move || {
                let p = base as *mut u64;
                let words = t * share..(t + 1) * share;
                for i in words.clone() {
                    // SAFETY: i < WORDS, inside the region.
                    unsafe { store(p, i, value(i, 0)) };
                }
                for i in words.clone() {
                    // SAFETY: as above.
                    let v = unsafe { load(p, i) };
                    assert_eq!(v, value(i, 0), "word {i} after the write pass");
                    // SAFETY: as above.
                    unsafe { store(p, i, value(i, 1)) };
                }
                for i in words {
                    // SAFETY: as above.
                    let v = unsafe { load(p, i) };
                    assert_eq!(v, value(i, 1), "word {i} after the rewrite pass");
                }
            });
        }
    });
    pager.check_invariants().unwrap();
    let s = pager.stats();
    assert!(s.peak_resident <= BUDGET as u64, "{s:?}");
    s
}

per_backend! {
    writer_and_prefetcher_do_the_work_and_lose_nothing => writer_and_prefetcher_do_the_work_and_lose_nothing_on;
    without_background_io_the_faulting_threads_do_it_all => without_background_io_the_faulting_threads_do_it_all_on;
    prefetch_races_with_evict_all => prefetch_races_with_evict_all_on;
    dropping_with_prefetches_in_flight_is_clean => dropping_with_prefetches_in_flight_is_clean_on;
}

fn writer_and_prefetcher_do_the_work_and_lose_nothing_on(b: Variant) {
    let pager = pager(b, true);
    let s = streams(&pager);
    eprintln!("{b:?}: background on: {s:?}");
    assert!(s.pages_evicted_ahead > 0, "the writer never ran: {s:?}");
    assert!(s.pages_prefetched > 0, "the prefetcher never ran: {s:?}");
    assert!(s.pages_evicted_ahead <= s.pages_evicted, "{s:?}");
}

fn without_background_io_the_faulting_threads_do_it_all_on(b: Variant) {
    let pager = pager(b, false);
    let s = streams(&pager);
    eprintln!("{b:?}: background off: {s:?}");
    assert_eq!(s.pages_evicted_ahead, 0, "{s:?}");
    assert_eq!(s.pages_prefetched, 0, "{s:?}");
    assert!(s.pages_evicted > 0 && s.pages_read > 0, "{s:?}");
}

fn prefetch_races_with_evict_all_on(b: Variant) {
    // A reader streams through the region, again and again, while another
    // thread evicts everything in a loop: prefetched pages, pages being
    // prefetched and pages being evicted meet in every order.
    let pager = pager(b, true);
    let region = pager.alloc(LEN).unwrap();
    let p = region.as_mut_ptr().cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: i < WORDS.
        unsafe { store(p, i, value(i, 7)) };
    }
    let stop = Arc::new(AtomicBool::new(false));
    let evictor = {
        let (pager, stop) = (pager.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u32;
            while !stop.load(Ordering::Relaxed) {
                pager.evict_all().unwrap();
                rounds += 1;
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            rounds
        })
    };
    let base = p as usize;
    for round in 0..4 {
        for i in 0..WORDS {
            // SAFETY: as above.
            let v = unsafe { load(base as *const u64, i) };
            assert_eq!(v, value(i, 7), "round {round}, word {i}");
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = evictor.join().unwrap();
    pager.check_invariants().unwrap();
    let s = pager.stats();
    eprintln!("{b:?}: {rounds} evict_all rounds: {s:?}");
    assert!(rounds > 0 && s.pages_prefetched > 0, "{s:?}");
}

fn dropping_with_prefetches_in_flight_is_clean_on(b: Variant) {
    // Start a stream over evicted pages (so prefetches are posted), then
    // drop the region and the pager at once: the drop waits for the loads
    // in flight, frees everything and stops the threads.
    for _ in 0..20 {
        let pager = pager(b, true);
        let region = pager.alloc(LEN).unwrap();
        let p = region.as_mut_ptr().cast::<u64>();
        for i in 0..WORDS {
            // SAFETY: i < WORDS.
            unsafe { store(p, i, value(i, 3)) };
        }
        pager.evict_all().unwrap();
        for i in (0..WORDS / 4).step_by(512) {
            // SAFETY: as above.
            assert_eq!(unsafe { load(p, i) }, value(i, 3));
        }
        drop(region);
        assert_eq!(pager.stats().resident, 0);
        drop(pager);
    }
}
