use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn gaussian_blur(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("gaussian_blur: not implemented yet".into()))
}

pub(crate) fn defocus_blur(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("defocus_blur: not implemented yet".into()))
}

pub(crate) fn motion_blur(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("motion_blur: not implemented yet".into()))
}

pub(crate) fn zoom_blur(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("zoom_blur: not implemented yet".into()))
}
