//! The random corruptions cannot match the reference bit for bit (it draws from numpy's MT19937,
//! we from ChaCha8), so they are held to the reference's *statistics*: over the same 200+200
//! images (tests/data, see make_inputs.py), the mean |Δ| and mean PSNR per severity must lie
//! within 10 % of fixtures/stats.json (copied to tests/data/stats_ref.tsv), CIFAR-10-C parameters.
//!
//! frost is checked in whichever mode the environment selects: procedural textures by default,
//! the reference textures when `RWS_FROST_DIR` names their folder (run the test both ways).

use rayon::prelude::*;
use rand::SeedableRng;
use rws_corrupt::{corrupt_float, to_u8, Corruption, Error, FImage, ParamSet, Rng};
use std::collections::HashMap;
use std::path::PathBuf;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Minimal reader for the uint8 C-order .npy fixtures; returns (shape, bytes).
fn read_npy_u8(name: &str) -> (Vec<usize>, Vec<u8>) {
    let b = std::fs::read(data_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&b[..6], b"\x93NUMPY", "{name}: not npy");
    let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
    let hdr = std::str::from_utf8(&b[10..10 + hl]).unwrap();
    assert!(hdr.contains("|u1"), "{name}: not uint8");
    let sh = hdr.split('(').nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = sh.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse().unwrap()).collect();
    (shape, b[10 + hl..].to_vec())
}

/// fmnist200 (28×28 grey → 3 channels, zero-padded to 32×32) and synth200, as the fixtures README.
fn inputs() -> Vec<(&'static str, Vec<Vec<u8>>)> {
    let (s, fm) = read_npy_u8("fmnist200.npy");
    assert_eq!(s, [200, 28, 28]);
    let fmn = (0..200)
        .map(|i| {
            let mut img = vec![0u8; 32 * 32 * 3];
            for y in 0..28 {
                for x in 0..28 {
                    let v = fm[i * 784 + y * 28 + x];
                    img[((y + 2) * 32 + x + 2) * 3..][..3].fill(v);
                }
            }
            img
        })
        .collect();
    let (s, sy) = read_npy_u8("synth200.npy");
    assert_eq!(s, [200, 32, 32, 3]);
    let syn = sy.chunks(3072).map(|c| c.to_vec()).collect();
    vec![("fmnist200", fmn), ("synth200", syn)]
}

fn reference() -> HashMap<(String, usize, String), (f64, f64)> {
    let txt = std::fs::read_to_string(data_dir().join("stats_ref.tsv")).unwrap();
    txt.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            ((f[0].to_string(), f[1].parse().unwrap(), f[2].to_string()), (f[3].parse().unwrap(), f[4].parse().unwrap()))
        })
        .collect()
}

/// (mad_mean, psnr_mean over finite values) of one corruption/severity over one image set; each
/// combination has its own seed so results do not depend on scheduling.
fn measure(c: Corruption, sev: usize, set_idx: usize, imgs: &[Vec<u8>]) -> Result<(f64, f64), Error> {
    let mut rng = Rng::seed_from_u64(12345 + 1000 * sev as u64 + 100_000 * set_idx as u64 + 7 * c as u64);
    let (mut mad_sum, mut psnr_sum, mut n_psnr) = (0.0, 0.0, 0usize);
    for img in imgs {
        let x = FImage { h: 32, w: 32, c: 3, data: img.iter().map(|&v| v as f64).collect() };
        let y = to_u8(&corrupt_float(&x, c, sev, ParamSet::Cifar10, &mut rng)?);
        assert_eq!(y.len(), img.len());
        let (mut ad, mut sq) = (0.0, 0.0);
        for (&a, &b) in y.iter().zip(img) {
            let d = a as f64 - b as f64;
            ad += d.abs();
            sq += d * d;
        }
        mad_sum += ad / img.len() as f64;
        let mse = sq / img.len() as f64;
        if mse > 0.0 {
            psnr_sum += 10.0 * (255.0f64 * 255.0 / mse).log10();
            n_psnr += 1;
        }
    }
    Ok((mad_sum / imgs.len() as f64, psnr_sum / n_psnr.max(1) as f64))
}

#[test]
fn random_corruptions_match_reference_statistics() {
    let sets = inputs();
    let refs = reference();
    let names = [
        "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "frost", "fog", "spatter",
        "elastic_transform", "motion_blur", "snow",
    ];
    let jobs: Vec<(Corruption, usize, usize)> = names
        .iter()
        .flat_map(|n| {
            let c: Corruption = n.parse().unwrap();
            (1..=5).flat_map(move |s| (0..2).map(move |k| (c, s, k)))
        })
        .collect();
    let results: Vec<_> = jobs.par_iter().map(|&(c, s, k)| ((c, s, k), measure(c, s, k, &sets[k].1))).collect();
    let frost_mode = std::env::var("RWS_FROST_DIR").map(|d| format!("textures from {d}")).unwrap_or_else(|_| "procedural".into());
    let mut failures = Vec::new();
    let mut skipped = std::collections::BTreeSet::new();
    println!("corruption          sev set        mad(ours/ref)     psnr(ours/ref)   [frost: {frost_mode}]");
    for ((c, s, k), r) in results {
        let set = sets[k].0;
        match r {
            Err(e) => {
                skipped.insert(format!("{}: {e}", c.name()));
            }
            Ok((mad, psnr)) => {
                let (rm, rp) = refs[&(c.name().to_string(), s, set.to_string())];
                let ok = (mad / rm - 1.0).abs() <= 0.10 && (psnr / rp - 1.0).abs() <= 0.10;
                println!("{:<19} {s}  {set:<10} {mad:7.3}/{rm:7.3}   {psnr:6.2}/{rp:6.2} {}", c.name(), if ok { "" } else { "  <-- off" });
                if !ok {
                    failures.push(format!("{} s{s} {set}: mad {mad:.3} vs {rm:.3}, psnr {psnr:.2} vs {rp:.2}", c.name()));
                }
            }
        }
    }
    for s in &skipped {
        println!("NOTICE: skipped (returns an error): {s}");
    }
    // Every corruption this crate owns for part B must run; only part A's may still be missing.
    for s in &skipped {
        assert!(s.starts_with("motion_blur") || s.starts_with("snow"), "corruption failed: {s}");
    }
    assert!(failures.is_empty(), "outside 10 % of the reference:\n{}", failures.join("\n"));
}
