//! `SbmaAlloc` as the `#[global_allocator]` of this whole test binary (the
//! test harness included): std collections, several threads, and a B-tree
//! and a hash map of small objects several times larger than the budget,
//! every entry checked.

use sbma_alloc::sbma_pager::Pager;
use sbma_alloc::{SbmaAlloc, SbmaAllocBuilder};
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

const BUDGET: usize = 24 << 20;

fn config() -> Result<SbmaAllocBuilder, sbma_alloc::Error> {
    Ok(SbmaAlloc::builder().pager(Pager::builder().budget(BUDGET).max_size(8 << 30)))
}

#[global_allocator]
static GLOBAL: SbmaAlloc = SbmaAlloc::with_config(config);

#[test]
fn std_collections_live_in_the_arena() {
    let v: Vec<u64> = (0..100_000).collect();
    let s = String::from("storage-backed");
    let b = Box::new([7u8; 100]);
    assert!(GLOBAL.owns(v.as_ptr().cast()));
    assert!(GLOBAL.owns(s.as_ptr()));
    assert!(GLOBAL.owns(b.as_ptr()));
    assert_eq!(v.iter().sum::<u64>(), 4_999_950_000);
    let words: Vec<String> = (0..10_000).map(|i| format!("word-{i}")).collect();
    let joined = words.join(",");
    assert_eq!(joined.split(',').count(), 10_000);
}

#[test]
fn threads_share_boxes() {
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                (0..20_000u64)
                    .map(|i| Box::new(t * 1_000_000 + i))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let all: Vec<Vec<Box<u64>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for (t, boxes) in all.iter().enumerate() {
        for (i, b) in boxes.iter().enumerate() {
            assert_eq!(**b, t as u64 * 1_000_000 + i as u64);
        }
    }
    // Freed here: remote frees into exited threads' heaps.
    drop(all);
}

/// Keeps a key's low bits (so consecutive keys fill consecutive buckets:
/// building the table streams through memory) and mixes the top 7 bits that
/// hashbrown compares in its control bytes.
#[derive(Default)]
struct DenseKeys(u64);

impl Hasher for DenseKeys {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) & (0x7F << 57))
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("u64 keys only")
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = k;
    }
}

fn value(k: u64) -> [u64; 3] {
    [k, k.wrapping_mul(31), !k]
}

#[test]
fn btree_and_hash_map_of_small_objects_out_of_core() {
    const N: u64 = 1_500_000;
    let pager = GLOBAL.pager().unwrap();
    let before = pager.stats();
    // Each entry owns a 24-byte box (a 32-byte block): small objects.
    let tree: BTreeMap<u64, Box<[u64; 3]>> = (0..N).map(|k| (k, Box::new(value(k)))).collect();
    let mut map: HashMap<u64, Box<[u64; 3]>, BuildHasherDefault<DenseKeys>> =
        HashMap::with_capacity_and_hasher(N as usize, Default::default());
    for k in 0..N {
        map.insert(k, Box::new(value(k)));
    }
    let s = GLOBAL.stats().unwrap();
    let data = s.small_bytes as usize + s.large_bytes;
    assert!(
        data > 4 * BUDGET,
        "{data} bytes live for a {BUDGET}-byte budget"
    );
    // Every entry, in memory order.
    let mut n = 0;
    for (k, v) in &tree {
        assert_eq!(**v, value(*k));
        n += 1;
    }
    assert_eq!(n, N);
    let mut seen = 0;
    for (k, v) in &map {
        assert_eq!(**v, value(*k));
        seen += 1;
    }
    assert_eq!(seen, N);
    // Lookups in a scattered order, hits and misses (each one is a few
    // page faults: kept few).
    let mut x = 12345u64;
    for _ in 0..4_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let k = (x >> 20) % (2 * N);
        assert_eq!(tree.get(&k).map(|v| **v), (k < N).then(|| value(k)));
        assert_eq!(map.get(&k).map(|v| **v), (k < N).then(|| value(k)));
    }
    let after = pager.stats();
    assert!(
        after.pages_evicted > before.pages_evicted && after.pages_read > before.pages_read,
        "{after:?}"
    );
    assert!(after.peak_resident <= BUDGET as u64, "{after:?}");
    drop(tree);
    drop(map);
    eprintln!("{data} bytes through a {BUDGET}-byte budget: {after:?}");
}

/// Plain std I/O into and out of heap buffers whose pages were evicted:
/// under the uffd backend the kernel's own accesses fault like the
/// program's, so `File::read` into an evicted `Vec` just works (the signal
/// backend would meet `EFAULT` there; see docs/uffd.md).
#[test]
fn std_io_into_evicted_heap_buffers() {
    use std::io::{Read, Seek, Write};
    let pager = GLOBAL.pager().expect("the global allocator started");
    if pager.backend() != sbma_alloc::sbma_pager::Backend::Uffd {
        println!(
            "SKIPPED: std_io_into_evicted_heap_buffers needs the uffd backend; this process runs {} ({:?})",
            pager.backend(),
            pager.stats().backend_note
        );
        return;
    }
    let dir = std::env::var_os("TMPDIR").map_or_else(|| "/tmp".into(), std::path::PathBuf::from);
    let path = dir.join(format!("sbma-global-io-{}", std::process::id()));
    let mut f = std::fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    // 4 MiB out of a heap buffer, then back into another one, each evicted
    // just before the syscall touches it.
    let out: Vec<u8> = (0..4 << 20).map(|i: usize| (i % 253) as u8).collect();
    pager.evict_all().unwrap();
    f.write_all(&out).unwrap();
    let mut back = vec![0u8; 4 << 20];
    pager.evict_all().unwrap();
    f.rewind().unwrap();
    f.read_exact(&mut back).unwrap();
    pager.evict_all().unwrap();
    assert!(back == out, "the bytes read back differ");
}
