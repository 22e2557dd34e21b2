//! Shadow-model property test: random malloc/calloc/aligned/realloc/free
//! sequences against a model of the live blocks, checking non-overlap,
//! alignment, usable size and every byte of every block. Run in-core and
//! with a budget far below the live data (so blocks are evicted and
//! reloaded between operations).

mod common;

use common::{alloc, check, fill};
use proptest::prelude::*;
use sbma_alloc::SbmaAlloc;

#[derive(Clone, Debug)]
enum Op {
    Malloc(usize),
    Calloc(usize),
    Aligned(usize, u32),
    Realloc(usize, usize),
    Free(usize),
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        4 => 0usize..=256,
        3 => 257usize..=(16usize << 10),
        2 => (16usize << 10) + 1..=(300usize << 10),
        1 => (300usize << 10) + 1..=(3usize << 20),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => size().prop_map(Op::Malloc),
        1 => size().prop_map(Op::Calloc),
        1 => (size(), 4u32..=20).prop_map(|(s, a)| Op::Aligned(s, a)),
        3 => (any::<usize>(), size()).prop_map(|(i, s)| Op::Realloc(i, s)),
        4 => any::<usize>().prop_map(Op::Free),
    ]
}

/// A live block: address, size asked for, the pattern's seed.
struct Block {
    p: *mut u8,
    size: usize,
    seed: u64,
}

fn admit(a: &SbmaAlloc, live: &[Block], b: &Block, align: usize) {
    assert!(!b.p.is_null(), "allocation of {} failed", b.size);
    assert_eq!(
        b.p as usize % align,
        0,
        "{} bytes not aligned to {align}",
        b.size
    );
    // SAFETY: a live block of ours.
    let usable = unsafe { a.usable_size(b.p) }.unwrap();
    assert!(usable >= b.size, "usable {usable} < {}", b.size);
    let (s, e) = (b.p as usize, b.p as usize + usable.max(1));
    for o in live {
        // SAFETY: as above.
        let ou = unsafe { a.usable_size(o.p) }.unwrap().max(1);
        let (os, oe) = (o.p as usize, o.p as usize + ou);
        assert!(
            e <= os || oe <= s,
            "[{s:#x}, {e:#x}) overlaps [{os:#x}, {oe:#x})"
        );
    }
}

/// Runs `ops`; returns the most bytes live at once.
fn run(a: &SbmaAlloc, ops: &[Op]) -> usize {
    let mut live: Vec<Block> = Vec::new();
    let mut peak = 0;
    let mut seed = 1u64;
    for op in ops {
        seed += 1;
        peak = peak.max(live.iter().map(|b| b.size).sum::<usize>());
        match *op {
            Op::Malloc(size) | Op::Calloc(size) | Op::Aligned(size, _) => {
                let (p, align) = match *op {
                    Op::Malloc(_) => (a.malloc(size), 16),
                    Op::Calloc(_) => (a.calloc(1, size), 16),
                    Op::Aligned(_, shift) => (a.aligned(1 << shift, size), 1 << shift),
                    _ => unreachable!(),
                };
                let b = Block { p, size, seed };
                admit(a, &live, &b, align);
                if matches!(op, Op::Calloc(_)) {
                    // SAFETY: `size` bytes at `p`.
                    let nonzero = (0..size)
                        .filter(|&i| unsafe { p.add(i).read() } != 0)
                        .count();
                    assert_eq!(nonzero, 0, "calloc({size})");
                }
                fill(p, size, seed);
                live.push(b);
            }
            Op::Realloc(i, size) if !live.is_empty() => {
                let old = live.swap_remove(i % live.len());
                // SAFETY: a live block of ours.
                let q = unsafe { a.realloc(old.p, size) };
                if size == 0 {
                    assert!(q.is_null());
                    continue;
                }
                let kept = old.size.min(size);
                assert_eq!(
                    check(q, kept, old.seed),
                    0,
                    "realloc {} -> {size}",
                    old.size
                );
                let b = Block { p: q, size, seed };
                admit(a, &live, &b, 16);
                fill(q, size, seed);
                live.push(b);
            }
            Op::Free(i) if !live.is_empty() => {
                let b = live.swap_remove(i % live.len());
                assert_eq!(
                    check(b.p, b.size, b.seed),
                    0,
                    "block of {} before free",
                    b.size
                );
                // SAFETY: a live block of ours.
                unsafe { a.free(b.p) };
            }
            _ => {}
        }
    }
    for b in live {
        assert_eq!(
            check(b.p, b.size, b.seed),
            0,
            "block of {} at the end",
            b.size
        );
        // SAFETY: as above.
        unsafe { a.free(b.p) };
    }
    let s = a.stats().unwrap();
    assert!(
        s.classes.iter().all(|c| c.blocks == 0),
        "blocks left: {s:?}"
    );
    assert_eq!(s.large_objects, 0, "{s:?}");
    peak
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn in_core(ops in proptest::collection::vec(op(), 1..300)) {
        let a = alloc(256 << 20, 16 << 10);
        run(&a, &ops);
        a.pager().unwrap().check_invariants().unwrap();
    }

    #[test]
    fn out_of_core(ops in proptest::collection::vec(op(), 100..300)) {
        // 1 MiB of memory for tens of MiB of live blocks.
        let a = alloc(1 << 20, 16 << 10);
        let peak = run(&a, &ops);
        let s = a.pager().unwrap().stats();
        if peak > 2 << 20 {
            prop_assert!(s.pages_evicted > 0 && s.pages_read > 0, "{peak} bytes live, {s:?}");
        }
        a.pager().unwrap().check_invariants().unwrap();
    }
}
