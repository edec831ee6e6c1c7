//! AVX2 pieces shared by several vector kernels.
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m256i;

/// `vpmulhuw` (the high halves of the u16 × u16 products), written as asm: through the
/// intrinsic, which std::arch defines as a generic widening multiply, LLVM emits 32-bit-lane
/// multiplies, a pack and a permute for each one in the jpeg quantiser and the BOX resize
/// (about five times the instructions).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(crate) unsafe fn mulhi_u16(a: __m256i, b: __m256i) -> __m256i {
    let r;
    // SAFETY: one register-only AVX2 instruction; AVX2 is enabled in this function.
    unsafe { std::arch::asm!("vpmulhuw {r}, {a}, {b}", r = lateout(ymm_reg) r, a = in(ymm_reg) a, b = in(ymm_reg) b, options(pure, nomem, nostack, preserves_flags)) };
    r
}
