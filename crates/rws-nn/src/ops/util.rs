//! Slice access and scratch buffers shared by the custom ops.
use candle_core::{CpuStorage, Layout, Result};
use std::cell::RefCell;

/// The contiguous f32 data behind a storage/layout pair. The public wrappers make their inputs
/// contiguous first, so a strided layout here is a bug, reported instead of read wrongly.
pub(crate) fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("{what}: expected f32 data"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{what}: expected a contiguous tensor"),
    }
}

thread_local! {
    // One im2col/col2im buffer per worker thread, kept between calls: the column matrices are
    // the largest temporaries of a conv and re-allocating them per image is what made candle's
    // CPU path fault pages by the hundred million.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    // A second one for ops that need the conv output and its column matrix at once.
    static SCRATCH2: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// [`with_scratch`] on this thread's second buffer.
pub(crate) fn with_scratch2<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH2.with(|c| {
        let mut b = c.borrow_mut();
        if b.len() < n {
            b.resize(n, 0.0);
        }
        f(&mut b[..n])
    })
}

/// Run `f` with this thread's scratch buffer resized to `n` (contents unspecified).
pub(crate) fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|c| {
        let mut b = c.borrow_mut();
        if b.len() < n {
            b.resize(n, 0.0);
        }
        f(&mut b[..n])
    })
}

/// `c (m×n, row stride ldc) (+)= a (m×k) · b (k×n)` with explicit strides, single-threaded:
/// callers parallelise over fixed chunks so results never depend on the thread count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_f32(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                c[r * ldc..r * ldc + n].fill(0.0);
            }
        }
        return;
    }
    assert!(c.len() >= (m - 1) * ldc + n);
    assert!(a.len() > (m - 1) * a_rs + (k - 1) * a_cs);
    assert!(b.len() > (k - 1) * b_rs + (n - 1) * b_cs);
    // SAFETY: the asserts above bound every index gemm touches.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// An output buffer that the caller overwrites completely before anyone reads it: skips the
/// zero-fill pass (a full extra write of every activation) that `vec![0.0; n]` costs.
pub(crate) fn output_buf(n: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(n);
    // SAFETY: f32 has no invalid bit patterns and every caller writes all n values before the
    // buffer is read or returned.
    #[allow(clippy::uninit_vec)]
    unsafe {
        v.set_len(n)
    };
    v
}

/// Sum of `f(v)` over one contiguous run in LANES independent f32 accumulators (vectorisable,
/// unlike one serial chain), combined in a fixed order: the bytes depend only on the data.
/// Runs are one image's plane (≤ a few thousand values); callers add runs in f64.
#[inline(always)]
pub(crate) fn lanes_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let ch = v.chunks_exact(LANES);
    let tail = ch.remainder();
    for c in ch {
        for l in 0..LANES {
            acc[l] += f(c[l]);
        }
    }
    let mut t = 0f32;
    for &x in tail {
        t += f(x);
    }
    fold_lanes(acc) + t
}

pub(crate) const LANES: usize = 16;

#[inline(always)]
pub(crate) fn fold_lanes(a: [f32; LANES]) -> f32 {
    let mut w = a;
    let mut n = LANES / 2;
    while n > 0 {
        for l in 0..n {
            w[l] += w[l + n];
        }
        n /= 2;
    }
    w[0]
}


/// Σ a·(b − m) over two equal-length runs, in LANES accumulators as [`lanes_sum`].
#[inline(always)]
pub(crate) fn lanes_dot(a: &[f32], b: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += x[l] * (y[l] - m);
        }
    }
    let mut t = 0f32;
    for (x, y) in ta.iter().zip(tb) {
        t += x * (y - m);
    }
    fold_lanes(acc) + t
}
