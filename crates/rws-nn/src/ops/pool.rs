//! Max-pooling (kernel = stride = k, floor mode) that records the winning index of each window
//! in the forward pass, so the backward pass is a scatter instead of a second search.
use super::util::{f32_slice, output_buf};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

pub(crate) struct MaxPool {
    pub k: usize,
    /// Keep the argmax for a backward pass; off when the input is not tracked (eval).
    pub record: bool,
    /// Index within its input plane of each output's maximum (first one on ties, as PyTorch).
    argmax: Mutex<Option<Arc<Vec<u32>>>>,
}

impl MaxPool {
    pub(crate) fn new(k: usize, record: bool) -> Self {
        MaxPool { k, record, argmax: Mutex::new(None) }
    }
}

struct MaxPoolBwd {
    argmax: Arc<Vec<u32>>,
    in_shape: Shape,
    plane_out: usize,
    plane_in: usize,
}

fn dims(l: &Layout, k: usize) -> Result<(usize, usize, usize, usize, usize, usize)> {
    let d = l.shape().dims();
    if d.len() != 4 {
        candle_core::bail!("max_pool2d: expected an NCHW tensor, got shape {d:?}");
    }
    if k == 0 || d[2] < k || d[3] < k {
        candle_core::bail!("max_pool2d: kernel {k} does not fit input {}x{}", d[2], d[3]);
    }
    Ok((d[0], d[1], d[2], d[3], d[2] / k, d[3] / k))
}

/// The update rule of every window scan: a larger value, or a NaN over a number (PyTorch
/// propagates NaN); ties keep the first index.
#[inline(always)]
fn wins(v: f32, best: f32) -> bool {
    // Non-short-circuit `|`/`&`: selects instead of branches that mispredict on real data.
    (v > best) | (v.is_nan() & !best.is_nan())
}

/// k = 2: two input rows per output row, scanned in PyTorch's order (row-major in the window).
pub(crate) fn pool2(xp: &[f32], w: usize, oh: usize, ow: usize, yp: &mut [f32], mut ap: Option<&mut [u32]>) {
    for oy in 0..oh {
        let r0 = &xp[2 * oy * w..2 * oy * w + 2 * ow];
        let r1 = &xp[(2 * oy + 1) * w..(2 * oy + 1) * w + 2 * ow];
        let yr = &mut yp[oy * ow..(oy + 1) * ow];
        match ap.as_deref_mut() {
            None => {
                for ox in 0..ow {
                    let (a, b, c, d) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
                    let mut m = a;
                    m = if wins(b, m) { b } else { m };
                    m = if wins(c, m) { c } else { m };
                    m = if wins(d, m) { d } else { m };
                    yr[ox] = m;
                }
            }
            Some(ap) => {
                let ar = &mut ap[oy * ow..(oy + 1) * ow];
                let base0 = (2 * oy * w) as u32;
                let base1 = ((2 * oy + 1) * w) as u32;
                for ox in 0..ow {
                    let (a, b, c, d) = (r0[2 * ox], r0[2 * ox + 1], r1[2 * ox], r1[2 * ox + 1]);
                    let o2 = 2 * ox as u32;
                    let (mut m, mut i) = (a, base0 + o2);
                    let t = wins(b, m);
                    m = if t { b } else { m };
                    i = if t { base0 + o2 + 1 } else { i };
                    let t = wins(c, m);
                    m = if t { c } else { m };
                    i = if t { base1 + o2 } else { i };
                    let t = wins(d, m);
                    m = if t { d } else { m };
                    i = if t { base1 + o2 + 1 } else { i };
                    yr[ox] = m;
                    ar[ox] = i;
                }
            }
        }
    }
}

pub(crate) fn pool_k(xp: &[f32], w: usize, k: usize, oh: usize, ow: usize, yp: &mut [f32], mut ap: Option<&mut [u32]>) {
    for oy in 0..oh {
        for ox in 0..ow {
            let mut bi = oy * k * w + ox * k;
            let mut bv = xp[bi];
            for dy in 0..k {
                let r = (oy * k + dy) * w + ox * k;
                for (dx, &v) in xp[r..r + k].iter().enumerate() {
                    if wins(v, bv) {
                        bv = v;
                        bi = r + dx;
                    }
                }
            }
            yp[oy * ow + ox] = bv;
            if let Some(ap) = ap.as_deref_mut() {
                ap[oy * ow + ox] = bi as u32;
            }
        }
    }
}

fn output_buf_u32(n: usize) -> Vec<u32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: u32 has no invalid bit patterns and the pooling loop writes all n values.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "rws-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _s = super::prof::span("pool fwd");
        let x = f32_slice(s, l, "max_pool2d input")?;
        let k = self.k;
        let (n, c, h, w, oh, ow) = dims(l, k)?;
        let (pi, po) = (h * w, oh * ow);
        let mut y = output_buf(n * c * po);
        let mut am = if self.record { output_buf_u32(n * c * po) } else { Vec::new() };
        // One task per image (all its planes): per-plane tasks are too small for rayon.
        let per = c * po;
        let body = |img: usize, yi: &mut [f32], ai: Option<&mut [u32]>| {
            let mut ai = ai;
            for pl in 0..c {
                let xp = &x[(img * c + pl) * pi..(img * c + pl + 1) * pi];
                let yp = &mut yi[pl * po..(pl + 1) * po];
                let ap = ai.as_deref_mut().map(|a| &mut a[pl * po..(pl + 1) * po]);
                if k == 2 {
                    pool2(xp, w, oh, ow, yp, ap);
                } else {
                    pool_k(xp, w, k, oh, ow, yp, ap);
                }
            }
        };
        if self.record {
            y.par_chunks_mut(per.max(1)).zip(am.par_chunks_mut(per.max(1))).enumerate().for_each(|(i, (yi, ai))| body(i, yi, Some(ai)));
        } else {
            y.par_chunks_mut(per.max(1)).enumerate().for_each(|(i, yi)| body(i, yi, None));
        }
        if !self.record {
            return Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))));
        }
        *self.argmax.lock().unwrap() = Some(Arc::new(am));
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let argmax = match self.argmax.lock().unwrap().clone() {
            Some(a) => a,
            None => candle_core::bail!("max_pool2d backward before forward"),
        };
        let (_, _, h, w) = x.dims4()?;
        let bwd = MaxPoolBwd { argmax, in_shape: x.shape().clone(), plane_out: (h / self.k) * (w / self.k), plane_in: h * w };
        Ok(Some(dy.contiguous()?.apply_op1_no_bwd(&bwd)?))
    }
}

impl CustomOp1 for MaxPoolBwd {
    fn name(&self) -> &'static str {
        "rws-max-pool2d-bwd"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _s = super::prof::span("pool bwd");
        let dy = f32_slice(s, l, "max_pool2d output gradient")?;
        if dy.len() != self.argmax.len() {
            candle_core::bail!("max_pool2d backward: gradient has {} values, expected {}", dy.len(), self.argmax.len());
        }
        let (pi, po) = (self.plane_in, self.plane_out);
        let mut dx = output_buf(self.in_shape.elem_count());
        // Windows do not overlap, so each input element receives at most one value. Chunks of
        // planes (zeroed, then scattered into while in cache) keep rayon's tasks large enough.
        const PLANES: usize = 32;
        dx.par_chunks_mut(pi * PLANES).enumerate().for_each(|(ci, dxc)| {
            dxc.fill(0.0);
            for (j, dxp) in dxc.chunks_mut(pi).enumerate() {
                let pl = ci * PLANES + j;
                let a = &self.argmax[pl * po..(pl + 1) * po];
                for (g, &i) in dy[pl * po..(pl + 1) * po].iter().zip(a) {
                    dxp[i as usize] = *g;
                }
            }
        });
        Ok((CpuStorage::F32(dx), self.in_shape.clone()))
    }
}
