//! JPEG compress → decompress without the bitstream: the lossy steps of libjpeg-turbo's default
//! path as Pillow drives it (baseline, 4:2:0, IJG tables scaled by quality, `JDCT_ISLOW` integer
//! DCTs, h2v2 downsampling with alternating bias, fancy (triangle) upsampling, fixed-point colour
//! conversion). Entropy coding is lossless, so skipping it changes no pixel.
//!
//! IJG libjpeg 9 (the CIFAR-10-C era Pillow) differs: it downsamples chroma by a 16×16 forward
//! DCT and upsamples by a 16×16 inverse DCT ("DCT scaling"); grey images take the same path in
//! both libraries.

// The vector kernels of round_trip_avx2: the 8×8 block coder and the row stages.
#[cfg(target_arch = "x86_64")]
mod block_avx2;
#[cfg(target_arch = "x86_64")]
mod rows_avx2;
#[cfg(target_arch = "x86_64")]
mod rows_avx512;

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

/// Two 16-bit constants as one 32-bit lane, `lo` in the low word: the packed multiplier of a
/// `vpmaddwd` / `vpdpwssd` on (lo-lane, hi-lane) word pairs.
const fn word_pair(lo: i32, hi: i32) -> i32 {
    (lo & 0xffff) | (hi << 16)
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
/// `avx512`: the CPU has what [`rows_avx512`] needs (its conversion takes the rows' first
/// pixels, its upsampling all rows, [`rows_avx512::upsample_rows`]).
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
    let mut buf = SCRATCH.take();
    buf.resize(mw * mh + 2 * cw * chh + 4 * mw, 0);
    let (yp, rest) = buf.split_at_mut(mw * mh);
    // Cb above Cr: one plane of the chroma table's blocks.
    let (chroma, rest) = rest.split_at_mut(2 * cw * chh);
    let (cb, cr) = chroma.split_at_mut(cw * chh);
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
    block_avx2::code_plane(chroma, cw, 2 * chh, qc);
    let (cb, cr) = chroma.split_at(cw * chh);
    // Filled row by row through raw pointers (not zeroed first: that was 4% of the time).
    let mut out: Vec<u8> = Vec::with_capacity(h * w * 3);
    // The AVX-512 upsampling does every row whole, in one call; the AVX2 one finishes each row
    // from column sums.
    if avx512 {
        rows_avx512::upsample_rows(yp, mw, cb, cr, cw, h, w, out.as_mut_ptr());
    } else {
        let mut cs = SUMS.take();
        cs.resize(2 * (dw + 2), 0);
        let (csb, csr) = cs.split_at_mut(dw + 2);
        for y in 0..h {
            let yr = &yp[y * mw..y * mw + w];
            let orow = out.as_mut_ptr().add(y * w * 3);
            let (near, far) = (y / 2 * cw, far_row(y, dh) * cw);
            let done = rows_avx2::upsample_to_rgb(yr, (&cb[near..][..dw], &cb[far..][..dw]), (&cr[near..][..dw], &cr[far..][..dw]), orow);
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
        SUMS.set(cs);
    }
    // SAFETY: every row's 3·w bytes are written above (the vector pixels, then the rest, or
    // all of them by `upsample_rows`).
    out.set_len(h * w * 3);
    SCRATCH.set(buf);
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

    /// Small rectangles on a flat background, placed around the edges of the AVX-512
    /// upsampling's flat regions (64-pixel steps, whose filter reads one chroma column more on
    /// each side, and rows of 8×8 chroma blocks, whose first and last output rows read one
    /// chroma row more): just inside, on and just past each edge. Coloured (flat chroma
    /// missed) and grey on black (chroma flat, luma not), odd sizes, one and three channels.
    #[test]
    fn flat_region_edges_match_scalar_path() {
        for (h, w) in [(40, 200), (33, 131), (18, 66), (3, 129)] {
            for c in [1, 3] {
                for (fg, size) in [([200u8, 40, 90], (1, 1)), ([1, 1, 1], (1, 1)), ([90, 200, 40], (5, 3))] {
                    for y0 in [0, 14, 15, 16, 17, 18, 31] {
                        for x0 in [0, 60, 61, 62, 63, 64, 65, 66, 127, 128, 129] {
                            if y0 >= h || x0 >= w {
                                continue;
                            }
                            let mut img = vec![0u8; h * w * c];
                            for y in y0..(y0 + size.0).min(h) {
                                for x in x0..(x0 + size.1).min(w) {
                                    img[(y * w + x) * c..][..c].copy_from_slice(&fg[..c]);
                                }
                            }
                            for q in [7, 15, 100] {
                                let want = round_trip_scalar(&img, h, w, c, q);
                                assert!(round_trip(&img, h, w, c, q) == want, "{h}x{w}x{c} {fg:?} at {y0},{x0} q{q}");
                                #[cfg(target_arch = "x86_64")]
                                if std::arch::is_x86_feature_detected!("avx2") {
                                    // SAFETY: AVX2 is present.
                                    assert!(unsafe { round_trip_avx2(&img, h, w, c, q, false) } == want, "avx2 {h}x{w}x{c} {fg:?} at {y0},{x0} q{q}");
                                }
                            }
                        }
                    }
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
                    unsafe { rows_avx512::upsample_rows(&yr, w, &b, &r, 256, 1, w, rgb.as_mut_ptr()) };
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

    /// `block_avx2::FDCT_ERR` bounds islow's error against the exact DCT: each pass is an
    /// integer linear map (`fdct_1d` of unit vectors, descaled) followed by a rounding of at
    /// most ½, so for samples in −128..127 the error is at most 128·Σ|L − D| (L the two passes'
    /// composed map, D the exact one) plus pass 1's roundings carried through pass 2 plus ½.
    /// Random blocks and pure cosines check the bound against `fdct_islow` itself.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn fdct_error_bound() {
        use std::f64::consts::{PI, SQRT_2};
        let a: Vec<[i32; 8]> = (0..8).map(|x| fdct_1d(std::array::from_fn(|i| (i == x) as i32))).collect();
        let p1 = |u: usize, x: usize| if u.is_multiple_of(4) { 4.0 * a[x][u] as f64 } else { a[x][u] as f64 / 2048.0 };
        let p2 = |v: usize, y: usize| if v.is_multiple_of(4) { a[y][v] as f64 / 4.0 } else { a[y][v] as f64 / 32768.0 };
        let d = |u: usize, x: usize| if u == 0 { 1.0 } else { SQRT_2 * (((2 * x + 1) * u) as f64 * PI / 16.0).cos() };
        let mut bound = [0f64; 64];
        for (k, b) in bound.iter_mut().enumerate() {
            let (v, u) = (k / 8, k % 8);
            let lin: f64 = (0..64).map(|i| (p2(v, i / 8) * p1(u, i % 8) - d(v, i / 8) * d(u, i % 8)).abs()).sum();
            let carried: f64 = if u % 4 == 0 { 0.0 } else { 0.5 * (0..8).map(|y| p2(v, y).abs()).sum::<f64>() };
            *b = 128.0 * lin + carried + 0.5;
            assert!(*b < block_avx2::FDCT_ERR as f64, "coefficient {k}: {b}");
        }
        let mut rng = crate::Rng::seed_from_u64(5);
        for n in 0..20000 {
            let f: [i32; 64] = if n % 2 == 0 {
                let r = rng.gen_range(1..=128);
                std::array::from_fn(|_| rng.gen_range(-r..r))
            } else {
                let (k, amp) = (rng.gen_range(0..64), rng.gen_range(0.0..127.0));
                std::array::from_fn(|i| (amp * d(k / 8, i / 8) * d(k % 8, i % 8) / 2.0).round().clamp(-128.0, 127.0) as i32)
            };
            let mut t = f;
            fdct_islow(&mut t);
            for k in 0..64 {
                let exact: f64 = (0..64).map(|i| d(k / 8, i / 8) * d(k % 8, i % 8) * f[i] as f64).sum();
                assert!((t[k] as f64 - exact).abs() <= bound[k], "coefficient {k}: {} vs {exact}", t[k]);
            }
        }
    }

    /// Whether a block on the given side of a threshold is still wanted: 128 a side.
    fn take_side(sides: &mut [usize; 2], is_below: bool) -> bool {
        let n = &mut sides[is_below as usize];
        if *n == 128 {
            return false;
        }
        *n += 1;
        true
    }

    /// 8×8 `blocks` tiled 16 a row, coded by the vector `code_plane` and the scalar one.
    #[cfg(target_arch = "x86_64")]
    fn blocks_code_as_scalar(blocks: &[Vec<u8>], qt: &[i32; 64], q: u32) {
        let (fw, fh) = (128, 8 * blocks.len().div_ceil(16));
        let mut img = vec![0u8; fw * fh];
        for (n, blk) in blocks.iter().enumerate() {
            for y in 0..8 {
                img[(n / 16 * 8 + y) * fw + n % 16 * 8..][..8].copy_from_slice(&blk[y * 8..y * 8 + 8]);
            }
        }
        let want = code_plane(&img, fw, fh, qt);
        // SAFETY: the callers run only where AVX2 is present.
        unsafe { block_avx2::code_plane(&mut img, fw, fh, &block_avx2::Tables::new(qt)) };
        assert!(img == want, "q{q}");
    }

    /// Blocks whose spread lies just below and just above the DC-only threshold (pure cosines
    /// of every frequency, whose one coefficient carries the whole spread, and noise), coded by
    /// the vector `code_plane` and the scalar one, at qualities where the shortcut applies.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn dc_only_shortcut_matches_scalar() {
        use std::f64::consts::PI;
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut rng = crate::Rng::seed_from_u64(9);
        for q in [1, 3, 7, 10, 15, 25, 40, 60, 75, 85] {
            for base in [&STD_LUM, &STD_CHR] {
                let qt = quant_table(base, q);
                let m = qt[1..].iter().map(|&v| 4 * v - block_avx2::FDCT_ERR).min().unwrap() as f64;
                assert!(m > 0.0, "q{q}");
                let (mut sides, mut plane) = ([0usize; 2], Vec::new());
                while sides[0] + sides[1] < 256 {
                    let mean = rng.gen_range(60.0..196.0);
                    // Around √threshold in the exact coefficient's units (8× orthonormal).
                    let r = m * rng.gen_range(0.9..1.1);
                    let k = rng.gen_range(1..64);
                    let blk: Vec<u8> = if rng.gen_bool(0.7) {
                        let c = |u: usize, x: usize| if u == 0 { 1.0 / 8f64.sqrt() } else { 0.5 * (((2 * x + 1) * u) as f64 * PI / 16.0).cos() };
                        (0..64).map(|i| (mean + r / 8.0 * c(k / 8, i / 8) * c(k % 8, i % 8)).round().clamp(0.0, 255.0) as u8).collect()
                    } else {
                        let s = r / 64.0 * rng.gen_range(1.0..3.0);
                        (0..64).map(|_| (mean + rng.gen_range(-s..s)).round() as u8).collect()
                    };
                    let (s1, s2) = blk.iter().fold((0i64, 0i64), |(a, b), &v| (a + v as i64, b + (v as i64).pow(2)));
                    let spread = 64 * s2 - s1 * s1;
                    if spread == 0 {
                        continue;
                    }
                    let is_below = (spread as f64) < m * m;
                    if !(0.6..1.6).contains(&(spread as f64 / (m * m))) {
                        continue;
                    }
                    if take_side(&mut sides, is_below) {
                        plane.push(blk);
                    }
                }
                blocks_code_as_scalar(&plane, &qt, q);
            }
        }
    }

    /// Blocks whose quantised coefficients lie in row 0, column 0, the top-left 4×4 (the
    /// block coder's short inverse transform) or anywhere, alone or with one more coefficient
    /// just outside (row 1, column 1, row or column 4), in random order: vector `code_plane`
    /// against the scalar one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn sparse_blocks_match_scalar() {
        use std::f64::consts::PI;
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let basis = |u: usize, x: usize| if u == 0 { 1.0 / 8f64.sqrt() } else { 0.5 * (((2 * x + 1) * u) as f64 * PI / 16.0).cos() };
        let mut rng = crate::Rng::seed_from_u64(21);
        for q in [3, 7, 15, 30, 60, 90] {
            for base in [&STD_LUM, &STD_CHR] {
                let qt = quant_table(base, q);
                // Kinds seen: row 0 only, column 0 only, top-left 4×4, beyond (DC-only aside).
                let mut seen = [0usize; 4];
                let n: usize = 16 * 24 + rng.gen_range(0..16);
                let mut img = vec![0u8; 128 * 8 * n.div_ceil(16)];
                for b in 0..n {
                    let mut c = vec![(0usize, 0usize, rng.gen_range(-400.0..400.0))];
                    let pick = |rng: &mut crate::Rng, kind: usize| match kind {
                        0 => (0, rng.gen_range(1..8)),
                        1 => (rng.gen_range(1..8), 0),
                        2 => (rng.gen_range(0..4), rng.gen_range(0..4)),
                        _ => (rng.gen_range(0..8), rng.gen_range(0..8)),
                    };
                    let kind = rng.gen_range(0..4);
                    for _ in 0..rng.gen_range(1..4) {
                        let (v, u) = pick(&mut rng, kind);
                        c.push((v, u, 8.0 * qt[v * 8 + u] as f64 * rng.gen_range(0.4..3.0) * if rng.gen_bool(0.5) { -1.0 } else { 1.0 }));
                    }
                    if rng.gen_bool(0.3) {
                        let (v, u) = [(1, rng.gen_range(0..8)), (rng.gen_range(0..8), 1), (4, rng.gen_range(0..8)), (rng.gen_range(0..8), 4)][rng.gen_range(0..4)];
                        c.push((v, u, 8.0 * qt[v * 8 + u] as f64 * rng.gen_range(0.4..1.5)));
                    }
                    let mut blk = [0i32; 64];
                    for (i, px) in blk.iter_mut().enumerate() {
                        let (y, x) = (i / 8, i % 8);
                        let f: f64 = c.iter().map(|&(v, u, t)| t / 8.0 * basis(v, y) * basis(u, x)).sum();
                        *px = (128.0 + f).round().clamp(0.0, 255.0) as i32;
                        img[(b / 16 * 8 + y) * 128 + b % 16 * 8 + x] = *px as u8;
                    }
                    blk.iter_mut().for_each(|v| *v -= 128);
                    fdct_islow(&mut blk);
                    let nz: Vec<usize> = (1..64).filter(|&i| (blk[i].abs() + 4 * qt[i]) / (8 * qt[i]) != 0).collect();
                    if let Some(k) = [nz.iter().all(|&i| i < 8), nz.iter().all(|&i| i % 8 == 0), nz.iter().all(|&i| i < 32 && i % 8 < 4), true].iter().position(|&b| b).filter(|_| !nz.is_empty()) {
                        seen[k] += 1;
                    }
                }
                let want = code_plane(&img, 128, img.len() / 128, &qt);
                // SAFETY: AVX2 is present.
                unsafe { block_avx2::code_plane(&mut img, 128, want.len() / 128, &block_avx2::Tables::new(&qt)) };
                assert!(img == want, "q{q}");
                assert!(seen.iter().all(|&k| k >= 10), "q{q} {seen:?}");
            }
        }
    }

    /// Blocks with random coefficients in the top-left 4×4 and one outside it (a cosine) sized
    /// so that the spread left to the outside lies just below and just above the bound that
    /// proves it zero, at every quality and table where the bound is tried: vector
    /// `code_plane` against the scalar one.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn low_frequency_bound_matches_scalar() {
        use std::f64::consts::PI;
        if !std::arch::is_x86_feature_detected!("avx2") {
            return;
        }
        let basis = |u: usize, x: usize| if u == 0 { 1.0 / 8f64.sqrt() } else { 0.5 * (((2 * x + 1) * u) as f64 * PI / 16.0).cos() };
        let eps = block_avx2::FDCT_ERR;
        let mut rng = crate::Rng::seed_from_u64(33);
        let mut tried = 0;
        for q in [1, 5, 7, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80] {
            for base in [&STD_LUM, &STD_CHR] {
                let qt = quant_table(base, q);
                let outside: Vec<usize> = (0..64).filter(|i| i / 8 >= 4 || i % 8 >= 4).collect();
                let m = outside.iter().map(|&i| 4 * qt[i] - eps).min().unwrap();
                if qt[1..].iter().any(|&q| 4 * q - eps < block_avx2::LOW_MIN) {
                    continue;
                }
                tried += 1;
                let bound = (m * m) as f64;
                let (mut sides, mut plane) = ([0usize; 2], Vec::new());
                while sides[0] + sides[1] < 256 {
                    let mut c: Vec<(usize, f64)> = (0..rng.gen_range(0..4)).map(|_| (rng.gen_range(0..4) * 8 + rng.gen_range(0..4), 8.0 * qt[0] as f64 * rng.gen_range(-2.0..2.0))).collect();
                    let k = outside[rng.gen_range(0..outside.len())];
                    c.push((k, m as f64 * rng.gen_range(0.85..1.15) * if rng.gen_bool(0.5) { -1.0 } else { 1.0 }));
                    let mean = rng.gen_range(90.0..166.0);
                    let blk: Vec<u8> = (0..64)
                        .map(|i| (mean + c.iter().map(|&(k, t)| t / 8.0 * basis(k / 8, i / 8) * basis(k % 8, i % 8)).sum::<f64>()).round().clamp(0.0, 255.0) as u8)
                        .collect();
                    let (s1, s2) = blk.iter().fold((0i64, 0i64), |(a, b), &v| (a + v as i64, b + (v as i64).pow(2)));
                    let mut t: [i32; 64] = std::array::from_fn(|i| blk[i] as i32 - 128);
                    fdct_islow(&mut t);
                    let low: i64 = (1..64).filter(|i| i / 8 < 4 && i % 8 < 4).map(|i| ((t[i].abs() - eps).max(0) as i64).pow(2)).sum();
                    let rest = (64 * s2 - s1 * s1 - low) as f64;
                    if !(0.7..1.4).contains(&(rest / bound)) {
                        continue;
                    }
                    let is_below = rest < bound;
                    if take_side(&mut sides, is_below) {
                        plane.push(blk);
                    }
                }
                blocks_code_as_scalar(&plane, &qt, q);
            }
        }
        assert!(tried >= 10, "{tried}");
    }

    /// The VNNI sums of squares in `block_avx2::spread` equal the AVX2 ones: every step width
    /// on random bytes, runs of extremes and flat blocks of every value (noise at every
    /// quality through `code_plane` too, where the CPU has VNNI).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn spread_vnni_matches_avx2() {
        if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("avx512vnni") && std::arch::is_x86_feature_detected!("avx512vl")) {
            return;
        }
        let mut rng = crate::Rng::seed_from_u64(11);
        // SAFETY: AVX2 and VNNI are present.
        let mut t = unsafe { block_avx2::Tables::new(&quant_table(&STD_LUM, 10)) };
        assert!(t.vnni);
        let mut img: Vec<u8> = (0..64 * 8).map(|_| rng.gen()).collect();
        img[..8 * 64].iter_mut().skip(32).step_by(3).for_each(|v| *v = 255);
        img.extend((0..=255u8).flat_map(|v| [v; 32 * 8]));
        img.extend((0..64 * 8).map(|i| [0, 255][(i / 8 + i % 3) % 2]));
        for r in img.chunks_exact(32 * 8) {
            // SAFETY: each chunk is 8 rows of 32 bytes.
            unsafe {
                assert!(block_avx2::spread::<4, true>(r.as_ptr(), 32, &t).0 == block_avx2::spread::<4, false>(r.as_ptr(), 32, &t).0);
                assert!(block_avx2::spread::<4, true>(r.as_ptr(), 32, &t).1 == block_avx2::spread::<4, false>(r.as_ptr(), 32, &t).1);
                assert!(block_avx2::spread::<2, true>(r.as_ptr(), 32, &t).1 == block_avx2::spread::<2, false>(r.as_ptr(), 32, &t).1);
                assert!(block_avx2::spread::<1, true>(r.as_ptr(), 32, &t).1 == block_avx2::spread::<1, false>(r.as_ptr(), 32, &t).1);
            }
        }
        let noise: Vec<u8> = (0..56 * 64).map(|_| rng.gen()).collect();
        for q in 1..=100 {
            let (mut a, mut b) = (noise.clone(), noise.clone());
            // SAFETY: AVX2 and VNNI are present; `vnni` off takes the AVX2 sums.
            unsafe {
                t = block_avx2::Tables::new(&quant_table(&STD_LUM, q));
                block_avx2::code_plane(&mut a, 56, 64, &t);
                t.vnni = false;
                block_avx2::code_plane(&mut b, 56, 64, &t);
            }
            assert!(a == b, "q{q}");
        }
    }
}
