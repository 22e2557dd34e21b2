//! Page states and the one pure transition function.
//!
//! Every SBMA page has one 32-bit state word ([`PageState`]). The word is
//! also what a waiting thread sleeps on (a futex word in the pager), so every
//! change of a page's state is a single compare-and-swap of this word; see
//! [`PageTable`](crate::PageTable).
//!
//! # The word
//!
//! | bits  | field        | meaning |
//! |-------|--------------|---------|
//! | 0-1   | [`Kind`]     | `Unbacked`, `Clean`, `Dirty`, `Evicted` |
//! | 2     | `backed`     | the store holds a valid copy of the page (for `Clean`: the copy equals memory; for `Dirty`: an older copy) |
//! | 3-4   | [`Op`]       | the operation in flight: `Idle`, `Load`, `WriteBack`, `Drop`; *busy* means `op != Idle` |
//! | 5     | `referenced` | accessed since the last [`Event::Age`] (CLOCK's bit) |
//! | 6     | `waiters`    | some thread sleeps on this word until the operation ends |
//! | 7-15  | -            | zero |
//! | 16-31 | `pins`       | pin count; *pinned* means `pins > 0` |
//!
//! The kinds, as seen by a program reading the page:
//!
//! - `Unbacked`: never written (or cleared). Reads as zeros; nothing on disk.
//! - `Clean`: resident, read-only; memory equals the store's copy if
//!   `backed`, and is all zeros otherwise.
//! - `Dirty`: resident, writable; memory is the only up-to-date copy.
//! - `Evicted`: not resident; the store holds the page.
//!
//! # Invariants (checked by [`PageState::from_word`])
//!
//! ```text
//! (I1) kind = Unbacked          ⇒ ¬backed
//! (I2) kind = Evicted           ⇒ backed
//! (I3) op = Load                ⇒ kind ∈ {Clean, Dirty}
//! (I4) op = WriteBack           ⇒ kind = Dirty
//! (I5) op = Drop                ⇒ kind ∈ {Unbacked, Evicted}
//! (I6) waiters                  ⇒ op ≠ Idle
//! (I7) referenced               ⇒ kind ∈ {Clean, Dirty}
//! (I8) resident(s)              ⇔ kind ∈ {Clean, Dirty}
//! (I9) pinned(s)                ⇔ pins(s) > 0
//! ```
//!
//! And over a table of pages (checked by
//! [`PageTable::audit`](crate::PageTable::audit)):
//!
//! ```text
//! resident_pages = |{p : kind(p) ∈ {Clean, Dirty}}| = clean_pages + dirty_pages
//! dirty_pages    = |{p : kind(p) = Dirty}|
//! pinned_pages   = |{p : pins(p) > 0}|
//! charged_bytes  = resident_pages × page_size
//! Σ CHARGE − Σ UNCHARGE (over all applied transitions) = resident_pages
//! ```
//!
//! The last equation holds because [`transition`] emits [`Actions::CHARGE`]
//! exactly when a page becomes resident and [`Actions::UNCHARGE`] exactly when
//! it stops being resident; the exhaustive test checks it for every state and
//! event.
//!
//! # Protocol
//!
//! A transition whose actions touch memory, protections or the store enters
//! a busy [`Op`]; the caller performs the [`Actions`] in their canonical
//! order ([`Actions::iter`]) and then reports the op's completion event
//! ([`Event::LoadComplete`], [`Event::WriteBackComplete`],
//! [`Event::DropComplete`]) or failure ([`Event::LoadFailed`],
//! [`Event::WriteBackFailed`]). Only the thread that started an op may
//! complete it; everybody else sees [`Outcome::Busy`] and waits (fault path)
//! or skips the page (eviction). Keeping every data-touching step inside a
//! busy op is what makes fills atomic (no thread can access a page that is
//! being filled), prevents lost writes (a page is write-protected before
//! write-back and dropped only after), and stops a late `MADV_DONTNEED` or
//! hole punch from destroying a page that was reloaded in between.
//!
//! ```text
//!                read/write fault (CHARGE, READ_IN|ZERO_FILL, GRANT_*)
//!   Unbacked ───────────────────────────────────────────────┐
//!   Evicted  ──────────────────────────────────────────┐    │
//!                                                       ▼    ▼
//!                                             Clean|Load, Dirty|Load
//!                     write fault (GRANT_WRITE)   │ LoadComplete
//!          Clean ─────────────► Dirty|Load ─────►  Clean / Dirty
//!          Dirty ──evict (WRITE_PROTECT, WRITE_BACK)──► Dirty|WriteBack
//!   Dirty|WriteBack ──WriteBackComplete (REVOKE, DISCARD, UNCHARGE)──► Evicted|Drop
//!          Clean ──evict (REVOKE, DISCARD, UNCHARGE)──► Evicted|Drop or Unbacked|Drop
//!   any idle ──clear (…, PUNCH_HOLE)──► Unbacked|Drop
//!   X|Drop ──DropComplete──► X
//!   any idle, unpinned ──hold──► X|Load (resident) or X|Drop (not)
//!   held X ──MovedAway (PUNCH_HOLE if backed, UNCHARGE if resident)──► Unbacked|Drop
//!   held Unbacked|Drop ──moved_in(from) (CHARGE if resident)──► from's state, idle
//! ```
//!
//! The last three lines are a *move* (`realloc` of a large object moving
//! pages instead of bytes): both pages are held, the pager moves the
//! memory (`mremap`) and the store copy (`copy_file_range`), then the
//! receiving page takes the old state ([`moved_in`]) and the old page
//! becomes unbacked; the budget is unchanged (one CHARGE, one UNCHARGE).
//!
//! `docs/page-states.md` has the full table; [`transition`] is the
//! definition.

use core::fmt;

/// The residency kind of a page (bits 0-1 of the word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Never written, or cleared: reads as zeros, nothing on disk.
    Unbacked = 0,
    /// Resident and read-only; equal to the store's copy (or zero).
    Clean = 1,
    /// Resident and writable; memory holds the only current copy.
    Dirty = 2,
    /// Not resident; the store holds the page.
    Evicted = 3,
}

impl Kind {
    /// All kinds, in encoding order.
    pub const ALL: [Kind; 4] = [Kind::Unbacked, Kind::Clean, Kind::Dirty, Kind::Evicted];

    /// Whether a page of this kind occupies memory (and budget).
    pub const fn is_resident(self) -> bool {
        matches!(self, Kind::Clean | Kind::Dirty)
    }
}

/// The operation in flight on a page (bits 3-4 of the word).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Nothing in flight.
    Idle = 0,
    /// Being made accessible: filled from the store or zeros, protection
    /// raised.
    Load = 1,
    /// Write-protected and being written to the store.
    WriteBack = 2,
    /// Being dropped from memory and/or the store.
    Drop = 3,
}

impl Op {
    /// All ops, in encoding order.
    pub const ALL: [Op; 4] = [Op::Idle, Op::Load, Op::WriteBack, Op::Drop];
}

const KIND_MASK: u32 = 0b11;
const BACKED: u32 = 1 << 2;
const OP_SHIFT: u32 = 3;
const OP_MASK: u32 = 0b11 << OP_SHIFT;
const REFERENCED: u32 = 1 << 5;
const WAITERS: u32 = 1 << 6;
const RESERVED: u32 = 0xFF80;
const PIN_SHIFT: u32 = 16;

/// The largest pin count a page can hold.
pub const MAX_PINS: u32 = 0xFFFF;

/// The state of one SBMA page, as stored in its 32-bit word.
///
/// Only valid words (see the module doc's invariants) can be held in a
/// `PageState`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageState(u32);

impl PageState {
    /// A page that was never written: the state every table starts in.
    pub const UNBACKED: PageState = PageState(0);

    /// Decodes a word, checking every invariant.
    pub const fn from_word(word: u32) -> Option<PageState> {
        let s = PageState(word);
        let kind = s.kind();
        let op = s.op();
        let resident = kind.is_resident();
        let ok = word & RESERVED == 0
            && implies(matches!(kind, Kind::Unbacked), !s.is_backed()) // I1
            && implies(matches!(kind, Kind::Evicted), s.is_backed()) // I2
            && implies(matches!(op, Op::Load), resident) // I3
            && implies(matches!(op, Op::WriteBack), matches!(kind, Kind::Dirty)) // I4
            && implies(matches!(op, Op::Drop), !resident) // I5
            && implies(s.has_waiters(), !matches!(op, Op::Idle)) // I6
            && implies(s.is_referenced(), resident); // I7
        if ok { Some(s) } else { None }
    }

    /// The raw word.
    pub const fn word(self) -> u32 {
        self.0
    }

    /// The residency kind.
    pub const fn kind(self) -> Kind {
        match self.0 & KIND_MASK {
            0 => Kind::Unbacked,
            1 => Kind::Clean,
            2 => Kind::Dirty,
            _ => Kind::Evicted,
        }
    }

    /// The operation in flight.
    pub const fn op(self) -> Op {
        match (self.0 & OP_MASK) >> OP_SHIFT {
            0 => Op::Idle,
            1 => Op::Load,
            2 => Op::WriteBack,
            _ => Op::Drop,
        }
    }

    /// Whether the store holds a copy of the page.
    pub const fn is_backed(self) -> bool {
        self.0 & BACKED != 0
    }

    /// Whether an operation is in flight (`op != Idle`).
    pub const fn is_busy(self) -> bool {
        self.0 & OP_MASK != 0
    }

    /// Whether the page was accessed since the last [`Event::Age`].
    pub const fn is_referenced(self) -> bool {
        self.0 & REFERENCED != 0
    }

    /// Whether a thread sleeps on this word.
    pub const fn has_waiters(self) -> bool {
        self.0 & WAITERS != 0
    }

    /// The pin count.
    pub const fn pins(self) -> u32 {
        self.0 >> PIN_SHIFT
    }

    /// Whether the page is pinned (may not leave memory).
    pub const fn is_pinned(self) -> bool {
        self.pins() > 0
    }

    /// Whether the page occupies memory and budget (`Clean` or `Dirty`).
    pub const fn is_resident(self) -> bool {
        self.kind().is_resident()
    }

    /// Whether the page is `Dirty`.
    pub const fn is_dirty(self) -> bool {
        matches!(self.kind(), Kind::Dirty)
    }

    /// Whether an eviction policy may pick this page: resident, idle and not
    /// pinned.
    pub const fn is_evictable(self) -> bool {
        self.is_resident() && !self.is_busy() && !self.is_pinned()
    }

    /// This state with the `waiters` bit set, for a thread about to sleep on
    /// the word; `None` if the page is not busy (there is nothing to wait
    /// for).
    pub const fn with_waiters(self) -> Option<PageState> {
        if self.is_busy() {
            Some(PageState(self.0 | WAITERS))
        } else {
            None
        }
    }

    const fn set_kind(self, kind: Kind) -> Self {
        PageState((self.0 & !KIND_MASK) | kind as u32)
    }

    const fn set_op(self, op: Op) -> Self {
        PageState((self.0 & !OP_MASK) | ((op as u32) << OP_SHIFT))
    }

    const fn set_flag(self, flag: u32, on: bool) -> Self {
        if on {
            PageState(self.0 | flag)
        } else {
            PageState(self.0 & !flag)
        }
    }

    const fn set_pins(self, pins: u32) -> Self {
        PageState((self.0 & !(MAX_PINS << PIN_SHIFT)) | (pins << PIN_SHIFT))
    }

    /// Builds a state from its fields, or `None` if they break an invariant.
    pub const fn from_parts(
        kind: Kind,
        op: Op,
        backed: bool,
        referenced: bool,
        waiters: bool,
        pins: u32,
    ) -> Option<PageState> {
        if pins > MAX_PINS {
            return None;
        }
        let s = PageState(0)
            .set_kind(kind)
            .set_op(op)
            .set_flag(BACKED, backed)
            .set_flag(REFERENCED, referenced)
            .set_flag(WAITERS, waiters)
            .set_pins(pins);
        PageState::from_word(s.0)
    }
}

impl fmt::Debug for PageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.kind())?;
        if !matches!(self.op(), Op::Idle) {
            write!(f, "|{:?}", self.op())?;
        }
        for (on, name) in [
            (self.is_backed(), "backed"),
            (self.is_referenced(), "ref"),
            (self.has_waiters(), "waiters"),
        ] {
            if on {
                write!(f, "|{name}")?;
            }
        }
        if self.is_pinned() {
            write!(f, "|pins={}", self.pins())?;
        }
        Ok(())
    }
}

/// What happens to a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A read access to a page without read permission.
    ReadFault,
    /// A write access to a page without write permission.
    WriteFault,
    /// The `Load` op finished: data in place, protection raised.
    LoadComplete,
    /// The `Load` op failed (I/O error, `mprotect` failure): undo it.
    LoadFailed,
    /// Remove the page from memory (write back first if dirty).
    Evict,
    /// The `WriteBack` op's write reached the store.
    WriteBackComplete,
    /// The `WriteBack` op's write failed: the page stays dirty and resident.
    WriteBackFailed,
    /// The `Drop` op finished (memory discarded and/or hole punched).
    DropComplete,
    /// Discard the contents: the page reads as zeros next time and is never
    /// written back.
    Clear,
    /// Add a pin: the page may not leave memory while pinned.
    Pin,
    /// Remove a pin.
    Unpin,
    /// Clear the `referenced` bit (a CLOCK hand passing).
    Age,
    /// Hold an idle, unpinned page still while its contents move to
    /// another page (see [`moved_in`]): it enters a busy op (`Load` if
    /// resident, `Drop` if not) with no action, so faults wait and
    /// evictions skip it. Ended by [`Event::MovedAway`] once the contents
    /// have moved, or by the op's own completion (`LoadComplete`,
    /// `DropComplete`) to let it go unchanged.
    Hold,
    /// The held page's contents now live in another page: it becomes
    /// `Unbacked` (still in `Drop`, ended by `DropComplete`), its store
    /// copy is released (the copy moved too) and its budget returned (the
    /// page that received it was charged by [`moved_in`]).
    MovedAway,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 14] = [
        Event::ReadFault,
        Event::WriteFault,
        Event::LoadComplete,
        Event::LoadFailed,
        Event::Evict,
        Event::WriteBackComplete,
        Event::WriteBackFailed,
        Event::DropComplete,
        Event::Clear,
        Event::Pin,
        Event::Unpin,
        Event::Age,
        Event::Hold,
        Event::MovedAway,
    ];
}

/// One side effect a transition asks its caller to perform.
///
/// The discriminants are bit positions in [`Actions`], and their order is
/// the canonical order of execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Action {
    /// Charge one page to the budget. Done **before** committing the
    /// transition (admission may have to evict other pages first).
    Charge = 0,
    /// Make the page read-only (`mprotect(PROT_READ)`) before writing it back.
    WriteProtect = 1,
    /// Copy the page to the store (`pwrite`).
    WriteBack = 2,
    /// Remove all access (`mprotect(PROT_NONE)`).
    Revoke = 3,
    /// Release the page's memory (`madvise(MADV_DONTNEED)`); it reads as
    /// zeros afterwards.
    Discard = 4,
    /// Release the store's copy (`fallocate(PUNCH_HOLE)`).
    PunchHole = 5,
    /// Fill the page from the store, atomically (staging + `mremap`).
    ReadIn = 6,
    /// The page's contents are zeros: nothing to read (`UFFDIO_ZEROPAGE`,
    /// or nothing at all over freshly discarded anonymous memory).
    ZeroFill = 7,
    /// Allow reads (`mprotect(PROT_READ)`).
    GrantRead = 8,
    /// Allow reads and writes (`mprotect(PROT_READ | PROT_WRITE)`).
    GrantWrite = 9,
    /// Return one page to the budget.
    Uncharge = 10,
    /// Wake the threads sleeping on the word (`futex_wake`).
    Wake = 11,
}

impl Action {
    /// Whether the action gives something back (access, memory, store
    /// space, budget) rather than producing data: such actions must run even
    /// after an earlier action of the same transition failed.
    pub const fn is_release(self) -> bool {
        matches!(
            self,
            Action::Revoke | Action::Discard | Action::PunchHole | Action::Uncharge
        )
    }

    const ALL: [Action; 12] = [
        Action::Charge,
        Action::WriteProtect,
        Action::WriteBack,
        Action::Revoke,
        Action::Discard,
        Action::PunchHole,
        Action::ReadIn,
        Action::ZeroFill,
        Action::GrantRead,
        Action::GrantWrite,
        Action::Uncharge,
        Action::Wake,
    ];
}

/// A set of [`Action`]s.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Actions(u16);

impl Actions {
    /// No action.
    pub const NONE: Actions = Actions(0);
    /// See [`Action::Charge`].
    pub const CHARGE: Actions = Actions::one(Action::Charge);
    /// See [`Action::WriteProtect`].
    pub const WRITE_PROTECT: Actions = Actions::one(Action::WriteProtect);
    /// See [`Action::WriteBack`].
    pub const WRITE_BACK: Actions = Actions::one(Action::WriteBack);
    /// See [`Action::Revoke`].
    pub const REVOKE: Actions = Actions::one(Action::Revoke);
    /// See [`Action::Discard`].
    pub const DISCARD: Actions = Actions::one(Action::Discard);
    /// See [`Action::PunchHole`].
    pub const PUNCH_HOLE: Actions = Actions::one(Action::PunchHole);
    /// See [`Action::ReadIn`].
    pub const READ_IN: Actions = Actions::one(Action::ReadIn);
    /// See [`Action::ZeroFill`].
    pub const ZERO_FILL: Actions = Actions::one(Action::ZeroFill);
    /// See [`Action::GrantRead`].
    pub const GRANT_READ: Actions = Actions::one(Action::GrantRead);
    /// See [`Action::GrantWrite`].
    pub const GRANT_WRITE: Actions = Actions::one(Action::GrantWrite);
    /// See [`Action::Uncharge`].
    pub const UNCHARGE: Actions = Actions::one(Action::Uncharge);
    /// See [`Action::Wake`].
    pub const WAKE: Actions = Actions::one(Action::Wake);

    const fn one(a: Action) -> Actions {
        Actions(1 << a as u16)
    }

    /// The union of two sets.
    pub const fn with(self, other: Actions) -> Actions {
        Actions(self.0 | other.0)
    }

    /// `self` without the actions of `other`.
    pub const fn without(self, other: Actions) -> Actions {
        Actions(self.0 & !other.0)
    }

    /// `self` plus `other` if `cond`.
    pub const fn with_if(self, cond: bool, other: Actions) -> Actions {
        if cond { self.with(other) } else { self }
    }

    /// Whether every action of `other` is in `self`.
    pub const fn contains(self, other: Actions) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The actions in canonical execution order.
    pub fn iter(self) -> impl Iterator<Item = Action> {
        Action::ALL
            .into_iter()
            .filter(move |a| self.0 & (1 << *a as u16) != 0)
    }
}

impl fmt::Debug for Actions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// A committed-to change of one page's word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transition {
    /// The state the transition was computed from.
    pub from: PageState,
    /// The state to store (by compare-and-swap against `from`).
    pub to: PageState,
    /// What the caller must do, in [`Actions::iter`] order.
    pub actions: Actions,
}

/// The result of applying an [`Event`] to a [`PageState`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Store `to` (compare-and-swap against `from`), then perform the actions.
    Apply(Transition),
    /// Nothing to change: the request is already satisfied (a fault on a
    /// page another thread just made accessible, evicting a page that is not
    /// resident, ...).
    Done,
    /// An operation is in flight: the fault path waits for the word to
    /// change and re-evaluates; eviction skips the page.
    Busy,
    /// Refused because the page is pinned.
    Pinned,
    /// The event is not legal in this state: a caller bug (completing an op
    /// that is not in flight, unpinning an unpinned page, pin overflow).
    Illegal,
}

/// The page state machine: what `event` does to a page in state `s`.
///
/// Pure and total: every valid state and every event give an answer, and
/// every [`Outcome::Apply`] leads to a valid state. See the module doc for
/// the protocol and the invariants.
pub const fn transition(s: PageState, event: Event) -> Outcome {
    use Kind::*;
    let kind = s.kind();
    let op = s.op();
    match event {
        Event::ReadFault | Event::WriteFault => {
            let write = matches!(event, Event::WriteFault);
            if s.is_busy() {
                return Outcome::Busy;
            }
            let granted = if write {
                Actions::GRANT_WRITE
            } else {
                Actions::GRANT_READ
            };
            let to_kind = if write { Dirty } else { Clean };
            let actions = match kind {
                Unbacked => Actions::CHARGE.with(Actions::ZERO_FILL).with(granted),
                Evicted => Actions::CHARGE.with(Actions::READ_IN).with(granted),
                Clean if write => Actions::GRANT_WRITE,
                // Already accessible: another thread got here first.
                Clean | Dirty => return Outcome::Done,
            };
            start(
                s,
                s.set_kind(to_kind).set_flag(REFERENCED, true),
                Op::Load,
                actions,
            )
        }
        Event::LoadComplete => match op {
            Op::Load => finish(s, s, Actions::NONE),
            _ => Outcome::Illegal,
        },
        Event::LoadFailed => match op {
            // Nothing was written through a loading page (it only becomes
            // accessible at LoadComplete), and a Clean page being upgraded
            // equals its store copy or zeros: dropping it loses nothing.
            Op::Load => {
                let back = if s.is_backed() { Evicted } else { Unbacked };
                let to = s
                    .set_kind(back)
                    .set_flag(REFERENCED, false)
                    .set_op(Op::Drop);
                apply(
                    s,
                    to,
                    Actions::REVOKE
                        .with(Actions::DISCARD)
                        .with(Actions::UNCHARGE),
                )
            }
            _ => Outcome::Illegal,
        },
        Event::Evict => {
            if s.is_busy() {
                return Outcome::Busy;
            }
            if !kind.is_resident() {
                return Outcome::Done;
            }
            if s.is_pinned() {
                return Outcome::Pinned;
            }
            match kind {
                Dirty => start(
                    s,
                    s,
                    Op::WriteBack,
                    Actions::WRITE_PROTECT.with(Actions::WRITE_BACK),
                ),
                _ => {
                    let back = if s.is_backed() { Evicted } else { Unbacked };
                    let to = s.set_kind(back).set_flag(REFERENCED, false);
                    start(s, to, Op::Drop, drop_memory())
                }
            }
        }
        Event::WriteBackComplete => match op {
            Op::WriteBack => {
                let to = s
                    .set_kind(Evicted)
                    .set_flag(BACKED, true)
                    .set_flag(REFERENCED, false)
                    .set_op(Op::Drop);
                apply(s, to, drop_memory())
            }
            _ => Outcome::Illegal,
        },
        Event::WriteBackFailed => match op {
            Op::WriteBack => finish(s, s, Actions::GRANT_WRITE),
            _ => Outcome::Illegal,
        },
        Event::DropComplete => match op {
            Op::Drop => finish(s, s, Actions::NONE),
            _ => Outcome::Illegal,
        },
        Event::Clear => {
            if s.is_busy() {
                return Outcome::Busy;
            }
            if kind.is_resident() && s.is_pinned() {
                return Outcome::Pinned;
            }
            let actions = match kind {
                Unbacked => return Outcome::Done,
                Evicted => Actions::NONE,
                Clean | Dirty => drop_memory(),
            };
            let to = s
                .set_kind(Unbacked)
                .set_flag(BACKED, false)
                .set_flag(REFERENCED, false);
            start(
                s,
                to,
                Op::Drop,
                actions.with_if(s.is_backed(), Actions::PUNCH_HOLE),
            )
        }
        Event::Pin => {
            if s.pins() == MAX_PINS {
                return Outcome::Illegal;
            }
            apply(s, s.set_pins(s.pins() + 1), Actions::NONE)
        }
        Event::Unpin => {
            if s.pins() == 0 {
                return Outcome::Illegal;
            }
            apply(s, s.set_pins(s.pins() - 1), Actions::NONE)
        }
        Event::Age => {
            if !s.is_referenced() {
                return Outcome::Done;
            }
            apply(s, s.set_flag(REFERENCED, false), Actions::NONE)
        }
        Event::Hold => {
            if s.is_busy() {
                return Outcome::Busy;
            }
            if s.is_pinned() {
                return Outcome::Pinned;
            }
            let op = if kind.is_resident() {
                Op::Load
            } else {
                Op::Drop
            };
            start(s, s, op, Actions::NONE)
        }
        Event::MovedAway => match op {
            Op::Load | Op::Drop => {
                let to = s
                    .set_kind(Unbacked)
                    .set_flag(BACKED, false)
                    .set_flag(REFERENCED, false)
                    .set_op(Op::Drop);
                let actions = Actions::NONE
                    .with_if(s.is_backed(), Actions::PUNCH_HOLE)
                    .with_if(kind.is_resident(), Actions::UNCHARGE);
                apply(s, to, actions)
            }
            _ => Outcome::Illegal,
        },
    }
}

/// The end of a move: `held` (an `Unbacked` page held by [`Event::Hold`])
/// receives the contents of `from` (a page held by [`Event::Hold`] whose
/// memory and, if `slot_moved`, store copy were moved to it).
///
/// The result is `from`'s state, idle and unpinned, with `backed` kept only
/// if the store copy moved; it charges the page if it is resident (the
/// page it came from is uncharged by [`Event::MovedAway`]) and wakes
/// `held`'s sleepers. `Illegal` if `held` is not a held unbacked page,
/// `from` is not held, or a copy the contents depend on did not move (a
/// clean or evicted page's store copy).
pub const fn moved_in(held: PageState, from: PageState, slot_moved: bool) -> Outcome {
    let held_ok =
        matches!(held.kind(), Kind::Unbacked) && matches!(held.op(), Op::Drop) && !held.is_pinned();
    let from_held = match from.op() {
        Op::Load | Op::Drop => !from.is_pinned(),
        Op::Idle | Op::WriteBack => false,
    };
    let needs_slot = from.is_backed() && !matches!(from.kind(), Kind::Dirty);
    if !held_ok || !from_held || (needs_slot && !slot_moved) {
        return Outcome::Illegal;
    }
    let to = PageState(0)
        .set_kind(from.kind())
        .set_flag(BACKED, from.is_backed() && slot_moved)
        .set_flag(REFERENCED, from.is_referenced());
    let actions = Actions::NONE
        .with_if(from.is_resident(), Actions::CHARGE)
        .with_if(held.has_waiters(), Actions::WAKE);
    apply(held, to, actions)
}

/// Logical implication, so the invariants read as written in the module doc.
const fn implies(a: bool, b: bool) -> bool {
    !a || b
}

/// Revoke access, release the memory, return the budget.
const fn drop_memory() -> Actions {
    Actions::REVOKE
        .with(Actions::DISCARD)
        .with(Actions::UNCHARGE)
}

const fn apply(from: PageState, to: PageState, actions: Actions) -> Outcome {
    Outcome::Apply(Transition { from, to, actions })
}

/// Enter busy `op` from an idle state.
const fn start(from: PageState, to: PageState, op: Op, actions: Actions) -> Outcome {
    apply(from, to.set_op(op), actions)
}

/// End the op in flight: clear `waiters` and wake them if there were any.
const fn finish(from: PageState, to: PageState, actions: Actions) -> Outcome {
    let to = to.set_op(Op::Idle).set_flag(WAITERS, false);
    apply(from, to, actions.with_if(from.has_waiters(), Actions::WAKE))
}
