//! Image → network input: resizing and normalisation, shared by the trainer and the runtime.
//!
//! Images are HWC `u8` ([`RgbImage`]); network inputs are CHW `f32` normalised as
//! `(pixel / 255 - mean) / std` per channel.

use image::{GrayImage, RgbImage};

/// ImageNet channel means (RGB), for inputs scaled to `0..=1`.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB), for inputs scaled to `0..=1`.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Normalises `img` into `out` as CHW `f32`: `out[c*h*w + y*w + x] = (p/255 - mean[c]) / std[c]`.
///
/// # Panics
/// If `out.len() != 3 * width * height` (a caller bug, not a data error).
pub fn normalize_into(img: &RgbImage, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    let plane = img.width() as usize * img.height() as usize;
    assert_eq!(
        out.len(),
        3 * plane,
        "normalize_into: output buffer has {} values, expected 3*{}*{}",
        out.len(),
        img.height(),
        img.width()
    );
    // One lookup table per channel: 3 KiB, and no per-pixel division.
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        let inv_std = 1.0 / std[c];
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 / 255.0 - mean[c]) * inv_std;
        }
    }
    let (r_out, rest) = out.split_at_mut(plane);
    let (g_out, b_out) = rest.split_at_mut(plane);
    let pixels = img.as_raw().chunks_exact(3);
    for (((px, r), g), b) in pixels.zip(r_out.iter_mut()).zip(g_out.iter_mut()).zip(b_out.iter_mut()) {
        *r = lut[0][px[0] as usize];
        *g = lut[1][px[1] as usize];
        *b = lut[2][px[2] as usize];
    }
}

/// [`normalize_into`] of `img` resized to `h × w` ([`resize_rgb`]) unless it is that size already:
/// a frame as the network's input.
pub fn normalize_resized_into(img: &RgbImage, h: u32, w: u32, mean: [f32; 3], std: [f32; 3], out: &mut [f32]) {
    if img.dimensions() == (w, h) {
        normalize_into(img, mean, std, out);
    } else {
        normalize_into(&resize_rgb(img, h, w), mean, std, out);
    }
}

/// Normalises `img` into a new CHW `f32` vector of length `3 * h * w`; see [`normalize_into`].
pub fn normalize(img: &RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let mut out = vec![0f32; 3 * img.width() as usize * img.height() as usize];
    normalize_into(img, mean, std, &mut out);
    out
}

/// Source taps for one axis of a linear resize with half-pixel centres (ONNX `Resize`
/// `half_pixel`, PyTorch `align_corners=False`): for each output index, the two source indices
/// and the weight of the second one. Shared by image resizing, the runtime's logit upsampling
/// and the trainable resize in `seg-nn`, so all three agree with the exported graph.
pub fn half_pixel_taps(src: usize, dst: usize) -> Vec<(usize, usize, f32)> {
    let scale = src as f64 / dst as f64;
    let last = src.saturating_sub(1);
    (0..dst)
        .map(|d| {
            let s = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (s.floor() as usize).min(last);
            let i1 = (i0 + 1).min(last);
            (i0, i1, (s - i0 as f64) as f32)
        })
        .collect()
}

/// Source index table for one axis of a nearest-neighbour resize (pixel centres).
fn nearest_axis(src: u32, dst: u32) -> Vec<usize> {
    let scale = src as f64 / dst as f64;
    let last = src.saturating_sub(1) as usize;
    (0..dst)
        .map(|d| (((d as f64 + 0.5) * scale) as usize).min(last))
        .collect()
}

/// Bilinear resize of an RGB image to `h` rows × `w` columns.
///
/// Uses half-pixel centres (PyTorch's `align_corners=False`) and no anti-aliasing, which is
/// what the training-time augmentation and the runtime both expect. A source with no pixels
/// yields a black image of the requested size.
pub fn resize_rgb(img: &RgbImage, h: u32, w: u32) -> RgbImage {
    let (sw, sh) = img.dimensions();
    if (sw, sh) == (w, h) {
        return img.clone();
    }
    let mut out = RgbImage::new(w, h);
    if sw == 0 || sh == 0 || w == 0 || h == 0 {
        return out;
    }
    let xs = half_pixel_taps(sw as usize, w as usize);
    let ys = half_pixel_taps(sh as usize, h as usize);
    let src = img.as_raw();
    let stride = sw as usize * 3;
    // Horizontal pass into two f32 rows, reused for every output row.
    let mut row0 = vec![0f32; w as usize * 3];
    let mut row1 = vec![0f32; w as usize * 3];
    let horizontal = |y: usize, row: &mut [f32]| {
        let line = &src[y * stride..(y + 1) * stride];
        for (&(x0, x1, fx), o) in xs.iter().zip(row.chunks_exact_mut(3)) {
            let (a, b) = (&line[x0 * 3..x0 * 3 + 3], &line[x1 * 3..x1 * 3 + 3]);
            for c in 0..3 {
                o[c] = a[c] as f32 + (b[c] as f32 - a[c] as f32) * fx;
            }
        }
    };
    let mut cached = (usize::MAX, usize::MAX);
    let dst_stride = w as usize * 3;
    for (&(y0, y1, fy), out_row) in ys.iter().zip(out.chunks_exact_mut(dst_stride)) {
        if cached != (y0, y1) {
            if cached.1 == y0 {
                std::mem::swap(&mut row0, &mut row1);
            } else {
                horizontal(y0, &mut row0);
            }
            horizontal(y1, &mut row1);
            cached = (y0, y1);
        }
        for ((o, &a), &b) in out_row.iter_mut().zip(&row0).zip(&row1) {
            *o = (a + (b - a) * fy + 0.5).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// Nearest-neighbour resize of a label mask to `h` rows × `w` columns.
///
/// Label values are copied, never interpolated, so the output holds only values present in
/// the input. A source with no pixels yields a mask filled with [`crate::IGNORE`].
pub fn resize_mask_nearest(mask: &GrayImage, h: u32, w: u32) -> GrayImage {
    let (sw, sh) = mask.dimensions();
    if (sw, sh) == (w, h) {
        return mask.clone();
    }
    if sw == 0 || sh == 0 {
        return GrayImage::from_pixel(w, h, image::Luma([crate::IGNORE]));
    }
    let mut out = GrayImage::new(w, h);
    if w == 0 || h == 0 {
        return out;
    }
    let xs = nearest_axis(sw, w);
    let ys = nearest_axis(sh, h);
    let src = mask.as_raw();
    let sw = sw as usize;
    for (&y, out_row) in ys.iter().zip(out.chunks_exact_mut(w as usize)) {
        let line = &src[y * sw..(y + 1) * sw];
        for (o, &x) in out_row.iter_mut().zip(&xs) {
            *o = line[x];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    #[test]
    fn normalize_is_chw_and_exact() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([0, 128, 255]));
        img.put_pixel(1, 0, Rgb([255, 0, 51]));
        let v = normalize(&img, IMAGENET_MEAN, IMAGENET_STD);
        assert_eq!(v.len(), 6);
        let expect = |p: u8, c: usize| (p as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        let want = [
            expect(0, 0),
            expect(255, 0),
            expect(128, 1),
            expect(0, 1),
            expect(255, 2),
            expect(51, 2),
        ];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn resize_constant_stays_constant() {
        let img = RgbImage::from_pixel(7, 5, Rgb([10, 200, 33]));
        for (h, w) in [(1, 1), (3, 4), (10, 14), (5, 7), (13, 2)] {
            let r = resize_rgb(&img, h, w);
            assert_eq!(r.dimensions(), (w, h));
            assert!(r.pixels().all(|p| *p == Rgb([10, 200, 33])));
        }
    }

    #[test]
    fn resize_upscale_interpolates_between_neighbours() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, Rgb([0, 0, 0]));
        img.put_pixel(1, 0, Rgb([200, 200, 200]));
        let r = resize_rgb(&img, 1, 4);
        let row: Vec<u8> = r.pixels().map(|p| p[0]).collect();
        // Half-pixel centres: source x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
        assert_eq!(row, vec![0, 50, 150, 200]);
    }

    #[test]
    fn mask_nearest_keeps_values() {
        let mut m = GrayImage::new(3, 3);
        for (i, p) in m.pixels_mut().enumerate() {
            *p = Luma([if i % 2 == 0 { 255 } else { i as u8 }]);
        }
        let allowed: Vec<u8> = m.pixels().map(|p| p[0]).collect();
        let r = resize_mask_nearest(&m, 7, 5);
        assert_eq!(r.dimensions(), (5, 7));
        assert!(r.pixels().all(|p| allowed.contains(&p[0])));
        // 2x downscale of a 4x4 picks one source pixel per 2x2 block.
        let m4 = GrayImage::from_fn(4, 4, |x, y| Luma([(y * 4 + x) as u8]));
        let d = resize_mask_nearest(&m4, 2, 2);
        assert_eq!(d.as_raw(), &vec![5, 7, 13, 15]);
    }
}
