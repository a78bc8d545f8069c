//! S3 object tagging in the query-string form `PutObject` takes in `x-amz-tagging`
//! (`source=imagor&lifecycle=derived`), validated against S3's limits and re-encoded canonically.

use crate::percent::{decode, encode, is_unreserved};

/// Most tags S3 accepts on one object.
pub const MAX_TAGS: usize = 10;
/// Longest tag key, in Unicode characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value, in Unicode characters.
pub const MAX_VALUE_CHARS: usize = 256;

/// Why a tagging setting is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaggingError {
    /// A pair has an empty key (`=v`, `&&`).
    #[error("a tag has an empty key")]
    EmptyKey,
    /// A `%XX` escape is malformed or decodes to invalid UTF-8.
    #[error("tag {0:?} has a malformed percent escape")]
    BadEscape(String),
    /// The same key appears twice.
    #[error("tag key {0:?} appears twice")]
    Duplicate(String),
    /// More than [`MAX_TAGS`] tags.
    #[error("{0} tags; S3 allows at most {MAX_TAGS}")]
    TooMany(usize),
    /// A key longer than [`MAX_KEY_CHARS`] or a value longer than [`MAX_VALUE_CHARS`].
    #[error(
        "tag {0:?} is longer than S3 allows ({MAX_KEY_CHARS} for keys, {MAX_VALUE_CHARS} for values)"
    )]
    TooLong(String),
}

/// Parses `k=v&k2=v2` (`+` is a space, `%XX` escapes are UTF-8, a pair without `=` has an empty
/// value) into ordered `(key, value)` pairs. The empty string is no tags.
pub fn parse(s: &str) -> Result<Vec<(String, String)>, TaggingError> {
    let mut tags: Vec<(String, String)> = Vec::new();
    for pair in s.split('&').filter(|p| !s.is_empty() || !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let part = |raw: &str| {
            decode(&raw.replace('+', " ")).ok_or_else(|| TaggingError::BadEscape(pair.to_owned()))
        };
        let (k, v) = (part(k)?, part(v)?);
        if k.is_empty() {
            return Err(TaggingError::EmptyKey);
        }
        if k.chars().count() > MAX_KEY_CHARS || v.chars().count() > MAX_VALUE_CHARS {
            return Err(TaggingError::TooLong(k));
        }
        if tags.iter().any(|(seen, _)| *seen == k) {
            return Err(TaggingError::Duplicate(k));
        }
        tags.push((k, v));
    }
    if tags.len() > MAX_TAGS {
        return Err(TaggingError::TooMany(tags.len()));
    }
    Ok(tags)
}

/// The canonical `x-amz-tagging` value of `tags`: every byte but the unreserved ones escaped.
pub fn to_header(tags: &[(String, String)]) -> String {
    tags.iter()
        .map(|(k, v)| format!("{}={}", encode(k, is_unreserved), encode(v, is_unreserved)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Validates a configured tagging string and returns its canonical header form.
pub fn normalize(s: &str) -> Result<String, TaggingError> {
    parse(s).map(|tags| to_header(&tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_imagor_examples() {
        assert_eq!(
            parse("source=imagor&lifecycle=derived").unwrap(),
            vec![
                ("source".to_owned(), "imagor".to_owned()),
                ("lifecycle".to_owned(), "derived".to_owned())
            ]
        );
        assert_eq!(
            normalize("source=imagor&lifecycle=generated").unwrap(),
            "source=imagor&lifecycle=generated"
        );
    }

    #[test]
    fn decodes_and_re_encodes_utf8_spaces_and_reserved() {
        let tags = parse("team=a+b&city=M%C3%BCnchen&flag").unwrap();
        assert_eq!(tags[0].1, "a b");
        assert_eq!(tags[1].1, "München");
        assert_eq!(tags[2], ("flag".to_owned(), String::new()));
        assert_eq!(to_header(&tags), "team=a%20b&city=M%C3%BCnchen&flag=");
        assert_eq!(parse(&to_header(&tags)).unwrap(), tags, "round trip");
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn refuses_what_s3_refuses() {
        assert_eq!(parse("=v"), Err(TaggingError::EmptyKey));
        assert_eq!(parse("a=1&&b=2"), Err(TaggingError::EmptyKey));
        assert_eq!(parse("a=1&a=2"), Err(TaggingError::Duplicate("a".into())));
        assert_eq!(parse("a=%zz"), Err(TaggingError::BadEscape("a=%zz".into())));
        let eleven = (0..11).map(|i| format!("k{i}=v")).collect::<Vec<_>>();
        assert_eq!(parse(&eleven.join("&")), Err(TaggingError::TooMany(11)));
        assert!(parse(&eleven[..10].join("&")).is_ok());
        let long_key = "k".repeat(MAX_KEY_CHARS + 1);
        assert!(matches!(parse(&long_key), Err(TaggingError::TooLong(_))));
        let long_value = format!("k={}", "ü".repeat(MAX_VALUE_CHARS));
        assert!(parse(&long_value).is_ok(), "characters, not bytes");
        let too_long_value = format!("k={}", "v".repeat(MAX_VALUE_CHARS + 1));
        assert!(matches!(
            parse(&too_long_value),
            Err(TaggingError::TooLong(_))
        ));
    }
}
