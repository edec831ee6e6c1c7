//! snow: a zoomed, thresholded Gaussian snow layer smeared by ImageMagick's motion blur (the taps
//! of blur.rs's native model), added twice (as is and rotated 180°) to a whitened image. Both paths
//! share the layer and the blend's arithmetic, so the uint8 path gives the float path's bytes.
use crate::blur::motion_taps;
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
    let (h, w, c) = (x.h, x.w, x.c);
    let (sl, b) = snow_layer(h, w, severity, p, rng)?;
    let mut data = vec![0.0; h * w * c];
    blend(&x.data, &mut data, h, w, c, &sl, b, |v| v as f32, |v| v.clamp(0.0, 255.0) as f64);
    Ok(FImage { h, w, c, data })
}

/// uint8 → uint8 snow: the float path's snow layer and per-value arithmetic (same bytes), reading
/// the u8 pixels directly (no whole-image f64 buffer).
#[allow(clippy::too_many_arguments)]
pub(crate) fn snow_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Vec<u8>> {
    let (sl, b) = snow_layer(h, w, severity, p, rng)?;
    let mut out = vec![0u8; h * w * c];
    blend(x, &mut out, h, w, c, &sl, b, |v| v as f32, crate::cast_u8_f32);
    Ok(out)
}

/// The blurred snow layer of one call, rounded to 0..=255 (the reference's 8-bit ImageMagick
/// output, or imagecorruptions' rounding to 1/255 steps), and the blend weight b. Shared by both
/// paths. Only the normals the zoom reads are drawn (its source crop, ⌈side/z⌉ square), in f32
/// from there on: the layer only feeds a random corruption.
fn snow_layer(h: usize, w: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<(Vec<u8>, f32)> {
    let (mu, sd, z, t, r, s, b) = params(severity, p);
    check_square(p, h, w)?;
    let imagenet = p == ParamSet::ImageNet;
    let (cy, cx) = crate::blur::clipped_zoom_coords(h, w, z, imagenet);
    // The source box the zoom reads, [y0, y1] × [x0, x1].
    let span = |a: &[(usize, usize, f64)]| (a.iter().map(|v| v.0).min().unwrap_or(0), a.iter().map(|v| v.1).max().unwrap_or(0));
    let ((y0, y1), (x0, x1)) = (span(&cy), span(&cx));
    let bw = x1 + 1 - x0;
    let layer: Vec<f32> = crate::noise::normals(rng, (y1 + 1 - y0) * bw).into_iter().map(|v| (mu + sd * v) as f32).collect();
    let angle: f64 = rng.gen_range(-135.0..-45.0);
    let taps: Vec<(f32, isize, isize)> = motion_taps(r, s, angle, h, w).into_iter().map(|(k, dy, dx)| (k as f32, dy, dx)).collect();
    let cx: Vec<(usize, usize, f32)> = cx.into_iter().map(|(a, b, f)| (a - x0, b - x0, f as f32)).collect();
    let cy: Vec<(usize, usize, f32)> = cy.into_iter().map(|(a, b, f)| (a - y0, b - y0, f as f32)).collect();
    let mut sl = vec![0u8; h * w];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { layer_avx2(&layer, bw, &cy, &cx, &taps, t as f32, imagenet, h, w, &mut sl) };
        return Ok((sl, b as f32));
    }
    layer_impl(&layer, bw, &cy, &cx, &taps, t as f32, imagenet, h, w, &mut sl);
    Ok((sl, b as f32))
}

/// [`layer_impl`] compiled for AVX2 (no FMA: the same bits as the portable build).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn layer_avx2(layer: &[f32], bw: usize, cy: &[(usize, usize, f32)], cx: &[(usize, usize, f32)], taps: &[(f32, isize, isize)], t: f32, imagenet: bool, h: usize, w: usize, sl: &mut [u8]) {
    layer_impl(layer, bw, cy, cx, taps, t, imagenet, h, w, sl)
}

/// Zoom (bilinear, rows of the source box `bw` wide), threshold, then the motion blur into `sl`.
/// The layer lives in one edge-padded plane reused per thread, and the blur reads only the span of
/// each row that thresholding left non-zero (adding +0.0 changes no sum).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn layer_impl(layer: &[f32], bw: usize, cy: &[(usize, usize, f32)], cx: &[(usize, usize, f32)], taps: &[(f32, isize, isize)], t: f32, imagenet: bool, h: usize, w: usize, sl: &mut [u8]) {
    let pad = taps.iter().map(|t| t.2.unsigned_abs()).max().unwrap_or(0);
    let pw = w + 2 * pad;
    /// The padded layer plane and each row's non-zero span.
    type Scratch = (Vec<f32>, Vec<(usize, usize)>);
    thread_local! {
        static PLANE: std::cell::Cell<Scratch> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
    }
    // Taken out of the thread-local and put back after, so the work below is compiled in this
    // function (with its target features), not in a closure.
    let (mut plane, mut live) = PLANE.take();
    // Not cleared: every row the zoom reaches is written in full below, and the blur reads no
    // other row (its span stays empty).
    plane.resize(plane.len().max(h * pw), 0.0);
    live.clear();
    live.resize(h, (0, 0));
    let lerp = |sy: usize, r: &mut [f32]| {
        let s = &layer[sy * bw..(sy + 1) * bw];
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
            // CIFAR/Tiny: the layer goes through an 8-bit grey PNG (truncated) into ImageMagick;
            // imagecorruptions blurs the float layer. v·255 ≥ 0, where truncation is floor.
            // SAFETY: v·255 is finite and within 0..=255.
            *o = if imagenet { v * 255.0 } else { (unsafe { (v * 255.0).to_int_unchecked::<i32>() }) as f32 };
        }
        row[pad + cx.len()..pad + w].fill(0.0);
        let (first, last) = (row[pad], row[pad + w - 1]);
        row[..pad].fill(first);
        row[pad + w..].fill(last);
        // The span of the padded row that may hold non-zero values (the pads copy the ends).
        // Values are +0.0 or positive, so a zero bit pattern is the test (no NaN branch).
        if let Some(lo) = row.iter().position(|&v| v.to_bits() != 0) {
            let hi = row.iter().rposition(|&v| v.to_bits() != 0).unwrap_or(lo) + 1;
            live[y] = (lo, hi);
        }
    }
    let mut rows = Vec::with_capacity(taps.len());
    for y in 0..h {
        // Per tap: weight, source row, start of output column 0 in the padded row.
        rows.clear();
        rows.extend(taps.iter().map(|&(kv, dy, dx)| (kv, (y as isize + dy).clamp(0, h as isize - 1) as usize, (pad as isize + dx) as usize)));
        let out = &mut sl[y * w..(y + 1) * w];
        let mut x0 = 0;
        // 112 = half a 224-pixel row: 14 accumulator registers.
        while x0 + 112 <= w {
            blur_block::<112>(&plane, pw, &live, &rows, x0, &mut out[x0..x0 + 112]);
            x0 += 112;
        }
        while x0 + 32 <= w {
            blur_block::<32>(&plane, pw, &live, &rows, x0, &mut out[x0..x0 + 32]);
            x0 += 32;
        }
        while x0 + 8 <= w {
            blur_block::<8>(&plane, pw, &live, &rows, x0, &mut out[x0..x0 + 8]);
            x0 += 8;
        }
        for x in x0..w {
            blur_block::<1>(&plane, pw, &live, &rows, x, &mut out[x..x + 1]);
        }
    }
    PLANE.set((plane, live));
}

/// B outputs of the motion blur from column x0, summed in registers over the taps in tap order
/// (so each value's sum does not depend on the blocking). A tap whose source span is all zero is
/// skipped: its terms are kv·0 = +0.0, which leaves every (non-negative) sum as it is.
#[inline(always)]
fn blur_block<const B: usize>(plane: &[f32], pw: usize, live: &[(usize, usize)], rows: &[(f32, usize, usize)], x0: usize, out: &mut [u8]) {
    let mut acc = [0f32; B];
    for &(kv, sy, s) in rows {
        let (lo, hi) = live[sy];
        let s = s + x0;
        if s + B <= lo || s >= hi {
            continue;
        }
        let v: &[f32; B] = plane[sy * pw + s..][..B].try_into().unwrap();
        for i in 0..B {
            acc[i] += kv * v[i];
        }
    }
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = round_u8(a);
    }
}

/// A non-negative sum rounded half away from zero and saturated to 255 (truncation is floor
/// here, and needs no libm call in the portable build).
#[inline(always)]
fn round_u8(a: f32) -> u8 {
    // SAFETY: a is a finite sum of non-negative terms, so the value converted is within 0..=255.
    let t = unsafe { a.min(255.0).to_int_unchecked::<i32>() };
    (t + (a - t as f32 >= 0.5) as i32).min(255) as u8
}

/// out = clip(b·x + (1 − b)·max(x, 1.5·grey + 0.5) + L + rot180(L), 0, 1)·255 per value, x on
/// the 0..1 scale (grey = OpenCV RGB2GRAY; a grey image's own level), L the snow layer / 255,
/// computed on the 0..255 scale (x, the layer's whole numbers, 1.5·grey + 127.5) in f32; `put`
/// clips to 0..=255 (as the uint8 cast does anyway).
#[allow(clippy::too_many_arguments)]
fn blend<T: Copy, O: Copy>(x: &[T], out: &mut [O], h: usize, w: usize, c: usize, sl: &[u8], b: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { blend_avx2(x, out, h, w, c, sl, b, get, put) };
    }
    blend_impl(x, out, h, w, c, sl, b, get, put)
}

/// [`blend_impl`] compiled for AVX2 (no FMA: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn blend_avx2<T: Copy, O: Copy>(x: &[T], out: &mut [O], h: usize, w: usize, c: usize, sl: &[u8], b: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
    blend_impl(x, out, h, w, c, sl, b, get, put)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn blend_impl<T: Copy, O: Copy>(x: &[T], out: &mut [O], h: usize, w: usize, c: usize, sl: &[u8], b: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
    let b1 = 1.0 - b;
    let px = |v: f32, lift: f32, add: f32| {
        // v and lift are never NaN, so a plain comparison is `max`.
        let m = if v > lift { v } else { lift };
        put((b * v + b1 * m) + add)
    };
    let mut add = vec![0f32; w];
    for y in 0..h {
        // L at (y, i) plus L at (h−1−y, w−1−i).
        let (fwd, rev) = (&sl[y * w..(y + 1) * w], &sl[(h - 1 - y) * w..(h - y) * w]);
        for ((o, &a), &r) in add.iter_mut().zip(fwd).zip(rev.iter().rev()) {
            *o = (a as u16 + r as u16) as f32;
        }
        let (row, orow) = (&x[y * w * c..(y + 1) * w * c], &mut out[y * w * c..(y + 1) * w * c]);
        if c == 3 {
            // Stride-3 loops, which the compiler vectorises as interleaved groups.
            for ((op, xp), &a) in orow.chunks_exact_mut(3).zip(row.chunks_exact(3)).zip(&add) {
                let v = [get(xp[0]), get(xp[1]), get(xp[2])];
                let lift = (v[0] * 0.299 + v[1] * 0.587 + v[2] * 0.114) * 1.5 + 127.5;
                op[0] = px(v[0], lift, a);
                op[1] = px(v[1], lift, a);
                op[2] = px(v[2], lift, a);
            }
        } else {
            for ((o, &s), &a) in orow.iter_mut().zip(row).zip(&add) {
                let v = get(s);
                *o = px(v, v * 1.5 + 127.5, a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_u8_rounds_half_away_and_saturates() {
        for (a, r) in [(0.0, 0), (0.49999997, 0), (0.5, 1), (1.5, 2), (2.5, 3), (254.49998, 254), (254.5, 255), (255.0, 255), (300.0, 255)] {
            assert_eq!(round_u8(a), r, "{a}");
        }
    }

    /// The AVX2 builds give the portable build's bits (layer and blend).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_is_portable() {
        use rand::{Rng as _, SeedableRng};
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut r = Rng::seed_from_u64(6);
        for (h, w, c, p, sev) in [(224, 224, 3, ParamSet::ImageNet, 3), (224, 224, 3, ParamSet::ImageNet, 5), (37, 29, 1, ParamSet::ImageNet, 1), (32, 32, 3, ParamSet::Cifar10, 4)] {
            let x: Vec<u8> = (0..h * w * c).map(|_| r.gen()).collect();
            let (mu, sd, z, t, rad, s, b) = params(sev, p);
            let (cy, cx) = crate::blur::clipped_zoom_coords(h, w, z, p == ParamSet::ImageNet);
            let bw = cx.iter().map(|v| v.1).max().unwrap() + 1;
            let bh = cy.iter().map(|v| v.1).max().unwrap() + 1;
            let layer: Vec<f32> = (0..bh * bw).map(|_| (mu + sd * r.gen::<f64>() * 3.0) as f32).collect();
            let taps: Vec<(f32, isize, isize)> = motion_taps(rad, s, -70.0, h, w).into_iter().map(|(k, dy, dx)| (k as f32, dy, dx)).collect();
            let cx: Vec<(usize, usize, f32)> = cx.into_iter().map(|(a, b, f)| (a, b, f as f32)).collect();
            let cy: Vec<(usize, usize, f32)> = cy.into_iter().map(|(a, b, f)| (a, b, f as f32)).collect();
            let (mut sa, mut sb) = (vec![0u8; h * w], vec![0u8; h * w]);
            // SAFETY: the CPU supports AVX2 (checked above).
            unsafe { layer_avx2(&layer, bw, &cy, &cx, &taps, t as f32, p == ParamSet::ImageNet, h, w, &mut sa) };
            layer_impl(&layer, bw, &cy, &cx, &taps, t as f32, p == ParamSet::ImageNet, h, w, &mut sb);
            assert!(sa == sb && sa.iter().any(|&v| v > 0), "layer {h}x{w} {p:?} s{sev}");
            let (mut a, mut b2) = (vec![0u8; x.len()], vec![0u8; x.len()]);
            // SAFETY: as above.
            unsafe { blend_avx2(&x, &mut a, h, w, c, &sa, b as f32, |v| v as f32, crate::cast_u8_f32) };
            blend_impl(&x, &mut b2, h, w, c, &sa, b as f32, |v| v as f32, crate::cast_u8_f32);
            assert!(a == b2, "blend {h}x{w}x{c}");
        }
    }
}
