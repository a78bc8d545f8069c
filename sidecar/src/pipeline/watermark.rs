//! The watermark step: a decoded image from storage, scaled with `fast_image_resize` and
//! composited onto the final image (after rotation, before encoding) with its opacity, placed
//! by [`pixmesh_core::watermark`]'s rules or tiled.
//!
//! Compositing is "over" in 8-bit integer arithmetic with the watermark's alpha (times the
//! opacity) as weight: onto an opaque (RGB) image the result stays opaque; onto an RGBA image
//! the colours are blended premultiplied and the alpha is `a + da·(1 − a)`. Watermark pixels
//! outside the image are cut off; a position wholly outside leaves the image as it is.

use std::sync::Arc;

use fast_image_resize as fr;
use pixmesh_core::transform::{Fraction, Transform};
use pixmesh_core::watermark::{Axis, Watermark};

use super::decode::decode;
use super::effects::to_srgb;
use super::error::PipelineError;
use super::header::read_color_profile;
use super::limits::Limits;
use super::pixels::{Pixels, apply_orientation, normalise};
use super::plan::{Plan, plan};

/// A decoded watermark: upright, sRGB, straight-alpha RGBA.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedWatermark {
    width: u32,
    height: u32,
    rgba: Vec<u8>,
}

impl std::fmt::Debug for DecodedWatermark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecodedWatermark({}x{})", self.width, self.height)
    }
}

impl DecodedWatermark {
    /// An image of `width`×`height` straight-alpha RGBA pixels; `None` when `rgba` is not
    /// that size or a side is 0.
    pub fn from_rgba(width: u32, height: u32, rgba: Vec<u8>) -> Option<DecodedWatermark> {
        let len = u64::from(width) * u64::from(height) * 4;
        (width > 0 && height > 0 && rgba.len() as u64 == len).then_some(DecodedWatermark {
            width,
            height,
            rgba,
        })
    }

    /// Its size in pixels.
    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Bytes of pixels it holds (what a cache of them counts).
    pub fn bytes(&self) -> u64 {
        self.rgba.len() as u64
    }
}

/// A watermark ready for the pipeline: what to composite and how.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// The decoded image.
    pub image: Arc<DecodedWatermark>,
    /// Placement, opacity and size (its `image` field is not read here).
    pub spec: Watermark,
}

/// Decodes a watermark read from storage with the same limits as sources (413 past them): any
/// format sources may have, its EXIF orientation applied, converted to sRGB, the first frame of
/// an animation.
pub fn decode_watermark(bytes: &[u8], limits: &Limits) -> Result<DecodedWatermark, PipelineError> {
    let Plan {
        source_format,
        mut decoder,
        orientation,
        ..
    } = plan(bytes, &Transform::default(), limits)?;
    let profile = read_color_profile(&mut decoder);
    let image = decode(bytes, decoder, source_format, limits, 1.0)?;
    let pixels = normalise(apply_orientation(image, orientation))?;
    let pixels = to_srgb(pixels, profile.as_ref());
    let rgba = if pixels.alpha {
        pixels.data
    } else {
        let mut rgba = Vec::with_capacity(pixels.data.len() / 3 * 4);
        for px in pixels.data.chunks_exact(3) {
            rgba.extend_from_slice(&[px[0], px[1], px[2], 255]);
        }
        rgba
    };
    Ok(DecodedWatermark {
        width: pixels.width,
        height: pixels.height,
        rgba,
    })
}

/// What [`apply`] allocates on an image at most `side` pixels wide and high: the scaled
/// watermark and the resizer's buffer of the same size.
pub(super) fn memory_needed(overlay: Option<&Overlay>, side: u32) -> u64 {
    let Some(o) = overlay else {
        return 0;
    };
    let (w, h) = o.spec.scaled_size(o.image.size(), (side, side));
    u64::from(w) * u64::from(h) * 4 * 2
}

/// The watermark step: composites `overlay` onto `p`.
pub(super) fn apply(mut p: Pixels, overlay: Option<&Overlay>) -> Result<Pixels, PipelineError> {
    let Some(o) = overlay else {
        return Ok(p);
    };
    if o.spec.opacity.0 == 0 {
        return Ok(p);
    }
    let (w, h) = o.spec.scaled_size(o.image.size(), (p.width, p.height));
    let scaled;
    let stamp = if (w, h) == o.image.size() {
        o.image.as_ref()
    } else {
        scaled = scale(&o.image, w, h)?;
        &scaled
    };
    let xs = positions(o.spec.x, p.width, w);
    let ys = positions(o.spec.y, p.height, h);
    for &top in &ys {
        for &left in &xs {
            composite(&mut p, stamp, left, top, o.spec.opacity);
        }
    }
    Ok(p)
}

/// Scales the watermark to `width`×`height` (Lanczos3; alpha handled premultiplied by the
/// resizer).
fn scale(
    image: &DecodedWatermark,
    width: u32,
    height: u32,
) -> Result<DecodedWatermark, PipelineError> {
    let fail = |e: &dyn std::fmt::Display| PipelineError::Encode(format!("watermark resize: {e}"));
    let src =
        fr::images::ImageRef::new(image.width, image.height, &image.rgba, fr::PixelType::U8x4)
            .map_err(|e| fail(&e))?;
    let mut dst = fr::images::Image::new(width, height, fr::PixelType::U8x4);
    let options =
        fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
    fr::Resizer::new()
        .resize(&src, &mut dst, &options)
        .map_err(|e| fail(&e))?;
    Ok(DecodedWatermark {
        width,
        height,
        rgba: dst.into_vec(),
    })
}

/// Where copies of a watermark `size` pixels long start along a side of `side` pixels: one
/// place, or for [`Axis::Repeat`] every `size + spacing` pixels from 0 while inside the side.
fn positions(axis: Axis, side: u32, size: u32) -> Vec<i64> {
    let (side, size) = (i64::from(side), i64::from(size));
    match axis {
        Axis::Start(o) => vec![o.on(side as u32)],
        Axis::Center(o) => vec![(side - size) / 2 + o.on(side as u32)],
        Axis::End(o) => vec![side - size - o.on(side as u32)],
        Axis::Repeat(spacing) => {
            let step = (size + i64::from(spacing)).max(1);
            (0..side).step_by(step as usize).collect()
        }
    }
}

/// Composites `stamp` with its top-left corner at (`left`, `top`) of `p`, cut to `p`.
fn composite(p: &mut Pixels, stamp: &DecodedWatermark, left: i64, top: i64, opacity: Fraction) {
    let (pw, ph) = (i64::from(p.width), i64::from(p.height));
    let (sw, sh) = (i64::from(stamp.width), i64::from(stamp.height));
    let (x0, y0) = (left.max(0), top.max(0));
    let (x1, y1) = ((left + sw).min(pw), (top + sh).min(ph));
    if x0 >= x1 || y0 >= y1 {
        return;
    }
    let channels = p.channels();
    let opacity = u32::from(opacity.0.min(Fraction::ONE.0));
    let stride = p.stride();
    for y in y0..y1 {
        let src_row = ((y - top) * sw) as usize * 4;
        let dst_row = y as usize * stride;
        for x in x0..x1 {
            let s = src_row + (x - left) as usize * 4;
            let src = &stamp.rgba[s..s + 4];
            // The watermark's alpha times the opacity (ten-thousandths), rounded: 0–255.
            let a = (u32::from(src[3]) * opacity + 5_000) / 10_000;
            if a == 0 {
                continue;
            }
            let d = dst_row + x as usize * channels;
            let dst = &mut p.data[d..d + channels];
            if channels == 3 {
                for (c, &sc) in dst.iter_mut().zip(&src[..3]) {
                    let v = (u32::from(sc) * a + u32::from(*c) * (255 - a) + 127) / 255;
                    *c = v.min(255) as u8;
                }
            } else {
                // Weights out of 255²: the watermark's a·255, the image's da·(255 − a).
                let da = u32::from(dst[3]);
                let (wa, wb) = (a * 255, da * (255 - a));
                let total = wa + wb;
                for (c, &sc) in dst[..3].iter_mut().zip(&src[..3]) {
                    let v = (u32::from(sc) * wa + u32::from(*c) * wb + total / 2) / total;
                    *c = v.min(255) as u8;
                }
                dst[3] = ((total + 127) / 255).min(255) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmesh_core::transform::Span;
    use pixmesh_core::watermark::{Offset, WatermarkImage as Source};

    /// A `w`×`h` image of one colour.
    fn canvas(w: u32, h: u32, px: &[u8]) -> Pixels {
        Pixels {
            width: w,
            height: h,
            alpha: px.len() == 4,
            data: px.repeat((w * h) as usize),
        }
    }

    fn solid(w: u32, h: u32, rgba: [u8; 4]) -> Arc<DecodedWatermark> {
        Arc::new(DecodedWatermark::from_rgba(w, h, rgba.repeat((w * h) as usize)).unwrap())
    }

    fn overlay(image: Arc<DecodedWatermark>, x: Axis, y: Axis) -> Overlay {
        let mut spec = Watermark::new(Source::Default);
        (spec.x, spec.y) = (x, y);
        Overlay { image, spec }
    }

    fn at(p: &Pixels, x: u32, y: u32) -> &[u8] {
        let c = p.channels();
        let i = (y * p.width + x) as usize * c;
        &p.data[i..i + c]
    }

    /// The bounding box of the pixels that differ from `bg`: (left, top, right, bottom).
    fn marked(p: &Pixels, bg: &[u8]) -> Option<(u32, u32, u32, u32)> {
        let mut b: Option<(u32, u32, u32, u32)> = None;
        for y in 0..p.height {
            for x in 0..p.width {
                if at(p, x, y) != bg {
                    b = Some(match b {
                        None => (x, y, x, y),
                        Some((l, t, r, bo)) => (l.min(x), t.min(y), r.max(x), bo.max(y)),
                    });
                }
            }
        }
        b
    }

    #[test]
    fn each_gravity_places_the_watermark_with_inward_offsets() {
        let red = solid(10, 4, [255, 0, 0, 255]);
        let px = Offset::Pixels;
        for (x, y, want) in [
            (Axis::Start(px(0)), Axis::Start(px(0)), (0, 0, 9, 3)),
            (Axis::Start(px(5)), Axis::Start(px(2)), (5, 2, 14, 5)),
            (Axis::End(px(0)), Axis::End(px(0)), (90, 46, 99, 49)),
            (Axis::End(px(3)), Axis::End(px(1)), (87, 45, 96, 48)),
            (Axis::Center(px(0)), Axis::Center(px(0)), (45, 23, 54, 26)),
            (Axis::Center(px(-5)), Axis::Center(px(2)), (40, 25, 49, 28)),
            (
                Axis::Start(Offset::Percent(20)),
                Axis::End(Offset::Percent(10)),
                (20, 41, 29, 44),
            ),
            (Axis::End(px(0)), Axis::Start(px(-2)), (90, 0, 99, 1)),
        ] {
            let p = apply(
                canvas(100, 50, &[0, 0, 255]),
                Some(&overlay(red.clone(), x, y)),
            )
            .unwrap();
            assert_eq!(marked(&p, &[0, 0, 255]), Some(want), "{x:?} {y:?}");
            let (l, t, ..) = want;
            assert_eq!(at(&p, l, t), [255, 0, 0], "{x:?} {y:?}");
        }
        let outside = overlay(red, Axis::Start(px(100)), Axis::Start(px(0)));
        let p = apply(canvas(100, 50, &[0, 0, 255]), Some(&outside)).unwrap();
        assert_eq!(marked(&p, &[0, 0, 255]), None, "wholly outside: nothing");
    }

    #[test]
    fn opacity_and_the_watermarks_alpha_blend_over_rgb_and_rgba() {
        let white = solid(4, 4, [255, 255, 255, 255]);
        let mut o = overlay(white, Axis::Start(Offset::ZERO), Axis::Start(Offset::ZERO));
        o.spec.opacity = Fraction(5000);
        let p = apply(canvas(8, 8, &[0, 0, 0]), Some(&o)).unwrap();
        // a = 127.5 → 128: (255·128 + 127) / 255 = 128.
        assert_eq!(at(&p, 0, 0), [128, 128, 128]);
        assert_eq!(at(&p, 4, 4), [0, 0, 0]);
        // Over a half-transparent red: alpha 128 + 128·127/255 ≈ 192; premultiplied green
        // 255·128/255 = 128 over nothing, straight 128·255/192 = 170.
        let p = apply(canvas(8, 8, &[255, 0, 0, 128]), Some(&o)).unwrap();
        assert_eq!(at(&p, 0, 0), [255, 170, 170, 192]);
        // Over a transparent pixel the watermark shows as it is, at its opacity.
        let p = apply(canvas(8, 8, &[0, 0, 0, 0]), Some(&o)).unwrap();
        assert_eq!(at(&p, 0, 0), [255, 255, 255, 128]);
        // Its own alpha multiplies the opacity; opacity 0 changes nothing.
        let faint = solid(4, 4, [255, 255, 255, 102]);
        let mut o = overlay(faint, Axis::Start(Offset::ZERO), Axis::Start(Offset::ZERO));
        o.spec.opacity = Fraction(5000);
        let p = apply(canvas(8, 8, &[0, 0, 0]), Some(&o)).unwrap();
        assert_eq!(at(&p, 0, 0), [51, 51, 51], "0.4 × 0.5 = 0.2");
        o.spec.opacity = Fraction(0);
        let p = apply(canvas(8, 8, &[0, 0, 0]), Some(&o)).unwrap();
        assert_eq!(marked(&p, &[0, 0, 0]), None);
    }

    #[test]
    fn tiles_repeat_with_spacing_and_are_cut_at_the_edges() {
        let green = solid(10, 10, [0, 255, 0, 255]);
        let o = overlay(green.clone(), Axis::Repeat(5), Axis::Repeat(0));
        let p = apply(canvas(100, 30, &[0, 0, 0]), Some(&o)).unwrap();
        // Copies start at x = 0, 15, …, 90 (7 of them; the last cut to 10 pixels) and
        // y = 0, 10, 20: every column of a copy is green, every gap black.
        let starts: Vec<u32> = (0..100)
            .filter(|&x| at(&p, x, 0) == [0, 255, 0] && (x == 0 || at(&p, x - 1, 0) != [0, 255, 0]))
            .collect();
        assert_eq!(starts, [0, 15, 30, 45, 60, 75, 90]);
        assert_eq!(at(&p, 12, 29), [0, 0, 0]);
        assert_eq!(at(&p, 9, 29), [0, 255, 0]);
        assert_eq!(at(&p, 99, 29), [0, 255, 0]);
        assert_eq!(positions(Axis::Repeat(0), 25, 10), [0, 10, 20]);
        // Along one axis only: a row of copies at its place.
        let row = overlay(green, Axis::Repeat(0), Axis::End(Offset::ZERO));
        let p = apply(canvas(30, 30, &[0, 0, 0]), Some(&row)).unwrap();
        assert_eq!(marked(&p, &[0, 0, 0]), Some((0, 20, 29, 29)));
    }

    #[test]
    fn the_watermark_is_scaled_to_its_bounds() {
        // Left half red, right half blue: scaled, each half stays on its side.
        let mut rgba = Vec::new();
        for _y in 0..10 {
            for x in 0..20 {
                rgba.extend_from_slice(if x < 10 {
                    &[255, 0, 0, 255]
                } else {
                    &[0, 0, 255, 255]
                });
            }
        }
        let image = Arc::new(DecodedWatermark::from_rgba(20, 10, rgba).unwrap());
        let mut o = overlay(image, Axis::Start(Offset::ZERO), Axis::Start(Offset::ZERO));
        o.spec.width = Some(Span::Fraction(Fraction(5000)));
        let p = apply(canvas(200, 100, &[0, 0, 0]), Some(&o)).unwrap();
        assert_eq!(
            marked(&p, &[0, 0, 0]),
            Some((0, 0, 99, 49)),
            "100×50: half the width"
        );
        assert_eq!(at(&p, 10, 25), [255, 0, 0]);
        assert_eq!(at(&p, 90, 25), [0, 0, 255]);
        o.spec.width = Some(Span::Pixels(10));
        let p = apply(canvas(200, 100, &[0, 0, 0]), Some(&o)).unwrap();
        assert_eq!(marked(&p, &[0, 0, 0]), Some((0, 0, 9, 4)), "shrunk to 10×5");
        assert_eq!(memory_needed(Some(&o), 200), 10 * 5 * 4 * 2);
        assert_eq!(memory_needed(None, 200), 0);
    }

    #[test]
    fn the_render_reserves_the_scaled_watermark_and_every_frame_of_an_animation_gets_it() {
        use image::AnimationDecoder;
        use pixmesh_core::transform::{Format, OutputFormat};
        // Three 16×16 frames: red, green, blue.
        let mut gif = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
            encoder
                .set_repeat(image::codecs::gif::Repeat::Infinite)
                .unwrap();
            for c in [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]] {
                let frame = image::Frame::new(image::RgbaImage::from_pixel(16, 16, image::Rgba(c)));
                encoder.encode_frame(frame).unwrap();
            }
        }
        let t = Transform {
            format: OutputFormat::Fixed(Format::Gif),
            ..Transform::default()
        };
        let mut o = overlay(
            solid(4, 4, [255, 255, 255, 255]),
            Axis::Start(Offset::ZERO),
            Axis::Start(Offset::ZERO),
        );
        let limits = Limits::default();
        let plain = super::super::memory::memory_needed(&gif, &t, &limits).unwrap();
        let marked =
            super::super::memory::memory_needed_overlaid(&gif, &t, Some(&o), &limits).unwrap();
        assert_eq!(marked - plain, 4 * 4 * 4 * 2);
        o.spec.width = Some(Span::Pixels(1000));
        let big =
            super::super::memory::memory_needed_overlaid(&gif, &t, Some(&o), &limits).unwrap();
        assert_eq!(
            big - plain,
            1000 * 1000 * 4 * 2,
            "scaled up, counted scaled"
        );
        o.spec.width = None;
        let out = super::super::render_overlaid(&gif, &t, Some(&o), &limits, &Default::default())
            .unwrap();
        let frames: Vec<_> = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&out.bytes))
            .unwrap()
            .into_frames()
            .map(|f| f.unwrap().into_buffer())
            .collect();
        assert_eq!(frames.len(), 3);
        for (frame, colour) in frames.iter().zip([[255, 0, 0], [0, 255, 0], [0, 0, 255]]) {
            assert_eq!(frame.get_pixel(1, 1).0[..3], [255, 255, 255], "watermarked");
            assert_eq!(frame.get_pixel(10, 10).0[..3], colour, "the frame itself");
        }
    }

    #[test]
    fn decodes_real_images_upright_with_alpha() {
        let mut png = Vec::new();
        let img = image::RgbaImage::from_fn(6, 3, |x, _| {
            if x < 3 {
                image::Rgba([10, 20, 30, 40])
            } else {
                image::Rgba([0, 0, 0, 255])
            }
        });
        image::DynamicImage::ImageRgba8(img)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        let w = decode_watermark(&png, &Limits::default()).unwrap();
        assert_eq!(w.size(), (6, 3));
        assert_eq!(&w.rgba[..4], [10, 20, 30, 40]);
        assert_eq!(w.bytes(), 6 * 3 * 4);
        assert!(
            crate::pipeline::watermark_decode_memory_needed(&png, &Limits::default()).unwrap()
                >= w.bytes()
        );
        let mut jpeg = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(8, 8, image::Rgb([200, 0, 0])))
            .write_to(
                &mut std::io::Cursor::new(&mut jpeg),
                image::ImageFormat::Jpeg,
            )
            .unwrap();
        let w = decode_watermark(&jpeg, &Limits::default()).unwrap();
        assert_eq!(
            (w.size(), w.rgba[3]),
            ((8, 8), 255),
            "opaque sources get alpha 255"
        );
        let err = decode_watermark(b"not an image", &Limits::default()).unwrap_err();
        assert_eq!(err.http_status(), 415);
        let tiny = Limits {
            max_source_pixels: 10,
            ..Limits::default()
        };
        assert_eq!(
            decode_watermark(&png, &tiny).unwrap_err().http_status(),
            413
        );
    }
}
