//! snow: a zoomed, thresholded Gaussian snow layer smeared by ImageMagick's motion blur (native
//! model in blur.rs), added twice (as is and rotated 180°) to a whitened image.
use crate::blur::{clipped_zoom, motion_blur_kernel, motion_taps};
use crate::{Error, FImage, ParamSet, Result, Rng};
use rand::Rng as _;

/// (μ, σ, zoom, threshold, motion radius, motion σ, blend) of the reference's table.
fn params(severity: usize, p: ParamSet) -> (f64, f64, f64, f64, usize, f64, f64) {
    let c32 = [
        (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95),
        (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8),
    ];
    match p {
        ParamSet::Cifar10 => c32[severity - 1],
        ParamSet::TinyImageNet => {
            let v = c32[severity - 1];
            (v.0, v.1, v.2, v.3, v.4, v.5, [0.8, 0.8, 0.7, 0.65, 0.6][severity - 1])
        }
        ParamSet::ImageNet => [
            (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
            (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
            (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
        ][severity - 1],
    }
}

fn check_square(p: ParamSet, h: usize, w: usize) -> Result<()> {
    if p != ParamSet::ImageNet && h != w {
        return Err(Error::Msg(format!("snow with {p:?} parameters needs a square image, got {h}x{w} (use --params imagenet)")));
    }
    Ok(())
}

pub(crate) fn snow(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let (mu, sd, z, t, r, s, b) = params(severity, p);
    let (h, w, c) = (x.h, x.w, x.c);
    check_square(p, h, w)?;
    let layer: Vec<f64> = crate::noise::normals(rng, h * w).into_iter().map(|z| mu + sd * z).collect();
    let layer = clipped_zoom(&layer, h, w, 1, z, p == ParamSet::ImageNet);
    let angle = rng.gen_range(-135.0..-45.0);
    let layer: Vec<f64> = layer.into_iter().map(|v| if v < t { 0.0 } else { v.clamp(0.0, 1.0) }).collect();
    // CIFAR/Tiny: the layer goes through an 8-bit grey PNG (truncated) into ImageMagick, whose
    // 8-bit output is rounded; imagecorruptions blurs the float layer and rounds to 1/255 steps.
    let layer = if p == ParamSet::ImageNet {
        FImage { h, w, c: 1, data: layer.into_iter().map(|v| v * 255.0).collect() }
    } else {
        // v·255 ≥ 0 here, where truncation is floor (and needs no libm call).
        FImage { h, w, c: 1, data: layer.into_iter().map(|v| ((v * 255.0) as i64) as f64).collect() }
    };
    let blurred = motion_blur_kernel(&layer, r, s, angle);
    let sl: Vec<f64> = blurred.data.iter().map(|&v| round_half_away(v).clamp(0.0, 255.0) / 255.0).collect();
    let mut out = vec![0.0; h * w * c];
    let (bf, b1) = (b as f32, 1.0 - b as f32);
    for (i, (o, src)) in out.chunks_exact_mut(c).zip(x.data.chunks_exact(c)).enumerate() {
        let mut px = [0f32; 3];
        for (v, &s) in px.iter_mut().zip(src) {
            *v = (s / 255.0) as f32;
        }
        let vals = blend_px(px, c, bf, b1, sl[i] + sl[h * w - 1 - i]);
        o.copy_from_slice(&vals[..c]);
    }
    Ok(FImage { h, w, c, data: out })
}

/// uint8 → uint8 snow: the float path's random draws and f64 arithmetic in the same order (same
/// bytes), but the snow layer lives in one edge-padded f64 plane reused per thread, its motion
/// blur reads only the span of each row that thresholding left non-zero (adding +0.0 changes no sum), the
/// blurred layer is kept as the whole numbers it is rounded to, and the blend reads the u8
/// pixels: no whole-image f64 buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn snow_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Vec<u8>> {
    let (mu, sd, z, t, r, s, b) = params(severity, p);
    check_square(p, h, w)?;
    let mut layer = crate::noise::normals(rng, h * w);
    layer.iter_mut().for_each(|v| *v = mu + sd * *v);
    let angle: f64 = rng.gen_range(-135.0..-45.0);
    let taps = motion_taps(r, s, angle, h, w);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return Ok(unsafe { snow_u8_avx2(x, h, w, c, &layer, &taps, p, (z, t, b)) });
    }
    Ok(snow_u8_impl(x, h, w, c, &layer, &taps, p, (z, t, b)))
}

/// [`snow_u8_impl`] compiled for AVX2 (no FMA: the same bits as the portable build).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn snow_u8_avx2(x: &[u8], h: usize, w: usize, c: usize, layer: &[f64], taps: &[(f64, isize, isize)], p: ParamSet, ztb: (f64, f64, f64)) -> Vec<u8> {
    snow_u8_impl(x, h, w, c, layer, taps, p, ztb)
}

/// [`snow_u8`] after its random draws: zoom, threshold, blur and blend.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn snow_u8_impl(x: &[u8], h: usize, w: usize, c: usize, layer: &[f64], taps: &[(f64, isize, isize)], p: ParamSet, (z, t, b): (f64, f64, f64)) -> Vec<u8> {
    let pad = taps.iter().map(|t| t.2.unsigned_abs()).max().unwrap_or(0);
    let pw = w + 2 * pad;
    let imagenet = p == ParamSet::ImageNet;
    /// The padded layer plane, each row's non-zero span, the blur's accumulator row.
    type Scratch = (Vec<f64>, Vec<(usize, usize)>, Vec<f64>);
    thread_local! {
        static PLANE: std::cell::Cell<Scratch> = const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new())) };
    }
    // Taken out of the thread-local and put back after, so the work below is compiled in this
    // function (with its target features), not in a closure.
    let (mut plane, mut live, mut acc) = PLANE.take();
    let mut sl = vec![0u8; h * w];
    plane.clear();
    plane.resize(h * pw, 0.0);
    live.clear();
    live.resize(h, (0, 0));
    acc.clear();
    acc.resize(w, 0.0);
    let (cy, cx) = crate::blur::clipped_zoom_coords(h, w, z, imagenet);
    let lerp = |sy: usize, r: &mut [f64]| {
        let s = &layer[sy * w..(sy + 1) * w];
        for (&(x0, x1, fx), o) in cx.iter().zip(r.iter_mut()) {
            *o = s[x0] * (1.0 - fx) + s[x1] * fx;
        }
    };
    // Each horizontally interpolated source row is computed once and kept while output rows
    // read it (about z of them in a row).
    let (mut ia, mut ib) = (usize::MAX, usize::MAX);
    let (mut ra, mut rb) = (vec![0.0; cx.len()], vec![0.0; cx.len()]);
    for (y, &(y0, y1, fy)) in cy.iter().enumerate() {
        if ia != y0 {
            if ib == y0 {
                std::mem::swap(&mut ra, &mut rb);
                std::mem::swap(&mut ia, &mut ib);
            } else {
                lerp(y0, &mut ra);
                ia = y0;
            }
        }
        if ib != y1 {
            lerp(y1, &mut rb);
            ib = y1;
        }
        let row = &mut plane[y * pw..(y + 1) * pw];
        for ((o, &a), &b) in row[pad..pad + w].iter_mut().zip(&ra).zip(&rb) {
            let v = a * (1.0 - fy) + b * fy;
            let v = if v < t { 0.0 } else { v.clamp(0.0, 1.0) };
            *o = if imagenet { v * 255.0 } else { ((v * 255.0) as i64) as f64 };
        }
        let (first, last) = (row[pad], row[pad + w - 1]);
        row[..pad].fill(first);
        row[pad + w..].fill(last);
        // The span of the padded row that may hold non-zero values (the pads copy the ends).
        if let Some(lo) = row.iter().position(|&v| v != 0.0) {
            let hi = row.iter().rposition(|&v| v != 0.0).unwrap_or(lo) + 1;
            live[y] = (lo, hi);
        }
    }
    blur_layer(&plane, &live, &mut acc, &mut sl, h, w, pad, taps);
    PLANE.set((plane, live, acc));
    let lut: [f32; 256] = std::array::from_fn(|v| (v as f64 / 255.0) as f32);
    let sl_f: [f64; 256] = std::array::from_fn(|v| v as f64 / 255.0);
    let (bf, b1) = (b as f32, 1.0 - b as f32);
    let mut out = vec![0u8; h * w * c];
    // Row by row in planar buffers, so the per-value arithmetic runs as vector loops.
    let mut add = vec![0f64; w];
    let mut px = vec![[0f32; 3]; w];
    for y in 0..h {
        let (row, orow) = (&x[y * w * c..(y + 1) * w * c], &mut out[y * w * c..(y + 1) * w * c]);
        for (i, a) in add.iter_mut().enumerate() {
            let k = y * w + i;
            *a = sl_f[sl[k] as usize] + sl_f[sl[h * w - 1 - k] as usize];
        }
        if c == 3 {
            for (p, s) in px.iter_mut().zip(row.chunks_exact(3)) {
                *p = [lut[s[0] as usize], lut[s[1] as usize], lut[s[2] as usize]];
            }
            for ((o, p), &a) in orow.chunks_exact_mut(3).zip(&px).zip(&add) {
                let v = blend_px(*p, 3, bf, b1, a);
                o.copy_from_slice(&[crate::cast_u8(v[0]), crate::cast_u8(v[1]), crate::cast_u8(v[2])]);
            }
        } else {
            for ((o, &s), &a) in orow.iter_mut().zip(row).zip(&add) {
                *o = crate::cast_u8(blend_px([lut[s as usize], 0.0, 0.0], 1, bf, b1, a)[0]);
            }
        }
    }
    out
}

/// One pixel of the final blend (float32 image as the reference; grey = OpenCV RGB2GRAY), on the
/// 0..255 scale before the cast; shared by both paths so their arithmetic cannot drift apart.
#[inline(always)]
fn blend_px(px: [f32; 3], c: usize, bf: f32, b1: f32, add: f64) -> [f64; 3] {
    let grey = if c == 3 { px[0] * 0.299 + px[1] * 0.587 + px[2] * 0.114 } else { px[0] };
    let lift = grey * 1.5 + 0.5;
    let mut out = [0.0; 3];
    for (o, &v) in out.iter_mut().zip(&px).take(c) {
        // v and lift are never NaN, so a plain comparison is `max`.
        let m = if v > lift { v } else { lift };
        let v = bf * v + b1 * m;
        *o = (v as f64 + add).clamp(0.0, 1.0) * 255.0;
    }
    out
}

/// The snow layer's motion blur (taps in order from 0.0, as [`crate::blur::motion_blur_kernel`]
/// sums them), rounded half away from zero into `sl`. AVX2 where present: wider vectors, and no
/// FMA, so the sums are the same bits as the portable build's.
#[allow(clippy::too_many_arguments)]
fn blur_layer(plane: &[f64], live: &[(usize, usize)], acc: &mut [f64], sl: &mut [u8], h: usize, w: usize, pad: usize, taps: &[(f64, isize, isize)]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { blur_layer_avx2(plane, live, acc, sl, h, w, pad, taps) };
    }
    blur_layer_impl(plane, live, acc, sl, h, w, pad, taps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn blur_layer_avx2(plane: &[f64], live: &[(usize, usize)], acc: &mut [f64], sl: &mut [u8], h: usize, w: usize, pad: usize, taps: &[(f64, isize, isize)]) {
    blur_layer_impl(plane, live, acc, sl, h, w, pad, taps)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn blur_layer_impl(plane: &[f64], live: &[(usize, usize)], acc: &mut [f64], sl: &mut [u8], h: usize, w: usize, pad: usize, taps: &[(f64, isize, isize)]) {
    let pw = w + 2 * pad;
    for y in 0..h {
        acc.fill(0.0);
        for &(kv, dy, dx) in taps {
            let sy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
            // Only the outputs that read the row's non-zero span: elsewhere the term is
            // kv·0 = +0.0, which leaves every (non-negative) sum as it is.
            let (lo, hi) = live[sy];
            let off = pad as isize + dx;
            let x0 = (lo as isize - off).clamp(0, w as isize) as usize;
            let x1 = (hi as isize - off).clamp(0, w as isize) as usize;
            if x0 >= x1 {
                continue;
            }
            let start = sy * pw + (off + x0 as isize) as usize;
            for (o, &v) in acc[x0..x1].iter_mut().zip(&plane[start..start + (x1 - x0)]) {
                *o += kv * v;
            }
        }
        for (o, &a) in sl[y * w..(y + 1) * w].iter_mut().zip(acc.iter()) {
            *o = round_half_away(a).clamp(0.0, 255.0) as u8;
        }
    }
}

/// `f64::round` (half away from zero) without the libm call the baseline x86-64 target makes:
/// exact, since x − trunc(x) is exact for |x| < 2⁵².
#[inline(always)]
fn round_half_away(x: f64) -> f64 {
    if x.abs() >= 4.0e15 || x.is_nan() {
        return x.round();
    }
    let t = (x as i64) as f64;
    let d = x - t;
    if d >= 0.5 {
        t + 1.0
    } else if d <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_half_away_is_round() {
        for x in [0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994, 254.5, 254.49999999999997, -3.2, 7.7, 1e16, f64::NAN] {
            let (a, b) = (super::round_half_away(x), x.round());
            assert!(a == b || (a.is_nan() && b.is_nan()), "{x}: {a} vs {b}");
        }
    }
}
