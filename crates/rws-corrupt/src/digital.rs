//! Digital corruptions: brightness, contrast, saturate (skimage HSV), pixelate (Pillow BOX
//! resampling in fixed point), jpeg_compression (see jpeg/mod.rs).
use crate::ndimage::{hsv2rgb, rgb2hsv};
use crate::{Error, FImage, ParamSet, Result, Rng};

fn pick<T: Copy>(p: ParamSet, s: usize, c32: [T; 5], t64: [T; 5], ic: [T; 5]) -> T {
    match p {
        ParamSet::Cifar10 => c32[s - 1],
        ParamSet::TinyImageNet => t64[s - 1],
        ParamSet::ImageNet => ic[s - 1],
    }
}

/// Apply an HSV edit per pixel as the reference (x/255 → rgb2hsv → edit → hsv2rgb → clip·255).
/// Grey images are RGB with three equal channels: S = 0 and H = 0 there, so the edit is applied
/// to that pixel and the result is returned as one channel by ITU-R 601 luma (equal channels
/// come back unchanged; saturate's b > 0 turns grey reddish, which luma turns back into a grey
/// level).
fn hsv_px(r: f64, g: f64, b: f64, f: &impl Fn(f64, f64, f64) -> (f64, f64, f64)) -> (f64, f64, f64) {
    hsv_px01(r / 255.0, g / 255.0, b / 255.0, f)
}

/// [`hsv_px`] of values already divided by 255.
#[inline(always)]
fn hsv_px01(r: f64, g: f64, b: f64, f: &impl Fn(f64, f64, f64) -> (f64, f64, f64)) -> (f64, f64, f64) {
    let (h, s, v) = rgb2hsv(r, g, b);
    let (h, s, v) = f(h, s, v);
    let (r, g, b) = hsv2rgb(h, s, v);
    (r.clamp(0.0, 1.0) * 255.0, g.clamp(0.0, 1.0) * 255.0, b.clamp(0.0, 1.0) * 255.0)
}

fn hsv_grey(v: f64, f: &impl Fn(f64, f64, f64) -> (f64, f64, f64)) -> f64 {
    let (r, g, b) = hsv_px(v, v, v, f);
    if r == g && g == b {
        r
    } else {
        0.299 * r + 0.587 * g + 0.114 * b
    }
}

fn hsv_edit(x: &FImage, f: impl Fn(f64, f64, f64) -> (f64, f64, f64)) -> FImage {
    let mut out = x.clone();
    if x.c == 3 {
        for (o, i) in out.data.chunks_exact_mut(3).zip(x.data.chunks_exact(3)) {
            let (r, g, b) = hsv_px(i[0], i[1], i[2], &f);
            o[0] = r;
            o[1] = g;
            o[2] = b;
        }
    } else {
        for (o, &v) in out.data.iter_mut().zip(&x.data) {
            *o = hsv_grey(v, &f);
        }
    }
    out
}

/// The two HSV edits, as data so that the vector path can apply them too.
#[derive(Clone, Copy)]
enum Edit {
    /// V + k, clipped to 0..1.
    Brightness(f64),
    /// S·a + b, clipped to 0..1.
    Saturate(f64, f64),
}

impl Edit {
    #[inline(always)]
    fn apply(self, h: f64, s: f64, v: f64) -> (f64, f64, f64) {
        match self {
            Edit::Brightness(k) => (h, s, (v + k).clamp(0.0, 1.0)),
            Edit::Saturate(a, b) => (h, (s * a + b).clamp(0.0, 1.0), v),
        }
    }
}

/// [`hsv_edit`] from uint8 to uint8 (the same arithmetic, then the reference's cast). Grey
/// images have 256 possible inputs: one table. RGB runs four pixels per step in AVX2 where the
/// CPU has it: the same IEEE operations lane by lane (FMA only to form the correctly rounded
/// v/255, see [`hsv_avx2`]), so the same bytes.
fn hsv_edit_u8(x: &[u8], c: usize, e: Edit) -> Vec<u8> {
    let cast = crate::cast_u8;
    let f = |h, s, v| e.apply(h, s, v);
    if c == 3 {
        let mut out = vec![0u8; x.len()];
        let d = &crate::UNIT_LUT;
        #[allow(unused_mut)]
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: AVX2 and FMA are present.
            done = unsafe { hsv_avx2::run(x, &mut out, e) };
        }
        for (o, i) in out[done..].chunks_exact_mut(3).zip(x[done..].chunks_exact(3)) {
            let (r, g, b) = hsv_px01(d[i[0] as usize], d[i[1] as usize], d[i[2] as usize], &f);
            o[0] = cast(r);
            o[1] = cast(g);
            o[2] = cast(b);
        }
        out
    } else {
        let lut: Vec<u8> = (0..256).map(|v| cast(hsv_grey(v as f64, &f))).collect();
        x.iter().map(|&v| lut[v as usize]).collect()
    }
}

/// rgb2hsv → edit → hsv2rgb → clip·255 → cast of ndimage.rs and [`hsv_px01`], four pixels at a
/// time. Every step is the scalar code's IEEE operation (max, min, sub, div, mul, truncation),
/// and the scalar code's branches and table lookups become lane selects, so each lane gets the
/// scalar bytes. The one exception is v/255, the scalar code's table: computed as q = v·RN(1/255)
/// corrected once with the exact remainder v − 255·q (an FMA), which is the correctly rounded
/// quotient (Markstein: RN(1/255) within half an ulp, q within one ulp), checked for all 256
/// bytes by the exhaustive colour test; cheaper than three gathers.
#[cfg(target_arch = "x86_64")]
mod hsv_avx2 {
    use super::Edit;
    use std::arch::x86_64::*;

    /// Processes whole groups of four pixels while 16 bytes can be read and written at the
    /// position; returns how many bytes it did (a multiple of 12).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(x: &[u8], out: &mut [u8], e: Edit) -> usize {
        debug_assert_eq!(x.len(), out.len());
        let sh_r = _mm_setr_epi8(0, -1, -1, -1, 3, -1, -1, -1, 6, -1, -1, -1, 9, -1, -1, -1);
        let sh_g = _mm_setr_epi8(1, -1, -1, -1, 4, -1, -1, -1, 7, -1, -1, -1, 10, -1, -1, -1);
        let sh_b = _mm_setr_epi8(2, -1, -1, -1, 5, -1, -1, -1, 8, -1, -1, -1, 11, -1, -1, -1);
        let pack = _mm_setr_epi8(0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1, -1, -1, -1);
        let zero = _mm256_setzero_pd();
        let one = _mm256_set1_pd(1.0);
        let c255 = _mm256_set1_pd(255.0);
        let (ek, ea, eb, bright) = match e {
            Edit::Brightness(k) => (k, 0.0, 0.0, true),
            Edit::Saturate(a, b) => (0.0, a, b, false),
        };
        let (ek, ea, eb) = (_mm256_set1_pd(ek), _mm256_set1_pd(ea), _mm256_set1_pd(eb));
        let k = |v: f64| _mm256_set1_pd(v);
        let (k2, k4, k6) = (k(2.0), k(4.0), k(6.0));
        let (i1, i2, i3, i4, i5) = (k(1.0), k(2.0), k(3.0), k(4.0), k(5.0));
        let sel = |m: __m256d, a: __m256d, b: __m256d| _mm256_blendv_pd(b, a, m); // m ? a : b
        let eq = |a: __m256d, b: __m256d| _mm256_cmp_pd::<_CMP_EQ_OQ>(a, b);
        let r255 = _mm256_set1_pd(1.0 / 255.0);
        let div255 = |x: __m256d| {
            let q = _mm256_mul_pd(x, r255);
            _mm256_fmadd_pd(_mm256_fnmadd_pd(q, c255, x), r255, q)
        };
        let mut i = 0;
        while i + 16 <= x.len() {
            let px = _mm_loadu_si128(x.as_ptr().add(i) as *const __m128i);
            let r = div255(_mm256_cvtepi32_pd(_mm_shuffle_epi8(px, sh_r)));
            let g = div255(_mm256_cvtepi32_pd(_mm_shuffle_epi8(px, sh_g)));
            let b = div255(_mm256_cvtepi32_pd(_mm_shuffle_epi8(px, sh_b)));
            // rgb2hsv
            let v = _mm256_max_pd(_mm256_max_pd(r, g), b);
            let delta = _mm256_sub_pd(v, _mm256_min_pd(_mm256_min_pd(r, g), b));
            let flat = eq(delta, zero);
            let s = _mm256_andnot_pd(flat, _mm256_div_pd(delta, v));
            let (is_b, is_g) = (eq(b, v), eq(g, v));
            let num = sel(is_b, _mm256_sub_pd(r, g), sel(is_g, _mm256_sub_pd(b, r), _mm256_sub_pd(g, b)));
            let off = sel(is_b, k4, _mm256_and_pd(is_g, k2));
            let q = _mm256_div_pd(num, delta);
            let h = sel(_mm256_or_pd(is_b, is_g), _mm256_add_pd(off, q), q);
            let h = _mm256_div_pd(h, k6);
            let h = sel(_mm256_cmp_pd::<_CMP_LT_OQ>(h, zero), _mm256_add_pd(h, one), h);
            let h = _mm256_andnot_pd(flat, h);
            // the edit
            let (s, v) = if bright {
                (s, _mm256_min_pd(_mm256_max_pd(_mm256_add_pd(v, ek), zero), one))
            } else {
                (_mm256_min_pd(_mm256_max_pd(_mm256_add_pd(_mm256_mul_pd(s, ea), eb), zero), one), v)
            };
            // hsv2rgb (h ∈ [0, 1], so truncation is floor and the sector is 0..=6, 6 meaning 0)
            let h6 = _mm256_mul_pd(h, k6);
            let hi = _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(h6);
            let f = _mm256_sub_pd(h6, hi);
            let p = _mm256_mul_pd(v, _mm256_sub_pd(one, s));
            let qq = _mm256_mul_pd(v, _mm256_sub_pd(one, _mm256_mul_pd(f, s)));
            let t = _mm256_mul_pd(v, _mm256_sub_pd(one, _mm256_mul_pd(_mm256_sub_pd(one, f), s)));
            let (m1, m2, m3, m4, m5) = (eq(hi, i1), eq(hi, i2), eq(hi, i3), eq(hi, i4), eq(hi, i5));
            // sector 0 (or 6): (v, t, p); 1: (q, v, p); 2: (p, v, t); 3: (p, q, v); 4: (t, p, v); 5: (v, p, q)
            let ro = sel(m1, qq, sel(_mm256_or_pd(m2, m3), p, sel(m4, t, v)));
            let go = sel(_mm256_or_pd(m1, m2), v, sel(m3, qq, sel(_mm256_or_pd(m4, m5), p, t)));
            let bo = sel(m2, t, sel(_mm256_or_pd(m3, m4), v, sel(m5, qq, p)));
            // clip·255, then cast_u8 (max 0, min 255, truncate). Both clips are identities here:
            // v, s ∈ [0, 1] after the edit and f ∈ [0, 1), so v, p = v·(1 − s), q = v·(1 − f·s)
            // and t = v·(1 − (1 − f)·s) lie in [0, v] ⊂ [0, 1] (rounding is monotone, and no NaN
            // survives the flat-pixel masks), and ·255 keeps them in [0, 255]: what remains is
            // the multiplication and the truncation.
            let cast = |a: __m256d| _mm256_cvttpd_epi32(_mm256_mul_pd(a, c255));
            let (ri, gi, bi) = (cast(ro), cast(go), cast(bo));
            // bytes 0..4 of the packed lanes hold r0..r3, 4..8 g, 8..12 b; interleave them.
            let rgb = _mm_packus_epi16(_mm_packus_epi32(ri, gi), _mm_packus_epi32(bi, bi));
            let o = _mm_shuffle_epi8(rgb, pack);
            // SAFETY: 16 bytes stored, 12 meant: the other 4 lie inside `out` (i + 16 ≤ len,
            // asserted) and are written again by the next group or the scalar tail.
            assert!(i + 16 <= out.len());
            _mm_storeu_si128(out.as_mut_ptr().add(i) as *mut __m128i, o);
            i += 12;
        }
        i
    }
}

fn brightness_c(severity: usize, p: ParamSet) -> f64 {
    pick(p, severity, [0.05, 0.1, 0.15, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5])
}

fn saturate_ab(severity: usize, p: ParamSet) -> (f64, f64) {
    pick(
        p,
        severity,
        [(0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)],
        [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (30.0, 0.2)],
        [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)],
    )
}

fn contrast_c(severity: usize, p: ParamSet) -> f64 {
    pick(p, severity, [0.75, 0.5, 0.4, 0.3, 0.15], [0.4, 0.3, 0.2, 0.1, 0.05], [0.4, 0.3, 0.2, 0.1, 0.05])
}

fn pixelate_c(severity: usize, p: ParamSet) -> f64 {
    pick(p, severity, [0.95, 0.9, 0.85, 0.75, 0.65], [0.9, 0.8, 0.7, 0.6, 0.5], [0.6, 0.5, 0.4, 0.3, 0.25])
}

fn jpeg_q(severity: usize, p: ParamSet) -> u32 {
    pick(p, severity, [80, 65, 58, 50, 40], [65, 58, 50, 40, 25], [25, 18, 15, 10, 7])
}

pub(crate) fn brightness_u8(x: &[u8], c: usize, severity: usize, p: ParamSet) -> Vec<u8> {
    hsv_edit_u8(x, c, Edit::Brightness(brightness_c(severity, p)))
}

pub(crate) fn saturate_u8(x: &[u8], c: usize, severity: usize, p: ParamSet) -> Vec<u8> {
    let (a, b) = saturate_ab(severity, p);
    hsv_edit_u8(x, c, Edit::Saturate(a, b))
}

/// contrast of one channel value, as the reference computes it: 255·clip((v/255 − m)·k + m), cast.
#[inline(always)]
fn contrast_value(v: u8, m: f64, k: f64) -> u8 {
    crate::cast_u8(((v as f64 / 255.0 - m) * k + m).clamp(0.0, 1.0) * 255.0)
}

/// Fraction bits of [`contrast_affine`]'s fixed point: v·a + b stays under 2³¹ (a ≤ 2²², b ≤ 2³⁰).
const CONTRAST_BITS: u32 = 22;

/// contrast's per-value map of one channel as integer arithmetic, min(255, (v·a + b) >> 22),
/// when that provably gives [`contrast_value`]'s bytes; `None` sends the channel to a table.
///
/// In exact arithmetic the map is ⌊min(255, k·v + c)⌋ with c = 255·m·(1 − k); a and b are k and c
/// rounded to 22 fraction bits, off by at most 255·½ + ½ units at v = 255, and the f64 formula is
/// within 10⁻¹² of the exact value. So the two agree wherever v·a + b lies more than
/// [`Self::MARGIN`] units from a multiple of 2²² (255 included, which also settles the clip), and
/// the few values that do not are checked against the formula itself. That costs a 256-step
/// integer scan instead of 256 float evaluations per channel, which matters at 32×32.
fn contrast_affine(m: f64, k: f64) -> Option<(i32, i32)> {
    const MARGIN: i32 = 256;
    const MASK: i32 = (1 << CONTRAST_BITS) - 1;
    let one = (1u32 << CONTRAST_BITS) as f64;
    let a = (k * one).round() as i32;
    let b = (255.0 * m * (1.0 - k) * one).round() as i32;
    if !(0..=1 << CONTRAST_BITS).contains(&a) || !(0..=255 << CONTRAST_BITS).contains(&b) {
        return None;
    }
    // Branch-free count first (it vectorises); the exact check only where something is close.
    let near = (0..256).map(|v| (((v * a + b + MARGIN) & MASK) < 2 * MARGIN) as u32).sum::<u32>();
    if near > 0 {
        for v in 0..256 {
            let t = v * a + b;
            if ((t + MARGIN) & MASK) < 2 * MARGIN && (t >> CONTRAST_BITS).min(255) as u8 != contrast_value(v as u8, m, k) {
                return None;
            }
        }
    }
    Some((a, b))
}

/// contrast on uint8: the channel means from exact integer sums, then the reference's per-value
/// formula, as fixed-point integer arithmetic where [`contrast_affine`] proves it gives the same
/// bytes (vectorised), else as one 256-entry table per channel.
pub(crate) fn contrast_u8(x: &[u8], c: usize, severity: usize, p: ParamSet) -> Vec<u8> {
    let k = contrast_c(severity, p);
    let n = (x.len() / c) as f64;
    let mut sums = [0u64; 3];
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    let avx2 = std::arch::is_x86_feature_detected!("avx2");
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2 is present.
        (sums, done) = unsafe { contrast_avx2::sums(x) };
    }
    for (i, &v) in x[done..].iter().enumerate() {
        sums[i % 3] += v as u64;
    }
    if c == 1 {
        sums = [sums.iter().sum(), 0, 0];
    }
    let means: Vec<f64> = sums[..c].iter().map(|&s| s as f64 / 255.0 / n).collect();
    let ab: Vec<Option<(i32, i32)>> = means.iter().map(|&m| contrast_affine(m, k)).collect();
    let mut out = Vec::with_capacity(x.len());
    #[cfg(target_arch = "x86_64")]
    if avx2 && ab.iter().all(Option::is_some) {
        let ab: Vec<(i32, i32)> = (0..3).map(|i| ab[i % c].unwrap()).collect();
        // SAFETY: AVX2 is present; `map` writes the first `done` bytes of the spare capacity,
        // which holds x.len() bytes.
        let done = unsafe {
            let done = contrast_avx2::map(x, out.spare_capacity_mut().as_mut_ptr() as *mut u8, [ab[0], ab[1], ab[2]]);
            out.set_len(done);
            done
        };
        let means: Vec<f64> = (0..3).map(|i| means[i % c]).collect();
        out.extend(x[done..].iter().enumerate().map(|(i, &v)| contrast_value(v, means[i % 3], k)));
        return out;
    }
    // Tables, filled by the integer form where it holds (cheaper than the float formula).
    let luts: Vec<[u8; 256]> = means
        .iter()
        .zip(&ab)
        .map(|(&m, ab)| {
            std::array::from_fn(|v| match *ab {
                Some((a, b)) => ((v as i32 * a + b) >> CONTRAST_BITS).min(255) as u8,
                None => contrast_value(v as u8, m, k),
            })
        })
        .collect();
    if c == 3 {
        out.extend(x.chunks_exact(3).flat_map(|i| [luts[0][i[0] as usize], luts[1][i[1] as usize], luts[2][i[2] as usize]]));
    } else {
        out.extend(x.iter().map(|&i| luts[0][i as usize]));
    }
    out
}

/// contrast's two passes over interleaved RGB (or grey, as RGB with equal parameters), 96 bytes
/// (32 pixels) per step, so that every 32-byte vector sees the same channel pattern each step.
#[cfg(target_arch = "x86_64")]
mod contrast_avx2 {
    use super::CONTRAST_BITS;
    use std::arch::x86_64::*;

    /// Byte position in a 96-byte block of each u16 lane of [`sums`]'s six accumulators
    /// (unpacklo/unpackhi of three vectors: low and high eight bytes of each 128-bit half).
    const LANE_BYTE: [usize; 96] = {
        let mut t = [0; 96];
        let mut i = 0;
        while i < 96 {
            let (acc, lane) = (i / 16, i % 16);
            t[i] = 32 * (acc / 2) + 16 * (lane / 8) + 8 * (acc % 2) + lane % 8;
            i += 1;
        }
        t
    };

    /// Sums of the bytes by position mod 3 over whole 96-byte blocks (u16 lanes, emptied every
    /// 256 blocks before they can overflow); returns them and the bytes done.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sums(x: &[u8]) -> ([u64; 3], usize) {
        let z = _mm256_setzero_si256();
        let blocks = x.len() / 96;
        let mut sums = [0u64; 3];
        let mut b = 0;
        while b < blocks {
            let end = (b + 256).min(blocks);
            let mut acc = [z; 6];
            for blk in x[b * 96..end * 96].chunks_exact(96) {
                for q in 0..3 {
                    // SAFETY (whole fn): every load reads 32 bytes inside a 96-byte chunk.
                    let v = _mm256_loadu_si256(blk.as_ptr().add(32 * q) as *const __m256i);
                    acc[2 * q] = _mm256_add_epi16(acc[2 * q], _mm256_unpacklo_epi8(v, z));
                    acc[2 * q + 1] = _mm256_add_epi16(acc[2 * q + 1], _mm256_unpackhi_epi8(v, z));
                }
            }
            let mut lanes = [0u16; 96];
            for (i, a) in acc.iter().enumerate() {
                _mm256_storeu_si256(lanes.as_mut_ptr().add(16 * i) as *mut __m256i, *a);
            }
            for (&l, &p) in lanes.iter().zip(&LANE_BYTE) {
                sums[p % 3] += l as u64;
            }
            b = end;
        }
        (sums, blocks * 96)
    }

    /// min(255, (v·a + b) >> 22) per byte, (a, b) by channel, over whole 96-byte blocks, in
    /// eight u32 lanes; writes that many bytes at `out` and returns the count.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn map(x: &[u8], out: *mut u8, ab: [(i32, i32); 3]) -> usize {
        // The 8-byte piece at offset 8j starts on channel 8j mod 3.
        let pat = |first: usize| {
            let a: [i32; 8] = std::array::from_fn(|l| ab[(first + l) % 3].0);
            let b: [i32; 8] = std::array::from_fn(|l| ab[(first + l) % 3].1);
            (_mm256_loadu_si256(a.as_ptr() as *const __m256i), _mm256_loadu_si256(b.as_ptr() as *const __m256i))
        };
        let pats = [pat(0), pat(1), pat(2)];
        let lim = _mm256_set1_epi32(255);
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let blocks = x.len() / 96;
        for blk in 0..blocks {
            for q in 0..3 {
                let r: [__m256i; 4] = std::array::from_fn(|i| {
                    let j = 4 * q + i;
                    // SAFETY: the 8 bytes at 96·blk + 8j lie in the block.
                    let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(x.as_ptr().add(96 * blk + 8 * j) as *const __m128i));
                    let (a, b) = pats[8 * j % 3];
                    _mm256_min_epi32(_mm256_srai_epi32::<{ CONTRAST_BITS as i32 }>(_mm256_add_epi32(_mm256_mullo_epi32(v, a), b)), lim)
                });
                let o = _mm256_packus_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
                // SAFETY: the caller gives room for x.len() bytes.
                _mm256_storeu_si256(out.add(96 * blk + 32 * q) as *mut __m256i, _mm256_permutevar8x32_epi32(o, order));
            }
        }
        blocks * 96
    }
}

pub(crate) fn brightness(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let c = brightness_c(severity, p);
    Ok(hsv_edit(x, |h, s, v| (h, s, (v + c).clamp(0.0, 1.0))))
}

pub(crate) fn saturate(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let (a, b) = saturate_ab(severity, p);
    Ok(hsv_edit(x, |h, s, v| (h, (s * a + b).clamp(0.0, 1.0), v)))
}

pub(crate) fn contrast(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let c = contrast_c(severity, p);
    let n = (x.h * x.w) as f64;
    let mut means = vec![0.0; x.c];
    for px in x.data.chunks_exact(x.c) {
        for (m, v) in means.iter_mut().zip(px) {
            *m += v / 255.0;
        }
    }
    means.iter_mut().for_each(|m| *m /= n);
    let mut out = x.clone();
    for px in out.data.chunks_exact_mut(x.c) {
        for (v, &m) in px.iter_mut().zip(&means) {
            *v = ((*v / 255.0 - m) * c + m).clamp(0.0, 1.0) * 255.0;
        }
    }
    Ok(out)
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` for the BOX filter plus `normalize_coeffs_8bpc`, written out
/// independently of [`box_weights`] (the reference form for the tests).
#[cfg(test)]
fn box_coeffs_flat(in_size: usize, out_size: usize) -> (Vec<(usize, std::ops::Range<usize>)>, Vec<i32>) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 0.5 * filterscale;
    let ss = 1.0 / filterscale;
    let mut spans = Vec::with_capacity(out_size);
    let mut flat = Vec::new();
    let mut w = Vec::new();
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize).saturating_sub(xmin);
        w.clear();
        w.extend((0..xmax).map(|x| {
            let t = (x as f64 + xmin as f64 - center + 0.5) * ss;
            if t > -0.5 && t <= 0.5 {
                1.0
            } else {
                0.0
            }
        }));
        let ww: f64 = w.iter().sum();
        let start = flat.len();
        flat.extend(w.iter().map(|&v| {
            let v = if ww != 0.0 { v / ww } else { v };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            (if f < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
        }));
        spans.push((xmin, start..flat.len()));
    }
    (spans, flat)
}

/// `precompute_coeffs`' window and unnormalised BOX weights (0 or 1) of output pixel `xx`.
fn box_weights(in_size: usize, out_size: usize, xx: usize) -> (usize, impl Iterator<Item = f64> + Clone) {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 0.5 * filterscale;
    let ss = 1.0 / filterscale;
    let center = (xx as f64 + 0.5) * scale;
    let xmin = ((center - support + 0.5) as i64).max(0) as usize;
    let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize).saturating_sub(xmin);
    let w = (0..xmax).map(move |x| {
        let t = (x as f64 + xmin as f64 - center + 0.5) * ss;
        if t > -0.5 && t <= 0.5 {
            1.0
        } else {
            0.0
        }
    });
    (xmin, w)
}

/// `normalize_coeffs_8bpc`: a normalised weight in fixed point, rounded half away from zero.
fn fixed_weight(v: f64) -> i32 {
    let f = v * (1u32 << PRECISION_BITS) as f64;
    (if f < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
}

/// One output pixel of a BOX pass. Its weights are 1 on a run of `n` input pixels from `start`
/// and 0 elsewhere, so after normalisation every non-zero weight is the same `k`, and Pillow's
/// Σ pixel·k equals k·Σ pixel exactly: a sum of bytes, one multiplication.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    n: u32,
    k: u32,
}

fn box_spans(in_size: usize, out_size: usize) -> Vec<Span> {
    (0..out_size)
        .map(|xx| {
            let (xmin, w) = box_weights(in_size, out_size, xx);
            // The t test is monotone in x, so the ones form one run.
            let first = w.clone().position(|v| v != 0.0).unwrap_or(0);
            let n = w.filter(|&v| v != 0.0).count();
            let k = if n == 0 { 0 } else { fixed_weight(1.0 / n as f64) as u32 };
            Span { start: (xmin + first) as u32, n: n as u32, k }
        })
        .collect()
}

#[inline(always)]
fn box_round(sum: u32, k: u32) -> u8 {
    // sum·k ≤ 255·n·k ≤ 255·(2²² + n/2): the result never exceeds 255, as Pillow's clip8 leaves it.
    ((sum * k + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS) as u8
}

/// Horizontal BOX pass over one row of `c`-channel pixels (scalar; RGB rows normally take
/// [`box_avx2::row3`]).
fn box_row(src: &[u8], c: usize, spans: &[Span], out: &mut [u8]) {
    for (sp, o) in spans.iter().zip(out.chunks_exact_mut(c)) {
        let s = &src[sp.start as usize * c..(sp.start + sp.n) as usize * c];
        for (ch, o) in o.iter_mut().enumerate() {
            *o = box_round(s.iter().skip(ch).step_by(c).map(|&v| v as u32).sum(), sp.k);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod box_avx2 {
    use super::{Span, PRECISION_BITS};
    use std::arch::x86_64::*;

    /// Two output pixels of an RGB row, one per 128-bit half: where each one's 16-byte window
    /// starts, the shuffle that puts each channel's run (up to four pixels) into its own 4-byte
    /// group, and the weight k per group.
    pub(super) struct Pair {
        off: [usize; 2],
        mask: [u8; 32],
        k: [i32; 8],
    }

    /// The pairs of a row `in_w` pixels wide, eight output pixels per four pairs (pixels j and
    /// j + 4 of each eight share a pair, so the packs come out in order); `None` where a run is
    /// longer than four pixels or the row shorter than one window. Windows near the row's end
    /// start earlier (the shuffle shifted to match), so no load passes the row.
    pub(super) fn plan(in_w: usize, spans: &[Span]) -> Option<Vec<Pair>> {
        let len = in_w * 3;
        if len < 16 || spans.iter().any(|sp| sp.n > 4) {
            return None;
        }
        let px = |i: usize| -> (usize, [u8; 16], i32) {
            match spans.get(i) {
                None => (0, [0x80; 16], 0),
                Some(sp) => {
                    let start = sp.start as usize * 3;
                    let off = start.min(len - 16);
                    let sh = start - off;
                    let n = sp.n as usize;
                    let mask = std::array::from_fn(|b| if b < 12 && b % 4 < n { (sh + 3 * (b % 4) + b / 4) as u8 } else { 0x80 });
                    (off, mask, sp.k as i32)
                }
            }
        };
        let mut v = Vec::with_capacity(spans.len().div_ceil(8) * 4);
        for g in 0..spans.len().div_ceil(8) {
            for j in 0..4 {
                let (a, b) = (px(8 * g + j), px(8 * g + j + 4));
                let mut mask = [0u8; 32];
                mask[..16].copy_from_slice(&a.1);
                mask[16..].copy_from_slice(&b.1);
                v.push(Pair { off: [a.0, b.0], mask, k: [a.2, a.2, a.2, a.2, b.2, b.2, b.2, b.2] });
            }
        }
        Some(v)
    }

    /// Bytes [`row3`] may write: whole groups of eight pixels, plus 4.
    pub(super) fn row_bytes(plan: &[Pair]) -> usize {
        plan.len() / 4 * 24 + 4
    }

    /// One RGB row through its plan: runs summed by two multiply-adds with ones, times k,
    /// rounded, packed. Writes [`row_bytes`] bytes from the start of `out`: past the row's
    /// pixels it writes garbage, which the caller overwrites (the next row) or ignores.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row3(src: &[u8], plan: &[Pair], out: &mut [u8]) {
        assert!(out.len() >= row_bytes(plan));
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
        let compact = _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1);
        let sp = src.as_ptr();
        for (g, p) in plan.chunks_exact(4).enumerate() {
            let v: [__m256i; 4] = std::array::from_fn(|j| {
                let pr = &p[j];
                debug_assert!(pr.off[0] + 16 <= src.len() && pr.off[1] + 16 <= src.len());
                let x = _mm256_loadu2_m128i(sp.add(pr.off[1]) as *const __m128i, sp.add(pr.off[0]) as *const __m128i);
                let x = _mm256_shuffle_epi8(x, _mm256_loadu_si256(pr.mask.as_ptr() as *const __m256i));
                let sum = _mm256_madd_epi16(_mm256_maddubs_epi16(x, ones8), ones16);
                let k = _mm256_loadu_si256(pr.k.as_ptr() as *const __m256i);
                _mm256_srli_epi32::<{ PRECISION_BITS as i32 }>(_mm256_add_epi32(_mm256_mullo_epi32(sum, k), half))
            });
            // [p0 p1 | p4 p5], [p2 p3 | p6 p7] → bytes [p0..p3 | p4..p7] → 12 + 12 bytes.
            let o = _mm256_packus_epi16(_mm256_packus_epi32(v[0], v[1]), _mm256_packus_epi32(v[2], v[3]));
            let o = _mm256_shuffle_epi8(o, compact);
            let d = out.as_mut_ptr().add(24 * g);
            _mm_storeu_si128(d as *mut __m128i, _mm256_castsi256_si128(o));
            _mm_storeu_si128(d.add(12) as *mut __m128i, _mm256_extracti128_si256::<1>(o));
        }
    }
}

/// Both BOX passes of an RGB image in one sweep, where every run is short: the horizontal
/// pass's rounded bytes stay in u16 lanes, are summed over the vertical run there and rounded
/// again, so the intermediate image is never packed, stored and reloaded, and both roundings
/// (Pillow's two, in its order) are [`BOX_MULHI`] multiply-highs on sixteen lanes.
#[cfg(target_arch = "x86_64")]
mod box_hv_avx2 {
    use super::{Span, BOX_MULHI};
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;
    use crate::simd::mulhi_u16;

    /// Four output pixels of a row, two per 128-bit half, from 16-byte windows `a` and `b` per
    /// half, by shuffles `ma`/`mb` and the run length's [`BOX_MULHI`] constants `off`/`m` per u16
    /// lane. Paired ([`Plan::paired`], runs up to three pixels): both pixels of a half come
    /// from its windows, `ma` putting each channel's first two run bytes in its u16 lane (lanes
    /// 0–5) and `mb` the third. Unpaired (runs up to four): window `a` gives one pixel and `b`
    /// the other, each channel's run in its own 4-byte group (u32 lanes 0–2 of each).
    pub(super) struct Quad {
        a: [usize; 2],
        b: [usize; 2],
        ma: [u8; 32],
        mb: [u8; 32],
        off: [u16; 16],
        m: [u16; 16],
    }

    /// The horizontal half of the fused passes along one axis: two quads per eight output pixels
    /// (pixels 0, 1 | 4, 5 in the first, 2, 3 | 6, 7 in the second, so the packs come out in
    /// order).
    pub(super) struct Plan {
        quads: Vec<Quad>,
        /// Two pixels per window (half the work where the runs are short enough to allow it).
        pub(super) paired: bool,
    }

    /// The constants of a run of `sp.n` pixels, where [`BOX_MULHI`] has them for its weight.
    pub(super) fn mulhi(sp: &Span) -> Option<(u16, u16)> {
        BOX_MULHI.get(sp.n as usize).filter(|&&(_, m, k)| m != 0 && k == sp.k).map(|&(off, m, _)| (off, m))
    }

    /// The plan of a row `in_w` pixels wide: paired where every two pixels of a half fit their
    /// windows, else unpaired; `None` where a run is longer than four pixels or has no
    /// multiply-high, or the row is shorter than one window. Windows near the row's end start
    /// earlier, so no load passes the row.
    pub(super) fn plan(in_w: usize, spans: &[Span]) -> Option<Plan> {
        let len = in_w * 3;
        if len < 16 || spans.iter().any(|sp| sp.n > 4 || mulhi(sp).is_none()) {
            return None;
        }
        let groups = spans.len().div_ceil(8);
        let mut quads = Vec::with_capacity(groups * 2);
        let paired = (|| {
            for g in 0..groups {
                for j in [0, 2] {
                    let halves = [8 * g + j, 8 * g + j + 4].map(|p| pair(len, [spans.get(p), spans.get(p + 1)]));
                    let [(a0, b0, ma0, mb0, c0), (a1, b1, ma1, mb1, c1)] = [halves[0]?, halves[1]?];
                    let lanes = |f: fn(&(u16, u16)) -> u16| std::array::from_fn(|l| if l % 8 < 6 { f(&[c0, c1][l / 8][l % 8 / 3]) } else { 0 });
                    quads.push(Quad { a: [a0, a1], b: [b0, b1], ma: cat(&ma0, &ma1), mb: cat(&mb0, &mb1), off: lanes(|t| t.0), m: lanes(|t| t.1) });
                }
            }
            Some(())
        })()
        .is_some();
        if !paired {
            quads.clear();
            for g in 0..groups {
                for j in [0, 2] {
                    let [p, q, r, t] = [8 * g + j, 8 * g + j + 1, 8 * g + j + 4, 8 * g + j + 5].map(|i| single(len, spans.get(i)));
                    let lanes = |f: fn(&Single) -> u16| std::array::from_fn(|l| if l % 4 == 3 { 0 } else { f([&p, &q, &r, &t][l / 4]) });
                    quads.push(Quad { a: [p.0, r.0], b: [q.0, t.0], ma: cat(&p.1, &r.1), mb: cat(&q.1, &t.1), off: lanes(|t| t.2 .0), m: lanes(|t| t.2 .1) });
                }
            }
        }
        Some(Plan { quads, paired })
    }

    fn cat(x: &[u8; 16], y: &[u8; 16]) -> [u8; 32] {
        std::array::from_fn(|i| if i < 16 { x[i] } else { y[i - 16] })
    }

    /// An unpaired pixel's window, shuffle and [`mulhi`] constants.
    type Single = (usize, [u8; 16], (u16, u16));

    /// One unpaired pixel's [`Single`] (a missing pixel gives zeros).
    fn single(len: usize, sp: Option<&Span>) -> Single {
        match sp {
            None => (0, [0x80; 16], (0, 0)),
            Some(sp) => {
                let start = sp.start as usize * 3;
                let off = start.min(len - 16);
                let (sh, n) = (start - off, sp.n as usize);
                let mask = std::array::from_fn(|b| if b < 12 && b % 4 < n { (sh + 3 * (b % 4) + b / 4) as u8 } else { 0x80 });
                (off, mask, mulhi(sp).unwrap())
            }
        }
    }

    /// Two paired pixels' windows a and b, shuffles and constants; `None` where a run is longer
    /// than three pixels or the bytes do not fit the windows.
    #[allow(clippy::type_complexity)]
    fn pair(len: usize, px: [Option<&Span>; 2]) -> Option<(usize, usize, [u8; 16], [u8; 16], [(u16, u16); 2])> {
        // Byte e of the run of pixel i's channel c, where the run has one.
        let at = |i: usize, c: usize, e: usize| px[i].filter(|sp| (e as u32) < sp.n).map(|sp| (sp.start as usize + e) * 3 + c);
        if px.iter().flatten().any(|sp| sp.n > 3) {
            return None;
        }
        let first = px[0].map_or(0, |sp| sp.start as usize * 3);
        let fits = |o: usize, es: &[usize]| (0..2).all(|i| (0..3).all(|c| es.iter().all(|&e| at(i, c, e).is_none_or(|b| (o..o + 16).contains(&b)))));
        let a = first.min(len - 16);
        let b = [a, (first + 6).min(len - 16)].into_iter().find(|&b| fits(b, &[2]))?;
        if !fits(a, &[0, 1]) {
            return None;
        }
        let mask = |o: usize, es: [usize; 2]| -> [u8; 16] {
            std::array::from_fn(|k| {
                let (l, e) = (k / 2, es[k % 2]);
                if l < 6 { at(l / 3, l % 3, e).map_or(0x80, |b| (b - o) as u8) } else { 0x80 }
            })
        };
        let consts = px.map(|sp| sp.map_or((0, 0), |sp| mulhi(sp).unwrap()));
        Some((a, b, mask(a, [0, 1]), mask(b, [2, usize::MAX]), consts))
    }

    /// Bytes past an output row that [`run`] may write: the row's groups of eight pixels
    /// overrun it by up to 28 bytes.
    pub(super) const SLACK: usize = 32;

    /// The reduction of an RGB image `w` pixels wide through the horizontal plan and the
    /// vertical runs `ys` (each with [`mulhi`] constants), into `out`, rows of `ow` pixels plus
    /// [`SLACK`] bytes: every byte of every row is written, rows in order, so a row's overrun
    /// into the next is overwritten.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn run(src: &[u8], w: usize, ow: usize, plan: &Plan, ys: &[Span], out: &mut [MaybeUninit<u8>]) {
        if plan.paired {
            run_as::<true>(src, w, ow, &plan.quads, ys, out)
        } else {
            run_as::<false>(src, w, ow, &plan.quads, ys, out)
        }
    }


    /// One source row's rounded horizontal values for quad `q` (`row` at the row's start).
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn quad<const PAIRED: bool>(row: *const u8, q: &Quad) -> __m256i {
        let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
        let ld = |p: *const u8| _mm256_loadu_si256(p as *const __m256i);
        // SAFETY (caller): every window lies in the row.
        let va = _mm256_loadu2_m128i(row.add(q.a[1]) as *const __m128i, row.add(q.a[0]) as *const __m128i);
        // Paired pixels mostly share their windows.
        let vb = if q.a == q.b { va } else { _mm256_loadu2_m128i(row.add(q.b[1]) as *const __m128i, row.add(q.b[0]) as *const __m128i) };
        let sa = _mm256_maddubs_epi16(_mm256_shuffle_epi8(va, ld(q.ma.as_ptr())), ones8);
        let sb = _mm256_maddubs_epi16(_mm256_shuffle_epi8(vb, ld(q.mb.as_ptr())), ones8);
        let s = if PAIRED { _mm256_add_epi16(sa, sb) } else { _mm256_packus_epi32(_mm256_madd_epi16(sa, ones16), _mm256_madd_epi16(sb, ones16)) };
        mulhi_u16(_mm256_add_epi16(s, ld(q.off.as_ptr() as *const u8)), ld(q.m.as_ptr() as *const u8))
    }

    /// [`quad`] summed over the `N` rows from `rows`, `rs` bytes apart.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_sum<const PAIRED: bool, const N: usize>(rows: *const u8, rs: usize, q: &Quad) -> __m256i {
        let mut acc = quad::<PAIRED>(rows, q);
        for r in 1..N {
            acc = _mm256_add_epi16(acc, quad::<PAIRED>(rows.add(r * rs), q));
        }
        acc
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn rows_sum_n<const PAIRED: bool>(rows: *const u8, rs: usize, n: usize, q: &Quad) -> __m256i {
        let mut acc = _mm256_setzero_si256();
        for r in 0..n {
            acc = _mm256_add_epi16(acc, quad::<PAIRED>(rows.add(r * rs), q));
        }
        acc
    }

    #[target_feature(enable = "avx2")]
    unsafe fn run_as<const PAIRED: bool>(src: &[u8], w: usize, ow: usize, plan: &[Quad], ys: &[Span], out: &mut [MaybeUninit<u8>]) {
        let (rs, ro) = (w * 3, ow * 3);
        assert!(out.len() >= ys.len() * ro + SLACK && plan.len() / 2 * 24 <= ro + SLACK - 4);
        // The packed halves hold each pixel's three bytes at 0, 4, 8, 12 (unpaired) or at 0, 3,
        // 8, 11 (paired).
        let compact = if PAIRED {
            _mm256_setr_epi8(0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, -1, -1, -1, -1, 0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13, -1, -1, -1, -1)
        } else {
            _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1)
        };
        for (y, sp) in ys.iter().enumerate() {
            let (vo, vm) = mulhi(sp).expect("vertical runs with constants");
            let (vo, vm) = (_mm256_set1_epi16(vo as i16), _mm256_set1_epi16(vm as i16));
            let (r0, n) = (sp.start as usize, sp.n as usize);
            assert!(r0 + n <= src.len() / rs);
            let d = out.as_mut_ptr().add(y * ro) as *mut u8;
            let rows = src.as_ptr().add(r0 * rs);
            // The rows four output rows on, asked for now: a fresh input image comes from L3 or
            // memory, and the hardware prefetcher, seeing two to four rows read side by side in
            // short stretches, fetches them too late (the cold image then costs about twice
            // the arithmetic).
            if let Some(next) = ys.get(y + 4) {
                let (a, e) = (next.start as usize * rs, ((next.start + next.n) as usize * rs).min(src.len()));
                for o in (a..e).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(src.as_ptr().add(o) as *const i8);
                }
            }
            for (g, q) in plan.chunks_exact(2).enumerate() {
                // The common run lengths unrolled (no loop, no pointer per window and row).
                let acc = match n {
                    2 => [rows_sum::<PAIRED, 2>(rows, rs, &q[0]), rows_sum::<PAIRED, 2>(rows, rs, &q[1])],
                    3 => [rows_sum::<PAIRED, 3>(rows, rs, &q[0]), rows_sum::<PAIRED, 3>(rows, rs, &q[1])],
                    4 => [rows_sum::<PAIRED, 4>(rows, rs, &q[0]), rows_sum::<PAIRED, 4>(rows, rs, &q[1])],
                    _ => [rows_sum_n::<PAIRED>(rows, rs, n, &q[0]), rows_sum_n::<PAIRED>(rows, rs, n, &q[1])],
                };
                let v = |a: __m256i| mulhi_u16(_mm256_add_epi16(a, vo), vm);
                let o = _mm256_shuffle_epi8(_mm256_packus_epi16(v(acc[0]), v(acc[1])), compact);
                // SAFETY: 24g + 28 ≤ ro + SLACK (asserted), within `out` for every row y.
                _mm_storeu_si128(d.add(24 * g) as *mut __m128i, _mm256_castsi256_si128(o));
                _mm_storeu_si128(d.add(24 * g + 12) as *mut __m128i, _mm256_extracti128_si256::<1>(o));
            }
        }
    }
}

/// Vertical BOX pass: output row = rows `start..start+n` summed lane by lane, times k.
#[inline(always)]
fn box_col_generic(tmp: &[u8], rw: usize, spans: &[Span], out: &mut [u8], acc: &mut [u32]) {
    for (sp, orow) in spans.iter().zip(out.chunks_exact_mut(rw)) {
        acc.fill(0);
        for j in 0..sp.n as usize {
            let row = &tmp[(sp.start as usize + j) * rw..][..rw];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as u32;
            }
        }
        for (o, &a) in orow.iter_mut().zip(acc.iter()) {
            *o = box_round(a, sp.k);
        }
    }
}

/// Per run length n ≤ 8: (off, m, k) such that ((S + off)·m) >> 16 equals Pillow's rounded k·S,
/// k = fixed_weight(1/n), for every sum S ≤ 255·n, found by trying them all at compile time
/// (m = 0 where none was found): the rounding then runs on sixteen u16 lanes (`mulhi`) instead
/// of eight u32 lanes.
const BOX_MULHI: [(u16, u16, u32); 9] = {
    let mut t = [(0u16, 0u16, 0u32); 9];
    let mut n = 1u64;
    while n <= 8 {
        let k = ((1.0 / n as f64) * (1u64 << PRECISION_BITS) as f64 + 0.5) as u64;
        let base = 65536 / n;
        let mut dm = 0;
        'search: while dm < 3 {
            let m = base + dm - 1;
            let mut off = 0;
            while m <= 65535 && off <= n {
                let mut s = 0;
                while s <= 255 * n && ((s + off) * m) >> 16 == (s * k + (1 << (PRECISION_BITS - 1))) >> PRECISION_BITS {
                    s += 1;
                }
                if s > 255 * n {
                    t[n as usize] = (off as u16, m as u16, k as u32);
                    break 'search;
                }
                off += 1;
            }
            dm += 1;
        }
        n += 1;
    }
    t
};

/// [`box_col_generic`] sixteen bytes of the row at a time (the last sixteen overlapping the
/// ones before where the row is not a multiple of sixteen): u16 sums of the run's rows, then
/// the rounding in u16 lanes by [`BOX_MULHI`], or else in u32 lanes with the weight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn box_col_avx2(tmp: &[u8], rw: usize, spans: &[Span], out: &mut [u8], acc: &mut [u32]) {
    use std::arch::x86_64::*;
    let half = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    if rw < 16 {
        return box_col_generic(tmp, rw, spans, out, acc);
    }
    let starts = (0..rw / 16 * 16).step_by(16).chain((!rw.is_multiple_of(16)).then_some(rw - 16));
    for (sp, orow) in spans.iter().zip(out.chunks_exact_mut(rw)) {
        if sp.n > 257 {
            // u16 sums could overflow.
            box_col_generic(tmp, rw, std::slice::from_ref(sp), orow, acc);
            continue;
        }
        let fixed = BOX_MULHI.get(sp.n as usize).filter(|&&(_, m, k)| m != 0 && k == sp.k);
        let k = _mm256_set1_epi32(sp.k as i32);
        let rows = &tmp[sp.start as usize * rw..(sp.start + sp.n) as usize * rw];
        for j in starts.clone() {
            let mut sum = _mm256_setzero_si256();
            for r in 0..sp.n as usize {
                let v = _mm_loadu_si128(rows[r * rw + j..][..16].as_ptr() as *const __m128i);
                sum = _mm256_add_epi16(sum, _mm256_cvtepu8_epi16(v));
            }
            let b = if let Some(&(off, m, _)) = fixed {
                let r = _mm256_mulhi_epu16(_mm256_add_epi16(sum, _mm256_set1_epi16(off as i16)), _mm256_set1_epi16(m as i16));
                _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi16(r, r))
            } else {
                let f = |x: __m128i| _mm256_srli_epi32::<{ PRECISION_BITS as i32 }>(_mm256_add_epi32(_mm256_mullo_epi32(_mm256_cvtepu16_epi32(x), k), half));
                let (lo, hi) = (f(_mm256_castsi256_si128(sum)), f(_mm256_extracti128_si256::<1>(sum)));
                let p = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi32(lo, hi));
                _mm256_permute4x64_epi64::<0b00_00_10_00>(_mm256_packus_epi16(p, p))
            };
            _mm_storeu_si128(orow[j..][..16].as_mut_ptr() as *mut __m128i, _mm256_castsi256_si128(b));
        }
    }
}

fn box_col(tmp: &[u8], rw: usize, spans: &[Span], out: &mut [u8]) {
    let mut acc = vec![0u32; rw];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present (the same integer code, compiled for wider vectors).
        return unsafe { box_col_avx2(tmp, rw, spans, out, &mut acc) };
    }
    box_col_generic(tmp, rw, spans, out, &mut acc)
}

/// How one axis is resampled, computed once per (filter, input size, output size) and thread:
/// at 32×32 the float arithmetic of the weights and indices costs as much as the pixels.
struct Axis {
    /// BOX runs (empty for NEAREST).
    spans: Vec<Span>,
    /// Source index per output pixel, where every output is one input pixel (NEAREST, or BOX
    /// runs all one pixel long).
    idx: Option<Vec<usize>>,
    /// The byte shuffles of an RGB row map along this axis ([`remap_avx2`]).
    #[cfg(target_arch = "x86_64")]
    chunks: Option<Vec<remap_avx2::Chunk>>,
    /// The vector plan of an RGB row's BOX pass along this axis ([`box_avx2`]).
    #[cfg(target_arch = "x86_64")]
    rows3: Option<Vec<box_avx2::Pair>>,
    /// The horizontal plan of the fused RGB BOX passes along this axis ([`box_hv_avx2`]).
    #[cfg(target_arch = "x86_64")]
    hv3: Option<box_hv_avx2::Plan>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Filter {
    Box,
    Nearest,
}

fn axis(f: Filter, n: usize, m: usize) -> std::rc::Rc<Axis> {
    use std::{cell::RefCell, collections::HashMap, rc::Rc};
    thread_local! {
        static PLANS: RefCell<HashMap<(Filter, usize, usize), Rc<Axis>>> = RefCell::new(HashMap::new());
    }
    PLANS.with_borrow_mut(|plans| {
        if let Some(a) = plans.get(&(f, n, m)) {
            return a.clone();
        }
        let (spans, idx) = match f {
            Filter::Box => {
                let s = box_spans(n, m);
                let idx: Option<Vec<usize>> = s.iter().all(|sp| sp.n == 1).then(|| s.iter().map(|sp| sp.start as usize).collect());
                (s, idx)
            }
            // Pillow `resize(size, NEAREST)`: source index ⌊(o + 0.5)·in/out⌋.
            Filter::Nearest => (vec![], Some((0..m).map(|o| (((o as f64 + 0.5) * n as f64 / m as f64) as usize).min(n - 1)).collect::<Vec<usize>>())),
        };
        #[cfg(target_arch = "x86_64")]
        let chunks = idx.as_ref().filter(|_| std::arch::is_x86_feature_detected!("avx2")).and_then(|i| remap_avx2::chunks(i, n));
        #[cfg(target_arch = "x86_64")]
        let rows3 = (f == Filter::Box && std::arch::is_x86_feature_detected!("avx2")).then(|| box_avx2::plan(n, &spans)).flatten();
        #[cfg(target_arch = "x86_64")]
        let hv3 = (f == Filter::Box && std::arch::is_x86_feature_detected!("avx2")).then(|| box_hv_avx2::plan(n, &spans)).flatten();
        let a = Rc::new(Axis {
            spans,
            idx,
            #[cfg(target_arch = "x86_64")]
            chunks,
            #[cfg(target_arch = "x86_64")]
            rows3,
            #[cfg(target_arch = "x86_64")]
            hv3,
        });
        if plans.len() >= 64 {
            plans.clear();
        }
        plans.insert((f, n, m), a.clone());
        a
    })
}

thread_local! {
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Pillow `Image.resize(size, BOX)` of a uint8 HWC image: horizontal pass then vertical, each
/// rounding to uint8, as `ImagingResample` does (32-bit fixed point, as Pillow's `INT32`).
pub(crate) fn pil_resize_box(src: &[u8], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<u8> {
    let xs = (ow != w).then(|| axis(Filter::Box, w, ow));
    let ys = (oh != h).then(|| axis(Filter::Box, h, oh));
    // A pass whose runs are all one pixel long copies pixels: a nearest-neighbour map.
    let single = |s: &Option<std::rc::Rc<Axis>>| s.as_ref().is_none_or(|s| s.idx.is_some());
    if single(&xs) && single(&ys) {
        let ident;
        let yi: &[usize] = match &ys {
            Some(a) => a.idx.as_ref().unwrap(),
            None => {
                ident = (0..h).collect::<Vec<_>>();
                &ident
            }
        };
        return match &xs {
            Some(a) => remap(src, w, c, yi, a),
            None => remap(src, w, c, yi, &axis(Filter::Nearest, w, w)),
        };
    }
    #[cfg(target_arch = "x86_64")]
    if let (Some(xa), Some(ya), 3) = (&xs, &ys, c) {
        if let Some(plan) = xa.hv3.as_ref().filter(|_| ya.spans.iter().all(|sp| box_hv_avx2::mulhi(sp).is_some())) {
            let n = oh * ow * 3;
            let mut out = Vec::with_capacity(n + box_hv_avx2::SLACK);
            // SAFETY: plans exist only where AVX2 is present; this one was made for w pixels.
            // `run` writes every byte of every row (no zeroing first), so the n are initialised.
            unsafe {
                box_hv_avx2::run(src, w, ow, plan, &ya.spans, &mut out.spare_capacity_mut()[..n + box_hv_avx2::SLACK]);
                out.set_len(n);
            }
            return out;
        }
    }
    let tmp = match &xs {
        Some(xs) => {
            // The intermediate image in a per-thread buffer (every byte is written before use).
            let mut t = SCRATCH.take();
            // Slack for the vector rows' overrun past the last row.
            if t.len() < h * ow * c + 32 {
                t.resize(h * ow * c + 32, 0);
            }
            #[allow(unused_mut)]
            let mut done = false;
            #[cfg(target_arch = "x86_64")]
            if let Some(plan) = xs.rows3.as_ref().filter(|p| c == 3 && box_avx2::row_bytes(p) <= ow * 3 + 32) {
                for (y, srow) in src.chunks_exact(w * 3).enumerate() {
                    // SAFETY: plans exist only where AVX2 is present; rows are written in order,
                    // so a row's overrun into the next is overwritten.
                    unsafe { box_avx2::row3(srow, plan, &mut t[y * ow * 3..]) };
                }
                done = true;
            }
            if !done {
                for (srow, trow) in src.chunks_exact(w * c).zip(t.chunks_exact_mut(ow * c)) {
                    box_row(srow, c, &xs.spans, trow);
                }
            }
            std::borrow::Cow::Owned(t)
        }
        None => std::borrow::Cow::Borrowed(src),
    };
    let out = match &ys {
        Some(ys) => {
            let mut t = vec![0u8; oh * ow * c];
            box_col(&tmp, ow * c, &ys.spans, &mut t);
            t
        }
        None => tmp[..h * ow * c].to_vec(),
    };
    if let std::borrow::Cow::Owned(t) = tmp {
        SCRATCH.set(t);
    }
    out
}

/// out[y][x] = src[ys[y]][xs[x]] for an image `w` pixels wide; an output row whose source row
/// is the previous one's is a copy of that output row.
fn remap(src: &[u8], w: usize, c: usize, ys: &[usize], xa: &Axis) -> Vec<u8> {
    let xs = xa.idx.as_deref().expect("a one-pixel map");
    let rw = xs.len() * c;
    // Filled row by row (no zeroing first: at 224×224 that memset costs as much as the map).
    // 32 bytes of slack for the vector rows' stores past the last row.
    let mut out = Vec::with_capacity(ys.len() * rw + 32);
    #[cfg(target_arch = "x86_64")]
    let chunks = xa.chunks.as_ref().filter(|_| c == 3);
    let mut prev = usize::MAX;
    for (y, &sy) in ys.iter().enumerate() {
        if sy == prev {
            out.extend_from_within((y - 1) * rw..y * rw);
            continue;
        }
        prev = sy;
        let srow = &src[sy * w * c..(sy + 1) * w * c];
        #[cfg(target_arch = "x86_64")]
        if let Some(ch) = chunks {
            let spare = &mut out.spare_capacity_mut()[..rw + 32];
            // SAFETY: chunks exist only where AVX2 is present and were made for this axis (w
            // source pixels); row3 writes all rw bytes of `spare` and garbage only within its
            // 32 further bytes, so the rw bytes are initialised when the length grows.
            unsafe {
                remap_avx2::row3(srow.as_ptr(), ch, spare.as_mut_ptr() as *mut u8);
                out.set_len(out.len() + rw);
            }
            continue;
        }
        if c == 3 {
            out.extend(xs.iter().flat_map(|&sx| [srow[sx * 3], srow[sx * 3 + 1], srow[sx * 3 + 2]]));
        } else {
            out.extend(xs.iter().map(|&sx| srow[sx]));
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod remap_avx2 {
    use std::arch::x86_64::*;

    /// Up to 32 output bytes per step: the 16-byte window of the source row they come from
    /// (both 128-bit halves of one shuffle read the same window, so an enlargement fills 32
    /// bytes from one load), the bytes' place in the output row and the shuffle.
    pub(super) struct Chunk {
        off: usize,
        out: usize,
        mask: [u8; 32],
    }

    /// Chunks of an output row of `xs.len()` RGB pixels read from a source row of `n` pixels,
    /// in order; each takes the output bytes from where the last one ended while their sources
    /// fit its window (at least one byte), and its 32-byte store writes garbage past that which
    /// the next chunk, the next row or the output's 32 bytes of slack take. `None` where the
    /// source row is under 16 bytes.
    pub(super) fn chunks(xs: &[usize], n: usize) -> Option<Vec<Chunk>> {
        let (len, row) = (xs.len() * 3, n * 3);
        if row < 16 {
            return None;
        }
        let at = |o: usize| xs[o / 3] * 3 + o % 3;
        let mut v = Vec::new();
        let mut start = 0;
        while start < len {
            let off = at(start).min(row - 16);
            let mut end = start + 1;
            while end < len && end < start + 32 && (off..off + 16).contains(&at(end)) {
                end += 1;
            }
            let mask = std::array::from_fn(|i| if start + i < end { (at(start + i) - off) as u8 } else { 0x80 });
            v.push(Chunk { off, out: start, mask });
            start = end;
        }
        Some(v)
    }

    /// One output row at `out` (with 32 writable bytes past its end) from the source row at
    /// `row`, `n`·3 bytes long for the `n` the chunks were made for.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn row3(row: *const u8, ch: &[Chunk], out: *mut u8) {
        for c in ch {
            // SAFETY: off + 16 ≤ the source row's length; out + 32 ≤ row length + 32.
            let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(row.add(c.off) as *const __m128i));
            let o = _mm256_shuffle_epi8(v, _mm256_loadu_si256(c.mask.as_ptr() as *const __m256i));
            _mm256_storeu_si256(out.add(c.out) as *mut __m256i, o);
        }
    }
}

/// Pillow `resize(size, NEAREST)`.
fn pil_resize_nearest(src: &[u8], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<u8> {
    remap(src, w, c, axis(Filter::Nearest, h, oh).idx.as_ref().unwrap(), &axis(Filter::Nearest, w, ow))
}

/// The input as the uint8 image PIL would see (the reference's pixelate/jpeg get a PIL image).
pub(crate) fn as_u8(x: &FImage) -> Vec<u8> {
    crate::to_u8(x)
}

/// Pillow BOX down by the severity's factor, then back up (NEAREST for imagecorruptions, BOX for
/// the CIFAR/Tiny scripts), on uint8 as Pillow works.
pub(crate) fn pixelate_u8(u: &[u8], h: usize, w: usize, ch: usize, severity: usize, p: ParamSet) -> Result<Vec<u8>> {
    let c = pixelate_c(severity, p);
    let (sh, sw) = ((h as f64 * c) as usize, (w as f64 * c) as usize);
    if sh == 0 || sw == 0 {
        return Err(Error::TooSmall { corruption: "pixelate", h, w, why: format!("downscaling by {c} leaves no pixel") });
    }
    #[cfg(target_arch = "x86_64")]
    if ch == 3 {
        let up = if p == ParamSet::ImageNet { Filter::Nearest } else { Filter::Box };
        if let Some(plan) = pair_plan(h, w, sh, sw, up).as_ref() {
            // SAFETY: plans exist only where AVX2 is present; the plan was made for h×w RGB.
            return Ok(unsafe { pair_avx2::run(u, w, plan) });
        }
    }
    let small = pil_resize_box(u, h, w, ch, sh, sw);
    Ok(match p {
        ParamSet::ImageNet => pil_resize_nearest(&small, sh, sw, ch, h, w),
        _ => pil_resize_box(&small, sh, sw, ch, h, w),
    })
}

/// pixelate's two resizes of an RGB image in one pass, where every BOX run of the reduction is
/// one or two pixels long (CIFAR sizes): Pillow's rounded k·Σ is then the pixel itself or the
/// rounded-up mean of two, which is `pavgb`, and the enlargement only copies pixels. So output
/// pixel (y, x) = avg(avg(s[ya][xa], s[ya][xb]), avg(s[yb][xa], s[yb][xb])), the inner averages
/// being the horizontal pass's bytes and the outer one the vertical pass's, in Pillow's order,
/// with (ya, yb) and (xa, xb) the first and last source pixel of the run the enlargement reads.
#[cfg(target_arch = "x86_64")]
struct PairPlan {
    /// Per output row: the two source rows (output rows are as wide as source rows).
    rows: Vec<(usize, usize)>,
    /// The byte shuffles of one output row ([`pair_avx2::chunks`]).
    chunks: Vec<pair_avx2::Chunk>,
}

/// The cached [`PairPlan`] of an h×w RGB image reduced to sh×sw and enlarged back with `up`;
/// `None` where a run is longer than two pixels, the image is narrower than six pixels or the
/// CPU lacks AVX2.
#[cfg(target_arch = "x86_64")]
fn pair_plan(h: usize, w: usize, sh: usize, sw: usize, up: Filter) -> std::rc::Rc<Option<PairPlan>> {
    use std::{cell::RefCell, rc::Rc};
    type Key = (usize, usize, usize, usize, Filter);
    thread_local! {
        static PLANS: RefCell<Vec<(Key, Rc<Option<PairPlan>>)>> = const { RefCell::new(Vec::new()) };
    }
    let key = (h, w, sh, sw, up);
    PLANS.with_borrow_mut(|plans| {
        if let Some((_, p)) = plans.iter().find(|(k, _)| *k == key) {
            return p.clone();
        }
        let make = || -> Option<PairPlan> {
            if !std::arch::is_x86_feature_detected!("avx2") || sh > h || sw > w {
                return None;
            }
            // Source pixel range (first, last) per output index along one axis.
            let runs = |n: usize, m: usize| -> Option<Vec<(usize, usize)>> {
                let down = if m == n { (0..n).map(|i| (i, i)).collect() } else { box_spans(n, m).iter().map(|s| (s.start as usize, (s.start + s.n) as usize)).collect::<Vec<_>>() };
                if down.iter().any(|&(a, e)| e <= a || e - a > 2) {
                    return None;
                }
                let back: Vec<usize> = if m == n {
                    (0..n).collect()
                } else {
                    match up {
                        Filter::Nearest => axis(Filter::Nearest, m, n).idx.clone()?,
                        Filter::Box => axis(Filter::Box, m, n).idx.clone()?,
                    }
                };
                Some(back.iter().map(|&i| (down[i].0, down[i].1 - 1)).collect())
            };
            let (ys, xs) = (runs(h, sh)?, runs(w, sw)?);
            Some(PairPlan { rows: ys, chunks: pair_avx2::chunks(&xs, w * 3)? })
        };
        let p = Rc::new(make());
        if plans.len() >= 16 {
            plans.clear();
        }
        plans.push((key, p.clone()));
        p
    })
}

#[cfg(target_arch = "x86_64")]
mod pair_avx2 {
    use super::PairPlan;
    use std::arch::x86_64::*;

    /// Sixteen output bytes of a row at `out`, from the 16-byte window of a source row at `off`:
    /// shuffles `a` and `b` pick each byte's first and last run pixel (they are averaged).
    pub(super) struct Chunk {
        off: usize,
        out: usize,
        a: [u8; 16],
        b: [u8; 16],
    }

    /// Chunks covering an output row of `xs.len()` pixels from a source row `row` bytes long, in
    /// order; each ends where its window ends, the next one (or the next row, or 16 bytes of
    /// slack past the image) overwriting the bytes its store writes past that. `None` where the
    /// source row is under 16 bytes.
    pub(super) fn chunks(xs: &[(usize, usize)], row: usize) -> Option<Vec<Chunk>> {
        let len = xs.len() * 3;
        if row < 16 {
            return None;
        }
        let (sa, sb) = (|o: usize| xs[o / 3].0 * 3 + o % 3, |o: usize| xs[o / 3].1 * 3 + o % 3);
        let mut v = Vec::new();
        let mut done = 0;
        while done < len {
            let start = done;
            let off = sa(start).min(row - 16);
            let mut end = start;
            while end < start + 16 && sa(end) >= off && sb(end) < off + 16 {
                end += 1;
                if end == len {
                    break;
                }
            }
            if end == start {
                return None;
            }
            let mask = |f: &dyn Fn(usize) -> usize| std::array::from_fn(|i| if start + i < end { (f(start + i) - off) as u8 } else { 0x80 });
            v.push(Chunk { off, out: start, a: mask(&sa), b: mask(&sb) });
            done = end;
        }
        Some(v)
    }

    /// The image through the plan (source rows `w`·3 bytes).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn run(src: &[u8], w: usize, plan: &PairPlan) -> Vec<u8> {
        let (rs, ro) = (w * 3, w * 3);
        let mut out: Vec<u8> = Vec::with_capacity(plan.rows.len() * ro + 16);
        let op = out.as_mut_ptr();
        let mut prev = (usize::MAX, usize::MAX);
        for (y, &(ya, yb)) in plan.rows.iter().enumerate() {
            assert!(yb < src.len() / rs);
            if (ya, yb) == prev {
                // SAFETY: row y − 1 was written; rows do not overlap.
                std::ptr::copy_nonoverlapping(op.add((y - 1) * ro), op.add(y * ro), ro);
                continue;
            }
            prev = (ya, yb);
            let (pa, pb) = (src.as_ptr().add(ya * rs), src.as_ptr().add(yb * rs));
            for c in &plan.chunks {
                // SAFETY: off + 16 ≤ rs (chunks), rows ya, yb exist (asserted); the store starts in
                // output row y (out < ro) and ends within the 16 bytes of slack past the last row.
                let (va, vb) = (_mm_loadu_si128(pa.add(c.off) as *const __m128i), _mm_loadu_si128(pb.add(c.off) as *const __m128i));
                let (ma, mb) = (_mm_loadu_si128(c.a.as_ptr() as *const __m128i), _mm_loadu_si128(c.b.as_ptr() as *const __m128i));
                let ra = _mm_avg_epu8(_mm_shuffle_epi8(va, ma), _mm_shuffle_epi8(va, mb));
                let rb = _mm_avg_epu8(_mm_shuffle_epi8(vb, ma), _mm_shuffle_epi8(vb, mb));
                _mm_storeu_si128(op.add(y * ro + c.out) as *mut __m128i, _mm_avg_epu8(ra, rb));
            }
        }
        // SAFETY: every row was written in full (the chunks cover it).
        out.set_len(plan.rows.len() * ro);
        out
    }
}

pub(crate) fn jpeg_u8(u: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet) -> Vec<u8> {
    crate::jpeg::round_trip(u, h, w, c, jpeg_q(severity, p))
}

pub(crate) fn pixelate(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let (h, w, ch) = (x.h, x.w, x.c);
    let back = pixelate_u8(&as_u8(x), h, w, ch, severity, p)?;
    Ok(FImage { h, w, c: ch, data: back.into_iter().map(|v| v as f64).collect() })
}

pub(crate) fn jpeg_compression(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let out = crate::jpeg::round_trip(&as_u8(x), x.h, x.w, x.c, jpeg_q(severity, p));
    Ok(FImage { h: x.h, w: x.w, c: x.c, data: out.into_iter().map(|v| v as f64).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng};

    /// The straightforward per-weight form of Pillow's BOX resampling (every weight multiplied),
    /// which the run sums and the vector rows must reproduce byte for byte.
    fn pil_resize_box_ref(src: &[u8], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<u8> {
        let clip8 = |ss: i32| -> u8 { (ss >> PRECISION_BITS).clamp(0, 255) as u8 };
        let half: i32 = 1 << (PRECISION_BITS - 1);
        let mut tmp = std::borrow::Cow::Borrowed(src);
        let mut tw = w;
        if ow != w {
            let (k, flat) = box_coeffs_flat(w, ow);
            let mut t = vec![0u8; h * ow * c];
            for (srow, trow) in src.chunks_exact(w * c).zip(t.chunks_exact_mut(ow * c)) {
                for ((xmin, kr), o) in k.iter().zip(trow.chunks_exact_mut(c)) {
                    let kk = &flat[kr.clone()];
                    let s = &srow[xmin * c..(xmin + kk.len()) * c];
                    if c == 3 {
                        let (mut a, mut b, mut d) = (half, half, half);
                        for (px, &kv) in s.chunks_exact(3).zip(kk) {
                            a += px[0] as i32 * kv;
                            b += px[1] as i32 * kv;
                            d += px[2] as i32 * kv;
                        }
                        o[0] = clip8(a);
                        o[1] = clip8(b);
                        o[2] = clip8(d);
                    } else {
                        o[0] = clip8(s.iter().zip(kk).fold(half, |acc, (&v, &kv)| acc + v as i32 * kv));
                    }
                }
            }
            tmp = std::borrow::Cow::Owned(t);
            tw = ow;
        }
        if oh != h {
            let (k, flat) = box_coeffs_flat(h, oh);
            let rw = tw * c;
            let mut t = vec![0u8; oh * rw];
            let mut acc = vec![0i32; rw];
            for ((ymin, kr), orow) in k.iter().zip(t.chunks_exact_mut(rw)) {
                let kk = &flat[kr.clone()];
                acc.iter_mut().for_each(|a| *a = half);
                for (j, &kv) in kk.iter().enumerate() {
                    let row = &tmp[(ymin + j) * rw..(ymin + j + 1) * rw];
                    for (a, &v) in acc.iter_mut().zip(row) {
                        *a += v as i32 * kv;
                    }
                }
                for (o, &a) in orow.iter_mut().zip(&acc) {
                    *o = clip8(a);
                }
            }
            return t;
        }
        tmp.into_owned()
    }

    /// Wherever the fixed-point form is accepted, it gives the formula's byte for every value;
    /// it is accepted for nearly all means (the table is the exception).
    #[test]
    fn contrast_affine_matches_the_formula() {
        let mut rejected = 0;
        let mut tried = 0;
        for k in [0.75, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05] {
            for n in [1024usize, 50176] {
                for s in (0..=255 * n).step_by(n / 16 + 1).chain([0, 255 * n, 128 * n, 127 * n + n / 2]) {
                    let m = s as f64 / 255.0 / n as f64;
                    tried += 1;
                    match contrast_affine(m, k) {
                        Some((a, b)) => {
                            for v in 0..256 {
                                assert_eq!(((v * a + b) >> CONTRAST_BITS).min(255) as u8, contrast_value(v as u8, m, k), "k {k} m {m} v {v}");
                            }
                        }
                        None => rejected += 1,
                    }
                }
            }
        }
        assert!(rejected * 20 < tried, "{rejected} of {tried} rejected");
    }

    /// The uint8 contrast (vector passes and scalar tails) against the per-value formula, RGB and
    /// grey, at sizes that leave tails, including flat images whose means sit on ties.
    #[test]
    fn contrast_u8_matches_the_formula() {
        let mut rng = crate::Rng::seed_from_u64(9);
        for (len, c) in [(32 * 32, 3), (224 * 224, 3), (17 * 5, 3), (31, 1), (28 * 28, 1), (97 * 150, 3), (3000 * 100, 3)] {
            for flat in [None, Some(0u8), Some(255), Some(128), Some(51)] {
                let img: Vec<u8> = (0..len * c).map(|_| flat.unwrap_or_else(|| rng.gen())).collect();
                for sev in 1..=5 {
                    for p in [ParamSet::Cifar10, ParamSet::ImageNet] {
                        let k = contrast_c(sev, p);
                        let means: Vec<f64> = (0..c).map(|ch| img.iter().skip(ch).step_by(c).map(|&v| v as u64).sum::<u64>() as f64 / 255.0 / len as f64).collect();
                        let want: Vec<u8> = img.iter().enumerate().map(|(i, &v)| contrast_value(v, means[i % c], k)).collect();
                        assert!(contrast_u8(&img, c, sev, p) == want, "{len}x{c} {flat:?} s{sev} {p:?}");
                    }
                }
            }
        }
    }

    /// pixelate's one-pass form (runs of one or two pixels) gives the two resizes' bytes, and
    /// CIFAR-sized images take it.
    #[test]
    fn pixelate_pairs_match_the_two_resizes() {
        let mut rng = crate::Rng::seed_from_u64(10);
        for (h, w) in [(32, 32), (64, 64), (224, 224), (37, 50), (6, 6), (5, 17), (17, 5), (100, 9), (33, 31)] {
            let img: Vec<u8> = (0..h * w * 3).map(|_| rng.gen()).collect();
            for p in [ParamSet::Cifar10, ParamSet::TinyImageNet, ParamSet::ImageNet] {
                for sev in 1..=5 {
                    let c = pixelate_c(sev, p);
                    let (sh, sw) = ((h as f64 * c) as usize, (w as f64 * c) as usize);
                    if sh == 0 || sw == 0 {
                        continue;
                    }
                    let small = pil_resize_box(&img, h, w, 3, sh, sw);
                    let want = match p {
                        ParamSet::ImageNet => pil_resize_nearest(&small, sh, sw, 3, h, w),
                        _ => pil_resize_box(&small, sh, sw, 3, h, w),
                    };
                    assert!(pixelate_u8(&img, h, w, 3, sev, p).unwrap() == want, "{h}x{w} s{sev} {p:?}");
                    #[cfg(target_arch = "x86_64")]
                    if (h, w, p) == (32, 32, ParamSet::Cifar10) && std::arch::is_x86_feature_detected!("avx2") {
                        assert!(pair_plan(h, w, sh, sw, Filter::Box).is_some(), "s{sev}");
                    }
                }
            }
        }
    }

    /// The uint8 HSV edits give the scalar float code's bytes on every one of the 2²⁴ colours
    /// (their output depends only on the colour), for edits that reach each clip: brightness
    /// saturating v, saturate pushing s past 1 and lifting greys, saturate shrinking s.
    #[test]
    fn hsv_edits_match_the_scalar_code_on_every_colour() {
        let f = crate::cast_u8;
        for e in [Edit::Brightness(brightness_c(5, ParamSet::ImageNet)), Edit::Saturate(2.5, 0.2), Edit::Saturate(0.1, 0.0)] {
            let fe = |h, s, v| e.apply(h, s, v);
            for r in 0..256usize {
                let block: Vec<u8> = (0..65536usize).flat_map(|gb| [r as u8, (gb >> 8) as u8, gb as u8]).collect();
                let got = hsv_edit_u8(&block, 3, e);
                for (i, o) in block.chunks_exact(3).zip(got.chunks_exact(3)) {
                    let (a, b, c) = hsv_px01(crate::UNIT_LUT[i[0] as usize], crate::UNIT_LUT[i[1] as usize], crate::UNIT_LUT[i[2] as usize], &fe);
                    assert!(o == [f(a), f(b), f(c)], "{i:?}: {o:?} vs {:?}", [f(a), f(b), f(c)]);
                }
            }
        }
    }

    #[test]
    fn box_runs_match_the_per_weight_form() {
        let mut rng = crate::Rng::seed_from_u64(7);
        for (h, w) in [(32, 32), (224, 224), (1, 1), (5, 17), (64, 64), (97, 150), (3, 40)] {
            for c in [1, 3] {
                let img: Vec<u8> = (0..h * w * c).map(|_| rng.gen()).collect();
                for f in [0.95, 0.85, 0.65, 0.6, 0.5, 0.4, 0.25, 0.13, 1.3, 2.0, 3.7] {
                    let (oh, ow) = (((h as f64 * f) as usize).max(1), ((w as f64 * f) as usize).max(1));
                    for (oh, ow) in [(oh, ow), (h, ow), (oh, w)] {
                        let a = pil_resize_box(&img, h, w, c, oh, ow);
                        assert!(a == pil_resize_box_ref(&img, h, w, c, oh, ow), "{h}x{w}x{c} -> {oh}x{ow}");
                    }
                }
            }
        }
        // The ImageNet pixelate reductions at 224 (above) take the fused passes, s3's paired.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            for (m, paired) in [(89, true), (56, false)] {
                assert_eq!(axis(Filter::Box, 224, m).hv3.as_ref().map(|p| p.paired), Some(paired), "224 -> {m}");
            }
        }
    }

    #[test]
    fn nearest_matches_the_index_formula() {
        let mut rng = crate::Rng::seed_from_u64(8);
        for (h, w, oh, ow) in [(89, 89, 224, 224), (56, 56, 224, 224), (1, 1, 3, 7), (5, 17, 13, 40), (40, 30, 20, 10), (37, 24, 150, 97)] {
            for c in [1, 3] {
                let img: Vec<u8> = (0..h * w * c).map(|_| rng.gen()).collect();
                let out = pil_resize_nearest(&img, h, w, c, oh, ow);
                for y in 0..oh {
                    for x in 0..ow {
                        let (sy, sx) = ((((y as f64 + 0.5) * h as f64 / oh as f64) as usize).min(h - 1), (((x as f64 + 0.5) * w as f64 / ow as f64) as usize).min(w - 1));
                        assert_eq!(&out[(y * ow + x) * c..][..c], &img[(sy * w + sx) * c..][..c], "{h}x{w}x{c} -> {oh}x{ow} at {y},{x}");
                    }
                }
            }
        }
    }
}
