//! Depthwise 2-D convolution (one `k×k` filter per channel, ONNX `Conv` with `group = c`) as a
//! CPU op with a hand-written backward, for the MBConv blocks of EfficientNet-Lite, and a
//! device-generic form of candle ops for CUDA ([`depthwise_taps`]).
//!
//! candle 0.11 runs a grouped convolution as one convolution per group, each through im2col:
//! for a depthwise layer that is `c` tiny matrix products per call and its backward is slower
//! still. Here the forward, the input gradient and the kernel gradient are each one direct loop
//! over the image planes (parallel over planes, or over channels for the kernel gradient), whose
//! inner loop runs along a row so that it vectorises at stride 1.
//!
//! Padding is given per side (`[top, left, bottom, right]`) so that TensorFlow's "SAME" padding,
//! asymmetric on stride 2 (the ImageNet weights were trained with it), is exact. The tests
//! compare the values with candle's grouped convolution and both gradients with finite
//! differences.

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

use crate::conv::contiguous_f32;
use crate::fused::par_rows;

/// The geometry of one depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depthwise {
    /// Kernel size (square).
    pub k: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Dilation (both axes): tap `kk` reads `kk · dilation` pixels from the window's start
    /// (1: a plain convolution; 2 in the last stages of an encoder run at output stride 16).
    pub dilation: usize,
    /// Zero padding `[top, left, bottom, right]`.
    pub pads: [usize; 4],
}

impl Depthwise {
    /// Output size for an input of `h × w`; an error when the kernel does not fit.
    pub fn out_hw(&self, h: usize, w: usize) -> Result<(usize, usize)> {
        let [t, l, b, r] = self.pads;
        let (ph, pw) = (h + t + b, w + l + r);
        let span = self.span();
        if self.k == 0 || self.dilation == 0 || ph < span || pw < span || self.stride == 0 {
            candle_core::bail!(
                "depthwise conv: kernel {} dilation {} stride {} does not fit a {h}x{w} input padded by {:?}",
                self.k,
                self.dilation,
                self.stride,
                self.pads
            );
        }
        Ok(((ph - span) / self.stride + 1, (pw - span) / self.stride + 1))
    }

    /// The pixels one kernel window covers along an axis: `(k − 1) · dilation + 1`.
    pub fn span(&self) -> usize {
        (self.k.max(1) - 1) * self.dilation + 1
    }

    /// For output index `o` and tap `kk`, the input index along an axis of `len` (or `None` in
    /// the padding): `o · s + kk · d − pad_before`.
    fn tap(&self, o: usize, kk: usize, before: usize, len: usize) -> Option<usize> {
        let i = (o * self.stride + kk * self.dilation) as isize - before as isize;
        (i >= 0 && (i as usize) < len).then_some(i as usize)
    }

    /// The output columns `ox` whose tap `kx` lands inside a row of `len` pixels: `[lo, hi)`.
    fn valid_cols(&self, kx: usize, len: usize, ow: usize) -> (usize, usize) {
        let l = self.pads[1];
        let s = self.stride;
        // the tap's offset in the padded row
        let kx = kx * self.dilation;
        // ox·s + kx − l ≥ 0  ⇔  ox ≥ ceil((l − kx) / s)
        let lo = if kx >= l { 0 } else { (l - kx).div_ceil(s) };
        // ox·s + kx − l ≤ len − 1  ⇔  ox ≤ (len − 1 + l − kx) / s
        let hi = if len + l < kx + 1 {
            0
        } else {
            ((len - 1 + l - kx) / s + 1).min(ow)
        };
        (lo.min(hi), hi)
    }
}

/// `Σ a·b` over equal-length slices in 8 independent f32 lanes (a plain `s += a * b` loop is one
/// serial chain the compiler may not reorder, so it does not vectorise; the kernel gradient's
/// rows spent most of their time there).
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for ((s, &p), &q) in lanes.iter_mut().zip(x).zip(y) {
            *s += p * q;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `x [b, c, h, w]`, kernel `[c, 1, k, k]` → `[b, c, oh, ow]`.
impl CustomOp2 for Depthwise {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "depthwise-conv2d")?;
        let wt = contiguous_f32(s2, l2, "depthwise-conv2d")?;
        let (b, c, h, w) = l1.shape().dims4()?;
        let (co, one, k, k2) = l2.shape().dims4()?;
        if co != c || one != 1 || k != self.k || k2 != self.k {
            candle_core::bail!(
                "depthwise conv: kernel {:?} does not fit input {:?} (k = {})",
                l2.shape().dims(),
                l1.shape().dims(),
                self.k
            );
        }
        let (oh, ow) = self.out_hw(h, w)?;
        let mut y = vec![0f32; b * c * oh * ow];
        par_rows(&mut y, oh * ow, oh * ow * k * k, |plane, out| {
            let ci = plane % c;
            let img = &x[plane * h * w..(plane + 1) * h * w];
            let ker = &wt[ci * k * k..(ci + 1) * k * k];
            for oy in 0..oh {
                let orow = &mut out[oy * ow..(oy + 1) * ow];
                for ky in 0..k {
                    let Some(iy) = self.tap(oy, ky, self.pads[0], h) else {
                        continue;
                    };
                    let irow = &img[iy * w..(iy + 1) * w];
                    for kx in 0..k {
                        let wv = ker[ky * k + kx];
                        let (lo, hi) = self.valid_cols(kx, w, ow);
                        if lo >= hi {
                            continue;
                        }
                        // first input column of this tap
                        let i0 = lo * self.stride + kx * self.dilation - self.pads[1];
                        if self.stride == 1 {
                            let src = &irow[i0..i0 + (hi - lo)];
                            for (o, &v) in orow[lo..hi].iter_mut().zip(src) {
                                *o += wv * v;
                            }
                        } else {
                            for (j, o) in orow[lo..hi].iter_mut().enumerate() {
                                *o += wv * irow[i0 + j * self.stride];
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), Shape::from((b, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, wt: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (b, c, h, w) = x.dims4()?;
        let dx = grad.apply_op2_no_bwd(
            &wt.contiguous()?,
            &DepthwiseInputGrad {
                op: *self,
                bchw: [b, c, h, w],
            },
        )?;
        let dw = x
            .contiguous()?
            .apply_op2_no_bwd(&grad, &DepthwiseKernelGrad { op: *self })?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `dy [b, c, oh, ow]`, kernel `[c, 1, k, k]` → `dx [b, c, h, w]`: the transpose of
/// [`Depthwise`]'s forward.
#[derive(Debug, Clone, Copy)]
struct DepthwiseInputGrad {
    op: Depthwise,
    bchw: [usize; 4],
}

impl CustomOp2 for DepthwiseInputGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-input-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let dy = contiguous_f32(s1, l1, "depthwise input grad")?;
        let wt = contiguous_f32(s2, l2, "depthwise input grad")?;
        let [b, c, h, w] = self.bchw;
        let op = self.op;
        let k = op.k;
        let (oh, ow) = op.out_hw(h, w)?;
        if l1.shape().dims() != [b, c, oh, ow] {
            candle_core::bail!("depthwise input grad: got {:?}", l1.shape().dims());
        }
        let mut dx = vec![0f32; b * c * h * w];
        par_rows(&mut dx, h * w, oh * ow * k * k, |plane, img| {
            let ci = plane % c;
            let g = &dy[plane * oh * ow..(plane + 1) * oh * ow];
            let ker = &wt[ci * k * k..(ci + 1) * k * k];
            for oy in 0..oh {
                let grow = &g[oy * ow..(oy + 1) * ow];
                for ky in 0..k {
                    let Some(iy) = op.tap(oy, ky, op.pads[0], h) else {
                        continue;
                    };
                    let irow = &mut img[iy * w..(iy + 1) * w];
                    for kx in 0..k {
                        let wv = ker[ky * k + kx];
                        let (lo, hi) = op.valid_cols(kx, w, ow);
                        if lo >= hi {
                            continue;
                        }
                        let i0 = lo * op.stride + kx * op.dilation - op.pads[1];
                        if op.stride == 1 {
                            for (d, &v) in irow[i0..i0 + (hi - lo)].iter_mut().zip(&grow[lo..hi]) {
                                *d += wv * v;
                            }
                        } else {
                            for (j, &v) in grow[lo..hi].iter().enumerate() {
                                irow[i0 + j * op.stride] += wv * v;
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(dx), Shape::from((b, c, h, w))))
    }
}

/// `x [b, c, h, w]`, `dy [b, c, oh, ow]` → `dw [c, 1, k, k]`.
#[derive(Debug, Clone, Copy)]
struct DepthwiseKernelGrad {
    op: Depthwise,
}

impl CustomOp2 for DepthwiseKernelGrad {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-kernel-grad"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "depthwise kernel grad")?;
        let dy = contiguous_f32(s2, l2, "depthwise kernel grad")?;
        let (b, c, h, w) = l1.shape().dims4()?;
        let op = self.op;
        let k = op.k;
        let (oh, ow) = op.out_hw(h, w)?;
        if l2.shape().dims() != [b, c, oh, ow] {
            candle_core::bail!("depthwise kernel grad: got {:?}", l2.shape().dims());
        }
        let mut dw = vec![0f32; c * k * k];
        // one channel per call: its k·k sums over the batch and the output pixels
        par_rows(&mut dw, k * k, b * oh * ow * k * k, |ci, out| {
            let mut acc = vec![0f64; k * k];
            for bi in 0..b {
                let plane = bi * c + ci;
                let img = &x[plane * h * w..(plane + 1) * h * w];
                let g = &dy[plane * oh * ow..(plane + 1) * oh * ow];
                for oy in 0..oh {
                    let grow = &g[oy * ow..(oy + 1) * ow];
                    for ky in 0..k {
                        let Some(iy) = op.tap(oy, ky, op.pads[0], h) else {
                            continue;
                        };
                        let irow = &img[iy * w..(iy + 1) * w];
                        for kx in 0..k {
                            let (lo, hi) = op.valid_cols(kx, w, ow);
                            if lo >= hi {
                                continue;
                            }
                            let i0 = lo * op.stride + kx * op.dilation - op.pads[1];
                            let s = if op.stride == 1 {
                                dot(&irow[i0..i0 + (hi - lo)], &grow[lo..hi])
                            } else {
                                let mut s = 0f32;
                                for (j, &v) in grow[lo..hi].iter().enumerate() {
                                    s += irow[i0 + j * op.stride] * v;
                                }
                                s
                            };
                            acc[ky * k + kx] += s as f64;
                        }
                    }
                }
            }
            for (o, a) in out.iter_mut().zip(&acc) {
                *o = *a as f32;
            }
        });
        Ok((CpuStorage::F32(dw), Shape::from((c, 1, k, k))))
    }
}

/// Depthwise convolution of `x [b, c, h, w]` with `weight [c, 1, k, k]` at `stride` and
/// `dilation`, padded by `pads` (`[top, left, bottom, right]`): the op above on CPU f32,
/// [`depthwise_taps`] elsewhere (CUDA).
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    dilation: usize,
    pads: [usize; 4],
) -> Result<Tensor> {
    let (_, _, k, _) = weight.dims4()?;
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        let op = Depthwise {
            k,
            stride,
            dilation,
            pads,
        };
        return x.contiguous()?.apply_op2(&weight.contiguous()?, op);
    }
    depthwise_taps(x, weight, stride, dilation, pads)
}

/// Depthwise convolution as a sum over the `k²` kernel taps of a shifted (and, at stride `s`,
/// subsampled) view of the padded input times that tap's per-channel weight, written with
/// candle's own differentiable ops (pad, reshape, narrow, broadcast multiply, add), so it runs
/// and trains on any device. candle's grouped convolution would run `c` separate convolutions
/// (up to 1,152 per layer in Lite0, each an im2col and a matrix product, forward and backward);
/// this is `k²` element-wise multiply-adds over the whole tensor, which a GPU runs at memory
/// speed. The values equal [`Depthwise`]'s up to the order of the float sums.
///
/// Subsampling without a strided slice: the padded input `[b, c, H, W]` is extended (or cut)
/// to `[b, c, s·Hq, s·Wq]` and viewed as `[b, c, Hq, s, Wq, s]`; tap `(ky, kx)` of output
/// pixel `(oy, ox)` reads padded row `oy·s + ky = s·(oy + ky / s) + ky % s`, i.e. the view at
/// `[oy + ky / s, ky % s, ox + kx / s, kx % s]`.
pub fn depthwise_taps(x: &Tensor, weight: &Tensor, stride: usize, dilation: usize, pads: [usize; 4]) -> Result<Tensor> {
    let (b, c, _, _) = x.dims4()?;
    let (wc, _, k, _) = weight.dims4()?;
    if wc != c {
        candle_core::bail!("depthwise conv: {c} input channels but a kernel for {wc}");
    }
    let (taps, oh, ow) = tap_views(x, k, stride, dilation, pads)?;
    let wt = weight.reshape((c, k * k))?;
    let mut acc: Option<Tensor> = None;
    for (t, tap) in taps.into_iter().enumerate() {
        let wk = wt.narrow(1, t, 1)?.reshape((1, c, 1, 1, 1, 1))?;
        let term = tap.broadcast_mul(&wk)?; // [b, c, oh, 1, ow, 1]
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    acc.expect("k >= 1").reshape((b, c, oh, ow)) // [b, c, oh, ow]
}

/// The `k²` shifted, subsampled views of `x [b, c, h, w]` that a `k×k` kernel at `stride` and
/// `dilation` with zero padding `pads` reads, in kernel order (`ky·k + kx`), each
/// `[b, c, oh, 1, ow, 1]`, and the output size `(oh, ow)` (see [`depthwise_taps`] for the
/// indexing; with dilation `d` tap `ky` sits `ky·d` rows into the window).
pub(crate) fn tap_views(
    x: &Tensor,
    k: usize,
    stride: usize,
    dilation: usize,
    pads: [usize; 4],
) -> Result<(Vec<Tensor>, usize, usize)> {
    let (b, c, h, w) = x.dims4()?;
    let s = stride;
    let op = Depthwise {
        k,
        stride,
        dilation,
        pads,
    };
    let (oh, ow) = op.out_hw(h, w)?;
    let (hq, wq) = (oh + (op.span() - 1) / s, ow + (op.span() - 1) / s);
    // pad to at least s·hq × s·wq, then cut to exactly that (rows past it are never read)
    let bottom = (s * hq).saturating_sub(h + pads[0]);
    let right = (s * wq).saturating_sub(w + pads[1]);
    let xp = x
        .pad_with_zeros(2, pads[0], bottom)?
        .pad_with_zeros(3, pads[1], right)?
        .narrow(2, 0, s * hq)?
        .narrow(3, 0, s * wq)?
        .contiguous()?
        .reshape((b, c, hq, s, wq, s))?; // [b, c, Hq, s, Wq, s]
    let mut taps = Vec::with_capacity(k * k);
    for ky in 0..k {
        let dy = ky * dilation;
        for kx in 0..k {
            let dx = kx * dilation;
            taps.push(
                xp.narrow(2, dy / s, oh)?
                    .narrow(3, dy % s, 1)?
                    .narrow(4, dx / s, ow)?
                    .narrow(5, dx % s, 1)?, // [b, c, oh, 1, ow, 1]
            );
        }
    }
    Ok((taps, oh, ow))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        crate::fused::tests::vals(n, seed, 1.0, 0.0)
    }

    /// candle's own grouped convolution on explicitly padded input.
    fn reference(x: &Tensor, wt: &Tensor, stride: usize, dilation: usize, pads: [usize; 4]) -> Tensor {
        let c = wt.dim(0).unwrap();
        let xp = x
            .pad_with_zeros(2, pads[0], pads[2])
            .unwrap()
            .pad_with_zeros(3, pads[1], pads[3])
            .unwrap();
        xp.conv2d(wt, 0, stride, dilation, c).unwrap()
    }

    /// (batch, channels, h, w, kernel, stride, dilation, pads)
    type Case = (usize, usize, usize, usize, usize, usize, usize, [usize; 4]);

    const CASES: [Case; 13] = [
        // an even kernel at stride 2 whose last padded row is never read (the tap views cut it)
        (1, 2, 11, 9, 2, 2, 1, [0, 0, 0, 0]),
        // a kernel smaller than the stride on odd sizes
        (2, 2, 7, 5, 1, 2, 1, [0, 0, 0, 0]),
        (2, 3, 7, 9, 3, 1, 1, [1, 1, 1, 1]),
        (2, 3, 8, 10, 3, 2, 1, [0, 0, 1, 1]),
        (1, 4, 9, 11, 5, 2, 1, [2, 2, 2, 2]),
        (2, 2, 8, 8, 5, 2, 1, [1, 1, 2, 2]),
        (1, 2, 6, 5, 5, 1, 1, [2, 2, 2, 2]),
        (3, 2, 4, 3, 3, 1, 1, [0, 0, 0, 0]),
        (1, 3, 5, 7, 3, 2, 1, [1, 0, 1, 2]),
        // dilated (issue #21: the encoder's last stages at output stride 16): TF "SAME" for a
        // 3x3 and a 5x5 at dilation 2, an even kernel at dilation 3, and a strided dilated one
        (2, 3, 9, 10, 3, 1, 2, [2, 2, 2, 2]),
        (1, 2, 11, 12, 5, 1, 2, [4, 4, 4, 4]),
        (2, 2, 8, 7, 2, 1, 3, [0, 0, 0, 0]),
        (1, 2, 10, 9, 3, 2, 2, [1, 2, 2, 1]),
    ];

    #[test]
    fn matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        for (b, c, h, w, k, s, d, pads) in CASES {
            let x = Tensor::from_vec(values(b * c * h * w, 1), (b, c, h, w), &dev).unwrap();
            let wt = Tensor::from_vec(values(c * k * k, 2), (c, 1, k, k), &dev).unwrap();
            let want = reference(&x, &wt, s, d, pads);
            let got = depthwise_conv2d(&x, &wt, s, d, pads).unwrap();
            assert_eq!(got.dims(), want.dims(), "{b} {c} {h} {w} {k} {s} d{d} {pads:?}");
            let diff = crate::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-5, "{b} {c} {h} {w} {k} {s} d{d} {pads:?}: {diff}");
        }
    }

    /// Both gradients against central finite differences of a weighted sum of the output.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        for (b, c, h, w, k, s, d, pads) in CASES {
            let x0 = values(b * c * h * w, 3);
            let w0 = values(c * k * k, 4);
            let op = Depthwise {
                k,
                stride: s,
                dilation: d,
                pads,
            };
            let (oh, ow) = op.out_hw(h, w).unwrap();
            let wts = Tensor::from_vec(values(b * c * oh * ow, 5), (b, c, oh, ow), &dev).unwrap();
            let f = |xv: &[f32], wv: &[f32]| -> f64 {
                let x = Tensor::from_vec(xv.to_vec(), (b, c, h, w), &dev).unwrap();
                let wt = Tensor::from_vec(wv.to_vec(), (c, 1, k, k), &dev).unwrap();
                let y = depthwise_conv2d(&x, &wt, s, d, pads).unwrap();
                (y * &wts).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
            };
            let x = Var::from_vec(x0.clone(), (b, c, h, w), &dev).unwrap();
            let wt = Var::from_vec(w0.clone(), (c, 1, k, k), &dev).unwrap();
            let y = depthwise_conv2d(x.as_tensor(), wt.as_tensor(), s, d, pads).unwrap();
            let g = (y * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let gx = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gw = g.get(&wt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let eps = 1e-2f32;
            for i in 0..x0.len() {
                let (mut p, mut m) = (x0.clone(), x0.clone());
                p[i] += eps;
                m[i] -= eps;
                let num = (f(&p, &w0) - f(&m, &w0)) / (2.0 * eps as f64);
                assert!(
                    (num - gx[i] as f64).abs() < 2e-3,
                    "{pads:?} s{s} d{d} dx[{i}]: {num} vs {}",
                    gx[i]
                );
            }
            for i in 0..w0.len() {
                let (mut p, mut m) = (w0.clone(), w0.clone());
                p[i] += eps;
                m[i] -= eps;
                let num = (f(&x0, &p) - f(&x0, &m)) / (2.0 * eps as f64);
                assert!(
                    (num - gw[i] as f64).abs() < 2e-3,
                    "{pads:?} s{s} d{d} dw[{i}]: {num} vs {}",
                    gw[i]
                );
            }
        }
    }

    /// The device-generic path (what CUDA runs) on CPU: values against candle's grouped
    /// convolution, and both gradients against the CPU op's hand-written backward (itself checked
    /// against finite differences above).
    #[test]
    fn taps_match_the_grouped_conv_and_the_cpu_gradients() {
        let dev = Device::Cpu;
        for (b, c, h, w, k, s, d, pads) in CASES {
            let x = Var::from_vec(values(b * c * h * w, 6), (b, c, h, w), &dev).unwrap();
            let wt = Var::from_vec(values(c * k * k, 7), (c, 1, k, k), &dev).unwrap();
            let want = reference(x.as_tensor(), wt.as_tensor(), s, d, pads);
            let got = depthwise_taps(x.as_tensor(), wt.as_tensor(), s, d, pads).unwrap();
            assert_eq!(got.dims(), want.dims(), "{b} {c} {h} {w} {k} {s} d{d} {pads:?}");
            let diff = crate::max_abs_diff(&got, &want).unwrap();
            assert!(diff < 1e-5, "{b} {c} {h} {w} {k} {s} d{d} {pads:?}: {diff}");
            let wts = Tensor::from_vec(values(got.elem_count(), 8), got.dims(), &dev).unwrap();
            let g_taps = (got * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let y = depthwise_conv2d(x.as_tensor(), wt.as_tensor(), s, d, pads).unwrap();
            let g_op = (y * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt] {
                let diff = crate::max_abs_diff(g_taps.get(v).unwrap(), g_op.get(v).unwrap()).unwrap();
                assert!(diff < 1e-4, "{pads:?} s{s} d{d} gradient: {diff}");
            }
        }
    }

    #[test]
    fn a_kernel_larger_than_the_padded_input_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 2, 2), candle_core::DType::F32, &dev).unwrap();
        let wt = Tensor::zeros((2, 1, 5, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(depthwise_conv2d(&x, &wt, 1, 1, [0, 0, 0, 0]).is_err());
        assert!(depthwise_conv2d(&x, &wt, 0, 1, [2, 2, 2, 2]).is_err());
        assert!(depthwise_taps(&x, &wt, 1, 1, [0, 0, 0, 0]).is_err());
        assert!(depthwise_taps(&x, &wt, 0, 1, [2, 2, 2, 2]).is_err());
        let empty = Tensor::zeros((2, 1, 0, 0), candle_core::DType::F32, &dev).unwrap();
        assert!(depthwise_taps(&x, &empty, 1, 1, [0, 0, 0, 0]).is_err());
        // a 3x3 at dilation 2 spans 5 pixels: more than 2 + 1 + 1; dilation 0 is no kernel
        let w3 = Tensor::zeros((2, 1, 3, 3), candle_core::DType::F32, &dev).unwrap();
        assert!(depthwise_conv2d(&x, &w3, 1, 1, [1, 1, 1, 1]).is_ok());
        assert!(depthwise_conv2d(&x, &w3, 1, 2, [1, 1, 1, 1]).is_err());
        assert!(depthwise_taps(&x, &w3, 1, 2, [1, 1, 1, 1]).is_err());
        assert!(depthwise_conv2d(&x, &w3, 1, 0, [1, 1, 1, 1]).is_err());
    }
}
