// Shared body of the train_speed benches (included, so each bench binary picks its allocator).
use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rws_nn::ops;
use std::time::Instant;

const EPS: f64 = 1e-5;

struct Net {
    convs: Vec<(Var, Var, Var, Var)>, // weight, bias, bn gamma, bn beta
    running: Vec<(Tensor, Tensor)>,   // bn running mean / var (eval)
    fcs: Vec<(Var, Var)>,
    fast: bool,
    /// 3: one conv+BN+ReLU(+pool) op; 2: one conv+BN+ReLU op, separate pool op; 1: conv op then
    /// BN+ReLU op; 0: BN in candle tensor ops.
    fused_bn: u8,
}

fn uniform(rng: &mut ChaCha8Rng, shape: &[usize], bound: f32) -> Var {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.gen_range(-bound..bound)).collect();
    Var::from_vec(v, shape, &Device::Cpu).unwrap()
}

impl Net {
    fn new(fast: bool, fused_bn: u8) -> Net {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut convs = Vec::new();
        let mut running = Vec::new();
        for (i, o) in [(1, 32), (32, 32), (32, 64), (64, 64)] {
            let bound = 1.0 / ((i * 9) as f32).sqrt();
            let w = uniform(&mut rng, &[o, i, 3, 3], bound);
            let b = uniform(&mut rng, &[o], bound);
            let g = Var::ones(o, DType::F32, &Device::Cpu).unwrap();
            let be = Var::zeros(o, DType::F32, &Device::Cpu).unwrap();
            convs.push((w, b, g, be));
            running.push((Tensor::zeros(o, DType::F32, &Device::Cpu).unwrap(), Tensor::ones(o, DType::F32, &Device::Cpu).unwrap()));
        }
        let mut fcs = Vec::new();
        for (i, o) in [(3136, 128), (128, 10)] {
            let bound = 1.0 / (i as f32).sqrt();
            fcs.push((uniform(&mut rng, &[o, i], bound), uniform(&mut rng, &[o], bound)));
        }
        Net { convs, running, fcs, fast, fused_bn }
    }

    fn vars(&self) -> Vec<&Var> {
        let mut v = Vec::new();
        for (a, b, c, d) in &self.convs {
            v.extend([a, b, c, d]);
        }
        for (a, b) in &self.fcs {
            v.extend([a, b]);
        }
        v
    }

    fn forward(&mut self, x: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        for (l, (w, b, g, be)) in self.convs.iter().enumerate() {
            if train {
                // 3×3 convs with padding 1: the BN statistics count the input's H×W.
                let cnt = (x.dim(0)? * x.dim(2)? * x.dim(3)?) as f64;
                let pool = if l % 2 == 1 { 2 } else { 0 };
                if self.fused_bn == 3 {
                    // conv + BN + ReLU (+ max-pool) as one op.
                    let (y, m, v) = ops::conv2d_bn_relu_pool_train(&x, w, Some(b), g, be, 1, 1, EPS, pool)?;
                    let (rm, rv) = &mut self.running[l];
                    *rm = ((&*rm * 0.9)? + (m * 0.1)?)?;
                    *rv = ((&*rv * 0.9)? + (v * (0.1 * cnt / (cnt - 1.0)))?)?;
                    x = y;
                    continue;
                }
                let (y, m, v) = if self.fused_bn == 2 {
                    ops::conv2d_bn_relu_train(&x, w, Some(b), g, be, 1, 1, EPS)?
                } else {
                    let y = if self.fast { ops::conv2d(&x, w, Some(b), 1, 1)? } else { ops::conv2d_candle(&x, w, Some(b), 1, 1)? };
                    if self.fused_bn == 1 {
                        ops::batch_norm_train(&y, g, be, EPS, true)?
                    } else {
                        ops::batch_norm_train_candle(&y, g, be, EPS, true)?
                    }
                };
                let (rm, rv) = &mut self.running[l];
                *rm = ((&*rm * 0.9)? + (m * 0.1)?)?;
                *rv = ((&*rv * 0.9)? + (v * (0.1 * cnt / (cnt - 1.0)))?)?;
                x = y;
            } else {
                // Eval: BatchNorm folded into the conv, as rws-nn's models do.
                let (rm, rv) = &self.running[l];
                let scale = g.as_tensor().broadcast_div(&(rv + EPS)?.sqrt()?)?;
                let o = scale.dim(0)?;
                let wf = w.as_tensor().broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?;
                let bf = ((b.as_tensor() - rm)? * &scale)?.add(be.as_tensor())?;
                if self.fast {
                    // conv + ReLU (+ pool) in one inference op; nothing is tracked in eval.
                    let pool = if l % 2 == 1 { 2 } else { 0 };
                    x = ops::conv2d_relu_pool(&x, &wf.detach(), Some(&bf.detach()), 1, 1, pool)?;
                    continue;
                }
                x = ops::conv2d_candle(&x, &wf, Some(&bf), 1, 1)?.relu()?;
            }
            if l % 2 == 1 {
                x = if self.fast { ops::max_pool2d(&x, 2)? } else { ops::max_pool2d_candle(&x, 2)? };
            }
        }
        let mut x = x.flatten_from(1)?;
        for (i, (w, b)) in self.fcs.iter().enumerate() {
            x = x.matmul(&w.as_tensor().t()?)?.broadcast_add(b.as_tensor())?;
            if i == 0 {
                x = x.relu()?;
            }
        }
        Ok(x)
    }
}

struct Sgd {
    mom: Vec<Option<Tensor>>,
}

impl Sgd {
    fn step(&mut self, vars: &[&Var], grads: &candle_core::backprop::GradStore, lr: f64) -> candle_core::Result<()> {
        for (i, v) in vars.iter().enumerate() {
            ops::sgd_step(v, grads.get(v).expect("gradient"), &mut self.mom[i], lr, 0.9, 5e-4, false)?;
        }
        Ok(())
    }
}

/// Process CPU seconds (user + system) from /proc: on a machine shared with other jobs, images
/// per CPU-second is steadier than wall-clock throughput.
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0
}

fn profiling() -> bool {
    std::env::var("RWS_PROFILE").is_ok_and(|v| v == "1")
}

fn batch(rng: &mut ChaCha8Rng, bs: usize) -> (Tensor, Tensor) {
    let x: Vec<f32> = (0..bs * 784).map(|_| rng.gen::<f32>()).collect();
    let y: Vec<u32> = (0..bs).map(|_| rng.gen_range(0..10)).collect();
    (Tensor::from_vec(x, (bs, 1, 28, 28), &Device::Cpu).unwrap(), Tensor::from_vec(y, bs, &Device::Cpu).unwrap())
}

fn run(fast: bool, fused_bn: u8, batches: usize, bs: usize) -> candle_core::Result<[f64; 4]> {
    let mut net = Net::new(fast, fused_bn);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let data: Vec<_> = (0..batches.min(8)).map(|_| batch(&mut rng, bs)).collect();
    let mut opt = Sgd { mom: vec![None; net.vars().len()] };
    let warm = 2;
    let (mut t0, mut c0) = (Instant::now(), 0.0);
    let mut last_loss = 0f32;
    let mut phase = [0f64; 3];
    for i in 0..warm + batches {
        if i == warm {
            (t0, c0) = (Instant::now(), cpu_seconds());
        }
        let (x, y) = &data[i % data.len()];
        let t = Instant::now();
        let logits = net.forward(x, true)?;
        let loss = candle_nn::loss::cross_entropy(&logits, y)?;
        phase[0] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let grads = loss.backward()?;
        phase[1] += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let vars: Vec<Var> = net.vars().into_iter().cloned().collect();
        opt.step(&vars.iter().collect::<Vec<_>>(), &grads, 0.01)?;
        last_loss = loss.to_scalar::<f32>()?;
        phase[2] += t.elapsed().as_secs_f64();
        if i + 1 == warm {
            phase = [0.0; 3];
            let _ = ops::take_profile();
        }
    }
    if profiling() {
        eprintln!("train per batch: forward {:.1} ms, backward {:.1} ms, step {:.1} ms", phase[0] * 1e3 / batches as f64, phase[1] * 1e3 / batches as f64, phase[2] * 1e3 / batches as f64);
        for (n, t, c, cpu) in ops::take_profile() {
            eprintln!("  {n:20} {:8.2} ms/batch, CPU {:8.2} ms/batch ({c} calls)", t * 1e3 / batches as f64, cpu * 1e3 / batches as f64);
        }
    }
    let train = (batches * bs) as f64 / t0.elapsed().as_secs_f64();
    let train_cpu = (batches * bs) as f64 / (cpu_seconds() - c0);
    assert!(last_loss.is_finite());
    for i in 0..warm + batches {
        if i == warm {
            (t0, c0) = (Instant::now(), cpu_seconds());
            let _ = ops::take_profile();
        }
        let (x, _) = &data[i % data.len()];
        let logits = net.forward(x, false)?;
        let _ = logits.argmax(1)?.to_vec1::<u32>()?;
    }
    let eval = (batches * bs) as f64 / t0.elapsed().as_secs_f64();
    if profiling() {
        eprintln!("eval per batch: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3 / batches as f64);
        for (n, t, c, cpu) in ops::take_profile() {
            eprintln!("  {n:20} {:8.2} ms/batch, CPU {:8.2} ms/batch ({c} calls)", t * 1e3 / batches as f64, cpu * 1e3 / batches as f64);
        }
    }
    let eval_cpu = (batches * bs) as f64 / (cpu_seconds() - c0);
    Ok([train, eval, train_cpu, eval_cpu])
}

fn bench_main() -> candle_core::Result<()> {
    // As the `rws` binary should: candle's pool spins briefly (RWS_CANDLE_SPIN=default: 25 000 rounds).
    if std::env::var("RWS_CANDLE_SPIN").map_or(true, |v| v != "default") {
        rws_nn::configure_cpu_threads();
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let which = args.first().map(String::as_str).unwrap_or("both");
    let batches: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let bs: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    println!("threads {} batch {bs} batches {batches}", rayon::current_num_threads());
    // fused-pool: conv+BN+ReLU+pool op (what rws-nn's models run); fused: conv+BN+ReLU op, pool
    // op; fast: conv op, BN+ReLU op; fast-nobn: conv op, BN in candle ops.
    let rows = [("fused-pool", true, 3), ("fused", true, 2), ("fast", true, 1), ("fast-nobn", true, 0), ("candle", false, 0)];
    for (name, fast, fused_bn) in rows {
        if which == name || (which == "both" && (name == "fused-pool" || name == "candle")) || which == "all" {
            // On a rayon worker (as rws-nn's train/evaluate run): parallel loops then start on
            // this thread and need one wake-up, not a hand-off to two sleeping workers and back.
            let [tr, ev, trc, evc] = if std::env::var("RWS_ON_MAIN").is_ok() {
                run(fast, fused_bn, batches, bs)?
            } else {
                rayon::scope(|_| run(fast, fused_bn, batches, bs))?
            };
            println!("{name:10} train {tr:8.1} img/s   eval {ev:8.1} img/s   (per CPU-second: train {trc:8.1}, eval {evc:8.1})");
        }
    }
    Ok(())
}
