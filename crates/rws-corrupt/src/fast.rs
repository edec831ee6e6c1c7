//! uint8 → uint8 paths of the corruptions that the CLI and training call through [`crate::corrupt_u8`].
//!
//! The float path (HWC f64, 0..255) stays the faithful model of the reference and is what the
//! fixture tests check; these paths skip its whole-image f64 buffers (a 224×224×3 f64 image is
//! 1.2 MB: allocating, filling and casting it costs more than many corruptions themselves).
//! Noises, contrast, brightness, saturate, pixelate and jpeg use the same arithmetic and random
//! draws as the float path, so they return the same bytes as `to_u8(corrupt_float(..))`
//! (contrast: the channel mean from an exact integer sum). The gaussian, defocus and motion blurs
//! of images up to 64×64 keep the float path's f64 operation order (same bytes); larger ones run
//! in f32 over exact integer sums (defocus) and register-blocked passes, and tests/fast.rs bounds
//! their difference from the float path.
use crate::ndimage::{boundary_index, Mode};
use crate::{blur, digital, noise, Corruption, ParamSet, Result, Rng};

#[allow(clippy::too_many_arguments)]
pub(crate) fn corrupt_u8_fast(x: &[u8], h: usize, w: usize, c: usize, cor: Corruption, s: usize, p: ParamSet, rng: &mut Rng) -> Option<Result<Vec<u8>>> {
    Some(Ok(match cor {
        Corruption::GaussianNoise => noise::gaussian_noise_u8(x, s, p, rng),
        Corruption::ShotNoise => noise::shot_noise_u8(x, s, p, rng),
        Corruption::ImpulseNoise => noise::impulse_noise_u8(x, s, p, rng),
        Corruption::SpeckleNoise => noise::speckle_noise_u8(x, s, p, rng),
        Corruption::Brightness => digital::brightness_u8(x, c, s, p),
        Corruption::Saturate => digital::saturate_u8(x, c, s, p),
        Corruption::Contrast => digital::contrast_u8(x, c, s, p),
        Corruption::Pixelate => return Some(digital::pixelate_u8(x, h, w, c, s, p)),
        Corruption::JpegCompression => digital::jpeg_u8(x, h, w, c, s, p),
        Corruption::GaussianBlur => gaussian_blur_u8(x, h, w, c, s, p),
        Corruption::DefocusBlur => defocus_blur_u8(x, h, w, c, s, p),
        Corruption::MotionBlur => motion_blur_u8(x, h, w, c, s, p, rng),
        Corruption::Fog => crate::fog::fog_u8(x, h, w, c, s, p, rng),
        Corruption::ZoomBlur => return Some(blur::zoom_blur_u8(x, h, w, c, s, p)),
        _ => return crate::weather_u8::corrupt_u8_weather(x, h, w, c, cor, s, p, rng),
    }))
}

/// Accumulator types of the separable filter: f32 (fast) or f64 (the float path's exact order).
pub(crate) trait Flt: Copy + Default + std::ops::Add<Output = Self> + std::ops::Mul<Output = Self> + std::ops::AddAssign {
    /// Whether `c + a·b` may be fused: f32 paths only (the f64 paths reproduce the float path's
    /// separate roundings bit for bit).
    const FUSE: bool;
    fn fused(a: Self, b: Self, c: Self) -> Self;
}
impl Flt for f32 {
    const FUSE: bool = true;
    #[inline(always)]
    fn fused(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}
impl Flt for f64 {
    const FUSE: bool = false;
    #[inline(always)]
    fn fused(a: f64, b: f64, c: f64) -> f64 {
        c + a * b
    }
}

/// `c + a·b`, one FMA instruction when compiled for FMA and the type allows it.
#[inline(always)]
fn madd<const FMA: bool, F: Flt>(a: F, b: F, c: F) -> F {
    if FMA && F::FUSE {
        F::fused(a, b, c)
    } else {
        c + a * b
    }
}

/// AVX2 and FMA both present (checked once per call; `is_x86_feature_detected` caches).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Pixel sources of the separable filter: uint8 input or a float intermediate image.
pub(crate) trait Px<F>: Copy {
    fn get(self) -> F;
}
impl Px<f32> for u8 {
    #[inline(always)]
    fn get(self) -> f32 {
        self as f32
    }
}
impl Px<f32> for f32 {
    #[inline(always)]
    fn get(self) -> f32 {
        self
    }
}
impl Px<f64> for f64 {
    #[inline(always)]
    fn get(self) -> f64 {
        self
    }
}

/// Correlate an HWC image with odd kernels `kv` along H and `kh` along W under `mode` (not
/// Constant), then map every value through `fin`. One output row at a time (the vertical pass
/// into a row buffer, padded, then the horizontal pass), so no whole-image intermediate is
/// allocated; the loops are axpys over whole rows that the compiler vectorises, with AVX2 + FMA
/// when the CPU has them (runtime detection; the portable build stays SSE2; FMA only in f32). `paired` adds mirrored
/// taps of a symmetric kernel before multiplying (half the multiplies); unpaired, the taps are
/// summed in order from 0.0, exactly as `ndimage::correlate_rows`/`correlate_cols` do.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sep_filter<F: Flt, T: Px<F>, O: Copy + Default>(src: &[T], h: usize, w: usize, c: usize, kv: &[F], kh: &[F], mode: Mode, paired: bool, fin: impl Fn(F) -> O) -> Vec<O> {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { sep_filter_avx2(src, h, w, c, kv, kh, mode, paired, fin) };
    }
    sep_filter_impl::<F, T, O, false>(src, h, w, c, kv, kh, mode, paired, fin)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn sep_filter_avx2<F: Flt, T: Px<F>, O: Copy + Default>(src: &[T], h: usize, w: usize, c: usize, kv: &[F], kh: &[F], mode: Mode, paired: bool, fin: impl Fn(F) -> O) -> Vec<O> {
    sep_filter_impl::<F, T, O, true>(src, h, w, c, kv, kh, mode, paired, fin)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sep_filter_impl<F: Flt, T: Px<F>, O: Copy + Default, const FMA: bool>(src: &[T], h: usize, w: usize, c: usize, kv: &[F], kh: &[F], mode: Mode, paired: bool, fin: impl Fn(F) -> O) -> Vec<O> {
    let rw = w * c;
    let (rv, rh) = (kv.len() / 2, kh.len() / 2);
    let mut out = vec![O::default(); h * rw];
    let mut buf = vec![F::default(); (w + 2 * rh) * c];
    let mut acc = vec![F::default(); rw];
    let row = |y: isize| -> &[T] {
        let sy = boundary_index(y, h, mode).expect("mode without zeros");
        &src[sy * rw..(sy + 1) * rw]
    };
    for y in 0..h {
        if paired {
            // acc = k[r]·x[y] + Σ k[t]·(x[y−r+t] + x[y+r−t])
            let kc = kv[rv];
            for (a, &s) in acc.iter_mut().zip(row(y as isize)) {
                *a = kc * s.get();
            }
            for (t, &k) in kv[..rv].iter().enumerate() {
                let d = (rv - t) as isize;
                let (up, down) = (row(y as isize - d), row(y as isize + d));
                for ((a, &u), &v) in acc.iter_mut().zip(up).zip(down) {
                    *a = madd::<FMA, F>(k, u.get() + v.get(), *a);
                }
            }
        } else {
            acc.iter_mut().for_each(|a| *a = F::default());
            for (t, &k) in kv.iter().enumerate() {
                for (a, &s) in acc.iter_mut().zip(row(y as isize + t as isize - rv as isize)) {
                    *a = madd::<FMA, F>(k, s.get(), *a);
                }
            }
        }
        // Horizontal pass on the padded row.
        buf[rh * c..rh * c + rw].copy_from_slice(&acc);
        for j in 0..rh {
            let l = boundary_index(j as isize - rh as isize, w, mode).unwrap_or(0);
            let r = boundary_index((w + j) as isize, w, mode).unwrap_or(0);
            for ch in 0..c {
                buf[j * c + ch] = acc[l * c + ch];
                buf[(w + rh + j) * c + ch] = acc[r * c + ch];
            }
        }
        if paired {
            let kc = kh[rh];
            for (a, &s) in acc.iter_mut().zip(&buf[rh * c..rh * c + rw]) {
                *a = kc * s;
            }
            for (t, &k) in kh[..rh].iter().enumerate() {
                let d = rh - t;
                let (l, r) = (&buf[(rh - d) * c..(rh - d) * c + rw], &buf[(rh + d) * c..(rh + d) * c + rw]);
                for ((a, &u), &v) in acc.iter_mut().zip(l).zip(r) {
                    *a = madd::<FMA, F>(k, u + v, *a);
                }
            }
        } else {
            acc.iter_mut().for_each(|a| *a = F::default());
            for (t, &k) in kh.iter().enumerate() {
                for (a, &s) in acc.iter_mut().zip(&buf[t * c..t * c + rw]) {
                    *a = madd::<FMA, F>(k, s, *a);
                }
            }
        }
        for (o, &a) in out[y * rw..(y + 1) * rw].iter_mut().zip(&acc) {
            *o = fin(a);
        }
    }
    out
}

/// Floats per block of the blocked symmetric filter: eight AVX vectors, which stay in registers
/// while all taps of one output block accumulate.
const BLK: usize = 64;

/// Rows of `w·c` values padded to whole blocks (the filters read and write whole blocks).
fn block_stride(rw: usize) -> usize {
    rw.div_ceil(BLK) * BLK
}

thread_local! {
    static SCRATCH_F32: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_F32_B: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_U16: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_U16_B: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_I32: std::cell::Cell<Vec<i32>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_I16: std::cell::Cell<Vec<i16>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_F64: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
    static SCRATCH_F64_B: std::cell::Cell<Vec<f64>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `f(buf)` with a per-thread buffer of at least n values, kept for the next call: the large
/// images' intermediates are megabytes whose allocation, zeroing and first-touch page faults
/// cost as much as a filter pass. The buffer holds stale values: callers write what they read.
/// (Taken out while in use, so a nested call on the same buffer gets a fresh one.)
fn scratch<T: Copy + Default, R>(key: &'static std::thread::LocalKey<std::cell::Cell<Vec<T>>>, n: usize, f: impl FnOnce(&mut [T]) -> R) -> R {
    let mut v = key.take();
    if v.len() < n {
        v.resize(n, T::default());
    }
    let r = f(&mut v[..n]);
    key.set(v);
    r
}

/// Length of [`pad_rows_f32`]'s output.
fn pad_rows_len(h: usize, w: usize, c: usize, r: usize) -> usize {
    (h + 2 * r) * block_stride(w * c)
}

/// `src` (HWC) into `out` as f32 rows of stride [`block_stride`] (zero-filled
/// past w·c), with `r` extra rows above and below filled under `mode`: the input of
/// [`sym_sep_f32`].
fn pad_rows_f32(src: &[u8], h: usize, w: usize, c: usize, r: usize, mode: Mode, out: &mut [f32]) {
    let (rw, rs) = (w * c, block_stride(w * c));
    for (py, orow) in out[..pad_rows_len(h, w, c, r)].chunks_exact_mut(rs).enumerate() {
        let sy = boundary_index(py as isize - r as isize, h, mode).expect("mode without zeros");
        for (o, &v) in orow.iter_mut().zip(&src[sy * rw..(sy + 1) * rw]) {
            *o = v as f32;
        }
        orow[rw..].iter_mut().for_each(|o| *o = 0.0);
    }
}

/// Correlate with symmetric odd kernels given by their halves (`kv[0]` the centre, `kv[d]` the
/// weight at ±d) along H, then W, under `mode`. `xp` comes from [`pad_rows_f32`] with
/// r = kv.len() − 1. The passes fold mirrored taps (one add, one multiply-add per pair) over
/// blocks of contiguous values, so each block's accumulators stay in registers for all taps;
/// the vertical pass walks down one block column at a time, two output rows at once, which
/// keeps the rows it reads in L1. With AVX2 the horizontal pass runs in 16-bit fixed point
/// ([`HPairs`]: values move by ≤ 1/256 + 0.01·(local range)/255, flat regions stay exact).
/// `fin(y, row)` receives each output row (its first w·c values are meaningful).
#[allow(clippy::too_many_arguments)]
pub(crate) fn sym_sep_f32(xp: &[f32], h: usize, w: usize, c: usize, kv: &[f32], kh: &[f32], mode: Mode, fin: impl FnMut(usize, &[f32])) {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { sym_sep_avx2(xp, h, w, c, kv, kh, mode, fin) };
    }
    sym_sep_impl::<false>(xp, h, w, c, kv, kh, mode, fin)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn sym_sep_avx2(xp: &[f32], h: usize, w: usize, c: usize, kv: &[f32], kh: &[f32], mode: Mode, fin: impl FnMut(usize, &[f32])) {
    sym_sep_impl::<true>(xp, h, w, c, kv, kh, mode, fin)
}

/// One block of N values: `k[0]·at(0) + Σ_d k[d]·(at(−d) + at(d))`, `at(o)` being the block at
/// offset o.
#[inline(always)]
fn sym_block<const FMA: bool, const N: usize>(k: &[f32], at: impl Fn(isize) -> *const f32, out: &mut [f32; N]) {
    // SAFETY (callers): every block `at` returns is N readable values.
    let blk = |o: isize| unsafe { &*(at(o) as *const [f32; N]) };
    let mut acc = [0f32; N];
    let c0 = blk(0);
    for i in 0..N {
        acc[i] = k[0] * c0[i];
    }
    for (d, &kd) in k.iter().enumerate().skip(1) {
        let (u, v) = (blk(-(d as isize)), blk(d as isize));
        for i in 0..N {
            acc[i] = madd::<FMA, f32>(kd, u[i] + v[i], acc[i]);
        }
    }
    *out = acc;
}

/// Floats per block of the vertical pass: two AVX vectors, for [`sym_block2_avx2`].
const BLK2: usize = 16;

/// [`sym_block`] for two output rows y and y+1 at once (`p` points at row y's block, rows
/// `rs` floats apart): row y+1's pair (y+1−d, y+1+d) reuses row y−d+1, loaded for row y's
/// previous pair, and row y's pair reuses row y+d, loaded for row y+1's previous pair, so each
/// input row is loaded once for both outputs. Same operations per output as [`sym_block`]
/// with FMA, so the same values.
///
/// # Safety
/// AVX2 and FMA present; rows y−(k.len()−1) ..= y+k.len() readable for BLK2 floats from `p`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn sym_block2_avx2(k: &[f32], p: *const f32, rs: isize, out0: &mut [f32; BLK2], out1: &mut [f32; BLK2]) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the rows read here.
    let ld = |o: isize, v: isize| unsafe { _mm256_loadu_ps(p.offset(o * rs + 8 * v)) };
    let k0 = _mm256_set1_ps(k[0]);
    let (mut l0, mut l1, mut r0, mut r1) = (ld(0, 0), ld(0, 1), ld(1, 0), ld(1, 1));
    let (mut a0, mut a1) = (_mm256_mul_ps(k0, l0), _mm256_mul_ps(k0, l1));
    let (mut b0, mut b1) = (_mm256_mul_ps(k0, r0), _mm256_mul_ps(k0, r1));
    for (d, &kd) in k.iter().enumerate().skip(1) {
        let kd = _mm256_set1_ps(kd);
        let (n0, n1, m0, m1) = (ld(-(d as isize), 0), ld(-(d as isize), 1), ld(d as isize + 1, 0), ld(d as isize + 1, 1));
        a0 = _mm256_fmadd_ps(kd, _mm256_add_ps(n0, r0), a0);
        a1 = _mm256_fmadd_ps(kd, _mm256_add_ps(n1, r1), a1);
        b0 = _mm256_fmadd_ps(kd, _mm256_add_ps(l0, m0), b0);
        b1 = _mm256_fmadd_ps(kd, _mm256_add_ps(l1, m1), b1);
        (l0, l1, r0, r1) = (n0, n1, m0, m1);
    }
    // SAFETY: each output holds two vectors.
    unsafe {
        _mm256_storeu_ps(out0.as_mut_ptr(), a0);
        _mm256_storeu_ps(out0.as_mut_ptr().add(8), a1);
        _mm256_storeu_ps(out1.as_mut_ptr(), b0);
        _mm256_storeu_ps(out1.as_mut_ptr().add(8), b1);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sym_sep_impl<const FMA: bool>(xp: &[f32], h: usize, w: usize, c: usize, kv: &[f32], kh: &[f32], mode: Mode, mut fin: impl FnMut(usize, &[f32])) {
    let (rw, rs) = (w * c, block_stride(w * c));
    let (rv, rh) = (kv.len() - 1, kh.len() - 1);
    assert!(xp.len() >= (h + 2 * rv) * rs);
    // Vertical pass into rows padded by rh pixels each side (filled afterwards), with room for
    // the AVX2 horizontal pass's pair reads.
    let ts = (rs + (2 * rh + 1) * c + 48).div_ceil(16) * 16;
    scratch(&SCRATCH_F32, h * ts, |t| {
        let (mut o0, mut o1) = ([0f32; BLK2], [0f32; BLK2]);
        for x0 in (0..rs).step_by(BLK2) {
            for y in (0..h).step_by(2) {
                let base = (y + rv) * rs + x0;
                let at = |o: isize| {
                    // SAFETY: o ∈ −rv..=rv+1 and y + 1 < h, or o ∈ −rv..=rv: padded rows exist
                    // (asserted above), and x0 + BLK2 ≤ rs.
                    unsafe { xp.as_ptr().offset(base as isize + o * rs as isize) }
                };
                if y + 1 < h {
                    #[cfg(target_arch = "x86_64")]
                    if FMA {
                        // SAFETY: FMA is true only under sym_sep_avx2 (AVX2 and FMA checked); rows
                        // y−rv ..= y+1+rv are padded rows of xp.
                        unsafe { sym_block2_avx2(kv, at(0), rs as isize, &mut o0, &mut o1) };
                    } else {
                        sym_block::<FMA, BLK2>(kv, at, &mut o0);
                        sym_block::<FMA, BLK2>(kv, |o| at(o + 1), &mut o1);
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    {
                        sym_block::<FMA, BLK2>(kv, at, &mut o0);
                        sym_block::<FMA, BLK2>(kv, |o| at(o + 1), &mut o1);
                    }
                    t[(y + 1) * ts + rh * c + x0..][..BLK2].copy_from_slice(&o1);
                } else {
                    sym_block::<FMA, BLK2>(kv, at, &mut o0);
                }
                t[y * ts + rh * c + x0..][..BLK2].copy_from_slice(&o0);
            }
        }
        let mut ob = [0f32; BLK];
        let mut row = vec![0f32; rs];
        #[cfg(target_arch = "x86_64")]
        let pairs = if FMA { HPairs::new(kh, c, rs, ts) } else { None };
        for y in 0..h {
            let tr = &mut t[y * ts..(y + 1) * ts];
            for j in 0..rh {
                let l = boundary_index(j as isize - rh as isize, w, mode).expect("mode without zeros");
                let r = boundary_index((w + j) as isize, w, mode).expect("mode without zeros");
                for ch in 0..c {
                    tr[j * c + ch] = tr[(rh + l) * c + ch];
                    tr[(w + rh + j) * c + ch] = tr[(rh + r) * c + ch];
                }
            }
            #[cfg(target_arch = "x86_64")]
            if let Some(hp) = &pairs {
                // SAFETY: FMA is true only under sym_sep_avx2 (AVX2 checked); tr holds ts values.
                unsafe { hp.run(tr, &mut row) };
                fin(y, &row[..rw]);
                continue;
            }
            for x0 in (0..rs).step_by(BLK) {
                let base = rh * c + x0;
                // SAFETY: base ± rh·c + BLK stays within the padded row of ts ≥ rs + 2·rh·c values.
                sym_block::<FMA, BLK>(kh, |o| unsafe { tr.as_ptr().offset(base as isize + o * c as isize) }, &mut ob);
                row[x0..x0 + BLK].copy_from_slice(&ob);
            }
            fin(y, &row[..rw]);
        }
    })
}

/// `$acc + pmaddwd($a, $k)` in i32 lanes: one `vpdpwssd` for `true` (AVX-512 VNNI and VL),
/// `pmaddwd` then `paddd` for `false`; the same sums (neither saturates, and no pair here
/// reaches i32 overflow). A macro, not a function, so it expands inside the target-feature
/// functions and their closures, where the intrinsics inline.
#[cfg(target_arch = "x86_64")]
macro_rules! dp {
    (true, $acc:expr, $a:expr, $k:expr) => {
        _mm256_dpwssd_epi32($acc, $a, $k)
    };
    (false, $acc:expr, $a:expr, $k:expr) => {
        _mm256_add_epi32($acc, _mm256_madd_epi16($a, $k))
    };
}

/// The two i16 halves of each i32 lane of `$a` swapped: one `vprold` for `true` (AVX-512 VL),
/// `pshufb` by `$m` for `false`.
#[cfg(target_arch = "x86_64")]
macro_rules! swp {
    (true, $a:expr, $m:expr) => {{
        let _ = $m;
        _mm256_rol_epi32($a, 16)
    }};
    (false, $a:expr, $m:expr) => {
        _mm256_shuffle_epi8($a, $m)
    };
}

/// The horizontal pass of [`HPairs`], once per instruction set (`$v`: VNNI or not). Blocks of
/// 64 values (rs is a multiple of [`BLK`]): eight independent sums hide the multiply-add latency.
#[cfg(target_arch = "x86_64")]
macro_rules! hpairs_run_q {
    ($(#[$m:meta])* $name:ident, $feat:literal, $v:tt) => {
        $(#[$m])*
        #[target_feature(enable = $feat)]
        unsafe fn $name(&self, q: &[i16], row: &mut [f32]) {
            use std::arch::x86_64::*;
            let mut z = self.z.borrow_mut();
            let (c, rs, ts) = (self.c, self.rs, self.ts);
            assert!(q.len() >= ts && row.len() >= rs && ts.is_multiple_of(16) && rs.is_multiple_of(64));
            // SAFETY: every access below stays within ts values of q and z (ts ≥ rs + (2rh+1)·c
            // + 48, a multiple of 16), rs of row.
            unsafe {
                let zn = ts - 16 - 16 * c.div_ceil(16);
                for e in (0..zn).step_by(16) {
                    let a = _mm256_loadu_si256(q.as_ptr().add(e) as *const __m256i);
                    let b = _mm256_loadu_si256(q.as_ptr().add(e + c) as *const __m256i);
                    let (lo, hi) = (_mm256_unpacklo_epi16(a, b), _mm256_unpackhi_epi16(a, b));
                    _mm256_storeu_si256(z.as_mut_ptr().add(e) as *mut __m256i, _mm256_permute2x128_si256(lo, hi, 0x20));
                    _mm256_storeu_si256(z.as_mut_ptr().add(e + 8) as *mut __m256i, _mm256_permute2x128_si256(lo, hi, 0x31));
                }
                let scale = _mm256_set1_ps(1.0 / (128.0 * 32768.0));
                for e0 in (0..rs).step_by(64) {
                    let mut acc = [_mm256_setzero_si256(); 8];
                    for (m, &k) in self.kp.iter().enumerate() {
                        let kv = _mm256_set1_epi32(k);
                        let p = z.as_ptr().add(e0 + 2 * m * c);
                        for (i, a) in acc.iter_mut().enumerate() {
                            *a = dp!($v, *a, _mm256_loadu_si256(p.add(8 * i) as *const __m256i), kv);
                        }
                    }
                    for (i, a) in acc.iter().enumerate() {
                        _mm256_storeu_ps(row.as_mut_ptr().add(e0 + 8 * i), _mm256_mul_ps(_mm256_cvtepi32_ps(*a), scale));
                    }
                }
            }
        }
    };
}

/// The AVX2 horizontal pass in 16-bit fixed point: the row as i16 with 7 fractional bits
/// (0..255 → ≤ 32640; rounding moves a value by ≤ 1/256), then `pmaddwd` of adjacent pixel
/// pairs (q[e], q[e+c]) against pairs of Q15 weights summing to exactly 1, exact i32 sums. One
/// load multiplies two taps for eight outputs, where the f32 pass needs two loads per folded
/// pair; flat regions stay exact (integer weights summing to 2^15).
#[cfg(target_arch = "x86_64")]
struct HPairs {
    /// (k[2m], k[2m+1]) as the i16 halves of one i32, m = 0..=rh (the last odd tap weighs 0).
    kp: Vec<i32>,
    c: usize,
    rs: usize,
    ts: usize,
    q: std::cell::RefCell<Vec<i16>>,
    z: std::cell::RefCell<Vec<i32>>,
}

#[cfg(target_arch = "x86_64")]
impl HPairs {
    /// None when a weight does not fit i16 (a kernel that is nearly one tap: σ ≲ 0.3) or is
    /// negative; the f32 pass runs then.
    fn new(kh: &[f32], c: usize, rs: usize, ts: usize) -> Option<Self> {
        let rh = kh.len() - 1;
        let mut kq: Vec<i32> = (0..2 * rh + 2).map(|t| if t <= 2 * rh { (kh[t.abs_diff(rh)] as f64 * 32768.0).round() as i32 } else { 0 }).collect();
        kq[rh] += 32768 - kq.iter().sum::<i32>();
        if kq.iter().any(|&k| !(0..=i16::MAX as i32).contains(&k)) {
            return None;
        }
        let kp = kq.chunks_exact(2).map(|p| (p[1] << 16) | p[0]).collect();
        Some(HPairs { kp, c, rs, ts, q: std::cell::RefCell::new(vec![0; ts]), z: std::cell::RefCell::new(vec![0; ts]) })
    }

    /// `row[e] = Σ_t k[t]·tr[e + t·c]` for e < rs.
    ///
    /// # Safety
    /// AVX2 present; `tr` holds `ts` values, `row` rs.
    #[target_feature(enable = "avx2")]
    unsafe fn run(&self, tr: &[f32], row: &mut [f32]) {
        use std::arch::x86_64::*;
        let mut q = self.q.borrow_mut();
        let ts = self.ts;
        assert!(tr.len() >= ts && ts.is_multiple_of(16));
        // SAFETY: every access below stays within ts values of tr and q.
        unsafe {
            let s = _mm256_set1_ps(128.0);
            for e in (0..ts).step_by(16) {
                let a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(tr.as_ptr().add(e)), s));
                let b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(tr.as_ptr().add(e + 8)), s));
                _mm256_storeu_si256(q.as_mut_ptr().add(e) as *mut __m256i, _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8));
            }
            self.run_q(&q, row);
        }
    }

    hpairs_run_q! {
        /// [`HPairs::run`] on the row already in 16-bit fixed point (7 fractional bits).
        ///
        /// # Safety
        /// AVX2 present; `q` holds `ts` values, `row` rs.
        run_q, "avx2", false
    }

    hpairs_run_q! {
        /// [`HPairs::run_q`] with `vpdpwssd` for each multiply-add and add (the same sums).
        ///
        /// # Safety
        /// AVX2, AVX-512 VNNI and VL present; `q` holds `ts` values, `row` rs.
        run_q_vnni, "avx2,avx512f,avx512vl,avx512vnni", true
    }
}

/// Images up to this many pixels take the f64 path that reproduces the float path's operation
/// order (and so its bytes); larger ones the f32 path.
const EXACT_MAX_PIXELS: usize = 64 * 64;

/// The float path's final `clip(v/255, 0, 1)·255` and the reference's uint8 cast, for f32 values
/// on the 0..255 scale. f32 sums of a flat region can land a few ulps below the integer that f64
/// (and the reference) reach exactly; the 1e-3 nudge keeps those on the integer.
#[inline(always)]
fn cast_nudged(v: f32) -> u8 {
    crate::cast_u8_f32(v + 1e-3)
}

/// f64 values per block of [`taps_f64`].
const BLK64: usize = 16;

/// The exact f64 paths' correlation: output row y, value e is `0 + Σ k·src[y·stride + off + e]`
/// over `taps` (off, k) in order, multiply and add rounded separately: the order and roundings
/// of `ndimage::correlate_rows`/`correlate_cols`/`correlate2d`, so the same bits, with blocks
/// of [`BLK64`] sums kept in registers over all taps. `src` must hold BLK64 values past the last
/// row's reach. `fin(y, e0, block)` receives values e0.. of row y (those past `len` are junk).
fn taps_f64(src: &[f64], stride: usize, rows: usize, len: usize, taps: &[(usize, f64)], fin: impl FnMut(usize, usize, &[f64; BLK64])) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { taps_f64_avx2(src, stride, rows, len, taps, fin) };
    }
    taps_f64_impl(src, stride, rows, len, taps, fin)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn taps_f64_avx2(src: &[f64], stride: usize, rows: usize, len: usize, taps: &[(usize, f64)], fin: impl FnMut(usize, usize, &[f64; BLK64])) {
    taps_f64_impl(src, stride, rows, len, taps, fin)
}

#[inline(always)]
fn taps_f64_impl(src: &[f64], stride: usize, rows: usize, len: usize, taps: &[(usize, f64)], mut fin: impl FnMut(usize, usize, &[f64; BLK64])) {
    for y in 0..rows {
        let mut e0 = 0;
        while e0 < len {
            // Two blocks at once where the row has them: twice the independent sums per tap,
            // which the adds' latency otherwise limits. Each value's operations are unchanged.
            if e0 + BLK64 < len {
                let (mut a, mut b) = ([0f64; BLK64], [0f64; BLK64]);
                for &(off, k) in taps {
                    let s: &[f64; 2 * BLK64] = src[y * stride + off + e0..][..2 * BLK64].try_into().unwrap();
                    for i in 0..BLK64 {
                        a[i] += k * s[i];
                        b[i] += k * s[BLK64 + i];
                    }
                }
                fin(y, e0, &a);
                fin(y, e0 + BLK64, &b);
                e0 += 2 * BLK64;
            } else {
                let mut acc = [0f64; BLK64];
                for &(off, k) in taps {
                    let s: &[f64; BLK64] = src[y * stride + off + e0..][..BLK64].try_into().unwrap();
                    for i in 0..BLK64 {
                        acc[i] += k * s[i];
                    }
                }
                fin(y, e0, &acc);
                e0 += BLK64;
            }
        }
    }
}

/// `src` (HWC) padded by `ry` rows and `rx` columns under `mode`, as f64 on the 0..1 scale, with
/// [`BLK64`] spare values at the end for [`taps_f64`].
fn pad_f64(src: &[u8], h: usize, w: usize, c: usize, ry: usize, rx: usize, mode: Mode) -> Vec<f64> {
    let lut = &crate::UNIT_LUT;
    let pw = w + 2 * rx;
    let mut out = Vec::with_capacity((h + 2 * ry) * pw * c + BLK64);
    let side = |px: usize| boundary_index(px as isize - rx as isize, w, mode).expect("mode without zeros");
    for py in 0..h + 2 * ry {
        let sy = boundary_index(py as isize - ry as isize, h, mode).expect("mode without zeros");
        let row = &src[sy * w * c..(sy + 1) * w * c];
        for sx in (0..rx).map(side) {
            out.extend(row[sx * c..(sx + 1) * c].iter().map(|&b| lut[b as usize]));
        }
        out.extend(row.iter().map(|&b| lut[b as usize]));
        for sx in (rx + w..pw).map(side) {
            out.extend(row[sx * c..(sx + 1) * c].iter().map(|&b| lut[b as usize]));
        }
    }
    out.resize(out.len() + BLK64, 0.0);
    out
}

/// `dst[i] = src[i] / 255` in f64, the values of `UNIT_LUT`.
fn unit_row(src: &[u8], dst: &mut [f64]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        done = unsafe { unit_row_avx2(src, dst) };
    }
    for (o, &v) in dst[done..].iter_mut().zip(&src[done..]) {
        *o = crate::UNIT_LUT[v as usize];
    }
}

/// [`unit_row`] eight values at a time, as far as whole groups go; returns how many it did.
/// The quotient by multiplying with 1/255 and one FMA correction step (q + (v − 255q)/255 with
/// the residual exact): correctly rounded, so `v / 255` exactly, for every v in 0..=255 (the
/// test `unit_row_matches_lut` checks them all).
///
/// # Safety
/// AVX2 and FMA present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn unit_row_avx2(src: &[u8], dst: &mut [f64]) -> usize {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len()) / 8 * 8;
    let (r, d) = (_mm256_set1_pd(1.0 / 255.0), _mm256_set1_pd(255.0));
    for i in (0..n).step_by(8) {
        // SAFETY: i + 8 ≤ n values of src and dst.
        unsafe {
            let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(src.as_ptr().add(i) as *const __m128i));
            for (j, h) in [_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1)].into_iter().enumerate() {
                let x = _mm256_cvtepi32_pd(h);
                let q = _mm256_mul_pd(x, r);
                let q = _mm256_fmadd_pd(_mm256_fnmadd_pd(q, d, x), r, q);
                _mm256_storeu_pd(dst.as_mut_ptr().add(i + 4 * j), q);
            }
        }
    }
    n
}

/// Small images: the float path's correlate_rows then correlate_cols in f64 (same bytes).
/// Larger ones: with AVX2, [`gauss_rows_avx2`] (integer vertical pass, 16-bit horizontal pass);
/// otherwise, or for kernels that are nearly one tap, the f32 [`sym_sep_f32`].
pub(crate) fn gaussian_blur_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet) -> Vec<u8> {
    let sigma = blur::gaussian_sigma(severity, p);
    let k = crate::ndimage::gaussian_kernel1d(sigma, 4.0);
    if h * w <= EXACT_MAX_PIXELS {
        // The float path's correlate_rows then correlate_cols, same order and roundings.
        let (r, rw) = (k.len() / 2, w * c);
        // Rows of the intermediate: r pixels of padding each side, room for whole blocks.
        let ts = rw.div_ceil(BLK64) * BLK64 + 2 * r * c;
        let mut out = vec![0u8; h * rw];
        scratch(&SCRATCH_F64, (h + 2 * r) * rw + BLK64, |u| {
            scratch(&SCRATCH_F64_B, h * ts + BLK64, |t| {
                // The image padded by r replicated rows above and below: the vertical taps then
                // read each edge row's clamped rows at fixed offsets, the same values in the same
                // order, in one pass.
                for (py, ur) in u.chunks_exact_mut(rw).take(h + 2 * r).enumerate() {
                    let sy = py.saturating_sub(r).min(h - 1);
                    unit_row(&x[sy * rw..(sy + 1) * rw], ur);
                }
                let vt: Vec<(usize, f64)> = k.iter().enumerate().map(|(i, &kv)| (i * rw, kv)).collect();
                taps_f64(u, rw, h, rw, &vt, |y, e0, b| t[y * ts + r * c + e0..][..BLK64].copy_from_slice(b));
                for tr in t.chunks_exact_mut(ts).take(h) {
                    pad_row_edges(tr, r, rw, c);
                }
                let ht: Vec<(usize, f64)> = k.iter().enumerate().map(|(j, &kv)| (j * c, kv)).collect();
                taps_f64(t, ts, h, rw, &ht, |y, e0, b| {
                    for (o, &v) in out[y * rw + e0..(y + 1) * rw].iter_mut().zip(b) {
                        *o = crate::cast_u8(v.clamp(0.0, 1.0) * 255.0);
                    }
                });
            });
        });
        return out;
    }
    let k: Vec<f32> = k[k.len() / 2..].iter().map(|&v| v as f32).collect();
    let mut out = vec![0u8; h * w * c];
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        let rs = block_stride(w * c);
        let ts = (rs + (2 * k.len() - 1) * c + 48).div_ceil(16) * 16;
        if let Some(hp) = HPairs::new(&k, c, rs, ts) {
            // SAFETY: the CPU supports AVX2 and FMA (checked just above), and AVX-512 VNNI and
            // VL for gauss_rows_vnni.
            unsafe {
                if vnni() {
                    gauss_rows_vnni(x, h, w, c, &k, &hp, &mut out)
                } else {
                    gauss_rows_avx2(x, h, w, c, &k, &hp, &mut out)
                }
            };
            return out;
        }
    }
    scratch(&SCRATCH_F32_B, pad_rows_len(h, w, c, k.len() - 1), |xp| {
        pad_rows_f32(x, h, w, c, k.len() - 1, Mode::Nearest, xp);
        sym_sep_f32(xp, h, w, c, &k, &k, Mode::Nearest, |y, row| {
            for (o, &v) in out[y * w * c..(y + 1) * w * c].iter_mut().zip(row) {
                *o = cast_nudged(v);
            }
        });
    });
    out
}

/// [`pad_edges`] for any channel count: the common 1 and 3 with whole-pixel copies, others
/// value by value.
fn pad_row_edges<T: Copy>(q: &mut [T], r: usize, rw: usize, c: usize) {
    match c {
        1 => pad_edges::<T, 1>(q, r, rw),
        3 => pad_edges::<T, 3>(q, r, rw),
        _ => {
            for j in 0..r * c {
                q[j] = q[r * c + j % c];
                q[r * c + rw + j] = q[r * c + rw - c + j % c];
            }
        }
    }
}

/// Mode Nearest's padding of a row of `C`-channel pixels: `r` copies of the first pixel before
/// the `rw` values (which start at r·C), `r` of the last after. `C` a constant, so the pixel
/// copies are plain moves.
fn pad_edges<T: Copy, const C: usize>(q: &mut [T], r: usize, rw: usize) {
    let first: [T; C] = q[r * C..(r + 1) * C].try_into().unwrap();
    let last: [T; C] = q[r * C + rw - C..r * C + rw].try_into().unwrap();
    for p in q[..r * C].chunks_exact_mut(C) {
        p.copy_from_slice(&first);
    }
    for p in q[r * C + rw..(2 * r) * C + rw].chunks_exact_mut(C) {
        p.copy_from_slice(&last);
    }
}

/// The gaussian_blur rows of [`gauss_rows_avx2`], once per instruction set (`$v`: VNNI or not,
/// `$run_q` the matching [`HPairs`] pass).
#[cfg(target_arch = "x86_64")]
macro_rules! gauss_rows {
    ($(#[$m:meta])* $name:ident, $feat:literal, $v:tt, $g:literal, $run_q:ident) => {
        $(#[$m])*
        #[target_feature(enable = $feat)]
        unsafe fn $name(x: &[u8], h: usize, w: usize, c: usize, k: &[f32], hp: &HPairs, out: &mut [u8]) {
            use std::arch::x86_64::*;
            let (rw, rs, r) = (w * c, block_stride(w * c), k.len() - 1);
            assert!(hp.rs == rs && hp.c == c && x.len() >= h * rw && out.len() >= h * rw);
            let kmax = k.iter().fold(0f32, |a, &b| a.max(b)) as f64;
            let sh = ((32767.0 / kmax).log2().floor() as i32).min(16);
            let mut kq: Vec<i32> = (0..2 * r + 2).map(|t| if t <= 2 * r { (k[t.abs_diff(r)] as f64 * 2f64.powi(sh)).round() as i32 } else { 0 }).collect();
            kq[r] += (1 << sh) - kq.iter().sum::<i32>();
            assert!(kq.iter().all(|&v| (0..=i16::MAX as i32).contains(&v)));
            // Folded taps: the centre weight in the low lane against (x[y], x[y+1]), then
            // (k[d+1], k[d]) against (x[y−d−1] + x[y+d+1], x[y−d] + x[y+d]) for d = 1, 3, 5, ….
            let kd = |d: usize| if d <= r { kq[r + d] } else { 0 };
            let jn = r.div_ceil(2);
            let centre = _mm256_set1_epi32(kd(0));
            let wj: Vec<__m256i> = (0..jn).map(|j| _mm256_set1_epi32((kd(2 * j + 1) << 16) | kd(2 * j + 2))).collect();
            let ts = hp.ts;
            let nudge = _mm256_set1_ps(1e-3);
            // Per strip of 32 values, pair rows p = −2jn ..= h − 1 + 2jn (row index p + 2jn, rows
            // clamped): `pr` with lanes (x[p], x[p+1]) as i16, swapped to (x[p+1], x[p]) where
            // the fold needs. Pixels stay unscaled, so mirrored sums fit i16; the sums are then
            // exactly 2^-7 times those of the pixels ·128, and the shift by sh − 7 gives the same
            // rounding.
            let np = h + 4 * jn;
            let row16 = |y: isize, e: usize| -> __m256i {
                let y = y.clamp(0, h as isize - 1) as usize;
                let src = &x[y * rw..(y + 1) * rw];
                // SAFETY: 16 bytes read from src when they exist, else from a zero-padded copy.
                let b = if e + 16 <= rw {
                    unsafe { _mm_loadu_si128(src.as_ptr().add(e) as *const __m128i) }
                } else {
                    let mut t = [0u8; 16];
                    if e < rw {
                        t[..rw - e].copy_from_slice(&src[e..]);
                    }
                    unsafe { _mm_loadu_si128(t.as_ptr() as *const __m128i) }
                };
                _mm256_cvtepu8_epi16(b)
            };
            let mut row = vec![0f32; rs];
            let half = _mm256_set1_epi32(1 << (sh - 8));
            let sc = _mm_cvtsi32_si128(sh - 7);
            scratch(&SCRATCH_I32, np * 32, |pr| {
                scratch(&SCRATCH_I16, h * ts, |qi| {
                // To 7 fractional bits, rounded (the input of HPairs), 16 values into row y of qi.
                let mut put = |y: usize, e: usize, a0: __m256i, a1: __m256i| {
                    let v0 = _mm256_sra_epi32(_mm256_add_epi32(a0, half), sc);
                    let v1 = _mm256_sra_epi32(_mm256_add_epi32(a1, half), sc);
                    let d = &mut qi[y * ts + r * c + e..][..16];
                    // SAFETY: 16 values of d.
                    unsafe { _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, _mm256_permute4x64_epi64(_mm256_packs_epi32(v0, v1), 0xD8)) };
                };
                assert!(pr.len() >= np * 32 && rs.is_multiple_of(32));
                let swap = _mm256_setr_epi8(2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13);
                // SAFETY (loads below): rows y − 2 − 2j + 2jn ≥ 0 and y + 3 + 2j + 2jn < np for
                // j < jn and output rows y, y + 2 < h, values e + 8 ≤ 32 of the strip.
                let ld = |b: &[i32], p: usize, e: usize| unsafe { _mm256_loadu_si256(b.as_ptr().add(p * 32 + e) as *const __m256i) };
                // Column strips of 32 values, all rows down: the strip's pair rows stay in L1.
                for e0 in (0..rs).step_by(32) {
                    let (mut ca, mut cb) = ([row16(-2 * jn as isize, e0), row16(-2 * jn as isize, e0 + 16)], [_mm256_setzero_si256(); 2]);
                    for pi in 0..np {
                        let p = pi as isize - 2 * jn as isize;
                        // The strided reads down the image miss L1; fetch a few rows ahead.
                        let pf = (p + 8).clamp(0, h as isize - 1) as usize * rw + e0.min(rw - 1);
                        _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().wrapping_add(pf) as *const i8);
                        for hf in 0..2 {
                            cb[hf] = row16(p + 1, e0 + 16 * hf);
                            let (l, u) = (_mm256_unpacklo_epi16(ca[hf], cb[hf]), _mm256_unpackhi_epi16(ca[hf], cb[hf]));
                            // SAFETY: values pi·32 + 16·hf + 16 ≤ np·32 of pr.
                            unsafe {
                                let o = pr.as_mut_ptr().add(pi * 32 + 16 * hf);
                                _mm256_storeu_si256(o as *mut __m256i, _mm256_permute2x128_si256(l, u, 0x20));
                                _mm256_storeu_si256(o.add(8) as *mut __m256i, _mm256_permute2x128_si256(l, u, 0x31));
                            }
                        }
                        ca = cb;
                    }
                    let pr = &*pr;
                    // Output rows y and y + 2 together: row y's pair (y − 2 − 2j) is row y + 2's
                    // pair j + 1 and row y + 2's (y + 3 + 2j) row y's j + 1, so each strip row is
                    // loaded once for both.
                    let o = 2 * jn;
                    let mut y = 0;
                    while y < h {
                        if y + 3 < h {
                            for y in [y, y + 1] {
                                for i0 in (0..4).step_by($g) {
                                    let e = |g: usize| 8 * (i0 + g);
                                    let mut pc: [__m256i; $g] = std::array::from_fn(|g| ld(pr, y + o, e(g)));
                                    let mut sn: [__m256i; $g] = std::array::from_fn(|g| swp!($v, ld(pr, y + 1 + o, e(g)), swap));
                                    let mut a: [__m256i; $g] = std::array::from_fn(|g| dp!($v, _mm256_setzero_si256(), pc[g], centre));
                                    let mut b: [__m256i; $g] = std::array::from_fn(|g| dp!($v, _mm256_setzero_si256(), ld(pr, y + 2 + o, e(g)), centre));
                                    for (j, w) in wj.iter().enumerate() {
                                        for g in 0..$g {
                                            let pa = ld(pr, y + o - 2 - 2 * j, e(g));
                                            let sb = swp!($v, ld(pr, y + o + 3 + 2 * j, e(g)), swap);
                                            a[g] = dp!($v, a[g], _mm256_add_epi16(pa, sn[g]), *w);
                                            b[g] = dp!($v, b[g], _mm256_add_epi16(pc[g], sb), *w);
                                            (pc[g], sn[g]) = (pa, sb);
                                        }
                                    }
                                    for g in (0..$g).step_by(2) {
                                        put(y, e0 + e(g), a[g], a[g + 1]);
                                        put(y + 2, e0 + e(g), b[g], b[g + 1]);
                                    }
                                }
                            }
                            y += 4;
                        } else {
                            for i in (0..4).step_by(2) {
                                let mut a = [0, 1].map(|g| dp!($v, _mm256_setzero_si256(), ld(pr, y + o, 8 * (i + g)), centre));
                                for (j, w) in wj.iter().enumerate() {
                                    for (g, a) in a.iter_mut().enumerate() {
                                        let s = _mm256_add_epi16(ld(pr, y + o - 2 - 2 * j, 8 * (i + g)), swp!($v, ld(pr, y + o + 1 + 2 * j, 8 * (i + g)), swap));
                                        *a = dp!($v, *a, s, *w);
                                    }
                                }
                                put(y, e0 + 8 * i, a[0], a[1]);
                            }
                            y += 1;
                        }
                    }
                }
                for y in 0..h {
                    let q = &mut qi[y * ts..(y + 1) * ts];
                    pad_row_edges(q, r, rw, c);
                    // SAFETY: AVX2 present (and VNNI, VL with VNNI); q holds ts values, row rs.
                    unsafe { hp.$run_q(q, &mut row) };
                    let o = &mut out[y * rw..(y + 1) * rw];
                    for e0 in (0..rw).step_by(32) {
                        // cast_nudged, 32 values at once (row holds rs ≥ e0 + 32 values). No clamp:
                        // nonnegative weights summing to 1 keep values within 0..=255 (+ nudge).
                        let f = |i: usize| unsafe { _mm256_cvttps_epi32(_mm256_add_ps(_mm256_loadu_ps(row.as_ptr().add(e0 + 8 * i)), nudge)) };
                        let p0 = _mm256_permute4x64_epi64(_mm256_packs_epi32(f(0), f(1)), 0xD8);
                        let p1 = _mm256_permute4x64_epi64(_mm256_packs_epi32(f(2), f(3)), 0xD8);
                        let b = _mm256_permute4x64_epi64(_mm256_packus_epi16(p0, p1), 0xD8);
                        if e0 + 32 <= rw {
                            // SAFETY: 32 bytes of o from e0.
                            unsafe { _mm256_storeu_si256(o.as_mut_ptr().add(e0) as *mut __m256i, b) };
                        } else {
                            let mut t = [0u8; 32];
                            // SAFETY: 32 bytes of t.
                            unsafe { _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, b) };
                            o[e0..].copy_from_slice(&t[..rw - e0]);
                        }
                    }
                }
                });
            });
        }
    };
}

#[cfg(target_arch = "x86_64")]
gauss_rows! {
    /// The AVX2 gaussian_blur of larger images. Vertical pass in exact integers: per strip of 32
    /// values, the image's rows as i16 pairs of consecutive rows (p, p+1) interleaved; mirrored
    /// taps folded (x[y−d] + x[y+d] fits i16), so one `pmaddwd` weighs four taps of eight
    /// outputs against i16 weights on the scale 2^-s (s ≤ 16, largest that fits; they sum to
    /// exactly 2^s, so flat regions stay exact), summed in i32 without rounding. Then, per row,
    /// the border pads (mode Nearest) and the 16-bit horizontal pass of [`HPairs`], and the cast.
    /// Against the f32 filter, values move by the weights' quantisation (≤ 2^-s-1 each) on top
    /// of [`HPairs`]' rounding.
    ///
    /// # Safety
    /// AVX2 and FMA present; `k` is the kernel's half (centre first) that `hp` was built from with
    /// rows of `block_stride(w·c)` values.
    gauss_rows_avx2, "avx2,fma", false, 2, run_q
}

#[cfg(target_arch = "x86_64")]
gauss_rows! {
    /// [`gauss_rows_avx2`] with `vpdpwssd` for each multiply-add and add: the same bytes, fewer
    /// instructions.
    ///
    /// # Safety
    /// As [`gauss_rows_avx2`], and AVX-512 VNNI and VL present.
    gauss_rows_vnni, "avx2,fma,avx512f,avx512vl,avx512vnni", true, 4, run_q_vnni
}

/// AVX-512 VNNI and VL present (for [`gauss_rows_vnni`]).
#[cfg(target_arch = "x86_64")]
fn vnni() -> bool {
    std::is_x86_feature_detected!("avx512vnni") && std::is_x86_feature_detected!("avx512vl") && std::is_x86_feature_detected!("avx512f")
}

/// `src` (HWC) padded by `ry` rows and `rx` columns under `mode`.
fn pad_image<T: Copy>(src: &[T], h: usize, w: usize, c: usize, ry: usize, rx: usize, mode: Mode) -> Vec<T> {
    let pw = w + 2 * rx;
    let mut out = Vec::with_capacity((h + 2 * ry) * pw * c);
    let side = |px: usize| boundary_index(px as isize - rx as isize, w, mode).expect("mode without zeros");
    let (left, right): (Vec<usize>, Vec<usize>) = ((0..rx).map(side).collect(), (rx + w..pw).map(side).collect());
    for py in 0..h + 2 * ry {
        let sy = boundary_index(py as isize - ry as isize, h, mode).expect("mode without zeros");
        let row = &src[sy * w * c..(sy + 1) * w * c];
        for &sx in &left {
            out.extend_from_slice(&row[sx * c..(sx + 1) * c]);
        }
        out.extend_from_slice(row);
        for &sx in &right {
            out.extend_from_slice(&row[sx * c..(sx + 1) * c]);
        }
    }
    out
}

/// Integer-weighted point sets of the defocus plan, in the coordinates of the padded image:
/// `(j, i0, i1)` is the column of points at column offset j, rows i0..i1, summed exactly from
/// column prefix sums (two loads); `(j, i)` a lone point, read from the image itself (one
/// load). All points of a group share the weight `w`; a group holds at most 257 points, so its
/// sum of uint8 values fits in u16.
struct Group {
    w: f32,
    runs: Vec<(usize, usize, usize)>,
    points: Vec<(usize, usize)>,
}

/// What the uint8 defocus of larger images needs for one (radius, alias σ): the image is padded
/// by `pad` = grid half-width + Gaussian radius on every side; `disk` sums the disk, `g` is the
/// half of the anti-alias Gaussian applied to it, `corr` the correction groups added after.
struct DefocusPlan {
    pad: usize,
    g: Vec<f32>,
    disk: Vec<Group>,
    corr: Vec<Group>,
    /// `corr` for the fused AVX2 rows ([`CorrPairs`]); None when a group is too large for i16.
    corr_pairs: Option<CorrPairs>,
    /// The reference kernel and its side, for the small images' exact path.
    k: Vec<f64>,
    n: usize,
}

/// Split points (i, j) sharing one weight into groups of column runs of ≤ 257 points.
fn runs_groups(w: f32, mut pts: Vec<(usize, usize)>, out: &mut Vec<Group>) {
    pts.sort_by_key(|&(i, j)| (j, i));
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for (i, j) in pts {
        match runs.last_mut() {
            Some(r) if r.0 == j && r.2 == i => r.2 += 1,
            _ => runs.push((j, i, i + 1)),
        }
    }
    let mut g = Group { w, runs: Vec::new(), points: Vec::new() };
    let mut count = 0;
    for (j, i0, i1) in runs {
        let mut i0 = i0;
        while i0 < i1 {
            // Split a run where the group is full.
            let take = (i1 - i0).min(257 - count);
            if take == 1 {
                g.points.push((j, i0));
            } else {
                g.runs.push((j, i0, i0 + take));
            }
            (i0, count) = (i0 + take, count + take);
            if count == 257 {
                out.push(std::mem::replace(&mut g, Group { w, runs: Vec::new(), points: Vec::new() }));
                count = 0;
            }
        }
    }
    if count > 0 {
        out.push(g);
    }
}

impl DefocusPlan {
    fn new(r: f64, a: f64) -> Self {
        let (k, n) = blur::disk_kernel(r, a);
        let half = n / 2;
        let runs = blur::disk_runs(r);
        let count: isize = runs.iter().map(|&(_, a)| 2 * a + 1).sum();
        let g64: Vec<f64> = blur::cv_gaussian_kernel(if r <= 8.0 { 3 } else { 5 }, a).iter().map(|&v| v as f64).collect();
        // The 5-tap Gaussian's outer taps (2.6e-4 at σ 0.5) fold into their neighbours: a 3-tap
        // pass costs 40% less, and E below absorbs the difference, a thin ring at the disk's
        // rim that the thinning drops (radius 10: worst case 0.80 levels in all, 0.81 before).
        let g64: Vec<f64> = if g64.len() == 5 && g64[0] < 1e-3 { vec![g64[0] + g64[1], g64[2], g64[3] + g64[4]] } else { g64 };
        let gr = g64.len() / 2;
        let (m, pad) = (n + 2 * gr, half + gr);
        // E = K − G ⊛ D on the m×m support. Beyond float32 noise it is non-zero only where the
        // reference blurs the disk against its own grid border (radius ≥ 8): a few dozen points
        // taking a handful of distinct values, so grouping equal weights turns E into a few
        // exact integer sums.
        let mut dd = vec![0f64; m * m];
        for &(dy, aa) in &runs {
            for dx in -aa..=aa {
                dd[((dy + pad as isize) as usize) * m + (dx + pad as isize) as usize] = 1.0 / count as f64;
            }
        }
        let mut e = vec![0f64; m * m];
        for yy in 0..m {
            for xx in 0..m {
                let mut s = 0.0;
                for (i, gi) in g64.iter().enumerate() {
                    for (j, gj) in g64.iter().enumerate() {
                        let (sy, sx) = (yy as isize + i as isize - gr as isize, xx as isize + j as isize - gr as isize);
                        if (0..m as isize).contains(&sy) && (0..m as isize).contains(&sx) {
                            s += gi * gj * dd[sy as usize * m + sx as usize];
                        }
                    }
                }
                let kk = if (gr..gr + n).contains(&yy) && (gr..gr + n).contains(&xx) { k[(yy - gr) * n + xx - gr] } else { 0.0 };
                e[yy * m + xx] = kk - s;
            }
        }
        let mut kept: Vec<(f64, usize, usize)> = Vec::new();
        let mut dropped = 0.0;
        for (idx, &v) in e.iter().enumerate() {
            if v.abs() > 1e-6 {
                kept.push((v, idx / m, idx % m));
            } else {
                dropped += v;
            }
        }
        kept.sort_by(|p, q| p.0.total_cmp(&q.0));
        let mut classes: Vec<(f64, Vec<(usize, usize)>)> = Vec::new();
        let mut lo = 0;
        while lo < kept.len() {
            // Weights within 1e-3 of the class's first share one (their mean; each point's
            // weight moves by at most ~3e-7, i.e. ≤ 1e-4 on the 0..255 scale).
            let hi = lo + kept[lo..].iter().take_while(|t| (t.0 - kept[lo].0).abs() <= 1e-3 * kept[lo].0.abs()).count();
            let mean = kept[lo..hi].iter().map(|t| t.0).sum::<f64>() / (hi - lo) as f64;
            dropped += kept[lo..hi].iter().map(|t| t.0 - mean).sum::<f64>();
            classes.push((mean, kept[lo..hi].iter().map(|t| (t.1, t.2)).collect()));
            lo = hi;
        }
        // Each correction load costs about as much as a disk load, so E is approximated within
        // a worst-case budget on the 0..255 scale (Σ|weight moved| · 255 ≤ 0.75, so the uint8
        // result stays within the cast's ±1 of the float path): the classes of least mass are
        // dropped (radius 10: the four pole points and near-cancelling rim sets),
        // then weight-adjacent classes merged (radius 10: the rim sets of 3.0e-4 and 3.4e-4,
        // whose points extend each other's column runs, 4 loads). With the points under 1e-6
        // and the folded Gaussian taps the worst case is 0.80 levels at radius 10 (a test).
        let mut spent = 0.0;
        let mass = |c: &(f64, Vec<(usize, usize)>)| c.0 * c.1.len() as f64;
        classes.sort_by(|p, q| mass(p).abs().total_cmp(&mass(q).abs()));
        while let Some(c) = classes.first() {
            if spent + mass(c).abs() * 255.0 > 0.45 {
                break;
            }
            (spent, dropped) = (spent + mass(c).abs() * 255.0, dropped + mass(c));
            classes.remove(0);
        }
        classes.sort_by(|p, q| p.0.total_cmp(&q.0));
        loop {
            let best = (1..classes.len())
                .map(|i| {
                    let (p, q) = (&classes[i - 1], &classes[i]);
                    let m = (mass(p) + mass(q)) / (p.1.len() + q.1.len()) as f64;
                    (255.0 * ((mass(p) - m * p.1.len() as f64).abs() + (mass(q) - m * q.1.len() as f64).abs()), i, m)
                })
                .min_by(|p, q| p.0.total_cmp(&q.0));
            match best {
                Some((cost, i, m)) if spent + cost <= 0.75 => {
                    let q = classes.remove(i);
                    classes[i - 1].0 = m;
                    classes[i - 1].1.extend(q.1);
                    spent += cost;
                }
                _ => break,
            }
        }
        let mut corr = Vec::new();
        for (w, pts) in classes {
            runs_groups(w as f32, pts, &mut corr);
        }
        // What E leaves out (float32 noise, dropped classes) spreads over the disk, where it
        // keeps every weight sum at a cost of one f32 rounding.
        let mut disk = Vec::new();
        let pts = runs.iter().flat_map(|&(dy, aa)| (-aa..=aa).map(move |dx| ((pad as isize + dy) as usize, (pad as isize + dx) as usize)));
        runs_groups(((1.0 + dropped) / count as f64) as f32, pts.collect(), &mut disk);
        let corr_pairs = CorrPairs::new(&corr);
        DefocusPlan { pad, g: g64[gr..].iter().map(|&v| v as f32).collect(), disk, corr, corr_pairs, k, n }
    }
}

/// `out[x] (+)= Σ_groups w · (Σ_runs (cp[y+i1][x+j] − cp[y+i0][x+j]) + Σ_points xb[y+i][x+j])`
/// over one output row padded to whole blocks (`out.len()` a multiple of [`BLK`]), xb being the
/// padded image and cp its column prefix sums (both of row stride `cs`, pixel stride `c`):
/// exact u16 sums per group, each block's sum kept in registers over all runs of its group.
#[allow(clippy::too_many_arguments)]
fn add_groups(xb: &[u16], cp: &[u16], cs: usize, c: usize, y: usize, groups: &[Group], out: &mut [f32], overwrite: bool) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { add_groups_avx2(xb, cp, cs, c, y, groups, out, overwrite) };
    }
    add_groups_impl(xb, cp, cs, c, y, groups, out, overwrite)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn add_groups_avx2(xb: &[u16], cp: &[u16], cs: usize, c: usize, y: usize, groups: &[Group], out: &mut [f32], overwrite: bool) {
    add_groups_impl(xb, cp, cs, c, y, groups, out, overwrite)
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_groups_impl(xb: &[u16], cp: &[u16], cs: usize, c: usize, y: usize, groups: &[Group], out: &mut [f32], overwrite: bool) {
    // 128 u16 lanes (eight AVX vectors) per block, a last block of 64 when the row needs it.
    let wide = out.len() / 128 * 128;
    for x0 in (0..wide).step_by(128) {
        add_groups_block::<128>(xb, cp, cs, c, y, groups, x0, (&mut out[x0..x0 + 128]).try_into().unwrap(), overwrite);
    }
    for x0 in (wide..out.len()).step_by(BLK) {
        add_groups_block::<BLK>(xb, cp, cs, c, y, groups, x0, (&mut out[x0..x0 + BLK]).try_into().unwrap(), overwrite);
    }
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn add_groups_block<const N: usize>(xb: &[u16], cp: &[u16], cs: usize, c: usize, y: usize, groups: &[Group], x0: usize, o: &mut [f32; N], overwrite: bool) {
    for (gi, g) in groups.iter().enumerate() {
        let mut acc = [0u16; N];
        for &(j, i0, i1) in &g.runs {
            let hi: &[u16; N] = cp[(y + i1) * cs + j * c + x0..][..N].try_into().unwrap();
            let lo: &[u16; N] = cp[(y + i0) * cs + j * c + x0..][..N].try_into().unwrap();
            for i in 0..N {
                acc[i] = acc[i].wrapping_add(hi[i].wrapping_sub(lo[i]));
            }
        }
        for &(j, i) in &g.points {
            let v: &[u16; N] = xb[(y + i) * cs + j * c + x0..][..N].try_into().unwrap();
            for i in 0..N {
                acc[i] = acc[i].wrapping_add(v[i]);
            }
        }
        if overwrite && gi == 0 {
            for i in 0..N {
                o[i] = g.w * acc[i] as f32;
            }
        } else {
            for i in 0..N {
                o[i] += g.w * acc[i] as f32;
            }
        }
    }
}

/// Small images: the float path's direct correlation with the OpenCV kernel, same order in f64
/// (same bytes). Larger ones: K = G ⊛ D + E with D the uniform disk, G the anti-alias Gaussian
/// and E what the reference adds by blurring the disk inside its own grid (approximated within
/// a stated worst-case bound, see [`DefocusPlan::new`]). The disk and E are
/// sums of uint8 values over integer point sets (column runs of exact u16 prefix sums, 16 lanes),
/// G a separable f32 filter between them. With AVX2 all three run fused, one output row at a
/// time ([`defocus_rows_avx2`]); otherwise pass by pass ([`defocus_rows`]).
pub(crate) fn defocus_blur_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet) -> Vec<u8> {
    let (r, a) = blur::defocus_params(severity, p);
    // The plan depends on (r, a) only: built once per thread.
    type Cached = ((u64, u64), std::rc::Rc<DefocusPlan>);
    thread_local! {
        static PLANS: std::cell::RefCell<Vec<Cached>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let key = (r.to_bits(), a.to_bits());
    let plan = PLANS.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((_, v)) = c.iter().find(|(k, _)| *k == key) {
            return v.clone();
        }
        let v = std::rc::Rc::new(DefocusPlan::new(r, a));
        c.push((key, v.clone()));
        v
    });
    if h * w <= EXACT_MAX_PIXELS {
        let (k, n) = (&plan.k, plan.n);
        let half = n / 2;
        // ndimage::correlate2d's taps: row-major, zeros skipped. The small radii keep the
        // non-zero taps within q of the centre, so the image is padded by q, not half.
        let nz: Vec<usize> = (0..n * n).filter(|&i| k[i] != 0.0).collect();
        let q = nz.iter().map(|&i| (i / n).abs_diff(half).max((i % n).abs_diff(half))).max().unwrap_or(0);
        let ps = (w + 2 * q) * c;
        let pad = pad_f64(x, h, w, c, q, q, Mode::Mirror);
        let taps: Vec<(usize, f64)> = nz.iter().map(|&i| ((i / n + q - half) * ps + (i % n + q - half) * c, k[i])).collect();
        let mut out = vec![0u8; h * w * c];
        taps_f64(&pad, ps, h, w * c, &taps, |y, e0, b| {
            for (o, &v) in out[y * w * c + e0..(y + 1) * w * c].iter_mut().zip(b) {
                *o = crate::cast_u8(v.clamp(0.0, 1.0) * 255.0);
            }
        });
        return out;
    }
    let (pad, rw) = (plan.pad, w * c);
    // The padded image xb and its column prefix sums cp[i] = Σ_{i' < i} xb[i'] (wrapping u16:
    // every run sums at most 257 values, so differences are exact). Rows have room for whole
    // blocks past the last pixel, which add_groups reads (stale values there only reach output
    // lanes past w·c).
    let rs = block_stride(rw);
    // Rows of whole cache lines (32 values) from a line boundary: the preparation pass's
    // row-wise loads and stores are aligned.
    let (ph, cs) = (h + 2 * pad, (rs + 2 * pad * c).next_multiple_of(32));
    let mut out = vec![0u8; h * rw];
    // One spare vector past the last row: the fused AVX2 rows' prefix pass writes whole vectors.
    scratch(&SCRATCH_U16_B, (ph + 1) * cs + 16 + 32, |xb| {
        scratch(&SCRATCH_U16, (ph + 1) * cs + 16 + 32, |cp| {
            let (xb, cp) = (align64(xb), align64(cp));
            #[cfg(target_arch = "x86_64")]
            if avx2_fma() {
                if let Some(cq) = &plan.corr_pairs {
                    let avx512 = std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw");
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above), and AVX-512
                    // F/BW when `avx512`.
                    unsafe {
                        match plan.g.len() {
                            2 => defocus_rows_avx2::<2>(x, xb, cp, cs, h, w, c, &plan, cq, avx512, &mut out),
                            _ => defocus_rows_avx2::<3>(x, xb, cp, cs, h, w, c, &plan, cq, avx512, &mut out),
                        }
                    };
                    return;
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { pad_prefix_avx2(x, h, w, c, pad, cs, xb, cp) };
            } else {
                pad_prefix(x, h, w, c, pad, cs, xb, cp);
            }
            #[cfg(not(target_arch = "x86_64"))]
            pad_prefix(x, h, w, c, pad, cs, xb, cp);
            defocus_rows(xb, cp, cs, h, w, c, &plan, &mut out);
        });
    });
    out
}

/// `v` from its first value on a 64-byte boundary (at most 31 values dropped).
fn align64(v: &mut [u16]) -> &mut [u16] {
    let skip = v.as_ptr().align_offset(64).min(v.len());
    &mut v[skip..]
}

/// The portable rows of the larger images' defocus: the disk sums of all rows into an f32
/// image (mirror-padded by the Gaussian's reach), the separable Gaussian, then the correction
/// groups and the cast per output row.
#[allow(clippy::too_many_arguments)]
fn defocus_rows(xb: &[u16], cp: &[u16], cs: usize, h: usize, w: usize, c: usize, plan: &DefocusPlan, out: &mut [u8]) {
    let (rw, rs, gr) = (w * c, block_stride(w * c), plan.g.len() - 1);
    scratch(&SCRATCH_F32_B, (h + 2 * gr) * rs, |d| {
        for y in 0..h {
            add_groups(xb, cp, cs, c, y, &plan.disk, &mut d[(y + gr) * rs..][..rs], true);
        }
        for j in 0..gr {
            for (py, sy) in [(j, boundary_index(j as isize - gr as isize, h, Mode::Mirror)), (h + gr + j, boundary_index((h + j) as isize, h, Mode::Mirror))] {
                let sy = sy.expect("mirror") + gr;
                d.copy_within(sy * rs..(sy + 1) * rs, py * rs);
            }
        }
        let mut row = vec![0f32; rs];
        sym_sep_f32(d, h, w, c, &plan.g, &plan.g, Mode::Mirror, |y, v| {
            row[..rw].copy_from_slice(v);
            add_groups(xb, cp, cs, c, y, &plan.corr, &mut row, false);
            for (o, &v) in out[y * rw..(y + 1) * rw].iter_mut().zip(&row) {
                *o = cast_nudged(v);
            }
        });
    });
}

/// The correction groups' weights for `pmaddwd`: each group's u16 sum (≤ 128 points, so a
/// non-negative i16) is paired with the next group's, and each pair of weights is quantised to
/// i16 on a common scale 2^-s chosen so the largest weight fills 15 bits (relative error
/// ≤ 2^-15 on the largest, absolute ≤ 2^-s-1 on every weight: ~1e-8, under 1e-4 on the 0..255
/// scale over all points). One multiply-add then weighs two groups, where converting each group
/// to f32 takes seven instructions; an odd last group (radius 10: the only one) is converted.
struct CorrPairs {
    /// `(k[2m], k[2m+1])` as the low and high i16 halves of one i32.
    kp: Vec<i32>,
    scale: f32,
}

impl CorrPairs {
    fn new(corr: &[Group]) -> Option<Self> {
        if corr.iter().any(|g| g.runs.iter().map(|r| r.2 - r.1).sum::<usize>() + g.points.len() > 128) {
            return None;
        }
        let m = corr.iter().map(|g| (g.w as f64).abs()).fold(0.0, f64::max);
        if m == 0.0 {
            return Some(CorrPairs { kp: Vec::new(), scale: 0.0 });
        }
        let s = (32767.0 / m).log2().floor() as i32;
        let q = |w: f32| (w as f64 * 2f64.powi(s)).round() as i32;
        let kp = corr.chunks_exact(2).map(|p| (q(p[1].w) << 16) | (q(p[0].w) & 0xffff)).collect();
        Some(CorrPairs { kp, scale: 2f64.powi(-s) as f32 })
    }
}

/// A group's point set as offsets from the output value's top-left padded position.
struct GroupOffsets {
    w: f32,
    /// (prefix-sum row below the run, row at its top) offsets into cp.
    runs: Vec<(usize, usize)>,
    points: Vec<usize>,
    /// Starts of row runs of `l` points, offsets into the row box sums ([`box_len`]).
    boxes: Vec<usize>,
    /// Runs of 4 adjacent columns, offsets into their prefix sums ([`disk_offsets`]).
    wide: Vec<(usize, usize)>,
}

/// Row runs of lone points: (row i, first column j, length), longest first.
fn row_runs(g: &Group) -> Vec<(usize, usize, usize)> {
    let mut pts: Vec<(usize, usize)> = g.points.iter().map(|&(j, i)| (i, j)).collect();
    pts.sort();
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (i, j) in pts {
        match out.last_mut() {
            Some(r) if r.0 == i && r.1 + r.2 == j => r.2 += 1,
            _ => out.push((i, j, 1)),
        }
    }
    out
}

/// The length l of the longest row run of lone points in `groups` when it is worth a pass of
/// row box sums (l ≥ 4: each run then costs one load instead of l), else 0. Radius 10: the
/// rim rows of the correction just beyond the disk's top and bottom, 2 × 9 points.
fn box_len(groups: &[Group]) -> usize {
    let l = groups.iter().flat_map(row_runs).map(|r| r.2).max().unwrap_or(0);
    if l >= 4 { l } else { 0 }
}

fn group_offsets(groups: &[Group], cs: usize, c: usize, l: usize) -> Vec<GroupOffsets> {
    groups
        .iter()
        .map(|g| {
            let (mut points, mut boxes) = (Vec::new(), Vec::new());
            for (i, j, n) in row_runs(g) {
                let k = n.checked_div(l).unwrap_or(0);
                boxes.extend((0..k).map(|b| i * cs + (j + b * l) * c));
                points.extend((j + k * l..j + n).map(|jj| i * cs + jj * c));
            }
            GroupOffsets { w: g.w, runs: g.runs.iter().map(|&(j, i0, i1)| (i1 * cs + j * c, i0 * cs + j * c)).collect(), points, boxes, wide: Vec::new() }
        })
        .collect()
}

/// The disk's groups for the fused AVX2 rows: columns of the disk share their run with their
/// neighbours (radius 10: |dx| = 1..4), so runs of 4 adjacent equal columns are read from the
/// column prefix sums of 4-wide row boxes (`cw`), one pair of loads each: 28 loads instead of
/// 42 at radius 10 (none at radius ≤ 8, where the pass over cw would not pay). Packed again
/// into groups of ≤ 257 points (exact u16 sums).
fn disk_offsets(disk: &[Group], cs: usize, c: usize) -> Vec<GroupOffsets> {
    let w = disk[0].w;
    assert!(disk.iter().all(|g| g.w == w));
    let mut cols: std::collections::BTreeMap<usize, (usize, usize)> = std::collections::BTreeMap::new();
    for (j, i0, i1) in disk.iter().flat_map(|g| g.runs.iter().copied().chain(g.points.iter().map(|&(j, i)| (j, i, i + 1)))) {
        let e = cols.entry(j).or_insert((i0, i1));
        *e = (e.0.min(i0), e.1.max(i1));
    }
    let total: usize = disk.iter().map(|g| g.runs.iter().map(|r| r.2 - r.1).sum::<usize>() + g.points.len()).sum();
    assert!(cols.values().map(|r| r.1 - r.0).sum::<usize>() == total, "disk columns must be contiguous runs");
    let cols: Vec<(usize, (usize, usize))> = cols.into_iter().collect();
    let mut pieces = Vec::new();
    let mut k = 0;
    while k < cols.len() {
        let n = (0..cols.len() - k).take_while(|&d| cols[k + d] == (cols[k].0 + d, cols[k].1)).count();
        let mut j = 0;
        while j < n {
            let width = if n - j >= 4 { 4 } else { 1 };
            pieces.push((cols[k + j].0, width, cols[k].1));
            j += width;
        }
        k += n;
    }
    let empty = || GroupOffsets { w, runs: Vec::new(), points: Vec::new(), boxes: Vec::new(), wide: Vec::new() };
    let (mut out, mut g, mut count) = (Vec::new(), empty(), 0);
    for (j, width, (i0, i1)) in pieces {
        let n = width * (i1 - i0);
        if count + n > 257 {
            out.push(std::mem::replace(&mut g, empty()));
            count = 0;
        }
        count += n;
        match (width, i1 - i0) {
            (1, 1) => g.points.push(i0 * cs + j * c),
            (1, _) => g.runs.push((i1 * cs + j * c, i0 * cs + j * c)),
            _ => g.wide.push((i1 * cs + j * c, i0 * cs + j * c)),
        }
    }
    out.push(g);
    out
}

/// Adds a defocus group's column runs, 4-wide runs and single points onto `acc` (one register
/// per 16 or 32 values): one body for the AVX2 and AVX-512 disk loops, which differ only in
/// register width.
#[cfg(target_arch = "x86_64")]
macro_rules! disk_group_sums {
    ($acc:ident, $g:expr, $xb:expr, $cp:expr, $cw:expr, $ld:ident, $add:ident, $sub:ident) => {
        // Two loops, not a chained iterator: this is the innermost loop of the defocus.
        for (runs, base) in [(&$g.runs, $cp), (&$g.wide, $cw)] {
            for &(hi, lo) in runs.iter() {
                let (ph, pl) = (base.add(hi), base.add(lo));
                for (i, a) in $acc.iter_mut().enumerate() {
                    *a = $add(*a, $sub($ld(ph, i), $ld(pl, i)));
                }
            }
        }
        for &o in &$g.points {
            let p = $xb.add(o);
            for (i, a) in $acc.iter_mut().enumerate() {
                *a = $add(*a, $ld(p, i));
            }
        }
    };
}

/// Exact u16 sums of one group for 16·N consecutive values (N vectors, so the loop over the
/// group's offsets is paid once per N): `xb`, `cp`, the row box sums `hb` and the wide column
/// prefix sums `cw` point at the first value's top-left padded position.
///
/// # Safety
/// AVX2 present; every offset of `g` plus 16·N values readable from both pointers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn group_sums<const N: usize>(xb: *const u16, cp: *const u16, hb: *const u16, cw: *const u16, g: &GroupOffsets) -> [std::arch::x86_64::__m256i; N] {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the reads.
    unsafe {
        let ld = |p: *const u16, i: usize| _mm256_loadu_si256(p.add(16 * i) as *const __m256i);
        let mut acc = [_mm256_setzero_si256(); N];
        disk_group_sums!(acc, g, xb, cp, cw, ld, _mm256_add_epi16, _mm256_sub_epi16);
        for &o in &g.boxes {
            let p = hb.add(o);
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_add_epi16(*a, ld(p, i));
            }
        }
        acc
    }
}

/// The AVX2 defocus of larger images, one output row at a time so that every intermediate
/// stays in L1: disk rows (exact u16 group sums → f32) into a ring of 2·gr+1 rows, the
/// vertical Gaussian of the ring into one mirror-padded row, then per 16 values the horizontal
/// Gaussian, the correction ([`CorrPairs`]) and the cast to u8, in registers. With `avx512`
/// the disk rows take [`disk_row_avx512`] (the same bytes in half the instructions).
///
/// # Safety
/// AVX2 and FMA present; AVX-512 F and BW too when `avx512`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn defocus_rows_avx2<const G: usize>(x: &[u8], xb: &mut [u16], cp: &mut [u16], cs: usize, h: usize, w: usize, c: usize, plan: &DefocusPlan, cq: &CorrPairs, avx512: bool, out: &mut [u8]) {
    use std::arch::x86_64::*;
    let (rw, rs, pad) = (w * c, block_stride(w * c), plan.pad);
    let gr = G - 1;
    let nr = 2 * gr + 1;
    assert!(plan.g.len() == G && G <= 3);
    let reach = |gs: &[Group]| gs.iter().flat_map(|g| g.runs.iter().map(|r| (r.0, r.2)).chain(g.points.iter().map(|p| (p.0, p.1 + 1)))).fold((0, 0), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    let ((jd, id), (jc, ic)) = (reach(&plan.disk), reach(&plan.corr));
    // Every read below: rows ≤ h − 1 + 2·pad + 1 of cp, columns ≤ 2·pad·c + rs of a row.
    assert!(jd.max(jc) <= 2 * pad && id.max(ic) <= 2 * pad + 1 && cs >= rs + 2 * pad * c);
    assert!(cp.len() >= (h + 2 * pad + 1) * cs + 16 && xb.len() >= (h + 2 * pad + 1) * cs + 16 && out.len() >= h * rw && rs % 16 == 0);
    let l = box_len(&plan.corr);
    let (disk, corr) = (disk_offsets(&plan.disk, cs, c), group_offsets(&plan.corr, cs, c, l));
    assert!(disk.iter().all(|g| g.boxes.is_empty()));
    // Every box starts at a column ≤ 2·pad + 1 − l, so its reads stay below cs − (l − 1)·c, the
    // values [`pad_boxes_avx2`] computes; a 4-wide run starts at a column ≤ 2·pad − 3.
    assert!(l == 0 || (l * 255 < 65536 && corr.iter().all(|g| g.boxes.iter().all(|&o| o / cs <= 2 * pad && o % cs + (l - 1) * c <= 2 * pad * c))));
    thread_local! {
        static CW: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
        static HB: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (mut cwv, mut hbv) = (CW.with(|v| std::mem::take(&mut *v.borrow_mut())), HB.with(|v| std::mem::take(&mut *v.borrow_mut())));
    let wide = disk.iter().any(|g| !g.wide.is_empty());
    let n = (h + 2 * pad + 1) * cs + 16;
    cwv.resize(if wide { n + 32 } else { 0 }, 0);
    hbv.resize(if l > 0 { n + 32 } else { 0 }, 0);
    let (cwa, hba) = (align64(&mut cwv), align64(&mut hbv));
    // SAFETY: AVX2 present (this function's features); every buffer holds n values.
    unsafe { pad_boxes_avx2(x, h, w, c, pad, cs, l, xb, cp, wide.then_some(&mut cwa[..]), hba) };
    let (cwp, hbp, xb, cp) = (cwa.as_ptr(), hba.as_ptr(), &*xb, &*cp);

    let vs = rs + 2 * gr * c;
    // The ring from a 64-byte boundary (its rows too: rs is a multiple of 64), and for the
    // AVX-512 rows a vertical row whose values start on one, with a vector of room either side.
    let mut ring_buf = vec![0f32; nr * rs + 16];
    let ro = ring_buf.as_ptr().align_offset(64).min(16);
    let ring = &mut ring_buf[ro..ro + nr * rs];
    let mut vrow = vec![0f32; vs];
    let mut v512 = vec![0f32; rs + 48];
    let vo = 16 + v512[16..].as_ptr().align_offset(64).min(16);
    let row512 = avx512 && std::is_x86_feature_detected!("avx512vl") && (c == 1 || c == 3) && cq.kp.is_empty();
    let side: Vec<(usize, usize)> = (0..gr).map(|j| (boundary_index(j as isize - gr as isize, w, Mode::Mirror).expect("mirror"), boundary_index((w + j) as isize, w, Mode::Mirror).expect("mirror"))).collect();
    let (xp, cpp) = (xb.as_ptr(), cp.as_ptr());
    // SAFETY (all blocks below): pointer reads stay within the bounds asserted above; ring rows
    // hold rs values, vrow vs = rs + 2·gr·c, and blocks start below rs (a multiple of 16).
    unsafe {
        let disk_row = |py: usize, ring: &mut [f32]| {
            let sy = boundary_index(py as isize - gr as isize, h, Mode::Mirror).expect("mirror");
            let dst = ring[(py % nr) * rs..][..rs].as_mut_ptr();
            if avx512 {
                disk_row_avx512(xp.add(sy * cs), cpp.add(sy * cs), cwp.add(sy * cs), rs, &disk, dst);
                return;
            }
            for x0 in (0..rs).step_by(64) {
                let mut f = [_mm256_setzero_ps(); 8];
                for gp in &disk {
                    let a = group_sums::<4>(xp.add(sy * cs + x0), cpp.add(sy * cs + x0), hbp, cwp.add(sy * cs + x0), gp);
                    let k = _mm256_set1_ps(gp.w);
                    for (i, a) in a.iter().enumerate() {
                        f[2 * i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(*a))), k, f[2 * i]);
                        f[2 * i + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(*a, 1))), k, f[2 * i + 1]);
                    }
                }
                for (i, f) in f.iter().enumerate() {
                    _mm256_storeu_ps(dst.add(x0 + 8 * i), *f);
                }
            }
        };
        for py in 0..2 * gr {
            disk_row(py, ring);
        }
        let (nudge, scale, order) = (_mm256_set1_ps(1e-3), _mm256_set1_ps(cq.scale), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        let gv: [__m256; G] = std::array::from_fn(|d| _mm256_set1_ps(plan.g[d]));
        let kp: Vec<__m256i> = cq.kp.iter().map(|&k| _mm256_set1_epi32(k)).collect();
        let mut rows = [ring.as_ptr(); 5];
        for y in 0..h {
            disk_row(y + 2 * gr, ring);
            for (d, r) in rows.iter_mut().enumerate().take(nr) {
                *r = ring.as_ptr().add(((y + d) % nr) * rs);
            }
            if row512 {
                let v = v512.as_mut_ptr().add(vo);
                let (bx, bc, bh) = (xp.add(y * cs), cpp.add(y * cs), hbp.add(y * cs));
                let o = &mut out[y * rw..(y + 1) * rw];
                match c {
                    1 => defocus_row_avx512::<G, 1>(&rows, v, rs, w, &side, &plan.g, bx, bc, bh, cwp, &corr, o),
                    _ => defocus_row_avx512::<G, 3>(&rows, v, rs, w, &side, &plan.g, bx, bc, bh, cwp, &corr, o),
                }
                continue;
            }
            let v = vrow.as_mut_ptr().add(gr * c);
            for e in (0..rs).step_by(8) {
                let mut a = _mm256_mul_ps(gv[0], _mm256_loadu_ps(rows[gr].add(e)));
                for (d, k) in gv.iter().enumerate().skip(1) {
                    a = _mm256_fmadd_ps(*k, _mm256_add_ps(_mm256_loadu_ps(rows[gr - d].add(e)), _mm256_loadu_ps(rows[gr + d].add(e))), a);
                }
                _mm256_storeu_ps(v.add(e), a);
            }
            for (j, &(l, r)) in side.iter().enumerate() {
                for ch in 0..c {
                    vrow[j * c + ch] = vrow[(gr + l) * c + ch];
                    vrow[(gr + w + j) * c + ch] = vrow[(gr + r) * c + ch];
                }
            }
            let v = vrow.as_ptr().add(gr * c);
            for e0 in (0..rw).step_by(32) {
                let hz = |e: usize| {
                    let mut a = _mm256_mul_ps(gv[0], _mm256_loadu_ps(v.add(e)));
                    for (d, k) in gv.iter().enumerate().skip(1) {
                        a = _mm256_fmadd_ps(*k, _mm256_add_ps(_mm256_loadu_ps(v.add(e - d * c)), _mm256_loadu_ps(v.add(e + d * c))), a);
                    }
                    a
                };
                let mut hv = [hz(e0), hz(e0 + 8), hz(e0 + 16), hz(e0 + 24)];
                if !corr.is_empty() {
                    let (bx, bc, bh) = (xp.add(y * cs + e0), cpp.add(y * cs + e0), hbp.add(y * cs + e0));
                    if !kp.is_empty() {
                        let mut acc = [_mm256_setzero_si256(); 4];
                        for (m, &k) in kp.iter().enumerate() {
                            let (a, b) = (group_sums::<2>(bx, bc, bh, cwp, &corr[2 * m]), group_sums::<2>(bx, bc, bh, cwp, &corr[2 * m + 1]));
                            for i in 0..2 {
                                acc[2 * i] = _mm256_add_epi32(acc[2 * i], _mm256_madd_epi16(_mm256_unpacklo_epi16(a[i], b[i]), k));
                                acc[2 * i + 1] = _mm256_add_epi32(acc[2 * i + 1], _mm256_madd_epi16(_mm256_unpackhi_epi16(a[i], b[i]), k));
                            }
                        }
                        for i in 0..2 {
                            hv[2 * i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_permute2x128_si256(acc[2 * i], acc[2 * i + 1], 0x20)), scale, hv[2 * i]);
                            hv[2 * i + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_permute2x128_si256(acc[2 * i], acc[2 * i + 1], 0x31)), scale, hv[2 * i + 1]);
                        }
                    }
                    if corr.len() % 2 == 1 {
                        let gp = &corr[corr.len() - 1];
                        let (a, k) = (group_sums::<2>(bx, bc, bh, cwp, gp), _mm256_set1_ps(gp.w));
                        for (i, a) in a.iter().enumerate() {
                            hv[2 * i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(*a))), k, hv[2 * i]);
                            hv[2 * i + 1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(*a, 1))), k, hv[2 * i + 1]);
                        }
                    }
                }
                // cast_nudged, 32 values at once: truncation, then the saturating packs clamp
                // to 0..=255 (negative values and NaN give 0, as the clamp before the cast).
                let q = |x: __m256| _mm256_cvttps_epi32(_mm256_add_ps(x, nudge));
                let p = _mm256_packus_epi16(_mm256_packs_epi32(q(hv[0]), q(hv[1])), _mm256_packs_epi32(q(hv[2]), q(hv[3])));
                let b = _mm256_permutevar8x32_epi32(p, order);
                let o = &mut out[y * rw + e0..(y + 1) * rw];
                if o.len() >= 32 {
                    _mm256_storeu_si256(o.as_mut_ptr() as *mut __m256i, b);
                } else {
                    let mut t = [0u8; 32];
                    _mm256_storeu_si256(t.as_mut_ptr() as *mut __m256i, b);
                    let n = o.len();
                    o.copy_from_slice(&t[..n]);
                }
            }
        }
    }
    HB.with(|v| *v.borrow_mut() = hbv);
    CW.with(|v| *v.borrow_mut() = cwv);
}

/// `a` and `b` concatenated (b low) shifted right by `s` lanes: the 16 f32 values from lane s of
/// b. `s` is a constant wherever this is inlined, so the match folds to one `valignd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn align_ps(a: std::arch::x86_64::__m512, b: std::arch::x86_64::__m512, s: usize) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let (a, b) = (_mm512_castps_si512(a), _mm512_castps_si512(b));
    macro_rules! arms {
        ($($k:literal)*) => {
            match s {
                $($k => _mm512_alignr_epi32::<$k>(a, b),)*
                _ => unreachable!("shift {s}"),
            }
        };
    }
    _mm512_castsi512_ps(arms!(1 2 3 4 5 6 7 8 9 10 11 12 13 14 15))
}

/// Exact u16 sums of one correction group for 32·N consecutive values, as [`group_sums`].
///
/// # Safety
/// AVX-512 F/BW present; every offset of `g` plus 32·N values readable from the pointers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn group_sums_avx512<const N: usize>(xb: *const u16, cp: *const u16, hb: *const u16, cw: *const u16, g: &GroupOffsets) -> [std::arch::x86_64::__m512i; N] {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the reads.
    unsafe {
        let ld = |p: *const u16, i: usize| _mm512_loadu_si512(p.add(32 * i) as *const __m512i);
        let mut acc = [_mm512_setzero_si512(); N];
        disk_group_sums!(acc, g, xb, cp, cw, ld, _mm512_add_epi16, _mm512_sub_epi16);
        for &o in &g.boxes {
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm512_add_epi16(*a, ld(hb.add(o), i));
            }
        }
        acc
    }
}

/// One output row of [`defocus_rows_avx2`] (vertical Gaussian of the ring rows, horizontal
/// Gaussian, odd correction group, cast) with 16 f32 lanes: the AVX2 row's operations lane by
/// lane (same bytes), in half the instructions; the horizontal taps are shifted in registers
/// instead of read unaligned, and the vertical row stays in registers but for its last blocks.
/// For plans without correction pairs (radius 10 has one group, radius ≤ 6 none).
///
/// # Safety
/// AVX-512 F/BW/VL present; `rows` the 2·G − 1 ring rows of rs values (rs a multiple of 64); `v`
/// (64-byte aligned for speed) with 16 values of room before it and rs + 16 after; `out` the
/// output row of w·C values; `bx`, `bc`, `bh` the output row's top-left padded position with
/// every correction read of [`defocus_rows_avx2`] readable for 64 values from each multiple of
/// 64 below w·C.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn defocus_row_avx512<const G: usize, const C: usize>(rows: &[*const f32; 5], v: *mut f32, rs: usize, w: usize, side: &[(usize, usize)], g: &[f32], bx: *const u16, bc: *const u16, bh: *const u16, cw: *const u16, corr: &[GroupOffsets], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let (gr, rw) = (G - 1, w * C);
    assert!(g.len() == G && G <= 3 && out.len() == rw && rw <= rs && rs.is_multiple_of(64) && corr.len() <= 1);
    // SAFETY: the caller guarantees the reads and writes below; e + 16 ≤ rs.
    unsafe {
        let gv: [__m512; G] = std::array::from_fn(|d| _mm512_set1_ps(g[d]));
        let vert = |e: usize| {
            let mut a = _mm512_mul_ps(gv[0], _mm512_loadu_ps(rows[gr].add(e)));
            for (d, k) in gv.iter().enumerate().skip(1) {
                a = _mm512_fmadd_ps(*k, _mm512_add_ps(_mm512_loadu_ps(rows[gr - d].add(e)), _mm512_loadu_ps(rows[gr + d].add(e))), a);
            }
            a
        };
        // The vertical row stays in registers up to t0; from there on (the blocks whose taps
        // reach the mirrored right side) it is stored with that side. Its left side is the
        // first block's values permuted into the lanes below it.
        let t0 = if rw >= 64 { (rw - 32) & !15 } else { 0 };
        for e in (t0..rs).step_by(16) {
            _mm512_storeu_ps(v.add(e), vert(e));
        }
        for (j, &(l, r)) in side.iter().enumerate() {
            for ch in 0..C {
                if t0 == 0 {
                    *v.sub((gr - j) * C).add(ch) = *v.add(l * C + ch);
                }
                *v.add((w + j) * C + ch) = *v.add(r * C + ch);
            }
        }
        let nudge = _mm512_set1_ps(1e-3);
        let ld = |e: usize| _mm512_loadu_ps(v.add(e).sub(16));
        let (mut prev, mut cur, mut sums) = (ld(0), ld(16), [_mm512_setzero_si512(); 2]);
        if t0 > 0 {
            let mut idx = [0i32; 16];
            for (j, &(l, _)) in side.iter().enumerate() {
                for ch in 0..C {
                    idx[16 - (gr - j) * C + ch] = (l * C + ch) as i32;
                }
            }
            cur = vert(0);
            prev = _mm512_permutexvar_ps(_mm512_loadu_si512(idx.as_ptr() as *const __m512i), cur);
        }
        for e in (0..rw).step_by(16) {
            let next = if e + 16 >= t0 { ld(e + 32) } else { vert(e + 16) };
            let mut a = _mm512_mul_ps(gv[0], cur);
            for (d, k) in gv.iter().enumerate().skip(1) {
                a = _mm512_fmadd_ps(*k, _mm512_add_ps(align_ps(cur, prev, 16 - d * C), align_ps(next, cur, d * C)), a);
            }
            (prev, cur) = (cur, next);
            if let Some(gp) = corr.first() {
                // The group's sums for 64 values at every fourth block, kept for the next three.
                if e % 64 == 0 {
                    sums = group_sums_avx512::<2>(bx.add(e), bc.add(e), bh.add(e), cw, gp);
                }
                let s = sums[e % 64 / 32];
                let half = if e & 16 == 0 { _mm512_castsi512_si256(s) } else { _mm512_extracti64x4_epi64::<1>(s) };
                a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(half)), _mm512_set1_ps(gp.w), a);
            }
            // cast_nudged: truncation, then a clamp to 0..=255 (negative values and NaN give 0),
            // as the AVX2 row's saturating packs.
            let q = _mm512_max_epi32(_mm512_cvttps_epi32(_mm512_add_ps(a, nudge)), _mm512_setzero_si512());
            let (b, n) = (_mm512_cvtusepi32_epi8(q), rw - e);
            if n >= 16 {
                _mm_storeu_si128(out.as_mut_ptr().add(e) as *mut __m128i, b);
            } else {
                _mm_mask_storeu_epi8(out.as_mut_ptr().add(e) as *mut i8, ((1u32 << n) - 1) as u16, b);
            }
        }
    }
}

/// One ring row of [`defocus_rows_avx2`]'s disk sums with 32 u16 lanes per instruction and
/// 128 values per pass over a group's offsets: half the instructions and offset reads of the
/// AVX2 loop (Zen 4 still splits each 512-bit op in two, so the disk rows gain only a few
/// percent). The exact group sums, their conversion and the fmadd order are those of the AVX2
/// loop: same bytes.
/// `xb`, `cp` and `cw` point at the source row's first padded value (disks have no boxes).
///
/// # Safety
/// AVX-512 F/BW and FMA present; the reads of the AVX2 loop's disk rows readable; `dst` holds
/// rs values, rs a multiple of 64.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
unsafe fn disk_row_avx512(xb: *const u16, cp: *const u16, cw: *const u16, rs: usize, disk: &[GroupOffsets], dst: *mut f32) {
    // 128 values per pass over the offsets, then the last 64 if rs is an odd multiple of 64.
    let mut x0 = 0;
    // SAFETY: the caller guarantees the reads and writes, x0 + 32·N ≤ rs below.
    unsafe {
        while x0 + 128 <= rs {
            disk_block_avx512::<4>(xb.add(x0), cp.add(x0), cw.add(x0), disk, dst.add(x0));
            x0 += 128;
        }
        if x0 < rs {
            disk_block_avx512::<2>(xb.add(x0), cp.add(x0), cw.add(x0), disk, dst.add(x0));
        }
    }
}

/// 32·N values of [`disk_row_avx512`].
///
/// # Safety
/// As [`disk_row_avx512`], for the 32·N values at the pointers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx2,fma")]
#[inline]
unsafe fn disk_block_avx512<const N: usize>(xb: *const u16, cp: *const u16, cw: *const u16, disk: &[GroupOffsets], dst: *mut f32) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the reads and writes.
    unsafe {
        let ld = |p: *const u16, i: usize| _mm512_loadu_si512(p.add(32 * i) as *const __m512i);
        let mut f = [[_mm512_setzero_ps(); 2]; N];
        for g in disk {
            let mut acc = [_mm512_setzero_si512(); N];
            disk_group_sums!(acc, g, xb, cp, cw, ld, _mm512_add_epi16, _mm512_sub_epi16);
            let k = _mm512_set1_ps(g.w);
            for (a, f) in acc.iter().zip(f.iter_mut()) {
                f[0] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(*a))), k, f[0]);
                f[1] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64::<1>(*a))), k, f[1]);
            }
        }
        for (i, f) in f.iter().enumerate() {
            _mm512_storeu_ps(dst.add(32 * i), f[0]);
            _mm512_storeu_ps(dst.add(32 * i + 16), f[1]);
        }
    }
}

/// The fused AVX2 rows' inputs in one pass per padded row i: `xb` and `cp` as [`pad_prefix`],
/// and from the 4-wide row boxes h4[x] = Σ_{k<4} xb[i][x + k·c] (kept for the row only) the
/// column prefix sums of 4-wide boxes cw[i + 1] = cw[i] + h4 when `cw` is given, and the
/// l-wide row boxes hb[i] = h4[x] + h4[x + 4·c] + … + xb[…] (≤ l·255: exact in u16) when l > 0:
/// a 9-wide box in three loads. cw holds cp[i][x] + … + cp[i][x + 3·c] for x < cs − 3·c, hb its
/// sums for x < cs − (l − 1)·c; values past those, and past cs in the row after the last, are
/// junk (whole vectors are written, each row before the row after it is).
///
/// # Safety
/// AVX2 present; `xb`, `cp`, `cw`, `hb` (when used) hold (h + 2·pad + 1)·cs + 16 values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn pad_boxes_avx2(x: &[u8], h: usize, w: usize, c: usize, pad: usize, cs: usize, l: usize, xb: &mut [u16], cp: &mut [u16], cw: Option<&mut [u16]>, hb: &mut [u16]) {
    use std::arch::x86_64::*;
    let (rw, ph) = (w * c, h + 2 * pad);
    let n = (ph + 1) * cs + 16;
    assert!(x.len() >= h * rw && xb.len() >= n && cp.len() >= n && cw.as_ref().is_none_or(|v| v.len() >= n) && (l == 0 || hb.len() >= n));
    assert!(2 * pad * c + rw <= cs);
    // The mirrored side values of a row, (destination, source) in values; and the same as
    // vectors of 8 (destination, first source byte, shuffle of ≤ 16 source bytes into u16
    // lanes) when every 8 fall within 16 bytes of the row (a vector past a side writes values
    // that the row's middle, or the next row, or the spare vector, takes after).
    let sides: Vec<(usize, usize)> = (0..2 * pad * c)
        .map(|v| {
            let (j, ch) = (v / c, v % c);
            let (d, q) = if j < pad { (j, j as isize - pad as isize) } else { (j + w, (w + j - pad) as isize) };
            (d * c + ch, boundary_index(q, w, Mode::Mirror).expect("mirror") * c + ch)
        })
        .collect();
    let vec8: Option<Vec<(usize, usize, __m128i)>> = (rw >= 16)
        .then(|| {
            [&sides[..pad * c], &sides[pad * c..]]
                .iter()
                .flat_map(|side| side.chunks(8))
                .map(|ch| {
                    let lo = ch.iter().map(|t| t.1).min().unwrap().min(rw - 16);
                    let mut m = [-1i8; 16];
                    for (k, t) in ch.iter().enumerate() {
                        m[2 * k] = (t.1 - lo) as i8;
                    }
                    // SAFETY: SSE2 (x86_64 baseline); 16 bytes read from the array.
                    (ch.iter().all(|t| t.1 - lo < 16)).then(|| (ch[0].0, lo, unsafe { _mm_loadu_si128(m.as_ptr() as *const __m128i) }))
                })
                .collect()
        })
        .flatten();
    cp[..cs].iter_mut().for_each(|v| *v = 0);
    let cwp = cw.map(|v| {
        v[..cs].iter_mut().for_each(|v| *v = 0);
        v.as_mut_ptr()
    });
    let nv = cs.div_ceil(16) * 16;
    let mut h4 = vec![0u16; nv + 4 * c * l.div_ceil(4) + 16];
    // hb = h4[x] + h4[x + 4·c] + … (l/4 terms) + xb[x + 4·(l/4)·c] + … (l mod 4 terms), one row
    // pass per two terms after the first: (from h4, offset).
    let terms: Vec<(bool, usize)> = (1..l / 4).map(|m| (true, 4 * m * c)).chain((l / 4 * 4..l).map(|k| (false, k * c))).collect();
    let (cpp, hbp, h4p) = (cp.as_mut_ptr(), hb.as_mut_ptr(), h4.as_mut_ptr());
    for i in 0..ph {
        let sy = boundary_index(i as isize - pad as isize, h, Mode::Mirror).expect("mirror");
        let src = &x[sy * rw..(sy + 1) * rw];
        let xr = &mut xb[i * cs..(i + 1) * cs];
        match &vec8 {
            // SAFETY: each vector reads 16 bytes from lo ≤ rw − 16 and writes 8 values from a
            // destination < 2·pad·c + rw ≤ cs, inside xb (its spare vector past the last row).
            Some(v) => unsafe {
                for &(d, lo, m) in v {
                    _mm_storeu_si128(xr.as_mut_ptr().add(d) as *mut __m128i, _mm_shuffle_epi8(_mm_loadu_si128(src.as_ptr().add(lo) as *const __m128i), m));
                }
            },
            None => sides.iter().for_each(|&(d, q)| xr[d] = src[q] as u16),
        }
        let mid = &mut xr[pad * c..pad * c + rw];
        let n16 = rw / 16 * 16;
        for k in (0..n16).step_by(16) {
            // SAFETY: 16 bytes of src and 16 values of mid from k < n16 ≤ rw.
            unsafe { _mm256_storeu_si256(mid.as_mut_ptr().add(k) as *mut __m256i, _mm256_cvtepu8_epi16(_mm_loadu_si128(src.as_ptr().add(k) as *const __m128i))) };
        }
        for k in n16..rw {
            mid[k] = src[k] as u16;
        }
        // SAFETY: row i's vectors read xb and write cp, cw, h4 below (i + 1)·cs + nv + 3·c + 16
        // ≤ n (rows i + 1 < ph + 1) and h4's length; hb reads h4 below nv + 4·c·⌈l/4⌉ + 16.
        unsafe {
            let ld = |p: *const u16| _mm256_loadu_si256(p as *const __m256i);
            let st = |p: *mut u16, v: __m256i| _mm256_storeu_si256(p as *mut __m256i, v);
            let (xr, pc, nc) = (xb.as_ptr().add(i * cs), cpp.add(i * cs), cpp.add((i + 1) * cs));
            let h4v = |p: *const u16| _mm256_add_epi16(_mm256_add_epi16(ld(p), ld(p.add(c))), _mm256_add_epi16(ld(p.add(2 * c)), ld(p.add(3 * c))));
            match (cwp, l > 0) {
                (Some(cwp), _) => {
                    let (pw, nw) = (cwp.add(i * cs), cwp.add((i + 1) * cs));
                    for x0 in (0..nv).step_by(16) {
                        st(nc.add(x0), _mm256_add_epi16(ld(pc.add(x0)), ld(xr.add(x0))));
                        let b = h4v(xr.add(x0));
                        st(h4p.add(x0), b);
                        st(nw.add(x0), _mm256_add_epi16(ld(pw.add(x0)), b));
                    }
                }
                (None, true) => {
                    for x0 in (0..nv).step_by(16) {
                        st(nc.add(x0), _mm256_add_epi16(ld(pc.add(x0)), ld(xr.add(x0))));
                        st(h4p.add(x0), h4v(xr.add(x0)));
                    }
                }
                (None, false) => {
                    for x0 in (0..nv).step_by(16) {
                        st(nc.add(x0), _mm256_add_epi16(ld(pc.add(x0)), ld(xr.add(x0))));
                    }
                }
            }
            if l > 0 {
                let hr = hbp.add(i * cs);
                let src = |(from_h4, o): (bool, usize)| (if from_h4 { h4p as *const u16 } else { xr }).add(o);
                for (t, ts) in terms.chunks(2).enumerate() {
                    let (a, b) = (if t == 0 { h4p as *const u16 } else { hr as *const u16 }, src(ts[0]));
                    match ts.get(1) {
                        Some(&u) => {
                            let d = src(u);
                            for x0 in (0..nv).step_by(16) {
                                st(hr.add(x0), _mm256_add_epi16(ld(a.add(x0)), _mm256_add_epi16(ld(b.add(x0)), ld(d.add(x0)))));
                            }
                        }
                        None => {
                            for x0 in (0..nv).step_by(16) {
                                st(hr.add(x0), _mm256_add_epi16(ld(a.add(x0)), ld(b.add(x0))));
                            }
                        }
                    }
                }
                if terms.is_empty() {
                    std::ptr::copy_nonoverlapping(h4p, hr, nv);
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn pad_prefix_avx2(x: &[u8], h: usize, w: usize, c: usize, pad: usize, cs: usize, xb: &mut [u16], cp: &mut [u16]) {
    pad_prefix(x, h, w, c, pad, cs, xb, cp)
}

/// The defocus input: `x` mirror-padded by `pad` pixels on every side as u16 rows of stride
/// `cs` (xb), and its column prefix sums cp (row i = Σ of xb rows above i, wrapping).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pad_prefix(x: &[u8], h: usize, w: usize, c: usize, pad: usize, cs: usize, xb: &mut [u16], cp: &mut [u16]) {
    let rw = w * c;
    let side: Vec<usize> = (0..pad).flat_map(|j| [j as isize - pad as isize, (w + j) as isize]).map(|i| boundary_index(i, w, Mode::Mirror).expect("mirror")).collect();
    cp[..cs].iter_mut().for_each(|v| *v = 0);
    for i in 0..h + 2 * pad {
        let sy = boundary_index(i as isize - pad as isize, h, Mode::Mirror).expect("mirror");
        let (src, xr) = (&x[sy * rw..(sy + 1) * rw], &mut xb[i * cs..(i + 1) * cs]);
        for (o, &v) in xr[pad * c..pad * c + rw].iter_mut().zip(src) {
            *o = v as u16;
        }
        for j in 0..pad {
            let (l, r) = (side[2 * j], side[2 * j + 1]);
            for ch in 0..c {
                xr[j * c + ch] = src[l * c + ch] as u16;
                xr[(pad + w + j) * c + ch] = src[r * c + ch] as u16;
            }
        }
        let (done, next) = cp.split_at_mut((i + 1) * cs);
        for ((o, &p), &v) in next[..cs].iter_mut().zip(&done[i * cs..]).zip(&*xr) {
            *o = p.wrapping_add(v);
        }
    }
}

/// motion_blur: the same angle draw and taps as the float path. Small images in f64 in the
/// float path's order (same bytes), larger ones in f32 (AVX2 when present).
pub(crate) fn motion_blur_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    use rand::Rng as _;
    let angle: f64 = rng.gen_range(-45.0..45.0);
    let (r, s) = blur::motion_params(severity, p);
    let taps = blur::motion_taps(r, s, angle, h, w);
    if h * w <= EXACT_MAX_PIXELS {
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        return motion_f64(&xd, h, w, c, &taps).into_iter().map(crate::cast_u8).collect();
    }
    let taps: Vec<(f32, isize, isize)> = taps.iter().map(|&(k, dy, dx)| (k as f32, dy, dx)).collect();
    motion_f32(x, h, w, c, &taps)
}

/// [`blur::motion_blur_kernel`]'s sum in f64, taps in order (each value: 0 + k₀·s₀ + k₁·s₁ + …),
/// on edge-padded rows; the float path and small images use it.
pub(crate) fn motion_f64(x: &[f64], h: usize, w: usize, c: usize, taps: &[(f64, isize, isize)]) -> Vec<f64> {
    let p = taps.iter().map(|t| t.2.unsigned_abs()).max().unwrap_or(0);
    let pad = pad_image(x, h, w, c, 0, p, Mode::Nearest);
    let mut out = vec![0f64; h * w * c];
    // FMA off: f64 sums keep separate roundings (`o + k·v`), as the float path's.
    motion_rows::<f64, f64, false>(&pad, p, h, w, c, taps, &mut out);
    out
}

/// The f32 motion blur: the image as f32 rows padded by edge replication as far as the taps
/// reach sideways (the vertical clamp picks the source row), each block of [`BLK`] sums kept in
/// registers over all taps. Multiply and add are rounded separately with or without AVX2 (the
/// angle is random: both builds must give the same bytes).
fn motion_f32(x: &[u8], h: usize, w: usize, c: usize, taps: &[(f32, isize, isize)]) -> Vec<u8> {
    let p = taps.iter().map(|t| t.2.unsigned_abs()).max().unwrap_or(0);
    let (rw, prw) = (w * c, (w + 2 * p) * c);
    let mut out = vec![0u8; h * rw];
    scratch(&SCRATCH_F32_B, h * prw + BLK, |pad| {
        for (y, prow) in pad.chunks_exact_mut(prw).take(h).enumerate() {
            let row = &x[y * rw..(y + 1) * rw];
            for (o, &v) in prow[p * c..p * c + rw].iter_mut().zip(row) {
                *o = v as f32;
            }
            for j in 0..p * c {
                prow[j] = row[j % c] as f32;
                prow[p * c + rw + j] = row[rw - c + j % c] as f32;
            }
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { motion_blocks_avx2(pad, p, h, w, c, taps, &mut out) };
        }
        motion_blocks(pad, p, h, w, c, taps, &mut out)
    });
    out
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn motion_blocks_avx2(pad: &[f32], p: usize, h: usize, w: usize, c: usize, taps: &[(f32, isize, isize)], out: &mut [u8]) {
    motion_blocks(pad, p, h, w, c, taps, out)
}

/// The block loop of [`motion_f32`]: `pad` holds h rows of (w + 2p)·c values and BLK spare.
#[inline(always)]
fn motion_blocks(pad: &[f32], p: usize, h: usize, w: usize, c: usize, taps: &[(f32, isize, isize)], out: &mut [u8]) {
    let (rw, prw) = (w * c, (w + 2 * p) * c);
    let mut offs: Vec<(usize, f32)> = vec![(0, 0.0); taps.len()];
    for y in 0..h {
        for (o, &(k, dy, dx)) in offs.iter_mut().zip(taps) {
            let sy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
            *o = (sy * prw + (p as isize + dx) as usize * c, k);
        }
        for e0 in (0..rw).step_by(BLK) {
            let mut acc = [0f32; BLK];
            for &(off, k) in &offs {
                let s: &[f32; BLK] = pad[off + e0..][..BLK].try_into().unwrap();
                for i in 0..BLK {
                    acc[i] += k * s[i];
                }
            }
            for (o, &v) in out[y * rw + e0..(y + 1) * rw].iter_mut().zip(&acc) {
                *o = cast_nudged(v);
            }
        }
    }
}

/// `out += Σ k·pad[clamped row][x + dx]` over the taps in order, per output row: the float
/// path's motion blur.
#[inline(always)]
fn motion_rows<F: Flt, T: Px<F>, const FMA: bool>(pad: &[T], p: usize, h: usize, w: usize, c: usize, taps: &[(F, isize, isize)], out: &mut [F]) {
    let (rw, prw) = (w * c, (w + 2 * p) * c);
    for y in 0..h {
        let orow = &mut out[y * rw..(y + 1) * rw];
        for &(kv, dy, dx) in taps {
            let sy = (y as isize + dy).clamp(0, h as isize - 1) as usize;
            let start = sy * prw + (p as isize + dx) as usize * c;
            for (o, &v) in orow.iter_mut().zip(&pad[start..start + rw]) {
                *o = madd::<FMA, F>(kv, v.get(), *o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The portable build (no AVX2/FMA) runs the same generic code: it must give the f64 paths'
    /// exact sums and the f32 paths' values to float rounding.
    #[test]
    fn portable_and_dispatched_filters_agree() {
        let (h, w, c) = (37, 29, 3);
        let x: Vec<u8> = (0..h * w * c).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
        let xd: Vec<f64> = x.iter().map(|&v| v as f64 / 255.0).collect();
        let k64 = crate::ndimage::gaussian_kernel1d(2.0, 4.0);
        let k32: Vec<f32> = k64.iter().map(|&v| v as f32).collect();
        let a = sep_filter(&xd, h, w, c, &k64, &k64, Mode::Nearest, false, |v: f64| v);
        let b = sep_filter_impl::<f64, f64, f64, false>(&xd, h, w, c, &k64, &k64, Mode::Nearest, false, |v| v);
        assert!(a == b);
        let a = sep_filter(&x, h, w, c, &k32, &k32, Mode::Mirror, true, |v: f32| v);
        let b = sep_filter_impl::<f32, u8, f32, false>(&x, h, w, c, &k32, &k32, Mode::Mirror, true, |v| v);
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-3));
        let taps: Vec<(usize, f64)> = vec![(0, 0.25), ((w + 2) * c + 2 * c, -0.5), (2 * (w + 2) * c + c, 0.125)];
        let pad = pad_f64(&x, h, w, c, 1, 1, Mode::Mirror);
        let (mut o1, mut o2) = (Vec::new(), Vec::new());
        taps_f64(&pad, (w + 2) * c, h, w * c, &taps, |_, _, b| o1.extend_from_slice(b));
        taps_f64_impl(&pad, (w + 2) * c, h, w * c, &taps, |_, _, b| o2.extend_from_slice(b));
        assert!(o1 == o2);
        let mut xp = vec![0f32; pad_rows_len(h, w, c, 2)];
        pad_rows_f32(&x, h, w, c, 2, Mode::Nearest, &mut xp);
        let (mut o1, mut o2) = (Vec::new(), Vec::new());
        sym_sep_f32(&xp, h, w, c, &[0.5, 0.2, 0.05], &[0.6, 0.2], Mode::Mirror, |_, r| o1.extend_from_slice(r));
        sym_sep_impl::<false>(&xp, h, w, c, &[0.5, 0.2, 0.05], &[0.6, 0.2], Mode::Mirror, |_, r| o2.extend_from_slice(r));
        // The AVX2 horizontal pass (HPairs) rounds its input to 1/128 (≤ 1/256) and its weights
        // to 2^-15 (≤ 3 taps · 2^-16 · 255 ≈ 0.012 here).
        assert!(o1.iter().zip(&o2).all(|(p, q)| (p - q).abs() < 0.02));
    }

    /// The VNNI gaussian rows give the AVX2 rows' bytes (the same exact integer sums), for row
    /// counts that leave each tail of the two-row blocking.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn gauss_rows_vnni_equals_avx2() {
        if !(avx2_fma() && vnni()) {
            return;
        }
        for (h, w, sigma) in [(37, 29, 3.0), (70, 66, 6.0), (35, 64, 1.5), (6, 40, 2.0)] {
            let c = 3;
            let x: Vec<u8> = (0..h * w * c).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
            let k64 = crate::ndimage::gaussian_kernel1d(sigma, 4.0);
            let k: Vec<f32> = k64[k64.len() / 2..].iter().map(|&v| v as f32).collect();
            let rs = block_stride(w * c);
            let ts = (rs + (2 * k.len() - 1) * c + 48).div_ceil(16) * 16;
            let hp = HPairs::new(&k, c, rs, ts).unwrap();
            let (mut a, mut b) = (vec![0u8; h * w * c], vec![0u8; h * w * c]);
            // SAFETY: AVX2, FMA, AVX-512 VNNI and VL checked above; hp built for these rows.
            unsafe {
                gauss_rows_avx2(&x, h, w, c, &k, &hp, &mut a);
                gauss_rows_vnni(&x, h, w, c, &k, &hp, &mut b);
            }
            assert!(a == b, "{h}x{w} sigma {sigma}");
        }
    }

    /// The vector u8 → f64/255 conversion gives the table's bits for every byte.
    #[test]
    fn unit_row_matches_lut() {
        let src: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        let mut dst = vec![0f64; src.len()];
        unit_row(&src, &mut dst);
        assert!(src.iter().zip(&dst).all(|(&v, &o)| o.to_bits() == crate::UNIT_LUT[v as usize].to_bits()));
    }

    /// The defocus point-set sums are exact integers scaled once: both builds agree bit for bit.
    #[test]
    fn defocus_groups_avx2_equals_portable() {
        let plan = DefocusPlan::new(10.0, 0.5);
        let (rows, cs, c) = (30, 3 * BLK + 2 * plan.pad * 3, 3);
        let xb: Vec<u16> = (0..rows * cs).map(|i| ((i * 7919 + 13) % 256) as u16).collect();
        let mut cp = vec![0u16; (rows + 1) * cs];
        for i in 0..rows * cs {
            cp[i + cs] = cp[i].wrapping_add(xb[i]);
        }
        let y = rows - 2 * plan.pad - 1;
        let (mut a, mut b) = (vec![0.5f32; 3 * BLK], vec![0.5f32; 3 * BLK]);
        for groups in [&plan.disk, &plan.corr] {
            add_groups(&xb, &cp, cs, c, y, groups, &mut a, false);
            add_groups_impl(&xb, &cp, cs, c, y, groups, &mut b, false);
        }
        assert!(a == b);
    }

    /// The fused AVX2 defocus rows and the portable rows agree to the cast's ±1 (the paths
    /// round differently: f32 sums in another order, the correction's i16 weights).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn defocus_fused_rows_match_portable_rows() {
        if !avx2_fma() {
            return;
        }
        // RGB and grayscale rows (the AVX-512 rows shift by the pixel stride), with tails, and
        // rows too short to keep the vertical row in registers.
        for ((h, w, c), (r, a)) in [(70, 81, 3), (66, 83, 1), (50, 40, 1)].into_iter().flat_map(|s| [(s, (6.0, 0.5)), (s, (10.0, 0.5))]) {
            let x: Vec<u8> = (0..h * w * c).map(|i| (((i / (w * c)) as f64 * 0.3).sin() * 90.0 + 128.0 + ((i * 7919) % 37) as f64) as u8).collect();
            let plan = DefocusPlan::new(r, a);
            let (pad, rs) = (plan.pad, block_stride(w * c));
            let cs = rs + 2 * pad * c;
            let (mut xb, mut cp) = (vec![0u16; (h + 2 * pad + 1) * cs + 16], vec![0u16; (h + 2 * pad + 1) * cs + 16]);
            pad_prefix(&x, h, w, c, pad, cs, &mut xb, &mut cp);
            let (mut a1, mut a2) = (vec![0u8; h * w * c], vec![0u8; h * w * c]);
            defocus_rows(&xb, &cp, cs, h, w, c, &plan, &mut a1);
            let cq = plan.corr_pairs.as_ref().unwrap();
            // The fused rows pad the image themselves, into buffers of stale values.
            let (mut xb2, mut cp2) = (vec![7u16; xb.len()], vec![7u16; cp.len()]);
            // SAFETY: AVX2 and FMA checked above.
            unsafe {
                match plan.g.len() {
                    2 => defocus_rows_avx2::<2>(&x, &mut xb2, &mut cp2, cs, h, w, c, &plan, cq, false, &mut a2),
                    _ => defocus_rows_avx2::<3>(&x, &mut xb2, &mut cp2, cs, h, w, c, &plan, cq, false, &mut a2),
                }
            };
            // The AVX-512 disk rows give the same bytes.
            if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
                let mut a3 = vec![0u8; h * w * c];
                // SAFETY: AVX2, FMA and AVX-512 F/BW checked above.
                unsafe {
                    match plan.g.len() {
                        2 => defocus_rows_avx2::<2>(&x, &mut xb2, &mut cp2, cs, h, w, c, &plan, cq, true, &mut a3),
                        _ => defocus_rows_avx2::<3>(&x, &mut xb2, &mut cp2, cs, h, w, c, &plan, cq, true, &mut a3),
                    }
                };
                assert_eq!(a2, a3, "r {r} c {c}");
            }
            let (rows, n) = (h + 2 * pad, (w + 2 * pad) * c);
            let same = |p: &[u16], q: &[u16], k: usize| p[..k * cs].chunks(cs).zip(q[..k * cs].chunks(cs)).all(|(p, q)| p[..n] == q[..n]);
            assert!(same(&xb, &xb2, rows) && same(&cp, &cp2, rows + 1));
            let same = a1.iter().zip(&a2).filter(|(p, q)| p == q).count() as f64 / a1.len() as f64;
            assert!(a1.iter().zip(&a2).all(|(p, q)| p.abs_diff(*q) <= 1) && same > 0.99, "r {r} c {c}: {same}");
        }
    }

    /// The plan's worst-case distance to the reference kernel on the 0..255 scale, Σ|K − G⊛D − E|·255
    /// over the plan's support (the largest change of one output value, before f32 rounding),
    /// stays under one level (so the cast moves a value by at most ±1): 0.80 at radius 10
    /// (its thinned correction, the Gaussian's outer taps folded in), 0.40 at radius 8, 0 at 6.
    #[test]
    fn defocus_plan_within_a_level_of_the_kernel() {
        for (r, bound) in [(6.0, 1e-4), (8.0, 0.41), (10.0, 0.81)] {
            let plan = DefocusPlan::new(r, 0.5);
            let (n, gr, m) = (plan.n, plan.g.len() - 1, 2 * plan.pad + 1);
            let g: Vec<f64> = (0..2 * gr + 1).map(|i| plan.g[i.abs_diff(gr)] as f64).collect();
            let add = |e: &mut [f64], gs: &[Group]| {
                for gp in gs {
                    let pts = gp.runs.iter().flat_map(|&(j, i0, i1)| (i0..i1).map(move |i| (j, i))).chain(gp.points.iter().copied());
                    pts.for_each(|(j, i)| e[i * m + j] += gp.w as f64);
                }
            };
            let mut d = vec![0f64; m * m];
            add(&mut d, &plan.disk);
            let mut e = vec![0f64; m * m];
            for (y, x) in (0..m * m).map(|i| (i / m, i % m)) {
                for (i, j) in (0..g.len() * g.len()).map(|t| (t / g.len(), t % g.len())) {
                    let (sy, sx) = ((y + i).wrapping_sub(gr), (x + j).wrapping_sub(gr));
                    if sy < m && sx < m {
                        e[y * m + x] += g[i] * g[j] * d[sy * m + sx];
                    }
                }
            }
            add(&mut e, &plan.corr);
            let off = plan.pad - n / 2;
            let k = |y: usize, x: usize| if (off..off + n).contains(&y) && (off..off + n).contains(&x) { plan.k[(y - off) * n + x - off] } else { 0.0 };
            let worst = 255.0 * (0..m * m).map(|i| (k(i / m, i % m) - e[i]).abs()).sum::<f64>();
            assert!(worst < bound, "r {r}: {worst}");
        }
    }

    /// motion_blur is random (its angle): the AVX2 build must give the portable build's bytes.
    #[test]
    fn motion_blur_avx2_equals_portable() {
        let (h, w, c) = (70, 81, 3);
        let x: Vec<u8> = (0..h * w * c).map(|i| ((i * 7919 + 13) % 256) as u8).collect();
        for angle in [-44.0, -10.0, 0.0, 30.0] {
            let taps: Vec<(f32, isize, isize)> = blur::motion_taps(15, 5.0, angle, h, w).iter().map(|&(k, dy, dx)| (k as f32, dy, dx)).collect();
            let p = taps.iter().map(|t| t.2.unsigned_abs()).max().unwrap();
            let pw = (w + 2 * p) * c;
            let mut pad = vec![0f32; h * pw + BLK];
            for y in 0..h {
                for j in 0..w + 2 * p {
                    let sx = (j as isize - p as isize).clamp(0, w as isize - 1) as usize;
                    for ch in 0..c {
                        pad[y * pw + j * c + ch] = x[(y * w + sx) * c + ch] as f32;
                    }
                }
            }
            let mut portable = vec![0u8; h * w * c];
            motion_blocks(&pad, p, h, w, c, &taps, &mut portable);
            assert!(motion_f32(&x, h, w, c, &taps) == portable, "angle {angle}");
        }
    }
}
