//! The `--data` spec language; the grammar is documented at the crate root.
use crate::{Dataset, Error, Result, Split};
use std::path::PathBuf;

/// Where the samples come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    FashionMnist { split: Split },
    Mnist { dir: PathBuf, split: Split },
    Cifar10 { dir: PathBuf, split: Split },
    Cifar100 { dir: PathBuf, split: Split },
    Npy { images: PathBuf, labels: Option<PathBuf> },
    CifarC { dir: PathBuf, corruption: String, severity: usize },
    Folder { dir: PathBuf },
    TinyImageNet { dir: PathBuf, split: Split },
}

/// A post-load step, applied in the order written.
#[derive(Clone, Debug, PartialEq)]
pub enum Modifier {
    Classes(Vec<usize>),
    /// Start, and end (exclusive; `None` = to the end).
    Range(usize, Option<usize>),
    Limit(usize),
    NumClasses(usize),
    Coarse,
}

/// A parsed `--data` argument.
#[derive(Clone, Debug, PartialEq)]
pub struct DataSpec {
    pub source: Source,
    pub modifiers: Vec<Modifier>,
}

fn bad(spec: &str, msg: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "dataset spec `{spec}`: {msg} (forms: fashion-mnist[:train|test], mnist:DIR[:train|test], cifar10:DIR[:train|test], \
         cifar100:DIR[:train|test], npy:FILE[:LABELS], cifar-c:DIR:CORRUPTION:SEVERITY, folder:DIR, tinyimagenet:DIR[:train|val]; \
         modifiers @classes=0-4, @range=A-B, @limit=N, @nclasses=K, @coarse)"
    ))
}

fn parse_usize(spec: &str, what: &str, s: &str) -> Result<usize> {
    s.trim().parse().map_err(|_| bad(spec, format!("{what}: `{s}` is not a non-negative integer")))
}

/// `0-4`, `3,5,7`, `0-2,7` → the classes in the order written.
fn parse_classes(spec: &str, s: &str) -> Result<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(bad(spec, "empty entry in @classes"));
        }
        if let Some((a, b)) = part.split_once('-') {
            let (a, b) = (parse_usize(spec, "@classes", a)?, parse_usize(spec, "@classes", b)?);
            if a > b {
                return Err(bad(spec, format!("@classes range {a}-{b} is backwards")));
            }
            out.extend(a..=b);
        } else {
            out.push(parse_usize(spec, "@classes", part)?);
        }
    }
    Ok(out)
}

fn split_of(spec: &str, s: Option<&str>, val_name: bool) -> Result<Split> {
    match s {
        None | Some("") | Some("train") => Ok(Split::Train),
        Some("test") => Ok(Split::Test),
        Some("val") if val_name => Ok(Split::Test),
        Some(o) => Err(bad(spec, format!("unknown split `{o}` (train|{})", if val_name { "val" } else { "test" }))),
    }
}

impl DataSpec {
    pub fn parse(spec: &str) -> Result<DataSpec> {
        let mut parts = spec.split('@');
        let base = parts.next().unwrap_or("").trim();
        let mut modifiers = Vec::new();
        for m in parts {
            let (k, v) = m.split_once('=').map(|(k, v)| (k.trim(), Some(v.trim()))).unwrap_or((m.trim(), None));
            let need = || v.filter(|s| !s.is_empty()).ok_or_else(|| bad(spec, format!("@{k} needs a value")));
            modifiers.push(match k {
                "classes" => Modifier::Classes(parse_classes(spec, need()?)?),
                "range" => {
                    let v = need()?;
                    let (a, b) = v.split_once('-').ok_or_else(|| bad(spec, format!("@range=`{v}` is not A-B")))?;
                    let a = parse_usize(spec, "@range start", a)?;
                    let b = if b.trim().is_empty() { None } else { Some(parse_usize(spec, "@range end", b)?) };
                    if let Some(b) = b {
                        if b < a {
                            return Err(bad(spec, format!("@range {a}-{b} is backwards")));
                        }
                    }
                    Modifier::Range(a, b)
                }
                "limit" => Modifier::Limit(parse_usize(spec, "@limit", need()?)?),
                "nclasses" => Modifier::NumClasses(parse_usize(spec, "@nclasses", need()?)?),
                "coarse" if v.is_none() => Modifier::Coarse,
                _ => return Err(bad(spec, format!("unknown modifier `@{m}`"))),
            });
        }
        let (kind, rest) = base.split_once(':').map(|(k, r)| (k, Some(r))).unwrap_or((base, None));
        let args: Vec<&str> = rest.map(|r| r.split(':').collect()).unwrap_or_default();
        let dir = |i: usize| -> Result<PathBuf> {
            args.get(i).filter(|s| !s.is_empty()).map(PathBuf::from).ok_or_else(|| bad(spec, format!("`{kind}` needs a path")))
        };
        let at_most = |n: usize| -> Result<()> {
            if args.len() > n {
                Err(bad(spec, format!("too many `:` fields for `{kind}`")))
            } else {
                Ok(())
            }
        };
        let source = match kind {
            "fashion-mnist" | "fashion_mnist" | "fmnist" => {
                at_most(1)?;
                Source::FashionMnist { split: split_of(spec, args.first().copied(), false)? }
            }
            "mnist" => {
                at_most(2)?;
                Source::Mnist { dir: dir(0)?, split: split_of(spec, args.get(1).copied(), false)? }
            }
            "cifar10" => {
                at_most(2)?;
                Source::Cifar10 { dir: dir(0)?, split: split_of(spec, args.get(1).copied(), false)? }
            }
            "cifar100" => {
                at_most(2)?;
                Source::Cifar100 { dir: dir(0)?, split: split_of(spec, args.get(1).copied(), false)? }
            }
            "npy" => {
                at_most(2)?;
                Source::Npy { images: dir(0)?, labels: args.get(1).filter(|s| !s.is_empty()).map(PathBuf::from) }
            }
            "cifar-c" | "cifar10-c" => {
                if args.len() != 3 {
                    return Err(bad(spec, "cifar-c needs DIR:CORRUPTION:SEVERITY"));
                }
                let severity = parse_usize(spec, "severity", args[2])?;
                if !(1..=5).contains(&severity) {
                    return Err(bad(spec, format!("severity {severity} not in 1..5")));
                }
                if args[1].is_empty() {
                    return Err(bad(spec, "empty corruption name"));
                }
                Source::CifarC { dir: dir(0)?, corruption: args[1].to_string(), severity }
            }
            "folder" => {
                at_most(1)?;
                Source::Folder { dir: dir(0)? }
            }
            "tinyimagenet" | "tiny-imagenet" => {
                at_most(2)?;
                Source::TinyImageNet { dir: dir(0)?, split: split_of(spec, args.get(1).copied(), true)? }
            }
            "" => return Err(bad(spec, "empty spec")),
            other => return Err(bad(spec, format!("unknown dataset kind `{other}`"))),
        };
        if modifiers.contains(&Modifier::Coarse) && !matches!(source, Source::Cifar100 { .. }) {
            return Err(bad(spec, "@coarse only applies to cifar100"));
        }
        Ok(DataSpec { source, modifiers })
    }

    /// The same source with another split (e.g. the test set matching a training spec); modifiers
    /// are kept. Sources without splits are returned unchanged.
    pub fn with_split(&self, split: Split) -> DataSpec {
        let mut s = self.clone();
        match &mut s.source {
            Source::FashionMnist { split: sp }
            | Source::Mnist { split: sp, .. }
            | Source::Cifar10 { split: sp, .. }
            | Source::Cifar100 { split: sp, .. }
            | Source::TinyImageNet { split: sp, .. } => *sp = split,
            _ => {}
        }
        s
    }

    pub fn load(&self) -> Result<Dataset> {
        let nclasses = self.modifiers.iter().find_map(|m| if let Modifier::NumClasses(k) = m { Some(*k) } else { None });
        let mut ds = match &self.source {
            Source::FashionMnist { split } => crate::fashion_mnist(*split)?,
            Source::Mnist { dir, split } => crate::mnist_dir(dir, *split, &format!("mnist:{}", dir.display()))?,
            Source::Cifar10 { dir, split } => crate::cifar10(dir, *split)?,
            Source::Cifar100 { dir, split } => crate::cifar100(dir, *split, !self.modifiers.contains(&Modifier::Coarse))?,
            Source::Npy { images, labels } => {
                let labels = match labels {
                    Some(l) => l.clone(),
                    None => images.parent().unwrap_or(std::path::Path::new(".")).join("labels.npy"),
                };
                crate::npy_dataset(images, &labels, nclasses)?
            }
            Source::CifarC { dir, corruption, severity } => crate::cifar_c(dir, corruption, *severity, nclasses)?,
            Source::Folder { dir } => crate::image_folder(dir)?,
            Source::TinyImageNet { dir, split } => crate::tiny_imagenet(dir, *split)?,
        };
        if let Some(k) = nclasses {
            if k < ds.num_classes {
                return Err(Error::Invalid(format!("{}: @nclasses={k} but the data has {} classes", ds.name, ds.num_classes)));
            }
            ds.num_classes = k;
        }
        for m in &self.modifiers {
            ds = match m {
                Modifier::Classes(c) => ds.subset_classes(c)?,
                Modifier::Range(a, b) => {
                    let end = b.unwrap_or(ds.len());
                    ds.range(*a..end)?
                }
                Modifier::Limit(n) => ds.limit(*n),
                Modifier::NumClasses(_) | Modifier::Coarse => ds,
            };
        }
        Ok(ds)
    }
}

/// Parse and load a `--data` spec in one go.
pub fn load_spec(spec: &str) -> Result<Dataset> {
    DataSpec::parse(spec)?.load()
}
