//! Timing of one training step (forward, backward, SGD update) of a configured net on seeded
//! random input: the Rust side of `benches/pretrained/run.sh` (CPU) and `benches/gpu/run.sh`
//! (CUDA), which run the PyTorch twin (`benches/pretrained/torch_step.py`) in the same run and
//! record the ratio. And the CUDA-vs-CPU parity check: the same weights and input on both
//! devices, logits and gradients compared.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seg_nn::{init, loss, optim, ModelConfig, SegModel};

/// The model of `cfg` on `dev`, with the seeded initial weights (and, when `pretrained` is
/// given, the ImageNet encoder from that file) made on the CPU and copied over, so that every
/// device starts from the same values.
pub fn seeded_model(cfg: &ModelConfig, pretrained: Option<&Path>, dev: &Device) -> Result<(VarMap, SegModel)> {
    let cpu = VarMap::new();
    let model = SegModel::new(cfg, VarBuilder::from_varmap(&cpu, DType::F32, &Device::Cpu))?;
    init::reseed(&cpu, 0)?;
    if let Some(p) = pretrained {
        seg_nn::pretrained::load_into(&cpu, p).with_context(|| format!("{}: cannot load", p.display()))?;
    }
    if dev.is_cpu() {
        return Ok((cpu, model));
    }
    let varmap = VarMap::new();
    let model = SegModel::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, dev))?;
    {
        let src = cpu.data().lock().expect("varmap lock poisoned");
        let dst = varmap.data().lock().expect("varmap lock poisoned");
        for (name, var) in dst.iter() {
            let v = src.get(name).with_context(|| format!("{name}: not in the CPU model"))?;
            var.set(&v.as_tensor().to_device(dev)?)?;
        }
    }
    Ok((varmap, model))
}

/// Seeded input `[batch, 3, h, w]` uniform in [-1, 1) and labels `[batch, h, w]` in
/// `0..classes`, on `dev`.
fn seeded_batch(batch: usize, h: usize, w: usize, classes: usize, dev: &Device) -> Result<(Tensor, Tensor)> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = batch * h * w;
    let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<u32> = (0..n).map(|_| rng.random_range(0..classes as u32)).collect();
    Ok((
        Tensor::from_vec(x, (batch, 3, h, w), dev)?,
        Tensor::from_vec(y, (batch, h, w), dev)?,
    ))
}

/// Per-step times in milliseconds (warm-up steps excluded), in the order they ran: the whole
/// step and its phases (forward with the loss, backward, optimizer update).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepTimes {
    pub step_ms: Vec<f64>,
    pub forward_ms: Vec<f64>,
    pub backward_ms: Vec<f64>,
    pub update_ms: Vec<f64>,
}

/// Times training steps on `dev`. On a GPU each phase ends with a device synchronisation, so
/// the times cover the work, not only its launch (the synchronisations themselves cost a few
/// microseconds; on the CPU they do nothing).
pub fn train_step_ms(
    model_cfg: &ModelConfig,
    pretrained: Option<&Path>,
    batch: usize,
    crop: usize,
    steps: usize,
    warmup: usize,
    dev: &Device,
) -> Result<StepTimes> {
    let (varmap, model) = seeded_model(model_cfg, pretrained, dev)?;
    let mut opt = optim::Sgd::new(optim::encoder_rest_groups(&varmap, 1.0), 0.9, 1e-4);
    let (x, y) = seeded_batch(batch, crop, crop, model_cfg.num_classes, dev)?;
    let mut t = StepTimes::default();
    let ms = |i: Instant| i.elapsed().as_secs_f64() * 1e3;
    dev.synchronize()?;
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        let out = model.forward_t(&x, true)?;
        let l = loss::cross_entropy(&out.logits, &y, seg_core::IGNORE as u32, None)?;
        dev.synchronize()?;
        let t1 = Instant::now();
        let grads = l.backward()?;
        dev.synchronize()?;
        let t2 = Instant::now();
        opt.step(&grads, 0.01)?;
        dev.synchronize()?;
        if i >= warmup {
            t.step_ms.push(ms(t0));
            t.forward_ms.push((t1 - t0).as_secs_f64() * 1e3);
            t.backward_ms.push((t2 - t1).as_secs_f64() * 1e3);
            t.update_ms.push(ms(t2));
        }
    }
    Ok(t)
}

/// What [`device_parity`] measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Parity {
    /// The seeded input, `[batch, 3, h, w]`.
    pub input: [usize; 4],
    /// Largest |logit difference| in evaluation mode (running batch-norm statistics).
    pub logits_max_abs_diff: f32,
    /// Largest |logit| on the CPU, for scale.
    pub logits_max_abs: f32,
    /// Fraction of pixels whose arg-max class is the same on both devices.
    pub argmax_agreement: f64,
    /// Training-mode cross-entropy on the CPU and on the device.
    pub loss_cpu: f32,
    pub loss_device: f32,
    /// Over every parameter, `max |gradient difference| / max(max |CPU gradient|, floor)`, the
    /// floor being 1e-3 of the largest |gradient| of the whole net: a parameter whose gradient
    /// is zero in exact arithmetic (the bias of a batch norm whose output feeds straight into
    /// another training-mode batch norm: a per-channel shift is normalised away) holds float
    /// noise on both devices and would make a plain ratio meaningless. The parameter where it
    /// is largest, and its own gradient scale.
    pub grad_max_rel_diff: f32,
    pub grad_worst: String,
    pub grad_worst_scale: f32,
    /// ‖g_device − g_cpu‖₂ / ‖g_cpu‖₂ over all parameters as one vector.
    pub grad_rel_l2: f64,
    /// The largest |gradient| of the net (the floor's reference).
    pub grad_max_abs: f32,
    /// Parameters compared.
    pub grads_compared: usize,
}

/// The model of `model_cfg` with the same weights on the CPU and on `dev`: logits of a seeded
/// `[batch, 3, h, w]` input in evaluation mode, then one training-mode forward and backward
/// (batch statistics, cross-entropy on seeded labels) with every gradient compared.
pub fn device_parity(
    model_cfg: &ModelConfig,
    pretrained: Option<&Path>,
    batch: usize,
    h: usize,
    w: usize,
    dev: &Device,
) -> Result<Parity> {
    let cpu = Device::Cpu;
    let (cpu_vars, cpu_model) = seeded_model(model_cfg, pretrained, &cpu)?;
    let (dev_vars, dev_model) = seeded_model(model_cfg, pretrained, dev)?;
    let (x, y) = seeded_batch(batch, h, w, model_cfg.num_classes, &cpu)?;
    let (xd, yd) = (x.to_device(dev)?, y.to_device(dev)?);

    let a = cpu_model.logits(&x)?; // [b, classes, h, w]
    let b = dev_model.logits(&xd)?.to_device(&cpu)?;
    let logits_max_abs_diff = seg_nn::max_abs_diff(&a, &b)?;
    let logits_max_abs = a.abs()?.max_all()?.to_scalar::<f32>()?;
    let same = a
        .argmax(1)?
        .eq(&b.argmax(1)?)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()? as f64;

    let ignore = seg_core::IGNORE as u32;
    let la = loss::cross_entropy(&cpu_model.forward_t(&x, true)?.logits, &y, ignore, None)?;
    let lb = loss::cross_entropy(&dev_model.forward_t(&xd, true)?.logits, &yd, ignore, None)?;
    let (ga, gb) = (la.backward()?, lb.backward()?);
    let cpu_data = cpu_vars.data().lock().expect("varmap lock poisoned");
    let dev_data = dev_vars.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = cpu_data.keys().collect();
    names.sort();
    let mut pairs = Vec::new();
    let mut one_sided = Vec::new();
    for name in names {
        match (ga.get(cpu_data[name].as_tensor()), gb.get(dev_data[name].as_tensor())) {
            (Some(g1), Some(g2)) => pairs.push((name.clone(), g1.clone(), g2.to_device(&cpu)?)),
            (None, None) => {} // running statistics: no gradient on either device
            (g1, _) => one_sided.push(format!(
                "{name} (only on the {})",
                if g1.is_some() { "CPU" } else { "device" }
            )),
        }
    }
    anyhow::ensure!(
        one_sided.is_empty(),
        "parity: gradients that exist on one device only: {}",
        one_sided.join(", ")
    );
    // a NaN or an infinity on either side would hide in the max-based figures below
    let finite = |t: &Tensor| -> Result<bool> { Ok(t.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.is_finite())) };
    anyhow::ensure!(finite(&a)? && finite(&b)?, "parity: non-finite logits");
    for (name, g1, g2) in &pairs {
        anyhow::ensure!(finite(g1)? && finite(g2)?, "parity: non-finite gradient of {name}");
    }
    let mut scales = Vec::with_capacity(pairs.len());
    for (_, g1, _) in &pairs {
        scales.push(g1.abs()?.max_all()?.to_scalar::<f32>()?);
    }
    let grad_max_abs = scales.iter().copied().fold(0f32, f32::max);
    let floor = 1e-3 * grad_max_abs;
    let (mut worst, mut worst_name, mut worst_scale) = (0f32, String::new(), 0f32);
    let (mut diff2, mut norm2) = (0f64, 0f64);
    for ((name, g1, g2), &scale) in pairs.iter().zip(&scales) {
        let d = (g1 - g2)?;
        diff2 += d.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        norm2 += g1.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        let rel = d.abs()?.max_all()?.to_scalar::<f32>()? / scale.max(floor).max(f32::MIN_POSITIVE);
        if rel > worst || worst_name.is_empty() {
            (worst, worst_name, worst_scale) = (rel, name.clone(), scale);
        }
    }
    Ok(Parity {
        input: [batch, 3, h, w],
        logits_max_abs_diff,
        logits_max_abs,
        argmax_agreement: same,
        loss_cpu: la.to_scalar::<f32>()?,
        loss_device: lb.to_device(&cpu)?.to_scalar::<f32>()?,
        grad_max_rel_diff: worst,
        grad_worst: worst_name,
        grad_worst_scale: worst_scale,
        grad_rel_l2: if norm2 > 0.0 { (diff2 / norm2).sqrt() } else { 0.0 },
        grad_max_abs,
        grads_compared: pairs.len(),
    })
}

/// Tells glibc's allocator to keep freed memory instead of unmapping it: a training step
/// allocates and frees the same large activations every step, and each fresh mapping costs a
/// page fault per 4 KiB on first touch (15 % of a Lite0 step in a `perf` profile). Large
/// buffers no longer get mappings of their own (`M_MMAP_MAX` 0: glibc's mmap threshold cannot
/// exceed 32 MiB, and a Lite0 step at batch 8 has activations of 50 MiB; glibc still maps a
/// worker thread's requests above 64 MiB, and falls back to mmap when the heap cannot grow), and
/// the heap is never trimmed (`M_TRIM_THRESHOLD` −1), so every step after the first reuses the
/// pages of the one before: about 65,000 page faults less per step, 3–7 % of a step
/// (`bench-step`, 2026-12-05). `edge-seg-train` calls it for every command, so its memory stays
/// at its peak until it exits. No effect on other platforms.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any worker threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parity check run CPU against CPU: exactly equal logits and gradients, every
    /// parameter with a gradient compared (what a CUDA run is measured against).
    #[test]
    fn cpu_against_itself_is_exact() {
        let cfg = ModelConfig::default();
        let p = device_parity(&cfg, None, 1, 64, 64, &Device::Cpu).unwrap();
        assert_eq!(p.logits_max_abs_diff, 0.0);
        assert!(p.logits_max_abs > 0.0);
        assert_eq!(p.argmax_agreement, 1.0);
        assert_eq!(p.loss_cpu, p.loss_device);
        assert_eq!(p.grad_max_rel_diff, 0.0);
        assert_eq!(p.grad_rel_l2, 0.0);
        assert!(p.grad_max_abs > 0.0);
        assert!(p.grads_compared > 10, "{}", p.grads_compared);
    }
}
