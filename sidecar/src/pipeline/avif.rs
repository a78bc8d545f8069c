//! AVIF input: the container is read by `avif-parse` (the primary item's AV1 data, the alpha
//! item's, premultiplication) and by [`properties`] here (what `avif-parse` skips: the image
//! size, rotation and mirroring, the colour description); the AV1 pictures are decoded by
//! libdav1d ([`crate::pipeline::codecs::dav1d`]) and converted to 8-bit RGB(A) here.
//!
//! [`AvifDecoder`] is an `image` decoder, so the pipeline treats AVIF like its other inputs:
//! the size is checked from the header before anything is decoded, `irot`/`imir` become the
//! orientation, and a colour space other than sRGB (an ICC profile, or `nclx` primaries such as
//! Display P3 or BT.2020) becomes an ICC profile the pipeline converts from. What would render
//! wrong is refused by name instead: HDR transfers (PQ, HLG), a clean aperture (`clap`), grids,
//! animations (AVIF sequences), matrix coefficients without a YUV → RGB formula here, and any
//! property of the primary item marked essential that is not one of the above (HEIF forbids
//! showing such an item).
//!
//! Chroma is upsampled by replication (each chroma sample covers its 2×2 or 2×1 block), the
//! cost-free choice: renders are almost always downscales, which average it away.

use std::io::Cursor;

use image::error::{
    DecodingError, ImageFormatHint, LimitError, LimitErrorKind, UnsupportedError,
    UnsupportedErrorKind,
};
use image::metadata::Orientation;
use image::{ColorType, ImageDecoder, ImageError, ImageResult};
use moxcms::{CicpColorPrimaries, CicpProfile, ColorProfile, MatrixCoefficients};

use super::codecs::dav1d::{self, Cicp, Layout, Picture, Plane};
use super::effects::unpremultiply;
use super::error::PipelineError;
use super::limits::Limits;

/// An AVIF, parsed up to its pixels.
pub struct AvifDecoder {
    color: Vec<u8>,
    alpha: Option<Vec<u8>>,
    premultiplied: bool,
    width: u32,
    height: u32,
    /// From the colour description in force (the `nclx` property, else the bitstream's):
    /// whether samples use the full range, and the YUV → RGB weights ([`matrix`]).
    full_range: bool,
    weights: Option<(f32, f32)>,
    icc: Option<Vec<u8>>,
    orientation: Orientation,
    max_pixels: u64,
}

impl AvifDecoder {
    /// Parses the container and the sequence header; decodes nothing.
    pub fn new(source: &[u8], limits: &Limits) -> Result<AvifDecoder, PipelineError> {
        // The box structure first: sizes that run past the end (a truncated file) stop here,
        // before `avif-parse`, which checks some of them with debug assertions.
        let props = properties(source)?;
        // Its remaining assertions, should hostile input reach one, are a corrupt image too.
        let parsed = std::panic::catch_unwind(|| avif_parse::read_avif(&mut Cursor::new(source)))
            .map_err(|_| PipelineError::Corrupt("avif: malformed container".to_owned()))?
            .map_err(|e| match e {
                avif_parse::Error::Unsupported(what) => {
                    PipelineError::UnsupportedFormat(format!("avif variant: {what}"))
                }
                other => PipelineError::Corrupt(format!("avif: {other}")),
            })?;
        if props.clean_aperture {
            return Err(PipelineError::UnsupportedFormat(
                "avif with a clean aperture (clap)".to_owned(),
            ));
        }
        let color = parsed.primary_item.to_vec();
        let sequence = dav1d::sequence_header(&color)?;
        let cicp = props.nclx.unwrap_or(sequence.cicp);
        if matches!(cicp.transfer, 16 | 18) {
            return Err(PipelineError::UnsupportedFormat(
                "HDR avif (PQ or HLG transfer)".to_owned(),
            ));
        }
        let weights = matrix(cicp)?;
        let icc = match props.icc {
            Some(icc) => Some(icc),
            None => cicp_profile(cicp)?,
        };
        let (width, height) = props.size.unwrap_or((sequence.width, sequence.height));
        Ok(AvifDecoder {
            color,
            alpha: parsed.alpha_item.map(|a| a.to_vec()),
            premultiplied: parsed.premultiplied_alpha,
            width,
            height,
            full_range: cicp.full_range,
            weights,
            icc,
            orientation: props.orientation,
            max_pixels: limits.max_source_pixels,
        })
    }

    /// Decodes into `buf` (RGB, or RGBA with an alpha item; rows packed).
    fn decode_into(&self, buf: &mut [u8]) -> Result<(), PipelineError> {
        let picture = dav1d::decode(&self.color, self.max_pixels)?;
        self.check_size(&picture, "colour")?;
        let channels = if self.alpha.is_some() { 4 } else { 3 };
        yuv_to_rgb(&picture, self.full_range, self.weights, channels, buf);
        if let Some(alpha) = &self.alpha {
            let plane = dav1d::decode(alpha, self.max_pixels)?;
            self.check_size(&plane, "alpha")?;
            copy_alpha(&plane, buf);
            if self.premultiplied {
                unpremultiply(buf);
            }
        }
        Ok(())
    }

    fn check_size(&self, picture: &Picture, what: &str) -> Result<(), PipelineError> {
        if (picture.width(), picture.height()) == (self.width, self.height) {
            Ok(())
        } else {
            Err(PipelineError::Corrupt(format!(
                "avif {what} picture is {}x{}, the image {}x{}",
                picture.width(),
                picture.height(),
                self.width,
                self.height
            )))
        }
    }

    /// Bytes libdav1d holds while decoding: the planes of the colour and alpha pictures, at
    /// most 16 bits per sample, 4:4:4.
    pub fn decoder_bytes(width: u32, height: u32) -> u64 {
        u64::from(width) * u64::from(height) * 8
    }
}

impl ImageDecoder for AvifDecoder {
    fn dimensions(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn color_type(&self) -> ColorType {
        if self.alpha.is_some() {
            ColorType::Rgba8
        } else {
            ColorType::Rgb8
        }
    }

    fn icc_profile(&mut self) -> ImageResult<Option<Vec<u8>>> {
        Ok(self.icc.clone())
    }

    fn orientation(&mut self) -> ImageResult<Orientation> {
        Ok(self.orientation)
    }

    fn read_image(self, buf: &mut [u8]) -> ImageResult<()> {
        self.decode_into(buf).map_err(|e| match e {
            PipelineError::TooLarge(_) => {
                ImageError::Limits(LimitError::from_kind(LimitErrorKind::InsufficientMemory))
            }
            PipelineError::UnsupportedFormat(what) => {
                ImageError::Unsupported(UnsupportedError::from_format_and_kind(
                    ImageFormatHint::Name("avif".to_owned()),
                    UnsupportedErrorKind::GenericFeature(what),
                ))
            }
            other => ImageError::Decoding(DecodingError::new(
                ImageFormatHint::Name("avif".to_owned()),
                other.to_string(),
            )),
        })
    }

    fn read_image_boxed(self: Box<Self>, buf: &mut [u8]) -> ImageResult<()> {
        (*self).read_image(buf)
    }
}

/// Luma and chroma weights (Kr, Kb) of the matrix coefficients, `None` for the identity
/// matrix (GBR: Y is green, U blue, V red); refuses matrices this module has no formula for.
fn matrix(cicp: Cicp) -> Result<Option<(f32, f32)>, PipelineError> {
    Ok(Some(match cicp.matrix {
        0 => return Ok(None),
        1 => (0.2126, 0.0722),
        // Unspecified: BT.601, as libavif assumes.
        2 | 5 | 6 => (0.299, 0.114),
        4 => (0.30, 0.11),
        7 => (0.212, 0.087),
        9 => (0.2627, 0.0593),
        other => {
            return Err(PipelineError::UnsupportedFormat(format!(
                "avif with matrix coefficients {other}"
            )));
        }
    }))
}

/// An ICC profile for a colour description that is not sRGB's (the pipeline converts from
/// it): `None` for BT.709 primaries (sRGB's) or unspecified ones with an sRGB-like transfer.
fn cicp_profile(cicp: Cicp) -> Result<Option<Vec<u8>>, PipelineError> {
    // Transfers images with BT.709 primaries are shown with as sRGB: sRGB, BT.709/601, BT.2020
    // (the same curve), unspecified.
    let srgb_like = matches!(cicp.transfer, 1 | 2 | 6 | 13 | 14 | 15);
    if matches!(cicp.primaries, 1 | 2) && srgb_like {
        return Ok(None);
    }
    let unsupported = || {
        PipelineError::UnsupportedFormat(format!(
            "avif colour primaries {} with transfer {}",
            cicp.primaries, cicp.transfer
        ))
    };
    let primaries = match cicp.primaries {
        2 => CicpColorPrimaries::Bt709,
        // The RGB primaries of H.273 (not 10, CIE XYZ).
        p @ (1 | 4..=9 | 11 | 12 | 22) => {
            CicpColorPrimaries::try_from(p).map_err(|_| unsupported())?
        }
        _ => return Err(unsupported()),
    };
    let transfer = match cicp.transfer {
        // The primaries are what differs: the curve is sRGB's.
        2 => moxcms::TransferCharacteristics::Srgb,
        t => moxcms::TransferCharacteristics::try_from(t).map_err(|_| unsupported())?,
    };
    let profile = ColorProfile::new_from_cicp(CicpProfile {
        color_primaries: primaries,
        transfer_characteristics: transfer,
        matrix_coefficients: MatrixCoefficients::Identity,
        full_range: true,
    });
    profile.encode().map(Some).map_err(|_| unsupported())
}

/// Sample `x` of a row of `depth`-bit samples (two bytes each above 8 bits); 0 past its end.
fn sample(row: &[u8], x: usize, depth: u8) -> f32 {
    if depth > 8 {
        row.get(2 * x..2 * x + 2)
            .map_or(0.0, |b| f32::from(u16::from_ne_bytes([b[0], b[1]])))
    } else {
        row.get(x).map_or(0.0, |&v| f32::from(v))
    }
}

/// (offset, 255 / range) that map luma (or alpha) samples of `depth` bits onto 0–255: the
/// whole range, or the limited ("video") one, 16–235 at 8 bits.
fn luma_range(depth: u8, full_range: bool) -> (f32, f32) {
    let scale = f32::from(1u16 << (depth - 8));
    if full_range {
        (0.0, 255.0 / f32::from((1u16 << depth) - 1))
    } else {
        (16.0 * scale, 255.0 / (219.0 * scale))
    }
}

/// Converts `picture` to 8-bit RGB (`channels` 3) or the RGB of RGBA (`channels` 4, alpha
/// left for [`copy_alpha`]) in `out`, whose size the caller has checked, with the matrix
/// `weights` (see [`matrix`]).
fn yuv_to_rgb(
    picture: &Picture,
    full_range: bool,
    weights: Option<(f32, f32)>,
    channels: usize,
    out: &mut [u8],
) {
    let (width, height) = (picture.width(), picture.height());
    let depth = picture.bit_depth();
    let (y_off, y_gain) = luma_range(depth, full_range);
    // 255 / range of chroma, around its midpoint.
    let c_gain = if full_range {
        255.0 / f32::from((1u16 << depth) - 1)
    } else {
        255.0 / (224.0 * f32::from(1u16 << (depth - 8)))
    };
    let mid = f32::from(1u16 << (depth - 1));
    let (shift_x, shift_y) = picture.layout().chroma_shift();
    let mono = picture.layout() == Layout::I400;
    let stride = width as usize * channels;
    let sample = |row: &[u8], x: usize| sample(row, x, depth);
    let to_u8 = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    for (y, line) in (0..height).zip(out.chunks_exact_mut(stride)) {
        let luma = picture.row(Plane::Y, y);
        let (u_row, v_row) = (
            picture.row(Plane::U, y >> shift_y),
            picture.row(Plane::V, y >> shift_y),
        );
        for (x, px) in line.chunks_exact_mut(channels).enumerate() {
            let l = (sample(luma, x) - y_off) * y_gain;
            if mono {
                px[..3].fill(to_u8(l));
                continue;
            }
            let cx = x >> shift_x;
            let (u, v) = (sample(u_row, cx), sample(v_row, cx));
            let (r, g, b) = match weights {
                // GBR: every plane has luma's range.
                None => ((v - y_off) * y_gain, l, (u - y_off) * y_gain),
                Some((kr, kb)) => {
                    let (cb, cr) = ((u - mid) * c_gain, (v - mid) * c_gain);
                    let kg = 1.0 - kr - kb;
                    (
                        l + (2.0 - 2.0 * kr) * cr,
                        l - (2.0 * kb * (1.0 - kb) / kg) * cb - (2.0 * kr * (1.0 - kr) / kg) * cr,
                        l + (2.0 - 2.0 * kb) * cb,
                    )
                }
            };
            px[0] = to_u8(r);
            px[1] = to_u8(g);
            px[2] = to_u8(b);
        }
    }
}

/// Writes the alpha picture's luma into every fourth byte of the RGBA `out`.
fn copy_alpha(alpha: &Picture, out: &mut [u8]) {
    let depth = alpha.bit_depth();
    let (off, gain) = luma_range(depth, alpha.cicp().full_range);
    let stride = alpha.width() as usize * 4;
    for (y, line) in (0..alpha.height()).zip(out.chunks_exact_mut(stride)) {
        let row = alpha.row(Plane::Y, y);
        for (x, px) in line.chunks_exact_mut(4).enumerate() {
            px[3] = ((sample(row, x, depth) - off) * gain)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
}

/// The properties of the primary item that `avif-parse` does not return.
#[derive(Debug, PartialEq)]
struct Properties {
    /// `ispe`: the image size.
    size: Option<(u32, u32)>,
    /// `irot` and `imir`, as one orientation.
    orientation: Orientation,
    /// `colr` of type `nclx`.
    nclx: Option<Cicp>,
    /// `colr` of type `prof` or `rICC`.
    icc: Option<Vec<u8>>,
    /// Whether a `clap` (clean aperture: a crop) applies.
    clean_aperture: bool,
}

/// One ISO-BMFF box: its type and its payload.
struct IsoBox<'a> {
    kind: [u8; 4],
    payload: &'a [u8],
}

/// The boxes in `data`, in order; a box whose size runs past the end is an error (and the
/// last item).
fn boxes(mut data: &[u8]) -> impl Iterator<Item = Result<IsoBox<'_>, PipelineError>> {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let next = next_box(data);
        data = match &next {
            Ok((_, rest)) => rest,
            Err(_) => &[],
        };
        Some(next.map(|(b, _)| b))
    })
}

/// The box at the start of `data`, and what follows it.
fn next_box(data: &[u8]) -> Result<(IsoBox<'_>, &[u8]), PipelineError> {
    let truncated = || PipelineError::Corrupt("avif: truncated box".to_owned());
    let size = be::<4>(data, 0)?;
    let kind = (be::<4>(data, 4)? as u32).to_be_bytes();
    let (header, size) = match size {
        0 => (8, data.len()),
        1 => (
            16,
            usize::try_from(be::<8>(data, 8)?).map_err(|_| truncated())?,
        ),
        n => (8, n as usize),
    };
    if size < header || size > data.len() {
        return Err(truncated());
    }
    let (this, rest) = data.split_at(size);
    Ok((
        IsoBox {
            kind,
            payload: &this[header..],
        },
        rest,
    ))
}

/// Reads a big-endian unsigned integer of `N` bytes at `at`.
fn be<const N: usize>(data: &[u8], at: usize) -> Result<u64, PipelineError> {
    let bytes = data
        .get(at..at + N)
        .ok_or_else(|| PipelineError::Corrupt("avif: truncated property".to_owned()))?;
    Ok(bytes.iter().fold(0, |n, &b| n << 8 | u64::from(b)))
}

/// The item properties pixmesh acts on or may ignore without changing the image: the decoder
/// configuration and pixel information (libdav1d reads both from the AV1 stream), the size,
/// the transformations and the colour.
const UNDERSTOOD: [[u8; 4]; 7] = [
    *b"av1C", *b"pixi", *b"ispe", *b"irot", *b"imir", *b"clap", *b"colr",
];

/// One property of an item, by its 1-based index in `ipco`.
struct Association {
    index: usize,
    /// The reader must understand it to show the item.
    essential: bool,
}

/// Finds the primary item's `ispe`, `irot`, `imir`, `colr` and `clap` in `meta`/`iprp`;
/// refuses an essential property it does not know.
fn properties(source: &[u8]) -> Result<Properties, PipelineError> {
    let corrupt = |what: &str| PipelineError::Corrupt(format!("avif: {what}"));
    let mut meta = None;
    for b in boxes(source) {
        let b = b?;
        if &b.kind == b"meta" {
            meta = Some(
                b.payload
                    .get(4..)
                    .ok_or_else(|| corrupt("truncated meta"))?,
            );
        }
    }
    let meta = meta.ok_or_else(|| corrupt("no meta box"))?;
    let (mut primary, mut ipco, mut ipma) = (None, None, None);
    for b in boxes(meta) {
        let b = b?;
        match &b.kind {
            b"pitm" => {
                let version = be::<1>(b.payload, 0)?;
                primary = Some(if version == 0 {
                    be::<2>(b.payload, 4)?
                } else {
                    be::<4>(b.payload, 4)?
                });
            }
            b"iprp" => {
                for inner in boxes(b.payload) {
                    let inner = inner?;
                    match &inner.kind {
                        b"ipco" => ipco = Some(inner.payload),
                        b"ipma" => ipma = Some(inner.payload),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(primary), Some(ipco), Some(ipma)) = (primary, ipco, ipma) else {
        return Err(corrupt("no primary item properties"));
    };
    let all: Vec<IsoBox<'_>> = boxes(ipco).collect::<Result<_, _>>()?;
    let mut props = Properties {
        size: None,
        orientation: Orientation::NoTransforms,
        nclx: None,
        icc: None,
        clean_aperture: false,
    };
    let (mut rotation, mut mirror) = (0u8, None);
    for Association { index, essential } in associations(ipma, primary)? {
        let Some(b) = index.checked_sub(1).and_then(|i| all.get(i)) else {
            return Err(corrupt("property index out of range"));
        };
        let p = b.payload;
        // HEIF: a reader must not show an item with an essential property it does not know
        // (an operating point or layer selector, a newer transformation).
        if essential && !UNDERSTOOD.contains(&b.kind) {
            return Err(PipelineError::UnsupportedFormat(format!(
                "avif with the essential property '{}'",
                b.kind.escape_ascii()
            )));
        }
        match &b.kind {
            b"ispe" => {
                let side = |at| be::<4>(p, at).map(|n| n as u32);
                props.size = Some((side(4)?, side(8)?));
            }
            b"irot" => rotation = (be::<1>(p, 0)? & 3) as u8,
            b"imir" => mirror = Some(be::<1>(p, 0)? & 1),
            b"clap" => props.clean_aperture = true,
            b"colr" => match p.get(0..4) {
                Some(b"nclx") => {
                    props.nclx = Some(Cicp {
                        primaries: be::<2>(p, 4)?.min(255) as u8,
                        transfer: be::<2>(p, 6)?.min(255) as u8,
                        matrix: be::<2>(p, 8)?.min(255) as u8,
                        full_range: be::<1>(p, 10)? & 0x80 != 0,
                    });
                }
                Some(b"prof" | b"rICC") => props.icc = Some(p[4..].to_vec()),
                _ => {}
            },
            _ => {}
        }
    }
    props.orientation = orientation(rotation, mirror);
    Ok(props)
}

/// The properties `ipma` associates with `item`: 1-based indices, and whether each is essential.
fn associations(ipma: &[u8], item: u64) -> Result<Vec<Association>, PipelineError> {
    let version = be::<1>(ipma, 0)?;
    let wide_index = be::<3>(ipma, 1)? & 1 == 1;
    let count = be::<4>(ipma, 4)?;
    let mut at = 8;
    for _ in 0..count {
        let id = if version < 1 {
            let id = be::<2>(ipma, at)?;
            at += 2;
            id
        } else {
            let id = be::<4>(ipma, at)?;
            at += 4;
            id
        };
        let n = be::<1>(ipma, at)? as usize;
        at += 1;
        let mut indices = Vec::with_capacity(n);
        for _ in 0..n {
            let (essential, index) = if wide_index {
                let v = be::<2>(ipma, at)?;
                at += 2;
                (v & 0x8000 != 0, v & 0x7fff)
            } else {
                let v = be::<1>(ipma, at)?;
                at += 1;
                (v & 0x80 != 0, v & 0x7f)
            };
            if index > 0 {
                indices.push(Association {
                    index: index as usize,
                    essential,
                });
            }
        }
        if id == item {
            return Ok(indices);
        }
    }
    Ok(Vec::new())
}

/// HEIF's transformations as an EXIF orientation: first `irot` (`angle` × 90° anticlockwise),
/// then `imir` (`axis` 0: a vertical axis, left and right swap; 1: a horizontal one).
fn orientation(angle: u8, mirror: Option<u64>) -> Orientation {
    // Clockwise degrees, then whether a left-right flip follows.
    let clockwise = (4 - u16::from(angle % 4)) % 4 * 90;
    let (clockwise, flip) = match mirror {
        None => (clockwise, false),
        Some(0) => (clockwise, true),
        // A top-bottom flip is a half turn and a left-right flip.
        Some(_) => ((clockwise + 180) % 360, true),
    };
    match (clockwise, flip) {
        (0, false) => Orientation::NoTransforms,
        (90, false) => Orientation::Rotate90,
        (180, false) => Orientation::Rotate180,
        (270, false) => Orientation::Rotate270,
        (0, true) => Orientation::FlipHorizontal,
        (90, true) => Orientation::Rotate90FlipH,
        (180, true) => Orientation::FlipVertical,
        _ => Orientation::Rotate270FlipH,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Rendered, render};
    use image::GenericImageView;
    use pixmesh_core::transform::{Fit, Format, OutputFormat, Transform};

    /// An AVIF of `sidecar/testdata` (see `make-avif.py` there).
    fn fixture(name: &str) -> Vec<u8> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The source as it is, as a PNG (lossless, so the pixels are the decoder's).
    fn as_png(source: &[u8]) -> image::DynamicImage {
        let t = Transform {
            format: OutputFormat::Fixed(Format::Png),
            ..Transform::default()
        };
        let r: Rendered = render(source, &t, &Limits::default()).unwrap();
        image::load_from_memory(&r.bytes).unwrap()
    }

    /// Four bars, 16 px wide each: red, green, blue, white.
    const BARS: [[u8; 3]; 4] = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]];

    fn assert_close(got: &[u8], want: &[u8], tolerance: u8, what: &str) {
        let close = got
            .iter()
            .zip(want)
            .all(|(g, w)| g.abs_diff(*w) <= tolerance);
        assert!(close, "{what}: {got:?}, want {want:?} ± {tolerance}");
    }

    fn assert_bars(img: &image::DynamicImage, what: &str) {
        assert_eq!(img.dimensions(), (64, 32), "{what}");
        for (i, want) in BARS.iter().enumerate() {
            let px = img.get_pixel(16 * i as u32 + 8, 16);
            assert_close(&px.0[..3], want, 8, &format!("{what}, bar {i}"));
        }
    }

    #[test]
    fn libaom_avifs_decode_to_their_colours() {
        // 4:2:0 and 4:4:4, 8 bits, limited range, BT.601 (libheif's defaults).
        for name in ["bars-420.avif", "bars-444.avif"] {
            let img = as_png(&fixture(name));
            assert!(!img.color().has_alpha(), "{name}");
            assert_bars(&img, name);
        }
    }

    #[test]
    fn the_alpha_item_becomes_the_alpha_channel() {
        let img = as_png(&fixture("bars-alpha.avif"));
        assert!(img.color().has_alpha());
        assert_close(&img.get_pixel(8, 16).0, &[255, 0, 0, 255], 8, "opaque half");
        assert_eq!(img.get_pixel(56, 16).0[3], 0, "transparent half");
    }

    #[test]
    fn irot_turns_the_image_upright() {
        // Stored as the bars; `irot` says: shown turned 90° clockwise (EXIF orientation 6).
        let img = as_png(&fixture("bars-irot.avif"));
        assert_eq!(img.dimensions(), (32, 64));
        assert_close(&img.get_pixel(16, 8).0[..3], &BARS[0], 8, "red on top");
        assert_close(
            &img.get_pixel(16, 56).0[..3],
            &BARS[3],
            8,
            "white at the bottom",
        );
    }

    /// The bars as an AVIF from rav1e (pixmesh's own encoder), at `depth` bits.
    fn rav1e_bars(depth: ravif::BitDepth, alpha: bool) -> Vec<u8> {
        let pixels: Vec<ravif::RGBA8> = (0..32)
            .flat_map(|_| (0..64).map(|x: usize| BARS[x / 16]))
            .map(|[r, g, b]| ravif::RGBA8::new(r, g, b, if alpha { 128 } else { 255 }))
            .collect();
        ravif::Encoder::new()
            .with_quality(95.0)
            .with_alpha_quality(95.0)
            .with_bit_depth(depth)
            .with_speed(10)
            .with_num_threads(Some(1))
            .encode_rgba(ravif::Img::new(pixels.as_slice(), 64, 32))
            .unwrap()
            .avif_file
    }

    #[test]
    fn rav1e_avifs_of_8_and_10_bits_decode_to_their_colours() {
        for depth in [ravif::BitDepth::Eight, ravif::BitDepth::Ten] {
            let source = rav1e_bars(depth, false);
            let header = dav1d::sequence_header(
                &avif_parse::read_avif(&mut Cursor::new(&source))
                    .unwrap()
                    .primary_item,
            )
            .unwrap();
            let bits = if depth == ravif::BitDepth::Ten { 10 } else { 8 };
            assert_eq!(header.bit_depth, bits);
            assert_bars(&as_png(&source), &format!("{bits} bits"));
        }
        let img = as_png(&rav1e_bars(ravif::BitDepth::Ten, true));
        assert_close(&img.get_pixel(8, 8).0, &[255, 0, 0, 128], 8, "10-bit alpha");
    }

    #[test]
    fn a_pixmesh_avif_renders_like_its_source() {
        let jpeg = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/images/medium.jpg"),
        )
        .unwrap();
        let fit = |format| Transform {
            width: 400,
            fit: Fit::FitIn,
            format: OutputFormat::Fixed(format),
            quality: Some(95),
            ..Transform::default()
        };
        let avif = render(&jpeg, &fit(Format::Avif), &Limits::default()).unwrap();
        let from_avif = render(&avif.bytes, &fit(Format::Png), &Limits::default()).unwrap();
        let from_jpeg = render(&jpeg, &fit(Format::Png), &Limits::default()).unwrap();
        let (a, b) = (
            image::load_from_memory(&from_avif.bytes).unwrap().to_rgb8(),
            image::load_from_memory(&from_jpeg.bytes).unwrap().to_rgb8(),
        );
        assert_eq!(a.dimensions(), b.dimensions());
        let diff: u64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| u64::from(x.abs_diff(*y)))
            .sum();
        let mean = diff as f64 / a.as_raw().len() as f64;
        assert!(mean < 3.0, "mean difference {mean}");
    }

    #[test]
    fn what_would_render_wrong_is_refused_by_name() {
        let bars = fixture("bars-420.avif");
        let err =
            |source: &[u8]| render(source, &Transform::default(), &Limits::default()).unwrap_err();
        // An AVIF sequence (animation).
        let mut sequence = bars.clone();
        sequence[8..12].copy_from_slice(b"avis");
        let e = err(&sequence);
        assert_eq!(e.http_status(), 415, "{e}");
        // Truncated: every prefix is an error, never a panic.
        for len in 0..bars.len() {
            let e = err(&bars[..len]);
            assert!(matches!(e.http_status(), 415 | 422), "{len}: {e}");
        }
        // An essential property pixmesh does not know; unknown ones that are not essential
        // are ignored.
        let rename = |name: &str, kind: &[u8; 4], to: &[u8; 4]| {
            let mut source = fixture(name);
            let at = source.windows(4).position(|w| w == kind).unwrap();
            source[at..at + 4].copy_from_slice(to);
            source
        };
        let e = err(&rename("bars-irot.avif", b"irot", b"zrot"));
        assert_eq!(e.http_status(), 415, "{e}");
        assert!(
            e.to_string().contains("the essential property 'zrot'"),
            "{e}"
        );
        let unknown = rename("bars-irot.avif", b"pixi", b"zixi");
        assert!(render(&unknown, &Transform::default(), &Limits::default()).is_ok());
        // A corrupt AV1 payload: OBU headers with the forbidden bit set.
        let mut corrupt = bars.clone();
        let mdat = corrupt.windows(4).position(|w| w == b"mdat").unwrap() + 4;
        corrupt[mdat..mdat + 8].fill(0xff);
        assert_eq!(err(&corrupt).http_status(), 422);
    }

    #[test]
    fn any_damaged_byte_is_an_image_or_a_client_error() {
        let source = fixture("bars-alpha.avif");
        for at in 0..source.len() {
            let mut damaged = source.clone();
            damaged[at] ^= 0xff;
            if let Err(e) = render(&damaged, &Transform::default(), &Limits::default()) {
                assert!(matches!(e.http_status(), 413 | 415 | 422), "byte {at}: {e}");
            }
        }
    }

    #[test]
    fn the_declared_size_is_checked_before_decoding() {
        let mut huge = fixture("bars-420.avif");
        let at = huge.windows(4).position(|w| w == b"ispe").unwrap() + 8;
        huge[at..at + 8].copy_from_slice(&[0, 1, 0, 0, 0, 1, 0, 0]); // 65536 × 65536
        let e = render(&huge, &Transform::default(), &Limits::default()).unwrap_err();
        assert_eq!(e.http_status(), 413, "{e}");
        let e = crate::pipeline::memory_needed(&huge, &Transform::default(), &Limits::default())
            .unwrap_err();
        assert_eq!(e.http_status(), 413, "{e}");
        let bars = fixture("bars-420.avif");
        let needed =
            crate::pipeline::memory_needed(&bars, &Transform::default(), &Limits::default())
                .unwrap();
        assert!(needed >= AvifDecoder::decoder_bytes(64, 32), "{needed}");
    }

    #[test]
    fn heif_transformations_as_orientations() {
        use Orientation::*;
        for (angle, mirror, want) in [
            (0, None, NoTransforms),
            (1, None, Rotate270),
            (2, None, Rotate180),
            (3, None, Rotate90),
            (0, Some(0), FlipHorizontal),
            (0, Some(1), FlipVertical),
            (1, Some(0), Rotate270FlipH),
            (3, Some(0), Rotate90FlipH),
            (1, Some(1), Rotate90FlipH),
        ] {
            assert_eq!(
                orientation(angle, mirror),
                want,
                "irot {angle} imir {mirror:?}"
            );
        }
    }

    #[test]
    fn colour_descriptions_other_than_srgb_become_profiles() {
        let cicp = |primaries, transfer| Cicp {
            primaries,
            transfer,
            matrix: 1,
            full_range: true,
        };
        assert_eq!(cicp_profile(cicp(1, 13)).unwrap(), None, "sRGB");
        assert_eq!(cicp_profile(cicp(2, 2)).unwrap(), None, "unspecified");
        for (primaries, transfer, what) in
            [(12, 13, "Display P3"), (9, 1, "BT.2020"), (1, 8, "linear")]
        {
            let icc = cicp_profile(cicp(primaries, transfer))
                .unwrap()
                .expect(what);
            let profile = ColorProfile::new_from_slice(&icc).unwrap();
            assert_eq!(profile.color_space, moxcms::DataColorSpace::Rgb, "{what}");
        }
        assert!(cicp_profile(cicp(200, 13)).is_err(), "reserved primaries");
    }
}
