//! The render pipeline: decode → orient → trim ([`trim`]) → crop → smart crop placement
//! ([`smart`]) → resize → to sRGB → flip → grayscale → blur → sharpen → ordered effects → pad →
//! flatten → rotate → final ordered effects (`color`) → watermark ([`watermark`]) → encode →
//! keep the ICC profile ([`icc`]), as a list of named
//! steps.
//!
//! Formats: JPEG, PNG, WebP and GIF in and out, AVIF in ([`avif`], libdav1d) and out (ravif).
//! Animated GIF and WebP sources stay animated when the output is GIF or WebP ([`animation`]: every frame through the same steps, up to
//! [`Limits::max_animation_frames`]). Otherwise a GIF is read as its first frame, placed on
//! the GIF's logical screen (transparent around it); later frames are never read, so an
//! animation of thousands of frames costs what its first frame costs. Outputs carry no
//! metadata (EXIF, XMP, ICC); a source with a non-sRGB ICC profile is converted to sRGB, unless
//! the transform keeps the profile ([`icc`]: embedded as it is, pixels unconverted). The
//! output format is
//! [resolved](pixmesh_core::transform::OutputFormat::resolve) once the pixels are known: the
//! source's, a fixed one, or, for "auto" without WebP, a compatible one (a WebP source becomes
//! PNG when the result is transparent, JPEG when it is opaque).
//!
//! [`render_overlaid`] reads as the list of steps (and [`frame_steps`] as those a still and each
//! frame of an animation go through alike); each step is a function in a file of its own:
//! `sniff` (1), `header` (2), `geometry` (3; `plan` runs 1–3 and plans again on the decoded
//! pixels), `decode` (4, shrink-on-load), `pixels` (5, orient and normalise), `resize` (6),
//! `effects` (6b–13) and `color` (the ordered effects: thumbor's colour filters, in URL order),
//! [`watermark`], `encode` (14), [`icc`]; `memory` is the estimate
//! ([`memory_needed`]), `limits` and `error` the types every step shares. The geometry
//! follows thumbor/imagor semantics (see [`Transform`]): `fit-in`, fill-and-crop (the default) and
//! stretch, never upscaling unless asked. The effects run on the resized image, so their cost
//! follows the output size: blur and sharpen are separable passes whose cost does not depend on
//! the sigma (three box blurs approximate a Gaussian beyond a small sigma), rotation is a copy,
//! and `image::imageops` is never used on the hot path.
//!
//! Safety properties:
//! - The source size is checked against [`Limits::max_source_pixels`] from the image header,
//!   before any pixel is decoded (decompression bombs), and `image`'s own allocation limit is set
//!   as a second line of defence. A GIF's frames, which declare sizes of their own (larger
//!   than the logical screen, even), count with those: each frame read and all of them
//!   together within [`Limits::max_source_pixels`], checked from their headers before any is
//!   decoded, and in [`memory_needed`].
//! - The header's metadata is bounded before any decoder reads it ([`icc`]): an ICC profile
//!   over 4 MiB (a PNG's inflated in a fixed window: a zlib bomb is never inflated) and a
//!   WebP metadata chunk claiming more bytes than the file has are refused (422), and what the
//!   metadata costs to read counts in [`memory_needed`].
//! - The output size, padding included, is checked against [`Limits::max_output_pixels`]
//!   before anything is decoded or allocated for it, and an AVIF output against
//!   [`Limits::max_avif_output_pixels`]; a `max_bytes` search spends at most
//!   [`MAX_BYTES_AVIF_PIXELS`] on AVIF encodes. The slowest encode stays bounded per URL.
//! - No step panics on any input: pixel arithmetic is done in `u64`/`f64` and every
//!   data-dependent failure is a [`PipelineError`].
//!
//! Performance notes (DESIGN.md §3): JPEGs are decoded and encoded by libjpeg-turbo, decoded
//! with DCT scaling (shrink-on-load, libvips' rule: 1/2, 1/4 or 1/8 while leaving at least 2×
//! to the resize), the largest single saving. Still WebPs are decoded by libwebp, scaled while
//! decoding by any factor that leaves 2× to the resize; PNG by `image` at full size, GIF by
//! the `gif` crate. GIF output is quantized to 256 colours by NeuQuant (what `image`
//! offers), at a sampling speed that keeps it linear in the output size.
//! Resizing uses `fast_image_resize` (Lanczos3), with the fill crop folded into the resize so
//! crop and resize are one pass.

mod animation;
mod avif;
pub mod cancel;
pub mod codecs;
mod color;
mod decode;
mod effects;
mod encode;
mod error;
mod geometry;
mod header;
mod icc;
mod limits;
mod memory;
pub mod phases;
mod pixels;
mod plan;
mod resize;
mod smart;
mod sniff;
/// Named steps of [`render`] on their own, for `benches/steps.rs` (criterion, per step): the
/// same functions `render` calls, run on the output of the step before. Not an API.
#[doc(hidden)]
pub mod steps;
#[cfg(test)]
mod tests;
mod trim;
pub mod watermark;

pub use encode::{
    DEFAULT_AVIF_BIT_DEPTH, DEFAULT_AVIF_QUALITY, DEFAULT_AVIF_SPEED, DEFAULT_JPEG_QUALITY,
    DEFAULT_WEBP_QUALITY, Encoding, MAX_BYTES_AVIF_PIXELS, MAX_BYTES_ENCODES, Rendered,
};
pub use error::PipelineError;
pub use limits::{
    DEFAULT_MAX_ANIMATION_FRAMES, DEFAULT_MAX_AVIF_OUTPUT_PIXELS, Limits, MAX_AVIF_DIMENSION,
    MAX_GIF_DIMENSION, MAX_JPEG_DIMENSION, MAX_WEBP_DIMENSION,
};
pub use memory::{memory_needed, memory_needed_overlaid, watermark_decode_memory_needed};

use image::ImageDecoder;
use moxcms::ColorProfile;
use pixmesh_core::transform::Transform;

use decode::decode;
use effects::{blur, flatten, flip, grayscale, pad, rotate, sharpen, to_srgb};
use encode::{encode, has_transparency};
use geometry::Geometry;
use header::read_color_profile;
use pixels::{Pixels, apply_orientation, normalise};
use plan::{Plan, plan, replan};
use resize::resize;

/// Renders `source` (the encoded bytes of the stored object) as `t` asks, with the default
/// [`Encoding`]. CPU-bound and synchronous: callers run it on a blocking thread.
pub fn render(source: &[u8], t: &Transform, limits: &Limits) -> Result<Rendered, PipelineError> {
    render_with(source, t, limits, &Encoding::default())
}

/// [`render`] with the encoder defaults `encoding` (the sidecar's configuration).
pub fn render_with(
    source: &[u8],
    t: &Transform,
    limits: &Limits,
    encoding: &Encoding,
) -> Result<Rendered, PipelineError> {
    render_overlaid(source, t, None, limits, encoding)
}

/// [`render_with`] with a watermark composited onto the final image ([`watermark`]).
pub fn render_overlaid(
    source: &[u8],
    t: &Transform,
    overlay: Option<&watermark::Overlay>,
    limits: &Limits,
    encoding: &Encoding,
) -> Result<Rendered, PipelineError> {
    let Plan {
        source_format,
        mut decoder,
        orientation,
        width,
        height,
        geometry,
        shrink,
    } = plan(source, t, limits)?;
    let kept_icc = icc::kept(&mut decoder, t, source_format)?;
    if let Some(animation) = animation::render(
        source,
        source_format,
        decoder.dimensions(),
        t,
        overlay,
        limits,
    )? {
        return icc::embed(animation, kept_icc.as_deref());
    }
    let profile = match t.keep_icc {
        true => None,
        false => read_color_profile(&mut decoder),
    };
    let image = phases::timed("decode", || {
        decode(source, decoder, source_format, limits, shrink)
    })?;
    crate::pipeline::cancel::check()?;
    let image = apply_orientation(image, orientation);
    let mut pixels = normalise(image)?;
    let (mut geometry, mut frame) = replan(&pixels, (width, height), geometry, t, limits)?;
    let decoded = trim::Decoded {
        source,
        format: source_format,
        orientation,
        limits,
        shrink,
    };
    crate::pipeline::cancel::check()?;
    if let Some(sharper) = trim::decode_again(&decoded, &geometry)? {
        (geometry, frame) = replan(&sharper, (width, height), geometry, t, limits)?;
        pixels = sharper;
    }
    let (pixels, geometry) = trim::cut(pixels, &frame, (width, height), geometry);
    let pixels = frame_steps(pixels, &geometry, profile.as_ref(), t, overlay)?;
    crate::pipeline::cancel::check()?;
    let format = t
        .format
        .resolve(source_format, || has_transparency(&pixels));
    let encoded = phases::timed("encode", || encode(pixels, format, t, encoding))?;
    icc::embed(encoded, kept_icc.as_deref())
}

/// The steps from resize to the watermark, which a still and each frame of an animation go
/// through alike; `profile` is the source's colour profile when it is not sRGB.
fn frame_steps(
    pixels: Pixels,
    geometry: &Geometry,
    profile: Option<&ColorProfile>,
    t: &Transform,
    overlay: Option<&watermark::Overlay>,
) -> Result<Pixels, PipelineError> {
    let pixels = phases::timed("resize", || resize(pixels, geometry))?;
    phases::timed("effects", || {
        let pixels = to_srgb(pixels, profile);
        let pixels = flip(pixels, t.flip_h, t.flip_v);
        let pixels = grayscale(pixels, t.grayscale);
        let pixels = blur(pixels, t.blur);
        let pixels = sharpen(pixels, t.sharpen);
        let pixels = color::apply(pixels, &t.effects);
        let pixels = pad(pixels, t);
        let pixels = flatten(pixels, t.background);
        let pixels = rotate(pixels, t.rotation);
        let pixels = color::apply(pixels, &t.final_effects);
        watermark::apply(pixels, overlay)
    })
}
