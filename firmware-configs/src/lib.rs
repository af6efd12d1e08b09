//! Per-board deployment configs for edge-seg on Jetson boards.
//!
//! Today: the board config format (`boards/*.toml`) and the systemd unit rendered from it. The
//! image overlay and flash command generation are still to come.

use serde::{Deserialize, Serialize};

/// One board's deployment settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// Board name (file stem).
    pub name: String,
    /// Rust target triple to cross-compile `edge-seg` for.
    pub target: String,
    /// The L4T board config name given to NVIDIA's flash script.
    pub l4t_board: String,
    /// Root device to flash.
    pub rootdev: String,
    /// The `edge-seg` service.
    pub service: ServiceConfig,
}

/// How the `edge-seg` service runs on the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Camera device.
    pub camera: String,
    /// Model path on the board.
    pub model: String,
    /// Extra `edge-seg run` arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Unix user the service runs as.
    pub user: String,
}

impl BoardConfig {
    /// Parses a board TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, seg_core::config::ConfigError> {
        seg_core::config::parse_toml(text, origin)
    }

    /// The systemd unit that starts `edge-seg run` at boot and restarts it if it exits.
    pub fn systemd_unit(&self) -> String {
        let s = &self.service;
        let mut cmd = format!("/usr/local/bin/edge-seg run --camera {} --model {}", s.camera, s.model);
        for a in &s.args {
            cmd.push(' ');
            cmd.push_str(a);
        }
        format!(
            "[Unit]\nDescription=edge-seg camera segmentation ({})\nAfter=network.target\n\n\
             [Service]\nUser={}\nExecStart={cmd}\nRestart=on-failure\nRestartSec=2\n\n\
             [Install]\nWantedBy=multi-user.target\n",
            self.name, s.user
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_boards_parse_and_render() {
        let text = include_str!("../boards/jetson-orin-nano-devkit.toml");
        let b = BoardConfig::parse(text, "jetson-orin-nano-devkit.toml").unwrap();
        assert_eq!(b.target, "aarch64-unknown-linux-gnu");
        let unit = b.systemd_unit();
        assert!(unit.contains("ExecStart=/usr/local/bin/edge-seg run --camera /dev/video0 --model /opt/edge-seg/camvid-small.onnx --mode overlay"));
        assert!(unit.contains("User=edge-seg"));
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let e = BoardConfig::parse(
            "name = \"x\"\ntarget = \"t\"\nl4t_board = \"b\"\nrootdev = \"r\"\nbogus = 1\n",
            "b.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("b.toml:5:1: unknown field `bogus`"), "{e}");
    }
}
