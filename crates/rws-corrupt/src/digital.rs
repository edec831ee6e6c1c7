//! Digital corruptions: brightness, contrast, saturate (skimage HSV), pixelate (Pillow BOX
//! resampling in fixed point), jpeg_compression (see jpeg.rs).
use crate::ndimage::{hsv2rgb, rgb2hsv};
use crate::{Error, FImage, ParamSet, Result, Rng};

fn pick<T: Copy>(p: ParamSet, s: usize, c32: [T; 5], t64: [T; 5], ic: [T; 5]) -> T {
    match p {
        ParamSet::Cifar10 => c32[s - 1],
        ParamSet::TinyImageNet => t64[s - 1],
        ParamSet::ImageNet => ic[s - 1],
    }
}

/// Apply an HSV edit per pixel as the reference (x/255 → rgb2hsv → edit → hsv2rgb → clip·255).
/// Grey images are RGB with three equal channels: S = 0 and H = 0 there, so the edit is applied
/// to that pixel and the result is returned as one channel by ITU-R 601 luma (equal channels
/// come back unchanged; saturate's b > 0 turns grey reddish, which luma turns back into a grey
/// level).
fn hsv_edit(x: &FImage, f: impl Fn(f64, f64, f64) -> (f64, f64, f64)) -> FImage {
    let px = |r: f64, g: f64, b: f64| {
        let (h, s, v) = rgb2hsv(r / 255.0, g / 255.0, b / 255.0);
        let (h, s, v) = f(h, s, v);
        let (r, g, b) = hsv2rgb(h, s, v);
        (r.clamp(0.0, 1.0) * 255.0, g.clamp(0.0, 1.0) * 255.0, b.clamp(0.0, 1.0) * 255.0)
    };
    let mut out = x.clone();
    if x.c == 3 {
        for (o, i) in out.data.chunks_exact_mut(3).zip(x.data.chunks_exact(3)) {
            let (r, g, b) = px(i[0], i[1], i[2]);
            o[0] = r;
            o[1] = g;
            o[2] = b;
        }
    } else {
        for (o, &v) in out.data.iter_mut().zip(&x.data) {
            let (r, g, b) = px(v, v, v);
            *o = if r == g && g == b { r } else { 0.299 * r + 0.587 * g + 0.114 * b };
        }
    }
    out
}

pub(crate) fn brightness(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let c = pick(p, severity, [0.05, 0.1, 0.15, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]);
    Ok(hsv_edit(x, |h, s, v| (h, s, (v + c).clamp(0.0, 1.0))))
}

pub(crate) fn saturate(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let (a, b) = pick(
        p,
        severity,
        [(0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)],
        [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (30.0, 0.2)],
        [(0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2)],
    );
    Ok(hsv_edit(x, |h, s, v| (h, (s * a + b).clamp(0.0, 1.0), v)))
}

pub(crate) fn contrast(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let c = pick(p, severity, [0.75, 0.5, 0.4, 0.3, 0.15], [0.4, 0.3, 0.2, 0.1, 0.05], [0.4, 0.3, 0.2, 0.1, 0.05]);
    let n = (x.h * x.w) as f64;
    let mut means = vec![0.0; x.c];
    for px in x.data.chunks_exact(x.c) {
        for (m, v) in means.iter_mut().zip(px) {
            *m += v / 255.0;
        }
    }
    means.iter_mut().for_each(|m| *m /= n);
    let mut out = x.clone();
    for px in out.data.chunks_exact_mut(x.c) {
        for (v, &m) in px.iter_mut().zip(&means) {
            *v = ((*v / 255.0 - m) * c + m).clamp(0.0, 1.0) * 255.0;
        }
    }
    Ok(out)
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` for the BOX filter plus `normalize_coeffs_8bpc`: per output
/// pixel, the first input index and the fixed-point weights.
fn box_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 0.5 * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = (((center + support + 0.5) as i64).min(in_size as i64) as usize).saturating_sub(xmin);
            let w: Vec<f64> = (0..xmax)
                .map(|x| {
                    let t = (x as f64 + xmin as f64 - center + 0.5) * ss;
                    if t > -0.5 && t <= 0.5 {
                        1.0
                    } else {
                        0.0
                    }
                })
                .collect();
            let ww: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if ww != 0.0 { v / ww } else { v };
                    let f = v * (1u32 << PRECISION_BITS) as f64;
                    (if f < 0.0 { f - 0.5 } else { f + 0.5 }) as i32
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// Pillow `Image.resize(size, BOX)` of a uint8 HWC image: horizontal pass then vertical, each
/// rounding to uint8, as `ImagingResample` does.
pub(crate) fn pil_resize_box(src: &[u8], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<u8> {
    let clip8 = |ss: i64| -> u8 { (ss >> PRECISION_BITS).clamp(0, 255) as u8 };
    let mut tmp = src.to_vec();
    let mut tw = w;
    if ow != w {
        let k = box_coeffs(w, ow);
        let mut t = vec![0u8; h * ow * c];
        for y in 0..h {
            for (xx, (xmin, kk)) in k.iter().enumerate() {
                for ch in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (j, &kv) in kk.iter().enumerate() {
                        ss += src[(y * w + xmin + j) * c + ch] as i64 * kv as i64;
                    }
                    t[(y * ow + xx) * c + ch] = clip8(ss);
                }
            }
        }
        tmp = t;
        tw = ow;
    }
    if oh != h {
        let k = box_coeffs(h, oh);
        let mut t = vec![0u8; oh * tw * c];
        for (yy, (ymin, kk)) in k.iter().enumerate() {
            for x in 0..tw * c {
                let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                for (j, &kv) in kk.iter().enumerate() {
                    ss += tmp[(ymin + j) * tw * c + x] as i64 * kv as i64;
                }
                t[yy * tw * c + x] = clip8(ss);
            }
        }
        tmp = t;
    }
    tmp
}

/// Pillow `resize(size, NEAREST)`: source index ⌊(o + 0.5)·in/out⌋.
fn pil_resize_nearest(src: &[u8], h: usize, w: usize, c: usize, oh: usize, ow: usize) -> Vec<u8> {
    let idx = |o: usize, n: usize, m: usize| (((o as f64 + 0.5) * n as f64 / m as f64) as usize).min(n - 1);
    let mut out = Vec::with_capacity(oh * ow * c);
    for y in 0..oh {
        let sy = idx(y, h, oh);
        for x in 0..ow {
            let sx = idx(x, w, ow);
            out.extend_from_slice(&src[(sy * w + sx) * c..(sy * w + sx + 1) * c]);
        }
    }
    out
}

/// The input as the uint8 image PIL would see (the reference's pixelate/jpeg get a PIL image).
pub(crate) fn as_u8(x: &FImage) -> Vec<u8> {
    crate::to_u8(x)
}

pub(crate) fn pixelate(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let c = pick(p, severity, [0.95, 0.9, 0.85, 0.75, 0.65], [0.9, 0.8, 0.7, 0.6, 0.5], [0.6, 0.5, 0.4, 0.3, 0.25]);
    let (h, w, ch) = (x.h, x.w, x.c);
    let (sh, sw) = ((h as f64 * c) as usize, (w as f64 * c) as usize);
    if sh == 0 || sw == 0 {
        return Err(Error::TooSmall { corruption: "pixelate", h, w, why: format!("downscaling by {c} leaves no pixel") });
    }
    let u = as_u8(x);
    let small = pil_resize_box(&u, h, w, ch, sh, sw);
    let back = match p {
        ParamSet::ImageNet => pil_resize_nearest(&small, sh, sw, ch, h, w),
        _ => pil_resize_box(&small, sh, sw, ch, h, w),
    };
    Ok(FImage { h, w, c: ch, data: back.into_iter().map(|v| v as f64).collect() })
}

pub(crate) fn jpeg_compression(x: &FImage, severity: usize, p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    let q = pick(p, severity, [80, 65, 58, 50, 40], [65, 58, 50, 40, 25], [25, 18, 15, 10, 7]);
    let u = as_u8(x);
    let out = crate::jpeg::round_trip(&u, x.h, x.w, x.c, q);
    Ok(FImage { h: x.h, w: x.w, c: x.c, data: out.into_iter().map(|v| v as f64).collect() })
}
