//! `rws demo`: the Robust Weight Signatures experiments end to end on Fashion-MNIST.
//!
//! Every stage (pretraining, each fine-tune, each corrupted data set) is cached by the hash of
//! what determines it (see [`cache`]), so a rerun only redoes what changed. All numbers land in
//! `report.json`; `REPORT.md` shows them as tables next to the PNG plots.

pub mod cache;
mod report;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rws_core::{Codec, Patcher, Selection, SigInfo, Signature, TensorMap};
use rws_corrupt::Corruption;
use rws_data::{Dataset, Split};
use rws_nn::{Model, Schedule, TrainConfig};
use serde::Serialize;
use serde_json::{json, Value};

use cache::Cache;

/// The one error type of this crate: each variant says which stage or file failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Msg(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Data(#[from] rws_data::Error),
    #[error(transparent)]
    Nn(#[from] rws_nn::Error),
    #[error(transparent)]
    Core(#[from] rws_core::Error),
    #[error(transparent)]
    Plot(#[from] rws_plot::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that shapes a demo run. Defaults fit 20 minutes on 2 cores; [`DemoConfig::quick`]
/// fits about 3.
#[derive(Clone, Debug, Serialize)]
pub struct DemoConfig {
    #[serde(skip)]
    pub out: PathBuf,
    #[serde(skip)]
    pub fresh: bool,
    pub quick: bool,
    pub seed: u64,
    pub arch: String,
    pub corruptions: Vec<String>,
    pub severity: usize,
    /// Images of the pretraining half and of the fine-tuning half actually used.
    pub pretrain_images: usize,
    pub finetune_images: usize,
    pub pretrain_epochs: usize,
    pub finetune_epochs: usize,
    pub lr: f64,
    pub finetune_lr: f64,
    pub batch_size: usize,
    /// Default number of weight layers a signature covers, α and codec of the main table.
    pub k: usize,
    pub alpha: f64,
    pub codec: String,
    /// Signatures also cover the BatchNorm running statistics of their layers. Without them a
    /// patched BN network normalises the robust weights' features with the clean model's
    /// statistics (the paper re-estimates BN statistics for its ResNet-50 for the same reason).
    pub bn_stats: bool,
    /// Re-estimate the BN running statistics of every patched model on clean fine-tuning images
    /// (the paper's treatment of its ResNet-50), instead of or on top of `bn_stats`.
    pub bn_adapt: bool,
    /// Share of each robust model's fine-tuning images that carry its corruption; the rest stay
    /// clean. 1.0 is the paper's all-corrupted set. A mix keeps the robust model's BN statistics
    /// and features close to the clean model's, so its signature holds the robustness in the
    /// weights instead of in statistics that a clean-calibrated patched model does not share.
    pub robust_mix: f64,
    /// Test images for the main table and for the sweeps.
    pub test_images: usize,
    pub sweep_images: usize,
}

/// Two or three of each family (noise, blur, weather, digital), so the similarity observation has
/// within-family pairs to compare.
const DEFAULT_CORRUPTIONS: &[&str] = &[
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "motion_blur",
    "fog",
    "contrast",
    "pixelate",
];
/// A noise pair for the similarity claim and fog, which a clean model handles worst: with 2 000 test
/// images (±1 point of noise) only large effects show. (Contrast was tried too: at this scale its
/// transfer signature changes B's RA by less than the noise.)
const QUICK_CORRUPTIONS: &[&str] = &["gaussian_noise", "impulse_noise", "fog"];

impl DemoConfig {
    pub fn default_run(out: &Path) -> DemoConfig {
        DemoConfig {
            out: out.to_path_buf(),
            fresh: false,
            quick: false,
            seed: 0,
            arch: rws_nn::DEFAULT_ARCH.into(),
            corruptions: DEFAULT_CORRUPTIONS.iter().map(|s| s.to_string()).collect(),
            severity: 5,
            pretrain_images: 30_000,
            finetune_images: 30_000,
            pretrain_epochs: 5,
            finetune_epochs: 1,
            lr: 0.05,
            finetune_lr: 0.01,
            batch_size: 128,
            k: 3,
            alpha: 1.0,
            codec: "int4".into(),
            bn_stats: false,
            bn_adapt: true,
            robust_mix: 0.5,
            test_images: 10_000,
            sweep_images: 1_000,
        }
    }

    pub fn quick(out: &Path) -> DemoConfig {
        DemoConfig {
            quick: true,
            corruptions: QUICK_CORRUPTIONS.iter().map(|s| s.to_string()).collect(),
            pretrain_images: 12_000,
            finetune_images: 6_000,
            pretrain_epochs: 2,
            finetune_epochs: 1,
            test_images: 2_000,
            sweep_images: 1_000,
            ..DemoConfig::default_run(out)
        }
    }

    fn codec(&self) -> Result<Codec> {
        self.codec.parse::<Codec>().map_err(Error::from)
    }

    fn parsed_corruptions(&self) -> Result<Vec<Corruption>> {
        self.corruptions.iter().map(|c| c.parse::<Corruption>().map_err(|e| Error::Msg(e.to_string()))).collect()
    }
}

/// A trained model kept on disk by the cache plus its in-memory tensors for patching.
struct Trained {
    key: String,
    path: PathBuf,
    model: Model,
}

impl Trained {
    /// An independent copy: candle variables share storage when cloned, so working copies that
    /// get patched or trained further are loaded afresh from the cached file.
    fn copy(&self) -> Result<Model> {
        Ok(Model::load(&self.path, Some(self.model.arch()))?)
    }
}

fn say(msg: &str) {
    eprintln!("[rws demo] {msg}");
}

/// The shared context of all stages.
struct Ctx {
    cfg: DemoConfig,
    cache: Cache,
    pre_data: Dataset,
    ft_data: Dataset,
    test: Dataset,
    sweep_test: Dataset,
    /// Corrupted test sets (full and sweep-sized), by corruption.
    test_c: HashMap<Corruption, Dataset>,
    sweep_c: HashMap<Corruption, Dataset>,
}

impl Ctx {
    fn train_cfg(&self, epochs: usize, lr: f64, seed: u64) -> TrainConfig {
        TrainConfig {
            epochs,
            batch_size: self.cfg.batch_size,
            lr,
            schedule: Schedule::Cosine,
            seed,
            pad: 2,
            keep_best: false,
            progress: true,
            ..TrainConfig::default()
        }
    }

    /// Train (or fetch from the cache) a model. `init`: the parent model, whose key is part of
    /// this one's; `classes`: the head size.
    #[allow(clippy::too_many_arguments)]
    fn trained(&self, label: &str, init: Option<&Trained>, data: &Dataset, data_desc: &Value, epochs: usize, lr: f64, classes: usize, seed: u64) -> Result<Trained> {
        let key = Cache::key(&json!({
            "arch": self.cfg.arch, "init": init.map(|t| t.key.clone()), "data": data_desc,
            "epochs": epochs, "lr": lr, "batch": self.cfg.batch_size, "classes": classes, "seed": seed,
        }));
        let t0 = Instant::now();
        let (path, computed) = self.cache.get_or("model", &key, "safetensors", |tmp| {
            say(&format!("training {label} ({} images × {epochs} epochs)", data.len()));
            let mut model = match init {
                Some(p) => {
                    let mut m = p.copy()?;
                    if classes != m.num_classes() {
                        m.new_head(classes, seed)?;
                    }
                    m
                }
                None => {
                    let mut m = Model::new(&self.cfg.arch, classes, data.c, seed)?;
                    let (mean, std) = rws_nn::channel_stats(data);
                    m.set_normalization(&mean, &std)?;
                    m
                }
            };
            rws_nn::train(&mut model, data, None, &self.train_cfg(epochs, lr, seed))?;
            model.save(tmp)?;
            Ok(())
        })?;
        if !computed {
            say(&format!("{label}: cached"));
        } else {
            say(&format!("{label}: trained in {:.1} s", t0.elapsed().as_secs_f64()));
        }
        Ok(Trained { key, model: Model::load(&path, Some(&self.cfg.arch))?, path })
    }

    /// The fine-tuning set of a robust model: `ds` with a seeded `robust_mix` share of its images
    /// corrupted by `c`, and the description that keys the model trained on it.
    fn robust_data(&self, ds: &Dataset, desc: &Value, c: Corruption, seed: u64) -> Result<(Dataset, Value)> {
        let full = self.corrupted(ds, desc, c, seed)?;
        let mix = self.cfg.robust_mix;
        let mut rdesc = json!({"base": desc, "corruption": c.name(), "severity": self.cfg.severity, "seed": seed});
        if mix >= 1.0 {
            return Ok((full, rdesc));
        }
        rdesc["mix"] = json!(mix);
        let per = ds.h * ds.w * ds.c;
        let mut d = full;
        // A per-image coin from the seed, so the choice does not depend on the set's order or size.
        let threshold = (mix * u64::MAX as f64) as u64;
        for i in 0..ds.len() {
            if rws_data::mix(seed ^ 0x006D_6978, i as u64) > threshold {
                d.images[i * per..(i + 1) * per].copy_from_slice(&ds.images[i * per..(i + 1) * per]);
            }
        }
        Ok((d, rdesc))
    }

    /// A corrupted copy of `ds`, cached as raw bytes.
    fn corrupted(&self, ds: &Dataset, desc: &Value, c: Corruption, seed: u64) -> Result<Dataset> {
        let key = Cache::key(&json!({"data": desc, "corruption": c.name(), "severity": self.cfg.severity, "seed": seed, "n": ds.len()}));
        let (path, _) = self.cache.get_or("data", &key, "bin", |tmp| {
            let d = rws_nn::corrupt_dataset(ds, c, self.cfg.severity, seed)?;
            std::fs::write(tmp, &d.images).map_err(|e| Error::Io { path: tmp.to_path_buf(), source: e })
        })?;
        let images = std::fs::read(&path).map_err(|e| Error::Io { path: path.clone(), source: e })?;
        if images.len() != ds.images.len() {
            return Err(Error::Msg(format!("{}: cached data has the wrong size; rerun with --fresh", path.display())));
        }
        let mut d = ds.clone();
        d.images = images;
        d.name = format!("{}+{}:{}", ds.name, c.name(), self.cfg.severity);
        Ok(d)
    }
}

fn tensor_map(m: &Model) -> Result<TensorMap> {
    Ok(TensorMap::from_f32_vec(m.tensors()?)?)
}

fn set_map(m: &mut Model, map: &TensorMap) -> Result<()> {
    m.set_tensors(&map.to_f32_vec())?;
    Ok(())
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn family(c: Corruption) -> &'static str {
    use Corruption::*;
    match c {
        GaussianNoise | ShotNoise | ImpulseNoise | SpeckleNoise => "noise",
        GaussianBlur | DefocusBlur | GlassBlur | MotionBlur | ZoomBlur => "blur",
        Snow | Frost | Fog | Spatter => "weather",
        _ => "digital",
    }
}

/// The first `k` weight layers in forward order; with `bn_stats`, each BN's running statistics
/// join its affine tensors.
fn selection(m: &TensorMap, k: usize, bn_stats: bool) -> Selection {
    if !bn_stats {
        return Selection::First(k);
    }
    let mut names = Vec::new();
    for layer in rws_core::weight_layers(m).into_iter().take(k) {
        for t in &layer.tensors {
            names.push(t.clone());
            if let Some(prefix) = t.strip_suffix(".bias").filter(|p| *p != layer.prefix) {
                for stat in ["running_mean", "running_var"] {
                    let n = format!("{prefix}.{stat}");
                    if m.tensors.contains_key(&n) {
                        names.push(n);
                    }
                }
            }
        }
    }
    Selection::Order { names, first: None }
}

/// TA and RA (on the model's own corruption) of a model.
#[derive(Clone, Copy, Debug, Serialize)]
struct TaRa {
    ta: f64,
    ra: f64,
}

/// Runs the whole demo and writes REPORT.md, report.json and plots into `cfg.out`.
pub fn run(cfg: DemoConfig) -> Result<Value> {
    let t_start = Instant::now();
    let out = cfg.out.clone();
    std::fs::create_dir_all(&out).map_err(|e| Error::Io { path: out.clone(), source: e })?;
    let cache = Cache::new(&out.join("cache"), cfg.fresh)?;
    let cors = cfg.parsed_corruptions()?;
    let codec = cfg.codec()?;

    say("loading Fashion-MNIST");
    let train_all = rws_data::fashion_mnist(Split::Train)?;
    let test_all = rws_data::fashion_mnist(Split::Test)?;
    let half = train_all.len() / 2;
    let pre_data = train_all.range(0..half.min(cfg.pretrain_images))?;
    let ft_data = train_all.range(half..(half + cfg.finetune_images).min(train_all.len()))?;
    let test = test_all.limit(cfg.test_images);
    let sweep_test = test_all.limit(cfg.sweep_images);
    let test_desc = json!({"set": "fmnist-test", "n": test.len()});
    let ft_desc = json!({"set": "fmnist-train", "range": [half, half + ft_data.len()]});

    let mut ctx = Ctx { cfg: cfg.clone(), cache, pre_data, ft_data, test, sweep_test, test_c: HashMap::new(), sweep_c: HashMap::new() };
    say("corrupting test sets");
    for (i, &c) in cors.iter().enumerate() {
        let d = ctx.corrupted(&ctx.test, &test_desc, c, 10_000 + i as u64)?;
        ctx.sweep_c.insert(c, d.limit(cfg.sweep_images));
        ctx.test_c.insert(c, d);
    }

    // 1. Pretraining (θ₀) on the first half.
    let pre_desc = json!({"set": "fmnist-train", "range": [0, ctx.pre_data.len()]});
    let theta0 = ctx.trained("pretrained θ₀", None, &ctx.pre_data, &pre_desc, cfg.pretrain_epochs, cfg.lr, 10, cfg.seed)?;

    // 2. Fine-tuning: clean (θₛ) and one robust model per corruption, on the second half.
    let clean = ctx.trained("clean θₛ", Some(&theta0), &ctx.ft_data, &ft_desc, cfg.finetune_epochs, cfg.finetune_lr, 10, cfg.seed + 1)?;
    let mut robust: HashMap<Corruption, Trained> = HashMap::new();
    for (i, &c) in cors.iter().enumerate() {
        let (data, desc) = ctx.robust_data(&ctx.ft_data, &ft_desc, c, 20_000 + i as u64)?;
        let t = ctx.trained(&format!("robust {}", c.name()), Some(&theta0), &data, &desc, cfg.finetune_epochs, cfg.finetune_lr, 10, cfg.seed + 1)?;
        robust.insert(c, t);
    }

    // 3. Signatures.
    let m0 = tensor_map(&theta0.model)?;
    let ms = tensor_map(&clean.model)?;
    let robust_maps: HashMap<Corruption, TensorMap> = robust.iter().map(|(c, t)| Ok((*c, tensor_map(&t.model)?))).collect::<Result<_>>()?;
    let n_layers = rws_core::weight_layers(&ms).len();
    let extract = |c: Corruption, k: usize, codec: Codec, m0: &TensorMap, ms: &TensorMap, mr: &TensorMap| -> Result<Signature> {
        let info = SigInfo { name: c.name().into(), corruption: Some(c.name().into()), severity: Some(cfg.severity as u32), dataset: Some("fashion-mnist".into()) };
        Ok(rws_core::extract(m0, ms, &[mr], &selection(ms, k, cfg.bn_stats), codec, info)?)
    };
    let sig_dir = out.join("signatures");
    std::fs::create_dir_all(&sig_dir).map_err(|e| Error::Io { path: sig_dir.clone(), source: e })?;
    let mut sigs: HashMap<Corruption, Signature> = HashMap::new();
    for &c in &cors {
        let s = extract(c, cfg.k, codec, &m0, &ms, &robust_maps[&c])?;
        s.save(&sig_dir.join(format!("{}.rws", c.name())))?;
        sigs.insert(c, s);
    }

    // 4. Main table.
    say("evaluating the main table");
    let full_bytes = 4 * clean.model.num_parameters();
    let mut patched_model = clean.copy()?;
    let mut patch_map = ms.clone();
    let mut patcher = Patcher::new();
    const ADAPT_IMAGES: usize = 2048;
    let adapt_main = ctx.ft_data.limit(ADAPT_IMAGES);
    let eval_patched = |model: &mut Model, map: &mut TensorMap, patcher: &mut Patcher, set: &[(&Signature, f64)], data: &[&Dataset], adapt: &Dataset| -> Result<Vec<f64>> {
        patcher.apply(map, set)?;
        set_map(model, map)?;
        if cfg.bn_adapt && model.has_batch_norm() {
            rws_nn::bn_adapt(model, adapt, 128, None, true, false)?;
        }
        let r = data.iter().map(|d| rws_nn::evaluate(model, d).map_err(Error::from)).collect::<Result<Vec<_>>>();
        patcher.reset(map);
        r
    };
    let std_ta = rws_nn::evaluate(&clean.model, &ctx.test)?;
    let mut std_ra = HashMap::new();
    let mut robust_res = HashMap::new();
    let mut patched_res = HashMap::new();
    let mut by_codec: BTreeMap<&str, HashMap<Corruption, TaRa>> = BTreeMap::new();
    for &c in &cors {
        std_ra.insert(c, rws_nn::evaluate(&clean.model, &ctx.test_c[&c])?);
        let rm = &robust[&c].model;
        robust_res.insert(c, TaRa { ta: rws_nn::evaluate(rm, &ctx.test)?, ra: rws_nn::evaluate(rm, &ctx.test_c[&c])? });
        let v = eval_patched(&mut patched_model, &mut patch_map, &mut patcher, &[(&sigs[&c], cfg.alpha)], &[&ctx.test, &ctx.test_c[&c]], &adapt_main)?;
        patched_res.insert(c, TaRa { ta: v[0], ra: v[1] });
        // The quantisation claim is judged on the full test set, not on the sweep subset, where
        // one image is 0.1 point: f32 and int4 signatures of the same robust model, side by side.
        for (name, cd) in [("f32", Codec::F32), ("int4", Codec::Int { bits: 4, per_channel: false })] {
            let r = if cd == codec {
                patched_res[&c]
            } else {
                let sc = extract(c, cfg.k, cd, &m0, &ms, &robust_maps[&c])?;
                let v = eval_patched(&mut patched_model, &mut patch_map, &mut patcher, &[(&sc, cfg.alpha)], &[&ctx.test, &ctx.test_c[&c]], &adapt_main)?;
                TaRa { ta: v[0], ra: v[1] }
            };
            by_codec.entry(name).or_default().insert(c, r);
        }
    }
    let sig_bytes: HashMap<Corruption, u64> = cors.iter().map(|c| {
        let p = sig_dir.join(format!("{}.rws", c.name()));
        (*c, std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0))
    }).collect();

    // 5. Sweeps on the smaller test subset: k, α, bits.
    say("sweeps: layers k, α, bits");
    let sweep = |set_for: &dyn Fn(Corruption) -> Result<(Signature, f64)>, patched_model: &mut Model, patch_map: &mut TensorMap, patcher: &mut Patcher| -> Result<(f64, f64, BTreeMap<String, TaRa>)> {
        let mut per = BTreeMap::new();
        for &c in &cors {
            let (s, a) = set_for(c)?;
            let v = eval_patched(patched_model, patch_map, patcher, &[(&s, a)], &[&ctx.sweep_test, &ctx.sweep_c[&c]], &adapt_main)?;
            per.insert(c.name().to_string(), TaRa { ta: v[0], ra: v[1] });
        }
        let ta = mean(&per.values().map(|r| r.ta).collect::<Vec<_>>());
        let ra = mean(&per.values().map(|r| r.ra).collect::<Vec<_>>());
        Ok((ta, ra, per))
    };
    let sweep_std_ta = rws_nn::evaluate(&clean.model, &ctx.sweep_test)?;
    let sweep_std_ra = mean(&cors.iter().map(|c| rws_nn::evaluate(&clean.model, &ctx.sweep_c[c]).map_err(Error::from)).collect::<Result<Vec<_>>>()?);
    let mut k_sweep = Vec::new();
    for k in 1..=n_layers {
        let (ta, ra, per) = sweep(&|c| Ok((extract(c, k, codec, &m0, &ms, &robust_maps[&c])?, cfg.alpha)), &mut patched_model, &mut patch_map, &mut patcher)?;
        k_sweep.push(json!({"k": k, "ta": ta, "ra": ra, "per_corruption": per}));
    }
    let alphas = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0];
    let mut a_sweep = Vec::new();
    for &a in &alphas {
        let (ta, ra, per) = sweep(&|c| Ok((sigs[&c].clone(), a)), &mut patched_model, &mut patch_map, &mut patcher)?;
        a_sweep.push(json!({"alpha": a, "ta": ta, "ra": ra, "per_corruption": per}));
    }
    let mut b_sweep = Vec::new();
    for codec_name in ["f32", "int8", "int4", "int2", "int1"] {
        let cd: Codec = codec_name.parse()?;
        let mut bytes = 0u64;
        for &c in &cors {
            let s = extract(c, cfg.k, cd, &m0, &ms, &robust_maps[&c])?;
            bytes += s.payload_bytes() as u64;
        }
        let (ta, ra, per) = sweep(&|c| Ok((extract(c, cfg.k, cd, &m0, &ms, &robust_maps[&c])?, cfg.alpha)), &mut patched_model, &mut patch_map, &mut patcher)?;
        b_sweep.push(json!({"codec": codec_name, "ta": ta, "ra": ra, "payload_bytes_mean": bytes as f64 / cors.len() as f64, "per_corruption": per}));
    }

    // 6. Observations: per-layer difference robust vs clean, signature similarity.
    let mut layer_diff = BTreeMap::new();
    for &c in &cors {
        let d = rws_core::relative_diff(&robust_maps[&c], &ms)?;
        layer_diff.insert(c.name().to_string(), d);
    }
    let sig_list: Vec<Signature> = cors.iter().map(|c| sigs[c].clone()).collect();
    let sim = rws_core::similarity_matrix(&sig_list)?;
    let (mut within, mut across) = (Vec::new(), Vec::new());
    for i in 0..cors.len() {
        for j in (i + 1)..cors.len() {
            if family(cors[i]) == family(cors[j]) { within.push(sim[i][j]) } else { across.push(sim[i][j]) }
        }
    }

    // 7. Composition on the sweep subset: every signature at once.
    say("composition");
    let all_set = |a: f64| -> Vec<(&Signature, f64)> { cors.iter().map(|c| (&sigs[c], a)).collect() };
    let mut comp_data: Vec<&Dataset> = vec![&ctx.sweep_test];
    comp_data.extend(cors.iter().map(|c| &ctx.sweep_c[c]));
    let mut composition = Vec::new();
    let n = cors.len() as f64;
    let mut best: Option<(f64, Value)> = None;
    for (scheme, a) in [("sum", 1.0), ("mean", 1.0 / n), ("scaled 2/n", 2.0 / n), ("scaled 1/√n", 1.0 / n.sqrt())] {
        let v = eval_patched(&mut patched_model, &mut patch_map, &mut patcher, &all_set(a), &comp_data, &adapt_main)?;
        let ra: BTreeMap<String, f64> = cors.iter().zip(&v[1..]).map(|(c, r)| (c.name().to_string(), *r)).collect();
        let row = json!({"scheme": scheme, "alpha_each": a, "ta": v[0], "ra": ra, "ra_mean": mean(&v[1..])});
        let score = v[0] + mean(&v[1..]);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, row.clone()));
        }
        composition.push(row);
    }

    // 8. Transfer: A = classes 0–4 gives signatures, B = classes 5–9 receives them.
    say("transfer A → B");
    let a_classes = [0usize, 1, 2, 3, 4];
    let b_classes = [5usize, 6, 7, 8, 9];
    let ft_a = ctx.ft_data.subset_classes(&a_classes)?;
    let ft_b = ctx.ft_data.subset_classes(&b_classes)?;
    let test_b = ctx.test.subset_classes(&b_classes)?;
    let desc_a = json!({"base": ft_desc, "classes": a_classes});
    let desc_b = json!({"base": ft_desc, "classes": b_classes});
    let clean_a = ctx.trained("clean A", Some(&theta0), &ft_a, &desc_a, cfg.finetune_epochs, cfg.finetune_lr, 5, cfg.seed + 2)?;
    let clean_b = ctx.trained("clean B", Some(&theta0), &ft_b, &desc_b, cfg.finetune_epochs, cfg.finetune_lr, 5, cfg.seed + 3)?;
    let ma = tensor_map(&clean_a.model)?;
    let mb = tensor_map(&clean_b.model)?;
    // Signatures never reach the classifier here: A's and B's heads answer different questions.
    let k_transfer = cfg.k.min(n_layers - 1).max(1);
    let mut transfer = BTreeMap::new();
    let mut b_model = clean_b.copy()?;
    let mut b_map = mb.clone();
    let b_ta = rws_nn::evaluate(&clean_b.model, &test_b)?;
    let adapt_b = ft_b.limit(ADAPT_IMAGES);
    for (i, &c) in cors.iter().enumerate() {
        let (data_a, ra_desc) = ctx.robust_data(&ft_a, &desc_a, c, 30_000 + i as u64)?;
        let (data_b, rb_desc) = ctx.robust_data(&ft_b, &desc_b, c, 40_000 + i as u64)?;
        let robust_a = ctx.trained(&format!("robust A {}", c.name()), Some(&theta0), &data_a, &ra_desc, cfg.finetune_epochs, cfg.finetune_lr, 5, cfg.seed + 2)?;
        let robust_b = ctx.trained(&format!("robust B {}", c.name()), Some(&theta0), &data_b, &rb_desc, cfg.finetune_epochs, cfg.finetune_lr, 5, cfg.seed + 3)?;
        let sig_a = extract(c, k_transfer, codec, &m0, &ma, &tensor_map(&robust_a.model)?)?;
        let test_b_c = ctx.test_c[&c].subset_classes(&b_classes)?;
        let b_ra = rws_nn::evaluate(&clean_b.model, &test_b_c)?;
        let v = eval_patched(&mut b_model, &mut b_map, &mut patcher, &[(&sig_a, cfg.alpha)], &[&test_b, &test_b_c], &adapt_b)?;
        let own = TaRa { ta: rws_nn::evaluate(&robust_b.model, &test_b)?, ra: rws_nn::evaluate(&robust_b.model, &test_b_c)? };
        transfer.insert(c.name().to_string(), json!({
            "clean_b": {"ta": b_ta, "ra": b_ra},
            "patched_b_with_a": {"ta": v[0], "ra": v[1]},
            "robust_b": own,
        }));
    }

    // 9. Continual update: θₛ fine-tuned further on clean data, patched with the old signatures.
    say("continual update");
    let cont_desc = json!({"base": ft_desc, "continual": true});
    let updated = ctx.trained("updated θₛ'", Some(&clean), &ctx.ft_data, &cont_desc, 1, cfg.finetune_lr * 0.5, 10, cfg.seed + 4)?;
    let mu = tensor_map(&updated.model)?;
    let mut u_model = updated.copy()?;
    let mut u_map = mu.clone();
    let u_ta = rws_nn::evaluate(&updated.model, &ctx.sweep_test)?;
    let mut continual = BTreeMap::new();
    for &c in &cors {
        let u_ra = rws_nn::evaluate(&updated.model, &ctx.sweep_c[&c])?;
        let v = eval_patched(&mut u_model, &mut u_map, &mut patcher, &[(&sigs[&c], cfg.alpha)], &[&ctx.sweep_test, &ctx.sweep_c[&c]], &adapt_main)?;
        continual.insert(c.name().to_string(), json!({"updated": {"ta": u_ta, "ra": u_ra}, "updated_patched_old_sig": {"ta": v[0], "ra": v[1]}}));
    }

    // Report.
    let name = |c: &Corruption| c.name().to_string();
    let patched_ta_mean = mean(&cors.iter().map(|c| patched_res[c].ta).collect::<Vec<_>>());
    let patched_ra_mean = mean(&cors.iter().map(|c| patched_res[c].ra).collect::<Vec<_>>());
    let std_ra_mean = mean(&cors.iter().map(|c| std_ra[c]).collect::<Vec<_>>());
    let codec_ra = |n: &str| mean(&cors.iter().map(|c| by_codec[n][c].ra).collect::<Vec<_>>());
    let (f32_ra, int4_ra) = (codec_ra("f32"), codec_ra("int4"));
    let transfer_raised = transfer.values().filter(|t| t["patched_b_with_a"]["ra"].as_f64() > t["clean_b"]["ra"].as_f64()).count();
    let report = json!({
        "settings": cfg,
        "layers_total": n_layers,
        "standard": {"ta": std_ta, "ra": std_ra.iter().map(|(c, v)| (name(c), *v)).collect::<BTreeMap<_, _>>(), "ra_mean": std_ra_mean},
        "robust": robust_res.iter().map(|(c, v)| (name(c), *v)).collect::<BTreeMap<_, _>>(),
        "patched": patched_res.iter().map(|(c, v)| (name(c), *v)).collect::<BTreeMap<_, _>>(),
        "patched_mean": {"ta": patched_ta_mean, "ra": patched_ra_mean},
        "patched_by_codec": by_codec.iter().map(|(k, m)| (k.to_string(), json!({
            "per_corruption": m.iter().map(|(c, v)| (name(c), *v)).collect::<BTreeMap<_, _>>(),
            "ta_mean": mean(&cors.iter().map(|c| m[c].ta).collect::<Vec<_>>()),
            "ra_mean": mean(&cors.iter().map(|c| m[c].ra).collect::<Vec<_>>()),
        }))).collect::<BTreeMap<_, _>>(),
        "storage": {"model_bytes_f32": full_bytes, "signature_file_bytes": sig_bytes.iter().map(|(c, v)| (name(c), *v)).collect::<BTreeMap<_, _>>()},
        "sweeps": {"standard_on_subset": {"ta": sweep_std_ta, "ra_mean": sweep_std_ra}, "k": k_sweep, "alpha": a_sweep, "bits": b_sweep},
        "layer_diff": layer_diff,
        "similarity": {"names": cors.iter().map(name).collect::<Vec<_>>(), "matrix": sim, "within_family_mean": mean(&within), "across_family_mean": mean(&across)},
        "composition": {"schemes": composition, "best": best.map(|b| b.1)},
        "transfer": {"k": k_transfer, "per_corruption": transfer, "raised": transfer_raised, "of": cors.len()},
        "continual": continual,
        "checks": {
            "ra_gain_points": patched_ra_mean - std_ra_mean,
            "ta_drop_points": std_ta - patched_ta_mean,
            "int4_vs_f32_ra_points": int4_ra - f32_ra,
            "within_minus_across_similarity": mean(&within) - mean(&across),
            "transfer_raised": transfer_raised,
        },
        "seconds": t_start.elapsed().as_secs_f64(),
    });
    report::write(&out, &report, &cors)?;
    Ok(report)
}
