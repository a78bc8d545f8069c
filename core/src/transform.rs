//! The grammar-neutral transform model every URL grammar maps onto.
//!
//! A [`Transform`] is applied in this order, whatever the order of the URL's options (grammars
//! whose peers order things differently translate, see each grammar's module documentation):
//!
//! 1. EXIF orientation (always), then [`Trim`] of uniform borders: the trimmed box becomes the
//!    image everything below works on (the manual crop and the focus are in its coordinates);
//! 2. the manual [`Crop`], a region of the upright source cut out before anything else (clamped
//!    to the image; a region wholly outside it is an error);
//! 3. fit into the box (`width`×`height`, [`Fit`], `upscale`), a fill crop anchored by the
//!    alignment, centred on the [`Focus`] as far as the image allows, or, with
//!    [`Transform::smart`] (and no focus), placed where the attention heuristic scores highest;
//!    then scaled by [`Transform::proportion`];
//! 4. flips;
//! 5. grayscale, then Gaussian blur, then sharpening, then the ordered [`Transform::effects`]
//!    (colour filters and more of the above, each on the image as the one before left it);
//! 6. padding to the box (`pad`), the image placed by the alignment, then the
//!    [`Transform::padding`] canvas around that box (or, without `pad`, around the image as
//!    the steps above left it);
//! 7. compositing onto the `background` colour, when there is one;
//! 8. rotation by [`Rotation`] (clockwise): the box, alignment and flips above are those of the
//!    image before it is rotated, as in thumbor, where `rotate` is a filter applied to the
//!    result; then the ordered [`Transform::final_effects`], on the padded, rotated image;
//! 9. the watermark ([`crate::watermark`]), which travels beside the transform, composited
//!    onto the final image;
//! 10. encoding in the [`OutputFormat`]; JPEG, which has no alpha, flattens what is still
//!     transparent onto white, and GIF, whose transparency is all or nothing, keeps pixels at
//!     least half opaque and drops the others. The encoder settings (`quality`, `progressive`,
//!     `max_bytes`) apply here; where a request names none, the sidecar's configured defaults
//!     do. The output carries no metadata and its pixels are sRGB, unless
//!     [`Transform::keep_icc`] asks for the source's ICC profile, embedded unconverted.

pub use crate::color::Color;
pub use crate::effect::{Effect, Effects};

/// Largest width or height a URL may ask for. Larger requests are rejected before any work.
pub const MAX_DIMENSION: u32 = 16_384;

/// Largest Gaussian sigma of a blur or a sharpen, in pixels: the blur's cost does not depend on
/// it, but larger values only wash the image out. URLs asking for more are 400.
pub const MAX_SIGMA: Hundredths = Hundredths(10_000);

/// Largest [`Transform::proportion`]: ten times the fitted size.
pub const MAX_PROPORTION: Hundredths = Hundredths(1_000);

/// Largest sharpening amount (1 adds the full difference between the image and its blur).
pub const MAX_SHARPEN_AMOUNT: Hundredths = Hundredths(1_000);

/// How the source is fitted into the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Scale to cover the box, then crop what overflows (thumbor's default).
    #[default]
    Fill,
    /// Scale to fit inside the box, keeping the aspect ratio (thumbor `fit-in`).
    FitIn,
    /// Scale to exactly the box, ignoring the aspect ratio (thumbor `stretch`).
    Stretch,
    /// Scale to cover the box, keeping the aspect ratio and cropping nothing: each side at
    /// least the box's (thumbor `full-fit-in`, ImageKit `c-at_least`).
    Cover,
    /// A fill when the box and the upright source have the same orientation (a square counts
    /// as landscape), else [`Fit::FitIn`] (imgproxy `rt:auto`). With one side given,
    /// both are the same. Its fill is [`Fit::FillClamped`].
    Auto,
    /// [`Fit::Fill`], except for a source that cannot cover the box without upscaling: that one
    /// keeps its scale and is cropped to the box clamped to the image (a 100×100 source in a
    /// 300×200 box stays 100×100, a 400×100 one becomes 300×100), where [`Fit::Fill`] crops it
    /// to the box's aspect ratio (imgproxy `fill`, against its `fill-down`). With
    /// [`Transform::upscale`] the two are the same.
    FillClamped,
    /// [`Fit::Auto`] whose fill is [`Fit::Fill`]: a source that cannot cover the box is cropped
    /// to the box's aspect ratio (imgproxy `rt:auto` with a dpr, which imgproxy lowers until the
    /// source covers the box).
    AutoDown,
}

/// Horizontal anchor of a crop or of padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HAlign {
    /// Keep the left edge.
    Left,
    /// Keep the centre.
    #[default]
    Center,
    /// Keep the right edge.
    Right,
}

impl HAlign {
    /// −1 left, 0 centre, 1 right.
    fn sign(self) -> i8 {
        match self {
            HAlign::Left => -1,
            HAlign::Center => 0,
            HAlign::Right => 1,
        }
    }

    fn from_sign(s: i8) -> HAlign {
        match s.signum() {
            -1 => HAlign::Left,
            0 => HAlign::Center,
            _ => HAlign::Right,
        }
    }

    /// The anchor seen in a left-right mirror image.
    pub fn mirrored(self) -> HAlign {
        HAlign::from_sign(-self.sign())
    }
}

/// Vertical anchor of a crop or of padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VAlign {
    /// Keep the top edge.
    Top,
    /// Keep the middle.
    #[default]
    Middle,
    /// Keep the bottom edge.
    Bottom,
}

impl VAlign {
    /// −1 top, 0 middle, 1 bottom.
    fn sign(self) -> i8 {
        match self {
            VAlign::Top => -1,
            VAlign::Middle => 0,
            VAlign::Bottom => 1,
        }
    }

    fn from_sign(s: i8) -> VAlign {
        match s.signum() {
            -1 => VAlign::Top,
            0 => VAlign::Middle,
            _ => VAlign::Bottom,
        }
    }

    /// The anchor seen in a top-bottom mirror image.
    pub fn mirrored(self) -> VAlign {
        VAlign::from_sign(-self.sign())
    }
}

/// An image format pixmesh reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (`image/jpeg`).
    Jpeg,
    /// PNG (`image/png`).
    Png,
    /// WebP (`image/webp`).
    Webp,
    /// GIF (`image/gif`): its first frame only, read and written as a still image.
    Gif,
    /// AVIF (`image/avif`): written only (AV1 still image, 8-bit 4:4:4); an AVIF source is 415.
    Avif,
}

impl Format {
    /// Every format, in the order they are documented.
    pub const ALL: [Format; 5] = [
        Format::Jpeg,
        Format::Png,
        Format::Webp,
        Format::Gif,
        Format::Avif,
    ];

    /// The name used in URLs and result keys.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
            Format::Gif => "gif",
            Format::Avif => "avif",
        }
    }

    /// Parses a URL format name (`jpg` is an alias of `jpeg`); `None` when unknown.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::Webp),
            "gif" => Some(Format::Gif),
            "avif" => Some(Format::Avif),
            _ => None,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
            Format::Gif => "image/gif",
            Format::Avif => "image/avif",
        }
    }

    /// Whether the format's encoder is lossy, so that a quality (and a byte budget,
    /// [`Transform::max_bytes`]) applies to it.
    pub fn is_lossy(self) -> bool {
        matches!(self, Format::Jpeg | Format::Webp | Format::Avif)
    }
}

/// Which format the result is encoded in.
///
/// URLs ask for [`OutputFormat::Source`] (by naming no format) or a [`OutputFormat::Fixed`] one;
/// [`OutputFormat::Compatible`] is what the router puts in place of a URL's "auto" for a client
/// whose `Accept` header does not list WebP (see [`crate::accept`]), so a WebP source is not
/// sent to a client that cannot show it. The result's format is [`OutputFormat::resolve`]d
/// once the source is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// The source's own format (a GIF stays a GIF, a WebP a WebP).
    #[default]
    Source,
    /// This format, whatever the source.
    Fixed(Format),
    /// The source's format when every client shows it (JPEG, PNG, GIF); a WebP source becomes
    /// PNG when the result has transparency and JPEG when it is opaque, so nothing is flattened.
    Compatible,
}

impl OutputFormat {
    /// The format to encode in, for a source in `source`; `transparent` tells whether the
    /// result (after every other step) has transparent pixels, and is only asked when that
    /// decides.
    pub fn resolve(self, source: Format, transparent: impl FnOnce() -> bool) -> Format {
        match (self, source) {
            (OutputFormat::Fixed(f), _) => f,
            (OutputFormat::Compatible, Format::Webp) if transparent() => Format::Png,
            (OutputFormat::Compatible, Format::Webp) => Format::Jpeg,
            (OutputFormat::Source | OutputFormat::Compatible, source) => source,
        }
    }

    /// The fixed format, if any.
    pub fn fixed(self) -> Option<Format> {
        match self {
            OutputFormat::Fixed(f) => Some(f),
            OutputFormat::Source | OutputFormat::Compatible => None,
        }
    }
}

/// A quarter-turn rotation, clockwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rotation {
    /// No rotation.
    #[default]
    None,
    /// 90° clockwise.
    Cw90,
    /// 180°.
    Cw180,
    /// 270° clockwise (90° counter-clockwise).
    Cw270,
}

impl Rotation {
    /// Every rotation, by quarter turns.
    pub const ALL: [Rotation; 4] = [
        Rotation::None,
        Rotation::Cw90,
        Rotation::Cw180,
        Rotation::Cw270,
    ];

    /// The rotation by `degrees` clockwise (negative: counter-clockwise), any multiple of 90;
    /// `None` for other angles.
    pub fn from_degrees(degrees: i64) -> Option<Rotation> {
        (degrees % 90 == 0).then(|| Rotation::ALL[degrees.rem_euclid(360) as usize / 90])
    }

    /// Clockwise degrees: 0, 90, 180 or 270.
    pub fn degrees(self) -> u16 {
        self as u16 * 90
    }

    /// The rotation that undoes this one.
    pub fn inverse(self) -> Rotation {
        Rotation::ALL[(4 - self as usize) % 4]
    }

    /// Whether the rotation swaps width and height.
    pub fn swaps_sides(self) -> bool {
        matches!(self, Rotation::Cw90 | Rotation::Cw270)
    }

    /// Where an anchor of the image (a side, a corner or the centre) lands once the image is
    /// rotated: rotating 90° clockwise takes the top-left corner to the top-right.
    pub fn apply_to_anchor(self, (h, v): (HAlign, VAlign)) -> (HAlign, VAlign) {
        let (mut x, mut y) = (h.sign(), v.sign());
        for _ in 0..self as u8 {
            (x, y) = (-y, x);
        }
        (HAlign::from_sign(x), VAlign::from_sign(y))
    }

    /// The flips that, applied before this rotation, equal `flips` (horizontal, vertical)
    /// applied after it: a quarter turn exchanges the two mirror axes.
    pub fn flips_before(self, (h, v): (bool, bool)) -> (bool, bool) {
        if self.swaps_sides() { (v, h) } else { (h, v) }
    }
}

/// A non-negative decimal kept in hundredths (sigma 1.5 is `Hundredths(150)`), so it is exact
/// in URLs, on the wire and in canonical forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hundredths(pub u16);

impl Hundredths {
    /// One.
    pub const ONE: Hundredths = Hundredths(100);

    /// `value` rounded to hundredths; `None` when negative, not finite or over 655.35.
    pub fn from_f64(value: f64) -> Option<Hundredths> {
        let h = (value * 100.0).round();
        // `as` saturates (and maps NaN to 0), so the conversion is safe before the check.
        (value.is_finite() && (0.0..=f64::from(u16::MAX)).contains(&h))
            .then_some(Hundredths(h as u16))
    }

    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 100.0
    }

    /// Twice the value, saturating.
    pub fn doubled(self) -> Hundredths {
        Hundredths(self.0.saturating_mul(2))
    }
}

impl std::fmt::Display for Hundredths {
    /// The shortest decimal form: `2`, `1.5`, `0.25`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (int, frac) = (self.0 / 100, self.0 % 100);
        match frac {
            0 => write!(f, "{int}"),
            f2 if f2 % 10 == 0 => write!(f, "{int}.{}", f2 / 10),
            f2 => write!(f, "{int}.{f2:02}"),
        }
    }
}

/// A fraction of an image side in ten-thousandths, 0 to 1 (`Fraction(5000)` is a half), so it
/// is exact in URLs, on the wire and in canonical forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fraction(pub u16);

impl Fraction {
    /// The whole side.
    pub const ONE: Fraction = Fraction(10_000);

    /// `value` (0 to 1) rounded to ten-thousandths; `None` outside that range or not finite.
    pub fn from_f64(value: f64) -> Option<Fraction> {
        (value.is_finite() && (0.0..=1.0).contains(&value))
            .then(|| Fraction((value * 10_000.0).round() as u16))
    }

    /// The value as a float.
    pub fn as_f64(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }

    /// One minus this fraction: the same place seen from the other side.
    pub fn complement(self) -> Fraction {
        Fraction(Fraction::ONE.0.saturating_sub(self.0))
    }
}

impl std::fmt::Display for Fraction {
    /// The shortest decimal form, always with a point so it never reads as pixels: `0.5`,
    /// `0.0125`, `1.0`, `0.0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (int, frac) = (self.0 / 10_000, self.0 % 10_000);
        let digits = format!("{frac:04}");
        let digits = digits.trim_end_matches('0');
        write!(f, "{int}.{}", if digits.is_empty() { "0" } else { digits })
    }
}

/// A length or position along one side of the source: pixels, or a fraction of the side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    /// Pixels of the upright source (at most [`MAX_CROP_PIXELS`]).
    Pixels(u32),
    /// A fraction of the upright source's side.
    Fraction(Fraction),
}

impl Span {
    /// The whole side.
    pub const FULL: Span = Span::Fraction(Fraction::ONE);

    /// The span in pixels on a side of `side` pixels (fractions are not rounded).
    pub fn on(self, side: u32) -> f64 {
        match self {
            Span::Pixels(p) => f64::from(p),
            Span::Fraction(f) => f.as_f64() * f64::from(side),
        }
    }
}

/// Largest pixel coordinate or size a manual crop may name (sources are at most this big on a
/// side: see the sidecar's limits, and JPEG's own).
pub const MAX_CROP_PIXELS: u32 = 65_535;

/// Where a manual [`Crop`] lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CropAt {
    /// Its top-left corner is at (left, top) (thumbor `AxB:CxD`, ImageKit `cm-extract,x-,y-`).
    Offset(Span, Span),
    /// It is placed by this anchor (imgproxy `crop:W:H:GRAVITY`, ImageKit `cm-extract,fo-`).
    Anchor(HAlign, VAlign),
}

/// A manual crop: a region of the upright source cut out before the image is fitted into the
/// box. The region is clamped to the image (thumbor and imgproxy do the same); one wholly
/// outside it is a 400, since nothing would be left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    /// Width of the region (never zero; [`Span::FULL`] is the whole width).
    pub width: Span,
    /// Height of the region (never zero; [`Span::FULL`] is the whole height).
    pub height: Span,
    /// Where the region lies.
    pub at: CropAt,
}

/// Why a crop's text form ([`Crop`]'s `Display`) did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CropSpecError {
    /// Not `W,H,LEFT,TOP` or `W,H,ANCHOR` with valid spans (non-zero sizes, pixels up to
    /// [`MAX_CROP_PIXELS`], fractions up to 1).
    #[error("malformed crop {0:?}: expected W,H,LEFT,TOP or W,H,ANCHOR")]
    Malformed(String),
}

impl std::fmt::Display for Span {
    /// Pixels as an integer, fractions always with a decimal point (`10`, `0.25`, `1.0`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Span::Pixels(p) => write!(f, "{p}"),
            Span::Fraction(fr) => write!(f, "{fr}"),
        }
    }
}

impl std::str::FromStr for Span {
    type Err = ();

    /// The inverse of `Display`.
    fn from_str(s: &str) -> Result<Span, ()> {
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        match s.split_once('.') {
            Some((int, frac)) if digits(int) && digits(frac) && frac.len() <= 4 => {
                let v: f64 = s.parse().map_err(|_| ())?;
                Fraction::from_f64(v).map(Span::Fraction).ok_or(())
            }
            None if digits(s) && s.len() <= 5 => s
                .parse()
                .ok()
                .filter(|&p| p <= MAX_CROP_PIXELS)
                .map(Span::Pixels)
                .ok_or(()),
            _ => Err(()),
        }
    }
}

/// Names of the nine anchors in crop texts: `left-top` … `right-bottom`.
fn anchor_name(h: HAlign, v: VAlign) -> String {
    format!("{h:?}-{v:?}").to_ascii_lowercase()
}

/// Canvas added around the padded box, or around the image without [`Transform::pad`], in
/// output pixels (imagor's `GxH:IxJ`, imgproxy's `pd`): left, top, right, bottom, each at most
/// [`MAX_DIMENSION`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Padding {
    /// Left padding.
    pub left: u32,
    /// Top padding.
    pub top: u32,
    /// Right padding.
    pub right: u32,
    /// Bottom padding.
    pub bottom: u32,
}

impl Padding {
    /// Whether every side is within [`MAX_DIMENSION`].
    pub fn is_bounded(&self) -> bool {
        [self.left, self.top, self.right, self.bottom]
            .iter()
            .all(|&side| side <= MAX_DIMENSION)
    }
}

impl std::fmt::Display for Padding {
    /// `LEFT,TOP,RIGHT,BOTTOM`: the form used on the wire.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.left, self.top, self.right, self.bottom
        )
    }
}

impl std::str::FromStr for Padding {
    type Err = ();

    /// The inverse of `Display`: four decimal numbers, each at most [`MAX_DIMENSION`].
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut sides = s.split(',').map(|v| {
            (!v.is_empty() && v.len() <= 5 && v.bytes().all(|b| b.is_ascii_digit()))
                .then(|| v.parse::<u32>().ok())
                .flatten()
                .filter(|&n| n <= MAX_DIMENSION)
        });
        let mut next = || sides.next().flatten().ok_or(());
        let p = Padding {
            left: next()?,
            top: next()?,
            right: next()?,
            bottom: next()?,
        };
        match sides.next() {
            None => Ok(p),
            Some(_) => Err(()),
        }
    }
}

impl std::fmt::Display for Crop {
    /// `W,H,LEFT,TOP` or `W,H,ANCHOR` (e.g. `100,0.5,10,20`, `0.5,0.5,center-middle`): the
    /// form used on the wire and in canonical forms.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},", self.width, self.height)?;
        match self.at {
            CropAt::Offset(l, t) => write!(f, "{l},{t}"),
            CropAt::Anchor(h, v) => f.write_str(&anchor_name(h, v)),
        }
    }
}

impl std::str::FromStr for Crop {
    type Err = CropSpecError;

    /// The inverse of `Display`.
    fn from_str(s: &str) -> Result<Crop, CropSpecError> {
        let bad = || CropSpecError::Malformed(s.chars().take(64).collect());
        let parts: Vec<&str> = s.split(',').collect();
        let span = |p: &str| p.parse::<Span>().map_err(|()| bad());
        let size = |p: &str| {
            span(p).and_then(|s| match s {
                Span::Pixels(0) | Span::Fraction(Fraction(0)) => Err(bad()),
                s => Ok(s),
            })
        };
        let at = match parts.as_slice() {
            [_, _, l, t] => CropAt::Offset(span(l)?, span(t)?),
            [_, _, anchor] => {
                let mut found = None;
                for h in [HAlign::Left, HAlign::Center, HAlign::Right] {
                    for v in [VAlign::Top, VAlign::Middle, VAlign::Bottom] {
                        if anchor_name(h, v) == *anchor {
                            found = Some(CropAt::Anchor(h, v));
                        }
                    }
                }
                found.ok_or_else(bad)?
            }
            _ => return Err(bad()),
        };
        Ok(Crop {
            width: size(parts[0])?,
            height: size(parts[1])?,
            at,
        })
    }
}

/// A focal region of the upright source (thumbor's `focal(LxT:RxB)`; a point when its edges
/// meet, as imgproxy's `g:fp:X:Y`): the fill crop is centred on its centre as far as the image
/// allows, instead of being placed by the alignment. Edges are in source coordinates, before
/// the manual [`Crop`]; the four share a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Focus {
    /// Left edge.
    pub left: Span,
    /// Top edge.
    pub top: Span,
    /// Right edge (not left of `left`).
    pub right: Span,
    /// Bottom edge (not above `top`).
    pub bottom: Span,
}

impl Focus {
    /// The point (x, y) given as fractions of the source.
    pub fn point(x: Fraction, y: Fraction) -> Focus {
        Focus {
            left: Span::Fraction(x),
            top: Span::Fraction(y),
            right: Span::Fraction(x),
            bottom: Span::Fraction(y),
        }
    }

    /// The point, as fractions of the source, when the focus is one.
    pub fn as_point(self) -> Option<(Fraction, Fraction)> {
        match (self.left, self.top, self.right, self.bottom) {
            (Span::Fraction(x), Span::Fraction(y), Span::Fraction(r), Span::Fraction(b))
                if (x, y) == (r, b) =>
            {
                Some((x, y))
            }
            _ => None,
        }
    }

    /// The centre in pixels of a `width`×`height` source.
    pub fn centre(self, width: u32, height: u32) -> (f64, f64) {
        (
            (self.left.on(width) + self.right.on(width)) / 2.0,
            (self.top.on(height) + self.bottom.on(height)) / 2.0,
        )
    }
}

impl std::fmt::Display for Focus {
    /// `LEFT,TOP,RIGHT,BOTTOM`: the form used on the wire.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{},{},{},{}",
            self.left, self.top, self.right, self.bottom
        )
    }
}

impl std::str::FromStr for Focus {
    type Err = CropSpecError;

    /// The inverse of `Display`; the edges must share a unit and be in order.
    fn from_str(s: &str) -> Result<Focus, CropSpecError> {
        let bad = || CropSpecError::Malformed(s.chars().take(64).collect());
        let spans = s
            .split(',')
            .map(|p| p.parse::<Span>().map_err(|()| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        let [left, top, right, bottom] = spans[..] else {
            return Err(bad());
        };
        let ordered = |a: Span, b: Span| match (a, b) {
            (Span::Pixels(a), Span::Pixels(b)) => a <= b,
            (Span::Fraction(a), Span::Fraction(b)) => a <= b,
            _ => false,
        };
        let same_unit = std::mem::discriminant(&left) == std::mem::discriminant(&top);
        if !(ordered(left, right) && ordered(top, bottom) && same_unit) {
            return Err(bad());
        }
        Ok(Focus {
            left,
            top,
            right,
            bottom,
        })
    }
}

impl Rotation {
    /// Where a point of the image, in fractions (x, y), lands once the image is rotated:
    /// rotating 90° clockwise takes the top-left corner (0, 0) to the top-right (1, 0).
    pub fn apply_to_point(self, (mut x, mut y): (Fraction, Fraction)) -> (Fraction, Fraction) {
        for _ in 0..self as u8 {
            (x, y) = (y.complement(), x);
        }
        (x, y)
    }
}

/// An unsharp mask: the image plus `amount` times its difference from a Gaussian blur of
/// `sigma`, computed on luminance so colours do not fringe (like libvips' sharpen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharpen {
    /// Sigma of the blur, in pixels: 0 < sigma ≤ [`MAX_SIGMA`].
    pub sigma: Hundredths,
    /// Strength: 0 < amount ≤ [`MAX_SHARPEN_AMOUNT`]; 1 is the usual unsharp mask.
    pub amount: Hundredths,
}

/// Largest [`Trim::threshold`]: the difference of 8-bit channels is at most 255.
pub const MAX_TRIM_THRESHOLD: u8 = u8::MAX;

/// Where [`Trim`] takes the colour of the border from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrimColor {
    /// The top-left pixel (thumbor's and imgproxy's default).
    #[default]
    TopLeft,
    /// The bottom-right pixel (thumbor `trim:bottom-right`).
    BottomRight,
    /// This opaque colour (imgproxy `t:THRESHOLD:RRGGBB`).
    Color(Color),
}

/// Trim of uniform borders: the rows and columns at the edges whose every pixel is within
/// `threshold` of the border colour are cut away, on the upright source, before anything
/// else. A pixel is within it when no channel of it, alpha included, premultiplied, differs
/// from the colour's by more than `threshold` (libvips' `find_trim` rule, which imgproxy,
/// imagor and ImageKit use): a fully transparent border is trimmed whatever its colour. An
/// image that is all border is left whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// Largest channel difference still counted as border, 0–[`MAX_TRIM_THRESHOLD`].
    pub threshold: u8,
    /// The border colour.
    pub color: TrimColor,
    /// Cut as much from the right as from the left (the smaller of the two), so the content
    /// stays where it was horizontally (imgproxy's `equal_hor`).
    pub equal_hor: bool,
    /// Likewise from the top and the bottom (imgproxy's `equal_ver`).
    pub equal_ver: bool,
}

impl std::fmt::Display for Trim {
    /// `THRESHOLD,COLOR[,equal-hor][,equal-ver]`, COLOR being `top-left`, `bottom-right` or
    /// `RRGGBB` (e.g. `10,top-left`, `0,ff0000,equal-hor`): the form used on the wire.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},", self.threshold)?;
        match self.color {
            TrimColor::TopLeft => f.write_str("top-left")?,
            TrimColor::BottomRight => f.write_str("bottom-right")?,
            TrimColor::Color(c) => write!(f, "{:02x}{:02x}{:02x}", c.r, c.g, c.b)?,
        }
        if self.equal_hor {
            f.write_str(",equal-hor")?;
        }
        if self.equal_ver {
            f.write_str(",equal-ver")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Trim {
    type Err = CropSpecError;

    /// The inverse of `Display`.
    fn from_str(s: &str) -> Result<Trim, CropSpecError> {
        let bad = || CropSpecError::Malformed(s.chars().take(64).collect());
        let mut parts = s.split(',');
        let threshold = parts.next().ok_or_else(bad)?;
        if threshold.is_empty() || !threshold.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let threshold = threshold.parse::<u8>().map_err(|_| bad())?;
        let color = match parts.next().ok_or_else(bad)? {
            "top-left" => TrimColor::TopLeft,
            "bottom-right" => TrimColor::BottomRight,
            hex if hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                TrimColor::Color(Color::from_hex(hex).ok_or_else(bad)?)
            }
            _ => return Err(bad()),
        };
        let mut trim = Trim {
            threshold,
            color,
            equal_hor: false,
            equal_ver: false,
        };
        for p in parts {
            match p {
                "equal-hor" if !trim.equal_hor && !trim.equal_ver => trim.equal_hor = true,
                "equal-ver" if !trim.equal_ver => trim.equal_ver = true,
                _ => return Err(bad()),
            }
        }
        Ok(trim)
    }
}

/// What to do to the source image. `Default` is "re-encode as is". The module documentation
/// gives the order in which the fields apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transform {
    /// Target width in pixels; 0 derives it from the height and the source aspect ratio.
    pub width: u32,
    /// Target height in pixels; 0 derives it from the width and the source aspect ratio.
    pub height: u32,
    /// How the source is fitted into the box.
    pub fit: Fit,
    /// Allow the output to be larger than the source. Off by default.
    pub upscale: bool,
    /// Mirror left to right.
    pub flip_h: bool,
    /// Mirror top to bottom.
    pub flip_v: bool,
    /// Horizontal anchor when a fill ([`Fit::Fill`], [`Fit::FillClamped`]) crops.
    pub h_align: HAlign,
    /// Vertical anchor when a fill ([`Fit::Fill`], [`Fit::FillClamped`]) crops.
    pub v_align: VAlign,
    /// Output format; by default the source's.
    pub format: OutputFormat,
    /// Encoder quality 1–100 for lossy formats; `None` uses the format's default (the sidecar's
    /// configuration).
    pub quality: Option<u8>,
    /// Rotation of the result, clockwise, after everything but encoding.
    pub rotation: Rotation,
    /// Convert to grayscale (Rec. 709 luma weights; alpha is kept).
    pub grayscale: bool,
    /// Gaussian blur of this sigma in pixels (0 < sigma ≤ [`MAX_SIGMA`]).
    pub blur: Option<Hundredths>,
    /// Unsharp mask.
    pub sharpen: Option<Sharpen>,
    /// Extend the image to the requested box (each requested side) with the background,
    /// placed by the alignment: letterboxing.
    pub pad: bool,
    /// The colour under the image: padding is filled with it and transparency is composited
    /// onto it. Never fully transparent (that is `None`: padding stays transparent where the
    /// format has alpha, white in JPEG).
    pub background: Option<Color>,
    /// Region of the upright source cut out first (see [`Crop`]).
    pub crop: Option<Crop>,
    /// Where the fill crop centres (see [`Focus`]); the alignment is then unused.
    pub focus: Option<Focus>,
    /// JPEG output as a progressive (multi-scan) JPEG (`Some(true)`) or a baseline one
    /// (`Some(false)`); `None` follows the sidecar's configuration. Other formats ignore it.
    pub progressive: Option<bool>,
    /// Largest encoded size in bytes: a lossy output ([`Format::is_lossy`]) is encoded again at
    /// lower qualities (a bounded binary search, down to [`MAX_BYTES_MIN_QUALITY`]) until it
    /// fits, and is the smallest one tried when none does; lossless outputs are left as they
    /// are, as thumbor and imgproxy do. `None`: no budget (never `Some(0)`).
    pub max_bytes: Option<u32>,
    /// Uniform borders cut from the upright source first (see [`Trim`]).
    pub trim: Option<Trim>,
    /// Smart crop: the fill crop goes where an attention heuristic (edges, skin tones,
    /// saturation, as libvips' `attention`) scores highest, instead of following the
    /// alignment; a [`Focus`] still wins over it. Only the fills crop, so other fits
    /// ignore it.
    pub smart: bool,
    /// Embed the source's ICC profile in the output and leave the pixels in its colour space,
    /// instead of converting them to sRGB and carrying no profile (the default). Only JPEG,
    /// PNG and WebP outputs can carry a profile; AVIF and GIF outputs asked to are refused.
    pub keep_icc: bool,
    /// Turn the box a quarter when one side of both is given and its orientation (landscape or
    /// portrait) differs from the upright source's (thumbor `adaptive-fit-in`); only
    /// [`Fit::FitIn`] and [`Fit::Cover`] read it.
    pub adaptive: bool,
    /// Scale the fitted image by this factor (thumbor `proportion(P)`), 0 < P ≤
    /// [`MAX_PROPORTION`]: the output size of step 3, each side rounded, at least 1; padding
    /// still pads to the box.
    pub proportion: Option<Hundredths>,
    /// Canvas added around what step 6 pads, never all zero: with [`Transform::pad`], around
    /// the padded box, the image placed in the box as `pad` places it (imagor's `GxH:IxJ`,
    /// which it applies with `fill`; imgproxy's `pd` with `ex:1`); without it, around the
    /// image as it comes out of the resize, the crop and the effects, whatever its size
    /// (imgproxy's `pd`). Filled like `pad`'s area: the background, else transparent (white in
    /// JPEG).
    pub padding: Option<Padding>,
    /// Effects applied in order after sharpening, before the padding (see [`crate::effect`]).
    pub effects: Effects,
    /// Effects applied in order after the rotation, on the padded image (thumbor's filters
    /// given after `fill`, `background_color` or `rotate`).
    pub final_effects: Effects,
}

/// The lowest quality the [`Transform::max_bytes`] search tries, as thumbor and imgproxy (which
/// stop there): below it images fall apart faster than they shrink.
pub const MAX_BYTES_MIN_QUALITY: u8 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_compose_and_move_anchors() {
        assert_eq!(Rotation::from_degrees(90), Some(Rotation::Cw90));
        assert_eq!(Rotation::from_degrees(-90), Some(Rotation::Cw270));
        assert_eq!(Rotation::from_degrees(450), Some(Rotation::Cw90));
        assert_eq!(Rotation::from_degrees(360), Some(Rotation::None));
        assert_eq!(Rotation::from_degrees(45), None);
        for r in Rotation::ALL {
            assert_eq!(Rotation::from_degrees(i64::from(r.degrees())), Some(r));
            assert_eq!(r.inverse().inverse(), r);
            for h in [HAlign::Left, HAlign::Center, HAlign::Right] {
                for v in [VAlign::Top, VAlign::Middle, VAlign::Bottom] {
                    let a = (h, v);
                    assert_eq!(r.inverse().apply_to_anchor(r.apply_to_anchor(a)), a);
                }
            }
        }
        let top_left = (HAlign::Left, VAlign::Top);
        assert_eq!(
            Rotation::Cw90.apply_to_anchor(top_left),
            (HAlign::Right, VAlign::Top)
        );
        assert_eq!(
            Rotation::Cw180.apply_to_anchor(top_left),
            (HAlign::Right, VAlign::Bottom)
        );
        assert_eq!(
            Rotation::Cw270.apply_to_anchor((HAlign::Left, VAlign::Middle)),
            (HAlign::Center, VAlign::Bottom)
        );
        assert_eq!(Rotation::Cw90.flips_before((true, false)), (false, true));
        assert_eq!(Rotation::Cw180.flips_before((true, false)), (true, false));
        assert_eq!(HAlign::Left.mirrored(), HAlign::Right);
        assert_eq!(VAlign::Middle.mirrored(), VAlign::Middle);
    }

    #[test]
    fn points_turn_with_the_image_and_crops_have_a_text_form() {
        let (zero, one) = (Fraction(0), Fraction::ONE);
        assert_eq!(Rotation::Cw90.apply_to_point((zero, zero)), (one, zero));
        assert_eq!(
            Rotation::Cw270.apply_to_point((Fraction(2500), Fraction(1000))),
            (Fraction(1000), Fraction(7500))
        );
        for r in Rotation::ALL {
            let p = (Fraction(1234), Fraction(8765));
            assert_eq!(r.inverse().apply_to_point(r.apply_to_point(p)), p);
        }
        for (text, ok) in [
            ("10,0.5,3,4", true),
            ("10,20,left-bottom", true),
            ("1.0,1,0.0,0", true),
            ("0,5,1,1", false),
            ("5,0.0,1,1", false),
            ("5,5,1", false),
            ("5,5,1,2,3", false),
            ("1.5,5,0,0", false),
            ("65536,5,0,0", false),
            ("0.12345,5,0,0", false),
            ("-1,5,0,0", false),
        ] {
            let parsed = text.parse::<Crop>();
            assert_eq!(parsed.is_ok(), ok, "{text}: {parsed:?}");
            if let Ok(c) = parsed {
                assert_eq!(c.to_string(), text);
            }
        }
        for (text, ok) in [
            ("1,2,3,4", true),
            ("0.5,0.25,0.5,0.25", true),
            ("3,2,1,4", false),
            ("0.5,2,0.5,2", false),
            ("0.5,0.5,0.5", false),
        ] {
            let parsed = text.parse::<Focus>();
            assert_eq!(parsed.is_ok(), ok, "{text}: {parsed:?}");
            if let Ok(f) = parsed {
                assert_eq!(f.to_string(), text);
            }
        }
        assert_eq!(Fraction(5000).to_string(), "0.5");
        assert_eq!(Fraction(125).to_string(), "0.0125");
        assert_eq!(Fraction::ONE.to_string(), "1.0");
    }

    #[test]
    fn trims_have_a_text_form() {
        for (text, ok) in [
            ("10,top-left", true),
            ("0,bottom-right,equal-hor,equal-ver", true),
            ("255,ff0000,equal-ver", true),
            ("256,top-left", false),
            ("-1,top-left", false),
            ("10", false),
            ("10,f00", false),
            ("10,top-left,equal-ver,equal-hor", false),
            ("10,top-left,equal-hor,equal-hor", false),
            ("10,top-left,", false),
        ] {
            let parsed = text.parse::<Trim>();
            assert_eq!(parsed.is_ok(), ok, "{text}: {parsed:?}");
            if let Ok(t) = parsed {
                assert_eq!(t.to_string(), text);
            }
        }
    }

    #[test]
    fn output_formats_resolve_against_the_source() {
        let never_asked = || -> bool { panic!("transparency does not decide this") };
        for source in Format::ALL {
            assert_eq!(OutputFormat::Source.resolve(source, never_asked), source);
            assert_eq!(
                OutputFormat::Fixed(Format::Gif).resolve(source, never_asked),
                Format::Gif
            );
        }
        let compatible =
            |source, transparent: bool| OutputFormat::Compatible.resolve(source, || transparent);
        assert_eq!(compatible(Format::Jpeg, false), Format::Jpeg);
        assert_eq!(compatible(Format::Png, true), Format::Png);
        assert_eq!(compatible(Format::Gif, true), Format::Gif);
        assert_eq!(
            compatible(Format::Webp, true),
            Format::Png,
            "a transparent WebP is never flattened into a JPEG"
        );
        assert_eq!(compatible(Format::Webp, false), Format::Jpeg);
        for f in Format::ALL {
            assert_eq!(Format::from_name(f.name()), Some(f));
            assert!(f.content_type().ends_with(f.name()));
        }
    }

    #[test]
    fn hundredths_are_exact_decimals() {
        assert_eq!(Hundredths::from_f64(1.5), Some(Hundredths(150)));
        assert_eq!(Hundredths::from_f64(0.004), Some(Hundredths(0)));
        assert_eq!(Hundredths::from_f64(-1.0), None);
        assert_eq!(Hundredths::from_f64(f64::NAN), None);
        assert_eq!(Hundredths::from_f64(1e9), None);
        for (h, s) in [
            (200, "2"),
            (150, "1.5"),
            (25, "0.25"),
            (5, "0.05"),
            (10_000, "100"),
        ] {
            assert_eq!(Hundredths(h).to_string(), s);
            assert_eq!(
                Hundredths::from_f64(s.parse().unwrap()),
                Some(Hundredths(h))
            );
        }
    }
}
