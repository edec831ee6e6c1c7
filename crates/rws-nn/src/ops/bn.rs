//! Training-mode BatchNorm (optionally followed by ReLU) as one custom op: one pass for the batch
//! statistics, one for the output, and a two-pass backward, instead of a dozen broadcast ops each
//! allocating a full activation. Per-channel sums run sequentially within a channel (f64
//! accumulators) and channels run in parallel, so the bytes never depend on the thread count.
use super::util::{f32_slice, lanes_dot, lanes_sum, output_buf};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Batch mean and biased variance per channel, filled by the forward pass.
#[derive(Default)]
pub(crate) struct Stats {
    pub mean: Vec<f32>,
    pub var: Vec<f32>,
}

pub(crate) struct BnTrain {
    pub eps: f64,
    pub relu: bool,
    pub stats: Arc<Mutex<Stats>>,
}

struct BnBwd {
    eps: f64,
    relu: bool,
    mean: Vec<f32>,
    var: Vec<f32>,
    gamma: Vec<f32>,
    n: usize,
    c: usize,
    hw: usize,
}

/// Visit channel `ch`'s values across the batch as contiguous runs of `hw`.
fn runs(n: usize, c: usize, hw: usize, ch: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..n).map(move |i| (i * c + ch) * hw..(i * c + ch + 1) * hw)
}

fn nchw(l: &Layout) -> Result<(usize, usize, usize)> {
    let d = l.shape().dims();
    if d.len() != 4 {
        candle_core::bail!("batch_norm: expected an NCHW tensor, got shape {d:?}");
    }
    Ok((d[0], d[1], d[2] * d[3]))
}

impl CustomOp3 for BnTrain {
    fn name(&self) -> &'static str {
        "rws-batch-norm-train"
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
        let x = f32_slice(s1, l1, "batch_norm input")?;
        let g = f32_slice(s2, l2, "batch_norm weight")?;
        let b = f32_slice(s3, l3, "batch_norm bias")?;
        let (n, c, hw) = nchw(l1)?;
        if g.len() != c || b.len() != c {
            candle_core::bail!("batch_norm: input has {c} channels, weight/bias have {}/{}", g.len(), b.len());
        }
        let (y, st) = forward(x, g, b, n, c, hw, self.eps, self.relu);
        let mut s = self.stats.lock().unwrap();
        s.mean = st.iter().map(|p| p.0).collect();
        s.var = st.iter().map(|p| p.1).collect();
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        g: &Tensor,
        _b: &Tensor,
        res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (n, c, h, w) = x.dims4()?;
        let s = self.stats.lock().unwrap();
        let gamma = g.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        let op = BnBwd { eps: self.eps, relu: self.relu, mean: s.mean.clone(), var: s.var.clone(), gamma, n, c, hw: h * w };
        drop(s);
        let out = x.apply_op3_no_bwd(&dy.contiguous()?, res, &op)?;
        let len = x.elem_count();
        let dx = out.narrow(0, 0, len)?.reshape(x.shape())?;
        let dg = out.narrow(0, len, c)?;
        let db = out.narrow(0, len + c, c)?;
        Ok((Some(dx), Some(dg), Some(db)))
    }
}

impl CustomOp3 for BnBwd {
    fn name(&self) -> &'static str {
        "rws-batch-norm-bwd"
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
        let x = f32_slice(s1, l1, "batch_norm input")?;
        let dy = f32_slice(s2, l2, "batch_norm output gradient")?;
        let y = f32_slice(s3, l3, "batch_norm output")?;
        let g = &self.gamma;
        let (n, c, hw) = (self.n, self.c, self.hw);
        let len = n * c * hw;
        let out = backward(x, dy, y, &self.mean, &self.var, g, n, c, hw, self.eps, self.relu);
        Ok((CpuStorage::F32(out), Shape::from(len + 2 * c)))
    }
}

/// Batch statistics (mean, biased variance) per channel and the normalised (ReLU'd) output.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(x: &[f32], g: &[f32], b: &[f32], n: usize, c: usize, hw: usize, eps: f64, relu: bool) -> (Vec<f32>, Vec<(f32, f32)>) {
    let st = stats(x, n, c, hw);
    let mut y = output_buf(x.len());
    apply(x, &st, g, b, c, hw, eps, relu, &mut y);
    (y, st)
}

pub(crate) fn stats(x: &[f32], n: usize, c: usize, hw: usize) -> Vec<(f32, f32)> {
    let _s = super::prof::span("bn stats");
    let cnt = (n * hw) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mut s = 0f64;
            for r in runs(n, c, hw, ch) {
                s += lanes_sum(&x[r], |v| v) as f64;
            }
            let m = s / cnt;
            let mf = m as f32;
            let mut q = 0f64;
            for r in runs(n, c, hw, ch) {
                q += lanes_sum(&x[r], |v| (v - mf) * (v - mf)) as f64;
            }
            (mf, (q / cnt) as f32)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn apply(x: &[f32], st: &[(f32, f32)], g: &[f32], b: &[f32], c: usize, hw: usize, eps: f64, relu: bool, y: &mut [f32]) {
    let _s = super::prof::span("bn apply");
    y.par_chunks_mut(hw).enumerate().for_each(|(plane, yp)| {
        let ch = plane % c;
        let (m, v) = st[ch];
        let sc = g[ch] / ((v as f64 + eps).sqrt() as f32);
        let sh = b[ch] - m * sc;
        for (o, &i) in yp.iter_mut().zip(&x[plane * hw..(plane + 1) * hw]) {
            let t = i * sc + sh;
            *o = if relu && t < 0.0 { 0.0 } else { t };
        }
    });
}

/// The gradient through the ReLU: `d`, or 0 where the output `y` was clamped. A bit mask
/// instead of a branch: the branch mispredicts on half the elements and blocks vectorisation.
#[inline(always)]
fn relu_grad(relu: bool, d: f32, y: f32) -> f32 {
    let clamp = ((relu & (y <= 0.0)) as u32).wrapping_neg();
    f32::from_bits(d.to_bits() & !clamp)
}

/// [dx (N·C·H·W) | dgamma (C) | dbeta (C)].
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    x: &[f32],
    dy: &[f32],
    y: &[f32],
    mean: &[f32],
    var: &[f32],
    g: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    eps: f64,
    relu: bool,
) -> Vec<f32> {
    let _s = super::prof::span("bn backward");
    let len = n * c * hw;
    let cnt = (n * hw) as f64;
    let s1 = super::prof::span("bn bwd sums");
    let sums: Vec<(f64, f64, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let m = mean[ch];
            let inv = (1.0 / (var[ch] as f64 + eps).sqrt()) as f32;
            let (mut sd, mut sdx) = (0f64, 0f64);
            let mut t = vec![0f32; hw];
            for r in runs(n, c, hw, ch) {
                let (dyr, yr, xr) = (&dy[r.clone()], &y[r.clone()], &x[r]);
                // Masked gradient first (a plain map), then two lane sums: simple loops that
                // vectorise, where one fused loop with two accumulator arrays did not.
                for ((t, &d), &yv) in t.iter_mut().zip(dyr).zip(yr) {
                    *t = relu_grad(relu, d, yv);
                }
                sd += lanes_sum(&t, |v| v) as f64;
                sdx += (lanes_dot(&t, xr, m) * inv) as f64;
            }
            (sd, sdx, inv)
        })
        .collect();
    drop(s1);
    let _s2 = super::prof::span("bn bwd dx");
    let mut out = output_buf(len + 2 * c);
    let (dx, rest) = out.split_at_mut(len);
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
        let ch = plane % c;
        let (sd, sdx, inv) = sums[ch];
        let m = mean[ch];
        let k = g[ch] * inv;
        let md = (sd / cnt) as f32;
        let mdx = (sdx / cnt) as f32;
        let r = plane * hw..(plane + 1) * hw;
        for (((o, &d), &yv), &xv) in dxp.iter_mut().zip(&dy[r.clone()]).zip(&y[r.clone()]).zip(&x[r.clone()]) {
            let d = relu_grad(relu, d, yv);
            *o = k * (d - md - (xv - m) * inv * mdx);
        }
    });
    for ch in 0..c {
        rest[ch] = sums[ch].1 as f32;
        rest[c + ch] = sums[ch].0 as f32;
    }
    out
}
