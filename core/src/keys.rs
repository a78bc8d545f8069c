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

/// Which characters [`escape`] keeps as they are, besides alphanumerics and `/-_.~`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SafeChars {
    /// Keep these extra ASCII characters.
    Keep(String),
    /// Escape nothing at all (imagor's `S3_SAFE_CHARS=--`).
    All,
}

impl Default for SafeChars {
    /// imagor's default for S3: `!"()*`.
    fn default() -> Self {
        SafeChars::Keep("!\"()*".to_owned())
    }
}

impl SafeChars {
    /// Parses imagor's `S3_SAFE_CHARS` syntax: `--` disables escaping, anything else is added
    /// to the default set.
    pub fn from_setting(s: &str) -> Self {
        if s == "--" {
            return SafeChars::All;
        }
        let SafeChars::Keep(mut keep) = SafeChars::default() else {
            unreachable!("the default keeps a set")
        };
        keep.push_str(s);
        SafeChars::Keep(keep)
    }
}

/// Percent-escapes `key` byte by byte (UTF-8), keeping alphanumerics, `/` and the safe set.
pub fn escape(key: &str, safe: &SafeChars) -> String {
    match safe {
        SafeChars::All => key.to_owned(),
        SafeChars::Keep(extra) => encode(key, |b| {
            is_unreserved(b) || b == b'/' || (b.is_ascii() && extra.as_bytes().contains(&b))
        }),
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
    fn escapes_like_imagor() {
        let safe = SafeChars::default();
        assert_eq!(
            escape(
                "fit-in/1800x1800/filters:format(jpeg):quality(90)/test.jpg",
                &safe
            ),
            "fit-in/1800x1800/filters%3Aformat(jpeg)%3Aquality(90)/test.jpg"
        );
        assert_eq!(escape("images/aa[1].gif", &safe), "images/aa%5B1%5D.gif");
        let brackets = SafeChars::from_setting("[]");
        assert_eq!(escape("images/aa[1].gif", &brackets), "images/aa[1].gif");
        assert_eq!(escape("a:b c", &SafeChars::from_setting("--")), "a:b c");
        assert_eq!(
            escape("ü.jpg", &safe),
            "%C3%BC.jpg",
            "UTF-8, not code points"
        );
    }
}
