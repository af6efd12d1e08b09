//! What the runtime needs to know about a model (classes, input size, normalisation), for
//! edge-seg's own exports (their metadata) and for any other float segmentation ONNX, such as a
//! PyTorch export, which carries none: then the input size comes from the graph, the class count
//! from the output's shape, the names and colours are generic and the normalisation is
//! ImageNet's, each overridable ([`MetaOverrides`]), with one warning line naming what was
//! assumed. The resolved description is written into the model's metadata, so a model that
//! `edge-seg quantize` writes from a foreign one carries it.

use seg_core::classes::ClassTable;
use seg_core::meta::{keys, ModelMeta};
use seg_onnx::pb;
use tract_onnx::prelude::*;

/// ImageNet normalisation (torchvision's models expect it), on 0..1 pixels.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet std.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
pub use crate::limits::MAX_INPUT_SIDE;

/// Values given on the command line; each replaces the model's own (or the assumed one).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaOverrides {
    /// Class names and colours (`--classes FILE`).
    pub classes: Option<ClassTable>,
    /// Network input `(height, width)` (`--input-size HxW`).
    pub input_hw: Option<(u32, u32)>,
    /// Normalisation mean (`--mean`).
    pub mean: Option<[f32; 3]>,
    /// Normalisation std (`--std`).
    pub std: Option<[f32; 3]>,
}

impl MetaOverrides {
    fn apply(&self, m: &mut ModelMeta) {
        if let Some(c) = &self.classes {
            m.classes = c.clone();
        }
        if let Some(hw) = self.input_hw {
            m.input_hw = hw;
        }
        if let Some(v) = self.mean {
            m.mean = v;
        }
        if let Some(v) = self.std {
            m.std = v;
        }
    }
}

/// The description of `proto` and, for a model without edge-seg metadata, the one-line warning
/// that says what was assumed. The result is written into `proto`'s metadata.
pub fn describe(proto: &mut pb::ModelProto, overrides: &MetaOverrides) -> Result<(ModelMeta, Option<String>), String> {
    let map = seg_onnx::metadata(proto);
    let (mut meta, warning) = if map.contains_key(keys::CLASSES) {
        let mut m = ModelMeta::from_map(&map).map_err(|e| format!("not an edge-seg model: {e}"))?;
        overrides.apply(&mut m);
        (m, None)
    } else {
        foreign(proto, overrides)?
    };
    check(&meta)?;
    meta.name = meta.name.trim().to_string();
    let new = meta.to_map();
    proto.metadata_props.retain(|e| !new.contains_key(&e.key));
    proto.metadata_props.extend(
        new.into_iter()
            .map(|(key, value)| pb::StringStringEntryProto { key, value }),
    );
    Ok((meta, warning))
}

fn check(m: &ModelMeta) -> Result<(), String> {
    let (h, w) = m.input_hw;
    if !(1..=MAX_INPUT_SIDE).contains(&h) || !(1..=MAX_INPUT_SIDE).contains(&w) {
        return Err(format!("input size {h}x{w} is outside 1..={MAX_INPUT_SIDE}"));
    }
    if m.std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || m.mean.iter().any(|v| !v.is_finite()) {
        return Err(format!(
            "normalisation mean {:?} / std {:?}: std must be positive",
            m.mean, m.std
        ));
    }
    Ok(())
}

/// A model without metadata: input size from the graph, classes from the output's shape.
fn foreign(proto: &pb::ModelProto, o: &MetaOverrides) -> Result<(ModelMeta, Option<String>), String> {
    let graph = proto.graph.as_ref().ok_or("not a valid ONNX model: no graph")?;
    let initializers: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let input = graph
        .input
        .iter()
        .find(|i| !initializers.contains(i.name.as_str()))
        .ok_or("the graph has no input")?;
    let in_dims = seg_onnx::static_dims(input);
    if in_dims.len() != 4 || in_dims[1].is_some_and(|c| c != 3) {
        return Err(format!(
            "input '{}' is not an image batch [N, 3, H, W] (dims {})",
            input.name,
            show(&in_dims)
        ));
    }
    let mut assumed = Vec::new();
    let input_hw = match (o.input_hw, in_dims[2], in_dims[3]) {
        (Some(hw), ..) => hw,
        (None, Some(h), Some(w)) if h > 0 && w > 0 => {
            let side = |v: i64| u32::try_from(v).ok().filter(|v| *v <= MAX_INPUT_SIDE);
            match (side(h), side(w)) {
                (Some(h), Some(w)) => (h, w),
                _ => return Err(format!("input size {h}x{w} is outside 1..={MAX_INPUT_SIDE}")),
            }
        }
        _ => {
            return Err(format!(
                "input '{}' has no fixed size (dims {}): pass --input-size HxW",
                input.name,
                show(&in_dims)
            ))
        }
    };
    let n = output_classes(proto, input_hw)?;
    let classes = match &o.classes {
        Some(c) if c.len() != n => {
            return Err(format!(
                "--classes names {} classes, but the model outputs {n}",
                c.len()
            ));
        }
        Some(c) => c.clone(),
        None => {
            assumed.push(format!("{n} classes (from its output; generic names and colours)"));
            ClassTable::generic(n)
        }
    };
    let mean = o.mean.unwrap_or_else(|| {
        assumed.push("ImageNet mean/std".into());
        IMAGENET_MEAN
    });
    let std = o.std.unwrap_or(IMAGENET_STD);
    let warning = (!assumed.is_empty()).then(|| {
        format!(
            "no edge-seg metadata: assuming {}, input {}x{} (set them with --classes, --mean/--std, --input-size)",
            assumed.join(", "),
            input_hw.0,
            input_hw.1
        )
    });
    let name = match graph.name.trim() {
        "" => "model".to_string(),
        n => n.to_string(),
    };
    Ok((
        ModelMeta {
            name,
            classes,
            input_hw,
            mean,
            std,
        },
        warning,
    ))
}

fn show(dims: &[Option<i64>]) -> String {
    let d: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |v| v.to_string())).collect();
    format!("[{}]", d.join(", "))
}

/// The class count: dimension 1 of the first output, from the graph or, when it is not fixed
/// there, from tract's shape inference at `input_hw`.
fn output_classes(proto: &pb::ModelProto, input_hw: (u32, u32)) -> Result<usize, String> {
    let graph = proto.graph.as_ref().ok_or("no graph")?;
    let out = graph.output.first().ok_or("the graph has no output")?;
    let dims = seg_onnx::static_dims(out);
    let n = match dims.get(1).copied().flatten() {
        Some(n) if dims.len() == 4 => n,
        _ => {
            let shape = [1usize, 3, input_hw.0 as usize, input_hw.1 as usize];
            let err = |e: TractError| format!("cannot infer the output shape: {}", format!("{e:#}").replace('\n', " "));
            // tract asserts on some graphs that pass validation: its panic is this model's error
            let dims = crate::pipeline::catch_reported(|| -> Result<Vec<Option<i64>>, String> {
                let model = tract_onnx::onnx()
                    .model_for_proto_model(proto)
                    .and_then(|m| m.with_input_fact(0, f32::fact(shape).into()))
                    .and_then(|m| m.into_typed())
                    .map_err(err)?;
                let fact = model.output_fact(0).map_err(err)?;
                Ok(fact.shape.iter().map(|d| d.to_i64().ok()).collect())
            })
            .map_err(|p| {
                format!(
                    "cannot infer the output shape: tract failed on this graph: {}",
                    crate::pipeline::panic_message(p.as_ref())
                )
            })??;
            if dims.len() != 4 {
                return Err(format!(
                    "output '{}' is not [N, classes, H, W] (dims {})",
                    out.name,
                    show(&dims)
                ));
            }
            dims[1].ok_or_else(|| format!("output '{}' has no fixed class dimension", out.name))?
        }
    };
    match usize::try_from(n) {
        Ok(n) if (1..=seg_core::classes::MAX_CLASSES).contains(&n) => Ok(n),
        _ => Err(format!(
            "output '{}' has {n} channels: expected 1..={} classes",
            out.name,
            seg_core::classes::MAX_CLASSES
        )),
    }
}
