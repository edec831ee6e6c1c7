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
#[inline]
pub(super) unsafe fn rgb_to_ycc(img: &[u8], at: usize, yo: &mut [u8], cbo: &mut [u8], cro: &mut [u8]) -> usize {
    let src = &img[at..];
    let w = yo.len();
    assert!(cbo.len() >= w && cro.len() >= w && src.len() >= 3 * w);
    let k = |a: i32, b: i32| _mm512_set1_epi32(word_pair(a, b));
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
    // The last flat run's 48 bytes, its Y, Cb, Cr as dwords v << 16, its pixel's bytes and its
    // Y, Cb, Cr as bytes (at first: black).
    let ycc = |px: &[u8]| rgb_to_ycc_px(px).map(|v| _mm512_set1_epi32((v as i32) << 16));
    let bytes = |px: &[u8]| rgb_to_ycc_px(px).map(|v| _mm256_set1_epi8(v as i8));
    type Flat = (__m512i, [__m512i; 3], u32, [__m256i; 3]);
    let mut flat: Flat = (_mm512_setzero_si512(), ycc(&[0; 3]), 0, bytes(&[0; 3]));
    // Y, Cb, Cr sums of the 16 pixels from byte 3x, and whether they are the last flat run's
    // (1) or a new one's (2).
    let sixteen = |x: usize, flat: &mut Flat| {
        let p = src.as_ptr().add(3 * x);
        let v = _mm512_maskz_loadu_epi8(0xffff_ffff_ffff, p as *const i8);
        // Sixteen equal pixels (flat backgrounds): bytes 0..45 equal 3..48. The last flat
        // run's bytes (most of a background) take one compare; a flat run's sums are its
        // pixel's results (in byte 2 of each dword, where the gather takes them). (Scalar
        // tests of the first pixel first: most groups outside flat runs fail them.)
        let word = |at: usize| (p.add(at) as *const u32).read_unaligned() & 0xff_ffff;
        let first = word(0);
        if first == flat.2 && _mm512_cmpeq_epi8_mask(v, flat.0) == u64::MAX {
            return (flat.1, 1);
        }
        const LOW45: u64 = (1 << 45) - 1;
        if first == word(3) && _mm512_mask_cmpeq_epi8_mask(LOW45, v, _mm512_maskz_loadu_epi8(LOW45, p.add(3) as *const i8)) == LOW45 {
            let px = &src[3 * x..3 * x + 3];
            *flat = (v, ycc(px), first, bytes(px));
            return (flat.1, 2);
        }
        let v = _mm512_permutexvar_epi8(lanes, v);
        let (rg, gb, br) = (_mm512_shuffle_epi8(v, mrg), _mm512_shuffle_epi8(v, mgb), _mm512_shuffle_epi8(v, mbr));
        let sum = |a: __m512i, ka: __m512i, b: __m512i, kb: __m512i, off: __m512i| _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(off, a, ka), b, kb);
        ([sum(rg, ky0, gb, ky1, y_off), sum(gb, kcb0, br, kcb1, c_off), sum(rg, kcr0, br, kcr1, c_off)], 0)
    };
    let store = |o: &mut [u8], x: usize, a: __m512i, b: __m512i| {
        _mm256_storeu_si256(o.as_mut_ptr().add(x) as *mut __m256i, _mm512_castsi512_si256(_mm512_permutex2var_epi8(a, gather, b)))
    };
    let mut x = 0;
    while x + 32 <= w {
        let ([ya, cba, cra], a) = sixteen(x, &mut flat);
        let ([yb, cbb, crb], b) = sixteen(x + 16, &mut flat);
        if a != 0 && b == 1 {
            // One flat run: its bytes, no gathers.
            for (o, &v) in [&mut *yo, &mut *cbo, &mut *cro].into_iter().zip(&flat.3) {
                _mm256_storeu_si256(o.as_mut_ptr().add(x) as *mut __m256i, v);
            }
            x += 32;
            continue;
        }
        store(yo, x, ya, yb);
        store(cbo, x, cba, cbb);
        store(cro, x, cra, crb);
        x += 32;
    }
    x
}

/// Byte i of the k-th 64 bytes of RGB is component (64k + i) mod 3.
const fn rgb_phase(k: usize) -> [u8; 64] {
    let mut m = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        m[i] = ((64 * k + i) % 3) as u8;
        i += 1;
    }
    m
}

/// The three 64-byte stores of pixels `px` (R, G, B in its low bytes) in a row.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn rgb_run(px: [u8; 3]) -> [__m512i; 3] {
    const PH: [[u8; 64]; 3] = [rgb_phase(0), rgb_phase(1), rgb_phase(2)];
    let v = _mm512_set1_epi32(i32::from_le_bytes([px[0], px[1], px[2], 0]));
    PH.map(|ph| _mm512_shuffle_epi8(v, _mm512_loadu_si512(ph.as_ptr() as *const _)))
}

/// The RGB stores of luma `y` with chroma `cb`, `cr`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn rgb_pattern(y: u8, [cb, cr]: [u8; 2]) -> [__m512i; 3] {
    let mut px = [0u8; 3];
    ycc_to_rgb_px(y, cb, cr, &mut px);
    rgb_run(px)
}

/// [`upsample_rows`]' last flat chroma: Cb and Cr, their column sums (4·v) broadcast, and
/// [`chroma_terms`] as byte patterns of the RGB stores (their positive parts, added to the
/// luma saturating at 255, and negative parts, subtracted saturating at 0; every term is
/// under 256 in size); and the last constant luma with it as RGB stores.
struct FlatYcc {
    cbcr: [u8; 2],
    sums: [__m512i; 2],
    terms: ([__m512i; 3], [__m512i; 3]),
    luma: u8,
    rgb: [__m512i; 3],
}

impl FlatYcc {
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn of(cbcr: [u8; 2], luma: u8) -> FlatYcc {
        let t = chroma_terms(cbcr[0], cbcr[1]);
        let part = |f: fn(i32) -> u8| rgb_run(t.map(f));
        FlatYcc {
            cbcr,
            sums: cbcr.map(|v| _mm512_set1_epi16(4 * v as i16)),
            terms: (part(|t| t.max(0) as u8), part(|t| (-t).max(0) as u8)),
            luma,
            rgb: rgb_pattern(luma, cbcr),
        }
    }
}

/// Output bytes 64k..64k + 64 of 64 pixels: pixel (64k + i) / 3 for byte i.
const fn rgb_pixels(k: usize) -> [u8; 64] {
    let mut m = [0u8; 64];
    let mut i = 0;
    while i < 64 {
        m[i] = ((64 * k + i) / 3) as u8;
        i += 1;
    }
    m
}

/// Store the RGB bytes of `px` pixels at `o` (three registers of 64 bytes), and anything in
/// the `room` bytes from `o` after them (a later row's, written after this one): masked stores
/// only at the end of the image.
#[target_feature(enable = "avx512f,avx512bw")]
#[inline]
unsafe fn store_rgb(o: *mut u8, rgb: &[__m512i; 3], px: usize, room: usize) {
    if px == 64 || room >= 192 {
        for (v, &out) in rgb.iter().enumerate() {
            _mm512_storeu_si512(o.add(64 * v) as *mut _, out);
        }
        return;
    }
    for (v, &out) in rgb.iter().enumerate() {
        let bytes = (3 * px).saturating_sub(64 * v);
        if bytes >= 64 || (bytes > 0 && 64 * (v + 1) <= room) {
            _mm512_storeu_si512(o.add(64 * v) as *mut _, out);
        } else if bytes > 0 {
            _mm512_mask_storeu_epi8(o.add(64 * v) as *mut i8, (1 << bytes) - 1, out);
        }
    }
}

/// The upsampling and inverse conversion of the whole image into `out` (`h` rows of `w` RGB
/// pixels) from the coded `mw`-wide luma plane `yp` and `cw`-wide chroma planes: per row,
/// [`rows_avx2::column_sums`] and [`rows_avx2::upsample_to_rgb`] in one pass, 64 pixels (32
/// chroma columns) a step, the loads at the end of a row masked to it and the stores masked
/// only at the end of the image. The neighbour columns come from registers by `vpermt2w`
/// (the previous step's columns, a broadcast of the next one), the RGB interleave is two
/// `vpermb` per 64 output bytes. One call for all rows: the constants and flat-region state
/// stay loaded from row to row.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512vnni,avx2")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn upsample_rows(yp: &[u8], mw: usize, cbp: &[u8], crp: &[u8], cw: usize, h: usize, w: usize, out: *mut u8) {
    use rows_avx2::{K_B_RS, K_G, K_R_RS};
    let (dw, dh) = (w.div_ceil(2), h.div_ceil(2));
    assert!(w <= mw && yp.len() >= mw * h && dw <= cw && cbp.len() >= cw * dh && crp.len() >= cw * dh);
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
    /// For output bytes 64v..64v + 64: pixel p's R at [`packed`]`(p)`, G at 64 + that
    /// (`vpermt2b` of R, G), B at that (a masked `vpermb` of B, the mask in [`blue`]).
    const fn interleave(v: usize) -> [u8; 64] {
        let mut m = [0u8; 64];
        let mut t = 0;
        while t < 64 {
            let (p, c) = ((64 * v + t) / 3, (64 * v + t) % 3);
            m[t] = if c == 1 { 64 + packed(p) } else { packed(p) };
            t += 1;
        }
        m
    }
    /// Where pixel p is in `vpackuswb` of its even pixels' words and its odd ones': 128-bit
    /// lane k holds even pixels 16k, 16k + 2, …, 16k + 14, then odd pixels 16k + 1, … 16k + 15.
    const fn packed(p: usize) -> u8 {
        let j = p / 2;
        (16 * (j / 8) + 8 * (p % 2) + j % 8) as u8
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
    // Chroma column x's sum of its near and far rows.
    let sum = |[near, far]: [&[u8]; 2], x: usize| near[x] as i16 * 3 + far[x] as i16;
    // The column sums of chroma columns x..x+32 and of their left and right neighbours.
    // (Unmasked loads but at the row's end, where `interior` is false.)
    let columns = |rows: [&[u8]; 2], x: usize, prev: &mut __m512i, interior: bool| {
        let ld = |r: &[u8]| {
            let p = r.as_ptr().add(x);
            _mm512_cvtepu8_epi16(if interior { _mm256_loadu_si256(p as *const __m256i) } else { _mm256_maskz_loadu_epi8(low(dw - x) as u32, p as *const i8) })
        };
        let (near, far) = (ld(rows[0]), ld(rows[1]));
        let m = _mm512_add_epi16(_mm512_add_epi16(near, near), _mm512_add_epi16(near, far));
        let next = if interior { _mm512_set1_epi16(sum(rows, x + 32)) } else { m };
        let l = _mm512_permutex2var_epi16(*prev, lidx, m);
        let mut r = _mm512_permutex2var_epi16(m, ridx, next);
        if !interior {
            // The last column's right neighbour is itself.
            r = _mm512_mask_mov_epi16(r, 1 << (dw - 1 - x), m);
        }
        *prev = m;
        (m, l, r)
    };
    // The chroma of the even output pixels and of the odd ones, in column order: the
    // conversion works on even and odd pixels apart (the luma's low and high bytes of each
    // word), so nothing is interleaved until the final byte permutes.
    let fancy = |(m, l, r): (__m512i, __m512i, __m512i)| {
        let m3 = _mm512_add_epi16(m, _mm512_add_epi16(m, m));
        let e = _mm512_srai_epi16::<4>(_mm512_add_epi16(_mm512_add_epi16(m3, b8), l));
        let o = _mm512_srai_epi16::<4>(_mm512_add_epi16(_mm512_add_epi16(m3, b7), r));
        (e, o)
    };
    // jdcolor.c on 32 pixels: R, G, B in i16 lanes. The red and blue terms as in
    // [`rows_avx2::ycc16`]; green's two products go onto the rounding constant by `vpdpwssd`
    // and its result is the high word of each dword sum, which one `vpermt2w` gathers.
    let kg = _mm512_set1_epi32(word_pair(-F_CB_G, K_G));
    let half = _mm512_set1_epi32(ONE_HALF);
    /// Word 1 of dwords 4k..4k + 4 of `a`, then of `b`, in 128-bit lane k: the high words of
    /// the sums of `vpunpcklwd` and `vpunpckhwd` pairs, back in word order.
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

    let lo_bytes = _mm512_set1_epi16(0xff);
    const PX: [[u8; 64]; 3] = [rgb_pixels(0), rgb_pixels(1), rgb_pixels(2)];
    let px_of = PX.map(|m| _mm512_loadu_si512(m.as_ptr() as *const _));
    // Flat regions of the decoded planes (flat and DC-only blocks decode flat): per row of
    // 8×8 blocks and 64-pixel step, the luma if the step's luma is one value in those rows,
    // and the chroma if both components are one value over every column the step's filter
    // reads (32s − 1 to 32s + 32 within the row) in those rows. A step whose near and far
    // chroma rows lie in block rows of the same flat chroma upsamples to it, without loading
    // the chroma; with flat luma it is three stores.
    let steps = dw.div_ceil(32);
    let (yrows, crows) = (h.div_ceil(8), dh.div_ceil(8));
    thread_local! {
        static KEYS: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut keys = KEYS.take();
    keys.resize((yrows + crows) * steps, 0);
    let (ykeys, ckeys) = keys.split_at_mut(yrows * steps);
    for (bc, ks) in ckeys.chunks_exact_mut(steps).enumerate() {
        for (s, k) in ks.iter_mut().enumerate() {
            let lo = (32 * s).saturating_sub(1);
            let m = low((32 * s + 32).min(dw - 1) + 1 - lo);
            let at = 8 * bc * cw + lo;
            let (b, r) = (cbp[at], crp[at]);
            let (vb, vr) = (_mm512_set1_epi8(b as i8), _mm512_set1_epi8(r as i8));
            let ld = |p: &[u8], row: usize| _mm512_maskz_loadu_epi8(m, p.as_ptr().add(row * cw + lo) as *const i8);
            let flat = (8 * bc..(8 * bc + 8).min(dh)).all(|row| _mm512_mask_cmpneq_epi8_mask(m, ld(cbp, row), vb) | _mm512_mask_cmpneq_epi8_mask(m, ld(crp, row), vr) == 0);
            *k = if flat { 1 << 16 | (b as u32) << 8 | r as u32 } else { 0 };
        }
    }
    // (Luma is only looked at under flat chroma: its block row by lies in chroma block row
    // by / 2.)
    for (by, ks) in ykeys.chunks_exact_mut(steps).enumerate() {
        for (s, k) in ks.iter_mut().enumerate() {
            let (x0, m) = (64 * s, low(w - 64 * s));
            let v = yp[8 * by * mw + x0];
            let vv = _mm512_set1_epi8(v as i8);
            let flat = ckeys[by / 2 * steps + s] != 0 && (8 * by..(8 * by + 8).min(h)).all(|y| _mm512_mask_cmpneq_epi8_mask(m, _mm512_maskz_loadu_epi8(m, yp.as_ptr().add(y * mw + x0) as *const i8), vv) == 0);
            *k = if flat { 1 << 8 | v as u32 } else { 0 };
        }
    }
    // At first: grey (128, 128: terms 0) and black.
    let mut run = FlatYcc::of([128, 128], 0);
    for y in 0..h {
        let yr = &yp[y * mw..][..w];
        let (near, far) = (y / 2, far_row(y, dh));
        let (cb, cr) = ([&cbp[near * cw..][..dw], &cbp[far * cw..][..dw]], [&crp[near * cw..][..dw], &crp[far * cw..][..dw]]);
        let (cnear, cfar, ykey) = (&ckeys[near / 8 * steps..][..steps], &ckeys[far / 8 * steps..][..steps], &ykeys[y / 8 * steps..][..steps]);
        let orow = out.add(y * w * 3);
        // The first column's left neighbour is itself.
        let (mut pb, mut pr) = (_mm512_set1_epi16(sum(cb, 0)), _mm512_set1_epi16(sum(cr, 0)));
        let mut x = 0;
        while x < dw {
            let (step, px) = (x / 32, (w - 2 * x).min(64));
            // Past the row, the bytes of later rows (written after this one) may be stored.
            let (o, room) = (orow.add(6 * x), (h - y) * w * 3 - 6 * x);
            let key = cnear[step];
            if key != 0 && key == cfar[step] {
                let cbcr = [(key >> 8) as u8, key as u8];
                if cbcr != run.cbcr {
                    run = FlatYcc::of(cbcr, run.luma);
                }
                // The next step's left neighbours.
                (pb, pr) = (run.sums[0], run.sums[1]);
                if ykey[step] != 0 {
                    let luma = ykey[step] as u8;
                    if luma != run.luma {
                        (run.luma, run.rgb) = (luma, rgb_pattern(luma, run.cbcr));
                    }
                    store_rgb(o, &run.rgb, px, room);
                } else {
                    let ys = yr.as_ptr().add(2 * x);
                    let yv = if px == 64 { _mm512_loadu_si512(ys as *const _) } else { _mm512_maskz_loadu_epi8(low(px), ys as *const i8) };
                    let (add, sub) = &run.terms;
                    let rgb = std::array::from_fn(|v| _mm512_subs_epu8(_mm512_adds_epu8(_mm512_permutexvar_epi8(px_of[v], yv), add[v]), sub[v]));
                    store_rgb(o, &rgb, px, room);
                }
                x += 32;
                continue;
            }
            // Not the row's last step: 32 columns, 64 pixels and the next column.
            let interior = x + 32 < dw;
            let (b, r) = (columns(cb, x, &mut pb, interior), columns(cr, x, &mut pr, interior));
            let ys = yr.as_ptr().add(2 * x);
            let yv = if interior { _mm512_loadu_si512(ys as *const _) } else { _mm512_maskz_loadu_epi8(low(px), ys as *const i8) };
            let ((cb_e, cb_o), (cr_e, cr_o)) = (fancy(b), fancy(r));
            let (r0, g0, b0) = ycc(_mm512_and_si512(yv, lo_bytes), cb_e, cr_e);
            let (r1, g1, b1) = ycc(_mm512_srli_epi16::<8>(yv), cb_o, cr_o);
            // Saturating packs clamp to 0..255 (the pixels in [`packed`] order).
            let (r, g, b) = (_mm512_packus_epi16(r0, r1), _mm512_packus_epi16(g0, g1), _mm512_packus_epi16(b0, b1));
            let rgb: [__m512i; 3] = std::array::from_fn(|v| _mm512_mask_permutexvar_epi8(_mm512_permutex2var_epi8(r, il[v], g), BLUE[v], il[v], b));
            store_rgb(o, &rgb, px, room);
            x += 32;
        }
    }
    KEYS.set(keys);
}
