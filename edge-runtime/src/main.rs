//! `edge-seg`: run a segmentation model on frames and draw the result; evaluate a model.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use edge_seg_runtime::overlay::{self, Legend, OverlayMode, RenderOptions};
use edge_seg_runtime::source::Source;
use edge_seg_runtime::{eval, Segmenter, DEFAULT_MODEL, DEFAULT_MODEL_NAME, DEFAULT_SAMPLES};
use seg_core::data::Layout;
use seg_core::results::{upsert, Record};

#[derive(Parser)]
#[command(
    name = "edge-seg",
    version,
    about = "Semantic segmentation at the edge: run and evaluate ONNX models"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Segment frames and write overlay PNGs (no arguments: the embedded model on the embedded
    /// sample frames, written to ./edge-seg-out).
    Run(RunArgs),
    /// Evaluate a model on a labeled split: mIoU, per-class IoU, confusion matrix.
    Eval(EvalArgs),
    /// Quantize a float ONNX model to an int8 QDQ graph with calibration images.
    Quantize(QuantizeArgs),
}

#[derive(clap::Args)]
struct QuantizeArgs {
    /// Float ONNX model (edge-seg metadata gives the preprocessing).
    #[arg(long)]
    model: PathBuf,
    /// Folder of calibration images.
    #[arg(long)]
    calib: PathBuf,
    /// Output QDQ ONNX file.
    #[arg(long)]
    out: PathBuf,
    /// Activation range: minmax | percentile | entropy.
    #[arg(long, default_value = "minmax")]
    method: String,
    /// Percentile for --method percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Per-channel weight scales (onnxruntime / tensorrt targets; tract is per-tensor).
    #[arg(long)]
    per_channel: bool,
    /// Target runtime: tract | onnxruntime | tensorrt.
    #[arg(long, default_value = "tract")]
    target: String,
    /// Node names to keep in float (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Keep the first and last weight layers in float.
    #[arg(long)]
    keep_first_last_float: bool,
    /// Write the per-tensor report (scale, clipping, SQNR) as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// ONNX model (default: the embedded camvid-small model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image or a folder of images (default: the embedded sample frames).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output folder for the rendered PNGs.
    #[arg(long, default_value = "edge-seg-out")]
    output: PathBuf,
    /// overlay | mask | side-by-side.
    #[arg(long, default_value = "overlay")]
    mode: OverlayMode,
    /// Weight of the class colours in overlay modes (0..1).
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// Do not draw the legend.
    #[arg(long)]
    no_legend: bool,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// Dataset folder.
    #[arg(long, default_value = "../shared/data/camvid")]
    data: PathBuf,
    /// Split name or split-list file.
    #[arg(long, default_value = "val")]
    split: String,
    /// Dataset layout: camvid | voc | cityscapes.
    #[arg(long, default_value = "camvid")]
    layout: Layout,
    /// Void id in the mask files (CamVid: 11; VOC, Cityscapes: 255).
    #[arg(long, default_value_t = 11)]
    ignore_id: u8,
    /// Write the confusion matrix as CSV here.
    #[arg(long)]
    confusion: Option<PathBuf>,
    /// Add the mIoU as a record to this docs/results JSON file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// The record's name (with --record).
    #[arg(long, default_value = "val_miou")]
    record_name: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        None => run(RunArgs {
            output: "edge-seg-out".into(),
            alpha: 0.5,
            ..Default::default()
        }),
        Some(Cmd::Run(a)) => run(a),
        Some(Cmd::Eval(a)) => evaluate(a),
        Some(Cmd::Quantize(a)) => quantize(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_model(path: &Option<PathBuf>) -> Result<Segmenter> {
    Ok(match path {
        Some(p) => Segmenter::open(p)?,
        None => Segmenter::from_bytes(DEFAULT_MODEL, DEFAULT_MODEL_NAME)?,
    })
}

fn run(a: RunArgs) -> Result<()> {
    anyhow::ensure!((0.0..=1.0).contains(&a.alpha), "--alpha {} is outside 0..1", a.alpha);
    let mut seg = load_model(&a.model)?;
    let source = match &a.input {
        Some(p) => Source::from_path(p)?,
        None => Source::Embedded(DEFAULT_SAMPLES),
    };
    std::fs::create_dir_all(&a.output).with_context(|| format!("{}: cannot create", a.output.display()))?;
    let model_name = seg.meta.name.clone();
    let names = seg.meta.classes.names.clone();
    let palette = seg.meta.classes.palette.clone();
    let legend = Legend {
        names: &names,
        palette: &palette,
    };
    let opts = RenderOptions {
        mode: a.mode,
        alpha: a.alpha,
        legend: !a.no_legend,
        status: true,
    };
    let (mut total_ms, mut infer_total_ms) = (0.0, 0.0);
    println!(
        "model {} ({}), {} frame(s) -> {}",
        model_name,
        seg.origin,
        source.len(),
        a.output.display()
    );
    for i in 0..source.len() {
        let t0 = Instant::now();
        let (name, frame) = source.frame(i)?;
        let t_infer = Instant::now();
        let classes = seg.segment(&frame)?;
        let infer_ms = t_infer.elapsed().as_secs_f64() * 1e3;
        let fps = if i == 0 {
            1e3 / infer_ms
        } else {
            1e3 * i as f64 / total_ms
        };
        let status = format!("{model_name} | {} | {fps:.1} FPS", seg.backend_name());
        let out = overlay::render_with(&frame, &classes, &legend, &status, &opts);
        let path = a.output.join(format!("{name}.png"));
        let mut png = Vec::new();
        out.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .with_context(|| format!("{}: cannot encode PNG", path.display()))?;
        seg_core::io::write_atomic(&path, &png).with_context(|| format!("{}: cannot write", path.display()))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        total_ms += ms;
        infer_total_ms += infer_ms;
        println!("{}  {ms:7.1} ms (inference {infer_ms:.1} ms)", path.display());
    }
    let n = source.len().max(1) as f64;
    println!(
        "mean {:.1} ms/frame ({:.1} FPS), inference {:.1} ms",
        total_ms / n,
        1e3 * n / total_ms.max(1e-9),
        infer_total_ms / n
    );
    Ok(())
}

fn evaluate(a: EvalArgs) -> Result<()> {
    let mut seg = Segmenter::open(&a.model)?;
    let t0 = Instant::now();
    let mut images = 0;
    let cm = eval::evaluate(&mut seg, &a.data, a.layout, &a.split, a.ignore_id, |i, n| {
        images = n;
        if i % 20 == 0 || i == n {
            eprint!("\r{i}/{n} images");
        }
    })?;
    eprintln!();
    print!("{}", eval::report(&cm, &seg.meta.classes.names));
    println!("{images} images in {:.1} s", t0.elapsed().as_secs_f64());
    if let Some(p) = &a.confusion {
        seg_core::io::write_atomic(p, cm.to_csv(&seg.meta.classes.names).as_bytes())
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    if let Some(p) = &a.record {
        let split = format!(
            "{} {}",
            a.data.file_name().map(|f| f.to_string_lossy()).unwrap_or_default(),
            a.split
        );
        upsert(p, &[Record::now(&a.record_name, 100.0 * cm.miou(), "mIoU %", &split)])
            .with_context(|| format!("{}: cannot write record", p.display()))?;
    }
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    use edge_seg_quantize::{
        compare_outputs, load_images, quantize_model, Method, Preprocess, QuantizeOptions, Target,
    };
    let method = match a.method.as_str() {
        "minmax" => Method::MinMax,
        "percentile" => Method::Percentile,
        "entropy" => Method::Entropy,
        m => anyhow::bail!("--method {m}: expected minmax, percentile or entropy"),
    };
    let target = match a.target.as_str() {
        "tract" => Target::Tract,
        "onnxruntime" => Target::OnnxRuntime,
        "tensorrt" => Target::TensorRt,
        t => anyhow::bail!("--target {t}: expected tract, onnxruntime or tensorrt"),
    };
    let model = seg_onnx::load(&a.model)?;
    let calib = load_images(&a.calib)?;
    let opts = QuantizeOptions {
        method,
        percentile: a.percentile,
        per_channel: a.per_channel,
        target,
        exclude: a.exclude,
        keep_first_last_float: a.keep_first_last_float,
    };
    let (qdq, report) = quantize_model(&model, &calib, &opts).with_context(|| a.model.display().to_string())?;
    seg_onnx::save(&qdq, &a.out)?;
    print!("{}", report.table());
    let cmp = compare_outputs(&model, &qdq, &calib, Preprocess::from_model(&model)?)?;
    println!(
        "wrote {}: argmax agreement with the float model {:.2} %, output SQNR {:.1} dB ({} calibration images)",
        a.out.display(),
        100.0 * cmp.argmax_agreement,
        cmp.sqnr_db,
        calib.len()
    );
    if let Some(p) = &a.report {
        seg_core::io::write_atomic(p, report.to_json().as_bytes())
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}
