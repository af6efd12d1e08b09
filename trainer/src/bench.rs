//! Timing of one training step (forward, backward, SGD update) of a configured net on seeded
//! random input: the Rust side of `benches/pretrained/step.sh`, which runs the PyTorch twin
//! (`benches/pretrained/torch_step.py`) in the same run and records the ratio.

use std::time::Instant;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use seg_nn::{init, loss, optim, ModelConfig, SegModel};

/// Step times in milliseconds, in the order they ran (warm-up steps excluded).
pub fn train_step_ms(
    model_cfg: &ModelConfig,
    batch: usize,
    crop: usize,
    steps: usize,
    warmup: usize,
) -> Result<Vec<f64>> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = SegModel::new(model_cfg, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    init::reseed(&varmap, 0)?;
    let mut opt = optim::Sgd::new(optim::encoder_rest_groups(&varmap, 1.0), 0.9, 1e-4);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let n = batch * crop * crop;
    let x: Vec<f32> = (0..3 * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let y: Vec<u32> = (0..n)
        .map(|_| rng.random_range(0..model_cfg.num_classes as u32))
        .collect();
    let x = Tensor::from_vec(x, (batch, 3, crop, crop), &dev)?;
    let y = Tensor::from_vec(y, (batch, crop, crop), &dev)?;
    let mut times = Vec::with_capacity(steps);
    for i in 0..warmup + steps {
        let t = Instant::now();
        let out = model.forward_t(&x, true)?;
        let l = loss::cross_entropy(&out.logits, &y, seg_core::IGNORE as u32, None)?;
        let grads = l.backward()?;
        opt.step(&grads, 0.01)?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(times)
}

/// Tells glibc's allocator to keep freed memory instead of unmapping it: a training step
/// allocates and frees the same large activations every step, and each fresh mapping costs a
/// page fault per 4 KiB on first touch (15 % of a Lite0 step in a `perf` profile). Buffers up
/// to 32 MiB (glibc's ceiling) then come from the heap and are reused. No effect elsewhere.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; called before any worker threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
