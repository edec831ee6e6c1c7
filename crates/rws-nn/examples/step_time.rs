//! Time one training step's forward and backward for an architecture (profiling aid).
//! `cargo run --release -p rws-nn --example step_time -- ARCH [BATCH] [HW] [C]`
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let arch = a.get(1).map(String::as_str).unwrap_or(rws_nn::DEFAULT_ARCH);
    let b: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(128);
    let hw: usize = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(28);
    let c: usize = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let m = rws_nn::Model::new(arch, 10, c, 0)?;
    let x = Tensor::rand(0f32, 1f32, (b, c, hw, hw), &Device::Cpu)?;
    let y = Tensor::from_vec((0..b as u32).map(|i| i % 10).collect::<Vec<_>>(), b, &Device::Cpu)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (mut tf, mut tb, mut te) = (0.0, 0.0, 0.0);
    let reps = 5;
    for r in 0..reps + 1 {
        let t = Instant::now();
        let logits = m.forward(&x, true, &mut rng)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _g = loss.backward()?;
        let bw = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = m.forward(&x, false, &mut rng)?.argmax(1)?;
        let e = t.elapsed().as_secs_f64();
        if r > 0 {
            tf += f;
            tb += bw;
            te += e;
        }
    }
    let n = reps as f64;
    println!(
        "{arch} batch {b}: train fwd {:.1} ms, bwd {:.1} ms ({:.0} img/s); eval fwd {:.1} ms ({:.0} img/s)",
        1e3 * tf / n,
        1e3 * tb / n,
        b as f64 * n / (tf + tb),
        1e3 * te / n,
        b as f64 * n / te
    );
    Ok(())
}
