//! [`Streams`]: sequential-fault detection for several concurrent streams.
//!
//! Each of [`STREAMS`] slots remembers the last page read in by a stream
//! and its read-ahead window. A read fault on page `p` continues the
//! stream whose last page `l` satisfies `l < p <= l + window`: its window
//! doubles (up to the maximum). Any other fault starts a new stream in the
//! next slot (round robin), replacing the oldest. Four threads each
//! scanning their own part of a region are thus four streams, where a
//! single "last page" would see only random faults.
//!
//! Slots are single atomic words updated without locks; two threads racing
//! on one slot at worst misjudge one fault, which costs one read-ahead more
//! or less, never correctness. Async-signal-safe: atomics only.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Streams tracked at once.
pub(crate) const STREAMS: usize = 8;

/// A slot: `(last + 1) << 16 | window`, 0 when empty.
#[derive(Default)]
pub(crate) struct Streams {
    slots: [AtomicU64; STREAMS],
    next: AtomicUsize,
}

/// What [`Streams::observe`] decided for one fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The slot of the fault's stream.
    pub slot: usize,
    /// The fault continues a stream.
    pub sequential: bool,
    /// Pages to read, the faulting one included.
    pub window: usize,
}

fn pack(last: usize, window: usize) -> u64 {
    ((last as u64 + 1) << 16) | window.min(0xFFFF) as u64
}

fn unpack(v: u64) -> (usize, usize) {
    (((v >> 16) - 1) as usize, (v & 0xFFFF) as usize)
}

impl Streams {
    /// Records a read fault on `page` and returns its window (at most
    /// `max_window`).
    pub fn observe(&self, page: usize, max_window: usize) -> Observed {
        for (slot, word) in self.slots.iter().enumerate() {
            let v = word.load(Ordering::Relaxed);
            if v == 0 {
                continue;
            }
            let (last, window) = unpack(v);
            if page > last && page <= last.saturating_add(window) {
                let window = (window * 2).min(max_window).max(1);
                word.store(pack(page, window), Ordering::Relaxed);
                return Observed {
                    slot,
                    sequential: true,
                    window,
                };
            }
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % STREAMS;
        self.slots[slot].store(pack(page, 1), Ordering::Relaxed);
        Observed {
            slot,
            sequential: false,
            window: 1,
        }
    }

    /// Moves a stream's last page to `last` (after pages beyond the
    /// faulting one were read for it), keeping its window.
    pub fn advance(&self, slot: usize, last: usize, window: usize) {
        self.slots[slot].store(pack(last, window), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::Streams;

    #[test]
    fn interleaved_streams_are_each_sequential() {
        let s = Streams::default();
        // Four streams far apart, faulting in turn.
        let starts = [0usize, 10_000, 20_000, 30_000];
        for &b in &starts {
            assert!(!s.observe(b, 32).sequential);
        }
        let mut windows = [1usize; 4];
        let mut at = starts;
        for _ in 0..6 {
            for k in 0..4 {
                at[k] += windows[k];
                let o = s.observe(at[k], 32);
                assert!(o.sequential, "stream {k} at {}", at[k]);
                windows[k] = o.window;
            }
        }
        assert_eq!(windows, [32; 4]);
    }

    #[test]
    fn random_faults_start_new_streams() {
        let s = Streams::default();
        let mut x = 12345usize;
        let mut sequential = 0;
        for _ in 0..1000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            sequential += usize::from(s.observe((x >> 20) % 1_000_000, 32).sequential);
        }
        assert!(
            sequential < 10,
            "{sequential} random faults looked sequential"
        );
    }

    #[test]
    fn advance_moves_the_stream_past_prefetched_pages() {
        let s = Streams::default();
        let o = s.observe(100, 4);
        s.advance(o.slot, 200, 4);
        assert!(s.observe(201, 4).sequential);
        assert!(!s.observe(150, 4).sequential);
    }
}
