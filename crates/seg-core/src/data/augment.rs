//! Seeded training augmentation for (image, mask) pairs.
//!
//! Every random choice comes from the caller's RNG, so a given RNG state and config always
//! produce the same output. Geometric steps move mask pixels with nearest-neighbour sampling
//! only: mask values are never interpolated, and padding is filled with [`IGNORE`] (image: 0).
//!
//! The full pipeline is [`augment`]: base resize → random scale → random (padded) crop →
//! horizontal flip (p = 0.5) → [`photometric`] (colour jitter, Gaussian blur, grayscale).

use image::{GrayImage, Luma, RgbImage};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::preprocess::{resize_mask_nearest, resize_rgb};
use crate::IGNORE;

/// Augmentation settings (the `[augment]` table of a training config).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    /// `[h, w]` to resize to before random scaling; `None` keeps the native size.
    pub base_size: Option<[u32; 2]>,
    /// Smallest random scale factor.
    pub scale_min: f32,
    /// Largest random scale factor.
    pub scale_max: f32,
    /// `[h, w]` of the random crop (padded when the scaled image is smaller).
    pub crop: [u32; 2],
    /// Flip horizontally with probability 0.5.
    pub hflip: bool,
    /// Probability of colour jitter (brightness, contrast, saturation).
    pub color_jitter_prob: f32,
    /// Brightness factor range `1 ± brightness`.
    pub brightness: f32,
    /// Contrast factor range `1 ± contrast`.
    pub contrast: f32,
    /// Saturation factor range `1 ± saturation`.
    pub saturation: f32,
    /// Probability of a Gaussian blur.
    pub blur_prob: f32,
    /// `[min, max]` of the blur's sigma, in pixels.
    pub blur_sigma: [f32; 2],
    /// Probability of converting to grayscale (kept as 3 channels).
    pub grayscale_prob: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            base_size: None,
            scale_min: 0.5,
            scale_max: 2.0,
            crop: [256, 256],
            hflip: true,
            color_jitter_prob: 0.8,
            brightness: 0.4,
            contrast: 0.4,
            saturation: 0.4,
            blur_prob: 0.5,
            blur_sigma: [0.1, 2.0],
            grayscale_prob: 0.2,
        }
    }
}

/// An [`AugmentConfig`] value that is out of range.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("augment.{field}: {reason}")]
pub struct AugmentConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

/// Largest side accepted for `base_size`, `crop` and scaled images.
const MAX_SIDE: u32 = 16384;

impl AugmentConfig {
    /// A config with every random step off: no scaling, flipping or photometric change
    /// (only the crop remains).
    pub fn identity(crop: [u32; 2]) -> Self {
        AugmentConfig {
            base_size: None,
            scale_min: 1.0,
            scale_max: 1.0,
            crop,
            hflip: false,
            color_jitter_prob: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            saturation: 0.0,
            blur_prob: 0.0,
            blur_sigma: [0.0, 0.0],
            grayscale_prob: 0.0,
        }
    }

    /// Checks every value's range; call once after reading a config.
    ///
    /// The augmentation functions never panic on bad values, but they may produce useless or
    /// huge outputs (e.g. a scale of 1000).
    pub fn validate(&self) -> Result<(), AugmentConfigError> {
        let err = |field, reason: String| Err(AugmentConfigError { field, reason });
        let side_ok = |v: u32| (1..=MAX_SIDE).contains(&v);
        if let Some([h, w]) = self.base_size {
            if !side_ok(h) || !side_ok(w) {
                return err("base_size", format!("[{h}, {w}] must be within 1..={MAX_SIDE}"));
            }
        }
        let [ch, cw] = self.crop;
        if !side_ok(ch) || !side_ok(cw) {
            return err("crop", format!("[{ch}, {cw}] must be within 1..={MAX_SIDE}"));
        }
        let (lo, hi) = (self.scale_min, self.scale_max);
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi && hi <= 8.0) {
            return err(
                "scale_min",
                format!("scale range {lo}..{hi} must satisfy 0 < scale_min <= scale_max <= 8"),
            );
        }
        for (field, p) in [
            ("color_jitter_prob", self.color_jitter_prob),
            ("blur_prob", self.blur_prob),
            ("grayscale_prob", self.grayscale_prob),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return err(field, format!("probability {p} must be within 0..=1"));
            }
        }
        for (field, v) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("saturation", self.saturation),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return err(field, format!("{v} must be a finite value >= 0"));
            }
        }
        let [s0, s1] = self.blur_sigma;
        if !(s0.is_finite() && s1.is_finite() && 0.0 <= s0 && s0 <= s1 && s1 <= 50.0) {
            return err("blur_sigma", format!("[{s0}, {s1}] must satisfy 0 <= min <= max <= 50"));
        }
        Ok(())
    }
}

/// Uniform sample in `[lo, hi]` (either order); never panics, even on NaN bounds.
fn uniform(rng: &mut impl Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// `true` with probability `p` (values outside `0..=1` saturate).
fn chance(rng: &mut impl Rng, p: f32) -> bool {
    p > 0.0 && rng.random::<f32>() < p
}

/// `round(side * s)`, at least 1 and at most [`MAX_SIDE`].
fn scaled_side(side: u32, s: f32) -> u32 {
    let v = (side as f32 * s).round();
    if v.is_nan() {
        1
    } else {
        v.clamp(1.0, MAX_SIDE as f32) as u32
    }
}

/// Resizes an image (bilinear) and its mask (nearest) to `h` rows × `w` columns.
pub fn resize_pair(img: &RgbImage, mask: Option<&GrayImage>, h: u32, w: u32) -> (RgbImage, Option<GrayImage>) {
    (resize_rgb(img, h, w), mask.map(|m| resize_mask_nearest(m, h, w)))
}

/// Resizes the pair by a factor drawn uniformly from `[scale_min, scale_max]`.
///
/// `cfg.base_size` is not applied here (see [`augment`]).
pub fn random_scale(
    img: &RgbImage,
    mask: Option<&GrayImage>,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> (RgbImage, Option<GrayImage>) {
    let s = uniform(rng, cfg.scale_min, cfg.scale_max);
    resize_pair(img, mask, scaled_side(img.height(), s), scaled_side(img.width(), s))
}

/// Copies the `h × w` window at (`top`, `left`) of an interleaved buffer; outside pixels are
/// `fill`.
#[allow(clippy::too_many_arguments)]
fn crop_buffer(
    src: &[u8],
    (sw, sh): (u32, u32),
    channels: usize,
    top: i64,
    left: i64,
    h: u32,
    w: u32,
    fill: u8,
) -> Vec<u8> {
    let mut out = vec![fill; h as usize * w as usize * channels];
    let y0 = top.max(0);
    let y1 = (top + h as i64).min(sh as i64);
    let x0 = left.max(0);
    let x1 = (left + w as i64).min(sw as i64);
    if y0 >= y1 || x0 >= x1 {
        return out;
    }
    let src_stride = sw as usize * channels;
    let dst_stride = w as usize * channels;
    let len = (x1 - x0) as usize * channels;
    let src_x = x0 as usize * channels;
    let dst_x = (x0 - left) as usize * channels;
    for sy in y0..y1 {
        let s = sy as usize * src_stride + src_x;
        let d = (sy - top) as usize * dst_stride + dst_x;
        out[d..d + len].copy_from_slice(&src[s..s + len]);
    }
    out
}

/// Crops the `h × w` window whose top-left corner is (`top`, `left`) in the source; the
/// window may extend past any edge. Outside pixels are 0 in the image and [`IGNORE`] in the
/// mask.
pub fn crop_padded(
    img: &RgbImage,
    mask: Option<&GrayImage>,
    top: i64,
    left: i64,
    h: u32,
    w: u32,
) -> (RgbImage, Option<GrayImage>) {
    let data = crop_buffer(img.as_raw(), img.dimensions(), 3, top, left, h, w, 0);
    let out = RgbImage::from_raw(w, h, data).unwrap_or_else(|| RgbImage::new(w, h));
    let mask_out = mask.map(|m| {
        let data = crop_buffer(m.as_raw(), m.dimensions(), 1, top, left, h, w, IGNORE);
        GrayImage::from_raw(w, h, data).unwrap_or_else(|| GrayImage::from_pixel(w, h, Luma([IGNORE])))
    });
    (out, mask_out)
}

/// Random offset of a `dst`-long window on a `src`-long axis: inside the source when it fits,
/// otherwise a random placement of the source inside the (padded) window.
fn random_offset(rng: &mut impl Rng, src: u32, dst: u32) -> i64 {
    if src >= dst {
        rng.random_range(0..=src - dst) as i64
    } else {
        -(rng.random_range(0..=dst - src) as i64)
    }
}

/// A random `h × w` crop; sides shorter than the crop are padded (image 0, mask [`IGNORE`]),
/// with the source placed at a random position inside the crop. Also returns the crop's
/// (`top`, `left`) in source coordinates (negative when padded).
pub fn random_crop(
    img: &RgbImage,
    mask: Option<&GrayImage>,
    h: u32,
    w: u32,
    rng: &mut impl Rng,
) -> (RgbImage, Option<GrayImage>, (i64, i64)) {
    let top = random_offset(rng, img.height(), h);
    let left = random_offset(rng, img.width(), w);
    let (i, m) = crop_padded(img, mask, top, left, h, w);
    (i, m, (top, left))
}

/// Mirrors the image and mask left-right.
pub fn hflip_pair(img: &RgbImage, mask: Option<&GrayImage>) -> (RgbImage, Option<GrayImage>) {
    (
        image::imageops::flip_horizontal(img),
        mask.map(image::imageops::flip_horizontal),
    )
}

/// Factor drawn from `[max(0, 1 - amount), 1 + amount]`.
fn jitter_factor(rng: &mut impl Rng, amount: f32) -> f32 {
    if amount > 0.0 {
        uniform(rng, (1.0 - amount).max(0.0), 1.0 + amount)
    } else {
        1.0
    }
}

/// ITU-R 601 luma, as torchvision's `rgb_to_grayscale`.
#[inline]
fn luma(p: &[u8]) -> f32 {
    0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32
}

#[inline]
fn to_u8(v: f32) -> u8 {
    (v + 0.5).clamp(0.0, 255.0) as u8
}

/// Applies a per-value lookup table to every channel.
fn apply_lut(img: &mut RgbImage, f: impl Fn(f32) -> f32) {
    let lut: Vec<u8> = (0..256).map(|v| to_u8(f(v as f32))).collect();
    for v in img.iter_mut() {
        *v = lut[*v as usize];
    }
}

/// `img * factor` (torchvision `adjust_brightness`).
fn adjust_brightness(img: &mut RgbImage, factor: f32) {
    apply_lut(img, |v| v * factor);
}

/// Blend with the mean luma (torchvision `adjust_contrast`).
fn adjust_contrast(img: &mut RgbImage, factor: f32) {
    let n = (img.width() as usize * img.height() as usize).max(1);
    let mean = img.as_raw().chunks_exact(3).map(|p| luma(p) as f64).sum::<f64>() / n as f64;
    let mean = mean as f32;
    apply_lut(img, |v| (v - mean) * factor + mean);
}

/// Blend each pixel with its luma (torchvision `adjust_saturation`).
fn adjust_saturation(img: &mut RgbImage, factor: f32) {
    for p in img.chunks_exact_mut(3) {
        let g = luma(p);
        for v in p.iter_mut() {
            *v = to_u8((*v as f32 - g) * factor + g);
        }
    }
}

/// Replaces each pixel by its luma on all three channels.
fn to_grayscale(img: &mut RgbImage) {
    for p in img.chunks_exact_mut(3) {
        let g = to_u8(luma(p));
        p.fill(g);
    }
}

/// Normalised 1-D Gaussian kernel of radius `ceil(3 sigma)` (at least 1, at most 150).
fn gaussian_kernel(sigma: f32) -> Vec<f32> {
    let radius = ((3.0 * sigma).ceil() as i64).clamp(1, 150);
    let k: Vec<f32> = (-radius..=radius)
        .map(|i| (-((i * i) as f32) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f32 = k.iter().sum();
    k.into_iter().map(|v| v / sum).collect()
}

/// Separable Gaussian blur with replicated edges. `sigma <= 0` (or NaN) does nothing.
pub fn gaussian_blur(img: &mut RgbImage, sigma: f32) {
    if sigma.is_nan() || sigma <= 0.0 || img.width() == 0 || img.height() == 0 {
        return;
    }
    let kernel = gaussian_kernel(sigma);
    let radius = (kernel.len() / 2) as i64;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let stride = w * 3;
    let clamp = |i: i64, n: usize| i.clamp(0, n as i64 - 1) as usize;
    // Horizontal pass into f32.
    let mut tmp = vec![0f32; stride * h];
    let src = img.as_raw();
    for (row, out_row) in src.chunks_exact(stride).zip(tmp.chunks_exact_mut(stride)) {
        for x in 0..w {
            let mut acc = [0f32; 3];
            for (k, &wk) in kernel.iter().enumerate() {
                let sx = clamp(x as i64 + k as i64 - radius, w) * 3;
                for c in 0..3 {
                    acc[c] += wk * row[sx + c] as f32;
                }
            }
            out_row[x * 3..x * 3 + 3].copy_from_slice(&acc);
        }
    }
    // Vertical pass back into the image, one output row at a time.
    let mut acc = vec![0f32; stride];
    for y in 0..h {
        acc.fill(0.0);
        for (k, &wk) in kernel.iter().enumerate() {
            let sy = clamp(y as i64 + k as i64 - radius, h);
            for (a, &v) in acc.iter_mut().zip(&tmp[sy * stride..(sy + 1) * stride]) {
                *a += wk * v;
            }
        }
        let dst = &mut img.as_mut()[y * stride..(y + 1) * stride];
        for (o, &a) in dst.iter_mut().zip(&acc) {
            *o = to_u8(a);
        }
    }
}

/// Photometric augmentation in place: with `color_jitter_prob`, brightness, contrast and
/// saturation jitter (in that order, factors uniform in `1 ± amount`); with `blur_prob`, a
/// Gaussian blur with sigma uniform in `blur_sigma`; with `grayscale_prob`, grayscale.
pub fn photometric(img: &mut RgbImage, cfg: &AugmentConfig, rng: &mut impl Rng) {
    if chance(rng, cfg.color_jitter_prob) {
        let b = jitter_factor(rng, cfg.brightness);
        let c = jitter_factor(rng, cfg.contrast);
        let s = jitter_factor(rng, cfg.saturation);
        if b != 1.0 {
            adjust_brightness(img, b);
        }
        if c != 1.0 {
            adjust_contrast(img, c);
        }
        if s != 1.0 {
            adjust_saturation(img, s);
        }
    }
    if chance(rng, cfg.blur_prob) {
        let sigma = uniform(rng, cfg.blur_sigma[0], cfg.blur_sigma[1]);
        gaussian_blur(img, sigma);
    }
    if chance(rng, cfg.grayscale_prob) {
        to_grayscale(img);
    }
}

/// Where a crop of [`augment_with_geometry`] lies in its source image: enough to map any crop
/// position back to the source (issue #27: a teacher that scored the whole source frame at its
/// own scale is read at the student's crop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropGeometry {
    /// The source image's `(height, width)`.
    pub source: (u32, u32),
    /// `(height, width)` of the resized image the crop was cut from.
    pub scaled: (u32, u32),
    /// The crop's top-left corner in the resized image (negative where it is padded).
    pub top: i64,
    /// See `top`.
    pub left: i64,
    /// The crop's `(height, width)`.
    pub crop: (u32, u32),
    /// Mirrored left-right after the crop.
    pub flipped: bool,
}

impl CropGeometry {
    /// The source position of crop position `(y, x)`, both continuous with pixel `(i, j)`
    /// covering `[i, i + 1) × [j, j + 1)` (half-pixel centres, as every resize here). Positions
    /// in the crop's padding map outside `[0, height) × [0, width)`.
    pub fn to_source(&self, y: f64, x: f64) -> (f64, f64) {
        let x = if self.flipped { self.crop.1 as f64 - x } else { x };
        (
            (self.top as f64 + y) * self.source.0 as f64 / self.scaled.0.max(1) as f64,
            (self.left as f64 + x) * self.source.1 as f64 / self.scaled.1.max(1) as f64,
        )
    }
}

/// The full training augmentation: base resize (`cfg.base_size`) and random scale (done as
/// one resize), random padded crop to `cfg.crop`, horizontal flip with p = 0.5 (if
/// `cfg.hflip`), then [`photometric`] on the image.
///
/// The output is always `cfg.crop` sized; mask pixels only ever take values from the input
/// mask or [`IGNORE`].
pub fn augment(
    img: &RgbImage,
    mask: Option<&GrayImage>,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> (RgbImage, Option<GrayImage>) {
    let (out, out_mask, _) = augment_with_geometry(img, mask, cfg, rng);
    (out, out_mask)
}

/// [`augment`], also returning where the crop lies in `img` (the same random draws, so the
/// same crops).
pub fn augment_with_geometry(
    img: &RgbImage,
    mask: Option<&GrayImage>,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> (RgbImage, Option<GrayImage>, CropGeometry) {
    let [base_h, base_w] = cfg.base_size.unwrap_or([img.height(), img.width()]);
    let s = uniform(rng, cfg.scale_min, cfg.scale_max);
    let (sh, sw) = (scaled_side(base_h, s), scaled_side(base_w, s));
    let (scaled, scaled_mask) = resize_pair(img, mask, sh, sw);
    let [crop_h, crop_w] = cfg.crop;
    let (mut out, mut out_mask, (top, left)) = random_crop(&scaled, scaled_mask.as_ref(), crop_h, crop_w, rng);
    let flipped = cfg.hflip && rng.random::<bool>();
    if flipped {
        (out, out_mask) = hflip_pair(&out, out_mask.as_ref());
    }
    photometric(&mut out, cfg, rng);
    let geometry = CropGeometry {
        source: (img.height(), img.width()),
        scaled: (sh, sw),
        top,
        left,
        crop: (crop_h, crop_w),
        flipped,
    };
    (out, out_mask, geometry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn fixture(w: u32, h: u32) -> (RgbImage, GrayImage) {
        let img = RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 7 + y) as u8, (y * 11 + x * 3) as u8, ((x * y) % 256) as u8])
        });
        let mask = GrayImage::from_fn(w, h, |x, y| {
            Luma([match (x / 5 + y / 4) % 4 {
                0 => 0,
                1 => 3,
                2 => 7,
                _ => IGNORE,
            }])
        });
        (img, mask)
    }

    fn small_cfg() -> AugmentConfig {
        AugmentConfig {
            crop: [24, 32],
            ..AugmentConfig::default()
        }
    }

    /// Issue #27: every crop pixel's mask value is the source mask's value at the position
    /// `CropGeometry::to_source` gives for the pixel's centre (nearest resize, flips, padding).
    #[test]
    fn issue27_crop_geometry_maps_crop_pixels_to_their_source() {
        // unique ids (no IGNORE) so that a wrong mapping cannot match by chance
        let (w, h) = (20u32, 12u32);
        let img = RgbImage::new(w, h);
        let ids = GrayImage::from_fn(w, h, |x, y| Luma([(y * w + x) as u8]));
        let cfg = AugmentConfig {
            base_size: Some([24, 40]),
            scale_min: 0.5,
            scale_max: 2.5,
            crop: [16, 24],
            ..AugmentConfig::default()
        };
        let (mut flipped, mut padded) = (0, 0);
        for seed in 0..64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (_, m, g) = augment_with_geometry(&img, Some(&ids), &cfg, &mut rng);
            let m = m.unwrap();
            flipped += g.flipped as usize;
            for (x, y, v) in m.enumerate_pixels() {
                let (sy, sx) = g.to_source(y as f64 + 0.5, x as f64 + 0.5);
                let inside = (0.0..h as f64).contains(&sy) && (0.0..w as f64).contains(&sx);
                if v[0] == IGNORE {
                    padded += 1;
                    assert!(
                        !inside,
                        "seed {seed}: padding at ({x}, {y}) maps inside, to ({sy}, {sx})"
                    );
                } else {
                    assert!(inside, "seed {seed}: ({x}, {y}) maps outside");
                    let want = ids.get_pixel(sx as u32, sy as u32)[0];
                    assert_eq!(v[0], want, "seed {seed}: ({x}, {y}) -> ({sy}, {sx})");
                }
            }
            // the same draws as `augment`
            let mut rng2 = ChaCha8Rng::seed_from_u64(seed);
            assert_eq!(augment(&img, Some(&ids), &cfg, &mut rng2).1.unwrap(), m);
        }
        assert!(
            flipped > 0 && flipped < 64 && padded > 0,
            "{flipped} flips, {padded} padded pixels"
        );
    }

    #[test]
    fn defaults_validate_and_parse() {
        let d = AugmentConfig::default();
        d.validate().unwrap();
        let parsed: AugmentConfig = toml::from_str("crop = [64, 96]\nhflip = false").unwrap();
        assert_eq!(parsed.crop, [64, 96]);
        assert!(!parsed.hflip);
        assert_eq!(parsed.scale_max, d.scale_max);
        assert!(toml::from_str::<AugmentConfig>("cropp = [1, 1]").is_err());
        let back: AugmentConfig = toml::from_str(&toml::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn validate_rejects_bad_values() {
        let bad = [
            AugmentConfig {
                scale_min: 2.0,
                scale_max: 1.0,
                ..Default::default()
            },
            AugmentConfig {
                crop: [0, 4],
                ..Default::default()
            },
            AugmentConfig {
                blur_prob: 1.5,
                ..Default::default()
            },
            AugmentConfig {
                brightness: f32::NAN,
                ..Default::default()
            },
            AugmentConfig {
                blur_sigma: [2.0, 1.0],
                ..Default::default()
            },
            AugmentConfig {
                base_size: Some([0, 10]),
                ..Default::default()
            },
        ];
        for cfg in bad {
            assert!(cfg.validate().is_err(), "{cfg:?}");
        }
        AugmentConfig::identity([8, 8]).validate().unwrap();
    }

    #[test]
    fn same_seed_same_output_different_seed_differs() {
        let (img, mask) = fixture(40, 30);
        let cfg = small_cfg();
        let run = |seed| augment(&img, Some(&mask), &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
        let (a, am) = run(1);
        let (b, bm) = run(1);
        assert_eq!(a, b);
        assert_eq!(am, bm);
        assert_eq!(a.dimensions(), (32, 24));
        assert_eq!(am.as_ref().unwrap().dimensions(), (32, 24));
        let differs = (2..6).any(|s| run(s).0 != a);
        assert!(differs, "different seeds gave identical output");
    }

    #[test]
    fn crop_padding_is_zero_and_ignore() {
        let (img, mask) = fixture(4, 4);
        let (ci, cm) = crop_padded(&img, Some(&mask), -2, -3, 8, 9);
        let cm = cm.unwrap();
        assert_eq!(ci.dimensions(), (9, 8));
        for y in 0..8u32 {
            for x in 0..9u32 {
                let inside = (2..6).contains(&y) && (3..7).contains(&x);
                if inside {
                    assert_eq!(ci.get_pixel(x, y), img.get_pixel(x - 3, y - 2));
                    assert_eq!(cm.get_pixel(x, y), mask.get_pixel(x - 3, y - 2));
                } else {
                    assert_eq!(ci.get_pixel(x, y), &Rgb([0, 0, 0]));
                    assert_eq!(cm.get_pixel(x, y)[0], IGNORE);
                }
            }
        }
        // Entirely outside: all padding.
        let (ci, cm) = crop_padded(&img, Some(&mask), 10, -20, 3, 3);
        assert!(ci.iter().all(|&v| v == 0));
        assert!(cm.unwrap().iter().all(|&v| v == IGNORE));
    }

    #[test]
    fn random_crop_pads_small_images() {
        let (img, mask) = fixture(5, 3);
        let mut no_void = mask.clone();
        no_void.iter_mut().for_each(|v| *v = 1);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for _ in 0..20 {
            let (ci, cm, (top, left)) = random_crop(&img, Some(&no_void), 6, 7, &mut rng);
            let cm = cm.unwrap();
            assert_eq!(ci.dimensions(), (7, 6));
            assert!((-3..=0).contains(&top) && (-2..=0).contains(&left));
            assert_eq!(cm.iter().filter(|&&v| v == 1).count(), 15);
            assert_eq!(cm.iter().filter(|&&v| v == IGNORE).count(), 42 - 15);
            assert_eq!(ci.get_pixel((-left) as u32, (-top) as u32), img.get_pixel(0, 0));
        }
        // Larger images are cropped inside their bounds.
        let (big, big_mask) = fixture(20, 10);
        let (_, _, (top, left)) = random_crop(&big, Some(&big_mask), 4, 4, &mut rng);
        assert!((0..=6).contains(&top) && (0..=16).contains(&left));
    }

    #[test]
    fn hflip_twice_is_identity() {
        let (img, mask) = fixture(9, 5);
        let (f, fm) = hflip_pair(&img, Some(&mask));
        assert_ne!(f, img);
        assert_eq!(f.get_pixel(0, 2), img.get_pixel(8, 2));
        let (g, gm) = hflip_pair(&f, fm.as_ref());
        assert_eq!(g, img);
        assert_eq!(gm.unwrap(), mask);
    }

    #[test]
    fn mask_values_stay_in_input_set() {
        let (img, mask) = fixture(37, 23);
        let allowed: Vec<u8> = {
            let mut v: Vec<u8> = mask.iter().copied().collect();
            v.push(IGNORE);
            v.sort_unstable();
            v.dedup();
            v
        };
        let cfg = AugmentConfig {
            scale_min: 0.3,
            scale_max: 2.7,
            crop: [31, 29],
            ..Default::default()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..30 {
            let (_, m) = augment(&img, Some(&mask), &cfg, &mut rng);
            let m = m.unwrap();
            assert!(m.iter().all(|v| allowed.binary_search(v).is_ok()));
            let (s, sm) = random_scale(&img, Some(&mask), &cfg, &mut rng);
            let sm = sm.unwrap();
            assert_eq!(s.dimensions(), sm.dimensions());
            assert!(sm.iter().all(|v| allowed.binary_search(v).is_ok()));
        }
    }

    #[test]
    fn base_size_and_identity_config() {
        let (img, mask) = fixture(16, 12);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        // No randomness except the crop, which covers the whole image here.
        let cfg = AugmentConfig::identity([12, 16]);
        let (o, om) = augment(&img, Some(&mask), &cfg, &mut rng);
        assert_eq!(o, img);
        assert_eq!(om.unwrap(), mask);
        let cfg = AugmentConfig {
            base_size: Some([6, 8]),
            ..AugmentConfig::identity([6, 8])
        };
        let (o, om) = augment(&img, Some(&mask), &cfg, &mut rng);
        assert_eq!(o, resize_rgb(&img, 6, 8));
        assert_eq!(om.unwrap(), resize_mask_nearest(&mask, 6, 8));
        let (o, om) = augment(&img, None, &cfg, &mut rng);
        assert_eq!(o.dimensions(), (8, 6));
        assert!(om.is_none());
    }

    #[test]
    fn photometric_steps() {
        let (img, _) = fixture(12, 10);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // Grayscale always: all channels equal.
        let mut g = img.clone();
        let cfg = AugmentConfig {
            grayscale_prob: 1.0,
            ..AugmentConfig::identity([1, 1])
        };
        photometric(&mut g, &cfg, &mut rng);
        assert!(g.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        // Nothing enabled: unchanged.
        let mut same = img.clone();
        photometric(&mut same, &AugmentConfig::identity([1, 1]), &mut rng);
        assert_eq!(same, img);
        // Blur keeps a constant image constant and smooths an edge.
        let mut flat = RgbImage::from_pixel(9, 7, Rgb([40, 90, 200]));
        gaussian_blur(&mut flat, 1.7);
        assert!(flat.pixels().all(|p| *p == Rgb([40, 90, 200])));
        let mut edge = RgbImage::from_fn(10, 3, |x, _| if x < 5 { Rgb([0; 3]) } else { Rgb([255; 3]) });
        gaussian_blur(&mut edge, 1.0);
        let row: Vec<u8> = (0..10).map(|x| edge.get_pixel(x, 1)[0]).collect();
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
        assert!(row[4] > 0 && row[5] < 255, "{row:?}");
        assert_eq!(row[0], 0);
        assert_eq!(row[9], 255);
        // Jitter always on changes the image but keeps its size.
        let mut j = img.clone();
        let cfg = AugmentConfig {
            color_jitter_prob: 1.0,
            brightness: 0.5,
            ..AugmentConfig::identity([1, 1])
        };
        photometric(&mut j, &cfg, &mut rng);
        assert_eq!(j.dimensions(), img.dimensions());
        assert_ne!(j, img);
    }
}
