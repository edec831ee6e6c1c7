//! `rws demo`: the paper's experiments on Fashion-MNIST (the work lives in rws-demo).
use std::path::PathBuf;

use anyhow::Context;
use rws_demo::DemoConfig;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Output folder (REPORT.md, report.json, plots, signatures, cache).
    #[arg(short, long, default_value = "rws-out")]
    out: PathBuf,
    /// Small run (≈3 minutes on 2 cores): fewer images and corruptions, same pipeline.
    #[arg(long)]
    quick: bool,
    /// Ignore cached stages and recompute everything.
    #[arg(long)]
    fresh: bool,
    /// Seed of every random choice (weights, batches, corruptions).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Corruptions (comma-separated reference names) instead of the default set.
    #[arg(long, value_delimiter = ',')]
    corruptions: Option<Vec<String>>,
    /// Network (see `rws train --help`); the default has no BatchNorm, whose running statistics a
    /// weight signature cannot carry.
    #[arg(long)]
    arch: Option<String>,
    /// Weight layers a signature covers in the main table.
    #[arg(long)]
    k: Option<usize>,
    /// Signature scale α in the main table (linear).
    #[arg(long)]
    alpha: Option<f64>,
    /// Signature codec in the main table (f32, f16, bf16, intN, intN-channel).
    #[arg(long)]
    codec: Option<String>,
    /// Signatures also carry the BN running statistics of their layers (default false).
    #[arg(long)]
    bn_stats: Option<bool>,
    /// Re-estimate BN statistics of each patched model on 2048 clean training images (default true).
    #[arg(long)]
    bn_adapt: Option<bool>,
    /// Share (0–1] of each robust model's fine-tuning images that are corrupted; the rest stay clean.
    #[arg(long)]
    robust_mix: Option<f64>,
    /// Print the whole report.json to stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: DemoArgs) -> anyhow::Result<()> {
    let mut cfg = if a.quick { DemoConfig::quick(&a.out) } else { DemoConfig::default_run(&a.out) };
    cfg.fresh = a.fresh;
    cfg.seed = a.seed;
    if let Some(c) = a.corruptions {
        cfg.corruptions = c;
    }
    if let Some(x) = a.arch {
        cfg.arch = x;
    }
    if let Some(k) = a.k {
        anyhow::ensure!(k >= 1, "--k must be at least 1");
        cfg.k = k;
    }
    if let Some(x) = a.alpha {
        anyhow::ensure!(x.is_finite(), "--alpha must be a finite number");
        cfg.alpha = x;
    }
    if let Some(b) = a.bn_stats {
        cfg.bn_stats = b;
    }
    if let Some(b) = a.bn_adapt {
        cfg.bn_adapt = b;
    }
    if let Some(m) = a.robust_mix {
        anyhow::ensure!(m > 0.0 && m <= 1.0, "--robust-mix must be in (0, 1], got {m}");
        cfg.robust_mix = m;
    }
    if let Some(c) = a.codec {
        cfg.codec = c;
    }
    let r = rws_demo::run(cfg).context("demo failed")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let c = &r["checks"];
    let g = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    println!("standard: TA {:.2}  mean RA {:.2}", g(&r["standard"]["ta"]), g(&r["standard"]["ra_mean"]));
    println!("patched:  TA {:.2}  mean RA {:.2}  (RA {:+.2} points, TA {:+.2})", g(&r["patched_mean"]["ta"]), g(&r["patched_mean"]["ra"]), g(&c["ra_gain_points"]), -g(&c["ta_drop_points"]));
    println!("int4 vs f32 mean RA: {:+.2} points; family similarity within − across: {:+.3}; transfer raised B's RA for {} of {}",
        g(&c["int4_vs_f32_ra_points"]), g(&c["within_minus_across_similarity"]), c["transfer_raised"], r["transfer"]["of"]);
    println!("report: {}", a.out.join("REPORT.md").display());
    Ok(())
}
