//! Frame sources for `edge-seg run`: image files and folders, the embedded samples, Y4M and MJPEG
//! stream files, raw RGB24/YUYV recordings, standard input, and (in [`crate::camera`]) V4L2
//! cameras. Every source yields [`RawFrame`]s; decoding happens later in the pipeline, so a
//! recorded YUYV or MJPEG stream goes through exactly the code path of a camera.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use crate::frame::{PixelFormat, RawFrame};
use crate::RuntimeError;

/// Image file extensions read from folders.
pub use seg_core::io::IMAGE_EXTENSIONS;

pub use crate::limits::{MAX_FRAME_BYTES, MAX_FRAME_SIDE};

/// `w × h` checked against [`MAX_FRAME_SIDE`], with `source` naming where it came from.
pub fn check_frame_size(w: u32, h: u32, source: &str) -> Result<(), String> {
    if w == 0 || h == 0 || w > MAX_FRAME_SIDE || h > MAX_FRAME_SIDE {
        return Err(format!(
            "{source}: frame size {w}x{h} is outside 1..={MAX_FRAME_SIDE} per side"
        ));
    }
    Ok(())
}

/// `WIDTHxHEIGHT` (`--size`), each side checked by [`check_frame_size`].
pub fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or_else(|| format!("'{s}': expected WIDTHxHEIGHT"))?;
    match (w.parse::<u32>(), h.parse::<u32>()) {
        (Ok(w), Ok(h)) => check_frame_size(w, h, &format!("'{s}'")).map(|_| (w, h)),
        _ => Err(format!("'{s}': expected WIDTHxHEIGHT")),
    }
}

/// Something that produces frames.
pub trait FrameSource: Send {
    /// What it is, for the start-up line and errors (`/dev/video0 (YUYV 640x480)`, a path, ...).
    fn describe(&self) -> String;
    /// True for cameras (and paced recordings): frames keep coming whether or not we keep up, so
    /// by default stale frames are dropped, and a corrupt frame is skipped rather than fatal.
    fn is_live(&self) -> bool;
    /// The next frame, `None` at the end of the stream.
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError>;
    /// Number of frames when known in advance.
    fn len_hint(&self) -> Option<usize> {
        None
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

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end of stream before the first byte.
fn read_frame_bytes(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("truncated frame: {got} of {} bytes", buf.len()),
                ))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Frame `index` of the stream `name`.
pub fn stream_frame(name: &str, index: u64, format: PixelFormat, w: u32, h: u32, data: Vec<u8>) -> RawFrame {
    RawFrame::new(index, RawFrame::stream_name(index), format, w, h, data).with_origin(format!("{name} frame {index}"))
}

/// Raw fixed-size frames (RGB24 or YUYV) back to back.
pub struct RawReader {
    r: Box<dyn Read + Send>,
    name: String,
    format: PixelFormat,
    w: u32,
    h: u32,
    next: u64,
}

impl RawReader {
    /// Frames of `w × h` in `format` (must be a raw format).
    pub fn new(r: Box<dyn Read + Send>, name: String, format: PixelFormat, w: u32, h: u32) -> Self {
        Self {
            r,
            name,
            format,
            w,
            h,
            next: 0,
        }
    }
}

impl FrameSource for RawReader {
    fn describe(&self) -> String {
        format!("{} ({} {}x{})", self.name, self.format.name(), self.w, self.h)
    }
    fn is_live(&self) -> bool {
        false
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        let len = self.format.frame_len(self.w, self.h).expect("raw format");
        let mut buf = vec![0u8; len];
        let more = read_frame_bytes(&mut self.r, &mut buf).map_err(|e| RuntimeError::Input {
            path: self.name.clone(),
            reason: format!("frame {}: {e}", self.next),
        })?;
        if !more {
            return Ok(None);
        }
        self.next += 1;
        Ok(Some(stream_frame(
            &self.name,
            self.next - 1,
            self.format,
            self.w,
            self.h,
            buf,
        )))
    }
}

/// A YUV4MPEG2 stream: `YUV4MPEG2 W.. H.. [F..] [C..] ...\n`, then `FRAME[ params]\n` + planes.
pub struct Y4mReader {
    r: BufReader<Box<dyn Read + Send>>,
    name: String,
    w: u32,
    h: u32,
    format: PixelFormat,
    next: u64,
}

impl Y4mReader {
    /// Reads and checks the stream header.
    pub fn new(r: Box<dyn Read + Send>, name: String) -> Result<Self, RuntimeError> {
        let mut r = BufReader::new(r);
        let err = |reason: String| RuntimeError::Input {
            path: name.clone(),
            reason,
        };
        let header = read_line(&mut r, 1024).map_err(|e| err(format!("Y4M header: {e}")))?;
        let header = header.ok_or_else(|| err("empty stream (no Y4M header)".into()))?;
        let mut tokens = header.split(' ');
        if tokens.next() != Some("YUV4MPEG2") {
            return Err(err("not a Y4M stream (no YUV4MPEG2 signature)".into()));
        }
        let (mut w, mut h, mut format) = (0, 0, PixelFormat::Yuv { sx: 2, sy: 2 });
        for t in tokens.filter(|t| !t.is_empty()) {
            // read_line gave ASCII only, so byte 1 is a character boundary
            let (k, v) = t.split_at(1);
            match k {
                "W" => w = v.parse().map_err(|_| err(format!("Y4M header: bad width '{v}'")))?,
                "H" => h = v.parse().map_err(|_| err(format!("Y4M header: bad height '{v}'")))?,
                "C" => {
                    format = match v {
                        "420" | "420jpeg" | "420paldv" | "420mpeg2" => PixelFormat::Yuv { sx: 2, sy: 2 },
                        "422" => PixelFormat::Yuv { sx: 2, sy: 1 },
                        "444" => PixelFormat::Yuv { sx: 1, sy: 1 },
                        "mono" => PixelFormat::Gray,
                        other => {
                            return Err(err(format!(
                                "Y4M colour space C{other} is not supported (420*, 422, 444, mono are)"
                            )))
                        }
                    }
                }
                _ => {} // frame rate, interlacing, aspect, comments: not needed
            }
        }
        if w == 0 || h == 0 {
            return Err(err("Y4M header has no W/H".into()));
        }
        check_frame_size(w, h, "Y4M header").map_err(err)?;
        Ok(Self {
            r,
            name,
            w,
            h,
            format,
            next: 0,
        })
    }
}

/// One `\n`-terminated ASCII line of at most `max` bytes; `None` at a clean end of stream.
fn read_line(r: &mut impl BufRead, max: usize) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = r.take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            if n > max {
                format!("line longer than {max} bytes")
            } else {
                "unterminated line".into()
            },
        ));
    }
    line.pop();
    if !line.is_ascii() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not ASCII"));
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not ASCII"))
}

impl FrameSource for Y4mReader {
    fn describe(&self) -> String {
        format!("{} (Y4M {} {}x{})", self.name, self.format.name(), self.w, self.h)
    }
    fn is_live(&self) -> bool {
        false
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        let err = |reason: String| RuntimeError::Input {
            path: self.name.clone(),
            reason: format!("frame {}: {reason}", self.next),
        };
        let Some(line) = read_line(&mut self.r, 1024).map_err(|e| err(e.to_string()))? else {
            return Ok(None);
        };
        if !line.starts_with("FRAME") {
            return Err(err(format!(
                "expected FRAME, got '{}'",
                line.chars().take(20).collect::<String>()
            )));
        }
        let mut buf = vec![0u8; self.format.frame_len(self.w, self.h).expect("raw")];
        if !read_frame_bytes(&mut self.r, &mut buf).map_err(|e| err(e.to_string()))? {
            return Err(err("stream ends after a FRAME header".into()));
        }
        self.next += 1;
        Ok(Some(stream_frame(
            &self.name,
            self.next - 1,
            self.format,
            self.w,
            self.h,
            buf,
        )))
    }
}

/// Concatenated JPEG images. Bytes between images (multipart boundaries, HTTP headers) are
/// skipped; each image is delimited by parsing its marker segments, so an EXIF thumbnail's
/// end-of-image marker does not cut a frame short.
pub struct MjpegReader {
    r: BufReader<Box<dyn Read + Send>>,
    name: String,
    next: u64,
}

impl MjpegReader {
    /// A reader over `r`.
    pub fn new(r: Box<dyn Read + Send>, name: String) -> Self {
        Self {
            r: BufReader::with_capacity(1 << 16, r),
            name,
            next: 0,
        }
    }

    fn byte(&mut self, out: &mut Vec<u8>) -> std::io::Result<Option<u8>> {
        let mut b = [0u8];
        match self.r.read(&mut b)? {
            0 => Ok(None),
            _ => {
                out.push(b[0]);
                if out.len() > MAX_FRAME_BYTES {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("JPEG frame larger than {MAX_FRAME_BYTES} bytes"),
                    ));
                }
                Ok(Some(b[0]))
            }
        }
    }

    /// The next JPEG's bytes, `None` at the end of the stream.
    fn read_jpeg(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let eof = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "stream ends inside a JPEG image");
        let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        // find SOI (FF D8); anything before it is skipped
        let mut skipped = Vec::new();
        let mut prev = 0u8;
        loop {
            skipped.clear();
            let Some(b) = self.byte(&mut skipped)? else {
                return Ok(None);
            };
            if prev == 0xFF && b == 0xD8 {
                break;
            }
            prev = b;
        }
        let mut out = vec![0xFF, 0xD8];
        // a marker code already consumed while scanning entropy-coded data
        let mut pending: Option<u8> = None;
        loop {
            let code = match pending.take() {
                Some(c) => c,
                None => {
                    let mut b = self.byte(&mut out)?.ok_or_else(eof)?;
                    if b != 0xFF {
                        return Err(invalid(format!("corrupt JPEG: expected a marker, got byte {b:#04x}")));
                    }
                    while b == 0xFF {
                        b = self.byte(&mut out)?.ok_or_else(eof)?;
                    }
                    b
                }
            };
            match code {
                0xD9 => return Ok(Some(out)),
                0x01 | 0xD0..=0xD7 => continue,
                _ => {}
            }
            let hi = self.byte(&mut out)?.ok_or_else(eof)?;
            let lo = self.byte(&mut out)?.ok_or_else(eof)?;
            let len = u16::from_be_bytes([hi, lo]) as usize;
            if len < 2 {
                return Err(invalid("corrupt JPEG: segment length < 2".into()));
            }
            let start = out.len();
            if start + len > MAX_FRAME_BYTES {
                return Err(invalid(format!("JPEG frame larger than {MAX_FRAME_BYTES} bytes")));
            }
            out.resize(start + len - 2, 0);
            self.r.read_exact(&mut out[start..]).map_err(|_| eof())?;
            if code == 0xDA {
                // entropy-coded data runs to the next marker that is not a stuffed 00 or RSTn
                loop {
                    if self.byte(&mut out)?.ok_or_else(eof)? != 0xFF {
                        continue;
                    }
                    let mut d = self.byte(&mut out)?.ok_or_else(eof)?;
                    while d == 0xFF {
                        d = self.byte(&mut out)?.ok_or_else(eof)?;
                    }
                    if d != 0x00 && !(0xD0..=0xD7).contains(&d) {
                        pending = Some(d);
                        break;
                    }
                }
            }
        }
    }
}

impl FrameSource for MjpegReader {
    fn describe(&self) -> String {
        format!("{} (MJPEG)", self.name)
    }
    fn is_live(&self) -> bool {
        false
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        let data = self.read_jpeg().map_err(|e| RuntimeError::Input {
            path: self.name.clone(),
            reason: format!("frame {}: {e}", self.next),
        })?;
        let Some(data) = data else { return Ok(None) };
        self.next += 1;
        Ok(Some(stream_frame(
            &self.name,
            self.next - 1,
            PixelFormat::Mjpeg,
            0,
            0,
            data,
        )))
    }
}

/// Delivers a recorded source's frames at a camera's rate (`--pace FPS`): frames are stamped
/// when they are due, and a pipeline that falls behind drops them as it would a camera's.
pub struct Paced {
    inner: Box<dyn FrameSource>,
    period: Duration,
    start: Option<Instant>,
    n: u32,
}

impl Paced {
    /// `inner` at `fps` frames per second.
    pub fn new(inner: Box<dyn FrameSource>, fps: f64) -> Self {
        Self {
            inner,
            period: Duration::from_secs_f64(1.0 / fps.max(1e-3)),
            start: None,
            n: 0,
        }
    }
}

impl FrameSource for Paced {
    fn describe(&self) -> String {
        format!(
            "{} at {:.1} FPS",
            self.inner.describe(),
            1.0 / self.period.as_secs_f64()
        )
    }
    fn is_live(&self) -> bool {
        true
    }
    fn len_hint(&self) -> Option<usize> {
        self.inner.len_hint()
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        let start = *self.start.get_or_insert_with(Instant::now);
        let due = start + self.period * self.n;
        let mut f = self.inner.next_frame()?;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.n += 1;
        if let Some(f) = &mut f {
            f.captured = Instant::now();
        }
        Ok(f)
    }
}

/// Opens a source, e.g. a camera by path.
pub type Opener = Box<dyn FnMut() -> Result<Box<dyn FrameSource>, RuntimeError> + Send>;

/// Told each failure of a [`Reconnecting`] source and the wait before the next try.
pub type OnError = Box<dyn FnMut(&RuntimeError, Duration) + Send>;

/// Keeps a live source up: when opening or reading fails, it reports the error, waits
/// (exponential back-off from `min` to `max`) and reopens, until `stop` is set.
pub struct Reconnecting {
    open: Opener,
    name: String,
    current: Option<Box<dyn FrameSource>>,
    stop: Arc<AtomicBool>,
    min: Duration,
    max: Duration,
    /// Failures since the last good frame.
    failures: u32,
    /// Successful reconnections so far.
    pub reconnects: u32,
    on_error: OnError,
}

impl Reconnecting {
    /// Wraps `open`; `on_error` is told each failure and the wait before the next try.
    pub fn new(
        name: String,
        open: Opener,
        stop: Arc<AtomicBool>,
        backoff: (Duration, Duration),
        on_error: OnError,
    ) -> Self {
        Self {
            open,
            name,
            current: None,
            stop,
            min: backoff.0,
            max: backoff.1,
            failures: 0,
            reconnects: 0,
            on_error,
        }
    }

    /// Sleeps `d` in small steps; false when stopped meanwhile.
    fn wait(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
        !self.stop.load(Ordering::Relaxed)
    }

    fn fail(&mut self, e: RuntimeError) -> bool {
        self.current = None;
        let wait = (self.min * 2u32.saturating_pow(self.failures.min(16))).min(self.max);
        self.failures += 1;
        (self.on_error)(&e, wait);
        self.wait(wait)
    }
}

impl FrameSource for Reconnecting {
    fn describe(&self) -> String {
        match &self.current {
            Some(s) => s.describe(),
            None => format!("{} (reconnecting)", self.name),
        }
    }
    fn is_live(&self) -> bool {
        true
    }
    fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(None);
            }
            if self.current.is_none() {
                match (self.open)() {
                    Ok(s) => {
                        if self.failures > 0 {
                            self.reconnects += 1;
                        }
                        self.current = Some(s);
                    }
                    Err(e) => {
                        if !self.fail(e) {
                            return Ok(None);
                        }
                        continue;
                    }
                }
            }
            let src = self.current.as_mut().expect("opened");
            match src.next_frame() {
                Ok(Some(f)) => {
                    self.failures = 0;
                    return Ok(Some(f));
                }
                Ok(None) => {
                    let e = RuntimeError::Input {
                        path: self.name.clone(),
                        reason: "the stream ended".into(),
                    };
                    if !self.fail(e) {
                        return Ok(None);
                    }
                }
                Err(e) => {
                    if !self.fail(e) {
                        return Ok(None);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::sync::Mutex;

    use super::*;

    fn jpeg(w: u32, h: u32, v: u8) -> Vec<u8> {
        let img = RgbImage::from_pixel(w, h, image::Rgb([v, 255 - v, 60]));
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
            .encode_image(&img)
            .unwrap();
        out
    }

    fn reader(bytes: Vec<u8>) -> Box<dyn Read + Send> {
        Box::new(Cursor::new(bytes))
    }

    #[test]
    fn mjpeg_stream_splits_on_image_boundaries() {
        let (a, b) = (jpeg(16, 8, 10), jpeg(16, 8, 200));
        // multipart-style junk between the images is skipped
        let mut stream = a.clone();
        stream.extend_from_slice(b"\r\n--frame\r\nContent-Type: image/jpeg\r\n\r\n");
        stream.extend_from_slice(&b);
        let mut r = MjpegReader::new(reader(stream), "s.mjpeg".into());
        let f0 = r.next_frame().unwrap().unwrap();
        let f1 = r.next_frame().unwrap().unwrap();
        assert_eq!(f0.data, a);
        assert_eq!(f1.data, b);
        assert_eq!(f1.name, "frame_000001");
        assert!(r.next_frame().unwrap().is_none());
        assert!(f1.to_rgb().unwrap().get_pixel(3, 3)[0] > 150);
    }

    #[test]
    fn mjpeg_truncated_frame_is_an_error_naming_the_stream() {
        let a = jpeg(16, 8, 10);
        let mut r = MjpegReader::new(reader(a[..a.len() / 2].to_vec()), "cam.mjpeg".into());
        let e = r.next_frame().unwrap_err().to_string();
        assert!(e.starts_with("cam.mjpeg: frame 0:"), "{e}");
    }

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

    /// Issue #23: hostile Y4M headers are errors, not panics or huge allocations.
    #[test]
    fn issue23_y4m_header_bounds_and_non_ascii() {
        for (header, what) in [
            ("YUV4MPEG2 W4294967295 H4294967295\n", "outside"),
            ("YUV4MPEG2 W8193 H2\n", "outside"),
            ("YUV4MPEG2 W4 H2 \u{e9}x\n", "not ASCII"),
            ("YUV4MPEG2 \u{1f600} W4 H2\n", "not ASCII"),
        ] {
            let e = Y4mReader::new(reader(header.as_bytes().to_vec()), "v.y4m".into())
                .err()
                .unwrap_or_else(|| panic!("{header:?} accepted"))
                .to_string();
            assert!(e.contains(what), "{header:?}: {e}");
        }
    }

    #[test]
    fn y4m_header_and_frames() {
        let mut s = b"YUV4MPEG2 W4 H2 F30:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n".to_vec();
        for v in [16u8, 235] {
            s.extend_from_slice(b"FRAME\n");
            s.extend(std::iter::repeat_n(v, 8));
            s.extend(std::iter::repeat_n(128, 4));
        }
        let mut r = Y4mReader::new(reader(s.clone()), "v.y4m".into()).unwrap();
        assert!(r.describe().contains("4x2"));
        let f = r.next_frame().unwrap().unwrap().to_rgb().unwrap();
        assert_eq!(f.get_pixel(0, 0).0, [0, 0, 0]);
        let f = r.next_frame().unwrap().unwrap().to_rgb().unwrap();
        assert_eq!(f.get_pixel(3, 1).0, [255, 255, 255]);
        assert!(r.next_frame().unwrap().is_none());
        // truncated last frame
        let mut r = Y4mReader::new(reader(s[..s.len() - 3].to_vec()), "v.y4m".into()).unwrap();
        r.next_frame().unwrap();
        assert!(r.next_frame().unwrap_err().to_string().contains("truncated"));
        // not a Y4M stream
        let e = Y4mReader::new(reader(b"hello\n".to_vec()), "x".into()).err().unwrap();
        assert!(e.to_string().contains("not a Y4M stream"));
        let e = Y4mReader::new(reader(b"YUV4MPEG2 W4 H2 C410\n".to_vec()), "x".into())
            .err()
            .unwrap();
        assert!(e.to_string().contains("C410 is not supported"));
    }

    #[test]
    fn raw_yuyv_reader_needs_whole_frames() {
        let mut r = RawReader::new(
            reader(vec![16; 4 * 2 * 2 + 5]),
            "r.yuyv".into(),
            PixelFormat::Yuyv,
            4,
            2,
        );
        assert!(r.next_frame().unwrap().is_some());
        assert!(r
            .next_frame()
            .unwrap_err()
            .to_string()
            .contains("truncated frame: 5 of 16 bytes"));
    }

    /// A source that fails after `ok` frames.
    struct Flaky {
        ok: usize,
    }
    impl FrameSource for Flaky {
        fn describe(&self) -> String {
            "flaky".into()
        }
        fn is_live(&self) -> bool {
            true
        }
        fn next_frame(&mut self) -> Result<Option<RawFrame>, RuntimeError> {
            if self.ok == 0 {
                return Err(RuntimeError::Input {
                    path: "/dev/video9".into(),
                    reason: "No such device (os error 19)".into(),
                });
            }
            self.ok -= 1;
            Ok(Some(RawFrame::new(
                0,
                "f".into(),
                PixelFormat::Rgb24,
                1,
                1,
                vec![0, 0, 0],
            )))
        }
    }

    #[test]
    fn reconnecting_source_retries_with_backoff_and_stops_on_request() {
        // the device is unplugged after 2 frames; the first two reopen attempts fail
        let opens = Arc::new(Mutex::new(0));
        let o = opens.clone();
        let open: Opener = Box::new(move || {
            let mut n = o.lock().unwrap();
            *n += 1;
            match *n {
                1 => Ok(Box::new(Flaky { ok: 2 }) as Box<dyn FrameSource>),
                2 | 3 => Err(RuntimeError::Input {
                    path: "/dev/video9".into(),
                    reason: "cannot open".into(),
                }),
                _ => Ok(Box::new(Flaky { ok: 100 }) as Box<dyn FrameSource>),
            }
        });
        let waits = Arc::new(Mutex::new(Vec::new()));
        let w = waits.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut r = Reconnecting::new(
            "/dev/video9".into(),
            open,
            stop.clone(),
            (Duration::from_millis(1), Duration::from_millis(3)),
            Box::new(move |_, d| w.lock().unwrap().push(d)),
        );
        for _ in 0..5 {
            assert!(r.next_frame().unwrap().is_some());
        }
        assert_eq!(*opens.lock().unwrap(), 4);
        assert_eq!(r.reconnects, 1);
        let ms: Vec<u128> = waits.lock().unwrap().iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, vec![1, 2, 3], "back-off doubles up to the maximum");
        stop.store(true, Ordering::Relaxed);
        assert!(r.next_frame().unwrap().is_none());
    }
}
