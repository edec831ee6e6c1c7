//! The row steps of [`round_trip_avx2`]. The colour conversions (jccolor.c / jdcolor.c fixed
//! point) return how many pixels they did; the caller finishes the row.
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
    let k = |a: i32, b: i32| _mm256_set1_epi32(word_pair(a, b));
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
    let kg = _mm256_set1_epi32(word_pair(-F_CB_G, K_G));
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
