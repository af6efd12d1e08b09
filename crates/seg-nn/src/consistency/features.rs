//! Shared helpers: pseudo-labels from scores, gathering cells, L2 normalisation.

use candle_core::{Result, Tensor};

use crate::loss;

/// Softmax confidence `max_c p_c` and pseudo-label `argmax_c` of class scores `[b, C, h, w]`,
/// both detached: `([b, h, w] f32, [b, h, w] u32)`.
pub fn confidence_and_label(logits: &Tensor) -> Result<(Tensor, Tensor)> {
    let logits = logits.detach();
    let prob = loss::log_softmax(&logits, 1)?.exp()?; // [b, C, h, w]
    Ok((prob.max(1)?, logits.argmax(1)?))
}

/// Rows of `x: [B, d, h, w]` (image `img`) at flat spatial `idx: [n]` (u32): `[n, d]`.
pub fn cells(x: &Tensor, img: usize, idx: &Tensor) -> Result<Tensor> {
    let (_, d, h, w) = x.dims4()?;
    x.get(img)?.reshape((d, h * w))?.index_select(idx, 1)?.t() // [n, d]
}

/// Values of `x: [B, h, w]` (image `img`) at flat spatial `idx: [n]` (u32): `[n]`.
pub fn values(x: &Tensor, img: usize, idx: &Tensor) -> Result<Tensor> {
    x.get(img)?.flatten_all()?.index_select(idx, 0)
}

/// `[N, d]` rows of `x: [b, d, h, w]` gathered per image at flat spatial indices: for image `k`,
/// `indices[k]` indexes its `h · w` grid. Returns the rows concatenated in order.
pub fn gather_locations(x: &Tensor, indices: &[Vec<u32>]) -> Result<Tensor> {
    let (b, d, h, w) = x.dims4()?;
    let flat = x.reshape((b, d, h * w))?; // [b, d, h*w]
    let mut rows = Vec::with_capacity(b);
    for (k, idx) in indices.iter().enumerate().take(b) {
        if idx.is_empty() {
            continue;
        }
        let i = Tensor::from_slice(idx, idx.len(), x.device())?;
        rows.push(flat.get(k)?.index_select(&i, 1)?.t()?); // [n_k, d]
    }
    if rows.is_empty() {
        return Tensor::zeros((0, d), x.dtype(), x.device());
    }
    Tensor::cat(&rows, 0)
}

/// L2-normalises `x` along `dim` (`x / max(‖x‖, 1e-12)`), differentiably.
pub fn l2_normalize(x: &Tensor, dim: usize) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(dim)?.sqrt()?.maximum(1e-12)?;
    x.broadcast_div(&norm)
}
