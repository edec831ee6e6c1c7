//! Micro-timings of the fast ops on the reference network's largest activation (profiling aid).
//! `RAYON_NUM_THREADS=1 cargo run --release -p rws-nn --example op_time`
use candle_core::{Device, Tensor, Var};
use rws_nn::ops;
use std::time::Instant;

fn time<F: FnMut() -> candle_core::Result<()>>(name: &str, mut f: F) -> candle_core::Result<()> {
    f()?;
    let t = Instant::now();
    for _ in 0..10 {
        f()?;
    }
    println!("{name:28} {:8.2} ms", t.elapsed().as_secs_f64() * 100.0);
    Ok(())
}

fn main() -> candle_core::Result<()> {
    let x = Var::from_tensor(&Tensor::randn(0f32, 1f32, (128, 32, 28, 28), &Device::Cpu)?)?;
    let g = Var::from_tensor(&Tensor::ones(32, candle_core::DType::F32, &Device::Cpu)?)?;
    let b = Var::from_tensor(&Tensor::zeros(32, candle_core::DType::F32, &Device::Cpu)?)?;
    let r = Tensor::randn(0f32, 1f32, (128, 32, 28, 28), &Device::Cpu)?;
    let r2 = Tensor::randn(0f32, 1f32, (128, 32, 14, 14), &Device::Cpu)?;
    let wc = Tensor::randn(0f32, 0.1f32, (32, 32, 3, 3), &Device::Cpu)?;
    let xd = x.as_tensor().detach();
    time("conv2d 32->32 28x28 fwd", || ops::conv2d(&xd, &wc, None, 1, 1).map(|_| ()))?;
    let x4 = Tensor::randn(0f32, 1f32, (128, 64, 14, 14), &Device::Cpu)?;
    let w4 = Tensor::randn(0f32, 0.1f32, (64, 64, 3, 3), &Device::Cpu)?;
    time("conv2d 64->64 14x14 fwd", || ops::conv2d(&x4, &w4, None, 1, 1).map(|_| ()))?;
    if std::env::var("ONLY_CONV").is_ok() {
        return Ok(());
    }
    time("max_pool2d fwd (untracked)", || ops::max_pool2d(&x.as_tensor().detach(), 2).map(|_| ()))?;
    time("max_pool2d fwd (tracked)", || ops::max_pool2d(x.as_tensor(), 2).map(|_| ()))?;
    time("max_pool2d fwd+bwd", || {
        let y = ops::max_pool2d(x.as_tensor(), 2)?;
        (y * &r2)?.sum_all()?.backward().map(|_| ())
    })?;
    time("bn_train fwd", || ops::batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, true).map(|_| ()))?;
    time("bn_train fwd+bwd", || {
        let (y, _, _) = ops::batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, true)?;
        (y * &r)?.sum_all()?.backward().map(|_| ())
    })?;
    time("mul+sum_all+backward only", || (x.as_tensor() * &r)?.sum_all()?.backward().map(|_| ()))?;
    for (n, t, c, cpu) in ops::take_profile() {
        println!("  {n:20} {:8.2} ms/call, CPU {:8.2} ({c} calls)", t * 1e3 / c as f64, cpu * 1e3 / c as f64);
    }
    Ok(())
}
