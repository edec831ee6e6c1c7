//! Per-layer inference time of the reference network's conv blocks (conv → ReLU → pool as one
//! op), batch 128 (profiling aid; `RWS_WINOGRAD=0` for the im2col path).
//! `RAYON_NUM_THREADS=1 cargo run --release -p rws-nn --example eval_time [REPS] [LAYER]`
use candle_core::{Device, Tensor};
use rws_nn::ops;
use std::time::Instant;

/// The `rws` binary's allocator and setting (purge delay −1: freed memory stays mapped), so
/// large outputs are not page-faulted in anew every batch.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
extern "C" {
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
}

fn main() -> candle_core::Result<()> {
    // SAFETY: plain option setter of the linked mimalloc; 15 = mi_option_purge_delay.
    unsafe { mi_option_set(15, -1) };
    let reps: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let layers = [(1, 32, 28, 0), (32, 32, 28, 2), (32, 64, 14, 0), (64, 64, 14, 2)];
    let only: Option<usize> = std::env::args().nth(2).and_then(|s| s.parse().ok());
    let mut total = 0.0;
    for (i, (c, o, s, pool)) in layers.into_iter().enumerate() {
        if only.is_some_and(|l| l != i) {
            continue;
        }
        let x = Tensor::randn(0f32, 1f32, (128, c, s, s), &Device::Cpu)?;
        let w = Tensor::randn(0f32, 0.1f32, (o, c, 3, 3), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 0.1f32, o, &Device::Cpu)?;
        ops::conv2d_relu_pool(&x, &w, Some(&b), 1, 1, pool)?;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(ops::conv2d_relu_pool(&x, &w, Some(&b), 1, 1, pool)?);
        }
        let ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
        total += ms;
        println!("{c:3}->{o:3} {s:2}x{s:2} pool {pool}: {ms:7.2} ms");
    }
    println!("total {total:.2} ms per batch of 128");
    Ok(())
}
