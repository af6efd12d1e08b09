//! Model-level tests: candle ↔ tract parity of the exported graph, BatchNorm modes, gradients.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use seg_nn::{export, init, ModelConfig, SegModel};

fn tiny_cfg() -> ModelConfig {
    ModelConfig {
        num_classes: 5,
        widths: [4, 8, 8, 12, 16],
        blocks: [1, 1, 1, 1],
        aspp_channels: 8,
        low_channels: 4,
        decoder_channels: 8,
        ..ModelConfig::default()
    }
}

/// Seeded values uniform in [-1, 1).
fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// A model whose BN statistics and affine parameters are non-trivial.
fn trained_looking_model(cfg: &ModelConfig, hw: (usize, usize)) -> (VarMap, SegModel) {
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let model = SegModel::new(cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    init::reseed(&vm, 7).unwrap();
    {
        let data = vm.data().lock().unwrap();
        let mut names: Vec<_> = data.keys().cloned().collect();
        names.sort();
        for (i, n) in names.iter().enumerate() {
            if n.contains("bn.weight") || n.contains("bn.bias") || n.ends_with("classifier.bias") {
                let v = &data[n];
                let r = pseudo_random(v.elem_count(), i as u64);
                let base = if n.contains("weight") { 1.0 } else { 0.0 };
                let r: Vec<f32> = r.iter().map(|x| base + 0.3 * x).collect();
                v.set(&Tensor::from_vec(r, v.dims(), &dev).unwrap()).unwrap();
            }
        }
    }
    for s in 0..3 {
        let x = Tensor::from_vec(pseudo_random(2 * 3 * hw.0 * hw.1, 100 + s), (2, 3, hw.0, hw.1), &dev).unwrap();
        model.forward_t(&x, true).unwrap();
    }
    (vm, model)
}

fn tract_logits(bytes: &[u8], x: &[f32], hw: (usize, usize)) -> Vec<f32> {
    seg_test_support::tract_run(bytes, &[1, 3, hw.0, hw.1], x)
}

/// tract's logits `got` equal candle's `want` (≤ 1e-4), and `want` is not degenerate.
fn assert_parity(want: &[f32], got: &[f32]) {
    assert_eq!(got.len(), want.len());
    let max_diff = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let scale = want.iter().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(scale > 0.1, "degenerate logits");
    assert!(max_diff <= 1e-4, "max |candle - tract| = {max_diff}");
}

/// Issue #2: the exported graph computes the trained model's function (≤ 1e-4 on logits).
#[test]
fn issue2_export_parity_candle_vs_tract() {
    let cfg = tiny_cfg();
    // 45x61 exercises odd sizes and non-integer resize ratios.
    let hw = (45, 61);
    let (_vm, model) = trained_looking_model(&cfg, hw);
    let x = pseudo_random(3 * hw.0 * hw.1, 42);
    let xt = Tensor::from_vec(x.clone(), (1, 3, hw.0, hw.1), &Device::Cpu).unwrap();
    let want: Vec<f32> = model.logits(&xt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let onnx = export::to_onnx(&model, hw, &BTreeMap::new()).unwrap();
    let got = tract_logits(&seg_onnx::encode(&onnx), &x, hw);
    assert_parity(&want, &got);
}

/// The parity check notices a broken export (a transposed kernel).
#[test]
fn issue2_parity_detects_a_transposed_weight() {
    let cfg = tiny_cfg();
    let hw = (32, 32);
    let (_vm, model) = trained_looking_model(&cfg, hw);
    let x = pseudo_random(3 * hw.0 * hw.1, 1);
    let xt = Tensor::from_vec(x.clone(), (1, 3, hw.0, hw.1), &Device::Cpu).unwrap();
    let want: Vec<f32> = model.logits(&xt).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let mut onnx = export::to_onnx(&model, hw, &BTreeMap::new()).unwrap();
    let g = onnx.graph.as_mut().unwrap();
    let w = g
        .initializer
        .iter_mut()
        .find(|t| t.name == "decoder.fuse.conv.weight")
        .unwrap();
    // swap the two spatial axes of the 3x3 kernel
    let mut v = seg_onnx::tensor_to_f32(w).unwrap();
    let d: Vec<usize> = w.dims.iter().map(|&d| d as usize).collect();
    let orig = v.clone();
    for o in 0..d[0] * d[1] {
        for i in 0..3 {
            for j in 0..3 {
                v[o * 9 + i * 3 + j] = orig[o * 9 + j * 3 + i];
            }
        }
    }
    *w = seg_onnx::tensor_f32(&w.name.clone(), &w.dims.clone(), &v);
    let got = tract_logits(&seg_onnx::encode(&onnx), &x, hw);
    let max_diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff > 1e-3, "a transposed kernel went unnoticed ({max_diff})");
}

#[test]
fn batchnorm_train_and_eval_modes_differ_and_running_stats_move() {
    let cfg = tiny_cfg();
    let dev = Device::Cpu;
    let vm = VarMap::new();
    let model = SegModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
    init::reseed(&vm, 1).unwrap();
    let rm = vm.data().lock().unwrap()["encoder.stem.0.bn.running_mean"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    assert!(rm.iter().all(|v| *v == 0.0));
    let x = (Tensor::from_vec(pseudo_random(2 * 3 * 32 * 32, 3), (2, 3, 32, 32), &dev).unwrap() + 0.5).unwrap();
    let train = model.forward_t(&x, true).unwrap().logits;
    let eval = model.forward_t(&x, false).unwrap().logits;
    let d = seg_nn::max_abs_diff(&train, &eval).unwrap();
    assert!(d > 1e-3);
    let rm = vm.data().lock().unwrap()["encoder.stem.0.bn.running_mean"]
        .as_tensor()
        .to_vec1::<f32>()
        .unwrap();
    assert!(rm.iter().any(|v| *v != 0.0));
}

#[test]
fn seeded_init_is_reproducible() {
    let cfg = tiny_cfg();
    let make = |seed| {
        let vm = VarMap::new();
        SegModel::new(&cfg, VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu)).unwrap();
        init::reseed(&vm, seed).unwrap();
        let w = vm.data().lock().unwrap()["encoder.layer2.0.conv1.conv.weight"]
            .as_tensor()
            .flatten_all()
            .unwrap();
        w.to_vec1::<f32>().unwrap()
    };
    assert_eq!(make(3), make(3));
    assert_ne!(make(3), make(4));
}

/// The f32 initializers of `onnx` by name, as candle tensors.
fn float_initializers(onnx: &seg_onnx::pb::ModelProto) -> std::collections::HashMap<String, Tensor> {
    onnx.graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .filter(|t| t.data_type == 1)
        .map(|t| {
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            let v = seg_onnx::tensor_to_f32(t).unwrap();
            (t.name.clone(), Tensor::from_vec(v, dims, &Device::Cpu).unwrap())
        })
        .collect()
}

/// A trained-looking tiny model at 40 × 56, its ONNX export and the export's f32 initializers.
struct Exported {
    cfg: ModelConfig,
    hw: (usize, usize),
    _vm: VarMap,
    model: SegModel,
    onnx: seg_onnx::pb::ModelProto,
    weights: std::collections::HashMap<String, Tensor>,
}

fn exported_tiny() -> Exported {
    let cfg = tiny_cfg();
    let hw = (40, 56);
    let (_vm, model) = trained_looking_model(&cfg, hw);
    let onnx = export::to_onnx(&model, hw, &BTreeMap::new()).unwrap();
    let weights = float_initializers(&onnx);
    Exported {
        cfg,
        hw,
        _vm,
        model,
        onnx,
        weights,
    }
}

/// Issue #5: the adaptation head rebuilt from the exported (BN-folded) initializers computes the
/// trained model's stride-4 scores; after changing its trainable parts, its folded weights
/// written back into the graph give tract the same scores as the head in candle.
#[test]
fn issue5_adapt_head_matches_the_model_and_folds_back_into_the_graph() {
    use seg_nn::adapt::AdaptHead;
    let Exported {
        cfg,
        hw,
        _vm,
        model,
        mut onnx,
        weights,
    } = exported_tiny();
    let dev = Device::Cpu;
    let head = AdaptHead::new(&cfg, &weights, &dev).unwrap();
    let x = pseudo_random(3 * hw.0 * hw.1, 9);
    let xt = Tensor::from_vec(x.clone(), (1, 3, hw.0, hw.1), &dev).unwrap();
    let (low, high) = model.encoder.forward_t(&xt, false).unwrap();
    let max_diff = |a: &Tensor, b: &[f32]| -> f32 {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(p, q)| (p - q).abs()).fold(0f32, f32::max)
    };
    let want: Vec<f32> = model
        .forward_t(&xt, false)
        .unwrap()
        .logits_low
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let out = head.forward(&low, &high).unwrap();
    assert!(max_diff(&out.logits_low, &want) <= 1e-4);
    assert_eq!(out.embedding.dims(), &[1, cfg.decoder_channels, 10, 14]);

    // "adapt": move every trainable value, then fold into the graph and compare with tract
    for (i, (_, v)) in head.trainable().iter().enumerate() {
        let r: Vec<f32> = pseudo_random(v.elem_count(), 300 + i as u64)
            .iter()
            .map(|x| 0.2 * x)
            .collect();
        v.set(&(v.as_tensor() + Tensor::from_vec(r, v.dims(), &dev).unwrap()).unwrap())
            .unwrap();
    }
    let adapted = head.forward(&low, &high).unwrap().logits_low;
    assert!(
        max_diff(&adapted, &want) > 1e-2,
        "the trainable parts change the output"
    );
    for (name, t) in head.folded().unwrap() {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        seg_onnx::set_initializer(&mut onnx, &name, &v).unwrap();
    }
    let cut = seg_onnx::extract(&onnx, &[], &["classifier.out"]).unwrap();
    let got = tract_logits(&seg_onnx::encode(&cut), &x, hw);
    assert!(max_diff(&adapted, &got) <= 1e-4);
    assert!(seg_onnx::set_initializer(&mut onnx, "classifier.weight", &[1.0]).is_err());

    // scope `Last`: only the last decoder affine and the classifier train, and the backward pass
    // stops there (the earlier affines get no gradient)
    let last = head.clone().with_scope(seg_nn::adapt::HeadScope::Last);
    let names: Vec<String> = last.trainable().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "decoder.fuse.conv.gamma",
            "decoder.fuse.conv.beta",
            "classifier.weight",
            "classifier.bias"
        ]
    );
    let grads = last
        .forward(&low, &high)
        .unwrap()
        .logits_low
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    for (name, v) in head.trainable() {
        let has = grads.get(&v).is_some();
        assert_eq!(has, names.contains(&name), "{name}: gradient {has}");
    }

    // the kept last-convolution output (what the runtime caches for its held frames) gives the
    // same output bit for bit, and the gradient still reaches the last affine
    let fuse_in = weights["decoder.fuse.conv.weight"].dim(1).unwrap();
    let l = weights["decoder.low.conv.weight"].dim(0).unwrap();
    let aspp = Tensor::from_vec(pseudo_random((fuse_in - l) * 2 * 2, 11), (1, fuse_in - l, 2, 2), &dev).unwrap();
    let lowp = Tensor::from_vec(pseudo_random(l * 10 * 14, 12), (1, l, 10, 14), &dev).unwrap();
    let direct = last.forward_from_aspp(&aspp, &lowp).unwrap().logits_low;
    let pre = last.fuse_conv(&aspp, &lowp).unwrap();
    let kept = last.forward_from_fuse_conv(&pre).unwrap().logits_low;
    assert_eq!(
        max_diff(&direct, &kept.flatten_all().unwrap().to_vec1::<f32>().unwrap()),
        0.0
    );
    let grads = kept.sum_all().unwrap().backward().unwrap();
    assert!(last.trainable().iter().all(|(_, v)| grads.get(v).is_some()));
}

/// Issue #5: the low-rank update of the last decoder convolution starts at zero (the head is
/// the source model), its gradients match finite differences, the kept-convolution path agrees
/// with the direct one, and once trained it folds into the kernel: tract on the folded graph
/// gives the head's scores.
#[test]
fn issue5_low_rank_update_starts_at_zero_has_true_gradients_and_folds_into_the_kernel() {
    use seg_nn::adapt::{AdaptHead, HeadScope};
    let Exported {
        cfg,
        hw,
        _vm,
        model,
        mut onnx,
        weights,
    } = exported_tiny();
    let dev = Device::Cpu;
    let x = pseudo_random(3 * hw.0 * hw.1, 21);
    let xt = Tensor::from_vec(x.clone(), (1, 3, hw.0, hw.1), &dev).unwrap();
    let (low, high) = model.encoder.forward_t(&xt, false).unwrap();
    let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let source = model.forward_t(&xt, false).unwrap().logits_low;
    let diff = |a: &Tensor, b: &Tensor| seg_nn::max_abs_diff(a, b).unwrap();

    let head = AdaptHead::new(&cfg, &weights, &dev)
        .unwrap()
        .with_scope(HeadScope::Last)
        .with_classifier(false)
        .with_low_rank(2, 5)
        .unwrap();
    let names: Vec<String> = head.trainable().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "decoder.fuse.conv.gamma",
            "decoder.fuse.conv.beta",
            "decoder.fuse.conv.lora_a",
            "decoder.fuse.conv.lora_b"
        ]
    );
    let at_start = head.forward(&low, &high).unwrap().logits_low;
    assert!(diff(&at_start, &source) <= 1e-4, "B = 0: the source model");

    // move every trainable value (B away from zero)
    for (i, (_, v)) in head.trainable().iter().enumerate() {
        let r: Vec<f32> = pseudo_random(v.elem_count(), 500 + i as u64)
            .iter()
            .map(|x| 0.2 * x)
            .collect();
        v.set(&(v.as_tensor() + Tensor::from_vec(r, v.dims(), &dev).unwrap()).unwrap())
            .unwrap();
    }
    let adapted = head.forward(&low, &high).unwrap().logits_low;
    assert!(diff(&adapted, &source) > 1e-2, "the update changes the output");

    // the kept convolution (what the runtime caches for held frames) gives the same scores
    let fuse_in = weights["decoder.fuse.conv.weight"].dim(1).unwrap();
    let l = weights["decoder.low.conv.weight"].dim(0).unwrap();
    let aspp = Tensor::from_vec(pseudo_random((fuse_in - l) * 4, 22), (1, fuse_in - l, 2, 2), &dev).unwrap();
    let lowp = Tensor::from_vec(pseudo_random(l * 10 * 14, 23), (1, l, 10, 14), &dev).unwrap();
    let direct = head.forward_from_aspp(&aspp, &lowp).unwrap().logits_low;
    let kept = head.fuse_conv(&aspp, &lowp).unwrap();
    assert!(kept.input.is_some());
    let via_kept = head.forward_from_fuse_conv(&kept).unwrap().logits_low;
    assert_eq!(diff(&direct, &via_kept), 0.0);

    // gradients of A and B against central differences of a fixed loss
    let probe = Tensor::from_vec(pseudo_random(direct.elem_count(), 24), direct.dims(), &dev).unwrap();
    let loss = || -> Tensor {
        let y = head.forward_from_fuse_conv(&kept).unwrap().logits_low;
        (y * &probe).unwrap().sum_all().unwrap()
    };
    let grads = loss().backward().unwrap();
    for (name, v) in head.trainable().into_iter().filter(|(n, _)| n.contains("lora")) {
        let g = flat(grads.get(&v).unwrap_or_else(|| panic!("{name} gets no gradient")));
        let base = flat(v.as_tensor());
        // the loss is piecewise linear in A and B (the ReLU): a small step stays on one piece
        for &i in &[0usize, base.len() / 2, base.len() - 1] {
            let eps = 1e-3f32;
            let at = |d: f32| -> f32 {
                let mut w = base.clone();
                w[i] += d;
                v.set(&Tensor::from_vec(w, v.dims(), &dev).unwrap()).unwrap();
                loss().to_scalar::<f32>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            v.set(&Tensor::from_vec(base.clone(), v.dims(), &dev).unwrap()).unwrap();
            assert!(
                (fd - g[i]).abs() <= 1e-2 * (1.0 + fd.abs()),
                "{name}[{i}]: finite difference {fd}, gradient {}",
                g[i]
            );
        }
    }

    // folded into the graph's kernel, tract computes the adapted scores
    for (name, t) in head.folded().unwrap() {
        seg_onnx::set_initializer(&mut onnx, &name, &flat(&t)).unwrap();
    }
    let cut = seg_onnx::extract(&onnx, &[], &["classifier.out"]).unwrap();
    let got = Tensor::from_vec(tract_logits(&seg_onnx::encode(&cut), &x, hw), adapted.dims(), &dev).unwrap();
    assert!(diff(&adapted, &got) <= 1e-4);
}

/// Issue #24: the adaptation head is derived from the model's decoder, not a copy of it: its
/// convolutions are exactly the export's decoder convolutions (every `decoder.*` kernel is a
/// [`seg_nn::model::DecoderConv`], every one of those is exported under its name), the widths
/// read back from the export are the config's, a config whose decoder disagrees with the graph
/// is refused naming the kernel, and the head computes the model's embedding and scores.
#[test]
fn issue24_adapt_head_is_derived_from_the_models_decoder() {
    use seg_nn::adapt::AdaptHead;
    use seg_nn::model::DecoderKind;
    let Exported {
        cfg,
        hw,
        _vm,
        model,
        onnx: _,
        weights,
    } = exported_tiny();
    let mut decoder_kernels: Vec<&String> = weights
        .keys()
        .filter(|k| k.starts_with("decoder.") && k.ends_with(".weight"))
        .collect();
    decoder_kernels.sort();
    let mut named: Vec<String> = DecoderKind::DeeplabLite
        .convs()
        .iter()
        .map(|w| format!("{}.weight", w.name()))
        .collect();
    named.sort();
    assert_eq!(decoder_kernels, named.iter().collect::<Vec<_>>());
    let enc = model.encoder.channels();
    for &which in DecoderKind::DeeplabLite.convs() {
        let (co, ci, k) = which.shape(&cfg, enc);
        assert_eq!(weights[&format!("{}.weight", which.name())].dims(), &[co, ci, k, k]);
        assert_eq!(weights[&format!("{}.bias", which.name())].dims(), &[co]);
    }

    let read = AdaptHead::config_of(&weights).unwrap();
    assert_eq!(
        (
            read.num_classes,
            read.aspp_channels,
            read.low_channels,
            read.decoder_channels
        ),
        (
            cfg.num_classes,
            cfg.aspp_channels,
            cfg.low_channels,
            cfg.decoder_channels
        )
    );

    let dev = Device::Cpu;
    let wrong = ModelConfig {
        low_channels: cfg.low_channels + 1,
        ..cfg.clone()
    };
    let err = AdaptHead::new(&wrong, &weights, &dev).unwrap_err().to_string();
    assert!(err.contains("decoder.low.conv.weight"), "{err}");

    let head = AdaptHead::new(&read, &weights, &dev).unwrap();
    let xt = Tensor::from_vec(pseudo_random(3 * hw.0 * hw.1, 33), (1, 3, hw.0, hw.1), &dev).unwrap();
    let (low, high) = model.encoder.forward_t(&xt, false).unwrap();
    let want = model.forward_t(&xt, false).unwrap();
    let got = head.forward(&low, &high).unwrap();
    assert!(seg_nn::max_abs_diff(&got.embedding, &want.embedding).unwrap() <= 1e-4);
    assert!(seg_nn::max_abs_diff(&got.logits_low, &want.logits_low).unwrap() <= 1e-4);
}

/// Issue #24: the decoder's graph written once (`decoder_graph`) exports the nodes, names and
/// order the export had when it was written by hand (so exports stay byte-identical), and
/// `DecoderConv::ALL` indexes per-convolution arrays.
#[test]
fn issue24_export_keeps_the_decoders_nodes_names_and_order() {
    use seg_nn::model::DecoderConv;
    for (i, which) in DecoderConv::ALL.iter().enumerate() {
        assert_eq!(*which as usize, i);
    }
    let e = exported_tiny();
    let nodes: Vec<(String, String)> = e
        .onnx
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.output[0].starts_with("decoder."))
        .map(|n| (n.op_type.clone(), n.output[0].clone()))
        .collect();
    let want = [
        ("Conv", "decoder.aspp.b1.conv.out"),
        ("Relu", "decoder.aspp.b1.conv.relu"),
        ("Conv", "decoder.aspp.b2.conv.out"),
        ("Relu", "decoder.aspp.b2.conv.relu"),
        ("GlobalAveragePool", "decoder.aspp.gap"),
        ("Conv", "decoder.aspp.pool.out"),
        ("Relu", "decoder.aspp.pool.relu"),
        ("Concat", "decoder.aspp.cat"),
        ("Conv", "decoder.aspp.proj.conv.out"),
        ("Relu", "decoder.aspp.proj.conv.relu"),
        ("Add", "decoder.aspp.out"),
        ("Resize", "decoder.aspp.up"),
        ("Conv", "decoder.low.conv.out"),
        ("Relu", "decoder.low.conv.relu"),
        ("Concat", "decoder.cat"),
        ("Conv", "decoder.fuse.conv.out"),
        ("Relu", "decoder.fuse.conv.relu"),
    ];
    let want: Vec<(String, String)> = want.iter().map(|(o, n)| (o.to_string(), n.to_string())).collect();
    assert_eq!(nodes, want);
    // the upsampling's fixed size: [1, a, h4, w4] of the low-level features
    let sizes = e
        .onnx
        .graph
        .as_ref()
        .unwrap()
        .initializer
        .iter()
        .find(|t| t.name == "decoder.aspp.up.sizes")
        .unwrap();
    let low_hw = e.model.encoder.out_hw(e.hw).0;
    assert_eq!(
        sizes.int64_data,
        [1, e.cfg.aspp_channels as i64, low_hw.0 as i64, low_hw.1 as i64]
    );
}

/// `tiny_cfg` with the LR-ASPP decoder.
fn tiny_lraspp_cfg() -> ModelConfig {
    ModelConfig {
        decoder: seg_nn::model::DecoderKind::Lraspp,
        ..tiny_cfg()
    }
}

/// Issue #21 (decoder chosen by config): the LR-ASPP decoder exports to a graph tract runs to the
/// trained model's logits (≤ 1e-4), with its own convolutions (`decoder.cbr`, the sigmoid gate
/// `decoder.scale`, `decoder.low`) and none of the DeepLab decoder's, and a pixel embedding of
/// `aspp_channels + low_channels`.
#[test]
fn issue21_lraspp_decoder_export_parity_candle_vs_tract() {
    use seg_nn::model::DecoderConv;
    let cfg = tiny_lraspp_cfg();
    let hw = (45, 61);
    let (_vm, model) = trained_looking_model(&cfg, hw);
    let x = pseudo_random(3 * hw.0 * hw.1, 42);
    let xt = Tensor::from_vec(x.clone(), (1, 3, hw.0, hw.1), &Device::Cpu).unwrap();
    let out = model.forward_t(&xt, false).unwrap();
    assert_eq!(out.embedding.dim(1).unwrap(), cfg.aspp_channels + cfg.low_channels);
    assert_eq!(cfg.embedding_channels(), cfg.aspp_channels + cfg.low_channels);
    let want: Vec<f32> = out.logits.flatten_all().unwrap().to_vec1().unwrap();
    let onnx = export::to_onnx(&model, hw, &BTreeMap::new()).unwrap();
    let graph = onnx.graph.as_ref().unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type.as_str()).collect();
    assert!(ops.contains(&"Sigmoid") && ops.contains(&"Mul"), "{ops:?}");
    let mut kernels: Vec<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .filter(|n| n.starts_with("decoder.") && n.ends_with(".weight"))
        .collect();
    kernels.sort();
    let mut want_kernels: Vec<String> = [DecoderConv::LrCbr, DecoderConv::Low, DecoderConv::LrScale]
        .iter()
        .map(|w| format!("{}.weight", w.name()))
        .collect();
    want_kernels.sort();
    assert_eq!(kernels, want_kernels.iter().map(String::as_str).collect::<Vec<_>>());
    let got = tract_logits(&seg_onnx::encode(&onnx), &x, hw);
    assert_parity(&want, &got);
}

/// Issue #21: the gradient through LR-ASPP's sigmoid gate (its kernel and bias) and the gated
/// branch's kernel matches central finite differences of a fixed linear function of the logits.
#[test]
fn issue21_lraspp_gate_gradient_matches_finite_differences() {
    let cfg = tiny_lraspp_cfg();
    let hw = (32, 40);
    let (vm, model) = trained_looking_model(&cfg, hw);
    let dev = Device::Cpu;
    let xt = Tensor::from_vec(pseudo_random(3 * hw.0 * hw.1, 5), (1, 3, hw.0, hw.1), &dev).unwrap();
    let c = cfg.num_classes * hw.0 * hw.1;
    let probe = Tensor::from_vec(pseudo_random(c, 6), (1, cfg.num_classes, hw.0, hw.1), &dev).unwrap();
    let loss = |m: &SegModel| -> Tensor {
        (m.forward_t(&xt, false).unwrap().logits * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let grads = loss(&model).backward().unwrap();
    let vars = vm.data().lock().unwrap().clone();
    for name in ["decoder.scale.weight", "decoder.scale.bias", "decoder.cbr.conv.weight"] {
        let var = &vars[name];
        let g: Vec<f32> = grads.get(var).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f32> = var.flatten_all().unwrap().to_vec1().unwrap();
        assert!(g.iter().any(|v| v.abs() > 1e-3), "{name}: no gradient");
        for i in [0, base.len() / 2, base.len() - 1] {
            let eps = 1e-2f32;
            let at = |d: f32| {
                let mut v = base.clone();
                v[i] += d;
                var.set(&Tensor::from_vec(v, var.dims(), &dev).unwrap()).unwrap();
                loss(&model).to_scalar::<f32>().unwrap()
            };
            let fd = (at(eps) - at(-eps)) / (2.0 * eps);
            var.set(&Tensor::from_vec(base.clone(), var.dims(), &dev).unwrap())
                .unwrap();
            let tol = 2e-2 * fd.abs().max(g[i].abs()).max(1.0);
            assert!(
                (fd - g[i]).abs() <= tol,
                "{name}[{i}]: analytic {} vs finite differences {fd}",
                g[i]
            );
        }
    }
}

/// Issue #21: the decoder is a config key; `deeplab_lite` (the default) is left out of a saved
/// config, so configs and exports written before the key existed read and compare as before;
/// the adaptation head refuses an LR-ASPP model with a one-line reason.
#[test]
fn issue21_decoder_config_key_and_adaptation_refuses_lraspp() {
    use seg_nn::model::DecoderKind;
    let text = serde_json::to_string(&ModelConfig::default()).unwrap();
    assert!(!text.contains("\"decoder\":"), "{text}");
    assert_eq!(
        serde_json::from_str::<ModelConfig>(&text).unwrap(),
        ModelConfig::default()
    );
    let lr = serde_json::to_string(&tiny_lraspp_cfg()).unwrap();
    assert!(lr.contains("\"decoder\":\"lraspp\""), "{lr}");
    assert_eq!(
        serde_json::from_str::<ModelConfig>(&lr).unwrap().decoder,
        DecoderKind::Lraspp
    );
    assert!(serde_json::from_str::<ModelConfig>("{\"decoder\": \"fpn\"}").is_err());

    let cfg = tiny_lraspp_cfg();
    let hw = (32, 32);
    let (_vm, model) = trained_looking_model(&cfg, hw);
    let onnx = export::to_onnx(&model, hw, &BTreeMap::new()).unwrap();
    let weights = float_initializers(&onnx);
    let err = seg_nn::adapt::AdaptHead::config_of(&weights).unwrap_err().to_string();
    assert!(err.lines().next().unwrap().contains("deeplab_lite"), "{err}");
    let err = seg_nn::adapt::AdaptHead::new(&cfg, &weights, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("deeplab_lite"), "{err}");
}
