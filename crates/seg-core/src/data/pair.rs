//! Overlapping crop pairs for context-aware consistency (CAC, Lai et al. CVPR 2021).
//!
//! An unlabeled image is resized by a random scale, then two equally sized crops are taken
//! from the *same* resized image so that their intersection-over-union lies in a range
//! (`[0.1, 1.0]` in the paper). Each crop gets its own horizontal flip and photometric jitter.
//! [`PairGeometry`] keeps where the crops came from, and [`PairGeometry::overlap`] maps the
//! overlap region to the cells of both crops' feature grids (stride `s`), flip included, so that
//! cell `j` of the overlap covers exactly the same image pixels in both crops.
//!
//! Crop offsets are drawn as multiples of the feature stride, which makes the correspondence
//! exact (no interpolation). Windows may extend past the scaled image (it is then padded with
//! black, as [`super::augment::crop_padded`] does); cells that are not entirely inside the image
//! are marked invalid.
//!
//! An image may come with a per-pixel label map (the pseudo-labels of CAC's extension with
//! image-level tags): [`make_labeled_pair`] crops and flips it with its image, nearest-neighbour
//! resized, padding [`crate::IGNORE`].

use image::{GrayImage, RgbImage};
use rand::Rng;

use super::augment::{crop_padded, hflip_pair, photometric, resize_pair, AugmentConfig};

/// How crop pairs are drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PairConfig {
    /// `[min, max]` IoU of the two crop windows (`[1, 1]`: both windows identical).
    pub iou: [f32; 2],
    /// Feature stride in pixels: window offsets are multiples of it (8 for a stride-4 decoder
    /// embedding followed by a 2×2 average pool).
    pub stride: u32,
    /// Rejection-sampling attempts before the closest candidate is used.
    pub max_tries: u32,
}

impl Default for PairConfig {
    fn default() -> Self {
        Self {
            iou: [0.1, 1.0],
            stride: 8,
            max_tries: 200,
        }
    }
}

/// One crop window in the scaled image's pixel coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Top row (negative: the window starts above the image, which is padded).
    pub top: i64,
    /// Left column (negative: padded on the left).
    pub left: i64,
    /// Whether the crop was mirrored left-right after cropping.
    pub flip: bool,
}

/// Where the two crops of a pair came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairGeometry {
    /// `(h, w)` of the scaled image both crops were taken from.
    pub image_hw: (u32, u32),
    /// `(h, w)` of each crop.
    pub crop_hw: (u32, u32),
    /// The two windows.
    pub windows: [Window; 2],
}

/// The overlap of a pair on the feature grids of its two crops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// `(rows, cols)` of one crop's feature grid (`crop / stride`).
    pub grid: (usize, usize),
    /// `(rows, cols)` of the overlap in feature cells.
    pub len: (usize, usize),
    /// For each crop, the flat index (`row · grid.1 + col`) into its feature grid of every
    /// overlap cell, row-major over the overlap: entry `j` of both lists covers the same pixels.
    pub indices: [Vec<u32>; 2],
    /// Per overlap cell: `true` when the cell lies entirely inside the scaled image (not padding).
    pub valid: Vec<bool>,
}

impl PairGeometry {
    /// IoU of the two windows (padding counts as part of a window).
    pub fn iou(&self) -> f64 {
        let (h, w) = (self.crop_hw.0 as f64, self.crop_hw.1 as f64);
        let dy = (self.windows[0].top - self.windows[1].top).unsigned_abs() as f64;
        let dx = (self.windows[0].left - self.windows[1].left).unsigned_abs() as f64;
        let inter = (h - dy).max(0.0) * (w - dx).max(0.0);
        inter / (2.0 * h * w - inter)
    }

    /// `(rows, cols)` of a crop's feature grid at `stride`.
    pub fn grid(&self, stride: u32) -> (usize, usize) {
        let s = stride.max(1);
        ((self.crop_hw.0 / s) as usize, (self.crop_hw.1 / s) as usize)
    }

    /// Top-left image pixel of feature cell `(r, c)` of crop `k` (as stored, i.e. flipped when
    /// the crop was flipped).
    fn cell_origin(&self, k: usize, r: usize, c: usize, stride: u32) -> (i64, i64) {
        let s = stride.max(1) as i64;
        let gw = self.grid(stride).1;
        let win = self.windows[k];
        // A flipped crop's column c holds the unflipped crop's column gw - 1 - c (the crop width
        // is a multiple of the stride, so cells map onto cells).
        let c = if win.flip { gw - 1 - c } else { c };
        (win.top + r as i64 * s, win.left + c as i64 * s)
    }

    /// Per feature cell of crop `k` (row-major `[rows · cols]`): `true` when the cell lies
    /// entirely inside the scaled image.
    pub fn cell_valid(&self, k: usize, stride: u32) -> Vec<bool> {
        let (gh, gw) = self.grid(stride);
        let s = stride.max(1) as i64;
        let (ih, iw) = (self.image_hw.0 as i64, self.image_hw.1 as i64);
        let mut out = Vec::with_capacity(gh * gw);
        for r in 0..gh {
            for c in 0..gw {
                let (y, x) = self.cell_origin(k, r, c, stride);
                out.push(y >= 0 && x >= 0 && y + s <= ih && x + s <= iw);
            }
        }
        out
    }

    /// The overlap on both feature grids at `stride`. Exact when the window offsets are
    /// multiples of `stride` (as [`sample_pair`] draws them); empty when the windows do not
    /// overlap.
    pub fn overlap(&self, stride: u32) -> Overlap {
        let s = stride.max(1) as i64;
        let grid = self.grid(stride);
        let [a, b] = self.windows;
        let (h, w) = (grid.0 as i64 * s, grid.1 as i64 * s);
        // Intersection in image coordinates, in whole cells of crop 0's grid.
        let (y0, y1) = (a.top.max(b.top), (a.top + h).min(b.top + h));
        let (x0, x1) = (a.left.max(b.left), (a.left + w).min(b.left + w));
        let rows = ((y1 - y0).max(0) / s) as usize;
        let cols = ((x1 - x0).max(0) / s) as usize;
        let mut indices = [Vec::with_capacity(rows * cols), Vec::with_capacity(rows * cols)];
        let mut valid = Vec::with_capacity(rows * cols);
        let (ih, iw) = (self.image_hw.0 as i64, self.image_hw.1 as i64);
        for i in 0..rows {
            for j in 0..cols {
                // the cell's top-left pixel in image coordinates
                let (y, x) = (y0 + i as i64 * s, x0 + j as i64 * s);
                for (k, win) in [a, b].iter().enumerate() {
                    let r = ((y - win.top) / s) as usize;
                    let c = ((x - win.left) / s) as usize;
                    let c = if win.flip { grid.1 - 1 - c } else { c };
                    indices[k].push((r * grid.1 + c) as u32);
                }
                valid.push(y >= 0 && x >= 0 && y + s <= ih && x + s <= iw);
            }
        }
        Overlap {
            grid,
            len: (rows, cols),
            indices,
            valid,
        }
    }
}

/// Two crops of one image and their geometry.
#[derive(Debug, Clone)]
pub struct PairSample {
    /// The augmented crops (each `crop_hw`).
    pub crops: [RgbImage; 2],
    /// Where they came from.
    pub geometry: PairGeometry,
    /// The label map's crops, aligned pixel for pixel with `crops` ([`make_labeled_pair`]).
    pub labels: Option<[GrayImage; 2]>,
}

/// Uniform sample in `[lo, hi]`.
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// The range of a window's start along one axis: inside the image when it fits, otherwise any
/// placement that keeps the whole image side inside the window.
fn start_range(img: u32, crop: u32) -> (i64, i64) {
    let d = img as i64 - crop as i64;
    (d.min(0), d.max(0))
}

/// Draws a pair of `crop_hw` windows on an `image_hw` image with IoU in `cfg.iou` and offsets
/// that are multiples of `cfg.stride`; each window is flipped with probability 0.5 when
/// `hflip`. When no such pair exists (e.g. a low IoU on an image barely larger than the crop),
/// the candidate closest to the range is returned.
pub fn sample_pair(
    image_hw: (u32, u32),
    crop_hw: (u32, u32),
    cfg: &PairConfig,
    hflip: bool,
    rng: &mut impl Rng,
) -> PairGeometry {
    let s = cfg.stride.max(1) as i64;
    let (h, w) = (crop_hw.0 as i64, crop_hw.1 as i64);
    let (ty, tx) = (start_range(image_hw.0, crop_hw.0), start_range(image_hw.1, crop_hw.1));
    let top = rng.random_range(ty.0..=ty.1);
    let left = rng.random_range(tx.0..=tx.1);
    let (lo, hi) = (cfg.iou[0] as f64, cfg.iou[1] as f64);
    let iou_of = |dy: i64, dx: i64| {
        let inter = ((h - dy.abs()) * (w - dx.abs())) as f64;
        inter / (2.0 * (h * w) as f64 - inter)
    };
    let miss = |v: f64| if v < lo { lo - v } else { (v - hi).max(0.0) };
    // (0, 0) is always possible: the identical window (IoU 1).
    let mut best = (0i64, 0i64);
    let mut best_miss = miss(1.0);
    // Largest whole-stride offset that keeps at least one cell of overlap.
    let (max_dy, max_dx) = (((h / s) - 1).max(0) * s, ((w / s) - 1).max(0) * s);
    for _ in 0..cfg.max_tries {
        if best_miss == 0.0 && (lo >= 1.0 || best != (0, 0)) {
            break;
        }
        let t = uniform(rng, lo, hi).clamp(1e-6, 1.0);
        let inter = 2.0 * (h * w) as f64 * t / (1.0 + t);
        // overlap height between inter / w and h, then the width that gives the area
        let oh = uniform(rng, (inter / w as f64).max(s as f64), h as f64);
        let ow = (inter / oh).min(w as f64);
        let round_s = |v: f64, max: i64| (((v / s as f64).round() as i64) * s).clamp(0, max);
        let mut dy = round_s(h as f64 - oh, max_dy);
        let mut dx = round_s(w as f64 - ow, max_dx);
        if rng.random::<bool>() {
            dy = -dy;
        }
        if rng.random::<bool>() {
            dx = -dx;
        }
        // keep the second window's start inside its allowed range (flip the sign if needed)
        let fit = |start: i64, d: i64, r: (i64, i64)| {
            if (r.0..=r.1).contains(&(start + d)) {
                Some(d)
            } else if (r.0..=r.1).contains(&(start - d)) {
                Some(-d)
            } else {
                None
            }
        };
        let (Some(dy), Some(dx)) = (fit(top, dy, ty), fit(left, dx, tx)) else {
            continue;
        };
        let m = miss(iou_of(dy, dx));
        if m < best_miss || (m == 0.0 && best == (0, 0) && lo < 1.0) {
            best = (dy, dx);
            best_miss = m;
        }
    }
    let f0 = hflip && rng.random::<bool>();
    let f1 = hflip && rng.random::<bool>();
    PairGeometry {
        image_hw,
        crop_hw,
        windows: [
            Window { top, left, flip: f0 },
            Window {
                top: top + best.0,
                left: left + best.1,
                flip: f1,
            },
        ],
    }
}

/// `round(side · s)`, at least 1.
fn scaled_side(side: u32, s: f64) -> u32 {
    let v = (side as f64 * s).round();
    if v.is_nan() {
        1
    } else {
        v.clamp(1.0, 16384.0) as u32
    }
}

/// Makes a CAC crop pair from `img`: base resize + random scale (as [`super::augment::augment`]),
/// two windows from [`sample_pair`] of size `aug.crop`, each cropped (padded with black),
/// flipped when its window says so, and given its own [`photometric`] jitter.
pub fn make_pair(img: &RgbImage, aug: &AugmentConfig, cfg: &PairConfig, rng: &mut impl Rng) -> PairSample {
    make_labeled_pair(img, None, aug, cfg, rng)
}

/// [`make_pair`] with an optional label map of `img`'s size, cropped and flipped with the image
/// (nearest-neighbour resize, [`crate::IGNORE`] in padding). The random draws are those of
/// [`make_pair`]: the same seed gives the same crops with or without labels.
pub fn make_labeled_pair(
    img: &RgbImage,
    label: Option<&GrayImage>,
    aug: &AugmentConfig,
    cfg: &PairConfig,
    rng: &mut impl Rng,
) -> PairSample {
    let [base_h, base_w] = aug.base_size.unwrap_or([img.height(), img.width()]);
    let s = uniform(rng, aug.scale_min as f64, aug.scale_max as f64);
    let (scaled, scaled_label) = resize_pair(img, label, scaled_side(base_h, s), scaled_side(base_w, s));
    let [ch, cw] = aug.crop;
    let geometry = sample_pair((scaled.height(), scaled.width()), (ch, cw), cfg, aug.hflip, rng);
    let mut labels = Vec::with_capacity(2);
    let crops = geometry.windows.map(|win| {
        let (mut c, mut l) = crop_padded(&scaled, scaled_label.as_ref(), win.top, win.left, ch, cw);
        if win.flip {
            (c, l) = hflip_pair(&c, l.as_ref());
        }
        photometric(&mut c, aug, rng);
        labels.extend(l);
        c
    });
    let labels = <[GrayImage; 2]>::try_from(labels).ok();
    PairSample {
        crops,
        geometry,
        labels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Pixel (x, y) holds (x + 1, y + 1, 7): black (0, 0, 0) only in padding.
    fn coord_image(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x + 1) as u8, (y + 1) as u8, 7]))
    }

    /// Scale 0.6..1.4 and flips, 64×64 crops, no photometric jitter: on a 90×120 image some pairs
    /// are padded.
    fn padded_flipped_aug() -> AugmentConfig {
        AugmentConfig {
            scale_min: 0.6,
            scale_max: 1.4,
            hflip: true,
            ..AugmentConfig::identity([64, 64])
        }
    }

    /// The sorted image coordinates covered by feature cell `idx` of `crop` (padding: None).
    fn cell_content(crop: &RgbImage, idx: u32, grid_w: usize, s: u32) -> Vec<Option<(u8, u8)>> {
        let (r, c) = (idx as usize / grid_w, idx as usize % grid_w);
        let mut v = Vec::new();
        for y in 0..s {
            for x in 0..s {
                let p = crop.get_pixel(c as u32 * s + x, r as u32 * s + y);
                v.push(if p[2] == 0 { None } else { Some((p[0] - 1, p[1] - 1)) });
            }
        }
        v.sort();
        v
    }

    #[test]
    fn overlap_cells_hold_the_same_pixels_in_both_crops_flips_included() {
        let img = coord_image(120, 90);
        let mut flips_seen = [false; 4];
        let mut partial_seen = false;
        for seed in 0..60u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let aug = padded_flipped_aug();
            let cfg = PairConfig::default();
            let p = make_pair(&img, &aug, &cfg, &mut rng);
            let g = &p.geometry;
            let ov = g.overlap(cfg.stride);
            assert_eq!(ov.grid, (8, 8));
            assert_eq!(ov.indices[0].len(), ov.len.0 * ov.len.1);
            assert!(!ov.indices[0].is_empty(), "empty overlap: {g:?}");
            flips_seen[g.windows[0].flip as usize * 2 + g.windows[1].flip as usize] = true;
            partial_seen |= ov.len != (8, 8);
            let valid = [g.cell_valid(0, cfg.stride), g.cell_valid(1, cfg.stride)];
            for j in 0..ov.indices[0].len() {
                let (i0, i1) = (ov.indices[0][j], ov.indices[1][j]);
                let a = cell_content(&p.crops[0], i0, 8, cfg.stride);
                let b = cell_content(&p.crops[1], i1, 8, cfg.stride);
                assert_eq!(a, b, "seed {seed}, overlap cell {j}: {g:?}");
                // valid <=> no padding pixel in the cell
                assert_eq!(ov.valid[j], a.iter().all(|v| v.is_some()), "seed {seed} cell {j}");
                assert_eq!(valid[0][i0 as usize], ov.valid[j]);
                assert_eq!(valid[1][i1 as usize], ov.valid[j]);
            }
        }
        assert!(flips_seen.iter().all(|&f| f), "not every flip combination tested");
        assert!(partial_seen, "no partial overlap tested");
    }

    /// Issue #26 (CAC with extra tags): a label map follows its image through scale, crop,
    /// flip and padding, and the crops are those of the unlabeled pair with the same seed.
    #[test]
    fn issue26_labeled_pair_crops_the_labels_with_the_image() {
        // label = x-coordinate band of the pixel, image encodes (x, y): they must agree per pixel
        let img = coord_image(120, 90);
        let label = GrayImage::from_fn(120, 90, |x, _| image::Luma([(x / 10) as u8]));
        let aug = padded_flipped_aug();
        let cfg = PairConfig::default();
        let (mut padded, mut flipped) = (false, false);
        for seed in 0..40u64 {
            let p = make_labeled_pair(&img, Some(&label), &aug, &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
            let q = make_pair(&img, &aug, &cfg, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(p.geometry, q.geometry, "seed {seed}");
            assert!(q.labels.is_none());
            let labels = p.labels.as_ref().expect("labels cropped");
            for (k, label_crop) in labels.iter().enumerate() {
                assert_eq!(p.crops[k], q.crops[k], "seed {seed}");
                flipped |= p.geometry.windows[k].flip;
                for (px, l) in p.crops[k].pixels().zip(label_crop.pixels()) {
                    if px[2] == 0 {
                        padded = true;
                        assert_eq!(l[0], crate::IGNORE, "seed {seed}: padding must be ignored");
                    } else {
                        // the image pixel's source column, and the label's band at that column
                        // (interpolated image, nearest-neighbour labels: one band of rounding)
                        let x = (px[0] - 1) as f64;
                        let band = (x / 10.0).floor();
                        assert!(
                            (l[0] as f64 - band).abs() <= 1.0,
                            "seed {seed}: label {} at source column {x}",
                            l[0]
                        );
                    }
                }
            }
        }
        assert!(padded && flipped, "padding and flips must be exercised");
    }

    #[test]
    fn sampled_iou_is_in_range() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (lo, hi) in [(0.1f32, 1.0f32), (0.3, 0.6), (0.5, 0.9)] {
            let cfg = PairConfig {
                iou: [lo, hi],
                ..Default::default()
            };
            let mut ious = Vec::new();
            for _ in 0..300 {
                let g = sample_pair((360, 480), (256, 256), &cfg, true, &mut rng);
                let iou = g.iou();
                assert!(
                    iou >= lo as f64 - 1e-9 && iou <= hi as f64 + 1e-9,
                    "{iou} not in [{lo}, {hi}]"
                );
                for win in &g.windows {
                    assert!((0..=104).contains(&win.top) && (0..=224).contains(&win.left), "{g:?}");
                }
                assert_eq!((g.windows[0].top - g.windows[1].top) % 8, 0);
                assert_eq!((g.windows[0].left - g.windows[1].left) % 8, 0);
                ious.push(iou);
            }
            // the range is actually explored, not a single value
            let (mn, mx) = ious
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
            assert!(
                mx - mn > 0.5 * (hi - lo) as f64,
                "[{lo}, {hi}]: sampled only {mn}..{mx}"
            );
        }
        // IoU [1, 1]: identical windows (no contextual augmentation)
        let cfg = PairConfig {
            iou: [1.0, 1.0],
            ..Default::default()
        };
        let g = sample_pair((360, 480), (256, 256), &cfg, false, &mut rng);
        assert_eq!(g.iou(), 1.0);
        assert_eq!(
            (g.windows[0].top, g.windows[0].left),
            (g.windows[1].top, g.windows[1].left)
        );
    }
}
