//! Datasets, augmentation and labeled/unlabeled splits.
//!
//! - [`dataset`]: reading CamVid, PASCAL-VOC and Cityscapes-style folders into [`Sample`]s
//!   whose masks hold train ids and [`crate::IGNORE`].
//! - [`augment`]: seeded, deterministic training augmentation (scale, crop, flip, photometric).
//! - [`splits`]: labeled/unlabeled splits that cover every class, and their files.

pub mod augment;
pub mod dataset;
pub mod pair;
pub mod splits;

pub use dataset::*;
