//! The fast custom ops against candle's own ops: forward values, gradients, a finite-difference
//! check, and identical bytes with 1 and 2 rayon threads.
use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rws_nn::ops;

mod common;
use common::max_rel_diff;

fn rand_t(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    common::rand_t(rng, shape, -1.0, 1.0)
}

struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    o: usize,
    k: usize,
    stride: usize,
    pad: usize,
    bias: bool,
}

fn check_conv(cs: &Case, rng: &mut ChaCha8Rng) {
    let x = Var::from_tensor(&rand_t(rng, &[cs.n, cs.c, cs.h, cs.w])).unwrap();
    let w = Var::from_tensor(&rand_t(rng, &[cs.o, cs.c, cs.k, cs.k])).unwrap();
    let b = Var::from_tensor(&rand_t(rng, &[cs.o])).unwrap();
    let bias = cs.bias.then(|| b.as_tensor());
    let y1 = ops::conv2d(x.as_tensor(), w.as_tensor(), bias, cs.stride, cs.pad).unwrap();
    let y2 = ops::conv2d_candle(x.as_tensor(), w.as_tensor(), bias, cs.stride, cs.pad).unwrap();
    let what = format!("n{} c{} {}x{} o{} k{} s{} p{} bias {}", cs.n, cs.c, cs.h, cs.w, cs.o, cs.k, cs.stride, cs.pad, cs.bias);
    assert!(max_rel_diff(&y1, &y2) < 1e-5, "forward {what}: {}", max_rel_diff(&y1, &y2));
    // A non-uniform upstream gradient so every output position matters.
    let r = rand_t(rng, y1.dims());
    let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
    for (name, v) in [("input", &x), ("weight", &w)] {
        let (a, e) = (g1.get(v).unwrap(), g2.get(v).unwrap());
        assert!(max_rel_diff(a, e) < 1e-5, "{name} grad {what}: {}", max_rel_diff(a, e));
    }
    if cs.bias {
        let (a, e) = (g1.get(&b).unwrap(), g2.get(&b).unwrap());
        assert!(max_rel_diff(a, e) < 1e-5, "bias grad {what}");
    }
}

#[test]
fn conv_matches_candle_on_random_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let fixed = [
        Case { n: 2, c: 3, h: 7, w: 9, o: 4, k: 3, stride: 1, pad: 1, bias: true },
        Case { n: 3, c: 2, h: 9, w: 7, o: 5, k: 3, stride: 2, pad: 1, bias: false },
        Case { n: 1, c: 4, h: 5, w: 5, o: 3, k: 1, stride: 1, pad: 0, bias: true },
        Case { n: 2, c: 4, h: 7, w: 5, o: 3, k: 1, stride: 2, pad: 0, bias: false },
        Case { n: 17, c: 1, h: 8, w: 8, o: 6, k: 3, stride: 1, pad: 0, bias: true },
        Case { n: 2, c: 3, h: 11, w: 9, o: 2, k: 7, stride: 2, pad: 3, bias: true },
        // 3×3 stride 1 with ≥ 8 channels each way: Winograd forward, input and weight gradients.
        Case { n: 5, c: 8, h: 10, w: 10, o: 8, k: 3, stride: 1, pad: 1, bias: true },
        Case { n: 3, c: 9, h: 7, w: 9, o: 12, k: 3, stride: 1, pad: 1, bias: false },
        Case { n: 2, c: 8, h: 6, w: 5, o: 8, k: 3, stride: 1, pad: 0, bias: true },
        Case { n: 11, c: 8, h: 5, w: 5, o: 10, k: 3, stride: 1, pad: 2, bias: true },
    ];
    for cs in &fixed {
        check_conv(cs, &mut rng);
    }
    for _ in 0..12 {
        let k = [1, 3, 5][rng.gen_range(0..3)];
        let pad = rng.gen_range(0..2usize);
        let stride = rng.gen_range(1..3);
        // candle's own input gradient (conv-transpose) has the wrong shape when the last
        // stride step does not land on the border, so the reference only covers shapes where
        // it does; the finite-difference test covers the other kind.
        let fit = |lo: usize, rng: &mut ChaCha8Rng| loop {
            let v = rng.gen_range(lo..14);
            if (v + 2 * pad - k) % stride == 0 {
                break v;
            }
        };
        let (h, w) = (fit(k, &mut rng), fit(k, &mut rng));
        let cs = Case {
            n: rng.gen_range(1..12),
            c: rng.gen_range(1..6),
            h,
            w,
            o: rng.gen_range(1..7),
            k,
            stride,
            pad,
            bias: rng.gen(),
        };
        check_conv(&cs, &mut rng);
    }
}

#[test]
fn conv_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let x0: Vec<f64> = (0..2 * 2 * 6 * 6).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let w0: Vec<f64> = (0..3 * 2 * 3 * 3).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let r: Vec<f64> = (0..2 * 3 * 3 * 3).map(|_| rng.gen_range(-1.0..1.0)).collect();
    // Loss in f64 from the f32 op, so the central difference is limited by f32 rounding only.
    let loss = |x: &[f64], w: &[f64]| -> f64 {
        let xt = Tensor::from_vec(x.iter().map(|&v| v as f32).collect::<Vec<_>>(), (2, 2, 6, 6), &Device::Cpu).unwrap();
        let wt = Tensor::from_vec(w.iter().map(|&v| v as f32).collect::<Vec<_>>(), (3, 2, 3, 3), &Device::Cpu).unwrap();
        let y: Vec<f32> = ops::conv2d(&xt, &wt, None, 2, 1).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        y.iter().zip(&r).map(|(a, b)| *a as f64 * b).sum()
    };
    let xv = Var::from_vec(x0.iter().map(|&v| v as f32).collect::<Vec<_>>(), (2, 2, 6, 6), &Device::Cpu).unwrap();
    let wv = Var::from_vec(w0.iter().map(|&v| v as f32).collect::<Vec<_>>(), (3, 2, 3, 3), &Device::Cpu).unwrap();
    let rt = Tensor::from_vec(r.iter().map(|&v| v as f32).collect::<Vec<_>>(), (2, 3, 3, 3), &Device::Cpu).unwrap();
    let y = ops::conv2d(xv.as_tensor(), wv.as_tensor(), None, 2, 1).unwrap();
    let g = (y * rt).unwrap().sum_all().unwrap().backward().unwrap();
    let gx: Vec<f32> = g.get(&xv).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let gw: Vec<f32> = g.get(&wv).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let h = 1e-2;
    for i in (0..x0.len()).step_by(7) {
        let (mut a, mut b) = (x0.clone(), x0.clone());
        a[i] += h;
        b[i] -= h;
        let fd = (loss(&a, &w0) - loss(&b, &w0)) / (2.0 * h);
        assert!((fd - gx[i] as f64).abs() < 1e-3, "dx[{i}]: fd {fd} vs {}", gx[i]);
    }
    for i in 0..w0.len() {
        let (mut a, mut b) = (w0.clone(), w0.clone());
        a[i] += h;
        b[i] -= h;
        let fd = (loss(&x0, &a) - loss(&x0, &b)) / (2.0 * h);
        assert!((fd - gw[i] as f64).abs() < 1e-3, "dw[{i}]: fd {fd} vs {}", gw[i]);
    }
}

#[test]
fn conv_skips_input_gradient_of_plain_tensor() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let x = rand_t(&mut rng, &[2, 3, 6, 6]);
    let w = Var::from_tensor(&rand_t(&mut rng, &[4, 3, 3, 3])).unwrap();
    let g = ops::conv2d(&x, w.as_tensor(), None, 1, 1).unwrap().sum_all().unwrap().backward().unwrap();
    assert!(g.get(&x).is_none());
    assert!(g.get(&w).is_some());
}

/// candle's max-pool backward scales the gradient by 1/k² (it multiplies by the window's mean
/// of the max mask), so the reference gradient is PyTorch's: the upstream gradient routed to
/// each window's maximum (random inputs have no ties).
#[test]
fn max_pool_matches_candle() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    for &(n, c, h, w, k) in &[(2, 3, 8, 8, 2), (3, 2, 7, 9, 2), (1, 4, 9, 9, 3), (5, 1, 4, 6, 2)] {
        let x = Var::from_tensor(&rand_t(&mut rng, &[n, c, h, w])).unwrap();
        let y1 = ops::max_pool2d(x.as_tensor(), k).unwrap();
        let y2 = ops::max_pool2d_candle(x.as_tensor(), k).unwrap();
        assert_eq!(y1.dims(), y2.dims());
        assert_eq!(max_rel_diff(&y1, &y2), 0.0, "forward {n} {c} {h}x{w} k{k}");
        let r = rand_t(&mut rng, y1.dims());
        let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let up = |t: &Tensor| {
            let full = t.upsample_nearest2d(h / k * k, w / k * k).unwrap();
            full.pad_with_zeros(2, 0, h % k).unwrap().pad_with_zeros(3, 0, w % k).unwrap()
        };
        let mask = x.as_tensor().eq(&up(&y2)).unwrap().to_dtype(candle_core::DType::F32).unwrap();
        let expect = (up(&r) * mask).unwrap();
        let d = max_rel_diff(g1.get(&x).unwrap(), &expect);
        assert_eq!(d, 0.0, "backward {n} {c} {h}x{w} k{k}");
    }
}

/// Forward output and all gradients of conv → pool as raw bytes.
fn run_bytes() -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x = Var::from_tensor(&rand_t(&mut rng, &[37, 3, 12, 12])).unwrap();
    let w = Var::from_tensor(&rand_t(&mut rng, &[8, 3, 3, 3])).unwrap();
    let b = Var::from_tensor(&rand_t(&mut rng, &[8])).unwrap();
    let y = ops::conv2d(x.as_tensor(), w.as_tensor(), Some(b.as_tensor()), 1, 1).unwrap();
    let p = ops::max_pool2d(&y, 2).unwrap();
    let r = rand_t(&mut rng, p.dims());
    let g = (&p * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = Vec::new();
    // The inference block (Winograd path: 3×3, ≥ 8 input channels) on a batch that splits
    // into several image groups.
    let xi = rand_t(&mut rng, &[23, 8, 10, 10]);
    let wi = rand_t(&mut rng, &[6, 8, 3, 3]);
    let bi = rand_t(&mut rng, &[6]);
    let yi = ops::conv2d_relu_pool(&xi, &wi, Some(&bi), 1, 1, 2).unwrap();
    for t in [&p, g.get(&x).unwrap(), g.get(&w).unwrap(), g.get(&b).unwrap(), &yi] {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        out.extend(v.iter().map(|f| f.to_bits()));
    }
    out
}

#[test]
fn ops_are_identical_with_one_and_two_threads() {
    let p1 = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let p2 = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let p3 = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let a = p1.install(run_bytes);
    let b = p2.install(run_bytes);
    let c = p3.install(run_bytes);
    assert!(a == b && b == c, "results differ between thread counts");
}

/// The inference block (conv → ReLU → pool in one op) against candle's conv, relu and max-pool,
/// on odd sizes (floor-mode pooling drops the last row/column), with and without bias.
#[test]
fn conv_relu_pool_matches_candle_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for (n, c, h, w, o, k, pad, pool, bias) in
        [(3, 2, 9, 7, 5, 3, 1, 2, true), (2, 3, 8, 8, 4, 3, 1, 0, true), (2, 1, 11, 10, 3, 3, 0, 3, false), (1, 4, 6, 6, 6, 1, 0, 2, true)]
            .into_iter()
            // 3×3 with ≥ 8 input channels: the Winograd path (even and odd sizes, padding 0–2,
            // pooled and not, several image groups).
            .chain([
                (5, 8, 28, 28, 16, 3, 1, 2, true),
                (3, 16, 7, 9, 8, 3, 1, 0, true),
                (4, 8, 7, 7, 5, 3, 1, 2, false),
                (2, 9, 6, 5, 3, 3, 0, 0, true),
                (2, 8, 5, 6, 4, 3, 2, 2, true),
                (9, 12, 3, 3, 4, 3, 1, 0, true),
                (40, 8, 14, 14, 8, 3, 1, 2, true),
            ])
    {
        let x = rand_t(&mut rng, &[n, c, h, w]);
        let wt = rand_t(&mut rng, &[o, c, k, k]);
        let b = rand_t(&mut rng, &[o]);
        let bias = bias.then_some(&b);
        let got = ops::conv2d_relu_pool(&x, &wt, bias, 1, pad, pool).unwrap();
        let mut want = ops::conv2d_candle(&x, &wt, bias, 1, pad).unwrap().relu().unwrap();
        if pool >= 2 {
            want = ops::max_pool2d_candle(&want, pool).unwrap();
        }
        assert_eq!(got.dims(), want.dims());
        assert!(max_rel_diff(&got, &want) < 1e-5, "n{n} c{c} {h}x{w} o{o} k{k} pool {pool}: {}", max_rel_diff(&got, &want));
    }
}
