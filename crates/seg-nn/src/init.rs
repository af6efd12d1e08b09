//! Seeded weight initialisation.
//!
//! candle's CPU random generator is not seedable, so layers are created with constant
//! placeholders and [`reseed`] then fills every convolution kernel with Kaiming-normal values
//! drawn from a ChaCha generator keyed by the seed and the parameter name: the same seed gives
//! the same network on any machine.

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Re-initialises every rank-4 `*.weight` (convolution kernel) of `varmap` with Kaiming-normal
/// values (`std = sqrt(2 / fan_in)`), deterministically from `seed`.
pub fn reseed(varmap: &VarMap, seed: u64) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        if !name.ends_with(".weight") || var.rank() != 4 {
            continue;
        }
        let dims = var.dims().to_vec();
        let fan_in = dims[1] * dims[2] * dims[3];
        let std = (2.0 / fan_in as f64).sqrt() as f32;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ seg_core::io::fnv1a(name.as_bytes()));
        let n: usize = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| std * normal(&mut rng)).collect();
        var.set(&Tensor::from_vec(v, dims, var.device())?)?;
    }
    Ok(())
}

/// A standard-normal sample (Box–Muller).
pub fn normal(rng: &mut impl Rng) -> f32 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}
