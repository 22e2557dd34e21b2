//! The conformance suite every [`EvictionPolicy`] must pass (feature
//! `conformance`).
//!
//! Each check is a function generic over a constructor, so the same code
//! runs against every bundled policy (see `tests/policy.rs`) and against any
//! policy a downstream crate adds; [`policy_conformance!`](crate::policy_conformance)
//! turns them into `#[test]`s. The checks state the trait's requirements
//! (numbered as in [`EvictionPolicy`]) as executable assertions; they panic
//! with a message naming the requirement.

use crate::{EvictionPolicy, PageCount, PageIndex};
use std::collections::BTreeSet;
use std::vec::Vec;

/// A deterministic xorshift generator, so the suite needs no dependency and
/// replays exactly.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

fn select<P: EvictionPolicy>(
    p: &mut P,
    want: usize,
    evictable: &dyn Fn(PageIndex) -> bool,
) -> Vec<PageIndex> {
    let mut out = Vec::new();
    p.select(PageCount(want), &mut |i| evictable(i), &mut out);
    out
}

/// Checks one `select` answer against requirements 1-3, given the tracked
/// set before the call; updates `tracked`.
fn check_selection(
    name: &str,
    tracked: &mut BTreeSet<usize>,
    want: usize,
    evictable: &dyn Fn(PageIndex) -> bool,
    victims: &[PageIndex],
) {
    let mut seen = BTreeSet::new();
    for v in victims {
        assert!(seen.insert(v.0), "{name}: R1: page {} selected twice", v.0);
        assert!(
            tracked.contains(&v.0),
            "{name}: R1: page {} selected but not tracked",
            v.0
        );
        assert!(
            evictable(*v),
            "{name}: R1: page {} selected but not evictable",
            v.0
        );
    }
    let candidates = tracked.iter().filter(|&&i| evictable(PageIndex(i))).count();
    assert!(
        victims.len() >= want.min(candidates),
        "{name}: R3: {} victims for want={want} with {candidates} evictable",
        victims.len()
    );
    for v in victims {
        tracked.remove(&v.0);
    }
}

/// R1-R3: only tracked, evictable pages, each once, and enough of them;
/// R2: selected pages are no longer tracked.
pub fn selects_only_tracked_evictable_pages<P: EvictionPolicy>(make: impl Fn(PageCount) -> P) {
    let mut p = make(PageCount(64));
    let name = p.name();
    let mut tracked = BTreeSet::new();
    for i in (0..64).step_by(2) {
        p.admit(PageIndex(i));
        tracked.insert(i);
    }
    // Pages divisible by 3 are "pinned".
    let evictable = |i: PageIndex| i.0 % 3 != 0;
    let v = select(&mut p, 5, &evictable);
    check_selection(name, &mut tracked, 5, &evictable, &v);
    assert_eq!(
        p.tracked().get(),
        tracked.len(),
        "{name}: R2: tracked count"
    );
    // Selected pages are forgotten: selecting everything never returns them.
    let again = select(&mut p, 64, &|_| true);
    for x in &v {
        assert!(
            !again.contains(x),
            "{name}: R2: page {} selected twice",
            x.0
        );
    }
    check_selection(name, &mut tracked, 64, &|_| true, &again);
    assert_eq!(p.tracked(), PageCount(0), "{name}: everything selected");
}

/// R3: with `want` evictable pages among many pinned ones, all are found.
pub fn finds_scarce_victims<P: EvictionPolicy>(make: impl Fn(PageCount) -> P) {
    let mut p = make(PageCount(1000));
    let name = p.name();
    for i in 0..1000 {
        p.admit(PageIndex(i));
        p.access(PageIndex(i));
    }
    let evictable = |i: PageIndex| i.0 % 100 == 37;
    let v = select(&mut p, 10, &evictable);
    let mut got: Vec<usize> = v.iter().map(|p| p.0).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        (0..10).map(|k| k * 100 + 37).collect::<Vec<_>>(),
        "{name}: R3: the only evictable pages must all be found"
    );
}

/// R6: `select` terminates, empty-handed, when nothing is evictable, and
/// leaves every page tracked.
pub fn terminates_when_nothing_is_evictable<P: EvictionPolicy>(make: impl Fn(PageCount) -> P) {
    let mut p = make(PageCount(100));
    let name = p.name();
    for i in 0..100 {
        p.admit(PageIndex(i));
    }
    let mut calls = 0usize;
    let mut out = Vec::new();
    p.select(
        PageCount(10),
        &mut |_| {
            calls += 1;
            false
        },
        &mut out,
    );
    assert!(out.is_empty(), "{name}: R1: nothing is evictable");
    assert!(calls <= 2 * 100, "{name}: R6: {calls} visits for 100 pages");
    assert_eq!(p.tracked(), PageCount(100), "{name}: nothing was selected");
    let mut none = Vec::new();
    p.select(PageCount(0), &mut |_| true, &mut none);
    assert!(
        none.len() <= 100,
        "{name}: want = 0 selects at most what is tracked"
    );
}

/// R4: the same call sequence gives the same victims.
pub fn is_deterministic<P: EvictionPolicy>(make: impl Fn(PageCount) -> P) {
    let run = |seed| {
        let mut p = make(PageCount(128));
        let mut rng = Rng::new(seed);
        let mut log = Vec::new();
        for step in 0..2000 {
            let page = PageIndex(rng.below(128));
            match rng.below(10) {
                0..=3 => p.admit(page),
                4..=6 => p.access(page),
                7 => p.forget(page),
                _ => {
                    let m = rng.below(5) + 2;
                    let v = select(&mut p, rng.below(8), &|i| i.0 % m != 0);
                    log.push((step, v));
                }
            }
        }
        log
    };
    for seed in [1, 2, 3] {
        assert_eq!(
            run(seed),
            run(seed),
            "R4: victims differ between identical runs"
        );
    }
}

/// R5: `admit` of a tracked page does not duplicate it; `access` and
/// `forget` of untracked pages do nothing; a forgotten page can come back.
pub fn bookkeeping_is_idempotent<P: EvictionPolicy>(make: impl Fn(PageCount) -> P) {
    let mut p = make(PageCount(8));
    let name = p.name();
    p.access(PageIndex(3));
    p.forget(PageIndex(4));
    assert_eq!(
        p.tracked(),
        PageCount(0),
        "{name}: R5: untracked pages ignored"
    );
    p.admit(PageIndex(1));
    p.admit(PageIndex(1));
    assert_eq!(p.tracked(), PageCount(1), "{name}: R5: double admit");
    p.forget(PageIndex(1));
    p.forget(PageIndex(1));
    assert_eq!(p.tracked(), PageCount(0), "{name}: R5: double forget");
    p.admit(PageIndex(1));
    let v = select(&mut p, 1, &|_| true);
    assert_eq!(v, [PageIndex(1)], "{name}: re-admitted page is selectable");
}

/// R6/R7: indices beyond the construction capacity (up to large ones) work.
pub fn grows_beyond_capacity<P: EvictionPolicy>(make: impl Fn(PageCount) -> P) {
    let mut p = make(PageCount(1));
    let name = p.name();
    let pages = [
        PageIndex(0),
        PageIndex(5000),
        PageIndex(70_000),
        PageIndex(17),
    ];
    for &i in &pages {
        p.admit(i);
    }
    assert_eq!(p.tracked(), PageCount(4), "{name}: growth");
    let mut v = select(&mut p, 4, &|_| true);
    v.sort_unstable();
    let mut want = pages.to_vec();
    want.sort_unstable();
    assert_eq!(v, want, "{name}: every grown page is selectable");
}

/// R1-R3 and R5 under long random sequences against a shadow set of tracked
/// pages.
pub fn random_sequences_meet_requirements<P: EvictionPolicy>(make: impl Fn(PageCount) -> P) {
    for seed in 1..=20u64 {
        let mut p = make(PageCount(256));
        let name = p.name();
        let mut rng = Rng::new(seed);
        let mut tracked = BTreeSet::new();
        for _ in 0..3000 {
            let page = rng.below(256);
            match rng.below(10) {
                0..=3 => {
                    p.admit(PageIndex(page));
                    tracked.insert(page);
                }
                4..=5 => p.access(PageIndex(page)),
                6 => {
                    p.forget(PageIndex(page));
                    tracked.remove(&page);
                }
                _ => {
                    let want = rng.below(16);
                    let m = rng.below(4) + 2;
                    let evictable = move |i: PageIndex| i.0 % m != 1;
                    let v = select(&mut p, want, &evictable);
                    check_selection(name, &mut tracked, want, &evictable, &v);
                }
            }
            assert_eq!(
                p.tracked().get(),
                tracked.len(),
                "{name}: tracked count (seed {seed})"
            );
        }
    }
}

/// Generates one `#[test]` per conformance check for a policy constructor
/// `fn(PageCount) -> P`.
///
/// ```
/// sbma_core::policy_conformance!(clock, sbma_core::Clock::with_capacity);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! policy_conformance {
    ($name:ident, $make:expr) => {
        mod $name {
            #[allow(
                unused_imports,
                reason = "the constructor expression may name items of the caller"
            )]
            use super::*;
            use $crate::conformance as c;
            #[test]
            fn selects_only_tracked_evictable_pages() {
                c::selects_only_tracked_evictable_pages($make);
            }
            #[test]
            fn finds_scarce_victims() {
                c::finds_scarce_victims($make);
            }
            #[test]
            fn terminates_when_nothing_is_evictable() {
                c::terminates_when_nothing_is_evictable($make);
            }
            #[test]
            fn is_deterministic() {
                c::is_deterministic($make);
            }
            #[test]
            fn bookkeeping_is_idempotent() {
                c::bookkeeping_is_idempotent($make);
            }
            #[test]
            fn grows_beyond_capacity() {
                c::grows_beyond_capacity($make);
            }
            #[test]
            fn random_sequences_meet_requirements() {
                c::random_sequences_meet_requirements($make);
            }
        }
    };
}
