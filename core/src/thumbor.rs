//! The thumbor / imagor path grammar: parse ⇄ generate, and its mapping onto [`Transform`].
//!
//! ```text
//! HASH|unsafe/[meta/][trim[:top-left|:bottom-right][:TOL]/][AxB:CxD/]
//!   [fit-in|full-fit-in|adaptive-fit-in|adaptive-full-fit-in/][stretch/][-][W]x[-][H]/
//!   [GxH[:IxJ]/][left|right|center/][top|middle|bottom/][smart/][filters:NAME(ARGS)[:NAME(ARGS)]…/]IMAGE
//! ```
//!
//! Parsing consumes optional segments in that order; a segment is an option only when another
//! segment follows it, so the last segment always belongs to IMAGE. Filter arguments may contain
//! `/` and `:` inside balanced parentheses. IMAGE is everything left; `b64:` introduces a
//! base64url-encoded image path, and `%2F` keeps a literal keyword out of the grammar.
//!
//! `AxB:CxD/` is a manual crop (left, top, right, bottom) of the upright source, before
//! anything else: whole pixels, or, when all four are at most 1, fractions of the sides
//! (imagor's rule; `0x0:1x1` is the whole image). Like thumbor, pixmesh clamps the region to
//! the image and reads `0x0:0x0` as no crop; unlike thumbor, which then ignores the crop, a
//! region with its right or bottom edge not past its left or top one is 400, and one wholly
//! outside the image is 400 once the image's size is known. Crops other grammars make that
//! thumbor cannot say (placed by gravity, mixed units) have the canonical-only form
//! `filters:crop(W,H,AT)` (see [`crate::transform::Crop`]), which URLs may not use.
//!
//! `trim[:top-left|:bottom-right][:TOL]/` cuts uniform borders of the colour of that corner
//! (top-left by default) from the upright source, before the crop (see
//! [`crate::transform::Trim`]). TOL (0–255, default 0) is the largest channel difference still
//! counted as border, libvips' threshold as imagor uses it; thumbor measures a Euclidean RGB
//! distance instead, which for a grey step of N is N·√3. Trims thumbor cannot say (a given
//! colour, equal sides, from imgproxy) have the canonical-only form `filters:trim(…)`, which
//! URLs may not use.
//!
//! `smart/` places the fill crop by pixmesh's attention heuristic (edges, skin tones and
//! saturation, like libvips' `attention`, which imagor uses), where thumbor runs face and
//! feature detectors; a `focal(…)` filter still wins over it, as in thumbor.
//!
//! Filters mapped onto the transform, with where pixmesh's definition had to be chosen:
//!
//! - `keep_icc()`: pixmesh's own filter: the output carries the source's ICC profile and its
//!   pixels are left in that colour space (JPEG, PNG and WebP outputs only). Without it the
//!   pixels are converted to sRGB and no profile is written, which is what imagor's
//!   `strip_icc()` asks for: accepted, it changes nothing (with `keep_icc()` it is 400).
//!
//! - `focal(LxT:RxB)`: a focal region of the source (pixels, or fractions when all four are at
//!   most 1, as in imagor); a fill crop is centred on its centre as far as the image allows,
//!   instead of following the alignment. thumbor weighs several focal points; pixmesh takes one
//!   (`focal` twice is 501). Coordinates are the source's, before a manual crop, as in thumbor.
//!
//! - `rotate(A)`: A a multiple of 90, counter-clockwise as in thumbor (PIL) and imagor; it turns
//!   the result, so `fit-in/300x200/filters:rotate(90)` is at most 200×300. Repeated, the angles
//!   add up.
//! - `grayscale()`.
//! - `blur(RADIUS[,SIGMA])`: a Gaussian. thumbor convolves with a kernel truncated at RADIUS, of
//!   SIGMA (default RADIUS); pixmesh uses sigma RADIUS/2 (imagor's rule: the Gaussian's ±2σ
//!   spans the radius), or SIGMA when that is smaller, since the truncation then hardly matters.
//!   RADIUS ≤ 200, SIGMA ≤ 100.
//! - `sharpen(AMOUNT,RADIUS[,LUMINANCE_ONLY])` (thumbor): an unsharp mask of sigma RADIUS and
//!   strength AMOUNT (≤ 10), on luminance; `LUMINANCE_ONLY` false (sharpen each channel) is 501.
//!   `sharpen(SIGMA)` (imagor's form) is sigma SIGMA, amount 1.
//! - `fill(COLOR[,FILL_TRANSPARENT])`: pads the result to the requested box with COLOR (hex
//!   `rgb`/`rrggbb`/`rrggbbaa` or a CSS name; `transparent`/`none` pads with transparency) and
//!   fills transparent areas with it, as imagor does (thumbor's `FILL_TRANSPARENT` false keeps
//!   them: 501). thumbor and imagor centre the image; pixmesh places it by the alignment
//!   segments (`left`, `top`, …), which URLs without them do not notice. `auto` and `blur` are
//!   501. imagor's padding `GxH:IxJ/` surrounds the box `fill` pads to, and is ignored without
//!   `fill`, as in imagor. Padding around the image whatever its size (imgproxy's `pd`), which
//!   imagor cannot say, has the canonical-only form `GxH:IxJ/` with `filters:padding(image)`,
//!   which URLs may not use.
//! - `background_color(COLOR)`: composites transparency onto COLOR.
//! - `brightness(N)`, `contrast(N)`, `saturation(N)`, `rgb(R,G,B)`, `noise(N)` and
//!   `round_corner(A[|B],R,G,B[,TRANSPARENT])`: thumbor's arithmetic (see [`crate::effect`]); N, R, G, B whole numbers
//!   from −100 to 100 (noise 0 to 100, radii 1 to 16384, colour channels 0 to 255), else 400.
//!   Where pixmesh differs: `saturation(N)` scales by 1 + N/100, the −100…100 % thumbor's and
//!   imagor's documentation describe (thumbor's code multiplies by N itself, so
//!   `saturation(40)` is 40×, not +40 %); `noise` is a fixed pseudo-random sequence
//!   (thumbor's is C's `rand()`, unseeded or seeded by `noise(N,SEED)`, whose SEED pixmesh
//!   accepts and ignores), so renditions are reproducible. brightness, contrast, rgb,
//!   round_corner (anti-aliasing and quirks included) and saturation at a given factor are
//!   thumbor's byte for byte (checked against thumbor 7.8.0's C extensions).
//! - `strip_exif()`, `strip_icc()`, `strip_metadata()`: accepted and change nothing (outputs
//!   carry no metadata); `strip_icc()` and `strip_metadata()` with `keep_icc()` are 400.
//! - `proportion(P)`: the fitted image scaled by P (0.01 to 10; thumbor: any), each side
//!   rounded; `fill` still pads to the box. thumbor scales the image as the filters before
//!   left it; pixmesh scales before every effect, so `proportion` after `fill`,
//!   `background_color`, `blur`, `sharpen`, `noise` or `round_corner`, or twice, is 501.
//! - `label` is 501: no font with a licence pixmesh can ship.
//! - `max_bytes(N)`: at most N bytes (N ≥ 1): a JPEG, WebP or AVIF result is encoded again at
//!   lower qualities until it fits (see [`Transform::max_bytes`]). When even the lowest quality
//!   does not fit, pixmesh sends the smallest result, as imgproxy does (thumbor sends its first,
//!   unreduced one).
//! - `progressive(true|false)`: a progressive or a baseline JPEG; without it, the sidecar's
//!   configured default (thumbor's `PROGRESSIVE_JPEG` setting). pixmesh's own filter: thumbor
//!   and imagor have no URL for it (and thumbor skips filters it does not know).
//! - `format(NAME)`: `jpeg`/`jpg`, `png`, `webp`, `gif` (the first frame) or `avif`. Without it, the
//!   source's format; on a route with `auto_format` (thumbor's `AUTO_WEBP`), WebP for clients
//!   whose `Accept` lists it (see [`crate::accept`]). thumbor leaves animated GIFs out of
//!   `AUTO_WEBP`; pixmesh, which keeps only their first frame, does not.
//!
//! - `watermark(IMAGE,X,Y,ALPHA[,W_RATIO[,H_RATIO]])`: an image from storage, its path resolved
//!   like the source's (see `parse_watermark` for the arguments); composited onto the final
//!   image, so `rotate`, `fill`, `background_color` and the effects after it are 501 (thumbor
//!   would apply them to the watermark too), as is a second `watermark`.
//!
//! Filters apply in the order given, each on the image as the one before left it, as in
//! thumbor: effects (grayscale, blur, sharpen and the colour filters) before `fill` or
//! `background_color` run before the padding (the first grayscale, blur and sharpen in the
//! transform's own fields, everything else in [`Transform::effects`], in order), effects
//! after them on the padded, rotated image ([`Transform::final_effects`]). A `rotate` after
//! such effects turns their corners with it. A second `fill` or `background_color` after an
//! effect on the padded image is 501 (pixmesh pads once). `rotate` before `fill` pads the box
//! and then turns it, as `fill` before `rotate` does (thumbor pads the turned image to the
//! unturned box, cropping it).
//!
//! The round-trip table in the tests is this module's specification.

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};

use std::fmt::Write;

use crate::grammar::{
    Expiry, FormatChoice, Target, invalid, parse_amount, parse_blur_radius, parse_color,
    parse_hundredths, parse_rotation, parse_sigma, parse_timestamp, sharpen, unsupported,
};
use crate::transform::{
    Color, Crop as CropRegion, CropAt, Effect, Effects, Fit, Focus, Format, Fraction, HAlign,
    Hundredths, MAX_CROP_PIXELS, MAX_DIMENSION, MAX_PROPORTION, OutputFormat, Rotation, Span,
    Transform, TrimColor, VAlign,
};
use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};

/// Most filters one URL may chain.
pub const MAX_FILTERS: usize = 32;

/// How [`ThumborPath::from_transform`] writes [`OutputFormat::Compatible`] in `format(…)`.
const COMPATIBLE: &str = "compatible";

pub use crate::grammar::GrammarError;

/// The first segment: `unsafe` or a URL signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// `unsafe/`: an unsigned URL, accepted only where the route allows it.
    Unsafe,
    /// The signature over everything after `HASH/`.
    Hash(String),
}

impl Signature {
    /// The signature text; `None` for `unsafe`.
    pub fn hash(&self) -> Option<&str> {
        match self {
            Signature::Unsafe => None,
            Signature::Hash(h) => Some(h),
        }
    }
}

/// Where `trim` samples the border colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrimFrom {
    /// `trim:top-left` (the default).
    TopLeft,
    /// `trim:bottom-right`.
    BottomRight,
}

/// `trim[:top-left|:bottom-right][:TOL]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trim {
    /// Explicit sampling corner, if given.
    pub from: Option<TrimFrom>,
    /// Colour tolerance, if given.
    pub tolerance: Option<u8>,
}

impl Trim {
    /// The transform's trim: TOL is the threshold (0 without one).
    pub fn to_transform(self) -> crate::transform::Trim {
        crate::transform::Trim {
            threshold: self.tolerance.unwrap_or(0),
            color: match self.from {
                Some(TrimFrom::BottomRight) => TrimColor::BottomRight,
                Some(TrimFrom::TopLeft) | None => TrimColor::TopLeft,
            },
            equal_hor: false,
            equal_ver: false,
        }
    }

    /// The `trim` segment of a trim; `None` when thumbor cannot say it (a given colour, equal
    /// sides).
    pub fn from_transform(t: crate::transform::Trim) -> Option<Trim> {
        let from = match t.color {
            TrimColor::TopLeft => None,
            TrimColor::BottomRight => Some(TrimFrom::BottomRight),
            TrimColor::Color(_) => return None,
        };
        (!t.equal_hor && !t.equal_ver).then_some(Trim {
            from,
            tolerance: (t.threshold > 0).then_some(t.threshold),
        })
    }
}

/// Manual crop `AxB:CxD`: left, top, right, bottom in pixels or, when all are ≤ 1, ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    /// Left edge.
    pub left: f64,
    /// Top edge.
    pub top: f64,
    /// Right edge.
    pub right: f64,
    /// Bottom edge.
    pub bottom: f64,
}

impl Crop {
    /// The region of the source this crop keeps: `None` for `0x0:0x0` (thumbor's "no crop").
    /// When all four values are at most 1 they are fractions of the source's sides (imagor's
    /// rule), otherwise whole pixels; the right and bottom edges must be past the left and top
    /// ones (thumbor skips such crops; pixmesh says so: 400).
    pub fn to_region(&self) -> Result<Option<CropRegion>, GrammarError> {
        let edges = [self.left, self.top, self.right, self.bottom];
        if edges.iter().all(|&v| v == 0.0) {
            return Ok(None);
        }
        if self.right <= self.left || self.bottom <= self.top {
            return Err(invalid(
                "crop: the right and bottom edges must be past the left and top ones",
            ));
        }
        let [l, t, r, b] = if edges.iter().all(|&v| v <= 1.0) {
            edges.map(|v| Fraction::from_f64(v).map_or(Span::FULL, Span::Fraction))
        } else {
            let mut px = [Span::Pixels(0); 4];
            for (out, v) in px.iter_mut().zip(edges) {
                if v.fract() != 0.0 || v > f64::from(MAX_CROP_PIXELS) {
                    return Err(invalid(format!(
                        "crop: {v} is not a whole number of pixels up to {MAX_CROP_PIXELS} \
                         (fractions need every value at most 1)"
                    )));
                }
                *out = Span::Pixels(v as u32);
            }
            px
        };
        let size = |from: Span, to: Span| match (from, to) {
            (Span::Pixels(a), Span::Pixels(b)) => Span::Pixels(b - a),
            (Span::Fraction(a), Span::Fraction(b)) => Span::Fraction(Fraction(b.0 - a.0)),
            _ => unreachable!("the four edges share a unit"),
        };
        let (width, height) = (size(l, r), size(t, b));
        if matches!(width, Span::Fraction(Fraction(0)))
            || matches!(height, Span::Fraction(Fraction(0)))
        {
            return Err(invalid(
                "crop: the region is less than a ten-thousandth wide",
            ));
        }
        Ok(Some(CropRegion {
            width,
            height,
            at: CropAt::Offset(l, t),
        }))
    }

    /// The `AxB:CxD` segment that keeps `region`, when thumbor can say it: an offset region in
    /// pixels (not one that reads as fractions) or in fractions inside the image.
    pub fn from_region(region: CropRegion) -> Option<Crop> {
        let CropAt::Offset(left, top) = region.at else {
            return None;
        };
        let edges = match (left, top, region.width, region.height) {
            (Span::Pixels(l), Span::Pixels(t), Span::Pixels(w), Span::Pixels(h)) => {
                let (r, b) = (l.checked_add(w)?, t.checked_add(h)?);
                if r.max(b) <= 1 || r.max(b) > MAX_CROP_PIXELS {
                    return None;
                }
                [l, t, r, b].map(f64::from)
            }
            (Span::Fraction(l), Span::Fraction(t), Span::Fraction(w), Span::Fraction(h)) => {
                let (r, b) = (Fraction(l.0 + w.0), Fraction(t.0 + h.0));
                if r > Fraction::ONE || b > Fraction::ONE {
                    return None;
                }
                [l, t, r, b].map(Fraction::as_f64)
            }
            _ => return None,
        };
        let [left, top, right, bottom] = edges;
        Some(Crop {
            left,
            top,
            right,
            bottom,
        })
    }
}

/// The `fit-in` family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FitIn {
    /// `fit-in`.
    FitIn,
    /// `full-fit-in`.
    FullFitIn,
    /// `adaptive-fit-in`.
    AdaptiveFitIn,
    /// `adaptive-full-fit-in`.
    AdaptiveFullFitIn,
}

impl FitIn {
    const ALL: [FitIn; 4] = [
        FitIn::FitIn,
        FitIn::FullFitIn,
        FitIn::AdaptiveFitIn,
        FitIn::AdaptiveFullFitIn,
    ];

    fn keyword(self) -> &'static str {
        match self {
            FitIn::FitIn => "fit-in",
            FitIn::FullFitIn => "full-fit-in",
            FitIn::AdaptiveFitIn => "adaptive-fit-in",
            FitIn::AdaptiveFullFitIn => "adaptive-full-fit-in",
        }
    }
}

/// Padding `GxH:IxJ` (left, top, right, bottom); `GxH` is short for `GxH:GxH`.
pub use crate::transform::Padding;

/// One `NAME(ARGS)` of the `filters:` segment; `args` is kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Filter name, e.g. `format`.
    pub name: String,
    /// Raw argument text between the parentheses.
    pub args: String,
}

/// A parsed thumbor/imagor path.
#[derive(Debug, Clone, PartialEq)]
pub struct ThumborPath {
    /// `unsafe` or the signature.
    pub signature: Signature,
    /// `meta/`: answer with JSON metadata instead of an image.
    pub meta: bool,
    /// `trim…/`.
    pub trim: Option<Trim>,
    /// `AxB:CxD/`.
    pub crop: Option<Crop>,
    /// `fit-in/` and its variants.
    pub fit_in: Option<FitIn>,
    /// `stretch/`.
    pub stretch: bool,
    /// Width; 0 when absent.
    pub width: u32,
    /// Height; 0 when absent.
    pub height: u32,
    /// `-` before the width.
    pub flip_h: bool,
    /// `-` before the height.
    pub flip_v: bool,
    /// `GxH:IxJ/`.
    pub padding: Option<Padding>,
    /// `left|right|center/`.
    pub h_align: Option<HAlign>,
    /// `top|middle|bottom/`.
    pub v_align: Option<VAlign>,
    /// `smart/`.
    pub smart: bool,
    /// `filters:…/`, in order.
    pub filters: Vec<Filter>,
    /// IMAGE exactly as it appears in the URL (still percent-encoded, `b64:` not decoded).
    pub image: String,
}

impl ThumborPath {
    /// An unsafe path that only names `image`.
    pub fn new(image: impl Into<String>) -> Self {
        ThumborPath {
            signature: Signature::Unsafe,
            meta: false,
            trim: None,
            crop: None,
            fit_in: None,
            stretch: false,
            width: 0,
            height: 0,
            flip_h: false,
            flip_v: false,
            padding: None,
            h_align: None,
            v_align: None,
            smart: false,
            filters: Vec::new(),
            image: image.into(),
        }
    }

    /// Parses `path` (with or without its leading `/`).
    pub fn parse(path: &str) -> Result<Self, GrammarError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut cur = Cursor(path);
        let signature = match cur.option(|s| Some(s.to_owned())) {
            Some(s) if s == "unsafe" => Signature::Unsafe,
            Some(s) if is_signature(&s) => Signature::Hash(s),
            _ => {
                return Err(invalid(
                    "the path must start with unsafe/ or a URL signature",
                ));
            }
        };
        let mut url = ThumborPath::new("");
        url.signature = signature;
        url.meta = cur.option(|s| (s == "meta").then_some(())).is_some();
        url.trim = cur.option(parse_trim);
        url.crop = cur.option(parse_crop);
        url.fit_in = cur.option(|s| FitIn::ALL.into_iter().find(|f| f.keyword() == s));
        url.stretch = cur.option(|s| (s == "stretch").then_some(())).is_some();
        if let Some((w, h, fh, fv)) = cur.option(parse_size) {
            (url.width, url.height, url.flip_h, url.flip_v) = (w?, h?, fh, fv);
        }
        url.padding = cur.option(parse_padding);
        url.h_align = cur.option(|s| match s {
            "left" => Some(HAlign::Left),
            "right" => Some(HAlign::Right),
            "center" => Some(HAlign::Center),
            _ => None,
        });
        url.v_align = cur.option(|s| match s {
            "top" => Some(VAlign::Top),
            "bottom" => Some(VAlign::Bottom),
            "middle" => Some(VAlign::Middle),
            _ => None,
        });
        url.smart = cur.option(|s| (s == "smart").then_some(())).is_some();
        if let Some(spec) = cur.0.strip_prefix("filters:") {
            let end = filters_end(spec)
                .ok_or_else(|| invalid("filters: must be balanced and followed by an image"))?;
            url.filters = parse_filters(&spec[..end])?;
            cur.0 = &spec[end + 1..];
        }
        if cur.0.is_empty() {
            return Err(invalid("missing image path"));
        }
        url.image = cur.0.to_owned();
        Ok(url)
    }

    /// Everything after the signature segment: what a signature signs.
    pub fn signed_part(&self) -> String {
        let mut out = self.options();
        out.push_str(&self.image);
        out
    }

    /// The whole path without its leading `/`: `unsafe/…` or `HASH/…`.
    pub fn to_path(&self) -> String {
        let sig = match &self.signature {
            Signature::Unsafe => "unsafe",
            Signature::Hash(h) => h,
        };
        format!("{sig}/{}", self.signed_part())
    }

    /// The option segments, each followed by `/`; empty when there are none.
    pub fn options(&self) -> String {
        let mut out = String::new();
        let mut seg = |s: &str| {
            out.push_str(s);
            out.push('/');
        };
        if self.meta {
            seg("meta");
        }
        if let Some(t) = self.trim {
            let mut s = String::from("trim");
            match t.from {
                Some(TrimFrom::TopLeft) => s.push_str(":top-left"),
                Some(TrimFrom::BottomRight) => s.push_str(":bottom-right"),
                None => {}
            }
            if let Some(tol) = t.tolerance {
                s.push_str(&format!(":{tol}"));
            }
            seg(&s);
        }
        if let Some(c) = self.crop {
            seg(&format!("{}x{}:{}x{}", c.left, c.top, c.right, c.bottom));
        }
        if let Some(f) = self.fit_in {
            seg(f.keyword());
        }
        if self.stretch {
            seg("stretch");
        }
        if self.width > 0 || self.height > 0 || self.flip_h || self.flip_v {
            let dim = |flip: bool, v: u32| {
                let sign = if flip { "-" } else { "" };
                match v {
                    0 => sign.to_owned(),
                    v => format!("{sign}{v}"),
                }
            };
            seg(&format!(
                "{}x{}",
                dim(self.flip_h, self.width),
                dim(self.flip_v, self.height)
            ));
        }
        if let Some(p) = self.padding {
            if (p.left, p.top) == (p.right, p.bottom) {
                seg(&format!("{}x{}", p.left, p.top));
            } else {
                seg(&format!("{}x{}:{}x{}", p.left, p.top, p.right, p.bottom));
            }
        }
        match self.h_align {
            Some(HAlign::Left) => seg("left"),
            Some(HAlign::Right) => seg("right"),
            Some(HAlign::Center) => seg("center"),
            None => {}
        }
        match self.v_align {
            Some(VAlign::Top) => seg("top"),
            Some(VAlign::Bottom) => seg("bottom"),
            Some(VAlign::Middle) => seg("middle"),
            None => {}
        }
        if self.smart {
            seg("smart");
        }
        if !self.filters.is_empty() {
            let list: Vec<String> = self
                .filters
                .iter()
                .map(|f| format!("{}({})", f.name, f.args))
                .collect();
            seg(&format!("filters:{}", list.join(":")));
        }
        out
    }

    /// The image path the URL names: `b64:` decoded (the literal text when it does not decode
    /// to UTF-8), otherwise percent-decoded.
    pub fn image_path(&self) -> Result<String, GrammarError> {
        if let Some(enc) = self.image.strip_prefix("b64:") {
            let decoded = URL_SAFE_NO_PAD
                .decode(enc.trim_end_matches('='))
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some(path) = decoded {
                return Ok(path);
            }
        }
        crate::percent::decode(&self.image)
            .ok_or_else(|| invalid("the image path has a malformed percent escape"))
    }

    /// The grammar-neutral transform this path asks for.
    pub fn to_transform(&self) -> Result<Transform, GrammarError> {
        let unsupported = |what: &str| Err(GrammarError::Unsupported(what.to_owned()));
        if self.meta {
            return unsupported("meta");
        }
        let (fit, adaptive) = match (self.fit_in, self.stretch) {
            (Some(_), true) => return Err(invalid("fit-in and stretch cannot be combined")),
            (Some(FitIn::FitIn), false) => (Fit::FitIn, false),
            (Some(FitIn::FullFitIn), false) => (Fit::Cover, false),
            (Some(FitIn::AdaptiveFitIn), false) => (Fit::FitIn, true),
            (Some(FitIn::AdaptiveFullFitIn), false) => (Fit::Cover, true),
            (None, true) => (Fit::Stretch, false),
            (None, false) => (Fit::Fill, false),
        };
        let mut t = Transform {
            width: self.width,
            height: self.height,
            fit,
            // Only a box with both sides can turn.
            adaptive: adaptive && self.width != 0 && self.height != 0,
            flip_h: self.flip_h,
            flip_v: self.flip_v,
            h_align: self.h_align.unwrap_or_default(),
            v_align: self.v_align.unwrap_or_default(),
            crop: self
                .crop
                .as_ref()
                .map(Crop::to_region)
                .transpose()?
                .flatten(),
            trim: self.trim.map(Trim::to_transform),
            smart: self.smart,
            ..Transform::default()
        };
        let mut state = FilterState::default();
        for f in &self.filters {
            apply_filter(&mut t, &mut state, f)?;
        }
        // Fill enlarges a source smaller than the box, as thumbor and imagor do, unless
        // `no_upscale()`; the fits enlarge only with `upscale()`.
        t.upscale = (t.upscale || enlarges_by_default(&t)) && !state.no_upscale;
        // imagor's padding: around the box `fill` pads to, and nothing without `fill`.
        if let Some(p) = self.padding.filter(|p| *p != Padding::default()) {
            if !p.is_bounded() {
                return Err(invalid(format!(
                    "padding is limited to {} pixels a side",
                    crate::transform::MAX_DIMENSION
                )));
            }
            t.padding = t.pad.then_some(p);
        }
        Ok(t)
    }

    /// When the URL stops being served: imagor's `filters:expire(UNIX_MS)` (the last one wins).
    pub fn expires(&self) -> Result<Option<Expiry>, GrammarError> {
        let mut at = None;
        for f in self.filters.iter().filter(|f| f.name == "expire") {
            at = Some(parse_expire(&f.args)?);
        }
        Ok(at)
    }

    /// The watermark of `filters:watermark(…)`, if any (see `parse_watermark`).
    pub fn watermark(&self) -> Result<Option<Watermark>, GrammarError> {
        self.filters
            .iter()
            .find(|f| f.name == "watermark")
            .map(|f| parse_watermark(&filter_args(&f.args)))
            .transpose()
    }

    /// Adds `filters:watermark(…)` for `w`, after the other filters: the inverse of
    /// [`ThumborPath::watermark`] for every watermark thumbor can say; canonical forms also
    /// write what it cannot (see `watermark_args`).
    pub fn push_watermark(&mut self, w: &Watermark) {
        self.filters.push(Filter {
            name: "watermark".to_owned(),
            args: watermark_args(w),
        });
    }

    /// Everything the URL asks for, grammar-neutral: transform, decoded image path and expiry.
    pub fn to_target(&self) -> Result<Target, GrammarError> {
        let transform = self.to_transform()?;
        Ok(Target {
            handle: None,
            transform,
            format_choice: match transform.format {
                OutputFormat::Source => FormatChoice::Unnamed,
                OutputFormat::Fixed(_) | OutputFormat::Compatible => FormatChoice::Named,
            },
            image: self.image_path()?,
            version: None,
            expires: self.expires()?,
            watermark: self.watermark()?,
        })
    }

    /// The path that asks for `t` on `image`, with the given signature. Inverse of
    /// [`ThumborPath::to_transform`] for every transform it produces. The format "auto" chose
    /// for a client without WebP ([`OutputFormat::Compatible`]) is written `format(compatible)`,
    /// which no URL may say: it only makes canonical forms of such requests differ.
    pub fn from_transform(t: &Transform, image: impl Into<String>) -> Self {
        let mut url = ThumborPath::new(image);
        url.crop = t.crop.and_then(Crop::from_region);
        url.padding = t.padding;
        url.fit_in = match (t.fit, t.adaptive) {
            (Fit::FitIn, false) => Some(FitIn::FitIn),
            (Fit::FitIn, true) => Some(FitIn::AdaptiveFitIn),
            (Fit::Cover, false) => Some(FitIn::FullFitIn),
            (Fit::Cover, true) => Some(FitIn::AdaptiveFullFitIn),
            (Fit::Auto, _) => Some(FitIn::FitIn),
            (Fit::Fill | Fit::FillClamped | Fit::Stretch, _) => None,
        };
        url.stretch = t.fit == Fit::Stretch;
        (url.width, url.height, url.flip_h, url.flip_v) = (t.width, t.height, t.flip_h, t.flip_v);
        url.h_align = (t.h_align != HAlign::Center).then_some(t.h_align);
        url.v_align = (t.v_align != VAlign::Middle).then_some(t.v_align);
        url.trim = t.trim.and_then(Trim::from_transform);
        url.smart = t.smart;
        let mut filter = |name: &str, args: String| {
            url.filters.push(Filter {
                name: name.to_owned(),
                args,
            })
        };
        if t.fit == Fit::Auto {
            // Fill or fit by the source's orientation (imgproxy `rt:auto`), which thumbor
            // cannot say: canonical forms only; the parser refuses `fit(…)`.
            filter("fit", "auto".to_owned());
        }
        if t.fit == Fit::FillClamped {
            // A fill that crops a small source to the box clamped to it (imgproxy `rt:fill`),
            // which thumbor cannot say: canonical forms only, like `fit(auto)`.
            filter("fit", "fill-clamped".to_owned());
        }
        if let Some(c) = t.crop.filter(|c| Crop::from_region(*c).is_none()) {
            // A crop thumbor cannot say (anchored, mixed units, a 1-pixel crop that would read
            // as ratios): canonical forms only; the parser refuses `crop(…)`.
            filter("crop", c.to_string());
        }
        if let Some(trim) = t.trim.filter(|trim| Trim::from_transform(*trim).is_none()) {
            // A trim thumbor cannot say (a given colour, equal sides): canonical forms only.
            filter("trim", trim.to_string());
        }
        match t.format {
            OutputFormat::Source => {}
            OutputFormat::Fixed(f) => filter("format", f.name().to_owned()),
            // No URL asks for it (the router chooses it), so it only appears in canonical forms;
            // the parser refuses it.
            OutputFormat::Compatible => filter("format", COMPATIBLE.to_owned()),
        }
        if let Some(q) = t.quality {
            filter("quality", q.to_string());
        }
        match (enlarges_by_default(t), t.upscale) {
            (false, true) => filter("upscale", String::new()),
            (true, false) => filter("no_upscale", String::new()),
            _ => {}
        }
        if let Some(p) = t.proportion {
            // Before any effect: the parser refuses it after those it does not commute with.
            filter("proportion", p.to_string());
        }
        if t.rotation != Rotation::None {
            let counter_clockwise = t.rotation.inverse().degrees();
            filter("rotate", counter_clockwise.to_string());
        }
        if let Some(f) = t.focus {
            filter("focal", focal_args(f));
        }
        if t.grayscale {
            filter("grayscale", String::new());
        }
        if let Some(sigma) = t.blur {
            filter("blur", sigma.doubled().to_string());
        }
        if let Some(s) = t.sharpen {
            filter("sharpen", format!("{},{},true", s.amount, s.sigma));
        }
        let padded = t.pad || t.background.is_some() || t.padding.is_some();
        let mut effects = effect_filters(&t.effects);
        if !padded {
            // Without padding the final effects can follow the others, before the rotation:
            // turned back, they give the same pixels (one canonical form for both).
            effects.extend(effect_filters(&match t.rotation.swaps_sides() {
                true => t.final_effects.turned(),
                false => t.final_effects,
            }));
        }
        for Filter { name, args } in effects {
            filter(&name, args);
        }
        if !t.pad && t.padding.is_some() {
            // Padding around the image rather than around the box `fill` pads to (imgproxy's
            // `pd`), which imagor cannot say (its `GxH:IxJ` needs `fill`): canonical forms
            // only, like `fit(auto)`; the parser refuses `padding(…)`.
            filter("padding", "image".to_owned());
        }
        match (t.pad, t.background) {
            (true, Some(c)) => filter("fill", c.hex()),
            (true, None) => filter("fill", "transparent".to_owned()),
            (false, Some(c)) => filter("background_color", c.hex()),
            (false, None) => {}
        }
        if padded {
            // After `fill`, `background_color` or `padding(image)`, and after `rotate(…)`,
            // written earlier: they run on the padded, rotated image.
            for Filter { name, args } in effect_filters(&t.final_effects) {
                filter(&name, args);
            }
        }
        if let Some(progressive) = t.progressive {
            filter("progressive", progressive.to_string());
        }
        if let Some(max) = t.max_bytes {
            filter("max_bytes", max.to_string());
        }
        if t.keep_icc {
            filter("keep_icc", String::new());
        }
        url
    }
}

/// The filters that say `list`, in order.
fn effect_filters(list: &Effects) -> Vec<Filter> {
    list.as_slice()
        .iter()
        .filter_map(|e| {
            let text = e.to_string();
            let (name, args) = text.strip_suffix(')')?.split_once('(')?;
            Some(Filter {
                name: name.to_owned(),
                args: args.to_owned(),
            })
        })
        .collect()
}

/// Filters of thumbor and imagor that pixmesh recognises but does not apply yet (501, not 400).
/// Filters pixmesh applies ([`apply_filter`]).
const APPLIED_FILTERS: &[&str] = &[
    "watermark",
    "rotate",
    "grayscale",
    "blur",
    "sharpen",
    "fill",
    "focal",
    "background_color",
    "format",
    "quality",
    "max_bytes",
    "progressive",
    "expire",
    "keep_icc",
    "strip_icc",
    "strip_exif",
    "strip_metadata",
    "upscale",
    "no_upscale",
    "brightness",
    "contrast",
    "saturation",
    "rgb",
    "noise",
    "round_corner",
    "proportion",
];

impl ThumborPath {
    /// Removes the filters pixmesh does not know at all (neither applies nor names as
    /// unsupported) and returns their names: thumbor and imagor skip such filters, so URLs
    /// written for a server with plugins keep working. Without this, they are a 400.
    pub fn skip_unknown_filters(&mut self) -> Vec<String> {
        let (known, unknown): (Vec<Filter>, Vec<Filter>) = std::mem::take(&mut self.filters)
            .into_iter()
            .partition(|f| {
                APPLIED_FILTERS.contains(&f.name.as_str())
                    || KNOWN_FILTERS.contains(&f.name.as_str())
            });
        self.filters = known;
        unknown.into_iter().map(|f| f.name).collect()
    }
}

const KNOWN_FILTERS: &[&str] = &[
    "attachment",
    "autojpg",
    "convolution",
    "dpi",
    "equalize",
    "hue",
    "label",
    "max_frames",
    "orient",
    "page",
    "preview",
    "raw",
];

/// What earlier filters of the same URL did, for the rules that depend on filter order.
#[derive(Default)]
struct FilterState {
    /// The colour of `fill`, once given (`Some(None)`: transparent).
    fill: Option<Option<Color>>,
    /// The colour of `background_color`, once given.
    background: Option<Option<Color>>,
    focal: bool,
    /// `strip_icc()` was given.
    strip_icc: bool,
    /// `no_upscale()` was given.
    no_upscale: bool,
    watermark: bool,
}

impl FilterState {
    /// Places an effect filter where it runs in URL order: after `fill` or `background_color`,
    /// in the final effects (on the padded image); otherwise grayscale, blur and sharpen in
    /// their own fields while those can say the order (each once, before any ordered effect),
    /// and everything else in the ordered effects before the padding.
    fn effect(&self, t: &mut Transform, effect: Effect) -> Result<(), GrammarError> {
        let list = if self.fill.is_some() || self.background.is_some() {
            &mut t.final_effects
        } else {
            if t.effects.is_empty() {
                match effect {
                    Effect::Grayscale if !t.grayscale => {
                        t.grayscale = true;
                        return Ok(());
                    }
                    Effect::Blur(sigma) if t.blur.is_none() => {
                        t.blur = Some(sigma);
                        return Ok(());
                    }
                    Effect::Sharpen(s) if t.sharpen.is_none() => {
                        t.sharpen = Some(s);
                        return Ok(());
                    }
                    _ => {}
                }
            }
            &mut t.effects
        };
        list.push(effect).map_err(|e| invalid(e.to_string()))
    }

    /// `fill` and `background_color` set what lies under the image once: after an effect that
    /// runs on the padded image they would have to pad again.
    fn pads(&self, t: &Transform, name: &str) -> Result<(), GrammarError> {
        match t.final_effects.as_slice().first() {
            Some(e) => Err(unsupported(format!(
                "filter {name} after {} after fill or background_color",
                e.to_string().split('(').next().unwrap_or_default()
            ))),
            None => Ok(()),
        }
    }

    /// `fill` and `background_color` both set the background: they must agree.
    fn background(&self) -> Result<Option<Color>, GrammarError> {
        match (self.fill, self.background) {
            (Some(a), Some(b)) if a != b => Err(unsupported(
                "fill and background_color with different colours",
            )),
            (fill, bg) => Ok(fill.or(bg).flatten()),
        }
    }
}

/// Splits filter arguments at commas; no arguments is an empty list.
fn filter_args(args: &str) -> Vec<&str> {
    if args.is_empty() {
        Vec::new()
    } else {
        args.split(',').collect()
    }
}

/// A thumbor colour argument: what [`parse_color`] accepts; imagor's `auto` (a colour picked
/// from the image) and `blur` (a blurred copy as background) are 501.
fn filter_color(name: &str, value: &str) -> Result<Option<Color>, GrammarError> {
    match value.to_ascii_lowercase().as_str() {
        "auto" | "blur" => Err(unsupported(format!("{name}({value})"))),
        _ => parse_color(name, value),
    }
}

fn apply_filter(
    t: &mut Transform,
    state: &mut FilterState,
    f: &Filter,
) -> Result<(), GrammarError> {
    let args = filter_args(&f.args);
    let arity = |min: usize, max: usize| {
        if (min..=max).contains(&args.len()) {
            Ok(())
        } else if min == max {
            Err(invalid(format!("{}() takes {min} arguments", f.name)))
        } else {
            Err(invalid(format!(
                "{}() takes {min} to {max} arguments",
                f.name
            )))
        }
    };
    if state.watermark
        && matches!(
            f.name.as_str(),
            "rotate"
                | "grayscale"
                | "blur"
                | "sharpen"
                | "fill"
                | "background_color"
                | "watermark"
                | "brightness"
                | "contrast"
                | "saturation"
                | "rgb"
                | "noise"
                | "round_corner"
                | "proportion"
        )
    {
        // pixmesh composites the watermark onto the final image; thumbor would filter (or
        // pad, or turn) it with the image.
        return Err(unsupported(format!("filter {} after watermark", f.name)));
    }
    match f.name.as_str() {
        "watermark" => {
            parse_watermark(&args)?;
            state.watermark = true;
        }
        "rotate" => {
            arity(1, 1)?;
            let r = parse_rotation("rotate", args[0], false)?;
            t.rotation = Rotation::from_degrees(i64::from(t.rotation.degrees() + r.degrees()))
                .unwrap_or_default();
            // The final effects run after the rotation: those given before it turn with it
            // (colour effects are the same either way; corners' radii swap).
            if r.swaps_sides() {
                t.final_effects = t.final_effects.turned();
            }
        }
        "grayscale" => {
            arity(0, 0)?;
            state.effect(t, Effect::Grayscale)?;
        }
        "blur" => {
            arity(1, 2)?;
            let mut sigma = parse_blur_radius("blur", args[0])?;
            if let (Some(s), Some(arg)) = (sigma, args.get(1)) {
                let given = parse_sigma("blur", arg)?.unwrap_or(Hundredths(0));
                sigma = Some(s.min(given)).filter(|s| s.0 > 0);
            }
            if let Some(sigma) = sigma {
                state.effect(t, Effect::Blur(sigma))?;
            }
        }
        "sharpen" => {
            arity(1, 3)?;
            let sharpened = if args.len() == 1 {
                sharpen(parse_sigma("sharpen", args[0])?, Some(Hundredths::ONE))
            } else {
                if let Some(&lum) = args.get(2) {
                    match lum.to_ascii_lowercase().as_str() {
                        "true" | "1" => {}
                        "false" | "0" => {
                            return Err(unsupported(
                                "sharpen on every channel (luminance_only false)",
                            ));
                        }
                        _ => {
                            return Err(invalid(format!(
                                "sharpen: luminance_only {lum:?} is not true or false"
                            )));
                        }
                    }
                }
                sharpen(
                    parse_sigma("sharpen", args[1])?,
                    parse_amount("sharpen", args[0])?,
                )
            };
            if let Some(s) = sharpened {
                state.effect(t, Effect::Sharpen(s))?;
            }
        }
        "proportion" => {
            arity(1, 1)?;
            let p = parse_hundredths("proportion", args[0], MAX_PROPORTION, "proportion")?;
            if p.0 == 0 {
                return Err(invalid("proportion: the proportion must be more than 0"));
            }
            // pixmesh scales the fitted image, before every effect and the padding.
            let spatial = |e: &Effect| {
                !matches!(
                    e,
                    Effect::Grayscale
                        | Effect::Brightness(_)
                        | Effect::Contrast(_)
                        | Effect::Saturation(_)
                        | Effect::Rgb(..)
                )
            };
            let after = if t.proportion.is_some() {
                Some("proportion")
            } else if state.fill.is_some() || state.background.is_some() {
                Some("fill or background_color")
            } else if t.blur.is_some()
                || t.sharpen.is_some()
                || t.effects.as_slice().iter().any(spatial)
            {
                Some("blur, sharpen, noise or round_corner")
            } else {
                None
            };
            if let Some(after) = after {
                return Err(unsupported(format!("filter proportion after {after}")));
            }
            t.proportion = Some(p);
        }
        name @ ("brightness" | "contrast" | "saturation" | "rgb" | "noise" | "round_corner") => {
            let effect = Effect::parse_filter(name, &args)
                .unwrap_or_else(|| Err(invalid(format!("unknown filter {name}"))))?;
            state.effect(t, effect)?;
        }
        "fill" => {
            arity(1, 2)?;
            let color = filter_color("fill", args[0])?;
            if let Some(&all) = args.get(1) {
                match all.to_ascii_lowercase().as_str() {
                    "true" | "1" => {}
                    "false" | "0" => {
                        return Err(unsupported(
                            "fill that keeps transparent areas (fill_transparent false)",
                        ));
                    }
                    _ => {
                        return Err(invalid(format!(
                            "fill: fill_transparent {all:?} is not true or false"
                        )));
                    }
                }
            }
            state.pads(t, "fill")?;
            state.fill = Some(color);
            t.pad = true;
            t.background = state.background()?;
        }
        "focal" => {
            if std::mem::replace(&mut state.focal, true) {
                return Err(unsupported("filter focal given twice"));
            }
            t.focus = Some(parse_focal(&f.args)?);
        }
        "background_color" => {
            arity(1, 1)?;
            state.pads(t, "background_color")?;
            state.background = Some(filter_color("background_color", args[0])?);
            t.background = state.background()?;
        }
        "format" => {
            t.format = OutputFormat::Fixed(match f.args.to_ascii_lowercase().as_str() {
                "tiff" | "heif" | "jxl" => {
                    return Err(GrammarError::Unsupported(format!("format({})", f.args)));
                }
                name => Format::from_name(name)
                    .ok_or_else(|| invalid(format!("unknown format in format({:?})", f.args)))?,
            });
        }
        "quality" => {
            t.quality = Some(
                f.args
                    .parse::<u8>()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| {
                        invalid(format!("quality({:?}) must be between 1 and 100", f.args))
                    })?,
            );
        }
        "max_bytes" => {
            let max = f
                .args
                .parse::<u32>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| {
                    invalid(format!(
                        "max_bytes({:?}) must be a whole number of bytes from 1 to {}",
                        f.args,
                        u32::MAX
                    ))
                })?;
            t.max_bytes = Some(max);
        }
        "progressive" => {
            arity(1, 1)?;
            t.progressive = Some(match args[0].to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => {
                    return Err(invalid(format!(
                        "progressive({other:?}) is not true or false"
                    )));
                }
            });
        }
        // Checked when the URL is served: see `ThumborPath::expires`.
        "expire" => {
            parse_expire(&f.args)?;
        }
        // Outputs carry no EXIF or XMP: nothing to strip.
        "strip_exif" => arity(0, 0)?,
        "keep_icc" | "strip_icc" | "strip_metadata" => {
            arity(0, 0)?;
            state.strip_icc |= f.name != "keep_icc";
            t.keep_icc |= f.name == "keep_icc";
            if state.strip_icc && t.keep_icc {
                return Err(invalid(format!(
                    "keep_icc() and {}() contradict each other",
                    if f.name == "keep_icc" {
                        "strip_icc"
                    } else {
                        &f.name
                    }
                )));
            }
        }
        "upscale" | "no_upscale" if !f.args.is_empty() => {
            return Err(invalid(format!("{}() takes no arguments", f.name)));
        }
        "upscale" => t.upscale = true,
        "no_upscale" => state.no_upscale = true,
        name if KNOWN_FILTERS.contains(&name) => {
            return Err(GrammarError::Unsupported(format!("filter {name}")));
        }
        name => return Err(invalid(format!("unknown filter {name}"))),
    }
    Ok(())
}

/// Whether thumbor enlarges a source smaller than `t`'s box without being asked: in fill mode
/// and `full-fit-in`, with a size given (without one, the size is the source's and nothing is
/// enlarged).
fn enlarges_by_default(t: &Transform) -> bool {
    matches!(t.fit, Fit::Fill | Fit::FillClamped | Fit::Cover) && (t.width != 0 || t.height != 0)
}

/// `focal(LxT:RxB)`: a focal region of the source, in pixels or, when all four values are at
/// most 1, in fractions of its sides (imagor's rule, as for the manual crop); a point when the
/// corners meet.
fn parse_focal(args: &str) -> Result<Focus, GrammarError> {
    let c = parse_crop(args).ok_or_else(|| invalid("focal() takes LEFTxTOP:RIGHTxBOTTOM"))?;
    if c.right < c.left || c.bottom < c.top {
        return Err(invalid(
            "focal: the right and bottom edges must not be before the left and top ones",
        ));
    }
    let edges = [c.left, c.top, c.right, c.bottom];
    let [left, top, right, bottom] = if edges.iter().all(|&v| v <= 1.0) {
        edges.map(|v| Span::Fraction(Fraction::from_f64(v).unwrap_or(Fraction::ONE)))
    } else {
        let mut px = [Span::Pixels(0); 4];
        for (out, v) in px.iter_mut().zip(edges) {
            if v.fract() != 0.0 || v > f64::from(MAX_CROP_PIXELS) {
                return Err(invalid(format!(
                    "focal: {v} is not a whole number of pixels up to {MAX_CROP_PIXELS}"
                )));
            }
            *out = Span::Pixels(v as u32);
        }
        px
    };
    Ok(Focus {
        left,
        top,
        right,
        bottom,
    })
}

/// The `focal(…)` arguments of a focus: what [`parse_focal`] reads back, or, for a region in
/// pixels that would read as fractions, a canonical-only form no URL may use.
fn focal_args(f: Focus) -> String {
    let edges = [f.left, f.top, f.right, f.bottom];
    let text = |s: Span| match s {
        Span::Pixels(p) => p.to_string(),
        Span::Fraction(fr) => fr.as_f64().to_string(),
    };
    let [l, t, r, b] = edges.map(text);
    let tiny_pixels = edges.iter().all(|e| matches!(e, Span::Pixels(0 | 1)));
    if tiny_pixels {
        format!("{l}x{t}:{r}x{b},pixels")
    } else {
        format!("{l}x{t}:{r}x{b}")
    }
}

/// `watermark(IMAGE,X,Y,ALPHA[,W_RATIO[,H_RATIO]])` (thumbor; imagor's has the same
/// arguments):
///
/// - IMAGE: the watermark's path, percent-encoded where it holds `,`, `(`, `)` or `:`,
///   resolved by the route like the source's path (its storage, base dir and path prefix);
///   `http(s)://` URLs are 501 (pixmesh reads watermarks from storage only). imagor's image
///   arguments with their own options (`fit-in/…/logo.png`) are read as paths.
/// - X: pixels from the left, or, negative, from the right (`-0`: flush right); `Np` (`-Np`)
///   is N percent of the result's width; `center`; `repeat` tiles across (see
///   [`crate::watermark`] for how pixmesh tiles); imagor's `left` and `right` are `0` and `-0`.
///   Y likewise, with `top` and `bottom`.
/// - ALPHA: the watermark's transparency, 0 (opaque) to 100 (invisible), to hundredths.
/// - W_RATIO, H_RATIO: percentages of the result's width and height (to hundredths) the
///   watermark is scaled to fit in, up or down; `none` (or 0, as in thumbor) leaves a side
///   free.
///
/// Canonical forms also write what no thumbor URL can say, which URLs may not use: the image
/// as `STORAGE/KEY` or `default`, positions as [`Axis`] texts (`center+10`), sizes in pixels
/// (`120px`).
fn parse_watermark(args: &[&str]) -> Result<Watermark, GrammarError> {
    if !(4..=6).contains(&args.len()) {
        return Err(invalid("watermark() takes 4 to 6 arguments"));
    }
    let image = crate::watermark::decode_path(args[0])
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid("watermark: the image path is empty or malformed"))?;
    let lower = image.to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Err(unsupported("watermark images from URLs"));
    }
    let axis = |v: &str, start: &str, end: &str| -> Result<Axis, GrammarError> {
        let bad = || invalid(format!("watermark: bad position {v:?}"));
        Ok(match v {
            "center" => Axis::Center(Offset::ZERO),
            "repeat" => Axis::Repeat(0),
            v if v == start => Axis::Start(Offset::ZERO),
            v if v == end => Axis::End(Offset::ZERO),
            v => {
                let (negative, digits) = match v.strip_prefix('-') {
                    Some(d) => (true, d),
                    None => (false, v),
                };
                let (digits, percent) = match digits.strip_suffix('p') {
                    Some(d) => (d, true),
                    None => (digits, false),
                };
                if digits.is_empty()
                    || digits.len() > 5
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad());
                }
                let n: u64 = digits.parse().map_err(|_| bad())?;
                let offset = if percent {
                    Offset::percent(n)
                } else {
                    Offset::pixels(n as i64)
                }
                .ok_or_else(bad)?;
                if negative {
                    Axis::End(offset)
                } else {
                    Axis::Start(offset)
                }
            }
        })
    };
    let alpha = parse_hundredths("watermark", args[3], Hundredths(10_000), "alpha")?;
    let ratio = |v: Option<&&str>| -> Result<Option<Span>, GrammarError> {
        match v.copied() {
            None | Some("none") => Ok(None),
            Some(v) => {
                let pct = parse_hundredths("watermark", v, Hundredths(10_000), "ratio")?;
                Ok((pct.0 > 0).then_some(Span::Fraction(Fraction(pct.0))))
            }
        }
    };
    Ok(Watermark {
        image: WatermarkImage::Path(image),
        x: axis(args[1], "left", "right")?,
        y: axis(args[2], "top", "bottom")?,
        opacity: Fraction(10_000 - alpha.0),
        width: ratio(args.get(4))?,
        height: ratio(args.get(5))?,
    })
}

/// The arguments of `watermark(…)` for `w` (see `parse_watermark`).
fn watermark_args(w: &Watermark) -> String {
    let image = crate::watermark::canonical_image(&w.image);
    let axis = |a: Axis| match a {
        Axis::Start(Offset::Pixels(p)) if p >= 0 => p.to_string(),
        Axis::Start(Offset::Percent(p)) => format!("{p}p"),
        Axis::End(Offset::Pixels(p)) if p >= 0 => format!("-{p}"),
        Axis::End(Offset::Percent(p)) => format!("-{p}p"),
        Axis::Center(Offset::Pixels(0)) => "center".to_owned(),
        Axis::Repeat(0) => "repeat".to_owned(),
        other => other.to_string(),
    };
    let size = |s: Option<Span>| match s {
        None => "none".to_owned(),
        Some(Span::Fraction(f)) => Hundredths(f.0).to_string(),
        Some(Span::Pixels(p)) => format!("{p}px"),
    };
    let alpha = Hundredths(Fraction::ONE.0 - w.opacity.0.min(Fraction::ONE.0));
    let mut out = format!("{image},{},{},{alpha}", axis(w.x), axis(w.y));
    match (w.width, w.height) {
        (None, None) => {}
        (width, None) => {
            let _ = write!(out, ",{}", size(width));
        }
        (width, height) => {
            let _ = write!(out, ",{},{}", size(width), size(height));
        }
    }
    out
}

/// `expire(UNIX_MS)`: imagor's expiry in unix milliseconds.
fn parse_expire(args: &str) -> Result<Expiry, GrammarError> {
    parse_timestamp("expire", args).map(Expiry::UnixMillis)
}

/// Walks the path one optional segment at a time.
struct Cursor<'a>(&'a str);

impl Cursor<'_> {
    /// Consumes the next segment when another one follows it and `parse` accepts it.
    fn option<T>(&mut self, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
        let (seg, rest) = self.0.split_once('/')?;
        let value = parse(seg)?;
        self.0 = rest;
        Some(value)
    }
}

/// Whether `s` can be a URL signature (imagor's `[A-Za-z0-9-_=]{8,}`).
pub(crate) fn is_signature(s: &str) -> bool {
    s.len() >= 8
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'='))
}

fn parse_trim(s: &str) -> Option<Trim> {
    let mut parts = s.split(':');
    if parts.next()? != "trim" {
        return None;
    }
    let mut trim = Trim {
        from: None,
        tolerance: None,
    };
    for p in parts {
        match p {
            "top-left" if trim.from.is_none() && trim.tolerance.is_none() => {
                trim.from = Some(TrimFrom::TopLeft)
            }
            "bottom-right" if trim.from.is_none() && trim.tolerance.is_none() => {
                trim.from = Some(TrimFrom::BottomRight)
            }
            tol if trim.tolerance.is_none() => trim.tolerance = Some(tol.parse().ok()?),
            _ => return None,
        }
    }
    Some(trim)
}

fn parse_decimal(s: &str) -> Option<f64> {
    let ok = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1;
    ok.then(|| s.parse().ok()).flatten()
}

fn parse_pair<T>(s: &str, num: impl Fn(&str) -> Option<T>) -> Option<(T, T)> {
    let (a, b) = s.split_once('x')?;
    Some((num(a)?, num(b)?))
}

fn parse_crop(s: &str) -> Option<Crop> {
    let (a, b) = s.split_once(':')?;
    let (left, top) = parse_pair(a, parse_decimal)?;
    let (right, bottom) = parse_pair(b, parse_decimal)?;
    Some(Crop {
        left,
        top,
        right,
        bottom,
    })
}

type SizeSegment = (
    Result<u32, GrammarError>,
    Result<u32, GrammarError>,
    bool,
    bool,
);

/// `[-][W]x[-][H]`; the numbers are range-checked after the segment is known to be a size.
fn parse_size(s: &str) -> Option<SizeSegment> {
    let (w, h) = s.split_once('x')?;
    let side = |v: &str| -> Option<(bool, Result<u32, GrammarError>)> {
        let (flip, digits) = match v.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, v),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n = if digits.is_empty() {
            Ok(0)
        } else {
            digits
                .parse::<u32>()
                .ok()
                .filter(|&n| n <= MAX_DIMENSION)
                .ok_or_else(|| invalid(format!("{s}: dimensions are limited to {MAX_DIMENSION}")))
        };
        Some((flip, n))
    };
    let (fh, w) = side(w)?;
    let (fv, h) = side(h)?;
    Some((w, h, fh, fv))
}

fn parse_padding(s: &str) -> Option<Padding> {
    let num = |v: &str| {
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u32>().ok())
            .flatten()
    };
    let (first, second) = match s.split_once(':') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let (left, top) = parse_pair(first, num)?;
    let (right, bottom) = match second {
        Some(b) => parse_pair(b, num)?,
        None => (left, top),
    };
    Some(Padding {
        left,
        top,
        right,
        bottom,
    })
}

/// Index of the `/` that ends the filter list, skipping `/` inside parentheses.
fn filters_end(spec: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, b) in spec.bytes().enumerate() {
        match b {
            b'(' => depth += 1,
            b')' => depth = depth.checked_sub(1)?,
            b'/' if depth == 0 => return Some(i),
            _ => {}
        }
    }
    None
}

fn parse_filters(spec: &str) -> Result<Vec<Filter>, GrammarError> {
    let mut filters = Vec::new();
    let mut rest = spec;
    while !rest.is_empty() {
        if filters.len() == MAX_FILTERS {
            return Err(invalid(format!("more than {MAX_FILTERS} filters")));
        }
        let open = rest
            .find('(')
            .ok_or_else(|| invalid(format!("filter {rest:?} needs parentheses")))?;
        let name = &rest[..open];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(invalid(format!("bad filter name {name:?}")));
        }
        let mut depth = 0usize;
        let close = rest[open..]
            .bytes()
            .position(|b| {
                match b {
                    b'(' => depth += 1,
                    b')' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .map(|p| open + p)
            .ok_or_else(|| invalid(format!("filter {name}( is not closed")))?;
        filters.push(Filter {
            name: name.to_owned(),
            args: rest[open + 1..close].to_owned(),
        });
        rest = &rest[close + 1..];
        if !rest.is_empty() {
            rest = rest
                .strip_prefix(':')
                .ok_or_else(|| invalid(format!("expected : after filter {name}")))?;
            if rest.is_empty() {
                return Err(invalid("empty filter after :"));
            }
        }
    }
    Ok(filters)
}

/// Encodes an image path the way `b64:` expects (base64url, with padding as imagor writes it).
pub fn encode_b64_image(path: &str) -> String {
    format!("b64:{}", URL_SAFE.encode(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Sharpen;

    /// Paths in canonical form: `generate(parse(s)) == s` for each.
    const ROUND_TRIP: &[&str] = &[
        "unsafe/photo.jpg",
        "unsafe/300x200/photo.jpg",
        "unsafe/fit-in/300x200/photo.jpg",
        "unsafe/full-fit-in/300x/photo.jpg",
        "unsafe/adaptive-fit-in/x200/photo.jpg",
        "unsafe/adaptive-full-fit-in/-300x-200/photo.jpg",
        "unsafe/stretch/300x200/photo.jpg",
        "unsafe/-x-/photo.jpg",
        "unsafe/-300x200/photo.jpg",
        "unsafe/meta/trim/photo.jpg",
        "unsafe/trim:bottom-right:25/photo.jpg",
        "unsafe/trim:top-left/photo.jpg",
        "unsafe/trim:10/photo.jpg",
        "unsafe/10x20:300x400/photo.jpg",
        "unsafe/0.1x0.2:0.9x0.8/photo.jpg",
        "unsafe/300x200/10x20/photo.jpg",
        "unsafe/300x200/10x20:30x40/photo.jpg",
        "unsafe/300x200/left/top/photo.jpg",
        "unsafe/300x200/right/bottom/smart/photo.jpg",
        "unsafe/300x200/center/middle/photo.jpg",
        "unsafe/fit-in/300x200/filters:format(webp):quality(80)/photo.jpg",
        "unsafe/filters:watermark(s3/logo.png,10,-10,50):fill(white)/photo.jpg",
        "unsafe/filters:label(a:b(c)d,1,2)/dir/photo.jpg",
        "unsafe/filters:upscale()/photo.jpg",
        "unsafe/fit-in/300x200/filters:fill(ff0000)/photo.jpg",
        "unsafe/fit-in/300x200/left/filters:fill(transparent):rotate(270)/photo.jpg",
        "unsafe/filters:rotate(90):grayscale():blur(5,2):sharpen(1.5,0.5,true)/photo.jpg",
        "unsafe/filters:background_color(white):format(jpeg)/photo.jpg",
        "unsafe/b64:cGhvdG9zL2EuanBn/photo.jpg",
        "unsafe/dir%2Ffit-in/photo%20one.jpg",
        "cST4Ko5_FqwT3BDn-Wf4gO3RFSk=/500x500/top/raw.githubusercontent.com/cshum/imagor/master/testdata/gopher.png",
    ];

    #[test]
    fn canonical_paths_round_trip() {
        for &path in ROUND_TRIP {
            let parsed = ThumborPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(parsed.to_path(), path, "generate(parse({path}))");
            assert_eq!(ThumborPath::parse(&parsed.to_path()).unwrap(), parsed);
        }
    }

    #[test]
    fn parses_every_part() {
        let p = ThumborPath::parse(
            "/unsafe/meta/trim:bottom-right:5/1x2:3x4/fit-in/stretch/-300x-0/5x6:7x8/right/bottom/smart/filters:a(1):b()/x/y.png",
        )
        .unwrap();
        assert_eq!(p.signature, Signature::Unsafe);
        assert!(p.meta && p.stretch && p.smart && p.flip_h && p.flip_v);
        assert_eq!(
            p.trim,
            Some(Trim {
                from: Some(TrimFrom::BottomRight),
                tolerance: Some(5)
            })
        );
        assert_eq!(
            p.crop,
            Some(Crop {
                left: 1.0,
                top: 2.0,
                right: 3.0,
                bottom: 4.0
            })
        );
        assert_eq!(p.fit_in, Some(FitIn::FitIn));
        assert_eq!((p.width, p.height), (300, 0));
        assert_eq!(
            p.padding,
            Some(Padding {
                left: 5,
                top: 6,
                right: 7,
                bottom: 8
            })
        );
        assert_eq!(
            (p.h_align, p.v_align),
            (Some(HAlign::Right), Some(VAlign::Bottom))
        );
        assert_eq!(p.filters.len(), 2);
        assert_eq!(p.image, "x/y.png");
    }

    #[test]
    fn last_segment_is_always_the_image() {
        for kw in ["smart", "fit-in", "300x200", "left", "trim", "meta"] {
            let p = ThumborPath::parse(&format!("unsafe/{kw}")).unwrap();
            assert_eq!(p.image, kw);
        }
    }

    #[test]
    fn rejects_malformed_paths() {
        for bad in [
            "",
            "unsafe/",
            "nothash/300x200/a.jpg",
            "unsafe/filters:format(webp)",
            "unsafe/filters:format(webp/a.jpg",
            "unsafe/filters:format(webp)x/a.jpg",
            "unsafe/filters:Bad(1)/a.jpg",
            "unsafe/filters:a(1):/a.jpg",
            "unsafe/99999x1/a.jpg",
            "unsafe/a%zz.jpg",
        ] {
            let r = ThumborPath::parse(bad).and_then(|p| p.image_path());
            assert!(
                matches!(r, Err(GrammarError::Invalid(_))),
                "{bad:?} gave {r:?}"
            );
        }
    }

    #[test]
    fn filter_count_is_bounded() {
        let many = vec!["quality(5)"; MAX_FILTERS + 1].join(":");
        let r = ThumborPath::parse(&format!("unsafe/filters:{many}/a.jpg"));
        assert!(matches!(r, Err(GrammarError::Invalid(_))));
    }

    #[test]
    fn image_path_decodes_b64_and_percent() {
        let p =
            ThumborPath::parse(&format!("unsafe/{}", encode_b64_image("photos/ä b.jpg"))).unwrap();
        assert_eq!(p.image_path().unwrap(), "photos/ä b.jpg");
        let p = ThumborPath::parse("unsafe/b64:@@@notbase64").unwrap();
        assert_eq!(
            p.image_path().unwrap(),
            "b64:@@@notbase64",
            "literal fallback"
        );
        let p = ThumborPath::parse("unsafe/fit-in%2Fa%20b.jpg").unwrap();
        assert_eq!(p.image_path().unwrap(), "fit-in/a b.jpg");
    }

    #[test]
    fn maps_onto_the_transform_model() {
        let t = ThumborPath::parse(
            "unsafe/fit-in/-300x200/left/filters:format(jpg):quality(80):upscale()/a.png",
        )
        .unwrap()
        .to_transform()
        .unwrap();
        assert_eq!(
            t,
            Transform {
                width: 300,
                height: 200,
                fit: Fit::FitIn,
                upscale: true,
                flip_h: true,
                flip_v: false,
                h_align: HAlign::Left,
                v_align: VAlign::Middle,
                format: OutputFormat::Fixed(Format::Jpeg),
                quality: Some(80),
                ..Transform::default()
            }
        );
        let back = ThumborPath::from_transform(&t, "a.png");
        assert_eq!(back.to_transform().unwrap(), t);
    }

    #[test]
    fn the_format_filter_names_the_format_and_gif_is_one() {
        for (path, format, choice) in [
            ("unsafe/a.gif", OutputFormat::Source, FormatChoice::Unnamed),
            (
                "unsafe/filters:format(gif)/a.jpg",
                OutputFormat::Fixed(Format::Gif),
                FormatChoice::Named,
            ),
            (
                "unsafe/filters:format(WEBP)/a.gif",
                OutputFormat::Fixed(Format::Webp),
                FormatChoice::Named,
            ),
        ] {
            let t = ThumborPath::parse(path).unwrap().to_target().unwrap();
            assert_eq!(
                (t.transform.format, t.format_choice),
                (format, choice),
                "{path}"
            );
        }
        let compatible = Transform {
            format: OutputFormat::Compatible,
            ..Transform::default()
        };
        assert_eq!(
            ThumborPath::from_transform(&compatible, "a.jpg").to_path(),
            "unsafe/filters:format(compatible)/a.jpg",
            "the choice of auto has its own canonical form, which no URL may use"
        );
    }

    fn transform(path: &str) -> Result<Transform, GrammarError> {
        ThumborPath::parse(path)?.to_transform()
    }

    #[test]
    fn the_fit_in_family_maps_onto_fits_that_cover_or_turn_the_box() {
        for (path, fit, adaptive, upscale) in [
            ("unsafe/fit-in/300x200/a.jpg", Fit::FitIn, false, false),
            // thumbor enlarges in full-fit-in without being asked, as in fill mode.
            ("unsafe/full-fit-in/300x200/a.jpg", Fit::Cover, false, true),
            (
                "unsafe/adaptive-fit-in/300x200/a.jpg",
                Fit::FitIn,
                true,
                false,
            ),
            (
                "unsafe/adaptive-full-fit-in/300x200/a.jpg",
                Fit::Cover,
                true,
                true,
            ),
            (
                "unsafe/adaptive-full-fit-in/300x200/filters:no_upscale()/a.jpg",
                Fit::Cover,
                true,
                false,
            ),
            // A box with one side given has the source's orientation: nothing to turn.
            (
                "unsafe/adaptive-fit-in/300x0/a.jpg",
                Fit::FitIn,
                false,
                false,
            ),
        ] {
            let t = transform(path).unwrap();
            assert_eq!(
                (t.fit, t.adaptive, t.upscale),
                (fit, adaptive, upscale),
                "{path}"
            );
            let back = ThumborPath::from_transform(&t, "a.jpg");
            assert_eq!(back.to_transform(), Ok(t), "{path}");
        }
        assert_eq!(
            ThumborPath::from_transform(
                &transform("unsafe/adaptive-full-fit-in/300x200/a.jpg").unwrap(),
                "a.jpg"
            )
            .to_path(),
            "unsafe/adaptive-full-fit-in/300x200/a.jpg"
        );
    }

    #[test]
    fn imagor_padding_surrounds_what_fill_pads() {
        let padding = |path: &str| transform(path).map(|t| t.padding);
        let p = |left, top, right, bottom| {
            Some(Padding {
                left,
                top,
                right,
                bottom,
            })
        };
        assert_eq!(
            padding("unsafe/fit-in/300x200/10x20:30x40/filters:fill(ff0000)/a.jpg"),
            Ok(p(10, 20, 30, 40))
        );
        assert_eq!(
            padding("unsafe/fit-in/300x200/10x20/filters:fill(none)/a.jpg"),
            Ok(p(10, 20, 10, 20))
        );
        // imagor applies it with `fill` only.
        assert_eq!(padding("unsafe/fit-in/300x200/10x20:30x40/a.jpg"), Ok(None));
        assert_eq!(
            padding("unsafe/fit-in/300x200/0x0/filters:fill(red)/a.jpg"),
            Ok(None)
        );
        assert_eq!(
            padding("unsafe/fit-in/300x200/99999x1/filters:fill(red)/a.jpg"),
            Err(invalid("padding is limited to 16384 pixels a side"))
        );
        let t = transform("unsafe/fit-in/300x200/10x20:30x40/filters:fill(ff0000)/a.jpg").unwrap();
        let back = ThumborPath::from_transform(&t, "a.jpg");
        assert_eq!(
            back.to_path(),
            "unsafe/fit-in/300x200/10x20:30x40/filters:fill(ff0000)/a.jpg"
        );
        assert_eq!(back.to_transform(), Ok(t));
        // Padding around the image (imgproxy's `pd` without `ex:1`) is canonical-only, apart
        // from no padding and from padding around the box, and refused in URLs.
        let around = Transform {
            pad: false,
            background: None,
            ..t
        };
        let canonical = ThumborPath::from_transform(&around, "a.jpg");
        assert_eq!(
            canonical.to_path(),
            "unsafe/fit-in/300x200/10x20:30x40/filters:padding(image)/a.jpg"
        );
        assert_eq!(
            canonical.to_transform(),
            Err(invalid("unknown filter padding"))
        );
        let with_background = Transform {
            background: Some(Color::rgb(0, 0, 255)),
            ..around
        };
        assert_eq!(
            ThumborPath::from_transform(&with_background, "a.jpg").to_path(),
            "unsafe/fit-in/300x200/10x20:30x40/filters:padding(image):background_color(0000ff)\
             /a.jpg"
        );
        // Effects on the padded image stay after it, apart from those before the padding.
        let brightened = |effects: &str, final_effects: &str| Transform {
            effects: effects.parse().unwrap(),
            final_effects: final_effects.parse().unwrap(),
            ..around
        };
        assert_ne!(
            ThumborPath::from_transform(&brightened("brightness(10)", ""), "a.jpg").to_path(),
            ThumborPath::from_transform(&brightened("", "brightness(10)"), "a.jpg").to_path(),
        );
    }

    #[test]
    fn fill_enlarges_small_sources_unless_no_upscale_and_fits_only_with_upscale() {
        let upscale = |path: &str| transform(path).unwrap().upscale;
        // thumbor and imagor: a 190×190 crop filled into 300×200 comes out 300×200.
        assert!(upscale("unsafe/10x10:200x200/300x200/a.jpg"));
        assert!(upscale("unsafe/300x0/a.jpg"));
        assert!(!upscale("unsafe/300x200/filters:no_upscale()/a.jpg"));
        assert!(!upscale(
            "unsafe/300x200/filters:upscale():no_upscale()/a.jpg"
        ));
        assert!(!upscale("unsafe/fit-in/300x200/a.jpg"));
        assert!(upscale("unsafe/fit-in/300x200/filters:upscale()/a.jpg"));
        // Without a size the output is the source's size: nothing to enlarge.
        assert_eq!(transform("unsafe/a.jpg"), Ok(Transform::default()));
        assert_eq!(
            transform("unsafe/300x200/filters:no_upscale(1)/a.jpg"),
            Err(invalid("no_upscale() takes no arguments"))
        );
        // Written back as thumbor says it.
        for path in [
            "unsafe/300x200/a.jpg",
            "unsafe/300x200/filters:no_upscale()/a.jpg",
            "unsafe/fit-in/300x200/filters:upscale()/a.jpg",
            "unsafe/filters:upscale()/a.jpg",
        ] {
            let t = transform(path).unwrap();
            assert_eq!(ThumborPath::from_transform(&t, "a.jpg").to_path(), path);
        }
    }

    #[test]
    fn maps_the_filters_onto_the_transform_model() {
        let red = Some(Color::rgb(255, 0, 0));
        for (path, expected) in [
            (
                "unsafe/filters:rotate(90)/a.jpg",
                Transform {
                    rotation: Rotation::Cw270,
                    ..Transform::default()
                },
            ),
            (
                "unsafe/filters:rotate(270):rotate(180):rotate(360)/a.jpg",
                Transform {
                    rotation: Rotation::Cw270,
                    ..Transform::default()
                },
            ),
            (
                "unsafe/filters:grayscale():blur(5)/a.jpg",
                Transform {
                    grayscale: true,
                    blur: Some(Hundredths(250)),
                    ..Transform::default()
                },
            ),
            (
                "unsafe/filters:blur(10,1.5)/a.jpg",
                Transform {
                    blur: Some(Hundredths(150)),
                    ..Transform::default()
                },
            ),
            (
                "unsafe/filters:blur(4,8):sharpen(2,0.5,true)/a.jpg",
                Transform {
                    blur: Some(Hundredths(200)),
                    sharpen: Some(Sharpen {
                        sigma: Hundredths(50),
                        amount: Hundredths(200),
                    }),
                    ..Transform::default()
                },
            ),
            (
                "unsafe/filters:blur(0):sharpen(0,1)/a.jpg",
                Transform::default(),
            ),
            (
                "unsafe/filters:sharpen(1.5)/a.jpg",
                Transform {
                    sharpen: Some(Sharpen {
                        sigma: Hundredths(150),
                        amount: Hundredths::ONE,
                    }),
                    ..Transform::default()
                },
            ),
            (
                "unsafe/fit-in/300x200/filters:fill(red)/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::FitIn,
                    pad: true,
                    background: red,
                    ..Transform::default()
                },
            ),
            (
                "unsafe/300x200/filters:fill(F00,true):background_color(ff0000)/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    pad: true,
                    background: red,
                    upscale: true,
                    ..Transform::default()
                },
            ),
            (
                "unsafe/filters:fill(none)/a.jpg",
                Transform {
                    pad: true,
                    ..Transform::default()
                },
            ),
            (
                "unsafe/filters:background_color(ff000080)/a.jpg",
                Transform {
                    background: Some(Color {
                        a: 0x80,
                        ..Color::rgb(255, 0, 0)
                    }),
                    ..Transform::default()
                },
            ),
        ] {
            assert_eq!(transform(path), Ok(expected), "{path}");
            let back = ThumborPath::from_transform(&expected, "a.jpg");
            assert_eq!(back.to_transform(), Ok(expected), "{}", back.to_path());
        }
        let t = transform(
            "unsafe/fit-in/10x20/filters:rotate(90):blur(3):sharpen(1,2,1):grayscale():fill(FFF)/a.jpg",
        )
        .unwrap();
        assert_eq!(
            ThumborPath::from_transform(&t, "a.jpg").to_path(),
            "unsafe/fit-in/10x20/filters:rotate(90):grayscale():blur(3):sharpen(1,2,true):fill(ffffff)/a.jpg",
            "the canonical form"
        );
    }

    #[test]
    fn manual_crops_are_pixels_or_ratios() {
        use crate::transform::{Crop as Region, CropAt, Fraction, Span};
        let px = Span::Pixels;
        let fr = |f| Span::Fraction(Fraction(f));
        for (path, crop) in [
            (
                "unsafe/10x20:300x400/a.jpg",
                Region {
                    width: px(290),
                    height: px(380),
                    at: CropAt::Offset(px(10), px(20)),
                },
            ),
            (
                "unsafe/0.1x0.25:0.9x1/a.jpg",
                Region {
                    width: fr(8000),
                    height: fr(7500),
                    at: CropAt::Offset(fr(1000), fr(2500)),
                },
            ),
            (
                "unsafe/0x0:1x5/a.jpg",
                Region {
                    width: px(1),
                    height: px(5),
                    at: CropAt::Offset(px(0), px(0)),
                },
            ),
        ] {
            let t = transform(path).unwrap();
            assert_eq!(t.crop, Some(crop), "{path}");
            let back = ThumborPath::from_transform(&t, "a.jpg");
            assert_eq!(back.to_path(), path);
        }
        assert_eq!(
            transform("unsafe/0x0:0x0/300x200/a.jpg").unwrap().crop,
            None,
            "thumbor's no-crop"
        );
        for bad in [
            "unsafe/10x10:5x20/a.jpg",
            "unsafe/10x10:20x10/a.jpg",
            "unsafe/0.5x0:1.5x10/a.jpg",
            "unsafe/0x0:70000x10/a.jpg",
            "unsafe/0.00001x0:0.00002x1/a.jpg",
            "unsafe/filters:crop(10,10,0,0)/a.jpg",
        ] {
            assert!(
                matches!(transform(bad), Err(GrammarError::Invalid(_))),
                "{bad}: {:?}",
                transform(bad)
            );
        }
        // Crops thumbor cannot say have a canonical form no URL may use.
        for (crop, canonical) in [
            (
                Region {
                    width: px(100),
                    height: fr(5000),
                    at: CropAt::Anchor(HAlign::Right, VAlign::Top),
                },
                "unsafe/filters:crop(100,0.5,right-top)/a.jpg",
            ),
            (
                Region {
                    width: px(1),
                    height: px(1),
                    at: CropAt::Offset(px(0), px(0)),
                },
                "unsafe/filters:crop(1,1,0,0)/a.jpg",
            ),
            (
                Region {
                    width: fr(6000),
                    height: fr(1000),
                    at: CropAt::Offset(fr(5000), fr(0)),
                },
                "unsafe/filters:crop(0.6,0.1,0.5,0.0)/a.jpg",
            ),
        ] {
            let t = Transform {
                crop: Some(crop),
                ..Transform::default()
            };
            assert_eq!(
                ThumborPath::from_transform(&t, "a.jpg").to_path(),
                canonical
            );
            assert_eq!(crop.to_string().parse::<Region>(), Ok(crop));
        }
    }

    #[test]
    fn focal_regions_are_pixels_or_ratios() {
        let px = Span::Pixels;
        let fr = |f| Span::Fraction(Fraction(f));
        for (path, focus) in [
            (
                "unsafe/400x100/filters:focal(146x206:279x360)/a.jpg",
                Focus {
                    left: px(146),
                    top: px(206),
                    right: px(279),
                    bottom: px(360),
                },
            ),
            (
                "unsafe/400x100/filters:focal(0.35x0.25:0.6x0.3)/a.jpg",
                Focus {
                    left: fr(3500),
                    top: fr(2500),
                    right: fr(6000),
                    bottom: fr(3000),
                },
            ),
            (
                "unsafe/10x20:300x400/400x100/filters:focal(50x50:50x50)/a.jpg",
                Focus {
                    left: px(50),
                    top: px(50),
                    right: px(50),
                    bottom: px(50),
                },
            ),
        ] {
            let t = transform(path).unwrap();
            assert_eq!(t.focus, Some(focus), "{path}");
            assert_eq!(ThumborPath::from_transform(&t, "a.jpg").to_path(), path);
        }
        for bad in [
            "unsafe/filters:focal()/a.jpg",
            "unsafe/filters:focal(10x10:5x20)/a.jpg",
            "unsafe/filters:focal(1.5x0:2x10)/a.jpg",
            "unsafe/filters:focal(0x0:1x1,pixels)/a.jpg",
        ] {
            assert!(
                matches!(transform(bad), Err(GrammarError::Invalid(_))),
                "{bad}: {:?}",
                transform(bad)
            );
        }
        assert_eq!(
            transform("unsafe/filters:focal(1x1:2x2):focal(1x1:3x3)/a.jpg"),
            Err(GrammarError::Unsupported("filter focal given twice".into()))
        );
        let tiny = Transform {
            focus: Some(Focus {
                left: px(0),
                top: px(0),
                right: px(1),
                bottom: px(1),
            }),
            ..Transform::default()
        };
        assert_eq!(
            ThumborPath::from_transform(&tiny, "a.jpg").to_path(),
            "unsafe/filters:focal(0x0:1x1,pixels)/a.jpg",
            "a region in pixels that would read as ratios is canonical-only"
        );
    }

    #[test]
    fn filter_order_and_repetition_rules() {
        for (path, what) in [
            (
                "unsafe/filters:fill(red):grayscale():fill(blue)/a.jpg",
                "filter fill after grayscale after fill or background_color",
            ),
            (
                "unsafe/filters:background_color(red):noise(2):background_color(red)/a.jpg",
                "filter background_color after noise after fill or background_color",
            ),
            (
                "unsafe/filters:fill(red):background_color(blue)/a.jpg",
                "fill and background_color with different colours",
            ),
            (
                "unsafe/filters:sharpen(1,1,false)/a.jpg",
                "sharpen on every channel (luminance_only false)",
            ),
            (
                "unsafe/filters:fill(red,false)/a.jpg",
                "fill that keeps transparent areas (fill_transparent false)",
            ),
            ("unsafe/filters:fill(auto)/a.jpg", "fill(auto)"),
            ("unsafe/filters:fill(blur)/a.jpg", "fill(blur)"),
        ] {
            assert_eq!(
                transform(path),
                Err(GrammarError::Unsupported(what.into())),
                "{path}"
            );
        }
        // Rotation commutes with padding, so its place among the filters does not matter.
        assert_eq!(
            transform("unsafe/fit-in/1x2/filters:fill(red):rotate(90)/a.jpg"),
            transform("unsafe/fit-in/1x2/filters:rotate(90):fill(red)/a.jpg"),
        );
    }

    #[test]
    fn filters_apply_in_the_order_given() {
        let effects = |s: &str| s.parse::<Effects>().unwrap();
        // Effects after fill or background_color run on the padded (and rotated) image.
        let t =
            transform("unsafe/fit-in/300x200/filters:fill(ffd700):rotate(90):grayscale()/a.jpg")
                .unwrap();
        assert_eq!((t.pad, t.grayscale), (true, false));
        assert_eq!(t.final_effects, effects("grayscale()"));
        assert_eq!(t.rotation, Rotation::Cw270);
        let t = transform("unsafe/filters:background_color(red):blur(2):sharpen(1)/a.jpg").unwrap();
        assert_eq!(t.blur, None);
        assert_eq!(t.final_effects, effects("blur(2):sharpen(1,1,true)"));
        // Before them, colour filters run before the padding, after grayscale, blur and
        // sharpen in their own fields; once a list has started, those join it in order.
        let t =
            transform("unsafe/filters:blur(3):brightness(10):blur(2):fill(red):contrast(-5)/a.jpg")
                .unwrap();
        assert_eq!(t.blur, Hundredths::from_f64(1.5));
        assert_eq!(t.effects, effects("brightness(10):blur(2)"));
        assert_eq!(t.final_effects, effects("contrast(-5)"));
        // A filter given twice applies twice.
        let t = transform("unsafe/filters:sharpen(1):sharpen(2)/a.jpg").unwrap();
        assert_eq!(t.effects, effects("sharpen(1,2,true)"));
        // A rotation after corners turns them: the final effects run after the rotation.
        let t = transform(
            "unsafe/filters:fill(red):round_corner(10|20,0,0,0):rotate(90):round_corner(5,0,0,0)/a.jpg",
        )
        .unwrap();
        assert_eq!(
            t.final_effects,
            effects("round_corner(20|10,0,0,0):round_corner(5,0,0,0)")
        );
        // Every one of these is its own canonical form.
        for path in [
            "unsafe/fit-in/300x200/filters:rotate(90):fill(ffd700):grayscale()/a.jpg",
            "unsafe/filters:grayscale():brightness(10):contrast(-20):saturation(30):rgb(1,2,3)\
             :noise(5):round_corner(3|4,1,2,3,true)/a.jpg",
            "unsafe/filters:brightness(10):fill(ff0000):round_corner(3|4,1,2,3)/a.jpg",
            "unsafe/filters:blur(2):background_color(ff0000):blur(4):grayscale()/a.jpg",
        ] {
            let t = transform(path).unwrap();
            let back = ThumborPath::from_transform(&t, "a.jpg").to_path();
            assert_eq!(back, path.replace(' ', ""), "{path}");
        }
        // Final effects without padding are written before it, turned back by the rotation.
        let t = Transform {
            rotation: Rotation::Cw90,
            final_effects: effects("round_corner(1|2,0,0,0):noise(3)"),
            ..Transform::default()
        };
        let back = transform(&ThumborPath::from_transform(&t, "a.jpg").to_path()).unwrap();
        assert_eq!(back.effects, effects("round_corner(2|1,0,0,0):noise(3)"));
        assert_eq!(back.rotation, Rotation::Cw90);
    }

    #[test]
    fn colour_filters_check_their_arguments() {
        let effects = |s: &str| s.parse::<Effects>().unwrap();
        for (path, list) in [
            ("brightness(-100)", "brightness(-100)"),
            ("contrast(100)", "contrast(100)"),
            ("saturation(-40)", "saturation(-40)"),
            ("rgb(10,-5,0)", "rgb(10,-5,0)"),
            ("noise(100)", "noise(100)"),
            (
                "round_corner(20,255,255,255)",
                "round_corner(20,255,255,255)",
            ),
            (
                "round_corner(20|5,0,0,0,1)",
                "round_corner(20|5,0,0,0,true)",
            ),
            ("round_corner(20,0,0,0,false)", "round_corner(20,0,0,0)"),
            ("noise(10,42)", "noise(10)"),
        ] {
            let t = transform(&format!("unsafe/filters:{path}/a.jpg")).unwrap();
            assert_eq!(t.effects, effects(list), "{path}");
        }
        for (filter, message) in [
            (
                "brightness(101)",
                "brightness: \"101\" is not a whole number from -100 to 100",
            ),
            (
                "contrast(x)",
                "contrast: \"x\" is not a whole number from -100 to 100",
            ),
            ("saturation()", "saturation() takes 1 arguments"),
            ("rgb(1,2)", "rgb() takes 3 arguments"),
            (
                "noise(101)",
                "noise: \"101\" is not a whole number from 0 to 100",
            ),
            ("noise(10,x)", "noise: seed \"x\" is not a whole number"),
            (
                "round_corner(0,0,0,0)",
                "round_corner: radius \"0\" is not a whole number from 1 to 16384",
            ),
            (
                "round_corner(5,0,0)",
                "round_corner() takes 4 or 5 arguments",
            ),
            (
                "round_corner(5,0,0,300)",
                "round_corner: colour channel \"300\" is not a whole number from 0 to 255",
            ),
        ] {
            assert_eq!(
                transform(&format!("unsafe/filters:{filter}/a.jpg")),
                Err(GrammarError::Invalid(message.into())),
                "{filter}"
            );
        }
        // proportion scales the fitted image, before the effects it does not commute with.
        let t = transform("unsafe/fit-in/300x200/filters:brightness(5):proportion(0.5)/a.jpg");
        assert_eq!(t.map(|t| t.proportion), Ok(Hundredths::from_f64(0.5)));
        let t = transform("unsafe/filters:proportion(1.25):blur(2):fill(red)/a.jpg").unwrap();
        assert_eq!(
            ThumborPath::from_transform(&t, "a.jpg").to_path(),
            "unsafe/filters:proportion(1.25):blur(2):fill(ff0000)/a.jpg"
        );
        for (path, after) in [
            (
                "blur(2):proportion(0.5)",
                "blur, sharpen, noise or round_corner",
            ),
            (
                "noise(2):proportion(0.5)",
                "blur, sharpen, noise or round_corner",
            ),
            ("fill(red):proportion(0.5)", "fill or background_color"),
            ("proportion(0.5):proportion(0.5)", "proportion"),
        ] {
            assert_eq!(
                transform(&format!("unsafe/filters:{path}/a.jpg")),
                Err(GrammarError::Unsupported(format!(
                    "filter proportion after {after}"
                ))),
                "{path}"
            );
        }
        for bad in [
            "proportion(0)",
            "proportion(10.01)",
            "proportion(-1)",
            "proportion()",
        ] {
            assert!(
                matches!(
                    transform(&format!("unsafe/filters:{bad}/a.jpg")),
                    Err(GrammarError::Invalid(_))
                ),
                "{bad}"
            );
        }
        // No-ops: outputs carry no metadata.
        for noop in ["strip_exif()", "strip_icc()", "strip_metadata()"] {
            assert_eq!(
                transform(&format!("unsafe/filters:{noop}/a.jpg")),
                Ok(Transform::default()),
                "{noop}"
            );
        }
        assert_eq!(
            transform("unsafe/filters:keep_icc():strip_metadata()/a.jpg"),
            Err(GrammarError::Invalid(
                "keep_icc() and strip_metadata() contradict each other".into()
            ))
        );
        assert_eq!(
            transform("unsafe/filters:watermark(w.png,0,0,0):brightness(5)/a.jpg"),
            Err(GrammarError::Unsupported(
                "filter brightness after watermark".into()
            ))
        );
        assert_eq!(
            transform("unsafe/filters:watermark(w.png,0,0,0):proportion(0.5)/a.jpg"),
            Err(GrammarError::Unsupported(
                "filter proportion after watermark".into()
            ))
        );
    }

    #[test]
    fn unsupported_features_are_named_not_ignored() {
        for (path, what) in [
            ("unsafe/meta/a.jpg", "meta"),
            (
                "unsafe/10x10/filters:label(hi,1,1,10)/a.jpg",
                "filter label",
            ),
            ("unsafe/filters:format(jxl)/a.jpg", "format(jxl)"),
        ] {
            let r = ThumborPath::parse(path).unwrap().to_transform();
            assert_eq!(r, Err(GrammarError::Unsupported(what.into())), "{path}");
        }
    }

    /// `watermark(…)` rows: canonical path ⇄ the watermark it asks for.
    #[test]
    fn watermarks_map_onto_the_model_and_back() {
        use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};
        let w = |x, y, opacity, width: Option<Span>, height: Option<Span>| Watermark {
            image: WatermarkImage::Path("wm/logo.png".into()),
            x,
            y,
            opacity: Fraction(opacity),
            width,
            height,
        };
        let (px, pct) = (Offset::Pixels, Offset::Percent);
        let frac = |f| Some(Span::Fraction(Fraction(f)));
        for (path, want) in [
            (
                "unsafe/filters:watermark(wm/logo.png,10,-10,50)/a.jpg",
                w(Axis::Start(px(10)), Axis::End(px(10)), 5000, None, None),
            ),
            (
                "unsafe/filters:watermark(wm/logo.png,center,center,0)/a.jpg",
                w(
                    Axis::Center(Offset::ZERO),
                    Axis::Center(Offset::ZERO),
                    10_000,
                    None,
                    None,
                ),
            ),
            (
                "unsafe/filters:watermark(wm/logo.png,-0,0,100)/a.jpg",
                w(
                    Axis::End(Offset::ZERO),
                    Axis::Start(Offset::ZERO),
                    0,
                    None,
                    None,
                ),
            ),
            (
                "unsafe/filters:watermark(wm/logo.png,20p,-5p,33.33)/a.jpg",
                w(Axis::Start(pct(20)), Axis::End(pct(5)), 6667, None, None),
            ),
            (
                "unsafe/300x200/filters:format(png):watermark(wm/logo.png,repeat,repeat,25,20)/a.jpg",
                w(Axis::Repeat(0), Axis::Repeat(0), 7500, frac(2000), None),
            ),
            (
                "unsafe/filters:watermark(wm/logo.png,repeat,10,0,none,12.5)/a.jpg",
                w(
                    Axis::Repeat(0),
                    Axis::Start(px(10)),
                    10_000,
                    None,
                    frac(1250),
                ),
            ),
            (
                "unsafe/filters:fill(ff0000):watermark(wm/logo.png,0,0,0,50,50)/a.jpg",
                w(
                    Axis::Start(px(0)),
                    Axis::Start(px(0)),
                    10_000,
                    frac(5000),
                    frac(5000),
                ),
            ),
        ] {
            let p = ThumborPath::parse(path).unwrap();
            let t = p.to_target().unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(t.watermark.as_ref(), Some(&want), "{path}");
            let mut back = ThumborPath::from_transform(&t.transform, &t.image);
            back.push_watermark(&want);
            assert_eq!(back.to_path(), path, "{path}");
        }
        // imagor's keywords and thumbor's "0 is no ratio".
        let t =
            ThumborPath::parse("unsafe/filters:watermark(a%2Cb.png,right,bottom,10,0,none)/a.jpg")
                .unwrap()
                .to_target()
                .unwrap();
        let wm = t.watermark.unwrap();
        assert_eq!(wm.image, WatermarkImage::Path("a,b.png".into()));
        assert_eq!(
            (wm.x, wm.y),
            (Axis::End(Offset::ZERO), Axis::End(Offset::ZERO))
        );
        assert_eq!((wm.width, wm.height), (None, None));
        // Canonical-only forms: what thumbor cannot say is written so that URLs cannot use it.
        let mut odd = Watermark::new(WatermarkImage::Object {
            storage: "s3".into(),
            key: "wm/logo.png".into(),
        });
        odd.x = Axis::Center(px(5));
        odd.width = Some(Span::Pixels(40));
        let mut canonical = ThumborPath::new("a.jpg");
        canonical.push_watermark(&odd);
        assert_eq!(
            canonical.to_path(),
            "unsafe/filters:watermark(s3/wm%2Flogo.png,center+5,0,0,40px)/a.jpg"
        );
        assert!(matches!(
            ThumborPath::parse(&canonical.to_path())
                .unwrap()
                .to_target(),
            Err(GrammarError::Invalid(_))
        ));
    }

    #[test]
    fn watermark_filters_are_checked() {
        for (path, what) in [
            (
                "unsafe/filters:watermark(http://x/l.png,0,0,0)/a.jpg",
                "watermark images from URLs",
            ),
            (
                "unsafe/filters:watermark(l.png,0,0,0):rotate(90)/a.jpg",
                "filter rotate after watermark",
            ),
            (
                "unsafe/filters:watermark(l.png,0,0,0):fill(red)/a.jpg",
                "filter fill after watermark",
            ),
            (
                "unsafe/filters:watermark(l.png,0,0,0):blur(2)/a.jpg",
                "filter blur after watermark",
            ),
            (
                "unsafe/filters:watermark(l.png,0,0,0):watermark(l.png,0,0,0)/a.jpg",
                "filter watermark after watermark",
            ),
        ] {
            let r = ThumborPath::parse(path).unwrap().to_target();
            assert_eq!(r, Err(GrammarError::Unsupported(what.into())), "{path}");
        }
        for bad in [
            "unsafe/filters:watermark(l.png,0,0)/a.jpg",
            "unsafe/filters:watermark(,0,0,0)/a.jpg",
            "unsafe/filters:watermark(l.png,x,0,0)/a.jpg",
            "unsafe/filters:watermark(l.png,101p,0,0)/a.jpg",
            "unsafe/filters:watermark(l.png,0,0,101)/a.jpg",
            "unsafe/filters:watermark(l.png,0,0,0,-5)/a.jpg",
            "unsafe/filters:watermark(l.png,0,0,0,101)/a.jpg",
            "unsafe/filters:watermark(l.png,start+1,0,0)/a.jpg",
            "unsafe/filters:watermark(l%ZZ.png,0,0,0)/a.jpg",
        ] {
            assert!(
                matches!(
                    ThumborPath::parse(bad).unwrap().to_target(),
                    Err(GrammarError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(
            ThumborPath::parse("unsafe/filters:rotate(90):watermark(l.png,0,0,0):quality(5)/a.jpg")
                .unwrap()
                .to_target()
                .is_ok(),
            "filters that do not change pixels may follow"
        );
    }

    #[test]
    fn expire_is_imagors_unix_milliseconds() {
        let p =
            ThumborPath::parse("unsafe/filters:expire(1700000000000):quality(5)/a.jpg").unwrap();
        let t = p.to_target().unwrap();
        assert_eq!(t.expires, Some(Expiry::UnixMillis(1_700_000_000_000)));
        assert_eq!(t.transform.quality, Some(5));
        assert_eq!(t.image, "a.jpg");
        let none = ThumborPath::parse("unsafe/a.jpg").unwrap();
        assert_eq!(none.to_target().unwrap().expires, None);
        for bad in [
            "expire()",
            "expire(-1)",
            "expire(1.5)",
            "expire(99999999999999999999999)",
        ] {
            let p = ThumborPath::parse(&format!("unsafe/filters:{bad}/a.jpg")).unwrap();
            assert!(
                matches!(p.to_target(), Err(GrammarError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn max_bytes_and_avif_map_onto_the_transform_and_back() {
        let path = "unsafe/fit-in/300x200/filters:format(avif):quality(50):max_bytes(40000)/a.jpg";
        let t = ThumborPath::parse(path).unwrap().to_transform().unwrap();
        assert_eq!(t.format, OutputFormat::Fixed(Format::Avif));
        assert_eq!((t.quality, t.max_bytes), (Some(50), Some(40_000)));
        assert_eq!(ThumborPath::from_transform(&t, "a.jpg").to_path(), path);
        let t = ThumborPath::parse("unsafe/filters:max_bytes(4294967295)/a.jpg")
            .unwrap()
            .to_transform()
            .unwrap();
        assert_eq!(t.max_bytes, Some(u32::MAX));
        for (arg, progressive) in [("true", true), ("false", false), ("1", true), ("0", false)] {
            let path = format!("unsafe/filters:progressive({arg})/a.jpg");
            let t = ThumborPath::parse(&path).unwrap().to_transform().unwrap();
            assert_eq!(t.progressive, Some(progressive), "{path}");
            assert_eq!(
                ThumborPath::from_transform(&t, "a.jpg").to_path(),
                format!("unsafe/filters:progressive({progressive})/a.jpg")
            );
        }
    }

    #[test]
    fn bad_filter_arguments_are_invalid() {
        for path in [
            "unsafe/filters:quality(0)/a.jpg",
            "unsafe/filters:quality(101)/a.jpg",
            "unsafe/filters:quality(x)/a.jpg",
            "unsafe/filters:format(bmpx)/a.jpg",
            "unsafe/filters:format(compatible)/a.jpg",
            "unsafe/filters:max_bytes(0)/a.jpg",
            "unsafe/filters:max_bytes(-5)/a.jpg",
            "unsafe/filters:max_bytes(1.5)/a.jpg",
            "unsafe/filters:max_bytes(4294967296)/a.jpg",
            "unsafe/filters:max_bytes()/a.jpg",
            "unsafe/filters:progressive(maybe)/a.jpg",
            "unsafe/filters:progressive()/a.jpg",
            "unsafe/filters:upscale(1)/a.jpg",
            "unsafe/filters:nonsense(1)/a.jpg",
            "unsafe/filters:rotate(45)/a.jpg",
            "unsafe/filters:rotate()/a.jpg",
            "unsafe/filters:rotate(x)/a.jpg",
            "unsafe/filters:grayscale(1)/a.jpg",
            "unsafe/filters:blur()/a.jpg",
            "unsafe/filters:blur(201)/a.jpg",
            "unsafe/filters:blur(5,101)/a.jpg",
            "unsafe/filters:blur(-1)/a.jpg",
            "unsafe/filters:sharpen(11,1,true)/a.jpg",
            "unsafe/filters:sharpen(1,1,maybe)/a.jpg",
            "unsafe/filters:sharpen(1,2,true,4)/a.jpg",
            "unsafe/filters:fill()/a.jpg",
            "unsafe/filters:fill(notacolour)/a.jpg",
            "unsafe/filters:fill(red,perhaps)/a.jpg",
            "unsafe/filters:background_color(red,blue)/a.jpg",
            "unsafe/fit-in/stretch/1x1/a.jpg",
            "unsafe/filters:keep_icc(1)/a.jpg",
            "unsafe/filters:keep_icc():strip_icc()/a.jpg",
            "unsafe/filters:trim(10,ff0000)/a.jpg",
        ] {
            let r = ThumborPath::parse(path).unwrap().to_transform();
            assert!(matches!(r, Err(GrammarError::Invalid(_))), "{path}: {r:?}");
        }
    }

    #[test]
    fn trim_smart_and_keep_icc_map_onto_the_transform_and_back() {
        let trim = |threshold, color| {
            Some(crate::transform::Trim {
                threshold,
                color,
                equal_hor: false,
                equal_ver: false,
            })
        };
        // (URL, transform, canonical path of the transform)
        for (path, expected, canonical) in [
            (
                "unsafe/trim/a.jpg",
                Transform {
                    trim: trim(0, TrimColor::TopLeft),
                    ..Transform::default()
                },
                "unsafe/trim/a.jpg",
            ),
            (
                "unsafe/trim:top-left:0/a.jpg",
                Transform {
                    trim: trim(0, TrimColor::TopLeft),
                    ..Transform::default()
                },
                "unsafe/trim/a.jpg",
            ),
            (
                "unsafe/trim:bottom-right:25/300x200/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    trim: trim(25, TrimColor::BottomRight),
                    upscale: true,
                    ..Transform::default()
                },
                "unsafe/trim:bottom-right:25/300x200/a.jpg",
            ),
            (
                "unsafe/trim:40/300x200/smart/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    trim: trim(40, TrimColor::TopLeft),
                    smart: true,
                    upscale: true,
                    ..Transform::default()
                },
                "unsafe/trim:40/300x200/smart/a.jpg",
            ),
            (
                "unsafe/300x200/smart/filters:focal(0.5x0.5:0.5x0.5)/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    smart: true,
                    focus: Some(Focus::point(Fraction(5000), Fraction(5000))),
                    upscale: true,
                    ..Transform::default()
                },
                "unsafe/300x200/smart/filters:focal(0.5x0.5:0.5x0.5)/a.jpg",
            ),
            (
                "unsafe/filters:keep_icc():format(png)/a.jpg",
                Transform {
                    keep_icc: true,
                    format: OutputFormat::Fixed(Format::Png),
                    ..Transform::default()
                },
                "unsafe/filters:format(png):keep_icc()/a.jpg",
            ),
            (
                "unsafe/filters:strip_icc()/a.jpg",
                Transform::default(),
                "unsafe/a.jpg",
            ),
        ] {
            let t = ThumborPath::parse(path).unwrap().to_transform();
            assert_eq!(t, Ok(expected), "{path}");
            let back = ThumborPath::from_transform(&expected, "a.jpg");
            assert_eq!(back.to_path(), canonical, "{path}");
            assert_eq!(back.to_transform(), Ok(expected), "{canonical}");
        }
        // What thumbor cannot say is canonical-only, refused in URLs.
        let imgproxy_trim = Transform {
            trim: Some(crate::transform::Trim {
                threshold: 10,
                color: TrimColor::Color(Color::rgb(255, 0, 0)),
                equal_hor: true,
                equal_ver: false,
            }),
            ..Transform::default()
        };
        let canonical = ThumborPath::from_transform(&imgproxy_trim, "a.jpg");
        assert_eq!(
            canonical.to_path(),
            "unsafe/filters:trim(10,ff0000,equal-hor)/a.jpg"
        );
        assert!(matches!(
            canonical.to_transform(),
            Err(GrammarError::Invalid(_))
        ));
    }
}
