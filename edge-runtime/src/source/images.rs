//! Image files and folders, and the binary's embedded sample frames.

use std::path::{Path, PathBuf};

use image::RgbImage;

use super::{FrameSource, IMAGE_EXTENSIONS};
use crate::frame::{PixelFormat, RawFrame};
use crate::RuntimeError;

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

/// Image files in order (a single file or a sorted folder).
#[derive(Debug, Clone)]
pub struct ImageFiles {
    files: Vec<PathBuf>,
    names: Vec<String>,
    next: usize,
}

/// Output names for `files`, one each, all different: the file stem, except where two files
/// share a stem (`a.png`, `a.jpg`) or a name is not UTF-8 (its lossy form may equal another's):
/// then the whole file name (`a.jpg`); any name still taken gets `~N` (N = its position).
pub fn output_names(files: &[PathBuf]) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let stem = |p: &PathBuf| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut count: HashMap<String, usize> = HashMap::new();
    for p in files {
        *count.entry(stem(p)).or_default() += 1;
    }
    let mut taken = HashSet::new();
    files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let s = stem(p);
            let exact = p.file_stem().and_then(|s| s.to_str()).is_some();
            let mut name = if count[&s] == 1 && exact {
                s
            } else {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            if !taken.insert(name.clone()) {
                name = format!("{name}~{i}");
                taken.insert(name.clone());
            }
            name
        })
        .collect()
}

impl ImageFiles {
    /// These files, in this order.
    pub fn new(files: Vec<PathBuf>) -> Self {
        Self {
            names: output_names(&files),
            files,
            next: 0,
        }
    }

    /// The images of a folder, sorted by name.
    pub fn from_dir(dir: &Path) -> Result<Self, RuntimeError> {
        let err = |reason: String| RuntimeError::Input {
            path: dir.display().to_string(),
            reason,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
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
        Ok(Self::new(files))
    }
}

impl FrameSource for ImageFiles {
    fn describe(&self) -> String {
        match self.files.as_slice() {
            [one] => one.display().to_string(),
            many => format!(
                "{} images in {}",
                many.len(),
                many[0].parent().map(|p| p.display().to_string()).unwrap_or_default()
            ),
        }
    }
    fn is_live(&self) -> bool {
        false
    }
    fn len_hint(&self) -> Option<usize> {
        Some(self.files.len())
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        let Some(p) = self.files.get(self.next) else {
            return Ok(None);
        };
        let data = std::fs::read(p).map_err(|e| RuntimeError::Input {
            path: p.display().to_string(),
            reason: e.to_string(),
        })?;
        let name = self.names[self.next].clone();
        self.next += 1;
        Ok(Some(
            RawFrame::new(self.next as u64 - 1, name, PixelFormat::Image, 0, 0, data)
                .with_origin(p.display().to_string()),
        ))
    }
}

/// Encoded images held in memory `(file name, bytes)` (the binary's sample frames).
#[derive(Debug, Clone)]
pub struct Embedded {
    frames: &'static [(&'static str, &'static [u8])],
    next: usize,
}

impl Embedded {
    /// The given frames, in order.
    pub fn new(frames: &'static [(&'static str, &'static [u8])]) -> Self {
        Self { frames, next: 0 }
    }
}

impl FrameSource for Embedded {
    fn describe(&self) -> String {
        format!("{} embedded sample frames", self.frames.len())
    }
    fn is_live(&self) -> bool {
        false
    }
    fn len_hint(&self) -> Option<usize> {
        Some(self.frames.len())
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        let Some(&(name, bytes)) = self.frames.get(self.next) else {
            return Ok(None);
        };
        self.next += 1;
        let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
        Ok(Some(
            RawFrame::new(
                self.next as u64 - 1,
                stem.into(),
                PixelFormat::Image,
                0,
                0,
                bytes.to_vec(),
            )
            .with_origin(format!("{name} (embedded)")),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #23: inputs that share a stem, or whose names are not UTF-8, get different output
    /// names (no overlay overwrites another).
    #[test]
    fn issue23_output_names_are_unique() {
        let p = |s: &str| PathBuf::from(s);
        let names = output_names(&[p("d/a.jpg"), p("d/a.png"), p("d/b.png")]);
        assert_eq!(names, ["a.jpg", "a.png", "b"]);
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let bad = |b: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(b));
            let names = output_names(&[bad(b"d/x\xff.png"), bad(b"d/x\xfe.png"), p("d/x.png")]);
            let unique: std::collections::HashSet<_> = names.iter().collect();
            assert_eq!(unique.len(), 3, "{names:?}");
            assert_eq!(names[2], "x");
        }
    }
}
