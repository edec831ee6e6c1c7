//! Small PNG plots for reports (bars, lines, heatmaps).
//!
//! The font (DejaVu Sans, fonts/DejaVuSans-LICENSE.txt) is compiled in, so plots render the same on
//! any machine with nothing installed. Charts are rendered into memory and written through a temp
//! file and a rename: a failed plot never leaves a truncated PNG next to good results.
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Inputs that cannot be plotted (mismatched lengths, non-finite values, nothing to draw).
    #[error("plot {path}: {msg}")]
    Invalid { path: PathBuf, msg: String },
    #[error("plot {path}: drawing failed: {msg}")]
    Draw { path: PathBuf, msg: String },
    #[error("plot {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Kept for callers that match on it; not produced by this crate any more.
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One named line of a line chart.
#[derive(Clone, Debug)]
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");

fn init_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bytes are a known-good TTF compiled in; failure here is a build defect.
        if plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_err() {
            panic!("rws-plot: bundled DejaVuSans.ttf failed to load");
        }
    });
}

/// Tableau 10: distinguishable, colour-blind tolerant.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

struct Ctx<'a> {
    path: &'a Path,
}

impl Ctx<'_> {
    fn invalid(&self, msg: impl Into<String>) -> Error {
        Error::Invalid { path: self.path.to_path_buf(), msg: msg.into() }
    }
    fn draw<E: std::fmt::Display>(&self, e: E) -> Error {
        Error::Draw { path: self.path.to_path_buf(), msg: e.to_string() }
    }
    fn finite(&self, what: &str, v: f64) -> Result<()> {
        if v.is_finite() {
            Ok(())
        } else {
            Err(self.invalid(format!("{what} is {v}; only finite values can be plotted")))
        }
    }
}

/// Axis ticks share one number of decimals, enough to tell ticks ~span/10 apart.
fn fmt_tick(v: f64, span: f64) -> String {
    let step = (span / 10.0).abs().max(1e-12);
    let decimals = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// Decimals for annotating a set of values in one format, chosen from the largest magnitude
/// (accuracies in percent get one, similarities in -1..1 get two).
fn decimals_for(values: impl Iterator<Item = f64>) -> usize {
    let m = values.fold(0f64, |m, v| m.max(v.abs()));
    if m >= 1000.0 {
        0
    } else if m >= 10.0 {
        1
    } else if m >= 0.1 {
        2
    } else {
        4
    }
}

/// Render with `draw` into an RGB buffer of `w`×`h`, then write the PNG atomically.
fn render(
    path: &Path,
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>, &mut Vec<VText>) -> Result<()>,
) -> Result<()> {
    init_font();
    let ctx = Ctx { path };
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let mut vtexts = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| ctx.draw(e))?;
        draw(&root, &mut vtexts)?;
        root.present().map_err(|e| ctx.draw(e))?;
    }
    for t in &vtexts {
        blit_vertical(&mut buf, w, h, t, &ctx)?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &buf,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| ctx.draw(e))?;
    let io = |e| Error::Io { path: path.to_path_buf(), source: e };
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| ctx.invalid("not a file path"))?;
    let tmp = dir.join(format!(".{}.tmp.{}", name.to_string_lossy(), std::process::id()));
    let res = std::fs::write(&tmp, &png).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    Ok(())
}

/// Text to be drawn reading bottom-to-top (plotters' ab_glyph path does not rotate glyphs), centred
/// on `x`; with `end_at_y` its last character sits at `y` (labels hanging under an axis), otherwise
/// its first character does (labels standing on top of a matrix).
struct VText {
    text: String,
    size: u32,
    x: i32,
    y: i32,
    end_at_y: bool,
}

/// Width and height of `s` in the bundled font.
fn measure(s: &str, size: u32) -> (u32, u32) {
    init_font();
    let mut tmp = vec![0u8; 3 * 4];
    let a = BitMapBackend::with_buffer(&mut tmp, (2, 2)).into_drawing_area();
    a.estimate_text_size(s, &TextStyle::from((FONT, size).into_font())).unwrap_or((s.len() as u32 * size / 2, size))
}

/// Render `t` horizontally into a scratch image, then copy it rotated 90° counter-clockwise into
/// `buf`, keeping the darker pixel (dark text on a light background).
fn blit_vertical(buf: &mut [u8], w: u32, h: u32, t: &VText, ctx: &Ctx) -> Result<()> {
    let (tw, th) = measure(&t.text, t.size);
    let (sw, sh) = (tw + 4, th + 6);
    let mut scratch = vec![255u8; (sw * sh * 3) as usize];
    {
        let a = BitMapBackend::with_buffer(&mut scratch, (sw, sh)).into_drawing_area();
        let style = TextStyle::from((FONT, t.size).into_font()).pos(Pos::new(HPos::Left, VPos::Top)).color(&BLACK);
        a.draw_text(&t.text, &style, (2, 2)).map_err(|e| ctx.draw(e))?;
        a.present().map_err(|e| ctx.draw(e))?;
    }
    for ty in 0..sh {
        for tx in 0..sw {
            let dx = t.x - sh as i32 / 2 + ty as i32;
            let dy = if t.end_at_y { t.y + (sw - 1 - tx) as i32 } else { t.y - tx as i32 };
            if dx < 0 || dy < 0 || dx >= w as i32 || dy >= h as i32 {
                continue;
            }
            let s = ((ty * sw + tx) * 3) as usize;
            let d = ((dy as u32 * w + dx as u32) * 3) as usize;
            for k in 0..3 {
                buf[d + k] = buf[d + k].min(scratch[s + k]);
            }
        }
    }
    Ok(())
}

/// Value axis range covering the data and zero (bars start at zero), with headroom for labels.
fn bar_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (0f64, 0f64);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let pad = (hi - lo) * 0.12;
    (if lo < 0.0 { lo - pad } else { 0.0 }, if hi > 0.0 { hi + pad } else { 0.0 })
}

/// Category labels under the x axis: horizontal when they fit their slot, else rotated to read
/// bottom-up. Returns the pixel height they need.
fn category_label_height(labels: &[String], slot_px: f64, size: u32) -> (u32, bool) {
    let widest = labels.iter().map(|l| measure(l, size).0).max().unwrap_or(0);
    if (widest as f64) + 6.0 <= slot_px {
        (size + 14, false)
    } else {
        (widest + 14, true)
    }
}

fn draw_category_labels(
    root: &DrawingArea<BitMapBackend, Shift>,
    ctx: &Ctx,
    labels: &[String],
    xs: &[(i32, i32)],
    rotated: bool,
    size: u32,
    vtexts: &mut Vec<VText>,
) -> Result<()> {
    for (l, &(x, y)) in labels.iter().zip(xs) {
        if rotated {
            vtexts.push(VText { text: l.clone(), size, x, y: y + 8, end_at_y: true });
        } else {
            let style = TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, VPos::Top)).color(&BLACK);
            root.draw_text(l, &style, (x, y + 6)).map_err(|e| ctx.draw(e))?;
        }
    }
    Ok(())
}

/// Legend in its own panel at the right, so it can never cover data.
fn draw_legend(area: &DrawingArea<BitMapBackend, Shift>, ctx: &Ctx, labels: &[String], top: i32, line: bool) -> Result<()> {
    for (i, l) in labels.iter().enumerate() {
        let y = top + 24 * i as i32;
        let c = color(i);
        if line {
            area.draw(&PathElement::new(vec![(8, y), (30, y)], c.stroke_width(3))).map_err(|e| ctx.draw(e))?;
            area.draw(&Circle::new((19, y), 4, c.filled())).map_err(|e| ctx.draw(e))?;
        } else {
            area.draw(&Rectangle::new([(10, y - 7), (28, y + 7)], c.filled())).map_err(|e| ctx.draw(e))?;
        }
        let style = TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center)).color(&BLACK);
        area.draw_text(l, &style, (38, y)).map_err(|e| ctx.draw(e))?;
    }
    Ok(())
}

/// Shared skeleton of the two bar charts: `bars[group] = [(series, value)]`.
fn bars(path: &Path, title: &str, groups: &[String], series: &[String], values: &[Vec<f64>], y_label: &str) -> Result<()> {
    let ctx = Ctx { path };
    let ng = groups.len();
    let ns = series.len().max(1);
    let legend = series.len() > 1 || !series.is_empty() && !series[0].is_empty();
    let w = (260 + ng as u32 * (18 * ns as u32 + 26)).clamp(640, 2400);
    let lw = if legend { series.iter().map(|l| measure(l, 15).0).max().unwrap_or(0) + 50 } else { 0 };
    let slot = (w - lw - 100) as f64 / ng as f64;
    let (xlab_h, rotated) = category_label_height(groups, slot, 14);
    // Long rotated labels get their own room instead of squeezing the bars.
    let h = 500 + xlab_h;
    render(path, w, h, |root, vtexts| {
        let (plot, leg) = root.split_horizontally(w - lw);
        let (lo, hi) = bar_range(values.iter().flatten().copied());
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(xlab_h)
            .y_label_area_size(72)
            .build_cartesian_2d(-0.5f64..ng as f64 - 0.5, lo..hi)
            .map_err(|e| ctx.draw(e))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .x_label_formatter(&|_| String::new())
            .y_desc(y_label)
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(|e| ctx.draw(e))?;
        let width = 0.8 / ns as f64;
        let annotate = ng * ns <= 40;
        let dec = decimals_for(values.iter().flatten().copied());
        for (s, vals) in values.iter().enumerate() {
            let c = if series.len() > 1 { color(s) } else { color(0) };
            for (g, &v) in vals.iter().enumerate() {
                let x0 = g as f64 - 0.4 + s as f64 * width;
                let x1 = x0 + width * 0.92;
                chart.draw_series(std::iter::once(Rectangle::new([(x0, 0.0), (x1, v)], c.filled()))).map_err(|e| ctx.draw(e))?;
                if annotate {
                    let (px, py) = chart.backend_coord(&((x0 + x1) / 2.0, v));
                    let size = if ns > 2 { 11 } else { 13 };
                    let vpos = if v >= 0.0 { VPos::Bottom } else { VPos::Top };
                    let style = TextStyle::from((FONT, size).into_font()).pos(Pos::new(HPos::Center, vpos)).color(&BLACK);
                    let dy = if v >= 0.0 { -3 } else { 3 };
                    root.draw_text(&format!("{v:.dec$}"), &style, (px, py + dy)).map_err(|e| ctx.draw(e))?;
                }
            }
        }
        let anchors: Vec<(i32, i32)> = (0..ng).map(|g| chart.backend_coord(&(g as f64, lo))).collect();
        draw_category_labels(root, &ctx, groups, &anchors, rotated, 14, vtexts)?;
        if legend {
            draw_legend(&leg, &ctx, series, 60, false)?;
        }
        Ok(())
    })
}

/// One bar per label.
pub fn bar_chart(path: &Path, title: &str, labels: &[String], values: &[f64], y_label: &str) -> Result<()> {
    let ctx = Ctx { path };
    if labels.is_empty() {
        return Err(ctx.invalid("no bars to draw"));
    }
    if labels.len() != values.len() {
        return Err(ctx.invalid(format!("{} labels but {} values", labels.len(), values.len())));
    }
    for (l, &v) in labels.iter().zip(values) {
        ctx.finite(&format!("value of `{l}`"), v)?;
    }
    bars(path, title, labels, &[String::new()], &[values.to_vec()], y_label)
}

/// Bars grouped by `groups`, one colour per series; `values[series][group]`.
pub fn grouped_bar_chart(path: &Path, title: &str, groups: &[String], series: &[String], values: &[Vec<f64>], y_label: &str) -> Result<()> {
    let ctx = Ctx { path };
    if groups.is_empty() || series.is_empty() {
        return Err(ctx.invalid("no groups or no series to draw"));
    }
    if values.len() != series.len() {
        return Err(ctx.invalid(format!("{} series names but {} value rows", series.len(), values.len())));
    }
    for (s, row) in series.iter().zip(values) {
        if row.len() != groups.len() {
            return Err(ctx.invalid(format!("series `{s}` has {} values for {} groups", row.len(), groups.len())));
        }
        for (g, &v) in groups.iter().zip(row) {
            ctx.finite(&format!("value of `{s}` at `{g}`"), v)?;
        }
    }
    bars(path, title, groups, series, values, y_label)
}

/// Lines with markers and a legend.
pub fn line_chart(path: &Path, title: &str, x_label: &str, y_label: &str, series: &[Series]) -> Result<()> {
    let ctx = Ctx { path };
    if series.iter().all(|s| s.points.is_empty()) {
        return Err(ctx.invalid("no points to draw"));
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for s in series {
        for &(x, y) in &s.points {
            ctx.finite(&format!("a point of `{}`", s.label), x)?;
            ctx.finite(&format!("a point of `{}`", s.label), y)?;
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    let widen = |a: f64, b: f64| if b - a < 1e-12 { (a - 0.5_f64.max(a.abs() * 0.05), b + 0.5_f64.max(b.abs() * 0.05)) } else { (a, b) };
    let (x0, x1) = widen(x0, x1);
    let (y0, y1) = widen(y0, y1);
    let (xp, yp) = ((x1 - x0) * 0.03, (y1 - y0) * 0.08);
    let labels: Vec<String> = series.iter().map(|s| s.label.clone()).collect();
    let legend = labels.iter().any(|l| !l.is_empty());
    let (w, h) = (900, 560);
    let lw = if legend { labels.iter().map(|l| measure(l, 15).0).max().unwrap_or(0) + 50 } else { 0 };
    let w = w + lw;
    render(path, w, h, |root, _| {
        let (plot, leg) = root.split_horizontally(w - lw);
        let mut chart = ChartBuilder::on(&plot)
            .caption(title, (FONT, 22))
            .margin(14)
            .x_label_area_size(50)
            .y_label_area_size(72)
            .build_cartesian_2d(x0 - xp..x1 + xp, y0 - yp..y1 + yp)
            .map_err(|e| ctx.draw(e))?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .axis_desc_style((FONT, 16))
            .label_style((FONT, 14))
            .x_label_formatter(&|v| fmt_tick(*v, x1 - x0))
            .y_label_formatter(&|v| fmt_tick(*v, y1 - y0))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(|e| ctx.draw(e))?;
        for (i, s) in series.iter().enumerate() {
            let c = color(i);
            chart.draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2))).map_err(|e| ctx.draw(e))?;
            chart
                .draw_series(s.points.iter().map(|&p| Circle::new(p, 4, c.filled())))
                .map_err(|e| ctx.draw(e))?;
        }
        if legend {
            draw_legend(&leg, &ctx, &labels, 60, true)?;
        }
        Ok(())
    })
}

/// Viridis, sampled at 9 stops and interpolated linearly.
fn viridis(t: f64) -> RGBColor {
    const S: [(u8, u8, u8); 9] = [
        (68, 1, 84),
        (71, 44, 122),
        (59, 81, 139),
        (44, 113, 142),
        (33, 144, 141),
        (39, 173, 129),
        (92, 200, 99),
        (170, 220, 50),
        (253, 231, 37),
    ];
    let t = t.clamp(0.0, 1.0) * (S.len() - 1) as f64;
    let i = (t.floor() as usize).min(S.len() - 2);
    let f = t - i as f64;
    let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    RGBColor(lerp(S[i].0, S[i + 1].0), lerp(S[i].1, S[i + 1].1), lerp(S[i].2, S[i + 1].2))
}

/// A matrix as coloured cells, each annotated with its value; `values[row][col]`.
pub fn heatmap(path: &Path, title: &str, rows: &[String], cols: &[String], values: &[Vec<f64>]) -> Result<()> {
    let ctx = Ctx { path };
    if rows.is_empty() || cols.is_empty() {
        return Err(ctx.invalid("no rows or no columns to draw"));
    }
    if values.len() != rows.len() {
        return Err(ctx.invalid(format!("{} row names but {} value rows", rows.len(), values.len())));
    }
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (r, row) in rows.iter().zip(values) {
        if row.len() != cols.len() {
            return Err(ctx.invalid(format!("row `{r}` has {} values for {} columns", row.len(), cols.len())));
        }
        for (c, &v) in cols.iter().zip(row) {
            ctx.finite(&format!("cell `{r}`/`{c}`"), v)?;
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    // Size the canvas from the text it must hold.
    let row_w = rows.iter().map(|r| measure(r, 14).0).max().unwrap_or(0);
    let col_w = cols.iter().map(|c| measure(c, 14).0).max().unwrap_or(0);
    let dec = decimals_for(values.iter().flatten().copied());
    let val_w = values.iter().flatten().map(|&v| measure(&format!("{v:.dec$}"), 13).0).max().unwrap_or(0);
    let cell_w = (val_w + 12).max(46);
    let cell_h = 34u32;
    let rotated = col_w + 6 > cell_w;
    let col_h = if rotated { col_w + 12 } else { 26 };
    let (left, top, bar_w) = (row_w + 20, 50 + col_h, 90u32);
    let title_w = measure(title, 20).0;
    let w = (left + cell_w * cols.len() as u32 + bar_w + 10).max(title_w + 40).max(320);
    let h = top + cell_h * rows.len() as u32 + 20;
    render(path, w, h, |root, vtexts| {
        let title_style = TextStyle::from((FONT, 20).into_font()).pos(Pos::new(HPos::Center, VPos::Top)).color(&BLACK);
        root.draw_text(title, &title_style, (w as i32 / 2, 10)).map_err(|e| ctx.draw(e))?;
        let span = if hi - lo < 1e-12 { 1.0 } else { hi - lo };
        for (r, row) in values.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                let t = (v - lo) / span;
                let x = (left + c as u32 * cell_w) as i32;
                let y = (top + r as u32 * cell_h) as i32;
                let fill = viridis(t);
                root.draw(&Rectangle::new([(x, y), (x + cell_w as i32, y + cell_h as i32)], fill.filled())).map_err(|e| ctx.draw(e))?;
                root.draw(&Rectangle::new([(x, y), (x + cell_w as i32, y + cell_h as i32)], WHITE.stroke_width(1)))
                    .map_err(|e| ctx.draw(e))?;
                // Light text on the dark end of the scale, dark text on the bright end.
                let luma = 0.299 * fill.0 as f64 + 0.587 * fill.1 as f64 + 0.114 * fill.2 as f64;
                let tc = if luma < 140.0 { WHITE } else { BLACK };
                let style = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Center)).color(&tc);
                root.draw_text(&format!("{v:.dec$}"), &style, (x + cell_w as i32 / 2, y + cell_h as i32 / 2)).map_err(|e| ctx.draw(e))?;
            }
        }
        for (r, name) in rows.iter().enumerate() {
            let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center)).color(&BLACK);
            let y = (top + r as u32 * cell_h + cell_h / 2) as i32;
            root.draw_text(name, &style, (left as i32 - 8, y)).map_err(|e| ctx.draw(e))?;
        }
        for (c, name) in cols.iter().enumerate() {
            let x = (left + c as u32 * cell_w + cell_w / 2) as i32;
            if rotated {
                vtexts.push(VText { text: name.clone(), size: 14, x, y: top as i32 - 6, end_at_y: false });
            } else {
                let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom)).color(&BLACK);
                root.draw_text(name, &style, (x, top as i32 - 6)).map_err(|e| ctx.draw(e))?;
            }
        }
        // Colour bar with the extremes.
        let bx = (left + cell_w * cols.len() as u32 + 16) as i32;
        let bh = (cell_h * rows.len() as u32).max(60) as i32;
        let by = top as i32;
        for k in 0..bh {
            let t = 1.0 - k as f64 / (bh - 1).max(1) as f64;
            root.draw(&Rectangle::new([(bx, by + k), (bx + 14, by + k + 1)], viridis(t).filled())).map_err(|e| ctx.draw(e))?;
        }
        let ls = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)).color(&BLACK);
        root.draw_text(&format!("{hi:.dec$}"), &ls, (bx + 18, by + 6)).map_err(|e| ctx.draw(e))?;
        root.draw_text(&format!("{lo:.dec$}"), &ls, (bx + 18, by + bh - 6)).map_err(|e| ctx.draw(e))?;
        Ok(())
    })
}
