//! Opening `--input`: stdin, an image, a folder of images, or a stream file, by format.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::{FrameSource, ImageFiles, MjpegReader, RawReader, Y4mReader};
use crate::frame::PixelFormat;
use crate::RuntimeError;

/// What `--input` / stdin data is, when the file name does not say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// YUV4MPEG2 (self-describing; `ffmpeg -f yuv4mpegpipe`).
    Y4m,
    /// Concatenated JPEG images (`ffmpeg -f mjpeg`, or a multipart MJPEG capture).
    Mjpeg,
    /// Raw packed RGB24 frames of `--size`.
    Rgb24,
    /// Raw packed YUYV frames of `--size` (a V4L2 YUYV capture written to disk).
    Yuyv,
}

impl std::str::FromStr for StreamFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "y4m" => Ok(Self::Y4m),
            "mjpeg" | "mjpg" => Ok(Self::Mjpeg),
            "rgb24" | "rgb" => Ok(Self::Rgb24),
            "yuyv" => Ok(Self::Yuyv),
            _ => Err(format!("'{s}': expected y4m, mjpeg, rgb24 or yuyv")),
        }
    }
}

impl StreamFormat {
    /// The format a file extension implies (`.y4m`, `.mjpeg`/`.mjpg`, `.rgb`, `.yuyv`/`.yuv422`).
    pub fn from_extension(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "y4m" => Some(Self::Y4m),
            "mjpeg" | "mjpg" => Some(Self::Mjpeg),
            "rgb" | "rgb24" => Some(Self::Rgb24),
            "yuyv" | "yuv422" => Some(Self::Yuyv),
            _ => None,
        }
    }
}

/// How to open `--input`.
#[derive(Debug, Clone)]
pub struct InputOptions {
    /// Format of a stream file or stdin when its extension does not tell (stdin default: Y4M).
    pub format: Option<StreamFormat>,
    /// Frame size of raw RGB24/YUYV streams.
    pub size: Option<(u32, u32)>,
}

/// Opens `--input`: `-` (stdin), an image, a folder of images, or a stream file.
pub fn open_input(path: &Path, opts: &InputOptions) -> Result<Box<dyn FrameSource>, RuntimeError> {
    let name = path.display().to_string();
    let err = |reason: String| RuntimeError::Input {
        path: name.clone(),
        reason,
    };
    if path == Path::new("-") {
        // a pipe applies back-pressure, so it is read like a file (every frame); a live feed
        // behind it wants `--drop drop`
        let fmt = opts.format.unwrap_or(StreamFormat::Y4m);
        return stream_source(Box::new(std::io::stdin()), "stdin".into(), fmt, opts.size);
    }
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Ok(Box::new(ImageFiles::from_dir(path)?));
    }
    match opts.format.or_else(|| StreamFormat::from_extension(path)) {
        Some(fmt) => {
            let f = File::open(path).map_err(|e| err(e.to_string()))?;
            stream_source(Box::new(f), name, fmt, opts.size)
        }
        None => Ok(Box::new(ImageFiles::new(vec![path.to_path_buf()]))),
    }
}

fn stream_source(
    r: Box<dyn Read + Send>,
    name: String,
    fmt: StreamFormat,
    size: Option<(u32, u32)>,
) -> Result<Box<dyn FrameSource>, RuntimeError> {
    Ok(match fmt {
        StreamFormat::Y4m => Box::new(Y4mReader::new(r, name)?),
        StreamFormat::Mjpeg => Box::new(MjpegReader::new(r, name)),
        StreamFormat::Rgb24 | StreamFormat::Yuyv => {
            let (w, h) = size.ok_or_else(|| RuntimeError::Input {
                path: name.clone(),
                reason: "raw RGB24/YUYV frames need --size WxH".into(),
            })?;
            let pf = if fmt == StreamFormat::Rgb24 {
                PixelFormat::Rgb24
            } else {
                PixelFormat::Yuyv
            };
            Box::new(RawReader::new(r, name, pf, w, h))
        }
    })
}
