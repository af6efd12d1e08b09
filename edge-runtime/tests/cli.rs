//! The `edge-seg` binary as a user meets it: the default job, and bad input giving a one-line
//! error with exit code 2.

use std::path::Path;
use std::process::{Command, Output};

use image::{GrayImage, Luma, Rgb, RgbImage};

fn edge_seg(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// Exit code 2 and a single stderr line that names `what`.
fn assert_user_error(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(what), "'{what}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn camvid_fixture(root: &Path, bad_mask: Option<GrayImage>) {
    for d in ["val", "valannot"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for i in 0..2 {
        let name = format!("F_{i}.png");
        RgbImage::from_fn(64, 48, |x, _| Rgb([(x * 4) as u8, 100, 50]))
            .save(root.join("val").join(&name))
            .unwrap();
        let mask = match (&bad_mask, i) {
            (Some(m), 1) => m.clone(),
            _ => GrayImage::from_fn(64, 48, |_, y| Luma([if y < 20 { 0 } else { 3 }])),
        };
        mask.save(root.join("valannot").join(&name)).unwrap();
    }
}

/// Issue #2: `edge-seg` with no arguments segments the embedded samples into ./edge-seg-out.
#[test]
fn issue2_default_run_writes_overlays() {
    let dir = tempfile::tempdir().unwrap();
    let out = edge_seg(&[], dir.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pngs: Vec<_> = std::fs::read_dir(dir.path().join("edge-seg-out")).unwrap().collect();
    assert_eq!(pngs.len(), edge_seg_runtime::DEFAULT_SAMPLES.len());
    let img = image::open(dir.path().join("edge-seg-out/0016E5_07959.png")).unwrap();
    assert_eq!((img.width(), img.height()), (480, 360));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ms/frame"), "{stdout}");
}

#[test]
fn issue2_side_by_side_doubles_the_width() {
    let dir = tempfile::tempdir().unwrap();
    let frame = dir.path().join("f.png");
    RgbImage::from_fn(96, 72, |x, y| Rgb([x as u8, y as u8, 9]))
        .save(&frame)
        .unwrap();
    let out = edge_seg(
        &[
            "run",
            "--input",
            "f.png",
            "--output",
            "o",
            "--mode",
            "side-by-side",
            "--alpha",
            "0.3",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let img = image::open(dir.path().join("o/f.png")).unwrap();
    assert_eq!((img.width(), img.height()), (192, 72));
}

#[test]
fn issue2_corrupt_png_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_user_error(&edge_seg(&["run", "--input", "bad.png"], dir.path()), "bad.png");
}

#[test]
fn issue2_malformed_onnx_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"\x08\x07\x12garbage-bytes\xff\xff").unwrap();
    assert_user_error(&edge_seg(&["run", "--model", "m.onnx"], dir.path()), "m.onnx");
    // a valid protobuf without edge-seg metadata
    std::fs::write(dir.path().join("e.onnx"), b"").unwrap();
    assert_user_error(&edge_seg(&["run", "--model", "e.onnx"], dir.path()), "e.onnx");
}

#[test]
fn issue2_wrong_size_mask_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    camvid_fixture(dir.path(), Some(GrayImage::new(64, 40)));
    let model = dir.path().join("m.onnx");
    std::fs::write(&model, edge_seg_runtime::DEFAULT_MODEL).unwrap();
    let out = edge_seg(
        &["eval", "--model", "m.onnx", "--data", ".", "--split", "val"],
        dir.path(),
    );
    assert_user_error(&out, "F_1.png");
}

#[test]
fn issue2_unknown_class_id_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    camvid_fixture(dir.path(), Some(GrayImage::from_pixel(64, 48, Luma([14]))));
    std::fs::write(dir.path().join("m.onnx"), edge_seg_runtime::DEFAULT_MODEL).unwrap();
    let out = edge_seg(
        &["eval", "--model", "m.onnx", "--data", ".", "--split", "val"],
        dir.path(),
    );
    assert_user_error(&out, "label id 14");
}

#[test]
fn issue2_eval_prints_miou_and_writes_confusion_and_record() {
    let dir = tempfile::tempdir().unwrap();
    camvid_fixture(dir.path(), None);
    std::fs::write(dir.path().join("m.onnx"), edge_seg_runtime::DEFAULT_MODEL).unwrap();
    let out = edge_seg(
        &[
            "eval",
            "--model",
            "m.onnx",
            "--data",
            ".",
            "--split",
            "val",
            "--confusion",
            "cm.csv",
            "--record",
            "r.json",
            "--record-name",
            "x_miou",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("mIoU") && stdout.contains("Road"), "{stdout}");
    let csv = std::fs::read_to_string(dir.path().join("cm.csv")).unwrap();
    assert_eq!(csv.lines().count(), 12);
    let total: u64 = csv
        .lines()
        .skip(1)
        .flat_map(|l| l.split(',').skip(1).map(|v| v.parse::<u64>().unwrap()))
        .sum();
    assert_eq!(total, 2 * 64 * 48);
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).unwrap()).unwrap();
    assert_eq!(rec[0]["name"], "x_miou");
    assert!(rec[0]["date"].as_str().unwrap().len() == 10);
}

/// `edge-seg quantize` writes a QDQ model that `edge-seg run` can use (issue #3 groundwork).
#[test]
fn quantize_then_run_the_int8_graph() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), edge_seg_runtime::DEFAULT_MODEL).unwrap();
    std::fs::create_dir_all(dir.path().join("calib")).unwrap();
    for (name, bytes) in edge_seg_runtime::DEFAULT_SAMPLES.iter().take(2) {
        std::fs::write(dir.path().join("calib").join(name), bytes).unwrap();
    }
    let out = edge_seg(
        &[
            "quantize", "--model", "m.onnx", "--calib", "calib", "--out", "q.onnx", "--report", "q.json",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("argmax agreement"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("q.json")).unwrap()).unwrap();
    assert!(report.is_object());
    let out = edge_seg(
        &["run", "--model", "q.onnx", "--input", "calib", "--output", "o"],
        dir.path(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_dir(dir.path().join("o")).unwrap().count(), 2);
    let bad = edge_seg(
        &[
            "quantize", "--model", "m.onnx", "--calib", "calib", "--out", "x.onnx", "--method", "kl",
        ],
        dir.path(),
    );
    assert_user_error(&bad, "--method kl");
}
