//! ONNX export of a [`SegModel`] with BatchNorm folded into the convolutions.

use std::collections::BTreeMap;

use candle_core::Result;
use seg_onnx::{pb, GraphBuilder};

use crate::SegModel;

/// Builds the ONNX model for a fixed input of `(h, w)`, with `metadata` in `metadata_props`.
pub fn to_onnx(model: &SegModel, hw: (usize, usize), metadata: &BTreeMap<String, String>) -> Result<pb::ModelProto> {
    let mut g = GraphBuilder::new("edge-seg");
    model.emit(&mut g, hw)?;
    Ok(g.finish(metadata))
}
