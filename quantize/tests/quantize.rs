//! Integration tests: BN folding, QDQ of the embedded model vs float, malformed graphs.

use std::collections::BTreeMap;
use std::path::Path;

use edge_seg_quantize::{
    compare_outputs, load_images, prepare, quantize_model, quantize_model_with, Method, Preprocess, QuantizeOptions,
    Target, META_QUANTIZATION,
};
use image::RgbImage;
use seg_onnx::{pb, Attr, GraphBuilder};
use tract_onnx::prelude::*;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Runs a graph with one `[1, c, h, w]` input in tract; returns the first output's values.
fn run(proto: &pb::ModelProto, shape: [usize; 4], x: &[f32]) -> Vec<f32> {
    let plan = tract_onnx::onnx()
        .model_for_proto_model(proto)
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let t = tract_ndarray::Array4::from_shape_vec(shape, x.to_vec())
        .unwrap()
        .into_tensor();
    let y = plan.run(tvec!(t.into())).unwrap();
    y[0].to_plain_array_view::<f32>().unwrap().iter().copied().collect()
}

fn ramp(n: usize, a: f32, b: f32) -> Vec<f32> {
    (0..n).map(|i| a * ((i as f32 * 0.37 + b).sin())).collect()
}

/// Conv(2→3, 3×3, pad 1) → BatchNormalization → Relu on `[1, 2, 6, 7]`.
fn conv_bn_graph() -> pb::ModelProto {
    let mut g = GraphBuilder::new("conv_bn");
    g.input("x", &[1, 2, 6, 7]);
    g.init_f32("w", &[3, 2, 3, 3], &ramp(54, 0.5, 0.1));
    g.init_f32("b", &[3], &[0.1, -0.2, 0.3]);
    g.init_f32("gamma", &[3], &[1.5, 0.5, -0.8]);
    g.init_f32("beta", &[3], &[0.05, -0.3, 0.2]);
    g.init_f32("mean", &[3], &[0.2, -0.1, 0.4]);
    g.init_f32("var", &[3], &[0.9, 2.5, 0.04]);
    let conv = g.node(
        "Conv",
        &["x", "w", "b"],
        "conv",
        &[
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
        ],
    );
    let bn = g.node(
        "BatchNormalization",
        &[&conv, "gamma", "beta", "mean", "var"],
        "bn",
        &[("epsilon", Attr::Float(1e-3))],
    );
    g.node("Relu", &[&bn], "y", &[]);
    g.output("y", &[1, 3, 6, 7]);
    g.finish(&BTreeMap::new())
}

#[test]
fn bn_folding_equals_the_unfolded_graph() {
    let model = conv_bn_graph();
    let (folded, summary) = prepare(&model).unwrap();
    let graph = folded.graph.as_ref().unwrap();
    assert_eq!(summary.folded_bn.len(), 1, "{summary:?}");
    assert!(graph.node.iter().all(|n| n.op_type != "BatchNormalization"));
    assert_eq!(graph.node.iter().filter(|n| n.op_type == "Conv").count(), 1);
    let x = ramp(84, 2.0, 0.7);
    let (a, b) = (run(&model, [1, 2, 6, 7], &x), run(&folded, [1, 2, 6, 7], &x));
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
    assert!(max <= 1e-5, "max difference {max}");
    assert!(a.iter().any(|v| *v > 0.1), "the test graph should not be all zero");
}

fn samples() -> Vec<RgbImage> {
    load_images(&root().join("assets/samples")).unwrap()
}

fn camvid() -> pb::ModelProto {
    seg_onnx::load(&root().join("assets/models/camvid-small.onnx")).unwrap()
}

fn check_camvid(opts: QuantizeOptions) {
    let method = opts.method;
    let model = camvid();
    let images = samples();
    assert_eq!(images.len(), 3);
    let (q, report) = quantize_model(&model, &images, &opts).unwrap();
    // Written and read back through seg-onnx, metadata kept and extended.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.onnx");
    seg_onnx::save(&q, &path).unwrap();
    let q = seg_onnx::load(&path).unwrap();
    let meta = seg_onnx::metadata(&q);
    assert!(
        meta.contains_key("edge_seg.classes") && meta.contains_key(META_QUANTIZATION),
        "{meta:?}"
    );
    let graph = q.graph.as_ref().unwrap();
    let count = |op: &str| graph.node.iter().filter(|n| n.op_type == op).count();
    let convs = count("Conv");
    assert!(convs > 0);
    let float_convs = if opts.keep_first_last_float { 2 } else { 0 };
    assert_eq!(
        report.weights.len(),
        convs - float_convs,
        "every other conv weight is int8"
    );
    assert!(count("QuantizeLinear") >= convs, "every conv input is quantized");
    assert!(
        graph.initializer.iter().any(|t| t.data_type == 3),
        "int8 weights present"
    );
    for a in &report.activations {
        assert!(a.scale > 0.0 && (0..=255).contains(&a.zero_point), "{a:?}");
        assert!(a.sqnr_db > 10.0, "{a:?}");
        if method == Method::MinMax {
            assert_eq!(a.clip_fraction, 0.0, "minmax on the calibration set never clips: {a:?}");
        }
    }
    assert!(report.table().contains("SQNR"));
    assert!(report.to_json().contains("\"activations\""));
    let cmp = compare_outputs(&model, &q, &images, Preprocess::from_model(&model).unwrap()).unwrap();
    assert!(cmp.argmax_agreement >= 0.99, "{method:?}: {cmp:?}\n{}", report.table());
}

#[test]
fn camvid_int8_minmax_agrees_with_float() {
    check_camvid(QuantizeOptions::default());
}

/// Percentile ranges clip the top tail of every tensor, including the classifier's logits, where
/// the tail *is* the arg-max: with all layers quantized, percentile 99.99 over the 3 sample frames
/// agreed on 98.99 % of pixels with the trained camvid-small model (MinMax: 99.15 %). Keeping the
/// first and last weight layers in float, the usual remedy, is the configuration tested here.
#[test]
fn camvid_int8_percentile_agrees_with_float() {
    check_camvid(QuantizeOptions {
        method: Method::Percentile,
        keep_first_last_float: true,
        ..Default::default()
    });
}

fn tiny_pre() -> Preprocess {
    Preprocess {
        input_hw: (6, 7),
        mean: [0.5; 3],
        std: [0.25; 3],
    }
}

fn tiny_images() -> Vec<RgbImage> {
    vec![RgbImage::from_fn(7, 6, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 40) as u8, 128])
    })]
}

/// A 3-channel-input conv graph; `edit` breaks it.
fn small_graph(edit: impl FnOnce(&mut pb::GraphProto)) -> pb::ModelProto {
    let mut g = GraphBuilder::new("small");
    g.input("x", &[1, 3, 6, 7]);
    g.init_f32("w", &[2, 3, 1, 1], &ramp(6, 1.0, 0.0));
    g.node("Conv", &["x", "w"], "c", &[("kernel_shape", Attr::Ints(vec![1, 1]))]);
    g.node("Relu", &["c"], "y", &[]);
    g.output("y", &[1, 2, 6, 7]);
    let mut m = g.finish(&BTreeMap::new());
    edit(m.graph.as_mut().unwrap());
    m
}

fn error_of(m: &pb::ModelProto) -> String {
    quantize_model_with(m, &tiny_images(), &QuantizeOptions::default(), tiny_pre())
        .unwrap_err()
        .to_string()
}

#[test]
fn a_well_formed_small_graph_quantizes() {
    let (q, report) = quantize_model_with(
        &small_graph(|_| {}),
        &tiny_images(),
        &QuantizeOptions::default(),
        tiny_pre(),
    )
    .unwrap();
    assert_eq!(report.activations.len(), 1);
    assert_eq!(report.weights.len(), 1);
    assert!(q.graph.unwrap().node.iter().any(|n| n.op_type == "DequantizeLinear"));
}

#[test]
fn malformed_graphs_name_the_node_and_op() {
    let missing = small_graph(|g| g.node[1].input[0] = "nowhere".into());
    let e = error_of(&missing);
    assert!(e.contains("node 'Relu_2' (op Relu)") && e.contains("'nowhere'"), "{e}");

    let unsupported = small_graph(|g| g.node[1].op_type = "Hardmax".into());
    let e = error_of(&unsupported);
    assert!(
        e.contains("node 'Relu_2' (op Hardmax)") && e.contains("unsupported"),
        "{e}"
    );

    let int_weight = small_graph(|g| {
        let w = &mut g.initializer[0];
        w.data_type = 7; // INT64
        w.raw_data = vec![0; 6 * 8];
    });
    let e = error_of(&int_weight);
    assert!(
        e.contains("node 'Conv_1' (op Conv)") && e.contains("'w'") && e.contains("INT64"),
        "{e}"
    );

    let already = small_graph(|g| g.node[1].op_type = "DequantizeLinear".into());
    let e = error_of(&already);
    assert!(
        e.contains("(op DequantizeLinear)") && e.contains("already quantized"),
        "{e}"
    );

    // Excluding the unsupported node keeps it in float instead of failing (it still runs in
    // tract only if tract knows it; here we only check planning gets past it).
    let e = quantize_model_with(
        &small_graph(|g| g.node[1].op_type = "Hardmax".into()),
        &[],
        &QuantizeOptions {
            exclude: vec!["Relu_2".into()],
            ..Default::default()
        },
        tiny_pre(),
    )
    .unwrap_err()
    .to_string();
    assert_eq!(e, "no calibration images");
}

#[test]
fn options_deny_unknown_fields() {
    let o: QuantizeOptions = serde_json::from_str(r#"{"method":"percentile","percentile":99.9}"#).unwrap();
    assert_eq!((o.method, o.percentile), (Method::Percentile, 99.9));
    assert!(serde_json::from_str::<QuantizeOptions>(r#"{"methdo":"entropy"}"#).is_err());
}

// ---------------------------------------------------------------------------------------------
// The PyTorch-style fixture (quantize/fixtures/make_pytorch_style.py): torch.onnx.export layout,
// unfolded BN, Constant nodes, a Shape → Gather → Unsqueeze → Concat → Cast chain feeding
// Resize `sizes`, no edge-seg metadata.

const FIXTURE_HW: (u32, u32) = (64, 96);

fn fixture_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/pytorch_style.onnx")
}

fn fixture() -> pb::ModelProto {
    seg_onnx::load(&fixture_path()).unwrap()
}

fn fixture_pre() -> Preprocess {
    Preprocess {
        input_hw: FIXTURE_HW,
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    }
}

/// Seeded synthetic street-like images: smooth gradients, a few flat rectangles, pixel noise.
fn synthetic_images(n: usize, seed: u64) -> Vec<RgbImage> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut next = move || rng.random::<u32>() >> 1;
    let (h, w) = FIXTURE_HW;
    (0..n)
        .map(|_| {
            let base = [next() % 256, next() % 256, next() % 256];
            let (gx, gy) = (next() % 5, next() % 5);
            let rects: Vec<[u32; 7]> = (0..4)
                .map(|_| {
                    let (x0, y0) = (next() % w, next() % h);
                    [
                        x0,
                        y0,
                        x0 + 8 + next() % 40,
                        y0 + 6 + next() % 30,
                        next() % 256,
                        next() % 256,
                        next() % 256,
                    ]
                })
                .collect();
            let mut img = RgbImage::from_fn(w, h, |x, y| {
                let mut p = [0u8; 3];
                for c in 0..3 {
                    p[c] = ((base[c] + gx * x + gy * y) % 256) as u8;
                }
                for r in &rects {
                    if (r[0]..r[2]).contains(&x) && (r[1]..r[3]).contains(&y) {
                        p = [r[4] as u8, r[5] as u8, r[6] as u8];
                    }
                }
                image::Rgb(p)
            });
            for px in img.pixels_mut() {
                for c in px.0.iter_mut() {
                    *c = c.saturating_add((next() % 9) as u8).saturating_sub(4);
                }
            }
            img
        })
        .collect()
}

#[test]
fn pytorch_fixture_prepare_folds_bn_and_keeps_the_output() {
    let model = fixture();
    assert!(
        seg_onnx::metadata(&model).is_empty(),
        "the fixture has no edge-seg metadata"
    );
    let g = model.graph.as_ref().unwrap();
    let count = |g: &pb::GraphProto, op: &str| g.node.iter().filter(|n| n.op_type == op).count();
    assert_eq!(count(g, "BatchNormalization"), 6);
    assert!(count(g, "Constant") > 0 && count(g, "Shape") > 0 && count(g, "Resize") == 2);

    let (prepared, summary) = prepare(&model).unwrap();
    let pg = prepared.graph.as_ref().unwrap();
    assert_eq!(summary.folded_bn.len(), 6, "{summary:?}");
    assert!(
        summary
            .folded_bn
            .iter()
            .any(|s| s == "/layer1/1/bn/BatchNormalization → /layer1/1/conv/Conv"),
        "{summary:?}"
    );
    assert_eq!(summary.constants_to_initializers, count(g, "Constant"), "{summary:?}");
    assert_eq!(count(pg, "BatchNormalization"), 0);
    assert_eq!(count(pg, "Constant"), 0);
    assert_eq!(count(pg, "Conv"), 7);
    // The shape chain is still there (left to tract).
    for op in ["Shape", "Gather", "Unsqueeze", "Cast", "Slice"] {
        assert_eq!(count(pg, op), count(g, op), "{op}");
    }

    let (h, w) = (FIXTURE_HW.0 as usize, FIXTURE_HW.1 as usize);
    let x = fixture_pre().tensor(&synthetic_images(1, 42)[0]);
    let x: Vec<f32> = x.to_plain_array_view::<f32>().unwrap().iter().copied().collect();
    let (a, b) = (run(&model, [1, 3, h, w], &x), run(&prepared, [1, 3, h, w], &x));
    assert_eq!(a.len(), 6 * h * w);
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
    assert!(max <= 1e-4, "max difference {max}");
    let spread = a.iter().copied().fold(f32::NEG_INFINITY, f32::max) - a.iter().copied().fold(f32::INFINITY, f32::min);
    assert!(spread > 1.0, "the fixture output should not be flat: {spread}");
}

/// Tensors computed from shapes (int64): outputs of Shape, and of Gather / Unsqueeze / Slice
/// over them and Concat / Cast of them.
fn shape_tensors(g: &pb::GraphProto) -> std::collections::BTreeSet<String> {
    let mut set = std::collections::BTreeSet::new();
    loop {
        let before = set.len();
        for n in &g.node {
            let data_from_shape = n.input.first().is_some_and(|i| set.contains(i));
            let any_from_shape = n.input.iter().any(|i| set.contains(i));
            let from_shape = match n.op_type.as_str() {
                "Shape" => true,
                "Gather" | "Unsqueeze" | "Slice" => data_from_shape,
                "Concat" | "Cast" => any_from_shape,
                _ => false,
            };
            if from_shape {
                set.extend(n.output.iter().cloned());
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

#[test]
fn pytorch_fixture_quantizes_and_agrees_with_float() {
    let model = fixture();
    // No metadata: the plain entry point refuses, the explicit one works.
    let e = quantize_model(&model, &synthetic_images(1, 1), &QuantizeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("model metadata"), "{e}");

    let calib = synthetic_images(4, 1);
    let held_out = synthetic_images(3, 2);
    let (q, report) = quantize_model_with(&model, &calib, &QuantizeOptions::default(), fixture_pre()).unwrap();
    assert_eq!(report.prepare.folded_bn.len(), 6);

    // Round trip through a file, then run in tract against the float model on held-out images.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.onnx");
    seg_onnx::save(&q, &path).unwrap();
    let q = seg_onnx::load(&path).unwrap();
    assert!(seg_onnx::metadata(&q).contains_key(META_QUANTIZATION));
    let cmp = compare_outputs(&model, &q, &held_out, fixture_pre()).unwrap();
    assert!(
        cmp.argmax_agreement >= 0.95 && cmp.sqnr_db > 15.0,
        "{cmp:?}\n{}",
        report.table()
    );

    let g = q.graph.as_ref().unwrap();
    let count = |op: &str| g.node.iter().filter(|n| n.op_type == op).count();
    assert_eq!(report.weights.len(), 7, "every conv weight is int8");
    assert_eq!(count("Conv"), 7);
    assert!(g
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .all(|n| n.input[1].ends_with("_dequantized")));
    // input, stem, layer1 (Add ×2 inputs + relu), pools, layer2/3, Resize inputs, Concat, head.
    assert!(count("QuantizeLinear") >= 12, "{}", report.table());
    assert_eq!(count("QuantizeLinear"), report.activations.len());
    for a in &report.activations {
        assert!(a.sqnr_db > 15.0, "{a:?}");
    }
    for n in g
        .node
        .iter()
        .filter(|n| matches!(n.op_type.as_str(), "Add" | "Concat" | "Resize"))
    {
        if n.op_type == "Concat" && n.input.iter().all(|i| !i.ends_with("_dequantized")) {
            continue; // the int64 size Concats
        }
        assert!(n.input[0].ends_with("_dequantized"), "{n:?}");
    }

    // The Shape → Gather → Unsqueeze → Concat → Cast chain stays int64 and unquantized.
    let shapes = shape_tensors(g);
    assert!(shapes.iter().any(|s| s.starts_with("/Cast")), "{shapes:?}");
    for n in g.node.iter().filter(|n| n.op_type == "QuantizeLinear") {
        assert!(
            !shapes.contains(&n.input[0]),
            "QuantizeLinear on the int64 tensor '{}'",
            n.input[0]
        );
    }
    let resize = g
        .node
        .iter()
        .find(|n| n.op_type == "Resize" && n.input.len() == 4)
        .unwrap();
    assert!(shapes.contains(&resize.input[3]), "Resize sizes {:?}", resize.input);
    assert!(!resize.input[3].ends_with("_dequantized"));
    assert!(!report.not_float.is_empty());
    for t in &report.not_float {
        assert!(
            shapes.contains(t),
            "'{t}' was planned, found not f32, but is not a shape tensor"
        );
    }
}

fn fixture_error(edit: impl FnOnce(&mut pb::GraphProto)) -> String {
    let mut m = fixture();
    edit(m.graph.as_mut().unwrap());
    let r = std::panic::catch_unwind(|| {
        quantize_model_with(&m, &synthetic_images(1, 3), &QuantizeOptions::default(), fixture_pre())
    });
    match r {
        Ok(Ok(_)) => panic!("the corrupt fixture quantized"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => panic!("the quantizer panicked"),
    }
}

fn node_mut<'a>(g: &'a mut pb::GraphProto, name: &str) -> &'a mut pb::NodeProto {
    g.node.iter_mut().find(|n| n.name == name).unwrap()
}

#[test]
fn corrupt_pytorch_fixtures_name_the_node_and_op() {
    // A Conv whose weight is missing.
    let e = fixture_error(|g| node_mut(g, "/layer2/conv/Conv").input[1] = "layer2.conv.gone".into());
    assert!(
        e.contains("node '/layer2/conv/Conv' (op Conv)") && e.contains("'layer2.conv.gone'"),
        "{e}"
    );

    // An unknown op between the max pool and a Conv.
    let e = fixture_error(|g| {
        let conv = g.node.iter().position(|n| n.name == "/layer2/conv/Conv").unwrap();
        let x = g.node[conv].input[0].clone();
        g.node[conv].input[0] = "/fancy/FancyOp_output_0".into();
        g.node.insert(
            conv,
            pb::NodeProto {
                name: "/fancy/FancyOp".into(),
                op_type: "FancyOp".into(),
                input: vec![x],
                output: vec!["/fancy/FancyOp_output_0".into()],
                ..Default::default()
            },
        );
    });
    assert!(
        e.contains("node '/fancy/FancyOp' (op FancyOp)") && e.contains("unsupported"),
        "{e}"
    );

    // INT64 Conv weights: one under a BN (caught while folding), one without (caught by the plan).
    let int64 = |g: &mut pb::GraphProto, name: &str| {
        let t = g.initializer.iter_mut().find(|t| t.name == name).unwrap();
        let n: i64 = t.dims.iter().product();
        *t = pb::TensorProto {
            name: t.name.clone(),
            dims: t.dims.clone(),
            data_type: 7,
            raw_data: vec![0; n as usize * 8],
            ..Default::default()
        };
    };
    let e = fixture_error(|g| int64(g, "layer3.conv.weight"));
    assert!(
        e.contains("node '/layer3/conv/Conv' (op Conv)") && e.contains("'layer3.conv.weight'") && e.contains("INT64"),
        "{e}"
    );
    let e = fixture_error(|g| int64(g, "classifier.weight"));
    assert!(
        e.contains("node '/classifier/Conv' (op Conv)") && e.contains("'classifier.weight'") && e.contains("INT64"),
        "{e}"
    );

    // BN statistics of the wrong length.
    let e = fixture_error(|g| {
        let t = g
            .initializer
            .iter_mut()
            .find(|t| t.name == "layer2.bn.running_var")
            .unwrap();
        *t = seg_onnx::tensor_f32(&t.name, &[3], &[1.0, 1.0, 1.0]);
    });
    assert!(
        e.contains("node '/layer2/bn/BatchNormalization' (op BatchNormalization)")
            && e.contains("'layer2.bn.running_var'"),
        "{e}"
    );

    // A Conv with no weight input at all (no BN after it).
    let e = fixture_error(|g| node_mut(g, "/classifier/Conv").input.truncate(1));
    assert!(
        e.contains("node '/classifier/Conv' (op Conv)") && e.contains("weight"),
        "{e}"
    );

    // Truncated protobuf bytes: a decode error, not a panic.
    let bytes = std::fs::read(fixture_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in [bytes.len() / 2, bytes.len() - 3, 17] {
        let path = dir.path().join(format!("cut{cut}.onnx"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let e = seg_onnx::load(&path).unwrap_err().to_string();
        assert!(e.contains("not a valid ONNX model"), "cut at {cut}: {e}");
    }
}

/// `x → Conv → a → HardSwish → h → Conv → b → Relu → r → HardSigmoid → y`: both layers' outputs
/// feed only float ops (MobileNetV3's pattern).
fn float_readers_graph() -> pb::ModelProto {
    let mut g = GraphBuilder::new("float_readers");
    g.input("x", &[1, 3, 6, 7]);
    g.init_f32("w1", &[4, 3, 1, 1], &ramp(12, 0.5, -0.2));
    g.init_f32("w2", &[2, 4, 1, 1], &ramp(8, 0.4, -0.1));
    let k = || ("kernel_shape", Attr::Ints(vec![1, 1]));
    g.node("Conv", &["x", "w1"], "a", &[k()]);
    g.node("HardSwish", &["a"], "h", &[]);
    g.node("Conv", &["h", "w2"], "b", &[k()]);
    g.node("Relu", &["b"], "r", &[]);
    g.node("HardSigmoid", &["r"], "y", &[]);
    g.output("y", &[1, 2, 6, 7]);
    g.finish(&BTreeMap::new())
}

/// Issue #22: for onnxruntime, a layer whose output feeds only float ops gets a QDQ pair on that
/// output (after a following Relu), so that onnxruntime can run it as an integer `QLinearConv`
/// (`DQ → Conv → Q`); in torchvision's LR-ASPP MobileNetV3 export 33 of 66 convolutions ran as
/// float Convs over dequantized weights without it, and the int8 graph was twice as slow as the
/// float one. tract's graph (QDQ runs as float there) is left as before.
#[test]
fn issue22_onnxruntime_quantizes_layer_outputs_read_by_float_ops() {
    let m = float_readers_graph();
    // per-tensor weights so that tract can run the result below
    let quantize = |target| {
        let opts = QuantizeOptions {
            target,
            per_channel: false,
            ..Default::default()
        };
        quantize_model_with(&m, &tiny_images(), &opts, tiny_pre()).unwrap().0
    };
    let q = quantize(Target::OnnxRuntime);
    let g = q.graph.as_ref().unwrap();
    let reader = |op: &str| g.node.iter().find(|n| n.op_type == op).unwrap().input[0].clone();
    assert_eq!(reader("HardSwish"), "a_dequantized");
    assert_eq!(
        reader("HardSigmoid"),
        "r_dequantized",
        "the QDQ pair goes after the Relu"
    );
    assert_eq!(reader("Relu"), "b", "nothing between the layer and its Relu");
    // each Conv's only reader is a QuantizeLinear, or the Relu before one
    for conv in g.node.iter().filter(|n| n.op_type == "Conv") {
        let readers: Vec<&str> = g
            .node
            .iter()
            .filter(|n| n.input.contains(&conv.output[0]))
            .map(|n| n.op_type.as_str())
            .collect();
        assert!(readers == ["QuantizeLinear"] || readers == ["Relu"], "{readers:?}");
    }
    // tract: only the inputs of quantized ops (QDQ runs as float there)
    let t = quantize(Target::Tract);
    let g = t.graph.as_ref().unwrap();
    assert_eq!(g.node.iter().find(|n| n.op_type == "HardSwish").unwrap().input[0], "a");
    // the two graphs compute the same function up to the added rounding (HardSigmoid outputs
    // lie in [0, 1])
    let x = ramp(3 * 6 * 7, 2.0, -1.0);
    let (qy, ty) = (run(&q, [1, 3, 6, 7], &x), run(&t, [1, 3, 6, 7], &x));
    let diff = qy.iter().zip(&ty).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff > 0.0 && diff < 0.02, "max |diff| {diff}");

    // a layer kept in float on purpose keeps a float input: x → Conv → Conv → b → Conv (last,
    // kept float) → y
    let mut g = GraphBuilder::new("kept_last");
    g.input("x", &[1, 3, 6, 7]);
    for (w, co, ci) in [("w1", 4, 3), ("w2", 4, 4), ("w3", 2, 4)] {
        g.init_f32(w, &[co, ci, 1, 1], &ramp((co * ci) as usize, 0.5, -0.2));
    }
    let k = || ("kernel_shape", Attr::Ints(vec![1, 1]));
    g.node("Conv", &["x", "w1"], "a", &[k()]);
    g.node("Conv", &["a", "w2"], "b", &[k()]);
    g.node("Conv", &["b", "w3"], "y", &[k()]);
    g.output("y", &[1, 2, 6, 7]);
    let m = g.finish(&BTreeMap::new());
    let opts = QuantizeOptions {
        target: Target::OnnxRuntime,
        keep_first_last_float: true,
        ..Default::default()
    };
    let (q, _) = quantize_model_with(&m, &tiny_images(), &opts, tiny_pre()).unwrap();
    let last = q.graph.unwrap().node.into_iter().find(|n| n.output[0] == "y").unwrap();
    assert_eq!(
        last.input[0], "b",
        "the last layer, kept in float, reads the float output"
    );
}
