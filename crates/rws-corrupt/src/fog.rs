//! fog: the reference's diamond-square ("plasma") fractal added to the image, then rescaled.

use crate::noise::{Fast, Fast4};
use crate::{FImage, ParamSet, Result, Rng};

/// The reference `plasma_fractal(mapsize, wibbledecay)`: a toroidal N×N diamond-square map (corner
/// 0, wibble 100, each new point = mean of its 4 parents + wibble·U(−wibble, wibble), wibble /= decay
/// per level), shifted and scaled to [0, 1]. Row-major N×N, f32 (the map only feeds random
/// corruptions, and f32 halves the memory traffic and doubles the vector width). The shift and
/// scale are returned, not applied: each caller folds them into its own per-pixel arithmetic,
/// which saves a pass over the map.
///
/// Built one level at a time on compact grids: the level's known points G (g×g) give the square
/// centres C[i][j] (from G[i..=i+1][j..=j+1]), then the two kinds of diamond points (from G and C),
/// each a contiguous row loop with offset-by-one neighbours, and the 2g×2g grid is their
/// interleaving. The wibbles come in bulk from [`Fast4`], two signed 24-bit draws per 64 bits.
pub(crate) fn plasma_fractal(n: usize, decay: f64, rng: &mut Fast) -> Plasma {
    assert!(n.is_power_of_two());
    let mut f4 = Fast4::from_fast(rng);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { plasma_avx2(n, decay, &mut f4) };
    }
    plasma_impl(n, decay, &mut f4)
}

/// [`plasma_impl`] compiled for AVX2 (no FMA: the same bits as the portable build).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn plasma_avx2(n: usize, decay: f64, f4: &mut Fast4) -> Plasma {
    plasma_impl(n, decay, f4)
}

#[inline(always)]
fn plasma_impl(n: usize, decay: f64, f4: &mut Fast4) -> Plasma {
    // The level grids: written, not zeroed first (a 256×256 map's two buffers are 512 KB).
    let mut cur = Vec::with_capacity(n * n);
    cur.push(0f32);
    let mut next: Vec<f32> = Vec::with_capacity(n * n);
    let mut cen = vec![0f32; n * n / 4];
    // Two rows of wibbles (H then V) and the 64-bit draws behind them, rounded up to whole
    // `Fast4::fill` calls (4 draws, 8 wibbles).
    let mut nz = vec![0f32; n + 8];
    let mut bits = vec![0u64; n / 2 + 4];
    let mut row = vec![0f32; n];
    let mut g = 1;
    let mut wib = 100.0f64;
    while 2 * g <= n {
        // wib·U(−wib, wib) = 2·wib²·u with u uniform on [−½, ½): a signed 24-bit integer times
        // 2·wib²·2⁻²⁴ (one rounding, the power-of-two factor is exact).
        let scale = (2.0 * wib * wib / (1u64 << 24) as f64) as f32;
        let gm = &cur[..g * g];
        let cen = &mut cen[..g * g];
        for i in 0..g {
            let (a, b) = (&gm[i * g..][..g], &gm[(i + 1) % g * g..][..g]);
            wibbles(f4, &mut bits, &mut nz, g, scale);
            let c = &mut cen[i * g..][..g];
            for ((((o, &a0), &b0), (&a1, &b1)), &z) in c.iter_mut().zip(a).zip(b).zip(a[1..].iter().zip(&b[1..])).zip(&nz[..g]) {
                *o = (a0 + b0 + a1 + b1) * 0.25 + z;
            }
            c[g - 1] = (a[g - 1] + b[g - 1] + a[0] + b[0]) * 0.25 + nz[g - 1];
        }
        next.clear();
        let f = &mut next.spare_capacity_mut()[..4 * g * g];
        for i in 0..g {
            let (gi, gi1) = (&gm[i * g..][..g], &gm[(i + 1) % g * g..][..g]);
            let (ci, cm) = (&cen[i * g..][..g], &cen[(i + g - 1) % g * g..][..g]);
            wibbles(f4, &mut bits, &mut nz, 2 * g, scale);
            let (nh, nv) = nz[..2 * g].split_at(g);
            // Between horizontal neighbours G[i][j], G[i][j+1] (C above and below), interleaved
            // with G into row 2i.
            let h = &mut row[..g];
            for ((((o, &c0), &c1), (&g0, &g1)), &z) in h.iter_mut().zip(ci).zip(cm).zip(gi.iter().zip(&gi[1..])).zip(nh) {
                *o = (c0 + c1 + g0 + g1) * 0.25 + z;
            }
            h[g - 1] = (ci[g - 1] + cm[g - 1] + gi[g - 1] + gi[0]) * 0.25 + nh[g - 1];
            for ((o, &g0), &h0) in f[2 * i * 2 * g..][..2 * g].chunks_exact_mut(2).zip(gi).zip(h.iter()) {
                o[0].write(g0);
                o[1].write(h0);
            }
            // Between vertical neighbours G[i][j], G[i+1][j] (C left and right), interleaved with
            // C into row 2i + 1.
            let v = &mut row[..g];
            v[0] = (ci[0] + ci[g - 1] + gi[0] + gi1[0]) * 0.25 + nv[0];
            for ((((o, &c0), &c1), (&g0, &g1)), &z) in v[1..].iter_mut().zip(&ci[1..]).zip(ci).zip(gi[1..].iter().zip(&gi1[1..])).zip(&nv[1..]) {
                *o = (c0 + c1 + g0 + g1) * 0.25 + z;
            }
            for ((o, &v0), &c0) in f[(2 * i + 1) * 2 * g..][..2 * g].chunks_exact_mut(2).zip(v.iter()).zip(ci) {
                o[0].write(v0);
                o[1].write(c0);
            }
        }
        // SAFETY: the loop above wrote all 4g² values (rows 2i and 2i + 1, 2g each, for every
        // i < g), within the capacity of n² ≥ 4g².
        unsafe { next.set_len(4 * g * g) };
        std::mem::swap(&mut cur, &mut next);
        g *= 2;
        wib /= decay;
    }
    let (lo, hi) = min_max(&cur);
    // A flat map stays 0, as the reference's.
    Plasma { map: cur, lo, inv: if hi > lo { 1.0 / (hi - lo) } else { 0.0 } }
}

/// A plasma map and its normalisation: the reference's value at i is (map[i] − lo)·inv, within
/// [0, 1] (the maximum may land one rounding off 1).
pub(crate) struct Plasma {
    pub map: Vec<f32>,
    pub lo: f32,
    pub inv: f32,
}

/// `len` wibbles into `nz`: signed 24-bit uniforms (the low halves of the draws, then the high
/// halves) times `scale`.
#[inline(always)]
fn wibbles(f4: &mut Fast4, bits: &mut [u64], nz: &mut [f32], len: usize, scale: f32) {
    let nb = len.div_ceil(8) * 4;
    f4.fill(&mut bits[..nb]);
    let (lo, hi) = nz[..2 * nb].split_at_mut(nb);
    for ((l, h), &v) in lo.iter_mut().zip(hi.iter_mut()).zip(&bits[..nb]) {
        *l = ((v as i32) >> 8) as f32 * scale;
        *h = (((v >> 32) as i32) >> 8) as f32 * scale;
    }
}

/// (min, max) of a non-empty slice without NaN.
#[inline(always)]
fn min_max(m: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if m.len() >= 8 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), and m holds at least 8 values.
        return unsafe { min_max_avx2(m) };
    }
    m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| (l.min(v), h.max(v)))
}

/// [`min_max`] in 8 lanes (the compiler does not vectorise `f32::min`, whose NaN rule it must
/// keep); min and max are exact, so the result is the portable one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn min_max_avx2(m: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
    // SAFETY (unaligned loads): every load reads 8 values inside `m` (m.len() ≥ 8; the last one
    // is the final 8, overlapping the loop's, which min/max do not mind).
    let p = m.as_ptr();
    let (mut lo, mut hi) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p));
    let mut i = 8;
    while i + 8 <= m.len() {
        let v = _mm256_loadu_ps(p.add(i));
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
        i += 8;
    }
    let v = _mm256_loadu_ps(p.add(m.len() - 8));
    lo = _mm256_min_ps(lo, v);
    hi = _mm256_max_ps(hi, v);
    let (mut l, mut h) = ([0f32; 8], [0f32; 8]);
    _mm256_storeu_ps(l.as_mut_ptr(), lo);
    _mm256_storeu_ps(h.as_mut_ptr(), hi);
    (l.iter().cloned().fold(f32::INFINITY, f32::min), h.iter().cloned().fold(f32::NEG_INFINITY, f32::max))
}

/// Map side: the reference's (32 for CIFAR, 64 for Tiny-ImageNet; imagecorruptions: the next power
/// of two ≥ max(H, W), 256 at 224), grown to the next power of two ≥ max(H, W) when the image is
/// larger than that, so any size works; smaller images take the top-left H×W, as the reference.
pub(crate) fn fog_map_size(p: ParamSet, h: usize, w: usize) -> usize {
    let need = h.max(w).max(1).next_power_of_two();
    match p {
        ParamSet::Cifar10 => need.max(32),
        ParamSet::TinyImageNet => need.max(64),
        ParamSet::ImageNet => need,
    }
}

/// out = clip((x + c·P)·m/(m + c)) with m the clean image's maximum over all channels; the same
/// fractal value is added to every channel (so grey images stay grey).
pub(crate) fn fog(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let mx = x.data.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let data = fog_apply(&x.data, x.h, x.w, x.c, mx, severity, p, rng, |v| v as f32, |v| v.clamp(0.0, 255.0) as f64);
    Ok(FImage { h: x.h, w: x.w, c: x.c, data })
}

/// fog from uint8 to uint8: the same draws and arithmetic as [`fog`], then the reference's cast.
pub(crate) fn fog_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let mx = x.iter().copied().max().unwrap_or(0) as f64;
    fog_apply(x, h, w, c, mx, severity, p, rng, |v| v as f32, crate::cast_u8_f32)
}

#[allow(clippy::too_many_arguments)]
fn fog_apply<T: Copy, O: Copy + Default>(x: &[T], h: usize, w: usize, ch: usize, mx: f64, severity: usize, p: ParamSet, rng: &mut Rng, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) -> Vec<O> {
    let (c, d) = match p {
        ParamSet::Cifar10 => [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)],
        ParamSet::TinyImageNet => [(0.4, 3.0), (0.7, 3.0), (1.0, 2.5), (1.5, 2.0), (2.0, 1.75)],
        ParamSet::ImageNet => [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
    }[severity - 1];
    let n = fog_map_size(p, h, w);
    let pm = plasma_fractal(n, d, &mut Fast::from_rng(rng));
    let mx = mx / 255.0;
    let scale = mx / (mx + c);
    // On the 0..255 scale: clip((x/255 + c·P)·s, 0, 1)·255 = clip(x·s + 255·c·s·P, 0, 255), with
    // P = (map − lo)·inv.
    let (lo, k, scale) = (pm.lo, (255.0 * c * scale) as f32 * pm.inv, scale as f32);
    let pm = &pm.map;
    let mut data = vec![O::default(); x.len()];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { blend_avx2(x, &mut data, pm, n, w, ch, lo, k, scale, get, put) };
        return data;
    }
    blend(x, &mut data, pm, n, w, ch, lo, k, scale, get, put);
    data
}

/// [`blend`] compiled for AVX2 (no FMA: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn blend_avx2<T: Copy, O: Copy>(x: &[T], out: &mut [O], pm: &[f32], n: usize, w: usize, ch: usize, lo: f32, k: f32, scale: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
    blend(x, out, pm, n, w, ch, lo, k, scale, get, put)
}

/// out = clip(x·scale + k·(map − lo)) row by row (`put` clips to 0..=255, as the uint8 cast
/// does anyway); RGB in blocks of 8 pixels whose map values are spread
/// to their 24 channel values by constant indices, so the value loop vectorises.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn blend<T: Copy, O: Copy>(x: &[T], out: &mut [O], pm: &[f32], n: usize, w: usize, ch: usize, lo: f32, k: f32, scale: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
    let f = |v: T, add: f32| put(get(v) * scale + add);
    if w * ch == 0 {
        return;
    }
    for (r, (xr, dr)) in x.chunks_exact(w * ch).zip(out.chunks_exact_mut(w * ch)).enumerate() {
        let pr = &pm[r * n..r * n + w];
        if ch == 1 {
            for ((o, &v), &pv) in dr.iter_mut().zip(xr).zip(pr) {
                *o = f(v, k * (pv - lo));
            }
        } else if ch == 3 {
            let mut xs = xr.chunks_exact(24);
            let mut ds = dr.chunks_exact_mut(24);
            let mut ps = pr.chunks_exact(8);
            for ((xb, db), pb) in (&mut xs).zip(&mut ds).zip(&mut ps) {
                let mut add = [0f32; 8];
                for i in 0..8 {
                    add[i] = k * (pb[i] - lo);
                }
                for i in 0..24 {
                    db[i] = f(xb[i], add[i / 3]);
                }
            }
            for ((xp, dp), &pv) in xs.remainder().chunks_exact(3).zip(ds.into_remainder().chunks_exact_mut(3)).zip(ps.remainder()) {
                let add = k * (pv - lo);
                for (o, &v) in dp.iter_mut().zip(xp) {
                    *o = f(v, add);
                }
            }
        } else {
            for ((xp, dp), &pv) in xr.chunks_exact(ch).zip(dr.chunks_exact_mut(ch)).zip(pr) {
                let add = k * (pv - lo);
                for (o, &v) in dp.iter_mut().zip(xp) {
                    *o = f(v, add);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng};

    /// Diamond-square as the reference writes it (one full map, every index wrapped), with the
    /// same wibbles in the same order, before normalisation: the compact-grid levels must give the
    /// same values.
    #[allow(clippy::needless_range_loop)] // indexed as the reference writes it
    fn plasma_reference(n: usize, decay: f64, rng: &mut Fast) -> Vec<f32> {
        let mut f4 = Fast4::from_fast(rng);
        let (mut bits, mut nz) = (vec![0u64; n / 2 + 4], vec![0f32; n + 8]);
        let mut m = vec![0f32; n * n];
        let mask = n - 1;
        let at = |r: usize, c: usize| (r & mask) * n + (c & mask);
        let (mut step, mut wib) = (n, 100.0f64);
        while step >= 2 {
            let (hs, g) = (step / 2, n / step);
            let scale = (2.0 * wib * wib / (1u64 << 24) as f64) as f32;
            for a in 0..g {
                wibbles(&mut f4, &mut bits, &mut nz, g, scale);
                for b in 0..g {
                    let (r, c) = (a * step, b * step);
                    let s = m[at(r, c)] + m[at(r + step, c)] + m[at(r, c + step)] + m[at(r + step, c + step)];
                    m[at(r + hs, c + hs)] = s * 0.25 + nz[b];
                }
            }
            for a in 0..g {
                wibbles(&mut f4, &mut bits, &mut nz, 2 * g, scale);
                for b in 0..g {
                    let (r, c) = (a * step, b * step);
                    let s = m[at(r + hs, c + hs)] + m[at(r + n - hs, c + hs)] + m[at(r, c)] + m[at(r, c + step)];
                    m[at(r, c + hs)] = s * 0.25 + nz[b];
                    let s = m[at(r + hs, c + hs)] + m[at(r + hs, c + n - hs)] + m[at(r, c)] + m[at(r + step, c)];
                    m[at(r + hs, c)] = s * 0.25 + nz[g + b];
                }
            }
            step /= 2;
            wib /= decay;
        }
        m
    }

    #[test]
    fn plasma_matches_plain_loops_and_spans_0_to_1() {
        for (n, d) in [(32, 3.0), (64, 1.75), (256, 1.4), (2, 2.0), (1, 2.0)] {
            let mut a = Fast::from_rng(&mut crate::Rng::seed_from_u64(n as u64));
            let mut b = Fast::from_rng(&mut crate::Rng::seed_from_u64(n as u64));
            let p = plasma_fractal(n, d, &mut a);
            assert!(p.map == plasma_reference(n, d, &mut b), "n={n}");
            let (lo, hi) = p.map.iter().map(|&v| (v - p.lo) * p.inv).fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
            assert!(lo == 0.0 && if n == 1 { hi == 0.0 } else { (hi - 1.0).abs() < 1e-6 }, "n={n}: {lo}..{hi}");
        }
    }

    /// The AVX2 builds give the portable build's bits (map and blend).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_is_portable() {
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        for (n, d) in [(32, 3.0), (256, 1.4)] {
            let seed = || Fast4::from_fast(&mut Fast::from_rng(&mut crate::Rng::seed_from_u64(5)));
            // SAFETY: the CPU supports AVX2 (checked above).
            let (v, u) = (unsafe { plasma_avx2(n, d, &mut seed()) }, plasma_impl(n, d, &mut seed()));
            assert!(v.map == u.map && (v.lo, v.inv) == (u.lo, u.inv), "n={n}");
            for len in [8, 13, n * n] {
                let m = &v.map[..len];
                let plain = m.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &x| (l.min(x), h.max(x)));
                // SAFETY: as above, and len ≥ 8.
                assert_eq!(unsafe { min_max_avx2(m) }, plain, "n={n} len={len}");
            }
        }
        let mut r = crate::Rng::seed_from_u64(2);
        for (h, w, c) in [(224usize, 224usize, 3usize), (37, 29, 3), (40, 31, 1)] {
            let n = h.max(w).next_power_of_two();
            let pm: Vec<f32> = (0..n * n).map(|_| r.gen()).collect();
            let x: Vec<u8> = (0..h * w * c).map(|_| r.gen()).collect();
            let (mut a, mut b) = (vec![0u8; x.len()], vec![0u8; x.len()]);
            // SAFETY: the CPU supports AVX2 (checked above).
            unsafe { blend_avx2(&x, &mut a, &pm, n, w, c, 0.1, 290.0, 0.7, |v| v as f32, crate::cast_u8_f32) };
            blend(&x, &mut b, &pm, n, w, c, 0.1, 290.0, 0.7, |v| v as f32, crate::cast_u8_f32);
            assert!(a == b, "{h}x{w}x{c}");
        }
    }
}
