//! PageTable: CAS transitions, counters, waiters, audits; plus a real-thread
//! stress run of the protocol (loom covers the interleavings exhaustively
//! for small cases, this covers volume).

use sbma_core::{
    Actions, AuditError, Event, Kind, Outcome, PageCount, PageIndex, PageSize, PageState,
    PageTable, transition,
};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Barrier};

const P0: PageIndex = PageIndex(0);

#[test]
fn apply_commits_and_counts() {
    let t = PageTable::new(PageCount(4));
    assert_eq!(t.len(), PageCount(4));
    let a = t.apply(P0, Event::WriteFault);
    assert!(matches!(a.outcome, Outcome::Apply(tr) if tr.actions.contains(Actions::CHARGE)));
    assert_eq!(t.resident_pages(), PageCount(1));
    assert_eq!(t.dirty_pages(), PageCount(1));
    let c = t.audit().unwrap();
    assert_eq!((c.resident, c.dirty, c.busy), (1, 1, 1));
    t.apply(P0, Event::LoadComplete);
    t.apply(P0, Event::Pin);
    assert_eq!(t.pinned_pages(), PageCount(1));
    assert_eq!(t.apply(P0, Event::Evict).outcome, Outcome::Pinned);
    t.apply(P0, Event::Unpin);
    t.apply(P0, Event::Evict);
    t.apply(P0, Event::WriteBackComplete);
    assert_eq!(t.resident_pages(), PageCount(0));
    t.apply(P0, Event::DropComplete);
    assert_eq!(t.state(P0).kind(), Kind::Evicted);
    let ps = PageSize::new(65536, 4096).unwrap();
    assert_eq!(t.charged_bytes(ps), 0);
    assert_eq!(t.audit().unwrap().busy, 0);
}

#[test]
fn stale_commit_is_refused_with_the_current_state() {
    let t = PageTable::new(PageCount(1));
    let s = t.state(P0);
    let Outcome::Apply(tr) = transition(s, Event::ReadFault) else {
        panic!()
    };
    // Someone else gets there first.
    t.apply(P0, Event::WriteFault);
    let now = t.commit(P0, &tr).unwrap_err();
    assert_eq!(now.kind(), Kind::Dirty);
    assert_eq!(
        t.resident_pages(),
        PageCount(1),
        "failed CAS changed a counter"
    );
}

#[test]
fn waiters_are_recorded_and_woken() {
    let t = PageTable::new(PageCount(1));
    assert_eq!(
        t.mark_waiting(P0),
        None,
        "nothing to wait for on an idle page"
    );
    t.apply(P0, Event::ReadFault);
    let w = t.mark_waiting(P0).unwrap();
    assert!(w.has_waiters() && w.is_busy());
    assert_eq!(t.mark_waiting(P0), Some(w), "idempotent");
    assert_eq!(t.word(P0).load(Ordering::Acquire), w.word());
    let a = t.apply(P0, Event::LoadComplete);
    let Outcome::Apply(tr) = a.outcome else {
        panic!()
    };
    assert!(tr.actions.contains(Actions::WAKE));
    assert!(!t.state(P0).has_waiters());
}

#[test]
fn audit_detects_corruption() {
    let t = PageTable::new(PageCount(3));
    t.apply(PageIndex(1), Event::ReadFault);
    t.apply(PageIndex(1), Event::LoadComplete);
    t.audit().unwrap();
    // A word changed behind the table's back: the counter no longer agrees.
    let clean_backed =
        PageState::from_parts(Kind::Clean, sbma_core::Op::Idle, true, false, false, 0).unwrap();
    t.word(PageIndex(2))
        .store(clean_backed.word(), Ordering::Release);
    assert_eq!(
        t.audit(),
        Err(AuditError::Counter {
            name: "resident",
            recorded: 1,
            counted: 2
        })
    );
    // An invalid word (Evicted without backed).
    t.word(PageIndex(0)).store(3, Ordering::Release);
    let e = t.audit().unwrap_err();
    assert_eq!(
        e,
        AuditError::InvalidWord {
            page: PageIndex(0),
            word: 3
        }
    );
    assert_eq!(e.to_string(), "page 0 holds invalid state word 0x3");
}

/// Threads race read/write faults, evictions, clears and pins on a few
/// pages, each completing the ops it starts. Whatever the interleaving,
/// every observed state is valid, charges balance, and the counters match
/// the words at the end.
#[test]
fn threads_racing_the_protocol_keep_the_table_consistent() {
    const PAGES: usize = 4;
    const THREADS: usize = 4;
    let t = Arc::new(PageTable::new(PageCount(PAGES)));
    let charge = Arc::new(std::sync::atomic::AtomicIsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|id| {
            let (t, charge, barrier) = (t.clone(), charge.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut x = id as u64 * 0x9E37_79B9 + 1;
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let page = PageIndex(x as usize % PAGES);
                    let event = [
                        Event::ReadFault,
                        Event::WriteFault,
                        Event::Evict,
                        Event::Clear,
                        Event::Pin,
                        Event::Age,
                    ][(x >> 8) as usize % 6];
                    if event == Event::Pin {
                        t.apply(page, Event::Pin);
                        t.apply(page, Event::Unpin);
                        continue;
                    }
                    drive(&t, page, event, &charge);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let c = t.audit().unwrap();
    assert_eq!(c.busy, 0);
    assert_eq!(
        charge.load(Ordering::SeqCst),
        c.resident as isize,
        "charges do not balance"
    );
}

/// Applies `event` and, if it started an op, completes it (and the ops that
/// follow), accounting CHARGE/UNCHARGE.
fn drive(t: &PageTable, page: PageIndex, event: Event, charge: &std::sync::atomic::AtomicIsize) {
    let mut event = Some(event);
    while let Some(e) = event.take() {
        let a = t.apply(page, e);
        let Outcome::Apply(tr) = a.outcome else {
            return;
        };
        assert_eq!(PageState::from_word(tr.to.word()), Some(tr.to));
        if tr.actions.contains(Actions::CHARGE) {
            charge.fetch_add(1, Ordering::SeqCst);
        }
        if tr.actions.contains(Actions::UNCHARGE) {
            charge.fetch_sub(1, Ordering::SeqCst);
        }
        event = match tr.to.op() {
            sbma_core::Op::Load => Some(Event::LoadComplete),
            sbma_core::Op::WriteBack => Some(Event::WriteBackComplete),
            sbma_core::Op::Drop => Some(Event::DropComplete),
            sbma_core::Op::Idle => None,
        };
        // Only the thread that started an op may finish it.
        if tr.from.is_busy() && matches!(e, Event::Pin | Event::Unpin | Event::Age) {
            event = None;
        }
    }
}
