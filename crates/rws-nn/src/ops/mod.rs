//! Differentiable ops the models call. These start as candle's built-ins; faster custom ops
//! (im2col + gemm for forward and both backward passes, pooling) replace them behind the same
//! signatures, so model code never changes.
use candle_core::{Result, Tensor};

/// 2-D convolution, NCHW input, OIHW weight, optional bias of length O.
pub fn conv2d(x: &Tensor, w: &Tensor, b: Option<&Tensor>, stride: usize, padding: usize) -> Result<Tensor> {
    let y = x.conv2d(w, padding, stride, 1, 1)?;
    match b {
        Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?),
        None => Ok(y),
    }
}

/// Max-pooling with a square kernel of size `k` and stride `k`.
pub fn max_pool2d(x: &Tensor, k: usize) -> Result<Tensor> {
    x.max_pool2d(k)
}
