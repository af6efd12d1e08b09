//! Group-wise semantic mining (Li et al., "Group-Wise Semantic Mining for Weakly Supervised
//! Semantic Segmentation", AAAI 2021), the option of the CAM pipeline that lets the images of a
//! batch that share tags refine each other's features before the CAM head (issue #26, method 4).
//!
//! The images of a group are the nodes of a graph; two images are joined when they share at
//! least one tag. Per iteration, every node `i` receives from each neighbour `j` a message: the
//! co-attention of its positions over `j`'s positions, `S_ij = softmax_rows(Q_iᵀ Q_j / √k)`
//! (`Q = θ(F)`, one 1×1 projection shared by both sides, so the affinity logits are symmetric:
//! `L_ji = L_ijᵀ`), applied to `j`'s features, `M_ij = F_j S_ijᵀ`. The messages are averaged
//! over the neighbours that survive graph dropout (training only: each edge is dropped with
//! probability `dropout`, as the paper's graph dropout layer) and added back through a 1×1
//! convolution and a learnt scale `γ` that starts at 0, so the pretrained features pass
//! unchanged at the start: `F_i ← F_i + γ · W(mean_j M_ij)`. A node without neighbours keeps
//! its features.
//!
//! What is simplified against the paper: its node update is a ConvGRU and its messages are
//! gated by a learnt attention of their own; here the update is the residual above. The paper
//! also adds its own classification losses on the refined features of every node; here the CAM
//! method's multi-label loss on the refined features is the only one.

use candle_core::{Result, Tensor, D};
use candle_nn::VarBuilder;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::layers::Conv2d;

/// The `[cam.group]` settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupConfig {
    /// Use group-wise mining (off: the CAM head reads the features as they are).
    pub enabled: bool,
    /// Message-passing iterations.
    pub iterations: usize,
    /// Channels of the co-attention projection θ.
    pub key_channels: usize,
    /// Probability of dropping an edge per iteration during training (graph dropout).
    pub dropout: f64,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            iterations: 2,
            key_channels: 64,
            dropout: 0.2,
        }
    }
}

impl GroupConfig {
    /// Checks ranges.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=8).contains(&self.iterations) {
            return Err(format!("cam.group.iterations {} must be in 1..=8", self.iterations));
        }
        if !(1..=1024).contains(&self.key_channels) {
            return Err(format!(
                "cam.group.key_channels {} must be in 1..=1024",
                self.key_channels
            ));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return Err(format!("cam.group.dropout {} must be in [0, 1)", self.dropout));
        }
        Ok(())
    }
}

/// Which images of a group share a tag: `adj[i][j]` for `i ≠ j` (no self-loops). `tags` is
/// `[b, C]` 0/1, flat.
pub fn tag_graph(tags: &[f32], b: usize, c: usize) -> Vec<Vec<bool>> {
    assert_eq!(tags.len(), b * c, "tags shape");
    (0..b)
        .map(|i| {
            (0..b)
                .map(|j| i != j && (0..c).any(|k| tags[i * c + k] > 0.0 && tags[j * c + k] > 0.0))
                .collect()
        })
        .collect()
}

/// The co-attention message passing of one group: weights `theta.weight` `[k, F, 1, 1]`,
/// `update.weight` `[F, F, 1, 1]` and `gamma` `[1]`.
#[derive(Debug, Clone)]
pub struct GroupMining {
    theta: Conv2d,
    update: Conv2d,
    gamma: Tensor,
    iterations: usize,
    dropout: f64,
    key_channels: usize,
}

impl GroupMining {
    /// Builds the module for `channels` features under `vb`.
    pub fn new(cfg: &GroupConfig, channels: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            theta: Conv2d::new(channels, cfg.key_channels, 1, 1, false, vb.pp("theta"))?,
            update: Conv2d::new(channels, channels, 1, 1, false, vb.pp("update"))?,
            gamma: vb.get_with_hints(1, "gamma", candle_nn::Init::Const(0.0))?,
            iterations: cfg.iterations,
            dropout: cfg.dropout,
            key_channels: cfg.key_channels,
        })
    }

    /// Affinity logits between every pair of images, `[b, b, n, n]` with `n = h·w`:
    /// `L[i, j] = Q_iᵀ Q_j / √k`.
    pub fn affinity(&self, features: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = features.dims4()?;
        let n = h * w;
        let q = self.theta.forward(features)?.reshape((b, self.key_channels, n))?; // [b, k, n]
        let qi = q
            .transpose(1, 2)?
            .unsqueeze(1)?
            .broadcast_as((b, b, n, self.key_channels))?; // [b, b, n, k]
        let qj = q.unsqueeze(0)?.broadcast_as((b, b, self.key_channels, n))?; // [b, b, k, n]
        qi.contiguous()?
            .matmul(&qj.contiguous()?)?
            .affine(1.0 / (self.key_channels as f64).sqrt(), 0.0) // [b, b, n, n]
    }

    /// `features [b, F, h, w]` refined by `iterations` rounds of messages along `adj` (from
    /// [`tag_graph`]); `rng` draws the graph dropout when `train`.
    pub fn forward(&self, features: &Tensor, adj: &[Vec<bool>], train: bool, rng: &mut impl Rng) -> Result<Tensor> {
        let (b, f, h, w) = features.dims4()?;
        if adj.len() != b || adj.iter().any(|r| r.len() != b) {
            candle_core::bail!("group mining: a {b}-image batch needs a {b}x{b} graph");
        }
        let n = h * w;
        let dev = features.device();
        let mut x = features.clone();
        for _ in 0..self.iterations {
            // edge weights: 1/deg over the surviving neighbours, [b, b, 1, 1]
            let mut wts = vec![0f32; b * b];
            for i in 0..b {
                let keep: Vec<usize> = (0..b)
                    .filter(|&j| adj[i][j] && !(train && self.dropout > 0.0 && rng.random_bool(self.dropout)))
                    .collect();
                for &j in &keep {
                    wts[i * b + j] = 1.0 / keep.len() as f32;
                }
            }
            if wts.iter().all(|&v| v == 0.0) {
                continue;
            }
            let wts = Tensor::from_vec(wts, (b, b, 1, 1), dev)?;
            let s = candle_nn::ops::softmax(&self.affinity(&x)?, D::Minus1)?; // [b, b, n, n] rows over j's positions
            let fj = x
                .reshape((b, f, n))?
                .transpose(1, 2)?
                .unsqueeze(0)?
                .broadcast_as((b, b, n, f))?; // [b, b, n_j, F]
            let m = s.matmul(&fj.contiguous()?)?; // [b, b, n_i, F]: M_ij
            let m = m.broadcast_mul(&wts)?.sum(1)?; // [b, n, F]: mean over neighbours
            let m = m.transpose(1, 2)?.reshape((b, f, h, w))?; // [b, F, h, w]
            let delta = self.update.forward(&m.contiguous()?)?; // [b, F, h, w]
            x = (x + delta.broadcast_mul(&self.gamma.reshape((1, 1, 1, 1))?)?)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn module(f: usize, gamma: f32) -> (VarMap, GroupMining) {
        let vars = VarMap::new();
        let cfg = GroupConfig {
            enabled: true,
            key_channels: 4,
            ..GroupConfig::default()
        };
        let g = GroupMining::new(&cfg, f, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu)).unwrap();
        crate::init::reseed(&vars, 3).unwrap();
        vars.data().lock().unwrap()["gamma"]
            .set(&Tensor::new(&[gamma], &Device::Cpu).unwrap())
            .unwrap();
        (vars, g)
    }

    #[test]
    fn the_tag_graph_joins_images_that_share_a_tag() {
        let tags = [1., 0., 0., /**/ 1., 1., 0., /**/ 0., 0., 1.];
        let adj = tag_graph(&tags, 3, 3);
        assert_eq!(
            adj,
            vec![
                vec![false, true, false],
                vec![true, false, false],
                vec![false, false, false]
            ]
        );
    }

    /// Shapes, and the symmetric pair: the affinity of (j, i) is the transpose of (i, j).
    #[test]
    fn co_attention_shapes_and_symmetric_pairs() {
        let (_, g) = module(6, 0.5);
        let x = Tensor::randn(0f32, 1.0, (3, 6, 2, 5), &Device::Cpu).unwrap();
        let a = g.affinity(&x).unwrap();
        assert_eq!(a.dims(), &[3, 3, 10, 10]);
        for (i, j) in [(0, 1), (1, 2), (0, 2)] {
            let aij = a.get(i).unwrap().get(j).unwrap();
            let aji = a.get(j).unwrap().get(i).unwrap();
            let d = crate::max_abs_diff(&aij, &aji.t().unwrap()).unwrap();
            assert!(d < 1e-5, "({i},{j}): {d}");
        }
        let adj = tag_graph(&[1., 1., 1.], 3, 1);
        let y = g.forward(&x, &adj, false, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
        assert_eq!(y.dims(), x.dims());
    }

    /// γ = 0 (the initial value) and a node without neighbours both leave the features as they
    /// are; with γ ≠ 0 a connected node changes, and swapping the two images of a pair swaps
    /// their outputs.
    #[test]
    fn messages_flow_only_along_the_graph() {
        let x = Tensor::randn(0f32, 1.0, (3, 6, 2, 3), &Device::Cpu).unwrap();
        let adj = vec![
            vec![false, true, false],
            vec![true, false, false],
            vec![false, false, false],
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (_, g0) = module(6, 0.0);
        let y = g0.forward(&x, &adj, false, &mut rng).unwrap();
        assert_eq!(crate::max_abs_diff(&y, &x).unwrap(), 0.0);
        let (_, g) = module(6, 0.7);
        let y = g.forward(&x, &adj, false, &mut rng).unwrap();
        let moved = |k: usize| crate::max_abs_diff(&y.get(k).unwrap(), &x.get(k).unwrap()).unwrap();
        assert!(moved(0) > 1e-3 && moved(1) > 1e-3);
        assert_eq!(moved(2), 0.0);
        let swapped = Tensor::cat(
            &[
                x.get(1).unwrap().unsqueeze(0).unwrap(),
                x.get(0).unwrap().unsqueeze(0).unwrap(),
                x.get(2).unwrap().unsqueeze(0).unwrap(),
            ],
            0,
        )
        .unwrap();
        let ys = g.forward(&swapped, &adj, false, &mut rng).unwrap();
        let d = crate::max_abs_diff(&ys.get(0).unwrap(), &y.get(1).unwrap()).unwrap();
        assert!(d < 1e-5, "{d}");
    }

    /// Gradients reach γ and both convolutions (through the softmax, which must not cut the
    /// graph).
    #[test]
    fn gradients_reach_every_weight() {
        let (vars, g) = module(4, 0.3);
        let x = Tensor::randn(0f32, 1.0, (2, 4, 2, 2), &Device::Cpu).unwrap();
        let adj = tag_graph(&[1., 1.], 2, 1);
        let y = g.forward(&x, &adj, false, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        for name in ["gamma", "theta.weight", "update.weight"] {
            let v = vars.data().lock().unwrap()[name].clone();
            let gv = grads
                .get(v.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {name}"));
            assert!(
                gv.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap() > 0.0,
                "{name}"
            );
        }
    }
}
