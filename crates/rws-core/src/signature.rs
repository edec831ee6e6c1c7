//! Signatures: extraction (the projection of DEVELOPERS.md, in f64) and the `.rws` file.

use crate::codec::{decode, encode, Codec, Encoded};
use crate::select::{select_tensors, Selection};
use crate::tensor::{build_header, hash_tensor, hex, parse_header, write_atomic, DType, Tensor, TensorMap};
use crate::{Error, Result, FORMAT_VERSION};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// Payload tensors of a `.rws` file by key: (dtype, shape, bytes).
pub type Payload = BTreeMap<String, (DType, Vec<usize>, Vec<u8>)>;

/// What a signature is about; corruption/severity/dataset are optional labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SigInfo {
    pub name: String,
    pub corruption: Option<String>,
    pub severity: Option<u32>,
    pub dataset: Option<String>,
}

impl SigInfo {
    pub fn named(name: &str) -> SigInfo {
        SigInfo { name: name.to_string(), ..Default::default() }
    }
}

/// One model tensor's signature values.
#[derive(Clone, Debug, PartialEq)]
pub struct SigTensor {
    pub name: String,
    pub shape: Vec<usize>,
    /// dtype of the model tensor it applies to.
    pub dtype: DType,
    pub codec: Codec,
    pub enc: Encoded,
}

impl SigTensor {
    pub fn values(&self) -> Vec<f32> {
        decode(&self.enc, &self.shape)
    }
    pub fn numel(&self) -> usize {
        crate::tensor::numel(&self.shape)
    }
    /// Payload tensors (key, dtype, shape, bytes) as stored in the `.rws` file.
    fn payload(&self) -> Vec<(String, DType, Vec<usize>, Vec<u8>)> {
        match &self.enc {
            Encoded::F32(v) => vec![(self.name.clone(), DType::F32, self.shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())],
            Encoded::F16(v) => vec![(self.name.clone(), DType::F16, self.shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())],
            Encoded::BF16(v) => vec![(self.name.clone(), DType::BF16, self.shape.clone(), v.iter().flat_map(|x| x.to_le_bytes()).collect())],
            Encoded::Int { packed, scales, .. } => vec![
                (format!("{}.__q", self.name), DType::U8, vec![packed.len()], packed.clone()),
                (format!("{}.__scale", self.name), DType::F32, vec![scales.len(), 2], scales.iter().flat_map(|(a, b)| a.to_le_bytes().into_iter().chain(b.to_le_bytes())).collect()),
            ],
        }
    }
}

/// A robust weight signature: per-tensor values plus what it was extracted from.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    pub info: SigInfo,
    /// Forward order.
    pub tensors: Vec<SigTensor>,
    /// SHA-256 of the pretrained tensors it was extracted against (docs/FORMAT.md).
    pub fingerprint: String,
    pub settings: serde_json::Value,
}

/// Fingerprint of a whole pretrained checkpoint (every tensor, name order), as stored in `.rws`
/// files: signatures with different selections from one θ₀ share it, so they may be combined.
pub fn fingerprint(m: &TensorMap) -> String {
    let mut h = Sha256::new();
    for (n, t) in &m.tensors {
        hash_tensor(&mut h, n, t.dtype, &t.shape, &t.data);
    }
    hex(&h.finalize())
}

fn finite_f64(name: &str, what: &str, t: &Tensor) -> Result<Vec<f64>> {
    let v = t.to_f64(name)?;
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::tensor(name, format!("{what} holds {} at index {i}", v[i])));
    }
    Ok(v)
}

/// v = d − (⟨d,a⟩/⟨a,a⟩)·a in f64, with d the mean robust change and a the clean change.
pub fn project(d: &[f64], a: &[f64]) -> Vec<f64> {
    let da: f64 = d.iter().zip(a).map(|(x, y)| x * y).sum();
    let aa: f64 = a.iter().map(|y| y * y).sum();
    if aa == 0.0 {
        return d.to_vec();
    }
    let c = da / aa;
    d.iter().zip(a).map(|(x, y)| x - c * y).collect()
}

/// Extracts a signature. Several robust checkpoints (one corruption) are averaged before projecting.
pub fn extract(pretrained: &TensorMap, clean: &TensorMap, robust: &[&TensorMap], selection: &Selection, codec: Codec, info: SigInfo) -> Result<Signature> {
    if robust.is_empty() {
        return Err(Error::Invalid("extract needs at least one robust checkpoint".into()));
    }
    if info.name.is_empty() {
        return Err(Error::Invalid("the signature needs a name".into()));
    }
    let names = select_tensors(pretrained, selection)?;
    let tensors: Vec<SigTensor> = names
        .par_iter()
        .map(|n| {
            let t0 = pretrained.get(n)?;
            let check = |m: &TensorMap, what: &str| -> Result<Vec<f64>> {
                let t = m.tensors.get(n).ok_or_else(|| Error::tensor(n, format!("missing from the {what} checkpoint")))?;
                if t.shape != t0.shape {
                    return Err(Error::tensor(n, format!("shape {:?} in the {what} checkpoint, {:?} in the pretrained", t.shape, t0.shape)));
                }
                finite_f64(n, what, t)
            };
            let p = finite_f64(n, "pretrained", t0)?;
            let s = check(clean, "clean")?;
            let mut d = vec![0f64; p.len()];
            for (k, r) in robust.iter().enumerate() {
                let rv = check(r, &format!("robust #{}", k + 1))?;
                d.iter_mut().zip(&rv).for_each(|(x, y)| *x += y);
            }
            let nr = robust.len() as f64;
            let d: Vec<f64> = d.iter().zip(&p).map(|(x, p0)| x / nr - p0).collect();
            let a: Vec<f64> = s.iter().zip(&p).map(|(x, p0)| x - p0).collect();
            let v: Vec<f32> = project(&d, &a).into_iter().map(|x| x as f32).collect();
            let enc = encode(&v, &t0.shape, codec).map_err(|e| Error::tensor(n, e.to_string()))?;
            Ok(SigTensor { name: n.clone(), shape: t0.shape.clone(), dtype: t0.dtype, codec, enc })
        })
        .collect::<Result<_>>()?;
    let sel = match selection {
        Selection::First(k) => serde_json::json!({"first": k}),
        Selection::Regex { include, exclude } => serde_json::json!({"include": include, "exclude": exclude}),
        Selection::Order { names, first } => serde_json::json!({"order": names, "first": first}),
    };
    let settings = serde_json::json!({"selection": sel, "robust_checkpoints": robust.len(), "accumulation": "f64", "codec": codec.to_string(), "model_bytes": pretrained.tensors.values().map(|t| t.data.len()).sum::<usize>(), "rws_version": env!("CARGO_PKG_VERSION")});
    Ok(Signature { info, fingerprint: fingerprint(pretrained), tensors, settings })
}

impl Signature {
    pub fn get(&self, name: &str) -> Option<&SigTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
    /// Payload bytes (what the codec costs), without the header.
    pub fn payload_bytes(&self) -> usize {
        self.tensors.iter().map(|t| t.enc.nbytes()).sum()
    }
    /// Decoded values as an f32 tensor map (for diffs and norms).
    pub fn to_tensor_map(&self) -> TensorMap {
        let mut m = TensorMap::new();
        for t in &self.tensors {
            m.tensors.insert(t.name.clone(), Tensor::from_f32(t.shape.clone(), &t.values()).expect("shape"));
        }
        m
    }
    /// Metadata and payload tensors, key order, with the checksum filled in.
    pub fn to_parts(&self) -> (BTreeMap<String, String>, Payload) {
        let mut payload = BTreeMap::new();
        let mut list = Vec::new();
        for t in &self.tensors {
            let parts = t.payload();
            list.push(serde_json::json!({"name": t.name, "shape": t.shape, "dtype": t.dtype.name(), "codec": t.codec.to_string(), "keys": parts.iter().map(|p| p.0.clone()).collect::<Vec<_>>()}));
            for (k, d, s, b) in parts {
                payload.insert(k, (d, s, b));
            }
        }
        let mut h = Sha256::new();
        for (k, (d, s, b)) in &payload {
            hash_tensor(&mut h, k, *d, s, b);
        }
        let mut md = BTreeMap::new();
        md.insert("rws.format".into(), "rws-signature".into());
        md.insert("rws.version".into(), FORMAT_VERSION.to_string());
        md.insert("rws.name".into(), self.info.name.clone());
        if let Some(c) = &self.info.corruption {
            md.insert("rws.corruption".into(), c.clone());
        }
        if let Some(s) = self.info.severity {
            md.insert("rws.severity".into(), s.to_string());
        }
        if let Some(d) = &self.info.dataset {
            md.insert("rws.dataset".into(), d.clone());
        }
        md.insert("rws.tensors".into(), serde_json::Value::Array(list).to_string());
        md.insert("rws.fingerprint".into(), self.fingerprint.clone());
        md.insert("rws.settings".into(), self.settings.to_string());
        md.insert("rws.checksum".into(), hex(&h.finalize()));
        (md, payload)
    }
    pub fn checksum(&self) -> String {
        self.to_parts().0["rws.checksum"].clone()
    }
    /// Rebuilds a signature from its metadata and payload tensors; verifies the checksum.
    pub fn from_parts(path: &Path, md: &BTreeMap<String, String>, payload: &Payload) -> Result<Signature> {
        let bad = |m: String| Error::format(path, m);
        if md.get("rws.format").map(|s| s.as_str()) != Some("rws-signature") {
            return Err(bad("not an rws signature (no rws.format = rws-signature in the metadata)".into()));
        }
        let ver: u32 = md.get("rws.version").and_then(|v| v.parse().ok()).ok_or_else(|| bad("no valid rws.version".into()))?;
        if ver > FORMAT_VERSION {
            return Err(bad(format!("format version {ver} is newer than this rws ({FORMAT_VERSION})")));
        }
        let mut h = Sha256::new();
        for (k, (d, s, b)) in payload {
            hash_tensor(&mut h, k, *d, s, b);
        }
        let sum = hex(&h.finalize());
        if md.get("rws.checksum") != Some(&sum) {
            return Err(bad("payload checksum mismatch: the file is corrupt".into()));
        }
        let list: Vec<serde_json::Value> = serde_json::from_str(md.get("rws.tensors").ok_or_else(|| bad("no rws.tensors".into()))?).map_err(|e| bad(format!("rws.tensors: {e}")))?;
        let mut tensors = Vec::new();
        for e in list {
            let name = e["name"].as_str().ok_or_else(|| bad("rws.tensors entry without name".into()))?.to_string();
            let tb = |m: &str| Error::format(path, format!("tensor {name}: {m}"));
            let shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).map_err(|_| tb("bad shape"))?;
            let dtype = e["dtype"].as_str().and_then(DType::parse).ok_or_else(|| tb("bad dtype"))?;
            let codec: Codec = e["codec"].as_str().ok_or_else(|| tb("no codec"))?.parse().map_err(|x: Error| tb(&x.to_string()))?;
            let n = crate::tensor::numel(&shape);
            let get = |k: &str, dt: DType| -> Result<&(DType, Vec<usize>, Vec<u8>)> {
                let p = payload.get(k).ok_or_else(|| tb(&format!("payload tensor {k} missing")))?;
                if p.0 != dt {
                    return Err(tb(&format!("payload tensor {k} is {} not {dt}", p.0)));
                }
                Ok(p)
            };
            let u16s = |b: &[u8]| b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect::<Vec<_>>();
            let enc = match codec {
                Codec::F32 | Codec::F16 | Codec::BF16 => {
                    let dt = match codec { Codec::F32 => DType::F32, Codec::F16 => DType::F16, _ => DType::BF16 };
                    let p = get(&name, dt)?;
                    if p.1 != shape {
                        return Err(tb("payload shape differs from rws.tensors"));
                    }
                    match codec {
                        Codec::F32 => Encoded::F32(p.2.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()),
                        Codec::F16 => Encoded::F16(u16s(&p.2)),
                        _ => Encoded::BF16(u16s(&p.2)),
                    }
                }
                Codec::Int { bits, per_channel } => {
                    let q = get(&format!("{name}.__q"), DType::U8)?;
                    let s = get(&format!("{name}.__scale"), DType::F32)?;
                    if q.2.len() != (n * bits as usize).div_ceil(8) {
                        return Err(tb("packed levels have the wrong length"));
                    }
                    let g = if per_channel && !shape.is_empty() && shape[0] > 0 { shape[0].min(n.max(1)) } else { 1 };
                    if s.1 != vec![g, 2] {
                        return Err(tb(&format!("scales have shape {:?}, expected [{g}, 2]", s.1)));
                    }
                    let f: Vec<f32> = s.2.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
                    Encoded::Int { bits, packed: q.2.clone(), scales: f.chunks_exact(2).map(|c| (c[0], c[1])).collect() }
                }
            };
            let st = SigTensor { name: name.clone(), shape, dtype, codec, enc };
            if st.values().iter().any(|v| !v.is_finite()) {
                return Err(tb("signature holds NaN or Inf"));
            }
            tensors.push(st);
        }
        let info = SigInfo {
            name: md.get("rws.name").cloned().unwrap_or_default(),
            corruption: md.get("rws.corruption").cloned(),
            severity: md.get("rws.severity").map(|s| s.parse().map_err(|_| bad(format!("rws.severity {s} is not a number")))).transpose()?,
            dataset: md.get("rws.dataset").cloned(),
        };
        let settings = md.get("rws.settings").and_then(|s| serde_json::from_str(s).ok()).unwrap_or(serde_json::Value::Null);
        Ok(Signature { info, tensors, fingerprint: md.get("rws.fingerprint").cloned().unwrap_or_default(), settings })
    }
    /// Writes a `.rws` file (a safetensors file) through a temp file and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        let (md, payload) = self.to_parts();
        let header = build_header(&md, payload.iter().map(|(k, (d, s, b))| (k.as_str(), *d, s.as_slice(), b.len())))?;
        write_atomic(path, &header, payload.values().map(|p| p.2.as_slice()))
    }
    pub fn load(path: &Path) -> Result<Signature> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = parse_header(path, &bytes)?;
        let payload = st.entries.iter().map(|e| (e.name.clone(), (e.dtype, e.shape.clone(), bytes[st.data_start + e.start..st.data_start + e.end].to_vec()))).collect();
        Signature::from_parts(path, &st.metadata, &payload)
    }
}
