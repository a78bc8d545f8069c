//! Animated GIF and WebP sources rendered as animations: every frame goes through the same
//! per-frame steps as a still ([`super::frame_steps`]), and frame durations and the loop count
//! are kept.
//!
//! An animation is kept when the source is an animated GIF or WebP, the output is GIF or WebP
//! and [`Limits::max_animation_frames`] is above 1; otherwise (JPEG or PNG output, a one-frame
//! source, a limit of 1) the caller renders the first frame as a still. As imgproxy does with
//! `IMGPROXY_MAX_ANIMATION_FRAMES`, an animation longer than the limit keeps its first
//! `max_animation_frames` frames; later frames are never decoded. Memory and time are bounded
//! before any frame is decoded: the frames kept times the canvas size must fit in
//! [`Limits::max_source_pixels`] and the frames kept times the output size in
//! [`Limits::max_output_pixels`] (413 beyond, as imgproxy counts every frame against its
//! source resolution limit). A GIF frame declares its own size, which may exceed the logical
//! screen: what decoding costs, the frames' own pixels, each and all together, must fit in
//! [`Limits::max_source_pixels`] too ([`check_gif_frames`], from the frame headers). Frames
//! are decoded one at a time onto one canvas; only the rendered (output-sized) frames are kept
//! until they are encoded.
//!
//! GIF frames are composed here (placement, transparency, disposal: "background" clears the
//! frame's rectangle to transparent, as browsers do, "previous" restores it); WebP frames are
//! composed by libwebp. Every output frame is the whole canvas.
//!
//! A trim or a smart crop is found on the first frame (as composed on the canvas) and the
//! geometry it gives applies to every frame, so the animation does not jump; the limits are
//! checked again for it before the first frame is rendered.

use pixmesh_core::transform::{Format, Transform};

use super::codecs::libwebp;
use super::encode::{DEFAULT_WEBP_QUALITY, GIF_ALPHA_THRESHOLD, GIF_QUANTIZE_SPEED, Rendered};
use super::error::PipelineError;
use super::geometry::Geometry;
use super::limits::{Limits, MAX_GIF_DIMENSION, MAX_WEBP_DIMENSION};
use super::pixels::Pixels;
use super::{frame_steps, watermark::Overlay};

/// How often an animation plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Loops {
    /// Forever (GIF `NETSCAPE2.0` count 0, WebP loop count 0).
    Forever,
    /// Once, with no repetition (a GIF without a loop extension).
    Once,
    /// The GIF loop extension's count, or the WebP loop count: this many times.
    Count(u16),
}

/// One rendered frame and how long it shows.
struct Frame {
    pixels: Pixels,
    duration_ms: u32,
}

/// Renders an animated `source` as an animation when the output keeps it (see the module
/// documentation); `None` when the caller should render the first frame as a still. The
/// caller has checked the canvas size `(width, height)` against the limits.
pub(super) fn render(
    source: &[u8],
    source_format: Format,
    (width, height): (u32, u32),
    t: &Transform,
    overlay: Option<&Overlay>,
    limits: &Limits,
) -> Result<Option<Rendered>, PipelineError> {
    let frames = frames_kept(source, source_format, t, limits)?;
    if frames <= 1 {
        return Ok(None);
    }
    // GIF and WebP outputs never depend on transparency (only "compatible" WebP does, and
    // that is never GIF or WebP).
    let format = t.format.resolve(source_format, || true);
    let geometry = super::plan::geometry(width, height, t, limits)?;
    check_sizes(frames, (width, height), &geometry, t, limits)?;
    if source_format == Format::Gif {
        check_gif_frames(&gif_frames(source, frames)?, limits)?;
    }
    let (rendered, loops) = match source_format {
        Format::Gif => render_gif(
            source,
            (width, height),
            frames,
            &geometry,
            t,
            overlay,
            limits,
        )?,
        _ => render_webp(source, frames, &geometry, t, overlay, limits)?,
    };
    encode(rendered, format, loops, t).map(Some)
}

/// How many frames of `source` the render keeps: up to [`Limits::max_animation_frames`] of an
/// animated GIF or WebP whose output is GIF or WebP, otherwise 1 (rendered as a still).
pub(super) fn frames_kept(
    source: &[u8],
    source_format: Format,
    t: &Transform,
    limits: &Limits,
) -> Result<u32, PipelineError> {
    if limits.max_animation_frames <= 1 || !matches!(source_format, Format::Gif | Format::Webp) {
        return Ok(1);
    }
    if !matches!(
        t.format.resolve(source_format, || true),
        Format::Gif | Format::Webp
    ) {
        return Ok(1);
    }
    let frames = match source_format {
        Format::Gif => gif_frames(source, limits.max_animation_frames)?.count,
        _ if !libwebp::features(source)?.animated => 1,
        _ => libwebp::AnimDecoder::new(source)?
            .frame_count()
            .min(limits.max_animation_frames),
    };
    Ok(frames.max(1))
}

/// Frames × canvas pixels within [`Limits::max_source_pixels`], frames × output pixels within
/// [`Limits::max_output_pixels`].
fn check_sizes(
    frames: u32,
    (width, height): (u32, u32),
    g: &Geometry,
    t: &Transform,
    limits: &Limits,
) -> Result<(), PipelineError> {
    let source = u64::from(frames) * u64::from(width) * u64::from(height);
    if source > limits.max_source_pixels {
        return Err(PipelineError::TooLarge(format!(
            "animation of {frames} frames of {width}x{height} ({source} pixels), the limit is {} pixels",
            limits.max_source_pixels
        )));
    }
    let (ow, oh) = super::geometry::output_size(g, t);
    let output = u64::from(frames) * u64::from(ow) * u64::from(oh);
    if output > limits.max_output_pixels {
        return Err(PipelineError::TooLarge(format!(
            "animation output of {frames} frames of {ow}x{oh} ({output} pixels), the limit is {} pixels",
            limits.max_output_pixels
        )));
    }
    Ok(())
}

/// Each composed canvas of an animation through [`frame_steps`], with the geometry found on the
/// first frame ([`first_frame_geometry`]) kept for every later one.
struct FrameSteps<'a> {
    planned: &'a Geometry,
    /// The geometry of every frame, once the first has been rendered.
    placed: Option<Geometry>,
    frames: u32,
    t: &'a Transform,
    overlay: Option<&'a Overlay>,
    limits: &'a Limits,
}

impl<'a> FrameSteps<'a> {
    fn new(
        planned: &'a Geometry,
        frames: u32,
        t: &'a Transform,
        overlay: Option<&'a Overlay>,
        limits: &'a Limits,
    ) -> FrameSteps<'a> {
        FrameSteps {
            planned,
            placed: None,
            frames,
            t,
            overlay,
            limits,
        }
    }

    /// Renders the next canvas, shown for `duration_ms`.
    fn render(&mut self, pixels: Pixels, duration_ms: u32) -> Result<Frame, PipelineError> {
        crate::pipeline::cancel::check()?;
        let geometry = match self.placed {
            Some(g) => g,
            None => *self.placed.insert(first_frame_geometry(
                &pixels,
                self.planned,
                self.frames,
                self.t,
                self.limits,
            )?),
        };
        Ok(Frame {
            pixels: frame_steps(pixels, &geometry, None, self.t, self.overlay)?,
            duration_ms,
        })
    }
}

/// The geometry of every frame: the planned one, or the one a trim or smart crop finds on the
/// `first` frame ([`super::replan`]; the canvas is never shrunk on load), within the limits.
fn first_frame_geometry(
    first: &Pixels,
    planned: &Geometry,
    frames: u32,
    t: &Transform,
    limits: &Limits,
) -> Result<Geometry, PipelineError> {
    let size = (first.width, first.height);
    // The canvas is never cut to the trimmed box: later frames may draw outside it.
    let (geometry, _) = super::plan::replan(first, size, *planned, t, limits)?;
    check_sizes(frames, size, &geometry, t, limits)?;
    Ok(geometry)
}

fn gif_error(e: gif::DecodingError) -> PipelineError {
    match e {
        gif::DecodingError::MemoryLimit | gif::DecodingError::OutOfMemory => {
            PipelineError::TooLarge(format!("gif decode: {e}"))
        }
        e => PipelineError::Corrupt(format!("gif decode: {e}")),
    }
}

/// What the first frames of a GIF declare, each frame its own size (which may exceed the
/// logical screen): what decoding them costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct GifFrames {
    /// Frames read (at most the number asked for).
    pub count: u32,
    /// The largest frame's pixels.
    pub largest: u64,
    /// All the frames' pixels together.
    pub pixels: u64,
}

impl GifFrames {
    /// Counts one more frame of `width`×`height`.
    fn add(&mut self, width: u16, height: u16) {
        let pixels = u64::from(width) * u64::from(height);
        self.count += 1;
        self.largest = self.largest.max(pixels);
        self.pixels += pixels;
    }
}

/// The first `max` frames of a GIF, from their headers alone (no pixel data is decompressed,
/// nothing after frame `max` is read).
pub(super) fn gif_frames(source: &[u8], max: u32) -> Result<GifFrames, PipelineError> {
    let mut options = gif::DecodeOptions::new();
    options.skip_frame_decoding(true);
    let mut decoder = options.read_info(source).map_err(gif_error)?;
    let mut read = GifFrames::default();
    while read.count < max {
        let Some(frame) = decoder.next_frame_info().map_err(gif_error)? else {
            break;
        };
        read.add(frame.width, frame.height);
    }
    Ok(read)
}

/// Decoding GIF frames costs their own pixels, wherever they lie on the screen: the frames
/// read must fit in [`Limits::max_source_pixels`], each and all together, as the frames of an
/// animation × its screen must (a 1×1 screen does not make 7000×7000 frames cheap). 413
/// beyond; checked before any frame is decoded.
pub(super) fn check_gif_frames(read: &GifFrames, limits: &Limits) -> Result<(), PipelineError> {
    let max = limits.max_source_pixels;
    if read.largest > max {
        return Err(PipelineError::TooLarge(format!(
            "a gif frame of {} pixels, the limit is {max} pixels",
            read.largest
        )));
    }
    if read.pixels > max {
        return Err(PipelineError::TooLarge(format!(
            "{} gif frames of {} pixels in all, the limit is {max} pixels",
            read.count, read.pixels
        )));
    }
    Ok(())
}

/// Decodes the first `frames` frames of a GIF onto its `width`×`height` screen and renders each.
fn render_gif(
    source: &[u8],
    (width, height): (u32, u32),
    frames: u32,
    geometry: &Geometry,
    t: &Transform,
    overlay: Option<&Overlay>,
    limits: &Limits,
) -> Result<(Vec<Frame>, Loops), PipelineError> {
    let mut options = gif::DecodeOptions::new();
    options.set_color_output(gif::ColorOutput::RGBA);
    let budget = limits.max_source_pixels.saturating_mul(4).max(1);
    options.set_memory_limit(gif::MemoryLimit::Bytes(
        std::num::NonZeroU64::new(budget).unwrap_or(std::num::NonZeroU64::MIN),
    ));
    let mut decoder = options.read_info(source).map_err(gif_error)?;
    let (sw, sh) = (width as usize, height as usize);
    let mut canvas = vec![0u8; sw * sh * 4];
    let mut out = Vec::with_capacity(frames as usize);
    let mut steps = FrameSteps::new(geometry, frames, t, overlay, limits);
    let mut buffer = Vec::new();
    // What the frames decoded so far and this one cost (the caller checked the headers).
    let mut read = GifFrames::default();
    for _ in 0..frames {
        let Some(frame) = decoder.next_frame_info().map_err(gif_error)? else {
            break;
        };
        let (left, top) = (usize::from(frame.left), usize::from(frame.top));
        let (fw, fh) = (usize::from(frame.width), usize::from(frame.height));
        let (delay, dispose) = (frame.delay, frame.dispose);
        let frame_pixels = fw as u64 * fh as u64;
        read.add(frame.width, frame.height);
        check_gif_frames(&read, limits)?;
        buffer.resize(fw * fh * 4, 0);
        if frame_pixels > 0 {
            decoder.read_into_buffer(&mut buffer).map_err(gif_error)?;
        }
        // The frame's rectangle clipped to the screen.
        let visible_w = fw.min(sw.saturating_sub(left));
        let visible_h = if visible_w == 0 {
            0
        } else {
            fh.min(sh.saturating_sub(top))
        };
        let rect = |canvas: &[u8]| -> Vec<u8> {
            (0..visible_h)
                .flat_map(|y| {
                    let at = ((top + y) * sw + left) * 4;
                    canvas[at..at + visible_w * 4].to_vec()
                })
                .collect()
        };
        let saved = (dispose == gif::DisposalMethod::Previous).then(|| rect(&canvas));
        for y in 0..visible_h {
            let from = &buffer[y * fw * 4..(y * fw + visible_w) * 4];
            let at = ((top + y) * sw + left) * 4;
            let to = &mut canvas[at..at + visible_w * 4];
            for (dst, src) in to.chunks_exact_mut(4).zip(from.chunks_exact(4)) {
                if src[3] != 0 {
                    dst.copy_from_slice(src);
                }
            }
        }
        let pixels = Pixels {
            width,
            height,
            alpha: true,
            data: canvas.clone(),
        };
        out.push(steps.render(pixels, u32::from(delay) * 10)?);
        match dispose {
            gif::DisposalMethod::Background => {
                for y in 0..visible_h {
                    let at = ((top + y) * sw + left) * 4;
                    canvas[at..at + visible_w * 4].fill(0);
                }
            }
            gif::DisposalMethod::Previous => {
                // A frame wholly off the screen saved nothing.
                if let Some(saved) = saved.filter(|_| visible_w > 0) {
                    for (y, row) in saved.chunks_exact(visible_w * 4).enumerate() {
                        let at = ((top + y) * sw + left) * 4;
                        canvas[at..at + visible_w * 4].copy_from_slice(row);
                    }
                }
            }
            gif::DisposalMethod::Any | gif::DisposalMethod::Keep => {}
        }
    }
    let loops = match decoder.repeat() {
        gif::Repeat::Infinite => Loops::Forever,
        gif::Repeat::Finite(0) => Loops::Once,
        gif::Repeat::Finite(n) => Loops::Count(n),
    };
    Ok((out, loops))
}

/// Decodes the first `frames` frames of an animated WebP (composed by libwebp) and renders each.
fn render_webp(
    source: &[u8],
    frames: u32,
    geometry: &Geometry,
    t: &Transform,
    overlay: Option<&Overlay>,
    limits: &Limits,
) -> Result<(Vec<Frame>, Loops), PipelineError> {
    let mut decoder = libwebp::AnimDecoder::new(source)?;
    let (width, height) = decoder.canvas();
    let loops = match decoder.loop_count() {
        0 => Loops::Forever,
        n => Loops::Count(u16::try_from(n).unwrap_or(u16::MAX)),
    };
    let mut out = Vec::with_capacity(frames as usize);
    let mut steps = FrameSteps::new(geometry, frames, t, overlay, limits);
    for _ in 0..frames {
        let Some((canvas, duration_ms)) = decoder.next_frame()? else {
            break;
        };
        let pixels = Pixels {
            width,
            height,
            alpha: true,
            data: canvas.to_vec(),
        };
        out.push(steps.render(pixels, duration_ms)?);
    }
    Ok((out, loops))
}

/// Encodes the rendered frames as an animated GIF or WebP.
fn encode(
    mut frames: Vec<Frame>,
    format: Format,
    loops: Loops,
    t: &Transform,
) -> Result<Rendered, PipelineError> {
    let first = frames
        .first()
        .ok_or_else(|| PipelineError::Corrupt("animation has no frames".to_owned()))?;
    let (width, height, alpha) = (first.pixels.width, first.pixels.height, first.pixels.alpha);
    let max_side = if format == Format::Gif {
        MAX_GIF_DIMENSION
    } else {
        MAX_WEBP_DIMENSION
    };
    if width > max_side || height > max_side {
        return Err(PipelineError::TooLarge(format!(
            "{width}x{height} exceeds the {} limit of {max_side} pixels per side",
            format.name()
        )));
    }
    let bytes = if format == Format::Gif {
        encode_gif(&mut frames, (width, height), loops)?
    } else {
        let frames: Vec<libwebp::Frame<'_>> = frames
            .iter()
            .map(|f| libwebp::Frame {
                pixels: &f.pixels.data,
                duration_ms: f.duration_ms,
            })
            .collect();
        let loop_count = match loops {
            Loops::Forever => 0,
            Loops::Once => 1,
            Loops::Count(n) => u32::from(n),
        };
        let quality = t.quality.unwrap_or(DEFAULT_WEBP_QUALITY);
        libwebp::encode_animation(width, height, alpha, &frames, loop_count, quality)?
    };
    Ok(Rendered {
        bytes,
        format,
        width,
        height,
    })
}

/// An animated GIF: each frame quantized to its own 256-colour palette (NeuQuant, as for
/// stills), all-or-nothing transparency, each frame replacing the whole previous one.
fn encode_gif(
    frames: &mut [Frame],
    (width, height): (u32, u32),
    loops: Loops,
) -> Result<Vec<u8>, PipelineError> {
    let fail = |e: gif::EncodingError| PipelineError::Encode(format!("gif: {e}"));
    let side = |n: u32| u16::try_from(n).map_err(|_| PipelineError::Encode("gif side".into()));
    let (w, h) = (side(width)?, side(height)?);
    let mut out = Vec::new();
    {
        let mut encoder = gif::Encoder::new(&mut out, w, h, &[]).map_err(fail)?;
        let repeat = match loops {
            Loops::Forever => gif::Repeat::Infinite,
            Loops::Once => gif::Repeat::Finite(0),
            Loops::Count(n) => gif::Repeat::Finite(n),
        };
        encoder.set_repeat(repeat).map_err(fail)?;
        for frame in frames.iter_mut() {
            let p = &mut frame.pixels;
            let mut gif_frame = if p.alpha {
                for px in p.data.chunks_exact_mut(4) {
                    px[3] = if px[3] >= GIF_ALPHA_THRESHOLD {
                        u8::MAX
                    } else {
                        0
                    };
                }
                gif::Frame::from_rgba_speed(w, h, &mut p.data, GIF_QUANTIZE_SPEED)
            } else {
                gif::Frame::from_rgb_speed(w, h, &p.data, GIF_QUANTIZE_SPEED)
            };
            // GIF delays are in hundredths of a second.
            gif_frame.delay =
                u16::try_from(frame.duration_ms.saturating_add(5) / 10).unwrap_or(u16::MAX);
            gif_frame.dispose = gif::DisposalMethod::Background;
            encoder.write_frame(&gif_frame).map_err(fail)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::io::Cursor;

    use image::{AnimationDecoder, RgbaImage};
    use pixmesh_core::transform::{Fit, OutputFormat};

    use super::super::{DEFAULT_MAX_ANIMATION_FRAMES, render as render_image};
    use super::*;

    /// Red, green, blue, and a transparent index 3.
    const PALETTE: [u8; 12] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];
    const RED: [u8; 4] = [255, 0, 0, 255];
    const GREEN: [u8; 4] = [0, 255, 0, 255];
    const BLUE: [u8; 4] = [0, 0, 255, 255];

    /// One GIF frame: rectangle, palette index per pixel (row-major), delay (1/100 s), disposal.
    struct GifFrame {
        rect: (u16, u16, u16, u16),
        indices: Vec<u8>,
        delay: u16,
        dispose: gif::DisposalMethod,
    }

    fn solid(rect: (u16, u16, u16, u16), index: u8, delay: u16) -> GifFrame {
        GifFrame {
            rect,
            indices: vec![index; usize::from(rect.2) * usize::from(rect.3)],
            delay,
            dispose: gif::DisposalMethod::Keep,
        }
    }

    fn gif(screen: (u16, u16), repeat: gif::Repeat, frames: &[GifFrame]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = gif::Encoder::new(&mut out, screen.0, screen.1, &PALETTE).unwrap();
        encoder.set_repeat(repeat).unwrap();
        for f in frames {
            let (left, top, width, height) = f.rect;
            encoder
                .write_frame(&gif::Frame {
                    left,
                    top,
                    width,
                    height,
                    delay: f.delay,
                    dispose: f.dispose,
                    transparent: Some(3),
                    buffer: Cow::Borrowed(&f.indices),
                    ..gif::Frame::default()
                })
                .unwrap();
        }
        drop(encoder);
        out
    }

    /// Frames of a GIF as `image` composes them: (RGBA canvas, delay in ms).
    fn gif_frames(bytes: &[u8]) -> Vec<(RgbaImage, u32)> {
        let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(bytes)).unwrap();
        decoder
            .into_frames()
            .map(|f| {
                let f = f.unwrap();
                let (ms, den) = f.delay().numer_denom_ms();
                (f.into_buffer(), ms / den)
            })
            .collect()
    }

    /// Frames of an animated WebP as `image` (image-webp, not libwebp) composes them.
    fn webp_frames(bytes: &[u8]) -> Vec<(RgbaImage, u32)> {
        let decoder = image::codecs::webp::WebPDecoder::new(Cursor::new(bytes)).unwrap();
        decoder
            .into_frames()
            .map(|f| {
                let f = f.unwrap();
                let (ms, den) = f.delay().numer_denom_ms();
                (f.into_buffer(), ms / den)
            })
            .collect()
    }

    fn gif_repeat(bytes: &[u8]) -> gif::Repeat {
        let mut decoder = gif::DecodeOptions::new().read_info(bytes).unwrap();
        while decoder.read_next_frame().unwrap().is_some() {}
        decoder.repeat()
    }

    fn near(px: &[u8], expected: [u8; 4]) -> bool {
        px.iter().zip(expected).all(|(&a, b)| a.abs_diff(b) <= 24)
    }

    fn fit(width: u32, height: u32, format: OutputFormat) -> Transform {
        Transform {
            width,
            height,
            fit: Fit::FitIn,
            format,
            ..Transform::default()
        }
    }

    /// 40×20: red, then green, then blue, 0.1 s, 0.2 s and 0.3 s, playing 3 times.
    fn three_colours() -> Vec<u8> {
        gif(
            (40, 20),
            gif::Repeat::Finite(3),
            &[
                solid((0, 0, 40, 20), 0, 10),
                solid((0, 0, 40, 20), 1, 20),
                solid((0, 0, 40, 20), 2, 30),
            ],
        )
    }

    #[test]
    fn an_animated_gif_stays_animated_with_its_delays_and_loop_count() {
        let r = render_image(
            &three_colours(),
            &fit(20, 20, OutputFormat::Source),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!((r.format, r.width, r.height), (Format::Gif, 20, 10));
        let frames = gif_frames(&r.bytes);
        assert_eq!(frames.len(), 3);
        for ((img, ms), (colour, delay)) in
            frames.iter().zip([(RED, 100), (GREEN, 200), (BLUE, 300)])
        {
            assert_eq!(img.dimensions(), (20, 10));
            assert_eq!(*ms, delay);
            assert!(img.pixels().all(|p| near(&p.0, colour)), "{colour:?}");
        }
        assert_eq!(gif_repeat(&r.bytes), gif::Repeat::Finite(3));
    }

    #[test]
    fn an_animated_gif_becomes_an_animated_webp() {
        let r = render_image(
            &three_colours(),
            &fit(20, 20, OutputFormat::Fixed(Format::Webp)),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!((r.format, r.width, r.height), (Format::Webp, 20, 10));
        let frames = webp_frames(&r.bytes);
        assert_eq!(frames.len(), 3);
        for ((img, ms), (colour, delay)) in
            frames.iter().zip([(RED, 100), (GREEN, 200), (BLUE, 300)])
        {
            assert_eq!(img.dimensions(), (20, 10));
            assert_eq!(*ms, delay);
            assert!(near(&img.get_pixel(10, 5).0, colour), "{colour:?}");
        }
        let decoder = libwebp::AnimDecoder::new(&r.bytes).unwrap();
        assert_eq!((decoder.frame_count(), decoder.loop_count()), (3, 3));
    }

    #[test]
    fn an_animated_webp_stays_animated_and_every_frame_goes_through_the_steps() {
        // A 30×20 WebP: left third red, the rest green, then the same in blue, forever.
        let frame = |left: [u8; 4], rest: [u8; 4]| -> Vec<u8> {
            RgbaImage::from_fn(30, 20, |x, _| image::Rgba(if x < 10 { left } else { rest }))
                .into_raw()
        };
        let (a, b) = (frame(RED, GREEN), frame(BLUE, GREEN));
        let source = libwebp::encode_animation(
            30,
            20,
            true,
            &[
                libwebp::Frame {
                    pixels: &a,
                    duration_ms: 70,
                },
                libwebp::Frame {
                    pixels: &b,
                    duration_ms: 130,
                },
            ],
            0,
            100,
        )
        .unwrap();
        let t = Transform {
            flip_h: true,
            ..fit(15, 10, OutputFormat::Source)
        };
        let r = render_image(&source, &t, &Limits::default()).unwrap();
        assert_eq!((r.format, r.width, r.height), (Format::Webp, 15, 10));
        let frames = webp_frames(&r.bytes);
        assert_eq!(
            frames.iter().map(|f| f.1).collect::<Vec<_>>(),
            [70, 130],
            "durations"
        );
        // Flipped: the left third is now on the right, in every frame.
        for ((img, _), colour) in frames.iter().zip([RED, BLUE]) {
            assert!(
                near(&img.get_pixel(13, 5).0, colour),
                "{:?}",
                img.get_pixel(13, 5)
            );
            assert!(
                near(&img.get_pixel(2, 5).0, GREEN),
                "{:?}",
                img.get_pixel(2, 5)
            );
        }
        assert_eq!(libwebp::AnimDecoder::new(&r.bytes).unwrap().loop_count(), 0);

        // As a GIF: still two frames, with their delays.
        let t = Transform {
            format: OutputFormat::Fixed(Format::Gif),
            ..t
        };
        let r = render_image(&source, &t, &Limits::default()).unwrap();
        let frames = gif_frames(&r.bytes);
        assert_eq!(frames.iter().map(|f| f.1).collect::<Vec<_>>(), [70, 130]);
        assert_eq!(gif_repeat(&r.bytes), gif::Repeat::Infinite);

        // JPEG and PNG outputs (and auto without WebP) get the first frame.
        for format in [
            OutputFormat::Fixed(Format::Png),
            OutputFormat::Fixed(Format::Jpeg),
            OutputFormat::Compatible,
        ] {
            let r = render_image(&source, &fit(15, 10, format), &Limits::default()).unwrap();
            assert!(matches!(r.format, Format::Png | Format::Jpeg), "{format:?}");
            let img = image::load_from_memory(&r.bytes).unwrap().to_rgba8();
            assert!(
                near(&img.get_pixel(2, 5).0, RED),
                "{:?}",
                img.get_pixel(2, 5)
            );
        }
    }

    #[test]
    fn gif_disposal_is_followed() {
        // 4×4 red (kept); a green 2×2 at (0, 0) restored to "previous" afterwards; a blue 2×2
        // at (2, 2) cleared to transparent afterwards; then a 1×1 transparent frame.
        let previous = GifFrame {
            dispose: gif::DisposalMethod::Previous,
            ..solid((0, 0, 2, 2), 1, 5)
        };
        let background = GifFrame {
            dispose: gif::DisposalMethod::Background,
            ..solid((2, 2, 2, 2), 2, 5)
        };
        let source = gif(
            (4, 4),
            gif::Repeat::Infinite,
            &[
                solid((0, 0, 4, 4), 0, 5),
                previous,
                background,
                solid((0, 0, 1, 1), 3, 5),
            ],
        );
        let t = fit(0, 0, OutputFormat::Fixed(Format::Webp));
        let t = Transform {
            quality: Some(100),
            ..t
        };
        let frames = webp_frames(&render_image(&source, &t, &Limits::default()).unwrap().bytes);
        assert_eq!(frames.len(), 4);
        let at = |i: usize, x: u32, y: u32| frames[i].0.get_pixel(x, y).0;
        assert!(near(&at(0, 0, 0), RED));
        assert!(near(&at(1, 0, 0), GREEN) && near(&at(1, 3, 3), RED));
        // The green square is gone (previous), the blue one is drawn.
        assert!(near(&at(2, 0, 0), RED) && near(&at(2, 3, 3), BLUE));
        // The blue square is cleared (background): transparent there, red elsewhere.
        assert_eq!(at(3, 3, 3)[3], 0, "{:?}", at(3, 3, 3));
        assert!(near(&at(3, 0, 0), RED) && near(&at(3, 1, 1), RED));
    }

    /// `count` 1×1 frames on a `screen`, then the start of a frame that never ends.
    fn many_frames_then_garbage(screen: (u16, u16), count: u32) -> Vec<u8> {
        let frames: Vec<_> = (0..count)
            .map(|i| solid((0, 0, 1, 1), (i % 3) as u8, 2))
            .collect();
        let mut bytes = gif(screen, gif::Repeat::Infinite, &frames);
        bytes.pop(); // the trailer
        bytes.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, 2, 0xFF, 0xFF, 0xFF]);
        bytes
    }

    #[test]
    fn an_animation_keeps_at_most_its_frame_limit_and_reads_no_further() {
        let source = many_frames_then_garbage((1, 1), 10_000);
        let t = fit(0, 0, OutputFormat::Source);
        let r = render_image(&source, &t, &Limits::default()).unwrap();
        let frames = gif_frames(&r.bytes);
        assert_eq!(frames.len(), DEFAULT_MAX_ANIMATION_FRAMES as usize);
        assert!(near(&frames[0].0.get_pixel(0, 0).0, RED));
        assert!(near(&frames[1].0.get_pixel(0, 0).0, GREEN));
        let limits = Limits {
            max_animation_frames: 7,
            ..Limits::default()
        };
        let r = render_image(&source, &t, &limits).unwrap();
        assert_eq!(gif_frames(&r.bytes).len(), 7);
        // A limit of 1: the first frame, as a still.
        let limits = Limits {
            max_animation_frames: 1,
            ..Limits::default()
        };
        let r = render_image(&source, &t, &limits).unwrap();
        assert_eq!(gif_frames(&r.bytes).len(), 1);
    }

    #[test]
    fn frames_times_pixels_are_checked_before_any_frame_is_decoded() {
        // 100 frames on a 1000×1000 screen: 100 M pixels, over the 50 M default, refused
        // without decoding (the frame data after the 100th never ends).
        let source = many_frames_then_garbage((1000, 1000), 200);
        let t = fit(100, 100, OutputFormat::Source);
        let err = render_image(&source, &t, &Limits::default()).unwrap_err();
        assert_eq!(err.http_status(), 413, "{err}");
        assert!(err.to_string().contains("100 frames of 1000x1000"), "{err}");
        // The first frame alone is fine as a PNG.
        let png = fit(100, 100, OutputFormat::Fixed(Format::Png));
        assert!(render_image(&source, &png, &Limits::default()).is_ok());
        // The output side: 100 frames of 1×1 output at most 99 output pixels.
        let source = many_frames_then_garbage((1, 1), 100);
        let limits = Limits {
            max_output_pixels: 99,
            ..Limits::default()
        };
        let err = render_image(&source, &fit(0, 0, OutputFormat::Source), &limits).unwrap_err();
        assert_eq!(err.http_status(), 413, "{err}");
    }

    #[test]
    fn a_trim_and_a_smart_crop_found_on_the_first_frame_apply_to_every_frame() {
        // 40×30, transparent around a 20×10 box: red, then blue with a green pixel outside
        // the box (the first frame's box wins: it is cut away).
        let frame = |c: [u8; 4], stray: bool| -> Vec<u8> {
            RgbaImage::from_fn(40, 30, |x, y| {
                let inside = (10..30).contains(&x) && (10..20).contains(&y);
                image::Rgba(match (inside, stray && (x, y) == (2, 2)) {
                    (true, _) => c,
                    (false, true) => GREEN,
                    (false, false) => [0; 4],
                })
            })
            .into_raw()
        };
        let (a, b) = (frame(RED, false), frame(BLUE, true));
        let frames = [
            libwebp::Frame {
                pixels: &a,
                duration_ms: 100,
            },
            libwebp::Frame {
                pixels: &b,
                duration_ms: 100,
            },
        ];
        let source = libwebp::encode_animation(40, 30, true, &frames, 0, 100).unwrap();
        let t = Transform {
            trim: Some(pixmesh_core::transform::Trim {
                threshold: 0,
                color: pixmesh_core::transform::TrimColor::TopLeft,
                equal_hor: false,
                equal_ver: false,
            }),
            format: OutputFormat::Fixed(Format::Webp),
            ..Transform::default()
        };
        let r = render_image(&source, &t, &Limits::default()).unwrap();
        assert_eq!((r.width, r.height), (20, 10));
        let out = webp_frames(&r.bytes);
        assert_eq!(out.len(), 2);
        for ((img, _), colour) in out.iter().zip([RED, BLUE]) {
            assert_eq!(img.dimensions(), (20, 10));
            assert!(near(&img.get_pixel(10, 5).0, colour), "{colour:?}");
            assert!(
                !img.pixels().any(|p| near(&p.0, GREEN)),
                "the stray pixel is cut"
            );
        }
        // Smart crop: a square of the 40×30 first frame, on the box, for both frames.
        let t = Transform {
            width: 10,
            height: 10,
            fit: Fit::Fill,
            smart: true,
            format: OutputFormat::Fixed(Format::Webp),
            ..Transform::default()
        };
        let r = render_image(&source, &t, &Limits::default()).unwrap();
        let out = webp_frames(&r.bytes);
        assert_eq!(out.len(), 2);
        assert!(out[0].0.pixels().any(|p| near(&p.0, RED)));
        assert!(out[1].0.pixels().any(|p| near(&p.0, BLUE)));
    }
}
