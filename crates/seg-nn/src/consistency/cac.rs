//! The CAC step on crop pairs: the cells of an overlap, the pooled cell maps, the step shared by
//! the trainer and on-device adaptation, and pushing its cells into the memory bank.

use candle_core::{DType, Result, Tensor};

use super::{
    cells, confidence_and_label, dc_positive_mask, directional_contrastive_both, values, DcConfig, MemoryBank,
    OverlapSide,
};

/// The cells of one crop pair's overlap, gathered from batched maps: for each side the flat
/// indices `[n]`, features `[n, d]`, confidences `[n]` and pseudo-labels `[n]`, and the `[n]`
/// 0/1 validity (cells inside the image, not padding). Entry `j` of both sides covers the same
/// pixels.
#[derive(Debug, Clone)]
pub struct OverlapCells {
    /// Flat spatial indices of the overlap cells in each side's grid (u32).
    pub index: [Tensor; 2],
    /// Features φ_o of each side.
    pub feats: [Tensor; 2],
    /// Confidences of each side.
    pub conf: [Tensor; 2],
    /// Pseudo-labels of each side.
    pub labels: [Tensor; 2],
    /// 1 where the cell is inside the image on both sides, else 0 (f32).
    pub valid: Tensor,
}

impl OverlapCells {
    /// Gathers `overlap` from `phi: [B, d, h, w]`, `conf` and `label: [B, h, w]`, side `k` from
    /// image `images[k]` of the batch; `None` when the crops do not overlap.
    pub fn gather(
        phi: &Tensor,
        conf: &Tensor,
        label: &Tensor,
        images: [usize; 2],
        overlap: &seg_core::data::pair::Overlap,
    ) -> Result<Option<Self>> {
        let n = overlap.indices[0].len();
        if n == 0 {
            return Ok(None);
        }
        let dev = phi.device();
        let index = [
            Tensor::from_slice(&overlap.indices[0], n, dev)?,
            Tensor::from_slice(&overlap.indices[1], n, dev)?,
        ];
        let valid: Vec<f32> = overlap.valid.iter().map(|&v| v as u8 as f32).collect();
        let side = |f: fn(&Tensor, usize, &Tensor) -> Result<Tensor>, x: &Tensor| -> Result<[Tensor; 2]> {
            Ok([f(x, images[0], &index[0])?, f(x, images[1], &index[1])?])
        };
        Ok(Some(Self {
            feats: side(cells, phi)?,
            conf: side(values, conf)?,
            labels: side(values, label)?,
            valid: Tensor::from_vec(valid, n, dev)?,
            index,
        }))
    }

    /// Side `k` (0 or 1) for [`directional_contrastive_both`].
    pub fn side(&self, k: usize) -> OverlapSide<'_> {
        OverlapSide {
            feats: &self.feats[k],
            conf: &self.conf[k],
            labels: &self.labels[k],
        }
    }
}

/// Stride of CAC's cells: the stride-4 decoder embedding, 2×2 average-pooled.
pub const CAC_STRIDE: u32 = 8;

/// CAC's cell maps of one forward pass over crop pairs (`[2b, …]`: the first crops, then the
/// second ones): the stride-4 embedding and scores 2×2 average-pooled (stride
/// [`CAC_STRIDE`]), and the pooled scores' confidences and pseudo-labels.
#[derive(Debug, Clone)]
pub struct CacCells {
    /// `[2b, d, h/8, w/8]` pooled embedding (to be projected and normalised by the caller).
    pub emb: Tensor,
    /// `[2b, C, h/8, w/8]` pooled scores (= the classifier on the pooled embedding).
    pub scores: Tensor,
    /// `[2b, h/8, w/8]` max class probability, detached.
    pub conf: Tensor,
    /// `[2b, h/8, w/8]` u32 argmax, detached.
    pub label: Tensor,
}

impl CacCells {
    /// Pools `embedding` `[2b, d, h/4, w/4]` and `logits_low` `[2b, C, h/4, w/4]`.
    pub fn pool(embedding: &Tensor, logits_low: &Tensor) -> Result<Self> {
        let emb = embedding.avg_pool2d(2)?; // [2b, d, h/8, w/8]
        let scores = logits_low.avg_pool2d(2)?; // [2b, C, h/8, w/8]
        let (conf, label) = confidence_and_label(&scores)?; // [2b, h/8, w/8] each
        Ok(Self {
            emb,
            scores,
            conf,
            label,
        })
    }
}

/// What [`cac_step`] computed.
#[derive(Debug)]
pub struct CacStep {
    /// `(1/B) Σ_b (l_dc(φ_o1, φ_o2) + l_dc(φ_o2, φ_o1))` over each image's overlap; `None`
    /// when the loss was not asked for.
    pub loss: Option<Tensor>,
    /// Each image's overlap cells (`None` where its crops do not overlap).
    pub overlaps: Vec<Option<OverlapCells>>,
    /// The step's own negatives, detached `[n, d]`, and their pseudo-labels `[n]` u32: what the
    /// caller pushes into its bank once the step is done.
    pub feats: Tensor,
    /// Pseudo-labels of [`Self::feats`].
    pub labels: Tensor,
    /// Negatives used (own cells + bank).
    pub negatives: usize,
    /// Fraction of overlap locations (both directions) whose positive passed the mask.
    pub positive_ratio: f64,
}

/// One step of CAC's consistency on crop pairs — the one implementation the trainer's `cac`
/// method and the runtime's on-device adaptation share.
///
/// `phi` `[2b, k, h/8, w/8]` are the normalised (projected) cell features, `conf` and `label`
/// `[2b, h/8, w/8]` the [`CacCells`] of the same pass; image `i`'s crops are batch entries `i`
/// and `b + i`. Negatives are the valid cells of every crop (detached; `select(k, i, idx)`
/// may keep a subset of crop `k` of image `i`'s valid flat indices `idx`) followed by the
/// bank's. With `with_loss`, the directional contrastive loss of each overlap both ways,
/// averaged over the images ([`directional_contrastive_both`]).
#[allow(clippy::too_many_arguments)]
pub fn cac_step(
    phi: &Tensor,
    conf: &Tensor,
    label: &Tensor,
    geometry: &[seg_core::data::pair::PairGeometry],
    bank: &MemoryBank,
    dc: &DcConfig,
    with_loss: bool,
    select: &mut dyn FnMut(usize, usize, Vec<u32>) -> Vec<u32>,
) -> Result<CacStep> {
    let dev = phi.device().clone();
    let b = geometry.len();
    let phi_d = phi.detach();
    let (mut feats, mut labels) = (Vec::new(), Vec::new());
    for k in 0..2 {
        for (i, g) in geometry.iter().enumerate() {
            let valid: Vec<u32> = g
                .cell_valid(k, CAC_STRIDE)
                .iter()
                .enumerate()
                .filter(|(_, &v)| v)
                .map(|(j, _)| j as u32)
                .collect();
            let idx = select(k, i, valid);
            if idx.is_empty() {
                continue;
            }
            let n = idx.len();
            let idx = Tensor::from_vec(idx, n, &dev)?;
            feats.push(cells(&phi_d, k * b + i, &idx)?); // [n, k]
            labels.push(values(label, k * b + i, &idx)?); // [n]
        }
    }
    let (feats, labels) = if feats.is_empty() {
        (
            Tensor::zeros((0, phi.dim(1)?), DType::F32, &dev)?,
            Tensor::zeros(0, DType::U32, &dev)?,
        )
    } else {
        (Tensor::cat(&feats, 0)?, Tensor::cat(&labels, 0)?)
    };
    let (negatives, negative_labels) = match bank.tensors(&dev)? {
        Some((bf, bl)) => (Tensor::cat(&[&feats, &bf], 0)?, Tensor::cat(&[&labels, &bl], 0)?),
        None => (feats.clone(), labels.clone()),
    };
    let mut total = Tensor::new(0f32, &dev)?;
    let (mut kept, mut locations) = (0f64, 0f64);
    let mut overlaps = Vec::with_capacity(b);
    for (i, g) in geometry.iter().enumerate() {
        // [n, k] features, [n] confidences and labels of each side
        let o = OverlapCells::gather(phi, conf, label, [i, b + i], &g.overlap(CAC_STRIDE))?;
        if let (Some(o), true) = (&o, with_loss) {
            let l =
                directional_contrastive_both(o.side(0), o.side(1), &negatives, &negative_labels, Some(&o.valid), dc)?;
            total = (total + l)?;
            for (ca, cp) in [(&o.conf[0], &o.conf[1]), (&o.conf[1], &o.conf[0])] {
                let m = (dc_positive_mask(ca, cp, dc)? * &o.valid)?;
                kept += m.sum_all()?.to_scalar::<f32>()? as f64;
            }
            locations += 2.0 * o.valid.sum_all()?.to_scalar::<f32>()? as f64;
        }
        overlaps.push(o);
    }
    Ok(CacStep {
        loss: if with_loss {
            Some((total / b.max(1) as f64)?)
        } else {
            None
        },
        overlaps,
        negatives: negatives.dim(0)?,
        feats,
        labels,
        positive_ratio: if locations > 0.0 { kept / locations } else { 0.0 },
    })
}

/// Pushes rows `pick` of `feats` `[n, d]` / `labels` `[n]` into `bank` (a step's cells become
/// negatives of the next steps).
pub fn push_to_bank(bank: &mut MemoryBank, feats: &Tensor, labels: &Tensor, pick: Vec<u32>) -> Result<()> {
    if pick.is_empty() || bank.capacity() == 0 {
        return Ok(());
    }
    let n = pick.len();
    let pick = Tensor::from_vec(pick, n, feats.device())?;
    bank.push(&feats.index_select(&pick, 0)?, &labels.index_select(&pick, 0)?)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::super::{l2_normalize, rand_vec};
    use super::*;

    /// Issue #24: the shared CAC step equals its parts — each image's overlap loss both ways
    /// ([`directional_contrastive_both`]) averaged over the images, with negatives = every
    /// valid cell of every crop (first crops, then second) + the bank; `select` subsamples.
    #[test]
    fn issue24_cac_step_is_the_mean_of_the_per_image_overlap_losses() {
        use seg_core::data::pair::{PairGeometry, Window};
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (b, d, h, w) = (2usize, 6usize, 4usize, 4usize); // two images, 32x32 crops at stride 8
        let dev = Device::Cpu;
        let geometry: Vec<PairGeometry> = (0..b)
            .map(|i| PairGeometry {
                image_hw: (40, 40),
                crop_hw: (32, 32),
                windows: [
                    Window {
                        top: 0,
                        left: 0,
                        flip: false,
                    },
                    Window {
                        top: 8,
                        left: 8 * i as i64,
                        flip: i == 1,
                    },
                ],
            })
            .collect();
        let phi = l2_normalize(
            &Tensor::from_vec(rand_vec(&mut rng, 2 * b * d * h * w), (2 * b, d, h, w), &dev).unwrap(),
            1,
        )
        .unwrap();
        let scores = Tensor::from_vec(rand_vec(&mut rng, 2 * b * 3 * h * w), (2 * b, 3, h, w), &dev).unwrap();
        let (conf, label) = confidence_and_label(&scores).unwrap();
        let mut bank = MemoryBank::new(16, d);
        let bf = l2_normalize(&Tensor::from_vec(rand_vec(&mut rng, 5 * d), (5, d), &dev).unwrap(), 1).unwrap();
        bank.push(&bf, &Tensor::new(&[0u32, 1, 2, 0, 1], &dev).unwrap())
            .unwrap();
        let cfg = DcConfig {
            gamma: 0.0,
            ..Default::default()
        };
        let step = cac_step(&phi, &conf, &label, &geometry, &bank, &cfg, true, &mut |_, _, idx| idx).unwrap();
        // negatives: the valid cells of all four crops + the bank's five
        let own: usize = (0..2)
            .flat_map(|k| {
                geometry
                    .iter()
                    .map(move |g| g.cell_valid(k, CAC_STRIDE).iter().filter(|&&v| v).count())
            })
            .sum();
        assert_eq!(step.feats.dim(0).unwrap(), own);
        assert_eq!(step.negatives, own + 5);
        let (bfe, bl) = bank.tensors(&dev).unwrap().unwrap();
        let neg = Tensor::cat(&[&step.feats, &bfe], 0).unwrap();
        let neg_l = Tensor::cat(&[&step.labels, &bl], 0).unwrap();
        let mut want = 0f32;
        for (i, g) in geometry.iter().enumerate() {
            let o = OverlapCells::gather(&phi, &conf, &label, [i, b + i], &g.overlap(CAC_STRIDE))
                .unwrap()
                .unwrap();
            want += directional_contrastive_both(o.side(0), o.side(1), &neg, &neg_l, Some(&o.valid), &cfg)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
        }
        let got = step.loss.unwrap().to_scalar::<f32>().unwrap();
        assert!((got - want / b as f32).abs() < 1e-6, "{got} vs {}", want / b as f32);
        assert!(step.positive_ratio > 0.0 && step.positive_ratio <= 1.0);
        // a selection of one cell per crop leaves four own negatives; no loss asked, none given
        let step = cac_step(&phi, &conf, &label, &geometry, &bank, &cfg, false, &mut |_, _, idx| {
            idx[..1].to_vec()
        })
        .unwrap();
        assert_eq!((step.feats.dim(0).unwrap(), step.negatives), (4, 9));
        assert!(step.loss.is_none() && step.overlaps.iter().all(Option::is_some));
    }
}
