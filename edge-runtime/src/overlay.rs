//! Visual output of `edge-seg run`: class-colour overlays, a class legend and a
//! status line, in the spirit of jetson-inference's `segnet`.
//!
//! [`render`] turns an input frame plus a per-pixel class map into the image
//! that gets displayed or saved:
//!
//! - [`OverlayMode::Overlay`]: the frame blended with the class colours,
//! - [`OverlayMode::Mask`]: the class colours only,
//! - [`OverlayMode::SideBySide`]: `[frame | overlay]`, twice as wide.
//!
//! On top of that it draws a legend (colour swatch + class name) in the
//! top-right corner and a status line (model, backend, FPS, …) on a dark bar
//! in the top-left corner. Both are clipped to the frame and left out when the
//! frame is too small to hold them, so any frame size is safe.
//!
//! Blending is exact integer arithmetic (see [`seg_core::draw::mix`]): the
//! opacity is quantised to 1/255 steps and every channel is rounded to nearest.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use image::RgbImage;
use seg_core::draw::{alpha_weight, blend_rect, draw_text, fill_rect, line_height, mix, text_width};

/// How the segmentation is combined with the input frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OverlayMode {
    /// The frame blended with the class colours.
    #[default]
    Overlay,
    /// The class colours only.
    Mask,
    /// The input frame and the overlay next to each other (twice as wide).
    SideBySide,
}

impl OverlayMode {
    /// Every mode, in declaration order.
    pub const ALL: [OverlayMode; 3] = [Self::Overlay, Self::Mask, Self::SideBySide];

    /// The canonical name, as accepted by [`FromStr`]: `overlay`, `mask` or
    /// `side-by-side`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overlay => "overlay",
            Self::Mask => "mask",
            Self::SideBySide => "side-by-side",
        }
    }
}

impl fmt::Display for OverlayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error returned when parsing an unknown [`OverlayMode`] name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown overlay mode {0:?} (expected one of: overlay, mask, side-by-side)")]
pub struct ParseOverlayModeError(pub String);

impl FromStr for OverlayMode {
    type Err = ParseOverlayModeError;

    /// Parses a mode name, case-insensitively; `side-by-side` is also accepted
    /// as `sidebyside`, `side_by_side` or `sbs`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "overlay" => Ok(Self::Overlay),
            "mask" => Ok(Self::Mask),
            "side-by-side" | "side_by_side" | "sidebyside" | "sbs" => Ok(Self::SideBySide),
            _ => Err(ParseOverlayModeError(s.to_owned())),
        }
    }
}

/// Class names and colours: `names[i]` and `palette[i]` describe class id `i`.
///
/// If the two slices differ in length only the first
/// `min(names.len(), palette.len())` classes get a legend entry; colouring
/// uses the whole palette.
#[derive(Debug, Clone, Copy)]
pub struct Legend<'a> {
    /// Class names, indexed by class id.
    pub names: &'a [String],
    /// Class colours, indexed by class id.
    pub palette: &'a [[u8; 3]],
}

impl Legend<'_> {
    /// Number of classes that can appear in the legend.
    pub fn len(&self) -> usize {
        self.names.len().min(self.palette.len())
    }

    /// Whether no class can appear in the legend.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Up to this many classes, the legend lists every class (a stable legend
/// that doesn't change between frames); with more, only the classes present
/// in the frame are listed.
pub const LEGEND_ALL_MAX: usize = 12;

/// Everything [`render_with`] needs besides the data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderOptions {
    /// How segmentation and frame are combined.
    pub mode: OverlayMode,
    /// Opacity of the class colours in [`OverlayMode::Overlay`] and
    /// [`OverlayMode::SideBySide`], `0.0..=1.0` (clamped).
    pub alpha: f32,
    /// Draw the class legend.
    pub legend: bool,
    /// Draw the status line (an empty status string is never drawn).
    pub status: bool,
}

impl Default for RenderOptions {
    /// Overlay mode, alpha 0.5, legend and status on.
    fn default() -> Self {
        Self {
            mode: OverlayMode::Overlay,
            alpha: 0.5,
            legend: true,
            status: true,
        }
    }
}

/// Renders one output frame with legend and status line; see [`render_with`].
///
/// `frame` is the input RGB frame (W×H); `classes` holds W·H class ids in
/// row-major order at the frame's resolution. `alpha` is the weight of the
/// class colour (`0.0` = frame only, `1.0` = colours only).
pub fn render(
    frame: &RgbImage,
    classes: &[u8],
    legend: &Legend,
    mode: OverlayMode,
    alpha: f32,
    status: &str,
) -> RgbImage {
    let opts = RenderOptions {
        mode,
        alpha,
        ..RenderOptions::default()
    };
    render_with(frame, classes, legend, status, &opts)
}

/// Renders one output frame as configured by `opts`.
///
/// Class ids with no palette entry (e.g. the ignore id 255) leave the frame
/// untouched in the overlay and are black in the mask. If `classes` is shorter
/// than W·H the missing pixels are treated the same way; extra ids are ignored.
///
/// The output is W×H, or 2W×H for [`OverlayMode::SideBySide`] (with the
/// legend over the right half and the status line over the left half).
pub fn render_with(frame: &RgbImage, classes: &[u8], legend: &Legend, status: &str, opts: &RenderOptions) -> RgbImage {
    let (w, h) = frame.dimensions();
    let n = w as usize * h as usize;
    let classes = &classes[..classes.len().min(n)];
    let mut out = match opts.mode {
        OverlayMode::Overlay => overlay(frame, classes, legend.palette, opts.alpha),
        OverlayMode::Mask => colorize(classes, w, h, legend.palette),
        OverlayMode::SideBySide => side_by_side(frame, classes, legend.palette, opts.alpha),
    };
    let status_bar = if opts.status {
        draw_status(&mut out, status)
    } else {
        None
    };
    if opts.legend {
        let (w, h) = out.dimensions();
        let entries = legend_entries(classes, legend);
        let mut layout = legend_layout(w, h, &entries, legend, MARGIN);
        if let (Some((bar_w, bar_h)), Some(l)) = (status_bar, &layout) {
            if l.x < to_i32(bar_w) + MARGIN {
                // Overlapping the status bar: move the legend below it.
                layout = legend_layout(w, h, &entries, legend, to_i32(bar_h) + MARGIN);
            }
        }
        if let Some(layout) = layout {
            draw_legend(&mut out, legend, &layout);
        }
    }
    out
}

/// Colours a class map: pixel `i` gets `palette[classes[i]]`, or black if the
/// id has no palette entry or `classes` has no `i`-th element.
pub fn colorize(classes: &[u8], w: u32, h: u32, palette: &[[u8; 3]]) -> RgbImage {
    let mut out = RgbImage::new(w, h);
    let buf: &mut [u8] = &mut out;
    for (px, &c) in buf.chunks_exact_mut(3).zip(classes) {
        if let Some(color) = palette.get(usize::from(c)) {
            px.copy_from_slice(color);
        }
    }
    out
}

/// Blends `color` over `frame` with opacity `alpha` (clamped to `0.0..=1.0`).
///
/// Per channel: `round((frame·(255−a) + color·a) / 255)` with
/// `a = round(alpha·255)`, so alpha 0 returns `frame` and alpha 1 returns
/// `color` exactly. The result has `frame`'s size; where `color` is smaller,
/// the frame is kept as is.
pub fn blend(frame: &RgbImage, color: &RgbImage, alpha: f32) -> RgbImage {
    let weight = alpha_weight(alpha);
    let mut out = frame.clone();
    let cols = frame.width().min(color.width()) as usize * 3;
    let rows = frame.height().min(color.height()) as usize;
    if cols == 0 || rows == 0 {
        return out;
    }
    let out_stride = frame.width() as usize * 3;
    let color_stride = color.width() as usize * 3;
    let buf: &mut [u8] = &mut out;
    let color_buf: &[u8] = color;
    for (dst, src) in buf
        .chunks_exact_mut(out_stride)
        .zip(color_buf.chunks_exact(color_stride))
        .take(rows)
    {
        for (d, &s) in dst[..cols].iter_mut().zip(&src[..cols]) {
            *d = mix(*d, s, weight);
        }
    }
    out
}

/// Precomputed per-class blend terms: `color·a + 127` per channel, for the
/// integer blend of [`mix`].
struct BlendTable {
    terms: Vec<[u32; 3]>,
    inv: u32,
}

impl BlendTable {
    fn new(palette: &[[u8; 3]], alpha: f32) -> Self {
        let weight = u32::from(alpha_weight(alpha));
        let terms = palette
            .iter()
            .take(256)
            .map(|c| c.map(|v| u32::from(v) * weight + 127))
            .collect();
        Self {
            terms,
            inv: 255 - weight,
        }
    }

    /// Blends the class colours over `src` (both `[r, g, b]` pixel rows) into
    /// `dst`. Pixels without a class or whose class has no colour are copied.
    fn apply(&self, dst: &mut [u8], src: &[u8], classes: &[u8]) {
        dst.copy_from_slice(src);
        for (px, &c) in dst.chunks_exact_mut(3).zip(classes) {
            if let Some(term) = self.terms.get(usize::from(c)) {
                for (p, t) in px.iter_mut().zip(term) {
                    // Rounded convex combination of two u8 values: fits in u8.
                    *p = ((u32::from(*p) * self.inv + t) / 255) as u8;
                }
            }
        }
    }
}

/// The frame blended with the class colours.
fn overlay(frame: &RgbImage, classes: &[u8], palette: &[[u8; 3]], alpha: f32) -> RgbImage {
    let mut out = RgbImage::new(frame.width(), frame.height());
    BlendTable::new(palette, alpha).apply(&mut out, frame, classes);
    out
}

/// `[frame | overlay]`, twice as wide as `frame`.
fn side_by_side(frame: &RgbImage, classes: &[u8], palette: &[[u8; 3]], alpha: f32) -> RgbImage {
    let (w, h) = frame.dimensions();
    let mut out = RgbImage::new(w.saturating_mul(2), h);
    let row = w as usize * 3;
    if row == 0 {
        return out;
    }
    let table = BlendTable::new(palette, alpha);
    let buf: &mut [u8] = &mut out;
    let src: &[u8] = frame;
    let mut class_rows = classes.chunks(w as usize);
    for (dst, src) in buf.chunks_exact_mut(2 * row).zip(src.chunks_exact(row)) {
        let (left, right) = dst.split_at_mut(row);
        left.copy_from_slice(src);
        table.apply(right, src, class_rows.next().unwrap_or_default());
    }
    out
}

/// Distance of legend and status bar from the frame edges, in pixels.
const MARGIN: i32 = 4;
/// Inner padding of the legend box and the status bar.
const PAD: i32 = 4;
/// Side of a legend colour swatch (its 1-pixel outline excluded).
const SWATCH: i32 = 10;
/// Gap between a swatch and its class name.
const GAP: i32 = 5;
/// Vertical distance between legend rows.
const ROW_H: i32 = 13;
/// Opacity of the dark backgrounds behind text.
const SHADE: f32 = 0.65;
/// Text colour.
const TEXT: [u8; 3] = [255, 255, 255];
/// Swatch outline colour, so that dark classes stay visible on the dark box.
const OUTLINE: [u8; 3] = [200, 200, 200];

/// Converts a pixel count to `i32`, saturating (images never get that large).
fn to_i32(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// Shortens `text` with a trailing `..` so that it is at most `max_w` pixels
/// wide (single line; empty if not even `..` fits).
fn fit_text(text: &str, max_w: u32) -> Cow<'_, str> {
    if text_width(text) <= max_w {
        return Cow::Borrowed(text);
    }
    let glyph_w = text_width("x").max(1);
    let max_chars = (max_w / glyph_w) as usize;
    if max_chars < 3 {
        return Cow::Borrowed("");
    }
    let mut s: String = text.chars().take(max_chars - 2).collect();
    s.push_str("..");
    Cow::Owned(s)
}

/// Draws the status bar in the top-left corner; returns its size, or `None`
/// if nothing was drawn (empty status or a frame too small for one line).
fn draw_status(img: &mut RgbImage, status: &str) -> Option<(u32, u32)> {
    let (w, h) = img.dimensions();
    let first_line = status.lines().next().unwrap_or_default();
    let bar_h = line_height() + 2 * PAD as u32;
    if first_line.is_empty() || h < bar_h {
        return None;
    }
    let text = fit_text(first_line, w.saturating_sub(2 * PAD as u32));
    if text.is_empty() {
        return None;
    }
    let bar_w = (text_width(&text) + 2 * PAD as u32).min(w);
    blend_rect(img, 0, 0, bar_w, bar_h, [0, 0, 0], SHADE);
    draw_text(img, &text, PAD, PAD, TEXT, None);
    Some((bar_w, bar_h))
}

/// The class ids listed in the legend, in class order: every class if there
/// are at most [`LEGEND_ALL_MAX`], otherwise those present in `classes`.
fn legend_entries(classes: &[u8], legend: &Legend) -> Vec<usize> {
    let n = legend.len().min(256);
    if n <= LEGEND_ALL_MAX {
        return (0..n).collect();
    }
    let mut present = [false; 256];
    for &c in classes {
        present[usize::from(c)] = true;
    }
    (0..n).filter(|&i| present[i]).collect()
}

/// Position and contents of the legend box.
#[derive(Debug, Clone, PartialEq)]
struct LegendLayout {
    /// Top-left corner of the box.
    x: i32,
    y: i32,
    /// Size of the box.
    w: u32,
    h: u32,
    /// Class ids of the rows, top to bottom.
    rows: Vec<usize>,
    /// Number of listed classes left out for lack of room.
    hidden: usize,
    /// Maximum width of a class name.
    name_w: u32,
}

impl LegendLayout {
    /// Top-left corner of the swatch (inside its outline) of row `i`.
    fn swatch(&self, i: usize) -> (i32, i32) {
        (self.x + PAD, self.y + PAD + to_i32(i as u32) * ROW_H)
    }

    /// Top-left corner of the name of row `i`.
    fn name(&self, i: usize) -> (i32, i32) {
        let (sx, sy) = self.swatch(i);
        (sx + SWATCH + GAP, sy)
    }
}

/// Lays out the legend listing the classes `entries` (see [`legend_entries`])
/// for an image of size `w`×`h` with its top edge at `top`, or `None` if there
/// is nothing to list or not even one row fits.
fn legend_layout(w: u32, h: u32, entries: &[usize], legend: &Legend, top: i32) -> Option<LegendLayout> {
    if entries.is_empty() {
        return None;
    }
    // Rows that fit between `top` and the bottom margin.
    let avail_h = i64::from(h) - i64::from(top) - i64::from(MARGIN) - i64::from(2 * PAD);
    let fit = (avail_h + i64::from(ROW_H - SWATCH)) / i64::from(ROW_H);
    let fit = usize::try_from(fit).unwrap_or(0);
    if fit == 0 {
        return None;
    }
    let (rows, hidden) = if entries.len() > fit {
        // Keep the last row for the "+N more" note.
        let shown = fit - 1;
        (entries[..shown].to_vec(), entries.len() - shown)
    } else {
        (entries.to_vec(), 0)
    };

    let chrome = (2 * PAD + SWATCH + GAP) as u32;
    let max_name_w = w.saturating_sub(2 * MARGIN as u32 + chrome);
    let name_w = rows
        .iter()
        .map(|&i| text_width(&legend.names[i]))
        .max()
        .unwrap_or(0)
        .max(if hidden > 0 { text_width(&more_note(hidden)) } else { 0 })
        .min(max_name_w);
    let box_w = chrome + name_w;
    let n_rows = rows.len() + usize::from(hidden > 0);
    let box_h = 2 * PAD as u32 + n_rows as u32 * ROW_H as u32 - (ROW_H - SWATCH) as u32;
    let x = (to_i32(w) - MARGIN - to_i32(box_w)).max(0);
    Some(LegendLayout {
        x,
        y: top,
        w: box_w,
        h: box_h,
        rows,
        hidden,
        name_w,
    })
}

/// The last legend row when classes had to be left out.
fn more_note(hidden: usize) -> String {
    format!("+{hidden} more")
}

/// Draws the legend box as laid out by [`legend_layout`].
fn draw_legend(img: &mut RgbImage, legend: &Legend, layout: &LegendLayout) {
    blend_rect(img, layout.x, layout.y, layout.w, layout.h, [0, 0, 0], SHADE);
    let side = SWATCH as u32;
    for (i, &class) in layout.rows.iter().enumerate() {
        let (sx, sy) = layout.swatch(i);
        fill_rect(img, sx - 1, sy - 1, side + 2, side + 2, OUTLINE);
        fill_rect(img, sx, sy, side, side, legend.palette[class]);
        let (nx, ny) = layout.name(i);
        let name = fit_text(&legend.names[class], layout.name_w);
        draw_text(img, &name, nx, ny, TEXT, None);
    }
    if layout.hidden > 0 {
        let (nx, ny) = layout.name(layout.rows.len());
        let note = more_note(layout.hidden);
        draw_text(img, &fit_text(&note, layout.name_w), nx, ny, TEXT, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;
    use seg_core::draw::text_size;

    const PALETTE: [[u8; 3]; 2] = [[200, 0, 100], [0, 255, 50]];

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("class{i}")).collect()
    }

    /// A 4×3 frame with distinct pixels.
    fn tiny_frame() -> RgbImage {
        RgbImage::from_fn(4, 3, |x, y| Rgb([10 * x as u8, 100 + 20 * y as u8, 255]))
    }

    /// Classes of the tiny frame: column parity, with an unlabelled pixel.
    fn tiny_classes() -> Vec<u8> {
        let mut c: Vec<u8> = (0..12).map(|i| (i % 4 % 2) as u8).collect();
        c[5] = 255;
        c
    }

    fn plain(mode: OverlayMode, alpha: f32) -> RenderOptions {
        RenderOptions {
            mode,
            alpha,
            legend: false,
            status: false,
        }
    }

    fn render_plain(mode: OverlayMode, alpha: f32) -> RgbImage {
        let n = names(2);
        let legend = Legend {
            names: &n,
            palette: &PALETTE,
        };
        render_with(&tiny_frame(), &tiny_classes(), &legend, "ignored", &plain(mode, alpha))
    }

    #[test]
    fn overlay_blend_is_exact() {
        let frame = tiny_frame();
        assert_eq!(render_plain(OverlayMode::Overlay, 0.0), frame);

        let full = render_plain(OverlayMode::Overlay, 1.0);
        let half = render_plain(OverlayMode::Overlay, 0.5);
        // Pixel (0, 0): frame [0, 100, 255], class 0 [200, 0, 100].
        assert_eq!(full.get_pixel(0, 0).0, [200, 0, 100]);
        // (f·127 + c·128 + 127) / 255: [100, 50, 177].
        assert_eq!(half.get_pixel(0, 0).0, [100, 50, 177]);
        // Pixel (3, 2): frame [30, 140, 255], class 1 [0, 255, 50].
        assert_eq!(full.get_pixel(3, 2).0, [0, 255, 50]);
        assert_eq!(half.get_pixel(3, 2).0, [15, 198, 152]);
        // Pixel (1, 1) has no class: untouched at every alpha.
        for img in [&full, &half] {
            assert_eq!(img.get_pixel(1, 1), frame.get_pixel(1, 1));
        }
        // The public `blend` agrees with the overlay path.
        let colors = colorize(&tiny_classes(), 4, 3, &PALETTE);
        let blended = blend(&frame, &colors, 0.5);
        for (x, y, p) in half.enumerate_pixels() {
            if (x, y) != (1, 1) {
                assert_eq!(p, blended.get_pixel(x, y), "({x}, {y})");
            }
        }
    }

    #[test]
    fn blend_handles_alpha_extremes_and_sizes() {
        let a = RgbImage::from_pixel(3, 2, Rgb([0, 100, 255]));
        let b = RgbImage::from_pixel(2, 5, Rgb([255, 200, 0]));
        assert_eq!(blend(&a, &b, 0.0), a);
        assert_eq!(blend(&a, &b, -3.0), a);
        let out = blend(&a, &b, 1.0);
        assert_eq!(out.dimensions(), (3, 2));
        assert_eq!(out.get_pixel(1, 1).0, [255, 200, 0]);
        // Outside `b`: the frame.
        assert_eq!(out.get_pixel(2, 0).0, [0, 100, 255]);
        assert_eq!(blend(&a, &b, 0.5).get_pixel(0, 0).0, [128, 150, 127]);
        assert_eq!(blend(&a, &RgbImage::new(0, 0), 0.5), a);
    }

    #[test]
    fn mask_is_palette_colours() {
        let mask = render_plain(OverlayMode::Mask, 0.3);
        let classes = tiny_classes();
        for (i, p) in mask.pixels().enumerate() {
            let expected = PALETTE.get(usize::from(classes[i])).copied();
            assert_eq!(p.0, expected.unwrap_or([0, 0, 0]), "pixel {i}");
        }
        assert_eq!(colorize(&tiny_classes(), 4, 3, &PALETTE), mask);
        // Missing ids are black.
        let short = colorize(&[1], 2, 1, &PALETTE);
        assert_eq!(short.as_raw(), &[0, 255, 50, 0, 0, 0]);
    }

    #[test]
    fn side_by_side_is_frame_then_overlay() {
        let frame = tiny_frame();
        let sbs = render_plain(OverlayMode::SideBySide, 0.5);
        let ov = render_plain(OverlayMode::Overlay, 0.5);
        assert_eq!(sbs.dimensions(), (8, 3));
        for y in 0..3 {
            for x in 0..4 {
                assert_eq!(sbs.get_pixel(x, y), frame.get_pixel(x, y));
                assert_eq!(sbs.get_pixel(x + 4, y), ov.get_pixel(x, y));
            }
        }
    }

    #[test]
    fn legend_lists_present_classes_only_when_many() {
        const GREY: [u8; 3] = [90, 90, 90];
        let n = names(20);
        let palette: Vec<[u8; 3]> = (0..20u8).map(|i| [i * 12, 255 - i * 12, 77]).collect();
        let legend = Legend {
            names: &n,
            palette: &palette,
        };
        let (w, h) = (200, 120);
        let frame = RgbImage::from_pixel(w, h, Rgb(GREY));
        // Classes 3 and 17 present (plus unlabelled pixels).
        let classes: Vec<u8> = (0..w * h)
            .map(|i| match i % 3 {
                0 => 3,
                1 => 17,
                _ => 255,
            })
            .collect();
        let opts = RenderOptions {
            alpha: 0.0, // keep the frame plain grey outside the legend
            status: false,
            ..RenderOptions::default()
        };
        let out = render_with(&frame, &classes, &legend, "", &opts);

        let layout = legend_layout(w, h, &legend_entries(&classes, &legend), &legend, MARGIN).unwrap();
        assert_eq!(layout.rows, [3, 17]);
        assert_eq!(layout.hidden, 0);
        // Top-right corner, inside the frame.
        assert_eq!(layout.x + to_i32(layout.w), to_i32(w) - MARGIN);
        assert_eq!(layout.y, MARGIN);

        let shade = [mix(GREY[0], 0, alpha_weight(SHADE)); 3];
        for (row, &class) in layout.rows.iter().enumerate() {
            // Every swatch pixel has the class colour, the outline around it.
            let (sx, sy) = layout.swatch(row);
            for dy in 0..SWATCH {
                for dx in 0..SWATCH {
                    let p = out.get_pixel((sx + dx) as u32, (sy + dy) as u32);
                    assert_eq!(p.0, palette[class], "row {row}");
                }
            }
            assert_eq!(out.get_pixel((sx - 1) as u32, sy as u32).0, OUTLINE);
            // The name is exactly the text drawn on the shaded background.
            let (nx, ny) = layout.name(row);
            let (tw, th) = text_size(&n[class]);
            let mut expected = RgbImage::from_pixel(w, h, Rgb(shade));
            draw_text(&mut expected, &n[class], nx, ny, TEXT, None);
            for y in ny..ny + to_i32(th) {
                for x in nx..nx + to_i32(tw) {
                    let (x, y) = (x as u32, y as u32);
                    assert_eq!(out.get_pixel(x, y), expected.get_pixel(x, y), "({x}, {y})");
                }
            }
        }
        // No third row: below the box the frame is untouched, and the box
        // itself (outside swatches and names) is plain shade.
        assert_eq!(to_i32(layout.h), 2 * PAD + 2 * ROW_H - (ROW_H - SWATCH));
        for y in layout.y + to_i32(layout.h)..to_i32(h) {
            for x in 0..to_i32(w) {
                assert_eq!(out.get_pixel(x as u32, y as u32).0, GREY, "({x}, {y})");
            }
        }
        assert_eq!(out.get_pixel(layout.x as u32, layout.y as u32).0, shade);

        // With few classes every class is listed, present or not.
        let few = Legend {
            names: &n[..5],
            palette: &palette[..5],
        };
        assert_eq!(legend_entries(&[4, 4, 255], &few), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn legend_moves_below_status_and_truncates() {
        let n = names(12);
        let palette = [[255, 0, 0]; 12];
        let legend = Legend {
            names: &n,
            palette: &palette,
        };
        let all: Vec<usize> = (0..12).collect();
        // 12 rows don't fit in 64 pixels: some are folded into "+N more".
        let layout = legend_layout(80, 64, &all, &legend, MARGIN).unwrap();
        assert_eq!(layout.rows.len(), 2);
        assert_eq!(layout.hidden, 10);
        assert!(layout.y + to_i32(layout.h) <= 64);
        assert!(layout.x >= 0 && layout.x + to_i32(layout.w) <= 80);

        // A status line overlapping the legend pushes it down.
        let frame = RgbImage::from_pixel(80, 64, Rgb([0, 0, 0]));
        let opts = RenderOptions {
            alpha: 0.0,
            ..RenderOptions::default()
        };
        let out = render_with(&frame, &[0; 80 * 64], &legend, "long status text", &opts);
        let unmoved = legend_layout(80, 64, &all, &legend, MARGIN).unwrap().swatch(0);
        assert_ne!(out.get_pixel(unmoved.0 as u32, unmoved.1 as u32).0, [255, 0, 0]);
        let bar_h = line_height() as i32 + 2 * PAD;
        let layout = legend_layout(80, 64, &all, &legend, bar_h + MARGIN).unwrap();
        let (sx, sy) = layout.swatch(0);
        assert_eq!(out.get_pixel(sx as u32, sy as u32).0, [255, 0, 0]);
        assert!(sy > bar_h);
    }

    #[test]
    fn tiny_and_odd_inputs_do_not_panic() {
        let n = names(30);
        let palette = [[1, 2, 3]; 30];
        let legend = Legend {
            names: &n,
            palette: &palette,
        };
        let status = "model: camvid-small | backend: tract | 12.3 FPS";
        for (w, h) in [(0, 0), (1, 1), (8, 8), (8, 30), (30, 8), (40, 40)] {
            let frame = RgbImage::new(w, h);
            let len = (w * h) as usize;
            for classes in [vec![], vec![7; len], vec![29; len + 5], vec![255; len / 2]] {
                for mode in OverlayMode::ALL {
                    let out = render(&frame, &classes, &legend, mode, 0.7, status);
                    let expected_w = if mode == OverlayMode::SideBySide { 2 * w } else { w };
                    assert_eq!(out.dimensions(), (expected_w, h));
                }
            }
        }
        // On an 8×8 frame nothing fits: the overlay is left as is.
        let frame = RgbImage::from_pixel(8, 8, Rgb([5, 5, 5]));
        let out = render(&frame, &[], &legend, OverlayMode::Overlay, 0.5, status);
        assert_eq!(out, frame);
    }

    #[test]
    fn fit_text_shortens() {
        assert_eq!(fit_text("abc", 18), "abc");
        assert_eq!(fit_text("abcdef", 30), "abc..");
        assert_eq!(fit_text("abcdef", 12), "");
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in OverlayMode::ALL {
            assert_eq!(mode.to_string().parse::<OverlayMode>(), Ok(mode));
        }
        assert_eq!("SBS".parse(), Ok(OverlayMode::SideBySide));
        assert_eq!(" Mask ".parse(), Ok(OverlayMode::Mask));
        let err = "blend".parse::<OverlayMode>().unwrap_err();
        assert!(err.to_string().contains("blend"));
    }
}
