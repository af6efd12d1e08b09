//! Semi-supervised consistency losses and their helpers, free functions with explicit masks,
//! shared by the trainer's methods and the runtime's on-device adaptation:
//!
//! - [`directional_contrastive`]: CAC's directional contrastive loss (Lai et al., CVPR 2021),
//!   with [`dc_positive_mask`] (directional mask and positive filtering), negative sampling by
//!   pseudo-label, negatives processed in chunks, and a [`MemoryBank`] of past negatives;
//! - [`cross_pseudo_supervision`]: CPS's symmetric cross-entropy on each other's argmax;
//! - [`dars_select`]: DARS per-class thresholds (He et al., ICCV 2021);
//! - [`confidence_and_label`]: softmax confidence and argmax pseudo-label, detached;
//! - [`OverlapCells`]: a crop pair's overlap cells gathered from batched maps ([`cells`],
//!   [`values`]).

use candle_core::{DType, Device, Result, Tensor};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::loss;

/// Settings of the directional contrastive loss.
#[derive(Debug, Clone, PartialEq)]
pub struct DcConfig {
    /// Temperature τ of `r(a, b) = exp(cos(a, b) / τ)`.
    pub temperature: f32,
    /// Positive-filtering threshold γ on the more confident side's confidence.
    pub gamma: f32,
    /// Directional mask `M_d = 1{conf(anchor) < conf(positive)}` (off: every location).
    pub directional: bool,
    /// Positive filtering `1{conf(positive) > γ}` (off: no filter).
    pub positive_filter: bool,
    /// Negative sampling `M_n = 1{ỹ_anchor ≠ ỹ_n}` (off: every negative counts).
    pub negative_sampling: bool,
    /// Negatives per chunk (bounds the `[anchors, chunk]` similarity matrix).
    pub chunk: usize,
}

impl Default for DcConfig {
    fn default() -> Self {
        Self {
            temperature: 0.1,
            gamma: 0.75,
            directional: true,
            positive_filter: true,
            negative_sampling: true,
            chunk: 4096,
        }
    }
}

/// Softmax confidence `max_c p_c` and pseudo-label `argmax_c` of class scores `[b, C, h, w]`,
/// both detached: `([b, h, w] f32, [b, h, w] u32)`.
pub fn confidence_and_label(logits: &Tensor) -> Result<(Tensor, Tensor)> {
    let logits = logits.detach();
    let prob = loss::log_softmax(&logits, 1)?.exp()?; // [b, C, h, w]
    Ok((prob.max(1)?, logits.argmax(1)?))
}

/// The positive mask `M_d,pf` of [`directional_contrastive`] as `[P]` f32 (0/1):
/// `1{conf_anchor < conf_positive}` (when `cfg.directional`) `· 1{conf_positive > γ}` (when
/// `cfg.positive_filter`).
pub fn dc_positive_mask(conf_anchor: &Tensor, conf_positive: &Tensor, cfg: &DcConfig) -> Result<Tensor> {
    let mut m = conf_anchor.ones_like()?.to_dtype(DType::F32)?; // [P]
    if cfg.directional {
        m = (m * conf_anchor.lt(conf_positive)?.to_dtype(DType::F32)?)?;
    }
    if cfg.positive_filter {
        m = (m * conf_positive.gt(cfg.gamma as f64)?.to_dtype(DType::F32)?)?;
    }
    Ok(m)
}

/// Per anchor location `i`, `−log( r(a_i, p_i) / ( r(a_i, p_i) + Σ_n M_n r(a_i, n) ) )` with
/// `r(a, b) = exp(a·b / τ)` on L2-normalised features, as `[P]`.
///
/// - `anchor`: `[P, d]` normalised features φ_o1 — the only input that gets a gradient;
/// - `positive`: `[P, d]` normalised φ_o2 at the same locations (detached here);
/// - `anchor_labels`: `[P]` u32 pseudo-labels ỹ_o1;
/// - `negatives`: `[N, d]` normalised features (detached here), `negative_labels`: `[N]` u32;
///   `M_n = 1{ỹ_o1 ≠ ỹ_n}` when `cfg.negative_sampling`, else 1.
///
/// The negatives are processed `cfg.chunk` at a time outside the autograd graph: the sum
/// `S = Σ_n M_n r(a, n)` and its gradient `∂S/∂a = Σ_n M_n r(a, n) n / τ` are accumulated per
/// chunk, and `S` enters the graph as `S + a·g − stopgrad(a·g)` (value `S`, gradient `g`), so
/// memory stays at `[P, chunk]` whatever the number of negatives. All similarities are shifted
/// by `−1/τ` (exact, it cancels), which keeps `exp` in range for normalised inputs.
pub fn dc_per_location(
    anchor: &Tensor,
    positive: &Tensor,
    anchor_labels: &Tensor,
    negatives: &Tensor,
    negative_labels: &Tensor,
    cfg: &DcConfig,
) -> Result<Tensor> {
    let inv_t = 1.0 / cfg.temperature as f64;
    let (p, d) = anchor.dims2()?;
    let positive = positive.detach();
    let pos = ((anchor * &positive)?.sum(1)? * inv_t)?.affine(1.0, -inv_t)?; // [P], in the graph
    let a = anchor.detach();
    let la = anchor_labels.to_dtype(DType::U32)?.reshape((p, 1))?; // [P, 1]
    let mut s = Tensor::zeros(p, DType::F32, anchor.device())?; // [P]
    let mut g = Tensor::zeros((p, d), DType::F32, anchor.device())?; // [P, d]
    let n = negatives.dim(0)?;
    let chunk = cfg.chunk.max(1);
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let neg = negatives.narrow(0, start, len)?.detach(); // [c, d]
        let sim = (a.matmul(&neg.t()?)? * inv_t)?.affine(1.0, -inv_t)?; // [P, c]
        let mut e = sim.exp()?; // [P, c]
        if cfg.negative_sampling {
            let ln = negative_labels
                .narrow(0, start, len)?
                .to_dtype(DType::U32)?
                .reshape((1, len))?;
            e = (e * la.broadcast_ne(&ln)?.to_dtype(DType::F32)?)?; // [P, c]
        }
        s = (s + e.sum(1)?)?;
        g = (g + (e.matmul(&neg)? * inv_t)?)?; // [P, d]
        start += len;
    }
    // value S, gradient g with respect to the anchor
    let ag = (anchor * &g)?.sum(1)?; // [P]
    let s = (s + (&ag - ag.detach())?)?;
    // log(e^pos + S) - pos
    (pos.exp()? + s)?.log()? - pos
}

/// CAC's directional contrastive loss for one overlap, one direction:
/// `l_dc(φ_o1, φ_o2) = −(1/N) Σ_{h,w} M_d,pf · log( r(φ_o1, φ_o2) / ( r(φ_o1, φ_o2) + Σ_n M_n r(φ_o1, φ_n) ) )`.
///
/// Inputs as [`dc_per_location`], plus `conf_anchor`, `conf_positive` (`[P]` max class
/// probability on each side, for [`dc_positive_mask`]) and an optional `valid` `[P]` f32 mask of
/// overlap locations to use at all (e.g. not padding). `N` is the number of valid overlap
/// locations (the paper's `Σ_{h,w}` runs over the overlap); 0 when there is none. The gradient
/// reaches `anchor` only (`positive` and `negatives` are detached).
#[allow(clippy::too_many_arguments)]
pub fn directional_contrastive(
    anchor: &Tensor,
    positive: &Tensor,
    conf_anchor: &Tensor,
    conf_positive: &Tensor,
    anchor_labels: &Tensor,
    negatives: &Tensor,
    negative_labels: &Tensor,
    valid: Option<&Tensor>,
    cfg: &DcConfig,
) -> Result<Tensor> {
    let per = dc_per_location(anchor, positive, anchor_labels, negatives, negative_labels, cfg)?; // [P]
    let mut m = dc_positive_mask(conf_anchor, conf_positive, cfg)?; // [P]
    let n = match valid {
        Some(v) => {
            let v = v.to_dtype(DType::F32)?;
            m = (m * &v)?;
            v.sum_all()?
        }
        None => Tensor::new(per.dim(0)? as f32, per.device())?,
    };
    (per * m)?.sum_all()?.div(&n.maximum(1.0)?)
}

/// One side of an overlap for [`directional_contrastive_both`]: `[P, d]` normalised features,
/// `[P]` confidences and `[P]` u32 pseudo-labels at the overlap locations.
#[derive(Debug, Clone, Copy)]
pub struct OverlapSide<'a> {
    /// Features φ_o (normalised).
    pub feats: &'a Tensor,
    /// Max class probability.
    pub conf: &'a Tensor,
    /// Pseudo-label.
    pub labels: &'a Tensor,
}

/// Rows of `x: [B, d, h, w]` (image `img`) at flat spatial `idx: [n]` (u32): `[n, d]`.
pub fn cells(x: &Tensor, img: usize, idx: &Tensor) -> Result<Tensor> {
    let (_, d, h, w) = x.dims4()?;
    x.get(img)?.reshape((d, h * w))?.index_select(idx, 1)?.t() // [n, d]
}

/// Values of `x: [B, h, w]` (image `img`) at flat spatial `idx: [n]` (u32): `[n]`.
pub fn values(x: &Tensor, img: usize, idx: &Tensor) -> Result<Tensor> {
    x.get(img)?.flatten_all()?.index_select(idx, 0)
}

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

/// CAC's loss of one overlap in both directions, `l_dc(φ_o1, φ_o2) + l_dc(φ_o2, φ_o1)` (see
/// [`directional_contrastive`]; each direction's gradient reaches only its anchor side).
pub fn directional_contrastive_both(
    a: OverlapSide,
    b: OverlapSide,
    negatives: &Tensor,
    negative_labels: &Tensor,
    valid: Option<&Tensor>,
    cfg: &DcConfig,
) -> Result<Tensor> {
    let ab = directional_contrastive(
        a.feats,
        b.feats,
        a.conf,
        b.conf,
        a.labels,
        negatives,
        negative_labels,
        valid,
        cfg,
    )?;
    let ba = directional_contrastive(
        b.feats,
        a.feats,
        b.conf,
        a.conf,
        b.labels,
        negatives,
        negative_labels,
        valid,
        cfg,
    )?;
    ab + ba
}

/// CPS (Chen et al., CVPR 2021): `CE(P1, argmax P2) + CE(P2, argmax P1)` over `[b, C, h, w]`
/// scores of two networks, with one-hot pseudo-labels and no gradient through the argmax.
/// `valid`: optional `[b, h, w]` u8/u32 mask (0 = no pseudo-label there, e.g. padding); each CE
/// is averaged over the valid pixels.
pub fn cross_pseudo_supervision(logits1: &Tensor, logits2: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
    let ignore = seg_core::IGNORE as u32;
    let label = |l: &Tensor| -> Result<Tensor> {
        let y = l.detach().argmax(1)?; // [b, h, w] u32
        match valid {
            Some(v) => v
                .to_dtype(DType::U32)?
                .ne(0u32)?
                .where_cond(&y, &Tensor::full(ignore, y.shape(), y.device())?),
            None => Ok(y),
        }
    };
    let (y1, y2) = (label(logits1)?, label(logits2)?);
    loss::cross_entropy(logits1, &y2, ignore, None)? + loss::cross_entropy(logits2, &y1, ignore, None)?
}

/// A ring buffer of past features `[capacity, dim]` and their pseudo-labels: the newest rows
/// overwrite the oldest once full.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryBank {
    capacity: usize,
    dim: usize,
    feats: Vec<f32>,
    labels: Vec<u32>,
    next: usize,
    len: usize,
}

impl MemoryBank {
    /// An empty bank of `capacity` rows of `dim` features.
    pub fn new(capacity: usize, dim: usize) -> Self {
        Self {
            capacity,
            dim,
            feats: vec![0.0; capacity * dim],
            labels: vec![0; capacity],
            next: 0,
            len: 0,
        }
    }

    /// Rows held (at most the capacity).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was pushed yet (or the capacity is 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The capacity in rows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Appends `feats: [n, dim]` and `labels: [n]` (detached), overwriting the oldest rows;
    /// when `n` exceeds the capacity only the last `capacity` rows are kept.
    pub fn push(&mut self, feats: &Tensor, labels: &Tensor) -> Result<()> {
        if self.capacity == 0 {
            return Ok(());
        }
        let (n, d) = feats.dims2()?;
        if d != self.dim {
            candle_core::bail!("MemoryBank: features have {d} channels, the bank {}", self.dim);
        }
        let f = feats.detach().flatten_all()?.to_vec1::<f32>()?;
        let l = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let skip = n.saturating_sub(self.capacity);
        for i in skip..n {
            let row = self.next;
            self.feats[row * d..(row + 1) * d].copy_from_slice(&f[i * d..(i + 1) * d]);
            self.labels[row] = l[i];
            self.next = (self.next + 1) % self.capacity;
            self.len = (self.len + 1).min(self.capacity);
        }
        Ok(())
    }

    /// The held rows as `([len, dim] f32, [len] u32)` tensors on `dev` (`None` when empty).
    pub fn tensors(&self, dev: &Device) -> Result<Option<(Tensor, Tensor)>> {
        if self.len == 0 {
            return Ok(None);
        }
        let f = Tensor::from_slice(&self.feats[..self.len * self.dim], (self.len, self.dim), dev)?;
        let l = Tensor::from_slice(&self.labels[..self.len], self.len, dev)?;
        Ok(Some((f, l)))
    }

    /// The bank as tensors for a checkpoint: `feats [capacity, dim]`, `labels [capacity]`,
    /// `meta [next, len]` (u32).
    pub fn state(&self) -> Result<[(&'static str, Tensor); 3]> {
        let dev = Device::Cpu;
        Ok([
            (
                "feats",
                Tensor::from_slice(&self.feats, (self.capacity, self.dim), &dev)?,
            ),
            ("labels", Tensor::from_slice(&self.labels, self.capacity, &dev)?),
            ("meta", Tensor::new(&[self.next as u32, self.len as u32], &dev)?),
        ])
    }

    /// Restores a bank saved by [`Self::state`]; shapes must match this bank's.
    pub fn load_state(&mut self, feats: &Tensor, labels: &Tensor, meta: &Tensor) -> Result<()> {
        if feats.dims() != [self.capacity, self.dim] || labels.dims() != [self.capacity] {
            candle_core::bail!(
                "MemoryBank: saved bank is {:?}, this one [{}, {}]",
                feats.dims(),
                self.capacity,
                self.dim
            );
        }
        self.feats = feats.flatten_all()?.to_vec1::<f32>()?;
        self.labels = labels.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        let m = meta.to_dtype(DType::U32)?.to_vec1::<u32>()?;
        if m.len() != 2 || m[0] as usize >= self.capacity.max(1) || m[1] as usize > self.capacity {
            candle_core::bail!("MemoryBank: bad saved position {m:?}");
        }
        (self.next, self.len) = (m[0] as usize, m[1] as usize);
        Ok(())
    }
}

/// The outcome of [`dars_select`].
#[derive(Debug, Clone, PartialEq)]
pub struct DarsSelection {
    /// Per pixel: selected as a pseudo-label.
    pub selected: Vec<bool>,
    /// Per class: the confidence threshold (`+∞` when the class gets no pixel).
    pub thresholds: Vec<f32>,
    /// Per class: pixels selected.
    pub counts: Vec<usize>,
}

/// DARS (He et al., ICCV 2021) per-class thresholds: of the `budget` pseudo-labels, class `c`
/// gets `n_c = min(round(budget · target_c / Σ target), #pixels predicted c)`, the `n_c` most
/// confident pixels whose pseudo-label is `c`. The threshold `t_c` is the `n_c`-th highest such
/// confidence: every pixel above it is selected, and among the pixels tied at `t_c` the ones
/// still needed are drawn at random from `rng`.
///
/// `conf`, `labels`, `valid`: per pixel (same length); `target`: per class (any non-negative
/// weights, e.g. the labeled set's class frequencies).
pub fn dars_select(
    conf: &[f32],
    labels: &[u32],
    valid: &[bool],
    target: &[f64],
    budget: usize,
    rng: &mut impl Rng,
) -> DarsSelection {
    let nc = target.len();
    let total: f64 = target.iter().filter(|v| v.is_finite() && **v > 0.0).sum();
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); nc];
    for (i, (&l, &v)) in labels.iter().zip(valid).enumerate() {
        if v && (l as usize) < nc {
            by_class[l as usize].push(i);
        }
    }
    let mut selected = vec![false; conf.len()];
    let mut thresholds = vec![f32::INFINITY; nc];
    let mut counts = vec![0; nc];
    for (c, mut idx) in by_class.into_iter().enumerate() {
        let share = if total > 0.0 && target[c] > 0.0 {
            target[c] / total
        } else {
            0.0
        };
        let want = ((budget as f64 * share).round() as usize).min(idx.len());
        if want == 0 {
            continue;
        }
        idx.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));
        let t = conf[idx[want - 1]];
        let above: Vec<usize> = idx.iter().copied().filter(|&i| conf[i] > t).collect();
        let mut tied: Vec<usize> = idx.iter().copied().filter(|&i| conf[i] == t).collect();
        tied.shuffle(rng);
        for &i in above.iter().chain(&tied[..want - above.len()]) {
            selected[i] = true;
        }
        thresholds[c] = t;
        counts[c] = want;
    }
    DarsSelection {
        selected,
        thresholds,
        counts,
    }
}

/// `[N, d]` rows of `x: [b, d, h, w]` gathered per image at flat spatial indices: for image `k`,
/// `indices[k]` indexes its `h · w` grid. Returns the rows concatenated in order.
pub fn gather_locations(x: &Tensor, indices: &[Vec<u32>]) -> Result<Tensor> {
    let (b, d, h, w) = x.dims4()?;
    let flat = x.reshape((b, d, h * w))?; // [b, d, h*w]
    let mut rows = Vec::with_capacity(b);
    for (k, idx) in indices.iter().enumerate().take(b) {
        if idx.is_empty() {
            continue;
        }
        let i = Tensor::from_slice(idx, idx.len(), x.device())?;
        rows.push(flat.get(k)?.index_select(&i, 1)?.t()?); // [n_k, d]
    }
    if rows.is_empty() {
        return Tensor::zeros((0, d), x.dtype(), x.device());
    }
    Tensor::cat(&rows, 0)
}

/// L2-normalises `x` along `dim` (`x / max(‖x‖, 1e-12)`), differentiably.
pub fn l2_normalize(x: &Tensor, dim: usize) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(dim)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn rand_vec(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn normalize_rows(v: &[f32], d: usize) -> Vec<f64> {
        v.chunks(d)
            .flat_map(|r| {
                let n = r.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt().max(1e-12);
                r.iter().map(move |x| *x as f64 / n)
            })
            .collect()
    }

    /// Straight from the formula, one location at a time, in f64 (inputs not yet normalised).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        a: &[f32],
        p: &[f32],
        ca: &[f32],
        cp: &[f32],
        la: &[u32],
        n: &[f32],
        ln: &[u32],
        valid: &[f32],
        d: usize,
        cfg: &DcConfig,
    ) -> f64 {
        let (a, p, n) = (normalize_rows(a, d), normalize_rows(p, d), normalize_rows(n, d));
        let tau = cfg.temperature as f64;
        let dot = |x: &[f64], y: &[f64]| x.iter().zip(y).map(|(u, v)| u * v).sum::<f64>();
        let r = |x: &[f64], y: &[f64]| (dot(x, y) / tau).exp();
        let (mut sum, mut count) = (0.0, 0.0);
        for i in 0..la.len() {
            count += valid[i] as f64;
            let md = !cfg.directional || ca[i] < cp[i];
            let pf = !cfg.positive_filter || cp[i] > cfg.gamma;
            if !(md && pf) || valid[i] == 0.0 {
                continue;
            }
            let ai = &a[i * d..(i + 1) * d];
            let rp = r(ai, &p[i * d..(i + 1) * d]);
            let mut den = rp;
            for j in 0..ln.len() {
                if !cfg.negative_sampling || la[i] != ln[j] {
                    den += r(ai, &n[j * d..(j + 1) * d]);
                }
            }
            sum += -(rp / den).ln();
        }
        if count == 0.0 {
            0.0
        } else {
            sum / count
        }
    }

    struct Case {
        a: Vec<f32>,
        p: Vec<f32>,
        ca: Vec<f32>,
        cp: Vec<f32>,
        la: Vec<u32>,
        n: Vec<f32>,
        ln: Vec<u32>,
        valid: Vec<f32>,
        d: usize,
    }

    fn case(seed: u64) -> Case {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (p, n, d) = (9, 13, 5);
        Case {
            a: rand_vec(&mut rng, p * d),
            p: rand_vec(&mut rng, p * d),
            ca: (0..p).map(|_| rng.random_range(0.3f32..1.0)).collect(),
            cp: (0..p).map(|_| rng.random_range(0.3f32..1.0)).collect(),
            la: (0..p).map(|_| rng.random_range(0u32..3)).collect(),
            n: rand_vec(&mut rng, n * d),
            ln: (0..n).map(|_| rng.random_range(0u32..3)).collect(),
            valid: (0..p).map(|i| if i == 4 { 0.0 } else { 1.0 }).collect(),
            d,
        }
    }

    fn dc(c: &Case, a: &Tensor, p: &Tensor, n: &Tensor, cfg: &DcConfig) -> Tensor {
        let dev = Device::Cpu;
        let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &dev).unwrap();
        let u = |v: &[u32]| Tensor::from_slice(v, v.len(), &dev).unwrap();
        directional_contrastive(
            &l2_normalize(a, 1).unwrap(),
            &l2_normalize(p, 1).unwrap(),
            &t(&c.ca),
            &t(&c.cp),
            &u(&c.la),
            &l2_normalize(n, 1).unwrap(),
            &u(&c.ln),
            Some(&t(&c.valid)),
            cfg,
        )
        .unwrap()
    }

    fn variants() -> Vec<DcConfig> {
        let base = DcConfig {
            chunk: 4, // 13 negatives: chunks of 4, 4, 4, 1
            gamma: 0.6,
            ..Default::default()
        };
        vec![
            base.clone(),
            DcConfig {
                directional: false,
                ..base.clone()
            },
            DcConfig {
                positive_filter: false,
                ..base.clone()
            },
            DcConfig {
                negative_sampling: false,
                ..base.clone()
            },
            DcConfig {
                temperature: 0.5,
                chunk: 100,
                ..base
            },
        ]
    }

    #[test]
    fn dc_loss_matches_a_per_location_reference() {
        let dev = Device::Cpu;
        for seed in 0..4 {
            let c = case(seed);
            let (np, nn) = (c.la.len(), c.ln.len());
            let a = Tensor::from_slice(&c.a, (np, c.d), &dev).unwrap();
            let p = Tensor::from_slice(&c.p, (np, c.d), &dev).unwrap();
            let n = Tensor::from_slice(&c.n, (nn, c.d), &dev).unwrap();
            for cfg in variants() {
                let got = dc(&c, &a, &p, &n, &cfg).to_scalar::<f32>().unwrap() as f64;
                let want = reference(&c.a, &c.p, &c.ca, &c.cp, &c.la, &c.n, &c.ln, &c.valid, c.d, &cfg);
                assert!(want > 0.0, "degenerate case (seed {seed}, {cfg:?})");
                assert!(
                    (got - want).abs() < 1e-4 * want.max(1.0),
                    "seed {seed} {cfg:?}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn dc_gradient_reaches_only_the_anchor_and_matches_finite_differences() {
        let dev = Device::Cpu;
        let c = case(7);
        let (np, nn) = (c.la.len(), c.ln.len());
        for cfg in variants() {
            let a = Var::from_slice(&c.a, (np, c.d), &dev).unwrap();
            let p = Var::from_slice(&c.p, (np, c.d), &dev).unwrap();
            let n = Var::from_slice(&c.n, (nn, c.d), &dev).unwrap();
            let loss = dc(&c, a.as_tensor(), p.as_tensor(), n.as_tensor(), &cfg);
            let grads = loss.backward().unwrap();
            for (name, v) in [("positive", &p), ("negatives", &n)] {
                if let Some(g) = grads.get(v) {
                    let m = g.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
                    assert_eq!(m, 0.0, "{name} got a gradient");
                }
            }
            let g = grads.get(&a).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(g.iter().any(|v| v.abs() > 1e-4), "no gradient into the anchor");
            let eps = 1e-3f32;
            for i in 0..c.a.len() {
                let (mut ap, mut am) = (c.a.clone(), c.a.clone());
                ap[i] += eps;
                am[i] -= eps;
                let f = |a: &[f32]| reference(a, &c.p, &c.ca, &c.cp, &c.la, &c.n, &c.ln, &c.valid, c.d, &cfg);
                let num = ((f(&ap) - f(&am)) / (2.0 * eps as f64)) as f32;
                assert!(
                    (num - g[i]).abs() < 2e-3 * num.abs().max(1.0),
                    "elem {i}: {num} vs {}",
                    g[i]
                );
            }
        }
    }

    #[test]
    fn positive_mask_is_directional_and_filtered() {
        let dev = Device::Cpu;
        let ca = Tensor::new(&[0.5f32, 0.9, 0.6, 0.8, 0.7], &dev).unwrap();
        let cp = Tensor::new(&[0.8f32, 0.7, 0.7, 0.95, 0.7], &dev).unwrap();
        let m = |cfg: DcConfig| dc_positive_mask(&ca, &cp, &cfg).unwrap().to_vec1::<f32>().unwrap();
        let cfg = DcConfig::default(); // γ = 0.75
                                       // less confident anchor: 0, 2, 3 (4 is a tie: not strictly less); positive > 0.75: 0, 3
        assert_eq!(m(cfg.clone()), [1.0, 0.0, 0.0, 1.0, 0.0]);
        let no_filter = DcConfig {
            positive_filter: false,
            ..cfg.clone()
        };
        assert_eq!(m(no_filter), [1.0, 0.0, 1.0, 1.0, 0.0]);
        let no_dir = DcConfig {
            directional: false,
            ..cfg
        };
        assert_eq!(m(no_dir), [1.0, 0.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn negatives_with_the_anchors_pseudo_label_are_left_out() {
        let dev = Device::Cpu;
        // anchor = positive: with no negatives the loss is -log(1) = 0
        let a = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &dev).unwrap();
        let n = Tensor::new(&[[1f32, 0.0], [0.0, 1.0], [-1.0, 0.0]], &dev).unwrap();
        let la = Tensor::new(&[2u32, 5], &dev).unwrap();
        let cfg = DcConfig::default();
        let per = |ln: &[u32], cfg: &DcConfig| {
            dc_per_location(&a, &a, &la, &n, &Tensor::new(ln, &dev).unwrap(), cfg)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        // every negative shares anchor 0's label 2; anchor 1 (label 5) sees all three
        let got = per(&[2, 2, 2], &cfg);
        assert!(got[0].abs() < 1e-6, "{got:?}");
        // anchor 1 = (0, 1): cos with negatives 0, 1, -0 -> r = e^0, e^10, e^0
        let e10 = 10f64.exp();
        let want1 = -(e10 / (e10 + 1.0 + e10 + 1.0)).ln() as f32;
        assert!((got[1] - want1).abs() < 1e-5, "{got:?} vs {want1}");
        // one negative with a different label for anchor 0: the opposite one, cos -1
        let got = per(&[2, 2, 7], &cfg);
        let want0 = -(e10 / (e10 + (-10f64).exp())).ln() as f32;
        assert!((got[0] - want0).abs() < 1e-6, "{got:?} vs {want0}");
        // without negative sampling every negative counts
        let all = DcConfig {
            negative_sampling: false,
            ..cfg
        };
        let got = per(&[2, 2, 2], &all);
        assert!((got[1] - want1).abs() < 1e-5 && got[0] > 0.5, "{got:?}");
    }

    #[test]
    fn memory_bank_wraps_and_bounds_its_size() {
        let dev = Device::Cpu;
        let mut bank = MemoryBank::new(5, 2);
        assert!(bank.tensors(&dev).unwrap().is_none());
        let rows = |from: u32, n: usize| {
            let f: Vec<f32> = (0..n * 2).map(|i| (from * 2) as f32 + i as f32).collect();
            let l: Vec<u32> = (0..n as u32).map(|i| from + i).collect();
            (
                Tensor::from_vec(f, (n, 2), &dev).unwrap(),
                Tensor::from_vec(l, n, &dev).unwrap(),
            )
        };
        let (f, l) = rows(0, 3);
        bank.push(&f, &l).unwrap();
        assert_eq!(bank.len(), 3);
        let (f, l) = rows(3, 4); // labels 3..7: wraps, 0 and 1 are overwritten
        bank.push(&f, &l).unwrap();
        assert_eq!(bank.len(), 5);
        let (bf, bl) = bank.tensors(&dev).unwrap().unwrap();
        assert_eq!(bf.dims(), [5, 2]);
        let mut labels = bl.to_vec1::<u32>().unwrap();
        assert_eq!(labels, [5, 6, 2, 3, 4]);
        // features follow their labels
        let fv = bf.to_vec2::<f32>().unwrap();
        for (row, lab) in fv.iter().zip(&labels) {
            assert_eq!(row[0], (lab * 2) as f32);
        }
        // more rows than the capacity: only the last 5 stay
        let (f, l) = rows(100, 12);
        bank.push(&f, &l).unwrap();
        assert_eq!(bank.len(), 5);
        labels = bank.tensors(&dev).unwrap().unwrap().1.to_vec1::<u32>().unwrap();
        labels.sort();
        assert_eq!(labels, [107, 108, 109, 110, 111]);
        // state round trip
        let [(_, sf), (_, sl), (_, sm)] = bank.state().unwrap();
        let mut other = MemoryBank::new(5, 2);
        other.load_state(&sf, &sl, &sm).unwrap();
        assert_eq!(other, bank);
        assert!(MemoryBank::new(4, 2).load_state(&sf, &sl, &sm).is_err());
    }

    #[test]
    fn dars_thresholds_reproduce_the_target_distribution_with_random_ties() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // 3 classes predicted on 3000 pixels; confidences quantised to 0.05 steps: many ties
        let n = 3000;
        let labels: Vec<u32> = (0..n).map(|i| [0, 0, 0, 1, 1, 2][i % 6]).collect();
        let conf: Vec<f32> = (0..n).map(|_| (rng.random_range(6..20) as f32) * 0.05).collect();
        let mut valid = vec![true; n];
        valid[5] = false;
        let target = [0.2, 0.3, 0.5]; // labeled set: class 2 most frequent
        let budget = 900;
        let s1 = dars_select(
            &conf,
            &labels,
            &valid,
            &target,
            budget,
            &mut ChaCha8Rng::seed_from_u64(1),
        );
        assert_eq!(s1.counts, [180, 270, 450]);
        for c in 0..3 {
            let sel: Vec<usize> = (0..n).filter(|&i| s1.selected[i] && labels[i] == c as u32).collect();
            assert_eq!(sel.len(), s1.counts[c]);
            let t = s1.thresholds[c];
            // everything above the threshold is in, nothing below
            for i in 0..n {
                if valid[i] && labels[i] == c as u32 {
                    if conf[i] > t {
                        assert!(s1.selected[i]);
                    }
                    if conf[i] < t {
                        assert!(!s1.selected[i]);
                    }
                }
            }
            // the threshold cuts through a tie (quantised confidences)
            let tied = (0..n)
                .filter(|&i| valid[i] && labels[i] == c as u32 && conf[i] == t)
                .count();
            let tied_in = sel.iter().filter(|&&i| conf[i] == t).count();
            assert!(tied_in < tied, "class {c}: no tie at the threshold to sample from");
        }
        assert!(!s1.selected[5], "an invalid pixel was selected");
        // ties are sampled: another seed picks other tied pixels, same counts and thresholds
        let s2 = dars_select(
            &conf,
            &labels,
            &valid,
            &target,
            budget,
            &mut ChaCha8Rng::seed_from_u64(2),
        );
        assert_eq!(
            (s2.counts.clone(), s2.thresholds.clone()),
            (s1.counts.clone(), s1.thresholds.clone())
        );
        assert_ne!(s1.selected, s2.selected);
        // a class with too few predicted pixels gives all it has
        let s = dars_select(&conf, &labels, &valid, &[0.0, 0.0, 1.0], 5000, &mut rng);
        assert_eq!(s.counts, [0, 0, 499]); // 500 predicted, one invalid
        assert_eq!(s.thresholds[0], f32::INFINITY);
    }

    #[test]
    fn cps_pseudo_labels_carry_no_gradient() {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (b, c, h, w) = (2, 3, 2, 3);
        let v1 = Var::from_vec(rand_vec(&mut rng, b * c * h * w), (b, c, h, w), &dev).unwrap();
        let v2 = Var::from_vec(rand_vec(&mut rng, b * c * h * w), (b, c, h, w), &dev).unwrap();
        let valid = Tensor::from_vec((0..b * h * w).map(|i| (i % 5 != 0) as u32).collect(), (b, h, w), &dev).unwrap();
        let loss = cross_pseudo_supervision(v1.as_tensor(), v2.as_tensor(), Some(&valid)).unwrap();
        let g = loss.backward().unwrap();
        // the same loss with the pseudo-labels computed beforehand as constants
        let ignore = Tensor::full(seg_core::IGNORE as u32, (b, h, w), &dev).unwrap();
        let y = |v: &Var| {
            valid
                .ne(0u32)
                .unwrap()
                .where_cond(&v.as_tensor().argmax(1).unwrap(), &ignore)
                .unwrap()
        };
        let (y1, y2) = (y(&v1), y(&v2));
        let l1 = loss::cross_entropy(v1.as_tensor(), &y2, seg_core::IGNORE as u32, None).unwrap();
        let l2 = loss::cross_entropy(v2.as_tensor(), &y1, seg_core::IGNORE as u32, None).unwrap();
        let want = (&l1 + &l2).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6)
        };
        assert!(close(&loss, &want));
        // ∂L/∂P1 is the gradient of CE(P1, Y2) alone: nothing flows back through Y1 = argmax P1
        let g1 = l1.backward().unwrap();
        assert!(close(g.get(&v1).unwrap(), g1.get(&v1).unwrap()));
        let g2 = l2.backward().unwrap();
        assert!(close(g.get(&v2).unwrap(), g2.get(&v2).unwrap()));
    }

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
