//! tract latency of float and int8 (QDQ) models on one frame, for `benches/quantize/run.sh`
//! (issue #3): warm-up runs, then the median of N timed `Segmenter::logits` calls per model.
//!
//! ```sh
//! cargo bench -p edge-seg-benches --bench quantize_latency -- \
//!     --frame f.png --warmup 3 --runs 20 --out lat.json f32=m.onnx int8=m.int8.onnx
//! ```
//!
//! Writes `{"<name>": {"median_ms": .., "min_ms": .., "runs": N, "model": ".."}, ..}` to `--out`
//! (and prints a line per model). A model that fails to load or run is reported as
//! `{"error": ".."}` and the others are still measured. tract runs single-threaded.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use edge_seg_runtime::Segmenter;

struct Args {
    frame: PathBuf,
    warmup: usize,
    runs: usize,
    out: Option<PathBuf>,
    models: Vec<(String, PathBuf)>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        frame: PathBuf::new(),
        warmup: 3,
        runs: 20,
        out: None,
        models: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            // passed by `cargo bench` to every bench target
            "--bench" => {}
            "--frame" => a.frame = val("--frame")?.into(),
            "--warmup" => a.warmup = val("--warmup")?.parse().map_err(|e| format!("--warmup: {e}"))?,
            "--runs" => a.runs = val("--runs")?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--out" => a.out = Some(val("--out")?.into()),
            s if s.contains('=') && !s.starts_with("--") => {
                let (n, p) = s.split_once('=').expect("contains =");
                a.models.push((n.to_string(), p.into()));
            }
            s => return Err(format!("unknown argument '{s}'")),
        }
    }
    if a.frame.as_os_str().is_empty() || a.models.is_empty() || a.runs == 0 {
        return Err("usage: --frame F [--warmup 3] [--runs 20] [--out J] NAME=MODEL...".into());
    }
    Ok(a)
}

fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn measure(model: &Path, frame: &image::RgbImage, warmup: usize, runs: usize) -> Result<(f64, f64), String> {
    let mut seg = Segmenter::open(model).map_err(|e| format!("{e:#}"))?;
    for _ in 0..warmup {
        seg.logits(frame).map_err(|e| format!("{e:#}"))?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(seg.logits(frame).map_err(|e| format!("{e:#}"))?);
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        0.5 * (ms[n / 2 - 1] + ms[n / 2])
    };
    Ok((median, ms[0]))
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("quantize_latency: {e}");
            return ExitCode::from(2);
        }
    };
    let frame = match image::open(&a.frame) {
        Ok(i) => i.to_rgb8(),
        Err(e) => {
            eprintln!("quantize_latency: {}: {e}", a.frame.display());
            return ExitCode::from(2);
        }
    };
    let mut entries = Vec::new();
    for (name, model) in &a.models {
        let body = match measure(model, &frame, a.warmup, a.runs) {
            Ok((median, min)) => {
                println!(
                    "tract {name:<24} median {median:8.2} ms  min {min:8.2} ms  ({} runs, {}x{})",
                    a.runs,
                    frame.width(),
                    frame.height()
                );
                format!(
                    "{{\"median_ms\": {median}, \"min_ms\": {min}, \"runs\": {}, \"model\": {}}}",
                    a.runs,
                    json_str(&model.display().to_string())
                )
            }
            Err(e) => {
                eprintln!("tract {name}: {e}");
                format!("{{\"error\": {}}}", json_str(&e))
            }
        };
        entries.push(format!("  {}: {body}", json_str(name)));
    }
    let text = format!("{{\n{}\n}}\n", entries.join(",\n"));
    if let Some(p) = &a.out {
        if let Err(e) = std::fs::write(p, text) {
            eprintln!("quantize_latency: {}: {e}", p.display());
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
