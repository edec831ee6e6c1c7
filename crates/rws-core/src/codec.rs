//! Signature codecs. Integer codecs are linear with min/max per tensor (as the paper) or per output
//! channel, and bit-packed so an int4 signature really takes 4 bits a value.

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    F32,
    F16,
    BF16,
    /// `bits` in 1..=8; `per_channel`: one (min, max) per slice along dim 0.
    Int { bits: u8, per_channel: bool },
}

impl std::str::FromStr for Codec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Codec> {
        let bad = || Error::Invalid(format!("unknown codec '{s}': use f32, f16, bf16, intN or intN-channel with N in 1..8"));
        Ok(match s {
            "f32" => Codec::F32,
            "f16" => Codec::F16,
            "bf16" => Codec::BF16,
            _ => {
                let r = s.strip_prefix("int").ok_or_else(bad)?;
                let (n, pc) = match r.strip_suffix("-channel") {
                    Some(n) => (n, true),
                    None => (r, false),
                };
                let bits: u8 = n.parse().map_err(|_| bad())?;
                if !(1..=8).contains(&bits) {
                    return Err(bad());
                }
                Codec::Int { bits, per_channel: pc }
            }
        })
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Codec::F32 => f.write_str("f32"),
            Codec::F16 => f.write_str("f16"),
            Codec::BF16 => f.write_str("bf16"),
            Codec::Int { bits, per_channel: false } => write!(f, "int{bits}"),
            Codec::Int { bits, per_channel: true } => write!(f, "int{bits}-channel"),
        }
    }
}

/// Encoded values of one tensor, as stored in the `.rws` payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Encoded {
    F32(Vec<f32>),
    /// f16 / bf16 bit patterns.
    F16(Vec<u16>),
    BF16(Vec<u16>),
    /// Packed levels and (min, max) per group.
    Int { bits: u8, packed: Vec<u8>, scales: Vec<(f32, f32)> },
}

impl Encoded {
    /// Bytes on disk (payload only).
    pub fn nbytes(&self) -> usize {
        match self {
            Encoded::F32(v) => v.len() * 4,
            Encoded::F16(v) | Encoded::BF16(v) => v.len() * 2,
            Encoded::Int { packed, scales, .. } => packed.len() + scales.len() * 8,
        }
    }
}

fn groups(shape: &[usize], n: usize, per_channel: bool) -> usize {
    if per_channel && !shape.is_empty() && shape[0] > 0 {
        shape[0]
    } else {
        1
    }
    .min(n.max(1))
}

/// Encodes finite values; NaN/Inf are refused since min/max scaling cannot represent them.
pub fn encode(values: &[f32], shape: &[usize], codec: Codec) -> Result<Encoded> {
    if crate::tensor::numel(shape) != values.len() {
        return Err(Error::Invalid(format!("shape {shape:?} does not hold {} values", values.len())));
    }
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!("value {i} is {} (not finite)", values[i])));
    }
    Ok(match codec {
        Codec::F32 => Encoded::F32(values.to_vec()),
        Codec::F16 => Encoded::F16(values.iter().map(|v| half::f16::from_f32(*v).to_bits()).collect()),
        Codec::BF16 => Encoded::BF16(values.iter().map(|v| half::bf16::from_f32(*v).to_bits()).collect()),
        Codec::Int { bits, per_channel } => {
            let g = groups(shape, values.len(), per_channel);
            let len = values.len() / g.max(1);
            let levels = ((1u32 << bits) - 1) as f64;
            let mut scales = Vec::with_capacity(g);
            let mut q = Vec::with_capacity(values.len());
            for gi in 0..g {
                let chunk = &values[gi * len..(gi + 1) * len];
                let (mn, mx) = chunk.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
                let (mn, mx) = if chunk.is_empty() { (0.0, 0.0) } else { (mn, mx) };
                scales.push((mn, mx));
                let step = (mx as f64 - mn as f64) / levels;
                for &v in chunk {
                    let l = if step > 0.0 { ((v as f64 - mn as f64) / step).round().clamp(0.0, levels) as u8 } else { 0 };
                    q.push(l);
                }
            }
            Encoded::Int { bits, packed: pack(&q, bits), scales }
        }
    })
}

/// Decodes `n` values of a tensor of `shape`.
pub fn decode(enc: &Encoded, shape: &[usize]) -> Vec<f32> {
    match enc {
        Encoded::F32(v) => v.clone(),
        Encoded::F16(v) => v.iter().map(|b| half::f16::from_bits(*b).to_f32()).collect(),
        Encoded::BF16(v) => v.iter().map(|b| half::bf16::from_bits(*b).to_f32()).collect(),
        Encoded::Int { bits, packed, scales } => {
            let n = crate::tensor::numel(shape);
            let q = unpack(packed, *bits, n);
            let g = scales.len().max(1);
            let len = n / g;
            let levels = ((1u32 << bits) - 1) as f64;
            let mut out = Vec::with_capacity(n);
            for (i, l) in q.into_iter().enumerate() {
                let (mn, mx) = scales[(i / len.max(1)).min(g - 1)];
                let step = (mx as f64 - mn as f64) / levels;
                out.push((mn as f64 + l as f64 * step) as f32);
            }
            out
        }
    }
}

/// Encode then decode: what a signature stored with `codec` gives back.
pub fn quantize(values: &[f32], shape: &[usize], codec: Codec) -> Result<Vec<f32>> {
    Ok(decode(&encode(values, shape, codec)?, shape))
}

/// Value i in bits i·N…i·N+N−1 of a little-endian bit stream.
pub fn pack(q: &[u8], bits: u8) -> Vec<u8> {
    let b = bits as usize;
    let mut out = vec![0u8; (q.len() * b).div_ceil(8)];
    for (i, &v) in q.iter().enumerate() {
        for k in 0..b {
            let bit = i * b + k;
            if (v >> k) & 1 == 1 {
                out[bit / 8] |= 1 << (bit % 8);
            }
        }
    }
    out
}

pub fn unpack(p: &[u8], bits: u8, n: usize) -> Vec<u8> {
    let b = bits as usize;
    (0..n)
        .map(|i| {
            let mut v = 0u8;
            for k in 0..b {
                let bit = i * b + k;
                v |= ((p[bit / 8] >> (bit % 8)) & 1) << k;
            }
            v
        })
        .collect()
}
