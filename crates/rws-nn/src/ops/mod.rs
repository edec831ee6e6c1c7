//! Differentiable ops the models call, with fast CPU implementations (candle custom ops):
//! im2col + gemm convolution whose backward passes are gemms too (no conv-transpose); 3×3
//! stride-1 convolutions with ≥ 8 input channels by Winograd F(2×2, 3×3) in inference, in the
//! training block's forward pass and in both of its gradients (2.25× fewer multiply-adds;
//! `RWS_WINOGRAD=0` turns it off); a direct convolution for input layers with C·kh·kw ≤ 27;
//! and max-pooling that records argmax. f32 tensors on the CPU take the fast path; anything else
//! (other dtypes, GPU devices) falls back to candle's built-ins, so model code never changes.
//!
//! All fast ops split work into fixed chunks (images, planes) and add partial sums in a fixed
//! order: results are identical bit for bit whatever the rayon thread count.
use candle_core::{DType, Device, Result, Tensor};

mod conv;
mod pool;
mod winograd;
mod prof;
mod util;

pub use prof::take_profile;

/// `RWS_OPS=candle` routes every op to candle's built-ins: an A/B switch for benchmarking the
/// real models without rebuilding.
fn candle_forced() -> bool {
    static FORCED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FORCED.get_or_init(|| std::env::var("RWS_OPS").is_ok_and(|v| v == "candle"))
}

fn fast(t: &Tensor) -> bool {
    matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && !candle_forced()
}

/// 2-D convolution, NCHW input, OIHW weight, optional bias of length O.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    if fast(x) && fast(w) && b.iter().all(|t| fast(t)) {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        return match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, conv::ConvBias { stride, pad: padding }),
            None => x.apply_op2(&w, conv::Conv { stride, pad: padding }),
        };
    }
    conv2d_candle(x, w, b, stride, padding)
}

/// candle's own convolution (the reference the fast op is tested and benchmarked against).
pub fn conv2d_candle(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// Inference block: conv (+ bias) → ReLU → max-pool `pool` (0 or 1: no pooling), fused so the
/// full-size conv output never leaves the cache. Tracked tensors (training) take the separate
/// differentiable ops instead, so the result is the same either way.
pub fn conv2d_relu_pool(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, padding: usize, pool: usize) -> Result<Tensor> {
    let tracked = x.track_op() || w.track_op() || b.is_some_and(|b| b.track_op());
    if !tracked && fast(x) && fast(w) && b.iter().all(|t| fast(t)) {
        let o = w.dim(0)?;
        let zeros;
        let b = match b {
            Some(b) => b,
            None => {
                zeros = Tensor::zeros(o, DType::F32, x.device())?;
                &zeros
            }
        };
        return x.contiguous()?.apply_op3_no_bwd(&w.contiguous()?, &b.contiguous()?, &conv::ConvReluPool { stride, pad: padding, pool });
    }
    let y = conv2d(x, w, b, stride, padding)?.relu()?;
    if pool >= 2 {
        max_pool2d(&y, pool)
    } else {
        Ok(y)
    }
}

/// Max-pooling with a square kernel of size `k` and stride `k` (floor mode, as PyTorch).
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    if fast(x) {
        return x.contiguous()?.apply_op1(pool::MaxPool::new(k, x.track_op()));
    }
    x.max_pool2d(k)
}

/// candle's own max-pooling (reference for tests and benchmarks).
pub fn max_pool2d_candle(x: &Tensor, k: usize) -> Result<Tensor> {
    x.max_pool2d(k)
}

mod bn;

/// Training-mode BatchNorm over (N, H, W) per channel, optionally fused with the ReLU that
/// follows it: returns the output and the batch mean and biased variance per channel (detached,
/// for the caller's running-statistics update; PyTorch's running variance uses the unbiased
/// one, `var · n/(n−1)` with n = N·H·W). Falls back to candle ops off the f32 CPU path.
pub fn batch_norm_train(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, relu: bool) -> Result<(Tensor, Tensor, Tensor)> {
    if fast(x) && fast(gamma) && fast(beta) {
        let stats = std::sync::Arc::new(std::sync::Mutex::new(bn::Stats::default()));
        let op = bn::BnTrain { eps, relu, stats: stats.clone() };
        let y = x.contiguous()?.apply_op3(&gamma.contiguous()?, &beta.contiguous()?, op)?;
        let s = stats.lock().unwrap();
        let c = s.mean.len();
        let mean = Tensor::from_slice(&s.mean, c, x.device())?;
        let var = Tensor::from_slice(&s.var, c, x.device())?;
        return Ok((y, mean, var));
    }
    batch_norm_train_candle(x, gamma, beta, eps, relu)
}

/// [`batch_norm_train`] with candle's tensor ops (reference for tests and benchmarks).
pub fn batch_norm_train_candle(x: &Tensor, gamma: &Tensor, beta: &Tensor, eps: f64, relu: bool) -> Result<(Tensor, Tensor, Tensor)> {
    let c = x.dim(1)?;
    let mean = x.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(0)?.mean_keepdim(2)?.mean_keepdim(3)?;
    let y = xc
        .broadcast_div(&(&var + eps)?.sqrt()?)?
        .broadcast_mul(&gamma.reshape((1, c, 1, 1))?)?
        .broadcast_add(&beta.reshape((1, c, 1, 1))?)?;
    let y = if relu { y.relu()? } else { y };
    Ok((y, mean.detach().flatten_all()?, var.detach().flatten_all()?))
}

mod fused;

/// Training-mode conv → BatchNorm → ReLU in one op (the conv bias, if any, is applied before
/// the normalisation, as in torchvision's VGG-BN). Returns the output and the batch mean and
/// biased variance per channel, as [`batch_norm_train`]. Gradients flow to `x` (when it needs
/// one), `w`, `b`, `gamma` and `beta`. Falls back to [`conv2d`] + [`batch_norm_train`] off the
/// f32 CPU path.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bn_relu_train(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    stride: usize,
    padding: usize,
    eps: f64,
) -> Result<(Tensor, Tensor, Tensor)> {
    conv2d_bn_relu_pool_train(x, w, b, gamma, beta, stride, padding, eps, 0)
}

/// [`conv2d_bn_relu_train`] followed by max-pooling with kernel = stride = `pool` (0 or 1: no
/// pooling), still one op: the full-size activation and its gradient never become graph
/// tensors, which saves candle's zero-fill and addition of that gradient and a separate
/// pooling op each way. The batch statistics are those of the BatchNorm (before pooling).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_bn_relu_pool_train(
    x: &Tensor,
    w: &Tensor,
    b: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    stride: usize,
    padding: usize,
    eps: f64,
    pool: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    if !(fast(x) && fast(w) && fast(gamma) && fast(beta) && b.iter().all(|t| fast(t))) {
        let y = conv2d(x, w, b, stride, padding)?;
        let (y, m, v) = batch_norm_train(&y, gamma, beta, eps, true)?;
        let y = if pool >= 2 { max_pool2d(&y, pool)? } else { y };
        return Ok((y, m, v));
    }
    let (o, c, kh, kw) = w.dims4()?;
    let zeros;
    let b = match b {
        Some(b) => b,
        None => {
            zeros = Tensor::zeros(o, DType::F32, x.device())?;
            &zeros
        }
    };
    let packed = Tensor::cat(&[&w.flatten_all()?, &b.flatten_all()?, &gamma.flatten_all()?, &beta.flatten_all()?], 0)?;
    let saved = std::sync::Arc::new(std::sync::Mutex::new(fused::Saved::default()));
    let op = fused::ConvBnRelu { stride, pad: padding, w_shape: [o, c, kh, kw], eps, pool, saved: saved.clone() };
    let y = x.contiguous()?.apply_op2(&packed, op)?;
    let s = saved.lock().unwrap();
    let mean = Tensor::from_slice(&s.mean, o, x.device())?;
    let var = Tensor::from_slice(&s.var, o, x.device())?;
    Ok((y, mean, var))
}

mod sgd;

/// One PyTorch-style SGD step for one parameter: `g ← grad + wd·p`, `buf ← μ·buf + g` (`buf`
/// starts as `g`: pass `None` on the first step), `p ← p − lr·(nesterov ? g + μ·buf : buf)`;
/// with `momentum == 0` simply `p ← p − lr·g`. `p` and `buf` are updated in place on the f32
/// CPU path (two passes, no allocation after the first step); elsewhere through candle ops.
pub fn sgd_step(p: &candle_core::Var, grad: &Tensor, buf: &mut Option<Tensor>, lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Result<()> {
    let pt = p.as_tensor();
    if fast(pt) && fast(grad) && pt.is_contiguous() && momentum != 0.0 {
        let grad = grad.contiguous()?;
        if buf.as_ref().is_none_or(|b| !fast(b) || !b.is_contiguous() || b.dims() != pt.dims()) {
            // μ·0 + g = g: the first step's buffer is the gradient, as PyTorch's.
            let b = match buf.take() {
                Some(b) if b.dims() == pt.dims() => b.to_dtype(DType::F32)?.to_device(&Device::Cpu)?.copy()?,
                _ => Tensor::zeros(pt.shape(), DType::F32, &Device::Cpu)?,
            };
            *buf = Some(b);
        }
        let b = buf.as_ref().expect("momentum buffer");
        let (mu, wd) = (momentum as f32, weight_decay as f32);
        b.inplace_op3(&grad, pt, &sgd::MomUpdate { momentum: mu, wd })?;
        return pt.inplace_op3(&grad, b, &sgd::ParamUpdate { lr: lr as f32, momentum: mu, wd, nesterov });
    }
    let mut g = grad.clone();
    if weight_decay != 0.0 {
        g = (g + (pt * weight_decay)?)?;
    }
    if momentum != 0.0 {
        let nb = match buf.as_ref() {
            None => g.clone(),
            Some(m) => ((m * momentum)? + &g)?,
        };
        g = if nesterov { (g + (&nb * momentum)?)? } else { nb.clone() };
        *buf = Some(nb);
    }
    p.set(&(pt - (g * lr)?)?)
}
