//! Where rendered frames go: PNG files, a Linux framebuffer, an MJPEG-over-HTTP stream.

use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::RuntimeError;

pub mod fb;
pub mod serve;

/// A rendered frame.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// 0-based frame index.
    pub index: u64,
    /// Name for files.
    pub name: String,
    /// The overlay / mask / side-by-side picture.
    pub image: RgbImage,
    /// The status line drawn on it.
    pub status: String,
    /// Output frame rate when it was drawn.
    pub fps: f64,
}

/// A frame sink; `finish` flushes and releases it.
pub trait Output: Send {
    /// What it is, for the start-up line.
    fn describe(&self) -> String;
    /// Shows / writes / sends one frame.
    fn write(&mut self, frame: &Rendered) -> Result<(), RuntimeError>;
    /// Called once after the last frame.
    fn finish(&mut self) -> Result<(), RuntimeError> {
        Ok(())
    }
}

/// PNG files `<dir>/<name>.png`, each written atomically.
pub struct PngDir {
    dir: PathBuf,
}

impl PngDir {
    /// Creates the folder if needed.
    pub fn new(dir: &Path) -> Result<Self, RuntimeError> {
        std::fs::create_dir_all(dir).map_err(|e| RuntimeError::Output {
            path: dir.display().to_string(),
            reason: format!("cannot create: {e}"),
        })?;
        Ok(Self { dir: dir.to_path_buf() })
    }
}

impl Output for PngDir {
    fn describe(&self) -> String {
        format!("PNG files in {}", self.dir.display())
    }
    fn write(&mut self, frame: &Rendered) -> Result<(), RuntimeError> {
        let path = self.dir.join(format!("{}.png", frame.name));
        let err = |reason: String| RuntimeError::Output {
            path: path.display().to_string(),
            reason,
        };
        let mut png = Vec::new();
        frame
            .image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(|e| err(format!("cannot encode PNG: {e}")))?;
        seg_core::io::write_atomic(&path, &png).map_err(|e| err(format!("cannot write: {e}")))
    }
}

/// JPEG bytes of a frame (for the HTTP stream).
pub fn encode_jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(img.len() / 8);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .expect("JPEG encoding into memory cannot fail for an RGB image");
    out
}
