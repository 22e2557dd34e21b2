//! The model test: random operations over a working set four times the
//! budget, on the sim backend, every byte checked against a shadow copy, for
//! every policy, with I/O failures injected along the way.
//!
//! After every operation: the engine's invariants hold (table audit, budget
//! = resident pages x page size, policy tracks exactly the resident pages),
//! the memory the backend really holds never exceeds the budget, and every
//! read returns the shadow's bytes. At the end the whole memory is read
//! back, evicted, and read back again.

use proptest::prelude::*;
use sbma_core::{
    AnyPolicy, Budget, EngineError, PageCount, PageIndex, PageRange, PageSize, PolicyKind,
    SimError, SimMachine,
};

const PS: usize = 4096;
const PAGES: usize = 48;
const BUDGET_PAGES: usize = PAGES / 4;
const LEN: usize = PAGES * PS;

#[derive(Clone, Debug)]
enum Op {
    Write { off: usize, len: usize, seed: u8 },
    Read { off: usize, len: usize },
    Evict { page: usize, count: usize },
    EvictAll,
    Clear { page: usize, count: usize },
    Pin { page: usize },
    Unpin { page: usize },
    FailNextWrite,
    FailNextRead,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..LEN, 1..3 * PS, any::<u8>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        6 => (0..LEN, 1..3 * PS).prop_map(|(off, len)| Op::Read { off, len }),
        1 => (0..PAGES, 1..8usize).prop_map(|(page, count)| Op::Evict { page, count }),
        1 => Just(Op::EvictAll),
        1 => (0..PAGES, 1..4usize).prop_map(|(page, count)| Op::Clear { page, count }),
        1 => (0..PAGES).prop_map(|page| Op::Pin { page }),
        1 => (0..PAGES).prop_map(|page| Op::Unpin { page }),
        1 => Just(Op::FailNextWrite),
        1 => Just(Op::FailNextRead),
    ]
}

fn byte(seed: u8, off: usize) -> u8 {
    (off as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed
}

struct Model {
    m: SimMachine<AnyPolicy>,
    shadow: Vec<u8>,
    pins: Vec<u32>,
}

impl Model {
    fn new(kind: PolicyKind) -> Model {
        let ps = PageSize::new(PS, 4096).unwrap();
        let m = SimMachine::new(
            kind.build(PageCount(PAGES)),
            ps,
            PageCount(PAGES),
            BUDGET_PAGES * PS,
        )
        .unwrap();
        Model {
            m,
            shadow: vec![0; LEN],
            pins: vec![0; PAGES],
        }
    }

    fn range(page: usize, count: usize) -> PageRange {
        PageRange::new(PageIndex(page), PageCount(count.min(PAGES - page)))
    }

    /// Errors the model accepts: injected I/O failures. Anything else fails
    /// the test.
    fn allowed(e: EngineError<SimError>) {
        assert_eq!(e, EngineError::Backend(SimError::Io), "unexpected error");
    }

    fn run(&mut self, op: &Op) {
        match *op {
            Op::Write { off, len, seed } => {
                let end = (off + len).min(LEN);
                // Page by page, so a failure is attributed to one piece and
                // the shadow stays exact.
                let mut pos = off;
                while pos < end {
                    let n = (PS - pos % PS).min(end - pos);
                    let data: Vec<u8> = (pos..pos + n).map(|o| byte(seed, o)).collect();
                    match self.m.write(pos, &data) {
                        Ok(()) => self.shadow[pos..pos + n].copy_from_slice(&data),
                        Err(e) => Self::allowed(e),
                    }
                    pos += n;
                }
            }
            Op::Read { off, len } => {
                let end = (off + len).min(LEN);
                let mut buf = vec![0u8; end - off];
                match self.m.read(off, &mut buf) {
                    Ok(()) => assert!(
                        buf == self.shadow[off..end],
                        "read at {off}..{end} differs from the shadow"
                    ),
                    Err(e) => Self::allowed(e),
                }
            }
            Op::Evict { page, count } => {
                if let Err(e) = self.m.engine_mut().evict(Self::range(page, count)) {
                    Self::allowed(e);
                }
            }
            Op::EvictAll => {
                if let Err(e) = self.m.engine_mut().evict_all() {
                    Self::allowed(e);
                }
            }
            Op::Clear { page, count } => {
                let r = Self::range(page, count);
                let pinned_resident = r.iter().any(|p| {
                    let s = self.m.engine().table().state(p);
                    s.is_resident() && s.is_pinned()
                });
                match self.m.engine_mut().clear(r) {
                    Ok(()) => {
                        assert!(!pinned_resident);
                        self.shadow[page * PS..(page + r.count.get()) * PS].fill(0);
                    }
                    Err(EngineError::Pinned(_)) => assert!(pinned_resident),
                    Err(e) => panic!("clear failed: {e:?}"),
                }
            }
            Op::Pin { page } => {
                // Keep at most half the budget pinned so admission always
                // finds a victim.
                if self.pins.iter().filter(|&&n| n > 0).count() < BUDGET_PAGES / 2
                    || self.pins[page] > 0
                {
                    self.m.engine_mut().pin(PageIndex(page)).unwrap();
                    self.pins[page] += 1;
                }
            }
            Op::Unpin { page } => {
                let r = self.m.engine_mut().unpin(PageIndex(page));
                if self.pins[page] > 0 {
                    r.unwrap();
                    self.pins[page] -= 1;
                } else {
                    assert!(r.is_err(), "unpin of an unpinned page succeeded");
                }
            }
            Op::FailNextWrite => self.m.engine().backend().fail_next_writes(1),
            Op::FailNextRead => self.m.engine().backend().fail_next_reads(1),
        }
        let e = self.m.engine();
        e.check_invariants();
        let held = e.backend().resident_bytes();
        assert!(
            held <= e.budget().limit(),
            "{held} B resident over the budget"
        );
        assert_eq!(held, e.budget().resident());
    }

    fn verify_all(&mut self) {
        self.m.engine().backend().fail_next_reads(0);
        self.m.engine().backend().fail_next_writes(0);
        let mut buf = vec![0u8; LEN];
        self.m.read(0, &mut buf).unwrap();
        let bad = buf.iter().zip(&self.shadow).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "{bad} bytes differ from the shadow");
        for (p, &n) in self.pins.iter().enumerate() {
            for _ in 0..n {
                self.m.engine_mut().unpin(PageIndex(p)).unwrap();
            }
        }
        self.m.engine_mut().evict_all().unwrap();
        assert_eq!(self.m.engine().budget().resident(), 0);
        self.m.read(0, &mut buf).unwrap();
        assert!(
            buf == self.shadow,
            "bytes differ after evict_all and reload"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_match_the_shadow(
        kind in prop::sample::select(PolicyKind::ALL.to_vec()),
        ops in prop::collection::vec(op(), 1..250),
    ) {
        let mut model = Model::new(kind);
        for op in &ops {
            model.run(op);
        }
        model.verify_all();
    }
}

/// A long deterministic run per policy, so every policy sees thousands of
/// evictions whatever proptest draws.
#[test]
fn long_runs_match_the_shadow() {
    for kind in PolicyKind::ALL {
        let mut model = Model::new(kind);
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        for i in 0..4000 {
            let op = match next(20) {
                0..=8 => Op::Write {
                    off: next(LEN),
                    len: 1 + next(2 * PS),
                    seed: i as u8,
                },
                9..=16 => Op::Read {
                    off: next(LEN),
                    len: 1 + next(2 * PS),
                },
                17 => Op::Clear {
                    page: next(PAGES),
                    count: 1 + next(3),
                },
                18 => Op::FailNextWrite,
                _ => Op::FailNextRead,
            };
            model.run(&op);
        }
        let s = model.m.engine().stats();
        assert!(
            s.pages_evicted > 1000 && s.pages_read > 500,
            "{kind}: too little paging: {s:?}"
        );
        model.verify_all();
    }
}
