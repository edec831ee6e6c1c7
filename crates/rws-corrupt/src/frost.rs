//! frost: out = clip(a·x + f·T) on the 0..255 scale, T a frost texture crop of the image's size.
//!
//! **Textures.** When [`set_frost_dir`] was given a folder, or else the environment variable
//! `RWS_FROST_DIR` names one, holding the
//! reference textures `frost1..frost5` (as `.npy` uint8 H×W×3 RGB, or `.png`/`.jpg` when the crate
//! is built with the `frost-files` feature), they are used as the reference does: texture
//! `randint(5)` (frost6 is never chosen by the reference either), CIFAR: resized ×0.2 (bilinear,
//! OpenCV pixel-centre mapping), Tiny-ImageNet: ×0.3, ImageNet (imagecorruptions): scaled up to
//! cover the image if needed, then ×1.1 bicubic; then a random crop (`randint(0, Ht−H)`,
//! `randint(0, Wt−W)`). Decoded textures are cached per folder (the reference re-reads them on
//! every call, which dominates its cost).
//!
//! **No files (the default).** A procedural frost of the same strength: one of five "styles" is
//! chosen uniformly, one per reference texture, each carrying that texture's measured per-channel
//! mean, spread of crop means and within-crop standard deviation (at the parameter set's scale,
//! table `STYLE` below, measured with OpenCV on 400 random crops per texture). The pattern is a
//! *ridged* diamond-square fractal (1 − |2P − 1|, which draws the vein-like lines of ice
//! crystals), standardised over the crop; T = clip(mean + z·spread + std·pattern) per channel with
//! one z ~ N(0, 1) per call. The corruption's strength (mean abs change, PSNR) therefore matches
//! the reference's: tests/stats.rs checks both modes against fixtures/stats.json.
//!
//! Sizes: for CIFAR/Tiny parameters an image larger than the resized texture gets the texture
//! scaled up to cover it (×1.1 margin, as imagecorruptions); any size works. Grey images (c = 1)
//! receive the texture's luminance (0.2125, 0.7154, 0.0721) on the 0..255 scale.

// `frost-files` is the optional PNG/JPEG decoding feature (needs the `image` dependency).
#![allow(unexpected_cfgs)]

use crate::fog::plasma_fractal;
use crate::{Error, FImage, ParamSet, Result, Rng};
use rand::Rng as _;
use rand_distr::StandardNormal;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

const GREY_W: [f64; 3] = [0.2125, 0.7154, 0.0721];
const GREY_W32: [f32; 3] = [0.2125, 0.7154, 0.0721];

/// Per parameter set, per reference texture: mean RGB of crops, std of crop means, mean
/// within-crop std (0..255 scale).
const STYLE: [[[[f64; 3]; 3]; 5]; 3] = [
    [
        [[78.5, 148.8, 165.0], [18.0, 10.1, 8.1], [21.7, 13.3, 12.7]],
        [[198.6, 203.1, 212.4], [8.2, 9.1, 9.6], [17.7, 18.1, 18.6]],
        [[198.3, 202.7, 212.0], [8.1, 9.0, 9.5], [17.7, 18.1, 18.7]],
        [[143.8, 158.6, 171.4], [10.4, 10.2, 11.0], [26.0, 26.1, 27.1]],
        [[101.2, 112.6, 124.5], [15.5, 14.9, 14.1], [34.1, 33.8, 33.2]],
    ],
    [
        [[76.7, 147.7, 164.2], [15.3, 8.0, 6.1], [21.6, 13.1, 12.4]],
        [[197.8, 202.1, 211.4], [6.1, 6.8, 7.1], [17.8, 18.4, 19.2]],
        [[198.3, 202.7, 211.9], [6.2, 6.9, 7.2], [17.8, 18.3, 19.1]],
        [[144.9, 159.7, 172.6], [6.8, 6.7, 7.3], [23.1, 23.2, 24.6]],
        [[101.0, 112.4, 124.2], [12.6, 12.1, 11.4], [33.0, 32.5, 31.7]],
    ],
    [
        [[76.1, 147.6, 164.3], [14.9, 8.1, 6.5], [22.4, 13.6, 12.9]],
        [[198.3, 202.7, 211.9], [6.3, 7.0, 7.4], [18.8, 19.3, 20.0]],
        [[198.0, 202.4, 211.6], [6.5, 7.3, 7.7], [18.7, 19.2, 19.9]],
        [[144.3, 159.1, 171.9], [7.4, 7.3, 7.8], [25.5, 25.5, 26.8]],
        [[100.8, 112.2, 124.1], [14.0, 13.4, 12.6], [34.8, 34.4, 33.7]],
    ],
];

/// An RGB u8 texture, row-major HWC.
#[derive(Clone, Debug)]
pub(crate) struct Texture {
    pub h: usize,
    pub w: usize,
    pub data: Vec<u8>,
}

fn params(p: ParamSet, severity: usize) -> (f64, f64) {
    let t = match p {
        ParamSet::Cifar10 => [(1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        ParamSet::TinyImageNet => [(1.0, 0.3), (0.9, 0.4), (0.8, 0.45), (0.75, 0.5), (0.7, 0.55)],
        ParamSet::ImageNet => [(1.0, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
    };
    t[severity - 1]
}

fn read_npy_rgb(path: &Path) -> Result<Texture> {
    let bad = |why: &str| Error::Msg(format!("frost texture {}: {why}", path.display()));
    let b = std::fs::read(path).map_err(|e| bad(&e.to_string()))?;
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return Err(bad("not a .npy file"));
    }
    let (hl, off) = if b[6] == 1 { (u16::from_le_bytes([b[8], b[9]]) as usize, 10) } else { (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12) };
    let hdr = std::str::from_utf8(b.get(off..off + hl).ok_or_else(|| bad("truncated header"))?).map_err(|_| bad("bad header"))?;
    if !(hdr.contains("'|u1'") || hdr.contains("'u1'")) || hdr.contains("'fortran_order': True") {
        return Err(bad("expected uint8, C order"));
    }
    let sh = hdr.split("'shape':").nth(1).and_then(|s| s.split('(').nth(1)).and_then(|s| s.split(')').next()).ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = sh.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().map_err(|_| bad("bad shape"))).collect::<Result<_>>()?;
    if dims.len() != 3 || dims[2] != 3 {
        return Err(bad("expected shape (H, W, 3)"));
    }
    let data = b[off + hl..].to_vec();
    if data.len() != dims[0] * dims[1] * 3 {
        return Err(bad("data length does not match shape"));
    }
    Ok(Texture { h: dims[0], w: dims[1], data })
}

#[cfg(feature = "frost-files")]
fn read_image_rgb(path: &Path) -> Result<Texture> {
    let img = image::open(path).map_err(|e| Error::Msg(format!("frost texture {}: {e}", path.display())))?;
    // Alpha is dropped, not composited, as cv2.imread(IMREAD_COLOR) does.
    let rgb = img.to_rgb8();
    Ok(Texture { h: rgb.height() as usize, w: rgb.width() as usize, data: rgb.into_raw() })
}

#[cfg(not(feature = "frost-files"))]
fn read_image_rgb(path: &Path) -> Result<Texture> {
    Err(Error::Msg(format!("frost texture {}: PNG/JPEG decoding needs the `frost-files` feature; provide frostK.npy (uint8 H×W×3 RGB) instead", path.display())))
}

/// Load frost1..frost5 from `dir` (`.npy` first, then `.png`, then `.jpg`).
pub(crate) fn load_textures(dir: &Path) -> Result<Vec<Texture>> {
    (1..=5)
        .map(|k| {
            for ext in ["npy", "png", "jpg"] {
                let p = dir.join(format!("frost{k}.{ext}"));
                if p.is_file() {
                    return if ext == "npy" { read_npy_rgb(&p) } else { read_image_rgb(&p) };
                }
            }
            Err(Error::Msg(format!("frost texture folder {}: frost{k}.npy/.png/.jpg not found", dir.display())))
        })
        .collect()
}

fn texture_cache() -> &'static Mutex<HashMap<PathBuf, Arc<Vec<Texture>>>> {
    static C: OnceLock<Mutex<HashMap<PathBuf, Arc<Vec<Texture>>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

fn override_slot() -> &'static Mutex<Option<Arc<Vec<Texture>>>> {
    static C: OnceLock<Mutex<Option<Arc<Vec<Texture>>>>> = OnceLock::new();
    C.get_or_init(|| Mutex::new(None))
}

/// Use the reference frost textures from `dir` for every later `frost` call in this process
/// (`None`: back to `RWS_FROST_DIR`, else procedural). The folder is read now, so a missing or
/// unreadable texture is reported here, naming the file. Takes precedence over `RWS_FROST_DIR`.
#[allow(dead_code)] // public once lib.rs re-exports it
pub fn set_frost_dir(dir: Option<&Path>) -> Result<()> {
    let t = match dir {
        Some(d) => Some(Arc::new(load_textures(d)?)),
        None => None,
    };
    *override_slot().lock().unwrap() = t;
    Ok(())
}

/// Textures set by [`set_frost_dir`], else those of the folder named by `RWS_FROST_DIR` (decoded
/// once per process), else `None` (procedural).
fn env_textures() -> Result<Option<Arc<Vec<Texture>>>> {
    if let Some(t) = override_slot().lock().unwrap().clone() {
        return Ok(Some(t));
    }
    let Some(dir) = std::env::var_os("RWS_FROST_DIR").filter(|d| !d.is_empty()) else { return Ok(None) };
    let dir = PathBuf::from(dir);
    if let Some(t) = texture_cache().lock().unwrap().get(&dir) {
        return Ok(Some(t.clone()));
    }
    let t = Arc::new(load_textures(&dir)?);
    texture_cache().lock().unwrap().insert(dir, t.clone());
    Ok(Some(t))
}

/// cv2.resize to (dw, dh) with pixel-centre mapping `src = (dst + 0.5)·scale − 0.5`; bilinear
/// (edge-clamped) or bicubic (a = −0.75), rounded and saturated to u8.
fn resize(t: &Texture, dh: usize, dw: usize, sy: f64, sx: f64, cubic: bool) -> Texture {
    let taps = |pos: f64, n: usize| -> ([usize; 4], [f64; 4]) {
        let f = pos.floor();
        let u = pos - f;
        let i = f as isize;
        let cl = |k: isize| k.clamp(0, n as isize - 1) as usize;
        if cubic {
            let a = -0.75;
            let w0 = ((a * (u + 1.0) - 5.0 * a) * (u + 1.0) + 8.0 * a) * (u + 1.0) - 4.0 * a;
            let w1 = ((a + 2.0) * u - (a + 3.0)) * u * u + 1.0;
            let w2 = ((a + 2.0) * (1.0 - u) - (a + 3.0)) * (1.0 - u) * (1.0 - u) + 1.0;
            ([cl(i - 1), cl(i), cl(i + 1), cl(i + 2)], [w0, w1, w2, 1.0 - w0 - w1 - w2])
        } else {
            // OpenCV clamps the coordinate itself at the left edge.
            let (i, u) = if pos < 0.0 { (0, 0.0) } else { (i, u) };
            ([cl(i), cl(i + 1), 0, 0], [1.0 - u, u, 0.0, 0.0])
        }
    };
    let mut data = vec![0u8; dh * dw * 3];
    let cols: Vec<_> = (0..dw).map(|x| taps((x as f64 + 0.5) * sx - 0.5, t.w)).collect();
    for y in 0..dh {
        let (ri, rw) = taps((y as f64 + 0.5) * sy - 0.5, t.h);
        for (x, (ci, cw)) in cols.iter().enumerate() {
            for ch in 0..3 {
                let mut acc = 0.0;
                for a in 0..4 {
                    if rw[a] == 0.0 {
                        continue;
                    }
                    let row = ri[a] * t.w;
                    let mut s = 0.0;
                    for b in 0..4 {
                        if cw[b] != 0.0 {
                            s += cw[b] * t.data[(row + ci[b]) * 3 + ch] as f64;
                        }
                    }
                    acc += rw[a] * s;
                }
                data[(y * dw + x) * 3 + ch] = acc.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Texture { h: dh, w: dw, data }
}

/// The reference's texture preparation for one parameter set and image size.
fn prepare(t: &Texture, p: ParamSet, h: usize, w: usize) -> Texture {
    let (mut th, mut tw) = (t.h as f64, t.w as f64);
    let (scale, cubic) = match p {
        ParamSet::Cifar10 => (0.2, false),
        ParamSet::TinyImageNet => (0.3, false),
        ParamSet::ImageNet => {
            let f = (h as f64 / th).max(w as f64 / tw).max(1.0) * 1.1;
            (f, true)
        }
    };
    let (mut dh, mut dw) = if cubic { ((th * scale).ceil() as usize, (tw * scale).ceil() as usize) } else { ((th * scale).round() as usize, (tw * scale).round() as usize) };
    let (mut sy, mut sx) = if cubic { (th / dh as f64, tw / dw as f64) } else { (1.0 / scale, 1.0 / scale) };
    let mut cubic = cubic;
    if dh <= h || dw <= w {
        // Too small for the image (only outside the reference's native sizes): cover it, as
        // imagecorruptions does.
        let f = (h as f64 / th).max(w as f64 / tw) * 1.1;
        th *= f;
        tw *= f;
        dh = th.ceil() as usize;
        dw = tw.ceil() as usize;
        sy = t.h as f64 / dh as f64;
        sx = t.w as f64 / dw as f64;
        cubic = true;
    }
    resize(t, dh.max(h + 1), dw.max(w + 1), sy, sx, cubic)
}

/// Resized textures per (texture set, parameter set, image h, image w).
type PreparedCache = Mutex<HashMap<(usize, ParamSet, usize, usize), Arc<Vec<Texture>>>>;

fn prepared_cache() -> &'static PreparedCache {
    static C: OnceLock<PreparedCache> = OnceLock::new();
    C.get_or_init(|| Mutex::new(HashMap::new()))
}

fn blend(x: &FImage, a: f64, f: f64, tex: impl Fn(usize, usize, usize) -> f64) -> FImage {
    let mut data = vec![0.0; x.data.len()];
    let (w, c) = (x.w, x.c);
    for r in 0..x.h {
        let (src, dst) = (&x.data[r * w * c..(r + 1) * w * c], &mut data[r * w * c..(r + 1) * w * c]);
        if c == 3 {
            for (col, (o, i)) in dst.chunks_exact_mut(3).zip(src.chunks_exact(3)).enumerate() {
                for ch in 0..3 {
                    o[ch] = (a * i[ch] + f * tex(r, col, ch)).clamp(0.0, 255.0);
                }
            }
        } else {
            for (col, (o, i)) in dst.chunks_exact_mut(c).zip(src.chunks_exact(c)).enumerate() {
                let g: f64 = (0..3).map(|ch| GREY_W[ch] * tex(r, col, ch)).sum();
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = (a * v + f * g).clamp(0.0, 255.0);
                }
            }
        }
    }
    FImage { h: x.h, w: x.w, c: x.c, data }
}

/// The texture crop one call blends in, after the call's random draws.
enum Tex {
    /// A prepared reference texture and the crop's top-left corner.
    File { t: Arc<Vec<Texture>>, idx: usize, y0: usize, x0: usize },
    /// The procedural frost.
    Proc(Proc),
}

/// The procedural texture: channel `ch` at (r, c) is clip(base + gain·R(r, c)) with R the ridged
/// plasma value; base and gain fold the style's mean, crop spread and z with the pattern's
/// standardisation over the crop (mean + spread·z + sd_ch·(R − mean_R)/sd_R).
struct Proc {
    /// The plasma map, side `n`, and its normalisation to [0, 1] ((v − lo)·inv).
    pm: Vec<f32>,
    n: usize,
    lo: f32,
    inv: f32,
    base: [f32; 3],
    gain: [f32; 3],
}

/// The ridged pattern value of a raw plasma value v (normalised by lo, inv).
#[inline(always)]
fn ridge(v: f32, lo: f32, inv: f32) -> f32 {
    1.0 - (2.0 * ((v - lo) * inv) - 1.0).abs()
}

/// The random draws of one call (texture choice and crop, or the procedural style, z and map).
fn draw(p: ParamSet, h: usize, w: usize, rng: &mut Rng, textures: Option<&Arc<Vec<Texture>>>) -> Tex {
    let idx = rng.gen_range(0..5usize);
    if let Some(texs) = textures {
        let key = (Arc::as_ptr(texs) as usize, p, h, w);
        let cached = prepared_cache().lock().unwrap().get(&key).cloned();
        let prepared = match cached {
            Some(v) => v,
            None => {
                let v = Arc::new(texs.iter().map(|t| prepare(t, p, h, w)).collect::<Vec<_>>());
                prepared_cache().lock().unwrap().insert(key, v.clone());
                v
            }
        };
        let t = &prepared[idx];
        let y0 = rng.gen_range(0..t.h - h);
        let x0 = rng.gen_range(0..t.w - w);
        return Tex::File { t: prepared, idx, y0, x0 };
    }
    let style = STYLE[p as usize][idx];
    let z: f64 = rng.sample(StandardNormal);
    let n = h.max(w).max(2).next_power_of_two();
    let pm = plasma_fractal(n, 1.8, &mut crate::noise::Fast::from_rng(rng));
    let (lo, inv) = (pm.lo, pm.inv);
    // Mean and (population) sd of the pattern over the crop.
    let (s, s2) = crop_moments(&pm.map, n, h, w, lo, inv);
    let len = (h * w) as f64;
    let mean = s / len;
    let sd = (s2 / len - mean * mean).max(0.0).sqrt().max(1e-12);
    let gain: [f64; 3] = std::array::from_fn(|ch| style[2][ch] / sd);
    let base = std::array::from_fn(|ch| (style[0][ch] + z * style[1][ch] - gain[ch] * mean) as f32);
    Tex::Proc(Proc { pm: pm.map, n, lo, inv, base, gain: gain.map(|g| g as f32) })
}

/// (Σ R, Σ R²) over the top-left h×w of an n-wide map: down each column in f32 (an element-wise
/// row loop, which vectorises; a fixed order, so the same bits on every CPU), then the columns'
/// totals in f64.
fn crop_moments(pm: &[f32], n: usize, h: usize, w: usize, lo: f32, inv: f32) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above).
        return unsafe { crop_moments_avx2(pm, n, h, w, lo, inv) };
    }
    crop_moments_impl(pm, n, h, w, lo, inv)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn crop_moments_avx2(pm: &[f32], n: usize, h: usize, w: usize, lo: f32, inv: f32) -> (f64, f64) {
    crop_moments_impl(pm, n, h, w, lo, inv)
}

#[inline(always)]
fn crop_moments_impl(pm: &[f32], n: usize, h: usize, w: usize, lo: f32, inv: f32) -> (f64, f64) {
    let (mut a, mut a2) = (vec![0f32; w], vec![0f32; w]);
    for r in 0..h {
        for ((s, s2), &v) in a.iter_mut().zip(a2.iter_mut()).zip(&pm[r * n..r * n + w]) {
            let v = ridge(v, lo, inv);
            *s += v;
            *s2 += v * v;
        }
    }
    (a.iter().map(|&v| v as f64).sum(), a2.iter().map(|&v| v as f64).sum())
}

impl Proc {
    /// out = clip(a·x + f·T) on the 0..255 scale (grey images: T's luminance), in f32, shared by
    /// the float and uint8 paths (`put` clips to 0..=255, as the uint8 cast does anyway).
    #[allow(clippy::too_many_arguments)]
    fn blend<T: Copy, O: Copy>(&self, x: &[T], out: &mut [O], w: usize, c: usize, a: f32, f: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { self.blend_avx2(x, out, w, c, a, f, get, put) };
        }
        self.blend_impl(x, out, w, c, a, f, get, put)
    }

    /// [`Proc::blend_impl`] compiled for AVX2 (no FMA: the same bits).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn blend_avx2<T: Copy, O: Copy>(&self, x: &[T], out: &mut [O], w: usize, c: usize, a: f32, f: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
        self.blend_impl(x, out, w, c, a, f, get, put)
    }

    /// RGB in blocks of 8 pixels whose pattern values are spread to their 24 channel values by
    /// constant indices, so the value loop vectorises.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn blend_impl<T: Copy, O: Copy>(&self, x: &[T], out: &mut [O], w: usize, c: usize, a: f32, f: f32, get: impl Fn(T) -> f32, put: impl Fn(f32) -> O) {
        let &Proc { ref pm, n, lo, inv, base, gain } = self;
        // f·clip(base + gain·R, 0, 255) as one clip of the scaled line.
        let (fb, fg, top) = (base.map(|v| f * v), gain.map(|v| f * v), f * 255.0);
        let tex = |ch: usize, r: f32| (fb[ch] + fg[ch] * r).clamp(0.0, top);
        let px = |v: T, t: f32| put(a * get(v) + t);
        if w * c == 0 {
            return;
        }
        for (y, (src, dst)) in x.chunks_exact(w * c).zip(out.chunks_exact_mut(w * c)).enumerate() {
            let pr = &pm[y * n..y * n + w];
            if c == 3 {
                let mut xs = src.chunks_exact(24);
                let mut ds = dst.chunks_exact_mut(24);
                let mut ps = pr.chunks_exact(8);
                for ((xb, db), pb) in (&mut xs).zip(&mut ds).zip(&mut ps) {
                    let mut r = [0f32; 8];
                    for i in 0..8 {
                        r[i] = ridge(pb[i], lo, inv);
                    }
                    for i in 0..24 {
                        db[i] = px(xb[i], tex(i % 3, r[i / 3]));
                    }
                }
                for ((xp, dp), &pv) in xs.remainder().chunks_exact(3).zip(ds.into_remainder().chunks_exact_mut(3)).zip(ps.remainder()) {
                    let r = ridge(pv, lo, inv);
                    for ch in 0..3 {
                        dp[ch] = px(xp[ch], tex(ch, r));
                    }
                }
            } else {
                for ((xp, dp), &pv) in src.chunks_exact(c).zip(dst.chunks_exact_mut(c)).zip(pr) {
                    let r = ridge(pv, lo, inv);
                    let g = GREY_W32[0] * tex(0, r) + GREY_W32[1] * tex(1, r) + GREY_W32[2] * tex(2, r);
                    for (o, &v) in dp.iter_mut().zip(xp) {
                        *o = px(v, g);
                    }
                }
            }
        }
    }
}

/// frost with explicit textures (`None`: procedural).
pub(crate) fn frost_with(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng, textures: Option<&Arc<Vec<Texture>>>) -> Result<FImage> {
    let (a, f) = params(p, severity);
    match draw(p, x.h, x.w, rng, textures) {
        Tex::File { t, idx, y0, x0 } => {
            let t = &t[idx];
            Ok(blend(x, a, f, |r, c, ch| t.data[((y0 + r) * t.w + x0 + c) * 3 + ch] as f64))
        }
        Tex::Proc(pr) => {
            let mut data = vec![0.0; x.data.len()];
            pr.blend(&x.data, &mut data, x.w, x.c, a as f32, f as f32, |v| v as f32, |v| v.clamp(0.0, 255.0) as f64);
            Ok(FImage { h: x.h, w: x.w, c: x.c, data })
        }
    }
}

pub(crate) fn frost(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let t = env_textures()?;
    frost_with(x, severity, p, rng, t.as_ref())
}

/// uint8 → uint8 frost: the float path's draws and per-value arithmetic (same bytes), reading
/// the u8 pixels and the texture crop directly (no whole-image f64 buffer, no pattern buffer).
#[allow(clippy::too_many_arguments)]
pub(crate) fn frost_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Vec<u8>> {
    let t = env_textures()?;
    let (a, f) = params(p, severity);
    let mut out = vec![0u8; x.len()];
    match draw(p, h, w, rng, t.as_ref()) {
        Tex::File { t, idx, y0, x0 } => {
            let tex = &t[idx];
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { blend_u8_avx2(x, &mut out, w, c, a, f, tex, y0, x0) };
                return Ok(out);
            }
            blend_u8(x, &mut out, w, c, a, f, tex, y0, x0);
        }
        Tex::Proc(pr) => pr.blend(x, &mut out, w, c, a as f32, f as f32, |v| v as f32, crate::cast_u8_f32),
    }
    Ok(out)
}

/// [`blend_u8`] compiled for AVX2 (no FMA: the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(clippy::too_many_arguments)]
unsafe fn blend_u8_avx2(x: &[u8], out: &mut [u8], w: usize, c: usize, a: f64, f: f64, t: &Texture, y0: usize, x0: usize) {
    blend_u8(x, out, w, c, a, f, t, y0, x0)
}

/// [`blend`] on u8 input and output for a texture crop at (y0, x0), one texture row at a time
/// (planar, so the value loops vectorise).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn blend_u8(x: &[u8], out: &mut [u8], w: usize, c: usize, a: f64, f: f64, t: &Texture, y0: usize, x0: usize) {
    let mut trow = vec![0f64; w * 3];
    for (r, (src, dst)) in x.chunks_exact(w * c).zip(out.chunks_exact_mut(w * c)).enumerate() {
        let s = &t.data[((y0 + r) * t.w + x0) * 3..][..w * 3];
        for (o, &v) in trow.iter_mut().zip(s) {
            *o = v as f64;
        }
        if c == 3 {
            for ((o, &i), &t) in dst.iter_mut().zip(src).zip(trow.iter()) {
                *o = crate::cast_u8((a * i as f64 + f * t).clamp(0.0, 255.0));
            }
        } else {
            for ((o, &i), t) in dst.iter_mut().zip(src).zip(trow.chunks_exact(3)) {
                let g: f64 = (0..3).map(|ch| GREY_W[ch] * t[ch]).sum();
                *o = crate::cast_u8((a * i as f64 + f * g).clamp(0.0, 255.0));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn write_npy(path: &Path, h: usize, w: usize, fill: impl Fn(usize, usize, usize) -> u8) {
        let px: Vec<u8> = (0..h * w * 3).map(|i| fill(i / (3 * w), i / 3 % w, i % 3)).collect();
        std::fs::write(path, crate::io::npy_u8(&[h, w, 3], &px)).unwrap();
    }

    #[test]
    fn texture_folder_is_used_and_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("rws-frost-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 1..=4 {
            write_npy(&dir.join(format!("frost{k}.npy")), 300, 400, |_, _, c| [10, 100, 200][c]);
        }
        let err = load_textures(&dir).unwrap_err().to_string();
        assert!(err.contains("frost5"), "{err}");
        write_npy(&dir.join("frost5.npy"), 300, 400, |_, _, c| [10, 100, 200][c]);
        let t = Arc::new(load_textures(&dir).unwrap());
        // A constant texture: out = a·x + f·T exactly (CIFAR s1: a = 1, f = 0.2).
        let x = FImage { h: 32, w: 32, c: 3, data: vec![50.0; 32 * 32 * 3] };
        let y = frost_with(&x, 1, ParamSet::Cifar10, &mut Rng::seed_from_u64(1), Some(&t)).unwrap();
        for px in y.data.chunks(3) {
            assert_eq!(px, [52.0, 70.0, 90.0]);
        }
        // Grey images get the texture's luminance.
        let g = FImage { h: 300, w: 300, c: 1, data: vec![0.0; 300 * 300] };
        let y = frost_with(&g, 1, ParamSet::ImageNet, &mut Rng::seed_from_u64(1), Some(&t)).unwrap();
        let lum = 0.4 * (0.2125 * 10.0 + 0.7154 * 100.0 + 0.0721 * 200.0);
        assert!(y.data.iter().all(|&v| (v - lum).abs() < 1e-9), "{}", y.data[0]);
        std::fs::remove_dir_all(&dir).ok();
    }

    /// The procedural texture's AVX2 builds give the portable build's bits.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn procedural_avx2_is_portable() {
        use rand::Rng as _;
        if !std::is_x86_feature_detected!("avx2") {
            return;
        }
        let mut r = Rng::seed_from_u64(4);
        for (h, w, c) in [(224usize, 224usize, 3usize), (37, 29, 3), (40, 31, 1)] {
            let n = h.max(w).next_power_of_two();
            let pr = Proc { pm: (0..n * n).map(|_| r.gen()).collect(), n, lo: 0.01, inv: 0.98, base: [90.5, 150.25, 200.0], gain: [40.0, -13.5, 77.0] };
            // SAFETY: the CPU supports AVX2 (checked above).
            assert!(unsafe { crop_moments_avx2(&pr.pm, n, h, w, 0.01, 0.98) } == crop_moments_impl(&pr.pm, n, h, w, 0.01, 0.98));
            let x: Vec<u8> = (0..h * w * c).map(|_| r.gen()).collect();
            let (mut a, mut b) = (vec![0u8; x.len()], vec![0u8; x.len()]);
            // SAFETY: as above.
            unsafe { pr.blend_avx2(&x, &mut a, w, c, 0.7, 0.6, |v| v as f32, crate::cast_u8_f32) };
            pr.blend_impl(&x, &mut b, w, c, 0.7, 0.6, |v| v as f32, crate::cast_u8_f32);
            assert!(a == b, "{h}x{w}x{c}");
        }
    }

    #[test]
    fn set_frost_dir_rejects_a_bad_folder_and_keeps_the_setting() {
        let e = set_frost_dir(Some(Path::new("/nonexistent/rws-frost"))).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/rws-frost") && e.contains("frost1"), "{e}");
        assert!(override_slot().lock().unwrap().is_none());
    }
}
