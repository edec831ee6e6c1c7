//! `.npy` reading and writing (format v1.0 written; v1/v2/v3 read), little-endian only.
//!
//! Only what the datasets need: uint8 arrays of any rank and integer label vectors. Writes are atomic
//! (temp file in the same folder, then rename) so an interrupted `rws corrupt` never leaves a
//! half-written array that a later run would take for a dataset.
use crate::{atomic_write, Error, Result};
use std::io::{Read, Write};
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Element type of an array as its `descr` string says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
}

impl Dtype {
    fn parse(descr: &str) -> Option<Dtype> {
        let (order, ty) = descr.split_at(1.min(descr.len()));
        let little = matches!(order, "<" | "|" | "=");
        if !little {
            return None;
        }
        Some(match ty {
            "u1" => Dtype::U8,
            "i1" => Dtype::I8,
            "u2" => Dtype::U16,
            "i2" => Dtype::I16,
            "u4" => Dtype::U32,
            "i4" => Dtype::I32,
            "u8" => Dtype::U64,
            "i8" => Dtype::I64,
            _ => return None,
        })
    }
    pub fn size(self) -> usize {
        match self {
            Dtype::U8 | Dtype::I8 => 1,
            Dtype::U16 | Dtype::I16 => 2,
            Dtype::U32 | Dtype::I32 => 4,
            Dtype::U64 | Dtype::I64 => 8,
        }
    }
    fn descr(self) -> &'static str {
        match self {
            Dtype::U8 => "|u1",
            Dtype::I8 => "|i1",
            Dtype::U16 => "<u2",
            Dtype::I16 => "<i2",
            Dtype::U32 => "<u4",
            Dtype::I32 => "<i4",
            Dtype::U64 => "<u8",
            Dtype::I64 => "<i8",
        }
    }
}

/// A parsed `.npy` file: shape, element type and the raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub dtype: Dtype,
    pub data: Vec<u8>,
}

fn fmt_err(path: &Path, msg: impl Into<String>) -> Error {
    Error::Format { path: path.to_path_buf(), msg: msg.into() }
}

/// Pull `'key': value` out of the header dict; the header is a Python literal, not JSON.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let pat1 = format!("'{key}':");
    let pat2 = format!("\"{key}\":");
    let start = header.find(&pat1).map(|i| i + pat1.len()).or_else(|| header.find(&pat2).map(|i| i + pat2.len()))?;
    let rest = header[start..].trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else if rest.starts_with('\'') || rest.starts_with('"') {
        let q = &rest[..1];
        rest[1..].find(q)? + 2
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Read any `.npy` array of an integer type.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    parse_npy(path, bytes)
}

fn parse_npy(path: &Path, mut bytes: Vec<u8>) -> Result<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(fmt_err(path, "not a .npy file (bad magic)"));
    }
    let major = bytes[6];
    let (hlen, hstart) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(fmt_err(path, "truncated .npy header"));
            }
            (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12)
        }
        v => return Err(fmt_err(path, format!("unsupported .npy version {v}"))),
    };
    if bytes.len() < hstart + hlen {
        return Err(fmt_err(path, "truncated .npy header"));
    }
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen]).map_err(|_| fmt_err(path, "header is not text"))?;
    let descr = dict_value(header, "descr").ok_or_else(|| fmt_err(path, "header has no 'descr'"))?;
    let descr = descr.trim_matches(|c| c == '\'' || c == '"');
    let dtype = Dtype::parse(descr)
        .ok_or_else(|| fmt_err(path, format!("unsupported dtype '{descr}' (need little-endian integers: u1, i1, u2, i2, u4, i4, u8, i8)")))?;
    let fortran = dict_value(header, "fortran_order").ok_or_else(|| fmt_err(path, "header has no 'fortran_order'"))?;
    if fortran != "False" {
        return Err(fmt_err(path, "Fortran-order arrays are not supported (save with C order)"));
    }
    let shape_s = dict_value(header, "shape").ok_or_else(|| fmt_err(path, "header has no 'shape'"))?;
    let inner = shape_s.trim_start_matches('(').trim_end_matches(')');
    let mut shape = Vec::new();
    for part in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let part = part.trim_end_matches('L');
        shape.push(part.parse::<usize>().map_err(|_| fmt_err(path, format!("bad shape {shape_s}")))?);
    }
    let count: usize = shape.iter().product();
    let need = count * dtype.size();
    let have = bytes.len() - hstart - hlen;
    if have < need {
        return Err(fmt_err(path, format!("truncated: shape {shape:?} needs {need} data bytes, file has {have}")));
    }
    if have > need {
        return Err(fmt_err(path, format!("{} trailing bytes after the data of shape {shape:?}", have - need)));
    }
    bytes.drain(..hstart + hlen);
    Ok(NpyArray { shape, dtype, data: bytes })
}

/// Read a uint8 array of any rank: (shape, data).
pub fn read_npy_u8(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let a = read_npy(path)?;
    if a.dtype != Dtype::U8 {
        return Err(fmt_err(path, format!("expected dtype uint8 (|u1), found {:?}", a.dtype)));
    }
    Ok((a.shape, a.data))
}

/// Read a rank-1 label vector of any integer dtype (i64, i32, u8, ...), widened to i64.
pub fn read_npy_labels(path: &Path) -> Result<Vec<i64>> {
    let a = read_npy(path)?;
    if a.shape.len() != 1 {
        return Err(fmt_err(path, format!("labels must have rank 1, found shape {:?}", a.shape)));
    }
    let sz = a.dtype.size();
    let out = a
        .data
        .chunks_exact(sz)
        .map(|c| match a.dtype {
            Dtype::U8 => c[0] as i64,
            Dtype::I8 => c[0] as i8 as i64,
            Dtype::U16 => u16::from_le_bytes([c[0], c[1]]) as i64,
            Dtype::I16 => i16::from_le_bytes([c[0], c[1]]) as i64,
            Dtype::U32 => u32::from_le_bytes(c.try_into().unwrap()) as i64,
            Dtype::I32 => i32::from_le_bytes(c.try_into().unwrap()) as i64,
            Dtype::U64 => u64::from_le_bytes(c.try_into().unwrap()) as i64,
            Dtype::I64 => i64::from_le_bytes(c.try_into().unwrap()),
        })
        .collect();
    Ok(out)
}

fn header_bytes(dtype: Dtype, shape: &[usize]) -> Vec<u8> {
    let shape_s = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let mut dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", dtype.descr(), shape_s);
    // numpy pads so the data starts on a 64-byte boundary; the header ends with '\n'.
    let total = MAGIC.len() + 2 + 2 + dict.len() + 1;
    let pad = (64 - total % 64) % 64;
    dict.push_str(&" ".repeat(pad));
    dict.push('\n');
    let mut out = Vec::with_capacity(10 + dict.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

fn write_raw(path: &Path, dtype: Dtype, shape: &[usize], data: &[u8]) -> Result<()> {
    let count: usize = shape.iter().product();
    if count * dtype.size() != data.len() {
        return Err(Error::Invalid(format!(
            "writing {}: shape {shape:?} holds {count} elements but {} bytes of {:?} were given",
            path.display(),
            data.len(),
            dtype
        )));
    }
    let header = header_bytes(dtype, shape);
    atomic_write(path, |w| {
        w.write_all(&header)?;
        w.write_all(data)
    })
}

/// Write a uint8 array of any rank, atomically.
pub fn write_npy_u8(path: &Path, shape: &[usize], data: &[u8]) -> Result<()> {
    write_raw(path, Dtype::U8, shape, data)
}

/// Write an int64 label vector (numpy's default integer), atomically.
pub fn write_npy_i64(path: &Path, labels: &[i64]) -> Result<()> {
    let bytes: Vec<u8> = labels.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_raw(path, Dtype::I64, &[labels.len()], &bytes)
}

/// Write labels as uint8 (CIFAR-10-C's own `labels.npy` is uint8), atomically.
pub fn write_npy_labels_u8(path: &Path, labels: &[u8]) -> Result<()> {
    write_raw(path, Dtype::U8, &[labels.len()], labels)
}
