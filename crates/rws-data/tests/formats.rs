//! Every reader on small files written here, plus bad inputs.
use rws_data::*;
use std::io::Write;
use std::path::Path;

fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(data);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// n images of h×w with pixel value = (i*7 + y*w + x) % 251 and label i % 10.
fn toy(n: usize, h: usize, w: usize) -> (Vec<u8>, Vec<u8>) {
    let mut img = Vec::new();
    for i in 0..n {
        for p in 0..h * w {
            img.push(((i * 7 + p) % 251) as u8);
        }
    }
    (img, (0..n).map(|i| (i % 10) as u8).collect())
}

fn write_mnist(dir: &Path, prefix: &str, n: usize, gzip: bool) -> (Vec<u8>, Vec<u8>) {
    let (img, lab) = toy(n, 4, 5);
    let ib = idx_bytes(&[n as u32, 4, 5], &img);
    let lb = idx_bytes(&[n as u32], &lab);
    let ext = if gzip { ".gz" } else { "" };
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte{ext}")), if gzip { gz(&ib) } else { ib }).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")), if gzip { gz(&lb) } else { lb }).unwrap();
    (img, lab)
}

#[test]
fn idx_plain_and_gzip() {
    let t = tempfile::tempdir().unwrap();
    let (img, lab) = write_mnist(t.path(), "train", 12, true);
    let (img2, lab2) = write_mnist(t.path(), "t10k", 7, false);
    let tr = mnist_dir(t.path(), Split::Train, "m").unwrap();
    assert_eq!((tr.len(), tr.h, tr.w, tr.c, tr.num_classes), (12, 4, 5, 1, 10));
    assert_eq!(tr.images, img);
    assert_eq!(tr.labels, lab.iter().map(|&l| l as u16).collect::<Vec<_>>());
    let te = load_spec(&format!("mnist:{}:test", t.path().display())).unwrap();
    assert_eq!(te.images, img2);
    assert_eq!(te.labels.len(), lab2.len());
}

#[test]
fn idx_bad_inputs() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("x");
    // truncated
    let (img, _) = toy(3, 4, 5);
    std::fs::write(&p, &idx_bytes(&[3, 4, 5], &img)[..30]).unwrap();
    let e = read_idx(&p).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains(&p.display().to_string()), "{e}");
    // wrong magic
    std::fs::write(&p, b"\x01\x02\x08\x01\0\0\0\x01\x05").unwrap();
    assert!(read_idx(&p).unwrap_err().to_string().contains("magic"));
    // truncated gzip
    let z = gz(&idx_bytes(&[3, 4, 5], &img));
    std::fs::write(&p, &z[..z.len() / 2]).unwrap();
    assert!(read_idx(&p).is_err());
    // count mismatch
    let ip = t.path().join("i");
    let lp = t.path().join("l");
    std::fs::write(&ip, idx_bytes(&[3, 4, 5], &img)).unwrap();
    std::fs::write(&lp, idx_bytes(&[2], &[0, 1])).unwrap();
    let e = read_idx_pair(&ip, &lp, 10, "x").unwrap_err().to_string();
    assert!(e.contains("2 labels") && e.contains("3 images"), "{e}");
    // label out of range
    std::fs::write(&lp, idx_bytes(&[3], &[0, 1, 10])).unwrap();
    assert!(read_idx_pair(&ip, &lp, 10, "x").unwrap_err().to_string().contains("out of range"));
}

#[test]
fn fashion_mnist_missing_says_how_to_install() {
    let t = tempfile::tempdir().unwrap();
    // Only this test touches the variable.
    std::env::set_var("RWS_FASHION_MNIST", t.path());
    let e = fashion_mnist(Split::Test).unwrap_err().to_string();
    std::env::remove_var("RWS_FASHION_MNIST");
    assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    assert!(e.contains("apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR"), "{e}");
    assert!(e.contains("RWS_FASHION_MNIST=DIR/usr/share/datasets/fashion-mnist"), "{e}");
}
