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

/// Make candle's CPU ops run on the calling thread instead of candle's own spinning thread pool,
/// unless `CANDLE_NUM_THREADS` is already set. The heavy ops of this crate run on rayon's pool;
/// candle's pool (one more thread per core, spinning ~25k rounds after every candle op) then
/// competes with rayon's workers for the same cores: on 2 cores that cost about a third of the
/// training throughput (docs/BENCHMARKS.md). Call it first thing in `main`, before any tensor
/// op and before other threads exist (it sets an environment variable).
pub fn prefer_rayon_threads() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
