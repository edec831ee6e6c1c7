//! fog: the reference's diamond-square ("plasma") fractal added to the image, then rescaled.

use crate::noise::Fast;
use crate::{FImage, ParamSet, Result, Rng};

/// The reference `plasma_fractal(mapsize, wibbledecay)`: a toroidal N×N diamond-square map (corner
/// 0, wibble 100, each new point = mean of its 4 parents + wibble·U(−wibble, wibble), wibble /= decay
/// per level), shifted and scaled to [0, 1]. Row-major N×N.
pub(crate) fn plasma_fractal(n: usize, decay: f64, rng: &mut Fast) -> Vec<f64> {
    assert!(n.is_power_of_two());
    let mut m = vec![0.0f64; n * n];
    let mut step = n;
    let mut wib = 100.0f64;
    let mask = n - 1;
    while step >= 2 {
        let hs = step / 2;
        let g = n / step;
        // fillsquares: centre = mean of the 4 corners. Row offsets per a and wrapped column
        // indices per b are hoisted; the draws keep their order (a outer, b inner).
        let cols: Vec<(usize, usize, usize)> = (0..g).map(|b| (b * step, (b * step + hs) & mask, (b * step + step) & mask)).collect();
        for a in 0..g {
            let r = a * step;
            let (r0, rh, r1) = (r * n, ((r + hs) & mask) * n, ((r + step) & mask) * n);
            for &(c0, ch, c1) in &cols {
                let s = m[r0 + c0] + m[r1 + c0] + m[r0 + c1] + m[r1 + c1];
                m[rh + ch] = s / 4.0 + wib * rng.range(-wib, wib);
            }
        }
        // filldiamonds, first the points between horizontally adjacent corners…
        for a in 0..g {
            let r = a * step;
            let (r0, rh, rm) = (r * n, ((r + hs) & mask) * n, ((r + n - hs) & mask) * n);
            for &(c0, ch, c1) in &cols {
                let s = m[rh + ch] + m[rm + ch] + m[r0 + c0] + m[r0 + c1];
                m[r0 + ch] = s / 4.0 + wib * rng.range(-wib, wib);
            }
        }
        // …then between vertically adjacent ones.
        for a in 0..g {
            let r = a * step;
            let (r0, rh, r1) = (r * n, ((r + hs) & mask) * n, ((r + step) & mask) * n);
            for &(c0, ch, _) in &cols {
                let cm = (c0 + n - hs) & mask;
                let s = m[rh + ch] + m[rh + cm] + m[r0 + c0] + m[r1 + c0];
                m[rh + c0] = s / 4.0 + wib * rng.range(-wib, wib);
            }
        }
        step /= 2;
        wib /= decay;
    }
    normalise01(&mut m);
    m
}

/// Map side: the reference's (32 for CIFAR, 64 for Tiny-ImageNet; imagecorruptions: the next power
/// of two ≥ max(H, W), 256 at 224), grown to the next power of two ≥ max(H, W) when the image is
/// larger than that, so any size works; smaller images take the top-left H×W, as the reference.
/// Shift to a minimum of 0, then scale to a maximum of 1 (a flat map stays 0), as the reference's
/// `plasma_fractal` ends.
fn normalise01(m: &mut [f64]) {
    let mn = m.iter().cloned().fold(f64::INFINITY, f64::min);
    m.iter_mut().for_each(|v| *v -= mn);
    let mx = m.iter().cloned().fold(0.0, f64::max);
    if mx > 0.0 {
        m.iter_mut().for_each(|v| *v /= mx);
    }
}

pub(crate) fn fog_map_size(p: ParamSet, h: usize, w: usize) -> usize {
    let need = h.max(w).max(1).next_power_of_two();
    match p {
        ParamSet::Cifar10 => need.max(32),
        ParamSet::TinyImageNet => need.max(64),
        ParamSet::ImageNet => need,
    }
}

/// out = clip((x + c·P)·m/(m + c)) with m the clean image's maximum over all channels; the same
/// fractal value is added to every channel (so grey images stay grey).
pub(crate) fn fog(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let mx = x.data.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let data = fog_apply(&x.data, x.h, x.w, x.c, mx, severity, p, rng, |v| v, |v| v);
    Ok(FImage { h: x.h, w: x.w, c: x.c, data })
}

/// fog from uint8 to uint8: the same draws and arithmetic as [`fog`], then the reference's cast.
pub(crate) fn fog_u8(x: &[u8], h: usize, w: usize, c: usize, severity: usize, p: ParamSet, rng: &mut Rng) -> Vec<u8> {
    let mx = x.iter().copied().max().unwrap_or(0) as f64;
    fog_apply(x, h, w, c, mx, severity, p, rng, |v| v as f64, crate::cast_u8)
}

#[allow(clippy::too_many_arguments)]
fn fog_apply<T: Copy, O: Copy + Default>(x: &[T], h: usize, w: usize, ch: usize, mx: f64, severity: usize, p: ParamSet, rng: &mut Rng, get: impl Fn(T) -> f64, put: impl Fn(f64) -> O) -> Vec<O> {
    let (c, d) = match p {
        ParamSet::Cifar10 => [(0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)],
        ParamSet::TinyImageNet => [(0.4, 3.0), (0.7, 3.0), (1.0, 2.5), (1.5, 2.0), (2.0, 1.75)],
        ParamSet::ImageNet => [(1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
    }[severity - 1];
    let n = fog_map_size(p, h, w);
    let pm = plasma_fractal(n, d, &mut Fast::from_rng(rng));
    let mx = mx / 255.0;
    let scale = mx / (mx + c);
    // On the 0..255 scale: clip((x/255 + c·P)·s, 0, 1)·255 = clip(x·s + 255·c·s·P, 0, 255).
    let k = 255.0 * c * scale;
    let mut data = vec![O::default(); x.len()];
    for r in 0..h {
        let (xr, dr) = (&x[r * w * ch..(r + 1) * w * ch], &mut data[r * w * ch..(r + 1) * w * ch]);
        let pr = &pm[r * n..r * n + w];
        if ch == 3 {
            for ((px, o), &pv) in xr.chunks_exact(3).zip(dr.chunks_exact_mut(3)).zip(pr) {
                let add = k * pv;
                o[0] = put((get(px[0]) * scale + add).clamp(0.0, 255.0));
                o[1] = put((get(px[1]) * scale + add).clamp(0.0, 255.0));
                o[2] = put((get(px[2]) * scale + add).clamp(0.0, 255.0));
            }
        } else {
            for ((px, o), &pv) in xr.chunks_exact(ch).zip(dr.chunks_exact_mut(ch)).zip(pr) {
                let add = k * pv;
                for (o, &v) in o.iter_mut().zip(px) {
                    *o = put((get(v) * scale + add).clamp(0.0, 255.0));
                }
            }
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The map as first written (every index wrapped through a closure): the hoisted loops
    /// must give the same values from the same draws.
    #[allow(clippy::all)]
    fn plasma_reference(n: usize, decay: f64, rng: &mut Fast) -> Vec<f64> {
        assert!(n.is_power_of_two());
        let mut m = vec![0.0f64; n * n];
        let mut step = n;
        let mut wib = 100.0f64;
        let mask = n - 1;
        let at = |r: usize, c: usize| (r & mask) * n + (c & mask);
        while step >= 2 {
            let hs = step / 2;
            let g = n / step;
            // fillsquares: centre = mean of the 4 corners.
            for a in 0..g {
                for b in 0..g {
                    let (r, c) = (a * step, b * step);
                    let s = m[at(r, c)] + m[at(r + step, c)] + m[at(r, c + step)] + m[at(r + step, c + step)];
                    m[at(r + hs, c + hs)] = s / 4.0 + wib * rng.range(-wib, wib);
                }
            }
            // filldiamonds, first the points between horizontally adjacent corners…
            for a in 0..g {
                for b in 0..g {
                    let (r, c) = (a * step, b * step);
                    let s = m[at(r + hs, c + hs)] + m[at(r + n - hs, c + hs)] + m[at(r, c)] + m[at(r, c + step)];
                    m[at(r, c + hs)] = s / 4.0 + wib * rng.range(-wib, wib);
                }
            }
            // …then between vertically adjacent ones.
            for a in 0..g {
                for b in 0..g {
                    let (r, c) = (a * step, b * step);
                    let s = m[at(r + hs, c + hs)] + m[at(r + hs, c + n - hs)] + m[at(r, c)] + m[at(r + step, c)];
                    m[at(r + hs, c)] = s / 4.0 + wib * rng.range(-wib, wib);
                }
            }
            step /= 2;
            wib /= decay;
        }
        normalise01(&mut m);
        m
    }

    #[test]
    fn plasma_matches_plain_loops() {
        for (n, d) in [(32, 3.0), (64, 1.75), (256, 1.4), (2, 2.0)] {
            let mut a = Fast::from_rng(&mut crate::Rng::seed_from_u64(n as u64));
            let mut b = Fast::from_rng(&mut crate::Rng::seed_from_u64(n as u64));
            assert!(plasma_fractal(n, d, &mut a) == plasma_reference(n, d, &mut b), "n={n}");
        }
    }
}
