//! Step 4: decode. JPEG by libjpeg-turbo with DCT scaling and still WebP by libwebp scaled while
//! decoding (the shrink-on-load factor is chosen here: [`shrink_on_load`]), PNG by `image`, a GIF's
//! first frame by the `gif` crate on its logical screen, AVIF through [`super::avif`].

use image::{DynamicImage, ImageDecoder};
use pixmesh_core::transform::Format;

use super::codecs;
use super::error::{PipelineError, dimension, image_error};
use super::geometry::Geometry;
use super::header::image_limits;
use super::limits::Limits;

/// The factor to shrink the source by while decoding it, for a source that will be reduced per
/// `g`; 1 when it is decoded at full size. The rule is libvips' for JPEG: leave at least a 2×
/// reduction to the Lanczos3 resize in the least-reduced direction, so quality matches a
/// full-size decode. A JPEG shrinks by its DCT scaling denominators (2, 4 or 8); a still WebP
/// by any factor (libwebp's rescaler, an area average), so it is decoded at twice the output
/// size, when that is at least 1.25× smaller than the source. GIF and PNG: 1.
pub(super) fn shrink_on_load(format: Format, g: &Geometry) -> f64 {
    let reduction = (g.crop.width / f64::from(g.width)).min(g.crop.height / f64::from(g.height));
    match format {
        Format::Jpeg => [8.0, 4.0, 2.0]
            .into_iter()
            .find(|&d| reduction >= 2.0 * d)
            .unwrap_or(1.0),
        Format::Webp if reduction >= 2.0 * WEBP_MIN_SHRINK => reduction / 2.0,
        _ => 1.0,
    }
}

/// The smallest shrink-on-load factor worth asking libwebp's rescaler for.
pub(super) const WEBP_MIN_SHRINK: f64 = 1.25;

/// Decodes the pixels: JPEGs with libjpeg-turbo at 1/`shrink` scale, still WebPs with libwebp
/// at 1/`shrink` scale, the first frame of a GIF with `gif`, everything else (PNG, a WebP
/// animation's first frame) with `image`, reserving the decoded size against its allocation
/// limit first.
pub(super) fn decode(
    source: &[u8],
    decoder: impl ImageDecoder,
    format: Format,
    limits: &Limits,
    shrink: f64,
) -> Result<DynamicImage, PipelineError> {
    if format == Format::Jpeg
        && let Some(image) = decode_jpeg(source, shrink as u8)?
    {
        return Ok(image);
    }
    if format == Format::Webp && !codecs::libwebp::features(source)?.animated {
        return decode_webp(source, decoder.dimensions(), shrink);
    }
    if format == Format::Gif {
        return decode_gif(source, limits);
    }
    image_limits(limits)
        .reserve(decoder.total_bytes())
        .map_err(|e| image_error(e, format, "decode"))?;
    DynamicImage::from_decoder(decoder).map_err(|e| image_error(e, format, "decode"))
}

/// Decodes a JPEG to RGB with libjpeg-turbo, DCT-scaled by 1/`shrink`. `None` for CMYK/YCCK
/// JPEGs, which libjpeg-turbo cannot convert to RGB: `image` decodes those (at full size).
/// The caller has checked the header's size against the limits.
pub(super) fn decode_jpeg(
    source: &[u8],
    shrink: u8,
) -> Result<Option<DynamicImage>, PipelineError> {
    let fail = |e: turbojpeg::Error| PipelineError::Corrupt(format!("jpeg decode: {e}"));
    let mut decompressor = turbojpeg::Decompressor::new().map_err(fail)?;
    let header = decompressor.read_header(source).map_err(fail)?;
    if is_cmyk(header.colorspace) {
        return Ok(None);
    }
    let scale = turbojpeg::ScalingFactor::new(1, usize::from(shrink));
    if !header.is_lossless {
        decompressor.set_scaling_factor(scale).map_err(fail)?;
    }
    let size = decompressor.scaling_factor();
    let (width, height) = (size.scale(header.width), size.scale(header.height));
    let mut pixels = vec![0; width * height * 3];
    let output = turbojpeg::Image {
        pixels: pixels.as_mut_slice(),
        width,
        pitch: width * 3,
        height,
        format: turbojpeg::PixelFormat::RGB,
    };
    decompressor.decompress(source, output).map_err(fail)?;
    let (w, h) = (dimension(width)?, dimension(height)?);
    let image = image::RgbImage::from_raw(w, h, pixels)
        .ok_or_else(|| PipelineError::Corrupt("jpeg decode: short pixel buffer".into()))?;
    Ok(Some(DynamicImage::ImageRgb8(image)))
}

/// Whether libjpeg-turbo leaves this colourspace to `image` (it cannot convert it to RGB).
pub(super) fn is_cmyk(colorspace: turbojpeg::Colorspace) -> bool {
    matches!(
        colorspace,
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
    )
}

/// Decodes a still WebP with libwebp, scaled by 1/`shrink` while decoding (each side rounded,
/// at least 1) when `shrink` is above 1. The caller has checked `(width, height)`, the size
/// from the header, against the limits.
pub(super) fn decode_webp(
    source: &[u8],
    (width, height): (u32, u32),
    shrink: f64,
) -> Result<DynamicImage, PipelineError> {
    let scaled = (shrink > 1.0).then(|| {
        let side = |n: u32| ((f64::from(n) / shrink).round() as u32).clamp(1, n);
        (side(width), side(height))
    });
    let d = codecs::libwebp::decode(source, scaled)?;
    let image = if d.alpha {
        image::RgbaImage::from_raw(d.width, d.height, d.pixels).map(DynamicImage::ImageRgba8)
    } else {
        image::RgbImage::from_raw(d.width, d.height, d.pixels).map(DynamicImage::ImageRgb8)
    };
    image.ok_or_else(|| PipelineError::Corrupt("webp decode: short pixel buffer".into()))
}

/// Decodes the first frame of a GIF as RGBA, drawn at its place on the logical screen (whose
/// size the caller has checked); what the frame does not cover is transparent. The frame's own
/// declared size is checked against [`Limits::max_source_pixels`] before its pixels are
/// decoded, and nothing after it is ever read.
pub(super) fn decode_gif(source: &[u8], limits: &Limits) -> Result<DynamicImage, PipelineError> {
    let fail = |e: gif::DecodingError| match e {
        gif::DecodingError::MemoryLimit | gif::DecodingError::OutOfMemory => {
            PipelineError::TooLarge(format!("gif decode: {e}"))
        }
        e => PipelineError::Corrupt(format!("gif decode: {e}")),
    };
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    // Bounds what the decoder allocates for metadata (ICC, XMP) besides the frame.
    let budget = limits.max_source_pixels.saturating_mul(4).max(1);
    options.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(budget).unwrap_or(std::num::NonZeroU64::MIN),
    ));
    let mut decoder = options.read_info(source).map_err(fail)?;
    let (width, height) = (u32::from(decoder.width()), u32::from(decoder.height()));
    let frame = decoder
        .next_frame_info()
        .map_err(fail)?
        .ok_or_else(|| PipelineError::Corrupt("gif has no frames".to_owned()))?;
    let (left, top) = (u32::from(frame.left), u32::from(frame.top));
    let (frame_w, frame_h) = (u32::from(frame.width), u32::from(frame.height));
    let frame_pixels = u64::from(frame_w) * u64::from(frame_h);
    if frame_pixels > limits.max_source_pixels {
        return Err(PipelineError::TooLarge(format!(
            "the gif's first frame is {frame_w}x{frame_h} ({frame_pixels} pixels), the limit is {} pixels",
            limits.max_source_pixels
        )));
    }
    let mut pixels = vec![0; frame_pixels as usize * 4];
    if frame_pixels > 0 {
        decoder.read_into_buffer(&mut pixels).map_err(fail)?;
    }
    let rgba = if (left, top, frame_w, frame_h) == (0, 0, width, height) {
        pixels
    } else {
        let mut canvas = vec![0; width as usize * height as usize * 4];
        // The part of the frame on the screen: rows from `top`, columns from `left`.
        let visible_w = frame_w.min(width.saturating_sub(left)) as usize * 4;
        // A frame wholly off the screen shows nothing (and its offset may lie past the canvas).
        let visible_h = match visible_w {
            0 => 0,
            _ => frame_h.min(height.saturating_sub(top)) as usize,
        };
        let (frame_stride, canvas_stride) = (frame_w as usize * 4, width as usize * 4);
        for y in 0..visible_h {
            let from = y * frame_stride;
            let to = (top as usize + y) * canvas_stride + left as usize * 4;
            canvas[to..to + visible_w].copy_from_slice(&pixels[from..from + visible_w]);
        }
        canvas
    };
    let image = image::RgbaImage::from_raw(width, height, rgba)
        .ok_or_else(|| PipelineError::Corrupt("gif decode: short pixel buffer".into()))?;
    Ok(DynamicImage::ImageRgba8(image))
}

#[cfg(test)]
mod tests {
    use image::{Rgba, RgbaImage};
    use pixmesh_core::transform::OutputFormat;
    use pixmesh_core::transform::{Fit, Format, Transform};

    use super::*;
    use crate::pipeline::tests::*;
    use crate::pipeline::{geometry::*, limits::*, pixels::*, resize::*, *};

    #[test]
    fn shrink_on_load_leaves_at_least_twice_the_reduction_to_the_resize() {
        let shrink =
            |w0, h0, t: Transform| shrink_on_load(Format::Jpeg, &compute_geometry(w0, h0, &t));
        assert_eq!(shrink(2560, 1600, transform(320, 320, Fit::FitIn)), 4.0); // 8× → 1/4
        assert_eq!(shrink(2560, 1600, transform(160, 0, Fit::FitIn)), 8.0); // 16× → 1/8
        assert_eq!(shrink(2560, 1600, transform(1000, 0, Fit::FitIn)), 1.0); // 2.56× → none
        assert_eq!(shrink(2560, 1600, transform(600, 0, Fit::FitIn)), 2.0); // 4.3× → 1/2
        // Fill crops the long side: the short side's reduction decides.
        assert_eq!(shrink(2560, 1600, transform(400, 400, Fit::Fill)), 2.0); // 4× → 1/2
        // Stretch: the least-reduced direction decides.
        assert_eq!(shrink(2560, 1600, transform(100, 1600, Fit::Stretch)), 1.0);
        assert_eq!(shrink(2560, 1600, transform(320, 0, Fit::FitIn)), 4.0);
        let png = compute_geometry(2560, 1600, &transform(100, 0, Fit::FitIn));
        assert_eq!(
            shrink_on_load(Format::Png, &png),
            1.0,
            "only JPEG and WebP decode scaled"
        );
    }

    /// Mean absolute difference per channel between two same-sized pixel buffers.
    fn mean_abs_diff(a: &Pixels, b: &Pixels) -> f64 {
        assert_eq!((a.width, a.height, a.alpha), (b.width, b.height, b.alpha));
        let sum: u64 = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| u64::from(x.abs_diff(y)))
            .sum();
        sum as f64 / a.data.len() as f64
    }

    #[test]
    fn shrink_on_load_matches_a_full_size_decode() {
        let source = testdata("medium.jpg");
        for t in [
            transform(320, 320, Fit::FitIn),
            transform(150, 150, Fit::Fill),
            transform(100, 60, Fit::Stretch),
        ] {
            let geometry = compute_geometry(2560, 1600, &t);
            let shrink = shrink_on_load(Format::Jpeg, &geometry);
            assert!(shrink > 1.0, "{t:?}");
            let shrink = shrink as u8;
            let full = normalise(decode_jpeg(&source, 1).unwrap().unwrap()).unwrap();
            let full = resize(full, &geometry).unwrap();
            let scaled = normalise(decode_jpeg(&source, shrink).unwrap().unwrap()).unwrap();
            assert_eq!(scaled.width, 2560 / u32::from(shrink));
            let scaled = resize(
                scaled,
                &geometry.on_decoded(
                    2560,
                    1600,
                    2560 / u32::from(shrink),
                    1600 / u32::from(shrink),
                ),
            )
            .unwrap();
            let diff = mean_abs_diff(&full, &scaled);
            assert!(diff < 2.0, "{t:?}: mean difference {diff:.2} of 255");
        }
    }

    #[test]
    fn webp_shrink_on_load_decodes_at_twice_the_output_size() {
        let shrink =
            |w0, h0, t: Transform| shrink_on_load(Format::Webp, &compute_geometry(w0, h0, &t));
        assert_eq!(shrink(2560, 1600, transform(800, 800, Fit::FitIn)), 1.6); // 3.2× → 1/1.6
        assert_eq!(shrink(2560, 1600, transform(160, 0, Fit::FitIn)), 8.0); // 16× → 1/8
        assert_eq!(shrink(2560, 1600, transform(1000, 0, Fit::FitIn)), 1.28); // 2.56×
        assert_eq!(shrink(2560, 1600, transform(1100, 0, Fit::FitIn)), 1.0); // 2.33×: not worth it
        // Fill: the short side's reduction decides; stretch: the least-reduced direction.
        assert_eq!(shrink(2560, 1600, transform(400, 400, Fit::Fill)), 2.0);
        assert_eq!(shrink(2560, 1600, transform(100, 1600, Fit::Stretch)), 1.0);
    }

    #[test]
    fn webp_shrink_on_load_matches_a_full_size_decode() {
        let source = testdata("medium.webp");
        for t in [
            transform(800, 800, Fit::FitIn),
            transform(150, 150, Fit::Fill),
            transform(100, 60, Fit::Stretch),
        ] {
            let geometry = compute_geometry(2560, 1600, &t);
            let shrink = shrink_on_load(Format::Webp, &geometry);
            assert!(shrink > 1.0, "{t:?}");
            let full = normalise(decode_webp(&source, (2560, 1600), 1.0).unwrap()).unwrap();
            assert_eq!((full.width, full.height), (2560, 1600));
            let full = resize(full, &geometry).unwrap();
            let scaled = normalise(decode_webp(&source, (2560, 1600), shrink).unwrap()).unwrap();
            let expected = |n: f64| (n / shrink).round() as u32;
            assert_eq!(
                (scaled.width, scaled.height),
                (expected(2560.0), expected(1600.0)),
                "{t:?}"
            );
            let (w, h) = (scaled.width, scaled.height);
            let scaled = resize(scaled, &geometry.on_decoded(2560, 1600, w, h)).unwrap();
            let diff = mean_abs_diff(&full, &scaled);
            assert!(diff < 2.0, "{t:?}: mean difference {diff:.2} of 255");
        }
        // Through the whole pipeline: the size asked for.
        let r = render(
            &source,
            &transform(800, 800, Fit::FitIn),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!((r.width, r.height), (800, 500));
    }

    #[test]
    fn webp_shrink_on_load_keeps_alpha() {
        // Left half opaque red, right half fully transparent; 1/4 decode for a 50-pixel fit.
        let img = RgbaImage::from_fn(400, 200, |x, _| {
            if x < 200 {
                Rgba([255, 0, 0, 255])
            } else {
                Rgba([0, 0, 255, 0])
            }
        });
        let geometry = compute_geometry(400, 200, &transform(50, 0, Fit::FitIn));
        assert_eq!(shrink_on_load(Format::Webp, &geometry), 4.0);
        let t = Transform {
            format: OutputFormat::Fixed(Format::Png),
            ..transform(50, 0, Fit::FitIn)
        };
        let out = decoded(&render(&webp_of(&img), &t, &Limits::default()).unwrap()).to_rgba8();
        assert_eq!(out.dimensions(), (50, 25));
        assert_eq!(*out.get_pixel(5, 12), Rgba([255, 0, 0, 255]));
        assert_eq!(out.get_pixel(45, 12)[3], 0);
    }
}
