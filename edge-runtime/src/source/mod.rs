//! Frame sources for `edge-seg run`: image files and folders, the embedded samples, Y4M and MJPEG
//! stream files, raw RGB24/YUYV recordings, standard input, and (in [`crate::camera`]) V4L2
//! cameras. Every source yields [`RawFrame`]s; decoding happens later in the pipeline, so a
//! recorded YUYV or MJPEG stream goes through exactly the code path of a camera.
//!
//! One file per kind: [`open_input`] and [`StreamFormat`] (`open`), image files and the embedded
//! samples (`images`), raw RGB24/YUYV (`raw`), Y4M (`y4m`), MJPEG (`mjpeg`), `--pace` (`paced`),
//! and the reconnecting wrapper of live sources (`reconnect`).

use std::io::Read;

use crate::frame::{PixelFormat, RawFrame};
use crate::RuntimeError;

mod images;
mod mjpeg;
mod open;
mod paced;
mod raw;
mod reconnect;
mod y4m;

pub use images::{output_names, read_rgb, Embedded, ImageFiles};
pub use mjpeg::MjpegReader;
pub use open::{open_input, InputOptions, StreamFormat};
pub use paced::Paced;
pub use raw::RawReader;
pub use reconnect::{OnError, Opener, Reconnecting};
pub use y4m::Y4mReader;

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
