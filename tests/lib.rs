//! Workspace-level integration tests live in `e2e.rs`.
