use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn spatter(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("spatter: not implemented yet".into()))
}
