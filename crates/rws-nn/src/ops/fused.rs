//! Training-mode conv → BatchNorm → ReLU as one custom op. candle's backward pass materialises a
//! zero tensor and an addition for every gradient it stores; fusing the block keeps the conv
//! output out of the graph (held by the op for the backward pass), which removes one full-size
//! gradient buffer, its zero-fill and its addition per block.
use super::conv::{self, bwd_weight, Geom};
use super::winograd;
use super::pool::{pool2, pool_k};
use super::util::{f32_slice, lanes_dot, lanes_sum, output_buf};
use rayon::prelude::*;
use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub(crate) struct Saved {
    pub z: Arc<Vec<f32>>,
    /// With pooling: the full-size post-ReLU output (the ReLU mask) and each window's argmax.
    pub y_full: Option<Arc<Vec<f32>>>,
    pub argmax: Option<Arc<Vec<u32>>>,
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
    pub params: Vec<f32>,
}

/// Inputs: x and the packed parameters [w (O·K) | b (O) | gamma (O) | beta (O)].
pub(crate) struct ConvBnRelu {
    pub stride: usize,
    pub pad: usize,
    pub w_shape: [usize; 4],
    pub eps: f64,
    /// Max-pool kernel (= stride) applied after the ReLU; 0 or 1: none.
    pub pool: usize,
    pub saved: Arc<Mutex<Saved>>,
}

struct ConvBnReluBwd {
    g: Geom,
    eps: f64,
    need_dx: bool,
    z: Arc<Vec<f32>>,
    mean: Vec<f32>,
    var: Vec<f32>,
    params: Vec<f32>,
    y_full: Option<Arc<Vec<f32>>>,
    argmax: Option<Arc<Vec<u32>>>,
    pool: usize,
}

impl CustomOp2 for ConvBnRelu {
    fn name(&self) -> &'static str {
        "rws-conv-bn-relu"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let _s = super::prof::span("fused fwd total");
        let g = Geom::new(l1.shape().dims(), &self.w_shape, self.stride, self.pad)?;
        let x = f32_slice(s1, l1, "conv input")?;
        let p = f32_slice(s2, l2, "conv/batch-norm parameters")?;
        let (ok, o) = (g.o * g.k(), g.o);
        if p.len() != ok + 3 * o {
            candle_core::bail!("conv_bn_relu: {} packed parameters, expected {}", p.len(), ok + 3 * o);
        }
        let (n, hw) = (g.n, g.p());
        let in_img = g.c * g.h * g.w;
        let (w, b, gamma, beta) = (&p[..ok], &p[ok..ok + o], &p[ok + o..ok + 2 * o], &p[ok + 2 * o..]);
        // Pass 1, per image: the conv, then each channel's mean and sum of squared deviations
        // while the image's output is still in cache.
        let mut z = output_buf(n * o * hw);
        let mut part = vec![(0f64, 0f64); n * o];
        let stats = |zi: &[f32], pi: &mut [(f64, f64)]| {
            for (r, pr) in pi.iter_mut().enumerate() {
                let zr = &zi[r * hw..(r + 1) * hw];
                let m = lanes_sum(zr, |v| v) as f64 / hw as f64;
                let mf = m as f32;
                *pr = (m, lanes_sum(zr, |v| (v - mf) * (v - mf)) as f64);
            }
        };
        if winograd::applies(&g, 0) {
            // Winograd runs several images per gemm, so the statistics come in a second pass.
            winograd::conv(&g, x, w, Some(b), winograd::Epilogue::Linear, &mut z);
            z.par_chunks(o * hw).zip(part.par_chunks_mut(o)).for_each(|(zi, pi)| stats(zi, pi));
        } else {
            z.par_chunks_mut(o * hw).zip(part.par_chunks_mut(o)).enumerate().for_each(|(i, (zi, pi))| {
                conv::fwd_image(&g, &x[i * in_img..(i + 1) * in_img], w, Some(b), zi);
                stats(zi, pi);
            });
        }
        // Per channel, merge the images in order (Chan et al.'s pairwise update): fixed order,
        // so the statistics do not depend on the thread count.
        let mut mean = vec![0f32; o];
        let mut var = vec![0f32; o];
        for r in 0..o {
            let (mut m, mut m2, mut cnt) = (0f64, 0f64, 0f64);
            for i in 0..n {
                let (mb, m2b) = part[i * o + r];
                let nb = hw as f64;
                let tot = cnt + nb;
                let d = mb - m;
                m += d * nb / tot;
                m2 += m2b + d * d * cnt * nb / tot;
                cnt = tot;
            }
            mean[r] = m as f32;
            var[r] = (m2 / cnt) as f32;
        }
        // Pass 2, per image: normalise + ReLU (+ pool with argmax).
        let scale: Vec<f32> = (0..o).map(|r| gamma[r] / ((var[r] as f64 + self.eps).sqrt() as f32)).collect();
        let shift: Vec<f32> = (0..o).map(|r| beta[r] - mean[r] * scale[r]).collect();
        let mut y = output_buf(n * o * hw);
        let k = self.pool.max(1);
        if k >= 2 && (g.oh < k || g.ow < k) {
            candle_core::bail!("max_pool2d: kernel {k} does not fit input {}x{}", g.oh, g.ow);
        }
        let (ph, pw) = (g.oh / k, g.ow / k);
        let po = ph * pw;
        let (mut yp, mut am) = if k >= 2 { (output_buf(n * o * po), vec![0u32; n * o * po]) } else { (Vec::new(), Vec::new()) };
        let per_img = |i: usize, yi: &mut [f32], pooled: Option<(&mut [f32], &mut [u32])>| {
            let zi = &z[i * o * hw..(i + 1) * o * hw];
            for r in 0..o {
                let (sc, sh) = (scale[r], shift[r]);
                for (yv, &zv) in yi[r * hw..(r + 1) * hw].iter_mut().zip(&zi[r * hw..(r + 1) * hw]) {
                    let t = zv * sc + sh;
                    *yv = if t < 0.0 { 0.0 } else { t };
                }
            }
            if let Some((ypi, ai)) = pooled {
                for r in 0..o {
                    let src = &yi[r * hw..(r + 1) * hw];
                    let (yr, ar) = (&mut ypi[r * po..(r + 1) * po], &mut ai[r * po..(r + 1) * po]);
                    if k == 2 {
                        pool2(src, g.ow, ph, pw, yr, Some(ar));
                    } else {
                        pool_k(src, g.ow, k, ph, pw, yr, Some(ar));
                    }
                }
            }
        };
        if k >= 2 {
            y.par_chunks_mut(o * hw)
                .zip(yp.par_chunks_mut(o * po).zip(am.par_chunks_mut(o * po)))
                .enumerate()
                .for_each(|(i, (yi, (ypi, ai)))| per_img(i, yi, Some((ypi, ai))));
        } else {
            y.par_chunks_mut(o * hw).enumerate().for_each(|(i, yi)| per_img(i, yi, None));
        }
        let mut s = self.saved.lock().unwrap();
        s.z = Arc::new(z);
        s.mean = mean;
        s.var = var;
        s.params = p.to_vec();
        if k >= 2 {
            s.y_full = Some(Arc::new(y));
            s.argmax = Some(Arc::new(am));
            return Ok((CpuStorage::F32(yp), Shape::from((g.n, g.o, ph, pw))));
        }
        Ok((CpuStorage::F32(y), Shape::from((g.n, g.o, g.oh, g.ow))))
    }
    fn bwd(&self, x: &Tensor, packed: &Tensor, res: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Geom::new(x.dims(), &self.w_shape, self.stride, self.pad)?;
        let s = self.saved.lock().unwrap();
        let need_dx = x.track_op();
        let op = ConvBnReluBwd {
            g,
            eps: self.eps,
            need_dx,
            z: s.z.clone(),
            mean: s.mean.clone(),
            var: s.var.clone(),
            params: s.params.clone(),
            y_full: s.y_full.clone(),
            argmax: s.argmax.clone(),
            pool: self.pool,
        };
        drop(s);
        let out = x.apply_op3_no_bwd(&dy.contiguous()?, res, &op)?;
        let nx = if need_dx { x.elem_count() } else { 0 };
        let dx = if need_dx { Some(out.narrow(0, 0, nx)?.reshape(x.shape())?) } else { None };
        let dp = out.narrow(0, nx, packed.elem_count())?;
        Ok((dx, Some(dp)))
    }
}

impl CustomOp3 for ConvBnReluBwd {
    fn name(&self) -> &'static str {
        "rws-conv-bn-relu-bwd"
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
        let _s = super::prof::span("fused bwd total");
        let g = self.g;
        let x = f32_slice(s1, l1, "conv input")?;
        let dy = f32_slice(s2, l2, "conv_bn_relu output gradient")?;
        let y = f32_slice(s3, l3, "conv_bn_relu output")?;
        let (ok, o, hw, n) = (g.o * g.k(), g.o, g.p(), g.n);
        let pooled = match (&self.y_full, &self.argmax) {
            (Some(yf), Some(am)) if self.pool >= 2 => {
                if dy.len() != am.len() {
                    candle_core::bail!("conv_bn_relu_pool backward: gradient has {} values, expected {}", dy.len(), am.len());
                }
                Some((&yf[..], &am[..], (g.oh / self.pool) * (g.ow / self.pool)))
            }
            _ => None,
        };
        let y = pooled.map_or(y, |p| p.0);
        let z = &self.z[..];
        let gamma = &self.params[ok + o..ok + 2 * o];
        let inv: Vec<f32> = self.var.iter().map(|&v| (1.0 / (v as f64 + self.eps).sqrt()) as f32).collect();
        // Pass 1, per image: with pooling, route the pooled gradient to each window's maximum
        // (windows do not overlap); then the ReLU-masked gradient and each channel's two BN
        // sums, while the image is in cache. `dm` keeps the masked gradient for pass 2.
        let mut dm = output_buf(n * o * hw);
        let mut part = vec![(0f64, 0f64); n * o];
        dm.par_chunks_mut(o * hw).zip(part.par_chunks_mut(o)).enumerate().for_each(|(i, (di, pi))| {
            match pooled {
                Some((_, am, po)) => {
                    di.fill(0.0);
                    for r in 0..o {
                        let pl = i * o + r;
                        let dp = &mut di[r * hw..(r + 1) * hw];
                        for (gv, &a) in dy[pl * po..(pl + 1) * po].iter().zip(&am[pl * po..(pl + 1) * po]) {
                            dp[a as usize] = *gv;
                        }
                    }
                }
                None => di.copy_from_slice(&dy[i * o * hw..(i + 1) * o * hw]),
            }
            let base = i * o * hw;
            for (r, pr) in pi.iter_mut().enumerate() {
                let t = &mut di[r * hw..(r + 1) * hw];
                for (tv, &yv) in t.iter_mut().zip(&y[base + r * hw..base + (r + 1) * hw]) {
                    *tv = relu_grad(*tv, yv);
                }
                let zr = &z[base + r * hw..base + (r + 1) * hw];
                *pr = (lanes_sum(t, |v| v) as f64, (lanes_dot(t, zr, self.mean[r]) * inv[r]) as f64);
            }
        });
        // Per channel, add the images' sums in order: the bytes do not depend on the threads.
        let mut sd = vec![0f64; o];
        let mut sdx = vec![0f64; o];
        for i in 0..n {
            for r in 0..o {
                sd[r] += part[i * o + r].0;
                sdx[r] += part[i * o + r].1;
            }
        }
        // Pass 2, per image: dz = γ·inv·(d − mean(d) − x̂·mean(d·x̂)) in place of d, then (when
        // the input needs one) that image's input gradient while dz is in cache.
        let cnt = (n * hw) as f64;
        let nx = if self.need_dx { x.len() } else { 0 };
        let len = nx + ok + 3 * o;
        let mut out = output_buf(len);
        let (dx, rest) = out.split_at_mut(nx);
        let in_img = g.c * g.h * g.w;
        let w = &self.params[..ok];
        let dz_image = |i: usize, di: &mut [f32]| {
            let base = i * o * hw;
            for r in 0..o {
                let (m, iv) = (self.mean[r], inv[r]);
                let k = gamma[r] * iv;
                let (md, mdx) = ((sd[r] / cnt) as f32, (sdx[r] / cnt) as f32);
                for (dv, &zv) in di[r * hw..(r + 1) * hw].iter_mut().zip(&z[base + r * hw..base + (r + 1) * hw]) {
                    *dv = k * (*dv - md - (zv - m) * iv * mdx);
                }
            }
        };
        // The Winograd input gradient runs several images per gemm, so it wants every dz first;
        // otherwise each image's input gradient follows its dz while that is in cache.
        if self.need_dx && winograd::transposed_geom(&g).is_none() {
            dm.par_chunks_mut(o * hw).zip(dx.par_chunks_mut(in_img)).enumerate().for_each(|(i, (di, dxi))| {
                dz_image(i, di);
                conv::bwd_input_image(&g, di, w, dxi);
            });
        } else {
            dm.par_chunks_mut(o * hw).enumerate().for_each(|(i, di)| dz_image(i, di));
            if self.need_dx {
                conv::bwd_input_into(&g, &dm, w, dx);
            }
        }
        // [gw | gb]
        let wb = bwd_weight(&g, x, &dm);
        rest[..ok + o].copy_from_slice(&wb);
        for r in 0..o {
            rest[ok + o + r] = sdx[r] as f32;
            rest[ok + 2 * o + r] = sd[r] as f32;
        }
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// The gradient through the ReLU: `d`, or 0 where the output `y` was clamped (a bit mask: a
/// branch here mispredicts on half the elements and blocks vectorisation).
#[inline(always)]
fn relu_grad(d: f32, y: f32) -> f32 {
    let clamp = ((y <= 0.0) as u32).wrapping_neg();
    f32::from_bits(d.to_bits() & !clamp)
}
