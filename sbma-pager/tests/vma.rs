//! Alternating protections on a region larger than `vm.max_map_count`
//! pages. Signal backend: each page becomes its own mapping, `mprotect`
//! hits `ENOMEM`, and the pager must recover (evict to merge mappings)
//! instead of dying, with every byte intact. Uffd backend: protections are
//! page-table bits, the mapping never splits, nothing needs recovering.
#![allow(
    unsafe_code,
    reason = "tests access managed memory through raw pointers"
)]

mod common;

use common::Variant;
use sbma_pager::Pager;

const PAGE: usize = 4096;

fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530)
}

fn vma_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn alternating_protections_past_the_map_count_limit() {
    for b in common::backends() {
        alternating(b);
    }
}

fn alternating(b: Variant) {
    let limit = max_map_count();
    if limit > 300_000 {
        println!(
            "skipped: vm.max_map_count is {limit}; exercising it would need {} MiB",
            (limit * PAGE) >> 20
        );
        return;
    }
    let pages = limit + limit / 8;
    // Everything fits in the budget: only the mapping limit forces evictions.
    let pager = b
        .apply(
            Pager::builder()
                .budget((pages + 16) * PAGE)
                .page_size(PAGE)
                // Every eviction must come from the ENOMEM recovery, not
                // from a writer keeping free budget in reserve.
                .background_io(false),
        )
        .build()
        .unwrap();
    let vmas_before = vma_count();
    let r = pager.alloc(pages * PAGE).unwrap();
    let p = r.as_mut_ptr();
    let mut peak_vmas = 0;
    for i in 0..pages {
        // SAFETY: inside the region. Even pages are read (read-only), odd
        // pages written (read-write): neighbours never share a protection.
        unsafe {
            if i % 2 == 0 {
                assert_eq!(p.add(i * PAGE).read_volatile(), 0);
            } else {
                p.add(i * PAGE + 8).write_volatile((i % 251) as u8 + 1);
            }
        }
        if i % 4096 == 0 {
            peak_vmas = peak_vmas.max(vma_count());
        }
    }
    let s = pager.stats();
    match b {
        Variant::Signal(_) => {
            assert!(s.pages_evicted > 0, "the limit was never reached: {s:?}");
        }
        Variant::Uffd => {
            assert_eq!(s.pages_evicted, 0, "uffd needed no recovery: {s:?}");
            assert!(
                peak_vmas < vmas_before + 64,
                "uffd split the mapping: {vmas_before} mappings before, {peak_vmas} at peak"
            );
        }
    }
    for i in (1..pages).step_by(2) {
        // SAFETY: as above.
        let v = unsafe { p.add(i * PAGE + 8).read_volatile() };
        assert_eq!(v, (i % 251) as u8 + 1, "page {i}");
    }
    pager.check_invariants().unwrap();
    println!(
        "{b:?}: {pages} pages past vm.max_map_count = {limit}: {} pages evicted to recover, peak {peak_vmas} mappings",
        s.pages_evicted
    );
}
