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

/// Cap how long candle's own CPU thread pool spins after each candle op (2 000 rounds instead of
/// 25 000), unless `CANDLE_BARRIER_POOL_SPIN_LIMIT` is already set. The heavy ops of this crate
/// run on rayon's pool; candle 0.11's pool (cores − 1 more threads) spinning ~1 ms after every
/// small candle op takes the cores rayon's workers need: on 2 cores capping it raised the
/// reference network's training from ≈ 690 to ≈ 780 img/s and `rws train` from ≈ 1 700 to
/// ≈ 1 900–2 800 img/s (docs/BENCHMARKS.md). Call it first thing in `main`, before any tensor op
/// and before other threads exist (it sets an environment variable).
pub fn configure_cpu_threads() {
    if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "2000");
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
