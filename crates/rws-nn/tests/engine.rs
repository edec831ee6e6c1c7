//! Model, checkpoint and training behaviour on tiny synthetic data (fast: a few hundred images).
use rand::{Rng, SeedableRng};
use rws_data::Dataset;
use rws_nn::{evaluate, read_checkpoint, train, Model, Schedule, TrainConfig};

/// 4 classes of 12×12 grey images: a bright 6×6 block in quadrant `label`, plus noise.
fn quadrants(n: usize, seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 144);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let l = (i % 4) as u16;
        let (qy, qx) = ((l / 2) as usize * 6, (l % 2) as usize * 6);
        for y in 0..12 {
            for x in 0..12 {
                let inside = (qy..qy + 6).contains(&y) && (qx..qx + 6).contains(&x);
                let base: i32 = if inside { 150 } else { 60 };
                images.push((base + rng.gen_range(-50..50)).clamp(0, 255) as u8);
            }
        }
        labels.push(l);
    }
    Dataset::new("quadrants", images, labels, 12, 12, 1, 4).unwrap()
}

fn cfg(epochs: usize) -> TrainConfig {
    TrainConfig { epochs, batch_size: 32, lr: 0.05, schedule: Schedule::Cosine, seed: 7, ..Default::default() }
}

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("rws-nn-test-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tiny_vgg_learns_and_roundtrips_through_safetensors() {
    let (tr, te) = (quadrants(256, 1), quadrants(128, 2));
    let mut m = Model::new("vgg-bn:8,M,16", 4, 1, 3).unwrap();
    let before = evaluate(&m, &te).unwrap();
    let r = train(&mut m, &tr, None, &cfg(4)).unwrap();
    let after = evaluate(&m, &te).unwrap();
    assert_eq!(r.epochs.len(), 4);
    assert!(after >= 90.0, "accuracy {after}% after training (before: {before}%)");

    let d = tmpdir("roundtrip");
    let p = d.join("m.safetensors");
    m.save(&p).unwrap();
    let m2 = Model::load(&p, None).unwrap();
    assert_eq!(m2.arch(), "vgg-bn:8,M,16");
    assert_eq!(m.tensors().unwrap(), m2.tensors().unwrap());
    assert_eq!(rws_nn::predict(&m, &te).unwrap(), rws_nn::predict(&m2, &te).unwrap());
    // BatchNorm counted the 4 epochs × 8 batches, stored as i64 as PyTorch expects.
    let ck = read_checkpoint(&p).unwrap();
    let nbt = &ck.tensors["features.1.num_batches_tracked"];
    assert_eq!(nbt.dtype(), candle_core::DType::I64);
    assert_eq!(nbt.to_scalar::<i64>().unwrap(), 32);
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn vgg_cfg_has_torchvision_names_and_shapes() {
    let m = Model::new("vgg-bn:8,M,16", 10, 3, 0).unwrap();
    let got: Vec<(String, Vec<usize>)> = m.tensors().unwrap().into_iter().map(|(n, s, _)| (n, s)).collect();
    let mut want: Vec<(String, Vec<usize>)> = vec![("normalize.mean".into(), vec![3]), ("normalize.std".into(), vec![3])];
    // torchvision Sequential: 0 conv, 1 bn, 2 relu, 3 maxpool, 4 conv, 5 bn, 6 relu.
    for (i, c, cin) in [(0, 8, 3), (4, 16, 8)] {
        want.push((format!("features.{i}.weight"), vec![c, cin, 3, 3]));
        want.push((format!("features.{i}.bias"), vec![c]));
        for s in ["weight", "bias", "running_mean", "running_var"] {
            want.push((format!("features.{}.{s}", i + 1), vec![c]));
        }
        want.push((format!("features.{}.num_batches_tracked", i + 1), vec![]));
    }
    want.push(("classifier.weight".into(), vec![10, 16]));
    want.push(("classifier.bias".into(), vec![10]));
    assert_eq!(got, want);
    // Without BN: conv, relu, pool, conv, relu → features.0 and features.3.
    let plain = Model::new("vgg:8,M,16", 10, 3, 0).unwrap();
    let names: Vec<String> = plain.params().iter().map(|p| p.name.clone()).collect();
    assert_eq!(names[2..6], ["features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"]);
}

#[test]
fn resnets_match_torchvision_parameter_counts() {
    // torchvision: resnet18 11,689,512 parameters / 122 state_dict entries; resnet50 25,557,032 / 320.
    for (arch, params, entries) in [("resnet18", 11_689_512, 122), ("resnet50", 25_557_032, 320)] {
        let m = Model::new(arch, 1000, 3, 0).unwrap();
        assert_eq!(m.num_parameters(), params, "{arch}");
        assert_eq!(m.params().len() - 2, entries, "{arch} (plus normalize.mean|std)");
    }
    // torchvision vgg16_bn: 138,365,992 parameters, classifier.0/.3/.6, last conv at features.40.
    let v = Model::new("vgg16_bn", 1000, 3, 0).unwrap();
    assert_eq!(v.num_parameters(), 138_365_992);
    let vn: Vec<&str> = v.params().iter().map(|p| p.name.as_str()).collect();
    for n in ["features.40.weight", "features.41.num_batches_tracked", "classifier.0.weight", "classifier.6.bias"] {
        assert!(vn.contains(&n), "{n} missing");
    }
    drop(v);
    let m = Model::new("resnet18", 10, 1, 0).unwrap();
    let names: Vec<&str> = m.params().iter().map(|p| p.name.as_str()).collect();
    for n in ["conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.running_var", "fc.bias"] {
        assert!(names.contains(&n), "{n} missing");
    }
    // A forward pass on a small batch gives logits of the right shape, also through the strided stem.
    let x = candle_core::Tensor::zeros((2, 1, 28, 28), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    assert_eq!(m.forward(&x, true, &mut rng).unwrap().dims(), &[2, 10]);
    assert_eq!(m.forward(&x, false, &mut rng).unwrap().dims(), &[2, 10]);
}

#[test]
fn training_is_reproducible_and_resume_continues_identically() {
    let tr = quadrants(96, 4);
    let d = tmpdir("resume");
    let run = || {
        let mut m = Model::new("vgg-bn:4,M,8", 4, 1, 11).unwrap();
        train(&mut m, &tr, None, &cfg(3)).unwrap();
        m.tensors().unwrap()
    };
    // Same seed, same bits.
    let a = run();
    let b = run();
    assert_eq!(a, b);
    // 3 constant-lr epochs in one go == 2 epochs, checkpoint, then resume for the third.
    let mut full = Model::new("vgg-bn:4,M,8", 4, 1, 11).unwrap();
    train(&mut full, &tr, None, &TrainConfig { schedule: Schedule::Constant, ..cfg(3) }).unwrap();
    let ck = d.join("state.safetensors");
    let mut part = Model::new("vgg-bn:4,M,8", 4, 1, 11).unwrap();
    train(&mut part, &tr, None, &TrainConfig { schedule: Schedule::Constant, checkpoint: Some(ck.clone()), ..cfg(2) }).unwrap();
    let mut resumed = Model::new("vgg-bn:4,M,8", 4, 1, 11).unwrap();
    let r = train(&mut resumed, &tr, None, &TrainConfig { schedule: Schedule::Constant, checkpoint: Some(ck), resume: true, ..cfg(3) }).unwrap();
    assert_eq!(r.epochs.len(), 3);
    assert_eq!(full.tensors().unwrap(), resumed.tensors().unwrap());
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn best_validation_epoch_is_kept() {
    let (tr, va) = (quadrants(128, 5), quadrants(64, 6));
    let mut m = Model::new("vgg-bn:4,M,8", 4, 1, 2).unwrap();
    let r = train(&mut m, &tr, Some(&va), &cfg(4)).unwrap();
    let best = r.epochs.iter().map(|e| e.val_acc.unwrap()).fold(f64::MIN, f64::max);
    assert_eq!(r.best_val_acc, Some(best));
    assert_eq!(r.epochs[r.kept_epoch - 1].val_acc, Some(best));
    assert_eq!(evaluate(&m, &va).unwrap(), best);
}

#[test]
fn nan_loss_stops_with_a_message() {
    let tr = quadrants(64, 8);
    let mut m = Model::new("vgg:4,M,8", 4, 1, 0).unwrap();
    let e = train(&mut m, &tr, None, &TrainConfig { lr: 1e6, momentum: 0.0, ..cfg(3) }).unwrap_err().to_string();
    assert!(e.contains("loss became") && e.contains("lower --lr"), "{e}");
}

#[test]
fn bad_checkpoints_and_data_give_clear_errors() {
    let d = tmpdir("errors");
    let p = d.join("a.safetensors");
    Model::new("vgg:4,M,8", 4, 1, 0).unwrap().save(&p).unwrap();
    // Another architecture: the mismatched tensors are listed.
    let ck = read_checkpoint(&p).unwrap();
    let mut other = Model::new("vgg:4,M,16", 4, 1, 0).unwrap();
    let e = other.load_checkpoint(&ck, false, 0).unwrap_err().to_string();
    assert!(e.contains("features.3.weight") && e.contains("classifier.weight"), "{e}");
    // Class-count mismatch: refused without a new head, accepted with one (backbone copied).
    let mut five = Model::new("vgg:4,M,8", 5, 1, 0).unwrap();
    let e = five.load_checkpoint(&ck, false, 0).unwrap_err().to_string();
    assert!(e.contains("class count"), "{e}");
    five.load_checkpoint(&ck, true, 0).unwrap();
    assert_eq!(five.tensors().unwrap()[2], Model::load(&p, None).unwrap().tensors().unwrap()[2]);
    // Training data with more classes than the model.
    let mut two = Model::new("vgg:4,M,8", 2, 1, 0).unwrap();
    let e = train(&mut two, &quadrants(16, 0), None, &cfg(1)).unwrap_err().to_string();
    assert!(e.contains("4 classes") && e.contains("2 outputs"), "{e}");
    // A truncated file names the file.
    let bytes = std::fs::read(&p).unwrap();
    let bad = d.join("bad.safetensors");
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    let e = Model::load(&bad, None).err().unwrap().to_string();
    assert!(e.contains("bad.safetensors"), "{e}");
    // Unknown architecture lists the valid ones.
    let e = Model::new("lenet", 10, 1, 0).err().unwrap().to_string();
    assert!(e.contains("resnet18"), "{e}");
    // Images too small for the architecture's pools: the architecture and the size are named.
    let deep = Model::new("vgg:4,M,4,M,4,M", 4, 1, 0).unwrap();
    let x = candle_core::Tensor::zeros((2, 1, 6, 6), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let e = deep.forward(&x, false, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0)).unwrap_err().to_string();
    assert!(e.contains("vgg:4,M,4,M,4,M") && e.contains("6×6") && e.contains("too small"), "{e}");
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn set_tensors_is_all_or_nothing() {
    let mut m = Model::new("vgg:4,M,8", 4, 1, 0).unwrap();
    let mut ts = m.tensors().unwrap();
    let orig = ts.clone();
    ts[2].2[0] += 1.0;
    m.set_tensors(&ts[2..3]).unwrap();
    assert_eq!(m.tensors().unwrap()[2].2[0], orig[2].2[0] + 1.0);
    let bad = vec![ts[3].clone(), ("features.0.weight".into(), vec![1], vec![0.0])];
    assert!(m.set_tensors(&bad).is_err());
    assert_eq!(m.tensors().unwrap()[3], orig[3]);
}

#[test]
fn training_does_not_depend_on_thread_count() {
    let tr = quadrants(96, 9);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut m = Model::new("vgg-bn:4,M,8", 4, 1, 5).unwrap();
            train(&mut m, &tr, None, &cfg(2)).unwrap();
            m.tensors().unwrap()
        })
    };
    assert_eq!(run(1), run(3));
}

#[test]
fn corruption_is_seeded_and_leaves_the_input_alone() {
    let ds = quadrants(32, 3);
    let orig = ds.clone();
    let c: rws_corrupt::Corruption = "gaussian_noise".parse().unwrap();
    let a = rws_nn::corrupt_dataset(&ds, c, 3, 42).unwrap();
    let b = rws_nn::corrupt_dataset(&ds, c, 3, 42).unwrap();
    assert_eq!(ds, orig);
    assert_eq!(a.images, b.images);
    assert_ne!(a.images, ds.images);
    assert_eq!(a.labels, ds.labels);
    // On-the-fly corruption during training is reproducible too.
    let run = || {
        let mut m = Model::new("vgg:4,M,8", 4, 1, 1).unwrap();
        train(&mut m, &ds, None, &TrainConfig { corruption: Some((c, 3)), ..cfg(1) }).unwrap();
        m.tensors().unwrap()
    };
    assert_eq!(run(), run());
}
