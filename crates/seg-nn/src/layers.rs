//! Plain layer structs: `new(cfg, vb)` + `forward`, each with an ONNX emitter beside it so the
//! exported graph cannot drift from the trained one. Weight names equal ONNX initializer names.

use candle_core::{Result, Tensor, Var, D};
use candle_nn::{Init, VarBuilder};
use seg_onnx::{Attr, GraphBuilder};

/// Output length of a convolution along one axis.
pub fn conv_out(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad - k) / stride + 1
}

fn to_vec(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

pub use crate::fused::Act;

/// How a convolution pads its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `p` zeros on every side (the ResNet-lite encoder and the decoder use `k / 2`).
    Symmetric(usize),
    /// TensorFlow's "SAME": output `ceil(n / s)`, the padding split with the extra pixel after
    /// (asymmetric on stride 2 for even sizes) — what the EfficientNet-Lite ImageNet weights
    /// were trained with. Computed from the input size at each call and written into the ONNX
    /// `pads` at export, where the size is fixed.
    TfSame,
}

impl Padding {
    /// `(before, after)` along an axis of `len` for kernel `k` and stride `s`.
    pub fn along(self, len: usize, k: usize, s: usize) -> (usize, usize) {
        match self {
            Padding::Symmetric(p) => (p, p),
            Padding::TfSame => {
                let out = len.div_ceil(s.max(1));
                let total = ((out.max(1) - 1) * s + k).saturating_sub(len);
                (total / 2, total - total / 2)
            }
        }
    }

    /// `[top, left, bottom, right]` for an input of `(h, w)`.
    pub fn pads(self, (h, w): (usize, usize), k: usize, s: usize) -> [usize; 4] {
        let (t, b) = self.along(h, k, s);
        let (l, r) = self.along(w, k, s);
        [t, l, b, r]
    }
}

/// A 2-D convolution: dense (`group = 1`) or depthwise (`group = c_in = c_out`).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    /// 1 for every dense convolution; depthwise ones may be dilated.
    dilation: usize,
    padding: Padding,
    groups: usize,
    name: String,
}

impl Conv2d {
    /// `[c_out, c_in, k, k]` kernel named `<prefix>.weight` (+ `<prefix>.bias`), padded by
    /// `k / 2` on every side.
    pub fn new(c_in: usize, c_out: usize, k: usize, stride: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        Self::padded(c_in, c_out, k, stride, bias, Padding::Symmetric(k / 2), vb)
    }

    /// A dense convolution with the given padding.
    pub fn padded(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        bias: bool,
        padding: Padding,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get_with_hints((c_out, c_in, k, k), "weight", Init::Const(0.0))?;
        let bias = if bias {
            Some(vb.get_with_hints(c_out, "bias", Init::Const(0.0))?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            stride,
            dilation: 1,
            padding,
            groups: 1,
            name: vb.prefix(),
        })
    }

    /// A depthwise convolution without bias: one `k×k` filter per channel, `[c, 1, k, k]`, its
    /// taps `dilation` pixels apart (1: adjacent).
    pub fn depthwise(
        c: usize,
        k: usize,
        stride: usize,
        dilation: usize,
        padding: Padding,
        vb: VarBuilder,
    ) -> Result<Self> {
        if dilation == 0 {
            candle_core::bail!("{}: dilation must be at least 1", vb.prefix());
        }
        let weight = vb.get_with_hints((c, 1, k, k), "weight", Init::Const(0.0))?;
        Ok(Self {
            weight,
            bias: None,
            stride,
            dilation,
            padding,
            groups: c,
            name: vb.prefix(),
        })
    }

    /// `[b, c_in, h, w] -> [b, c_out, h', w']`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, _, h, w) = x.dims4()?;
        let pads = self.padding.pads((h, w), self.span(), self.stride);
        let y = if self.groups > 1 {
            crate::depthwise::depthwise_conv2d(x, &self.weight, self.stride, self.dilation, pads)?
        // [b, c, h', w']
        } else if pads.iter().all(|&p| p == pads[0]) {
            crate::conv::conv2d(x, &self.weight, pads[0], self.stride)? // [b, c_out, h', w']
        } else {
            let xp = x
                .pad_with_zeros(2, pads[0], pads[2])?
                .pad_with_zeros(3, pads[1], pads[3])?;
            crate::conv::conv2d(&xp, &self.weight, 0, self.stride)?
        };
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, (), 1, 1))?),
            None => Ok(y),
        }
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.weight.dims()[1] * self.groups
    }

    /// Kernel size.
    pub fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    /// Dilation (1 except in dilated depthwise convolutions).
    pub fn dilation(&self) -> usize {
        self.dilation
    }

    /// The pixels one kernel window covers along an axis: `(k − 1) · dilation + 1` (what the
    /// padding and the output size are computed from).
    pub fn span(&self) -> usize {
        (self.kernel().max(1) - 1) * self.dilation + 1
    }

    /// Groups (1, or the channel count for a depthwise convolution).
    pub fn groups(&self) -> usize {
        self.groups
    }

    /// The kernel `[c_out, c_in / groups, k, k]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// Spatial output size for an input of `(h, w)`.
    pub fn out_hw(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let k = self.span();
        let [t, l, b, r] = self.padding.pads((h, w), k, self.stride);
        (
            (h + t + b).saturating_sub(k) / self.stride + 1,
            (w + l + r).saturating_sub(k) / self.stride + 1,
        )
    }

    /// Emits an ONNX `Conv` for an input of spatial size `hw`, with the weights optionally
    /// scaled per output channel and shifted (used to fold BatchNorm): `w' = w · scale[o]`,
    /// `b' = b · scale[o] + shift[o]`.
    fn emit_scaled(
        &self,
        g: &mut GraphBuilder,
        x: &str,
        hw: (usize, usize),
        scale: Option<(&[f32], &[f32])>,
    ) -> Result<String> {
        let dims: Vec<i64> = self.weight.dims().iter().map(|&d| d as i64).collect();
        let mut w = to_vec(&self.weight)?;
        let c_out = dims[0] as usize;
        let per = w.len() / c_out;
        let mut b = match &self.bias {
            Some(b) => to_vec(b)?,
            None => vec![0.0; c_out],
        };
        if let Some((s, t)) = scale {
            for o in 0..c_out {
                w[o * per..(o + 1) * per].iter_mut().for_each(|v| *v *= s[o]);
                b[o] = b[o] * s[o] + t[o];
            }
        }
        let wn = g.init_f32(&format!("{}.weight", self.name), &dims, &w);
        let bn = g.init_f32(&format!("{}.bias", self.name), &[c_out as i64], &b);
        let k = dims[2];
        let pads = self.padding.pads(hw, self.span(), self.stride).map(|p| p as i64);
        let d = self.dilation as i64;
        let s = self.stride as i64;
        let out = format!("{}.out", self.name);
        Ok(g.node(
            "Conv",
            &[x, &wn, &bn],
            &out,
            &[
                ("kernel_shape", Attr::Ints(vec![k, k])),
                ("strides", Attr::Ints(vec![s, s])),
                // ONNX order: [top, left, bottom, right] = [x1_begin, x2_begin, x1_end, x2_end]
                ("pads", Attr::Ints(pads.to_vec())),
                ("dilations", Attr::Ints(vec![d, d])),
                ("group", Attr::Int(self.groups as i64)),
            ],
        ))
    }

    /// Emits this convolution as an ONNX `Conv` node for an input of spatial size `hw`;
    /// returns the output name.
    pub fn emit(&self, g: &mut GraphBuilder, x: &str, hw: (usize, usize)) -> Result<String> {
        self.emit_scaled(g, x, hw, None)
    }
}

/// Momentum of every [`BatchNorm`]'s running statistics: `running ← (1 − m) running + m batch`
/// (PyTorch's default). `edge-seg-train adabn` reads a batch's statistics back through it.
pub const BN_MOMENTUM: f64 = 0.1;

/// Batch normalisation over `[b, c, h, w]`, with running statistics updated in training mode.
#[derive(Debug, Clone)]
pub struct BatchNorm {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    eps: f64,
    momentum: f64,
}

impl BatchNorm {
    /// `weight`, `bias`, `running_mean`, `running_var` of `c` channels, ε = 1e-5.
    pub fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Self::with_eps(c, 1e-5, vb)
    }

    /// The same with another ε (EfficientNet-Lite's weights come with 1e-3).
    pub fn with_eps(c: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints(c, "weight", Init::Const(1.0))?;
        let bias = vb.get_with_hints(c, "bias", Init::Const(0.0))?;
        let running_mean = Var::from_tensor(&vb.get_with_hints(c, "running_mean", Init::Const(0.0))?)?;
        let running_var = Var::from_tensor(&vb.get_with_hints(c, "running_var", Init::Const(1.0))?)?;
        Ok(Self {
            weight,
            bias,
            running_mean,
            running_var,
            eps,
            momentum: BN_MOMENTUM,
        })
    }

    /// Training mode normalises with the batch statistics (and updates the running ones);
    /// evaluation mode uses the running statistics.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.forward_act_t(x, train, Act::None)
    }

    /// [`Self::forward_t`] followed by the activation `act`; on CPU, training mode runs as one
    /// fused op ([`crate::fused`]).
    pub fn forward_act_t(&self, x: &Tensor, train: bool, act: Act) -> Result<Tensor> {
        let c = x.dim(1)?;
        let n = (x.elem_count() / c) as f64;
        let unbias = n / (n - 1.0).max(1.0);
        if train && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
            let (y, mean, var) = crate::fused::batch_norm_train(x, &self.weight, &self.bias, self.eps, act)?;
            let dev = x.device();
            self.update_running(&Tensor::new(mean, dev)?, &(Tensor::new(var, dev)? * unbias)?)?;
            return Ok(y);
        }
        let (centered, var) = if train {
            let mean = x.mean_keepdim((0, 2, 3))?; // [1, c, 1, 1]
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim((0, 2, 3))?; // biased, [1, c, 1, 1]
            self.update_running(&mean.detach().flatten_all()?, &(var.detach().flatten_all()? * unbias)?)?;
            (centered, var)
        } else {
            (
                x.broadcast_sub(&self.running_mean.as_tensor().reshape((1, c, 1, 1))?)?,
                self.running_var.as_tensor().reshape((1, c, 1, 1))?,
            )
        };
        let inv = (var + self.eps)?.sqrt()?.recip()?;
        let scale = inv.broadcast_mul(&self.weight.reshape((1, c, 1, 1))?)?;
        let y = centered
            .broadcast_mul(&scale)?
            .broadcast_add(&self.bias.reshape((1, c, 1, 1))?)?; // [b, c, h, w]
        match act {
            Act::None => Ok(y),
            Act::Relu => y.relu(),
            Act::Relu6 => y.clamp(0f32, 6f32),
        }
    }

    /// `running ← (1 − m) running + m batch` for the mean and the unbiased variance `[c]`.
    fn update_running(&self, mean: &Tensor, unbiased_var: &Tensor) -> Result<()> {
        let m = self.momentum;
        self.running_mean
            .set(&((self.running_mean.as_tensor() * (1.0 - m))? + (mean * m)?)?)?;
        self.running_var
            .set(&((self.running_var.as_tensor() * (1.0 - m))? + (unbiased_var * m)?)?)
    }

    /// Per-channel `(scale, shift)` so that `bn(x) = scale · x + shift` in evaluation mode.
    pub fn affine(&self) -> Result<(Vec<f32>, Vec<f32>)> {
        let g = to_vec(&self.weight)?;
        let b = to_vec(&self.bias)?;
        let m = to_vec(self.running_mean.as_tensor())?;
        let v = to_vec(self.running_var.as_tensor())?;
        let scale: Vec<f32> = g
            .iter()
            .zip(&v)
            .map(|(g, v)| g / (v + self.eps as f32).sqrt())
            .collect();
        let shift = b.iter().zip(&m).zip(&scale).map(|((b, m), s)| b - m * s).collect();
        Ok((scale, shift))
    }
}

/// Emits the activation `act` after `y` (`Relu`, or `Clip(0, 6)` for ReLU6) named after
/// `prefix`; returns the output name.
pub fn emit_act(g: &mut GraphBuilder, y: &str, prefix: &str, act: Act) -> String {
    match act {
        Act::None => y.to_string(),
        Act::Relu => g.node("Relu", &[y], &format!("{prefix}.relu"), &[]),
        Act::Relu6 => {
            let lo = g.init_f32(&format!("{prefix}.clip_min"), &[], &[0.0]);
            let hi = g.init_f32(&format!("{prefix}.clip_max"), &[], &[6.0]);
            g.node("Clip", &[y, &lo, &hi], &format!("{prefix}.relu6"), &[])
        }
    }
}

/// Convolution → BatchNorm → activation; exported as a single folded `Conv` (+ `Relu`/`Clip`).
#[derive(Debug, Clone)]
pub struct ConvBn {
    /// The convolution (`<prefix>.conv`).
    pub conv: Conv2d,
    /// Its batch norm (`<prefix>.bn`).
    pub bn: BatchNorm,
    act: Act,
}

impl ConvBn {
    /// A `k×k` conv without bias (padding `k / 2`), its BN and an optional ReLU.
    pub fn new(c_in: usize, c_out: usize, k: usize, stride: usize, relu: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(c_in, c_out, k, stride, false, vb.pp("conv"))?,
            bn: BatchNorm::new(c_out, vb.pp("bn"))?,
            act: if relu { Act::Relu } else { Act::None },
        })
    }

    /// A convolution, its batch norm and the activation after them.
    pub fn from_parts(conv: Conv2d, bn: BatchNorm, act: Act) -> Self {
        Self { conv, bn, act }
    }

    /// `[b, c_in, h, w] -> [b, c_out, h/stride, w/stride]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_act_t(&self.conv.forward(x)?, train, self.act)
    }

    /// Emits the BN-folded conv (and its activation) for an input of spatial size `hw`.
    pub fn emit(&self, g: &mut GraphBuilder, x: &str, hw: (usize, usize)) -> Result<String> {
        let (s, t) = self.bn.affine()?;
        let y = self.conv.emit_scaled(g, x, hw, Some((&s, &t)))?;
        Ok(emit_act(g, &y, &self.conv.name, self.act))
    }
}

/// A ResNet basic block: two 3×3 ConvBn with a (projected when needed) shortcut.
#[derive(Debug, Clone)]
pub struct BasicBlock {
    conv1: ConvBn,
    conv2: ConvBn,
    down: Option<ConvBn>,
    name: String,
}

impl BasicBlock {
    /// `c_in -> c_out` with the given stride.
    pub fn new(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Self> {
        let down = if stride != 1 || c_in != c_out {
            Some(ConvBn::new(c_in, c_out, 1, stride, false, vb.pp("down"))?)
        } else {
            None
        };
        Ok(Self {
            conv1: ConvBn::new(c_in, c_out, 3, stride, true, vb.pp("conv1"))?,
            conv2: ConvBn::new(c_out, c_out, 3, 1, false, vb.pp("conv2"))?,
            down,
            name: vb.prefix(),
        })
    }

    /// `[b, c_in, h, w] -> [b, c_out, h/s, w/s]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.conv2.forward_t(&self.conv1.forward_t(x, train)?, train)?;
        let short = match &self.down {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        (y + short)?.relu()
    }

    /// Spatial output size.
    pub fn out_hw(&self, hw: (usize, usize)) -> (usize, usize) {
        self.conv1.conv.out_hw(hw)
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.conv2.conv.out_channels()
    }

    /// Emits the block for an input of spatial size `hw`.
    pub fn emit(&self, g: &mut GraphBuilder, x: &str, hw: (usize, usize)) -> Result<String> {
        let y = self.conv1.emit(g, x, hw)?;
        let y = self.conv2.emit(g, &y, self.out_hw(hw))?;
        let short = match &self.down {
            Some(d) => d.emit(g, x, hw)?,
            None => x.to_string(),
        };
        let sum = g.node("Add", &[&y, &short], &format!("{}.add", self.name), &[]);
        Ok(g.node("Relu", &[&sum], &format!("{}.out", self.name), &[]))
    }
}

/// Emits an ONNX `Resize` (linear, half-pixel) to a fixed `[b, c, h, w]`, the exported twin of
/// [`crate::bilinear::resize`].
pub fn emit_resize(g: &mut GraphBuilder, x: &str, out: &str, size: [usize; 4]) -> String {
    let sizes = g.init_i64(&format!("{out}.sizes"), &[4], &size.map(|v| v as i64));
    g.node(
        "Resize",
        &[x, "", "", &sizes],
        out,
        &[
            ("mode", Attr::Str("linear".into())),
            ("coordinate_transformation_mode", Attr::Str("half_pixel".into())),
        ],
    )
}

/// Mean over the last two axes keeping them: `[b, c, h, w] -> [b, c, 1, 1]`.
pub fn global_avg_pool(x: &Tensor) -> Result<Tensor> {
    x.mean_keepdim(D::Minus1)?.mean_keepdim(D::Minus2)
}
