//! edge-seg trainer: configs, data pipeline, training methods, the loop, checkpoints, export.
//!
//! The `edge-seg-train` binary is a thin CLI over this crate.

pub mod adabn;
pub mod balance;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod export;
pub mod info;
pub mod methods;
pub mod plot;
pub mod pretrained;
pub mod split;
pub mod teacher;
pub mod train;
pub mod weak;

pub use config::TrainConfig;
