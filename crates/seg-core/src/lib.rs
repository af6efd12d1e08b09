//! edge-seg core: everything about segmentation that needs no ML framework.
//!
//! - [`classes`]: class tables (names, palette, ignore id) for the supported datasets.
//! - [`data`]: dataset layouts (CamVid, PASCAL-VOC, Cityscapes), seeded augmentation, split files.
//! - [`preprocess`]: image → normalised CHW tensors, shared by trainer and runtime.
//! - [`metrics`]: confusion matrix, mIoU, per-class IoU, pixel accuracy.
//! - [`draw`]: an embedded-graphics `DrawTarget` over an RGB frame buffer.
//! - [`io`]: atomic file writes.
//! - [`results`]: `docs/results/*.json` records; [`tags`]: image-level tag files (weak supervision).
//! - [`config`]: TOML loading with one-line errors; [`meta`]: the model description in ONNX metadata.

pub mod classes;
pub mod config;
pub mod data;
pub mod draw;
pub mod io;
pub mod meta;
pub mod metrics;
pub mod preprocess;
pub mod results;
pub mod tags;

/// The ignore id every dataset's void label is mapped to when a mask is loaded.
pub const IGNORE: u8 = 255;
