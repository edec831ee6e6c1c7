//! CIFAR-10/100 binary versions and CIFAR-10-C style npy folders.
use crate::npy::{read_npy_labels, read_npy_u8};
use crate::{Dataset, Error, Result, Split};
use std::path::{Path, PathBuf};

const PIX: usize = 32 * 32 * 3;

fn fmt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), msg: msg.into() }
}

/// Accept the folder itself or its parent (the archives unpack into `cifar-10-batches-bin/`,
/// `cifar-100-binary/`).
fn resolve(dir: &Path, probe: &str, sub: &str) -> Result<PathBuf> {
    if dir.join(probe).is_file() {
        return Ok(dir.to_path_buf());
    }
    let d = dir.join(sub);
    if d.join(probe).is_file() {
        return Ok(d);
    }
    Err(Error::Missing(format!("{}: {probe} not found (nor in {sub}/)", dir.display())))
}

/// Records are `label_bytes` label bytes then 3072 CHW pixel bytes; we keep HWC.
fn read_records(path: &Path, label_bytes: usize, label_pick: usize, images: &mut Vec<u8>, labels: &mut Vec<u16>) -> Result<()> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let rec = label_bytes + PIX;
    if raw.is_empty() || raw.len() % rec != 0 {
        return Err(fmt_err(
            path,
            format!("size {} is not a multiple of the {rec}-byte record (truncated or not CIFAR binary)", raw.len()),
        ));
    }
    images.reserve(raw.len() / rec * PIX);
    for r in raw.chunks_exact(rec) {
        labels.push(r[label_pick] as u16);
        let px = &r[label_bytes..];
        for i in 0..1024 {
            images.extend_from_slice(&[px[i], px[1024 + i], px[2048 + i]]);
        }
    }
    Ok(())
}

/// CIFAR-10 binary: `data_batch_1..5.bin` (train) or `test_batch.bin`.
pub fn cifar10(dir: &Path, split: Split) -> Result<Dataset> {
    let dir = resolve(dir, if split == Split::Train { "data_batch_1.bin" } else { "test_batch.bin" }, "cifar-10-batches-bin")?;
    let files: Vec<PathBuf> = match split {
        Split::Train => (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
        Split::Test => vec![dir.join("test_batch.bin")],
    };
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for f in &files {
        let before = labels.len();
        read_records(f, 1, 0, &mut images, &mut labels)?;
        if let Some(b) = labels[before..].iter().find(|&&l| l >= 10) {
            return Err(fmt_err(f, format!("label {b} out of range for CIFAR-10's 10 classes")));
        }
    }
    let mut ds = Dataset::new(&format!("cifar10:{}", split.as_str()), images, labels, 32, 32, 3, 10)?;
    ds.class_names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Ok(ds)
}

/// CIFAR-100 binary: `train.bin` / `test.bin`, records with a coarse then a fine label byte.
/// `fine` picks the 100 fine labels (the usual choice), otherwise the 20 superclasses.
pub fn cifar100(dir: &Path, split: Split, fine: bool) -> Result<Dataset> {
    let file = if split == Split::Train { "train.bin" } else { "test.bin" };
    let dir = resolve(dir, file, "cifar-100-binary")?;
    let path = dir.join(file);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    read_records(&path, 2, if fine { 1 } else { 0 }, &mut images, &mut labels)?;
    let k = if fine { 100 } else { 20 };
    if let Some(b) = labels.iter().find(|&&l| l as usize >= k) {
        return Err(fmt_err(&path, format!("label {b} out of range for {k} classes")));
    }
    Dataset::new(&format!("cifar100:{}", split.as_str()), images, labels, 32, 32, 3, k)
}

/// Images (rank 3 N×H×W → C=1, rank 4 N×H×W×C) from a uint8 npy, labels from an integer npy.
pub fn npy_dataset(images: &Path, labels: &Path, num_classes: Option<usize>) -> Result<Dataset> {
    let (shape, data) = read_npy_u8(images)?;
    let (n, h, w, c) = match shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] => (n, h, w, c),
        _ => return Err(fmt_err(images, format!("images must be N×H×W or N×H×W×C, found shape {shape:?}"))),
    };
    let lab = read_npy_labels(labels)?;
    if lab.len() != n {
        return Err(fmt_err(labels, format!("{} labels but {} has {n} images", lab.len(), images.display())));
    }
    let labels16 = to_u16(labels, &lab)?;
    let k = num_classes.unwrap_or_else(|| labels16.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
    Dataset::new(&images.display().to_string(), data, labels16, h, w, c, k)
}

fn to_u16(path: &Path, lab: &[i64]) -> Result<Vec<u16>> {
    lab.iter()
        .map(|&l| u16::try_from(l).map_err(|_| fmt_err(path, format!("label {l} is negative or above 65535"))))
        .collect()
}

/// One corruption at one severity from a CIFAR-10-C style folder: `<corruption>.npy` holds the five
/// severities stacked (5n×H×W×C, severity 1 first, or 5×n×H×W×C) and `labels.npy` holds n or 5n labels.
pub fn cifar_c(dir: &Path, corruption: &str, severity: usize, num_classes: Option<usize>) -> Result<Dataset> {
    if !(1..=5).contains(&severity) {
        return Err(Error::Invalid(format!("severity {severity} out of range 1..=5")));
    }
    let img_path = dir.join(format!("{corruption}.npy"));
    if !img_path.is_file() {
        let mut avail: Vec<String> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.strip_suffix(".npy")).map(String::from))
            .filter(|s| s != "labels")
            .collect();
        avail.sort();
        return Err(Error::Missing(format!(
            "{}: no {corruption}.npy (available: {})",
            dir.display(),
            if avail.is_empty() { "none".into() } else { avail.join(", ") }
        )));
    }
    let lab_path = dir.join("labels.npy");
    let (shape, data) = read_npy_u8(&img_path)?;
    let (total, h, w, c) = match shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] => (n, h, w, c),
        [5, n, h, w, c] => (5 * n, h, w, c),
        _ => return Err(fmt_err(&img_path, format!("expected 5n×H×W×C uint8, found shape {shape:?}"))),
    };
    if total % 5 != 0 {
        return Err(fmt_err(&img_path, format!("{total} images is not five severities of equal size")));
    }
    let n = total / 5;
    let lab = read_npy_labels(&lab_path)?;
    let lab = if lab.len() == total {
        lab[(severity - 1) * n..severity * n].to_vec()
    } else if lab.len() == n {
        lab
    } else {
        return Err(fmt_err(
            &lab_path,
            format!("{} labels do not fit {} ({total} images = 5 severities × {n})", lab.len(), img_path.display()),
        ));
    };
    let labels16 = to_u16(&lab_path, &lab)?;
    let k = num_classes.unwrap_or_else(|| labels16.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
    let per = h * w * c;
    let images = data[(severity - 1) * n * per..severity * n * per].to_vec();
    Dataset::new(&format!("{}:{corruption}:{severity}", dir.display()), images, labels16, h, w, c, k)
}
