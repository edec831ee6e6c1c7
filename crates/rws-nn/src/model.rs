//! Models whose tensors carry torchvision's names, so checkpoints move between rws and PyTorch by
//! name. Parameters live in one ordered list (forward order) instead of a candle `VarMap`, because
//! signatures address "the first k weight layers" and a map loses that order.
use crate::{ops, Error, Result};
use candle_core::{DType, Device, Tensor, Var, D};
use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One tensor as `Model::tensors` hands it out: name, shape and f32 values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// What a stored tensor is; decides whether SGD touches it and how a checkpoint is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Weight,
    Bias,
    BnWeight,
    BnBias,
    RunningMean,
    RunningVar,
    /// `num_batches_tracked`, i64 in PyTorch; kept as i64 so strict `load_state_dict` accepts it.
    NumBatches,
    /// `normalize.mean` / `normalize.std`.
    Norm,
}

impl Kind {
    pub fn trainable(self) -> bool {
        matches!(self, Kind::Weight | Kind::Bias | Kind::BnWeight | Kind::BnBias)
    }
}

pub struct Param {
    pub name: String,
    pub kind: Kind,
    pub var: Var,
}

/// One step of the forward program; indices point into `Model::params`.
#[derive(Clone, Debug)]
enum Op {
    Conv { w: usize, b: Option<usize>, stride: usize, pad: usize },
    /// weight, bias, running_mean, running_var, num_batches_tracked
    Bn { p: [usize; 5] },
    Relu,
    MaxPool(usize),
    /// torchvision ResNet stem pooling: kernel 3, stride 2, padding 1 (input is post-ReLU).
    MaxPool3s2,
    /// Adaptive average pooling to s×s (torchvision VGG's `avgpool`), then flatten.
    AdaptiveAvgFlatten(usize),
    GlobalAvg,
    Linear { w: usize, b: usize },
    Dropout,
    /// A residual block: main path, optional shortcut path, then add + ReLU.
    Residual { main: Vec<Op>, short: Vec<Op> },
}

pub struct Model {
    arch: String,
    num_classes: usize,
    in_channels: usize,
    params: Vec<Param>,
    program: Vec<Op>,
    /// Index of the classifier's weight and bias (replaced when the class count changes).
    head: (usize, usize),
}

/// Uniform initialiser with PyTorch's default bounds, drawn from our own seeded RNG because
/// candle's CPU RNG cannot be seeded.
struct Init {
    rng: ChaCha8Rng,
}

impl Init {
    fn uniform(&mut self, shape: &[usize], bound: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| self.rng.gen_range(-bound..bound)).collect();
        Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
    }
}

struct Builder {
    params: Vec<Param>,
    init: Init,
}

impl Builder {
    fn push(&mut self, name: String, kind: Kind, t: Tensor) -> Result<usize> {
        self.params.push(Param { name, kind, var: Var::from_tensor(&t)? });
        Ok(self.params.len() - 1)
    }
    /// Kaiming-uniform with a = √5 gives bound 1/√fan_in, the same bound PyTorch uses for the bias.
    /// The arguments are `nn.Conv2d`'s, in its order, so the architectures read like torchvision's.
    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, prefix: &str, cin: usize, cout: usize, k: usize, stride: usize, pad: usize, bias: bool) -> Result<Op> {
        let bound = 1.0 / ((cin * k * k) as f32).sqrt();
        let t = self.init.uniform(&[cout, cin, k, k], bound)?;
        let w = self.push(format!("{prefix}.weight"), Kind::Weight, t)?;
        let b = if bias {
            let t = self.init.uniform(&[cout], bound)?;
            Some(self.push(format!("{prefix}.bias"), Kind::Bias, t)?)
        } else {
            None
        };
        Ok(Op::Conv { w, b, stride, pad })
    }
    fn bn(&mut self, prefix: &str, c: usize) -> Result<Op> {
        let dev = Device::Cpu;
        let a = self.push(format!("{prefix}.weight"), Kind::BnWeight, Tensor::ones(c, DType::F32, &dev)?)?;
        let b = self.push(format!("{prefix}.bias"), Kind::BnBias, Tensor::zeros(c, DType::F32, &dev)?)?;
        let m = self.push(format!("{prefix}.running_mean"), Kind::RunningMean, Tensor::zeros(c, DType::F32, &dev)?)?;
        let v = self.push(format!("{prefix}.running_var"), Kind::RunningVar, Tensor::ones(c, DType::F32, &dev)?)?;
        let n = self.push(format!("{prefix}.num_batches_tracked"), Kind::NumBatches, Tensor::new(0i64, &dev)?)?;
        Ok(Op::Bn { p: [a, b, m, v, n] })
    }
    fn linear(&mut self, prefix: &str, fin: usize, fout: usize) -> Result<(Op, usize, usize)> {
        let bound = 1.0 / (fin as f32).sqrt();
        let t = self.init.uniform(&[fout, fin], bound)?;
        let w = self.push(format!("{prefix}.weight"), Kind::Weight, t)?;
        let t = self.init.uniform(&[fout], bound)?;
        let b = self.push(format!("{prefix}.bias"), Kind::Bias, t)?;
        Ok((Op::Linear { w, b }, w, b))
    }
}

/// One entry of a VGG cfg: a conv width or `M` (max-pool 2).
#[derive(Clone, Copy, Debug, PartialEq)]
enum CfgItem {
    Conv(usize),
    Pool,
}

fn parse_cfg(arch: &str, s: &str) -> Result<Vec<CfgItem>> {
    let mut out = Vec::new();
    for tok in s.split(',').map(str::trim) {
        if tok.eq_ignore_ascii_case("m") {
            out.push(CfgItem::Pool);
        } else {
            match tok.parse::<usize>() {
                Ok(n) if n > 0 => out.push(CfgItem::Conv(n)),
                _ => {
                    return Err(Error::Msg(format!(
                        "architecture '{arch}': '{tok}' is neither a channel count nor M (example: vgg:32,M,64,M,128)"
                    )))
                }
            }
        }
    }
    if !out.iter().any(|c| matches!(c, CfgItem::Conv(_))) {
        return Err(Error::Msg(format!("architecture '{arch}' has no conv layer")));
    }
    Ok(out)
}

const VGG16: &str = "64,64,M,128,128,M,256,256,256,M,512,512,512,M,512,512,512,M";

/// The demo's default network: 99k parameters, ~2.6 M multiply-adds per 28×28 image. Reached
/// 91.0% Fashion-MNIST test accuracy after 3 epochs (SGD lr 0.1 cosine, momentum 0.9, wd 5e-4,
/// batch 128; see docs/BENCHMARKS.md). The last conv at 3×3 gives the global-average head enough
/// channels; without it (16,M,32,M,64) 3 epochs gave 87.8%.
pub const DEFAULT_ARCH: &str = "vgg-bn:16,M,32,M,64,M,128";

/// Names accepted by [`Model::new`], for error messages and `--help`.
pub const ARCH_HELP: &str = "vgg:CFG (e.g. vgg:32,M,64,M,128), vgg-bn:CFG (same with BatchNorm), vgg16, vgg16_bn, resnet18, resnet50";

impl Model {
    /// Build a freshly initialised model. `arch`: see [`ARCH_HELP`]. The same seed gives the same
    /// weights bit for bit.
    pub fn new(arch: &str, num_classes: usize, in_channels: usize, seed: u64) -> Result<Model> {
        if num_classes == 0 || in_channels == 0 {
            return Err(Error::Msg(format!("architecture '{arch}': num_classes and in_channels must be positive")));
        }
        let mut b = Builder { params: Vec::new(), init: Init { rng: ChaCha8Rng::seed_from_u64(seed) } };
        let dev = Device::Cpu;
        b.push("normalize.mean".into(), Kind::Norm, Tensor::full(0.5f32, in_channels, &dev)?)?;
        b.push("normalize.std".into(), Kind::Norm, Tensor::full(0.25f32, in_channels, &dev)?)?;
        let (program, head) = if let Some(cfg) = arch.strip_prefix("vgg:") {
            Self::vgg(&mut b, &parse_cfg(arch, cfg)?, false, false, in_channels, num_classes)?
        } else if let Some(cfg) = arch.strip_prefix("vgg-bn:") {
            Self::vgg(&mut b, &parse_cfg(arch, cfg)?, true, false, in_channels, num_classes)?
        } else {
            match arch {
                "vgg16" => Self::vgg(&mut b, &parse_cfg(arch, VGG16)?, false, true, in_channels, num_classes)?,
                "vgg16_bn" => Self::vgg(&mut b, &parse_cfg(arch, VGG16)?, true, true, in_channels, num_classes)?,
                "resnet18" => Self::resnet(&mut b, false, [2, 2, 2, 2], in_channels, num_classes)?,
                "resnet50" => Self::resnet(&mut b, true, [3, 4, 6, 3], in_channels, num_classes)?,
                _ => return Err(Error::Msg(format!("unknown architecture '{arch}'; valid: {ARCH_HELP}"))),
            }
        };
        Ok(Model { arch: arch.to_string(), num_classes, in_channels, params: b.params, program, head })
    }

    fn vgg(b: &mut Builder, cfg: &[CfgItem], bn: bool, torchvision_head: bool, cin: usize, nc: usize) -> Result<(Vec<Op>, (usize, usize))> {
        let mut prog = Vec::new();
        let mut idx = 0;
        let mut c = cin;
        for item in cfg {
            match *item {
                CfgItem::Pool => {
                    prog.push(Op::MaxPool(2));
                    idx += 1;
                }
                CfgItem::Conv(o) => {
                    prog.push(b.conv(&format!("features.{idx}"), c, o, 3, 1, 1, true)?);
                    idx += 1;
                    if bn {
                        prog.push(b.bn(&format!("features.{idx}"), o)?);
                        idx += 1;
                    }
                    prog.push(Op::Relu);
                    idx += 1;
                    c = o;
                }
            }
        }
        if torchvision_head {
            // torchvision: AdaptiveAvgPool2d(7) then Linear(512·49, 4096), ReLU, Dropout, Linear(4096, 4096),
            // ReLU, Dropout, Linear(4096, classes) as classifier.0/.3/.6.
            prog.push(Op::AdaptiveAvgFlatten(7));
            let (l0, _, _) = b.linear("classifier.0", c * 49, 4096)?;
            let (l3, _, _) = b.linear("classifier.3", 4096, 4096)?;
            let (l6, w, bb) = b.linear("classifier.6", 4096, nc)?;
            prog.extend([l0, Op::Relu, Op::Dropout, l3, Op::Relu, Op::Dropout, l6]);
            Ok((prog, (w, bb)))
        } else {
            prog.push(Op::GlobalAvg);
            let (l, w, bb) = b.linear("classifier", c, nc)?;
            prog.push(l);
            Ok((prog, (w, bb)))
        }
    }

    fn resnet(b: &mut Builder, bottleneck: bool, layers: [usize; 4], cin: usize, nc: usize) -> Result<(Vec<Op>, (usize, usize))> {
        let expansion = if bottleneck { 4 } else { 1 };
        let mut prog = vec![b.conv("conv1", cin, 64, 7, 2, 3, false)?, b.bn("bn1", 64)?, Op::Relu, Op::MaxPool3s2];
        let mut inplanes = 64;
        for (li, &nblocks) in layers.iter().enumerate() {
            let planes = 64 << li;
            for bi in 0..nblocks {
                let stride = if li > 0 && bi == 0 { 2 } else { 1 };
                let p = format!("layer{}.{bi}", li + 1);
                let mut main = Vec::new();
                if bottleneck {
                    main.push(b.conv(&format!("{p}.conv1"), inplanes, planes, 1, 1, 0, false)?);
                    main.push(b.bn(&format!("{p}.bn1"), planes)?);
                    main.push(Op::Relu);
                    main.push(b.conv(&format!("{p}.conv2"), planes, planes, 3, stride, 1, false)?);
                    main.push(b.bn(&format!("{p}.bn2"), planes)?);
                    main.push(Op::Relu);
                    main.push(b.conv(&format!("{p}.conv3"), planes, planes * 4, 1, 1, 0, false)?);
                    main.push(b.bn(&format!("{p}.bn3"), planes * 4)?);
                } else {
                    main.push(b.conv(&format!("{p}.conv1"), inplanes, planes, 3, stride, 1, false)?);
                    main.push(b.bn(&format!("{p}.bn1"), planes)?);
                    main.push(Op::Relu);
                    main.push(b.conv(&format!("{p}.conv2"), planes, planes, 3, 1, 1, false)?);
                    main.push(b.bn(&format!("{p}.bn2"), planes)?);
                }
                let mut short = Vec::new();
                if stride != 1 || inplanes != planes * expansion {
                    short.push(b.conv(&format!("{p}.downsample.0"), inplanes, planes * expansion, 1, stride, 0, false)?);
                    short.push(b.bn(&format!("{p}.downsample.1"), planes * expansion)?);
                }
                prog.push(Op::Residual { main, short });
                inplanes = planes * expansion;
            }
        }
        prog.push(Op::GlobalAvg);
        let (l, w, bb) = b.linear("fc", inplanes, nc)?;
        prog.push(l);
        Ok((prog, (w, bb)))
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }
    /// All tensors in forward order (normalisation first).
    pub fn params(&self) -> &[Param] {
        &self.params
    }
    pub(crate) fn head(&self) -> (usize, usize) {
        self.head
    }

    /// Set the input normalisation (per channel, on the 0..1 scale).
    pub fn set_normalization(&mut self, mean: &[f32], std: &[f32]) -> Result<()> {
        if mean.len() != self.in_channels || std.len() != self.in_channels || std.iter().any(|&s| s.is_nan() || s <= 0.0) {
            return Err(Error::Msg(format!(
                "normalisation needs {} means and {} positive stds, got {} and {}",
                self.in_channels,
                self.in_channels,
                mean.len(),
                std.len()
            )));
        }
        self.params[0].var.set(&Tensor::new(mean, &Device::Cpu)?)?;
        self.params[1].var.set(&Tensor::new(std, &Device::Cpu)?)?;
        Ok(())
    }

    /// Forward pass on NCHW images on the 0..1 scale. `train` selects batch statistics (and
    /// updates the running ones) and dropout; `rng` feeds dropout.
    pub fn forward(&self, x: &Tensor, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        // Detached: the normalisation is not trained, and a gradient for it would cost a slow
        // broadcast reduction every step.
        let mean = self.params[0].var.as_tensor().detach().reshape((1, self.in_channels, 1, 1))?;
        let std = self.params[1].var.as_tensor().detach().reshape((1, self.in_channels, 1, 1))?;
        let x = x.broadcast_sub(&mean)?.broadcast_div(&std)?;
        let (h, w) = (x.dim(2)?, x.dim(3)?);
        self.run(&self.program, x, train, rng).map_err(|e| match e {
            // A stack of pools shrinks small images to nothing (vgg16 halves 28×28 five times):
            // say which architecture and input size, not just which op gave up.
            Error::Candle(c) if c.to_string().contains("does not fit input") => {
                Error::Msg(format!("{}: {h}×{w} images are too small for this architecture ({c}); use larger images or a `vgg:` cfg with fewer M", self.arch))
            }
            e => e,
        })
    }

    fn t(&self, i: usize) -> &Tensor {
        self.params[i].var.as_tensor()
    }

    fn run(&self, prog: &[Op], mut x: Tensor, train: bool, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let mut i = 0;
        while i < prog.len() {
            match &prog[i] {
                Op::Conv { w, b, stride, pad } => {
                    // Training: conv → BN → ReLU as one fused op (one graph node per block).
                    if train {
                        if let (Some(Op::Bn { p }), Some(Op::Relu)) = (prog.get(i + 1), prog.get(i + 2)) {
                            // A max-pool right after the block joins the same op.
                            let pool = match prog.get(i + 3) {
                                Some(Op::MaxPool(k)) => *k,
                                _ => 0,
                            };
                            let (n, _, h, wd) = x.dims4()?;
                            let kk = self.t(*w).dim(2)?;
                            let (oh, ow) = ((h + 2 * pad - kk) / stride + 1, (wd + 2 * pad - kk) / stride + 1);
                            let (y, mean, var) = ops::conv2d_bn_relu_pool_train(
                                &x,
                                self.t(*w),
                                b.map(|b| self.t(b)),
                                self.t(p[0]),
                                self.t(p[1]),
                                *stride,
                                *pad,
                                BN_EPS,
                                pool,
                            )?;
                            // The statistics count the unpooled activation.
                            self.update_running(p, &mean, &var, n * oh * ow)?;
                            x = y;
                            i += if pool > 0 { 4 } else { 3 };
                            continue;
                        }
                    }
                    // In eval mode fold a following BatchNorm into the conv, and run conv → ReLU
                    // (→ max-pool) as one inference op. Weights are detached: eval-mode passes
                    // give no weight gradients (training and BN adaptation run in train mode).
                    if !train {
                        let (wf, bf, mut j) = match prog.get(i + 1) {
                            Some(Op::Bn { p }) => {
                                let (wf, bf) = self.fold(*w, *b, p)?;
                                (wf, Some(bf), i + 2)
                            }
                            _ => (self.t(*w).detach(), b.map(|b| self.t(b).detach()), i + 1),
                        };
                        if matches!(prog.get(j), Some(Op::Relu)) {
                            let pool = match prog.get(j + 1) {
                                Some(Op::MaxPool(k)) => *k,
                                _ => 0,
                            };
                            x = ops::conv2d_relu_pool(&x, &wf, bf.as_ref(), *stride, *pad, pool)?;
                            j += if pool > 0 { 2 } else { 1 };
                        } else {
                            x = ops::conv2d(&x, &wf, bf.as_ref(), *stride, *pad)?;
                        }
                        i = j;
                        continue;
                    }
                    x = ops::conv2d(&x, self.t(*w), b.map(|b| self.t(b)), *stride, *pad)?;
                }
                Op::Bn { p } => {
                    let relu = matches!(prog.get(i + 1), Some(Op::Relu));
                    x = self.batch_norm(&x, p, train, relu)?;
                    if relu {
                        i += 1;
                    }
                }
                Op::Relu => x = x.relu()?,
                Op::MaxPool(k) => x = ops::max_pool2d(&x, *k)?,
                Op::MaxPool3s2 => x = max_pool_3s2p1(&x)?,
                Op::AdaptiveAvgFlatten(s) => x = adaptive_avg_flatten(&x, *s)?,
                Op::GlobalAvg => x = x.mean((2, 3))?,
                Op::Linear { w, b } => x = x.matmul(&self.t(*w).t()?)?.broadcast_add(self.t(*b))?,
                Op::Dropout => {
                    if train {
                        let n = x.elem_count();
                        let m: Vec<f32> = (0..n).map(|_| if rng.gen::<f32>() < 0.5 { 0.0 } else { 2.0 }).collect();
                        let mask = Tensor::from_vec(m, x.shape(), &Device::Cpu)?;
                        x = (x * mask)?;
                    }
                }
                Op::Residual { main, short } => {
                    let y = self.run(main, x.clone(), train, rng)?;
                    let s = if short.is_empty() { x } else { self.run(short, x, train, rng)? };
                    x = (y + s)?.relu()?;
                }
            }
            i += 1;
        }
        Ok(x)
    }

    fn fold(&self, w: usize, b: Option<usize>, p: &[usize; 5]) -> Result<(Tensor, Tensor)> {
        let scale = self.t(p[0]).broadcast_div(&(self.t(p[3]) + BN_EPS)?.sqrt()?)?;
        let o = scale.dim(0)?;
        let wf = self.t(w).detach().broadcast_mul(&scale.reshape((o, 1, 1, 1))?)?.detach();
        let b0 = match b {
            Some(b) => self.t(b).clone(),
            None => Tensor::zeros(o, DType::F32, &Device::Cpu)?,
        };
        let bf = ((b0 - self.t(p[2]))? * &scale)?.add(self.t(p[1]))?;
        Ok((wf, bf.detach()))
    }

    /// PyTorch's update: momentum 0.1, unbiased variance in the running estimate, count + 1.
    fn update_running(&self, p: &[usize; 5], mean: &Tensor, var: &Tensor, cnt: usize) -> Result<()> {
        let m = BN_MOMENTUM;
        let cnt = cnt as f64;
        let unbias = if cnt > 1.0 { cnt / (cnt - 1.0) } else { 1.0 };
        let rm = ((self.t(p[2]) * (1.0 - m))? + (mean.detach() * m)?)?;
        let rv = ((self.t(p[3]) * (1.0 - m))? + (var.detach() * (m * unbias))?)?;
        self.params[p[2]].var.set(&rm)?;
        self.params[p[3]].var.set(&rv)?;
        // `+ 1.0` on i64 goes through affine in f64 and comes back i64.
        let nb = (self.t(p[4]) + 1.0)?;
        self.params[p[4]].var.set(&nb.to_dtype(DType::I64)?)?;
        Ok(())
    }

    /// `relu`: apply the ReLU that follows (fused into the training op).
    fn batch_norm(&self, x: &Tensor, p: &[usize; 5], train: bool, relu: bool) -> Result<Tensor> {
        let c = x.dim(1)?;
        if train {
            let (n, _, h, w) = x.dims4()?;
            let (y, mean, var) = ops::batch_norm_train(x, self.t(p[0]), self.t(p[1]), BN_EPS, relu)?;
            self.update_running(p, &mean, &var, n * h * w)?;
            Ok(y)
        } else {
            let rm = self.t(p[2]).reshape((1, c, 1, 1))?;
            let rv = self.t(p[3]).reshape((1, c, 1, 1))?;
            let g = self.t(p[0]).reshape((1, c, 1, 1))?;
            let b = self.t(p[1]).reshape((1, c, 1, 1))?;
            let scale = g.broadcast_div(&(rv + BN_EPS)?.sqrt()?)?;
            let y = x.broadcast_sub(&rm)?.broadcast_mul(&scale)?.broadcast_add(&b)?;
            Ok(if relu { y.relu()? } else { y })
        }
    }

    /// Replace the classifier head by a freshly initialised one for `num_classes` classes.
    pub fn new_head(&mut self, num_classes: usize, seed: u64) -> Result<()> {
        let (wi, bi) = self.head;
        let fin = self.params[wi].var.as_tensor().dim(1)?;
        let mut init = Init { rng: ChaCha8Rng::seed_from_u64(seed ^ 0x4ead) };
        let bound = 1.0 / (fin as f32).sqrt();
        let w = init.uniform(&[num_classes, fin], bound)?;
        let b = init.uniform(&[num_classes], bound)?;
        self.params[wi].var = Var::from_tensor(&w)?;
        self.params[bi].var = Var::from_tensor(&b)?;
        self.num_classes = num_classes;
        Ok(())
    }

    /// Put the BatchNorm running statistics back to their initial values (mean 0, var 1, count 0).
    pub fn reset_bn_stats(&mut self) -> Result<()> {
        for p in &self.params {
            let t = p.var.as_tensor();
            match p.kind {
                Kind::RunningMean => p.var.set(&t.zeros_like()?)?,
                Kind::RunningVar => p.var.set(&t.ones_like()?)?,
                Kind::NumBatches => p.var.set(&t.zeros_like()?)?,
                _ => {}
            }
        }
        Ok(())
    }

    pub fn has_batch_norm(&self) -> bool {
        self.params.iter().any(|p| p.kind == Kind::RunningMean)
    }

    /// Every tensor as (name, shape, f32 values), forward order. `num_batches_tracked` comes back
    /// as f32 too, so signature code can treat all tensors alike.
    pub fn tensors(&self) -> Result<Vec<NamedTensor>> {
        self.params
            .iter()
            .map(|p| {
                let t = p.var.as_tensor();
                let v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                Ok((p.name.clone(), t.dims().to_vec(), v))
            })
            .collect()
    }

    /// Overwrite tensors by name. Every name must exist with the same shape; all are checked
    /// before any is written, so a bad list leaves the model untouched.
    pub fn set_tensors(&mut self, ts: &[(String, Vec<usize>, Vec<f32>)]) -> Result<()> {
        let mut plan = Vec::with_capacity(ts.len());
        for (name, shape, vals) in ts {
            let i = self
                .params
                .iter()
                .position(|p| &p.name == name)
                .ok_or_else(|| Error::Msg(format!("model {} has no tensor '{name}'", self.arch)))?;
            let cur = self.params[i].var.as_tensor().dims().to_vec();
            let n: usize = shape.iter().product();
            if &cur != shape || vals.len() != n {
                return Err(Error::Msg(format!(
                    "tensor '{name}': model has shape {cur:?}, given shape {shape:?} with {} values",
                    vals.len()
                )));
            }
            plan.push(i);
        }
        for (i, (_, shape, vals)) in plan.into_iter().zip(ts) {
            let p = &self.params[i];
            let t = Tensor::from_vec(vals.clone(), shape.as_slice(), &Device::Cpu)?;
            let t = if p.kind == Kind::NumBatches { t.round()?.to_dtype(DType::I64)? } else { t };
            p.var.set(&t)?;
        }
        Ok(())
    }

    pub fn num_parameters(&self) -> usize {
        self.params.iter().filter(|p| p.kind.trainable()).map(|p| p.var.as_tensor().elem_count()).sum()
    }

    /// A deep copy (the `Var`s of a clone share storage, which a best-checkpoint must not).
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        Ok(self.params.iter().map(|p| p.var.as_tensor().copy()).collect::<candle_core::Result<_>>()?)
    }

    pub fn restore(&mut self, snap: &[Tensor]) -> Result<()> {
        for (p, t) in self.params.iter_mut().zip(snap) {
            if p.var.as_tensor().dims() != t.dims() {
                p.var = Var::from_tensor(t)?;
            } else {
                p.var.set(t)?;
            }
        }
        Ok(())
    }
}

const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Max-pool 3×3, stride 2, padding 1 as the max over nine strided views. Only used after ReLU, so
/// zero padding equals PyTorch's -inf padding; built from differentiable ops because candle's
/// max-pool backward needs kernel = stride.
fn max_pool_3s2p1(x: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let ho = (h + 2 - 3) / 2 + 1;
    let wo = (w + 2 - 3) / 2 + 1;
    let hp = 2 * ho + 2;
    let wp = 2 * wo + 2;
    let xp = x.pad_with_zeros(2, 1, hp - h - 1)?.pad_with_zeros(3, 1, wp - w - 1)?;
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        let r = xp.narrow(2, dy, 2 * ho)?.reshape((n, c, ho, 2, wp))?.narrow(3, 0, 1)?.squeeze(3)?;
        for dx in 0..3 {
            let s = r.narrow(3, dx, 2 * wo)?.reshape((n, c, ho, wo, 2))?.narrow(4, 0, 1)?.squeeze(4)?;
            out = Some(match out {
                None => s,
                Some(o) => o.maximum(&s)?,
            });
        }
    }
    Ok(out.expect("nine windows"))
}

/// torchvision's AdaptiveAvgPool2d(s) followed by flatten: bin i covers [⌊iH/s⌋, ⌈(i+1)H/s⌉).
fn adaptive_avg_flatten(x: &Tensor, s: usize) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let mut cells = Vec::with_capacity(s * s);
    for i in 0..s {
        let (y0, y1) = (i * h / s, ((i + 1) * h).div_ceil(s));
        for j in 0..s {
            let (x0, x1) = (j * w / s, ((j + 1) * w).div_ceil(s));
            cells.push(x.narrow(2, y0, y1 - y0)?.narrow(3, x0, x1 - x0)?.mean((2, 3))?);
        }
    }
    // (N, C, s*s) then flatten C-major as PyTorch does.
    Tensor::stack(&cells, D::Minus1)?.reshape((n, c * s * s))
}
