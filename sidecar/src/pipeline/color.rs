//! The ordered effects ([`pixmesh_core::effect`]): each runs on the image as the one before
//! left it, before the padding ([`Transform::effects`](pixmesh_core::transform::Transform))
//! or after the rotation (`final_effects`). The colour filters use thumbor's arithmetic (its C
//! extensions): per-channel ones through a lookup table, so each is one pass over the bytes;
//! alpha is left as it is. Nothing here allocates an image-sized buffer but
//! [`round_corner`] adding an alpha channel (counted by `memory_needed`'s output buffers).

use pixmesh_core::effect::{Effect, Effects, RoundCorner};

use super::effects::{blur, grayscale, sharpen};
use super::pixels::Pixels;

/// Applies `effects` in order.
pub(super) fn apply(mut p: Pixels, effects: &Effects) -> Pixels {
    for &effect in effects.as_slice() {
        p = match effect {
            Effect::Grayscale => grayscale(p, true),
            Effect::Blur(sigma) => blur(p, Some(sigma)),
            Effect::Sharpen(s) => sharpen(p, Some(s)),
            Effect::Brightness(n) => add(p, [n, n, n]),
            Effect::Rgb(r, g, b) => add(p, [r, g, b]),
            Effect::Contrast(n) => {
                let table = contrast_table(n);
                map_channels(p, [&table, &table, &table])
            }
            Effect::Saturation(n) => saturation(p, n),
            Effect::Noise(n) => noise(p, n),
            Effect::RoundCorner(c) => round_corner(p, c),
        };
    }
    p
}

/// thumbor's `ADJUST_COLOR`: clamped to 0–255.
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// Replaces each pixel's red, green and blue by `tables`' entries; alpha is kept.
fn map_channels(mut p: Pixels, tables: [&[u8; 256]; 3]) -> Pixels {
    let channels = p.channels();
    for px in p.data.chunks_exact_mut(channels) {
        for c in 0..3 {
            px[c] = tables[c][usize::from(px[c])];
        }
    }
    p
}

/// The table adding `(255·percent)/100` (thumbor's brightness and rgb: C's truncating
/// division), clamped.
fn add_table(percent: i8) -> [u8; 256] {
    let delta = 255 * i32::from(percent) / 100;
    std::array::from_fn(|v| clamp(v as i32 + delta))
}

/// Adds a percentage of 255 to each of red, green and blue (brightness, rgb).
fn add(p: Pixels, percents: [i8; 3]) -> Pixels {
    let [r, g, b] = percents.map(add_table);
    map_channels(p, [&r, &g, &b])
}

/// thumbor's contrast: `d = (N+100)²/100`, each channel `d·(c−128)/100 + 128`, in C's
/// truncating integer arithmetic, clamped.
fn contrast_table(percent: i8) -> [u8; 256] {
    let d = (i32::from(percent) + 100).pow(2) / 100;
    std::array::from_fn(|v| clamp(d * (v as i32 - 128) / 100 + 128))
}

/// thumbor's saturation: `p = √(0.299r² + 0.587g² + 0.114b²)`, each channel
/// `p + (c − p)·change` truncated (C's float to int), clamped; `change` is `1 + N/100`.
fn saturation(mut p: Pixels, percent: i8) -> Pixels {
    let change = (1.0 + f64::from(percent) / 100.0) as f32;
    let channels = p.channels();
    for px in p.data.chunks_exact_mut(channels) {
        let [r, g, b] = [px[0], px[1], px[2]].map(i32::from);
        // C: int products times double weights, the square root in double, kept as a float.
        let level = (f64::from(r * r) * 0.299 + f64::from(g * g) * 0.587 + f64::from(b * b) * 0.114)
            .sqrt() as f32;
        for c in &mut px[..3] {
            let v = level + (f32::from(*c) - level) * change;
            *c = clamp(v as i32);
        }
    }
    p
}

/// A fixed pseudo-random sequence (splitmix64 of the pixel's index): thumbor uses C's `rand()`,
/// unseeded, so its noise differs from run to run; pixmesh's is the same on every render, so
/// renditions are reproducible.
fn pseudo_random(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// thumbor's noise: each pixel's three channels get the same value in `[−N/2, N/2)`
/// (`rand % N − N/2`), clamped.
fn noise(mut p: Pixels, amount: u8) -> Pixels {
    if amount == 0 {
        return p;
    }
    let channels = p.channels();
    let amount = u64::from(amount);
    for (i, px) in p.data.chunks_exact_mut(channels).enumerate() {
        let delta = (pseudo_random(i as u64) % amount) as i32 - (amount >> 1) as i32;
        for c in &mut px[..3] {
            *c = clamp(i32::from(*c) + delta);
        }
    }
    p
}

/// Adds an opaque alpha channel to an RGB image.
fn with_alpha(p: Pixels) -> Pixels {
    if p.alpha {
        return p;
    }
    let mut data = Vec::with_capacity(p.data.len() / 3 * 4);
    for px in p.data.chunks_exact(3) {
        data.extend_from_slice(&[px[0], px[1], px[2], 255]);
    }
    Pixels {
        alpha: true,
        data,
        ..p
    }
}

/// thumbor's `round_corner` (its C extension, with the anti-aliasing thumbor's filter asks
/// for): for each row `y` of a corner's ellipse (radii clamped to half the sides), the pixels
/// left of `a·√(b²−y²)/b` are painted (alpha 0 when transparent), mirrored to the four corners
/// as thumbor's loop does (the right side one column narrower, as there), and the pixels along
/// the curve are blended between the colour and the image's, by rows and then by columns. The
/// arithmetic follows the C code's types (float, truncating conversions) and its flat indices
/// (an edge column's mirror lands on the next row's first pixel, as there); writes that would
/// fall outside the image are dropped.
fn round_corner(p: Pixels, c: RoundCorner) -> Pixels {
    let mut p = if c.transparent { with_alpha(p) } else { p };
    let (width, height) = (i64::from(p.width), i64::from(p.height));
    let a = i64::from(c.a).min(width / 2);
    let b = i64::from(c.b).min(height / 2);
    if a == 0 || b == 0 {
        return p;
    }
    let channels = p.channels();
    let mut corner = Corner {
        data: &mut p.data,
        channels,
        color: [c.color.r, c.color.g, c.color.b],
        transparent: c.transparent,
    };
    let (a_rad, b_rad) = (a as f32, b as f32);
    for y in 0..=b {
        let yf = y as f32;
        let x = (-(f64::from(a_rad) * f64::from(b_rad * b_rad - yf * yf).sqrt()) / f64::from(b_rad))
            as f32;
        let end_x = (x + a_rad) as i64;
        let (top, bottom) = (b - y, height - b + y - 1);
        for cx in 0..end_x {
            corner.paint(top * width + cx);
            corner.paint(bottom * width + cx);
            if cx > 0 {
                corner.paint(top * width + width - cx);
                corner.paint(bottom * width + width - cx);
            }
        }
        // Anti-aliasing along the row: the run of columns whose curve height rounds to this
        // row, blended from the first unpainted pixel's colour.
        let mut count = 0i64;
        let mut aa_x = (x - 1.0) as i64;
        while aa_x as f32 >= -a_rad {
            let aa_y = ((f64::from(b_rad) * f64::from(a_rad * a_rad - (aa_x * aa_x) as f32).sqrt()
                / f64::from(a_rad))
                + 1.0) as f32 as i64;
            if aa_y != y {
                break;
            }
            count += 1;
            aa_x -= 1;
        }
        let sources = [
            top * width + end_x,
            bottom * width + end_x,
            top * width + width - end_x,
            bottom * width + width - end_x,
        ];
        let mut aa_x = (x - count as f32) as i64;
        if (aa_x as f32) < -a_rad {
            aa_x += 1;
        }
        let mut idx = 1i64;
        while (aa_x as f32) < x {
            let adj = (aa_x as f32 + a_rad) as i64;
            let aa = 1.0 - (idx as f32 / count as f32) * AA_AMOUNT;
            corner.blend(top * width + adj, sources[0], aa);
            corner.blend(bottom * width + adj, sources[1], aa);
            corner.blend(top * width + width - adj, sources[2], aa);
            corner.blend(bottom * width + width - adj, sources[3], aa);
            aa_x += 1;
            idx += 1;
        }
    }
    // Anti-aliasing along the columns.
    let mut x = 0.0f32;
    while x >= -a_rad {
        let y =
            (f64::from(b_rad) * f64::from(a_rad * a_rad - x * x).sqrt() / f64::from(a_rad)) as f32;
        let mut count = 0i64;
        let mut aa_y = (y + 1.0) as i64;
        while (aa_y as f32) < b_rad {
            let aa_x = (-(f64::from(a_rad)
                * f64::from(b_rad * b_rad - (aa_y * aa_y) as f32).sqrt()
                / f64::from(b_rad))
                - 1.0) as f32 as i64;
            if aa_x != x as i64 {
                break;
            }
            count += 1;
            aa_y += 1;
        }
        let end_x = (x + a_rad) as i64;
        let y_top = (b_rad - y) as i64;
        let y_bottom = ((height as f32 - b_rad) + y - 1.0) as i64;
        let sources = [
            y_top * width + end_x,
            y_bottom * width + end_x,
            y_top * width + width - end_x,
            y_bottom * width + width - end_x,
        ];
        let left_x = (x + a_rad) as i64;
        let right_x = (width as f32 - a_rad - x) as i64;
        let mut aa_y = (y + count as f32) as i64;
        if aa_y as f32 > b_rad {
            aa_y -= 1;
        }
        let mut idx = 1i64;
        while aa_y as f32 > y {
            let upper = (b_rad - aa_y as f32) as i64;
            let lower = ((height as f32 - b_rad) + aa_y as f32 - 1.0) as i64;
            let aa = 1.0 - (idx as f32 / count as f32) * AA_AMOUNT;
            corner.blend(upper * width + left_x, sources[0], aa);
            corner.blend(lower * width + left_x, sources[1], aa);
            corner.blend(upper * width + right_x, sources[2], aa);
            corner.blend(lower * width + right_x, sources[3], aa);
            aa_y -= 1;
            idx += 1;
        }
        x -= 1.0;
    }
    p
}

/// How much of the corner's colour the anti-aliased pixels take at most (thumbor's
/// `aa_amount`).
const AA_AMOUNT: f32 = 0.75;

/// The image [`round_corner`] paints, addressed by flat pixel index as thumbor's C code does.
struct Corner<'a> {
    data: &'a mut [u8],
    channels: usize,
    color: [u8; 3],
    transparent: bool,
}

impl Corner<'_> {
    fn pixel(&mut self, at: i64) -> Option<&mut [u8]> {
        let start = usize::try_from(at).ok()?.checked_mul(self.channels)?;
        self.data.get_mut(start..start + self.channels)
    }

    fn paint(&mut self, at: i64) {
        let (color, transparent) = (self.color, self.transparent);
        if let Some(px) = self.pixel(at) {
            px[..3].copy_from_slice(&color);
            if transparent {
                px[3] = 0;
            }
        }
    }

    /// thumbor's blend: the colour of pixel `from` times `1 − aa`, plus the corner's colour
    /// times `aa` (none when transparent: alpha is left as it is), truncated.
    fn blend(&mut self, at: i64, from: i64, aa: f32) {
        let Some(source) = self.pixel(from).map(|px| [px[0], px[1], px[2]]) else {
            return;
        };
        let (color, transparent) = (self.color, self.transparent);
        if let Some(px) = self.pixel(at) {
            for i in 0..3 {
                let kept = f32::from(source[i]) * (1.0 - aa);
                px[i] = match transparent {
                    true => kept as u8,
                    false => (kept + f32::from(color[i]) * aa) as u8,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(width: u32, height: u32, rgb: [u8; 3]) -> Pixels {
        Pixels {
            width,
            height,
            alpha: false,
            data: rgb.repeat((width * height) as usize),
        }
    }

    fn one(effect: &str, rgb: [u8; 3]) -> [u8; 3] {
        let p = apply(flat(2, 2, rgb), &effect.parse().unwrap());
        [p.data[0], p.data[1], p.data[2]]
    }

    #[test]
    fn brightness_and_rgb_add_percent_of_255_truncated_and_clamped() {
        // thumbor: delta = (255 * N) / 100 in C ints: 10 → 25, -10 → -25, 33 → 84.
        assert_eq!(one("brightness(10)", [100, 0, 250]), [125, 25, 255]);
        assert_eq!(one("brightness(-10)", [100, 10, 250]), [75, 0, 225]);
        assert_eq!(one("brightness(33)", [0, 100, 200]), [84, 184, 255]);
        assert_eq!(one("brightness(100)", [0, 1, 2]), [255, 255, 255]);
        assert_eq!(one("rgb(10,-10,33)", [100, 100, 100]), [125, 75, 184]);
        assert_eq!(one("rgb(0,0,0)", [1, 2, 3]), [1, 2, 3]);
    }

    #[test]
    fn contrast_scales_around_128_in_integer_arithmetic() {
        // N 50: d = 150² / 100 = 225; c 200: 225·72/100 + 128 = 162 + 128 = 290 → 255;
        // c 100: 225·(−28)/100 = −63 (truncated) + 128 = 65; c 140: 27 + 128 = 155.
        assert_eq!(one("contrast(50)", [200, 100, 140]), [255, 65, 155]);
        // N −50: d = 25; c 200: 25·72/100 = 18 → 146; c 100: −7 → 121; c 0: −32 → 96.
        assert_eq!(one("contrast(-50)", [200, 100, 0]), [146, 121, 96]);
        // N −100: d = 0, everything mid-grey.
        assert_eq!(one("contrast(-100)", [0, 255, 7]), [128, 128, 128]);
        assert_eq!(one("contrast(0)", [0, 255, 7]), [0, 255, 7]);
    }

    #[test]
    fn saturation_moves_channels_from_the_weighted_rms_level() {
        // (200, 100, 50): p = √(0.299·40000 + 0.587·10000 + 0.114·2500) = √18115 = 134.592…
        let p = (0.299f64 * 40000.0 + 0.587 * 10000.0 + 0.114 * 2500.0).sqrt();
        let expect = |change: f64, c: f64| (p + (c - p) * change).clamp(0.0, 255.0) as u8;
        assert_eq!(
            one("saturation(50)", [200, 100, 50]),
            [expect(1.5, 200.0), expect(1.5, 100.0), expect(1.5, 50.0)]
        );
        assert_eq!(one("saturation(50)", [200, 100, 50]), [232, 82, 7]);
        // −100: every channel the level, truncated.
        assert_eq!(one("saturation(-100)", [200, 100, 50]), [134, 134, 134]);
        assert_eq!(one("saturation(0)", [200, 100, 50]), [200, 100, 50]);
    }

    #[test]
    fn noise_is_bounded_equal_on_the_channels_and_reproducible() {
        let p = apply(flat(64, 64, [128, 10, 250]), &"noise(40)".parse().unwrap());
        let mut seen = std::collections::BTreeSet::new();
        for px in p.data.chunks_exact(3) {
            let d = i32::from(px[0]) - 128;
            assert!((-20..20).contains(&d), "{d}");
            assert_eq!(px[1], (10 + d).clamp(0, 255) as u8);
            assert_eq!(px[2], (250 + d).clamp(0, 255) as u8);
            seen.insert(d);
        }
        assert!(seen.len() > 30, "{seen:?}");
        let again = apply(flat(64, 64, [128, 10, 250]), &"noise(40)".parse().unwrap());
        assert_eq!(again.data, p.data);
        assert_eq!(one("noise(0)", [1, 2, 3]), [1, 2, 3]);
    }

    /// The pixels of a flat grey-100 image that `effect` changes, as (x, y, channels).
    fn changed(width: u32, height: u32, alpha: bool, effect: &str) -> Vec<(u32, u32, Vec<u8>)> {
        let base: &[u8] = if alpha {
            &[100, 100, 100, 255]
        } else {
            &[100; 3]
        };
        let p = Pixels {
            width,
            height,
            alpha,
            data: base.repeat((width * height) as usize),
        };
        let p = apply(p, &effect.parse().unwrap());
        p.data
            .chunks_exact(base.len())
            .enumerate()
            .filter(|(_, px)| *px != base)
            .map(|(i, px)| (i as u32 % width, i as u32 / width, px.to_vec()))
            .collect()
    }

    /// (x, y, channels) rows as thumbor writes them.
    fn rows(list: &[(u32, u32, &[u8])]) -> Vec<(u32, u32, Vec<u8>)> {
        list.iter().map(|&(x, y, px)| (x, y, px.to_vec())).collect()
    }

    /// The expected pixels are thumbor 7.8.0's own output: `_round_corner.apply(1, mode, a, b,
    /// r, g, b, width, height, data, transparent)` (its C extension, what `round_corner(…)`
    /// calls) on the same flat image. A differential run against it (396 cases: sizes 2×2 to
    /// 100×5, radii 1 to 100, RGB and RGBA, transparent or not; and brightness, contrast,
    /// saturation and rgb on random pixels) matched byte for byte.
    #[test]
    fn round_corners_are_thumbors_pixel_for_pixel() {
        assert_eq!(
            changed(10, 8, false, "round_corner(3,255,0,0)"),
            rows(&[
                (0, 0, &[255, 0, 0]),
                (1, 0, &[196, 37, 37]),
                (2, 0, &[138, 75, 75]),
                (8, 0, &[138, 75, 75]),
                (9, 0, &[196, 37, 37]),
                (0, 1, &[211, 28, 28]),
                (0, 2, &[167, 56, 56]),
                (0, 3, &[138, 75, 75]),
                (0, 5, &[138, 75, 75]),
                (0, 6, &[167, 56, 56]),
                (0, 7, &[211, 28, 28]),
                (1, 7, &[196, 37, 37]),
                (2, 7, &[138, 75, 75]),
                (8, 7, &[138, 75, 75]),
                (9, 7, &[196, 37, 37]),
            ])
        );
        // Elliptic, transparent (an alpha channel added first, as thumbor's enable_alpha()):
        // thumbor's anti-aliasing darkens the blended pixels and keeps their alpha.
        let expect: &[(u32, u32, &[u8])] = &[
            (0, 0, &[0, 0, 255, 0]),
            (1, 0, &[0, 0, 255, 0]),
            (2, 0, &[25, 25, 25, 0]),
            (3, 0, &[50, 50, 50, 0]),
            (4, 0, &[75, 75, 75, 0]),
            (8, 0, &[75, 75, 75, 0]),
            (9, 0, &[50, 50, 50, 0]),
            (10, 0, &[25, 25, 25, 0]),
            (11, 0, &[0, 0, 255, 0]),
            (0, 1, &[0, 0, 255, 0]),
            (1, 1, &[56, 56, 56, 255]),
            (11, 1, &[56, 56, 56, 255]),
            (0, 2, &[28, 28, 28, 255]),
            (0, 3, &[56, 56, 56, 255]),
            (0, 4, &[75, 75, 75, 255]),
            (0, 6, &[75, 75, 75, 255]),
            (0, 7, &[56, 56, 56, 255]),
            (0, 8, &[28, 28, 28, 0]),
            (1, 8, &[75, 75, 75, 255]),
            (11, 8, &[75, 75, 75, 255]),
            (0, 9, &[0, 0, 255, 0]),
            (1, 9, &[0, 0, 255, 0]),
            (2, 9, &[25, 25, 25, 0]),
            (3, 9, &[50, 50, 50, 0]),
            (4, 9, &[75, 75, 75, 0]),
            (8, 9, &[75, 75, 75, 0]),
            (9, 9, &[50, 50, 50, 0]),
            (10, 9, &[25, 25, 25, 0]),
            (11, 9, &[0, 0, 255, 0]),
        ];
        assert_eq!(
            changed(12, 10, true, "round_corner(5|4,0,0,255,true)"),
            rows(expect)
        );
        let p = apply(
            flat(12, 10, [100; 3]),
            &"round_corner(5|4,0,0,255,true)".parse().unwrap(),
        );
        assert!(p.alpha, "transparent corners add an alpha channel");
        // Radii are clamped to half the sides; a 1-pixel side has no corners.
        assert_eq!(
            changed(40, 40, false, "round_corner(100|10,0,0,255)"),
            changed(40, 40, false, "round_corner(20|10,0,0,255)")
        );
        assert!(changed(40, 1, false, "round_corner(5,0,0,255)").is_empty());
    }

    /// A whole render of a flat 40×20 PNG of `rgb` by a thumbor URL's options: the output's
    /// size and its pixels.
    fn render_thumbor(options: &str, rgb: [u8; 3]) -> image::RgbaImage {
        use crate::pipeline::tests::{decoded, png};
        let source = png(image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(
            40,
            20,
            image::Rgb(rgb),
        )));
        let path = format!("unsafe/{options}/a.png");
        let t = pixmesh_core::thumbor::ThumborPath::parse(&path)
            .and_then(|p| p.to_transform())
            .unwrap();
        let out = crate::pipeline::render(&source, &t, &crate::pipeline::Limits::default());
        decoded(&out.unwrap()).to_rgba8()
    }

    #[test]
    fn thumbor_filters_apply_in_url_order_in_a_whole_render() {
        // Brightness before fill brightens the image only; after it, the padding too.
        let before = render_thumbor("fit-in/40x40/filters:brightness(10):fill(ff0000)", [100; 3]);
        let after = render_thumbor("fit-in/40x40/filters:fill(ff0000):brightness(10)", [100; 3]);
        assert_eq!(before.dimensions(), (40, 40));
        assert_eq!(before.get_pixel(20, 20).0, [125, 125, 125, 255]);
        assert_eq!(before.get_pixel(20, 0).0, [255, 0, 0, 255]);
        assert_eq!(after.get_pixel(20, 20).0, [125, 125, 125, 255]);
        assert_eq!(after.get_pixel(20, 0).0, [255, 25, 25, 255]);
        // The demo's URL: padded gold, turned, then all of it grey (Rec. 709 luma of ffd700: 207).
        let grey = render_thumbor(
            "fit-in/40x30/filters:fill(ffd700):rotate(90):grayscale()",
            [0, 0, 255],
        );
        assert_eq!(grey.dimensions(), (30, 40));
        assert_eq!(grey.get_pixel(0, 20).0, [207, 207, 207, 255]);
        assert_eq!(grey.get_pixel(15, 20).0, [19, 19, 19, 255], "blue's luma");
        // Contrast then brightness differs from brightness then contrast.
        let bc = render_thumbor("filters:brightness(10):contrast(50)", [100; 3]);
        let cb = render_thumbor("filters:contrast(50):brightness(10)", [100; 3]);
        assert_eq!(
            (bc.get_pixel(5, 5).0, cb.get_pixel(5, 5).0),
            ([122, 122, 122, 255], [90, 90, 90, 255])
        );
        // proportion scales the fitted image; the padding still fills the box.
        assert_eq!(
            render_thumbor("filters:proportion(0.5)", [9; 3]).dimensions(),
            (20, 10)
        );
        let scaled = render_thumbor("fit-in/40x40/filters:proportion(0.25):fill(ff0000)", [9; 3]);
        assert_eq!(scaled.dimensions(), (40, 40));
        assert_eq!(scaled.get_pixel(20, 20).0, [9, 9, 9, 255]);
        assert_eq!(scaled.get_pixel(20, 14).0, [255, 0, 0, 255]);
        // Corners rounded after the padding are the padded box's.
        let corners = render_thumbor(
            "fit-in/40x40/filters:fill(00ff00):round_corner(5,0,0,255)",
            [9; 3],
        );
        assert_eq!(corners.get_pixel(0, 0).0, [0, 0, 255, 255]);
        assert_eq!(corners.get_pixel(0, 39).0, [0, 0, 255, 255]);
        assert_eq!(corners.get_pixel(20, 0).0, [0, 255, 0, 255]);
    }

    #[test]
    fn effects_run_in_their_order() {
        // Brightness then contrast differs from contrast then brightness.
        let bc = one("brightness(10):contrast(50)", [100, 100, 100]);
        let cb = one("contrast(50):brightness(10)", [100, 100, 100]);
        // 100+25 = 125 → 225·(−3)/100 = −6 → 122; 100 → 65 → 90.
        assert_eq!((bc, cb), ([122; 3], [90; 3]));
        // Grayscale and the blur run from the list too.
        assert_eq!(one("rgb(50,0,0):grayscale()", [0, 0, 0]), [27; 3]);
    }
}
