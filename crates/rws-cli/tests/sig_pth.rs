//! PyTorch checkpoints written the way `torch.save` writes them (zip: ARCHIVE/data.pkl protocol 2,
//! ARCHIVE/data/N raw storages, ARCHIVE/version, ARCHIVE/byteorder), with the state dict nested under
//! `state_dict` next to other entries as training scripts save it.

use rws_core::{DType, Tensor, TensorMap};
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// A protocol-2 pickle writer covering what torch.save emits for a training checkpoint.
#[derive(Default)]
struct Pk {
    b: Vec<u8>,
    memo: u8,
}

impl Pk {
    fn put(&mut self) {
        self.b.extend([b'q', self.memo]);
        self.memo += 1;
    }
    fn s(&mut self, s: &str) {
        self.b.push(b'X');
        self.b.extend((s.len() as u32).to_le_bytes());
        self.b.extend(s.as_bytes());
        self.put();
    }
    fn int(&mut self, i: u8) {
        self.b.extend([b'K', i]);
    }
    fn global(&mut self, m: &str, n: &str) {
        self.b.push(b'c');
        self.b.extend(format!("{m}\n{n}\n").as_bytes());
        self.put();
    }
    fn ints(&mut self, v: &[usize]) {
        self.b.push(b'(');
        v.iter().for_each(|x| {
            self.b.push(b'M');
            self.b.extend((*x as u16).to_le_bytes());
        });
        self.b.push(b't');
        self.put();
    }
    /// _rebuild_tensor_v2((storage, cls, key, 'cpu', n), offset, size, stride, False, OrderedDict())
    fn tensor(&mut self, cls: &str, key: usize, n: usize, offset: usize, size: &[usize], stride: &[usize]) {
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.b.push(b'(');
        self.b.push(b'(');
        self.s("storage");
        self.global("torch", cls);
        self.s(&key.to_string());
        self.s("cpu");
        self.b.extend([b'M']);
        self.b.extend((n as u16).to_le_bytes());
        self.b.push(b't');
        self.put();
        self.b.push(b'Q');
        self.b.extend([b'M']);
        self.b.extend((offset as u16).to_le_bytes());
        self.ints(size);
        self.ints(stride);
        self.b.push(0x89);
        self.global("collections", "OrderedDict");
        self.b.extend([b')', b'R']);
        self.put();
        self.b.extend([b't', b'R']);
        self.put();
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `path` as torch.save would: {"epoch", "arch", "state_dict": OrderedDict, "args": Namespace}.
/// Each tensor is (name, shape, f32 values); the last one is stored transposed (non-contiguous view
/// with an offset) to exercise strides, and an int64 counter rides along.
fn write_pth(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], extra_opcode: Option<u8>) {
    let mut p = Pk::default();
    p.b.extend([0x80, 2, b'}']);
    p.put();
    p.b.push(b'(');
    p.s("epoch");
    p.int(3);
    p.s("arch");
    p.s("vgg16");
    p.s("args");
    p.global("argparse", "Namespace");
    p.b.extend([b')', 0x81]); // NEWOBJ: an inert placeholder, never constructed
    p.b.push(b'}');
    p.s("lr");
    p.b.push(b'G');
    p.b.extend(0.1f64.to_be_bytes());
    p.b.extend([b's', b'b']);
    p.s("state_dict");
    p.global("collections", "OrderedDict");
    p.b.extend([b')', b'R']);
    p.put();
    p.b.push(b'(');
    let mut storages: Vec<Vec<u8>> = Vec::new();
    for (i, (name, shape, v)) in tensors.iter().enumerate() {
        p.s(name);
        if i + 1 == tensors.len() && shape.len() == 2 {
            // Stored as the transpose of a [c, r] buffer preceded by 3 padding values.
            let (r, c) = (shape[0], shape[1]);
            let mut buf = vec![9.0f32; 3];
            for j in 0..c {
                for k in 0..r {
                    buf.push(v[k * c + j]);
                }
            }
            p.tensor("FloatStorage", storages.len(), buf.len(), 3, shape, &[1, r]);
            storages.push(f32s(&buf));
        } else {
            let stride: Vec<usize> = (0..shape.len()).map(|d| shape[d + 1..].iter().product()).collect();
            p.tensor("FloatStorage", storages.len(), v.len(), 0, shape, &stride);
            storages.push(f32s(v));
        }
    }
    p.s("bn.num_batches_tracked");
    p.tensor("LongStorage", storages.len(), 1, 0, &[], &[]);
    storages.push(7i64.to_le_bytes().to_vec());
    p.b.push(b'u');
    p.b.push(b'u');
    if let Some(op) = extra_opcode {
        p.b.push(op);
    }
    p.b.push(b'.');
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let opt = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    z.start_file("archive/data.pkl", opt).unwrap();
    z.write_all(&p.b).unwrap();
    z.start_file("archive/byteorder", opt).unwrap();
    z.write_all(b"little").unwrap();
    for (i, s) in storages.iter().enumerate() {
        z.start_file(format!("archive/data/{i}"), opt).unwrap();
        z.write_all(s).unwrap();
    }
    z.start_file("archive/version", opt).unwrap();
    z.write_all(b"3\n").unwrap();
    z.finish().unwrap();
}

fn sample() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut s = 1u32;
    let mut r = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(1664525).wrapping_add(1013904223);
                (s >> 8) as f32 / (1 << 24) as f32 - 0.5
            })
            .collect()
    };
    vec![
        ("features.0.weight".into(), vec![4, 3, 3, 3], r(108)),
        ("features.0.bias".into(), vec![4], r(4)),
        ("features.2.weight".into(), vec![5, 4, 1, 1], r(20)),
        ("classifier.weight".into(), vec![3, 5], r(15)),
    ]
}

#[test]
fn reads_torch_save_layout_with_nested_state_dict() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("ck.pth.tar");
    let t = sample();
    write_pth(&p, &t, None);
    let m = TensorMap::load(&p).unwrap();
    let mut want = TensorMap::from_f32_vec(t.clone()).unwrap();
    want.tensors.insert("bn.num_batches_tracked".into(), Tensor { dtype: DType::I64, shape: vec![], data: 7i64.to_le_bytes().to_vec() });
    assert_eq!(m.tensors, want.tensors);
    // The CLI takes it as any checkpoint: extract with a .pth.tar clean model equals the safetensors one.
    want.save(&dir.path().join("c.safetensors")).unwrap();
    let mut pre = want.clone();
    for (n, tt) in pre.tensors.iter_mut() {
        if tt.dtype == DType::F32 {
            let v: Vec<f32> = tt.to_f32(n).unwrap().iter().map(|x| x * 0.9).collect();
            *tt = Tensor::from_f32(tt.shape.clone(), &v).unwrap();
        }
    }
    pre.save(&dir.path().join("p.safetensors")).unwrap();
    let s = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    for (clean, out) in [("ck.pth.tar", "a.rws"), ("c.safetensors", "b.rws")] {
        let o = Command::new(env!("CARGO_BIN_EXE_rws"))
            .args(["extract", "--pretrained", &s("p.safetensors"), "--clean", &s(clean), "--robust", &s("p.safetensors"), "--first", "2", "--name", "x", "-o", &s(out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    assert_eq!(std::fs::read(s("a.rws")).unwrap(), std::fs::read(s("b.rws")).unwrap());
    // `rws patch` takes the .pth.tar as it is: the same patched file as from the safetensors copy,
    // no temp file left beside the output, and unpatch gives back the tensors bit for bit.
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_rws")).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let mut rob = want.clone();
    for (n, tt) in rob.tensors.iter_mut() {
        if tt.dtype == DType::F32 {
            let v: Vec<f32> = tt.to_f32(n).unwrap().iter().enumerate().map(|(i, x)| x * 1.1 + 0.05 * (i % 5) as f32).collect();
            *tt = Tensor::from_f32(tt.shape.clone(), &v).unwrap();
        }
    }
    rob.save(&dir.path().join("r.safetensors")).unwrap();
    run(&["extract", "--pretrained", &s("p.safetensors"), "--clean", &s("c.safetensors"), "--robust", &s("r.safetensors"), "--first", "2", "--name", "r", "-o", &s("r.rws")]);
    run(&["patch", &s("ck.pth.tar"), "--sig", &format!("{}:0.75", s("r.rws")), "-o", &s("pp.safetensors")]);
    run(&["patch", &s("c.safetensors"), "--sig", &format!("{}:0.75", s("r.rws")), "-o", &s("ps.safetensors")]);
    assert_eq!(std::fs::read(s("pp.safetensors")).unwrap(), std::fs::read(s("ps.safetensors")).unwrap());
    let patched = TensorMap::load(Path::new(&s("pp.safetensors"))).unwrap();
    assert_ne!(patched.tensors["features.0.weight"], want.tensors["features.0.weight"]);
    run(&["unpatch", &s("pp.safetensors"), "-o", &s("u.safetensors")]);
    assert_eq!(TensorMap::load(Path::new(&s("u.safetensors"))).unwrap().tensors, want.tensors);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with(".rws-convert")).collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn refuses_what_is_outside_the_subset() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("evil.pth");
    // INST ('i') would instantiate an arbitrary class in Python: refused, not interpreted.
    write_pth(&p, &sample(), Some(b'i'));
    let e = TensorMap::load(&p).unwrap_err().to_string();
    assert!(e.contains("evil.pth") && e.contains("outside the supported subset"), "{e}");
    // A truncated zip.
    write_pth(&p, &sample(), None);
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() / 2]).unwrap();
    let e = TensorMap::load(&p).unwrap_err().to_string();
    assert!(e.contains("evil.pth"), "{e}");
    // A legacy (pre-zip) pickle.
    std::fs::write(&p, [0x80, 2, b'}', b'.']).unwrap();
    let e = TensorMap::load(&p).unwrap_err().to_string();
    assert!(e.contains("legacy"), "{e}");
}
