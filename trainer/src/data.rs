//! In-memory training data and the seeded batch producer.

use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use anyhow::{Context, Result};
use image::{GrayImage, Luma, RgbImage};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use seg_core::data::pair::{self, PairConfig, PairGeometry};
use seg_core::data::{augment, Dataset};
use seg_core::preprocess::normalize_into;
use seg_core::IGNORE;

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
    /// Image-level tags (class ids) per image, when the images are tagged (else empty).
    pub tags: Vec<Vec<u8>>,
    /// Per-pixel pseudo-labels per image (class ids, [`seg_core::IGNORE`] where none), when
    /// `data.pseudo_labels` is set (else empty); `None` for an image without a file.
    pub pseudo: Vec<Option<GrayImage>>,
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

/// Opens a split of the configured dataset, keeping only the items whose name starts with one
/// of `prefixes` (all when empty); `key` names the config key in the error.
pub fn open(cfg: &DataConfig, split: &str, prefixes: &[String], key: &str) -> Result<Dataset> {
    let mut ds = Dataset::open(&cfg.root, cfg.layout, split, cfg.classes.len(), cfg.ignore_id)?;
    if !prefixes.is_empty() {
        ds.retain(|it| prefixes.iter().any(|p| it.name.starts_with(p.as_str())));
        anyhow::ensure!(
            !ds.is_empty(),
            "{}: no '{split}' item matches data.{key} {prefixes:?}",
            cfg.root.display(),
        );
    }
    Ok(ds)
}

/// Calls `f(name, mask)` for every item of a split, one decoded pair at a time (prefix filter as
/// [`open_prefixed`]); an item without a mask is an error naming its image and `purpose`.
/// Returns the number of items.
pub fn each_mask(
    cfg: &DataConfig,
    split: &str,
    prefixes: &[String],
    purpose: &str,
    mut f: impl FnMut(String, &GrayImage),
) -> Result<usize> {
    let ds = open_prefixed(cfg, split, prefixes)?;
    for i in 0..ds.len() {
        let s = ds.load(i)?;
        let mask = s
            .mask
            .with_context(|| format!("{}: no mask {purpose}", ds.items[i].image.display()))?;
        f(s.name, &mask);
    }
    Ok(ds.len())
}

/// Opens a split for a command-line tool, keeping only the items whose name starts with one of
/// `prefixes` (all when empty); an empty result is an error.
pub fn open_prefixed(cfg: &DataConfig, split: &str, prefixes: &[String]) -> Result<Dataset> {
    let mut ds = Dataset::open(&cfg.root, cfg.layout, split, cfg.classes.len(), cfg.ignore_id)?;
    if !prefixes.is_empty() {
        ds.retain(|it| prefixes.iter().any(|p| it.name.starts_with(p.as_str())));
    }
    anyhow::ensure!(
        !ds.is_empty(),
        "{}: no item of '{split}' matches {prefixes:?}",
        cfg.root.display()
    );
    Ok(ds)
}

/// Loads the images (not the masks) of every item of `ds` into memory; `masks` stays empty.
pub fn load_images(ds: &Dataset, progress: &indicatif::ProgressBar) -> Result<Samples> {
    let mut s = Samples::default();
    for i in 0..ds.len() {
        let sample = ds.load_image_only(i)?;
        s.names.push(sample.name);
        s.images.push(sample.image);
        progress.inc(1);
    }
    Ok(s)
}

/// Per-class pixel frequencies of labeled samples (summing to 1 over the classes; void left out).
pub fn class_frequencies(samples: &Samples, num_classes: usize) -> Vec<f64> {
    let mut counts = vec![0u64; num_classes];
    for m in &samples.masks {
        for &v in m.as_raw() {
            if (v as usize) < num_classes {
                counts[v as usize] += 1;
            }
        }
    }
    let total = counts.iter().sum::<u64>().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / total).collect()
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
    /// Where each crop came from.
    pub origins: Vec<CropOrigin>,
    /// The unlabeled part of the step, in the view its method asked for.
    pub unlabeled: Option<HostUnlabeled>,
}

/// Where a training crop came from: its image (an index into the step's [`Samples`]) and its
/// place in it (issue #27: a teacher that scored the whole frame is read there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropOrigin {
    /// The image's index in its samples (labeled, or unlabeled for an unlabeled crop).
    pub index: usize,
    /// The crop's geometry in that image.
    pub geometry: augment::CropGeometry,
}

/// Which unlabeled view a method needs (built on the producer thread).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum UnlabeledView {
    /// No unlabeled images.
    #[default]
    None,
    /// One crop per image: a weak view (scale, crop, flip) and a strong view (the same crop
    /// plus photometric jitter), with the mask of pixels inside the image (not padding).
    Views,
    /// Two overlapping crops per image (CAC), see [`seg_core::data::pair`].
    Pairs(PairConfig),
}

/// An unlabeled batch on the host, flat, `(b, h, w)` = `shape`.
#[derive(Debug)]
pub enum HostUnlabeled {
    /// [`UnlabeledView::Views`].
    Views {
        /// `[b, 3, h, w]` photometrically jittered crops.
        strong: Vec<f32>,
        /// `[b, 3, h, w]` the same crops without photometric jitter.
        weak: Vec<f32>,
        /// `[b, h, w]` 1 inside the image, 0 in padding.
        valid: Vec<u32>,
        /// `[b, C]` multi-hot tags, when the images are tagged.
        tags: Option<Vec<f32>>,
        /// Where each crop came from.
        origins: Vec<CropOrigin>,
        /// `(b, h, w)`.
        shape: (usize, usize, usize),
    },
    /// [`UnlabeledView::Pairs`].
    Pairs {
        /// `[b, 3, h, w]` first crops.
        first: Vec<f32>,
        /// `[b, 3, h, w]` second crops.
        second: Vec<f32>,
        /// Geometry of each pair.
        geometry: Vec<PairGeometry>,
        /// `[b, h, w]` pseudo-labels of the first and second crops ([`IGNORE`] where none),
        /// when the images have them.
        pseudo: Option<[Vec<u32>; 2]>,
        /// `(b, h, w)`.
        shape: (usize, usize, usize),
    },
}

/// Mixes into labeled-batch seeds so unlabeled sampling is independent of them.
const UNLABELED_SALT: u64 = 0x005e_ed0f_0a11_ab1e;

/// Builds the unlabeled part of step `it` (deterministic in `(seed, it)`), or `None` when the
/// view is [`UnlabeledView::None`] or there are no unlabeled images.
pub fn make_unlabeled(images: &Samples, view: &UnlabeledView, cfg: &TrainConfig, it: u64) -> Option<HostUnlabeled> {
    if images.is_empty() || *view == UnlabeledView::None {
        return None;
    }
    let b = cfg.schedule.unlabeled_batch_size.max(1);
    let [h, w] = cfg.augment.crop;
    let (h, w) = (h as usize, w as usize);
    let seed = cfg.schedule.seed ^ UNLABELED_SALT;
    let idx = batch_indices(images.len(), b, seed, it);
    let rng_of = |k: usize| ChaCha8Rng::seed_from_u64(seed ^ (it << 16) ^ k as u64);
    let n = 3 * h * w;
    let norm = |img: &RgbImage, out: &mut [f32]| normalize_into(img, cfg.data.mean, cfg.data.std, out);
    match view {
        UnlabeledView::None => None,
        UnlabeledView::Views => {
            let (mut strong, mut weak, mut valid) = (vec![0f32; b * n], vec![0f32; b * n], vec![0u32; b * h * w]);
            let geometric = augment::AugmentConfig {
                color_jitter_prob: 0.0,
                blur_prob: 0.0,
                grayscale_prob: 0.0,
                ..cfg.augment.clone()
            };
            let mut origins = Vec::with_capacity(b);
            for (k, &i) in idx.iter().enumerate() {
                let mut rng = rng_of(k);
                let img = &images.images[i];
                // an all-zero mask rides along to mark padding (IGNORE) after the crop
                let inside = GrayImage::from_pixel(img.width(), img.height(), Luma([0]));
                let (weak_img, mask, geometry) =
                    augment::augment_with_geometry(img, Some(&inside), &geometric, &mut rng);
                origins.push(CropOrigin { index: i, geometry });
                let mut strong_img = weak_img.clone();
                augment::photometric(&mut strong_img, &cfg.augment, &mut rng);
                norm(&weak_img, &mut weak[k * n..(k + 1) * n]);
                norm(&strong_img, &mut strong[k * n..(k + 1) * n]);
                let mask = mask.expect("augment keeps the mask");
                for (v, &m) in valid[k * h * w..(k + 1) * h * w].iter_mut().zip(mask.as_raw()) {
                    *v = (m != seg_core::IGNORE) as u32;
                }
            }
            let tags = (!images.tags.is_empty()).then(|| {
                let c = cfg.data.classes.len();
                idx.iter()
                    .flat_map(|&i| seg_core::tags::multi_hot(&images.tags[i], c))
                    .collect()
            });
            Some(HostUnlabeled::Views {
                strong,
                weak,
                valid,
                tags,
                origins,
                shape: (b, h, w),
            })
        }
        UnlabeledView::Pairs(pc) => {
            let (mut first, mut second, mut geometry) = (vec![0f32; b * n], vec![0f32; b * n], Vec::with_capacity(b));
            let mut pseudo =
                (!images.pseudo.is_empty()).then(|| [vec![IGNORE as u32; b * h * w], vec![IGNORE as u32; b * h * w]]);
            for (k, &i) in idx.iter().enumerate() {
                let label = images.pseudo.get(i).and_then(|p| p.as_ref());
                let p = pair::make_labeled_pair(&images.images[i], label, &cfg.augment, pc, &mut rng_of(k));
                norm(&p.crops[0], &mut first[k * n..(k + 1) * n]);
                norm(&p.crops[1], &mut second[k * n..(k + 1) * n]);
                geometry.push(p.geometry);
                if let (Some(out), Some(labels)) = (pseudo.as_mut(), p.labels) {
                    for (dst, l) in out.iter_mut().zip(&labels) {
                        for (d, &v) in dst[k * h * w..(k + 1) * h * w].iter_mut().zip(l.as_raw()) {
                            *d = v as u32;
                        }
                    }
                }
            }
            Some(HostUnlabeled::Pairs {
                first,
                second,
                geometry,
                pseudo,
                shape: (b, h, w),
            })
        }
    }
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
    let mut origins = Vec::with_capacity(b);
    for (k, &i) in idx.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.schedule.seed ^ (it << 16) ^ k as u64);
        let (img, mask, geometry) =
            augment::augment_with_geometry(&samples.images[i], Some(&samples.masks[i]), &cfg.augment, &mut rng);
        origins.push(CropOrigin { index: i, geometry });
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
        origins,
        unlabeled: None,
    }
}

/// Produces batches for steps `start..end` on a background thread, two ahead; with
/// `unlabeled = Some((images, view))` each batch also carries its unlabeled part.
pub fn spawn_producer(
    samples: Arc<Samples>,
    unlabeled: Option<(Arc<Samples>, UnlabeledView)>,
    cfg: TrainConfig,
    start: u64,
    end: u64,
) -> Receiver<HostBatch> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        for it in start..end {
            let mut batch = make_batch(&samples, &cfg, it);
            if let Some((images, view)) = &unlabeled {
                batch.unlabeled = make_unlabeled(images, view, &cfg, it);
            }
            if tx.send(batch).is_err() {
                break;
            }
        }
    });
    rx
}

/// The pseudo-label map of every image of `images` found in `dir` (`<item stem>.png`: an 8-bit
/// grey PNG of the image's size, class ids below `num_classes` and [`IGNORE`]), `None` for an
/// image without a file. Errors name the file: another size or pixel format, an id that is no
/// class; a folder that is missing or labels none of the images.
pub fn load_pseudo_labels(
    dir: &std::path::Path,
    images: &Samples,
    num_classes: usize,
) -> Result<Vec<Option<GrayImage>>> {
    anyhow::ensure!(
        dir.is_dir(),
        "data.pseudo_labels {}: not a folder (make one with `edge-seg-train cam-labels --write`)",
        dir.display()
    );
    let mut out = Vec::with_capacity(images.len());
    for (name, img) in images.names.iter().zip(&images.images) {
        let path = pseudo_label_path(dir, name);
        if !path.exists() {
            out.push(None);
            continue;
        }
        let decoded =
            image::open(&path).with_context(|| format!("{}: cannot read the pseudo-labels", path.display()))?;
        let image::DynamicImage::ImageLuma8(map) = decoded else {
            anyhow::bail!("{}: pseudo-labels must be an 8-bit grey PNG", path.display());
        };
        anyhow::ensure!(
            map.dimensions() == img.dimensions(),
            "{}: pseudo-labels are {}x{}, the image '{name}' is {}x{}",
            path.display(),
            map.width(),
            map.height(),
            img.width(),
            img.height()
        );
        if let Some(&v) = map.as_raw().iter().find(|&&v| v as usize >= num_classes && v != IGNORE) {
            anyhow::bail!(
                "{}: value {v} is neither a class id (0..{num_classes}) nor {IGNORE} (no label)",
                path.display()
            );
        }
        out.push(Some(map));
    }
    anyhow::ensure!(
        out.iter().any(|p| p.is_some()),
        "data.pseudo_labels {}: no pseudo-label file for any of the {} unlabeled images (expected e.g. {})",
        dir.display(),
        images.len(),
        images
            .names
            .first()
            .map_or_else(String::new, |n| pseudo_label_path(dir, n).display().to_string())
    );
    Ok(out)
}

/// `<dir>/<item stem>.png`: where the pseudo-labels of item `name` are.
pub fn pseudo_label_path(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    dir.join(name).with_extension("png")
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
