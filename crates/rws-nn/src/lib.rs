//! rws-nn: models with torchvision tensor names, training and evaluation on candle.
//!
//! Models are built from an architecture string ([`model::ARCH_HELP`]), hold their tensors in
//! forward order under torchvision's names, and read/write safetensors that PyTorch loads with
//! `load_state_dict(strict=True)`. Training is PyTorch-style SGD; everything seeded is
//! reproducible bit for bit.
pub mod engine;
pub mod io;
pub mod model;
pub mod ops;

pub use engine::{bn_adapt, channel_stats, corrupt_dataset, evaluate, param_set_for, predict, train, EpochCallback, EpochStats, Schedule, TrainConfig, TrainReport};
pub use io::{read_checkpoint, Checkpoint};
pub use model::{Kind, Model, Param, ARCH_HELP, DEFAULT_ARCH};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
