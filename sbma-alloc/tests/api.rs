//! The malloc family's C semantics, against a real pager.

mod common;

use common::{alloc, check, fill};
use core::ffi::c_void;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

fn set_errno(e: i32) {
    // SAFETY: this thread's errno slot.
    unsafe { *libc::__errno_location() = e };
}

#[test]
fn malloc_zero_free_null_and_overflow() {
    let a = alloc(64 << 20, 16 << 10);
    let (p, q) = (a.malloc(0), a.malloc(0));
    assert!(
        !p.is_null() && !q.is_null() && p != q,
        "malloc(0) gives unique pointers"
    );
    set_errno(1234);
    // SAFETY: null, then our own blocks.
    unsafe {
        a.free(core::ptr::null_mut());
        assert_eq!(errno(), 1234, "free(NULL) keeps errno");
        a.free(p);
        a.free(q);
        assert_eq!(errno(), 1234, "free keeps errno");
    }
    set_errno(0);
    assert!(a.calloc(usize::MAX / 2, 3).is_null());
    assert_eq!(errno(), libc::ENOMEM);
    set_errno(0);
    let r = a.malloc(10);
    // SAFETY: `r` is ours; on overflow it is left alone.
    unsafe {
        assert!(a.reallocarray(r, usize::MAX, 2).is_null());
        assert_eq!(errno(), libc::ENOMEM);
        r.write(7);
        assert_eq!(r.read(), 7, "the block survives a failed reallocarray");
        assert!(a.realloc(r, 0).is_null(), "realloc(p, 0) frees");
        assert_eq!(a.usable_size(core::ptr::null()), Some(0));
    }
    set_errno(0);
    assert!(a.malloc(usize::MAX - 4096).is_null());
    assert_eq!(errno(), libc::ENOMEM);
}

#[test]
fn alignment_family() {
    let a = alloc(64 << 20, 16 << 10);
    let mut out: *mut c_void = core::ptr::null_mut();
    // SAFETY: `out` is a valid slot.
    unsafe {
        assert_eq!(a.posix_memalign(&mut out, 3, 8), libc::EINVAL);
        assert_eq!(a.posix_memalign(&mut out, 4, 8), libc::EINVAL);
        set_errno(55);
        for shift in 3..=22 {
            let align = 1usize << shift;
            for size in [1, align / 2 + 1, align, 3 * align + 5, 100_000] {
                assert_eq!(a.posix_memalign(&mut out, align, size), 0);
                assert_eq!(out as usize % align, 0, "align {align} size {size}");
                assert!(a.usable_size(out.cast()).unwrap() >= size);
                fill(out.cast(), size, shift as u64);
                assert_eq!(check(out.cast(), size, shift as u64), 0);
                a.free(out.cast());
            }
        }
        assert_eq!(errno(), 55, "posix_memalign does not touch errno");
    }
    set_errno(0);
    assert!(a.aligned_alloc(24, 48).is_null());
    assert_eq!(errno(), libc::EINVAL);
    let m = a.memalign(24, 100);
    assert_eq!(m as usize % 32, 0, "memalign rounds the alignment up");
    let v = a.valloc(10);
    assert_eq!(v as usize % 4096, 0);
    let pv = a.pvalloc(0);
    assert_eq!(pv as usize % 4096, 0);
    // SAFETY: our blocks.
    unsafe {
        assert!(a.usable_size(pv).unwrap() >= 4096, "pvalloc(0) is one page");
        a.free(m);
        a.free(v);
        a.free(pv);
    }
}

#[test]
fn calloc_zeroes_reused_memory() {
    let a = alloc(64 << 20, 16 << 10);
    for size in [24, 1000, 16 << 10, 100 << 10, 3 << 20] {
        let p = a.malloc(size);
        // SAFETY: `size` bytes at `p`.
        unsafe { core::ptr::write_bytes(p, 0xFF, size) };
        // SAFETY: ours.
        unsafe { a.free(p) };
        let q = a.calloc(1, size);
        // SAFETY: `size` bytes at `q`.
        let nonzero = (0..size)
            .filter(|&i| unsafe { q.add(i).read() } != 0)
            .count();
        assert_eq!(nonzero, 0, "calloc({size}) after a dirty free");
        // SAFETY: ours.
        unsafe { a.free(q) };
    }
}

#[test]
fn large_realloc_grows_and_shrinks_in_place() {
    let a = alloc(64 << 20, 16 << 10);
    let p = a.malloc(200 << 10);
    fill(p, 200 << 10, 1);
    // SAFETY: `p` is ours throughout; each call returns the block to use.
    unsafe {
        let q = a.realloc(p, 2 << 20);
        assert_eq!(q, p, "the spans after it are free: grows in place");
        assert!(a.usable_size(q).unwrap() >= 2 << 20);
        assert_eq!(check(q, 200 << 10, 1), 0);
        let r = a.realloc(q, 100 << 10);
        assert_eq!(r, p, "shrinks in place");
        assert_eq!(check(r, 100 << 10, 1), 0);
        // Blocked by a neighbour: moves, contents kept.
        let blocker = a.malloc(64 << 10);
        let s = a.realloc(r, 4 << 20);
        assert_eq!(check(s, 100 << 10, 1), 0);
        // Small to small within a class stays; across classes moves.
        let t = a.malloc(40);
        fill(t, 40, 2);
        assert_eq!(a.realloc(t, 48), t);
        let u = a.realloc(t, 4000);
        assert_eq!(check(u, 40, 2), 0);
        let w = a.realloc(s, 10);
        assert_eq!(check(w, 10, 1), 0, "large to small keeps the head");
        a.free(u);
        a.free(w);
        a.free(blocker);
    }
    let s = a.stats().unwrap();
    assert_eq!(s.large_objects, 0, "{s:?}");
    assert!(s.classes.iter().all(|c| c.blocks == 0), "{s:?}");
}

/// Large objects that cannot grow in place move by pages (page tables,
/// file ranges), not by copying: three threads each grow an object from
/// 512 KiB to 16 MiB, a neighbour blocking every step, over 6x the
/// budget (from 2 MiB on each object is evicted before it moves); every byte
/// is checked after every step and once more at the end. On every
/// backend (`mremap` or `UFFDIO_MOVE`).
#[test]
fn large_realloc_moves_pages_out_of_core() {
    let (backends, skipped) = sbma_alloc::sbma_pager::Backend::usable();
    if let Some(why) = skipped {
        eprintln!("SKIPPED: the uffd backend on this machine: {why}");
    }
    for backend in backends {
        grow_by_moving(backend);
    }
}

fn grow_by_moving(backend: sbma_alloc::sbma_pager::Backend) {
    const THREADS: u64 = 3;
    let a = sbma_alloc::SbmaAlloc::builder()
        .pager(
            sbma_alloc::sbma_pager::Pager::builder()
                .budget(8 << 20)
                .page_size(16 << 10)
                .max_size(4 << 30)
                .backend(backend),
        )
        .build()
        .unwrap();
    // Joined one by one (`pthread_join`): a scope's end does not wait for
    // the threads' exit handlers, which return their heaps to `a`.
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let a = &a;
                s.spawn(move || {
                    let mut len = 512usize << 10;
                    let mut p = a.malloc(len);
                    fill(p, len, t);
                    let mut blockers = Vec::new();
                    while len < 16 << 20 {
                        blockers.push(a.malloc(64 << 10) as usize);
                        if len >= 2 << 20 {
                            // Out of memory for sure from 2 MiB on (earlier
                            // steps are as eviction left them): realloc
                            // moves only objects mostly out of memory.
                            a.pager().unwrap().evict(p, len).unwrap();
                        }
                        // SAFETY: `p` is ours; realloc returns the block to use.
                        let q = unsafe { a.realloc(p, 2 * len) };
                        assert!(!q.is_null());
                        assert_eq!(check(q, len, t), 0, "thread {t}: {len} bytes after a move");
                        // The new tail, in the seed's pattern from offset `len`.
                        for i in len..2 * len {
                            // SAFETY: inside the grown block.
                            unsafe { q.add(i).write(common::pattern(t, i)) };
                        }
                        p = q;
                        len *= 2;
                    }
                    assert_eq!(check(p, len, t), 0, "thread {t}: at the end");
                    // SAFETY: ours.
                    unsafe {
                        a.free(p);
                        for b in blockers {
                            a.free(b as *mut u8);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    });
    let s = a.stats().unwrap();
    assert!(
        s.moved_bytes >= 8 << 20 && s.pager.pages_moved > 0,
        "{backend}: realloc copied instead of moving: {} bytes moved, {} pages",
        s.moved_bytes,
        s.pager.pages_moved
    );
    assert!(
        s.pager.pages_evicted > 0,
        "{backend}: the objects never left memory: the test did not run out of core"
    );
    assert_eq!(s.large_objects, 0, "{s:?}");
}

#[test]
fn interior_and_foreign_pointers_are_recognized() {
    let a = alloc(64 << 20, 16 << 10);
    let p = a.malloc(100);
    assert!(a.owns(p));
    let boxed = Box::new(5u64);
    assert!(!a.owns(&*boxed as *const u64 as *const u8));
    // SAFETY: ours.
    unsafe {
        assert_eq!(a.usable_size(p), Some(112));
        assert_eq!(a.usable_size(&*boxed as *const u64 as *const u8), None);
        a.free(p);
    }
    // A glibc block given to our free goes back to glibc.
    // SAFETY: allocated by glibc's malloc.
    unsafe {
        let g = libc::malloc(64).cast::<u8>();
        a.free(g);
    }
}

#[test]
fn stats_count_blocks_spans_and_decay() {
    // Decay cap: 1 MiB of dirty freed memory.
    let a = sbma_alloc::SbmaAlloc::builder()
        .pager(
            sbma_alloc::sbma_pager::Pager::builder()
                .budget(64 << 20)
                .max_size(1 << 30),
        )
        .decay(1 << 20)
        .build()
        .unwrap();
    let blocks: Vec<*mut u8> = (0..1000).map(|_| a.malloc(100)).collect();
    let big: Vec<*mut u8> = (0..8).map(|_| a.malloc(1 << 20)).collect();
    for &b in &big {
        fill(b, 1 << 20, 3);
    }
    let s = a.stats().unwrap();
    assert_eq!(s.classes[6].block, 112);
    assert_eq!(s.classes[6].blocks, 1000);
    assert_eq!(s.small_bytes, 112_000);
    assert_eq!(s.large_objects, 8);
    assert!(s.small_spans >= 2 && s.fragmentation() < 1.0, "{s:?}");
    for &b in blocks.iter().chain(&big) {
        // SAFETY: ours.
        unsafe { a.free(b) };
    }
    let s = a.stats().unwrap();
    assert_eq!(s.small_bytes, 0);
    assert_eq!(s.large_objects, 0);
    assert!(
        s.spans_dirty * s.span_bytes <= 1 << 20,
        "decay cap kept: {s:?}"
    );
    assert!(
        s.cleared_bytes >= 6 << 20,
        "freed runs beyond the cap were cleared: {s:?}"
    );
    assert!(
        s.pager.resident <= 3 << 20,
        "cleared memory left the budget: {:?}",
        s.pager
    );
}

#[test]
fn syscalls_into_evicted_blocks_work_after_prepare_for_kernel() {
    use std::io::{Read, Seek, Write};
    let a = alloc(1 << 20, 16 << 10);
    let pager = a.pager().unwrap();
    let mut v: allocator_api2::vec::Vec<u8, &sbma_alloc::SbmaAlloc> =
        allocator_api2::vec::Vec::with_capacity_in(256 << 10, &a);
    v.resize(256 << 10, 7);
    pager.evict_all().unwrap();
    let dir = std::env::var_os("TMPDIR").map_or_else(|| "/tmp".into(), std::path::PathBuf::from);
    let path = dir.join(format!("sbma-alloc-api-{}", std::process::id()));
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let data: Vec<u8> = (0..256 << 10).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f.rewind().unwrap();
    match pager.backend() {
        // Without preparation the kernel meets an inaccessible page.
        sbma_alloc::sbma_pager::Backend::Signal => {
            let e = f.read(&mut v[..]).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EFAULT));
        }
        // The kernel's access faults to the service threads like any other.
        _ => {
            f.read_exact(&mut v[..]).unwrap();
            pager.evict_all().unwrap();
            assert!(v[..] == data[..], "read(2) straight into evicted blocks");
            v.fill(7);
            pager.evict_all().unwrap();
        }
    }
    f.rewind().unwrap();
    let guard = pager
        .prepare_for_kernel(v.as_ptr(), v.len(), sbma_alloc::sbma_pager::Access::Write)
        .unwrap();
    f.read_exact(&mut v[..]).unwrap();
    drop(guard);
    pager.evict_all().unwrap();
    assert!(v[..] == data[..], "the data read survives another eviction");
}
