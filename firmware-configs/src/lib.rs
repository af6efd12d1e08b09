//! Jetson deployment for edge-seg (issue #28): per-board configs (`boards/*.toml`, [`board`]),
//! the files they render ([`render`]: the `edge-seg run` command line, systemd units, udev rule,
//! sysusers entry, `flash.sh`, `install.sh`), and the rootfs overlay `edge-seg image` writes
//! ([`overlay`]). The `edge-seg` binary only parses its flags and checks the rendered command
//! line with its own parser; everything else is here.
//!
//! Depends on `seg-core` for the one-line TOML errors (`file:line:col: message`) and the atomic
//! writer shared by every output of the project.

pub mod board;
pub mod overlay;
pub mod quote;
pub mod render;

pub use board::BoardConfig;
pub use overlay::{Overlay, WriteReport};

/// Errors; each message is one line naming the file or flag and the problem.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// A board file that does not parse.
    #[error(transparent)]
    Config(#[from] seg_core::config::ConfigError),
    /// A board file that parses but is not usable.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A bad flag or input file (`--board`, `--model`, `--binary`).
    #[error("{what}: {reason}")]
    Input {
        /// The flag and its value.
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// The output folder or a file in it cannot be written.
    #[error("{path}: {reason}")]
    Output {
        /// The folder or file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}
