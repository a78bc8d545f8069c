//! Choosing the output format from the client's `Accept` header, where a request asks for
//! "auto".
//!
//! A URL asks for auto with ImageKit's `f-auto` or the query grammar's `f=auto` (`format=auto`);
//! on a route with `auto_format` set, every URL that names no format does, as with thumbor's
//! `AUTO_WEBP`, imgproxy's `IMGPROXY_AUTO_WEBP` (the URL has no extension or `format`) and
//! ImageKit's account-wide "best format" setting (the URL has no `f`; `f-orig` opts out).
//! [`negotiate`] chooses between three answers, in this order:
//!
//! - AVIF, when the route allows it (`auto_avif`, as thumbor's `AUTO_AVIF` and imgproxy's
//!   `IMGPROXY_AUTO_AVIF`, both off by default: AVIF encoding costs several times WebP's) and
//!   the client lists `image/avif` with a non-zero quality;
//! - WebP, when the client lists `image/webp` with a non-zero quality;
//! - otherwise [`OutputFormat::Compatible`]: the source's format (JPEG, PNG, GIF), a WebP source
//!   becoming PNG when the result is transparent and JPEG when it is opaque, so auto never
//!   flattens transparency.
//!
//! Only an explicit `image/avif` or `image/webp` counts. `image/*` and `*/*` do not: browsers
//! that could not decode WebP sent them too (Safari before version 14 sent
//! `image/png,image/svg+xml,image/*;q=0.8,…`), while every browser that decodes WebP or AVIF
//! lists it by name; thumbor and imgproxy decide the same way. A request without `Accept` lists
//! nothing. `image/webp;q=0` anywhere in the list excludes WebP, even when it is listed again
//! (the same for AVIF). Media types and parameter names compare case-insensitively. An entry
//! whose `q` is not a quality value (`0` to `1`, at most three decimals) is ignored: sending a
//! format to a client that cannot show it is worse than not.
//!
//! Responses to a request where auto applied carry `Vary: Accept` (the filter adds it, 304s
//! included), and the chosen format is part of the canonical request, so the AVIF, the WebP and
//! the compatible rendition of one URL have different ETags and result-storage keys.

use crate::transform::{Format, OutputFormat};

/// The output format auto chooses for a client that sent `accept` (all its `Accept` header
/// lines joined with `,`; `None` when it sent none); AVIF only when `avif` (the route's
/// `auto_avif`) allows it.
pub fn negotiate(accept: Option<&str>, avif: bool) -> OutputFormat {
    if avif && accepts(accept, Format::Avif) {
        OutputFormat::Fixed(Format::Avif)
    } else if accepts(accept, Format::Webp) {
        OutputFormat::Fixed(Format::Webp)
    } else {
        OutputFormat::Compatible
    }
}

/// Whether `accept` lists `image/webp` with a quality above 0 and never with quality 0.
pub fn accepts_webp(accept: Option<&str>) -> bool {
    accepts(accept, Format::Webp)
}

/// Whether `accept` lists `format`'s media type with a quality above 0 and never with
/// quality 0.
pub fn accepts(accept: Option<&str>, format: Format) -> bool {
    let wanted = format.content_type();
    let mut listed = false;
    for range in accept.unwrap_or_default().split(',') {
        let mut parts = range.split(';');
        let media_type = parts.next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case(wanted) {
            continue;
        }
        let mut quality = Some(1000);
        for param in parts {
            let (name, value) = param.split_once('=').unwrap_or((param, ""));
            if name.trim().eq_ignore_ascii_case("q") {
                quality = qvalue(value.trim());
            }
        }
        match quality {
            Some(0) => return false,
            Some(_) => listed = true,
            None => {}
        }
    }
    listed
}

/// An HTTP quality value (RFC 9110 §12.4.2: `0`, `0.5`, `1`, `1.000`, …) in thousandths;
/// `None` for anything else.
fn qvalue(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |acc, digit| acc * 10 + u16::from(digit - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEBP_OUT: OutputFormat = OutputFormat::Fixed(Format::Webp);
    const AVIF_OUT: OutputFormat = OutputFormat::Fixed(Format::Avif);

    #[test]
    fn browsers_that_list_webp_get_it_and_others_get_a_compatible_format() {
        for (client, accept) in [
            (
                "Chrome",
                "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8",
            ),
            ("Firefox", "image/avif,image/webp,*/*"),
            (
                "Safari 17",
                "image/webp,image/avif,image/jxl,image/heic,image/heic-sequence,video/*;q=0.8,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5",
            ),
        ] {
            assert_eq!(negotiate(Some(accept), false), WEBP_OUT, "{client}");
            assert_eq!(negotiate(Some(accept), true), AVIF_OUT, "{client}");
        }
        for (client, accept) in [
            (
                "Safari 13",
                Some("image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"),
            ),
            ("curl", Some("*/*")),
            ("a JPEG-only client", Some("image/jpeg")),
            ("an empty header", Some("")),
            ("no header at all", None),
        ] {
            assert_eq!(
                negotiate(accept, false),
                OutputFormat::Compatible,
                "{client}"
            );
            assert_eq!(
                negotiate(accept, true),
                OutputFormat::Compatible,
                "{client}"
            );
        }
    }

    #[test]
    fn avif_ranks_above_webp_where_the_route_allows_it() {
        for (accept, avif, out) in [
            ("image/avif,image/webp", true, AVIF_OUT),
            ("image/webp,image/avif", true, AVIF_OUT),
            ("image/avif,image/webp", false, WEBP_OUT),
            ("image/avif;q=0,image/webp", true, WEBP_OUT),
            ("image/avif, image/avif;q=0", true, OutputFormat::Compatible),
            ("IMAGE/AVIF;Q=0.5", true, AVIF_OUT),
            ("image/avif", false, OutputFormat::Compatible),
            ("image/avifx,image/*", true, OutputFormat::Compatible),
            ("image/avif;q=2,image/webp", true, WEBP_OUT),
        ] {
            assert_eq!(negotiate(Some(accept), avif), out, "{accept} (avif {avif})");
        }
        assert!(accepts(Some("image/avif"), Format::Avif));
        assert!(!accepts(Some("image/avif"), Format::Webp));
    }

    #[test]
    fn wildcards_never_select_webp() {
        for accept in [
            "image/*",
            "*/*",
            "image/*;q=1, */*;q=1",
            "*/*;q=0.9,image/*",
        ] {
            assert!(!accepts_webp(Some(accept)), "{accept}");
        }
        assert!(
            accepts_webp(Some("image/*;q=0, image/webp")),
            "the explicit type is more specific than the excluded wildcard"
        );
    }

    #[test]
    fn quality_values_are_honoured() {
        for (accept, webp) in [
            ("image/webp;q=1", true),
            ("image/webp;q=1.000", true),
            ("image/webp;q=0.5", true),
            ("image/webp;q=0.001", true),
            ("image/webp; q=0.8", true),
            ("image/webp ;Q=0.8", true),
            ("image/webp;level=1;q=0.2", true),
            ("image/webp;q=0", false),
            ("image/webp;q=0.0", false),
            ("image/webp;q=0.000", false),
            ("image/webp, image/webp;q=0", false),
            ("image/webp;q=0, image/webp", false),
            ("image/webp;q=0, */*", false),
        ] {
            assert_eq!(accepts_webp(Some(accept)), webp, "{accept}");
        }
    }

    #[test]
    fn malformed_entries_are_ignored_not_trusted() {
        for accept in [
            "image/webp;q=2",
            "image/webp;q=1.5",
            "image/webp;q=0.0001",
            "image/webp;q=-1",
            "image/webp;q=",
            "image/webp;q",
            "image/webp;q=abc",
            "image/webp;q=\"1\"",
            "image/webpx",
            "image/web",
            "application/image/webp",
            "image/webp\"",
        ] {
            assert!(!accepts_webp(Some(accept)), "{accept}");
        }
        assert!(accepts_webp(Some("image/webp;q=bad, image/webp")));
    }

    #[test]
    fn media_types_compare_without_case_or_surrounding_space() {
        for accept in [
            "IMAGE/WEBP",
            "  image/WebP  ",
            "text/html,\timage/webp\t,*/*",
        ] {
            assert!(accepts_webp(Some(accept)), "{accept:?}");
        }
    }

    #[test]
    fn qvalues_follow_the_rfc_grammar() {
        for (text, q) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.5", Some(500)),
            ("0.25", Some(250)),
            ("0.125", Some(125)),
            ("1", Some(1000)),
            ("1.", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.1234", None),
            ("01", None),
            ("", None),
            (".5", None),
            ("0.5x", None),
            ("0.+5", None),
        ] {
            assert_eq!(qvalue(text), q, "{text:?}");
        }
    }
}
