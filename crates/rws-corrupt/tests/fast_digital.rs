//! The uint8 paths of the digital corruptions (vectorised where the CPU allows) against the
//! float path and the reference's cast, byte for byte, on inputs chosen to reach every branch:
//! a grid through the whole RGB cube (greys, ties between channels, every hue sector, the
//! clipping edges), at widths that leave a scalar tail.
use rws_corrupt::{corrupt_float, corrupt_u8, to_u8, Corruption, FImage, ParamSet, Rng};
use rand::SeedableRng;

/// Every colour whose channels are multiples of `step` (0 and 255 included when 255 % step == 0),
/// laid out as an image `w` pixels wide (the last row padded with black).
fn cube(step: usize, w: usize) -> (Vec<u8>, usize) {
    let mut v = Vec::new();
    for r in (0..256).step_by(step) {
        for g in (0..256).step_by(step) {
            for b in (0..256).step_by(step) {
                v.extend([r as u8, g as u8, b as u8]);
            }
        }
    }
    let h = (v.len() / 3).div_ceil(w);
    v.resize(h * w * 3, 0);
    (v, h)
}

fn same_as_float_path(img: &[u8], h: usize, w: usize, c: usize, cor: Corruption, sev: usize, p: ParamSet) {
    let fast = corrupt_u8(img, h, w, c, cor, sev, p, &mut Rng::seed_from_u64(0)).unwrap();
    let x = FImage::from_u8(img, h, w, c).unwrap();
    let slow = to_u8(&corrupt_float(&x, cor, sev, p, &mut Rng::seed_from_u64(0)).unwrap());
    if let Some(i) = fast.iter().zip(&slow).position(|(a, b)| a != b) {
        let px = i / c * c;
        panic!(
            "{} s{sev} {p:?} {h}x{w}x{c}: byte {i} differs: input {:?}, uint8 path {:?}, float path {:?}",
            cor.name(),
            &img[px..px + c],
            &fast[px..px + c],
            &slow[px..px + c]
        );
    }
}

#[test]
fn hsv_edits_match_the_float_path_over_the_rgb_cube() {
    // 52³ colours, 1001 pixels a row (not a multiple of the 4-pixel vector step).
    let (img, h) = cube(5, 1001);
    for cor in [Corruption::Brightness, Corruption::Saturate] {
        for p in [ParamSet::Cifar10, ParamSet::TinyImageNet, ParamSet::ImageNet] {
            for sev in 1..=5 {
                same_as_float_path(&img, h, 1001, 3, cor, sev, p);
            }
        }
    }
}

#[test]
fn hsv_edits_match_the_float_path_on_tiny_images() {
    // Images shorter than one vector step run only the scalar tail.
    let (img, _) = cube(51, 1);
    for n in 1..=6 {
        for cor in [Corruption::Brightness, Corruption::Saturate] {
            for sev in [1, 5] {
                same_as_float_path(&img[..n * 3], 1, n, 3, cor, sev, ParamSet::ImageNet);
            }
        }
    }
}
