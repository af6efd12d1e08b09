//! Low-rank feature reconstruction by non-negative matrix factorisation (NMF), unrolled a fixed
//! number of multiplicative-update steps: the LR module of SLRNet (Pan et al., IJCV 2022; after
//! the matrix-decomposition "Hamburger" of Geng et al., ICLR 2021). Issue #26.
//!
//! Features `X ≥ 0` `[b, F, N]` (N pixels) are factorised `X ≈ D·C`, dictionary `D` `[b, F, r]`,
//! codes `C` `[b, r, N]`, by Lee & Seung's multiplicative updates, which never increase
//! `‖X − D·C‖²` (their Theorem 1; the test checks it):
//!
//! `C ← C ⊙ (Dᵀ X) / (Dᵀ D C + ε)`,  `D ← D ⊙ (X Cᵀ) / (D C Cᵀ + ε)`.
//!
//! *Collective* NMF factorises several views of one image with one shared dictionary: their
//! pixels are concatenated along `N` ([`collective_nmf`]), so each view's reconstruction is made
//! of the same `r` bases — the cross-view low-rank prior of SLRNet.
//!
//! Gradients: with `one_step_grad`, every step but the last runs on detached tensors and the last
//! step is differentiable (Hamburger's one-step gradient); otherwise gradients flow through all
//! steps.

use candle_core::{Result, Tensor, D as Dim};
use candle_nn::VarBuilder;

use crate::layers::Conv2d;

/// How [`nmf`] factorises.
#[derive(Debug, Clone, PartialEq)]
pub struct NmfConfig {
    /// Number of bases `r`.
    pub rank: usize,
    /// Multiplicative-update steps (each updates `C`, then `D`).
    pub steps: usize,
    /// Added to every denominator.
    pub eps: f64,
    /// Back-propagate through the last step only.
    pub one_step_grad: bool,
}

impl Default for NmfConfig {
    fn default() -> Self {
        Self {
            rank: 16,
            steps: 6,
            eps: 1e-6,
            one_step_grad: true,
        }
    }
}

/// A factorisation `x ≈ d · c`.
#[derive(Debug, Clone)]
pub struct Nmf {
    /// `[b, F, r]`.
    pub d: Tensor,
    /// `[b, r, N]`.
    pub c: Tensor,
}

impl Nmf {
    /// `d · c` `[b, F, N]`.
    pub fn reconstruction(&self) -> Result<Tensor> {
        self.d.matmul(&self.c)
    }

    /// `‖x − d·c‖²` per image, `[b]`.
    pub fn error(&self, x: &Tensor) -> Result<Tensor> {
        (x - self.reconstruction()?)?.sqr()?.sum(Dim::Minus1)?.sum(Dim::Minus1)
    }
}

/// A deterministic start for `x` `[b, F, N]` (non-negative): the dictionary from `r` evenly
/// spaced pixels of each image (plus a small floor so no basis is all zero), the codes from the
/// softmax over bases of `Dᵀ x` (as the Hamburger initialises them). Detached.
pub fn init(x: &Tensor, rank: usize) -> Result<Nmf> {
    let (_, _, n) = x.dims3()?;
    if rank == 0 || rank > n {
        candle_core::bail!("nmf: rank {rank} must be in 1..={n} (the pixels)");
    }
    let x = x.detach();
    let idx: Vec<u32> = (0..rank).map(|k| ((2 * k + 1) * n / (2 * rank)) as u32).collect();
    let idx = Tensor::new(idx.as_slice(), x.device())?;
    let d = (x.index_select(&idx, 2)? + 1e-2)?; // [b, F, r]
    let d = d.broadcast_div(&d.sqr()?.sum_keepdim(1)?.sqrt()?)?; // unit columns
    let c = candle_nn::ops::softmax(&d.transpose(1, 2)?.matmul(&x)?, 1)?; // [b, r, N]
    Ok(Nmf { d, c: c.detach() })
}

/// One multiplicative update of the codes, then of the dictionary.
pub fn step(x: &Tensor, f: &Nmf, eps: f64) -> Result<Nmf> {
    let dt = f.d.transpose(1, 2)?; // [b, r, F]
    let num = dt.matmul(x)?; // [b, r, N]
    let den = (dt.matmul(&f.d)?.matmul(&f.c)? + eps)?; // [b, r, N]
    let c = (&f.c * num.div(&den)?)?;
    let ct = c.transpose(1, 2)?; // [b, N, r]
    let num = x.matmul(&ct)?; // [b, F, r]
    let den = (f.d.matmul(&c.matmul(&ct)?)? + eps)?; // [b, F, r]
    let d = (&f.d * num.div(&den)?)?;
    Ok(Nmf { d, c })
}

/// Factorises `x` `[b, F, N]` (non-negative, e.g. ReLU features) with `cfg`.
pub fn nmf(x: &Tensor, cfg: &NmfConfig) -> Result<Nmf> {
    let mut f = init(x, cfg.rank)?;
    if cfg.steps == 0 {
        return Ok(f);
    }
    let detached = x.detach();
    for k in 0..cfg.steps {
        let last = k + 1 == cfg.steps;
        f = if cfg.one_step_grad && !last {
            let g = step(&detached, &f, cfg.eps)?;
            Nmf {
                d: g.d.detach(),
                c: g.c.detach(),
            }
        } else {
            step(x, &f, cfg.eps)?
        };
    }
    Ok(f)
}

/// Collective NMF of several views `[b, F, h_i, w_i]` of the same images with one dictionary per
/// image: returns each view's low-rank reconstruction `[b, F, h_i, w_i]` and the factorisation
/// of the concatenated pixels.
pub fn collective_nmf(views: &[&Tensor], cfg: &NmfConfig) -> Result<(Vec<Tensor>, Nmf)> {
    let mut flat = Vec::with_capacity(views.len());
    let mut shapes = Vec::with_capacity(views.len());
    for v in views {
        let (b, f, h, w) = v.dims4()?;
        flat.push(v.reshape((b, f, h * w))?); // [b, F, h·w]
        shapes.push((b, f, h, w));
    }
    let x = Tensor::cat(&flat, 2)?; // [b, F, Σ h·w]
    let fac = nmf(&x, cfg)?;
    let recon = fac.reconstruction()?; // [b, F, Σ h·w]
    let mut out = Vec::with_capacity(views.len());
    let mut at = 0;
    for &(b, f, h, w) in &shapes {
        out.push(recon.narrow(2, at, h * w)?.reshape((b, f, h, w))?);
        at += h * w;
    }
    Ok((out, fac))
}

/// SLRNet's LR module on a feature map (issue #26): the views' ReLU'd features are factorised
/// together ([`collective_nmf`], one dictionary per image shared by its views), and each view's
/// low-rank reconstruction is added back through a 1×1 convolution `proj.weight` `[F, F, 1, 1]`:
/// `x + W · ReLU(D·C)`. Built on a fresh `VarMap` the convolution is zero (set it back to zero
/// after a re-initialisation: [`Self::projection`]), so the module starts as the identity and the features a pretrained network gives pass unchanged at first.
/// Against the paper's `ReLU(x + W · ReLU(D·C))`: no outer ReLU, so the identity start holds on
/// feature maps that are not themselves ReLU'd (EfficientNet-Lite's last stage is linear); the
/// CAMs are ReLU'd after the head either way.
#[derive(Debug, Clone)]
pub struct LowRankModule {
    cfg: NmfConfig,
    proj: Conv2d,
}

impl LowRankModule {
    /// The module for `channels` features under `vb` (`proj.weight`).
    pub fn new(cfg: &NmfConfig, channels: usize, vb: VarBuilder) -> Result<Self> {
        if cfg.rank == 0 || cfg.steps == 0 {
            candle_core::bail!(
                "low-rank module: rank {} and steps {} must be at least 1",
                cfg.rank,
                cfg.steps
            );
        }
        Ok(Self {
            cfg: cfg.clone(),
            proj: Conv2d::new(channels, channels, 1, 1, false, vb.pp("proj"))?,
        })
    }

    /// The 1×1 projection's kernel (set it to zero after a re-initialisation to start at the
    /// identity).
    pub fn projection(&self) -> &Tensor {
        self.proj.weight()
    }

    /// `views` `[b, F, h_i, w_i]` (the same images at several scales) → each view plus its
    /// projected low-rank reconstruction, same shapes (with fewer pixels than `rank` in all,
    /// the rank is the pixel count).
    pub fn forward(&self, views: &[&Tensor]) -> Result<Vec<Tensor>> {
        let relu: Vec<Tensor> = views.iter().map(|v| v.relu()).collect::<Result<_>>()?; // X ≥ 0
        let refs: Vec<&Tensor> = relu.iter().collect();
        // a view smaller than the training crops (an evaluation at a low scale) may have fewer
        // pixels than bases: the rank is cut to them
        let pixels: usize = views
            .iter()
            .map(|v| v.dim(2).unwrap_or(0) * v.dim(3).unwrap_or(0))
            .sum();
        let cfg = NmfConfig {
            rank: self.cfg.rank.min(pixels.max(1)),
            ..self.cfg.clone()
        };
        let (recon, _) = collective_nmf(&refs, &cfg)?; // [b, F, h_i, w_i] each
        views
            .iter()
            .zip(&recon)
            .map(|(v, r)| *v + self.proj.forward(&r.relu()?)?) // [b, F, h_i, w_i]
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};
    use rand::{Rng, SeedableRng};

    /// Seeded uniform `[lo, hi)` tensor (candle's CPU RNG cannot be seeded).
    fn uniform(seed: u64, lo: f32, hi: f32, shape: (usize, usize, usize)) -> Tensor {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = shape.0 * shape.1 * shape.2;
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    fn errors(x: &Tensor, cfg: &NmfConfig) -> Vec<f32> {
        let mut f = init(x, cfg.rank).unwrap();
        let mut e = vec![f.error(x).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()];
        for _ in 0..cfg.steps {
            f = step(x, &f, cfg.eps).unwrap();
            e.push(f.error(x).unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap());
        }
        e
    }

    /// Issue #26: the unrolled updates lower the reconstruction error monotonically on random
    /// non-negative data, and far below where they start.
    #[test]
    fn issue26_unrolled_nmf_lowers_the_error_monotonically() {
        let dev = Device::Cpu;
        for (seed, rank) in [(1u64, 4usize), (2, 8), (3, 1)] {
            let x = uniform(seed, 0.0, 1.0, (2, 12, 60));
            let cfg = NmfConfig {
                rank,
                steps: 30,
                ..Default::default()
            };
            let e = errors(&x, &cfg);
            for k in 1..e.len() {
                assert!(
                    e[k] <= e[k - 1] * (1.0 + 1e-5),
                    "rank {rank}: step {k} raised the error: {e:?}"
                );
            }
            assert!(e[e.len() - 1] < 0.8 * e[0], "rank {rank}: {e:?}");
            // factors stay non-negative
            let f = nmf(&x, &cfg).unwrap();
            let min = f.d.flatten_all().unwrap().min(0).unwrap().to_scalar::<f32>().unwrap();
            assert!(min >= 0.0);
        }
        // a rank the data cannot hold is an error
        let x = Tensor::ones((1, 3, 5), candle_core::DType::F32, &dev).unwrap();
        assert!(init(&x, 6).is_err() && init(&x, 0).is_err());
    }

    /// Issue #26: the LR module starts as the identity (projection at zero) whatever the sign
    /// of the features, keeps each view's shape, and once its projection moves, adds the
    /// projected reconstruction, with a gradient into the projection.
    #[test]
    fn issue26_lr_module_starts_as_the_identity_and_trains_its_projection() {
        use candle_nn::{VarBuilder, VarMap};
        let dev = Device::Cpu;
        let vars = VarMap::new();
        let cfg = NmfConfig {
            rank: 3,
            ..Default::default()
        };
        let m = LowRankModule::new(&cfg, 5, VarBuilder::from_varmap(&vars, candle_core::DType::F32, &dev)).unwrap();
        let v1 = uniform(21, -1.0, 1.0, (2, 5, 24)).reshape((2, 5, 4, 6)).unwrap();
        let v2 = uniform(22, -1.0, 1.0, (2, 5, 6)).reshape((2, 5, 2, 3)).unwrap();
        let out = m.forward(&[&v1, &v2]).unwrap();
        for (o, v) in out.iter().zip([&v1, &v2]) {
            assert_eq!(o.dims(), v.dims());
            assert_eq!(crate::max_abs_diff(o, v).unwrap(), 0.0, "the identity at start");
        }
        let w = vars.data().lock().unwrap().get("proj.weight").unwrap().clone();
        w.set(&uniform(23, -0.5, 0.5, (5, 5, 1)).reshape((5, 5, 1, 1)).unwrap())
            .unwrap();
        let out = m.forward(&[&v1, &v2]).unwrap();
        let d = crate::max_abs_diff(&out[0], &v1).unwrap();
        assert!(d > 1e-3, "the reconstruction is added once the projection moves");
        let loss = (out[0].sum_all().unwrap() + out[1].sum_all().unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(w.as_tensor()).unwrap().abs().unwrap().sum_all().unwrap();
        assert!(g.to_scalar::<f32>().unwrap() > 0.0);
        assert!(LowRankModule::new(
            &NmfConfig {
                rank: 0,
                ..Default::default()
            },
            5,
            VarBuilder::from_varmap(&VarMap::new(), candle_core::DType::F32, &dev)
        )
        .is_err());
    }

    /// Exactly low-rank data is reconstructed almost exactly; views share one dictionary.
    #[test]
    fn collective_nmf_reconstructs_low_rank_views() {
        let d = uniform(7, 0.0, 1.0, (1, 8, 3));
        let c1 = uniform(8, 0.0, 1.0, (1, 3, 6 * 5));
        let c2 = uniform(9, 0.0, 1.0, (1, 3, 4 * 4));
        let v1 = d.matmul(&c1).unwrap().reshape((1, 8, 6, 5)).unwrap();
        let v2 = d.matmul(&c2).unwrap().reshape((1, 8, 4, 4)).unwrap();
        let cfg = NmfConfig {
            rank: 3,
            steps: 300,
            ..Default::default()
        };
        let (rec, fac) = collective_nmf(&[&v1, &v2], &cfg).unwrap();
        assert_eq!(rec[0].dims(), &[1, 8, 6, 5]);
        assert_eq!(rec[1].dims(), &[1, 8, 4, 4]);
        assert_eq!(fac.c.dims(), &[1, 3, 46]);
        for (r, v) in rec.iter().zip([&v1, &v2]) {
            let rel = ((r - v)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap()
                / v.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
            .sqrt();
            assert!(rel < 0.05, "relative error {rel}");
        }
    }

    /// With the one-step gradient, gradients reach the input through the last step only and
    /// match finite differences of that step's output.
    #[test]
    fn one_step_gradient_matches_finite_differences_of_the_last_step() {
        let dev = Device::Cpu;
        let x0 = uniform(11, 0.1, 1.0, (1, 4, 10));
        let cfg = NmfConfig {
            rank: 2,
            steps: 3,
            ..Default::default()
        };
        let var = Var::from_tensor(&x0).unwrap();
        let loss = |x: &Tensor| nmf(x, &cfg).unwrap().reconstruction().unwrap().sum_all().unwrap();
        let grads = loss(var.as_tensor()).backward().unwrap();
        let g = grads
            .get(var.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // the reference: the first steps on a fixed x0 (no gradient), the last on x
        let pre = NmfConfig {
            steps: 2,
            ..cfg.clone()
        };
        let start = nmf(&x0, &pre).unwrap();
        let last = |x: &Tensor| -> f64 {
            step(x, &start, cfg.eps)
                .unwrap()
                .reconstruction()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64
        };
        let base = x0.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for i in [0usize, 7, 23, 39] {
            let eps = 1e-3f32;
            let at = |delta: f32| {
                let mut v = base.clone();
                v[i] += delta;
                Tensor::from_vec(v, (1, 4, 10), &dev).unwrap()
            };
            let fd = (last(&at(eps)) - last(&at(-eps))) / (2.0 * eps as f64);
            assert!(
                (g[i] as f64 - fd).abs() < 2e-2 * fd.abs().max(1.0),
                "d/dx{i}: {} vs {fd}",
                g[i]
            );
        }
    }
}
