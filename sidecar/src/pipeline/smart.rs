//! Smart crop ([`Transform::smart`](pixmesh_core::transform::Transform::smart)): the fill crop
//! goes where an attention heuristic scores highest, in the spirit of libvips' `attention`
//! strategy (which imgproxy's `g:sm` and imagor's `smart` use).
//!
//! The region the crop may move in (the image, or its manual crop or trimmed box) is averaged
//! down to at most [`ANALYSIS_SIDE`] pixels on its longer side, from the decoded image (after
//! shrink-on-load), so the analysis costs one pass over the decoded region plus a fixed small
//! amount, whatever the source size. Each pixel of that copy scores:
//!
//! - edges: the Sobel gradient magnitude of the luma (detail, texture, outlines);
//! - skin tones: a fixed bonus for colours in the usual RGB skin range (Kovač et al.);
//! - saturation: the chroma (max − min of R, G, B) where it exceeds [`SATURATION_FLOOR`], as
//!   libvips rewards strongly saturated areas;
//!
//! all weighted by opacity, so transparent areas never attract the crop. The crop window, at
//! the analysis scale, is slid over every position of the copy (a summed-area table makes each
//! position one lookup) and the highest total wins; among equal totals, the one nearest the
//! centre, so a flat image is cropped in the middle as without smart crop.

use super::geometry::{Geometry, Rect};
use super::pixels::Pixels;

/// Longest side of the copy the attention is scored on.
pub(super) const ANALYSIS_SIDE: u32 = 128;

/// Bytes [`place`] allocates at most: the copy (RGBA) and its score and summed-area planes.
pub(super) const WORKING_BYTES: u64 = (ANALYSIS_SIDE as u64 + 1).pow(2) * (4 + 4 + 8);

/// Chroma below which saturation scores nothing (out of 255).
const SATURATION_FLOOR: u32 = 60;

/// Score of a skin-toned pixel.
const SKIN_SCORE: u32 = 160;

/// The region, scored: the averaged-down copy's size and each pixel's attention.
pub(super) struct Attention {
    /// Width of the scored copy, at most [`ANALYSIS_SIDE`].
    pub(super) width: usize,
    /// Height of the scored copy, at most [`ANALYSIS_SIDE`].
    pub(super) height: usize,
    /// Decoded pixels per pixel of the copy, on each axis.
    pub(super) step: usize,
    /// The scores, row-major.
    pub(super) scores: Vec<u32>,
}

/// `g` with its fill crop moved where the attention over `region` (source pixels, which the
/// crop must stay inside) is highest; `scale` is source pixels per pixel of the decoded `p`.
/// A crop that already spans the region (nothing to choose) is left as it is.
pub(super) fn place(p: &Pixels, scale: (f64, f64), region: &Rect, g: Geometry) -> Geometry {
    let (cw, ch) = (g.crop.width, g.crop.height);
    if cw >= region.width - 0.5 && ch >= region.height - 0.5 {
        return g;
    }
    let (sx, sy) = scale;
    // The region in decoded pixels, whole pixels inside the image.
    let x0 = ((region.left / sx).floor() as u32).min(p.width - 1);
    let y0 = ((region.top / sy).floor() as u32).min(p.height - 1);
    let x1 = (((region.left + region.width) / sx).ceil() as u32).clamp(x0 + 1, p.width);
    let y1 = (((region.top + region.height) / sy).ceil() as u32).clamp(y0 + 1, p.height);
    let a = attention(p, (x0, y0, x1 - x0, y1 - y0));
    // The window at the analysis scale, and its best top-left corner there.
    let per_cell = (sx * a.step as f64, sy * a.step as f64);
    let ww = ((cw / per_cell.0).round() as usize).clamp(1, a.width);
    let wh = ((ch / per_cell.1).round() as usize).clamp(1, a.height);
    let (bx, by) = best_window(&a, ww, wh);
    // Centre the crop on the chosen window's centre (the crop's own size, not the rounded
    // window's), in source pixels, inside the region.
    let centre_x = (f64::from(x0) + bx as f64 * a.step as f64) * sx + cw / 2.0;
    let centre_y = (f64::from(y0) + by as f64 * a.step as f64) * sy + ch / 2.0;
    let max_left = (region.left + region.width - cw).max(region.left);
    let max_top = (region.top + region.height - ch).max(region.top);
    let mut left = (centre_x - cw / 2.0).clamp(region.left, max_left);
    let mut top = (centre_y - ch / 2.0).clamp(region.top, max_top);
    // A crop on whole pixels (one copied, not resampled) stays on whole pixels.
    if g.crop.left.fract() == 0.0 && g.crop.top.fract() == 0.0 {
        (left, top) = (left.floor(), top.floor());
    }
    Geometry {
        crop: Rect {
            left,
            top,
            ..g.crop
        },
        ..g
    }
}

/// Scores the `(left, top, width, height)` rectangle of `p` (inside it, non-empty) on a copy
/// averaged down by a whole factor to at most [`ANALYSIS_SIDE`] on its longer side.
pub(super) fn attention(p: &Pixels, (left, top, width, height): (u32, u32, u32, u32)) -> Attention {
    let step = width.max(height).div_ceil(ANALYSIS_SIDE).max(1) as usize;
    let (w, h) = (
        (width as usize).div_ceil(step),
        (height as usize).div_ceil(step),
    );
    let channels = p.channels();
    // Box-average each cell to RGBA (opaque without alpha).
    let mut sums = vec![[0u32; 5]; w * h];
    for y in 0..height as usize {
        let row = (top as usize + y) * p.stride();
        let cells = &mut sums[(y / step) * w..(y / step + 1) * w];
        for x in 0..width as usize {
            let at = row + (left as usize + x) * channels;
            let px = &p.data[at..at + channels];
            let cell = &mut cells[x / step];
            for c in 0..3 {
                cell[c] += u32::from(px[c]);
            }
            cell[3] += if p.alpha { u32::from(px[3]) } else { 255 };
            cell[4] += 1;
        }
    }
    let rgba: Vec<[u32; 4]> = sums
        .iter()
        .map(|s| {
            let n = s[4].max(1);
            [s[0] / n, s[1] / n, s[2] / n, s[3] / n]
        })
        .collect();
    let luma: Vec<i32> = rgba
        .iter()
        .map(|c| ((54 * c[0] + 183 * c[1] + 19 * c[2] + 128) >> 8) as i32)
        .collect();
    let at = |x: isize, y: isize| {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        luma[y * w + x]
    };
    let mut scores = Vec::with_capacity(w * h);
    for y in 0..h as isize {
        for x in 0..w as isize {
            let gx = at(x + 1, y - 1) + 2 * at(x + 1, y) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2 * at(x - 1, y)
                - at(x - 1, y + 1);
            let gy = at(x - 1, y + 1) + 2 * at(x, y + 1) + at(x + 1, y + 1)
                - at(x - 1, y - 1)
                - 2 * at(x, y - 1)
                - at(x + 1, y - 1);
            // |gx| + |gy| is at most 2040: a quarter of it keeps edges on the 0–510 scale.
            let edges = (gx.unsigned_abs() + gy.unsigned_abs()) / 4;
            let [r, g, b, a] = rgba[y as usize * w + x as usize];
            let chroma = r.max(g).max(b) - r.min(g).min(b);
            let saturation = if chroma > SATURATION_FLOOR { chroma } else { 0 };
            let skin = if is_skin(r, g, b) { SKIN_SCORE } else { 0 };
            scores.push((edges + saturation + skin) * a / 255);
        }
    }
    Attention {
        width: w,
        height: h,
        step,
        scores,
    }
}

/// The RGB skin-colour rule of Kovač, Peer and Solina (uniform daylight).
fn is_skin(r: u32, g: u32, b: u32) -> bool {
    r > 95
        && g > 40
        && b > 20
        && r.max(g).max(b) - r.min(g).min(b) > 15
        && r.abs_diff(g) > 15
        && r > g
        && r > b
}

/// The top-left corner of the `ww`×`wh` window (inside the copy) with the highest total score;
/// among equal totals, the middle of the positions reaching it (the subject centred in the
/// window), or else the one nearest the centred window.
fn best_window(a: &Attention, ww: usize, wh: usize) -> (usize, usize) {
    let (w, h) = (a.width, a.height);
    // Summed-area table with a zero first row and column.
    let mut table = vec![0u64; (w + 1) * (h + 1)];
    for y in 0..h {
        let mut row = 0u64;
        for x in 0..w {
            row += u64::from(a.scores[y * w + x]);
            table[(y + 1) * (w + 1) + x + 1] = table[y * (w + 1) + x + 1] + row;
        }
    }
    let sum = |x: usize, y: usize| {
        let t = |x: usize, y: usize| table[y * (w + 1) + x];
        t(x + ww, y + wh) + t(x, y) - t(x + ww, y) - t(x, y + wh)
    };
    let (cx, cy) = ((w - ww) / 2, (h - wh) / 2);
    let mut top = sum(cx, cy);
    // The positions reaching the top score span x_range × y_range; the nearest to the centre
    // of those seen is kept for when the middle of the span does not reach it.
    let (mut x_range, mut y_range, mut nearest) = ((cx, cx), (cy, cy), (cx, cy));
    for y in 0..=h - wh {
        for x in 0..=w - ww {
            let score = sum(x, y);
            if score > top {
                top = score;
                (x_range, y_range, nearest) = ((x, x), (y, y), (x, y));
            } else if score == top {
                x_range = (x_range.0.min(x), x_range.1.max(x));
                y_range = (y_range.0.min(y), y_range.1.max(y));
                let distance = |(a, b): (usize, usize)| a.abs_diff(cx) + b.abs_diff(cy);
                if distance((x, y)) < distance(nearest) {
                    nearest = (x, y);
                }
            }
        }
    }
    // Equal totals over a span of positions mean the subject fits the window with room to
    // spare: centre it by taking the middle of the span.
    let middle = (
        x_range.0 + (x_range.1 - x_range.0) / 2,
        y_range.0 + (y_range.1 - y_range.0) / 2,
    );
    if sum(middle.0, middle.1) == top {
        middle
    } else {
        nearest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `width`×`height` of flat grey with a saturated red/blue checkerboard of 4-pixel squares
    /// in the `detail_w`-wide band starting at `detail_x`.
    fn detail_band(width: u32, height: u32, detail_x: u32, detail_w: u32) -> Pixels {
        let mut data = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height {
            for x in 0..width {
                let px = if (detail_x..detail_x + detail_w).contains(&x) {
                    if (x / 4 + y / 4) % 2 == 0 {
                        [230, 20, 20]
                    } else {
                        [20, 20, 230]
                    }
                } else {
                    [128, 128, 128]
                };
                data.extend_from_slice(&px);
            }
        }
        Pixels {
            width,
            height,
            alpha: false,
            data,
        }
    }

    fn centred(w0: u32, h0: u32, cw: f64, ch: f64, width: u32, height: u32) -> Geometry {
        Geometry {
            crop: Rect {
                left: (f64::from(w0) - cw) / 2.0,
                top: (f64::from(h0) - ch) / 2.0,
                width: cw,
                height: ch,
            },
            width,
            height,
        }
    }

    #[test]
    fn the_crop_lands_on_the_detail() {
        // Detail in the right quarter of a wide image: a square crop moves right.
        let p = detail_band(800, 200, 620, 150);
        let g = centred(800, 200, 200.0, 200.0, 100, 100);
        let placed = place(&p, (1.0, 1.0), &Rect::full(800, 200), g);
        assert!(
            placed.crop.left <= 620.0 && placed.crop.left + 200.0 >= 770.0,
            "the window {:?} covers the detail band 620..770",
            placed.crop
        );
        assert_eq!((placed.crop.width, placed.crop.height), (200.0, 200.0));
        // Detail at the left edge: the crop goes to the edge, never past it.
        let p = detail_band(800, 200, 0, 60);
        let placed = place(&p, (1.0, 1.0), &Rect::full(800, 200), g);
        assert_eq!(placed.crop.left, 0.0);
    }

    #[test]
    fn skin_tones_attract_the_crop_without_edges() {
        // A flat skin-coloured patch on flat grey, no texture: only the skin score sees it.
        let (w, h) = (600u32, 100u32);
        let mut data = Vec::new();
        for _ in 0..h {
            for x in 0..w {
                data.extend_from_slice(if (40..120).contains(&x) {
                    &[224, 172, 140]
                } else {
                    &[90, 90, 90]
                });
            }
        }
        let p = Pixels {
            width: w,
            height: h,
            alpha: false,
            data,
        };
        let g = centred(600, 100, 100.0, 100.0, 50, 50);
        let placed = place(&p, (1.0, 1.0), &Rect::full(600, 100), g);
        assert!(
            placed.crop.left <= 40.0 && placed.crop.left + 100.0 >= 120.0,
            "{placed:?}"
        );
    }

    #[test]
    fn a_flat_image_or_a_crop_with_nothing_to_choose_stays_centred() {
        let p = detail_band(400, 200, 0, 0);
        let g = centred(400, 200, 200.0, 200.0, 100, 100);
        assert_eq!(place(&p, (1.0, 1.0), &Rect::full(400, 200), g), g);
        let full = centred(400, 200, 400.0, 200.0, 100, 50);
        let p = detail_band(400, 200, 0, 40);
        assert_eq!(place(&p, (1.0, 1.0), &Rect::full(400, 200), full), full);
    }

    #[test]
    fn it_scores_a_small_copy_of_the_decoded_region() {
        // A 3000×2000 decode: the score is computed on at most ANALYSIS_SIDE per side.
        let p = detail_band(3000, 2000, 2500, 300);
        let a = attention(&p, (0, 0, 3000, 2000));
        assert!(a.width <= ANALYSIS_SIDE as usize && a.height <= ANALYSIS_SIDE as usize);
        assert_eq!((a.width, a.height, a.step), (125, 84, 24));
        assert!(
            (a.width * a.height * (4 + 4 + 8)) as u64 <= WORKING_BYTES,
            "the planes fit the budgeted bytes"
        );
        // The region of a shrunk decode maps back onto the source: the window is found
        // on 1/4 of a 3000×800 source and lands on its detail.
        let shrunk = detail_band(750, 200, 600, 100);
        let g = centred(3000, 800, 800.0, 800.0, 200, 200);
        let placed = place(&shrunk, (4.0, 4.0), &Rect::full(3000, 800), g);
        assert!(
            placed.crop.left <= 2400.0 && placed.crop.left + 800.0 >= 2800.0,
            "{placed:?}"
        );
    }

    #[test]
    fn transparent_areas_never_attract_the_crop() {
        // Detail on the left but fully transparent; a little detail (grey stripes, no
        // colour), opaque, on the right.
        let (w, h) = (400u32, 100u32);
        let mut data = Vec::new();
        for y in 0..h {
            for x in 0..w {
                let checker = if (x / 4 + y / 4) % 2 == 0 { 255 } else { 0 };
                let stripe = if (x / 8) % 2 == 0 { 255 } else { 0 };
                data.extend_from_slice(&match x {
                    0..100 => [checker, 0, 255 - checker, 0],
                    300..340 => [stripe, stripe, stripe, 255],
                    _ => [128, 128, 128, 255],
                });
            }
        }
        let p = Pixels {
            width: w,
            height: h,
            alpha: true,
            data,
        };
        let g = centred(400, 100, 100.0, 100.0, 50, 50);
        let placed = place(&p, (1.0, 1.0), &Rect::full(400, 100), g);
        assert!(placed.crop.left >= 240.0, "{placed:?}");
    }

    use pixmesh_core::transform::{Fit, Focus, Format, Fraction, OutputFormat, Transform};

    use super::super::{Limits, plan, render};

    /// `detail_band` encoded by `image` as `format` (JPEG at quality 90).
    fn encoded(p: Pixels, format: image::ImageFormat) -> Vec<u8> {
        let img = image::RgbImage::from_raw(p.width, p.height, p.data).unwrap();
        let mut out = Vec::new();
        image::DynamicImage::ImageRgb8(img)
            .write_to(&mut std::io::Cursor::new(&mut out), format)
            .unwrap();
        out
    }

    /// The share of strongly coloured pixels (the detail band's red and blue) in a render.
    fn colourful(source: &[u8], t: Transform) -> f64 {
        let t = Transform {
            format: OutputFormat::Fixed(Format::Png),
            ..t
        };
        let out = render(source, &t, &Limits::default()).unwrap();
        let img = image::load_from_memory(&out.bytes).unwrap().to_rgb8();
        // The box, or (a clamped fill of a small source) the box clamped to the source.
        assert!(img.width() <= t.width && img.height() <= t.height);
        let coloured = img
            .pixels()
            .filter(|p| {
                let (max, min) = (p.0.iter().max().unwrap(), p.0.iter().min().unwrap());
                max - min > 100
            })
            .count();
        coloured as f64 / f64::from(img.width() * img.height())
    }

    fn fill(width: u32, height: u32, smart: bool) -> Transform {
        Transform {
            width,
            height,
            fit: Fit::Fill,
            smart,
            ..Transform::default()
        }
    }

    #[test]
    fn a_smart_render_crops_onto_the_detail() {
        let png = encoded(detail_band(600, 200, 430, 160), image::ImageFormat::Png);
        assert_eq!(
            colourful(&png, fill(200, 200, false)),
            0.0,
            "centred: grey only"
        );
        let share = colourful(&png, fill(200, 200, true));
        assert!(share > 0.7, "smart: {share} of the crop is the detail");
        // A focus still wins over smart crop.
        let focused = Transform {
            focus: Some(Focus::point(Fraction(0), Fraction(5000))),
            ..fill(200, 200, true)
        };
        assert_eq!(colourful(&png, focused), 0.0);
    }

    #[test]
    fn a_clamped_fill_of_a_small_source_is_placed_by_smart_crop_too() {
        // 600×200 in 200×400 (imgproxy `fill`): 200×200 of the source, cut out unscaled.
        let png = encoded(detail_band(600, 200, 430, 160), image::ImageFormat::Png);
        let clamped = |smart| Transform {
            fit: Fit::FillClamped,
            ..fill(200, 400, smart)
        };
        assert_eq!(colourful(&png, clamped(false)), 0.0, "centred: grey only");
        let share = colourful(&png, clamped(true));
        assert!(share > 0.7, "smart: {share} of the crop is the detail");
    }

    #[test]
    fn smart_crop_keeps_shrink_on_load() {
        // 2400×800 into 100×100: decoded at 1/4, the window is found on that decode.
        let jpeg = encoded(detail_band(2400, 800, 2000, 300), image::ImageFormat::Jpeg);
        let t = fill(100, 100, true);
        assert_eq!(plan(&jpeg, &t, &Limits::default()).unwrap().shrink, 4.0);
        let share = colourful(&jpeg, t);
        assert!(share > 0.3, "smart: {share} of the crop is the detail");
        assert_eq!(colourful(&jpeg, fill(100, 100, false)), 0.0);
    }
}
