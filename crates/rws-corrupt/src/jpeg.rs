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
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

#[inline]
fn descale(x: i64, n: i32) -> i64 {
    (x + (1 << (n - 1))) >> n
}

/// `jpeg_fdct_islow` (IJG 6b / libjpeg-turbo jfdctint.c); input already level-shifted.
fn fdct_islow(data: &mut [i64; 64]) {
    for r in 0..8 {
        let d = &mut data[r * 8..r * 8 + 8];
        let tmp0 = d[0] + d[7];
        let tmp7 = d[0] - d[7];
        let tmp1 = d[1] + d[6];
        let tmp6 = d[1] - d[6];
        let tmp2 = d[2] + d[5];
        let tmp5 = d[2] - d[5];
        let tmp3 = d[3] + d[4];
        let tmp4 = d[3] - d[4];
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        d[0] = (tmp10 + tmp11) << PASS1_BITS;
        d[4] = (tmp10 - tmp11) << PASS1_BITS;
        let z1 = (tmp12 + tmp13) * FIX_0_541196100;
        d[2] = descale(z1 + tmp13 * FIX_0_765366865, CONST_BITS - PASS1_BITS);
        d[6] = descale(z1 + tmp12 * (-FIX_1_847759065), CONST_BITS - PASS1_BITS);
        let z1 = tmp4 + tmp7;
        let z2 = tmp5 + tmp6;
        let z3 = tmp4 + tmp6;
        let z4 = tmp5 + tmp7;
        let z5 = (z3 + z4) * FIX_1_175875602;
        let t4 = tmp4 * FIX_0_298631336;
        let t5 = tmp5 * FIX_2_053119869;
        let t6 = tmp6 * FIX_3_072711026;
        let t7 = tmp7 * FIX_1_501321110;
        let z1 = z1 * (-FIX_0_899976223);
        let z2 = z2 * (-FIX_2_562915447);
        let z3 = z3 * (-FIX_1_961570560) + z5;
        let z4 = z4 * (-FIX_0_390180644) + z5;
        d[7] = descale(t4 + z1 + z3, CONST_BITS - PASS1_BITS);
        d[5] = descale(t5 + z2 + z4, CONST_BITS - PASS1_BITS);
        d[3] = descale(t6 + z2 + z3, CONST_BITS - PASS1_BITS);
        d[1] = descale(t7 + z1 + z4, CONST_BITS - PASS1_BITS);
    }
    for c in 0..8 {
        let g = |i: usize| data[i * 8 + c];
        let tmp0 = g(0) + g(7);
        let tmp7 = g(0) - g(7);
        let tmp1 = g(1) + g(6);
        let tmp6 = g(1) - g(6);
        let tmp2 = g(2) + g(5);
        let tmp5 = g(2) - g(5);
        let tmp3 = g(3) + g(4);
        let tmp4 = g(3) - g(4);
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        let mut o = [0i64; 8];
        o[0] = descale(tmp10 + tmp11, PASS1_BITS);
        o[4] = descale(tmp10 - tmp11, PASS1_BITS);
        let z1 = (tmp12 + tmp13) * FIX_0_541196100;
        o[2] = descale(z1 + tmp13 * FIX_0_765366865, CONST_BITS + PASS1_BITS);
        o[6] = descale(z1 + tmp12 * (-FIX_1_847759065), CONST_BITS + PASS1_BITS);
        let z1 = tmp4 + tmp7;
        let z2 = tmp5 + tmp6;
        let z3 = tmp4 + tmp6;
        let z4 = tmp5 + tmp7;
        let z5 = (z3 + z4) * FIX_1_175875602;
        let t4 = tmp4 * FIX_0_298631336;
        let t5 = tmp5 * FIX_2_053119869;
        let t6 = tmp6 * FIX_3_072711026;
        let t7 = tmp7 * FIX_1_501321110;
        let z1 = z1 * (-FIX_0_899976223);
        let z2 = z2 * (-FIX_2_562915447);
        let z3 = z3 * (-FIX_1_961570560) + z5;
        let z4 = z4 * (-FIX_0_390180644) + z5;
        o[7] = descale(t4 + z1 + z3, CONST_BITS + PASS1_BITS);
        o[5] = descale(t5 + z2 + z4, CONST_BITS + PASS1_BITS);
        o[3] = descale(t6 + z2 + z3, CONST_BITS + PASS1_BITS);
        o[1] = descale(t7 + z1 + z4, CONST_BITS + PASS1_BITS);
        for i in 0..8 {
            data[i * 8 + c] = o[i];
        }
    }
}

/// `jpeg_idct_islow`: dequantised coefficients in, 0..255 samples out (range-limited).
fn idct_islow(coef: &[i64; 64], out: &mut [u8; 64]) {
    let mut ws = [0i64; 64];
    for c in 0..8 {
        let g = |i: usize| coef[i * 8 + c];
        if (1..8).all(|i| g(i) == 0) {
            let dc = g(0) << PASS1_BITS;
            for i in 0..8 {
                ws[i * 8 + c] = dc;
            }
            continue;
        }
        let z2 = g(2);
        let z3 = g(6);
        let z1 = (z2 + z3) * FIX_0_541196100;
        let tmp2 = z1 + z3 * (-FIX_1_847759065);
        let tmp3 = z1 + z2 * FIX_0_765366865;
        let tmp0 = (g(0) + g(4)) << CONST_BITS;
        let tmp1 = (g(0) - g(4)) << CONST_BITS;
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        let (t0, t1, t2, t3) = (g(7), g(5), g(3), g(1));
        let z1 = t0 + t3;
        let z2 = t1 + t2;
        let z3 = t0 + t2;
        let z4 = t1 + t3;
        let z5 = (z3 + z4) * FIX_1_175875602;
        let t0 = t0 * FIX_0_298631336;
        let t1 = t1 * FIX_2_053119869;
        let t2 = t2 * FIX_3_072711026;
        let t3 = t3 * FIX_1_501321110;
        let z1 = z1 * (-FIX_0_899976223);
        let z2 = z2 * (-FIX_2_562915447);
        let z3 = z3 * (-FIX_1_961570560) + z5;
        let z4 = z4 * (-FIX_0_390180644) + z5;
        let t0 = t0 + z1 + z3;
        let t1 = t1 + z2 + z4;
        let t2 = t2 + z2 + z3;
        let t3 = t3 + z1 + z4;
        let n = CONST_BITS - PASS1_BITS;
        ws[c] = descale(tmp10 + t3, n);
        ws[7 * 8 + c] = descale(tmp10 - t3, n);
        ws[8 + c] = descale(tmp11 + t2, n);
        ws[6 * 8 + c] = descale(tmp11 - t2, n);
        ws[2 * 8 + c] = descale(tmp12 + t1, n);
        ws[5 * 8 + c] = descale(tmp12 - t1, n);
        ws[3 * 8 + c] = descale(tmp13 + t0, n);
        ws[4 * 8 + c] = descale(tmp13 - t0, n);
    }
    // range_limit: samples are centred on 128 and clamped; the table wraps at 1024 (RANGE_MASK),
    // which only matters for corrupt data.
    let lim = |v: i64| -> u8 {
        let v = v & 1023;
        let v = if v >= 512 { v - 1024 } else { v };
        (v + 128).clamp(0, 255) as u8
    };
    for r in 0..8 {
        let w = &ws[r * 8..r * 8 + 8];
        let n = CONST_BITS + PASS1_BITS + 3;
        if w[1..].iter().all(|&v| v == 0) {
            let dc = lim(descale(w[0], PASS1_BITS + 3));
            out[r * 8..r * 8 + 8].iter_mut().for_each(|o| *o = dc);
            continue;
        }
        let z2 = w[2];
        let z3 = w[6];
        let z1 = (z2 + z3) * FIX_0_541196100;
        let tmp2 = z1 + z3 * (-FIX_1_847759065);
        let tmp3 = z1 + z2 * FIX_0_765366865;
        let tmp0 = (w[0] + w[4]) << CONST_BITS;
        let tmp1 = (w[0] - w[4]) << CONST_BITS;
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        let (t0, t1, t2, t3) = (w[7], w[5], w[3], w[1]);
        let z1 = t0 + t3;
        let z2 = t1 + t2;
        let z3 = t0 + t2;
        let z4 = t1 + t3;
        let z5 = (z3 + z4) * FIX_1_175875602;
        let t0 = t0 * FIX_0_298631336;
        let t1 = t1 * FIX_2_053119869;
        let t2 = t2 * FIX_3_072711026;
        let t3 = t3 * FIX_1_501321110;
        let z1 = z1 * (-FIX_0_899976223);
        let z2 = z2 * (-FIX_2_562915447);
        let z3 = z3 * (-FIX_1_961570560) + z5;
        let z4 = z4 * (-FIX_0_390180644) + z5;
        let t0 = t0 + z1 + z3;
        let t1 = t1 + z2 + z4;
        let t2 = t2 + z2 + z3;
        let t3 = t3 + z1 + z4;
        let o = &mut out[r * 8..r * 8 + 8];
        o[0] = lim(descale(tmp10 + t3, n));
        o[7] = lim(descale(tmp10 - t3, n));
        o[1] = lim(descale(tmp11 + t2, n));
        o[6] = lim(descale(tmp11 - t2, n));
        o[2] = lim(descale(tmp12 + t1, n));
        o[5] = lim(descale(tmp12 - t1, n));
        o[3] = lim(descale(tmp13 + t0, n));
        o[4] = lim(descale(tmp13 - t0, n));
    }
}

/// Encode and decode one plane (`pw`×`ph`, padded to whole blocks by edge replication) with
/// quantisation table `qt`; returns the decoded plane at the same padded size.
fn code_plane(plane: &[u8], pw: usize, ph: usize, qt: &[i32; 64]) -> Vec<u8> {
    let bw = pw.div_ceil(8);
    let bh = ph.div_ceil(8);
    let (fw, fh) = (bw * 8, bh * 8);
    let mut out = vec![0u8; fw * fh];
    let mut blk = [0i64; 64];
    let mut dec = [0u8; 64];
    for by in 0..bh {
        for bx in 0..bw {
            for y in 0..8 {
                let sy = (by * 8 + y).min(ph - 1);
                for x in 0..8 {
                    let sx = (bx * 8 + x).min(pw - 1);
                    blk[y * 8 + x] = plane[sy * pw + sx] as i64 - 128;
                }
            }
            fdct_islow(&mut blk);
            for i in 0..64 {
                // jcdctmgr: divisor = q·8 for the islow DCT, round half away from zero.
                let qv = (qt[i] as i64) << 3;
                let t = blk[i];
                let qc = if t < 0 { -((-t + (qv >> 1)) / qv) } else { (t + (qv >> 1)) / qv };
                blk[i] = qc * qt[i] as i64;
            }
            idct_islow(&blk, &mut dec);
            for y in 0..8 {
                out[(by * 8 + y) * fw + bx * 8..(by * 8 + y) * fw + bx * 8 + 8].copy_from_slice(&dec[y * 8..y * 8 + 8]);
            }
        }
    }
    // Return at the padded-to-block width so callers index with `fw`.
    out.truncate(fw * fh);
    out
}

const SCALEBITS: i32 = 16;
const ONE_HALF: i64 = 1 << (SCALEBITS - 1);
fn fix(x: f64) -> i64 {
    (x * (1i64 << SCALEBITS) as f64 + 0.5) as i64
}

/// Compress at `quality` and decompress, as Pillow + libjpeg-turbo do; `c` is 1 or 3.
pub(crate) fn round_trip(img: &[u8], h: usize, w: usize, c: usize, quality: u32) -> Vec<u8> {
    let ql = quant_table(&STD_LUM, quality);
    if c == 1 {
        let d = code_plane(img, w, h, &ql);
        let fw = w.div_ceil(8) * 8;
        return (0..h).flat_map(|y| d[y * fw..y * fw + w].to_vec()).collect();
    }
    let qc = quant_table(&STD_CHR, quality);
    // Colour conversion (jccolor.c).
    let (fy_r, fy_g, fy_b) = (fix(0.299), fix(0.587), fix(0.114));
    let (fcb_r, fcb_g, fhalf) = (fix(0.16874), fix(0.33126), fix(0.5));
    let (fcr_g, fcr_b) = (fix(0.41869), fix(0.08131));
    let cbcr_off = 128i64 << SCALEBITS;
    let mut yp = vec![0u8; h * w];
    let mut cb = vec![0u8; h * w];
    let mut cr = vec![0u8; h * w];
    for i in 0..h * w {
        let (r, g, b) = (img[i * 3] as i64, img[i * 3 + 1] as i64, img[i * 3 + 2] as i64);
        yp[i] = ((fy_r * r + fy_g * g + fy_b * b + ONE_HALF) >> SCALEBITS) as u8;
        cb[i] = ((-fcb_r * r - fcb_g * g + fhalf * b + cbcr_off + ONE_HALF - 1) >> SCALEBITS) as u8;
        cr[i] = ((fhalf * r - fcr_g * g - fcr_b * b + cbcr_off + ONE_HALF - 1) >> SCALEBITS) as u8;
    }
    // Luma: MCU is 16×16, so the plane is padded to multiples of 16 (edge replication).
    let (mw, mh) = (w.div_ceil(16) * 16, h.div_ceil(16) * 16);
    let pad = |p: &[u8]| -> Vec<u8> {
        let mut o = vec![0u8; mw * mh];
        for y in 0..mh {
            for x in 0..mw {
                o[y * mw + x] = p[y.min(h - 1) * w + x.min(w - 1)];
            }
        }
        o
    };
    let yd = code_plane(&pad(&yp), mw, mh, &ql);
    // h2v2_downsample with alternating bias 1, 2.
    let (cw, chh) = (mw / 2, mh / 2);
    let down = |p: &[u8]| -> Vec<u8> {
        let pp = pad(p);
        let mut o = vec![0u8; cw * chh];
        for y in 0..chh {
            let mut bias = 1u32;
            for x in 0..cw {
                let s = pp[2 * y * mw + 2 * x] as u32 + pp[2 * y * mw + 2 * x + 1] as u32 + pp[(2 * y + 1) * mw + 2 * x] as u32 + pp[(2 * y + 1) * mw + 2 * x + 1] as u32;
                o[y * cw + x] = ((s + bias) >> 2) as u8;
                bias ^= 3;
            }
        }
        o
    };
    let cbd = code_plane(&down(&cb), cw, chh, &qc);
    let crd = code_plane(&down(&cr), cw, chh, &qc);
    // Fancy upsampling over the component's real downsampled size (⌈w/2⌉ × ⌈h/2⌉), edges replicated.
    let (dw, dh) = (w.div_ceil(2), h.div_ceil(2));
    let up = |p: &[u8]| -> Vec<u8> {
        let mut o = vec![0u8; dh * 2 * dw * 2];
        for row in 0..dh {
            for v in 0..2 {
                let r0 = row;
                let r1 = if v == 0 { row.saturating_sub(1) } else { (row + 1).min(dh - 1) };
                let cs = |x: usize| p[r0 * cw + x] as i32 * 3 + p[r1 * cw + x] as i32;
                let orow = &mut o[(2 * row + v) * dw * 2..(2 * row + v + 1) * dw * 2];
                if dw == 1 {
                    let t = cs(0);
                    orow[0] = ((t * 4 + 8) >> 4) as u8;
                    orow[1] = ((t * 4 + 7) >> 4) as u8;
                    continue;
                }
                let mut this = cs(0);
                let mut next = cs(1);
                orow[0] = ((this * 4 + 8) >> 4) as u8;
                orow[1] = ((this * 3 + next + 7) >> 4) as u8;
                let mut last = this;
                this = next;
                for x in 1..dw - 1 {
                    next = cs(x + 1);
                    orow[2 * x] = ((this * 3 + last + 8) >> 4) as u8;
                    orow[2 * x + 1] = ((this * 3 + next + 7) >> 4) as u8;
                    last = this;
                    this = next;
                }
                orow[2 * (dw - 1)] = ((this * 3 + last + 8) >> 4) as u8;
                orow[2 * (dw - 1) + 1] = ((this * 4 + 7) >> 4) as u8;
            }
        }
        o
    };
    let cbu = up(&cbd);
    let cru = up(&crd);
    let uw = dw * 2;
    let mut out = vec![0u8; h * w * 3];
    let (f_cr_r, f_cb_b, f_cr_g, f_cb_g) = (fix(1.402), fix(1.772), fix(0.71414), fix(0.34414));
    for y in 0..h {
        for x in 0..w {
            let yy = yd[y * mw + x] as i64;
            let cbv = cbu[y * uw + x] as i64 - 128;
            let crv = cru[y * uw + x] as i64 - 128;
            let r = yy + ((f_cr_r * crv + ONE_HALF) >> SCALEBITS);
            let g = yy + ((-f_cb_g * cbv + ONE_HALF - f_cr_g * crv) >> SCALEBITS);
            let b = yy + ((f_cb_b * cbv + ONE_HALF) >> SCALEBITS);
            let o = &mut out[(y * w + x) * 3..(y * w + x) * 3 + 3];
            o[0] = r.clamp(0, 255) as u8;
            o[1] = g.clamp(0, 255) as u8;
            o[2] = b.clamp(0, 255) as u8;
        }
    }
    out
}
