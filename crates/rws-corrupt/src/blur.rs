//! Deterministic blurs (gaussian, defocus, zoom) and the motion blur kernel that motion_blur and
//! snow share. Parameters: PARAMS.md (shared/corruptions).
use crate::ndimage::{self, Mode};
use crate::{Error, FImage, ParamSet, Result, Rng};
use rand::Rng as _;

fn pick<T: Copy>(p: ParamSet, s: usize, c32: [T; 5], t64: [T; 5], ic: [T; 5]) -> T {
    match p {
        ParamSet::Cifar10 => c32[s - 1],
        ParamSet::TinyImageNet => t64[s - 1],
        ParamSet::ImageNet => ic[s - 1],
    }
}

pub(crate) fn gaussian_sigma(severity: usize, p: ParamSet) -> f64 {
    pick(p, severity, [0.4, 0.6, 0.7, 0.8, 1.0], [0.5, 0.75, 1.0, 1.25, 1.5], [1.0, 2.0, 3.0, 4.0, 6.0])
}

pub(crate) fn gaussian_blur(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let sigma = gaussian_sigma(severity, p);
    let u = x.map(|v| v / 255.0);
    Ok(ndimage::gaussian_filter(&u, sigma, Mode::Nearest, 4.0).map(|v| v.clamp(0.0, 1.0) * 255.0))
}

/// OpenCV `getGaussianKernel(n, sigma, CV_32F)` for sigma > 0.
pub(crate) fn cv_gaussian_kernel(n: usize, sigma: f64) -> Vec<f32> {
    let scale2x = -0.5 / (sigma * sigma);
    let mut k: Vec<f32> = (0..n)
        .map(|i| {
            let x = i as f64 - (n as f64 - 1.0) * 0.5;
            (scale2x * x * x).exp() as f32
        })
        .collect();
    let sum: f64 = k.iter().map(|&v| v as f64).sum();
    let inv = (1.0 / sum) as f32;
    k.iter_mut().for_each(|v| *v *= inv);
    k
}

/// The reference's anti-aliased disk: float32 indicator of x²+y² ≤ r² on a grid of half-width
/// max(8, r), normalised, then `cv2.GaussianBlur` (3×3, or 5×5 beyond r = 8) with σ = `alias`.
pub(crate) fn disk_kernel(radius: f64, alias: f64) -> (Vec<f64>, usize) {
    let (half, ks) = if radius <= 8.0 { (8i64, 3usize) } else { (radius as i64, 5usize) };
    let n = (2 * half + 1) as usize;
    let mut d: Vec<f32> = Vec::with_capacity(n * n);
    for y in -half..=half {
        for x in -half..=half {
            d.push(if ((x * x + y * y) as f64) <= radius * radius { 1.0 } else { 0.0 });
        }
    }
    let s: f32 = d.iter().sum();
    d.iter_mut().for_each(|v| *v /= s);
    let g = cv_gaussian_kernel(ks, alias);
    let r = ks / 2;
    // Separable blur, BORDER_REFLECT_101, float32 as OpenCV does.
    let blur1 = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; n * n];
        for y in 0..n {
            for x in 0..n {
                let mut acc = 0f32;
                for (t, &gv) in g.iter().enumerate() {
                    let o = t as isize - r as isize;
                    let (yy, xx) = if horizontal { (y as isize, x as isize + o) } else { (y as isize + o, x as isize) };
                    let yy = ndimage::boundary_index(yy, n, Mode::Mirror).unwrap();
                    let xx = ndimage::boundary_index(xx, n, Mode::Mirror).unwrap();
                    acc += gv * src[yy * n + xx];
                }
                out[y * n + x] = acc;
            }
        }
        out
    };
    let k = blur1(&blur1(&d, true), false);
    (k.iter().map(|&v| v as f64).collect(), n)
}

/// (disk radius, anti-alias σ).
pub(crate) fn defocus_params(severity: usize, p: ParamSet) -> (f64, f64) {
    pick(
        p,
        severity,
        [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)],
        [(0.5, 0.6), (1.0, 0.1), (1.5, 0.1), (2.5, 0.01), (3.0, 0.1)],
        [(3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (8.0, 0.5), (10.0, 0.5)],
    )
}

/// Rows of the integer disk x² + y² ≤ r²: (dy, half-width a), row dy spans −a..=a.
pub(crate) fn disk_runs(r: f64) -> Vec<(isize, isize)> {
    let rr = r.floor() as isize;
    (-rr..=rr)
        .filter_map(|dy| {
            let mut a = -1isize;
            while (((a + 1) * (a + 1) + dy * dy) as f64) <= r * r {
                a += 1;
            }
            (a >= 0).then_some((dy, a))
        })
        .collect()
}

pub(crate) fn defocus_blur(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let (r, a) = defocus_params(severity, p);
    let u = x.map(|v| v / 255.0);
    let half = if r <= 8.0 { 8.0 } else { r.floor() };
    let ks = if r <= 8.0 { 3 } else { 5 };
    // Small images take the direct path with OpenCV's float32 kernel: byte-exact with CIFAR-10-C
    // (the factorised path agrees to ~1e-5 but flips a few floors where values sit on integers).
    let y = if x.h * x.w > 128 * 128 && r.floor() + (ks / 2) as f64 <= half {
        // The blurred disk never reaches its grid's border, so OpenCV's border rule inside the
        // kernel does not matter and kernel = Gaussian ⊛ disk exactly. Both factors are symmetric
        // and the image border is whole-sample symmetric, so filtering by the disk (running sums
        // per row) and then by the separable Gaussian equals filtering by the kernel.
        let d = disk_filter(&u, r);
        let g: Vec<f64> = cv_gaussian_kernel(ks, a).iter().map(|&v| v as f64).collect();
        ndimage::correlate_cols(&ndimage::correlate_rows(&d, &g, Mode::Mirror), &g, Mode::Mirror)
    } else {
        let (k, n) = disk_kernel(r, a);
        ndimage::correlate2d(&u, &k, n, n, Mode::Mirror)
    };
    Ok(y.map(|v| v.clamp(0.0, 1.0) * 255.0))
}

/// Mean over the integer points of the disk x² + y² ≤ r², border whole-sample symmetric:
/// one running-sum difference per disk row.
fn disk_filter(x: &FImage, r: f64) -> FImage {
    let (h, w, c) = (x.h, x.w, x.c);
    let rr = r.floor() as isize;
    let runs = disk_runs(r);
    let count: isize = runs.iter().map(|&(_, a)| 2 * a + 1).sum();
    let inv = 1.0 / count as f64;
    // Prefix sums of each symmetric-padded row: P[j] = Σ_{i<j} row[i − rr].
    let pw = w + 2 * rr as usize + 1;
    let mut pre = vec![0.0f64; h * pw * c];
    for y in 0..h {
        let row = &x.data[y * w * c..(y + 1) * w * c];
        let p = &mut pre[y * pw * c..(y + 1) * pw * c];
        for j in 1..pw {
            let sx = ndimage::boundary_index(j as isize - 1 - rr, w, Mode::Mirror).unwrap();
            for ch in 0..c {
                p[j * c + ch] = p[(j - 1) * c + ch] + row[sx * c + ch];
            }
        }
    }
    let mut out = vec![0.0f64; h * w * c];
    for y in 0..h {
        let orow = &mut out[y * w * c..(y + 1) * w * c];
        for &(dy, a) in &runs {
            let sy = ndimage::boundary_index(y as isize + dy, h, Mode::Mirror).unwrap();
            let p = &pre[sy * pw * c..(sy + 1) * pw * c];
            // Σ row[x−a ..= x+a] = P[x+a+1+rr] − P[x−a+rr]
            let hi = &p[(rr + a + 1) as usize * c..];
            let lo = &p[(rr - a) as usize * c..];
            for ((o, h1), l1) in orow.iter_mut().zip(hi).zip(lo) {
                *o += h1 - l1;
            }
        }
        orow.iter_mut().for_each(|v| *v *= inv);
    }
    FImage { h, w, c, data: out }
}

/// `np.arange(start, stop, step)` as numpy computes it (length ⌈(stop−start)/step⌉, values
/// start + i·(start+step−start)), so the float-rounding quirks of the reference's lists carry over.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil() as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// (first source index, second, weight) per kept output row or column of a zoom.
pub(crate) type ZoomAxis = Vec<(usize, usize, f64)>;

/// The reference's `clipped_zoom` geometry of one plane, rows and columns. Shared by
/// [`clipped_zoom_rows`] and the snow layer's zoom, so both interpolate with the same coordinates.
pub(crate) fn clipped_zoom_coords(h: usize, w: usize, z: f64, top_left: bool) -> (ZoomAxis, ZoomAxis) {
    let ch = (h as f64 / z).ceil() as usize;
    // The CIFAR script crops the square [top, top+ch) in both axes (it assumes H = W).
    let cw = if top_left { (w as f64 / z).ceil() as usize } else { ch };
    let top = (h - ch.min(h)) / 2;
    let left = if top_left { (w - cw.min(w)) / 2 } else { top };
    let ch = ch.min(h - top);
    let cw = cw.min(w - left);
    let oh = (ch as f64 * z).round() as usize;
    let ow = (cw as f64 * z).round() as usize;
    let (ty, tx) = if top_left { (0, 0) } else { (oh.saturating_sub(h) / 2, ow.saturating_sub(w) / 2) };
    let coords = |n: usize, m: usize, off: usize, trim: usize, len: usize| -> ZoomAxis {
        let scale = if m > 1 { (n as f64 - 1.0) / (m as f64 - 1.0) } else { 0.0 };
        (0..len.min(m.saturating_sub(trim)))
            .map(|o| {
                let cc = (o + trim) as f64 * scale;
                let i0 = (cc.floor() as usize).min(n - 1);
                let i1 = (i0 + 1).min(n - 1);
                (off + i0, off + i1, cc - i0 as f64)
            })
            .collect()
    };
    (coords(ch, oh, top, ty, h), coords(cw, ow, left, tx, w))
}

/// The reference's `clipped_zoom` of an HWC image: central crop of side ⌈n/z⌉, scipy zoom
/// order 1 (corner-aligned, output side round(side·z)), then the central (CIFAR/Tiny) or top-left
/// (imagecorruptions) h×w. Only the kept output pixels are computed. The plain reading of the
/// reference that [`clipped_zoom_add`] is tested against.
#[cfg(test)]
pub(crate) fn clipped_zoom_rows(src: &[f64], h: usize, w: usize, c: usize, z: f64, top_left: bool, mut row: impl FnMut(usize, &[f64], &[f64], f64)) {
    let (cy, cx) = clipped_zoom_coords(h, w, z, top_left);
    let mut r0 = vec![0.0; cx.len() * c];
    let mut r1 = vec![0.0; cx.len() * c];
    let lerp_row = |s: &[f64], r: &mut [f64]| {
        if c == 3 {
            for (&(x0, x1, fx), o) in cx.iter().zip(r.chunks_exact_mut(3)) {
                let (a, b) = (&s[x0 * 3..x0 * 3 + 3], &s[x1 * 3..x1 * 3 + 3]);
                o[0] = a[0] * (1.0 - fx) + b[0] * fx;
                o[1] = a[1] * (1.0 - fx) + b[1] * fx;
                o[2] = a[2] * (1.0 - fx) + b[2] * fx;
            }
        } else {
            for (x, &(x0, x1, fx)) in cx.iter().enumerate() {
                for k in 0..c {
                    r[x * c + k] = s[x0 * c + k] * (1.0 - fx) + s[x1 * c + k] * fx;
                }
            }
        }
    };
    for (y, &(y0, y1, fy)) in cy.iter().enumerate() {
        lerp_row(&src[y0 * w * c..(y0 + 1) * w * c], &mut r0);
        lerp_row(&src[y1 * w * c..(y1 + 1) * w * c], &mut r1);
        row(y, &r0, &r1, fy);
    }
}

/// [`clipped_zoom_rows`] as an image (zeros where the zoomed copy does not reach).
#[cfg(test)]
pub(crate) fn clipped_zoom(src: &[f64], h: usize, w: usize, c: usize, z: f64, top_left: bool) -> Vec<f64> {
    let mut out = vec![0.0; h * w * c];
    clipped_zoom_rows(src, h, w, c, z, top_left, |y, r0, r1, fy| {
        for ((o, a), b) in out[y * w * c..].iter_mut().zip(r0).zip(r1) {
            *o = a * (1.0 - fy) + b * fy;
        }
    });
    out
}

/// The zoom_blur accumulation: `acc += clipped_zoom(..) as f32`, without the f64 image. The same
/// f64 operations per value as [`clipped_zoom`] (no FMA, so the AVX2 build gives the same bits),
/// arranged for speed: the column lerp's source offsets and weights are tabled once per zoom,
/// each source row is column-lerped once (consecutive output rows share source rows), and RGB
/// rows lerp a whole pixel per vector from two contiguous loads instead of gathers.
pub(crate) fn clipped_zoom_add(src: &[f64], h: usize, w: usize, c: usize, z: f64, top_left: bool, acc: &mut [f32]) {
    let (cy, cx) = clipped_zoom_coords(h, w, z, top_left);
    let cols = zoom_cols(&cx, c);
    #[cfg(target_arch = "x86_64")]
    if c == 3 && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { zoom_add_avx2(src, w * c, &cy, &cols, acc) };
    }
    zoom_add_rows(src, w * c, &cy, &cols, acc, lerp_cols)
}

/// Per output pixel of a kept row: the offsets of its two source pixels in the row and their
/// weights 1 − fx, fx.
struct ZoomCols {
    c: usize,
    px: Vec<(u32, u32, f64, f64)>,
}

fn zoom_cols(cx: &ZoomAxis, c: usize) -> ZoomCols {
    ZoomCols { c, px: cx.iter().map(|&(x0, x1, fx)| ((x0 * c) as u32, (x1 * c) as u32, 1.0 - fx, fx)).collect() }
}

/// r = s[x0]·(1 − fx) + s[x1]·fx per value.
#[inline(always)]
fn lerp_cols(s: &[f64], k: &ZoomCols, r: &mut [f64]) {
    for (&(a, b, wa, wb), o) in k.px.iter().zip(r.chunks_exact_mut(k.c)) {
        let (a, b) = (&s[a as usize..a as usize + k.c], &s[b as usize..b as usize + k.c]);
        for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
            *o = a * wa + b * wb;
        }
    }
}

/// [`lerp_cols`] of RGB, one pixel per vector: four values loaded from each source pixel, the
/// same multiplications and addition, four values stored (the fourth is overwritten by the next
/// pixel, or lands in the one value of slack `r` has past the row). Pixels whose loads would
/// pass the end of `s` take the scalar code.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lerp_cols3_avx2(s: &[f64], k: &ZoomCols, r: &mut [f64]) {
    use std::arch::x86_64::*;
    assert!(k.c == 3 && r.len() > 3 * k.px.len());
    let (sp, rp) = (s.as_ptr(), r.as_mut_ptr());
    for (x, &(a, b, wa, wb)) in k.px.iter().enumerate() {
        let (a, b) = (a as usize, b as usize);
        if a.max(b) + 4 <= s.len() {
            // SAFETY: both loads lie in s (checked), the store in r (3x + 4 ≤ r.len()).
            let v = _mm256_add_pd(_mm256_mul_pd(_mm256_loadu_pd(sp.add(a)), _mm256_set1_pd(wa)), _mm256_mul_pd(_mm256_loadu_pd(sp.add(b)), _mm256_set1_pd(wb)));
            _mm256_storeu_pd(rp.add(3 * x), v);
        } else {
            for ch in 0..3 {
                r[3 * x + ch] = s[a + ch] * wa + s[b + ch] * wb;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn zoom_add_avx2(src: &[f64], rw: usize, cy: &ZoomAxis, cols: &ZoomCols, acc: &mut [f32]) {
    // SAFETY: AVX2 is present (this function's own requirement).
    zoom_add_rows(src, rw, cy, cols, acc, |s, k, r| unsafe { lerp_cols3_avx2(s, k, r) })
}

/// The row loop of [`clipped_zoom_add`]: two column-lerped source rows kept, reused while the
/// output rows still read them; then acc += (r0·(1 − fy) + r1·fy) as f32.
#[inline(always)]
fn zoom_add_rows(src: &[f64], rw: usize, cy: &ZoomAxis, cols: &ZoomCols, acc: &mut [f32], lerp: impl Fn(&[f64], &ZoomCols, &mut [f64])) {
    let n = cols.px.len() * cols.c;
    // One value of slack for the vector lerp's last store.
    let (mut ra, mut rb) = (vec![0.0; n + 1], vec![0.0; n + 1]);
    let (mut ya, mut yb) = (usize::MAX, usize::MAX);
    for (y, &(y0, y1, fy)) in cy.iter().enumerate() {
        if ya != y0 {
            if yb == y0 {
                std::mem::swap(&mut ra, &mut rb);
                std::mem::swap(&mut ya, &mut yb);
            } else {
                lerp(&src[y0 * rw..(y0 + 1) * rw], cols, &mut ra);
                ya = y0;
            }
        }
        if y1 != y0 && yb != y1 {
            lerp(&src[y1 * rw..(y1 + 1) * rw], cols, &mut rb);
            yb = y1;
        }
        let r1 = if y1 == y0 { &ra } else { &rb };
        let gy = 1.0 - fy;
        for ((o, &a), &b) in acc[y * rw..y * rw + n].iter_mut().zip(&ra[..n]).zip(&r1[..n]) {
            *o += (a * gy + b * fy) as f32;
        }
    }
}

pub(crate) fn zoom_factors(severity: usize, p: ParamSet) -> Vec<f64> {
    let (stop, step) = match p {
        ParamSet::Cifar10 | ParamSet::TinyImageNet => [(1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)][severity - 1],
        ParamSet::ImageNet => [(1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)][severity - 1],
    };
    np_arange(1.0, stop, step)
}

pub(crate) fn zoom_blur(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    // float32 throughout, as the reference (`(x/255).astype(np.float32)`).
    let xf: Vec<f32> = x.data.iter().map(|&v| (v / 255.0) as f32).collect();
    let out = zoom_blur_f32(&xf, x.h, x.w, x.c, severity, p)?;
    Ok(FImage { h: x.h, w: x.w, c: x.c, data: out.into_iter().map(|v| v as f64).collect() })
}

/// zoom_blur of uint8 input: the same f32 values as the float path, cast.
pub(crate) fn zoom_blur_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet) -> Result<Vec<u8>> {
    let lut: Vec<f32> = (0..256).map(|v| (v as f64 / 255.0) as f32).collect();
    let xf: Vec<f32> = x.iter().map(|&v| lut[v as usize]).collect();
    Ok(zoom_blur_f32(&xf, h, w, c, severity, p)?.into_iter().map(crate::cast_u8_f32).collect())
}

/// The reference's zoom blur on x/255 in f32, returned on the 0..255 scale (before the cast).
/// Each zoomed copy is computed in f64 from the f32 values and stored as f32, as scipy does.
fn zoom_blur_f32(xf: &[f32], h: usize, w: usize, c: usize, severity: usize, p: ParamSet) -> Result<Vec<f32>> {
    let zs = zoom_factors(severity, p);
    if p != ParamSet::ImageNet && h != w {
        return Err(Error::Msg(format!("zoom_blur with {p:?} parameters needs a square image, got {h}x{w} (use --params imagenet)")));
    }
    let xd: Vec<f64> = xf.iter().map(|&v| v as f64).collect();
    let mut out = vec![0f32; h * w * c];
    for &z in &zs {
        clipped_zoom_add(&xd, h, w, c, z, p == ParamSet::ImageNet, &mut out);
    }
    let n1 = (zs.len() + 1) as f32;
    Ok(xf.iter().zip(&out).map(|(&a, &o)| ((a + o) / n1).clamp(0.0, 1.0) * 255.0).collect())
}

pub(crate) fn motion_params(severity: usize, p: ParamSet) -> (usize, f64) {
    pick(
        p,
        severity,
        [(6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)],
        [(10, 1.0), (10, 1.5), (10, 2.0), (10, 2.5), (12, 3.0)],
        [(10, 3.0), (15, 5.0), (15, 8.0), (15, 12.0), (20, 15.0)],
    )
}

/// ImageMagick's `-motion-blur radius x sigma + angle`, modelled as the `imagecorruptions`
/// re-implementation does (one-sided Gaussian kernel of width 2R+1 along the angle, edge
/// replicate); floor of this float equals ImageMagick 6 Q16 output for 99.7% of values (PARAMS.md).
/// Values keep the input's scale. Angle in degrees, y pointing down as in the image.
pub fn motion_blur_kernel(x: &FImage, radius: usize, sigma: f64, angle: f64) -> FImage {
    let (h, w, c) = (x.h, x.w, x.c);
    let taps = motion_taps(radius, sigma, angle, h, w);
    FImage { h, w, c, data: crate::fast::motion_f64(&x.data, h, w, c, &taps) }
}

/// The taps of [`motion_blur_kernel`]: (weight, dy, dx) in order; pixel p reads
/// p + (ceil(i·sin − 0.5), ceil(i·cos − 0.5)), clamped to the image.
pub(crate) fn motion_taps(radius: usize, sigma: f64, angle: f64, h: usize, w: usize) -> Vec<(f64, isize, isize)> {
    let width = radius * 2 + 1;
    let mut k: Vec<f64> = (0..width)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp() / ((2.0 * std::f64::consts::PI).sqrt() * sigma))
        .collect();
    let z: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= z);
    let a = angle.to_radians();
    let (py, px) = (width as f64 * a.sin(), width as f64 * a.cos());
    let hyp = py.hypot(px);
    let mut taps = Vec::new();
    for (i, &kv) in k.iter().enumerate() {
        let dy = ((i as f64 * py) / hyp - 0.5).ceil() as isize;
        let dx = ((i as f64 * px) / hyp - 0.5).ceil() as isize;
        if dy.unsigned_abs() >= h || dx.unsigned_abs() >= w {
            break;
        }
        taps.push((kv, dy, dx));
    }
    taps
}

/// out += kv · x shifted by (dy, dx) with edge replication; `get` reads a value. The plain
/// definition, kept as the reference the padded-row implementation is tested against.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn motion_tap<T: Copy, F: Copy + std::ops::Add<Output = F> + std::ops::Mul<Output = F>>(
    x: &[T],
    h: usize,
    w: usize,
    c: usize,
    kv: F,
    dy: isize,
    dx: isize,
    out: &mut [F],
    get: impl Fn(T) -> F,
) {
    // Columns [x0, x1) read in range; those left of x0 read column 0, right of x1 column w−1.
    let x0 = (-dx).max(0) as usize;
    let x1 = (w as isize - dx).min(w as isize) as usize;
    for y in 0..h {
        let sy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
        let srow = &x[sy * w * c..(sy + 1) * w * c];
        let orow = &mut out[y * w * c..(y + 1) * w * c];
        let s0 = (x0 as isize + dx) as usize;
        for (o, &s) in orow[x0 * c..x1 * c].iter_mut().zip(&srow[s0 * c..(s0 + x1 - x0) * c]) {
            *o = *o + kv * get(s);
        }
        for xx in 0..x0 {
            for ch in 0..c {
                orow[xx * c + ch] = orow[xx * c + ch] + kv * get(srow[ch]);
            }
        }
        for xx in x1..w {
            for ch in 0..c {
                orow[xx * c + ch] = orow[xx * c + ch] + kv * get(srow[(w - 1) * c + ch]);
            }
        }
    }
}

/// motion_blur at a given angle (the corruption's only randomness), for reproducing fixtures.
pub fn motion_blur_at(x: &FImage, severity: usize, p: ParamSet, angle: f64) -> Result<FImage> {
    if !(1..=5).contains(&severity) {
        return Err(Error::Severity(severity));
    }
    let (r, s) = motion_params(severity, p);
    Ok(motion_blur_kernel(x, r, s, angle).map(|v| v.clamp(0.0, 255.0)))
}

pub(crate) fn motion_blur(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let angle = rng.gen_range(-45.0..45.0);
    motion_blur_at(x, severity, p, angle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The zoom_blur accumulation (row reuse, tabled columns, AVX2 gathers where present and the
    /// portable loop) adds exactly the f32 casts of [`clipped_zoom`]'s values.
    #[test]
    fn zoom_add_matches_clipped_zoom() {
        for (h, w, c) in [(32, 32, 3), (28, 28, 1), (37, 50, 3), (224, 224, 3), (5, 7, 3)] {
            let x: Vec<f64> = (0..h * w * c).map(|i| ((i * 7919) % 256) as f32 as f64 / 255.0).collect();
            for z in [1.0, 1.01, 1.06, 1.13, 1.25, 1.3] {
                for top_left in [false, true] {
                    if !top_left && h != w {
                        continue;
                    }
                    let want: Vec<f32> = clipped_zoom(&x, h, w, c, z, top_left).iter().map(|&v| v as f32).collect();
                    let mut got = vec![0f32; h * w * c];
                    clipped_zoom_add(&x, h, w, c, z, top_left, &mut got);
                    assert!(got == want, "{h}x{w}x{c} z {z} {top_left}");
                    let (cy, cx) = clipped_zoom_coords(h, w, z, top_left);
                    let cols = zoom_cols(&cx, c);
                    let mut port = vec![0f32; h * w * c];
                    zoom_add_rows(&x, w * c, &cy, &cols, &mut port, lerp_cols);
                    assert!(port == want, "portable {h}x{w}x{c} z {z} {top_left}");
                }
            }
        }
    }

    /// The padded-row motion blur sums exactly what the edge-clamped definition sums.
    #[test]
    fn padded_motion_matches_definition() {
        for (h, w, c) in [(40, 33, 3), (9, 50, 1), (64, 64, 3)] {
            let x: Vec<f64> = (0..h * w * c).map(|i| ((i * 7919) % 256) as f64).collect();
            for angle in [-44.0, -10.0, 0.0, 30.0, -100.0] {
                let taps = motion_taps(15, 5.0, angle, h, w);
                let mut want = vec![0.0; h * w * c];
                for &(kv, dy, dx) in &taps {
                    motion_tap(&x, h, w, c, kv, dy, dx, &mut want, |v| v);
                }
                assert!(crate::fast::motion_f64(&x, h, w, c, &taps) == want, "{h}x{w}x{c} angle {angle}");
            }
        }
    }

    /// The factorised defocus (running-sum disk, then separable Gaussian) equals the direct
    /// correlation with the OpenCV kernel up to float32 kernel rounding.
    #[test]
    fn factorised_defocus_matches_direct_kernel() {
        let (h, w) = (150, 131);
        let data: Vec<f64> = (0..h * w * 3).map(|i| ((i * 7919) % 256) as f64 / 255.0).collect();
        let u = FImage { h, w, c: 3, data };
        for (r, a) in [(3.0, 0.1), (4.0, 0.5), (6.0, 0.5), (1.5, 0.1), (0.5, 0.6)] {
            let (k, n) = disk_kernel(r, a);
            let direct = ndimage::correlate2d(&u, &k, n, n, Mode::Mirror);
            let g: Vec<f64> = cv_gaussian_kernel(3, a).iter().map(|&v| v as f64).collect();
            let fast = ndimage::correlate_cols(&ndimage::correlate_rows(&disk_filter(&u, r), &g, Mode::Mirror), &g, Mode::Mirror);
            let md = direct.data.iter().zip(&fast.data).map(|(p, q)| (p - q).abs()).fold(0.0, f64::max);
            assert!(md < 1e-5, "r={r}: max diff {md}");
        }
    }
}
