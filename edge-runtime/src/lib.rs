//! edge-seg runtime: model loading, inference backends, frame sources, overlay drawing and
//! evaluation, behind the `edge-seg` binary.

pub mod adapt;
pub mod backend;
#[cfg(target_os = "linux")]
pub mod camera;
pub mod describe;
pub mod eval;
pub mod frame;
pub mod limits;
pub mod notify;
pub mod output;
pub mod overlay;
pub mod pipeline;
pub mod queue;
pub mod rewrite;
pub mod segmenter;
pub mod source;

pub use segmenter::{LoadOptions, Segmenter};

/// Errors of the runtime; every message names the file or the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The model file is unreadable, malformed or unsupported.
    #[error("{path}: {reason}")]
    Model {
        /// The model file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An input frame or file is unreadable or malformed.
    #[error("{path}: {reason}")]
    Input {
        /// The input file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An output (folder, framebuffer, HTTP address) cannot be written.
    #[error("{path}: {reason}")]
    Output {
        /// The output.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A dataset file is missing or malformed (the message names the file).
    #[error(transparent)]
    Data(#[from] seg_core::data::DataError),
    /// The backend failed while running.
    #[error("{0}")]
    Backend(String),
    /// On-device adaptation failed (bad settings, or a step that could not run).
    #[error("{0}")]
    Adapt(String),
}

/// Keeps the panics of pipeline stages off stderr (the run reports them as its one-line error,
/// [`pipeline::run`]) and prints any other panic on one line; with `RUST_BACKTRACE` set, Rust's
/// default report is kept.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some() {
            default(info);
        } else if !pipeline::panic_is_reported() {
            eprintln!(
                "internal error: {} (please report it)",
                info.to_string().replace('\n', " ")
            );
        }
    }));
}

/// The model the binary embeds: EfficientNet-Lite0 from ImageNet weights, trained by this
/// project on CamVid (issue #21; see docs/BENCHMARKS.md).
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../assets/models/camvid-lite0.onnx");
/// Its name.
pub const DEFAULT_MODEL_NAME: &str = "assets/models/camvid-lite0.onnx (embedded)";
/// The from-scratch ResNet-lite baseline (issue #2), kept for tests that need a small, fast model.
pub const SMALL_MODEL: &[u8] = include_bytes!("../../assets/models/camvid-small.onnx");

/// Sample CamVid frames embedded in the binary (see assets/samples/README.md).
pub const DEFAULT_SAMPLES: &[(&str, &[u8])] = &[
    (
        "0016E5_07959.png",
        include_bytes!("../../assets/samples/0016E5_07959.png"),
    ),
    (
        "0016E5_08057.png",
        include_bytes!("../../assets/samples/0016E5_08057.png"),
    ),
    (
        "0016E5_08159.png",
        include_bytes!("../../assets/samples/0016E5_08159.png"),
    ),
];
