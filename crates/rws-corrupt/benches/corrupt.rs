//! Single-threaded time per image for every corruption at 32×32 (cifar10 parameters) and
//! 224×224 (imagenet parameters), next to the Python reference timings of
//! shared/corruptions/TIMING.md (the faster of its "modern" and "era" columns: cifar 32 for
//! 32×32, imagecorruptions 224 for 224×224). Prints a markdown table.
//!
//! Inputs: the images TIMING.md timed the Python side on, so both sides see the same content
//! (JPEG's, Canny's and the blends' costs depend on it): Fashion-MNIST test images 0..19 resized
//! 28 → 224 bilinearly with a random per-channel tint, and at 32×32 test images 0..9 zero-padded
//! 28 → 32 (tinted) plus 10 synthetic pictures. `BENCH_IMAGES=synthetic` (or no Fashion-MNIST
//! installed) uses 20 synthetic pictures (smooth shapes plus ±8 noise: harder for JPEG).
//!
//! Run: `cargo bench -p rws-corrupt --bench corrupt` (env BENCH_QUICK=1 for fewer repetitions).
use rand::SeedableRng;

/// The allocator of the `rws` binary (rws-cli/src/main.rs), which is what runs corruptions in
/// practice: with glibc malloc every 224×224 f64 buffer is a fresh mmap and its page faults.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
}
use rws_corrupt::{corrupt_u8, Corruption, ParamSet, Rng};
use std::collections::HashMap;
use std::time::Instant;

fn picture(side: usize, k: u64) -> Vec<u8> {
    // Smooth shapes plus a little noise, a different tint per image.
    let mut s = k.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let (fx, fy) = (x as f64 / side as f64, y as f64 / side as f64);
            let base = 128.0 + 90.0 * ((fx * 6.0 + k as f64).sin() * (fy * 4.0).cos());
            for ch in 0..3 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let v = base * (0.7 + 0.15 * ch as f64 + 0.05 * (k % 3) as f64) + (s % 17) as f64 - 8.0;
                out.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    out
}

/// Fashion-MNIST test images `0..n` (28×28 grey), from `$RWS_FASHION_MNIST` or the Debian package's folder.
fn fmnist_test(n: usize) -> Option<Vec<Vec<u8>>> {
    use std::io::Read;
    let dir = std::env::var_os("RWS_FASHION_MNIST").map(std::path::PathBuf::from).unwrap_or_else(|| "/usr/share/datasets/fashion-mnist".into());
    let f = std::fs::File::open(dir.join("t10k-images-idx3-ubyte.gz")).ok()?;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut raw).ok()?;
    (raw.len() >= 16 + n * 784 && raw[..4] == [0, 0, 8, 3]).then(|| (0..n).map(|i| raw[16 + i * 784..16 + (i + 1) * 784].to_vec()).collect())
}

/// A grey 28×28 image as RGB `side`×`side`: bilinear resize (pixel centres aligned, as PIL's
/// bilinear upscaling) when `side` > 32, else zero-padded to the centre; each channel scaled by
/// a tint factor in 0.5..1.0 drawn per image.
fn tinted(g: &[u8], side: usize, k: u64) -> Vec<u8> {
    let mut s = k.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1;
    let tint: Vec<f64> = (0..3)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            0.5 + 0.5 * (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let at = |y: usize, x: usize| g[y * 28 + x] as f64;
    let mut out = Vec::with_capacity(side * side * 3);
    for y in 0..side {
        for x in 0..side {
            let v = if side > 32 {
                let (fy, fx) = (((y as f64 + 0.5) * 28.0 / side as f64 - 0.5).clamp(0.0, 27.0), ((x as f64 + 0.5) * 28.0 / side as f64 - 0.5).clamp(0.0, 27.0));
                let (y0, x0) = (fy.floor() as usize, fx.floor() as usize);
                let (y1, x1, ty, tx) = ((y0 + 1).min(27), (x0 + 1).min(27), fy - y0 as f64, fx - x0 as f64);
                (at(y0, x0) * (1.0 - tx) + at(y0, x1) * tx) * (1.0 - ty) + (at(y1, x0) * (1.0 - tx) + at(y1, x1) * tx) * ty
            } else {
                let p = (side - 28) / 2;
                if (p..p + 28).contains(&y) && (p..p + 28).contains(&x) { at(y - p, x - p) } else { 0.0 }
            };
            out.extend(tint.iter().map(|t| (v * t).round() as u8));
        }
    }
    out
}

/// TIMING.md rows: (corruption, severity) → (ic224 modern, ic224 era, cifar32 modern, cifar32 era) in ms.
fn python_timings() -> HashMap<(String, usize), [f64; 4]> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corruptions/TIMING.md");
    let mut m = HashMap::new();
    let Ok(t) = std::fs::read_to_string(&p) else {
        eprintln!("NOTICE: {} not found; no Python column", p.display());
        return m;
    };
    for line in t.lines() {
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        if f.len() >= 9 {
            if let (Ok(s), Ok(a), Ok(b), Ok(c), Ok(d)) = (f[2].parse::<usize>(), f[3].parse(), f[4].parse(), f[7].parse(), f[8].parse()) {
                m.insert((f[1].to_string(), s), [a, b, c, d]);
            }
        }
    }
    m
}

fn time_ms(c: Corruption, sev: usize, p: ParamSet, side: usize, imgs: &[Vec<u8>], reps: usize) -> f64 {
    let mut rng = Rng::seed_from_u64(1);
    for im in imgs.iter().take(2) {
        corrupt_u8(im, side, side, 3, c, sev, p, &mut rng).unwrap();
    }
    let mut per: Vec<f64> = imgs
        .iter()
        .map(|im| {
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(corrupt_u8(im, side, side, 3, c, sev, p, &mut rng).unwrap());
            }
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        })
        .collect();
    per.sort_by(|a, b| a.partial_cmp(b).unwrap());
    per[per.len() / 2]
}

/// The VM's state: (core clock in GHz from a chain of dependent adds, which no other thread on
/// the core slows; scalar adds per ns from eight independent chains, which a busy SMT sibling
/// roughly halves). This VM moves between states for minutes at a time, and every timing with
/// them, so the bench prints both before and after its runs.
fn machine_state() -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    {
        let n: u64 = 50_000_000;
        let t = Instant::now();
        let mut x = 0u64;
        // SAFETY: register-only arithmetic on locals.
        unsafe {
            std::arch::asm!("2:", "add {x}, 1", "add {x}, 1", "add {x}, 1", "add {x}, 1", "dec {n}", "jnz 2b", x = inout(reg) x, n = inout(reg) n => _, options(nomem, nostack));
        }
        let ghz = 4.0 * n as f64 / t.elapsed().as_secs_f64() / 1e9;
        let t = Instant::now();
        let mut r = [0u64; 8];
        // SAFETY: as above.
        unsafe {
            std::arch::asm!("2:", "add {a}, 1", "add {b}, 1", "add {c}, 1", "add {d}, 1", "add {e}, 1", "add {f}, 1", "add {g}, 1", "add {h}, 1", "dec {n}", "jnz 2b",
                a = inout(reg) r[0], b = inout(reg) r[1], c = inout(reg) r[2], d = inout(reg) r[3], e = inout(reg) r[4], f = inout(reg) r[5], g = inout(reg) r[6], h = inout(reg) r[7], n = inout(reg) n => _, options(nomem, nostack));
        }
        std::hint::black_box((x, r));
        (ghz, 8.0 * n as f64 / t.elapsed().as_secs_f64() / 1e9)
    }
    #[cfg(not(target_arch = "x86_64"))]
    (f64::NAN, f64::NAN)
}

fn main() {
    // As the `rws` binary does (rws-cli/src/main.rs): mimalloc keeps freed memory mapped instead
    // of purging it after 10 ms, so each call's buffers are not page-faulted in anew (without
    // this, kernel page clearing was 61% of spatter's time at 224×224).
    // SAFETY: plain option setter of the linked mimalloc; 15 = mi_option_purge_delay.
    unsafe { mi_option_set(15, -1) };
    // Single-threaded: the corruption functions themselves never spawn threads; pin rayon anyway.
    let _ = rayon::ThreadPoolBuilder::new().num_threads(1).build_global();
    let quick = std::env::var("BENCH_QUICK").is_ok();
    let only: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let py = python_timings();
    let n_img = if quick { 5 } else { 20 };
    let fm = if std::env::var("BENCH_IMAGES").as_deref() == Ok("synthetic") { None } else { fmnist_test(20) };
    let (imgs32, imgs224): (Vec<Vec<u8>>, Vec<Vec<u8>>) = match &fm {
        Some(fm) => (
            (0..n_img as u64).map(|k| if k % 2 == 0 { tinted(&fm[k as usize / 2], 32, k) } else { picture(32, k) }).collect(),
            (0..n_img as u64).map(|k| tinted(&fm[k as usize], 224, k)).collect(),
        ),
        None => ((0..n_img).map(|k| picture(32, k)).collect(), (0..n_img).map(|k| picture(224, k)).collect()),
    };
    // BENCH_DUMP=DIR writes the inputs as DIR/bench32.npy and DIR/bench224.npy (uint8 N×H×W×3) so
    // scripts/bench_corrupt_reference.py can time the Python reference on the very same images.
    if let Some(dir) = std::env::var_os("BENCH_DUMP") {
        for (imgs, side) in [(&imgs32, 32), (&imgs224, 224)] {
            let data: Vec<u8> = imgs.concat();
            let b = rws_corrupt::io::npy_u8(&[imgs.len(), side, side, 3], &data);
            std::fs::write(std::path::Path::new(&dir).join(format!("bench{side}.npy")), b).expect("BENCH_DUMP folder writable");
        }
    }
    let state_before = machine_state();
    println!("images: {}\n", if fm.is_some() { "Fashion-MNIST test images, tinted (TIMING.md's inputs)" } else { "synthetic pictures" });
    println!("| corruption | sev | rws 32 (ms) | Python cifar 32 (ms) | speed-up | rws 224 (ms) | Python ic 224 (ms) | speed-up |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut logs = Vec::new();
    let mut worst: (f64, String) = (f64::INFINITY, String::new());
    for &c in Corruption::ALL {
        if only.as_deref().is_some_and(|o| !c.name().contains(o)) {
            continue;
        }
        for sev in [3, 5] {
            let r32 = if quick { 20 } else { 200 };
            let r224 = if quick { 1 } else { 5 };
            // BENCH_SIZE=32 or 224 times one size only (profiling aid; the other column reads NaN).
            let size = std::env::var("BENCH_SIZE").ok();
            let t32 = if size.as_deref() == Some("224") { f64::NAN } else { time_ms(c, sev, ParamSet::Cifar10, 32, &imgs32, r32) };
            let t224 = if size.as_deref() == Some("32") { f64::NAN } else { time_ms(c, sev, ParamSet::ImageNet, 224, &imgs224, r224) };
            let (s32, s224, p32, p224) = match py.get(&(c.name().to_string(), sev)) {
                Some(v) => {
                    let p224 = v[0].min(v[1]);
                    let p32 = v[2].min(v[3]);
                    (p32 / t32, p224 / t224, format!("{p32}"), format!("{p224}"))
                }
                None => (f64::NAN, f64::NAN, "-".into(), "-".into()),
            };
            for (s, tag) in [(s32, "32"), (s224, "224")] {
                if s.is_finite() {
                    logs.push(s.ln());
                    if s < worst.0 {
                        worst = (s, format!("{} s{sev} @{tag}", c.name()));
                    }
                }
            }
            println!("| {} | {sev} | {t32:.4} | {p32} | {s32:.0}× | {t224:.3} | {p224} | {s224:.0}× |", c.name());
        }
    }
    if !logs.is_empty() {
        let gm = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
        println!("\ngeometric mean speed-up over {} cells: {gm:.1}×; slowest: {:.1}× ({})", logs.len(), worst.0, worst.1);
    }
    let state_after = machine_state();
    println!(
        "machine state: core clock {:.2} / {:.2} GHz (dependent adds), throughput {:.1} / {:.1} adds per ns (independent adds), before / after",
        state_before.0, state_after.0, state_before.1, state_after.1
    );
}
