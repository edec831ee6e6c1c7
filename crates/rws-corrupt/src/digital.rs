use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn brightness(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("brightness: not implemented yet".into()))
}

pub(crate) fn contrast(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("contrast: not implemented yet".into()))
}

pub(crate) fn saturate(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("saturate: not implemented yet".into()))
}

pub(crate) fn pixelate(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("pixelate: not implemented yet".into()))
}

pub(crate) fn jpeg_compression(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("jpeg_compression: not implemented yet".into()))
}
