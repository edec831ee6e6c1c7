use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn fog(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("fog: not implemented yet".into()))
}
