//! The exported model's decoder and classifier as a light, trainable head: the part on-device
//! adaptation (issue #5) trains while the encoder stays frozen (its features can come from the
//! f32 or int8 graph in tract).
//!
//! The exported graph has BatchNorm folded into its convolutions, so the head is rebuilt from
//! the ONNX initializers (names as in the export: `decoder.aspp.b1.conv.weight`, …): every
//! decoder convolution is frozen and followed by a trainable per-channel affine `γ · y + β`
//! (initialised to the identity — the head starts as the source model), and the classifier is
//! trainable. That is BatchNorm's affine part, TENT's choice of parameters, plus the last layer:
//! a few hundred values, cheap to train, and foldable back into the graph
//! ([`AdaptHead::folded`]) so the inference path keeps its plain convolutions.
//!
//! [`AdaptHead::with_low_rank`] adds the other light option: a low-rank update `ΔW = B · A` of
//! the last decoder convolution's kernel (LoRA), `A` seeded at random, `B` zero, so the head
//! still starts as the source model. It folds into the same kernel.

use std::collections::HashMap;

use candle_core::{Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::model::{decoder_graph, DecoderConv, DecoderKind, TensorOps};
use crate::ModelConfig;

/// Why a model with another decoder cannot be adapted on the device.
pub const UNSUPPORTED_DECODER: &str =
    "on-device adaptation needs the deeplab_lite decoder; this model has another (lraspp): adapt a deeplab_lite model";

/// The exported weight `key`, or an error naming it.
fn initializer(weights: &HashMap<String, Tensor>, key: &str) -> Result<Tensor> {
    weights
        .get(key)
        .cloned()
        .ok_or_else(|| candle_core::Error::Msg(format!("the model has no initializer '{key}'")))
}

/// A frozen convolution with bias and its trainable per-channel affine.
#[derive(Debug, Clone)]
struct AffineConv {
    name: String,
    weight: Tensor,
    bias: Tensor,
    gamma: Var,
    beta: Var,
    relu: bool,
    low_rank: Option<LowRank>,
}

/// A low-rank update of a frozen convolution's kernel: `ΔW = B · A`, computed as the
/// convolution with `A` (`[r, c_in, k, k]`) followed by the 1×1 convolution with `B`
/// (`[c_out, r, 1, 1]`).
#[derive(Debug, Clone)]
struct LowRank {
    a: Var,
    b: Var,
}

impl LowRank {
    /// `A` Kaiming-normal from `seed` (`std = sqrt(2 / fan_in)`, as a fresh convolution), `B`
    /// zero: `ΔW = 0`.
    fn new(weight: &Tensor, rank: usize, seed: u64) -> Result<Self> {
        let (co, ci, k, k2) = weight.dims4()?;
        let fan_in = ci * k * k2;
        let std = (2.0 / fan_in as f64).sqrt() as f32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let a: Vec<f32> = (0..rank * fan_in)
            .map(|_| std * crate::init::normal(&mut rng))
            .collect();
        let dev = weight.device();
        Ok(Self {
            a: Var::from_tensor(&Tensor::from_vec(a, (rank, ci, k, k2), dev)?)?,
            b: Var::zeros((co, rank, 1, 1), candle_core::DType::F32, dev)?,
        })
    }

    /// `ΔW` as a kernel, `[c_out, c_in, k, k]`.
    fn delta(&self) -> Result<Tensor> {
        let (r, ci, k, k2) = self.a.dims4()?;
        let co = self.b.dim(0)?;
        self.b
            .as_tensor()
            .reshape((co, r))?
            .matmul(&self.a.as_tensor().reshape((r, ci * k * k2))?)?
            .reshape((co, ci, k, k2))
    }

    /// `x [b, c_in, h, w] -> ΔW ⊛ x [b, c_out, h, w]` (stride 1, same padding).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.a.dim(2)?;
        let t = crate::conv::conv2d(x, self.a.as_tensor(), k / 2, 1)?; // [b, r, h, w]
        crate::conv::conv2d(&t, self.b.as_tensor(), 0, 1) // [b, c_out, h, w]
    }
}

impl AffineConv {
    fn new(weights: &HashMap<String, Tensor>, name: &str, relu: bool, dev: &Device) -> Result<Self> {
        let (weight, bias) = (
            initializer(weights, &format!("{name}.weight"))?,
            initializer(weights, &format!("{name}.bias"))?,
        );
        let c = weight.dim(0)?;
        Ok(Self {
            name: name.to_string(),
            weight,
            bias,
            gamma: Var::ones(c, candle_core::DType::F32, dev)?,
            beta: Var::zeros(c, candle_core::DType::F32, dev)?,
            relu,
            low_rank: None,
        })
    }

    /// `[b, c_in, h, w] -> [b, c_out, h, w]` (stride 1, same padding).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.affine(&self.with_low_rank(self.conv(x)?, x)?)
    }

    /// `y + ΔW ⊛ x` with a low-rank update, else `y`.
    fn with_low_rank(&self, y: Tensor, x: &Tensor) -> Result<Tensor> {
        match &self.low_rank {
            Some(lr) => y + lr.forward(x)?, // [b, c_out, h, w]
            None => Ok(y),
        }
    }

    /// The frozen part: convolution + bias, `[b, c_in, h, w] -> [b, c_out, h, w]`.
    fn conv(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let k = self.weight.dim(2)?;
        crate::conv::conv2d(x, &self.weight, k / 2, 1)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }

    /// [`Self::conv`] without a gradient (the input is treated as constant).
    fn conv_frozen(&self, x: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let k = self.weight.dim(2)?;
        crate::conv::conv2d_frozen(x, &self.weight, k / 2, 1)?.broadcast_add(&self.bias.reshape((1, c, 1, 1))?)
    }

    /// The trainable part on the convolution's output: `γ · y + β`, then the ReLU if any.
    fn affine(&self, y: &Tensor) -> Result<Tensor> {
        let c = self.weight.dim(0)?;
        let y = y
            .broadcast_mul(&self.gamma.as_tensor().reshape((1, c, 1, 1))?)?
            .broadcast_add(&self.beta.as_tensor().reshape((1, c, 1, 1))?)?; // [b, c_out, h, w]
        if self.relu {
            y.relu()
        } else {
            Ok(y)
        }
    }

    /// `((weight + ΔW) · γ[o], bias · γ + β)`.
    fn folded(&self) -> Result<[(String, Tensor); 2]> {
        let c = self.weight.dim(0)?;
        let g = self.gamma.as_tensor();
        let weight = match &self.low_rank {
            Some(lr) => (&self.weight + lr.delta()?)?,
            None => self.weight.clone(),
        };
        Ok([
            (
                format!("{}.weight", self.name),
                weight.broadcast_mul(&g.reshape((c, 1, 1, 1))?)?,
            ),
            (
                format!("{}.bias", self.name),
                ((&self.bias * g)? + self.beta.as_tensor())?,
            ),
        ])
    }
}

/// What the head computes.
#[derive(Debug, Clone)]
pub struct HeadOutput {
    /// Class scores at stride 4, `[b, C, h, w]`.
    pub logits_low: Tensor,
    /// Decoder pixel embedding before the classifier, `[b, d, h, w]`.
    pub embedding: Tensor,
}

/// The last decoder convolution on one input, as far as it does not depend on a trainable
/// value ([`AdaptHead::fuse_conv`]): a caller that evaluates the same input again keeps it and
/// goes on with [`AdaptHead::forward_from_fuse_conv`].
#[derive(Debug, Clone)]
pub struct FuseConv {
    /// The frozen convolution's output with its bias, before the affine, `[b, d, h, w]`.
    pub conv: Tensor,
    /// Its input, `[b, a + l, h, w]`, kept only when a low-rank update needs it.
    pub input: Option<Tensor>,
}

/// Which part of the head trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadScope {
    /// The affine after every decoder convolution, and the classifier.
    #[default]
    Decoder,
    /// Only the affine after the last decoder convolution (`decoder.fuse.conv`) and the
    /// classifier: the backward pass stops at the fused features, several times cheaper.
    Last,
}

/// Decoder + classifier of an exported edge-seg model with trainable affines (see the module
/// doc). Input: the encoder's low-level (`[b, w1, H/4, W/4]`) and high-level
/// (`[b, w4, H/32, W/32]`) features. Its convolutions, their shapes and activations, and the
/// graph between them are the model's own ([`DecoderConv`], [`decoder_graph`]): nothing of the
/// decoder is stated here again.
#[derive(Debug, Clone)]
pub struct AdaptHead {
    /// One per convolution of `deeplab_lite` ([`DecoderKind::convs`]), in that order (so
    /// indexed by `DecoderConv as usize`).
    convs: Vec<AffineConv>,
    classifier_w: Var,
    classifier_b: Var,
    scope: HeadScope,
    train_classifier: bool,
}

/// Whether initializer `names` are those of an LR-ASPP decoder (which the head does not support).
pub fn is_lraspp<'a>(mut names: impl Iterator<Item = &'a String>) -> bool {
    let gate = format!("{}.weight", DecoderConv::LrCbr.name());
    names.any(|n| *n == gate)
}

impl AdaptHead {
    /// Builds the head from the exported initializers (by name, f32 tensors on `dev`). The
    /// architecture is fixed by the export; every kernel's shape is checked against what `cfg`
    /// gives the model's decoder for the encoder channels the export shows.
    pub fn new(cfg: &ModelConfig, weights: &HashMap<String, Tensor>, dev: &Device) -> Result<Self> {
        if cfg.decoder != DecoderKind::DeeplabLite {
            candle_core::bail!("{}", UNSUPPORTED_DECODER);
        }
        let convs = DecoderKind::DeeplabLite
            .convs()
            .iter()
            .map(|w| AffineConv::new(weights, &w.name(), w.relu(), dev))
            .collect::<Result<Vec<_>>>()?;
        let head = Self {
            convs,
            classifier_w: Var::from_tensor(&initializer(weights, "classifier.weight")?)?,
            classifier_b: Var::from_tensor(&initializer(weights, "classifier.bias")?)?,
            scope: HeadScope::Decoder,
            train_classifier: true,
        };
        let enc = (
            head.conv(DecoderConv::Low).weight.dim(1)?,
            head.conv(DecoderConv::AsppB1).weight.dim(1)?,
        );
        for &which in DecoderKind::DeeplabLite.convs() {
            let (co, ci, k) = which.shape(cfg, enc);
            let got = head.conv(which).weight.dims();
            if got != [co, ci, k, k] {
                candle_core::bail!(
                    "the model's '{}.weight' has shape {got:?}, where an edge-seg decoder with {} ASPP, {} low-level and {} decoder channels has {:?}",
                    which.name(),
                    cfg.aspp_channels,
                    cfg.low_channels,
                    cfg.decoder_channels,
                    [co, ci, k, k]
                );
            }
        }
        let got = head.classifier_w.dims();
        let want = [cfg.num_classes, cfg.decoder_channels, 1, 1];
        if got != want {
            candle_core::bail!("the model's 'classifier.weight' has shape {got:?}, the config wants {want:?}");
        }
        Ok(head)
    }

    /// The decoder's part of the model config read off exported initializers (classes, ASPP,
    /// low-level and decoder widths; the encoder fields keep their defaults, the head does not
    /// use them), for a model whose config is not at hand.
    pub fn config_of(weights: &HashMap<String, Tensor>) -> Result<ModelConfig> {
        if is_lraspp(weights.keys()) {
            candle_core::bail!("{}", UNSUPPORTED_DECODER);
        }
        let c_out = |name: String| initializer(weights, &format!("{name}.weight"))?.dim(0);
        Ok(ModelConfig {
            num_classes: c_out("classifier".into())?,
            aspp_channels: c_out(DecoderConv::AsppProj.name())?,
            low_channels: c_out(DecoderConv::Low.name())?,
            decoder_channels: c_out(DecoderConv::Fuse.name())?,
            ..ModelConfig::default()
        })
    }

    fn conv(&self, which: DecoderConv) -> &AffineConv {
        &self.convs[which as usize]
    }

    fn fuse(&self) -> &AffineConv {
        self.conv(DecoderConv::Fuse)
    }

    /// The head training only `scope` (the other affines keep their values and get no
    /// gradient).
    pub fn with_scope(mut self, scope: HeadScope) -> Self {
        self.scope = scope;
        self
    }

    /// The head with a rank-`rank` update of the last decoder convolution's kernel (see the
    /// module doc), trainable in every scope; `A` is drawn from `seed`. Rank 0: none.
    pub fn with_low_rank(mut self, rank: usize, seed: u64) -> Result<Self> {
        let fuse = &mut self.convs[DecoderConv::Fuse as usize];
        fuse.low_rank = match rank {
            0 => None,
            r => Some(LowRank::new(&fuse.weight, r, seed)?),
        };
        Ok(self)
    }

    /// The head with the classifier trainable (default) or frozen (only affines train).
    pub fn with_classifier(mut self, train: bool) -> Self {
        self.train_classifier = train;
        self
    }

    /// Which part trains.
    pub fn scope(&self) -> HeadScope {
        self.scope
    }

    /// Convolution `which` with its affine (and low-rank update): with [`HeadScope::Last`] the
    /// last one gets no gradient into its input, since nothing before it trains.
    fn conv_forward(&self, which: DecoderConv, x: &Tensor) -> Result<Tensor> {
        let c = self.conv(which);
        if which == DecoderConv::Fuse && self.scope == HeadScope::Last {
            return c.affine(&c.with_low_rank(c.conv_frozen(x)?, x)?);
        }
        c.forward(x)
    }

    /// The model's decoder graph on this head's convolutions.
    fn ops(&self) -> TensorOps<impl FnMut(DecoderConv, &Tensor) -> Result<Tensor> + '_> {
        TensorOps(move |which, x: &Tensor| self.conv_forward(which, x))
    }

    /// `(low [b, w1, h4, w4], high [b, w4, h32, w32]) -> HeadOutput` at stride 4.
    pub fn forward(&self, low: &Tensor, high: &Tensor) -> Result<HeadOutput> {
        let (_, _, h4, w4) = low.dims4()?;
        let embedding = decoder_graph::decode(&mut self.ops(), low, high, (h4, w4))?; // [b, d, h4, w4]
        self.classify(embedding)
    }

    /// From the ASPP output (`[b, a, h32, w32]`) and the low-level projection (`[b, l, h4, w4]`)
    /// — e.g. computed by the frozen graph in another runtime when the scope is
    /// [`HeadScope::Last`] — to the `HeadOutput`.
    pub fn forward_from_aspp(&self, aspp: &Tensor, low: &Tensor) -> Result<HeadOutput> {
        let (_, _, h4, w4) = low.dims4()?;
        let mut ops = self.ops();
        let cat = decoder_graph::fuse_input_from_aspp(&mut ops, aspp, low, (h4, w4))?; // [b, a + l, h4, w4]
        let embedding = decoder_graph::fuse(&mut ops, &cat)?; // [b, d, h4, w4]
        self.classify(embedding)
    }

    /// [`HeadScope::Last`]: the part of the last decoder convolution that does not depend on any
    /// trainable value ([`FuseConv`]), from the ASPP output and the low-level projection as in
    /// [`Self::forward_from_aspp`]. A caller that evaluates the same input again can keep it and
    /// go on with [`Self::forward_from_fuse_conv`], skipping the convolution.
    pub fn fuse_conv(&self, aspp: &Tensor, low: &Tensor) -> Result<FuseConv> {
        let (_, _, h4, w4) = low.dims4()?;
        let cat = decoder_graph::fuse_input_from_aspp(&mut self.ops(), aspp, low, (h4, w4))?; // [b, a + l, h4, w4]
        Ok(FuseConv {
            conv: self.fuse().conv_frozen(&cat)?,
            input: self.fuse().low_rank.is_some().then_some(cat),
        })
    }

    /// From [`Self::fuse_conv`]'s output: the low-rank update if any, the affine, ReLU and
    /// classifier.
    pub fn forward_from_fuse_conv(&self, pre: &FuseConv) -> Result<HeadOutput> {
        let fuse = self.fuse();
        let y = match (&fuse.low_rank, &pre.input) {
            (Some(_), Some(cat)) => fuse.with_low_rank(pre.conv.clone(), cat)?, // [b, d, h4, w4]
            (Some(_), None) => candle_core::bail!("the head has a low-rank update, the kept convolution has no input"),
            (None, _) => pre.conv.clone(),
        };
        self.classify(fuse.affine(&y)?)
    }

    /// The classifier on the embedding `[b, d, h4, w4]`.
    fn classify(&self, embedding: Tensor) -> Result<HeadOutput> {
        let c = self.classifier_w.dim(0)?;
        let logits_low = crate::conv::conv2d(&embedding, self.classifier_w.as_tensor(), 0, 1)?
            .broadcast_add(&self.classifier_b.as_tensor().reshape((1, c, 1, 1))?)?; // [b, C, h4, w4]
        Ok(HeadOutput { logits_low, embedding })
    }

    /// The trainable variables of the scope, by name (`<conv>.gamma`, `<conv>.beta`, the
    /// low-rank update's `decoder.fuse.conv.lora_a` and `lora_b`, `classifier.weight`,
    /// `classifier.bias`).
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut v = Vec::new();
        for &which in DecoderKind::DeeplabLite.convs() {
            if self.scope == HeadScope::Last && which != DecoderConv::Fuse {
                continue;
            }
            let c = self.conv(which);
            v.push((format!("{}.gamma", c.name), c.gamma.clone()));
            v.push((format!("{}.beta", c.name), c.beta.clone()));
        }
        if let Some(lr) = &self.fuse().low_rank {
            let name = &self.fuse().name;
            v.push((format!("{name}.lora_a"), lr.a.clone()));
            v.push((format!("{name}.lora_b"), lr.b.clone()));
        }
        if self.train_classifier {
            v.push(("classifier.weight".into(), self.classifier_w.clone()));
            v.push(("classifier.bias".into(), self.classifier_b.clone()));
        }
        v
    }

    /// Sets the trainable variables from `state` (names as in [`Self::trainable`]: all present,
    /// none other, same shapes).
    pub fn load(&self, state: &HashMap<String, Tensor>) -> Result<()> {
        let trainable = self.trainable();
        let mut extra: Vec<&String> = state
            .keys()
            .filter(|k| !trainable.iter().any(|(n, _)| n == *k))
            .collect();
        if !extra.is_empty() {
            extra.sort();
            candle_core::bail!(
                "adapted state has {extra:?}, which this head does not train (adapted with other settings?)"
            );
        }
        for (name, var) in trainable {
            let t = state
                .get(&name)
                .ok_or_else(|| candle_core::Error::Msg(format!("adapted state has no '{name}'")))?;
            if t.dims() != var.dims() {
                candle_core::bail!(
                    "adapted state '{name}' has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            // a state read from a file is on the CPU; the head may learn on a GPU
            var.set(&t.to_device(var.device())?)?;
        }
        Ok(())
    }

    /// The head's weights as the exported graph names them, with the affines folded into the
    /// convolutions: what replaces the graph's initializers to run the adapted model.
    pub fn folded(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::new();
        for c in &self.convs {
            out.extend(c.folded()?);
        }
        out.push(("classifier.weight".into(), self.classifier_w.as_tensor().clone()));
        out.push(("classifier.bias".into(), self.classifier_b.as_tensor().clone()));
        Ok(out)
    }
}
