//! Two horizontally adjacent blocks' forward DCT, quantisation, dequantisation and inverse DCT
//! in 16-bit lanes, as libjpeg-turbo's jfdctint/jquanti/jidctint-avx2 do: register i holds row
//! (or after a transpose column) i of the left block in its low 128 bits and of the right block
//! in its high 128 bits, every product is a `vpmaddwd` of two 16-bit terms into 32 bits, and each
//! pass's descaled results pack back to 16 bits. The products and sums are the scalar path's
//! integers regrouped (z5 folded into the constants as in the SIMD islow code), so every lane
//! computes the scalar result as long as the 16-bit terms cannot overflow:
//! - forward pass 1 sees samples 0..255 (sums ≤ 2040; the level shift, which only moves the
//!   sum, is taken off it) and outputs those of samples −128..127 (≤ 4096); pass 2 sums eight
//!   pass-1 outputs of one sign pattern, which stays within −32768..32640 (row sums of samples
//!   are −1024..1016, so all-DC pass-1 rows are at most 4064 when positive);
//! - the dequantised coefficients are the forward ones rounded to a multiple of q ≤ 255, at most
//!   about 4200; the inverse pass 1 output is the exact transform (≤ 4096) plus the quantisation
//!   error, at most 127.5 per coefficient times a column weight sum under 11 (4 · 127.5 · 10.8 ≈
//!   5500), so it and the pass-2 sums of two of them stay far inside 16 bits; the final samples
//!   before the range limit are within a few hundred of 0..255.
//!
//! At low quality most blocks skip most of this, by proofs that coefficients quantise to zero
//! (Parseval on a block's [`spread`], with [`FDCT_ERR`] bounding islow's rounding): DC-only
//! blocks are filled without a transform, and pairs whose coefficients outside the top-left
//! 4×4 are proven zero compute only that 4×4 forward and start the inverse from it
//! ([`low_quantised`], [`idct4_half`]).
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
    /// Blocks whose [`spread`] is below this quantise every AC coefficient to zero (see
    /// [`FDCT_ERR`]); at least 1, as flat blocks (spread 0) have AC exactly 0 in islow too.
    /// Below [`LOW_MIN`]², where the bound admits little beyond flat blocks, [`code_plane`]
    /// looks for those alone ([`flat`]), which is cheaper than the spreads.
    dc_only: i32,
    /// The decoded sample of a block whose 64 samples all equal the index.
    flat: [u8; 256],
    /// The DC quantiser and the reciprocal ⌈2³²/(8·q)⌉ that divides by its divisor exactly (as
    /// the scalar `code_plane` does).
    dc_q: i32,
    dc_recip: u64,
    /// Below this, the part of a block's spread not carried by the top-left 4×4 proves the
    /// rest zero ([`low_quantised`]): (4·min q − FDCT_ERR)² over the coefficients outside it;
    /// 0 (the proof is not tried) where some AC coefficient's 4q − FDCT_ERR is under
    /// [`LOW_MIN`].
    hf_zero: i32,
    /// The quantiser's (recip, corr, scale) and q for half-width coefficient rows [0 | 1] and
    /// [2 | 3], columns 0–3.
    lf: [[__m256i; 4]; 2],
    /// Packed `vpmaddwd` constants: output 2 of `fdct_1d` from (tmp13, tmp12), and outputs 1
    /// and 3 from (tmp4, tmp5) and (tmp6, tmp7), `odd_rotation`'s sums regrouped by input.
    even_lf: __m256i,
    odd_lf: [__m256i; 4],
    /// The CPU has AVX-512 VNNI (with VL): [`spread`] sums the squares with `vpdpbusd`.
    pub(super) vnni: bool,
}

/// A bound on |t − T| for every coefficient, where t is `fdct_islow`'s integer output and T
/// the exact DCT at the same scale (8× orthonormal), for any block of samples −128..127: the
/// 13-bit constants and the rounding of the two passes (`fdct_error_bound` in the tests
/// derives it from islow's linear maps). With it, Parseval proves coefficients zero without
/// computing them: T's AC terms have Σ T² = [`spread`], so |t| < √spread + FDCT_ERR, and a
/// coefficient with |t| < 4q quantises to 0 (divisor 8q, rounded half away from zero).
pub(super) const FDCT_ERR: i32 = 3;

/// After [`low_quantised`] fails on a pair, the pairs that skip it: on noise or texture it
/// fails on nearly every pair (an eighth of the tries left), where it holds it rarely fails.
const LOW_BACKOFF: u32 = 7;

/// The least 4·q − [`FDCT_ERR`] over the AC coefficients for which [`code_plane`] takes the
/// spreads of all blocks and tries the bounds on them (DC-only, [`low_quantised`]). Below it
/// a bound, which must allow for one coefficient carrying all of the spread it leaves, rarely
/// holds on real blocks (1 try in 135 for the coefficients outside the 4×4 on the CIFAR-size
/// bench images at quality 40–58, against 97–100% above it), and the spreads cost more than
/// they save (at quality 58 on 32×32 images).
pub(super) const LOW_MIN: i32 = 100;

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
            // the look-up is its output by construction.
            flat: std::array::from_fn(|v| super::code_plane(&[v as u8; 64], 8, 8, qt)[0]),
            dc_only: qt[1..].iter().map(|&q| 4 * q - FDCT_ERR).min().map_or(1, |m| if m > 0 { m * m } else { 1 }),
            dc_q: qt[0],
            dc_recip: (1u64 << 32).div_ceil(qt[0] as u64 * 8),
            hf_zero: match (0..64).filter(|i| i / 8 >= 4 || i % 8 >= 4).map(|i| 4 * qt[i] - FDCT_ERR).min() {
                Some(m) if qt[1..].iter().all(|&q| 4 * q - FDCT_ERR >= LOW_MIN) => m * m,
                _ => 0,
            },
            lf: std::array::from_fn(|j| {
                std::array::from_fn(|k| {
                    let r: [i16; 8] = std::array::from_fn(|i| {
                        let q = qt[(2 * j + i / 4) * 8 + i % 4];
                        if k < 3 { rc(q, k) } else { q as i16 }
                    });
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(r.as_ptr() as *const __m128i))
                })
            }),
            even_lf: _mm256_set1_epi32(word_pair(FIX_0_541196100 + FIX_0_765366865, FIX_0_541196100)),
            odd_lf: std::array::from_fn(|i| {
                // odd_rotation(tmp4, tmp5, tmp6, tmp7) = [o7, o5, o3, o1].
                let (out, first) = (if i < 2 { 3 } else { 2 }, 2 * (i % 2));
                let k = |j: usize| odd_rotation(j.eq(&0) as i32, j.eq(&1) as i32, j.eq(&2) as i32, j.eq(&3) as i32)[out];
                _mm256_set1_epi32(word_pair(k(first), k(first + 1)))
            }),
            vnni: is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"),
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
    madd2(xy, _mm256_set1_epi32(word_pair(k0, k1)))
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

/// A row sum of eight samples 0..255 as the sum of the samples − 128 (the differences in the
/// other outputs need no shift).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn level_shift(e0: __m256i) -> __m256i {
    _mm256_sub_epi16(e0, _mm256_set1_epi16(8 * 128))
}

/// Transpose the 8×8 bytes of each 128-bit half of `a` = [row 0 | row 1], [2 | 3], [4 | 5],
/// [6 | 7] (8 bytes each) to [column 0 | column 1], …, and back.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose_bytes(a: [__m256i; 4]) -> [__m256i; 4] {
    let (b0, b1) = (_mm256_unpacklo_epi8(a[0], a[1]), _mm256_unpackhi_epi8(a[0], a[1]));
    let (b2, b3) = (_mm256_unpacklo_epi8(a[2], a[3]), _mm256_unpackhi_epi8(a[2], a[3]));
    // Columns 0–3 and 4–7 of rows 0–3, then of rows 4–7.
    let (c0, c1) = (_mm256_unpacklo_epi8(b0, b1), _mm256_unpackhi_epi8(b0, b1));
    let (c2, c3) = (_mm256_unpacklo_epi8(b2, b3), _mm256_unpackhi_epi8(b2, b3));
    [_mm256_unpacklo_epi32(c0, c2), _mm256_unpackhi_epi32(c0, c2), _mm256_unpacklo_epi32(c1, c3), _mm256_unpackhi_epi32(c1, c3)]
}

/// [`fdct_1d`] with pass 1's (`P2` false; samples 0..255, see [`level_shift`]) or pass 2's
/// output scaling.
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
        [dc(level_shift(e0)), ac(o1), ac(o2), ac(o3), dc(e4), ac(o5), ac(o6), ac(o7)]
    }
}

/// [`idct_1d`] descaled by `N`; `P2`: pass 2, whose output goes to [`store_columns`] (see
/// [`pass2_bias`]).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn idct<const N: i32, const P2: bool>(mut x: [__m256i; 8]) -> [__m256i; 8] {
    if P2 {
        x[0] = pass2_bias::<N>(x[0]);
    }
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
    idct_out::<N, P2>([tmp10, tmp11, tmp12, tmp13], odd(x[7], x[5], x[3], x[1]))
}

/// Input 0 of the last inverse pass (descaled by `N`) with that pass's rounding constant and
/// the range limit's offset 512 (`store_columns`) added: its every term is x₀·2^CONST_BITS, so
/// adding (2^(N−1) + 512·2^N) / 2^CONST_BITS to x₀ adds them to every 32-bit sum exactly,
/// and the descale becomes a shift. The samples stay 16-bit: x₀ (pass-1 output, under about
/// 9600 in magnitude, see the module doc) plus 16400 is under 32768, and the outputs are
/// the samples (within a few hundred of 0..255) plus 512.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn pass2_bias<const N: i32>(x0: __m256i) -> __m256i {
    _mm256_add_epi16(x0, _mm256_set1_epi16((((1 << (N - 1)) + (512 << N)) >> CONST_BITS) as i16))
}

/// [`idct`] of inputs 0–3 with 4–7 zero: each even and odd term is one `vpmaddwd` of
/// (x2, x0) or (x3, x1), the constants of the dropped inputs' terms folded away.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn idct4<const N: i32>(x: [__m256i; 4]) -> [__m256i; 8] {
    let (e, o) = (pair(x[2], pass2_bias::<N>(x[0])), pair(x[3], x[1]));
    let even = std::array::from_fn(|i| madd(e, IDCT4_EVEN[i].0, IDCT4_EVEN[i].1));
    let odd = std::array::from_fn(|i| madd(o, IDCT4_ODD[i].0, IDCT4_ODD[i].1));
    idct_out::<N, true>(even, odd)
}

/// [`idct4`]'s constants: (tmp10, tmp11, tmp12, tmp13) from (x2, x0) and the odd part from
/// (x3, x1).
const IDCT4_EVEN: [(i32, i32); 4] = {
    let (k, c2, c6) = (1 << CONST_BITS, FIX_0_541196100 + FIX_0_765366865, FIX_0_541196100);
    [(c2, k), (c6, k), (-c6, k), (-c2, k)]
};
const IDCT4_ODD: [(i32, i32); 4] = {
    let z5 = FIX_1_175875602;
    [
        (z5 - FIX_1_961570560, z5 - FIX_0_899976223),
        (z5 - FIX_2_562915447, z5 - FIX_0_390180644),
        (FIX_3_072711026 - FIX_2_562915447 + z5 - FIX_1_961570560, z5),
        (z5, FIX_1_501321110 - FIX_0_899976223 + z5 - FIX_0_390180644),
    ]
};

/// [`idct4`]'s pass over half-width coefficient rows `d` = [0 | 1], [2 | 3] (columns 0–3; the
/// others zero), descaled by `N`: half-width output rows [0 | 1], [2 | 3], [4 | 5], [6 | 7].
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn idct4_half<const N: i32>(d: [__m256i; 2]) -> [__m256i; 4] {
    let (e, o) = (_mm256_unpacklo_epi16(d[1], d[0]), _mm256_unpackhi_epi16(d[1], d[0]));
    let k = |(a, b): (i32, i32)| _mm256_set1_epi32(word_pair(a, b));
    // The rounding constant goes into the even terms, each of which makes two outputs.
    let r = _mm256_set1_epi32(1 << (N - 1));
    let even: [__m256i; 4] = std::array::from_fn(|i| _mm256_add_epi32(_mm256_madd_epi16(e, k(IDCT4_EVEN[i])), r));
    let odd: [__m256i; 4] = std::array::from_fn(|i| _mm256_madd_epi16(o, k(IDCT4_ODD[i])));
    let d = |v| _mm256_srai_epi32::<N>(v);
    let (a, s) = (|x, y| d(_mm256_add_epi32(x, y)), |x, y| d(_mm256_sub_epi32(x, y)));
    [
        _mm256_packs_epi32(a(even[0], odd[3]), a(even[1], odd[2])),
        _mm256_packs_epi32(a(even[2], odd[1]), a(even[3], odd[0])),
        _mm256_packs_epi32(s(even[3], odd[0]), s(even[2], odd[1])),
        _mm256_packs_epi32(s(even[1], odd[2]), s(even[0], odd[3])),
    ]
}

/// Half-width rows [0 | 1], [2 | 3], [4 | 5], [6 | 7] of four columns to those columns, one
/// register each (rows in the lanes).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn half_to_columns(a: [__m256i; 4]) -> [__m256i; 4] {
    let (t0, t1) = (_mm256_unpacklo_epi16(a[0], a[1]), _mm256_unpackhi_epi16(a[0], a[1]));
    let (t2, t3) = (_mm256_unpacklo_epi16(a[2], a[3]), _mm256_unpackhi_epi16(a[2], a[3]));
    // Columns (0, 1) and (2, 3) of rows 0–3, then of rows 4–7.
    let (l0, l1) = (_mm256_unpacklo_epi16(t0, t1), _mm256_unpackhi_epi16(t0, t1));
    let (h0, h1) = (_mm256_unpacklo_epi16(t2, t3), _mm256_unpackhi_epi16(t2, t3));
    [_mm256_unpacklo_epi64(l0, h0), _mm256_unpackhi_epi64(l0, h0), _mm256_unpacklo_epi64(l1, h1), _mm256_unpackhi_epi64(l1, h1)]
}

/// The inverse butterfly's last stage from (tmp10, tmp11, tmp12, tmp13) and the odd part,
/// descaled by `N` (`P2`: the rounding constant is already in, [`pass2_bias`]).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn idct_out<const N: i32, const P2: bool>([tmp10, tmp11, tmp12, tmp13]: [W; 4], [t0, t1, t2, t3]: [W; 4]) -> [__m256i; 8] {
    let d = |x: W| if P2 { _mm256_packs_epi32(_mm256_srai_epi32::<N>(x.0), _mm256_srai_epi32::<N>(x.1)) } else { descale::<N>(x) };
    [
        d(add(tmp10, t3)),
        d(add(tmp11, t2)),
        d(add(tmp12, t1)),
        d(add(tmp13, t0)),
        d(sub(tmp13, t0)),
        d(sub(tmp12, t1)),
        d(sub(tmp11, t2)),
        d(sub(tmp10, t3)),
    ]
}

/// Quantise row `i` of coefficients: the quotients, signed.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn quantise(c: __m256i, t: &Tables, i: usize) -> __m256i {
    quantise_by(c, t.recip[i], t.corr[i], t.scale[i])
}

/// ⌊(|c| + corr)·recip / 2^r⌋ with the sign of c (see [`Tables`]).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quantise_by(c: __m256i, recip: __m256i, corr: __m256i, scale: __m256i) -> __m256i {
    let x = _mm256_add_epi16(_mm256_abs_epi16(c), corr);
    _mm256_sign_epi16(mulhi_u16(mulhi_u16(x, recip), scale), c)
}


/// For the `N` (1, 2 or 4) blocks at `b`, `b` + 8, … (rows `stride` apart): the decoded
/// sample each would have if its AC coefficients were zero, and its spread, 64·Σx² − (Σx)².
/// The spread is 64 times the sum of squared deviations from the mean, which by Parseval is
/// the sum of the squared exact AC coefficients (see [`FDCT_ERR`]); it is 0 exactly for a flat
/// block. Σx is islow's DC coefficient plus 8192 (exact), quantised as the scalar `code_plane`
/// does; with zero AC the inverse DCT is a constant, as in the scalar shortcuts.
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn spread<const N: usize, const VNNI: bool>(b: *const u8, stride: usize, t: &Tables) -> ([i32; 4], [i32; 4], Option<__m256i>) {
    let z = _mm256_setzero_si256();
    let (mut s, mut lo, mut hi) = (z, z, z);
    for y in 0..8 {
        let r = b.add(y * stride);
        let v = match N {
            4 => _mm256_loadu_si256(r as *const __m256i),
            2 => _mm256_zextsi128_si256(_mm_loadu_si128(r as *const __m128i)),
            _ => _mm256_zextsi128_si256(_mm_loadl_epi64(r as *const __m128i)),
        };
        // Per block (quadword) sums.
        s = _mm256_add_epi64(s, _mm256_sad_epu8(v, z));
        if VNNI {
            // Σ x·(x − 128) per half block (doubleword): unsigned bytes times signed ones, four
            // products a lane, without the 16-bit steps.
            let c = _mm256_xor_si256(v, _mm256_set1_epi8(-128));
            // SAFETY: `Tables::vnni` (the only way here) says the CPU has AVX512-VNNI and VL. The
            // EVEX form is forced: the VEX one is AVX-VNNI, a different CPUID bit (Zen 4 lacks it).
            std::arch::asm!("{{evex}} vpdpbusd {acc}, {a}, {b}", acc = inout(ymm_reg) lo, a = in(ymm_reg) v, b = in(ymm_reg) c, options(pure, nomem, nostack, preserves_flags));
        } else {
            // Squares of blocks 0 | 2 and 1 | 3.
            let (l, h) = (_mm256_unpacklo_epi8(v, z), _mm256_unpackhi_epi8(v, z));
            lo = _mm256_add_epi32(lo, _mm256_madd_epi16(l, l));
            hi = _mm256_add_epi32(hi, _mm256_madd_epi16(h, h));
        }
    }
    let s = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi32::<0b1000>(s)));
    let sq = if VNNI {
        // [b0 b1 b0 b1 | b2 b3 b2 b3], blocks 0–3 in the low half, plus 128·Σx.
        let sq = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(_mm256_hadd_epi32(lo, lo)));
        _mm_add_epi32(sq, _mm_slli_epi32::<7>(s))
    } else {
        // [b0 b1 b0 b1 | b2 b3 b2 b3], then blocks 0–3 in the low half.
        let sq = _mm256_hadd_epi32(_mm256_hadd_epi32(lo, hi), z);
        _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(sq))
    };
    let e = _mm_sub_epi32(_mm_slli_epi32::<6>(sq), _mm_mullo_epi32(s, s));
    // The quotient is the high half of the 64-bit product with the reciprocal (below 2³²), even
    // and odd lanes apart.
    let dc = _mm_sub_epi32(s, _mm_set1_epi32(8192));
    let a = _mm_add_epi32(_mm_abs_epi32(dc), _mm_set1_epi32(4 * t.dc_q));
    let r = _mm_set1_epi32(t.dc_recip as u32 as i32);
    let q = _mm_blend_epi32::<0b1010>(_mm_srli_epi64::<32>(_mm_mul_epu32(a, r)), _mm_mul_epu32(_mm_srli_epi64::<32>(a), r));
    let dq = _mm_mullo_epi32(_mm_sign_epi32(q, dc), _mm_set1_epi32(t.dc_q));
    let v = _mm_srai_epi32::<{ PASS1_BITS + 3 }>(_mm_add_epi32(_mm_slli_epi32::<PASS1_BITS>(dq), _mm_set1_epi32(1 << (PASS1_BITS + 2))));
    // range_limit: wrap at 1024 (sign-extend 10 bits), centre on 128, clamp to 0..255.
    let v = _mm_add_epi32(_mm_srai_epi32::<22>(_mm_slli_epi32::<22>(v)), _mm_set1_epi32(128));
    let v = _mm_min_epi32(_mm_max_epi32(v, _mm_setzero_si128()), _mm_set1_epi32(255));
    let (mut samples, mut spreads) = ([0i32; 4], [0i32; 4]);
    _mm_storeu_si128(samples.as_mut_ptr() as *mut __m128i, v);
    _mm_storeu_si128(spreads.as_mut_ptr() as *mut __m128i, e);
    // Four DC-only blocks (backgrounds): their rows as one 32-byte vector, each sample 8 times.
    let all = N == 4 && _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(_mm_set1_epi32(t.dc_only), e))) == 0xf;
    let row = all.then(|| {
        let v = _mm256_permutevar8x32_epi32(_mm256_castsi128_si256(v), _mm256_setr_epi32(0, 1, 0, 1, 2, 3, 2, 3));
        _mm256_shuffle_epi8(v, _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4))
    });
    (samples, spreads, row)
}

/// The value of the 8×8 block at `b` (rows `stride` apart) if all its samples are equal.
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

/// Fill the block at `d` (rows `stride` apart) with `v`.
#[inline]
unsafe fn fill(v: u8, d: *mut u8, stride: usize) {
    let v = v as u64 * 0x0101_0101_0101_0101;
    for y in 0..8 {
        (d.add(y * stride) as *mut u64).write_unaligned(v);
    }
}

/// Code a plane whose sides are whole blocks in place: blocks whose spread proves them DC-only
/// (flat ones among them) by one division, or at high quality flat blocks by [`Tables::flat`],
/// the others two a step in scan order (any two blocks make a pair; an odd last one pairs with
/// itself).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn code_plane(plane: &mut [u8], fw: usize, fh: usize, t: &Tables) {
    // SAFETY: AVX2 is the caller's promise, VNNI `Tables::vnni`'s.
    if t.vnni { code_plane_with::<true>(plane, fw, fh, t) } else { code_plane_with::<false>(plane, fw, fh, t) }
}

/// [`code_plane`], the spreads' squares summed by VNNI or not.
#[target_feature(enable = "avx2")]
unsafe fn code_plane_with<const VNNI: bool>(plane: &mut [u8], fw: usize, fh: usize, t: &Tables) {
    assert!(fw.is_multiple_of(8) && fh.is_multiple_of(8) && plane.len() >= fw * fh);
    let p = plane.as_mut_ptr();
    let mut pending: Option<(*mut u8, i32)> = None;
    // Pairs left before `low_quantised` is tried again after it failed.
    let mut skip = 0;
    // Block `b` (spread `e`) waits for a partner or is coded with the one waiting.
    let mut pair_up = |b: *mut u8, e: i32| {
        if let Some((a, ea)) = pending.take() {
            // SAFETY: both blocks lie inside the plane; a pending block is untouched until now.
            let failed = unsafe { code_pair((a, b), (ea, e), skip == 0, fw, t) };
            skip = if failed { LOW_BACKOFF } else { skip.saturating_sub(1) };
        } else {
            pending = Some((b, e));
        }
    };
    let nbx = fw / 8;
    if t.dc_only < LOW_MIN * LOW_MIN {
        for by in 0..fh / 8 {
            for bx in 0..nbx {
                // SAFETY: every block lies inside the plane (asserted above).
                let b = p.add(by * 8 * fw + bx * 8);
                // (No spreads: `hf_zero` is 0 here, so `low_quantised` is never tried.)
                if let Some(v) = flat(b, fw) {
                    fill(t.flat[v as usize], b, fw);
                } else {
                    pair_up(b, 0);
                }
            }
        }
    } else {
        for by in 0..fh / 8 {
            let mut bx = 0;
            while bx < nbx {
                // SAFETY: as above; the spreads of a step are taken before its stores.
                let row = p.add(by * 8 * fw + bx * 8);
                let (n, (samples, spreads, fill4)) = match nbx - bx {
                    4.. => (4, spread::<4, VNNI>(row, fw, t)),
                    2 | 3 => (2, spread::<2, VNNI>(row, fw, t)),
                    _ => (1, spread::<1, VNNI>(row, fw, t)),
                };
                if let Some(v) = fill4 {
                    for y in 0..8 {
                        _mm256_storeu_si256(row.add(y * fw) as *mut __m256i, v);
                    }
                    bx += 4;
                    continue;
                }
                for k in 0..n {
                    let b = row.add(k * 8);
                    if spreads[k] < t.dc_only {
                        fill(samples[k] as u8, b, fw);
                    } else {
                        pair_up(b, spreads[k]);
                    }
                }
                bx += n;
            }
        }
    }
    if let Some((a, e)) = pending {
        // SAFETY: as above.
        code_pair((a, a), (e, e), skip == 0, fw, t);
    }
}

/// The top-left 4×4 of both blocks' quantised coefficients as half-width rows [0 | 1] and
/// [2 | 3], if [`FDCT_ERR`] and the spreads prove every coefficient outside it quantises to zero;
/// `cols` are the level-shifted sample columns. Only outputs 0–3 of each pass are computed,
/// pass 2 on half-width rows ([`Tables::lf`]); each output is islow's integer sum regrouped
/// (odd outputs as one product per input), so the coefficients are the full transform's.
/// Parseval: the exact AC coefficients' squares sum to the spread, and |t| − FDCT_ERR ≤ |T|,
/// so spread − Σ over the computed AC terms of (|t| − FDCT_ERR)₊² bounds the squares of the
/// others, and below [`Tables::hf_zero`] each of them is under 4q − FDCT_ERR.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn low_quantised(cols: [__m256i; 8], spread: (i32, i32), t: &Tables) -> Option<[__m256i; 2]> {
    let (a16, s16) = (|a, b| _mm256_add_epi16(a, b), |a, b| _mm256_sub_epi16(a, b));
    let madd = |a, k| _mm256_madd_epi16(a, k);
    // Pass 1 on the columns' rows (register = sample column x, lanes = rows y).
    let x = cols;
    let (tmp0, tmp1, tmp2, tmp3) = (a16(x[0], x[7]), a16(x[1], x[6]), a16(x[2], x[5]), a16(x[3], x[4]));
    let (tmp7, tmp6, tmp5, tmp4) = (s16(x[0], x[7]), s16(x[1], x[6]), s16(x[2], x[5]), s16(x[3], x[4]));
    let (tmp10, tmp11, tmp12, tmp13) = (a16(tmp0, tmp3), a16(tmp1, tmp2), s16(tmp1, tmp2), s16(tmp0, tmp3));
    let p0 = _mm256_slli_epi16::<PASS1_BITS>(level_shift(a16(tmp10, tmp11)));
    let o2 = madd2(pair(tmp13, tmp12), t.even_lf);
    let (ab, cd) = (pair(tmp4, tmp5), pair(tmp6, tmp7));
    let o1 = add(madd2(ab, t.odd_lf[0]), madd2(cd, t.odd_lf[1]));
    let o3 = add(madd2(ab, t.odd_lf[2]), madd2(cd, t.odd_lf[3]));
    let d = |v| descale::<{ CONST_BITS - PASS1_BITS }>(v);
    let p = [p0, d(o1), d(o2), d(o3)];
    // Rows y in half-width registers: a[k] = [row 2k | row 2k + 1], four outputs u each.
    let (t0, t1, t2, t3) = (_mm256_unpacklo_epi16(p[0], p[1]), _mm256_unpackhi_epi16(p[0], p[1]), _mm256_unpacklo_epi16(p[2], p[3]), _mm256_unpackhi_epi16(p[2], p[3]));
    let a = [_mm256_unpacklo_epi32(t0, t2), _mm256_unpackhi_epi32(t0, t2), _mm256_unpacklo_epi32(t1, t3), _mm256_unpackhi_epi32(t1, t3)];
    // Pass 2 on the columns: the butterfly pairs row y with row 7 − y, so the second operand
    // has its halves swapped.
    let sw = |v| _mm256_shuffle_epi32::<0x4e>(v);
    let (s01, d01) = (a16(a[0], sw(a[3])), s16(a[0], sw(a[3]))); // [tmp0 | tmp1], [tmp7 | tmp6]
    let (s23, d23) = (a16(a[1], sw(a[2])), s16(a[1], sw(a[2]))); // [tmp2 | tmp3], [tmp5 | tmp4]
    let (e, o) = (a16(s01, sw(s23)), s16(s01, sw(s23))); // [tmp10 | tmp11], [tmp13 | tmp12]
    let dc = _mm256_srai_epi16::<PASS1_BITS>(a16(a16(e, sw(e)), _mm256_set1_epi16(1 << (PASS1_BITS - 1))));
    let o2 = madd(_mm256_unpacklo_epi16(o, sw(o)), t.even_lf);
    let (ab, cd) = (_mm256_unpacklo_epi16(sw(d23), d23), _mm256_unpacklo_epi16(sw(d01), d01));
    let o1 = _mm256_add_epi32(madd(ab, t.odd_lf[0]), madd(cd, t.odd_lf[1]));
    let o3 = _mm256_add_epi32(madd(ab, t.odd_lf[2]), madd(cd, t.odd_lf[3]));
    let r = _mm256_set1_epi32(1 << (CONST_BITS + PASS1_BITS - 1));
    let d = |v| _mm256_srai_epi32::<{ CONST_BITS + PASS1_BITS }>(_mm256_add_epi32(v, r));
    let o1 = d(o1);
    // Coefficient rows [0 | 1] and [2 | 3], columns 0–3.
    let c = [_mm256_unpacklo_epi64(dc, _mm256_packs_epi32(o1, o1)), _mm256_packs_epi32(d(o2), d(o3))];
    let eps = _mm256_set1_epi16(FDCT_ERR as i16);
    let m = |v, k: __m256i| {
        let v = _mm256_and_si256(_mm256_subs_epu16(_mm256_abs_epi16(v), eps), k);
        _mm256_madd_epi16(v, v)
    };
    let s = _mm256_add_epi32(m(c[0], _mm256_setr_epi16(0, -1, -1, -1, -1, -1, -1, -1, 0, -1, -1, -1, -1, -1, -1, -1)), m(c[1], _mm256_set1_epi16(-1)));
    let s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0x4e>(s));
    let s = _mm256_add_epi32(s, _mm256_shuffle_epi32::<0xb1>(s));
    let rest = _mm256_sub_epi32(_mm256_set_m128i(_mm_set1_epi32(spread.1), _mm_set1_epi32(spread.0)), s);
    if _mm256_movemask_epi8(_mm256_cmpgt_epi32(_mm256_set1_epi32(t.hf_zero), rest)) != -1 {
        return None;
    }
    Some([quantise_lf(c[0], t, 0), quantise_lf(c[1], t, 1)])
}

/// x·k per lane pair, 32-bit, for a pre-packed constant `k`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn madd2(xy: W, k: __m256i) -> W {
    (_mm256_madd_epi16(xy.0, k), _mm256_madd_epi16(xy.1, k))
}

/// [`quantise`] of half-width coefficient rows [2j | 2j + 1], columns 0–3.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn quantise_lf(c: __m256i, t: &Tables, j: usize) -> __m256i {
    let [recip, corr, scale, _] = t.lf[j];
    quantise_by(c, recip, corr, scale)
}

/// Code the 8×8 blocks at `blk.0` and `blk.1` (rows `stride` bytes apart, [`spread`]s
/// `spread`) in place; the two are disjoint or the same block (all loads come before the
/// stores). `try_low`: try [`low_quantised`] (if the quality allows); returns whether that
/// was tried and failed.
#[target_feature(enable = "avx2")]
unsafe fn code_pair(blk: (*mut u8, *mut u8), spread: (i32, i32), try_low: bool, stride: usize, t: &Tables) -> bool {
    // Rows [2k | 2k + 1] of each block, transposed to columns, widened to 16 bits: pass 1 on
    // rows (register = sample column), pass 2 on columns.
    let ld = |b: *mut u8, k: usize| {
        let lo = _mm_loadl_epi64(b.add(2 * k * stride) as *const __m128i);
        _mm_castpd_si128(_mm_loadh_pd(_mm_castsi128_pd(lo), b.add((2 * k + 1) * stride) as *const f64))
    };
    let c = transpose_bytes(std::array::from_fn(|k| _mm256_set_m128i(ld(blk.1, k), ld(blk.0, k))));
    let z = _mm256_setzero_si256();
    let cols: [__m256i; 8] = std::array::from_fn(|x| if x % 2 == 0 { _mm256_unpacklo_epi8(c[x / 2], z) } else { _mm256_unpackhi_epi8(c[x / 2], z) });
    let tried = try_low && t.hf_zero > 0;
    let low = if tried { low_quantised(cols, spread, t) } else { None };
    let failed = tried && low.is_none();
    // Nothing outside the top-left 4×4 (most blocks that are not DC-only at low quality):
    // its quantised rows, half-width.
    let h = match low {
        Some(h) => h,
        None => {
            let coef = fdct::<true>(transpose(fdct::<false>(cols)));
            let q: [__m256i; 8] = std::array::from_fn(|i| quantise(coef[i], t, i));
            let cols4 = _mm256_setr_epi16(0, 0, 0, 0, -1, -1, -1, -1, 0, 0, 0, 0, -1, -1, -1, -1);
            let high = q[4..].iter().fold(_mm256_and_si256(cols4, _mm256_or_si256(_mm256_or_si256(q[0], q[1]), _mm256_or_si256(q[2], q[3]))), |a, &v| _mm256_or_si256(a, v));
            if _mm256_testz_si256(high, high) == 0 {
                // Inverse pass 1 on columns (register = coefficient row), pass 2 on rows
                // (transposed).
                let deq: [__m256i; 8] = std::array::from_fn(|i| _mm256_mullo_epi16(q[i], t.q[i]));
                store_columns(idct::<{ CONST_BITS + PASS1_BITS + 3 }, true>(transpose(idct::<{ CONST_BITS - PASS1_BITS }, false>(deq))), blk, stride);
                return failed;
            }
            [_mm256_unpacklo_epi64(q[0], q[1]), _mm256_unpacklo_epi64(q[2], q[3])]
        }
    };
    let deq = [_mm256_mullo_epi16(h[0], t.lf[0][3]), _mm256_mullo_epi16(h[1], t.lf[1][3])];
    // Both blocks DC-only: the inverse DCT is a constant fill, as in the scalar shortcuts.
    let ac = _mm256_or_si256(_mm256_andnot_si256(_mm256_setr_epi16(-1, 0, 0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0), h[0]), h[1]);
    if _mm256_testz_si256(ac, ac) == 1 {
        let v = |dc: i32| range_limit(super::descale(dc << PASS1_BITS, PASS1_BITS + 3));
        fill(v(_mm256_extract_epi16::<0>(deq[0]) as i16 as i32), blk.0, stride);
        fill(v(_mm256_extract_epi16::<8>(deq[0]) as i16 as i32), blk.1, stride);
        return failed;
    }
    // Inverse pass 1 on the four columns, half-width; pass 2 on the rows, whose columns 4–7
    // are zero (transposed: register = column).
    let w = half_to_columns(idct4_half::<{ CONST_BITS - PASS1_BITS }>(deq));
    store_columns(idct4::<{ CONST_BITS + PASS1_BITS + 3 }>(w), blk, stride);
    failed
}

/// Store the decoded sample columns `o` (register = column, rows in the lanes, left block in
/// the low halves; each sample plus 512, [`pass2_bias`]) of the blocks at `blk`,
/// range-limited.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_columns(o: [__m256i; 8], blk: (*mut u8, *mut u8), stride: usize) {
    let (m, c) = (_mm256_set1_epi16(1023), _mm256_set1_epi16(384));
    // range_limit: wrap at 1024 (x + 512 mod 1024 is the sign-extended 10 bits plus 512),
    // centre on 128, clamp to 0..255 (the pack).
    let o: [__m256i; 8] = std::array::from_fn(|i| _mm256_sub_epi16(_mm256_and_si256(o[i], m), c));
    let r = transpose_bytes(std::array::from_fn(|p| _mm256_packus_epi16(o[2 * p], o[2 * p + 1])));
    for (p, v) in r.into_iter().enumerate() {
        // Bytes: [left row 2p, left row 2p+1 | right row 2p, right row 2p+1].
        let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        _mm_storel_epi64(blk.0.add(2 * p * stride) as *mut __m128i, lo);
        _mm_storeh_pd(blk.0.add((2 * p + 1) * stride) as *mut f64, _mm_castsi128_pd(lo));
        _mm_storel_epi64(blk.1.add(2 * p * stride) as *mut __m128i, hi);
        _mm_storeh_pd(blk.1.add((2 * p + 1) * stride) as *mut f64, _mm_castsi128_pd(hi));
    }
}
