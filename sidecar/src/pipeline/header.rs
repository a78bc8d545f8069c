//! Step 2: read the header (dimensions, orientation, colour profile) without decoding pixels;
//! `image`'s own allocation limit; the source size checked against the limits.

use std::io::Cursor;

use image::ImageDecoder;
use image::metadata::Orientation;
use moxcms::ColorProfile;
use pixmesh_core::transform::Format;

use super::avif;
use super::encode::image_format;
use super::error::{PipelineError, image_error};
use super::limits::Limits;

/// Bytes per decoded pixel budgeted for `image`'s allocation limit: 16-bit RGBA, the widest
/// layout the enabled decoders produce.
pub(super) const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Slack on top of the pixel budget for decoder-internal buffers (PNG rows, metadata chunks).
pub(super) const DECODER_SLACK_BYTES: u64 = 64 << 20;

/// `image`'s limits: an allocation cap derived from [`Limits::max_source_pixels`], so a decoder
/// that allocates more than the pixel check allowed for fails instead of exhausting memory.
pub(super) fn image_limits(limits: &Limits) -> image::Limits {
    let mut l = image::Limits::default();
    l.max_alloc = Some(
        limits
            .max_source_pixels
            .saturating_mul(MAX_BYTES_PER_PIXEL)
            .saturating_add(DECODER_SLACK_BYTES),
    );
    l
}

/// Opens a decoder on `source`; this parses the header only.
pub(super) fn read_header<'a>(
    source: &'a [u8],
    format: Format,
    limits: &Limits,
) -> Result<Box<dyn ImageDecoder + 'a>, PipelineError> {
    if format == Format::Avif {
        return Ok(Box::new(avif::AvifDecoder::new(source, limits)?));
    }
    let mut reader = image::ImageReader::with_format(Cursor::new(source), image_format(format));
    reader.limits(image_limits(limits));
    let decoder = reader
        .into_decoder()
        .map_err(|e| image_error(e, format, "header"))?;
    Ok(Box::new(decoder))
}

/// Rejects empty images and sources over [`Limits::max_source_pixels`].
pub(super) fn check_source_size(
    (width, height): (u32, u32),
    limits: &Limits,
) -> Result<(), PipelineError> {
    if width == 0 || height == 0 {
        return Err(PipelineError::Corrupt(format!(
            "image header declares {width}x{height}"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_source_pixels {
        return Err(PipelineError::TooLarge(format!(
            "source is {width}x{height} ({pixels} pixels), the limit is {} pixels",
            limits.max_source_pixels
        )));
    }
    Ok(())
}

/// The EXIF orientation; unreadable metadata is ignored rather than failing the image.
pub(super) fn read_orientation(decoder: &mut impl ImageDecoder) -> Orientation {
    decoder.orientation().unwrap_or(Orientation::NoTransforms)
}

/// The source's embedded ICC profile, when it describes RGB pixels in another colour space
/// than sRGB (Display P3, Adobe RGB, ProPhoto, …): `None` without one, for sRGB itself (same
/// primaries), for CMYK and grey profiles (`image` has already converted those pixels to RGB)
/// and for a profile that does not parse, which is ignored as browsers ignore it.
pub(super) fn read_color_profile(decoder: &mut impl ImageDecoder) -> Option<ColorProfile> {
    let bytes = decoder.icc_profile().ok()??;
    let profile = ColorProfile::new_from_slice(&bytes).ok()?;
    let srgb = ColorProfile::new_srgb();
    let same = |a: moxcms::Xyzd, b: moxcms::Xyzd| {
        (a.x - b.x).abs() < 2e-3 && (a.y - b.y).abs() < 2e-3 && (a.z - b.z).abs() < 2e-3
    };
    let is_srgb = same(profile.red_colorant, srgb.red_colorant)
        && same(profile.green_colorant, srgb.green_colorant)
        && same(profile.blue_colorant, srgb.blue_colorant);
    (profile.color_space == moxcms::DataColorSpace::Rgb && !is_srgb).then_some(profile)
}

/// The size of the image once `orientation` is applied: quarter turns swap the sides.
pub(super) fn upright_size((width, height): (u32, u32), orientation: Orientation) -> (u32, u32) {
    match orientation {
        Orientation::Rotate90
        | Orientation::Rotate270
        | Orientation::Rotate90FlipH
        | Orientation::Rotate270FlipH => (height, width),
        _ => (width, height),
    }
}
