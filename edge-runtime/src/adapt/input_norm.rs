//! Per-frame input normalisation toward the source domain's colour statistics (`input_norm`).
//!
//! A frame whose colours are far from what the model was trained on (dusk, a tinted lens) is
//! mapped, channel by channel, toward the source frames' mean and spread before the network sees
//! it. With strength `α`, per channel `c` of the normalised input `x`:
//!
//! ```text
//! m = α · mean(x_c) + (1 − α) · μ_c        s = α · std(x_c) + (1 − α) · σ_c
//! x_c ← (x_c − m) · σ_c / s + μ_c
//! ```
//!
//! where `μ, σ` are the mean and (population) standard deviation of the source frames
//! (`guard.source_frames`) and `mean(x_c), std(x_c)` those of the frame itself. `α = 0` is the
//! identity, `α = 1` gives every frame the source statistics. A frame that already looks like the
//! source is left almost as it is, so the mapping does not forget the source domain the way
//! statistics estimated over a dusk stream and then frozen would.
//!
//! It has no trained values: it is computed per frame, in the adapter (on the whole frame, before
//! cropping) and in the published graph ([`InputNorm::insert`]: `ReduceMean`, `Sqrt` and
//! element-wise nodes in front of the network), so `edge-seg adapt --out` writes a model that
//! does it by itself.

use seg_onnx::pb;

/// Added to the variance before the square root.
const EPS: f32 = 1e-5;

/// The source statistics and the strength (see the module docs); all in normalised units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputNorm {
    /// Strength `α` in `(0, 1]`.
    pub alpha: f32,
    /// Per-channel source mean `μ`.
    pub mean: [f32; 3],
    /// Per-channel source standard deviation `σ`.
    pub std: [f32; 3],
}

/// Per-channel `x ← a · x + b` for one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameAffine {
    /// Scale per channel.
    pub a: [f32; 3],
    /// Offset per channel.
    pub b: [f32; 3],
}

impl FrameAffine {
    /// The identity.
    pub const IDENTITY: Self = Self {
        a: [1.0; 3],
        b: [0.0; 3],
    };

    /// Applies the affine to `x`, `3 · h · w` values in channel-major order.
    pub fn apply(&self, x: &mut [f32]) {
        let plane = x.len() / 3;
        for (c, chunk) in x.chunks_mut(plane.max(1)).enumerate().take(3) {
            let (a, b) = (self.a[c], self.b[c]);
            chunk.iter_mut().for_each(|v| *v = a * *v + b);
        }
    }
}

/// Per-channel sums of values and of squares of `x` (`3 · h · w` values, channel-major), and the
/// number of values per channel.
fn channel_sums(x: &[f32]) -> ([f64; 3], [f64; 3], f64) {
    let plane = (x.len() / 3).max(1);
    let (mut sum, mut sq) = ([0.0f64; 3], [0.0f64; 3]);
    for (c, chunk) in x.chunks(plane).enumerate().take(3) {
        for &v in chunk {
            sum[c] += v as f64;
            sq[c] += (v as f64) * (v as f64);
        }
    }
    (sum, sq, (x.len() / 3) as f64)
}

/// Mean and population standard deviation per channel from [`channel_sums`] totals.
fn stats_from_sums(sum: [f64; 3], sq: [f64; 3], n: f64) -> ([f32; 3], [f32; 3]) {
    let n = n.max(1.0);
    let mean = std::array::from_fn(|c| (sum[c] / n) as f32);
    let std = std::array::from_fn(|c| (sq[c] / n - (sum[c] / n).powi(2)).max(0.0).sqrt() as f32);
    (mean, std)
}

/// Per-channel mean and population standard deviation of `x` (`3 · h · w` values, channel-major).
pub fn channel_stats(x: &[f32]) -> ([f32; 3], [f32; 3]) {
    let (sum, sq, n) = channel_sums(x);
    stats_from_sums(sum, sq, n)
}

impl InputNorm {
    /// The source statistics of `frames` (each `3 · h · w` normalised values; pooled over all
    /// their pixels) with strength `alpha`.
    pub fn from_frames(alpha: f32, frames: &[Vec<f32>]) -> Self {
        let (mut sum, mut sq, mut n) = ([0.0f64; 3], [0.0f64; 3], 0.0);
        for x in frames {
            let (s, q, k) = channel_sums(x);
            for c in 0..3 {
                sum[c] += s[c];
                sq[c] += q[c];
            }
            n += k;
        }
        let (mean, std) = stats_from_sums(sum, sq, n);
        Self { alpha, mean, std }
    }

    /// The affine this normalisation applies to a frame with channel statistics `(m, s)`.
    pub fn affine_for(&self, frame_mean: [f32; 3], frame_std: [f32; 3]) -> FrameAffine {
        let al = self.alpha;
        let mut out = FrameAffine::IDENTITY;
        for c in 0..3 {
            let m = al * frame_mean[c] + (1.0 - al) * self.mean[c];
            let s = al * (frame_std[c] * frame_std[c] + EPS).sqrt() + (1.0 - al) * self.std[c];
            out.a[c] = self.std[c] / s;
            out.b[c] = self.mean[c] - m * out.a[c];
        }
        out
    }

    /// The affine for the frame `x` (`3 · h · w` normalised values).
    pub fn affine(&self, x: &[f32]) -> FrameAffine {
        let (m, s) = channel_stats(x);
        self.affine_for(m, s)
    }

    /// Puts the normalisation in front of `model`'s network: every consumer of the graph input
    /// then reads the normalised frame. Statistics are taken per image over its height and width,
    /// as [`InputNorm::affine`] does. Errors when the graph has no single 4-d input.
    pub fn insert(&self, model: &mut pb::ModelProto) -> Result<(), String> {
        let graph = model.graph.as_mut().ok_or("no graph")?;
        let inits: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<String> = graph
            .input
            .iter()
            .filter(|i| !inits.contains(i.name.as_str()))
            .map(|i| i.name.clone())
            .collect();
        let [input] = &inputs[..] else {
            return Err(format!(
                "input_norm: the graph has {} data inputs, not one",
                inputs.len()
            ));
        };
        let input = input.clone();
        let p = |s: &str| format!("input_norm.{s}");
        let al = self.alpha;
        let c3 = |name: &str, v: [f32; 3]| seg_onnx::tensor_f32(&p(name), &[1, 3, 1, 1], &v);
        graph.initializer.extend([
            c3("alpha", [al; 3]),
            c3("prior_mean", self.mean.map(|m| (1.0 - al) * m)),
            c3("prior_std", self.std.map(|s| (1.0 - al) * s)),
            c3("mean", self.mean),
            c3("std", self.std),
            c3("eps", [EPS; 3]),
        ]);
        // `x` is the graph input; every other name is one of ours, prefixed
        let name = |s: &str| if s == "x" { input.clone() } else { p(s) };
        let node = |op: &str, ins: &[&str], out: &str, axes: bool| pb::NodeProto {
            name: p(out),
            op_type: op.into(),
            input: ins.iter().map(|i| name(i)).collect(),
            output: vec![p(out)],
            attribute: if axes {
                vec![
                    pb::AttributeProto {
                        name: "axes".into(),
                        r#type: pb::attribute_proto::AttributeType::Ints as i32,
                        ints: vec![2, 3],
                        ..Default::default()
                    },
                    pb::AttributeProto {
                        name: "keepdims".into(),
                        r#type: pb::attribute_proto::AttributeType::Int as i32,
                        i: 1,
                        ..Default::default()
                    },
                ]
            } else {
                Vec::new()
            },
            ..Default::default()
        };
        let new = vec![
            node("ReduceMean", &["x"], "frame_mean", true),      // [b, 3, 1, 1]
            node("Sub", &["x", "frame_mean"], "centred", false), // [b, 3, h, w]
            node("Mul", &["centred", "centred"], "squared", false),
            node("ReduceMean", &["squared"], "frame_var", true), // [b, 3, 1, 1]
            node("Add", &["frame_var", "eps"], "frame_var_eps", false),
            node("Sqrt", &["frame_var_eps"], "frame_std", false),
            node("Mul", &["frame_mean", "alpha"], "a_mean", false),
            node("Add", &["a_mean", "prior_mean"], "blend_mean", false),
            node("Mul", &["frame_std", "alpha"], "a_std", false),
            node("Add", &["a_std", "prior_std"], "blend_std", false),
            node("Div", &["std", "blend_std"], "scale", false), // σ / s
            node("Sub", &["x", "blend_mean"], "shifted", false), // [b, 3, h, w]
            node("Mul", &["shifted", "scale"], "scaled", false),
            node("Add", &["scaled", "mean"], "out", false),
        ];
        let out = p("out");
        for n in graph.node.iter_mut() {
            for i in n.input.iter_mut().filter(|i| **i == input) {
                *i = out.clone();
            }
        }
        graph.node.splice(0..0, new);
        let desc = format!(
            "alpha={al}; source mean={:?}; source std={:?} (normalised units)",
            self.mean, self.std
        );
        model.metadata_props.push(pb::StringStringEntryProto {
            key: "adapt.input_norm".into(),
            value: desc,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::prelude::*;

    /// `3 · h · w` values with channel means `m` and a spread `s` (a ramp).
    fn frame(h: usize, w: usize, m: [f32; 3], s: [f32; 3]) -> Vec<f32> {
        let n = h * w;
        (0..3)
            .flat_map(|c| (0..n).map(move |i| m[c] + s[c] * ((i * 7 % n) as f32 / n as f32 - 0.5)))
            .collect()
    }

    #[test]
    fn issue5_input_norm_maps_frames_toward_the_source_statistics() {
        let src = [
            frame(6, 8, [0.2, -0.1, 0.4], [2.0, 1.5, 1.0]),
            frame(6, 8, [0.4, 0.1, 0.0], [1.0, 1.5, 2.0]),
        ];
        let full = InputNorm::from_frames(1.0, &src);
        // pooled statistics of both frames, per channel
        let per_channel: Vec<f32> = (0..3)
            .flat_map(|c| {
                [&src[0], &src[1]]
                    .into_iter()
                    .flat_map(move |x| x[c * 48..(c + 1) * 48].to_vec())
            })
            .collect();
        let (m, s) = channel_stats(&per_channel);
        for c in 0..3 {
            assert!((full.mean[c] - m[c]).abs() < 1e-5 && (full.std[c] - s[c]).abs() < 1e-5);
        }
        // α = 1: a dark, flat frame gets the source's mean and spread exactly
        let mut dark = frame(5, 7, [-1.8, -1.6, -1.2], [0.3, 0.2, 0.4]);
        full.affine(&dark).apply(&mut dark);
        let (dm, ds) = channel_stats(&dark);
        for c in 0..3 {
            assert!((dm[c] - full.mean[c]).abs() < 1e-4, "{dm:?} vs {:?}", full.mean);
            assert!((ds[c] - full.std[c]).abs() < 1e-3, "{ds:?} vs {:?}", full.std);
        }
        // α = 0 is the identity; α = 0.5 goes part of the way
        let x = frame(5, 7, [-1.8, -1.6, -1.2], [0.3, 0.2, 0.4]);
        let none = InputNorm { alpha: 0.0, ..full };
        let a = none.affine(&x);
        assert!(
            a.a.iter().all(|v| (v - 1.0).abs() < 1e-6) && a.b.iter().all(|v| v.abs() < 1e-6),
            "{a:?}"
        );
        let half = InputNorm { alpha: 0.5, ..full };
        let mut y = x.clone();
        half.affine(&x).apply(&mut y);
        let (hm, _) = channel_stats(&y);
        let (xm, _) = channel_stats(&x);
        for c in 0..3 {
            assert!(xm[c] < hm[c] && hm[c] < full.mean[c], "{xm:?} {hm:?} {:?}", full.mean);
        }
    }

    /// The nodes put into a graph compute what the adapter does to its inputs.
    #[test]
    fn issue5_input_norm_graph_matches_the_adapter() {
        let mut g = seg_onnx::GraphBuilder::new("id");
        g.input("input", &[1, 3, 5, 7]);
        g.init_f32("two", &[1], &[2.0]);
        g.node("Mul", &["input", "two"], "output", &[]);
        g.output("output", &[1, 3, 5, 7]);
        let mut model = g.finish(&Default::default());
        let norm = InputNorm {
            alpha: 0.7,
            mean: [0.1, -0.2, 0.3],
            std: [0.9, 1.1, 1.3],
        };
        norm.insert(&mut model).unwrap();
        assert!(model
            .metadata_props
            .iter()
            .any(|e| e.key == "adapt.input_norm" && e.value.contains("alpha=0.7")));
        let x = frame(5, 7, [-1.5, -1.0, 0.5], [0.5, 0.8, 0.3]);
        let mut want = x.clone();
        norm.affine(&x).apply(&mut want);
        let plan = crate::backend::tract::plan(&model, [1, 3, 5, 7]).unwrap();
        let input = tract_ndarray::Array4::from_shape_vec([1, 3, 5, 7], x)
            .unwrap()
            .into_tensor();
        let out = plan.run(tvec!(input.into())).unwrap();
        let got: Vec<f32> = out[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect();
        let diff = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - 2.0 * w).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-4, "max |graph - adapter| = {diff}");

        let mut two_inputs = model.clone();
        let gr = two_inputs.graph.as_mut().unwrap();
        gr.input.push(gr.input[0].clone());
        gr.input[1].name = "other".into();
        let e = norm.insert(&mut two_inputs).unwrap_err();
        assert!(e.contains("2 data inputs"), "{e}");
    }
}
