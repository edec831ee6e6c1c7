//! Image folders: Tiny-ImageNet's layout and the plain one-subfolder-per-class layout.
//!
//! Classes are numbered in sorted folder-name order, as torchvision's `ImageFolder` does, so labels
//! agree with checkpoints trained there. All images must share one size (no resizing is done: a
//! silent resize would change what the model sees); greyscale files are expanded to RGB.
use crate::{Dataset, Error, Result, Split};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

fn is_image(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(),
        Some("jpg" | "jpeg" | "png")
    )
}

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_image(p))
        .collect();
    v.sort();
    Ok(v)
}

fn decode_all(files: &[(PathBuf, u16)], num_classes: usize, class_names: Vec<String>, name: &str) -> Result<Dataset> {
    if files.is_empty() {
        return Err(Error::Invalid(format!("{name}: no images found")));
    }
    let decoded: Vec<(u32, u32, Vec<u8>)> = files
        .par_iter()
        .map(|(p, _)| {
            let bad = |e: &dyn std::fmt::Display| Error::Format { path: p.clone(), msg: format!("cannot decode image: {e}") };
            // Sniff the content: datasets in the wild carry PNGs named .JPEG and the reverse.
            let img = image::ImageReader::open(p)
                .map_err(|e| Error::io(p, e))?
                .with_guessed_format()
                .map_err(|e| Error::io(p, e))?
                .decode()
                .map_err(|e| bad(&e))?;
            let rgb = img.to_rgb8();
            Ok((rgb.width(), rgb.height(), rgb.into_raw()))
        })
        .collect::<Result<_>>()?;
    let (w, h) = (decoded[0].0, decoded[0].1);
    let mut images = Vec::with_capacity(decoded.len() * (w * h * 3) as usize);
    for ((dw, dh, px), (p, _)) in decoded.into_iter().zip(files) {
        if (dw, dh) != (w, h) {
            return Err(Error::Format {
                path: p.clone(),
                msg: format!("image is {dw}×{dh} but {} is {w}×{h}; all images must share one size", files[0].0.display()),
            });
        }
        images.extend_from_slice(&px);
    }
    let labels = files.iter().map(|(_, l)| *l).collect();
    let mut ds = Dataset::new(name, images, labels, h as usize, w as usize, 3, num_classes)?;
    ds.class_names = class_names;
    Ok(ds)
}

/// `DIR/<class>/*.{jpg,jpeg,png}`, classes in sorted name order.
pub fn image_folder(dir: &Path) -> Result<Dataset> {
    let mut classes: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(Error::Invalid(format!("{}: no class subfolders", dir.display())));
    }
    let mut files = Vec::new();
    for (k, c) in classes.iter().enumerate() {
        for f in list_images(&dir.join(c))? {
            files.push((f, k as u16));
        }
    }
    decode_all(&files, classes.len(), classes, &format!("folder:{}", dir.display()))
}

/// Tiny-ImageNet: `wnids.txt`, `train/<wnid>/images/*.JPEG`, `val/images/*` with
/// `val/val_annotations.txt` (file, wnid, box). Classes are the wnids sorted.
pub fn tiny_imagenet(dir: &Path, split: Split) -> Result<Dataset> {
    let wnids_path = dir.join("wnids.txt");
    let text = std::fs::read_to_string(&wnids_path).map_err(|e| Error::io(&wnids_path, e))?;
    let mut wnids: Vec<String> = text.lines().map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
    wnids.sort();
    wnids.dedup();
    if wnids.is_empty() {
        return Err(Error::Format { path: wnids_path, msg: "no class ids".into() });
    }
    let index = |w: &str| wnids.binary_search_by(|x| x.as_str().cmp(w)).ok();
    let mut files = Vec::new();
    match split {
        Split::Train => {
            for (k, w) in wnids.iter().enumerate() {
                let d = dir.join("train").join(w).join("images");
                for f in list_images(&d)? {
                    files.push((f, k as u16));
                }
            }
        }
        Split::Test => {
            let ann = dir.join("val").join("val_annotations.txt");
            let text = std::fs::read_to_string(&ann).map_err(|e| Error::io(&ann, e))?;
            for (ln, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let mut parts = line.split('\t');
                let (Some(file), Some(wnid)) = (parts.next(), parts.next()) else {
                    return Err(Error::Format { path: ann.clone(), msg: format!("line {}: expected `file<TAB>wnid...`", ln + 1) });
                };
                let k = index(wnid.trim()).ok_or_else(|| Error::Format {
                    path: ann.clone(),
                    msg: format!("line {}: class {wnid} is not in wnids.txt", ln + 1),
                })?;
                files.push((dir.join("val").join("images").join(file.trim()), k as u16));
            }
        }
    }
    let name = format!("tinyimagenet:{}:{}", dir.display(), if split == Split::Train { "train" } else { "val" });
    decode_all(&files, wnids.len(), wnids.clone(), &name)
}
