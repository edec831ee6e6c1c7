//! rws-core: Robust Weight Signatures on real checkpoints.
//!
//! Tensors are kept as raw bytes ([`TensorMap`]) so that everything rws does not touch survives byte
//! for byte; arithmetic happens in f64 and is rounded once. Signatures live in `.rws` files
//! (safetensors, see docs/FORMAT.md); patching is always recomputed from pristine values, which is what
//! makes re-scaling drift-free and unpatching bit-exact.

pub mod analysis;
pub mod codec;
pub mod patch;
pub mod pth;
pub mod select;
pub mod signature;
pub mod tensor;

pub use analysis::{cosine_similarity, relative_diff, similarity_matrix, LayerDiff};
pub use codec::{decode, encode, quantize, Codec, Encoded};
pub use patch::{patch_file, patch_file_with_sig_files, unpatch_file, PatchOptions, PatchReport, Patcher};
pub use select::{select_tensors, weight_layers, Layer, Selection};
pub use signature::{extract, Payload, SigInfo, SigTensor, Signature};
pub use tensor::{DType, Tensor, TensorMap};

use std::path::{Path, PathBuf};

/// The one error type of this crate; every variant names the file, tensor or argument at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A file that is not what it claims (truncated, corrupt, outside the supported subset).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A tensor that is missing, mismatched or holds NaN/Inf.
    #[error("tensor {name}: {msg}")]
    Tensor { name: String, msg: String },
    /// A bad argument (codec name, alpha, selection).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_path_buf(), source }
    }
    pub(crate) fn format(path: &Path, msg: impl Into<String>) -> Error {
        Error::Format { path: path.to_path_buf(), msg: msg.into() }
    }
    pub(crate) fn tensor(name: &str, msg: impl Into<String>) -> Error {
        Error::Tensor { name: name.to_string(), msg: msg.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Format version written into `.rws` files and patched models (docs/FORMAT.md).
pub const FORMAT_VERSION: u32 = 1;
