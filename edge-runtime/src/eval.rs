//! `edge-seg eval`: a model's mIoU, per-class IoU and confusion matrix on a labeled split.

use std::path::Path;

use seg_core::data::{Dataset, Layout};
use seg_core::metrics::ConfusionMatrix;

use crate::{RuntimeError, Segmenter};

/// Runs `seg` over every labeled item of `root`'s `split` and accumulates the confusion matrix.
/// `on_item` is called after each item (for progress).
pub fn evaluate(
    seg: &mut Segmenter,
    root: &Path,
    layout: Layout,
    split: &str,
    ignore_id: u8,
    mut on_item: impl FnMut(usize, usize),
) -> Result<ConfusionMatrix, RuntimeError> {
    let n = seg.meta.classes.len();
    let ds = Dataset::open(root, layout, split, n, ignore_id).map_err(|e| RuntimeError::Input {
        path: root.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut cm = ConfusionMatrix::new(n);
    for i in 0..ds.len() {
        let s = ds.load(i).map_err(|e| RuntimeError::Input {
            path: ds.items[i].image.display().to_string(),
            reason: e.to_string(),
        })?;
        let mask = s.mask.ok_or_else(|| RuntimeError::Input {
            path: ds.items[i].image.display().to_string(),
            reason: "no label mask for this image".into(),
        })?;
        let pred = seg.segment(&s.image)?;
        cm.update(&pred, mask.as_raw());
        on_item(i + 1, ds.len());
    }
    Ok(cm)
}

/// A per-class IoU table plus mIoU and pixel accuracy, as printed by `edge-seg eval`.
pub fn report(cm: &ConfusionMatrix, names: &[String]) -> String {
    let mut s = format!("{:<14} {:>7}\n", "class", "IoU %");
    for (i, iou) in cm.iou().iter().enumerate() {
        let v = iou
            .map(|v| format!("{:7.2}", 100.0 * v))
            .unwrap_or_else(|| "    n/a".into());
        s.push_str(&format!(
            "{:<14} {v}\n",
            names.get(i).map(String::as_str).unwrap_or("?")
        ));
    }
    s.push_str(&format!(
        "{:<14} {:7.2}\n{:<14} {:7.2}\n",
        "mIoU",
        100.0 * cm.miou(),
        "pixel acc",
        100.0 * cm.pixel_accuracy()
    ));
    s
}
