//! Resident-memory budgets: admission accounting in bytes.
//!
//! A page is *charged* before it becomes resident ([`Action::Charge`] is
//! done before the transition is committed) and *uncharged* after its
//! memory has been released. So the charged total is never below the memory
//! actually held, and [`Budget::try_charge`] never lets it exceed
//! [`Budget::limit`]. This is SBMA's `madmit`/`mevict` accounting, but the
//! refusal carries the shortfall instead of blocking: the caller evicts
//! (its own pages first) and tries again, so a single process over budget
//! can never wait forever for memory only it could free (SBMA's
//! self-eviction hang).
//!
//! The trait is what callers use; [`LocalBudget`] is the process-local
//! implementation. A node-wide budget in shared memory (issue 7) implements
//! the same trait, so no caller changes.
//!
//! [`Action::Charge`]: crate::Action::Charge

use crate::sync::{AtomicUsize, Ordering};

/// A refused charge: how far over the limit it would have gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shortfall {
    /// The bytes asked for.
    pub requested: usize,
    /// The bytes that were still free when the charge was refused.
    pub available: usize,
}

impl Shortfall {
    /// The bytes that must be released before the charge can succeed.
    pub const fn deficit(&self) -> usize {
        self.requested - self.available
    }
}

/// Resident-bytes accounting with admission control.
///
/// # Requirements
/// - `try_charge(n)` succeeds only if `resident() + n <= limit()` at the
///   instant it is applied, and then adds `n` atomically; otherwise it
///   changes nothing and reports the shortfall.
/// - `uncharge(n)` subtracts `n`; the caller must only return bytes it
///   charged.
/// - Safe to call from any thread concurrently, without blocking and
///   without allocating (the fault path charges from a signal handler).
pub trait Budget: Sync {
    /// Charges `bytes` if they fit under the limit.
    ///
    /// # Errors
    /// The [`Shortfall`] if they do not.
    fn try_charge(&self, bytes: usize) -> Result<(), Shortfall>;

    /// Returns `bytes` previously charged.
    fn uncharge(&self, bytes: usize);

    /// The bytes currently charged.
    fn resident(&self) -> usize;

    /// The most that may be charged at once.
    fn limit(&self) -> usize;
}

/// A budget for one process: two atomics.
#[derive(Debug)]
pub struct LocalBudget {
    limit: usize,
    resident: AtomicUsize,
    peak: AtomicUsize,
}

impl LocalBudget {
    /// A budget of `limit` bytes, nothing charged.
    pub fn new(limit: usize) -> LocalBudget {
        LocalBudget {
            limit,
            resident: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// The highest charge seen.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Budget for LocalBudget {
    fn try_charge(&self, bytes: usize) -> Result<(), Shortfall> {
        let mut cur = self.resident.load(Ordering::Relaxed);
        loop {
            let available = self.limit.saturating_sub(cur);
            if bytes > available {
                return Err(Shortfall {
                    requested: bytes,
                    available,
                });
            }
            match self.resident.compare_exchange_weak(
                cur,
                cur + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.peak.fetch_max(cur + bytes, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => cur = now,
            }
        }
    }

    fn uncharge(&self, bytes: usize) {
        let before = self.resident.fetch_sub(bytes, Ordering::AcqRel);
        debug_assert!(
            before >= bytes,
            "budget underflow: uncharging {bytes} B with {before} B charged"
        );
    }

    fn resident(&self) -> usize {
        self.resident.load(Ordering::Acquire)
    }

    fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn charge_up_to_the_limit_and_report_shortfall() {
        let b = LocalBudget::new(100);
        assert_eq!(b.try_charge(60), Ok(()));
        assert_eq!(b.try_charge(40), Ok(()));
        let s = b.try_charge(1).unwrap_err();
        assert_eq!((s.requested, s.available, s.deficit()), (1, 0, 1));
        b.uncharge(30);
        let s = b.try_charge(50).unwrap_err();
        assert_eq!(s.deficit(), 20);
        assert_eq!(b.resident(), 70);
        assert_eq!(b.peak(), 100);
        assert_eq!(b.limit(), 100);
    }

    #[test]
    fn zero_limit_refuses_everything_but_zero() {
        let b = LocalBudget::new(0);
        assert_eq!(b.try_charge(0), Ok(()));
        assert_eq!(b.try_charge(1).unwrap_err().deficit(), 1);
    }
}
