//! The uint8 paths of the weather and geometric corruptions (src/weather_u8.rs) against the float
//! path (`corrupt_float`, then the reference's cast) on the same seeds: CIFAR/Tiny/ImageNet
//! parameters, 32, 64 and 224 pixels, odd and non-square sizes, RGB and grey, every severity.
mod common;

use rand::{Rng as _, SeedableRng};
use rws_corrupt::{corrupt_float, corrupt_u8, to_u8, Corruption, FImage, ParamSet, Rng};

fn picture(h: usize, w: usize, c: usize, seed: u64) -> Vec<u8> {
    let mut r = Rng::seed_from_u64(seed);
    let mut v = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let base = 128.0 + 110.0 * ((x as f64 * 0.11 + ch as f64 + seed as f64).sin() * (y as f64 * 0.07).cos());
                v.push((base + r.gen_range(-40.0..40.0)).clamp(0.0, 255.0) as u8);
            }
        }
    }
    v
}

const CASES: &[(usize, usize, usize, ParamSet)] = &[
    (32, 32, 3, ParamSet::Cifar10),
    (32, 32, 1, ParamSet::Cifar10),
    (33, 33, 3, ParamSet::Cifar10),
    (64, 64, 3, ParamSet::TinyImageNet),
    (224, 224, 3, ParamSet::ImageNet),
    (224, 224, 1, ParamSet::ImageNet),
    (101, 77, 3, ParamSet::ImageNet),
    (45, 130, 1, ParamSet::ImageNet),
];

/// Both paths on every case and severity with a few seeds each; `exact`: the same bytes, else
/// ≥ 99.9% of values within ±1 and none off by more than 2.
fn agree(cor: Corruption, exact: bool) {
    for &(h, w, c, p) in CASES {
        let img = picture(h, w, c, (h * w + c) as u64);
        let x = FImage::from_u8(&img, h, w, c).unwrap();
        for sev in 1..=5 {
            for seed in [3, 11] {
                let fast = corrupt_u8(&img, h, w, c, cor, sev, p, &mut Rng::seed_from_u64(seed)).unwrap();
                let slow = to_u8(&corrupt_float(&x, cor, sev, p, &mut Rng::seed_from_u64(seed)).unwrap());
                let tag = format!("{} s{sev} {h}x{w}x{c} {p:?} seed {seed}", cor.name());
                common::assert_paths_agree(&fast, &slow, exact, &tag);
            }
        }
    }
}

/// The input buffer is never modified and the same seed gives the same bytes.
fn reproducible(cor: Corruption) {
    let (h, w, c) = (64, 64, 3);
    let img = picture(h, w, c, 5);
    let keep = img.clone();
    let a = corrupt_u8(&img, h, w, c, cor, 3, ParamSet::ImageNet, &mut Rng::seed_from_u64(9)).unwrap();
    let b = corrupt_u8(&img, h, w, c, cor, 3, ParamSet::ImageNet, &mut Rng::seed_from_u64(9)).unwrap();
    assert!(a == b && img == keep, "{}", cor.name());
    let d = corrupt_u8(&img, h, w, c, cor, 3, ParamSet::ImageNet, &mut Rng::seed_from_u64(10)).unwrap();
    assert!(a != d, "{}: another seed gives the same image", cor.name());
}

#[test]
fn snow_u8_is_the_float_path() {
    agree(Corruption::Snow, true);
    reproducible(Corruption::Snow);
}

#[test]
fn snow_u8_refuses_non_square_cifar_images() {
    let img = picture(32, 40, 3, 1);
    let e = corrupt_u8(&img, 32, 40, 3, Corruption::Snow, 2, ParamSet::Cifar10, &mut Rng::seed_from_u64(1)).unwrap_err().to_string();
    assert!(e.contains("square") && e.contains("32x40"), "{e}");
}

fn write_texture(path: &std::path::Path, h: usize, w: usize, seed: u64) {
    std::fs::write(path, rws_corrupt::io::npy_u8(&[h, w, 3], &picture(h, w, 3, seed))).unwrap();
}

/// Held by every test that runs frost: the texture folder is process-wide.
static FROST_DIR: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Procedural frost, then frost from a texture folder.
#[test]
fn frost_u8_is_the_float_path_procedural_and_with_textures() {
    let _g = FROST_DIR.lock().unwrap_or_else(|e| e.into_inner());
    agree(Corruption::Frost, true);
    reproducible(Corruption::Frost);
    let dir = std::env::temp_dir().join(format!("rws-fast-weather-frost-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for k in 1..=5 {
        write_texture(&dir.join(format!("frost{k}.npy")), 180 + 7 * k, 250 + 3 * k, k as u64);
    }
    rws_corrupt::set_frost_dir(Some(&dir)).unwrap();
    agree(Corruption::Frost, true);
    rws_corrupt::set_frost_dir(None).unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn elastic_u8_is_the_float_path() {
    agree(Corruption::ElasticTransform, true);
    reproducible(Corruption::ElasticTransform);
    let e = corrupt_u8(&[0; 2 * 5 * 3], 2, 5, 3, Corruption::ElasticTransform, 1, ParamSet::ImageNet, &mut Rng::seed_from_u64(1)).unwrap_err().to_string();
    assert!(e.contains("elastic_transform") && e.contains("2x5"), "{e}");
}

#[test]
fn spatter_u8_is_the_float_path() {
    agree(Corruption::Spatter, true);
    reproducible(Corruption::Spatter);
}

/// Tiny and thin images: the uint8 paths give the float path's bytes, or the same error.
#[test]
fn tiny_images_match_or_fail_alike() {
    let _g = FROST_DIR.lock().unwrap_or_else(|e| e.into_inner());
    for cor in [Corruption::Snow, Corruption::Frost, Corruption::Spatter, Corruption::ElasticTransform] {
        for (h, w) in [(1, 1), (2, 3), (3, 2), (1, 9), (9, 1), (5, 7), (3, 3)] {
            for c in [1, 3] {
                let img = picture(h, w, c, 7);
                let x = FImage::from_u8(&img, h, w, c).unwrap();
                for p in [ParamSet::Cifar10, ParamSet::ImageNet] {
                    for sev in [1, 5] {
                        let fast = corrupt_u8(&img, h, w, c, cor, sev, p, &mut Rng::seed_from_u64(2));
                        let slow = corrupt_float(&x, cor, sev, p, &mut Rng::seed_from_u64(2)).map(|y| to_u8(&y));
                        let tag = format!("{} s{sev} {h}x{w}x{c} {p:?}", cor.name());
                        match (fast, slow) {
                            (Ok(a), Ok(b)) => assert!(a == b, "{tag}: bytes differ"),
                            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{tag}"),
                            (a, b) => panic!("{tag}: uint8 path {:?}, float path {:?}", a.map(|_| ()), b.map(|_| ())),
                        }
                    }
                }
            }
        }
    }
}
