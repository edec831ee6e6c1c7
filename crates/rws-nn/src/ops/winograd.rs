//! 3×3 stride-1 convolution by Winograd's minimal filtering F(2×2, 3×3) (Lavin & Gray, 2016):
//! inference fused with bias, ReLU and an optional 2×2 max-pool; the training block's forward
//! pass; the input gradient (a conv with the rotated weights); and the weight gradient
//! (F(3×3, 2×2) with the same matrices, see [`weight_grad`]).
//!
//! Why: training and evaluation are gemm-bound, and im2col + gemm spends 36 multiply-adds per 2×2 output tile
//! and channel pair where Winograd spends 16, so the same gemm kernel does 2.25× less work.
//! The transforms are a few adds per value, written as whole-row loops the compiler vectorises.
//! Several images share each gemm (thin per-image gemms run the kernel far below its peak).
//!
//! Numerics: the transforms only add, subtract and halve (the weight transform), so results
//! differ from the direct convolution by float rounding alone (≈1e-6 relative; tests bound it).
//! Every group of images is computed on its own with a single-threaded gemm, and the group size
//! depends only on the layer's shape: output bytes do not depend on the thread count.
use super::conv::Geom;
use super::util::{gemm_f32, output_buf, with_scratch};
use candle_core::Shape;
use rayon::prelude::*;

/// Gemm columns (tiles) per group of images: enough to run the gemm near its peak, few enough
/// that one group's transformed input and output stay near the core's L2 cache.
const TILES_PER_GROUP: usize = 256;

/// Whether this module handles the convolution: 3×3, stride 1, padding ≤ 2, enough input
/// channels to make the gemm's inner dimension worth it, and no pooling or a 2×2 one (whose
/// windows coincide with the 2×2 output tiles).
pub(crate) fn applies(g: &Geom, pool: usize) -> bool {
    g.kh == 3 && g.kw == 3 && g.stride == 1 && g.pad <= 2 && g.c >= 8 && pool <= 2 && !disabled()
}

/// `RWS_WINOGRAD=0` runs every 3×3 conv through im2col + gemm instead (an A/B switch).
fn disabled() -> bool {
    static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OFF.get_or_init(|| std::env::var("RWS_WINOGRAD").is_ok_and(|v| v == "0"))
}

/// The geometry of the convolution that gives `g`'s input gradient (see
/// [`transposed_weights`]), when Winograd can run it.
pub(crate) fn transposed_geom(g: &Geom) -> Option<Geom> {
    if g.kh != 3 || g.kw != 3 || g.stride != 1 || g.pad > 2 {
        return None;
    }
    let t = Geom::new(&[g.n, g.o, g.oh, g.ow], &[g.c, g.o, 3, 3], 1, 2 - g.pad).ok()?;
    (t.oh == g.h && t.ow == g.w && applies(&t, 0)).then_some(t)
}

/// U = G·g·Gᵀ for every (output, input) channel pair, stored as 16 matrices O×C (one per tile
/// position ξ = 4k + l), each read transposed as the `b` operand of one gemm.
fn transform_weights(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut u = vec![0f32; 16 * o * c];
    for oc in 0..o * c {
        let g = &w[oc * 9..oc * 9 + 9];
        // t = G·g (4×3): rows g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2 of the kernel's columns.
        let mut t = [[0f32; 3]; 4];
        for j in 0..3 {
            let (a, b, d) = (g[j], g[3 + j], g[6 + j]);
            t[0][j] = a;
            t[1][j] = 0.5 * (a + b + d);
            t[2][j] = 0.5 * (a - b + d);
            t[3][j] = d;
        }
        for (k, r) in t.iter().enumerate() {
            let v = [r[0], 0.5 * (r[0] + r[1] + r[2]), 0.5 * (r[0] - r[1] + r[2]), r[2]];
            for (l, &x) in v.iter().enumerate() {
                u[(4 * k + l) * o * c + oc] = x;
            }
        }
    }
    u
}

/// Defines `$name` that runs `$imp` compiled for AVX2 when the CPU has it (the check is
/// cached by std), else as baseline code. The transforms only add, subtract and halve, so
/// both give the same bits.
macro_rules! avx2_dispatch {
    ($name:ident => $imp:ident($($a:ident: $t:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($a: $t),*) {
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn wide($($a: $t),*) {
                    $imp($($a),*)
                }
                // SAFETY: the CPU has AVX2 (checked above).
                return unsafe { wide($($a),*) };
            }
            $imp($($a),*)
        }
    };
}

/// `dst[j·dst_rs + i] = src[i·src_rs + j]` for i < rows, j < cols: the channels-first ⇄
/// channels-last moves around the transforms. Element-wise strided stores ran at ~7 cycles a
/// value here (2/3 of the input transform); 8×8 register transposes (AVX2) move 64 values in
/// ~24 instructions.
fn transpose(src: &[f32], src_rs: usize, dst: &mut [f32], dst_rs: usize, rows: usize, cols: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= (rows - 1) * src_rs + cols && dst.len() >= (cols - 1) * dst_rs + rows);
    #[cfg(target_arch = "x86_64")]
    if rows >= 8 && cols >= 8 && std::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present and the assert above bounds every block.
        unsafe { transpose_avx2(src, src_rs, dst, dst_rs, rows, cols) };
        return;
    }
    for i in 0..rows {
        for j in 0..cols {
            dst[j * dst_rs + i] = src[i * src_rs + j];
        }
    }
}

/// 8×8 blocks; a ragged edge is covered by one more block overlapping the previous one (it
/// rewrites a few values with the same bits), so no element goes through scalar code.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(src: &[f32], src_rs: usize, dst: &mut [f32], dst_rs: usize, rows: usize, cols: usize) {
    let starts = |n: usize| (0..n - 8).step_by(8).chain(std::iter::once(n - 8));
    for i in starts(rows) {
        for j in starts(cols) {
            transpose8x8(src.as_ptr().add(i * src_rs + j), src_rs, dst.as_mut_ptr().add(j * dst_rs + i), dst_rs);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn transpose8x8(s: *const f32, srs: usize, d: *mut f32, drs: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(s.add(k * srs)));
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let o = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (k, v) in o.iter().enumerate() {
        _mm256_storeu_ps(d.add(k * drs), *v);
    }
}

/// The image's channels-last copy with a zero border: `rows` × `cols` pixels of C values,
/// pixel (y, x) of the image at (y + pad, x + pad). Channels-last turns every transform below
/// into loops over contiguous channel runs (C = 8…512), which vectorise without tails.
#[inline(always)]
fn pad_nhwc(g: &Geom, x: &[f32], p: &mut [f32], rows: usize, cols: usize) {
    let c = g.c;
    p[..rows * cols * c].fill(0.0);
    let plane = g.h * g.w;
    for y in 0..g.h {
        let at = ((y + g.pad) * cols + g.pad) * c;
        transpose(&x[y * g.w..], plane, &mut p[at..], c, c, g.w);
    }
}

/// Bᵀ·d·B of every 4×4 input tile of one image (tiles start every 2 pixels at −pad): tile t's
/// 16 values × C channels go to row `col0 + t` of the 16 matrices `ng`×C in `v`.
#[inline(always)]
fn transform_input_impl(g: &Geom, x: &[f32], scratch: &mut [f32], v: &mut [f32], ng: usize, col0: usize) {
    let c = g.c;
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let (rows, cols) = (2 * th + 2, 2 * tw + 2);
    let rl = cols * c; // one padded row, channels-last
    let (p, t) = scratch.split_at_mut(rows * rl);
    pad_nhwc(g, x, p, rows, cols);
    let vs = ng * c;
    for ty in 0..th {
        // Bᵀ along the rows: t0 = d0 − d2, t1 = d1 + d2, t2 = d2 − d1, t3 = d1 − d3.
        let d = |i: usize| &p[(2 * ty + i) * rl..(2 * ty + i + 1) * rl];
        let (d0, d1, d2, d3) = (d(0), d(1), d(2), d(3));
        let (t0, rest) = t[..4 * rl].split_at_mut(rl);
        let (t1, rest) = rest.split_at_mut(rl);
        let (t2, t3) = rest.split_at_mut(rl);
        for i in 0..rl {
            t0[i] = d0[i] - d2[i];
            t1[i] = d1[i] + d2[i];
            t2[i] = d2[i] - d1[i];
            t3[i] = d1[i] - d3[i];
        }
        // B along the columns of each tile: q0 − q2, q1 + q2, q2 − q1, q1 − q3 (q = columns
        // 2·tx … 2·tx + 3 of t_k).
        for tx in 0..tw {
            let n = col0 + ty * tw + tx;
            for k in 0..4 {
                let tk = &t[k * rl + 2 * tx * c..k * rl + (2 * tx + 4) * c];
                let (q0, q1, q2, q3) = (&tk[..c], &tk[c..2 * c], &tk[2 * c..3 * c], &tk[3 * c..]);
                let off = 4 * k * vs + n * c;
                let (v0, rest) = v[off..].split_at_mut(vs);
                let (v1, rest) = rest.split_at_mut(vs);
                let (v2, rest) = rest.split_at_mut(vs);
                let (v0, v1, v2, v3) = (&mut v0[..c], &mut v1[..c], &mut v2[..c], &mut rest[..c]);
                for i in 0..c {
                    v0[i] = q0[i] - q2[i];
                    v1[i] = q1[i] + q2[i];
                    v2[i] = q2[i] - q1[i];
                    v3[i] = q1[i] - q3[i];
                }
            }
        }
    }
}

/// Scratch floats [`transform_input`] needs for one image.
fn input_scratch(g: &Geom) -> usize {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    (2 * th + 2 + 4) * (2 * tw + 2) * g.c
}

/// Aᵀ·m·A of one image's tiles (rows `col0..` of the 16 matrices `ng`×O in `m`), plus bias,
/// then ReLU, either pooled 2×2 (one value per tile, floor mode) or as the full output: built
/// channels-last in the scratch, then transposed channels-first into `y`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn transform_output_impl(g: &Geom, m: &[f32], scratch: &mut [f32], ng: usize, col0: usize, b: &[f32], ep: Epilogue, y: &mut [f32]) {
    let (pool, relu) = (ep == Epilogue::ReluPool2, ep != Epilogue::Linear);
    let o = g.o;
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let ms = ng * o;
    let (ph, pw) = (g.oh / 2, g.ow / 2);
    let rl = tw * o; // one tile row, channels-last
    let (p, rest) = scratch.split_at_mut(8 * rl);
    let (yy, img) = rest.split_at_mut(4 * rl);
    for ty in 0..th {
        if pool && ty >= ph {
            break;
        }
        let base = (col0 + ty * tw) * o;
        // Aᵀ along the columns of each tile row k: p_k0 = m0 + m1 + m2, p_k1 = m1 − m2 − m3.
        for k in 0..4 {
            let mk = |l: usize| &m[(4 * k + l) * ms + base..(4 * k + l) * ms + base + rl];
            let (m0, m1, m2, m3) = (mk(0), mk(1), mk(2), mk(3));
            let (pa, pb) = p[2 * k * rl..(2 * k + 2) * rl].split_at_mut(rl);
            for i in 0..rl {
                pa[i] = m0[i] + m1[i] + m2[i];
                pb[i] = m1[i] - m2[i] - m3[i];
            }
        }
        // A along the rows: y_0j = p_0j + p_1j + p_2j, y_1j = p_1j − p_2j − p_3j, plus the
        // bias. yy holds y_rj at segment 2·j + r.
        for j in 0..2 {
            let pk = |k: usize| &p[(2 * k + j) * rl..(2 * k + j + 1) * rl];
            let (p0, p1, p2, p3) = (pk(0), pk(1), pk(2), pk(3));
            let (y0, y1) = yy[2 * j * rl..(2 * j + 2) * rl].split_at_mut(rl);
            for tx in 0..tw {
                let r = tx * o..(tx + 1) * o;
                let (p0, p1, p2, p3) = (&p0[r.clone()], &p1[r.clone()], &p2[r.clone()], &p3[r.clone()]);
                let (y0, y1) = (&mut y0[r.clone()], &mut y1[r]);
                for i in 0..o {
                    y0[i] = p0[i] + p1[i] + p2[i] + b[i];
                    y1[i] = p1[i] - p2[i] - p3[i] + b[i];
                }
            }
        }
        let (y00, y10, y01, y11) = (&yy[..rl], &yy[rl..2 * rl], &yy[2 * rl..3 * rl], &yy[3 * rl..4 * rl]);
        if pool {
            // PyTorch's window order (row-major) with NaN propagation, then ReLU.
            let out = &mut img[ty * pw * o..(ty + 1) * pw * o];
            for i in 0..pw * o {
                let mut v = y00[i];
                for w in [y01[i], y10[i], y11[i]] {
                    v = if (w > v) | (w.is_nan() & !v.is_nan()) { w } else { v };
                }
                out[i] = if v < 0.0 { 0.0 } else { v };
            }
        } else {
            for (r, (a, c)) in [(y00, y01), (y10, y11)].into_iter().enumerate() {
                let oy = 2 * ty + r;
                if oy >= g.oh {
                    break;
                }
                let out = &mut img[oy * g.ow * o..(oy + 1) * g.ow * o];
                for (ox, dst) in out.chunks_exact_mut(o).enumerate() {
                    let src = if ox % 2 == 0 { a } else { c };
                    for (d, &v) in dst.iter_mut().zip(&src[(ox / 2) * o..(ox / 2 + 1) * o]) {
                        *d = if relu && v < 0.0 { 0.0 } else { v };
                    }
                }
            }
        }
    }
    // Channels-last image → the channels-first output.
    let px = if pool { ph * pw } else { g.oh * g.ow };
    transpose(img, o, y, px, px, o);
}

/// Scratch floats [`transform_output`] needs.
fn output_scratch(g: &Geom) -> usize {
    (12 * g.ow.div_ceil(2) + g.oh * g.ow) * g.o
}

/// Scratch floats [`transform_grad`] needs: the padded channels-last gradient image and three
/// row combinations.
fn grad_scratch(g: &Geom) -> usize {
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    (2 * th + 3) * 2 * tw * g.o
}

avx2_dispatch!(transform_input => transform_input_impl(g: &Geom, x: &[f32], scratch: &mut [f32], v: &mut [f32], ng: usize, col0: usize));

avx2_dispatch!(transform_output => transform_output_impl(g: &Geom, m: &[f32], scratch: &mut [f32], ng: usize, col0: usize, b: &[f32], ep: Epilogue, y: &mut [f32]));

/// What follows the convolution, applied while each tile row is in cache.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Epilogue {
    /// Nothing: the plain conv output (training keeps it for BatchNorm; input gradients).
    Linear,
    Relu,
    /// ReLU and a 2×2 max-pool (floor mode): one value per tile.
    ReluPool2,
}

/// One image's output (height, width) under the epilogue: pooled floor-mode, or the conv's.
fn out_hw(g: &Geom, ep: Epilogue) -> (usize, usize) {
    if ep == Epilogue::ReluPool2 {
        (g.oh / 2, g.ow / 2)
    } else {
        (g.oh, g.ow)
    }
}

/// conv (+ bias) → ReLU (→ 2×2 max-pool when `pool` = 2) of a batch, NCHW in, NCHW out
/// (N×O×⌊oh/2⌋×⌊ow/2⌋ pooled, else N×O×oh×ow), with its shape. Only for shapes where
/// [`applies`] holds.
pub(crate) fn fwd_relu_pool(g: &Geom, x: &[f32], w: &[f32], b: &[f32], pool: usize) -> (Vec<f32>, Shape) {
    let _s = super::prof::span("winograd conv relu pool");
    let ep = if pool == 2 { Epilogue::ReluPool2 } else { Epilogue::Relu };
    let (oh, ow) = out_hw(g, ep);
    let mut y = output_buf(g.n * g.o * oh * ow);
    conv(g, x, w, Some(b), ep, &mut y);
    (y, Shape::from((g.n, g.o, oh, ow)))
}

/// The weights of the convolution that computes a 3×3 conv's input gradient: channels
/// swapped and the kernel rotated by 180° (O×C×3×3 → C×O×3×3). With padding 2 − pad the
/// gradient is then an ordinary conv of the output gradient, which Winograd handles too.
pub(crate) fn transposed_weights(w: &[f32], o: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; o * c * 9];
    for oc in 0..o {
        for ic in 0..c {
            for k in 0..9 {
                t[(ic * o + oc) * 9 + 8 - k] = w[(oc * c + ic) * 9 + k];
            }
        }
    }
    t
}

/// The convolution of a batch into `y` (N × per-image output, overwritten), with the bias (or
/// none) and the epilogue `ep`. Only for shapes where [`applies`] holds.
pub(crate) fn conv(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>, ep: Epilogue, y: &mut [f32]) {
    let (o, c) = (g.o, g.c);
    let t = g.oh.div_ceil(2) * g.ow.div_ceil(2);
    let (oh, ow) = out_hw(g, ep);
    let per_out = o * oh * ow;
    let in_img = c * g.h * g.w;
    let per_group = (TILES_PER_GROUP / t).max(1);
    assert_eq!(y.len(), g.n * per_out, "winograd conv: output buffer size");
    if per_out == 0 {
        return;
    }
    let u = transform_weights(w, o, c);
    let zeros;
    let b = match b {
        Some(b) => b,
        None => {
            zeros = vec![0f32; o];
            &zeros
        }
    };
    let (isz, osz) = (input_scratch(g), output_scratch(g));
    y.par_chunks_mut(per_group * per_out).enumerate().for_each(|(gi, yg)| {
        let imgs = yg.len() / per_out;
        let first = gi * per_group;
        let ng = imgs * t;
        with_scratch(16 * (c + o) * ng + isz.max(osz), |buf| {
            let (v, rest) = buf.split_at_mut(16 * c * ng);
            let (m, tmp) = rest.split_at_mut(16 * o * ng);
            {
                let _s = super::prof::span("wino in");
                for j in 0..imgs {
                    let xi = &x[(first + j) * in_img..(first + j + 1) * in_img];
                    transform_input(g, xi, tmp, v, ng, j * t);
                }
            }
            {
                // Per tile position: M (ng×O) = V (ng×C) · Uᵀ (C×O).
                let _s = super::prof::span("wino gemm");
                for xi in 0..16 {
                    gemm_f32(ng, o, c, &mut m[xi * ng * o..(xi + 1) * ng * o], o, false, &v[xi * ng * c..(xi + 1) * ng * c], c, 1, &u[xi * o * c..(xi + 1) * o * c], 1, c);
                }
            }
            let _s = super::prof::span("wino out");
            for (j, yj) in yg.chunks_mut(per_out).enumerate() {
                transform_output(g, m, tmp, ng, j * t, b, ep, yj);
            }
        })
    });
}

/// A·dz·Aᵀ of every 2×2 tile of one image's output gradient (O×oh×ow, channels-first; zero
/// beyond the edge): tile t's 16 values × O go to row `col0 + t` of the 16 matrices `ng`×O.
#[inline(always)]
fn transform_grad_impl(g: &Geom, dz: &[f32], scratch: &mut [f32], zt: &mut [f32], ng: usize, col0: usize) {
    let o = g.o;
    let (th, tw) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
    let rl = 2 * tw * o; // one padded output row, channels-last
    let (p, s) = scratch.split_at_mut(2 * th * rl);
    if g.oh % 2 == 1 || g.ow % 2 == 1 {
        p.fill(0.0);
    }
    for y in 0..g.oh {
        transpose(&dz[y * g.ow..], g.oh * g.ow, &mut p[y * rl..], o, o, g.ow);
    }
    let zs = ng * o;
    for ty in 0..th {
        // A along the rows: s0 = r0, s1 = r0 + r1, s2 = r0 − r1, s3 = −r1.
        let (r0, r1) = (&p[2 * ty * rl..(2 * ty + 1) * rl], &p[(2 * ty + 1) * rl..(2 * ty + 2) * rl]);
        let (s1, rest) = s[..3 * rl].split_at_mut(rl);
        let (s2, s3) = rest.split_at_mut(rl);
        for i in 0..rl {
            s1[i] = r0[i] + r1[i];
            s2[i] = r0[i] - r1[i];
            s3[i] = -r1[i];
        }
        // A along the columns of each tile: q0, q0 + q1, q0 − q1, −q1.
        for tx in 0..tw {
            let n = col0 + ty * tw + tx;
            for k in 0..4 {
                let sk = match k {
                    0 => r0,
                    1 => &*s1,
                    2 => &*s2,
                    _ => &*s3,
                };
                let (q0, q1) = (&sk[2 * tx * o..(2 * tx + 1) * o], &sk[(2 * tx + 1) * o..(2 * tx + 2) * o]);
                let off = 4 * k * zs + n * o;
                let (z0, rest) = zt[off..].split_at_mut(zs);
                let (z1, rest) = rest.split_at_mut(zs);
                let (z2, rest) = rest.split_at_mut(zs);
                let (z0, z1, z2, z3) = (&mut z0[..o], &mut z1[..o], &mut z2[..o], &mut rest[..o]);
                for i in 0..o {
                    z0[i] = q0[i];
                    z1[i] = q0[i] + q1[i];
                    z2[i] = q0[i] - q1[i];
                    z3[i] = -q1[i];
                }
            }
        }
    }
}

avx2_dispatch!(transform_grad => transform_grad_impl(g: &Geom, dz: &[f32], scratch: &mut [f32], zt: &mut [f32], ng: usize, col0: usize));

/// Weight and bias gradients of a 3×3 conv, packed [gw (O·C·9) | gb (O)] as
/// `conv::bwd_weight` packs them, from its input `x` and output gradient `dz`.
///
/// By the transposition principle of bilinear algorithms, F(2×2, 3×3)'s matrices also give the
/// weight gradient of a tile, F(3×3, 2×2): dW = Gᵀ·[(A·dz·Aᵀ) ⊙ (Bᵀ·d·B)]·G. Summed over
/// tiles in the transformed domain, that is 16 gemms O×T · T×C per group of images instead of
/// one O×P · P×9C: 2.25× fewer multiply-adds. Groups give partial sums added in group order,
/// and the group size depends only on the shape: the bytes do not depend on the thread count.
pub(crate) fn weight_grad(g: &Geom, x: &[f32], dz: &[f32]) -> Vec<f32> {
    let _s = super::prof::span("winograd weight grad");
    let (o, c) = (g.o, g.c);
    let t = g.oh.div_ceil(2) * g.ow.div_ceil(2);
    let (in_img, out_img, hw) = (c * g.h * g.w, o * g.oh * g.ow, g.oh * g.ow);
    let per_group = (TILES_PER_GROUP / t).max(1);
    let groups = g.n.div_ceil(per_group);
    let len = 16 * o * c + o;
    let mut parts = vec![0f32; groups * len];
    let scratch = input_scratch(g).max(grad_scratch(g));
    parts.par_chunks_mut(len).enumerate().for_each(|(gi, part)| {
        let first = gi * per_group;
        let imgs = per_group.min(g.n - first);
        let ng = imgs * t;
        let (m, gb) = part.split_at_mut(16 * o * c);
        with_scratch(16 * (c + o) * ng + scratch, |buf| {
            let (v, rest) = buf.split_at_mut(16 * c * ng);
            let (zt, tmp) = rest.split_at_mut(16 * o * ng);
            for j in 0..imgs {
                let i = first + j;
                transform_input(g, &x[i * in_img..(i + 1) * in_img], tmp, v, ng, j * t);
                let dzi = &dz[i * out_img..(i + 1) * out_img];
                transform_grad(g, dzi, tmp, zt, ng, j * t);
                for (r, b) in gb.iter_mut().enumerate() {
                    *b += super::util::lanes_sum(&dzi[r * hw..(r + 1) * hw], |v| v);
                }
            }
            // Per tile position: M (O×C) = Zᵀ (O×ng) · V (ng×C).
            for xi in 0..16 {
                gemm_f32(o, c, ng, &mut m[xi * o * c..(xi + 1) * o * c], c, false, &zt[xi * ng * o..(xi + 1) * ng * o], 1, o, &v[xi * ng * c..(xi + 1) * ng * c], c, 1);
            }
        })
    });
    // Sum the groups in order, then Gᵀ·M·G per channel pair.
    let (first, rest) = parts.split_at_mut(len);
    for part in rest.chunks(len) {
        for (a, b) in first.iter_mut().zip(part) {
            *a += *b;
        }
    }
    let mut out = vec![0f32; o * c * 9 + o];
    let oc_n = o * c;
    for oc in 0..oc_n {
        let mm = |xi: usize| first[xi * oc_n + oc];
        // Gᵀ = [[1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1]], on the rows, then on the columns.
        let mut r = [[0f32; 4]; 3];
        for l in 0..4 {
            let (m0, m1, m2, m3) = (mm(l), mm(4 + l), mm(8 + l), mm(12 + l));
            let [r0, r1, r2] = &mut r;
            r0[l] = m0 + 0.5 * (m1 + m2);
            r1[l] = 0.5 * (m1 - m2);
            r2[l] = 0.5 * (m1 + m2) + m3;
        }
        for (a, row) in r.iter().enumerate() {
            let dst = &mut out[oc * 9 + 3 * a..oc * 9 + 3 * a + 3];
            dst[0] = row[0] + 0.5 * (row[1] + row[2]);
            dst[1] = 0.5 * (row[1] - row[2]);
            dst[2] = 0.5 * (row[1] + row[2]) + row[3];
        }
    }
    out[oc_n * 9..].copy_from_slice(&first[16 * oc_n..]);
    out
}
