//! imagor's bucket routing file (`routing_file`, YAML, imagor's
//! `S3_LOADER_BUCKET_ROUTER_CONFIG`) as written: read, parsed and validated when the
//! configuration loads. The storages it routes to are [`crate::storage::routing`]'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pixmesh_core::buckets::BucketRouting;
use serde::Deserialize;

use super::{S3Config, Secret};

/// Largest routing file read, in bytes.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why a routing file is refused (the sidecar then refuses to start).
#[derive(Debug, thiserror::Error)]
pub enum RoutingFileError {
    /// The file could not be read, or is over 1 MiB.
    #[error("routing_file {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not YAML of the documented shape (unknown fields are refused too).
    #[error("routing_file {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The routing file, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingFile {
    /// A regular expression with a named group `bucket` (and optionally `path`).
    pub routing_pattern: String,
    /// The bucket of keys no rule matches.
    #[serde(default)]
    pub default_bucket: Option<BucketEntry>,
    /// Buckets tried in order when an object is not in the routed one (at most two).
    #[serde(default)]
    pub fallback_buckets: Vec<BucketEntry>,
    /// Captured values and their buckets.
    #[serde(default)]
    pub rules: Vec<RuleEntry>,
}

/// One bucket of the routing file; unset values are the storage's.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BucketEntry {
    /// Bucket name.
    pub name: String,
    /// Its region.
    #[serde(default)]
    pub region: Option<String>,
    /// Its endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Its access key (with `secret_access_key`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Its secret key.
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Its session token.
    #[serde(default)]
    pub session_token: Option<Secret>,
}

/// One rule: keys whose captured `bucket` value equals `match` go to `bucket`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// The captured value.
    #[serde(rename = "match")]
    pub matches: String,
    /// Its bucket.
    pub bucket: BucketEntry,
}

impl RoutingFile {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<(Self, BucketRouting), RoutingFileError> {
        let read = |reason: String| RoutingFileError::Read {
            path: path.to_owned(),
            reason,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| read(e.to_string()))?
            .len();
        if size > MAX_FILE_BYTES {
            return Err(read(format!("{size} bytes; at most {MAX_FILE_BYTES}")));
        }
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        Self::parse(&text).map_err(|reason| RoutingFileError::Parse {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses and validates YAML text; the error says what is wrong (never a secret).
    pub fn parse(text: &str) -> Result<(Self, BucketRouting), String> {
        let file: RoutingFile = yaml_serde::from_str(text).map_err(|e| e.to_string())?;
        let routing = BucketRouting::new(
            &file.routing_pattern,
            file.rules
                .iter()
                .map(|r| (r.matches.clone(), r.bucket.name.clone()))
                .collect(),
            file.default_bucket.as_ref().map(|b| b.name.clone()),
            file.fallback_buckets
                .iter()
                .map(|b| b.name.clone())
                .collect(),
        )
        .map_err(|e| e.to_string())?;
        let mut seen: HashMap<&str, &BucketEntry> = HashMap::new();
        for entry in file.entries() {
            if entry.access_key_id.is_some() != entry.secret_access_key.is_some() {
                return Err(format!(
                    "bucket {}: set both access_key_id and secret_access_key, or neither",
                    entry.name
                ));
            }
            if seen.insert(&entry.name, entry).is_some_and(|e| e != entry) {
                return Err(format!(
                    "bucket {} is configured twice with different settings",
                    entry.name
                ));
            }
        }
        Ok((file, routing))
    }

    /// Every bucket entry: rules, default, fallbacks.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &BucketEntry> {
        self.rules
            .iter()
            .map(|r| &r.bucket)
            .chain(&self.default_bucket)
            .chain(&self.fallback_buckets)
    }
}

impl BucketEntry {
    /// `base` (the storage's settings) for this bucket, with what the entry sets itself.
    pub(crate) fn config(&self, base: &S3Config) -> S3Config {
        let mut cfg = base.clone();
        cfg.bucket = self.name.clone();
        cfg.routing_file = None;
        if self.region.is_some() {
            cfg.region = self.region.clone();
        }
        if self.endpoint.is_some() {
            cfg.endpoint = self.endpoint.clone();
        }
        if self.access_key_id.is_some() {
            cfg.access_key_id = self.access_key_id.clone();
            cfg.secret_access_key = self.secret_access_key.clone();
            cfg.session_token = self.session_token.clone();
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed's example file, as printed there (its indentation restored).
    const SEED: &str = r#"
# Regex pattern with named capture group (?P<bucket>...)
routing_pattern: "^[a-f0-9]{4}-(?P<bucket>[A-Za-z0-9]+)-"
default_bucket:
  name: imagor-default
  region: us-east-1
fallback_buckets:
  - name: imagor-archive
    region: us-west-2
rules:
  - match: SG
    bucket:
      name: imagor-singapore
      region: ap-southeast-1
  - match: US
    bucket:
      name: imagor-us
      region: us-east-1
  - match: EU
    bucket:
      name: imagor-eu
      region: eu-west-1
      endpoint: https://s3.custom-endpoint.com
      access_key_id: AKIAIOSFODNN7EXAMPLE
      secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY
"#;

    #[test]
    fn parses_the_seed_example() {
        let (file, routing) = RoutingFile::parse(SEED).unwrap();
        assert_eq!(file.rules.len(), 3);
        assert_eq!(routing.route("f7a3-EU-x.jpg").unwrap().bucket, "imagor-eu");
        assert_eq!(routing.route("zzzz.jpg").unwrap().bucket, "imagor-default");
        assert_eq!(routing.fallback_buckets(), ["imagor-archive"]);
        let base: S3Config = toml::from_str(
            "bucket = \"*\"\nregion = \"us-east-1\"\naccess_key_id = \"GLOBAL\"\n\
             secret_access_key = \"global-secret\"",
        )
        .unwrap();
        let eu = file.rules[2].bucket.config(&base);
        assert_eq!(eu.bucket, "imagor-eu");
        assert_eq!(eu.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            eu.endpoint.as_deref(),
            Some("https://s3.custom-endpoint.com")
        );
        assert_eq!(eu.access_key_id.as_deref(), Some("AKIAIOSFODNN7EXAMPLE"));
        let sg = file.rules[0].bucket.config(&base);
        assert_eq!(
            sg.access_key_id.as_deref(),
            Some("GLOBAL"),
            "global credentials"
        );
        assert_eq!(sg.region.as_deref(), Some("ap-southeast-1"));
        let debug = format!("{file:?}");
        assert!(!debug.contains("wJalrXUtnFEMI"), "{debug}");
    }

    #[test]
    fn refuses_bad_files_without_echoing_secrets() {
        for (bad, why) in [
            ("routing_pattern: \"(\"", "regular expression"),
            ("routing_pattern: \"x\"", "(?P<bucket>"),
            ("rules: []", "routing_pattern"),
            ("routing_pattern: \"(?P<bucket>x)\"\ntypo: 1", "typo"),
            (
                "routing_pattern: \"(?P<bucket>x)\"\nfallback_buckets: [{name: aaa}, {name: bbb}, {name: ccc}]",
                "at most 2",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: Not_A_Bucket}",
                "Not_A_Bucket",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: aaa, access_key_id: K}",
                "both access_key_id and secret_access_key",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: aaa, region: a}\n\
                 fallback_buckets: [{name: aaa, region: b}]",
                "configured twice",
            ),
            (
                "routing_pattern: \"(?P<bucket>x)\"\ndefault_bucket: {name: aaa, secret_access_key: hush-hush}",
                "both",
            ),
        ] {
            let err = RoutingFile::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("hush-hush"), "{err}");
        }
    }
}
