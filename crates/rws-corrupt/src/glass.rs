use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn glass_blur(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("glass_blur: not implemented yet".into()))
}
