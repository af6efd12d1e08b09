//! `--display fb`: a Linux framebuffer (`/dev/fb0`) as an embedded-graphics [`DrawTarget`].
//! Pixels are packed in the device's format (32-bit XRGB, 24-bit BGR or 16-bit RGB565) into a
//! back buffer, which `present` writes to the device in one `pwrite`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::Rectangle;
use image::RgbImage;

use super::{Output, Rendered};
use crate::RuntimeError;

/// Framebuffer geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FbGeometry {
    /// Visible width in pixels.
    pub width: u32,
    /// Visible height in pixels.
    pub height: u32,
    /// 16, 24 or 32.
    pub bits_per_pixel: u32,
    /// Bytes per row.
    pub stride: u32,
}

impl FbGeometry {
    /// `WxH` or `WxHxBPP` (stride = width × bytes per pixel).
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('x').collect();
        let num = |p: &str| p.parse::<u32>().map_err(|_| format!("'{s}': expected WxH or WxHxBPP"));
        let (width, height, bpp) = match parts.as_slice() {
            [w, h] => (num(w)?, num(h)?, 32),
            [w, h, b] => (num(w)?, num(h)?, num(b)?),
            _ => return Err(format!("'{s}': expected WxH or WxHxBPP")),
        };
        if ![16, 24, 32].contains(&bpp) || width == 0 || height == 0 {
            return Err(format!("'{s}': size must be non-zero and BPP 16, 24 or 32"));
        }
        Ok(Self {
            width,
            height,
            bits_per_pixel: bpp,
            stride: width * bpp / 8,
        })
    }

    /// Reads `/sys/class/graphics/<fbN>/{virtual_size,bits_per_pixel,stride}` for a `/dev/fbN`.
    pub fn from_sysfs(device: &Path) -> Result<Self, String> {
        let name = device
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with("fb"))
            .ok_or("not a /dev/fbN device; give --fb-geometry WxHxBPP")?;
        let sys = PathBuf::from("/sys/class/graphics").join(name);
        let read = |f: &str| {
            std::fs::read_to_string(sys.join(f))
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("{}: {e}", sys.join(f).display()))
        };
        let size = read("virtual_size")?;
        let (w, h) = size.split_once(',').ok_or(format!("virtual_size '{size}'"))?;
        let bad = |what: &str, v: &str| format!("{}: bad {what} '{v}'", sys.display());
        let width: u32 = w.parse().map_err(|_| bad("width", w))?;
        let height: u32 = h.parse().map_err(|_| bad("height", h))?;
        let bpp_s = read("bits_per_pixel")?;
        let bits_per_pixel: u32 = bpp_s.parse().map_err(|_| bad("bits_per_pixel", &bpp_s))?;
        let stride_s = read("stride")?;
        let stride: u32 = stride_s.parse().map_err(|_| bad("stride", &stride_s))?;
        if ![16, 24, 32].contains(&bits_per_pixel) {
            return Err(format!(
                "{bits_per_pixel} bits per pixel is not supported (16, 24, 32 are)"
            ));
        }
        Ok(Self {
            width,
            height,
            bits_per_pixel,
            stride,
        })
    }
}

/// A framebuffer device with an in-memory back buffer.
pub struct Framebuffer {
    path: PathBuf,
    file: File,
    geom: FbGeometry,
    buf: Vec<u8>,
}

impl Framebuffer {
    /// Opens `path` for writing with the given geometry (from sysfs when `None`).
    pub fn open(path: &Path, geom: Option<FbGeometry>) -> Result<Self, RuntimeError> {
        let err = |reason: String| RuntimeError::Output {
            path: path.display().to_string(),
            reason,
        };
        let geom = match geom {
            Some(g) => g,
            None => FbGeometry::from_sysfs(path).map_err(err)?,
        };
        let file = OpenOptions::new()
            .write(true)
            .create(!path.starts_with("/dev"))
            .truncate(false)
            .open(path)
            .map_err(|e| err(format!("cannot open framebuffer: {e}")))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            buf: vec![0; (geom.stride * geom.height) as usize],
            geom,
        })
    }

    /// The geometry in use.
    pub fn geometry(&self) -> FbGeometry {
        self.geom
    }

    /// The back buffer (device byte layout).
    pub fn buffer(&self) -> &[u8] {
        &self.buf
    }

    /// Writes the back buffer to the device.
    pub fn present(&mut self) -> Result<(), RuntimeError> {
        self.file.write_all_at(&self.buf, 0).map_err(|e| RuntimeError::Output {
            path: self.path.display().to_string(),
            reason: format!("cannot write the framebuffer: {e}"),
        })
    }

    /// Draws `img` scaled down to fit (aspect kept), centred, the rest black.
    pub fn show(&mut self, img: &RgbImage) {
        let (fw, fh) = (self.geom.width, self.geom.height);
        let scale = (fw as f32 / img.width() as f32)
            .min(fh as f32 / img.height() as f32)
            .min(1.0);
        let (w, h) = (
            ((img.width() as f32 * scale) as u32).max(1),
            ((img.height() as f32 * scale) as u32).max(1),
        );
        let scaled;
        let img = if (w, h) == img.dimensions() {
            img
        } else {
            scaled = seg_core::preprocess::resize_rgb(img, h, w);
            &scaled
        };
        let top_left = Point::new(((fw - w) / 2) as i32, ((fh - h) / 2) as i32);
        let _ = self.clear(Rgb888::BLACK);
        let area = Rectangle::new(top_left, Size::new(w, h));
        let _ = self.fill_contiguous(&area, img.pixels().map(|p| Rgb888::new(p[0], p[1], p[2])));
    }
}

impl OriginDimensions for Framebuffer {
    fn size(&self) -> Size {
        Size::new(self.geom.width, self.geom.height)
    }
}

impl DrawTarget for Framebuffer {
    type Color = Rgb888;
    type Error = core::convert::Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let g = self.geom;
        let bpp = (g.bits_per_pixel / 8) as usize;
        for Pixel(p, c) in pixels {
            if p.x < 0 || p.y < 0 || p.x as u32 >= g.width || p.y as u32 >= g.height {
                continue;
            }
            let o = p.y as usize * g.stride as usize + p.x as usize * bpp;
            let px = &mut self.buf[o..o + bpp];
            match bpp {
                4 => px.copy_from_slice(&[c.b(), c.g(), c.r(), 0xFF]),
                3 => px.copy_from_slice(&[c.b(), c.g(), c.r()]),
                _ => {
                    let v = ((c.r() as u16 >> 3) << 11) | ((c.g() as u16 >> 2) << 5) | (c.b() as u16 >> 3);
                    px.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        Ok(())
    }
}

/// [`Output`] showing each frame on a framebuffer.
pub struct FbOutput(pub Framebuffer);

impl Output for FbOutput {
    fn describe(&self) -> String {
        let g = self.0.geom;
        format!(
            "framebuffer {} ({}x{}, {} bpp)",
            self.0.path.display(),
            g.width,
            g.height,
            g.bits_per_pixel
        )
    }
    fn write(&mut self, frame: &Rendered) -> Result<(), RuntimeError> {
        self.0.show(&frame.image);
        self.0.present()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometry_parsing() {
        assert_eq!(
            FbGeometry::parse("8x4x16").unwrap(),
            FbGeometry {
                width: 8,
                height: 4,
                bits_per_pixel: 16,
                stride: 16
            }
        );
        assert_eq!(FbGeometry::parse("8x4").unwrap().bits_per_pixel, 32);
        assert!(FbGeometry::parse("8x4x12").is_err());
        assert!(FbGeometry::parse("8").is_err());
        assert!(FbGeometry::from_sysfs(Path::new("/tmp/x")).is_err());
    }

    #[test]
    fn frames_land_pixel_exactly_in_device_layout() {
        let dir = tempfile::tempdir().unwrap();
        let img = RgbImage::from_fn(2, 2, |x, y| image::Rgb([10 + x as u8, 20 + y as u8, 200]));
        // 32 bpp: a 2x2 frame centred on a 4x2 screen, black bars left and right
        let path = dir.path().join("fb32");
        let mut fb = Framebuffer::open(&path, Some(FbGeometry::parse("4x2x32").unwrap())).unwrap();
        let mut out = FbOutput(fb);
        out.write(&Rendered {
            index: 0,
            name: "f".into(),
            image: img.clone(),
            status: String::new(),
            fps: 0.0,
        })
        .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        #[rustfmt::skip]
        let want = [
            0, 0, 0, 0xFF,  200, 20, 10, 0xFF,  200, 20, 11, 0xFF,  0, 0, 0, 0xFF,
            0, 0, 0, 0xFF,  200, 21, 10, 0xFF,  200, 21, 11, 0xFF,  0, 0, 0, 0xFF,
        ];
        assert_eq!(bytes, want);
        // 16 bpp RGB565, frame larger than the screen is scaled to fit
        fb = Framebuffer::open(&dir.path().join("fb16"), Some(FbGeometry::parse("1x1x16").unwrap())).unwrap();
        fb.show(&RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 255])));
        assert_eq!(fb.buffer(), &0xF81Fu16.to_le_bytes());
    }
}
