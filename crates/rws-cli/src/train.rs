//! `rws train`, `rws eval`, `rws bn-adapt`: thin wrappers over rws-nn.
use anyhow::{bail, Context, Result};
use rws_corrupt::Corruption;
use rws_data::Dataset;
use rws_nn::{Model, Schedule, TrainConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Seed of precomputed corruptions, fixed so every run sees the same corrupted images.
const CORRUPTION_SEED: u64 = 0xC0_44_0F;

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Architecture: vgg:CFG (e.g. vgg:32,M,64,M,128), vgg16, vgg16_bn, resnet18, resnet50.
    #[arg(long, default_value = rws_nn::DEFAULT_ARCH)]
    arch: String,
    /// Add BatchNorm after each conv of a vgg:CFG network.
    #[arg(long)]
    bn: bool,
    /// Training data spec (see rws-data), e.g. fashion-mnist:train or cifar10:DIR@classes=0-4.
    #[arg(long)]
    data: String,
    /// Validation data spec; the best validation epoch is kept (the paper's rule).
    #[arg(long)]
    val: Option<String>,
    /// Train on this corruption (precomputed with a fixed seed unless --on-the-fly).
    #[arg(long)]
    corruption: Option<String>,
    #[arg(long, default_value_t = 5)]
    severity: usize,
    /// Draw fresh corruptions every epoch instead of precomputing them once.
    #[arg(long)]
    on_the_fly: bool,
    /// Start from these weights (rws or torchvision-named safetensors); a new head if the class count differs.
    #[arg(long)]
    init: Option<PathBuf>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    #[arg(long, default_value_t = 5e-4)]
    weight_decay: f64,
    #[arg(long)]
    nesterov: bool,
    /// constant, cosine, step:EVERY[:GAMMA], multistep:E1,E2[:GAMMA].
    #[arg(long, default_value = "cosine")]
    schedule: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Random-crop padding in pixels (0 = off).
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Random horizontal flips.
    #[arg(long)]
    flip: bool,
    /// Use only the first N training samples.
    #[arg(long)]
    limit: Option<usize>,
    /// Continue from OUT's per-epoch checkpoint (OUT.ckpt.safetensors).
    #[arg(long)]
    resume: bool,
    #[arg(short = 'o', long)]
    out: PathBuf,
    /// Print the training report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn load_data(spec: &str, limit: Option<usize>) -> Result<Dataset> {
    let d = rws_data::load_spec(spec).with_context(|| format!("loading dataset '{spec}'"))?;
    Ok(match limit {
        Some(n) => d.limit(n),
        None => d,
    })
}

fn parse_corruption(s: &str) -> Result<Corruption> {
    s.parse::<Corruption>().map_err(|e| anyhow::anyhow!("{e}"))
}

fn check_severity(s: usize) -> Result<()> {
    if !(1..=5).contains(&s) {
        bail!("--severity {s} is out of range 1..=5");
    }
    Ok(())
}

fn ckpt_path(out: &Path) -> PathBuf {
    let stem = out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "model".into());
    out.with_file_name(format!("{stem}.ckpt.safetensors"))
}

pub fn train(a: TrainArgs) -> Result<()> {
    let mut data = load_data(&a.data, a.limit)?;
    let val = a.val.as_deref().map(|v| load_data(v, None)).transpose()?;
    let arch = match (a.bn, a.arch.strip_prefix("vgg:")) {
        (true, Some(cfg)) => format!("vgg-bn:{cfg}"),
        (true, None) if a.arch == "vgg16" => "vgg16_bn".to_string(),
        (true, None) => bail!("--bn applies to vgg:CFG and vgg16 only, not '{}'", a.arch),
        _ => a.arch.clone(),
    };
    let corruption = a.corruption.as_deref().map(parse_corruption).transpose()?;
    check_severity(a.severity)?;
    let mut model = match &a.init {
        Some(p) => {
            let ck = rws_nn::read_checkpoint(p)?;
            // The checkpoint's own architecture wins unless the user asked for another explicitly.
            let arch = ck.arch().filter(|_| a.arch == rws_nn::DEFAULT_ARCH && !a.bn).map(str::to_string).unwrap_or(arch);
            let mut m = Model::new(&arch, data.num_classes, data.c, a.seed)?;
            m.load_checkpoint(&ck, true, a.seed).with_context(|| format!("loading --init {}", p.display()))?;
            m
        }
        None => {
            let mut m = Model::new(&arch, data.num_classes, data.c, a.seed)?;
            let (mean, std) = rws_nn::channel_stats(&data);
            m.set_normalization(&mean, &std)?;
            m
        }
    };
    let mut on_the_fly = None;
    if let Some(c) = corruption {
        if a.on_the_fly {
            on_the_fly = Some((c, a.severity));
        } else {
            eprintln!("corrupting {} training images with {} severity {} ...", data.len(), c.name(), a.severity);
            data = rws_nn::corrupt_dataset(&data, c, a.severity, CORRUPTION_SEED)?;
        }
    }
    let cfg = TrainConfig {
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        nesterov: a.nesterov,
        schedule: Schedule::parse(&a.schedule)?,
        seed: a.seed,
        pad: a.pad,
        flip: a.flip,
        corruption: on_the_fly,
        checkpoint: Some(ckpt_path(&a.out)),
        resume: a.resume,
        keep_best: true,
        progress: true,
        on_epoch: None,
    };
    let report = rws_nn::train(&mut model, &data, val.as_ref(), &cfg)?;
    model.save(&a.out).with_context(|| format!("saving {}", a.out.display()))?;
    if a.json {
        let j = serde_json::json!({
            "out": a.out, "arch": model.arch(), "num_classes": model.num_classes(),
            "epochs": report.epochs, "kept_epoch": report.kept_epoch, "best_val_acc": report.best_val_acc,
            "seconds": report.seconds, "images_per_sec": report.images_per_sec,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        eprintln!(
            "saved {} (epoch {} of {}, {:.1} s, {:.0} img/s)",
            a.out.display(),
            report.kept_epoch,
            report.epochs.len(),
            report.seconds,
            report.images_per_sec
        );
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct EvalArgs {
    /// The model (safetensors).
    model: PathBuf,
    /// Architecture, for checkpoints that do not record it (e.g. converted from PyTorch).
    #[arg(long)]
    arch: Option<String>,
    /// Test data spec, e.g. fashion-mnist:test.
    #[arg(long)]
    data: String,
    /// Corruptions to apply on the fly: all, or a comma-separated list (default: clean only).
    #[arg(long)]
    corruptions: Option<String>,
    /// Severities: a range (1-5) or a list (1,3,5).
    #[arg(long, default_value = "1-5")]
    severities: String,
    /// Baseline model for mCE (corruption error relative to the baseline's, in percent).
    #[arg(long)]
    baseline: Option<PathBuf>,
    #[arg(long)]
    limit: Option<usize>,
    /// Seed of the corruption draws.
    #[arg(long, default_value_t = CORRUPTION_SEED)]
    seed: u64,
    #[arg(long)]
    json: bool,
}

fn parse_severities(s: &str) -> Result<Vec<usize>> {
    let mut v = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        if let Some((x, y)) = part.split_once('-') {
            let (x, y): (usize, usize) = (x.parse()?, y.parse()?);
            v.extend(x..=y);
        } else {
            v.push(part.parse().with_context(|| format!("bad --severities '{s}'"))?);
        }
    }
    for &x in &v {
        check_severity(x)?;
    }
    if v.is_empty() {
        bail!("--severities '{s}' names no severity");
    }
    Ok(v)
}

fn parse_corruptions(s: &str) -> Result<Vec<Corruption>> {
    if s == "all" {
        return Ok(Corruption::ALL.to_vec());
    }
    s.split(',').map(|c| parse_corruption(c.trim())).collect()
}

struct Scores {
    ta: f64,
    ra: BTreeMap<String, BTreeMap<usize, f64>>,
}

fn score(model: &Model, data: &Dataset, cors: &[Corruption], sevs: &[usize], seed: u64, label: &str) -> Result<Scores> {
    let ta = rws_nn::evaluate(model, data)?;
    let mut ra = BTreeMap::new();
    let pb = indicatif::ProgressBar::new((cors.len() * sevs.len()) as u64);
    pb.set_style(indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} eta {eta} {msg}").unwrap().progress_chars("=> "));
    pb.set_prefix(label.to_string());
    for &c in cors {
        let mut row = BTreeMap::new();
        for &s in sevs {
            pb.set_message(format!("{} {s}", c.name()));
            let cd = rws_nn::corrupt_dataset(data, c, s, seed)?;
            row.insert(s, rws_nn::evaluate(model, &cd)?);
            pb.inc(1);
        }
        ra.insert(c.name().to_string(), row);
    }
    pb.finish_and_clear();
    Ok(Scores { ta, ra })
}

fn ra_mean(s: &Scores) -> Option<f64> {
    let v: Vec<f64> = s.ra.values().flat_map(|r| r.values().copied()).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

pub fn eval(a: EvalArgs) -> Result<()> {
    let model = Model::load(&a.model, a.arch.as_deref())?;
    let data = load_data(&a.data, a.limit)?;
    let cors = a.corruptions.as_deref().map(parse_corruptions).transpose()?.unwrap_or_default();
    let sevs = parse_severities(&a.severities)?;
    let s = score(&model, &data, &cors, &sevs, a.seed, "eval")?;
    let base = match &a.baseline {
        Some(b) => {
            let bm = Model::load(b, None).with_context(|| format!("loading --baseline {}", b.display()))?;
            Some(score(&bm, &data, &cors, &sevs, a.seed, "baseline")?)
        }
        None => None,
    };
    // CE_c = Σ_s err(model) / Σ_s err(baseline); mCE = mean over corruptions, in percent.
    let mut ce = BTreeMap::new();
    if let Some(b) = &base {
        for (c, row) in &s.ra {
            let e: f64 = row.values().map(|v| 100.0 - v).sum();
            let eb: f64 = b.ra[c].values().map(|v| 100.0 - v).sum();
            ce.insert(c.clone(), if eb > 0.0 { 100.0 * e / eb } else { f64::NAN });
        }
    }
    let mce = (!ce.is_empty()).then(|| ce.values().sum::<f64>() / ce.len() as f64);
    let ra_means: BTreeMap<String, f64> =
        s.ra.iter().map(|(c, r)| (c.clone(), r.values().sum::<f64>() / r.len() as f64)).collect();
    if a.json {
        let j = serde_json::json!({
            "model": a.model, "data": data.name, "n": data.len(),
            "ta": s.ta, "ra": s.ra, "ra_mean": ra_mean(&s), "ra_mean_per_corruption": ra_means,
            "ce": ce, "mce": mce,
            "baseline": base.as_ref().map(|b| serde_json::json!({"ta": b.ta, "ra": b.ra, "ra_mean": ra_mean(b)})),
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("model {} ({}) on {} ({} images)", a.model.display(), model.arch(), data.name, data.len());
    println!("TA (clean accuracy): {:.2}%", s.ta);
    if !s.ra.is_empty() {
        let head: String = sevs.iter().map(|v| format!("  sev{v:<3}")).collect();
        println!("{:<20}{head}    mean{}", "RA %", if base.is_some() { "      CE" } else { "" });
        for (c, row) in &s.ra {
            let cells: String = row.values().map(|v| format!(" {v:>7.2}")).collect();
            let cev = ce.get(c).map(|v| format!(" {v:>7.1}")).unwrap_or_default();
            println!("{c:<20}{cells} {:>7.2}{cev}", ra_means[c]);
        }
        println!("mean RA: {:.2}%", ra_mean(&s).unwrap_or(f64::NAN));
        if let Some(m) = mce {
            println!("mCE vs {}: {m:.1}%", a.baseline.as_ref().unwrap().display());
        }
    }
    Ok(())
}

#[derive(clap::Args)]
pub struct BnAdaptArgs {
    /// The model (safetensors).
    model: PathBuf,
    #[arg(long)]
    arch: Option<String>,
    /// Data stream whose statistics the BatchNorm layers should take (labels unused).
    #[arg(long)]
    data: String,
    /// Corrupt the stream on the fly with this corruption (test-time adaptation to a shift).
    #[arg(long)]
    corruption: Option<String>,
    #[arg(long, default_value_t = 5)]
    severity: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Stop after this many batches.
    #[arg(long)]
    max_batches: Option<usize>,
    /// Keep PyTorch's momentum-0.1 running update instead of an equal-weight average of all batches.
    #[arg(long)]
    momentum_update: bool,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(short = 'o', long)]
    out: PathBuf,
    #[arg(long)]
    json: bool,
}

pub fn bn_adapt(a: BnAdaptArgs) -> Result<()> {
    let mut model = Model::load(&a.model, a.arch.as_deref())?;
    let mut data = load_data(&a.data, a.limit)?;
    if let Some(c) = a.corruption.as_deref().map(parse_corruption).transpose()? {
        check_severity(a.severity)?;
        data = rws_nn::corrupt_dataset(&data, c, a.severity, CORRUPTION_SEED)?;
    }
    let n = rws_nn::bn_adapt(&mut model, &data, a.batch_size, a.max_batches, !a.momentum_update, true)?;
    model.save(&a.out).with_context(|| format!("saving {}", a.out.display()))?;
    if a.json {
        println!("{}", serde_json::json!({"out": a.out, "batches": n, "data": data.name}));
    } else {
        eprintln!("re-estimated BatchNorm statistics on {n} batches of {}; saved {}", data.name, a.out.display());
    }
    Ok(())
}
