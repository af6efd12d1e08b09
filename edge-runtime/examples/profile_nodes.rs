//! Per-node time of a model in tract, as the runtime loads it (final Resize stripped).
//!
//! `cargo run --release -p edge-seg-runtime --example profile_nodes -- [MODEL.onnx] [RUNS] [THREADS]`
//! (defaults: the embedded model, 20 runs, 1 thread). Prints the slowest nodes and the time
//! per operator kind; a tool for finding what to speed up, not a benchmark of record. With
//! `EDGE_SEG_NO_REWRITE=1` the graph runs as written (no `rewrite::prepare_graph`).

use std::collections::BTreeMap;
use std::time::Instant;

use prost::Message;
use tract_onnx::prelude::*;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bytes = match args.first() {
        Some(p) => std::fs::read(p)?,
        None => edge_seg_runtime::DEFAULT_MODEL.to_vec(),
    };
    let runs: usize = args.get(1).map_or(Ok(20), |s| s.parse())?;
    let threads: usize = args.get(2).map_or(Ok(1), |s| s.parse())?;
    edge_seg_runtime::backend::tract::set_threads(threads);
    let mut proto = seg_onnx::pb::ModelProto::decode(bytes.as_slice())?;
    let meta = seg_core::meta::ModelMeta::from_map(&seg_onnx::metadata(&proto)).map_err(anyhow::Error::msg)?;
    if std::env::var_os("EDGE_SEG_NO_REWRITE").is_none() {
        let done = edge_seg_runtime::rewrite::prepare_graph(&mut proto, meta.input_hw).map_err(anyhow::Error::msg)?;
        println!("rewrites: {done:?}");
    }
    let (h, w) = (meta.input_hw.0 as usize, meta.input_hw.1 as usize);
    let plan = tract_onnx::onnx()
        .model_for_proto_model(&proto)?
        .with_input_fact(0, f32::fact([1, 3, h, w]).into())?
        .into_optimized()?
        .into_runnable()?;
    let input: TValue = Tensor::zero::<f32>(&[1, 3, h, w])?.into();
    let mut state = tract_onnx::tract_core::plan::SimpleState::new(&plan)?;
    for _ in 0..3 {
        state.run(tvec!(input.clone()))?;
    }
    let mut per_node: BTreeMap<(usize, String, String), f64> = BTreeMap::new();
    let t0 = Instant::now();
    for _ in 0..runs {
        state.run_plan_with_eval(tvec!(input.clone()), |ctx, st, node, inputs| {
            let t = Instant::now();
            let r = tract_onnx::tract_core::plan::eval(ctx, st, node, inputs);
            let key = (node.id, node.name.clone(), node.op().name().to_string());
            *per_node.entry(key).or_default() += t.elapsed().as_secs_f64() * 1e3;
            r
        })?;
    }
    let total = t0.elapsed().as_secs_f64() * 1e3 / runs as f64;
    let mut rows: Vec<_> = per_node.into_iter().map(|(k, v)| (v / runs as f64, k)).collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("{runs} runs, {threads} thread(s): {total:.2} ms per run");
    let mut by_op: BTreeMap<String, f64> = BTreeMap::new();
    for (ms, (_, _, op)) in &rows {
        *by_op.entry(op.clone()).or_default() += ms;
    }
    let mut ops: Vec<_> = by_op.into_iter().collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    for (op, ms) in ops {
        println!("{ms:8.2} ms  {op}");
    }
    println!("--- slowest nodes");
    for (ms, (id, name, op)) in rows.iter().take(25) {
        println!("{ms:8.2} ms  #{id} {name} ({op})");
    }
    Ok(())
}
