//! The page state machine, exhaustively: every valid state against every
//! event, plus literal expected tables for the idle states and the
//! completion of every op.

use sbma_core::{Actions, Event, Kind, MAX_PINS, Op, Outcome, PageState, moved_in, transition};

/// Every valid state word (pins limited to 0, 1, 2 and the maximum).
fn all_states() -> Vec<PageState> {
    let mut v = Vec::new();
    for kind in Kind::ALL {
        for op in Op::ALL {
            for bits in 0..8u32 {
                for pins in [0, 1, 2, MAX_PINS] {
                    let (backed, referenced, waiters) =
                        (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
                    if let Some(s) =
                        PageState::from_parts(kind, op, backed, referenced, waiters, pins)
                    {
                        v.push(s);
                    }
                }
            }
        }
    }
    v
}

fn show(o: Outcome) -> String {
    match o {
        Outcome::Apply(t) => format!("{:?} {:?}", t.to, t.actions),
        o => format!("{o:?}"),
    }
}

fn parse_state(name: &str) -> PageState {
    all_states()
        .into_iter()
        .find(|s| format!("{s:?}") == name)
        .unwrap_or_else(|| panic!("no state named {name}"))
}

/// Idle, unpinned, unreferenced states. Reviewed by hand: each row is what
/// docs/page-states.md specifies.
#[rustfmt::skip]
const IDLE_TABLE: &[(&str, Event, &str)] = {
    use Event::*;
    &[
        ("Unbacked",    ReadFault,         "Clean|Load|ref {Charge, ZeroFill, GrantRead}"),
        ("Unbacked",    WriteFault,        "Dirty|Load|ref {Charge, ZeroFill, GrantWrite}"),
        ("Unbacked",    LoadComplete,      "Illegal"),
        ("Unbacked",    LoadFailed,        "Illegal"),
        ("Unbacked",    Evict,             "Done"),
        ("Unbacked",    WriteBackComplete, "Illegal"),
        ("Unbacked",    WriteBackFailed,   "Illegal"),
        ("Unbacked",    DropComplete,      "Illegal"),
        ("Unbacked",    Clear,             "Done"),
        ("Unbacked",    Pin,               "Unbacked|pins=1 {}"),
        ("Unbacked",    Unpin,             "Illegal"),
        ("Unbacked",    Age,               "Done"),
        ("Unbacked",    Hold,             "Unbacked|Drop {}"),
        ("Unbacked",    MovedAway,        "Illegal"),
        ("Clean",       ReadFault,         "Done"),
        ("Clean",       WriteFault,        "Dirty|Load|ref {GrantWrite}"),
        ("Clean",       LoadComplete,      "Illegal"),
        ("Clean",       LoadFailed,        "Illegal"),
        ("Clean",       Evict,             "Unbacked|Drop {Revoke, Discard, Uncharge}"),
        ("Clean",       WriteBackComplete, "Illegal"),
        ("Clean",       WriteBackFailed,   "Illegal"),
        ("Clean",       DropComplete,      "Illegal"),
        ("Clean",       Clear,             "Unbacked|Drop {Revoke, Discard, Uncharge}"),
        ("Clean",       Pin,               "Clean|pins=1 {}"),
        ("Clean",       Unpin,             "Illegal"),
        ("Clean",       Age,               "Done"),
        ("Clean",       Hold,             "Clean|Load {}"),
        ("Clean",       MovedAway,        "Illegal"),
        ("Clean|backed", ReadFault,         "Done"),
        ("Clean|backed", WriteFault,        "Dirty|Load|backed|ref {GrantWrite}"),
        ("Clean|backed", LoadComplete,      "Illegal"),
        ("Clean|backed", LoadFailed,        "Illegal"),
        ("Clean|backed", Evict,             "Evicted|Drop|backed {Revoke, Discard, Uncharge}"),
        ("Clean|backed", WriteBackComplete, "Illegal"),
        ("Clean|backed", WriteBackFailed,   "Illegal"),
        ("Clean|backed", DropComplete,      "Illegal"),
        ("Clean|backed", Clear,             "Unbacked|Drop {Revoke, Discard, PunchHole, Uncharge}"),
        ("Clean|backed", Pin,               "Clean|backed|pins=1 {}"),
        ("Clean|backed", Unpin,             "Illegal"),
        ("Clean|backed", Age,               "Done"),
        ("Clean|backed", Hold,             "Clean|Load|backed {}"),
        ("Clean|backed", MovedAway,        "Illegal"),
        ("Dirty",       ReadFault,         "Done"),
        ("Dirty",       WriteFault,        "Done"),
        ("Dirty",       LoadComplete,      "Illegal"),
        ("Dirty",       LoadFailed,        "Illegal"),
        ("Dirty",       Evict,             "Dirty|WriteBack {WriteProtect, WriteBack}"),
        ("Dirty",       WriteBackComplete, "Illegal"),
        ("Dirty",       WriteBackFailed,   "Illegal"),
        ("Dirty",       DropComplete,      "Illegal"),
        ("Dirty",       Clear,             "Unbacked|Drop {Revoke, Discard, Uncharge}"),
        ("Dirty",       Pin,               "Dirty|pins=1 {}"),
        ("Dirty",       Unpin,             "Illegal"),
        ("Dirty",       Age,               "Done"),
        ("Dirty",       Hold,             "Dirty|Load {}"),
        ("Dirty",       MovedAway,        "Illegal"),
        ("Dirty|backed", ReadFault,         "Done"),
        ("Dirty|backed", WriteFault,        "Done"),
        ("Dirty|backed", LoadComplete,      "Illegal"),
        ("Dirty|backed", LoadFailed,        "Illegal"),
        ("Dirty|backed", Evict,             "Dirty|WriteBack|backed {WriteProtect, WriteBack}"),
        ("Dirty|backed", WriteBackComplete, "Illegal"),
        ("Dirty|backed", WriteBackFailed,   "Illegal"),
        ("Dirty|backed", DropComplete,      "Illegal"),
        ("Dirty|backed", Clear,             "Unbacked|Drop {Revoke, Discard, PunchHole, Uncharge}"),
        ("Dirty|backed", Pin,               "Dirty|backed|pins=1 {}"),
        ("Dirty|backed", Unpin,             "Illegal"),
        ("Dirty|backed", Age,               "Done"),
        ("Dirty|backed", Hold,             "Dirty|Load|backed {}"),
        ("Dirty|backed", MovedAway,        "Illegal"),
        ("Evicted|backed", ReadFault,         "Clean|Load|backed|ref {Charge, ReadIn, GrantRead}"),
        ("Evicted|backed", WriteFault,        "Dirty|Load|backed|ref {Charge, ReadIn, GrantWrite}"),
        ("Evicted|backed", LoadComplete,      "Illegal"),
        ("Evicted|backed", LoadFailed,        "Illegal"),
        ("Evicted|backed", Evict,             "Done"),
        ("Evicted|backed", WriteBackComplete, "Illegal"),
        ("Evicted|backed", WriteBackFailed,   "Illegal"),
        ("Evicted|backed", DropComplete,      "Illegal"),
        ("Evicted|backed", Clear,             "Unbacked|Drop {PunchHole}"),
        ("Evicted|backed", Pin,               "Evicted|backed|pins=1 {}"),
        ("Evicted|backed", Unpin,             "Illegal"),
        ("Evicted|backed", Age,               "Done"),
        ("Evicted|backed", Hold,             "Evicted|Drop|backed {}"),
        ("Evicted|backed", MovedAway,        "Illegal"),
    ]
};

#[test]
fn idle_states_match_the_table() {
    assert_eq!(IDLE_TABLE.len(), 6 * Event::ALL.len());
    for &(state, event, want) in IDLE_TABLE {
        let got = show(transition(parse_state(state), event));
        assert_eq!(got, want, "{state} + {event:?}");
    }
}

/// Completions and failures of every op, with and without sleepers.
#[rustfmt::skip]
const BUSY_TABLE: &[(&str, Event, &str)] = {
    use Event::*;
    &[
        ("Clean|Load|ref",                 LoadComplete,      "Clean|ref {}"),
        ("Clean|Load|ref|waiters",         LoadComplete,      "Clean|ref {Wake}"),
        ("Dirty|Load|backed|ref|waiters",  LoadComplete,      "Dirty|backed|ref {Wake}"),
        ("Clean|Load|backed|ref",          LoadFailed,        "Evicted|Drop|backed {Revoke, Discard, Uncharge}"),
        ("Dirty|Load|ref|waiters",         LoadFailed,        "Unbacked|Drop|waiters {Revoke, Discard, Uncharge}"),
        ("Dirty|WriteBack",                WriteBackComplete, "Evicted|Drop|backed {Revoke, Discard, Uncharge}"),
        ("Dirty|WriteBack|backed|waiters", WriteBackComplete, "Evicted|Drop|backed|waiters {Revoke, Discard, Uncharge}"),
        ("Dirty|WriteBack|backed",         WriteBackFailed,   "Dirty|backed {GrantWrite}"),
        ("Dirty|WriteBack|waiters",        WriteBackFailed,   "Dirty {GrantWrite, Wake}"),
        ("Evicted|Drop|backed|waiters",    DropComplete,      "Evicted|backed {Wake}"),
        ("Unbacked|Drop",                  DropComplete,      "Unbacked {}"),
        ("Dirty|WriteBack",                ReadFault,         "Busy"),
        ("Clean|Load|ref",                 WriteFault,        "Busy"),
        ("Evicted|Drop|backed",            Evict,             "Busy"),
        ("Unbacked|Drop",                  Clear,             "Busy"),
        ("Dirty|WriteBack",                LoadComplete,      "Illegal"),
        ("Clean|Load|ref",                 DropComplete,      "Illegal"),
        ("Evicted|Drop|backed",            WriteBackComplete, "Illegal"),
        ("Dirty|ref|pins=1",               Evict,             "Pinned"),
        ("Clean|backed|ref|pins=2",        Clear,             "Pinned"),
        ("Evicted|backed|pins=1",          Clear,             "Unbacked|Drop|pins=1 {PunchHole}"),
        ("Clean|ref|pins=1",               Unpin,             "Clean|ref {}"),
        ("Clean|ref",                      Age,               "Clean {}"),
        ("Dirty|WriteBack|ref",            Age,               "Dirty|WriteBack {}"),
        ("Dirty|ref|pins=1",               Hold,              "Pinned"),
        ("Evicted|backed|pins=1",          Hold,              "Pinned"),
        ("Clean|Load|ref",                 Hold,              "Busy"),
        ("Dirty|Load|backed|ref|waiters",  MovedAway,         "Unbacked|Drop|waiters {PunchHole, Uncharge}"),
        ("Clean|Load|ref",                 MovedAway,         "Unbacked|Drop {Uncharge}"),
        ("Evicted|Drop|backed",            MovedAway,         "Unbacked|Drop {PunchHole}"),
        ("Unbacked|Drop",                  MovedAway,         "Unbacked|Drop {}"),
        ("Dirty|WriteBack",                MovedAway,         "Illegal"),
    ]
};

#[test]
fn busy_states_match_the_table() {
    for &(state, event, want) in BUSY_TABLE {
        let got = show(transition(parse_state(state), event));
        assert_eq!(got, want, "{state} + {event:?}");
    }
}

#[test]
fn state_space_is_what_the_invariants_allow() {
    let states = all_states();
    // Count by hand: kind x op pairs allowed by I3-I5 are
    // Unbacked{Idle,Drop}, Clean{Idle,Load}, Dirty{Idle,Load,WriteBack},
    // Evicted{Idle,Drop} = 9; backed is forced except for Clean/Dirty (I1, I2);
    // waiters only when busy (I6); referenced only when resident (I7).
    // Resident pairs: Clean{Idle,Load}, Dirty{Idle,Load,WriteBack} = 5, each
    // x2 backed x2 referenced, x2 waiters if busy (3 of the 5 are busy):
    //   (2 idle x 4) + (3 busy x 8) = 32
    // Non-resident: Unbacked{Idle,Drop}, Evicted{Idle,Drop}: idle 2 x 1,
    //   busy 2 x 2 waiters = 6.
    // Total 38, times 4 pin values.
    assert_eq!(states.len(), 38 * 4);
    for w in 0..=u16::MAX as u32 {
        if let Some(s) = PageState::from_word(w) {
            assert!(
                states.contains(&s) || s.pins() > 2,
                "{s:?} missing from enumeration"
            );
        }
    }
    assert!(
        PageState::from_word(1 << 7).is_none(),
        "reserved bits must be zero"
    );
}

/// Actions that touch memory, protections or the store.
const DATA_ACTIONS: Actions = Actions::WRITE_PROTECT
    .with(Actions::WRITE_BACK)
    .with(Actions::REVOKE)
    .with(Actions::DISCARD)
    .with(Actions::PUNCH_HOLE)
    .with(Actions::READ_IN)
    .with(Actions::ZERO_FILL)
    .with(Actions::GRANT_READ)
    .with(Actions::GRANT_WRITE);

fn touches_data(a: Actions) -> bool {
    DATA_ACTIONS.iter().any(|d| a.iter().any(|x| x == d))
}

#[test]
fn every_state_and_event_obeys_the_invariants() {
    let mut applied = 0;
    for s in all_states() {
        for e in Event::ALL {
            let o = transition(s, e);
            let ctx = format!("{s:?} + {e:?} -> {o:?}");
            // The completion events are legal exactly in their own op.
            let completes = match e {
                Event::LoadComplete | Event::LoadFailed => Some(Op::Load),
                Event::WriteBackComplete | Event::WriteBackFailed => Some(Op::WriteBack),
                Event::DropComplete => Some(Op::Drop),
                _ => None,
            };
            if e == Event::MovedAway {
                assert_eq!(
                    matches!(o, Outcome::Apply(_)),
                    matches!(s.op(), Op::Load | Op::Drop),
                    "{ctx}"
                );
            }
            if let Some(op) = completes {
                assert_eq!(matches!(o, Outcome::Apply(_)), s.op() == op, "{ctx}");
            }
            // Requests wait for (or skip) an op in flight.
            if s.is_busy()
                && matches!(
                    e,
                    Event::ReadFault
                        | Event::WriteFault
                        | Event::Evict
                        | Event::Clear
                        | Event::Hold
                )
            {
                assert_eq!(o, Outcome::Busy, "{ctx}");
            }
            if e == Event::Unpin && s.pins() == 0 || e == Event::Pin && s.pins() == MAX_PINS {
                assert_eq!(o, Outcome::Illegal, "{ctx}");
            }
            if matches!(e, Event::Evict | Event::Clear)
                && !s.is_busy()
                && s.is_resident()
                && s.is_pinned()
            {
                assert_eq!(o, Outcome::Pinned, "{ctx}");
            }
            if e == Event::Hold && !s.is_busy() && s.is_pinned() {
                assert_eq!(o, Outcome::Pinned, "{ctx}");
            }
            let Outcome::Apply(t) = o else { continue };
            applied += 1;
            let (from, to, a) = (t.from, t.to, t.actions);
            assert_eq!(from, s, "{ctx}");
            assert_eq!(
                PageState::from_word(to.word()),
                Some(to),
                "{ctx}: result breaks an invariant"
            );
            // Charge accounting: CHARGE exactly when becoming resident,
            // UNCHARGE exactly when ceasing to be.
            assert_eq!(
                a.contains(Actions::CHARGE),
                !from.is_resident() && to.is_resident(),
                "{ctx}"
            );
            assert_eq!(
                a.contains(Actions::UNCHARGE),
                from.is_resident() && !to.is_resident(),
                "{ctx}"
            );
            // Sleepers are woken exactly when the op ends, and only if there are any.
            assert_eq!(
                a.contains(Actions::WAKE),
                from.has_waiters() && !to.is_busy(),
                "{ctx}"
            );
            assert!(
                !to.has_waiters() || from.has_waiters(),
                "{ctx}: waiters appear from nowhere"
            );
            // Data-touching work happens inside an op, never on an idle page
            // (the one exception restores write access after a failed write-back).
            if touches_data(a) && e != Event::WriteBackFailed {
                assert!(to.is_busy(), "{ctx}: data actions outside an op");
            }
            // An idle page only becomes busy by a request, and a busy page
            // never starts a second op.
            if from.is_busy() && to.is_busy() {
                assert!(
                    matches!(
                        e,
                        Event::LoadFailed
                            | Event::MovedAway
                            | Event::WriteBackComplete
                            | Event::Pin
                            | Event::Unpin
                            | Event::Age
                    ),
                    "{ctx}"
                );
            }
            // Pins change only by Pin/Unpin, by one.
            match e {
                Event::Pin => assert_eq!(to.pins(), from.pins() + 1, "{ctx}"),
                Event::Unpin => assert_eq!(to.pins() + 1, from.pins(), "{ctx}"),
                _ => assert_eq!(to.pins(), from.pins(), "{ctx}"),
            }
            // No lost writes: the only copy (Dirty memory) is dropped only
            // after write-back, by clear, or before it was ever writable.
            if from.is_dirty() && !to.is_dirty() {
                assert!(
                    e == Event::WriteBackComplete
                        || e == Event::Clear
                        || e == Event::MovedAway
                        || (e == Event::LoadFailed && from.op() == Op::Load),
                    "{ctx}: dirty data dropped"
                );
            }
            if a.contains(Actions::WRITE_BACK) {
                assert!(
                    a.contains(Actions::WRITE_PROTECT),
                    "{ctx}: write-back without write-protect"
                );
            }
            // Fills: read only what the store holds, zero only what it does not.
            if a.contains(Actions::READ_IN) {
                assert!(from.is_backed() && from.kind() == Kind::Evicted, "{ctx}");
            }
            if a.contains(Actions::ZERO_FILL) {
                assert!(!from.is_backed() && from.kind() == Kind::Unbacked, "{ctx}");
            }
            if a.contains(Actions::READ_IN) || a.contains(Actions::ZERO_FILL) {
                assert!(
                    a.contains(Actions::GRANT_READ) || a.contains(Actions::GRANT_WRITE),
                    "{ctx}"
                );
                assert_eq!(to.op(), Op::Load, "{ctx}");
            }
            // Memory is released only behind revoked access.
            if a.contains(Actions::DISCARD) {
                assert!(
                    a.contains(Actions::REVOKE),
                    "{ctx}: discard of accessible memory"
                );
            }
            // A hole is punched only when the store held a copy, and the page
            // no longer claims one.
            if a.contains(Actions::PUNCH_HOLE) {
                assert!(from.is_backed() && !to.is_backed(), "{ctx}");
            }
            // Leaving residency clears the referenced bit (I7 covers it, but say it).
            if !to.is_resident() {
                assert!(!to.is_referenced(), "{ctx}");
            }
        }
    }
    assert!(applied > 500, "only {applied} transitions applied");
}

/// A page's whole life, step by step, as the engine drives it.
#[test]
fn lifecycle_walk() {
    let steps: &[(Event, &str)] = &[
        (Event::WriteFault, "Dirty|Load|ref"),
        (Event::LoadComplete, "Dirty|ref"),
        (Event::Evict, "Dirty|WriteBack|ref"),
        (Event::WriteBackComplete, "Evicted|Drop|backed"),
        (Event::DropComplete, "Evicted|backed"),
        (Event::ReadFault, "Clean|Load|backed|ref"),
        (Event::LoadComplete, "Clean|backed|ref"),
        (Event::Age, "Clean|backed"),
        (Event::WriteFault, "Dirty|Load|backed|ref"),
        (Event::LoadComplete, "Dirty|backed|ref"),
        (Event::Clear, "Unbacked|Drop"),
        (Event::DropComplete, "Unbacked"),
    ];
    let mut s = PageState::UNBACKED;
    for &(e, want) in steps {
        let Outcome::Apply(t) = transition(s, e) else {
            panic!("{s:?} + {e:?} did not apply");
        };
        s = t.to;
        assert_eq!(format!("{s:?}"), want, "after {e:?}");
    }
}

/// A move, for every state a page can be held in: the receiving page ends
/// up as the moved one was, idle, and the budget is unchanged across the
/// pair (`moved_in` charges exactly what `MovedAway` uncharges).
#[test]
fn a_move_carries_every_holdable_state() {
    let held_dst = match transition(PageState::UNBACKED, Event::Hold) {
        Outcome::Apply(t) => t.to,
        o => panic!("hold of an unbacked page: {o:?}"),
    };
    let mut moves = 0;
    for s in all_states() {
        let Outcome::Apply(hold) = transition(s, Event::Hold) else {
            assert!(s.is_busy() || s.is_pinned(), "{s:?} refused a hold");
            continue;
        };
        assert!(hold.actions.is_empty(), "{s:?}: a hold acts");
        let held = hold.to;
        // Letting it go unchanged: the op's own completion.
        let release = if held.is_resident() {
            Event::LoadComplete
        } else {
            Event::DropComplete
        };
        let Outcome::Apply(back) = transition(held, release) else {
            panic!("{held:?} cannot be released");
        };
        assert_eq!(back.to, s, "{s:?}: released differently");
        for slot_moved in [false, true] {
            let o = moved_in(held_dst, held, slot_moved);
            let needs_slot = s.is_backed() && s.kind() != Kind::Dirty;
            let Outcome::Apply(t) = o else {
                assert!(needs_slot && !slot_moved, "{s:?} slot {slot_moved}: {o:?}");
                continue;
            };
            moves += 1;
            let to = t.to;
            assert_eq!(PageState::from_word(to.word()), Some(to));
            assert_eq!(to.kind(), s.kind(), "{s:?}");
            assert_eq!(to.is_backed(), s.is_backed() && slot_moved, "{s:?}");
            assert_eq!(to.is_referenced(), s.is_referenced(), "{s:?}");
            assert!(!to.is_busy() && !to.is_pinned(), "{s:?}");
            let Outcome::Apply(away) = transition(held, Event::MovedAway) else {
                panic!("{held:?} refused MovedAway");
            };
            assert_eq!(
                t.actions.contains(Actions::CHARGE),
                away.actions.contains(Actions::UNCHARGE),
                "{s:?}: budget changes across a move"
            );
            assert_eq!(
                away.actions.contains(Actions::PUNCH_HOLE),
                s.is_backed(),
                "{s:?}: the old store copy stays"
            );
            let Outcome::Apply(done) = transition(away.to, Event::DropComplete) else {
                panic!("{:?} cannot end", away.to);
            };
            assert_eq!(done.to, PageState::UNBACKED, "{s:?}");
        }
    }
    assert!(moves >= 10, "only {moves} moves");
    // Sleepers on the receiving page are woken.
    let waiting = held_dst.with_waiters().unwrap();
    let Outcome::Apply(t) = moved_in(waiting, held_dst, false) else {
        panic!("unbacked into unbacked refused");
    };
    assert!(t.actions.contains(Actions::WAKE) && !t.to.has_waiters());
    // Refused: a page that is not held, and a receiver that is not an
    // unbacked held page.
    let idle_dirty = PageState::from_parts(Kind::Dirty, Op::Idle, false, true, false, 0).unwrap();
    assert_eq!(moved_in(held_dst, idle_dirty, true), Outcome::Illegal);
    assert_eq!(
        moved_in(PageState::UNBACKED, held_dst, true),
        Outcome::Illegal
    );
}
