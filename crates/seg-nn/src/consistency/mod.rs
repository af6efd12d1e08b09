//! Semi-supervised consistency losses and their helpers, free functions with explicit masks,
//! shared by the trainer's methods and the runtime's on-device adaptation:
//!
//! - [`directional_contrastive`]: CAC's directional contrastive loss (Lai et al., CVPR 2021),
//!   with [`dc_positive_mask`] (directional mask and positive filtering), negative sampling by
//!   pseudo-label, negatives processed in chunks, and a [`MemoryBank`] of past negatives;
//! - [`cross_pseudo_supervision`]: CPS's symmetric cross-entropy on each other's argmax;
//! - [`dars_select`]: DARS per-class thresholds (He et al., ICCV 2021);
//! - [`confidence_and_label`]: softmax confidence and argmax pseudo-label, detached;
//! - [`OverlapCells`]: a crop pair's overlap cells gathered from batched maps ([`cells`],
//!   [`values`]).
//!
//! One file per job: the directional contrastive loss (`dc`), the CAC step on crop pairs and its
//! cells (`cac`), the memory bank (`bank`), CPS (`cps`), DARS selection (`dars`), and the shared
//! feature helpers (`features`: pseudo-labels, gathering, L2 normalisation).

mod bank;
mod cac;
mod cps;
mod dars;
mod dc;
mod features;

pub use bank::MemoryBank;
pub use cac::{cac_step, push_to_bank, CacCells, CacStep, OverlapCells, CAC_STRIDE};
pub use cps::cross_pseudo_supervision;
pub use dars::{dars_select, DarsSelection};
pub use dc::{
    dc_per_location, dc_positive_mask, directional_contrastive, directional_contrastive_both, DcConfig, OverlapSide,
};
pub use features::{cells, confidence_and_label, gather_locations, l2_normalize, values};

/// Uniform values in `[-1, 1)` for the tests.
#[cfg(test)]
fn rand_vec(rng: &mut rand_chacha::ChaCha8Rng, n: usize) -> Vec<f32> {
    use rand::Rng;
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}
