//! Steps 6b–13, on the resized image, so their cost follows the output size: to sRGB, flips,
//! grayscale, blur and sharpen (separable passes whose cost does not grow with the sigma), pad,
//! flatten onto the background, rotate.

use moxcms::ColorProfile;
use pixmesh_core::transform::{Color, HAlign, Hundredths, Rotation, Sharpen, Transform, VAlign};

use super::pixels::Pixels;

/// Converts pixels in the source's colour `profile` to sRGB (perceptual intent, alpha kept),
/// on the resized image so the cost follows the output size, as libvips' thumbnail does.
/// Outputs carry no profile, so without this a Display P3 or Adobe RGB photo would look dull.
/// A profile moxcms cannot build a transform from leaves the pixels as they are.
pub(super) fn to_srgb(p: Pixels, profile: Option<&ColorProfile>) -> Pixels {
    let Some(profile) = profile else {
        return p;
    };
    let layout = if p.alpha {
        moxcms::Layout::Rgba
    } else {
        moxcms::Layout::Rgb
    };
    let Ok(transform) = profile.create_transform_8bit(
        layout,
        &ColorProfile::new_srgb(),
        layout,
        moxcms::TransformOptions::default(),
    ) else {
        return p;
    };
    let mut data = vec![0; p.data.len()];
    match transform.transform(&p.data, &mut data) {
        Ok(()) => Pixels { data, ..p },
        Err(_) => p,
    }
}

// ---------------------------------------------------------------------------------------------
// Step 7: flips.

/// Mirrors left↔right and/or top↔bottom, in place.
pub(super) fn flip(mut p: Pixels, horizontal: bool, vertical: bool) -> Pixels {
    let (stride, channels) = (p.stride(), p.channels());
    if horizontal {
        for row in p.data.chunks_exact_mut(stride) {
            // Reversing the row reverses the pixel order and each pixel's channels; reversing
            // each pixel again restores the channel order.
            row.reverse();
            for px in row.chunks_exact_mut(channels) {
                px.reverse();
            }
        }
    }
    if vertical {
        let rows = p.height as usize;
        for y in 0..rows / 2 {
            let (upper, lower) = p.data.split_at_mut((rows - 1 - y) * stride);
            upper[y * stride..(y + 1) * stride].swap_with_slice(&mut lower[..stride]);
        }
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Step 8: grayscale.

/// Rec. 709 luma of 8-bit sRGB values, in fixed point (the weights sum to 256).
pub(super) fn luma(r: u8, g: u8, b: u8) -> u8 {
    ((54 * u32::from(r) + 183 * u32::from(g) + 19 * u32::from(b) + 128) >> 8) as u8
}

/// Replaces each pixel's colour by its luma, in place; alpha is kept.
pub(super) fn grayscale(mut p: Pixels, on: bool) -> Pixels {
    if on {
        let channels = p.channels();
        for px in p.data.chunks_exact_mut(channels) {
            let y = luma(px[0], px[1], px[2]);
            px[..3].fill(y);
        }
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Step 9: Gaussian blur.

/// Sigmas below this use an exact, truncated Gaussian kernel (at most 25 taps); from it on,
/// three box blurs, whose cost does not grow with the sigma.
pub(super) const BOX_BLUR_FROM_SIGMA: f64 = 4.0;

/// Blurs with a Gaussian of `sigma` pixels, in place. Alpha images are blurred premultiplied,
/// so transparent pixels do not bleed their (meaningless) colour into the edges.
pub(super) fn blur(mut p: Pixels, sigma: Option<Hundredths>) -> Pixels {
    let Some(sigma) = sigma else {
        return p;
    };
    let (width, height, sigma) = (p.width as usize, p.height as usize, sigma.as_f64());
    if p.alpha {
        premultiply(&mut p.data);
        gaussian::<4>(&mut p.data, width, height, sigma);
        unpremultiply(&mut p.data);
    } else {
        gaussian::<3>(&mut p.data, width, height, sigma);
    }
    p
}

/// A separable Gaussian blur of `sigma` over 8-bit samples interleaved in pixels of `N`
/// channels (1: luma, 3: RGB, 4: RGBA), in place; the edges are extended.
pub(super) fn gaussian<const N: usize>(data: &mut [u8], width: usize, height: usize, sigma: f64) {
    if sigma <= 0.0 || width == 0 || height == 0 {
        return;
    }
    let stride = width * N;
    if sigma < BOX_BLUR_FROM_SIGMA {
        let weights = gaussian_weights(sigma);
        for row in data.chunks_exact_mut(stride) {
            convolve_row::<N>(row, &weights);
        }
        convolve_columns(data, stride, height, &weights);
    } else {
        let radii = box_radii(sigma);
        for row in data.chunks_exact_mut(stride) {
            for r in radii {
                box_row(row, N, r);
            }
        }
        for r in radii {
            box_columns(data, stride, height, r);
        }
    }
}

/// The kernel of a Gaussian truncated at 3σ, in 16-bit fixed point summing to exactly 65536
/// (so a flat image stays flat); index `radius` is the centre.
pub(super) fn gaussian_weights(sigma: f64) -> Vec<u32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as usize;
    let raw: Vec<f64> = (0..=2 * radius)
        .map(|i| {
            let x = i as f64 - radius as f64;
            (-x * x / (2.0 * sigma * sigma)).exp()
        })
        .collect();
    let total: f64 = raw.iter().sum();
    let mut weights: Vec<u32> = raw
        .iter()
        .map(|w| (w / total * 65536.0).round() as u32)
        .collect();
    let sum: u32 = weights.iter().sum();
    // Give the rounding remainder to the centre tap (it stays the largest).
    weights[radius] = (weights[radius] + 65536).saturating_sub(sum);
    weights
}

/// Index `i` moved by `offset` and clamped to `0..len` (edge extension).
pub(super) fn clamped(i: usize, offset: isize, len: usize) -> usize {
    i.saturating_add_signed(offset).min(len - 1)
}

/// Convolves one row of `N`-channel pixels with `weights` (centre at the middle), in place:
/// the row is extended by copies of its edge pixels once, so the inner loop needs no bounds
/// clamping, and one accumulator per channel runs over whole pixels, so the channel loop
/// unrolls (blur σ 2 of an 800×500 RGB image: 17 → 11 ms against striding through each
/// channel).
pub(super) fn convolve_row<const N: usize>(row: &mut [u8], weights: &[u32]) {
    let radius = weights.len() / 2;
    let (first, last) = (&row[..N], &row[row.len() - N..]);
    let mut extended = Vec::with_capacity(row.len() + 2 * radius * N);
    for _ in 0..radius {
        extended.extend_from_slice(first);
    }
    extended.extend_from_slice(row);
    for _ in 0..radius {
        extended.extend_from_slice(last);
    }
    for (x, out) in row.chunks_exact_mut(N).enumerate() {
        let window = &extended[x * N..(x + weights.len()) * N];
        let mut acc = [1u32 << 15; N];
        for (&w, px) in weights.iter().zip(window.chunks_exact(N)) {
            for c in 0..N {
                acc[c] += w * u32::from(px[c]);
            }
        }
        for c in 0..N {
            out[c] = (acc[c] >> 16) as u8;
        }
    }
}

/// Rows `y - slots + 1 ..= y` of the original image, for passes that overwrite the image row
/// by row from the top while still reading rows above the current one.
pub(super) struct RowRing {
    pub(super) rows: Vec<u8>,
    pub(super) stride: usize,
    pub(super) slots: usize,
}

impl RowRing {
    pub(super) fn new(stride: usize, reach: usize) -> RowRing {
        RowRing {
            rows: vec![0; stride * (reach + 1)],
            stride,
            slots: reach + 1,
        }
    }

    /// Keeps original row `y` before it is overwritten.
    pub(super) fn keep(&mut self, y: usize, row: &[u8]) {
        let slot = y % self.slots;
        self.rows[slot * self.stride..(slot + 1) * self.stride].copy_from_slice(row);
    }

    /// Original row `i`: from the ring when already overwritten (`i < y`), else from `data`.
    pub(super) fn original<'a>(&'a self, data: &'a [u8], y: usize, i: usize) -> &'a [u8] {
        let (buf, at) = if i < y {
            (self.rows.as_slice(), i % self.slots)
        } else {
            (data, i)
        };
        &buf[at * self.stride..(at + 1) * self.stride]
    }
}

/// Convolves every column with `weights`, in place, working row by row.
pub(super) fn convolve_columns(data: &mut [u8], stride: usize, height: usize, weights: &[u32]) {
    let radius = weights.len() / 2;
    let mut ring = RowRing::new(stride, radius);
    let mut acc = vec![0u32; stride];
    for y in 0..height {
        acc.fill(1 << 15);
        for (k, &w) in weights.iter().enumerate() {
            let src = ring.original(data, y, clamped(y, k as isize - radius as isize, height));
            for (a, &v) in acc.iter_mut().zip(src) {
                *a += w * u32::from(v);
            }
        }
        let row = &mut data[y * stride..(y + 1) * stride];
        ring.keep(y, row);
        for (out, a) in row.iter_mut().zip(&acc) {
            *out = (a >> 16) as u8;
        }
    }
}

/// The radii of three box blurs whose succession approximates a Gaussian of `sigma`: box
/// widths chosen so the variances add up to σ² (the odd widths around √(4σ² + 1)).
pub(super) fn box_radii(sigma: f64) -> [usize; 3] {
    let ideal = (4.0 * sigma * sigma + 1.0).sqrt();
    let mut lower = ideal.floor() as i64;
    if lower % 2 == 0 {
        lower -= 1;
    }
    let lower = lower.max(1);
    let upper = lower + 2;
    // How many of the three boxes take the lower width.
    let (l, var) = (lower as f64, 12.0 * sigma * sigma);
    let n_lower = ((var - 3.0 * l * l - 12.0 * l - 9.0) / (-4.0 * l - 4.0))
        .round()
        .clamp(0.0, 3.0) as usize;
    let radius = |w: i64| (w as usize - 1) / 2;
    [0, 1, 2].map(|i| radius(if i < n_lower { lower } else { upper }))
}

/// Box-blurs one row with a window of `2r + 1`, in place, with running sums.
pub(super) fn box_row(row: &mut [u8], channels: usize, r: usize) {
    if r == 0 {
        return;
    }
    let width = row.len() / channels;
    let window = (2 * r + 1) as u32;
    let src = row.to_vec();
    for c in 0..channels {
        let at = |x: usize| u32::from(src[x * channels + c]);
        let mut sum: u32 = (0..=2 * r)
            .map(|k| at(clamped(0, k as isize - r as isize, width)))
            .sum();
        for x in 0..width {
            row[x * channels + c] = ((sum + window / 2) / window) as u8;
            sum += at(clamped(x, r as isize + 1, width));
            sum -= at(clamped(x, -(r as isize), width));
        }
    }
}

/// Box-blurs every column with a window of `2r + 1`, in place, row by row with running sums.
pub(super) fn box_columns(data: &mut [u8], stride: usize, height: usize, r: usize) {
    if r == 0 {
        return;
    }
    let window = (2 * r + 1) as u32;
    let mut ring = RowRing::new(stride, r);
    let mut sum = vec![0u32; stride];
    for k in 0..=2 * r {
        let src = &data[clamped(0, k as isize - r as isize, height) * stride..][..stride];
        for (s, &v) in sum.iter_mut().zip(src) {
            *s += u32::from(v);
        }
    }
    for y in 0..height {
        let row = &mut data[y * stride..(y + 1) * stride];
        ring.keep(y, row);
        for (out, s) in row.iter_mut().zip(&sum) {
            *out = ((s + window / 2) / window) as u8;
        }
        if y + 1 < height {
            let add = clamped(y, r as isize + 1, height);
            let sub = clamped(y, -(r as isize), height);
            // `add` is below `y`, still original in `data`; `sub` is at or above it, in the ring.
            let (incoming, outgoing) = (
                &data[add * stride..(add + 1) * stride],
                ring.original(data, y + 1, sub),
            );
            for ((s, &a), &o) in sum.iter_mut().zip(incoming).zip(outgoing) {
                *s = *s + u32::from(a) - u32::from(o);
            }
        }
    }
}

/// Straight RGBA to premultiplied, in place.
pub(super) fn premultiply(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let a = u32::from(px[3]);
        for c in &mut px[..3] {
            *c = ((u32::from(*c) * a + 127) / 255) as u8;
        }
    }
}

/// Premultiplied RGBA back to straight, in place; fully transparent pixels become black.
pub(super) fn unpremultiply(rgba: &mut [u8]) {
    for px in rgba.chunks_exact_mut(4) {
        let a = u32::from(px[3]);
        for c in &mut px[..3] {
            *c = match a {
                0 => 0,
                a => ((u32::from(*c) * 255 + a / 2) / a).min(255) as u8,
            };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Step 10: sharpen.

/// Unsharp mask on luminance: each pixel's colour moves by `amount` × (luma − blurred luma),
/// equally on every channel, so edges get crisper without colour fringes.
pub(super) fn sharpen(mut p: Pixels, s: Option<Sharpen>) -> Pixels {
    let Some(s) = s else {
        return p;
    };
    let channels = p.channels();
    let luma_plane: Vec<u8> = p
        .data
        .chunks_exact(channels)
        .map(|px| luma(px[0], px[1], px[2]))
        .collect();
    let mut blurred = luma_plane.clone();
    gaussian::<1>(
        &mut blurred,
        p.width as usize,
        p.height as usize,
        s.sigma.as_f64(),
    );
    let amount = i32::from(s.amount.0);
    for ((px, &y), &b) in p
        .data
        .chunks_exact_mut(channels)
        .zip(&luma_plane)
        .zip(&blurred)
    {
        // `amount` is in hundredths: round the scaled difference half away from zero.
        let scaled = (i32::from(y) - i32::from(b)) * amount;
        let delta = (scaled + 50 * scaled.signum()) / 100;
        for c in &mut px[..3] {
            *c = (i32::from(*c) + delta).clamp(0, 255) as u8;
        }
    }
    p
}

// ---------------------------------------------------------------------------------------------
// Step 11: pad.

/// The canvas `pad` makes of a `width`×`height` image: each side the transform asks for, and
/// never smaller than the image.
pub(super) fn padded_size(width: u32, height: u32, t: &Transform) -> (u32, u32) {
    let side = |requested: u32, actual: u32| {
        if requested == 0 {
            actual
        } else {
            requested.max(actual)
        }
    };
    (side(t.width, width), side(t.height, height))
}

/// Extends the image to the requested box, placed by the alignment. The new area is the
/// background when it is opaque, else transparent (an alpha channel is added), for
/// [`flatten`] to composite.
pub(super) fn pad(p: Pixels, t: &Transform) -> Pixels {
    if !t.pad {
        return p;
    }
    let (width, height) = padded_size(p.width, p.height, t);
    if (width, height) == (p.width, p.height) {
        return p;
    }
    let opaque = t.background.filter(|c| c.is_opaque());
    let alpha = p.alpha || opaque.is_none();
    let fill = match opaque {
        Some(c) => [c.r, c.g, c.b, 255],
        None => [0; 4],
    };
    let channels = if alpha { 4 } else { 3 };
    let mut data = fill[..channels].repeat(width as usize * height as usize);
    let left = match t.h_align {
        HAlign::Left => 0,
        HAlign::Center => (width - p.width) / 2,
        HAlign::Right => width - p.width,
    } as usize;
    let top = match t.v_align {
        VAlign::Top => 0,
        VAlign::Middle => (height - p.height) / 2,
        VAlign::Bottom => height - p.height,
    } as usize;
    let stride = width as usize * channels;
    for (y, src) in p.data.chunks_exact(p.stride()).enumerate() {
        let start = (top + y) * stride + left * channels;
        let dst = &mut data[start..start + p.width as usize * channels];
        if p.alpha == alpha {
            dst.copy_from_slice(src);
        } else {
            for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(3)) {
                d[..3].copy_from_slice(s);
                d[3] = 255;
            }
        }
    }
    Pixels {
        width,
        height,
        alpha,
        data,
    }
}

// ---------------------------------------------------------------------------------------------
// Step 12: flatten onto the background.

/// Composites the image over the background colour: onto an opaque background the result is
/// opaque (RGB); onto a translucent one, "over" compositing keeps an alpha channel. Without a
/// background, or for an opaque image, nothing changes.
pub(super) fn flatten(p: Pixels, background: Option<Color>) -> Pixels {
    let Some(bg) = background else {
        return p;
    };
    if !p.alpha {
        return p;
    }
    if bg.is_opaque() {
        return Pixels {
            data: flatten_onto(&p.data, bg),
            alpha: false,
            ..p
        };
    }
    let mut p = p;
    let (bg_rgb, ba) = ([bg.r, bg.g, bg.b], u32::from(bg.a));
    for px in p.data.chunks_exact_mut(4) {
        let a = u32::from(px[3]);
        // Weights out of 255²: the pixel's a·255, the background's ba·(255 − a).
        let (wa, wb) = (a * 255, ba * (255 - a));
        let total = wa + wb;
        if total == 0 {
            continue;
        }
        for (c, &b) in px[..3].iter_mut().zip(&bg_rgb) {
            *c = ((u32::from(*c) * wa + u32::from(b) * wb + total / 2) / total) as u8;
        }
        px[3] = ((total + 127) / 255) as u8;
    }
    p
}

/// Composites straight-alpha RGBA onto an opaque colour, giving RGB.
pub(super) fn flatten_onto(rgba: &[u8], bg: Color) -> Vec<u8> {
    let bg = [bg.r, bg.g, bg.b];
    let mut rgb = Vec::with_capacity(rgba.len() / 4 * 3);
    for px in rgba.chunks_exact(4) {
        let a = u32::from(px[3]);
        for (&c, &b) in px[..3].iter().zip(&bg) {
            // c·a + b·(255 − a), divided by 255 with rounding; at most 255.
            let v = (u32::from(c) * a + u32::from(b) * (255 - a) + 127) / 255;
            rgb.push(v.min(255) as u8);
        }
    }
    rgb
}

// ---------------------------------------------------------------------------------------------
// Step 13: rotate.

/// Rotates clockwise by quarter turns: a half turn is both flips; a quarter turn copies each
/// pixel to its transposed place, in tiles so both images are walked cache-friendly.
pub(super) fn rotate(p: Pixels, rotation: Rotation) -> Pixels {
    const TILE: usize = 64;
    let clockwise = match rotation {
        Rotation::None => return p,
        Rotation::Cw180 => return flip(p, true, true),
        Rotation::Cw90 => true,
        Rotation::Cw270 => false,
    };
    let (w, h, c) = (p.width as usize, p.height as usize, p.channels());
    let mut data = vec![0; p.data.len()];
    // The rotated image is h wide and w high: its pixel (x, y) comes from the source's
    // (y, h − 1 − x) turning clockwise, (w − 1 − y, x) counter-clockwise.
    for ty in (0..w).step_by(TILE) {
        for tx in (0..h).step_by(TILE) {
            for y in ty..(ty + TILE).min(w) {
                for x in tx..(tx + TILE).min(h) {
                    let (sx, sy) = if clockwise {
                        (y, h - 1 - x)
                    } else {
                        (w - 1 - y, x)
                    };
                    let (d, s) = ((y * h + x) * c, (sy * w + sx) * c);
                    data[d..d + c].copy_from_slice(&p.data[s..s + c]);
                }
            }
        }
    }
    Pixels {
        width: p.height,
        height: p.width,
        alpha: p.alpha,
        data,
    }
}
