//! Frame sources for `edge-seg run --input`: an image file or a folder of images (sorted), or
//! the embedded sample frames.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::RuntimeError;

/// Image file extensions read from folders.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "bmp"];

/// Where frames come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Image files, in order.
    Files(Vec<PathBuf>),
    /// In-memory encoded images `(name, bytes)`.
    Embedded(&'static [(&'static str, &'static [u8])]),
}

impl Source {
    /// An image file or a folder of images (sorted by name).
    pub fn from_path(path: &Path) -> Result<Self, RuntimeError> {
        let err = |reason: String| RuntimeError::Input {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
        if meta.is_file() {
            return Ok(Self::Files(vec![path.to_path_buf()]));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| err(e.to_string()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(err(format!(
                "no images ({}) in this folder",
                IMAGE_EXTENSIONS.join(", ")
            )));
        }
        Ok(Self::Files(files))
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        match self {
            Self::Files(f) => f.len(),
            Self::Embedded(e) => e.len(),
        }
    }

    /// True when there is no frame.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Frame `i`: its name (file stem) and decoded RGB image.
    pub fn frame(&self, i: usize) -> Result<(String, RgbImage), RuntimeError> {
        match self {
            Self::Files(f) => {
                let p = &f[i];
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                Ok((name, read_rgb(p)?))
            }
            Self::Embedded(e) => {
                let (name, bytes) = e[i];
                let img = image::load_from_memory(bytes)
                    .map_err(|err| RuntimeError::Input {
                        path: name.into(),
                        reason: format!("cannot decode image: {err}"),
                    })?
                    .to_rgb8();
                Ok((name.trim_end_matches(".png").to_string(), img))
            }
        }
    }
}

/// Decodes an image file to RGB; the error names the file.
pub fn read_rgb(path: &Path) -> Result<RgbImage, RuntimeError> {
    let err = |reason: String| RuntimeError::Input {
        path: path.display().to_string(),
        reason,
    };
    let reader = image::ImageReader::open(path).map_err(|e| err(e.to_string()))?;
    let reader = reader.with_guessed_format().map_err(|e| err(e.to_string()))?;
    Ok(reader
        .decode()
        .map_err(|e| err(format!("cannot decode image: {e}")))?
        .to_rgb8())
}
