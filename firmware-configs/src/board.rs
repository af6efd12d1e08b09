//! The board config format (`boards/*.toml`): what is on the board, how it is flashed, and how
//! the `edge-seg` service runs there. Parsing denies unknown keys; [`BoardConfig::validate`]
//! checks ranges and the combinations `edge-seg run` would refuse at start.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::FirmwareError;

/// The board files shipped in `firmware-configs/boards/`, compiled in: `(name, TOML text)`.
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "jetson-orin-nano-devkit",
        include_str!("../boards/jetson-orin-nano-devkit.toml"),
    ),
    (
        "jetson-orin-nx-16gb",
        include_str!("../boards/jetson-orin-nx-16gb.toml"),
    ),
    (
        "jetson-agx-orin-64gb",
        include_str!("../boards/jetson-agx-orin-64gb.toml"),
    ),
    ("jetson-xavier-nx", include_str!("../boards/jetson-xavier-nx.toml")),
];

/// One board's deployment settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardConfig {
    /// Board name: the file stem.
    pub name: String,
    /// Human name of the module and carrier.
    pub description: String,
    /// JetPack release the board runs (e.g. `6.2.1`).
    pub jetpack: String,
    /// Its Jetson Linux (L4T) release, `MAJOR.MINOR.PATCH` (e.g. `36.4.4`).
    pub l4t: String,
    /// Rust target triple to cross-compile `edge-seg` for.
    pub target: String,
    /// CUDA compute capability of the GPU, `MAJOR.MINOR` (8.7 Orin, 7.2 Xavier).
    pub cuda_compute_cap: String,
    /// Where the root file system lives on the board (e.g. `nvme0n1p1`, `mmcblk0p1`).
    pub root_device: String,
    /// Flashing with NVIDIA's tools.
    pub flash: FlashConfig,
    /// Power mode.
    pub power: PowerConfig,
    /// The camera the service reads.
    pub camera: CameraConfig,
    /// Where the segmented stream goes.
    #[serde(default)]
    pub display: DisplayConfig,
    /// Inference engine.
    #[serde(default)]
    pub engine: EngineConfig,
    /// The model.
    #[serde(default)]
    pub model: ModelConfig,
    /// The `edge-seg` service.
    #[serde(default)]
    pub service: ServiceConfig,
}

/// Which of NVIDIA's flash scripts, with which arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlashConfig {
    /// `initrd`: `tools/kernel_flash/l4t_initrd_flash.sh` (NVMe, USB, and internal media);
    /// `flash`: `flash.sh` (internal eMMC).
    pub tool: FlashTool,
    /// The L4T board config name (`Linux_for_Tegra/<name>.conf`).
    pub l4t_board: String,
    /// The script's `<rootdev>` argument (`internal`, `external`, `mmcblk0p1`, …).
    pub rootdev: String,
    /// Options before `<board> <rootdev>` (one argument per element).
    #[serde(default)]
    pub args: Vec<String>,
}

/// NVIDIA's flash scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashTool {
    /// `tools/kernel_flash/l4t_initrd_flash.sh`.
    Initrd,
    /// `flash.sh`.
    Flash,
}

impl FlashTool {
    /// The script, relative to `Linux_for_Tegra`.
    pub fn script(self) -> &'static str {
        match self {
            FlashTool::Initrd => "./tools/kernel_flash/l4t_initrd_flash.sh",
            FlashTool::Flash => "./flash.sh",
        }
    }
}

/// The nvpmodel power mode the service sets before it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerConfig {
    /// Mode id (`nvpmodel -m ID`), 0..=15.
    pub nvpmodel: u8,
    /// The mode's name in the board's `/etc/nvpmodel.conf` (for people).
    pub name: String,
}

/// The camera.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraConfig {
    /// `usb`: a UVC camera, read by `edge-seg` through V4L2 (YUYV or MJPEG). `csi`: a MIPI CSI
    /// sensor; edge-seg cannot read its raw Bayer node, so a bridge service
    /// (`nvarguscamerasrc → nvvidconv → YUY2 → v4l2loopback`) turns it into a V4L2 device.
    pub kind: CameraKind,
    /// Frame size `WIDTHxHEIGHT` (requested from a USB camera; the bridge's output for CSI).
    #[serde(default)]
    pub size: Option<String>,
    /// Frame rate, 1..=240 (required for CSI).
    #[serde(default)]
    pub fps: Option<u32>,
    /// USB: `auto`, `yuyv` or `mjpeg` (CSI is always YUYV through the bridge).
    #[serde(default)]
    pub pixel_format: PixelFormat,
    /// USB: extra udev match keys choosing the camera when several are plugged, e.g.
    /// `ATTRS{idVendor}=="046d"`; default: the first capture node of any USB camera.
    #[serde(default)]
    pub udev_match: Option<String>,
    /// CSI: the sensor id given to `nvarguscamerasrc`.
    #[serde(default)]
    pub sensor_id: u8,
    /// CSI: the v4l2loopback device number (`/dev/videoN`), 1..=63.
    #[serde(default = "default_loopback_nr")]
    pub loopback_nr: u8,
}

fn default_loopback_nr() -> u8 {
    10
}

/// The two camera paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraKind {
    /// USB (UVC) camera: V4L2 directly.
    Usb,
    /// CSI sensor through the nvargus → v4l2loopback bridge.
    Csi,
}

/// `edge-seg run --pixel-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PixelFormat {
    /// Whatever the camera offers (MJPEG preferred for large frames).
    #[default]
    Auto,
    /// Packed YUV 4:2:2.
    Yuyv,
    /// Motion JPEG.
    Mjpeg,
}

impl PixelFormat {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            PixelFormat::Auto => "auto",
            PixelFormat::Yuyv => "yuyv",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }
}

/// Where the segmented stream goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    /// `serve` (MJPEG over HTTP at `address`), `fb` (the framebuffer `device`) or `none`.
    pub kind: DisplayKind,
    /// `serve`: the listening address.
    #[serde(default = "default_address")]
    pub address: String,
    /// `fb`: the framebuffer device.
    #[serde(default = "default_fb")]
    pub device: String,
}

fn default_address() -> String {
    "0.0.0.0:8080".into()
}

fn default_fb() -> String {
    "/dev/fb0".into()
}

impl Default for DisplayConfig {
    fn default() -> Self {
        Self {
            kind: DisplayKind::Serve,
            address: default_address(),
            device: default_fb(),
        }
    }
}

/// The outputs a board can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisplayKind {
    /// `--serve ADDRESS`.
    Serve,
    /// `--display fb:DEVICE`.
    Fb,
    /// Statistics only.
    None,
}

/// Inference engine: `--backend`, `--ep` and friends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `tract` (pure Rust, CPU) or `ort` (onnxruntime, loaded at run time).
    pub backend: Backend,
    /// onnxruntime execution provider (`cpu` with tract).
    #[serde(default)]
    pub ep: Ep,
    /// TensorRT: fp16 engines (needs `ep = "tensorrt"`).
    #[serde(default)]
    pub trt_fp16: bool,
    /// TensorRT: keep built engines in the service's cache folder (needs `ep = "tensorrt"`).
    #[serde(default)]
    pub trt_cache: bool,
    /// Inference threads, 1..=64 (default: all cores).
    #[serde(default)]
    pub threads: Option<u32>,
    /// `ORT_DYLIB_PATH` for the service (default: the pip package `python3` finds).
    #[serde(default)]
    pub ort_dylib: Option<String>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Tract,
            ep: Ep::Cpu,
            trt_fp16: false,
            trt_cache: false,
            threads: None,
            ort_dylib: None,
        }
    }
}

/// `edge-seg run --backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// tract on the CPU.
    Tract,
    /// onnxruntime.
    Ort,
}

/// `edge-seg run --ep`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ep {
    /// CPU.
    #[default]
    Cpu,
    /// CUDA.
    Cuda,
    /// TensorRT (with CUDA behind it).
    Tensorrt,
}

impl Ep {
    /// The flag value.
    pub fn as_str(self) -> &'static str {
        match self {
            Ep::Cpu => "cpu",
            Ep::Cuda => "cuda",
            Ep::Tensorrt => "tensorrt",
        }
    }
}

/// The model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model this board is meant to run (a path in this repository; `edge-seg image
    /// --model` installs whatever it is given).
    pub recommended: String,
    /// Folder on the board the model is installed into (absolute).
    pub dir: String,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            recommended: "assets/models/camvid-lite0.onnx".into(),
            dir: "/opt/edge-seg".into(),
        }
    }
}

/// The `edge-seg` service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unix user the service runs as (created by systemd-sysusers).
    pub user: String,
    /// Keep adapting to the scene (`--adapt`, state kept under `/var/lib/<user>`); needs tract.
    pub adapt: bool,
    /// systemd watchdog (seconds, 5..=3600): the service is restarted when no frame reaches the
    /// outputs for this long.
    pub watchdog_sec: u32,
    /// Further `edge-seg run` arguments (one per element).
    pub extra_args: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            user: "edge-seg".into(),
            adapt: false,
            watchdog_sec: 30,
            extra_args: Vec::new(),
        }
    }
}

/// Parses `WIDTHxHEIGHT` (each 16..=8192).
pub fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    let (w, h) = (w.parse::<u32>().ok()?, h.parse::<u32>().ok()?);
    ((16..=8192).contains(&w) && (16..=8192).contains(&h)).then_some((w, h))
}

impl BoardConfig {
    /// Parses and validates a board TOML; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, FirmwareError> {
        let b: BoardConfig = seg_core::config::parse_toml(text, origin)?;
        b.validate(origin)?;
        Ok(b)
    }

    /// The file `--board spec` names: the shipped board's, or `spec` itself.
    pub fn origin(spec: &str) -> String {
        if spec.contains('/') || spec.ends_with(".toml") {
            spec.to_string()
        } else {
            format!("firmware-configs/boards/{spec}.toml")
        }
    }

    /// A shipped board by name, or a board file when `spec` is a path (contains `/` or ends in
    /// `.toml`).
    pub fn load(spec: &str) -> Result<Self, FirmwareError> {
        if spec.contains('/') || spec.ends_with(".toml") {
            let path = Path::new(spec);
            let text = std::fs::read_to_string(path).map_err(|e| FirmwareError::Input {
                what: format!("--board {spec}"),
                reason: format!("cannot read: {e}"),
            })?;
            let b = Self::parse(&text, spec)?;
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if b.name != stem {
                return Err(FirmwareError::Invalid {
                    origin: spec.into(),
                    message: format!("name = \"{}\" differs from the file name ({stem})", b.name),
                });
            }
            return Ok(b);
        }
        match SHIPPED.iter().find(|(n, _)| *n == spec) {
            Some((n, text)) => Self::parse(text, &format!("firmware-configs/boards/{n}.toml")),
            None => Err(FirmwareError::Input {
                what: format!("--board {spec}"),
                reason: format!(
                    "no such board (shipped: {}; or give a board file path)",
                    SHIPPED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    }

    /// Every shipped board, parsed and validated.
    pub fn shipped() -> Result<Vec<Self>, FirmwareError> {
        SHIPPED
            .iter()
            .map(|(n, text)| {
                let origin = format!("firmware-configs/boards/{n}.toml");
                let b = Self::parse(text, &origin)?;
                if b.name != *n {
                    return Err(FirmwareError::Invalid {
                        origin,
                        message: format!("name = \"{}\" differs from the file name", b.name),
                    });
                }
                Ok(b)
            })
            .collect()
    }

    /// Checks ranges, formats and the combinations `edge-seg run` refuses.
    pub fn validate(&self, origin: &str) -> Result<(), FirmwareError> {
        let bad = |message: String| {
            Err(FirmwareError::Invalid {
                origin: origin.into(),
                message,
            })
        };
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
        if !plain(&self.name) {
            return bad(format!("name = \"{}\": use letters, digits, '-', '_', '.'", self.name));
        }
        let version = |v: &str, parts: usize| {
            let p: Vec<&str> = v.split('.').collect();
            p.len() >= parts.min(2)
                && p.len() <= parts
                && p.iter().all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
        };
        if !version(&self.jetpack, 3) {
            return bad(format!("jetpack = \"{}\": expected a release like 6.2.1", self.jetpack));
        }
        if !version(&self.l4t, 3) || self.l4t.split('.').count() != 3 {
            return bad(format!(
                "l4t = \"{}\": expected MAJOR.MINOR.PATCH, e.g. 36.4.4",
                self.l4t
            ));
        }
        if !self.target.starts_with("aarch64-") || !self.target.contains("-linux-") {
            return bad(format!(
                "target = \"{}\": Jetson boards run aarch64 Linux (aarch64-unknown-linux-gnu)",
                self.target
            ));
        }
        if !version(&self.cuda_compute_cap, 2) || self.cuda_compute_cap.split('.').count() != 2 {
            return bad(format!(
                "cuda_compute_cap = \"{}\": expected MAJOR.MINOR (8.7 for Orin, 7.2 for Xavier)",
                self.cuda_compute_cap
            ));
        }
        if !plain(&self.root_device) {
            return bad(format!(
                "root_device = \"{}\": expected a device name like nvme0n1p1",
                self.root_device
            ));
        }
        let f = &self.flash;
        if !plain(&f.l4t_board) {
            return bad(format!(
                "flash.l4t_board = \"{}\": not a board config name",
                f.l4t_board
            ));
        }
        if !plain(&f.rootdev) {
            return bad(format!("flash.rootdev = \"{}\": not a device name", f.rootdev));
        }
        if self.power.nvpmodel > 15 {
            return bad(format!("power.nvpmodel = {}: expected 0..=15", self.power.nvpmodel));
        }
        let c = &self.camera;
        if let Some(s) = &c.size {
            if parse_size(s).is_none() {
                return bad(format!("camera.size = \"{s}\": expected WIDTHxHEIGHT, each 16..=8192"));
            }
        }
        if let Some(fps) = c.fps {
            if !(1..=240).contains(&fps) {
                return bad(format!("camera.fps = {fps}: expected 1..=240"));
            }
        }
        match c.kind {
            CameraKind::Usb => {
                if let Some(m) = &c.udev_match {
                    if m.contains(['\n', '\r', '#']) || !m.contains("==") {
                        return bad(format!(
                            "camera.udev_match = {m:?}: expected udev match keys like ATTRS{{idVendor}}==\"046d\""
                        ));
                    }
                }
            }
            CameraKind::Csi => {
                if c.size.is_none() || c.fps.is_none() {
                    return bad("camera: a CSI camera needs size and fps (the bridge's output)".into());
                }
                if c.pixel_format == PixelFormat::Mjpeg {
                    return bad("camera.pixel_format = \"mjpeg\": the CSI bridge delivers YUYV".into());
                }
                if c.udev_match.is_some() {
                    return bad("camera.udev_match: only for USB cameras".into());
                }
                if !(1..=63).contains(&c.loopback_nr) {
                    return bad(format!("camera.loopback_nr = {}: expected 1..=63", c.loopback_nr));
                }
            }
        }
        let d = &self.display;
        if d.kind == DisplayKind::Serve && d.address.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "display.address = \"{}\": expected IP:PORT, e.g. 0.0.0.0:8080",
                d.address
            ));
        }
        if d.kind == DisplayKind::Fb && (!d.device.starts_with("/dev/") || d.device.contains(char::is_whitespace)) {
            return bad(format!("display.device = \"{}\": expected /dev/fbN", d.device));
        }
        let e = &self.engine;
        if e.backend == Backend::Tract && e.ep != Ep::Cpu {
            return bad(format!(
                "engine.ep = \"{}\" needs backend = \"ort\" (tract runs on the CPU)",
                e.ep.as_str()
            ));
        }
        if (e.trt_fp16 || e.trt_cache) && e.ep != Ep::Tensorrt {
            return bad("engine.trt_fp16 and engine.trt_cache need ep = \"tensorrt\"".into());
        }
        if let Some(t) = e.threads {
            if !(1..=64).contains(&t) {
                return bad(format!("engine.threads = {t}: expected 1..=64"));
            }
        }
        if let Some(p) = &e.ort_dylib {
            if e.backend != Backend::Ort || !p.starts_with('/') || p.contains(['\n', '"', '\\', '%', '$']) {
                return bad(format!(
                    "engine.ort_dylib = {p:?}: an absolute library path, with backend = \"ort\""
                ));
            }
        }
        let m = &self.model;
        if !m.dir.starts_with('/') || m.dir.contains(char::is_whitespace) || m.dir.contains("..") {
            return bad(format!(
                "model.dir = \"{}\": expected an absolute folder without spaces",
                m.dir
            ));
        }
        let s = &self.service;
        if !s
            .user
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            || !s.user.starts_with(|ch: char| ch.is_ascii_lowercase())
            || s.user.len() > 31
        {
            return bad(format!(
                "service.user = \"{}\": expected a lower-case user name",
                s.user
            ));
        }
        if s.adapt && e.backend != Backend::Tract {
            return bad(
                "service.adapt = true needs engine.backend = \"tract\" (the adaptation worker publishes tract plans)"
                    .into(),
            );
        }
        if !(5..=3600).contains(&s.watchdog_sec) {
            return bad(format!("service.watchdog_sec = {}: expected 5..=3600", s.watchdog_sec));
        }
        for a in &s.extra_args {
            if a.contains(['\n', '\r', '\0']) {
                return bad(format!("service.extra_args: {a:?} contains a line break"));
            }
        }
        for a in &f.args {
            if a.contains(['\n', '\r', '\0']) {
                return bad(format!("flash.args: {a:?} contains a line break"));
            }
        }
        Ok(())
    }

    /// The JetPack / L4T line for people: `JetPack 6.2.1 (Jetson Linux 36.4.4)`.
    pub fn release(&self) -> String {
        format!("JetPack {} (Jetson Linux {})", self.jetpack, self.l4t)
    }

    /// The `# R36 (release), REVISION: 4.4` prefix of `/etc/nv_tegra_release` for this L4T.
    pub fn nv_tegra_release_prefix(&self) -> String {
        let (major, rest) = self.l4t.split_once('.').unwrap_or((&self.l4t, "0.0"));
        format!("# R{major} (release), REVISION: {rest},")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_board_parses_and_validates() {
        let boards = BoardConfig::shipped().unwrap();
        assert_eq!(boards.len(), 4);
        for b in &boards {
            assert_eq!(b.target, "aarch64-unknown-linux-gnu", "{}", b.name);
            let cc = if b.name.contains("xavier") { "7.2" } else { "8.7" };
            assert_eq!(b.cuda_compute_cap, cc, "{}", b.name);
        }
        // the four boards of the issue, and at least one of each camera path and backend
        let kinds: Vec<_> = boards.iter().map(|b| b.camera.kind).collect();
        assert!(kinds.contains(&CameraKind::Usb) && kinds.contains(&CameraKind::Csi));
        let eps: Vec<_> = boards.iter().map(|b| (b.engine.backend, b.engine.ep)).collect();
        assert!(eps.contains(&(Backend::Tract, Ep::Cpu)));
        assert!(eps.contains(&(Backend::Ort, Ep::Tensorrt)));
    }

    #[test]
    fn the_shipped_file_is_the_one_on_disk() {
        // `SHIPPED` embeds the files; a board file added to the folder must be listed there
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = SHIPPED.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(on_disk, listed);
    }

    fn base() -> String {
        SHIPPED[0].1.to_string()
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let text = format!("{}\n[extra]\nbogus = 1\n", base());
        let e = BoardConfig::parse(&text, "b.toml").unwrap_err().to_string();
        assert!(e.starts_with("b.toml:"), "{e}");
        assert!(e.contains("unknown field `extra`"), "{e}");
        let text = base().replace("[service]\n", "[service]\nbogus = 2\n");
        let e = BoardConfig::parse(&text, "b.toml").unwrap_err().to_string();
        assert!(e.contains("unknown field `bogus`"), "{e}");
    }

    #[test]
    fn combinations_edge_seg_run_refuses_are_refused() {
        let cases = [
            (
                base().replace("backend = \"tract\"", "backend = \"ort\""),
                "service.adapt = true needs engine.backend = \"tract\"",
            ),
            (
                base().replace("ep = \"cpu\"", "ep = \"cuda\""),
                "needs backend = \"ort\"",
            ),
            (base().replace("fps = 30", "fps = 0"), "camera.fps = 0"),
            (
                base().replace("size = \"1280x720\"", "size = \"1280*720\""),
                "camera.size",
            ),
            (
                base().replace("watchdog_sec = 30", "watchdog_sec = 1"),
                "watchdog_sec = 1",
            ),
            (base().replace("l4t = \"36.4.4\"", "l4t = \"36.4\""), "l4t = \"36.4\""),
            (
                base().replace(
                    "target = \"aarch64-unknown-linux-gnu\"",
                    "target = \"x86_64-unknown-linux-gnu\"",
                ),
                "aarch64",
            ),
            (
                base().replace("address = \"0.0.0.0:8080\"", "address = \"8080\""),
                "display.address",
            ),
        ];
        for (text, want) in cases {
            assert_ne!(text, base(), "the case did not change the file: {want}");
            let e = BoardConfig::parse(&text, "b.toml").unwrap_err().to_string();
            assert!(e.starts_with("b.toml: "), "{e}");
            assert!(e.contains(want), "'{want}' not in: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn unknown_board_lists_the_shipped_ones() {
        let e = BoardConfig::load("jetson-nano").unwrap_err().to_string();
        assert!(e.starts_with("--board jetson-nano: no such board"), "{e}");
        assert!(e.contains("jetson-orin-nano-devkit"), "{e}");
    }

    #[test]
    fn board_file_name_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("other.toml");
        std::fs::write(&p, base()).unwrap();
        let e = BoardConfig::load(p.to_str().unwrap()).unwrap_err().to_string();
        assert!(e.contains("differs from the file name (other)"), "{e}");
        let p = dir.path().join("jetson-orin-nano-devkit.toml");
        std::fs::write(&p, base()).unwrap();
        assert_eq!(
            BoardConfig::load(p.to_str().unwrap()).unwrap().name,
            "jetson-orin-nano-devkit"
        );
    }

    #[test]
    fn release_line_matches_nv_tegra_release() {
        let b = BoardConfig::load("jetson-orin-nano-devkit").unwrap();
        assert_eq!(b.nv_tegra_release_prefix(), "# R36 (release), REVISION: 4.4,");
    }
}
