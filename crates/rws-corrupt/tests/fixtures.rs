//! Deterministic corruptions against the reference generator's outputs (shared/corruptions/fixtures,
//! CIFAR-10-C parameters, 16 images of 32×32×3). Float fixtures: max |diff| ≤ 0.5 on 0..255;
//! uint8 fixtures: ≥ 99% of values within ±1. Skips with a notice when the fixtures are absent.
use rws_corrupt::{corrupt_float, corrupt_u8, motion_blur_at, to_u8, Corruption, FImage, ParamSet, Rng};
use std::path::PathBuf;

fn fixtures_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corruptions/fixtures");
    if d.join("inputs.npy").exists() {
        Some(d)
    } else {
        eprintln!("NOTICE: {} not found; fixture comparison skipped", d.display());
        None
    }
}

enum Arr {
    U8(Vec<u8>),
    F64(Vec<f64>),
}

/// Minimal .npy reader: C-order `|u1` or `<f8`; returns shape and data.
fn read_npy(p: &std::path::Path) -> (Vec<usize>, Arr) {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(&b[..6], b"\x93NUMPY", "{}: not an npy file", p.display());
    let (hlen, off) = if b[6] == 1 { (u16::from_le_bytes([b[8], b[9]]) as usize, 10) } else { (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12) };
    let header = std::str::from_utf8(&b[off..off + hlen]).unwrap();
    assert!(header.contains("'fortran_order': False"), "{}: Fortran order", p.display());
    let shape_s = &header[header.find("'shape': (").unwrap() + 10..];
    let shape: Vec<usize> = shape_s[..shape_s.find(')').unwrap()].split(',').filter_map(|t| t.trim().parse().ok()).collect();
    let body = &b[off + hlen..];
    let n: usize = shape.iter().product();
    if header.contains("'|u1'") {
        (shape, Arr::U8(body[..n].to_vec()))
    } else if header.contains("'<f8'") {
        (shape, Arr::F64(body.chunks_exact(8).take(n).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect()))
    } else {
        panic!("{}: unsupported dtype in {header}", p.display())
    }
}

fn u8s(a: Arr) -> Vec<u8> {
    match a {
        Arr::U8(v) => v,
        _ => panic!("expected uint8"),
    }
}

fn inputs(dir: &std::path::Path) -> Vec<FImage> {
    let (shape, a) = read_npy(&dir.join("inputs.npy"));
    let (h, w, c) = (shape[1], shape[2], shape[3]);
    let v = u8s(a);
    v.chunks_exact(h * w * c).map(|im| FImage::from_u8(im, h, w, c).unwrap()).collect()
}

fn rng() -> Rng {
    use rand::SeedableRng;
    Rng::seed_from_u64(0)
}

/// Returns (max |float diff| or NaN, fraction of uint8 values within ±1, fraction exact).
fn compare(dir: &std::path::Path, name: &str, s: usize, ours: &[FImage]) -> (f64, f64, f64) {
    let fl = dir.join(format!("{name}_s{s}_float.npy"));
    let maxdiff = if fl.exists() {
        let (_, a) = read_npy(&fl);
        let Arr::F64(r) = a else { panic!() };
        let o: Vec<f64> = ours.iter().flat_map(|x| x.data.iter().copied()).collect();
        assert_eq!(o.len(), r.len());
        o.iter().zip(&r).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    } else {
        f64::NAN
    };
    let (_, a) = read_npy(&dir.join(format!("{name}_s{s}.npy")));
    let r = u8s(a);
    let o: Vec<u8> = ours.iter().flat_map(to_u8).collect();
    assert_eq!(o.len(), r.len());
    let within = o.iter().zip(&r).filter(|(a, b)| (**a as i32 - **b as i32).abs() <= 1).count() as f64 / r.len() as f64;
    let exact = o.iter().zip(&r).filter(|(a, b)| a == b).count() as f64 / r.len() as f64;
    (maxdiff, within, exact)
}

fn check(name: &str) {
    let Some(dir) = fixtures_dir() else { return };
    let xs = inputs(&dir);
    let c: Corruption = name.parse().unwrap();
    for s in 1..=5 {
        let ours: Vec<FImage> = xs.iter().map(|x| corrupt_float(x, c, s, ParamSet::Cifar10, &mut rng()).unwrap()).collect();
        let (md, within, exact) = compare(&dir, name, s, &ours);
        println!("{name} s{s}: max float diff {md:.3e}, within ±1 {:.4}%, exact {:.4}%", within * 100.0, exact * 100.0);
        if md.is_nan() {
            assert!(within >= 0.99, "{name} s{s}: only {:.3}% of values within ±1", within * 100.0);
        } else {
            assert!(md <= 0.5, "{name} s{s}: max float diff {md}");
        }
        // The public uint8 path (corrupt_u8) has its own faster code for most corruptions: it must
        // agree with the reference's bytes as closely as the float path does.
        let (w8, e8) = compare_u8(&dir, name, s, &xs, c);
        println!("{name} s{s} uint8 path: within ±1 {:.4}%, exact {:.4}%", w8 * 100.0, e8 * 100.0);
        assert!(w8 >= within && e8 >= exact, "{name} s{s}: uint8 path within ±1 {w8}, exact {e8} vs float path {within}, {exact}");
    }
}

/// (within ±1, exact) of `corrupt_u8` against the uint8 fixture.
fn compare_u8(dir: &std::path::Path, name: &str, s: usize, xs: &[FImage], c: Corruption) -> (f64, f64) {
    let (_, a) = read_npy(&dir.join(format!("{name}_s{s}.npy")));
    let r = u8s(a);
    let o: Vec<u8> = xs
        .iter()
        .flat_map(|x| {
            let u: Vec<u8> = x.data.iter().map(|&v| v as u8).collect();
            corrupt_u8(&u, x.h, x.w, x.c, c, s, ParamSet::Cifar10, &mut rng()).unwrap()
        })
        .collect();
    assert_eq!(o.len(), r.len());
    let within = o.iter().zip(&r).filter(|(a, b)| (**a as i32 - **b as i32).abs() <= 1).count() as f64 / r.len() as f64;
    let exact = o.iter().zip(&r).filter(|(a, b)| a == b).count() as f64 / r.len() as f64;
    (within, exact)
}

#[test]
fn gaussian_blur_matches_reference() {
    check("gaussian_blur");
}
#[test]
fn defocus_blur_matches_reference() {
    check("defocus_blur");
}
#[test]
fn zoom_blur_matches_reference() {
    check("zoom_blur");
}
#[test]
fn brightness_matches_reference() {
    check("brightness");
}
#[test]
fn contrast_matches_reference() {
    check("contrast");
}
#[test]
fn saturate_matches_reference() {
    check("saturate");
}
#[test]
fn pixelate_matches_reference() {
    check("pixelate");
}

/// JPEG: we model libjpeg-turbo (Pillow ≥ 9), so the modern/ set must match; the primary set
/// (IJG libjpeg 9c) is compared on its grey images, where both libraries agree.
#[test]
fn jpeg_matches_libjpeg_turbo() {
    let Some(dir) = fixtures_dir() else { return };
    let xs = inputs(&dir);
    for s in 1..=5 {
        let ours: Vec<FImage> = xs.iter().map(|x| corrupt_float(x, Corruption::JpegCompression, s, ParamSet::Cifar10, &mut rng()).unwrap()).collect();
        let (_, within_m, exact_m) = compare(&dir.join("modern"), "jpeg_compression", s, &ours);
        let (_, within_p, exact_p) = compare(&dir, "jpeg_compression", s, &ours);
        println!(
            "jpeg s{s}: libjpeg-turbo (modern) within ±1 {:.3}% exact {:.3}%; IJG 9c (primary) within ±1 {:.3}% exact {:.3}%",
            within_m * 100.0,
            exact_m * 100.0,
            within_p * 100.0,
            exact_p * 100.0
        );
        assert!(within_m >= 0.99, "jpeg s{s} vs libjpeg-turbo: {:.3}% within ±1", within_m * 100.0);
        let (w8, e8) = compare_u8(&dir.join("modern"), "jpeg_compression", s, &xs, Corruption::JpegCompression);
        assert!(w8 >= within_m && e8 >= exact_m, "jpeg s{s}: uint8 path within ±1 {w8}, exact {e8}");
        // Fashion-MNIST images (first 8) are grey: IJG and turbo agree there.
        let (_, a) = read_npy(&dir.join(format!("jpeg_compression_s{s}.npy")));
        let r = u8s(a);
        let n = 8 * 32 * 32 * 3;
        let o: Vec<u8> = ours[..8].iter().flat_map(to_u8).collect();
        let w = o.iter().zip(&r[..n]).filter(|(a, b)| (**a as i32 - **b as i32).abs() <= 1).count() as f64 / n as f64;
        assert!(w >= 0.99, "jpeg s{s} grey images vs IJG 9c: {:.3}% within ±1", w * 100.0);
    }
}

#[test]
fn motion_blur_matches_imagemagick_at_given_angles() {
    let Some(dir) = fixtures_dir() else { return };
    let xs = inputs(&dir);
    let js = std::fs::read_to_string(dir.join("motion_blur_angles.json")).unwrap();
    for s in 1..=5 {
        let key = format!("\"s{s}\"");
        let at = js.find(&key).unwrap_or_else(|| panic!("no {key} in motion_blur_angles.json"));
        let rest = &js[at..];
        let list = &rest[rest.find('[').unwrap() + 1..rest.find(']').unwrap()];
        let angles: Vec<f64> = list.split(',').map(|t| t.trim().trim_matches('"').parse().unwrap()).collect();
        assert_eq!(angles.len(), xs.len());
        let ours: Vec<FImage> = xs.iter().zip(&angles).map(|(x, &a)| motion_blur_at(x, s, ParamSet::Cifar10, a).unwrap()).collect();
        let (_, within, exact) = compare(&dir, "motion_blur", s, &ours);
        println!("motion_blur s{s}: within ±1 {:.4}%, exact {:.4}%", within * 100.0, exact * 100.0);
        assert!(within >= 0.99, "motion_blur s{s}: {:.3}% within ±1", within * 100.0);
    }
}
