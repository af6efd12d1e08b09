//! SGD with momentum and weight decay over named parameter groups, and the poly schedule.
//!
//! candle's `SGD` has no momentum, so this is PyTorch's `torch.optim.SGD` update:
//! `g ← g + wd·w; v ← μ·v + g; w ← w − lr·v`.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, Result, Tensor, Var};
use candle_nn::VarMap;

/// A set of parameters sharing a learning-rate multiplier.
#[derive(Debug)]
pub struct ParamGroup {
    /// Group name (for logs).
    pub name: String,
    /// Multiplier on the scheduled learning rate.
    pub lr_mult: f64,
    /// Named trainable variables.
    pub params: Vec<(String, Var)>,
}

/// Splits the trainable variables of `varmap` (everything but BatchNorm running statistics)
/// into `encoder.*` (learning rate × `encoder_lr_mult`) and the rest (× 1).
pub fn encoder_rest_groups(varmap: &VarMap, encoder_lr_mult: f64) -> Vec<ParamGroup> {
    let data = varmap.data().lock().expect("varmap lock poisoned");
    let mut names: Vec<&String> = data.keys().filter(|n| !n.contains("running_")).collect();
    names.sort();
    let (mut enc, mut rest) = (Vec::new(), Vec::new());
    for n in names {
        let p = (n.clone(), data[n].clone());
        if n.starts_with("encoder.") {
            enc.push(p)
        } else {
            rest.push(p)
        }
    }
    vec![
        ParamGroup {
            name: "encoder".into(),
            lr_mult: encoder_lr_mult,
            params: enc,
        },
        ParamGroup {
            name: "rest".into(),
            lr_mult: 1.0,
            params: rest,
        },
    ]
}

/// SGD with momentum and (L2) weight decay.
#[derive(Debug)]
pub struct Sgd {
    groups: Vec<ParamGroup>,
    momentum: f64,
    weight_decay: f64,
    velocity: HashMap<String, Tensor>,
}

impl Sgd {
    /// A new optimiser over `groups`.
    pub fn new(groups: Vec<ParamGroup>, momentum: f64, weight_decay: f64) -> Self {
        Self {
            groups,
            momentum,
            weight_decay,
            velocity: HashMap::new(),
        }
    }

    /// One update with learning rate `lr` (times each group's multiplier). Parameters without a
    /// gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for group in &self.groups {
            let lr = lr * group.lr_mult;
            for (name, var) in &group.params {
                let Some(g) = grads.get(var) else { continue };
                // Everything here is detached: gradients reference the step's forward graph, and
                // a momentum buffer that kept them would chain every step's graph together.
                let g = g.detach();
                let w = var.as_tensor().detach();
                let g = if self.weight_decay != 0.0 {
                    (g + (&w * self.weight_decay)?)?
                } else {
                    g
                };
                let v = match self.velocity.get(name) {
                    Some(v) if self.momentum != 0.0 => ((v * self.momentum)? + g)?,
                    _ => g,
                };
                var.set(&(w - (&v * lr)?)?)?;
                self.velocity.insert(name.clone(), v);
            }
        }
        Ok(())
    }

    /// The momentum buffers, by parameter name (saved with checkpoints for `--resume`).
    pub fn velocity(&self) -> &HashMap<String, Tensor> {
        &self.velocity
    }

    /// Restores momentum buffers saved by [`Self::velocity`].
    pub fn set_velocity(&mut self, v: HashMap<String, Tensor>) {
        self.velocity = v;
    }
}

/// Exponential moving average of a model's variables (mean teacher):
/// `t ← decay · t + (1 − decay) · s` for every variable of `teacher`, BatchNorm running
/// statistics included; `student` must hold every name of `teacher` with the same shape.
pub fn ema_update(teacher: &VarMap, student: &VarMap, decay: f64) -> Result<()> {
    let t = teacher.data().lock().expect("varmap lock poisoned");
    let s = student.data().lock().expect("varmap lock poisoned");
    for (name, tv) in t.iter() {
        let Some(sv) = s.get(name) else {
            candle_core::bail!("ema_update: the student has no variable '{name}'");
        };
        let new = ((tv.as_tensor().detach() * decay)? + (sv.as_tensor().detach() * (1.0 - decay))?)?;
        tv.set(&new)?;
    }
    Ok(())
}

/// Poly learning rate: `base · (1 − iter/max_iter)^power`.
pub fn poly_lr(base: f64, iter: u64, max_iter: u64, power: f64) -> f64 {
    base * (1.0 - iter as f64 / max_iter.max(1) as f64).max(0.0).powf(power)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn momentum_and_decay_match_pytorch_by_hand() {
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32, -2.0], &dev).unwrap();
        let groups = vec![ParamGroup {
            name: "g".into(),
            lr_mult: 0.5,
            params: vec![("w".into(), w.clone())],
        }];
        let mut opt = Sgd::new(groups, 0.9, 0.1);
        // loss = sum(w^2) -> grad 2w
        for _ in 0..2 {
            let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            opt.step(&g, 0.2).unwrap();
        }
        // by hand, lr_eff = 0.1: step1 g = 2w + 0.1w = 2.1w -> v = 2.1w0, w1 = w0 - 0.21 w0 = 0.79 w0
        // step2 g = 2.1 w1 = 1.659 w0; v = 0.9*2.1 w0 + 1.659 w0 = 3.549 w0; w2 = 0.79 w0 - 0.3549 w0
        let got = w.as_tensor().to_vec1::<f32>().unwrap();
        let k = 0.79 - 0.3549;
        // regression: the momentum buffer must not hold the autograd graph (it leaked 0.5 GB/step)
        assert!(!opt.velocity()["w"].track_op());
        assert!((got[0] - k).abs() < 1e-6 && (got[1] + 2.0 * k).abs() < 1e-5, "{got:?}");
    }

    #[test]
    fn ema_update_math() {
        let dev = Device::Cpu;
        let (t, s) = (VarMap::new(), VarMap::new());
        let put = |vm: &VarMap, n: &str, v: &[f32]| {
            vm.data().lock().unwrap().insert(n.into(), Var::new(v, &dev).unwrap());
        };
        put(&t, "a.weight", &[1.0, 2.0]);
        put(&t, "a.bn.running_mean", &[0.0]);
        put(&s, "a.weight", &[3.0, -2.0]);
        put(&s, "a.bn.running_mean", &[10.0]);
        ema_update(&t, &s, 0.9).unwrap();
        ema_update(&t, &s, 0.9).unwrap();
        let get = |n: &str| t.data().lock().unwrap()[n].as_tensor().to_vec1::<f32>().unwrap();
        // two steps toward a fixed student: t2 = s + 0.81 (t0 - s)
        let w = get("a.weight");
        assert!(
            (w[0] - (3.0 - 0.81 * 2.0)).abs() < 1e-6 && (w[1] - (-2.0 + 0.81 * 4.0)).abs() < 1e-6,
            "{w:?}"
        );
        assert!((get("a.bn.running_mean")[0] - 10.0 * 0.19).abs() < 1e-5);
        // the student is untouched; a missing name is an error
        assert_eq!(
            s.data().lock().unwrap()["a.weight"]
                .as_tensor()
                .to_vec1::<f32>()
                .unwrap(),
            [3.0, -2.0]
        );
        put(&t, "extra", &[0.0]);
        assert!(ema_update(&t, &s, 0.9).is_err());
    }

    #[test]
    fn poly_schedule() {
        assert_eq!(poly_lr(0.01, 0, 100, 0.9), 0.01);
        assert!((poly_lr(0.01, 50, 100, 0.9) - 0.01 * 0.5f64.powf(0.9)).abs() < 1e-12);
        assert_eq!(poly_lr(0.01, 100, 100, 0.9), 0.0);
    }
}
