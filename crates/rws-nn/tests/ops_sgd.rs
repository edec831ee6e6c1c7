//! The in-place SGD step against PyTorch's update rule written out on plain vectors, over several
//! steps (the first one seeds the momentum buffer with the gradient), with and without Nesterov.
use candle_core::{Device, Tensor, Var};
use rws_nn::ops;

fn reference(p: &mut [f32], buf: &mut Option<Vec<f32>>, g: &[f32], lr: f32, mu: f32, wd: f32, nesterov: bool) {
    let gd: Vec<f32> = g.iter().zip(p.iter()).map(|(g, p)| g + wd * p).collect();
    let b: Vec<f32> = match buf.take() {
        None => gd.clone(),
        Some(b) => b.iter().zip(&gd).map(|(b, g)| mu * b + g).collect(),
    };
    for i in 0..p.len() {
        let d = if nesterov { gd[i] + mu * b[i] } else { b[i] };
        p[i] -= lr * d;
    }
    *buf = Some(b);
}

#[test]
fn sgd_step_follows_pytorch_rule() {
    for nesterov in [false, true] {
        let p0: Vec<f32> = (0..37).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
        let var = Var::from_vec(p0.clone(), (37,), &Device::Cpu).unwrap();
        let (mut rp, mut rbuf) = (p0.clone(), None);
        let mut buf = None;
        for step in 0..4 {
            let g: Vec<f32> = (0..37).map(|i| ((i * 3 + step * 5) % 13) as f32 * 0.05 - 0.3).collect();
            let gt = Tensor::from_vec(g.clone(), 37, &Device::Cpu).unwrap();
            ops::sgd_step(&var, &gt, &mut buf, 0.1, 0.9, 5e-4, nesterov).unwrap();
            reference(&mut rp, &mut rbuf, &g, 0.1, 0.9, 5e-4, nesterov);
            let got = var.as_tensor().to_vec1::<f32>().unwrap();
            for (a, b) in got.iter().zip(&rp) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "nesterov {nesterov} step {step}: {a} vs {b}");
            }
            let gb = buf.as_ref().unwrap().to_vec1::<f32>().unwrap();
            for (a, b) in gb.iter().zip(rbuf.as_ref().unwrap()) {
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "momentum buffer, step {step}");
            }
        }
    }
}

#[test]
fn sgd_step_leaves_gradient_untouched_and_matches_f64_fallback() {
    let p0: Vec<f32> = (0..10).map(|i| i as f32 * 0.1 - 0.5).collect();
    let g: Vec<f32> = (0..10).map(|i| 0.2 - i as f32 * 0.03).collect();
    let v32 = Var::from_vec(p0.clone(), 10, &Device::Cpu).unwrap();
    let v64 = Var::from_tensor(&Tensor::from_vec(p0, 10, &Device::Cpu).unwrap().to_dtype(candle_core::DType::F64).unwrap()).unwrap();
    let g32 = Tensor::from_vec(g.clone(), 10, &Device::Cpu).unwrap();
    let g64 = g32.to_dtype(candle_core::DType::F64).unwrap();
    let (mut b32, mut b64) = (None, None);
    for _ in 0..3 {
        ops::sgd_step(&v32, &g32, &mut b32, 0.05, 0.9, 1e-3, true).unwrap();
        ops::sgd_step(&v64, &g64, &mut b64, 0.05, 0.9, 1e-3, true).unwrap();
    }
    assert_eq!(g32.to_vec1::<f32>().unwrap(), g);
    let a = v32.as_tensor().to_vec1::<f32>().unwrap();
    let b = v64.as_tensor().to_vec1::<f64>().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((*x as f64 - y).abs() < 1e-6, "{x} vs {y}");
    }
}
