//! [`Group`]: one memory budget shared by the processes of a named group
//! (issue 7's foundation: membership, accounting, liveness, cleanup).
//!
//! The budget lives in a POSIX shared-memory segment, `/dev/shm/sbma-group-<name>`,
//! mode 0600 (only the same user can join). What the original SBMA got
//! wrong here, and what this does instead (research/sbma.md (e)):
//!
//! - **Creation race.** The creator opens with `O_CREAT | O_EXCL`, sizes and
//!   fills the segment, and only then publishes it by storing `MAGIC`
//!   (release). A joiner waits, bounded, until the size is right and the
//!   magic is there, so it never reads a half-initialised segment.
//! - **Slots are reused**: a member takes the first free one of
//!   [`MAX_MEMBERS`] and gives it back when it leaves.
//! - **Dead members are reaped.** A slot records the member's pid and its
//!   start time (`/proc/<pid>/stat`, field 22), so a recycled pid is not
//!   mistaken for the member. Any member reaps dead ones when it joins,
//!   when a charge does not fit (on the fault path: without allocating,
//!   and skipped if the membership lock is busy), and on [`Group::reap`]:
//!   their charge goes back to the group. A process killed with SIGKILL thus loses its
//!   share at the next admission, not never.
//! - **Removal.** The last member to leave marks the segment removed and
//!   unlinks it; a joiner that opened it just before sees the mark and starts
//!   over with a fresh one. When the last member was killed, nobody is left
//!   to do it: every join also collects the segments of other groups whose
//!   members are all dead, and a watcher can call [`Group::collect`]
//!   (`sbma run --group` starts one per program). Nothing is left in `/dev/shm` once every member
//!   has left, or been killed and any group started since.
//! - **The membership lock** (held only to change slots, never while
//!   waiting for memory) stores its holder's pid: a waiter that finds the
//!   holder dead takes it over, so a member killed inside it cannot wedge
//!   the group.
//!
//! Admission across processes (asking blocked peers and peers over their
//! fair share to give memory back, through a doorbell their pager thread
//! serves: [`Group::ask_peers`], [`Group::take_request`]) is in the arena's
//! `charge` and in `service.rs`.
#![allow(unsafe_code, reason = "a shared mapping read by several processes")]

use crate::error::Error;
use core::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use rustix::fd::AsFd;
use rustix::io::Errno;
use sbma_core::{Budget, Shortfall};
use std::time::{Duration, Instant};

/// Members a group can have at once.
pub const MAX_MEMBERS: usize = 64;
/// "sbmagrp1": the segment is initialised (and its layout version).
const MAGIC: u64 = u64::from_le_bytes(*b"sbmagrp3");
/// How long a joiner waits for a segment being created.
const INIT_WAIT: Duration = Duration::from_secs(2);

#[repr(C)]
struct Slot {
    pid: AtomicI32,
    _pad: u32,
    start: AtomicU64,
    charged: AtomicU64,
    blocked: AtomicU32,
    /// Rung (incremented, futex-woken) when peers want memory back.
    bell: AtomicU32,
    /// Bytes peers asked this member to give back.
    want: AtomicU64,
    /// The process image that joined (see [`image`]): after `exec` the pid
    /// and start time stay, but the old image's slots are stale.
    image: AtomicU64,
}

#[repr(C)]
struct Segment {
    magic: AtomicU64,
    removed: AtomicU32,
    /// Pid of the member changing slots, 0 when free.
    lock: AtomicI32,
    limit: AtomicU64,
    resident: AtomicU64,
    peak: AtomicU64,
    members: AtomicU32,
    generation: AtomicU32,
    slots: [Slot; MAX_MEMBERS],
}

const SIZE: usize = size_of::<Segment>();

/// One member's view of a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member's process id.
    pub pid: i32,
    /// Bytes it has charged.
    pub charged: u64,
    /// Whether it declared itself blocked (a preferred victim).
    pub blocked: bool,
}

/// Membership of a named group sharing one budget; leaves on drop.
pub struct Group {
    seg: *mut Segment,
    name: String,
    slot: usize,
    pid: i32,
    /// Set once this member has left (at drop, or in the exit handler):
    /// charges are no longer counted.
    left: std::sync::Arc<core::sync::atomic::AtomicBool>,
}

// SAFETY: the segment is only accessed through atomics.
unsafe impl Send for Group {}
// SAFETY: as above.
unsafe impl Sync for Group {}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("slot", &self.slot)
            .field("limit", &self.limit())
            .field("resident", &self.resident())
            .finish()
    }
}

/// The shared-memory object's name for group `name`.
pub fn segment_name(name: &str) -> String {
    format!("/sbma-group-{name}")
}

impl Group {
    /// Joins group `name` (creating it with a budget of `limit` bytes if
    /// it does not exist).
    ///
    /// # Errors
    /// [`Error::Config`] for a bad name, a group whose budget differs from
    /// `limit`, or a full group; [`Error::Map`] if the segment cannot be
    /// created, opened or mapped.
    pub fn join(name: &str, limit: usize) -> Result<Group, Error> {
        Self::check_name(name)?;
        let shm = segment_name(name);
        let me = crate::sys::process_id();
        collect_abandoned(name, me);
        let start = start_time(me).unwrap_or(0);
        let deadline = Instant::now() + INIT_WAIT;
        loop {
            let seg = open_segment(&shm, limit, deadline)?;
            // SAFETY: a mapping of SIZE bytes, initialised (magic seen).
            let s = unsafe { &*seg };
            let found = s.limit.load(Ordering::Acquire);
            if found != limit as u64 {
                unmap(seg);
                return Err(Error::Config {
                    name: "SBMA_GROUP",
                    value: name.to_owned(),
                    reason: format!("the group exists with a budget of {found} bytes, not {limit}"),
                });
            }
            lock(s, me);
            if s.removed.load(Ordering::Acquire) != 0 {
                // Its last member left between our open and our lock.
                unlock(s, me);
                unmap(seg);
                continue;
            }
            reap_locked(s, me);
            let Some(slot) = s
                .slots
                .iter()
                .position(|sl| sl.pid.load(Ordering::Acquire) == 0)
            else {
                unlock(s, me);
                unmap(seg);
                return Err(Error::Config {
                    name: "SBMA_GROUP",
                    value: name.to_owned(),
                    reason: format!("the group is full ({MAX_MEMBERS} members)"),
                });
            };
            let sl = &s.slots[slot];
            sl.charged.store(0, Ordering::Relaxed);
            sl.blocked.store(0, Ordering::Relaxed);
            sl.want.store(0, Ordering::Relaxed);
            sl.image.store(image(), Ordering::Relaxed);
            sl.start.store(start, Ordering::Relaxed);
            sl.pid.store(me, Ordering::Release);
            s.members.fetch_add(1, Ordering::AcqRel);
            unlock(s, me);
            let left = std::sync::Arc::new(core::sync::atomic::AtomicBool::new(false));
            at_exit::register(seg, name, slot, me, left.clone());
            return Ok(Group {
                seg,
                name: name.to_owned(),
                slot,
                pid: me,
                left,
            });
        }
    }

    /// Removes group `name`'s segment if every member has died without
    /// leaving (killed): for a watcher such as `sbma run`'s janitor, so
    /// nothing stays in `/dev/shm` when a whole group was killed. Members
    /// that are alive keep it.
    pub fn collect(name: &str) -> Collected {
        collect(name, crate::sys::process_id())
    }

    /// Checks a group name: 1-200 characters of `[A-Za-z0-9._-]`.
    ///
    /// # Errors
    /// [`Error::Config`] for `SBMA_GROUP`, saying what is expected.
    pub fn check_name(name: &str) -> Result<(), Error> {
        let ok = !name.is_empty()
            && name.len() <= 200
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if ok {
            Ok(())
        } else {
            Err(Error::Config {
                name: "SBMA_GROUP",
                value: name.to_owned(),
                reason: "expected 1-200 characters of [A-Za-z0-9._-]".into(),
            })
        }
    }

    fn seg(&self) -> &Segment {
        // SAFETY: mapped for the life of `self`.
        unsafe { &*self.seg }
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes this member has charged.
    pub fn charged(&self) -> usize {
        self.seg().slots[self.slot].charged.load(Ordering::Acquire) as usize
    }

    /// The most bytes charged in the group at once.
    pub fn peak(&self) -> usize {
        self.seg().peak.load(Ordering::Relaxed) as usize
    }

    /// Declares this member blocked (a preferred victim) or running.
    pub fn set_blocked(&self, on: bool) {
        self.seg().slots[self.slot]
            .blocked
            .store(u32::from(on), Ordering::Release);
    }

    /// Whether this member declared itself blocked.
    pub fn is_blocked(&self) -> bool {
        self.seg().slots[self.slot].blocked.load(Ordering::Acquire) != 0
    }

    /// The live members (after reaping dead ones).
    pub fn members(&self) -> Vec<Member> {
        self.reap();
        self.seg()
            .slots
            .iter()
            .filter_map(|sl| {
                let pid = sl.pid.load(Ordering::Acquire);
                (pid != 0).then(|| Member {
                    pid,
                    charged: sl.charged.load(Ordering::Acquire),
                    blocked: sl.blocked.load(Ordering::Acquire) != 0,
                })
            })
            .collect()
    }

    /// Asks peers to give back `bytes` (this member has nothing left to
    /// evict): members that declared themselves blocked first, then those
    /// holding more than a fair share (the limit over the live members),
    /// largest first; if none does, the largest holder, so the request
    /// always reaches someone who can make progress possible. Rings each
    /// asked member's doorbell. Returns whether anyone was asked.
    ///
    /// Async-signal-safe: atomics and `futex` only.
    pub fn ask_peers(&self, bytes: usize) -> bool {
        self.ask(bytes, true)
    }

    /// Whether this member holds less than a fair share (the limit over
    /// the live members) while somebody else holds more: it should get
    /// memory back from them rather than evict its own.
    pub fn below_fair_share(&self) -> bool {
        let s = self.seg();
        let fair = self.fair_share();
        let mine = s.slots[self.slot].charged.load(Ordering::Acquire);
        mine < fair
            && s.slots.iter().enumerate().any(|(i, sl)| {
                i != self.slot
                    && sl.pid.load(Ordering::Acquire) != 0
                    && (sl.charged.load(Ordering::Acquire) > fair
                        || (sl.blocked.load(Ordering::Acquire) != 0
                            && sl.charged.load(Ordering::Acquire) > 0))
            })
    }

    /// Asks blocked members and members over their fair share to give
    /// back `bytes` (never the largest holder as a last resort): for a
    /// member below its share. Returns whether anyone was asked.
    pub fn ask_over_share(&self, bytes: usize) -> bool {
        self.ask(bytes, false)
    }

    /// The limit over the live members.
    fn fair_share(&self) -> u64 {
        let s = self.seg();
        s.limit.load(Ordering::Relaxed) / u64::from(s.members.load(Ordering::Acquire).max(1))
    }

    fn ask(&self, bytes: usize, last_resort: bool) -> bool {
        let s = self.seg();
        let fair = self.fair_share();
        let mut need = bytes as u64;
        let mut asked = false;
        let peers = || {
            s.slots.iter().enumerate().filter(|&(i, sl)| {
                i != self.slot
                    && sl.pid.load(Ordering::Acquire) != 0
                    && sl.charged.load(Ordering::Acquire) > 0
            })
        };
        // Blocked members give everything asked; running ones their excess.
        for blocked in [true, false] {
            while need > 0 {
                let best = peers()
                    .filter(|(_, sl)| (sl.blocked.load(Ordering::Acquire) != 0) == blocked)
                    .map(|(i, sl)| {
                        let c = sl.charged.load(Ordering::Acquire);
                        let already = sl.want.load(Ordering::Acquire);
                        let spare = if blocked { c } else { c.saturating_sub(fair) };
                        (i, spare.saturating_sub(already))
                    })
                    .filter(|&(_, spare)| spare > 0)
                    .max_by_key(|&(_, spare)| spare);
                let Some((i, spare)) = best else { break };
                let ask = spare.min(need);
                self.ring(i, ask);
                need -= ask;
                asked = true;
            }
        }
        if !asked && last_resort {
            if let Some((i, _)) = peers().max_by_key(|(_, sl)| sl.charged.load(Ordering::Acquire)) {
                self.ring(i, bytes as u64);
                asked = true;
            }
        }
        asked
    }

    fn ring(&self, slot: usize, bytes: u64) {
        let sl = &self.seg().slots[slot];
        sl.want.fetch_add(bytes, Ordering::AcqRel);
        sl.bell.fetch_add(1, Ordering::AcqRel);
        crate::sys::futex_wake_shared(&sl.bell);
    }

    /// The group's release generation (changes whenever a member gave
    /// memory back on request).
    pub fn generation(&self) -> u32 {
        self.seg().generation.load(Ordering::Acquire)
    }

    /// Sleeps until a member gives memory back (the generation moves past
    /// `seen`) or `timeout_ns` passes. Async-signal-safe.
    pub fn wait_for_release(&self, seen: u32, timeout_ns: u64) {
        crate::sys::futex_wait_shared(&self.seg().generation, seen, timeout_ns);
    }

    /// For the member's serving thread: sleeps until its doorbell rings (or
    /// `timeout_ns` passes) and takes the bytes peers asked for.
    pub fn take_request(&self, timeout_ns: u64) -> usize {
        let sl = &self.seg().slots[self.slot];
        let seen = sl.bell.load(Ordering::Acquire);
        if sl.want.load(Ordering::Acquire) == 0 {
            crate::sys::futex_wait_shared(&sl.bell, seen, timeout_ns);
        }
        sl.want.swap(0, Ordering::AcqRel) as usize
    }

    /// Rings this member's own doorbell (to stop its serving thread).
    pub fn wake_self(&self) {
        let sl = &self.seg().slots[self.slot];
        sl.bell.fetch_add(1, Ordering::AcqRel);
        crate::sys::futex_wake_shared(&sl.bell);
    }

    /// Tells waiting members that memory was given back.
    pub fn released(&self) {
        announce_release(self.seg());
    }

    /// Gives the charge of members that died back to the group; returns
    /// how many were reaped.
    pub fn reap(&self) -> usize {
        let s = self.seg();
        lock(s, self.pid);
        let n = reap_locked(s, self.pid);
        unlock(s, self.pid);
        if n > 0 {
            self.released();
        }
        n
    }

    /// [`reap`](Self::reap) for the fault path: skipped when another
    /// member (or another thread of this one) holds the membership lock,
    /// so a fault never waits for it; the next short charge tries again.
    /// Async-signal-safe: atomics, `kill(pid, 0)`, and [`start_time`]'s
    /// `open`/`read`/`close`.
    fn try_reap(&self) -> usize {
        let s = self.seg();
        if s.lock
            .compare_exchange(0, self.pid, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return 0;
        }
        let n = reap_locked(s, self.pid);
        unlock(s, self.pid);
        if n > 0 {
            self.released();
        }
        n
    }
}

impl Budget for Group {
    fn try_charge(&self, bytes: usize) -> Result<(), Shortfall> {
        if self.left.load(Ordering::Acquire) {
            return Ok(()); // exiting: no longer counted
        }
        let s = self.seg();
        let limit = s.limit.load(Ordering::Relaxed);
        let mut reaped = false;
        let mut cur = s.resident.load(Ordering::Relaxed);
        loop {
            let available = limit.saturating_sub(cur);
            if bytes as u64 > available {
                if !reaped {
                    reaped = true;
                    if self.try_reap() > 0 {
                        cur = s.resident.load(Ordering::Relaxed);
                        continue;
                    }
                }
                return Err(Shortfall {
                    requested: bytes,
                    available: available as usize,
                });
            }
            match s.resident.compare_exchange_weak(
                cur,
                cur + bytes as u64,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    s.slots[self.slot]
                        .charged
                        .fetch_add(bytes as u64, Ordering::AcqRel);
                    s.peak.fetch_max(cur + bytes as u64, Ordering::Relaxed);
                    return Ok(());
                }
                Err(now) => cur = now,
            }
        }
    }

    fn uncharge(&self, bytes: usize) {
        if self.left.load(Ordering::Acquire) {
            return;
        }
        let s = self.seg();
        s.slots[self.slot]
            .charged
            .fetch_sub(bytes as u64, Ordering::AcqRel);
        s.resident.fetch_sub(bytes as u64, Ordering::AcqRel);
    }

    fn resident(&self) -> usize {
        self.seg().resident.load(Ordering::Acquire) as usize
    }

    fn limit(&self) -> usize {
        self.seg().limit.load(Ordering::Relaxed) as usize
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        at_exit::forget(self.seg);
        leave(self.seg, &self.name, self.slot, self.pid, &self.left);
        unmap(self.seg);
    }
}

/// Gives this member's slot and charge back; the last member marks the
/// segment removed and unlinks it. Once only (`left`), and only in the
/// process that joined (not in a forked child).
fn leave(
    seg: *mut Segment,
    name: &str,
    slot: usize,
    pid: i32,
    left: &core::sync::atomic::AtomicBool,
) {
    if crate::sys::process_id() != pid || left.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: still mapped (callers unmap only after this).
    let s = unsafe { &*seg };
    lock(s, pid);
    let sl = &s.slots[slot];
    let charged = sl.charged.swap(0, Ordering::AcqRel);
    s.resident.fetch_sub(charged, Ordering::AcqRel);
    sl.pid.store(0, Ordering::Release);
    s.members.fetch_sub(1, Ordering::AcqRel);
    // Members that ended without leaving (killed, or `_exit` without exit
    // handlers) go too, so the last live member removes the segment.
    reap_locked(s, pid);
    let last = s.members.load(Ordering::Acquire) == 0;
    if last {
        s.removed.store(1, Ordering::Release);
        let _ = rustix::shm::unlink(segment_name(name).as_str());
    }
    unlock(s, pid);
    if !last && charged > 0 {
        announce_release(s);
    }
}

/// Moves the release generation on and wakes the members waiting for room.
fn announce_release(s: &Segment) {
    s.generation.fetch_add(1, Ordering::AcqRel);
    crate::sys::futex_wake_shared(&s.generation);
}

/// Removes the segments of other groups whose members are all dead (the
/// last member of a group was killed, so nobody unlinked it). Segments
/// being created, of live groups, or not ours to open are left alone.
fn collect_abandoned(except: &str, me: i32) {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(group) = file.to_str().and_then(|f| f.strip_prefix("sbma-group-")) else {
            continue;
        };
        if group != except {
            collect(group, me);
        }
    }
}

/// What [`Group::collect`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Collected {
    /// No such segment (never created, or removed already).
    Absent,
    /// A member is alive (or the segment is being created, or is not ours
    /// to open): left alone.
    Live,
    /// Every member had died: the segment was removed now.
    Removed,
}

/// Removes group `group`'s segment if all its members are dead.
fn collect(group: &str, me: i32) -> Collected {
    let shm = segment_name(group);
    let fd = match rustix::shm::open(
        shm.as_str(),
        rustix::shm::OFlags::RDWR,
        rustix::fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Collected::Absent,
        Err(_) => return Collected::Live,
    };
    if rustix::fs::fstat(&fd).map_or(true, |st| st.st_size as usize != SIZE) {
        return Collected::Live;
    }
    let Ok(seg) = map(fd.as_fd()) else {
        return Collected::Live;
    };
    // SAFETY: a mapping of SIZE bytes; only atomics are used.
    let s = unsafe { &*seg };
    let mut found = Collected::Live;
    if s.magic.load(Ordering::Acquire) == MAGIC {
        lock(s, me);
        reap_locked(s, me);
        if s.removed.load(Ordering::Acquire) != 0 {
            found = Collected::Absent;
        } else if s.members.load(Ordering::Acquire) == 0 {
            s.removed.store(1, Ordering::Release);
            let _ = rustix::shm::unlink(shm.as_str());
            found = Collected::Removed;
        }
        unlock(s, me);
    }
    unmap(seg);
    found
}

/// Opens (or creates, with `limit`) and maps the segment, waiting until
/// it is initialised.
fn open_segment(shm: &str, limit: usize, deadline: Instant) -> Result<*mut Segment, Error> {
    use rustix::fs::Mode;
    use rustix::shm::OFlags;
    let map_err = |op: &'static str| move |source: Errno| Error::Map { op, source };
    loop {
        match rustix::shm::open(
            shm,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            Mode::from_raw_mode(0o600),
        ) {
            Ok(fd) => {
                rustix::fs::ftruncate(&fd, SIZE as u64)
                    .map_err(map_err("sizing the group segment"))?;
                let seg = map(fd.as_fd()).map_err(map_err("mapping the group segment"))?;
                // SAFETY: a fresh zeroed mapping nobody else uses before
                // the magic is published below.
                let s = unsafe { &*seg };
                s.limit.store(limit as u64, Ordering::Relaxed);
                s.magic.store(MAGIC, Ordering::Release);
                return Ok(seg);
            }
            Err(Errno::EXIST) => {}
            Err(e) => {
                return Err(Error::Map {
                    op: "creating the group segment in /dev/shm",
                    source: e,
                });
            }
        }
        let fd = match rustix::shm::open(shm, OFlags::RDWR, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => continue, // removed in between: create it
            Err(e) => {
                return Err(Error::Map {
                    op: "opening the group segment in /dev/shm",
                    source: e,
                });
            }
        };
        // Wait for the creator to size it, then to publish it.
        loop {
            let size = rustix::fs::fstat(&fd)
                .map_err(map_err("checking the group segment"))?
                .st_size;
            if size as usize == SIZE {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Map {
                    op: "waiting for the group segment to be created (a different sbma version, or a creator that died?)",
                    source: Errno::TIMEDOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let seg = map(fd.as_fd()).map_err(map_err("mapping the group segment"))?;
        // SAFETY: a mapping of SIZE bytes.
        let s = unsafe { &*seg };
        while s.magic.load(Ordering::Acquire) != MAGIC {
            if Instant::now() > deadline {
                unmap(seg);
                return Err(Error::Map {
                    op: "waiting for the group segment to be initialised",
                    source: Errno::TIMEDOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        return Ok(seg);
    }
}

fn map(fd: rustix::fd::BorrowedFd<'_>) -> Result<*mut Segment, Errno> {
    // SAFETY: a shared mapping of the whole object; it is only accessed
    // through atomics.
    let p = unsafe {
        rustix::mm::mmap(
            core::ptr::null_mut(),
            SIZE,
            rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
            rustix::mm::MapFlags::SHARED,
            fd,
            0,
        )
    }?;
    Ok(p.cast())
}

fn unmap(seg: *mut Segment) {
    // SAFETY: our own mapping of SIZE bytes, not used after this.
    let _ = unsafe { rustix::mm::munmap(seg.cast(), SIZE) };
}

/// Takes the membership lock, taking it over from a holder that died.
fn lock(s: &Segment, me: i32) {
    loop {
        match s
            .lock
            .compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => return,
            Err(holder) if holder != 0 && !alive(holder, None) => {
                let _ = s
                    .lock
                    .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Acquire);
                if s.lock.load(Ordering::Acquire) == me {
                    return;
                }
            }
            Err(_) => std::thread::yield_now(),
        }
    }
}

fn unlock(s: &Segment, me: i32) {
    let _ = s
        .lock
        .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed);
}

/// Reaps dead members (lock held); returns how many.
fn reap_locked(s: &Segment, me: i32) -> usize {
    let mut n = 0;
    for sl in &s.slots {
        let pid = sl.pid.load(Ordering::Acquire);
        if pid == 0 {
            continue;
        }
        // A slot of this pid from an image that has since exec'd is
        // stale (exec runs no exit handler); this image's slots are live.
        let dead = if pid == me {
            sl.image.load(Ordering::Acquire) != image()
        } else {
            !alive(pid, Some(sl.start.load(Ordering::Acquire)))
        };
        if dead {
            let charged = sl.charged.swap(0, Ordering::AcqRel);
            s.resident.fetch_sub(charged, Ordering::AcqRel);
            sl.pid.store(0, Ordering::Release);
            s.members.fetch_sub(1, Ordering::AcqRel);
            n += 1;
        }
    }
    n
}

/// An identifier of this process image, different after every `exec`
/// (the clock at first use mixed with this static's address, which ASLR
/// moves), so slots left by an image that exec'd can be told from ours.
fn image() -> u64 {
    static IMAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *IMAGE.get_or_init(|| {
        let here = &IMAGE as *const _ as u64;
        (crate::sys::now_ns() ^ here.rotate_left(29)).max(1)
    })
}

/// Whether process `pid` exists (and, given `start`, is the same process:
/// pids are recycled).
fn alive(pid: i32, start: Option<u64>) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    match (exists, start) {
        (false, _) => false,
        (true, Some(s)) if s != 0 => start_time(pid) == Some(s),
        (true, _) => true,
    }
}

/// The start time of `pid` in clock ticks since boot (`/proc/<pid>/stat`
/// field 22), which tells a recycled pid from the original process.
///
/// Async-signal-safe (it runs on the fault path when a charge does not
/// fit): the path is built and the file read in stack buffers, with
/// `open`/`read`/`close` only.
fn start_time(pid: i32) -> Option<u64> {
    let mut digits = [0u8; 20];
    let pid = crate::sys::decimal(usize::try_from(pid).ok()?, &mut digits);
    let mut path = [0u8; 40];
    let parts: [&[u8]; 3] = [b"/proc/", pid, b"/stat\0"];
    let mut len = 0;
    for part in parts {
        path[len..len + part.len()].copy_from_slice(part);
        len += part.len();
    }
    let path = core::ffi::CStr::from_bytes_with_nul(&path[..len]).ok()?;
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    // The line is about 300 bytes (the command name is at most 64).
    let mut buf = [0u8; 1024];
    let mut n = 0;
    while n < buf.len() {
        match rustix::io::read(&fd, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    parse_start_time(&buf[..n])
}

/// Field 22 of a `/proc/<pid>/stat` line.
fn parse_start_time(stat: &[u8]) -> Option<u64> {
    // Fields after the command name, which ends at the last ')'.
    let rest = stat.get(stat.iter().rposition(|&b| b == b')')? + 2..)?;
    // `rest` starts at field 3 (state); field 22 is the 20th from there.
    let field = rest
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty())
        .nth(19)?;
    field.iter().try_fold(0u64, |v, &b| {
        b.is_ascii_digit()
            .then(|| v.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

/// Processes often exit without dropping their pager (a global allocator,
/// the preload shim): an exit handler leaves every group this process is
/// still in, so the last one out removes the segment. Nothing is unmapped
/// (other exit handlers may still free memory; their charges are no longer
/// counted once the member has left).
mod at_exit {
    use super::{Segment, leave};
    use core::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex, Once};

    struct Joined {
        seg: usize,
        name: String,
        slot: usize,
        pid: i32,
        left: Arc<AtomicBool>,
    }

    static JOINED: Mutex<Vec<Joined>> = Mutex::new(Vec::new());

    pub(super) fn register(
        seg: *mut Segment,
        name: &str,
        slot: usize,
        pid: i32,
        left: Arc<AtomicBool>,
    ) {
        static ONCE: Once = Once::new();
        // SAFETY: registering a plain function with atexit.
        ONCE.call_once(|| unsafe {
            libc::atexit(leave_all);
        });
        JOINED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Joined {
                seg: seg as usize,
                name: name.to_owned(),
                slot,
                pid,
                left,
            });
    }

    pub(super) fn forget(seg: *mut Segment) {
        JOINED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|j| j.seg != seg as usize);
    }

    extern "C" fn leave_all() {
        let joined = JOINED.lock().unwrap_or_else(|e| e.into_inner());
        for j in joined.iter() {
            // `leave` checks the pid: a forked child's copy of the list
            // does nothing.
            leave(j.seg as *mut Segment, &j.name, j.slot, j.pid, &j.left);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_start_time, start_time};

    #[test]
    fn start_time_reads_field_22() {
        // A command name with spaces and parentheses, as comm may hold.
        let line = b"1234 (a b) c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 1 0 987654 123456 78 18446744073709551615\n";
        assert_eq!(parse_start_time(line), Some(987_654));
        assert_eq!(parse_start_time(b"1234 (x) S 1 2"), None);
        assert_eq!(parse_start_time(b"no paren"), None);
        // This process, read without allocating, agrees with /proc.
        let me = std::process::id() as i32;
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let expected: u64 = text[text.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .nth(19)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(start_time(me), Some(expected));
        assert_eq!(start_time(i32::MAX), None);
    }
}
