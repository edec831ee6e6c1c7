//! scipy.ndimage / skimage-compatible helpers shared by several corruptions.
//!
//! The reference generator leans on scipy and skimage for its filters; reproducing their exact
//! boundary rules and kernel sizes is what makes our outputs match the reference's bytes.
use crate::FImage;

/// Boundary rules, named as `scipy.ndimage` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `d c b a | a b c d | d c b a` (half-sample symmetric; scipy's and skimage's `reflect`).
    Reflect,
    /// `a a a a | a b c d | d d d d` (edge replicate; skimage `gaussian`'s default).
    Nearest,
    /// `d c b | a b c d | c b a` (whole-sample symmetric; OpenCV's BORDER_REFLECT_101).
    Mirror,
    /// zeros outside.
    Constant,
    /// `a b c d | a b c d | a b c d` (periodic).
    Wrap,
}

/// Map an out-of-range index into `0..n` under `mode`; `None` means "zero" (Constant).
#[inline]
pub fn boundary_index(i: isize, n: usize, mode: Mode) -> Option<usize> {
    let n_i = n as isize;
    if (0..n_i).contains(&i) {
        return Some(i as usize);
    }
    match mode {
        Mode::Constant => None,
        Mode::Nearest => Some(i.clamp(0, n_i - 1) as usize),
        Mode::Wrap => Some(i.rem_euclid(n_i) as usize),
        Mode::Reflect => {
            let p = 2 * n_i;
            let mut j = i.rem_euclid(p);
            if j >= n_i {
                j = p - 1 - j;
            }
            Some(j as usize)
        }
        Mode::Mirror => {
            if n == 1 {
                return Some(0);
            }
            let p = 2 * n_i - 2;
            let mut j = i.rem_euclid(p);
            if j >= n_i {
                j = p - j;
            }
            Some(j as usize)
        }
    }
}

/// scipy `_gaussian_kernel1d`: radius ⌊truncate·σ + 0.5⌋, weights exp(−x²/2σ²) normalised.
pub fn gaussian_kernel1d(sigma: f64, truncate: f64) -> Vec<f64> {
    let radius = (truncate * sigma + 0.5) as i64;
    let s2 = sigma * sigma;
    let mut k: Vec<f64> = (-radius..=radius).map(|x| (-0.5 / s2 * (x * x) as f64).exp()).collect();
    let sum: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= sum);
    k
}

/// `scipy.ndimage.correlate1d` along H (axis 0) of an HWC image. Whole rows at a time (one
/// axpy per tap), which the compiler vectorises.
pub fn correlate_rows(x: &FImage, k: &[f64], mode: Mode) -> FImage {
    let (h, w, c) = (x.h, x.w, x.c);
    let rw = w * c;
    let r = (k.len() / 2) as isize;
    let mut out = vec![0.0f64; h * rw];
    for y in 0..h {
        let orow = &mut out[y * rw..(y + 1) * rw];
        for (t, &kv) in k.iter().enumerate() {
            if let Some(sy) = boundary_index(y as isize + t as isize - r, h, mode) {
                let srow = &x.data[sy * rw..(sy + 1) * rw];
                for (o, s) in orow.iter_mut().zip(srow) {
                    *o += kv * s;
                }
            }
        }
    }
    FImage { h, w, c, data: out }
}

/// `scipy.ndimage.correlate1d` along W (axis 1) of an HWC image: each row is padded once, then
/// one axpy per tap over the interleaved channels.
pub fn correlate_cols(x: &FImage, k: &[f64], mode: Mode) -> FImage {
    let (h, w, c) = (x.h, x.w, x.c);
    let rw = w * c;
    let r = k.len() / 2;
    let mut out = vec![0.0f64; h * rw];
    let mut buf = vec![0.0f64; (w + 2 * r) * c];
    for y in 0..h {
        let srow = &x.data[y * rw..(y + 1) * rw];
        for j in 0..w + 2 * r {
            let sx = boundary_index(j as isize - r as isize, w, mode);
            for ch in 0..c {
                buf[j * c + ch] = sx.map_or(0.0, |sx| srow[sx * c + ch]);
            }
        }
        let orow = &mut out[y * rw..(y + 1) * rw];
        for (t, &kv) in k.iter().enumerate() {
            for (o, s) in orow.iter_mut().zip(&buf[t * c..t * c + rw]) {
                *o += kv * s;
            }
        }
    }
    FImage { h, w, c, data: out }
}

/// skimage `gaussian(x, sigma, mode, truncate, channel_axis=-1)` = scipy `gaussian_filter` with
/// σ = (σ, σ, 0): a separable blur over H then W, channels kept apart. σ = 0 returns the input.
pub fn gaussian_filter(x: &FImage, sigma: f64, mode: Mode, truncate: f64) -> FImage {
    if sigma <= 1e-15 {
        return x.clone();
    }
    let k = gaussian_kernel1d(sigma, truncate);
    let y = correlate_rows(x, &k, mode);
    correlate_cols(&y, &k, mode)
}

/// 2-D correlation with a full kernel (OpenCV `filter2D`: anchor at the centre, no flip).
/// `k` is `kh×kw` row-major, both odd.
pub fn correlate2d(x: &FImage, k: &[f64], kh: usize, kw: usize, mode: Mode) -> FImage {
    let (h, w, c) = (x.h, x.w, x.c);
    let (ry, rx) = (kh / 2, kw / 2);
    // Padded copy so the inner loop has no boundary logic.
    let (ph, pw) = (h + 2 * ry, w + 2 * rx);
    let mut pad = vec![0.0f64; ph * pw * c];
    for py in 0..ph {
        let sy = boundary_index(py as isize - ry as isize, h, mode);
        for px in 0..pw {
            let sx = boundary_index(px as isize - rx as isize, w, mode);
            if let (Some(sy), Some(sx)) = (sy, sx) {
                for ch in 0..c {
                    pad[(py * pw + px) * c + ch] = x.data[(sy * w + sx) * c + ch];
                }
            }
        }
    }
    // Skip zero taps: disks are mostly zero at the corners of their square.
    let taps: Vec<(usize, usize, f64)> =
        (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))).map(|(i, j)| (i, j, k[i * kw + j])).filter(|t| t.2 != 0.0).collect();
    let mut out = vec![0.0f64; h * w * c];
    for y in 0..h {
        let orow = &mut out[y * w * c..(y + 1) * w * c];
        for &(i, j, kv) in &taps {
            let src = &pad[((y + i) * pw + j) * c..((y + i) * pw + j) * c + w * c];
            for (o, s) in orow.iter_mut().zip(src) {
                *o += kv * s;
            }
        }
    }
    FImage { h, w, c, data: out }
}

/// scipy `ndimage.zoom(order=1)` of one 2-D plane (corner-aligned grid, scipy ≤ 1.5 default and
/// `grid_mode=False`): output side `round(n·z)`, input coordinate `o·(n−1)/(m−1)`.
/// Computed in f64; callers cast as the reference's dtype requires.
pub fn zoom_linear_plane(src: &[f64], h: usize, w: usize, zh: f64, zw: f64) -> (Vec<f64>, usize, usize) {
    let oh = (h as f64 * zh).round() as usize;
    let ow = (w as f64 * zw).round() as usize;
    let coords = |n: usize, m: usize| -> Vec<(usize, usize, f64)> {
        let scale = if m > 1 { (n as f64 - 1.0) / (m as f64 - 1.0) } else { 0.0 };
        (0..m)
            .map(|o| {
                let c = o as f64 * scale;
                let i0 = (c.floor() as usize).min(n - 1);
                let i1 = (i0 + 1).min(n - 1);
                (i0, i1, c - i0 as f64)
            })
            .collect()
    };
    let cy = coords(h, oh);
    let cx = coords(w, ow);
    let mut out = vec![0.0; oh * ow];
    for (oy, &(y0, y1, fy)) in cy.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in cx.iter().enumerate() {
            let a = src[y0 * w + x0] * (1.0 - fx) + src[y0 * w + x1] * fx;
            let b = src[y1 * w + x0] * (1.0 - fx) + src[y1 * w + x1] * fx;
            out[oy * ow + ox] = a * (1.0 - fy) + b * fy;
        }
    }
    (out, oh, ow)
}

/// scipy `map_coordinates(order=1)` of one 2-D plane at (row, col) under `mode`
/// (values beyond the edge follow `mode`, as scipy ≥ 1.6 does).
pub fn map_coordinates_linear(src: &[f64], h: usize, w: usize, rows: &[f64], cols: &[f64], mode: Mode) -> Vec<f64> {
    let at = |y: isize, x: isize| -> f64 {
        match (boundary_index(y, h, mode), boundary_index(x, w, mode)) {
            (Some(y), Some(x)) => src[y * w + x],
            _ => 0.0,
        }
    };
    rows.iter()
        .zip(cols)
        .map(|(&r, &c)| {
            let (y0, x0) = (r.floor(), c.floor());
            let (fy, fx) = (r - y0, c - x0);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let a = at(y0, x0) * (1.0 - fx) + at(y0, x0 + 1) * fx;
            let b = at(y0 + 1, x0) * (1.0 - fx) + at(y0 + 1, x0 + 1) * fx;
            a * (1.0 - fy) + b * fy
        })
        .collect()
}

/// skimage `rgb2hsv` of one pixel (values in 0..1). The branch order matters for ties:
/// skimage assigns red, then green, then blue, the later winning.
#[inline]
pub fn rgb2hsv(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
    let v = r.max(g).max(b);
    let delta = v - r.min(g).min(b);
    if delta == 0.0 {
        return (0.0, 0.0, v);
    }
    let s = delta / v;
    // Which channel is the maximum decides the formula (blue over green over red on ties); picked
    // without branches, since on real images that choice is unpredictable. Same operations as
    // the three-branch form: one division, then the offset added (none for red).
    use std::hint::select_unpredictable as sel;
    let (is_b, is_g) = (b == v, g == v);
    let num = sel(is_b, r - g, sel(is_g, b - r, g - b));
    let off = sel(is_b, 4.0, sel(is_g, 2.0, 0.0));
    let q = num / delta;
    let h = sel(is_b || is_g, off + q, q);
    // h/6 lies in [−1/6, 5/6], where rem_euclid(1) is exactly "add 1 if negative" (and that
    // avoids a libm fmod call per pixel).
    let h = h / 6.0;
    let h = if h < 0.0 { h + 1.0 } else { h };
    (h, s, v)
}

/// skimage `hsv2rgb` of one pixel.
#[inline]
pub fn hsv2rgb(h: f64, s: f64, v: f64) -> (f64, f64, f64) {
    // floor without a libm call on the usual non-negative hue (truncation is floor there).
    let h6 = h * 6.0;
    let hi = if (0.0..9.0e15).contains(&h6) { (h6 as i64) as f64 } else { h6.floor() };
    let f = h6 - hi;
    let p = v * (1.0 - s);
    let q = v * (1.0 - f * s);
    let t = v * (1.0 - (1.0 - f) * s);
    // The sector's permutation of (v, t, p, q) by table lookups, not a six-way branch.
    let i = (hi as i64).rem_euclid(6) as usize;
    ([v, q, p, p, t, v][i], [t, v, v, q, p, p][i], [p, p, t, v, v, q][i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_modes_follow_scipy() {
        // n = 4, indices -3..=6 under each mode (scipy.ndimage documentation's diagrams).
        let idx: Vec<isize> = (-3..=6).collect();
        let m = |mode| idx.iter().map(|&i| boundary_index(i, 4, mode).map(|v| v as i64).unwrap_or(-1)).collect::<Vec<_>>();
        assert_eq!(m(Mode::Reflect), vec![2, 1, 0, 0, 1, 2, 3, 3, 2, 1]);
        assert_eq!(m(Mode::Mirror), vec![3, 2, 1, 0, 1, 2, 3, 2, 1, 0]);
        assert_eq!(m(Mode::Nearest), vec![0, 0, 0, 0, 1, 2, 3, 3, 3, 3]);
        assert_eq!(m(Mode::Wrap), vec![1, 2, 3, 0, 1, 2, 3, 0, 1, 2]);
        assert_eq!(m(Mode::Constant), vec![-1, -1, -1, 0, 1, 2, 3, -1, -1, -1]);
    }

    #[test]
    fn gaussian_preserves_mass_and_constants() {
        let x = FImage { h: 9, w: 7, c: 3, data: vec![42.0; 9 * 7 * 3] };
        for mode in [Mode::Reflect, Mode::Nearest, Mode::Mirror, Mode::Wrap] {
            let y = gaussian_filter(&x, 1.3, mode, 4.0);
            assert!(y.data.iter().all(|v| (v - 42.0).abs() < 1e-9));
        }
        // An impulse in the middle spreads with kernel radius ⌊4σ+0.5⌋ = 5 for σ = 1.2.
        let mut d = vec![0.0; 21 * 21];
        d[10 * 21 + 10] = 1.0;
        let y = gaussian_filter(&FImage { h: 21, w: 21, c: 1, data: d }, 1.2, Mode::Constant, 4.0);
        assert!((y.data.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(y.data[10 * 21 + 15] > 0.0 && y.data[10 * 21 + 16] == 0.0);
    }

    /// skimage's branchy formulation, for checking the branch-free one value for value.
    fn rgb2hsv_branchy(r: f64, g: f64, b: f64) -> (f64, f64, f64) {
        let v = r.max(g).max(b);
        let delta = v - r.min(g).min(b);
        if delta == 0.0 {
            return (0.0, 0.0, v);
        }
        let mut h = 0.0;
        if r == v {
            h = (g - b) / delta;
        }
        if g == v {
            h = 2.0 + (b - r) / delta;
        }
        if b == v {
            h = 4.0 + (r - g) / delta;
        }
        ((h / 6.0).rem_euclid(1.0), delta / v, v)
    }

    fn hsv2rgb_branchy(h: f64, s: f64, v: f64) -> (f64, f64, f64) {
        let hi = (h * 6.0).floor();
        let f = h * 6.0 - hi;
        let (p, q, t) = (v * (1.0 - s), v * (1.0 - f * s), v * (1.0 - (1.0 - f) * s));
        match (hi as i64).rem_euclid(6) {
            0 => (v, t, p),
            1 => (q, v, p),
            2 => (p, v, t),
            3 => (p, q, v),
            4 => (t, p, v),
            _ => (v, p, q),
        }
    }

    #[test]
    fn hsv_matches_branchy_form_bit_for_bit() {
        let bits = |(a, b, c): (f64, f64, f64)| (a.to_bits(), b.to_bits(), c.to_bits());
        for r in (0..256).step_by(5) {
            for g in (0..256).step_by(3) {
                for b in (0..256).step_by(7).chain([g, r]) {
                    let (r, g, b) = (r as f64 / 255.0, g as f64 / 255.0, b as f64 / 255.0);
                    let hsv = rgb2hsv(r, g, b);
                    assert_eq!(bits(hsv), bits(rgb2hsv_branchy(r, g, b)), "{r} {g} {b}");
                    let (h, s, v) = hsv;
                    for (s2, v2) in [(s, v), ((s * 2.5).min(1.0), v), (s, (v + 0.3).min(1.0))] {
                        assert_eq!(bits(hsv2rgb(h, s2, v2)), bits(hsv2rgb_branchy(h, s2, v2)));
                    }
                }
            }
        }
    }

    #[test]
    fn hsv_round_trip() {
        for &(r, g, b) in &[(0.2, 0.5, 0.9), (1.0, 0.0, 0.0), (0.3, 0.3, 0.3), (0.9, 0.9, 0.1), (0.0, 0.7, 0.7)] {
            let (h, s, v) = rgb2hsv(r, g, b);
            let (r2, g2, b2) = hsv2rgb(h, s, v);
            assert!((r - r2).abs() < 1e-12 && (g - g2).abs() < 1e-12 && (b - b2).abs() < 1e-12);
        }
    }
}
