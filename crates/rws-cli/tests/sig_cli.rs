//! `rws` signature subcommands end to end on generated checkpoints, including every bad input.

use rws_core::{Codec, DType, Encoded, Signature, Tensor, TensorMap};
use std::path::{Path, PathBuf};
use std::process::Command;

fn rws(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_rws")).args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn lcg(seed: &mut u64) -> f32 {
    *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
}

fn model(seed: &mut u64) -> TensorMap {
    let mut items = Vec::new();
    for (name, shape) in [
        ("features.0.weight", vec![8, 3, 3, 3]),
        ("features.0.bias", vec![8]),
        ("features.2.weight", vec![8, 8, 3, 3]),
        ("features.2.bias", vec![8]),
        ("features.10.weight", vec![4, 8, 3, 3]),
        ("features.10.bias", vec![4]),
        ("classifier.weight", vec![10, 4]),
        ("classifier.bias", vec![10]),
    ] {
        let n: usize = shape.iter().product();
        items.push((name.to_string(), shape, (0..n).map(|_| lcg(seed)).collect()));
    }
    let mut m = TensorMap::from_f32_vec(items).unwrap();
    m.tensors.insert("features.1.num_batches_tracked".into(), Tensor { dtype: DType::I64, shape: vec![], data: 5i64.to_le_bytes().to_vec() });
    m
}

fn nudge(m: &TensorMap, seed: &mut u64, s: f32) -> TensorMap {
    let v = m.to_f32_vec().into_iter().map(|(n, sh, v)| (n, sh, v.into_iter().map(|x| x + s * lcg(seed)).collect())).collect();
    let mut out = TensorMap::from_f32_vec(v).unwrap();
    out.tensors.insert("features.1.num_batches_tracked".into(), m.tensors["features.1.num_batches_tracked"].clone());
    out
}

struct Fx {
    dir: tempfile::TempDir,
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let mut s = 7;
        let p = model(&mut s);
        let c = nudge(&p, &mut s, 0.05);
        let r = nudge(&c, &mut s, 0.05);
        let r2 = nudge(&c, &mut s, 0.05);
        for (n, m) in [("p", &p), ("c", &c), ("r", &r), ("r2", &r2)] {
            m.save(&dir.path().join(format!("{n}.safetensors"))).unwrap();
        }
        Fx { dir }
    }
    fn p(&self, n: &str) -> PathBuf {
        self.dir.path().join(n)
    }
    fn s(&self, n: &str) -> String {
        self.p(n).to_string_lossy().into_owned()
    }
    fn extract(&self, name: &str, robust: &str, codec: &str) -> String {
        let out = self.s(&format!("{name}.rws"));
        let (ok, _, err) = rws(&["extract", "--pretrained", &self.s("p.safetensors"), "--clean", &self.s("c.safetensors"), "--robust", &self.s(robust), "--first", "2", "--codec", codec, "--name", name, "-o", &out, "--json"]);
        assert!(ok, "{err}");
        out
    }
}

fn read(p: &str) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn extract_inspect_patch_unpatch() {
    let fx = Fx::new();
    let (ok, out, err) = rws(&[
        "extract", "--pretrained", &fx.s("p.safetensors"), "--clean", &fx.s("c.safetensors"), "--robust", &fx.s("r.safetensors"), "--robust", &fx.s("r2.safetensors"),
        "--first", "2", "--codec", "int4", "--name", "fog", "--corruption", "fog", "--severity", "5", "--dataset", "cifar10", "-o", &fx.s("fog.rws"), "--json",
    ]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["tensors"], serde_json::json!(["features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"]));
    let (ok, out, err) = rws(&["inspect", &fx.s("fog.rws"), "--json"]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["total"]["elements"], 216 + 8 + 576 + 8);
    assert_eq!(j["tensors"][2]["bytes"], 576 / 2 + 8, "int4 packs two values a byte plus (min, max)");
    assert_eq!(j["severity"], 5);
    assert!(j["compression_ratio"].as_f64().unwrap() > 1.0);
    let noise = fx.extract("noise", "r2.safetensors", "f16");
    let orig = read(&fx.s("c.safetensors"));
    let (ok, _, err) = rws(&["patch", &fx.s("c.safetensors"), "--sig", &format!("{}:0.5", fx.s("fog.rws")), "--sig", &format!("{noise}:-1.25"), "-o", &fx.s("pt.safetensors"), "--json"]);
    assert!(ok, "{err}");
    let before = TensorMap::load(&fx.p("c.safetensors")).unwrap();
    let after = TensorMap::load(&fx.p("pt.safetensors")).unwrap();
    assert_ne!(before.tensors["features.0.weight"], after.tensors["features.0.weight"]);
    assert_eq!(before.tensors["features.10.weight"], after.tensors["features.10.weight"]);
    // Patch the patched file again (re-scale fog), then unpatch: the original, bit for bit.
    let (ok, _, err) = rws(&["patch", &fx.s("pt.safetensors"), "--sig", &format!("{}:2", fx.s("fog.rws")), "-o", &fx.s("pt2.safetensors")]);
    assert!(ok, "{err}");
    for f in ["pt.safetensors", "pt2.safetensors"] {
        let (ok, _, err) = rws(&["unpatch", &fx.s(f), "-o", &fx.s("un.safetensors"), "--json"]);
        assert!(ok, "{err}");
        assert_eq!(read(&fx.s("un.safetensors")), orig, "{f}");
    }
    assert_eq!(read(&fx.s("c.safetensors")), orig, "input untouched");
    // Fingerprint check against the right and a wrong pretrained checkpoint.
    let (ok, _, err) = rws(&["patch", &fx.s("c.safetensors"), "--sig", &fx.s("fog.rws"), "--pretrained", &fx.s("p.safetensors"), "-o", &fx.s("pt3.safetensors")]);
    assert!(ok, "{err}");
    let (ok, _, err) = rws(&["patch", &fx.s("c.safetensors"), "--sig", &fx.s("fog.rws"), "--pretrained", &fx.s("r.safetensors"), "-o", &fx.s("pt4.safetensors")]);
    assert!(!ok && err.contains("fingerprint"), "{err}");
    assert!(!fx.p("pt4.safetensors").exists());
}

#[test]
fn diff_and_similarity() {
    let fx = Fx::new();
    let (ok, out, err) = rws(&["diff", &fx.s("r.safetensors"), &fx.s("p.safetensors"), "--json", "--plot", &fx.s("diff.png")]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let layers: Vec<&str> = j["layers"].as_array().unwrap().iter().map(|l| l["layer"].as_str().unwrap()).collect();
    assert_eq!(layers, ["features.0", "features.2", "features.10", "classifier"]);
    assert!(j["layers"][0]["relative"].as_f64().unwrap() > 0.0);
    let a = fx.extract("a", "r.safetensors", "f32");
    let b = fx.extract("b", "r2.safetensors", "f32");
    let (ok, out, err) = rws(&["similarity", &a, &b, &a, "--json", "--plot", &fx.s("sim.png")]);
    assert!(ok, "{err}");
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    let m = &j["matrix"];
    assert!((m[0][0].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!((m[0][2].as_f64().unwrap() - 1.0).abs() < 1e-9);
    assert!(m[0][1].as_f64().unwrap() < 0.999);
    for png in ["diff.png", "sim.png"] {
        let b = std::fs::read(fx.p(png)).unwrap();
        assert!(b.starts_with(b"\x89PNG") && b.len() > 1000, "{png}");
    }
}

/// Runs a command that must fail: non-zero exit, an error naming `want`, no output, inputs unchanged.
fn must_fail(args: &[&str], want: &str, out: &Path, inputs: &[&Path]) {
    let before: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let (ok, _, err) = rws(args);
    assert!(!ok, "{args:?} succeeded");
    assert!(err.contains(want), "{args:?}: wanted '{want}' in: {err}");
    assert!(!out.exists(), "{args:?} left {}", out.display());
    for (p, b) in inputs.iter().zip(before) {
        assert_eq!(std::fs::read(p).unwrap(), b, "{} modified", p.display());
    }
    let leftovers: Vec<_> = std::fs::read_dir(out.parent().unwrap()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with(".tmp")).collect();
    assert!(leftovers.is_empty(), "temp files left behind");
}

#[test]
fn bad_inputs() {
    let fx = Fx::new();
    let sig = fx.extract("fog", "r.safetensors", "int4");
    let sigp = PathBuf::from(&sig);
    let good = read(&fx.s("c.safetensors"));
    let out = fx.p("out.safetensors");
    let outs = out.to_string_lossy().into_owned();
    let patch = |model: &str, s: &str| vec!["patch".to_string(), model.to_string(), "--sig".into(), s.to_string(), "-o".into(), outs.clone()];
    let write = |name: &str, b: &[u8]| {
        let p = fx.p(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    let hl = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + hl].to_vec()).unwrap();
    let with_header = |h: &str| {
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(&good[8 + hl..]);
        b
    };
    let st = rws_core::tensor::parse_header(Path::new("x"), &good).unwrap();
    let (e0, e1) = (&st.entries[0], &st.entries[1]);
    let off1 = format!("\"data_offsets\":[{},{}]", e1.start, e1.end);
    assert!(header.contains(&off1));
    let overlap = header.replacen(&off1, &format!("\"data_offsets\":[{},{}]", e0.start, e0.start + e1.end - e1.start), 1);
    let big = e1.end + good.len();
    let range = header.replacen(&off1, &format!("\"data_offsets\":[{},{}]", big - (e1.end - e1.start), big), 1);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.safetensors", good[..good.len() - 10].to_vec(), "truncated"),
        ("garbage.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!rest".to_vec(), "not valid JSON"),
        ("hlen.safetensors", { let mut b = good.clone(); b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes()); b }, "larger than the file"),
        ("overlap.safetensors", with_header(&overlap), "overlap"),
        ("range.safetensors", with_header(&range), "outside the data region"),
    ];
    for (name, bytes, want) in &cases {
        let p = write(name, bytes);
        let a = patch(&p.to_string_lossy(), &sig);
        must_fail(&a.iter().map(String::as_str).collect::<Vec<_>>(), want, &out, &[&p, &sigp]);
        let a = ["extract", "--pretrained", &fx.s("p.safetensors"), "--clean", &p.to_string_lossy(), "--robust", &fx.s("r.safetensors"), "--first", "1", "--name", "x", "-o", &outs];
        must_fail(&a, want, &out, &[&p]);
    }
    // A corrupt signature file: truncated, and a flipped payload byte.
    let sb = read(&sig);
    let p = write("trunc.rws", &sb[..sb.len() - 4]);
    must_fail(&patch(&fx.s("c.safetensors"), &p.to_string_lossy()).iter().map(String::as_str).collect::<Vec<_>>(), "trunc.rws", &out, &[&p, &fx.p("c.safetensors")]);
    let mut flipped = sb.clone();
    let n = flipped.len() - 20;
    flipped[n] ^= 1;
    let p = write("flip.rws", &flipped);
    must_fail(&patch(&fx.s("c.safetensors"), &p.to_string_lossy()).iter().map(String::as_str).collect::<Vec<_>>(), "checksum", &out, &[&p]);
    // NaN in the weights (extract and patch) and in a signature.
    let mut nan = TensorMap::load(&fx.p("c.safetensors")).unwrap();
    nan.tensors.get_mut("features.0.weight").unwrap().data[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    nan.save(&fx.p("nan.safetensors")).unwrap();
    let np = fx.p("nan.safetensors");
    must_fail(&patch(&np.to_string_lossy(), &sig).iter().map(String::as_str).collect::<Vec<_>>(), "features.0.weight", &out, &[&np]);
    let a = ["extract", "--pretrained", &fx.s("p.safetensors"), "--clean", &np.to_string_lossy(), "--robust", &fx.s("r.safetensors"), "--first", "1", "--name", "x", "-o", &outs];
    must_fail(&a, "NaN", &out, &[&np]);
    let mut inf = TensorMap::load(&fx.p("r.safetensors")).unwrap();
    inf.tensors.get_mut("features.0.bias").unwrap().data[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
    inf.save(&fx.p("inf.safetensors")).unwrap();
    let a = ["extract", "--pretrained", &fx.s("p.safetensors"), "--clean", &fx.s("c.safetensors"), "--robust", &fx.s("inf.safetensors"), "--first", "1", "--name", "x", "-o", &outs];
    must_fail(&a, "features.0.bias", &out, &[&fx.p("inf.safetensors")]);
    let mut bad = Signature::load(&sigp).unwrap();
    bad.tensors[0].enc = Encoded::F32(vec![f32::NAN; bad.tensors[0].numel()]);
    bad.tensors[0].codec = Codec::F32;
    bad.save(&fx.p("nan.rws")).unwrap();
    must_fail(&patch(&fx.s("c.safetensors"), &fx.s("nan.rws")).iter().map(String::as_str).collect::<Vec<_>>(), "NaN", &out, &[]);
    // Unknown codec, alpha not a number, missing tensors, a non-patched file to unpatch.
    let a = ["extract", "--pretrained", &fx.s("p.safetensors"), "--clean", &fx.s("c.safetensors"), "--robust", &fx.s("r.safetensors"), "--first", "1", "--codec", "int12", "--name", "x", "-o", &outs];
    must_fail(&a, "unknown codec", &out, &[]);
    must_fail(&patch(&fx.s("c.safetensors"), &format!("{sig}:abc")).iter().map(String::as_str).collect::<Vec<_>>(), "not a number", &out, &[]);
    must_fail(&patch(&fx.s("c.safetensors"), &format!("{sig}:inf")).iter().map(String::as_str).collect::<Vec<_>>(), "finite", &out, &[]);
    let mut missing = TensorMap::load(&fx.p("c.safetensors")).unwrap();
    missing.tensors.remove("features.2.bias");
    missing.save(&fx.p("missing.safetensors")).unwrap();
    must_fail(&patch(&fx.s("missing.safetensors"), &sig).iter().map(String::as_str).collect::<Vec<_>>(), "features.2.bias", &out, &[&fx.p("missing.safetensors")]);
    let a = ["extract", "--pretrained", &fx.s("p.safetensors"), "--clean", &fx.s("missing.safetensors"), "--robust", &fx.s("r.safetensors"), "--first", "2", "--name", "x", "-o", &outs];
    must_fail(&a, "features.2.bias", &out, &[]);
    must_fail(&["unpatch", &fx.s("c.safetensors"), "-o", &outs], "not a patched file", &out, &[&fx.p("c.safetensors")]);
    must_fail(&["patch", &fx.s("c.safetensors"), "--sig", &sig, "-o", &fx.s("c.safetensors")], "never overwritten", &fx.p("nonexistent"), &[&fx.p("c.safetensors")]);
    must_fail(&["inspect", &fx.s("c.safetensors")], "not an rws signature", &out, &[]);
}
