//! The training loop: method losses → backward → SGD (momentum, poly LR), periodic evaluation,
//! atomic checkpoints, a JSONL metrics log and a PNG of the curves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use seg_nn::{init, optim, SegModel};
use serde_json::json;

use crate::checkpoint;
use crate::config::{ModelInit, TrainConfig};
use crate::data;
use crate::eval::evaluate;
use crate::methods::{self, LabeledBatch, MethodInit, StepContext, UnlabeledBatch, UnlabeledView};

/// Options of one run that are not part of the model's config.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Output folder (checkpoints, config, metrics, plot).
    pub out: PathBuf,
    /// Continue from `out/last.safetensors`.
    pub resume: bool,
    /// Show progress bars.
    pub progress: bool,
    /// Stop (with a checkpoint) after this many completed steps, keeping the schedule of
    /// `schedule.iterations` (continue later with `resume`).
    pub stop_after: Option<u64>,
    /// The ImageNet weights file for `init = "imagenet"` (default: the fetch cache); not saved
    /// in the config, so runs and exports never carry a local path.
    pub pretrained: Option<PathBuf>,
}

/// What a finished run reports.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Final validation mIoU (0..1).
    pub final_miou: f64,
    /// Best validation mIoU seen (0..1) and its step.
    pub best: (f64, u64),
    /// Wall-clock seconds of this invocation.
    pub seconds: f64,
    /// Steps run in this invocation.
    pub steps: u64,
}

/// The training device: GPU 0 when built with the `cuda` feature, else the CPU.
pub fn device() -> Result<Device> {
    #[cfg(feature = "cuda")]
    {
        Ok(Device::new_cuda(0)?)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(Device::Cpu)
    }
}

/// A progress bar on stderr, hidden when `show` is false (`--no-progress`, logs to a file).
pub fn bar(len: u64, show: bool, template: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(template)
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb
}

/// Trains according to `cfg`, writing everything under `opts.out`.
pub fn run(cfg: &TrainConfig, opts: &RunOptions) -> Result<Summary> {
    cfg.validate().map_err(|e| anyhow::anyhow!("config: {e}"))?;
    let started = Instant::now();
    // the ImageNet weights file, found before the data is loaded so that a missing one fails fast
    let pretrained = match (cfg.init, opts.resume) {
        (ModelInit::Imagenet, false) => {
            let variant = cfg
                .model
                .encoder
                .lite()
                .context("init = imagenet needs a Lite encoder")?;
            Some(crate::pretrained::resolve(variant, opts.pretrained.as_deref())?)
        }
        _ => None,
    };
    let dev = device()?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("{}: cannot create", opts.out.display()))?;

    let train_ds = data::open(
        &cfg.data,
        &cfg.data.train_split,
        &cfg.data.train_prefixes,
        "train_prefixes",
    )?;
    let val_ds = data::open(&cfg.data, &cfg.data.val_split, &cfg.data.val_prefixes, "val_prefixes")?;
    let pb = bar(
        (train_ds.len() + val_ds.len()) as u64,
        opts.progress,
        "loading {bar:30} {pos}/{len} images",
    );
    let train = Arc::new(data::load_all(&train_ds, &pb)?);
    let val = data::load_all(&val_ds, &pb)?;
    pb.finish_and_clear();
    tracing::info!(train = train.len(), val = val.len(), "data loaded");

    let varmap = VarMap::new();
    let model = SegModel::new(&cfg.model, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    init::reseed_with(&varmap, cfg.schedule.seed, cfg.weight_init)?;
    if let Some(path) = &pretrained {
        let r = seg_nn::pretrained::load_into(&varmap, path)?;
        tracing::info!(
            loaded = r.loaded,
            skipped = r.skipped.len(),
            file = %path.display(),
            "ImageNet weights loaded into the encoder"
        );
    }
    let class_frequencies = data::class_frequencies(&train, cfg.data.classes.len());
    let init = MethodInit {
        cfg,
        model_vars: &varmap,
        device: &dev,
        class_frequencies: &class_frequencies,
        pretrained: pretrained.as_deref(),
    };
    let mut method = methods::build(&cfg.method, &init).context("unknown method")??;
    let view = method.unlabeled_view();
    let unlabeled = Arc::new(if view == UnlabeledView::None {
        data::Samples::default()
    } else {
        load_unlabeled(cfg, opts.progress)?
    });
    anyhow::ensure!(
        view == UnlabeledView::None || !unlabeled.is_empty(),
        "method '{}' needs unlabeled images: set data.unlabeled_splits",
        cfg.method
    );
    anyhow::ensure!(
        !method.needs_tags() || !unlabeled.tags.is_empty(),
        "method '{}' learns from image-level tags: set data.tag_file",
        cfg.method
    );
    method.prepare(&train, &unlabeled)?;
    let mut groups = optim::encoder_rest_groups(&varmap, cfg.optim.encoder_lr_mult);
    groups.extend(method.param_groups());
    let mut opt = optim::Sgd::new(groups, cfg.optim.momentum, cfg.optim.weight_decay);
    let last = opts.out.join("last.safetensors");
    let mut start = 0;
    // training seconds of the run's earlier pieces (a resumed run continues the clock)
    let mut before = 0.0;
    if opts.resume {
        let (velocity, done, state, seconds) = checkpoint::load_with_state(&last, &varmap, &dev)?;
        before = seconds;
        method.load_state(&state)?;
        let saved = checkpoint::load_config(&opts.out)?;
        anyhow::ensure!(
            saved.model == cfg.model,
            "{}: the run was trained with another model config; resume with the same one",
            checkpoint::config_path(&opts.out).display()
        );
        opt.set_velocity(velocity);
        start = done;
        tracing::info!(step = start, "resumed");
    }
    checkpoint::save_config(&opts.out, cfg)?;
    let class_weights = match &cfg.optim.class_weights {
        Some(w) => Some(Tensor::new(w.as_slice(), &dev)?),
        None => None,
    };
    let mut log = MetricsLog::open(&opts.out, opts.resume)?;
    let total = cfg.schedule.iterations;
    let end = opts.stop_after.map_or(total, |s| s.clamp(start, total));
    let producer_unlabeled = (view != UnlabeledView::None).then(|| (unlabeled.clone(), view.clone()));
    let batches = data::spawn_producer(train.clone(), producer_unlabeled, cfg.clone(), start, end);
    let pb = bar(
        total,
        opts.progress,
        "{elapsed_precise} {bar:30} {pos}/{len} it  ETA {eta}  {msg}",
    );
    pb.set_position(start);
    let mut best = log.best();
    let mut final_miou = best.0;
    let mut smoothed: Option<f64> = None;
    if start == 0 && cfg.schedule.eval_every > 0 && !log.has_eval_at(0) {
        // the curve starts at the initial weights (for a pretrained encoder: what ImageNet
        // alone gives, through a random decoder)
        eval_and_log(&model, &val, cfg, &dev, &mut log, 0, &pb)?;
    }
    for it in start..end {
        let hb = batches.recv().context("batch producer stopped")?;
        debug_assert_eq!(hb.iteration, it);
        let (b, h, w) = hb.shape;
        let batch = LabeledBatch {
            images: Tensor::from_vec(hb.images, (b, 3, h, w), &dev)?,
            targets: Tensor::from_vec(hb.targets, (b, h, w), &dev)?,
            origins: hb.origins,
        };
        let unlabeled_batch = match hb.unlabeled {
            Some(u) => Some(to_device(u, &dev)?),
            None => None,
        };
        let ctx = StepContext {
            model: &model,
            labeled: &batch,
            unlabeled: unlabeled_batch.as_ref(),
            class_weights: class_weights.as_ref(),
            ohem: cfg.optim.ohem,
            iteration: it,
        };
        let terms = method.losses(&ctx)?;
        let mut total_loss = terms[0].1.clone();
        for (_, t) in &terms[1..] {
            total_loss = (total_loss + t)?;
        }
        let grads = total_loss.backward()?;
        let lr = optim::poly_lr(cfg.optim.lr, it, total, cfg.optim.poly_power);
        opt.step(&grads, lr)?;
        drop(grads);
        method.after_step(it)?;
        let loss_v = total_loss.to_scalar::<f32>()? as f64;
        anyhow::ensure!(loss_v.is_finite(), "step {it}: the loss is {loss_v}; lower optim.lr");
        smoothed = Some(smoothed.map_or(loss_v, |s| 0.9 * s + 0.1 * loss_v));
        let done = it + 1;
        pb.set_message(format!("loss {:.4} lr {:.5}", smoothed.unwrap_or(loss_v), lr));
        pb.inc(1);
        if done % cfg.schedule.log_every.max(1) == 0 || done == total {
            let mut rec =
                json!({"iter": done, "loss": loss_v, "lr": lr, "elapsed_s": before + started.elapsed().as_secs_f64()});
            for (n, t) in &terms {
                rec[*n] = json!(t.to_scalar::<f32>()?);
            }
            for (n, v) in method.metrics() {
                rec[n] = json!(v);
            }
            log.write(&rec)?;
        }
        let eval_now = (cfg.schedule.eval_every > 0 && done % cfg.schedule.eval_every == 0) || done == total;
        if eval_now {
            let miou = eval_and_log(&model, &val, cfg, &dev, &mut log, done, &pb)?;
            final_miou = miou;
            if miou > best.0 || best.1 == 0 {
                best = (miou, done);
                checkpoint::save_with_state(
                    &opts.out.join("best.safetensors"),
                    &varmap,
                    opt.velocity(),
                    done,
                    before + started.elapsed().as_secs_f64(),
                    &method.state()?,
                )?;
            }
            log.plot(&opts.out.join("curves.png"), &cfg.name)?;
        }
        if done % cfg.schedule.checkpoint_every.max(1) == 0 || done == end {
            let seconds = before + started.elapsed().as_secs_f64();
            checkpoint::save_with_state(&last, &varmap, opt.velocity(), done, seconds, &method.state()?)?;
        }
    }
    pb.finish_and_clear();
    Ok(Summary {
        final_miou,
        best,
        seconds: started.elapsed().as_secs_f64(),
        steps: end - start,
    })
}

/// Evaluates on val, writes the record of step `done` to the metrics log and prints it;
/// returns the mIoU.
fn eval_and_log(
    model: &SegModel,
    val: &data::Samples,
    cfg: &TrainConfig,
    dev: &Device,
    log: &mut MetricsLog,
    done: u64,
    pb: &indicatif::ProgressBar,
) -> Result<f64> {
    let cm = evaluate(model, val, &cfg.data, cfg.schedule.eval_batch, dev)?;
    let miou = cm.miou();
    let iou: Vec<Option<f64>> = cm.iou();
    log.write(&json!({"iter": done, "val_miou": miou, "val_pixel_acc": cm.pixel_accuracy(), "val_iou": iou}))?;
    pb.println(format!(
        "step {done}: val mIoU {:.2}  pixel acc {:.2}",
        100.0 * miou,
        100.0 * cm.pixel_accuracy()
    ));
    Ok(miou)
}

/// Loads the images of every `data.unlabeled_splits` entry (in order, duplicates kept).
fn load_unlabeled(cfg: &TrainConfig, progress: bool) -> Result<data::Samples> {
    let sets = cfg
        .data
        .unlabeled_splits
        .iter()
        .map(|s| data::open(&cfg.data, s, &[], "unlabeled_splits"))
        .collect::<Result<Vec<_>>>()?;
    let pb = bar(
        sets.iter().map(|d| d.len()).sum::<usize>() as u64,
        progress,
        "loading unlabeled {bar:30} {pos}/{len} images",
    );
    let mut all = data::Samples::default();
    for ds in &sets {
        let s = data::load_images(ds, &pb)?;
        all.names.extend(s.names);
        all.images.extend(s.images);
    }
    pb.finish_and_clear();
    if let Some(path) = &cfg.data.tag_file {
        let tags = seg_core::tags::TagFile::read(path, &cfg.data.classes)?;
        tags.check_images(&all.names, "data.unlabeled_splits")?;
        all.tags = all
            .names
            .iter()
            .map(|n| tags.get(n).expect("checked above").to_vec())
            .collect();
    }
    if let Some(dir) = &cfg.data.pseudo_labels {
        all.pseudo = data::load_pseudo_labels(dir, &all, cfg.data.classes.len())?;
    }
    tracing::info!(
        unlabeled = all.len(),
        tagged = all.tags.len(),
        pseudo_labeled = all.pseudo.iter().filter(|p| p.is_some()).count(),
        "unlabeled images loaded"
    );
    Ok(all)
}

/// Moves a host unlabeled batch to the device.
fn to_device(u: data::HostUnlabeled, dev: &Device) -> Result<UnlabeledBatch> {
    Ok(match u {
        data::HostUnlabeled::Views {
            strong,
            weak,
            valid,
            tags,
            origins,
            shape: (b, h, w),
        } => UnlabeledBatch::Views {
            strong: Tensor::from_vec(strong, (b, 3, h, w), dev)?,
            weak: Tensor::from_vec(weak, (b, 3, h, w), dev)?,
            valid: Tensor::from_vec(valid, (b, h, w), dev)?,
            tags: match tags {
                Some(t) => {
                    let c = t.len() / b.max(1);
                    Some(Tensor::from_vec(t, (b, c), dev)?)
                }
                None => None,
            },
            origins,
        },
        data::HostUnlabeled::Pairs {
            first,
            second,
            geometry,
            pseudo,
            shape: (b, h, w),
        } => UnlabeledBatch::Pairs {
            crops: [
                Tensor::from_vec(first, (b, 3, h, w), dev)?,
                Tensor::from_vec(second, (b, 3, h, w), dev)?,
            ],
            geometry,
            pseudo: match pseudo {
                Some([a, b2]) => Some([
                    Tensor::from_vec(a, (b, h, w), dev)?,
                    Tensor::from_vec(b2, (b, h, w), dev)?,
                ]),
                None => None,
            },
        },
    })
}

/// The JSONL metrics log (appended to on resume) and the curve plot made from it.
pub struct MetricsLog {
    file: std::fs::File,
    loss: Vec<(u64, f32)>,
    miou: Vec<(u64, f32)>,
}

impl MetricsLog {
    fn open(dir: &Path, resume: bool) -> Result<Self> {
        let path = dir.join("metrics.jsonl");
        let (loss, miou) = if resume { Self::read(&path)? } else { Default::default() };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(resume)
            .write(true)
            .truncate(!resume)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(Self { file, loss, miou })
    }

    /// Reads `(loss, val mIoU as a fraction)` series from a metrics log.
    #[allow(clippy::type_complexity)]
    pub fn read(path: &Path) -> Result<(Vec<(u64, f32)>, Vec<(u64, f32)>)> {
        let (mut loss, mut miou) = (Vec::new(), Vec::new());
        if path.exists() {
            let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                Self::push(&mut loss, &mut miou, &v);
            }
        }
        Ok((loss, miou))
    }

    fn push(loss: &mut Vec<(u64, f32)>, miou: &mut Vec<(u64, f32)>, v: &serde_json::Value) {
        let it = v["iter"].as_u64().unwrap_or(0);
        if let Some(l) = v["loss"].as_f64() {
            loss.push((it, l as f32));
        }
        if let Some(m) = v["val_miou"].as_f64() {
            miou.push((it, m as f32));
        }
    }

    fn write(&mut self, v: &serde_json::Value) -> Result<()> {
        Self::push(&mut self.loss, &mut self.miou, v);
        writeln!(self.file, "{v}")?;
        Ok(())
    }

    fn has_eval_at(&self, iter: u64) -> bool {
        self.miou.iter().any(|&(it, _)| it == iter)
    }

    fn best(&self) -> (f64, u64) {
        self.miou
            .iter()
            .fold((0.0, 0), |b, &(it, m)| if m as f64 > b.0 { (m as f64, it) } else { b })
    }

    fn plot(&self, path: &Path, title: &str) -> Result<()> {
        crate::plot::plot_curves(path, &self.loss, &self.miou, title)
    }
}
