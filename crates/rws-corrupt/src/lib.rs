//! The 19 common corruptions of Hendrycks & Dietterich (ImageNet-C / CIFAR-10-C) at severities 1–5,
//! reimplemented natively and checked against the reference generator's outputs.
//!
//! Every corruption works on an [`FImage`] (HWC, f64, 0..255 scale) and returns the float image the
//! reference returns *before* its final `np.uint8` cast; [`to_u8`] applies that cast (clip, then
//! truncate) so byte-level results match the reference's.
//!
//! Fidelity (tests/fixtures.rs, CIFAR-10-C parameters): gaussian_blur, defocus_blur, zoom_blur,
//! brightness, contrast, saturate, pixelate are byte-exact with the reference generator;
//! jpeg_compression is byte-exact with Pillow + libjpeg-turbo (Pillow ≥ 9) and with IJG libjpeg 9
//! on grey images (IJG 9's colour path downsamples chroma by DCT scaling, not modelled);
//! motion_blur (at a given angle) is within ±1 of ImageMagick 6 everywhere, exact for ≥ 99.6%.
//!
//! [`corrupt_u8`] (and [`corrupt_batch`]) run uint8 → uint8 code for 17 corruptions (src/fast.rs,
//! src/weather_u8.rs), skipping the f64 image: the noises, fog, zoom_blur, brightness, saturate,
//! pixelate, jpeg, snow, frost, spatter and elastic_transform return exactly the float path's
//! bytes; contrast, gaussian/defocus/motion blur agree with it to ±1 on ≥ 99.9% of values (f32 on
//! large images; small ones keep the f64 operation order and the same bytes); glass_blur runs the
//! float path. tests/fast.rs and tests/fast_weather.rs check both paths against each other,
//! tests/fixtures.rs the uint8 path against the reference too. The random corruptions fog, frost
//! (procedural), snow, spatter and elastic_transform compute in f32 inside both paths (their
//! reference is matched in distribution, tests/stats.rs, not value by value).
//!
//! Grey images (c = 1) are accepted everywhere and come back grey. They behave as an RGB image with
//! three equal channels would: brightness and contrast act on the grey level; saturate leaves grey
//! unchanged where its offset is 0 (S = 0) and otherwise the reddish tint the reference gives a grey
//! pixel is returned as its luma (0.299, 0.587, 0.114); snow uses the grey level itself in place of
//! OpenCV's RGB→grey; jpeg codes one luma component (as Pillow does for mode "L").

mod blur;
mod digital;
mod elastic;
mod fast;
mod fog;
mod frost;
mod glass;
pub mod io;
mod jpeg;
pub mod ndimage;
mod noise;
mod simd;
mod snow;
mod spatter;
mod weather_u8;

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

impl FImage {
    /// A float image from uint8 HWC bytes (the reference's `np.array(pil_image)`).
    pub fn from_u8(data: &[u8], h: usize, w: usize, c: usize) -> Result<FImage> {
        if c != 1 && c != 3 {
            return Err(Error::Msg(format!("images must have 1 or 3 channels, got {c}")));
        }
        if data.len() != h * w * c {
            return Err(Error::Msg(format!("image buffer holds {} bytes, expected {h}x{w}x{c} = {}", data.len(), h * w * c)));
        }
        Ok(FImage { h, w, c, data: data.iter().map(|&v| v as f64).collect() })
    }

    /// Elementwise map, same shape.
    pub fn map(&self, f: impl Fn(f64) -> f64) -> FImage {
        FImage { h: self.h, w: self.w, c: self.c, data: self.data.iter().map(|&v| f(v)).collect() }
    }
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

pub use blur::motion_blur_at;
pub use frost::set_frost_dir;

/// Corrupt one float image; returns the reference's float output (before the uint8 cast).
pub fn corrupt_float(x: &FImage, c: Corruption, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<FImage> {
    if !(1..=5).contains(&severity) {
        return Err(Error::Severity(severity));
    }
    if x.c != 1 && x.c != 3 {
        return Err(Error::Msg(format!("images must have 1 or 3 channels, got {}", x.c)));
    }
    if x.h == 0 || x.w == 0 {
        return Err(Error::TooSmall { corruption: c.name(), h: x.h, w: x.w, why: "the image is empty".into() });
    }
    c.apply(x, severity, p, rng)
}

/// Corrupt one uint8 HWC image (c = 1 or 3) and cast as the reference does.
#[allow(clippy::too_many_arguments)]
pub fn corrupt_u8(img: &[u8], h: usize, w: usize, c: usize, corruption: Corruption, severity: usize, p: ParamSet, rng: &mut Rng) -> Result<Vec<u8>> {
    if c != 1 && c != 3 {
        return Err(Error::Msg(format!("images must have 1 or 3 channels, got {c}")));
    }
    if img.len() != h * w * c {
        return Err(Error::Msg(format!("image buffer holds {} bytes, expected {h}x{w}x{c} = {}", img.len(), h * w * c)));
    }
    if !(1..=5).contains(&severity) {
        return Err(Error::Severity(severity));
    }
    if h == 0 || w == 0 {
        return Err(Error::TooSmall { corruption: corruption.name(), h, w, why: "the image is empty".into() });
    }
    // Most corruptions have a uint8 path that skips the whole-image f64 buffers (see fast.rs);
    // the others go through the float path and the reference's cast.
    if let Some(out) = fast::corrupt_u8_fast(img, h, w, c, corruption, severity, p, rng) {
        return out;
    }
    let x = FImage::from_u8(img, h, w, c)?;
    Ok(to_u8(&corrupt_float(&x, corruption, severity, p, rng)?))
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The RNG of image `index` in a batch: a function of (seed, corruption, severity, index) only,
/// so output bytes do not depend on thread count or on which other images are processed.
pub fn image_rng(seed: u64, corruption: Corruption, severity: usize, index: usize) -> Rng {
    use rand::SeedableRng;
    let ci = Corruption::ALL.iter().position(|&c| c == corruption).unwrap_or(0) as u64;
    let mut key = [0u8; 32];
    let mut z = splitmix64(seed);
    for (k, v) in [ci, severity as u64, index as u64, 0x7277_735f_636f_7272].into_iter().enumerate() {
        z = splitmix64(z ^ v);
        key[k * 8..k * 8 + 8].copy_from_slice(&z.to_le_bytes());
    }
    Rng::from_seed(key)
}

/// Corrupt `n` uint8 images (N×H×W×C, contiguous) in parallel on the current rayon pool.
/// Image i uses [`image_rng`]`(seed, corruption, severity, i)`. Fails on the first bad image
/// with nothing returned.
#[allow(clippy::too_many_arguments)]
pub fn corrupt_batch(images: &[u8], n: usize, h: usize, w: usize, c: usize, corruption: Corruption, severity: usize, p: ParamSet, seed: u64) -> Result<Vec<u8>> {
    use rayon::prelude::*;
    let sz = h * w * c;
    if images.len() != n * sz {
        return Err(Error::Msg(format!("batch holds {} bytes, expected {n}x{h}x{w}x{c} = {}", images.len(), n * sz)));
    }
    if !(1..=5).contains(&severity) {
        return Err(Error::Severity(severity));
    }
    let mut out = vec![0u8; n * sz];
    if sz == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(sz).zip(images.par_chunks(sz)).enumerate().try_for_each(|(i, (o, x))| {
        let mut rng = image_rng(seed, corruption, severity, i);
        o.copy_from_slice(&corrupt_u8(x, h, w, c, corruption, severity, p, &mut rng)?);
        Ok(())
    })?;
    Ok(out)
}

/// The reference's final `np.uint8(...)`: values are clipped to 0..=255 and truncated.
pub fn to_u8(x: &FImage) -> Vec<u8> {
    x.data.iter().map(|&v| cast_u8(v)).collect()
}

/// `v / 255` for every byte, evaluated at compile time (const float division rounds as the
/// runtime one does): the float path's correctly rounded quotients without a division per value
/// and without building a table per call (a quarter of the work of some corruptions at 32×32).
pub(crate) static UNIT_LUT: [f64; 256] = {
    let mut t = [0.0; 256];
    let mut v = 0;
    while v < 256 {
        t[v] = v as f64 / 255.0;
        v += 1;
    }
    t
};

/// Clip to 0..=255 and truncate (NaN → 0). `max`/`min` rather than `clamp` + `as u8`: they send
/// NaN to 0 and always return a value in range, so the unchecked conversion is sound, and the
/// loops around it vectorise (the saturating `as u8` compiles to per-value branches).
#[inline(always)]
#[allow(clippy::manual_clamp)] // clamp keeps NaN; max/min send it to 0
pub(crate) fn cast_u8(v: f64) -> u8 {
    let c = v.max(0.0).min(255.0);
    // SAFETY: c is a finite value in 0..=255.
    unsafe { c.to_int_unchecked::<i32>() as u8 }
}

/// [`cast_u8`] for f32.
#[inline(always)]
#[allow(clippy::manual_clamp)]
pub(crate) fn cast_u8_f32(v: f32) -> u8 {
    let c = v.max(0.0).min(255.0);
    // SAFETY: c is a finite value in 0..=255.
    unsafe { c.to_int_unchecked::<i32>() as u8 }
}
