//! Raw fixed-size frames (RGB24 or YUYV) back to back.

use std::io::Read;

use super::{read_frame_bytes, stream_frame, FrameSource};
use crate::frame::{PixelFormat, RawFrame};
use crate::RuntimeError;

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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn reader(bytes: Vec<u8>) -> Box<dyn Read + Send> {
        Box::new(Cursor::new(bytes))
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
}
