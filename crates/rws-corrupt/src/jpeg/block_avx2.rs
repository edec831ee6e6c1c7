//! Two horizontally adjacent blocks' forward DCT, quantisation, dequantisation and inverse DCT
//! in 16-bit lanes, as libjpeg-turbo's jfdctint/jquanti/jidctint-avx2 do: register i holds row
//! (or after a transpose column) i of the left block in its low 128 bits and of the right block
//! in its high 128 bits, every product is a `vpmaddwd` of two 16-bit terms into 32 bits, and each
//! pass's descaled results pack back to 16 bits. The products and sums are the scalar path's
//! integers regrouped (z5 folded into the constants as in the SIMD islow code), so every lane
//! computes the scalar result as long as the 16-bit terms cannot overflow:
//! - forward pass 1 sees samples −128..127 (sums ≤ 1024, outputs ≤ 4096); pass 2 sums eight
//!   pass-1 outputs of one sign pattern, which stays within −32768..32640 (row sums of samples
//!   are −1024..1016, so all-DC pass-1 rows are at most 4064 when positive);
//! - the dequantised coefficients are the forward ones rounded to a multiple of q ≤ 255, at most
//!   about 4200; the inverse pass 1 output is the exact transform (≤ 4096) plus the quantisation
//!   error, at most 127.5 per coefficient times a column weight sum under 11 (4 · 127.5 · 10.8 ≈
//!   5500), so it and the pass-2 sums of two of them stay far inside 16 bits; the final samples
//!   before the range limit are within a few hundred of 0..255.
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
    dc_only: i32,
    /// The DC quantiser and the reciprocal ⌈2³²/(8·q)⌉ that divides by its divisor exactly (as
    /// the scalar `code_plane` does).
    dc_q: i32,
    dc_recip: u64,
}

/// A bound on |t − T| for every coefficient, where t is `fdct_islow`'s integer output and T
/// the exact DCT at the same scale (8× orthonormal), for any block of samples −128..127: the
/// 13-bit constants and the rounding of the two passes (`fdct_error_bound` in the tests
/// derives it from islow's linear maps). With it, Parseval proves coefficients zero without
/// computing them: T's AC terms have Σ T² = [`spread`], so |t| < √spread + FDCT_ERR, and a
/// coefficient with |t| < 4q quantises to 0 (divisor 8q, rounded half away from zero).
pub(super) const FDCT_ERR: i32 = 3;

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
            dc_only: qt[1..].iter().map(|&q| 4 * q - FDCT_ERR).min().map_or(1, |m| if m > 0 { m * m } else { 1 }),
            dc_q: qt[0],
            dc_recip: (1u64 << 32).div_ceil(qt[0] as u64 * 8),
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


/// For the `N` (1, 2 or 4) blocks at `b`, `b` + 8, … (rows `stride` apart): the decoded
/// sample each would have if its AC coefficients were zero, and its spread, 64·Σx² − (Σx)².
/// The spread is 64 times the sum of squared deviations from the mean, which by Parseval is
/// the sum of the squared exact AC coefficients (see [`FDCT_ERR`]); it is 0 exactly for a flat
/// block. Σx is islow's DC coefficient plus 8192 (exact), quantised as the scalar `code_plane`
/// does; with zero AC the inverse DCT is a constant, as in the scalar shortcuts.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn spread<const N: usize>(b: *const u8, stride: usize, t: &Tables) -> ([i32; 4], [i32; 4]) {
    let z = _mm256_setzero_si256();
    let (mut s, mut lo, mut hi) = (z, z, z);
    for y in 0..8 {
        let r = b.add(y * stride);
        let v = match N {
            4 => _mm256_loadu_si256(r as *const __m256i),
            2 => _mm256_zextsi128_si256(_mm_loadu_si128(r as *const __m128i)),
            _ => _mm256_zextsi128_si256(_mm_loadl_epi64(r as *const __m128i)),
        };
        // Per block (quadword) sums; squares of blocks 0 | 2 and 1 | 3.
        s = _mm256_add_epi64(s, _mm256_sad_epu8(v, z));
        let (l, h) = (_mm256_unpacklo_epi8(v, z), _mm256_unpackhi_epi8(v, z));
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(l, l));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(h, h));
    }
    // [b0 b1 b0 b1 | b2 b3 b2 b3], then blocks 0–3 in the low half.
    let sq = _mm256_hadd_epi32(_mm256_hadd_epi32(lo, hi), z);
    let sq = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(sq));
    let s = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(_mm256_shuffle_epi32::<0b1000>(s)));
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
    (samples, spreads)
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
/// (flat ones among them) by one division, the others two a step in scan order (any two blocks make a pair; an odd last one pairs with
/// itself).
#[target_feature(enable = "avx2")]
pub(super) unsafe fn code_plane(plane: &mut [u8], fw: usize, fh: usize, t: &Tables) {
    assert!(fw.is_multiple_of(8) && fh.is_multiple_of(8) && plane.len() >= fw * fh);
    let p = plane.as_mut_ptr();
    let mut pending: Option<*mut u8> = None;
    let nbx = fw / 8;
    for by in 0..fh / 8 {
        let mut bx = 0;
        while bx < nbx {
            // SAFETY: every block lies inside the plane (asserted above); a pending block is
            // untouched until it is coded; the spreads of a step are taken before its stores.
            let row = p.add(by * 8 * fw + bx * 8);
            let (n, (samples, spreads)) = match nbx - bx {
                4.. => (4, spread::<4>(row, fw, t)),
                2 | 3 => (2, spread::<2>(row, fw, t)),
                _ => (1, spread::<1>(row, fw, t)),
            };
            for k in 0..n {
                let b = row.add(k * 8);
                if spreads[k] < t.dc_only {
                    fill(samples[k] as u8, b, fw);
                } else if let Some(a) = pending.take() {
                    code_pair((a, b), fw, t);
                } else {
                    pending = Some(b);
                }
            }
            bx += n;
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
        let v = |dc: i32| range_limit(super::descale(dc << PASS1_BITS, PASS1_BITS + 3));
        fill(v(_mm256_extract_epi16::<0>(dc) as i16 as i32), blk.0, stride);
        fill(v(_mm256_extract_epi16::<8>(dc) as i16 as i32), blk.1, stride);
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
