//! IDX files (MNIST, Fashion-MNIST), raw or gzipped (detected by the gzip magic, not the name).
use crate::{Dataset, Error, Result, Split};
use std::io::Read;
use std::path::{Path, PathBuf};

fn fmt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), msg: msg.into() }
}

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(|e| fmt_err(path, format!("gzip stream is corrupt or truncated: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Read a uint8 IDX array: (dims, data).
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(fmt_err(path, "not an IDX file (bad magic)"));
    }
    if bytes[2] != 0x08 {
        return Err(fmt_err(path, format!("IDX element type 0x{:02x} is not unsigned byte (0x08)", bytes[2])));
    }
    let ndim = bytes[3] as usize;
    let hdr = 4 + 4 * ndim;
    if ndim == 0 || bytes.len() < hdr {
        return Err(fmt_err(path, "truncated IDX header"));
    }
    let dims: Vec<usize> =
        (0..ndim).map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize).collect();
    let need: usize = dims.iter().product();
    let have = bytes.len() - hdr;
    if have < need {
        return Err(fmt_err(path, format!("truncated: dims {dims:?} need {need} bytes, file has {have}")));
    }
    if have > need {
        return Err(fmt_err(path, format!("{} trailing bytes after dims {dims:?}", have - need)));
    }
    bytes.drain(..hdr);
    Ok((dims, bytes))
}

/// Read an image file (rank 3: N×H×W) and a label file (rank 1) into a one-channel dataset.
pub fn read_idx_pair(images: &Path, labels: &Path, num_classes: usize, name: &str) -> Result<Dataset> {
    let (idims, idata) = read_idx(images)?;
    if idims.len() != 3 {
        return Err(fmt_err(images, format!("images must be rank 3 (N×H×W), found dims {idims:?}")));
    }
    let (ldims, ldata) = read_idx(labels)?;
    if ldims.len() != 1 {
        return Err(fmt_err(labels, format!("labels must be rank 1, found dims {ldims:?}")));
    }
    if ldims[0] != idims[0] {
        return Err(fmt_err(
            labels,
            format!("{} labels but {} has {} images", ldims[0], images.display(), idims[0]),
        ));
    }
    if let Some(bad) = ldata.iter().find(|&&l| l as usize >= num_classes) {
        return Err(fmt_err(labels, format!("label {bad} out of range for {num_classes} classes")));
    }
    Dataset::new(name, idata, ldata.iter().map(|&l| l as u16).collect(), idims[1], idims[2], 1, num_classes)
}

fn find_file(dir: &Path, stems: &[&str]) -> Option<PathBuf> {
    for s in stems {
        for ext in ["", ".gz"] {
            let p = dir.join(format!("{s}{ext}"));
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// MNIST-layout folder: `train-images-idx3-ubyte[.gz]` etc. (also the `train-images.idx3-ubyte` spelling).
pub fn mnist_dir(dir: &Path, split: Split, name: &str) -> Result<Dataset> {
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let img_stems = [format!("{prefix}-images-idx3-ubyte"), format!("{prefix}-images.idx3-ubyte")];
    let lbl_stems = [format!("{prefix}-labels-idx1-ubyte"), format!("{prefix}-labels.idx1-ubyte")];
    let img_stems: Vec<&str> = img_stems.iter().map(|s| s.as_str()).collect();
    let lbl_stems: Vec<&str> = lbl_stems.iter().map(|s| s.as_str()).collect();
    let images = find_file(dir, &img_stems)
        .ok_or_else(|| Error::Missing(format!("{}: no {}[.gz] found", dir.display(), img_stems[0])))?;
    let labels = find_file(dir, &lbl_stems)
        .ok_or_else(|| Error::Missing(format!("{}: no {}[.gz] found", dir.display(), lbl_stems[0])))?;
    read_idx_pair(&images, &labels, 10, &format!("{name}:{}", split.as_str()))
}

/// Where Fashion-MNIST is installed: `$RWS_FASHION_MNIST`, else the Debian package's folder.
pub const FASHION_MNIST_SYSTEM_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// How to get Fashion-MNIST when it is missing (exact wording is relied on by users' scripts and docs).
pub const FASHION_MNIST_HINT: &str = "apt-get install dataset-fashion-mnist, or without root `apt-get download dataset-fashion-mnist && dpkg -x dataset-fashion-mnist_*.deb DIR` and set RWS_FASHION_MNIST=DIR/usr/share/datasets/fashion-mnist";

/// The folder holding Fashion-MNIST, or an error saying how to install it.
pub fn fashion_mnist_dir() -> Result<PathBuf> {
    let (dir, from) = match std::env::var_os("RWS_FASHION_MNIST") {
        Some(d) if !d.is_empty() => (PathBuf::from(d), "RWS_FASHION_MNIST"),
        _ => (PathBuf::from(FASHION_MNIST_SYSTEM_DIR), "default location"),
    };
    let ok = find_file(&dir, &["train-images-idx3-ubyte"]).is_some() || find_file(&dir, &["t10k-images-idx3-ubyte"]).is_some();
    if ok {
        Ok(dir)
    } else {
        Err(Error::Missing(format!(
            "Fashion-MNIST not found in {} ({from}). Install it: {FASHION_MNIST_HINT}",
            dir.display()
        )))
    }
}

/// Fashion-MNIST from the installed location (see [`fashion_mnist_dir`]).
pub fn fashion_mnist(split: Split) -> Result<Dataset> {
    let mut ds = mnist_dir(&fashion_mnist_dir()?, split, "fashion-mnist")?;
    ds.class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Ok(ds)
}
