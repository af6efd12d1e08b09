//! `edge-seg image`: the rootfs overlay for one board (binary, model, board config, systemd
//! units, udev rule, sysusers entry) and the `flash.sh` / `install.sh` beside it, written
//! atomically into `--out` without touching files it did not write.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::board::BoardConfig;
use crate::quote::systemd_unquote;
use crate::render::{BINARY_PATH, BRIDGE_UNIT_NAME, UNIT_NAME};
use crate::FirmwareError;

/// The file in `--out` listing what `edge-seg image` wrote there.
pub const MANIFEST: &str = "edge-seg-image.manifest";

/// Where a file's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Generated text.
    Text(String),
    /// Copied from an input file (the model, the binary).
    File(PathBuf),
}

/// One file of the overlay.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlayFile {
    /// Path relative to `--out`, `/`-separated (`rootfs/etc/…`, `flash.sh`).
    pub path: String,
    /// Contents.
    pub source: Source,
    /// Unix permission bits.
    pub mode: u32,
}

/// Everything `edge-seg image` writes for a board.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The board.
    pub board: String,
    /// The files, in writing order (the manifest comes last).
    pub files: Vec<OverlayFile>,
    /// Whether the binary is part of it (`--binary`).
    pub has_binary: bool,
}

/// What [`Overlay::write`] did.
#[derive(Debug, Clone, Default)]
pub struct WriteReport {
    /// Files written (relative to `--out`), the manifest included.
    pub written: Vec<String>,
    /// Files of an earlier overlay there that this one no longer has, removed.
    pub removed: Vec<String>,
    /// Entries of `--out` (top level) that are not this overlay's, left alone.
    pub others: usize,
}

/// Checks that `path` is an aarch64 (64-bit little-endian ELF, machine 183) executable.
pub fn check_aarch64_elf(path: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut head = [0u8; 20];
    let mut f = fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    f.read_exact(&mut head)
        .map_err(|_| "not an ELF executable (too short)".to_string())?;
    if &head[..4] != b"\x7fELF" {
        return Err("not an ELF executable".into());
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if head[4] != 2 || head[5] != 1 || machine != 183 {
        let name = match (head[5], machine) {
            (1, 62) => "x86-64".to_string(),
            (1, 3) => "i386".to_string(),
            (1, 40) => "32-bit ARM".to_string(),
            (1, 243) => "RISC-V".to_string(),
            (1, 183) => "32-bit AArch64 (ILP32)".to_string(),
            (_, m) => format!("machine {m}"),
        };
        return Err(format!("an ELF for {name}, not aarch64"));
    }
    let kind = u16::from_le_bytes([head[16], head[17]]);
    if kind != 2 && kind != 3 {
        return Err(format!("an aarch64 ELF of type {kind}, not an executable"));
    }
    Ok(())
}

fn plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

impl Overlay {
    /// The overlay for `board` with the model file `model` and, when given, the aarch64
    /// `edge-seg` binary `binary` (checked to be one).
    pub fn plan(board: &BoardConfig, model: &Path, binary: Option<&Path>) -> Result<Self, FirmwareError> {
        let model_name = model
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let input = |what: String, reason: String| FirmwareError::Input { what, reason };
        if !plain_file_name(&model_name) || !model_name.ends_with(".onnx") {
            return Err(input(
                format!("--model {}", model.display()),
                "expected a .onnx file whose name is letters, digits, '-', '_', '.' (it is installed under that name)"
                    .into(),
            ));
        }
        if !model.is_file() {
            return Err(input(format!("--model {}", model.display()), "no such file".into()));
        }
        if let Some(bin) = binary {
            check_aarch64_elf(bin).map_err(|reason| {
                input(
                    format!("--binary {}", bin.display()),
                    format!(
                        "{reason}: cross-build it with firmware-configs/scripts/cross-build.sh (cargo build --release --target {} -p edge-seg-runtime)",
                        board.target
                    ),
                )
            })?;
        }
        let model_path = format!("{}/{}", board.model.dir.trim_end_matches('/'), model_name);
        // (path in the rootfs, source, mode)
        let mut rootfs: Vec<(String, Source, u32)> = Vec::new();
        if let Some(bin) = binary {
            rootfs.push((BINARY_PATH.into(), Source::File(bin.to_path_buf()), 0o755));
        }
        rootfs.push((model_path, Source::File(model.to_path_buf()), 0o644));
        rootfs.push((
            "/etc/edge-seg/board.toml".into(),
            Source::Text(board.board_toml()?),
            0o644,
        ));
        rootfs.push((
            format!("/etc/systemd/system/{UNIT_NAME}"),
            Source::Text(board.systemd_unit(&model_name)),
            0o644,
        ));
        if let Some(bridge) = board.camera_bridge_unit() {
            rootfs.push((
                format!("/etc/systemd/system/{BRIDGE_UNIT_NAME}"),
                Source::Text(bridge),
                0o644,
            ));
        }
        rootfs.push((
            "/etc/udev/rules.d/70-edge-seg-camera.rules".into(),
            Source::Text(board.udev_rule()),
            0o644,
        ));
        rootfs.push((
            "/etc/sysusers.d/edge-seg.conf".into(),
            Source::Text(board.sysusers()),
            0o644,
        ));
        // the scripts install the binary too (and refuse to run while it is missing)
        let mut listed: Vec<(String, u32)> = rootfs.iter().map(|(p, _, m)| (p.clone(), *m)).collect();
        if binary.is_none() {
            listed.insert(0, (BINARY_PATH.into(), 0o755));
        }
        let mut files: Vec<OverlayFile> = rootfs
            .into_iter()
            .map(|(p, source, mode)| OverlayFile {
                path: format!("rootfs{p}"),
                source,
                mode,
            })
            .collect();
        files.push(OverlayFile {
            path: "flash.sh".into(),
            source: Source::Text(board.flash_script(&listed)),
            mode: 0o755,
        });
        files.push(OverlayFile {
            path: "install.sh".into(),
            source: Source::Text(board.install_script(&listed)),
            mode: 0o755,
        });
        let mut manifest = format!(
            "# Files written by `edge-seg image --board {}`; a later run into this folder rewrites or\n\
             # removes only these.\n",
            board.name
        );
        for f in &files {
            manifest.push_str(&f.path);
            manifest.push('\n');
        }
        manifest.push_str(MANIFEST);
        manifest.push('\n');
        files.push(OverlayFile {
            path: MANIFEST.into(),
            source: Source::Text(manifest),
            mode: 0o644,
        });
        Ok(Self {
            board: board.name.clone(),
            files,
            has_binary: binary.is_some(),
        })
    }

    /// A generated text file by its path.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.files
            .iter()
            .find(|f| f.path == path)
            .and_then(|f| match &f.source {
                Source::Text(t) => Some(t.as_str()),
                Source::File(_) => None,
            })
    }

    /// The argument vector systemd will start the service with, read back from the rendered
    /// unit's `ExecStart=` line with systemd's quoting rules.
    pub fn service_argv(&self) -> Result<Vec<String>, FirmwareError> {
        let unit = self
            .text(&format!("rootfs/etc/systemd/system/{UNIT_NAME}"))
            .expect("the plan has the unit");
        let lines: Vec<&str> = unit.lines().filter_map(|l| l.strip_prefix("ExecStart=")).collect();
        let bad = |message: String| FirmwareError::Invalid {
            origin: UNIT_NAME.into(),
            message,
        };
        match lines.as_slice() {
            [one] => systemd_unquote(one).map_err(|e| bad(format!("ExecStart= cannot be read back: {e}"))),
            _ => Err(bad(format!("{} ExecStart= lines", lines.len()))),
        }
    }

    /// Writes the overlay into `out` (created when missing). Files of an earlier overlay there
    /// (its manifest) are replaced, and those this one no longer has removed; any other file in
    /// the way is an error, before anything is written, and files not in the way are left alone.
    /// Each file is written atomically; an input is never overwritten.
    pub fn write(&self, out: &Path) -> Result<WriteReport, FirmwareError> {
        let out_err = |reason: String| FirmwareError::Output {
            path: format!("--out {}", out.display()),
            reason,
        };
        if out.exists() && !out.is_dir() {
            return Err(out_err("not a folder".into()));
        }
        let previous = read_manifest(&out.join(MANIFEST)).map_err(|e| out_err(format!("{MANIFEST}: {e}")))?;
        let mut foreign = Vec::new();
        for f in &self.files {
            let target = out.join(&f.path);
            if let Ok(meta) = fs::symlink_metadata(&target) {
                if meta.is_dir() || !previous.contains(&f.path) {
                    foreign.push(f.path.clone());
                }
            }
        }
        if !foreign.is_empty() {
            return Err(out_err(format!(
                "{} file(s) there were not written by `edge-seg image` ({}); not overwriting them: choose an empty folder or move them",
                foreign.len(),
                foreign.iter().take(3).cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        // inputs are never overwritten (e.g. --model pointing into an earlier overlay)
        for f in &self.files {
            if let Source::File(src) = &f.source {
                let target = out.join(&f.path);
                if let (Ok(a), Ok(b)) = (src.canonicalize(), target.canonicalize()) {
                    if a == b {
                        return Err(FirmwareError::Input {
                            what: src.display().to_string(),
                            reason: format!(
                                "it is the overlay's own {} (it would be overwritten): give a file outside --out",
                                f.path
                            ),
                        });
                    }
                }
            }
        }
        let mut report = WriteReport::default();
        for f in &self.files {
            let target = out.join(&f.path);
            let io_err = |e: io::Error| FirmwareError::Output {
                path: target.display().to_string(),
                reason: format!("cannot write: {e}"),
            };
            if let Some(dir) = target.parent() {
                fs::create_dir_all(dir).map_err(io_err)?;
            }
            match &f.source {
                Source::Text(t) => seg_core::io::write_atomic(&target, t.as_bytes()).map_err(io_err)?,
                Source::File(src) => seg_core::io::write_atomic_with(&target, |w| {
                    let mut r =
                        fs::File::open(src).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
                    io::copy(&mut r, w).map(|_| ())
                })
                .map_err(io_err)?,
            }
            set_mode(&target, f.mode).map_err(io_err)?;
            report.written.push(f.path.clone());
        }
        let now: BTreeSet<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        for old in &previous {
            if !now.contains(old.as_str()) {
                let p = out.join(old);
                if fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
                    fs::remove_file(&p).map_err(|e| FirmwareError::Output {
                        path: p.display().to_string(),
                        reason: format!("cannot remove the earlier overlay's file: {e}"),
                    })?;
                    report.removed.push(old.clone());
                }
            }
        }
        let ours: BTreeSet<&str> = self
            .files
            .iter()
            .map(|f| f.path.split('/').next().unwrap_or(""))
            .collect();
        report.others = fs::read_dir(out)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| !ours.contains(e.file_name().to_string_lossy().as_ref()))
                    .count()
            })
            .unwrap_or(0);
        Ok(report)
    }
}

#[cfg(unix)]
fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> io::Result<()> {
    Ok(())
}

/// The relative paths an earlier manifest lists (none when there is no manifest).
fn read_manifest(p: &Path) -> Result<BTreeSet<String>, String> {
    let text = match fs::read_to_string(p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e.to_string()),
    };
    let mut set = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let ok = !line.starts_with('/') && line.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
        if !ok {
            return Err(format!("line {}: '{line}' is not a path inside the folder", i + 1));
        }
        set.insert(line.to_string());
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_elf(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[16] = 3;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("camvid-lite0.onnx");
        fs::write(&model, b"not really onnx, the runtime checks that").unwrap();
        let bin = dir.path().join("edge-seg");
        fs::write(&bin, fake_elf(183)).unwrap();
        (dir, model, bin)
    }

    #[test]
    fn elf_check_names_the_machine() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        fs::write(&p, fake_elf(62)).unwrap();
        assert_eq!(check_aarch64_elf(&p).unwrap_err(), "an ELF for x86-64, not aarch64");
        fs::write(&p, b"#!/bin/sh\n").unwrap();
        assert_eq!(check_aarch64_elf(&p).unwrap_err(), "not an ELF executable (too short)");
        fs::write(&p, [b'#'; 40]).unwrap();
        assert_eq!(check_aarch64_elf(&p).unwrap_err(), "not an ELF executable");
        fs::write(&p, fake_elf(183)).unwrap();
        check_aarch64_elf(&p).unwrap();
        // this test's own executable is an ELF for the host
        let me = std::env::current_exe().unwrap();
        if cfg!(all(target_arch = "x86_64", target_os = "linux")) {
            assert_eq!(check_aarch64_elf(&me).unwrap_err(), "an ELF for x86-64, not aarch64");
        }
    }

    #[test]
    fn writes_every_file_with_its_mode_and_a_manifest() {
        let (dir, model, bin) = setup();
        let board = BoardConfig::load("jetson-orin-nx-16gb").unwrap();
        let ov = Overlay::plan(&board, &model, Some(&bin)).unwrap();
        let out = dir.path().join("out");
        let r = ov.write(&out).unwrap();
        assert_eq!(r.written.len(), ov.files.len());
        assert_eq!((r.removed.len(), r.others), (0, 0));
        for f in &ov.files {
            let meta = fs::metadata(out.join(&f.path)).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                assert_eq!(meta.permissions().mode() & 0o777, f.mode, "{}", f.path);
            }
            assert!(meta.len() > 0, "{}", f.path);
        }
        assert_eq!(
            fs::read(out.join("rootfs/opt/edge-seg/camvid-lite0.onnx")).unwrap(),
            fs::read(&model).unwrap()
        );
        assert!(out.join("rootfs/etc/systemd/system/edge-seg-camera.service").is_file());
        let manifest = fs::read_to_string(out.join(MANIFEST)).unwrap();
        assert_eq!(
            read_manifest(&out.join(MANIFEST)).unwrap().len(),
            ov.files.len(),
            "{manifest}"
        );
        // no temporary files left behind
        let tmp = walk(&out).into_iter().filter(|p| p.contains(".tmp-")).count();
        assert_eq!(tmp, 0);
    }

    fn walk(dir: &Path) -> Vec<String> {
        let mut v = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                v.extend(walk(&p));
            } else {
                v.push(p.display().to_string());
            }
        }
        v
    }

    #[test]
    fn refuses_foreign_files_in_the_way_and_keeps_the_others() {
        let (dir, model, bin) = setup();
        let board = BoardConfig::load("jetson-orin-nano-devkit").unwrap();
        let ov = Overlay::plan(&board, &model, Some(&bin)).unwrap();
        let out = dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join("notes.txt"), "mine").unwrap();
        fs::write(out.join("flash.sh"), "my own flash script").unwrap();
        let e = ov.write(&out).unwrap_err().to_string();
        assert!(e.starts_with(&format!("--out {}: 1 file(s)", out.display())), "{e}");
        assert!(e.contains("(flash.sh)"), "{e}");
        // nothing was written
        assert_eq!(fs::read_to_string(out.join("flash.sh")).unwrap(), "my own flash script");
        assert!(!out.join("rootfs").exists());
        fs::remove_file(out.join("flash.sh")).unwrap();
        let r = ov.write(&out).unwrap();
        assert_eq!(r.others, 1);
        assert_eq!(fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");
    }

    #[test]
    fn rewrites_its_own_files_and_removes_those_it_no_longer_has() {
        let (dir, model, bin) = setup();
        let out = dir.path().join("out");
        let csi = BoardConfig::load("jetson-orin-nx-16gb").unwrap();
        Overlay::plan(&csi, &model, Some(&bin)).unwrap().write(&out).unwrap();
        fs::write(out.join("rootfs/etc/keep.conf"), "someone else's").unwrap();
        let usb = BoardConfig::load("jetson-agx-orin-64gb").unwrap();
        let r = Overlay::plan(&usb, &model, None).unwrap().write(&out).unwrap();
        let mut removed = r.removed.clone();
        removed.sort();
        assert_eq!(
            removed,
            [
                "rootfs/etc/systemd/system/edge-seg-camera.service",
                "rootfs/usr/local/bin/edge-seg"
            ]
        );
        assert!(fs::read_to_string(out.join("rootfs/etc/edge-seg/board.toml"))
            .unwrap()
            .contains("jetson-agx-orin-64gb"));
        assert_eq!(
            fs::read_to_string(out.join("rootfs/etc/keep.conf")).unwrap(),
            "someone else's"
        );
    }

    #[test]
    fn an_input_inside_the_overlay_is_refused() {
        let (dir, model, bin) = setup();
        let out = dir.path().join("out");
        let board = BoardConfig::load("jetson-orin-nano-devkit").unwrap();
        Overlay::plan(&board, &model, Some(&bin)).unwrap().write(&out).unwrap();
        let inner = out.join("rootfs/opt/edge-seg/camvid-lite0.onnx");
        let before = fs::read(&inner).unwrap();
        let e = Overlay::plan(&board, &inner, Some(&bin))
            .unwrap()
            .write(&out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("it would be overwritten"), "{e}");
        assert_eq!(fs::read(&inner).unwrap(), before);
    }

    #[test]
    fn bad_inputs_name_the_flag() {
        let (dir, model, _) = setup();
        let board = BoardConfig::load("jetson-orin-nano-devkit").unwrap();
        let x86 = dir.path().join("x86");
        fs::write(&x86, fake_elf(62)).unwrap();
        let e = Overlay::plan(&board, &model, Some(&x86)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("--binary {}: an ELF for x86-64", x86.display())),
            "{e}"
        );
        assert!(e.contains("cross-build.sh"), "{e}");
        let spaced = dir.path().join("my model.onnx");
        fs::write(&spaced, b"x").unwrap();
        let e = Overlay::plan(&board, &spaced, None).unwrap_err().to_string();
        assert!(e.starts_with("--model "), "{e}");
        let e = Overlay::plan(&board, &dir.path().join("missing.onnx"), None)
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("no such file"), "{e}");
    }

    #[test]
    fn a_bad_manifest_is_reported_not_trusted() {
        let (dir, model, _) = setup();
        let out = dir.path().join("out");
        fs::create_dir_all(&out).unwrap();
        fs::write(out.join(MANIFEST), "../../etc/passwd\n").unwrap();
        let board = BoardConfig::load("jetson-orin-nano-devkit").unwrap();
        let e = Overlay::plan(&board, &model, None)
            .unwrap()
            .write(&out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a path inside the folder"), "{e}");
    }
}
