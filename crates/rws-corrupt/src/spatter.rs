//! spatter: a thresholded, smoothed random "liquid" layer; mode 0 ("water") builds the reference's
//! OpenCV edge/distance pipeline natively (Canny → L2 chamfer distance → truncate → box blur →
//! equalizeHist → 3×3 emboss → box blur), mode 1 ("mud") blends in brown.
//! Grey images receive the luminance (skimage rgb2gray weights) of the colour the reference adds,
//! as imagecorruptions does.

use crate::fast::sep_filter;
use crate::glass::{gaussian_kernel, gaussian_plane, Border};
use crate::ndimage::Mode;
use crate::{FImage, ParamSet, Result, Rng};

const GREY_W: [f64; 3] = [0.2125, 0.7154, 0.0721];

/// OpenCV Canny(img, low, high) with aperture 3 and L1 gradient; returns 255 on edges.
#[inline(always)]
fn canny(img: &[u8], h: usize, w: usize, low: i32, high: i32) -> Vec<u8> {
    // Replicate-padded copy so the Sobel taps need no bounds checks; the Sobel sums then run as
    // loops over whole rows (integers: exact in any order).
    let pw = w + 2;
    let mut pad = vec![0i32; (h + 2) * pw];
    for y in 0..h + 2 {
        for x in 0..w + 2 {
            pad[y * pw + x] = img[(y.clamp(1, h) - 1) * w + x.clamp(1, w) - 1] as i32;
        }
    }
    let mut dxs = vec![0i32; h * w];
    let mut dys = vec![0i32; h * w];
    let mut mag = vec![0i32; (h + 2) * (w + 2)];
    for y in 0..h {
        let (r0, r1, r2) = (&pad[y * pw..(y + 1) * pw], &pad[(y + 1) * pw..(y + 2) * pw], &pad[(y + 2) * pw..(y + 3) * pw]);
        let (dxr, dyr) = (&mut dxs[y * w..(y + 1) * w], &mut dys[y * w..(y + 1) * w]);
        let mr = &mut mag[(y + 1) * pw + 1..(y + 1) * pw + 1 + w];
        for x in 0..w {
            let dx = (r0[x + 2] + 2 * r1[x + 2] + r2[x + 2]) - (r0[x] + 2 * r1[x] + r2[x]);
            let dy = (r2[x] + 2 * r2[x + 1] + r2[x + 2]) - (r0[x] + 2 * r0[x + 1] + r0[x + 2]);
            dxr[x] = dx;
            dyr[x] = dy;
            mr[x] = dx.abs() + dy.abs();
        }
    }
    // 0: not an edge, 1: weak candidate, 2: edge.
    let mut state = vec![0u8; h * w];
    let mut stack = Vec::new();
    const SHIFT: i32 = 15;
    let tg22 = (0.414_213_562_373_095_f64 * (1 << SHIFT) as f64 + 0.5) as i64;
    for y in 0..h {
        for x in 0..w {
            let mw = w + 2;
            let mi = (y + 1) * mw + x + 1;
            let m = mag[mi];
            if m <= low {
                continue;
            }
            let (xs, ys) = (dxs[y * w + x], dys[y * w + x]);
            let ax = xs.unsigned_abs() as i64;
            let ay = (ys.unsigned_abs() as i64) << SHIFT;
            let tg22x = ax * tg22;
            let is_max = if ay < tg22x {
                m > mag[mi - 1] && m >= mag[mi + 1]
            } else {
                let tg67x = tg22x + (ax << (SHIFT + 1));
                if ay > tg67x {
                    m > mag[mi - mw] && m >= mag[mi + mw]
                } else {
                    let s: isize = if (xs ^ ys) < 0 { -1 } else { 1 };
                    m > mag[(mi as isize - mw as isize - s) as usize] && m > mag[(mi as isize + mw as isize + s) as usize]
                }
            };
            if is_max {
                if m > high {
                    state[y * w + x] = 2;
                    stack.push((y, x));
                } else {
                    state[y * w + x] = 1;
                }
            }
        }
    }
    while let Some((y, x)) = stack.pop() {
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                let (yy, xx) = (y as isize + dy, x as isize + dx);
                if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                    continue;
                }
                let k = yy as usize * w + xx as usize;
                if state[k] == 1 {
                    state[k] = 2;
                    stack.push((yy as usize, xx as usize));
                }
            }
        }
    }
    state.iter().map(|&s| if s == 2 { 255 } else { 0 }).collect()
}

/// cv2.distanceTransform(src, DIST_L2, 5): 5×5 chamfer (1, 1.4, 2.1969) distance of every
/// non-zero pixel to the nearest zero pixel. Outside the image counts as far away (a 2-pixel
/// border of "infinity" spares the bounds checks).
///
/// Each pass takes the minimum over the mask's neighbours. Those in the two rows already
/// passed are final, so their minimum is a loop over the whole row (vectorised); only the
/// same-row neighbour is a serial scan. The minimum does not depend on the order it is taken
/// in, so this gives the bytes of the pixel-by-pixel two-pass algorithm.
#[inline(always)]
fn distance_transform(src: &[u8], h: usize, w: usize) -> Vec<f64> {
    const A: f64 = 1.0;
    const B: f64 = 1.4;
    const C: f64 = 2.1969;
    const INF: f64 = 1e9;
    let pw = w + 4;
    let mut d = vec![INF; (h + 4) * pw];
    for y in 0..h {
        for x in 0..w {
            if src[y * w + x] == 0 {
                d[(y + 2) * pw + x + 2] = 0.0;
            }
        }
    }
    let mut cand = vec![0f64; w];
    for pass in 0..2 {
        for yy in 0..h {
            // Forward: rows top to bottom, neighbours above and to the left; backward: the
            // mirror image.
            let y = if pass == 0 { yy + 2 } else { h + 1 - yy };
            let (n1, n2) = if pass == 0 { (y - 1, y - 2) } else { (y + 1, y + 2) };
            let (r1, r2, r) = (&d[n1 * pw..(n1 + 1) * pw], &d[n2 * pw..(n2 + 1) * pw], &d[y * pw..(y + 1) * pw]);
            for (x, cv) in cand.iter_mut().enumerate() {
                let i = x + 2;
                let mut m = r[i];
                for v in [r2[i - 1] + C, r2[i + 1] + C, r1[i - 2] + C, r1[i - 1] + B, r1[i] + A, r1[i + 1] + B, r1[i + 2] + C] {
                    m = if v < m { v } else { m };
                }
                *cv = m;
            }
            let row = &mut d[y * pw..(y + 1) * pw];
            if pass == 0 {
                for x in 0..w {
                    let v = row[x + 1] + A;
                    row[x + 2] = if v < cand[x] { v } else { cand[x] };
                }
            } else {
                for x in (0..w).rev() {
                    let v = row[x + 3] + A;
                    row[x + 2] = if v < cand[x] { v } else { cand[x] };
                }
            }
        }
    }
    (0..h).flat_map(|y| (0..w).map(move |x| (y, x))).map(|(y, x)| d[(y + 2) * pw + x + 2]).collect()
}

/// BORDER_REFLECT_101-padded copy (1 pixel) of a plane, so 3×3 filters run without bounds checks.
#[inline(always)]
fn pad101<T: Copy + Default>(src: &[T], h: usize, w: usize) -> Vec<T> {
    let r = |i: usize, n: usize| -> usize {
        // padded index i ∈ 0..n+2 → source index
        if n == 1 {
            0
        } else if i == 0 {
            1
        } else if i == n + 1 {
            n - 2
        } else {
            i - 1
        }
    };
    let pw = w + 2;
    let mut p = vec![T::default(); (h + 2) * pw];
    for (y, prow) in p.chunks_exact_mut(pw).enumerate() {
        let src_row = &src[r(y, h) * w..][..w];
        prow[1..w + 1].copy_from_slice(src_row);
        prow[0] = src_row[r(0, w)];
        prow[w + 1] = src_row[r(w + 1, w)];
    }
    p
}

/// 3×3 correlation with BORDER_REFLECT_101.
fn filter3(src: &[f64], h: usize, w: usize, k: [[f64; 3]; 3]) -> Vec<f64> {
    let p = pad101(src, h, w);
    let pw = w + 2;
    let mut out = vec![0.0; h * w];
    for y in 0..h {
        let o = &mut out[y * w..(y + 1) * w];
        for (ky, krow) in k.iter().enumerate() {
            let row = &p[(y + ky) * pw..(y + ky + 1) * pw];
            for (kx, &kv) in krow.iter().enumerate() {
                if kv != 0.0 {
                    for (ov, &v) in o.iter_mut().zip(&row[kx..kx + w]) {
                        *ov += kv * v;
                    }
                }
            }
        }
    }
    out
}

/// cv2.blur 3×3 (box, BORDER_REFLECT_101) on a float plane.
fn box3(src: &[f64], h: usize, w: usize) -> Vec<f64> {
    let mut o = filter3(src, h, w, [[1.0; 3]; 3]);
    o.iter_mut().for_each(|v| *v /= 9.0);
    o
}

/// Round half away from zero without the libm call, for values ≥ −2⁵².
#[inline(always)]
fn round_pos(v: f64) -> f64 {
    let t = v + 0.5;
    let i = t as i64 as f64;
    if i > t {
        i - 1.0
    } else {
        i
    }
}

/// 3×3 correlation with the reference's emboss kernel, BORDER_REFLECT_101, saturated to u8.
fn emboss_u8(src: &[u8], h: usize, w: usize) -> Vec<u8> {
    let f: Vec<f64> = src.iter().map(|&v| v as f64).collect();
    filter3(&f, h, w, [[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]).iter().map(|&s| round_pos(s).clamp(0.0, 255.0) as u8).collect()
}

/// cv2.equalizeHist.
#[inline(always)]
fn equalize_hist(src: &mut [u8]) {
    let mut hist = [0usize; 256];
    src.iter().for_each(|&v| hist[v as usize] += 1);
    let total = src.len();
    let first = hist.iter().position(|&c| c > 0).unwrap_or(0);
    if hist[first] == total {
        src.iter_mut().for_each(|v| *v = first as u8);
        return;
    }
    let scale = 255.0 / (total - hist[first]) as f64;
    let mut lut = [0u8; 256];
    let mut sum = 0usize;
    for j in first + 1..256 {
        sum += hist[j];
        lut[j] = round_pos(sum as f64 * scale).clamp(0.0, 255.0) as u8;
    }
    src.iter_mut().for_each(|v| *v = lut[*v as usize]);
}

/// (μ, σ of the liquid, its blur σ, threshold, mud blur σ or water scale, mode 0 water / 1 mud).
fn params(severity: usize, p: ParamSet) -> (f64, f64, f64, f64, f64, u8) {
    let t = match p {
        ParamSet::Cifar10 => [
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1.0, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ],
        ParamSet::TinyImageNet => [
            (0.62, 0.1, 0.7, 0.7, 0.6, 0),
            (0.65, 0.1, 0.8, 0.7, 0.6, 0),
            (0.65, 0.3, 1.0, 0.69, 0.6, 0),
            (0.65, 0.1, 0.7, 0.68, 0.6, 1),
            (0.65, 0.1, 0.5, 0.67, 0.6, 1),
        ],
        ParamSet::ImageNet => [
            (0.65, 0.3, 4.0, 0.69, 0.6, 0),
            (0.65, 0.3, 3.0, 0.68, 0.6, 0),
            (0.65, 0.3, 2.0, 0.68, 0.5, 0),
            (0.65, 0.3, 1.0, 0.65, 1.5, 1),
            (0.67, 0.4, 1.0, 0.65, 1.5, 1),
        ],
    };
    t[severity - 1]
}

/// The unsmoothed liquid layer: μ + s·N(0, 1), two normals per draw.
fn liquid_noise(h: usize, w: usize, mu: f64, s: f64, rng: &mut Rng) -> Vec<f64> {
    let mut fast = crate::noise::Fast::from_rng(rng);
    let mut liquid: Vec<f64> = Vec::with_capacity(h * w + 1);
    while liquid.len() < h * w {
        let (a, b) = fast.normal2();
        liquid.push(mu + s * a);
        liquid.push(mu + s * b);
    }
    liquid.truncate(h * w);
    liquid
}

pub(crate) fn spatter(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let (mu, s, sigma, t, k, mode) = params(severity, p);
    let (h, w, c) = (x.h, x.w, x.c);
    let mut liquid = liquid_noise(h, w, mu, s, rng);
    gaussian_plane(&mut liquid, h, w, sigma, sigma, Border::Nearest, 4.0);
    liquid.iter_mut().for_each(|v| {
        if *v < t {
            *v = 0.0
        }
    });
    let (m, color): (Vec<f64>, [f64; 3]) = if mode == 0 {
        // astype(np.uint8) of liquid·255: truncation, wrapping above 255 as the C cast does.
        let l8: Vec<u8> = liquid.iter().map(|v| ((v * 255.0) as i64 & 255) as u8).collect();
        let edges = canny(&l8, h, w, 50, 150);
        let notedge: Vec<u8> = edges.iter().map(|e| 255 - e).collect();
        let dist: Vec<f64> = distance_transform(&notedge, h, w).into_iter().map(|d| d.min(20.0)).collect();
        let mut d8: Vec<u8> = box3(&dist, h, w).iter().map(|v| *v as u8).collect();
        equalize_hist(&mut d8);
        let e = emboss_u8(&d8, h, w);
        // cv2.blur on u8 returns u8 (rounded) before the float32 cast.
        let ef: Vec<f64> = e.iter().map(|&v| v as f64).collect();
        let blurred: Vec<f64> = box3(&ef, h, w).iter().map(|&v| round_pos(v)).collect();
        let mut m: Vec<f64> = l8.iter().zip(&blurred).map(|(&l, &d)| l as f64 * d).collect();
        let mx = m.iter().cloned().fold(0.0, f64::max);
        // The reference divides by the maximum unguarded (0/0 → NaN → a black image); with no
        // liquid we add nothing instead.
        let scale = if mx > 0.0 { k / mx } else { 0.0 };
        m.iter_mut().for_each(|v| *v *= scale);
        (m, [175.0 / 255.0, 238.0 / 255.0, 238.0 / 255.0])
    } else {
        let mut m: Vec<f64> = liquid.iter().map(|&v| if v > t { 1.0 } else { 0.0 }).collect();
        gaussian_plane(&mut m, h, w, k, k, Border::Nearest, 4.0);
        m.iter_mut().for_each(|v| {
            if *v < 0.8 {
                *v = 0.0
            }
        });
        (m, [63.0 / 255.0, 42.0 / 255.0, 20.0 / 255.0])
    };
    let grey_col: f64 = color.iter().zip(GREY_W).map(|(a, b)| a * b).sum();
    let cols: [f64; 3] = if c == 3 { color } else { [grey_col; 3] };
    let mut data = vec![0.0; x.data.len()];
    // On the 0..255 scale (saves a division per value); one loop per mode, no per-value branch.
    let px = data.chunks_exact_mut(c).zip(x.data.chunks_exact(c)).zip(&m);
    if mode == 0 {
        for ((o, i), &mv) in px {
            for ch in 0..c {
                o[ch] = (i[ch] + mv * cols[ch] * 255.0).clamp(0.0, 255.0);
            }
        }
    } else {
        for ((o, i), &mv) in px {
            for ch in 0..c {
                o[ch] = (i[ch] * (1.0 - mv) + mv * cols[ch] * 255.0).clamp(0.0, 255.0);
            }
        }
    }
    Ok(FImage { h, w, c, data })
}

/// uint8 → uint8 spatter: the float path's draws and arithmetic. The liquid is thresholded (and
/// cast or masked) in the Gaussian filter's final map; the stages on whole numbers (emboss, the
/// second box blur, the liquid × blur product) run in integers, which is exact; the distance
/// map's box blur keeps the float path's f64 sum order. Same bytes as the float path.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spatter_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Vec<u8>> {
    let (mu, s, sigma, t, k, mode) = params(severity, p);
    let liquid = liquid_noise(h, w, mu, s, rng);
    let kern = gaussian_kernel(sigma, 4.0).unwrap_or_else(|| vec![1.0]);
    let mut out = vec![0u8; x.len()];
    if mode == 0 {
        // astype(np.uint8) of liquid·255 (truncation, wrapping as the C cast does).
        let l8: Vec<u8> = sep_filter(&liquid, h, w, 1, &kern, &kern, Mode::Nearest, false, |v: f64| {
            let v = if v < t { 0.0 } else { v };
            ((v * 255.0) as i64 & 255) as u8
        });
        let m = water_mask(&l8, h, w);
        let mx = m.iter().copied().max().unwrap_or(0) as f64;
        let scale = if mx > 0.0 { k / mx } else { 0.0 };
        let cols = spatter_colour(c, [175.0 / 255.0, 238.0 / 255.0, 238.0 / 255.0]);
        blend_u8(x, &mut out, c, |i| m[i] as f64 * scale, cols, false);
    } else {
        let mask: Vec<f64> = sep_filter(&liquid, h, w, 1, &kern, &kern, Mode::Nearest, false, |v: f64| {
            let v = if v < t { 0.0 } else { v };
            if v > t {
                1.0
            } else {
                0.0
            }
        });
        let kk = gaussian_kernel(k, 4.0).unwrap_or_else(|| vec![1.0]);
        let m: Vec<f64> = sep_filter(&mask, h, w, 1, &kk, &kk, Mode::Nearest, false, |v: f64| if v < 0.8 { 0.0 } else { v });
        let cols = spatter_colour(c, [63.0 / 255.0, 42.0 / 255.0, 20.0 / 255.0]);
        blend_u8(x, &mut out, c, |i| m[i], cols, true);
    }
    Ok(out)
}

/// The water layer's edge/distance pipeline from the liquid bytes to liquid × blurred emboss
/// (whole numbers), AVX2 where present (integer and f64 sums without FMA: the same values).
fn water_mask(l8: &[u8], h: usize, w: usize) -> Vec<u32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { water_mask_avx2(l8, h, w) };
    }
    water_mask_impl(l8, h, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn water_mask_avx2(l8: &[u8], h: usize, w: usize) -> Vec<u32> {
    water_mask_impl(l8, h, w)
}

#[inline(always)]
fn water_mask_impl(l8: &[u8], h: usize, w: usize) -> Vec<u32> {
    let edges = canny(l8, h, w, 50, 150);
    let notedge: Vec<u8> = edges.iter().map(|e| 255 - e).collect();
    let mut d8 = box3_capped_u8(&distance_transform(&notedge, h, w), h, w, 20.0);
    equalize_hist(&mut d8);
    let e = emboss_int(&d8, h, w);
    let blurred = box3_round_int(&e, h, w);
    l8.iter().zip(&blurred).map(|(&l, &d)| l as u32 * d as u32).collect()
}

/// The colour added per channel (grey images: its luminance).
fn spatter_colour(c: usize, color: [f64; 3]) -> [f64; 3] {
    let grey_col: f64 = color.iter().zip(GREY_W).map(|(a, b)| a * b).sum();
    if c == 3 {
        color
    } else {
        [grey_col; 3]
    }
}

/// The final blend of [`spatter`] from u8 pixels: water adds mv·colour, mud mixes towards it.
/// The mask is computed first (planar), then blended per channel count; AVX2 where present (no
/// FMA: the same bits).
fn blend_u8(x: &[u8], out: &mut [u8], c: usize, mv: impl Fn(usize) -> f64, cols: [f64; 3], mud: bool) {
    let m: Vec<f64> = (0..out.len() / c).map(mv).collect();
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { blend_avx2(x, out, c, &m, cols, mud) };
    }
    blend_impl(x, out, c, &m, cols, mud)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blend_avx2(x: &[u8], out: &mut [u8], c: usize, m: &[f64], cols: [f64; 3], mud: bool) {
    blend_impl(x, out, c, m, cols, mud)
}

#[inline(always)]
fn blend_impl(x: &[u8], out: &mut [u8], c: usize, m: &[f64], cols: [f64; 3], mud: bool) {
    #[inline(always)]
    fn one(v: u8, mv: f64, col: f64, mud: bool) -> u8 {
        let v = v as f64;
        let r = if mud { v * (1.0 - mv) + mv * col * 255.0 } else { v + mv * col * 255.0 };
        crate::cast_u8(r.clamp(0.0, 255.0))
    }
    if c == 3 {
        for ((o, px), &mv) in out.chunks_exact_mut(3).zip(x.chunks_exact(3)).zip(m) {
            o[0] = one(px[0], mv, cols[0], mud);
            o[1] = one(px[1], mv, cols[1], mud);
            o[2] = one(px[2], mv, cols[2], mud);
        }
    } else {
        for ((o, &v), &mv) in out.iter_mut().zip(x).zip(m) {
            *o = one(v, mv, cols[0], mud);
        }
    }
}

/// cv2.blur 3×3 (BORDER_REFLECT_101) of min(d, cap), truncated to u8: [`box3`]'s f64 sums in
/// its order (row by row, taps left to right), without its intermediate images.
#[inline(always)]
fn box3_capped_u8(d: &[f64], h: usize, w: usize, cap: f64) -> Vec<u8> {
    let capped: Vec<f64> = d.iter().map(|v| v.min(cap)).collect();
    let p = pad101(&capped, h, w);
    let pw = w + 2;
    let mut out = vec![0u8; h * w];
    let mut acc = vec![0.0f64; w];
    for y in 0..h {
        acc.fill(0.0);
        for ky in 0..3 {
            let row = &p[(y + ky) * pw..(y + ky + 1) * pw];
            for kx in 0..3 {
                for (a, &v) in acc.iter_mut().zip(&row[kx..kx + w]) {
                    *a += v;
                }
            }
        }
        for (o, &a) in out[y * w..(y + 1) * w].iter_mut().zip(&acc) {
            *o = (a / 9.0) as u8;
        }
    }
    out
}

/// A 3×3 stencil over a u8 plane with BORDER_REFLECT_101: `f(r0, r1, r2, x)` gets the three
/// padded rows around output row y and the output column (the window is columns x..x+3).
#[inline(always)]
fn stencil3_u8(src: &[u8], h: usize, w: usize, f: impl Fn(&[u8], &[u8], &[u8], usize) -> u8) -> Vec<u8> {
    let p = pad101(src, h, w);
    let pw = w + 2;
    let mut out = vec![0u8; h * w];
    for y in 0..h {
        let (r0, r1, r2) = (&p[y * pw..(y + 1) * pw], &p[(y + 1) * pw..(y + 2) * pw], &p[(y + 2) * pw..(y + 3) * pw]);
        for (x, o) in out[y * w..(y + 1) * w].iter_mut().enumerate() {
            *o = f(r0, r1, r2, x);
        }
    }
    out
}

/// [`emboss_u8`] in integers: the sums are whole numbers, exact in any order.
#[inline(always)]
fn emboss_int(src: &[u8], h: usize, w: usize) -> Vec<u8> {
    stencil3_u8(src, h, w, |r0, r1, r2, x| {
        let v = -2 * r0[x] as i32 - r0[x + 1] as i32 - r1[x] as i32 + r1[x + 1] as i32 + r1[x + 2] as i32 + r2[x + 1] as i32 + 2 * r2[x + 2] as i32;
        v.clamp(0, 255) as u8
    })
}

/// cv2.blur 3×3 (BORDER_REFLECT_101) of u8 values, rounded as the float path does
/// (`round_pos(S/9)`): S/9 is never a tie (9 is odd), so that is ⌊(2S + 9)/18⌋ exactly.
#[inline(always)]
fn box3_round_int(src: &[u8], h: usize, w: usize) -> Vec<u8> {
    stencil3_u8(src, h, w, |r0, r1, r2, x| {
        let s: u32 = (0..3).map(|k| r0[x + k] as u32 + r1[x + k] as u32 + r2[x + k] as u32).sum();
        ((2 * s + 9) / 18) as u8
    })
}

#[cfg(test)]
mod tests {
    /// The pixel-by-pixel two-pass chamfer transform (OpenCV's order of updates).
    fn naive_distance(src: &[u8], h: usize, w: usize) -> Vec<f64> {
        let (a, b, c, inf) = (1.0, 1.4, 2.1969, 1e9);
        let at = |d: &Vec<f64>, y: isize, x: isize| if y < 0 || x < 0 || y >= h as isize || x >= w as isize { inf } else { d[y as usize * w + x as usize] };
        let mut d: Vec<f64> = src.iter().map(|&v| if v == 0 { 0.0 } else { inf }).collect();
        let mask = [(-2, -1, c), (-2, 1, c), (-1, -2, c), (-1, -1, b), (-1, 0, a), (-1, 1, b), (-1, 2, c), (0, -1, a)];
        for pass in 0..2 {
            for k in 0..h * w {
                let k = if pass == 0 { k } else { h * w - 1 - k };
                let (y, x) = ((k / w) as isize, (k % w) as isize);
                let s = if pass == 0 { 1 } else { -1 };
                let mut best = d[k];
                for &(dy, dx, cost) in &mask {
                    let v = at(&d, y + s * dy, x + s * dx) + cost;
                    if v < best {
                        best = v;
                    }
                }
                d[k] = best;
            }
        }
        d
    }

    #[test]
    fn row_vectorised_distance_transform_gives_the_same_bits() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for &(h, w, density) in &[(1, 1, 2), (5, 7, 3), (32, 32, 9), (17, 40, 50), (64, 3, 5), (30, 30, 400)] {
            let src: Vec<u8> = (0..h * w)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    if s % density == 0 { 0 } else { 255 }
                })
                .collect();
            let got = super::distance_transform(&src, h, w);
            let want = naive_distance(&src, h, w);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{h}x{w} density 1/{density}");
        }
    }
}
