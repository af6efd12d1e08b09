//! Issue #22: median single-frame inference latency of every backend × precision × model of
//! `benches/engines/run.sh`, one frame after the other with nothing else running: what one frame
//! costs the network on that backend (`Segmenter::infer` on a preprocessed 480×360 CamVid frame:
//! input binding, the graph, the scores out). The throughput run of `edge-seg run` (also in
//! run.sh) measures the same stage while the pipeline's other stages share the two cores.
//!
//!   EDGE_SEG_ENGINES_WORK=target/engines-bench EDGE_SEG_ENGINES_MODELS="student default" \
//!   cargo bench -p edge-seg-benches --bench engines_latency -- --noplot
//!
//! Reads `<work>/<model>/f32_described.onnx` (f32) and `int8_<backend>.onnx` (int8) as run.sh
//! writes them; `<work>/calib/` gives the frame. Without `EDGE_SEG_ENGINES_WORK` it times the
//! shipped student and default models in f32. onnxruntime cells need its library (as
//! `edge-seg run --backend ort`); without it they are left out with a warning.
//! Criterion ids: `engines/<backend>_<precision>_<model>`; benches/engines/records.py reads their
//! medians from target/criterion.

use std::path::{Path, PathBuf};

use criterion::{criterion_group, criterion_main, Criterion};
use edge_seg_runtime::backend::{BackendKind, BackendOptions};
use edge_seg_runtime::{LoadOptions, Segmenter, DEFAULT_SAMPLES};

/// `EDGE_SEG_ENGINES_WORK`, relative to the repository root (cargo runs benches in the crate's
/// folder).
fn work() -> Option<PathBuf> {
    let w = PathBuf::from(std::env::var_os("EDGE_SEG_ENGINES_WORK")?);
    Some(if w.is_absolute() {
        w
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(w)
    })
}

/// `(id, file)` of every cell.
fn cells() -> Vec<(String, PathBuf)> {
    let Some(work) = work() else {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/models");
        return vec![
            ("student", models.join("camvid-edge.onnx")),
            ("default", models.join("camvid-lite0.onnx")),
        ]
        .into_iter()
        .flat_map(|(m, p)| ["tract", "ort"].map(|b| (format!("{b}_f32_{m}"), p.clone())))
        .collect();
    };
    let models = std::env::var("EDGE_SEG_ENGINES_MODELS").unwrap_or_else(|_| "student default".into());
    let mut out = Vec::new();
    for m in models.split_whitespace() {
        for b in ["tract", "ort"] {
            let d = work.join(m);
            out.push((format!("{b}_f32_{m}"), d.join("f32_described.onnx")));
            out.push((format!("{b}_int8_{m}"), d.join(format!("int8_{b}.onnx"))));
        }
    }
    out
}

/// The frame: the first calibration frame of run.sh's work folder, or a shipped sample.
fn frame() -> image::RgbImage {
    let calib = std::env::var("EDGE_SEG_ENGINES_WORK").ok().and_then(|w| {
        let mut files: Vec<_> = std::fs::read_dir(Path::new(&w).join("calib"))
            .ok()?
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        files.into_iter().next()
    });
    let img = match calib {
        Some(p) => image::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        None => image::load_from_memory(DEFAULT_SAMPLES[0].1).expect("sample decodes"),
    };
    image::imageops::resize(&img.to_rgb8(), 480, 360, image::imageops::FilterType::Triangle)
}

fn engines(c: &mut Criterion) {
    let frame = frame();
    let threads: usize = std::env::var("EDGE_SEG_ENGINES_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(2);
    // tract's thread pool is process-wide (as `edge-seg run --threads` sets it)
    edge_seg_runtime::backend::tract::set_threads(threads);
    let mut g = c.benchmark_group("engines");
    g.sample_size(60);
    for (id, path) in cells() {
        let mut opts = BackendOptions {
            kind: if id.starts_with("ort") {
                BackendKind::Ort
            } else {
                BackendKind::Tract
            },
            ..BackendOptions::default()
        };
        opts.ort.threads = threads;
        let mut seg = match Segmenter::open_with(&path, &LoadOptions::backend(opts)) {
            Ok(s) => s,
            Err(e) if id.starts_with("ort") => {
                eprintln!("warning: {id} left out: {e}");
                continue;
            }
            Err(e) => panic!("{id}: {e}"),
        };
        let mut input = Vec::new();
        seg.preprocessor().run(&frame, &mut input);
        g.bench_function(&id, |b| b.iter(|| seg.infer(&input).expect("runs")));
    }
    g.finish();
}

criterion_group!(benches, engines);
criterion_main!(benches);
