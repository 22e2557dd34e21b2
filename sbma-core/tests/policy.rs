//! Every bundled policy runs the one conformance suite.

use sbma_core::{Clock, EvictAll, Fifo, Lru, PolicyKind, policy_conformance};

policy_conformance!(clock, Clock::with_capacity);
policy_conformance!(lru, Lru::with_capacity);
policy_conformance!(fifo, Fifo::with_capacity);
policy_conformance!(evict_all, EvictAll::with_capacity);
// The run-time dispatcher used by the pager must conform too.
policy_conformance!(any_clock, |n| PolicyKind::Clock.build(n));
policy_conformance!(any_evict_all, |n| PolicyKind::EvictAll.build(n));

#[test]
fn policy_names_parse() {
    for k in PolicyKind::ALL {
        assert_eq!(k.name().parse::<PolicyKind>(), Ok(k));
        assert_eq!(k.name().to_uppercase().parse::<PolicyKind>(), Ok(k));
    }
    assert!("random".parse::<PolicyKind>().is_err());
    assert_eq!(PolicyKind::default(), PolicyKind::Clock);
    let msg = "lfu".parse::<PolicyKind>().unwrap_err().to_string();
    assert!(msg.contains("clock, lru, fifo or all"), "{msg}");
}
