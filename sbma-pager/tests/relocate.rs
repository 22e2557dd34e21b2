//! `Pager::relocate`: contents change place without a copy through
//! memory (`mremap` for resident pages, `copy_file_range` for evicted
//! ones). Every scenario writes known data in every page state, moves it,
//! checks every word at the new place, then forces it out and back (and
//! writes through the moved pages) and checks again; once per fault
//! backend and fill method.
#![allow(
    unsafe_code,
    reason = "tests touch managed memory through raw pointers"
)]

#[macro_use]
mod common;

use common::{load, store};
use sbma_pager::{Access, Error, Pager, PartlyMoved, Region};

const PAGE: usize = 16 << 10;
const WORDS: usize = PAGE / 8;
/// The budget where pages must be evicted to make room (4x over).
const BUDGET_PAGES: usize = 16;

/// A pager of `budget` pages; `background` says whether the writer
/// evicts ahead (off where the test counts the budget exactly).
fn pager(
    v: common::Variant,
    budget: usize,
    region_pages: usize,
    background: bool,
) -> (Pager, Region) {
    let pager = v
        .apply(
            Pager::builder()
                .budget(budget * PAGE)
                .page_size(PAGE)
                .background_io(background)
                .dir(common::tmpdir()),
        )
        .build()
        .unwrap();
    let region = pager.alloc(region_pages * PAGE).unwrap();
    (pager, region)
}

fn value(page: usize, word: usize, generation: u64) -> u64 {
    ((page * WORDS + word) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ generation.wrapping_mul(0xD6E8_FEB8_6659_FD93)
        | 1
}

/// Page `i` of the region at `base`.
fn page_at(base: *mut u64, i: usize) -> *mut u64 {
    base.wrapping_add(i * WORDS)
}

fn write_page(p: *mut u64, page: usize, generation: u64) {
    for w in 0..WORDS {
        // SAFETY: `p` is a page of a live region.
        unsafe { store(p, w, value(page, w, generation)) };
    }
}

/// Checks every word of page `p`: `Some(generation)` as written, `None`
/// zeros.
fn check_page(p: *const u64, page: usize, generation: Option<u64>, what: &str) {
    for w in 0..WORDS {
        // SAFETY: `p` is a page of a live region.
        let got = unsafe { load(p, w) };
        let want = generation.map_or(0, |g| value(page, w, g));
        assert_eq!(got, want, "{what}: page {page} word {w}");
    }
}

/// What each source page holds before the move, in the order the pages
/// come: every state a page can be in, several times, in runs and alone.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Made {
    /// Never touched (unbacked).
    Fresh,
    /// Read, never written (clean, all zeros).
    ReadOnly,
    /// Written, evicted (the store holds it).
    Evicted,
    /// Written, evicted, read back (clean, backed).
    Clean,
    /// Written, still in memory (dirty).
    Dirty,
    /// Written, evicted, written again (dirty, with an older copy).
    Rewritten,
}

const LAYOUT: &[Made] = {
    use Made::*;
    &[
        Dirty, Dirty, Evicted, Evicted, Evicted, Clean, Clean, Fresh, Dirty, ReadOnly, Rewritten,
        Evicted, Clean, Dirty, Fresh, Fresh, Rewritten, Rewritten, Evicted, Clean,
    ]
};

/// Puts source pages `0..LAYOUT.len()` of `base` in the states of
/// [`LAYOUT`] (generation 1; `Rewritten` pages generation 2), in a
/// budget that holds them all.
fn make_states(pager: &Pager, base: *mut u64) {
    for (i, m) in LAYOUT.iter().enumerate() {
        if matches!(m, Made::Evicted | Made::Clean | Made::Rewritten) {
            write_page(page_at(base, i), i, 1);
        }
    }
    pager.evict_all().unwrap();
    for (i, m) in LAYOUT.iter().enumerate() {
        let p = page_at(base, i);
        match m {
            Made::Fresh | Made::Evicted => {}
            // SAFETY: a page of the live region.
            Made::ReadOnly | Made::Clean => drop(unsafe { load(p, 0) }),
            Made::Dirty => write_page(p, i, 1),
            Made::Rewritten => write_page(p, i, 2),
        }
    }
}

fn expected(i: usize) -> Option<u64> {
    match LAYOUT[i] {
        Made::Fresh | Made::ReadOnly => None,
        Made::Rewritten => Some(2),
        _ => Some(1),
    }
}

/// The move itself: every page of every state arrives whole, the budget
/// does not change, and the moved pages keep working (written through,
/// evicted and reloaded).
fn moves_pages_in_every_state(v: common::Variant) {
    let n = LAYOUT.len();
    let (pager, region) = pager(v, 2 * LAYOUT.len(), 64, false);
    let base = region.as_mut_ptr().cast::<u64>();
    // The target held other data before (some of it evicted): discarded.
    let dst = page_at(base, 32);
    for i in 0..n {
        write_page(page_at(dst, i), 100 + i, 7);
    }
    make_states(&pager, base);
    let before = pager.stats();
    pager
        .relocate(base.cast(), dst.cast(), n * PAGE)
        .unwrap_or_else(|e| panic!("{v:?}: {e}"));
    let after = pager.stats();
    assert_eq!(
        after.resident, before.resident,
        "{v:?}: the move changed the budget"
    );
    assert!(
        after.pages_moved >= 10,
        "{v:?}: only {} pages moved",
        after.pages_moved
    );
    assert_eq!(
        after.pages_read, before.pages_read,
        "{v:?}: the move read pages into memory"
    );
    pager.check_invariants().unwrap();
    // Written through at once (even pages, generation 3: a clean page
    // moved must still catch its first write, or the write would be lost
    // at the eviction; the budget holds every page, so none was evicted
    // since the move), checked, then out and back in.
    let now = |i: usize| if i % 2 == 0 { Some(3) } else { expected(i) };
    for i in (0..n).step_by(2) {
        write_page(page_at(dst, i), i, 3);
    }
    for i in 0..n {
        check_page(page_at(dst, i), i, now(i), &format!("{v:?} moved"));
    }
    pager.evict_all().unwrap();
    for i in 0..n {
        check_page(page_at(dst, i), i, now(i), &format!("{v:?} reloaded"));
    }
    // The source, cleared, is free space again: zeros, and usable.
    pager.clear(base.cast(), n * PAGE).unwrap();
    for i in 0..n {
        check_page(page_at(base, i), i, None, &format!("{v:?} source"));
        write_page(page_at(base, i), i, 4);
    }
    pager.evict_all().unwrap();
    // Every write to the old place was seen by the pager (its pages were
    // made to fault again): evicting leaves nothing of it in memory.
    assert_eq!(
        common::resident_bytes(base.cast(), n * PAGE),
        0,
        "{v:?}: the old place kept memory the pager does not track"
    );
    for i in 0..n {
        check_page(
            page_at(base, i),
            i,
            Some(4),
            &format!("{v:?} source reused"),
        );
        check_page(page_at(dst, i), i, now(i), &format!("{v:?} target kept"));
    }
    pager.check_invariants().unwrap();
}

/// Bad requests move nothing and say why; a pinned page stops the move
/// there: the pages before it moved, it and the rest are untouched.
fn refuses_bad_ranges_and_stops_at_a_pin(v: common::Variant) {
    let (pager, region) = pager(v, BUDGET_PAGES, 64, false);
    let base = region.as_mut_ptr().cast::<u64>();
    let dst = page_at(base, 32);
    let invalid = PartlyMoved {
        moved: 0,
        error: Error::InvalidRange,
    };
    let half = base.cast::<u8>().wrapping_add(PAGE / 2);
    assert_eq!(pager.relocate(half, dst.cast(), PAGE), Err(invalid.clone()));
    assert_eq!(
        pager.relocate(base.cast(), dst.cast(), PAGE + 8),
        Err(invalid.clone())
    );
    let overlap = page_at(base, 4).cast();
    assert_eq!(
        pager.relocate(base.cast(), overlap, 8 * PAGE),
        Err(invalid.clone())
    );
    let beyond = page_at(base, 60).cast();
    assert_eq!(pager.relocate(base.cast(), beyond, 8 * PAGE), Err(invalid));
    for i in 0..8 {
        write_page(page_at(base, i), i, 5);
    }
    let pinned = page_at(base, 5);
    let guard = pager
        .prepare_for_kernel(pinned.cast(), PAGE, Access::Read)
        .unwrap();
    let r = pager.relocate(base.cast(), dst.cast(), 8 * PAGE);
    assert_eq!(
        r,
        Err(PartlyMoved {
            moved: 5 * PAGE,
            error: Error::Pinned
        }),
        "{v:?}"
    );
    drop(guard);
    pager.check_invariants().unwrap();
    for i in 0..5 {
        check_page(
            page_at(dst, i),
            i,
            Some(5),
            &format!("{v:?} moved before the pin"),
        );
    }
    for i in 5..8 {
        check_page(
            page_at(base, i),
            i,
            Some(5),
            &format!("{v:?} left at the pin"),
        );
    }
}

/// Threads move their data back and forth between two places while the
/// others fault, write and evict over 4x the budget: every word arrives.
fn threads_move_while_others_page(v: common::Variant) {
    const THREADS: usize = 4;
    const PAGES: usize = 8; // each place: 4 threads x 2 places x 8 = 64 pages
    const ROUNDS: u64 = 12;
    let (pager, region) = pager(v, BUDGET_PAGES, THREADS * 2 * PAGES, true);
    let base = region.as_mut_ptr().cast::<u64>() as usize;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let pager = &pager;
            s.spawn(move || {
                let base = base as *mut u64;
                let places = [
                    page_at(base, t * 2 * PAGES),
                    page_at(base, (t * 2 + 1) * PAGES),
                ];
                for round in 0..ROUNDS {
                    let (from, to) = (places[round as usize % 2], places[(round as usize + 1) % 2]);
                    for i in 0..PAGES {
                        // Every other round, every third page is left
                        // evicted or unwritten.
                        if round % 2 == 1 && i % 3 == 0 {
                            continue;
                        }
                        write_page(page_at(from, i), t * PAGES + i, round);
                    }
                    if round % 3 == 0 {
                        pager.evict(from.cast(), PAGES * PAGE).unwrap();
                    }
                    pager
                        .relocate(from.cast(), to.cast(), PAGES * PAGE)
                        .unwrap_or_else(|e| panic!("{v:?} thread {t} round {round}: {e}"));
                    pager.clear(from.cast(), PAGES * PAGE).unwrap();
                    for i in 0..PAGES {
                        let want = if round % 2 == 1 && i % 3 == 0 {
                            round.checked_sub(1)
                        } else {
                            Some(round)
                        };
                        let what = format!("{v:?} thread {t} round {round}");
                        check_page(page_at(to, i), t * PAGES + i, want, &what);
                    }
                }
            });
        }
    });
    pager.check_invariants().unwrap();
}

per_backend! {
    over common::variants;
    moves_every_state => moves_pages_in_every_state;
    bad_ranges_and_pins => refuses_bad_ranges_and_stops_at_a_pin;
    threads_move_under_pressure => threads_move_while_others_page;
}
