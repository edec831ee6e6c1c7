//! uint8 → uint8 paths of the corruptions that the CLI and training call through [`crate::corrupt_u8`].
//!
//! The float path (HWC f64, 0..255) stays the faithful model of the reference and is what the
//! fixture tests check; these paths skip its whole-image f64 buffers (a 224×224×3 f64 image is
//! 1.2 MB: allocating, filling and casting it costs more than many corruptions themselves).
//! Noises, contrast, brightness, saturate, pixelate and jpeg use the same arithmetic and random
//! draws as the float path, so they return the same bytes as `to_u8(corrupt_float(..))`
//! (contrast: the channel mean from an exact integer sum). The blurs run in f32 with integer
//! running sums; tests/fast.rs bounds their difference from the float path.
use crate::{digital, noise, Corruption, ParamSet, Result, Rng};

#[allow(clippy::too_many_arguments)]
pub(crate) fn corrupt_u8_fast(x: &[u8], h: usize, w: usize, c: usize, cor: Corruption, s: usize, p: ParamSet, rng: &mut Rng) -> Option<Result<Vec<u8>>> {
    Some(Ok(match cor {
        Corruption::GaussianNoise => noise::gaussian_noise_u8(x, s, p, rng),
        Corruption::ShotNoise => noise::shot_noise_u8(x, s, p, rng),
        Corruption::ImpulseNoise => noise::impulse_noise_u8(x, s, p, rng),
        Corruption::SpeckleNoise => noise::speckle_noise_u8(x, s, p, rng),
        Corruption::Brightness => digital::brightness_u8(x, c, s, p),
        Corruption::Saturate => digital::saturate_u8(x, c, s, p),
        Corruption::Contrast => digital::contrast_u8(x, c, s, p),
        Corruption::Pixelate => return Some(digital::pixelate_u8(x, h, w, c, s, p)),
        Corruption::JpegCompression => digital::jpeg_u8(x, h, w, c, s, p),
        _ => return None,
    }))
}
