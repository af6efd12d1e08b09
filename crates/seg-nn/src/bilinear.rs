//! Bilinear resize that candle can differentiate.
//!
//! candle has no backward for `upsample_bilinear2d`, so we resize with two matmuls against fixed
//! interpolation matrices: `y = A_h · x · A_wᵀ`. The matrices follow ONNX `Resize` with
//! `mode = linear`, `coordinate_transformation_mode = half_pixel` (PyTorch's
//! `align_corners=False`), so the exported graph computes the same function.

use candle_core::{Device, Result, Tensor};

/// The `[out, in]` half-pixel linear interpolation matrix, row-major (built from
/// [`seg_core::preprocess::half_pixel_taps`]).
pub fn interp_matrix(in_len: usize, out_len: usize) -> Vec<f32> {
    let mut m = vec![0f32; out_len * in_len];
    for (o, (i0, i1, l)) in seg_core::preprocess::half_pixel_taps(in_len, out_len)
        .into_iter()
        .enumerate()
    {
        m[o * in_len + i0] += 1.0 - l;
        m[o * in_len + i1] += l;
    }
    m
}

/// `[in, out]` interpolation matrix tensor (the transpose of [`interp_matrix`]).
fn interp_t(in_len: usize, out_len: usize, dev: &Device) -> Result<Tensor> {
    Tensor::from_vec(interp_matrix(in_len, out_len), (out_len, in_len), dev)?.t()
}

/// Resizes `x: [b, c, h, w]` to `[b, c, out_h, out_w]`, differentiably.
pub fn resize(x: &Tensor, out_h: usize, out_w: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    if (h, w) == (out_h, out_w) {
        return Ok(x.clone());
    }
    let dev = x.device();
    // along W: [b*c*h, w] · [w, W] -> [b, c, h, W]
    let y = x
        .reshape((b * c * h, w))?
        .matmul(&interp_t(w, out_w, dev)?)?
        .reshape((b, c, h, out_w))?;
    // along H: [b*c*W, h] · [h, H] -> [b, c, W, H] -> [b, c, H, W]
    y.transpose(2, 3)?
        .contiguous()?
        .reshape((b * c * out_w, h))?
        .matmul(&interp_t(h, out_h, dev)?)?
        .reshape((b, c, out_w, out_h))?
        .transpose(2, 3)?
        .contiguous()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Var;

    #[test]
    fn rows_sum_to_one_and_identity_when_same_size() {
        for (i, o) in [(3, 7), (7, 3), (45, 180), (5, 5)] {
            let m = interp_matrix(i, o);
            for r in 0..o {
                let s: f32 = m[r * i..(r + 1) * i].iter().sum();
                assert!((s - 1.0).abs() < 1e-6);
            }
        }
        let m = interp_matrix(4, 4);
        for r in 0..4 {
            assert_eq!(m[r * 4 + r], 1.0);
        }
    }

    #[test]
    fn upsample_2x_matches_pytorch_reference() {
        // torch.nn.functional.interpolate(torch.arange(3.).view(1,1,1,3), size=(1,6),
        //   mode='bilinear', align_corners=False) = [0, .25, .75, 1.25, 1.75, 2]
        let x = Tensor::new(&[[[[0f32, 1., 2.]]]], &Device::Cpu).unwrap();
        let y = resize(&x, 1, 6)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let want = [0.0, 0.25, 0.75, 1.25, 1.75, 2.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let x0: Vec<f32> = (0..2 * 3 * 4).map(|i| ((i * 7 % 11) as f32) * 0.1 - 0.4).collect();
        let x = Var::from_vec(x0.clone(), (1, 2, 3, 4), &dev).unwrap();
        let wts: Vec<f32> = (0..2 * 5 * 7).map(|i| ((i * 5 % 13) as f32) * 0.07 - 0.3).collect();
        let wt = Tensor::from_vec(wts, (1, 2, 5, 7), &dev).unwrap();
        let f = |t: &Tensor| resize(t, 5, 7).unwrap().mul(&wt).unwrap().sum_all().unwrap();
        let g = f(x.as_tensor()).backward().unwrap();
        let g = g.get(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let eps = 1e-2f32;
        for i in 0..x0.len() {
            let mut p = x0.clone();
            p[i] += eps;
            let mut m = x0.clone();
            m[i] -= eps;
            let fp = f(&Tensor::from_vec(p, (1, 2, 3, 4), &dev).unwrap())
                .to_scalar::<f32>()
                .unwrap();
            let fm = f(&Tensor::from_vec(m, (1, 2, 3, 4), &dev).unwrap())
                .to_scalar::<f32>()
                .unwrap();
            let num = (fp - fm) / (2.0 * eps);
            assert!(
                (num - g[i]).abs() < 2e-3,
                "elem {i}: numeric {num} vs autograd {}",
                g[i]
            );
        }
    }
}
