//! The four noise corruptions. Each value (each channel of each pixel) gets its own draw, as in
//! the reference; a grey image (c = 1) is noised on its single channel, which is what the
//! reference's output would be for one channel of the grey image stacked to RGB.

use crate::{FImage, ParamSet, Result, Rng};
use rand::RngCore;
use rand_distr::{Distribution, Poisson};
use std::cell::RefCell;
use std::collections::HashMap;

/// xoshiro256++ seeded from the caller's ChaCha8 stream. The bulk draws (one or more per pixel)
/// come from here: ChaCha8 costs ~2.5 ns per 64 bits on this machine, more than the whole
/// per-value budget of the speed goal. Seeding from the caller's RNG keeps runs reproducible.
pub(crate) struct Fast {
    s: [u64; 4],
}

impl Fast {
    pub(crate) fn from_rng(rng: &mut Rng) -> Self {
        let mut s = [0u64; 4];
        s.iter_mut().for_each(|v| *v = rng.next_u64());
        if s == [0; 4] {
            s[0] = 1;
        }
        Fast { s }
    }

    #[inline(always)]
    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let r = (s[0].wrapping_add(s[3])).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1) with 53 random bits.
    #[inline(always)]
    pub(crate) fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    #[inline(always)]
    pub(crate) fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Two standard normals from one 64-bit draw (see [`normal_from_u32`]).
    #[inline(always)]
    pub(crate) fn normal2(&mut self) -> (f64, f64) {
        let v = self.next_u64();
        (normal_from_u32(v as u32, self), normal_from_u32((v >> 32) as u32, self))
    }
}

const NQ: usize = 4096;

/// Φ⁻¹ at the 4095 inner knots i/4096 (Acklam's rational approximation, relative error < 1.2e-9).
fn normal_table() -> &'static [f64; NQ + 1] {
    static T: std::sync::OnceLock<Box<[f64; NQ + 1]>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Box::new([0.0; NQ + 1]);
        for i in 1..NQ {
            t[i] = inv_normal_cdf(i as f64 / NQ as f64);
        }
        t
    })
}

#[allow(clippy::excessive_precision)] // Acklam's published coefficients, kept verbatim
pub(crate) fn inv_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02, 1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00];
    const B: [f64; 5] = [-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02, 6.680131188771972e+01, -1.328068155288572e+01];
    const C: [f64; 6] = [-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00, -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00];
    const D: [f64; 4] = [7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00, 3.754408661907416e+00];
    let tail = |q: f64| (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5]) / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0);
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// A standard normal by inverse CDF: the top 12 bits pick one of 4096 equiprobable cells, the
/// low 20 bits place the value linearly between the cell's quantile knots. The two outermost
/// cells (probability 1/4096 each, |z| > 3.38) are sampled exactly with Marsaglia's tail method,
/// so the only approximation is the linear quantile inside the inner cells (CDF error < 1e-7).
#[inline(always)]
fn normal_from_u32(r: u32, fast: &mut Fast) -> f64 {
    let t = normal_table();
    let i = (r >> 20) as usize;
    if i == 0 || i == NQ - 1 {
        let a = -t[1];
        let z = loop {
            let x = -(1.0 - fast.f64()).ln() / a;
            let y = -(1.0 - fast.f64()).ln();
            if 2.0 * y > x * x {
                break a + x;
            }
        };
        return if i == 0 { -z } else { z };
    }
    let f = (r & 0xF_FFFF) as f64 * (1.0 / (1u32 << 20) as f64);
    t[i] + f * (t[i + 1] - t[i])
}

const BLOCK: usize = 64;

/// Four xoshiro256++ streams side by side (state as structure of arrays, so one step of all four
/// is a handful of vector instructions), seeded from one [`Fast`] through splitmix64.
pub(crate) struct Fast4 {
    s: [[u64; 4]; 4],
}

impl Fast4 {
    pub(crate) fn from_fast(f: &mut Fast) -> Self {
        let mut z = f.next_u64();
        let mut s = [[0u64; 4]; 4];
        for v in s.iter_mut().flatten() {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            *v = x ^ (x >> 31);
        }
        Fast4 { s }
    }

    #[inline(always)]
    pub(crate) fn next4(&mut self) -> [u64; 4] {
        let [s0, s1, s2, s3] = &mut self.s;
        let mut r = [0u64; 4];
        for l in 0..4 {
            r[l] = (s0[l].wrapping_add(s3[l])).rotate_left(23).wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
        r
    }
}

impl Fast4 {
    /// `r` filled with successive [`Fast4::next4`] outputs (`r.len()` a multiple of 4): AVX2
    /// when the CPU has it (the four streams in four registers), the same values either way.
    #[inline(always)]
    pub(crate) fn fill(&mut self, r: &mut [u64]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.fill_avx2(r) };
        }
        for q in r.chunks_exact_mut(4) {
            q.copy_from_slice(&self.next4());
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn fill_avx2(&mut self, r: &mut [u64]) {
        use std::arch::x86_64::*;
        // SAFETY: loads and stores stay inside `self.s` (four rows of four u64) and inside `r`
        // (one store of 4 per chunk of 4).
        let st = self.s.as_mut_ptr() as *mut __m256i;
        let (mut s0, mut s1, mut s2, mut s3) = (_mm256_loadu_si256(st), _mm256_loadu_si256(st.add(1)), _mm256_loadu_si256(st.add(2)), _mm256_loadu_si256(st.add(3)));
        for q in r.chunks_exact_mut(4) {
            let a = _mm256_add_epi64(s0, s3);
            let v = _mm256_add_epi64(_mm256_or_si256(_mm256_slli_epi64(a, 23), _mm256_srli_epi64(a, 41)), s0);
            let t = _mm256_slli_epi64(s1, 17);
            s2 = _mm256_xor_si256(s2, s0);
            s3 = _mm256_xor_si256(s3, s1);
            s1 = _mm256_xor_si256(s1, s2);
            s0 = _mm256_xor_si256(s0, s3);
            s2 = _mm256_xor_si256(s2, t);
            s3 = _mm256_or_si256(_mm256_slli_epi64(s3, 45), _mm256_srli_epi64(s3, 19));
            _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, v);
        }
        _mm256_storeu_si256(st, s0);
        _mm256_storeu_si256(st.add(1), s1);
        _mm256_storeu_si256(st.add(2), s2);
        _mm256_storeu_si256(st.add(3), s3);
    }
}

/// 64 standard normals as [`normal_from_u32`] defines them, from 32 draws of the four streams
/// made up front: the quantile lerp runs without branches over the block (so it vectorises), and
/// the rare outermost cells are then redrawn by the exact tail sampler from `tail`, in order.
#[inline(always)]
fn normal_block(f4: &mut Fast4, tail: &mut Fast, t: &[f64; NQ + 1], z: &mut [f64; BLOCK]) {
    let mut r = [0u32; BLOCK];
    for q in r.chunks_exact_mut(8) {
        let v = f4.next4();
        for l in 0..4 {
            q[2 * l] = v[l] as u32;
            q[2 * l + 1] = (v[l] >> 32) as u32;
        }
    }
    let mut tails = 0u32;
    for (o, &ri) in z.iter_mut().zip(&r) {
        let i = (ri >> 20) as usize;
        tails |= (i == 0 || i == NQ - 1) as u32;
        let f = (ri & 0xF_FFFF) as f64 * (1.0 / (1u32 << 20) as f64);
        let (a, b) = (t[i], t[i + 1]);
        *o = a + f * (b - a);
    }
    if tails != 0 {
        for (o, &ri) in z.iter_mut().zip(&r) {
            let i = (ri >> 20) as usize;
            if i == 0 || i == NQ - 1 {
                *o = normal_from_u32(ri, tail);
            }
        }
    }
}

/// `n` standard normals (see [`normal_block`]) seeded from the caller's RNG.
pub(crate) fn normals(rng: &mut Rng, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    let idx: Vec<u8> = vec![0; n];
    map_normals(&idx, &mut out, &mut Fast::from_rng(rng), |_, z| z);
    out
}

/// `out[i] = g(x[i], z_i)` with z_i standard normals (see [`normal_block`]); the loop is compiled
/// for AVX2 as well and picked at run time.
fn map_normals<T: Copy, O>(x: &[T], out: &mut [O], fast: &mut Fast, g: impl Fn(T, f64) -> O) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { map_normals_avx2(x, out, fast, g) };
    }
    map_normals_impl(x, out, fast, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn map_normals_avx2<T: Copy, O>(x: &[T], out: &mut [O], fast: &mut Fast, g: impl Fn(T, f64) -> O) {
    map_normals_impl(x, out, fast, g)
}

#[inline(always)]
fn map_normals_impl<T: Copy, O>(x: &[T], out: &mut [O], fast: &mut Fast, g: impl Fn(T, f64) -> O) {
    let t = normal_table();
    let mut f4 = Fast4::from_fast(fast);
    let mut z = [0.0; BLOCK];
    for (o, i) in out.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
        normal_block(&mut f4, fast, t, &mut z);
        for ((o, &v), &z) in o.iter_mut().zip(i).zip(&z) {
            *o = g(v, z);
        }
    }
}

/// Per inner cell of [`normal_table`]: its lower knot and its width, in f32, side by side so one
/// 8-byte load serves a value.
fn normal_table32() -> &'static [[f32; 2]; NQ] {
    static T: std::sync::OnceLock<Box<[[f32; 2]; NQ]>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let t = normal_table();
        let mut o = Box::new([[0f32; 2]; NQ]);
        for i in 1..NQ - 1 {
            o[i] = [t[i] as f32, (t[i + 1] - t[i]) as f32];
        }
        o
    })
}

/// [`normal_block`] in f32 (the lerp `a + f·w` from [`normal_table32`], separate multiply and add,
/// so the bytes do not depend on FMA): half the memory traffic and twice the lanes.
#[inline(always)]
fn normal_block32(f4: &mut Fast4, tail: &mut Fast, t: &[[f32; 2]; NQ], z: &mut [f32; BLOCK]) {
    let mut r = [0u32; BLOCK];
    fill_u32(f4, &mut r);
    let mut tails = 0u32;
    for (o, &ri) in z.iter_mut().zip(&r) {
        let i = (ri >> 20) as usize;
        tails |= (i == 0 || i == NQ - 1) as u32;
        let f = (ri & 0xF_FFFF) as f32 * (1.0 / (1u32 << 20) as f32);
        let [a, w] = t[i];
        *o = a + f * w;
    }
    if tails != 0 {
        for (o, &ri) in z.iter_mut().zip(&r) {
            let i = (ri >> 20) as usize;
            if i == 0 || i == NQ - 1 {
                *o = normal_from_u32(ri, tail) as f32;
            }
        }
    }
}

/// [`normal_block32`] with AVX2 intrinsics: the four streams in four registers and the cell
/// lookups as gathers (the compiler's version inserts the 128 table values one by one). Same
/// integer steps and the same f32 multiply and add, so the same values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn normal_block32_avx2(f4: &mut Fast4, tail: &mut Fast, t: &[[f32; 2]; NQ], z: &mut [f32; BLOCK]) {
    use std::arch::x86_64::*;
    let mut r = [0u32; BLOCK];
    // SAFETY (whole block): loads and stores stay inside `f4.s`, `r` and `z` (8 lanes × 8 steps
    // = 64 = BLOCK); gather indices are i < NQ (12 bits), so t[i] and its second half are in bounds.
    let st = f4.s.as_mut_ptr() as *mut __m256i;
    let (mut s0, mut s1, mut s2, mut s3) = (_mm256_loadu_si256(st), _mm256_loadu_si256(st.add(1)), _mm256_loadu_si256(st.add(2)), _mm256_loadu_si256(st.add(3)));
    let rotl = |x: __m256i, k: i32| -> __m256i {
        match k {
            23 => _mm256_or_si256(_mm256_slli_epi64(x, 23), _mm256_srli_epi64(x, 41)),
            _ => _mm256_or_si256(_mm256_slli_epi64(x, 45), _mm256_srli_epi64(x, 19)),
        }
    };
    let base = t.as_ptr() as *const f32;
    let mask = _mm256_set1_epi32(0xF_FFFF);
    let scale = _mm256_set1_ps(1.0 / (1u32 << 20) as f32);
    let (lo, hi) = (_mm256_setzero_si256(), _mm256_set1_epi32((NQ - 1) as i32));
    let mut tails = _mm256_setzero_si256();
    for q in 0..BLOCK / 8 {
        let v = _mm256_add_epi64(rotl(_mm256_add_epi64(s0, s3), 23), s0);
        let tt = _mm256_slli_epi64(s1, 17);
        s2 = _mm256_xor_si256(s2, s0);
        s3 = _mm256_xor_si256(s3, s1);
        s1 = _mm256_xor_si256(s1, s2);
        s0 = _mm256_xor_si256(s0, s3);
        s2 = _mm256_xor_si256(s2, tt);
        s3 = rotl(s3, 45);
        _mm256_storeu_si256(r.as_mut_ptr().add(8 * q) as *mut __m256i, v);
        let i = _mm256_srli_epi32(v, 20);
        tails = _mm256_or_si256(tails, _mm256_or_si256(_mm256_cmpeq_epi32(i, lo), _mm256_cmpeq_epi32(i, hi)));
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, mask)), scale);
        let i2 = _mm256_add_epi32(i, i);
        let a = _mm256_i32gather_ps::<4>(base, i2);
        let w = _mm256_i32gather_ps::<4>(base.add(1), i2);
        _mm256_storeu_ps(z.as_mut_ptr().add(8 * q), _mm256_add_ps(a, _mm256_mul_ps(f, w)));
    }
    _mm256_storeu_si256(st, s0);
    _mm256_storeu_si256(st.add(1), s1);
    _mm256_storeu_si256(st.add(2), s2);
    _mm256_storeu_si256(st.add(3), s3);
    if _mm256_movemask_epi8(tails) != 0 {
        for (o, &ri) in z.iter_mut().zip(&r) {
            let i = (ri >> 20) as usize;
            if i == 0 || i == NQ - 1 {
                *o = normal_from_u32(ri, tail) as f32;
            }
        }
    }
}

/// `out[i] = g(x[i], z_i)` with z_i standard normals from [`normal_block32`]; the loop is
/// compiled for AVX2 as well and picked at run time.
fn map_normals32<T: Copy, O>(x: &[T], out: &mut [O], fast: &mut Fast, g: impl Fn(T, f32) -> O) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { map_normals32_avx2(x, out, fast, g) };
    }
    map_normals32_impl(x, out, fast, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn map_normals32_avx2<T: Copy, O>(x: &[T], out: &mut [O], fast: &mut Fast, g: impl Fn(T, f32) -> O) {
    let t = normal_table32();
    let mut f4 = Fast4::from_fast(fast);
    let mut z = [0f32; BLOCK];
    for (o, i) in out.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
        // SAFETY: the CPU supports AVX2 (this function's caller checked).
        unsafe { normal_block32_avx2(&mut f4, fast, t, &mut z) };
        for ((o, &v), &z) in o.iter_mut().zip(i).zip(&z) {
            *o = g(v, z);
        }
    }
}

#[inline(always)]
fn map_normals32_impl<T: Copy, O>(x: &[T], out: &mut [O], fast: &mut Fast, g: impl Fn(T, f32) -> O) {
    let t = normal_table32();
    let mut f4 = Fast4::from_fast(fast);
    let mut z = [0f32; BLOCK];
    for (o, i) in out.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
        normal_block32(&mut f4, fast, t, &mut z);
        for ((o, &v), &z) in o.iter_mut().zip(i).zip(&z) {
            *o = g(v, z);
        }
    }
}

/// Apply `f(value, z)` with z ~ N(0, 1), clipped to 0..255, in f32 on the 0..255 scale:
/// clip(x/255 + σz, 0, 1)·255 = clip(x + 255σz, 0, 255) up to rounding, without a division per
/// value. f32 keeps the noise far finer than the uint8 cast and lets the uint8 path (which runs
/// the same f32 expression) return the same bytes eight lanes at a time.
fn map_pairs(x: &FImage, fast: &mut Fast, f: impl Fn(f32, f32) -> f32) -> FImage {
    let mut data = vec![0.0; x.data.len()];
    map_normals32(&x.data, &mut data, fast, |v, z| (f(v as f32, z) as f64).clamp(0.0, 255.0));
    FImage { h: x.h, w: x.w, c: x.c, data }
}

/// [`map_pairs`] on uint8 values straight to uint8 (clip, then truncate as the reference's cast):
/// the same draws and arithmetic, so the bytes equal `to_u8` of the float path, without two
/// whole-image f64 buffers.
fn map_pairs_u8(x: &[u8], fast: &mut Fast, f: impl Fn(f32, f32) -> f32) -> Vec<u8> {
    let mut out = vec![0u8; x.len()];
    map_normals32(x, &mut out, fast, |v, z| crate::cast_u8_f32(f(v as f32, z)));
    out
}

fn gaussian_sigma(severity: usize, p: ParamSet) -> f64 {
    let t = match p {
        ParamSet::Cifar10 => [0.04, 0.06, 0.08, 0.09, 0.10],
        ParamSet::TinyImageNet => [0.04, 0.08, 0.12, 0.15, 0.18],
        ParamSet::ImageNet => [0.08, 0.12, 0.18, 0.26, 0.38],
    };
    t[severity - 1]
}

fn speckle_sigma(severity: usize, p: ParamSet) -> f64 {
    let t = match p {
        ParamSet::Cifar10 => [0.06, 0.10, 0.12, 0.16, 0.20],
        ParamSet::TinyImageNet => [0.15, 0.20, 0.25, 0.30, 0.35],
        ParamSet::ImageNet => [0.15, 0.20, 0.35, 0.45, 0.60],
    };
    t[severity - 1]
}

fn impulse_amount(severity: usize, p: ParamSet) -> f64 {
    let t = match p {
        ParamSet::Cifar10 => [0.01, 0.02, 0.03, 0.05, 0.07],
        ParamSet::TinyImageNet => [0.01, 0.02, 0.05, 0.08, 0.14],
        ParamSet::ImageNet => [0.03, 0.06, 0.09, 0.17, 0.27],
    };
    t[severity - 1]
}

fn shot_lambda(severity: usize, p: ParamSet) -> f64 {
    let t = match p {
        ParamSet::Cifar10 => [500.0, 250.0, 100.0, 75.0, 50.0],
        ParamSet::TinyImageNet => [250.0, 100.0, 50.0, 30.0, 15.0],
        ParamSet::ImageNet => [60.0, 25.0, 12.0, 5.0, 3.0],
    };
    t[severity - 1]
}

pub(crate) fn gaussian_noise_u8(x: &[u8], severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let k = (255.0 * gaussian_sigma(severity, p)) as f32;
    map_pairs_u8(x, &mut Fast::from_rng(rng), |v, z| v + k * z)
}

pub(crate) fn speckle_noise_u8(x: &[u8], severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let s = speckle_sigma(severity, p) as f32;
    map_pairs_u8(x, &mut Fast::from_rng(rng), |v, z| v + v * s * z)
}

pub(crate) fn impulse_noise_u8(x: &[u8], severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let mut out = vec![0u8; x.len()];
    impulse_apply(x, &mut out, impulse_amount(severity, p), &mut Fast::from_rng(rng), |v, hit, salt| {
        let mask = (hit as u8).wrapping_neg();
        ((salt as u8).wrapping_neg() & mask) | (v & !mask)
    });
    out
}

/// The salt-and-pepper draw shared by both paths: 32 bits per value from the four [`Fast4`]
/// streams, drawn 64 values ahead so the generator and the selects vectorise; the top 31 bits
/// decide the hit (probability `amount`), the lowest bit salt vs pepper.
fn impulse_apply<T: Copy, O>(x: &[T], out: &mut [O], amount: f64, f: &mut Fast, g: impl Fn(T, bool, bool) -> O) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { impulse_apply_avx2(x, out, amount, f, g) };
    }
    impulse_apply_impl(x, out, amount, f, g)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn impulse_apply_avx2<T: Copy, O>(x: &[T], out: &mut [O], amount: f64, f: &mut Fast, g: impl Fn(T, bool, bool) -> O) {
    impulse_apply_impl(x, out, amount, f, g)
}

#[inline(always)]
fn impulse_apply_impl<T: Copy, O>(x: &[T], out: &mut [O], amount: f64, f: &mut Fast, g: impl Fn(T, bool, bool) -> O) {
    let thr = (amount * (1u64 << 31) as f64) as u32;
    let mut f4 = Fast4::from_fast(f);
    let mut r = [0u32; BLOCK];
    for (o, xs) in out.chunks_mut(BLOCK).zip(x.chunks(BLOCK)) {
        fill_u32(&mut f4, &mut r);
        for ((o, &v), &ri) in o.iter_mut().zip(xs).zip(&r) {
            *o = g(v, (ri >> 1) < thr, ri & 1 == 1);
        }
    }
}

/// `r` filled with 32-bit uniforms, the two halves of each 64-bit draw of the four streams.
#[inline(always)]
fn fill_u32(f4: &mut Fast4, r: &mut [u32; BLOCK]) {
    let mut w = [0u64; BLOCK / 2];
    f4.fill(&mut w);
    for (q, v) in r.chunks_exact_mut(2).zip(w) {
        q[0] = v as u32;
        q[1] = (v >> 32) as u32;
    }
}

pub(crate) fn shot_noise_u8(x: &[u8], severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let lam = shot_lambda(severity, p);
    let t = shot_u8_tables(lam);
    let (meta, flat) = (&t.0, &t.1[..]);
    let mut f4 = Fast4::from_fast(&mut Fast::from_rng(rng));
    let mut out = vec![0u8; x.len()];
    let mut r = [0u64; SHOT_BLOCK];
    for (o, xs) in out.chunks_mut(SHOT_BLOCK).zip(x.chunks(SHOT_BLOCK)) {
        f4.fill(&mut r);
        for ((o, &v), &ri) in o.iter_mut().zip(xs).zip(&r) {
            let (off, n) = meta[v as usize];
            let col = (((ri >> 32) * n as u64) >> 32) as usize;
            let e = flat[off as usize + col];
            // The same accept/alias decision as `alias_sample`, straight to the output byte.
            *o = std::hint::select_unpredictable((ri as u32) < e as u32, (e >> 32) as u8, (e >> 40) as u8);
        }
    }
    out
}

/// Per value v: (offset, columns) into one flat array of alias columns packed as acceptance
/// threshold | accepted byte << 32 | alias byte << 40, the bytes being the float path's cast of
/// min(k·255/λ, 255): one 8-byte load per value instead of the table, its count offset and a
/// byte map. v = 0 has one column that always gives 0. All 256 values are built on first use of
/// λ in a thread (a few ms), so no build lands inside an image's time later.
type ShotU8 = std::rc::Rc<([(u32, u32); 256], Vec<u64>)>;

fn shot_u8_tables(lam: f64) -> ShotU8 {
    thread_local! {
        static SHOT_U8: RefCell<HashMap<u64, ShotU8>> = RefCell::new(HashMap::new());
    }
    SHOT_U8.with(|c| {
        c.borrow_mut()
            .entry(lam.to_bits())
            .or_insert_with(|| {
                let tables = poisson_tables(lam);
                let out_scale = 255.0 / lam;
                let byte = |k: u32| ((k as f64 * out_scale).min(255.0)) as u8 as u64;
                let mut meta = [(0u32, 1u32); 256];
                let mut flat = vec![u32::MAX as u64];
                for v in 1..256usize {
                    let t = tables[v].get_or_init(|| PoissonTable::new(v as f64 / 255.0 * lam));
                    meta[v] = (flat.len() as u32, t.cols.len() as u32);
                    flat.extend(t.cols.iter().enumerate().map(|(col, &(thr, alias))| thr as u64 | byte(t.lo + col as u32) << 32 | byte(t.lo + alias) << 40));
                }
                std::rc::Rc::new((meta, flat))
            })
            .clone()
    })
}

/// Draws per block: one 64-bit draw per value, from [`Fast4`], zeros included.
const SHOT_BLOCK: usize = 64;

fn poisson_tables(lam: f64) -> TableSet {
    POISSON.with(|c| c.borrow_mut().entry(lam.to_bits()).or_insert_with(|| std::rc::Rc::new(std::array::from_fn(|_| std::cell::OnceCell::new()))).clone())
}

#[inline(always)]
fn alias_sample(cols: &[(u32, u32)], lo: u32, r: u64) -> u32 {
    let col = (((r >> 32) * cols.len() as u64) >> 32) as usize;
    let (thr, alias) = cols[col];
    // Branch-free select: accept vs alias is a coin flip, which a branch would mispredict.
    lo + std::hint::select_unpredictable((r as u32) < thr, col as u32, alias)
}

/// Additive N(0, σ²) on the [0, 1] scale, clipped.
pub(crate) fn gaussian_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let s = gaussian_sigma(severity, p);
    let mut f = Fast::from_rng(rng);
    let k = (255.0 * s) as f32;
    Ok(map_pairs(x, &mut f, |v, z| v + k * z))
}

/// Multiplicative x + x·N(0, σ²), clipped.
pub(crate) fn speckle_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let s = speckle_sigma(severity, p) as f32;
    let mut f = Fast::from_rng(rng);
    Ok(map_pairs(x, &mut f, |v, z| v + v * s * z))
}

/// skimage `random_noise(mode='s&p', amount=p)`: each value is hit with probability p and a hit
/// becomes 1 or 0 with probability ½ each (draws: see `impulse_apply`).
pub(crate) fn impulse_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let a = impulse_amount(severity, p);
    let mut f = Fast::from_rng(rng);
    // Untouched values come back exactly (the reference's v/255·255 is exact for all v in 0..=255).
    let mut data = vec![0.0; x.data.len()];
    impulse_apply(&x.data, &mut data, a, &mut f, |v, hit, salt| if hit { if salt { 255.0 } else { 0.0 } } else { v.clamp(0.0, 255.0) });
    Ok(FImage { h: x.h, w: x.w, c: x.c, data })
}

/// Poisson(λ) sampler by Walker's alias method over the pmf (truncated where it falls below
/// 1e-18 of the mode's mass): one 64-bit draw and no data-dependent loop per sample, which is what
/// makes shot noise fast (a rejection sampler costs a log-gamma per value for λ up to 500).
struct PoissonTable {
    lo: u32,
    /// (acceptance threshold scaled to 2³², alias index) per column.
    cols: Vec<(u32, u32)>,
}

impl PoissonTable {
    fn new(lam: f64) -> Self {
        // pmf built outwards from the mode in log space (no underflow of e^-λ for large λ).
        let mode = lam.floor();
        let ln_pmf = |k: f64| k * lam.ln() - lam - ln_factorial(k);
        let pm = ln_pmf(mode).exp();
        let mut k = mode as i64;
        let mut v = pm;
        let mut down = Vec::new();
        while k > 0 {
            v *= k as f64 / lam;
            if v < pm * 1e-18 {
                break;
            }
            down.push(v);
            k -= 1;
        }
        let lo_k = mode as i64 - down.len() as i64;
        let mut pmf: Vec<f64> = down.into_iter().rev().collect();
        pmf.push(pm);
        let mut kf = mode;
        v = pm;
        loop {
            kf += 1.0;
            v *= lam / kf;
            if v < pm * 1e-18 {
                break;
            }
            pmf.push(v);
        }
        let n = pmf.len();
        let total: f64 = pmf.iter().sum();
        let mut prob: Vec<f64> = pmf.iter().map(|p| p / total * n as f64).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| prob[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            prob[l] -= 1.0 - prob[s];
            if prob[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        for i in large.into_iter().chain(small) {
            prob[i] = 1.0;
        }
        let cols = prob.iter().zip(&alias).map(|(&p, &a)| (((p * 4294967296.0).min(4294967295.0)) as u32, a)).collect();
        PoissonTable { lo: lo_k as u32, cols }
    }

    /// One sample from 64 random bits: the high half picks the column, the low half accepts it
    /// or takes its alias.
    #[inline(always)]
    #[cfg(test)]
    fn sample(&self, r: u64) -> u32 {
        alias_sample(&self.cols, self.lo, r)
    }
}

fn ln_factorial(k: f64) -> f64 {
    // Stirling series; exact enough (< 1e-10 relative) for k ≥ 8, summed logs below.
    if k < 8.0 {
        (2..=k as u64).map(|i| (i as f64).ln()).sum()
    } else {
        let k1 = k + 1.0;
        (k1 - 0.5) * k1.ln() - k1 + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * k1) - 1.0 / (360.0 * k1.powi(3))
            + 1.0 / (1260.0 * k1.powi(5))
    }
}

type TableSet = std::rc::Rc<[std::cell::OnceCell<PoissonTable>; 256]>;

thread_local! {
    /// Per λ, the tables of the 256 integer pixel values, built on first use. A sample depends
    /// only on (λ, value, random bits), never on what the cache holds, so outputs are the same
    /// whatever the thread layout.
    static POISSON: RefCell<HashMap<u64, TableSet>> = RefCell::new(HashMap::new());
}

/// Poisson(x·λ)/λ, clipped. Integer pixel values (the usual case) use cached inverse-CDF tables;
/// any other value falls back to `rand_distr::Poisson`.
pub(crate) fn shot_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let lam = shot_lambda(severity, p);
    let tables = poisson_tables(lam);
    let out_scale = 255.0 / lam;
    let mut f4 = Fast4::from_fast(&mut Fast::from_rng(rng));
    let mut data = Vec::with_capacity(x.data.len());
    let mut r = [0u64; SHOT_BLOCK];
    for xs in x.data.chunks(SHOT_BLOCK) {
        for q in r.chunks_exact_mut(4) {
            q.copy_from_slice(&f4.next4());
        }
        for (&v, &ri) in xs.iter().zip(&r) {
            let mean = v / 255.0 * lam;
            let k = if mean <= 0.0 || mean.is_nan() {
                0.0
            } else if v <= 255.0 && (v as u32) as f64 == v {
                let t = tables[v as usize].get_or_init(|| PoissonTable::new(mean));
                alias_sample(&t.cols, t.lo, ri) as f64
            } else {
                Poisson::new(mean).map(|d| d.sample(rng)).unwrap_or(0.0)
            };
            data.push((k * out_scale).min(255.0));
        }
    }
    Ok(FImage { h: x.h, w: x.w, c: x.c, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_normal_moments_and_quantiles() {
        use rand::SeedableRng;
        // scipy.special.ndtri values.
        for (p, z) in [(0.001, -3.090232306167813), (0.3, -0.5244005127080407), (0.975, 1.959963984540054)] {
            assert!((inv_normal_cdf(p) - z).abs() < 1e-8, "{p}");
        }
        let mut f = Fast::from_rng(&mut Rng::seed_from_u64(4));
        let n = 400_000;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n / 2 {
            let (a, b) = f.normal2();
            v.push(a);
            v.push(b);
        }
        let m = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n as f64;
        let k4 = v.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n as f64 / (var * var);
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.01 && (k4 - 3.0).abs() < 0.05, "{m} {var} {k4}");
        let tail = v.iter().filter(|x| x.abs() > 3.5).count() as f64 / n as f64;
        assert!((tail - 4.65e-4).abs() < 1.5e-4, "tail {tail}");
    }

    /// The AVX2 generator and normal block must give the portable code's exact values (the
    /// bytes may not depend on the CPU), tail cells included.
    #[test]
    fn avx2_draws_equal_portable_draws() {
        use rand::SeedableRng;
        let mut a = Fast4::from_fast(&mut Fast::from_rng(&mut Rng::seed_from_u64(8)));
        let mut b = Fast4::from_fast(&mut Fast::from_rng(&mut Rng::seed_from_u64(8)));
        let mut r = [0u64; 40];
        for _ in 0..3 {
            a.fill(&mut r);
            for q in r.chunks_exact(4) {
                assert_eq!(q, b.next4());
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            let t = normal_table32();
            let (mut ta, mut tb) = (Fast::from_rng(&mut Rng::seed_from_u64(2)), Fast::from_rng(&mut Rng::seed_from_u64(2)));
            let (mut za, mut zb) = ([0f32; BLOCK], [0f32; BLOCK]);
            let mut seen_tail = false;
            for _ in 0..2000 {
                // SAFETY: AVX2 checked above.
                unsafe { normal_block32_avx2(&mut a, &mut ta, t, &mut za) };
                normal_block32(&mut b, &mut tb, t, &mut zb);
                assert!(za.iter().zip(&zb).all(|(x, y)| x.to_bits() == y.to_bits()));
                seen_tail |= za.iter().any(|z| z.abs() > 3.4);
            }
            assert!(seen_tail);
        }
    }

    #[test]
    fn poisson_table_moments() {
        use rand::SeedableRng;
        use rand::Rng as _;
        let mut rng = Rng::seed_from_u64(3);
        for lam in [0.2, 3.0, 47.0, 500.0] {
            let t = PoissonTable::new(lam);
            let n = 200_000;
            let (mut s, mut s2) = (0.0, 0.0);
            for _ in 0..n {
                let k = t.sample(rng.gen::<u64>()) as f64;
                s += k;
                s2 += k * k;
            }
            let m = s / n as f64;
            let var = s2 / n as f64 - m * m;
            assert!((m - lam).abs() < 4.0 * (lam / n as f64).sqrt() + 1e-3, "λ={lam} mean {m}");
            assert!((var / lam - 1.0).abs() < 0.03, "λ={lam} var {var}");
        }
    }
}

/// Properties every corruption of part B promises: shape kept, bytes reproducible from the seed,
/// any reasonable size and grey images accepted, stronger severities change more.
#[cfg(test)]
mod common_tests {
    use crate::{corrupt_float, to_u8, Corruption, FImage, ParamSet, Rng};
    use rand::{Rng as _, SeedableRng};

    const MINE: [Corruption; 9] = [
        Corruption::GaussianNoise,
        Corruption::ShotNoise,
        Corruption::ImpulseNoise,
        Corruption::SpeckleNoise,
        Corruption::GlassBlur,
        Corruption::Frost,
        Corruption::Fog,
        Corruption::Spatter,
        Corruption::ElasticTransform,
    ];
    const SETS: [ParamSet; 3] = [ParamSet::Cifar10, ParamSet::TinyImageNet, ParamSet::ImageNet];

    /// A smooth colourful test picture with some texture, values 0..255 integers.
    fn picture(h: usize, w: usize, c: usize, seed: u64) -> FImage {
        let mut r = Rng::seed_from_u64(seed);
        let mut data = Vec::with_capacity(h * w * c);
        for y in 0..h {
            for x in 0..w {
                for ch in 0..c {
                    let v = 128.0 + 90.0 * ((x as f64 * 0.3 + ch as f64).sin() * (y as f64 * 0.2).cos()) + r.gen_range(-20.0..20.0);
                    data.push(v.clamp(0.0, 255.0).floor());
                }
            }
        }
        FImage { h, w, c, data }
    }

    fn mad(a: &FImage, b: &[u8]) -> f64 {
        a.data.iter().zip(b).map(|(x, &y)| (x - y as f64).abs()).sum::<f64>() / b.len() as f64
    }

    #[test]
    fn shape_determinism_and_sizes() {
        for &(h, w, c) in &[(32, 32, 3), (28, 28, 1), (64, 64, 3), (40, 71, 3), (5, 4, 1), (224, 224, 3)] {
            let x = picture(h, w, c, 1);
            let before = x.clone();
            for cor in MINE {
                for p in SETS {
                    for sev in [1, 5] {
                        if h == 224 && p != ParamSet::ImageNet {
                            continue;
                        }
                        let a = corrupt_float(&x, cor, sev, p, &mut Rng::seed_from_u64(9)).unwrap();
                        let b = corrupt_float(&x, cor, sev, p, &mut Rng::seed_from_u64(9)).unwrap();
                        let d = corrupt_float(&x, cor, sev, p, &mut Rng::seed_from_u64(10)).unwrap();
                        assert_eq!((a.h, a.w, a.c, a.data.len()), (h, w, c, h * w * c), "{} {p:?}", cor.name());
                        assert_eq!(to_u8(&a), to_u8(&b), "{} {p:?} s{sev} not reproducible", cor.name());
                        assert!(a.data.iter().all(|v| v.is_finite() && (0.0..=255.0).contains(v)), "{} {p:?}", cor.name());
                        if h * w >= 64 {
                            assert_ne!(to_u8(&a), to_u8(&d), "{} {p:?} s{sev} ignores the seed", cor.name());
                        }
                    }
                }
            }
            assert_eq!(x, before, "input modified");
        }
    }

    #[test]
    fn elastic_refuses_tiny_images() {
        let x = picture(2, 9, 3, 1);
        let e = corrupt_float(&x, Corruption::ElasticTransform, 3, ParamSet::Cifar10, &mut Rng::seed_from_u64(1));
        assert!(matches!(e, Err(crate::Error::TooSmall { .. })), "{e:?}");
    }

    /// Mean |Δ| per severity over a few images.
    fn mads(cor: Corruption, p: ParamSet, size: usize) -> Vec<f64> {
        (1..=5)
            .map(|sev| {
                let mut rng = Rng::seed_from_u64(77);
                (0..6).map(|i| {
                    let x = picture(size, size, 3, i);
                    mad(&x, &to_u8(&corrupt_float(&x, cor, sev, p, &mut rng).unwrap()))
                }).sum::<f64>() / 6.0
            })
            .collect()
    }

    #[test]
    fn severity_monotone_where_the_reference_is() {
        // The reference's own tables make these strictly stronger with severity for every set.
        for cor in [Corruption::GaussianNoise, Corruption::ShotNoise, Corruption::ImpulseNoise, Corruption::SpeckleNoise, Corruption::Fog] {
            for (p, size) in [(ParamSet::Cifar10, 32), (ParamSet::TinyImageNet, 64), (ParamSet::ImageNet, 64)] {
                let m = mads(cor, p, size);
                if cor == Corruption::Fog && p == ParamSet::ImageNet {
                    // s3 and s4 share the strength c = 2.5 and differ only in roughness.
                    assert!(m[0] < m[1] && m[1] < m[2] && m[2] < m[4] && (m[3] / m[2] - 1.0).abs() < 0.05, "fog {p:?}: {m:?}");
                } else {
                    assert!(m.windows(2).all(|w| w[1] > w[0]), "{} {p:?}: {m:?}", cor.name());
                }
            }
        }
        // imagecorruptions' elastic: same σ, growing α.
        let m = mads(Corruption::ElasticTransform, ParamSet::ImageNet, 64);
        assert!(m.windows(2).all(|w| w[1] > w[0]), "elastic imagenet: {m:?}");
        // glass (CIFAR): the two-iteration severities shuffle more than the one-iteration ones.
        let m = mads(Corruption::GlassBlur, ParamSet::Cifar10, 32);
        assert!(m[3] > m[0].max(m[1]).max(m[2]) && m[4] > m[0].max(m[1]).max(m[2]), "glass: {m:?}");
        // frost: CIFAR s1 and s2 keep the image (a = 1) and add more texture (f .2 → .3).
        let m = mads(Corruption::Frost, ParamSet::Cifar10, 32);
        assert!(m[0] < m[1], "frost: {m:?}");
        // spatter: within each mode (water s1–s3, mud s4–s5 for CIFAR) the damage grows.
        let m = mads(Corruption::Spatter, ParamSet::Cifar10, 32);
        assert!(m[0] < m[1] && m[1] < m[2] && m[3] < m[4], "spatter: {m:?}");
    }

    #[test]
    fn impulse_hits_the_expected_fraction() {
        let x = FImage { h: 100, w: 100, c: 3, data: vec![128.0; 30000] };
        for (sev, p) in [(1, 0.01), (5, 0.07)] {
            let y = to_u8(&corrupt_float(&x, Corruption::ImpulseNoise, sev, ParamSet::Cifar10, &mut Rng::seed_from_u64(5)).unwrap());
            let salt = y.iter().filter(|&&v| v == 255).count() as f64 / 30000.0;
            let pepper = y.iter().filter(|&&v| v == 0).count() as f64 / 30000.0;
            assert!((salt - p / 2.0).abs() < 0.25 * p && (pepper - p / 2.0).abs() < 0.25 * p, "{salt} {pepper}");
            assert!(y.iter().all(|&v| v == 0 || v == 128 || v == 255));
        }
    }

    #[test]
    fn glass_copies_pixels_from_up_left() {
        // σ = 0.05 is an identity blur, so CIFAR s1 output is the shuffled input: every pixel must
        // come from itself or its up/left neighbours (offsets in [−1, 0]).
        let x = picture(32, 32, 3, 3);
        let y = to_u8(&corrupt_float(&x, Corruption::GlassBlur, 1, ParamSet::Cifar10, &mut Rng::seed_from_u64(2)).unwrap());
        let u: Vec<u8> = x.data.iter().map(|v| (v / 255.0 * 255.0) as u8).collect();
        let mut moved = 0;
        for h in 0..32 {
            for w in 0..32 {
                let px = &y[(h * 32 + w) * 3..][..3];
                let ok = (0..=2.min(h)).any(|dy| (0..=2.min(w)).any(|dx| px == &u[((h - dy) * 32 + w - dx) * 3..][..3]));
                assert!(ok, "pixel ({h},{w}) not from its up-left neighbourhood");
                moved += (px != &u[(h * 32 + w) * 3..][..3]) as usize;
            }
        }
        assert!(moved > 400, "only {moved} pixels moved");
    }
}
