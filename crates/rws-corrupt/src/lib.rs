//! The 19 common corruptions of Hendrycks & Dietterich (ImageNet-C / CIFAR-10-C) at severities 1–5,
//! reimplemented natively and checked against the reference generator's outputs.
//!
//! Every corruption works on an [`FImage`] (HWC, f64, 0..255 scale) and returns the float image the
//! reference returns *before* its final `np.uint8` cast; [`to_u8`] applies that cast (clip, then
//! truncate) so byte-level results match the reference's.

mod blur;
mod digital;
mod elastic;
mod fog;
mod frost;
mod glass;
pub mod ndimage;
mod noise;
mod snow;
mod spatter;

/// The RNG every random corruption draws from; seeded by the caller so runs are reproducible.
pub type Rng = rand_chacha::ChaCha8Rng;

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown corruption '{0}'; valid names: {1}")]
    UnknownCorruption(String, String),
    #[error("severity {0} is out of range 1..=5")]
    Severity(usize),
    #[error("unknown parameter set '{0}'; valid: cifar10, tinyimagenet, imagenet")]
    UnknownParams(String),
    #[error("image {h}x{w} is too small for {corruption}: {why}")]
    TooSmall { corruption: &'static str, h: usize, w: usize, why: String },
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Float image, HWC order, values on the 0..255 scale, `c` is 1 (grey) or 3 (RGB).
#[derive(Clone, Debug, PartialEq)]
pub struct FImage {
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub data: Vec<f64>,
}

/// Which published parameter table to use (see shared PARAMS.md): CIFAR-10-C (32×32),
/// Tiny-ImageNet-C (64×64) or ImageNet-C as the `imagecorruptions` package (224×224).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ParamSet {
    Cifar10,
    TinyImageNet,
    ImageNet,
}

macro_rules! corruptions {
    ($($variant:ident => $name:literal, $module:ident :: $func:ident;)*) => {
        /// One of the 19 corruptions, in the reference's order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum Corruption { $($variant),* }

        impl Corruption {
            pub const ALL: &'static [Corruption] = &[$(Corruption::$variant),*];

            /// The reference's name (e.g. `gaussian_noise`).
            pub fn name(self) -> &'static str {
                match self { $(Corruption::$variant => $name),* }
            }

            fn apply(self, x: &FImage, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
                match self { $(Corruption::$variant => $module::$func(x, severity, p, rng)),* }
            }
        }
    };
}

corruptions! {
    GaussianNoise => "gaussian_noise", noise::gaussian_noise;
    ShotNoise => "shot_noise", noise::shot_noise;
    ImpulseNoise => "impulse_noise", noise::impulse_noise;
    SpeckleNoise => "speckle_noise", noise::speckle_noise;
    GaussianBlur => "gaussian_blur", blur::gaussian_blur;
    DefocusBlur => "defocus_blur", blur::defocus_blur;
    GlassBlur => "glass_blur", glass::glass_blur;
    MotionBlur => "motion_blur", blur::motion_blur;
    ZoomBlur => "zoom_blur", blur::zoom_blur;
    Snow => "snow", snow::snow;
    Frost => "frost", frost::frost;
    Fog => "fog", fog::fog;
    Spatter => "spatter", spatter::spatter;
    Brightness => "brightness", digital::brightness;
    Contrast => "contrast", digital::contrast;
    Saturate => "saturate", digital::saturate;
    ElasticTransform => "elastic_transform", elastic::elastic_transform;
    Pixelate => "pixelate", digital::pixelate;
    JpegCompression => "jpeg_compression", digital::jpeg_compression;
}

impl std::str::FromStr for Corruption {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Corruption::ALL.iter().copied().find(|c| c.name() == s).ok_or_else(|| {
            let names: Vec<_> = Corruption::ALL.iter().map(|c| c.name()).collect();
            Error::UnknownCorruption(s.to_string(), names.join(", "))
        })
    }
}

impl std::str::FromStr for ParamSet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cifar10" => Ok(ParamSet::Cifar10),
            "tinyimagenet" => Ok(ParamSet::TinyImageNet),
            "imagenet" => Ok(ParamSet::ImageNet),
            _ => Err(Error::UnknownParams(s.to_string())),
        }
    }
}

/// Corrupt one float image; returns the reference's float output (before the uint8 cast).
pub fn corrupt_float(x: &FImage, c: Corruption, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    if !(1..=5).contains(&severity) {
        return Err(Error::Severity(severity));
    }
    c.apply(x, severity, p, rng)
}

/// The reference's final `np.uint8(...)`: values are clipped to 0..=255 and truncated.
pub fn to_u8(x: &FImage) -> Vec<u8> {
    x.data.iter().map(|&v| if v.is_nan() { 0 } else { v.clamp(0.0, 255.0) as u8 }).collect()
}
