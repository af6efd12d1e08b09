//! `edge-seg`: run a segmentation model on frames and draw the result; evaluate a model.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
#[cfg(feature = "adapt")]
use edge_seg_runtime::adapt::{offline, state as adapt_state, worker::Worker, AdaptConfig, Adapter};
use edge_seg_runtime::backend::ort::{Ep, OrtOptions};
use edge_seg_runtime::backend::{BackendKind, BackendOptions};
use edge_seg_runtime::describe::{describe, MetaOverrides, MAX_INPUT_SIDE};
use edge_seg_runtime::output::fb::{FbGeometry, FbOutput, Framebuffer};
use edge_seg_runtime::output::serve::MjpegServer;
use edge_seg_runtime::output::{Output, PngDir};
use edge_seg_runtime::overlay::{OverlayMode, RenderOptions};
use edge_seg_runtime::pipeline::{self, PipelineOptions};
use edge_seg_runtime::queue::Policy;
use edge_seg_runtime::source::{open_input, Embedded, FrameSource, InputOptions, Paced, Reconnecting, StreamFormat};
use edge_seg_runtime::LoadOptions;
use edge_seg_runtime::{eval, Segmenter, DEFAULT_MODEL, DEFAULT_MODEL_NAME, DEFAULT_SAMPLES};
use seg_core::classes::ClassTable;
use seg_core::data::Layout;
use seg_core::results::{upsert, Record};

#[derive(Parser)]
#[command(
    name = "edge-seg",
    version,
    about = "Semantic segmentation at the edge: run and evaluate ONNX models"
)]
#[cfg_attr(not(feature = "adapt"), command(after_help = WITHOUT_ADAPT))]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Segment frames and write overlay PNGs (no arguments: the embedded model on the embedded
    /// sample frames, written to ./edge-seg-out).
    #[cfg_attr(not(feature = "adapt"), command(after_help = WITHOUT_ADAPT))]
    Run(Box<RunArgs>),
    /// Evaluate a model on a labeled split: mIoU, per-class IoU, confusion matrix.
    Eval(EvalArgs),
    /// Quantize a float ONNX model to an int8 QDQ graph with calibration images.
    Quantize(QuantizeArgs),
    /// Offline twin of `run --adapt`: adapt a model on a folder of unlabeled frames (in name
    /// order, as a stream) with the same worker and guards, and write the adapted model.
    #[cfg_attr(not(feature = "adapt"), command(after_help = WITHOUT_ADAPT))]
    Adapt(AdaptArgs),
    /// Write a Jetson rootfs overlay for a board: the aarch64 binary, the model, the board
    /// config, the systemd unit, the udev rule, and flash.sh / install.sh (docs/JETSON.md).
    Image(ImageArgs),
}

#[derive(clap::Args)]
struct ImageArgs {
    /// Board: a shipped one (jetson-orin-nano-devkit, jetson-orin-nx-16gb, jetson-agx-orin-64gb,
    /// jetson-xavier-nx; firmware-configs/boards/) or a board file (NAME.toml).
    #[arg(long)]
    board: String,
    /// ONNX model to install on the board.
    #[arg(long)]
    model: PathBuf,
    /// Output folder (created when missing); only the overlay's own files are written there.
    #[arg(long)]
    out: PathBuf,
    /// The aarch64 `edge-seg` binary to install (firmware-configs/scripts/cross-build.sh builds it).
    #[arg(long)]
    binary: Option<PathBuf>,
}

#[derive(clap::Args)]
// an inference-only build parses them only to refuse the verb
#[cfg_attr(not(feature = "adapt"), allow(dead_code))]
struct AdaptArgs {
    /// Float ONNX model to adapt.
    #[arg(long)]
    model: PathBuf,
    /// Folder of frames, taken in name order.
    #[arg(long)]
    frames: PathBuf,
    /// Only frames whose file name starts with this (e.g. a CamVid sequence: 0001TP).
    #[arg(long)]
    prefix: Option<String>,
    /// Where to write the adapted ONNX model.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    settings: AdaptSettings,
    /// Play the stream this many times.
    #[arg(long, default_value_t = 1)]
    passes: u32,
    /// Steps per frame (every frame of the folder is handed to the worker; `every_n_frames` is
    /// for live runs). Sparse recordings stand for more video: a 1 Hz sample of a 30 FPS camera,
    /// with one frame in `every_n_frames` = 6 handed over, is 5 steps per recorded frame.
    #[arg(long, default_value_t = 1)]
    steps_per_frame: u32,
    /// Collapse stress test: after every frame, insert this many near-constant frames (the
    /// frame's mean colour plus a little noise).
    #[arg(long, default_value_t = 0)]
    stress: u32,
    /// Write steps, rollbacks, step and inference times as JSON here.
    #[arg(long)]
    summary: Option<PathBuf>,
}

/// Adaptation settings shared by `run --adapt` and `adapt`.
#[derive(clap::Args, Default, Clone)]
struct AdaptSettings {
    /// Adaptation settings (TOML; see `AdaptConfig` in edge-runtime/src/adapt/config.rs).
    #[arg(long)]
    adapt_config: Option<PathBuf>,
    /// Override one setting, e.g. `--adapt-set lr=0.005` or `--adapt-set guard.enabled=false`
    /// (repeatable; applied after --adapt-config).
    #[arg(long = "adapt-set", value_name = "KEY=VALUE")]
    adapt_set: Vec<String>,
    /// Load the adapted weights from this file at start (when it exists) and save them here
    /// (atomically) whenever new weights are published.
    #[arg(long)]
    adapt_state: Option<PathBuf>,
    /// Start from the source weights, ignoring (and later overwriting) --adapt-state.
    #[arg(long)]
    adapt_reset: bool,
}

/// Issue #24: an inference-only build (`--no-default-features`, without the `adapt` feature)
/// keeps the adaptation flags and the `adapt` verb in its parser and --help, and refuses them
/// with [`without_adaptation`]; this is what its --help says about it.
#[cfg(not(feature = "adapt"))]
const WITHOUT_ADAPT: &str = "This edge-seg was built without on-device adaptation (the `adapt` feature): \
                             `run --adapt…` and `adapt` exit with an error.";

/// The one-line error of an inference-only build when `what` (a flag, or the `adapt` verb) asks
/// for adaptation.
fn without_adaptation(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what}: this edge-seg was built without on-device adaptation (the `adapt` feature); \
         `cargo build -p edge-seg-runtime` with default features has it"
    )
}

impl AdaptSettings {
    /// The first of `run`'s adaptation settings flags given, if any.
    fn first_flag(&self) -> Option<&'static str> {
        [
            (self.adapt_config.is_some(), "--adapt-config"),
            (!self.adapt_set.is_empty(), "--adapt-set"),
            (self.adapt_state.is_some(), "--adapt-state"),
            (self.adapt_reset, "--adapt-reset"),
        ]
        .into_iter()
        .find_map(|(given, flag)| given.then_some(flag))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum WeightRange {
    /// int8 `[-127, 127]`.
    Full,
    /// 7 bits, `[-63, 63]`.
    Reduced,
}

/// `quantize --method`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum MethodArg {
    Minmax,
    Percentile,
    Entropy,
}

/// `quantize --target`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Tract,
    Onnxruntime,
    Tensorrt,
}

/// `run --drop`.
#[derive(Clone, Copy, Default, clap::ValueEnum)]
enum DropArg {
    #[default]
    Auto,
    Drop,
    Wait,
}

/// `--display fb` (/dev/fb0) or `fb:/dev/fbN`: the framebuffer device.
fn parse_display(s: &str) -> std::result::Result<PathBuf, String> {
    match s {
        "fb" => Ok(PathBuf::from("/dev/fb0")),
        _ => s
            .strip_prefix("fb:")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("'{s}': expected fb or fb:/dev/fbN")),
    }
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
    /// Activation range.
    #[arg(long, value_enum, default_value_t = MethodArg::Minmax)]
    method: MethodArg,
    /// Percentile for --method percentile.
    #[arg(long, default_value_t = 99.99)]
    percentile: f64,
    /// Per-channel weight scales (onnxruntime / tensorrt targets; tract is per-tensor).
    #[arg(long)]
    per_channel: bool,
    /// Target runtime.
    #[arg(long, value_enum, default_value_t = TargetArg::Tract)]
    target: TargetArg,
    /// Node names to keep in float (repeatable).
    #[arg(long)]
    exclude: Vec<String>,
    /// Keep the first and last weight layers in float.
    #[arg(long)]
    keep_first_last_float: bool,
    /// Weight range: full (int8 [-127, 127]) | reduced (7 bits, [-63, 63]: for onnxruntime on
    /// x86 CPUs without VNNI, whose int8 kernels saturate on full-range weights; ARM and VNNI
    /// CPUs lose accuracy with it).
    #[arg(long, value_enum, default_value_t = WeightRange::Full)]
    weight_range: WeightRange,
    /// Write the per-tensor report (scale, clipping, SQNR) as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    model_args: ModelArgs,
}

/// What the model is, for a model without edge-seg metadata (or to override it).
#[derive(clap::Args, Default, Clone)]
struct ModelArgs {
    /// Class file: one class per line, `name` or `name r g b` (default: the model's metadata, or
    /// generic names for as many classes as its output has).
    #[arg(long, value_name = "FILE")]
    classes: Option<PathBuf>,
    /// Normalisation mean on 0..1 pixels, `r,g,b` (default: the metadata, or ImageNet's).
    #[arg(long, value_parser = parse_triple)]
    mean: Option<[f32; 3]>,
    /// Normalisation std, `r,g,b` (default: the metadata, or ImageNet's).
    #[arg(long, value_parser = parse_triple)]
    std: Option<[f32; 3]>,
    /// Network input size HEIGHTxWIDTH (default: the metadata, or the graph's fixed input).
    #[arg(long, value_parser = parse_hw)]
    input_size: Option<(u32, u32)>,
}

impl ModelArgs {
    fn overrides(&self) -> Result<MetaOverrides> {
        let classes = match &self.classes {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("--classes {}: cannot read", p.display()))?;
                Some(ClassTable::parse_lines(&text).map_err(|e| anyhow::anyhow!("--classes {}: {e}", p.display()))?)
            }
            None => None,
        };
        Ok(MetaOverrides {
            classes,
            input_hw: self.input_size,
            mean: self.mean,
            std: self.std,
        })
    }
}

fn parse_triple(s: &str) -> std::result::Result<[f32; 3], String> {
    let v: Vec<f32> = s
        .split(',')
        .map(|x| x.trim().parse::<f32>().ok().filter(|v| v.is_finite()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("'{s}': expected three numbers r,g,b"))?;
    <[f32; 3]>::try_from(v.as_slice()).map_err(|_| format!("'{s}': expected three numbers r,g,b"))
}

fn parse_hw(s: &str) -> std::result::Result<(u32, u32), String> {
    let (h, w) = s
        .split_once('x')
        .ok_or_else(|| format!("'{s}': expected HEIGHTxWIDTH"))?;
    match (h.parse::<u32>(), w.parse::<u32>()) {
        (Ok(h), Ok(w)) if (1..=MAX_INPUT_SIDE).contains(&h) && (1..=MAX_INPUT_SIDE).contains(&w) => Ok((h, w)),
        _ => Err(format!("'{s}': expected HEIGHTxWIDTH, each 1..={MAX_INPUT_SIDE}")),
    }
}

/// Which engine runs the model (`run` and `eval`).
#[derive(clap::Args, Default, Clone)]
struct EngineArgs {
    /// Inference threads, tract's matrix products or onnxruntime's intra-op pool (default: all
    /// cores; with `run`, 1 leaves the other pipeline stages a core of their own).
    #[arg(long, value_parser = parse_threads)]
    threads: Option<usize>,
    /// Inference backend: auto (onnxruntime when its library loads, else tract) | tract | ort.
    #[arg(long, value_enum, default_value_t = BackendKind::Auto)]
    backend: BackendKind,
    /// onnxruntime execution provider (the GPU ones need an onnxruntime built with them, e.g. on
    /// a Jetson: see docs/JETSON.md).
    #[arg(long, value_enum, default_value_t = Ep::Cpu)]
    ep: Ep,
    /// CUDA / TensorRT device id.
    #[arg(long, default_value_t = 0)]
    device_id: i32,
    /// TensorRT: build fp16 engines.
    #[arg(long)]
    trt_fp16: bool,
    /// TensorRT: build int8 engines.
    #[arg(long)]
    trt_int8: bool,
    /// TensorRT: cache built engines (and timing) in this folder.
    #[arg(long)]
    trt_cache: Option<PathBuf>,
    /// onnxruntime: idle intra-op threads sleep instead of spinning, leaving the cores to the
    /// pipeline's other stages between frames.
    #[arg(long)]
    no_spin: bool,
}

impl EngineArgs {
    /// The backend options; also sets tract's process-wide thread pool.
    fn options(&self) -> Result<BackendOptions> {
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        anyhow::ensure!(threads >= 1, "--threads must be at least 1");
        edge_seg_runtime::backend::tract::set_threads(threads);
        anyhow::ensure!(
            self.ep == Ep::Tensorrt || (!self.trt_fp16 && !self.trt_int8 && self.trt_cache.is_none()),
            "--trt-fp16, --trt-int8 and --trt-cache need --ep tensorrt"
        );
        anyhow::ensure!(
            !(self.no_spin && self.backend == BackendKind::Tract),
            "--no-spin is an onnxruntime setting: it needs --backend ort or auto"
        );
        Ok(BackendOptions {
            kind: self.backend,
            ort: OrtOptions {
                ep: self.ep,
                threads,
                device_id: self.device_id,
                trt_fp16: self.trt_fp16,
                trt_int8: self.trt_int8,
                trt_cache: self.trt_cache.clone(),
                no_spin: self.no_spin,
            },
        })
    }
}

#[derive(clap::Args, Default)]
struct RunArgs {
    /// ONNX model (default: the embedded camvid-lite0 model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// An image, a folder of images (sorted), a Y4M / MJPEG / raw .rgb / .yuyv stream file, or
    /// `-` for stdin (Y4M unless --stream-format says otherwise). Default: the embedded samples.
    #[arg(long, conflicts_with = "camera")]
    input: Option<PathBuf>,
    /// V4L2 camera: a number (0 = /dev/video0) or a device path.
    #[arg(long)]
    camera: Option<String>,
    /// Camera frame size, or the frame size of raw RGB24/YUYV input: WIDTHxHEIGHT.
    #[arg(long, value_parser = edge_seg_runtime::source::parse_size)]
    size: Option<(u32, u32)>,
    /// Camera frame rate to request.
    #[arg(long)]
    fps: Option<u32>,
    /// Camera pixel format: auto | yuyv | mjpeg.
    #[arg(long, default_value = "auto")]
    pixel_format: String,
    /// Format of --input when the file extension does not say (and of stdin): y4m | mjpeg | rgb24 | yuyv.
    #[arg(long)]
    stream_format: Option<StreamFormat>,
    /// Keep retrying (with back-off) when the camera is missing or unplugged, instead of exiting.
    #[arg(long)]
    reconnect: bool,
    /// Play a recorded --input at this rate like a camera (stale frames are dropped), frames per
    /// second (0.01..=1000).
    #[arg(long, value_parser = parse_pace)]
    pace: Option<f64>,
    /// Output folder for rendered PNGs (default for file input: edge-seg-out).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Draw on a display: `fb` (/dev/fb0) or `fb:/dev/fbN`.
    #[arg(long, value_parser = parse_display)]
    display: Option<PathBuf>,
    /// Framebuffer geometry, WxH or WxHxBPP, when it cannot be read from sysfs.
    #[arg(long)]
    fb_geometry: Option<String>,
    /// Serve an MJPEG stream and a page at this address (e.g. 127.0.0.1:8080; port 0 picks one).
    #[arg(long)]
    serve: Option<String>,
    /// JPEG quality of the HTTP stream.
    #[arg(long, default_value_t = 80)]
    jpeg_quality: u8,
    /// overlay | mask | side-by-side.
    #[arg(long, default_value = "overlay")]
    mode: OverlayMode,
    /// Weight of the class colours in overlay modes (0..1).
    #[arg(long, default_value_t = 0.5, allow_negative_numbers = true, value_parser = parse_alpha)]
    alpha: f32,
    /// Do not draw the legend.
    #[arg(long)]
    no_legend: bool,
    /// Do not draw the status line (model | backend | FPS): saved frames then depend only on the
    /// input and the model, not on timing.
    #[arg(long)]
    no_status: bool,
    /// Capacity of the queues between pipeline stages (default: 1 for live input, where the
    /// newest frame is what matters, 2 for recorded input).
    #[arg(long)]
    queue: Option<usize>,
    /// When a queue is full: auto (drop for cameras and --pace; wait for files and pipes) | drop | wait.
    #[arg(long, value_enum, default_value_t = DropArg::Auto)]
    drop: DropArg,
    /// Stop after this many frames.
    #[arg(long)]
    max_frames: Option<u64>,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    model_args: ModelArgs,
    /// Write per-frame timings and the final summary as JSON lines here (`-` = stdout).
    #[arg(long)]
    stats: Option<PathBuf>,
    /// Keep adapting the model to the scene from the frames it sees (a background worker with
    /// guards that roll back; needs a float model).
    #[arg(long)]
    adapt: bool,
    #[command(flatten)]
    adapt_settings: AdaptSettings,
}

impl RunArgs {
    /// The first adaptation flag given (`--adapt`, then its settings), if any.
    fn adapt_flag(&self) -> Option<&'static str> {
        if self.adapt {
            Some("--adapt")
        } else {
            self.adapt_settings.first_flag()
        }
    }
}

fn parse_threads(s: &str) -> std::result::Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("'{s}': {e}"))?;
    edge_seg_runtime::limits::check_threads(n, "--threads").map(|_| n)
}

fn parse_pace(s: &str) -> std::result::Result<f64, String> {
    edge_seg_runtime::limits::check_pace(s.parse().map_err(|e| format!("'{s}': {e}"))?)
}

fn parse_alpha(s: &str) -> std::result::Result<f32, String> {
    match s.parse::<f32>() {
        Ok(a) if (0.0..=1.0).contains(&a) => Ok(a),
        _ => Err(format!("'{s}': expected a weight in 0..=1")),
    }
}

/// An output path's folder must exist and the path must not be a folder: checked before any
/// work, so a bad path fails at once rather than after the work, with nothing written.
fn check_output_path(flag: &str, p: &Path) -> Result<()> {
    anyhow::ensure!(!p.is_dir(), "{flag} {}: is a folder, expected a file", p.display());
    if let Some(parent) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        anyhow::ensure!(
            parent.is_dir(),
            "{flag} {}: the folder {} does not exist",
            p.display(),
            parent.display()
        );
    }
    Ok(())
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
    /// Write the results as JSON here (`model`, `backend`, `data`, `split`, `images`, `miou`,
    /// `pixel_accuracy`, `classes` with each class's IoU or null when absent), for scripts.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Add the mIoU as a record to this docs/results JSON file.
    #[arg(long)]
    record: Option<PathBuf>,
    /// The record's name (with --record).
    #[arg(long, default_value = "val_miou")]
    record_name: String,
    #[command(flatten)]
    engine: EngineArgs,
    #[command(flatten)]
    model_args: ModelArgs,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    edge_seg_runtime::install_panic_hook();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(_) if !cfg!(feature = "adapt") && std::env::args_os().nth(1).is_some_and(|a| a == "adapt") => {
            // an inference-only build: the verb itself is the error, not its arguments
            eprintln!("error: {:#}", without_adaptation("edge-seg adapt"));
            return ExitCode::from(2);
        }
        Err(e) => {
            // one line that names the flag and, where clap lists them, the accepted values
            // (without the usage block)
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:"))
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            if parts.is_empty() {
                eprintln!("error: bad arguments");
            } else {
                eprintln!("{}", parts.join(" "));
            }
            return ExitCode::from(2);
        }
    };
    let result = match cli.cmd {
        // no subcommand: `edge-seg run` with clap's defaults (one source of defaults)
        None => match Cli::try_parse_from(["edge-seg", "run"]) {
            Ok(Cli { cmd: Some(Cmd::Run(a)) }) => run(*a),
            _ => Err(anyhow::anyhow!("internal: `edge-seg run` did not parse")),
        },
        Some(Cmd::Run(a)) => run(*a),
        Some(Cmd::Eval(a)) => evaluate(a),
        Some(Cmd::Quantize(a)) => quantize(a),
        Some(Cmd::Adapt(a)) => adapt(a),
        Some(Cmd::Image(a)) => image(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load_model(path: &Option<PathBuf>, opts: &LoadOptions) -> Result<Segmenter> {
    let seg = match path {
        Some(p) => Segmenter::open_with(p, opts)?,
        None => Segmenter::from_bytes_with(DEFAULT_MODEL, DEFAULT_MODEL_NAME, opts)?,
    };
    if let Some(w) = &seg.warning {
        eprintln!("warning: {}: {w}", seg.origin);
    }
    Ok(seg)
}

fn open_source(a: &RunArgs, stop: &Arc<AtomicBool>, interruptible: &AtomicBool) -> Result<Box<dyn FrameSource>> {
    if let Some(spec) = &a.camera {
        #[cfg(target_os = "linux")]
        {
            use edge_seg_runtime::camera::{device_path, Camera, CameraConfig};
            let cfg = CameraConfig {
                device: device_path(spec),
                size: a.size,
                fps: a.fps,
                format: a
                    .pixel_format
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--pixel-format {e}"))?,
            };
            if !a.reconnect {
                return Ok(Box::new(Camera::open(&cfg)?));
            }
            let name = cfg.device.display().to_string();
            return Ok(Box::new(Reconnecting::new(
                name,
                Box::new(move || Ok(Box::new(Camera::open(&cfg)?) as Box<dyn FrameSource>)),
                stop.clone(),
                (Duration::from_millis(500), Duration::from_secs(10)),
                Box::new(|e, wait| eprintln!("warning: {e}; retrying in {:.1} s", wait.as_secs_f64())),
            )));
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = stop;
            anyhow::bail!("--camera {spec}: V4L2 cameras need Linux");
        }
    }
    let src: Box<dyn FrameSource> = match &a.input {
        Some(p) => {
            interruptible.store(false, Ordering::SeqCst);
            let src = open_input(
                p,
                &InputOptions {
                    format: a.stream_format,
                    size: a.size,
                },
            );
            interruptible.store(true, Ordering::SeqCst);
            src?
        }
        None => Box::new(Embedded::new(DEFAULT_SAMPLES)),
    };
    Ok(match a.pace {
        Some(fps) => {
            anyhow::ensure!(fps > 0.0, "--pace {fps}: must be positive");
            Box::new(Paced::new(src, fps))
        }
        None => src,
    })
}

fn run(a: RunArgs) -> Result<()> {
    if !cfg!(feature = "adapt") {
        if let Some(flag) = a.adapt_flag() {
            return Err(without_adaptation(flag));
        }
    }
    anyhow::ensure!(a.queue != Some(0), "--queue must be at least 1");
    let policy = match a.drop {
        DropArg::Auto => None,
        DropArg::Drop => Some(Policy::DropOldest),
        DropArg::Wait => Some(Policy::Block),
    };
    let mut engine = a.engine.options()?;
    if a.adapt {
        // the adaptation worker publishes tract plans of the adapted weights
        anyhow::ensure!(
            engine.kind != BackendKind::Ort,
            "--adapt runs the model on tract (the worker publishes tract plans of the adapted weights); drop --backend ort"
        );
        engine.kind = BackendKind::Tract;
    }
    let mut seg = load_model(
        &a.model,
        &LoadOptions {
            backend: engine,
            meta: a.model_args.overrides()?,
        },
    )?;
    anyhow::ensure!(
        a.adapt || a.adapt_settings.first_flag().is_none(),
        "--adapt-config, --adapt-set, --adapt-state and --adapt-reset need --adapt"
    );
    let worker = if a.adapt {
        Some(start_worker(&a, &mut seg)?)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    // cleared while --input's stream header is read (it may wait on an idle pipe, and nothing
    // is there to drain or flush yet): a stop then ends the process at once
    let interruptible = Arc::new(AtomicBool::new(true));
    {
        let (stop, interruptible) = (stop.clone(), interruptible.clone());
        // first Ctrl-C / SIGTERM: stop capturing, drain, flush outputs; second: exit at once
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) || !interruptible.load(Ordering::SeqCst) {
                eprintln!("\nstopped");
                std::process::exit(130);
            }
            eprintln!("\nstopping (Ctrl-C again to quit at once)");
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let source = open_source(&a, &stop, &interruptible)?;
    let mut outputs: Vec<Box<dyn Output>> = Vec::new();
    let output_dir = match (&a.output, &a.display, &a.serve, source.is_live()) {
        (Some(d), ..) => Some(d.clone()),
        (None, None, None, false) => Some(PathBuf::from("edge-seg-out")),
        _ => None,
    };
    if let (Some(out), Some(input)) = (&output_dir, &a.input) {
        check_not_input_folder(out, input)?;
    }
    if let Some(d) = &output_dir {
        outputs.push(Box::new(PngDir::new(d)?));
    }
    if let Some(path) = &a.display {
        let path = path.clone();
        let geom = a
            .fb_geometry
            .as_deref()
            .map(FbGeometry::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--fb-geometry {e}"))?;
        outputs.push(Box::new(FbOutput(Framebuffer::open(&path, geom)?)));
    }
    if let Some(addr) = &a.serve {
        anyhow::ensure!((1..=100).contains(&a.jpeg_quality), "--jpeg-quality must be 1..100");
        let server = MjpegServer::bind(addr, a.jpeg_quality)?;
        println!("serving http://{}/", server.addr());
        outputs.push(Box::new(server));
    }
    if outputs.is_empty() {
        eprintln!("warning: no output (use --output DIR, --display fb or --serve ADDR); printing statistics only");
    }
    println!(
        "model {} ({}, {}) <- {}",
        seg.meta.name,
        seg.origin,
        seg.backend_name(),
        source.describe()
    );
    for o in &outputs {
        println!("  -> {}", o.describe());
    }
    let opts = PipelineOptions {
        queue: a.queue.unwrap_or(if source.is_live() { 1 } else { 2 }),
        policy,
        render: RenderOptions {
            mode: a.mode,
            alpha: a.alpha,
            legend: !a.no_legend,
            status: !a.no_status,
        },
        max_frames: a.max_frames,
        status_suffix: worker.as_ref().map(|w| {
            let status = w.status();
            Arc::new(move || status.lock().map(|s| s.clone()).unwrap_or_default()) as pipeline::StatusSuffix
        }),
        adapt: worker.as_ref().map(Worker::link),
    };
    // a statistics file this run creates is removed again when it cannot be written whole
    let stats_file = a
        .stats
        .as_ref()
        .filter(|p| *p != Path::new("-") && !p.exists())
        .cloned();
    let mut stats: Option<Box<dyn Write + Send>> = match &a.stats {
        Some(p) if p == Path::new("-") => Some(Box::new(std::io::stdout())),
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("--stats {}: cannot create", p.display()))?,
        ))),
        None => None,
    };
    let quiet = a.stats.as_deref() == Some(Path::new("-"));
    let mut stats_err = None;
    let summary = pipeline::run(source, seg, outputs, &opts, stop, |t| {
        if let Some(w) = stats.as_mut() {
            if let Err(e) = serde_json::to_writer(&mut *w, t)
                .map_err(std::io::Error::from)
                .and_then(|_| writeln!(w))
            {
                stats_err.get_or_insert(e);
            }
        } else if !quiet && output_dir.is_some() {
            println!("{}  {:7.1} ms (inference {:.1} ms)", t.name, t.latency_ms, t.infer_ms);
        }
    });
    let adapted = worker.map(Worker::finish).transpose();
    let summary = summary?;
    let adapted = adapted?;
    if let Some(w) = stats.as_mut() {
        let end = serde_json::to_writer(&mut *w, &serde_json::json!({ "summary": &summary }))
            .map_err(std::io::Error::from)
            .and_then(|_| writeln!(w))
            .and_then(|_| w.flush());
        if let Err(e) = end {
            stats_err.get_or_insert(e);
        }
    }
    if let Some(e) = stats_err {
        drop(stats);
        if let Some(p) = stats_file.filter(|p| p.is_file()) {
            let _ = std::fs::remove_file(p);
        }
        anyhow::bail!(
            "--stats {}: cannot write statistics: {e}",
            a.stats.unwrap_or_default().display()
        );
    }
    if !quiet {
        println!("{}", summary.report());
        println!(
            "mean {:.1} ms/frame end to end ({:.1} FPS), inference {:.1} ms",
            if summary.fps > 0.0 { 1e3 / summary.fps } else { 0.0 },
            summary.fps,
            summary.mean_infer_ms
        );
        if let Some(st) = &adapted {
            println!("{} (mean step {:.1} ms)", st.status(), st.mean_step_ms);
        }
    }
    Ok(())
}

/// Overlays go to `<out>/<name>.png`: into the folder of the input images they would replace
/// them (`a.png`), so that folder is refused.
fn check_not_input_folder(out: &Path, input: &Path) -> Result<()> {
    let is_image = |p: &Path| {
        p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| edge_seg_runtime::source::IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
    };
    let in_dir = if input.is_dir() {
        input
    } else if is_image(input) {
        match input.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    } else {
        return Ok(());
    };
    if let (Ok(i), Ok(o)) = (in_dir.canonicalize(), out.canonicalize()) {
        anyhow::ensure!(
            i != o,
            "--output {}: it is the folder of the input images; the overlays would overwrite them (choose another folder)",
            out.display()
        );
    }
    Ok(())
}

/// `run --adapt`: the adapter of `a`'s model (the embedded one by default) and its background
/// worker; `seg` switches to the adapted weights when a state file was loaded.
#[cfg(feature = "adapt")]
fn start_worker(a: &RunArgs, seg: &mut Segmenter) -> Result<Worker> {
    let s = &a.adapt_settings;
    let (bytes, origin) = match &a.model {
        Some(p) => (
            std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?,
            p.display().to_string(),
        ),
        None => (DEFAULT_MODEL.to_vec(), DEFAULT_MODEL_NAME.to_string()),
    };
    let cfg = adapt_config(s)?;
    anyhow::ensure!(
        cfg.encoder_stats == 0.0,
        "--adapt-set encoder_stats: re-estimating the encoder's statistics needs the scene's frames \
         first; run `edge-seg adapt --frames DIR --adapt-set encoder_stats=...` on recorded frames and \
         deploy the model it writes"
    );
    let mut adapter = make_adapter(&bytes, &origin, s, cfg)?;
    if adapter.differs_from_source() {
        seg.set_backend(Box::new(adapter.backend()?));
    }
    Ok(Worker::spawn(adapter, s.adapt_state.clone()))
}

#[cfg(not(feature = "adapt"))]
fn start_worker(_: &RunArgs, _: &mut Segmenter) -> Result<Worker> {
    Err(without_adaptation("--adapt"))
}

/// Without the `adapt` feature there is no worker ([`start_worker`] refuses): this stand-in has
/// no values, so `run` reads the same in both builds.
#[cfg(not(feature = "adapt"))]
enum Worker {}

#[cfg(not(feature = "adapt"))]
impl Worker {
    fn link(&self) -> pipeline::AdaptLink {
        match *self {}
    }

    fn status(&self) -> Arc<std::sync::Mutex<String>> {
        match *self {}
    }

    fn finish(self) -> Result<edge_seg_runtime::adapt::AdaptStats, edge_seg_runtime::RuntimeError> {
        match self {}
    }
}

/// The settings of `s`: --adapt-config, then the --adapt-set overrides, checked.
#[cfg(feature = "adapt")]
fn adapt_config(s: &AdaptSettings) -> Result<AdaptConfig> {
    let cfg: AdaptConfig = match &s.adapt_config {
        Some(p) => seg_core::config::load_toml(p)?,
        None => AdaptConfig::default(),
    };
    let cfg = seg_core::config::apply_overrides(&cfg, &s.adapt_set, "--adapt-set")?;
    cfg.validate().map_err(|e| anyhow::anyhow!("adaptation config: {e}"))?;
    Ok(cfg)
}

/// The adapter for `bytes` with settings `cfg` (from `s`), its state loaded unless
/// --adapt-reset (a state file that cannot be used is reported and the source weights are kept).
#[cfg(feature = "adapt")]
fn make_adapter(bytes: &[u8], origin: &str, s: &AdaptSettings, cfg: AdaptConfig) -> Result<Adapter> {
    let mut adapter = Adapter::new(bytes, origin, cfg)?;
    if let (Some(p), false) = (&s.adapt_state, s.adapt_reset) {
        if p.exists() {
            match adapt_state::load(&mut adapter, p) {
                Ok(steps) => eprintln!("{}: adapted weights loaded ({steps} steps)", p.display()),
                // the file is moved aside, never overwritten by the new state (issue #23)
                Err(e) => match set_aside(p) {
                    Ok(kept) => eprintln!("warning: {e}; it was moved to {}", kept.display()),
                    Err(m) => anyhow::bail!("{e}; and it cannot be moved aside ({m}): not overwriting it"),
                },
            }
        }
    }
    Ok(adapter)
}

/// Renames `p` to `p.rejected` (or `p.rejected.N`, the first free name) and returns it.
#[cfg(feature = "adapt")]
fn set_aside(p: &Path) -> std::io::Result<PathBuf> {
    for n in 0..1000 {
        let mut name = p.as_os_str().to_owned();
        name.push(if n == 0 {
            ".rejected".to_string()
        } else {
            format!(".rejected.{n}")
        });
        let to = PathBuf::from(name);
        if !to.exists() {
            std::fs::rename(p, &to)?;
            return Ok(to);
        }
    }
    Err(std::io::Error::other("no free .rejected name"))
}

/// `edge-seg adapt`.
#[cfg(feature = "adapt")]
fn adapt(a: AdaptArgs) -> Result<()> {
    check_output_path("--out", &a.out)?;
    if let Some(p) = &a.summary {
        check_output_path("--summary", p)?;
    }
    anyhow::ensure!(a.passes >= 1, "--passes must be at least 1");
    anyhow::ensure!(a.steps_per_frame >= 1, "--steps-per-frame must be at least 1");
    let bytes = std::fs::read(&a.model).with_context(|| format!("{}: cannot read", a.model.display()))?;
    let origin = a.model.display().to_string();
    let cfg = adapt_config(&a.settings)?;
    let mut files: Vec<PathBuf> = seg_core::io::image_files(&a.frames)
        .with_context(|| format!("{}: cannot read the folder", a.frames.display()))?;
    if let Some(prefix) = a.prefix.as_deref() {
        files.retain(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)));
    }
    anyhow::ensure!(
        !files.is_empty(),
        "{}: no frames (png/jpg) to adapt on",
        a.frames.display()
    );
    // the encoder's statistics first (encoder_stats > 0): the adapter starts from that model
    let bytes = match (cfg.encoder_stats > 0.0, &cfg.guard.source_frames) {
        (true, Some(src)) => {
            let (b, r) =
                edge_seg_runtime::adapt::bn_stats::reestimate_encoder(&bytes, &origin, src, &files, cfg.encoder_stats)?;
            eprintln!(
                "encoder statistics re-estimated on {} frames against {} source frames: {} layers in {} levels, \
                 shift {:.2} source std",
                r.frames, r.source_frames, r.layers, r.levels, r.shift
            );
            b
        }
        _ => bytes,
    };
    let mut adapter = make_adapter(&bytes, &origin, &a.settings, cfg)?;
    let mut seg = Segmenter::from_bytes(&bytes, &origin)?;
    if adapter.differs_from_source() {
        seg.set_backend(Box::new(adapter.backend()?));
    }
    let pb = indicatif::ProgressBar::new(files.len() as u64 * a.passes as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} frames {msg}").expect("progress template"),
    );
    if std::env::var_os("CI").is_some() {
        pb.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let opts = offline::Offline {
        passes: a.passes,
        steps_per_frame: a.steps_per_frame,
        stress: a.stress,
        state: a.settings.adapt_state.clone(),
    };
    let report = offline::play(&mut adapter, &mut seg, &files, &opts, |ad| {
        pb.set_message(ad.stats.status());
        pb.inc(1);
    })?;
    pb.finish_and_clear();
    seg_onnx::save(&adapter.adapted_model()?, &a.out)?;
    if let Some(p) = &a.settings.adapt_state {
        adapt_state::save(&adapter, p)?;
    }
    let st = &adapter.stats;
    println!(
        "wrote {}: {} frames, {} (final check: {:?}); mean step {:.1} ms, mean inference {:.1} ms",
        a.out.display(),
        report.frames,
        st.status(),
        report.final_check,
        st.mean_step_ms,
        report.mean_infer_ms
    );
    if let Some(p) = &a.summary {
        let j = serde_json::json!({
            "frames": report.frames,
            "stats": st,
            "mean_step_ms": st.mean_step_ms,
            "mean_infer_ms": report.mean_infer_ms,
            "final_check": format!("{:?}", report.final_check),
        });
        seg_core::io::write_atomic(p, serde_json::to_string_pretty(&j)?.as_bytes())
            .with_context(|| format!("{}: cannot write", p.display()))?;
    }
    Ok(())
}

/// `edge-seg adapt` in an inference-only build (`main` answers it too when its arguments do not
/// parse).
#[cfg(not(feature = "adapt"))]
fn adapt(_: AdaptArgs) -> Result<()> {
    Err(without_adaptation("edge-seg adapt"))
}

/// `edge-seg image` checks that the model of a board that adapts on the device can be adapted:
/// `Ok(false)` when this build cannot (no `adapt` feature).
#[cfg(feature = "adapt")]
fn check_adaptable(bytes: &[u8], origin: &str) -> Result<bool> {
    Adapter::new(bytes, origin, AdaptConfig::default())?;
    Ok(true)
}

#[cfg(not(feature = "adapt"))]
fn check_adaptable(_: &[u8], _: &str) -> Result<bool> {
    Ok(false)
}

/// `edge-seg image`: the overlay is `edge_seg_firmware`'s; here the model is checked like `run`
/// would, and the service's command line (read back from the unit as systemd reads it) through
/// this binary's own parser.
fn image(a: ImageArgs) -> Result<()> {
    use edge_seg_firmware::{BoardConfig, Overlay};
    let board = BoardConfig::load(&a.board)?;
    let origin = format!("--model {}", a.model.display());
    let bytes = std::fs::read(&a.model).with_context(|| format!("{origin}: cannot read"))?;
    Segmenter::parse_model(&bytes, &origin, &MetaOverrides::default())?;
    let adapt_unchecked = board.service.adapt
        && !check_adaptable(&bytes, &origin)
            .with_context(|| format!("board {} adapts on the device (service.adapt)", board.name))?;
    let overlay = Overlay::plan(&board, &a.model, a.binary.as_deref())?;
    let argv = overlay.service_argv()?;
    let board_file = BoardConfig::origin(&a.board);
    match Cli::try_parse_from(&argv) {
        Ok(Cli { cmd: Some(Cmd::Run(_)) }) => {}
        Ok(_) => anyhow::bail!("{board_file}: the service command is not `edge-seg run`"),
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or_default().trim_start_matches("error: ");
            anyhow::bail!("{board_file}: `edge-seg run` rejects the service's arguments: {first}");
        }
    }
    let report = overlay.write(&a.out)?;
    println!(
        "{}: the {} overlay, {} files:",
        a.out.display(),
        board.name,
        report.written.len()
    );
    for f in &report.written {
        println!("  {f}");
    }
    for f in &report.removed {
        println!("  removed {f} (an earlier overlay's, not part of this one)");
    }
    if report.others > 0 {
        println!("  ({} other entries there left alone)", report.others);
    }
    if adapt_unchecked {
        println!(
            "note: board {} adapts on the device (service.adapt), and this edge-seg was built without \
             adaptation, so the model was not checked for it; the board's binary needs the `adapt` \
             feature (the default)",
            board.name
        );
    }
    println!("service: {}", argv.join(" "));
    if !overlay.has_binary {
        println!(
            "note: no --binary, so rootfs/usr/local/bin/edge-seg is missing (flash.sh and install.sh refuse to run \
             without it): cross-build it with firmware-configs/scripts/cross-build.sh (cargo build --release --target {t} \
             -p edge-seg-runtime) and rerun with --binary target/{t}/release/edge-seg",
            t = board.target
        );
    }
    Ok(())
}

fn evaluate(a: EvalArgs) -> Result<()> {
    for p in [&a.json, &a.confusion, &a.record].into_iter().flatten() {
        check_output_path("an output of eval", p)?;
    }
    let opts = LoadOptions {
        backend: a.engine.options()?,
        meta: a.model_args.overrides()?,
    };
    let mut seg = load_model(&Some(a.model.clone()), &opts)?;
    println!("{} on {}", seg.origin, seg.backend_name());
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
    if let Some(p) = &a.json {
        let classes: serde_json::Map<String, serde_json::Value> = seg
            .meta
            .classes
            .names
            .iter()
            .zip(cm.iou())
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.map_or(serde_json::Value::Null, |v| serde_json::json!(100.0 * v)),
                )
            })
            .collect();
        let j = serde_json::json!({
            "model": seg.origin,
            "backend": seg.backend_name(),
            "data": a.data.display().to_string(),
            "split": a.split,
            "images": images,
            "miou": 100.0 * cm.miou(),
            "pixel_accuracy": 100.0 * cm.pixel_accuracy(),
            "classes": classes,
        });
        seg_core::io::write_atomic(p, serde_json::to_string_pretty(&j)?.as_bytes())
            .with_context(|| format!("--json {}: cannot write", p.display()))?;
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
    let method = match a.method {
        MethodArg::Minmax => Method::MinMax,
        MethodArg::Percentile => Method::Percentile,
        MethodArg::Entropy => Method::Entropy,
    };
    let target = match a.target {
        TargetArg::Tract => Target::Tract,
        TargetArg::Onnxruntime => Target::OnnxRuntime,
        TargetArg::Tensorrt => Target::TensorRt,
    };
    let mut model = seg_onnx::load(&a.model)?;
    let (_, warning) =
        describe(&mut model, &a.model_args.overrides()?).map_err(|e| anyhow::anyhow!("{}: {e}", a.model.display()))?;
    if let Some(w) = warning {
        eprintln!("warning: {}: {w}", a.model.display());
    }
    let calib = load_images(&a.calib)?;
    let opts = QuantizeOptions {
        method,
        percentile: a.percentile,
        per_channel: a.per_channel,
        target,
        exclude: a.exclude,
        keep_first_last_float: a.keep_first_last_float,
        reduce_range: a.weight_range == WeightRange::Reduced,
    };
    if target == Target::OnnxRuntime
        && !opts.reduce_range
        && !edge_seg_runtime::backend::ort::full_range_int8_is_exact()
    {
        eprintln!(
            "note: this CPU lacks VNNI: onnxruntime's int8 kernels saturate full-range weights on it; \
             add --weight-range reduced if the model will run on this CPU (ARM and VNNI CPUs need full range)"
        );
    }
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
