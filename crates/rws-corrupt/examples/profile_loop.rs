//! Profiling aid: run one corruption on the bench's dumped images (`BENCH_DUMP=DIR cargo bench
//! -p rws-corrupt --bench corrupt`) in a loop, for `perf record`.
//! `cargo run --release -p rws-corrupt --example profile_loop -- DIR/bench224.npy jpeg_compression 3 SECONDS`
use rws_corrupt::{corrupt_u8, Corruption, ParamSet, Rng};
use rand::SeedableRng;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
}

fn main() {
    // As the bench and the `rws` binary do: keep freed memory mapped (15 = mi_option_purge_delay).
    // SAFETY: plain option setter of the linked mimalloc.
    unsafe { mi_option_set(15, -1) };
    let a: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&a[1]).expect("npy file");
    let c = Corruption::ALL.iter().copied().find(|c| c.name() == a[2]).expect("corruption name");
    let sev: usize = a[3].parse().unwrap();
    let secs: f64 = a[4].parse().unwrap();
    let side = if a[1].contains("224") { 224 } else { 32 };
    let n = side * side * 3;
    let data = &bytes[bytes.len() - 20 * n..];
    let p = if side == 224 { ParamSet::ImageNet } else { ParamSet::Cifar10 };
    let mut rng = Rng::seed_from_u64(1);
    let t = std::time::Instant::now();
    let mut calls = 0usize;
    while t.elapsed().as_secs_f64() < secs {
        // Five calls per image, as the bench times them (the image then sits in L2).
        for im in data.chunks_exact(n) {
            for _ in 0..5 {
                std::hint::black_box(corrupt_u8(im, side, side, 3, c, sev, p, &mut rng).unwrap());
                calls += 1;
            }
        }
    }
    println!("{:.4} ms per call over {calls} calls", t.elapsed().as_secs_f64() * 1e3 / calls as f64);
}
