use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn frost(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("frost: not implemented yet".into()))
}
