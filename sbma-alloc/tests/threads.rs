//! Threads: cross-thread frees, thread exit and heap adoption, and several
//! threads working on more data than the budget, every byte checked.

mod common;

use common::{alloc, check, fill};
use sbma_alloc::SbmaAlloc;
use std::sync::mpsc;
use std::sync::{Arc, Barrier};

/// A block handed between threads.
struct Sent {
    p: usize,
    size: usize,
    seed: u64,
}

fn sizes(i: u64) -> usize {
    match i % 16 {
        0 => 40_000 + (i as usize % 7) * 10_000, // large
        1..=5 => 1 + (i as usize * 37) % 2000,
        _ => 8 + (i as usize * 13) % 120,
    }
}

/// Producers allocate and fill, consumers check and free (every free is
/// remote); producers outlive the consumers, so their exit collects all.
fn producers_and_consumers(a: Arc<SbmaAlloc>, per_thread: u64) {
    let (tx, rx) = mpsc::sync_channel::<Sent>(1024);
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let done = Arc::new(Barrier::new(4));
    let mut handles = Vec::new();
    for t in 0..2u64 {
        let (a, tx, done) = (a.clone(), tx.clone(), done.clone());
        handles.push(std::thread::spawn(move || {
            for i in 0..per_thread {
                let seed = t << 32 | i;
                let size = sizes(i + t);
                let p = a.malloc(size);
                fill(p, size, seed);
                tx.send(Sent {
                    p: p as usize,
                    size,
                    seed,
                })
                .unwrap();
            }
            drop(tx);
            done.wait();
            0usize
        }));
    }
    drop(tx);
    for _ in 0..2 {
        let (a, rx, done) = (a.clone(), rx.clone(), done.clone());
        handles.push(std::thread::spawn(move || {
            let mut bad = 0;
            loop {
                let msg = rx.lock().unwrap().recv();
                let Ok(s) = msg else { break };
                bad += check(s.p as *const u8, s.size, s.seed);
                // SAFETY: handed over by its producer, freed once.
                unsafe { a.free(s.p as *mut u8) };
            }
            done.wait();
            bad
        }));
    }
    let bad: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(bad, 0, "bytes changed between threads");
}

#[test]
fn cross_thread_frees_in_core() {
    let a = Arc::new(alloc(256 << 20, 16 << 10));
    producers_and_consumers(a.clone(), 50_000);
    let s = a.stats().unwrap();
    assert!(
        s.classes.iter().all(|c| c.blocks == 0),
        "blocks left: {s:?}"
    );
    assert_eq!(s.large_objects, 0);
    assert_eq!(s.small_spans, 0, "every span went back once empty: {s:?}");
    assert!(s.heaps <= 4, "{s:?}");
}

#[test]
fn cross_thread_frees_out_of_core() {
    // 2 MiB of memory; about 40 MiB pass through, much of it in flight.
    let a = Arc::new(alloc(2 << 20, 16 << 10));
    producers_and_consumers(a.clone(), 20_000);
    let s = a.stats().unwrap();
    assert!(
        s.classes.iter().all(|c| c.blocks == 0),
        "blocks left: {s:?}"
    );
    assert!(s.pager.peak_resident <= 2 << 20, "{:?}", s.pager);
    a.pager().unwrap().check_invariants().unwrap();
}

#[test]
fn exited_threads_heaps_are_adopted_and_freed_into() {
    let a = Arc::new(alloc(256 << 20, 16 << 10));
    let mut kept = Vec::new();
    for round in 0..64u64 {
        let a2 = a.clone();
        // Each thread frees half its blocks and leaves the rest to us.
        let left = std::thread::spawn(move || {
            let mut left = Vec::new();
            for i in 0..2000u64 {
                let size = sizes(i);
                let p = a2.malloc(size);
                fill(p, size, round << 32 | i);
                if i % 2 == 0 {
                    // SAFETY: ours, once.
                    unsafe { a2.free(p) };
                } else {
                    left.push(Sent {
                        p: p as usize,
                        size,
                        seed: round << 32 | i,
                    });
                }
            }
            left
        })
        .join()
        .unwrap();
        kept.extend(left);
        // Free the previous round's blocks: their heap is abandoned.
        if round > 0 {
            for s in kept.drain(..kept.len() - 1000) {
                assert_eq!(check(s.p as *const u8, s.size, s.seed), 0);
                // SAFETY: handed over, freed once.
                unsafe { a.free(s.p as *mut u8) };
            }
        }
    }
    for s in kept {
        assert_eq!(check(s.p as *const u8, s.size, s.seed), 0);
        // SAFETY: as above.
        unsafe { a.free(s.p as *mut u8) };
    }
    let s = a.stats().unwrap();
    // One thread at a time (plus this one, which never got a heap: frees
    // need none): exited heaps are adopted, not multiplied.
    assert!(s.heaps <= 2, "{} heaps for 64 sequential threads", s.heaps);
    // A last thread adopts the heap and collects the frees made into it.
    let a2 = a.clone();
    std::thread::spawn(move || {
        // SAFETY: a fresh block, freed.
        unsafe { a2.free(a2.malloc(16)) }
    })
    .join()
    .unwrap();
    let s = a.stats().unwrap();
    assert!(
        s.classes.iter().all(|c| c.blocks == 0),
        "blocks left: {s:?}"
    );
    assert_eq!(s.small_spans, 0, "{s:?}");
}

#[test]
fn four_threads_four_times_the_budget() {
    const BUDGET: usize = 8 << 20;
    let a = Arc::new(alloc(BUDGET, 16 << 10));
    let per_thread = 4 * BUDGET / 4;
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let a = a.clone();
            std::thread::spawn(move || {
                let mut blocks = Vec::new();
                let mut bytes = 0;
                let mut i = 0u64;
                while bytes < per_thread {
                    let size = sizes(i + t);
                    let p = a.malloc(size);
                    fill(p, size, t << 40 | i);
                    blocks.push(Sent {
                        p: p as usize,
                        size,
                        seed: t << 40 | i,
                    });
                    bytes += size;
                    i += 1;
                }
                blocks
            })
        })
        .collect();
    let all: Vec<Vec<Sent>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    a.pager().unwrap().evict_all().unwrap();
    // Each thread checks and frees another thread's blocks.
    let all = Arc::new(std::sync::Mutex::new(all));
    let handles: Vec<_> = (0..4usize)
        .map(|t| {
            let (a, all) = (a.clone(), all.clone());
            std::thread::spawn(move || {
                let blocks = std::mem::take(&mut all.lock().unwrap()[(t + 1) % 4]);
                let mut bad = 0;
                for s in blocks {
                    bad += check(s.p as *const u8, s.size, s.seed);
                    // SAFETY: handed over, freed once.
                    unsafe { a.free(s.p as *mut u8) };
                }
                bad
            })
        })
        .collect();
    let bad: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(bad, 0);
    let s = a.stats().unwrap();
    assert!(
        s.pager.pages_evicted > 0 && s.pager.pages_read > 0,
        "{:?}",
        s.pager
    );
    assert!(s.pager.peak_resident <= BUDGET as u64, "{:?}", s.pager);
    assert!(
        s.classes.iter().all(|c| c.blocks == 0),
        "blocks left: {s:?}"
    );
    a.pager().unwrap().check_invariants().unwrap();
}

/// A producer allocating small blocks and a consumer freeing them in
/// batches: spans are emptied by remote frees while their owner keeps
/// collecting and releasing them. A span released while a remote free was
/// still queueing it once corrupted the run allocator (found by the
/// `prodcons` benchmark); this runs that pattern, round after round with a
/// new consumer each time, with every block checked.
#[test]
fn remote_frees_racing_span_release() {
    let a = alloc(256 << 20, 16 << 10);
    // The producer is a thread of its own: when it exits, its heap (and the
    // frees made into it) is collected, so the final count is exact.
    std::thread::scope(|outer| outer.spawn(|| produce_rounds(&a)).join().unwrap());
    let s = a.stats().unwrap();
    assert!(
        s.classes.iter().all(|c| c.blocks == 0),
        "blocks left: {s:?}"
    );
    assert_eq!(s.small_spans, 0, "{s:?}");
}

fn produce_rounds(a: &SbmaAlloc) {
    const BATCH: usize = 16;
    const BLOCKS: usize = 100_000;
    const ROUNDS: usize = 16;
    let mut seed = 0u64;
    for round in 0..ROUNDS {
        // Even rounds: blocks of 16 to 512 bytes; odd rounds: 12 to 16 KiB,
        // four or five to a span, so spans empty (and are released) all the
        // time.
        let (base, spread) = if round % 2 == 0 {
            (16, 497)
        } else {
            (12 << 10, 4 << 10)
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<Sent>>(4);
        let bad = std::thread::scope(|scope| {
            let consumer = scope.spawn(|| {
                let mut bad = 0;
                for batch in rx {
                    for s in batch {
                        bad += check(s.p as *const u8, s.size.min(16), s.seed);
                        // SAFETY: handed over, freed once.
                        unsafe { a.free(s.p as *mut u8) };
                    }
                }
                bad
            });
            for _ in 0..BLOCKS / BATCH {
                let batch = (0..BATCH)
                    .map(|_| {
                        seed += 1;
                        let size = base + (seed as usize * 7919) % spread;
                        let p = a.malloc(size);
                        fill(p, size.min(16), seed);
                        Sent {
                            p: p as usize,
                            size,
                            seed,
                        }
                    })
                    .collect();
                tx.send(batch).unwrap();
            }
            drop(tx);
            consumer.join().unwrap()
        });
        assert_eq!(bad, 0, "bytes changed in flight");
    }
}
