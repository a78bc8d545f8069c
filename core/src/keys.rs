//! Request-path normalization, base-dir joins and S3 key escaping.

use crate::percent::{encode, is_unreserved};

/// Longest image path accepted, in bytes after decoding (S3 allows 1024-byte keys).
pub const MAX_PATH_LEN: usize = 1024;

/// Why an image path cannot name an object (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The path is empty once normalized.
    #[error("the image path is empty")]
    Empty,
    /// A `..` segment would leave the base dir.
    #[error("the image path may not contain `..` segments")]
    DotDot,
    /// A control character (CR, LF, NUL, …) is in the path.
    #[error("the image path contains a control character")]
    ControlChar,
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("the image path is longer than {MAX_PATH_LEN} bytes")]
    TooLong,
    /// The route serves only paths under its `path_prefix`, and this one is not.
    #[error("the image path is not under {0}/")]
    OutsidePrefix(String),
}

/// Normalizes a decoded image path: drops empty and `.` segments, refuses `..`, control
/// characters and over-long paths. The result never starts or ends with `/`.
pub fn normalize(path: &str) -> Result<String, KeyError> {
    if path.len() > MAX_PATH_LEN {
        return Err(KeyError::TooLong);
    }
    if path.chars().any(char::is_control) {
        return Err(KeyError::ControlChar);
    }
    let mut segments = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(KeyError::DotDot),
            s => segments.push(s),
        }
    }
    if segments.is_empty() {
        return Err(KeyError::Empty);
    }
    Ok(segments.join("/"))
}

/// Joins a normalized `path` under `base_dir` (which may be empty or carry stray slashes).
pub fn join(base_dir: &str, path: &str) -> String {
    let base = base_dir.trim_matches('/');
    if base.is_empty() {
        path.to_owned()
    } else {
        format!("{base}/{path}")
    }
}

/// The object key of image `path` for a route with `base_dir` and `path_prefix` (imagor's
/// `S3_*_BASE_DIR` and `S3_*_PATH_PREFIX`): the normalized path must start with the prefix's
/// whole segments, which are removed, and the rest is joined under `base_dir`. An empty prefix
/// accepts every path; slashes around the prefix do not matter. The key never starts with `/`.
pub fn map_key(base_dir: &str, path_prefix: &str, path: &str) -> Result<String, KeyError> {
    let image = normalize(path)?;
    let prefix = path_prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(join(base_dir, &image));
    }
    match image
        .strip_prefix(prefix)
        .map(|rest| rest.strip_prefix('/'))
    {
        Some(Some(rest)) if !rest.is_empty() => Ok(join(base_dir, rest)),
        _ => Err(KeyError::OutsidePrefix(prefix.to_owned())),
    }
}

/// Why a safe-character setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SafeCharsError {
    /// Only ASCII punctuation and space can be added (alphanumerics and `/-_.~` are always
    /// kept); `--` alone means "escape nothing".
    #[error(
        "safe characters must be ASCII punctuation or space (or `--` for no escaping), not {0:?}"
    )]
    NotPunctuation(char),
}

/// Which characters [`escape`] keeps as they are, besides alphanumerics and `/-_.~`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SafeChars {
    /// Keep these extra ASCII characters.
    Keep(String),
    /// Escape nothing at all (imagor's `S3_SAFE_CHARS=--`).
    All,
}

/// imagor's extra safe characters for S3 keys.
const DEFAULT_SAFE: &str = "!\"()*";

impl Default for SafeChars {
    /// imagor's default for S3: `!"()*`.
    fn default() -> Self {
        SafeChars::Keep(DEFAULT_SAFE.to_owned())
    }
}

impl SafeChars {
    /// Parses imagor's `S3_SAFE_CHARS` syntax: `--` disables escaping, anything else is added
    /// to the default set; characters other than ASCII punctuation and space are refused.
    pub fn from_setting(s: &str) -> Result<Self, SafeCharsError> {
        if s == "--" {
            return Ok(SafeChars::All);
        }
        if let Some(c) = s.chars().find(|&c| !(c.is_ascii_punctuation() || c == ' ')) {
            return Err(SafeCharsError::NotPunctuation(c));
        }
        let mut keep = String::from(DEFAULT_SAFE);
        keep.push_str(s);
        Ok(SafeChars::Keep(keep))
    }

    /// imagor's generic path normalization (file storage, `imagorpath.Normalize`): nothing kept
    /// beyond alphanumerics and `/-_.~`.
    pub fn none() -> Self {
        SafeChars::Keep(String::new())
    }
}

/// Percent-escapes `key` byte by byte (UTF-8), keeping alphanumerics, `/` and the safe set;
/// a space not in the safe set becomes `+`, as imagor's `imagorpath.Normalize` writes it (its
/// S3 keys for `a b.jpg` are `a+b.jpg`; a `+` itself is `%2B`).
pub fn escape(key: &str, safe: &SafeChars) -> String {
    match safe {
        SafeChars::All => key.to_owned(),
        SafeChars::Keep(extra) => encode(key, |b| {
            is_unreserved(b) || b == b'/' || (b.is_ascii() && extra.as_bytes().contains(&b))
        })
        .replace("%20", "+"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_refuses_escapes() {
        assert_eq!(normalize("/a//./b/c.jpg/").unwrap(), "a/b/c.jpg");
        assert_eq!(normalize("a/../b"), Err(KeyError::DotDot));
        assert_eq!(normalize(".."), Err(KeyError::DotDot));
        assert_eq!(normalize("a\r\nb"), Err(KeyError::ControlChar));
        assert_eq!(normalize("a\0b"), Err(KeyError::ControlChar));
        assert_eq!(normalize("/./"), Err(KeyError::Empty));
        assert_eq!(
            normalize(&"a".repeat(MAX_PATH_LEN + 1)),
            Err(KeyError::TooLong)
        );
        assert_eq!(normalize("...jpg/..a").unwrap(), "...jpg/..a");
    }

    #[test]
    fn joins_under_base_dir_without_leading_slash() {
        assert_eq!(join("", "a.jpg"), "a.jpg");
        assert_eq!(join("/source/", "a.jpg"), "source/a.jpg");
        assert_eq!(join("a/b", "c/d.jpg"), "a/b/c/d.jpg");
    }

    #[test]
    fn maps_keys_under_a_path_prefix_and_base_dir() {
        // The seed's example: request avatars/user-1.jpg, prefix avatars, base dir source.
        assert_eq!(
            map_key("source", "avatars", "avatars/user-1.jpg").unwrap(),
            "source/user-1.jpg"
        );
        let cases: &[(&str, &str, &str, Result<&str, KeyError>)] = &[
            ("", "", "/a//b.jpg", Ok("a/b.jpg")),
            ("base", "", "a.jpg", Ok("base/a.jpg")),
            ("", "/avatars/", "avatars/x/y.jpg", Ok("x/y.jpg")),
            ("src", "a/b", "/a/./b/c.jpg", Ok("src/c.jpg")),
            (
                "",
                "avatars",
                "avatarsX/user.jpg",
                Err(KeyError::OutsidePrefix("avatars".into())),
            ),
            (
                "",
                "avatars",
                "avatars",
                Err(KeyError::OutsidePrefix("avatars".into())),
            ),
            (
                "",
                "avatars",
                "avatars/",
                Err(KeyError::OutsidePrefix("avatars".into())),
            ),
            (
                "",
                "avatars",
                "other/avatars/a.jpg",
                Err(KeyError::OutsidePrefix("avatars".into())),
            ),
            (
                "",
                "a/b",
                "a/bc/d.jpg",
                Err(KeyError::OutsidePrefix("a/b".into())),
            ),
            ("", "avatars", "avatars/../x.jpg", Err(KeyError::DotDot)),
        ];
        for (base, prefix, path, want) in cases {
            let got = map_key(base, prefix, path);
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                want.clone(),
                "{base:?} {prefix:?} {path:?}"
            );
            if let Ok(key) = got {
                assert!(!key.starts_with('/'), "{key}");
            }
        }
        assert_eq!(
            KeyError::OutsidePrefix("avatars".into()).to_string(),
            "the image path is not under avatars/"
        );
    }

    #[test]
    fn escapes_like_imagor() {
        let s3 = SafeChars::default();
        let brackets = SafeChars::from_setting("[]").unwrap();
        let none = SafeChars::from_setting("--").unwrap();
        let space = SafeChars::from_setting(" ").unwrap();
        // (key, safe set, escaped)
        let table: &[(&str, &SafeChars, &str)] = &[
            // imagor's S3 default keeps !"()*; `:` is escaped.
            (
                "fit-in/1800x1800/filters:format(jpeg):quality(90)/test.jpg",
                &s3,
                "fit-in/1800x1800/filters%3Aformat(jpeg)%3Aquality(90)/test.jpg",
            ),
            // The seed's result-key example, `:()` escaped: imagor's generic normalization
            // (no extra safe characters).
            (
                "fit-in/1800x1800/filters:format(jpeg):quality(90)/test.jpg",
                &SafeChars::none(),
                "fit-in/1800x1800/filters%3Aformat%28jpeg%29%3Aquality%2890%29/test.jpg",
            ),
            // An object stored as images/aa[1].gif needs S3_SAFE_CHARS=[].
            ("images/aa[1].gif", &s3, "images/aa%5B1%5D.gif"),
            ("images/aa[1].gif", &brackets, "images/aa[1].gif"),
            // ImageKit's "encode keys": image+example.jpg is stored as image%2Bexample.jpg.
            ("image+example.jpg", &s3, "image%2Bexample.jpg"),
            ("a/b-c_d.e~f/!\"()*.jpg", &s3, "a/b-c_d.e~f/!\"()*.jpg"),
            // imagor's escape (imagorpath/normalize.go): a space is `+`.
            ("a b%&=?#.jpg", &s3, "a+b%25%26%3D%3F%23.jpg"),
            ("a b+c.jpg", &s3, "a+b%2Bc.jpg"),
            ("a b+c.jpg", &space, "a b%2Bc.jpg"),
            // UTF-8 bytes, not code points.
            ("ü.jpg", &s3, "%C3%BC.jpg"),
            (
                "日本/写真.jpg",
                &s3,
                "%E6%97%A5%E6%9C%AC/%E5%86%99%E7%9C%9F.jpg",
            ),
            ("ü[1].jpg", &brackets, "%C3%BC[1].jpg"),
            // `--` escapes nothing.
            ("a:b c/ü[1].jpg", &none, "a:b c/ü[1].jpg"),
        ];
        for (key, safe, want) in table {
            assert_eq!(escape(key, safe), *want, "{key:?} with {safe:?}");
        }
    }

    #[test]
    fn safe_char_settings_are_validated() {
        assert_eq!(SafeChars::from_setting(""), Ok(SafeChars::default()));
        assert_eq!(
            SafeChars::from_setting("[]"),
            Ok(SafeChars::Keep("!\"()*[]".into()))
        );
        assert_eq!(SafeChars::from_setting("--"), Ok(SafeChars::All));
        for bad in ["a", "[1]", "ü", "\n"] {
            assert!(SafeChars::from_setting(bad).is_err(), "{bad:?}");
        }
    }
}
