//! Evaluation of a candle model on a labeled split.

use anyhow::Result;
use candle_core::{Device, Tensor};
use seg_core::metrics::ConfusionMatrix;
use seg_core::preprocess::normalize_resized_into;
use seg_nn::{bilinear, SegModel};

use crate::config::DataConfig;
use crate::data::Samples;

/// Runs the model (evaluation mode) over `samples` at `data.input_size`, upsamples the logits
/// bilinearly to each label's size, and accumulates the confusion matrix.
pub fn evaluate(
    model: &SegModel,
    samples: &Samples,
    data: &DataConfig,
    batch: usize,
    dev: &Device,
) -> Result<ConfusionMatrix> {
    let n = data.classes.len();
    let [ih, iw] = data.input_size;
    let (ih, iw) = (ih as usize, iw as usize);
    let mut cm = ConfusionMatrix::new(n);
    let idx: Vec<usize> = (0..samples.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let mut x = vec![0f32; chunk.len() * 3 * ih * iw];
        for (k, &i) in chunk.iter().enumerate() {
            normalize_resized_into(
                &samples.images[i],
                ih as u32,
                iw as u32,
                data.mean,
                data.std,
                &mut x[k * 3 * ih * iw..(k + 1) * 3 * ih * iw],
            );
        }
        let x = Tensor::from_vec(x, (chunk.len(), 3, ih, iw), dev)?;
        let logits = model.logits(&x)?; // [b, C, ih, iw]
        for (k, &i) in chunk.iter().enumerate() {
            let mask = &samples.masks[i];
            let (mw, mh) = mask.dimensions();
            let l = bilinear::resize(&logits.narrow(0, k, 1)?, mh as usize, mw as usize)?;
            let pred: Vec<u8> = l
                .argmax(1)?
                .flatten_all()?
                .to_vec1::<u32>()?
                .into_iter()
                .map(|v| v as u8)
                .collect();
            cm.update(&pred, mask.as_raw());
        }
    }
    Ok(cm)
}
