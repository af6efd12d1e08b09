//! Losses: free functions with an explicit ignore index or mask, shared by the trainer and the
//! runtime's on-device adaptation. Models never compute losses.

use candle_core::{DType, Result, Tensor, D};

/// `log_softmax` along `dim`, built from differentiable primitives (the max shift is detached:
/// the result does not depend on it).
pub fn log_softmax(x: &Tensor, dim: usize) -> Result<Tensor> {
    let max = x.max_keepdim(dim)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(dim)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Pixel-wise cross-entropy averaged over the pixels whose target is not `ignore_index`.
///
/// - `logits`: `[b, C, h, w]` scores;
/// - `target`: `[b, h, w]` class ids (`u32`), `ignore_index` where there is no label;
/// - `class_weights`: optional `[C]` weights; the mean is then weighted (PyTorch semantics).
///
/// Returns a scalar; 0 when every pixel is ignored.
pub fn cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    ignore_index: u32,
    class_weights: Option<&Tensor>,
) -> Result<Tensor> {
    let (picked, valid, safe) = target_log_probs(logits, target, ignore_index, "cross_entropy")?;
    weighted_nll(&picked, valid.to_dtype(DType::F32)?, &safe, class_weights)
}

/// `−Σ picked·m·cw[target] / Σ m·cw[target]` over pixels with mask `m` (`[b, h, w]` f32), the
/// class weights optional (`safe`: the targets with ignored pixels set to class 0).
fn weighted_nll(picked: &Tensor, mask: Tensor, safe: &Tensor, class_weights: Option<&Tensor>) -> Result<Tensor> {
    let mut weight = mask; // [b, h, w]
    if let Some(cw) = class_weights {
        let per_pixel = cw.index_select(&safe.flatten_all()?, 0)?.reshape(weight.shape())?;
        weight = (weight * per_pixel)?;
    }
    let denom = weight.sum_all()?.maximum(1e-12)?;
    (picked * &weight)?.sum_all()?.neg()?.div(&denom)
}

/// Online hard example mining for the supervised cross-entropy (OHEM as in BiSeNet and
/// PP-LiteSeg): only the pixels the model still gets wrong enough count.
///
/// A labeled pixel is kept when the softmax probability of its true class is below `thresh`; when
/// fewer than `min_kept` (a fraction of the batch's labeled pixels) pass, the `min_kept` hardest
/// ones (lowest probability) are kept instead. The selection is a constant mask: the gradient is
/// the cross-entropy's on the kept pixels.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ohem {
    /// Keep pixels whose true-class probability is below this (0 < thresh ≤ 1; 0.7 in BiSeNet).
    pub thresh: f32,
    /// At least this fraction of the labeled pixels is kept (0..=1; BiSeNet keeps 1/16).
    pub min_kept: f64,
}

impl Ohem {
    /// Checks ranges (`optim.ohem` in the trainer's config).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(self.thresh > 0.0 && self.thresh <= 1.0) {
            return Err(format!("optim.ohem.thresh must be in (0, 1], not {}", self.thresh));
        }
        if !(0.0..=1.0).contains(&self.min_kept) {
            return Err(format!(
                "optim.ohem.min_kept must be a fraction in [0, 1], not {}",
                self.min_kept
            ));
        }
        Ok(())
    }
}

/// [`cross_entropy`] averaged over the pixels [`Ohem`] keeps (class weights as there).
///
/// - `logits`: `[b, C, h, w]`; `target`: `[b, h, w]` class ids, `ignore_index` where unlabeled.
///
/// Returns a scalar; 0 when every pixel is ignored.
pub fn ohem_cross_entropy(
    logits: &Tensor,
    target: &Tensor,
    ignore_index: u32,
    class_weights: Option<&Tensor>,
    ohem: Ohem,
) -> Result<Tensor> {
    let (b, _, h, w) = logits.dims4()?;
    let (picked, valid, safe) = target_log_probs(logits, target, ignore_index, "ohem_cross_entropy")?;
    // the selection, on the host: log-probabilities of the labeled pixels
    let logp: Vec<f32> = picked.detach().flatten_all()?.to_vec1()?;
    let is_valid: Vec<u8> = valid.flatten_all()?.to_vec1()?;
    let keep = ohem_keep(&logp, &is_valid, ohem);
    let mask = Tensor::from_vec(keep, (b, h, w), logits.device())?;
    weighted_nll(&picked, mask, &safe, class_weights)
}

/// The [`Ohem`] mask (1 kept, 0 not) over pixels with true-class log-probability `logp` and
/// labeled flag `valid`.
fn ohem_keep(logp: &[f32], valid: &[u8], ohem: Ohem) -> Vec<f32> {
    let mut labeled: Vec<f32> = logp
        .iter()
        .zip(valid)
        .filter(|(_, &v)| v != 0)
        .map(|(&l, _)| l)
        .collect();
    let n_min = ((ohem.min_kept * labeled.len() as f64).ceil() as usize).min(labeled.len());
    let log_thresh = ohem.thresh.ln();
    let below = labeled.iter().filter(|&&l| l < log_thresh).count();
    // the cut in log-probability: the threshold, or the n_min-th lowest when too few pass it
    let cut_inclusive = if below >= n_min || n_min == 0 {
        None
    } else {
        let (_, nth, _) = labeled.select_nth_unstable_by(n_min - 1, |a, b| a.total_cmp(b));
        Some(*nth)
    };
    logp.iter()
        .zip(valid)
        .map(|(&l, &v)| {
            let kept = v != 0
                && match cut_inclusive {
                    None => l < log_thresh,
                    Some(c) => l <= c,
                };
            if kept {
                1.0
            } else {
                0.0
            }
        })
        .collect()
}

/// Per-pixel negative log-likelihood `−log softmax(logits)[target]` as `[b, h, w]`, 0 where the
/// target is `ignore_index` (methods reduce it with their own masks and normalisers).
///
/// - `logits`: `[b, C, h, w]` scores; `target`: `[b, h, w]` class ids (`u32`).
pub fn pixel_nll(logits: &Tensor, target: &Tensor, ignore_index: u32) -> Result<Tensor> {
    let (picked, valid, _) = target_log_probs(logits, target, ignore_index, "pixel_nll")?;
    picked.neg()? * valid.to_dtype(DType::F32)?
}

/// Cross-entropy on pseudo-labels with its own normaliser: `Σ_p m_p · NLL_p / n`, where `NLL_p`
/// is [`pixel_nll`] (0 where the label is `ignore_index`). Semi-supervised methods keep only their
/// confident pixels (`mask`) but divide by all valid pixels of the unlabeled batch (`n`), so that
/// fewer confident pixels give a smaller loss, not a louder one (FixMatch/UniMatch, mean teacher).
///
/// - `logits`: `[b, C, h, w]`; `labels`: `[b, h, w]` class ids (`u32`);
/// - `mask`: optional `[b, h, w]` f32 pixel weights (none: every labelled pixel counts);
/// - `n`: a scalar tensor, the normaliser (e.g. the valid-pixel count, at least 1).
pub fn pseudo_label_ce(
    logits: &Tensor,
    labels: &Tensor,
    ignore_index: u32,
    mask: Option<&Tensor>,
    n: &Tensor,
) -> Result<Tensor> {
    let nll = pixel_nll(logits, labels, ignore_index)?; // [b, h, w]
    let kept = match mask {
        Some(m) => (nll * m)?,
        None => nll,
    };
    kept.sum_all()?.div(n)
}

/// `(log softmax(logits)[target] [b, h, w], valid [b, h, w] u8, target with ignored pixels set to
/// class 0)`; an id ≥ the class count that is not `ignore_index` is an error naming `op`.
fn target_log_probs(logits: &Tensor, target: &Tensor, ignore_index: u32, op: &str) -> Result<(Tensor, Tensor, Tensor)> {
    let c = logits.dim(1)?;
    let target = target.to_dtype(DType::U32)?;
    let valid = target.ne(ignore_index)?; // [b, h, w] u8
    let safe = valid.where_cond(&target, &target.zeros_like()?)?; // ignore -> class 0
    let max = safe.flatten_all()?.max(0)?.to_scalar::<u32>()?;
    if max as usize >= c {
        candle_core::bail!("{op}: target id {max} is not a class (0..{c})");
    }
    let logp = log_softmax(logits, 1)?; // [b, C, h, w]
    let picked = logp.gather(&safe.unsqueeze(1)?.contiguous()?, 1)?.squeeze(1)?; // [b, h, w]
    Ok((picked, valid, safe))
}

/// Knowledge-distillation loss (Hinton et al. 2015), pixel-wise:
/// `T² · mean_pixels Σ_c p_t,c · (log p_t,c − log p_s,c)` with `p = softmax(logits / T)`, i.e.
/// the KL divergence from the teacher's softened distribution to the student's, scaled by `T²`
/// so its gradient keeps the magnitude of a cross-entropy as `T` changes.
///
/// - `student`, `teacher`: `[b, C, h, w]` scores of the same shape; no gradient reaches the
///   teacher (it is detached here);
/// - `mask`: optional `[b, h, w]` f32 pixel weights (e.g. 0 in crop padding); the mean is over
///   their sum.
pub fn distillation_kl(student: &Tensor, teacher: &Tensor, temperature: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    if student.dims() != teacher.dims() {
        candle_core::bail!(
            "distillation_kl: student scores {:?} and teacher scores {:?} differ in shape",
            student.dims(),
            teacher.dims()
        );
    }
    student.dims4()?; // [b, C, h, w]
    let log_t = log_softmax(&(teacher.detach() / temperature)?, 1)?; // [b, C, h, w]
    let log_s = log_softmax(&(student / temperature)?, 1)?; // [b, C, h, w]
    let kl = (log_t.exp()? * (log_t - log_s)?)?.sum(1)?; // [b, h, w]
    masked_mean(&kl, mask)? * (temperature * temperature)
}

/// The mean of per-pixel values `[b, h, w]`, weighted by `mask` (`[b, h, w]` f32) when given:
/// `Σ v·m / Σ m` (0 when every weight is 0).
fn masked_mean(values: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    match mask {
        Some(m) => (values * m)?.sum_all()?.div(&m.sum_all()?.maximum(1e-12)?),
        None => values.mean_all(),
    }
}

/// The per-pixel distance of [`feature_distillation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureLoss {
    /// Mean over channels of the squared difference.
    Mse,
    /// `1 − cos(s_p, t_p)`: direction only, blind to the features' scale.
    Cosine,
}

/// Feature distillation (FitNets-style hints, Romero et al. 2015): the student's features, already
/// mapped to the teacher's width by an adaptor, pulled toward the teacher's, per pixel.
///
/// - `student`: `[b, d, h, w]` adapted student features; `teacher`: `[b, d, h, w]` (detached here);
/// - `mask`: optional `[b, h, w]` f32 pixel weights; the mean is over their sum.
pub fn feature_distillation(
    student: &Tensor,
    teacher: &Tensor,
    kind: FeatureLoss,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    if student.dims() != teacher.dims() {
        candle_core::bail!(
            "feature_distillation: student features {:?} and teacher features {:?} differ in shape",
            student.dims(),
            teacher.dims()
        );
    }
    student.dims4()?; // [b, d, h, w]
    let t = teacher.detach();
    let per_pixel = match kind {
        FeatureLoss::Mse => (student - &t)?.sqr()?.mean(1)?, // [b, h, w]
        FeatureLoss::Cosine => {
            let dot = (student * &t)?.sum(1)?; // [b, h, w]
            let ns = (student.sqr()?.sum(1)? + 1e-12)?.sqrt()?; // [b, h, w]
            let nt = (t.sqr()?.sum(1)? + 1e-12)?.sqrt()?; // [b, h, w]
            (dot / (ns * nt)?)?.affine(-1.0, 1.0)?
        }
    };
    masked_mean(&per_pixel, mask)
}

/// Pair-wise (structured) distillation (Liu et al., CVPR 2019): the cosine-similarity matrix of
/// every pair of positions in the student's features matched to the teacher's,
/// `mean_{b,i,j} (cos(s_i, s_j) − cos(t_i, t_j))²`. The channel counts may differ (no adaptor);
/// both maps are first average-pooled by the same integer factor until they have at most
/// `max_positions` positions (the matrices are `positions²` per image).
///
/// - `student`: `[b, ds, h, w]`; `teacher`: `[b, dt, h, w]` (detached here).
pub fn affinity_distillation(student: &Tensor, teacher: &Tensor, max_positions: usize) -> Result<Tensor> {
    let (b, _, h, w) = student.dims4()?;
    let (bt, _, ht, wt) = teacher.dims4()?;
    if (b, h, w) != (bt, ht, wt) {
        candle_core::bail!(
            "affinity_distillation: student features {:?} and teacher features {:?} differ in batch or size",
            student.dims(),
            teacher.dims()
        );
    }
    if max_positions == 0 {
        candle_core::bail!("affinity_distillation: max_positions must be > 0");
    }
    let mut k = 1;
    while (h / k) * (w / k) > max_positions && h / k > 1 && w / k > 1 {
        k += 1;
    }
    let pool = |x: &Tensor| -> Result<Tensor> {
        if k == 1 {
            return Ok(x.clone());
        }
        // kernel = stride: candle has the backward of this pooling
        x.narrow(2, 0, (h / k) * k)?.narrow(3, 0, (w / k) * k)?.avg_pool2d(k)
    };
    let affinity = |x: &Tensor| -> Result<Tensor> {
        let (b, d, h, w) = x.dims4()?;
        let x = x.reshape((b, d, h * w))?; // [b, d, n]
        let norm = (x.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?; // [b, 1, n]
        let u = x.broadcast_div(&norm)?; // [b, d, n]
        u.transpose(1, 2)?.contiguous()?.matmul(&u.contiguous()?) // [b, n, n]
    };
    let a_s = affinity(&pool(student)?)?;
    let a_t = affinity(&pool(&teacher.detach())?)?;
    (a_s - a_t)?.sqr()?.mean_all()
}

/// Multi-label binary cross-entropy on logits, averaged over images and classes:
/// `mean(w₊·t·softplus(−x) + w₋·(1 − t)·softplus(x))` in the numerically stable form
/// (`softplus(x) = max(x, 0) + log(1 + exp(−|x|))`); without weights `w₊ = w₋ = 1`, the plain
/// `mean(max(x, 0) − x·t + log(1 + exp(−|x|)))`.
///
/// - `logits`: `[b, C]` scores (e.g. a CAM head's pooled scores);
/// - `targets`: `[b, C]` 0/1 (f32) — an image's tags;
/// - `class_weights`: per class `(w₊, w₋)` as two `[C]` tensors, e.g. [`balanced_bce_weights`].
pub fn multilabel_bce(logits: &Tensor, targets: &Tensor, class_weights: Option<(&Tensor, &Tensor)>) -> Result<Tensor> {
    if logits.dims() != targets.dims() {
        candle_core::bail!(
            "multilabel_bce: logits {:?} and targets {:?} differ in shape",
            logits.dims(),
            targets.dims()
        );
    }
    let softplus_neg_abs = logits.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?;
    let softplus = (logits.relu()? + softplus_neg_abs)?; // softplus(x), [b, C]
    let Some((pos, neg)) = class_weights else {
        return (softplus - (logits * targets)?)?.mean_all();
    };
    let c = logits.dim(D::Minus1)?;
    if pos.dims() != [c] || neg.dims() != [c] {
        candle_core::bail!(
            "multilabel_bce: class weights {:?} / {:?} for {c} classes",
            pos.dims(),
            neg.dims()
        );
    }
    let on = (targets.broadcast_mul(pos)? * (&softplus - logits)?)?; // w₊·t·softplus(−x)
    let off = (targets.affine(-1.0, 1.0)?.broadcast_mul(neg)? * softplus)?; // w₋·(1−t)·softplus(x)
    (on + off)?.mean_all()
}

/// Class-balanced weights for [`multilabel_bce`] from each class's share `p` of images tagged
/// with it: `w₊ = 1 / (2p)`, `w₋ = 1 / (2(1 − p))`, so positives and negatives of a class weigh
/// the same in expectation and a class present in almost every image still learns from the few
/// images without it. `p` is clamped to [0.01, 0.99] (weights at most 50).
pub fn balanced_bce_weights(presence: &[f64]) -> (Vec<f32>, Vec<f32>) {
    presence
        .iter()
        .map(|&p| {
            let p = if p.is_finite() { p.clamp(0.01, 0.99) } else { 0.5 };
            ((0.5 / p) as f32, (0.5 / (1.0 - p)) as f32)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn reference_ce(logits: &[f32], c: usize, n: usize, target: &[u32], weights: &[f32], ignore: u32) -> f32 {
        // logits laid out [C, n] (b = 1, h = 1, w = n)
        let (mut num, mut den) = (0f64, 0f64);
        for p in 0..n {
            if target[p] == ignore {
                continue;
            }
            let col: Vec<f64> = (0..c).map(|k| logits[k * n + p] as f64).collect();
            let m = col.iter().cloned().fold(f64::MIN, f64::max);
            let lse = col.iter().map(|v| (v - m).exp()).sum::<f64>().ln() + m;
            let wt = weights[target[p] as usize] as f64;
            num += wt * (lse - col[target[p] as usize]);
            den += wt;
        }
        (num / den) as f32
    }

    #[test]
    fn masked_weighted_ce_matches_reference_and_finite_differences() {
        let dev = Device::Cpu;
        let (c, n) = (3, 5);
        let l0: Vec<f32> = (0..c * n).map(|i| ((i * 7 % 10) as f32) * 0.3 - 1.2).collect();
        let target = [0u32, 2, 255, 1, 2];
        let weights = [1.0f32, 2.0, 0.5];
        let t = Tensor::new(&target, &dev).unwrap().reshape((1, 1, n)).unwrap();
        let cw = Tensor::new(&weights, &dev).unwrap();
        let f = |l: &Tensor| cross_entropy(l, &t, 255, Some(&cw)).unwrap();
        let x = Var::from_vec(l0.clone(), (1, c, 1, n), &dev).unwrap();
        let loss = f(x.as_tensor());
        let want = reference_ce(&l0, c, n, &target, &weights, 255);
        assert!((loss.to_scalar::<f32>().unwrap() - want).abs() < 1e-5);
        let g = loss.backward().unwrap();
        let g = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-3;
        for i in 0..l0.len() {
            let (mut p, mut m) = (l0.clone(), l0.clone());
            p[i] += eps;
            m[i] -= eps;
            let num = (reference_ce(&p, c, n, &target, &weights, 255) - reference_ce(&m, c, n, &target, &weights, 255))
                / (2.0 * eps);
            assert!((num - g[i]).abs() < 2e-3, "elem {i}: {num} vs {}", g[i]);
        }
        // the ignored pixel (p = 2) gets no gradient
        for k in 0..c {
            assert_eq!(g[k * n + 2], 0.0);
        }
    }

    /// The reference OHEM: per-pixel true-class probabilities sorted by hand, then `reference_ce`
    /// over the kept pixels (the others set to `ignore`).
    fn reference_ohem(logits: &[f32], c: usize, n: usize, target: &[u32], weights: &[f32], ohem: Ohem) -> f32 {
        let prob = |p: usize| {
            let col: Vec<f64> = (0..c).map(|k| logits[k * n + p] as f64).collect();
            let z: f64 = col.iter().map(|v| v.exp()).sum();
            col[target[p] as usize].exp() / z
        };
        let mut labeled: Vec<(f64, usize)> = (0..n).filter(|&p| target[p] != 255).map(|p| (prob(p), p)).collect();
        labeled.sort_by(|a, b| a.0.total_cmp(&b.0)); // hardest first
        let n_min = (ohem.min_kept * labeled.len() as f64).ceil() as usize;
        let below: Vec<usize> = labeled
            .iter()
            .filter(|(q, _)| *q < ohem.thresh as f64)
            .map(|&(_, p)| p)
            .collect();
        let kept: Vec<usize> = if below.len() >= n_min {
            below
        } else {
            labeled[..n_min].iter().map(|&(_, p)| p).collect()
        };
        let masked: Vec<u32> = (0..n)
            .map(|p| if kept.contains(&p) { target[p] } else { 255 })
            .collect();
        reference_ce(logits, c, n, &masked, weights, 255)
    }

    #[test]
    fn issue21_ohem_keeps_the_hard_pixels_and_its_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let (c, n) = (3, 8);
        let l0: Vec<f32> = (0..c * n).map(|i| ((i * 7 % 11) as f32) * 0.45 - 2.0).collect();
        let target = [0u32, 2, 255, 1, 2, 0, 1, 2];
        let weights = [1.0f32, 2.0, 0.5];
        let t = Tensor::new(&target, &dev).unwrap().reshape((1, 1, n)).unwrap();
        let cw = Tensor::new(&weights, &dev).unwrap();
        // the threshold rule, the min-kept rule (thresh so low that none pass), and everything
        for ohem in [
            Ohem {
                thresh: 0.5,
                min_kept: 0.0,
            },
            Ohem {
                thresh: 0.01,
                min_kept: 0.3,
            },
            Ohem {
                thresh: 1.0,
                min_kept: 0.0,
            },
        ] {
            let x = Var::from_vec(l0.clone(), (1, c, 1, n), &dev).unwrap();
            let loss = ohem_cross_entropy(x.as_tensor(), &t, 255, Some(&cw), ohem).unwrap();
            let want = reference_ohem(&l0, c, n, &target, &weights, ohem);
            let got = loss.to_scalar::<f32>().unwrap();
            assert!((got - want).abs() < 1e-5, "{ohem:?}: {got} vs {want}");
            let g = loss.backward().unwrap();
            let g = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let eps = 1e-3;
            for i in 0..l0.len() {
                let (mut p, mut m) = (l0.clone(), l0.clone());
                p[i] += eps;
                m[i] -= eps;
                let num = (reference_ohem(&p, c, n, &target, &weights, ohem)
                    - reference_ohem(&m, c, n, &target, &weights, ohem))
                    / (2.0 * eps);
                assert!((num - g[i]).abs() < 2e-3, "{ohem:?} elem {i}: {num} vs {}", g[i]);
            }
        }
        // thresh 1 keeps every labeled pixel: the plain cross-entropy
        let all = ohem_cross_entropy(
            &Tensor::from_vec(l0.clone(), (1, c, 1, n), &dev).unwrap(),
            &t,
            255,
            None,
            Ohem {
                thresh: 1.0,
                min_kept: 0.0,
            },
        )
        .unwrap();
        let plain = cross_entropy(&Tensor::from_vec(l0, (1, c, 1, n), &dev).unwrap(), &t, 255, None).unwrap();
        assert!((all.to_scalar::<f32>().unwrap() - plain.to_scalar::<f32>().unwrap()).abs() < 1e-6);
        // the selection itself: 3 of 4 labeled pixels below 0.5, min 2 of 4 keeps those 3; min 1.0
        // keeps all 4 labeled ones and never the unlabeled one
        let logp = [0.9f32.ln(), 0.1f32.ln(), 0.2f32.ln(), 0.05f32.ln(), 0.01f32.ln()];
        let valid = [1u8, 1, 1, 1, 0];
        for (thresh, min_kept, want) in [
            (0.5, 0.5, [0.0, 1.0, 1.0, 1.0, 0.0]),
            (0.15, 0.75, [0.0, 1.0, 1.0, 1.0, 0.0]),
            (0.15, 1.0, [1.0, 1.0, 1.0, 1.0, 0.0]),
        ] {
            assert_eq!(
                ohem_keep(&logp, &valid, Ohem { thresh, min_kept }),
                want,
                "{thresh} {min_kept}"
            );
        }
        assert!(Ohem {
            thresh: 0.0,
            min_kept: 0.1
        }
        .validate()
        .is_err());
        assert!(Ohem {
            thresh: 0.7,
            min_kept: 1.5
        }
        .validate()
        .is_err());
        assert!(Ohem {
            thresh: 0.7,
            min_kept: 1.0 / 16.0
        }
        .validate()
        .is_ok());
    }

    /// Logits `[2, 3, 1, 4]` and targets `[2, 1, 4]` with one ignored pixel (255) per image.
    fn small_batch(dev: &Device) -> (Tensor, Tensor) {
        let l0: Vec<f32> = (0..2 * 3 * 4).map(|i| ((i * 5 % 9) as f32) * 0.4 - 1.5).collect();
        let l = Tensor::from_vec(l0, (2, 3, 1, 4), dev).unwrap();
        let t = Tensor::new(&[[[0u32, 2, 255, 1]], [[1, 1, 0, 255]]], dev).unwrap();
        (l, t)
    }

    #[test]
    fn pixel_nll_averages_to_cross_entropy() {
        let dev = Device::Cpu;
        let (l, t) = small_batch(&dev);
        let nll = pixel_nll(&l, &t, 255).unwrap();
        let v = nll.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!((v[2], v[7]), (0.0, 0.0));
        let mean = v.iter().sum::<f32>() / 6.0;
        let ce = cross_entropy(&l, &t, 255, None).unwrap().to_scalar::<f32>().unwrap();
        assert!((mean - ce).abs() < 1e-6, "{mean} vs {ce}");
    }

    #[test]
    fn pseudo_label_ce_sums_the_kept_pixels_over_its_normaliser() {
        let dev = Device::Cpu;
        let (l, t) = small_batch(&dev);
        let v = pixel_nll(&l, &t, 255)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let m = Tensor::new(&[[[1f32, 0.0, 1.0, 1.0]], [[0.0, 1.0, 1.0, 1.0]]], &dev).unwrap();
        let n = Tensor::new(8f32, &dev).unwrap();
        let got = pseudo_label_ce(&l, &t, 255, Some(&m), &n)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let want = (v[0] + v[3] + v[5] + v[6]) / 8.0; // masked-out and ignored pixels add nothing
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        // no mask and n = the labelled pixels: the plain cross-entropy
        let n = Tensor::new(6f32, &dev).unwrap();
        let all = pseudo_label_ce(&l, &t, 255, None, &n)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let ce = cross_entropy(&l, &t, 255, None).unwrap().to_scalar::<f32>().unwrap();
        assert!((all - ce).abs() < 1e-6, "{all} vs {ce}");
    }

    #[test]
    fn all_ignored_is_zero_and_bad_id_is_an_error() {
        let dev = Device::Cpu;
        let l = Tensor::zeros((1, 3, 1, 2), DType::F32, &dev).unwrap();
        let t = Tensor::new(&[[[255u32, 255]]], &dev).unwrap();
        assert_eq!(
            cross_entropy(&l, &t, 255, None).unwrap().to_scalar::<f32>().unwrap(),
            0.0
        );
        let t = Tensor::new(&[[[7u32, 0]]], &dev).unwrap();
        assert!(cross_entropy(&l, &t, 255, None).is_err());
    }

    /// The KD loss against a direct evaluation of its formula, its gradient against finite
    /// differences, and no gradient into the teacher.
    #[test]
    fn distillation_kl_matches_formula_and_finite_differences() {
        let dev = Device::Cpu;
        let (c, n, temp) = (3usize, 4usize, 2.0f64);
        let s0: Vec<f32> = (0..c * n).map(|i| ((i * 7 % 11) as f32) * 0.35 - 1.4).collect();
        let t0: Vec<f32> = (0..c * n).map(|i| ((i * 5 % 9) as f32) * 0.5 - 2.0).collect();
        let mask = [1.0f32, 0.0, 0.5, 1.0];
        let reference = |s: &[f32]| -> f32 {
            let soft = |v: &[f32], p: usize| -> Vec<f64> {
                let col: Vec<f64> = (0..c).map(|k| v[k * n + p] as f64 / temp).collect();
                let m = col.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = col.iter().map(|x| (x - m).exp()).sum();
                col.iter().map(|x| (x - m).exp() / z).collect()
            };
            let (mut num, mut den) = (0f64, 0f64);
            for (p, &mp) in mask.iter().enumerate() {
                let (pt, ps) = (soft(&t0, p), soft(s, p));
                let kl: f64 = (0..c).map(|k| pt[k] * (pt[k].ln() - ps[k].ln())).sum();
                num += mp as f64 * kl;
                den += mp as f64;
            }
            (temp * temp * num / den) as f32
        };
        let m = Tensor::new(&mask, &dev).unwrap().reshape((1, 1, n)).unwrap();
        let s = Var::from_vec(s0.clone(), (1, c, 1, n), &dev).unwrap();
        let t = Var::from_vec(t0.clone(), (1, c, 1, n), &dev).unwrap();
        let loss = distillation_kl(s.as_tensor(), t.as_tensor(), temp, Some(&m)).unwrap();
        let got = loss.to_scalar::<f32>().unwrap();
        assert!((got - reference(&s0)).abs() < 1e-5, "{got} vs {}", reference(&s0));
        let grads = loss.backward().unwrap();
        assert!(grads.get(&t).is_none(), "the teacher must get no gradient");
        let g = grads.get(&s).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-3;
        for i in 0..s0.len() {
            let (mut p, mut q) = (s0.clone(), s0.clone());
            p[i] += eps;
            q[i] -= eps;
            let num = (reference(&p) - reference(&q)) / (2.0 * eps);
            assert!((num - g[i]).abs() < 2e-3, "elem {i}: {num} vs {}", g[i]);
        }
        // the masked-out pixel (p = 1) gets no gradient; identical scores give zero loss
        for k in 0..c {
            assert_eq!(g[k * n + 1], 0.0);
        }
        let same = distillation_kl(t.as_tensor(), t.as_tensor(), temp, None).unwrap();
        assert!(same.to_scalar::<f32>().unwrap().abs() < 1e-6);
        let other = Tensor::zeros((1, c, 2, n), DType::F32, &dev).unwrap();
        assert!(distillation_kl(&other, t.as_tensor(), temp, None).is_err());
    }
    /// Central finite differences of `f` at `x0` against the autograd gradient of `loss_of`.
    fn check_fd(x0: &[f32], shape: (usize, usize, usize, usize), f: &dyn Fn(&Tensor) -> Tensor, tol: f32) {
        let dev = Device::Cpu;
        let x = Var::from_vec(x0.to_vec(), shape, &dev).unwrap();
        let g = f(x.as_tensor()).backward().unwrap();
        let g = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eval = |v: Vec<f32>| {
            f(&Tensor::from_vec(v, shape, &dev).unwrap())
                .to_dtype(DType::F64)
                .unwrap()
                .to_scalar::<f64>()
                .unwrap()
        };
        let eps = 1e-2f32;
        for i in 0..x0.len() {
            let (mut p, mut q) = (x0.to_vec(), x0.to_vec());
            p[i] += eps;
            q[i] -= eps;
            let num = ((eval(p) - eval(q)) / (2.0 * eps as f64)) as f32;
            assert!(
                (num - g[i]).abs() < tol,
                "elem {i}: finite difference {num} vs autograd {}",
                g[i]
            );
        }
    }

    /// Issue #27: feature distillation against a direct evaluation, zero for equal features,
    /// no gradient into the teacher, finite differences.
    #[test]
    fn issue27_feature_distillation_reference_zero_and_gradients() {
        let dev = Device::Cpu;
        let (d, n) = (3usize, 4usize);
        let s0: Vec<f32> = (0..d * n).map(|i| ((i * 7 % 11) as f32) * 0.3 - 1.2).collect();
        let t0: Vec<f32> = (0..d * n).map(|i| ((i * 5 % 9) as f32) * 0.4 - 1.5).collect();
        let mask = [1.0f32, 0.0, 0.5, 1.0];
        let m = Tensor::new(&mask, &dev).unwrap().reshape((1, 1, n)).unwrap();
        let t = Var::from_vec(t0.clone(), (1, d, 1, n), &dev).unwrap();
        for kind in [FeatureLoss::Mse, FeatureLoss::Cosine] {
            let reference = |s: &[f32]| -> f64 {
                let (mut num, mut den) = (0f64, 0f64);
                for (p, &mp) in mask.iter().enumerate() {
                    let sv: Vec<f64> = (0..d).map(|k| s[k * n + p] as f64).collect();
                    let tv: Vec<f64> = (0..d).map(|k| t0[k * n + p] as f64).collect();
                    let v = match kind {
                        FeatureLoss::Mse => sv.iter().zip(&tv).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / d as f64,
                        FeatureLoss::Cosine => {
                            let dot: f64 = sv.iter().zip(&tv).map(|(a, b)| a * b).sum();
                            let ns = sv.iter().map(|a| a * a).sum::<f64>().sqrt();
                            let nt = tv.iter().map(|a| a * a).sum::<f64>().sqrt();
                            1.0 - dot / (ns * nt)
                        }
                    };
                    num += mp as f64 * v;
                    den += mp as f64;
                }
                num / den
            };
            let s = Var::from_vec(s0.clone(), (1, d, 1, n), &dev).unwrap();
            let loss = feature_distillation(s.as_tensor(), t.as_tensor(), kind, Some(&m)).unwrap();
            let got = loss.to_scalar::<f32>().unwrap() as f64;
            assert!(
                (got - reference(&s0)).abs() < 1e-5,
                "{kind:?}: {got} vs {}",
                reference(&s0)
            );
            assert!(
                loss.backward().unwrap().get(&t).is_none(),
                "the teacher must get no gradient"
            );
            check_fd(
                &s0,
                (1, d, 1, n),
                &|x| feature_distillation(x, t.as_tensor(), kind, Some(&m)).unwrap(),
                2e-3,
            );
            let same = feature_distillation(t.as_tensor(), t.as_tensor(), kind, None).unwrap();
            assert!(
                same.to_scalar::<f32>().unwrap().abs() < 1e-6,
                "{kind:?}: equal features must cost 0"
            );
        }
        // cosine ignores scale, MSE does not
        let scaled = (t.as_tensor() * 3.0).unwrap();
        let cos = feature_distillation(&scaled, t.as_tensor(), FeatureLoss::Cosine, None).unwrap();
        assert!(cos.to_scalar::<f32>().unwrap().abs() < 1e-6);
        let mse = feature_distillation(&scaled, t.as_tensor(), FeatureLoss::Mse, None).unwrap();
        assert!(mse.to_scalar::<f32>().unwrap() > 0.1);
        let other = Tensor::zeros((1, d, 2, n), DType::F32, &dev).unwrap();
        assert!(feature_distillation(&other, t.as_tensor(), FeatureLoss::Mse, None).is_err());
    }

    /// Issue #27: pair-wise distillation against a direct evaluation (different channel
    /// counts), zero for features that differ only by a per-position scale, finite differences,
    /// and the pooling that bounds the matrix size.
    #[test]
    fn issue27_affinity_distillation_reference_zero_pooling_and_gradients() {
        let dev = Device::Cpu;
        let (ds, dt, h, w) = (3usize, 2usize, 2usize, 3usize);
        let n = h * w;
        let s0: Vec<f32> = (0..ds * n).map(|i| ((i * 7 % 11) as f32) * 0.3 - 1.2).collect();
        let t0: Vec<f32> = (0..dt * n).map(|i| ((i * 5 % 9) as f32) * 0.4 - 1.5).collect();
        let cosines = |v: &[f32], d: usize| -> Vec<f64> {
            let col = |p: usize| -> Vec<f64> { (0..d).map(|k| v[k * n + p] as f64).collect() };
            let mut out = Vec::new();
            for i in 0..n {
                for j in 0..n {
                    let (a, b) = (col(i), col(j));
                    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
                    let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
                    out.push(dot / (na * nb));
                }
            }
            out
        };
        let at = cosines(&t0, dt);
        let reference = |s: &[f32]| -> f64 {
            cosines(s, ds)
                .iter()
                .zip(&at)
                .map(|(a, b)| (a - b).powi(2))
                .sum::<f64>()
                / (n * n) as f64
        };
        let t = Tensor::from_vec(t0.clone(), (1, dt, h, w), &dev).unwrap();
        let s = Tensor::from_vec(s0.clone(), (1, ds, h, w), &dev).unwrap();
        let got = affinity_distillation(&s, &t, 64).unwrap().to_scalar::<f32>().unwrap() as f64;
        assert!((got - reference(&s0)).abs() < 1e-5, "{got} vs {}", reference(&s0));
        check_fd(&s0, (1, ds, h, w), &|x| affinity_distillation(x, &t, 64).unwrap(), 2e-3);
        // scaling each position's feature vector changes no cosine
        let scale = Tensor::new(&[[[[0.5f32, 2.0, 3.0], [1.5, 0.25, 4.0]]]], &dev).unwrap();
        let scaled = t.broadcast_mul(&scale).unwrap();
        let z = affinity_distillation(&scaled, &t, 64)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(z.abs() < 1e-6, "{z}");
        // 8x8 positions pooled 2x2 to 16 <= 20: equal to the loss of the pooled maps
        let big_s = Tensor::randn(0f32, 1.0, (2, 4, 8, 8), &dev).unwrap();
        let big_t = Tensor::randn(0f32, 1.0, (2, 5, 8, 8), &dev).unwrap();
        let pooled = affinity_distillation(&big_s.avg_pool2d(2).unwrap(), &big_t.avg_pool2d(2).unwrap(), 20)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let direct = affinity_distillation(&big_s, &big_t, 20)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((pooled - direct).abs() < 1e-6, "{pooled} vs {direct}");
        assert!(affinity_distillation(&big_s, &t, 20).is_err());
        assert!(affinity_distillation(&big_s, &big_t, 0).is_err());
    }

    /// `∂f/∂x_i` at `x` by central differences (step 1e-2), for the BCE tests.
    fn central_difference(f: &dyn Fn(&[f32]) -> f64, x: &[f32], i: usize) -> f64 {
        let eps = 1e-2f32;
        let (mut up, mut dn) = (x.to_vec(), x.to_vec());
        up[i] += eps;
        dn[i] -= eps;
        (f(&up) - f(&dn)) / (2.0 * eps as f64)
    }

    #[test]
    fn multilabel_bce_matches_reference_and_finite_differences() {
        let dev = Device::Cpu;
        let x0 = [2.0f32, -1.5, 0.3, -30.0, 25.0, 0.0];
        let t = [1.0f32, 0.0, 1.0, 1.0, 0.0, 1.0];
        let targets = Tensor::new(&t, &dev).unwrap().reshape((2, 3)).unwrap();
        let reference = |x: &[f32]| {
            x.iter()
                .zip(&t)
                .map(|(&x, &t)| {
                    let p = 1.0 / (1.0 + (-(x as f64)).exp());
                    -(t as f64 * p.max(1e-300).ln() + (1.0 - t as f64) * (1.0 - p).max(1e-300).ln())
                })
                .sum::<f64>()
                / x.len() as f64
        };
        let var = Var::new(&x0, &dev).unwrap();
        let loss = multilabel_bce(&var.as_tensor().reshape((2, 3)).unwrap(), &targets, None).unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - reference(&x0)).abs() < 1e-4, "{got} vs {}", reference(&x0));
        let grads = loss.backward().unwrap();
        let g = grads.get(var.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        for i in [0, 1, 2, 5] {
            let fd = central_difference(&reference, &x0, i);
            assert!((g[i] as f64 - fd).abs() < 1e-3, "d/dx{i}: {} vs {fd}", g[i]);
        }
        // saturated logits: finite loss and gradient (sigmoid − t) / n
        assert!((g[3] as f64 - (-1.0 / 6.0)).abs() < 1e-5 && (g[4] as f64 - 1.0 / 6.0).abs() < 1e-5);
        assert!(multilabel_bce(&targets, &targets.reshape((3, 2)).unwrap(), None).is_err());
    }

    /// Class weights: the loss equals the weighted reference, its gradient finite differences,
    /// unit weights give the plain loss, and the balanced weights are as documented.
    #[test]
    fn issue26_weighted_multilabel_bce_matches_reference_and_finite_differences() {
        let dev = Device::Cpu;
        let x0 = [2.0f32, -1.5, 0.3, -3.0, 2.5, 0.0];
        let t = [1.0f32, 0.0, 1.0, 1.0, 0.0, 0.0];
        let (wp, wn) = ([0.6f32, 2.5, 1.0], [3.0f32, 0.7, 1.0]);
        let targets = Tensor::new(&t, &dev).unwrap().reshape((2, 3)).unwrap();
        let reference = |x: &[f32]| {
            let mut sum = 0f64;
            for (i, (&x, &t)) in x.iter().zip(&t).enumerate() {
                let p = 1.0 / (1.0 + (-(x as f64)).exp());
                sum -= wp[i % 3] as f64 * t as f64 * p.ln() + wn[i % 3] as f64 * (1.0 - t as f64) * (1.0 - p).ln();
            }
            sum / x.len() as f64
        };
        let (pos, neg) = (Tensor::new(&wp, &dev).unwrap(), Tensor::new(&wn, &dev).unwrap());
        let var = Var::new(&x0, &dev).unwrap();
        let x = var.as_tensor().reshape((2, 3)).unwrap();
        let loss = multilabel_bce(&x, &targets, Some((&pos, &neg))).unwrap();
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        assert!((got - reference(&x0)).abs() < 1e-5, "{got} vs {}", reference(&x0));
        let g = loss
            .backward()
            .unwrap()
            .get(var.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for (i, &gi) in g.iter().enumerate() {
            let fd = central_difference(&reference, &x0, i);
            assert!((gi as f64 - fd).abs() < 1e-3, "d/dx{i}: {gi} vs {fd}");
        }
        let ones = Tensor::ones(3, DType::F32, &dev).unwrap();
        let unit = multilabel_bce(&x, &targets, Some((&ones, &ones)))
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let plain = multilabel_bce(&x, &targets, None).unwrap().to_scalar::<f32>().unwrap();
        assert!((unit - plain).abs() < 1e-6, "{unit} vs {plain}");
        assert!(multilabel_bce(&x, &targets, Some((&ones, &Tensor::ones(2, DType::F32, &dev).unwrap()))).is_err());
        let (p, n) = balanced_bce_weights(&[0.5, 0.9, 1.0, 0.0]);
        let close = |a: &[f32], b: [f64; 4]| a.iter().zip(b).all(|(&a, b)| (a as f64 - b).abs() < 1e-5 * b);
        assert!(close(&p, [1.0, 0.5 / 0.9, 0.5 / 0.99, 50.0]), "{p:?}");
        assert!(close(&n, [1.0, 5.0, 50.0, 0.5 / 0.99]), "{n:?}");
    }
}
