//! Helpers shared by the runtime's integration tests.

use std::process::Output;

/// Exit code 2 and a single stderr line that names `what`, no panic.
pub fn assert_user_error(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(what), "'{what}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}
