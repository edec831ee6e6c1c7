//! Checkpoints as safetensors with torchvision names. The architecture, class and channel counts
//! go into the safetensors metadata so `rws eval MODEL` needs no `--arch`; files without that
//! metadata (e.g. converted from PyTorch) are accepted when the caller names the architecture.
use crate::model::{Kind, Model};
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::{Dtype as SDtype, SafeTensors, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Metadata keys written into every rws checkpoint.
pub const META_ARCH: &str = "rws.arch";
pub const META_CLASSES: &str = "rws.num_classes";
pub const META_CHANNELS: &str = "rws.in_channels";

/// A checkpoint read into memory: tensors by name (f32 except i64 counters) plus metadata.
pub struct Checkpoint {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
}

impl Checkpoint {
    pub fn arch(&self) -> Option<&str> {
        self.metadata.get(META_ARCH).map(String::as_str)
    }
    fn meta_usize(&self, k: &str) -> Option<usize> {
        self.metadata.get(k).and_then(|v| v.parse().ok())
    }
    /// Class count: from metadata, else from the head tensor's first dimension.
    pub fn num_classes(&self) -> Option<usize> {
        self.meta_usize(META_CLASSES).or_else(|| {
            ["classifier.weight", "classifier.6.weight", "fc.weight"]
                .iter()
                .find_map(|n| self.tensors.get(*n).map(|t| t.dims()[0]))
        })
    }
    pub fn in_channels(&self) -> Option<usize> {
        self.meta_usize(META_CHANNELS).or_else(|| {
            ["features.0.weight", "conv1.weight"].iter().find_map(|n| self.tensors.get(*n).map(|t| t.dims()[1]))
        })
    }
}

/// Read a safetensors file. Errors name the file and say what is wrong with it.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::Msg(format!("cannot read checkpoint {}: {e}", path.display())))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::Msg(format!("{} is not a valid safetensors file: {e}", path.display())))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::Msg(format!("{} is not a valid safetensors file: {e}", path.display())))?;
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let t = view_to_tensor(&view).map_err(|e| Error::Msg(format!("{}: tensor '{name}': {e}", path.display())))?;
        tensors.insert(name, t);
    }
    Ok(Checkpoint { tensors, metadata })
}

fn view_to_tensor(v: &TensorView) -> std::result::Result<Tensor, String> {
    let shape = v.shape().to_vec();
    let d = v.data();
    let f32s = |vals: Vec<f32>| Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu).map_err(|e| e.to_string());
    match v.dtype() {
        SDtype::F32 => f32s(d.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()),
        SDtype::F64 => f32s(d.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect()),
        SDtype::F16 => f32s(d.chunks_exact(2).map(|c| f16_to_f32(u16::from_le_bytes([c[0], c[1]]))).collect()),
        SDtype::BF16 => f32s(d.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()),
        SDtype::I64 => {
            let vals: Vec<i64> = d.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
            Tensor::from_vec(vals, shape.as_slice(), &Device::Cpu).map_err(|e| e.to_string())
        }
        other => Err(format!("unsupported dtype {other:?}")),
    }
}

fn f16_to_f32(h: u16) -> f32 {
    let s = ((h >> 15) as u32) << 31;
    let e = ((h >> 10) & 0x1f) as i32;
    let m = (h & 0x3ff) as u32;
    let bits = if e == 0 {
        if m == 0 {
            s
        } else {
            // subnormal
            let v = m as f32 * 2f32.powi(-24);
            return if s != 0 { -v } else { v };
        }
    } else if e == 31 {
        s | 0x7f80_0000 | (m << 13)
    } else {
        s | (((e - 15 + 127) as u32) << 23) | (m << 13)
    };
    f32::from_bits(bits)
}

/// Write tensors (plus metadata) atomically: a temp file in the same folder, then rename.
pub fn write_tensors(path: &Path, tensors: &[(String, Tensor)], metadata: HashMap<String, String>) -> Result<()> {
    let mut bufs: Vec<(String, SDtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let (dt, bytes) = match t.dtype() {
            DType::I64 => (SDtype::I64, t.flatten_all()?.to_vec1::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
            _ => (SDtype::F32, t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        };
        bufs.push((name.clone(), dt, t.dims().to_vec(), bytes));
    }
    let views: Vec<(String, TensorView)> = bufs
        .iter()
        .map(|(n, dt, s, b)| Ok((n.clone(), TensorView::new(*dt, s.clone(), b).map_err(|e| Error::Msg(format!("tensor '{n}': {e}")))?)))
        .collect::<Result<_>>()?;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::Msg(format!("cannot create folder {}: {e}", dir.display())))?;
    let fname = path.file_name().ok_or_else(|| Error::Msg(format!("output path {} has no file name", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp{}", fname.to_string_lossy(), std::process::id()));
    safetensors::serialize_to_file(views, Some(metadata), &tmp)
        .map_err(|e| Error::Msg(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Msg(format!("cannot write {}: {e}", path.display()))
    })
}

impl Model {
    fn metadata(&self) -> HashMap<String, String> {
        HashMap::from([
            (META_ARCH.to_string(), self.arch().to_string()),
            (META_CLASSES.to_string(), self.num_classes().to_string()),
            (META_CHANNELS.to_string(), self.in_channels().to_string()),
        ])
    }

    /// Save all tensors under torchvision names (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, &[], HashMap::new())
    }

    /// Save with extra tensors and metadata (the training checkpoint stores optimizer state).
    pub(crate) fn save_with(&self, path: &Path, extra: &[(String, Tensor)], meta: HashMap<String, String>) -> Result<()> {
        let mut ts: Vec<(String, Tensor)> = self.params().iter().map(|p| (p.name.clone(), p.var.as_tensor().clone())).collect();
        ts.extend(extra.iter().cloned());
        let mut m = self.metadata();
        m.extend(meta);
        write_tensors(path, &ts, m)
    }

    /// Build the model a checkpoint describes (metadata, or `arch` when given) and load it.
    pub fn load(path: &Path, arch: Option<&str>) -> Result<Model> {
        let ck = read_checkpoint(path)?;
        let arch = match (arch, ck.arch()) {
            (Some(a), _) => a.to_string(),
            (None, Some(a)) => a.to_string(),
            (None, None) => {
                return Err(Error::Msg(format!(
                    "{} does not say its architecture (no '{META_ARCH}' metadata); pass --arch",
                    path.display()
                )))
            }
        };
        let nc = ck.num_classes().ok_or_else(|| Error::Msg(format!("{}: cannot tell the class count (no classifier tensor)", path.display())))?;
        let cin = ck.in_channels().ok_or_else(|| Error::Msg(format!("{}: cannot tell the input channel count", path.display())))?;
        let mut m = Model::new(&arch, nc, cin, 0)?;
        m.load_checkpoint(&ck, false, 0).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
        Ok(m)
    }

    /// Copy a checkpoint's tensors into this model. Every model tensor must be present with the
    /// same shape; with `new_head`, a classifier of another class count is left freshly
    /// initialised instead (fine-tuning to a new label set). Tensors the checkpoint lacks that
    /// the model can do without (`normalize.*`, `num_batches_tracked`) keep their current values.
    /// Nothing is written unless everything matches.
    pub fn load_checkpoint(&mut self, ck: &Checkpoint, new_head: bool, seed: u64) -> Result<()> {
        let (hw, hb) = self.head();
        let head_names = [self.params()[hw].name.clone(), self.params()[hb].name.clone()];
        let mut problems = Vec::new();
        let mut replace_head = false;
        for p in self.params() {
            let want = p.var.as_tensor().dims().to_vec();
            match ck.tensors.get(&p.name) {
                None if matches!(p.kind, Kind::Norm | Kind::NumBatches) => {}
                None => problems.push(format!("{} missing (model expects shape {want:?})", p.name)),
                Some(t) if t.dims() != want.as_slice() => {
                    let is_class_dim = head_names.contains(&p.name) && t.dims().get(1..) == want.get(1..);
                    if new_head && is_class_dim {
                        replace_head = true;
                    } else {
                        problems.push(format!("{}: checkpoint shape {:?}, model shape {want:?}", p.name, t.dims()));
                    }
                }
                Some(_) => {}
            }
        }
        let known: std::collections::HashSet<&str> = self.params().iter().map(|p| p.name.as_str()).collect();
        let extra: Vec<&String> = ck.tensors.keys().filter(|k| !known.contains(k.as_str()) && !k.starts_with("__")).collect();
        for k in extra.iter().take(20) {
            problems.push(format!("{k}: in checkpoint but not in model {}", self.arch()));
        }
        if !problems.is_empty() {
            let arch_note = ck.arch().map(|a| format!(" (checkpoint architecture: {a})")).unwrap_or_default();
            let head_note = if !new_head && problems.iter().all(|p| head_names.iter().any(|h| p.starts_with(h.as_str()))) {
                " — the class count differs; fine-tuning with --init replaces the head"
            } else {
                ""
            };
            return Err(Error::Msg(format!(
                "checkpoint does not fit architecture {}{arch_note}{head_note}; {} mismatched tensor(s):\n  {}",
                self.arch(),
                problems.len(),
                problems.join("\n  ")
            )));
        }
        for i in 0..self.params().len() {
            let name = self.params()[i].name.clone();
            if replace_head && head_names.contains(&name) {
                continue;
            }
            if let Some(t) = ck.tensors.get(&name) {
                let p = &self.params()[i];
                let t = if p.kind == Kind::NumBatches { t.to_dtype(DType::I64)? } else { t.to_dtype(DType::F32)? };
                p.var.set(&t)?;
            }
        }
        // A replaced head keeps the fresh initialisation the model was built with.
        let _ = seed;
        Ok(())
    }
}

/// Momentum buffers are stored in the training checkpoint under this prefix.
pub(crate) const MOMENTUM_PREFIX: &str = "__momentum.";
