//! YUV4MPEG2 streams.

use std::io::{BufRead, BufReader, Read};

use super::{check_frame_size, read_frame_bytes, stream_frame, FrameSource};
use crate::frame::{PixelFormat, RawFrame};
use crate::RuntimeError;

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

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn reader(bytes: Vec<u8>) -> Box<dyn Read + Send> {
        Box::new(Cursor::new(bytes))
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
}
