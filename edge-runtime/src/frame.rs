//! Raw frames as sources deliver them (camera buffers, stream-file records, image files) and
//! their conversion to RGB. A camera and a recorded stream file of the same pixel format go
//! through the same [`RawFrame::to_rgb`].

use std::time::Instant;

use image::RgbImage;

/// How a [`RawFrame`]'s bytes encode the picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// Packed 8-bit RGB, `w * h * 3` bytes.
    Rgb24,
    /// Packed YUV 4:2:2 `Y0 U Y1 V` (V4L2 `YUYV`), `w * h * 2` bytes, BT.601 limited range.
    Yuyv,
    /// One JPEG image (a V4L2 `MJPG` buffer or one frame of an MJPEG stream).
    Mjpeg,
    /// Planar YUV (Y4M): chroma subsampled by `(sx, sy)` (4:2:0 = (2, 2), 4:2:2 = (2, 1),
    /// 4:4:4 = (1, 1)); BT.601 limited range.
    Yuv {
        /// Horizontal chroma subsampling.
        sx: u32,
        /// Vertical chroma subsampling.
        sy: u32,
    },
    /// Planar luma only (Y4M `Cmono`).
    Gray,
    /// An encoded image file (PNG or JPEG), format guessed from its bytes.
    Image,
}

impl PixelFormat {
    /// Bytes of one `w × h` frame, for raw formats (None for compressed ones).
    pub fn frame_len(self, w: u32, h: u32) -> Option<usize> {
        let (w, h) = (w as usize, h as usize);
        match self {
            Self::Rgb24 => Some(w * h * 3),
            Self::Yuyv => Some(w.div_ceil(2) * 2 * h * 2),
            Self::Yuv { sx, sy } => {
                let (cw, ch) = (w.div_ceil(sx as usize), h.div_ceil(sy as usize));
                Some(w * h + 2 * cw * ch)
            }
            Self::Gray => Some(w * h),
            Self::Mjpeg | Self::Image => None,
        }
    }

    /// Short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rgb24 => "RGB24",
            Self::Yuyv => "YUYV",
            Self::Mjpeg => "MJPEG",
            Self::Yuv { sx: 2, sy: 2 } => "YUV 4:2:0",
            Self::Yuv { sx: 2, sy: 1 } => "YUV 4:2:2",
            Self::Yuv { .. } => "YUV 4:4:4",
            Self::Gray => "gray",
            Self::Image => "image file",
        }
    }
}

/// One frame as captured or read, not yet decoded.
#[derive(Debug, Clone)]
pub struct RawFrame {
    /// 0-based index in the stream.
    pub index: u64,
    /// Name used for output files (image stem, or `frame_000042`).
    pub name: String,
    /// Where it came from, for error messages (`dir/f.png`, `cam.mjpeg frame 42`).
    pub origin: String,
    /// Encoding of `data`.
    pub format: PixelFormat,
    /// Width in pixels (0 when the encoded data says it: MJPEG, image files).
    pub width: u32,
    /// Height in pixels (0 when the encoded data says it).
    pub height: u32,
    /// The bytes.
    pub data: Vec<u8>,
    /// When the source delivered it (latency is measured from here).
    pub captured: Instant,
}

impl RawFrame {
    /// A frame captured now.
    pub fn new(index: u64, name: String, format: PixelFormat, width: u32, height: u32, data: Vec<u8>) -> Self {
        Self {
            index,
            origin: name.clone(),
            name,
            format,
            width,
            height,
            data,
            captured: Instant::now(),
        }
    }

    /// Sets [`RawFrame::origin`].
    pub fn with_origin(mut self, origin: String) -> Self {
        self.origin = origin;
        self
    }

    /// Name for frame `index` of a stream.
    pub fn stream_name(index: u64) -> String {
        format!("frame_{index:06}")
    }

    /// Decodes to RGB. The error says what is wrong with the data (the caller adds the source).
    pub fn to_rgb(&self) -> Result<RgbImage, String> {
        if let Some(need) = self.format.frame_len(self.width, self.height) {
            if self.width == 0 || self.height == 0 {
                return Err(format!("{} frame has no size", self.format.name()));
            }
            if self.data.len() < need {
                return Err(format!(
                    "{} frame {}x{} needs {need} bytes, got {}",
                    self.format.name(),
                    self.width,
                    self.height,
                    self.data.len()
                ));
            }
        }
        let (w, h) = (self.width, self.height);
        match self.format {
            PixelFormat::Rgb24 => {
                Ok(RgbImage::from_raw(w, h, self.data[..(w * h * 3) as usize].to_vec()).expect("length checked"))
            }
            PixelFormat::Yuyv => Ok(yuyv_to_rgb(&self.data, w, h)),
            PixelFormat::Yuv { sx, sy } => Ok(planar_yuv_to_rgb(&self.data, w, h, sx, sy)),
            PixelFormat::Gray => Ok(RgbImage::from_fn(w, h, |x, y| {
                let v = luma(self.data[(y * w + x) as usize]);
                image::Rgb([v, v, v])
            })),
            PixelFormat::Mjpeg => image::load_from_memory_with_format(&self.data, image::ImageFormat::Jpeg)
                .map(|i| i.to_rgb8())
                .map_err(|e| format!("corrupt JPEG frame: {e}")),
            PixelFormat::Image => image::load_from_memory(&self.data)
                .map(|i| i.to_rgb8())
                .map_err(|e| format!("cannot decode image: {e}")),
        }
    }
}

fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Limited-range luma (16..235) to full range.
fn luma(y: u8) -> u8 {
    clamp8((298 * (y as i32 - 16) + 128) >> 8)
}

/// BT.601 limited-range YCbCr to RGB (integer, as libv4lconvert).
#[inline]
pub fn ycbcr_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    let c = 298 * (y as i32 - 16);
    let (d, e) = (u as i32 - 128, v as i32 - 128);
    [
        clamp8((c + 409 * e + 128) >> 8),
        clamp8((c - 100 * d - 208 * e + 128) >> 8),
        clamp8((c + 516 * d + 128) >> 8),
    ]
}

/// RGB to BT.601 limited-range YCbCr (the inverse of [`ycbcr_to_rgb`] up to rounding).
#[inline]
pub fn rgb_to_ycbcr(p: [u8; 3]) -> [u8; 3] {
    let (r, g, b) = (p[0] as i32, p[1] as i32, p[2] as i32);
    [
        clamp8(((66 * r + 129 * g + 25 * b + 128) >> 8) + 16),
        clamp8(((-38 * r - 74 * g + 112 * b + 128) >> 8) + 128),
        clamp8(((112 * r - 94 * g - 18 * b + 128) >> 8) + 128),
    ]
}

/// Packed YUYV (`Y0 U Y1 V`, rows of `ceil(w/2)*4` bytes) to RGB.
pub fn yuyv_to_rgb(data: &[u8], w: u32, h: u32) -> RgbImage {
    let row_bytes = w.div_ceil(2) as usize * 4;
    let mut out = RgbImage::new(w, h);
    let w = w as usize;
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        let src = &data[y * row_bytes..(y + 1) * row_bytes];
        for (x, px) in row.chunks_exact_mut(3).enumerate() {
            let q = &src[(x / 2) * 4..(x / 2) * 4 + 4];
            let yv = if x % 2 == 0 { q[0] } else { q[2] };
            px.copy_from_slice(&ycbcr_to_rgb(yv, q[1], q[3]));
        }
    }
    out
}

/// RGB to packed YUYV (each pixel pair shares the mean of its chroma); used to record test and
/// benchmark streams in a camera's format.
pub fn rgb_to_yuyv(img: &RgbImage) -> Vec<u8> {
    let (w, h) = img.dimensions();
    let mut out = Vec::with_capacity(w.div_ceil(2) as usize * 4 * h as usize);
    for y in 0..h {
        for x in (0..w).step_by(2) {
            let a = rgb_to_ycbcr(img.get_pixel(x, y).0);
            let b = rgb_to_ycbcr(img.get_pixel((x + 1).min(w - 1), y).0);
            let u = (a[1] as u16 + b[1] as u16).div_ceil(2) as u8;
            let v = (a[2] as u16 + b[2] as u16).div_ceil(2) as u8;
            out.extend_from_slice(&[a[0], u, b[0], v]);
        }
    }
    out
}

/// Planar YUV (Y plane, then U, then V; chroma planes `ceil(w/sx) × ceil(h/sy)`) to RGB.
pub fn planar_yuv_to_rgb(data: &[u8], w: u32, h: u32, sx: u32, sy: u32) -> RgbImage {
    let (wu, hu) = (w as usize, h as usize);
    let (cw, ch) = (wu.div_ceil(sx as usize), hu.div_ceil(sy as usize));
    let (yp, rest) = data.split_at(wu * hu);
    let (up, vp) = rest.split_at(cw * ch);
    RgbImage::from_fn(w, h, |x, y| {
        let c = (y / sy) as usize * cw + (x / sx) as usize;
        image::Rgb(ycbcr_to_rgb(yp[y as usize * wu + x as usize], up[c], vp[c]))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ycbcr_reference_values() {
        // BT.601 limited range: black, white, and the primaries round-trip within 2 levels
        assert_eq!(ycbcr_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(ycbcr_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(rgb_to_ycbcr([255, 0, 0]), [82, 90, 240]);
        for p in [[255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 64, 32], [12, 200, 99]] {
            let back = {
                let [y, u, v] = rgb_to_ycbcr(p);
                ycbcr_to_rgb(y, u, v)
            };
            for c in 0..3 {
                assert!((back[c] as i32 - p[c] as i32).abs() <= 2, "{p:?} -> {back:?}");
            }
        }
    }

    #[test]
    fn yuyv_round_trip_on_flat_pairs() {
        // pixel pairs of equal colour survive YUYV exactly up to the YCbCr rounding
        let img = RgbImage::from_fn(6, 3, |x, y| image::Rgb([(x / 2 * 80) as u8, (y * 100) as u8, 40]));
        let yuyv = rgb_to_yuyv(&img);
        assert_eq!(yuyv.len(), PixelFormat::Yuyv.frame_len(6, 3).unwrap());
        let f = RawFrame::new(0, "f".into(), PixelFormat::Yuyv, 6, 3, yuyv);
        let back = f.to_rgb().unwrap();
        for (a, b) in img.pixels().zip(back.pixels()) {
            for c in 0..3 {
                assert!((a[c] as i32 - b[c] as i32).abs() <= 2, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn odd_width_yuyv_and_short_buffers() {
        let img = RgbImage::from_pixel(5, 2, image::Rgb([200, 10, 10]));
        let yuyv = rgb_to_yuyv(&img);
        assert_eq!(yuyv.len(), 3 * 4 * 2);
        let f = RawFrame::new(0, "f".into(), PixelFormat::Yuyv, 5, 2, yuyv.clone());
        assert_eq!(f.to_rgb().unwrap().dimensions(), (5, 2));
        let short = RawFrame::new(0, "f".into(), PixelFormat::Yuyv, 5, 2, yuyv[..10].to_vec());
        let e = short.to_rgb().unwrap_err();
        assert!(e.contains("needs 24 bytes, got 10"), "{e}");
        let bad = RawFrame::new(0, "f".into(), PixelFormat::Mjpeg, 0, 0, vec![0xFF, 0xD8, 1, 2]);
        assert!(bad.to_rgb().unwrap_err().contains("corrupt JPEG"));
    }

    #[test]
    fn planar_420_uses_shared_chroma() {
        // 2x2 luma, one chroma sample: all four pixels share U, V
        let data = [16, 235, 126, 126, 128, 128];
        let img = planar_yuv_to_rgb(&data, 2, 2, 2, 2);
        assert_eq!(img.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 1).0, img.get_pixel(1, 1).0);
    }
}
