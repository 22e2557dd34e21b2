//! Fork snapshots: how a forked child keeps paging its parent's memory.
//!
//! A forked child inherits the arena's page table and its resident pages,
//! but the backing file is the parent's, and the parent goes on rewriting
//! page slots (write-back of dirty pages, holes punched for freed ones).
//! A child reading a slot after the parent rewrote it would see data newer
//! than its own copy of memory. So each fork gets a *snapshot*, set up by
//! the parent just before the fork (`pthread_atfork` prepare handler):
//!
//! - a slot in [`Snapshots`] with a bitmap in shared anonymous memory (one
//!   bit per page: "preserved"), and a close-on-exec pipe whose write end
//!   only the child keeps: when every copy of it is closed (the child and
//!   its own children have exec'd or exited), the pipe reads end-of-file
//!   and the snapshot is retired;
//! - an area of the same backing file, `(slot + 1) × arena length` bytes
//!   in (the file is sparse: an unused area costs nothing).
//!
//! Before the parent rewrites or punches a page's slot, it copies the
//! slot's current bytes (data only: holes stay holes, found with
//! `lseek(SEEK_DATA/SEEK_HOLE)`) into the area of every live snapshot whose
//! bit for the page is clear, with `copy_file_range`, then sets the bit
//! (copy-on-write of file slots, once per page and snapshot). The child
//! reads a page from the parent's slot, then checks the bit: if it is set,
//! the parent may have rewritten the slot during or after the read, and
//! the child reads the preserved copy instead. The bit is set only after
//! the copy is complete and before the rewrite starts, so a read that saw
//! any rewritten byte always finds the bit set.
//!
//! The child never writes the parent's file: it drops clean pages to stay
//! within its budget (they can be read again), keeps the pages it dirtied
//! resident (a child that dirties more than the budget goes over it, and
//! counts it in `Stats::child_overcommits`), and its own children share
//! its snapshot. With no free slot ([`MAX_SNAPSHOTS`] children alive that
//! have not exec'd), or if setting one up fails, a child gets none: it
//! keeps its resident pages and aborts with one line when it touches a
//! page it would have to read.
//!
//! Everything here may run in the fault handler (preservation happens in
//! write-back): raw syscalls, atomics, no allocation, no lock.
#![allow(unsafe_code, reason = "shared bitmaps, raw descriptors")]

use crate::sys;
use core::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
use rustix::fd::{BorrowedFd, FromRawFd};
use rustix::io::Errno;

/// Children per arena that can page at once (alive and not exec'd).
pub const MAX_SNAPSHOTS: usize = 16;

/// Slot phases (the high bits of [`Slot::state`]; the low bits count the
/// threads using the slot).
const FREE: u32 = 0;
const SETUP: u32 = 1 << 28;
const LIVE: u32 = 2 << 28;
const CLOSING: u32 = 3 << 28;
const PHASE: u32 = 3 << 28;
const USERS: u32 = !PHASE;

/// One fork's snapshot, parent side.
struct Slot {
    /// Phase and user count.
    state: AtomicU32,
    /// The pipe's read end: end-of-file once the child exec'd or exited.
    pipe: AtomicI32,
    /// The preserved bits, one per page, in shared memory.
    bits: AtomicPtr<AtomicU64>,
}

/// The live snapshots of one arena (parent side), and the one this
/// process reads through if it is a child.
pub(crate) struct Snapshots {
    /// Slots not free: zero means write-back has nothing to preserve.
    live: AtomicUsize,
    slots: [Slot; MAX_SNAPSHOTS],
    /// Bytes of each bitmap mapping.
    bitmap_bytes: usize,
    /// The arena's length: where the areas start and how far apart.
    area: u64,
    shift: u32,
    /// Set up for the fork in progress: slot + 1 (0: none), and the pipe's
    /// write end, which the parent closes after the fork.
    pending: AtomicUsize,
    pending_write: AtomicI32,
    /// In a child: the snapshot it reads through (slot + 1, 0: none) and
    /// that snapshot's bits.
    mine: AtomicUsize,
    my_bits: AtomicPtr<AtomicU64>,
}

/// Forks are serialised from prepare to the parent's or child's handler,
/// so each arena has at most one pending snapshot.
static FORKING: AtomicBool = AtomicBool::new(false);

/// Takes the fork lock (prepare handler).
pub(crate) fn begin_fork() {
    while FORKING
        .compare_exchange(false, true, Acquire, Relaxed)
        .is_err()
    {
        sys::yield_now();
    }
}

/// Releases the fork lock (parent and child handlers).
pub(crate) fn end_fork() {
    FORKING.store(false, Release);
}

impl Snapshots {
    /// Snapshots for an arena of `pages` pages of `1 << shift` bytes.
    pub fn new(pages: usize, shift: u32) -> Snapshots {
        Snapshots {
            live: AtomicUsize::new(0),
            slots: [const {
                Slot {
                    state: AtomicU32::new(FREE),
                    pipe: AtomicI32::new(-1),
                    bits: AtomicPtr::new(core::ptr::null_mut()),
                }
            }; MAX_SNAPSHOTS],
            bitmap_bytes: pages.div_ceil(64) * 8,
            area: (pages as u64) << shift,
            shift,
            pending: AtomicUsize::new(0),
            pending_write: AtomicI32::new(-1),
            mine: AtomicUsize::new(0),
            my_bits: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Where snapshot `slot` keeps its copy of the page at `offset`.
    fn area_offset(&self, slot: usize, offset: u64) -> u64 {
        (slot as u64 + 1) * self.area + offset
    }

    // ---------------------------------------------------------------
    // Parent side
    // ---------------------------------------------------------------

    /// Prepare handler (the arena's owner, before `fork`): retires dead
    /// snapshots and sets up one for this fork. Failure only means the
    /// child gets none.
    pub fn prepare(&self, store: BorrowedFd<'_>) {
        self.collect(store);
        self.pending.store(0, Relaxed);
        let Some(i) = self.slots.iter().position(|s| {
            s.state
                .compare_exchange(FREE, SETUP, AcqRel, Relaxed)
                .is_ok()
        }) else {
            return;
        };
        let slot = &self.slots[i];
        let Ok((read, write)) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) else {
            slot.state.store(FREE, Release);
            return;
        };
        let Ok(bits) = sys::map_shared(self.bitmap_bytes.max(1)) else {
            slot.state.store(FREE, Release);
            return;
        };
        use rustix::fd::IntoRawFd;
        slot.pipe.store(read.into_raw_fd(), Relaxed);
        slot.bits.store(bits.cast(), Relaxed);
        self.pending_write.store(write.into_raw_fd(), Relaxed);
        self.pending.store(i + 1, Relaxed);
        // Counted live before write-back can see it (and from now on: a
        // write-back after the fork, before the parent's handler, must
        // already preserve).
        self.live.fetch_add(1, SeqCst);
        slot.state.store(LIVE, SeqCst);
    }

    /// Parent handler: the child holds the pipe's write end; the parent
    /// lets go of it.
    pub fn after_fork_in_parent(&self) {
        let w = self.pending_write.swap(-1, Relaxed);
        if w >= 0 {
            // SAFETY: our own descriptor, created in `prepare`.
            drop(unsafe { rustix::fd::OwnedFd::from_raw_fd(w) });
        }
        self.pending.store(0, Relaxed);
    }

    /// Child handler: adopts the pending snapshot (or keeps the one this
    /// process already reads through, in a child's child).
    pub fn after_fork_in_child(&self) {
        let pending = self.pending.swap(0, Relaxed);
        // The write end stays open: it is what tells the parent we live.
        self.pending_write.store(-1, Relaxed);
        if pending != 0 {
            self.adopt(pending);
        }
        // The parent's other snapshots are its business.
        self.live.store(0, Relaxed);
    }

    /// Makes snapshot `pending` (slot + 1) the one this process reads
    /// through.
    fn adopt(&self, pending: usize) {
        let bits = self.slots[pending - 1].bits.load(Relaxed);
        self.my_bits.store(bits, Relaxed);
        self.mine.store(pending, Release);
    }

    /// Copies the current bytes of the pages of `[offset, offset + len)`
    /// whose slots a live snapshot has not preserved yet into that
    /// snapshot's area, then marks them preserved. Called before the
    /// slots are rewritten or punched, with the pages busy.
    ///
    /// Returns how many pages were marked (in all snapshots).
    ///
    /// # Errors
    /// The copy's I/O error (`ENOSPC`...): the rewrite must not happen.
    pub fn preserve(&self, store: BorrowedFd<'_>, offset: u64, len: u64) -> Result<usize, Errno> {
        if self.live.load(SeqCst) == 0 {
            return Ok(0);
        }
        let mut marked = 0;
        for i in 0..MAX_SNAPSHOTS {
            if !self.acquire(i) {
                continue;
            }
            let r = if self.child_gone(i) {
                self.retire(i);
                Ok(0)
            } else {
                self.preserve_in(i, store, offset, len)
            };
            self.release(i, store);
            marked += r?;
        }
        Ok(marked)
    }

    fn preserve_in(
        &self,
        i: usize,
        store: BorrowedFd<'_>,
        offset: u64,
        len: u64,
    ) -> Result<usize, Errno> {
        let bits = self.slots[i].bits.load(Acquire);
        let first = (offset >> self.shift) as usize;
        let pages = (len >> self.shift) as usize;
        let page = 1u64 << self.shift;
        let mut p = 0;
        let mut marked = 0;
        while p < pages {
            // SAFETY: `bits` covers every page of the arena while we hold
            // a user count on the slot.
            if unsafe { is_set(bits, first + p) } {
                p += 1;
                continue;
            }
            let start = p;
            // SAFETY: as above.
            while p < pages && !unsafe { is_set(bits, first + p) } {
                p += 1;
            }
            let from = offset + start as u64 * page;
            let n = (p - start) as u64 * page;
            copy_data(store, from, self.area_offset(i, from), n)?;
            for q in start..p {
                // SAFETY: as above.
                unsafe { set(bits, first + q) };
            }
            marked += p - start;
        }
        // The bits are published before the caller's rewrite starts.
        core::sync::atomic::fence(SeqCst);
        Ok(marked)
    }

    /// Retires every snapshot whose child is gone.
    fn collect(&self, store: BorrowedFd<'_>) {
        if self.live.load(SeqCst) == 0 {
            return;
        }
        for i in 0..MAX_SNAPSHOTS {
            if self.acquire(i) {
                if self.child_gone(i) {
                    self.retire(i);
                }
                self.release(i, store);
            }
        }
    }

    /// Takes a user count on a live slot.
    fn acquire(&self, i: usize) -> bool {
        let s = &self.slots[i].state;
        if s.load(Acquire) & PHASE != LIVE {
            return false;
        }
        let before = s.fetch_add(1, AcqRel);
        if before & PHASE == LIVE {
            return true;
        }
        self.slots[i].state.fetch_sub(1, AcqRel);
        false
    }

    /// Drops a user count; the last user of a closing slot frees it.
    fn release(&self, i: usize, store: BorrowedFd<'_>) {
        let slot = &self.slots[i];
        let before = slot.state.fetch_sub(1, AcqRel);
        if before != CLOSING | 1 {
            return;
        }
        let fd = slot.pipe.swap(-1, Relaxed);
        if fd >= 0 {
            // SAFETY: the slot's own descriptor; nobody uses the slot now.
            drop(unsafe { rustix::fd::OwnedFd::from_raw_fd(fd) });
        }
        let bits = slot.bits.swap(core::ptr::null_mut(), Relaxed);
        if !bits.is_null() {
            // SAFETY: the slot's own mapping; nobody uses the slot now.
            let _ = unsafe { sys::unmap(bits.cast(), self.bitmap_bytes.max(1)) };
        }
        let _ = sys::punch_hole(store, self.area_offset(i, 0), self.area);
        slot.state.store(FREE, Release);
        self.live.fetch_sub(1, SeqCst);
    }

    /// Marks a slot closing (the caller holds a user count, so its release
    /// frees it, or a later one does).
    fn retire(&self, i: usize) {
        let _ = self.slots[i].state.fetch_update(AcqRel, Acquire, |w| {
            (w & PHASE == LIVE).then_some((w & USERS) | CLOSING)
        });
    }

    /// Whether every copy of the slot's pipe write end is closed.
    fn child_gone(&self, i: usize) -> bool {
        let fd = self.slots[i].pipe.load(Relaxed);
        // SAFETY: the slot's descriptor stays open while we hold a user
        // count.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut fds = [rustix::event::PollFd::new(
            &fd,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&rustix::time::Timespec::default())) {
            Ok(n) if n > 0 => fds[0]
                .revents()
                .intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR),
            _ => false,
        }
    }

    // ---------------------------------------------------------------
    // Child side
    // ---------------------------------------------------------------

    /// Whether this process (a forked child) has a snapshot to read
    /// through.
    pub fn readable(&self) -> bool {
        self.mine.load(Acquire) != 0
    }

    /// After reading `[offset, offset + len)` of the store into `buf`:
    /// re-reads from the snapshot's area every page whose slot the parent
    /// preserved (it may have rewritten the slot during the read).
    ///
    /// # Safety
    /// `buf` is valid for `len` bytes of writes.
    pub unsafe fn fix_up(
        &self,
        store: BorrowedFd<'_>,
        buf: *mut u8,
        offset: u64,
        len: usize,
    ) -> Result<(), Errno> {
        let mine = self.mine.load(Acquire);
        let bits = self.my_bits.load(Acquire);
        if mine == 0 || bits.is_null() {
            return Err(Errno::BADF);
        }
        core::sync::atomic::fence(SeqCst);
        let first = (offset >> self.shift) as usize;
        let page = 1usize << self.shift;
        for p in 0..(len >> self.shift) {
            // SAFETY: the bitmap covers the arena; it is mapped in this
            // process for its whole life.
            if unsafe { is_set(bits, first + p) } {
                let at = offset + (p * page) as u64;
                // SAFETY: `buf + p * page` lies in the caller's buffer.
                unsafe {
                    sys::read_full(
                        store,
                        buf.add(p * page),
                        page,
                        self.area_offset(mine - 1, at),
                    )
                }?;
            }
        }
        Ok(())
    }
}

/// In a forked child, the arena's pages are driven like the signal
/// backend's, whatever the parent used (a userfaultfd registration does not
/// survive `fork`): inaccessible until a fault, filled from the parent's
/// slot (fixed up from the snapshot) into a fresh mapping moved over the
/// page, protections by `mprotect`.
impl crate::memory::Memory for Snapshots {
    fn backend(&self) -> crate::memory::Backend {
        crate::memory::Backend::Signal
    }

    unsafe fn protect(
        &self,
        addr: *mut u8,
        len: usize,
        p: sbma_core::Protection,
    ) -> Result<(), Errno> {
        // SAFETY: forwarded to the caller.
        unsafe { sys::protect(addr, len, sys::Prot::from(p)) }
    }

    unsafe fn fill(
        &self,
        store: BorrowedFd<'_>,
        offset: u64,
        addr: *mut u8,
        len: usize,
        _staging: *mut u8,
        _writable: bool,
    ) -> Result<(), Errno> {
        // SAFETY: the target is busy and inaccessible (caller); `tmp` is
        // the fresh mapping of `len` bytes `fill_by_remap` hands over.
        unsafe {
            crate::memory::fill_by_remap(addr, len, |tmp| {
                sys::read_full(store, tmp, len, offset)
                    .and_then(|()| self.fix_up(store, tmp, offset, len))
            })
        }
    }

    unsafe fn zero(&self, _addr: *mut u8, _len: usize, _writable: bool) -> Result<(), Errno> {
        // Non-resident pages were discarded (the child handler discards
        // the ones whose load or drop the fork interrupted).
        Ok(())
    }

    fn uses_staging(&self) -> bool {
        false
    }

    unsafe fn relocate(
        &self,
        _src: *mut u8,
        _dst: *mut u8,
        _len: usize,
        _prot: sbma_core::Protection,
    ) -> Result<(), (usize, Errno)> {
        // Never reached: a forked child refuses moves (`Arena::relocate`).
        Err((0, Errno::NOTSUP))
    }
}

/// A forked child's budget: the parent's limit, charged with the pages the
/// child holds, private to the child (a group's shared budget belongs to
/// the parent). [`force`](Self::force) charges past the limit when the
/// child has nothing it can drop.
pub(crate) struct ChildBudget {
    limit: AtomicUsize,
    resident: AtomicUsize,
    overcommits: AtomicU64,
}

impl ChildBudget {
    pub const fn new() -> ChildBudget {
        ChildBudget {
            limit: AtomicUsize::new(0),
            resident: AtomicUsize::new(0),
            overcommits: AtomicU64::new(0),
        }
    }

    /// Child handler: starts from the parent's limit and the pages the
    /// child holds.
    pub fn start(&self, limit: usize, resident: usize) {
        self.limit.store(limit, Relaxed);
        self.resident.store(resident, Relaxed);
    }

    /// Charges `bytes` whether they fit or not.
    pub fn force(&self, bytes: usize) {
        self.resident.fetch_add(bytes, AcqRel);
        self.overcommits.fetch_add(1, Relaxed);
    }

    /// How many charges went past the limit.
    pub fn overcommits(&self) -> u64 {
        self.overcommits.load(Relaxed)
    }
}

impl sbma_core::Budget for ChildBudget {
    fn try_charge(&self, bytes: usize) -> Result<(), sbma_core::Shortfall> {
        let limit = self.limit.load(Relaxed);
        self.resident
            .fetch_update(AcqRel, Relaxed, |cur| {
                (cur + bytes <= limit).then_some(cur + bytes)
            })
            .map(drop)
            .map_err(|cur| sbma_core::Shortfall {
                requested: bytes,
                available: limit.saturating_sub(cur),
            })
    }

    fn uncharge(&self, bytes: usize) {
        self.resident.fetch_sub(bytes, AcqRel);
    }

    fn resident(&self) -> usize {
        self.resident.load(Acquire)
    }

    fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }
}

/// # Safety
/// `bits` covers bit `i`.
unsafe fn is_set(bits: *const AtomicU64, i: usize) -> bool {
    // SAFETY: the caller's.
    unsafe { (*bits.add(i / 64)).load(Acquire) & (1 << (i % 64)) != 0 }
}

/// # Safety
/// `bits` covers bit `i`.
unsafe fn set(bits: *const AtomicU64, i: usize) {
    // SAFETY: the caller's.
    unsafe { (*bits.add(i / 64)).fetch_or(1 << (i % 64), Release) };
}

/// Copies the data of `[from, from + len)` of `store` to `to`, leaving
/// holes out (they read as zeros at both places).
fn copy_data(store: BorrowedFd<'_>, from: u64, to: u64, len: u64) -> Result<(), Errno> {
    use rustix::fs::SeekFrom;
    let end = from + len;
    let mut at = from;
    while at < end {
        let data = match rustix::fs::seek(store, SeekFrom::Data(at)) {
            Ok(d) => d,
            Err(Errno::NXIO) => return Ok(()),
            Err(e) => return Err(e),
        };
        if data >= end {
            return Ok(());
        }
        let hole = rustix::fs::seek(store, SeekFrom::Hole(data))?.min(end);
        copy_range(store, data, to + (data - from), hole - data)?;
        at = hole;
    }
    Ok(())
}

/// `copy_file_range` within the store, or through a buffer where the
/// filesystem or `O_DIRECT` refuses it.
fn copy_range(store: BorrowedFd<'_>, mut from: u64, mut to: u64, len: u64) -> Result<(), Errno> {
    let end = from + len;
    while from < end {
        let want = usize::try_from(end - from).unwrap_or(usize::MAX);
        match rustix::fs::copy_file_range(store, Some(&mut from), store, Some(&mut to), want) {
            Ok(0) => return Err(Errno::IO),
            Ok(_) => {}
            Err(Errno::INTR) => {}
            Err(Errno::XDEV | Errno::INVAL | Errno::OPNOTSUPP | Errno::NOSYS) => {
                return copy_buffered(store, from, to, end - from);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Copies through a buffer mapped for the purpose (page-aligned for
/// `O_DIRECT`; not on the stack, which is the small alternate signal stack
/// in the fault handler).
fn copy_buffered(store: BorrowedFd<'_>, from: u64, to: u64, len: u64) -> Result<(), Errno> {
    const CHUNK: usize = 64 << 10;
    let buf = sys::map_rw(CHUNK)?;
    let mut done = 0;
    let mut r = Ok(());
    while done < len && r.is_ok() {
        let n = (len - done).min(CHUNK as u64) as usize;
        // SAFETY: the buffer is ours and `n` bytes fit in it.
        r = unsafe {
            sys::read_full(store, buf, n, from + done)
                .and_then(|()| sys::write_full(store, buf, n, to + done))
        };
        done += n as u64;
    }
    // SAFETY: mapped above, used by nobody else.
    let _ = unsafe { sys::unmap(buf, CHUNK) };
    r
}

/// For tests: whether page `page` of snapshot `slot` is preserved.
#[cfg(test)]
impl Snapshots {
    fn preserved(&self, slot: usize, page: usize) -> bool {
        let bits = self.slots[slot].bits.load(Acquire);
        // SAFETY: test-only, the slot is live.
        !bits.is_null() && unsafe { is_set(bits, page) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fd::AsFd;

    fn store() -> rustix::fd::OwnedFd {
        sys::open_unlinked_file(&std::env::temp_dir()).unwrap()
    }

    fn write(fd: BorrowedFd<'_>, at: u64, byte: u8, len: usize) {
        let buf = vec![byte; len];
        // SAFETY: our buffer.
        unsafe { sys::write_full(fd, buf.as_ptr(), len, at) }.unwrap();
    }

    fn read(fd: BorrowedFd<'_>, at: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        // SAFETY: our buffer.
        unsafe { sys::read_full(fd, buf.as_mut_ptr(), len, at) }.unwrap();
        buf
    }

    /// The parent's side end to end, without a fork: preservation copies
    /// data once per page, keeps holes, and a retired snapshot frees its
    /// area.
    #[test]
    fn preserve_copies_each_page_once_and_retires() {
        let f = store();
        let fd = f.as_fd();
        let s = Snapshots::new(8, 12);
        write(fd, 0, 1, 4096); // page 0 data, page 1 hole, page 2 data
        write(fd, 2 * 4096, 2, 4096);
        s.prepare(fd);
        assert_eq!(s.pending.load(Relaxed), 1);
        s.preserve(fd, 0, 3 * 4096).unwrap();
        assert!((0..3).all(|p| s.preserved(0, p)));
        assert!(!s.preserved(0, 3));
        let area = s.area_offset(0, 0);
        assert_eq!(read(fd, area, 4096), vec![1; 4096]);
        assert_eq!(read(fd, area + 4096, 4096), vec![0; 4096]);
        assert_eq!(read(fd, area + 2 * 4096, 4096), vec![2; 4096]);
        // A second rewrite of page 0 does not copy again.
        write(fd, 0, 9, 4096);
        s.preserve(fd, 0, 4096).unwrap();
        assert_eq!(read(fd, area, 4096), vec![1; 4096]);
        // The child's view: page 0 comes from the area.
        // (Without the child handler's closing of descriptors: the same
        // process plays the parent next.)
        s.adopt(s.pending.load(Relaxed));
        let mut buf = vec![0u8; 2 * 4096];
        // SAFETY: our buffer.
        unsafe {
            sys::read_full(fd, buf.as_mut_ptr(), buf.len(), 0).unwrap();
            s.fix_up(fd, buf.as_mut_ptr(), 0, buf.len()).unwrap();
        }
        assert!(buf[..4096].iter().all(|&b| b == 1));
        // Closing the write end (the child exec'd) retires the slot.
        s.after_fork_in_parent();
        assert_eq!(s.live.load(SeqCst), 1);
        s.preserve(fd, 5 * 4096, 4096).unwrap();
        assert_eq!(s.live.load(SeqCst), 0);
        assert_eq!(s.slots[0].state.load(SeqCst), FREE);
        assert_eq!(read(fd, area, 4096), vec![0; 4096], "area punched");
    }
}
