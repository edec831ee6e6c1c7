//! Micro-timings of candle ops used by BatchNorm (profiling aid).
use candle_core::{Device, Tensor};
use std::time::Instant;
fn time<F: FnMut() -> candle_core::Result<Tensor>>(name: &str, mut f: F) -> candle_core::Result<()> {
    f()?;
    let t = Instant::now();
    for _ in 0..5 {
        f()?;
    }
    println!("{name}: {:.2} ms", t.elapsed().as_secs_f64() * 200.0);
    Ok(())
}
fn main() -> candle_core::Result<()> {
    let x = Tensor::rand(0f32, 1f32, (128, 16, 28, 28), &Device::Cpu)?;
    let s = Tensor::rand(0f32, 1f32, (1, 16, 1, 1), &Device::Cpu)?;
    time("sum_keepdim(0,2,3)", || x.sum_keepdim((0, 2, 3)))?;
    time("reshape sum(2) sum(0)", || x.reshape((128, 16, 784))?.sum(2)?.sum(0))?;
    let x3 = x.reshape((128, 16, 784))?;
    time("x3 sum_keepdim(0)", || x3.sum_keepdim(0))?;
    time("x3 sum_keepdim(2)", || x3.sum_keepdim(2))?;
    time("x3 sum_keepdim((0,2))", || x3.sum_keepdim((0, 2)))?;
    let x2 = x.reshape((128, 16 * 784))?;
    time("x2 sum_keepdim(0)", || x2.sum_keepdim(0))?;
    let ones = Tensor::ones((1, 128), candle_core::DType::F32, &Device::Cpu)?;
    time("ones.matmul(x2)", || ones.matmul(&x2))?;
    time("broadcast_mul", || x.broadcast_mul(&s))?;
    time("broadcast_add", || x.broadcast_add(&s))?;
    time("mul", || x.mul(&x))?;
    time("sqr", || x.sqr())?;
    time("relu", || x.relu())?;
    time("s.broadcast_as", || s.broadcast_as(x.shape())?.contiguous())?;
    time("conv2d 16->16", || {
        let w = Tensor::rand(0f32, 1f32, (16, 16, 3, 3), &Device::Cpu)?;
        rws_nn::ops::conv2d(&x, &w, None, 1, 1)
    })?;
    Ok(())
}
