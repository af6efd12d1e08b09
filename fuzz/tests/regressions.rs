//! Issue #23: every fuzz target replays its kept inputs (`fuzz/regressions/<target>/`: the
//! crashing inputs found so far and the hostile cases of the issue) and runs a brief seeded
//! burst, without a panic. The long runs are `edge-seg-fuzz run` (docs/ROBUSTNESS.md).

use std::path::Path;

use edge_seg_fuzz::{generate, regression_inputs, run_one, TARGETS};

/// Executions per target in `cargo test` (CI runs each target briefly).
const BRIEF: u64 = 300;

#[test]
fn issue23_fuzz_targets_replay_regressions_and_survive_a_brief_run() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions");
    let mut failures = Vec::new();
    let mut kept = 0;
    for t in TARGETS {
        let mut h = (t.build)().unwrap_or_else(|e| panic!("{}: cannot build the harness: {e:#}", t.name));
        assert!(!h.seeds.is_empty(), "{}: no seed inputs", t.name);
        for p in regression_inputs(&dir, t.name) {
            kept += 1;
            let input = std::fs::read(&p).unwrap();
            if let Some(msg) = run_one(&mut h.exec, &input) {
                failures.push(format!("{}: {msg}", p.display()));
            }
        }
        for i in 0..BRIEF {
            let input = generate(&h, 0xc1, i);
            if let Some(msg) = run_one(&mut h.exec, &input) {
                failures.push(format!("{} execution {i} (seed 0xc1): {msg}", t.name));
            }
        }
    }
    assert!(kept > 0, "no regression inputs under {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} panics:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The mutator is deterministic in (seed, index) and actually changes inputs.
#[test]
fn issue23_fuzz_inputs_are_reproducible_and_mutated() {
    let t = edge_seg_fuzz::target("classes").unwrap();
    let h = (t.build)().unwrap();
    let a: Vec<Vec<u8>> = (0..50).map(|i| generate(&h, 3, i)).collect();
    let b: Vec<Vec<u8>> = (0..50).map(|i| generate(&h, 3, i)).collect();
    assert_eq!(a, b);
    let changed = a.iter().filter(|x| !h.seeds.contains(x)).count();
    assert!(changed > 40, "only {changed} of 50 inputs differ from the seeds");
}
