//! Class activation maps from image-level tags (issue #26): the multi-label classification head,
//! CAM normalisation restricted to an image's tags, thresholds → pseudo-labels, and
//! pixel-adaptive refinement (PAR, the affinity propagation of AFA, Ru et al., CVPR 2022) so that
//! pseudo-labels follow image edges.
//!
//! The head is a bias-free 1×1 convolution on a feature map: per pixel it gives the class
//! activation map, and its spatial mean is the image's multi-label logit (global average pooling
//! commutes with a linear map), trained with [`crate::loss::multilabel_bce`]. Everything after the
//! head runs on host arrays without gradients.
//!
//! Pseudo-labels need no background class: CamVid has none and its stuff classes are in almost
//! every frame, so "no tagged class fires" means *ignore* unless a background class is given
//! (VOC-style: below `low` → background), and only the classes CAMs are trusted for may label.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::Conv2d;

/// The multi-label classification head: a bias-free 1×1 convolution `cam.weight` `[C, F, 1, 1]`.
#[derive(Debug, Clone)]
pub struct CamHead {
    conv: Conv2d,
}

impl CamHead {
    /// Builds the head for `in_channels` features and `classes` classes under `vb`.
    pub fn new(in_channels: usize, classes: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: Conv2d::new(in_channels, classes, 1, 1, false, vb)?,
        })
    }

    /// `features [b, F, h, w] -> (cams [b, C, h, w], logits [b, C])`, logits the spatial mean of
    /// the CAMs (= the linear classifier on globally average-pooled features).
    pub fn forward(&self, features: &Tensor) -> Result<(Tensor, Tensor)> {
        let cams = self.conv.forward(features)?; // [b, C, h, w]
        let logits = cams.mean(3)?.mean(2)?; // [b, C]
        Ok((cams, logits))
    }
}

/// ReLU, then each `(image, class)` map divided by its maximum (+1e-5), and the maps of classes
/// the image is not tagged with set to 0. `cams` is `[b, C, h, w]` flat, `tags` `[b, C]` 0/1.
pub fn normalize_cams(cams: &[f32], (b, c, h, w): (usize, usize, usize, usize), tags: &[f32]) -> Vec<f32> {
    assert_eq!(cams.len(), b * c * h * w, "cams shape");
    assert_eq!(tags.len(), b * c, "tags shape");
    let mut out = vec![0f32; cams.len()];
    let n = h * w;
    for (k, (src, dst)) in cams.chunks(n).zip(out.chunks_mut(n)).enumerate() {
        if tags[k] <= 0.0 {
            continue;
        }
        let max = src.iter().fold(0f32, |m, &v| m.max(v));
        let scale = 1.0 / (max + 1e-5);
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.max(0.0) * scale;
        }
    }
    out
}

/// How normalised CAMs become pseudo-labels.
#[derive(Debug, Clone, PartialEq)]
pub struct PseudoLabelRule {
    /// A pixel takes its best tagged class when that class's CAM is at least this.
    pub high: f32,
    /// With a background class: below this (for every tagged class) the pixel is background;
    /// between `low` and `high` it is ignored.
    pub low: f32,
    /// The background class, if the label set has one (VOC: 0); `None` for CamVid.
    pub background: Option<u8>,
    /// Per class: whether its CAM may label pixels (a pixel whose best class is untrusted is
    /// ignored). Empty: all trusted.
    pub trusted: Vec<bool>,
}

impl Default for PseudoLabelRule {
    fn default() -> Self {
        Self {
            high: 0.55,
            low: 0.35,
            background: None,
            trusted: Vec::new(),
        }
    }
}

/// Per-pixel pseudo-labels `[b, h, w]` from normalised CAMs `[b, C, h, w]` (flat);
/// [`seg_core::IGNORE`] where no trusted tagged class fires.
pub fn pseudo_labels(norm: &[f32], (b, c, h, w): (usize, usize, usize, usize), rule: &PseudoLabelRule) -> Vec<u8> {
    let n = h * w;
    let mut out = vec![seg_core::IGNORE; b * n];
    for k in 0..b {
        let maps = &norm[k * c * n..(k + 1) * c * n];
        for p in 0..n {
            let (mut best, mut score) = (0usize, f32::NEG_INFINITY);
            for cls in 0..c {
                if Some(cls as u8) == rule.background {
                    continue;
                }
                let v = maps[cls * n + p];
                if v > score {
                    (best, score) = (cls, v);
                }
            }
            let trusted = rule.trusted.get(best).copied().unwrap_or(true);
            out[k * n + p] = if score >= rule.high && score > 0.0 {
                if trusted {
                    best as u8
                } else {
                    seg_core::IGNORE
                }
            } else {
                match rule.background {
                    Some(bg) if score < rule.low => bg,
                    _ => seg_core::IGNORE,
                }
            };
        }
    }
    out
}

/// Pixel-adaptive refinement: label maps are propagated `iterations` times over the 8
/// neighbours at each dilation, weighted by colour and position affinity (AFA's PAR).
///
/// For pixel `i` and neighbour `j` (replicate padding at the border), with `σ_i` the standard
/// deviation of the neighbours' colours per channel:
/// `a_ij = softmax_j(−mean_ch(|I_i − I_j| / (σ_i + 1e-8) / w1)²) + w2 · softmax_j(−(d_ij / σ_d / w1)²)`,
/// `d_ij` the neighbour's distance (dilation, ×√2 on diagonals). One iteration is
/// `m_i ← Σ_j a_ij m_j / (1 + w2)` (AFA leaves out the `1 + w2`, which only rescales: the
/// arg-max is the same).
#[derive(Debug, Clone, PartialEq)]
pub struct Par {
    /// Neighbour distances in pixels.
    pub dilations: Vec<usize>,
    /// Propagation steps.
    pub iterations: usize,
    /// Colour (and position) bandwidth.
    pub w1: f32,
    /// Weight of the position term.
    pub w2: f32,
}

impl Default for Par {
    fn default() -> Self {
        Self {
            dilations: vec![1, 2, 4, 8, 12, 24],
            iterations: 10,
            w1: 0.3,
            w2: 0.01,
        }
    }
}

const OFFSETS: [(isize, isize); 8] = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)];

impl Par {
    /// The affinities `[h·w, n]` of an image `[ch, h, w]` (flat) to its `n = 8·dilations`
    /// neighbours, and the neighbour index of each `(pixel, neighbour)`.
    fn affinities(&self, image: &[f32], ch: usize, (h, w): (usize, usize)) -> (Vec<f32>, Vec<u32>) {
        let nb = 8 * self.dilations.len();
        let npx = h * w;
        let mut idx = vec![0u32; npx * nb];
        let mut dist = Vec::with_capacity(nb);
        for &d in &self.dilations {
            for &(dy, dx) in &OFFSETS {
                let diag = dy != 0 && dx != 0;
                dist.push(d as f32 * if diag { std::f32::consts::SQRT_2 } else { 1.0 });
            }
        }
        for y in 0..h {
            for x in 0..w {
                let p = y * w + x;
                let mut j = 0;
                for &d in &self.dilations {
                    for &(dy, dx) in &OFFSETS {
                        let ny = (y as isize + dy * d as isize).clamp(0, h as isize - 1) as usize;
                        let nx = (x as isize + dx * d as isize).clamp(0, w as isize - 1) as usize;
                        idx[p * nb + j] = (ny * w + nx) as u32;
                        j += 1;
                    }
                }
            }
        }
        // position term: the same for every pixel
        let dmean = dist.iter().sum::<f32>() / nb as f32;
        let dstd = (dist.iter().map(|d| (d - dmean).powi(2)).sum::<f32>() / (nb.max(2) - 1) as f32).sqrt();
        let pos_logits: Vec<f32> = dist.iter().map(|d| -(d / (dstd + 1e-8) / self.w1).powi(2)).collect();
        let pos = softmax(&pos_logits);
        let mut aff = vec![0f32; npx * nb];
        let mut logit = vec![0f32; nb];
        for p in 0..npx {
            logit.fill(0.0);
            for c in 0..ch {
                let plane = &image[c * npx..(c + 1) * npx];
                let nbrs = &idx[p * nb..(p + 1) * nb];
                let mean = nbrs.iter().map(|&q| plane[q as usize]).sum::<f32>() / nb as f32;
                let var =
                    nbrs.iter().map(|&q| (plane[q as usize] - mean).powi(2)).sum::<f32>() / (nb.max(2) - 1) as f32;
                let sd = var.sqrt() + 1e-8;
                for (l, &q) in logit.iter_mut().zip(nbrs) {
                    *l -= ((plane[p] - plane[q as usize]).abs() / sd / self.w1).powi(2) / ch as f32;
                }
            }
            let s = softmax(&logit);
            for j in 0..nb {
                aff[p * nb + j] = (s[j] + self.w2 * pos[j]) / (1.0 + self.w2);
            }
        }
        (aff, idx)
    }

    /// Refines `maps` `[k, h, w]` (flat, e.g. normalised CAMs of one image) guided by `image`
    /// `[ch, h, w]` at the same resolution.
    pub fn refine(&self, image: &[f32], ch: usize, maps: &mut [f32], k: usize, (h, w): (usize, usize)) {
        assert_eq!(image.len(), ch * h * w, "image shape");
        assert_eq!(maps.len(), k * h * w, "maps shape");
        if self.iterations == 0 || self.dilations.is_empty() || h * w == 0 {
            return;
        }
        let (aff, idx) = self.affinities(image, ch, (h, w));
        let nb = 8 * self.dilations.len();
        let npx = h * w;
        let mut next = vec![0f32; npx];
        for c in 0..k {
            let m = &mut maps[c * npx..(c + 1) * npx];
            for _ in 0..self.iterations {
                for p in 0..npx {
                    let (a, q) = (&aff[p * nb..(p + 1) * nb], &idx[p * nb..(p + 1) * nb]);
                    next[p] = a.iter().zip(q).map(|(&a, &q)| a * m[q as usize]).sum();
                }
                m.copy_from_slice(&next);
            }
        }
    }
}

fn softmax(x: &[f32]) -> Vec<f32> {
    let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f32> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// `[ch, h, w]` (flat) averaged over `f × f` blocks → `[ch, h / f, w / f]` (the remainder rows and
/// columns dropped): the image at the resolution of stride-`f` CAMs.
pub fn downsample_mean(x: &[f32], ch: usize, (h, w): (usize, usize), f: usize) -> Vec<f32> {
    let (ho, wo) = (h / f, w / f);
    let mut out = vec![0f32; ch * ho * wo];
    let norm = 1.0 / (f * f) as f32;
    for c in 0..ch {
        let plane = &x[c * h * w..(c + 1) * h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let s: f32 = (oy * f..oy * f + f)
                    .map(|y| plane[y * w + ox * f..y * w + ox * f + f].iter().sum::<f32>())
                    .sum();
                out[c * ho * wo + oy * wo + ox] = s * norm;
            }
        }
    }
    out
}

/// `[b, h, w]` labels repeated `f` times along both axes → `[b, h·f, w·f]`.
pub fn upsample_nearest(labels: &[u8], (b, h, w): (usize, usize, usize), f: usize) -> Vec<u8> {
    let (ho, wo) = (h * f, w * f);
    let mut out = vec![0u8; b * ho * wo];
    for k in 0..b {
        for y in 0..ho {
            for x in 0..wo {
                out[k * ho * wo + y * wo + x] = labels[k * h * w + (y / f) * w + x / f];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn head_logits_are_the_mean_of_the_cams() {
        let vars = VarMap::new();
        let head = CamHead::new(4, 3, VarBuilder::from_varmap(&vars, DType::F32, &Device::Cpu)).unwrap();
        let f = Tensor::randn(0f32, 1.0, (2, 4, 5, 6), &Device::Cpu).unwrap();
        let (cams, logits) = head.forward(&f).unwrap();
        assert_eq!(cams.dims(), &[2, 3, 5, 6]);
        assert_eq!(logits.dims(), &[2, 3]);
        let cams = cams.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let logits = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        for k in 0..6 {
            let m = cams[k * 30..(k + 1) * 30].iter().sum::<f32>() / 30.0;
            assert!((m - logits[k]).abs() < 1e-5, "{m} vs {}", logits[k]);
        }
    }

    /// Hand-made example: 1 image, 3 classes, 1×4 pixels, tagged with classes 0 and 2.
    #[test]
    fn normalisation_and_tag_restriction() {
        let cams = [
            -1.0, 0.0, 2.0, 4.0, // class 0: max 4
            9.0, 9.0, 9.0, 9.0, // class 1: strong but not tagged
            0.5, 1.0, 0.0, -3.0, // class 2: max 1
        ];
        let n = normalize_cams(&cams, (1, 3, 1, 4), &[1.0, 0.0, 1.0]);
        let want = [0.0, 0.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5, 1.0, 0.0, 0.0];
        for (a, b) in n.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{n:?}");
        }
        // no background: class 2 at pixel 1 (1.0), class 0 at pixels 2 (0.5 < 0.55 → ignore), 3
        let rule = PseudoLabelRule::default();
        assert_eq!(pseudo_labels(&n, (1, 3, 1, 4), &rule), vec![255, 2, 255, 0]);
        // a lower threshold labels pixels 0 (class 2 at 0.5) and 2 (class 0 at 0.5)
        let low = PseudoLabelRule {
            high: 0.45,
            ..rule.clone()
        };
        assert_eq!(pseudo_labels(&n, (1, 3, 1, 4), &low), vec![2, 2, 0, 0]);
        // untrusted class 0 never labels
        let untrusted = PseudoLabelRule {
            high: 0.45,
            trusted: vec![false, true, true],
            ..rule.clone()
        };
        assert_eq!(pseudo_labels(&n, (1, 3, 1, 4), &untrusted), vec![2, 2, 255, 255]);
        // VOC-style background class 1: scores below `low` become background
        let cams = [0.1, 0.4, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let bg = PseudoLabelRule {
            background: Some(1),
            ..rule
        };
        assert_eq!(pseudo_labels(&cams, (1, 3, 1, 4), &bg), vec![1, 255, 0, 1]);
    }

    /// A two-region image (left dark, right bright) with a CAM that spills over the edge: PAR
    /// pulls the spill back toward the edge.
    #[test]
    fn par_moves_labels_toward_the_edge() {
        let (h, w) = (16, 16);
        let edge = 8;
        let mut image = vec![0f32; 3 * h * w];
        for c in 0..3 {
            for y in 0..h {
                for x in 0..w {
                    let v = if x < edge { 0.1 } else { 0.9 };
                    // a little texture so the local standard deviation is never zero
                    image[c * h * w + y * w + x] = v + 0.02 * (((x * 7 + y * 3 + c) % 5) as f32 - 2.0);
                }
            }
        }
        // class 0 = left region, class 1 = right region; the CAM of class 0 extends 3 columns
        // past the edge with a score above class 1's there
        let mut maps = vec![0f32; 2 * h * w];
        for y in 0..h {
            for x in 0..w {
                maps[y * w + x] = if x < edge + 3 { 1.0 } else { 0.0 };
                maps[h * w + y * w + x] = if x >= edge { 0.7 } else { 0.0 };
            }
        }
        let wrong = |m: &[f32]| {
            (0..h * w)
                .filter(|&p| {
                    let label = usize::from(m[h * w + p] > m[p]);
                    label != usize::from(p % w >= edge)
                })
                .count()
        };
        let before = wrong(&maps);
        assert_eq!(before, 3 * h);
        let par = Par {
            dilations: vec![1, 2, 4],
            ..Par::default()
        };
        par.refine(&image, 3, &mut maps, 2, (h, w));
        let after = wrong(&maps);
        assert!(
            after < before / 3,
            "PAR left {after} of {before} pixels on the wrong side"
        );
        // propagation is an average: values stay in [0, 1]
        let (lo, hi) = maps
            .iter()
            .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(lo >= -1e-5 && hi <= 1.0 + 1e-5, "values in [{lo}, {hi}]");
    }

    #[test]
    fn resampling_helpers() {
        let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
        assert_eq!(downsample_mean(&x, 1, (4, 4), 2), vec![2.5, 4.5, 10.5, 12.5]);
        assert_eq!(upsample_nearest(&[1, 2], (1, 1, 2), 2), vec![1, 1, 2, 2, 1, 1, 2, 2]);
    }
}
