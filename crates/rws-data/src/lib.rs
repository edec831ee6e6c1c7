//! rws-data: the datasets rws trains and evaluates on, held as uint8 HWC images in memory.
//!
//! Images stay uint8 until a batch is built, so a 50 000-image CIFAR set costs 150 MB rather than
//! 600 MB, and corruptions (which work on uint8 HWC) can run on the stored pixels. Batches come out as
//! f32 NCHW in 0..1; normalisation belongs to the model (it carries `normalize.mean|std`).
//!
//! # Dataset specs (the `--data` argument of the CLIs)
//!
//! `KIND[:ARGS][@MODIFIER=VALUE]...`, parsed by [`DataSpec::parse`] and loaded by [`DataSpec::load`]:
//!
//! | spec | meaning |
//! |---|---|
//! | `fashion-mnist[:train\|test]` | installed Fashion-MNIST (`$RWS_FASHION_MNIST` or `/usr/share/datasets/fashion-mnist`) |
//! | `mnist:DIR[:train\|test]` | an MNIST-layout IDX folder (gzipped or not) |
//! | `cifar10:DIR[:train\|test]` | CIFAR-10 binary version |
//! | `cifar100:DIR[:train\|test]` | CIFAR-100 binary version, fine labels (`@coarse` for the 20 superclasses) |
//! | `npy:FILE[:LABELS]` | uint8 N×H×W(×C) images; labels default to `labels.npy` beside FILE |
//! | `cifar-c:DIR:CORRUPTION:SEVERITY` | one corruption/severity of a CIFAR-10-C style folder (as `rws corrupt` writes) |
//! | `folder:DIR` | one subfolder per class, sorted names = class order |
//! | `tinyimagenet:DIR[:train\|val]` | Tiny-ImageNet layout (`test` is accepted for `val`) |
//!
//! The split defaults to `train`. Modifiers apply left to right after loading:
//!
//! - `@classes=0-4` or `@classes=3,5,7` (ranges and lists mix: `0-2,7`): keep those classes,
//!   relabelled 0..k in the order written.
//! - `@range=A-B`: samples A..B, end exclusive (`@range=30000-60000` is the second half of a 60k set;
//!   `@range=30000-` runs to the end).
//! - `@limit=N`: the first N samples.
//! - `@nclasses=K`: declare the class count (npy and cifar-c sets otherwise infer max label + 1).
//! - `@coarse`: CIFAR-100 superclass labels.
//!
//! ```
//! use rws_data::{DataSpec, Modifier, Source, Split};
//! let s = DataSpec::parse("cifar10:/data/cifar:test@classes=0-4@limit=1000").unwrap();
//! assert_eq!(s.source, Source::Cifar10 { dir: "/data/cifar".into(), split: Split::Test });
//! assert_eq!(s.modifiers, vec![Modifier::Classes(vec![0, 1, 2, 3, 4]), Modifier::Limit(1000)]);
//! // The matching training set, e.g. for a CLI given only the test spec:
//! let train = s.with_split(Split::Train);
//! # let _ = train;
//! ```
//!
//! # Batches
//!
//! [`Dataset::batches`] yields f32 NCHW batches in 0..1. With a seed the epoch's order and every
//! crop/flip draw are fixed, whatever the rayon thread count; a [`Transform`] (e.g. an on-the-fly
//! corruption) runs on the uint8 HWC image before augmentation with its own per-sample seed.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod cifar;
pub mod folder;
pub mod idx;
pub mod npy;
pub mod spec;

pub use cifar::{cifar10, cifar100, cifar_c, npy_dataset};
pub use folder::{image_folder, tiny_imagenet};
pub use idx::{fashion_mnist, fashion_mnist_dir, mnist_dir, read_idx, read_idx_pair, FASHION_MNIST_HINT};
pub use npy::{read_npy_labels, read_npy_u8, write_npy_i64, write_npy_labels_u8, write_npy_u8};
pub use spec::{load_spec, DataSpec, Modifier, Source};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The file exists but its contents are wrong (magic, dtype, rank, truncation, counts).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A dataset or file that is not there; the message says how to get it.
    #[error("{0}")]
    Missing(String),
    /// A bad argument or dataset spec.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which half of a dataset with a fixed train/test split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    Train,
    /// The held-out split (MNIST/CIFAR `test`, Tiny-ImageNet `val`).
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// Write `path` through a temp file in the same folder and a rename, so readers never see a partial file.
pub fn atomic_write(path: &Path, f: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let fname = path.file_name().ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp.{}", fname.to_string_lossy(), std::process::id()));
    let res = (|| -> std::io::Result<()> {
        let file = std::fs::File::create(&tmp)?;
        let mut w = std::io::BufWriter::new(file);
        f(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Images N×H×W×C uint8 (HWC per image, contiguous) with one label each.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Where it came from, for messages and reports (e.g. `fashion-mnist:test@classes=0-4`).
    pub name: String,
    pub images: Vec<u8>,
    pub labels: Vec<u16>,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub num_classes: usize,
    /// Class names in label order when the source has them; empty otherwise.
    pub class_names: Vec<String>,
}

impl Dataset {
    /// Checks that sizes agree and labels are below `num_classes`.
    pub fn new(name: &str, images: Vec<u8>, labels: Vec<u16>, h: usize, w: usize, c: usize, num_classes: usize) -> Result<Dataset> {
        let per = h * w * c;
        if per == 0 {
            return Err(Error::Invalid(format!("{name}: empty image size {h}×{w}×{c}")));
        }
        if images.len() != labels.len() * per {
            return Err(Error::Invalid(format!(
                "{name}: {} image bytes for {} labels of {h}×{w}×{c} images (expected {})",
                images.len(),
                labels.len(),
                labels.len() * per
            )));
        }
        if let Some(&l) = labels.iter().find(|&&l| l as usize >= num_classes) {
            return Err(Error::Invalid(format!("{name}: label {l} out of range for {num_classes} classes")));
        }
        Ok(Dataset { name: name.to_string(), images, labels, h, w, c, num_classes, class_names: Vec::new() })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (H·W·C).
    pub fn image_size(&self) -> usize {
        self.h * self.w * self.c
    }

    /// Image `i` as H×W×C bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let s = self.image_size();
        &self.images[i * s..(i + 1) * s]
    }

    pub fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }

    /// Samples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut v = vec![0; self.num_classes];
        for &l in &self.labels {
            v[l as usize] += 1;
        }
        v
    }

    fn with_data(&self, name: String, images: Vec<u8>, labels: Vec<u16>) -> Dataset {
        Dataset { name, images, labels, h: self.h, w: self.w, c: self.c, num_classes: self.num_classes, class_names: self.class_names.clone() }
    }

    fn select(&self, idx: &[usize], name: String) -> Dataset {
        let mut images = Vec::with_capacity(idx.len() * self.image_size());
        for &i in idx {
            images.extend_from_slice(self.image(i));
        }
        self.with_data(name, images, idx.iter().map(|&i| self.labels[i]).collect())
    }

    /// Keep only `classes`, relabelled 0..k in the order given (so `[3, 1]` maps 3→0, 1→1).
    pub fn subset_classes(&self, classes: &[usize]) -> Result<Dataset> {
        let mut map = vec![u16::MAX; self.num_classes];
        for (new, &old) in classes.iter().enumerate() {
            if old >= self.num_classes {
                return Err(Error::Invalid(format!("{}: class {old} out of range for {} classes", self.name, self.num_classes)));
            }
            if map[old] != u16::MAX {
                return Err(Error::Invalid(format!("{}: class {old} listed twice", self.name)));
            }
            map[old] = new as u16;
        }
        if classes.is_empty() {
            return Err(Error::Invalid(format!("{}: empty class list", self.name)));
        }
        let idx: Vec<usize> = (0..self.len()).filter(|&i| map[self.labels[i] as usize] != u16::MAX).collect();
        let list = classes.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
        let mut d = self.select(&idx, format!("{}@classes={list}", self.name));
        for l in &mut d.labels {
            *l = map[*l as usize];
        }
        d.num_classes = classes.len();
        d.class_names = if self.class_names.len() == self.num_classes {
            classes.iter().map(|&c| self.class_names[c].clone()).collect()
        } else {
            Vec::new()
        };
        Ok(d)
    }

    /// Samples `r.start..r.end`.
    pub fn range(&self, r: Range<usize>) -> Result<Dataset> {
        if r.start > r.end || r.end > self.len() {
            return Err(Error::Invalid(format!("{}: range {}..{} outside 0..{}", self.name, r.start, r.end, self.len())));
        }
        let s = self.image_size();
        Ok(self.with_data(
            format!("{}@range={}-{}", self.name, r.start, r.end),
            self.images[r.start * s..r.end * s].to_vec(),
            self.labels[r].to_vec(),
        ))
    }

    /// The first `n` samples (all of them if there are fewer).
    pub fn limit(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        let mut d = self.range(0..n).expect("in range");
        d.name = format!("{}@limit={n}", self.name);
        d
    }

    /// The first `n` samples and the rest (e.g. train/validation).
    pub fn split_at(&self, n: usize) -> Result<(Dataset, Dataset)> {
        Ok((self.range(0..n)?, self.range(n..self.len())?))
    }

    /// Samples in the given order, without augmentation, as f32 NCHW in 0..1.
    pub fn batch_of(&self, indices: &[usize]) -> Batch {
        let cfg = BatchConfig { batch_size: indices.len().max(1), shuffle: false, seed: 0, pad: 0, flip: false, drop_last: false };
        build_batch(self, indices, 0, &cfg, 0, None)
    }

    /// Batches of one epoch. With `shuffle` the order is a seeded permutation of (seed, epoch);
    /// augmentation draws come from (seed, epoch, position), so results do not depend on threads.
    pub fn batches<'a>(&'a self, cfg: &BatchConfig, epoch: u64) -> Batches<'a> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        if cfg.shuffle {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(mix(cfg.seed, mix(epoch, 0x5348_5546)));
            order.shuffle(&mut rng);
        }
        Batches { ds: self, order, pos: 0, cfg: cfg.clone(), epoch, transform: None }
    }

    /// Unshuffled, unaugmented batches (evaluation).
    pub fn eval_batches(&self, batch_size: usize) -> Batches<'_> {
        self.batches(&BatchConfig::eval(batch_size), 0)
    }
}

/// How [`Dataset::batches`] draws batches.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchConfig {
    pub batch_size: usize,
    pub shuffle: bool,
    pub seed: u64,
    /// Random crop after zero padding by this many pixels per side (0 = no crop).
    pub pad: usize,
    /// Horizontal flip with probability 1/2.
    pub flip: bool,
    /// Drop a last batch smaller than `batch_size`.
    pub drop_last: bool,
}

impl BatchConfig {
    /// Shuffled, padded-crop + flip: the usual CIFAR training recipe.
    pub fn train(batch_size: usize, seed: u64, pad: usize, flip: bool) -> BatchConfig {
        BatchConfig { batch_size, shuffle: true, seed, pad, flip, drop_last: false }
    }
    pub fn eval(batch_size: usize) -> BatchConfig {
        BatchConfig { batch_size, shuffle: false, seed: 0, pad: 0, flip: false, drop_last: false }
    }
}

/// One batch: `images` is N×C×H×W f32 in 0..1, `labels[i]` belongs to image i, `indices[i]` is its
/// index in the dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub indices: Vec<usize>,
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

/// Per-sample uint8 transform run before augmentation (e.g. a corruption): gets the H×W×C image
/// (mutable, same size) and a seed derived from (seed, epoch, position) for its own randomness.
pub type Transform = Arc<dyn Fn(&mut [u8], u64) + Send + Sync>;

/// Iterator over the batches of one epoch.
pub struct Batches<'a> {
    ds: &'a Dataset,
    order: Vec<usize>,
    pos: usize,
    cfg: BatchConfig,
    epoch: u64,
    transform: Option<Transform>,
}

impl<'a> Batches<'a> {
    /// Apply `f` to each image (uint8 HWC) before augmentation.
    pub fn with_transform(mut self, f: Transform) -> Self {
        self.transform = Some(f);
        self
    }

    /// Batches this epoch yields in total.
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.order.len(), self.cfg.batch_size.max(1));
        if self.cfg.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        let b = self.cfg.batch_size.max(1);
        let n = self.order.len();
        if self.pos >= n || (self.cfg.drop_last && n - self.pos < b) {
            return None;
        }
        let end = (self.pos + b).min(n);
        let batch = build_batch(self.ds, &self.order[self.pos..end], self.pos, &self.cfg, self.epoch, self.transform.as_ref());
        self.pos = end;
        Some(batch)
    }
}

/// SplitMix64 finaliser: decorrelates (seed, epoch, position) into independent stream seeds.
/// Public so the training engine derives its per-image and per-batch seeds the same way.
pub fn mix(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn build_batch(ds: &Dataset, idx: &[usize], first_pos: usize, cfg: &BatchConfig, epoch: u64, transform: Option<&Transform>) -> Batch {
    let (h, w, c) = (ds.h, ds.w, ds.c);
    let per = h * w * c;
    let mut images = vec![0f32; idx.len() * per];
    images.par_chunks_mut(per).enumerate().for_each(|(j, out)| {
        let i = idx[j];
        let sample_seed = mix(mix(cfg.seed, epoch), (first_pos + j) as u64);
        let mut owned;
        let mut src = ds.image(i);
        if let Some(t) = transform {
            owned = src.to_vec();
            t(&mut owned, mix(sample_seed, 0x7472_616E));
            src = &owned;
        }
        let (mut dy, mut dx, mut flip) = (cfg.pad as isize, cfg.pad as isize, false);
        if cfg.pad > 0 || cfg.flip {
            let r = mix(sample_seed, 0x6175_6721);
            let span = 2 * cfg.pad as u64 + 1;
            if cfg.pad > 0 {
                dy = (r % span) as isize;
                dx = ((r >> 20) % span) as isize;
            }
            flip = cfg.flip && (r >> 63) == 1;
        }
        // Output (y, x) reads padded (y+dy, x+dx) = source (y+dy-pad, x+dx-pad); outside is zero.
        let off_y = dy - cfg.pad as isize;
        let off_x = dx - cfg.pad as isize;
        for y in 0..h {
            let sy = y as isize + off_y;
            if sy < 0 || sy >= h as isize {
                continue;
            }
            for x in 0..w {
                let xo = if flip { w - 1 - x } else { x };
                let sx = xo as isize + off_x;
                if sx < 0 || sx >= w as isize {
                    continue;
                }
                let s = (sy as usize * w + sx as usize) * c;
                for ch in 0..c {
                    out[ch * h * w + y * w + x] = src[s + ch] as f32 / 255.0;
                }
            }
        }
    });
    Batch {
        images,
        labels: idx.iter().map(|&i| ds.labels[i] as u32).collect(),
        indices: idx.to_vec(),
        n: idx.len(),
        c,
        h,
        w,
    }
}
