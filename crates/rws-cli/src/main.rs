//! `rws`: a thin command line over the rws library crates. Each subcommand lives in the module of
//! the pipeline stage it belongs to; this file only dispatches.

mod corrupt;
mod demo;
mod sig;
mod train;

use clap::{Parser, Subcommand};

/// mimalloc keeps freed memory for reuse: training allocates and frees the same tensor sizes every
/// step, and glibc's malloc returned them to the kernel (820k minor page faults a benchmark run
/// against 40k with mimalloc; docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// From the mimalloc library the `mimalloc` crate links (its `extended` Rust bindings lack
    /// this option's constant).
    fn mi_option_set(option: i32, value: std::os::raw::c_long);
}
/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (mimalloc.h). By default mimalloc gives
/// freed memory back to the kernel after 10 ms, so every training batch faulted its activations
/// in again (7–45 ms per 13 MB on this VM); −1 keeps it (16 421 → 346 page faults a bench run,
/// docs/BENCHMARKS.md).
const MI_OPTION_PURGE_DELAY: i32 = 15;

#[derive(Parser)]
#[command(name = "rws", version, about = "Robust Weight Signatures: extract, patch and evaluate corruption robustness as weight patches")]
struct Cli {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Extract a signature from pretrained, clean and robust checkpoints.
    Extract(sig::ExtractArgs),
    /// Add signatures (each scaled by alpha) to a model.
    Patch(sig::PatchArgs),
    /// Give back the unpatched model bit for bit.
    Unpatch(sig::UnpatchArgs),
    /// Show what a signature holds.
    Inspect(sig::InspectArgs),
    /// Per-layer relative difference between two checkpoints.
    Diff(sig::DiffArgs),
    /// Cosine similarity matrix of signatures.
    Similarity(sig::SimilarityArgs),
    /// Make corrupted datasets (CIFAR-10-C layout).
    Corrupt(corrupt::CorruptArgs),
    /// Train or fine-tune a model.
    Train(train::TrainArgs),
    /// Clean and corrupted accuracy of a model.
    Eval(train::EvalArgs),
    /// Re-estimate BatchNorm statistics on a data stream.
    BnAdapt(train::BnAdaptArgs),
    /// The paper's experiments end to end on Fashion-MNIST.
    Demo(demo::DemoArgs),
}

fn main() {
    // SAFETY: sets one integer option of the allocator; no pointer is involved.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // Before any tensor op and any other thread (it sets an environment variable).
    rws_nn::configure_cpu_threads();
    let cli = Cli::parse();
    if let Some(n) = cli.threads {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
    }
    let result = match cli.command {
        Command::Extract(a) => sig::extract(a),
        Command::Patch(a) => sig::patch(a),
        Command::Unpatch(a) => sig::unpatch(a),
        Command::Inspect(a) => sig::inspect(a),
        Command::Diff(a) => sig::diff(a),
        Command::Similarity(a) => sig::similarity(a),
        Command::Corrupt(a) => corrupt::run(a),
        Command::Train(a) => train::train(a),
        Command::Eval(a) => train::eval(a),
        Command::BnAdapt(a) => train::bn_adapt(a),
        Command::Demo(a) => demo::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
