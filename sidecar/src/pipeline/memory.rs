//! The memory estimate: [`memory_needed`], from the header only, an upper bound of what a render
//! allocates, which the budget reserves before the render runs (`tests/memory_estimate.rs`): change
//! it with any step that allocates.

use image::ImageDecoder;
use pixmesh_core::transform::{Format, Transform};

use super::animation;
use super::avif;
use super::decode::{is_cmyk, shrink_on_load};
use super::error::{PipelineError, dimension};
use super::geometry::{Geometry, budgeted, check_avif_output, output_size};
use super::header::check_source_size;
use super::icc;
use super::limits::Limits;
use super::plan::{geometry, plan};
use super::smart;
use super::sniff::{check_complete, jpeg_coefficient_bytes, sniff_format};
use super::watermark;

/// What ravif and rav1e allocate per output pixel while encoding an AVIF: the YUV planes,
/// rav1e's reference, reconstruction and restoration buffers, for the colour and, encoded
/// beside it, the alpha. Measured at 10 bits (16-bit samples, the larger case): 38 bytes
/// without alpha and 51 with it (`tests/memory_estimate.rs`), rounded up.
pub(super) const AVIF_ENCODER_BYTES_PER_PIXEL: u64 = 64;

/// Fixed allowance per render for what [`memory_needed`] does not count: decoder state,
/// Huffman and filter tables, the encoder's own buffers.
pub(super) const RENDER_OVERHEAD_BYTES: u64 = 4 << 20;

/// An upper bound of the memory [`render`] allocates for `t` on `source`, besides `source`
/// itself, from the header alone, refusing what `render` would refuse from the header with the
/// same error. Conservative: the decoded image counts twice (orientation and normalising may
/// copy it), the output-sized buffers of the steps after the resize four times.
pub fn memory_needed(source: &[u8], t: &Transform, limits: &Limits) -> Result<u64, PipelineError> {
    memory_needed_overlaid(source, t, None, limits)
}

/// [`memory_needed`] of [`render_overlaid`]: the scaled watermark counts too.
pub fn memory_needed_overlaid(
    source: &[u8],
    t: &Transform,
    overlay: Option<&watermark::Overlay>,
    limits: &Limits,
) -> Result<u64, PipelineError> {
    let format = sniff_format(source)?;
    if format == Format::Jpeg
        && let Ok(header) = turbojpeg::read_header(source)
        && !is_cmyk(header.colorspace)
    {
        // libjpeg-turbo reads the header without the copy of the source `image`'s JPEG decoder
        // makes (`render` pays that, and it is counted). The EXIF orientation is not read: both
        // orientations are estimated and the larger counts.
        check_complete(source, format)?;
        let metadata = icc::metadata_bytes(source, format)?;
        let size = (dimension(header.width)?, dimension(header.height)?);
        check_source_size(size, limits)?;
        // A crop may only fit one of them: the other's error does not count.
        let estimates = [size, (size.1, size.0)].map(|(width, height)| {
            let geometry = budgeted(geometry(width, height, t, limits)?, size, t, limits);
            check_avif_output(&geometry, t, format, limits)?;
            // A trimmed box may need the source decoded again at full size.
            let shrink = match t.trim {
                Some(_) => 1.0,
                None => shrink_on_load(format, &geometry),
            };
            let side = |n: u32| (f64::from(n) / shrink).ceil() as u64;
            let decoded = side(width) * side(height) * 3;
            Ok(working_set(decoded, &geometry, format, t, overlay))
        });
        let needed = match estimates {
            [Err(e), Err(_)] => return Err(e),
            [a, b] => a.unwrap_or(0).max(b.unwrap_or(0)),
        };
        return Ok(needed
            .saturating_add(jpeg_coefficient_bytes(source))
            .saturating_add(source.len() as u64)
            .saturating_add(metadata.saturating_mul(icc::METADATA_COPIES)));
    }
    let plan = plan(source, t, limits)?;
    let metadata = icc::metadata_bytes(source, plan.source_format)?;
    let frames = animation::frames_kept(source, plan.source_format, t, limits)?;
    let decoded = match plan.source_format {
        // A CMYK JPEG: `image` decodes it at full size, from a copy of the source.
        Format::Jpeg => plan
            .decoder
            .total_bytes()
            .saturating_add(jpeg_coefficient_bytes(source))
            .saturating_add(source.len() as u64),
        // The logical screen, RGBA (an animation: the canvas, each frame's copy of it and
        // the rectangle a "previous" disposal restores), and the largest frame read, decoded
        // on its own: RGBA and the `gif` crate's palette indices. A frame may be larger than
        // the screen; its pixels count against the limits as the frames' sum.
        Format::Gif => {
            let read = animation::gif_frames(source, frames)?;
            animation::check_gif_frames(&read, limits)?;
            let screen = u64::from(plan.width) * u64::from(plan.height) * 4;
            screen * 3 + read.largest * 5
        }
        // libwebp's animation decoder: its canvas and the previous one, and each frame's copy.
        Format::Webp if frames > 1 => u64::from(plan.width) * u64::from(plan.height) * 4 * 2,
        // The RGB(A) result and libdav1d's YUV pictures.
        Format::Avif => plan
            .decoder
            .total_bytes()
            .saturating_add(avif::AvifDecoder::decoder_bytes(plan.width, plan.height)),
        _ => plan.decoder.total_bytes(),
    };
    let geometry = budgeted(plan.geometry, (plan.width, plan.height), t, limits);
    Ok(
        working_set(decoded, &geometry, plan.source_format, t, overlay)
            .saturating_add(held_frames(frames, &geometry, t))
            .saturating_add(metadata.saturating_mul(icc::METADATA_COPIES)),
    )
}

/// Output canvases an animation encoder holds besides the frames it is given: libwebp's
/// keeps the previous canvas and several candidate encodings of each frame's changed
/// rectangle (lossy and lossless, with and without blending), generously.
pub(super) const ANIMATION_ENCODER_CANVASES: u64 = 8;

/// What an animation of `frames` frames holds besides one frame's working set: every rendered
/// frame (RGBA, output-sized) until the last is rendered and they are encoded, and the
/// encoder's canvases. 0 for a still.
pub(super) fn held_frames(frames: u32, geometry: &Geometry, t: &Transform) -> u64 {
    if frames <= 1 {
        return 0;
    }
    let (out_w, out_h) = output_size(geometry, t);
    let canvas = u64::from(out_w) * u64::from(out_h) * 4;
    canvas.saturating_mul(u64::from(frames) + ANIMATION_ENCODER_CANVASES)
}

/// What a render holds at most, given the bytes its decoder produces (see [`memory_needed`]):
/// with a trim, the decode at full size its box may need (the first decode is dropped before
/// it); with smart crop, the attention's small planes; with AVIF output, rav1e's frame state.
pub(super) fn working_set(
    decoded: u64,
    geometry: &Geometry,
    source_format: Format,
    t: &Transform,
    overlay: Option<&watermark::Overlay>,
) -> u64 {
    let (out_w, out_h) = output_size(geometry, t);
    let output_pixels = u64::from(out_w) * u64::from(out_h);
    let output = output_pixels * 4;
    let attention = if t.smart { smart::WORKING_BYTES } else { 0 };
    // Transparency never makes the output AVIF.
    let encoder = match t.format.resolve(source_format, || false) {
        Format::Avif => output_pixels.saturating_mul(AVIF_ENCODER_BYTES_PER_PIXEL),
        _ => 0,
    };
    decoded
        .saturating_mul(2)
        .saturating_add(output.saturating_mul(4))
        .saturating_add(encoder)
        .saturating_add(attention)
        .saturating_add(watermark::memory_needed(overlay, out_w.max(out_h)))
        .saturating_add(RENDER_OVERHEAD_BYTES)
}

/// An upper bound of what [`decode_watermark`](super::watermark::decode_watermark) allocates for `bytes`, from the header: what a
/// render of the image at its own size allocates (see [`memory_needed`]).
pub fn watermark_decode_memory_needed(bytes: &[u8], limits: &Limits) -> Result<u64, PipelineError> {
    memory_needed(bytes, &Transform::default(), limits)
}

#[cfg(test)]
mod tests {
    use image::{Rgb, RgbImage};
    use pixmesh_core::transform::{Fit, Transform};

    use super::*;
    use crate::pipeline::limits::*;
    use crate::pipeline::tests::*;

    #[test]
    fn memory_estimates_cover_the_decode_and_refuse_what_render_refuses() {
        let jpeg = testdata("medium.jpg"); // 1280x800
        let full = 1280 * 800 * 3;
        let needed = |t: &Transform| memory_needed(&jpeg, t, &Limits::default()).unwrap();
        let large = needed(&transform(1200, 0, Fit::FitIn));
        assert!(large >= 2 * full + jpeg.len() as u64, "{large}");
        // A thumbnail decodes at an eighth of the size (shrink-on-load).
        let thumb = needed(&transform(100, 0, Fit::FitIn));
        assert!(thumb < large / 4, "{thumb} vs {large}");
        assert!(thumb >= 2 * (160 * 100 * 3), "{thumb}");
        // Padding counts the padded canvas.
        let padded = Transform {
            pad: true,
            ..transform(3000, 3000, Fit::FitIn)
        };
        assert!(needed(&padded) >= 4 * 3000 * 3000 * 4);
        // So does padding around the image (no `pad`), however small the image.
        let around = Transform {
            padding: Some(pixmesh_core::transform::Padding {
                left: 1000,
                top: 1500,
                right: 1000,
                bottom: 1500,
            }),
            ..transform(100, 0, Fit::FitIn)
        };
        assert!(needed(&around) >= 4 * (100 + 2000) * (63 + 3000) * 4);
        let png = testdata("alpha.png");
        let decoded = image::load_from_memory(&png).unwrap();
        let bytes = u64::from(decoded.width()) * u64::from(decoded.height()) * 4;
        let t = transform(50, 50, Fit::FitIn);
        assert!(memory_needed(&png, &t, &Limits::default()).unwrap() >= 2 * bytes);

        let bomb = png_claiming(100_000, 100_000);
        let err = memory_needed(&bomb, &t, &Limits::default()).unwrap_err();
        assert_eq!(err.http_status(), 413, "{err}");
        let err = memory_needed(b"not an image", &t, &Limits::default()).unwrap_err();
        assert_eq!(err.http_status(), 415, "{err}");
    }

    #[test]
    fn multi_scan_jpegs_count_their_whole_coefficient_buffer() {
        let rgb = RgbImage::from_fn(100, 60, |x, y| Rgb([x as u8, y as u8, (x * y) as u8]));
        let encode = |progressive: bool, subsamp| {
            let mut c = turbojpeg::Compressor::new().unwrap();
            c.set_subsamp(subsamp).unwrap();
            c.set_progressive(progressive).unwrap();
            c.compress_to_vec(turbojpeg::Image {
                pixels: rgb.as_raw().as_slice(),
                width: 100,
                pitch: 300,
                height: 60,
                format: turbojpeg::PixelFormat::RGB,
            })
            .unwrap()
        };
        // 4:2:0: luma 13x8 blocks, rounded up to whole 2x2 MCUs (14x8); each chroma 7x4.
        let progressive = encode(true, turbojpeg::Subsamp::Sub2x2);
        assert_eq!(jpeg_sof(&progressive), 0xC2);
        assert_eq!(
            jpeg_coefficient_bytes(&progressive),
            (14 * 8 + 2 * 7 * 4) * 128
        );
        let flat = encode(true, turbojpeg::Subsamp::None);
        assert_eq!(jpeg_coefficient_bytes(&flat), 3 * 13 * 8 * 128);
        // One interleaved scan: decoded a row of blocks at a time.
        let baseline = encode(false, turbojpeg::Subsamp::Sub2x2);
        assert_eq!(jpeg_coefficient_bytes(&baseline), 0);
        // A header cut short, or not a JPEG at all, says nothing (and does not panic).
        for cut in 0..progressive.len().min(700) {
            jpeg_coefficient_bytes(&progressive[..cut]);
        }
        assert_eq!(jpeg_coefficient_bytes(b"not a jpeg"), 0);

        // The estimate counts the buffer, once, on top of the (scaled) decode.
        let t = transform(20, 0, Fit::FitIn);
        let limits = Limits::default();
        let base = memory_needed(&baseline, &t, &limits).unwrap();
        let prog = memory_needed(&progressive, &t, &limits).unwrap();
        let extra = (14 * 8 + 2 * 7 * 4) * 128;
        assert!(prog >= base + extra - 1024, "{prog} vs {base}");
    }
}
