//! `rws corrupt`: corrupted copies of a dataset in the CIFAR-10-C layout (`DIR/<name>.npy`, uint8
//! N·S×H×W×C with the chosen severities stacked in order, plus `DIR/labels.npy`).
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use rws_corrupt::{corrupt_u8, image_rng, Corruption, ParamSet};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct CorruptArgs {
    /// A .npy of uint8 images (N×H×W×C or N×H×W), an image folder (flat, or one subfolder per
    /// class), or a dataset: fashion-mnist[:train|test], cifar10:DIR, cifar100:DIR (any rws data spec).
    #[arg(long)]
    input: String,
    /// Corruption names, comma separated, or `all`.
    #[arg(long, default_value = "all")]
    corruption: String,
    /// Severity 1-5, a list (1,3,5), a range (2-4) or `all`.
    #[arg(long, default_value = "all")]
    severity: String,
    /// Parameter table: cifar10 (32×32), tinyimagenet (64×64), imagenet (224×224, imagecorruptions).
    #[arg(long, default_value = "cifar10")]
    params: String,
    /// Seed: image i of corruption c at severity s draws from a stream fixed by (seed, c, s, i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output folder (created).
    #[arg(short = 'o', long)]
    output: PathBuf,
    /// Contact sheet PNG: rows = a few images × corruptions, columns = clean + severities.
    #[arg(long)]
    preview: Option<PathBuf>,
    /// Number of images on the contact sheet.
    #[arg(long, default_value_t = 2)]
    preview_images: usize,
    /// Folder with the reference frost textures (frost1.png … frost5.jpg); procedural frost otherwise.
    #[arg(long)]
    frost_dir: Option<PathBuf>,
    /// Only the first N images.
    #[arg(long)]
    limit: Option<usize>,
    /// Print a JSON summary on stdout instead of text.
    #[arg(long)]
    json: bool,
}

struct Input {
    n: usize,
    h: usize,
    w: usize,
    c: usize,
    data: Vec<u8>,
    labels: Option<(Vec<u16>, usize)>,
}

fn load_input(spec: &str) -> Result<Input> {
    let p = Path::new(spec);
    if p.extension().is_some_and(|e| e == "npy") && p.is_file() {
        let (shape, data) = rws_data::read_npy_u8(p).with_context(|| format!("--input {spec}"))?;
        let (n, h, w, c) = match shape[..] {
            [n, h, w] => (n, h, w, 1),
            [n, h, w, c] if c == 1 || c == 3 => (n, h, w, c),
            _ => bail!("--input {spec}: expected uint8 N×H×W×C (C = 1 or 3) or N×H×W, found shape {shape:?}"),
        };
        return Ok(Input { n, h, w, c, data, labels: None });
    }
    if p.is_dir() {
        let has_subdirs = std::fs::read_dir(p)?.filter_map(|e| e.ok()).any(|e| e.path().is_dir());
        if !has_subdirs {
            let (n, h, w, c, data, _) = rws_corrupt::io::read_image_dir(p).with_context(|| format!("--input {spec}"))?;
            return Ok(Input { n, h, w, c, data, labels: None });
        }
        let ds = rws_data::image_folder(p).with_context(|| format!("--input {spec}"))?;
        return Ok(Input { n: ds.len(), h: ds.h, w: ds.w, c: ds.c, labels: Some((ds.labels.clone(), ds.num_classes)), data: ds.images });
    }
    let ds = rws_data::load_spec(spec).with_context(|| format!("--input {spec}: not a .npy file, a folder or a dataset spec"))?;
    Ok(Input { n: ds.len(), h: ds.h, w: ds.w, c: ds.c, labels: Some((ds.labels.clone(), ds.num_classes)), data: ds.images })
}

fn parse_corruptions(s: &str) -> Result<Vec<Corruption>> {
    if s.trim() == "all" {
        return Ok(Corruption::ALL.to_vec());
    }
    let mut v = Vec::new();
    for name in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let c: Corruption = name.parse().map_err(|e| anyhow::anyhow!("--corruption: {e}"))?;
        if !v.contains(&c) {
            v.push(c);
        }
    }
    if v.is_empty() {
        bail!("--corruption: no corruption named");
    }
    Ok(v)
}

fn parse_severities(s: &str) -> Result<Vec<usize>> {
    let bad = || anyhow::anyhow!("--severity `{s}`: expected 1-5, a list like 1,3,5, a range like 2-4, or all");
    if s.trim() == "all" {
        return Ok((1..=5).collect());
    }
    let mut v = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<usize>().map_err(|_| bad())?, b.trim().parse::<usize>().map_err(|_| bad())?),
            None => {
                let a = part.parse::<usize>().map_err(|_| bad())?;
                (a, a)
            }
        };
        if !(1..=5).contains(&a) || !(1..=5).contains(&b) || a > b {
            bail!("--severity `{s}`: severities are 1..5");
        }
        for k in a..=b {
            if !v.contains(&k) {
                v.push(k);
            }
        }
    }
    v.sort();
    Ok(v)
}

pub fn run(a: CorruptArgs) -> Result<()> {
    let t0 = std::time::Instant::now();
    let corruptions = parse_corruptions(&a.corruption)?;
    let severities = parse_severities(&a.severity)?;
    let params: ParamSet = a.params.parse().map_err(|e| anyhow::anyhow!("--params: {e}"))?;
    if let Some(d) = &a.frost_dir {
        rws_corrupt::set_frost_dir(Some(d)).with_context(|| format!("--frost-dir {}", d.display()))?;
    }
    let mut inp = load_input(&a.input)?;
    if let Some(l) = a.limit {
        let l = l.min(inp.n);
        inp.data.truncate(l * inp.h * inp.w * inp.c);
        if let Some((labels, _)) = &mut inp.labels {
            labels.truncate(l);
        }
        inp.n = l;
    }
    if inp.n == 0 {
        bail!("--input {}: no images", a.input);
    }
    let (n, h, w, c) = (inp.n, inp.h, inp.w, inp.c);
    let sz = h * w * c;
    // Dry run on the first image: size and parameter errors depend only on the shape, so every
    // error surfaces here, before anything is written.
    for &cor in &corruptions {
        for &s in &severities {
            corrupt_u8(&inp.data[..sz], h, w, c, cor, s, params, &mut image_rng(a.seed, cor, s, 0))
                .map_err(|e| anyhow::anyhow!("--input {} ({h}x{w}x{c}): {} severity {s}: {e}", a.input, cor.name()))?;
        }
    }
    std::fs::create_dir_all(&a.output).with_context(|| format!("-o {}", a.output.display()))?;
    let total = (n * corruptions.len() * severities.len()) as u64;
    let pb = if a.json { ProgressBar::hidden() } else { ProgressBar::new(total) };
    pb.set_style(ProgressStyle::with_template("{msg:>18} [{bar:40}] {pos}/{len} images ({per_sec}, eta {eta})").unwrap().progress_chars("=> "));
    let mut outputs = Vec::new();
    // Each corruption's file is written (and synced) on its own thread while the next corruption
    // is computed: the write waits on the disk, not the CPU, and done serially it was as long as
    // the fast corruptions themselves, so a second core barely helped them.
    std::thread::scope(|scope| -> Result<()> {
        let mut writing: Option<std::thread::ScopedJoinHandle<'_, Result<()>>> = None;
        for &cor in &corruptions {
            pb.set_message(cor.name());
            let mut out = vec![0u8; severities.len() * n * sz];
            for (k, &s) in severities.iter().enumerate() {
                out[k * n * sz..(k + 1) * n * sz].par_chunks_mut(sz).zip(inp.data.par_chunks(sz)).enumerate().try_for_each(|(i, (o, x))| {
                    let y = corrupt_u8(x, h, w, c, cor, s, params, &mut image_rng(a.seed, cor, s, i)).map_err(|e| anyhow::anyhow!("{} s{s} image {i}: {e}", cor.name()))?;
                    o.copy_from_slice(&y);
                    pb.inc(1);
                    Ok::<_, anyhow::Error>(())
                })?;
            }
            let path = a.output.join(format!("{}.npy", cor.name()));
            let shape = [severities.len() * n, h, w, c];
            if let Some(wr) = writing.take() {
                wr.join().map_err(|_| anyhow::anyhow!("the npy writer thread panicked"))??;
            }
            outputs.push(serde_json::json!({"corruption": cor.name(), "path": path, "shape": shape}));
            writing = Some(scope.spawn(move || rws_data::write_npy_u8(&path, &shape, &out).with_context(|| format!("writing {}", path.display()))));
        }
        if let Some(wr) = writing.take() {
            wr.join().map_err(|_| anyhow::anyhow!("the npy writer thread panicked"))??;
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    let mut labels_path = None;
    if let Some((labels, k)) = &inp.labels {
        let path = a.output.join("labels.npy");
        let rep: Vec<u16> = severities.iter().flat_map(|_| labels.iter().copied()).collect();
        if *k <= 256 {
            rws_data::write_npy_labels_u8(&path, &rep.iter().map(|&l| l as u8).collect::<Vec<_>>())?;
        } else {
            rws_data::write_npy_i64(&path, &rep.iter().map(|&l| l as i64).collect::<Vec<_>>())?;
        }
        labels_path = Some(path);
    }
    if let Some(pp) = &a.preview {
        let k = a.preview_images.clamp(1, n);
        let mut rows = Vec::new();
        for &cor in &corruptions {
            for i in 0..k {
                let x = &inp.data[i * sz..(i + 1) * sz];
                let mut row = vec![x.to_vec()];
                for &s in &severities {
                    row.push(corrupt_u8(x, h, w, c, cor, s, params, &mut image_rng(a.seed, cor, s, i))?);
                }
                rows.push(row);
            }
        }
        let scale = (96 / h.max(w)).max(1);
        let (sh, sw, rgb) = rws_corrupt::io::contact_sheet(&rows, h, w, c, scale);
        rws_corrupt::io::write_png_rgb(pp, sh, sw, &rgb).with_context(|| format!("--preview {}", pp.display()))?;
    }
    let secs = t0.elapsed().as_secs_f64();
    if a.json {
        let v = serde_json::json!({
            "input": a.input, "n": n, "h": h, "w": w, "c": c,
            "params": a.params, "seed": a.seed, "severities": severities,
            "outputs": outputs, "labels": labels_path, "preview": a.preview, "seconds": secs,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{} images ({h}x{w}x{c}) x {} corruptions x {} severities -> {} in {secs:.1}s",
            n,
            corruptions.len(),
            severities.len(),
            a.output.display()
        );
        if let Some(p) = labels_path {
            println!("labels: {}", p.display());
        }
        if let Some(p) = &a.preview {
            println!("preview: {}", p.display());
        }
    }
    Ok(())
}
