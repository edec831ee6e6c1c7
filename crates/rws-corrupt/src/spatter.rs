//! spatter: a thresholded, smoothed random "liquid" layer; mode 0 ("water") builds the reference's
//! OpenCV edge/distance pipeline natively (Canny → L2 chamfer distance → truncate → box blur →
//! equalizeHist → 3×3 emboss → box blur), mode 1 ("mud") blends in brown.
//! Grey images receive the luminance (skimage rgb2gray weights) of the colour the reference adds,
//! as imagecorruptions does.
//!
//! The layer does not depend on the image, so the float and uint8 paths share it ([`layer`]) and
//! differ only in the pixel type of the final blend: the same bytes. It is computed in f32 (the
//! Gaussian filters, the mask) and integers (everything from the liquid's bytes to the water
//! mask), with AVX2 where present and no FMA, so the portable build gives the same bytes.

use crate::glass::gauss_f32;
use crate::ndimage::Mode;
use crate::{FImage, ParamSet, Result, Rng};

const GREY_W: [f64; 3] = [0.2125, 0.7154, 0.0721];

/// OpenCV Canny(img, low, high) with aperture 3, L1 gradient and replicated borders; returns
/// 1 on edges, in a copy padded by one zero pixel on every side (for [`distance_transform`]).
/// Sobel and the non-maximum suppression are whole-row loops without branches (integers: any
/// order gives the same values); hysteresis grows the strong pixels through the weak ones (its
/// result does not depend on the order it visits them in).
#[inline(always)]
fn canny<const AVX2: bool>(img: &[u8], h: usize, w: usize, low: i32, high: i32) -> Vec<u8> {
    let pw = w + 2;
    let mut pad = vec![0i16; (h + 2) * pw];
    for (y, prow) in pad.chunks_exact_mut(pw).enumerate() {
        let src = &img[(y.clamp(1, h) - 1) * w..][..w];
        for (p, &v) in prow[1..w + 1].iter_mut().zip(src) {
            *p = v as i16;
        }
        prow[0] = src[0] as i16;
        prow[w + 1] = src[w - 1] as i16;
    }
    let mut dxs = vec![0i16; h * w];
    let mut dys = vec![0i16; h * w];
    // Zero outside the image, as OpenCV's magnitude buffer.
    let mut mag = vec![0i16; (h + 2) * pw];
    for y in 0..h {
        let (r0, r1, r2) = (&pad[y * pw..(y + 1) * pw], &pad[(y + 1) * pw..(y + 2) * pw], &pad[(y + 2) * pw..(y + 3) * pw]);
        let (dxr, dyr) = (&mut dxs[y * w..(y + 1) * w], &mut dys[y * w..(y + 1) * w]);
        let mr = &mut mag[(y + 1) * pw + 1..(y + 1) * pw + 1 + w];
        // The taps as slices of exactly w values (no bounds checks: the loop vectorises).
        let (a0, a1, a2) = (&r0[..w], &r0[1..w + 1], &r0[2..w + 2]);
        let (b0, b2) = (&r1[..w], &r1[2..w + 2]);
        let (c0, c1, c2) = (&r2[..w], &r2[1..w + 1], &r2[2..w + 2]);
        for x in 0..w {
            let dx = (a2[x] + 2 * b2[x] + c2[x]) - (a0[x] + 2 * b0[x] + c0[x]);
            let dy = (c0[x] + 2 * c1[x] + c2[x]) - (a0[x] + 2 * a1[x] + a2[x]);
            dxr[x] = dx;
            dyr[x] = dy;
            mr[x] = dx.abs() + dy.abs();
        }
    }
    // 0: not an edge, 1: weak candidate, 2: edge.
    let mut state = vec![0u8; (h + 2) * pw];
    const SHIFT: i32 = 15;
    let tg22 = (0.414_213_562_373_095_f64 * (1 << SHIFT) as f64 + 0.5) as i32;
    for y in 0..h {
        let (mu, mc, md) = (&mag[y * pw..(y + 1) * pw], &mag[(y + 1) * pw..(y + 2) * pw], &mag[(y + 2) * pw..(y + 3) * pw]);
        let (dxr, dyr) = (&dxs[y * w..(y + 1) * w], &dys[y * w..(y + 1) * w]);
        let st = &mut state[(y + 1) * pw + 1..(y + 1) * pw + 1 + w];
        // The neighbours as slices of exactly w values (no bounds checks: the loop vectorises).
        let (ul, uc, ur) = (&mu[..w], &mu[1..w + 1], &mu[2..w + 2]);
        let (ml, mm, mr) = (&mc[..w], &mc[1..w + 1], &mc[2..w + 2]);
        let (dl, dc, dr) = (&md[..w], &md[1..w + 1], &md[2..w + 2]);
        #[cfg(target_arch = "x86_64")]
        let done = if AVX2 {
            // SAFETY: AVX2 instantiations run only where the CPU has it; every slice holds w values.
            unsafe { nms_avx2([ul, uc, ur, ml, mm, mr, dl, dc, dr], dxr, dyr, st, tg22, low, high) }
        } else {
            0
        };
        #[cfg(not(target_arch = "x86_64"))]
        let done = 0;
        for x in done..w {
            let m = mm[x] as i32;
            let (xs, ys) = (dxr[x] as i32, dyr[x] as i32);
            // |dx|, |dy| ≤ 1020: the products stay far inside i32.
            let ax = xs.abs();
            let ay = ys.abs() << SHIFT;
            let tg22x = ax * tg22;
            let tg67x = tg22x + (ax << (SHIFT + 1));
            let (horiz, vert) = (ay < tg22x, ay > tg67x);
            let anti = (xs ^ ys) < 0;
            let (d1, d2) = if anti { (ur[x], dl[x]) } else { (ul[x], dr[x]) };
            let n1 = (if horiz { ml[x] } else if vert { uc[x] } else { d1 }) as i32;
            let n2 = (if horiz { mr[x] } else if vert { dc[x] } else { d2 }) as i32;
            // Along the gradient: strictly above the first neighbour; above the second, or equal
            // to it on the horizontal and vertical directions.
            let is_max = (m > n1) & ((m > n2) | ((m == n2) & (horiz | vert)));
            st[x] = (m > low && is_max) as u8 * (1 + (m > high) as u8);
        }
    }
    // Weak pixels are rare: start from those next to an edge and grow through the others (the
    // same connected components as growing from every edge pixel). The zero border never holds
    // a weak pixel, so the neighbours need no bounds checks.
    let nb = [pw + 1, pw, pw - 1, 1];
    let near_edge = |st: &[u8], k: usize| nb.iter().any(|&o| st[k - o] == 2 || st[k + o] == 2);
    let mut stack: Vec<usize> = Vec::new();
    for i in 0..state.len() / 8 {
        // States are 0, 1 or 2: bit 0 marks the weak ones.
        if u64::from_le_bytes(state[i * 8..i * 8 + 8].try_into().unwrap()) & 0x0101_0101_0101_0101 != 0 {
            for k in i * 8..i * 8 + 8 {
                if state[k] == 1 && near_edge(&state, k) {
                    state[k] = 2;
                    stack.push(k);
                }
            }
        }
    }
    for k in state.len() / 8 * 8..state.len() {
        if state[k] == 1 && near_edge(&state, k) {
            state[k] = 2;
            stack.push(k);
        }
    }
    while let Some(k) = stack.pop() {
        for &o in &nb {
            for j in [k - o, k + o] {
                if state[j] == 1 {
                    state[j] = 2;
                    stack.push(j);
                }
            }
        }
    }
    state.iter_mut().for_each(|s| *s >>= 1);
    state
}

/// Fixed-point scale of [`distance_transform`] (OpenCV's DIST_SHIFT).
const DIST_ONE: u32 = 1 << 16;
/// The distances are used capped at 20 (the reference's `np.minimum(dist, 20)`).
const DIST_CAP: u32 = 20 * DIST_ONE;

/// cv2.distanceTransform(src, DIST_L2, 5) as OpenCV computes it: a two-pass 5×5 chamfer
/// (1, 1.4, 2.1969) in 16.16 fixed point (the costs rounded as `CV_FLT_TO_FIX`), of every pixel
/// to the nearest edge; returned capped at 20 (DIST_CAP), in a copy padded by two pixels.
/// `edges` is [`canny`]'s padded map.
///
/// The cap commutes with the transform: starting from min(d, cap) everywhere gives min(d', cap)
/// at the end, since every step is a minimum of sums with non-negative costs. Each pass takes
/// the minimum over the mask's neighbours: those in the two rows already passed are final, so
/// their minimum is a whole-row loop (vectorised); only the same-row neighbour is a serial scan.
/// Minima and integer sums are exact in any order (and neighbours of equal cost share one
/// addition: min(u + c, v + c) = min(u, v) + c): the values of the pixel-by-pixel algorithm.
#[inline(always)]
fn distance_transform<const AVX2: bool>(edges: &[u8], h: usize, w: usize) -> Vec<u32> {
    const A: u32 = DIST_ONE;
    const B: u32 = 91_750; // round(1.4f · 2¹⁶)
    const C: u32 = 143_976; // round(2.1969f · 2¹⁶)
    let pw = w + 4;
    let mut d = vec![DIST_CAP; (h + 4) * pw];
    let mut cand = vec![0u32; w];
    for pass in 0..2 {
        for yy in 0..h {
            // Forward: rows top to bottom, neighbours above and to the left; backward: the
            // mirror image.
            let y = if pass == 0 { yy + 2 } else { h + 1 - yy };
            let (n1, n2) = if pass == 0 { (y - 1, y - 2) } else { (y + 1, y + 2) };
            let (r1, r2, r) = (&d[n1 * pw..(n1 + 1) * pw], &d[n2 * pw..(n2 + 1) * pw], &d[y * pw..(y + 1) * pw]);
            let e = &edges[(y - 1) * (w + 2) + 1..][..w];
            // The neighbours as slices of exactly w values (no bounds checks: the loop vectorises).
            let (a1, a3) = (&r2[1..w + 1], &r2[3..w + 3]);
            let (b0, b1, b2, b3, b4) = (&r1[..w], &r1[1..w + 1], &r1[2..w + 2], &r1[3..w + 3], &r1[4..w + 4]);
            let (rc, cd) = (&r[2..w + 2], &mut cand[..w]);
            #[cfg(target_arch = "x86_64")]
            let done = if AVX2 {
                // SAFETY: AVX2 instantiations run only where the CPU has it; every slice holds w values.
                unsafe { dist_cand_avx2([rc, a1, a3, b0, b1, b2, b3, b4], e, cd, [A, B, C]) }
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            for x in done..w {
                let m = rc[x].min(a1[x].min(a3[x]).min(b0[x]).min(b4[x]) + C).min(b1[x].min(b3[x]) + B).min(b2[x] + A);
                cd[x] = if e[x] != 0 { 0 } else { m };
            }
            let row = &mut d[y * pw..(y + 1) * pw];
            let (edge, inner) = if pass == 0 { (row[1], &mut row[2..w + 2]) } else { (row[w + 2], &mut row[2..w + 2]) };
            // Blocks of 8 by the AVX2 prefix minimum (sums below 2³¹ for w ≤ 16384), the rest
            // serially, continuing from the blocks' end.
            #[cfg(target_arch = "x86_64")]
            let done = if AVX2 && w <= 16384 {
                // SAFETY: AVX2 instantiations run only where the CPU has it.
                unsafe { dist_scan_avx2(inner, &cand, edge, A, pass == 0) }
            } else {
                0
            };
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            if pass == 0 {
                let mut left = if done > 0 { inner[done - 1] } else { edge };
                for (o, &cv) in inner[done..].iter_mut().zip(&cand[done..]) {
                    left = cv.min(left + A);
                    *o = left;
                }
            } else {
                let rest = w - done;
                let mut right = if done > 0 { inner[rest] } else { edge };
                for (o, &cv) in inner[..rest].iter_mut().zip(&cand[..rest]).rev() {
                    right = cv.min(right + A);
                    *o = right;
                }
            }
        }
    }
    d
}

/// Eight pixels at a time of [`canny`]'s non-maximum suppression (the same integer tests);
/// `n` = the magnitude rows above, at and below the pixel, each at columns x−1, x, x+1.
/// Returns how many leading pixels it did (a multiple of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn nms_avx2(n: [&[i16]; 9], dxr: &[i16], dyr: &[i16], st: &mut [u8], tg22: i32, low: i32, high: i32) -> usize {
    use std::arch::x86_64::*;
    let w = st.len();
    assert!(n.iter().all(|r| r.len() == w) && dxr.len() == w && dyr.len() == w);
    // SAFETY (loads and stores): x + 8 ≤ w and every slice holds w values.
    macro_rules! ld {
        ($s:expr, $x:expr) => {
            _mm256_cvtepi16_epi32(_mm_loadu_si128($s.as_ptr().add($x) as *const __m128i))
        };
    }
    use _mm256_blendv_epi8 as sel;
    let lowv = _mm256_set1_epi32(low);
    let mut x = 0;
    while x + 8 <= w {
        // Most of the image is flat (no liquid): nothing above the low threshold, no candidates.
        let mm = ld!(n[4], x);
        if _mm256_movemask_epi8(_mm256_cmpgt_epi32(mm, lowv)) == 0 {
            std::ptr::write_unaligned(st.as_mut_ptr().add(x) as *mut u64, 0);
            x += 8;
            continue;
        }
        let [ul, uc, ur, ml, _, mr, dl, dc, dr] = [0, 1, 2, 3, 4, 5, 6, 7, 8].map(|k| ld!(n[k], x));
        let (xs, ys) = (ld!(dxr, x), ld!(dyr, x));
        let ax = _mm256_abs_epi32(xs);
        let ay = _mm256_slli_epi32(_mm256_abs_epi32(ys), 15);
        let tg22x = _mm256_mullo_epi32(ax, _mm256_set1_epi32(tg22));
        let tg67x = _mm256_add_epi32(tg22x, _mm256_slli_epi32(ax, 16));
        let horiz = _mm256_cmpgt_epi32(tg22x, ay);
        let vert = _mm256_cmpgt_epi32(ay, tg67x);
        let anti = _mm256_srai_epi32(_mm256_xor_si256(xs, ys), 31);
        let n1 = sel(sel(sel(ul, ur, anti), uc, vert), ml, horiz);
        let n2 = sel(sel(sel(dr, dl, anti), dc, vert), mr, horiz);
        let hv = _mm256_or_si256(horiz, vert);
        let ge2 = _mm256_or_si256(_mm256_cmpgt_epi32(mm, n2), _mm256_and_si256(_mm256_cmpeq_epi32(mm, n2), hv));
        let keep = _mm256_and_si256(_mm256_and_si256(_mm256_cmpgt_epi32(mm, n1), ge2), _mm256_cmpgt_epi32(mm, lowv));
        // 1 for weak, 2 for strong (the comparison is −1 where strong).
        let v = _mm256_and_si256(keep, _mm256_sub_epi32(_mm256_set1_epi32(1), _mm256_cmpgt_epi32(mm, _mm256_set1_epi32(high))));
        let p16 = _mm256_packs_epi32(v, v);
        let p8 = _mm256_packus_epi16(p16, p16);
        let lo = _mm_cvtsi128_si32(_mm256_castsi256_si128(p8));
        let hi = _mm_cvtsi128_si32(_mm256_extracti128_si256(p8, 1));
        std::ptr::write_unaligned(st.as_mut_ptr().add(x) as *mut i32, lo);
        std::ptr::write_unaligned(st.as_mut_ptr().add(x + 4) as *mut i32, hi);
        x += 8;
    }
    x
}

/// Eight pixels at a time of [`distance_transform`]'s minimum over the finished rows:
/// `r` = [the pixel, then the seven neighbours in the mask's order], `costs` = [A, B, C].
/// Returns how many leading pixels it did (a multiple of 8).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dist_cand_avx2(r: [&[u32]; 8], e: &[u8], out: &mut [u32], costs: [u32; 3]) -> usize {
    use std::arch::x86_64::*;
    let w = out.len();
    assert!(r.iter().all(|s| s.len() == w) && e.len() == w);
    let [a, b, c] = costs.map(|v| _mm256_set1_epi32(v as i32));
    // SAFETY (loads and stores): x + 8 ≤ w and every slice holds w values.
    let mut x = 0;
    while x + 8 <= w {
        let [pc, a1, a3, b0, b1, b2, b3, b4] = [0, 1, 2, 3, 4, 5, 6, 7].map(|k| _mm256_loadu_si256(r[k].as_ptr().add(x) as *const __m256i));
        let far = _mm256_min_epu32(_mm256_min_epu32(a1, a3), _mm256_min_epu32(b0, b4));
        let mut m = _mm256_min_epu32(pc, _mm256_add_epi32(far, c));
        m = _mm256_min_epu32(m, _mm256_add_epi32(_mm256_min_epu32(b1, b3), b));
        m = _mm256_min_epu32(m, _mm256_add_epi32(b2, a));
        let e32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(e.as_ptr().add(x) as *const __m128i));
        let v = _mm256_and_si256(m, _mm256_cmpeq_epi32(e32, _mm256_setzero_si256()));
        _mm256_storeu_si256(out.as_mut_ptr().add(x) as *mut __m256i, v);
        x += 8;
    }
    x
}

/// [`distance_transform`]'s same-row scan, `out[x] = min(cand[x], out[x∓1] + a)` from the
/// border value `edge`, over whole blocks of 8 (forward: the leading ones; backward: the
/// trailing ones) as a prefix minimum: forward, out[x] = a·x + min(edge + a, minⱼ≤ₓ cand[j] − a·j)
/// (backward mirrored), exact in integers. Returns how many values it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dist_scan_avx2(out: &mut [u32], cand: &[u32], edge: u32, a: u32, forward: bool) -> usize {
    use std::arch::x86_64::*;
    let w = out.len();
    assert!(cand.len() >= w && w <= 16384);
    let nb = w / 8;
    let inf = _mm256_set1_epi32(i32::MAX);
    let av = _mm256_set1_epi32(a as i32);
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    // Shifts by 1, 2, 4 lanes in the scan's direction (the emptied lanes are then set to +∞),
    // and the lane that carries into the next block.
    let (sh, last) = if forward {
        ([_mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6), _mm256_setr_epi32(0, 0, 0, 1, 2, 3, 4, 5), _mm256_setr_epi32(0, 0, 0, 0, 0, 1, 2, 3)], 7)
    } else {
        ([_mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7), _mm256_setr_epi32(2, 3, 4, 5, 6, 7, 7, 7), _mm256_setr_epi32(4, 5, 6, 7, 7, 7, 7, 7)], 0)
    };
    macro_rules! shifted {
        ($v:expr, $k:literal) => {
            _mm256_blend_epi32::<{ [0b0000_0001, 0b0000_0011, 0b0000_1111][$k] }>(_mm256_permutevar8x32_epi32($v, sh[$k]), inf)
        };
    }
    macro_rules! shifted_back {
        ($v:expr, $k:literal) => {
            _mm256_blend_epi32::<{ [0b1000_0000, 0b1100_0000, 0b1111_0000][$k] }>(_mm256_permutevar8x32_epi32($v, sh[$k]), inf)
        };
    }
    // Forward: carry in g-space, g = value − a·x (the border sits at x = −1); backward:
    // g = value + a·x (the border at x = w).
    let mut carry = if forward { _mm256_set1_epi32(edge as i32 + a as i32) } else { _mm256_set1_epi32(edge as i32 + (a * w as u32) as i32) };
    let lastv = _mm256_set1_epi32(last);
    for k in 0..nb {
        let x0 = if forward { 8 * k } else { w - 8 * (k + 1) };
        let ax = _mm256_mullo_epi32(_mm256_add_epi32(lanes, _mm256_set1_epi32(x0 as i32)), av);
        // SAFETY: x0 + 8 ≤ w ≤ cand.len(), out.len().
        let c = _mm256_loadu_si256(cand.as_ptr().add(x0) as *const __m256i);
        let mut g = if forward { _mm256_sub_epi32(c, ax) } else { _mm256_add_epi32(c, ax) };
        if forward {
            g = _mm256_min_epi32(g, shifted!(g, 0));
            g = _mm256_min_epi32(g, shifted!(g, 1));
            g = _mm256_min_epi32(g, shifted!(g, 2));
        } else {
            g = _mm256_min_epi32(g, shifted_back!(g, 0));
            g = _mm256_min_epi32(g, shifted_back!(g, 1));
            g = _mm256_min_epi32(g, shifted_back!(g, 2));
        }
        g = _mm256_min_epi32(g, carry);
        carry = _mm256_permutevar8x32_epi32(g, lastv);
        let v = if forward { _mm256_add_epi32(g, ax) } else { _mm256_sub_epi32(g, ax) };
        _mm256_storeu_si256(out.as_mut_ptr().add(x0) as *mut __m256i, v);
    }
    nb * 8
}

/// `v = lut[v]` for values below 32 (the capped distances: at most 20), 32 bytes at a time by
/// two 16-entry byte shuffles; returns how many leading values it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lut32_avx2(v: &mut [u8], lut: &[u8; 256]) -> usize {
    use std::arch::x86_64::*;
    // SAFETY (loads and stores): the tables are inside `lut`; k + 32 ≤ v.len().
    let lo = _mm256_broadcastsi128_si256(_mm_loadu_si128(lut.as_ptr() as *const __m128i));
    let hi = _mm256_broadcastsi128_si256(_mm_loadu_si128(lut.as_ptr().add(16) as *const __m128i));
    let fifteen = _mm256_set1_epi8(15);
    let mut k = 0;
    while k + 32 <= v.len() {
        let x = _mm256_loadu_si256(v.as_ptr().add(k) as *const __m256i);
        debug_assert!(v[k..k + 32].iter().all(|&b| b < 32));
        // The shuffles use the low 4 bits; values above 15 take the second table.
        let r = _mm256_blendv_epi8(_mm256_shuffle_epi8(lo, x), _mm256_shuffle_epi8(hi, x), _mm256_cmpgt_epi8(x, fifteen));
        _mm256_storeu_si256(v.as_mut_ptr().add(k) as *mut __m256i, r);
        k += 32;
    }
    k
}

/// BORDER_REFLECT_101-padded copy (1 pixel) of a plane, so 3×3 filters run without bounds checks.
#[inline(always)]
fn pad101<T: Copy + Default>(src: &[T], h: usize, w: usize) -> Vec<T> {
    let r = |i: usize, n: usize| -> usize {
        // padded index i ∈ 0..n+2 → source index
        if n == 1 {
            0
        } else if i == 0 {
            1
        } else if i == n + 1 {
            n - 2
        } else {
            i - 1
        }
    };
    let pw = w + 2;
    let mut p = vec![T::default(); (h + 2) * pw];
    for (y, prow) in p.chunks_exact_mut(pw).enumerate() {
        let src_row = &src[r(y, h) * w..][..w];
        prow[1..w + 1].copy_from_slice(src_row);
        prow[0] = src_row[r(0, w)];
        prow[w + 1] = src_row[r(w + 1, w)];
    }
    p
}

/// cv2.blur 3×3 (BORDER_REFLECT_101) of the capped distances (float32 in the reference), cast
/// to uint8. The 16.16 sum S is exact; the reference's float result truncates to ⌊S / (9·2¹⁶)⌋
/// (a non-integer quotient ≤ 20 is at least 1/(9·2¹⁶) below the next integer, more than half a
/// float32 ulp there), computed as ⌊⌊S/2¹⁶⌋ · 7282 / 2¹⁶⌋ (= ⌊⌊S/2¹⁶⌋ / 9⌋ for sums up to 180).
#[inline(always)]
fn box3_dist_u8(d: &[u32], h: usize, w: usize) -> Vec<u8> {
    let pw = w + 4;
    let at = |i: usize, n: usize| -> usize {
        if n == 1 {
            0
        } else {
            i
        }
    };
    let mut out = vec![0u8; h * w];
    let mut vs = vec![0u32; w + 2];
    for y in 0..h {
        let (ya, yb) = (if y == 0 { at(1, h) } else { y - 1 }, if y + 1 == h { at(h.saturating_sub(2), h) } else { y + 1 });
        let row = |yy: usize| &d[(yy + 2) * pw + 2..][..w];
        for (((v, &a), &b), &c) in vs[1..w + 1].iter_mut().zip(row(ya)).zip(row(y)).zip(row(yb)) {
            *v = a + b + c;
        }
        vs[0] = vs[1 + at(1, w)];
        vs[w + 1] = vs[1 + at(w.saturating_sub(2), w)];
        for (x, o) in out[y * w..(y + 1) * w].iter_mut().enumerate() {
            let s = (vs[x] + vs[x + 1] + vs[x + 2]) >> 16;
            *o = ((s * 7282) >> 16) as u8;
        }
    }
    out
}

/// cv2.equalizeHist's table (entries above the largest value present are left 0: unused).
#[inline(always)]
fn equalize_lut(src: &[u8]) -> [u8; 256] {
    // Four interleaved counts: runs of one value would otherwise wait on each other's stores.
    let mut h4 = [[0u32; 256]; 4];
    let mut q = src.chunks_exact(4);
    for ch in &mut q {
        for k in 0..4 {
            h4[k][ch[k] as usize] += 1;
        }
    }
    q.remainder().iter().for_each(|&v| h4[0][v as usize] += 1);
    let hist: [usize; 256] = std::array::from_fn(|j| (h4[0][j] + h4[1][j] + h4[2][j] + h4[3][j]) as usize);
    let total = src.len();
    let first = hist.iter().position(|&c| c > 0).unwrap_or(0);
    let last = hist.iter().rposition(|&c| c > 0).unwrap_or(0);
    let mut lut = [0u8; 256];
    if hist[first] == total {
        lut[first] = first as u8;
        return lut;
    }
    let scale = 255.0 / (total - hist[first]) as f64;
    let mut sum = 0usize;
    for j in first + 1..=last {
        sum += hist[j];
        lut[j] = round_pos(sum as f64 * scale).clamp(0.0, 255.0) as u8;
    }
    lut
}

/// Round half away from zero without the libm call, for values ≥ −2⁵².
#[inline(always)]
fn round_pos(v: f64) -> f64 {
    let t = v + 0.5;
    let i = t as i64 as f64;
    if i > t {
        i - 1.0
    } else {
        i
    }
}

/// A 3×3 stencil over a u8 plane with BORDER_REFLECT_101: `f` gets the window's nine values
/// (row by row) as i16.
#[inline(always)]
fn stencil3(src: &[u8], h: usize, w: usize, f: impl Fn([i16; 9]) -> u8) -> Vec<u8> {
    let p = pad101(src, h, w);
    let pw = w + 2;
    let mut out = vec![0u8; h * w];
    for y in 0..h {
        // The window's nine taps as slices of exactly w values (no bounds checks: the loop vectorises).
        let n: [&[u8]; 9] = std::array::from_fn(|k| &p[(y + k / 3) * pw + k % 3..][..w]);
        let orow = &mut out[y * w..][..w];
        for x in 0..w {
            orow[x] = f(std::array::from_fn(|k| n[k][x] as i16));
        }
    }
    out
}

/// (μ, σ of the liquid, its blur σ, threshold, mud blur σ or water scale, mode 0 water / 1 mud).
fn params(severity: usize, p: ParamSet) -> (f64, f64, f64, f64, f64, u8) {
    let t = match p {
        ParamSet::Cifar10 => [
            (0.62, 0.1, 0.7, 0.7, 0.5, 0),
            (0.65, 0.1, 0.8, 0.7, 0.5, 0),
            (0.65, 0.3, 1.0, 0.69, 0.5, 0),
            (0.65, 0.1, 0.7, 0.69, 0.6, 1),
            (0.65, 0.1, 0.5, 0.68, 0.6, 1),
        ],
        ParamSet::TinyImageNet => [
            (0.62, 0.1, 0.7, 0.7, 0.6, 0),
            (0.65, 0.1, 0.8, 0.7, 0.6, 0),
            (0.65, 0.3, 1.0, 0.69, 0.6, 0),
            (0.65, 0.1, 0.7, 0.68, 0.6, 1),
            (0.65, 0.1, 0.5, 0.67, 0.6, 1),
        ],
        ParamSet::ImageNet => [
            (0.65, 0.3, 4.0, 0.69, 0.6, 0),
            (0.65, 0.3, 3.0, 0.68, 0.6, 0),
            (0.65, 0.3, 2.0, 0.68, 0.5, 0),
            (0.65, 0.3, 1.0, 0.65, 1.5, 1),
            (0.67, 0.4, 1.0, 0.65, 1.5, 1),
        ],
    };
    t[severity - 1]
}

/// Cells of the inverse-CDF normal sampler (as `noise::normals`: 4096 equiprobable cells,
/// linear inside each).
const NQ: usize = 4096;

/// Per cell, Φ⁻¹ at its left knot and the step to its right knot (f32); the two outermost
/// cells are the tails, sampled exactly instead (their entries are unused zeros).
fn normal_cells() -> &'static [[f32; NQ]; 2] {
    static T: std::sync::OnceLock<Box<[[f32; NQ]; 2]>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Box::new([[0f32; NQ]; 2]);
        let q = |i: usize| crate::noise::inv_normal_cdf(i as f64 / NQ as f64);
        for i in 1..NQ - 1 {
            t[0][i] = q(i) as f32;
            t[1][i] = (q(i + 1) - q(i)) as f32;
        }
        t
    })
}

/// [`normal_cells`] as one 64-bit entry per cell (the left knot in the low half, the step in
/// the high half), so a cell's two values take one scalar load: faster than two gathers.
#[cfg(target_arch = "x86_64")]
fn normal_cell_pairs() -> &'static [u64; NQ] {
    static T: std::sync::OnceLock<Box<[u64; NQ]>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let t = normal_cells();
        let mut p = Box::new([0u64; NQ]);
        for (i, v) in p.iter_mut().enumerate() {
            *v = t[0][i].to_bits() as u64 | (t[1][i].to_bits() as u64) << 32;
        }
        p
    })
}

/// The unsmoothed liquid layer: μ + s·z for n standard normals z in f32, two per 64-bit draw of
/// four xoshiro streams: the top 12 bits of each 32-bit half pick a cell, the low 20 place z
/// linearly inside it; the outermost cells (|z| > 3.38, probability 1/2048) are redrawn, in
/// order, by Marsaglia's exact tail method from a separate stream. These are the draws of
/// `noise::normals` (its values rounded to f32), without its f64 buffer. AVX2 (gathers) where
/// present; no FMA, so the same values as the portable loop.
fn liquid_noise(n: usize, mu: f32, s: f32, rng: &mut Rng) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    let simd = std::is_x86_feature_detected!("avx2");
    #[cfg(not(target_arch = "x86_64"))]
    let simd = false;
    liquid_noise_with(n, mu, s, rng, simd)
}

/// [`liquid_noise`]; `simd`: the CPU has AVX2 (false: the portable loop alone).
fn liquid_noise_with(n: usize, mu: f32, s: f32, rng: &mut Rng, simd: bool) -> Vec<f32> {
    let mut tail = crate::noise::Fast::from_rng(rng);
    let mut f4 = crate::noise::Fast4::from_fast(&mut tail);
    let mut bits = vec![0u64; n.div_ceil(8) * 4];
    f4.fill(&mut bits);
    // Value k comes from the low (even k) or high half of draw k/2.
    let r = |k: usize| (bits[k / 2] >> (32 * (k % 2))) as u32;
    let is_tail = |v: u32| matches!(v >> 20, 0 | 4095);
    let t = normal_cells();
    let mut out = vec![0f32; n];
    // Starts of the blocks of 8 values holding a tail cell, in order.
    let mut tails = Vec::new();
    #[cfg(target_arch = "x86_64")]
    let done = if simd {
        // SAFETY: `simd` is only set where the CPU supports AVX2.
        unsafe { liquid_avx2(&bits, normal_cell_pairs(), mu, s, &mut out, &mut tails) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = if simd { unreachable!() } else { 0 };
    for (k, o) in out.iter_mut().enumerate().skip(done) {
        let v = r(k);
        let i = (v >> 20) as usize;
        *o = mu + s * (t[0][i] + (v & 0xF_FFFF) as f32 * (1.0 / (1 << 20) as f32) * t[1][i]);
        if is_tail(v) && tails.last() != Some(&(k & !7)) {
            tails.push(k & !7);
        }
    }
    let a = -crate::noise::inv_normal_cdf(1.0 / NQ as f64);
    for b in tails {
        for (k, o) in out.iter_mut().enumerate().skip(b).take(8) {
            let v = r(k);
            if is_tail(v) {
                let z = loop {
                    let x = -(1.0 - tail.f64()).ln() / a;
                    let y = -(1.0 - tail.f64()).ln();
                    if 2.0 * y > x * x {
                        break a + x;
                    }
                };
                *o = mu + s * (if v >> 20 == 0 { -z } else { z }) as f32;
            }
        }
    }
    out
}

/// [`liquid_noise`]'s inner cells, eight values at a time (the draws read as u32 halves, low
/// first: x86 is little-endian), noting the blocks with a tail cell; returns how many it did.
/// The cells' knots and steps come by scalar loads of [`normal_cell_pairs`], spread to lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn liquid_avx2(bits: &[u64], t: &[u64; NQ], mu: f32, s: f32, out: &mut [f32], tails: &mut Vec<usize>) -> usize {
    use std::arch::x86_64::*;
    let (vmu, vs, scale, low) = (_mm256_set1_ps(mu), _mm256_set1_ps(s), _mm256_set1_ps(1.0 / (1 << 20) as f32), _mm256_set1_epi32(0xF_FFFF));
    let (zero, top) = (_mm256_setzero_si256(), _mm256_set1_epi32(NQ as i32 - 1));
    let r = bits.as_ptr() as *const u32;
    let tp = t.as_ptr() as *const i64;
    let mut k = 0;
    // SAFETY: k + 8 ≤ out.len() ≤ 2·bits.len(); cell indices are v >> 20 < 4096 = NQ.
    while k + 8 <= out.len() {
        let v = _mm256_loadu_si256(r.add(k) as *const __m256i);
        let i = _mm256_srli_epi32(v, 20);
        let p = |j: usize| *tp.add((*r.add(k + j) >> 20) as usize);
        // Pairs of values 0, 1, 4, 5 and 2, 3, 6, 7: the 128-bit halves then deinterleave in place.
        let a = _mm256_set_epi64x(p(5), p(4), p(1), p(0));
        let b = _mm256_set_epi64x(p(7), p(6), p(3), p(2));
        let (a, b) = (_mm256_castsi256_ps(a), _mm256_castsi256_ps(b));
        let (t0, t1) = (_mm256_shuffle_ps::<0b10_00_10_00>(a, b), _mm256_shuffle_ps::<0b11_01_11_01>(a, b));
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_and_si256(v, low)), scale);
        let z = _mm256_add_ps(t0, _mm256_mul_ps(f, t1));
        _mm256_storeu_ps(out.as_mut_ptr().add(k), _mm256_add_ps(vmu, _mm256_mul_ps(vs, z)));
        if _mm256_movemask_epi8(_mm256_or_si256(_mm256_cmpeq_epi32(i, zero), _mm256_cmpeq_epi32(i, top))) != 0 {
            tails.push(k);
        }
        k += 8;
    }
    k
}

/// What spatter adds to an image: per pixel a weight `m` and per channel a colour (0..255).
struct Layer {
    m: Vec<f32>,
    cols: [f32; 3],
    mud: bool,
}

/// The liquid layer: μ + s·N(0, 1), Gaussian-blurred (skimage, mode nearest) and thresholded;
/// water: the weight is the liquid's bytes × the blurred emboss of its edges' distance map,
/// scaled to a maximum of k; mud: the blurred liquid mask where it reaches 0.8.
fn layer(h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Layer {
    let (mu, s, sigma, t, k, mode) = params(severity, p);
    let liquid = liquid_noise(h * w, mu as f32, s as f32, rng);
    let t = t as f32;
    let (m, color) = if mode == 0 {
        // astype(np.uint8) of liquid·255: truncation, wrapping above 255 as the C cast does.
        let l8: Vec<u8> = gauss_f32(&liquid, h, w, sigma, sigma, 4.0, Mode::Nearest, |v| {
            // SAFETY: t ≤ v (a finite weighted mean of finite draws), so v·255 is finite and the
            // clamped value lies in 0..=2³⁰: a valid i32 (the unchecked cast vectorises).
            let i: i32 = unsafe { (v * 255.0).min((1 << 30) as f32).to_int_unchecked() };
            if v < t { 0 } else { (i & 255) as u8 }
        });
        let prod = water_mask(&l8, h, w);
        let mx = prod.iter().copied().max().unwrap_or(0);
        // The reference divides by the maximum unguarded (0/0 → NaN → a black image); with no
        // liquid we add nothing instead.
        let scale = if mx > 0 { (k / mx as f64) as f32 } else { 0.0 };
        (prod.iter().map(|&v| v as f32 * scale).collect(), [175.0 / 255.0, 238.0 / 255.0, 238.0 / 255.0])
    } else {
        let mask: Vec<f32> = gauss_f32(&liquid, h, w, sigma, sigma, 4.0, Mode::Nearest, |v| if v > t { 1.0 } else { 0.0 });
        (gauss_f32(&mask, h, w, k, k, 4.0, Mode::Nearest, |v| if v < 0.8 { 0.0 } else { v }), [63.0 / 255.0, 42.0 / 255.0, 20.0 / 255.0])
    };
    let grey_col: f64 = color.iter().zip(GREY_W).map(|(a, b)| a * b).sum();
    let cols = if c == 3 { color } else { [grey_col; 3] };
    Layer { m, cols: cols.map(|v| (v * 255.0) as f32), mud: mode == 1 }
}

pub(crate) fn spatter(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let (h, w, c) = (x.h, x.w, x.c);
    let l = layer(h, w, c, severity, p, rng);
    let data = blend(&x.data, c, &l, |v: f64| v as f32, |v: f32| v.clamp(0.0, 255.0) as f64);
    Ok(FImage { h, w, c, data })
}

/// uint8 → uint8 spatter: [`spatter`]'s layer and blend from u8 pixels (the same bytes).
#[allow(clippy::too_many_arguments)]
pub(crate) fn spatter_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Vec<u8>> {
    let l = layer(h, w, c, severity, p, rng);
    Ok(blend_u8(x, c, &l))
}

/// The water layer's edge/distance pipeline from the liquid bytes to liquid × blurred emboss
/// (whole numbers ≤ 255²), AVX2 where present (integers: the same values).
fn water_mask(l8: &[u8], h: usize, w: usize) -> Vec<u16> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { water_mask_avx2(l8, h, w) };
    }
    water_mask_impl::<false>(l8, h, w)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn water_mask_avx2(l8: &[u8], h: usize, w: usize) -> Vec<u16> {
    water_mask_impl::<true>(l8, h, w)
}

/// `AVX2`: the non-maximum suppression and the chamfer minima take explicit AVX2 kernels
/// (only instantiated inside [`water_mask_avx2`]).
#[inline(always)]
fn water_mask_impl<const AVX2: bool>(l8: &[u8], h: usize, w: usize) -> Vec<u16> {
    let edges = canny::<AVX2>(l8, h, w, 50, 150);
    let mut d8 = box3_dist_u8(&distance_transform::<AVX2>(&edges, h, w), h, w);
    let lut = equalize_lut(&d8);
    #[cfg(target_arch = "x86_64")]
    let done = if AVX2 {
        // SAFETY: AVX2 instantiations run only where the CPU has it.
        unsafe { lut32_avx2(&mut d8, &lut) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    d8[done..].iter_mut().for_each(|v| *v = lut[*v as usize]);
    // The reference's emboss kernel (filter2D, BORDER_REFLECT_101), saturated to u8.
    let e = stencil3(&d8, h, w, |[a, b, _, d, e, f, _, g, i]| (-2 * a - b - d + e + f + g + 2 * i).clamp(0, 255) as u8);
    // cv2.blur on u8 (rounded): S/9 is never a tie (9 is odd), so that is ⌊(2S + 9)/18⌋.
    let blurred = stencil3(&e, h, w, |v| {
        let s = v.iter().sum::<i16>() as u16;
        ((2 * s + 9) / 18) as u8
    });
    l8.iter().zip(&blurred).map(|(&l, &d)| l as u16 * d as u16).collect()
}

/// One blended value: water adds m·colour, mud mixes towards it.
#[inline(always)]
fn mix(v: f32, mv: f32, col: f32, mud: bool) -> f32 {
    if mud {
        v * (1.0 - mv) + mv * col
    } else {
        v + mv * col
    }
}

/// The final blend of every value by [`mix`]; `get` reads a pixel as f32 and `fin` clips and
/// casts. Per block of pixels the weights are spread over the channels first, so the blend is
/// one loop over the block's values.
fn blend<T: Copy, O: Copy + Default>(x: &[T], c: usize, l: &Layer, get: impl Fn(T) -> f32, fin: impl Fn(f32) -> O) -> Vec<O> {
    const PX: usize = 64;
    let mut out = vec![O::default(); x.len()];
    let cols: Vec<f32> = (0..PX * c).map(|i| l.cols[i % c]).collect();
    let mut m3 = vec![0f32; PX * c];
    for ((o, i), m) in out.chunks_mut(PX * c).zip(x.chunks(PX * c)).zip(l.m.chunks(PX)) {
        let n = i.len();
        for (q, &mv) in m3.chunks_exact_mut(c).zip(m) {
            q.fill(mv);
        }
        for (((o, &v), &mv), &col) in o.iter_mut().zip(i).zip(&m3[..n]).zip(&cols[..n]) {
            *o = fin(mix(get(v), mv, col, l.mud));
        }
    }
    out
}

/// [`blend`] of u8 pixels; RGB and grey images take an AVX2 kernel where present (the same
/// operations, no FMA: the same bytes).
fn blend_u8(x: &[u8], c: usize, l: &Layer) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if (c == 3 || c == 1) && std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe {
            match (c, l.mud) {
                (3, false) => blend_u8_avx2::<3, false>(x, l),
                (3, true) => blend_u8_avx2::<3, true>(x, l),
                (_, false) => blend_u8_avx2::<1, false>(x, l),
                (_, true) => blend_u8_avx2::<1, true>(x, l),
            }
        };
    }
    blend(x, c, l, |v: u8| v as f32, crate::cast_u8_f32)
}

/// Eight pixels at a time (`C` channels, `MUD` the mode: constants, so the loop has no
/// branches on them): the weights spread over the channels by lane permutes, the bytes
/// widened to f32, [`mix`], clipped, truncated and packed back; the last pixels one by one.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blend_u8_avx2<const C: usize, const MUD: bool>(x: &[u8], l: &Layer) -> Vec<u8> {
    use std::arch::x86_64::*;
    let c = C;
    let n = l.m.len();
    assert!(x.len() == n * c && (c == 3 || c == 1) && l.mud == MUD);
    let mut out = vec![0u8; x.len()];
    let cl = l.cols;
    // Lane k of block j holds value 8j + k of the 24 (RGB) or 8 (grey) of eight pixels.
    let spread = [_mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2), _mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5), _mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7)];
    let cols = if c == 3 {
        [_mm256_setr_ps(cl[0], cl[1], cl[2], cl[0], cl[1], cl[2], cl[0], cl[1]), _mm256_setr_ps(cl[2], cl[0], cl[1], cl[2], cl[0], cl[1], cl[2], cl[0]), _mm256_setr_ps(cl[1], cl[2], cl[0], cl[1], cl[2], cl[0], cl[1], cl[2])]
    } else {
        [_mm256_set1_ps(cl[0]); 3]
    };
    let (zero, top, one) = (_mm256_setzero_ps(), _mm256_set1_ps(255.0), _mm256_set1_ps(1.0));
    let gather = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let mut p = 0;
    // SAFETY (loads and stores): pixels p..p+8 exist, so values c·p..c·(p+8) of x and out do.
    while p + 8 <= n {
        let mv = _mm256_loadu_ps(l.m.as_ptr().add(p));
        let mut r = [_mm256_setzero_si256(); 3];
        for (j, rj) in r.iter_mut().enumerate().take(c) {
            let w = if c == 3 { _mm256_permutevar8x32_ps(mv, spread[j]) } else { mv };
            let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(x.as_ptr().add(c * p + 8 * j) as *const __m128i)));
            let m = if MUD { _mm256_add_ps(_mm256_mul_ps(v, _mm256_sub_ps(one, w)), _mm256_mul_ps(w, cols[j])) } else { _mm256_add_ps(v, _mm256_mul_ps(w, cols[j])) };
            *rj = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(m, zero), top));
        }
        // Bytes of block j land in 32-bit lanes j and 4 + j; regroup them in order.
        let packed = _mm256_packus_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[2]));
        let b = _mm256_permutevar8x32_epi32(packed, gather);
        let o = out.as_mut_ptr().add(c * p);
        if c == 3 {
            _mm_storeu_si128(o as *mut __m128i, _mm256_castsi256_si128(b));
            _mm_storel_epi64(o.add(16) as *mut __m128i, _mm256_extracti128_si256(b, 1));
        } else {
            _mm_storel_epi64(o as *mut __m128i, _mm256_castsi256_si128(b));
        }
        p += 8;
    }
    for k in p * c..n * c {
        out[k] = crate::cast_u8_f32(mix(x[k] as f32, l.m[k / c], cl[k % c], MUD));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OpenCV's pixel-by-pixel two-pass 5×5 chamfer transform (distanceTransform_5x5) on a
    /// 0/255 image, uncapped.
    fn naive_distance(src: &[u8], h: usize, w: usize) -> Vec<u32> {
        let (a, b, c) = (65_536u32, 91_750u32, 143_976u32);
        let dist_max = u32::MAX - c;
        let at = |d: &Vec<u32>, y: isize, x: isize| if y < 0 || x < 0 || y >= h as isize || x >= w as isize { dist_max } else { d[y as usize * w + x as usize] };
        let mut d = vec![0u32; h * w];
        let mask = [(-2, -1, c), (-2, 1, c), (-1, -2, c), (-1, -1, b), (-1, 0, a), (-1, 1, b), (-1, 2, c), (0, -1, a)];
        for k in 0..h * w {
            let (y, x) = ((k / w) as isize, (k % w) as isize);
            if src[k] == 0 {
                d[k] = 0;
                continue;
            }
            let mut t0 = u32::MAX;
            for &(dy, dx, cost) in &mask {
                t0 = t0.min(at(&d, y + dy, x + dx).saturating_add(cost));
            }
            d[k] = t0.min(dist_max);
        }
        for k in (0..h * w).rev() {
            let (y, x) = ((k / w) as isize, (k % w) as isize);
            let mut t0 = d[k];
            if t0 > a {
                for &(dy, dx, cost) in &mask {
                    t0 = t0.min(at(&d, y - dy, x - dx).saturating_add(cost));
                }
                d[k] = t0;
            }
        }
        d
    }

    fn xorshift(s: &mut u64) -> u64 {
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn water_dt_avx2(edges: &[u8], h: usize, w: usize) -> Vec<u32> {
        distance_transform::<true>(edges, h, w)
    }

    #[test]
    fn row_vectorised_distance_transform_is_opencvs_capped() {
        let mut s = 0x9E37_79B9_7F4A_7C15u64;
        for &(h, w, density) in &[(1, 1, 2), (5, 7, 3), (32, 32, 9), (17, 40, 50), (64, 3, 5), (30, 30, 400), (80, 90, 2000)] {
            let src: Vec<u8> = (0..h * w).map(|_| if xorshift(&mut s).is_multiple_of(density) { 0 } else { 255 }).collect();
            let mut edges = vec![0u8; (h + 2) * (w + 2)];
            for y in 0..h {
                for x in 0..w {
                    edges[(y + 1) * (w + 2) + x + 1] = (src[y * w + x] == 0) as u8;
                }
            }
            let got = distance_transform::<false>(&edges, h, w);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                assert!(got == unsafe { water_dt_avx2(&edges, h, w) });
            }
            let want = naive_distance(&src, h, w);
            for y in 0..h {
                for x in 0..w {
                    assert_eq!(got[(y + 2) * (w + 4) + x + 2], want[y * w + x].min(DIST_CAP), "{h}x{w} density 1/{density} at {y},{x}");
                }
            }
        }
    }

    #[test]
    fn box3_dist_truncates_like_float32() {
        for s in 0..=180u32 {
            assert_eq!((s * 7282) >> 16, s / 9);
        }
        // Against the reference's float: f32(f64(S·2⁻¹⁶)·(1/9)) truncated, on sums near every integer.
        for q in 0..=20u64 {
            for s in [q * 589_824, (q * 589_824).saturating_sub(1), q * 589_824 + 1, (q * 589_824).saturating_sub(300), q * 589_824 + 300] {
                if s > 9 * DIST_CAP as u64 {
                    continue;
                }
                let want = ((s as f64 / 65_536.0 * (1.0 / 9.0)) as f32) as u32;
                assert_eq!((((s >> 16) as u32) * 7282) >> 16, want, "S = {s}");
            }
        }
    }

    /// The dispatched (AVX2) water pipeline, blend and Gaussian against the portable code, with
    /// the layers of every severity of the three parameter sets.
    #[test]
    fn portable_and_dispatched_layers_agree() {
        use rand::SeedableRng;
        for (h, w) in [(32, 32), (57, 41)] {
            for p in [ParamSet::Cifar10, ParamSet::TinyImageNet, ParamSet::ImageNet] {
                for sev in 1..=5 {
                    let mut s = 5u64;
                    let l8: Vec<u8> = (0..h * w).map(|_| if xorshift(&mut s).is_multiple_of(3) { 0 } else { 170 + (s % 30) as u8 }).collect();
                    assert!(water_mask(&l8, h, w) == water_mask_impl::<false>(&l8, h, w), "{h}x{w} {p:?} s{sev}");
                    for c in [1, 3] {
                        let img: Vec<u8> = (0..h * w * c).map(|_| xorshift(&mut s) as u8).collect();
                        let a = layer(h, w, c, sev, p, &mut Rng::seed_from_u64(sev as u64));
                        assert!(blend_u8(&img, c, &a) == blend(&img, c, &a, |v: u8| v as f32, crate::cast_u8_f32), "{h}x{w}x{c} {p:?} s{sev}");
                    }
                    let liquid: Vec<f32> = (0..h * w).map(|_| (xorshift(&mut s) % 1000) as f32 / 1000.0).collect();
                    let n = 20_000 + h * sev;
                    assert!(liquid_noise(n, 0.6, 0.3, &mut Rng::seed_from_u64(sev as u64)) == liquid_noise_with(n, 0.6, 0.3, &mut Rng::seed_from_u64(sev as u64), false));
                    let ky: Vec<f32> = crate::glass::gaussian_kernel(1.7, 4.0).unwrap().iter().map(|&v| v as f32).collect();
                    let g1 = gauss_f32(&liquid, h, w, 1.7, 1.7, 4.0, Mode::Nearest, |v| v);
                    let g2 = crate::glass::gauss_f32_portable(&liquid, h, w, &ky, &ky, Mode::Nearest);
                    assert!(g1 == g2);
                    for sigma in [0.5, 1.0, 1.5, 2.0, 3.0, 4.0] {
                        let k: Vec<f32> = crate::glass::gaussian_kernel(sigma, 4.0).unwrap().iter().map(|&v| v as f32).collect();
                        assert!(gauss_f32(&liquid, h, w, sigma, sigma, 4.0, Mode::Nearest, |v| v) == crate::glass::gauss_f32_portable(&liquid, h, w, &k, &k, Mode::Nearest), "{h}x{w} σ {sigma}");
                    }
                }
            }
        }
    }
}
