//! Patching: θ = θ_pristine + Σ αᵢ·vᵢ, always from pristine values (f64, rounded once), in process
//! ([`Patcher`]) and on files ([`patch_file`], [`unpatch_file`]; the patched file carries the pristine
//! bytes and the signatures, docs/FORMAT.md).

use crate::signature::Signature;
use crate::tensor::{build_header, bytes_to_f64, f64_to_bytes, parse_header_json, read_header, write_atomic_chunks, Chunk, DType, Tensor, TensorMap};
use crate::{Error, Result, FORMAT_VERSION};
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const PREFIX: &str = "__rws__.";

#[derive(Clone, Debug, Default)]
pub struct PatchOptions {
    /// Accept dtype mismatches (values are cast) and signatures with different pretrained fingerprints.
    pub force: bool,
}

/// What a file patch did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PatchReport {
    pub touched: Vec<String>,
    /// (name, checksum, alpha) of every signature now applied, in order.
    pub signatures: Vec<(String, String, f64)>,
}

/// Refuses what cannot be applied, naming the tensor: missing, other shape, other dtype (unless
/// forced), non-finite α, signatures extracted against different pretrained weights (unless forced).
pub fn check_compat<'a>(sigs: &[(&Signature, f64)], lookup: impl Fn(&str) -> Option<(DType, &'a [usize])>, force: bool) -> Result<()> {
    for (s, a) in sigs {
        if !a.is_finite() {
            return Err(Error::Invalid(format!("alpha {a} for signature {} is not a finite number", s.info.name)));
        }
        for t in &s.tensors {
            let (dt, shape) = lookup(&t.name).ok_or_else(|| Error::tensor(&t.name, format!("in signature {} but not in the model", s.info.name)))?;
            if shape != t.shape.as_slice() {
                return Err(Error::tensor(&t.name, format!("shape {:?} in the model, {:?} in signature {}", shape, t.shape, s.info.name)));
            }
            if !dt.is_float() {
                return Err(Error::tensor(&t.name, format!("model tensor is {dt}: integer/bool tensors are never patched")));
            }
            if dt != t.dtype && !force {
                return Err(Error::tensor(&t.name, format!("dtype {dt} in the model, {} in signature {} (--force casts)", t.dtype, s.info.name)));
            }
        }
    }
    if let Some((first, _)) = sigs.first() {
        for (s, _) in &sigs[1..] {
            if s.fingerprint != first.fingerprint && !force {
                return Err(Error::Invalid(format!(
                    "signatures {} and {} were extracted against different pretrained weights (fingerprints differ; --force to combine anyway)",
                    first.info.name, s.info.name
                )));
            }
        }
    }
    Ok(())
}

/// New bytes of one tensor from its pristine bytes.
fn patched_bytes(name: &str, dtype: DType, pristine: &[u8], sigs: &[(&Signature, f64)]) -> Result<Vec<u8>> {
    let mut acc = bytes_to_f64(dtype, pristine).ok_or_else(|| Error::tensor(name, format!("dtype {dtype} cannot be patched")))?;
    if let Some(i) = acc.iter().position(|v| !v.is_finite()) {
        return Err(Error::tensor(name, format!("model weight holds {} at index {i}", acc[i])));
    }
    for (s, a) in sigs {
        if let Some(t) = s.get(name) {
            for (x, v) in acc.iter_mut().zip(t.values()) {
                *x += a * v as f64;
            }
        }
    }
    let out = f64_to_bytes(dtype, &acc).expect("float dtype");
    let back = bytes_to_f64(dtype, &out).unwrap();
    if let Some(i) = back.iter().position(|v| !v.is_finite()) {
        return Err(Error::tensor(name, format!("patched value at index {i} overflows {dtype} (alpha too large?)")));
    }
    Ok(out)
}

/// In-process patcher: remembers the pristine bytes of every tensor it changed, so any set of
/// (signature, α) can be applied, changed and reset exactly without reloading the model.
#[derive(Clone, Debug, Default)]
pub struct Patcher {
    pristine: BTreeMap<String, Tensor>,
    pub force: bool,
}

impl Patcher {
    pub fn new() -> Patcher {
        Patcher::default()
    }
    /// Sets the model to pristine + Σ α·v (replacing what was applied before). All-or-nothing: on
    /// error the model is unchanged.
    pub fn apply(&mut self, map: &mut TensorMap, sigs: &[(&Signature, f64)]) -> Result<()> {
        check_compat(sigs, |n| map.tensors.get(n).map(|t| (t.dtype, t.shape.as_slice())), self.force)?;
        let mut names: BTreeSet<String> = self.pristine.keys().cloned().collect();
        names.extend(sigs.iter().flat_map(|(s, _)| s.tensors.iter().map(|t| t.name.clone())));
        let names: Vec<String> = names.into_iter().collect();
        let new: Vec<(String, Vec<u8>)> = names
            .par_iter()
            .map(|n| {
                let t = self.pristine.get(n).or_else(|| map.tensors.get(n)).ok_or_else(|| Error::tensor(n, "missing from the model"))?;
                Ok((n.clone(), patched_bytes(n, t.dtype, &t.data, sigs)?))
            })
            .collect::<Result<_>>()?;
        for (n, bytes) in new {
            let t = map.tensors.get_mut(&n).ok_or_else(|| Error::tensor(&n, "missing from the model"))?;
            if !self.pristine.contains_key(&n) {
                self.pristine.insert(n.clone(), t.clone());
            }
            t.data = bytes;
        }
        Ok(())
    }
    /// Puts the pristine bytes back.
    pub fn reset(&mut self, map: &mut TensorMap) {
        for (n, t) in std::mem::take(&mut self.pristine) {
            map.tensors.insert(n, t);
        }
    }
    /// Names of tensors currently differing from pristine (or possibly so).
    pub fn touched(&self) -> Vec<String> {
        self.pristine.keys().cloned().collect()
    }
}

/// Adds `sigs` to a safetensors file. Untouched tensors are copied from a memory map without being
/// parsed. A patched input keeps its pristine values and signature list (same checksum: α replaced,
/// α = 0: removed).
pub fn patch_file(model: &Path, sigs: &[(Signature, f64)], out: &Path, opts: &PatchOptions) -> Result<PatchReport> {
    refuse_same(model, out)?;
    let file = std::fs::File::open(model).map_err(|e| Error::io(model, e))?;
    let st = read_header(model, &file)?;
    // Only what arithmetic needs is read: touched tensors and rws's own entries.
    let mut wanted: BTreeSet<String> = st.entries.iter().filter(|e| e.name.starts_with(PREFIX)).map(|e| e.name.clone()).collect();
    wanted.extend(sigs.iter().flat_map(|(s, _)| s.tensors.iter().map(|t| t.name.clone())));
    if let Some(p) = st.metadata.get("rws.patch") {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(p) {
            if let Ok(t) = serde_json::from_value::<Vec<String>>(v["touched"].clone()) {
                wanted.extend(t);
            }
        }
    }
    let loaded = read_entries(model, &file, &st, &wanted)?;
    let slice = |e: &crate::tensor::StEntry| -> &[u8] { loaded.get(&e.name).map(|v| v.as_slice()).unwrap_or(&[]) };
    let mut metadata = st.metadata.clone();
    let prev = metadata.remove("rws.patch");
    let entries: Vec<&crate::tensor::StEntry> = st.entries.iter().filter(|e| !e.name.starts_with(PREFIX)).collect();
    let by_name: BTreeMap<&str, &crate::tensor::StEntry> = st.entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let (original_header, mut touched, mut list) = match &prev {
        None => (st.header_json.clone(), BTreeSet::new(), Vec::new()),
        Some(p) => {
            let (oh, t, l) = read_state(model, p, &by_name, &slice)?;
            (oh, t, l.into_iter().map(|(s, a)| (std::borrow::Cow::<Signature>::Owned(s), a)).collect::<Vec<_>>())
        }
    };
    // Checksums hash the whole payload: each signature's parts (which carry it) are built once.
    let mut parts: Vec<_> = list.iter().map(|(x, _)| x.to_parts()).collect();
    for (s, a) in sigs {
        let p = s.to_parts();
        if let Some(i) = parts.iter().position(|x| x.0["rws.checksum"] == p.0["rws.checksum"]) {
            list[i].1 = *a;
        } else {
            list.push((std::borrow::Cow::Borrowed(s), *a));
            parts.push(p);
        }
    }
    let keep: Vec<bool> = list.iter().map(|(_, a)| *a != 0.0).collect();
    let mut it = keep.iter();
    list.retain(|_| *it.next().unwrap());
    let mut it = keep.iter();
    parts.retain(|_| *it.next().unwrap());
    let sums: Vec<String> = parts.iter().map(|p| p.0["rws.checksum"].clone()).collect();
    let refs: Vec<(&Signature, f64)> = list.iter().map(|(s, a)| (s.as_ref(), *a)).collect();
    check_compat(&refs, |n| by_name.get(n).filter(|_| !n.starts_with(PREFIX)).map(|e| (e.dtype, e.shape.as_slice())), opts.force)?;
    touched.extend(list.iter().flat_map(|(s, _)| s.tensors.iter().map(|t| t.name.clone())));
    let pristine = |n: &str| -> Result<&[u8]> {
        let key = format!("{PREFIX}orig.{n}");
        match by_name.get(key.as_str()) {
            Some(e) => Ok(slice(e)),
            None => Ok(slice(by_name.get(n).ok_or_else(|| Error::tensor(n, "missing from the model"))?)),
        }
    };
    let touched_v: Vec<String> = touched.iter().cloned().collect();
    let touched_idx: BTreeMap<&str, usize> = touched_v.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    // Every pristine value is there before a byte is written (no partial output on a bad name).
    for n in &touched_v {
        pristine(n)?;
    }
    // Layout: model tensors in their offset order, then pristine copies, then signature payloads.
    // Patched tensors are computed while the kernel copies the untouched ones.
    let mut items: Vec<(String, DType, Vec<usize>, Chunk)> = Vec::new();
    for e in &entries {
        let data = match touched_idx.get(e.name.as_str()) {
            Some(&key) => Chunk::Computed { key, len: (e.end - e.start) as u64 },
            None => Chunk::Range { offset: (st.data_start + e.start) as u64, len: (e.end - e.start) as u64 },
        };
        items.push((e.name.clone(), e.dtype, e.shape.clone(), data));
    }
    for n in &touched_v {
        let e = by_name[n.as_str()];
        items.push((format!("{PREFIX}orig.{n}"), e.dtype, e.shape.clone(), Chunk::Bytes(pristine(n)?)));
    }
    for (k, (_, payload)) in parts.iter().enumerate() {
        for (key, (d, s, b)) in payload {
            items.push((format!("{PREFIX}sig{k}.{key}"), *d, s.clone(), Chunk::Bytes(b.as_slice())));
        }
    }
    let state = serde_json::json!({
        "version": FORMAT_VERSION,
        "original_header": original_header,
        "touched": touched_v,
        "signatures": list.iter().zip(&parts).map(|((_, a), (md, _))| serde_json::json!({"alpha": format!("{a:?}"), "metadata": md})).collect::<Vec<_>>(),
    });
    metadata.insert("rws.patch".into(), state.to_string());
    let mut header = build_header(&metadata, items.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.len() as usize)))?;
    // Same data offset modulo COPY_ALIGN as the input, so the kernel copy can start on an aligned
    // output offset (see write_atomic_chunks); costs at most 64 KiB of header spaces.
    let a = crate::tensor::COPY_ALIGN as usize;
    let pad = (st.data_start % a + a - (8 + header.len()) % a) % a;
    header.push_str(&" ".repeat(pad));
    let chunks: Vec<Chunk> = items.into_iter().map(|i| i.3).collect();
    let compute = |key: usize| -> Result<Vec<u8>> {
        let n = &touched_v[key];
        patched_bytes(n, by_name[n.as_str()].dtype, pristine(n)?, &refs)
    };
    write_atomic_chunks(out, &header, &file, model, &chunks, &compute)?;
    Ok(PatchReport { touched: touched_v, signatures: list.iter().zip(sums).map(|((s, a), c)| (s.info.name.clone(), c, *a)).collect() })
}

type State = (String, BTreeSet<String>, Vec<(Signature, f64)>);

fn read_state<'m>(path: &Path, p: &str, by_name: &BTreeMap<&str, &crate::tensor::StEntry>, slice: &dyn Fn(&crate::tensor::StEntry) -> &'m [u8]) -> Result<State> {
    let bad = |m: String| Error::format(path, format!("rws.patch: {m}"));
    let v: serde_json::Value = serde_json::from_str(p).map_err(|e| bad(e.to_string()))?;
    let ver = v["version"].as_u64().ok_or_else(|| bad("no version".into()))?;
    if ver > FORMAT_VERSION as u64 {
        return Err(bad(format!("version {ver} is newer than this rws")));
    }
    let oh = v["original_header"].as_str().ok_or_else(|| bad("no original_header".into()))?.to_string();
    let touched: BTreeSet<String> = serde_json::from_value(v["touched"].clone()).map_err(|e| bad(e.to_string()))?;
    for t in &touched {
        if !by_name.contains_key(format!("{PREFIX}orig.{t}").as_str()) {
            return Err(bad(format!("pristine copy of tensor {t} is missing")));
        }
    }
    let mut list = Vec::new();
    for (k, s) in v["signatures"].as_array().ok_or_else(|| bad("no signatures".into()))?.iter().enumerate() {
        // α travels as a string: Rust's float parsing is exact, JSON number parsing may be off by an ulp.
        let alpha: f64 = s["alpha"].as_str().and_then(|a| a.parse().ok()).ok_or_else(|| bad("signature without a valid alpha".into()))?;
        let md: BTreeMap<String, String> = serde_json::from_value(s["metadata"].clone()).map_err(|e| bad(e.to_string()))?;
        let pre = format!("{PREFIX}sig{k}.");
        let payload = by_name
            .iter()
            .filter_map(|(n, e)| n.strip_prefix(pre.as_str()).map(|key| (key.to_string(), (e.dtype, e.shape.clone(), slice(e).to_vec()))))
            .collect();
        list.push((Signature::from_parts(path, &md, &payload)?, alpha));
    }
    Ok((oh, touched, list))
}

/// Reads the named entries (pread), nothing else.
fn read_entries(path: &Path, file: &std::fs::File, st: &crate::tensor::StFile, names: &BTreeSet<String>) -> Result<BTreeMap<String, Vec<u8>>> {
    use std::os::unix::fs::FileExt;
    let mut out = BTreeMap::new();
    for e in st.entries.iter().filter(|e| names.contains(&e.name)) {
        let mut b = vec![0u8; e.end - e.start];
        file.read_exact_at(&mut b, (st.data_start + e.start) as u64).map_err(|x| Error::io(path, x))?;
        out.insert(e.name.clone(), b);
    }
    Ok(out)
}

fn refuse_same(input: &Path, out: &Path) -> Result<()> {
    if let (Ok(a), Ok(b)) = (input.canonicalize(), out.canonicalize()) {
        if a == b {
            return Err(Error::Invalid(format!("output {} is the input: inputs are never overwritten", out.display())));
        }
    }
    Ok(())
}

/// Gives back the file `patch_file` started from, bit for bit.
pub fn unpatch_file(patched: &Path, out: &Path) -> Result<()> {
    refuse_same(patched, out)?;
    let file = std::fs::File::open(patched).map_err(|e| Error::io(patched, e))?;
    let st = read_header(patched, &file)?;
    let p = st.metadata.get("rws.patch").ok_or_else(|| Error::format(patched, "not a patched file (no rws.patch metadata)"))?;
    let by_name: BTreeMap<&str, &crate::tensor::StEntry> = st.entries.iter().map(|e| (e.name.as_str(), e)).collect();
    let wanted: BTreeSet<String> = st.entries.iter().filter(|e| e.name.starts_with(PREFIX)).map(|e| e.name.clone()).collect();
    let loaded = read_entries(patched, &file, &st, &wanted)?;
    let slice = |e: &crate::tensor::StEntry| -> &[u8] { loaded.get(&e.name).map(|v| v.as_slice()).unwrap_or(&[]) };
    let (oh, touched, _) = read_state(patched, p, &by_name, &slice)?;
    let orig = parse_header_json(patched, oh.clone(), None).map_err(|e| Error::format(patched, format!("rws.patch original_header: {e}")))?;
    let mut chunks: Vec<Chunk> = Vec::new();
    for e in &orig.entries {
        let key = if touched.contains(&e.name) { format!("{PREFIX}orig.{}", e.name) } else { e.name.clone() };
        let cur = by_name.get(key.as_str()).ok_or_else(|| Error::format(patched, format!("tensor {key}: missing, cannot unpatch")))?;
        if cur.dtype != e.dtype || cur.shape != e.shape {
            return Err(Error::format(patched, format!("tensor {key}: dtype/shape differ from the original header")));
        }
        chunks.push(Chunk::Range { offset: (st.data_start + cur.start) as u64, len: (cur.end - cur.start) as u64 });
    }
    write_atomic_chunks(out, &oh, &file, patched, &chunks, &|k| Err(Error::Invalid(format!("unpatch has no computed chunk {k}"))))
}
