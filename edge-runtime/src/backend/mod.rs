//! Inference backends. The pipeline talks to [`Backend`] only; a backend is one file.
//!
//! - [`tract`]: pure Rust, always there (the default when onnxruntime is not installed);
//! - [`ort`]: onnxruntime, loaded at run time (`ORT_DYLIB_PATH` or the pip package), with the
//!   CPU, CUDA and TensorRT execution providers.
//!
//! [`open`] picks one from [`BackendOptions`] and applies the graph rewrites that pay on it.

pub mod ort;
pub mod tract;

use crate::RuntimeError;

/// Class scores of one frame at the network's resolution, `[classes, height, width]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Logits {
    /// Number of classes.
    pub classes: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Row-major `[classes, height, width]` scores.
    pub data: Vec<f32>,
}

impl Logits {
    /// The first output of a backend, `[1, C, H, W]` with every dimension ≥ 1 and `data` of
    /// that many values, or the error that says what it was instead (issue #23: an empty
    /// spatial output once reached the arg-max and panicked there).
    pub fn from_output(shape: &[i64], data: Vec<f32>) -> Result<Self, RuntimeError> {
        let bad = || RuntimeError::Backend(format!("expected logits [1, C, H, W], got {shape:?}"));
        if shape.len() != 4 || shape[0] != 1 || shape.iter().any(|&d| d < 1) {
            return Err(bad());
        }
        let dims: Vec<usize> = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let n = dims[1].checked_mul(dims[2]).and_then(|v| v.checked_mul(dims[3]));
        if n != Some(data.len()) {
            return Err(RuntimeError::Backend(format!(
                "logits {shape:?} came with {} values",
                data.len()
            )));
        }
        Ok(Logits {
            classes: dims[1],
            height: dims[2],
            width: dims[3],
            data,
        })
    }
}

/// Runs a segmentation network on one normalised `[1, 3, h, w]` input.
pub trait Backend: Send {
    /// Short name shown in the status line.
    fn name(&self) -> &'static str;
    /// Runs the network.
    fn run(&mut self, input: &[f32]) -> Result<Logits, crate::RuntimeError>;
}

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BackendKind {
    /// onnxruntime when its library loads, tract otherwise.
    #[default]
    Auto,
    /// tract (pure Rust).
    Tract,
    /// onnxruntime (`ORT_DYLIB_PATH` or `pip install onnxruntime`).
    Ort,
}

/// How to build a backend.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BackendOptions {
    /// The backend.
    pub kind: BackendKind,
    /// onnxruntime settings (threads, execution provider); `ort.threads` is used by tract too.
    pub ort: ort::OrtOptions,
}

impl BackendOptions {
    /// tract only (tests, and callers that need a pure-Rust backend).
    pub fn tract() -> Self {
        Self {
            kind: BackendKind::Tract,
            ..Self::default()
        }
    }
}

/// The backend `opts` asks for, on `proto` with a fixed `[1, 3, h, w]` input; `rewrite` applies
/// the graph rewrites that keep the network's function and pay on that backend
/// ([`crate::rewrite`]): all of them on tract; on onnxruntime only the final Resize is left to the
/// runtime's arg-max (onnxruntime runs int8 QDQ pairs with integer kernels and its own Resize).
///
/// `auto` uses onnxruntime when its library loads and the CPU provider is asked for, tract
/// otherwise (also when onnxruntime rejects the graph); an explicit `--backend ort` that cannot
/// load the library or the graph is an error.
pub fn open(
    mut proto: seg_onnx::pb::ModelProto,
    origin: &str,
    hw: (u32, u32),
    rewrite: bool,
    opts: &BackendOptions,
) -> Result<Box<dyn Backend>, RuntimeError> {
    let model_err = |reason: String| RuntimeError::Model {
        path: origin.to_string(),
        reason,
    };
    let use_ort = match opts.kind {
        BackendKind::Tract => false,
        BackendKind::Ort => {
            ort::library()?;
            true
        }
        BackendKind::Auto => match ort::library() {
            Ok(lib) => {
                tracing::info!("backend auto: {lib}");
                true
            }
            Err(e) if opts.ort.ep == ort::Ep::Cpu => {
                tracing::info!("backend auto: tract ({e})");
                false
            }
            Err(e) => return Err(e),
        },
    };
    if use_ort {
        let mut for_ort = proto.clone();
        if rewrite {
            crate::rewrite::strip_final_resize(&mut for_ort);
        }
        match ort::OrtBackend::new(&seg_onnx::encode(&for_ort), origin, hw, &opts.ort) {
            Ok(b) => {
                if opts.ort.ep == ort::Ep::Cpu {
                    if let Some(w) = ort::saturation_warning(&proto) {
                        tracing::warn!("{origin}: {w}");
                    }
                }
                return Ok(Box::new(b));
            }
            // auto: a graph onnxruntime rejects still runs on tract
            Err(e) if opts.kind == BackendKind::Auto && opts.ort.ep == ort::Ep::Cpu => {
                tracing::warn!("onnxruntime cannot run {origin} ({e}); using tract");
            }
            Err(e) => return Err(e),
        }
    }
    if opts.ort.ep != ort::Ep::Cpu {
        return Err(RuntimeError::Backend(format!(
            "--ep {} needs --backend ort (tract runs on the CPU only)",
            opts.ort.ep.flag()
        )));
    }
    if rewrite {
        crate::rewrite::prepare_graph(&mut proto, hw).map_err(model_err)?;
    }
    Ok(Box::new(tract::TractBackend::new(&proto, origin, hw)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #23: a backend output with an empty or negative dimension, another batch, or a
    /// value count that does not match its shape is an error, never a [`Logits`] (an empty one
    /// reached the arg-max and panicked there; regression input
    /// `fuzz/regressions/onnx_load/issue23-empty-logits-s0-405878.onnx`).
    #[test]
    fn issue23_backend_outputs_are_checked_before_use() {
        assert!(Logits::from_output(&[1, 11, 0, 12], vec![]).is_err());
        assert!(Logits::from_output(&[1, 11, -1, 12], vec![]).is_err());
        assert!(Logits::from_output(&[2, 1, 1, 1], vec![0.0; 2]).is_err());
        assert!(Logits::from_output(&[1, 2, 2], vec![0.0; 4]).is_err());
        let e = Logits::from_output(&[1, 2, 2, 2], vec![0.0; 7])
            .unwrap_err()
            .to_string();
        assert!(e.contains("7 values"), "{e}");
        let l = Logits::from_output(&[1, 2, 1, 3], vec![0.0; 6]).unwrap();
        assert_eq!((l.classes, l.height, l.width, l.data.len()), (2, 1, 3, 6));
    }
}
