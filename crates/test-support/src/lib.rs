//! Fixtures shared by the workspace's tests, written once (issue #24): the synthetic
//! CamVid-layout dataset the training round trips learn from, the check every binary-level
//! test makes of a user error, and tract running an encoded ONNX graph (the reference the
//! export tests compare with). A dev-dependency only; nothing ships it.

use std::path::Path;
use std::process::Output;

use image::{GrayImage, Luma, Rgb, RgbImage};

/// Writes a CamVid-layout dataset under `root` (`train/`, `trainannot/`, `val/`, `valannot/`):
/// 64×48 frames `SYN_00000.png`, … where class 0 (top, bright) lies above class 3 (bottom,
/// dark) with a class-8 box at a place that moves with the frame index; the last row is void
/// (11). Learnable in a few steps, different in every frame.
pub fn synthetic_camvid(root: &Path, n_train: usize, n_val: usize) {
    for (split, n) in [("train", n_train), ("val", n_val)] {
        std::fs::create_dir_all(root.join(split)).unwrap();
        std::fs::create_dir_all(root.join(format!("{split}annot"))).unwrap();
        for i in 0..n {
            let (w, h) = (64u32, 48u32);
            let bx = (i as u32 * 7) % 40;
            let class_at = |x: u32, y: u32| -> u8 {
                if x >= bx && x < bx + 16 && (20..34).contains(&y) {
                    8
                } else if y < 20 {
                    0
                } else if y == 47 {
                    11
                } else {
                    3
                }
            };
            let img = RgbImage::from_fn(w, h, |x, y| {
                let n = ((x * 31 + y * 17 + i as u32 * 13) % 23) as u8;
                match class_at(x, y) {
                    0 => Rgb([200 + n, 210 + n, 220 + n]),
                    8 => Rgb([180 + n, 20 + n, 30 + n]),
                    _ => Rgb([60 + n, 60 + n, 70 + n]),
                }
            });
            let mask = GrayImage::from_fn(w, h, |x, y| Luma([class_at(x, y)]));
            let name = format!("SYN_{i:05}.png");
            img.save(root.join(split).join(&name)).unwrap();
            mask.save(root.join(format!("{split}annot")).join(&name)).unwrap();
        }
    }
}

/// A user error as the binaries promise it: exit code 2, a single stderr line that names
/// `what`, no panic.
pub fn assert_user_error(out: &Output, what: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(what), "'{what}' not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Runs the encoded ONNX graph `bytes` in tract on one f32 input of `shape`; its first output,
/// flattened.
pub fn tract_run(bytes: &[u8], shape: &[usize], x: &[f32]) -> Vec<f32> {
    use tract_onnx::prelude::*;
    let plan = tract_onnx::onnx()
        .model_for_read(&mut std::io::Cursor::new(bytes))
        .expect("tract reads the graph")
        .into_optimized()
        .expect("tract optimises the graph")
        .into_runnable()
        .expect("tract plans the graph");
    let input = tract_ndarray::ArrayD::from_shape_vec(shape, x.to_vec())
        .expect("the input matches its shape")
        .into_tensor();
    let out = plan.run(tvec!(input.into())).expect("tract runs the graph");
    out[0]
        .to_plain_array_view::<f32>()
        .expect("f32 output")
        .iter()
        .copied()
        .collect()
}
