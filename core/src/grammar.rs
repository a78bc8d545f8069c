//! What every URL grammar shares: its error type, the grammar-neutral [`Target`] a URL resolves
//! to, expiry, and the value parsers whose meaning must not differ between grammars (dimensions,
//! quality, format names, device pixel ratio).

use std::time::{Duration, SystemTime};

use crate::transform::{
    Color, Format, Fraction, Hundredths, MAX_CROP_PIXELS, MAX_DIMENSION, MAX_SHARPEN_AMOUNT,
    MAX_SIGMA, Rotation, Sharpen, Span, Transform,
};
use crate::watermark::Watermark;
#[cfg(doc)]
use crate::watermark::WatermarkImage;

/// Why a URL was not turned into a transform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    /// The URL does not follow its grammar, or names an unknown option (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// The URL asks for something pixmesh does not do yet (HTTP 501).
    #[error("not implemented: {0}")]
    Unsupported(String),
}

/// A [`GrammarError::Invalid`] with `msg`.
pub(crate) fn invalid(msg: impl Into<String>) -> GrammarError {
    GrammarError::Invalid(msg.into())
}

/// A [`GrammarError::Unsupported`] naming `what`.
pub(crate) fn unsupported(what: impl Into<String>) -> GrammarError {
    GrammarError::Unsupported(what.into())
}

/// The instant after which a URL is no longer served (HTTP 410), in the unit its grammar uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Unix time in seconds (imgproxy `exp`, ImageKit `ik-t`, query `exp`).
    UnixSeconds(u64),
    /// Unix time in milliseconds (imagor `filters:expire`).
    UnixMillis(u64),
}

impl Expiry {
    /// Whether `now` is past the expiry, compared in the grammar's own unit (as its peer does:
    /// a URL expiring at second `s` is still served during second `s`).
    pub fn is_past(self, now: SystemTime) -> bool {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        match self {
            Expiry::UnixSeconds(s) => now.as_secs() > s,
            Expiry::UnixMillis(ms) => now.as_millis() > u128::from(ms),
        }
    }
}

/// What a URL says about its output format, beyond the transform's
/// [`format`](Transform::format): whether the client's `Accept` header may choose it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FormatChoice {
    /// The URL names no format: the source's, or the client's choice on a route with
    /// `auto_format`.
    #[default]
    Unnamed,
    /// The URL names a format (or, with ImageKit's `f-orig`, the source's): never negotiated.
    Named,
    /// The URL asks for the format to be chosen from `Accept` (ImageKit `f-auto`, query
    /// `f=auto`); see [`crate::accept`].
    Auto,
}

/// What a URL of any grammar asks for, before the route maps it onto a storage and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Storage handle the URL names (query `<handle>/`, imgproxy `s3://<bucket>/`); `None`
    /// selects the route's own storage.
    pub handle: Option<String>,
    /// The decoded image path, not yet normalized.
    pub image: String,
    /// The object version to read (imgproxy `s3://BUCKET/KEY?VERSION`); `None` reads the
    /// current one.
    pub version: Option<String>,
    /// What to do to the image.
    pub transform: Transform,
    /// Whether the URL names the output format, or asks for it to be negotiated.
    pub format_choice: FormatChoice,
    /// When the URL stops being served.
    pub expires: Option<Expiry>,
    /// The watermark composited onto the result, its image a path ([`WatermarkImage::Path`],
    /// resolved by the route like the source's) or the sidecar's default.
    pub watermark: Option<Watermark>,
}

/// Formats a grammar may name that the pipeline cannot write yet (501, not 400).
const UNSUPPORTED_FORMATS: &[&str] = &[
    "bmp", "heic", "heif", "ico", "jp2", "jxl", "pdf", "svg", "tif", "tiff",
];

/// Parses an output format name: `jpeg`/`jpg`, `png`, `webp`, `gif`, `avif`; formats the pipeline cannot
/// write and `auto` (in grammars that have no auto) are 501, anything else 400. `option` names
/// the URL option in messages.
pub(crate) fn parse_format(option: &str, value: &str) -> Result<Format, GrammarError> {
    let lower = value.to_ascii_lowercase();
    if let Some(f) = Format::from_name(&lower) {
        return Ok(f);
    }
    if lower == "auto" || UNSUPPORTED_FORMATS.contains(&lower.as_str()) {
        return Err(unsupported(format!("{option} {value}")));
    }
    Err(invalid(format!("{option}: unknown format {value:?}")))
}

/// Parses a width or height in pixels: decimal digits, at most [`MAX_DIMENSION`]; 0 means
/// "derive from the aspect ratio".
pub(crate) fn parse_dimension(option: &str, value: &str) -> Result<u32, GrammarError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!(
            "{option}: {value:?} is not a whole number of pixels"
        )));
    }
    value
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_DIMENSION)
        .ok_or_else(|| {
            invalid(format!(
                "{option}: dimensions are limited to {MAX_DIMENSION}"
            ))
        })
}

/// Parses an encoder quality 1–100.
pub(crate) fn parse_quality(option: &str, value: &str) -> Result<u8, GrammarError> {
    value
        .parse::<u8>()
        .ok()
        .filter(|q| (1..=100).contains(q))
        .ok_or_else(|| invalid(format!("{option}: quality must be between 1 and 100")))
}

/// Parses a non-negative decimal number (`2`, `1.5`, `.5`); no sign, exponent or `inf`.
pub(crate) fn parse_decimal(option: &str, value: &str) -> Result<f64, GrammarError> {
    let ok = !value.is_empty()
        && value.len() <= 16
        && value.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && value.bytes().filter(|&b| b == b'.').count() <= 1
        && value != ".";
    ok.then(|| value.parse::<f64>().ok())
        .flatten()
        .ok_or_else(|| invalid(format!("{option}: {value:?} is not a number")))
}

/// Parses a boolean the way imgproxy (Go's `strconv.ParseBool`) does: `1 t T true TRUE True`
/// and `0 f F false FALSE False`.
pub(crate) fn parse_bool(option: &str, value: &str) -> Result<bool, GrammarError> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(invalid(format!("{option}: {value:?} is not a boolean"))),
    }
}

/// Parses a unix timestamp: decimal digits only.
pub(crate) fn parse_timestamp(option: &str, value: &str) -> Result<u64, GrammarError> {
    (value.len() <= 20 && !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<u64>().ok())
        .flatten()
        .ok_or_else(|| invalid(format!("{option}: {value:?} is not a unix timestamp")))
}

/// Parses a unix timestamp in seconds.
pub(crate) fn parse_unix_seconds(option: &str, value: &str) -> Result<Expiry, GrammarError> {
    parse_timestamp(option, value).map(Expiry::UnixSeconds)
}

/// Parses a non-negative decimal kept in hundredths, at most `max`; `what` names the quantity
/// in the message.
pub(crate) fn parse_hundredths(
    option: &str,
    value: &str,
    max: Hundredths,
    what: &str,
) -> Result<Hundredths, GrammarError> {
    let v = parse_decimal(option, value)?;
    Hundredths::from_f64(v)
        .filter(|h| *h <= max)
        .ok_or_else(|| invalid(format!("{option}: the {what} is limited to {max}")))
}

/// Parses a Gaussian sigma in pixels, at most [`MAX_SIGMA`]; 0 (or less than 0.005) asks for
/// nothing.
pub(crate) fn parse_sigma(option: &str, value: &str) -> Result<Option<Hundredths>, GrammarError> {
    let sigma = parse_hundredths(option, value, MAX_SIGMA, "sigma")?;
    Ok((sigma.0 > 0).then_some(sigma))
}

/// Parses a blur *radius* (thumbor's and ImageKit's unit) into a sigma: half the radius, so the
/// Gaussian's ±2σ spans the radius (imagor's rule). At most twice [`MAX_SIGMA`].
pub(crate) fn parse_blur_radius(
    option: &str,
    value: &str,
) -> Result<Option<Hundredths>, GrammarError> {
    let radius = parse_hundredths(option, value, MAX_SIGMA.doubled(), "radius")?;
    Ok((radius.0 >= 2).then_some(Hundredths(radius.0 / 2)))
}

/// Parses a sharpening amount, at most [`MAX_SHARPEN_AMOUNT`]; 0 asks for nothing.
pub(crate) fn parse_amount(option: &str, value: &str) -> Result<Option<Hundredths>, GrammarError> {
    let amount = parse_hundredths(option, value, MAX_SHARPEN_AMOUNT, "amount")?;
    Ok((amount.0 > 0).then_some(amount))
}

/// The unsharp mask of `sigma` and `amount`, or none when either asks for nothing.
pub(crate) fn sharpen(sigma: Option<Hundredths>, amount: Option<Hundredths>) -> Option<Sharpen> {
    Some(Sharpen {
        sigma: sigma?,
        amount: amount?,
    })
}

/// Parses a rotation in degrees: an optional `-` (counter-clockwise) and at most 6 digits, a
/// multiple of 90. `clockwise` says which way the grammar turns for positive angles.
pub(crate) fn parse_rotation(
    option: &str,
    value: &str,
    clockwise: bool,
) -> Result<Rotation, GrammarError> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let degrees =
        (!digits.is_empty() && digits.len() <= 6 && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| value.parse::<i64>().ok())
            .flatten()
            .ok_or_else(|| {
                invalid(format!(
                    "{option}: {value:?} is not a whole number of degrees"
                ))
            })?;
    let r = Rotation::from_degrees(degrees).ok_or_else(|| {
        invalid(format!(
            "{option}: {value:?} is not a multiple of 90 degrees"
        ))
    })?;
    Ok(if clockwise { r } else { r.inverse() })
}

/// Parses a colour: hexadecimal (3, 4, 6 or 8 digits, `#` optional) or a CSS colour name;
/// `transparent` and `none` are `Ok(None)`, as is any fully transparent colour. Anything else
/// is 400 naming `option`.
pub(crate) fn parse_color(option: &str, value: &str) -> Result<Option<Color>, GrammarError> {
    let lower = value.to_ascii_lowercase();
    if lower == "transparent" || lower == "none" {
        return Ok(None);
    }
    let hex = value.strip_prefix('#').unwrap_or(value);
    Color::from_hex(hex)
        .or_else(|| Color::from_name(value))
        .map(Color::visible)
        .ok_or_else(|| invalid(format!("{option}: {value:?} is not a colour")))
}

/// Accepts an amount of an effect the pipeline cannot apply only when it is zero (`blur=0`
/// asks for nothing); any other amount is 501 naming `option`.
pub(crate) fn require_zero(option: &str, value: &str) -> Result<(), GrammarError> {
    if parse_decimal(option, value)? != 0.0 {
        return Err(unsupported(option));
    }
    Ok(())
}

/// Parses a crop size as imgproxy and ImageKit write it: at least 1 is whole pixels (at most
/// [`MAX_CROP_PIXELS`]), below 1 a fraction of the source's side (to ten-thousandths), and 0,
/// when `zero_is_full`, the whole side (imgproxy); otherwise 0 is 400.
pub(crate) fn parse_crop_size(
    option: &str,
    value: &str,
    zero_is_full: bool,
) -> Result<Span, GrammarError> {
    let v = parse_decimal(option, value)?;
    if v == 0.0 {
        return if zero_is_full {
            Ok(Span::FULL)
        } else {
            Err(invalid(format!("{option}: a crop size cannot be 0")))
        };
    }
    if v < 1.0 {
        return Fraction::from_f64(v)
            .filter(|f| f.0 > 0)
            .map(Span::Fraction)
            .ok_or_else(|| invalid(format!("{option}: {value} is too small a fraction")));
    }
    parse_crop_pixels(option, value)
}

/// Parses a whole number of pixels for a crop, 0 to [`MAX_CROP_PIXELS`].
pub(crate) fn parse_crop_pixels(option: &str, value: &str) -> Result<Span, GrammarError> {
    value
        .parse::<u32>()
        .ok()
        .filter(|&p| p <= MAX_CROP_PIXELS && value.bytes().all(|b| b.is_ascii_digit()))
        .map(Span::Pixels)
        .ok_or_else(|| {
            invalid(format!(
                "{option}: {value:?} is not a whole number of pixels up to {MAX_CROP_PIXELS}"
            ))
        })
}

/// Folds a device pixel ratio into the requested box: each non-zero side is multiplied and
/// rounded (at least 1). A ratio with no box to scale would need the source size, so it is 501;
/// a product over [`MAX_DIMENSION`] is 400.
pub(crate) fn apply_dpr(t: &mut Transform, dpr: f64) -> Result<(), GrammarError> {
    if !(dpr.is_finite() && dpr > 0.0) {
        return Err(invalid("dpr must be greater than 0"));
    }
    if dpr == 1.0 {
        return Ok(());
    }
    if t.width == 0 && t.height == 0 {
        return Err(unsupported("dpr without a width or height"));
    }
    for side in [&mut t.width, &mut t.height] {
        if *side == 0 {
            continue;
        }
        let scaled = (f64::from(*side) * dpr).round().max(1.0);
        if scaled > f64::from(MAX_DIMENSION) {
            return Err(invalid(format!(
                "dpr: the scaled size is over the limit of {MAX_DIMENSION}"
            )));
        }
        *side = scaled as u32;
    }
    Ok(())
}

/// Splits a raw query string into its `name=value` pairs, still percent-encoded. Empty pairs
/// (`a=1&&b=2`) are skipped; a pair without `=` has an empty value.
pub(crate) fn query_pairs(query: &str) -> impl Iterator<Item = (&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
}

/// The raw value of the query parameter `name`, if present; given twice is 400.
pub(crate) fn query_param<'a>(query: &'a str, name: &str) -> Result<Option<&'a str>, GrammarError> {
    let mut found = None;
    for (n, v) in query_pairs(query).filter(|(n, _)| *n == name) {
        if found.replace(v).is_some() {
            return Err(invalid(format!("{n} is given twice")));
        }
    }
    Ok(found)
}

/// The raw query without the parameters in `names`, the rest kept in order and as written.
pub(crate) fn query_without(query: &str, names: &[&str]) -> String {
    query
        .split('&')
        .filter(|p| !p.is_empty() && !names.contains(&p.split_once('=').map_or(*p, |(n, _)| n)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `path` plus `?query` when the query is not empty: the text a query-signed URL signs.
pub(crate) fn with_query(path: &str, query: &str) -> String {
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

/// Percent-decodes a query component, `+` meaning a space as in HTML forms.
pub(crate) fn decode_query_component(s: &str) -> Result<String, GrammarError> {
    crate::percent::decode(&s.replace('+', " "))
        .ok_or_else(|| invalid(format!("malformed percent escape in {s:?}")))
}

/// Helpers for the grammars' table tests.
#[cfg(test)]
pub(crate) mod testing {
    use crate::transform::{Fit, Transform};

    /// Fill a `w`×`h` box, enlarging: the default of ImageKit and the query grammar.
    pub(crate) fn cover(w: u32, h: u32) -> Transform {
        Transform {
            width: w,
            height: h,
            fit: Fit::Fill,
            upscale: true,
            ..Transform::default()
        }
    }

    /// Splits a test URL into path and query.
    pub(crate) fn split_query(url: &str) -> (&str, &str) {
        url.split_once('?').unwrap_or((url, ""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_compared_in_the_grammars_unit() {
        let at = |ms: u64| SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
        assert!(!Expiry::UnixSeconds(1000).is_past(at(1_000_999)));
        assert!(Expiry::UnixSeconds(1000).is_past(at(1_001_000)));
        assert!(!Expiry::UnixMillis(1000).is_past(at(1000)));
        assert!(Expiry::UnixMillis(1000).is_past(at(1001)));
    }

    #[test]
    fn dpr_scales_the_box_and_is_bounded() {
        let mut t = Transform {
            width: 150,
            height: 0,
            ..Transform::default()
        };
        apply_dpr(&mut t, 2.0).unwrap();
        assert_eq!((t.width, t.height), (300, 0));
        apply_dpr(&mut t, 1.5).unwrap();
        assert_eq!(t.width, 450);
        let mut tiny = Transform {
            width: 1,
            ..Transform::default()
        };
        apply_dpr(&mut tiny, 0.01).unwrap();
        assert_eq!(tiny.width, 1, "never rounds a requested side to 0 (auto)");
        assert!(matches!(
            apply_dpr(&mut Transform::default(), 2.0),
            Err(GrammarError::Unsupported(_))
        ));
        assert!(apply_dpr(&mut Transform::default(), 1.0).is_ok());
        let mut big = Transform {
            width: MAX_DIMENSION,
            ..Transform::default()
        };
        assert!(matches!(
            apply_dpr(&mut big, 2.0),
            Err(GrammarError::Invalid(_))
        ));
        assert!(matches!(
            apply_dpr(&mut t, 0.0),
            Err(GrammarError::Invalid(_))
        ));
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_format("f", "JPG"), Ok(Format::Jpeg));
        assert_eq!(parse_format("f", "gif"), Ok(Format::Gif));
        assert_eq!(parse_format("f", "AVIF"), Ok(Format::Avif));
        assert!(matches!(
            parse_format("f", "jxl"),
            Err(GrammarError::Unsupported(_))
        ));
        assert!(matches!(
            parse_format("f", "auto"),
            Err(GrammarError::Unsupported(_))
        ));
        assert!(matches!(
            parse_format("f", "bmpx"),
            Err(GrammarError::Invalid(_))
        ));
        assert_eq!(parse_dimension("w", "300"), Ok(300));
        for bad in ["", "-1", "+3", "1.5", "99999"] {
            assert!(parse_dimension("w", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_quality("q", "80"), Ok(80));
        assert!(parse_quality("q", "0").is_err());
        assert_eq!(parse_decimal("dpr", ".5"), Ok(0.5));
        for bad in ["", ".", "1e3", "inf", "NaN", "-1", "1..2"] {
            assert!(parse_decimal("dpr", bad).is_err(), "{bad}");
        }
        assert_eq!(parse_sigma("bl", "1.5"), Ok(Some(Hundredths(150))));
        assert_eq!(parse_sigma("bl", "0"), Ok(None));
        assert_eq!(parse_sigma("bl", "0.001"), Ok(None));
        assert!(
            matches!(parse_sigma("bl", "100.01"), Err(GrammarError::Invalid(m)) if m.contains("bl"))
        );
        assert_eq!(parse_blur_radius("blur", "5"), Ok(Some(Hundredths(250))));
        assert_eq!(parse_blur_radius("blur", "200"), Ok(Some(MAX_SIGMA)));
        assert!(parse_blur_radius("blur", "201").is_err());
        assert_eq!(parse_blur_radius("blur", "0"), Ok(None));
        assert_eq!(parse_amount("sharpen", "2"), Ok(Some(Hundredths(200))));
        assert!(parse_amount("sharpen", "11").is_err());
        assert_eq!(sharpen(Some(Hundredths(1)), None), None);
        assert_eq!(parse_rotation("rot", "90", true), Ok(Rotation::Cw90));
        assert_eq!(parse_rotation("rot", "-90", true), Ok(Rotation::Cw270));
        assert_eq!(parse_rotation("rotate", "90", false), Ok(Rotation::Cw270));
        assert_eq!(parse_rotation("rot", "720", true), Ok(Rotation::None));
        for bad in ["", "-", "45", "+90", "9999999", "1e2", "90.0"] {
            assert!(
                matches!(parse_rotation("rot", bad, true), Err(GrammarError::Invalid(m)) if m.contains("rot")),
                "{bad}"
            );
        }
        assert_eq!(parse_color("bg", "#f00"), Ok(Some(Color::rgb(255, 0, 0))));
        assert_eq!(parse_color("bg", "Red"), Ok(Some(Color::rgb(255, 0, 0))));
        assert_eq!(parse_color("bg", "transparent"), Ok(None));
        assert_eq!(parse_color("bg", "ff000000"), Ok(None));
        assert!(matches!(
            parse_color("bg", "##f00"),
            Err(GrammarError::Invalid(_))
        ));
        assert_eq!(require_zero("blur", "0.0"), Ok(()));
        assert_eq!(
            require_zero("blur", "2"),
            Err(GrammarError::Unsupported("blur".into()))
        );
        assert!(matches!(
            require_zero("blur", "x"),
            Err(GrammarError::Invalid(_))
        ));
        assert_eq!(parse_bool("el", "t"), Ok(true));
        assert!(parse_bool("el", "yes").is_err());
        assert_eq!(
            query_pairs("a=1&&b&c=x=y").collect::<Vec<_>>(),
            [("a", "1"), ("b", ""), ("c", "x=y")]
        );
        assert_eq!(decode_query_component("a+b%2C").unwrap(), "a b,");
        assert_eq!(query_param("a=1&sig=x", "sig"), Ok(Some("x")));
        assert_eq!(query_param("a=1", "sig"), Ok(None));
        assert!(query_param("sig=1&sig=2", "sig").is_err());
        assert_eq!(
            query_without("v=1&ik-t=5&&x&ik-s=ab&w=2", &["ik-s", "ik-t"]),
            "v=1&x&w=2"
        );
        assert_eq!(with_query("a.jpg", ""), "a.jpg");
        assert_eq!(with_query("a.jpg", "w=1"), "a.jpg?w=1");
    }
}
