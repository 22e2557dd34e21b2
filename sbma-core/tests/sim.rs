//! The whole cycle (fault -> admit -> evict -> reload) on the sim backend,
//! scenario by scenario: known bytes written, forced out, every byte checked
//! after they come back; failures injected at every I/O step.

use sbma_core::{
    Access, Budget, EngineError, EvictionPolicy, Kind, PageCount, PageIndex, PageRange, PageSize,
    PolicyKind, SimError, SimMachine,
};

const PS: usize = 4096;

fn page_size() -> PageSize {
    PageSize::new(PS, 4096).unwrap()
}

/// A deterministic byte for `offset` under `seed`.
fn pattern(seed: u8, offset: usize) -> u8 {
    (offset as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(17)
        .wrapping_add(seed as u64)
        .to_le_bytes()[3]
}

fn machine(
    kind: PolicyKind,
    pages: usize,
    budget_pages: usize,
) -> SimMachine<sbma_core::AnyPolicy> {
    SimMachine::new(
        kind.build(PageCount(pages)),
        page_size(),
        PageCount(pages),
        budget_pages * PS,
    )
    .unwrap()
}

fn fill(m: &mut SimMachine<impl EvictionPolicy>, seed: u8) {
    let data: Vec<u8> = (0..m.len()).map(|o| pattern(seed, o)).collect();
    m.write(0, &data).unwrap();
}

/// Reads everything back and returns the number of mismatching bytes.
fn mismatches(m: &mut SimMachine<impl EvictionPolicy>, seed: u8) -> usize {
    let mut buf = vec![0u8; m.len()];
    m.read(0, &mut buf).unwrap();
    buf.iter()
        .enumerate()
        .filter(|&(o, &b)| b != pattern(seed, o))
        .count()
}

fn assert_within_budget(m: &SimMachine<impl EvictionPolicy>) {
    let e = m.engine();
    let held = e.backend().resident_bytes();
    assert!(
        held <= e.budget().limit(),
        "{held} B held over a {} B budget",
        e.budget().limit()
    );
    assert_eq!(
        held,
        e.budget().resident(),
        "memory held differs from the budget's charge"
    );
}

#[test]
fn working_set_four_times_the_budget_round_trips_with_every_policy() {
    for kind in PolicyKind::ALL {
        let mut m = machine(kind, 256, 64);
        fill(&mut m, 1);
        assert_within_budget(&m);
        assert_eq!(mismatches(&mut m, 1), 0, "{kind}: first read-back");
        m.engine_mut().evict_all().unwrap();
        assert_eq!(
            m.engine().backend().resident_bytes(),
            0,
            "{kind}: evict_all leaves memory"
        );
        assert_eq!(m.engine().budget().resident(), 0);
        assert_eq!(
            mismatches(&mut m, 1),
            0,
            "{kind}: read-back after evict_all"
        );
        // Overwrite everything, then read again: no stale page survives.
        fill(&mut m, 2);
        assert_eq!(mismatches(&mut m, 2), 0, "{kind}: second generation");
        assert_within_budget(&m);
        let s = m.engine().stats();
        assert!(
            s.pages_written >= 256 && s.pages_read >= 256,
            "{kind}: {s:?}"
        );
        m.engine().check_invariants();
    }
}

#[test]
fn first_write_costs_one_fault_and_clean_pages_drop_without_io() {
    let mut m = machine(PolicyKind::Clock, 8, 8);
    m.write(0, &[7u8; 8 * PS]).unwrap();
    let s = m.engine().stats();
    assert_eq!((s.write_faults, s.read_faults, s.pages_zeroed), (8, 0, 8));
    m.engine_mut().evict_all().unwrap();
    let written = m.engine().stats().pages_written;
    assert_eq!(written, 8);
    // Read back: the pages come back clean; evicting them again writes nothing.
    let mut buf = vec![0u8; 8 * PS];
    m.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 7));
    m.engine_mut().evict_all().unwrap();
    assert_eq!(
        m.engine().stats().pages_written,
        written,
        "clean pages were written again"
    );
    // Contiguous dirty pages go out as one run.
    assert_eq!(m.engine().stats().write_runs, 1);
}

#[test]
fn never_written_pages_read_as_zero_and_cost_no_store() {
    let mut m = machine(PolicyKind::Lru, 64, 4);
    let mut buf = vec![1u8; 64 * PS];
    m.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    assert_eq!(
        m.engine().backend().stored_bytes(),
        0,
        "zero pages were written to the store"
    );
    assert_within_budget(&m);
}

#[test]
fn failed_write_back_keeps_the_data_and_reports_the_error() {
    let mut m = machine(PolicyKind::Clock, 32, 8);
    m.write(0, &vec![0xAB; 8 * PS]).unwrap();
    m.engine().backend().fail_next_writes(1);
    // Admitting page 8 needs a victim; its write-back fails.
    let err = m.write(8 * PS, &[1]).unwrap_err();
    assert_eq!(err, EngineError::Backend(SimError::Io));
    assert_eq!(m.engine().stats().backend_errors, 1);
    m.engine().check_invariants();
    // Nothing was lost: the victim is still dirty and resident.
    assert_eq!(m.engine().table().dirty_pages(), PageCount(8));
    let mut buf = vec![0u8; 8 * PS];
    m.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xAB));
    // The next attempt succeeds and the data survives a full round trip.
    m.write(8 * PS, &[1]).unwrap();
    m.engine_mut().evict_all().unwrap();
    m.read(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xAB));
}

#[test]
fn failed_read_leaves_the_page_evicted_and_the_next_read_succeeds() {
    let mut m = machine(PolicyKind::Fifo, 4, 4);
    m.write(0, &[0x5A; 4 * PS]).unwrap();
    m.engine_mut().evict_all().unwrap();
    m.engine().backend().fail_next_reads(1);
    let mut b = [0u8; 16];
    assert_eq!(m.read(PS, &mut b), Err(EngineError::Backend(SimError::Io)));
    let s = m.engine().table().state(PageIndex(1));
    assert_eq!((s.kind(), s.is_busy()), (Kind::Evicted, false), "{s:?}");
    assert_eq!(
        m.engine().budget().resident(),
        0,
        "failed fill kept its charge"
    );
    m.engine().check_invariants();
    m.read(PS, &mut b).unwrap();
    assert_eq!(b, [0x5A; 16]);
}

#[test]
fn full_store_is_a_clear_error_and_loses_nothing() {
    let mut m = machine(PolicyKind::Lru, 16, 4);
    m.engine().backend().limit_store(2);
    // Two pages fit in the store; the write needing a third eviction fails.
    let mut written = 0;
    let err = loop {
        match m.write(written * PS, &vec![written as u8 + 1; PS]) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, EngineError::Backend(SimError::NoSpace));
    assert_eq!(err.to_string(), "backend error: no space left in the store");
    assert_eq!(written, 6, "4 resident + 2 in the store");
    m.engine().check_invariants();
    m.engine().backend().limit_store(usize::MAX);
    for p in 0..written {
        let mut b = vec![0u8; PS];
        m.read(p * PS, &mut b).unwrap();
        assert!(b.iter().all(|&x| x == p as u8 + 1), "page {p} lost");
    }
}

#[test]
fn clear_discards_contents_and_releases_the_store() {
    let mut m = machine(PolicyKind::Clock, 16, 4);
    fill(&mut m, 9);
    m.engine_mut().evict_all().unwrap();
    let stored = m.engine().backend().stored_bytes();
    assert_eq!(stored, 16 * PS);
    // Bring two pages back (one dirty), then clear pages 2..10.
    m.write(2 * PS, &[1]).unwrap();
    let mut b = [0u8; 1];
    m.read(3 * PS, &mut b).unwrap();
    m.engine_mut()
        .clear(PageRange::new(PageIndex(2), PageCount(8)))
        .unwrap();
    assert_eq!(
        m.engine().backend().stored_bytes(),
        8 * PS,
        "holes not punched"
    );
    let mut buf = vec![0u8; m.len()];
    m.read(0, &mut buf).unwrap();
    for (o, &x) in buf.iter().enumerate() {
        let want = if (2 * PS..10 * PS).contains(&o) {
            0
        } else {
            pattern(9, o)
        };
        assert_eq!(x, want, "offset {o}");
    }
    // Cleared pages are never written back.
    let before = m.engine().stats().pages_written;
    m.engine_mut()
        .evict(PageRange::new(PageIndex(2), PageCount(8)))
        .unwrap();
    assert_eq!(m.engine().stats().pages_written, before);
    m.engine().check_invariants();
}

#[test]
fn pinned_pages_stay_and_a_budget_full_of_pins_is_an_error() {
    let mut m = machine(PolicyKind::Clock, 8, 2);
    m.write(0, &[1; 2 * PS]).unwrap();
    m.engine_mut().pin(PageIndex(0)).unwrap();
    m.engine_mut().pin(PageIndex(1)).unwrap();
    let err = m.write(2 * PS, &[1]).unwrap_err();
    assert_eq!(err, EngineError::NoEvictablePages { needed: PS });
    assert!(err.to_string().contains("pinned or busy"));
    assert_eq!(
        m.engine_mut().clear(PageRange::single(PageIndex(0))),
        Err(EngineError::Pinned(PageIndex(0)))
    );
    assert_eq!(
        m.engine_mut().evict_all().unwrap(),
        0,
        "pinned pages were evicted"
    );
    m.engine_mut().unpin(PageIndex(1)).unwrap();
    assert_eq!(
        m.engine_mut().unpin(PageIndex(1)),
        Err(EngineError::Illegal(PageIndex(1), sbma_core::Event::Unpin))
    );
    m.write(2 * PS, &[3]).unwrap();
    assert!(m.engine().table().state(PageIndex(0)).is_resident());
    assert!(!m.engine().table().state(PageIndex(1)).is_resident());
    m.engine().check_invariants();
}

#[test]
fn bad_requests_get_clear_errors() {
    let e = SimMachine::new(
        PolicyKind::Clock.build(PageCount(4)),
        page_size(),
        PageCount(4),
        PS - 1,
    )
    .unwrap_err();
    assert_eq!(
        e,
        EngineError::BudgetBelowPage {
            limit: PS - 1,
            page: PS
        }
    );
    assert_eq!(
        e.to_string(),
        "budget of 4095 B cannot hold one 4096 B page"
    );
    let mut m = machine(PolicyKind::Clock, 4, 4);
    let mut b = [0u8; 2];
    assert!(matches!(
        m.read(4 * PS - 1, &mut b),
        Err(EngineError::OutOfRange(_))
    ));
    assert!(matches!(
        m.write(usize::MAX, &[1, 2]),
        Err(EngineError::OutOfRange(_))
    ));
    assert_eq!(
        m.engine_mut().fault(PageIndex(4), Access::Read),
        Err(EngineError::OutOfRange(PageIndex(4)))
    );
    assert!(
        m.engine_mut()
            .evict(PageRange::new(PageIndex(3), PageCount(2)))
            .is_err()
    );
    // Zero-length accesses touch nothing.
    m.read(0, &mut []).unwrap();
    assert_eq!(m.engine().stats().read_faults, 0);
}

#[test]
fn failed_revoke_keeps_memory_and_data() {
    let mut m = machine(PolicyKind::Clock, 8, 8);
    m.write(0, &[0x77; 2 * PS]).unwrap();
    m.engine().backend().fail_next_protects(1);
    // The one protect that fails is WriteProtect: it fails, so nothing is written back
    // and the page stays dirty and writable.
    let err = m
        .engine_mut()
        .evict(PageRange::single(PageIndex(0)))
        .unwrap_err();
    assert_eq!(err, EngineError::Backend(SimError::Protect));
    assert!(m.engine().table().state(PageIndex(0)).is_dirty());
    // Now fail only the Revoke of a clean page's drop.
    m.engine_mut()
        .evict(PageRange::single(PageIndex(1)))
        .unwrap();
    let mut b = [0u8; 4];
    m.read(PS, &mut b).unwrap();
    m.engine().backend().fail_next_protects(1);
    let err = m
        .engine_mut()
        .evict(PageRange::single(PageIndex(1)))
        .unwrap_err();
    assert_eq!(err, EngineError::Backend(SimError::Protect));
    assert_eq!(
        m.engine().backend().protection(PageIndex(1)),
        sbma_core::Protection::Read
    );
    // Memory was kept: the still-readable page shows the data, not zeros.
    m.read(PS, &mut b).unwrap();
    assert_eq!(b, [0x77; 4]);
    let mut all = vec![0u8; 2 * PS];
    m.read(0, &mut all).unwrap();
    assert!(all.iter().all(|&x| x == 0x77));
}
