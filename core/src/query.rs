//! The query-string grammar (Skymage style): parse ⇄ generate, and its mapping onto
//! [`Transform`].
//!
//! ```text
//! HANDLE/IMAGE-PATH[?NAME=VALUE[&NAME=VALUE…]]
//! ```
//!
//! Mount a route at `/v1/ex/` to accept Skymage's external-storage URLs
//! (`/v1/ex/<storage-handle>/<path>?w=800&h=600&fit=cover`) unchanged. `HANDLE` names a storage
//! the route allows (see `RouteConfig::handles`). Every parameter is in [`PARAMS`]; unknown or
//! repeated parameters are 400.
//!
//! `fit` follows Skymage's documentation: `clip` (the default) and `cover` fill the box and crop
//! what overflows, `crop` does the same anchored by `gravity`, `fill` stretches to the box, and
//! `scale-down` fits inside the box without enlarging; all but `scale-down` enlarge small
//! sources. `contain` letterboxes: it fits inside the box, enlarging, and pads to exactly the
//! box with `bg` (transparent without it; white in JPEG), the image placed by `gravity`.
//! Since every fill-type mode enlarges, a transform that fills or stretches without enlarging
//! has no URL in this grammar ([`QueryUrl::from_transform`] returns `None`), nor have flips,
//! rotation, grayscale and manual crops, which the grammar does not document (`crop` is 501).
//!
//! `gravity=XxY` (fractions 0–1 of the image, e.g. `0.5x0.3`) is a focal point: the crop of
//! `cover`/`crop` is centred on it as far as the image allows.
//!
//! `gravity=smart` (or `attention`, libvips' name) places the crop by pixmesh's attention
//! heuristic: edges, skin tones and saturation (see [`Transform::smart`]); `auto`, `face` and
//! `entropy` are 501.
//!
//! `trim=THRESHOLD` (0–255) cuts uniform borders of the top-left pixel's colour before
//! anything else; THRESHOLD is the largest channel difference still counted as border (see
//! [`crate::transform::Trim`]). The grammar has no way to keep the ICC profile.
//!
//! `blur=SIGMA` is a Gaussian blur and `sharpen=SIGMA` an unsharp mask of strength 1 (sigma in
//! pixels, at most 100; 0 asks for nothing). `bg` (`background`) is a hex colour (`#` optional;
//! 3, 4, 6 or 8 digits, the last ones alpha) or a CSS name: padding is filled with it and
//! transparency composited onto it.
//!
//! `f` (`format`) is `jpg`/`jpeg`, `png`, `webp`, `gif` (the first frame) or `avif`, or `auto`: chosen
//! from the client's `Accept` header (see [`crate::accept`]); without it, the source's format,
//! or the client's choice on a route with `auto_format`.
//!
//! `watermark=PATH` composites an image from the URL's storage (its path resolved like the
//! source's) onto the final image: `wm_pos` (a gravity name, `center` by default, or `repeat`
//! for tiles), `wm_x`/`wm_y` (whole pixels, inwards from the edges the gravity names; for tiles
//! the spacing), `wm_opacity` (0–1, default 1) and `wm_scale` (0–1: fit inside that fraction of
//! the result's width and height). `wm_…` without `watermark` is 400.
//!
//! `sig` (signature, see [`crate::sign::QuerySigner`]) and `exp` (unix seconds, 410 after it) are
//! the security parameters.
//!
//! The round-trip table in the tests is this module's specification.

use crate::grammar::{
    Expiry, FormatChoice, GrammarError, Target, apply_dpr, decode_query_component, invalid,
    parse_color, parse_decimal, parse_dimension, parse_format, parse_quality, parse_sigma,
    parse_unix_seconds, query_pairs, sharpen, unsupported,
};
use crate::percent::{decode, encode, is_unreserved};
use crate::transform::{
    Color, Fit, Focus, Fraction, HAlign, Hundredths, MAX_DIMENSION, OutputFormat, Rotation, Span,
    Transform, Trim, TrimColor, VAlign,
};
use crate::watermark::{
    Offset, Watermark, WatermarkImage, axes_placed, opacity_text, placement_of,
};

/// Most query parameters one URL may carry.
pub const MAX_PARAMS: usize = 32;

/// Name of the signature parameter.
pub const SIGNATURE_PARAM: &str = "sig";

/// A parsed query-style URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryUrl {
    /// The storage handle (first path segment).
    pub handle: String,
    /// The image path as written (still percent-encoded).
    pub image: String,
    /// The query parameters, decoded, in order.
    pub params: Vec<(String, String)>,
}

impl QueryUrl {
    /// Parses `path` (after the route prefix, with or without its leading `/`) and the raw
    /// `query` (without `?`).
    pub fn parse(path: &str, query: &str) -> Result<Self, GrammarError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let (handle, image) = path
            .split_once('/')
            .ok_or_else(|| invalid("expected HANDLE/IMAGE-PATH"))?;
        if !is_handle(handle) {
            return Err(invalid(format!("bad storage handle {handle:?}")));
        }
        if image.is_empty() {
            return Err(invalid("missing image path"));
        }
        let mut params = Vec::new();
        for (name, value) in query_pairs(query) {
            if params.len() == MAX_PARAMS {
                return Err(invalid(format!("more than {MAX_PARAMS} query parameters")));
            }
            params.push((
                decode_query_component(name)?,
                decode_query_component(value)?,
            ));
        }
        Ok(QueryUrl {
            handle: handle.to_owned(),
            image: image.to_owned(),
            params,
        })
    }

    /// The URL without the route prefix: `HANDLE/IMAGE[?QUERY]`.
    pub fn to_path(&self) -> String {
        let mut out = format!("{}/{}", self.handle, self.image);
        for (i, (name, value)) in self.params.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&encode(name, is_unreserved));
            out.push('=');
            out.push_str(&encode(value, is_unreserved));
        }
        out
    }

    /// Everything the URL asks for, grammar-neutral.
    pub fn to_target(&self) -> Result<Target, GrammarError> {
        let mut p = Params::default();
        let mut seen: Vec<&str> = Vec::new();
        for (name, value) in &self.params {
            let spec = PARAMS
                .iter()
                .find(|s| s.names.contains(&name.as_str()))
                .ok_or_else(|| invalid(format!("unknown parameter {name:?}")))?;
            if seen.contains(&spec.names[0]) {
                return Err(invalid(format!("{name} is given twice")));
            }
            seen.push(spec.names[0]);
            (spec.apply)(&mut p, name, value)?;
        }
        let mut transform = Transform {
            width: p.width,
            height: p.height,
            fit: p.fit,
            upscale: p.upscale,
            h_align: p.h_align,
            v_align: p.v_align,
            format: p.format,
            quality: p.quality,
            blur: p.blur,
            sharpen: sharpen(p.sharpen, Some(Hundredths::ONE)),
            pad: p.pad,
            background: p.background,
            focus: p.focus,
            trim: p.trim,
            smart: p.smart,
            ..Transform::default()
        };
        apply_dpr(&mut transform, p.dpr)?;
        let watermark = p.watermark()?;
        let image = decode(&self.image)
            .ok_or_else(|| invalid("the image path has a malformed percent escape"))?;
        Ok(Target {
            handle: Some(self.handle.clone()),
            image,
            version: None,
            transform,
            format_choice: p.format_choice,
            expires: p.expires,
            watermark,
        })
    }

    /// This URL with the watermark `w` (its parameters last); `None` when the grammar cannot say
    /// it (an image other than a path, percentages, tiling along one axis only, a size other
    /// than one fraction of both sides).
    pub fn with_watermark(mut self, w: &Watermark) -> Option<Self> {
        let WatermarkImage::Path(path) = &w.image else {
            return None;
        };
        let (anchor, (dx, dy)) = placement_of(w.x, w.y)?;
        let pos = match anchor {
            None => "repeat",
            Some(anchor) => GRAVITIES.iter().find(|g| (g.1, g.2) == anchor)?.0,
        };
        let scale = match (w.width, w.height) {
            (None, None) => None,
            (Some(Span::Fraction(a)), Some(Span::Fraction(b))) if a == b => Some(a),
            _ => return None,
        };
        let mut param = |n: &str, v: String| self.params.push((n.to_owned(), v));
        param("watermark", path.clone());
        if pos != "center" {
            param("wm_pos", pos.to_owned());
        }
        if dx != 0 {
            param("wm_x", dx.to_string());
        }
        if dy != 0 {
            param("wm_y", dy.to_string());
        }
        if w.opacity != Fraction::ONE {
            param("wm_opacity", opacity_text(w.opacity));
        }
        if let Some(s) = scale {
            param("wm_scale", s.to_string());
        }
        Some(self)
    }

    /// The canonical unsigned URL asking for `t` on `image` in storage `handle`; `None` when the
    /// grammar cannot express `t` (flips; fill or stretch without enlarging; the format "auto"
    /// chose for a client without WebP; the JPEG scan mode and a byte budget, which it does not
    /// document).
    pub fn from_transform(t: &Transform, handle: &str, image: &str) -> Option<Self> {
        if !t.effects.is_empty() || !t.final_effects.is_empty() || t.proportion.is_some() {
            return None; // thumbor's ordered filters and proportion
        }
        let fit = match (t.fit, t.upscale, t.pad) {
            _ if t.adaptive || t.padding.is_some() => return None,
            (Fit::FitIn, true, true) => Some("contain"),
            (_, _, true) => return None,
            (Fit::Fill, true, _) => None,
            (Fit::Stretch, true, _) => Some("fill"),
            (Fit::FitIn, false, _) => Some("scale-down"),
            _ => return None,
        };
        if t.flip_h
            || t.flip_v
            || t.rotation != Rotation::None
            || t.grayscale
            || t.crop.is_some()
            || t.progressive.is_some()
            || t.max_bytes.is_some()
            || t.keep_icc
            || t.trim.is_some_and(|trim| {
                trim.color != TrimColor::TopLeft || trim.equal_hor || trim.equal_ver
            })
        {
            return None;
        }
        if t.sharpen.is_some_and(|s| s.amount != Hundredths::ONE) {
            return None;
        }
        let mut params = Vec::new();
        let mut param = |n: &str, v: String| params.push((n.to_owned(), v));
        if t.width > 0 {
            param("w", t.width.to_string());
        }
        if t.height > 0 {
            param("h", t.height.to_string());
        }
        let focal_point = match t.focus {
            None => None,
            Some(_) if (t.h_align, t.v_align) != (HAlign::Center, VAlign::Middle) => return None,
            Some(f) => f
                .as_point()
                .map(|(x, y)| format!("{}x{}", x.as_f64(), y.as_f64())),
        };
        if t.focus.is_some() && focal_point.is_none() {
            return None;
        }
        // A focus wins over smart crop; the grammar's one `gravity` says one or the other.
        if t.smart
            && (t.focus.is_some() || (t.h_align, t.v_align) != (HAlign::Center, VAlign::Middle))
        {
            return None;
        }
        let gravity = GRAVITIES
            .iter()
            .find(|g| (g.1, g.2) == (t.h_align, t.v_align))
            .map(|g| g.0.to_owned())
            .filter(|g| g != "center")
            .or(focal_point)
            .or(t.smart.then(|| "smart".to_owned()));
        match (fit, &gravity) {
            // `clip` and `crop` mean the same; `crop` says the gravity matters.
            (None, Some(_)) => param("fit", "crop".to_owned()),
            (Some(f), _) => param("fit", f.to_owned()),
            (None, None) => {}
        }
        if let Some(g) = gravity {
            param("gravity", g);
        }
        match t.format {
            OutputFormat::Source => {}
            OutputFormat::Fixed(f) => param("f", f.name().to_owned()),
            OutputFormat::Compatible => return None,
        }
        if let Some(q) = t.quality {
            param("q", q.to_string());
        }
        if let Some(trim) = t.trim {
            param("trim", trim.threshold.to_string());
        }
        if let Some(sigma) = t.blur {
            param("blur", sigma.to_string());
        }
        if let Some(s) = t.sharpen {
            param("sharpen", s.sigma.to_string());
        }
        if let Some(c) = t.background {
            param("bg", c.hex());
        }
        Some(QueryUrl {
            handle: handle.to_owned(),
            image: encode(image, |b| is_unreserved(b) || b == b'/'),
            params,
        })
    }
}

/// Whether `s` may name a storage: ASCII letters, digits, `.`, `_`, `-`; not `.` or `..`.
pub fn is_handle(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// What the parameters have set so far; starts at the defaults (`fit=clip`).
struct Params {
    width: u32,
    height: u32,
    fit: Fit,
    upscale: bool,
    h_align: HAlign,
    v_align: VAlign,
    dpr: f64,
    quality: Option<u8>,
    format: OutputFormat,
    format_choice: FormatChoice,
    blur: Option<Hundredths>,
    sharpen: Option<Hundredths>,
    pad: bool,
    background: Option<Color>,
    expires: Option<Expiry>,
    focus: Option<Focus>,
    trim: Option<Trim>,
    smart: bool,
    /// `watermark`: the watermark's path.
    wm_image: Option<String>,
    /// `wm_pos`: an anchor, or `None` for `repeat`.
    wm_pos: Option<(HAlign, VAlign)>,
    wm_offsets: (i32, i32),
    wm_opacity: Fraction,
    wm_scale: Option<Fraction>,
    /// Whether a `wm_…` parameter was given (they need `watermark`).
    wm_options: bool,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            width: 0,
            height: 0,
            fit: Fit::Fill,
            upscale: true,
            h_align: HAlign::Center,
            v_align: VAlign::Middle,
            dpr: 1.0,
            quality: None,
            format: OutputFormat::Source,
            format_choice: FormatChoice::Unnamed,
            blur: None,
            sharpen: None,
            pad: false,
            background: None,
            expires: None,
            focus: None,
            trim: None,
            smart: false,
            wm_image: None,
            wm_pos: Some((HAlign::Center, VAlign::Middle)),
            wm_offsets: (0, 0),
            wm_opacity: Fraction::ONE,
            wm_scale: None,
            wm_options: false,
        }
    }
}

type Apply = fn(&mut Params, &str, &str) -> Result<(), GrammarError>;

/// One query parameter: its names (long first) and what it does.
pub struct ParamSpec {
    /// Long name first, then the short names.
    pub names: &'static [&'static str],
    apply: Apply,
}

const fn spec(names: &'static [&'static str], apply: Apply) -> ParamSpec {
    ParamSpec { names, apply }
}

/// Every parameter of the grammar.
pub static PARAMS: &[ParamSpec] = &[
    spec(&["width", "w"], |p, n, v| {
        p.width = parse_dimension(n, v)?;
        Ok(())
    }),
    spec(&["height", "h"], |p, n, v| {
        p.height = parse_dimension(n, v)?;
        Ok(())
    }),
    spec(&["fit"], fit),
    spec(&["gravity"], gravity),
    spec(&["quality", "q"], |p, n, v| {
        p.quality = Some(parse_quality(n, v)?);
        Ok(())
    }),
    spec(&["format", "f"], |p, n, v| {
        (p.format, p.format_choice) = match v {
            v if v.eq_ignore_ascii_case("auto") => (OutputFormat::Source, FormatChoice::Auto),
            f => (
                OutputFormat::Fixed(parse_format(n, f)?),
                FormatChoice::Named,
            ),
        };
        Ok(())
    }),
    spec(&["dpr"], |p, n, v| {
        p.dpr = parse_decimal(n, v)?;
        Ok(())
    }),
    spec(&["blur"], |p, n, v| {
        p.blur = parse_sigma(n, v)?;
        Ok(())
    }),
    spec(&["sharpen"], |p, n, v| {
        p.sharpen = parse_sigma(n, v)?;
        Ok(())
    }),
    spec(&["background", "bg"], |p, n, v| {
        p.background = parse_color(n, v)?;
        Ok(())
    }),
    spec(&["trim"], |p, n, v| {
        let threshold = v
            .parse::<u8>()
            .ok()
            .filter(|_| v.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| invalid(format!("{n}: {v:?} is not a threshold 0-255")))?;
        p.trim = Some(Trim {
            threshold,
            color: TrimColor::TopLeft,
            equal_hor: false,
            equal_ver: false,
        });
        Ok(())
    }),
    spec(&["exp"], |p, n, v| {
        p.expires = Some(parse_unix_seconds(n, v)?);
        Ok(())
    }),
    spec(&["watermark"], |p, n, v| {
        if v.is_empty() {
            return Err(invalid(format!("{n}: the image path is empty")));
        }
        p.wm_image = Some(v.to_owned());
        Ok(())
    }),
    spec(&["wm_pos"], |p, n, v| {
        p.wm_options = true;
        p.wm_pos = match v {
            "repeat" => None,
            v => Some(
                GRAVITIES
                    .iter()
                    .find(|g| g.0 == v)
                    .map(|g| (g.1, g.2))
                    .ok_or_else(|| invalid(format!("{n}: unknown position {v:?}")))?,
            ),
        };
        Ok(())
    }),
    spec(&["wm_x"], |p, n, v| {
        p.wm_options = true;
        p.wm_offsets.0 = parse_offset(n, v)?;
        Ok(())
    }),
    spec(&["wm_y"], |p, n, v| {
        p.wm_options = true;
        p.wm_offsets.1 = parse_offset(n, v)?;
        Ok(())
    }),
    spec(&["wm_opacity"], |p, n, v| {
        p.wm_options = true;
        p.wm_opacity = Fraction::from_f64(parse_decimal(n, v)?)
            .ok_or_else(|| invalid(format!("{n}: the opacity is between 0 and 1")))?;
        Ok(())
    }),
    spec(&["wm_scale"], |p, n, v| {
        p.wm_options = true;
        p.wm_scale = Fraction::from_f64(parse_decimal(n, v)?)
            .ok_or_else(|| invalid(format!("{n}: the scale is between 0 and 1")))
            .map(|f| (f.0 > 0).then_some(f))?;
        Ok(())
    }),
    // Checked by the router before the URL is parsed for its transform.
    spec(&[SIGNATURE_PARAM], |_, _, _| Ok(())),
];

/// A watermark offset: whole pixels, optionally negative, at most the dimension limit.
fn parse_offset(name: &str, value: &str) -> Result<i32, GrammarError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let ok = !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| value.parse::<i64>().ok())
        .flatten()
        .and_then(Offset::pixels)
        .and_then(|o| match o {
            Offset::Pixels(p) => Some(p),
            Offset::Percent(_) => None,
        })
        .ok_or_else(|| {
            invalid(format!(
                "{name}: {value:?} is not a whole number of pixels up to {MAX_DIMENSION}"
            ))
        })
}

impl Params {
    /// The watermark the `watermark` and `wm_…` parameters ask for.
    fn watermark(&self) -> Result<Option<Watermark>, GrammarError> {
        let Some(image) = &self.wm_image else {
            if self.wm_options {
                return Err(invalid("wm_… parameters need a watermark"));
            }
            return Ok(None);
        };
        let (x, y) = axes_placed(self.wm_pos, self.wm_offsets)
            .ok_or_else(|| invalid("wm_x, wm_y: negative tile spacing"))?;
        let scale = self.wm_scale.map(Span::Fraction);
        Ok(Some(Watermark {
            image: WatermarkImage::Path(image.clone()),
            x,
            y,
            opacity: self.wm_opacity,
            width: scale,
            height: scale,
        }))
    }
}

fn fit(p: &mut Params, name: &str, value: &str) -> Result<(), GrammarError> {
    (p.fit, p.upscale, p.pad) = match value {
        "clip" | "cover" | "crop" => (Fit::Fill, true, false),
        "fill" => (Fit::Stretch, true, false),
        "scale-down" => (Fit::FitIn, false, false),
        "contain" => (Fit::FitIn, true, true),
        other => return Err(invalid(format!("{name}: unknown fit {other:?}"))),
    };
    Ok(())
}

/// Gravity names: (name, horizontal, vertical); compass names are aliases.
const GRAVITIES: [(&str, HAlign, VAlign); 17] = [
    ("center", HAlign::Center, VAlign::Middle),
    ("top", HAlign::Center, VAlign::Top),
    ("bottom", HAlign::Center, VAlign::Bottom),
    ("left", HAlign::Left, VAlign::Middle),
    ("right", HAlign::Right, VAlign::Middle),
    ("top-left", HAlign::Left, VAlign::Top),
    ("top-right", HAlign::Right, VAlign::Top),
    ("bottom-left", HAlign::Left, VAlign::Bottom),
    ("bottom-right", HAlign::Right, VAlign::Bottom),
    ("north", HAlign::Center, VAlign::Top),
    ("south", HAlign::Center, VAlign::Bottom),
    ("west", HAlign::Left, VAlign::Middle),
    ("east", HAlign::Right, VAlign::Middle),
    ("northwest", HAlign::Left, VAlign::Top),
    ("northeast", HAlign::Right, VAlign::Top),
    ("southwest", HAlign::Left, VAlign::Bottom),
    ("southeast", HAlign::Right, VAlign::Bottom),
];

fn gravity(p: &mut Params, name: &str, value: &str) -> Result<(), GrammarError> {
    if let Some(&(_, h, v)) = GRAVITIES.iter().find(|g| g.0 == value) {
        (p.h_align, p.v_align) = (h, v);
        return Ok(());
    }
    match value {
        "smart" | "attention" => {
            p.smart = true;
            Ok(())
        }
        "auto" | "face" | "entropy" => Err(unsupported(format!("gravity={value}"))),
        v if v.split_once('x').is_some_and(|(x, y)| {
            parse_decimal(name, x).is_ok() && parse_decimal(name, y).is_ok()
        }) =>
        {
            let (x, y) = v.split_once('x').unwrap_or_default();
            let fraction = |c: &str| {
                Fraction::from_f64(parse_decimal(name, c)?).ok_or_else(|| {
                    invalid(format!(
                        "{name}: focal point coordinates are between 0 and 1"
                    ))
                })
            };
            p.focus = Some(Focus::point(fraction(x)?, fraction(y)?));
            Ok(())
        }
        other => Err(invalid(format!("{name}: unknown gravity {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::testing::{cover as fill, split_query};
    use crate::transform::Format;

    /// URLs in canonical form: `generate(parse(s)) == s` for each.
    const ROUND_TRIP: &[&str] = &[
        "photos/a.jpg",
        "photos/dir/a%20b.jpg?w=800&h=600&fit=cover",
        "my-s3-bucket/photos/vacation.jpg?w=800&h=600&fit=cover",
        "photos/a.jpg?w=300&watermark=wm%2Flogo.png&wm_pos=bottom-right&wm_x=10&wm_y=10&wm_opacity=0.5&wm_scale=0.25",
        "photos/a.jpg?watermark=wm%2Flogo.png&wm_pos=repeat&wm_x=8",
        "photos/a.jpg?w=300&fit=crop&gravity=top-left&f=webp&q=80",
        "photos/a.jpg?width=300&height=200&fit=scale-down&format=png&quality=70",
        "photos/a.jpg?w=300&dpr=1.5&blur=0&sharpen=0&exp=4102444800&sig=abcdef",
        "photos/a.jpg?bg=%23ffffff",
        "photos/a.jpg?w=300&h=200&fit=contain&gravity=left&bg=ff000080&blur=2.5&sharpen=1",
        "photos/a.jpg?w=300&f=auto",
        "photos/anim.gif?w=100&format=gif",
        "photos/a.jpg?w=300&h=200&fit=crop&gravity=smart&trim=10",
        "photos/a.jpg?trim=0&gravity=attention",
    ];

    #[test]
    fn canonical_urls_round_trip() {
        for &url in ROUND_TRIP {
            let (path, query) = split_query(url);
            let parsed = QueryUrl::parse(path, query).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed.to_path(), url, "generate(parse({url}))");
        }
    }

    fn target(url: &str) -> Result<Target, GrammarError> {
        let (path, query) = split_query(url);
        QueryUrl::parse(path, query)?.to_target()
    }

    #[test]
    fn maps_onto_the_transform_model() {
        for (url, expected) in [
            ("h/a.jpg", fill(0, 0)),
            ("h/a.jpg?w=800&h=600", fill(800, 600)),
            ("h/a.jpg?w=800&h=600&fit=clip", fill(800, 600)),
            ("h/a.jpg?w=800&h=600&fit=cover", fill(800, 600)),
            (
                "h/a.jpg?w=800&h=600&fit=crop&gravity=southeast",
                Transform {
                    h_align: HAlign::Right,
                    v_align: VAlign::Bottom,
                    ..fill(800, 600)
                },
            ),
            (
                "h/a.jpg?w=800&h=600&fit=fill",
                Transform {
                    fit: Fit::Stretch,
                    ..fill(800, 600)
                },
            ),
            (
                "h/a.jpg?w=400&dpr=2&fit=scale-down&f=jpg&q=60",
                Transform {
                    width: 800,
                    fit: Fit::FitIn,
                    format: OutputFormat::Fixed(Format::Jpeg),
                    quality: Some(60),
                    ..Transform::default()
                },
            ),
        ] {
            assert_eq!(target(url).unwrap().transform, expected, "{url}");
        }
        assert_eq!(
            target("h/a.jpg?w=300&h=200&fit=contain&gravity=left&bg=%23f00&blur=2.5&sharpen=0.5")
                .unwrap()
                .transform,
            Transform {
                fit: Fit::FitIn,
                pad: true,
                h_align: HAlign::Left,
                background: Some(Color::rgb(255, 0, 0)),
                blur: Some(Hundredths(250)),
                sharpen: Some(crate::transform::Sharpen {
                    sigma: Hundredths(50),
                    amount: Hundredths::ONE,
                }),
                ..fill(300, 200)
            }
        );
        assert_eq!(
            target("h/a.jpg?blur=0&sharpen=0&bg=transparent")
                .unwrap()
                .transform,
            fill(0, 0)
        );
        let t = target("my-bucket/dir/a%20b.jpg?exp=10").unwrap();
        assert_eq!(t.handle.as_deref(), Some("my-bucket"));
        assert_eq!(t.image, "dir/a b.jpg");
        assert_eq!(t.expires, Some(Expiry::UnixSeconds(10)));
    }

    #[test]
    fn f_auto_leaves_the_format_to_the_client() {
        for (url, choice, format) in [
            ("h/a.jpg?w=300", FormatChoice::Unnamed, OutputFormat::Source),
            ("h/a.jpg?f=auto", FormatChoice::Auto, OutputFormat::Source),
            (
                "h/a.jpg?format=AUTO",
                FormatChoice::Auto,
                OutputFormat::Source,
            ),
            (
                "h/a.jpg?f=gif",
                FormatChoice::Named,
                OutputFormat::Fixed(Format::Gif),
            ),
            (
                "h/a.jpg?format=webp",
                FormatChoice::Named,
                OutputFormat::Fixed(Format::Webp),
            ),
        ] {
            let t = target(url).unwrap();
            assert_eq!(
                (t.format_choice, t.transform.format),
                (choice, format),
                "{url}"
            );
        }
        assert!(matches!(
            target("h/a.jpg?f=auto&format=png"),
            Err(GrammarError::Invalid(m)) if m.contains("format")
        ));
        assert_eq!(
            QueryUrl::from_transform(
                &Transform {
                    format: OutputFormat::Compatible,
                    ..fill(300, 200)
                },
                "h",
                "a.jpg"
            ),
            None,
            "what auto chose is never written back as a URL"
        );
    }

    #[test]
    fn from_transform_inverts_to_target() {
        for url in [
            "h/a.jpg?w=300&fit=crop&gravity=top-left&f=webp&q=80",
            "h/a.jpg?w=300&h=200&fit=scale-down&f=png",
            "h/a.jpg?w=300&h=200&fit=fill",
            "h/a%20b.jpg?w=300&h=200",
            "h/a.jpg?w=300&h=200&fit=contain&gravity=bottom&blur=1.5&sharpen=0.5&bg=ff000080",
            "h/a.jpg?w=300&fit=scale-down&bg=ffffff",
        ] {
            let t = target(url).unwrap();
            let back = QueryUrl::from_transform(&t.transform, "h", &t.image).unwrap();
            assert_eq!(back.to_path(), url);
        }
        for t in [
            Transform::default(),
            Transform {
                flip_h: true,
                upscale: true,
                ..Transform::default()
            },
            Transform {
                rotation: Rotation::Cw90,
                ..fill(1, 1)
            },
            Transform {
                grayscale: true,
                ..fill(1, 1)
            },
            Transform {
                pad: true,
                ..fill(1, 1)
            },
            Transform {
                sharpen: Some(crate::transform::Sharpen {
                    sigma: Hundredths::ONE,
                    amount: Hundredths(150),
                }),
                ..fill(1, 1)
            },
        ] {
            assert_eq!(QueryUrl::from_transform(&t, "h", "a.jpg"), None, "{t:?}");
        }
    }

    #[test]
    fn a_gravity_of_coordinates_is_a_focal_point() {
        let t = |url: &str| {
            let (path, query) = split_query(url);
            QueryUrl::parse(path, query).and_then(|u| u.to_target())
        };
        let target = t("h/a.jpg?w=300&h=200&fit=crop&gravity=0.25x0.8").unwrap();
        assert_eq!(
            target.transform.focus,
            Some(Focus::point(Fraction(2500), Fraction(8000)))
        );
        let back = QueryUrl::from_transform(&target.transform, "h", "a.jpg").unwrap();
        assert_eq!(
            back.to_path(),
            "h/a.jpg?w=300&h=200&fit=crop&gravity=0.25x0.8"
        );
        assert!(matches!(
            t("h/a.jpg?gravity=1.5x0.5"),
            Err(GrammarError::Invalid(_))
        ));
    }

    #[test]
    fn trim_and_smart_gravity_map_onto_the_transform_and_back() {
        let ten = Trim {
            threshold: 10,
            color: TrimColor::TopLeft,
            equal_hor: false,
            equal_ver: false,
        };
        let trim = Some(ten);
        for (url, expected, canonical) in [
            (
                "h/a.jpg?w=300&h=200&gravity=attention&trim=10",
                Transform {
                    smart: true,
                    trim,
                    ..fill(300, 200)
                },
                "h/a.jpg?w=300&h=200&fit=crop&gravity=smart&trim=10",
            ),
            (
                "h/a.jpg?gravity=smart",
                Transform {
                    smart: true,
                    ..fill(0, 0)
                },
                "h/a.jpg?fit=crop&gravity=smart",
            ),
        ] {
            assert_eq!(target(url).map(|t| t.transform), Ok(expected), "{url}");
            let back = QueryUrl::from_transform(&expected, "h", "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{url}");
        }
        for bad in ["h/a.jpg?trim=256", "h/a.jpg?trim=-1", "h/a.jpg?trim=x"] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}"
            );
        }
        for t in [
            Transform {
                keep_icc: true,
                ..fill(1, 1)
            },
            Transform {
                trim: Some(Trim {
                    color: TrimColor::BottomRight,
                    ..ten
                }),
                ..fill(1, 1)
            },
            Transform {
                smart: true,
                v_align: VAlign::Top,
                ..fill(1, 1)
            },
        ] {
            assert_eq!(QueryUrl::from_transform(&t, "h", "a.jpg"), None, "{t:?}");
        }
    }

    #[test]
    fn unsupported_parameters_are_named_not_ignored() {
        for (url, what) in [
            ("h/a.jpg?format=tiff", "format tiff"),
            ("h/a.jpg?gravity=face", "gravity=face"),
            ("h/a.jpg?dpr=2", "dpr without a width or height"),
        ] {
            assert_eq!(
                target(url),
                Err(GrammarError::Unsupported(what.into())),
                "{url}"
            );
        }
    }

    /// `watermark` rows: canonical URL ⇄ the watermark it asks for.
    #[test]
    fn watermarks_map_onto_the_model_and_back() {
        use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};
        let px = Offset::Pixels;
        let w = |x, y, opacity, scale: Option<u16>| Watermark {
            image: WatermarkImage::Path("wm/logo.png".into()),
            x,
            y,
            opacity: Fraction(opacity),
            width: scale.map(|s| Span::Fraction(Fraction(s))),
            height: scale.map(|s| Span::Fraction(Fraction(s))),
        };
        let centre = Axis::Center(Offset::ZERO);
        for (url, want) in [
            (
                "h/a.jpg?watermark=wm%2Flogo.png",
                w(centre, centre, 10_000, None),
            ),
            (
                "h/a.jpg?w=300&watermark=wm%2Flogo.png&wm_pos=bottom-right&wm_x=10&wm_y=20&wm_opacity=0.5",
                w(Axis::End(px(10)), Axis::End(px(20)), 5000, None),
            ),
            (
                "h/a.jpg?watermark=wm%2Flogo.png&wm_pos=top&wm_y=-4&wm_scale=0.25",
                w(centre, Axis::Start(px(-4)), 10_000, Some(2500)),
            ),
            (
                "h/a.jpg?watermark=wm%2Flogo.png&wm_pos=repeat&wm_x=8&wm_opacity=0.3",
                w(Axis::Repeat(8), Axis::Repeat(0), 3000, None),
            ),
        ] {
            let (path, query) = split_query(url);
            let parsed = QueryUrl::parse(path, query).unwrap();
            assert_eq!(parsed.to_path(), url);
            let t = parsed.to_target().unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.watermark.as_ref(), Some(&want), "{url}");
            let back = QueryUrl::from_transform(&t.transform, "h", &t.image)
                .unwrap_or_else(|| panic!("{url}: {:?}", t.transform))
                .with_watermark(&want)
                .unwrap_or_else(|| panic!("{url}: {want:?}"));
            assert_eq!(back.to_path(), url, "{url}");
        }
        for bad in [
            "h/a.jpg?wm_pos=top",
            "h/a.jpg?watermark=",
            "h/a.jpg?watermark=l.png&wm_pos=up",
            "h/a.jpg?watermark=l.png&wm_x=1.5",
            "h/a.jpg?watermark=l.png&wm_opacity=2",
            "h/a.jpg?watermark=l.png&wm_scale=1.5",
            "h/a.jpg?watermark=l.png&wm_pos=repeat&wm_x=-1",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}"
            );
        }
        let mut percent = Watermark::new(WatermarkImage::Path("l.png".into()));
        percent.x = Axis::Start(Offset::Percent(10));
        let plain = QueryUrl::from_transform(&fill(300, 200), "h", "a.jpg").unwrap();
        assert_eq!(plain.with_watermark(&percent), None, "no percentages here");
    }

    #[test]
    fn malformed_and_unknown_parameters_are_invalid_and_named() {
        for (url, named) in [
            ("h/a.jpg?crop=1", "crop"),
            ("h/a.jpg?w=abc", "w"),
            ("h/a.jpg?w=1&width=2", "width"),
            ("h/a.jpg?fit=squash", "fit"),
            ("h/a.jpg?gravity=up", "gravity"),
            ("h/a.jpg?q=0", "q"),
            ("h/a.jpg?dpr=-1", "dpr"),
            ("h/a.jpg?exp=soon", "exp"),
            ("h/a.jpg?blur=101", "blur"),
            ("h/a.jpg?blur=x", "blur"),
            ("h/a.jpg?sharpen=-1", "sharpen"),
            ("h/a.jpg?bg=notacolour", "bg"),
            ("h/a.jpg?background=%23ff", "background"),
            ("h/a.jpg?w=%zz", "%zz"),
        ] {
            match target(url) {
                Err(GrammarError::Invalid(m)) => assert!(m.contains(named), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        for bad in ["", "h", "h/", "../a.jpg", "a b/c.jpg", "h/a%zz.jpg"] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad:?}"
            );
        }
        let many = vec!["cb=1"; MAX_PARAMS + 1].join("&");
        assert!(matches!(
            QueryUrl::parse("h/a.jpg", &many),
            Err(GrammarError::Invalid(_))
        ));
    }
}
