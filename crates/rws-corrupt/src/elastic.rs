//! elastic_transform. CIFAR-10 and Tiny-ImageNet parameters follow make_cifar_c.py /
//! make_tinyimagenet_c.py (random affine + smoothed random displacement field); ImageNet
//! parameters follow imagecorruptions (displacement field only, σ and amplitude scaled by the
//! image size). The same displacement applies to every channel, so grey images work unchanged.
//!
//! Fields, coordinates and interpolation are f32 (without FMA, so the AVX2 and portable builds
//! agree), shared by the float and uint8 paths, which differ only in the pixel type they read
//! and write: the same bytes.

use crate::glass::gauss_f32;
use crate::ndimage::Mode;
use crate::{Error, FImage, ParamSet, Result, Rng};
use crate::noise::{Fast, Fast4};
use rand::Rng as _;

/// scipy `map_coordinates(order=1, mode='reflect')` along one axis: reflect the coordinate into
/// [−0.5, n−0.5] (half-sample symmetric), then the two neighbouring indices, clamped.
#[inline(always)]
fn lin_index(c: f32, n: usize) -> (usize, usize, f32) {
    let nf = n as f32;
    let t = if c >= -0.5 && c <= nf - 0.5 {
        c
    } else {
        let p = 2.0 * nf;
        let mut t = (c + 0.5).rem_euclid(p);
        if t >= nf {
            t = p - t;
        }
        t - 0.5
    };
    if t < 0.0 {
        return (0, 0, 0.0);
    }
    let i = t as usize;
    let fr = t - i as f32;
    (i.min(n - 1), (i + 1).min(n - 1), fr)
}

/// floor without a libm call (the default x86-64 target has no SSE4.1 `roundsd`).
#[inline(always)]
fn ffloor(v: f64) -> f64 {
    let i = v as i64 as f64;
    if i > v {
        i - 1.0
    } else {
        i
    }
}

/// OpenCV BORDER_REFLECT_101 index (`c b | a b c`).
#[inline]
fn reflect101(i: isize, n: usize) -> usize {
    if i >= 0 && (i as usize) < n {
        return i as usize;
    }
    if n == 1 {
        return 0;
    }
    let n = n as isize;
    let p = 2 * n - 2;
    let mut k = i.rem_euclid(p);
    if k >= n {
        k = p - k;
    }
    k as usize
}

/// cv2.getAffineTransform: the 2×3 matrix mapping the three `src` points onto `dst`.
fn affine_from_points(src: [[f64; 2]; 3], dst: [[f64; 2]; 3]) -> [[f64; 3]; 2] {
    let [[x0, y0], [x1, y1], [x2, y2]] = src;
    let det = x0 * (y1 - y2) - y0 * (x1 - x2) + (x1 * y2 - x2 * y1);
    let mut m = [[0.0; 3]; 2];
    for r in 0..2 {
        let (u0, u1, u2) = (dst[0][r], dst[1][r], dst[2][r]);
        // Cramer's rule for [x y 1]·(a b c)ᵀ = u.
        m[r][0] = (u0 * (y1 - y2) - y0 * (u1 - u2) + (u1 * y2 - u2 * y1)) / det;
        m[r][1] = (x0 * (u1 - u2) - u0 * (x1 - x2) + (x1 * u2 - x2 * u1)) / det;
        m[r][2] = (x0 * (y1 * u2 - y2 * u1) - y0 * (x1 * u2 - x2 * u1) + u0 * (x1 * y2 - x2 * y1)) / det;
    }
    m
}

/// A smoothed uniform displacement field: gaussian(U(−amp, amp), σ, mode reflect, truncate 3)·α.
/// The uniforms come from four xoshiro streams side by side, two 24-bit uniforms (exact in f32)
/// per 64-bit draw; the filter's final map applies α, the same product as a separate pass.
fn field(h: usize, w: usize, amp: f64, sy: f64, sx: f64, alpha: f64, rng: &mut Fast) -> Vec<f32> {
    let mut f4 = Fast4::from_fast(rng);
    let mut bits = vec![0u64; (h * w).div_ceil(8) * 4];
    f4.fill(&mut bits);
    let (lo, span) = (-amp as f32, (2.0 * amp) as f32);
    let unit = |u: u64| lo + span * (u as f32 * (1.0 / (1u32 << 24) as f32));
    let mut f = vec![0f32; h * w];
    let mut pairs = f.chunks_exact_mut(2);
    for (q, &b) in (&mut pairs).zip(&bits) {
        q[0] = unit(b >> 40);
        q[1] = unit((b >> 8) & 0xFF_FFFF);
    }
    if let [v] = pairs.into_remainder() {
        *v = unit(bits[h * w / 2] >> 40);
    }
    let alpha = alpha as f32;
    gauss_f32(&f, h, w, sy, sx, 3.0, Mode::Reflect, |v| v * alpha)
}

/// The call's random draws: the CIFAR/Tiny affine (None for ImageNet) and the two displacement
/// fields, in the reference's order.
type Draws = (Option<[[f64; 3]; 2]>, Vec<f32>, Vec<f32>);

/// CIFAR/Tiny parameters are multiples of the reference size (32 / 64) and are used unchanged at
/// other sizes (as the reference scripts would); the affine's control points follow the real size.
/// Images under 3×3 are refused (the affine's control square would be empty).
fn draw(h: usize, w: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Draws> {
    if h < 3 || w < 3 {
        return Err(Error::TooSmall { corruption: "elastic_transform", h, w, why: "needs at least 3x3 pixels".into() });
    }
    Ok(match p {
        ParamSet::Cifar10 | ParamSet::TinyImageNet => {
            let (s, t) = if p == ParamSet::Cifar10 {
                (32.0, [(0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)])
            } else {
                (64.0, [(0.0, 0.0, 0.08), (0.05, 0.3, 0.06), (0.1, 0.08, 0.06), (0.1, 0.03, 0.03), (0.16, 0.03, 0.02)])
            };
            let (alpha, sigma, a) = (t[severity - 1].0 * s, t[severity - 1].1 * s, t[severity - 1].2 * s);
            // The reference's points: centre_square = (H//2, W//2), square_size = min(H, W)//3,
            // used by OpenCV as (x, y) pairs.
            let (c0, c1) = ((h / 2) as f64, (w / 2) as f64);
            let ss = (h.min(w) / 3) as f64;
            let p1 = [[c0 + ss, c1 + ss], [c0 + ss, c1 - ss], [c0 - ss, c1 - ss]];
            let mut p2 = p1;
            for pt in p2.iter_mut() {
                for v in pt.iter_mut() {
                    *v += rng.gen_range(-a..a);
                }
            }
            let m = affine_from_points(p1, p2);
            let mut fast = Fast::from_rng(rng);
            let dx = field(h, w, 1.0, sigma, sigma, alpha, &mut fast);
            let dy = field(h, w, 1.0, sigma, sigma, alpha, &mut fast);
            (Some(m), dx, dy)
        }
        ParamSet::ImageNet => {
            let alpha = 250.0 * [0.05, 0.065, 0.085, 0.1, 0.12][severity - 1];
            let (sy, sx) = (0.01 * h as f64, 0.01 * w as f64);
            let amp = 0.005 * h as f64;
            let mut fast = Fast::from_rng(rng);
            let dx = field(h, w, amp, sy, sx, alpha, &mut fast);
            let dy = field(h, w, amp, sy, sx, alpha, &mut fast);
            (None, dx, dy)
        }
    })
}

pub(crate) fn elastic_transform(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let (h, w, c) = (x.h, x.w, x.c);
    if h * w * c > u32::MAX as usize {
        return Err(Error::Msg(format!("elastic_transform: image {h}x{w}x{c} is too large (over 2^32 values)")));
    }
    let (m, dx, dy) = draw(h, w, severity, p, rng)?;
    // Interpolation is linear, so it runs on the 0..255 scale directly.
    let fin = |v: f32| v.clamp(0.0, 255.0) as f64;
    let data = match m {
        Some(m) => remap(&warp_affine(&x.data, h, w, c, m, |v: f64| v as f32), h, w, c, &dx, &dy, |v| v, fin),
        None => remap(&x.data, h, w, c, &dx, &dy, |v: f64| v as f32, fin),
    };
    Ok(FImage { h, w, c, data })
}

/// uint8 → uint8 elastic_transform: the float path's draws and arithmetic, from u8 pixels (the
/// same bytes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn elastic_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Vec<u8>> {
    if h * w * c > u32::MAX as usize {
        return Err(Error::Msg(format!("elastic_transform: image {h}x{w}x{c} is too large (over 2^32 values)")));
    }
    let (m, dx, dy) = draw(h, w, severity, p, rng)?;
    Ok(match m {
        Some(m) => affine_remap_u8(x, h, w, c, m, &dx, &dy),
        None => remap_u8(x, h, w, c, &dx, &dy),
    })
}

/// scipy `map_coordinates(order=1, mode='reflect')` of every channel at (row + dy, col + dx),
/// each value then mapped by `fin`.
#[allow(clippy::too_many_arguments)]
fn remap<T: Copy, O: Copy + Default>(img: &[T], h: usize, w: usize, c: usize, dx: &[f32], dy: &[f32], get: impl Fn(T) -> f32, fin: impl Fn(f32) -> O) -> Vec<O> {
    resample(img, h, w, c, &ElasticTap { dx, dy, h, w }, get, fin, |_, _, _, _| 0)
}

/// [`remap`] of u8 pixels to u8; RGB images take an AVX2 gather kernel where present (the same
/// operations, no FMA: the same bytes).
fn remap_u8(img: &[u8], h: usize, w: usize, c: usize, dx: &[f32], dy: &[f32]) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if c == 3 && std::is_x86_feature_detected!("avx2") {
        let kern = |offs: [&[u32]; 4], fxs: &[f32], fys: &[f32], orow: &mut [u8]| {
            // SAFETY: the CPU supports AVX2 (checked above); the offsets are pixel starts inside `img`.
            unsafe { bilinear_rgb8_avx2(img, offs, fxs, fys, orow) }
        };
        return resample(img, h, w, c, &ElasticTap { dx, dy, h, w }, |v: u8| v as f32, crate::cast_u8_f32, kern);
    }
    remap(img, h, w, c, dx, dy, |v: u8| v as f32, crate::cast_u8_f32)
}

/// Eight RGB pixels at a time of [`resample_impl`]'s interpolation, u8 to u8: one 4-byte gather
/// per tap brings all three channels (blocks that would read past the image, i.e. those reading
/// its last pixel, are left to the caller); the results are packed back to 24 bytes. Returns
/// how many leading pixels it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn bilinear_rgb8_avx2(img: &[u8], offs: [&[u32]; 4], fxs: &[f32], fys: &[f32], out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let w = fxs.len();
    assert!(offs.iter().all(|o| o.len() == w) && fys.len() == w && out.len() == 3 * w && img.len() >= 3);
    let last = _mm256_set1_epi32((img.len() - 3) as i32);
    let (zero, top, one, byte) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0), _mm256_set1_ps(1.0), _mm256_set1_epi32(0xFF));
    // Per 128-bit half: the low three bytes of each of its four pixels, in order.
    let pack = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
    let mut x = 0;
    while x + 8 <= w {
        // SAFETY (loads): x + 8 ≤ w and every slice holds w values.
        let o: [__m256i; 4] = std::array::from_fn(|k| _mm256_loadu_si256(offs[k].as_ptr().add(x) as *const __m256i));
        let at_end = o.iter().fold(_mm256_setzero_si256(), |a, &v| _mm256_or_si256(a, _mm256_cmpeq_epi32(v, last)));
        if _mm256_movemask_epi8(at_end) != 0 {
            break;
        }
        // SAFETY: each offset is a pixel start before the last pixel, so its 4 bytes lie inside `img`.
        let g: [__m256i; 4] = std::array::from_fn(|k| _mm256_i32gather_epi32::<1>(img.as_ptr() as *const i32, o[k]));
        let (fx, fy) = (_mm256_loadu_ps(fxs.as_ptr().add(x)), _mm256_loadu_ps(fys.as_ptr().add(x)));
        let (gx, gy) = (_mm256_sub_ps(one, fx), _mm256_sub_ps(one, fy));
        let mut px = _mm256_setzero_si256();
        for ch in 0..3 {
            let p: [__m256; 4] = std::array::from_fn(|k| _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srlv_epi32(g[k], _mm256_set1_epi32(8 * ch)), byte)));
            let t = _mm256_add_ps(_mm256_mul_ps(gx, p[0]), _mm256_mul_ps(fx, p[1]));
            let b = _mm256_add_ps(_mm256_mul_ps(gx, p[2]), _mm256_mul_ps(fx, p[3]));
            let v = _mm256_add_ps(_mm256_mul_ps(gy, t), _mm256_mul_ps(fy, b));
            let q = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(v, zero), top));
            px = _mm256_or_si256(px, _mm256_sllv_epi32(q, _mm256_set1_epi32(8 * ch)));
        }
        let b = _mm256_shuffle_epi8(px, pack);
        // SAFETY (stores): bytes 3x .. 3x + 24 ≤ 3w of the row; the first store's last 4 bytes
        // are rewritten by the second half.
        let dst = out.as_mut_ptr().add(3 * x);
        _mm_storeu_si128(dst as *mut __m128i, _mm256_castsi256_si128(b));
        let hi = _mm256_extracti128_si256(b, 1);
        _mm_storel_epi64(dst.add(12) as *mut __m128i, hi);
        std::ptr::write_unaligned(dst.add(20) as *mut i32, _mm_extract_epi32(hi, 2));
        x += 8;
    }
    x
}

/// Where each output pixel reads: the taps of one resampling (inlined into its loop).
trait Tap {
    /// ([y0, y1, x0, x1], fx, fy) of output pixel (r, col).
    fn at(&self, r: usize, col: usize) -> ([usize; 4], f32, f32);

    /// [`Tap::at`] for every pixel of row r, planar: `ids` = [y0s, y1s, x0s, x1s] (u32: the
    /// image has under 2³² values).
    #[inline(always)]
    fn row(&self, r: usize, ids: &mut [Vec<u32>; 4], fxs: &mut [f32], fys: &mut [f32]) {
        for col in 0..fxs.len() {
            let (t, ax, ay) = self.at(r, col);
            for (v, &i) in ids.iter_mut().zip(&t) {
                v[col] = i as u32;
            }
            fxs[col] = ax;
            fys[col] = ay;
        }
    }
}

/// [`lin_index`] of c = base + d for a whole row, branch-free where c lies in [−0.5, n − 0.5]
/// (the same arithmetic: truncation of a non-negative t, then the two clamped indices), so the
/// loop vectorises; the rare coordinates outside go through [`lin_index`] itself.
#[inline(always)]
fn lin_row(base: impl Fn(usize) -> f32, d: &[f32], n: usize, lo: &mut [u32], hi: &mut [u32], frs: &mut [f32]) {
    let nf = n as f32;
    let top = (n - 1) as u32;
    let mut outside = false;
    for (k, (((&dv, l), u), f)) in d.iter().zip(lo.iter_mut()).zip(hi.iter_mut()).zip(frs.iter_mut()).enumerate() {
        let cc = base(k) + dv;
        outside |= !(cc >= -0.5 && cc <= nf - 0.5);
        // Clamped into range only so the conversion is sound; such values are redone below.
        let t = cc.max(0.0).min(nf);
        // SAFETY: 0 ≤ t ≤ n < 2³², a valid u32 after truncation.
        let i: u32 = unsafe { t.to_int_unchecked() };
        *f = if cc < 0.0 { 0.0 } else { t - i as f32 };
        *l = i.min(top);
        *u = if cc < 0.0 { 0 } else { (i + 1).min(top) };
    }
    if outside {
        for (k, &dv) in d.iter().enumerate() {
            let cc = base(k) + dv;
            if !(cc >= -0.5 && cc <= nf - 0.5) {
                let (a, b, fr) = lin_index(cc, n);
                (lo[k], hi[k], frs[k]) = (a as u32, b as u32, fr);
            }
        }
    }
}

/// map_coordinates at (row + dy, col + dx), reflect mode.
struct ElasticTap<'a> {
    dx: &'a [f32],
    dy: &'a [f32],
    h: usize,
    w: usize,
}

impl Tap for ElasticTap<'_> {
    #[inline(always)]
    fn at(&self, r: usize, col: usize) -> ([usize; 4], f32, f32) {
        let k = r * self.w + col;
        let (y0, y1, fy) = lin_index(r as f32 + self.dy[k], self.h);
        let (x0, x1, fx) = lin_index(col as f32 + self.dx[k], self.w);
        ([y0, y1, x0, x1], fx, fy)
    }

    #[inline(always)]
    fn row(&self, r: usize, ids: &mut [Vec<u32>; 4], fxs: &mut [f32], fys: &mut [f32]) {
        let w = self.w;
        let [y0, y1, x0, x1] = ids;
        lin_row(|_| r as f32, &self.dy[r * w..(r + 1) * w], self.h, y0, y1, fys);
        lin_row(|k| k as f32, &self.dx[r * w..(r + 1) * w], w, x0, x1, fxs);
    }
}

/// cv2.warpAffine's source point M⁻¹·(x, y) (f64), BORDER_REFLECT_101; the fractions in f32.
struct AffineTap {
    inv: [f64; 6],
    h: usize,
    w: usize,
}

impl Tap for AffineTap {
    #[inline(always)]
    fn at(&self, y: usize, x: usize) -> ([usize; 4], f32, f32) {
        let [ia, ib, itx, id, ie, ity] = self.inv;
        let sx = ia * x as f64 + ib * y as f64 + itx;
        let sy = id * x as f64 + ie * y as f64 + ity;
        let (fx, fy) = (ffloor(sx), ffloor(sy));
        let (ax, ay) = ((sx - fx) as f32, (sy - fy) as f32);
        let (h, w) = (self.h, self.w);
        ([reflect101(fy as isize, h), reflect101(fy as isize + 1, h), reflect101(fx as isize, w), reflect101(fx as isize + 1, w)], ax, ay)
    }

    /// [`AffineTap::at`] for a whole row, branch-free where both taps lie inside the image on
    /// both axes (then the reflection is the identity and the floor fits an i32), so the loop
    /// vectorises; the rare pixels outside go through [`AffineTap::at`] itself.
    #[inline(always)]
    fn row(&self, r: usize, ids: &mut [Vec<u32>; 4], fxs: &mut [f32], fys: &mut [f32]) {
        let [ia, ib, itx, id, ie, ity] = self.inv;
        let (h, w) = (self.h, self.w);
        let (hm, wm) = ((h - 1) as f64, (w - 1) as f64);
        let n = fxs.len();
        // Slices of exactly n values: no bounds checks in the loop, which then vectorises.
        let [y0s, y1s, x0s, x1s] = ids.each_mut().map(|v| &mut v[..n]);
        let fys = &mut fys[..n];
        // The sums in `at`'s order: (a·x + b·y) + t.
        let (by, ey) = (ib * r as f64, ie * r as f64);
        let floor = |v: f64, top: f64| -> f64 {
            // Clamped only so the conversion is sound; values outside are redone below.
            let t = v.max(-1.0).min(top);
            // SAFETY: −1 ≤ t ≤ top < 2³¹.
            let i = unsafe { t.to_int_unchecked::<i32>() } as f64;
            if i > t {
                i - 1.0
            } else {
                i
            }
        };
        let mut outside = false;
        for x in 0..n {
            let sx = ia * x as f64 + by + itx;
            let sy = id * x as f64 + ey + ity;
            let (fx, fy) = (floor(sx, wm), floor(sy, hm));
            outside |= !(sx >= 0.0 && sx < wm && sy >= 0.0 && sy < hm);
            fxs[x] = (sx - fx) as f32;
            fys[x] = (sy - fy) as f32;
            // SAFETY: fx, fy ∈ [−1, top] (clamped in `floor`), so max(0) is a valid u32.
            let (cx, cy): (u32, u32) = unsafe { (fx.max(0.0).to_int_unchecked(), fy.max(0.0).to_int_unchecked()) };
            x0s[x] = cx;
            x1s[x] = cx + 1;
            y0s[x] = cy;
            y1s[x] = cy + 1;
        }
        if outside {
            for x in 0..n {
                let sx = ia * x as f64 + by + itx;
                let sy = id * x as f64 + ey + ity;
                if !(sx >= 0.0 && sx < wm && sy >= 0.0 && sy < hm) {
                    let (t, ax, ay) = self.at(r, x);
                    (y0s[x], y1s[x], x0s[x], x1s[x]) = (t[0] as u32, t[1] as u32, t[2] as u32, t[3] as u32);
                    (fxs[x], fys[x]) = (ax, ay);
                }
            }
        }
    }
}

/// cv2.warpAffine(bilinear, BORDER_REFLECT_101): dst(x, y) = src(M⁻¹·(x, y)), from any pixel
/// type, unrounded.
fn warp_affine<T: Copy>(img: &[T], h: usize, w: usize, c: usize, m: [[f64; 3]; 2], get: impl Fn(T) -> f32) -> Vec<f32> {
    resample(img, h, w, c, &affine_tap(h, w, m), get, |v| v, |_, _, _, _| 0)
}

/// The taps of cv2.warpAffine with matrix `m` (its inverse maps output to source points).
fn affine_tap(h: usize, w: usize, m: [[f64; 3]; 2]) -> AffineTap {
    let [[a, b, tx], [d, e, ty]] = m;
    let det = a * e - b * d;
    let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
    let (itx, ity) = (-(ia * tx + ib * ty), -(id * tx + ie * ty));
    AffineTap { inv: [ia, ib, itx, id, ie, ity], h, w }
}

/// The CIFAR/Tiny u8 path: [`warp_affine`], then [`remap`] of the f32 result to u8; for RGB
/// images with AVX2, both through per-pixel kernels that hold a pixel's three channels in one
/// vector (the same operations per channel, no FMA: the same bytes).
#[allow(clippy::too_many_arguments)]
fn affine_remap_u8(x: &[u8], h: usize, w: usize, c: usize, m: [[f64; 3]; 2], dx: &[f32], dy: &[f32]) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if c == 3 && std::is_x86_feature_detected!("avx2") {
        // SAFETY (both kernels): the CPU supports AVX2 (checked just above); the offsets are
        // pixel starts inside the image.
        let warped = resample(x, h, w, c, &affine_tap(h, w, m), |v: u8| v as f32, |v| v, |o: [&[u32]; 4], fx: &[f32], fy: &[f32], row: &mut [f32]| unsafe { rgb_px_avx2(x, o, fx, fy, row) });
        let kern = |o: [&[u32]; 4], fx: &[f32], fy: &[f32], row: &mut [u8]| unsafe { rgb_px_avx2(&warped, o, fx, fy, row) };
        return resample(&warped, h, w, c, &ElasticTap { dx, dy, h, w }, |v| v, crate::cast_u8_f32, kern);
    }
    remap(&warp_affine(x, h, w, c, m, |v: u8| v as f32), h, w, c, dx, dy, |v| v, crate::cast_u8_f32)
}

/// RGB pixel types of [`rgb_px_avx2`]: the pixel at a flat offset as four f32 lanes (the
/// fourth is the next value, unused), and a result written back as three values.
#[cfg(target_arch = "x86_64")]
trait RgbPx: Sized {
    /// # Safety
    /// `p` points at four readable values; the CPU has AVX2.
    unsafe fn load(p: *const Self) -> std::arch::x86_64::__m128;
    /// # Safety
    /// `p` points at three writable values; the CPU has AVX2.
    unsafe fn store(p: *mut Self, v: std::arch::x86_64::__m128);
}

#[cfg(target_arch = "x86_64")]
impl RgbPx for u8 {
    #[inline(always)]
    unsafe fn load(p: *const u8) -> std::arch::x86_64::__m128 {
        use std::arch::x86_64::*;
        _mm_cvtepi32_ps(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(std::ptr::read_unaligned(p as *const i32))))
    }
    /// [`crate::cast_u8_f32`] per lane.
    #[inline(always)]
    unsafe fn store(p: *mut u8, v: std::arch::x86_64::__m128) {
        use std::arch::x86_64::*;
        let q = _mm_cvttps_epi32(_mm_min_ps(_mm_max_ps(v, _mm_setzero_ps()), _mm_set1_ps(255.0)));
        let b = _mm_cvtsi128_si32(_mm_packus_epi16(_mm_packus_epi32(q, q), _mm_setzero_si128())).to_le_bytes();
        std::ptr::copy_nonoverlapping(b.as_ptr(), p, 3);
    }
}

#[cfg(target_arch = "x86_64")]
impl RgbPx for f32 {
    #[inline(always)]
    unsafe fn load(p: *const f32) -> std::arch::x86_64::__m128 {
        std::arch::x86_64::_mm_loadu_ps(p)
    }
    /// Unrounded (the warp's intermediate).
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: std::arch::x86_64::__m128) {
        let mut a = [0f32; 4];
        std::arch::x86_64::_mm_storeu_ps(a.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(a.as_ptr(), p, 3);
    }
}

/// [`resample_impl`]'s interpolation of RGB pixels one at a time, the three channels side by
/// side in one vector; stops before a pixel that reads the image's last pixel (its 4-lane load
/// would run past the end) and returns how many leading pixels it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rgb_px_avx2<S: RgbPx, D: RgbPx>(img: &[S], offs: [&[u32]; 4], fxs: &[f32], fys: &[f32], out: &mut [D]) -> usize {
    use std::arch::x86_64::*;
    let w = fxs.len();
    assert!(offs.iter().all(|o| o.len() == w) && fys.len() == w && out.len() == 3 * w && img.len() >= 3);
    let last = (img.len() - 3) as u32;
    let one = _mm_set1_ps(1.0);
    for x in 0..w {
        let o = [offs[0][x], offs[1][x], offs[2][x], offs[3][x]];
        if o.contains(&last) {
            return x;
        }
        // SAFETY: an offset before the last pixel's leaves at least 6 values to read 4 of.
        let p = o.map(|k| S::load(img.as_ptr().add(k as usize)));
        let (fx, fy) = (_mm_set1_ps(fxs[x]), _mm_set1_ps(fys[x]));
        let (gx, gy) = (_mm_sub_ps(one, fx), _mm_sub_ps(one, fy));
        let t = _mm_add_ps(_mm_mul_ps(gx, p[0]), _mm_mul_ps(fx, p[1]));
        let b = _mm_add_ps(_mm_mul_ps(gx, p[2]), _mm_mul_ps(fx, p[3]));
        // SAFETY: pixel x's three values lie inside the row.
        D::store(out.as_mut_ptr().add(3 * x), _mm_add_ps(_mm_mul_ps(gy, t), _mm_mul_ps(fy, b)));
    }
    w
}

/// Bilinear resampling: output pixel (r, col) = (1−fy)·((1−fx)·p(y0,x0) + fx·p(y0,x1)) +
/// fy·((1−fx)·p(y1,x0) + fx·p(y1,x1)) per channel, with ([y0, y1, x0, x1], fx,
/// fy) inside the grid (from `tap`); each value mapped by `fin`. f32, AVX2 where present (no FMA:
/// the same bits).
#[allow(clippy::too_many_arguments)]
fn resample<T: Copy, O: Copy + Default>(img: &[T], h: usize, w: usize, c: usize, tap: &impl Tap, get: impl Fn(T) -> f32, fin: impl Fn(f32) -> O, kern: impl RowKernel<O>) -> Vec<O> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { resample_avx2(img, h, w, c, tap, get, fin, kern) };
    }
    resample_impl(img, h, w, c, tap, get, fin, kern)
}

/// A kernel that interpolates the leading pixels of an output row itself: given the rows'
/// flat tap offsets [p00, p01, p10, p11], fx and fy, it fills the first n pixels of the row and
/// returns n (`|_, _, _, _| 0`: none).
trait RowKernel<O>: Fn([&[u32]; 4], &[f32], &[f32], &mut [O]) -> usize {}
impl<O, F: Fn([&[u32]; 4], &[f32], &[f32], &mut [O]) -> usize> RowKernel<O> for F {}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn resample_avx2<T: Copy, O: Copy + Default>(img: &[T], h: usize, w: usize, c: usize, tap: &impl Tap, get: impl Fn(T) -> f32, fin: impl Fn(f32) -> O, kern: impl RowKernel<O>) -> Vec<O> {
    resample_impl(img, h, w, c, tap, get, fin, kern)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn resample_impl<T: Copy, O: Copy + Default>(img: &[T], h: usize, w: usize, c: usize, tap: &impl Tap, get: impl Fn(T) -> f32, fin: impl Fn(f32) -> O, kern: impl RowKernel<O>) -> Vec<O> {
    assert!(img.len() == h * w * c && h * w * c <= u32::MAX as usize);
    let mut data = vec![O::default(); h * w * c];
    // Per row: the taps of every pixel first (planar, flat offsets into `img`), then the
    // interpolation of each channel as one loop over the row.
    let mut offs: [Vec<u32>; 4] = std::array::from_fn(|_| vec![0u32; w]);
    let mut fxs = vec![0f32; w];
    let mut fys = vec![0f32; w];
    let mut tmp = vec![O::default(); w];
    let mut rows: [Vec<u32>; 4] = std::array::from_fn(|_| vec![0u32; w]);
    for r in 0..h {
        tap.row(r, &mut rows, &mut fxs, &mut fys);
        let [y0s, y1s, x0s, x1s] = &rows;
        let [o00, o01, o10, o11] = &mut offs;
        for k in 0..w {
            // Clamped so every offset is inside the image whatever `tap` returns.
            let (y0, y1, x0, x1) = (y0s[k].min(h as u32 - 1), y1s[k].min(h as u32 - 1), x0s[k].min(w as u32 - 1), x1s[k].min(w as u32 - 1));
            let (w, c) = (w as u32, c as u32);
            (o00[k], o01[k], o10[k], o11[k]) = ((y0 * w + x0) * c, (y0 * w + x1) * c, (y1 * w + x0) * c, (y1 * w + x1) * c);
        }
        let orow = &mut data[r * w * c..(r + 1) * w * c];
        let done = kern([&offs[0], &offs[1], &offs[2], &offs[3]], &fxs, &fys, orow);
        for ch in (0..c).filter(|_| done < w) {
            let im = &img[ch..];
            let taps = offs[0][done..].iter().zip(&offs[1][done..]).zip(&offs[2][done..]).zip(&offs[3][done..]);
            for (((o, (((&i00, &i01), &i10), &i11)), &fx), &fy) in tmp[done..].iter_mut().zip(taps).zip(&fxs[done..]).zip(&fys[done..]) {
                // SAFETY: every offset is at most (h·w − 1)·c (clamped above) and
                // im.len() = h·w·c − ch > (h·w − 1)·c.
                let g = |j: u32| get(unsafe { *im.get_unchecked(j as usize) });
                let (p00, p01, p10, p11) = (g(i00), g(i01), g(i10), g(i11));
                *o = fin((1.0 - fy) * ((1.0 - fx) * p00 + fx * p01) + fy * ((1.0 - fx) * p10 + fx * p11));
            }
            for (o, &v) in orow[done * c + ch..].iter_mut().step_by(c).zip(&tmp[done..]) {
                *o = v;
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affine_solves_points() {
        let src = [[26.0, 26.0], [26.0, 6.0], [6.0, 6.0]];
        let dst = [[27.0, 25.5], [24.0, 7.0], [6.5, 5.0]];
        let m = affine_from_points(src, dst);
        for (s, d) in src.iter().zip(dst) {
            for r in 0..2 {
                let v = m[r][0] * s[0] + m[r][1] * s[1] + m[r][2];
                assert!((v - d[r]).abs() < 1e-9);
            }
        }
    }

    /// The dispatched (AVX2) resampler against the portable build, for both kinds of taps.
    #[test]
    fn portable_and_dispatched_resampling_agree() {
        use rand::SeedableRng;
        for (h, w) in [(37, 45), (24, 32)] {
            let img: Vec<u8> = (0..h * w * 3).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
            for (p, sev) in [(ParamSet::Cifar10, 3), (ParamSet::ImageNet, 5), (ParamSet::ImageNet, 1)] {
                let (_, dx, dy) = draw(h, w, sev, p, &mut Rng::seed_from_u64(4)).unwrap();
                let tap = ElasticTap { dx: &dx, dy: &dy, h, w };
                let a = remap_u8(&img, h, w, 3, &dx, &dy);
                assert!(a == resample_impl(&img, h, w, 3, &tap, |v: u8| v as f32, crate::cast_u8_f32, |_, _, _, _| 0), "{h}x{w} {p:?}");
            }
        }
        for (h, w) in [(37, 45), (24, 32), (3, 3)] {
            let img: Vec<u8> = (0..h * w * 3).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
            for sev in 2..=5 {
                let (m, dx, dy) = draw(h, w, sev, ParamSet::Cifar10, &mut Rng::seed_from_u64(sev as u64)).unwrap();
                let m = m.unwrap();
                let want = remap(&warp_affine(&img, h, w, 3, m, |v: u8| v as f32), h, w, 3, &dx, &dy, |v| v, crate::cast_u8_f32);
                assert!(affine_remap_u8(&img, h, w, 3, m, &dx, &dy) == want, "{h}x{w} s{sev}");
            }
        }
        let (h, w, c) = (37, 45, 3);
        let img: Vec<u8> = (0..h * w * c).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
        let tap = AffineTap { inv: [0.97, 0.05, 0.8, -0.04, 1.02, -1.3], h, w };
        let a = resample(&img, h, w, c, &tap, |v: u8| v as f32, |v| v, |_, _, _, _| 0);
        assert!(a == resample_impl(&img, h, w, c, &tap, |v: u8| v as f32, |v| v, |_, _, _, _| 0));
    }

    /// The affine taps' row loop gives [`AffineTap::at`]'s taps and fractions, inside the image
    /// and outside it.
    #[test]
    fn affine_row_is_at() {
        let (h, w) = (23, 31);
        for inv in [[0.97, 0.05, 0.8, -0.04, 1.02, -1.3], [1.3, -0.2, -4.0, 0.3, 0.9, 6.5], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]] {
            let tap = AffineTap { inv, h, w };
            let mut ids: [Vec<u32>; 4] = std::array::from_fn(|_| vec![0; w]);
            let (mut fx, mut fy) = (vec![0f32; w], vec![0f32; w]);
            for r in 0..h {
                tap.row(r, &mut ids, &mut fx, &mut fy);
                for x in 0..w {
                    let (t, ax, ay) = tap.at(r, x);
                    assert!(t.iter().zip(&ids).all(|(&a, b)| a as u32 == b[x]) && ax == fx[x] && ay == fy[x], "{inv:?} at {r},{x}");
                }
            }
        }
    }

    #[test]
    fn map_coordinates_reflect_matches_scipy() {
        // scipy.ndimage.map_coordinates(np.arange(4.), [[c]], order=1, mode='reflect').
        let interp = |c: f32| {
            let (i0, i1, f) = lin_index(c, 4);
            (1.0 - f) * i0 as f32 + f * i1 as f32
        };
        for (c, want) in [(-0.75f32, 0.0f32), (-0.25, 0.0), (-1.3, 0.3), (1.25, 1.25), (3.2, 3.0), (3.6, 3.0), (4.4, 2.6)] {
            assert!((interp(c) - want).abs() < 1e-5, "c={c}: {} vs {want}", interp(c));
        }
    }
}


