//! Tensors as raw little-endian bytes: untouched tensors must round-trip byte for byte, so values are
//! only decoded where arithmetic needs them.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Element types of safetensors; only the float ones take part in arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
    F8E4M3,
    F8E5M2,
}

impl DType {
    pub fn size(self) -> usize {
        use DType::*;
        match self {
            F64 | I64 | U64 => 8,
            F32 | I32 | U32 => 4,
            F16 | BF16 | I16 | U16 => 2,
            I8 | U8 | Bool | F8E4M3 | F8E5M2 => 1,
        }
    }
    /// Float types rws reads and writes values of (f8 is carried through, never patched).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }
    pub fn name(self) -> &'static str {
        use DType::*;
        match self {
            F64 => "F64",
            F32 => "F32",
            F16 => "F16",
            BF16 => "BF16",
            I64 => "I64",
            I32 => "I32",
            I16 => "I16",
            I8 => "I8",
            U64 => "U64",
            U32 => "U32",
            U16 => "U16",
            U8 => "U8",
            Bool => "BOOL",
            F8E4M3 => "F8_E4M3",
            F8E5M2 => "F8_E5M2",
        }
    }
    pub fn parse(s: &str) -> Option<DType> {
        use DType::*;
        Some(match s {
            "F64" => F64,
            "F32" => F32,
            "F16" => F16,
            "BF16" => BF16,
            "I64" => I64,
            "I32" => I32,
            "I16" => I16,
            "I8" => I8,
            "U64" => U64,
            "U32" => U32,
            "U16" => U16,
            "U8" => U8,
            "BOOL" => Bool,
            "F8_E4M3" => F8E4M3,
            "F8_E5M2" => F8E5M2,
            _ => return None,
        })
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One tensor: dtype, shape and its little-endian bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor> {
        if numel(&shape) != values.len() {
            return Err(Error::Invalid(format!("shape {shape:?} holds {} values, got {}", numel(&shape), values.len())));
        }
        let mut data = Vec::with_capacity(values.len() * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        Ok(Tensor { dtype: DType::F32, shape, data })
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    /// Values widened to f64 (exact for every float dtype).
    pub fn to_f64(&self, name: &str) -> Result<Vec<f64>> {
        bytes_to_f64(self.dtype, &self.data).ok_or_else(|| Error::tensor(name, format!("dtype {} is not a float type", self.dtype)))
    }
    pub fn to_f32(&self, name: &str) -> Result<Vec<f32>> {
        Ok(self.to_f64(name)?.into_iter().map(|v| v as f32).collect())
    }
}

/// Decodes float bytes; None for non-float dtypes.
pub fn bytes_to_f64(dtype: DType, b: &[u8]) -> Option<Vec<f64>> {
    Some(match dtype {
        DType::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::F16 => b.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64()).collect(),
        DType::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f64()).collect(),
        _ => return None,
    })
}

/// Rounds f64 values once to the dtype (round to nearest even), little-endian bytes.
pub fn f64_to_bytes(dtype: DType, v: &[f64]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(v.len() * dtype.size());
    match dtype {
        DType::F64 => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        DType::F32 => v.iter().for_each(|x| out.extend_from_slice(&(*x as f32).to_le_bytes())),
        DType::F16 => v.iter().for_each(|x| out.extend_from_slice(&half::f16::from_f64(*x).to_bits().to_le_bytes())),
        DType::BF16 => v.iter().for_each(|x| out.extend_from_slice(&half::bf16::from_f64(*x).to_bits().to_le_bytes())),
        _ => return None,
    }
    Some(out)
}

/// A model's tensors by name, plus the file-level metadata of safetensors.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TensorMap {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorMap {
    pub fn new() -> Self {
        Self::default()
    }
    /// f32 tensors from (name, shape, values), the form candle models export.
    pub fn from_f32_vec(items: Vec<(String, Vec<usize>, Vec<f32>)>) -> Result<TensorMap> {
        let mut m = TensorMap::new();
        for (name, shape, values) in items {
            let t = Tensor::from_f32(shape, &values).map_err(|e| Error::tensor(&name, e.to_string()))?;
            if m.tensors.insert(name.clone(), t).is_some() {
                return Err(Error::tensor(&name, "given twice"));
            }
        }
        Ok(m)
    }
    /// Every float tensor as (name, shape, f32 values), name order; integer tensors are skipped.
    pub fn to_f32_vec(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.tensors
            .iter()
            .filter(|(_, t)| t.dtype.is_float())
            .map(|(n, t)| (n.clone(), t.shape.clone(), t.to_f32(n).expect("float")))
            .collect()
    }
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| Error::tensor(name, "missing"))
    }
    pub fn insert_f32(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) -> Result<()> {
        self.tensors.insert(name.to_string(), Tensor::from_f32(shape, values)?);
        Ok(())
    }
    /// Whether `path` is a single safetensors file, from its first 9 bytes only (models are large).
    pub fn is_single_safetensors(path: &Path) -> Result<bool> {
        use std::io::Read;
        if path.is_dir() || path.to_string_lossy().ends_with(".json") {
            return Ok(false);
        }
        let mut head = [0u8; 9];
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let n = f.read(&mut head).map_err(|e| Error::io(path, e))?;
        Ok(looks_like_safetensors(&head[..n]))
    }
    /// Loads safetensors (a file, a sharded `*.index.json`, or a folder holding either) or a
    /// PyTorch zip checkpoint (`.pt`, `.pth`, `.pth.tar`), told apart by content, not by name.
    pub fn load(path: &Path) -> Result<TensorMap> {
        if path.is_dir() {
            let idx = path.join("model.safetensors.index.json");
            if idx.exists() {
                return load_sharded(&idx);
            }
            let single = path.join("model.safetensors");
            if single.exists() {
                return load_safetensors(&single);
            }
            return Err(Error::format(path, "folder holds neither model.safetensors nor model.safetensors.index.json"));
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if path.to_string_lossy().ends_with(".json") {
            return load_sharded(path);
        }
        if bytes.starts_with(b"PK\x03\x04") {
            return crate::pth::load_pth_bytes(path, &bytes);
        }
        // A safetensors length prefix may start with 0x80 too.
        if !looks_like_safetensors(&bytes) && bytes.first() == Some(&0x80) && bytes.len() > 1 && bytes[1] <= 5 {
            return Err(Error::format(path, "a legacy (non-zip) PyTorch pickle file: re-save it with torch >= 1.6 (zip format) or as safetensors"));
        }
        parse_safetensors_owned(path, &bytes)
    }
    /// Writes one safetensors file (tensors in name order) through a temp file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let header = build_header(&self.metadata, self.tensors.iter().map(|(n, t)| (n.as_str(), t.dtype, t.shape.as_slice(), t.data.len())))?;
        write_atomic(path, &header, self.tensors.values().map(|t| t.data.as_slice()))
    }
}

/// A parsed safetensors header: entries sorted by offset; offsets relative to `data_start`.
#[derive(Clone, Debug)]
pub struct StFile {
    pub header_json: String,
    pub metadata: BTreeMap<String, String>,
    pub entries: Vec<StEntry>,
    pub data_start: usize,
}

#[derive(Clone, Debug)]
pub struct StEntry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub start: usize,
    pub end: usize,
}

const MAX_HEADER: u64 = 100_000_000;

/// Validates the header against the file length; no tensor data is read.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<StFile> {
    if bytes.len() < 8 {
        return Err(Error::format(path, format!("{} bytes: too short for a safetensors file (truncated?)", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    if n > (bytes.len() - 8) as u64 {
        return Err(Error::format(path, format!("header length {n} is larger than the file ({} bytes): truncated or not safetensors", bytes.len())));
    }
    if n > MAX_HEADER {
        return Err(Error::format(path, format!("header length {n} exceeds the {MAX_HEADER} byte limit")));
    }
    let n = n as usize;
    let header_json = std::str::from_utf8(&bytes[8..8 + n]).map_err(|_| Error::format(path, "header is not UTF-8"))?.to_string();
    let data_len = bytes.len() - 8 - n;
    parse_header_json(path, header_json, Some(data_len))
}

/// Parses and validates a header; `data_len` None takes the end of the last tensor.
pub fn parse_header_json(path: &Path, header_json: String, data_len: Option<usize>) -> Result<StFile> {
    let n = header_json.len();
    let v: serde_json::Value = serde_json::from_str(&header_json).map_err(|e| Error::format(path, format!("header is not valid JSON: {e}")))?;
    let obj = v.as_object().ok_or_else(|| Error::format(path, "header is not a JSON object"))?;
    let data_len = match data_len {
        Some(d) => d,
        None => obj
            .iter()
            .filter(|(k, _)| *k != "__metadata__")
            .filter_map(|(_, v)| v.get("data_offsets").and_then(|o| o.get(1)).and_then(|e| e.as_u64()))
            .max()
            .unwrap_or(0) as usize,
    };
    let mut metadata = BTreeMap::new();
    let mut entries = Vec::new();
    for (name, val) in obj {
        if name == "__metadata__" {
            let m = val.as_object().ok_or_else(|| Error::format(path, "__metadata__ is not an object"))?;
            for (k, v) in m {
                let s = v.as_str().ok_or_else(|| Error::format(path, format!("metadata {k} is not a string")))?;
                metadata.insert(k.clone(), s.to_string());
            }
            continue;
        }
        let bad = |msg: String| Error::format(path, format!("tensor {name}: {msg}"));
        let dt = val.get("dtype").and_then(|d| d.as_str()).ok_or_else(|| bad("no dtype".into()))?;
        let dtype = DType::parse(dt).ok_or_else(|| bad(format!("unknown dtype {dt}")))?;
        let shape: Vec<usize> = val
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| bad("no shape".into()))?
            .iter()
            .map(|d| d.as_u64().map(|x| x as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| bad("shape is not a list of non-negative integers".into()))?;
        let offs = val.get("data_offsets").and_then(|s| s.as_array()).ok_or_else(|| bad("no data_offsets".into()))?;
        if offs.len() != 2 {
            return Err(bad("data_offsets must hold two numbers".into()));
        }
        let start = offs[0].as_u64().ok_or_else(|| bad("bad data_offsets".into()))? as usize;
        let end = offs[1].as_u64().ok_or_else(|| bad("bad data_offsets".into()))? as usize;
        if start > end || end > data_len {
            return Err(bad(format!("data_offsets [{start}, {end}] outside the data region of {data_len} bytes (truncated file?)")));
        }
        let want = shape.iter().try_fold(dtype.size(), |a, &d| a.checked_mul(d)).ok_or_else(|| bad("shape overflows".into()))?;
        if end - start != want {
            return Err(bad(format!("holds {} bytes but shape {shape:?} of {dtype} needs {want}", end - start)));
        }
        entries.push(StEntry { name: name.clone(), dtype, shape, start, end });
    }
    entries.sort_by_key(|e| (e.start, e.end));
    let mut pos = 0usize;
    for e in &entries {
        if e.start < pos {
            return Err(Error::format(path, format!("tensor {}: data_offsets [{}, {}] overlap the previous tensor", e.name, e.start, e.end)));
        }
        if e.start > pos {
            return Err(Error::format(path, format!("tensor {}: gap of {} bytes before its data", e.name, e.start - pos)));
        }
        pos = e.end;
    }
    if pos != data_len {
        return Err(Error::format(path, format!("{} trailing bytes after the last tensor", data_len - pos)));
    }
    Ok(StFile { header_json, metadata, entries, data_start: 8 + n })
}

fn parse_safetensors_owned(path: &Path, bytes: &[u8]) -> Result<TensorMap> {
    let st = parse_header(path, bytes)?;
    let mut m = TensorMap { metadata: st.metadata.clone(), ..Default::default() };
    for e in &st.entries {
        let data = bytes[st.data_start + e.start..st.data_start + e.end].to_vec();
        m.tensors.insert(e.name.clone(), Tensor { dtype: e.dtype, shape: e.shape.clone(), data });
    }
    Ok(m)
}

pub fn load_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_safetensors_owned(path, &bytes)
}

/// Hugging Face sharding: `{"weight_map": {tensor: shard file}}` next to the shards.
pub fn load_sharded(index: &Path) -> Result<TensorMap> {
    let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::format(index, format!("not valid JSON: {e}")))?;
    let wm = v.get("weight_map").and_then(|w| w.as_object()).ok_or_else(|| Error::format(index, "no weight_map object"))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut shards: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, f) in wm {
        let f = f.as_str().ok_or_else(|| Error::format(index, format!("tensor {name}: shard is not a string")))?;
        if f.contains("..") || Path::new(f).is_absolute() {
            return Err(Error::format(index, format!("tensor {name}: shard path {f} leaves the folder")));
        }
        shards.entry(f.to_string()).or_default().push(name.clone());
    }
    let mut out = TensorMap::new();
    for (f, names) in shards {
        let p = dir.join(&f);
        let mut m = load_safetensors(&p)?;
        for n in names {
            let t = m.tensors.remove(&n).ok_or_else(|| Error::format(&p, format!("tensor {n}: listed in {} but missing", index.display())))?;
            out.tensors.insert(n, t);
        }
        out.metadata.extend(m.metadata);
    }
    Ok(out)
}

/// The JSON header for tensors laid out in the given order, padded with spaces to 8 bytes.
pub fn build_header<'a>(metadata: &BTreeMap<String, String>, items: impl Iterator<Item = (&'a str, DType, &'a [usize], usize)>) -> Result<String> {
    let mut obj = serde_json::Map::new();
    if !metadata.is_empty() {
        obj.insert("__metadata__".into(), serde_json::to_value(metadata).unwrap());
    }
    let mut off = 0usize;
    for (name, dtype, shape, len) in items {
        if obj.contains_key(name) {
            return Err(Error::tensor(name, "duplicate name"));
        }
        obj.insert(name.to_string(), serde_json::json!({"dtype": dtype.name(), "shape": shape, "data_offsets": [off, off + len]}));
        off += len;
    }
    let mut s = serde_json::to_string(&serde_json::Value::Object(obj)).unwrap();
    let pad = (8 - s.len() % 8) % 8;
    s.push_str(&" ".repeat(pad));
    Ok(s)
}

/// Writes `len | header | chunks…` to a temp file in the target folder, then renames it into place:
/// a failure never leaves a partial output behind.
/// A length prefix, then the JSON header's '{' (a pickle or zip never has that byte there).
fn looks_like_safetensors(head: &[u8]) -> bool {
    head.len() >= 9 && head[8] == b'{'
}

/// A temp file in `path`'s folder, so the final rename stays on one filesystem (atomic).
pub(crate) fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    tempfile::NamedTempFile::new_in(&dir).map_err(|e| Error::io(&dir, e))
}

/// Copies `len` bytes from `src_off` of `src` to `out_off` of `out` in the kernel
/// (std::io::copy becomes copy_file_range). It moves both file positions: callers writing to the
/// same files from another thread must use positional writes only.
pub(crate) fn copy_range(src: &std::fs::File, src_path: &Path, out: &std::fs::File, out_path: &Path, (src_off, out_off, len): (u64, u64, u64)) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let (mut r, mut w) = (src, out);
    w.seek(SeekFrom::Start(out_off)).map_err(|e| Error::io(out_path, e))?;
    r.seek(SeekFrom::Start(src_off)).map_err(|e| Error::io(src_path, e))?;
    let got = std::io::copy(&mut r.take(len), &mut w).map_err(|e| Error::io(out_path, e))?;
    if got != len {
        return Err(Error::format(src_path, "file shrank while being read"));
    }
    Ok(())
}

/// The length prefix and JSON header of a safetensors file, at its start.
pub(crate) fn write_header_at(out: &std::fs::File, out_path: &Path, header: &str) -> Result<()> {
    use std::os::unix::fs::FileExt;
    out.write_all_at(&(header.len() as u64).to_le_bytes(), 0).map_err(|e| Error::io(out_path, e))?;
    out.write_all_at(header.as_bytes(), 8).map_err(|e| Error::io(out_path, e))
}

pub fn write_atomic<'a>(path: &Path, header: &str, chunks: impl Iterator<Item = &'a [u8]>) -> Result<()> {
    let tmp = temp_beside(path)?;
    {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file());
        w.write_all(&(header.len() as u64).to_le_bytes()).map_err(|e| Error::io(path, e))?;
        w.write_all(header.as_bytes()).map_err(|e| Error::io(path, e))?;
        for c in chunks {
            w.write_all(c).map_err(|e| Error::io(path, e))?;
        }
        w.flush().map_err(|e| Error::io(path, e))?;
    }
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Reads and validates only the header of a safetensors file (tensor data stays on disk).
pub fn read_header(path: &Path, file: &std::fs::File) -> Result<StFile> {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut b8 = [0u8; 8];
    if len < 8 {
        return Err(Error::format(path, format!("{len} bytes: too short for a safetensors file (truncated?)")));
    }
    file.read_exact_at(&mut b8, 0).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(b8);
    if n > len - 8 {
        return Err(Error::format(path, format!("header length {n} is larger than the file ({len} bytes): truncated or not safetensors")));
    }
    if n > MAX_HEADER {
        return Err(Error::format(path, format!("header length {n} exceeds the {MAX_HEADER} byte limit")));
    }
    let mut h = vec![0u8; n as usize];
    file.read_exact_at(&mut h, 8).map_err(|e| Error::io(path, e))?;
    let json = String::from_utf8(h).map_err(|_| Error::format(path, "header is not UTF-8"))?;
    parse_header_json(path, json, Some((len - 8 - n) as usize))
}

/// Output offset alignment that makes the kernel's file-to-file copy fast (see write_atomic_chunks).
pub(crate) const COPY_ALIGN: u64 = 64 * 1024;

/// A piece of an output file: bytes in memory, or a byte range of the source file copied by the
/// kernel (copy_file_range) without passing through rws's memory.
pub enum Chunk<'a> {
    Bytes(&'a [u8]),
    Range { offset: u64, len: u64 },
}

impl Chunk<'_> {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn len(&self) -> u64 {
        match self {
            Chunk::Bytes(b) => b.len() as u64,
            Chunk::Range { len, .. } => *len,
        }
    }
}

/// Like [`write_atomic`], with ranges copied from `src`. The kernel copy of the ranges (nearly
/// all of a model's bytes) runs on its own thread while this one writes everything else
/// (patched tensors, pristine copies, payloads) into the gaps between them. Adjacent ranges with the same displacement are one copy.
pub fn write_atomic_chunks(
    path: &Path,
    header: &str,
    src: &std::fs::File,
    src_path: &Path,
    chunks: &[Chunk],
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let tmp = temp_beside(path)?;
    let out = tmp.as_file();
    let ioe = |e| Error::io(path, e);
    let data0 = 8 + header.len() as u64;
    // Output offset of every chunk.
    let mut offs = Vec::with_capacity(chunks.len());
    let mut pos = data0;
    for c in chunks {
        offs.push(pos);
        pos += c.len();
    }
    // Copy segments: (src offset, out offset, len).
    let mut segs: Vec<(u64, u64, u64)> = Vec::new();
    for (c, &o) in chunks.iter().zip(&offs) {
        if let Chunk::Range { offset, len } = c {
            match segs.last_mut() {
                Some((s0, o0, l)) if *o0 + *l == o && *s0 + *l == *offset => *l += len,
                _ => segs.push((*offset, o, *len)),
            }
        }
    }
    // The kernel copy is ~1.5× faster when its output offset is a multiple of 64 KiB (measured on
    // ext4, kernel 6.18: 0.18 s vs 0.27 s for 494 MB; splice writes 64 KiB pipe buffers, and
    // unaligned ones get small page-cache folios). So a segment starts earlier, at the aligned
    // offset, when the source has the bytes before it and no other segment owns that stretch of
    // output; the chunks (or header) it overwrites there are written after the copy.
    let mut late = vec![false; chunks.len()];
    let mut prev_end = 0u64;
    for seg in segs.iter_mut() {
        let k = seg.1 % COPY_ALIGN;
        if k > 0 && k <= seg.0 && seg.1 - k >= prev_end {
            for (i, (c, &o)) in chunks.iter().zip(&offs).enumerate() {
                if !matches!(c, Chunk::Range { .. }) && o < seg.1 && o + c.len() > seg.1 - k {
                    late[i] = true;
                }
            }
            *seg = (seg.0 - k, seg.1 - k, seg.2 + k);
        }
        prev_end = seg.1 + seg.2;
    }
    out.set_len(pos).map_err(ioe)?;
    // The other thread only uses positional writes, so the moved file positions are harmless.
    let copy = || segs.iter().try_for_each(|&seg| copy_range(src, src_path, out, path, seg));
    let write_chunks = |late_ones: bool| -> Result<()> {
        for ((c, &o), &l) in chunks.iter().zip(&offs).zip(&late) {
            if l != late_ones {
                continue;
            }
            match c {
                Chunk::Bytes(b) => out.write_all_at(b, o).map_err(ioe)?,
                Chunk::Range { .. } => {}
            }
        }
        Ok(())
    };
    let (copied, written) = std::thread::scope(|sc| {
        let h = sc.spawn(copy);
        let w = write_chunks(false);
        (h.join().unwrap_or_else(|_| Err(Error::Invalid("copy thread panicked".into()))), w)
    });
    copied?;
    written?;
    write_chunks(true)?;
    write_header_at(out, path, header)?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// SHA-256 feed of one tensor: name, dtype, dims and bytes, each delimited.
pub(crate) fn hash_tensor(h: &mut Sha256, name: &str, dtype: DType, shape: &[usize], data: &[u8]) {
    h.update(name.as_bytes());
    h.update([0]);
    h.update(dtype.name().as_bytes());
    h.update([0]);
    for d in shape {
        h.update((*d as u64).to_le_bytes());
    }
    h.update(data);
}

pub(crate) fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}
