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

#[test]
fn npy_roundtrip_and_numpy_layout() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("a.npy");
    let data: Vec<u8> = (0..2 * 3 * 4 * 5).map(|i| (i * 3 % 256) as u8).collect();
    write_npy_u8(&p, &[2, 3, 4, 5], &data).unwrap();
    let raw = std::fs::read(&p).unwrap();
    assert_eq!(&raw[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([raw[8], raw[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "data must start 64-byte aligned as numpy writes it");
    let header = std::str::from_utf8(&raw[10..10 + hlen]).unwrap();
    assert!(header.contains("'descr': '|u1'") && header.contains("'shape': (2, 3, 4, 5)") && header.ends_with('\n'));
    assert_eq!(read_npy_u8(&p).unwrap(), (vec![2, 3, 4, 5], data));
    // rank 1 shape needs the trailing comma
    let lp = t.path().join("l.npy");
    write_npy_i64(&lp, &[3, -1, 7]).unwrap();
    assert!(std::fs::read(&lp).unwrap().windows(5).any(|w| w == b"(3,),"));
    assert_eq!(read_npy_labels(&lp).unwrap(), vec![3, -1, 7]);
    write_npy_labels_u8(&lp, &[9, 0]).unwrap();
    assert_eq!(read_npy_labels(&lp).unwrap(), vec![9, 0]);
    // no temp files left behind
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

fn npy_with(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(h.len() as u16).to_le_bytes());
    v.extend_from_slice(h.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn npy_label_dtypes_and_errors() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("l.npy");
    let i32s: Vec<u8> = [5i32, 0, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&p, npy_with("<i4", "(3,)", &i32s)).unwrap();
    assert_eq!(read_npy_labels(&p).unwrap(), vec![5, 0, 2]);
    // wrong dtype for images
    let e = read_npy_u8(&p).unwrap_err().to_string();
    assert!(e.contains("uint8") && e.contains("l.npy"), "{e}");
    // float labels rejected
    std::fs::write(&p, npy_with("<f4", "(1,)", &[0, 0, 0, 0])).unwrap();
    assert!(read_npy_labels(&p).unwrap_err().to_string().contains("unsupported dtype"));
    // big-endian rejected
    std::fs::write(&p, npy_with(">i4", "(1,)", &[0, 0, 0, 1])).unwrap();
    assert!(read_npy_labels(&p).is_err());
    // wrong rank for labels
    std::fs::write(&p, npy_with("|u1", "(2, 2)", &[0, 1, 2, 3])).unwrap();
    assert!(read_npy_labels(&p).unwrap_err().to_string().contains("rank 1"));
    // truncated
    std::fs::write(&p, npy_with("|u1", "(2, 2)", &[0, 1, 2])).unwrap();
    assert!(read_npy_u8(&p).unwrap_err().to_string().contains("truncated"));
    // bad magic
    std::fs::write(&p, b"hello world, not numpy").unwrap();
    assert!(read_npy_u8(&p).unwrap_err().to_string().contains("magic"));
    // Fortran order rejected
    let mut raw = npy_with("|u1", "(2, 2)", &[0, 1, 2, 3]);
    let at = raw.windows(5).position(|w| w == b"False").unwrap();
    raw[at..at + 5].copy_from_slice(b"True ");
    std::fs::write(&p, raw).unwrap();
    assert!(read_npy_u8(&p).unwrap_err().to_string().contains("Fortran"));
    // shape/data mismatch on write leaves no file
    let q = t.path().join("bad.npy");
    assert!(write_npy_u8(&q, &[2, 2], &[1, 2, 3]).is_err());
    assert!(!q.exists());
}

#[test]
fn npy_dataset_spec() {
    let t = tempfile::tempdir().unwrap();
    let (img, lab) = toy(6, 3, 3);
    // rank 4 with C=1, labels beside it as labels.npy
    write_npy_u8(&t.path().join("x.npy"), &[6, 3, 3, 1], &img).unwrap();
    write_npy_labels_u8(&t.path().join("labels.npy"), &lab).unwrap();
    let ds = load_spec(&format!("npy:{}", t.path().join("x.npy").display())).unwrap();
    assert_eq!((ds.len(), ds.h, ds.w, ds.c, ds.num_classes), (6, 3, 3, 1, 6));
    assert_eq!(ds.images, img);
    let ds = load_spec(&format!("npy:{}@nclasses=10", t.path().join("x.npy").display())).unwrap();
    assert_eq!(ds.num_classes, 10);
    // explicit label file with a count mismatch
    write_npy_i64(&t.path().join("five.npy"), &[0, 1, 2, 3, 4]).unwrap();
    let e = load_spec(&format!("npy:{}:{}", t.path().join("x.npy").display(), t.path().join("five.npy").display()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 labels") && e.contains("6 images"), "{e}");
}

fn cifar_record(label: &[u8], seed: usize) -> Vec<u8> {
    let mut v = label.to_vec();
    v.extend((0..3072).map(|i| ((i * 13 + seed * 31) % 256) as u8));
    v
}

#[test]
fn cifar10_and_100_binary() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("cifar-10-batches-bin");
    std::fs::create_dir(&d).unwrap();
    for b in 1..=5 {
        let recs: Vec<u8> = (0..2).flat_map(|i| cifar_record(&[(b * 2 + i) as u8 % 10], b * 2 + i)).collect();
        std::fs::write(d.join(format!("data_batch_{b}.bin")), recs).unwrap();
    }
    std::fs::write(d.join("test_batch.bin"), cifar_record(&[7], 99)).unwrap();
    // parent folder is accepted too
    let tr = load_spec(&format!("cifar10:{}", t.path().display())).unwrap();
    assert_eq!((tr.len(), tr.h, tr.w, tr.c, tr.num_classes), (10, 32, 32, 3, 10));
    assert_eq!(tr.labels, vec![2, 3, 4, 5, 6, 7, 8, 9, 0, 1]);
    // CHW on disk → HWC in memory: pixel (y,x) channel c = byte c*1024 + y*32 + x of the record
    let rec = cifar_record(&[0], 2);
    let img = tr.image(0);
    for (y, x, c) in [(0, 0, 0), (5, 7, 1), (31, 31, 2)] {
        assert_eq!(img[(y * 32 + x) * 3 + c], rec[1 + c * 1024 + y * 32 + x]);
    }
    let te = cifar10(&d, Split::Test).unwrap();
    assert_eq!(te.labels, vec![7]);
    // truncated batch
    std::fs::write(d.join("test_batch.bin"), &cifar_record(&[7], 99)[..3000]).unwrap();
    let e = cifar10(&d, Split::Test).unwrap_err().to_string();
    assert!(e.contains("test_batch.bin") && e.contains("truncated"), "{e}");
    // label out of range
    std::fs::write(d.join("test_batch.bin"), cifar_record(&[12], 1)).unwrap();
    assert!(cifar10(&d, Split::Test).unwrap_err().to_string().contains("out of range"));

    let d100 = t.path().join("c100");
    std::fs::create_dir(&d100).unwrap();
    let recs: Vec<u8> = [[3u8, 77], [19, 5]].iter().enumerate().flat_map(|(i, l)| cifar_record(l, i)).collect();
    std::fs::write(d100.join("train.bin"), recs).unwrap();
    let fine = load_spec(&format!("cifar100:{}", d100.display())).unwrap();
    assert_eq!((fine.labels.clone(), fine.num_classes), (vec![77, 5], 100));
    let coarse = load_spec(&format!("cifar100:{}:train@coarse", d100.display())).unwrap();
    assert_eq!((coarse.labels.clone(), coarse.num_classes), (vec![3, 19], 20));
    assert!(load_spec(&format!("cifar100:{}:test", d100.display())).unwrap_err().to_string().contains("test.bin"));
}

#[test]
fn cifar_c_folder() {
    let t = tempfile::tempdir().unwrap();
    let n = 4;
    let (h, w, c) = (2, 3, 3);
    let per = h * w * c;
    // severity s, sample i: all pixels = s*10 + i
    let data: Vec<u8> = (1..=5).flat_map(|s| (0..n).flat_map(move |i| vec![(s * 10 + i) as u8; per])).collect();
    write_npy_u8(&t.path().join("fog.npy"), &[5 * n, h, w, c], &data).unwrap();
    write_npy_labels_u8(&t.path().join("labels.npy"), &[1, 0, 3, 2]).unwrap();
    let ds = load_spec(&format!("cifar-c:{}:fog:3", t.path().display())).unwrap();
    assert_eq!(ds.len(), n);
    assert_eq!(ds.labels, vec![1, 0, 3, 2]);
    assert!(ds.image(2).iter().all(|&p| p == 32));
    // labels repeated per severity (CIFAR-10-C's own layout)
    let rep: Vec<i64> = (0..5).flat_map(|s| (0..n as i64).map(move |i| (i + s) % 4)).collect();
    write_npy_i64(&t.path().join("labels.npy"), &rep).unwrap();
    let ds5 = cifar_c(t.path(), "fog", 5, Some(10)).unwrap();
    assert_eq!(ds5.labels, vec![0, 1, 2, 3]);
    assert_eq!(ds5.num_classes, 10);
    assert!(ds5.image(0).iter().all(|&p| p == 50));
    // missing corruption lists what is there
    let e = cifar_c(t.path(), "snow", 1, None).unwrap_err().to_string();
    assert!(e.contains("snow.npy") && e.contains("fog"), "{e}");
    // label count mismatch
    write_npy_i64(&t.path().join("labels.npy"), &[0, 1, 2]).unwrap();
    assert!(cifar_c(t.path(), "fog", 1, None).unwrap_err().to_string().contains("3 labels"));
    assert!(DataSpec::parse(&format!("cifar-c:{}:fog:6", t.path().display())).is_err());
}

fn save_png(p: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([v, (x * 10) as u8, (y * 10) as u8])).save(p).unwrap();
}

#[test]
fn image_folders() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("plain");
    save_png(&root.join("zebra/a.png"), 4, 3, 200);
    save_png(&root.join("ant/b.png"), 4, 3, 10);
    save_png(&root.join("ant/c.png"), 4, 3, 20);
    std::fs::write(root.join("ant/notes.txt"), "ignored").unwrap();
    let ds = load_spec(&format!("folder:{}", root.display())).unwrap();
    assert_eq!((ds.len(), ds.h, ds.w, ds.c, ds.num_classes), (3, 3, 4, 3, 2));
    assert_eq!(ds.class_names, vec!["ant", "zebra"]);
    assert_eq!(ds.labels, vec![0, 0, 1]);
    assert_eq!(&ds.image(2)[..3], &[200, 0, 0]);
    assert_eq!(&ds.image(0)[(4 + 2) * 3..(4 + 2) * 3 + 3], &[10, 20, 10]);
    // size mismatch
    save_png(&root.join("ant/d.png"), 5, 3, 0);
    let e = image_folder(&root).unwrap_err().to_string();
    assert!(e.contains("d.png") && e.contains("one size"), "{e}");
    // undecodable
    std::fs::remove_file(root.join("ant/d.png")).unwrap();
    std::fs::write(root.join("ant/e.jpg"), b"not a jpeg").unwrap();
    assert!(image_folder(&root).unwrap_err().to_string().contains("e.jpg"));

    let tin = t.path().join("tiny");
    std::fs::create_dir_all(&tin).unwrap();
    std::fs::write(tin.join("wnids.txt"), "n02\nn01\n").unwrap();
    save_png(&tin.join("train/n01/images/n01_0.JPEG"), 4, 4, 1);
    save_png(&tin.join("train/n02/images/n02_0.JPEG"), 4, 4, 2);
    save_png(&tin.join("train/n02/images/n02_1.JPEG"), 4, 4, 3);
    save_png(&tin.join("val/images/val_0.JPEG"), 4, 4, 100);
    save_png(&tin.join("val/images/val_1.JPEG"), 4, 4, 200);
    std::fs::write(tin.join("val/val_annotations.txt"), "val_0.JPEG\tn02\t0\t0\t3\t3\nval_1.JPEG\tn01\t0\t0\t3\t3\n").unwrap();
    let tr = load_spec(&format!("tinyimagenet:{}", tin.display())).unwrap();
    assert_eq!((tr.len(), tr.num_classes), (3, 2));
    assert_eq!(tr.labels, vec![0, 1, 1]);
    let va = load_spec(&format!("tinyimagenet:{}:val", tin.display())).unwrap();
    assert_eq!(va.labels, vec![1, 0]);
    // real JPEGs (lossy): the first pixel's red is near what was written
    assert!((va.image(0)[0] as i32 - 100).abs() < 12 && (va.image(1)[0] as i32 - 200).abs() < 12);
    // content decides the format, not the extension
    std::fs::copy(root.join("zebra/a.png"), tin.join("val/images/val_1.JPEG")).unwrap();
    save_png(&tin.join("val/images/val_1.JPEG.png"), 4, 4, 9);
    std::fs::rename(tin.join("val/images/val_1.JPEG.png"), tin.join("val/images/val_1.JPEG")).unwrap();
    assert_eq!(tiny_imagenet(&tin, Split::Test).unwrap().image(1)[0], 9);
    std::fs::write(tin.join("val/val_annotations.txt"), "val_0.JPEG\tn99\t0\n").unwrap();
    assert!(tiny_imagenet(&tin, Split::Test).unwrap_err().to_string().contains("n99"));
}

/// The installed Fashion-MNIST (CI installs dataset-fashion-mnist; skipped with a note elsewhere).
#[test]
fn installed_fashion_mnist() {
    if fashion_mnist_dir().is_err() {
        eprintln!("Fashion-MNIST not installed: skipping");
        return;
    }
    let tr = load_spec("fashion-mnist").unwrap();
    assert_eq!((tr.len(), tr.h, tr.w, tr.c, tr.num_classes), (60000, 28, 28, 1, 10));
    assert_eq!(tr.class_counts(), vec![6000; 10]);
    let te = load_spec("fashion-mnist:test@classes=0-4@limit=100").unwrap();
    assert_eq!((te.len(), te.num_classes), (100, 5));
    assert_eq!(te.class_names[4], "Coat");
    let half = load_spec("fashion-mnist@range=30000-60000").unwrap();
    assert_eq!(half.image(0), tr.image(30000));
}
