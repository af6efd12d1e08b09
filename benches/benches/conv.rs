//! The adaptation step's frozen convolution (issue #5): `seg_nn::conv::conv2d` (im2col, the
//! trainer's) against `conv2d_frozen` (one patch row per output pixel, no gradient) on the
//! shape of the edge student's last decoder convolution for two 128×192 crops:
//! `[2, 72, 32, 48] ⊛ [32, 72, 3, 3]`. The adaptation worker runs candle on one thread:
//! `RAYON_NUM_THREADS=1 cargo bench -p edge-seg-benches --bench conv`.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, Criterion};
use seg_nn::conv::{conv2d, conv2d_frozen};

fn conv(c: &mut Criterion) {
    let dev = Device::Cpu;
    let x = Tensor::randn(0f32, 1.0, (2, 72, 32, 48), &dev).expect("input");
    let w = Tensor::randn(0f32, 0.1, (32, 72, 3, 3), &dev).expect("kernel");
    let mut g = c.benchmark_group("fuse_conv_2x72x32x48_to_32");
    g.sample_size(30);
    g.bench_function("conv2d_im2col", |b| b.iter(|| conv2d(&x, &w, 1, 1).expect("runs")));
    g.bench_function("conv2d_frozen_rows", |b| {
        b.iter(|| conv2d_frozen(&x, &w, 1, 1).expect("runs"))
    });
    g.finish();
}

criterion_group!(benches, conv);
criterion_main!(benches);
