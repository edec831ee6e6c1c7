//! `corrupt_u8` runs its own uint8 code for many corruptions (src/fast.rs); the float path
//! (`corrupt_float`, then the reference's cast) is the faithful model checked against the
//! reference fixtures. Here both paths meet on every corruption, severity and parameter set,
//! including 224×224 ImageNet parameters, odd sizes and grey images, with the same seed.
mod common;

use rand::{Rng as _, SeedableRng};
use rws_corrupt::{corrupt_float, corrupt_u8, to_u8, Corruption, FImage, ParamSet, Rng};

fn picture(h: usize, w: usize, c: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let base = 128.0 + 100.0 * ((x as f64 * 0.13 + ch as f64 + seed as f64).sin() * (y as f64 * 0.09).cos());
                v.push((base + r.gen_range(-30.0..30.0)).clamp(0.0, 255.0) as u8);
            }
        }
    }
    v
}

/// Corruptions whose uint8 path uses the float path's exact arithmetic and random draws (the
/// gaussian, defocus and motion blurs up to 64×64 pixels: they keep its f64 operation order).
fn same_bytes(c: Corruption, h: usize, w: usize) -> bool {
    use Corruption::*;
    matches!(c, GaussianNoise | ShotNoise | ImpulseNoise | SpeckleNoise | Brightness | Saturate | Pixelate | JpegCompression | ZoomBlur | Fog)
        || (h * w <= 64 * 64 && matches!(c, GaussianBlur | DefocusBlur | MotionBlur))
}

#[test]
fn uint8_path_agrees_with_float_path() {
    let cases: &[(usize, usize, usize, ParamSet)] = &[
        (32, 32, 3, ParamSet::Cifar10),
        (28, 28, 1, ParamSet::Cifar10),
        (64, 64, 3, ParamSet::TinyImageNet),
        (224, 224, 3, ParamSet::ImageNet),
        (150, 97, 3, ParamSet::ImageNet),
        (131, 140, 1, ParamSet::ImageNet),
    ];
    for &(h, w, c, p) in cases {
        let img = picture(h, w, c, (h * w + c) as u64);
        let x = FImage::from_u8(&img, h, w, c).unwrap();
        for &cor in Corruption::ALL {
            for sev in 1..=5 {
                let fast = corrupt_u8(&img, h, w, c, cor, sev, p, &mut Rng::seed_from_u64(3)).unwrap();
                let slow = to_u8(&corrupt_float(&x, cor, sev, p, &mut Rng::seed_from_u64(3)).unwrap());
                let tag = format!("{} s{sev} {h}x{w}x{c} {p:?}", cor.name());
                common::assert_paths_agree(&fast, &slow, same_bytes(cor, h, w), &tag);
            }
        }
    }
}
