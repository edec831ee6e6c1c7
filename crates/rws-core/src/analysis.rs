//! The paper's two observations: where fine-tuning changes weights (per-layer relative difference)
//! and how alike signatures of different corruptions are (cosine similarity).

use crate::select::weight_layers;
use crate::signature::Signature;
use crate::{Error, Result, TensorMap};

#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerDiff {
    pub layer: String,
    pub tensors: Vec<String>,
    /// ‖A−B‖/‖B‖ over the layer's tensors together (f64).
    pub relative: f64,
    pub norm_diff: f64,
    pub norm_b: f64,
}

/// Per weight layer (forward order) of B, ‖A−B‖/‖B‖; A must hold the same tensors and shapes.
pub fn relative_diff(a: &TensorMap, b: &TensorMap) -> Result<Vec<LayerDiff>> {
    let layers = weight_layers(b);
    if layers.is_empty() {
        return Err(Error::Invalid("no weight layers (2-D+ `.weight` tensors) to compare".into()));
    }
    layers
        .into_iter()
        .map(|l| {
            let (mut dd, mut bb) = (0f64, 0f64);
            for n in &l.tensors {
                let tb = b.get(n)?;
                let ta = a.tensors.get(n).ok_or_else(|| Error::tensor(n, "missing from the first checkpoint"))?;
                if ta.shape != tb.shape {
                    return Err(Error::tensor(n, format!("shape {:?} vs {:?}", ta.shape, tb.shape)));
                }
                for (x, y) in ta.to_f64(n)?.iter().zip(tb.to_f64(n)?) {
                    dd += (x - y) * (x - y);
                    bb += y * y;
                }
            }
            let (nd, nb) = (dd.sqrt(), bb.sqrt());
            Ok(LayerDiff { layer: l.prefix, tensors: l.tensors, relative: if nb > 0.0 { nd / nb } else { f64::NAN }, norm_diff: nd, norm_b: nb })
        })
        .collect()
}

/// Cosine similarity of two signatures over the tensors they share (flattened together).
pub fn cosine_similarity(a: &Signature, b: &Signature) -> Result<f64> {
    let (mut ab, mut aa, mut bb, mut shared) = (0f64, 0f64, 0f64, 0usize);
    for ta in &a.tensors {
        if let Some(tb) = b.get(&ta.name) {
            if ta.shape != tb.shape {
                return Err(Error::tensor(&ta.name, format!("shape {:?} in {}, {:?} in {}", ta.shape, a.info.name, tb.shape, b.info.name)));
            }
            shared += 1;
            for (x, y) in ta.values().iter().zip(tb.values()) {
                let (x, y) = (*x as f64, y as f64);
                ab += x * y;
                aa += x * x;
                bb += y * y;
            }
        }
    }
    if shared == 0 {
        return Err(Error::Invalid(format!("signatures {} and {} share no tensor", a.info.name, b.info.name)));
    }
    Ok(if aa == 0.0 || bb == 0.0 { 0.0 } else { ab / (aa.sqrt() * bb.sqrt()) })
}

pub fn similarity_matrix(sigs: &[Signature]) -> Result<Vec<Vec<f64>>> {
    sigs.iter().map(|a| sigs.iter().map(|b| cosine_similarity(a, b)).collect()).collect()
}
