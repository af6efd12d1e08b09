//! Times one SupOnly training step (forward + backward + SGD) of the default model on CPU.
//! `cargo run --release -p seg-nn --example step_time -- [batch] [size]`
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use seg_nn::{init, loss, optim, ModelConfig, SegModel};

fn main() -> candle_core::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (b, s) = (*args.first().unwrap_or(&8), *args.get(1).unwrap_or(&256));
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let model = SegModel::new(&ModelConfig::default(), VarBuilder::from_varmap(&vm, DType::F32, &dev))?;
    init::reseed(&vm, 0)?;
    let mut opt = optim::Sgd::new(optim::encoder_rest_groups(&vm, 1.0), 0.9, 1e-4);
    let x = Tensor::randn(0f32, 1., (b, 3, s, s), &dev)?;
    let t = Tensor::zeros((b, s, s), DType::U32, &dev)?;
    for i in 0..4 {
        let t0 = std::time::Instant::now();
        let out = model.forward_t(&x, true)?;
        let t1 = t0.elapsed();
        let l = loss::cross_entropy(&out.logits, &t, 255, None)?;
        let g = l.backward()?;
        let t2 = t0.elapsed();
        opt.step(&g, 0.01)?;
        println!("step {i}: fwd {:?} fwd+bwd {:?} total {:?}", t1, t2, t0.elapsed());
    }
    let t0 = std::time::Instant::now();
    let x1 = Tensor::randn(0f32, 1., (1, 3, 360, 480), &dev)?;
    model.logits(&x1)?;
    println!("eval 360x480: {:?}", t0.elapsed());
    Ok(())
}
