//! Size, cost and speed of a model, so that a teacher and a student can be compared per FLOP
//! (issue #27): parameter count, GFLOPs at an input size from tract's own cost model, and the
//! latency of tract's optimised plan (the runtime's engine) on one image.
//!
//! A model is either a training config (its `[model]` built with the seeded init, then exported
//! to ONNX in memory as `export` writes it) or any ONNX file (ours or a PyTorch export); both
//! are counted and timed from the same ONNX graph, so the figures compare.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use seg_onnx::pb;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::Cost;

use crate::config::TrainConfig;

/// Largest input side `info` takes (the same bound as the runtime's input sides).
pub const MAX_SIDE: u32 = 4096;
/// Most timed runs.
pub const MAX_RUNS: usize = 1000;
/// Most tract threads.
pub const MAX_THREADS: usize = 256;
/// Untimed runs before the timed ones.
pub const WARMUP_RUNS: usize = 2;

/// What `params` counts for a config: what SGD updates.
pub const PARAMS_TRAINABLE: &str = "trainable variables (BatchNorm running statistics excluded)";
/// What `params` counts for an ONNX file.
pub const PARAMS_INITIALIZERS: &str = "initializer elements (float and 8-bit; no scalars or integer shape tensors)";

/// The model to describe.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A training config's `[model]`; `origin` names it in the report (the file, or `defaults`).
    Config { cfg: &'a TrainConfig, origin: &'a str },
    /// An ONNX file.
    Onnx(&'a Path),
}

/// How to measure.
#[derive(Debug, Clone)]
pub struct Options {
    /// Input `[height, width]` (default: the config's `data.input_size`, or the ONNX file's
    /// declared input size).
    pub size: Option<[u32; 2]>,
    /// Timed runs (after [`WARMUP_RUNS`] untimed ones).
    pub runs: usize,
    /// tract threads for the matrix products (1 = single-threaded, as `edge-seg run` by default).
    pub threads: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            size: None,
            runs: 10,
            threads: 1,
        }
    }
}

/// What [`info`] measured (printed as a table, or as one JSON object with `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelInfo {
    /// The config file or ONNX file described.
    pub model: String,
    /// `config` or `onnx`.
    pub source: &'static str,
    /// Parameter count; what is counted is in `params_counted`.
    pub params: u64,
    pub params_counted: &'static str,
    /// The input the graph was counted and timed at, `[1, 3, h, w]`.
    pub input: [usize; 4],
    /// Multiply-accumulates of the ONNX graph at that input: the sum of tract's `Cost::FMA` over
    /// the nodes of the typed (not yet optimised) model. Convolutions and matrix products count
    /// `out × in/groups × kernel` per output point (bias adds not counted); tract also counts
    /// one per element for element-wise `Mul` and reductions, and nothing for `Resize`, `Add`,
    /// activations and pooling — `macs_by_op` shows the split.
    pub macs: u64,
    /// 2 × `macs` / 1e9.
    pub gflops: f64,
    /// `macs` per tract op name (`Conv`, `EinSum`, `Mul`, ...).
    pub macs_by_op: BTreeMap<String, u64>,
    /// tract threads during the timed runs.
    pub threads: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Median and 90th percentile (nearest rank) of `runs_ms`.
    pub latency_median_ms: f64,
    pub latency_p90_ms: f64,
    /// Every timed run of tract's optimised plan on one seeded random image, in order.
    pub runs_ms: Vec<f64>,
}

impl ModelInfo {
    /// The human-readable report.
    pub fn table(&self) -> String {
        let [_, _, h, w] = self.input;
        let by_op = {
            let mut v: Vec<(&String, &u64)> = self.macs_by_op.iter().collect();
            v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
            v.iter()
                .map(|(op, n)| format!("{op} {:.1} %", 100.0 * **n as f64 / self.macs.max(1) as f64))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let threads = if self.threads == 1 {
            "1 thread".to_string()
        } else {
            format!("{} threads", self.threads)
        };
        format!(
            "model       {} ({})\n\
             parameters  {:.3} M ({} {})\n\
             input       1x3x{h}x{w}\n\
             GFLOPs      {:.3} (2 x {} multiply-accumulates, tract's cost model; {by_op})\n\
             latency     median {:.2} ms, p90 {:.2} ms ({} runs after {} warm-ups, tract optimised plan, {threads})\n",
            self.model,
            self.source,
            self.params as f64 / 1e6,
            self.params,
            self.params_counted,
            self.gflops,
            self.macs,
            self.latency_median_ms,
            self.latency_p90_ms,
            self.runs_ms.len(),
            self.warmup,
        )
    }
}

/// Describes `source` (see the module documentation).
pub fn info(source: Source, opts: &Options) -> Result<ModelInfo> {
    if let Some([h, w]) = opts.size {
        parse_size(&format!("{h}x{w}"))?;
    }
    anyhow::ensure!(
        (1..=MAX_RUNS).contains(&opts.runs),
        "--runs {}: must be in 1..={MAX_RUNS}",
        opts.runs
    );
    anyhow::ensure!(
        (1..=MAX_THREADS).contains(&opts.threads),
        "--threads {}: must be in 1..={MAX_THREADS}",
        opts.threads
    );
    let (model, kind, params, params_counted, proto, hw) = match source {
        Source::Config { cfg, origin } => {
            let [h, w] = opts.size.unwrap_or(cfg.data.input_size);
            anyhow::ensure!(
                (1..=MAX_SIDE).contains(&h) && (1..=MAX_SIDE).contains(&w),
                "{origin}: data.input_size = [{h}, {w}]: each side must be in 1..={MAX_SIDE} (or give --size)"
            );
            let hw = (h as usize, w as usize);
            let (varmap, model) = crate::bench::seeded_model(&cfg.model, None, &Device::Cpu)?;
            let proto = seg_nn::export::to_onnx(&model, hw, &BTreeMap::new())?;
            let params = trainable_parameters(&varmap);
            (origin.to_string(), "config", params, PARAMS_TRAINABLE, proto, hw)
        }
        Source::Onnx(path) => {
            let proto = seg_onnx::load(path)?;
            let hw = match opts.size {
                Some([h, w]) => (h as usize, w as usize),
                None => declared_hw(&proto).with_context(|| {
                    format!(
                        "{}: the graph declares no fixed input size; give --size HxW",
                        path.display()
                    )
                })?,
            };
            let params = initializer_elements(&proto);
            (
                path.display().to_string(),
                "onnx",
                params,
                PARAMS_INITIALIZERS,
                proto,
                hw,
            )
        }
    };
    let at = |what: &str| {
        format!(
            "{model}: tract cannot {what} the graph at {}x{} (--size; a graph exported with fixed \
             Resize sizes runs only at its declared size: export it at this one, or give its --config)",
            hw.0, hw.1
        )
    };
    let macs = mac_count(&proto, hw).with_context(|| at("type"))?;
    let runs_ms = latency_ms(&proto, hw, opts.runs, WARMUP_RUNS, opts.threads).with_context(|| at("run"))?;
    let total: u64 = macs.values().sum();
    Ok(ModelInfo {
        model,
        source: kind,
        params,
        params_counted,
        input: [1, 3, hw.0, hw.1],
        macs: total,
        gflops: 2.0 * total as f64 / 1e9,
        macs_by_op: macs,
        threads: opts.threads,
        warmup: WARMUP_RUNS,
        latency_median_ms: median(&runs_ms),
        latency_p90_ms: percentile(&runs_ms, 0.9),
        runs_ms,
    })
}

/// `--size HEIGHTxWIDTH`, each side in `1..=MAX_SIDE`.
pub fn parse_size(s: &str) -> Result<[u32; 2]> {
    let hw = s
        .split_once('x')
        .and_then(|(h, w)| Some([h.parse::<u32>().ok()?, w.parse::<u32>().ok()?]));
    match hw {
        Some([h, w]) if (1..=MAX_SIDE).contains(&h) && (1..=MAX_SIDE).contains(&w) => Ok([h, w]),
        _ => anyhow::bail!("--size '{s}': expected HEIGHTxWIDTH, each side in 1..={MAX_SIDE}"),
    }
}

/// Elements of the trainable variables of `varmap` (the ones SGD updates: everything but
/// BatchNorm running statistics).
pub fn trainable_parameters(varmap: &VarMap) -> u64 {
    seg_nn::optim::encoder_rest_groups(varmap, 1.0)
        .iter()
        .flat_map(|g| g.params.iter())
        .map(|(_, v)| v.as_tensor().elem_count() as u64)
        .sum()
}

/// Elements of the weight-like initializers of `proto`: float and 8-bit integer tensors with
/// at least one dimension (the count `benches/pretrained/record.py` makes for a float graph;
/// int64/int32 shape, axis and size tensors and scalars are left out).
pub fn initializer_elements(proto: &pb::ModelProto) -> u64 {
    use pb::tensor_proto::DataType as D;
    let weight_like = [D::Float, D::Float16, D::Double, D::Bfloat16, D::Int8, D::Uint8].map(|d| d as i32);
    proto
        .graph
        .iter()
        .flat_map(|g| g.initializer.iter())
        .filter(|t| !t.dims.is_empty() && weight_like.contains(&t.data_type))
        .map(|t| t.dims.iter().map(|&d| d.max(0) as u64).product::<u64>())
        .sum()
}

/// The fixed `(h, w)` of the graph's first input that is not an initializer (`[n, c, h, w]`
/// with both sides given), if it declares one.
pub fn declared_hw(proto: &pb::ModelProto) -> Option<(usize, usize)> {
    let dims = seg_onnx::static_dims(seg_onnx::first_input(proto)?);
    let side = |i: usize| dims.get(i).copied().flatten().filter(|v| *v > 0).map(|v| v as usize);
    (dims.len() == 4).then_some(())?;
    Some((side(2)?, side(3)?))
}

/// One line out of a tract error (its context chain, newlines flattened).
fn tract_err(e: TractError) -> anyhow::Error {
    anyhow::anyhow!("{}", format!("{e:#}").replace('\n', " "))
}

/// Multiply-accumulates per tract op name of `proto` with its first input fixed to f32
/// `[1, 3, h, w]`: tract's `Cost::FMA` of every node of the typed model.
pub fn mac_count(proto: &pb::ModelProto, (h, w): (usize, usize)) -> Result<BTreeMap<String, u64>> {
    let model = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, h, w]).into()))
        .and_then(|m| m.into_typed())
        .map_err(tract_err)?;
    let mut by_op = BTreeMap::new();
    for node in model.nodes() {
        let facts = model.node_input_facts(node.id).map_err(tract_err)?;
        let costs = node
            .op
            .cost(&facts)
            .map_err(tract_err)
            .with_context(|| format!("node '{}'", node.name))?;
        for (c, n) in costs {
            if let Cost::FMA(_) = c {
                let n = n
                    .to_i64()
                    .map_err(|e| anyhow::anyhow!("node '{}': cost {n} is not a number: {e:?}", node.name))?;
                *by_op.entry(node.op.name().to_string()).or_insert(0u64) += n.max(0) as u64;
            }
        }
    }
    Ok(by_op)
}

/// Milliseconds per run of tract's optimised plan of `proto` on one seeded random `[1, 3, h, w]`
/// image (uniform in [-1, 1)), `warmup` untimed runs first, with `threads` tract threads (the
/// process-wide executor is set back to single-threaded afterwards).
pub fn latency_ms(
    proto: &pb::ModelProto,
    (h, w): (usize, usize),
    runs: usize,
    warmup: usize,
    threads: usize,
) -> Result<Vec<f64>> {
    use tract_linalg::multithread::{set_default_executor, Executor};
    let plan = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, h, w]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(tract_err)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = (0..3 * h * w).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let x: TValue = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), x)?
        .into_tensor()
        .into();
    set_default_executor(if threads <= 1 {
        Executor::SingleThread
    } else {
        Executor::multithread(threads)
    });
    let mut times = Vec::with_capacity(runs);
    let mut result = Ok(());
    for i in 0..warmup + runs {
        let t0 = Instant::now();
        if let Err(e) = plan.run(tvec!(x.clone())) {
            result = Err(tract_err(e));
            break;
        }
        if i >= warmup {
            times.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    set_default_executor(Executor::SingleThread);
    result.map(|()| times)
}

/// The median (mean of the two middle values for an even count); 0 for none.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

/// The `q` quantile by nearest rank (the smallest value with at least `q` of the values at or
/// below it); 0 for none.
pub fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    let rank = (q * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use seg_onnx::{Attr, GraphBuilder};

    /// A graph of one Conv on a `[1, 3, h, w]` input.
    fn one_conv(
        (h, w): (i64, i64),
        cout: i64,
        group: i64,
        (kh, kw): (i64, i64),
        stride: i64,
        pad: i64,
    ) -> pb::ModelProto {
        let cin_g = 3 / group;
        let mut g = GraphBuilder::new("conv");
        g.input("x", &[1, 3, h, w]);
        let n = (cout * cin_g * kh * kw) as usize;
        let wt = g.init_f32("w", &[cout, cin_g, kh, kw], &vec![0.01; n]);
        let b = g.init_f32("b", &[cout], &vec![0.0; cout as usize]);
        g.node(
            "Conv",
            &["x", &wt, &b],
            "y",
            &[
                ("group", Attr::Int(group)),
                ("kernel_shape", Attr::Ints(vec![kh, kw])),
                ("strides", Attr::Ints(vec![stride, stride])),
                ("pads", Attr::Ints(vec![pad, pad, pad, pad])),
            ],
        );
        g.output("y", &[]);
        g.finish(&BTreeMap::new())
    }

    /// tract's FMA count of a Conv is Cout·Cin/g·kh·kw·Hout·Wout (no bias term), with
    /// Hout = ⌊(H + 2p − kh)/s⌋ + 1, computed here by hand for a dense and a grouped case.
    #[test]
    fn issue27_conv_macs_are_counted_by_hand() {
        // dense: 3 -> 8, 3x3, stride 2, pad 1 on 17x20: out 9x10
        let m = mac_count(&one_conv((17, 20), 8, 1, (3, 3), 2, 1), (17, 20)).unwrap();
        assert_eq!(m.values().sum::<u64>(), 8 * 3 * 3 * 3 * 9 * 10, "{m:?}");
        // grouped (depthwise ×2): 3 -> 6, g = 3, 5x3, stride 1, no pad on 17x20: out 13x18
        let m = mac_count(&one_conv((17, 20), 6, 3, (5, 3), 1, 0), (17, 20)).unwrap();
        assert_eq!(m.values().sum::<u64>(), 6 * 5 * 3 * 13 * 18, "{m:?}");
        // and at another size than the declared one
        let m = mac_count(&one_conv((17, 20), 8, 1, (3, 3), 2, 1), (32, 40)).unwrap();
        assert_eq!(m.values().sum::<u64>(), 8 * 3 * 3 * 3 * 16 * 20, "{m:?}");
    }

    #[test]
    fn issue27_onnx_params_size_and_latency() {
        let proto = one_conv((17, 20), 8, 1, (3, 3), 2, 1);
        assert_eq!(initializer_elements(&proto), 8 * 3 * 3 * 3 + 8);
        assert_eq!(declared_hw(&proto), Some((17, 20)));
        let t = latency_ms(&proto, (17, 20), 3, 1, 1).unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.iter().all(|&ms| ms >= 0.0));
    }

    #[test]
    fn issue27_size_is_bounded() {
        assert_eq!(parse_size("360x480").unwrap(), [360, 480]);
        assert_eq!(parse_size("1x4096").unwrap(), [1, 4096]);
        for bad in ["0x5", "5x0", "4097x16", "360", "x", "-1x5", "360x480x3"] {
            let e = parse_size(bad).unwrap_err().to_string();
            assert!(e.starts_with("--size") && !e.contains('\n'), "{bad}: {e}");
        }
    }

    #[test]
    fn median_and_p90() {
        let v = [5.0, 1.0, 4.0, 2.0, 3.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(median(&v), 5.5);
        assert_eq!(percentile(&v, 0.9), 9.0);
        assert_eq!(median(&[3.0]), 3.0);
        assert_eq!(percentile(&[3.0], 0.9), 3.0);
    }
}
