//! JPEG compress → decompress without the bitstream: the lossy steps of libjpeg-turbo's default
//! path as Pillow drives it (baseline, 4:2:0, IJG tables scaled by quality, `JDCT_ISLOW` integer
//! DCTs, h2v2 downsampling with alternating bias, fancy (triangle) upsampling, fixed-point colour
//! conversion). Entropy coding is lossless, so skipping it changes no pixel.
//!
//! IJG libjpeg 9 (the CIFAR-10-C era Pillow) differs: it downsamples chroma by a 16×16 forward
//! DCT and upsamples by a 16×16 inverse DCT ("DCT scaling"); grey images take the same path in
//! both libraries.

const STD_LUM: [u32; 64] = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62, 18, 22,
    37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
];
const STD_CHR: [u32; 64] = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99, 99, 99,
    99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
];

/// `jpeg_set_quality` with `force_baseline`: tables in natural (row-major) order.
fn quant_table(base: &[u32; 64], quality: u32) -> [i32; 64] {
    let q = quality.clamp(1, 100);
    let scale = if q < 50 { 5000 / q } else { 200 - 2 * q };
    let mut t = [0i32; 64];
    for i in 0..64 {
        t[i] = ((base[i] * scale + 50) / 100).clamp(1, 255) as i32;
    }
    t
}

const CONST_BITS: i32 = 13;
const PASS1_BITS: i32 = 2;
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

#[inline]
fn descale(x: i32, n: i32) -> i32 {
    (x + (1 << (n - 1))) >> n
}

/// The odd part that islow's forward and inverse transforms share (jfdctint.c / jidctint.c,
/// scaled by 2^CONST_BITS): for inputs (a, b, c, d) it returns
/// (a·k₀ + z1 + z3, b·k₁ + z2 + z4, c·k₂ + z2 + z3, d·k₃ + z1 + z4).
fn odd_rotation(a: i32, b: i32, c: i32, d: i32) -> [i32; 4] {
    let z1 = a + d;
    let z2 = b + c;
    let z3 = a + c;
    let z4 = b + d;
    let z5 = (z3 + z4) * FIX_1_175875602;
    let z1 = z1 * (-FIX_0_899976223);
    let z2 = z2 * (-FIX_2_562915447);
    let z3 = z3 * (-FIX_1_961570560) + z5;
    let z4 = z4 * (-FIX_0_390180644) + z5;
    [a * FIX_0_298631336 + z1 + z3, b * FIX_2_053119869 + z2 + z4, c * FIX_3_072711026 + z2 + z3, d * FIX_1_501321110 + z1 + z4]
}

/// One 1-D pass of `jpeg_fdct_islow`'s butterfly (both passes share it): the eight outputs in
/// natural order, 0 and 4 unscaled, the others scaled up by 2^CONST_BITS (each pass rescales).
fn fdct_1d(x: [i32; 8]) -> [i32; 8] {
    let tmp0 = x[0] + x[7];
    let tmp7 = x[0] - x[7];
    let tmp1 = x[1] + x[6];
    let tmp6 = x[1] - x[6];
    let tmp2 = x[2] + x[5];
    let tmp5 = x[2] - x[5];
    let tmp3 = x[3] + x[4];
    let tmp4 = x[3] - x[4];
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    let z1 = (tmp12 + tmp13) * FIX_0_541196100;
    let (o2, o6) = (z1 + tmp13 * FIX_0_765366865, z1 + tmp12 * (-FIX_1_847759065));
    let [o7, o5, o3, o1] = odd_rotation(tmp4, tmp5, tmp6, tmp7);
    [tmp10 + tmp11, o1, o2, o3, tmp10 - tmp11, o5, o6, o7]
}

/// `jpeg_fdct_islow` (IJG 6b / libjpeg-turbo jfdctint.c); input already level-shifted.
fn fdct_islow(data: &mut [i32; 64]) {
    for r in 0..8 {
        let d = &mut data[r * 8..r * 8 + 8];
        let y = fdct_1d(d.try_into().unwrap());
        for (i, (o, v)) in d.iter_mut().zip(y).enumerate() {
            *o = if i % 4 == 0 { v << PASS1_BITS } else { descale(v, CONST_BITS - PASS1_BITS) };
        }
    }
    for c in 0..8 {
        let y = fdct_1d(std::array::from_fn(|i| data[i * 8 + c]));
        for (i, v) in y.into_iter().enumerate() {
            data[i * 8 + c] = if i % 4 == 0 { descale(v, PASS1_BITS) } else { descale(v, CONST_BITS + PASS1_BITS) };
        }
    }
}

/// One 1-D pass of `jpeg_idct_islow`'s butterfly (both passes share it): the eight outputs in
/// natural order, still scaled up by 2^CONST_BITS (the caller descales by its pass's shift).
fn idct_1d(x: [i32; 8]) -> [i32; 8] {
    let z2 = x[2];
    let z3 = x[6];
    let z1 = (z2 + z3) * FIX_0_541196100;
    let tmp2 = z1 + z3 * (-FIX_1_847759065);
    let tmp3 = z1 + z2 * FIX_0_765366865;
    let tmp0 = (x[0] + x[4]) << CONST_BITS;
    let tmp1 = (x[0] - x[4]) << CONST_BITS;
    let tmp10 = tmp0 + tmp3;
    let tmp13 = tmp0 - tmp3;
    let tmp11 = tmp1 + tmp2;
    let tmp12 = tmp1 - tmp2;
    let [t0, t1, t2, t3] = odd_rotation(x[7], x[5], x[3], x[1]);
    [tmp10 + t3, tmp11 + t2, tmp12 + t1, tmp13 + t0, tmp13 - t0, tmp12 - t1, tmp11 - t2, tmp10 - t3]
}

/// jidctint.c's range_limit: samples are centred on 128 and clamped; the table wraps at 1024
/// (RANGE_MASK), which only matters for corrupt data.
fn range_limit(v: i32) -> u8 {
    let v = v & 1023;
    let v = if v >= 512 { v - 1024 } else { v };
    (v + 128).clamp(0, 255) as u8
}

/// `jpeg_idct_islow`: dequantised coefficients in, 0..255 samples out (range-limited).
fn idct_islow(coef: &[i32; 64], out: &mut [u8; 64]) {
    let mut ws = [0i32; 64];
    for c in 0..8 {
        let col: [i32; 8] = std::array::from_fn(|i| coef[i * 8 + c]);
        if col[1..].iter().all(|&v| v == 0) {
            for i in 0..8 {
                ws[i * 8 + c] = col[0] << PASS1_BITS;
            }
            continue;
        }
        for (i, v) in idct_1d(col).into_iter().enumerate() {
            ws[i * 8 + c] = descale(v, CONST_BITS - PASS1_BITS);
        }
    }
    for r in 0..8 {
        let w: [i32; 8] = ws[r * 8..r * 8 + 8].try_into().unwrap();
        let o = &mut out[r * 8..r * 8 + 8];
        if w[1..].iter().all(|&v| v == 0) {
            o.fill(range_limit(descale(w[0], PASS1_BITS + 3)));
            continue;
        }
        for (o, v) in o.iter_mut().zip(idct_1d(w)) {
            *o = range_limit(descale(v, CONST_BITS + PASS1_BITS + 3));
        }
    }
}

/// Encode and decode one plane whose sides `fw`, `fh` are whole blocks (the caller pads by edge
/// replication, as libjpeg does); returns the decoded plane, same size.
fn code_plane(plane: &[u8], fw: usize, fh: usize, qt: &[i32; 64]) -> Vec<u8> {
    debug_assert!(fw.is_multiple_of(8) && fh.is_multiple_of(8) && plane.len() == fw * fh);
    let mut out = vec![0u8; fw * fh];
    // jcdctmgr: divisor = q·8 for the islow DCT, round half away from zero. Division by the
    // reciprocal m = ⌈2³²/d⌉ is exact here: the dividend stays below 2¹⁷ and d ≤ 2040, so the
    // error n·(m·d − 2³²)/(d·2³²) < n/2³² never reaches 1/d.
    let div: [(u32, u64); 64] = std::array::from_fn(|i| {
        let d = (qt[i] as u32) << 3;
        (d, (1u64 << 32).div_ceil(d as u64))
    });
    let mut blk = [0i32; 64];
    let mut dec = [0u8; 64];
    for by in 0..fh / 8 {
        for bx in 0..fw / 8 {
            for y in 0..8 {
                let row = &plane[(by * 8 + y) * fw + bx * 8..][..8];
                for x in 0..8 {
                    blk[y * 8 + x] = row[x] as i32 - 128;
                }
            }
            fdct_islow(&mut blk);
            for i in 0..64 {
                let (d, m) = div[i];
                let t = blk[i];
                let q = (((t.unsigned_abs() + (d >> 1)) as u64 * m) >> 32) as i32;
                blk[i] = if t < 0 { -q } else { q } * qt[i];
            }
            idct_islow(&blk, &mut dec);
            for y in 0..8 {
                out[(by * 8 + y) * fw + bx * 8..][..8].copy_from_slice(&dec[y * 8..y * 8 + 8]);
            }
        }
    }
    out
}

/// Two horizontally adjacent blocks' forward DCT, quantisation, dequantisation and inverse DCT
/// in 16-bit lanes, as libjpeg-turbo's jfdctint/jquanti/jidctint-avx2 do: register i holds row
/// (or after a transpose column) i of the left block in its low 128 bits and of the right block
/// in its high 128 bits, every product is a `vpmaddwd` of two 16-bit terms into 32 bits, and each
/// pass's descaled results pack back to 16 bits. The products and sums are the scalar path's
/// integers regrouped (z5 folded into the constants as in the SIMD islow code), so every lane
/// computes the scalar result as long as the 16-bit terms cannot overflow:
/// - forward pass 1 sees samples −128..127 (sums ≤ 1024, outputs ≤ 4096); pass 2 sums eight
///   pass-1 outputs of one sign pattern, which stays within −32768..32640 (row sums of samples
///   are −1024..1016, so all-DC pass-1 rows are at most 4064 when positive);
/// - the dequantised coefficients are the forward ones rounded to a multiple of q ≤ 255, at most
///   about 4200; the inverse pass 1 output is the exact transform (≤ 4096) plus the quantisation
///   error, at most 127.5 per coefficient times a column weight sum under 11 (4 · 127.5 · 10.8 ≈
///   5500), so it and the pass-2 sums of two of them stay far inside 16 bits; the final samples
///   before the range limit are within a few hundred of 0..255.
#[cfg(target_arch = "x86_64")]
mod block_avx2 {
    use super::*;
    use std::arch::x86_64::*;
    use crate::simd::mulhi_u16;

    /// libjpeg-turbo's quantiser (jcdctmgr.c `compute_reciprocal`, jquanti-avx2.asm) for the
    /// divisor d = q·8 of each coefficient: ⌊(|t| + corr)·recip / 2^r⌋ with the sign of t, as two
    /// unsigned high multiplies (by recip, then by scale = 2^(32−r)). It equals the scalar
    /// ⌊(|t| + d/2)/d⌋ for every 16-bit t (`quantiser_is_exact` checks all of them for every q).
    /// Rows are broadcast to both 128-bit lanes.
    pub(super) struct Tables {
        recip: [__m256i; 8],
        corr: [__m256i; 8],
        scale: [__m256i; 8],
        q: [__m256i; 8],
        /// The decoded sample of a block whose 64 samples all equal the index (see [`flat`]).
        flat: [u8; 256],
    }

    /// (recip, corr, scale) for divisor `d` ≥ 3, not a power of two or one.
    fn reciprocal(d: u32) -> [i16; 3] {
        let b = 31 - d.leading_zeros();
        let mut r = 16 + b;
        let (mut fq, fr) = ((1u64 << r) / d as u64, (1u64 << r) % d as u64);
        let mut c = d / 2;
        if fr == 0 {
            fq >>= 1;
            r -= 1;
        } else if fr <= (d / 2) as u64 {
            c += 1;
        } else {
            fq += 1;
        }
        [fq as u16 as i16, c as i16, (1u32 << (32 - r)) as u16 as i16]
    }

    impl Tables {
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn new(qt: &[i32; 64]) -> Tables {
            let row = |i: usize, f: &dyn Fn(i32) -> i16| {
                let r: [i16; 8] = std::array::from_fn(|j| f(qt[i * 8 + j]));
                _mm256_broadcastsi128_si256(_mm_loadu_si128(r.as_ptr() as *const __m128i))
            };
            let rc = |q: i32, k: usize| reciprocal((q as u32) << 3)[k];
            Tables {
                recip: std::array::from_fn(|i| row(i, &|q| rc(q, 0))),
                corr: std::array::from_fn(|i| row(i, &|q| rc(q, 1))),
                scale: std::array::from_fn(|i| row(i, &|q| rc(q, 2))),
                q: std::array::from_fn(|i| row(i, &|q| q as i16)),
                // The scalar reference codes each flat block once per quality table (cached), so
                // the look-up is its output by construction. A flat block decodes flat: its DCT is
                // DC-only (every AC term is a difference of equal values).
                flat: std::array::from_fn(|v| super::code_plane(&[v as u8; 64], 8, 8, qt)[0]),
            }
        }
    }

    /// The luma and chroma tables of `quality`, built once per quality and process (building
    /// them, 128 divisions, cost a tenth of a 32×32 image's round trip).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn tables(quality: u32) -> &'static (Tables, Tables) {
        static CACHE: [std::sync::OnceLock<(Tables, Tables)>; 100] = [const { std::sync::OnceLock::new() }; 100];
        let q = quality.clamp(1, 100);
        // SAFETY: AVX2 is the caller's promise.
        CACHE[q as usize - 1].get_or_init(|| unsafe { (Tables::new(&quant_table(&STD_LUM, q)), Tables::new(&quant_table(&STD_CHR, q))) })
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn transpose(r: [__m256i; 8]) -> [__m256i; 8] {
        let t0 = _mm256_unpacklo_epi16(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi16(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi16(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi16(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi16(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi16(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi16(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi16(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi32(t0, t2);
        let u1 = _mm256_unpackhi_epi32(t0, t2);
        let u2 = _mm256_unpacklo_epi32(t1, t3);
        let u3 = _mm256_unpackhi_epi32(t1, t3);
        let u4 = _mm256_unpacklo_epi32(t4, t6);
        let u5 = _mm256_unpackhi_epi32(t4, t6);
        let u6 = _mm256_unpacklo_epi32(t5, t7);
        let u7 = _mm256_unpackhi_epi32(t5, t7);
        [
            _mm256_unpacklo_epi64(u0, u4),
            _mm256_unpackhi_epi64(u0, u4),
            _mm256_unpacklo_epi64(u1, u5),
            _mm256_unpackhi_epi64(u1, u5),
            _mm256_unpacklo_epi64(u2, u6),
            _mm256_unpackhi_epi64(u2, u6),
            _mm256_unpacklo_epi64(u3, u7),
            _mm256_unpackhi_epi64(u3, u7),
        ]
    }

    /// A 32-bit value as (low, high) halves: the products of the 16-bit lanes 0–3 and 4–7 of
    /// each 128-bit lane.
    type W = (__m256i, __m256i);

    /// x·k₀ + y·k₁ per lane, 32-bit.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn madd(xy: W, k0: i32, k1: i32) -> W {
        let k = _mm256_set1_epi32((k0 & 0xffff) | (k1 << 16));
        (_mm256_madd_epi16(xy.0, k), _mm256_madd_epi16(xy.1, k))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn pair(x: __m256i, y: __m256i) -> W {
        (_mm256_unpacklo_epi16(x, y), _mm256_unpackhi_epi16(x, y))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn add(a: W, b: W) -> W {
        (_mm256_add_epi32(a.0, b.0), _mm256_add_epi32(a.1, b.1))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn sub(a: W, b: W) -> W {
        (_mm256_sub_epi32(a.0, b.0), _mm256_sub_epi32(a.1, b.1))
    }

    /// `descale(x, N)` and back to 16 bits (the bounds above keep the pack from saturating).
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn descale<const N: i32>(x: W) -> __m256i {
        let r = _mm256_set1_epi32(1 << (N - 1));
        _mm256_packs_epi32(_mm256_srai_epi32::<N>(_mm256_add_epi32(x.0, r)), _mm256_srai_epi32::<N>(_mm256_add_epi32(x.1, r)))
    }

    /// [`odd_rotation`] of (a, b, c, d) with z5 folded into the constants.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn odd(a: __m256i, b: __m256i, c: __m256i, d: __m256i) -> [W; 4] {
        let z34 = pair(_mm256_add_epi16(a, c), _mm256_add_epi16(b, d));
        let z3 = madd(z34, FIX_1_175875602 - FIX_1_961570560, FIX_1_175875602);
        let z4 = madd(z34, FIX_1_175875602, FIX_1_175875602 - FIX_0_390180644);
        let ad = pair(a, d);
        let bc = pair(b, c);
        let a = madd(ad, FIX_0_298631336 - FIX_0_899976223, -FIX_0_899976223);
        let d = madd(ad, -FIX_0_899976223, FIX_1_501321110 - FIX_0_899976223);
        let b = madd(bc, FIX_2_053119869 - FIX_2_562915447, -FIX_2_562915447);
        let c = madd(bc, -FIX_2_562915447, FIX_3_072711026 - FIX_2_562915447);
        [add(a, z3), add(b, z4), add(c, z3), add(d, z4)]
    }

    /// [`fdct_1d`] with pass 1's (`P2` false) or pass 2's output scaling.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn fdct<const P2: bool>(x: [__m256i; 8]) -> [__m256i; 8] {
        let (a16, s16) = (|a, b| _mm256_add_epi16(a, b), |a, b| _mm256_sub_epi16(a, b));
        let tmp0 = a16(x[0], x[7]);
        let tmp7 = s16(x[0], x[7]);
        let tmp1 = a16(x[1], x[6]);
        let tmp6 = s16(x[1], x[6]);
        let tmp2 = a16(x[2], x[5]);
        let tmp5 = s16(x[2], x[5]);
        let tmp3 = a16(x[3], x[4]);
        let tmp4 = s16(x[3], x[4]);
        let tmp10 = a16(tmp0, tmp3);
        let tmp13 = s16(tmp0, tmp3);
        let tmp11 = a16(tmp1, tmp2);
        let tmp12 = s16(tmp1, tmp2);
        let (e0, e4) = (a16(tmp10, tmp11), s16(tmp10, tmp11));
        let t1312 = pair(tmp13, tmp12);
        let o2 = madd(t1312, FIX_0_541196100 + FIX_0_765366865, FIX_0_541196100);
        let o6 = madd(t1312, FIX_0_541196100, FIX_0_541196100 - FIX_1_847759065);
        let [o7, o5, o3, o1] = odd(tmp4, tmp5, tmp6, tmp7);
        if P2 {
            let r = _mm256_set1_epi16(1 << (PASS1_BITS - 1));
            let dc = |v| _mm256_srai_epi16::<PASS1_BITS>(_mm256_add_epi16(v, r));
            let ac = |v| descale::<{ CONST_BITS + PASS1_BITS }>(v);
            [dc(e0), ac(o1), ac(o2), ac(o3), dc(e4), ac(o5), ac(o6), ac(o7)]
        } else {
            let dc = |v| _mm256_slli_epi16::<PASS1_BITS>(v);
            let ac = |v| descale::<{ CONST_BITS - PASS1_BITS }>(v);
            [dc(e0), ac(o1), ac(o2), ac(o3), dc(e4), ac(o5), ac(o6), ac(o7)]
        }
    }

    /// [`idct_1d`] descaled by `N`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn idct<const N: i32>(x: [__m256i; 8]) -> [__m256i; 8] {
        let z = pair(x[2], x[6]);
        let tmp3 = madd(z, FIX_0_541196100 + FIX_0_765366865, FIX_0_541196100);
        let tmp2 = madd(z, FIX_0_541196100, FIX_0_541196100 - FIX_1_847759065);
        let z = pair(x[0], x[4]);
        let tmp0 = madd(z, 1 << CONST_BITS, 1 << CONST_BITS);
        let tmp1 = madd(z, 1 << CONST_BITS, -(1 << CONST_BITS));
        let tmp10 = add(tmp0, tmp3);
        let tmp13 = sub(tmp0, tmp3);
        let tmp11 = add(tmp1, tmp2);
        let tmp12 = sub(tmp1, tmp2);
        idct_out::<N>([tmp10, tmp11, tmp12, tmp13], odd(x[7], x[5], x[3], x[1]))
    }

    /// [`idct`] of inputs 0–3 with 4–7 zero: each even and odd term is one `vpmaddwd` of
    /// (x2, x0) or (x3, x1), the constants of the dropped inputs' terms folded away.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn idct4<const N: i32>(x: [__m256i; 4]) -> [__m256i; 8] {
        let (k, c2, c6) = (1 << CONST_BITS, FIX_0_541196100 + FIX_0_765366865, FIX_0_541196100);
        let e = pair(x[2], x[0]);
        let even = [madd(e, c2, k), madd(e, c6, k), madd(e, -c6, k), madd(e, -c2, k)];
        let o = pair(x[3], x[1]);
        let z5 = FIX_1_175875602;
        let odd = [
            madd(o, z5 - FIX_1_961570560, z5 - FIX_0_899976223),
            madd(o, z5 - FIX_2_562915447, z5 - FIX_0_390180644),
            madd(o, FIX_3_072711026 - FIX_2_562915447 + z5 - FIX_1_961570560, z5),
            madd(o, z5, FIX_1_501321110 - FIX_0_899976223 + z5 - FIX_0_390180644),
        ];
        idct_out::<N>(even, odd)
    }

    /// The inverse butterfly's last stage from (tmp10, tmp11, tmp12, tmp13) and the odd part,
    /// descaled by `N`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn idct_out<const N: i32>([tmp10, tmp11, tmp12, tmp13]: [W; 4], [t0, t1, t2, t3]: [W; 4]) -> [__m256i; 8] {
        [
            descale::<N>(add(tmp10, t3)),
            descale::<N>(add(tmp11, t2)),
            descale::<N>(add(tmp12, t1)),
            descale::<N>(add(tmp13, t0)),
            descale::<N>(sub(tmp13, t0)),
            descale::<N>(sub(tmp12, t1)),
            descale::<N>(sub(tmp11, t2)),
            descale::<N>(sub(tmp10, t3)),
        ]
    }

    /// Quantise row `i` of coefficients: the quotients, signed.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn quantise(c: __m256i, t: &Tables, i: usize) -> __m256i {
        let x = _mm256_add_epi16(_mm256_abs_epi16(c), t.corr[i]);
        _mm256_sign_epi16(mulhi_u16(mulhi_u16(x, t.recip[i]), t.scale[i]), c)
    }


    /// The value of the 8×8 block at `b` (rows `stride` apart) if all its samples are equal.
    /// Flat blocks (backgrounds) are common in real images; their round trip is a table look-up.
    #[inline]
    unsafe fn flat(b: *const u8, stride: usize) -> Option<u8> {
        let r0 = (b as *const u64).read_unaligned();
        let v = r0 as u8;
        let mut diff = r0 ^ (v as u64 * 0x0101_0101_0101_0101);
        for y in 1..8 {
            diff |= (b.add(y * stride) as *const u64).read_unaligned() ^ r0;
        }
        (diff == 0).then_some(v)
    }

    /// Code a plane whose sides are whole blocks in place: flat blocks by [`Tables::flat`], the
    /// others two a step in scan order (any two blocks make a pair; an odd last one pairs with
    /// itself).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn code_plane(plane: &mut [u8], fw: usize, fh: usize, t: &Tables) {
        assert!(fw.is_multiple_of(8) && fh.is_multiple_of(8) && plane.len() >= fw * fh);
        let p = plane.as_mut_ptr();
        let mut pending: Option<*mut u8> = None;
        for by in 0..fh / 8 {
            for bx in 0..fw / 8 {
                // SAFETY: every block lies inside the plane (asserted above); a pending block is
                // untouched until it is coded.
                let b = p.add(by * 8 * fw + bx * 8);
                if let Some(v) = flat(b, fw) {
                    let fill = t.flat[v as usize] as u64 * 0x0101_0101_0101_0101;
                    for y in 0..8 {
                        (b.add(y * fw) as *mut u64).write_unaligned(fill);
                    }
                } else if let Some(a) = pending.take() {
                    code_pair((a, b), fw, t);
                } else {
                    pending = Some(b);
                }
            }
        }
        if let Some(a) = pending {
            // SAFETY: as above.
            code_pair((a, a), fw, t);
        }
    }

    /// Code the 8×8 blocks at `blk.0` and `blk.1` (rows `stride` bytes apart) in place; the two
    /// are disjoint or the same block (all loads come before the stores).
    #[target_feature(enable = "avx2")]
    unsafe fn code_pair(blk: (*mut u8, *mut u8), stride: usize, t: &Tables) {
        let c128 = _mm256_set1_epi16(128);
        let rows: [__m256i; 8] = std::array::from_fn(|y| {
            let a = _mm_loadl_epi64(blk.0.add(y * stride) as *const __m128i);
            let b = _mm_loadl_epi64(blk.1.add(y * stride) as *const __m128i);
            _mm256_sub_epi16(_mm256_cvtepu8_epi16(_mm_unpacklo_epi64(a, b)), c128)
        });
        // Pass 1 on rows (transposed: register = sample column), pass 2 on columns.
        let y = fdct::<false>(transpose(rows));
        let coef = fdct::<true>(transpose(y));
        let q: [__m256i; 8] = std::array::from_fn(|i| quantise(coef[i], t, i));
        let dc = _mm256_mullo_epi16(q[0], t.q[0]);
        // Both blocks DC-only (common at low quality): the inverse DCT is a constant fill, as in
        // the scalar shortcuts.
        let ac = q[1..].iter().fold(_mm256_andnot_si256(_mm256_setr_epi16(-1, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0), q[0]), |a, &v| _mm256_or_si256(a, v));
        if _mm256_testz_si256(ac, ac) == 1 {
            let fill = |v: i32, d: *mut u8| {
                let v = u64::from_ne_bytes([range_limit(super::descale(v << PASS1_BITS, PASS1_BITS + 3)); 8]);
                for y in 0..8 {
                    (d.add(y * stride) as *mut u64).write_unaligned(v);
                }
            };
            fill(_mm256_extract_epi16::<0>(dc) as i16 as i32, blk.0);
            fill(_mm256_extract_epi16::<8>(dc) as i16 as i32, blk.1);
            return;
        }
        let deq: [__m256i; 8] = std::array::from_fn(|i| if i == 0 { dc } else { _mm256_mullo_epi16(q[i], t.q[i]) });
        // Inverse pass 1 on columns (register = coefficient row), pass 2 on rows (transposed).
        // When both blocks' nonzero coefficients lie in the top-left 4×4 (most blocks that are
        // not DC-only at low quality), rows 4–7 are zero and, after pass 1, so are columns 4–7.
        let cols4 = _mm256_setr_epi16(0, 0, 0, 0, -1, -1, -1, -1, 0, 0, 0, 0, -1, -1, -1, -1);
        let high = q[4..].iter().fold(_mm256_and_si256(cols4, _mm256_or_si256(_mm256_or_si256(q[0], q[1]), _mm256_or_si256(q[2], q[3]))), |a, &v| _mm256_or_si256(a, v));
        let o = if _mm256_testz_si256(high, high) == 1 {
            let w = transpose(idct4::<{ CONST_BITS - PASS1_BITS }>([deq[0], deq[1], deq[2], deq[3]]));
            idct4::<{ CONST_BITS + PASS1_BITS + 3 }>([w[0], w[1], w[2], w[3]])
        } else {
            idct::<{ CONST_BITS + PASS1_BITS + 3 }>(transpose(idct::<{ CONST_BITS - PASS1_BITS }>(deq)))
        };
        // range_limit: wrap at 1024 (sign-extend 10 bits), centre on 128, clamp to 0..255.
        let o: [__m256i; 8] = std::array::from_fn(|i| _mm256_add_epi16(_mm256_srai_epi16::<6>(_mm256_slli_epi16::<6>(o[i])), c128));
        let r = transpose(o);
        for p in 0..4 {
            // Bytes: [left row 2p, left row 2p+1 | right row 2p, right row 2p+1].
            let v = _mm256_packus_epi16(r[2 * p], r[2 * p + 1]);
            let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
            _mm_storel_epi64(blk.0.add(2 * p * stride) as *mut __m128i, lo);
            _mm_storel_epi64(blk.0.add((2 * p + 1) * stride) as *mut __m128i, _mm_unpackhi_epi64(lo, lo));
            _mm_storel_epi64(blk.1.add(2 * p * stride) as *mut __m128i, hi);
            _mm_storel_epi64(blk.1.add((2 * p + 1) * stride) as *mut __m128i, _mm_unpackhi_epi64(hi, hi));
        }
    }
}

/// Edge-replicate an `h`×`w` plane to `mw`×`mh`.
fn pad_plane(p: &[u8], h: usize, w: usize, mw: usize, mh: usize) -> Vec<u8> {
    let mut o = vec![0u8; mw * mh];
    for y in 0..mh {
        let src = &p[y.min(h - 1) * w..][..w];
        let row = &mut o[y * mw..(y + 1) * mw];
        row[..w].copy_from_slice(src);
        let last = src[w - 1];
        row[w..].iter_mut().for_each(|v| *v = last);
    }
    o
}

const SCALEBITS: i32 = 16;
const ONE_HALF: i32 = 1 << (SCALEBITS - 1);
const fn fix(x: f64) -> i32 {
    (x * (1i64 << SCALEBITS) as f64 + 0.5) as i32
}
const FY_R: i32 = fix(0.299);
const FY_G: i32 = fix(0.587);
const FY_B: i32 = fix(0.114);
const FCB_R: i32 = fix(0.16874);
const FCB_G: i32 = fix(0.33126);
const FHALF: i32 = fix(0.5);
const FCR_G: i32 = fix(0.41869);
const FCR_B: i32 = fix(0.08131);
const CBCR_OFF: i32 = 128 << SCALEBITS;
const F_CR_R: i32 = fix(1.402);
const F_CB_B: i32 = fix(1.772);
const F_CR_G: i32 = fix(0.71414);
const F_CB_G: i32 = fix(0.34414);

/// jccolor.c `rgb_ycc_convert`, one pixel: [Y, Cb, Cr].
#[inline(always)]
fn rgb_to_ycc_px(px: &[u8]) -> [u8; 3] {
    let (r, g, b) = (px[0] as i32, px[1] as i32, px[2] as i32);
    [
        ((FY_R * r + FY_G * g + FY_B * b + ONE_HALF) >> SCALEBITS) as u8,
        ((-FCB_R * r - FCB_G * g + FHALF * b + CBCR_OFF + ONE_HALF - 1) >> SCALEBITS) as u8,
        ((FHALF * r - FCR_G * g - FCR_B * b + CBCR_OFF + ONE_HALF - 1) >> SCALEBITS) as u8,
    ]
}

/// jdcolor.c's R, G and B terms, which depend on the chroma only: each output is the luma
/// plus its term, clamped to 0..255.
#[inline(always)]
fn chroma_terms(cb: u8, cr: u8) -> [i32; 3] {
    let (cbv, crv) = (cb as i32 - 128, cr as i32 - 128);
    [(F_CR_R * crv + ONE_HALF) >> SCALEBITS, (-F_CB_G * cbv + ONE_HALF - F_CR_G * crv) >> SCALEBITS, (F_CB_B * cbv + ONE_HALF) >> SCALEBITS]
}

/// jdcolor.c `ycc_rgb_convert`, one pixel into `o` (RGB).
#[inline(always)]
fn ycc_to_rgb_px(y: u8, cb: u8, cr: u8, o: &mut [u8]) {
    let t = chroma_terms(cb, cr);
    for (o, t) in o[..3].iter_mut().zip(t) {
        *o = (y as i32 + t).clamp(0, 255) as u8;
    }
}

/// libjpeg `h2v2_downsample`: each 2×2 block's sum plus a bias alternating 1, 2 along the row,
/// over 4. Written lane-wise so that it vectorises.
fn downsample_h2v2(pp: &[u8], mw: usize, cw: usize, chh: usize) -> Vec<u8> {
    let mut o = vec![0u8; cw * chh];
    for (y, orow) in o.chunks_exact_mut(cw).enumerate() {
        let r0 = &pp[2 * y * mw..][..2 * cw];
        let r1 = &pp[(2 * y + 1) * mw..][..2 * cw];
        for (x, ((o, a), b)) in orow.iter_mut().zip(r0.chunks_exact(2)).zip(r1.chunks_exact(2)).enumerate() {
            let s = a[0] as u16 + a[1] as u16 + b[0] as u16 + b[1] as u16;
            *o = ((s + 1 + (x as u16 & 1)) >> 2) as u8;
        }
    }
    o
}

/// The row of a `dh`-row component that output row `y`'s triangle filter weighs 1 (the other
/// row, weight 3, is `y / 2`); rows past the edges replicate the edge.
fn far_row(y: usize, dh: usize) -> usize {
    if y.is_multiple_of(2) {
        (y / 2).saturating_sub(1)
    } else {
        (y / 2 + 1).min(dh - 1)
    }
}

/// One output row `y` of libjpeg `h2v2_fancy_upsample` (triangle filter, 3:1 weights, biases 8
/// and 7) of a `dw`×`dh` component stored `cw` wide; rows and columns past the edges replicate
/// the edge. Column sums (3·near + far ≤ 1020) and results in u16 lanes; `orow` is `2·dw` long.
/// Row by row, so the upsampled planes never exist whole.
fn upsample_row_h2v2_fancy(p: &[u8], cw: usize, dw: usize, dh: usize, y: usize, cs: &mut [u16], orow: &mut [u8]) {
    let ow = dw * 2;
    let (near, far) = (&p[y / 2 * cw..][..dw], &p[far_row(y, dh) * cw..][..dw]);
    for ((c, &a), &b) in cs.iter_mut().zip(near).zip(far) {
        *c = a as u16 * 3 + b as u16;
    }
    let orow = &mut orow[..ow];
    if dw == 1 {
        orow[0] = ((cs[0] * 4 + 8) >> 4) as u8;
        orow[1] = ((cs[0] * 4 + 7) >> 4) as u8;
        return;
    }
    orow[0] = ((cs[0] * 4 + 8) >> 4) as u8;
    orow[1] = ((cs[0] * 3 + cs[1] + 7) >> 4) as u8;
    // Interior columns: left neighbour for the even output, right for the odd.
    for (x, pair) in orow[2..ow - 2].chunks_exact_mut(2).enumerate() {
        let (l, m, r) = (cs[x], cs[x + 1], cs[x + 2]);
        pair[0] = ((m * 3 + l + 8) >> 4) as u8;
        pair[1] = ((m * 3 + r + 7) >> 4) as u8;
    }
    orow[ow - 2] = ((cs[dw - 1] * 3 + cs[dw - 2] + 8) >> 4) as u8;
    orow[ow - 1] = ((cs[dw - 1] * 4 + 7) >> 4) as u8;
}

/// Compress at `quality` and decompress, as Pillow + libjpeg-turbo do; `c` is 1 or 3. With
/// AVX2, [`round_trip_avx2`]: the same bytes.
pub(crate) fn round_trip(img: &[u8], h: usize, w: usize, c: usize, quality: u32) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        return unsafe { round_trip_avx2(img, h, w, c, quality, rows_avx512::detected()) };
    }
    round_trip_scalar(img, h, w, c, quality)
}

/// The portable path and the reference of the vector one: whole planes, one step after another.
pub(crate) fn round_trip_scalar(img: &[u8], h: usize, w: usize, c: usize, quality: u32) -> Vec<u8> {
    let ql = quant_table(&STD_LUM, quality);
    if c == 1 {
        let (fw, fh) = (w.div_ceil(8) * 8, h.div_ceil(8) * 8);
        let d = code_plane(&pad_plane(img, h, w, fw, fh), fw, fh, &ql);
        let mut out = Vec::with_capacity(h * w);
        for y in 0..h {
            out.extend_from_slice(&d[y * fw..y * fw + w]);
        }
        return out;
    }
    let qc = quant_table(&STD_CHR, quality);
    // Luma: MCU is 16×16, so the planes are padded to multiples of 16 (edge replication).
    let (mw, mh) = (w.div_ceil(16) * 16, h.div_ceil(16) * 16);
    let mut yp = vec![0u8; mw * mh];
    let mut cb = vec![0u8; mw * mh];
    let mut cr = vec![0u8; mw * mh];
    for y in 0..h {
        let src = &img[y * w * 3..(y + 1) * w * 3];
        for (x, px) in src.chunks_exact(3).enumerate() {
            [yp[y * mw + x], cb[y * mw + x], cr[y * mw + x]] = rgb_to_ycc_px(px);
        }
    }
    for p in [&mut yp, &mut cb, &mut cr] {
        for y in 0..mh {
            if y >= h {
                p.copy_within((h - 1) * mw..h * mw, y * mw);
            } else {
                let last = p[y * mw + w - 1];
                p[y * mw + w..(y + 1) * mw].iter_mut().for_each(|v| *v = last);
            }
        }
    }
    let yd = code_plane(&yp, mw, mh, &ql);
    let (cw, chh) = (mw / 2, mh / 2);
    let cbd = code_plane(&downsample_h2v2(&cb, mw, cw, chh), cw, chh, &qc);
    let crd = code_plane(&downsample_h2v2(&cr, mw, cw, chh), cw, chh, &qc);
    // Fancy upsampling over the component's real downsampled size (⌈w/2⌉ × ⌈h/2⌉), edges replicated.
    let (dw, dh) = (w.div_ceil(2), h.div_ceil(2));
    let uw = dw * 2;
    let (mut cbu, mut cru, mut cs) = (vec![0u8; uw], vec![0u8; uw], vec![0u16; dw]);
    let mut out = vec![0u8; h * w * 3];
    for y in 0..h {
        upsample_row_h2v2_fancy(&cbd, cw, dw, dh, y, &mut cs, &mut cbu);
        upsample_row_h2v2_fancy(&crd, cw, dw, dh, y, &mut cs, &mut cru);
        for (x, o) in out[y * w * 3..(y + 1) * w * 3].chunks_exact_mut(3).enumerate() {
            ycc_to_rgb_px(yd[y * mw + x], cbu[x], cru[x], o);
        }
    }
    out
}

/// [`round_trip_scalar`] streamed by rows with AVX2 kernels: colour conversion, edge padding and
/// downsampling per pair of rows into the (in place coded) planes, upsampling and the inverse
/// conversion per output row, so only the luma and the two small chroma planes exist whole.
/// `avx512`: the CPU has what [`rows_avx512`] needs (its kernels take the rows' first pixels).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_trip_avx2(img: &[u8], h: usize, w: usize, c: usize, quality: u32, avx512: bool) -> Vec<u8> {
    let (ql, qc) = block_avx2::tables(quality);
    if c == 1 {
        let (fw, fh) = (w.div_ceil(8) * 8, h.div_ceil(8) * 8);
        let mut p = pad_plane(img, h, w, fw, fh);
        block_avx2::code_plane(&mut p, fw, fh, ql);
        let mut out = Vec::with_capacity(h * w);
        for y in 0..h {
            out.extend_from_slice(&p[y * fw..y * fw + w]);
        }
        return out;
    }
    let (mw, mh) = (w.div_ceil(16) * 16, h.div_ceil(16) * 16);
    let (cw, chh) = (mw / 2, mh / 2);
    let (dw, dh) = (w.div_ceil(2), h.div_ceil(2));
    // Per-thread scratch, reused: every byte of it is written before it is read, so reuse
    // changes no output, and small images skip allocating and zeroing it (a tenth of a 32×32
    // round trip).
    thread_local! {
        static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        static SUMS: std::cell::Cell<Vec<u16>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let (mut buf, mut cs) = (SCRATCH.take(), SUMS.take());
    buf.resize(mw * mh + 2 * cw * chh + 4 * mw, 0);
    cs.resize(2 * (dw + 2), 0);
    let (yp, rest) = buf.split_at_mut(mw * mh);
    let (cb, rest) = rest.split_at_mut(cw * chh);
    let (cr, rest) = rest.split_at_mut(cw * chh);
    // Two full-resolution rows of each chroma component.
    let rows = &mut rest[..4 * mw];
    for cy in 0..chh {
        let (cbr, crr) = rows.split_at_mut(2 * mw);
        for k in 0..2 {
            let y = 2 * cy + k;
            let sy = y.min(h - 1);
            let yo = &mut yp[y * mw..(y + 1) * mw];
            let (cbo, cro) = (&mut cbr[k * mw..(k + 1) * mw], &mut crr[k * mw..(k + 1) * mw]);
            // The AVX-512 kernels run only where `avx512` says the CPU has what they need.
            let wide = if avx512 { rows_avx512::rgb_to_ycc(img, sy * w * 3, &mut yo[..w], &mut cbo[..w], &mut cro[..w]) } else { 0 };
            let done = if w - wide >= 16 { wide + rows_avx2::rgb_to_ycc(img, (sy * w + wide) * 3, &mut yo[wide..w], &mut cbo[wide..w], &mut cro[wide..w]) } else { wide };
            for x in done..w {
                [yo[x], cbo[x], cro[x]] = rgb_to_ycc_px(&img[(sy * w + x) * 3..]);
            }
            // (A memset call per row and component even when there is nothing to pad: skip it.)
            if w < mw {
                for p in [yo, cbo, cro] {
                    let last = p[w - 1];
                    p[w..].fill(last);
                }
            }
        }
        rows_avx2::downsample(cbr, crr, &mut cb[cy * cw..(cy + 1) * cw], &mut cr[cy * cw..(cy + 1) * cw]);
    }
    block_avx2::code_plane(yp, mw, mh, ql);
    block_avx2::code_plane(cb, cw, chh, qc);
    block_avx2::code_plane(cr, cw, chh, qc);
    // Filled row by row through raw pointers (not zeroed first: that was 4% of the time).
    let mut out: Vec<u8> = Vec::with_capacity(h * w * 3);
    let (csb, csr) = cs.split_at_mut(dw + 2);
    for y in 0..h {
        let yr = &yp[y * mw..y * mw + w];
        let orow = out.as_mut_ptr().add(y * w * 3);
        let done = if avx512 {
            let (n, f) = (y / 2 * cw, far_row(y, dh) * cw);
            rows_avx512::upsample_to_rgb(yr, [&cb[n..n + dw], &cb[f..f + dw]], [&cr[n..n + dw], &cr[f..f + dw]], orow)
        } else {
            let (near, far) = (y / 2 * cw, far_row(y, dh) * cw);
            rows_avx2::upsample_to_rgb(yr, (&cb[near..][..dw], &cb[far..][..dw]), (&cr[near..][..dw], &cr[far..][..dw]), orow)
        };
        if done < w {
            rows_avx2::column_sums(cb, cw, dw, dh, y, csb);
            rows_avx2::column_sums(cr, cw, dw, dh, y, csr);
        }
        // The rest from the column sums: cs[c + 1] is chroma column c's.
        for x in done..w {
            let up = |cs: &[u16]| (if x % 2 == 0 { (cs[x / 2 + 1] * 3 + cs[x / 2] + 8) >> 4 } else { (cs[x / 2 + 1] * 3 + cs[x / 2 + 2] + 7) >> 4 }) as u8;
            let mut px = [0u8; 3];
            ycc_to_rgb_px(yr[x], up(csb), up(csr), &mut px);
            std::ptr::copy_nonoverlapping(px.as_ptr(), orow.add(3 * x), 3);
        }
    }
    // SAFETY: every row's 3·w bytes are written above (the vector pixels, then the rest).
    out.set_len(h * w * 3);
    SCRATCH.set(buf);
    SUMS.set(cs);
    out
}

/// `vpshufb` control for the colour conversions: dword j of each 16-byte lane gets the lane's
/// bytes 3j + c0 and 3j + c1 as two u16 (0x80 zeroes the high bytes), i.e. one pixel's two
/// components ready for `vpmaddwd` / `vpdpwssd`. N is the register width in bytes.
#[cfg(target_arch = "x86_64")]
const fn rgb_pairs<const N: usize>(c0: u8, c1: u8) -> [u8; N] {
    let mut m = [0x80u8; N];
    let mut i = 0;
    while i < N {
        let j = (i % 16 / 4) as u8;
        match i % 4 {
            0 => m[i] = 3 * j + c0,
            2 => m[i] = 3 * j + c1,
            _ => {}
        }
        i += 1;
    }
    m
}

/// The row steps of [`round_trip_avx2`]. The colour conversions (jccolor.c / jdcolor.c fixed
/// point) return how many pixels they did; the caller finishes the row.
#[cfg(target_arch = "x86_64")]
mod rows_avx2 {
    use super::*;
    use std::arch::x86_64::*;

    /// Sixteen pixels a step, as two halves of four pixels per 128-bit lane: byte shuffles make
    /// 16-bit pairs (r, g), (g, b), (b, r) in each 32-bit lane, and each jccolor.c sum is two
    /// `vpmaddwd`s (constants of 2^15 and more split over the two pairs that hold the
    /// component): exact integer sums as in the scalar formula.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn rgb_to_ycc(img: &[u8], at: usize, yo: &mut [u8], cbo: &mut [u8], cro: &mut [u8]) -> usize {
        const _: () = assert!(FY_G % 2 == 0 && FHALF % 2 == 0 && FY_G / 2 < 1 << 15 && FHALF == 1 << 15);
        let src = &img[at..];
        let w = yo.len();
        assert!(cbo.len() >= w && cro.len() >= w);
        let k = |a: i32, b: i32| _mm256_set1_epi32((a & 0xffff) | (b << 16));
        let (ky0, ky1) = (k(FY_R, FY_G / 2), k(FY_G / 2, FY_B));
        let (kcb0, kcb1) = (k(-FCB_G, FHALF / 2), k(FHALF / 2, -FCB_R));
        let (kcr0, kcr1) = (k(FHALF - 1, -FCR_G), k(-FCR_B, 1));
        let y_off = _mm256_set1_epi32(ONE_HALF);
        let c_off = _mm256_set1_epi32(CBCR_OFF + ONE_HALF - 1);
        const M: [[u8; 32]; 3] = [rgb_pairs(0, 1), rgb_pairs(1, 2), rgb_pairs(2, 0)];
        let ld = |m: [u8; 32]| _mm256_loadu_si256(m.as_ptr() as *const __m256i);
        let (mrg, mgb, mbr) = (ld(M[0]), ld(M[1]), ld(M[2]));
        // Eight pixels from bytes 3x (four in each lane): Y, Cb, Cr as dwords [0-3 | 4-7].
        // Each lane loads 16 bytes for its 12; `masked` loads the high lane's as three dwords
        // (at the end of the image the fourth would lie past it).
        let half = |x: usize, masked: bool| {
            let p = src.as_ptr().add(x * 3);
            let hi = if masked {
                _mm_maskload_epi32(p.add(12) as *const i32, _mm_setr_epi32(-1, -1, -1, 0))
            } else {
                _mm_loadu_si128(p.add(12) as *const __m128i)
            };
            let v = _mm256_set_m128i(hi, _mm_loadu_si128(p as *const __m128i));
            let (rg, gb, br) = (_mm256_shuffle_epi8(v, mrg), _mm256_shuffle_epi8(v, mgb), _mm256_shuffle_epi8(v, mbr));
            let sum = |a: __m256i, ka: __m256i, b: __m256i, kb: __m256i, off: __m256i| {
                _mm256_srai_epi32::<SCALEBITS>(_mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(a, ka), _mm256_madd_epi16(b, kb)), off))
            };
            (sum(rg, ky0, gb, ky1, y_off), sum(gb, kcb0, br, kcb1, c_off), sum(rg, kcr0, br, kcr1, c_off))
        };
        // Dwords [A0-3 B0-3 | A4-7 B4-7] of bytes (A, B the two halves) to A0-7 B0-7.
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut x = 0;
        // The last flat run's 48 bytes and its Y, Cb, Cr (at first: black).
        let ycc = |px: &[u8]| rgb_to_ycc_px(px).map(|v| _mm_set1_epi8(v as i8));
        let mut flat = (_mm256_setzero_si256(), _mm256_setzero_si256(), ycc(&[0; 3]));
        // Loads may run into the next row, not past the image.
        while x + 16 <= w {
            // Sixteen equal pixels (flat backgrounds): bytes 0..48 repeat with period 3 when
            // 0..35 equal 3..38 and 13..45 equal 16..48. A run equal to the last flat one (most
            // of a background) is just those 48 bytes compared.
            let p = src.as_ptr().add(x * 3);
            let ld32 = |o: usize| _mm256_loadu_si256(p.add(o) as *const __m256i);
            let (a, b) = (ld32(0), ld32(16));
            let all = |v: __m256i| _mm256_movemask_epi8(v) == -1;
            let same = all(_mm256_and_si256(_mm256_cmpeq_epi8(a, flat.0), _mm256_cmpeq_epi8(b, flat.1)));
            if same || all(_mm256_and_si256(_mm256_cmpeq_epi8(a, ld32(3)), _mm256_cmpeq_epi8(ld32(13), b))) {
                if !same {
                    flat = (a, b, ycc(&src[x * 3..x * 3 + 3]));
                }
                _mm_storeu_si128(yo.as_mut_ptr().add(x) as *mut __m128i, flat.2[0]);
                _mm_storeu_si128(cbo.as_mut_ptr().add(x) as *mut __m128i, flat.2[1]);
                _mm_storeu_si128(cro.as_mut_ptr().add(x) as *mut __m128i, flat.2[2]);
                x += 16;
                continue;
            }
            let (ya, cba, cra) = half(x, false);
            let (yb, cbb, crb) = half(x + 8, x * 3 + 36 + 16 > src.len());
            // All three are 0..255: the saturating packs only narrow.
            let ycb = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(_mm256_packus_epi32(ya, yb), _mm256_packus_epi32(cba, cbb)), order);
            let cr = _mm256_packus_epi32(cra, crb);
            let cr = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(cr, cr), order);
            _mm_storeu_si128(yo.as_mut_ptr().add(x) as *mut __m128i, _mm256_castsi256_si128(ycb));
            _mm_storeu_si128(cbo.as_mut_ptr().add(x) as *mut __m128i, _mm256_extracti128_si256::<1>(ycb));
            _mm_storeu_si128(cro.as_mut_ptr().add(x) as *mut __m128i, _mm256_castsi256_si128(cr));
            x += 16;
        }
        x
    }

    /// The red and blue terms (K·v + 2^15) >> 16 of jdcolor.c are v + `vpmulhrsw`(v, k) with
    /// these k, for every v in −128..128 (found by search; the exhaustive tests check them).
    pub(super) const K_R_RS: i16 = 13173;
    pub(super) const K_B_RS: i16 = 25297;
    /// Green's Cr factor less 2^16 (an i16), its Cr term added back after the sum.
    pub(super) const K_G: i32 = (1 << 16) - F_CR_G;
    const _: () = assert!(K_G.abs() < 1 << 15);

    /// jdcolor.c on sixteen pixels in i16 lanes (`cb`, `cr` already centred on 0): per 128-bit
    /// lane, the first 16 and (in the low half of the second register) last 8 of its eight
    /// pixels' 24 RGB bytes. Red and blue by `vpmulhrsw` ([`K_R_RS`]); green's two products go
    /// through one `vpmaddwd` (Cr's factor as [`K_G`] − Cr). Exact, as the scalar formula.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn ycc16(yy: __m256i, cb: __m256i, cr: __m256i) -> (__m256i, __m256i) {
        let kg = _mm256_set1_epi32((-F_CB_G & 0xffff) | (K_G << 16));
        let half = _mm256_set1_epi32(ONE_HALF);
        /// Output bytes `from`..`from + n` of a lane's eight pixels (3p + c) from [r0-7 g0-7]
        /// (`rg`) or [b0-7 b0-7].
        const fn gather(from: usize, n: usize, rg: bool) -> [i8; 32] {
            let mut m = [-1i8; 32];
            let mut i = 0;
            while i < 32 {
                let o = from + i % 16;
                let (p, c) = ((o / 3) as i8, o % 3);
                if i % 16 < n {
                    m[i] = match (c, rg) {
                        (0, true) => p,
                        (1, true) => 8 + p,
                        (2, false) => p,
                        _ => -1,
                    };
                }
                i += 1;
            }
            m
        }
        const M: [[i8; 32]; 4] = [gather(0, 16, true), gather(0, 16, false), gather(16, 8, true), gather(16, 8, false)];
        let ld = |m: [i8; 32]| _mm256_loadu_si256(m.as_ptr() as *const __m256i);
        let r = _mm256_add_epi16(_mm256_add_epi16(yy, cr), _mm256_mulhrs_epi16(cr, _mm256_set1_epi16(K_R_RS)));
        let b = _mm256_add_epi16(_mm256_add_epi16(yy, cb), _mm256_mulhrs_epi16(cb, _mm256_set1_epi16(K_B_RS)));
        let g = |v: __m256i| _mm256_srai_epi32::<SCALEBITS>(_mm256_add_epi32(_mm256_madd_epi16(v, kg), half));
        let g = _mm256_packs_epi32(g(_mm256_unpacklo_epi16(cb, cr)), g(_mm256_unpackhi_epi16(cb, cr)));
        let g = _mm256_add_epi16(yy, _mm256_sub_epi16(g, cr));
        // Saturating packs clamp to 0..255; per lane [r g] and [b b] of eight pixels.
        let (rg, bb) = (_mm256_packus_epi16(r, g), _mm256_packus_epi16(b, b));
        (
            _mm256_or_si256(_mm256_shuffle_epi8(rg, ld(M[0])), _mm256_shuffle_epi8(bb, ld(M[1]))),
            _mm256_or_si256(_mm256_shuffle_epi8(rg, ld(M[2])), _mm256_shuffle_epi8(bb, ld(M[3]))),
        )
    }

    /// Store [`ycc16`]'s output: the low lane's 24 bytes at `lo`, the high lane's at `hi`.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn store_rgb((a, c): (__m256i, __m256i), lo: *mut u8, hi: *mut u8) {
        _mm_storeu_si128(lo as *mut __m128i, _mm256_castsi256_si128(a));
        _mm_storel_epi64(lo.add(16) as *mut __m128i, _mm256_castsi256_si128(c));
        _mm_storeu_si128(hi as *mut __m128i, _mm256_extracti128_si256::<1>(a));
        _mm_storel_epi64(hi.add(16) as *mut __m128i, _mm256_extracti128_si256::<1>(c));
    }

    /// [`downsample_h2v2`] of both chroma components at once: `cb`, `cr` each hold two rows of
    /// `2·n` bytes (`n` = `ob.len()` = `or.len()`, a multiple of 8), the results go to `ob`,
    /// `or`. Sixteen columns of each a step: pair sums by `vpmaddubsw`, one pack for both.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn downsample(cb: &[u8], cr: &[u8], ob: &mut [u8], or: &mut [u8]) {
        let n = ob.len();
        assert!(n.is_multiple_of(8) && or.len() == n && cb.len() == 4 * n && cr.len() == 4 * n);
        // Sums plus bias over 4 of the two rows' pairs from byte `at`.
        let ones = _mm256_set1_epi8(1);
        let bias = _mm256_set1_epi32(1 | 2 << 16);
        let sum = |p: &[u8], at: usize| {
            let row = |r: usize| _mm256_maddubs_epi16(_mm256_loadu_si256(p.as_ptr().add(r * 2 * n + at) as *const __m256i), ones);
            _mm256_srli_epi16::<2>(_mm256_add_epi16(_mm256_add_epi16(row(0), row(1)), bias))
        };
        let mut i = 0;
        while i + 16 <= n {
            // [cb 0–7, cr 0–7 | cb 8–15, cr 8–15] to [cb 0–15 | cr 0–15].
            let v = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(sum(cb, 2 * i), sum(cr, 2 * i)));
            _mm_storeu_si128(ob.as_mut_ptr().add(i) as *mut __m128i, _mm256_castsi256_si128(v));
            _mm_storeu_si128(or.as_mut_ptr().add(i) as *mut __m128i, _mm256_extracti128_si256::<1>(v));
            i += 16;
        }
        if i < n {
            let (ones, bias) = (_mm256_castsi256_si128(ones), _mm256_castsi256_si128(bias));
            let sum = |p: &[u8]| {
                let row = |r: usize| _mm_maddubs_epi16(_mm_loadu_si128(p.as_ptr().add(r * 2 * n + 2 * i) as *const __m128i), ones);
                _mm_srli_epi16::<2>(_mm_add_epi16(_mm_add_epi16(row(0), row(1)), bias))
            };
            let v = _mm_packus_epi16(sum(cb), sum(cr));
            _mm_storel_epi64(ob.as_mut_ptr().add(i) as *mut __m128i, v);
            _mm_storel_epi64(or.as_mut_ptr().add(i) as *mut __m128i, _mm_unpackhi_epi64(v, v));
        }
    }

    /// The column sums of [`upsample_row_h2v2_fancy`] for output row `y` (for the pixels
    /// [`upsample_to_rgb`] leaves), edge-extended into
    /// `cs` (`dw` + 2 long: `cs[0]` and `cs[dw + 1]` repeat the edges, which is what the scalar edge
    /// formulas are).
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn column_sums(p: &[u8], cw: usize, dw: usize, dh: usize, y: usize, cs: &mut [u16]) {
        let (near, far) = (&p[y / 2 * cw..][..dw], &p[far_row(y, dh) * cw..][..dw]);
        assert!(cs.len() == dw + 2);
        let mut x = 0;
        while x + 16 <= dw {
            let n = _mm256_cvtepu8_epi16(_mm_loadu_si128(near.as_ptr().add(x) as *const __m128i));
            let f = _mm256_cvtepu8_epi16(_mm_loadu_si128(far.as_ptr().add(x) as *const __m128i));
            let s = _mm256_add_epi16(_mm256_add_epi16(n, _mm256_add_epi16(n, n)), f);
            _mm256_storeu_si256(cs.as_mut_ptr().add(x + 1) as *mut __m256i, s);
            x += 16;
        }
        for x in x..dw {
            cs[x + 1] = near[x] as u16 * 3 + far[x] as u16;
        }
        cs[0] = cs[1];
        cs[dw + 1] = cs[dw];
    }

    /// One output row: fancy upsampling of both chroma components from their (near, far) rows
    /// and [`ycc16`], 32 pixels (16 chroma columns) a step; returns how many pixels it did and
    /// writes their RGB bytes at `orow`, nothing past them. The column sums stay in registers
    /// (the caller's tail takes them from [`column_sums`]).
    /// The upsampled values stay in registers, in the order the unpacks give them: pixels
    /// [0–7 | 16–23] and [8–15 | 24–31], which is how the luma bytes unpack too. The neighbour
    /// columns come from registers by lane shifts, not from loads at an offset of one: those
    /// would straddle the stores just made and stall on store forwarding.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn upsample_to_rgb(yr: &[u8], cb: (&[u8], &[u8]), cr: (&[u8], &[u8]), orow: *mut u8) -> usize {
        let (w, dw) = (yr.len(), cb.0.len());
        assert!(cb.1.len() == dw && cr.0.len() == dw && cr.1.len() == dw);
        // The fancy biases 8 and 7 less 128 · 16: the shifts give the chroma centred on 0.
        let (b8, b7) = (_mm256_set1_epi16(8 - 2048), _mm256_set1_epi16(7 - 2048));
        // Column sums 3·near + far (as `column_sums`) of chroma columns x..x+16, or of column x
        // in every lane.
        let sums = |(n, f): (&[u8], &[u8]), x: usize| {
            let ld = |r: &[u8]| _mm256_cvtepu8_epi16(_mm_loadu_si128(r.as_ptr().add(x) as *const __m128i));
            let (n, f) = (ld(n), ld(f));
            _mm256_add_epi16(_mm256_add_epi16(n, _mm256_add_epi16(n, n)), f)
        };
        let sum1 = |(n, f): (&[u8], &[u8]), x: usize| _mm256_set1_epi16((n[x] as u16 * 3 + f[x] as u16) as i16);
        // Column x − 1 + j and x + 1 + j in lane j, from the sums of columns x − 16.. (`prev`),
        // x.. (`m`) and x + 16.. (`next`).
        let neighbours = |prev: __m256i, m: __m256i, next: __m256i| {
            (_mm256_alignr_epi8::<14>(m, _mm256_permute2x128_si256::<0x21>(prev, m)), _mm256_alignr_epi8::<2>(_mm256_permute2x128_si256::<0x21>(m, next), m))
        };
        // The even and odd output columns, centred on 0.
        let fancy = |(m, l, r): (__m256i, __m256i, __m256i)| {
            let m3 = _mm256_add_epi16(m, _mm256_add_epi16(m, m));
            let e = _mm256_srai_epi16::<4>(_mm256_add_epi16(_mm256_add_epi16(m3, b8), l));
            let o = _mm256_srai_epi16::<4>(_mm256_add_epi16(_mm256_add_epi16(m3, b7), r));
            (_mm256_unpacklo_epi16(e, o), _mm256_unpackhi_epi16(e, o))
        };
        // The sums of columns x − 16.. and x.. (the edge column repeats past the edge).
        let (mut pb, mut pr) = (sum1(cb, 0), sum1(cr, 0));
        let (mut mb, mut mr) = if dw >= 16 { (sums(cb, 0), sums(cr, 0)) } else { (pb, pr) };
        // Byte i of an RGB run's 32-byte store k is component (32k + i) mod 3.
        const fn phase(k: usize) -> [i8; 32] {
            let mut m = [0i8; 32];
            let mut i = 0;
            while i < 32 {
                m[i] = ((32 * k + i) % 3) as i8;
                i += 1;
            }
            m
        }
        const PH: [[i8; 32]; 3] = [phase(0), phase(1), phase(2)];
        let rgb_run = |[y, cb, cr]: [u8; 3]| {
            let mut px = [0u8; 4];
            ycc_to_rgb_px(y, cb, cr, &mut px);
            let v = _mm256_set1_epi32(i32::from_le_bytes(px));
            PH.map(|ph| _mm256_shuffle_epi8(v, _mm256_loadu_si256(ph.as_ptr() as *const __m256i)))
        };
        // The last flat run's Y, Cb, Cr and its 96 bytes (at first: black).
        let mut run = ([0, 128, 128], rgb_run([0, 128, 128]));
        let mut x = 0;
        while x + 16 <= dw && 2 * x + 32 <= w {
            let (nb, nr) = if x + 32 <= dw { (sums(cb, x + 16), sums(cr, x + 16)) } else { (sum1(cb, (x + 16).min(dw - 1)), sum1(cr, (x + 16).min(dw - 1))) };
            let (lb, rb) = neighbours(pb, mb, nb);
            let (lr, rr) = neighbours(pr, mr, nr);
            let (b, r) = ((mb, lb, rb), (mr, lr, rr));
            (pb, pr, mb, mr) = (mb, mr, nb, nr);
            // A flat run (backgrounds): 32 equal luma samples and, for both chroma components,
            // equal column sums over the 18 columns the filter reads, whose even and odd outputs
            // agree; then all 32 pixels are one colour.
            let yv = _mm256_loadu_si256(yr.as_ptr().add(2 * x) as *const __m256i);
            let flat = |(m, l, r): (__m256i, __m256i, __m256i)| {
                let eq = _mm256_movemask_epi8(_mm256_and_si256(_mm256_cmpeq_epi16(m, l), _mm256_cmpeq_epi16(m, r))) == -1;
                let v = _mm256_extract_epi16::<0>(m) as u16;
                (eq && (v * 4 + 8) >> 4 == (v * 4 + 7) >> 4).then_some(((v * 4 + 8) >> 4) as u8)
            };
            if _mm256_movemask_epi8(_mm256_cmpeq_epi8(yv, _mm256_set1_epi8(yr[2 * x] as i8))) == -1 {
                if let (Some(cb), Some(cr)) = (flat(b), flat(r)) {
                    let key = [yr[2 * x], cb, cr];
                    if key != run.0 {
                        run = (key, rgb_run(key));
                    }
                    for (k, &v) in run.1.iter().enumerate() {
                        _mm256_storeu_si256(orow.add(6 * x + 32 * k) as *mut __m256i, v);
                    }
                    x += 16;
                    continue;
                }
            }
            let (cb_lo, cb_hi) = fancy(b);
            let (cr_lo, cr_hi) = fancy(r);
            let z = _mm256_setzero_si256();
            let o = orow.add(6 * x);
            store_rgb(ycc16(_mm256_unpacklo_epi8(yv, z), cb_lo, cr_lo), o, o.add(48));
            store_rgb(ycc16(_mm256_unpackhi_epi8(yv, z), cb_hi, cr_hi), o.add(24), o.add(72));
            x += 16;
        }
        2 * x
    }
}

/// AVX-512 (BW, VBMI, VNNI) row steps: the same sums as [`rows_avx2`] with fewer instructions,
/// since Zen 4 runs 512-bit operations as two 256-bit halves and only saves on their count.
#[cfg(target_arch = "x86_64")]
mod rows_avx512 {
    use super::*;
    use std::arch::x86_64::*;

    /// Whether this CPU has what the functions here use.
    pub(super) fn detected() -> bool {
        is_x86_feature_detected!("avx512bw") && is_x86_feature_detected!("avx512vl") && is_x86_feature_detected!("avx512vbmi") && is_x86_feature_detected!("avx512vnni")
    }

    /// [`rows_avx2::rgb_to_ycc`] 32 pixels a step: a masked load of 16 pixels' 48 bytes (never
    /// past the row), one `vpermb` to four pixels per 128-bit lane and `vpshufb` to the 16-bit
    /// pairs (r, g), (g, b), (b, r) per dword,
    /// and each jccolor.c sum as two `vpdpwssd` onto its offset. The sums are in 0..2^24, so
    /// each result is byte 2 of its dword: one `vpermt2b` per component gathers 32 of them, no
    /// shifts or packs.
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi,avx512vnni,avx2")]
    pub(super) unsafe fn rgb_to_ycc(img: &[u8], at: usize, yo: &mut [u8], cbo: &mut [u8], cro: &mut [u8]) -> usize {
        let src = &img[at..];
        let w = yo.len();
        assert!(cbo.len() >= w && cro.len() >= w && src.len() >= 3 * w);
        let k = |a: i32, b: i32| _mm512_set1_epi32((a & 0xffff) | (b << 16));
        let (ky0, ky1) = (k(FY_R, FY_G / 2), k(FY_G / 2, FY_B));
        let (kcb0, kcb1) = (k(-FCB_G, FHALF / 2), k(FHALF / 2, -FCB_R));
        let (kcr0, kcr1) = (k(FHALF - 1, -FCR_G), k(-FCR_B, 1));
        let y_off = _mm512_set1_epi32(ONE_HALF);
        let c_off = _mm512_set1_epi32(CBCR_OFF + ONE_HALF - 1);
        /// Each 128-bit lane k: source bytes 12k..12k + 12 (pixels 4k..4k + 4).
        const fn spread() -> [u8; 64] {
            let mut m = [0u8; 64];
            let mut i = 0;
            while i < 64 {
                m[i] = (i / 16 * 12 + i % 16 % 12) as u8;
                i += 1;
            }
            m
        }
        /// Byte 2 of each dword of two registers: 32 results in the low half.
        const fn third_bytes() -> [u8; 64] {
            let mut m = [0u8; 64];
            let mut i = 0;
            while i < 32 {
                m[i] = (4 * (i % 16) + 2 + 64 * (i / 16)) as u8;
                i += 1;
            }
            m
        }
        const M: [[u8; 64]; 5] = [rgb_pairs(0, 1), rgb_pairs(1, 2), rgb_pairs(2, 0), third_bytes(), spread()];
        let ld = |m: &[u8; 64]| _mm512_loadu_si512(m.as_ptr() as *const _);
        let (mrg, mgb, mbr, gather, lanes) = (ld(&M[0]), ld(&M[1]), ld(&M[2]), ld(&M[3]), ld(&M[4]));
        // The last flat run's 48 bytes and its Y, Cb, Cr as dwords v << 16 (at first: black).
        let ycc = |px: &[u8]| rgb_to_ycc_px(px).map(|v| _mm512_set1_epi32((v as i32) << 16));
        let mut flat = (_mm512_setzero_si512(), ycc(&[0; 3]));
        // Y, Cb, Cr sums of the 16 pixels from byte 3x.
        let mut sixteen = |x: usize| {
            let p = src.as_ptr().add(3 * x);
            let v = _mm512_maskz_loadu_epi8(0xffff_ffff_ffff, p as *const i8);
            // Sixteen equal pixels (flat backgrounds): bytes 0..45 equal 3..48. The last flat
            // run's bytes (most of a background) take one compare; a flat run's sums are its
            // pixel's results (in byte 2 of each dword, where the gather takes them).
            if _mm512_cmpeq_epi8_mask(v, flat.0) == u64::MAX {
                return flat.1;
            }
            const LOW45: u64 = (1 << 45) - 1;
            if _mm512_mask_cmpeq_epi8_mask(LOW45, v, _mm512_maskz_loadu_epi8(LOW45, p.add(3) as *const i8)) == LOW45 {
                flat = (v, ycc(&src[3 * x..3 * x + 3]));
                return flat.1;
            }
            let v = _mm512_permutexvar_epi8(lanes, v);
            let (rg, gb, br) = (_mm512_shuffle_epi8(v, mrg), _mm512_shuffle_epi8(v, mgb), _mm512_shuffle_epi8(v, mbr));
            let sum = |a: __m512i, ka: __m512i, b: __m512i, kb: __m512i, off: __m512i| _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(off, a, ka), b, kb);
            [sum(rg, ky0, gb, ky1, y_off), sum(gb, kcb0, br, kcb1, c_off), sum(rg, kcr0, br, kcr1, c_off)]
        };
        let store = |o: &mut [u8], x: usize, a: __m512i, b: __m512i| {
            _mm256_storeu_si256(o.as_mut_ptr().add(x) as *mut __m256i, _mm512_castsi512_si256(_mm512_permutex2var_epi8(a, gather, b)))
        };
        let mut x = 0;
        while x + 32 <= w {
            let [ya, cba, cra] = sixteen(x);
            let [yb, cbb, crb] = sixteen(x + 16);
            store(yo, x, ya, yb);
            store(cbo, x, cba, cbb);
            store(cro, x, cra, crb);
            x += 32;
        }
        x
    }

    /// [`rows_avx2::column_sums`] and [`rows_avx2::upsample_to_rgb`] in one pass over the whole
    /// row, 64 pixels (32 chroma columns) a step, the last step's loads and stores masked to
    /// the row; `cb` and `cr` are each component's near and far row (`dw` long); returns
    /// `yr.len()`. The neighbour columns come from registers by `vpermt2w` (the previous
    /// step's columns, a broadcast of the next one), the RGB interleave is two `vpermb` per 64
    /// output bytes.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
    pub(super) unsafe fn upsample_to_rgb(yr: &[u8], cb: [&[u8]; 2], cr: [&[u8]; 2], orow: *mut u8) -> usize {
        use rows_avx2::{K_B_RS, K_G, K_R_RS};
        let (w, dw) = (yr.len(), cb[0].len());
        assert!(dw == w.div_ceil(2) && [cb[1], cr[0], cr[1]].iter().all(|r| r.len() == dw));
        // The fancy biases 8 and 7 less 128 · 16: the shifts give the chroma centred on 0.
        let (b8, b7) = (_mm512_set1_epi16(8 - 2048), _mm512_set1_epi16(7 - 2048));
        /// Word j of `a` (j < 32) or of `b` (32 + j) for lane `i`: the left neighbours from
        /// [previous, current], the right ones from [current, next].
        const fn shifted(left: bool) -> [u16; 32] {
            let mut m = [0u16; 32];
            let mut i = 0;
            while i < 32 {
                m[i] = if left { 31 + i as u16 } else { i as u16 + 1 };
                i += 1;
            }
            m
        }
        /// For output bytes 64v..64v + 64: pixel p's R at p, G at 64 + p (`vpermt2b` of R, G),
        /// B at p (a masked `vpermb` of B, the mask in [`blue`]).
        const fn interleave(v: usize) -> [u8; 64] {
            let mut m = [0u8; 64];
            let mut t = 0;
            while t < 64 {
                let (p, c) = ((64 * v + t) / 3, (64 * v + t) % 3);
                m[t] = if c == 1 { 64 + p as u8 } else { p as u8 };
                t += 1;
            }
            m
        }
        const fn blue(v: usize) -> u64 {
            let (mut m, mut t) = (0u64, 0);
            while t < 64 {
                if (64 * v + t) % 3 == 2 {
                    m |= 1 << t;
                }
                t += 1;
            }
            m
        }
        const SHIFT: [[u16; 32]; 2] = [shifted(true), shifted(false)];
        const IL: [[u8; 64]; 3] = [interleave(0), interleave(1), interleave(2)];
        const BLUE: [u64; 3] = [blue(0), blue(1), blue(2)];
        let (lidx, ridx) = (_mm512_loadu_si512(SHIFT[0].as_ptr() as *const _), _mm512_loadu_si512(SHIFT[1].as_ptr() as *const _));
        let il = IL.map(|m| _mm512_loadu_si512(m.as_ptr() as *const _));
        let low = |n: usize| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
        // The even and odd output columns of chroma columns x..x+32, centred on 0, interleaved
        // as pixels [0–7 | 16–23 | 32–39 | 48–55] and [8–15 | 24–31 | 40–47 | 56–63] (of 2x..).
        let sum = |[near, far]: [&[u8]; 2], x: usize| near[x] as i16 * 3 + far[x] as i16;
        // The column sums of chroma columns x..x+32 and of their left and right neighbours.
        let columns = |rows: [&[u8]; 2], x: usize, prev: &mut __m512i| {
            let ld = |r: &[u8]| _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(low(dw - x) as u32, r.as_ptr().add(x) as *const i8));
            let (near, far) = (ld(rows[0]), ld(rows[1]));
            let m = _mm512_add_epi16(_mm512_add_epi16(near, near), _mm512_add_epi16(near, far));
            let next = if x + 32 < dw { _mm512_set1_epi16(sum(rows, x + 32)) } else { m };
            let l = _mm512_permutex2var_epi16(*prev, lidx, m);
            let mut r = _mm512_permutex2var_epi16(m, ridx, next);
            if dw - x <= 32 {
                // The last column's right neighbour is itself.
                r = _mm512_mask_mov_epi16(r, 1 << (dw - 1 - x), m);
            }
            *prev = m;
            (m, l, r)
        };
        // The chroma value of a flat run: the `valid` columns' sums equal their neighbours' and
        // the even and odd outputs agree.
        let flat = |(m, l, r): (__m512i, __m512i, __m512i), valid: u32| {
            let eq = _mm512_mask_cmpeq_epi16_mask(valid, m, l) & _mm512_mask_cmpeq_epi16_mask(valid, m, r) == valid;
            let v = _mm_cvtsi128_si32(_mm512_castsi512_si128(m)) as u16;
            (eq && (v * 4 + 8) >> 4 == (v * 4 + 7) >> 4).then_some(((v * 4 + 8) >> 4) as u8)
        };
        let fancy = |(m, l, r): (__m512i, __m512i, __m512i)| {
            let m3 = _mm512_add_epi16(m, _mm512_add_epi16(m, m));
            let e = _mm512_srai_epi16::<4>(_mm512_add_epi16(_mm512_add_epi16(m3, b8), l));
            let o = _mm512_srai_epi16::<4>(_mm512_add_epi16(_mm512_add_epi16(m3, b7), r));
            (_mm512_unpacklo_epi16(e, o), _mm512_unpackhi_epi16(e, o))
        };
        // jdcolor.c on 32 pixels: R, G, B in i16 lanes. The red and blue terms as in
        // [`rows_avx2::ycc16`]; green's two products go onto the rounding constant by `vpdpwssd`
        // and its result is the high word of each dword sum, which one `vpermt2w` gathers.
        let kg = _mm512_set1_epi32((-F_CB_G & 0xffff) | (K_G << 16));
        let half = _mm512_set1_epi32(ONE_HALF);
        /// Word 1 of dwords 4k..4k + 4 of `a`, then of `b`, in 128-bit lane k (as `vpackssdw`
        /// of the sums shifted by 16 orders them).
        const fn high_words() -> [u16; 32] {
            let mut m = [0u16; 32];
            let mut i = 0;
            while i < 32 {
                let (k, j) = (i / 8, i % 8);
                m[i] = if j < 4 { 2 * (4 * k + j) + 1 } else { 32 + 2 * (4 * k + j - 4) + 1 } as u16;
                i += 1;
            }
            m
        }
        const HIGH: [u16; 32] = high_words();
        let high = _mm512_loadu_si512(HIGH.as_ptr() as *const _);
        let (kr, kb) = (_mm512_set1_epi16(K_R_RS), _mm512_set1_epi16(K_B_RS));
        let ycc = |yy: __m512i, cb: __m512i, cr: __m512i| {
            let r = _mm512_add_epi16(_mm512_add_epi16(yy, cr), _mm512_mulhrs_epi16(cr, kr));
            let b = _mm512_add_epi16(_mm512_add_epi16(yy, cb), _mm512_mulhrs_epi16(cb, kb));
            let g = |v: __m512i| _mm512_dpwssd_epi32(half, v, kg);
            let g = _mm512_permutex2var_epi16(g(_mm512_unpacklo_epi16(cb, cr)), high, g(_mm512_unpackhi_epi16(cb, cr)));
            (r, _mm512_add_epi16(yy, _mm512_sub_epi16(g, cr)), b)
        };
        // The first column's left neighbour is itself.
        let (mut pb, mut pr) = (_mm512_set1_epi16(sum(cb, 0)), _mm512_set1_epi16(sum(cr, 0)));
        let z = _mm512_setzero_si512();
        /// Byte i of a 64-byte store k of RGB is component (64k + i) mod 3 of pixel (64k + i) / 3.
        const fn phase(k: usize, pixel: bool) -> [u8; 64] {
            let mut m = [0u8; 64];
            let mut i = 0;
            while i < 64 {
                m[i] = if pixel { (64 * k + i) / 3 } else { (64 * k + i) % 3 } as u8;
                i += 1;
            }
            m
        }
        const PH: [[u8; 64]; 3] = [phase(0, false), phase(1, false), phase(2, false)];
        const PX: [[u8; 64]; 3] = [phase(0, true), phase(1, true), phase(2, true)];
        let px_of = PX.map(|m| _mm512_loadu_si512(m.as_ptr() as *const _));
        // [`chroma_terms`] as byte patterns of the RGB stores: their positive parts (added to the
        // luma, saturating at 255) and negative parts (subtracted, saturating at 0); every term
        // is under 256 in size.
        let terms = |cb: u8, cr: u8| {
            let t = chroma_terms(cb, cr);
            let pattern = |part: fn(i32) -> u8| {
                let v = _mm512_set1_epi32(i32::from_le_bytes([part(t[0]), part(t[1]), part(t[2]), 0]));
                PH.map(|ph| _mm512_shuffle_epi8(v, _mm512_loadu_si512(ph.as_ptr() as *const _)))
            };
            (pattern(|t| t.max(0) as u8), pattern(|t| (-t).max(0) as u8))
        };
        // The last flat chroma's Cb, Cr and its term patterns (at first: 128, terms 0).
        let mut run = ([128, 128], terms(128, 128));
        let mut x = 0;
        while x < dw {
            let (b, r) = (columns(cb, x, &mut pb), columns(cr, x, &mut pr));
            let px = (w - 2 * x).min(64);
            let yv = _mm512_maskz_loadu_epi8(low(px), yr.as_ptr().add(2 * x) as *const i8);
            // Flat chroma (backgrounds, smooth regions at low quality): for both components,
            // equal column sums over the columns the filter reads, whose even and odd outputs
            // agree; then each output byte is its pixel's luma plus the chroma's term.
            let valid = low(dw - x) as u32;
            let rgb: [__m512i; 3] = if let (Some(cbv), Some(crv)) = (flat(b, valid), flat(r, valid)) {
                if [cbv, crv] != run.0 {
                    run = ([cbv, crv], terms(cbv, crv));
                }
                let (add, sub) = &run.1;
                std::array::from_fn(|v| _mm512_subs_epu8(_mm512_adds_epu8(_mm512_permutexvar_epi8(px_of[v], yv), add[v]), sub[v]))
            } else {
                let ((cb_lo, cb_hi), (cr_lo, cr_hi)) = (fancy(b), fancy(r));
                let (r0, g0, b0) = ycc(_mm512_unpacklo_epi8(yv, z), cb_lo, cr_lo);
                let (r1, g1, b1) = ycc(_mm512_unpackhi_epi8(yv, z), cb_hi, cr_hi);
                // Saturating packs clamp to 0..255 and put the 64 pixels back in order.
                let (r, g, b) = (_mm512_packus_epi16(r0, r1), _mm512_packus_epi16(g0, g1), _mm512_packus_epi16(b0, b1));
                std::array::from_fn(|v| _mm512_mask_permutexvar_epi8(_mm512_permutex2var_epi8(r, il[v], g), BLUE[v], il[v], b))
            };
            let o = orow.add(6 * x);
            for (v, &out) in rgb.iter().enumerate() {
                let bytes = (3 * px).saturating_sub(64 * v);
                if bytes == 0 {
                    break;
                }
                if bytes >= 64 {
                    _mm512_storeu_si512(o.add(64 * v) as *mut _, out);
                } else {
                    _mm512_mask_storeu_epi8(o.add(64 * v) as *mut i8, low(bytes), out);
                }
            }
            x += 32;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng as _, SeedableRng};

    #[test]
    fn vector_path_matches_scalar_path() {
        let mut rng = crate::Rng::seed_from_u64(11);
        for (h, w) in [(32, 32), (224, 224), (1, 1), (9, 17), (64, 40), (31, 33), (5, 79), (3, 113), (4, 66), (6, 64), (7, 63), (2, 130)] {
            for c in [1, 3] {
                // Noise (large AC, clipping and the range limit) and smooth ramps (long zero runs).
                let noise: Vec<u8> = (0..h * w * c).map(|_| rng.gen()).collect();
                let ramp: Vec<u8> = (0..h * w * c).map(|i| ((i / c % w) * 7 + (i / c / w) * 3 + i % c * 40) as u8).collect();
                // Flat regions (the flat-block and flat-run shortcuts): tiles of random colours,
                // 5 to 100 pixels (the AVX-512 upsampling's 64-pixel runs fit in the widest),
                // with single pixels one off (a block or run that just misses).
                let mut tiles = vec![0u8; h * w * c];
                for (band, ts) in [5, 8, 16, 20, 40, 100].into_iter().enumerate() {
                    let colours: Vec<u8> = (0..(h / ts + 1) * (w / ts + 1) * c).map(|_| if rng.gen_bool(0.3) { 0 } else { rng.gen() }).collect();
                    let (y0, y1) = (h * band / 6, h * (band + 1) / 6);
                    for y in y0..y1 {
                        for x in 0..w {
                            for k in 0..c {
                                let v = colours[((y / ts) * (w / ts + 1) + x / ts) * c + k];
                                tiles[(y * w + x) * c + k] = if rng.gen_bool(0.002) { v ^ 1 } else { v };
                            }
                        }
                    }
                }
                for img in [&noise, &ramp, &tiles] {
                    for q in [1, 7, 10, 15, 25, 50, 58, 80, 95, 100] {
                        let want = round_trip_scalar(img, h, w, c, q);
                        assert!(round_trip(img, h, w, c, q) == want, "{h}x{w}x{c} q{q}");
                        #[cfg(target_arch = "x86_64")]
                        if std::arch::is_x86_feature_detected!("avx2") {
                            // SAFETY: AVX2 is present; AVX-512 is not asked for.
                            let avx2 = unsafe { round_trip_avx2(img, h, w, c, q, false) };
                            assert!(avx2 == want, "avx2 {h}x{w}x{c} q{q}");
                        }
                    }
                }
            }
        }
    }

    /// Flat rectangles of every grey level (16×16, at every quality: every entry of the luma
    /// flat-block tables) and of 256 colours (96×16: flat blocks, colour runs and upsampled runs
    /// with flat neighbours); one-colour images of widths that end rows in partial vector steps
    /// (flat too), then with one pixel one off in a row's last columns (a partial run that just
    /// misses).
    #[test]
    fn flat_images_match_scalar_path() {
        for (c, side, qs) in [(1, 16, (1..=100).collect::<Vec<u32>>()), (3, 96, vec![1, 7, 15, 50, 90, 100])] {
            let (h, w) = (16, side * 256);
            let img: Vec<u8> = (0..h * w * c).map(|i| ((i / c % w / side) * (1 + 60 * (i % c))) as u8).collect();
            for q in qs {
                assert!(round_trip(&img, h, w, c, q) == round_trip_scalar(&img, h, w, c, q), "c{c} q{q}");
            }
        }
        let h = 6;
        for w in [16, 33, 47, 64, 65, 96, 130, 200, 224] {
            let mut img: Vec<u8> = (0..h * w * 3).map(|i| [30, 200, 91][i % 3]).collect();
            for off in [None, Some((3 * w - 1) * 3 + 1), Some((2 * w - 3) * 3)] {
                if let Some(i) = off {
                    img[i] ^= 1;
                }
                for q in [7, 50, 100] {
                    assert!(round_trip(&img, h, w, 3, q) == round_trip_scalar(&img, h, w, 3, q), "{w} {off:?} q{q}");
                }
            }
        }
    }

    /// The vector colour conversions against the scalar pixel formulas, for every 24-bit input.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn colour_conversions_are_exact() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        // One row per value of the first byte: all (second, third) byte pairs (the RGB row ends
        // where its buffer does, as the last row of an image).
        let n = 1 << 16;
        let mut rgb = vec![0u8; 3 * n];
        let (mut y, mut cb, mut cr) = (vec![0u8; n], vec![0u8; n], vec![0u8; n]);
        for a in 0..256 {
            let row: Vec<u8> = (0..n).flat_map(|i| [a as u8, (i >> 8) as u8, i as u8]).collect();
            // SAFETY: AVX2 is present.
            let done = unsafe { rows_avx2::rgb_to_ycc(&row, 0, &mut y, &mut cb, &mut cr) };
            assert_eq!(done, n);
            for (x, px) in row.chunks_exact(3).enumerate() {
                assert_eq!([y[x], cb[x], cr[x]], rgb_to_ycc_px(px), "rgb {px:?}");
            }
            if rows_avx512::detected() {
                [&mut y, &mut cb, &mut cr].into_iter().for_each(|v| v.fill(0));
                // SAFETY: AVX-512 is present.
                let done = unsafe { rows_avx512::rgb_to_ycc(&row, 0, &mut y, &mut cb, &mut cr) };
                assert_eq!(done, n);
                for (x, px) in row.chunks_exact(3).enumerate() {
                    assert_eq!([y[x], cb[x], cr[x]], rgb_to_ycc_px(px), "avx512 rgb {px:?}");
                }
            }
            let (ya, cbs, crs) = (vec![a as u8; n], (0..n).map(|i| (i >> 8) as u8).collect::<Vec<u8>>(), (0..n).map(|i| i as u8).collect::<Vec<u8>>());
            for x in (0..n).step_by(16) {
                use std::arch::x86_64::*;
                // SAFETY: AVX2 is present; 16 pixels are read from each row at x and 48 bytes
                // written at 3x.
                unsafe {
                    let ld = |p: &[u8]| _mm256_cvtepu8_epi16(_mm_loadu_si128(p.as_ptr().add(x) as *const __m128i));
                    let c128 = _mm256_set1_epi16(128);
                    let o = rgb.as_mut_ptr().add(3 * x);
                    rows_avx2::store_rgb(rows_avx2::ycc16(ld(&ya), _mm256_sub_epi16(ld(&cbs), c128), _mm256_sub_epi16(ld(&crs), c128)), o, o.add(24));
                }
            }
            for x in 0..n {
                let mut o = [0u8; 3];
                ycc_to_rgb_px(ya[x], cbs[x], crs[x], &mut o);
                assert_eq!(rgb[3 * x..3 * x + 3], o, "ycc {} {} {}", ya[x], cbs[x], crs[x]);
            }
        }
    }

    /// The AVX-512 inverse conversion, for every (Y, Cb, Cr): flat chroma (its shortcut)
    /// upsamples to itself exactly; and chroma columns alternating between each value and the
    /// next (the full path) against the scalar upsampling. The 511-pixel rows end in a partial
    /// step.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_upsampling_conversion_is_exact() {
        if !rows_avx512::detected() {
            return;
        }
        let w = 511;
        let yr: Vec<u8> = (0..w).map(|x| x as u8).collect();
        let mut rgb = vec![0u8; 3 * w];
        let (mut cbu, mut cru, mut cs) = (vec![0u8; 512], vec![0u8; 512], vec![0u16; 256]);
        for cb in 0..256u16 {
            for cr in 0..256u16 {
                for step in [0, 1] {
                    let row = |v: u16| -> Vec<u8> { (0..256).map(|x| (v + step * (x % 2)) as u8).collect() };
                    let (b, r) = (row(cb), row(cr));
                    upsample_row_h2v2_fancy(&b, 256, 256, 1, 0, &mut cs, &mut cbu);
                    upsample_row_h2v2_fancy(&r, 256, 256, 1, 0, &mut cs, &mut cru);
                    // SAFETY: AVX-512 is present; `rgb` holds the row.
                    assert_eq!(unsafe { rows_avx512::upsample_to_rgb(&yr, [&b, &b], [&r, &r], rgb.as_mut_ptr()) }, w);
                    for x in 0..w {
                        let mut o = [0u8; 3];
                        ycc_to_rgb_px(yr[x], cbu[x], cru[x], &mut o);
                        assert_eq!(rgb[3 * x..3 * x + 3], o, "ycc {} {} {}", yr[x], cbu[x], cru[x]);
                    }
                }
            }
        }
    }

    /// The vector quantiser's reciprocal multiplies against the scalar division, for every
    /// 16-bit coefficient and every quantiser value.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn quantiser_is_exact() {
        use std::arch::x86_64::*;
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        for qv in 1..=255 {
            // SAFETY: AVX2 is present; the loads and stores are of 16 i16.
            unsafe {
                let t = block_avx2::Tables::new(&[qv; 64]);
                let d = qv << 3;
                for base in (-32768..32768).step_by(16) {
                    let c: [i16; 16] = std::array::from_fn(|j| (base + j as i32) as i16);
                    let mut q = [0i16; 16];
                    let v = block_avx2::quantise(_mm256_loadu_si256(c.as_ptr() as *const __m256i), &t, 3);
                    _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, v);
                    for j in 0..16 {
                        let x = c[j] as i32;
                        let want = (x.abs() + d / 2) / d * x.signum();
                        assert_eq!(q[j] as i32, want, "t {x} q {qv}");
                    }
                }
            }
        }
    }
}
