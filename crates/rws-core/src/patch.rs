//! Patching: θ = θ_pristine + Σ αᵢ·vᵢ, always from pristine values (f64, rounded once), in process
//! ([`Patcher`]) and on files ([`patch_file`], [`unpatch_file`]; the patched file carries the pristine
//! bytes and the signatures, docs/FORMAT.md).

use crate::signature::Signature;
use crate::tensor::{build_header, bytes_to_f64, copy_range, f64_to_bytes, parse_header_json, read_header, temp_beside, write_atomic_chunks, write_header_at, Chunk, DType, Tensor, TensorMap, COPY_ALIGN};
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

/// A byte of a planned output file: a range of the model file, or bytes rws made.
enum Piece {
    Range { offset: u64, len: u64 },
    Owned(Vec<u8>),
}

/// A patched file, planned before a byte is written: header (unpadded) and pieces in file order.
struct Plan {
    header: String,
    pieces: Vec<Piece>,
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Range { len, .. } => *len,
            Piece::Owned(b) => b.len() as u64,
        }
    }
}

impl Plan {
    fn chunks(&self) -> Vec<Chunk<'_>> {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Range { offset, len } => Chunk::Range { offset: *offset, len: *len },
                Piece::Owned(b) => Chunk::Bytes(b),
            })
            .collect()
    }
    /// The header padded with spaces so the data starts at `data0`.
    fn header_for(&self, data0: usize) -> String {
        format!("{}{}", self.header, " ".repeat(data0 - 8 - self.header.len()))
    }
}

/// The first data offset ≥ `min` that equals the input's `data_start` modulo COPY_ALIGN, so the
/// kernel copy can start on an aligned output offset (see write_atomic_chunks); the header pays at
/// most 64 KiB of spaces for it.
fn data_offset(min: usize, data_start: usize) -> usize {
    let a = COPY_ALIGN as usize;
    min + (data_start % a + a - min % a) % a
}

/// Adds `sigs` to a safetensors file. Untouched tensors are copied by the kernel without being
/// read into memory. A patched input keeps its pristine values and signature list (same
/// checksum: α replaced, α = 0: removed).
pub fn patch_file(model: &Path, sigs: &[(Signature, f64)], out: &Path, opts: &PatchOptions) -> Result<PatchReport> {
    refuse_same(model, out)?;
    let file = std::fs::File::open(model).map_err(|e| Error::io(model, e))?;
    let st = read_header(model, &file)?;
    let refs: Vec<(&Signature, f64)> = sigs.iter().map(|(s, a)| (s, *a)).collect();
    let (plan, report) = plan(model, &file, &st, &refs, opts)?;
    write_atomic_chunks(out, &plan.header_for(data_offset(8 + plan.header.len(), st.data_start)), &file, model, &plan.chunks())?;
    Ok(report)
}

/// [`patch_file`] with the signatures given as `.rws` files: the kernel starts copying the model
/// while the signatures are still being read and checked, so patching costs little more than the
/// copy. The header space is reserved from the sizes of the inputs' headers; in the rare case the
/// new header does not fit, the file is written again the plain way.
pub fn patch_file_with_sig_files(model: &Path, sigs: &[(std::path::PathBuf, f64)], out: &Path, opts: &PatchOptions) -> Result<PatchReport> {
    use std::os::unix::fs::FileExt;
    refuse_same(model, out)?;
    let file = std::fs::File::open(model).map_err(|e| Error::io(model, e))?;
    let st = read_header(model, &file)?;
    let load = || -> Result<Vec<(Signature, f64)>> { sigs.par_iter().map(|(p, a)| Ok((Signature::load(p)?, *a))).collect() };
    // The model tensors must form one stretch with rws's own entries (if any) after it.
    let model_entries = st.entries.iter().filter(|e| !e.name.starts_with(PREFIX));
    let span = (model_entries.clone().map(|e| e.start).min().unwrap_or(0), model_entries.map(|e| e.end).max().unwrap_or(0));
    if span.1 == span.0 || st.entries.iter().any(|e| e.name.starts_with(PREFIX) && e.start < span.1) {
        return patch_file(model, &load()?, out, opts);
    }
    let mut est = 8 + 3 * st.header_json.len() + 16 * 1024;
    for (p, _) in sigs {
        let mut b8 = [0u8; 8];
        let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
        f.read_exact_at(&mut b8, 0).map_err(|e| Error::io(p, e))?;
        // (Capped: a larger header simply takes the plain path below.)
        est += 3 * (u64::from_le_bytes(b8).min(1 << 20) as usize);
    }
    let data0 = data_offset(est, st.data_start);
    let shift = (data0 - st.data_start) as u64;
    let tmp = temp_beside(out)?;
    let f = tmp.as_file();
    // From an aligned output offset (the bytes before it land in the header area, written last).
    let k = ((st.data_start + span.0) as u64) % COPY_ALIGN;
    let seg = ((st.data_start + span.0) as u64 - k, (data0 + span.0) as u64 - k, (span.1 - span.0) as u64 + k);
    let seg_end = seg.1 + seg.2;
    let (planned, copied, finished) = std::thread::scope(|sc| {
        let copier = sc.spawn(|| copy_range(&file, model, f, out, seg));
        let planned = load().and_then(|l| {
            let refs: Vec<(&Signature, f64)> = l.iter().map(|(s, a)| (s, *a)).collect();
            plan(model, &file, &st, &refs, opts)
        });
        // The plan fits the early layout when its header fits and its model ranges are where the
        // copy put them. Pieces past the copied stretch go in while the copy runs (positional
        // writes only); those inside it (patched tensors), and the header, after.
        let mut late = Vec::new();
        let written: Result<Option<u64>> = match &planned {
            Ok((plan, _)) if 8 + plan.header.len() <= data0 => (|| {
                let mut pos = data0 as u64;
                for piece in &plan.pieces {
                    match piece {
                        Piece::Range { offset, len } if *offset + shift != pos || pos + len > seg_end => return Ok(None),
                        Piece::Range { .. } => {}
                        Piece::Owned(b) if pos < seg_end => late.push((pos, b.as_slice())),
                        Piece::Owned(b) => f.write_all_at(b, pos).map_err(|e| Error::io(out, e))?,
                    }
                    pos += piece.len();
                }
                Ok(Some(pos))
            })(),
            _ => Ok(None),
        };
        let copied = copier.join().unwrap_or_else(|_| Err(Error::Invalid("copy thread panicked".into())));
        let finished = match (&planned, &copied, written) {
            (Ok((plan, _)), Ok(()), Ok(Some(end))) => (|| {
                for (pos, b) in &late {
                    f.write_all_at(b, *pos).map_err(|e| Error::io(out, e))?;
                }
                write_header_at(f, out, &plan.header_for(data0))?;
                f.set_len(end).map_err(|e| Error::io(out, e))?;
                Ok(true)
            })(),
            (_, _, Err(e)) => Err(e),
            _ => Ok(false),
        };
        (planned, copied, finished)
    });
    let (plan, report) = planned?;
    copied?;
    if finished? {
        tmp.persist(out).map_err(|e| Error::io(out, e.error))?;
    } else {
        drop(tmp);
        write_atomic_chunks(out, &plan.header_for(data_offset(8 + plan.header.len(), st.data_start)), &file, model, &plan.chunks())?;
    }
    Ok(report)
}

/// Everything a patched file holds, before any byte is written (so a bad signature leaves nothing).
fn plan(model: &Path, file: &std::fs::File, st: &crate::tensor::StFile, sigs: &[(&Signature, f64)], opts: &PatchOptions) -> Result<(Plan, PatchReport)> {
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
    let loaded = read_entries(model, file, st, &wanted)?;
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
            list.push((std::borrow::Cow::Borrowed(*s), *a));
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
    let mut new: BTreeMap<String, Vec<u8>> = touched_v
        .par_iter()
        .map(|n| {
            let e = by_name[n.as_str()];
            Ok((n.clone(), patched_bytes(n, e.dtype, pristine(n)?, &refs)?))
        })
        .collect::<Result<_>>()?;
    // Layout: model tensors in their offset order, then pristine copies, then signature payloads.
    let mut items: Vec<(String, DType, Vec<usize>, Piece)> = Vec::new();
    for e in &entries {
        let data = match new.remove(&e.name) {
            Some(v) => Piece::Owned(v),
            None => Piece::Range { offset: (st.data_start + e.start) as u64, len: (e.end - e.start) as u64 },
        };
        items.push((e.name.clone(), e.dtype, e.shape.clone(), data));
    }
    for n in &touched_v {
        let e = by_name[n.as_str()];
        items.push((format!("{PREFIX}orig.{n}"), e.dtype, e.shape.clone(), Piece::Owned(pristine(n)?.to_vec())));
    }
    let state = serde_json::json!({
        "version": FORMAT_VERSION,
        "original_header": original_header,
        "touched": touched_v,
        "signatures": list.iter().zip(&parts).map(|((_, a), (md, _))| serde_json::json!({"alpha": format!("{a:?}"), "metadata": md})).collect::<Vec<_>>(),
    });
    for (k, (_, payload)) in parts.into_iter().enumerate() {
        for (key, (d, s, b)) in payload {
            items.push((format!("{PREFIX}sig{k}.{key}"), d, s, Piece::Owned(b)));
        }
    }
    metadata.insert("rws.patch".into(), state.to_string());
    let header = build_header(&metadata, items.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.len() as usize)))?;
    let report = PatchReport { touched: touched_v, signatures: list.iter().zip(sums).map(|((s, a), c)| (s.info.name.clone(), c, *a)).collect() };
    Ok((Plan { header, pieces: items.into_iter().map(|i| i.3).collect() }, report))
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
    write_atomic_chunks(out, &oh, &file, patched, &chunks)
}
