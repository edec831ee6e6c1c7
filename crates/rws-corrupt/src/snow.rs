use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn snow(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("snow: not implemented yet".into()))
}
