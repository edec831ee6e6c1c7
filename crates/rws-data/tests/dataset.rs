//! Dataset operations, the spec language and the batch iterator.
use rws_data::*;

fn ds(n: usize, h: usize, w: usize, c: usize, k: usize) -> Dataset {
    let images = (0..n * h * w * c).map(|i| (i % 251) as u8).collect();
    Dataset::new("toy", images, (0..n).map(|i| (i % k) as u16).collect(), h, w, c, k).unwrap()
}

#[test]
fn new_rejects_inconsistent_sizes() {
    assert!(Dataset::new("x", vec![0; 10], vec![0, 0], 2, 2, 1, 1).unwrap_err().to_string().contains("10 image bytes"));
    assert!(Dataset::new("x", vec![0; 8], vec![0, 3], 2, 2, 1, 3).unwrap_err().to_string().contains("label 3"));
}

#[test]
fn subsets_ranges_limits() {
    let d = ds(20, 2, 2, 1, 5);
    let s = d.subset_classes(&[3, 1]).unwrap();
    assert_eq!(s.num_classes, 2);
    assert_eq!(s.len(), 8);
    for i in 0..s.len() {
        // relabelled in the given order: 3 → 0, 1 → 1; images follow their labels
        let orig = (0..d.len()).find(|&j| d.image(j) == s.image(i)).unwrap();
        assert_eq!(s.label(i), if d.label(orig) == 3 { 0 } else { 1 });
        assert!(d.label(orig) == 3 || d.label(orig) == 1);
    }
    assert!(d.subset_classes(&[5]).is_err());
    assert!(d.subset_classes(&[1, 1]).is_err());
    let r = d.range(5..9).unwrap();
    assert_eq!(r.len(), 4);
    assert_eq!(r.image(0), d.image(5));
    assert_eq!(r.labels, d.labels[5..9]);
    assert!(d.range(5..21).is_err());
    assert_eq!(d.limit(3).len(), 3);
    assert_eq!(d.limit(100).len(), 20);
    let (a, b) = d.split_at(15).unwrap();
    assert_eq!((a.len(), b.len()), (15, 5));
    assert_eq!(b.image(0), d.image(15));
    assert_eq!(d.class_counts(), vec![4; 5]);
}

#[test]
fn spec_parsing() {
    let s = DataSpec::parse("fashion-mnist:test@classes=0-2,7@range=10-@limit=5").unwrap();
    assert_eq!(s.source, Source::FashionMnist { split: Split::Test });
    assert_eq!(s.modifiers, vec![Modifier::Classes(vec![0, 1, 2, 7]), Modifier::Range(10, None), Modifier::Limit(5)]);
    assert_eq!(DataSpec::parse("fashion-mnist").unwrap().source, Source::FashionMnist { split: Split::Train });
    assert_eq!(
        DataSpec::parse("cifar-c:/d/x:gaussian_noise:3").unwrap().source,
        Source::CifarC { dir: "/d/x".into(), corruption: "gaussian_noise".into(), severity: 3 }
    );
    assert_eq!(
        DataSpec::parse("npy:/a/b.npy:/a/l.npy").unwrap().source,
        Source::Npy { images: "/a/b.npy".into(), labels: Some("/a/l.npy".into()) }
    );
    assert_eq!(
        DataSpec::parse("tinyimagenet:/t:val").unwrap().source,
        Source::TinyImageNet { dir: "/t".into(), split: Split::Test }
    );
    let tr = DataSpec::parse("cifar10:/c@range=30000-60000").unwrap();
    assert_eq!(tr.modifiers, vec![Modifier::Range(30000, Some(60000))]);
    assert_eq!(tr.with_split(Split::Test).source, Source::Cifar10 { dir: "/c".into(), split: Split::Test });
    for bad in [
        "",
        "imagenet:/x",
        "mnist",
        "mnist:/x:dev",
        "cifar10:/x:train:extra",
        "fashion-mnist@limit=",
        "fashion-mnist@limit=-3",
        "fashion-mnist@classes=4-2",
        "fashion-mnist@range=9-3",
        "fashion-mnist@frobnicate=1",
        "fashion-mnist@coarse",
        "cifar-c:/d:fog",
        "cifar-c:/d:fog:0",
    ] {
        let e = DataSpec::parse(bad);
        assert!(e.is_err(), "`{bad}` should not parse");
        assert!(e.unwrap_err().to_string().contains("dataset spec"));
    }
}

#[test]
fn modifiers_apply_in_order() {
    let t = tempfile::tempdir().unwrap();
    let d = ds(30, 2, 2, 1, 10);
    write_npy_u8(&t.path().join("x.npy"), &[30, 2, 2], &d.images).unwrap();
    write_npy_i64(&t.path().join("labels.npy"), &d.labels.iter().map(|&l| l as i64).collect::<Vec<_>>()).unwrap();
    let p = t.path().join("x.npy").display().to_string();
    let a = load_spec(&format!("npy:{p}@classes=4,2@limit=3")).unwrap();
    assert_eq!(a.labels, vec![1, 0, 1]); // labels 2, 4, 12→2 ... relabelled: 4→0, 2→1
    assert_eq!(a.image(0), d.image(2));
    let b = load_spec(&format!("npy:{p}@range=10-20@classes=0")).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.image(0), d.image(10));
    assert!(load_spec(&format!("npy:{p}@range=10-40")).unwrap_err().to_string().contains("outside"));
}

#[test]
fn batches_cover_epoch_and_convert() {
    let d = ds(10, 3, 4, 2, 3);
    let bs: Vec<Batch> = d.eval_batches(4).collect();
    assert_eq!(bs.iter().map(|b| b.n).collect::<Vec<_>>(), vec![4, 4, 2]);
    assert_eq!(d.eval_batches(4).num_batches(), 3);
    let b = &bs[1];
    assert_eq!(b.indices, vec![4, 5, 6, 7]);
    assert_eq!(b.images.len(), 4 * 2 * 3 * 4);
    // NCHW: batch image 1 (= sample 5), channel 1, y 2, x 3
    let v = b.images[24 + 12 + 2 * 4 + 3];
    assert_eq!(v, d.image(5)[(2 * 4 + 3) * 2 + 1] as f32 / 255.0);
    assert_eq!(b.labels, vec![1, 2, 0, 1]);
    // shuffled epochs are permutations, differ between epochs, and drop_last drops
    let cfg = BatchConfig { drop_last: true, ..BatchConfig::train(4, 7, 0, false) };
    let e0: Vec<usize> = d.batches(&cfg, 0).flat_map(|b| b.indices).collect();
    let e1: Vec<usize> = d.batches(&cfg, 1).flat_map(|b| b.indices).collect();
    assert_eq!(e0.len(), 8);
    assert_ne!(e0, e1);
    let mut all: Vec<usize> = d.batches(&BatchConfig::train(4, 7, 0, false), 0).flat_map(|b| b.indices).collect();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<_>>());
}

#[test]
fn augmentation_is_a_padded_crop_or_flip_of_the_image() {
    let (h, w) = (5, 6);
    let d = ds(40, h, w, 1, 2);
    let pad = 2;
    let cfg = BatchConfig::train(40, 3, pad, true);
    let b = d.batches(&cfg, 0).next().unwrap();
    let mut flips = 0;
    let mut shifts = std::collections::HashSet::new();
    for j in 0..b.n {
        let img = d.image(b.indices[j]);
        let out = &b.images[j * h * w..(j + 1) * h * w];
        // find the (dy, dx, flip) that explains the output exactly
        let mut found = None;
        'search: for flip in [false, true] {
            for dy in -(pad as isize)..=pad as isize {
                for dx in -(pad as isize)..=pad as isize {
                    let ok = (0..h).all(|y| {
                        (0..w).all(|x| {
                            let xs = if flip { w - 1 - x } else { x } as isize + dx;
                            let ys = y as isize + dy;
                            let want = if ys < 0 || xs < 0 || ys >= h as isize || xs >= w as isize {
                                0.0
                            } else {
                                img[ys as usize * w + xs as usize] as f32 / 255.0
                            };
                            out[y * w + x] == want
                        })
                    });
                    if ok {
                        found = Some((dy, dx, flip));
                        break 'search;
                    }
                }
            }
        }
        let (dy, dx, flip) = found.expect("output is a padded crop (maybe flipped) of its source");
        flips += flip as usize;
        shifts.insert((dy, dx));
    }
    assert!(flips > 5 && flips < 35, "flip rate looks wrong: {flips}/40");
    assert!(shifts.len() > 8, "crop offsets barely vary: {shifts:?}");
}

#[test]
fn batches_reproducible_whatever_the_thread_count() {
    let d = ds(300, 8, 8, 3, 10);
    let cfg = BatchConfig::train(64, 42, 4, true);
    let noise: Transform = std::sync::Arc::new(|img: &mut [u8], seed: u64| {
        for (i, p) in img.iter_mut().enumerate() {
            *p = p.wrapping_add(((seed >> (i % 56)) & 7) as u8);
        }
    });
    let run = |threads: usize| -> Vec<Batch> {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| d.batches(&cfg, 3).with_transform(noise.clone()).collect())
    };
    let one = run(1);
    assert_eq!(one, run(4));
    assert_eq!(one, run(2));
    // a different seed gives a different stream
    let other: Vec<Batch> = d.batches(&BatchConfig::train(64, 43, 4, true), 3).collect();
    assert_ne!(one[0].indices, other[0].indices);
    // the transform ran: without it, pixel values differ
    let plain: Vec<Batch> = d.batches(&cfg, 3).collect();
    assert_eq!(one[0].indices, plain[0].indices);
    assert_ne!(one[0].images, plain[0].images);
}
