//! The adaptation learner ([`Adapter`]): frames in, a step of the shared CAC consistency on the
//! trainable head, guard checks, guarded weight updates out.

use std::collections::{HashMap, VecDeque};

use super::input_norm::{FrameAffine, InputNorm};
use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seg_core::data::augment::AugmentConfig;
use seg_core::data::pair::{make_pair, PairConfig};
use seg_core::meta::ModelMeta;
use seg_core::preprocess::{normalize, normalize_into, resize_rgb};
use seg_nn::adapt::{AdaptHead, HeadScope};
use seg_nn::consistency::{self, cells, DcConfig, MemoryBank};
use seg_nn::optim::{ParamGroup, Sgd};

use super::frozen::{head_forward, head_inputs, Encoder};
use super::{guard, AdaptConfig, AdaptStats, Monitors, Verdict};
use crate::backend::tract::TractBackend;
use crate::RuntimeError;

/// Stride of the consistency cells (the trainer's CAC cells, one definition).
const STRIDE: u32 = consistency::CAC_STRIDE;
/// Pseudo-label value for "no label" in the cross-view cross-entropy.
const NO_LABEL: u32 = 255;

/// A held frame: frozen features and the source model's view of it.
struct Held {
    /// What the head needs of the frame: with [`HeadScope::Last`] the last convolution's output
    /// before the trainable affine (constant, so the monitors skip the convolution), else the
    /// frozen graph's outputs.
    input: HeldInput,
    anchor_class: Vec<u32>,
    anchor_entropy: Vec<f32>,
}

/// See [`Held::input`].
enum HeldInput {
    /// [`HeadScope::Last`]: [`AdaptHead::fuse_conv`] of the frozen graph's outputs.
    FuseConv(seg_nn::adapt::FuseConv),
    /// Other scopes: the frozen graph's outputs ([`head_inputs`]).
    Frozen(Vec<Tensor>),
}

impl Held {
    /// The head on this frame.
    fn forward(&self, head: &AdaptHead) -> candle_core::Result<seg_nn::adapt::HeadOutput> {
        match &self.input {
            HeldInput::FuseConv(pre) => head.forward_from_fuse_conv(pre),
            HeldInput::Frozen(feats) => head_forward(head, feats),
        }
    }
}

pub(super) fn adapt_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Adapt(format!("{e:#}").replace('\n', " "))
}

/// Runs `f` with candle's parallel work on a pool of its own with `threads` threads (1 by
/// default) instead of rayon's global pool of one thread per core. The steps are small: on 2
/// cores one thread is as fast per step and leaves more of the CPU to inference (FPS with
/// `--adapt` 0.78× → 0.82× of without; docs/BENCHMARKS.md).
pub fn in_pool<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> Result<R, RuntimeError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("adapt-{i}"))
        .build()
        .map_err(adapt_err)?;
    Ok(pool.install(f))
}

/// FNV-1a 64 of the model bytes ([`seg_core::io::fnv1a`]): ties a state file to the model it
/// was adapted from.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    seg_core::io::fnv1a(bytes)
}

/// The adaptation learner: frames in, guarded weight updates out. Used by the background worker
/// of `edge-seg run --adapt` and, synchronously, by `edge-seg adapt`.
pub struct Adapter {
    cfg: AdaptConfig,
    /// The model's metadata.
    pub meta: ModelMeta,
    origin: String,
    source: seg_onnx::pb::ModelProto,
    fingerprint: u64,
    enc_crops: Encoder,
    enc_frame: Encoder,
    head: AdaptHead,
    anchor: AdaptHead,
    source_state: HashMap<String, Tensor>,
    /// The weights that last passed the guards: what is published.
    last_good: HashMap<String, Tensor>,
    /// The moving average of the trained values (`weight_ema > 0`).
    ema: HashMap<String, Tensor>,
    opt: Sgd,
    bank: MemoryBank,
    /// Recent frames with their input normalisation.
    ring: VecDeque<(RgbImage, FrameAffine)>,
    held: VecDeque<Held>,
    /// The per-frame input normalisation (`input_norm > 0`).
    input_norm: Option<InputNorm>,
    /// Source-domain frames of the source-frame monitor (`guard.source_frames`).
    source_held: Vec<Held>,
    observed: u64,
    rng: ChaCha8Rng,
    aug: AugmentConfig,
    pair: PairConfig,
    dc: DcConfig,
    step_ms_sum: f64,
    decoder_channels: usize,
    /// What it has done.
    pub stats: AdaptStats,
    dev: Device,
}

/// The device the adaptation head learns on: GPU 0 when built with the `cuda` feature, else
/// the CPU. No GPU (or no driver) with a CUDA build is an error naming the cause.
fn learner_device() -> Result<Device, RuntimeError> {
    #[cfg(feature = "cuda")]
    {
        Device::new_cuda(0).map_err(|e| RuntimeError::Adapt(format!("--adapt on GPU 0 (a `cuda` build): {e}")))
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

impl Adapter {
    /// An adapter for the float edge-seg model `bytes` (`origin` names it in errors).
    pub fn new(bytes: &[u8], origin: &str, cfg: AdaptConfig) -> Result<Self, RuntimeError> {
        let model_err = |reason: String| RuntimeError::Model {
            path: origin.to_string(),
            reason,
        };
        cfg.validate()
            .map_err(|e| RuntimeError::Adapt(format!("adaptation config: {e}")))?;
        // the checks every model passes before a backend (graph validation, bounded metadata);
        // the graph itself is used as written
        let (_, checked, _) = crate::Segmenter::parse_model(bytes, origin, &crate::describe::MetaOverrides::default())?;
        let source = seg_onnx::decode(bytes).map_err(|e| model_err(format!("not a valid ONNX model: {e}")))?;
        let meta = ModelMeta::from_map(&seg_onnx::metadata(&source))
            .map_err(|e| model_err(format!("not an edge-seg model: {e}")))?;
        let (h, w) = checked.input_hw;
        crate::limits::check_memory(
            (cfg.ring + cfg.guard.held) as u128 * h as u128 * w as u128 * 3,
            &format!(
                "the adaptation's {} ring + {} held frames of {h}x{w}",
                cfg.ring, cfg.guard.held
            ),
        )
        .map_err(|e| RuntimeError::Adapt(format!("adaptation config: {e}")))?;
        let graph = source
            .graph
            .as_ref()
            .ok_or_else(|| model_err("not a valid ONNX model: no graph".into()))?;
        if seg_nn::adapt::is_lraspp(graph.initializer.iter().map(|t| &t.name)) {
            return Err(model_err(seg_nn::adapt::UNSUPPORTED_DECODER.into()));
        }
        let cut = head_inputs(graph, cfg.scope).ok_or_else(|| {
            model_err(
                "--adapt needs a float edge-seg model (no float 'decoder.*.conv.weight' \
                 convolutions; an int8 QDQ graph cannot be adapted)"
                    .into(),
            )
        })?;
        let dev = learner_device()?;
        let weights: HashMap<String, Tensor> = graph
            .initializer
            .iter()
            .filter(|t| t.data_type == 1 && (t.name.starts_with("decoder.") || t.name.starts_with("classifier.")))
            .map(|t| {
                let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
                let v = seg_onnx::tensor_to_f32(t).map_err(|e| model_err(e.to_string()))?;
                Tensor::from_vec(v, dims, &dev)
                    .map(|x| (t.name.clone(), x))
                    .map_err(|e| model_err(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let mcfg = AdaptHead::config_of(&weights).map_err(|e| model_err(format!("adaptation head: {e}")))?;
        let head = AdaptHead::new(&mcfg, &weights, &dev)
            .map_err(|e| model_err(format!("adaptation head: {e}")))?
            .with_scope(cfg.scope)
            .with_classifier(cfg.train_classifier)
            .with_low_rank(cfg.low_rank, cfg.seed)
            .map_err(|e| model_err(format!("adaptation head: {e}")))?;
        let anchor = AdaptHead::new(&mcfg, &weights, &dev)
            .map_err(|e| model_err(format!("adaptation head: {e}")))?
            .with_scope(cfg.scope);
        if mcfg.num_classes != meta.classes.len() {
            return Err(model_err(format!(
                "the classifier has {} classes, the metadata names {}",
                mcfg.num_classes,
                meta.classes.len()
            )));
        }
        let cut: Vec<&str> = cut.iter().map(String::as_str).collect();
        let encoder = seg_onnx::extract(&source, &[], &cut).map_err(|e| model_err(e.to_string()))?;
        let (h, w) = (meta.input_hw.0 as usize, meta.input_hw.1 as usize);
        let enc_frame = Encoder::new(&encoder, [1, 3, h, w], origin)?;
        let enc_crops = Encoder::new(&encoder, [2, 3, cfg.crop[0] as usize, cfg.crop[1] as usize], origin)?;
        let (low_rank, params): (Vec<_>, Vec<_>) =
            head.trainable().into_iter().partition(|(n, _)| n.contains(".lora_"));
        let opt = Sgd::new(
            vec![
                ParamGroup {
                    name: "head".into(),
                    lr_mult: 1.0,
                    params,
                },
                ParamGroup {
                    name: "low_rank".into(),
                    lr_mult: cfg.low_rank_lr_mult,
                    params: low_rank,
                },
            ],
            cfg.momentum,
            0.0,
        );
        let aug = AugmentConfig {
            base_size: Some([meta.input_hw.0, meta.input_hw.1]),
            scale_min: cfg.scale[0],
            scale_max: cfg.scale[1],
            crop: cfg.crop,
            ..AugmentConfig::default()
        };
        let pair = PairConfig {
            iou: cfg.iou,
            stride: STRIDE,
            ..Default::default()
        };
        let dc = DcConfig {
            temperature: cfg.temperature,
            gamma: cfg.gamma,
            ..Default::default()
        };
        let mut a = Self {
            bank: MemoryBank::new(cfg.bank, mcfg.embedding_channels()),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            meta,
            origin: origin.to_string(),
            fingerprint: fingerprint(bytes),
            source,
            enc_crops,
            enc_frame,
            head,
            anchor,
            source_state: HashMap::new(),
            last_good: HashMap::new(),
            ema: HashMap::new(),
            opt,
            ring: VecDeque::new(),
            held: VecDeque::new(),
            input_norm: None,
            source_held: Vec::new(),
            observed: 0,
            aug,
            pair,
            dc,
            step_ms_sum: 0.0,
            decoder_channels: mcfg.embedding_channels(),
            stats: AdaptStats::default(),
            dev,
        };
        a.source_state = a.snapshot()?;
        a.last_good = a.snapshot()?;
        a.ema = a.snapshot()?;
        if let Some(dir) = a.cfg.guard.source_frames.clone() {
            let frames: Vec<RgbImage> = super::read_frames(&super::source_frame_files(&dir)?)?
                .iter()
                .map(|f| a.fit(f))
                .collect();
            if a.cfg.input_norm > 0.0 {
                let xs: Vec<Vec<f32>> = frames.iter().map(|f| normalize(f, a.meta.mean, a.meta.std)).collect();
                a.input_norm = Some(InputNorm::from_frames(a.cfg.input_norm as f32, &xs));
            }
            for img in &frames {
                let held = a.hold(img, &a.frame_affine(img))?;
                a.source_held.push(held);
            }
        }
        Ok(a)
    }

    /// The settings.
    pub fn config(&self) -> &AdaptConfig {
        &self.cfg
    }

    /// Whether the published model differs from the source at start (a loaded state with steps,
    /// or the input normalisation), so the inference path should run [`Adapter::backend`].
    pub fn differs_from_source(&self) -> bool {
        self.stats.steps > 0 || self.input_norm.is_some()
    }

    /// Fingerprint of the source model (see [`fingerprint`]).
    pub fn model_fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// A deep copy of the trainable values, outside the autograd graph (candle's `copy` keeps a
    /// backprop edge to the variable; without the `detach`, the anchor pull's gradient through
    /// the copy would cancel its gradient through the variable).
    pub fn snapshot(&self) -> Result<HashMap<String, Tensor>, RuntimeError> {
        self.head
            .trainable()
            .into_iter()
            .map(|(n, v)| v.as_tensor().copy().map(|t| (n, t.detach())).map_err(adapt_err))
            .collect()
    }

    /// The trainable variables (name, var), e.g. to inspect or perturb them.
    pub fn trainable(&self) -> Vec<(String, candle_core::Var)> {
        self.head.trainable()
    }

    /// The published values: the last set that passed the guards (what the inference path
    /// runs and the state file keeps).
    pub fn published(&self) -> &HashMap<String, Tensor> {
        &self.last_good
    }

    /// Sets the trainable values (all of them, shapes checked) and makes them the last good set.
    pub fn restore(&mut self, state: &HashMap<String, Tensor>) -> Result<(), RuntimeError> {
        self.head.load(state).map_err(adapt_err)?;
        self.last_good = self.snapshot()?;
        self.ema = self.last_good.clone();
        self.opt.set_velocity(HashMap::new());
        Ok(())
    }

    /// Runs `f` with the head's trainable values set to `state`, then puts the raw values back.
    fn with_values<R>(
        &self,
        state: &HashMap<String, Tensor>,
        f: impl FnOnce(&Self) -> Result<R, RuntimeError>,
    ) -> Result<R, RuntimeError> {
        let raw = self.snapshot()?;
        self.head.load(state).map_err(adapt_err)?;
        let out = f(self);
        self.head.load(&raw).map_err(adapt_err)?;
        out
    }

    /// `ema ← d·ema + (1 − d)·values` after a step (`weight_ema = d > 0`).
    fn update_ema(&mut self) -> candle_core::Result<()> {
        let d = self.cfg.weight_ema;
        for (name, var) in self.head.trainable() {
            let e = &self.ema[&name];
            let next = ((e * d)? + (var.as_tensor() * (1.0 - d))?)?.detach();
            self.ema.insert(name, next);
        }
        Ok(())
    }

    /// Back to the source weights.
    pub fn reset(&mut self) -> Result<(), RuntimeError> {
        let s = self.source_state.clone();
        self.restore(&s)
    }

    /// Appends the normalised `[3, h, w]` values of `img` to `out`, with the input
    /// normalisation `affine` of the frame it comes from.
    fn normalize(&self, img: &RgbImage, affine: &FrameAffine, out: &mut Vec<f32>) {
        let start = out.len();
        out.resize(start + 3 * img.width() as usize * img.height() as usize, 0.0);
        normalize_into(img, self.meta.mean, self.meta.std, &mut out[start..]);
        if *affine != FrameAffine::IDENTITY {
            affine.apply(&mut out[start..]);
        }
    }

    /// The input normalisation of the whole frame `img` (the identity when `input_norm` is off).
    fn frame_affine(&self, img: &RgbImage) -> FrameAffine {
        match &self.input_norm {
            Some(n) => n.affine(&normalize(img, self.meta.mean, self.meta.std)),
            None => FrameAffine::IDENTITY,
        }
    }

    /// `frame` at the network's input size.
    fn fit(&self, frame: &RgbImage) -> RgbImage {
        let (h, w) = self.meta.input_hw;
        if frame.dimensions() == (w, h) {
            frame.clone()
        } else {
            resize_rgb(frame, h, w)
        }
    }

    /// The frozen features of `img` (at input size, with its input normalisation `affine`) and
    /// the source model's view of it.
    fn hold(&self, img: &RgbImage, affine: &FrameAffine) -> Result<Held, RuntimeError> {
        let mut x = Vec::new();
        self.normalize(img, affine, &mut x);
        let feats = self.enc_frame.run(x, &self.dev)?;
        let input = match (self.anchor.scope(), &feats[..]) {
            // the trained head's: it keeps the convolution's input when a low-rank update needs it
            (HeadScope::Last, [aspp, low]) => HeldInput::FuseConv(self.head.fuse_conv(aspp, low).map_err(adapt_err)?),
            _ => HeldInput::Frozen(feats),
        };
        let mut held = Held {
            input,
            anchor_class: Vec::new(),
            anchor_entropy: Vec::new(),
        };
        let s = summarise_head(&self.anchor, &held)?;
        held.anchor_class = s.iter().map(|p| p.0).collect();
        held.anchor_entropy = s.iter().map(|p| p.2).collect();
        Ok(held)
    }

    /// Takes a frame from the stream: into the ring buffer, and every `guard.hold_every`-th one
    /// (the first included) into the held buffer with the source model's predictions.
    pub fn observe(&mut self, frame: &RgbImage) -> Result<(), RuntimeError> {
        let img = self.fit(frame);
        let affine = self.frame_affine(&img);
        // the held buffer is kept with guards off too, so the monitors are still reported
        if self.observed.is_multiple_of(self.cfg.guard.hold_every) {
            let held = self.hold(&img, &affine)?;
            if self.held.len() == self.cfg.guard.held {
                self.held.pop_front();
            }
            self.held.push_back(held);
        }
        if self.ring.len() == self.cfg.ring {
            self.ring.pop_front();
        }
        self.ring.push_back((img, affine));
        self.observed += 1;
        Ok(())
    }

    /// One adaptation step on a random frame of the ring buffer; returns the loss (`None` when
    /// no frame was observed yet).
    pub fn step(&mut self) -> Result<Option<f64>, RuntimeError> {
        if self.ring.is_empty() {
            return Ok(None);
        }
        let t0 = std::time::Instant::now();
        let i = self.rng.random_range(0..self.ring.len());
        let (frame, affine) = &self.ring[i];
        let pair = make_pair(frame, &self.aug, &self.pair, &mut self.rng);
        let mut x = Vec::new();
        for c in &pair.crops {
            self.normalize(c, affine, &mut x);
        }
        let t1 = std::time::Instant::now();
        // Last: [2, a, h/32, w/32] + [2, l, h/4, w/4]; Decoder: [2, w1, h/4, w/4] + [2, w4, h/32, w/32]
        let feats = self.enc_crops.run(x, &self.dev)?;
        let t2 = std::time::Instant::now();
        let loss = self.losses(&feats, &pair.geometry).map_err(adapt_err)?;
        let value = loss.to_scalar::<f32>().map_err(adapt_err)? as f64;
        let t3 = std::time::Instant::now();
        let grads = loss.backward().map_err(adapt_err)?;
        let t4 = std::time::Instant::now();
        self.opt.step(&grads, self.cfg.lr).map_err(adapt_err)?;
        tracing::debug!(
            "adapt step: crops {:?}, encoder {:?}, head + losses {:?}, backward {:?}",
            t1 - t0,
            t2 - t1,
            t3 - t2,
            t4 - t3
        );
        if self.cfg.restore_prob > 0.0 {
            self.stochastic_restore().map_err(adapt_err)?;
        }
        if self.cfg.weight_ema > 0.0 {
            self.update_ema().map_err(adapt_err)?;
        }
        self.stats.steps += 1;
        self.stats.last_loss = value;
        self.step_ms_sum += t0.elapsed().as_secs_f64() * 1e3;
        self.stats.mean_step_ms = self.step_ms_sum / self.stats.steps as f64;
        Ok(Some(value))
    }

    /// DC (both directions) + cross-view pseudo-label CE + entropy on one crop pair.
    fn losses(
        &mut self,
        feats: &[Tensor],
        geometry: &seg_core::data::pair::PairGeometry,
    ) -> candle_core::Result<Tensor> {
        let dev = self.dev.clone();
        let out = head_forward(&self.head, feats)?;
        let c = consistency::CacCells::pool(&out.embedding, &out.logits_low)?; // [2, ·, h/8, w/8]
        let scores = &c.scores;
        let phi = consistency::l2_normalize(&c.emb, 1)?; // [2, d, h/8, w/8]
                                                         // negatives: a random subset of each crop's valid cells, plus the bank
        let keep = self.cfg.pair_negatives / 2;
        let rng = &mut self.rng;
        let step = consistency::cac_step(
            &phi,
            &c.conf,
            &c.label,
            std::slice::from_ref(geometry),
            &self.bank,
            &self.dc,
            self.cfg.dc_weight > 0.0,
            &mut |_, _, mut idx| {
                let k = keep.min(idx.len());
                partial_shuffle(&mut idx, k, rng);
                idx.truncate(k);
                idx.sort_unstable();
                idx
            },
        )?;
        let (feats, labels) = (&step.feats, &step.labels);
        let mut total = Tensor::new(0f32, &dev)?;
        if let Some(l) = &step.loss {
            total = (total + (l * self.cfg.dc_weight)?)?;
        }
        // [n, d] features, [n] confidences and labels of each crop on the shared cells
        if let Some(o) = &step.overlaps[0] {
            let (valid, n) = (&o.valid, o.valid.dim(0)?);
            if self.cfg.pseudo_weight > 0.0 {
                // each crop learns the other's confident class on the shared cells
                let (s1, s2) = (cells(scores, 0, &o.index[0])?, cells(scores, 1, &o.index[1])?); // [n, C]
                let target = |y: &Tensor, c: &Tensor| -> candle_core::Result<Tensor> {
                    let keep = (c.gt(self.cfg.pseudo_threshold as f64)?.to_dtype(DType::F32)? * valid)?;
                    let none = Tensor::full(NO_LABEL, n, &dev)?;
                    keep.ne(0f32)?.where_cond(y, &none)?.reshape((1, n, 1))
                };
                let as_map = |s: &Tensor| -> candle_core::Result<Tensor> {
                    let c = s.dim(1)?;
                    s.t()?.reshape((1, c, n, 1)) // [1, C, n, 1]
                };
                let p12 =
                    seg_nn::loss::cross_entropy(&as_map(&s1)?, &target(&o.labels[1], &o.conf[1])?, NO_LABEL, None)?;
                let p21 =
                    seg_nn::loss::cross_entropy(&as_map(&s2)?, &target(&o.labels[0], &o.conf[0])?, NO_LABEL, None)?;
                total = (total + (((p12 + p21)? * 0.5)? * self.cfg.pseudo_weight)?)?;
            }
        }
        if self.cfg.entropy_weight > 0.0 {
            let logp = seg_nn::loss::log_softmax(scores, 1)?; // [2, C, h/8, w/8]
            let ent = (logp.exp()? * &logp)?.sum(1)?.neg()?.mean_all()?;
            total = (total + (ent * self.cfg.entropy_weight)?)?;
        }
        if self.cfg.replay_weight > 0.0 && !self.source_held.is_empty() {
            let j = self.rng.random_range(0..self.source_held.len());
            let held = &self.source_held[j];
            let logits = held.forward(&self.head)?.logits_low; // [1, C, h/4, w/4]
            let (_, _, h, w) = logits.dims4()?;
            let target = Tensor::from_slice(&held.anchor_class, (1, h, w), &dev)?; // [1, h/4, w/4]
            let replay = seg_nn::loss::cross_entropy(&logits, &target, NO_LABEL, None)?;
            total = (total + (replay * self.cfg.replay_weight)?)?;
        }
        if self.cfg.anchor_weight > 0.0 {
            for (name, var) in self.head.trainable() {
                let pull = (var.as_tensor() - &self.source_state[&name])?.sqr()?.sum_all()?;
                total = (total + (pull * self.cfg.anchor_weight)?)?;
            }
        }
        // this step's cells become negatives of the next steps
        let rows = feats.dim(0)?;
        let push = self.cfg.bank_push.min(rows);
        if push > 0 && self.bank.capacity() > 0 {
            let mut pick: Vec<u32> = (0..rows as u32).collect();
            partial_shuffle(&mut pick, push, &mut self.rng);
            pick.truncate(push);
            consistency::push_to_bank(&mut self.bank, feats, labels, pick)?;
        }
        Ok(total)
    }

    /// CoTTA: each trainable value returns to its source value with probability `restore_prob`.
    fn stochastic_restore(&mut self) -> candle_core::Result<()> {
        let p = self.cfg.restore_prob;
        for (name, var) in self.head.trainable() {
            let src = &self.source_state[&name];
            let n = var.elem_count();
            let m: Vec<f32> = (0..n).map(|_| (self.rng.random::<f64>() < p) as u8 as f32).collect();
            let m = Tensor::from_vec(m, var.dims(), &self.dev)?;
            let v = ((&m * src)? + ((1.0 - &m)? * var.as_tensor())?)?;
            var.set(&v)?;
        }
        Ok(())
    }

    /// Monitors of the current head on the held buffer (`None` when it is empty).
    pub fn monitors(&self) -> Result<Option<Monitors>, RuntimeError> {
        if self.held.is_empty() {
            return Ok(None);
        }
        let (mut cur, mut cls, mut ent) = (Vec::new(), Vec::new(), Vec::new());
        for h in &self.held {
            cur.extend(summarise_head(&self.head, h)?);
            cls.extend_from_slice(&h.anchor_class);
            ent.extend_from_slice(&h.anchor_entropy);
        }
        let classes = self.meta.classes.len();
        let mut m = guard::monitors(&cur, &cls, &ent, classes);
        if !self.source_held.is_empty() {
            // the source model's classes as the reference, the adapted head's as the prediction
            // (class ids are below `classes` <= seg_core::classes::MAX_CLASSES = 255, so they fit the metrics' u8 labels)
            let mut cm = seg_core::metrics::ConfusionMatrix::new(classes);
            for h in &self.source_held {
                let cur: Vec<u8> = summarise_head(&self.head, h)?.iter().map(|p| p.0 as u8).collect();
                let cls: Vec<u8> = h.anchor_class.iter().map(|&c| c as u8).collect();
                cm.update(&cur, &cls);
            }
            m.source_agreement = Some(cm.pixel_accuracy());
            m.source_iou = Some(cm.miou());
        }
        Ok(Some(m))
    }

    /// Runs the guards on the candidate (the current weights, or their moving average with
    /// `weight_ema`): pass (it becomes the last good set) or roll back. With guards off (or
    /// nothing held yet) it always passes; the monitors are measured anyway.
    pub fn check(&mut self) -> Result<Verdict, RuntimeError> {
        let t0 = std::time::Instant::now();
        let g = self.cfg.guard.clone();
        let averaged = self.cfg.weight_ema > 0.0;
        let m = if averaged {
            self.with_values(&self.ema, Self::monitors)?
        } else {
            self.monitors()?
        };
        let n = self.stats.checks as f64;
        self.stats.mean_check_ms = (self.stats.mean_check_ms * n + t0.elapsed().as_secs_f64() * 1e3) / (n + 1.0);
        self.stats.checks += 1;
        self.stats.monitors = m;
        let Some(why) = m.filter(|_| g.enabled).and_then(|m| g.verdict(&m)) else {
            self.stats.consecutive_trips = 0;
            self.last_good = if averaged { self.ema.clone() } else { self.snapshot()? };
            return Ok(Verdict::Pass);
        };
        self.stats.rollbacks += 1;
        self.stats.consecutive_trips += 1;
        self.stats.last_rollback = Some((self.stats.steps, why.clone()));
        self.bank = MemoryBank::new(self.cfg.bank, self.decoder_channels);
        if self.stats.consecutive_trips >= g.reset_after {
            self.stats.resets += 1;
            self.stats.consecutive_trips = 0;
            self.reset()?;
            tracing::warn!("adaptation reset to the source weights: {why}");
            Ok(Verdict::Reset(why))
        } else {
            let s = self.last_good.clone();
            self.head.load(&s).map_err(adapt_err)?;
            self.ema = s;
            self.opt.set_velocity(HashMap::new());
            tracing::warn!("adaptation rolled back to the last good weights: {why}");
            Ok(Verdict::RolledBack(why))
        }
    }

    /// One step; at every `swap_every`-th step the guards run too, and when the weights passed
    /// (or were reset to the source) the new inference plan to publish is returned. After a
    /// rollback the last good weights are the ones already published, so there is nothing new.
    pub fn advance(&mut self) -> Result<Option<TractBackend>, RuntimeError> {
        self.step()?;
        if self.stats.steps == 0 || !self.stats.steps.is_multiple_of(self.cfg.swap_every) {
            return Ok(None);
        }
        match self.check()? {
            Verdict::Pass | Verdict::Reset(_) => self.backend().map(Some),
            Verdict::RolledBack(_) => Ok(None),
        }
    }

    /// The source graph with the published weights (the last good set) folded into its
    /// initializers (as written, no runtime rewrites): what `edge-seg adapt --out` saves.
    pub fn adapted_model(&self) -> Result<seg_onnx::pb::ModelProto, RuntimeError> {
        let mut m = self.source.clone();
        let folded = self.with_values(&self.last_good, |a| a.head.folded().map_err(adapt_err))?;
        for (name, t) in folded {
            let v: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).map_err(adapt_err)?;
            seg_onnx::set_initializer(&mut m, &name, &v).map_err(adapt_err)?;
        }
        if let Some(n) = &self.input_norm {
            n.insert(&mut m).map_err(|reason| RuntimeError::Model {
                path: self.origin.clone(),
                reason,
            })?;
        }
        Ok(m)
    }

    /// A tract backend running the adapted model (built off the inference path, then published).
    pub fn backend(&mut self) -> Result<TractBackend, RuntimeError> {
        let t0 = std::time::Instant::now();
        let mut m = self.adapted_model()?;
        crate::rewrite::prepare_graph(&mut m, self.meta.input_hw).map_err(|reason| RuntimeError::Model {
            path: self.origin.clone(),
            reason,
        })?;
        let b = TractBackend::new(&m, &self.origin, self.meta.input_hw)?;
        let n = self.stats.plans_built as f64;
        self.stats.mean_plan_ms = (self.stats.mean_plan_ms * n + t0.elapsed().as_secs_f64() * 1e3) / (n + 1.0);
        self.stats.plans_built += 1;
        Ok(b)
    }
}

/// Moves a uniform random sample of `k` elements of `v` to its front (Fisher–Yates, `k` steps).
fn partial_shuffle(v: &mut [u32], k: usize, rng: &mut impl Rng) {
    for i in 0..k.min(v.len()) {
        let j = rng.random_range(i..v.len());
        v.swap(i, j);
    }
}

/// Per-pixel `(class, confidence, entropy)` of `head` on a held frame (stride 4).
fn summarise_head(head: &AdaptHead, held: &Held) -> Result<Vec<(u32, f32, f32)>, RuntimeError> {
    let out = held.forward(head).map_err(adapt_err)?;
    let logits = out.logits_low.get(0).map_err(adapt_err)?; // [C, h, w]
    let c = logits.dim(0).map_err(adapt_err)?;
    let prob = seg_nn::loss::log_softmax(&logits, 0)
        .and_then(|l| l.exp())
        .and_then(|p| p.flatten_all())
        .and_then(|p| p.to_vec1::<f32>())
        .map_err(adapt_err)?;
    Ok(guard::summarise(&prob, c))
}

#[cfg(test)]
mod tests {
    use tract_onnx::prelude::*;

    use candle_core::Tensor;

    use super::super::{input_norm, state, GuardConfig};
    use super::*;

    fn samples() -> Vec<RgbImage> {
        crate::DEFAULT_SAMPLES
            .iter()
            .map(|(_, b)| image::load_from_memory(b).unwrap().to_rgb8())
            .collect()
    }

    fn adapter(cfg: AdaptConfig) -> Adapter {
        Adapter::new(crate::SMALL_MODEL, "embedded", cfg).unwrap()
    }

    fn values(s: &HashMap<String, Tensor>) -> Vec<(String, Vec<f32>)> {
        let mut v: Vec<_> = s
            .iter()
            .map(|(n, t)| (n.clone(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Adds `delta` to class `c`'s classifier bias.
    fn bump_bias(a: &Adapter, c: usize, delta: f32) {
        let (_, bias) = a.trainable().into_iter().find(|(n, _)| n == "classifier.bias").unwrap();
        let mut v = bias.as_tensor().to_vec1::<f32>().unwrap();
        v[c] += delta;
        bias.set(&Tensor::new(v, bias.device()).unwrap()).unwrap();
    }

    /// Issue #5: a step trains the head (finite loss, weights move); an injected degradation
    /// trips the guards, which restore the last good weights; repeated trips restore the source.
    #[test]
    fn issue5_rollback_triggers_on_an_injected_degradation() {
        let cfg = AdaptConfig {
            guard: GuardConfig {
                hold_every: 1,
                ..Default::default()
            },
            train_classifier: true,
            ..Default::default()
        };
        let mut a = adapter(cfg.clone());
        assert!(a.step().unwrap().is_none(), "no frame yet");
        let frames = samples();
        for f in &frames {
            a.observe(f).unwrap();
        }
        let source = values(&a.snapshot().unwrap());
        for _ in 0..3 {
            let loss = a.step().unwrap().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{loss}");
        }
        assert_ne!(values(&a.snapshot().unwrap()), source, "the steps changed the head");
        // three small steps keep the model close to the source: the check passes
        assert_eq!(a.check().unwrap(), Verdict::Pass);
        let good = values(&a.snapshot().unwrap());
        let m = a.stats.monitors.unwrap();
        assert!(m.agreement > 0.95 && m.drift < 0.05, "{m:?}");

        // inject: make class 0 (sky) win almost everywhere
        bump_bias(&a, 0, 30.0);
        let why = match a.check().unwrap() {
            Verdict::RolledBack(why) => why,
            v => panic!("expected a rollback, got {v:?}"),
        };
        assert!(why.contains("agreement"), "{why}");
        assert_eq!(values(&a.snapshot().unwrap()), good, "restored the last good weights");
        assert_eq!((a.stats.rollbacks, a.stats.resets), (1, 0));
        assert!(a.stats.status().contains("1 rollbacks"), "{}", a.stats.status());

        // the same degradation again and again: after reset_after (3) trips in a row, the source
        bump_bias(&a, 0, 30.0);
        assert!(matches!(a.check().unwrap(), Verdict::RolledBack(_)));
        bump_bias(&a, 0, 30.0);
        assert!(matches!(a.check().unwrap(), Verdict::Reset(_)));
        assert_eq!(values(&a.snapshot().unwrap()), source);
        assert_eq!((a.stats.rollbacks, a.stats.resets), (3, 1));

        // guards off (naive adaptation): the degradation stays
        let mut naive = adapter(AdaptConfig {
            guard: GuardConfig {
                enabled: false,
                ..Default::default()
            },
            ..cfg
        });
        naive.observe(&frames[0]).unwrap();
        bump_bias(&naive, 0, 30.0);
        let bad = values(&naive.snapshot().unwrap());
        assert_eq!(naive.check().unwrap(), Verdict::Pass);
        assert_eq!(values(&naive.snapshot().unwrap()), bad);
    }

    /// Issue #5, `weight_ema`: the guards check and publish the moving average of the trained
    /// values (`d·ema + (1 − d)·values` after each step), training goes on from the raw values,
    /// and the adapted model and the state file carry the average.
    #[test]
    fn issue5_weight_ema_publishes_the_average() {
        let d = 0.6;
        let cfg = AdaptConfig {
            weight_ema: d,
            guard: GuardConfig {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut a = adapter(cfg);
        let source = values(&a.snapshot().unwrap());
        let mut want = source.clone();
        for f in samples() {
            a.observe(&f).unwrap();
            a.step().unwrap();
            for ((_, e), (_, v)) in want.iter_mut().zip(values(&a.snapshot().unwrap())) {
                for (e, v) in e.iter_mut().zip(v) {
                    *e = *e * d as f32 + v * (1.0 - d) as f32;
                }
            }
        }
        let raw = values(&a.snapshot().unwrap());
        assert_eq!(a.check().unwrap(), Verdict::Pass);
        let published = values(a.published());
        assert_ne!(published, raw, "the average, not the last step, is published");
        assert_ne!(published, source);
        for ((n, p), (_, w)) in published.iter().zip(&want) {
            for (p, w) in p.iter().zip(w) {
                assert!((p - w).abs() < 1e-6, "{n}: {p} vs {w}");
            }
        }
        assert_eq!(
            values(&a.snapshot().unwrap()),
            raw,
            "training goes on from the raw values"
        );

        // the adapted model folds the published average: the same graph as an adapter restored
        // to it, and the state file round-trips it
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ema.safetensors");
        state::save(&a, &path).unwrap();
        let mut b = adapter(AdaptConfig::default());
        state::load(&mut b, &path).unwrap();
        assert_eq!(values(&b.snapshot().unwrap()), published);
        assert_eq!(a.adapted_model().unwrap(), b.adapted_model().unwrap());
        assert!(AdaptConfig {
            weight_ema: 1.0,
            ..Default::default()
        }
        .validate()
        .is_err());
    }

    /// Issue #5, `low_rank`: the low-rank update of the last decoder convolution trains beside
    /// the affine (B leaves zero), the guards score it on the held frames, the published model
    /// carries it folded into the kernel, and the state file round-trips it (an adapter without
    /// the update rejects that file by name).
    #[test]
    fn issue5_low_rank_update_trains_and_is_published_folded() {
        let cfg = AdaptConfig {
            low_rank: 4,
            guard: GuardConfig {
                hold_every: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut a = adapter(cfg.clone());
        let source_model = a.adapted_model().unwrap();
        let lora_b = |a: &Adapter| -> Vec<f32> {
            let (_, v) = a
                .trainable()
                .into_iter()
                .find(|(n, _)| n == "decoder.fuse.conv.lora_b")
                .unwrap();
            v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()
        };
        assert!(lora_b(&a).iter().all(|&x| x == 0.0), "B starts at zero");
        for f in samples() {
            a.observe(&f).unwrap();
            a.step().unwrap();
        }
        assert!(lora_b(&a).iter().any(|&x| x != 0.0), "B trains");
        assert_eq!(a.check().unwrap(), Verdict::Pass);
        let m = a.stats.monitors.unwrap();
        assert!(m.agreement > 0.9 && m.agreement < 1.0, "{m:?}");
        let kernel = |m: &seg_onnx::pb::ModelProto| -> Vec<f32> {
            let g = m.graph.as_ref().unwrap();
            let t = g
                .initializer
                .iter()
                .find(|t| t.name == "decoder.fuse.conv.weight")
                .unwrap();
            seg_onnx::tensor_to_f32(t).unwrap()
        };
        let (before, after) = (kernel(&source_model), kernel(&a.adapted_model().unwrap()));
        assert_eq!(before.len(), after.len());
        assert_ne!(before, after, "the update is folded into the kernel");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lora.safetensors");
        state::save(&a, &path).unwrap();
        let mut b = adapter(cfg);
        state::load(&mut b, &path).unwrap();
        assert_eq!(a.adapted_model().unwrap(), b.adapted_model().unwrap());
        let mut plain = adapter(AdaptConfig::default());
        let err = state::load(&mut plain, &path).unwrap_err().to_string();
        assert!(err.contains("lora.safetensors") && err.contains("lora_a"), "{err}");
    }

    /// Issue #5: the state file round-trips; a truncated one (or one from another model) is
    /// rejected with a message naming it, and the adapter keeps its source weights.
    #[test]
    fn issue5_state_file_round_trips_and_a_truncated_one_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("adapt.safetensors");
        let unguarded = AdaptConfig {
            guard: GuardConfig {
                enabled: false,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut a = adapter(unguarded);
        for f in samples() {
            a.observe(&f).unwrap();
            a.step().unwrap();
        }
        assert_eq!(a.check().unwrap(), Verdict::Pass);
        state::save(&a, &path).unwrap();
        let saved = values(a.published());
        assert_eq!(saved, values(&a.snapshot().unwrap()), "what passed is what is saved");

        let mut b = adapter(AdaptConfig::default());
        let source = values(&b.snapshot().unwrap());
        assert_ne!(source, saved);
        assert_eq!(state::load(&mut b, &path).unwrap(), 3);
        assert_eq!(values(&b.snapshot().unwrap()), saved);
        assert_eq!(b.stats.steps, 3);
        // the loaded weights are what the adapted graph computes with
        let fuse_bias = |m: &seg_onnx::pb::ModelProto| {
            let g = m.graph.as_ref().unwrap();
            let t = g
                .initializer
                .iter()
                .find(|t| t.name == "decoder.fuse.conv.bias")
                .unwrap();
            seg_onnx::tensor_to_f32(t).unwrap()
        };
        let adapted = fuse_bias(&b.adapted_model().unwrap());
        assert_eq!(adapted, fuse_bias(&a.adapted_model().unwrap()));
        assert_ne!(
            adapted,
            fuse_bias(&adapter(AdaptConfig::default()).adapted_model().unwrap())
        );

        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 100]).unwrap();
        let mut c = adapter(AdaptConfig::default());
        let e = state::load(&mut c, &cut).unwrap_err().to_string();
        assert!(e.contains("cut.safetensors") && e.contains("truncated"), "{e}");
        assert_eq!(values(&c.snapshot().unwrap()), source, "source weights kept");
        std::fs::write(&cut, &bytes[..5]).unwrap();
        assert!(state::load(&mut c, &cut).is_err());
        assert_eq!(values(&c.snapshot().unwrap()), source);

        // a state adapted from another model
        let other = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../assets/models/camvid-edge.onnx"
        ))
        .unwrap();
        let mut d = Adapter::new(&other, "edge", AdaptConfig::default()).unwrap();
        let e = state::load(&mut d, &path).unwrap_err().to_string();
        assert!(e.contains("another model"), "{e}");
    }

    /// Issue #5 (`input_norm`): it needs source frames; the published graph normalises each
    /// frame itself, as the adapter does before its encoder, and at α = 1 a dark frame gets the
    /// source frames' colour statistics.
    #[test]
    fn issue5_input_norm_is_published_in_the_graph() {
        let e = Adapter::new(
            crate::SMALL_MODEL,
            "m",
            AdaptConfig {
                input_norm: 0.5,
                ..Default::default()
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("input_norm > 0 needs guard.source_frames"), "{e}");
        // off: the published graph is the source graph
        let plain = adapter(AdaptConfig::default());
        assert!(plain.input_norm.is_none());
        assert_eq!(plain.adapted_model().unwrap(), plain.source);
        let dir = tempfile::tempdir().unwrap();
        for (i, (_, b)) in crate::DEFAULT_SAMPLES.iter().enumerate() {
            std::fs::write(dir.path().join(format!("day_{i}.png")), b).unwrap();
        }
        let a = adapter(AdaptConfig {
            input_norm: 1.0,
            guard: GuardConfig {
                source_frames: Some(dir.path().to_path_buf()),
                ..Default::default()
            },
            ..Default::default()
        });
        let mut dark = samples()[0].clone();
        dark.pixels_mut()
            .for_each(|p| p.0 = [p.0[0] / 4, p.0[1] / 3, p.0[2] / 3]);
        let img = a.fit(&dark);
        let x = normalize(&img, a.meta.mean, a.meta.std);
        let mut xn = x.clone();
        a.frame_affine(&img).apply(&mut xn);
        let norm = a.input_norm.unwrap();
        let (m, s) = input_norm::channel_stats(&xn);
        for c in 0..3 {
            assert!((m[c] - norm.mean[c]).abs() < 1e-3 && (s[c] - norm.std[c]).abs() < 1e-3);
        }
        let (h, w) = (a.meta.input_hw.0 as usize, a.meta.input_hw.1 as usize);
        let run = |model: &seg_onnx::pb::ModelProto, x: Vec<f32>| -> Vec<f32> {
            let plan = crate::backend::tract::plan(model, [1, 3, h, w]).unwrap();
            let t = tract_ndarray::Array4::from_shape_vec([1, 3, h, w], x)
                .unwrap()
                .into_tensor();
            let out = plan.run(tvec!(t.into())).unwrap();
            out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
        };
        let published = run(&a.adapted_model().unwrap(), x.clone());
        let by_hand = run(&a.source, xn);
        let raw = run(&a.source, x);
        let diff = |p: &[f32], q: &[f32]| p.iter().zip(q).map(|(p, q)| (p - q).abs()).fold(0.0f32, f32::max);
        // the graph reduces in f32, the adapter in f64: equal up to float noise, which is small
        // against what the normalisation changes
        let (noise, effect) = (diff(&published, &by_hand), diff(&published, &raw));
        assert!(noise < 0.05 && noise < 0.01 * effect, "noise {noise}, effect {effect}");
    }

    /// Bad settings and a file that is not a model: errors naming the problem.
    #[test]
    fn adapter_rejects_bad_settings_and_bad_models() {
        let bad = AdaptConfig {
            crop: [100, 128],
            ..Default::default()
        };
        let e = Adapter::new(crate::SMALL_MODEL, "m", bad).err().unwrap().to_string();
        assert!(e.contains("multiples of 32"), "{e}");
        let e = Adapter::new(b"not onnx", "x.onnx", AdaptConfig::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("x.onnx"), "{e}");
    }

    /// Issue #5: the source-frame monitor sees forgetting that the recent-frame monitors are
    /// blind to (here they are switched off); a bad source folder is a one-line error naming it.
    #[test]
    fn issue5_source_frames_catch_forgetting() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (_, b)) in crate::DEFAULT_SAMPLES.iter().enumerate() {
            std::fs::write(dir.path().join(format!("day_{i}.png")), b).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not a frame").unwrap();
        let guard = GuardConfig {
            min_agreement: 0.0,
            max_drift: 1.0,
            min_entropy_ratio: 0.0,
            source_frames: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let mut a = adapter(AdaptConfig {
            guard: guard.clone(),
            train_classifier: true,
            ..Default::default()
        });
        a.observe(&samples()[0]).unwrap();
        assert_eq!(a.check().unwrap(), Verdict::Pass);
        let m = a.stats.monitors.unwrap();
        assert_eq!((m.source_agreement, m.source_iou), (Some(1.0), Some(1.0)));
        assert!(
            a.stats.status().contains("src-agree 1.000 src-iou 1.000"),
            "{}",
            a.stats.status()
        );
        // a degradation the loosened recent-frame monitors let through
        bump_bias(&a, 0, 30.0);
        let why = match a.check().unwrap() {
            Verdict::RolledBack(why) => why,
            v => panic!("expected a rollback, got {v:?}"),
        };
        assert!(why.contains("source frames"), "{why}");
        assert!(a.stats.monitors.unwrap().agreement < 0.5);

        let empty = tempfile::tempdir().unwrap();
        let cfg = |d: &std::path::Path| AdaptConfig {
            guard: GuardConfig {
                source_frames: Some(d.to_path_buf()),
                ..Default::default()
            },
            ..Default::default()
        };
        let e = Adapter::new(crate::SMALL_MODEL, "m", cfg(empty.path()))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains(&empty.path().display().to_string()) && e.contains("no .png"),
            "{e}"
        );
        std::fs::write(empty.path().join("broken.png"), b"\x89PNG truncated").unwrap();
        let e = Adapter::new(crate::SMALL_MODEL, "m", cfg(empty.path()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("broken.png") && !e.contains('\n'), "{e}");
    }

    /// Source replay fits the source model's labels on the source frames: after a
    /// degradation, replay steps alone (no consistency terms) win back agreement with the
    /// source there. Without source frames the setting is refused.
    #[test]
    fn issue5_source_replay_restores_agreement() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (_, b)) in crate::DEFAULT_SAMPLES.iter().enumerate() {
            std::fs::write(dir.path().join(format!("day_{i}.png")), b).unwrap();
        }
        let cfg = AdaptConfig {
            replay_weight: 1.0,
            dc_weight: 0.0,
            pseudo_weight: 0.0,
            train_classifier: true,
            lr: 0.1,
            guard: GuardConfig {
                source_frames: Some(dir.path().to_path_buf()),
                ..Default::default()
            },
            ..Default::default()
        };
        let mut a = adapter(cfg.clone());
        a.observe(&samples()[0]).unwrap();
        bump_bias(&a, 0, 5.0);
        let agree = |a: &Adapter| a.monitors().unwrap().unwrap().source_agreement.unwrap();
        let before = agree(&a);
        assert!(before < 0.9, "the bump should hurt agreement: {before}");
        for _ in 0..10 {
            a.step().unwrap();
        }
        let after = agree(&a);
        assert!(
            after > before + 0.05,
            "replay did not restore agreement: {before} -> {after}"
        );

        let e = Adapter::new(
            crate::SMALL_MODEL,
            "m",
            AdaptConfig {
                guard: GuardConfig::default(),
                ..cfg
            },
        )
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("replay_weight") && e.contains("source_frames"), "{e}");
    }

    /// The anchor pull moves a perturbed value back toward its source value (a regression: the
    /// source snapshot used to keep a backprop edge to the variable, which cancelled the
    /// gradient).
    #[test]
    fn issue5_anchor_pull_moves_values_back_to_the_source() {
        let cfg = AdaptConfig {
            anchor_weight: 100.0,
            dc_weight: 0.0,
            pseudo_weight: 0.0,
            momentum: 0.0,
            lr: 0.002,
            ..Default::default()
        };
        let mut a = adapter(cfg);
        a.observe(&samples()[0]).unwrap();
        let (_, v) = a.trainable().into_iter().next().unwrap();
        v.set(&(v.as_tensor() + 0.1).unwrap()).unwrap();
        let loss = a.step().unwrap().unwrap();
        let c = v.elem_count() as f64;
        assert!((loss - 100.0 * 0.01 * c).abs() < 1e-3 * loss, "{loss}");
        // d/dθ 100 (θ − θ0)² = 20 at θ − θ0 = 0.1; one SGD step at lr 0.002 takes 0.04 off
        let after: Vec<f32> = v.as_tensor().to_vec1().unwrap();
        assert!(after.iter().all(|&x| (x - 1.06).abs() < 1e-4), "{:?}", &after[..3]);
    }
}
