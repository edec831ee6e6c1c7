//! Loading and batching speed on the installed Fashion-MNIST:
//! `cargo run --release -p rws-data --example data_speed [THREADS]`.
use rws_data::{fashion_mnist, BatchConfig, Split};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global()?;
    let t = Instant::now();
    let tr = fashion_mnist(Split::Train)?;
    let load = t.elapsed().as_secs_f64();
    let cfg = BatchConfig::train(128, 1, 2, true);
    let t = Instant::now();
    let mut sum = 0f64;
    for b in tr.batches(&cfg, 0) {
        sum += b.images[0] as f64;
    }
    let aug = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for b in tr.eval_batches(256) {
        sum += b.images[0] as f64;
    }
    let plain = t.elapsed().as_secs_f64();
    println!(
        "threads {threads}: load train (60000, gz) {load:.2} s; augmented batches {:.0} img/s; plain batches {:.0} img/s ({sum:.1})",
        tr.len() as f64 / aug,
        tr.len() as f64 / plain
    );
    Ok(())
}
