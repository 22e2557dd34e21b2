//! Benchmarks for sbma; the code lives in `benches/`.
