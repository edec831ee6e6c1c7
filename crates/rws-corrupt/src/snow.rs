//! snow: a zoomed, thresholded Gaussian snow layer smeared by ImageMagick's motion blur (native
//! model in blur.rs), added twice (as is and rotated 180°) to a whitened image.
use crate::blur::{clipped_zoom, motion_blur_kernel};
use crate::{Error, FImage, ParamSet, Result, Rng};
use rand::Rng as _;

pub(crate) fn snow(x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    let c32 = [
        (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95),
        (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8),
    ];
    let (mu, sd, z, t, r, s, b) = match p {
        ParamSet::Cifar10 => c32[severity - 1],
        ParamSet::TinyImageNet => {
            let v = c32[severity - 1];
            (v.0, v.1, v.2, v.3, v.4, v.5, [0.8, 0.8, 0.7, 0.65, 0.6][severity - 1])
        }
        ParamSet::ImageNet => [
            (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
            (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
            (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
            (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
            (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
        ][severity - 1],
    };
    let (h, w, c) = (x.h, x.w, x.c);
    if p != ParamSet::ImageNet && h != w {
        return Err(Error::Msg(format!("snow with {p:?} parameters needs a square image, got {h}x{w} (use --params imagenet)")));
    }
    let layer: Vec<f64> = crate::noise::normals(rng, h * w).into_iter().map(|z| mu + sd * z).collect();
    let layer = clipped_zoom(&layer, h, w, 1, z, p == ParamSet::ImageNet);
    let angle = rng.gen_range(-135.0..-45.0);
    let layer: Vec<f64> = layer.into_iter().map(|v| if v < t { 0.0 } else { v.clamp(0.0, 1.0) }).collect();
    // CIFAR/Tiny: the layer goes through an 8-bit grey PNG (truncated) into ImageMagick, whose
    // 8-bit output is rounded; imagecorruptions blurs the float layer and rounds to 1/255 steps.
    let layer = if p == ParamSet::ImageNet {
        FImage { h, w, c: 1, data: layer.into_iter().map(|v| v * 255.0).collect() }
    } else {
        // v·255 ≥ 0 here, where truncation is floor (and needs no libm call).
        FImage { h, w, c: 1, data: layer.into_iter().map(|v| ((v * 255.0) as i64) as f64).collect() }
    };
    let blurred = motion_blur_kernel(&layer, r, s, angle);
    let sl: Vec<f64> = blurred.data.iter().map(|&v| round_half_away(v).clamp(0.0, 255.0) / 255.0).collect();
    let mut out = vec![0.0; h * w * c];
    let (bf, b1) = (b as f32, 1.0 - b as f32);
    for (i, (o, src)) in out.chunks_exact_mut(c).zip(x.data.chunks_exact(c)).enumerate() {
        // float32 image as the reference; grey = OpenCV RGB2GRAY.
        let mut px = [0f32; 3];
        for (v, &s) in px.iter_mut().zip(src) {
            *v = (s / 255.0) as f32;
        }
        let grey = if c == 3 { px[0] * 0.299 + px[1] * 0.587 + px[2] * 0.114 } else { px[0] };
        let lift = grey * 1.5 + 0.5;
        let add = sl[i] + sl[h * w - 1 - i];
        for (o, &v) in o.iter_mut().zip(&px) {
            // v and lift are never NaN, so a plain comparison is `max`.
            let m = if v > lift { v } else { lift };
            let v = bf * v + b1 * m;
            *o = (v as f64 + add).clamp(0.0, 1.0) * 255.0;
        }
    }
    Ok(FImage { h, w, c, data: out })
}

/// `f64::round` (half away from zero) without the libm call the baseline x86-64 target makes:
/// exact, since x − trunc(x) is exact for |x| < 2⁵².
#[inline(always)]
fn round_half_away(x: f64) -> f64 {
    if x.abs() >= 4.0e15 || x.is_nan() {
        return x.round();
    }
    let t = (x as i64) as f64;
    let d = x - t;
    if d >= 0.5 {
        t + 1.0
    } else if d <= -0.5 {
        t - 1.0
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_half_away_is_round() {
        for x in [0.0, 0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999999994, 254.5, 254.49999999999997, -3.2, 7.7, 1e16, f64::NAN] {
            let (a, b) = (super::round_half_away(x), x.round());
            assert!(a == b || (a.is_nan() && b.is_nan()), "{x}: {a} vs {b}");
        }
    }
}
