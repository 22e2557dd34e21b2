//! Loom models of the page table's concurrent transitions and of the budget.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test -p
//! sbma-core --test loom --release` (what `.ci/run` does). Every atomic in
//! the crate comes from `sbma_core::sync`, which is loom's under this cfg.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use loom::thread;
use sbma_core::{
    Actions, Budget, Event, Kind, LocalBudget, Op, Outcome, PageCount, PageIndex, PageState,
    PageTable,
};

const P: PageIndex = PageIndex(0);

/// What one thread observed while driving a request to its end.
#[derive(Default)]
struct Seen {
    charged: isize,
    waited: bool,
    woke: bool,
}

/// Applies `event`; completes any op it starts; if the page is busy, marks
/// itself waiting, "sleeps" (yields until the word changes, as the futex
/// would) and retries. Returns what it saw.
fn request(t: &PageTable, event: Event) -> Seen {
    let mut seen = Seen::default();
    loop {
        let a = t.apply(P, event);
        match a.outcome {
            Outcome::Apply(tr) => {
                account(&mut seen, tr.actions);
                let mut next = completion(tr.to);
                while let Some(e) = next {
                    let Outcome::Apply(c) = t.apply(P, e).outcome else {
                        panic!("completion {e:?} refused");
                    };
                    account(&mut seen, c.actions);
                    next = completion(c.to);
                }
                return seen;
            }
            Outcome::Busy => {
                if let Some(w) = t.mark_waiting(P) {
                    seen.waited = true;
                    while t.word(P).load(Ordering::Acquire) == w.word() {
                        thread::yield_now();
                    }
                }
            }
            Outcome::Done | Outcome::Pinned => return seen,
            Outcome::Illegal => panic!("{event:?} illegal in {:?}", a.observed),
        }
    }
}

fn completion(s: PageState) -> Option<Event> {
    match s.op() {
        Op::Idle => None,
        Op::Load => Some(Event::LoadComplete),
        Op::WriteBack => Some(Event::WriteBackComplete),
        Op::Drop => Some(Event::DropComplete),
    }
}

fn account(seen: &mut Seen, a: Actions) {
    if a.contains(Actions::CHARGE) {
        seen.charged += 1;
    }
    if a.contains(Actions::UNCHARGE) {
        seen.charged -= 1;
    }
    if a.contains(Actions::WAKE) {
        seen.woke = true;
    }
}

/// Two threads fault the same unbacked page: exactly one fills it (one
/// charge), the other waits or finds it done, and a waiter is always woken
/// (no lost wake-up).
#[test]
fn concurrent_faults_fill_once_and_wake_waiters() {
    loom::model(|| {
        let t = Arc::new(PageTable::new(PageCount(1)));
        let t2 = t.clone();
        let h = thread::spawn(move || request(&t2, Event::WriteFault));
        let a = request(&t, Event::ReadFault);
        let b = h.join().unwrap();
        let s = t.state(P);
        assert!(s.is_resident() && !s.is_busy() && !s.has_waiters(), "{s:?}");
        assert_eq!(
            a.charged + b.charged,
            1,
            "page charged {} times",
            a.charged + b.charged
        );
        if a.waited || b.waited {
            assert!(a.woke || b.woke, "a waiter was never woken");
        }
        let c = t.audit().unwrap();
        assert_eq!((c.resident, c.busy), (1, 0));
    });
}

/// Eviction races a write fault on a dirty page: either the write fault
/// finds the page still writable, or it waits for the eviction and reloads.
/// Charges always balance and the final state is valid.
#[test]
fn eviction_races_a_write_fault() {
    loom::model(|| {
        let t = Arc::new(PageTable::new(PageCount(1)));
        let setup = request(&t, Event::WriteFault);
        assert_eq!(setup.charged, 1);
        let t2 = t.clone();
        let h = thread::spawn(move || request(&t2, Event::Evict));
        let w = request(&t, Event::WriteFault);
        let e = h.join().unwrap();
        let s = t.state(P);
        let total = setup.charged + w.charged + e.charged;
        assert_eq!(
            total,
            isize::from(s.is_resident()),
            "charges do not balance: {s:?}"
        );
        assert!(!s.is_busy() && !s.has_waiters());
        // The writer's write landed on a resident dirty page, or the
        // eviction happened after the writer was done.
        assert!(
            s.kind() == Kind::Dirty || s.kind() == Kind::Evicted,
            "{s:?}"
        );
        t.audit().unwrap();
    });
}

/// A pin racing an eviction: the pin is never lost, and a page pinned before
/// the eviction started is never dropped.
#[test]
fn pin_races_eviction() {
    loom::model(|| {
        let t = Arc::new(PageTable::new(PageCount(1)));
        request(&t, Event::ReadFault);
        let pinned_first = Arc::new(AtomicBool::new(false));
        let (t2, p2) = (t.clone(), pinned_first.clone());
        let h = thread::spawn(move || {
            let a = t2.apply(P, Event::Pin);
            assert!(matches!(a.outcome, Outcome::Apply(_)));
            p2.store(
                !a.observed.is_busy() && a.observed.is_resident(),
                Ordering::SeqCst,
            );
        });
        let evicted = request(&t, Event::Evict).charged == -1;
        h.join().unwrap();
        let s = t.state(P);
        assert_eq!(s.pins(), 1, "pin lost");
        if pinned_first.load(Ordering::SeqCst) {
            assert!(!evicted && s.is_resident(), "a pinned page was evicted");
        }
        assert_eq!(t.audit().unwrap().pinned, 1);
    });
}

/// Three threads charge and uncharge a two-page budget: the limit is never
/// exceeded, refusals report a real shortfall, and everything balances.
#[test]
fn budget_never_exceeds_its_limit() {
    loom::model(|| {
        let b = Arc::new(LocalBudget::new(2));
        let holders = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicIsize::new(0));
        let hs: Vec<_> = (0..3)
            .map(|_| {
                let (b, holders, refused) = (b.clone(), holders.clone(), refused.clone());
                thread::spawn(move || match b.try_charge(1) {
                    Ok(()) => {
                        let n = holders.fetch_add(1, Ordering::SeqCst) + 1;
                        assert!(n <= 2, "{n} charges held under a limit of 2");
                        assert!(b.resident() <= b.limit());
                        holders.fetch_sub(1, Ordering::SeqCst);
                        b.uncharge(1);
                    }
                    Err(s) => {
                        assert_eq!((s.requested, s.available), (1, 0));
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        assert_eq!(b.resident(), 0);
        assert!(b.peak() <= 2);
        assert!(
            refused.load(Ordering::SeqCst) <= 1,
            "with 3 threads and 2 slots at most 1 refusal"
        );
    });
}
