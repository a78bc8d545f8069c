//! Trim of uniform borders ([`Trim`]): the box of the decoded, upright image whose outer rows
//! and columns are all within the threshold of the border colour is what the geometry then
//! works on, as libvips' `find_trim` does for imgproxy and imagor.
//!
//! A pixel is border when none of its channels, alpha included, premultiplied, differs from
//! the border colour's by more than the threshold: a fully transparent pixel matches a fully
//! transparent border whatever its colour, and an opaque image compares plain RGB. Unlike
//! libvips, no median filter runs first (JPEG noise along a border needs a threshold of a few
//! steps, as it does for imgproxy's default of 10). An image that is all border is left whole.
//!
//! Shrink-on-load: the box is found on the image as decoded, which a JPEG or WebP source may
//! already be shrunk in (chosen from the untrimmed geometry), and mapped onto the source's
//! pixels, so an edge is known to within one decoded pixel: at most half an output pixel, since
//! shrink-on-load leaves at least a 2× reduction to the resize. The geometry is then planned
//! again on the trimmed box. When that box is so much smaller that it needs more pixels than
//! the decode kept (a small subject on a wide border), [`decode_again`] decodes at the smaller
//! shrink the new geometry allows and the box is found again there. Measured on `large.jpg`
//! (10 MP, q≈96; libjpeg-turbo through Pillow's draft mode, CPU time on the 2-core test
//! machine): a full decode takes 101 ms, 1/2 56 ms, 1/8 43 ms. Always decoding at full size
//! when trimming (imgproxy's choice) would more than double the decode of a thumbnail; trimming
//! on the shrunk decode keeps shrink-on-load's saving for the usual case, a thin border, and
//! pays a second decode only when the box needs it. The scan for the box reads each decoded
//! pixel at most twice.
//!
//! The decoded image is then cut to the box ([`cut`]), since the resize reads a few pixels past
//! its source rectangle and would blend the border into the edges. Memory: the budget
//! ([`super::memory_needed`]) counts a full-size decode, and the largest output any box can
//! give (a side derived from the box's aspect ratio, when enlarging, is limited to
//! [`pixmesh_core::transform::MAX_DIMENSION`]).

use pixmesh_core::transform::{Format, Trim, TrimColor};

use super::error::PipelineError;
use super::geometry::{Geometry, Rect};
use super::limits::Limits;
use super::pixels::Pixels;

/// The box of `p` left once its uniform borders are cut, in whole pixels of `p`; `None` when
/// every pixel is border (the image is then left whole).
pub(super) fn find(p: &Pixels, trim: Trim) -> Option<Rect> {
    let (width, height, channels) = (p.width as usize, p.height as usize, p.channels());
    let pixel = |x: usize, y: usize| -> [u8; 4] {
        let at = (y * width + x) * channels;
        let px = &p.data[at..at + channels];
        premultiplied([px[0], px[1], px[2], if p.alpha { px[3] } else { u8::MAX }])
    };
    let reference = match trim.color {
        TrimColor::TopLeft => pixel(0, 0),
        TrimColor::BottomRight => pixel(width - 1, height - 1),
        TrimColor::Color(c) => [c.r, c.g, c.b, u8::MAX],
    };
    let border = |x: usize, y: usize| {
        pixel(x, y)
            .iter()
            .zip(&reference)
            .all(|(&a, &b)| a.abs_diff(b) <= trim.threshold)
    };
    let row_is_border = |y: usize| (0..width).all(|x| border(x, y));
    let top = (0..height).find(|&y| !row_is_border(y))?;
    // A content row exists, so the search from the bottom stops at `top` at the latest.
    let bottom = (top..height).rev().find(|&y| !row_is_border(y))?;
    // Columns left of `left` and right of `right` are border in every row seen so far: only
    // they can widen the box, so each row is scanned from its ends inwards.
    let (mut left, mut right) = (width, None);
    for y in top..=bottom {
        if let Some(x) = (0..left).find(|&x| !border(x, y)) {
            left = x;
        }
        let from = right.map_or(0, |r: usize| r + 1);
        if let Some(x) = (from..width).rev().find(|&x| !border(x, y)) {
            right = Some(x);
        }
    }
    // Row `top` holds content, so both ends were found there.
    let (mut left, mut right) = (left.min(width - 1), right.unwrap_or(width - 1).max(left));
    let (mut top, mut bottom) = (top, bottom);
    if trim.equal_hor {
        let cut = left.min(width - 1 - right);
        (left, right) = (cut, width - 1 - cut);
    }
    if trim.equal_ver {
        let cut = top.min(height - 1 - bottom);
        (top, bottom) = (cut, height - 1 - cut);
    }
    Some(Rect {
        left: left as f64,
        top: top as f64,
        width: (right - left + 1) as f64,
        height: (bottom - top + 1) as f64,
    })
}

/// RGBA with the colour scaled by the alpha, so transparent pixels are all alike.
fn premultiplied([r, g, b, a]: [u8; 4]) -> [u8; 4] {
    let scale = |c: u8| ((u32::from(c) * u32::from(a) + 127) / 255) as u8;
    [scale(r), scale(g), scale(b), a]
}

/// The trimmed box of the decoded `p` in pixels of the upright `width`×`height` source it was
/// decoded from (maybe shrunk): edges widened to whole source pixels, so nothing of the content
/// is lost. The whole source without a trim, or when everything is border.
pub(super) fn frame(p: &Pixels, (width, height): (u32, u32), trim: Option<Trim>) -> Rect {
    let full = Rect::full(width, height);
    let Some(found) = trim.and_then(|trim| find(p, trim)) else {
        return full;
    };
    let (sx, sy) = (
        f64::from(width) / f64::from(p.width),
        f64::from(height) / f64::from(p.height),
    );
    let left = (found.left * sx).floor().clamp(0.0, f64::from(width) - 1.0);
    let top = (found.top * sy).floor().clamp(0.0, f64::from(height) - 1.0);
    let right = ((found.left + found.width) * sx)
        .ceil()
        .clamp(left + 1.0, f64::from(width));
    let bottom = ((found.top + found.height) * sy)
        .ceil()
        .clamp(top + 1.0, f64::from(height));
    Rect {
        left,
        top,
        width: right - left,
        height: bottom - top,
    }
}

/// The decoded `p` of an upright `width`×`height` source cut to the trimmed `frame` (source
/// pixels), and `geometry` (source pixels) as the same geometry on the cut pixels: the resize
/// then never samples the border it left out (Lanczos reads a few pixels past its source
/// rectangle). The cut is a copy of the box, which replaces the decoded image. Without a trim
/// (`frame` is the whole source), the pixels stay and the geometry is only mapped onto them.
pub(super) fn cut(
    p: Pixels,
    frame: &Rect,
    (width, height): (u32, u32),
    geometry: Geometry,
) -> (Pixels, Geometry) {
    if *frame == Rect::full(width, height) {
        let g = geometry.on_decoded(width, height, p.width, p.height);
        return (p, g);
    }
    // Decoded pixels per source pixel.
    let (sx, sy) = (
        f64::from(p.width) / f64::from(width),
        f64::from(p.height) / f64::from(height),
    );
    let left = ((frame.left * sx).floor() as u32).min(p.width - 1);
    let top = ((frame.top * sy).floor() as u32).min(p.height - 1);
    let right = (((frame.left + frame.width) * sx).ceil() as u32).clamp(left + 1, p.width);
    let bottom = (((frame.top + frame.height) * sy).ceil() as u32).clamp(top + 1, p.height);
    let cut = super::resize::crop_copy(&p, left, top, right - left, bottom - top);
    drop(p);
    let (cw, chh) = (f64::from(cut.width), f64::from(cut.height));
    let crop_w = (geometry.crop.width * sx).min(cw);
    let crop_h = (geometry.crop.height * sy).min(chh);
    let crop = Rect {
        left: (geometry.crop.left * sx - f64::from(left)).clamp(0.0, cw - crop_w),
        top: (geometry.crop.top * sy - f64::from(top)).clamp(0.0, chh - crop_h),
        width: crop_w,
        height: crop_h,
    };
    (cut, Geometry { crop, ..geometry })
}

/// How the still was decoded, so the trim step can decode it again with less shrinking.
pub(super) struct Decoded<'a> {
    pub(super) source: &'a [u8],
    pub(super) format: Format,
    pub(super) orientation: image::metadata::Orientation,
    pub(super) limits: &'a Limits,
    /// The shrink-on-load factor the pixels were decoded with.
    pub(super) shrink: f64,
}

/// The source decoded again, upright, when the geometry planned on the trimmed box (in source
/// pixels) allows less shrink-on-load than the decode used; `None` when the pixels at hand
/// are enough (always for sources decoded at full size).
pub(super) fn decode_again(
    d: &Decoded<'_>,
    geometry: &Geometry,
) -> Result<Option<Pixels>, PipelineError> {
    let shrink = super::decode::shrink_on_load(d.format, geometry);
    if shrink >= d.shrink {
        return Ok(None);
    }
    let decoder = super::header::read_header(d.source, d.format, d.limits)?;
    let image = super::decode::decode(d.source, decoder, d.format, d.limits, shrink)?;
    super::pixels::normalise(super::pixels::apply_orientation(image, d.orientation)).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmesh_core::transform::Color;

    /// A `width`×`height` RGB image of `border` with `inner` filling the box at
    /// (`left`, `top`) of `w`×`h`.
    fn framed(
        (width, height): (u32, u32),
        border: [u8; 3],
        (left, top, w, h): (u32, u32, u32, u32),
        inner: [u8; 3],
    ) -> Pixels {
        let mut data = Vec::new();
        for y in 0..height {
            for x in 0..width {
                let inside = (left..left + w).contains(&x) && (top..top + h).contains(&y);
                data.extend_from_slice(if inside { &inner } else { &border });
            }
        }
        Pixels {
            width,
            height,
            alpha: false,
            data,
        }
    }

    fn trim(threshold: u8, color: TrimColor) -> Trim {
        Trim {
            threshold,
            color,
            equal_hor: false,
            equal_ver: false,
        }
    }

    fn rect(left: u32, top: u32, width: u32, height: u32) -> Rect {
        Rect {
            left: f64::from(left),
            top: f64::from(top),
            width: f64::from(width),
            height: f64::from(height),
        }
    }

    #[test]
    fn a_uniform_border_is_cut_to_the_content_box() {
        let p = framed((100, 80), [255; 3], (20, 20, 60, 40), [10, 200, 30]);
        let tl = trim(0, TrimColor::TopLeft);
        assert_eq!(find(&p, tl), Some(rect(20, 20, 60, 40)));
        // Unequal borders, and equal sides asked for: the smaller cut on both sides.
        let p = framed((100, 80), [255; 3], (10, 5, 60, 40), [0; 3]);
        assert_eq!(find(&p, tl), Some(rect(10, 5, 60, 40)));
        let equal = Trim {
            equal_hor: true,
            equal_ver: true,
            ..tl
        };
        assert_eq!(find(&p, equal), Some(rect(10, 5, 80, 70)));
        let hor = Trim {
            equal_hor: true,
            ..tl
        };
        assert_eq!(find(&p, hor), Some(rect(10, 5, 80, 40)));
    }

    #[test]
    fn the_threshold_decides_what_is_border() {
        // A grey step of 12 between the outer border and a second ring.
        let mut p = framed((60, 60), [100; 3], (10, 10, 40, 40), [112; 3]);
        let inner = framed((40, 40), [112; 3], (10, 10, 20, 20), [0, 0, 255]);
        for (y, row) in inner.data.chunks_exact(40 * 3).enumerate() {
            let at = ((10 + y) * 60 + 10) * 3;
            p.data[at..at + 40 * 3].copy_from_slice(row);
        }
        let tl = |t| find(&p, trim(t, TrimColor::TopLeft));
        assert_eq!(tl(11), Some(rect(10, 10, 40, 40)), "12 is more than 11");
        assert_eq!(tl(12), Some(rect(20, 20, 20, 20)), "12 is within 12");
        assert_eq!(tl(255), None, "everything is border: nothing trimmed");
    }

    #[test]
    fn the_border_colour_comes_from_a_corner_or_the_transform() {
        // Five black rows on top, five white ones at the bottom, red between.
        let mut p = framed((50, 40), [255, 0, 0], (0, 0, 50, 5), [0; 3]);
        let white = framed((50, 5), [255; 3], (0, 0, 0, 0), [255; 3]);
        p.data[35 * 50 * 3..].copy_from_slice(&white.data);
        assert_eq!(
            find(&p, trim(0, TrimColor::TopLeft)),
            Some(rect(0, 5, 50, 35))
        );
        assert_eq!(
            find(&p, trim(0, TrimColor::BottomRight)),
            Some(rect(0, 0, 50, 35))
        );
        let given = |c| find(&p, trim(0, TrimColor::Color(c)));
        assert_eq!(given(Color::rgb(255, 255, 255)), Some(rect(0, 0, 50, 35)));
        assert_eq!(
            given(Color::rgb(255, 0, 0)),
            Some(rect(0, 0, 50, 40)),
            "no red edge"
        );
    }

    #[test]
    fn a_transparent_border_is_trimmed_whatever_its_colour() {
        let (w, h) = (40u32, 30u32);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let inside = (8..30).contains(&x) && (4..20).contains(&y);
                // Transparent pixels of varying colour around an opaque blue box.
                data.extend_from_slice(&if inside {
                    [0, 0, 255, 255]
                } else {
                    [(x * 6) as u8, (y * 8) as u8, 77, 0]
                });
            }
        }
        let p = Pixels {
            width: w,
            height: h,
            alpha: true,
            data,
        };
        assert_eq!(
            find(&p, trim(0, TrimColor::TopLeft)),
            Some(rect(8, 4, 22, 16))
        );
    }

    #[test]
    fn a_box_found_on_a_shrunk_decode_maps_onto_whole_source_pixels() {
        // A 1000×800 source decoded at 1/4: 250×200, content at (25, 20) 100×50.
        let p = framed((250, 200), [0; 3], (25, 20, 100, 50), [255; 3]);
        let f = frame(&p, (1000, 800), Some(trim(0, TrimColor::TopLeft)));
        assert_eq!(f, rect(100, 80, 400, 200));
        assert_eq!(frame(&p, (1000, 800), None), Rect::full(1000, 800));
        let flat = framed((250, 200), [7; 3], (0, 0, 0, 0), [7; 3]);
        assert_eq!(
            frame(&flat, (1000, 800), Some(trim(0, TrimColor::TopLeft))),
            Rect::full(1000, 800)
        );
    }

    #[test]
    fn a_real_photo_with_a_border_added_trims_back_to_the_photo() {
        let source = super::super::tests::testdata("flower.webp");
        let photo = image::load_from_memory(&source).unwrap().to_rgb8();
        let (w, h) = photo.dimensions();
        let mut framed_photo = image::RgbImage::from_pixel(w + 40, h + 40, image::Rgb([255; 3]));
        image::imageops::replace(&mut framed_photo, &photo, 20, 20);
        let p = Pixels {
            width: w + 40,
            height: h + 40,
            alpha: false,
            data: framed_photo.into_raw(),
        };
        // The photo's own edge may be as light as the border in places: allow a few pixels.
        let found = find(&p, trim(10, TrimColor::TopLeft)).unwrap();
        assert!(
            (found.left - 20.0).abs() <= 2.0 && (found.top - 20.0).abs() <= 2.0,
            "{found:?}"
        );
        assert!((found.width - f64::from(w)).abs() <= 4.0, "{found:?}");
        assert!((found.height - f64::from(h)).abs() <= 4.0, "{found:?}");
    }

    /// `img` encoded by `image` as `format` (JPEG at quality 95).
    fn encoded(img: image::DynamicImage, format: image::ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        if format == image::ImageFormat::Jpeg {
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
                .encode_image(&img.to_rgb8())
                .unwrap();
        } else {
            img.write_to(&mut std::io::Cursor::new(&mut out), format)
                .unwrap();
        }
        out
    }

    fn render_to(source: &[u8], t: Transform) -> image::RgbaImage {
        let t = pixmesh_core::transform::Transform {
            format: pixmesh_core::transform::OutputFormat::Fixed(Format::Png),
            ..t
        };
        let out = super::super::render(source, &t, &Limits::default()).unwrap();
        image::load_from_memory(&out.bytes).unwrap().to_rgba8()
    }

    use pixmesh_core::transform::{Fit, Transform};

    fn trimmed(threshold: u8) -> Transform {
        Transform {
            trim: Some(trim(threshold, TrimColor::TopLeft)),
            ..Transform::default()
        }
    }

    #[test]
    fn a_render_trims_before_it_fits_the_box() {
        // 200×100: a 20-pixel white border around red (left) and blue (right) halves.
        let img = image::RgbImage::from_fn(200, 100, |x, y| {
            let inside = (20..180).contains(&x) && (20..80).contains(&y);
            image::Rgb(match (inside, x < 100) {
                (false, _) => [255; 3],
                (true, true) => [255, 0, 0],
                (true, false) => [0, 0, 255],
            })
        });
        let png = encoded(image::DynamicImage::ImageRgb8(img), image::ImageFormat::Png);
        let out = render_to(&png, trimmed(0));
        assert_eq!(out.dimensions(), (160, 60));
        assert_eq!(out.get_pixel(0, 0).0, [255, 0, 0, 255]);
        assert_eq!(out.get_pixel(159, 59).0, [0, 0, 255, 255]);
        // The box is fitted, not the bordered image: 80×30, red and blue to the edges.
        let fit = Transform {
            width: 80,
            height: 80,
            fit: Fit::FitIn,
            ..trimmed(0)
        };
        let out = render_to(&png, fit);
        assert_eq!(out.dimensions(), (80, 30));
        assert_eq!(out.get_pixel(0, 15).0, [255, 0, 0, 255]);
        assert_eq!(out.get_pixel(79, 15).0, [0, 0, 255, 255]);
        // A manual crop is of the trimmed image: its left 40 pixels are all red.
        let crop = Transform {
            crop: Some(pixmesh_core::transform::Crop {
                width: pixmesh_core::transform::Span::Pixels(40),
                height: pixmesh_core::transform::Span::FULL,
                at: pixmesh_core::transform::CropAt::Anchor(
                    pixmesh_core::transform::HAlign::Left,
                    pixmesh_core::transform::VAlign::Top,
                ),
            }),
            ..trimmed(0)
        };
        let out = render_to(&png, crop);
        assert_eq!(out.dimensions(), (40, 60));
        assert!(out.pixels().all(|p| p.0 == [255, 0, 0, 255]));
    }

    #[test]
    fn a_transparent_border_is_trimmed_in_a_render() {
        let img = image::RgbaImage::from_fn(120, 90, |x, y| {
            let inside = (30..100).contains(&x) && (10..50).contains(&y);
            image::Rgba(if inside {
                [0, 128, 0, 255]
            } else {
                [(x * 2) as u8, (y * 2) as u8, 9, 0]
            })
        });
        let png = encoded(
            image::DynamicImage::ImageRgba8(img),
            image::ImageFormat::Png,
        );
        let out = render_to(&png, trimmed(0));
        assert_eq!(out.dimensions(), (70, 40));
        assert!(out.pixels().all(|p| p.0 == [0, 128, 0, 255]));
    }

    /// A `side`×`side` white JPEG with black and white 4-pixel stripes in the `w`×`h` box
    /// at its centre.
    fn stripes_on_white(side: u32, w: u32, h: u32) -> Vec<u8> {
        let (left, top) = ((side - w) / 2, (side - h) / 2);
        let img = image::RgbImage::from_fn(side, side, |x, y| {
            let inside = (left..left + w).contains(&x) && (top..top + h).contains(&y);
            image::Rgb(if inside && (x - left) / 4 % 2 == 0 {
                [0; 3]
            } else {
                [255; 3]
            })
        });
        encoded(
            image::DynamicImage::ImageRgb8(img),
            image::ImageFormat::Jpeg,
        )
    }

    #[test]
    fn a_small_box_in_a_wide_border_is_decoded_again_with_enough_pixels() {
        // 2000×2000 into 100×100: shrink-on-load 1/8 from the header. Trimmed to the 200×100
        // stripes, the output is 100×50, a 2× reduction: the decode at 1/8 (25×12 pixels of
        // stripes, a grey blur) is not enough, the source is decoded again at full size.
        let source = stripes_on_white(2000, 200, 100);
        let t = Transform {
            width: 100,
            height: 100,
            fit: Fit::FitIn,
            ..trimmed(40)
        };
        let planned = super::super::plan::plan(&source, &t, &Limits::default()).unwrap();
        assert_eq!(planned.shrink, 8.0);
        let out = render_to(&source, t);
        // JPEG ringing along the stripes' edge may add a row to the box.
        assert!(
            matches!(out.dimensions(), (100, 50 | 51)),
            "{:?}",
            out.dimensions()
        );
        // 8-pixel stripe periods halved: 2 dark, 2 light pixels, sharply apart.
        let row: Vec<u8> = (0..100).map(|x| out.get_pixel(x, 25).0[0]).collect();
        let (dark, light) = (
            row.iter().filter(|&&v| v < 64).count(),
            row.iter().filter(|&&v| v > 192).count(),
        );
        assert!(dark >= 30 && light >= 30, "stripes survive: {row:?}");
        // The decode again, directly: the trimmed geometry asks for no shrink at all.
        let trimmed_geometry = Geometry {
            crop: rect(900, 950, 200, 100),
            width: 100,
            height: 50,
        };
        let decoded = Decoded {
            source: &source,
            format: Format::Jpeg,
            orientation: image::metadata::Orientation::NoTransforms,
            limits: &Limits::default(),
            shrink: 8.0,
        };
        let again = decode_again(&decoded, &trimmed_geometry).unwrap().unwrap();
        assert_eq!((again.width, again.height), (2000, 2000));
        // A border thin enough that the shrunk decode has the pixels it needs: no second one.
        let wide = Geometry {
            crop: rect(100, 100, 1800, 1800),
            width: 100,
            height: 100,
        };
        assert!(decode_again(&decoded, &wide).unwrap().is_none());
    }

    #[test]
    fn a_photo_in_a_border_renders_like_the_photo_through_shrink_on_load() {
        // medium.jpg (2560×1600) in a 240-pixel white border, into 320×320: the box found
        // on the 1/2 decode is the photo's, so the output has the photo's aspect ratio.
        let photo = super::super::tests::testdata("medium.jpg");
        let photo = image::load_from_memory(&photo).unwrap().to_rgb8();
        let mut framed_photo = image::RgbImage::from_pixel(3040, 2080, image::Rgb([255; 3]));
        image::imageops::replace(&mut framed_photo, &photo, 240, 240);
        let source = encoded(
            image::DynamicImage::ImageRgb8(framed_photo),
            image::ImageFormat::Jpeg,
        );
        let t = Transform {
            width: 320,
            height: 320,
            fit: Fit::FitIn,
            ..trimmed(24)
        };
        assert!(
            super::super::plan::plan(&source, &t, &Limits::default())
                .unwrap()
                .shrink
                > 1.0
        );
        let out = render_to(&source, t);
        assert_eq!(out.dimensions(), (320, 200));
        let untrimmed = render_to(
            &encoded(
                image::DynamicImage::ImageRgb8(photo),
                image::ImageFormat::Jpeg,
            ),
            Transform { trim: None, ..t },
        );
        let diff: u64 = out
            .pixels()
            .zip(untrimmed.pixels())
            .map(|(a, b)| u64::from(a.0[0].abs_diff(b.0[0])))
            .sum();
        let mean = diff as f64 / f64::from(320 * 200);
        assert!(mean < 6.0, "mean difference {mean} from the photo itself");
    }

    #[test]
    fn the_budget_counts_a_full_size_decode_and_the_largest_trimmed_output() {
        let limits = Limits::default();
        let source = stripes_on_white(2000, 200, 100);
        let fit = Transform {
            width: 100,
            height: 100,
            fit: Fit::FitIn,
            ..Transform::default()
        };
        let full_decode = 2000 * 2000 * 3 * 2;
        let plain = super::super::memory::memory_needed(&source, &fit, &limits).unwrap();
        assert!(plain < full_decode, "1/8 decode: {plain}");
        let with_trim = Transform {
            trim: Some(trim(40, TrimColor::TopLeft)),
            ..fit
        };
        let needed = super::super::memory::memory_needed(&source, &with_trim, &limits).unwrap();
        assert!(
            needed >= full_decode,
            "a decode again at full size: {needed}"
        );
        // One side derived from the box, enlarging: up to MAX_DIMENSION of it, RGBA, 4 times.
        let derived = Transform {
            width: 100,
            height: 0,
            upscale: true,
            ..with_trim
        };
        let needed = super::super::memory::memory_needed(&source, &derived, &limits).unwrap();
        let side = u64::from(pixmesh_core::transform::MAX_DIMENSION);
        assert!(needed >= full_decode + 100 * side * 4 * 4, "{needed}");
    }

    #[test]
    fn a_side_derived_from_a_thin_box_is_limited() {
        // A 2×40 line on 2000×50 of white, 1000 wide, enlarging: 1000×20000 is refused.
        let img = image::RgbImage::from_fn(2000, 50, |x, y| {
            image::Rgb(if (1000..1002).contains(&x) && (5..45).contains(&y) {
                [0; 3]
            } else {
                [255; 3]
            })
        });
        let png = encoded(image::DynamicImage::ImageRgb8(img), image::ImageFormat::Png);
        let t = Transform {
            width: 1000,
            upscale: true,
            fit: Fit::FitIn,
            ..trimmed(0)
        };
        let e = super::super::render(&png, &t, &Limits::default()).unwrap_err();
        assert_eq!(e.http_status(), 413, "{e}");
        // Without enlarging the box is only cut out: 2×40.
        let t = Transform {
            upscale: false,
            ..t
        };
        assert_eq!(render_to(&png, t).dimensions(), (2, 40));
    }
}
