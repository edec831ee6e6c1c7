//! Forward-order layer selection. Safetensors sorts names, so `features.10` would come before
//! `features.2` and `classifier` before `features`: layers are ordered by name parts, numbers compared
//! as numbers, with head-like names (classifier, fc, head) after everything else.

use crate::{Error, Result, TensorMap};
use regex::Regex;
use std::cmp::Ordering;

/// How to choose the tensors a signature covers.
#[derive(Clone, Debug, PartialEq)]
pub enum Selection {
    /// The first K weight layers in forward order, each with its bias and BN affine tensors.
    First(usize),
    /// Float tensors whose names match `include` and not `exclude`.
    Regex { include: String, exclude: Option<String> },
    /// Layers (prefixes like `features.0`) or tensor names in forward order, as given; `first`
    /// keeps only the first K entries.
    Order { names: Vec<String>, first: Option<usize> },
}

/// A weight layer: `prefix.weight` with 2+ dims, its bias and the affine tensors of the norm layer
/// that follows it.
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    pub prefix: String,
    pub tensors: Vec<String>,
}

fn rank(part: &str) -> u8 {
    let p = part.to_ascii_lowercase();
    if ["classifier", "fc", "head", "heads", "lm_head", "logits", "output", "out"].iter().any(|k| p == *k || p.starts_with(&format!("{k}_"))) {
        2
    } else if ["stem", "embed", "embeddings", "patch_embed", "conv1", "bn1", "conv_stem"].contains(&p.as_str()) {
        0
    } else {
        1
    }
}

/// Compares dotted names part by part: numbers numerically, head-like names last, else by text.
pub fn forward_cmp(a: &str, b: &str) -> Ordering {
    let (pa, pb): (Vec<&str>, Vec<&str>) = (a.split('.').collect(), b.split('.').collect());
    for (x, y) in pa.iter().zip(&pb) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            _ => rank(x).cmp(&rank(y)).then_with(|| natural_cmp(x, y)),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    pa.len().cmp(&pb.len())
}

/// `layer2` < `layer10`: text compared with embedded numbers as numbers.
fn natural_cmp(a: &str, b: &str) -> Ordering {
    let split = |s: &str| {
        let t = s.trim_end_matches(|c: char| c.is_ascii_digit());
        (t.to_string(), s[t.len()..].parse::<u64>().ok())
    };
    let (ta, na) = split(a);
    let (tb, nb) = split(b);
    ta.cmp(&tb).then(na.cmp(&nb)).then_with(|| a.cmp(b))
}

fn is_float(m: &TensorMap, n: &str) -> bool {
    m.tensors.get(n).map(|t| t.dtype.is_float()).unwrap_or(false)
}

/// The norm layer (1-D weight) that follows a weight layer, by naming convention: `X.(n+1)` after
/// `X.n`, `bnK`/`normK` after `convK`, `downsample.1` after `downsample.0`.
fn norm_after(m: &TensorMap, prefix: &str) -> Option<String> {
    let (parent, last) = match prefix.rsplit_once('.') {
        Some((p, l)) => (format!("{p}."), l),
        None => (String::new(), prefix),
    };
    let mut cands = Vec::new();
    if let Ok(n) = last.parse::<u64>() {
        cands.push(format!("{parent}{}", n + 1));
    }
    if let Some(k) = last.strip_prefix("conv") {
        cands.push(format!("{parent}bn{k}"));
        cands.push(format!("{parent}norm{k}"));
    }
    cands.into_iter().find(|c| m.tensors.get(&format!("{c}.weight")).map(|t| t.shape.len() == 1 && t.dtype.is_float()).unwrap_or(false))
}

/// Weight layers in forward order.
pub fn weight_layers(m: &TensorMap) -> Vec<Layer> {
    let mut prefixes: Vec<String> = m
        .tensors
        .iter()
        .filter(|(n, t)| n.ends_with(".weight") && t.shape.len() >= 2 && t.dtype.is_float())
        .map(|(n, _)| n[..n.len() - 7].to_string())
        .collect();
    prefixes.sort_by(|a, b| forward_cmp(a, b));
    prefixes.into_iter().map(|p| layer_of(m, &p)).collect()
}

fn layer_of(m: &TensorMap, p: &str) -> Layer {
    let mut tensors = vec![format!("{p}.weight")];
    let b = format!("{p}.bias");
    if is_float(m, &b) {
        tensors.push(b);
    }
    if let Some(nrm) = norm_after(m, p) {
        for s in ["weight", "bias"] {
            let t = format!("{nrm}.{s}");
            if is_float(m, &t) {
                tensors.push(t);
            }
        }
    }
    Layer { prefix: p.to_string(), tensors }
}

/// Tensor names chosen by `sel`, forward order, float tensors only.
pub fn select_tensors(m: &TensorMap, sel: &Selection) -> Result<Vec<String>> {
    let out: Vec<String> = match sel {
        Selection::First(k) => {
            let layers = weight_layers(m);
            if *k == 0 || *k > layers.len() {
                return Err(Error::Invalid(format!("--first {k}: the model has {} weight layers", layers.len())));
            }
            layers.into_iter().take(*k).flat_map(|l| l.tensors).collect()
        }
        Selection::Regex { include, exclude } => {
            let inc = Regex::new(include).map_err(|e| Error::Invalid(format!("--include {include}: {e}")))?;
            let exc = exclude.as_ref().map(|x| Regex::new(x).map_err(|e| Error::Invalid(format!("--exclude {x}: {e}")))).transpose()?;
            let mut v: Vec<String> = m
                .tensors
                .iter()
                .filter(|(n, t)| t.dtype.is_float() && inc.is_match(n) && !exc.as_ref().map(|r| r.is_match(n)).unwrap_or(false))
                .map(|(n, _)| n.clone())
                .collect();
            v.sort_by(|a, b| forward_cmp(a, b));
            v
        }
        Selection::Order { names, first } => {
            let take = first.unwrap_or(names.len());
            if take == 0 || take > names.len() {
                return Err(Error::Invalid(format!("--first {take}: the order lists {} entries", names.len())));
            }
            let mut v = Vec::new();
            for n in names.iter().take(take) {
                if m.tensors.contains_key(n) {
                    if !is_float(m, n) {
                        return Err(Error::tensor(n, "not a float tensor: integer/bool tensors are never patched"));
                    }
                    v.push(n.clone());
                } else if m.tensors.contains_key(&format!("{n}.weight")) {
                    v.extend(layer_of(m, n).tensors);
                } else {
                    return Err(Error::tensor(n, "in the order list but not in the model"));
                }
            }
            v
        }
    };
    if out.is_empty() {
        return Err(Error::Invalid("the selection matches no float tensor".into()));
    }
    let mut seen = std::collections::HashSet::new();
    Ok(out.into_iter().filter(|n| seen.insert(n.clone())).collect())
}
