//! The run allocator: hands out runs of consecutive spans (one span for a
//! small-block span, several for a large object) and takes them back,
//! merging neighbours.
//!
//! Free runs are kept in segregated bins: one per length up to 64 spans,
//! then one per power of two. A run's length is in the metadata of its
//! first and last span, so a returned run finds its free neighbours in
//! O(1). Spans past `top` have never been used and read as zeros.
//!
//! Each free run is *clean* (never used, or cleared through the pager: it
//! reads as zeros and holds no memory or disk) or *dirty* (freed memory that
//! may still be resident: reusing it costs no fault). Dirty runs are kept up
//! to a cap ([`Runs::free`] returns the run to clear when it is exceeded);
//! then the caller clears it through the pager *outside* the lock and gives
//! it back clean.
//!
//! All of it runs under one lock, taken only on the slow paths (a heap
//! needs a span, a large object comes or goes).

use crate::span::{NONE, SpanTable, kind};
use core::sync::atomic::Ordering::Relaxed;

const EXACT_BINS: usize = 64;
const BINS: usize = EXACT_BINS + 40;

fn bin_of(len: usize) -> usize {
    if len <= EXACT_BINS {
        len - 1
    } else {
        let log = (usize::BITS - 1 - len.leading_zeros()) as usize; // >= 6
        (EXACT_BINS + log - 6).min(BINS - 1)
    }
}

/// A run of spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Run {
    pub start: usize,
    pub len: usize,
    /// Whether its pages may hold stale data.
    pub dirty: bool,
}

/// Free runs and the top of the used part of the arena.
#[derive(Debug)]
pub(crate) struct Runs {
    top: usize,
    bins: [u32; BINS],
    nonempty: u128,
    /// Spans in dirty free runs, and the most allowed.
    dirty_spans: usize,
    dirty_cap: usize,
    free_spans: usize,
}

impl Runs {
    pub fn new(dirty_cap_spans: usize) -> Runs {
        Runs {
            top: 0,
            bins: [NONE; BINS],
            nonempty: 0,
            dirty_spans: 0,
            dirty_cap: dirty_cap_spans,
            free_spans: 0,
        }
    }

    /// Spans ever used (the top), spans in free runs, of which dirty.
    pub fn census(&self) -> (usize, usize, usize) {
        (self.top, self.free_spans, self.dirty_spans)
    }

    // ---------------------------------------------------------------
    // Bins
    // ---------------------------------------------------------------

    /// Records a free run: kinds, lengths, bin.
    fn insert(&mut self, t: &SpanTable, r: Run) {
        let tail = r.start + r.len - 1;
        if r.len > 1 {
            t.set_kinds(r.start, r.len, kind::FREE_HEAD, kind::FREE);
            t.kind(tail).store(kind::FREE_TAIL, Relaxed);
            t.meta(tail).len.store(r.len, Relaxed);
        } else {
            t.set_kinds(r.start, 1, kind::FREE_HEAD, kind::FREE);
        }
        let m = t.meta(r.start);
        m.len.store(r.len, Relaxed);
        m.dirty.store(r.dirty, Relaxed);
        let b = bin_of(r.len);
        let head = self.bins[b];
        m.bin_prev.store(NONE, Relaxed);
        m.bin_next.store(head, Relaxed);
        if head != NONE {
            t.meta(head as usize)
                .bin_prev
                .store(r.start as u32, Relaxed);
        }
        self.bins[b] = r.start as u32;
        self.nonempty |= 1 << b;
        self.free_spans += r.len;
        if r.dirty {
            self.dirty_spans += r.len;
        }
    }

    /// Takes the free run starting at `start` out of its bin (its kinds are
    /// left for the caller to overwrite).
    fn remove(&mut self, t: &SpanTable, start: usize) -> Run {
        let m = t.meta(start);
        let r = Run {
            start,
            len: m.len.load(Relaxed),
            dirty: m.dirty.load(Relaxed),
        };
        let (prev, next) = (m.bin_prev.load(Relaxed), m.bin_next.load(Relaxed));
        let b = bin_of(r.len);
        if prev == NONE {
            self.bins[b] = next;
            if next == NONE {
                self.nonempty &= !(1 << b);
            }
        } else {
            t.meta(prev as usize).bin_next.store(next, Relaxed);
        }
        if next != NONE {
            t.meta(next as usize).bin_prev.store(prev, Relaxed);
        }
        self.free_spans -= r.len;
        if r.dirty {
            self.dirty_spans -= r.len;
        }
        r
    }

    /// A free run of at least `n` spans, out of its bin.
    fn find(&mut self, t: &SpanTable, n: usize) -> Option<Run> {
        let b = bin_of(n);
        if b >= EXACT_BINS {
            // Runs in this bin may be shorter than `n`: first fit.
            let mut s = self.bins[b];
            while s != NONE {
                if t.meta(s as usize).len.load(Relaxed) >= n {
                    return Some(self.remove(t, s as usize));
                }
                s = t.meta(s as usize).bin_next.load(Relaxed);
            }
        }
        let from = if b >= EXACT_BINS { b + 1 } else { b };
        if from >= BINS {
            return None;
        }
        let mask = self.nonempty >> from << from;
        if mask == 0 {
            return None;
        }
        let head = self.bins[mask.trailing_zeros() as usize];
        Some(self.remove(t, head as usize))
    }

    // ---------------------------------------------------------------
    // Allocation
    // ---------------------------------------------------------------

    /// Takes `n` spans whose first, modulo `align` (a power of two), is
    /// `phase`, or `None` if the arena is exhausted. Kinds are left to the
    /// caller.
    pub fn alloc(&mut self, t: &SpanTable, n: usize, align: usize, phase: usize) -> Option<Run> {
        let r = self.carve(t, n, align, phase)?;
        claim(t, r.start, r.len);
        Some(r)
    }

    fn carve(&mut self, t: &SpanTable, n: usize, align: usize, phase: usize) -> Option<Run> {
        debug_assert!(n > 0 && align.is_power_of_two() && phase < align);
        let up = |x: usize| x + (phase + align - x % align) % align;
        let want = n + align - 1;
        let found = match self.find(t, want) {
            Some(r) => r,
            None => {
                let start = up(self.top);
                if start.checked_add(n)? > t.count {
                    return None;
                }
                if start > self.top {
                    let gap = Run {
                        start: self.top,
                        len: start - self.top,
                        dirty: false,
                    };
                    self.top = start + n;
                    self.insert(t, gap);
                } else {
                    self.top = start + n;
                }
                return Some(Run {
                    start,
                    len: n,
                    dirty: false,
                });
            }
        };
        let start = up(found.start);
        if start > found.start {
            self.insert(
                t,
                Run {
                    len: start - found.start,
                    ..found
                },
            );
        }
        let end = found.start + found.len;
        if end > start + n {
            self.insert(
                t,
                Run {
                    start: start + n,
                    len: end - start - n,
                    dirty: found.dirty,
                },
            );
        }
        Some(Run {
            start,
            len: n,
            dirty: found.dirty,
        })
    }

    /// Takes `[start, start + n)` if it is free (growing an object in
    /// place); returns whether the taken part may be dirty.
    pub fn take_at(&mut self, t: &SpanTable, start: usize, n: usize) -> Option<bool> {
        let dirty = self.take_run_at(t, start, n)?;
        claim(t, start, n);
        Some(dirty)
    }

    fn take_run_at(&mut self, t: &SpanTable, start: usize, n: usize) -> Option<bool> {
        if start == self.top {
            if start + n > t.count {
                return None;
            }
            self.top += n;
            return Some(false);
        }
        if start >= t.count || t.kind(start).load(Relaxed) != kind::FREE_HEAD {
            return None;
        }
        let len = t.meta(start).len.load(Relaxed);
        if len < n {
            // A free run reaching the top can grow past it.
            if start + len != self.top || start + n > t.count {
                return None;
            }
            let r = self.remove(t, start);
            self.top = start + n;
            return Some(r.dirty);
        }
        let r = self.remove(t, start);
        if len > n {
            self.insert(
                t,
                Run {
                    start: start + n,
                    len: len - n,
                    dirty: r.dirty,
                },
            );
        }
        Some(r.dirty)
    }

    /// Gives a run back, merged with free neighbours. Returns a dirty run
    /// to clear (already out of the bins, its spans marked `CLEARING`) when
    /// dirty spans exceed the cap; the caller clears it through the pager
    /// and gives it back clean. With `!may_clear` the run is kept whatever
    /// the cap (giving back a run whose clearing failed).
    pub fn free(&mut self, t: &SpanTable, r: Run, may_clear: bool) -> Option<Run> {
        let mut m = r;
        if m.start > 0 {
            let k = t.kind(m.start - 1).load(Relaxed);
            if k == kind::FREE_HEAD || k == kind::FREE_TAIL {
                let prev_len = t.meta(m.start - 1).len.load(Relaxed);
                let p = self.remove(t, m.start - prev_len);
                debug_assert_eq!(p.len, prev_len);
                m = Run {
                    start: p.start,
                    len: p.len + m.len,
                    dirty: p.dirty || m.dirty,
                };
            }
        }
        let end = m.start + m.len;
        if end < self.top && t.kind(end).load(Relaxed) == kind::FREE_HEAD {
            let n = self.remove(t, end);
            m = Run {
                len: m.len + n.len,
                dirty: m.dirty || n.dirty,
                ..m
            };
        }
        if !m.dirty && m.start + m.len == self.top {
            // Clean spans at the end go back to the never-used part.
            t.set_kinds(m.start, m.len, kind::FREE, kind::FREE);
            self.top = m.start;
            return None;
        }
        if may_clear && m.dirty && self.dirty_spans + m.len > self.dirty_cap {
            t.set_kinds(m.start, m.len, kind::CLEARING, kind::CLEARING);
            return Some(m);
        }
        self.insert(t, m);
        None
    }
}

/// Marks the first and last span of a run just taken out of the free
/// runs, while the run allocator's lock is still held: their kinds may
/// still say `FREE_HEAD`/`FREE_TAIL`, and a neighbour given back before
/// the taker writes its own kinds would otherwise merge with them. Kinds in
/// between are never read by merging.
fn claim(t: &SpanTable, start: usize, n: usize) {
    t.kind(start).store(kind::CLEARING, Relaxed);
    t.kind(start + n - 1).store(kind::CLEARING, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(n: usize) -> SpanTable {
        SpanTable::new(1 << 40, n, 16).unwrap()
    }

    #[test]
    fn runs_split_merge_and_return_to_the_top() {
        let t = table(1000);
        let mut runs = Runs::new(usize::MAX);
        let a = runs.alloc(&t, 3, 1, 0).unwrap();
        let b = runs.alloc(&t, 5, 1, 0).unwrap();
        let c = runs.alloc(&t, 2, 1, 0).unwrap();
        assert_eq!((a.start, b.start, c.start), (0, 3, 8));
        assert!(!a.dirty);
        runs.free(&t, Run { dirty: true, ..a }, true);
        runs.free(&t, Run { dirty: true, ..b }, true);
        // a and b merged into one dirty run of 8; reused first-fit.
        assert_eq!(runs.census(), (10, 8, 8));
        let d = runs.alloc(&t, 6, 1, 0).unwrap();
        assert_eq!((d.start, d.dirty), (0, true));
        assert_eq!(runs.census(), (10, 2, 2));
        // Growing in place into the free remainder, then past the top.
        assert_eq!(runs.take_at(&t, 6, 2), Some(true));
        assert_eq!(runs.take_at(&t, 10, 4), Some(false));
        assert_eq!(runs.take_at(&t, 3, 1), None);
        runs.free(
            &t,
            Run {
                start: 10,
                len: 4,
                dirty: false,
            },
            true,
        );
        assert_eq!(runs.census(), (10, 0, 0));
    }

    /// A run just taken is not yet marked by its taker (that happens after
    /// the lock is dropped); a neighbour given back in that window must not
    /// merge with it. (Found by `threads::cross_thread_frees_in_core`:
    /// about 1 run in 8 overflowed the free-span count.)
    #[test]
    fn a_run_just_taken_never_merges_with_a_neighbour() {
        let t = table(100);
        let mut runs = Runs::new(usize::MAX);
        let a = runs.alloc(&t, 2, 1, 0).unwrap();
        let b = runs.alloc(&t, 3, 1, 0).unwrap();
        let c = runs.alloc(&t, 2, 1, 0).unwrap();
        // b goes back and is taken again: its kinds were FREE_HEAD/FREE_TAIL.
        runs.free(&t, Run { dirty: true, ..b }, true);
        let b2 = runs.alloc(&t, 3, 1, 0).unwrap();
        assert_eq!(b2.start, b.start);
        // Its neighbours go back before b2's taker writes any kind.
        runs.free(&t, Run { dirty: true, ..a }, true);
        runs.free(&t, Run { dirty: true, ..c }, true);
        // Two free runs of 2 around b2, never one of 7.
        assert_eq!(runs.census(), (7, 4, 4));
        assert_eq!(runs.take_at(&t, b2.start, 1), None, "b2 is not free");
        let whole = runs.alloc(&t, 7, 1, 0).unwrap();
        assert_eq!(whole.start, 7, "no free run spans b2");
    }

    #[test]
    fn aligned_runs_and_the_dirty_cap() {
        let t = table(1000);
        let mut runs = Runs::new(4);
        let a = runs.alloc(&t, 1, 1, 0).unwrap();
        let b = runs.alloc(&t, 4, 8, 0).unwrap();
        assert_eq!((a.start, b.start), (0, 8));
        // The gap before the aligned run is a clean free run.
        assert_eq!(runs.census(), (12, 7, 0));
        // Merged with the gap, 11 dirty spans exceed the cap of 4: to clear.
        let clear = runs.free(&t, Run { dirty: true, ..b }, true).unwrap();
        assert_eq!((clear.start, clear.len), (1, 11));
        assert_eq!(t.kind(1).load(Relaxed), kind::CLEARING);
        // Given back clean at the end: the top comes down.
        assert_eq!(
            runs.free(
                &t,
                Run {
                    dirty: false,
                    ..clear
                },
                true
            ),
            None
        );
        assert_eq!(runs.census(), (1, 0, 0));
        // Within the cap, a dirty run is kept for reuse.
        let c = runs.alloc(&t, 2, 1, 0).unwrap();
        let _d = runs.alloc(&t, 1, 1, 0).unwrap();
        assert_eq!(runs.free(&t, Run { dirty: true, ..c }, true), None);
        assert_eq!(runs.census(), (4, 2, 2));
        assert_eq!(runs.alloc(&t, 2, 1, 0), Some(Run { dirty: true, ..c }));
    }
}
