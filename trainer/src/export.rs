//! Export of a trained run to ONNX (BatchNorm folded, metadata written).

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use seg_nn::SegModel;

use crate::checkpoint;
use crate::config::TrainConfig;

/// Loads `run/<checkpoint>.safetensors` with the run's config.
pub fn load_model(run: &Path, checkpoint_name: &str) -> Result<(TrainConfig, VarMap, SegModel)> {
    let cfg = checkpoint::load_config(run)?;
    let varmap = VarMap::new();
    let model = SegModel::new(&cfg.model, VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu))?;
    checkpoint::load(
        &run.join(format!("{checkpoint_name}.safetensors")),
        &varmap,
        &Device::Cpu,
    )?;
    Ok((cfg, varmap, model))
}

/// The smallest weight tensor `export --f16-weights` stores as f16 (smaller ones — biases,
/// BatchNorm-sized vectors — gain less than their `Cast` node costs).
pub const F16_MIN_ELEMS: usize = 256;

/// Writes the ONNX file for `model` trained with `cfg` (atomically).
pub fn export(model: &SegModel, cfg: &TrainConfig, out: &Path) -> Result<()> {
    let mut meta = cfg.model_meta().to_map();
    meta.insert(seg_core::meta::keys::CONFIG.into(), seg_core::config::to_toml(cfg)?);
    let [h, w] = cfg.data.input_size;
    let proto = seg_nn::export::to_onnx(model, (h as usize, w as usize), &meta)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    seg_onnx::save(&proto, out)?;
    Ok(())
}

/// Runs the same seeded random input through the candle model and through tract on the
/// exported file; returns the max absolute difference of the logits.
pub fn parity(model: &SegModel, cfg: &TrainConfig, path: &Path) -> Result<f32> {
    Ok(parity_and_scale(model, cfg, path)?.0)
}

/// [`parity`] and the largest absolute logit of candle's (the scale the difference is relative
/// to: float rounding grows with it).
pub fn parity_and_scale(model: &SegModel, cfg: &TrainConfig, path: &Path) -> Result<(f32, f32)> {
    use rand::{Rng, SeedableRng};
    use tract_onnx::prelude::*;
    let [h, w] = cfg.data.input_size;
    let (h, w) = (h as usize, w as usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = (0..3 * h * w).map(|_| rng.random_range(-2.0f32..2.0)).collect();
    let want = model
        .logits(&candle_core::Tensor::from_vec(x.clone(), (1, 3, h, w), &Device::Cpu)?)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let ctx = || format!("{}: tract cannot run the exported model", path.display());
    let plan = tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(ctx)?;
    let input = tract_ndarray::Array4::from_shape_vec((1, 3, h, w), x)?.into_tensor();
    let out = plan
        .run(tvec!(input.into()))
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(ctx)?;
    let got = out[0]
        .to_plain_array_view::<f32>()
        .map_err(|e| anyhow::anyhow!("{e:#}"))
        .with_context(ctx)?;
    anyhow::ensure!(
        got.len() == want.len(),
        "{}: tract gives {} logits, candle {}",
        path.display(),
        got.len(),
        want.len()
    );
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    Ok((diff, want.iter().map(|v| v.abs()).fold(0f32, f32::max)))
}
