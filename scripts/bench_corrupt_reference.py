#!/usr/bin/env python3
"""Python side of the corruption timing comparison (docs/BENCHMARKS.md, "Corruption engine").

Times imagecorruptions 1.1.2 `corrupt()` single-threaded at 224x224x3 and 32x32x3 (ImageNet
parameters, as the package has no others), severities 3 and 5, median ms per image over N
distinct images after 2 warm-up calls; the same synthetic picture recipe as the Rust bench
(crates/rws-corrupt/benches/corrupt.rs). Run it right after the Rust bench on the same machine so
both see the same load:

    pip install imagecorruptions "setuptools<81"
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 python3 scripts/bench_corrupt_reference.py [N]

With BENCH_DUMP=DIR set (for both commands), it times the images the Rust bench wrote to DIR.
"""
import os
import sys
import time
import warnings

for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

try:
    import cv2  # noqa: E402

    cv2.setNumThreads(1)
except ImportError:
    pass
import imagecorruptions.corruptions as _ic  # noqa: E402
from imagecorruptions import corrupt, get_corruption_names  # noqa: E402

# Compatibility shims for scikit-image >= 0.20 / numpy 2 (the same ones TIMING.md's "modern"
# column used): gaussian(multichannel=True) -> channel_axis=-1.
_gauss = _ic.gaussian


def _gaussian_compat(*a, multichannel=None, **k):
    if multichannel:
        k.setdefault("channel_axis", -1)
    return _gauss(*a, **k)


_ic.gaussian = _gaussian_compat
if not hasattr(np, "float_"):
    np.float_ = np.float64


def picture(side, k):
    """Smooth shapes plus a little noise, a different tint per image (as the Rust bench)."""
    y, x = np.mgrid[0:side, 0:side] / side
    base = 128 + 90 * (np.sin(x * 6 + k) * np.cos(y * 4))
    rs = np.random.RandomState(k)
    ch = np.stack([base * (0.7 + 0.15 * c + 0.05 * (k % 3)) for c in range(3)], -1)
    return np.clip(ch + rs.randint(-8, 9, size=ch.shape), 0, 255).astype(np.uint8)


def time_ms(name, sev, imgs, reps):
    for im in imgs[:2]:
        corrupt(im, corruption_name=name, severity=sev)
    per = []
    for im in imgs:
        t = time.perf_counter()
        for _ in range(reps):
            corrupt(im, corruption_name=name, severity=sev)
        per.append((time.perf_counter() - t) * 1e3 / reps)
    return float(np.median(per))


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    np.random.seed(0)
    i32 = [picture(32, k) for k in range(n)]
    i224 = [picture(224, k) for k in range(n)]
    # BENCH_DUMP=DIR: the Rust bench's own inputs (written by `BENCH_DUMP=DIR cargo bench -p
    # rws-corrupt --bench corrupt`), so both sides time the very same images.
    dump = os.environ.get("BENCH_DUMP")
    if dump:
        i32 = list(np.load(os.path.join(dump, "bench32.npy"))[:n])
        i224 = list(np.load(os.path.join(dump, "bench224.npy"))[:n])
        print(f"images: {dump}/bench{{32,224}}.npy ({len(i224)} per size)")
    print("| corruption | sev | imagecorruptions 32 (ms) | imagecorruptions 224 (ms) |")
    print("|---|---|---|---|")
    only = sys.argv[2:]  # optional corruption names
    for name in get_corruption_names("all"):
        if only and name not in only:
            continue
        for sev in (3, 5):
            reps224 = 1 if name == "glass_blur" else 3
            t32 = time_ms(name, sev, i32, 20)
            t224 = time_ms(name, sev, i224[: (3 if name == "glass_blur" else n)], reps224)
            print(f"| {name} | {sev} | {t32:.4f} | {t224:.3f} |", flush=True)


if __name__ == "__main__":
    main()
