//! Each plot writes a PNG that decodes, has the expected size class and shows the data.
//! Set RWS_PLOT_KEEP=DIR to keep the images for a look.
use rws_plot::*;
use std::path::{Path, PathBuf};

fn out(dir: &Path, name: &str) -> PathBuf {
    match std::env::var_os("RWS_PLOT_KEEP") {
        Some(d) => PathBuf::from(d).join(name),
        None => dir.join(name),
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// Decode, check size, and count pixels of a given colour (exact match) and non-white pixels.
fn check(path: &Path, min_w: u32, min_h: u32) -> image::RgbImage {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).to_rgb8();
    assert!(img.width() >= min_w && img.height() >= min_h, "{}×{}", img.width(), img.height());
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let frac = non_white as f64 / (img.width() * img.height()) as f64;
    assert!(frac > 0.02, "image is nearly blank: {frac}");
    // anti-aliased glyphs produce grey levels: text was drawn with the bundled font
    let greys = img.pixels().filter(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2] && p.0[0] > 30 && p.0[0] < 220).count();
    assert!(greys > 100, "no anti-aliased text found");
    // no temp file left next to it
    let dir = path.parent().unwrap();
    assert!(std::fs::read_dir(dir).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp.")));
    img
}

fn count(img: &image::RgbImage, c: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0 == c).count()
}
const BLUE: [u8; 3] = [31, 119, 180];
const ORANGE: [u8; 3] = [255, 127, 14];

#[test]
fn bar_chart_draws_proportional_bars() {
    let t = tempfile::tempdir().unwrap();
    let p = out(t.path(), "bar.png");
    let labels = s(&["clean", "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
        "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression"]);
    let values: Vec<f64> = (0..labels.len()).map(|i| 92.0 - 3.5 * i as f64).collect();
    bar_chart(&p, "Accuracy per corruption (severity 5)", &labels, &values, "accuracy (%)").unwrap();
    let img = check(&p, 640, 400);
    assert!(count(&img, BLUE) > 5000);
    // taller bar → more blue pixels in its column: the first bar is taller than the last
    let col_blue = |x0: u32, x1: u32| (x0..x1).map(|x| (0..img.height()).filter(|&y| img.get_pixel(x, y).0 == BLUE).count()).sum::<usize>();
    let first = (0..img.width()).find(|&x| (0..img.height()).any(|y| img.get_pixel(x, y).0 == BLUE)).unwrap();
    let last = (0..img.width()).rev().find(|&x| (0..img.height()).any(|y| img.get_pixel(x, y).0 == BLUE)).unwrap();
    assert!(col_blue(first, first + 10) > col_blue(last - 10, last));
}

#[test]
fn grouped_bars_and_legend() {
    let t = tempfile::tempdir().unwrap();
    let p = out(t.path(), "grouped.png");
    let groups = s(&["gaussian_noise", "fog", "contrast", "jpeg_compression", "pixelate"]);
    let series = s(&["standard model", "patched (α=1)", "robust model"]);
    let values = vec![vec![40.0, 60.0, 55.0, 70.0, 65.0], vec![70.0, 72.0, 68.0, 80.0, 78.0], vec![75.0, 74.0, 70.0, 82.0, 80.0]];
    grouped_bar_chart(&p, "RA per corruption", &groups, &series, &values, "accuracy (%)").unwrap();
    let img = check(&p, 640, 400);
    assert!(count(&img, BLUE) > 1000 && count(&img, ORANGE) > 1000 && count(&img, [44, 160, 44]) > 1000);
    // mismatched lengths are refused with the series named, and nothing is written
    let q = t.path().join("bad.png");
    let e = grouped_bar_chart(&q, "x", &groups, &series, &[values[0].clone(), values[1].clone(), vec![1.0]], "y").unwrap_err().to_string();
    assert!(e.contains("robust model") && e.contains("bad.png"), "{e}");
    assert!(!q.exists());
}

#[test]
fn line_chart_with_legend() {
    let t = tempfile::tempdir().unwrap();
    let p = out(t.path(), "line.png");
    let series = vec![
        Series { label: "clean accuracy".into(), points: (0..=10).map(|i| (i as f64 * 0.2, 92.0 - (i * i) as f64 * 0.3)).collect() },
        Series { label: "accuracy under fog-5".into(), points: (0..=10).map(|i| (i as f64 * 0.2, 40.0 + i as f64 * 4.0)).collect() },
    ];
    line_chart(&p, "Patch strength sweep", "α", "accuracy (%)", &series).unwrap();
    let img = check(&p, 640, 400);
    assert!(count(&img, BLUE) > 300 && count(&img, ORANGE) > 300);
    // a single point still renders (degenerate ranges are widened)
    let q = out(t.path(), "line1.png");
    line_chart(&q, "one point", "x", "y", &[Series { label: "a".into(), points: vec![(1.0, 1.0)] }]).unwrap();
    check(&q, 300, 300);
    let e = line_chart(&q, "nan", "x", "y", &[Series { label: "bad".into(), points: vec![(1.0, f64::NAN)] }]).unwrap_err();
    assert!(e.to_string().contains("bad"));
    assert!(line_chart(&q, "none", "x", "y", &[]).is_err());
}

#[test]
fn heatmap_cells_follow_values() {
    let t = tempfile::tempdir().unwrap();
    let p = out(t.path(), "heat.png");
    let rows = s(&["gaussian_noise", "fog", "contrast", "pixelate"]);
    let cols = s(&["gaussian_noise", "fog", "contrast", "pixelate", "jpeg_compression"]);
    let values: Vec<Vec<f64>> = (0..4).map(|r| (0..5).map(|c| if r == c { 0.95 } else { 0.1 + 0.07 * (r + c) as f64 }).collect()).collect();
    heatmap(&p, "Cosine similarity of signatures", &rows, &cols, &values).unwrap();
    let img = check(&p, 300, 150);
    // the brightest viridis yellow (max) and darkest purple (min) both appear
    assert!(count(&img, [253, 231, 37]) > 200);
    assert!(count(&img, [68, 1, 84]) > 200);
    let e = heatmap(&p, "x", &rows, &cols, &values[..3]).unwrap_err().to_string();
    assert!(e.contains("4 row names but 3"), "{e}");
}

#[test]
fn bar_chart_rejects_bad_input_and_keeps_old_file() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("b.png");
    std::fs::write(&p, b"previous").unwrap();
    assert!(bar_chart(&p, "t", &s(&["a", "b"]), &[1.0], "y").is_err());
    assert!(bar_chart(&p, "t", &s(&["a"]), &[f64::INFINITY], "y").unwrap_err().to_string().contains("`a`"));
    assert!(bar_chart(&p, "t", &[], &[], "y").is_err());
    assert_eq!(std::fs::read(&p).unwrap(), b"previous");
    // negative values draw below zero
    bar_chart(&p, "deltas", &s(&["up", "down"]), &[3.0, -2.0], "Δ accuracy").unwrap();
    check(&p, 300, 300);
    // missing folder: an I/O error naming the file
    let e = bar_chart(&t.path().join("no/such/dir/x.png"), "t", &s(&["a"]), &[1.0], "y").unwrap_err().to_string();
    assert!(e.contains("x.png"), "{e}");
}
