//! Renditions that vary with request headers and cookies (imgproxy's cache key headers and
//! cookies): a route lists the header and cookie names whose values are part of a rendition's
//! identity. Their values, absent told apart from empty, are digested into the render request's
//! `cache_key` (so its canonical form, ETag and result-storage key differ per value), and every
//! response says `Vary` on them.
//!
//! Only a digest travels to the sidecar: cookies are often credentials, and a digest keeps them
//! out of the render URL, the sidecar's logs and result-storage keys, whose length it bounds.

use std::fmt::Write;

use sha2::{Digest, Sha256};

/// Most header (and, separately, cookie) names one route may list.
pub const MAX_NAMES: usize = 8;

/// Length of a [`CacheKey::digest`] in hex digits.
pub const DIGEST_LEN: usize = 32;

/// Whether `name` is an HTTP token (RFC 9110), 1 to 64 bytes: a valid header or cookie name.
pub fn is_token(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What a route's rendition varies on: header names (lower case) and cookie names, in the
/// route's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheKey {
    headers: Vec<String>,
    cookies: Vec<String>,
}

impl CacheKey {
    /// The key of a route listing `headers` (any case) and `cookies` (validated names).
    pub fn new(headers: &[String], cookies: &[String]) -> Self {
        CacheKey {
            headers: headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            cookies: cookies.to_vec(),
        }
    }

    /// Whether the route varies on nothing.
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.cookies.is_empty()
    }

    /// The `Vary` header value: the headers, then `Cookie` when cookies count; `None` when the
    /// route varies on nothing.
    pub fn vary(&self) -> Option<String> {
        let mut names: Vec<&str> = self.headers.iter().map(String::as_str).collect();
        if !self.cookies.is_empty() {
            names.push("cookie");
        }
        (!names.is_empty()).then(|| names.join(", "))
    }

    /// The digest of the request's values of the key's headers and cookies (`request_headers`:
    /// every header line as `(name, value)`, names in any case), or `None` when the route varies
    /// on nothing. A header sent on several lines counts as its lines joined with `,`; a cookie
    /// is its first occurrence in the `Cookie` lines. Absent and empty values differ.
    pub fn digest(&self, request_headers: &[(String, String)]) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let mut h = Sha256::new();
        let mut part = |kind: u8, name: &str, value: Option<&str>| {
            h.update([kind]);
            h.update((name.len() as u64).to_be_bytes());
            h.update(name.as_bytes());
            match value {
                None => h.update([0]),
                Some(v) => {
                    h.update([1]);
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v.as_bytes());
                }
            }
        };
        for name in &self.headers {
            let lines: Vec<&str> = request_headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
                .collect();
            let value = (!lines.is_empty()).then(|| lines.join(","));
            part(b'h', name, value.as_deref());
        }
        for name in &self.cookies {
            part(b'c', name, cookie(request_headers, name));
        }
        let digest = h.finalize();
        let mut out = String::with_capacity(DIGEST_LEN);
        for b in &digest[..DIGEST_LEN / 2] {
            let _ = write!(out, "{b:02x}");
        }
        Some(out)
    }
}

/// The value of cookie `name` in the request's `Cookie` lines (RFC 6265 `name=value` pairs
/// separated by `;`), the first one when it is sent twice; quotes are kept as sent.
pub fn cookie<'a>(request_headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    request_headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.split_once('=')?;
            (n.trim() == name).then(|| v.trim())
        })
}

/// Whether `s` can be a [`CacheKey::digest`]: [`DIGEST_LEN`] lower-case hex digits.
pub fn is_digest(s: &str) -> bool {
    s.len() == DIGEST_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn key() -> CacheKey {
        CacheKey::new(&["X-Device".into(), "x-tenant".into()], &["ab".into()])
    }

    #[test]
    fn nothing_to_vary_on_is_no_digest_and_no_vary() {
        let none = CacheKey::new(&[], &[]);
        assert!(none.is_empty());
        assert_eq!(none.digest(&headers(&[("x-device", "a")])), None);
        assert_eq!(none.vary(), None);
        assert_eq!(key().vary().as_deref(), Some("x-device, x-tenant, cookie"));
        assert_eq!(
            CacheKey::new(&["DPR".into()], &[]).vary().as_deref(),
            Some("dpr")
        );
    }

    #[test]
    fn values_change_the_digest_absent_differs_from_empty() {
        let k = key();
        let d = |pairs: &[(&str, &str)]| k.digest(&headers(pairs)).unwrap();
        let base = d(&[("x-device", "mobile"), ("cookie", "ab=1")]);
        assert!(is_digest(&base), "{base}");
        // Same values, other spelling of the names, other unrelated headers: same digest.
        assert_eq!(
            base,
            d(&[
                ("X-DEVICE", "mobile"),
                ("accept", "*/*"),
                ("Cookie", "x=2; ab=1")
            ])
        );
        let others = [
            d(&[("x-device", "desktop"), ("cookie", "ab=1")]),
            d(&[("x-device", ""), ("cookie", "ab=1")]),
            d(&[("cookie", "ab=1")]),
            d(&[("x-device", "mobile"), ("cookie", "ab=")]),
            d(&[("x-device", "mobile")]),
            d(&[("x-device", "mobile"), ("x-tenant", ""), ("cookie", "ab=1")]),
            // A value cannot pose as another header's.
            d(&[("x-tenant", "mobile"), ("cookie", "ab=1")]),
            d(&[]),
        ];
        for (i, other) in others.iter().enumerate() {
            assert_ne!(&base, other, "case {i}");
            for (j, o) in others.iter().enumerate().skip(i + 1) {
                assert_ne!(other, o, "cases {i} and {j}");
            }
        }
        // Several lines of a header are one comma-separated value.
        assert_eq!(
            d(&[("x-device", "a"), ("x-device", "b")]),
            d(&[("x-device", "a,b")])
        );
    }

    #[test]
    fn cookies_are_found_in_every_cookie_line_first_one_wins() {
        let h = headers(&[
            ("cookie", "a=1; session=s3cr3t"),
            ("Cookie", "b=2;a=3"),
            ("x-cookie", "c=9"),
        ]);
        assert_eq!(cookie(&h, "a"), Some("1"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
        assert_eq!(cookie(&h, "sess"), None);
        assert_eq!(cookie(&headers(&[("cookie", "e=")]), "e"), Some(""));
    }

    #[test]
    fn tokens_and_digests_are_recognized() {
        assert!(is_token("x-device") && is_token("Sec-CH-DPR") && is_token("_ga"));
        for bad in ["", "a b", "a:b", "a;b", "ä", &"a".repeat(65)] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert!(is_digest(&"0a".repeat(16)));
        assert!(!is_digest(&"0A".repeat(16)) && !is_digest("00"));
    }
}
