//! uint8 → uint8 paths of the weather and geometric corruptions (snow, frost, spatter,
//! elastic_transform, glass_blur), dispatched from [`crate::fast`]. A corruption without one
//! returns `None` here and goes through the float path and the reference's cast.
//! tests/fast_weather.rs checks each path against the float path on the same seeds.
use crate::{Corruption, ParamSet, Result, Rng};

#[allow(clippy::too_many_arguments)]
pub(crate) fn corrupt_u8_weather(x: &[u8], h: usize, w: usize, c: usize, cor: Corruption, s: usize, p: ParamSet, rng: &mut Rng) -> Option<Result<Vec<u8>>> {
    match cor {
        Corruption::Snow => Some(crate::snow::snow_u8(x, h, w, c, s, p, rng)),
        Corruption::Frost => Some(crate::frost::frost_u8(x, h, w, c, s, p, rng)),
        Corruption::ElasticTransform => Some(crate::elastic::elastic_u8(x, h, w, c, s, p, rng)),
        Corruption::Spatter => Some(crate::spatter::spatter_u8(x, h, w, c, s, p, rng)),
        _ => None,
    }
}
