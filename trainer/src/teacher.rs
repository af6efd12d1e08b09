//! A frozen ONNX teacher for distillation (issue #27): any segmentation ONNX — an edge-seg export
//! or a PyTorch one — run in tract with no gradient, so that a teacher trained elsewhere can teach
//! an edge-seg student.
//!
//! The teacher gets the student's crops, re-normalised to its own mean/std (from its edge-seg
//! metadata, or given in the config for a foreign model). A graph with a fixed input size (every
//! edge-seg export: its resizes have fixed sizes) sees each crop placed at the top-left of an
//! input-sized canvas of its mean colour (zeros after normalisation), so scale and aspect are kept,
//! and its scores are cut back to the crop; a crop larger than that input is resized to it
//! instead. A graph with a free input size runs at the crop's size. The scores are resized to the
//! size the student asks for (its stride-4 scores).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use seg_core::classes::ClassTable;
use tract_onnx::prelude::*;

/// The teacher: a tract plan per input shape, and how to feed it.
pub struct OnnxTeacher {
    path: PathBuf,
    proto: seg_onnx::pb::ModelProto,
    /// The declared input `(h, w)` when fixed; `None` when the graph takes any size.
    fixed_hw: Option<(usize, usize)>,
    classes: usize,
    /// Per channel: `x_teacher = x_student · scale + shift`.
    scale: [f32; 3],
    shift: [f32; 3],
    plans: HashMap<(usize, usize), Arc<TypedSimplePlan>>,
}

impl OnnxTeacher {
    /// Opens `path`. `classes`/`mean`/`std` are the student's; `norm` overrides the teacher's own
    /// normalisation (required when the file has no edge-seg metadata). The teacher must score the
    /// student's classes: by name when its metadata lists them, by count otherwise.
    pub fn open(
        path: &Path,
        classes: &ClassTable,
        mean: [f32; 3],
        std: [f32; 3],
        norm: Option<([f32; 3], [f32; 3])>,
    ) -> Result<Self> {
        let proto = seg_onnx::load(path).with_context(|| format!("distill.teacher {}", path.display()))?;
        let meta = seg_core::meta::ModelMeta::from_map(&seg_onnx::metadata(&proto)).ok();
        let (t_mean, t_std) = match (norm, &meta) {
            (Some(n), _) => n,
            (None, Some(m)) => (m.mean, m.std),
            (None, None) => anyhow::bail!(
                "distill.teacher {}: no edge-seg metadata to say how the teacher normalises its input: set distill.teacher_mean and distill.teacher_std",
                path.display()
            ),
        };
        anyhow::ensure!(
            t_std.iter().all(|s| s.is_finite() && *s > 0.0) && t_mean.iter().all(|m| m.is_finite()),
            "distill.teacher {}: its std must be > 0 and its mean finite",
            path.display()
        );
        if let Some(m) = &meta {
            anyhow::ensure!(
                m.classes.names == classes.names,
                "distill.teacher {}: its classes ({}) are not the student's ({})",
                path.display(),
                m.classes.names.join(","),
                classes.names.join(",")
            );
        }
        let input = seg_onnx::first_input(&proto)
            .with_context(|| format!("distill.teacher {}: the graph has no input", path.display()))?;
        let dims = seg_onnx::static_dims(input);
        anyhow::ensure!(
            dims.len() == 4 && dims[1].is_none_or(|c| c == 3),
            "distill.teacher {}: input '{}' is not [N, 3, H, W]",
            path.display(),
            input.name
        );
        let fixed_hw = match (dims[2], dims[3]) {
            (Some(h), Some(w)) if h > 0 && w > 0 => Some((h as usize, w as usize)),
            _ => None,
        };
        let mut scale = [0f32; 3];
        let mut shift = [0f32; 3];
        for c in 0..3 {
            // (x·std + mean − t_mean) / t_std
            scale[c] = std[c] / t_std[c];
            shift[c] = (mean[c] - t_mean[c]) / t_std[c];
        }
        Ok(Self {
            path: path.to_path_buf(),
            proto,
            fixed_hw,
            classes: classes.len(),
            scale,
            shift,
            plans: HashMap::new(),
        })
    }

    /// The graph's declared input `(h, w)` when it is fixed.
    pub fn input_hw(&self) -> Option<(usize, usize)> {
        self.fixed_hw
    }

    fn plan(&mut self, hw: (usize, usize)) -> Result<Arc<TypedSimplePlan>> {
        if let Some(p) = self.plans.get(&hw) {
            return Ok(p.clone());
        }
        let shape = [1usize, 3, hw.0, hw.1];
        let plan = tract_guarded(&self.path, || {
            tract_onnx::onnx()
                .model_for_proto_model(&self.proto)
                .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
        })
        .with_context(|| {
            format!(
                "distill.teacher {}: tract cannot run it at {}x{}",
                self.path.display(),
                hw.0,
                hw.1
            )
        })?;
        self.plans.insert(hw, plan.clone());
        Ok(plan)
    }

    /// The teacher's scores for the student's normalised `images` (`[b, 3, h, w]`, any device),
    /// resized to `out_hw`: `[b, C, out_h, out_w]` on `images`' device, no gradient.
    pub fn scores(&mut self, images: &Tensor, out_hw: (usize, usize)) -> Result<Tensor> {
        let (b, _, h, w) = images.dims4()?;
        let x = images.to_device(&Device::Cpu)?.to_dtype(candle_core::DType::F32)?;
        let scale = Tensor::new(&self.scale, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
        let shift = Tensor::new(&self.shift, &Device::Cpu)?.reshape((1, 3, 1, 1))?;
        // [b, 3, h, w] in the teacher's normalisation
        let x = x.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        // how the crop meets the graph's input: as it is, padded, or resized
        let (in_hw, pad) = match self.fixed_hw {
            None => ((h, w), false),
            Some((th, tw)) if h <= th && w <= tw => ((th, tw), true),
            Some(t) => (t, false),
        };
        let plan = self.plan(in_hw)?;
        let mut outs = Vec::with_capacity(b);
        for i in 0..b {
            let img = x.narrow(0, i, 1)?; // [1, 3, h, w]
            let img = if in_hw == (h, w) {
                img
            } else if pad {
                img.pad_with_zeros(2, 0, in_hw.0 - h)?
                    .pad_with_zeros(3, 0, in_hw.1 - w)?
            } else {
                seg_nn::bilinear::resize(&img, in_hw.0, in_hw.1)?
            };
            let data = img.flatten_all()?.to_vec1::<f32>()?;
            let input = tract_ndarray::Array4::from_shape_vec((1, 3, in_hw.0, in_hw.1), data)?.into_tensor();
            let ctx = || format!("distill.teacher {}", self.path.display());
            let out = tract_guarded(&self.path, || plan.run(tvec!(input.into()))).with_context(ctx)?;
            let first = out
                .first()
                .with_context(|| format!("distill.teacher {}: the graph gave no output", self.path.display()))?;
            let view = first
                .to_plain_array_view::<f32>()
                .map_err(|e| anyhow::anyhow!("{e:#}"))
                .with_context(|| {
                    format!(
                        "distill.teacher {}: its first output is not f32 scores",
                        self.path.display()
                    )
                })?;
            let shape = view.shape().to_vec();
            anyhow::ensure!(
                shape.len() == 4 && shape[0] == 1 && shape[1] == self.classes && shape.iter().all(|&d| d > 0),
                "distill.teacher {}: its first output is {shape:?}, expected [1, {}, H, W] class scores",
                self.path.display(),
                self.classes
            );
            let data: Vec<f32> = view.iter().copied().collect();
            let s = Tensor::from_vec(data, (1, shape[1], shape[2], shape[3]), &Device::Cpu)?; // [1, C, H', W']
            let s = seg_nn::bilinear::resize(&s, in_hw.0, in_hw.1)?; // [1, C, in_h, in_w]
            let s = if pad {
                s.narrow(2, 0, h)?.narrow(3, 0, w)?.contiguous()?
            } else {
                s
            };
            outs.push(seg_nn::bilinear::resize(&s, out_hw.0, out_hw.1)?); // [1, C, out_h, out_w]
        }
        Ok(Tensor::cat(&outs, 0)?.to_device(images.device())?.detach())
    }
}

/// Runs a tract call on the user's graph; tract's error, or its panic (some mutated graphs panic
/// inside tract, issue #23), becomes a one-line error naming the teacher.
fn tract_guarded<R>(path: &Path, f: impl FnOnce() -> TractResult<R>) -> Result<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| anyhow::anyhow!("{}", format!("{e:#}").replace('\n', " "))),
        Err(p) => Err(anyhow::anyhow!(
            "tract failed on the graph {}: {}",
            path.display(),
            seg_core::io::panic_message(p.as_ref())
        )),
    }
}

/// A teacher's class scores over one whole frame (`teacher_view = "frame"`): `[C, h, w]` flat,
/// the frame's full extent split into `h × w` cells.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameScores {
    /// Classes.
    pub c: usize,
    /// Rows of cells.
    pub h: usize,
    /// Columns of cells.
    pub w: usize,
    /// `[C, h, w]` scores.
    pub data: Vec<f32>,
}

/// Reads a crop's region of whole-frame scores on an `out_h × out_w` grid over the crop (the
/// student's stride-4 grid): each output cell averages the bilinearly interpolated scores
/// (half-pixel centres) at `k × k` points spread over the cell, with `k` the cell's extent in
/// score cells (rounded up, 1 to 8), so a crop at a smaller scale than the frame's is pooled, not
/// aliased. Points in the crop's padding (outside the frame) are left out. Returns `[C, out_h,
/// out_w]` scores and `[out_h, out_w]` the share of each cell's points inside the frame (0:
/// padding only, scores 0 there).
pub fn crop_scores(
    map: &FrameScores,
    g: &seg_core::data::augment::CropGeometry,
    (out_h, out_w): (usize, usize),
) -> (Vec<f32>, Vec<f32>) {
    let (src_h, src_w) = (g.source.0 as f64, g.source.1 as f64);
    let (crop_h, crop_w) = (g.crop.0 as f64, g.crop.1 as f64);
    let (cell_h, cell_w) = (crop_h / out_h.max(1) as f64, crop_w / out_w.max(1) as f64);
    // a cell's extent in score cells along each axis
    let k_of = |cell: f64, scaled: u32, map_side: usize| {
        ((cell * map_side as f64 / scaled.max(1) as f64).ceil() as usize).clamp(1, 8)
    };
    let (ky, kx) = (k_of(cell_h, g.scaled.0, map.h), k_of(cell_w, g.scaled.1, map.w));
    let plane = map.h * map.w;
    let mut scores = vec![0f32; map.c * out_h * out_w];
    let mut share = vec![0f32; out_h * out_w];
    if plane == 0 {
        return (scores, share);
    }
    let mut acc = vec![0f32; map.c];
    // half-pixel bilinear taps of a continuous source position along one axis
    let taps = |pos: f64, src: f64, side: usize| {
        let v = (pos * side as f64 / src - 0.5).max(0.0);
        let i0 = (v.floor() as usize).min(side - 1);
        let i1 = (i0 + 1).min(side - 1);
        (i0, i1, (v - i0 as f64).min(1.0) as f32)
    };
    for i in 0..out_h {
        for j in 0..out_w {
            acc.fill(0.0);
            let mut n = 0usize;
            for a in 0..ky {
                for b in 0..kx {
                    let y = (i as f64 + (a as f64 + 0.5) / ky as f64) * cell_h;
                    let x = (j as f64 + (b as f64 + 0.5) / kx as f64) * cell_w;
                    let (sy, sx) = g.to_source(y, x);
                    if !(0.0..src_h).contains(&sy) || !(0.0..src_w).contains(&sx) {
                        continue;
                    }
                    n += 1;
                    let (y0, y1, wy) = taps(sy, src_h, map.h);
                    let (x0, x1, wx) = taps(sx, src_w, map.w);
                    let w00 = (1.0 - wy) * (1.0 - wx);
                    let (w01, w10, w11) = ((1.0 - wy) * wx, wy * (1.0 - wx), wy * wx);
                    for (c, s) in acc.iter_mut().enumerate() {
                        let p = &map.data[c * plane..(c + 1) * plane];
                        *s += w00 * p[y0 * map.w + x0]
                            + w01 * p[y0 * map.w + x1]
                            + w10 * p[y1 * map.w + x0]
                            + w11 * p[y1 * map.w + x1];
                    }
                }
            }
            if n > 0 {
                for (c, s) in acc.iter().enumerate() {
                    scores[(c * out_h + i) * out_w + j] = s / n as f32;
                }
                share[i * out_w + j] = n as f32 / (ky * kx) as f32;
            }
        }
    }
    (scores, share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seg_core::data::augment::CropGeometry;

    /// Scores linear in the source position, `f_c(y, x) = (c + 1)·y − 2x + c`, sampled at the
    /// cell centres of a stride-4 map: bilinear reads and averages of a linear function are exact,
    /// so every crop cell must hold `f` at its centre's source position.
    fn linear_map(src: (u32, u32)) -> (FrameScores, impl Fn(usize, f64, f64) -> f32) {
        let f = |c: usize, y: f64, x: f64| ((c as f64 + 1.0) * y - 2.0 * x + c as f64) as f32;
        let (h, w) = (src.0 as usize / 4, src.1 as usize / 4);
        let mut data = vec![0f32; 3 * h * w];
        for c in 0..3 {
            for p in 0..h {
                for q in 0..w {
                    data[(c * h + p) * w + q] = f(c, (p as f64 + 0.5) * 4.0, (q as f64 + 0.5) * 4.0);
                }
            }
        }
        (FrameScores { c: 3, h, w, data }, f)
    }

    /// Issue #27: a crop's cells read the frame scores at their own source position — through
    /// scale, offset and flip, pooled over the cell — and padding cells are marked.
    #[test]
    fn issue27_crop_scores_follow_the_crop_geometry() {
        let (map, f) = linear_map((96, 128));
        for (scaled, top, left, flipped) in [
            ((96, 128), 10, 20, false),
            ((48, 64), 4, 8, true),
            ((200, 260), 50, 70, true),
            ((130, 170), 30, 41, false),
        ] {
            let g = CropGeometry {
                source: (96, 128),
                scaled,
                top,
                left,
                crop: (32, 40),
                flipped,
            };
            let (out_h, out_w) = (8, 10);
            let (s, share) = crop_scores(&map, &g, (out_h, out_w));
            for i in 0..out_h {
                for j in 0..out_w {
                    // the cell's corners in the source, to keep clear of the clamped border
                    let (y0, x0) = g.to_source(i as f64 * 4.0, j as f64 * 4.0);
                    let (y1, x1) = g.to_source((i + 1) as f64 * 4.0, (j + 1) as f64 * 4.0);
                    let inside = |v: f64, side: f64| (2.0..side - 2.0).contains(&v);
                    if !(inside(y0, 96.0) && inside(y1, 96.0) && inside(x0, 128.0) && inside(x1, 128.0)) {
                        continue;
                    }
                    assert_eq!(share[i * out_w + j], 1.0);
                    let (cy, cx) = g.to_source(i as f64 * 4.0 + 2.0, j as f64 * 4.0 + 2.0);
                    for c in 0..3 {
                        let got = s[(c * out_h + i) * out_w + j];
                        let want = f(c, cy, cx);
                        assert!(
                            (got - want).abs() < 1e-3,
                            "{g:?} cell ({i}, {j}) class {c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
        // a crop hanging off the frame's top-left: cells there are padding
        let g = CropGeometry {
            source: (96, 128),
            scaled: (96, 128),
            top: -12,
            left: -8,
            crop: (32, 40),
            flipped: false,
        };
        let (s, share) = crop_scores(&map, &g, (8, 10));
        assert_eq!(share[0], 0.0);
        assert!((0..3).all(|c| s[c * 80] == 0.0));
        assert_eq!(share[3 * 10 + 2], 1.0);
        assert!(share.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
