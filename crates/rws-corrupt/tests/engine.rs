//! Engine-level promises: every corruption on RGB and grey images of several sizes, batch output
//! independent of thread count, errors for bad arguments.
use rand::SeedableRng;
use rws_corrupt::{corrupt_batch, corrupt_float, corrupt_u8, image_rng, Corruption, Error, FImage, ParamSet, Rng};

fn picture(h: usize, w: usize, c: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..h * w * c)
        .map(|i| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let y = (i / (w * c)) as u64;
            ((y * 7 + (s >> 59)) % 256) as u8
        })
        .collect()
}

#[test]
fn every_corruption_on_rgb_and_grey() {
    for (p, side) in [(ParamSet::Cifar10, 32), (ParamSet::TinyImageNet, 64), (ParamSet::ImageNet, 96)] {
        for c in [1, 3] {
            let img = picture(side, side, c, 3);
            for &cor in Corruption::ALL {
                for sev in [1, 3, 5] {
                    let mut rng = Rng::seed_from_u64(1);
                    let out = corrupt_u8(&img, side, side, c, cor, sev, p, &mut rng).unwrap_or_else(|e| panic!("{} {p:?} c={c} s{sev}: {e}", cor.name()));
                    assert_eq!(out.len(), img.len(), "{}", cor.name());
                    // saturate leaves grey alone where its offset b is 0 (see grey test below).
                    if !(cor == Corruption::Saturate && c == 1) {
                        assert_ne!(out, img, "{} {p:?} c={c} s{sev} changed nothing", cor.name());
                    }
                }
            }
        }
    }
}

/// Colour-only edits on grey images: brightness lifts grey levels, saturate with b = 0 keeps
/// them, and a grey image stored as three equal channels gives the same grey result.
#[test]
fn grey_matches_equal_channel_rgb() {
    let g = picture(32, 32, 1, 5);
    let rgb: Vec<u8> = g.iter().flat_map(|&v| [v, v, v]).collect();
    for name in ["brightness", "contrast", "gaussian_blur", "defocus_blur", "zoom_blur", "pixelate", "jpeg_compression", "saturate"] {
        let cor: Corruption = name.parse().unwrap();
        for sev in 1..=3 {
            let a = corrupt_u8(&g, 32, 32, 1, cor, sev, ParamSet::Cifar10, &mut Rng::seed_from_u64(0)).unwrap();
            let b = corrupt_u8(&rgb, 32, 32, 3, cor, sev, ParamSet::Cifar10, &mut Rng::seed_from_u64(0)).unwrap();
            let b0: Vec<u8> = b.chunks_exact(3).map(|p| p[0]).collect();
            let close = a.iter().zip(&b0).filter(|(x, y)| (**x as i32 - **y as i32).abs() <= 1).count();
            assert!(close as f64 >= 0.99 * a.len() as f64, "{name} s{sev}: grey differs from equal-channel RGB");
        }
    }
    let s1 = corrupt_u8(&g, 32, 32, 1, Corruption::Saturate, 1, ParamSet::Cifar10, &mut Rng::seed_from_u64(0)).unwrap();
    assert_eq!(s1, g, "saturate with b = 0 must leave grey unchanged");
}

#[test]
fn batch_is_independent_of_thread_count_and_order() {
    let (n, h, w, c) = (12, 32, 32, 3);
    let imgs: Vec<u8> = (0..n).flat_map(|i| picture(h, w, c, i as u64)).collect();
    let before = imgs.clone();
    for cor in [Corruption::GaussianNoise, Corruption::MotionBlur, Corruption::Snow, Corruption::Frost, Corruption::GlassBlur] {
        let run = |threads| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| corrupt_batch(&imgs, n, h, w, c, cor, 4, ParamSet::Cifar10, 77).unwrap())
        };
        let one = run(1);
        let four = run(4);
        assert_eq!(one, four, "{}: thread count changed the bytes", cor.name());
        // Image 5 alone, with its own RNG, gives the same bytes as inside the batch.
        let sz = h * w * c;
        let solo = corrupt_u8(&imgs[5 * sz..6 * sz], h, w, c, cor, 4, ParamSet::Cifar10, &mut image_rng(77, cor, 4, 5)).unwrap();
        assert_eq!(solo, one[5 * sz..6 * sz]);
        let other_seed = corrupt_batch(&imgs, n, h, w, c, cor, 4, ParamSet::Cifar10, 78).unwrap();
        assert_ne!(one, other_seed, "{}: seed ignored", cor.name());
    }
    assert_eq!(imgs, before, "input modified");
}

#[test]
fn bad_arguments_are_refused() {
    let img = picture(32, 32, 3, 1);
    let mut rng = Rng::seed_from_u64(0);
    assert!(matches!(corrupt_u8(&img, 32, 32, 3, Corruption::Contrast, 0, ParamSet::Cifar10, &mut rng), Err(Error::Severity(0))));
    assert!(matches!(corrupt_u8(&img, 32, 32, 3, Corruption::Contrast, 6, ParamSet::Cifar10, &mut rng), Err(Error::Severity(6))));
    let e = "fuzz".parse::<Corruption>().unwrap_err().to_string();
    assert!(e.contains("fuzz") && e.contains("gaussian_noise") && e.contains("jpeg_compression"), "{e}");
    assert!("imagenet21k".parse::<ParamSet>().is_err());
    assert!(corrupt_u8(&img[1..], 32, 32, 3, Corruption::Contrast, 1, ParamSet::Cifar10, &mut rng).is_err());
    assert!(corrupt_u8(&img, 32, 16, 6, Corruption::Contrast, 1, ParamSet::Cifar10, &mut rng).is_err());
    assert!(corrupt_batch(&img, 2, 32, 32, 3, Corruption::Contrast, 1, ParamSet::Cifar10, 0).is_err());
    // pixelate at ImageNet severity 5 (×0.25) needs at least 4 pixels per side.
    let tiny = picture(3, 3, 3, 1);
    let e = corrupt_u8(&tiny, 3, 3, 3, Corruption::Pixelate, 5, ParamSet::ImageNet, &mut rng);
    assert!(matches!(e, Err(Error::TooSmall { .. })), "{e:?}");
    let x = FImage { h: 0, w: 5, c: 3, data: vec![] };
    assert!(matches!(corrupt_float(&x, Corruption::GaussianBlur, 1, ParamSet::Cifar10, &mut rng), Err(Error::TooSmall { .. })));
}

/// Severity is monotone for the deterministic corruptions on average (a sanity check of tables).
#[test]
fn deterministic_severity_order() {
    let img = picture(32, 32, 3, 9);
    for name in ["gaussian_blur", "defocus_blur", "zoom_blur", "contrast", "pixelate", "jpeg_compression", "brightness"] {
        let cor: Corruption = name.parse().unwrap();
        let d: Vec<f64> = (1..=5)
            .map(|s| {
                let o = corrupt_u8(&img, 32, 32, 3, cor, s, ParamSet::Cifar10, &mut Rng::seed_from_u64(0)).unwrap();
                o.iter().zip(&img).map(|(a, b)| (*a as f64 - *b as f64).abs()).sum::<f64>()
            })
            .collect();
        assert!(d[4] > d[0], "{name}: severity 5 ({}) not stronger than 1 ({})", d[4], d[0]);
    }
}
