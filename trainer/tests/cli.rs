//! The `edge-seg-train` binary: bad configs and inputs give one-line errors with exit code 2.

use std::path::Path;
use std::process::{Command, Output};

fn train_bin(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-seg-train"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn assert_user_error(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(what), "'{what}' not in: {err}");
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
    use image::{GrayImage, Luma, Rgb, RgbImage};
    let dir = tempfile::tempdir().unwrap();
    for split in ["train", "val"] {
        std::fs::create_dir_all(dir.path().join("d").join(split)).unwrap();
        std::fs::create_dir_all(dir.path().join("d").join(format!("{split}annot"))).unwrap();
        for i in 0..2u32 {
            let name = format!("S_{i}.png");
            RgbImage::from_fn(40, 32, |x, y| Rgb([(x * 6) as u8, (y * 7 + i) as u8, 90]))
                .save(dir.path().join("d").join(split).join(&name))
                .unwrap();
            GrayImage::from_fn(40, 32, |_, y| Luma([if y < 12 { 0 } else { 3 }]))
                .save(dir.path().join("d").join(format!("{split}annot")).join(&name))
                .unwrap();
        }
    }
    let cfg = "[data]\nroot = \"d\"\ninput_size = [32, 40]\n[augment]\ncrop = [24, 24]\n\
               [model]\nwidths = [4, 8, 8, 8, 8]\nblocks = [1, 1, 1, 1]\naspp_channels = 8\nlow_channels = 4\ndecoder_channels = 8\n\
               [schedule]\niterations = 2\nbatch_size = 2\n";
    std::fs::write(dir.path().join("c.toml"), cfg).unwrap();
    let out = train_bin(
        &["train", "--config", "c.toml", "--out", "run", "--no-progress"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
