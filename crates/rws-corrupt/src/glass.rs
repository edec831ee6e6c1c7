//! glass_blur, plus the small single-plane scipy-style Gaussian filter that glass, elastic and
//! spatter share. It lives here (not in `ndimage`) because those three need per-axis sigmas and
//! plane-level access, and it keeps the random corruptions independent of the framework's filters.

use crate::{FImage, ParamSet, Result, Rng};
use crate::noise::Fast;

/// scipy.ndimage boundary modes used by the random corruptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Border {
    /// `nearest`: edge value repeated (skimage `gaussian`'s default).
    Nearest,
    /// `reflect`: half-sample symmetric, `d c b a | a b c d` (the scipy checks below; elastic's
    /// fields call the separable filter with this mode directly).
    #[cfg_attr(not(test), allow(dead_code))]
    Reflect,
}

/// Index of sample `i` (possibly outside `0..n`) under the boundary mode.
#[cfg(test)]
fn border_index(i: isize, n: usize, b: Border) -> usize {
    let n = n as isize;
    if (0..n).contains(&i) {
        return i as usize;
    }
    match b {
        Border::Nearest => i.clamp(0, n - 1) as usize,
        Border::Reflect => {
            let p = 2 * n;
            let mut k = i.rem_euclid(p);
            if k >= n {
                k = p - 1 - k;
            }
            k as usize
        }
    }
}

/// scipy `_gaussian_kernel1d`: radius ⌊truncate·σ + 0.5⌋, normalised; `None` when scipy skips the
/// axis (σ ≤ 1e-15).
pub(crate) fn gaussian_kernel(sigma: f64, truncate: f64) -> Option<Vec<f64>> {
    if sigma <= 1e-15 {
        return None;
    }
    let r = (truncate * sigma + 0.5) as isize;
    let mut k: Vec<f64> = (-r..=r).map(|x| (-0.5 / (sigma * sigma) * (x * x) as f64).exp()).collect();
    let s: f64 = k.iter().sum();
    k.iter_mut().for_each(|v| *v /= s);
    Some(k)
}

/// Gaussian filter of an interleaved `h×w×c` buffer, spatial axes only (skimage
/// `gaussian(..., multichannel=True)` / scipy `gaussian_filter` with σ = (sy, sx, 0)).
/// Both passes run as weighted sums of whole shifted rows so the inner loops vectorise; the sum
/// order differs from scipy's only by rounding (≈1e-16).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gaussian_hwc(data: &mut [f64], h: usize, w: usize, c: usize, sy: f64, sx: f64, b: Border, truncate: f64) {
    if h == 0 || w * c == 0 {
        return;
    }
    // A skipped axis is the identity kernel [1.0] (0 + 1·v = v exactly). The shared separable
    // filter sums the taps in the same order as before, with AVX2 where the CPU has it.
    let ky = gaussian_kernel(sy, truncate).unwrap_or_else(|| vec![1.0]);
    let kx = gaussian_kernel(sx, truncate).unwrap_or_else(|| vec![1.0]);
    let mode = match b {
        Border::Nearest => crate::ndimage::Mode::Nearest,
        Border::Reflect => crate::ndimage::Mode::Reflect,
    };
    let out = crate::fast::sep_filter(&*data, h, w, c, &ky, &kx, mode, false, |v: f64| v);
    data.copy_from_slice(&out);
}

/// Single-channel convenience wrapper (the scipy checks below).
#[cfg(test)]
fn gaussian_plane(data: &mut [f64], h: usize, w: usize, sy: f64, sx: f64, b: Border, truncate: f64) {
    gaussian_hwc(data, h, w, 1, sy, sx, b, truncate)
}

/// Gaussian filter (scipy weights and `truncate`, σ ≤ 1e-15 skips the axis) of one f32 plane,
/// each value then mapped by `fin`: the random layers of spatter and elastic_transform, which
/// both of their paths share. Mirrored taps are added before the multiply (half the multiplies)
/// and nothing is fused, so the AVX2 build gives the portable build's bits; one output row at a
/// time (vertical pass into a padded row, then the horizontal pass), no whole-image temporary.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gauss_f32<O: Copy + Default>(src: &[f32], h: usize, w: usize, sy: f64, sx: f64, truncate: f64, mode: crate::ndimage::Mode, fin: impl Fn(f32) -> O) -> Vec<O> {
    let kern = |s: f64| -> Vec<f32> { gaussian_kernel(s, truncate).unwrap_or_else(|| vec![1.0]).iter().map(|&v| v as f32).collect() };
    let (ky, kx) = (kern(sy), kern(sx));
    if h * w == 0 {
        return Vec::new();
    }
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { gauss_f32_avx2(src, h, w, &ky, &kx, mode, fin) };
    }
    gauss_f32_impl(src, h, w, &ky, &kx, mode, fin)
}

/// The source row of every padded row index (`r` either side) and the source column of every
/// padded column (`r` before, `r` after), under `mode`: both builds read the same values.
fn border_tables(h: usize, w: usize, rv: usize, rh: usize, mode: crate::ndimage::Mode) -> (Vec<usize>, Vec<usize>) {
    use crate::ndimage::boundary_index;
    let rows = (0..h + 2 * rv).map(|i| boundary_index(i as isize - rv as isize, h, mode).unwrap_or(0)).collect();
    let cols = (0..2 * rh).map(|j| boundary_index(if j < rh { j as isize - rh as isize } else { (w + j - rh) as isize }, w, mode).unwrap_or(0)).collect();
    (rows, cols)
}

/// [`gauss_f32_impl`] with the partial sums in registers: 32 (then 8) columns at a time, each
/// tap's loads added straight into them, where the portable loop makes one pass over the row
/// per tap. The same operations in the same order per value (centre tap, then each mirrored
/// pair from the outside in, no FMA), so the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gauss_f32_avx2<O: Copy + Default>(src: &[f32], h: usize, w: usize, ky: &[f32], kx: &[f32], mode: crate::ndimage::Mode, fin: impl Fn(f32) -> O) -> Vec<O> {
    use std::arch::x86_64::*;
    assert!(src.len() == h * w && ky.len() % 2 == 1 && kx.len() % 2 == 1);
    let (rv, rh) = (ky.len() / 2, kx.len() / 2);
    let (rows, cols) = border_tables(h, w, rv, rh, mode);
    let (kvy, kvx): (Vec<__m256>, Vec<__m256>) = (ky.iter().map(|&v| _mm256_set1_ps(v)).collect(), kx.iter().map(|&v| _mm256_set1_ps(v)).collect());
    let mut out = vec![O::default(); h * w];
    let mut buf = vec![0f32; w + 2 * rh];
    let mut acc = vec![0f32; w];
    // Offsets of the rows y − rv ..= y + rv.
    let mut offs = vec![0usize; 2 * rv + 1];
    let sp = src.as_ptr();
    // `$n` vectors of 8 values at `$dst` for kernel `$k` of radius `$r`: the centre tap at `$c`,
    // then the pairs `$pair(t)` from the outside in. Several independent sums at once: one
    // would wait on each addition.
    macro_rules! taps {
        ($n:literal, $k:expr, $r:expr, $c:expr, $pair:expr, $dst:expr) => {{
            let (k, r): (&[__m256], usize) = ($k, $r);
            let c: *const f32 = $c;
            let mut a: [__m256; $n] = std::array::from_fn(|j| _mm256_mul_ps(k[r], _mm256_loadu_ps(c.add(8 * j))));
            for (t, &kt) in k[..r].iter().enumerate() {
                let (u, v): (*const f32, *const f32) = $pair(t);
                for (j, aj) in a.iter_mut().enumerate() {
                    *aj = _mm256_add_ps(*aj, _mm256_mul_ps(kt, _mm256_add_ps(_mm256_loadu_ps(u.add(8 * j)), _mm256_loadu_ps(v.add(8 * j)))));
                }
            }
            let d: *mut f32 = $dst;
            for (j, aj) in a.iter().enumerate() {
                _mm256_storeu_ps(d.add(8 * j), *aj);
            }
        }};
    }
    let (w32, w8) = (w / 32 * 32, w / 8 * 8);
    for (y, orow) in out.chunks_exact_mut(w).enumerate() {
        for (j, o) in offs.iter_mut().enumerate() {
            *o = rows[y + j] * w;
        }
        let bp = buf.as_mut_ptr().add(rh);
        // SAFETY (loads and stores): x + 32 ≤ w (or x + 8 ≤ w), every offset is a row start in
        // src, and buf holds rh + w + rh values.
        for x in (0..w32).step_by(32) {
            taps!(4, &kvy, rv, sp.add(offs[rv] + x), |t: usize| (sp.add(offs[t] + x), sp.add(offs[2 * rv - t] + x)), bp.add(x));
        }
        for x in (w32..w8).step_by(8) {
            taps!(1, &kvy, rv, sp.add(offs[rv] + x), |t: usize| (sp.add(offs[t] + x), sp.add(offs[2 * rv - t] + x)), bp.add(x));
        }
        for x in w8..w {
            let mut a = ky[rv] * src[offs[rv] + x];
            for (t, &kt) in ky[..rv].iter().enumerate() {
                a += kt * (src[offs[t] + x] + src[offs[2 * rv - t] + x]);
            }
            buf[rh + x] = a;
        }
        for j in 0..rh {
            buf[j] = buf[rh + cols[j]];
            buf[w + rh + j] = buf[rh + cols[rh + j]];
        }
        // Value x of the row is at rh + x in buf: its pair t at x + t and x + 2rh − t.
        let bb = buf.as_ptr();
        let ap = acc.as_mut_ptr();
        // SAFETY: as above; the taps reach rh values either side of the row, inside buf.
        for x in (0..w32).step_by(32) {
            taps!(4, &kvx, rh, bb.add(rh + x), |t: usize| (bb.add(x + t), bb.add(x + 2 * rh - t)), ap.add(x));
        }
        for x in (w32..w8).step_by(8) {
            taps!(1, &kvx, rh, bb.add(rh + x), |t: usize| (bb.add(x + t), bb.add(x + 2 * rh - t)), ap.add(x));
        }
        for x in w8..w {
            let mut a = kx[rh] * buf[rh + x];
            for (t, &kt) in kx[..rh].iter().enumerate() {
                a += kt * (buf[x + t] + buf[x + 2 * rh - t]);
            }
            acc[x] = a;
        }
        for (o, &a) in orow.iter_mut().zip(&acc) {
            *o = fin(a);
        }
    }
    out
}

fn gauss_f32_impl<O: Copy + Default>(src: &[f32], h: usize, w: usize, ky: &[f32], kx: &[f32], mode: crate::ndimage::Mode, fin: impl Fn(f32) -> O) -> Vec<O> {
    let (rv, rh) = (ky.len() / 2, kx.len() / 2);
    let mut out = vec![O::default(); h * w];
    let mut buf = vec![0f32; w + 2 * rh];
    let mut acc = vec![0f32; w];
    // The border lookups once per call, not once per row.
    let (rows, cols) = border_tables(h, w, rv, rh, mode);
    let row = |y: isize| -> &[f32] {
        let sy = rows[(y + rv as isize) as usize];
        &src[sy * w..(sy + 1) * w]
    };
    for (y, orow) in out.chunks_exact_mut(w).enumerate() {
        let mid = &mut buf[rh..rh + w];
        let kc = ky[rv];
        for (a, &s) in mid.iter_mut().zip(row(y as isize)) {
            *a = kc * s;
        }
        for (t, &k) in ky[..rv].iter().enumerate() {
            let d = (rv - t) as isize;
            for ((a, &u), &v) in mid.iter_mut().zip(row(y as isize - d)).zip(row(y as isize + d)) {
                *a += k * (u + v);
            }
        }
        for j in 0..rh {
            buf[j] = buf[rh + cols[j]];
            buf[w + rh + j] = buf[rh + cols[rh + j]];
        }
        let kc = kx[rh];
        for (a, &s) in acc.iter_mut().zip(&buf[rh..rh + w]) {
            *a = kc * s;
        }
        for (t, &k) in kx[..rh].iter().enumerate() {
            let d = rh - t;
            for ((a, &u), &v) in acc.iter_mut().zip(&buf[rh - d..rh - d + w]).zip(&buf[rh + d..rh + d + w]) {
                *a += k * (u + v);
            }
        }
        for (o, &a) in orow.iter_mut().zip(&acc) {
            *o = fin(a);
        }
    }
    out
}

/// [`gauss_f32`]'s portable build, for the tests that compare it with the dispatched one.
#[cfg(test)]
pub(crate) fn gauss_f32_portable(src: &[f32], h: usize, w: usize, ky: &[f32], kx: &[f32], mode: crate::ndimage::Mode) -> Vec<f32> {
    gauss_f32_impl(src, h, w, ky, kx, mode, |v| v)
}

/// Two integers uniform in `[-d, d-1]` (numpy `randint(-d, d, size=2)`: the high bound is
/// exclusive) from one 64-bit draw, by multiply-shift on each 32-bit half (bias < 2⁻²⁹).
#[inline]
fn two_offsets(rng: &mut Fast, d: usize) -> (isize, isize) {
    let v = rng.next_u64();
    let n = 2 * d as u64;
    let a = (((v & 0xffff_ffff) * n) >> 32) as isize - d as isize;
    let b = (((v >> 32) * n) >> 32) as isize - d as isize;
    (a, b)
}

/// glass_blur: Gaussian σ → uint8 (truncation) → local pixel "shuffle" → Gaussian σ → clip.
///
/// The shuffle keeps the reference's exact semantics: per iteration, rows from H−d down to d+1 and
/// inside them columns from W−d down to d+1, draw (dx, dy) in [−d, d−1] and *copy* pixel
/// (h+dy, w+dx) onto (h, w) (the reference's tuple "swap" of numpy views is a copy). Loop bounds
/// follow the real image size (imagecorruptions' behaviour; identical to the hard-coded 32/64 of
/// the CIFAR/Tiny scripts at their native size), so any size works; an image with H or W ≤ 2d
/// gets no shuffle, only the two blurs. Grey images shuffle their single channel.
pub(crate) fn glass_blur(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let (sigma, d, iters) = match p {
        ParamSet::Cifar10 => [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        ParamSet::TinyImageNet => [(0.1, 1, 1), (0.5, 1, 1), (0.6, 1, 2), (0.7, 2, 1), (0.9, 2, 2)],
        ParamSet::ImageNet => [(0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
    }[severity - 1];
    let (h, w, c) = (x.h, x.w, x.c);
    let mut f: Vec<f64> = x.data.iter().map(|v| v / 255.0).collect();
    gaussian_hwc(&mut f, h, w, c, sigma, sigma, Border::Nearest, 4.0);
    // np.uint8(... * 255): truncation (values are in [0, 255] after a Gaussian of [0, 1] data).
    let mut u: Vec<u8> = f.iter().map(|v| (v * 255.0).clamp(0.0, 255.0) as u8).collect();
    let row = w * c;
    let mut fast = Fast::from_rng(rng);
    for _ in 0..iters {
        if h <= 2 * d || w <= 2 * d {
            break;
        }
        for hh in (d + 1..=h - d).rev() {
            for ww in (d + 1..=w - d).rev() {
                let (dx, dy) = two_offsets(&mut fast, d);
                let src = ((hh as isize + dy) as usize) * row + ((ww as isize + dx) as usize) * c;
                let dst = hh * row + ww * c;
                u.copy_within(src..src + c, dst);
            }
        }
    }
    for (o, &v) in f.iter_mut().zip(&u) {
        *o = v as f64 / 255.0;
    }
    gaussian_hwc(&mut f, h, w, c, sigma, sigma, Border::Nearest, 4.0);
    for v in f.iter_mut() {
        *v = v.clamp(0.0, 1.0) * 255.0;
    }
    Ok(FImage { h, w, c, data: f })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaussian_matches_scipy_values() {
        // scipy.ndimage.gaussian_filter1d([0,0,1,0,0,0,0,3], 1.0, mode='nearest' / 'reflect').
        let src = [0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0];
        let want_n = [0.05399112742070441, 0.24197144565660073, 0.39894346935609776, 0.24237293753044495, 0.06768820415464243, 0.1801023206160825, 0.9017186265904682, 2.0984152040341466];
        let want_r = [0.05842298904073567, 0.24210527628121548, 0.39894346935609776, 0.24237293753044495, 0.06768820415464243, 0.17970082874223828, 0.8880215498565303, 1.9227447450380954];
        let mut a = src.to_vec();
        gaussian_plane(&mut a, 1, 8, 0.0, 1.0, Border::Nearest, 4.0);
        let mut b = src.to_vec();
        gaussian_plane(&mut b, 8, 1, 1.0, 0.0, Border::Reflect, 4.0);
        for i in 0..8 {
            assert!((a[i] - want_n[i]).abs() < 1e-12, "nearest {a:?}");
            assert!((b[i] - want_r[i]).abs() < 1e-12, "reflect {b:?}");
        }
    }
}

#[cfg(test)]
mod gaussian_tests {
    use super::*;

    /// The filter as scipy's correlate1d loops spell it (zero, then taps in order, per axis).
    fn reference(data: &[f64], h: usize, w: usize, c: usize, sy: f64, sx: f64, b: Border) -> Vec<f64> {
        let mut v = data.to_vec();
        if let Some(k) = gaussian_kernel(sy, 4.0) {
            let r = (k.len() / 2) as isize;
            let src = v.clone();
            for y in 0..h {
                for i in 0..w * c {
                    let mut acc = 0.0;
                    for (j, &kj) in k.iter().enumerate() {
                        acc += kj * src[border_index(y as isize + j as isize - r, h, b) * w * c + i];
                    }
                    v[y * w * c + i] = acc;
                }
            }
        }
        if let Some(k) = gaussian_kernel(sx, 4.0) {
            let r = (k.len() / 2) as isize;
            let src = v.clone();
            for y in 0..h {
                for x in 0..w {
                    for ch in 0..c {
                        let mut acc = 0.0;
                        for (j, &kj) in k.iter().enumerate() {
                            acc += kj * src[(y * w + border_index(x as isize + j as isize - r, w, b)) * c + ch];
                        }
                        v[(y * w + x) * c + ch] = acc;
                    }
                }
            }
        }
        v
    }

    /// The f32 filter of spatter and elastic_transform against the f64 one, both modes, with
    /// kernels wider than the image (repeated reflections).
    #[test]
    fn gauss_f32_is_the_f64_filter_to_rounding() {
        for (h, w) in [(23, 17), (5, 3), (1, 9)] {
            let data: Vec<f64> = (0..h * w).map(|i| ((i * 7919) % 251) as f64 / 250.0).collect();
            let d32: Vec<f32> = data.iter().map(|&v| v as f32).collect();
            for (sy, sx, b) in [(1.3, 0.7, Border::Reflect), (0.0, 2.5, Border::Nearest), (3.0, 0.0, Border::Reflect), (6.0, 6.0, Border::Nearest)] {
                let mode = if b == Border::Reflect { crate::ndimage::Mode::Reflect } else { crate::ndimage::Mode::Nearest };
                let got = gauss_f32(&d32, h, w, sy, sx, 4.0, mode, |v| v);
                let want = reference(&data, h, w, 1, sy, sx, b);
                assert!(got.iter().zip(&want).all(|(&g, &r)| (g as f64 - r).abs() < 1e-5), "{h}x{w} σ=({sy},{sx}) {b:?}");
            }
        }
    }

    /// The dispatched (register-blocked AVX2) filter gives the portable loop's bits, for both
    /// borders, unequal σ and widths that end in 32-, 8- and 1-column steps.
    #[test]
    fn gauss_f32_dispatched_equals_portable() {
        for (h, w) in [(23, 17), (5, 3), (1, 9), (40, 75), (33, 64)] {
            let d32: Vec<f32> = (0..h * w).map(|i| ((i * 7919) % 251) as f32 / 250.0).collect();
            for (sy, sx) in [(1.3, 0.7), (0.0, 2.5), (3.0, 0.0), (6.0, 6.0), (4.0, 4.0)] {
                for mode in [crate::ndimage::Mode::Reflect, crate::ndimage::Mode::Nearest] {
                    let kern = |s: f64| -> Vec<f32> { gaussian_kernel(s, 3.0).unwrap_or_else(|| vec![1.0]).iter().map(|&v| v as f32).collect() };
                    let got = gauss_f32(&d32, h, w, sy, sx, 3.0, mode, |v| v);
                    assert!(got == gauss_f32_portable(&d32, h, w, &kern(sy), &kern(sx), mode), "{h}x{w} σ=({sy},{sx}) {mode:?}");
                }
            }
        }
    }

    #[test]
    fn gaussian_hwc_sums_in_scipy_order() {
        let (h, w) = (23, 17);
        for c in [1, 3] {
            let data: Vec<f64> = (0..h * w * c).map(|i| ((i * 7919) % 251) as f64 / 250.0).collect();
            for (sy, sx, b) in [(1.3, 0.7, Border::Reflect), (0.0, 2.5, Border::Nearest), (3.0, 0.0, Border::Reflect), (6.0, 6.0, Border::Nearest)] {
                let mut got = data.clone();
                gaussian_hwc(&mut got, h, w, c, sy, sx, b, 4.0);
                assert!(got == reference(&data, h, w, c, sy, sx, b), "c={c} σ=({sy},{sx}) {b:?}");
            }
        }
    }
}
