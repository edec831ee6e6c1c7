//! AVX-512 (BW, VBMI, VNNI) row steps: the same sums as [`rows_avx2`] with fewer instructions,
//! since Zen 4 runs 512-bit operations as two 256-bit halves and only saves on their count.
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
