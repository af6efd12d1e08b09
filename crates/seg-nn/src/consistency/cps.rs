//! Cross pseudo supervision (Chen et al., CVPR 2021).

use candle_core::{DType, Result, Tensor};

use crate::loss;

/// CPS (Chen et al., CVPR 2021): `CE(P1, argmax P2) + CE(P2, argmax P1)` over `[b, C, h, w]`
/// scores of two networks, with one-hot pseudo-labels and no gradient through the argmax.
/// `valid`: optional `[b, h, w]` u8/u32 mask (0 = no pseudo-label there, e.g. padding); each CE
/// is averaged over the valid pixels.
pub fn cross_pseudo_supervision(logits1: &Tensor, logits2: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
    let ignore = seg_core::IGNORE as u32;
    let label = |l: &Tensor| -> Result<Tensor> {
        let y = l.detach().argmax(1)?; // [b, h, w] u32
        match valid {
            Some(v) => v
                .to_dtype(DType::U32)?
                .ne(0u32)?
                .where_cond(&y, &Tensor::full(ignore, y.shape(), y.device())?),
            None => Ok(y),
        }
    };
    let (y1, y2) = (label(logits1)?, label(logits2)?);
    loss::cross_entropy(logits1, &y2, ignore, None)? + loss::cross_entropy(logits2, &y1, ignore, None)?
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::super::rand_vec;
    use super::*;

    #[test]
    fn cps_pseudo_labels_carry_no_gradient() {
        let dev = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (b, c, h, w) = (2, 3, 2, 3);
        let v1 = Var::from_vec(rand_vec(&mut rng, b * c * h * w), (b, c, h, w), &dev).unwrap();
        let v2 = Var::from_vec(rand_vec(&mut rng, b * c * h * w), (b, c, h, w), &dev).unwrap();
        let valid = Tensor::from_vec((0..b * h * w).map(|i| (i % 5 != 0) as u32).collect(), (b, h, w), &dev).unwrap();
        let loss = cross_pseudo_supervision(v1.as_tensor(), v2.as_tensor(), Some(&valid)).unwrap();
        let g = loss.backward().unwrap();
        // the same loss with the pseudo-labels computed beforehand as constants
        let ignore = Tensor::full(seg_core::IGNORE as u32, (b, h, w), &dev).unwrap();
        let y = |v: &Var| {
            valid
                .ne(0u32)
                .unwrap()
                .where_cond(&v.as_tensor().argmax(1).unwrap(), &ignore)
                .unwrap()
        };
        let (y1, y2) = (y(&v1), y(&v2));
        let l1 = loss::cross_entropy(v1.as_tensor(), &y2, seg_core::IGNORE as u32, None).unwrap();
        let l2 = loss::cross_entropy(v2.as_tensor(), &y1, seg_core::IGNORE as u32, None).unwrap();
        let want = (&l1 + &l2).unwrap();
        let close = |a: &Tensor, b: &Tensor| {
            let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6)
        };
        assert!(close(&loss, &want));
        // ∂L/∂P1 is the gradient of CE(P1, Y2) alone: nothing flows back through Y1 = argmax P1
        let g1 = l1.backward().unwrap();
        assert!(close(g.get(&v1).unwrap(), g1.get(&v1).unwrap()));
        let g2 = l2.backward().unwrap();
        assert!(close(g.get(&v2).unwrap(), g2.get(&v2).unwrap()));
    }
}
