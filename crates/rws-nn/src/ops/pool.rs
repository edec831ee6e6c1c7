//! Max-pooling (kernel = stride = k, floor mode) that records the winning index of each window
//! in the forward pass, so the backward pass is a scatter instead of a second search.
use super::util::{f32_slice, output_buf};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

pub(crate) struct MaxPool {
    pub k: usize,
    /// Index within its input plane of each output's maximum (first one on ties, as PyTorch).
    argmax: Mutex<Option<Arc<Vec<u32>>>>,
}

impl MaxPool {
    pub(crate) fn new(k: usize) -> Self {
        MaxPool { k, argmax: Mutex::new(None) }
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

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "rws-max-pool2d"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l, "max_pool2d input")?;
        let k = self.k;
        let (n, c, h, w, oh, ow) = dims(l, k)?;
        let (pi, po) = (h * w, oh * ow);
        let mut y = output_buf(n * c * po);
        let mut am = vec![0u32; n * c * po];
        y.par_chunks_mut(po).zip(am.par_chunks_mut(po)).enumerate().for_each(|(pl, (yp, ap))| {
            let xp = &x[pl * pi..(pl + 1) * pi];
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut bi = oy * k * w + ox * k;
                    let mut bv = xp[bi];
                    for dy in 0..k {
                        let r = (oy * k + dy) * w + ox * k;
                        for (dx, &v) in xp[r..r + k].iter().enumerate() {
                            // A NaN wins over numbers, as PyTorch propagates it.
                            if v > bv || (v.is_nan() && !bv.is_nan()) {
                                bv = v;
                                bi = r + dx;
                            }
                        }
                    }
                    yp[oy * ow + ox] = bv;
                    ap[oy * ow + ox] = bi as u32;
                }
            }
        });
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
        let dy = f32_slice(s, l, "max_pool2d output gradient")?;
        if dy.len() != self.argmax.len() {
            candle_core::bail!("max_pool2d backward: gradient has {} values, expected {}", dy.len(), self.argmax.len());
        }
        let (pi, po) = (self.plane_in, self.plane_out);
        let mut dx = vec![0f32; self.in_shape.elem_count()];
        // Windows do not overlap, so each input element receives at most one value.
        dx.par_chunks_mut(pi).enumerate().for_each(|(pl, dxp)| {
            let a = &self.argmax[pl * po..(pl + 1) * po];
            for (g, &i) in dy[pl * po..(pl + 1) * po].iter().zip(a) {
                dxp[i as usize] = *g;
            }
        });
        Ok((CpuStorage::F32(dx), self.in_shape.clone()))
    }
}
