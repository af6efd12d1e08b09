//! In-memory training data and the seeded batch producer.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use anyhow::{Context, Result};
use image::{GrayImage, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seg_core::data::{augment, Dataset};
use seg_core::preprocess::normalize_into;

use crate::config::{DataConfig, TrainConfig};

/// Decoded, validated (image, mask) pairs.
#[derive(Debug, Default)]
pub struct Samples {
    /// Item names.
    pub names: Vec<String>,
    /// Images.
    pub images: Vec<RgbImage>,
    /// Masks (train ids + IGNORE).
    pub masks: Vec<GrayImage>,
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }
}

/// Opens a split of the configured dataset (training prefixes applied when `train`).
pub fn open(cfg: &DataConfig, split: &str, train: bool) -> Result<Dataset> {
    let mut ds = Dataset::open(&cfg.root, cfg.layout, split, cfg.classes.len(), cfg.ignore_id)?;
    if train && !cfg.train_prefixes.is_empty() {
        ds.retain(|it| cfg.train_prefixes.iter().any(|p| it.name.starts_with(p.as_str())));
        anyhow::ensure!(
            !ds.is_empty(),
            "{}: no '{split}' item matches data.train_prefixes {:?}",
            cfg.root.display(),
            cfg.train_prefixes
        );
    }
    Ok(ds)
}

/// Loads every labeled sample of `ds` into memory (a mask is required).
pub fn load_all(ds: &Dataset, progress: &indicatif::ProgressBar) -> Result<Samples> {
    let mut s = Samples::default();
    for i in 0..ds.len() {
        let sample = ds.load(i)?;
        let mask = sample
            .mask
            .with_context(|| format!("{}: no mask for a labeled split", ds.items[i].image.display()))?;
        s.names.push(sample.name);
        s.images.push(sample.image);
        s.masks.push(mask);
        progress.inc(1);
    }
    Ok(s)
}

/// One prepared batch: CHW-normalised images and u32 targets, flat.
#[derive(Debug)]
pub struct HostBatch {
    /// The step it belongs to.
    pub iteration: u64,
    /// `[b, 3, h, w]` flat.
    pub images: Vec<f32>,
    /// `[b, h, w]` flat.
    pub targets: Vec<u32>,
    /// `(b, h, w)`.
    pub shape: (usize, usize, usize),
}

/// The sample indices of step `it`: epochs are seeded permutations, so a resumed run sees the
/// same batches as an uninterrupted one.
pub fn batch_indices(n: usize, batch: usize, seed: u64, it: u64) -> Vec<usize> {
    (0..batch)
        .map(|k| {
            let pos = it as usize * batch + k;
            let (epoch, off) = (pos / n, pos % n);
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(
                seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64),
            ));
            perm[off]
        })
        .collect()
}

/// Builds the batch of step `it` (deterministic in `(seed, it)`).
pub fn make_batch(samples: &Samples, cfg: &TrainConfig, it: u64) -> HostBatch {
    let b = cfg.schedule.batch_size;
    let [h, w] = cfg.augment.crop;
    let (h, w) = (h as usize, w as usize);
    let mut images = vec![0f32; b * 3 * h * w];
    let mut targets = vec![0u32; b * h * w];
    let idx = batch_indices(samples.len(), b, cfg.schedule.seed, it);
    for (k, &i) in idx.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.schedule.seed ^ (it << 16) ^ k as u64);
        let (img, mask) = augment::augment(&samples.images[i], Some(&samples.masks[i]), &cfg.augment, &mut rng);
        normalize_into(
            &img,
            cfg.data.mean,
            cfg.data.std,
            &mut images[k * 3 * h * w..(k + 1) * 3 * h * w],
        );
        let mask = mask.expect("augment keeps the mask");
        for (t, &m) in targets[k * h * w..(k + 1) * h * w].iter_mut().zip(mask.as_raw()) {
            *t = m as u32;
        }
    }
    HostBatch {
        iteration: it,
        images,
        targets,
        shape: (b, h, w),
    }
}

/// Produces batches for steps `start..end` on a background thread, two ahead.
pub fn spawn_producer(samples: Arc<Samples>, cfg: TrainConfig, start: u64, end: u64) -> Receiver<HostBatch> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        for it in start..end {
            if tx.send(make_batch(&samples, &cfg, it)).is_err() {
                break;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_cover_every_sample_once() {
        let n = 10;
        let mut seen: Vec<usize> = (0..5).flat_map(|it| batch_indices(n, 2, 3, it)).collect();
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>());
        assert_eq!(batch_indices(n, 4, 3, 7), batch_indices(n, 4, 3, 7));
        assert_ne!(batch_indices(n, 4, 3, 0), batch_indices(n, 4, 4, 0));
    }
}
