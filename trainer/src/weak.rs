//! Weak supervision helpers (issue #26): tags derived from masks (`edge-seg-train derive-tags`)
//! and the quality of a trained CAM head's pseudo-labels (`edge-seg-train cam-labels`).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use image::GrayImage;
use seg_core::metrics::ConfusionMatrix;
use seg_core::preprocess::{normalize_into, resize_rgb};
use seg_core::tags::{multi_hot, tags_from_mask, teachable, TagFile};
use seg_nn::{bilinear, cam, SegModel};

use crate::checkpoint;
use crate::config::DataConfig;

/// The thresholds of tag derivation and teachability, as the command line gives them.
fn check_thresholds(min_pixels: u64, min_absent: f64) -> Result<()> {
    anyhow::ensure!(min_pixels > 0, "--min-pixels must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&min_absent),
        "--min-absent {min_absent} must be in [0, 1]"
    );
    Ok(())
}

/// What [`derive_tags`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct TagReport {
    /// Tagged images.
    pub images: usize,
    /// Per class: images tagged with it.
    pub presence: Vec<usize>,
    /// Per class: whether tags can teach it (absent from at least `min_absent` of the images).
    pub teachable: Vec<bool>,
}

impl TagReport {
    /// One line per class: name, images tagged, share, teachable or not.
    pub fn table(&self, names: &[String]) -> String {
        let mut s = String::new();
        for (i, name) in names.iter().enumerate() {
            let p = self.presence[i];
            let share = 100.0 * p as f64 / self.images.max(1) as f64;
            let verdict = if self.teachable[i] {
                "teachable"
            } else if p == 0 {
                "never tagged"
            } else {
                "in (nearly) every image: tags cannot teach it"
            };
            s.push_str(&format!("{name:>12} {p:>5} images {share:>5.1}%  {verdict}\n"));
        }
        s
    }
}

/// Tags every image of `split` (restricted to name `prefixes` when given) with the classes its
/// mask shows on at least `min_pixels` pixels, writes them to `out` (the line format of
/// [`seg_core::tags`], atomically) and reports per class how often it is tagged.
pub fn derive_tags(
    data: &DataConfig,
    split: &str,
    prefixes: &[String],
    min_pixels: u64,
    min_absent: f64,
    out: &Path,
) -> Result<TagReport> {
    check_thresholds(min_pixels, min_absent)?;
    let n = data.classes.len();
    let mut entries = Vec::new();
    crate::data::each_mask(data, split, prefixes, "to derive tags from", |name, mask| {
        entries.push((name, tags_from_mask(mask, n, min_pixels)))
    })?;
    let tags = TagFile::from_entries(entries, n)?;
    seg_core::io::write_atomic(out, tags.to_text(&data.classes).as_bytes())
        .with_context(|| format!("{}: cannot write the tag file", out.display()))?;
    let presence = tags.presence(n);
    Ok(TagReport {
        images: tags.len(),
        teachable: teachable(&presence, tags.len(), min_absent),
        presence,
    })
}

/// What the per-class maps behind the pseudo-labels are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LabelSource {
    /// The run's class activation maps (a `cam` or `slrnet` run's CAM head), max-normalised.
    #[default]
    Cam,
    /// The run's segmentation output (any run): class probabilities averaged over the views,
    /// then renormalised over the image's tagged classes (the net's distribution given that the
    /// other classes are absent). Both go through the same thresholds and PAR.
    Segmentation,
    /// The run's segmentation output, each tagged class's probability map divided by its
    /// maximum over the image, like CAMs: every tagged class labels the pixels where the net
    /// finds it most, however unsure it is overall.
    SegmentationMax,
}

/// How [`cam_labels`] computes the CAMs of an image.
#[derive(Debug, Clone, PartialEq)]
pub struct CamLabelOptions {
    /// Input scales relative to the run's `data.input_size` (each rounded to a multiple of 32).
    pub scales: Vec<f64>,
    /// Also run each scale on the mirrored image (CAMs mirrored back and added).
    pub flip: bool,
    /// Without a tag file: a class is tagged when its mask covers at least this many pixels.
    pub min_pixels: u64,
    /// A class is teachable when absent from at least this share of the images.
    pub min_absent: f64,
    /// Show a progress bar.
    pub progress: bool,
    /// Also write each image's refined pseudo-labels to this folder (`<item stem>.png`, 8-bit
    /// grey at the image's size, class ids and 255 where none: what `data.pseudo_labels` reads).
    /// The folder must be new, empty, or one that an earlier `--write` made.
    pub write: Option<std::path::PathBuf>,
    /// The scores will be recorded: refuse up front when no image has a mask to score against.
    pub need_scores: bool,
    /// CAMs or the segmentation output.
    pub source: LabelSource,
    /// No affinity refinement: the labels written (and the report's refined columns) are the
    /// thresholded maps themselves.
    pub no_par: bool,
    /// The classes that may label pixels (names), instead of the run's `cam.trusted_classes`:
    /// a pixel whose best tagged class is not one of them is left unlabelled (255). For a run
    /// whose `[cam]` section is the default (every class trusted), e.g. a CAC run's
    /// segmentation output restricted to the classes tags can teach.
    pub trusted: Option<Vec<String>>,
}

impl Default for CamLabelOptions {
    fn default() -> Self {
        Self {
            scales: vec![1.0, 0.5, 1.5],
            flip: true,
            min_pixels: 500,
            min_absent: 0.1,
            progress: false,
            write: None,
            need_scores: false,
            source: LabelSource::Cam,
            no_par: false,
            trusted: None,
        }
    }
}

/// Pseudo-labels of a split against its masks: before and after PAR.
#[derive(Debug, Clone)]
pub struct CamLabelReport {
    /// Images labelled.
    pub images: usize,
    /// Images scored (those with a mask).
    pub scored: usize,
    /// Thresholded CAMs vs the masks (an ignored pixel counts as a miss of its class).
    pub raw: ConfusionMatrix,
    /// The same after pixel-adaptive refinement.
    pub refined: ConfusionMatrix,
    /// Share of the labelled pixels that got a pseudo-label, before and after PAR.
    pub coverage: (f64, f64),
    /// Per class: whether tags can teach it (see [`seg_core::tags::teachable`]).
    pub teachable: Vec<bool>,
    /// Class names.
    pub classes: Vec<String>,
}

impl CamLabelReport {
    /// Mean IoU (%) over the teachable classes, from `cm`; `None` when no teachable class has an
    /// IoU (e.g. a tag file that names every class for every image: nothing is teachable).
    pub fn teachable_miou(&self, cm: &ConfusionMatrix) -> Option<f64> {
        let iou = cm.iou();
        let v: Vec<f64> = iou
            .iter()
            .zip(&self.teachable)
            .filter(|(_, &t)| t)
            .filter_map(|(v, _)| *v)
            .collect();
        (!v.is_empty()).then(|| 100.0 * v.iter().sum::<f64>() / v.len() as f64)
    }

    /// One line per class: IoU before and after PAR, teachable or not.
    pub fn table(&self) -> String {
        let names = &self.classes;
        let (a, b) = (self.raw.iou(), self.refined.iou());
        let pct = |v: Option<f64>| v.map_or("    -".to_string(), |v| format!("{:5.1}", 100.0 * v));
        let mut s = format!("{:>12} {:>6} {:>6}\n", "class", "CAM", "+PAR");
        for (i, name) in names.iter().enumerate() {
            let t = if self.teachable[i] { "teachable" } else { "" };
            s.push_str(&format!("{name:>12}  {}  {}  {t}\n", pct(a[i]), pct(b[i])));
        }
        let teach = match (self.teachable_miou(&self.raw), self.teachable_miou(&self.refined)) {
            (Some(a), Some(b)) => format!("teachable classes {a:.1} / {b:.1}"),
            _ => "no teachable class".to_string(),
        };
        s.push_str(&format!(
            "{:>12}  {:5.1}  {:5.1}  (coverage {:.1}% / {:.1}%; {teach})\n",
            "mIoU",
            100.0 * self.raw.miou(),
            100.0 * self.refined.miou(),
            100.0 * self.coverage.0,
            100.0 * self.coverage.1,
        ));
        s
    }
}

impl CamLabelReport {
    /// The figures as result records named `<name>_<split>_miou`, `<name>_refined_<split>_miou`,
    /// their `_teachable_miou` and `_coverage`, and `<name>_refined_<split>_iou_<class>`
    /// (`<split>` the split's file stem).
    pub fn records(&self, name: &str, split: &str) -> Vec<seg_core::results::Record> {
        use seg_core::results::Record;
        let tag = Path::new(split)
            .file_stem()
            .map_or(split.to_string(), |s| s.to_string_lossy().into_owned());
        let label = format!("camvid {split} ({} images)", self.scored);
        let rec = |n: String, v: f64, unit: &str| Record::now(&n, v, unit, &label);
        let mut recs = vec![
            rec(format!("{name}_{tag}_miou"), 100.0 * self.raw.miou(), "mIoU %"),
            rec(
                format!("{name}_refined_{tag}_miou"),
                100.0 * self.refined.miou(),
                "mIoU %",
            ),
            rec(format!("{name}_{tag}_coverage"), self.coverage.0, "fraction"),
            rec(format!("{name}_refined_{tag}_coverage"), self.coverage.1, "fraction"),
        ];
        for (stage, cm) in [("", &self.raw), ("refined_", &self.refined)] {
            if let Some(v) = self.teachable_miou(cm) {
                recs.push(rec(format!("{name}_{stage}{tag}_teachable_miou"), v, "mIoU %"));
            }
        }
        for (c, (iou, teach)) in self.refined.iou().iter().zip(&self.teachable).enumerate() {
            if let Some(v) = iou {
                let unit = if *teach {
                    "IoU % (teachable)"
                } else {
                    "IoU % (not teachable)"
                };
                let n = format!("{name}_refined_{tag}_iou_{}", self.classes[c].to_lowercase());
                recs.push(rec(n, 100.0 * v, unit));
            }
        }
        recs
    }
}

/// Scores the pseudo-labels that the CAM head of `run/<checkpoint>.safetensors` gives every
/// image of `split` (or, with [`LabelSource::Segmentation`], its segmentation output's class
/// probabilities, renormalised over the tagged classes instead of max-normalised:
/// [`tag_posterior`]; with [`LabelSource::SegmentationMax`], max-normalised like CAMs): CAMs at
/// `opts.scales` (and mirrored), ReLU'd, resized to stride 4 of the run's input size and summed;
/// max-normalised per class and restricted to the image's tags (from `tags`, or derived from
/// its mask); thresholded with the run's `[cam]` rule (its trusted classes replaced by
/// `opts.trusted` when given), then the same after PAR (the run's PAR
/// settings, AFA's defaults when the run had PAR off; none with `opts.no_par`). The masks
/// are read only to score; with a tag file, images without a mask are labelled (and written,
/// `opts.write`) but not scored.
pub fn cam_labels(
    run: &Path,
    checkpoint_name: &str,
    data: Option<&Path>,
    split: &str,
    tags: Option<&Path>,
    opts: &CamLabelOptions,
) -> Result<CamLabelReport> {
    check_thresholds(opts.min_pixels, opts.min_absent)?;
    anyhow::ensure!(
        !opts.scales.is_empty() && opts.scales.iter().all(|s| s.is_finite() && (0.25..=2.0).contains(s)),
        "--scales {:?}: give one or more scales in [0.25, 2]",
        opts.scales
    );
    let mut cfg = checkpoint::load_config(run)?;
    if let Some(trusted) = &opts.trusted {
        let names = &cfg.data.classes.names;
        anyhow::ensure!(!trusted.is_empty(), "--trusted: give one or more class names");
        for t in trusted {
            anyhow::ensure!(
                names.iter().any(|c| c.eq_ignore_ascii_case(t)),
                "--trusted: unknown class '{t}' (classes: {})",
                names.join(", ")
            );
        }
        cfg.cam.trusted_classes = trusted.clone();
    }
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = SegModel::new(&cfg.model, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let ckpt = run.join(format!("{checkpoint_name}.safetensors"));
    let (_, _, state, _) = checkpoint::load_with_state(&ckpt, &varmap, &dev)?;
    let from_cams = opts.source == LabelSource::Cam;
    let head = if from_cams {
        let head = cfg.cam.load_head(&cfg.method, &cfg.model, &state, &dev);
        Some(head.with_context(|| ckpt.display().to_string())?)
    } else {
        None
    };
    let mut data_cfg = cfg.data.clone();
    if let Some(d) = data {
        data_cfg.root = d.to_path_buf();
    }
    let ds = crate::data::open(&data_cfg, split, &[], "split")?;
    let names = &data_cfg.classes.names;
    let n = names.len();
    let tag_file = tags.map(|p| TagFile::read(p, &data_cfg.classes)).transpose()?;
    if let Some(t) = &tag_file {
        let items: Vec<String> = ds.items.iter().map(|it| it.name.clone()).collect();
        t.check_images(&items, &format!("split '{split}'"))?;
    }
    anyhow::ensure!(
        !opts.need_scores || ds.items.iter().any(|it| it.mask.as_ref().is_some_and(|m| m.exists())),
        "--record: no image of '{split}' has a mask to score against"
    );
    let [h, w] = data_cfg.input_size.map(|v| v as usize);
    anyhow::ensure!(
        h % 4 == 0 && w % 4 == 0,
        "data.input_size {h}x{w} of the run must be a multiple of 4"
    );
    let (hf, wf) = (h / 4, w / 4);
    let rule = cfg.cam.rule(names);
    let par = cfg.cam.refinement().unwrap_or_default();
    let mut raw = ConfusionMatrix::new(n);
    let mut refined = ConfusionMatrix::new(n);
    let (mut labelled, mut covered) = (0u64, [0u64; 2]);
    let mut all_tags = Vec::with_capacity(ds.len());
    let mut scored = 0usize;
    // written into `<dir>.partial`, which replaces `dir` only when every image is labelled: a
    // failed run leaves `dir` as it was, a rerun never mixes in labels of an earlier one
    let staging = opts.write.as_deref().map(prepare_label_dir).transpose()?;
    let pb = crate::train::bar(
        ds.len() as u64,
        opts.progress,
        "cam-labels {bar:30} {pos}/{len} images {eta}",
    );
    // with group mining, consecutive images of the split form the groups (of the training step's
    // size, across sequence boundaries), joined by their tags: the tag file's, or without one
    // the tags derived from the masks being scored against
    let group = if from_cams {
        cfg.cam.load_group(&cfg.model, &state, &dev)?
    } else {
        None
    };
    // SLRNet's LR module, when the run has one
    let lowrank = if from_cams && cfg.method == "slrnet" {
        cfg.slrnet.load_lowrank(&cfg.cam, &cfg.model, &state, &dev)?
    } else {
        None
    };
    let group_size = if group.is_some() {
        cfg.schedule.unlabeled_batch_size.max(1)
    } else {
        1
    };
    for start in (0..ds.len()).step_by(group_size) {
        let mut samples = Vec::new();
        for i in start..(start + group_size).min(ds.len()) {
            pb.inc(1);
            // with tags, an image whose mask file is absent (a tag-only image) is labelled, not scored
            let tag_only = tag_file.is_some() && ds.items[i].mask.as_ref().is_some_and(|m| !m.exists());
            let s = if tag_only { ds.load_image_only(i)? } else { ds.load(i)? };
            let mask = s.mask;
            let image_tags = match (&tag_file, &mask) {
                (Some(t), _) => t.get(&s.name).unwrap_or_default().to_vec(),
                (None, Some(mask)) => tags_from_mask(mask, n, opts.min_pixels),
                (None, None) => anyhow::bail!(
                    "{}: no mask to derive its tags from (give --tags)",
                    ds.items[i].image.display()
                ),
            };
            let native = (s.image.height() as usize, s.image.width() as usize);
            let img = resize_rgb(&s.image, h as u32, w as u32);
            samples.push((s.name, mask, image_tags, img, native));
        }
        let g = samples.len();
        let hot: Vec<f32> = samples.iter().flat_map(|(_, _, t, _, _)| multi_hot(t, n)).collect();
        let adj = seg_nn::group::tag_graph(&hot, g, n);
        let mut acc = Tensor::zeros((g, n, hf, wf), DType::F32, &dev)?;
        for &scale in &opts.scales {
            let side = |v: usize| (((v as f64 * scale) / 32.0).round().max(1.0) as u32) * 32;
            for mirrored in [false, true].into_iter().take(1 + opts.flip as usize) {
                let (vh, vw) = (side(h) as usize, side(w) as usize);
                let mut x = vec![0f32; g * 3 * vh * vw];
                for ((_, _, _, img, _), dst) in samples.iter().zip(x.chunks_mut(3 * vh * vw)) {
                    let scaled = resize_rgb(img, vh as u32, vw as u32);
                    let view = if mirrored {
                        image::imageops::flip_horizontal(&scaled)
                    } else {
                        scaled
                    };
                    normalize_into(&view, data_cfg.mean, data_cfg.std, dst);
                }
                let x = Tensor::from_vec(x, (g, 3, vh, vw), &dev)?;
                let mut cams = match &head {
                    Some(head) => {
                        let mined = group.as_ref().map(|m| (m, adj.as_slice()));
                        cfg.cam.cams(&model, head, mined, lowrank.as_ref(), &x)?.relu()?
                        // [g, C, hs, ws]
                    }
                    // class probabilities at stride 4, [g, C, vh/4, vw/4]
                    None => candle_nn::ops::softmax(&model.forward_t(&x, false)?.logits_low, 1)?,
                };
                if mirrored {
                    cams = cams.flip(&[3])?;
                }
                acc = (acc + bilinear::resize(&cams, hf, wf)?)?; // [g, C, hf, wf]
            }
        }
        for (k, (name, mask, image_tags, img, native)) in samples.into_iter().enumerate() {
            let maps = acc.get(k)?.flatten_all()?.to_vec1::<f32>()?;
            let hot = multi_hot(&image_tags, n);
            let mut norm = if from_cams || opts.source == LabelSource::SegmentationMax {
                cam::normalize_cams(&maps, (1, n, hf, wf), &hot)
            } else {
                tag_posterior(&maps, n, &hot)
            };
            let mut x = vec![0f32; 3 * h * w];
            normalize_into(&img, data_cfg.mean, data_cfg.std, &mut x);
            let small = cam::downsample_mean(&x, 3, (h, w), 4);
            let before = cam::pseudo_labels(&norm, (1, n, hf, wf), &rule);
            let after = if opts.no_par {
                before.clone()
            } else {
                par.refine(&small, 3, &mut norm, n, (hf, wf));
                cam::pseudo_labels(&norm, (1, n, hf, wf), &rule)
            };
            if let Some(dir) = &staging {
                let pred = resize_labels(&cam::upsample_nearest(&after, (1, hf, wf), 4), (h, w), native);
                write_label_png(&crate::data::pseudo_label_path(dir, &name), pred, native)?;
            }
            if let Some(mask) = mask {
                scored += 1;
                labelled += mask.as_raw().iter().filter(|&&m| (m as usize) < n).count() as u64;
                let mask_hw = (mask.height() as usize, mask.width() as usize);
                for (stage, (labels, cm)) in [(before, &mut raw), (after, &mut refined)].into_iter().enumerate() {
                    let pred = resize_labels(&cam::upsample_nearest(&labels, (1, hf, wf), 4), (h, w), mask_hw);
                    covered[stage] += pred
                        .iter()
                        .zip(mask.as_raw())
                        .filter(|&(&p, &m)| (m as usize) < n && p != seg_core::IGNORE)
                        .count() as u64;
                    cm.update(&pred, mask.as_raw());
                }
            }
            all_tags.push((name, image_tags));
        }
    }
    pb.finish_and_clear();
    if let (Some(dir), Some(staging)) = (&opts.write, &staging) {
        publish_label_dir(staging, dir)?;
    }
    let presence = TagFile::from_entries(all_tags, n)?.presence(n);
    let share = |c: u64| c as f64 / labelled.max(1) as f64;
    Ok(CamLabelReport {
        images: ds.len(),
        scored,
        raw,
        refined,
        coverage: (share(covered[0]), share(covered[1])),
        teachable: teachable(&presence, ds.len(), opts.min_absent),
        classes: names.clone(),
    })
}

/// Class probabilities given an image's tags: `probs` `[C, h, w]` flat (summed over views: any
/// positive scale), each pixel's probabilities of the tagged classes (`tags[c]` > 0) divided by
/// their sum, the other classes 0. A pixel whose tagged classes have no mass, or an image
/// without tags, stays all 0 (no label).
pub fn tag_posterior(probs: &[f32], c: usize, tags: &[f32]) -> Vec<f32> {
    assert_eq!(tags.len(), c, "tags shape");
    assert_eq!(probs.len() % c.max(1), 0, "probs shape");
    let plane = probs.len() / c.max(1);
    let mut out = vec![0f32; probs.len()];
    for px in 0..plane {
        let sum: f32 = (0..c).filter(|&k| tags[k] > 0.0).map(|k| probs[k * plane + px]).sum();
        if sum > 0.0 {
            for k in (0..c).filter(|&k| tags[k] > 0.0) {
                out[k * plane + px] = probs[k * plane + px] / sum;
            }
        }
    }
    out
}

/// Marks a folder as written by `cam-labels --write`; present in every folder it writes to.
const LABEL_DIR_MARK: &str = ".edge-seg-pseudo-labels";

/// Checks that `dir` may receive pseudo-labels (new, empty, or one an earlier `--write` made, so
/// that no other file, a dataset's masks above all, is ever replaced) and returns a fresh, empty
/// staging folder beside it, `<dir>.partial`.
fn prepare_label_dir(dir: &Path) -> Result<std::path::PathBuf> {
    if dir.exists() {
        anyhow::ensure!(
            ours_or_empty(dir)?,
            "--write {}: the folder holds files that cam-labels did not write; give a new or empty folder",
            dir.display()
        );
    }
    let mut name = dir.file_name().context("--write: give a folder name")?.to_os_string();
    name.push(".partial");
    let staging = dir.with_file_name(name);
    if staging.exists() {
        anyhow::ensure!(
            ours_or_empty(&staging)?,
            "--write {}: {} exists and is not an unfinished cam-labels folder",
            dir.display(),
            staging.display()
        );
        std::fs::remove_dir_all(&staging).with_context(|| format!("{}: cannot remove", staging.display()))?;
    }
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("--write {}: cannot create the folder", staging.display()))?;
    seg_core::io::write_atomic(
        &staging.join(LABEL_DIR_MARK),
        b"pseudo-labels written by edge-seg-train cam-labels\n",
    )
    .with_context(|| format!("--write {}: cannot write to the folder", staging.display()))?;
    Ok(staging)
}

/// Whether `dir` is an empty folder or one that cam-labels wrote (it holds the mark).
fn ours_or_empty(dir: &Path) -> Result<bool> {
    anyhow::ensure!(dir.is_dir(), "--write {}: not a folder", dir.display());
    let mut entries =
        std::fs::read_dir(dir).with_context(|| format!("--write {}: cannot list the folder", dir.display()))?;
    Ok(entries.next().is_none() || dir.join(LABEL_DIR_MARK).exists())
}

/// Replaces `dir` (absent, empty or an earlier `--write`'s) by the finished `staging` folder.
fn publish_label_dir(staging: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        anyhow::ensure!(
            ours_or_empty(dir)?,
            "--write {}: the folder changed during the run",
            dir.display()
        );
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("--write {}: cannot replace the folder", dir.display()))?;
    }
    std::fs::rename(staging, dir)
        .with_context(|| format!("--write: cannot rename {} to {}", staging.display(), dir.display()))
}

/// Writes `labels` (`[h, w]` row-major) as an 8-bit grey PNG, atomically.
fn write_label_png(path: &Path, labels: Vec<u8>, (h, w): (usize, usize)) -> Result<()> {
    let img = GrayImage::from_raw(w as u32, h as u32, labels).context("pseudo-label size")?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
    seg_core::io::write_atomic(path, &png)
        .with_context(|| format!("{}: cannot write the pseudo-labels", path.display()))
}

/// Labels `[h, w]` resampled (nearest) to `(mh, mw)`.
fn resize_labels(labels: &[u8], (h, w): (usize, usize), (mh, mw): (usize, usize)) -> Vec<u8> {
    if (mh, mw) == (h, w) {
        return labels.to_vec();
    }
    let mut out = Vec::with_capacity(mh * mw);
    for y in 0..mh {
        let sy = (y * h / mh).min(h - 1);
        for x in 0..mw {
            out.push(labels[sy * w + (x * w / mw).min(w - 1)]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::tag_posterior;

    /// Issue #26: the segmentation source's probabilities given the tags, on a hand-made example.
    #[test]
    fn issue26_tag_posterior_renormalises_over_the_tagged_classes() {
        // 3 classes, 2 pixels; classes 0 and 2 tagged
        let probs = [0.2, 0.0, /* class 1 */ 0.7, 0.5, /* class 2 */ 0.1, 0.0];
        let out = tag_posterior(&probs, 3, &[1.0, 0.0, 1.0]);
        let want = [2.0 / 3.0, 0.0, 0.0, 0.0, 1.0 / 3.0, 0.0];
        for (o, w) in out.iter().zip(want) {
            assert!((o - w).abs() < 1e-6, "{out:?}");
        }
        // the second pixel's tagged classes have no mass: no label; no tags: nothing
        assert_eq!(tag_posterior(&probs, 3, &[0.0; 3]), vec![0.0; 6]);
        // scale-free: a sum over views gives the same posterior as their mean
        let twice: Vec<f32> = probs.iter().map(|p| 2.0 * p).collect();
        assert_eq!(tag_posterior(&twice, 3, &[1.0, 0.0, 1.0]), out);
    }
}
