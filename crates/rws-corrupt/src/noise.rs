use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn gaussian_noise(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("gaussian_noise: not implemented yet".into()))
}

pub(crate) fn shot_noise(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("shot_noise: not implemented yet".into()))
}

pub(crate) fn impulse_noise(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("impulse_noise: not implemented yet".into()))
}

pub(crate) fn speckle_noise(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("speckle_noise: not implemented yet".into()))
}
