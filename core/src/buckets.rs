//! Which bucket an object key is read from, when a storage has no single bucket: imagor's
//! wildcard bucket (`S3_LOADER_BUCKET=*`: the first key segment is the bucket) and its bucket
//! routing file (`S3_LOADER_BUCKET_ROUTER_CONFIG`).
//!
//! A [`BucketRouting`] holds a `routing_pattern` (a regular expression with a named group
//! `bucket` and optionally one named `path`), `rules` (a captured value → a bucket name), a
//! `default_bucket` and up to [`MAX_FALLBACK_BUCKETS`] `fallback_buckets`. For a key:
//!
//! 1. the pattern is matched against the key; the `bucket` group's text is the bucket
//!    identifier, and the `path` group's text, when the pattern has one and it matched, is the
//!    object key (otherwise the whole key is);
//! 2. the rule whose `match` equals the identifier names the bucket; without one, the default
//!    bucket does (also when the pattern does not match at all, with the whole key);
//! 3. in **passthrough** mode (no rules and no default) the identifier itself is the bucket: it
//!    must be a valid S3 bucket name ([`is_bucket_name`]), since it comes from the URL;
//! 4. when the object is not in that bucket, the fallback buckets are tried in order.
//!
//! The wildcard bucket is the passthrough routing `^(?P<bucket>[^/]+)/(?P<path>.+)$`
//! ([`BucketRouting::wildcard`]). Nothing here does I/O: the sidecar maps the bucket names onto
//! clients.

use regex::Regex;

/// Most fallback buckets one routing may list (imagor's limit).
pub const MAX_FALLBACK_BUCKETS: usize = 2;

/// Longest routing pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// Why a routing configuration is refused (the sidecar then refuses to start).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoutingConfigError {
    /// The pattern is not a regular expression (or is over [`MAX_PATTERN_LEN`]).
    #[error("routing_pattern is not a valid regular expression: {0}")]
    Pattern(String),
    /// The pattern has no group named `bucket`.
    #[error("routing_pattern must have a named group (?P<bucket>...)")]
    NoBucketGroup,
    /// More fallbacks than [`MAX_FALLBACK_BUCKETS`].
    #[error("at most {MAX_FALLBACK_BUCKETS} fallback_buckets, not {0}")]
    TooManyFallbacks(usize),
    /// A configured bucket name is not a valid S3 bucket name.
    #[error("{0:?} is not a valid S3 bucket name")]
    BucketName(String),
    /// Two rules match the same value, or a rule's match is empty.
    #[error("rule match {0:?} is empty or listed twice")]
    RuleMatch(String),
}

/// Why a key cannot be routed to a bucket (HTTP 400: the URL names no usable bucket).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The key does not match the routing pattern (or its `bucket` group did not take part),
    /// and there is no default bucket.
    #[error("the image path names no bucket")]
    NoBucket,
    /// Passthrough: the bucket named by the key is not a valid S3 bucket name.
    #[error("the image path names an invalid bucket")]
    InvalidBucket,
    /// The pattern's `path` group matched nothing: no object key is left.
    #[error("the image path names a bucket but no object in it")]
    EmptyKey,
}

/// Where one key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The bucket tried first.
    pub bucket: String,
    /// The bucket came from the key itself (passthrough), not from the configuration.
    pub passthrough: bool,
    /// The object key inside the bucket (and inside every fallback).
    pub key: String,
}

/// A bucket routing table: see the module documentation.
#[derive(Debug, Clone)]
pub struct BucketRouting {
    pattern: Regex,
    has_path: bool,
    rules: Vec<(String, String)>,
    default_bucket: Option<String>,
    fallback_buckets: Vec<String>,
}

impl BucketRouting {
    /// A routing table; every bucket name must be valid, rule matches distinct and non-empty.
    pub fn new(
        pattern: &str,
        rules: Vec<(String, String)>,
        default_bucket: Option<String>,
        fallback_buckets: Vec<String>,
    ) -> Result<Self, RoutingConfigError> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(RoutingConfigError::Pattern(format!(
                "longer than {MAX_PATTERN_LEN} bytes"
            )));
        }
        let pattern =
            Regex::new(pattern).map_err(|e| RoutingConfigError::Pattern(e.to_string()))?;
        let names: Vec<&str> = pattern.capture_names().flatten().collect();
        if !names.contains(&"bucket") {
            return Err(RoutingConfigError::NoBucketGroup);
        }
        let has_path = names.contains(&"path");
        if fallback_buckets.len() > MAX_FALLBACK_BUCKETS {
            return Err(RoutingConfigError::TooManyFallbacks(fallback_buckets.len()));
        }
        let mut named = rules
            .iter()
            .map(|(_, b)| b)
            .chain(&default_bucket)
            .chain(&fallback_buckets);
        if let Some(bad) = named.find(|b| !is_bucket_name(b)) {
            return Err(RoutingConfigError::BucketName(bad.clone()));
        }
        for (i, (m, _)) in rules.iter().enumerate() {
            if m.is_empty() || rules[..i].iter().any(|(other, _)| other == m) {
                return Err(RoutingConfigError::RuleMatch(m.clone()));
            }
        }
        Ok(BucketRouting {
            pattern,
            has_path,
            rules,
            default_bucket,
            fallback_buckets,
        })
    }

    /// imagor's wildcard bucket `*`: the first key segment is the bucket, the rest the key.
    pub fn wildcard() -> Self {
        BucketRouting::new(
            r"^(?P<bucket>[^/]+)/(?P<path>.+)$",
            Vec::new(),
            None,
            Vec::new(),
        )
        .expect("the wildcard pattern is valid")
    }

    /// Passthrough mode: no rules and no default bucket, so the key names the bucket.
    pub fn is_passthrough(&self) -> bool {
        self.rules.is_empty() && self.default_bucket.is_none()
    }

    /// The fallback buckets, tried in order when an object is not in the routed bucket.
    pub fn fallback_buckets(&self) -> &[String] {
        &self.fallback_buckets
    }

    /// Every bucket the configuration names (rules, default, fallbacks), each once.
    pub fn configured_buckets(&self) -> Vec<&str> {
        let mut all: Vec<&str> = Vec::new();
        let named = self
            .rules
            .iter()
            .map(|(_, b)| b)
            .chain(&self.default_bucket)
            .chain(&self.fallback_buckets);
        for b in named {
            if !all.contains(&b.as_str()) {
                all.push(b);
            }
        }
        all
    }

    /// The bucket and object key of `key` (a normalized object key).
    pub fn route(&self, key: &str) -> Result<Routed, RouteError> {
        let caps = self.pattern.captures(key);
        let id = caps.as_ref().and_then(|c| c.name("bucket"));
        let path = caps.as_ref().and_then(|c| c.name("path"));
        let object_key = match path {
            Some(p) if self.has_path => p.as_str().trim_matches('/'),
            _ => key,
        };
        if object_key.is_empty() {
            return Err(RouteError::EmptyKey);
        }
        let routed = |bucket: &str, passthrough: bool| Routed {
            bucket: bucket.to_owned(),
            passthrough,
            key: object_key.to_owned(),
        };
        if self.is_passthrough() {
            let bucket = id.ok_or(RouteError::NoBucket)?.as_str();
            if !is_bucket_name(bucket) {
                return Err(RouteError::InvalidBucket);
            }
            return Ok(routed(bucket, true));
        }
        let rule = id.and_then(|id| self.rules.iter().find(|(m, _)| m == id.as_str()));
        match (rule, &self.default_bucket) {
            (Some((_, bucket)), _) => Ok(routed(bucket, false)),
            (None, Some(default)) => Ok(routed(default, false)),
            (None, None) => Err(RouteError::NoBucket),
        }
    }
}

/// Whether `name` is a valid S3 bucket name: 3 to 63 lower-case letters, digits, `.` and `-`,
/// starting and ending with a letter or digit, without `..`, and not shaped like an IPv4
/// address.
pub fn is_bucket_name(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.iter().all(|&c| edge(c) || c == b'.' || c == b'-')
        && edge(b[0])
        && edge(b[b.len() - 1])
        && !name.contains("..")
        && name.parse::<std::net::Ipv4Addr>().is_err()
}

/// `BUCKET/PATH` → (`BUCKET`, `PATH`), the bucket a valid S3 bucket name: the first segment of
/// an image path on a route whose storage takes the bucket from it (`wildcard_bucket`), before
/// the route's path prefix and base dir apply to the rest, inside that bucket (imagor's
/// `S3_LOADER_BUCKET=*`: `s3storage.resolve`).
pub fn split_bucket(path: &str) -> Result<(&str, &str), RouteError> {
    let (bucket, rest) = path.split_once('/').ok_or(RouteError::EmptyKey)?;
    if bucket.is_empty() {
        return Err(RouteError::NoBucket);
    }
    if !is_bucket_name(bucket) {
        return Err(RouteError::InvalidBucket);
    }
    if rest.is_empty() {
        return Err(RouteError::EmptyKey);
    }
    Ok((bucket, rest))
}

/// Why a configured bucket name cannot name a bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketNameError {
    /// imagor's `BUCKET/DIR` form: the directory belongs in a base dir.
    #[error(
        "{0:?} holds a directory: write the bucket ({1:?}) here and the directory ({2:?}) as \
         the route's base_dir, which is what imagor's BUCKET/DIR form means"
    )]
    WithDirectory(String, String, String),
    /// Characters no S3 bucket has ever been named with.
    #[error(
        "{0:?} is not an S3 bucket name (1 to 255 letters, digits, `.`, `_` and `-`; new \
         buckets: 3 to 63 lower-case letters, digits, `.` and `-`)"
    )]
    Invalid(String),
}

/// Checks a bucket name from the configuration: [`is_bucket_name`] or a legacy name S3 still
/// serves (us-east-1 buckets made before 2018: up to 255 letters of either case, digits, `.`,
/// `_` and `-`), so that existing buckets keep working; `BUCKET/DIR` is refused with how to
/// write it.
pub fn check_configured_bucket(name: &str) -> Result<(), BucketNameError> {
    if let Some((bucket, dir)) = name.split_once('/') {
        return Err(BucketNameError::WithDirectory(
            name.to_owned(),
            bucket.to_owned(),
            dir.trim_matches('/').to_owned(),
        ));
    }
    let legacy = (1..=255).contains(&name.len())
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'));
    if is_bucket_name(name) || legacy {
        Ok(())
    } else {
        Err(BucketNameError::Invalid(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_bucket_names() {
        for ok in ["photos", "a", "Legacy_Bucket", "my.bucket-1"] {
            assert_eq!(check_configured_bucket(ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            check_configured_bucket("photos/public/"),
            Err(BucketNameError::WithDirectory(_, b, d)) if b == "photos" && d == "public"
        ));
        for bad in ["", "a b", "ph:otos", "ü", &"a".repeat(256)] {
            assert!(
                matches!(
                    check_configured_bucket(bad),
                    Err(BucketNameError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    fn passthrough(pattern: &str) -> BucketRouting {
        BucketRouting::new(pattern, Vec::new(), None, Vec::new()).unwrap()
    }

    /// Every row of the seed's "Pattern Examples" table: with the pattern alone (passthrough)
    /// the captured value is the bucket, and the key is the `path` group or the whole key.
    /// (The seed's bucket identifiers `SG` and `users`… are rule matches there; passthrough
    /// needs valid bucket names, so upper-case `SG` is checked through a rule below.)
    #[test]
    fn the_seed_pattern_examples() {
        let rows: &[(&str, &str, &str, &str)] = &[
            // (routing_pattern, example key, bucket, S3 key)
            (
                r"^[a-f0-9]{4}-(?P<bucket>[A-Z]{2})-",
                "f7a3-SG-image.jpg",
                "SG",
                "f7a3-SG-image.jpg",
            ),
            (
                r"^(?P<bucket>[^/]+)/",
                "users/photo.jpg",
                "users",
                "users/photo.jpg",
            ),
            (
                r"(?P<bucket>[a-z]{2}-[a-z]+-\d)",
                "eu-west-1-img.jpg",
                "eu-west-1",
                "eu-west-1-img.jpg",
            ),
            (
                r"^(?P<bucket>mysite-[a-z]+)\/(?P<path>.+)$",
                "mysite-test/images/photo.jpg",
                "mysite-test",
                "images/photo.jpg",
            ),
            (
                r"^(?P<bucket>[^/]+)\/(?P<path>.+)$",
                "any-bucket/images/photo.jpg",
                "any-bucket",
                "images/photo.jpg",
            ),
        ];
        for &(pattern, key, bucket, s3_key) in rows {
            // As a rule table: the identifier maps to a bucket named after it.
            let target = format!("to-{}", bucket.to_ascii_lowercase());
            let ruled = BucketRouting::new(
                pattern,
                vec![(bucket.to_owned(), target.clone())],
                Some("imagor-default".into()),
                Vec::new(),
            )
            .unwrap();
            assert_eq!(
                ruled.route(key),
                Ok(Routed {
                    bucket: target,
                    passthrough: false,
                    key: s3_key.to_owned()
                }),
                "{pattern} {key}"
            );
            // In passthrough, the identifier is the bucket when it is a valid bucket name.
            let routed = passthrough(pattern).route(key);
            if is_bucket_name(bucket) {
                assert_eq!(
                    routed,
                    Ok(Routed {
                        bucket: bucket.to_owned(),
                        passthrough: true,
                        key: s3_key.to_owned()
                    }),
                    "{pattern} {key}"
                );
            } else {
                assert_eq!(routed, Err(RouteError::InvalidBucket), "{pattern} {key}");
            }
        }
    }

    /// The seed's YAML example: SG, US and EU rules, a default and one fallback.
    #[test]
    fn rules_then_the_default_bucket() {
        let r = BucketRouting::new(
            "^[a-f0-9]{4}-(?P<bucket>[A-Za-z0-9]+)-",
            vec![
                ("SG".into(), "imagor-singapore".into()),
                ("US".into(), "imagor-us".into()),
                ("EU".into(), "imagor-eu".into()),
            ],
            Some("imagor-default".into()),
            vec!["imagor-archive".into()],
        )
        .unwrap();
        assert!(!r.is_passthrough());
        let bucket = |key: &str| r.route(key).map(|routed| routed.bucket);
        assert_eq!(
            bucket("f7a3-SG-image.jpg").as_deref(),
            Ok("imagor-singapore")
        );
        assert_eq!(bucket("0000-US-a.jpg").as_deref(), Ok("imagor-us"));
        assert_eq!(bucket("beef-EU-a/b.jpg").as_deref(), Ok("imagor-eu"));
        // A captured value no rule matches, and a key the pattern does not match: the default.
        assert_eq!(bucket("f7a3-JP-image.jpg").as_deref(), Ok("imagor-default"));
        assert_eq!(bucket("plain/image.jpg").as_deref(), Ok("imagor-default"));
        assert_eq!(
            r.route("f7a3-SG-image.jpg").unwrap().key,
            "f7a3-SG-image.jpg"
        );
        assert_eq!(r.fallback_buckets(), ["imagor-archive"]);
        assert_eq!(
            r.configured_buckets(),
            [
                "imagor-singapore",
                "imagor-us",
                "imagor-eu",
                "imagor-default",
                "imagor-archive"
            ]
        );
    }

    #[test]
    fn rules_without_a_default_refuse_unmatched_keys() {
        let r = BucketRouting::new(
            "^(?P<bucket>[^/]+)/",
            vec![("a".into(), "bucket-a".into())],
            None,
            Vec::new(),
        )
        .unwrap();
        assert_eq!(r.route("a/x.jpg").unwrap().bucket, "bucket-a");
        assert_eq!(r.route("b/x.jpg"), Err(RouteError::NoBucket));
        assert_eq!(r.route("x.jpg"), Err(RouteError::NoBucket));
    }

    #[test]
    fn the_wildcard_bucket_is_the_first_segment() {
        let w = BucketRouting::wildcard();
        assert!(w.is_passthrough());
        assert_eq!(
            w.route("mysite-test/images/photo.jpg"),
            Ok(Routed {
                bucket: "mysite-test".into(),
                passthrough: true,
                key: "images/photo.jpg".into()
            })
        );
        assert_eq!(
            w.route("mysite-prod/assets/logo.png").unwrap().key,
            "assets/logo.png"
        );
        assert_eq!(w.route("photo.jpg"), Err(RouteError::NoBucket));
        for bad in [
            "UPPER/a.jpg",
            "a_b/x.jpg",
            "ab/x.jpg",
            "192.168.1.1/x.jpg",
            "a..b/x.jpg",
        ] {
            assert_eq!(w.route(bad), Err(RouteError::InvalidBucket), "{bad}");
        }
    }

    #[test]
    fn an_empty_path_group_leaves_no_key() {
        let r = passthrough(r"^(?P<bucket>[^/]+)/?(?P<path>.*)$");
        assert_eq!(r.route("bucket-a/"), Err(RouteError::EmptyKey));
        assert_eq!(r.route("bucket-a/x").unwrap().key, "x");
    }

    #[test]
    fn bucket_names() {
        let longest = "a".repeat(63);
        for good in ["abc", "my-bucket.v2", "a1b", longest.as_str(), "1-2.3"] {
            assert!(is_bucket_name(good), "{good}");
        }
        let too_long = "a".repeat(64);
        for bad in [
            "",
            "ab",
            "Abc",
            "a_b",
            "-ab",
            "ab-",
            ".ab",
            "ab.",
            "a..b",
            "10.0.0.1",
            "a b",
            "ü-bucket",
            too_long.as_str(),
        ] {
            assert!(!is_bucket_name(bad), "{bad}");
        }
    }

    #[test]
    fn bad_configurations_are_refused() {
        let new = |p: &str, rules: Vec<(&str, &str)>, d: Option<&str>, f: Vec<&str>| {
            BucketRouting::new(
                p,
                rules
                    .into_iter()
                    .map(|(m, b)| (m.to_owned(), b.to_owned()))
                    .collect(),
                d.map(str::to_owned),
                f.into_iter().map(str::to_owned).collect(),
            )
        };
        assert!(matches!(
            new("(", vec![], None, vec![]),
            Err(RoutingConfigError::Pattern(_))
        ));
        assert_eq!(
            new("^(?P<b>x)", vec![], None, vec![]).unwrap_err(),
            RoutingConfigError::NoBucketGroup
        );
        assert_eq!(
            new("(?P<bucket>x)", vec![], None, vec!["aaa", "bbb", "ccc"]).unwrap_err(),
            RoutingConfigError::TooManyFallbacks(3)
        );
        assert_eq!(
            new("(?P<bucket>x)", vec![("x", "Bad_Bucket")], None, vec![]).unwrap_err(),
            RoutingConfigError::BucketName("Bad_Bucket".into())
        );
        assert_eq!(
            new("(?P<bucket>x)", vec![], Some("ok-bucket"), vec!["no"]).unwrap_err(),
            RoutingConfigError::BucketName("no".into())
        );
        assert_eq!(
            new(
                "(?P<bucket>x)",
                vec![("x", "aaa"), ("x", "bbb")],
                None,
                vec![]
            )
            .unwrap_err(),
            RoutingConfigError::RuleMatch("x".into())
        );
        assert!(matches!(
            new(&"a".repeat(MAX_PATTERN_LEN + 1), vec![], None, vec![]),
            Err(RoutingConfigError::Pattern(_))
        ));
    }
}
