//! Training-mode BatchNorm (+ optional ReLU) as one CPU op with a hand-written backward.
//!
//! Written with candle's primitives, training BatchNorm is a dozen passes over the activation
//! (reductions over the batch and spatial axes, broadcasts, their gradients), each allocating a
//! tensor: in a profile of a training step they cost more than the convolutions. Here the forward
//! is one pass for the statistics and one for the output; the backward one pass for the two
//! per-channel sums and one for the input gradient, using the textbook formulas
//!
//! `x̂ = (x − μ) / σ`, `y = γ x̂ + β`,
//! `∂β = Σ dy`, `∂γ = Σ dy · x̂`, `∂x = γ / (σ N) · (N dy − ∂β − x̂ ∂γ)`
//!
//! (σ² the biased batch variance + ε, sums over batch and pixels of a channel, `dy` masked by
//! `y > 0` when a ReLU follows, by `0 < y < 6` for ReLU6). The tests compare values and all three gradients with the same
//! layer written with candle's differentiable ops, and with finite differences.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

/// The op: batch statistics are computed before it is applied (see [`batch_norm_train`]) and
/// kept here for the backward pass.
#[derive(Debug, Clone)]
pub struct BnTrain {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    act: Act,
}

/// The activation that may follow a BatchNorm: none, ReLU, or ReLU6 (`min(max(x, 0), 6)`,
/// ONNX `Clip(0, 6)`, EfficientNet-Lite's activation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Act {
    /// Identity.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Act {
    /// Applies the activation to one value.
    #[inline]
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// Whether the gradient passes at an output value `y` (0 on the flat parts).
    #[inline]
    pub fn passes(self, y: f32) -> bool {
        match self {
            Act::None => true,
            Act::Relu => y > 0.0,
            Act::Relu6 => y > 0.0 && y < 6.0,
        }
    }
}

/// Runs `f(row_index, row)` over the `row`-long rows of `data` on the current rayon pool (the
/// adaptation worker's own pool sized by its `threads` setting, or the global one); rows are
/// disjoint, so the result does not depend on how they are split. `work` is the number of values
/// one call reads, to keep small jobs on the calling thread.
pub(crate) fn par_rows<T: Send, F: Fn(usize, &mut [T]) + Sync>(data: &mut [T], row: usize, work: usize, f: F) {
    use rayon::prelude::*;
    let rows = data.len() / row.max(1);
    if !worth_parallel(rows * work) {
        for (i, r) in data.chunks_mut(row).enumerate() {
            f(i, r);
        }
        return;
    }
    data.par_chunks_mut(row).enumerate().for_each(|(i, r)| f(i, r));
}

/// Whether `work` units (about one per value touched) pay for splitting across the rayon pool.
fn worth_parallel(work: usize) -> bool {
    rayon::current_num_threads() > 1 && work >= 1 << 16
}

/// Zeroes `d` where the activation's gradient is 0 at its output `y`, as a select per value
/// (a conditional store per value does not vectorise; it was the slowest loop of a step).
#[inline]
fn mask_by(d: &mut [f32], y: &[f32], passes: impl Fn(f32) -> bool) {
    d.iter_mut()
        .zip(y)
        .for_each(|(d, &y)| *d = if passes(y) { *d } else { 0.0 });
}

/// Reads a tensor's f32 values (contiguous copy when needed).
fn values(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}

/// Borrowed f32 data of a contiguous CPU tensor, passed to `f`.
fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
        candle_core::bail!("fused batch norm: expected an f32 CPU tensor");
    };
    let (a, b) = layout.contiguous_offsets().expect("contiguous");
    Ok(f(&data[a..b]))
}

/// Per-channel `(mean, biased variance)` of `[b, c, hw]` data, accumulated in f64.
fn channel_stats(x: &[f32], b: usize, c: usize, hw: usize) -> (Vec<f64>, Vec<f64>) {
    // per (batch, channel) row: sum and sum of squares around a per-row shift for stability
    let mut rows = vec![0f64; b * c * 3];
    let xs = x;
    par_rows(&mut rows, 3, hw, |i, out| {
        let r = &xs[i * hw..(i + 1) * hw];
        let shift = r.first().copied().unwrap_or(0.0) as f64;
        let (mut s, mut s2) = (0f64, 0f64);
        for &v in r {
            let d = v as f64 - shift;
            s += d;
            s2 += d * d;
        }
        out[0] = shift;
        out[1] = s;
        out[2] = s2;
    });
    let n = (b * hw) as f64;
    let mut mean = vec![0f64; c];
    for bi in 0..b {
        for ci in 0..c {
            let r = &rows[(bi * c + ci) * 3..];
            mean[ci] += r[0] * hw as f64 + r[1];
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    let mut var = vec![0f64; c];
    for bi in 0..b {
        for ci in 0..c {
            let r = &rows[(bi * c + ci) * 3..];
            // Σ (x − μ)² = Σ (d + shift − μ)² = s2 + 2 (shift − μ) s + hw (shift − μ)²
            let o = r[0] - mean[ci];
            var[ci] += r[2] + 2.0 * o * r[1] + hw as f64 * o * o;
        }
    }
    var.iter_mut().for_each(|v| *v = (*v / n).max(0.0));
    (mean, var)
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "batch-norm-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        use crate::conv::contiguous_f32;
        let x = contiguous_f32(s1, l1, "batch-norm-train")?;
        let gamma = contiguous_f32(s2, l2, "batch-norm-train")?;
        let beta = contiguous_f32(s3, l3, "batch-norm-train")?;
        let (_, c, h, w) = l1.shape().dims4()?;
        let hw = h * w;
        let mut y = vec![0f32; x.len()];
        par_rows(&mut y, hw, hw, |i, out| {
            let ci = i % c;
            let (m, k, bb) = (self.mean[ci], self.inv_std[ci] * gamma[ci], beta[ci]);
            let src = &x[i * hw..(i + 1) * hw];
            match self.act {
                Act::None => {
                    for (o, &v) in out.iter_mut().zip(src) {
                        *o = (v - m) * k + bb;
                    }
                }
                Act::Relu => {
                    for (o, &v) in out.iter_mut().zip(src) {
                        *o = ((v - m) * k + bb).max(0.0);
                    }
                }
                Act::Relu6 => {
                    for (o, &v) in out.iter_mut().zip(src) {
                        *o = ((v - m) * k + bb).clamp(0.0, 6.0);
                    }
                }
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (b, c, h, w) = x.dims4()?;
        let hw = h * w;
        let g = values(gamma)?;
        // dy, as an owned buffer that becomes dx
        let mut dy = values(grad)?;
        // per (batch, channel) row, in one parallel pass: dy masked by the activation, Σ dy and
        // Σ dy · (x − μ) (times 1/σ below: Σ dy · x̂)
        let mut rows = vec![[0f64; 2]; b * c];
        let act = self.act;
        let row_sums = |i: usize, d: &mut [f32], xs: &[f32], ys: Option<&[f32]>| -> [f64; 2] {
            let m = self.mean[i % c];
            let xr = &xs[i * hw..(i + 1) * hw];
            if let Some(ys) = ys {
                // one loop per activation, each with its test inlined
                let yr = &ys[i * hw..(i + 1) * hw];
                match act {
                    Act::None => {}
                    Act::Relu => mask_by(d, yr, |y| Act::Relu.passes(y)),
                    Act::Relu6 => mask_by(d, yr, |y| Act::Relu6.passes(y)),
                }
            }
            // 8 f32 lanes per block of 1024 values, blocks summed in f64
            let (mut sd, mut sdx) = (0f64, 0f64);
            for (db, xb) in d.chunks(1024).zip(xr.chunks(1024)) {
                let (mut l1, mut l2) = ([0f32; 8], [0f32; 8]);
                let (cd, cx) = (db.chunks_exact(8), xb.chunks_exact(8));
                for (&dv, &xv) in cd.remainder().iter().zip(cx.remainder()) {
                    l1[0] += dv;
                    l2[0] += dv * (xv - m);
                }
                for (dc, xc) in cd.zip(cx) {
                    for (((a1, a2), &dv), &xv) in l1.iter_mut().zip(l2.iter_mut()).zip(dc).zip(xc) {
                        *a1 += dv;
                        *a2 += dv * (xv - m);
                    }
                }
                sd += l1.iter().map(|&v| v as f64).sum::<f64>();
                sdx += l2.iter().map(|&v| v as f64).sum::<f64>();
            }
            [sd, sdx * self.inv_std[i % c] as f64]
        };
        with_slice(x, |xs| -> Result<()> {
            let mut run = |ys: Option<&[f32]>| {
                use rayon::prelude::*;
                if !worth_parallel(b * c * hw) {
                    for (i, (d, r)) in dy.chunks_mut(hw).zip(rows.iter_mut()).enumerate() {
                        *r = row_sums(i, d, xs, ys);
                    }
                } else {
                    dy.par_chunks_mut(hw)
                        .zip(rows.par_iter_mut())
                        .enumerate()
                        .for_each(|(i, (d, r))| *r = row_sums(i, d, xs, ys));
                }
            };
            if act == Act::None {
                run(None);
                Ok(())
            } else {
                with_slice(res, |ys| run(Some(ys)))
            }
        })??;
        let (mut dbeta, mut dgamma) = (vec![0f64; c], vec![0f64; c]);
        for bi in 0..b {
            for ci in 0..c {
                dbeta[ci] += rows[bi * c + ci][0];
                dgamma[ci] += rows[bi * c + ci][1];
            }
        }
        // ∂x = γ/(σN) · (N dy − ∂β − x̂ ∂γ) = p·dy + q·(x − μ) + r per channel
        let n = (b * hw) as f64;
        let coef: Vec<[f32; 4]> = (0..c)
            .map(|ci| {
                let (m, s) = (self.mean[ci], self.inv_std[ci] as f64);
                let k = g[ci] as f64 * s / n;
                let q = -k * s * dgamma[ci];
                [(k * n) as f32, q as f32, (-k * dbeta[ci]) as f32, m]
            })
            .collect();
        with_slice(x, |xs| {
            par_rows(&mut dy, hw, 2 * hw, |i, d| {
                let [p, q, r, m] = coef[i % c];
                for (d, &v) in d.iter_mut().zip(&xs[i * hw..(i + 1) * hw]) {
                    *d = p * *d + q * (v - m) + r;
                }
            });
        })?;
        let dev = x.device();
        let dx = Tensor::from_vec(dy, (b, c, h, w), dev)?;
        let dgamma = Tensor::from_vec(dgamma.iter().map(|&v| v as f32).collect::<Vec<_>>(), c, dev)?;
        let dbeta = Tensor::from_vec(dbeta.iter().map(|&v| v as f32).collect::<Vec<_>>(), c, dev)?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// Training-mode batch norm of `x [b, c, h, w]` with `weight`/`bias` `[c]` (and the activation
/// `act` after it), on CPU f32 tensors. Returns the output and the batch `(mean, biased
/// variance)` per channel, for the running statistics.
pub fn batch_norm_train(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    act: Act,
) -> Result<(Tensor, Vec<f32>, Vec<f32>)> {
    let x = x.contiguous()?;
    let (b, c, h, w) = x.dims4()?;
    let (mean, var) = with_slice(&x, |xs| channel_stats(xs, b, c, h * w))?;
    let op = BnTrain {
        mean: mean.iter().map(|&m| m as f32).collect(),
        inv_std: var.iter().map(|&v| (1.0 / (v + eps).sqrt()) as f32).collect(),
        act,
    };
    let y = x.apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)?;
    Ok((
        y,
        mean.iter().map(|&m| m as f32).collect(),
        var.iter().map(|&v| v as f32).collect(),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Deterministic test values in `[-scale/2, scale/2) + offset` (shared with `conv`'s tests).
    pub(crate) fn vals(n: usize, seed: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((((i * 7919 + seed * 104_729) % 997) as f32 / 997.0) - 0.5) * scale + offset)
            .collect()
    }

    /// The same layer from candle's differentiable primitives.
    fn reference(x: &Tensor, g: &Tensor, b: &Tensor, eps: f64, act: Act) -> Tensor {
        let c = x.dim(1).unwrap();
        let mean = x.mean_keepdim((0, 2, 3)).unwrap();
        let centered = x.broadcast_sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim((0, 2, 3)).unwrap();
        let inv = (var + eps).unwrap().sqrt().unwrap().recip().unwrap();
        let y = centered
            .broadcast_mul(&inv)
            .unwrap()
            .broadcast_mul(&g.reshape((1, c, 1, 1)).unwrap())
            .unwrap()
            .broadcast_add(&b.reshape((1, c, 1, 1)).unwrap())
            .unwrap();
        match act {
            Act::None => y,
            Act::Relu => y.relu().unwrap(),
            Act::Relu6 => y.clamp(0f32, 6f32).unwrap(),
        }
    }

    #[test]
    fn values_and_gradients_match_candle_primitives() {
        let dev = Device::Cpu;
        // a large offset checks the statistics' numerical stability
        for (b, c, h, w, relu, offset) in [
            (2, 3, 4, 5, Act::None, 0.0),
            (3, 4, 6, 7, Act::Relu, 0.0),
            (2, 2, 3, 3, Act::None, 100.0),
            (4, 8, 32, 32, Act::Relu, 0.3),
            (4, 6, 1, 1, Act::Relu, 0.0),
            (4, 6, 1, 1, Act::None, 0.0),
            (2, 3, 1, 2, Act::Relu, 0.5),
            (3, 4, 6, 7, Act::Relu6, 0.0),
            (2, 3, 5, 4, Act::Relu6, 0.2),
            // b·c·hw ≥ 65,536 takes the parallel passes; hw > 1,024 spans several lane blocks
            (4, 8, 45, 50, Act::Relu6, 0.3),
        ] {
            let x = Var::from_vec(vals(b * c * h * w, 1, 4.0, offset), (b, c, h, w), &dev).unwrap();
            // ReLU6 cases get a large γ so that the upper clip is reached too
            let gs = if relu == Act::Relu6 { 4.0 } else { 1.0 };
            let g = Var::from_vec(vals(c, 2, gs, gs), c, &dev).unwrap();
            let be = Var::from_vec(vals(c, 3, 1.0, 0.0), c, &dev).unwrap();
            let wts = Tensor::from_vec(vals(b * c * h * w, 4, 2.0, 0.0), (b, c, h, w), &dev).unwrap();
            let (y, mean, var) = batch_norm_train(x.as_tensor(), g.as_tensor(), be.as_tensor(), 1e-5, relu).unwrap();
            let want = reference(x.as_tensor(), g.as_tensor(), be.as_tensor(), 1e-5, relu);
            let d = crate::max_abs_diff(&y, &want).unwrap();
            assert!(d < 1e-4, "values: {d}");
            let m = x
                .as_tensor()
                .mean_keepdim((0, 2, 3))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (a, e) in mean.iter().zip(&m) {
                assert!((a - e).abs() < 1e-4 * e.abs().max(1.0), "mean {a} vs {e}");
            }
            assert!(var.iter().all(|v| *v > 0.0));
            let ga = (y * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            let gb = (want * &wts).unwrap().sum_all().unwrap().backward().unwrap();
            for (name, v) in [("x", &x), ("gamma", &g), ("beta", &be)] {
                let a = values(ga.get(v).unwrap()).unwrap();
                let e = values(gb.get(v).unwrap()).unwrap();
                let scale = e.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
                let d = a.iter().zip(&e).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
                assert!(
                    d < 2e-3 * scale,
                    "{b}x{c}x{h}x{w} act={relu:?} d{name}: {d} (scale {scale})"
                );
            }
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let act = Act::None;
        let (b, c, h, w) = (2, 2, 3, 2);
        let x0 = vals(b * c * h * w, 5, 3.0, 0.0);
        let g0 = vals(c, 6, 1.0, 1.0);
        let wts = Tensor::from_vec(vals(b * c * h * w, 7, 2.0, 0.0), (b, c, h, w), &dev).unwrap();
        let be = Tensor::from_vec(vals(c, 8, 1.0, 0.0), c, &dev).unwrap();
        let f = |xv: &[f32], gv: &[f32]| -> f64 {
            let x = Tensor::from_vec(xv.to_vec(), (b, c, h, w), &dev).unwrap();
            let g = Tensor::from_vec(gv.to_vec(), c, &dev).unwrap();
            let (y, _, _) = batch_norm_train(&x, &g, &be, 1e-5, act).unwrap();
            (y * &wts).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() as f64
        };
        let x = Var::from_vec(x0.clone(), (b, c, h, w), &dev).unwrap();
        let g = Var::from_vec(g0.clone(), c, &dev).unwrap();
        let (y, _, _) = batch_norm_train(x.as_tensor(), g.as_tensor(), &be, 1e-5, act).unwrap();
        let grads = (y * &wts).unwrap().sum_all().unwrap().backward().unwrap();
        let gx = values(grads.get(&x).unwrap()).unwrap();
        let gg = values(grads.get(&g).unwrap()).unwrap();
        let eps = 1e-2f32;
        for i in 0..x0.len() {
            let (mut p, mut m) = (x0.clone(), x0.clone());
            p[i] += eps;
            m[i] -= eps;
            let num = (f(&p, &g0) - f(&m, &g0)) / (2.0 * eps as f64);
            assert!((num - gx[i] as f64).abs() < 5e-3, "dx[{i}]: {num} vs {}", gx[i]);
        }
        for i in 0..c {
            let (mut p, mut m) = (g0.clone(), g0.clone());
            p[i] += eps;
            m[i] -= eps;
            let num = (f(&x0, &p) - f(&x0, &m)) / (2.0 * eps as f64);
            assert!((num - gg[i] as f64).abs() < 5e-3, "dgamma[{i}]: {num} vs {}", gg[i]);
        }
    }
}
