//! Signature subcommands: extract, patch, unpatch, inspect, diff, similarity (thin over rws-core).

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rws_core::{Codec, PatchOptions, Selection, SigInfo, Signature, TensorMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn spinner(json: bool, msg: &str) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new_spinner();
    pb.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    pb.set_message(msg.to_string());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

fn load(path: &Path) -> Result<TensorMap> {
    Ok(TensorMap::load(path)?)
}

#[derive(clap::Args)]
pub struct ExtractArgs {
    /// Pretrained checkpoint θ₀ (safetensors, sharded index, or PyTorch zip).
    #[arg(long)]
    pretrained: PathBuf,
    /// Clean fine-tuned checkpoint θₛ.
    #[arg(long)]
    clean: PathBuf,
    /// Robust fine-tuned checkpoint θ_c; give several of one corruption to average them.
    #[arg(long, required = true)]
    robust: Vec<PathBuf>,
    /// First K weight layers in forward order (with bias and BN affine tensors).
    #[arg(long, conflicts_with_all = ["include"])]
    first: Option<usize>,
    /// Regex of tensor names to include.
    #[arg(long)]
    include: Option<String>,
    /// Regex of tensor names to exclude (with --include).
    #[arg(long, requires = "include")]
    exclude: Option<String>,
    /// File listing layers or tensors in forward order, one a line (for names that don't tell).
    #[arg(long, conflicts_with = "include")]
    order: Option<PathBuf>,
    /// f32, f16, bf16, intN, intN-channel (N = 1..8).
    #[arg(long, default_value = "f32")]
    codec: String,
    #[arg(long)]
    name: String,
    #[arg(long)]
    corruption: Option<String>,
    #[arg(long)]
    severity: Option<u32>,
    #[arg(long)]
    dataset: Option<String>,
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn extract(a: ExtractArgs) -> Result<()> {
    let codec: Codec = a.codec.parse()?;
    let selection = match (&a.order, a.first, &a.include) {
        (Some(f), k, _) => {
            let text = std::fs::read_to_string(f).with_context(|| format!("--order {}", f.display()))?;
            let names = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
            Selection::Order { names, first: k }
        }
        (None, Some(k), _) => Selection::First(k),
        (None, None, Some(re)) => Selection::Regex { include: re.clone(), exclude: a.exclude.clone() },
        (None, None, None) => bail!("choose tensors with --first K, --include RE or --order FILE"),
    };
    let pb = spinner(a.json, "loading checkpoints");
    let p = load(&a.pretrained)?;
    let s = load(&a.clean)?;
    let rs = a.robust.iter().map(|r| load(r)).collect::<Result<Vec<_>>>()?;
    pb.set_message("extracting");
    let refs: Vec<&TensorMap> = rs.iter().collect();
    let info = SigInfo { name: a.name.clone(), corruption: a.corruption.clone(), severity: a.severity, dataset: a.dataset.clone() };
    let sig = rws_core::extract(&p, &s, &refs, &selection, codec, info)?;
    sig.save(&a.output)?;
    pb.finish_and_clear();
    let bytes = std::fs::metadata(&a.output)?.len();
    let chosen: Vec<&str> = sig.tensors.iter().map(|t| t.name.as_str()).collect();
    if a.json {
        println!("{}", serde_json::json!({"output": a.output, "name": a.name, "codec": codec.to_string(), "tensors": chosen, "bytes": bytes, "fingerprint": sig.fingerprint}));
    } else {
        println!("signature {} ({codec}, {} tensors, {bytes} bytes) -> {}", a.name, chosen.len(), a.output.display());
        for t in &sig.tensors {
            println!("  {} {:?}", t.name, t.shape);
        }
    }
    Ok(())
}

/// `FILE[:ALPHA]`; a path that exists as given wins over splitting at its last colon.
fn parse_sig_arg(s: &str) -> Result<(PathBuf, f64)> {
    if Path::new(s).exists() {
        return Ok((PathBuf::from(s), 1.0));
    }
    if let Some((f, al)) = s.rsplit_once(':') {
        let alpha: f64 = al.trim().parse().map_err(|_| anyhow::anyhow!("--sig {s}: alpha '{al}' is not a number"))?;
        if !alpha.is_finite() {
            bail!("--sig {s}: alpha must be finite");
        }
        return Ok((PathBuf::from(f), alpha));
    }
    Ok((PathBuf::from(s), 1.0))
}

#[derive(clap::Args)]
pub struct PatchArgs {
    /// Model to patch: safetensors (may itself be a patched file), a sharded index or folder, or a
    /// PyTorch zip checkpoint (converted to safetensors on the way).
    model: PathBuf,
    /// Signature and scale, FILE.rws[:ALPHA] (ALPHA may be negative; default 1). Repeatable.
    #[arg(long = "sig", required = true, allow_hyphen_values = true)]
    sigs: Vec<String>,
    /// Pretrained checkpoint to verify the signatures' fingerprint against.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// Accept dtype mismatches (cast) and signatures extracted against different pretrained weights.
    #[arg(long)]
    force: bool,
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn patch(a: PatchArgs) -> Result<()> {
    use rayon::prelude::*;
    let parsed = a.sigs.iter().map(|s| parse_sig_arg(s)).collect::<Result<Vec<_>>>()?;
    // Loading verifies each file's checksum: in parallel, it overlaps for several signatures.
    let load_all = || -> Result<Vec<(Signature, f64)>> { parsed.par_iter().map(|(f, alpha)| Ok((Signature::load(f)?, *alpha))).collect() };
    let opts = PatchOptions { force: a.force };
    let pb = spinner(a.json, "patching");
    let rep = if a.pretrained.is_none() && TensorMap::is_single_safetensors(&a.model)? {
        // The common case: the kernel copies the model while the signatures load.
        rws_core::patch_file_with_sig_files(&a.model, &parsed, &a.output, &opts)?
    } else {
        let sigs = load_all()?;
        if let Some(p) = &a.pretrained {
            let fp = rws_core::signature::fingerprint(&load(p)?);
            for (s, _) in &sigs {
                if s.fingerprint != fp && !a.force {
                    bail!("signature {} was extracted against other pretrained weights than {} (fingerprint differs; --force to apply anyway)", s.info.name, p.display());
                }
            }
        }
        // Only a single safetensors file can be copied by ranges; anything else (sharded, PyTorch
        // zip) is converted in memory into a temp safetensors next to the output first, so unpatch
        // gives back its tensors bit for bit, as safetensors.
        let converted = if TensorMap::is_single_safetensors(&a.model)? {
            None
        } else {
            let map = load(&a.model)?;
            let dir = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let tmp = tempfile::Builder::new().prefix(".rws-convert-").suffix(".safetensors").tempfile_in(dir).with_context(|| format!("creating a temp file in {}", dir.display()))?;
            map.save(tmp.path())?;
            Some(tmp)
        };
        let source = converted.as_ref().map(|t| t.path()).unwrap_or(&a.model);
        rws_core::patch_file(source, &sigs, &a.output, &opts)?
    };
    pb.finish_and_clear();
    if a.json {
        println!("{}", serde_json::json!({"output": a.output, "touched": rep.touched, "signatures": rep.signatures.iter().map(|(n, c, al)| serde_json::json!({"name": n, "checksum": c, "alpha": al})).collect::<Vec<_>>()}));
    } else {
        println!("patched {} tensors -> {}", rep.touched.len(), a.output.display());
        for (n, _, al) in &rep.signatures {
            println!("  {n} alpha {al}");
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct UnpatchArgs {
    /// A file written by `rws patch`.
    patched: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn unpatch(a: UnpatchArgs) -> Result<()> {
    rws_core::unpatch_file(&a.patched, &a.output)?;
    if a.json {
        println!("{}", serde_json::json!({"output": a.output}));
    } else {
        println!("original restored -> {}", a.output.display());
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// A signature file (.rws).
    sig: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let sig = Signature::load(&a.sig)?;
    let file_bytes = std::fs::metadata(&a.sig)?.len();
    let model_bytes = sig.settings.get("model_bytes").and_then(|v| v.as_u64());
    let mut rows = Vec::new();
    let (mut tot_n, mut tot_sq) = (0usize, 0f64);
    for t in &sig.tensors {
        let sq: f64 = t.values().iter().map(|v| (*v as f64).powi(2)).sum();
        tot_n += t.numel();
        tot_sq += sq;
        rows.push(serde_json::json!({"name": t.name, "shape": t.shape, "elements": t.numel(), "codec": t.codec.to_string(), "bytes": t.enc.nbytes(), "l2": sq.sqrt()}));
    }
    let ratio = model_bytes.map(|m| m as f64 / file_bytes as f64);
    let touched_bytes: usize = sig.tensors.iter().map(|t| t.numel() * t.dtype.size()).sum();
    if a.json {
        println!(
            "{}",
            serde_json::json!({"name": sig.info.name, "corruption": sig.info.corruption, "severity": sig.info.severity, "dataset": sig.info.dataset,
                "fingerprint": sig.fingerprint, "tensors": rows, "total": {"elements": tot_n, "payload_bytes": sig.payload_bytes(), "file_bytes": file_bytes, "l2": tot_sq.sqrt()},
                "model_bytes": model_bytes, "compression_ratio": ratio, "covered_tensor_bytes": touched_bytes, "settings": sig.settings})
        );
        return Ok(());
    }
    let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    println!("signature {}  corruption {}  severity {}  dataset {}", sig.info.name, opt(&sig.info.corruption), opt(&sig.info.severity.map(|s| s.to_string())), opt(&sig.info.dataset));
    println!("{:<40} {:>10} {:>14} {:>10} {:>12}", "tensor", "elements", "codec", "bytes", "L2");
    for r in &rows {
        println!("{:<40} {:>10} {:>14} {:>10} {:>12.6}", r["name"].as_str().unwrap(), r["elements"].as_u64().unwrap(), r["codec"].as_str().unwrap(), r["bytes"].as_u64().unwrap(), r["l2"].as_f64().unwrap());
    }
    println!("{:<40} {:>10} {:>14} {:>10} {:>12.6}", "total", tot_n, "", sig.payload_bytes(), tot_sq.sqrt());
    println!("file {file_bytes} bytes; covered model tensors {touched_bytes} bytes");
    match (model_bytes, ratio) {
        (Some(m), Some(r)) => println!("compression ratio: full model {m} bytes / file {file_bytes} bytes = {r:.1}x (the paper: up to 13x)"),
        _ => println!("compression ratio: unknown (no model_bytes in the settings)"),
    }
    Ok(())
}

/// A checkpoint, or the decoded values of a signature.
fn load_any(p: &Path) -> Result<TensorMap> {
    if let Ok(s) = Signature::load(p) {
        return Ok(s.to_tensor_map());
    }
    load(p)
}

#[derive(clap::Args)]
pub struct DiffArgs {
    /// Checkpoint A (or a .rws).
    a: PathBuf,
    /// Checkpoint B, the reference (‖A−B‖/‖B‖).
    b: PathBuf,
    /// Write a bar chart PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn diff(a: DiffArgs) -> Result<()> {
    let (ma, mb) = (load_any(&a.a)?, load_any(&a.b)?);
    let d = rws_core::relative_diff(&ma, &mb)?;
    if let Some(p) = &a.plot {
        let labels: Vec<String> = d.iter().map(|l| l.layer.clone()).collect();
        let vals: Vec<f64> = d.iter().map(|l| l.relative).collect();
        rws_plot::bar_chart(p, "Per-layer relative difference ||A-B||/||B||", &labels, &vals, "relative difference")?;
    }
    if a.json {
        println!("{}", serde_json::json!({"a": a.a, "b": a.b, "layers": d, "plot": a.plot}));
    } else {
        println!("{:<40} {:>14}", "layer", "||A-B||/||B||");
        for l in &d {
            println!("{:<40} {:>14.6}", l.layer, l.relative);
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct SimilarityArgs {
    /// Two or more signatures.
    #[arg(required = true, num_args = 2..)]
    sigs: Vec<PathBuf>,
    /// Write a heatmap PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

pub fn similarity(a: SimilarityArgs) -> Result<()> {
    let sigs = a.sigs.iter().map(|p| Signature::load(p)).collect::<Result<Vec<_>, _>>()?;
    let m = rws_core::similarity_matrix(&sigs)?;
    let names: Vec<String> = sigs.iter().map(|s| s.info.name.clone()).collect();
    if let Some(p) = &a.plot {
        rws_plot::heatmap(p, "Cosine similarity of signatures", &names, &names, &m)?;
    }
    if a.json {
        println!("{}", serde_json::json!({"names": names, "matrix": m, "plot": a.plot}));
    } else {
        print!("{:<16}", "");
        names.iter().for_each(|n| print!(" {n:>12}"));
        println!();
        for (n, row) in names.iter().zip(&m) {
            print!("{n:<16}");
            row.iter().for_each(|v| print!(" {v:>12.4}"));
            println!();
        }
    }
    Ok(())
}
