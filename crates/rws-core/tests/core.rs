use proptest::prelude::*;
use rws_core::tensor::{f64_to_bytes, parse_header};
use rws_core::*;
use std::path::Path;

fn lcg(seed: &mut u64) -> f64 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
}

fn rand_vec(seed: &mut u64, n: usize, scale: f64) -> Vec<f32> {
    (0..n).map(|_| (lcg(seed) * scale) as f32).collect()
}

/// A small VGG-like model: features.{0,2,5,10} conv, features.1 BN, classifier.weight, an I64 counter.
fn vgg_like(seed: &mut u64) -> TensorMap {
    let mut items = Vec::new();
    for (name, shape) in [
        ("features.0.weight", vec![4, 3, 3, 3]),
        ("features.0.bias", vec![4]),
        ("features.1.weight", vec![4]),
        ("features.1.bias", vec![4]),
        ("features.1.running_mean", vec![4]),
        ("features.2.weight", vec![6, 4, 3, 3]),
        ("features.2.bias", vec![6]),
        ("features.5.weight", vec![6, 6, 1, 1]),
        ("features.10.weight", vec![5, 6, 3, 3]),
        ("features.10.bias", vec![5]),
        ("classifier.weight", vec![3, 5]),
        ("classifier.bias", vec![3]),
        ("normalize.mean", vec![3]),
    ] {
        let n: usize = shape.iter().product();
        items.push((name.to_string(), shape, rand_vec(seed, n, 1.0)));
    }
    let mut m = TensorMap::from_f32_vec(items).unwrap();
    m.tensors.insert("features.1.num_batches_tracked".into(), Tensor { dtype: DType::I64, shape: vec![], data: 7i64.to_le_bytes().to_vec() });
    m
}

fn perturb(m: &TensorMap, seed: &mut u64, scale: f64) -> TensorMap {
    let mut out = m.clone();
    for (n, t) in out.tensors.iter_mut() {
        if t.dtype.is_float() {
            let v: Vec<f64> = t.to_f64(n).unwrap().into_iter().map(|x| x + lcg(seed) * scale).collect();
            t.data = f64_to_bytes(t.dtype, &v).unwrap();
        }
    }
    out
}

#[test]
fn forward_order_is_numeric_and_heads_last() {
    let m = vgg_like(&mut 1);
    let l: Vec<String> = weight_layers(&m).into_iter().map(|l| l.prefix).collect();
    assert_eq!(l, ["features.0", "features.2", "features.5", "features.10", "classifier"]);
    let first = select_tensors(&m, &Selection::First(2)).unwrap();
    assert_eq!(first, ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias", "features.2.weight", "features.2.bias"]);
    let re = select_tensors(&m, &Selection::Regex { include: r"^features\.(2|10)\.".into(), exclude: Some("bias".into()) }).unwrap();
    assert_eq!(re, ["features.2.weight", "features.10.weight"]);
    let ord = select_tensors(&m, &Selection::Order { names: vec!["classifier".into(), "features.5".into()], first: Some(1) }).unwrap();
    assert_eq!(ord, ["classifier.weight", "classifier.bias"]);
    assert!(select_tensors(&m, &Selection::First(6)).is_err());
    assert!(select_tensors(&m, &Selection::Order { names: vec!["features.1.num_batches_tracked".into()], first: None }).is_err());
}

#[test]
fn projection_matches_independent_f64() {
    let mut s = 42;
    let p = vgg_like(&mut s);
    let c = perturb(&p, &mut s, 0.1);
    let r1 = perturb(&c, &mut s, 0.05);
    let r2 = perturb(&c, &mut s, 0.05);
    let sig = extract(&p, &c, &[&r1, &r2], &Selection::First(3), Codec::F32, SigInfo::named("fog")).unwrap();
    assert_eq!(sig.tensors.len(), 7);
    for t in &sig.tensors {
        let n = &t.name;
        let (p0, s0, a1, a2) = (p.tensors[n].to_f64(n).unwrap(), c.tensors[n].to_f64(n).unwrap(), r1.tensors[n].to_f64(n).unwrap(), r2.tensors[n].to_f64(n).unwrap());
        // Independent route: project the two robust deltas separately (projection is linear), then average.
        let a: Vec<f64> = s0.iter().zip(&p0).map(|(x, y)| x - y).collect();
        let na = a.iter().map(|x| x * x).sum::<f64>();
        let proj = |r: &[f64]| -> Vec<f64> {
            let d: Vec<f64> = r.iter().zip(&p0).map(|(x, y)| x - y).collect();
            let k = d.iter().zip(&a).map(|(x, y)| x * y).sum::<f64>() / na;
            d.iter().zip(&a).map(|(x, y)| x - k * y).collect()
        };
        let (v1, v2) = (proj(&a1), proj(&a2));
        let got = t.values();
        for i in 0..got.len() {
            let want = (v1[i] + v2[i]) / 2.0;
            assert!((got[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "{n}[{i}]: {} vs {want}", got[i]);
        }
        // v is orthogonal to the clean direction.
        let dot: f64 = got.iter().zip(&a).map(|(x, y)| *x as f64 * y).sum();
        let nv = got.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(dot.abs() <= 1e-5 * nv * na.sqrt(), "{n}: not orthogonal ({dot})");
    }
}

#[test]
fn zero_clean_change_keeps_d() {
    let mut s = 3;
    let p = vgg_like(&mut s);
    let r = perturb(&p, &mut s, 0.1);
    let sig = extract(&p, &p, &[&r], &Selection::First(1), Codec::F32, SigInfo::named("x")).unwrap();
    let n = "features.0.weight";
    let d: Vec<f32> = r.tensors[n].to_f64(n).unwrap().iter().zip(p.tensors[n].to_f64(n).unwrap()).map(|(x, y)| (x - y) as f32).collect();
    assert_eq!(sig.get(n).unwrap().values(), d);
}

#[test]
fn codec_error_bounds() {
    let mut s = 9;
    let shape = vec![7, 13];
    let v = rand_vec(&mut s, 91, 3.0);
    for c in ["f32", "f16", "bf16", "int1", "int2", "int3", "int4", "int5", "int8", "int4-channel", "int1-channel", "int8-channel"] {
        let codec: Codec = c.parse().unwrap();
        let enc = encode(&v, &shape, codec).unwrap();
        let back = decode(&enc, &shape);
        for (i, (x, y)) in v.iter().zip(&back).enumerate() {
            let bound = match codec {
                Codec::F32 => 0.0,
                Codec::F16 => x.abs() * 2f32.powi(-11) + 1e-7,
                Codec::BF16 => x.abs() * 2f32.powi(-8),
                Codec::Int { bits, per_channel } => {
                    let g: &[f32] = if per_channel { &v[(i / 13) * 13..(i / 13 + 1) * 13] } else { &v };
                    let (mn, mx) = g.iter().fold((f32::MAX, f32::MIN), |(a, b), &z| (a.min(z), b.max(z)));
                    (mx - mn) / ((1u32 << bits) - 1) as f32 / 2.0 * (1.0 + 1e-5) + 1e-6
                }
            };
            assert!((x - y).abs() <= bound, "{c}[{i}]: {x} -> {y} (bound {bound})");
        }
        if let (Codec::Int { bits, .. }, Encoded::Int { packed, .. }) = (codec, &enc) {
            assert_eq!(packed.len(), (91 * bits as usize).div_ceil(8), "{c} is bit-packed");
        }
    }
    assert!("int9".parse::<Codec>().is_err());
    assert!("int0".parse::<Codec>().is_err());
    assert!("q4".parse::<Codec>().is_err());
    assert!(encode(&[1.0, f32::NAN], &[2], Codec::F16).is_err());
}

#[test]
fn rws_file_round_trip_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = 5;
    let p = vgg_like(&mut s);
    let c = perturb(&p, &mut s, 0.1);
    let r = perturb(&c, &mut s, 0.1);
    for codec in ["f32", "f16", "bf16", "int4", "int3-channel"] {
        let info = SigInfo { name: "fog".into(), corruption: Some("fog".into()), severity: Some(5), dataset: Some("cifar10".into()) };
        let sig = extract(&p, &c, &[&r], &Selection::First(2), codec.parse().unwrap(), info).unwrap();
        let path = dir.path().join(format!("{codec}.rws"));
        sig.save(&path).unwrap();
        let back = Signature::load(&path).unwrap();
        assert_eq!(back, sig);
        // Flip one payload byte: the checksum catches it.
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let bad = dir.path().join("bad.rws");
        std::fs::write(&bad, &bytes).unwrap();
        let e = Signature::load(&bad).unwrap_err().to_string();
        assert!(e.contains("checksum") || e.contains("NaN"), "{e}");
    }
}

#[test]
fn header_validation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let m = vgg_like(&mut 11);
    m.save(&p).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let st = parse_header(&p, &bytes).unwrap();
    assert_eq!(TensorMap::load(&p).unwrap(), m);
    // Truncated data, header length beyond the file, a too-short file.
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (bytes[..bytes.len() - 3].to_vec(), "outside the data region"),
        ({ let mut b = bytes.clone(); b[..8].copy_from_slice(&(bytes.len() as u64).to_le_bytes()); b }, "larger than the file"),
        (bytes[..5].to_vec(), "too short"),
        ({ let mut b = bytes.clone(); b[8] = b'x'; b }, "JSON"),
    ];
    for (b, want) in cases {
        let e = parse_header(&p, &b).unwrap_err().to_string();
        assert!(e.contains(want), "{e} (wanted {want})");
    }
    // Overlapping offsets: point a tensor at its neighbour's bytes.
    let e0 = &st.entries[0];
    let e1 = &st.entries[1];
    let mut hj = st.header_json.clone();
    let from = format!("\"data_offsets\":[{},{}]", e1.start, e1.end);
    let len = e1.end - e1.start;
    let to = format!("\"data_offsets\":[{},{}]", e0.start, e0.start + len);
    assert!(hj.contains(&from));
    hj = hj.replacen(&from, &to, 1);
    let mut b = (hj.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(hj.as_bytes());
    b.extend_from_slice(&bytes[st.data_start..]);
    let e = parse_header(&p, &b).unwrap_err().to_string();
    assert!(e.contains("overlap") || e.contains("bytes but shape"), "{e}");
}

#[test]
fn sharded_load() {
    let dir = tempfile::tempdir().unwrap();
    let m = vgg_like(&mut 13);
    let (mut a, mut b) = (TensorMap::new(), TensorMap::new());
    let mut wm = serde_json::Map::new();
    for (i, (n, t)) in m.tensors.iter().enumerate() {
        let (part, f) = if i % 2 == 0 { (&mut a, "model-00001-of-00002.safetensors") } else { (&mut b, "model-00002-of-00002.safetensors") };
        part.tensors.insert(n.clone(), t.clone());
        wm.insert(n.clone(), f.into());
    }
    a.save(&dir.path().join("model-00001-of-00002.safetensors")).unwrap();
    b.save(&dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    std::fs::write(dir.path().join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": wm}).to_string()).unwrap();
    assert_eq!(TensorMap::load(dir.path()).unwrap(), m);
}

fn model_with_dtypes(seed: &mut u64, dtypes: &[DType], shapes: &[Vec<usize>]) -> TensorMap {
    let mut m = TensorMap::new();
    for (i, (d, sh)) in dtypes.iter().zip(shapes).enumerate() {
        let n: usize = sh.iter().product();
        let v: Vec<f64> = (0..n).map(|_| lcg(seed)).collect();
        m.tensors.insert(format!("layers.{i}.weight"), Tensor { dtype: *d, shape: sh.clone(), data: f64_to_bytes(*d, &v).unwrap() });
    }
    m.tensors.insert("step".into(), Tensor { dtype: DType::I64, shape: vec![1], data: 3i64.to_le_bytes().to_vec() });
    m.metadata.insert("format".into(), "pt".into());
    m
}

fn run_case(seed: u64, layers: &[(DType, usize, usize)], alphas: &[(usize, f64)], codec: &str) -> Result<(), TestCaseError> {
    let mut s = seed | 1;
    let dtypes: Vec<DType> = layers.iter().map(|l| l.0).collect();
    let shapes: Vec<Vec<usize>> = layers.iter().map(|l| vec![l.1, l.2]).collect();
    let p = model_with_dtypes(&mut s, &dtypes, &shapes);
    let c = perturb(&p, &mut s, 0.1);
    let sigs: Vec<Signature> = (0..3).map(|k| {
        let r = perturb(&c, &mut s, 0.1);
        extract(&p, &c, &[&r], &Selection::First(1 + k % layers.len()), codec.parse().unwrap(), SigInfo::named(&format!("s{k}"))).unwrap()
    }).collect();
    let dir = tempfile::tempdir().unwrap();
    let orig = dir.path().join("orig.safetensors");
    c.save(&orig).unwrap();
    let orig_bytes = std::fs::read(&orig).unwrap();
    let mut cur = orig.clone();
    let mut inproc = c.clone();
    let mut patcher = Patcher::new();
    let mut applied: Vec<(usize, f64)> = Vec::new();
    for (i, (k, a)) in alphas.iter().enumerate() {
        let next = dir.path().join(format!("p{i}.safetensors"));
        let input = std::fs::read(&cur).unwrap();
        // Both file paths: signatures in memory, and as files (copy started before they load).
        if (seed as usize + i).is_multiple_of(2) {
            patch_file(&cur, &[(sigs[*k].clone(), *a)], &next, &PatchOptions::default()).unwrap();
        } else {
            let sp = dir.path().join(format!("s{k}.rws"));
            sigs[*k].save(&sp).unwrap();
            patch_file_with_sig_files(&cur, &[(sp, *a)], &next, &PatchOptions::default()).unwrap();
        }
        prop_assert_eq!(std::fs::read(&cur).unwrap(), input, "input modified");
        if let Some(e) = applied.iter_mut().find(|e| e.0 == *k) { e.1 = *a } else { applied.push((*k, *a)) }
        applied.retain(|e| e.1 != 0.0);
        // The file's model tensors equal a from-pristine in-process patch with the same list.
        let refs: Vec<(&Signature, f64)> = applied.iter().map(|(k, a)| (&sigs[*k], *a)).collect();
        patcher.apply(&mut inproc, &refs).unwrap();
        let got = TensorMap::load(&next).unwrap();
        for (n, t) in &inproc.tensors {
            prop_assert_eq!(&got.tensors[n], t, "tensor {} step {}", n, i);
        }
        let un = dir.path().join(format!("u{i}.safetensors"));
        unpatch_file(&next, &un).unwrap();
        prop_assert_eq!(std::fs::read(&un).unwrap(), orig_bytes.clone());
        cur = next;
    }
    patcher.reset(&mut inproc);
    prop_assert_eq!(inproc, c);
    Ok(())
}

/// Regression (found by the property test): α read back from the patched file must be the exact f64,
/// else re-patching an f64 tensor drifts by an ulp.
#[test]
fn alpha_survives_repatching_exactly() {
    run_case(0, &[(DType::F64, 2, 2), (DType::F32, 4, 1)], &[(1, -1.8147405027588819), (0, 0.0)], "f16").unwrap();
}

fn float_dtype() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16), Just(DType::F64)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn unpatch_is_bit_exact(
        seed in any::<u64>(),
        layers in proptest::collection::vec((float_dtype(), 2usize..6, 1usize..5), 2..5),
        alphas in proptest::collection::vec((0usize..3, -2.0f64..2.0), 1..5),
        codec in prop_oneof![Just("f32"), Just("f16"), Just("int4"), Just("int2-channel")],
    ) {
        run_case(seed, &layers, &alphas, codec)?;
    }
}

#[test]
fn patch_changes_only_touched_and_refuses_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = 21;
    let p = vgg_like(&mut s);
    let c = perturb(&p, &mut s, 0.1);
    let r = perturb(&c, &mut s, 0.1);
    let sig = extract(&p, &c, &[&r], &Selection::First(1), Codec::Int { bits: 4, per_channel: false }, SigInfo::named("fog")).unwrap();
    let model = dir.path().join("c.safetensors");
    c.save(&model).unwrap();
    let out = dir.path().join("o.safetensors");
    let rep = patch_file(&model, &[(sig.clone(), 0.5)], &out, &PatchOptions::default()).unwrap();
    assert_eq!(rep.touched, ["features.0.bias", "features.0.weight", "features.1.bias", "features.1.weight"]);
    let got = TensorMap::load(&out).unwrap();
    for (n, t) in &c.tensors {
        if rep.touched.contains(n) {
            assert_ne!(&got.tensors[n], t, "{n} changed");
            let want: Vec<f32> = t.to_f64(n).unwrap().iter().zip(sig.get(n).unwrap().values()).map(|(x, v)| (x + 0.5 * v as f64) as f32).collect();
            assert_eq!(got.tensors[n].to_f32(n).unwrap(), want);
        } else {
            assert_eq!(&got.tensors[n], t, "{n} untouched");
        }
    }
    // Mismatch: a model missing a tensor, another with a different shape; the output must not appear.
    let mut missing = c.clone();
    missing.tensors.remove("features.0.bias");
    let mp = dir.path().join("missing.safetensors");
    missing.save(&mp).unwrap();
    let o2 = dir.path().join("o2.safetensors");
    let e = patch_file(&mp, &[(sig.clone(), 1.0)], &o2, &PatchOptions::default()).unwrap_err().to_string();
    assert!(e.contains("features.0.bias"), "{e}");
    assert!(!o2.exists());
    let mut other = c.clone();
    other.tensors.insert("features.0.weight".into(), Tensor::from_f32(vec![2, 54], &[0.0; 108]).unwrap());
    let e = Patcher::new().apply(&mut other, &[(&sig, 1.0)]).unwrap_err().to_string();
    assert!(e.contains("features.0.weight") && e.contains("shape"), "{e}");
    // dtype mismatch needs force.
    let mut half = c.clone();
    let t = half.tensors.get_mut("features.0.weight").unwrap();
    let v = t.to_f64("x").unwrap();
    *t = Tensor { dtype: DType::F16, shape: t.shape.clone(), data: f64_to_bytes(DType::F16, &v).unwrap() };
    assert!(Patcher::new().apply(&mut half.clone(), &[(&sig, 1.0)]).is_err());
    let mut forced = Patcher::new();
    forced.force = true;
    forced.apply(&mut half, &[(&sig, 1.0)]).unwrap();
    // Different pretrained fingerprints refuse to combine.
    let p2 = perturb(&p, &mut s, 0.1);
    let sig2 = extract(&p2, &c, &[&r], &Selection::First(1), Codec::F32, SigInfo::named("noise")).unwrap();
    let e = Patcher::new().apply(&mut c.clone(), &[(&sig, 1.0), (&sig2, 1.0)]).unwrap_err().to_string();
    assert!(e.contains("fingerprint"), "{e}");
    // NaN weight and non-finite alpha.
    assert!(Patcher::new().apply(&mut c.clone(), &[(&sig, f64::NAN)]).is_err());
    let mut nan = c.clone();
    nan.tensors.get_mut("features.0.bias").unwrap().data[..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = Patcher::new().apply(&mut nan, &[(&sig, 1.0)]).unwrap_err().to_string();
    assert!(e.contains("features.0.bias") && e.contains("NaN"), "{e}");
    assert!(Path::new(&model).exists());
}

#[test]
fn analysis() {
    let mut s = 31;
    let p = vgg_like(&mut s);
    let c = perturb(&p, &mut s, 0.1);
    let d = relative_diff(&c, &p).unwrap();
    assert_eq!(d.len(), 5);
    assert!(d.iter().all(|l| l.relative > 0.0));
    assert!(relative_diff(&p, &p).unwrap().iter().all(|l| l.relative == 0.0));
    let r = perturb(&c, &mut s, 0.1);
    let a = extract(&p, &c, &[&r], &Selection::First(2), Codec::F32, SigInfo::named("a")).unwrap();
    let mut neg = a.clone();
    neg.tensors.iter_mut().for_each(|t| t.enc = Encoded::F32(t.values().iter().map(|x| -x).collect()));
    let m = similarity_matrix(&[a.clone(), neg]).unwrap();
    assert!((m[0][0] - 1.0).abs() < 1e-12 && (m[0][1] + 1.0).abs() < 1e-12);
}

#[test]
fn header_length_starting_with_0x80_is_safetensors_not_pickle() {
    // A 384-byte header gives the length prefix 80 01 00 …, the first bytes of a pickle stream.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let mut h = String::from(r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#);
    h.push_str(&" ".repeat(384 - h.len()));
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    assert_eq!(&bytes[..2], &[0x80, 0x01]);
    bytes.extend_from_slice(h.as_bytes());
    bytes.extend_from_slice(&f64_to_bytes(DType::F32, &[1.0, 2.0]).unwrap());
    std::fs::write(&p, &bytes).unwrap();
    let m = TensorMap::load(&p).unwrap();
    assert_eq!(m.tensors["w"].to_f32("w").unwrap(), vec![1.0, 2.0]);
}
