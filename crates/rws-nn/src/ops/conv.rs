//! Convolution as im2col + gemm, forward and both backward passes, as candle custom ops.
//!
//! Every parallel loop runs over images (or fixed chunks of images for the weight gradient), each
//! worker using a single-threaded gemm, and partial sums are added in chunk order: results are
//! the same bytes whatever the number of threads.
use super::util::{f32_slice, gemm_f32, lanes_sum, output_buf, with_scratch, with_scratch2};
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// Images per partial weight-gradient sum. Fixed (not derived from the thread count) so the
/// summation order, hence the bytes, never change.
const WGRAD_CHUNK: usize = 8;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    pub(crate) fn new(xs: &[usize], ws: &[usize], stride: usize, pad: usize) -> Result<Self> {
        if xs.len() != 4 || ws.len() != 4 {
            candle_core::bail!("conv2d: expected NCHW input and OIHW weight, got {xs:?} and {ws:?}");
        }
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let (o, ci, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
        if ci != c {
            candle_core::bail!("conv2d: input has {c} channels, weight expects {ci}");
        }
        if stride == 0 || h + 2 * pad < kh || w + 2 * pad < kw {
            candle_core::bail!("conv2d: kernel {kh}x{kw} (stride {stride}, padding {pad}) does not fit input {h}x{w}");
        }
        let oh = (h + 2 * pad - kh) / stride + 1;
        let ow = (w + 2 * pad - kw) / stride + 1;
        Ok(Geom { n, c, h, w, o, kh, kw, stride, pad, oh, ow })
    }
    pub(crate) fn k(&self) -> usize {
        self.c * self.kh * self.kw
    }
    pub(crate) fn p(&self) -> usize {
        self.oh * self.ow
    }
    /// A 1×1, stride-1, unpadded conv reads the image itself as its column matrix.
    fn direct(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == 1 && self.pad == 0
    }
}

/// Column matrix (K×P, row k = (c, ki, kj), column p = (oy, ox)) of one image.
fn im2col(g: &Geom, x: &[f32], col: &mut [f32]) {
    let (p, ow) = (g.p(), g.ow);
    let mut row = 0;
    for c in 0..g.c {
        let xc = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let dst = &mut col[row * p..(row + 1) * p];
                row += 1;
                for oy in 0..g.oh {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    let d = &mut dst[oy * ow..(oy + 1) * ow];
                    if iy < 0 || iy >= g.h as isize {
                        d.fill(0.0);
                        continue;
                    }
                    let xr = &xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    if g.stride == 1 {
                        // ix = ox + kj - pad: a shifted copy with zero ends.
                        let off = kj as isize - g.pad as isize;
                        let lo = (-off).max(0) as usize;
                        let hi = ((g.w as isize - off).min(ow as isize)).max(lo as isize) as usize;
                        d[..lo].fill(0.0);
                        if hi > lo {
                            let s = (lo as isize + off) as usize;
                            d[lo..hi].copy_from_slice(&xr[s..s + hi - lo]);
                        }
                        d[hi..].fill(0.0);
                    } else {
                        for (ox, v) in d.iter_mut().enumerate() {
                            let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                            *v = if ix >= 0 && ix < g.w as isize { xr[ix as usize] } else { 0.0 };
                        }
                    }
                }
            }
        }
    }
}

/// Adjoint of [`im2col`]: scatter-add a column matrix into one image's gradient (overwritten).
fn col2im(g: &Geom, col: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let (p, ow) = (g.p(), g.ow);
    let mut row = 0;
    for c in 0..g.c {
        let xc = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let src = &col[row * p..(row + 1) * p];
                row += 1;
                for oy in 0..g.oh {
                    let iy = (oy * g.stride + ki) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let xr = &mut xc[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let s = &src[oy * ow..(oy + 1) * ow];
                    if g.stride == 1 {
                        let off = kj as isize - g.pad as isize;
                        let lo = (-off).max(0) as usize;
                        let hi = ((g.w as isize - off).min(ow as isize)).max(lo as isize) as usize;
                        if hi > lo {
                            let st = (lo as isize + off) as usize;
                            for (a, b) in xr[st..st + hi - lo].iter_mut().zip(&s[lo..hi]) {
                                *a += *b;
                            }
                        }
                    } else {
                        for (ox, v) in s.iter().enumerate() {
                            let ix = (ox * g.stride + kj) as isize - g.pad as isize;
                            if ix >= 0 && ix < g.w as isize {
                                xr[ix as usize] += *v;
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn fwd(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
    let _s = super::prof::span("conv fwd");
    let mut y = output_buf(g.n * g.o * g.p());
    fwd_into(g, x, w, b, &mut y);
    y
}

fn fwd_into(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>, y: &mut [f32]) {
    if super::winograd::applies(g, 0) {
        return super::winograd::conv(g, x, w, b, super::winograd::Epilogue::Linear, y);
    }
    let (p, o) = (g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    y.par_chunks_mut(o * p).enumerate().for_each(|(i, yi)| fwd_image(g, &x[i * in_img..(i + 1) * in_img], w, b, yi));
}

/// One image's conv output (O×P) into `yi`.
pub(crate) fn fwd_image(g: &Geom, xi: &[f32], w: &[f32], b: Option<&[f32]>, yi: &mut [f32]) {
    let (k, p, o) = (g.k(), g.p(), g.o);
    if let Some(b) = b {
        for (r, bv) in b.iter().enumerate() {
            yi[r * p..(r + 1) * p].fill(*bv);
        }
    }
    if g.direct() {
        gemm_f32(o, p, k, yi, p, b.is_some(), w, k, 1, xi, p, 1);
    } else if g.stride == 1 && k <= DIRECT_MAX_K {
        if b.is_none() {
            yi.fill(0.0);
        }
        direct_image(g, xi, w, yi);
    } else {
        with_scratch(k * p, |col| {
            im2col(g, xi, col);
            gemm_f32(o, p, k, yi, p, b.is_some(), w, k, 1, col, p, 1);
        });
    }
}

/// Largest C·kh·kw computed by [`direct_image`]: an RGB or grey input layer. There im2col + gemm
/// runs a 9–27-deep gemm far below its peak and spends most of its time writing the column
/// matrix; row-by-row multiply-adds do the same arithmetic in a fraction of the time.
const DIRECT_MAX_K: usize = 27;

/// Stride-1 convolution added into `yi` (which holds the bias, or zeros): for each output
/// row, one multiply-add of a shifted padded input row per tap.
fn direct_image(g: &Geom, xi: &[f32], w: &[f32], yi: &mut [f32]) {
    // The scratch is fetched out here: a closure would not inherit the AVX2 code generation.
    with_scratch(g.c * (g.h + 2 * g.pad) * direct_row(g), |xp| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            #[target_feature(enable = "avx2")]
            unsafe fn wide(g: &Geom, xi: &[f32], w: &[f32], yi: &mut [f32], xp: &mut [f32]) {
                direct_image_impl::<true>(g, xi, w, yi, xp)
            }
            // SAFETY: the CPU has AVX2 (checked above).
            return unsafe { wide(g, xi, w, yi, xp) };
        }
        direct_image_impl::<false>(g, xi, w, yi, xp)
    })
}

/// Padded row length of [`direct_image`]'s input copy: whole 8-wide output chunks plus the
/// kernel's reach, so the last chunk reads zeros instead of running off the row.
fn direct_row(g: &Geom) -> usize {
    g.ow.div_ceil(8) * 8 + g.kw - 1
}

#[inline(always)]
fn direct_image_impl<const AVX2: bool>(g: &Geom, xi: &[f32], w: &[f32], yi: &mut [f32], xp: &mut [f32]) {
    let (hp, wp) = (g.h + 2 * g.pad, direct_row(g));
    let (p, ow) = (g.p(), g.ow);
    xp.fill(0.0);
    for c in 0..g.c {
        for y in 0..g.h {
            let d = (c * hp + y + g.pad) * wp + g.pad;
            xp[d..d + g.w].copy_from_slice(&xi[(c * g.h + y) * g.w..(c * g.h + y + 1) * g.w]);
        }
    }
    let k = g.k();
    // Per 8-wide output chunk: its k = C·kh·kw input vectors once, then every output channel
    // from them in registers (per-channel loops re-read the inputs and ran at loop overhead).
    let mut vin = [[0f32; 8]; DIRECT_MAX_K];
    for oy in 0..g.oh {
        for x0 in (0..ow).step_by(8) {
            let n = (ow - x0).min(8);
            let mut t = 0;
            for c in 0..g.c {
                for ki in 0..g.kh {
                    let at = (c * hp + oy + ki) * wp + x0;
                    for kj in 0..g.kw {
                        vin[t].copy_from_slice(&xp[at + kj..at + kj + 8]);
                        t += 1;
                    }
                }
            }
            for o in 0..g.o {
                let wo = &w[o * k..(o + 1) * k];
                let out = &mut yi[o * p + oy * ow + x0..o * p + oy * ow + x0 + n];
                let mut acc = [0f32; 8];
                acc[..n].copy_from_slice(out);
                if AVX2 {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: only instantiated under AVX2 (`wide`); all pointers are to 8-float arrays.
                    unsafe {
                        use std::arch::x86_64::*;
                        let mut a = _mm256_loadu_ps(acc.as_ptr());
                        for (wv, v) in wo.iter().zip(&vin[..k]) {
                            a = _mm256_add_ps(a, _mm256_mul_ps(_mm256_set1_ps(*wv), _mm256_loadu_ps(v.as_ptr())));
                        }
                        _mm256_storeu_ps(acc.as_mut_ptr(), a);
                    }
                } else {
                    for (wv, v) in wo.iter().zip(&vin[..k]) {
                        for l in 0..8 {
                            acc[l] += wv * v[l];
                        }
                    }
                }
                out.copy_from_slice(&acc[..n]);
            }
        }
    }
}

/// Inference conv + bias + ReLU (+ max-pool k when `pool` ≥ 2), one image at a time so the conv
/// output is pooled while still in cache and never written out at full size. ReLU is applied
/// after the pooling: max and ReLU commute, and the pooled tensor is k² times smaller.
pub(crate) fn fwd_relu_pool(g: &Geom, x: &[f32], w: &[f32], b: &[f32], pool: usize) -> (Vec<f32>, Shape) {
    let _s = super::prof::span("conv relu pool fwd");
    let (p, o) = (g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    let pool = pool.max(1);
    let (ph, pw) = (g.oh / pool, g.ow / pool);
    let per = o * ph * pw;
    let mut y = output_buf(g.n * per);
    let conv_one = |xi: &[f32], yi: &mut [f32]| fwd_image(g, xi, w, Some(b), yi);
    y.par_chunks_mut(per.max(1)).enumerate().for_each(|(i, yo)| {
        let xi = &x[i * in_img..(i + 1) * in_img];
        if pool == 1 {
            conv_one(xi, yo);
        } else {
            with_scratch2(o * p, |z| {
                conv_one(xi, z);
                for r in 0..o {
                    let (zp, yp) = (&z[r * p..(r + 1) * p], &mut yo[r * ph * pw..(r + 1) * ph * pw]);
                    if pool == 2 {
                        super::pool::pool2(zp, g.ow, ph, pw, yp, None);
                    } else {
                        super::pool::pool_k(zp, g.ow, pool, ph, pw, yp, None);
                    }
                }
            });
        }
        // A select, not a conditional store: the branchy form compiled to per-value tests.
        for v in yo.iter_mut() {
            *v = if *v < 0.0 { 0.0 } else { *v };
        }
    });
    (y, Shape::from((g.n, o, ph, pw)))
}

/// Inference-only op for [`fwd_relu_pool`] (no backward: callers use it on untracked tensors).
pub(crate) struct ConvReluPool {
    pub stride: usize,
    pub pad: usize,
    pub pool: usize,
}

impl CustomOp3 for ConvReluPool {
    fn name(&self) -> &'static str {
        "rws-conv2d-relu-pool"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, b) = geom_with_bias(l1, l2, s3, l3, self.stride, self.pad)?;
        if self.pool >= 2 && (g.oh < self.pool || g.ow < self.pool) {
            candle_core::bail!("max_pool2d: kernel {} does not fit input {}x{}", self.pool, g.oh, g.ow);
        }
        let (x, w) = (f32_slice(s1, l1, "conv2d input")?, f32_slice(s2, l2, "conv2d weight")?);
        let (y, shape) = if super::winograd::applies(&g, self.pool) {
            super::winograd::fwd_relu_pool(&g, x, w, b, self.pool)
        } else {
            fwd_relu_pool(&g, x, w, b, self.pool)
        };
        Ok((CpuStorage::F32(y), shape))
    }
}

/// Input gradient: per image, dcol = Wᵀ·dy then col2im.
pub(crate) fn bwd_input(g: &Geom, dy: &[f32], w: &[f32]) -> Vec<f32> {
    let mut dx = output_buf(g.n * g.c * g.h * g.w);
    bwd_input_into(g, dy, w, &mut dx);
    dx
}

/// [`bwd_input`] into a caller's buffer (overwritten), so fused ops can pack it without a copy.
pub(crate) fn bwd_input_into(g: &Geom, dy: &[f32], w: &[f32], dx: &mut [f32]) {
    let _s = super::prof::span("conv bwd input");
    if let Some(gt) = super::winograd::transposed_geom(g) {
        let wt = super::winograd::transposed_weights(w, g.o, g.c);
        return super::winograd::conv(&gt, dy, &wt, None, super::winograd::Epilogue::Linear, dx);
    }
    let (p, o) = (g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    dx.par_chunks_mut(in_img).enumerate().for_each(|(i, dxi)| bwd_input_image(g, &dy[i * o * p..(i + 1) * o * p], w, dxi));
}

/// One image's input gradient (C×H×W, overwritten) from its output gradient `dyi` (O×P).
pub(crate) fn bwd_input_image(g: &Geom, dyi: &[f32], w: &[f32], dxi: &mut [f32]) {
    let (k, p, o) = (g.k(), g.p(), g.o);
    if g.direct() {
        gemm_f32(k, p, o, dxi, p, false, w, 1, k, dyi, p, 1);
    } else {
        with_scratch(k * p, |col| {
            gemm_f32(k, p, o, col, p, false, w, 1, k, dyi, p, 1);
            col2im(g, col, dxi);
        });
    }
}

/// Weight and bias gradients packed as [gw (O·K) | gb (O)]: fixed chunks of images give
/// partial sums that are then added in chunk order.
pub(crate) fn bwd_weight(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let _s = super::prof::span("conv bwd weight");
    if super::winograd::applies(g, 0) {
        return super::winograd::weight_grad(g, x, dy);
    }
    let (k, p, o) = (g.k(), g.p(), g.o);
    let in_img = g.c * g.h * g.w;
    let len = o * k + o;
    let chunks = g.n.div_ceil(WGRAD_CHUNK).max(1);
    let mut parts = vec![0f32; chunks * len];
    parts.par_chunks_mut(len).enumerate().for_each(|(ci, part)| {
        let (gw, gb) = part.split_at_mut(o * k);
        let lo = ci * WGRAD_CHUNK;
        let hi = (lo + WGRAD_CHUNK).min(g.n);
        for i in lo..hi {
            let xi = &x[i * in_img..(i + 1) * in_img];
            let dyi = &dy[i * o * p..(i + 1) * o * p];
            let acc = i > lo;
            if g.direct() {
                gemm_f32(o, k, p, gw, k, acc, dyi, p, 1, xi, 1, p);
            } else {
                with_scratch(k * p, |col| {
                    im2col(g, xi, col);
                    gemm_f32(o, k, p, gw, k, acc, dyi, p, 1, col, 1, p);
                });
            }
            for (r, b) in gb.iter_mut().enumerate() {
                *b += lanes_sum(&dyi[r * p..(r + 1) * p], |v| v);
            }
        }
    });
    let mut out = parts[..len].to_vec();
    for part in parts.chunks(len).skip(1) {
        for (a, b) in out.iter_mut().zip(part) {
            *a += *b;
        }
    }
    out
}

fn geom_of(l1: &Layout, l2: &Layout, stride: usize, pad: usize) -> Result<Geom> {
    Geom::new(l1.shape().dims(), l2.shape().dims(), stride, pad)
}

/// The geometry of a biased conv and its bias, checked against the weight's output channels.
fn geom_with_bias<'a>(l1: &Layout, l2: &Layout, s3: &'a CpuStorage, l3: &Layout, stride: usize, pad: usize) -> Result<(Geom, &'a [f32])> {
    let g = geom_of(l1, l2, stride, pad)?;
    let b = f32_slice(s3, l3, "conv2d bias")?;
    if b.len() != g.o {
        candle_core::bail!("conv2d: bias has {} values, weight has {} output channels", b.len(), g.o);
    }
    Ok((g, b))
}

/// Forward conv without bias.
pub(crate) struct Conv {
    pub stride: usize,
    pub pad: usize,
}

/// Forward conv with bias (the bias is added before the gemm accumulates into the output).
pub(crate) struct ConvBias {
    pub stride: usize,
    pub pad: usize,
}

struct ConvBwdInput {
    g: Geom,
}
struct ConvBwdWeight {
    g: Geom,
}

fn out_shape(g: &Geom) -> Shape {
    Shape::from((g.n, g.o, g.oh, g.ow))
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "rws-conv2d"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = geom_of(l1, l2, self.stride, self.pad)?;
        let y = fwd(&g, f32_slice(s1, l1, "conv2d input")?, f32_slice(s2, l2, "conv2d weight")?, None);
        Ok((CpuStorage::F32(y), out_shape(&g)))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let dy = dy.contiguous()?;
        let dx = if x.track_op() { Some(dy.apply_op2_no_bwd(w, &ConvBwdInput { g })?) } else { None };
        let packed = x.apply_op2_no_bwd(&dy, &ConvBwdWeight { g })?;
        let dw = packed.narrow(0, 0, g.o * g.k())?.reshape(w.shape())?;
        Ok((dx, Some(dw)))
    }
}

impl CustomOp3 for ConvBias {
    fn name(&self) -> &'static str {
        "rws-conv2d-bias"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (g, b) = geom_with_bias(l1, l2, s3, l3, self.stride, self.pad)?;
        let y = fwd(&g, f32_slice(s1, l1, "conv2d input")?, f32_slice(s2, l2, "conv2d weight")?, Some(b));
        Ok((CpuStorage::F32(y), out_shape(&g)))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), w.dims(), self.stride, self.pad)?;
        let dy = dy.contiguous()?;
        let dx = if x.track_op() { Some(dy.apply_op2_no_bwd(w, &ConvBwdInput { g })?) } else { None };
        let packed = x.apply_op2_no_bwd(&dy, &ConvBwdWeight { g })?;
        let ok = g.o * g.k();
        let dw = packed.narrow(0, 0, ok)?.reshape(w.shape())?;
        let db = if b.track_op() { Some(packed.narrow(0, ok, g.o)?.reshape(b.shape())?) } else { None };
        Ok((dx, Some(dw), db))
    }
}

impl CustomOp2 for ConvBwdInput {
    fn name(&self) -> &'static str {
        "rws-conv2d-bwd-input"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let dx = bwd_input(&g, f32_slice(s1, l1, "conv2d output gradient")?, f32_slice(s2, l2, "conv2d weight")?);
        Ok((CpuStorage::F32(dx), Shape::from((g.n, g.c, g.h, g.w))))
    }
}

impl CustomOp2 for ConvBwdWeight {
    fn name(&self) -> &'static str {
        "rws-conv2d-bwd-weight"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.g;
        let out = bwd_weight(&g, f32_slice(s1, l1, "conv2d input")?, f32_slice(s2, l2, "conv2d output gradient")?);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
