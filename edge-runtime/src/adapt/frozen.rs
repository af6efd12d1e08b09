//! The frozen part of the network, run in tract: the exported graph cut at the trainable head's
//! inputs ([`head_inputs`]), and the head applied to its outputs.

use std::sync::Arc;

use candle_core::{Device, Tensor};
use seg_nn::adapt::{AdaptHead, HeadScope};
use seg_nn::model::DecoderConv;
use tract_onnx::prelude::*;

use super::adapt_err;
use crate::RuntimeError;

/// The frozen part in tract for one input shape: `[n, 3, h, w] ->` the head's inputs (see
/// [`head_inputs`]).
pub(super) struct Encoder {
    plan: Arc<TypedSimplePlan>,
    shape: [usize; 4],
}

impl Encoder {
    pub(super) fn new(proto: &seg_onnx::pb::ModelProto, shape: [usize; 4], origin: &str) -> Result<Self, RuntimeError> {
        let err = |e: TractError| RuntimeError::Model {
            path: origin.to_string(),
            reason: format!("adaptation encoder: {e:#}").replace('\n', " "),
        };
        let plan = crate::backend::tract::plan(proto, shape).map_err(err)?;
        Ok(Self { plan, shape })
    }

    /// `input`: `n · 3 · h · w` normalised values.
    pub(super) fn run(&self, input: Vec<f32>, dev: &Device) -> Result<Vec<Tensor>, RuntimeError> {
        let x = tract_ndarray::Array4::from_shape_vec(self.shape, input)
            .map_err(adapt_err)?
            .into_tensor();
        let out = self.plan.run(tvec!(x.into())).map_err(adapt_err)?;
        let t = |i: usize| -> Result<Tensor, RuntimeError> {
            let v = out[i].to_plain_array_view::<f32>().map_err(adapt_err)?;
            let shape = v.shape().to_vec();
            Tensor::from_vec(v.iter().copied().collect::<Vec<f32>>(), shape, dev).map_err(adapt_err)
        };
        (0..out.len()).map(t).collect()
    }
}

/// Where the frozen graph hands over to the trainable head, by tensor name: for
/// [`HeadScope::Decoder`] the encoder's two outputs `[low, high]` (the data inputs of the
/// convolutions whose weights are `decoder.low.conv.weight` and `decoder.aspp.b1.conv.weight`);
/// for [`HeadScope::Last`] the two inputs of the concatenation that feeds the last decoder
/// convolution (`decoder.fuse.conv.weight`), taken before the ASPP output's upsampling (its
/// `Resize` has the full frame's size written in), `[aspp, low projection]`: everything frozen
/// runs in tract.
pub fn head_inputs(graph: &seg_onnx::pb::GraphProto, scope: HeadScope) -> Option<Vec<String>> {
    let conv_input = |which: DecoderConv| {
        let w = format!("{}.weight", which.name());
        graph
            .node
            .iter()
            .find(|n| n.op_type == "Conv" && n.input.get(1) == Some(&w))
            .map(|n| n.input[0].clone())
    };
    match scope {
        HeadScope::Decoder => Some(vec![conv_input(DecoderConv::Low)?, conv_input(DecoderConv::AsppB1)?]),
        HeadScope::Last => {
            let producers = seg_onnx::producers(graph);
            let node = |t: &str| producers.get(t).map(|&i| &graph.node[i]);
            // the concatenation of `decoder_graph::fuse_input`: [upsampled ASPP, low projection]
            let cat = node(&conv_input(DecoderConv::Fuse)?)?;
            if cat.op_type != "Concat" || cat.input.len() != 2 {
                return None;
            }
            let up = node(&cat.input[0])?;
            if up.op_type != "Resize" {
                return None;
            }
            Some(vec![up.input[0].clone(), cat.input[1].clone()])
        }
    }
}

/// The head on the frozen graph's outputs ([`head_inputs`]).
pub(super) fn head_forward(head: &AdaptHead, feats: &[Tensor]) -> candle_core::Result<seg_nn::adapt::HeadOutput> {
    match (head.scope(), feats) {
        (HeadScope::Last, [aspp, low]) => head.forward_from_aspp(aspp, low),
        (HeadScope::Decoder, [low, high]) => head.forward(low, high),
        _ => candle_core::bail!("the frozen graph gave {} outputs", feats.len()),
    }
}
