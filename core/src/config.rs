//! The filter's configuration: the JSON given to the wasm plugin in Envoy.
//!
//! ```json
//! { "routes": [ { "prefix": "/img/", "storage": "photos", "base_dir": "originals",
//!                 "secret": "…", "allow_unsafe": false,
//!                 "canonical_base_url": "https://www.example.com" } ] }
//! ```

use serde::Deserialize;

use crate::sign::HashAlg;

/// Why a configuration was refused. The filter then fails `on_configure` and Envoy refuses to
/// start, instead of serving with a half-understood config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The text is not JSON of the expected shape (unknown fields are refused too).
    #[error("invalid filter config: {0}")]
    Json(String),
    /// A value is out of range or two values contradict each other.
    #[error("invalid filter config: route {prefix:?}: {reason}")]
    Route {
        /// The route's prefix.
        prefix: String,
        /// What is wrong.
        reason: String,
    },
    /// The config has no routes at all.
    #[error("invalid filter config: no routes")]
    NoRoutes,
}

/// A secret that never shows in `Debug` output or logs.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for the signer only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Which URL grammar a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grammar {
    /// thumbor / imagor paths.
    #[default]
    Thumbor,
}

/// The whole filter configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Image routes, matched by longest prefix.
    pub routes: Vec<RouteConfig>,
}

/// One path prefix served by pixmesh.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, starting and ending with `/`; the URL grammar starts after it.
    pub prefix: String,
    /// URL grammar spoken under this prefix.
    #[serde(default)]
    pub grammar: Grammar,
    /// Named storage of the sidecar that holds the sources.
    pub storage: String,
    /// Key prefix inside that storage under which image paths are joined.
    #[serde(default)]
    pub base_dir: String,
    /// Accept `unsafe/` (unsigned) URLs. Off by default.
    #[serde(default)]
    pub allow_unsafe: bool,
    /// URL signing secret.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Signature HMAC hash.
    #[serde(default)]
    pub signature_hash: HashAlg,
    /// Truncate signatures to this many characters.
    #[serde(default)]
    pub signature_length: Option<usize>,
    /// Base URL of the `Link: <…>; rel="canonical"` header; no header when unset.
    #[serde(default)]
    pub canonical_base_url: Option<String>,
}

impl FilterConfig {
    /// Parses and validates the plugin configuration.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let cfg: FilterConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError::NoRoutes);
        }
        let mut seen = Vec::new();
        for r in &self.routes {
            let fail = |reason: &str| {
                Err(ConfigError::Route {
                    prefix: r.prefix.clone(),
                    reason: reason.to_owned(),
                })
            };
            if !r.prefix.starts_with('/') || !r.prefix.ends_with('/') {
                return fail("prefix must start and end with /");
            }
            if crate::render::is_internal(&r.prefix) {
                return fail("prefix is reserved for pixmesh's internal paths");
            }
            if seen.contains(&&r.prefix) {
                return fail("prefix is configured twice");
            }
            seen.push(&r.prefix);
            if r.storage.is_empty() || r.storage.contains('/') {
                return fail("storage must be a non-empty name without /");
            }
            match &r.secret {
                Some(s) if s.0.is_empty() => return fail("secret is empty"),
                None if !r.allow_unsafe => {
                    return fail("set a secret, or allow_unsafe to serve unsigned URLs");
                }
                _ => {}
            }
            if r.signature_length == Some(0) {
                return fail("signature_length must be at least 1");
            }
            let bad_url = |u: &str| {
                !(u.starts_with("https://") || u.starts_with("http://"))
                    || u.bytes()
                        .any(|b| b.is_ascii_control() || b == b' ' || b == b'>')
            };
            if r.canonical_base_url.as_deref().is_some_and(bad_url) {
                return fail("canonical_base_url must be an http(s) URL");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<FilterConfig, ConfigError> {
        FilterConfig::from_json(json.as_bytes())
    }

    #[test]
    fn accepts_a_complete_config() {
        let cfg = parse(
            r#"{"routes":[{"prefix":"/img/","storage":"photos","base_dir":"o","secret":"s",
                "signature_hash":"sha256","signature_length":20,
                "canonical_base_url":"https://www.example.com"}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.routes[0].signature_hash, HashAlg::Sha256);
        assert!(!format!("{cfg:?}").contains("\"s\""), "secret redacted");
    }

    #[test]
    fn refuses_bad_configs() {
        for bad in [
            "",
            "{}",
            r#"{"routes":[]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s","allow_unsafe":true,"typo":1}]}"#,
            r#"{"routes":[{"prefix":"img/","storage":"s","allow_unsafe":true}]}"#,
            r#"{"routes":[{"prefix":"/img","storage":"s","allow_unsafe":true}]}"#,
            r#"{"routes":[{"prefix":"/_pixmesh/x/","storage":"s","allow_unsafe":true}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"","allow_unsafe":true}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s"}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s","secret":""}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s","secret":"k","signature_length":0}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s","secret":"k","grammar":"nope"}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s","secret":"k","canonical_base_url":"ftp://x"}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k"},{"prefix":"/a/","storage":"t","secret":"k"}]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
