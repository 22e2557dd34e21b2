//! First light: real faults, real file, data back.
#![allow(
    unsafe_code,
    reason = "tests access managed memory through raw pointers"
)]

mod common;

use sbma_pager::Pager;

#[test]
fn write_evict_read_back() {
    for fill in common::variants() {
        let pager = fill
            .apply(Pager::builder().budget(1 << 20).page_size(16 << 10))
            .build()
            .unwrap();
        let region = pager.alloc(4 << 20).unwrap();
        let p = region.as_mut_ptr();
        for i in 0..region.len() {
            // SAFETY: inside the live region.
            unsafe { p.add(i).write((i % 251) as u8) };
        }
        let s = pager.stats();
        assert!(s.resident <= 1 << 20, "{s:?}");
        assert!(s.pages_written > 0, "{s:?}");
        pager.evict_all().unwrap();
        let mut bad = 0;
        for i in 0..region.len() {
            // SAFETY: as above.
            if unsafe { p.add(i).read() } != (i % 251) as u8 {
                bad += 1;
            }
        }
        assert_eq!(bad, 0, "{fill:?}: {:?}", pager.stats());
        pager.check_invariants().unwrap();
        eprintln!("{fill:?}: {:?}", pager.stats());
    }
}
