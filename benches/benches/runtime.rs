//! Per-frame latency of the embedded model on a 480×360 sample frame (tract, CPU):
//! `cargo bench -p edge-seg-benches --bench runtime`.

use criterion::{criterion_group, criterion_main, Criterion};
use edge_seg_runtime::{Segmenter, DEFAULT_MODEL, DEFAULT_SAMPLES};

fn segment(c: &mut Criterion) {
    let mut seg = Segmenter::from_bytes(DEFAULT_MODEL, "embedded").expect("embedded model loads");
    let frame = image::load_from_memory(DEFAULT_SAMPLES[0].1)
        .expect("sample decodes")
        .to_rgb8();
    let mut g = c.benchmark_group("runtime");
    g.sample_size(20);
    g.bench_function("segment_480x360_f32_tract", |b| {
        b.iter(|| seg.segment(&frame).expect("runs"))
    });
    g.bench_function("logits_480x360_f32_tract", |b| {
        b.iter(|| seg.logits(&frame).expect("runs"))
    });
    g.finish();
}

criterion_group!(benches, segment);
criterion_main!(benches);
