//! The explicit API on real mappings: regions, clear, touch, pins,
//! syscalls into managed memory, configuration errors.
#![allow(
    unsafe_code,
    reason = "tests access managed memory through raw pointers"
)]

#[macro_use]
mod common;

use common::Variant;
use sbma_pager::{Access, Error, Pager};
use std::io::{Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;

const PAGE: usize = 16 << 10;

/// A pager without the background writer and prefetchers: these tests count
/// exact evictions, loads and residency, and a writer evicting ahead of need
/// would make those counts depend on timing. `background.rs` and
/// `integrity.rs` cover the background threads.
fn pager(b: Variant, budget_pages: usize) -> Pager {
    b.apply(
        Pager::builder()
            .budget(budget_pages * PAGE)
            .page_size(PAGE)
            .max_size(1 << 30)
            .background_io(false),
    )
    .build()
    .unwrap()
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: callers pass a live region.
        unsafe { p.add(i).write(seed.wrapping_add((i % 253) as u8)) };
    }
}

fn check(p: *const u8, len: usize, seed: u8) -> usize {
    // SAFETY: callers pass a live region.
    (0..len)
        .filter(|&i| unsafe { p.add(i).read() } != seed.wrapping_add((i % 253) as u8))
        .count()
}

#[test]
fn configuration_errors_are_clear() {
    let e = Pager::builder()
        .budget(3 * PAGE)
        .page_size(PAGE)
        .build()
        .unwrap_err();
    assert_eq!(
        e,
        Error::BudgetTooSmall {
            budget: 3 * PAGE,
            minimum: 4 * PAGE
        }
    );
    assert!(
        e.to_string().contains("at least 65536 bytes (4 pages)"),
        "{e}"
    );
    let e = Pager::builder().page_size(12 << 10).build().unwrap_err();
    assert!(
        e.to_string()
            .contains("page size `12288`: page size is not a power of two"),
        "{e}"
    );
    let e = Pager::builder().page_size(2048).build().unwrap_err();
    assert!(matches!(e, Error::Config { .. }), "{e}");
    let e = Pager::builder().dir("/proc").build().unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot create a backing file in /proc"),
        "{e}"
    );
}

per_backend! {
    zero_sized_and_huge_regions => zero_sized_and_huge_regions_on;
    regions_are_independent_and_freed_space_reads_zero => regions_are_independent_and_freed_space_reads_zero_on;
    resize_grows_and_shrinks_in_place => resize_grows_and_shrinks_in_place_on;
    clear_zeroes_whole_pages_only_and_is_never_written_back => clear_zeroes_whole_pages_only_and_is_never_written_back_on;
    clear_over_mixed_states_releases_exactly_what_was_held => clear_over_mixed_states_releases_exactly_what_was_held_on;
    touch_evict_and_invalid_ranges => touch_evict_and_invalid_ranges_on;
    syscalls_into_evicted_memory_work_after_prepare => syscalls_into_evicted_memory_work_after_prepare_on;
    pins_filling_the_budget_are_reported => pins_filling_the_budget_are_reported_on;
    sequential_faults_read_ahead_and_random_ones_do_not => sequential_faults_read_ahead_and_random_ones_do_not_on;
    sequential_first_writes_claim_fresh_pages_ahead => sequential_first_writes_claim_fresh_pages_ahead_on;
}

fn zero_sized_and_huge_regions_on(b: Variant) {
    let pager = pager(b, 8);
    let empty = pager.alloc(0).unwrap();
    assert!(empty.is_empty() && !empty.as_ptr().is_null());
    assert!(!pager.contains(empty.as_ptr()));
    let e = pager.alloc(2 << 30).unwrap_err();
    assert!(matches!(e, Error::OutOfAddressSpace { .. }), "{e}");
    assert!(e.to_string().contains("raise max_size"), "{e}");
    // The largest region that fits is fine, and is lazily backed.
    let big = pager.alloc(1 << 30).unwrap();
    // SAFETY: first and last byte of the region.
    unsafe {
        big.as_mut_ptr().write(7);
        big.as_mut_ptr().add(big.len() - 1).write(9);
        assert_eq!(
            (big.as_ptr().read(), big.as_ptr().add(big.len() - 1).read()),
            (7, 9)
        );
    }
    assert!(pager.alloc(1).is_err(), "the arena is full");
    drop(big);
    assert!(pager.alloc(1).is_ok(), "freed space is reusable");
}

fn regions_are_independent_and_freed_space_reads_zero_on(b: Variant) {
    let pager = pager(b, 8);
    let a = pager.alloc(20 * PAGE).unwrap();
    let b = pager.alloc(20 * PAGE + 100).unwrap();
    fill(a.as_mut_ptr(), a.len(), 1);
    fill(b.as_mut_ptr(), b.len(), 2);
    assert_eq!(check(a.as_ptr(), a.len(), 1), 0);
    assert_eq!(check(b.as_ptr(), b.len(), 2), 0);
    assert!(pager.contains(a.as_ptr()) && pager.contains(b.as_ptr().wrapping_add(b.len() - 1)));
    drop(a);
    let c = pager.alloc(20 * PAGE).unwrap();
    // SAFETY: inside c.
    let nonzero = (0..c.len())
        .filter(|&i| unsafe { c.as_ptr().add(i).read() } != 0)
        .count();
    assert_eq!(nonzero, 0, "a new region showed an old region's data");
    assert_eq!(check(b.as_ptr(), b.len(), 2), 0);
    pager.check_invariants().unwrap();
}

fn resize_grows_and_shrinks_in_place_on(b: Variant) {
    let pager = pager(b, 8);
    let mut r = pager.alloc(10 * PAGE).unwrap();
    fill(r.as_mut_ptr(), r.len(), 3);
    pager.evict_all().unwrap();
    r.resize(30 * PAGE).unwrap();
    assert_eq!(check(r.as_ptr(), 10 * PAGE, 3), 0, "grow lost data");
    // SAFETY: the grown part of the region.
    let grown_nonzero = (10 * PAGE..30 * PAGE)
        .filter(|&i| unsafe { r.as_ptr().add(i).read() } != 0)
        .count();
    assert_eq!(grown_nonzero, 0);
    r.resize(5 * PAGE + 1).unwrap();
    assert_eq!(check(r.as_ptr(), 5 * PAGE, 3), 0, "shrink lost data");
    assert!(
        !pager.contains(r.as_ptr().wrapping_add(7 * PAGE)),
        "shrunk pages still live"
    );
    // A neighbour right after the region blocks growing in place, and the
    // failed attempt leaves the region as it was.
    let n = pager.alloc(PAGE).unwrap();
    assert_eq!(
        n.as_ptr(),
        r.as_ptr().wrapping_add(6 * PAGE),
        "first fit puts the neighbour right after"
    );
    assert!(matches!(
        r.resize(100 * PAGE),
        Err(Error::OutOfAddressSpace { .. })
    ));
    assert_eq!(r.len(), 5 * PAGE + 1);
    assert_eq!(check(r.as_ptr(), 5 * PAGE, 3), 0);
    pager.check_invariants().unwrap();
}

fn clear_zeroes_whole_pages_only_and_is_never_written_back_on(b: Variant) {
    let pager = pager(b, 4);
    let r = pager.alloc(16 * PAGE).unwrap();
    fill(r.as_mut_ptr(), r.len(), 5);
    pager.evict_all().unwrap();
    let written = pager.stats().pages_written;
    // Clear from the middle of page 2 to the middle of page 9: pages 3..9
    // are whole, 2 and 9 are partial and keep their bytes.
    let (from, to) = (2 * PAGE + 100, 9 * PAGE + 100);
    pager
        .clear(r.as_ptr().wrapping_add(from), to - from)
        .unwrap();
    for i in (0..r.len()).step_by(61) {
        // SAFETY: inside the region.
        let got = unsafe { r.as_ptr().add(i).read() };
        let want = if (3 * PAGE..9 * PAGE).contains(&i) {
            0
        } else {
            5u8.wrapping_add((i % 253) as u8)
        };
        assert_eq!(got, want, "offset {i}");
    }
    pager.evict_all().unwrap();
    assert_eq!(
        pager.stats().pages_written,
        written,
        "reading cleared or clean pages wrote something"
    );
    pager.check_invariants().unwrap();
}

fn clear_over_mixed_states_releases_exactly_what_was_held_on(b: Variant) {
    // 48 pages: resident dirty, resident clean, evicted and never-touched
    // pages interleaved, so one clear meets every state in runs and
    // alone. Cleared pages read zeros, neighbours keep their bytes, the
    // budget gets back exactly the resident pages, nothing is written.
    let pager = pager(b, 64);
    let r = pager.alloc(48 * PAGE).unwrap();
    let p = r.as_mut_ptr();
    // Back to front: a front-to-back fill would have write-ahead make the
    // "never touched" pages resident too.
    for page in (0..48).rev() {
        if page % 7 == 6 {
            continue; // never touched
        }
        fill(p.wrapping_add(page * PAGE), PAGE, page as u8);
    }
    for page in (0..48).filter(|pg| pg % 5 == 0) {
        pager.evict(p.wrapping_add(page * PAGE), PAGE).unwrap();
    }
    for page in (0..48).filter(|pg| pg % 5 == 1) {
        // Evicted, then read back: clean and resident.
        pager.evict(p.wrapping_add(page * PAGE), PAGE).unwrap();
        pager
            .touch(p.wrapping_add(page * PAGE), PAGE, Access::Read)
            .unwrap();
    }
    let cleared = 8..40;
    let resident_inside = cleared
        .clone()
        .filter(|pg| pg % 7 != 6 && pg % 5 != 0)
        .count();
    let before = pager.stats();
    pager
        .clear(p.wrapping_add(cleared.start * PAGE), cleared.len() * PAGE)
        .unwrap();
    let after = pager.stats();
    assert_eq!(
        before.resident - after.resident,
        (resident_inside * PAGE) as u64,
        "{before:?} {after:?}"
    );
    pager.check_invariants().unwrap();
    for page in 0..48 {
        let q = p.wrapping_add(page * PAGE);
        if cleared.contains(&page) || page % 7 == 6 {
            // SAFETY: inside the region.
            let nonzero = (0..PAGE)
                .filter(|&i| unsafe { q.add(i).read() } != 0)
                .count();
            assert_eq!(nonzero, 0, "page {page} should read zeros");
        } else {
            assert_eq!(check(q, PAGE, page as u8), 0, "page {page} changed");
        }
    }
    assert_eq!(pager.stats().pages_written, after.pages_written);
}

fn touch_evict_and_invalid_ranges_on(b: Variant) {
    let pager = pager(b, 8);
    let r = pager.alloc(8 * PAGE).unwrap();
    pager.touch(r.as_ptr(), r.len(), Access::Write).unwrap();
    let s = pager.stats();
    assert_eq!((s.write_faults, s.resident), (8, 8 * PAGE as u64));
    assert_eq!(pager.evict(r.as_ptr(), 3 * PAGE).unwrap(), 3);
    assert_eq!(pager.stats().resident, 5 * PAGE as u64);
    let outside = r.as_ptr().wrapping_add(8 * PAGE);
    assert_eq!(
        pager.touch(outside, 1, Access::Read),
        Err(Error::InvalidRange)
    );
    assert_eq!(
        pager.touch(std::ptr::null(), 1, Access::Read),
        Err(Error::InvalidRange)
    );
    assert_eq!(pager.evict(r.as_ptr(), 9 * PAGE), Err(Error::InvalidRange));
    assert_eq!(pager.clear(outside, PAGE), Err(Error::InvalidRange));
}

fn syscalls_into_evicted_memory_work_after_prepare_on(b: Variant) {
    let pager = pager(b, 8);
    let r = pager.alloc(32 * PAGE).unwrap();
    fill(r.as_mut_ptr(), r.len(), 9);
    pager.evict_all().unwrap();
    let dir = common::tmpdir();
    let mut file = tempfile_in(&dir);
    let data: Vec<u8> = (0..3 * PAGE).map(|i| (i % 7) as u8 + 100).collect();
    file.write_all(&data).unwrap();
    let fd = file.as_raw_fd();
    let buf = r.as_mut_ptr().wrapping_add(5 * PAGE + 10);

    // Without preparation the signal backend's inaccessible buffer is
    // refused by the kernel (uffd needs no preparation: see
    // `syscalls_into_evicted_memory_just_work_under_uffd`).
    if matches!(b, Variant::Signal(_)) {
        // SAFETY: pread into a region of ours; the kernel checks access.
        let n = unsafe { libc::pread(fd, buf.cast(), 100, 0) };
        assert_eq!(
            (n, std::io::Error::last_os_error().raw_os_error()),
            (-1, Some(libc::EFAULT))
        );
    }

    // read(2) of 2 pages, short of the 3 prepared: bytes beyond keep their
    // old contents.
    {
        let _g = pager
            .prepare_for_kernel(buf, 3 * PAGE, Access::Write)
            .unwrap();
        file.seek(SeekFrom::Start(PAGE as u64)).unwrap();
        // SAFETY: the prepared buffer is resident, writable and pinned.
        let n = unsafe { libc::read(fd, buf.cast(), 3 * PAGE) };
        assert_eq!(n, 2 * PAGE as isize);
        pager.evict_all().unwrap(); // pinned pages stay
    }
    for i in 0..3 * PAGE {
        let off = 5 * PAGE + 10 + i;
        // SAFETY: inside the region.
        let got = unsafe { r.as_ptr().add(off).read() };
        let want = if i < 2 * PAGE {
            data[PAGE + i]
        } else {
            9u8.wrapping_add((off % 253) as u8)
        };
        assert_eq!(got, want, "byte {i} after a short read");
    }

    // write(2) from evicted memory after preparing it for reading.
    pager.evict_all().unwrap();
    let mut out = tempfile_in(&dir);
    {
        let _g = pager
            .prepare_for_kernel(r.as_ptr(), 4 * PAGE, Access::Read)
            .unwrap();
        // SAFETY: the prepared buffer is resident and readable.
        let n = unsafe { libc::write(out.as_raw_fd(), r.as_ptr().cast(), 4 * PAGE) };
        assert_eq!(n, 4 * PAGE as isize);
    }
    out.seek(SeekFrom::Start(0)).unwrap();
    let mut back = vec![0u8; 4 * PAGE];
    std::io::Read::read_exact(&mut out, &mut back).unwrap();
    assert!(
        back.iter()
            .enumerate()
            .all(|(i, &b)| b == 9u8.wrapping_add((i % 253) as u8))
    );

    // fstat into managed memory.
    pager.evict_all().unwrap();
    let st = r
        .as_mut_ptr()
        .wrapping_add(20 * PAGE - 8)
        .cast::<libc::stat>();
    {
        let _g = pager
            .prepare_for_kernel(st.cast(), size_of::<libc::stat>(), Access::Write)
            .unwrap();
        // SAFETY: prepared, writable, pinned.
        assert_eq!(unsafe { libc::fstat(fd, st) }, 0);
        // SAFETY: just filled by the kernel.
        assert_eq!(unsafe { st.read_unaligned().st_size }, 3 * PAGE as i64);
    }
    pager.check_invariants().unwrap();
}

/// Under uffd the kernel's own accesses to evicted memory fault to the
/// service threads like the program's: read(2), pread(2), recv(2),
/// write(2) and fstat(2) work on evicted buffers with no preparation, and
/// a short read leaves the bytes beyond it as they were.
#[test]
fn syscalls_into_evicted_memory_just_work_under_uffd() {
    if !common::variants().contains(&Variant::Uffd) {
        eprintln!("SKIPPED: syscalls_into_evicted_memory_just_work_under_uffd (see above)");
        return;
    }
    let pager = pager(Variant::Uffd, 8);
    let r = pager.alloc(32 * PAGE).unwrap();
    let (base, len) = (r.as_mut_ptr(), r.len());
    fill(base, len, 21);
    pager.evict_all().unwrap();
    let old = |off: usize| 21u8.wrapping_add((off % 253) as u8);
    let dir = common::tmpdir();
    let mut file = tempfile_in(&dir);
    let data: Vec<u8> = (0..3 * PAGE).map(|i| (i % 11) as u8 + 50).collect();
    file.write_all(&data).unwrap();
    let fd = file.as_raw_fd();

    // pread of 3 pages at an unaligned offset in evicted memory.
    let at = 2 * PAGE + 100;
    // SAFETY: the buffer lies in the region; the kernel fills it.
    let n = unsafe { libc::pread(fd, base.add(at).cast(), 3 * PAGE, 0) };
    assert_eq!(n, 3 * PAGE as isize, "{}", std::io::Error::last_os_error());
    pager.evict_all().unwrap();
    for (i, &want) in data.iter().enumerate() {
        // SAFETY: inside the region.
        let got = unsafe { base.add(at + i).read() };
        assert_eq!(got, want, "pread byte {i}");
    }

    // A short read(2): 2 pages asked 3; the third keeps its old bytes.
    pager.evict_all().unwrap();
    let at = 10 * PAGE + 7;
    file.seek(SeekFrom::Start(PAGE as u64)).unwrap();
    // SAFETY: as above.
    let n = unsafe { libc::read(fd, base.add(at).cast(), 3 * PAGE) };
    assert_eq!(n, 2 * PAGE as isize);
    pager.evict_all().unwrap();
    for i in 0..3 * PAGE {
        // SAFETY: inside the region.
        let got = unsafe { base.add(at + i).read() };
        let want = if i < 2 * PAGE {
            data[PAGE + i]
        } else {
            old(at + i)
        };
        assert_eq!(got, want, "read byte {i}");
    }

    // recv(2) from a socket pair into evicted memory, and send(2) out of it.
    pager.evict_all().unwrap();
    let mut sv = [0; 2];
    // SAFETY: sv has room for two descriptors.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()) };
    assert_eq!(r, 0);
    let msg: Vec<u8> = (0..PAGE + 333).map(|i| (i % 13) as u8 + 1).collect();
    // SAFETY: msg is a live buffer of this length.
    let n = unsafe { libc::send(sv[0], msg.as_ptr().cast(), msg.len(), 0) };
    assert_eq!(n, msg.len() as isize);
    let at = 20 * PAGE - 50;
    // SAFETY: the buffer lies in the region.
    let n = unsafe { libc::recv(sv[1], base.add(at).cast(), msg.len(), libc::MSG_WAITALL) };
    assert_eq!(n, msg.len() as isize, "{}", std::io::Error::last_os_error());
    pager.evict_all().unwrap();
    // SAFETY: evicted region memory as the source of a send.
    let n = unsafe { libc::send(sv[1], base.add(at).cast(), msg.len(), 0) };
    assert_eq!(n, msg.len() as isize);
    let mut echo = vec![0u8; msg.len()];
    // SAFETY: echo is a live buffer of this length.
    let n = unsafe {
        libc::recv(
            sv[0],
            echo.as_mut_ptr().cast(),
            echo.len(),
            libc::MSG_WAITALL,
        )
    };
    assert_eq!(n, msg.len() as isize);
    assert_eq!(echo, msg, "recv into evicted memory, then send out of it");
    // SAFETY: our descriptors.
    unsafe {
        libc::close(sv[0]);
        libc::close(sv[1]);
    }

    // write(2) straight out of evicted memory.
    pager.evict_all().unwrap();
    let mut out = tempfile_in(&dir);
    // SAFETY: region memory as the source.
    let n = unsafe { libc::write(out.as_raw_fd(), base.add(24 * PAGE).cast(), 4 * PAGE) };
    assert_eq!(n, 4 * PAGE as isize);
    out.seek(SeekFrom::Start(0)).unwrap();
    let mut back = vec![0u8; 4 * PAGE];
    std::io::Read::read_exact(&mut out, &mut back).unwrap();
    assert!(
        back.iter()
            .enumerate()
            .all(|(i, &x)| x == old(24 * PAGE + i))
    );

    // fstat into evicted memory, across a page boundary.
    pager.evict_all().unwrap();
    let st = base.wrapping_add(28 * PAGE - 8).cast::<libc::stat>();
    // SAFETY: the kernel fills the struct inside the region.
    assert_eq!(unsafe { libc::fstat(fd, st) }, 0);
    // SAFETY: just filled by the kernel.
    assert_eq!(unsafe { st.read_unaligned().st_size }, 3 * PAGE as i64);
    pager.check_invariants().unwrap();
    let s = pager.stats();
    assert!(s.pages_read > 0 && s.pages_written > 0, "{s:?}");
}

fn pins_filling_the_budget_are_reported_on(b: Variant) {
    let pager = pager(b, 4);
    let r = pager.alloc(16 * PAGE).unwrap();
    let guard = pager
        .prepare_for_kernel(r.as_ptr(), 4 * PAGE, Access::Write)
        .unwrap();
    let e = pager
        .touch(r.as_ptr().wrapping_add(8 * PAGE), 1, Access::Read)
        .unwrap_err();
    assert_eq!(e, Error::NoEvictablePages);
    drop(guard);
    pager
        .touch(r.as_ptr().wrapping_add(8 * PAGE), 1, Access::Read)
        .unwrap();
}

/// An unlinked scratch file.
fn tempfile_in(dir: &std::path::Path) -> std::fs::File {
    let path = dir.join(format!(
        "sbma-api-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    f
}

fn sequential_faults_read_ahead_and_random_ones_do_not_on(b: Variant) {
    let pager = pager(b, 256);
    let r = pager.alloc(128 * PAGE).unwrap();
    fill(r.as_mut_ptr(), r.len(), 11);
    pager.evict_all().unwrap();
    let before = pager.stats();
    assert_eq!(check(r.as_ptr(), r.len(), 11), 0);
    let s = pager.stats();
    let (faults, read) = (
        s.read_faults - before.read_faults,
        s.pages_read - before.pages_read,
    );
    assert_eq!(read, 128, "every page read exactly once");
    // Windows double up to 512 KiB (32 pages of 16 KiB): 1+2+4+8+16+32+32+32.
    assert!(
        faults <= 10,
        "{faults} read faults for 128 sequential pages"
    );
    // Random single pages: no neighbour is read.
    pager.evict_all().unwrap();
    let before = pager.stats();
    for page in [77, 3, 51, 120, 9] {
        let at = page * PAGE + 5;
        // SAFETY: inside the region.
        let got = unsafe { r.as_ptr().add(at).read() };
        assert_eq!(got, 11u8.wrapping_add((at % 253) as u8));
    }
    let s = pager.stats();
    assert_eq!(
        s.pages_read - before.pages_read,
        5,
        "random faults read neighbours"
    );
    pager.check_invariants().unwrap();
}

fn sequential_first_writes_claim_fresh_pages_ahead_on(b: Variant) {
    let pager = pager(b, 256);
    let r = pager.alloc(128 * PAGE).unwrap();
    // Front to back, one byte per page: the windows double up to 32 pages.
    for page in 0..100 {
        // SAFETY: inside the region.
        unsafe { r.as_mut_ptr().add(page * PAGE + 1).write(page as u8 + 1) };
    }
    let s = pager.stats();
    assert!(s.write_faults <= 10, "{b:?}: {s:?}");
    assert!(s.pages_zeroed_ahead >= 90, "{b:?}: {s:?}");
    // Pages claimed ahead but never written read as zeros, before and after
    // an eviction (they are dirty: written back as zeros).
    let claimed = 1 + s.write_faults as usize + s.pages_zeroed_ahead as usize - 1;
    pager.evict_all().unwrap();
    for page in 0..128 {
        // SAFETY: inside the region.
        let (first, second) = unsafe {
            (
                r.as_ptr().add(page * PAGE).read(),
                r.as_ptr().add(page * PAGE + 1).read(),
            )
        };
        let want = if page < 100 { page as u8 + 1 } else { 0 };
        assert_eq!(
            (first, second),
            (0, want),
            "{b:?}: page {page} ({claimed} claimed)"
        );
    }
    // Random first writes claim nothing ahead (the spacer keeps them away
    // from the stream above).
    let _spacer = pager.alloc(64 * PAGE).unwrap();
    let r2 = pager.alloc(64 * PAGE).unwrap();
    let before = pager.stats();
    for page in [40, 3, 57, 12, 29, 61, 7] {
        // SAFETY: inside the region.
        unsafe { r2.as_mut_ptr().add(page * PAGE).write(9) };
    }
    let s = pager.stats();
    assert_eq!(s.pages_zeroed_ahead, before.pages_zeroed_ahead, "{b:?}");
    assert_eq!(s.write_faults - before.write_faults, 7, "{b:?}");
    pager.check_invariants().unwrap();
}

/// A thread that uses a pager gets an alternate signal stack of at least
/// 64 KiB for the fault handler, replacing the 8 KiB one Rust's standard
/// library gives its threads (the fault path's write-back overflowed that
/// one once a 4 KiB buffer was on it).
#[test]
fn the_fault_handler_gets_a_large_alternate_stack() {
    let size = || {
        // SAFETY: querying the thread's alternate stack into a valid struct.
        let mut ss: libc::stack_t = unsafe { core::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::sigaltstack(core::ptr::null(), &mut ss) }, 0);
        (ss.ss_flags & libc::SS_DISABLE == 0).then_some(ss.ss_size)
    };
    std::thread::spawn(move || {
        let before = size();
        let pager = pager(Variant::Signal(sbma_pager::FillMethod::SelfMem), 4);
        let region = pager.alloc(16 * PAGE).unwrap();
        fill(region.as_mut_ptr(), region.len(), 3);
        assert_eq!(check(region.as_mut_ptr(), region.len(), 3), 0);
        let after = size();
        assert!(
            after.is_some_and(|s| s >= 64 << 10),
            "alternate stack {before:?} -> {after:?} bytes"
        );
    })
    .join()
    .unwrap();
}

/// The fault path's stack depth, measured: a thread runs faults of every
/// kind (zero fills, reads with read-ahead, evictions writing back dirty
/// runs) on an alternate stack of its own painted with a pattern, and the
/// deepest byte overwritten is the handler's high water (signal frame
/// included). sbma keeps any alternate stack of 32 KiB or more (smaller
/// ones are replaced by a 64 KiB one), so the handler must stay well
/// inside 32 KiB; this build is unoptimized, the deepest there is.
#[test]
fn the_fault_path_stays_within_16_kib_of_stack() {
    const STACK: usize = 64 << 10;
    const PAINT: u8 = 0x5a;
    for method in [
        sbma_pager::FillMethod::SelfMem,
        sbma_pager::FillMethod::Remap,
    ] {
        let used = std::thread::spawn(move || {
            let mut stack = vec![PAINT; STACK];
            let ss = libc::stack_t {
                ss_sp: stack.as_mut_ptr().cast(),
                ss_flags: 0,
                ss_size: STACK,
            };
            // SAFETY: the buffer outlives its use as the alternate stack
            // (disabled below before it is freed).
            assert_eq!(unsafe { libc::sigaltstack(&ss, core::ptr::null_mut()) }, 0);
            let pager = pager(Variant::Signal(method), 4);
            let region = pager.alloc(16 * PAGE).unwrap();
            for round in 0..3u8 {
                fill(region.as_mut_ptr(), region.len(), round);
                assert_eq!(check(region.as_mut_ptr(), region.len(), round), 0);
            }
            let s = pager.stats();
            assert!(s.pages_written > 0 && s.pages_read > 0, "{s:?}");
            drop(region);
            drop(pager);
            let off = libc::stack_t {
                ss_sp: core::ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            // SAFETY: disabling the alternate stack.
            assert_eq!(unsafe { libc::sigaltstack(&off, core::ptr::null_mut()) }, 0);
            // Stacks grow down: the lowest overwritten byte is the depth.
            STACK - stack.iter().position(|&b| b != PAINT).unwrap_or(STACK)
        })
        .join()
        .unwrap();
        eprintln!("{method:?}: the fault path used {used} bytes of the alternate stack");
        assert!(used > 0, "no fault ran on the alternate stack");
        assert!(used < 16 << 10, "{method:?}: {used} bytes of stack");
    }
}
