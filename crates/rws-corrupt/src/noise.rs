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

    /// Two standard normals from one 64-bit draw (see [`normal_from_u32`]); the tests sample
    /// the distribution through it.
    #[cfg(test)]
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
        let [s0, .., s3] = &self.s;
        let r = std::array::from_fn(|l| (s0[l].wrapping_add(s3[l])).rotate_left(23).wrapping_add(s0[l]));
        self.advance();
        r
    }

    /// xoshiro256+ outputs of the same streams (s0 + s3, no rotation): four operations fewer
    /// per step where the draws dominate the cost (the noises' normals). Its lowest bits are
    /// weak (low linear complexity), so those use bits 5 and up only.
    #[inline(always)]
    fn next4_plus(&mut self) -> [u64; 4] {
        let [s0, .., s3] = &self.s;
        let r = std::array::from_fn(|l| s0[l].wrapping_add(s3[l]));
        self.advance();
        r
    }

    /// The xoshiro256 state transition of the four streams.
    #[inline(always)]
    fn advance(&mut self) {
        let [s0, s1, s2, s3] = &mut self.s;
        for l in 0..4 {
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
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

/// One step of the four [`Fast4`] streams as eight 32-bit xoshiro256+ draws
/// ([`Fast4::next4_plus`]; the normals and shot noise): lane j is the low (j even) or high
/// (j odd) half of stream j/2, the order an AVX2 register holds them in, so the portable and the
/// vector code consume the same draw for the same value.
#[inline(always)]
fn draw8(f4: &mut Fast4) -> [u32; 8] {
    let v = f4.next4_plus();
    std::array::from_fn(|j| (v[j / 2] >> (32 * (j % 2))) as u32)
}

// Box–Muller in f32 (the noises' normals). ln(1 + f) = f − f²/2 + f³·Q(f) with Q fitted for
// relative error < 4e-7 on [√½ − 1, √2 − 1] (here −2·Q, to give −2 ln directly); sin and cos:
// Cephes sinf, cosf (about 1 ulp). Polynomials in Estrin form: shorter dependency chains than
// Horner's, so more blocks overlap.
const ANGLE24: f32 = std::f32::consts::FRAC_PI_4 / 16_777_216.0;
const M2LN2: f32 = -2.0 * std::f32::consts::LN_2;
#[allow(clippy::excessive_precision)]
const LOG_Q: [f32; 6] = [-2.0 * 0.33334240317344666, -2.0 * -0.24983294308185577, -2.0 * 0.19924725592136383, -2.0 * -0.17136843502521515, -2.0 * 0.16022036969661713, -2.0 * -0.10189732909202576];
#[allow(clippy::excessive_precision)]
const SIN_P: [f32; 3] = [-1.6666654611e-1, 8.3321608736e-3, -1.9515295891e-4];
#[allow(clippy::excessive_precision)]
const COS_P: [f32; 3] = [4.166664568298827e-2, -1.388731625493765e-3, 2.443315711809948e-5];

/// a·b + c with one rounding: the hardware FMA of the AVX2 path, so the portable path rounds
/// the same (on CPUs without FMA it costs a library call, on aarch64 it is one instruction).
#[inline(always)]
fn fma(a: f32, b: f32, c: f32) -> f32 {
    a.mul_add(b, c)
}

/// Two independent standard normals from two 32-bit draws, without branches or tables, so eight
/// lanes run side by side ([`avx2::box_muller`] is this, op for op, so the same bits).
/// Radius √(−2 ln u) with u = 1 − k/2²⁴ ∈ (0, 1] (|z| ≤ 5.77; P(|z| > 5.77) ≈ 8e-9).
/// Angle: the top 25 bits of `r2` place x uniformly in [−π/4, π/4); bit 5 swaps cos and sin
/// (a reflection to the arc around π/2), bit 6 negates both (a half turn): the four images of
/// the arc tile the circle, so the angle is uniform and only the arc's sin and cos are needed.
/// The draws are xoshiro256+ outputs ([`Fast4::next4_plus`]): bits 0–4 go unused.
#[inline(always)]
fn box_muller(r1: u32, r2: u32) -> (f32, f32) {
    // u = k/2²⁴, k = 2²⁴ − (r1 >> 8) ∈ [1, 2²⁴], exact in f32: the 2⁻²⁴ goes into the
    // exponent by an integer subtraction. −2 ln u = −2e·ln 2 − 2 ln(1 + f), 1 + f ∈ [√½, √2).
    let ix = ((0x100_0000 - (r1 >> 8) as i32) as f32).to_bits() as i32 - (0x3f35_04f3 + (24 << 23));
    let e = (ix >> 23) as f32;
    let f = f32::from_bits(((ix & 0x7f_ffff) + 0x3f35_04f3) as u32) - 1.0;
    let (z, q) = (f * f, LOG_Q);
    let poly = fma(fma(q[5], f, q[4]), z * z, fma(fma(q[3], f, q[2]), z, fma(q[1], f, q[0])));
    let rad = fma(e, M2LN2, fma(f * z, poly, fma(-2.0, f, z))).sqrt();
    let x = ((r2 as i32) >> 7) as f32 * ANGLE24;
    let (z, (sp, cp)) = (x * x, (SIN_P, COS_P));
    let z2 = z * z;
    let s = fma(x * z, fma(sp[2], z2, fma(sp[1], z, sp[0])), x);
    let c = fma(z2, fma(cp[2], z2, fma(cp[1], z, cp[0])), fma(-0.5, z, 1.0));
    let (a, b) = if r2 >> 5 & 1 != 0 { (s, c) } else { (c, s) };
    let r = f32::from_bits(rad.to_bits() ^ (r2 << 25 & 1 << 31));
    (r * a, r * b)
}

/// The normals of `z.len()` (a multiple of 16) consecutive values: two draws of eight give
/// eight pairs, whose first normals go to values 0..8 and second to 8..16, and so on: the layout
/// of the AVX2 registers. AVX2 + FMA when the CPU has them, the same bits either way.
fn normals_f32(f4: &mut Fast4, z: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { avx2::normals(f4, z) };
    }
    normals_f32_portable(f4, z)
}

fn normals_f32_portable(f4: &mut Fast4, z: &mut [f32]) {
    for h in z.chunks_exact_mut(16) {
        let (r1, r2) = (draw8(f4), draw8(f4));
        for j in 0..8 {
            (h[j], h[8 + j]) = box_muller(r1[j], r2[j]);
        }
    }
}

/// The portable loops' walk: 32 values at a time through `f`, the last block padded (its surplus
/// draws unused, as in the AVX2 loops).
#[inline(always)]
fn by32(x: &[u8], out: &mut [u8], mut f: impl FnMut(&[u8; 32], &mut [u8; 32])) {
    let (mut xs, mut os) = (x.chunks_exact(32), out.chunks_exact_mut(32));
    for (a, o) in (&mut xs).zip(&mut os) {
        f(a.try_into().unwrap(), o.try_into().unwrap());
    }
    let (a, o) = (xs.remainder(), os.into_remainder());
    if !a.is_empty() {
        let (mut xb, mut ob) = ([0u8; 32], [0u8; 32]);
        xb[..a.len()].copy_from_slice(a);
        f(&xb, &mut ob);
        o.copy_from_slice(&ob[..a.len()]);
    }
}

/// The additive (gaussian) or multiplicative (speckle) noise of one value, on the 0..255 scale in
/// f32: clip(x/255 + σz, 0, 1)·255 = clip(x + 255σz, 0, 255) up to rounding, with no division;
/// f32 keeps the noise far finer than the uint8 cast. `a` is 255σ or σ.
#[inline(always)]
fn noisy<const SPECKLE: bool>(v: f32, z: f32, a: f32) -> f32 {
    if SPECKLE {
        fma(v * a, z, v)
    } else {
        fma(a, z, v)
    }
}

/// The float path of gaussian and speckle noise: the u8 path's normals and arithmetic, so the
/// cast of the result is the u8 path's bytes.
fn normal_noise<const SPECKLE: bool>(x: &FImage, a: f32, rng: &mut Rng) -> FImage {
    let mut f4 = Fast4::from_fast(&mut Fast::from_rng(rng));
    let mut data = Vec::with_capacity(x.data.len());
    let mut z = [0f32; 128];
    for xs in x.data.chunks(128) {
        normals_f32(&mut f4, &mut z);
        data.extend(xs.iter().zip(z).map(|(&v, z)| (noisy::<SPECKLE>(v as f32, z, a) as f64).clamp(0.0, 255.0)));
    }
    FImage { h: x.h, w: x.w, c: x.c, data }
}

/// The u8 path of gaussian and speckle noise, fused from the draws to the output bytes (eight
/// lanes wide with AVX2, picked at run time; the same bytes either way).
fn normal_noise_u8<const SPECKLE: bool>(x: &[u8], a: f32, rng: &mut Rng) -> Vec<u8> {
    let mut f4 = Fast4::from_fast(&mut Fast::from_rng(rng));
    let mut out = vec![0u8; x.len()];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        unsafe { avx2::normal_noise_u8::<SPECKLE>(x, &mut out, a, &mut f4) };
        return out;
    }
    normal_noise_u8_portable::<SPECKLE>(x, &mut out, a, &mut f4);
    out
}

fn normal_noise_u8_portable<const SPECKLE: bool>(x: &[u8], out: &mut [u8], a: f32, f4: &mut Fast4) {
    by32(x, out, |xs, o| {
        let mut z = [0f32; 32];
        normals_f32_portable(f4, &mut z);
        for ((o, &v), z) in o.iter_mut().zip(xs).zip(z) {
            *o = crate::cast_u8_f32(noisy::<SPECKLE>(v as f32, z, a));
        }
    });
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
    normal_noise_u8::<false>(x, (255.0 * gaussian_sigma(severity, p)) as f32, rng)
}

pub(crate) fn speckle_noise_u8(x: &[u8], severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    normal_noise_u8::<true>(x, speckle_sigma(severity, p) as f32, rng)
}

/// Additive N(0, σ²) on the [0, 1] scale, clipped.
pub(crate) fn gaussian_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    Ok(normal_noise::<false>(x, (255.0 * gaussian_sigma(severity, p)) as f32, rng))
}

/// Multiplicative x + x·N(0, σ²), clipped.
pub(crate) fn speckle_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    Ok(normal_noise::<true>(x, speckle_sigma(severity, p) as f32, rng))
}

/// One step of the four [`Fast4`] streams as sixteen 16-bit xoshiro256+ draws, in the order of
/// an AVX2 register's 16-bit lanes (lane L: bits 16·(L mod 4) of stream L/4).
#[inline(always)]
fn draw16(f4: &mut Fast4) -> [u16; 16] {
    let v = f4.next4_plus();
    std::array::from_fn(|l| (v[l / 4] >> (16 * (l % 4))) as u16)
}

/// The salt-and-pepper decision of one value from a 16-bit draw d: its top bit picks salt or
/// pepper, its low 15 bits h hit when h < `hi`, or when h = `hi` (probability 2⁻¹⁵, off the
/// vector path) and a 32-bit draw from `tail` is below `lo`: amount·2¹⁵ = hi + lo/2³², so the
/// hit probability is `amount` to 2⁻⁴⁷ while the bulk costs half the random bits of a 32-bit
/// comparison. (The weak lowest bits of xoshiro256+ are the last bits of h.)
#[derive(Clone, Copy)]
struct Impulse {
    hi: u16,
    lo: u32,
}

impl Impulse {
    fn new(amount: f64) -> Self {
        let t = amount.clamp(0.0, 1.0 - 1e-9) * 32768.0;
        Impulse { hi: t as u16, lo: (t.fract() * 4294967296.0) as u32 }
    }

    #[inline(always)]
    fn hit(self, d: u16, tail: &mut Fast) -> bool {
        let h = d & 0x7fff;
        h < self.hi || (h == self.hi && ((tail.next_u64() >> 32) as u32) < self.lo)
    }
}

pub(crate) fn impulse_noise_u8(x: &[u8], severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let thr = Impulse::new(impulse_amount(severity, p));
    let mut tail = Fast::from_rng(rng);
    let mut f4 = Fast4::from_fast(&mut tail);
    let mut out = vec![0u8; x.len()];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::impulse_noise_u8(x, &mut out, thr, &mut f4, &mut tail) };
        return out;
    }
    impulse_noise_u8_portable(x, &mut out, thr, &mut f4, &mut tail);
    out
}

fn impulse_noise_u8_portable(x: &[u8], out: &mut [u8], thr: Impulse, f4: &mut Fast4, tail: &mut Fast) {
    by32(x, out, |xs, o| {
        for (o, xs) in o.chunks_exact_mut(16).zip(xs.chunks_exact(16)) {
            for ((o, &v), d) in o.iter_mut().zip(xs).zip(draw16(f4)) {
                *o = if thr.hit(d, tail) { ((d >> 15) as u8).wrapping_neg() } else { v };
            }
        }
    });
}

/// skimage `random_noise(mode='s&p', amount=p)`: each value is hit with probability p and a hit
/// becomes 1 or 0 with probability ½ each (draws: see [`Impulse`]).
pub(crate) fn impulse_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let thr = Impulse::new(impulse_amount(severity, p));
    let mut tail = Fast::from_rng(rng);
    let mut f4 = Fast4::from_fast(&mut tail);
    let mut data = Vec::with_capacity(x.data.len());
    for xs in x.data.chunks(16) {
        // Untouched values come back exactly (the reference's v/255·255 is exact for v in 0..=255).
        data.extend(xs.iter().zip(draw16(&mut f4)).map(|(&v, d)| if thr.hit(d, &mut tail) { (d >> 15) as f64 * 255.0 } else { v.clamp(0.0, 255.0) }));
    }
    Ok(FImage { h: x.h, w: x.w, c: x.c, data })
}

/// Shot noise Poisson(v/255·λ)/λ·255, clipped, as one table per λ: for each input byte v a
/// Walker alias table over the outcomes k = 0..=K, K = ⌈λ⌉ standing for every k ≥ λ (all clip
/// to 255), so one 32-bit draw and one table load give a value, with no data-dependent loop
/// (a rejection sampler costs a log-gamma per value for λ up to 500). The table has N = 2^b ≥
/// K + 1 columns: the draw's top b bits pick column j, whose own outcome is j; the other 32 − b
/// bits accept it or take the column's alias. Entry = acceptance threshold << b | alias. The pmf
/// is truncated where it falls below 1e-18 of the mode's mass; thresholds have 32 − b bits (23 or
/// more for the published λ ≤ 500; the weak low bits of the xoshiro256+ draws only meet their last
/// bits). Output: k·(255/λ) in f32, clipped to 255.
struct ShotTable {
    bits: u32,
    /// 255/λ rounded to f32, nudged up until K·scale ≥ 255 so that outcome K clips to 255.
    scale: f32,
    /// 256 tables of N entries, input byte v's at v·N.
    cols: Vec<u32>,
}

impl ShotTable {
    fn new(lam: f64) -> Self {
        let top = lam.ceil().max(1.0) as usize;
        let bits = (top + 1).next_power_of_two().trailing_zeros();
        let n = 1usize << bits;
        let one = (1u64 << (32 - bits)) as f64;
        let mut scale = (255.0 / lam) as f32;
        while (top as f32) * scale < 255.0 {
            scale = f32::from_bits(scale.to_bits() + 1);
        }
        let mut cols = Vec::with_capacity(256 * n);
        for v in 0..256 {
            let pmf = poisson_clipped(v as f64 / 255.0 * lam, top);
            let mut prob: Vec<f64> = (0..n).map(|j| pmf.get(j).map_or(0.0, |p| p * n as f64)).collect();
            let mut alias: Vec<u32> = (0..n as u32).collect();
            let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| prob[i] < 1.0);
            while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
                small.pop();
                alias[s] = l as u32;
                prob[l] -= 1.0 - prob[s];
                if prob[l] < 1.0 {
                    large.pop();
                    small.push(l);
                }
            }
            // Leftovers hold (up to rounding) a whole column; alias = self means always j.
            for i in large.into_iter().chain(small) {
                alias[i] = i as u32;
            }
            cols.extend(prob.iter().zip(&alias).enumerate().map(|(j, (&p, &a))| {
                let t = (p * one).round();
                if a == j as u32 || t >= one {
                    j as u32
                } else {
                    (t as u32) << bits | a
                }
            }));
        }
        ShotTable { bits, scale, cols }
    }

    /// The outcome index of input byte `v` for draw `r`.
    #[inline(always)]
    fn sample(&self, v: usize, r: u32) -> u32 {
        let j = r >> (32 - self.bits);
        let e = self.cols[v << self.bits | j as usize];
        if r & (u32::MAX >> self.bits) < e >> self.bits {
            j
        } else {
            e & ((1 << self.bits) - 1)
        }
    }
}

/// P(k) of Poisson(μ) for k = 0..top, with P(k ≥ top) in the last place, built outwards from the
/// mode (no underflow of e^-μ for large μ) and stopped on each side where it falls below 1e-18
/// of the mode's mass (no crawl through subnormals), normalised after the truncation.
fn poisson_clipped(mu: f64, top: usize) -> Vec<f64> {
    let mut p = vec![0.0; top + 1];
    if mu.is_nan() || mu <= 0.0 {
        p[0] = 1.0;
        return p;
    }
    let mode = (mu.floor() as usize).min(top);
    let pm = (mode as f64 * mu.ln() - mu - ln_factorial(mode as f64)).exp();
    p[mode] = pm;
    let mut v = pm;
    for k in (1..=mode).rev() {
        v *= k as f64 / mu;
        if v < pm * 1e-18 {
            break;
        }
        p[k - 1] = v;
    }
    v = pm;
    for k in mode + 1.. {
        v *= mu / k as f64;
        if v < pm * 1e-18 {
            break;
        }
        p[k.min(top)] += v;
    }
    let total: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= total);
    p
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

/// The table of λ, built on first use in a thread (a few ms at most; a sample depends only on
/// λ, the value and the draw, so outputs do not depend on the thread layout).
fn shot_table(lam: f64) -> std::rc::Rc<ShotTable> {
    thread_local! {
        static SHOT: RefCell<HashMap<u64, std::rc::Rc<ShotTable>>> = RefCell::new(HashMap::new());
    }
    SHOT.with(|c| c.borrow_mut().entry(lam.to_bits()).or_insert_with(|| std::rc::Rc::new(ShotTable::new(lam))).clone())
}

pub(crate) fn shot_noise_u8(x: &[u8], severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let t = shot_table(shot_lambda(severity, p));
    let mut f4 = Fast4::from_fast(&mut Fast::from_rng(rng));
    let mut out = vec![0u8; x.len()];
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        unsafe { avx2::shot_noise_u8(x, &mut out, &t, &mut f4) };
        return out;
    }
    shot_noise_u8_portable(x, &mut out, &t, &mut f4);
    out
}

fn shot_noise_u8_portable(x: &[u8], out: &mut [u8], t: &ShotTable, f4: &mut Fast4) {
    by32(x, out, |xs, o| {
        for (o, xs) in o.chunks_exact_mut(8).zip(xs.chunks_exact(8)) {
            for ((o, &v), r) in o.iter_mut().zip(xs).zip(draw8(f4)) {
                *o = crate::cast_u8_f32(t.sample(v as usize, r) as f32 * t.scale);
            }
        }
    });
}

/// Poisson(x·λ)/λ, clipped. Integer pixel values (the usual case) use the u8 path's tables and
/// draws (so the same bytes); any other value falls back to `rand_distr::Poisson`.
pub(crate) fn shot_noise(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let lam = shot_lambda(severity, p);
    let t = shot_table(lam);
    let mut f4 = Fast4::from_fast(&mut Fast::from_rng(rng));
    let mut data = Vec::with_capacity(x.data.len());
    for xs in x.data.chunks(8) {
        for (&v, r) in xs.iter().zip(draw8(&mut f4)) {
            let k = if (0.0..=255.0).contains(&v) && (v as u32) as f64 == v {
                t.sample(v as usize, r) as f32
            } else {
                let mean = v / 255.0 * lam;
                if mean > 0.0 { Poisson::new(mean).map(|d| d.sample(rng)).unwrap_or(0.0) as f32 } else { 0.0 }
            };
            data.push((k * t.scale).min(255.0) as f64);
        }
    }
    Ok(FImage { h: x.h, w: x.w, c: x.c, data })
}

/// The AVX2 versions of the fused u8 loops: the four [`Fast4`] streams in four registers, 32
/// values per round (the normals: 128), the same draws and float operations as the portable
/// loops (FMA where they call [`super::fma`]).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Fast, Fast4, Impulse, ShotTable, ANGLE24, COS_P, LOG_Q, M2LN2, SIN_P};
    use std::arch::x86_64::*;

    /// The four xoshiro256 streams of a [`Fast4`], state in registers.
    struct State([__m256i; 4]);

    impl State {
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn load(f4: &Fast4) -> State {
            // SAFETY: four unaligned loads of 4 u64 from the 4×4 state array.
            let p = f4.s.as_ptr() as *const __m256i;
            State(std::array::from_fn(|i| _mm256_loadu_si256(p.add(i))))
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn store(&self, f4: &mut Fast4) {
            // SAFETY: four unaligned stores of 4 u64 into the 4×4 state array.
            let p = f4.s.as_mut_ptr() as *mut __m256i;
            for (i, &v) in self.0.iter().enumerate() {
                _mm256_storeu_si256(p.add(i), v);
            }
        }

        /// One step of [`Fast4::next4_plus`]'s draws, in [`super::draw8`]'s (and draw16's) lane order.
        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn next_plus(&mut self) -> __m256i {
            let v = _mm256_add_epi64(self.0[0], self.0[3]);
            self.advance();
            v
        }

        #[inline]
        #[target_feature(enable = "avx2")]
        unsafe fn advance(&mut self) {
            let [s0, s1, s2, s3] = &mut self.0;
            let t = _mm256_slli_epi64(*s1, 17);
            *s2 = _mm256_xor_si256(*s2, *s0);
            *s3 = _mm256_xor_si256(*s3, *s1);
            *s1 = _mm256_xor_si256(*s1, *s2);
            *s0 = _mm256_xor_si256(*s0, *s3);
            *s2 = _mm256_xor_si256(*s2, t);
            *s3 = _mm256_or_si256(_mm256_slli_epi64(*s3, 45), _mm256_srli_epi64(*s3, 19));
        }
    }

    /// [`super::box_muller`] on N × eight lanes, each step over the N vectors in turn: every
    /// constant is loaded once per N uses (AVX2's 16 registers cannot hold them all, and the
    /// reloads and spills otherwise outnumber the arithmetic).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn box_muller<const N: usize>(r1: [__m256i; N], r2: [__m256i; N]) -> ([__m256; N], [__m256; N]) {
        macro_rules! each {
            ($i:ident => $e:expr) => {
                std::array::from_fn::<_, N, _>(|$i| $e)
            };
        }
        let (set, mul, fma, seti) = (_mm256_set1_ps, _mm256_mul_ps, _mm256_fmadd_ps, _mm256_set1_epi32);
        let c = seti(0x100_0000);
        let k = each!(i => _mm256_cvtepi32_ps(_mm256_sub_epi32(c, _mm256_srli_epi32(r1[i], 8))));
        let c = seti(0x3f35_04f3 + (24 << 23));
        let ix = each!(i => _mm256_sub_epi32(_mm256_castps_si256(k[i]), c));
        let e = each!(i => _mm256_cvtepi32_ps(_mm256_srai_epi32(ix[i], 23)));
        let (c, d) = (seti(0x7f_ffff), seti(0x3f35_04f3));
        let m = each!(i => _mm256_add_epi32(_mm256_and_si256(ix[i], c), d));
        let c = set(1.0);
        let f = each!(i => _mm256_sub_ps(_mm256_castsi256_ps(m[i]), c));
        let z = each!(i => mul(f[i], f[i]));
        let q = LOG_Q.map(|q| set(q));
        let p45 = each!(i => fma(q[5], f[i], q[4]));
        let p23 = each!(i => fma(q[3], f[i], q[2]));
        let p01 = each!(i => fma(q[1], f[i], q[0]));
        let poly = each!(i => fma(p45[i], mul(z[i], z[i]), fma(p23[i], z[i], p01[i])));
        let c = set(-2.0);
        let t = each!(i => fma(mul(f[i], z[i]), poly[i], fma(c, f[i], z[i])));
        let c = set(M2LN2);
        let rad = each!(i => _mm256_sqrt_ps(fma(e[i], c, t[i])));
        let c = set(ANGLE24);
        let x = each!(i => mul(_mm256_cvtepi32_ps(_mm256_srai_epi32(r2[i], 7)), c));
        let z = each!(i => mul(x[i], x[i]));
        let z2 = each!(i => mul(z[i], z[i]));
        let (sp, cp) = (SIN_P.map(|c| set(c)), COS_P.map(|c| set(c)));
        let s = each!(i => fma(mul(x[i], z[i]), fma(sp[2], z2[i], fma(sp[1], z[i], sp[0])), x[i]));
        let (h, one) = (set(-0.5), set(1.0));
        let c = each!(i => fma(z2[i], fma(cp[2], z2[i], fma(cp[1], z[i], cp[0])), fma(h, z[i], one)));
        let sign = seti(i32::MIN);
        let ab = each!(i => {
            let swap = _mm256_castsi256_ps(_mm256_slli_epi32(r2[i], 26));
            let (a, b) = (_mm256_blendv_ps(c[i], s[i], swap), _mm256_blendv_ps(s[i], c[i], swap));
            let r = _mm256_xor_ps(rad[i], _mm256_castsi256_ps(_mm256_and_si256(_mm256_slli_epi32(r2[i], 25), sign)));
            (mul(r, a), mul(r, b))
        });
        (each!(i => ab[i].0), each!(i => ab[i].1))
    }

    /// [`super::normals_f32`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn normals(f4: &mut Fast4, z: &mut [f32]) {
        let mut st = State::load(f4);
        for h in z.chunks_exact_mut(16) {
            let (r1, r2) = (st.next_plus(), st.next_plus());
            let ([a], [b]) = box_muller([r1], [r2]);
            // SAFETY: two stores of 8 f32 into the 16 of `h`.
            _mm256_storeu_ps(h.as_mut_ptr(), a);
            _mm256_storeu_ps(h.as_mut_ptr().add(8), b);
        }
        st.store(f4);
    }

    /// Eight input bytes as f32 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn widen(p: *const u8) -> __m256i {
        // SAFETY: the caller passes a pointer to at least 8 readable bytes.
        _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
    }

    /// 32 dword lanes holding 0..=255 (value order: `d[0]` lanes, then `d[1]`, …) stored as bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn store_bytes(o: *mut u8, d: [__m256i; 4]) {
        let p = _mm256_packus_epi16(_mm256_packus_epi32(d[0], d[1]), _mm256_packus_epi32(d[2], d[3]));
        // The packs work per 128-bit half: dwords hold (a0-3, b0-3, c0-3, d0-3, a4-7, …).
        let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: the caller passes a pointer to 32 writable bytes.
        _mm256_storeu_si256(o as *mut __m256i, p);
    }

    /// N values at a time from `x` to `out` by `block`, the last ones through a padded copy;
    /// one call site, so `block` is inlined and the generator state stays in registers.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn by_n_avx2<const N: usize>(x: &[u8], out: &mut [u8], st: &mut State, mut block: impl FnMut(&mut State, *const u8, *mut u8)) {
        let (full, tail) = (x.len() / N * N, x.len() % N);
        let (mut xb, mut ob) = ([0u8; N], [0u8; N]);
        for i in (0..x.len()).step_by(N) {
            let (xs, o) = if i < full {
                // SAFETY: i + N <= full <= x.len() = out.len().
                (x.as_ptr().add(i), out.as_mut_ptr().add(i))
            } else {
                xb[..tail].copy_from_slice(&x[i..]);
                (xb.as_ptr(), ob.as_mut_ptr())
            };
            block(st, xs, o);
        }
        out[full..].copy_from_slice(&ob[..tail]);
    }

    /// [`super::normal_noise_u8`]'s loop. The clip to 0..=255 is left to the saturating packs
    /// (cast then saturate = clip then cast for |y| < 2¹⁵, and |y| ≤ 255 + 255·0.6·5.8 here).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn normal_noise_u8<const SPECKLE: bool>(x: &[u8], out: &mut [u8], a: f32, f4: &mut Fast4) {
        debug_assert!(255.0 + 5.8 * a.abs() * if SPECKLE { 255.0 } else { 1.0 } < 32767.0);
        let mut st = State::load(f4);
        let av = _mm256_set1_ps(a);
        // Normals first, then the values: two short loops keep more independent work in the
        // out-of-order window than one long chain per 32 values (log → √ → noise → pack).
        by_n_avx2::<128>(x, out, &mut st, |st, xs, o| {
            let mut z = [_mm256_setzero_ps(); 16];
            for h in 0..4 {
                let r: [__m256i; 4] = std::array::from_fn(|_| st.next_plus());
                let (a, b) = box_muller([r[0], r[2]], [r[1], r[3]]);
                z[4 * h..4 * h + 4].copy_from_slice(&[a[0], b[0], a[1], b[1]]);
            }
            for q in 0..4 {
                let d: [__m256i; 4] = std::array::from_fn(|k| {
                    let v = _mm256_cvtepi32_ps(widen(xs.add(32 * q + 8 * k)));
                    let z = z[4 * q + k];
                    let y = if SPECKLE { _mm256_fmadd_ps(_mm256_mul_ps(v, av), z, v) } else { _mm256_fmadd_ps(av, z, v) };
                    _mm256_cvttps_epi32(y)
                });
                store_bytes(o.add(32 * q), d);
            }
        });
        st.store(f4);
    }

    /// [`super::impulse_noise_u8`]'s loop: hit and salt decided per 16-bit lane, packed to byte
    /// masks and blended 32 values at a time; a block with a lane on the boundary h = hi is
    /// settled value by value as the portable loop does.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn impulse_noise_u8(x: &[u8], out: &mut [u8], thr: Impulse, f4: &mut Fast4, tail: &mut Fast) {
        let mut st = State::load(f4);
        // hi < 2¹⁵ and h < 2¹⁵: the signed compares are the unsigned ones.
        let (t, low15) = (_mm256_set1_epi16(thr.hi as i16), _mm256_set1_epi16(0x7fff));
        // The packs work per 128-bit half: (a0-7, b0-7, a8-15, b8-15) back to value order.
        let pack = |a: __m256i, b: __m256i| _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi16(a, b));
        by_n_avx2::<32>(x, out, &mut st, |st, xs, o| {
            let d = [st.next_plus(), st.next_plus()];
            let h = d.map(|d| _mm256_and_si256(d, low15));
            let mut hit = pack(_mm256_cmpgt_epi16(t, h[0]), _mm256_cmpgt_epi16(t, h[1]));
            let salt = pack(_mm256_srai_epi16(d[0], 15), _mm256_srai_epi16(d[1], 15));
            let edge = _mm256_or_si256(_mm256_cmpeq_epi16(t, h[0]), _mm256_cmpeq_epi16(t, h[1]));
            if _mm256_testz_si256(edge, edge) == 0 {
                let (mut dv, mut hv) = ([0u16; 32], [0u8; 32]);
                // SAFETY: stores of 2 × 16 u16 and 32 bytes into arrays of that size.
                _mm256_storeu_si256(dv.as_mut_ptr() as *mut __m256i, d[0]);
                _mm256_storeu_si256(dv.as_mut_ptr().add(16) as *mut __m256i, d[1]);
                _mm256_storeu_si256(hv.as_mut_ptr() as *mut __m256i, hit);
                for (hv, &d) in hv.iter_mut().zip(&dv) {
                    if d & 0x7fff == thr.hi {
                        *hv = (thr.hit(d, tail) as u8).wrapping_neg();
                    }
                }
                hit = _mm256_loadu_si256(hv.as_ptr() as *const __m256i);
            }
            // SAFETY: by_n_avx2 passes 32 readable bytes at `xs`, 32 writable at `o`.
            let v = _mm256_loadu_si256(xs as *const __m256i);
            _mm256_storeu_si256(o as *mut __m256i, _mm256_blendv_epi8(v, salt, hit));
        });
        st.store(f4);
    }

    /// [`super::shot_noise_u8`]'s loop: [`ShotTable::sample`] with the table loads as gathers;
    /// the clip to 255 is left to the saturating packs.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn shot_noise_u8(x: &[u8], out: &mut [u8], t: &ShotTable, f4: &mut Fast4) {
        let mut st = State::load(f4);
        let b = _mm_cvtsi32_si128(t.bits as i32);
        let mb = _mm_cvtsi32_si128(32 - t.bits as i32);
        let low = _mm256_set1_epi32((u32::MAX >> t.bits) as i32);
        let nmask = _mm256_set1_epi32((1 << t.bits) - 1);
        let scale = _mm256_set1_ps(t.scale);
        let base = t.cols.as_ptr() as *const i32;
        by_n_avx2::<32>(x, out, &mut st, |st, xs, o| {
            let d: [__m256i; 4] = std::array::from_fn(|k| {
                let r = st.next_plus();
                let j = _mm256_srl_epi32(r, mb);
                // SAFETY: index v << bits | j < 256 · 2^bits = cols.len().
                let e = _mm256_i32gather_epi32::<4>(base, _mm256_or_si256(_mm256_sll_epi32(widen(xs.add(8 * k)), b), j));
                // Both sides < 2³¹: the signed compare is the unsigned one.
                let acc = _mm256_cmpgt_epi32(_mm256_srl_epi32(e, b), _mm256_and_si256(r, low));
                let k = _mm256_blendv_epi8(_mm256_and_si256(e, nmask), j, acc);
                // k·scale ≤ 2^bits·scale < 2¹⁵: the packs clip it to 255.
                _mm256_cvttps_epi32(_mm256_mul_ps(_mm256_cvtepi32_ps(k), scale))
            });
            store_bytes(o, d);
        });
        st.store(f4);
    }
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

    /// The AVX2 (+ FMA) loops must give the portable loops' exact bytes (they may not depend on
    /// the CPU), the Box–Muller lanes the portable normals' exact bits, edge draws included.
    #[test]
    fn avx2_equals_portable() {
        use rand::{Rng as _, SeedableRng};
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            use std::arch::x86_64::*;
            let mut rng = Rng::seed_from_u64(6);
            let mut edge = vec![0u32, 1, 255, 256, 0x7f_ffff, 0x8000_0000, u32::MAX, u32::MAX - 255];
            edge.extend((0..20_000).map(|_| rng.gen::<u32>()));
            for r1 in edge.chunks_exact(8) {
                for r2 in edge.chunks_exact(8).step_by(97) {
                    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
                    // SAFETY: AVX2 checked above; loads of 8 u32, stores of 8 f32.
                    unsafe {
                        let ([va], [vb]) = avx2::box_muller([_mm256_loadu_si256(r1.as_ptr() as _)], [_mm256_loadu_si256(r2.as_ptr() as _)]);
                        _mm256_storeu_ps(a.as_mut_ptr(), va);
                        _mm256_storeu_ps(b.as_mut_ptr(), vb);
                    }
                    for j in 0..8 {
                        let (x, y) = box_muller(r1[j], r2[j]);
                        assert_eq!((a[j].to_bits(), b[j].to_bits()), (x.to_bits(), y.to_bits()), "{} {}", r1[j], r2[j]);
                    }
                }
            }
            let f4 = |seed| Fast4::from_fast(&mut Fast::from_rng(&mut Rng::seed_from_u64(seed)));
            let (mut g, mut r) = (f4(8), [0u64; 40]);
            g.fill(&mut r);
            let mut h = f4(8);
            assert!(r.chunks_exact(4).all(|q| q == h.next4()), "Fast4::fill");
            let (mut a, mut b) = (vec![0f32; 4096], vec![0f32; 4096]);
            // SAFETY: AVX2 and FMA checked above.
            unsafe { avx2::normals(&mut f4(7), &mut a) };
            normals_f32_portable(&mut f4(7), &mut b);
            assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
            for n in [1, 31, 32, 33, 1000, 3 * 224 * 37 + 5, 300_000] {
                let x: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
                for (s, g) in [(1, 255.0 * 0.38), (2, 255.0 * 0.04)] {
                    // SAFETY: AVX2 checked above.
                    unsafe { avx2::normal_noise_u8::<false>(&x, &mut a, g, &mut f4(s)) };
                    normal_noise_u8_portable::<false>(&x, &mut b, g, &mut f4(s));
                    assert_eq!(a, b, "gaussian {n}");
                    // SAFETY: AVX2 checked above.
                    unsafe { avx2::normal_noise_u8::<true>(&x, &mut a, g / 255.0, &mut f4(s)) };
                    normal_noise_u8_portable::<true>(&x, &mut b, g / 255.0, &mut f4(s));
                    assert_eq!(a, b, "speckle {n}");
                }
                for amount in [0.27, 0.01] {
                    let thr = Impulse::new(amount);
                    let (mut ta, mut tb) = (Fast::from_rng(&mut Rng::seed_from_u64(3)), Fast::from_rng(&mut Rng::seed_from_u64(3)));
                    // SAFETY: AVX2 checked above.
                    unsafe { avx2::impulse_noise_u8(&x, &mut a, thr, &mut f4(3), &mut ta) };
                    impulse_noise_u8_portable(&x, &mut b, thr, &mut f4(3), &mut tb);
                    assert_eq!(a, b, "impulse {n}");
                    assert_eq!(ta.next_u64(), tb.next_u64(), "impulse {n}: boundary draws");
                    if n == 300_000 {
                        // The boundary path (h = hi, probability 2⁻¹⁵) was taken.
                        let mut g = f4(3);
                        let edges = (0..n / 16).flat_map(|_| draw16(&mut g)).filter(|d| d & 0x7fff == thr.hi).count();
                        assert!(edges > 0, "no boundary draw at amount {amount}");
                    }
                }
                for lam in [3.0, 12.0, 500.0] {
                    let t = shot_table(lam);
                    // SAFETY: AVX2 checked above.
                    unsafe { avx2::shot_noise_u8(&x, &mut a, &t, &mut f4(4)) };
                    shot_noise_u8_portable(&x, &mut b, &t, &mut f4(4));
                    assert_eq!(a, b, "shot {lam} {n}");
                }
            }
        }
    }

    /// The Box–Muller normals: moments, a few CDF points, the tails, and the radius against
    /// f64's √(−2 ln u) over a sweep of u.
    #[test]
    fn box_muller_normals() {
        use rand::SeedableRng;
        let mut f4 = Fast4::from_fast(&mut Fast::from_rng(&mut Rng::seed_from_u64(5)));
        let mut z = vec![0f32; 400_000];
        normals_f32_portable(&mut f4, &mut z);
        let v: Vec<f64> = z.iter().map(|&z| z as f64).collect();
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n;
        let k4 = v.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n / (var * var);
        assert!(m.abs() < 0.01 && (var - 1.0).abs() < 0.01 && (k4 - 3.0).abs() < 0.05, "{m} {var} {k4}");
        // Φ at −2, −0.5, 0.3, 1.7 (scipy.stats.norm.cdf).
        for (x, p) in [(-2.0, 0.022750131948179195), (-0.5, 0.3085375387259869), (0.3, 0.6179114221889527), (1.7, 0.955434537241457)] {
            let q = v.iter().filter(|&&z| z < x).count() as f64 / n;
            assert!((q - p).abs() < 4.0 * (p * (1.0 - p) / n).sqrt(), "Φ({x}) {q} vs {p}");
        }
        let tail = v.iter().filter(|x| x.abs() > 3.5).count() as f64 / n;
        assert!((tail - 4.65e-4).abs() < 1.5e-4, "tail {tail}");
        for k in (0..1u32 << 24).step_by(7) {
            let (a, b) = box_muller(k << 8, 0x1234_5679);
            let r = ((a as f64).powi(2) + (b as f64).powi(2)).sqrt();
            let exact = (-2.0 * (1.0 - k as f64 / 16_777_216.0).ln()).sqrt();
            assert!((r - exact).abs() <= 1e-6 * exact.max(1e-3), "k {k}: {r} vs {exact}");
        }
        // The angle: x from the top 25 bits, bit 5 swaps, bit 6 negates (u = 2⁻²⁴: radius 5.77).
        let r = (-2.0 * (1.0 / 16_777_216.0f64).ln()).sqrt();
        for t in (0..1u32 << 25).step_by(4099) {
            for sym in 0..4 {
                let (a, b) = box_muller(u32::MAX, t << 7 | sym << 5);
                let x = ((t << 7) as i32 >> 7) as f64 * (std::f64::consts::FRAC_PI_4 / 16_777_216.0);
                let (c, s) = if sym & 2 == 0 { (x.cos(), x.sin()) } else { (-x.cos(), -x.sin()) };
                let (ea, eb) = if sym & 1 == 0 { (c, s) } else { (s, c) };
                assert!((a as f64 - r * ea).abs().max((b as f64 - r * eb).abs()) < 1e-6 * r, "{t} {sym}");
            }
        }
    }

    /// The salt-and-pepper decision: below, above and on the boundary of the 15-bit threshold.
    #[test]
    fn impulse_decision() {
        use rand::SeedableRng;
        let thr = Impulse::new(0.09);
        assert!(thr.hi == 2949 && (thr.lo as f64 / 4294967296.0 - 0.12).abs() < 1e-9);
        let mut tail = Fast::from_rng(&mut Rng::seed_from_u64(1));
        let before = tail.s;
        assert!(thr.hit(2948 | 0x8000, &mut tail) && !thr.hit(2950, &mut tail) && tail.s == before);
        let hits = (0..100_000u32).filter(|&i| thr.hit(2949 | (i as u16) << 15, &mut tail)).count();
        assert!((hits as f64 / 1e5 - 0.12).abs() < 0.005, "{hits}");
    }

    /// Each shot table, read back as a distribution, is the clipped Poisson pmf, and sampling it
    /// gives its mean and variance.
    #[test]
    fn shot_tables_hold_the_poisson_pmf() {
        use rand::SeedableRng;
        use rand::Rng as _;
        for lam in [3.0, 12.0, 60.0, 500.0] {
            let t = ShotTable::new(lam);
            let n = 1usize << t.bits;
            let one = (u32::MAX >> t.bits) as f64 + 1.0;
            for v in [0usize, 1, 77, 254, 255] {
                let pmf = poisson_clipped(v as f64 / 255.0 * lam, lam.ceil() as usize);
                let mut got = vec![0.0; n];
                for (j, &e) in t.cols[v * n..][..n].iter().enumerate() {
                    let acc = (e >> t.bits) as f64 / one;
                    let alias = (e & (n as u32 - 1)) as usize;
                    got[j] += acc / n as f64;
                    got[alias] += (1.0 - acc) / n as f64;
                }
                for (j, &g) in got.iter().enumerate() {
                    let p = pmf.get(j).copied().unwrap_or(0.0);
                    assert!((g - p).abs() < 1e-6, "λ={lam} v={v} k={j}: {g} vs {p}");
                }
            }
            let mut rng = Rng::seed_from_u64(3);
            let pmf = poisson_clipped(lam / 3.0, lam.ceil() as usize);
            let mu = pmf.iter().enumerate().map(|(k, p)| k as f64 * p).sum::<f64>();
            let var_exp = pmf.iter().enumerate().map(|(k, p)| (k as f64 - mu).powi(2) * p).sum::<f64>();
            let (mut s, mut s2, m) = (0.0, 0.0, 200_000);
            for _ in 0..m {
                let k = t.sample(85, rng.gen()) as f64;
                s += k;
                s2 += k * k;
            }
            let (mean, var) = (s / m as f64, s2 / m as f64 - (s / m as f64).powi(2));
            assert!((mean - mu).abs() < 4.0 * (var_exp / m as f64).sqrt(), "λ={lam} mean {mean} vs {mu}");
            assert!((var / var_exp - 1.0).abs() < 0.03, "λ={lam} var {var} vs {var_exp}");
            // Without the clip (rare at μ = λ/3 for λ ≥ 12) these are Poisson(λ/3)'s.
            if lam >= 12.0 {
                assert!((mu / (lam / 3.0) - 1.0).abs() < 1e-3 && (var_exp / (lam / 3.0) - 1.0).abs() < 0.02, "λ={lam}");
            }
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

