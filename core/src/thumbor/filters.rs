//! The filters: which thumbor and imagor filters pixmesh applies, knows or skips, and how each
//! changes the transform in URL order ([`apply_filter`], with what earlier filters did in
//! [`FilterState`]); and the filters that write a transform back ([`effect_filters`]).

use std::fmt::Write;

use super::{Filter, ThumborPath, parse_crop};
use crate::grammar::{
    Expiry, GrammarError, invalid, parse_amount, parse_blur_radius, parse_color, parse_hundredths,
    parse_rotation, parse_sigma, parse_timestamp, sharpen, unsupported,
};
use crate::transform::{
    Color, Effect, Effects, Fit, Focus, Format, Fraction, Hundredths, MAX_CROP_PIXELS,
    MAX_PROPORTION, OutputFormat, Rotation, Span, Transform,
};
use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};

/// The filters that say `list`, in order.
pub(super) fn effect_filters(list: &Effects) -> Vec<Filter> {
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
pub(super) struct FilterState {
    /// The colour of `fill`, once given (`Some(None)`: transparent).
    fill: Option<Option<Color>>,
    /// The colour of `background_color`, once given.
    background: Option<Option<Color>>,
    focal: bool,
    /// `strip_icc()` was given.
    strip_icc: bool,
    /// `no_upscale()` was given.
    pub(super) no_upscale: bool,
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
pub(super) fn filter_args(args: &str) -> Vec<&str> {
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

pub(super) fn apply_filter(
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
pub(super) fn enlarges_by_default(t: &Transform) -> bool {
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
pub(super) fn focal_args(f: Focus) -> String {
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
pub(super) fn parse_watermark(args: &[&str]) -> Result<Watermark, GrammarError> {
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
pub(super) fn watermark_args(w: &Watermark) -> String {
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
pub(super) fn parse_expire(args: &str) -> Result<Expiry, GrammarError> {
    parse_timestamp("expire", args).map(Expiry::UnixMillis)
}
