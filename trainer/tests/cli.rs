//! The `edge-seg-train` binary: bad configs and inputs give one-line errors with exit code 2.

use std::path::Path;
use std::process::{Command, Output};

use seg_test_support::assert_user_error;

fn train_bin(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-seg-train"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// A CamVid-layout folder with two 40×32 frames in `train` and in `val` (two classes).
fn two_frame_camvid(root: &Path) {
    use image::{GrayImage, Luma, Rgb, RgbImage};
    for split in ["train", "val"] {
        std::fs::create_dir_all(root.join(split)).unwrap();
        std::fs::create_dir_all(root.join(format!("{split}annot"))).unwrap();
        for i in 0..2u32 {
            let name = format!("S_{i}.png");
            RgbImage::from_fn(40, 32, |x, y| Rgb([(x * 6) as u8, (y * 7 + i) as u8, 90]))
                .save(root.join(split).join(&name))
                .unwrap();
            GrayImage::from_fn(40, 32, |_, y| Luma([if y < 12 { 0 } else { 3 }]))
                .save(root.join(format!("{split}annot")).join(&name))
                .unwrap();
        }
    }
}

/// A 2-step ResNet-lite run trained in `dir/run` on [`two_frame_camvid`] data in `dir/d`.
fn tiny_run(dir: &Path) {
    two_frame_camvid(&dir.join("d"));
    let cfg = "[data]\nroot = \"d\"\ninput_size = [32, 40]\n[augment]\ncrop = [24, 24]\n\
               [model]\nwidths = [4, 8, 8, 8, 8]\nblocks = [1, 1, 1, 1]\naspp_channels = 8\nlow_channels = 4\ndecoder_channels = 8\n\
               [schedule]\niterations = 2\nbatch_size = 2\n";
    std::fs::write(dir.join("c.toml"), cfg).unwrap();
    let out = train_bin(&["train", "--config", "c.toml", "--out", "run", "--no-progress"], dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue #2: an unknown config key names the file, line and key.
#[test]
fn issue2_bad_toml_key_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "name = \"x\"\n[optim]\nlr = 0.1\nmomentun = 0.9\n",
    )
    .unwrap();
    let out = train_bin(&["train", "--config", "c.toml"], dir.path());
    assert_user_error(&out, "c.toml:4:1: unknown field `momentun`");
}

#[test]
fn issue2_inconsistent_config_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "[model]\nnum_classes = 5\n").unwrap();
    assert_user_error(
        &train_bin(&["train", "--config", "c.toml"], dir.path()),
        "model.num_classes",
    );
}

#[test]
fn issue2_missing_dataset_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(
        &train_bin(&["train", "--data", "nope", "--out", "r"], dir.path()),
        "nope",
    );
}

#[test]
fn issue2_export_of_a_missing_run_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(
        &train_bin(&["export", "--run", "norun", "--out", "m.onnx"], dir.path()),
        "norun",
    );
    assert!(!dir.path().join("m.onnx").exists());
}

/// Issue #2: train → export through the binary; the export checks parity with tract itself and
/// records it.
#[test]
fn issue2_train_then_export_records_parity() {
    let dir = tempfile::tempdir().unwrap();
    tiny_run(dir.path());
    let out = train_bin(
        &[
            "export",
            "--run",
            "run",
            "--checkpoint",
            "last",
            "--out",
            "m.onnx",
            "--record",
            "r.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(rec[0]["name"], "parity_max_abs_diff");
    let v = rec[0]["value"].as_f64().unwrap();
    assert!((0.0..=1e-4).contains(&v), "{v}");
    assert!(dir.path().join("m.onnx").exists());
}

/// Issue #21 (decoder chosen by config): `decoder = "lraspp"` trains, is saved in the run's
/// config (the default decoder is not written there, so older runs' configs compare equal) and
/// exports with candle-vs-tract parity.
#[test]
fn issue21_lraspp_decoder_trains_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    tiny_run(dir.path());
    let saved = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(!saved.contains("decoder ="), "{saved}");
    let cfg = std::fs::read_to_string(dir.path().join("c.toml"))
        .unwrap()
        .replace("[model]\n", "[model]\ndecoder = \"lraspp\"\n");
    std::fs::write(dir.path().join("lr.toml"), cfg).unwrap();
    let out = train_bin(
        &["train", "--config", "lr.toml", "--out", "lr", "--no-progress"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = std::fs::read_to_string(dir.path().join("lr/config.toml")).unwrap();
    assert!(saved.contains("decoder = \"lraspp\""), "{saved}");
    let out = train_bin(
        &["export", "--run", "lr", "--out", "lr.onnx", "--record", "r.json"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    let v = rec[0]["value"].as_f64().unwrap();
    assert!((0.0..=1e-4).contains(&v), "{v}");
}

/// Issue #21: hard example mining of the supervised loss is a config section (`[optim.ohem]`,
/// also through `--set`): a run trains with it and saves it in its config; a run without it saves
/// no `ohem` key; an out-of-range threshold is a one-line error naming the key.
#[test]
fn issue21_ohem_trains_from_a_set_flag_and_bad_values_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    tiny_run(dir.path());
    let saved = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(!saved.contains("ohem"), "{saved}");
    let out = train_bin(
        &[
            "train",
            "--config",
            "c.toml",
            "--out",
            "ohem",
            "--no-progress",
            "--set",
            "optim.ohem.thresh=0.7",
            "--set",
            "optim.ohem.min_kept=0.0625",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let saved = std::fs::read_to_string(dir.path().join("ohem/config.toml")).unwrap();
    assert!(
        saved.contains("[optim.ohem]") && saved.contains("min_kept = 0.0625"),
        "{saved}"
    );
    let metrics = std::fs::read_to_string(dir.path().join("ohem/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"loss\""), "{metrics}");
    let bad = train_bin(
        &[
            "train",
            "--config",
            "c.toml",
            "--out",
            "bad",
            "--set",
            "optim.ohem={ thresh = 1.5, min_kept = 0.1 }",
        ],
        dir.path(),
    );
    assert_user_error(&bad, "optim.ohem.thresh must be in (0, 1]");
    assert!(!dir.path().join("bad").exists());
}

/// Issue #21: `model.output_stride` is 16 or 32, and 16 only with an EfficientNet-Lite encoder;
/// anything else is a one-line error before any data is read.
#[test]
fn issue21_output_stride_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), "[model]\noutput_stride = 8\n").unwrap();
    assert_user_error(
        &train_bin(&["train", "--config", "c.toml"], dir.path()),
        "model.output_stride must be 16 or 32, not 8",
    );
    std::fs::write(dir.path().join("c.toml"), "[model]\noutput_stride = 16\n").unwrap();
    assert_user_error(
        &train_bin(&["train", "--config", "c.toml"], dir.path()),
        "model.output_stride = 16 needs an EfficientNet-Lite encoder",
    );
}

/// Issue #21 (a lean repository): `export --f16-weights` writes a smaller file whose large
/// weights are f16 behind `Cast` nodes, and reading it back gives f32 initializers under the
/// weights' own names, equal to the f32 export's up to f16 rounding.
#[test]
fn issue21_export_f16_weights_halves_the_weights_and_reads_back_as_f32() {
    let dir = tempfile::tempdir().unwrap();
    tiny_run(dir.path());
    for (out, extra) in [("f32.onnx", None), ("f16.onnx", Some("--f16-weights"))] {
        let mut args = vec!["export", "--run", "run", "--checkpoint", "last", "--out", out];
        args.extend(extra);
        let o = train_bin(&args, dir.path());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        if extra.is_some() {
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(stdout.contains("stored as f16"), "{stdout}");
        }
    }
    let raw = |f: &str| std::fs::read(dir.path().join(f)).unwrap();
    assert!(raw("f16.onnx").len() < raw("f32.onnx").len());
    let stored = {
        use prost::Message;
        seg_onnx::pb::ModelProto::decode(raw("f16.onnx").as_slice()).unwrap()
    };
    let casts = stored
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "Cast")
        .count();
    assert!(casts > 0, "no weight stored as f16");
    let (a, b) = (
        seg_onnx::load(&dir.path().join("f32.onnx")).unwrap(),
        seg_onnx::load(&dir.path().join("f16.onnx")).unwrap(),
    );
    let (ga, gb) = (a.graph.as_ref().unwrap(), b.graph.as_ref().unwrap());
    assert_eq!(ga.node.len(), gb.node.len());
    for t in ga.initializer.iter().filter(|t| t.data_type == 1) {
        let u = gb
            .initializer
            .iter()
            .find(|u| u.name == t.name)
            .expect("same initializer names");
        let (x, y) = (seg_onnx::tensor_to_f32(t).unwrap(), seg_onnx::tensor_to_f32(u).unwrap());
        assert_eq!(x.len(), y.len());
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() <= 1e-3 * p.abs().max(1e-2), "{}: {p} vs {q}", t.name);
        }
    }
}

/// Issue #25: `adabn` re-estimates the encoder's BatchNorm statistics on a folder of frames and
/// exports: the encoder's folded convolutions change, the decoder's do not; bad flags and empty
/// folders are one-line errors that write nothing.
#[test]
fn issue25_adabn_exports_new_encoder_statistics() {
    let dir = tempfile::tempdir().unwrap();
    tiny_run(dir.path());
    let ok = |out: Output| assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ok(train_bin(
        &["export", "--run", "run", "--checkpoint", "last", "--out", "m.onnx"],
        dir.path(),
    ));
    // darker, bluer frames than the training ones
    let frames = dir.path().join("new");
    std::fs::create_dir(&frames).unwrap();
    for i in 0..3u32 {
        image::RgbImage::from_fn(40, 32, |x, y| image::Rgb([(x + i) as u8, (y * 2) as u8, 200]))
            .save(frames.join(format!("f{i}.png")))
            .unwrap();
    }
    ok(train_bin(
        &[
            "adabn", "--run", "run", "--frames", "new", "--batch", "2", "--out", "a.onnx",
        ],
        dir.path(),
    ));
    let inits = |f: &str| -> std::collections::HashMap<String, Vec<f32>> {
        let m = seg_onnx::load(&dir.path().join(f)).unwrap();
        let g = m.graph.unwrap();
        g.initializer
            .iter()
            .filter(|t| t.data_type == 1)
            .map(|t| (t.name.clone(), seg_onnx::tensor_to_f32(t).unwrap()))
            .collect()
    };
    let (before, after) = (inits("m.onnx"), inits("a.onnx"));
    assert_eq!(before.len(), after.len());
    let changed = |prefix: &str| {
        before
            .iter()
            .filter(|(n, v)| n.starts_with(prefix) && after[*n] != **v)
            .count()
    };
    assert!(
        changed("encoder.") > 5,
        "the encoder's folded statistics did not change"
    );
    assert_eq!(changed("decoder."), 0, "the encoder scope changed the decoder");
    for (args, what) in [
        (vec!["--mix", "1.5"], "--mix"),
        (vec!["--batch", "0"], "--batch"),
        (vec!["--prefix", "zz"], "starting with 'zz'"),
    ] {
        let mut a = vec!["adabn", "--run", "run", "--frames", "new", "--out", "bad.onnx"];
        a.extend(args);
        assert_user_error(&train_bin(&a, dir.path()), what);
        assert!(!dir.path().join("bad.onnx").exists());
    }
    std::fs::write(frames.join("broken.png"), b"not a png").unwrap();
    assert_user_error(
        &train_bin(
            &["adabn", "--run", "run", "--frames", "new", "--out", "bad.onnx"],
            dir.path(),
        ),
        "broken.png",
    );
    assert!(!dir.path().join("bad.onnx").exists());
}

/// Issue #21: `init = "imagenet"` without the weights says how to fetch them, before any data
/// is read; with a ResNet encoder it is a config error.
#[test]
fn issue21_imagenet_init_errors_name_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "init = \"imagenet\"\n[model]\nencoder = \"efficientnet_lite0\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_edge-seg-train"))
        .args(["train", "--config", "c.toml", "--data", "no-such-data"])
        .env("EDGE_SEG_PRETRAINED_CACHE", dir.path().join("empty-cache"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_user_error(&out, "edge-seg-train fetch-pretrained --variant lite0");
    let out = train_bin(
        &["train", "--config", "c.toml", "--pretrained", "missing.pth"],
        dir.path(),
    );
    assert_user_error(&out, "--pretrained missing.pth: no such file");
    std::fs::write(dir.path().join("r.toml"), "init = \"imagenet\"\n").unwrap();
    assert_user_error(
        &train_bin(&["train", "--config", "r.toml"], dir.path()),
        "needs an EfficientNet-Lite encoder",
    );
}

/// Issue #21: a Lite0 net trains from the real ImageNet weights and exports; neither the run's
/// config nor the ONNX metadata carries the weights' local path. Needs the weights (the fetch
/// cache, as the golden test); `EDGE_SEG_REQUIRE_PRETRAINED=1` makes their absence a failure.
#[test]
fn issue21_lite0_from_imagenet_trains_and_exports_without_the_local_path() {
    use seg_nn::pretrained::{cache_dir, find_in};
    let Some(pth) = find_in(&cache_dir(), seg_nn::efficientnet::LiteVariant::Lite0) else {
        assert!(
            std::env::var_os("EDGE_SEG_REQUIRE_PRETRAINED").is_none(),
            "EDGE_SEG_REQUIRE_PRETRAINED is set but the Lite0 weights are not in the cache"
        );
        eprintln!("skipped: no efficientnet-lite0 weights (edge-seg-train fetch-pretrained)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    two_frame_camvid(&dir.path().join("d"));
    let marked = dir.path().join("weights-at-a-local-path-7f3a.pth");
    std::fs::copy(&pth, &marked).unwrap();
    let cfg = "init = \"imagenet\"\n[data]\nroot = \"d\"\ninput_size = [64, 80]\n[augment]\ncrop = [64, 64]\n\
               [model]\nencoder = \"efficientnet_lite0\"\naspp_channels = 8\nlow_channels = 4\ndecoder_channels = 8\n\
               [schedule]\niterations = 2\nbatch_size = 2\n";
    std::fs::write(dir.path().join("c.toml"), cfg).unwrap();
    let out = train_bin(
        &[
            "train",
            "--config",
            "c.toml",
            "--out",
            "run",
            "--no-progress",
            "--pretrained",
            marked.to_str().unwrap(),
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ImageNet weights loaded"));
    // the val curve starts at step 0 (issue #21)
    let evals: Vec<u64> = std::fs::read_to_string(dir.path().join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("val_miou").is_some())
        .map(|v| v["iter"].as_u64().unwrap())
        .collect();
    assert_eq!(evals, [0, 2]);
    let out = train_bin(
        &["export", "--run", "run", "--checkpoint", "last", "--out", "m.onnx"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    assert!(config.contains("init = \"imagenet\""), "{config}");
    let onnx = std::fs::read(dir.path().join("m.onnx")).unwrap();
    for bytes in [config.as_bytes(), onnx.as_slice()] {
        let marker = b"at-a-local-path-7f3a";
        assert!(
            !bytes.windows(marker.len()).any(|w| w == marker),
            "the local path leaked"
        );
    }
    // issue #21's edge student: the same run exported at a lower resolution
    let out = train_bin(
        &[
            "export",
            "--run",
            "run",
            "--checkpoint",
            "last",
            "--out",
            "s.onnx",
            "--input-size",
            "64x96",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta = seg_onnx::metadata(&seg_onnx::load(&dir.path().join("s.onnx")).unwrap());
    assert_eq!(
        (
            meta["edge_seg.input_height"].as_str(),
            meta["edge_seg.input_width"].as_str()
        ),
        ("64", "96")
    );
    let out = train_bin(
        &["export", "--run", "run", "--out", "x.onnx", "--input-size", "8x48"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--input-size"));
}

// ---------------------------------------------------------------------------------------------
// Issue #6: semi-supervised methods, a few steps each on a synthetic CamVid-layout dataset.

mod semi {
    use std::path::Path;

    use candle_core::Device;
    use edge_seg_trainer::config::TrainConfig;
    use edge_seg_trainer::{checkpoint, train};

    /// The shared synthetic CamVid ([`seg_test_support::synthetic_camvid`]): `n` train and
    /// `n / 2` val frames, plus `labeled.txt` (the first half of train) and `unlabeled.txt`.
    fn synthetic_camvid(root: &Path, n: usize) {
        seg_test_support::synthetic_camvid(root, n, n / 2);
        let list: String = (n / 2..n).map(|i| format!("SYN_{i:05}.png\n")).collect();
        std::fs::write(root.join("unlabeled.txt"), list).unwrap();
        let labeled: String = (0..n / 2).map(|i| format!("SYN_{i:05}.png\n")).collect();
        std::fs::write(root.join("labeled.txt"), labeled).unwrap();
    }

    fn tiny_config(root: &Path, method: &str, iterations: u64) -> TrainConfig {
        let mut cfg = TrainConfig {
            name: format!("semi-{method}"),
            method: method.into(),
            ..Default::default()
        };
        cfg.data.root = root.to_path_buf();
        cfg.data.train_split = root.join("labeled.txt").display().to_string();
        cfg.data.val_split = "train".into();
        cfg.data.val_prefixes = vec!["SYN_0000".into()];
        cfg.data.unlabeled_splits = vec![root.join("unlabeled.txt").display().to_string(), "val".into()];
        cfg.data.input_size = [48, 64];
        cfg.augment.crop = [32, 32];
        cfg.augment.scale_min = 0.75;
        cfg.augment.scale_max = 1.25;
        cfg.model = seg_nn::ModelConfig::tiny();
        cfg.optim.lr = 0.05;
        cfg.schedule.iterations = iterations;
        cfg.schedule.batch_size = 2;
        cfg.schedule.unlabeled_batch_size = 3;
        cfg.schedule.eval_every = 0;
        cfg.schedule.checkpoint_every = 2;
        cfg.schedule.log_every = 1;
        // small bank and chunks so that wrapping and chunking happen in a few steps
        cfg.cac.memory_bank = 40;
        cfg.cac.bank_push = 16;
        cfg.cac.negative_chunk = 24;
        cfg.cac.gamma = 0.0; // untrained nets are not confident: keep the positives
        cfg.mean_teacher.threshold = 0.0;
        cfg.w2s.threshold = 0.0; // untrained nets are not confident
        cfg
    }

    fn opts(out: &Path, resume: bool, stop_after: Option<u64>) -> train::RunOptions {
        train::RunOptions {
            out: out.to_path_buf(),
            resume,
            progress: false,
            stop_after,
            pretrained: None,
        }
    }

    fn log_records(run: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v.get("loss").is_some())
            .collect()
    }

    /// Every tensor of a checkpoint (model, momentum, method state), sorted by name.
    fn checkpoint_tensors(run: &Path) -> Vec<(String, Vec<f32>)> {
        let t = candle_core::safetensors::load(run.join("last.safetensors"), &Device::Cpu).unwrap();
        let mut v: Vec<(String, Vec<f32>)> = t
            .iter()
            // the training clock differs between two runs of the same steps
            .filter(|(k, _)| k.as_str() != "__optim__.train_seconds")
            .map(|(k, v)| {
                let v = v.to_dtype(candle_core::DType::F32).unwrap();
                (k.clone(), v.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    fn smoke(method: &str, terms: &[&str], metrics: &[&str], tweak: impl Fn(&mut TrainConfig)) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8);
        let mut cfg = tiny_config(&data, method, 4);
        tweak(&mut cfg);
        let run = dir.path().join("run");
        let s = train::run(&cfg, &opts(&run, false, None)).unwrap();
        assert_eq!(s.steps, 4);
        let recs = log_records(&run);
        assert_eq!(recs.len(), 4, "one log record per step");
        for r in &recs {
            let mut sum = 0.0;
            for t in terms {
                let v = r[*t]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{method}: term '{t}' not logged: {r}"));
                assert!(v.is_finite(), "{method}: {t} = {v}");
                sum += v;
            }
            let loss = r["loss"].as_f64().unwrap();
            assert!(
                (sum - loss).abs() < 1e-4 * loss.abs().max(1.0),
                "{method}: terms do not add up: {r}"
            );
            for m in metrics {
                let v = r[*m]
                    .as_f64()
                    .unwrap_or_else(|| panic!("{method}: metric '{m}' not logged: {r}"));
                assert!(v.is_finite(), "{method}: {m} = {v}");
            }
        }
        // the consistency part is active, not a constant zero
        let first = recs.last().unwrap()[metrics[0]].as_f64().unwrap();
        assert!(first > 0.0, "{method}: {} is {first}", metrics[0]);
        // the resolved config keeps the method's section
        let saved = checkpoint::load_config(&run).unwrap();
        assert_eq!(saved, cfg);
    }

    #[test]
    fn issue6_cac_smoke() {
        smoke(
            "cac",
            &["ce", "dc"],
            &["dc_raw", "dc_positive_ratio", "dc_negatives"],
            |_| {},
        );
    }

    #[test]
    fn issue6_cac_ablations_smoke() {
        smoke("cac", &["ce", "dc"], &["dc_raw"], |c| {
            c.cac.projector = false;
            c.cac.directional = false;
            c.cac.negative_sampling = false;
            c.cac.positive_filter = false;
            c.cac.iou_range = [1.0, 1.0];
            c.cac.memory_bank = 0;
        });
    }

    #[test]
    fn issue6_cps_smoke() {
        smoke(
            "cps",
            &["sup1", "sup2", "cps"],
            &["cps_raw", "cps_unlabeled_raw"],
            |_| {},
        );
        smoke("cps", &["sup1", "sup2", "cps"], &["cps_raw"], |c| {
            c.cps.cutmix = false;
            c.cps.on_labeled = false;
        });
    }

    #[test]
    fn issue6_mean_teacher_and_dars_smoke() {
        smoke("mean_teacher", &["ce", "unsup"], &["unsup_raw", "mask_ratio"], |_| {});
        smoke("mean_teacher", &["ce", "unsup"], &["mask_ratio"], |c| {
            c.mean_teacher.dars = true;
            c.mean_teacher.dars_ratio = 0.5;
        });
    }

    #[test]
    fn issue25_w2s_smoke() {
        smoke(
            "w2s",
            &["ce", "strong", "fp"],
            &["strong_raw", "fp_raw", "mask_ratio"],
            |_| {},
        );
        smoke("w2s", &["ce", "strong", "fp"], &["strong_raw"], |c| {
            c.w2s.cutmix = false;
            c.w2s.weight_fp = 0.0;
        });
        // the confidence threshold gates the pseudo-labels: nothing passes 1.0 on 11 classes
        // of an untrained net
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8);
        let mut cfg = tiny_config(&data, "w2s", 2);
        cfg.w2s.threshold = 1.0;
        train::run(&cfg, &opts(&dir.path().join("run"), false, None)).unwrap();
        for r in log_records(&dir.path().join("run")) {
            assert_eq!(r["mask_ratio"].as_f64(), Some(0.0), "{r}");
            assert_eq!(r["strong_raw"].as_f64(), Some(0.0), "{r}");
        }
    }

    /// Issue #25's xseq-target split: the drive's first frames become target frames, the rest
    /// evaluation frames (disjoint, in name order), and each oracle list is its labeled list
    /// plus the target frames; bad requests are one-line errors.
    #[test]
    fn issue25_target_split_is_disjoint_and_oracles_extend_the_labeled_lists() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8); // train SYN_00000..SYN_00007
        let mut cfg = TrainConfig::default().data;
        cfg.root = data.clone();
        let lab = dir.path().join("splits/1_4/seed3/labeled.txt");
        std::fs::create_dir_all(lab.parent().unwrap()).unwrap();
        std::fs::write(&lab, "OTHER_1.png\nOTHER_2.png\n").unwrap();
        let out = dir.path().join("target");
        let (t, e) =
            edge_seg_trainer::split::target(&cfg, "train", "SYN_", 3, std::slice::from_ref(&lab), &out).unwrap();
        assert_eq!((t, e), (3, 5));
        let read =
            |p: &Path| -> Vec<String> { std::fs::read_to_string(p).unwrap().lines().map(String::from).collect() };
        let target = read(&out.join("target.txt"));
        let eval = read(&out.join("eval.txt"));
        assert_eq!(target, ["SYN_00000.png", "SYN_00001.png", "SYN_00002.png"]);
        assert_eq!(eval.len(), 5);
        assert!(eval.iter().all(|n| !target.contains(n)));
        assert_eq!(
            read(&out.join("oracle/1_4/seed3/labeled.txt")),
            [
                "OTHER_1.png",
                "OTHER_2.png",
                "SYN_00000.png",
                "SYN_00001.png",
                "SYN_00002.png"
            ]
        );
        // every frame of the drive as target leaves nothing to evaluate
        let err = edge_seg_trainer::split::target(&cfg, "train", "SYN_", 8, &[], &out).unwrap_err();
        assert!(format!("{err:#}").contains("--adapt 8"), "{err:#}");
        // a labeled list that already holds a frame of the target drive is refused
        std::fs::write(&lab, "SYN_00004.png\n").unwrap();
        let err =
            edge_seg_trainer::split::target(&cfg, "train", "SYN_", 3, std::slice::from_ref(&lab), &out).unwrap_err();
        assert!(format!("{err:#}").contains("belongs to the target drive"), "{err:#}");
    }

    /// Issue #25: with `init = "imagenet"` CPS's second network starts from the ImageNet
    /// encoder too (only the heads differ), as in the paper. Needs the Lite0 weights in the
    /// fetch cache (`EDGE_SEG_REQUIRE_PRETRAINED=1` makes their absence a failure).
    #[test]
    fn issue25_cps_second_network_starts_from_imagenet() {
        use candle_nn::{VarBuilder, VarMap};
        use edge_seg_trainer::methods::{self, MethodInit};
        use seg_nn::pretrained::{cache_dir, find_in};
        let Some(pth) = find_in(&cache_dir(), seg_nn::efficientnet::LiteVariant::Lite0) else {
            assert!(
                std::env::var_os("EDGE_SEG_REQUIRE_PRETRAINED").is_none(),
                "EDGE_SEG_REQUIRE_PRETRAINED is set but the Lite0 weights are not in the cache"
            );
            eprintln!("skipped: no efficientnet-lite0 weights (edge-seg-train fetch-pretrained)");
            return;
        };
        let mut cfg = TrainConfig {
            method: "cps".into(),
            init: edge_seg_trainer::config::ModelInit::Imagenet,
            ..Default::default()
        };
        cfg.model.encoder = seg_nn::EncoderKind::EfficientnetLite0;
        cfg.model.aspp_channels = 8;
        cfg.model.low_channels = 4;
        cfg.model.decoder_channels = 8;
        let vars = VarMap::new();
        seg_nn::SegModel::new(
            &cfg.model,
            VarBuilder::from_varmap(&vars, candle_core::DType::F32, &Device::Cpu),
        )
        .unwrap();
        seg_nn::init::reseed(&vars, 0).unwrap();
        seg_nn::pretrained::load_into(&vars, &pth).unwrap();
        let freqs = vec![1.0 / 11.0; 11];
        let init = MethodInit {
            cfg: &cfg,
            model_vars: &vars,
            device: &Device::Cpu,
            class_frequencies: &freqs,
            pretrained: Some(&pth),
        };
        let cps = methods::build("cps", &init).unwrap().unwrap();
        let net2: std::collections::HashMap<String, candle_core::Tensor> = cps.state().unwrap().into_iter().collect();
        let (mut same_encoder, mut same_rest, mut rest) = (0, 0, 0);
        for (name, v) in vars.data().lock().unwrap().iter() {
            let a = v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let b = net2[&format!("net2.{name}")]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            if name.starts_with("encoder.") {
                assert_eq!(a, b, "net2 '{name}' is not the ImageNet tensor");
                same_encoder += 1;
            } else if name.ends_with(".weight") && !name.contains("bn") {
                rest += 1;
                same_rest += (a == b) as usize;
            }
        }
        assert!(same_encoder > 100, "{same_encoder} encoder tensors");
        assert!(
            rest > 0 && same_rest == 0,
            "{same_rest} of {rest} head weights equal the model's"
        );
    }

    /// A stopped-and-resumed run equals an uninterrupted one, method state (teacher, second
    /// network, projector and bank) and its momentum included.
    #[test]
    fn issue6_resume_with_method_state_reproduces_an_uninterrupted_run() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8);
        for (method, has_state) in [("mean_teacher", true), ("cps", true), ("cac", true), ("w2s", false)] {
            let mut cfg = tiny_config(&data, method, 5);
            cfg.mean_teacher.dars = true;
            cfg.mean_teacher.dars_ratio = 0.3;
            let full = dir.path().join(format!("{method}-full"));
            train::run(&cfg, &opts(&full, false, None)).unwrap();
            let half = dir.path().join(format!("{method}-half"));
            train::run(&cfg, &opts(&half, false, Some(2))).unwrap();
            let stopped = checkpoint_tensors(&half);
            let (_, _, _, stopped_s) =
                checkpoint::load_with_state(&half.join("last.safetensors"), &candle_nn::VarMap::new(), &Device::Cpu)
                    .unwrap();
            assert!(stopped_s > 0.0, "{method}: no training time in the checkpoint");
            train::run(&cfg, &opts(&half, true, None)).unwrap();
            // issue #24: the resumed piece continues the clock
            let resumed_s = log_records(&half).last().unwrap()["elapsed_s"].as_f64().unwrap();
            assert!(
                resumed_s > stopped_s,
                "{method}: elapsed_s {resumed_s} <= {stopped_s} after resume"
            );
            let (a, b) = (checkpoint_tensors(&full), checkpoint_tensors(&half));
            let names: Vec<&String> = a.iter().map(|(n, _)| n).collect();
            let state = names.iter().filter(|n| n.starts_with("__method__.")).count();
            assert_eq!(
                state > 0,
                has_state,
                "{method}: {state} method-state tensors in the checkpoint"
            );
            assert_ne!(stopped, a, "{method}: the stopped run already equals the full one");
            assert_eq!(a.len(), b.len(), "{method}");
            for ((na, va), (nb, vb)) in a.iter().zip(&b) {
                assert_eq!(na, nb);
                assert_eq!(va, vb, "{method}: '{na}' differs after resume");
            }
        }
    }

    /// Distillation (the edge student of issue #4): a tiny teacher is trained, then a narrower
    /// student learns from it; both terms are logged and add up, the KD term is live, and a
    /// missing or incompatible teacher is a clear error.
    #[test]
    fn issue4_distilled_student_learns_from_its_teacher() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8);
        let teacher_run = dir.path().join("teacher");
        let teacher_cfg = tiny_config(&data, "supervised", 4);
        train::run(&teacher_cfg, &opts(&teacher_run, false, None)).unwrap();

        let mut cfg = tiny_config(&data, "distill", 4);
        cfg.model.widths = [8, 8, 8, 16, 16];
        cfg.model.decoder_channels = 8;
        cfg.distill.teacher = teacher_run.join("last.safetensors");
        cfg.distill.temperature = 2.0;
        let run = dir.path().join("student");
        let s = train::run(&cfg, &opts(&run, false, None)).unwrap();
        assert_eq!(s.steps, 4);
        let recs = log_records(&run);
        assert_eq!(recs.len(), 4);
        for r in &recs {
            let (ce, kd, loss) = (
                r["ce"].as_f64().unwrap(),
                r["kd"].as_f64().unwrap(),
                r["loss"].as_f64().unwrap(),
            );
            assert!(ce.is_finite() && kd > 0.0 && kd.is_finite(), "{r}");
            assert!((ce + kd - loss).abs() < 1e-4 * loss.max(1.0), "{r}");
        }
        assert_eq!(checkpoint::load_config(&run).unwrap(), cfg);

        // no teacher, a missing file, other classes: errors that name the teacher
        let mut bad = cfg.clone();
        bad.distill.teacher = Default::default();
        assert!(bad.validate().unwrap_err().contains("distill.teacher"));
        bad.distill.teacher = dir.path().join("nowhere/last.safetensors");
        let e = format!(
            "{:#}",
            train::run(&bad, &opts(&dir.path().join("s2"), false, None)).unwrap_err()
        );
        assert!(e.contains("distill.teacher") && e.contains("nowhere"), "{e}");
        let mut other = teacher_cfg.clone();
        other.data.mean = [0.5, 0.5, 0.5];
        checkpoint::save_config(&teacher_run, &other).unwrap();
        let e = format!(
            "{:#}",
            train::run(&cfg, &opts(&dir.path().join("s3"), false, None)).unwrap_err()
        );
        assert!(e.contains("other classes or normalisation"), "{e}");
    }

    /// Issue #27: every config the repository ships (trainer/configs/*.toml) parses and passes
    /// validation, so a user's first `train --config` fails on nothing but their data.
    #[test]
    fn issue27_every_shipped_config_loads_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let cfg: TrainConfig = seg_core::config::load_toml(&path).unwrap_or_else(|e| panic!("{e}"));
                cfg.validate().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert!(n >= 20, "only {n} configs found in {}", dir.display());
    }

    /// Every logged step of a distillation run with KD on labeled and unlabeled frames: both KD
    /// terms positive and finite, and with the cross-entropy they make up the loss.
    fn assert_kd_terms_add_up(run: &Path) {
        for r in log_records(run) {
            let (ce, kd, kdu, loss) = (
                r["ce"].as_f64().unwrap(),
                r["kd"].as_f64().unwrap(),
                r["kd_u"].as_f64().unwrap(),
                r["loss"].as_f64().unwrap(),
            );
            assert!(kd > 0.0 && kdu > 0.0 && kdu.is_finite(), "{r}");
            assert!((ce + kd + kdu - loss).abs() < 1e-4 * loss.max(1.0), "{r}");
        }
    }

    /// Issue #27: an ONNX teacher (the teacher run exported) teaches as its checkpoint does — the
    /// first step's KD term is the same when the crop is the export's input size —, a smaller crop
    /// runs through the padded canvas, the unlabeled, feature and pair-wise terms are logged and
    /// add up, the adaptor (teacher width × student width) is kept in the checkpoint, and
    /// misconfigured teachers are errors that name the setting.
    #[test]
    fn issue27_onnx_teacher_and_the_distillation_terms() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8);
        let mut teacher_cfg = tiny_config(&data, "supervised", 4);
        teacher_cfg.augment.crop = [48, 64]; // the input size: the ONNX teacher needs no canvas
        let teacher_run = dir.path().join("teacher");
        train::run(&teacher_cfg, &opts(&teacher_run, false, None)).unwrap();
        let (tcfg, _vars, model) = edge_seg_trainer::export::load_model(&teacher_run, "last").unwrap();
        let onnx = dir.path().join("teacher.onnx");
        edge_seg_trainer::export::export(&model, &tcfg, &onnx).unwrap();

        let mut cfg = tiny_config(&data, "distill", 2);
        cfg.augment.crop = [48, 64];
        cfg.model.widths = [8, 8, 8, 16, 16];
        cfg.model.decoder_channels = 8;
        cfg.distill.teacher = teacher_run.join("last.safetensors");
        let first_kd = |run: &Path| log_records(run)[0]["kd_raw"].as_f64().unwrap();
        let from_ckpt = dir.path().join("s_ckpt");
        train::run(&cfg, &opts(&from_ckpt, false, None)).unwrap();
        let mut onnx_cfg = cfg.clone();
        onnx_cfg.distill.teacher = onnx.clone();
        let from_onnx = dir.path().join("s_onnx");
        train::run(&onnx_cfg, &opts(&from_onnx, false, None)).unwrap();
        let (a, b) = (first_kd(&from_ckpt), first_kd(&from_onnx));
        // the export's output is the stride-4 scores upsampled to the input; resampled back to
        // stride 4 they are slightly blurred (0.65 % on this KD term), nothing more
        assert!(
            a > 0.0 && (a - b).abs() < 0.02 * a,
            "KD from the checkpoint {a} vs from its ONNX {b}"
        );

        // a crop smaller than the export's input: the padded canvas; and KD on unlabeled frames
        let mut small = onnx_cfg.clone();
        small.augment.crop = [32, 32];
        small.distill.unlabeled_weight = 0.5;
        let run = dir.path().join("s_small");
        train::run(&small, &opts(&run, false, None)).unwrap();
        assert_kd_terms_add_up(&run);

        // feature (cosine) and pair-wise terms from the checkpoint teacher; the adaptor's state
        let mut feat = cfg.clone();
        feat.distill.feature_weight = 0.5;
        feat.distill.feature_loss = seg_nn::loss::FeatureLoss::Cosine;
        feat.distill.affinity_weight = 2.0;
        feat.distill.affinity_positions = 16;
        let run = dir.path().join("s_feat");
        train::run(&feat, &opts(&run, false, None)).unwrap();
        for r in log_records(&run) {
            let terms: f64 = ["ce", "kd", "feat", "pair"]
                .iter()
                .map(|k| r[*k].as_f64().unwrap())
                .sum();
            assert!(
                r["feat"].as_f64().unwrap() > 0.0 && r["pair"].as_f64().unwrap() > 0.0,
                "{r}"
            );
            assert!(
                (terms - r["loss"].as_f64().unwrap()).abs() < 1e-4 * terms.max(1.0),
                "{r}"
            );
        }
        let t = candle_core::safetensors::load(run.join("last.safetensors"), &Device::Cpu).unwrap();
        let w = t
            .get("__method__.distill.adaptor.weight")
            .expect("the adaptor is in the checkpoint");
        assert_eq!(w.dims(), &[tcfg.model.decoder_channels, 8]);
        assert_eq!(
            t["__method__.distill.adaptor.bias"].dims(),
            &[tcfg.model.decoder_channels]
        );
        // resumed from step 1, the same weights as the uninterrupted run
        let half = dir.path().join("s_feat_half");
        train::run(&feat, &opts(&half, false, Some(1))).unwrap();
        train::run(&feat, &opts(&half, true, None)).unwrap();
        assert_eq!(checkpoint_tensors(&run), checkpoint_tensors(&half));

        // errors that name the setting
        let mut bad = onnx_cfg.clone();
        bad.distill.feature_weight = 1.0;
        assert!(bad.validate().unwrap_err().contains("checkpoint teacher"));
        let mut bad = cfg.clone();
        bad.distill.teacher_mean = Some([0.5; 3]);
        assert!(bad.validate().unwrap_err().contains("teacher_mean"));
        let mut other = onnx_cfg.clone();
        other.data.classes = seg_core::classes::ClassTable::parse(
            &(0..11).map(|i| format!("c{i}")).collect::<Vec<_>>().join(","),
            &["0,0,0"; 11].join(";"),
        )
        .unwrap();
        let e = format!(
            "{:#}",
            train::run(&other, &opts(&dir.path().join("s_cls"), false, None)).unwrap_err()
        );
        assert!(e.contains("distill.teacher") && e.contains("classes"), "{e}");
        // a foreign ONNX (no edge-seg metadata) needs its normalisation
        let mut proto = seg_onnx::load(&onnx).unwrap();
        proto.metadata_props.clear();
        let foreign = dir.path().join("foreign.onnx");
        seg_onnx::save(&proto, &foreign).unwrap();
        let mut f = onnx_cfg.clone();
        f.distill.teacher = foreign;
        let e = format!(
            "{:#}",
            train::run(&f, &opts(&dir.path().join("s_for"), false, None)).unwrap_err()
        );
        assert!(e.contains("teacher_mean"), "{e}");
        f.distill.teacher_mean = Some(tcfg.data.mean);
        f.distill.teacher_std = Some(tcfg.data.std);
        let run = dir.path().join("s_for2");
        train::run(&f, &opts(&run, false, None)).unwrap();
        assert!(
            (first_kd(&run) - b).abs() < 1e-6 * b.max(1e-3),
            "the same teacher through explicit normalisation"
        );
    }

    /// Issue #27, `teacher_view = "frame"`: the teacher scores every whole frame once at its own
    /// input size and each crop reads its region. With crops that are the whole frame (no scale,
    /// flip or jitter) that is what the teacher says about the crop itself: the same KD terms as
    /// `crop`. A student at half the teacher's scale with flips trains on it, resumably.
    #[test]
    fn issue27_frame_view_reads_each_crop_from_the_teachers_whole_frame_scores() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8);
        let teacher_run = dir.path().join("teacher");
        train::run(&tiny_config(&data, "supervised", 4), &opts(&teacher_run, false, None)).unwrap();

        let mut cfg = tiny_config(&data, "distill", 2);
        cfg.model.widths = [8, 8, 8, 16, 16];
        cfg.model.decoder_channels = 8;
        cfg.distill.teacher = teacher_run.join("last.safetensors");
        cfg.distill.unlabeled_weight = 0.5;
        cfg.augment = seg_core::data::augment::AugmentConfig::identity([48, 64]);
        let crop_run = dir.path().join("s_crop");
        train::run(&cfg, &opts(&crop_run, false, None)).unwrap();
        let mut frame = cfg.clone();
        frame.distill.teacher_view = edge_seg_trainer::methods::distill::TeacherView::Frame;
        let frame_run = dir.path().join("s_frame");
        train::run(&frame, &opts(&frame_run, false, None)).unwrap();
        for key in ["kd_raw", "kd_unlabeled_raw"] {
            let (a, b) = (
                log_records(&crop_run)[0][key].as_f64().unwrap(),
                log_records(&frame_run)[0][key].as_f64().unwrap(),
            );
            assert!(
                a > 0.0 && (a - b).abs() < 1e-4 * a,
                "{key}: crop view {a}, frame view {b}"
            );
        }

        // a student at half the teacher's scale, random scales and flips
        let mut small = frame.clone();
        small.augment = seg_core::data::augment::AugmentConfig {
            base_size: Some([24, 32]),
            scale_min: 0.75,
            scale_max: 1.5,
            crop: [16, 16],
            hflip: true,
            ..seg_core::data::augment::AugmentConfig::identity([16, 16])
        };
        small.data.input_size = [24, 32];
        small.schedule.iterations = 3;
        let run = dir.path().join("s_small");
        train::run(&small, &opts(&run, false, None)).unwrap();
        assert_kd_terms_add_up(&run);
        let half = dir.path().join("s_small_half");
        train::run(&small, &opts(&half, false, Some(1))).unwrap();
        train::run(&small, &opts(&half, true, None)).unwrap();
        assert_eq!(checkpoint_tensors(&run), checkpoint_tensors(&half));

        let mut bad = frame.clone();
        bad.distill.feature_weight = 1.0;
        assert!(bad.validate().unwrap_err().contains("teacher_view"));
    }

    /// The tag file of the synthetic unlabeled images (`unlabeled.txt` and `val`): every frame
    /// shows sky (top), road (bottom) and a car box.
    fn synthetic_tags(root: &Path, n: usize) -> std::path::PathBuf {
        let names = (n / 2..n).chain(0..n / 2);
        let text: String = names.map(|i| format!("SYN_{i:05}: Sky road 8\n")).collect();
        let path = root.join("tags.txt");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The shared setup of the tag-trained methods: 8 synthetic frames (4 labeled, 4 unlabeled
    /// with tags, val's 4 tagged too, `SYN_00000` the only validation frame) and a tiny config
    /// of `method` that reads the tag file. Returns the temp dir, the data root and the config.
    fn tagged_setup(method: &str, iterations: u64) -> (tempfile::TempDir, std::path::PathBuf, TrainConfig) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 8);
        let tags = synthetic_tags(&data, 8);
        let mut cfg = tiny_config(&data, method, iterations);
        cfg.data.val_prefixes = vec!["SYN_00000".into()];
        cfg.data.tag_file = Some(tags);
        (dir, data, cfg)
    }

    /// Issue #26: the cam method learns from the tags of the unlabeled images and never reads
    /// their masks — they are replaced by bytes that no image decoder accepts, and training
    /// (classification warm-up, then CAM pseudo-labels refined by PAR) runs through.
    #[test]
    fn issue26_cam_trains_from_tags_without_reading_their_masks() {
        let (dir, data, mut cfg) = tagged_setup("cam", 4);
        for i in 0..4 {
            std::fs::write(data.join(format!("trainannot/SYN_{:05}.png", 4 + i)), b"not a mask").unwrap();
            std::fs::write(data.join(format!("valannot/SYN_{i:05}.png")), b"not a mask").unwrap();
        }
        cfg.cam.warmup_iterations = 2;
        cfg.cam.weight_seg = 0.5;
        let run = dir.path().join("run");
        let s = train::run(&cfg, &opts(&run, false, None)).unwrap();
        assert_eq!(s.steps, 4);
        let recs = log_records(&run);
        assert_eq!(recs.len(), 4);
        for (k, r) in recs.iter().enumerate() {
            let terms: f64 = ["ce", "cls", "seg"].iter().map(|t| r[*t].as_f64().unwrap()).sum();
            let loss = r["loss"].as_f64().unwrap();
            assert!((terms - loss).abs() < 1e-4 * loss.max(1.0), "{r}");
            assert!(r["cls_bce"].as_f64().unwrap() > 0.0, "{r}");
            if k < 2 {
                assert_eq!(r["seg"].as_f64(), Some(0.0), "warm-up: {r}");
            } else {
                // each tagged class's CAM peaks at 1 after normalisation, so pseudo-labels exist
                let cover = r["pseudo_coverage"].as_f64().unwrap();
                assert!(cover > 0.0 && cover <= 1.0, "{r}");
                assert!(r["seg"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
        // the head is method state, saved with the checkpoint
        let t = candle_core::safetensors::load(run.join("last.safetensors"), &Device::Cpu).unwrap();
        assert!(t.keys().any(|k| k.ends_with("method.cam.cam.weight")), "{:?}", t.keys());
        assert_eq!(checkpoint::load_config(&run).unwrap(), cfg);
        // cam-labels scores the head's multi-scale, mirrored CAMs against intact masks
        let opts_cam = edge_seg_trainer::weak::CamLabelOptions {
            scales: vec![1.0, 0.5],
            min_pixels: 1,
            ..Default::default()
        };
        let labeled = data.join("labeled.txt");
        let split = labeled.to_str().unwrap();
        let score = |o: &edge_seg_trainer::weak::CamLabelOptions| {
            edge_seg_trainer::weak::cam_labels(&run, "last", None, split, None, o)
        };
        let r = score(&opts_cam).unwrap();
        assert_eq!(r.images, 4);
        assert!(r.coverage.0 > 0.0 && r.coverage.0 <= 1.0, "{:?}", r.coverage);
        assert!(r.coverage.1 > 0.0 && r.coverage.1 <= 1.0, "{:?}", r.coverage);
        // sky, road and car are in every frame: no class is teachable from these tags
        assert!(r.teachable.iter().all(|t| !t));
        let recs = r.records("cam_pseudo", split);
        let names: Vec<&str> = recs.iter().map(|r| r.name.as_str()).collect();
        assert!(names.contains(&"cam_pseudo_labeled_miou") && names.contains(&"cam_pseudo_refined_labeled_miou"));
        // nothing is teachable: no teachable-class mean is recorded (it used to be written as 0)
        assert!(!names.iter().any(|n| n.contains("teachable")), "{names:?}");
        assert!(r.table().contains("no teachable class"), "{}", r.table());
        assert!(recs.iter().all(|r| r.value.is_finite()));
        // --no-par: the same thresholded maps, and the refined columns are those maps
        let plain = score(&edge_seg_trainer::weak::CamLabelOptions {
            no_par: true,
            ..opts_cam.clone()
        })
        .unwrap();
        assert_eq!(plain.raw, r.raw);
        assert_eq!(plain.refined, plain.raw);
        assert_eq!(plain.coverage, (r.coverage.0, r.coverage.0));
        // a supervised run has no CAM head; bad scales are refused
        let e = score(&edge_seg_trainer::weak::CamLabelOptions {
            scales: vec![3.0],
            ..Default::default()
        });
        assert!(format!("{:#}", e.unwrap_err()).contains("--scales"));
        let mut sup = tiny_config(&data, "supervised", 1);
        sup.data.unlabeled_splits.clear();
        sup.data.val_prefixes = vec!["SYN_00000".into()];
        let sup_run = dir.path().join("sup");
        train::run(&sup, &opts(&sup_run, false, None)).unwrap();
        let e = edge_seg_trainer::weak::cam_labels(&sup_run, "last", None, split, None, &opts_cam).unwrap_err();
        assert!(format!("{e:#}").contains("has no CAM head"), "{e:#}");
        // the method demands tags
        cfg.data.tag_file = None;
        let e = train::run(&cfg, &opts(&dir.path().join("r2"), false, None)).unwrap_err();
        assert!(format!("{e:#}").contains("data.tag_file"), "{e:#}");
    }

    /// Issue #26, CAC with extra tags (§3.5): pseudo-labels of some unlabeled images (written by
    /// `cam-labels --write` from the tags through a CAM head) train an auxiliary classifier on both
    /// crops from the first step, while L_dc waits for its warm-up; the terms add up; C_w is method
    /// state (resumed exactly), not a model weight; bad pseudo-label files are one-line errors.
    #[test]
    fn issue26_cac_with_extra_tags_learns_the_pseudo_labels() {
        // a CAM head from the tags, then its refined pseudo-labels of the tagged images
        let (dir, data, mut cam) = tagged_setup("cam", 3);
        cam.cam.warmup_iterations = 1;
        let cam_run = dir.path().join("cam");
        train::run(&cam, &opts(&cam_run, false, None)).unwrap();
        let pseudo = dir.path().join("pseudo");
        let unlabeled = data.join("unlabeled.txt");
        let write_opts = edge_seg_trainer::weak::CamLabelOptions {
            scales: vec![1.0],
            write: Some(pseudo.clone()),
            ..Default::default()
        };
        // tag-only images have no mask: they are labelled, not scored
        for i in 4..8 {
            std::fs::remove_file(data.join(format!("trainannot/SYN_{i:05}.png"))).unwrap();
        }
        let split = unlabeled.to_str().unwrap();
        let tags4 = data.join("tags4.txt");
        let text: String = (4..8).map(|i| format!("SYN_{i:05}: Sky road 8\n")).collect();
        std::fs::write(&tags4, text).unwrap();
        let tags = tags4;
        let r = edge_seg_trainer::weak::cam_labels(&cam_run, "last", None, split, Some(&tags), &write_opts).unwrap();
        assert_eq!((r.images, r.scored), (4, 0));
        for i in 4..8 {
            let png = image::open(pseudo.join(format!("SYN_{i:05}.png"))).unwrap();
            let image::DynamicImage::ImageLuma8(map) = png else {
                panic!("not 8-bit grey")
            };
            assert_eq!(map.dimensions(), (64, 48));
            assert!(map.as_raw().iter().all(|&v| v < 11 || v == 255));
            assert!(
                map.as_raw().iter().any(|&v| v < 11),
                "image {i}: no pseudo-label at all"
            );
        }
        assert!(
            !dir.path().join("pseudo.partial").exists(),
            "the staging folder is renamed"
        );
        // a rerun may write into its own folder, never into a foreign one (the dataset's masks)
        edge_seg_trainer::weak::cam_labels(&cam_run, "last", None, split, Some(&tags), &write_opts).unwrap();
        let foreign = edge_seg_trainer::weak::CamLabelOptions {
            write: Some(data.join("valannot")),
            ..write_opts.clone()
        };
        let e = edge_seg_trainer::weak::cam_labels(&cam_run, "last", None, split, Some(&tags), &foreign).unwrap_err();
        assert!(format!("{e:#}").contains("did not write"), "{e:#}");

        // CAC with the pseudo-labels of the 4 tagged images (val's 4 stay unlabeled only)
        let mut cfg = tiny_config(&data, "cac", 4);
        cfg.data.val_prefixes = vec!["SYN_00000".into()];
        cfg.cac.warmup_iterations = 2;
        cfg.cac.tag_weight = 0.5;
        cfg.data.pseudo_labels = Some(pseudo.clone());
        // the thresholds cam-labels applies to this run's maps: a 4-step net is not confident
        cfg.cam.high = 0.05;
        cfg.cam.low = 0.0;
        let run = dir.path().join("run");
        train::run(&cfg, &opts(&run, false, None)).unwrap();
        let recs = log_records(&run);
        assert_eq!(recs.len(), 4);
        for (k, r) in recs.iter().enumerate() {
            let terms: f64 = ["ce", "tag", "dc"].iter().map(|t| r[*t].as_f64().unwrap()).sum();
            let loss = r["loss"].as_f64().unwrap();
            assert!((terms - loss).abs() < 1e-4 * loss.max(1.0), "{r}");
            let raw = r["tag_raw"].as_f64().unwrap();
            assert!(
                (r["tag"].as_f64().unwrap() - 0.5 * raw).abs() < 1e-5 * raw.max(1.0),
                "{r}"
            );
            if k < 2 {
                assert_eq!(r["dc"].as_f64(), Some(0.0), "warm-up: {r}");
            } else {
                assert!(r["dc_raw"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
        // some step drew a tagged image: the term is live
        assert!(recs.iter().any(|r| r["tag_raw"].as_f64().unwrap() > 0.0));
        assert!(recs.iter().any(|r| r["tag_coverage"].as_f64().unwrap() > 0.0));
        let t = checkpoint_tensors(&run);
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("__method__.") && n.ends_with("aux.weight")),
            "{names:?}"
        );
        assert!(
            !names.iter().any(|n| !n.starts_with("__") && n.contains("aux")),
            "C_w is not a model weight"
        );
        assert_eq!(checkpoint::load_config(&run).unwrap(), cfg);
        // resume: C_w and its momentum come back exactly
        let half = dir.path().join("half");
        train::run(&cfg, &opts(&half, false, Some(2))).unwrap();
        train::run(&cfg, &opts(&half, true, None)).unwrap();
        assert_eq!(checkpoint_tensors(&half), t);

        // pseudo-labels from any run's segmentation output (a cac run has no CAM head), still
        // restricted to the tags (Sky, Road, Pedestrian = 0, 3, 8)
        let seg_opts = edge_seg_trainer::weak::CamLabelOptions {
            source: edge_seg_trainer::weak::LabelSource::Segmentation,
            write: Some(dir.path().join("pseudo_seg")),
            ..write_opts.clone()
        };
        let e = edge_seg_trainer::weak::cam_labels(&run, "last", None, split, Some(&tags), &write_opts).unwrap_err();
        assert!(format!("{e:#}").contains("has no CAM head"), "{e:#}");
        let r = edge_seg_trainer::weak::cam_labels(&run, "last", None, split, Some(&tags), &seg_opts).unwrap();
        assert_eq!(r.images, 4);
        let mut seen = std::collections::BTreeSet::new();
        for i in 4..8 {
            let map = image::open(dir.path().join(format!("pseudo_seg/SYN_{i:05}.png")))
                .unwrap()
                .to_luma8();
            seen.extend(map.as_raw().iter().copied());
        }
        assert!(
            seen.iter().all(|v| [0, 3, 8, 255].contains(v)),
            "untagged classes labelled: {seen:?}"
        );
        assert!(seen.iter().any(|&v| v != 255), "no pseudo-label at all: {seen:?}");
        // segmentation-max: each tagged class's map over its own maximum, so tagged classes
        // label the pixels where they peak, however unsure this 4-step net is (not necessarily
        // all: classes that peak on the same cell tie, and the lower class id takes it)
        let max_opts = edge_seg_trainer::weak::CamLabelOptions {
            source: edge_seg_trainer::weak::LabelSource::SegmentationMax,
            write: Some(dir.path().join("pseudo_segmax")),
            ..write_opts.clone()
        };
        edge_seg_trainer::weak::cam_labels(&run, "last", None, split, Some(&tags), &max_opts).unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for i in 4..8 {
            let map = image::open(dir.path().join(format!("pseudo_segmax/SYN_{i:05}.png")))
                .unwrap()
                .to_luma8();
            seen.extend(map.as_raw().iter().copied());
        }
        seen.remove(&255);
        assert!(seen.len() >= 2 && seen.is_subset(&[0, 3, 8].into()), "{seen:?}");
        // --trusted: only the named classes label (a CAC run's [cam] trusts every class); the
        // pixels where an untrusted tagged class is best stay unlabelled
        let trusted_opts = edge_seg_trainer::weak::CamLabelOptions {
            trusted: Some(vec!["road".into(), "PEDESTRIAN".into()]),
            write: Some(dir.path().join("pseudo_trusted")),
            ..max_opts.clone()
        };
        edge_seg_trainer::weak::cam_labels(&run, "last", None, split, Some(&tags), &trusted_opts).unwrap();
        let (mut kept, mut dropped) = (std::collections::BTreeSet::new(), 0usize);
        for i in 4..8 {
            let name = format!("SYN_{i:05}.png");
            let all = image::open(dir.path().join("pseudo_segmax").join(&name))
                .unwrap()
                .to_luma8();
            let map = image::open(dir.path().join("pseudo_trusted").join(&name))
                .unwrap()
                .to_luma8();
            for (&a, &t) in all.as_raw().iter().zip(map.as_raw()) {
                // the same maps and thresholds: a trusted label is the unrestricted one
                assert!(t == 255 || t == a, "{name}: {t} where every class trusted gives {a}");
                if a != 255 && ![3, 8].contains(&a) {
                    assert_eq!(t, 255, "{name}: untrusted class {a} kept");
                }
                kept.insert(t);
                dropped += usize::from(a != 255 && t == 255);
            }
        }
        kept.remove(&255);
        assert!(kept.is_subset(&[3, 8].into()) && !kept.is_empty(), "{kept:?}");
        // sky (0) labelled somewhere when every class was trusted: those pixels are dropped now
        assert_eq!(dropped > 0, seen.contains(&0), "{dropped} dropped, {seen:?}");
        for (bad, what) in [
            (vec!["Zebra".to_string()], "unknown class 'Zebra'"),
            (vec![], "one or more"),
        ] {
            let o = edge_seg_trainer::weak::CamLabelOptions {
                trusted: Some(bad),
                ..trusted_opts.clone()
            };
            let e = edge_seg_trainer::weak::cam_labels(&run, "last", None, split, Some(&tags), &o).unwrap_err();
            assert!(
                format!("{e:#}").contains(what) && format!("{e:#}").contains("--trusted"),
                "{e:#}"
            );
        }

        // errors name the setting or the file
        let mut bad = cfg.clone();
        bad.data.pseudo_labels = None;
        assert!(bad.validate().unwrap_err().contains("data.pseudo_labels"));
        let mut bad = tiny_config(&data, "cac", 1);
        bad.data.pseudo_labels = Some(pseudo.clone());
        assert!(bad.validate().unwrap_err().contains("cac.tag_weight"));
        let err_run = dir.path().join("err-run");
        let check = |dir: &Path, what: &str| {
            let mut c = cfg.clone();
            c.data.pseudo_labels = Some(dir.to_path_buf());
            let e = train::run(&c, &opts(&err_run, false, None)).unwrap_err();
            let msg = format!("{e:#}");
            assert!(msg.contains(what), "'{what}' not in: {msg}");
        };
        let empty = dir.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        check(&empty, "no pseudo-label file");
        check(&dir.path().join("missing"), "not a folder");
        let wrong = dir.path().join("wrong");
        std::fs::create_dir_all(&wrong).unwrap();
        image::GrayImage::from_pixel(32, 32, image::Luma([0]))
            .save(wrong.join("SYN_00004.png"))
            .unwrap();
        check(&wrong, "SYN_00004.png: pseudo-labels are 32x32");
        image::GrayImage::from_pixel(64, 48, image::Luma([17]))
            .save(wrong.join("SYN_00004.png"))
            .unwrap();
        check(&wrong, "value 17 is neither a class id");
    }

    /// Issue #26, class-balanced classification (`cam.balance_cls`): every synthetic frame is
    /// tagged sky, road and car, so those classes are present in all of them (p = 1, clamped
    /// to 0.99) and the others in none (p = 0 → 0.01); each BCE term then carries the weight
    /// 0.5 / 0.99, and the first step's loss is exactly that multiple of the plain one. SLRNet
    /// takes the same setting; without a tag file it is an error naming it.
    #[test]
    fn issue26_balanced_classification_weighs_classes_by_their_tags() {
        let (dir, _data, mut cfg) = tagged_setup("cam", 1);
        let first_bce = |cfg: &TrainConfig, name: &str| {
            let run = dir.path().join(name);
            train::run(cfg, &opts(&run, false, None)).unwrap();
            log_records(&run)[0]["cls_bce"].as_f64().unwrap()
        };
        let plain = first_bce(&cfg, "plain");
        cfg.cam.balance_cls = true;
        let balanced = first_bce(&cfg, "balanced");
        let want = plain * 0.5 / 0.99;
        assert!((balanced - want).abs() < 1e-5 * want, "{balanced} vs {want}");
        let mut slr = cfg.clone();
        slr.method = "slrnet".into();
        slr.slrnet.rank = 4;
        slr.augment.crop = [64, 64];
        let plain_slr = {
            let mut c = slr.clone();
            c.cam.balance_cls = false;
            first_bce(&c, "slr-plain")
        };
        let balanced_slr = first_bce(&slr, "slr-balanced");
        assert!(
            (balanced_slr - plain_slr * 0.5 / 0.99).abs() < 1e-5 * plain_slr,
            "{balanced_slr} vs {plain_slr}"
        );
        cfg.data.tag_file = None;
        let e = train::run(&cfg, &opts(&dir.path().join("none"), false, None)).unwrap_err();
        assert!(format!("{e:#}").contains("cam.balance_cls"), "{e:#}");
    }

    /// Issue #26, group-wise mining: the CAM method with `[cam.group]` trains (its module is
    /// method state and learns: γ leaves 0), and `cam-labels` runs the trained module over
    /// groups of consecutive images.
    #[test]
    fn issue26_group_mining_trains_and_labels_in_groups() {
        let (dir, data, mut cfg) = tagged_setup("cam", 4);
        cfg.cam.warmup_iterations = 2;
        cfg.cam.group.enabled = true;
        cfg.cam.group.key_channels = 8;
        let run = dir.path().join("run");
        train::run(&cfg, &opts(&run, false, None)).unwrap();
        let t = candle_core::safetensors::load(run.join("last.safetensors"), &Device::Cpu).unwrap();
        let gamma = t
            .iter()
            .find(|(k, _)| k.ends_with("method.cam.group.gamma"))
            .map(|(_, v)| v.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0])
            .unwrap_or_else(|| panic!("no group weights in {:?}", t.keys()));
        assert!(gamma != 0.0, "gamma did not learn");
        let opts_cam = edge_seg_trainer::weak::CamLabelOptions {
            scales: vec![1.0],
            min_pixels: 1,
            ..Default::default()
        };
        let labeled = data.join("labeled.txt");
        let r =
            edge_seg_trainer::weak::cam_labels(&run, "last", None, labeled.to_str().unwrap(), None, &opts_cam).unwrap();
        assert_eq!(r.images, 4);
        assert!(r.coverage.0 > 0.0 && r.coverage.0 <= 1.0, "{:?}", r.coverage);
        // a bad setting is a config error
        cfg.cam.group.dropout = 1.5;
        let e = train::run(&cfg, &opts(&dir.path().join("r2"), false, None)).unwrap_err();
        assert!(format!("{e:#}").contains("cam.group.dropout"), "{e:#}");
        // co-attention is quadratic in positions: the stride-4 embedding of a 256² crop is refused
        cfg.cam.group.dropout = 0.2;
        cfg.cam.features = edge_seg_trainer::methods::cam::CamFeatures::Embedding;
        cfg.augment.crop = [256, 256];
        let e = train::run(&cfg, &opts(&dir.path().join("r3"), false, None)).unwrap_err();
        assert!(format!("{e:#}").contains("cam.group: 4096 feature positions"), "{e:#}");
    }

    /// Issue #26, SLRNet: the method trains from tags on two views (classification, cross-view
    /// consistency, then online pseudo-labels), its LR module is method state that starts at
    /// zero and learns, `cam-labels` scores its CAMs through the trained module, the ablation
    /// (`lowrank = false`) has none, and bad settings are config errors naming the key.
    #[test]
    fn issue26_slrnet_trains_with_its_low_rank_module_and_labels() {
        let (dir, data, mut cfg) = tagged_setup("slrnet", 4);
        cfg.cam.warmup_iterations = 2;
        cfg.cam.weight_seg = 0.5;
        cfg.slrnet.rank = 4;
        cfg.augment.crop = [64, 64]; // view 2 at 32², a different size
        let run = dir.path().join("run");
        let s = train::run(&cfg, &opts(&run, false, None)).unwrap();
        assert_eq!(s.steps, 4);
        let recs = log_records(&run);
        for (k, r) in recs.iter().enumerate() {
            let terms: f64 = ["ce", "cls", "cv", "seg"].iter().map(|t| r[*t].as_f64().unwrap()).sum();
            let loss = r["loss"].as_f64().unwrap();
            assert!((terms - loss).abs() < 1e-4 * loss.max(1.0), "{r}");
            assert!(r["cv_l1"].as_f64().unwrap() >= 0.0, "{r}");
            if k < 2 {
                assert_eq!(r["seg"].as_f64(), Some(0.0), "warm-up: {r}");
            } else {
                assert!(r["pseudo_coverage"].as_f64().unwrap() > 0.0, "{r}");
            }
        }
        // the views' CAMs differ somewhere (all-negative CAMs normalise to 0 in both views)
        assert!(recs.iter().any(|r| r["cv_l1"].as_f64().unwrap() > 0.0), "{recs:?}");
        let t = candle_core::safetensors::load(run.join("last.safetensors"), &Device::Cpu).unwrap();
        let proj = t
            .iter()
            .find(|(k, _)| k.ends_with("method.slrnet.lr.proj.weight"))
            .map(|(_, v)| v.abs().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap())
            .unwrap_or_else(|| panic!("no LR module in {:?}", t.keys()));
        assert!(proj > 0.0, "the projection starts at zero and must learn");
        assert!(t.keys().any(|k| k.ends_with("method.slrnet.cam.weight")));
        // cam-labels with its default scales and flips (a low scale has fewer feature positions
        // than the rank: cut to them)
        let opts_cam = edge_seg_trainer::weak::CamLabelOptions {
            min_pixels: 1,
            ..Default::default()
        };
        let labeled = data.join("labeled.txt");
        let split = labeled.to_str().unwrap();
        let with_lr = edge_seg_trainer::weak::cam_labels(&run, "last", None, split, None, &opts_cam).unwrap();
        assert_eq!(with_lr.images, 4);
        assert!(with_lr.coverage.0 > 0.0 && with_lr.coverage.0 <= 1.0);

        // the ablation: no LR module in the checkpoint, and cam-labels runs without it
        cfg.slrnet.lowrank = false;
        let ablation = dir.path().join("nolr");
        train::run(&cfg, &opts(&ablation, false, None)).unwrap();
        let t = candle_core::safetensors::load(ablation.join("last.safetensors"), &Device::Cpu).unwrap();
        assert!(!t.keys().any(|k| k.contains("method.slrnet.lr.")), "{:?}", t.keys());
        edge_seg_trainer::weak::cam_labels(&ablation, "last", None, split, None, &opts_cam).unwrap();

        // a resumed run reproduces an uninterrupted one (the LR module and head are method state)
        cfg.slrnet.lowrank = true;
        let half = dir.path().join("half");
        train::run(&cfg, &opts(&half, false, Some(2))).unwrap();
        train::run(&cfg, &opts(&half, true, None)).unwrap();
        let (a, b) = (checkpoint_tensors(&run), checkpoint_tensors(&half));
        assert!(a.iter().any(|(n, _)| n.contains("lr.proj.weight")));
        assert_eq!(a, b, "slrnet: the resumed run differs");

        // bad settings
        for (edit, key) in [
            (
                (|c: &mut TrainConfig| c.slrnet.view_scale = 2.0) as fn(&mut TrainConfig),
                "slrnet.view_scale",
            ),
            (|c: &mut TrainConfig| c.slrnet.rank = 0, "slrnet.rank"),
            (|c: &mut TrainConfig| c.slrnet.rank = 300, "slrnet.rank"),
            // 64 · 0.75 rounds back to 64: the second view would be the crop itself
            (|c: &mut TrainConfig| c.slrnet.view_scale = 0.75, "is the crop itself"),
            (|c: &mut TrainConfig| c.cam.group.enabled = true, "cam.group"),
        ] {
            let mut bad = cfg.clone();
            edit(&mut bad);
            let e = train::run(&bad, &opts(&dir.path().join("bad"), false, None)).unwrap_err();
            assert!(format!("{e:#}").contains(key), "{key}: {e:#}");
        }
    }

    /// Issue #26: tag files that do not match the images, or name unknown classes, stop the
    /// run before training with the file and the problem.
    #[test]
    fn issue26_bad_tag_files_are_errors_that_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 4);
        let tags = synthetic_tags(&data, 4);
        let mut cfg = tiny_config(&data, "cam", 2);
        cfg.data.tag_file = Some(tags.clone());
        let text = std::fs::read_to_string(&tags).unwrap();
        for (bad, want) in [
            (
                text.replace("SYN_00002: Sky road 8\n", ""),
                "image 'SYN_00002.png' of data.unlabeled_splits has no tag line",
            ),
            (format!("{text}ghost: Sky\n"), "tags image 'ghost'"),
            (text.replacen("Sky", "Zebra", 1), "tags.txt:1: unknown class 'Zebra'"),
        ] {
            std::fs::write(&tags, bad).unwrap();
            let e = train::run(&cfg, &opts(&dir.path().join("r"), false, None)).unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains(want) && e.contains("tags.txt"), "{e}");
            assert!(!dir.path().join("r/last.safetensors").exists());
        }
        cfg.data.tag_file = Some(dir.path().join("missing.txt"));
        let e = format!(
            "{:#}",
            train::run(&cfg, &opts(&dir.path().join("r"), false, None)).unwrap_err()
        );
        assert!(e.contains("missing.txt") && e.contains("cannot read"), "{e}");
        // config checks: unknown trusted class, thresholds out of order, a crop CAMs cannot tile
        let mut c = tiny_config(&data, "cam", 2);
        c.cam.trusted_classes = vec!["Zebra".into()];
        assert!(c.validate().unwrap_err().contains("unknown class 'Zebra'"));
        let mut c = tiny_config(&data, "cam", 2);
        c.cam.low = 0.9;
        assert!(c.validate().unwrap_err().contains("cam.low"));
        let mut c = tiny_config(&data, "cam", 2);
        c.augment.crop = [40, 32];
        assert!(c.validate().unwrap_err().contains("augment.crop"));
    }

    #[test]
    fn issue6_semi_method_without_unlabeled_data_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        synthetic_camvid(&data, 4);
        let mut cfg = tiny_config(&data, "cps", 2);
        cfg.data.unlabeled_splits.clear();
        let err = train::run(&cfg, &opts(&dir.path().join("r"), false, None)).unwrap_err();
        assert!(format!("{err:#}").contains("data.unlabeled_splits"), "{err:#}");
        // unknown keys in a method section are rejected; crops must suit CAC's stride
        assert!(toml::from_str::<TrainConfig>("[cac]\nlambda = 0.1\n").is_err());
        let mut cfg = tiny_config(&data, "cac", 2);
        cfg.augment.crop = [36, 32];
        assert!(cfg.validate().unwrap_err().contains("augment.crop"));
    }

    /// Label masks hold 8-bit class ids: a class table they cannot index is rejected up front.
    #[test]
    fn too_many_or_no_classes_is_an_error() {
        let mut cfg = TrainConfig::default();
        cfg.data.classes = seg_core::classes::ClassTable {
            names: vec!["c".into(); 256],
            palette: vec![[0, 0, 0]; 256],
        };
        cfg.model.num_classes = 256;
        assert!(cfg.validate().unwrap_err().contains("1 to 255 classes"));
        cfg.data.classes.names.clear();
        cfg.data.classes.palette.clear();
        cfg.model.num_classes = 0;
        assert!(cfg.validate().unwrap_err().contains("data.classes has 0 classes"));
    }
}

/// Issue #26: `derive-tags` tags each frame with the classes its mask shows on enough pixels,
/// writes a tag file the trainer reads back, and reports which classes tags can teach; bad
/// flags are one-line errors and leave no file.
#[test]
fn issue26_derive_tags_writes_a_tag_file_and_reports_teachable_classes() {
    let dir = tempfile::tempdir().unwrap();
    seg_test_support::synthetic_camvid(&dir.path().join("d"), 3, 0);
    // the car box covers 16×14 = 224 pixels: tagged at 200, not at 300
    let out = train_bin(
        &["derive-tags", "--data", "d", "--min-pixels", "200", "--out", "t.txt"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("t.txt")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "SYN_00000.png: Sky Road Car",
            "SYN_00001.png: Sky Road Car",
            "SYN_00002.png: Sky Road Car"
        ]
    );
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("tags cannot teach it") && report.contains("never tagged"),
        "{report}"
    );
    let classes = seg_core::classes::ClassTable::camvid();
    let tags = seg_core::tags::TagFile::read(&dir.path().join("t.txt"), &classes).unwrap();
    assert_eq!(tags.get("SYN_00001"), Some(&[0u8, 3, 8][..]));
    let out = train_bin(
        &["derive-tags", "--data", "d", "--min-pixels", "300", "--out", "t2.txt"],
        dir.path(),
    );
    assert!(out.status.success());
    assert!(std::fs::read_to_string(dir.path().join("t2.txt"))
        .unwrap()
        .contains("SYN_00000.png: Sky Road\n"));
    let out = train_bin(
        &["derive-tags", "--data", "d", "--min-pixels", "0", "--out", "t3.txt"],
        dir.path(),
    );
    assert_user_error(&out, "--min-pixels");
    let out = train_bin(&["derive-tags", "--data", "nope", "--out", "t3.txt"], dir.path());
    assert_user_error(&out, "nope");
    assert!(!dir.path().join("t3.txt").exists());
}

/// `class-weights` counts a split's masks and prints median-frequency weights as a TOML line the
/// config reads back; a class the split never shows, a bad power or a missing dataset is a
/// one-line error (exit 2).
#[test]
fn issue21_class_weights_prints_a_config_line() {
    let dir = tempfile::tempdir().unwrap();
    seg_test_support::synthetic_camvid(&dir.path().join("d"), 3, 0);
    // the synthetic frames show sky, road and car only: every other class would weigh infinity
    let out = train_bin(&["class-weights", "--data", "d"], dir.path());
    assert_user_error(&out, "Building has no pixel in the split");
    // two frames whose masks hold every class, class k in a stripe k + 1 columns wide
    use image::{GrayImage, Luma, RgbImage};
    let e = dir.path().join("e");
    for sub in ["train", "trainannot"] {
        std::fs::create_dir_all(e.join(sub)).unwrap();
    }
    let stripe = |x: u32| (0..11u32).find(|&k| x < (k + 1) * (k + 2) / 2).unwrap_or(11) as u8;
    for i in 0..2 {
        let name = format!("S_{i}.png");
        RgbImage::new(70, 8).save(e.join("train").join(&name)).unwrap();
        GrayImage::from_fn(70, 8, |x, _| Luma([stripe(x)]))
            .save(e.join("trainannot").join(&name))
            .unwrap();
    }
    let out = train_bin(&["class-weights", "--data", "e", "--power", "0.5"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("class_weights = "))
        .expect("a TOML line");
    let parsed: toml::Table = toml::from_str(line).unwrap();
    let w: Vec<f64> = parsed["class_weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_float().unwrap())
        .collect();
    assert_eq!(w.len(), 11);
    assert!(w.iter().all(|&v| v > 0.0 && v.is_finite()), "{w:?}");
    // the median class weighs 1
    let mut sorted = w.clone();
    sorted.sort_by(f64::total_cmp);
    assert!((sorted[5] - 1.0).abs() < 1e-4, "{w:?}");
    let out = train_bin(&["class-weights", "--data", "e", "--power", "3"], dir.path());
    assert_user_error(&out, "--power 3");
    let out = train_bin(&["class-weights", "--data", "nope"], dir.path());
    assert_user_error(&out, "nope");
}

/// A build without the `cuda` feature asked for the GPU says how to get one, on one line; the
/// parity check against the CPU itself runs (and is exact) on a CPU-only build.
#[test]
#[cfg(not(feature = "cuda"))]
fn issue28_device_cuda_without_the_feature_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["parity", "--device", "cuda"][..],
        &["bench-step", "--device", "cuda", "--steps", "1"][..],
    ] {
        let out = train_bin(args, dir.path());
        assert_user_error(&out, "--device cuda: this edge-seg-train was built without CUDA");
    }
    let out = train_bin(&["parity", "--device", "cuda", "--pretrained", "x.pth"], dir.path());
    assert_user_error(&out, "--pretrained: only used with --imagenet");
    // sizes are bounded before anything is allocated
    let out = train_bin(&["parity", "--batch", "100000"], dir.path());
    assert_user_error(&out, "--batch must be in 1..=256");
    let out = train_bin(&["bench-step", "--crop", "99999"], dir.path());
    assert_user_error(&out, "--crop in 32..=1024");
    let json = dir.path().join("p.json");
    let out = train_bin(
        &[
            "parity", "--device", "cpu", "--batch", "1", "--size", "64x64", "--json", "p.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let p: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    assert_eq!(p["logits_max_abs_diff"], 0.0);
    assert_eq!(p["grad_max_rel_diff"], 0.0);
}

/// A PyTorch-shaped ONNX (unfolded BatchNorm, dynamic Resize sizes) declared at 64×96.
const PYTORCH_STYLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../quantize/fixtures/pytorch_style.onnx");

/// `info --json` as one JSON object.
fn info_json(args: &[&str], cwd: &Path) -> serde_json::Value {
    let mut all = vec!["info", "--runs", "1", "--json"];
    all.extend_from_slice(args);
    let out = train_bin(&all, cwd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim_end().lines().count(), 1, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Issue #27: `info` on any ONNX counts its initializer elements and, from tract's cost model,
/// its GFLOPs at the declared size or another one (a fully convolutional net at twice the side
/// costs four times as much), and times it.
#[test]
fn issue27_info_counts_params_and_gflops_of_an_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let a = info_json(&["--model", PYTORCH_STYLE], dir.path());
    assert_eq!(a["source"], "onnx");
    assert_eq!(a["input"], serde_json::json!([1, 3, 64, 96]));
    assert!(a["params"].as_u64().unwrap() > 0, "{a}");
    assert!(a["params_counted"].as_str().unwrap().contains("initializer elements"));
    let g1 = a["gflops"].as_f64().unwrap();
    assert!(g1 > 0.0, "{a}");
    assert!(a["latency_median_ms"].as_f64().unwrap() > 0.0, "{a}");
    assert_eq!(a["runs_ms"].as_array().unwrap().len(), 1);
    let b = info_json(&["--model", PYTORCH_STYLE, "--size", "128x192"], dir.path());
    assert_eq!(b["input"], serde_json::json!([1, 3, 128, 192]));
    assert_eq!(b["params"], a["params"]);
    let ratio = b["gflops"].as_f64().unwrap() / g1;
    assert!((3.9..=4.1).contains(&ratio), "{ratio}");
}

/// Issue #27: `info --config` builds the config's net (seeded), counts its trainable variables
/// and exports it in memory to count and time it like an ONNX file; the table names the counts.
#[test]
fn issue27_info_of_a_config_counts_trainable_variables() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[data]\ninput_size = [32, 40]\n[model]\nwidths = [4, 8, 8, 8, 8]\nblocks = [1, 1, 1, 1]\n\
         aspp_channels = 8\nlow_channels = 4\ndecoder_channels = 8\n",
    )
    .unwrap();
    let a = info_json(&["--config", "c.toml"], dir.path());
    assert_eq!(a["source"], "config");
    assert_eq!(a["input"], serde_json::json!([1, 3, 32, 40]));
    assert!(a["params"].as_u64().unwrap() > 0, "{a}");
    assert!(a["params_counted"]
        .as_str()
        .unwrap()
        .contains("running statistics excluded"));
    assert!(a["gflops"].as_f64().unwrap() > 0.0, "{a}");
    let out = train_bin(&["info", "--config", "c.toml", "--runs", "1"], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("GFLOPs") && table.contains("median"), "{table}");
}

/// Issue #27: bad `info` flags are one-line errors naming the flag, before anything is built.
#[test]
fn issue27_info_bad_flags_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert_user_error(&train_bin(&["info", "--size", "0x5"], dir.path()), "--size");
    assert_user_error(&train_bin(&["info", "--size", "360x5000"], dir.path()), "--size");
    assert_user_error(&train_bin(&["info", "--runs", "0"], dir.path()), "--runs");
    assert_user_error(&train_bin(&["info", "--threads", "0"], dir.path()), "--threads");
    assert_user_error(
        &train_bin(&["info", "--config", "c.toml", "--model", "m.onnx"], dir.path()),
        "--config and --model",
    );
    assert_user_error(&train_bin(&["info", "--model", "nope.onnx"], dir.path()), "nope.onnx");
}
