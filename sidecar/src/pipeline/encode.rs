//! Step 14: encode. JPEG by libjpeg-turbo, PNG, WebP, AVIF by ravif, GIF quantized by NeuQuant; the
//! encoder defaults ([`Encoding`]); `max_bytes`: the highest quality that fits, in few encodes.

use image::codecs::gif::GifEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder, ImageFormat};
use pixmesh_core::transform::{Color, Format, MAX_BYTES_MIN_QUALITY, Transform};

use super::effects::flatten_onto;
use super::error::PipelineError;
use super::limits::{
    MAX_AVIF_DIMENSION, MAX_GIF_DIMENSION, MAX_JPEG_DIMENSION, MAX_WEBP_DIMENSION,
};
use super::pixels::Pixels;

/// Default JPEG quality when the transform does not ask for one.
pub const DEFAULT_JPEG_QUALITY: u8 = 80;

/// Default WebP quality when the transform does not ask for one.
pub const DEFAULT_WEBP_QUALITY: u8 = 80;

/// Default AVIF quality (ravif's scale, where cavif's own default is 80) when the transform
/// does not ask for one (imgproxy's AVIF default is 63, on libaom's scale); not yet tuned
/// against WebP at equal SSIMULACRA2.
pub const DEFAULT_AVIF_QUALITY: u8 = 70;

/// Default rav1e speed preset for AVIF (1 slowest and smallest, 10 fastest; cavif's default
/// is 4): a fast preset, since each encode holds one of the pool's workers (one per core).
/// medium.jpg at 800×500, quality 70, 8 bits: speed 6 482 ms, 8 415 ms, 9 170 ms but a lower
/// SSIM at the same size, 10 131 ms and 25% larger.
pub const DEFAULT_AVIF_SPEED: u8 = 8;

/// Default bit depth of AVIF output: 8, like the pipeline's pixels. ravif's own default, 10,
/// gives the same SSIM in ~4% fewer bytes but takes 2.2× as long to encode (medium.jpg at
/// 800×500, speed 8: 838 ms at 10 bits, quality 70; 372 ms at 8 bits, quality 72).
pub const DEFAULT_AVIF_BIT_DEPTH: u8 = 8;

/// NeuQuant's sampling factor for GIF output (1 = every pixel trains the palette, 30 = one in
/// 30): 10 is the usual balance of quality and time, and keeps quantizing linear in the size.
pub(super) const GIF_QUANTIZE_SPEED: i32 = 10;

/// GIF transparency is all or nothing: pixels at least this opaque are kept (fully opaque),
/// the others become transparent.
pub(super) const GIF_ALPHA_THRESHOLD: u8 = 128;

/// Encoder settings that do not come from the URL (the sidecar's `[encoding]` configuration):
/// what a request that names no quality or scan mode gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// JPEG quality, 1–100.
    pub jpeg_quality: u8,
    /// WebP quality, 1–100.
    pub webp_quality: u8,
    /// AVIF quality, 1–100 (ravif's scale).
    pub avif_quality: u8,
    /// Write progressive JPEGs unless the request asks for baseline.
    pub jpeg_progressive: bool,
    /// rav1e speed preset, 1 (slowest, smallest) – 10 (fastest).
    pub avif_speed: u8,
    /// AVIF bits per sample: 8 or 10.
    pub avif_bit_depth: u8,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            webp_quality: DEFAULT_WEBP_QUALITY,
            avif_quality: DEFAULT_AVIF_QUALITY,
            jpeg_progressive: false,
            avif_speed: DEFAULT_AVIF_SPEED,
            avif_bit_depth: DEFAULT_AVIF_BIT_DEPTH,
        }
    }
}

impl Encoding {
    /// The quality `format` is encoded at when the request names none; `None` for the
    /// lossless formats.
    pub fn default_quality(&self, format: Format) -> Option<u8> {
        match format {
            Format::Jpeg => Some(self.jpeg_quality),
            Format::Webp => Some(self.webp_quality),
            Format::Avif => Some(self.avif_quality),
            Format::Png | Format::Gif => None,
        }
    }
}

/// The encoded result.
pub struct Rendered {
    /// The encoded image.
    pub bytes: Vec<u8>,
    /// The format of `bytes`.
    pub format: Format,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("bytes", &format_args!("[{} bytes]", self.bytes.len()))
            .field("format", &self.format)
            .field("width", &self.width)
            .field("height", &self.height)
            .finish()
    }
}

/// Whether any pixel is less than fully opaque: what decides between PNG and JPEG when a WebP
/// source goes to a client without WebP
/// ([`Compatible`](pixmesh_core::transform::OutputFormat::Compatible)).
pub(super) fn has_transparency(p: &Pixels) -> bool {
    p.alpha && p.data.chunks_exact(4).any(|px| px[3] < u8::MAX)
}

/// Encodes in `format`: lossy formats at the transform's quality (1–100) or the configured
/// default, within the transform's byte budget ([`fit_bytes`]); JPEG progressive or baseline as
/// the transform or the configuration says.
pub(super) fn encode(
    mut p: Pixels,
    format: Format,
    t: &Transform,
    enc: &Encoding,
) -> Result<Rendered, PipelineError> {
    let max_side = match format {
        Format::Jpeg => MAX_JPEG_DIMENSION,
        Format::Webp => MAX_WEBP_DIMENSION,
        Format::Gif => MAX_GIF_DIMENSION,
        Format::Avif => MAX_AVIF_DIMENSION,
        Format::Png => u32::MAX,
    };
    if p.width > max_side || p.height > max_side {
        return Err(PipelineError::TooLarge(format!(
            "{}x{} exceeds the {} limit of {max_side} pixels per side",
            p.width,
            p.height,
            format.name()
        )));
    }
    let quality = t
        .quality
        .or(enc.default_quality(format))
        .unwrap_or(DEFAULT_JPEG_QUALITY);
    let progressive = t.progressive.unwrap_or(enc.jpeg_progressive);
    let encodes = max_bytes_encodes(format, p.width, p.height);
    let bytes = match format {
        Format::Jpeg => fit_bytes(quality, t.max_bytes, encodes, |q| {
            encode_jpeg(&p, q, progressive)
        })?,
        Format::Webp => fit_bytes(quality, t.max_bytes, encodes, |q| encode_webp(&p, q))?,
        Format::Avif => fit_bytes(quality, t.max_bytes, encodes, |q| encode_avif(&p, q, enc))?,
        Format::Png => encode_png(&p)?,
        Format::Gif => encode_gif(&mut p)?,
    };
    Ok(Rendered {
        bytes,
        format,
        width: p.width,
        height: p.height,
    })
}

/// Most encodes [`fit_bytes`] makes: the first at the asked quality, then a binary search of
/// the qualities from [`MAX_BYTES_MIN_QUALITY`] up to it (⌈log2(100 − 10 + 1)⌉ = 7).
pub const MAX_BYTES_ENCODES: usize = 8;

/// Output pixels the AVIF encodes of one `max_bytes` search may add up to, its first encode
/// included (rav1e's time grows with the pixels, ~0.6 s of CPU per megapixel): a 4 MP output
/// gets the whole search, a 16 MP one ([`DEFAULT_MAX_AVIF_OUTPUT_PIXELS`]) two encodes (15 s
/// of CPU in a release build, where the unbounded search of a 50 MP output took 110 s).
pub const MAX_BYTES_AVIF_PIXELS: u64 = 32_000_000;

/// The encodes [`fit_bytes`] may make for a `width`×`height` output in `format`:
/// [`MAX_BYTES_ENCODES`], fewer for AVIF within [`MAX_BYTES_AVIF_PIXELS`], at least one.
pub(super) fn max_bytes_encodes(format: Format, width: u32, height: u32) -> usize {
    let pixels = (u64::from(width) * u64::from(height)).max(1);
    match format {
        Format::Avif => {
            (MAX_BYTES_AVIF_PIXELS / pixels).clamp(1, MAX_BYTES_ENCODES as u64) as usize
        }
        _ => MAX_BYTES_ENCODES,
    }
}

/// Encodes at `quality` and, when `max_bytes` is set and the result is larger, searches the
/// qualities from [`MAX_BYTES_MIN_QUALITY`] below `quality` for the highest whose result fits
/// (a binary search: sizes grow with quality, at most `encodes` encodes in all, which
/// [`max_bytes_encodes`] bounds by the cost of each). When none fits, the smallest result
/// tried is returned, as imgproxy does (thumbor returns its first, unreduced one): the client
/// gets an image rather than an error, and it is as close to the budget as pixmesh can get.
pub(super) fn fit_bytes(
    quality: u8,
    max_bytes: Option<u32>,
    encodes: usize,
    mut encode_at: impl FnMut(u8) -> Result<Vec<u8>, PipelineError>,
) -> Result<Vec<u8>, PipelineError> {
    let first = encode_at(quality)?;
    let Some(max) = max_bytes.map(|m| m as usize) else {
        return Ok(first);
    };
    if first.len() <= max {
        return Ok(first);
    }
    let (mut low, mut high) = (MAX_BYTES_MIN_QUALITY, quality.saturating_sub(1));
    let mut fitting: Option<Vec<u8>> = None;
    let mut smallest = first;
    let mut left = encodes.saturating_sub(1);
    while low <= high && left > 0 {
        left -= 1;
        crate::pipeline::cancel::check()?;
        let mid = low + (high - low) / 2;
        let out = encode_at(mid)?;
        if out.len() <= max {
            fitting = Some(out);
            low = mid + 1;
        } else {
            if out.len() < smallest.len() {
                smallest = out;
            }
            // mid ≥ MAX_BYTES_MIN_QUALITY ≥ 1: no underflow.
            high = mid - 1;
        }
    }
    Ok(fitting.unwrap_or(smallest))
}

/// JPEG via libjpeg-turbo, 4:2:0 like libvips' default, progressive (multi-scan) or baseline;
/// RGBA still there (no background, or a translucent one) is flattened onto white first.
pub(super) fn encode_jpeg(
    p: &Pixels,
    quality: u8,
    progressive: bool,
) -> Result<Vec<u8>, PipelineError> {
    let fail = |e: turbojpeg::Error| PipelineError::Encode(format!("jpeg: {e}"));
    let flattened;
    let rgb = if p.alpha {
        flattened = flatten_onto(&p.data, Color::WHITE);
        &flattened
    } else {
        &p.data
    };
    let mut compressor = turbojpeg::Compressor::new().map_err(fail)?;
    compressor
        .set_quality(i32::from(quality.clamp(1, 100)))
        .map_err(fail)?;
    compressor
        .set_subsamp(turbojpeg::Subsamp::Sub2x2)
        .map_err(fail)?;
    compressor.set_progressive(progressive).map_err(fail)?;
    let width = p.width as usize;
    compressor
        .compress_to_vec(turbojpeg::Image {
            pixels: rgb.as_slice(),
            width,
            pitch: width * 3,
            height: p.height as usize,
            format: turbojpeg::PixelFormat::RGB,
        })
        .map_err(fail)
}

/// PNG via `image`'s encoder (its default is fast compression with adaptive filtering).
pub(super) fn encode_png(p: &Pixels) -> Result<Vec<u8>, PipelineError> {
    let color = if p.alpha {
        ExtendedColorType::Rgba8
    } else {
        ExtendedColorType::Rgb8
    };
    let mut out = Vec::new();
    PngEncoder::new(&mut out)
        .write_image(&p.data, p.width, p.height, color)
        .map_err(|e| PipelineError::Encode(format!("png: {e}")))?;
    Ok(out)
}

/// Lossy WebP via libwebp.
pub(super) fn encode_webp(p: &Pixels, quality: u8) -> Result<Vec<u8>, PipelineError> {
    let encoder = if p.alpha {
        webp::Encoder::from_rgba(&p.data, p.width, p.height)
    } else {
        webp::Encoder::from_rgb(&p.data, p.width, p.height)
    };
    // `encode` unwraps libwebp's error; `encode_simple` returns it.
    let memory = encoder
        .encode_simple(false, f32::from(quality.clamp(1, 100)))
        .map_err(|e| PipelineError::Encode(format!("webp: {e:?}")))?;
    Ok(memory.to_vec())
}

/// AVIF via ravif (rav1e, pure Rust, single-threaded: one image per core), at the speed preset
/// and bit depth of `enc`; the alpha channel, when any pixel is translucent, at the same
/// quality.
pub(super) fn encode_avif(
    p: &Pixels,
    quality: u8,
    enc: &Encoding,
) -> Result<Vec<u8>, PipelineError> {
    let quality = f32::from(quality.clamp(1, 100));
    let depth = match enc.avif_bit_depth {
        10 => ravif::BitDepth::Ten,
        _ => ravif::BitDepth::Eight,
    };
    let encoder = ravif::Encoder::new()
        .with_quality(quality)
        .with_alpha_quality(quality)
        .with_speed(enc.avif_speed.clamp(1, 10))
        .with_bit_depth(depth)
        .with_num_threads(Some(1));
    let (width, height) = (p.width as usize, p.height as usize);
    let encoded = if p.alpha {
        let pixels: Vec<ravif::RGBA8> = p
            .data
            .chunks_exact(4)
            .map(|c| ravif::RGBA8::new(c[0], c[1], c[2], c[3]))
            .collect();
        encoder.encode_rgba(ravif::Img::new(pixels.as_slice(), width, height))
    } else {
        let pixels: Vec<ravif::RGB8> = p
            .data
            .chunks_exact(3)
            .map(|c| ravif::RGB8::new(c[0], c[1], c[2]))
            .collect();
        encoder.encode_rgb(ravif::Img::new(pixels.as_slice(), width, height))
    };
    encoded
        .map(|e| e.avif_file)
        .map_err(|e| PipelineError::Encode(format!("avif: {e}")))
}

/// A still GIF via `image`'s encoder: at most 256 colours, exact when the image has no more,
/// else quantized by NeuQuant at [`GIF_QUANTIZE_SPEED`]. Pixels less opaque than
/// [`GIF_ALPHA_THRESHOLD`] become transparent, the others opaque (the alpha is overwritten).
pub(super) fn encode_gif(p: &mut Pixels) -> Result<Vec<u8>, PipelineError> {
    let color = if p.alpha {
        for px in p.data.chunks_exact_mut(4) {
            px[3] = if px[3] >= GIF_ALPHA_THRESHOLD {
                u8::MAX
            } else {
                0
            };
        }
        ExtendedColorType::Rgba8
    } else {
        ExtendedColorType::Rgb8
    };
    let mut out = Vec::new();
    GifEncoder::new_with_speed(&mut out, GIF_QUANTIZE_SPEED)
        .encode(&p.data, p.width, p.height, color)
        .map_err(|e| PipelineError::Encode(format!("gif: {e}")))?;
    Ok(out)
}

/// The `image` crate's name for a pipeline format.
pub(super) fn image_format(format: Format) -> ImageFormat {
    match format {
        Format::Jpeg => ImageFormat::Jpeg,
        Format::Png => ImageFormat::Png,
        Format::Webp => ImageFormat::WebP,
        Format::Gif => ImageFormat::Gif,
        Format::Avif => ImageFormat::Avif,
    }
}

#[cfg(test)]
mod tests {
    use pixmesh_core::transform::{Format, MAX_BYTES_MIN_QUALITY, Transform};

    use super::*;
    use crate::pipeline::{error::*, pixels::*};

    /// A fake encoder whose output grows with the quality, counting its calls.
    fn sized_by_quality(calls: &mut Vec<u8>) -> impl FnMut(u8) -> Result<Vec<u8>, PipelineError> {
        move |q| {
            calls.push(q);
            Ok(vec![q; usize::from(q) * 100])
        }
    }

    #[test]
    fn max_bytes_finds_the_highest_quality_that_fits_in_few_encodes() {
        for start in [100u8, 80, 57, 11] {
            for max in [500u32, 999, 1_000, 4_321, 5_000, 7_999] {
                let mut calls = Vec::new();
                let out = fit_bytes(
                    start,
                    Some(max),
                    MAX_BYTES_ENCODES,
                    sized_by_quality(&mut calls),
                )
                .unwrap();
                // Nothing under the floor is tried: then the floor's result, the smallest.
                let best = (max / 100)
                    .min(u32::from(start))
                    .max(u32::from(MAX_BYTES_MIN_QUALITY)) as usize;
                assert_eq!(out.len(), best * 100, "start {start}, max {max}");
                assert!(calls.len() <= MAX_BYTES_ENCODES, "{calls:?}");
                assert_eq!(calls[0], start);
            }
        }
        // Fits at once: one encode.
        let mut calls = Vec::new();
        let out = fit_bytes(
            80,
            Some(8_000),
            MAX_BYTES_ENCODES,
            sized_by_quality(&mut calls),
        )
        .unwrap();
        assert_eq!((out.len(), calls.len()), (8_000, 1));
        // No budget: one encode, whatever its size.
        let mut calls = Vec::new();
        let out = fit_bytes(80, None, MAX_BYTES_ENCODES, sized_by_quality(&mut calls)).unwrap();
        assert_eq!((out.len(), calls.len()), (8_000, 1));
        // Nothing fits: the smallest try, at the lowest quality searched.
        let mut calls = Vec::new();
        let out = fit_bytes(
            80,
            Some(10),
            MAX_BYTES_ENCODES,
            sized_by_quality(&mut calls),
        )
        .unwrap();
        assert_eq!(out.len(), usize::from(MAX_BYTES_MIN_QUALITY) * 100);
        assert!(calls.len() <= MAX_BYTES_ENCODES, "{calls:?}");
        assert_eq!(calls.iter().min(), Some(&MAX_BYTES_MIN_QUALITY));
        // Asked below the search's floor: nothing lower is tried.
        let mut calls = Vec::new();
        let out = fit_bytes(5, Some(10), MAX_BYTES_ENCODES, sized_by_quality(&mut calls)).unwrap();
        assert_eq!((out.len(), calls), (500, vec![5]));
        // Encoder errors are errors.
        let failing = |_| Err(PipelineError::Encode("boom".into()));
        assert!(fit_bytes(80, Some(10), MAX_BYTES_ENCODES, failing).is_err());
    }

    #[test]
    fn webp_output_is_capped_at_its_maximum_side() {
        let p = Pixels {
            width: MAX_WEBP_DIMENSION + 1,
            height: 1,
            alpha: false,
            data: vec![0; (MAX_WEBP_DIMENSION as usize + 1) * 3],
        };
        let err = encode(p, Format::Webp, &Transform::default(), &Encoding::default()).unwrap_err();
        assert_eq!(err.http_status(), 413, "{err}");
    }

    #[test]
    fn gif_output_is_capped_at_its_maximum_side() {
        let p = Pixels {
            width: MAX_GIF_DIMENSION + 1,
            height: 1,
            alpha: false,
            data: vec![0; (MAX_GIF_DIMENSION as usize + 1) * 3],
        };
        let err = encode(p, Format::Gif, &Transform::default(), &Encoding::default()).unwrap_err();
        assert_eq!(err.http_status(), 413, "{err}");
    }

    #[test]
    fn max_bytes_spends_few_encodes_on_large_avif_outputs() {
        assert_eq!(
            max_bytes_encodes(Format::Avif, 1000, 1000),
            MAX_BYTES_ENCODES
        );
        assert_eq!(max_bytes_encodes(Format::Avif, 4000, 4000), 2);
        assert_eq!(max_bytes_encodes(Format::Avif, 8000, 6250), 1);
        assert_eq!(max_bytes_encodes(Format::Avif, 0, 0), MAX_BYTES_ENCODES);
        for format in [Format::Jpeg, Format::Webp] {
            assert_eq!(max_bytes_encodes(format, 8000, 6250), MAX_BYTES_ENCODES);
        }
        for encodes in [1, 2, 3] {
            let mut calls = Vec::new();
            let out = fit_bytes(80, Some(10), encodes, sized_by_quality(&mut calls)).unwrap();
            assert_eq!(calls.len(), encodes, "{calls:?}");
            assert_eq!(out.len(), usize::from(*calls.iter().min().unwrap()) * 100);
        }
        // Cut short after a fitting try: that one.
        let mut calls = Vec::new();
        let out = fit_bytes(80, Some(6_000), 2, sized_by_quality(&mut calls)).unwrap();
        assert_eq!(calls, vec![80, 44]);
        assert_eq!(out.len(), 4_400);
    }
}
