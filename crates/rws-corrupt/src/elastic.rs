use crate::{FImage, ParamSet, Result, Rng};

pub(crate) fn elastic_transform(_x: &FImage, _severity: usize, _p: ParamSet, _rng: &mut Rng) -> Result<FImage> {
    Err(crate::Error::Msg("elastic_transform: not implemented yet".into()))
}
