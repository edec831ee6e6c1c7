//! Training (PyTorch-style SGD), evaluation and BatchNorm re-estimation.
use crate::io::MOMENTUM_PREFIX;
use crate::model::Model;
use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rws_corrupt::{Corruption, FImage, ParamSet};
use rws_data::{Batch, BatchConfig, Dataset};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Learning-rate schedule, stepped once per epoch as PyTorch's schedulers usually are.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    Constant,
    /// Multiply by `gamma` every `every` epochs (StepLR).
    Step { every: usize, gamma: f64 },
    /// Multiply by `gamma` at each listed epoch (MultiStepLR).
    MultiStep { milestones: Vec<usize>, gamma: f64 },
    /// Cosine annealing from the base rate to 0 over all epochs.
    Cosine,
}

impl Schedule {
    pub fn lr(&self, base: f64, epoch: usize, epochs: usize) -> f64 {
        match self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / (*every).max(1)) as i32),
            Schedule::MultiStep { milestones, gamma } => base * gamma.powi(milestones.iter().filter(|&&m| epoch >= m).count() as i32),
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / epochs.max(1) as f64).cos()),
        }
    }

    /// Parse `constant`, `cosine`, `step:EVERY[:GAMMA]`, `multistep:E1,E2[:GAMMA]` (gamma defaults to 0.1).
    pub fn parse(s: &str) -> Result<Schedule> {
        let bad = || Error::Msg(format!("bad schedule '{s}'; valid: constant, cosine, step:EVERY[:GAMMA], multistep:E1,E2,..[:GAMMA]"));
        let parts: Vec<&str> = s.split(':').collect();
        let gamma = |i: usize| -> Result<f64> { parts.get(i).map(|g| g.parse().map_err(|_| bad())).unwrap_or(Ok(0.1)) };
        match parts[0] {
            "constant" if parts.len() == 1 => Ok(Schedule::Constant),
            "cosine" if parts.len() == 1 => Ok(Schedule::Cosine),
            "step" if (2..=3).contains(&parts.len()) => {
                Ok(Schedule::Step { every: parts[1].parse().map_err(|_| bad())?, gamma: gamma(2)? })
            }
            "multistep" if (2..=3).contains(&parts.len()) => Ok(Schedule::MultiStep {
                milestones: parts[1].split(',').map(|m| m.parse().map_err(|_| bad())).collect::<Result<_>>()?,
                gamma: gamma(2)?,
            }),
            _ => Err(bad()),
        }
    }
}

/// Statistics of one finished epoch, handed to the progress callback.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochStats {
    /// 1-based.
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    /// Percent, on the (augmented) training batches.
    pub train_acc: f64,
    /// Percent on the validation set when one is given.
    pub val_acc: Option<f64>,
    pub seconds: f64,
}

pub type EpochCallback = Arc<dyn Fn(&EpochStats) + Send + Sync>;

#[derive(Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    pub schedule: Schedule,
    pub seed: u64,
    /// Random-crop padding (0 = none) and horizontal flips.
    pub pad: usize,
    pub flip: bool,
    /// Corrupt each training image on the fly (fresh draws per epoch, seeded).
    pub corruption: Option<(Corruption, usize)>,
    /// Write the training state here after every epoch (and read it with `resume`); the best
    /// validation model goes next to it as `<stem>.best.safetensors`.
    pub checkpoint: Option<PathBuf>,
    pub resume: bool,
    /// With a validation set, end with the weights of the best validation epoch (the paper's rule).
    pub keep_best: bool,
    /// Show an indicatif progress bar on stderr.
    pub progress: bool,
    pub on_epoch: Option<EpochCallback>,
}

impl Default for TrainConfig {
    /// The paper's recipe: SGD lr 0.01, momentum 0.9, weight decay 5e-4, batch 128.
    fn default() -> Self {
        TrainConfig {
            epochs: 1,
            batch_size: 128,
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 5e-4,
            nesterov: false,
            schedule: Schedule::Constant,
            seed: 0,
            pad: 0,
            flip: false,
            corruption: None,
            checkpoint: None,
            resume: false,
            keep_best: true,
            progress: false,
            on_epoch: None,
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TrainReport {
    pub epochs: Vec<EpochStats>,
    /// 1-based epoch whose weights the model holds at the end (the last one without validation).
    pub kept_epoch: usize,
    pub best_val_acc: Option<f64>,
    pub seconds: f64,
    /// Training images per second over the epochs run in this call.
    pub images_per_sec: f64,
}

/// The ParamSet whose published parameters fit this image size.
pub fn param_set_for(h: usize, w: usize) -> ParamSet {
    match h.max(w) {
        0..=32 => ParamSet::Cifar10,
        33..=64 => ParamSet::TinyImageNet,
        _ => ParamSet::ImageNet,
    }
}

use rws_data::mix;

fn corrupt_one(img: &[u8], h: usize, w: usize, c: usize, cor: Corruption, sev: usize, seed: u64) -> Result<Vec<u8>> {
    let x = FImage { h, w, c, data: img.iter().map(|&v| v as f64).collect() };
    let mut rng = rws_corrupt::Rng::seed_from_u64(seed);
    let y = rws_corrupt::corrupt_float(&x, cor, sev, param_set_for(h, w), &mut rng)
        .map_err(|e| Error::Msg(format!("corruption {} severity {sev}: {e}", cor.name())))?;
    Ok(rws_corrupt::to_u8(&y))
}

/// A corrupted copy of `ds` (image i drawn from seed (seed, i), so any thread count gives the
/// same bytes). The input is not modified.
pub fn corrupt_dataset(ds: &Dataset, cor: Corruption, severity: usize, seed: u64) -> Result<Dataset> {
    let per = ds.image_size();
    let mut images = vec![0u8; ds.images.len()];
    images.par_chunks_mut(per.max(1)).enumerate().try_for_each(|(i, out)| -> Result<()> {
        let v = corrupt_one(ds.image(i), ds.h, ds.w, ds.c, cor, severity, mix(seed, i as u64))?;
        out.copy_from_slice(&v);
        Ok(())
    })?;
    let mut d = ds.clone();
    d.images = images;
    d.name = format!("{}+{}:{severity}", ds.name, cor.name());
    Ok(d)
}

fn batch_tensors(b: &Batch) -> Result<(Tensor, Tensor)> {
    let x = Tensor::from_slice(&b.images, (b.n, b.c, b.h, b.w), &Device::Cpu)?;
    let y = Tensor::from_slice(&b.labels, b.n, &Device::Cpu)?;
    Ok((x, y))
}

fn check_fit(model: &Model, ds: &Dataset, what: &str) -> Result<()> {
    if ds.c != model.in_channels() {
        return Err(Error::Msg(format!(
            "{what} '{}' has {} channel(s) but the model ({}) expects {}",
            ds.name,
            ds.c,
            model.arch(),
            model.in_channels()
        )));
    }
    if ds.num_classes > model.num_classes() {
        return Err(Error::Msg(format!(
            "{what} '{}' has {} classes but the model ({}) has {} outputs; fine-tune with --init to get a new head",
            ds.name,
            ds.num_classes,
            model.arch(),
            model.num_classes()
        )));
    }
    if ds.is_empty() {
        return Err(Error::Msg(format!("{what} '{}' is empty", ds.name)));
    }
    Ok(())
}

/// Batch size evaluation uses: per-image cost is lowest around here on CPU.
pub const EVAL_BATCH: usize = 128;

/// Accuracy in percent on `ds` (eval mode: running BN statistics, no dropout).
pub fn evaluate(model: &Model, ds: &Dataset) -> Result<f64> {
    let (correct, n) = eval_counts(model, ds)?;
    Ok(100.0 * correct as f64 / n as f64)
}

/// Predicted class of every image, in dataset order.
pub fn predict(model: &Model, ds: &Dataset) -> Result<Vec<u32>> {
    on_worker(|| predict_inner(model, ds))
}

fn predict_inner(model: &Model, ds: &Dataset) -> Result<Vec<u32>> {
    check_fit(model, ds, "dataset")?;
    let mut out = Vec::with_capacity(ds.len());
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for b in ds.eval_batches(EVAL_BATCH) {
        let (x, _) = batch_tensors(&b)?;
        let logits = model.forward(&x, false, &mut rng)?;
        out.extend(logits.argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?);
    }
    Ok(out)
}

fn eval_counts(model: &Model, ds: &Dataset) -> Result<(usize, usize)> {
    let pred = predict(model, ds)?;
    let correct = pred.iter().zip(&ds.labels).filter(|(p, l)| **p == **l as u32).count();
    Ok((correct, ds.len()))
}

fn progress_bar(len: u64, show: bool, msg: &str) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_prefix(msg.to_string());
    pb
}

fn best_path(ck: &Path) -> PathBuf {
    let stem = ck.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    ck.with_file_name(format!("{stem}.best.safetensors"))
}

/// Train `model` in place. Deterministic for a seed: batch order and augmentation come from
/// rws-data's seeded iterator, dropout and corruption draws from (seed, epoch, batch).
pub fn train(model: &mut Model, data: &Dataset, val: Option<&Dataset>, cfg: &TrainConfig) -> Result<TrainReport> {
    on_worker(|| train_inner(model, data, val, cfg))
}

/// Run `f` on a rayon worker thread. The ops' parallel loops then start on the calling worker
/// and wake one sibling, instead of handing every loop from the main thread to sleeping
/// workers and waiting to be woken back: on a loaded 2-core machine each hand-off costs.
fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

fn train_inner(model: &mut Model, data: &Dataset, val: Option<&Dataset>, cfg: &TrainConfig) -> Result<TrainReport> {
    check_fit(model, data, "training set")?;
    if let Some(v) = val {
        check_fit(model, v, "validation set")?;
    }
    // NaN fails the `<=` test, so it is named explicitly; an infinite rate would only produce NaNs.
    if cfg.batch_size == 0 || cfg.lr.is_nan() || cfg.lr <= 0.0 || cfg.lr.is_infinite() {
        return Err(Error::Msg(format!("batch size ({}) and learning rate ({}) must be positive and finite", cfg.batch_size, cfg.lr)));
    }
    if let Some((cor, sev)) = cfg.corruption {
        // Fail now, naming the problem (e.g. images too small), rather than train on clean images.
        corrupt_one(data.image(0), data.h, data.w, data.c, cor, sev, cfg.seed)?;
    }
    let trainable: Vec<usize> = (0..model.params().len()).filter(|&i| model.params()[i].kind.trainable()).collect();
    let mut momentum: Vec<Option<Tensor>> = vec![None; trainable.len()];
    let mut history: Vec<EpochStats> = Vec::new();
    let mut best: Option<(f64, usize, Vec<Tensor>)> = None;
    let mut start_epoch = 0;

    if let (true, Some(ck)) = (cfg.resume, &cfg.checkpoint) {
        if ck.exists() {
            let st = crate::io::read_checkpoint(ck)?;
            model.load_checkpoint(&st, false, 0).map_err(|e| Error::Msg(format!("cannot resume from {}: {e}", ck.display())))?;
            for (j, &i) in trainable.iter().enumerate() {
                let key = format!("{MOMENTUM_PREFIX}{}", model.params()[i].name);
                momentum[j] = st.tensors.get(&key).cloned();
            }
            history = st
                .metadata
                .get("rws.history")
                .map(|h| serde_json::from_str(h))
                .transpose()
                .map_err(|e| Error::Msg(format!("{}: bad rws.history metadata: {e}", ck.display())))?
                .unwrap_or_default();
            start_epoch = history.len();
            let bp = best_path(ck);
            if let (Some(v), true) = (val, bp.exists()) {
                let _ = v;
                let bst = crate::io::read_checkpoint(&bp)?;
                let acc: f64 = bst.metadata.get("rws.val_acc").and_then(|a| a.parse().ok()).unwrap_or(f64::NEG_INFINITY);
                let ep: usize = bst.metadata.get("rws.epoch").and_then(|a| a.parse().ok()).unwrap_or(0);
                let cur = model.snapshot()?;
                model.load_checkpoint(&bst, false, 0)?;
                best = Some((acc, ep, model.snapshot()?));
                model.restore(&cur)?;
            }
        }
    }

    let t0 = Instant::now();
    let mut images_seen = 0usize;
    let bcfg = BatchConfig::train(cfg.batch_size, cfg.seed, cfg.pad, cfg.flip);
    for epoch in start_epoch..cfg.epochs {
        let te = Instant::now();
        let lr = cfg.schedule.lr(cfg.lr, epoch, cfg.epochs);
        let mut batches = data.batches(&bcfg, epoch as u64);
        if let Some((cor, sev)) = cfg.corruption {
            let (h, w, c) = (data.h, data.w, data.c);
            batches = batches.with_transform(Arc::new(move |img: &mut [u8], seed: u64| {
                // Errors depend on the image size only, which `train` checked up front.
                if let Ok(v) = corrupt_one(img, h, w, c, cor, sev, seed) {
                    img.copy_from_slice(&v);
                }
            }));
        }
        let nb = batches.num_batches();
        let pb = progress_bar(nb as u64, cfg.progress, &format!("epoch {}/{}", epoch + 1, cfg.epochs));
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        for (bi, b) in batches.enumerate() {
            let (x, y) = batch_tensors(&b)?;
            let mut rng = ChaCha8Rng::seed_from_u64(mix(mix(cfg.seed, epoch as u64), bi as u64 ^ 0xd70f));
            let logits = model.forward(&x, true, &mut rng)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            let lv = loss.to_scalar::<f32>()? as f64;
            if !lv.is_finite() {
                pb.abandon();
                return Err(Error::Msg(format!(
                    "loss became {lv} at epoch {} batch {}; training stopped (try a lower --lr){}",
                    epoch + 1,
                    bi + 1,
                    cfg.checkpoint.as_ref().map(|c| format!("; the last good epoch is in {}", c.display())).unwrap_or_default()
                )));
            }
            let grads = loss.backward()?;
            for (j, &i) in trainable.iter().enumerate() {
                let p = &model.params()[i].var;
                let Some(g) = grads.get(p.as_tensor()) else { continue };
                crate::ops::sgd_step(p, g, &mut momentum[j], lr, cfg.momentum, cfg.weight_decay, cfg.nesterov)?;
            }
            let pred = logits.argmax(1)?.to_dtype(DType::U32)?.to_vec1::<u32>()?;
            correct += pred.iter().zip(&b.labels).filter(|(p, l)| p == l).count();
            seen += b.n;
            loss_sum += lv * b.n as f64;
            pb.inc(1);
            if bi % 10 == 0 {
                pb.set_message(format!("loss {:.4} acc {:.2}%", loss_sum / seen as f64, 100.0 * correct as f64 / seen as f64));
            }
        }
        images_seen += seen;
        pb.finish_and_clear();
        let val_acc = val.map(|v| evaluate(model, v)).transpose()?;
        let st = EpochStats {
            epoch: epoch + 1,
            lr,
            train_loss: loss_sum / seen.max(1) as f64,
            train_acc: 100.0 * correct as f64 / seen.max(1) as f64,
            val_acc,
            seconds: te.elapsed().as_secs_f64(),
        };
        if let Some(va) = val_acc {
            if best.as_ref().is_none_or(|(b, _, _)| va > *b) {
                best = Some((va, epoch + 1, model.snapshot()?));
                if let Some(ck) = &cfg.checkpoint {
                    let meta = HashMap::from([("rws.val_acc".to_string(), va.to_string()), ("rws.epoch".to_string(), (epoch + 1).to_string())]);
                    model.save_with(&best_path(ck), &[], meta)?;
                }
            }
        }
        history.push(st.clone());
        if let Some(ck) = &cfg.checkpoint {
            let extra: Vec<(String, Tensor)> = trainable
                .iter()
                .zip(&momentum)
                .filter_map(|(&i, m)| m.as_ref().map(|m| (format!("{MOMENTUM_PREFIX}{}", model.params()[i].name), m.clone())))
                .collect();
            let meta = HashMap::from([(
                "rws.history".to_string(),
                serde_json::to_string(&history).map_err(|e| Error::Msg(e.to_string()))?,
            )]);
            model.save_with(ck, &extra, meta)?;
        }
        if let Some(f) = &cfg.on_epoch {
            f(&st);
        }
        if cfg.progress {
            eprintln!(
                "epoch {}/{}: lr {:.4} loss {:.4} train acc {:.2}%{} ({:.1} s)",
                st.epoch,
                cfg.epochs,
                st.lr,
                st.train_loss,
                st.train_acc,
                st.val_acc.map(|v| format!(" val acc {v:.2}%")).unwrap_or_default(),
                st.seconds
            );
        }
    }
    let mut kept_epoch = history.len();
    let best_val_acc = best.as_ref().map(|b| b.0);
    if cfg.keep_best {
        if let Some((_, ep, snap)) = best {
            model.restore(&snap)?;
            kept_epoch = ep;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    Ok(TrainReport {
        epochs: history,
        kept_epoch,
        best_val_acc,
        seconds,
        images_per_sec: if seconds > 0.0 { images_seen as f64 / seconds } else { 0.0 },
    })
}

/// Re-estimate BatchNorm running statistics on `ds` (train-mode forward passes, no weight
/// update). `cumulative` resets the statistics first and averages over all batches equally
/// (PyTorch's momentum=None), which is what test-time adaptation wants.
pub fn bn_adapt(model: &mut Model, ds: &Dataset, batch_size: usize, max_batches: Option<usize>, cumulative: bool, progress: bool) -> Result<usize> {
    check_fit(model, ds, "dataset")?;
    if !model.has_batch_norm() {
        return Err(Error::Msg(format!("model {} has no BatchNorm layers to adapt", model.arch())));
    }
    let rm: Vec<usize> = (0..model.params().len())
        .filter(|&i| matches!(model.params()[i].kind, crate::model::Kind::RunningMean | crate::model::Kind::RunningVar))
        .collect();
    if cumulative {
        model.reset_bn_stats()?;
    }
    let mut sums: Vec<Option<Tensor>> = vec![None; rm.len()];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let batches = ds.eval_batches(batch_size.max(2));
    let total = max_batches.map(|m| m.min(batches.num_batches())).unwrap_or(batches.num_batches());
    let pb = progress_bar(total as u64, progress, "bn-adapt");
    let mut n = 0;
    for b in batches.take(total) {
        let (x, _) = batch_tensors(&b)?;
        if cumulative {
            // Each batch's statistics are what a momentum-1 update leaves; average them.
            model.forward(&x.detach(), true, &mut rng)?;
            for (k, &i) in rm.iter().enumerate() {
                let t = model.params()[i].var.as_tensor();
                // After one update from the reset state s0: s1 = 0.9 s0 + 0.1 batch, so batch = (s1 - 0.9 s0) / 0.1.
                let s0 = if model.params()[i].kind == crate::model::Kind::RunningMean { t.zeros_like()? } else { t.ones_like()? };
                let batch_stat = ((t - (s0.clone() * 0.9)?)? / 0.1)?;
                sums[k] = Some(match sums[k].take() {
                    None => batch_stat,
                    Some(s) => (s + batch_stat)?,
                });
                model.params()[i].var.set(&s0)?;
            }
        } else {
            model.forward(&x.detach(), true, &mut rng)?;
        }
        n += 1;
        pb.inc(1);
    }
    pb.finish_and_clear();
    if cumulative && n > 0 {
        for (k, &i) in rm.iter().enumerate() {
            if let Some(s) = &sums[k] {
                model.params()[i].var.set(&(s / n as f64)?)?;
            }
        }
    }
    Ok(n)
}

/// Per-channel mean and standard deviation of a dataset on the 0..1 scale: the values a fresh
/// model's `normalize.mean|std` get.
pub fn channel_stats(ds: &Dataset) -> (Vec<f32>, Vec<f32>) {
    let c = ds.c.max(1);
    let mut s = vec![0f64; c];
    let mut s2 = vec![0f64; c];
    for (i, &v) in ds.images.iter().enumerate() {
        let x = v as f64 / 255.0;
        s[i % c] += x;
        s2[i % c] += x * x;
    }
    let n = (ds.images.len() / c).max(1) as f64;
    let mean: Vec<f32> = s.iter().map(|v| (v / n) as f32).collect();
    let std: Vec<f32> = s.iter().zip(&s2).map(|(a, b)| ((b / n - (a / n).powi(2)).max(1e-12).sqrt() as f32).max(1e-3)).collect();
    (mean, std)
}
