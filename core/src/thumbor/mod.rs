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

use crate::grammar::{Expiry, FormatChoice, Target, invalid};
use crate::transform::{
    Crop as CropRegion, CropAt, Fit, Fraction, HAlign, MAX_CROP_PIXELS, MAX_DIMENSION,
    OutputFormat, Rotation, Span, Transform, TrimColor, VAlign,
};
use crate::watermark::Watermark;

mod filters;

use filters::{
    FilterState, apply_filter, effect_filters, enlarges_by_default, filter_args, focal_args,
    parse_expire, parse_watermark, watermark_args,
};

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
            (Fit::Auto | Fit::AutoDown, _) => Some(FitIn::FitIn),
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
        if t.fit == Fit::AutoDown {
            // The same with fill's crop to the box's ratio (imgproxy `rt:auto` with a dpr).
            filter("fit", "auto-down".to_owned());
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
mod tests;
