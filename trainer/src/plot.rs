//! Training curves as a PNG: training loss and validation mIoU vs iteration.
//!
//! Lines, grid and frames are drawn with [`plotters`] on an RGB buffer; plotters
//! is built without font support here, so every piece of text (title, panel
//! names, tick labels) is drawn afterwards with [`seg_core::draw::draw_text`]
//! at positions computed from the axis ranges.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use seg_core::draw::{draw_text, line_height, text_width};

/// Width of the image written by [`plot_curves`], in pixels.
pub const PLOT_WIDTH: u32 = 800;
/// Height of the image written by [`plot_curves`], in pixels.
pub const PLOT_HEIGHT: u32 = 400;

/// Colour of the training-loss line.
pub const LOSS_COLOR: [u8; 3] = [31, 119, 180];
/// Colour of the validation-mIoU line.
pub const MIOU_COLOR: [u8; 3] = [214, 39, 40];

const BACKGROUND: [u8; 3] = [255, 255, 255];
const GRID: [u8; 3] = [228, 228, 228];
const FRAME: [u8; 3] = [150, 150, 150];
const TEXT: [u8; 3] = [30, 30, 30];
const TICK_TEXT: [u8; 3] = [90, 90, 90];

/// Space above a panel's plotting area (title and panel name).
const MARGIN_TOP: u32 = 46;
/// Space below a panel's plotting area (x tick labels and axis name).
const MARGIN_BOTTOM: u32 = 38;
/// Space right of a panel's plotting area.
const MARGIN_RIGHT: u32 = 22;
/// Gap between the y tick labels and the plotting area.
const TICK_GAP: i32 = 6;
/// Aimed-for number of tick intervals per axis.
const TICK_TARGET: f64 = 5.0;

/// Writes a PNG of the training curves to `path`, atomically.
///
/// - `loss`: `(iteration, training loss)` pairs, drawn in the left panel;
/// - `miou`: `(iteration, validation mIoU)` pairs with mIoU as a fraction in
///   `0..=1`, drawn as a percentage in the right panel.
///
/// Both panels share the iteration axis. Non-finite values are skipped; empty
/// or single-point series are fine. The parent directory is created if
/// missing. The image is [`PLOT_WIDTH`]×[`PLOT_HEIGHT`].
///
/// # Errors
///
/// Fails if drawing, PNG encoding or writing the file fails.
pub fn plot_curves(path: &Path, loss: &[(u64, f32)], miou: &[(u64, f32)], title: &str) -> Result<()> {
    let img = render_curves(loss, miou, title)?;
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding the curves plot as PNG")?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating directory {}", parent.display()))?;
    }
    seg_core::io::write_atomic(path, &png).with_context(|| format!("writing plot {}", path.display()))
}

/// Renders the image that [`plot_curves`] writes.
///
/// # Errors
///
/// Fails only if plotters reports a drawing error.
pub fn render_curves(loss: &[(u64, f32)], miou: &[(u64, f32)], title: &str) -> Result<RgbImage> {
    let loss = finite_points(loss, 1.0);
    let miou = finite_points(miou, 100.0);

    let (x_min, x_max) = bounds(loss.iter().chain(&miou).map(|p| p.0)).unwrap_or((0.0, 1.0));
    let x_axis = Axis::new(x_min, x_max, 1.0, true);

    let loss_name = match loss.last() {
        Some(&(_, v)) => format!("training loss (last {})", format_sig(v)),
        None => "training loss".to_owned(),
    };
    let best = miou
        .iter()
        .copied()
        .reduce(|best, p| if p.1 > best.1 { p } else { best });
    let miou_name = match best {
        Some((x, v)) => format!("val mIoU % (best {v:.1} @ {})", x_axis.label(x)),
        None => "val mIoU %".to_owned(),
    };
    let panels = [
        Panel {
            name: loss_name,
            y_axis: y_axis(&loss, (0.0, 1.0), f64::INFINITY),
            points: loss,
            color: LOSS_COLOR,
            markers: false,
        },
        Panel {
            name: miou_name,
            y_axis: y_axis(&miou, (0.0, 100.0), 100.0),
            points: miou,
            color: MIOU_COLOR,
            markers: true,
        },
    ];

    let mut buf = vec![0u8; PLOT_WIDTH as usize * PLOT_HEIGHT as usize * 3];
    let mut labels = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (PLOT_WIDTH, PLOT_HEIGHT)).into_drawing_area();
        root.fill(&rgb(BACKGROUND)).map_err(plot_err)?;
        let (left, right) = root.split_horizontally(PLOT_WIDTH / 2);
        for (panel, area) in panels.iter().zip([&left, &right]) {
            labels.extend(draw_panel(area, panel, &x_axis)?);
        }
        root.present().map_err(plot_err)?;
    }
    let mut img =
        RgbImage::from_raw(PLOT_WIDTH, PLOT_HEIGHT, buf).ok_or_else(|| anyhow!("plot buffer has the wrong size"))?;

    // Title, drawn twice one pixel apart for a bold look.
    let tx = centered(title, PLOT_WIDTH as i32 / 2);
    draw_text(&mut img, title, tx, 8, TEXT, None);
    draw_text(&mut img, title, tx + 1, 8, TEXT, None);
    for label in &labels {
        draw_text(&mut img, &label.text, label.x, label.y, label.color, None);
    }
    Ok(img)
}

/// One panel: a series and how to draw it.
struct Panel {
    name: String,
    points: Vec<(f64, f64)>,
    y_axis: Axis,
    color: [u8; 3],
    /// Draw a dot at every point (not only for single-point series).
    markers: bool,
}

/// A piece of text to draw once plotters is done, top-left corner at (x, y).
struct Label {
    text: String,
    x: i32,
    y: i32,
    color: [u8; 3],
}

/// Draws a panel's grid, frame and series; returns its labels.
fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, panel: &Panel, x_axis: &Axis) -> Result<Vec<Label>> {
    let y_labels: Vec<String> = panel.y_axis.ticks().map(|t| panel.y_axis.label(t)).collect();
    let label_w = y_labels.iter().map(|l| text_width(l)).max().unwrap_or(0);
    // Room for the tick labels, but never more than a third of the panel.
    let margin_left = (label_w + TICK_GAP as u32 + 14).min(PLOT_WIDTH / 6);

    let (xs, ys) = (x_axis.range(), panel.y_axis.range());
    let mut chart = ChartBuilder::on(area)
        .margin_left(margin_left)
        .margin_right(MARGIN_RIGHT)
        .margin_top(MARGIN_TOP)
        .margin_bottom(MARGIN_BOTTOM)
        .build_cartesian_2d(xs.clone(), ys.clone())
        .map_err(plot_err)?;

    let grid = rgb(GRID).stroke_width(1);
    let vertical = x_axis
        .ticks()
        .map(|x| PathElement::new(vec![(x, ys.start), (x, ys.end)], grid));
    let horizontal = panel
        .y_axis
        .ticks()
        .map(|y| PathElement::new(vec![(xs.start, y), (xs.end, y)], grid));
    chart.draw_series(vertical).map_err(plot_err)?;
    chart.draw_series(horizontal).map_err(plot_err)?;
    let corners = vec![
        (xs.start, ys.start),
        (xs.start, ys.end),
        (xs.end, ys.end),
        (xs.end, ys.start),
        (xs.start, ys.start),
    ];
    chart
        .draw_series(std::iter::once(PathElement::new(corners, rgb(FRAME))))
        .map_err(plot_err)?;

    let color = rgb(panel.color);
    chart
        .draw_series(LineSeries::new(panel.points.iter().copied(), color.stroke_width(2)))
        .map_err(plot_err)?;
    if panel.markers || panel.points.len() == 1 {
        let dots = panel.points.iter().map(|&p| Circle::new(p, 3, color.filled()));
        chart.draw_series(dots).map_err(plot_err)?;
    }

    // Labels, placed from the backend coordinates of the axis ranges.
    let (left, top) = chart.backend_coord(&(xs.start, ys.end));
    let (right, bottom) = chart.backend_coord(&(xs.end, ys.start));
    let half_line = line_height() as i32 / 2;
    let mut labels = Vec::new();
    for (t, text) in panel.y_axis.ticks().zip(y_labels) {
        let (_, y) = chart.backend_coord(&(xs.start, t));
        let x = left - TICK_GAP - text_width(&text) as i32;
        labels.push(Label {
            text,
            x,
            y: y - half_line,
            color: TICK_TEXT,
        });
    }
    for t in x_axis.ticks() {
        let (x, _) = chart.backend_coord(&(t, ys.start));
        let text = x_axis.label(t);
        labels.push(Label {
            x: centered(&text, x),
            text,
            y: bottom + 6,
            color: TICK_TEXT,
        });
    }
    let mid_x = (left + right) / 2;
    labels.push(Label {
        x: centered("iteration", mid_x),
        text: "iteration".to_owned(),
        y: bottom + 20,
        color: TEXT,
    });
    labels.push(Label {
        x: centered(&panel.name, mid_x),
        text: panel.name.clone(),
        y: top - 16,
        color: TEXT,
    });
    if panel.points.is_empty() {
        labels.push(Label {
            x: centered("no data", mid_x),
            text: "no data".to_owned(),
            y: (top + bottom) / 2 - half_line,
            color: TICK_TEXT,
        });
    }
    Ok(labels)
}

/// A numeric axis with "nice" tick positions (1, 2 or 5 × 10^k apart) at both
/// ends of its range.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    step: f64,
    /// Number of tick intervals (at least 1).
    intervals: u32,
    /// Whether labels are iteration counts (integers, `k` for thousands).
    iterations: bool,
}

impl Axis {
    /// An axis covering `lo..=hi` with ticks at least `min_step` apart.
    fn new(lo: f64, hi: f64, min_step: f64, iterations: bool) -> Self {
        let (mut lo, mut hi) = (lo, hi);
        if hi <= lo {
            // A single value: widen around it, without going below zero for
            // non-negative data.
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 }.max(min_step);
            if lo >= 0.0 && lo - pad < 0.0 {
                lo = 0.0;
                hi += pad;
            } else {
                lo -= pad;
                hi += pad;
            }
        }
        let step = nice_step((hi - lo) / TICK_TARGET).max(min_step);
        let start = (lo / step).floor() * step;
        let end = (hi / step).ceil() * step;
        let intervals = ((end - start) / step).round().clamp(1.0, 20.0) as u32;
        Self {
            lo: start,
            step,
            intervals,
            iterations,
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.lo + self.step * f64::from(self.intervals)
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        (0..=self.intervals).map(|i| self.lo + self.step * f64::from(i))
    }

    /// The label of tick value `v`.
    fn label(&self, v: f64) -> String {
        // `+ 0.0` turns -0.0 into 0.0.
        let v = v + 0.0;
        if self.iterations {
            if v != 0.0 && self.step >= 1000.0 && self.step % 1000.0 == 0.0 {
                format!("{}k", (v / 1000.0).round())
            } else {
                format!("{v:.0}")
            }
        } else {
            let decimals = (-self.step.log10().floor()).clamp(0.0, 6.0) as usize;
            format!("{v:.decimals$}")
        }
    }
}

/// The y axis for `points`: from zero (or the minimum, if negative) to a bit
/// above the maximum, but not past `ceiling` unless the data does; `empty`
/// without points.
fn y_axis(points: &[(f64, f64)], empty: (f64, f64), ceiling: f64) -> Axis {
    let Some((lo, hi)) = bounds(points.iter().map(|p| p.1)) else {
        return Axis::new(empty.0, empty.1, 0.0, false);
    };
    let lo = lo.min(0.0);
    // Headroom, so that the maximum doesn't sit on the frame.
    let top = (hi + 0.03 * (hi - lo)).min(ceiling.max(hi));
    Axis::new(lo, top, 0.0, false)
}

/// The value of the form 1, 2 or 5 × 10^k closest to `raw` (in ratio).
fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .min_by(|a, b| (a / raw).ln().abs().total_cmp(&(b / raw).ln().abs()))
        .unwrap_or(magnitude);
    if step.is_finite() && step > 0.0 {
        step
    } else {
        1.0
    }
}

/// Minimum and maximum of `values`, or `None` if empty.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The points with a finite value, as `(iteration, value · scale)`.
fn finite_points(points: &[(u64, f32)], scale: f64) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|p| p.1.is_finite())
        .map(|&(x, y)| (x as f64, f64::from(y) * scale))
        .collect()
}

/// `v` with about three significant digits.
fn format_sig(v: f64) -> String {
    let magnitude = if v == 0.0 { 0.0 } else { v.abs().log10().floor() };
    let decimals = (2.0 - magnitude).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// The x position at which `text` is centred on `center_x`.
fn centered(text: &str, center_x: i32) -> i32 {
    center_x - text_width(text) as i32 / 2
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn plot_err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing the curves plot: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_loss() -> Vec<(u64, f32)> {
        (0..=200u64)
            .map(|i| {
                let it = i * 50;
                let x = it as f32;
                let noise = ((i * 7919 % 13) as f32 - 6.0) * 0.02;
                (it, 2.4 * (-x / 2500.0).exp() + 0.25 + noise)
            })
            .collect()
    }

    fn sample_miou() -> Vec<(u64, f32)> {
        (1..=10u64)
            .map(|i| (i * 1000, 0.62 * (1.0 - (-(i as f32) / 3.0).exp())))
            .collect()
    }

    fn has_color(img: &RgbImage, c: [u8; 3]) -> bool {
        img.pixels().any(|p| p.0 == c)
    }

    #[test]
    fn writes_a_decodable_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("curves.png");
        plot_curves(&path, &sample_loss(), &sample_miou(), "camvid-small").unwrap();

        let img = image::open(&path).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (PLOT_WIDTH, PLOT_HEIGHT));
        assert!(has_color(&img, LOSS_COLOR));
        assert!(has_color(&img, MIOU_COLOR));
        assert!(has_color(&img, TEXT), "no text drawn");
        // Only the PNG is left behind, no temporary file.
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["curves.png"]);

        // Overwriting works too.
        plot_curves(&path, &sample_loss()[..3], &[], "again").unwrap();
        assert_eq!(image::image_dimensions(&path).unwrap(), (800, 400));
    }

    #[test]
    fn degenerate_series_do_not_panic() {
        type Series<'a> = &'a [(u64, f32)];
        let cases: [(Series, Series); 5] = [
            (&[], &[]),
            (&[(0, 1.5)], &[]),
            (&[], &[(100, 0.5)]),
            (&[(7, 0.0), (7, 0.0)], &[(7, 0.0)]),
            (&[(1, f32::NAN), (2, f32::INFINITY), (3, -1e30)], &[(u64::MAX, 1e30)]),
        ];
        for (loss, miou) in cases {
            let img = render_curves(loss, miou, "").unwrap();
            assert_eq!(img.dimensions(), (PLOT_WIDTH, PLOT_HEIGHT));
        }
        // A single loss point is still visible (as a dot).
        let img = render_curves(&[(10, 0.7)], &[], "one point").unwrap();
        assert!(has_color(&img, LOSS_COLOR));
    }

    #[test]
    fn axes_have_nice_ticks() {
        let x = Axis::new(0.0, 10_000.0, 1.0, true);
        assert_eq!(x.range(), 0.0..10_000.0);
        let labels: Vec<String> = x.ticks().map(|t| x.label(t)).collect();
        assert_eq!(labels, ["0", "2k", "4k", "6k", "8k", "10k"]);

        let y = Axis::new(0.0, 2.63, 0.0, false);
        assert_eq!(y.range(), 0.0..3.0);
        assert_eq!(y.intervals, 6);
        assert_eq!(y.label(1.5), "1.5");

        // Single values get a non-empty range containing them.
        let one = Axis::new(100.0, 100.0, 1.0, true);
        assert!(one.range().start <= 100.0 && one.range().end > 100.0);
        let zero = Axis::new(0.0, 0.0, 0.0, false);
        assert_eq!(zero.range(), 0.0..1.0);

        // Headroom above the maximum, but percentages stop at 100.
        assert_eq!(y_axis(&[(0.0, 0.7)], (0.0, 1.0), f64::INFINITY).range(), 0.0..0.8);
        assert_eq!(y_axis(&[(0.0, 99.0)], (0.0, 100.0), 100.0).range(), 0.0..100.0);
        assert_eq!(y_axis(&[], (0.0, 100.0), 100.0).range(), 0.0..100.0);

        assert_eq!(format_sig(0.21345), "0.213");
        assert_eq!(format_sig(12.345), "12.3");
        assert_eq!(format_sig(1234.4), "1234");
    }
}
