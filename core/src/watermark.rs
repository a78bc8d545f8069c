//! The watermark model: an image read from storage and composited onto the result (thumbor and
//! imagor `filters:watermark`, imgproxy `wm`, the query grammar's `watermark`).
//!
//! A [`Watermark`] travels beside the [`Transform`](crate::transform::Transform) (which stays
//! `Copy`) in [`Target`](crate::grammar::Target) and
//! [`RenderRequest`](crate::render::RenderRequest). It applies last, on the final image: after
//! padding, flattening and rotation, before encoding (imgproxy's order; thumbor and imagor
//! apply filters in URL order, so their grammar refuses filters that would change the pixels
//! after `watermark`).
//!
//! Placement, on a `W`×`H` result with a `w`×`h` watermark (after its [size](Watermark::width)),
//! per axis ([`Axis`]):
//!
//! - [`Axis::Start`]: `left = o`; [`Axis::End`]: `left = W − w − o` (the offset points inwards
//!   from the far edge); [`Axis::Center`]: `left = trunc((W − w) / 2) + o`, where `o` is the
//!   [`Offset`] in pixels or `round(W × percent / 100)`, as in thumbor;
//! - [`Axis::Repeat`]: copies at `k × (w + spacing)` for `k = 0, 1, …` while they start inside
//!   the image, the last one cut off at the edge (imgproxy's and imagor's tiling; thumbor
//!   spreads whole copies evenly instead).
//!
//! Size: the watermark keeps its own size unless [`Watermark::width`] or [`Watermark::height`]
//! bounds it; then it is scaled (up or down) to fit inside that box, keeping its aspect ratio,
//! as thumbor's `w_ratio`/`h_ratio` and imgproxy's `scale` do. Fractions are of the result's
//! sides.
//!
//! Opacity multiplies the watermark's own alpha; compositing is "over" with premultiplied
//! alpha. A watermark of opacity 0 is still read (so a missing one is an error whatever the
//! opacity) but changes no pixel.

use crate::percent::{decode, encode, is_unreserved};
use crate::transform::{Fraction, HAlign, MAX_DIMENSION, Span, VAlign};

/// Where the watermark image is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatermarkImage {
    /// The sidecar's configured default watermark (imgproxy's `IMGPROXY_WATERMARK_PATH`,
    /// `[watermark]` in the sidecar configuration); the sidecar puts its storage and key in
    /// place before the request's canonical form is taken.
    Default,
    /// A decoded, not yet normalized image path named by a URL (grammar targets only); the
    /// router resolves it like a source path into [`WatermarkImage::Object`].
    Path(String),
    /// An object of a named storage: what render requests carry.
    Object {
        /// Named storage (sidecar configuration).
        storage: String,
        /// Normalized object key (never `..`, never a leading `/`).
        key: String,
    },
}

/// A distance along one side of the result: pixels, or a whole percentage of the side (thumbor's
/// `20p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// Pixels, at most [`MAX_DIMENSION`] either way.
    Pixels(i32),
    /// 1 to 100 percent of the side (0 percent is [`Offset::Pixels`] 0).
    Percent(u8),
}

impl Offset {
    /// No offset.
    pub const ZERO: Offset = Offset::Pixels(0);

    /// The offset in pixels on a side of `side` pixels: percentages rounded as thumbor does.
    pub fn on(self, side: u32) -> i64 {
        match self {
            Offset::Pixels(p) => i64::from(p),
            Offset::Percent(p) => (f64::from(side) * f64::from(p) / 100.0 + 1e-5).round() as i64,
        }
    }

    /// An offset of `pixels`, `None` beyond [`MAX_DIMENSION`] either way.
    pub fn pixels(pixels: i64) -> Option<Offset> {
        (pixels.unsigned_abs() <= u64::from(MAX_DIMENSION)).then_some(Offset::Pixels(pixels as i32))
    }

    /// An offset of `percent` of the side, `None` over 100.
    pub fn percent(percent: u64) -> Option<Offset> {
        match percent {
            0 => Some(Offset::ZERO),
            1..=100 => Some(Offset::Percent(percent as u8)),
            _ => None,
        }
    }
}

/// Where the watermark lies along one axis (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// From the left (top) edge, the offset pointing right (down).
    Start(Offset),
    /// Centred, the offset pointing right (down).
    Center(Offset),
    /// From the right (bottom) edge, the offset pointing left (up): inwards.
    End(Offset),
    /// Repeated from the left (top) edge, with this many pixels between copies (at most
    /// [`MAX_DIMENSION`]).
    Repeat(u32),
}

impl std::fmt::Display for Axis {
    /// The wire form: `start`, `start+10`, `center-5`, `end+20p`, `repeat`, `repeat+8`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (name, offset) = match *self {
            Axis::Start(o) => ("start", o),
            Axis::Center(o) => ("center", o),
            Axis::End(o) => ("end", o),
            Axis::Repeat(0) => return f.write_str("repeat"),
            Axis::Repeat(s) => return write!(f, "repeat+{s}"),
        };
        f.write_str(name)?;
        match offset {
            Offset::Pixels(0) => Ok(()),
            Offset::Pixels(p) if p < 0 => write!(f, "{p}"),
            Offset::Pixels(p) => write!(f, "+{p}"),
            Offset::Percent(p) => write!(f, "+{p}p"),
        }
    }
}

/// Why a watermark's wire form did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatermarkSpecError {
    /// Not an [`Axis`] in its text form.
    #[error("malformed watermark position {0:?}")]
    Axis(String),
    /// Not a fraction from 0 to 1 written with a decimal point.
    #[error("malformed watermark opacity {0:?}: expected 0.0 to 1.0")]
    Opacity(String),
    /// Not a size: pixels (1 to the dimension limit) or a fraction of the side above 0.
    #[error("malformed watermark size {0:?}")]
    Size(String),
}

impl std::str::FromStr for Axis {
    type Err = WatermarkSpecError;

    /// The inverse of `Display`.
    fn from_str(s: &str) -> Result<Axis, WatermarkSpecError> {
        let bad = || WatermarkSpecError::Axis(s.chars().take(32).collect());
        let split = s.find(['+', '-']).unwrap_or(s.len());
        let (name, rest) = s.split_at(split);
        let digits =
            |d: &str| !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| b.is_ascii_digit());
        let offset = match rest.split_at(rest.len().min(1)) {
            ("", "") => Offset::ZERO,
            (sign, n) => {
                let (n, percent) = match n.strip_suffix('p') {
                    Some(n) => (n, true),
                    None => (n, false),
                };
                if !digits(n) {
                    return Err(bad());
                }
                let v: u64 = n.parse().map_err(|_| bad())?;
                match (sign, percent) {
                    (_, true) if sign == "-" || v == 0 => return Err(bad()),
                    (_, true) => Offset::percent(v).ok_or_else(bad)?,
                    (_, false) if v == 0 => return Err(bad()),
                    ("-", false) => Offset::pixels(-(v as i64)).ok_or_else(bad)?,
                    _ => Offset::pixels(v as i64).ok_or_else(bad)?,
                }
            }
        };
        match (name, offset) {
            ("start", o) => Ok(Axis::Start(o)),
            ("center", o) => Ok(Axis::Center(o)),
            ("end", o) => Ok(Axis::End(o)),
            ("repeat", Offset::Pixels(p)) if p >= 0 => Ok(Axis::Repeat(p as u32)),
            _ => Err(bad()),
        }
    }
}

/// Parses an opacity in its wire form (a [`Fraction`] as `Display` writes it: `0.5`, `1.0`).
pub fn parse_opacity(s: &str) -> Result<Fraction, WatermarkSpecError> {
    match s.parse::<Span>() {
        Ok(Span::Fraction(f)) => Ok(f),
        _ => Err(WatermarkSpecError::Opacity(s.chars().take(32).collect())),
    }
}

/// Parses a size bound in its wire form (a [`Span`]: `120` pixels, `0.25` of the side), never
/// zero and never over [`MAX_DIMENSION`] pixels.
pub fn parse_size(s: &str) -> Result<Span, WatermarkSpecError> {
    match s.parse::<Span>() {
        Ok(Span::Pixels(p)) if (1..=MAX_DIMENSION).contains(&p) => Ok(Span::Pixels(p)),
        Ok(Span::Fraction(f)) if f.0 > 0 => Ok(Span::Fraction(f)),
        _ => Err(WatermarkSpecError::Size(s.chars().take(32).collect())),
    }
}

/// An image composited onto the result (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watermark {
    /// Where the image is read from.
    pub image: WatermarkImage,
    /// Horizontal placement.
    pub x: Axis,
    /// Vertical placement.
    pub y: Axis,
    /// Opacity, multiplying the watermark's own alpha: 0 (invisible) to 1.
    pub opacity: Fraction,
    /// Largest width: pixels, or a fraction of the result's width; `None`: unbounded.
    pub width: Option<Span>,
    /// Largest height: pixels, or a fraction of the result's height; `None`: unbounded.
    pub height: Option<Span>,
}

impl Watermark {
    /// A watermark of `image` at its own size, fully opaque, in the top-left corner.
    pub fn new(image: WatermarkImage) -> Watermark {
        Watermark {
            image,
            x: Axis::Start(Offset::ZERO),
            y: Axis::Start(Offset::ZERO),
            opacity: Fraction::ONE,
            width: None,
            height: None,
        }
    }

    /// The size of a `w`×`h` watermark on a `width`×`height` result: its own, or scaled (up or
    /// down) to fit inside the bounds, keeping its aspect ratio (thumbor's rule), at least 1×1.
    pub fn scaled_size(&self, (w, h): (u32, u32), (width, height): (u32, u32)) -> (u32, u32) {
        let (w, h) = (f64::from(w.max(1)), f64::from(h.max(1)));
        let max_w = self.width.map(|s| s.on(width));
        let max_h = self.height.map(|s| s.on(height));
        let (max_w, max_h) = match (max_w, max_h) {
            (None, None) => return (w as u32, h as u32),
            (Some(mw), None) => (mw, h * mw / w),
            (None, Some(mh)) => (w * mh / h, mh),
            (Some(mw), Some(mh)) => (mw, mh),
        };
        let side = |v: f64| v.round().clamp(1.0, f64::from(MAX_DIMENSION)) as u32;
        if w / max_w.max(1e-9) >= h / max_h.max(1e-9) {
            (side(max_w), side(h * max_w / w))
        } else {
            (side(w * max_h / h), side(max_h))
        }
    }
}

/// The axes of a watermark placed by a compass anchor with offsets in pixels, as imgproxy's
/// `wm` and the query grammar say it: the offsets point inwards from the edge the anchor names,
/// and right (down) from the centre.
pub fn axes_at((h, v): (HAlign, VAlign), (dx, dy): (i32, i32)) -> (Axis, Axis) {
    let x = match h {
        HAlign::Left => Axis::Start(Offset::Pixels(dx)),
        HAlign::Center => Axis::Center(Offset::Pixels(dx)),
        HAlign::Right => Axis::End(Offset::Pixels(dx)),
    };
    let y = match v {
        VAlign::Top => Axis::Start(Offset::Pixels(dy)),
        VAlign::Middle => Axis::Center(Offset::Pixels(dy)),
        VAlign::Bottom => Axis::End(Offset::Pixels(dy)),
    };
    (x, y)
}

/// The inverse of [`axes_at`]: `None` for tiling and percentages.
pub fn anchor_of(x: Axis, y: Axis) -> Option<((HAlign, VAlign), (i32, i32))> {
    let (h, dx) = match x {
        Axis::Start(Offset::Pixels(d)) => (HAlign::Left, d),
        Axis::Center(Offset::Pixels(d)) => (HAlign::Center, d),
        Axis::End(Offset::Pixels(d)) => (HAlign::Right, d),
        _ => return None,
    };
    let (v, dy) = match y {
        Axis::Start(Offset::Pixels(d)) => (VAlign::Top, d),
        Axis::Center(Offset::Pixels(d)) => (VAlign::Middle, d),
        Axis::End(Offset::Pixels(d)) => (VAlign::Bottom, d),
        _ => return None,
    };
    Some(((h, v), (dx, dy)))
}

/// A compass anchor (horizontal, vertical), or tiling (`None`).
pub type Placement = Option<(HAlign, VAlign)>;

/// The axes of a watermark placed by a compass anchor, or tiled (`None`), with offsets in
/// pixels (for tiles: the spacing between them); `None` for a negative spacing.
pub fn axes_placed(anchor: Option<(HAlign, VAlign)>, (dx, dy): (i32, i32)) -> Option<(Axis, Axis)> {
    match anchor {
        Some(anchor) => Some(axes_at(anchor, (dx, dy))),
        None => Some((
            Axis::Repeat(u32::try_from(dx).ok()?),
            Axis::Repeat(u32::try_from(dy).ok()?),
        )),
    }
}

/// The inverse of [`axes_placed`]: `None` for percentages and tiling along one axis only.
pub fn placement_of(x: Axis, y: Axis) -> Option<(Placement, (i32, i32))> {
    match (x, y) {
        (Axis::Repeat(sx), Axis::Repeat(sy)) => {
            Some((None, (i32::try_from(sx).ok()?, i32::try_from(sy).ok()?)))
        }
        (x, y) => anchor_of(x, y).map(|(anchor, offsets)| (Some(anchor), offsets)),
    }
}

/// An opacity as imgproxy and the query grammar write it: `1`, `0.5`, `0.0125`.
pub(crate) fn opacity_text(opacity: Fraction) -> String {
    if opacity == Fraction::ONE {
        "1".to_owned()
    } else {
        opacity.to_string()
    }
}

/// Percent-encodes an image path for a filter argument or a canonical form: everything but
/// unreserved characters and `/`, so `,`, `(`, `)` and `:` never end it.
pub(crate) fn encode_path(path: &str) -> String {
    encode(path, |b| is_unreserved(b) || b == b'/')
}

/// The inverse of [`encode_path`]; `None` for a malformed escape.
pub(crate) fn decode_path(text: &str) -> Option<String> {
    decode(text)
}

/// The watermark image as canonical forms write it: `STORAGE/KEY` percent-encoded (a `/` in
/// either escaped), or `default`, which no object reads as since it has no `/`.
pub(crate) fn canonical_image(image: &WatermarkImage) -> String {
    match image {
        WatermarkImage::Default => "default".to_owned(),
        WatermarkImage::Path(p) => encode_path(p),
        WatermarkImage::Object { storage, key } => {
            // No `/` but the one between them: canonical forms hold no option with a `/`
            // ([`crate::render::RenderRequest::canonical`]).
            let escape = |text: &str| encode_path(text).replace('/', "%2F");
            format!("{}/{}", escape(storage), escape(key))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_have_a_text_form() {
        for (text, axis) in [
            ("start", Axis::Start(Offset::ZERO)),
            ("start+10", Axis::Start(Offset::Pixels(10))),
            ("start-10", Axis::Start(Offset::Pixels(-10))),
            ("center-5", Axis::Center(Offset::Pixels(-5))),
            ("end+20p", Axis::End(Offset::Percent(20))),
            ("end", Axis::End(Offset::ZERO)),
            ("repeat", Axis::Repeat(0)),
            ("repeat+8", Axis::Repeat(8)),
        ] {
            assert_eq!(text.parse::<Axis>(), Ok(axis), "{text}");
            assert_eq!(axis.to_string(), text);
        }
        for bad in [
            "",
            "left",
            "start+",
            "start+0",
            "start-0p",
            "start+101p",
            "start+0p",
            "repeat-2",
            "repeat+2p",
            "end+16385",
            "start++1",
            "center+1x",
            "start 1",
        ] {
            assert!(bad.parse::<Axis>().is_err(), "{bad}");
        }
        assert_eq!(parse_opacity("0.5"), Ok(Fraction(5000)));
        assert_eq!(parse_opacity("1.0"), Ok(Fraction::ONE));
        assert!(parse_opacity("1").is_err() && parse_opacity("1.5").is_err());
        assert_eq!(parse_size("120"), Ok(Span::Pixels(120)));
        assert_eq!(parse_size("0.25"), Ok(Span::Fraction(Fraction(2500))));
        for bad in ["0", "0.0", "16385", "x", "-1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn offsets_in_percent_round_like_thumbor() {
        assert_eq!(Offset::Percent(20).on(300), 60);
        assert_eq!(Offset::Percent(50).on(5), 3, "2.5 rounds up");
        assert_eq!(Offset::Pixels(-7).on(5), -7);
        assert_eq!(Offset::percent(0), Some(Offset::ZERO));
        assert_eq!(Offset::percent(101), None);
        assert_eq!(Offset::pixels(-16_385), None);
    }

    #[test]
    fn scaled_sizes_fit_the_bounds_keeping_the_aspect_ratio() {
        let mut w = Watermark::new(WatermarkImage::Default);
        assert_eq!(w.scaled_size((40, 20), (300, 200)), (40, 20), "own size");
        w.width = Some(Span::Fraction(Fraction(5000)));
        assert_eq!(w.scaled_size((40, 20), (300, 200)), (150, 75), "enlarged");
        w.height = Some(Span::Fraction(Fraction(2500)));
        assert_eq!(
            w.scaled_size((40, 20), (300, 200)),
            (100, 50),
            "the height binds"
        );
        w.width = Some(Span::Pixels(10));
        w.height = None;
        assert_eq!(w.scaled_size((40, 20), (300, 200)), (10, 5));
        w.width = Some(Span::Pixels(1));
        assert_eq!(w.scaled_size((40, 20), (300, 200)), (1, 1), "never 0");
    }

    #[test]
    fn canonical_images_name_storage_and_key_unambiguously() {
        let object = |s: &str, k: &str| WatermarkImage::Object {
            storage: s.into(),
            key: k.into(),
        };
        assert_eq!(
            canonical_image(&object("s3", "wm/logo.png")),
            "s3/wm%2Flogo.png"
        );
        assert_eq!(
            canonical_image(&object("s3", "a,b(1).png")),
            "s3/a%2Cb%281%29.png"
        );
        assert_ne!(
            canonical_image(&object("a/b", "c")),
            canonical_image(&object("a", "b/c"))
        );
        assert_eq!(canonical_image(&WatermarkImage::Default), "default");
        assert_eq!(
            decode_path("a%2Cb%281%29.png").as_deref(),
            Some("a,b(1).png")
        );
    }
}
