//! Fused training-mode BatchNorm(+ReLU) against the same computation in candle's tensor ops,
//! and identical bytes with 1 and 2 rayon threads.
use candle_core::Var;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rws_nn::ops;

mod common;
use common::{max_rel_diff, rand_t};

#[test]
fn batch_norm_matches_candle_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(n, c, h, w, relu) in &[(4, 3, 5, 7, false), (7, 5, 3, 3, true), (1, 2, 6, 1, true), (16, 8, 4, 4, false)] {
        // An offset mean and non-unit spread so the normalisation has something to do.
        let x = Var::from_tensor(&rand_t(&mut rng, &[n, c, h, w], 1.0, 4.0)).unwrap();
        let g = Var::from_tensor(&rand_t(&mut rng, &[c], 0.5, 1.5)).unwrap();
        let b = Var::from_tensor(&rand_t(&mut rng, &[c], -0.5, 0.5)).unwrap();
        let (y1, m1, v1) = ops::batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, relu).unwrap();
        let (y2, m2, v2) = ops::batch_norm_train_candle(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, relu).unwrap();
        let what = format!("{n}x{c}x{h}x{w} relu {relu}");
        assert!(max_rel_diff(&y1, &y2) < 1e-4, "forward {what}: {}", max_rel_diff(&y1, &y2));
        assert!(max_rel_diff(&m1, &m2) < 1e-5, "mean {what}");
        assert!(max_rel_diff(&v1, &v2) < 1e-4, "var {what}");
        let r = rand_t(&mut rng, y1.dims(), -1.0, 1.0);
        let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("input", &x), ("weight", &g), ("bias", &b)] {
            let d = max_rel_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(d < 1e-3, "{name} grad {what}: {d}");
        }
    }
}

fn run_bytes() -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let x = Var::from_tensor(&rand_t(&mut rng, &[33, 6, 9, 9], -1.0, 2.0)).unwrap();
    let g = Var::from_tensor(&rand_t(&mut rng, &[6], 0.5, 1.5)).unwrap();
    let b = Var::from_tensor(&rand_t(&mut rng, &[6], -0.5, 0.5)).unwrap();
    let (y, m, v) = ops::batch_norm_train(x.as_tensor(), g.as_tensor(), b.as_tensor(), 1e-5, true).unwrap();
    let r = rand_t(&mut rng, y.dims(), -1.0, 1.0);
    let gr = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = Vec::new();
    for t in [&y, &m, &v, gr.get(&x).unwrap(), gr.get(&g).unwrap(), gr.get(&b).unwrap()] {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        out.extend(v.iter().map(|f| f.to_bits()));
    }
    out
}

#[test]
fn batch_norm_is_identical_with_one_and_two_threads() {
    let a = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run_bytes);
    let b = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(run_bytes);
    assert!(a == b, "results differ between thread counts");
}

#[test]
fn fused_conv_bn_relu_matches_separate_ops() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // The last four run 3×3 stride-1 convs with ≥ 8 channels each way: Winograd forward and
    // input gradient (padding 0–2, odd sizes).
    for &(n, c, h, w, o, stride, pad, bias) in &[
        (3, 2, 7, 7, 4, 1, 1, true),
        (5, 3, 9, 9, 6, 2, 1, false),
        (2, 4, 5, 6, 3, 1, 0, true),
        (4, 8, 10, 10, 8, 1, 1, true),
        (3, 9, 7, 9, 12, 1, 1, false),
        (2, 8, 6, 6, 8, 1, 0, true),
        (2, 8, 5, 7, 10, 1, 2, true),
    ] {
        let x = Var::from_tensor(&rand_t(&mut rng, &[n, c, h, w], -1.0, 1.0)).unwrap();
        let wt = Var::from_tensor(&rand_t(&mut rng, &[o, c, 3, 3], -0.5, 0.5)).unwrap();
        let b = Var::from_tensor(&rand_t(&mut rng, &[o], -0.5, 0.5)).unwrap();
        let g = Var::from_tensor(&rand_t(&mut rng, &[o], 0.5, 1.5)).unwrap();
        let be = Var::from_tensor(&rand_t(&mut rng, &[o], -0.5, 0.5)).unwrap();
        let bias = bias.then(|| b.as_tensor());
        let (y1, m1, v1) = ops::conv2d_bn_relu_train(x.as_tensor(), wt.as_tensor(), bias, g.as_tensor(), be.as_tensor(), stride, pad, 1e-5).unwrap();
        let z = ops::conv2d_candle(x.as_tensor(), wt.as_tensor(), bias, stride, pad).unwrap();
        let (y2, m2, v2) = ops::batch_norm_train_candle(&z, g.as_tensor(), be.as_tensor(), 1e-5, true).unwrap();
        let what = format!("{n}x{c}x{h}x{w} o{o} s{stride} p{pad}");
        assert!(max_rel_diff(&y1, &y2) < 1e-4, "forward {what}");
        assert!(max_rel_diff(&m1, &m2) < 1e-4 && max_rel_diff(&v1, &v2) < 1e-4, "stats {what}");
        let r = rand_t(&mut rng, y1.dims(), -1.0, 1.0);
        let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        if bias.is_some() {
            // BatchNorm removes the channel mean, so the bias gradient is zero up to rounding.
            let (a, e) = (g1.get(&b).unwrap(), g2.get(&b).unwrap());
            let d: f32 = (a - e).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
            assert!(d < 1e-4, "bias grad {what}: {d}");
        }
        for (name, v) in [("input", &x), ("weight", &wt), ("gamma", &g), ("beta", &be)] {
            let d = max_rel_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(d < 1e-3, "{name} grad {what}: {d}");
        }
    }
}

fn fused_bytes() -> Vec<u32> {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let x = Var::from_tensor(&rand_t(&mut rng, &[21, 3, 10, 10], -1.0, 1.0)).unwrap();
    let w = Var::from_tensor(&rand_t(&mut rng, &[5, 3, 3, 3], -0.5, 0.5)).unwrap();
    let g = Var::from_tensor(&rand_t(&mut rng, &[5], 0.5, 1.5)).unwrap();
    let be = Var::from_tensor(&rand_t(&mut rng, &[5], -0.5, 0.5)).unwrap();
    let (y, _, _) = ops::conv2d_bn_relu_train(x.as_tensor(), w.as_tensor(), None, g.as_tensor(), be.as_tensor(), 1, 1, 1e-5).unwrap();
    let r = rand_t(&mut rng, y.dims(), -1.0, 1.0);
    let gr = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let (yp, _, _) = ops::conv2d_bn_relu_pool_train(x.as_tensor(), w.as_tensor(), None, g.as_tensor(), be.as_tensor(), 1, 1, 1e-5, 2).unwrap();
    let rp = rand_t(&mut rng, yp.dims(), -1.0, 1.0);
    let gp = (&yp * &rp).unwrap().sum_all().unwrap().backward().unwrap();
    // 8 channels in and out: the Winograd forward and input gradient, several image groups.
    let x8 = Var::from_tensor(&rand_t(&mut rng, &[19, 8, 10, 10], -1.0, 1.0)).unwrap();
    let w8 = Var::from_tensor(&rand_t(&mut rng, &[8, 8, 3, 3], -0.5, 0.5)).unwrap();
    let g8 = Var::from_tensor(&rand_t(&mut rng, &[8], 0.5, 1.5)).unwrap();
    let b8 = Var::from_tensor(&rand_t(&mut rng, &[8], -0.5, 0.5)).unwrap();
    let (y8, _, _) = ops::conv2d_bn_relu_pool_train(x8.as_tensor(), w8.as_tensor(), None, g8.as_tensor(), b8.as_tensor(), 1, 1, 1e-5, 2).unwrap();
    let r8 = rand_t(&mut rng, y8.dims(), -1.0, 1.0);
    let g8r = (&y8 * &r8).unwrap().sum_all().unwrap().backward().unwrap();
    let mut out = Vec::new();
    for t in [&y, gr.get(&x).unwrap(), gr.get(&w).unwrap(), gr.get(&g).unwrap(), gr.get(&be).unwrap(), &yp, gp.get(&x).unwrap(), gp.get(&w).unwrap(), &y8, g8r.get(&x8).unwrap(), g8r.get(&w8).unwrap()] {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        out.extend(v.iter().map(|f| f.to_bits()));
    }
    out
}

#[test]
fn fused_conv_bn_relu_is_identical_with_one_and_two_threads() {
    let a = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(fused_bytes);
    let b = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap().install(fused_bytes);
    assert!(a == b, "results differ between thread counts");
}

/// conv → BN → ReLU → max-pool in one op against the same block followed by the stand-alone
/// pooling op: output, batch statistics (of the unpooled activation) and every gradient agree
/// bit for bit, since both run the same arithmetic; odd sizes exercise floor-mode pooling.
#[test]
fn fused_block_with_pooling_matches_block_then_pool() {
    let mut rng = ChaCha8Rng::seed_from_u64(15);
    for &(n, c, h, w, o, pool) in &[(3, 2, 8, 8, 4, 2), (2, 3, 9, 7, 5, 2), (2, 2, 9, 9, 3, 3), (3, 8, 8, 8, 8, 2), (2, 8, 9, 7, 9, 2)] {
        let x = Var::from_tensor(&rand_t(&mut rng, &[n, c, h, w], -1.0, 1.0)).unwrap();
        let wt = Var::from_tensor(&rand_t(&mut rng, &[o, c, 3, 3], -0.5, 0.5)).unwrap();
        let b = Var::from_tensor(&rand_t(&mut rng, &[o], -0.5, 0.5)).unwrap();
        let g = Var::from_tensor(&rand_t(&mut rng, &[o], 0.5, 1.5)).unwrap();
        let be = Var::from_tensor(&rand_t(&mut rng, &[o], -0.5, 0.5)).unwrap();
        let (t, tb, tg, tbe) = (x.as_tensor(), Some(b.as_tensor()), g.as_tensor(), be.as_tensor());
        let (y1, m1, v1) = ops::conv2d_bn_relu_pool_train(t, wt.as_tensor(), tb, tg, tbe, 1, 1, 1e-5, pool).unwrap();
        let (z, m2, v2) = ops::conv2d_bn_relu_train(t, wt.as_tensor(), tb, tg, tbe, 1, 1, 1e-5).unwrap();
        let y2 = ops::max_pool2d(&z, pool).unwrap();
        let what = format!("{n}x{c}x{h}x{w} o{o} pool {pool}");
        assert_eq!(y1.dims(), y2.dims(), "{what}");
        assert_eq!(max_rel_diff(&y1, &y2), 0.0, "forward {what}");
        assert_eq!((max_rel_diff(&m1, &m2), max_rel_diff(&v1, &v2)), (0.0, 0.0), "stats {what}");
        let r = rand_t(&mut rng, y1.dims(), -1.0, 1.0);
        let g1 = (&y1 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (&y2 * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, v) in [("input", &x), ("weight", &wt), ("bias", &b), ("gamma", &g), ("beta", &be)] {
            let d = max_rel_diff(g1.get(v).unwrap(), g2.get(v).unwrap());
            assert!(d < 1e-6, "{name} grad {what}: {d}");
        }
    }
}
