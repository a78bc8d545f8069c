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
//! (10 MP), a decode at 1/8 takes a fraction of a full one (libjpeg-turbo's DCT scaling skips
//! most of the IDCT), so trimming on the shrunk decode keeps shrink-on-load's saving for the
//! usual case, a thin border, and pays a second decode only when the box needs it.

use pixmesh_core::transform::{Format, Trim, TrimColor};

use super::{Geometry, Limits, PipelineError, Pixels, Rect};

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
    let shrink = super::shrink_on_load(d.format, geometry);
    if shrink >= d.shrink {
        return Ok(None);
    }
    let decoder = super::read_header(d.source, d.format, d.limits)?;
    let image = super::decode(d.source, decoder, d.format, d.limits, shrink)?;
    super::normalise(super::apply_orientation(image, d.orientation)).map(Some)
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
        let source = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/testdata/images/flower.webp"),
        )
        .unwrap();
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
}
