//! The option table: every option imgproxy documents, by its long and short names, and what
//! each does to the [`Options`] a URL builds up (or the 501 naming it).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::{MAX_ARGS, resolve_source};
use crate::grammar::{
    Expiry, GrammarError, invalid, parse_bool, parse_crop_size, parse_decimal, parse_dimension,
    parse_format, parse_quality, parse_rotation, parse_sigma, parse_unix_seconds, require_zero,
    unsupported,
};
use crate::transform::{
    Color, Fit, Format, Fraction, HAlign, Hundredths, MAX_DIMENSION, Rotation, Span, Trim,
    TrimColor, VAlign,
};
use crate::watermark::{Offset, Watermark, WatermarkImage, axes_placed};

/// `wm:OPACITY[:POSITION[:X_OFFSET[:Y_OFFSET[:SCALE]]]]`: the sidecar's default watermark
/// (imgproxy's `IMGPROXY_WATERMARK_PATH`), on the final image, as in imgproxy. OPACITY 0–1
/// (0: no watermark, as imgproxy's `wm:0` switches a preset's off); POSITION a compass gravity
/// (`ce` by default) with offsets in whole pixels pointing inwards from the edges it names, or
/// `re`, tiles with X_OFFSET and Y_OFFSET pixels between them; SCALE (0–1) fits the watermark
/// inside that fraction of the result's width and height, up or down (0: its own size).
/// Fractional offsets (imgproxy's relative ones) and scales over 1 are 501.
fn watermark(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let opacity = parse_decimal(name, required(name, args)?)?;
    let opacity = Fraction::from_f64(opacity)
        .ok_or_else(|| invalid(format!("{name}: the opacity is at most 1")))?;
    if opacity.0 == 0 {
        o.watermark = None;
        return Ok(());
    }
    let offset = |i: usize| -> Result<i32, GrammarError> {
        let Some(v) = arg(args, i) else {
            return Ok(0);
        };
        let (negative, digits) = v.strip_prefix('-').map_or((false, v), |d| (true, d));
        let d = parse_decimal(name, digits)?;
        if d.fract() != 0.0 {
            return Err(unsupported(format!("{name} fractional offsets")));
        }
        let px = if negative { -d } else { d };
        match Offset::pixels(px as i64) {
            Some(Offset::Pixels(p)) => Ok(p),
            _ => Err(invalid(format!(
                "{name}: offsets are limited to {MAX_DIMENSION}"
            ))),
        }
    };
    let (dx, dy) = (offset(2)?, offset(3)?);
    let anchor = match arg(args, 1).unwrap_or("ce") {
        "re" => None,
        kind => GRAVITIES
            .iter()
            .find(|g| g.0 == kind)
            .map(|&(_, h, v)| Some((h, v)))
            .ok_or_else(|| invalid(format!("{name}: unknown position {kind:?}")))?,
    };
    let (x, y) = axes_placed(anchor, (dx, dy))
        .ok_or_else(|| invalid(format!("{name}: negative tile spacing")))?;
    let scale = match arg(args, 4) {
        None => None,
        Some(v) => {
            let s = parse_decimal(name, v)?;
            if s > 1.0 {
                return Err(unsupported(format!("{name} scale over 1")));
            }
            Fraction::from_f64(s)
                .filter(|f| f.0 > 0)
                .map(Span::Fraction)
        }
    };
    o.watermark = Some(Watermark {
        image: WatermarkImage::Default,
        x,
        y,
        opacity,
        width: scale,
        height: scale,
    });
    Ok(())
}

/// `wmu:BASE64URL` (`watermark_url`): the watermark image instead of the default, for `wm`
/// (alone it asks for nothing, as in imgproxy). pixmesh reads it from storage: a key (or
/// `local:///KEY`) resolved like the source's path, or `s3://BUCKET/KEY` in the source's own
/// bucket; other buckets, versions and `http(s)://` URLs are 501.
fn watermark_url(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let url = URL_SAFE_NO_PAD
        .decode(required(name, args)?.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid(format!("{name}: not base64url of a URL")))?;
    o.watermark_url = Some(url);
    Ok(())
}

/// `w` with the image of `wmu`'s `url`, for a source in the storage `handle` names.
pub(super) fn stored_watermark(
    mut w: Watermark,
    url: &str,
    handle: Option<&str>,
) -> Result<Watermark, GrammarError> {
    let in_wmu = |e: GrammarError| match e {
        GrammarError::Unsupported(m) => unsupported(format!("watermark_url: {m}")),
        GrammarError::Invalid(m) => invalid(format!("watermark_url: {m}")),
    };
    let r = resolve_source(url).map_err(in_wmu)?;
    if r.version.is_some() {
        return Err(unsupported("watermark_url: object versions"));
    }
    if r.handle.is_some() && r.handle.as_deref() != handle {
        return Err(unsupported(
            "watermark_url: a bucket other than the source's",
        ));
    }
    w.image = WatermarkImage::Path(r.image);
    Ok(w)
}

/// `c:W:H[:GRAVITY]` as parsed: width, height, and the crop's own gravity if it has one.
type CropOption = (Span, Span, Option<(HAlign, VAlign)>);

/// What the options have set so far, as imgproxy means them (after rotation and flips); starts
/// at imgproxy's defaults.
pub(super) struct Options {
    pub(super) fit: Fit,
    /// `rt:auto`: `fill` when the source and the box have the same orientation, else `fit`.
    pub(super) auto_fit: bool,
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) enlarge: bool,
    pub(super) gravity: (HAlign, VAlign),
    /// `g` had non-zero offsets: 501 where the gravity places something.
    pub(super) gravity_offset: bool,
    pub(super) dpr: f64,
    /// `z:X[:Y]`: the box's factors per axis (imgproxy multiplies its target size by them).
    pub(super) zoom: (f64, f64),
    pub(super) quality: Option<u8>,
    pub(super) format: Option<Format>,
    pub(super) flip_h: bool,
    pub(super) flip_v: bool,
    pub(super) rotation: Rotation,
    pub(super) grayscale: bool,
    pub(super) blur: Option<Hundredths>,
    pub(super) sharpen: Option<Hundredths>,
    pub(super) extend: bool,
    pub(super) extend_gravity: (HAlign, VAlign),
    /// `ex`'s gravity had non-zero offsets.
    pub(super) extend_offset: bool,
    pub(super) background: Option<Color>,
    pub(super) background_alpha: u8,
    pub(super) expires: Option<Expiry>,
    /// `c:W:H[:GRAVITY]`: the region's size and its own gravity (the `g` one when `None`).
    pub(super) crop: Option<CropOption>,
    /// `g:fp:X:Y`: the focus point, in the rotated, flipped image.
    pub(super) focus: Option<(Fraction, Fraction)>,
    pub(super) max_bytes: Option<u32>,
    pub(super) progressive: Option<bool>,
    /// `t:…`.
    pub(super) trim: Option<Trim>,
    /// `g:sm`.
    pub(super) smart: bool,
    /// `scp:0`.
    pub(super) keep_icc: bool,
    /// `wm:…`: the default watermark, placed on the final image.
    pub(super) watermark: Option<Watermark>,
    /// `wmu:…`: the watermark's URL, decoded, instead of the default.
    pub(super) watermark_url: Option<String>,
    /// `skp:…`: the source formats whose processing imgproxy skips, as written.
    pub(super) skip_processing: Vec<String>,
    /// `pd:…`: top, right, bottom and left padding, in the output's orientation; `None` where
    /// no `pd` has set the side (imgproxy copies only sides that are set).
    pub(super) padding: [Option<u32>; 4],
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fit: Fit::FitIn,
            auto_fit: false,
            width: 0,
            height: 0,
            enlarge: false,
            gravity: (HAlign::Center, VAlign::Middle),
            gravity_offset: false,
            dpr: 1.0,
            zoom: (1.0, 1.0),
            quality: None,
            format: None,
            flip_h: false,
            flip_v: false,
            rotation: Rotation::None,
            grayscale: false,
            blur: None,
            sharpen: None,
            extend: false,
            extend_gravity: (HAlign::Center, VAlign::Middle),
            extend_offset: false,
            background: None,
            background_alpha: 255,
            expires: None,
            crop: None,
            focus: None,
            max_bytes: None,
            progressive: None,
            trim: None,
            smart: false,
            keep_icc: false,
            watermark: None,
            watermark_url: None,
            skip_processing: Vec::new(),
            padding: [None; 4],
        }
    }
}

/// Applies one option: `(options, long name, arguments)`.
type Apply = fn(&mut Options, &str, &[String]) -> Result<(), GrammarError>;

/// One option of the table: its names (long first) and what it does.
pub struct OptionSpec {
    /// Long name first, then the short names.
    pub names: &'static [&'static str],
    /// Most arguments it takes.
    pub(super) max_args: usize,
    pub(super) apply: Apply,
}

const fn spec(names: &'static [&'static str], max_args: usize, apply: Apply) -> OptionSpec {
    OptionSpec {
        names,
        max_args,
        apply,
    }
}

/// Every processing option imgproxy documents. Those the pipeline cannot perform are 501 unless
/// their arguments ask for nothing (`bl:0`, `rot:0`, `pd:0`, `sm:1`, `ar:1`, …).
pub static OPTIONS: &[OptionSpec] = &[
    spec(&["resize", "rs"], 5, resize),
    spec(&["size", "s"], 4, size),
    spec(&["resizing_type", "rt"], 1, resizing_type),
    spec(&["width", "w"], 1, width),
    spec(&["height", "h"], 1, height),
    spec(&["enlarge", "el"], 1, enlarge),
    spec(&["extend", "ex"], 4, extend),
    // `g:obj:CLASS…` and `g:objw:CLASS:WEIGHT…` take any number of arguments.
    spec(&["gravity", "g"], MAX_ARGS, gravity),
    spec(&["dpr"], 1, dpr),
    spec(&["quality", "q"], 1, quality),
    spec(&["format", "f", "ext"], 1, format),
    spec(&["flip", "fl"], 2, flip),
    spec(&["rotate", "rot"], 1, rotate),
    spec(&["blur", "bl"], 1, blur),
    spec(&["sharpen", "sh"], 1, sharpen_option),
    spec(&["pixelate", "pix"], 1, zero_or_unsupported),
    spec(&["padding", "pd"], 4, padding),
    spec(&["strip_metadata", "sm"], 1, always_on),
    spec(&["auto_rotate", "ar"], 1, always_on),
    spec(&["expires", "exp"], 1, expires),
    spec(&["cachebuster", "cb"], 1, cachebuster),
    spec(&["min-width", "mw"], 1, unsupported_option),
    spec(&["min-height", "mh"], 1, unsupported_option),
    spec(&["zoom", "z"], 2, zoom),
    spec(
        &["extend_aspect_ratio", "extend_ar", "exar"],
        4,
        unsupported_option,
    ),
    spec(&["crop", "c"], 5, crop),
    spec(
        &["crop_aspect_ratio", "crop_ar", "car"],
        2,
        unsupported_option,
    ),
    spec(&["trim", "t"], 4, trim),
    spec(&["background", "bg"], 3, background),
    spec(&["background_alpha", "bga"], 1, background_alpha),
    spec(&["adjust", "a"], 3, unsupported_option),
    spec(&["brightness", "br"], 1, unsupported_option),
    spec(&["contrast", "co"], 1, unsupported_option),
    spec(&["saturation", "sa"], 1, saturation),
    spec(&["monochrome", "mc"], 2, unsupported_option),
    spec(&["duotone", "dt"], 3, unsupported_option),
    spec(&["colorize", "col"], 3, unsupported_option),
    spec(&["unsharp_masking", "ush"], 3, unsupported_option),
    spec(&["blur_detections", "bd"], 16, unsupported_option),
    spec(&["draw_detections", "dd"], 16, unsupported_option),
    spec(
        &["objects_position", "obj_pos", "op"],
        3,
        unsupported_option,
    ),
    spec(&["gradient", "gr"], 5, unsupported_option),
    spec(&["watermark", "wm"], 5, watermark),
    spec(&["watermark_url", "wmu"], 1, watermark_url),
    spec(&["watermark_text", "wmt"], 1, unsupported_option),
    spec(&["watermark_size", "wms"], 3, unsupported_option),
    spec(
        &["watermark_rotate", "wm_rot", "wmr"],
        1,
        unsupported_option,
    ),
    spec(&["watermark_shadow", "wmsh"], 1, unsupported_option),
    spec(&["style", "st"], 1, unsupported_option),
    spec(&["keep_copyright", "kcr"], 1, unsupported_option),
    spec(&["strip_color_profile", "scp"], 1, strip_color_profile),
    spec(&["enforce_thumbnail", "eth"], 1, unsupported_option),
    spec(&["dpi"], 1, unsupported_option),
    spec(&["format_quality", "fq"], 16, unsupported_option),
    spec(&["autoquality", "aq"], 6, unsupported_option),
    spec(&["max_bytes", "mb"], 1, max_bytes),
    spec(&["jpeg_options", "jpgo"], 6, jpeg_options),
    spec(&["png_options", "pngo"], 3, unsupported_option),
    spec(&["webp_options", "webpo"], 3, unsupported_option),
    spec(&["avif_options", "avifo"], 2, unsupported_option),
    spec(&["page", "pg"], 1, unsupported_option),
    spec(&["pages", "pgs"], 1, unsupported_option),
    spec(&["disable_animation", "da"], 1, unsupported_option),
    spec(&["video_thumbnail_second", "vts"], 1, unsupported_option),
    spec(&["video_thumbnail_keyframes", "vtk"], 1, unsupported_option),
    spec(&["video_thumbnail_tile", "vtt"], 10, unsupported_option),
    spec(
        &["video_thumbnail_animation", "vta"],
        10,
        unsupported_option,
    ),
    spec(&["fallback_image_url", "fiu"], 1, unsupported_option),
    spec(&["skip_processing", "skp"], MAX_ARGS, skip_processing),
    spec(&["raw"], 1, unsupported_option),
    spec(&["filename", "fn"], 2, unsupported_option),
    spec(&["return_attachment", "att"], 1, unsupported_option),
    spec(&["preset", "pr"], 16, unsupported_option),
    spec(&["hashsum", "hs"], 2, unsupported_option),
    spec(&["max_src_resolution", "msr"], 1, unsupported_option),
    spec(&["max_src_file_size", "msfs"], 1, unsupported_option),
    spec(&["max_animation_frames", "maf"], 1, unsupported_option),
    spec(
        &["max_animation_frame_resolution", "mafr"],
        1,
        unsupported_option,
    ),
    spec(&["max_result_dimension", "mrd"], 1, unsupported_option),
    spec(&["resizing_algorithm", "ra"], 1, unsupported_option),
    spec(&["preserve_hdr", "ph"], 1, preserve_hdr),
];

/// The compass gravities: (name, horizontal, vertical).
pub(super) const GRAVITIES: [(&str, HAlign, VAlign); 9] = [
    ("no", HAlign::Center, VAlign::Top),
    ("so", HAlign::Center, VAlign::Bottom),
    ("ea", HAlign::Right, VAlign::Middle),
    ("we", HAlign::Left, VAlign::Middle),
    ("noea", HAlign::Right, VAlign::Top),
    ("nowe", HAlign::Left, VAlign::Top),
    ("soea", HAlign::Right, VAlign::Bottom),
    ("sowe", HAlign::Left, VAlign::Bottom),
    ("ce", HAlign::Center, VAlign::Middle),
];

/// The argument at `i` when present and not empty (empty arguments leave a value unchanged).
fn arg(args: &[String], i: usize) -> Option<&str> {
    args.get(i).map(String::as_str).filter(|a| !a.is_empty())
}

fn required<'a>(name: &str, args: &'a [String]) -> Result<&'a str, GrammarError> {
    arg(args, 0).ok_or_else(|| invalid(format!("{name}: missing argument")))
}

fn resize(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    if let Some(rt) = arg(args, 0) {
        resizing_type(o, name, &[rt.to_owned()])?;
    }
    size(o, name, args.get(1..).unwrap_or_default())
}

fn size(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    if let Some(w) = arg(args, 0) {
        o.width = parse_dimension(name, w)?;
    }
    if let Some(h) = arg(args, 1) {
        o.height = parse_dimension(name, h)?;
    }
    if let Some(el) = arg(args, 2) {
        o.enlarge = parse_bool(name, el)?;
    }
    if let Some(ex) = arg(args, 3) {
        extend(o, "extend", &[ex.to_owned()])?;
    }
    Ok(())
}

fn resizing_type(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.auto_fit = false;
    o.fit = match required(name, args)? {
        "fit" => Fit::FitIn,
        // Short of enlarging, a source smaller than the box keeps its scale and is cropped to
        // the box clamped to it (enlarged, it is plain fill: see `to_target`).
        "fill" => Fit::FillClamped,
        "force" => Fit::Stretch,
        // `fill` that, short of enlarging, crops to the box's aspect ratio instead of to the
        // box: what the transform's fill without upscaling does (and, enlarged, plain fill).
        "fill-down" => Fit::Fill,
        "auto" => {
            o.auto_fit = true;
            o.fit = Fit::FitIn;
            return Ok(());
        }
        other => return Err(invalid(format!("{name}: unknown resizing type {other:?}"))),
    };
    Ok(())
}

fn width(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.width = parse_dimension(name, required(name, args)?)?;
    Ok(())
}

fn height(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.height = parse_dimension(name, required(name, args)?)?;
    Ok(())
}

fn enlarge(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.enlarge = parse_bool(name, required(name, args)?)?;
    Ok(())
}

/// `ex:EXTEND[:GRAVITY[:X:Y]]`: pad to the box; the gravity defaults to `ce`.
fn extend(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.extend = parse_bool(name, required(name, args)?)?;
    o.extend_gravity = (HAlign::Center, VAlign::Middle);
    o.extend_offset = false;
    if let Some(kind) = arg(args, 1) {
        if matches!(kind, "sm" | "obj" | "objw") {
            return Err(invalid(format!(
                "{name}: gravity {kind} cannot place an extension"
            )));
        }
        (o.extend_gravity, o.extend_offset) = compass(name, kind, &args[2..])?;
    }
    Ok(())
}

/// `pd:TOP[:RIGHT[:BOTTOM[:LEFT]]]`, CSS-like: a side not given (or empty) copies the one
/// opposite it (right and bottom copy top, left copies right), as imgproxy's
/// `applyPaddingOption` (`options/parser/apply.go`) does, where that side is set.
fn padding(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let given = |i: usize| arg(args, i).map(|a| parse_dimension(name, a)).transpose();
    let [top, right, bottom, left] = &mut o.padding;
    if let Some(v) = given(0)? {
        *top = Some(v);
    }
    *right = given(1)?.or(*top).or(*right);
    *bottom = given(2)?.or(*top).or(*bottom);
    *left = given(3)?.or(*right).or(*left);
    Ok(())
}

/// A compass gravity, and whether its offsets are not all zero (the transform has no offsets:
/// where the gravity places something, non-zero ones are 501).
fn compass(
    name: &str,
    kind: &str,
    offsets: &[String],
) -> Result<((HAlign, VAlign), bool), GrammarError> {
    match kind {
        "sm" => return Err(unsupported("smart gravity (g:sm)")),
        "fp" => return Err(unsupported("focus point gravity (g:fp)")),
        "obj" | "objw" => return Err(unsupported("object gravity (g:obj)")),
        _ => {}
    }
    let &(_, h, v) = GRAVITIES
        .iter()
        .find(|g| g.0 == kind)
        .ok_or_else(|| invalid(format!("{name}: unknown gravity {kind:?}")))?;
    let mut offset = false;
    for o in offsets.iter().filter(|a| !a.is_empty()) {
        offset |= parse_decimal(name, o.strip_prefix('-').unwrap_or(o))? != 0.0;
    }
    Ok(((h, v), offset))
}

/// `c:W:H[:GRAVITY[:X:Y]]`: keep a W×H region of the source (pixels, fractions below 1, 0 the
/// whole side), placed by GRAVITY or else by `g`; `c:0:0` crops nothing.
fn crop(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let size = |i: usize| arg(args, i).map_or(Ok(Span::FULL), |v| parse_crop_size(name, v, true));
    let (w, h) = (size(0)?, size(1)?);
    let gravity = match arg(args, 2) {
        Some(kind) => match compass(name, kind, args.get(3..).unwrap_or_default())? {
            (_, true) => return Err(unsupported("gravity offsets")),
            (anchor, false) => Some(anchor),
        },
        None => None,
    };
    o.crop = ((w, h) != (Span::FULL, Span::FULL)).then_some((w, h, gravity));
    Ok(())
}

/// `g:GRAVITY[:X:Y]`, or `g:fp:X:Y`, the focus point as fractions (0–1) of the image.
fn gravity(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let kind = required(name, args)?;
    if matches!(kind, "obj" | "objw") {
        return Err(unsupported("object gravity (g:obj)"));
    }
    if args.len() > 3 {
        return Err(invalid(format!("{name}: at most 3 arguments")));
    }
    o.focus = None;
    o.gravity_offset = false;
    o.smart = kind == "sm";
    if o.smart {
        if args[1..].iter().any(|a| !a.is_empty()) {
            return Err(invalid(format!("{name}: sm takes no offsets")));
        }
        o.gravity = (HAlign::Center, VAlign::Middle);
        return Ok(());
    }
    if kind == "fp" {
        let coordinate = |i: usize| {
            let v = arg(args, i).ok_or_else(|| invalid(format!("{name}: fp needs X and Y")))?;
            Fraction::from_f64(parse_decimal(name, v)?)
                .ok_or_else(|| invalid(format!("{name}: fp coordinates are between 0 and 1")))
        };
        o.focus = Some((coordinate(1)?, coordinate(2)?));
        o.gravity = (HAlign::Center, VAlign::Middle);
        return Ok(());
    }
    (o.gravity, o.gravity_offset) = compass(name, kind, &args[1..])?;
    Ok(())
}

/// `t:THRESHOLD[:COLOR[:EQUAL_HOR[:EQUAL_VER]]]`: trim uniform borders.
fn trim(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let threshold = parse_decimal(name, required(name, args)?)?;
    if threshold > 255.0 {
        return Err(invalid(format!("{name}: the threshold is at most 255")));
    }
    let color = match arg(args, 1) {
        None => TrimColor::TopLeft,
        Some(hex) => TrimColor::Color(
            Color::from_hex(hex)
                .filter(|_| hex.len() == 6)
                .ok_or_else(|| invalid(format!("{name}: {hex:?} is not an RRGGBB colour")))?,
        ),
    };
    let flag = |i: usize| arg(args, i).map_or(Ok(false), |v| parse_bool(name, v));
    o.trim = Some(Trim {
        // Channel differences are whole: "more than 10.5" is "more than 10".
        threshold: threshold.floor() as u8,
        color,
        equal_hor: flag(2)?,
        equal_ver: flag(3)?,
    });
    Ok(())
}

/// `scp:BOOL`: false keeps the source's ICC profile (and its pixels) in the output.
fn strip_color_profile(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.keep_icc = !parse_bool(name, required(name, args)?)?;
    Ok(())
}

fn blur(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.blur = parse_sigma(name, required(name, args)?)?;
    Ok(())
}

fn sharpen_option(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.sharpen = parse_sigma(name, required(name, args)?)?;
    Ok(())
}

/// `bg:R:G:B` or `bg:HEX` (3 or 6 digits); without arguments, no background.
fn background(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.background = match args {
        [] => None,
        [hex] if hex.is_empty() => None,
        [hex] => Some(
            Color::from_hex(hex)
                .filter(|_| matches!(hex.len(), 3 | 6))
                .ok_or_else(|| invalid(format!("{name}: {hex:?} is not a hex colour")))?,
        ),
        [r, g, b] => {
            let channel = |c: &str| {
                c.parse::<u8>()
                    .ok()
                    .filter(|_| c.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| invalid(format!("{name}: {c:?} is not a value 0-255")))
            };
            Some(Color::rgb(channel(r)?, channel(g)?, channel(b)?))
        }
        _ => return Err(invalid(format!("{name}: expected R:G:B or a hex colour"))),
    };
    Ok(())
}

/// `bga:ALPHA`, 0–1: the background's opacity.
fn background_alpha(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let alpha = parse_decimal(name, required(name, args)?)?;
    if alpha > 1.0 {
        return Err(invalid(format!("{name}: alpha is between 0 and 1")));
    }
    o.background_alpha = (alpha * 255.0).round() as u8;
    Ok(())
}

/// `sa:0` removes all colour (grayscale), `sa:1` changes nothing; other saturations are 501.
fn saturation(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let v = parse_decimal(name, required(name, args)?)?;
    if v == 0.0 {
        o.grayscale = true;
    } else if v == 1.0 {
        o.grayscale = false;
    } else {
        return Err(unsupported(name));
    }
    Ok(())
}

/// `skp:FORMAT…`: skip the processing of sources in these formats when the output keeps the
/// source's format (see `to_target`).
fn skip_processing(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    for f in args.iter().filter(|a| !a.is_empty()) {
        if !f.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(format!("{name}: {f:?} is not a format")));
        }
        o.skip_processing.push(f.to_ascii_lowercase());
    }
    Ok(())
}

/// `ph:BOOL`: keep an HDR (more than 8 bits) source HDR where the output format can carry it,
/// and convert it otherwise, as imgproxy does. pixmesh writes 8-bit outputs only, so every
/// output is one that cannot: accepted either way.
fn preserve_hdr(_: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    parse_bool(name, required(name, args)?).map(|_| ())
}

fn dpr(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.dpr = parse_decimal(name, required(name, args)?)?;
    if o.dpr == 0.0 {
        return Err(invalid(format!("{name} must be greater than 0")));
    }
    Ok(())
}

/// `z:FACTOR` or `z:X:Y`: imgproxy divides its shrink factors by them and multiplies the
/// target size (`processing/prepare.go`, `calcScale` and `calcSizes`); each greater than 0.
fn zoom(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let x = parse_decimal(name, required(name, args)?)?;
    let y = match arg(args, 1) {
        Some(y) => parse_decimal(name, y)?,
        None => x,
    };
    if x == 0.0 || y == 0.0 {
        return Err(invalid(format!("{name} must be greater than 0")));
    }
    o.zoom = (x, y);
    Ok(())
}

fn quality(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.quality = match required(name, args)? {
        "0" => None,
        q => Some(parse_quality(name, q)?),
    };
    Ok(())
}

/// `mb:BYTES`: a byte budget for lossy outputs; 0 removes it.
fn max_bytes(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let value = required(name, args)?;
    let bytes = value
        .parse::<u32>()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            invalid(format!(
                "{name}: {value:?} is not a whole number of bytes up to {}",
                u32::MAX
            ))
        })?;
    o.max_bytes = (bytes > 0).then_some(bytes);
    Ok(())
}

/// `jpgo:PROGRESSIVE:NO_SUBSAMPLE:TRELLIS_QUANT:OVERSHOOT_DERINGING:OPTIMIZE_SCANS:QUANT_TABLE`:
/// the scan mode is applied; the others must ask for what pixmesh's JPEG encoder does (4:2:0,
/// no trellis quantization or overshoot deringing, standard scans and table 0), else 501.
fn jpeg_options(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    required(name, args)?;
    if let Some(p) = arg(args, 0) {
        o.progressive = Some(parse_bool(name, p)?);
    }
    for (i, what) in [
        "no_subsample",
        "trellis_quant",
        "overshoot_deringing",
        "optimize_scans",
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = arg(args, i + 1)
            && parse_bool(name, v)?
        {
            return Err(unsupported(format!("{name} {what}")));
        }
    }
    if let Some(table) = arg(args, 5) {
        match table.parse::<u8>() {
            Ok(0) => {}
            Ok(1..=8) => return Err(unsupported(format!("{name} quant_table {table}"))),
            _ => return Err(invalid(format!("{name}: quant_table {table:?} is not 0-8"))),
        }
    }
    Ok(())
}

fn format(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.format = Some(parse_format(name, required(name, args)?)?);
    Ok(())
}

fn flip(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.flip_h = parse_bool(name, required(name, args)?)?;
    if let Some(v) = arg(args, 1) {
        o.flip_v = parse_bool(name, v)?;
    }
    Ok(())
}

fn rotate(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.rotation = parse_rotation(name, required(name, args)?, true)?;
    Ok(())
}

/// Options whose all-zero arguments ask for nothing (`bl:0`, `pd:0:0`); anything else is 501.
fn zero_or_unsupported(_: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    required(name, args)?;
    args.iter()
        .filter(|a| !a.is_empty())
        .try_for_each(|a| require_zero(name, a))
}

/// Options the pipeline always performs (strip metadata, auto-rotate): turning them off is 501.
fn always_on(_: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    if !parse_bool(name, required(name, args)?)? {
        return Err(unsupported(format!("{name}:false")));
    }
    Ok(())
}

fn expires(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.expires = Some(parse_unix_seconds(name, required(name, args)?)?);
    Ok(())
}

/// `cb:STRING` only changes the URL (and so every cache key); it asks nothing of the pipeline.
fn cachebuster(_: &mut Options, _: &str, _: &[String]) -> Result<(), GrammarError> {
    Ok(())
}

fn unsupported_option(_: &mut Options, name: &str, _: &[String]) -> Result<(), GrammarError> {
    Err(unsupported(name))
}
