//! 2-D convolution as `im2col` + one matrix product, with a `col2im` backward, for CPU training.
//!
//! candle 0.11's CPU `conv2d` backward computes the input gradient with `conv_transpose2d`, a
//! direct loop of dot products that is several times slower than the forward pass. Here the
//! convolution is `W [c_out, c_in·k·k] · cols [c_in·k·k, b·h'·w']`: its gradients are matrix
//! products too (candle's `matmul` backward) and the input gradient is `col2im` of
//! `Wᵀ · grad`, a scatter-add. [`Im2Col`]'s gradient is checked against finite differences in
//! the tests. Other devices keep candle's own convolution.

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

fn out_len(len: usize, k: usize, stride: usize, pad: usize) -> usize {
    (len + 2 * pad - k) / stride + 1
}

/// `[b, c, h, w] -> [c·k·k, b·h'·w']`: row `(ci·k + ky)·k + kx`, column `(bi·h' + oy)·w' + ox`
/// holds `x[bi, ci, oy·s + ky − p, ox·s + kx − p]` (0 outside the image).
#[derive(Debug, Clone, Copy)]
pub struct Im2Col {
    /// Kernel size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
}

/// The adjoint of [`Im2Col`] for an input of `[b, c, h, w]`: sums every column entry back into
/// the pixel it was copied from.
#[derive(Debug, Clone, Copy)]
pub struct Col2Im {
    /// The [`Im2Col`] it inverts.
    pub op: Im2Col,
    /// Batch, channels, height and width of the image side.
    pub bchw: [usize; 4],
}

impl Im2Col {
    /// For each output row `oy` and kernel row `ky`, the input row (or `None` in padding); same
    /// along x.
    fn taps(&self, len: usize, out: usize) -> Vec<Option<usize>> {
        let mut t = Vec::with_capacity(out * self.k);
        for o in 0..out {
            for kk in 0..self.k {
                let i = (o * self.stride + kk) as isize - self.padding as isize;
                t.push((i >= 0 && (i as usize) < len).then_some(i as usize));
            }
        }
        t
    }
}

/// The f32 values of a contiguous CPU storage (`op` names the caller in errors).
pub(crate) fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: only f32 is supported");
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, "im2col")?;
        let (b, c, h, w) = layout.shape().dims4()?;
        let (k, oh, ow) = (
            self.k,
            out_len(h, self.k, self.stride, self.padding),
            out_len(w, self.k, self.stride, self.padding),
        );
        let (ty, tx) = (self.taps(h, oh), self.taps(w, ow));
        let n = b * oh * ow;
        let mut cols = vec![0f32; c * k * k * n];
        crate::fused::par_rows(&mut cols, n, n, |row, dst| {
            let (ci, ky, kx) = (row / (k * k), (row / k) % k, row % k);
            for bi in 0..b {
                let img = &x[(bi * c + ci) * h * w..(bi * c + ci + 1) * h * w];
                for oy in 0..oh {
                    let Some(iy) = ty[oy * k + ky] else { continue };
                    let src = &img[iy * w..(iy + 1) * w];
                    let d = &mut dst[(bi * oh + oy) * ow..(bi * oh + oy + 1) * ow];
                    for (ox, v) in d.iter_mut().enumerate() {
                        if let Some(ix) = tx[ox * k + kx] {
                            *v = src[ix];
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(cols), Shape::from((c * k * k, n))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let (b, c, h, w) = arg.dims4()?;
        let g = grad_res.contiguous()?.apply_op1_no_bwd(&Col2Im {
            op: *self,
            bchw: [b, c, h, w],
        })?;
        Ok(Some(g))
    }
}

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let cols = contiguous_f32(storage, layout, "col2im")?;
        let [b, c, h, w] = self.bchw;
        let op = self.op;
        let (k, oh, ow) = (
            op.k,
            out_len(h, op.k, op.stride, op.padding),
            out_len(w, op.k, op.stride, op.padding),
        );
        let n = b * oh * ow;
        if layout.shape().dims() != [c * k * k, n] {
            candle_core::bail!("col2im: got {:?}, expected [{}, {n}]", layout.shape().dims(), c * k * k);
        }
        let (ty, tx) = (op.taps(h, oh), op.taps(w, ow));
        let mut x = vec![0f32; b * c * h * w];
        // one image plane (batch, channel) per call: it gathers from the k·k rows of its channel
        crate::fused::par_rows(&mut x, h * w, k * k * oh * ow, |plane, img| {
            let (bi, ci) = (plane / c, plane % c);
            for ky in 0..k {
                for kx in 0..k {
                    let src = &cols[((ci * k + ky) * k + kx) * n..][..n];
                    for oy in 0..oh {
                        let Some(iy) = ty[oy * k + ky] else { continue };
                        let dst = &mut img[iy * w..(iy + 1) * w];
                        let s = &src[(bi * oh + oy) * ow..(bi * oh + oy + 1) * ow];
                        for (ox, v) in s.iter().enumerate() {
                            if let Some(ix) = tx[ox * k + kx] {
                                dst[ix] += v;
                            }
                        }
                    }
                }
            }
        });
        Ok((CpuStorage::F32(x), Shape::from((b, c, h, w))))
    }
}

/// The sizes of one convolution, checked: input `[b, c, h, w]`, kernel `[co, c, k, k]`, output
/// `oh × ow`.
struct Geometry {
    b: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    k: usize,
    oh: usize,
    ow: usize,
}

impl Geometry {
    fn of(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Self> {
        let (b, c, h, w) = x.dims4()?;
        let (co, ci, k, k2) = weight.dims4()?;
        if ci != c || k != k2 {
            candle_core::bail!(
                "conv2d: input {:?} and kernel {:?} do not match",
                x.dims(),
                weight.dims()
            );
        }
        let (oh, ow) = (out_len(h, k, stride, padding), out_len(w, k, stride, padding));
        Ok(Self {
            b,
            c,
            h,
            w,
            co,
            k,
            oh,
            ow,
        })
    }
}

/// `x [b, c_in, h, w] ⊛ w [c_out, c_in, k, k] -> [b, c_out, h', w']` (no bias, no dilation,
/// one group): `im2col` + one matrix product on CPU, [`conv2d_matmul`] elsewhere (CUDA).
pub fn conv2d(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return conv2d_matmul(x, weight, padding, stride);
    }
    let Geometry {
        b, c, co, k, oh, ow, ..
    } = Geometry::of(x, weight, padding, stride)?;
    if k == 1 && stride == 1 && padding == 0 {
        // a pointwise convolution is already a matrix product per image: no im2col copy and no
        // transpose back (the MBConv blocks' expand and project layers)
        let y = weight
            .reshape((co, c))?
            .broadcast_matmul(&x.contiguous()?.reshape((b, c, oh * ow))?)?; // [b, c_out, h·w]
        return y.reshape((b, co, oh, ow));
    }
    let cols = x.contiguous()?.apply_op1(Im2Col { k, stride, padding })?; // [c·k·k, b·oh·ow]
    let y = weight.reshape((co, c * k * k))?.matmul(&cols)?; // [c_out, b·oh·ow]
    y.reshape((co, b, oh, ow))?.transpose(0, 1)?.contiguous() // [b, c_out, oh, ow]
}

/// The convolution of [`conv2d`] as matrix products from candle's own differentiable ops, for
/// any device: a pointwise convolution is one batched product `W [c_out, c_in] · x [b, c_in,
/// h·w]`; a `k×k` one first gathers the `k²` shifted views of the padded input
/// (`depthwise::tap_views`) into patches `[b, c_in·k·k, h'·w']`. Forward and backward
/// are then matrix products (cuBLAS on a GPU) and copies, where candle's own CUDA `conv2d`
/// takes its input gradient through a direct transposed-convolution kernel.
pub fn conv2d_matmul(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (co, wc, k, _) = weight.dims4()?;
    if wc != c {
        candle_core::bail!("conv2d: {c} input channels but a kernel for {wc}");
    }
    if k == 1 && stride == 1 && padding == 0 {
        let y = weight
            .reshape((co, c))?
            .broadcast_matmul(&x.contiguous()?.reshape((b, c, h * w))?)?; // [b, c_out, h·w]
        return y.reshape((b, co, h, w));
    }
    let p = padding;
    let (taps, oh, ow) = crate::depthwise::tap_views(x, k, stride, 1, [p, p, p, p])?;
    let taps = taps
        .iter()
        .map(|t| t.reshape((b, c, 1, oh * ow)))
        .collect::<Result<Vec<_>>>()?; // k² × [b, c, 1, oh·ow]
    let cols = Tensor::cat(&taps, 2)?.reshape((b, c * k * k, oh * ow))?; // [b, c·k·k, oh·ow]
    let y = weight.reshape((co, c * k * k))?.broadcast_matmul(&cols)?; // [b, c_out, oh·ow]
    y.reshape((b, co, oh, ow))
}

/// [`conv2d`] without a gradient, for frozen layers on CPU: the patches are laid out one row per
/// output pixel, `[b·h'·w', c_in·k·k]`, and multiplied by `Wᵀ`: candle's matrix product is
/// faster in that orientation when c_out is small next to the pixel count (the adaptation
/// head's last convolution: 3.3 against 5.9 ms on one thread, `benches/benches/conv.rs`). The
/// columns keep [`Im2Col`]'s order, so the sums are the same as [`conv2d`]'s. The result is
/// detached.
pub fn conv2d_frozen(x: &Tensor, weight: &Tensor, padding: usize, stride: usize) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return x.detach().conv2d(&weight.detach(), padding, stride, 1, 1);
    }
    let Geometry {
        b,
        c,
        h,
        w,
        co,
        k,
        oh,
        ow,
    } = Geometry::of(x, weight, padding, stride)?;
    let op = Im2Col { k, stride, padding };
    let (ty, tx) = (op.taps(h, oh), op.taps(w, ow));
    // channels last, so that each tap reads its c values in one run
    let xs = x.detach().permute((0, 2, 3, 1))?.flatten_all()?.to_vec1::<f32>()?; // [b, h, w, c]
    let ckk = c * k * k;
    let mut rows = vec![0f32; b * oh * ow * ckk];
    crate::fused::par_rows(&mut rows, ckk, ckk, |pixel, dst| {
        let (bi, oy, ox) = (pixel / (oh * ow), (pixel / ow) % oh, pixel % ow);
        for ky in 0..k {
            let Some(iy) = ty[oy * k + ky] else { continue };
            for kx in 0..k {
                let Some(ix) = tx[ox * k + kx] else { continue };
                let src = &xs[((bi * h + iy) * w + ix) * c..][..c];
                // the column order of [`Im2Col`], (channel, ky, kx): the same sums as conv2d
                for (cc, &v) in src.iter().enumerate() {
                    dst[(cc * k + ky) * k + kx] = v;
                }
            }
        }
    });
    let rows = Tensor::from_vec(rows, (b * oh * ow, ckk), x.device())?;
    let y = rows.matmul(&weight.detach().reshape((co, ckk))?.t()?)?; // [b·oh·ow, c_out]
    y.reshape((b, oh, ow, co))?.permute((0, 3, 1, 2))?.contiguous() // [b, c_out, oh, ow]
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        crate::fused::tests::vals(n, seed, 1.0, 0.0)
    }

    /// Same values as candle's own convolution, for strides 1 and 2, kernels 1 and 3, odd sizes.
    #[test]
    fn matches_candle_conv2d() {
        let dev = Device::Cpu;
        for (b, c, co, h, w, k, s) in [
            (2, 3, 4, 7, 9, 3, 1),
            (2, 3, 5, 8, 11, 3, 2),
            (1, 4, 2, 5, 6, 1, 1),
            (3, 2, 3, 9, 7, 1, 2),
            (3, 5, 7, 4, 6, 1, 1),
        ] {
            let x = Tensor::from_vec(values(b * c * h * w, 1), (b, c, h, w), &dev).unwrap();
            let wt = Tensor::from_vec(values(co * c * k * k, 2), (co, c, k, k), &dev).unwrap();
            let want = x.conv2d(&wt, k / 2, s, 1, 1).unwrap();
            for (name, got) in [
                ("conv2d", conv2d(&x, &wt, k / 2, s).unwrap()),
                ("conv2d_frozen", conv2d_frozen(&x, &wt, k / 2, s).unwrap()),
                ("conv2d_matmul", conv2d_matmul(&x, &wt, k / 2, s).unwrap()),
            ] {
                assert_eq!(got.dims(), want.dims());
                let d = crate::max_abs_diff(&got, &want).unwrap();
                assert!(d < 1e-5, "{name} {b} {c} {co} {h} {w} {k} {s}: {d}");
            }
        }
    }

    /// The device-generic path (what CUDA runs), on CPU: both gradients equal the CPU op's
    /// (itself checked against finite differences below), for kernels 1 and 3 at strides 1 and 2.
    #[test]
    fn matmul_path_gradients_match_the_cpu_op() {
        let dev = Device::Cpu;
        for (b, c, co, h, w, k, s) in [
            (2, 3, 4, 7, 9, 3, 1),
            (2, 3, 5, 8, 11, 3, 2),
            (1, 4, 2, 5, 6, 1, 1),
            (3, 2, 3, 9, 7, 1, 2),
        ] {
            let x = Var::from_vec(values(b * c * h * w, 3), (b, c, h, w), &dev).unwrap();
            let wt = Var::from_vec(values(co * c * k * k, 4), (co, c, k, k), &dev).unwrap();
            let y1 = conv2d_matmul(x.as_tensor(), wt.as_tensor(), k / 2, s).unwrap();
            let y2 = conv2d(x.as_tensor(), wt.as_tensor(), k / 2, s).unwrap();
            let wts = Tensor::from_vec(values(y1.elem_count(), 5), y1.dims(), &dev).unwrap();
            let g1 = (y1 * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (y2 * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [&x, &wt] {
                let d = crate::max_abs_diff(g1.get(v).unwrap(), g2.get(v).unwrap()).unwrap();
                assert!(d < 1e-4, "{b} {c} {co} {h} {w} {k} {s}: gradient {d}");
            }
        }
    }

    /// The gradients (input and kernel) against central finite differences of a weighted sum.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let (b, c, co, h, w) = (2, 2, 3, 5, 6);
        // (kernel, stride, padding): the im2col path, strided, and the pointwise fast path
        for (k, s, pad) in [(3, 1, 1), (3, 2, 1), (1, 1, 0)] {
            let x0 = values(b * c * h * w, 3);
            let w0 = values(co * c * k * k, 4);
            let oh = out_len(h, k, s, pad);
            let ow = out_len(w, k, s, pad);
            let weights = Tensor::from_vec(values(b * co * oh * ow, 5), (b, co, oh, ow), &dev).unwrap();
            let f = |xv: &[f32], wv: &[f32]| -> f32 {
                let x = Tensor::from_vec(xv.to_vec(), (b, c, h, w), &dev).unwrap();
                let wt = Tensor::from_vec(wv.to_vec(), (co, c, k, k), &dev).unwrap();
                (conv2d(&x, &wt, pad, s).unwrap() * &weights)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let x = Var::from_vec(x0.clone(), (b, c, h, w), &dev).unwrap();
            let wt = Var::from_vec(w0.clone(), (co, c, k, k), &dev).unwrap();
            let loss = (conv2d(x.as_tensor(), wt.as_tensor(), pad, s).unwrap() * &weights)
                .unwrap()
                .sum_all()
                .unwrap();
            let g = loss.backward().unwrap();
            let gx = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let gw = g.get(&wt).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let eps = 1e-2;
            for i in (0..x0.len()).step_by(3) {
                let (mut p, mut m) = (x0.clone(), x0.clone());
                p[i] += eps;
                m[i] -= eps;
                let num = (f(&p, &w0) - f(&m, &w0)) / (2.0 * eps);
                assert!((num - gx[i]).abs() < 2e-3, "s{s} dx[{i}]: {num} vs {}", gx[i]);
            }
            for i in 0..w0.len() {
                let (mut p, mut m) = (w0.clone(), w0.clone());
                p[i] += eps;
                m[i] -= eps;
                let num = (f(&x0, &p) - f(&x0, &m)) / (2.0 * eps);
                assert!((num - gw[i]).abs() < 2e-3, "s{s} dw[{i}]: {num} vs {}", gw[i]);
            }
        }
    }
}
