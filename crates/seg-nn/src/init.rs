//! Seeded weight initialisation.
//!
//! candle's CPU random generator is not seedable, so layers are created with constant
//! placeholders and [`reseed`] then fills every convolution kernel with values drawn from a
//! ChaCha generator keyed by the seed and the parameter name: the same seed gives the same
//! network on any machine. Two distributions ([`WeightInit`]): Kaiming-normal (edge-seg's
//! original one) and PyTorch's `nn.Conv2d` default.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The distribution of the randomly initialised convolutions (with ImageNet weights: the
/// decoder, the classifier and any method's extra heads).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightInit {
    /// Kernels `N(0, 2 / fan_in)`, biases 0.
    #[default]
    KaimingNormal,
    /// PyTorch's `nn.Conv2d` default (`kaiming_uniform_(a = √5)`): kernels and biases
    /// `U(−1/√fan_in, 1/√fan_in)`, a 2.4× smaller spread than Kaiming-normal.
    TorchDefault,
}

/// [`reseed_with`] Kaiming-normal.
pub fn reseed(varmap: &VarMap, seed: u64) -> Result<()> {
    reseed_with(varmap, seed, WeightInit::KaimingNormal)
}

/// Re-initialises every rank-4 `*.weight` (convolution kernel) of `varmap` — and, with
/// [`WeightInit::TorchDefault`], its `*.bias` — deterministically from `seed`.
pub fn reseed_with(varmap: &VarMap, seed: u64, scheme: WeightInit) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let Some(prefix) = name.strip_suffix(".weight") else {
            continue;
        };
        if var.rank() != 4 {
            continue;
        }
        let dims = var.dims().to_vec();
        let fan_in = dims[1] * dims[2] * dims[3];
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ seg_core::io::fnv1a(name.as_bytes()));
        let n: usize = dims.iter().product();
        match scheme {
            WeightInit::KaimingNormal => {
                let std = (2.0 / fan_in as f64).sqrt() as f32;
                let v: Vec<f32> = (0..n).map(|_| std * normal(&mut rng)).collect();
                var.set(&Tensor::from_vec(v, dims, var.device())?)?;
            }
            WeightInit::TorchDefault => {
                let bound = (1.0 / fan_in as f64).sqrt() as f32;
                let v: Vec<f32> = (0..n).map(|_| uniform(&mut rng, bound)).collect();
                var.set(&Tensor::from_vec(v, dims.clone(), var.device())?)?;
                if let Some(bias) = data.get(&format!("{prefix}.bias")).filter(|b| b.dims() == [dims[0]]) {
                    let v: Vec<f32> = (0..dims[0]).map(|_| uniform(&mut rng, bound)).collect();
                    bias.set(&Tensor::from_vec(v, dims[0], var.device())?)?;
                }
            }
        }
    }
    Ok(())
}

/// A standard-normal sample (Box–Muller).
pub fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A sample of `U(−bound, bound)`.
fn uniform(rng: &mut impl Rng, bound: f32) -> f32 {
    (rng.random::<f32>() * 2.0 - 1.0) * bound
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::{Init, VarBuilder};

    fn vars() -> VarMap {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        vb.get_with_hints((64, 32, 3, 3), "conv.weight", Init::Const(0.0))
            .unwrap();
        vb.get_with_hints(64, "conv.bias", Init::Const(0.0)).unwrap();
        vb.get_with_hints(64, "bn.weight", Init::Const(1.0)).unwrap();
        vm
    }

    fn get(vm: &VarMap, name: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[name]
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn moments(v: &[f32]) -> (f32, f32, f32) {
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / v.len() as f32;
        (mean, var.sqrt(), v.iter().fold(0f32, |m, x| m.max(x.abs())))
    }

    #[test]
    fn issue21_kaiming_normal_spread_and_zero_bias() {
        let vm = vars();
        reseed(&vm, 7).unwrap();
        let (mean, std, _) = moments(&get(&vm, "conv.weight"));
        let want = (2.0f32 / 288.0).sqrt();
        assert!(mean.abs() < 0.03 * want, "mean {mean}");
        assert!((std / want - 1.0).abs() < 0.05, "std {std} vs {want}");
        assert!(get(&vm, "conv.bias").iter().all(|&b| b == 0.0));
        assert!(get(&vm, "bn.weight").iter().all(|&b| b == 1.0));
    }

    #[test]
    fn issue21_torch_default_is_uniform_within_the_bound_with_bias() {
        let vm = vars();
        reseed_with(&vm, 7, WeightInit::TorchDefault).unwrap();
        let bound = 1.0 / 288f32.sqrt();
        let (_, std, max) = moments(&get(&vm, "conv.weight"));
        assert!(max <= bound, "max {max} > {bound}");
        // U(-b, b) has std b / √3.
        assert!((std / (bound / 3f32.sqrt()) - 1.0).abs() < 0.05, "std {std}");
        let bias = get(&vm, "conv.bias");
        assert!(bias.iter().all(|b| b.abs() <= bound) && bias.iter().any(|&b| b != 0.0));
        assert!(get(&vm, "bn.weight").iter().all(|&b| b == 1.0), "BatchNorm untouched");
        // Same seed, same values; another seed, others.
        let again = vars();
        reseed_with(&again, 7, WeightInit::TorchDefault).unwrap();
        assert_eq!(get(&vm, "conv.weight"), get(&again, "conv.weight"));
        reseed_with(&again, 8, WeightInit::TorchDefault).unwrap();
        assert_ne!(get(&vm, "conv.weight"), get(&again, "conv.weight"));
    }
}
