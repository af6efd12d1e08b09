//! Checkpoints: one safetensors file holding the model variables, the optimiser's momentum
//! buffers, the step and the training method's state (`__method__.*`: a projector, a second
//! network, an EMA teacher, a memory bank), written atomically, with the resolved config beside it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;

use crate::config::TrainConfig;

const VELOCITY: &str = "__optim__.velocity.";
const ITERATION: &str = "__optim__.iteration";
/// Cumulative training time in seconds (over the resumed pieces of a run), f64.
const TRAIN_SECONDS: &str = "__optim__.train_seconds";
const METHOD: &str = "__method__.";

/// The resolved config file of a run folder.
pub fn config_path(run: &Path) -> PathBuf {
    run.join("config.toml")
}

/// Writes the resolved config beside the checkpoints (atomically).
pub fn save_config(run: &Path, cfg: &TrainConfig) -> Result<()> {
    let text = seg_core::config::to_toml(cfg)?;
    seg_core::io::write_atomic(&config_path(run), text.as_bytes())
        .with_context(|| format!("{}: cannot write", config_path(run).display()))
}

/// Reads a run's resolved config.
pub fn load_config(run: &Path) -> Result<TrainConfig> {
    let cfg: TrainConfig = seg_core::config::load_toml(&config_path(run))?;
    cfg.validate()
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path(run).display()))?;
    Ok(cfg)
}

/// Saves model variables, momentum buffers and the number of completed steps to `path`
/// (temp file + rename).
pub fn save(path: &Path, varmap: &VarMap, velocity: &HashMap<String, Tensor>, completed: u64) -> Result<()> {
    save_with_state(path, varmap, velocity, completed, 0.0, &[])
}

/// [`save`] plus the training method's state (see [`crate::methods::Method::state`]).
pub fn save_with_state(
    path: &Path,
    varmap: &VarMap,
    velocity: &HashMap<String, Tensor>,
    completed: u64,
    train_seconds: f64,
    method_state: &[(String, Tensor)],
) -> Result<()> {
    let mut all: HashMap<String, Tensor> = varmap
        .data()
        .lock()
        .expect("varmap lock poisoned")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    for (k, v) in velocity {
        all.insert(format!("{VELOCITY}{k}"), v.clone());
    }
    for (k, v) in method_state {
        all.insert(format!("{METHOD}{k}"), v.clone());
    }
    all.insert(ITERATION.into(), Tensor::new(&[completed as u32], &Device::Cpu)?);
    all.insert(TRAIN_SECONDS.into(), Tensor::new(&[train_seconds], &Device::Cpu)?);
    // the same bytes as candle's `safetensors::save`, written by the shared atomic writer
    // (temp file, fsync, rename)
    let bytes = safetensors::serialize(&all, None).with_context(|| format!("{}: cannot encode", path.display()))?;
    seg_core::io::write_atomic(path, &bytes).with_context(|| format!("{}: cannot write", path.display()))?;
    Ok(())
}

/// Loads a checkpoint into `varmap` (every model variable must be present with its shape) and
/// returns `(momentum buffers, completed steps)`.
pub fn load(path: &Path, varmap: &VarMap, dev: &Device) -> Result<(HashMap<String, Tensor>, u64)> {
    let (velocity, completed, _, _) = load_with_state(path, varmap, dev)?;
    Ok((velocity, completed))
}

/// [`load`] plus the training method's state saved by [`save_with_state`].
#[allow(clippy::type_complexity)]
pub fn load_with_state(
    path: &Path,
    varmap: &VarMap,
    dev: &Device,
) -> Result<(HashMap<String, Tensor>, u64, HashMap<String, Tensor>, f64)> {
    let ctx = || format!("{}: not a readable edge-seg checkpoint", path.display());
    let tensors = candle_core::safetensors::load(path, dev).with_context(ctx)?;
    for (name, var) in varmap.data().lock().expect("varmap lock poisoned").iter() {
        let t = tensors
            .get(name)
            .with_context(|| format!("{}: variable '{name}' is missing", path.display()))?;
        anyhow::ensure!(
            t.dims() == var.dims(),
            "{}: variable '{name}' has shape {:?}, the model expects {:?}",
            path.display(),
            t.dims(),
            var.dims()
        );
        var.set(t)?;
    }
    let velocity = tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(VELOCITY).map(|n| (n.to_string(), v.clone())))
        .collect();
    let completed = match tensors.get(ITERATION) {
        Some(t) => t.to_vec1::<u32>()?.first().copied().unwrap_or(0) as u64,
        None => 0,
    };
    let state = tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(METHOD).map(|n| (n.to_string(), v.clone())))
        .collect();
    // absent in checkpoints written before it was kept: 0
    let seconds = match tensors.get(TRAIN_SECONDS) {
        Some(t) => t
            .to_dtype(candle_core::DType::F64)?
            .to_vec1::<f64>()?
            .first()
            .copied()
            .unwrap_or(0.0),
        None => 0.0,
    };
    Ok((velocity, completed, state, seconds))
}
