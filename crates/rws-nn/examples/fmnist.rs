//! Train an architecture on Fashion-MNIST and report test accuracy and time (used to pick the
//! demo's default network). `cargo run --release -p rws-nn --example fmnist -- ARCH EPOCHS [LIMIT] [LR] [SCHEDULE]`
use rws_nn::{evaluate, train, Model, Schedule, TrainConfig};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let arch = a.get(1).map(String::as_str).unwrap_or(rws_nn::DEFAULT_ARCH);
    let epochs: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let limit: usize = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(60000);
    let lr: f64 = a.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0.05);
    let sched = a.get(5).map(|s| Schedule::parse(s)).transpose()?.unwrap_or(Schedule::Cosine);
    let tr = rws_data::fashion_mnist(rws_data::Split::Train)?.limit(limit);
    let te = rws_data::fashion_mnist(rws_data::Split::Test)?;
    let mut m = Model::new(arch, 10, 1, 0)?;
    m.set_normalization(&[0.2860], &[0.3530])?;
    let cfg = TrainConfig { epochs, lr, schedule: sched, progress: true, ..Default::default() };
    let r = train(&mut m, &tr, None, &cfg)?;
    let t = Instant::now();
    let acc = evaluate(&m, &te)?;
    let es = t.elapsed().as_secs_f64();
    println!(
        "{arch}: {} params, train {:.1} s ({:.0} img/s), test acc {acc:.2}%, eval {:.0} img/s",
        m.num_parameters(),
        r.seconds,
        r.images_per_sec,
        te.len() as f64 / es
    );
    Ok(())
}
