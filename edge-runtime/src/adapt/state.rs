//! The adapted weights on disk (`--adapt-state FILE`): a safetensors file of the trainable head
//! values, with the source model's fingerprint and the step count in its metadata. Written
//! atomically (temp file + rename), so a crash leaves the previous state; a damaged or truncated
//! file, or one adapted from another model, is rejected with a message naming it, and the
//! adapter keeps its current (source) weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;

use super::Adapter;
use crate::RuntimeError;

const FORMAT: &str = "edge-seg-adapt-1";

fn bad(path: &Path, reason: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Input {
        path: path.display().to_string(),
        reason: format!("adaptation state rejected ({reason}); keeping the current weights"),
    }
}

/// Writes the adapter's published values (the last set that passed the guards) to `path`
/// atomically.
pub fn save(adapter: &Adapter, path: &Path) -> Result<(), RuntimeError> {
    let tensors = adapter.published();
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert(
        "model_fingerprint".to_string(),
        format!("{:016x}", adapter.model_fingerprint()),
    );
    meta.insert("steps".to_string(), adapter.stats.steps.to_string());
    meta.insert("rollbacks".to_string(), adapter.stats.rollbacks.to_string());
    let mut sorted: Vec<(&String, &candle_core::Tensor)> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let bytes = safetensors::serialize(sorted, Some(meta)).map_err(|e| RuntimeError::Output {
        path: path.display().to_string(),
        reason: format!("cannot encode the adaptation state: {e}"),
    })?;
    seg_core::io::write_atomic(path, &bytes).map_err(|e| RuntimeError::Output {
        path: path.display().to_string(),
        reason: format!("cannot write the adaptation state: {e}"),
    })
}

/// Loads `path` into `adapter` (the weights become its last good set). Returns the step count
/// the file was saved at. On any error the adapter is unchanged.
pub fn load(adapter: &mut Adapter, path: &Path) -> Result<u64, RuntimeError> {
    let bytes = std::fs::read(path).map_err(|e| bad(path, e))?;
    load_bytes(adapter, &bytes, path)
}

/// [`load`] on the file's bytes; `path` names it in errors.
pub fn load_bytes(adapter: &mut Adapter, bytes: &[u8], path: &Path) -> Result<u64, RuntimeError> {
    // checks the header and that every tensor's bytes are there
    safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(path, format!("damaged or truncated: {e:?}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(path, format!("{e:?}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(bad(
            path,
            format!("not an edge-seg adaptation state (format {:?})", meta.get("format")),
        ));
    }
    let want = format!("{:016x}", adapter.model_fingerprint());
    if meta.get("model_fingerprint") != Some(&want) {
        return Err(bad(
            path,
            format!(
                "it was adapted from another model (fingerprint {}, this model {want}); use --adapt-reset",
                meta.get("model_fingerprint").map_or("none", String::as_str)
            ),
        ));
    }
    let steps: u64 = meta.get("steps").and_then(|s| s.parse().ok()).unwrap_or(0);
    let tensors = candle_core::safetensors::load_buffer(bytes, &Device::Cpu).map_err(|e| bad(path, e))?;
    let current = adapter.snapshot()?;
    if let Err(e) = adapter.restore(&tensors) {
        adapter.restore(&current)?;
        return Err(bad(path, e));
    }
    adapter.stats.steps = steps;
    Ok(steps)
}
