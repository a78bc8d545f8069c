//! The name imagor gives a rendition in its result storage, so that a thumbor route with
//! `"result_keys": "imagor"` reads and writes the renditions an imagor deployment stored.
//!
//! imagor names a rendition after the URL path that follows the signature (`unsafe/` or the
//! HMAC), as received: `fit-in/300x200/filters:quality(80)/photos/a.jpg`. Its result storage
//! keeps it under that name escaped (`IMAGOR_RESULT_STORAGE_PATH_STYLE` unset, pixmesh's
//! `path_style = "default"`) or under the name's SHA-1, `ab/cd/ef…` (`digest`); the sidecar
//! applies the style ([`crate::render::result_key`], [`crate::render::digest_result_key`]).
//! When imagor changes the request before it renders, it names the rendition after the path
//! it generates from the changed request instead (`imagor.go`, `Do`): a request whose filters
//! include `expire(…)` or `attachment(…)` (imagor takes them out), or to which auto format
//! added `format(webp)` or `format(avif)` (`IMAGOR_AUTO_WEBP`, `IMAGOR_AUTO_AVIF`: here the
//! route's `auto_format` and `auto_avif`). [`result_path`] does the same: it reads the path
//! as imagor's `imagorpath.Parse` does and writes it back as `imagorpath.GeneratePath` does.
//!
//! pixmesh names a rendition after its canonical request otherwise; it keeps to that (returns
//! `None`) where imagor's name could not be used safely: a name with an empty, `.`, `..` or `-`
//! segment (imagor cleans `.` and `..` away, so two paths could name one object; canonical
//! requests always hold a `-` segment, so no imagor name equals one), a control character, a
//! base64 image (`b64:…`), a `+` in the image on a route that reads it as thumbor does (a
//! space to imagor: imagor's rendition under that name is of another object), or a number too long
//! to write back the same way. The router also keeps its own name where pixmesh would read
//! imagor's name as another request than the URL's ([`crate::router`]).

use std::fmt::Write;

use crate::transform::{Format, OutputFormat};

/// Longest result path kept, in bytes: S3 keys are at most 1024 bytes, and the name is escaped
/// (or hashed) under the result storage's base dir.
pub const MAX_RESULT_PATH_LEN: usize = 1024;

/// imagor's name for the rendition of `path`, the URL path after the signature as imagor
/// verified it, when the route's auto format chose `format` (an [`OutputFormat::Fixed`] WebP or
/// AVIF adds `format(…)`; anything else adds nothing); `None` where pixmesh keeps its own name
/// (see the module documentation). `plus_is_space`: the route reads a `+` in the image as a
/// space, as imagor does (`"plus_as_space"`), so a `+` names the same object for both.
pub fn result_path(
    path: &str,
    format: Option<OutputFormat>,
    plus_is_space: bool,
) -> Option<String> {
    let added = match format {
        Some(OutputFormat::Fixed(Format::Webp)) => Some("webp"),
        Some(OutputFormat::Fixed(Format::Avif)) => Some("avif"),
        _ => None,
    };
    let mut params = Params::parse(path, plus_is_space)?;
    let before = params.filters.len();
    params
        .filters
        .retain(|(name, _)| name != "expire" && name != "attachment");
    let changed = params.filters.len() != before || added.is_some();
    if let Some(format) = added {
        params
            .filters
            .push(("format".to_owned(), format.to_owned()));
    }
    let name = match changed {
        true => params.generate(),
        false => path.to_owned(),
    };
    is_result_path(&name).then_some(name)
}

/// Whether `name` can name a rendition in result storage as it is: 1 to
/// [`MAX_RESULT_PATH_LEN`] bytes, no control character, and no empty, `.`, `..` or `-` segment.
/// The sidecar checks what it receives with this too.
pub fn is_result_path(name: &str) -> bool {
    (1..=MAX_RESULT_PATH_LEN).contains(&name.len())
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        && name.split('/').all(|s| !matches!(s, "" | "." | ".." | "-"))
}

/// The longest number imagor's name may hold here: longer ones parse to values that would not
/// be written back as they were read (overflow, rounding).
const MAX_DIGITS: usize = 9;

/// imagor's `imagorpath.Params`, as much of it as its generated path writes.
#[derive(Debug, Default)]
struct Params {
    meta: bool,
    /// `trim[:top-left|bottom-right][:TOLERANCE]`: (bottom-right, tolerance).
    trim: Option<(bool, u32)>,
    /// `LxT:RxB`, the numbers as read.
    crop: Option<[f64; 4]>,
    /// `fit-in` and its `adaptive-`/`full-` forms, as written.
    fit_in: Option<&'static str>,
    stretch: bool,
    /// `[-]Wx[-]H`: (flip, width, flip, height).
    size: Option<(bool, u32, bool, u32)>,
    /// Left, top, right, bottom.
    padding: Option<[u32; 4]>,
    h_align: Option<&'static str>,
    v_align: Option<&'static str>,
    smart: bool,
    /// Name and arguments, in order.
    filters: Vec<(String, String)>,
    /// The image path, unescaped.
    image: String,
}

impl Params {
    /// Reads `path` as `imagorpath.Apply` does after the signature: each optional part of
    /// its expression, in order, takes the next segment when the segment matches it whole.
    fn parse(path: &str, plus_is_space: bool) -> Option<Self> {
        let mut rest = path.trim_start_matches('/');
        let one_of = |names: &[&'static str], s: &str| names.iter().copied().find(|n| *n == s);
        let meta = take(&mut rest, |s| (s == "meta").then_some(())).is_some();
        let trim = take(&mut rest, parse_trim);
        let crop = take(&mut rest, parse_crop);
        let fit_in = take(&mut rest, |s| {
            one_of(
                &[
                    "adaptive-full-fit-in",
                    "adaptive-fit-in",
                    "full-fit-in",
                    "fit-in",
                ],
                s,
            )
        });
        let stretch = take(&mut rest, |s| (s == "stretch").then_some(())).is_some();
        let size = take(&mut rest, parse_size);
        let padding = take(&mut rest, parse_padding);
        let h_align = take(&mut rest, |s| one_of(&["left", "right", "center"], s));
        let v_align = take(&mut rest, |s| one_of(&["top", "bottom", "middle"], s));
        let smart = take(&mut rest, |s| (s == "smart").then_some(())).is_some();
        let mut p = Params {
            meta,
            trim,
            crop: kept(crop)?,
            fit_in,
            stretch,
            size: kept(size)?,
            padding: kept(padding)?,
            h_align,
            v_align,
            smart,
            ..Params::default()
        };
        let (filters, image) = parse_filters(rest);
        if image.contains('+') && !plus_is_space {
            // A space to imagor, a `+` to thumbor and to this route: imagor's rendition under
            // this name would be of another object.
            return None;
        }
        p.filters = filters;
        let image = query_unescape(image).unwrap_or_else(|| image.as_bytes().to_vec());
        p.image = String::from_utf8(image).ok()?;
        if p.image.starts_with("b64:") {
            return None;
        }
        Some(p)
    }

    /// The path `imagorpath.GeneratePath` writes for these parameters.
    fn generate(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        if self.meta {
            parts.push("meta".into());
        }
        if let Some((bottom_right, tolerance)) = self.trim {
            let mut trim = String::from("trim");
            if bottom_right {
                trim.push_str(":bottom-right");
            }
            if tolerance > 0 {
                let _ = write!(trim, ":{tolerance}");
            }
            parts.push(trim);
        }
        if let Some([l, t, r, b]) = self.crop.filter(|c| c.iter().any(|v| *v > 0.0)) {
            // Rust writes an f64 as Go's `FormatFloat(v, 'f', -1, 64)` does: the shortest
            // digits that read back the same, never an exponent.
            parts.push(format!("{l}x{t}:{r}x{b}"));
        }
        if let Some(fit_in) = self.fit_in {
            parts.push(fit_in.into());
        }
        if self.stretch {
            parts.push("stretch".into());
        }
        let (h_flip, width, v_flip, height) = self.size.unwrap_or_default();
        let [pl, pt, pr, pb] = self.padding.unwrap_or_default();
        if h_flip || width != 0 || v_flip || height != 0 || pl > 0 || pt > 0 {
            let flip = |f: bool| if f { "-" } else { "" };
            parts.push(format!("{}{width}x{}{height}", flip(h_flip), flip(v_flip)));
        }
        if pl > 0 || pt > 0 || pr > 0 || pb > 0 {
            parts.push(match pl == pr && pt == pb {
                true => format!("{pl}x{pt}"),
                false => format!("{pl}x{pt}:{pr}x{pb}"),
            });
        }
        if let Some(a) = self.h_align.filter(|a| *a != "center") {
            parts.push(a.into());
        }
        if let Some(a) = self.v_align.filter(|a| *a != "middle") {
            parts.push(a.into());
        }
        if self.smart {
            parts.push("smart".into());
        }
        if !self.filters.is_empty() {
            let filters: Vec<String> = self
                .filters
                .iter()
                .map(|(name, args)| format!("{name}({args})"))
                .collect();
            parts.push(format!("filters:{}", filters.join(":")));
        }
        let looks_like_options = [
            "trim/", "meta/", "fit-in/", "stretch/", "top/", "left/", "right/", "bottom/",
            "center/", "smart/",
        ]
        .iter()
        .any(|p| self.image.starts_with(p));
        let image = &self.image;
        parts.push(
            match looks_like_options || image.contains(['?', '(', ')', ',']) {
                true => path_escape(image),
                false => image.clone(),
            },
        );
        parts.join("/")
    }
}

/// The value `parse` reads from the next segment of `rest`, which is then taken: imagor's
/// optional parts of a path, each a whole segment followed by `/`.
fn take<T>(rest: &mut &str, parse: impl FnOnce(&str) -> Option<T>) -> Option<T> {
    let (segment, after) = rest.split_once('/')?;
    let value = parse(segment)?;
    *rest = after;
    Some(value)
}

/// A part [`take`] read with a parser that answers `Some(None)` for a match holding a number
/// too long to write back: `None` then (pixmesh keeps its own name), else the part, absent
/// when it did not match.
fn kept<T>(part: Option<Option<T>>) -> Option<Option<T>> {
    part.map_or(Some(None), |v| v.map(Some))
}

/// `trim[:top-left|bottom-right][:N]`.
fn parse_trim(s: &str) -> Option<(bool, u32)> {
    let mut rest = s.strip_prefix("trim")?;
    let mut bottom_right = false;
    for (side, br) in [(":top-left", false), (":bottom-right", true)] {
        if let Some(r) = rest.strip_prefix(side) {
            rest = r;
            bottom_right = br;
            break;
        }
    }
    let tolerance = match rest {
        "" => 0,
        // Longer tolerances read back as another number; imagor caps it anyway.
        r => digits(r.strip_prefix(':')?)
            .filter(|d| d.len() <= MAX_DIGITS)?
            .parse()
            .ok()?,
    };
    Some((bottom_right, tolerance))
}

/// `LxT:RxB` (`(0?\.)?\d+` on the left and top, `([0-1]?\.)?\d+` on the right and bottom):
/// `Some(None)` when it matches but holds a number too long to keep.
fn parse_crop(s: &str) -> Option<Option<[f64; 4]>> {
    let (lt, rb) = s.split_once(':')?;
    let (l, t) = lt.split_once('x')?;
    let (r, b) = rb.split_once('x')?;
    fn number<'a>(n: &'a str, whole: &[&str]) -> Option<&'a str> {
        let fraction = whole.iter().find_map(|w| n.strip_prefix(w)).unwrap_or(n);
        digits(fraction).map(|_| n)
    }
    let near = ["0.", "."];
    let far = ["0.", "1.", "."];
    let numbers = [
        number(l, &near)?,
        number(t, &near)?,
        number(r, &far)?,
        number(b, &far)?,
    ];
    if numbers.iter().any(|n| n.len() > MAX_DIGITS) {
        return Some(None);
    }
    let mut out = [0.0; 4];
    for (o, n) in out.iter_mut().zip(numbers) {
        // A leading `.` is not Rust's float syntax.
        let n = if n.starts_with('.') {
            format!("0{n}")
        } else {
            n.to_owned()
        };
        *o = n.parse().ok()?;
    }
    Some(Some(out))
}

/// `[-]Wx[-]H`, either number possibly empty (0).
fn parse_size(s: &str) -> Option<Option<(bool, u32, bool, u32)>> {
    let (w, h) = s.split_once('x')?;
    fn side(n: &str) -> Option<(bool, &str)> {
        let (flip, n) = match n.strip_prefix('-') {
            Some(n) => (true, n),
            None => (false, n),
        };
        (n.is_empty() || digits(n).is_some()).then_some((flip, n))
    }
    let ((hf, w), (vf, h)) = (side(w)?, side(h)?);
    if w.len() > MAX_DIGITS || h.len() > MAX_DIGITS {
        return Some(None);
    }
    let n = |d: &str| d.parse().unwrap_or(0);
    Some(Some((hf, n(w), vf, n(h))))
}

/// `AxB` (each side) or `LxT:RxB`.
fn parse_padding(s: &str) -> Option<Option<[u32; 4]>> {
    fn pair(p: &str) -> Option<(&str, &str)> {
        let (a, b) = p.split_once('x')?;
        Some((digits(a)?, digits(b)?))
    }
    let numbers = match s.split_once(':') {
        Some((lt, rb)) => {
            let ((l, t), (r, b)) = (pair(lt)?, pair(rb)?);
            [l, t, r, b]
        }
        None => {
            let (l, t) = pair(s)?;
            [l, t, l, t]
        }
    };
    if numbers.iter().any(|n| n.len() > MAX_DIGITS) {
        return Some(None);
    }
    Some(Some(numbers.map(|n| n.parse().unwrap_or(0))))
}

/// `s` when it is one or more ASCII digits.
fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// imagor's `parseFilters`: after `filters:`, `name(args)` entries separated by `:` at depth
/// 0 (parentheses nest), up to the first `/` at depth 0; what follows is the image. Entries
/// are taken as imagor takes them, odd ones included (text without parentheses before a `:`
/// is dropped).
fn parse_filters(s: &str) -> (Vec<(String, String)>, &str) {
    let Some(body) = s.strip_prefix("filters:") else {
        return (Vec::new(), s);
    };
    let mut filters = Vec::new();
    let (mut text, mut name, mut args) = (String::new(), String::new(), String::new());
    let mut depth: i64 = 0;
    let mut image = "";
    for (i, c) in body.char_indices() {
        match c {
            '(' => {
                if depth == 0 {
                    name = std::mem::take(&mut text);
                } else {
                    text.push(c);
                }
                depth += 1;
            }
            ')' => {
                depth -= 1;
                if depth == 0 {
                    args = std::mem::take(&mut text);
                } else {
                    text.push(c);
                }
            }
            '/' if depth == 0 => image = &body[i + 1..],
            '/' => text.push(c),
            ':' if depth == 0 => {
                filters.push((std::mem::take(&mut name), std::mem::take(&mut args)));
                text.clear();
            }
            c => text.push(c),
        }
        if !image.is_empty() {
            break;
        }
    }
    if !name.is_empty() {
        filters.push((name, args));
    }
    (filters, image)
}

/// Go's `url.QueryUnescape`: `+` is a space, `%XX` a byte; `None` for a malformed escape.
fn query_unescape(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// Go's `url.PathEscape`: everything but letters, digits, `-_.~` and `$&+:=@` as `%XX`.
fn path_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => out.push(b as char),
            b'-' | b'_' | b'.' | b'~' | b'$' | b'&' | b'+' | b':' | b'=' | b'@' => {
                out.push(b as char)
            }
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::digest_result_key;

    const WEBP: Option<OutputFormat> = Some(OutputFormat::Fixed(Format::Webp));
    const AVIF: Option<OutputFormat> = Some(OutputFormat::Fixed(Format::Avif));

    /// imagor's own vectors (`imagorpath/hasher_test.go`): the digest of a path imagor did not
    /// change is the SHA-1 of the path as received.
    #[test]
    fn unchanged_paths_are_imagors_names_as_received() {
        for (path, digest) in [
            (
                "fit-in/16x17/foobar",
                "d5/c2/804e5d81c475bee50f731db17ee613f43262",
            ),
            (
                "166x169/top/foobar.jpg",
                "45/d8/ebb31bd4ed80c26e7c2572957ac3eb99d3db",
            ),
        ] {
            let name = result_path(path, None, false).unwrap();
            assert_eq!(name, path);
            assert_eq!(digest_result_key("", &name), digest);
        }
        // Not normalised when imagor does not regenerate it.
        let odd = "0300x200/center/middle/filters:quality(80)/a.jpg";
        assert_eq!(result_path(odd, None, false).unwrap(), odd);
        assert_eq!(
            result_path(odd, Some(OutputFormat::Compatible), false).unwrap(),
            odd
        );
    }

    /// What imagor's `GeneratePath` writes for the request it changed: the spec of this
    /// module, row by row (path received, format auto chose, imagor's name).
    #[test]
    fn changed_paths_are_generated_as_imagor_generates_them() {
        let table: &[(&str, Option<OutputFormat>, &str)] = &[
            ("300x200/a.jpg", WEBP, "300x200/filters:format(webp)/a.jpg"),
            ("300x200/a.jpg", AVIF, "300x200/filters:format(avif)/a.jpg"),
            (
                "fit-in/300x200/filters:quality(80)/a.jpg",
                WEBP,
                "fit-in/300x200/filters:quality(80):format(webp)/a.jpg",
            ),
            (
                "300x200/filters:expire(1700000000000):quality(80)/a.jpg",
                None,
                "300x200/filters:quality(80)/a.jpg",
            ),
            ("filters:attachment()/a.jpg", None, "a.jpg"),
            // Normalised on the way: leading zeros, center/middle, an empty size, `.5`.
            (
                "0300x0200/center/middle/a.jpg",
                WEBP,
                "300x200/filters:format(webp)/a.jpg",
            ),
            ("x/a.jpg", WEBP, "filters:format(webp)/a.jpg"),
            (
                "meta/trim:top-left:0/.5x0.25:1.0x1/adaptive-full-fit-in/stretch/-300x-0/10x20/left/bottom/smart/a.jpg",
                WEBP,
                "meta/trim/0.5x0.25:1x1/adaptive-full-fit-in/stretch/-300x-0/10x20/left/bottom/smart/filters:format(webp)/a.jpg",
            ),
            (
                "trim:bottom-right:30/10x10:20x30/a.jpg",
                WEBP,
                "trim:bottom-right:30/10x10:20x30/filters:format(webp)/a.jpg",
            ),
            // A first `AxB:CxD` is a crop; padding after an empty size writes the size `0x0`.
            (
                "10x20:30x40/a.jpg",
                WEBP,
                "10x20:30x40/filters:format(webp)/a.jpg",
            ),
            (
                "x/10x20/a.jpg",
                WEBP,
                "0x0/10x20/filters:format(webp)/a.jpg",
            ),
            (
                "300x200/10x20:30x40/a.jpg",
                WEBP,
                "300x200/10x20:30x40/filters:format(webp)/a.jpg",
            ),
            // Nested parentheses and `/` inside arguments stay in the filter.
            (
                "filters:watermark(wm/logo.png,10,10,0):fill(fff)/a.jpg",
                WEBP,
                "filters:watermark(wm/logo.png,10,10,0):fill(fff):format(webp)/a.jpg",
            ),
            // The image is unescaped and escaped again only where it could be read as options
            // or holds `?(),`.
            (
                "300x200/a%20b%2Bc.jpg",
                WEBP,
                "300x200/filters:format(webp)/a b+c.jpg",
            ),
            (
                "300x200/fit-in%2Fa(1).jpg",
                WEBP,
                "300x200/filters:format(webp)/fit-in%2Fa%281%29.jpg",
            ),
            (
                "300x200/a%2C%3Fb.jpg",
                WEBP,
                "300x200/filters:format(webp)/a%2C%3Fb.jpg",
            ),
        ];
        for (path, format, want) in table {
            assert_eq!(
                result_path(path, *format, false).as_deref(),
                Some(*want),
                "{path} {format:?}"
            );
        }
    }

    #[test]
    fn names_pixmesh_cannot_keep_fall_back_to_its_own() {
        for path in [
            "300x200/-/a.jpg",
            "300x200//a.jpg",
            "300x200/./a.jpg",
            "300x200/../a.jpg",
            "300x200/a.jpg/",
            "300x200/a\u{2028}.jpg",
            "300x200/b64:YS5qcGc",
            "300x200/a+b.jpg",
            "1234567890x200/a.jpg",
            "0.12345678901x0:1x1/a.jpg",
            "",
        ] {
            assert_eq!(result_path(path, WEBP, false), None, "{path}");
        }
        // `%2E%2E` unescapes to `..` once imagor regenerates the path.
        assert_eq!(result_path("300x200/%2E%2E/a.jpg", WEBP, false), None);
        // A route reading `+` as imagor does keeps imagor's name.
        assert_eq!(
            result_path("300x200/a+b.jpg", WEBP, true).as_deref(),
            Some("300x200/filters:format(webp)/a b.jpg")
        );
        assert_eq!(
            result_path("300x200/a+b.jpg", None, true).as_deref(),
            Some("300x200/a+b.jpg")
        );
        assert_eq!(
            result_path("300x200/%ZZ.jpg", WEBP, false),
            Some("300x200/filters:format(webp)/%ZZ.jpg".into())
        );
        assert!(!is_result_path(&"a".repeat(MAX_RESULT_PATH_LEN + 1)));
        assert!(is_result_path("a/b.jpg"));
    }
}
