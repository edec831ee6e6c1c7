//! Image files for the CLI: a flat folder of same-size images in, a contact-sheet PNG out; and the
//! uint8 `.npy` encoding the frost textures are stored in.
use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// (n, h, w, c, N×H×W×C bytes, file names).
pub type ImageStack = (usize, usize, usize, usize, Vec<u8>, Vec<PathBuf>);

/// Decode every .png/.jpg/.jpeg/.bmp directly in `dir` (sorted by name) as uint8 HWC.
/// All images must share one size; they are grey (c = 1) only if every file is grey.
/// Returns (n, h, w, c, data, file names).
pub fn read_image_dir(dir: &Path) -> Result<ImageStack> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Msg(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).as_deref(), Some("png" | "jpg" | "jpeg" | "bmp"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Msg(format!("{}: no .png/.jpg/.jpeg/.bmp images", dir.display())));
    }
    let imgs: Vec<image::DynamicImage> = files
        .iter()
        .map(|p| {
            image::ImageReader::open(p)
                .map_err(|e| Error::Msg(format!("{}: {e}", p.display())))?
                .with_guessed_format()
                .map_err(|e| Error::Msg(format!("{}: {e}", p.display())))?
                .decode()
                .map_err(|e| Error::Msg(format!("{}: cannot decode image: {e}", p.display())))
        })
        .collect::<Result<_>>()?;
    let grey = imgs.iter().all(|i| !i.color().has_color());
    let (w, h) = (imgs[0].width() as usize, imgs[0].height() as usize);
    let c = if grey { 1 } else { 3 };
    let mut data = Vec::with_capacity(imgs.len() * h * w * c);
    for (img, p) in imgs.iter().zip(&files) {
        if (img.width() as usize, img.height() as usize) != (w, h) {
            return Err(Error::Msg(format!("{}: image is {}x{} but {} is {w}x{h}; all images must share one size", p.display(), img.width(), img.height(), files[0].display())));
        }
        if grey {
            data.extend_from_slice(img.to_luma8().as_raw());
        } else {
            data.extend_from_slice(img.to_rgb8().as_raw());
        }
    }
    Ok((imgs.len(), h, w, c, data, files))
}

/// Lay out uint8 HWC tiles (all h×w×c) on a grid with a 2-pixel white gutter, scaled by an
/// integer factor so 28–32 px images stay visible; `tiles[r][k]`.
pub fn contact_sheet(tiles: &[Vec<Vec<u8>>], h: usize, w: usize, c: usize, scale: usize) -> (usize, usize, Vec<u8>) {
    let rows = tiles.len();
    let cols = tiles.iter().map(|r| r.len()).max().unwrap_or(0);
    let g = 2;
    let (th, tw) = (h * scale, w * scale);
    let (sh, sw) = (rows * (th + g) + g, cols * (tw + g) + g);
    let mut out = vec![255u8; sh * sw * 3];
    for (r, row) in tiles.iter().enumerate() {
        for (k, t) in row.iter().enumerate() {
            for y in 0..th {
                for x in 0..tw {
                    let si = ((y / scale) * w + x / scale) * c;
                    let px = if c == 3 { [t[si], t[si + 1], t[si + 2]] } else { [t[si]; 3] };
                    let oy = g + r * (th + g) + y;
                    let ox = g + k * (tw + g) + x;
                    out[(oy * sw + ox) * 3..(oy * sw + ox) * 3 + 3].copy_from_slice(&px);
                }
            }
        }
    }
    (sh, sw, out)
}

/// Write an RGB PNG through a temp file in the same folder and a rename (no partial file).
pub fn write_png_rgb(path: &Path, h: usize, w: usize, rgb: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("preview"), std::process::id()));
    let buf = image::RgbImage::from_raw(w as u32, h as u32, rgb.to_vec()).ok_or_else(|| Error::Msg("contact sheet buffer size".into()))?;
    buf.save_with_format(&tmp, image::ImageFormat::Png).map_err(|e| Error::Msg(format!("{}: {e}", path.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Msg(format!("{}: {e}", path.display()))
    })
}

/// A uint8 array of `shape` (C order) as a `.npy` (format 1.0) file's bytes: the layout frost
/// textures are read from, used by the tests and the bench to write their own.
pub fn npy_u8(shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let dims = if dims.len() == 1 { format!("{},", dims[0]) } else { dims.join(", ") };
    let mut hdr = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({dims}), }}");
    while (10 + hdr.len() + 1) % 64 != 0 {
        hdr.push(' ');
    }
    hdr.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((hdr.len() as u16).to_le_bytes());
    b.extend(hdr.as_bytes());
    b.extend_from_slice(data);
    b
}
