//! Step 3: geometry from the header. The output size (fit-in, fill and crop, stretch:
//! thumbor/imagor semantics), the manual crop and focal point, the output limits, and the geometry
//! the memory estimate budgets for when a trim's box is not known yet.

use pixmesh_core::transform::{
    Crop, CropAt, Fit, Format, HAlign, MAX_DIMENSION, Transform, VAlign,
};

use super::error::PipelineError;
use super::limits::Limits;

/// The geometry [`memory_needed`] budgets for on a `width`×`height` source: the planned one,
/// or, with a trim, whose box is only known once decoded, one with the largest output any box
/// can give: a side the transform asks for is at most that side; a side derived from the box's
/// aspect ratio at most the source's longer side, or, enlarging, [`MAX_DIMENSION`] ([`replan`]
/// refuses more); without either side, the source's size. Never over the output limit.
pub(super) fn budgeted(
    planned: Geometry,
    (width, height): (u32, u32),
    t: &Transform,
    limits: &Limits,
) -> Geometry {
    if t.trim.is_none() {
        return planned;
    }
    let longer = width.max(height);
    let side = |requested: u32| match requested {
        0 if t.upscale => MAX_DIMENSION.max(longer),
        0 => longer,
        r => r,
    };
    let (w, h) = match requested_box(t, width, height) {
        (0, 0) => (width, height),
        (w, h) => (side(w), side(h)),
    };
    let (w, h) = (planned.width.max(w), planned.height.max(h));
    let (w, h) = if u64::from(w) * u64::from(h) <= limits.max_output_pixels {
        (w, h)
    } else {
        // As many pixels as the output limit allows, in rows of the requested height, so
        // padding to the box adds none (a padded box over the limit was refused already).
        let rows = t.height.max(1);
        let per_row = limits.max_output_pixels / u64::from(rows);
        (u32::try_from(per_row).unwrap_or(u32::MAX).max(1), rows)
    };
    Geometry {
        width: w,
        height: h,
        ..planned
    }
}

/// A source rectangle, in source pixels; fractional edges are allowed (the resizer samples
/// sub-pixel positions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rect {
    pub(super) left: f64,
    pub(super) top: f64,
    pub(super) width: f64,
    pub(super) height: f64,
}

impl Rect {
    pub(super) fn full(width: u32, height: u32) -> Rect {
        Rect {
            left: 0.0,
            top: 0.0,
            width: f64::from(width),
            height: f64::from(height),
        }
    }
}

/// What the resize step does: take `crop` from the source and scale it to `width`×`height`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Geometry {
    pub(super) crop: Rect,
    pub(super) width: u32,
    pub(super) height: u32,
}

impl Geometry {
    /// The same geometry computed on `region` of a larger image, in that image's coordinates.
    pub(super) fn within(self, region: &Rect) -> Geometry {
        Geometry {
            crop: Rect {
                left: self.crop.left + region.left,
                top: self.crop.top + region.top,
                ..self.crop
            },
            ..self
        }
    }

    /// The same geometry on the image as decoded, `decoded_w`×`decoded_h`, when the decoder
    /// shrank the `w0`×`h0` source on load: the crop scales with it, the output size stays.
    pub(super) fn on_decoded(self, w0: u32, h0: u32, decoded_w: u32, decoded_h: u32) -> Geometry {
        if (w0, h0) == (decoded_w, decoded_h) {
            return self;
        }
        let (sx, sy) = (
            f64::from(decoded_w) / f64::from(w0),
            f64::from(decoded_h) / f64::from(h0),
        );
        let (max_w, max_h) = (f64::from(decoded_w), f64::from(decoded_h));
        let width = (self.crop.width * sx).min(max_w);
        let height = (self.crop.height * sy).min(max_h);
        Geometry {
            crop: Rect {
                left: (self.crop.left * sx).min(max_w - width),
                top: (self.crop.top * sy).min(max_h - height),
                width,
                height,
            },
            ..self
        }
    }
}

/// The manual crop: the region of the upright `w0`×`h0` source that `crop` keeps, on whole
/// pixels (fractions of a side are rounded), clamped to the image (as thumbor and imgproxy do);
/// the whole image without one. A region with nothing inside the image is an error.
pub(super) fn crop_region(w0: u32, h0: u32, crop: Option<Crop>) -> Result<Rect, PipelineError> {
    let Some(c) = crop else {
        return Ok(Rect::full(w0, h0));
    };
    let (fw, fh) = (f64::from(w0), f64::from(h0));
    let width = c.width.on(w0).round().max(1.0);
    let height = c.height.on(h0).round().max(1.0);
    let (left, top) = match c.at {
        CropAt::Offset(l, t) => (l.on(w0).round(), t.on(h0).round()),
        CropAt::Anchor(h, v) => {
            let (spare_x, spare_y) = ((fw - width).max(0.0), (fh - height).max(0.0));
            let left = match h {
                HAlign::Left => 0.0,
                HAlign::Center => (spare_x / 2.0).floor(),
                HAlign::Right => spare_x,
            };
            let top = match v {
                VAlign::Top => 0.0,
                VAlign::Middle => (spare_y / 2.0).floor(),
                VAlign::Bottom => spare_y,
            };
            (left, top)
        }
    };
    let (right, bottom) = ((left + width).min(fw), (top + height).min(fh));
    if right <= left || bottom <= top {
        return Err(PipelineError::CropOutside(format!("{w0}x{h0}")));
    }
    Ok(Rect {
        left,
        top,
        width: right - left,
        height: bottom - top,
    })
}

/// [`compute_geometry_at`] without a focal point.
#[cfg(test)]
pub(super) fn compute_geometry(w0: u32, h0: u32, t: &Transform) -> Geometry {
    compute_geometry_at(w0, h0, t, None)
}

/// The box `t` asks for an upright `width`×`height` image in: its width and height, turned a
/// quarter when `t` is adaptive and the box's orientation (landscape or portrait) differs from
/// the image's, as thumbor's `adaptive-fit-in` does.
pub(super) fn requested_box(t: &Transform, width: u32, height: u32) -> (u32, u32) {
    let (w, h) = (t.width, t.height);
    let turns = t.adaptive
        && matches!(t.fit, Fit::FitIn | Fit::Cover)
        && w != 0
        && h != 0
        && ((width < height && w > h) || (width > height && w < h));
    if turns { (h, w) } else { (w, h) }
}

/// How `t` fits an upright `width`×`height` image: [`Fit::Auto`] and [`Fit::AutoDown`]
/// decided by the orientations of the box and the image (a square counts as landscape, as in
/// imgproxy, whose auto then resizes as its `fill`: [`Fit::FillClamped`], or, with a dpr,
/// [`Fit::Fill`]).
pub(super) fn fit_for(t: &Transform, width: u32, height: u32) -> Fit {
    let fill = match t.fit {
        Fit::Auto => Fit::FillClamped,
        Fit::AutoDown => Fit::Fill,
        fit => return fit,
    };
    match t.width != 0 && t.height != 0 && (width >= height) == (t.width >= t.height) {
        true => fill,
        false => Fit::FitIn,
    }
}

/// The canvas the padding step makes of a `width`×`height` image: the box `pad` places it in
/// ([`padded_box`]), with [`Transform::padding`] around it.
pub(super) fn padded_size(width: u32, height: u32, t: &Transform) -> (u32, u32) {
    let (w, h) = padded_box(width, height, t);
    let p = t.padding.unwrap_or_default();
    (
        w.saturating_add(p.left).saturating_add(p.right),
        h.saturating_add(p.top).saturating_add(p.bottom),
    )
}

/// The box `pad` places a `width`×`height` image in, inside [`Transform::padding`]: each side
/// the transform asks for, and never smaller than the image; without `pad`, the image itself.
pub(super) fn padded_box(width: u32, height: u32, t: &Transform) -> (u32, u32) {
    if !t.pad {
        return (width, height);
    }
    let side = |requested: u32, actual: u32| {
        if requested == 0 {
            actual
        } else {
            requested.max(actual)
        }
    };
    let (w, h) = requested_box(t, width, height);
    (side(w, width), side(h, height))
}

/// Computes the crop rectangle and output size for a `w0`×`h0` (upright, non-empty) source;
/// a fill crop is centred on `focus` (pixels of that source) when there is one. The output
/// size is scaled by [`Transform::proportion`] (thumbor's `proportion`), each side rounded.
pub(super) fn compute_geometry_at(
    w0: u32,
    h0: u32,
    t: &Transform,
    focus: Option<(f64, f64)>,
) -> Geometry {
    let g = fitted_geometry(w0, h0, t, focus);
    match t.proportion {
        Some(p) => Geometry {
            width: scale_side(g.width, p.as_f64()),
            height: scale_side(g.height, p.as_f64()),
            ..g
        },
        None => g,
    }
}

/// [`compute_geometry_at`] before the proportion.
fn fitted_geometry(w0: u32, h0: u32, t: &Transform, focus: Option<(f64, f64)>) -> Geometry {
    let full = Rect::full(w0, h0);
    let (w, h) = requested_box(t, w0, h0);
    if w == 0 && h == 0 {
        return Geometry {
            crop: full,
            width: w0,
            height: h0,
        };
    }
    let ratio = |requested: u32, source: u32| {
        (requested != 0).then(|| f64::from(requested) / f64::from(source))
    };
    let (sx, sy) = (ratio(w, w0), ratio(h, h0));
    let fit = fit_for(t, w0, h0);
    match (fit, sx, sy) {
        (Fit::Stretch, _, _) => {
            let mut width = if w == 0 { w0 } else { w };
            let mut height = if h == 0 { h0 } else { h };
            if !t.upscale {
                width = width.min(w0);
                height = height.min(h0);
            }
            Geometry {
                crop: full,
                width,
                height,
            }
        }
        // A source that cannot cover the box without upscaling keeps its scale: the box,
        // clamped to the image, is cropped out of it.
        (Fit::FillClamped, Some(x), Some(y)) if !t.upscale && x.max(y) > 1.0 => {
            clamped_fill_geometry(w0, h0, t, focus)
        }
        (Fit::Fill | Fit::FillClamped, Some(_), Some(_)) => fill_geometry(w0, h0, t, focus),
        // FitIn, or a fill with one side derived from the aspect ratio (no crop, so it is a
        // fit); Cover takes the larger scale, so that each side is at least the box's.
        (
            Fit::FitIn | Fit::Fill | Fit::FillClamped | Fit::Cover | Fit::Auto | Fit::AutoDown,
            sx,
            sy,
        ) => {
            let scale = match (sx, sy) {
                (Some(x), Some(y)) if fit == Fit::Cover => x.max(y),
                (Some(x), Some(y)) => x.min(y),
                (Some(s), None) | (None, Some(s)) => s,
                (None, None) => 1.0,
            };
            let scale = if t.upscale { scale } else { scale.min(1.0) };
            Geometry {
                crop: full,
                width: scale_side(w0, scale),
                height: scale_side(h0, scale),
            }
        }
    }
}

/// `side × scale`, rounded, at least 1 and saturating at `u32::MAX`.
pub(super) fn scale_side(side: u32, scale: f64) -> u32 {
    // `as` from f64 saturates; NaN cannot occur (finite, non-negative inputs).
    (f64::from(side) * scale).round().max(1.0) as u32
}

/// Fill: the source rectangle with the box's aspect ratio, as large as the source allows and
/// anchored per the alignment, scaled to the box. Without upscaling, a box larger than that
/// rectangle yields the rectangle itself, cropped on whole pixels and not resampled.
pub(super) fn fill_geometry(
    w0: u32,
    h0: u32,
    t: &Transform,
    focus: Option<(f64, f64)>,
) -> Geometry {
    let (bw, bh) = (u64::from(t.width), u64::from(t.height));
    // The box is at least as wide (relative to its height) as the source: keep the full source
    // width and crop the height. Compared exactly in integers.
    let crop_height = bw * u64::from(h0) >= bh * u64::from(w0);
    let (cw, ch) = if crop_height {
        (f64::from(w0), f64::from(w0) * bh as f64 / bw as f64)
    } else {
        (f64::from(h0) * bw as f64 / bh as f64, f64::from(h0))
    };
    let (cw, ch) = (cw.min(f64::from(w0)), ch.min(f64::from(h0)));
    let scale = bw as f64 / cw;
    if scale > 1.0 && !t.upscale {
        let width = (cw.round() as u32).clamp(1, w0);
        let height = (ch.round() as u32).clamp(1, h0);
        let crop = anchor(w0, h0, f64::from(width), f64::from(height), t, focus);
        let crop = Rect {
            left: crop.left.floor(),
            top: crop.top.floor(),
            ..crop
        };
        return Geometry {
            crop,
            width,
            height,
        };
    }
    Geometry {
        crop: anchor(w0, h0, cw, ch, t, focus),
        width: t.width,
        height: t.height,
    }
}

/// [`Fit::FillClamped`] without upscaling, on a `w0`×`h0` source that cannot cover the box: the
/// box clamped to the source (each side the smaller of the two), cut out at the source's scale
/// on whole pixels, anchored per the alignment or centred on `focus`. imgproxy's `fill` does
/// this (`processing/prepare.go`: `calcScale` undoes a shrink below 1 without `el`, and
/// `calcSizes` keeps the requested size as the result crop, which `cropImage` clamps to the
/// image).
fn clamped_fill_geometry(w0: u32, h0: u32, t: &Transform, focus: Option<(f64, f64)>) -> Geometry {
    let (width, height) = (t.width.min(w0), t.height.min(h0));
    let crop = anchor(w0, h0, f64::from(width), f64::from(height), t, focus);
    Geometry {
        crop: Rect {
            left: crop.left.floor(),
            top: crop.top.floor(),
            ..crop
        },
        width,
        height,
    }
}

/// Places a `cw`×`ch` rectangle inside the `w0`×`h0` source: centred on `focus` as far as the
/// source allows, or else per the transform's alignment.
pub(super) fn anchor(
    w0: u32,
    h0: u32,
    cw: f64,
    ch: f64,
    t: &Transform,
    focus: Option<(f64, f64)>,
) -> Rect {
    let spare_x = (f64::from(w0) - cw).max(0.0);
    let spare_y = (f64::from(h0) - ch).max(0.0);
    let (left, top) = match focus {
        Some((x, y)) => (
            (x - cw / 2.0).clamp(0.0, spare_x),
            (y - ch / 2.0).clamp(0.0, spare_y),
        ),
        None => (
            match t.h_align {
                HAlign::Left => 0.0,
                HAlign::Center => spare_x / 2.0,
                HAlign::Right => spare_x,
            },
            match t.v_align {
                VAlign::Top => 0.0,
                VAlign::Middle => spare_y / 2.0,
                VAlign::Bottom => spare_y,
            },
        ),
    };
    Rect {
        left,
        top,
        width: cw,
        height: ch,
    }
}

/// Rejects an AVIF output over [`Limits::max_avif_output_pixels`] (padding included) before
/// anything is decoded: `g` is the planned geometry or, with a trim, whose box is only known
/// once decoded, the largest it can give ([`budgeted`]).
pub(super) fn check_avif_output(
    g: &Geometry,
    t: &Transform,
    source_format: Format,
    limits: &Limits,
) -> Result<(), PipelineError> {
    // Transparency never makes the output AVIF.
    if t.format.resolve(source_format, || false) != Format::Avif {
        return Ok(());
    }
    let (width, height) = output_size(g, t);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_avif_output_pixels {
        return Err(PipelineError::TooLarge(format!(
            "an AVIF output of {width}x{height} ({pixels} pixels): AVIF outputs are limited to \
             {} pixels (max_avif_output_pixels); ask for a smaller size or another format",
            limits.max_avif_output_pixels
        )));
    }
    Ok(())
}

/// Rejects outputs over [`Limits::max_output_pixels`] before anything is allocated for them:
/// the resized image, or the padded canvas when the transform pads (or has padding).
pub(super) fn check_output_size(
    g: &Geometry,
    t: &Transform,
    limits: &Limits,
) -> Result<(), PipelineError> {
    let (width, height) = output_size(g, t);
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_output_pixels {
        return Err(PipelineError::TooLarge(format!(
            "output would be {width}x{height} ({pixels} pixels), the limit is {} pixels",
            limits.max_output_pixels
        )));
    }
    Ok(())
}

/// The output's size: the geometry's, padded when the transform pads to the box or has
/// padding around the image.
pub(super) fn output_size(geometry: &Geometry, t: &Transform) -> (u32, u32) {
    if t.pad || t.padding.is_some() {
        padded_size(geometry.width, geometry.height, t)
    } else {
        (geometry.width, geometry.height)
    }
}

/// The manual crop step ([`crop_region`], folded into the resize).
#[cfg(test)]
mod crop_tests {
    use std::io::Cursor;

    use image::{DynamicImage, ImageFormat};

    use super::*;
    use crate::pipeline::error::*;
    use crate::pipeline::{Limits, render};
    use image::{GenericImageView, Rgb, RgbImage};
    use pixmesh_core::transform::{Focus, Fraction, OutputFormat, Span};

    fn offset(w: Span, h: Span, l: Span, t: Span) -> Option<Crop> {
        Some(Crop {
            width: w,
            height: h,
            at: CropAt::Offset(l, t),
        })
    }

    fn anchored(w: Span, h: Span, ha: HAlign, va: VAlign) -> Option<Crop> {
        Some(Crop {
            width: w,
            height: h,
            at: CropAt::Anchor(ha, va),
        })
    }

    fn rect(r: Rect) -> (f64, f64, f64, f64) {
        (r.left, r.top, r.width, r.height)
    }

    use Span::{Fraction as Fr, Pixels as Px};

    #[test]
    fn regions_are_placed_rounded_and_clamped() {
        let region = |c| {
            crop_region(400, 200, c)
                .map(rect)
                .map_err(|e| e.to_string())
        };
        assert_eq!(region(None), Ok((0.0, 0.0, 400.0, 200.0)));
        assert_eq!(
            region(offset(Px(100), Px(50), Px(10), Px(20))),
            Ok((10.0, 20.0, 100.0, 50.0))
        );
        assert_eq!(
            region(offset(
                Fr(Fraction(5000)),
                Fr(Fraction(2500)),
                Fr(Fraction(2500)),
                Fr(Fraction(5000))
            )),
            Ok((100.0, 100.0, 200.0, 50.0))
        );
        // Clamped to the image, as thumbor and imgproxy do.
        assert_eq!(
            region(offset(Px(1000), Px(1000), Px(300), Px(150))),
            Ok((300.0, 150.0, 100.0, 50.0))
        );
        for (ha, va, expected) in [
            (HAlign::Left, VAlign::Top, (0.0, 0.0, 100.0, 100.0)),
            (HAlign::Center, VAlign::Middle, (150.0, 50.0, 100.0, 100.0)),
            (HAlign::Right, VAlign::Bottom, (300.0, 100.0, 100.0, 100.0)),
        ] {
            assert_eq!(region(anchored(Px(100), Px(100), ha, va)), Ok(expected));
        }
        // A region larger than the image keeps all of it, whatever the anchor.
        assert_eq!(
            region(anchored(Px(900), Px(900), HAlign::Right, VAlign::Bottom)),
            Ok((0.0, 0.0, 400.0, 200.0))
        );
        // A tiny fraction still keeps a pixel.
        assert_eq!(
            region(offset(Fr(Fraction(1)), Fr(Fraction(1)), Px(0), Px(0))),
            Ok((0.0, 0.0, 1.0, 1.0))
        );
        for outside in [
            offset(Px(10), Px(10), Px(400), Px(0)),
            offset(Px(10), Px(10), Px(0), Px(65_535)),
            offset(Px(10), Px(10), Span::FULL, Px(0)),
        ] {
            let r = crop_region(400, 200, outside);
            assert!(
                matches!(r, Err(PipelineError::CropOutside(_))),
                "{outside:?}: {r:?}"
            );
            assert_eq!(r.unwrap_err().http_status(), 400);
        }
    }

    /// A 4-quadrant RGB image: red top-left, green top-right, blue bottom-left, white
    /// bottom-right.
    fn quadrants(width: u32, height: u32) -> RgbImage {
        RgbImage::from_fn(width, height, |x, y| {
            match (x < width / 2, y < height / 2) {
                (true, true) => Rgb([255, 0, 0]),
                (false, true) => Rgb([0, 255, 0]),
                (true, false) => Rgb([0, 0, 255]),
                (false, false) => Rgb([255, 255, 255]),
            }
        })
    }

    fn encoded(img: RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut out), format)
            .unwrap();
        out
    }

    fn render_rgb(src: &[u8], t: &Transform) -> RgbImage {
        let r = render(src, t, &Limits::default()).unwrap();
        image::load_from_memory(&r.bytes).unwrap().to_rgb8()
    }

    /// Every pixel within `tolerance` of `expected` on every channel.
    fn all_near(img: &RgbImage, expected: [u8; 3], tolerance: u8) -> bool {
        img.pixels().all(|p| {
            p.0.iter()
                .zip(expected)
                .all(|(&a, b)| a.abs_diff(b) <= tolerance)
        })
    }

    #[test]
    fn the_crop_is_cut_before_the_resize() {
        let src = encoded(quadrants(200, 100), ImageFormat::Png);
        // The green quadrant alone, at its own size.
        let green = Transform {
            crop: offset(Px(100), Px(50), Px(100), Px(0)),
            ..Transform::default()
        };
        let out = render_rgb(&src, &green);
        assert_eq!(out.dimensions(), (100, 50));
        assert!(all_near(&out, [0, 255, 0], 2));
        // Anchored at the bottom right, by fractions: the white quadrant, then filled into a
        // box of another shape (the fill crop cuts from the region, never from outside it).
        let white = Transform {
            width: 30,
            height: 10,
            crop: anchored(
                Fr(Fraction(5000)),
                Fr(Fraction(5000)),
                HAlign::Right,
                VAlign::Bottom,
            ),
            ..Transform::default()
        };
        let out = render_rgb(&src, &white);
        assert_eq!(out.dimensions(), (30, 10));
        assert!(all_near(&inner(&out), [255, 255, 255], 2));
        // Fit-in of the region: its aspect ratio, not the source's.
        let t = Transform {
            width: 40,
            height: 40,
            fit: Fit::FitIn,
            crop: offset(Px(50), Px(100), Px(0), Px(0)),
            ..Transform::default()
        };
        let out = render_rgb(&src, &t);
        assert_eq!(out.dimensions(), (20, 40));
        assert!(all_near(&out.view(0, 0, 20, 18).to_image(), [255, 0, 0], 8));
        assert!(all_near(
            &out.view(0, 22, 20, 18).to_image(),
            [0, 0, 255],
            8
        ));
    }

    #[test]
    fn the_crop_is_of_the_upright_image_and_survives_shrink_on_load() {
        // 400x200 stored with orientation 6: upright 200x400, blue top-left, red top-right,
        // white bottom-left, green bottom-right. The fits reduce 5× and 10×: DCT-scaled decodes.
        let stored = quadrants(400, 200);
        let jpeg = encoded(stored.clone(), ImageFormat::Jpeg);
        let mut tiff = b"II*\0\x08\0\0\0".to_vec();
        tiff.extend_from_slice(&1u16.to_le_bytes());
        tiff.extend_from_slice(&0x0112u16.to_le_bytes());
        tiff.extend_from_slice(&3u16.to_le_bytes());
        tiff.extend_from_slice(&1u32.to_le_bytes());
        tiff.extend_from_slice(&6u16.to_le_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut src = jpeg[..2].to_vec();
        src.extend_from_slice(&[0xFF, 0xE1]);
        src.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
        src.extend_from_slice(&app1);
        src.extend_from_slice(&jpeg[2..]);
        for (crop, colour) in [
            (offset(Px(100), Px(200), Px(0), Px(200)), [255, 255, 255]),
            (
                anchored(Px(100), Px(200), HAlign::Right, VAlign::Top),
                [255, 0, 0],
            ),
        ] {
            for width in [20, 10] {
                let t = Transform {
                    width,
                    fit: Fit::FitIn,
                    crop,
                    ..Transform::default()
                };
                let out = render_rgb(&src, &t);
                assert_eq!(out.dimensions(), (width, width * 2));
                // Away from the region's edges, where JPEG blocks may bleed.
                let inner = out.view(2, 2, width - 4, width * 2 - 4).to_image();
                assert!(all_near(&inner, colour, 40), "{crop:?} at {width}");
            }
        }
    }

    /// `img` without a 2-pixel frame, where resampling may reach past a crop's edge.
    fn inner(img: &RgbImage) -> RgbImage {
        let (w, h) = img.dimensions();
        img.view(2, 2, w - 4, h - 4).to_image()
    }

    /// 400×100: red up to x = 100, grey to 300, green after.
    fn bands() -> Vec<u8> {
        let img = RgbImage::from_fn(400, 100, |x, _| match x {
            0..100 => Rgb([255, 0, 0]),
            100..300 => Rgb([128, 128, 128]),
            _ => Rgb([0, 255, 0]),
        });
        encoded(img, ImageFormat::Png)
    }

    #[test]
    fn the_fill_crop_centres_on_the_focus_as_far_as_the_image_allows() {
        let src = bands();
        let square = |focus: Option<Focus>, crop: Option<Crop>| Transform {
            width: 50,
            height: 50,
            focus,
            crop,
            ..Transform::default()
        };
        let point = |x| Some(Focus::point(Fraction(x), Fraction(5000)));
        let green = render_rgb(&src, &square(point(8750), None));
        assert!(
            all_near(&inner(&green), [0, 255, 0], 2),
            "centred on x = 350"
        );
        let red = render_rgb(&src, &square(point(0), None));
        assert!(
            all_near(&inner(&red), [255, 0, 0], 2),
            "clamped at the left edge"
        );
        let region = Some(Focus {
            left: Px(310),
            top: Px(0),
            right: Px(390),
            bottom: Px(100),
        });
        assert!(all_near(
            &inner(&render_rgb(&src, &square(region, None))),
            [0, 255, 0],
            2
        ));
        // Without a focus the centre is grey; a focus at the alignment's place changes nothing.
        let grey = render_rgb(&src, &square(None, None));
        assert!(all_near(&inner(&grey), [128, 128, 128], 2));
        assert_eq!(render_rgb(&src, &square(point(5000), None)), grey);
        // The focus is in source coordinates, the fill crop cut from the manual crop: the
        // region x = 200..400 centred on x = 250 keeps 200..300, grey, where its centre alone
        // would straddle grey and green.
        let right_half = offset(Px(200), Px(100), Px(200), Px(0));
        let at = Some(Focus::point(Fraction(6250), Fraction(5000)));
        assert!(all_near(
            &inner(&render_rgb(&src, &square(at, right_half))),
            [128, 128, 128],
            2
        ));
        let centred = render_rgb(&src, &square(None, right_half));
        assert!(!all_near(&centred, [128, 128, 128], 2) && !all_near(&centred, [0, 255, 0], 2));
        // A fit has no crop to place.
        let fit = Transform {
            fit: Fit::FitIn,
            ..square(point(8750), None)
        };
        assert_eq!(render_rgb(&src, &fit).dimensions(), (50, 13));
    }

    #[test]
    fn a_crop_of_a_real_photo_matches_a_plain_decode() {
        let src = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/images/medium.jpg"),
        )
        .unwrap();
        let full = image::load_from_memory(&src).unwrap().to_rgb8();
        let (w, h) = full.dimensions();
        let t = Transform {
            crop: offset(Px(w / 4), Px(h / 3), Px(w / 2), Px(h / 5)),
            format: OutputFormat::Fixed(Format::Png),
            ..Transform::default()
        };
        let out = render_rgb(&src, &t);
        let expected = image::imageops::crop_imm(&full, w / 2, h / 5, w / 4, h / 3).to_image();
        assert_eq!(out.dimensions(), expected.dimensions());
        let diff: u64 = out
            .as_raw()
            .iter()
            .zip(expected.as_raw())
            .map(|(&a, &b)| u64::from(a.abs_diff(b)))
            .sum();
        let mean = diff as f64 / out.as_raw().len() as f64;
        assert!(mean < 2.0, "mean difference {mean}");
    }
}

#[cfg(test)]
mod tests {
    use pixmesh_core::transform::{Fit, HAlign, Transform, VAlign};

    use super::*;
    use crate::pipeline::tests::*;

    #[test]
    fn geometry_follows_thumbor_semantics() {
        let g = |w0, h0, t: Transform| {
            let g = compute_geometry(w0, h0, &t);
            (g.width, g.height)
        };
        let up = |mut t: Transform| {
            t.upscale = true;
            t
        };
        let adaptive = |t: Transform| Transform {
            adaptive: true,
            ..t
        };
        // (source, transform) → output size
        let cases = [
            ((2560, 1600), transform(320, 320, Fit::FitIn), (320, 200)),
            ((2560, 1600), transform(0, 100, Fit::FitIn), (160, 100)),
            ((2560, 1600), transform(400, 0, Fit::Fill), (400, 250)),
            ((2560, 1600), transform(200, 200, Fit::Fill), (200, 200)),
            ((2560, 1600), transform(100, 300, Fit::Stretch), (100, 300)),
            ((480, 360), transform(1000, 1000, Fit::FitIn), (480, 360)),
            (
                (480, 360),
                up(transform(1000, 1000, Fit::FitIn)),
                (1000, 750),
            ),
            // Fill without upscaling keeps the box's aspect ratio at the largest size inside.
            ((480, 360), transform(1000, 500, Fit::Fill), (480, 240)),
            ((480, 360), up(transform(1000, 500, Fit::Fill)), (1000, 500)),
            ((480, 360), transform(1000, 2000, Fit::Stretch), (480, 360)),
            ((480, 360), transform(0, 0, Fit::Fill), (480, 360)),
            // Cover (thumbor full-fit-in): each side at least the box's, nothing cropped.
            ((2560, 1600), transform(320, 320, Fit::Cover), (512, 320)),
            ((2560, 1600), transform(0, 100, Fit::Cover), (160, 100)),
            ((480, 360), transform(1000, 1000, Fit::Cover), (480, 360)),
            (
                (480, 360),
                up(transform(1000, 1000, Fit::Cover)),
                (1333, 1000),
            ),
            // Auto (imgproxy rt:auto): fill when the orientations agree, else fit.
            ((2560, 1600), transform(300, 200, Fit::Auto), (300, 200)),
            ((2560, 1600), transform(200, 300, Fit::Auto), (200, 125)),
            ((1600, 2560), transform(200, 300, Fit::Auto), (200, 300)),
            ((1600, 2560), transform(300, 200, Fit::Auto), (125, 200)),
            ((1000, 1000), transform(300, 200, Fit::Auto), (300, 200)),
            ((1000, 1000), transform(200, 300, Fit::Auto), (200, 200)),
            ((2560, 1600), transform(0, 100, Fit::Auto), (160, 100)),
            // Auto's fill is imgproxy's `fill`: a small source keeps its scale.
            ((400, 100), transform(300, 200, Fit::Auto), (300, 100)),
            ((100, 400), transform(200, 300, Fit::Auto), (100, 300)),
            ((400, 100), up(transform(300, 200, Fit::Auto)), (300, 200)),
            // AutoDown (imgproxy rt:auto with a dpr): the same choice, its fill cutting a
            // source that cannot cover the box to the box's ratio.
            ((2560, 1600), transform(300, 200, Fit::AutoDown), (300, 200)),
            ((2560, 1600), transform(200, 300, Fit::AutoDown), (200, 125)),
            ((400, 100), transform(300, 200, Fit::AutoDown), (150, 100)),
            ((100, 400), transform(200, 300, Fit::AutoDown), (100, 150)),
            ((100, 400), transform(300, 200, Fit::AutoDown), (50, 200)),
            // FillClamped (imgproxy rt:fill): a source that cannot cover the box keeps its
            // scale, cropped to the box clamped to it; one that can is a fill.
            (
                (100, 100),
                transform(300, 200, Fit::FillClamped),
                (100, 100),
            ),
            (
                (400, 100),
                transform(300, 200, Fit::FillClamped),
                (300, 100),
            ),
            (
                (100, 400),
                transform(300, 200, Fit::FillClamped),
                (100, 200),
            ),
            (
                (480, 360),
                transform(1000, 500, Fit::FillClamped),
                (480, 360),
            ),
            (
                (600, 199),
                transform(300, 200, Fit::FillClamped),
                (300, 199),
            ),
            (
                (600, 200),
                transform(300, 200, Fit::FillClamped),
                (300, 200),
            ),
            (
                (2560, 1600),
                transform(300, 200, Fit::FillClamped),
                (300, 200),
            ),
            (
                (2560, 1600),
                transform(400, 0, Fit::FillClamped),
                (400, 250),
            ),
            ((100, 50), transform(400, 0, Fit::FillClamped), (100, 50)),
            (
                (100, 100),
                up(transform(300, 200, Fit::FillClamped)),
                (300, 200),
            ),
            // Adaptive: a portrait box for a landscape source turns (thumbor adaptive-fit-in).
            (
                (2560, 1600),
                adaptive(transform(200, 400, Fit::FitIn)),
                (320, 200),
            ),
            ((2560, 1600), transform(200, 400, Fit::FitIn), (200, 125)),
            (
                (1600, 2560),
                adaptive(transform(400, 200, Fit::FitIn)),
                (200, 320),
            ),
            (
                (2560, 1600),
                adaptive(transform(400, 200, Fit::FitIn)),
                (320, 200),
            ),
            (
                (2560, 1600),
                adaptive(transform(200, 400, Fit::Cover)),
                (400, 250),
            ),
            (
                (1600, 1600),
                adaptive(transform(200, 400, Fit::FitIn)),
                (200, 200),
            ),
            ((1, 10_000), transform(10, 10, Fit::FitIn), (1, 10)),
        ];
        for ((w0, h0), t, expected) in cases {
            assert_eq!(g(w0, h0, t), expected, "{w0}x{h0} {t:?}");
        }
    }

    #[test]
    fn fill_crops_by_alignment() {
        let mut t = transform(100, 100, Fit::Fill);
        let crop = |t: &Transform| compute_geometry(400, 200, t).crop;
        assert_eq!(crop(&t).left, 100.0);
        t.h_align = HAlign::Left;
        assert_eq!(crop(&t).left, 0.0);
        t.h_align = HAlign::Right;
        assert_eq!(crop(&t).left, 200.0);
        assert_eq!((crop(&t).width, crop(&t).height), (200.0, 200.0));
        let mut t = transform(100, 100, Fit::Fill);
        t.v_align = VAlign::Bottom;
        assert_eq!(compute_geometry(200, 400, &t).crop.top, 200.0);
    }

    #[test]
    fn a_clamped_fill_cuts_the_box_out_of_a_small_source_unscaled() {
        // 400×100 in 300×200: 300×100 of the source, copied at its scale.
        let mut t = transform(300, 200, Fit::FillClamped);
        let g = compute_geometry(400, 100, &t);
        assert_eq!(
            g.crop,
            Rect {
                left: 50.0,
                top: 0.0,
                width: 300.0,
                height: 100.0
            }
        );
        t.h_align = HAlign::Right;
        assert_eq!(compute_geometry(400, 100, &t).crop.left, 100.0);
        // Odd spare pixels: whole-pixel edges.
        t.h_align = HAlign::Center;
        assert_eq!(compute_geometry(401, 100, &t).crop.left, 50.0);
        // A focus centres the box as far as the source allows.
        let g = compute_geometry_at(400, 100, &t, Some((390.0, 50.0)));
        assert_eq!((g.crop.left, g.crop.width), (100.0, 300.0));
    }

    #[test]
    fn padding_without_pad_surrounds_the_image_whatever_its_size() {
        let ten = pixmesh_core::transform::Padding {
            left: 10,
            top: 10,
            right: 10,
            bottom: 10,
        };
        let fit = Transform {
            padding: Some(ten),
            ..transform(300, 200, Fit::FitIn)
        };
        let fill = Transform {
            padding: Some(ten),
            ..transform(300, 200, Fit::FillClamped)
        };
        let boxed = |t: &Transform| Transform { pad: true, ..*t };
        let out = |(w0, h0), t: &Transform| output_size(&compute_geometry(w0, h0, t), t);
        // (source, transform) → output size: imgproxy's `rs:fit:300:200/pd:10` on a large
        // source is 300×188 padded; a small one keeps its size, padded; with `pad` (`ex:1`)
        // both are the 300×200 box padded.
        for (source, t, size) in [
            ((2560, 1600), &fit, (320, 208)),
            ((40, 20), &fit, (60, 40)),
            ((40, 20), &fill, (60, 40)),
            ((400, 100), &fill, (320, 120)),
            ((2560, 1600), &boxed(&fit), (320, 220)),
            ((40, 20), &boxed(&fit), (320, 220)),
        ] {
            assert_eq!(out(source, t), size, "{source:?} {t:?}");
        }
        // The padded size is what the output limit checks.
        let g = compute_geometry(2560, 1600, &fit);
        let limits = Limits {
            max_output_pixels: 300 * 188,
            ..Limits::default()
        };
        assert!(
            check_output_size(
                &g,
                &Transform {
                    padding: None,
                    ..fit
                },
                &limits
            )
            .is_ok()
        );
        let err = check_output_size(&g, &fit, &limits).unwrap_err();
        assert_eq!(err.http_status(), 413, "{err}");
    }
}
