//! CAC's directional contrastive loss (Lai et al., CVPR 2021).

use candle_core::{DType, Result, Tensor};

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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::{l2_normalize, rand_vec};
    use super::*;

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
}
