//! Which sources a storage role keeps, and under which key: a role (the result storage, the
//! source-copy storage) may be limited to a `path_prefix` of the source key (the key the loader
//! reads, after the route's base dir). imagor's `S3_*_PATH_PREFIX` / `S3_*_BASE_DIR` pair: the
//! prefix must match whole segments, it is stripped, and the rest is joined under the role's
//! base dir.

use crate::keys::join;

/// What follows `prefix` in `key`, when `key` is under it by whole segments: `photos` holds
/// `photos/a.jpg` but not `photos2/a.jpg`, nor `photos` itself. Stray slashes around the prefix
/// are ignored; an empty prefix holds every key.
pub fn strip_prefix<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Some(key);
    }
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    (!rest.is_empty()).then_some(rest)
}

/// The key a role with `path_prefix` and `base_dir` keeps source `key` at, or `None` when the
/// role does not keep it (the key is outside the prefix).
pub fn role_key(path_prefix: &str, base_dir: &str, key: &str) -> Option<String> {
    strip_prefix(path_prefix, key).map(|rest| join(base_dir, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_segments_and_are_stripped() {
        for (prefix, key, kept) in [
            ("", "a/b.jpg", Some("a/b.jpg")),
            ("/", "a.jpg", Some("a.jpg")),
            ("a", "a/b.jpg", Some("b.jpg")),
            ("/a/", "a/b.jpg", Some("b.jpg")),
            ("a/b", "a/b/c/d.jpg", Some("c/d.jpg")),
            ("a", "ab/c.jpg", None),
            ("a", "a", None),
            ("a", "b/a/c.jpg", None),
            ("a/b", "a/bc/d.jpg", None),
            ("ü", "ü/x.jpg", Some("x.jpg")),
        ] {
            assert_eq!(strip_prefix(prefix, key), kept, "{prefix:?} {key:?}");
        }
    }

    #[test]
    fn kept_keys_are_joined_under_the_base_dir() {
        // imagor's example: S3_STORAGE_BASE_DIR=copies, S3_STORAGE_PATH_PREFIX=uploads.
        assert_eq!(
            role_key("uploads", "copies", "uploads/2024/a.jpg").as_deref(),
            Some("copies/2024/a.jpg")
        );
        assert_eq!(role_key("", "", "a.jpg").as_deref(), Some("a.jpg"));
        assert_eq!(role_key("", "/r/", "a.jpg").as_deref(), Some("r/a.jpg"));
        assert_eq!(role_key("uploads", "copies", "static/a.jpg"), None);
    }
}
