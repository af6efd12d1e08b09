//! Drawing on RGB frames: an [`embedded_graphics`] [`DrawTarget`] over an
//! [`image::RgbImage`], plus small helpers for text, filled and translucent
//! rectangles.
//!
//! Everything here clips silently: pixels outside the image are dropped, so
//! callers can draw at any position (negative included) on frames of any size
//! without checking bounds first.
//!
//! Text uses the [`FONT`] mono font (6×10 pixels per glyph, ASCII; characters
//! outside the font are drawn as `?`). Text positions are the top-left corner
//! of the text's bounding box.
//!
//! ```
//! use image::RgbImage;
//! use seg_core::draw::{draw_text, fill_rect, text_width};
//!
//! let mut img = RgbImage::new(64, 16);
//! fill_rect(&mut img, 0, 0, text_width("hi") + 4, 14, [32, 32, 32]);
//! draw_text(&mut img, "hi", 2, 2, [255, 255, 255], None);
//! ```

use std::convert::Infallible;

use embedded_graphics::{
    mono_font::{ascii::FONT_6X10, MonoFont, MonoTextStyle, MonoTextStyleBuilder},
    pixelcolor::Rgb888,
    prelude::{Dimensions, DrawTarget, Drawable, OriginDimensions, Pixel, Point, RgbColor, Size},
    primitives::Rectangle,
    text::{Baseline, Text},
};
use image::RgbImage;

/// The mono font used by every text helper in this module (6×10 pixels per glyph).
pub const FONT: &MonoFont<'static> = &FONT_6X10;

/// An [`embedded_graphics`] draw target over a borrowed [`RgbImage`].
///
/// Pixels outside the image are silently discarded.
///
/// ```
/// use embedded_graphics::{
///     pixelcolor::Rgb888,
///     prelude::*,
///     primitives::{Circle, PrimitiveStyle},
/// };
/// use image::RgbImage;
/// use seg_core::draw::FrameBuffer;
///
/// let mut img = RgbImage::new(16, 16);
/// let mut fb = FrameBuffer::new(&mut img);
/// Circle::new(Point::new(-4, -4), 12)
///     .into_styled(PrimitiveStyle::with_fill(Rgb888::RED))
///     .draw(&mut fb)
///     .unwrap(); // drawing on a `FrameBuffer` is infallible
/// assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
/// ```
#[derive(Debug)]
pub struct FrameBuffer<'a> {
    img: &'a mut RgbImage,
}

impl<'a> FrameBuffer<'a> {
    /// Wraps `img` so that embedded-graphics primitives can be drawn on it.
    pub fn new(img: &'a mut RgbImage) -> Self {
        Self { img }
    }

    /// The wrapped image.
    pub fn image(&self) -> &RgbImage {
        self.img
    }

    /// The wrapped image, mutably.
    pub fn image_mut(&mut self) -> &mut RgbImage {
        self.img
    }
}

impl OriginDimensions for FrameBuffer<'_> {
    fn size(&self) -> Size {
        Size::new(self.img.width(), self.img.height())
    }
}

impl DrawTarget for FrameBuffer<'_> {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        let (w, h) = self.img.dimensions();
        for Pixel(p, c) in pixels {
            if let (Ok(x), Ok(y)) = (u32::try_from(p.x), u32::try_from(p.y)) {
                if x < w && y < h {
                    self.img.put_pixel(x, y, image::Rgb(from_rgb888(c)));
                }
            }
        }
        Ok(())
    }

    fn fill_solid(&mut self, area: &Rectangle, color: Self::Color) -> Result<(), Self::Error> {
        fill_rect(
            self.img,
            area.top_left.x,
            area.top_left.y,
            area.size.width,
            area.size.height,
            from_rgb888(color),
        );
        Ok(())
    }
}

/// Converts an `[r, g, b]` triple to an embedded-graphics colour.
pub fn to_rgb888(c: [u8; 3]) -> Rgb888 {
    Rgb888::new(c[0], c[1], c[2])
}

/// Converts an embedded-graphics colour to an `[r, g, b]` triple.
pub fn from_rgb888(c: Rgb888) -> [u8; 3] {
    [c.r(), c.g(), c.b()]
}

/// The text style used by [`draw_text`].
fn text_style(fg: [u8; 3], bg: Option<[u8; 3]>) -> MonoTextStyle<'static, Rgb888> {
    let builder = MonoTextStyleBuilder::new().font(FONT).text_color(to_rgb888(fg));
    match bg {
        Some(bg) => builder.background_color(to_rgb888(bg)).build(),
        None => builder.build(),
    }
}

/// Draws `text` with its bounding box's top-left corner at (`x`, `y`).
///
/// Glyph pixels get `fg`; with `bg`, the rest of each glyph cell is filled with
/// `bg` (otherwise it is left untouched). `\n` starts a new line. Anything
/// outside the image is clipped.
pub fn draw_text(img: &mut RgbImage, text: &str, x: i32, y: i32, fg: [u8; 3], bg: Option<[u8; 3]>) {
    let style = text_style(fg, bg);
    let mut fb = FrameBuffer::new(img);
    // Drawing on a `FrameBuffer` cannot fail (`Error = Infallible`).
    let Ok(_) = Text::with_baseline(text, Point::new(x, y), style, Baseline::Top).draw(&mut fb);
}

/// Width and height in pixels of `text` as drawn by [`draw_text`]
/// (longest line × number of lines); `(0, 0)` for empty text.
pub fn text_size(text: &str) -> (u32, u32) {
    if text.is_empty() {
        return (0, 0);
    }
    let style = text_style([255; 3], None);
    let size = Text::with_baseline(text, Point::zero(), style, Baseline::Top)
        .bounding_box()
        .size;
    (size.width, size.height)
}

/// Width in pixels of the longest line of `text` as drawn by [`draw_text`].
pub fn text_width(text: &str) -> u32 {
    text_size(text).0
}

/// Height in pixels of one line of text drawn by [`draw_text`].
pub fn line_height() -> u32 {
    FONT.character_size.height
}

/// The part of the `w`×`h` rectangle at (`x`, `y`) that lies inside `img`, as
/// `(x0, y0, x1, y1)` with exclusive ends, or `None` if nothing is visible.
fn clip(img: &RgbImage, x: i32, y: i32, w: u32, h: u32) -> Option<(usize, usize, usize, usize)> {
    let (iw, ih) = (i64::from(img.width()), i64::from(img.height()));
    let x0 = i64::from(x).clamp(0, iw);
    let y0 = i64::from(y).clamp(0, ih);
    let x1 = (i64::from(x) + i64::from(w)).clamp(0, iw);
    let y1 = (i64::from(y) + i64::from(h)).clamp(0, ih);
    // The clamped values lie in 0..=u32::MAX, so they fit in usize on every
    // platform the image crate supports.
    (x0 < x1 && y0 < y1).then_some((x0 as usize, y0 as usize, x1 as usize, y1 as usize))
}

/// Applies `f` to every visible pixel (as an `[r, g, b]` slice) of the
/// `w`×`h` rectangle at (`x`, `y`).
fn for_each_in_rect(img: &mut RgbImage, x: i32, y: i32, w: u32, h: u32, mut f: impl FnMut(&mut [u8])) {
    let Some((x0, y0, x1, y1)) = clip(img, x, y, w, h) else {
        return;
    };
    let stride = img.width() as usize * 3;
    let buf: &mut [u8] = img;
    for row in buf.chunks_exact_mut(stride).take(y1).skip(y0) {
        row[x0 * 3..x1 * 3].chunks_exact_mut(3).for_each(&mut f);
    }
}

/// Fills the `w`×`h` rectangle with top-left corner (`x`, `y`) with `color`,
/// clipped to the image.
pub fn fill_rect(img: &mut RgbImage, x: i32, y: i32, w: u32, h: u32, color: [u8; 3]) {
    for_each_in_rect(img, x, y, w, h, |px| px.copy_from_slice(&color));
}

/// Blends `color` over the `w`×`h` rectangle at (`x`, `y`) with opacity
/// `alpha` (see [`alpha_weight`] and [`mix`]), clipped to the image. Useful
/// for translucent label backgrounds.
pub fn blend_rect(img: &mut RgbImage, x: i32, y: i32, w: u32, h: u32, color: [u8; 3], alpha: f32) {
    let weight = alpha_weight(alpha);
    for_each_in_rect(img, x, y, w, h, |px| {
        for (p, &c) in px.iter_mut().zip(&color) {
            *p = mix(*p, c, weight);
        }
    });
}

/// Quantises an opacity in `0.0..=1.0` to an integer weight in `0..=255`
/// (rounded to nearest). Values outside the range are clamped; NaN counts as 0.
pub fn alpha_weight(alpha: f32) -> u16 {
    // After the clamp the value lies in 0.0..=255.0 (NaN casts to 0).
    (alpha.clamp(0.0, 1.0) * 255.0).round() as u16
}

/// Blends two channel values: `round((base·(255−weight) + top·weight) / 255)`
/// with `weight` in `0..=255` (larger weights are treated as 255).
///
/// Weight 0 returns `base` and 255 returns `top` exactly.
#[inline]
pub fn mix(base: u8, top: u8, weight: u16) -> u8 {
    let w = u32::from(weight.min(255));
    let v = (u32::from(base) * (255 - w) + u32::from(top) * w + 127) / 255;
    // v <= 255 since it is a rounded convex combination of two u8 values.
    v as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_graphics::mock_display::MockDisplay;

    const SENTINEL: [u8; 3] = [1, 2, 3];

    /// Draws `text` both on a `MockDisplay` and through `draw_text`, and
    /// checks they agree on every pixel of the 64×64 mock area.
    fn assert_matches_mock(text: &str, x: i32, y: i32, fg: [u8; 3], bg: Option<[u8; 3]>) {
        let mut mock = MockDisplay::<Rgb888>::new();
        mock.set_allow_out_of_bounds_drawing(true);
        Text::with_baseline(text, Point::new(x, y), text_style(fg, bg), Baseline::Top)
            .draw(&mut mock)
            .unwrap();

        let mut img = RgbImage::from_pixel(64, 64, image::Rgb(SENTINEL));
        draw_text(&mut img, text, x, y, fg, bg);

        let mut drawn = 0;
        for py in 0..64 {
            for px in 0..64 {
                let expected = mock.get_pixel(Point::new(px, py)).map_or(SENTINEL, from_rgb888);
                let got = img.get_pixel(px as u32, py as u32).0;
                assert_eq!(got, expected, "pixel ({px}, {py}) of {text:?}");
                drawn += usize::from(expected != SENTINEL);
            }
        }
        assert!(drawn > 0, "nothing drawn for {text:?}");
    }

    #[test]
    fn draw_text_matches_mock_display() {
        assert_matches_mock("Hello, 42!", 1, 2, [255, 200, 0], None);
        assert_matches_mock("road\nsky", 3, 5, [10, 20, 30], Some([200, 100, 50]));
        // Partly outside: the frame buffer clips like the mock display.
        assert_matches_mock("clipped text here", -4, -3, [255, 255, 255], Some([0, 0, 0]));
        assert_matches_mock("0123456789", 40, 58, [0, 255, 0], None);
    }

    #[test]
    fn text_metrics() {
        assert_eq!(text_size(""), (0, 0));
        assert_eq!(text_width("abc"), 18);
        assert_eq!(text_size("ab\nlonger"), (36, 20));
        assert_eq!(line_height(), 10);
    }

    #[test]
    fn fill_rect_clips() {
        let mut img = RgbImage::new(4, 3);
        fill_rect(&mut img, -1, 1, 3, 10, [9, 8, 7]);
        for (x, y, p) in img.enumerate_pixels() {
            let inside = x < 2 && y >= 1;
            assert_eq!(p.0, if inside { [9, 8, 7] } else { [0; 3] }, "({x}, {y})");
        }
        // Entirely outside, zero-sized and huge rectangles are fine.
        fill_rect(&mut img, 10, 10, 5, 5, [1; 3]);
        fill_rect(&mut img, 0, 0, 0, 5, [1; 3]);
        fill_rect(&mut img, i32::MIN, i32::MIN, u32::MAX, u32::MAX, [5; 3]);
        assert!(img.pixels().all(|p| p.0 == [5; 3]));
    }

    #[test]
    fn blend_rect_and_mix() {
        assert_eq!(alpha_weight(0.0), 0);
        assert_eq!(alpha_weight(0.5), 128);
        assert_eq!(alpha_weight(1.0), 255);
        assert_eq!(alpha_weight(7.0), 255);
        assert_eq!(alpha_weight(f32::NAN), 0);
        assert_eq!(mix(10, 250, 0), 10);
        assert_eq!(mix(10, 250, 255), 250);
        // (0·127 + 255·128 + 127) / 255 = 128
        assert_eq!(mix(0, 255, 128), 128);
        // (100·127 + 200·128 + 127) / 255 = 150
        assert_eq!(mix(100, 200, 128), 150);

        let mut img = RgbImage::from_pixel(3, 2, image::Rgb([100, 0, 255]));
        blend_rect(&mut img, 1, -5, 100, 6, [200, 255, 0], 0.5);
        assert_eq!(img.get_pixel(0, 0).0, [100, 0, 255]);
        assert_eq!(img.get_pixel(1, 0).0, [150, 128, 127]);
        assert_eq!(img.get_pixel(2, 0).0, [150, 128, 127]);
        assert_eq!(img.get_pixel(2, 1).0, [100, 0, 255]);
    }

    #[test]
    fn tiny_frames_do_not_panic() {
        for (w, h) in [(0, 0), (1, 1), (8, 8)] {
            let mut img = RgbImage::new(w, h);
            draw_text(&mut img, "a long status line", -3, 2, [255; 3], Some([0; 3]));
            draw_text(&mut img, "", 0, 0, [255; 3], None);
            blend_rect(&mut img, -2, -2, 20, 20, [255; 3], 0.3);
        }
    }
}
