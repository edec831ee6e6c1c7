//! PyTorch's SGD update (momentum, dampening 0, weight decay, optional Nesterov) as two in-place
//! passes per parameter, instead of six candle ops that each allocate a tensor (and, for
//! candle's binary ops, wake its spinning thread pool).
use super::util::f32_slice;
use candle_core::{CpuStorage, InplaceOp3, Layout, Result};

/// buf ← μ·buf + (g + wd·p)
pub(crate) struct MomUpdate {
    pub momentum: f32,
    pub wd: f32,
}

/// p ← p − lr·d, d = buf, or (g + wd·p) + μ·buf with Nesterov.
pub(crate) struct ParamUpdate {
    pub lr: f32,
    pub momentum: f32,
    pub wd: f32,
    pub nesterov: bool,
}

fn dst_slice<'a>(s: &'a mut CpuStorage, l: &Layout, what: &str) -> Result<&'a mut [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v.as_mut_slice(),
        _ => candle_core::bail!("{what}: expected f32 data"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&mut v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

fn check(n: usize, a: &[f32], b: &[f32]) -> Result<()> {
    if a.len() != n || b.len() != n {
        candle_core::bail!("sgd: parameter has {n} values, gradient/momentum {} and {}", a.len(), b.len());
    }
    Ok(())
}

impl InplaceOp3 for MomUpdate {
    fn name(&self) -> &'static str {
        "rws-sgd-momentum"
    }
    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        let buf = dst_slice(dst, dst_l, "sgd momentum buffer")?;
        let g = f32_slice(s2, l2, "sgd gradient")?;
        let p = f32_slice(s3, l3, "sgd parameter")?;
        check(buf.len(), g, p)?;
        let (mu, wd) = (self.momentum, self.wd);
        for ((b, &g), &p) in buf.iter_mut().zip(g).zip(p) {
            *b = mu * *b + (g + wd * p);
        }
        Ok(())
    }
}

impl InplaceOp3 for ParamUpdate {
    fn name(&self) -> &'static str {
        "rws-sgd-param"
    }
    fn cpu_fwd(&self, dst: &mut CpuStorage, dst_l: &Layout, s2: &CpuStorage, l2: &Layout, s3: &CpuStorage, l3: &Layout) -> Result<()> {
        let p = dst_slice(dst, dst_l, "sgd parameter")?;
        let g = f32_slice(s2, l2, "sgd gradient")?;
        let buf = f32_slice(s3, l3, "sgd momentum buffer")?;
        check(p.len(), g, buf)?;
        let (lr, mu, wd) = (self.lr, self.momentum, self.wd);
        if self.nesterov {
            for ((p, &g), &b) in p.iter_mut().zip(g).zip(buf) {
                *p -= lr * ((g + wd * *p) + mu * b);
            }
        } else {
            for (p, &b) in p.iter_mut().zip(buf) {
                *p -= lr * b;
            }
        }
        Ok(())
    }
}
