//! Concatenated JPEG images (MJPEG streams and multipart captures).

use std::io::{BufReader, Read};

use super::{stream_frame, FrameSource, MAX_FRAME_BYTES};
use crate::frame::{PixelFormat, RawFrame};
use crate::RuntimeError;

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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::RgbImage;

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
}
