//! Benchmarks for edge-seg (`cargo bench -p edge-seg-benches`). Speed and memory are measured
//! here, never in tests.
