//! The filter's configuration: the JSON given to the wasm plugin in Envoy.
//!
//! ```json
//! { "routes": [
//!   { "prefix": "/img/", "storage": "photos", "base_dir": "originals",
//!     "secret": "…", "allow_unsafe": false, "canonical_base_url": "https://www.example.com" },
//!   { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos",
//!     "keys": [ { "key": "943b…", "salt": "520f…" } ], "signature_size": 32,
//!     "handles": { "photos-bucket": "photos" } },
//!   { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "secret": "private_…" },
//!   { "prefix": "/v1/ex/", "grammar": "query", "storage": "photos", "secret": "…",
//!     "handles": { "my-s3-bucket": "photos", "archive": "cold" } } ] }
//! ```
//!
//! Which fields a route may set depends on its grammar:
//!
//! | field | thumbor | imgproxy | imagekit | query |
//! |---|---|---|---|---|
//! | `secret` | HMAC secret | — | private key (`ik-s`) | HMAC-SHA256 secret (`sig`) |
//! | `signature_hash`, `signature_length` | yes | — | — | — |
//! | `keys` (hex key/salt pairs, first signs), `signature_size` (bytes) | — | yes | — | — |
//! | `handles` (URL name → storage) | — | `s3://BUCKET/` | — | `HANDLE/` |
//!
//! A route without signing keys must set `allow_unsafe`. The route's own `storage` name is always
//! a valid handle for itself. Any route may set `auto_format` (see [`crate::accept`]): URLs
//! that name no format then get WebP when the client's `Accept` lists it. `auto_avif` lets
//! auto (from the URL or from `auto_format`) choose AVIF, above WebP, for clients that list it.
//! `cache_key_headers` / `cache_key_cookies` (see [`crate::cachekey`]): renditions then differ
//! per value of those headers and cookies. A thumbor route may set `"result_keys": "imagor"`
//! ([`ResultKeys`]): its renditions are then named in result storage as imagor names them;
//! and `"plus_as_space": true`: a `+` in the image path is a space, as imagor reads it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::call::CallConfig;
use crate::sign::{HashAlg, ImgproxySigner};
use crate::vouch::Voucher;

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

/// A secret that never shows in `Debug` output or logs. Written in the configuration as its
/// value, or as `{"env": "NAME"}`: the value of the environment variable `NAME` (the wasm VM's:
/// Envoy's `vm_config.environment_variables`, Istio's `vmConfig.env`, Envoy Gateway's
/// `hostEnvKeys`), so that no secret has to live in a committed file or a custom resource.
#[derive(Clone, Deserialize)]
#[serde(from = "SecretSpec")]
pub struct Secret(SecretSpec);

/// How a secret is written.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum SecretSpec {
    /// The value itself.
    Value(String),
    /// The environment variable holding it, until [`FilterConfig::from_json_with_env`] reads it.
    Env { env: String },
}

impl From<SecretSpec> for Secret {
    fn from(spec: SecretSpec) -> Self {
        Secret(spec)
    }
}

impl Secret {
    /// The secret itself, for the signer only (empty before an `env` secret is read, which a
    /// parsed configuration never has).
    pub fn expose(&self) -> &str {
        match &self.0 {
            SecretSpec::Value(v) => v,
            SecretSpec::Env { .. } => "",
        }
    }

    /// Replaces an `env` secret by the variable's value: an error naming the variable when
    /// `env` has none.
    fn resolve(&mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let SecretSpec::Env { env: name } = &self.0 {
            let value = env(name).filter(|v| !v.is_empty()).ok_or_else(|| {
                ConfigError::Json(format!("the environment variable {name} is not set"))
            })?;
            self.0 = SecretSpec::Value(value);
        }
        Ok(())
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
    /// thumbor / imagor paths ([`crate::thumbor`]).
    #[default]
    Thumbor,
    /// imgproxy paths ([`crate::imgproxy`]).
    Imgproxy,
    /// ImageKit URLs ([`crate::imagekit`]).
    Imagekit,
    /// Query-string URLs, Skymage style ([`crate::query`]).
    Query,
}

impl Grammar {
    /// Its name, as in the configuration (logs, metrics).
    pub fn name(self) -> &'static str {
        match self {
            Grammar::Thumbor => "thumbor",
            Grammar::Imgproxy => "imgproxy",
            Grammar::Imagekit => "imagekit",
            Grammar::Query => "query",
        }
    }

    /// The grammar named `name` ([`Grammar::name`]).
    pub fn from_name(name: &str) -> Option<Grammar> {
        [
            Grammar::Thumbor,
            Grammar::Imgproxy,
            Grammar::Imagekit,
            Grammar::Query,
        ]
        .into_iter()
        .find(|g| g.name() == name)
    }
}

/// One imgproxy key/salt pair, both hex-encoded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPair {
    /// Hex key (`IMGPROXY_KEY`).
    pub key: Secret,
    /// Hex salt (`IMGPROXY_SALT`).
    pub salt: Secret,
}

/// The whole filter configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Image routes, matched by longest prefix.
    pub routes: Vec<RouteConfig>,
    /// The key the filter vouches for its render requests with ([`crate::vouch`]), shared with
    /// the sidecar (its `render_key`), at least 32 bytes. The filter falls back to the VM's
    /// environment variable [`RENDER_KEY_ENV`] when it is not set here, so that no secret has
    /// to live in the plugin configuration.
    #[serde(default)]
    pub render_key: Option<Secret>,
    /// Call mode: the filter calls the sidecar itself and answers the client, instead of
    /// handing image requests to the gRPC-JSON transcoder ([`crate::call`]); for gateways that
    /// take a wasm filter and nothing else. Unset: the transcoder.
    #[serde(default)]
    pub call: Option<CallConfig>,
}

/// Fewest base64 characters a thumbor signature may be truncated to (66 bits).
pub const MIN_SIGNATURE_CHARS: usize = 11;

/// Fewest bytes an imgproxy signature may be truncated to (64 bits).
pub const MIN_SIGNATURE_BYTES: usize = 8;

/// The environment variable holding the render key when the configuration has none (the
/// filter's VM environment: Envoy's `vm_config.environment_variables`; the sidecar's process
/// environment).
pub const RENDER_KEY_ENV: &str = "PIXMESH_RENDER_KEY";

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
    /// Serve only image paths under this prefix (whole segments), which is removed before the
    /// rest is joined under `base_dir` (imagor's `S3_LOADER_PATH_PREFIX`); other paths are 400.
    /// Empty (the default): every path.
    #[serde(default)]
    pub path_prefix: String,
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
    /// imgproxy: key/salt pairs; the first signs, every one verifies (key rotation).
    #[serde(default)]
    pub keys: Vec<KeyPair>,
    /// imgproxy: signatures truncated to this many bytes (`IMGPROXY_SIGNATURE_SIZE`, 8–32;
    /// 1–7 with `allow_weak_signatures`).
    #[serde(default)]
    pub signature_size: Option<usize>,
    /// Accept signatures truncated below 64 bits (`signature_length` under
    /// [`MIN_SIGNATURE_CHARS`], `signature_size` under [`MIN_SIGNATURE_BYTES`]), which the
    /// peers allow: for a migration that must keep such URLs working. Off by default.
    #[serde(default)]
    pub allow_weak_signatures: bool,
    /// thumbor: answer a filter pixmesh does not know with 400 instead of skipping it (thumbor
    /// and imagor skip unknown filters, which pixmesh does by default and logs).
    #[serde(default)]
    pub strict_filters: bool,
    /// imgproxy and query: storage handles a URL may name, mapped to sidecar storages.
    #[serde(default)]
    pub handles: BTreeMap<String, String>,
    /// Let the client's `Accept` header choose the format of URLs that name none (thumbor's
    /// `AUTO_WEBP`, imgproxy's `IMGPROXY_AUTO_WEBP`, ImageKit's "best format" setting); see
    /// [`crate::accept`]. Off by default: such URLs keep the source's format.
    #[serde(default)]
    pub auto_format: bool,
    /// Request headers whose values are part of each rendition's identity (imgproxy's cache key
    /// headers; see [`crate::cachekey`]): responses carry `Vary` on them.
    #[serde(default)]
    pub cache_key_headers: Vec<String>,
    /// Cookies whose values are part of each rendition's identity; responses `Vary: Cookie`.
    #[serde(default)]
    pub cache_key_cookies: Vec<String>,
    /// Let auto choose AVIF, ranked above WebP, for clients whose `Accept` lists `image/avif`
    /// (thumbor's `AUTO_AVIF`, imgproxy's `IMGPROXY_AUTO_AVIF`). Off by default, as in both:
    /// AVIF encoding costs several times WebP's.
    #[serde(default)]
    pub auto_avif: bool,
    /// The first segment of the image path names the bucket (the storage is `bucket = "*"`),
    /// as imagor's `S3_LOADER_BUCKET=*`: `path_prefix` and `base_dir` apply to the rest, inside
    /// that bucket (without it they come first, and a base dir would be read as the bucket).
    /// The segment must be a valid S3 bucket name (else 400).
    #[serde(default)]
    pub wildcard_bucket: bool,
    /// Which statuses refusals answer with ([`Statuses`]): the peer's own (the default) or
    /// pixmesh's precise ones.
    #[serde(default)]
    pub statuses: Statuses,
    /// thumbor: read a `+` in the image path as a space, as imagor does (its loader
    /// query-unescapes the image), instead of a `+`, as thumbor does. `%2B` is a `+` either
    /// way. Off by default.
    #[serde(default)]
    pub plus_as_space: bool,
    /// thumbor: how the sidecar names this route's renditions in result storage
    /// ([`ResultKeys`]): after pixmesh's canonical request (the default) or as imagor does.
    #[serde(default)]
    pub result_keys: ResultKeys,
}

/// How a thumbor route's renditions are named in result storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultKeys {
    /// After the canonical request ([`crate::render::RenderRequest::canonical`]): one name per
    /// distinct rendition, whatever URL asked for it.
    #[default]
    Pixmesh,
    /// After the URL path as imagor names it ([`crate::imagor_key`]), so that the renditions an
    /// imagor deployment stored are found (with the sidecar's `path_style` matching imagor's
    /// `IMAGOR_RESULT_STORAGE_PATH_STYLE`). The name holds neither the storage nor the base dir,
    /// so only routes reading the same objects may share it.
    Imagor,
}

/// The statuses a route's refusals answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Statuses {
    /// As the grammar's peer answers, so that clients and monitoring written for it keep
    /// working: on imgproxy routes a URL that does not parse, names an unknown option or has
    /// expired is 404 `Invalid URL`, a malformed or wrong signature 403 `Forbidden`
    /// (imgproxy's `options/parser/errors.go`, `security/errors.go`). The other grammars'
    /// statuses are their peers' already.
    #[default]
    Peer,
    /// pixmesh's own, each refusal with its reason ([`crate::router`]'s table: 400, 410, …).
    Pixmesh,
}

impl RouteConfig {
    /// The storage a URL's handle selects: no handle or the route's own storage name selects
    /// `storage`; other names must be in `handles`.
    pub fn storage_for(&self, handle: Option<&str>) -> Option<&str> {
        match handle {
            None => Some(&self.storage),
            Some(h) if h == self.storage => Some(&self.storage),
            Some(h) => self.handles.get(h).map(String::as_str),
        }
    }

    /// The imgproxy signer of this route, when it has keys.
    pub fn imgproxy_signer(&self) -> Option<ImgproxySigner> {
        ImgproxySigner::new(
            self.keys.iter().map(|p| (p.key.expose(), p.salt.expose())),
            self.signature_size,
        )
    }
}

impl FilterConfig {
    /// Parses and validates the plugin configuration; secrets written `{"env": …}` are an
    /// error (see [`FilterConfig::from_json_with_env`]).
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        Self::from_json_with_env(bytes, &|_| None)
    }

    /// Parses and validates the plugin configuration, reading the secrets written
    /// `{"env": "NAME"}` from `env` (the filter passes its VM's environment).
    pub fn from_json_with_env(
        bytes: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg: FilterConfig =
            serde_json::from_slice(bytes).map_err(|e| ConfigError::Json(e.to_string()))?;
        if let Some(key) = &mut cfg.render_key {
            key.resolve(env)?;
        }
        for route in &mut cfg.routes {
            if let Some(secret) = &mut route.secret {
                secret.resolve(env)?;
            }
            for pair in &mut route.keys {
                pair.key.resolve(env)?;
                pair.salt.resolve(env)?;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// The voucher of this configuration's `render_key`, else of `from_env` (the value of
    /// [`RENDER_KEY_ENV`]); an error when neither is set or the key is too short.
    pub fn voucher(&self, from_env: Option<&str>) -> Result<Voucher, ConfigError> {
        let key = match (&self.render_key, from_env) {
            (Some(key), _) => key.expose(),
            (None, Some(key)) if !key.is_empty() => key,
            (None, _) => {
                return Err(ConfigError::Json(format!(
                    "render_key is not set, nor is {RENDER_KEY_ENV}: the sidecar renders only \
                     requests vouched for with the key it shares with the filter"
                )));
            }
        };
        Voucher::new(key.as_bytes()).map_err(|e| ConfigError::Json(e.to_string()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.routes.is_empty() {
            return Err(ConfigError::NoRoutes);
        }
        if let Some(problem) = self.call.as_ref().and_then(CallConfig::problem) {
            return Err(ConfigError::Json(problem.to_owned()));
        }
        if let Some(key) = &self.render_key {
            Voucher::new(key.expose().as_bytes()).map_err(|e| ConfigError::Json(e.to_string()))?;
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
            let bad_storage = |s: &str| s.is_empty() || s.contains('/');
            if bad_storage(&r.storage) {
                return fail("storage must be a non-empty name without /");
            }
            let prefix = r.path_prefix.trim_matches('/');
            if !prefix.is_empty() && crate::keys::normalize(prefix).as_deref() != Ok(prefix) {
                return fail("path_prefix must be path segments without `.`, `..` or `//`");
            }
            if r.secret.as_ref().is_some_and(|s| s.expose().is_empty()) {
                return fail("secret is empty");
            }
            let thumbor = r.grammar == Grammar::Thumbor;
            let imgproxy = r.grammar == Grammar::Imgproxy;
            if !thumbor && (r.signature_hash != HashAlg::default() || r.signature_length.is_some())
            {
                return fail("signature_hash and signature_length are for the thumbor grammar");
            }
            if !imgproxy && (!r.keys.is_empty() || r.signature_size.is_some()) {
                return fail("keys and signature_size are for the imgproxy grammar");
            }
            if imgproxy && r.secret.is_some() {
                return fail("imgproxy routes sign with keys (hex key/salt pairs), not secret");
            }
            if imgproxy
                && (!r.keys.is_empty() || r.signature_size.is_some())
                && r.imgproxy_signer().is_none()
            {
                return fail("keys must be non-empty hex key/salt pairs; signature_size 1-32");
            }
            let signed = if imgproxy {
                !r.keys.is_empty()
            } else {
                r.secret.is_some()
            };
            if !signed && !r.allow_unsafe {
                return fail("set signing keys, or allow_unsafe to serve unsigned URLs");
            }
            if r.signature_length == Some(0) {
                return fail("signature_length must be at least 1");
            }
            // A truncated signature is guessed in 2^bits tries: refuse fewer than 64 bits
            // unless the route says it accepts that (a migration keeping short signatures).
            let weak = r.signature_length.is_some_and(|n| n < MIN_SIGNATURE_CHARS)
                || r.signature_size.is_some_and(|n| n < MIN_SIGNATURE_BYTES);
            if weak && !r.allow_weak_signatures {
                return fail(&format!(
                    "signatures shorter than 64 bits (signature_length {MIN_SIGNATURE_CHARS} \
                     characters, signature_size {MIN_SIGNATURE_BYTES} bytes) can be guessed; \
                     set allow_weak_signatures to accept them anyway"
                ));
            }
            if !r.handles.is_empty() && !matches!(r.grammar, Grammar::Imgproxy | Grammar::Query) {
                return fail("handles are for the imgproxy and query grammars");
            }
            for (handle, storage) in &r.handles {
                if !crate::query::is_handle(handle) || bad_storage(storage) {
                    return fail("handles must map names of [A-Za-z0-9._-] to storage names");
                }
            }
            let bad_url = |u: &str| {
                !(u.starts_with("https://") || u.starts_with("http://"))
                    || u.bytes()
                        .any(|b| b.is_ascii_control() || b == b' ' || b == b'>')
            };
            if r.canonical_base_url.as_deref().is_some_and(bad_url) {
                return fail("canonical_base_url must be an http(s) URL");
            }
            if let Some(reason) = cache_key_problem(&r.cache_key_headers, &r.cache_key_cookies) {
                return fail(&reason);
            }
            if r.result_keys == ResultKeys::Imagor && !thumbor {
                return fail("result_keys \"imagor\" is for the thumbor grammar");
            }
            if r.plus_as_space && !thumbor {
                return fail("plus_as_space is for the thumbor grammar");
            }
        }
        self.check_shared_keys()?;
        self.check_imagor_result_keys()
    }

    /// Refuses imagor result keys on two routes that read different objects: imagor's name of
    /// a rendition is the URL path after the signature, the same on both routes for different
    /// images, so one would be served the other's renditions.
    fn check_imagor_result_keys(&self) -> Result<(), ConfigError> {
        let imagor: Vec<&RouteConfig> = (self.routes.iter())
            .filter(|r| r.result_keys == ResultKeys::Imagor)
            .collect();
        for (i, a) in imagor.iter().enumerate() {
            if let Some(b) = imagor[i + 1..].iter().find(|b| !same_reach(a, b)) {
                return Err(ConfigError::Route {
                    prefix: b.prefix.clone(),
                    reason: format!(
                        "names its renditions as imagor does, as route {:?} does, which reads \
                         other objects (storage, base_dir or path_prefix differ): the same URL \
                         path would name renditions of both; keep result_keys \"imagor\" on one",
                        a.prefix
                    ),
                });
            }
        }
        Ok(())
    }

    /// Refuses one signing key on two routes that read different objects. Signatures cover
    /// what follows a route's prefix, as the peers' client libraries sign it (they know
    /// nothing of routes), so a URL signed for one route verifies on every route with its key:
    /// routes with different storages, handles, base dirs or path prefixes need keys of their
    /// own, or a URL signed for public images would read private ones.
    fn check_shared_keys(&self) -> Result<(), ConfigError> {
        let keys = |r: &RouteConfig| -> Vec<String> {
            let mut keys: Vec<String> = r.secret.iter().map(|s| s.expose().to_owned()).collect();
            keys.extend(
                r.keys
                    .iter()
                    .map(|p| format!("{}\0{}", p.key.expose(), p.salt.expose())),
            );
            keys
        };
        for (i, a) in self.routes.iter().enumerate() {
            let a_keys = keys(a);
            for b in &self.routes[i + 1..] {
                if !same_reach(a, b) && keys(b).iter().any(|k| a_keys.contains(k)) {
                    return Err(ConfigError::Route {
                        prefix: b.prefix.clone(),
                        reason: format!(
                            "shares a signing key with route {:?}, which reads other objects \
                             (storage, base_dir, path_prefix or a handle differ): a URL signed \
                             for one would verify on the other; give each route its own key",
                            a.prefix
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Whether two routes read the same object for the same path: same storage, base dir, path
/// prefix and bucket reading, and no handle both know but map differently (handles are in the
/// path, so only such a handle reaches other objects).
fn same_reach(a: &RouteConfig, b: &RouteConfig) -> bool {
    a.storage == b.storage
        && a.base_dir.trim_matches('/') == b.base_dir.trim_matches('/')
        && a.path_prefix.trim_matches('/') == b.path_prefix.trim_matches('/')
        && a.wildcard_bucket == b.wildcard_bucket
        && a.handles
            .iter()
            .all(|(h, s)| b.handles.get(h).is_none_or(|t| t == s))
}

/// What is wrong with a route's cache key names, if anything.
fn cache_key_problem(headers: &[String], cookies: &[String]) -> Option<String> {
    use crate::cachekey::{MAX_NAMES, is_token};
    for (what, names) in [
        ("cache_key_headers", headers),
        ("cache_key_cookies", cookies),
    ] {
        if names.len() > MAX_NAMES {
            return Some(format!("{what}: at most {MAX_NAMES} names"));
        }
        for (i, name) in names.iter().enumerate() {
            if !is_token(name) {
                return Some(format!("{what}: {name:?} is not a header or cookie name"));
            }
            let twice = names[..i].iter().any(|n| {
                if what == "cache_key_headers" {
                    n.eq_ignore_ascii_case(name)
                } else {
                    n == name
                }
            });
            if twice {
                return Some(format!("{what}: {name:?} is listed twice"));
            }
        }
    }
    if headers.iter().any(|h| h.eq_ignore_ascii_case("cookie")) {
        return Some("cache_key_headers: list cookies by name in cache_key_cookies".into());
    }
    if headers.iter().any(|h| h.eq_ignore_ascii_case("accept")) {
        return Some("cache_key_headers: Accept is negotiated by auto_format".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<FilterConfig, ConfigError> {
        FilterConfig::from_json(json.as_bytes())
    }

    #[test]
    fn secrets_may_come_from_the_environment() {
        let json = r#"{"render_key":{"env":"RK"},"routes":[
            {"prefix":"/t/","storage":"s","secret":{"env":"URL_SECRET"}},
            {"prefix":"/ip/","grammar":"imgproxy","storage":"s",
             "keys":[{"key":{"env":"IP_KEY"},"salt":"00"}]}]}"#;
        let env = |name: &str| match name {
            "RK" => Some("r".repeat(32)),
            "URL_SECRET" => Some("from-the-environment".to_owned()),
            "IP_KEY" => Some("abcd".to_owned()),
            _ => None,
        };
        let cfg = FilterConfig::from_json_with_env(json.as_bytes(), &env).unwrap();
        assert_eq!(
            cfg.routes[0].secret.as_ref().unwrap().expose(),
            "from-the-environment"
        );
        assert_eq!(cfg.routes[1].keys[0].key.expose(), "abcd");
        assert!(cfg.voucher(None).is_ok());
        assert!(!format!("{cfg:?}").contains("from-the-environment"));
        let err = parse(json).unwrap_err().to_string();
        assert!(err.contains("RK is not set"), "{err}");
        let empty = |name: &str| (name != "URL_SECRET").then(|| env(name)).flatten();
        let err = FilterConfig::from_json_with_env(json.as_bytes(), &empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("URL_SECRET is not set"), "{err}");
    }

    #[test]
    fn short_signatures_need_to_be_asked_for() {
        for route in [
            r#""secret":"k","signature_length":1"#,
            r#""grammar":"imgproxy","keys":[{"key":"ab","salt":"00"}],"signature_size":1"#,
        ] {
            let json = |extra: &str| {
                format!(r#"{{"routes":[{{"prefix":"/a/","storage":"s",{route}{extra}}}]}}"#)
            };
            let err = parse(&json("")).unwrap_err().to_string();
            assert!(err.contains("shorter than 64 bits"), "{err}");
            assert!(parse(&json(r#","allow_weak_signatures":true"#)).is_ok());
        }
    }

    #[test]
    fn accepts_a_complete_config() {
        let cfg = parse(
            r#"{"routes":[{"prefix":"/img/","storage":"photos","base_dir":"o","secret":"s",
                "signature_hash":"sha256","signature_length":20,
                "canonical_base_url":"https://www.example.com","auto_format":true,
                "path_prefix":"/avatars/"}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.routes[0].path_prefix, "/avatars/");
        assert_eq!(cfg.routes[0].signature_hash, HashAlg::Sha256);
        assert!(cfg.routes[0].auto_format);
        assert!(!format!("{cfg:?}").contains("\"s\""), "secret redacted");
    }

    #[test]
    fn the_render_key_comes_from_the_config_else_the_environment_and_is_long() {
        let routes = r#""routes":[{"prefix":"/img/","storage":"p","allow_unsafe":true}]"#;
        let key = "k".repeat(32);
        let bare = parse(&format!("{{{routes}}}")).unwrap();
        assert!(bare.voucher(None).is_err(), "no key anywhere");
        assert!(
            bare.voucher(Some("")).is_err(),
            "an empty variable is no key"
        );
        assert!(
            bare.voucher(Some("short")).is_err(),
            "a short variable is no key"
        );
        assert!(bare.voucher(Some(&key)).is_ok());
        let inline = parse(&format!(r#"{{{routes},"render_key":"{key}"}}"#)).unwrap();
        assert!(inline.voucher(None).is_ok());
        assert!(!format!("{inline:?}").contains(&key), "render key redacted");
        let err = parse(&format!(r#"{{{routes},"render_key":"short"}}"#)).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }

    #[test]
    fn accepts_every_grammar() {
        let cfg = parse(
            r#"{"routes":[
                {"prefix":"/ip/","grammar":"imgproxy","storage":"photos",
                 "keys":[{"key":"abcd","salt":"00"},{"key":"ef01","salt":""}],"signature_size":8,
                 "handles":{"bucket-a":"photos","b":"other"}},
                {"prefix":"/ik/","grammar":"imagekit","storage":"photos","secret":"k"},
                {"prefix":"/v1/ex/","grammar":"query","storage":"photos","allow_unsafe":true,
                 "handles":{"my-s3-bucket":"photos"}}]}"#,
        )
        .unwrap();
        let ip = &cfg.routes[0];
        assert_eq!(ip.grammar, Grammar::Imgproxy);
        assert!(ip.imgproxy_signer().is_some());
        assert!(!format!("{cfg:?}").contains("abcd"), "keys redacted");
        assert_eq!(ip.storage_for(None), Some("photos"));
        assert_eq!(ip.storage_for(Some("photos")), Some("photos"));
        assert_eq!(ip.storage_for(Some("b")), Some("other"));
        assert_eq!(ip.storage_for(Some("c")), None);
        assert_eq!(cfg.routes[2].grammar, Grammar::Query);
    }

    #[test]
    fn one_signing_key_serves_only_routes_that_read_the_same_objects() {
        let two = |a: &str, b: &str| {
            parse(&format!(
                r#"{{"routes":[{{"prefix":"/a/","storage":"s",{a}}},{{"prefix":"/b/",{b}}}]}}"#
            ))
        };
        // The same reach: a second prefix for the same images.
        assert!(two(r#""secret":"k""#, r#""storage":"s","secret":"k""#).is_ok());
        assert!(two(r#""secret":"k""#, r#""storage":"t","secret":"other""#).is_ok());
        // Handles one route has and the other lacks: named in the signed path, refused there.
        assert!(
            two(
                r#""grammar":"query","secret":"k","handles":{"h":"t"}"#,
                r#""storage":"s","grammar":"query","secret":"k""#
            )
            .is_ok()
        );
        for (a, b) in [
            (r#""secret":"k""#, r#""storage":"t","secret":"k""#),
            (
                r#""secret":"k""#,
                r#""storage":"s","secret":"k","base_dir":"private""#,
            ),
            (
                r#""secret":"k""#,
                r#""storage":"s","secret":"k","path_prefix":"x""#,
            ),
            (
                r#""grammar":"query","secret":"k","handles":{"h":"s"}"#,
                r#""storage":"s","grammar":"query","secret":"k","handles":{"h":"t"}"#,
            ),
            (
                r#""grammar":"imgproxy","keys":[{"key":"ab","salt":"00"}]"#,
                r#""storage":"t","grammar":"imgproxy","keys":[{"key":"cd","salt":"00"},{"key":"ab","salt":"00"}]"#,
            ),
            // `photos/a.jpg` is key `a.jpg` of bucket `photos` on one, `photos/a.jpg` on the
            // other.
            (
                r#""secret":"k","wildcard_bucket":true"#,
                r#""storage":"s","secret":"k""#,
            ),
        ] {
            let err = two(a, b).unwrap_err().to_string();
            assert!(err.contains("shares a signing key"), "{a} / {b}: {err}");
        }
    }

    #[test]
    fn imagor_result_keys_only_on_thumbor_routes_that_read_the_same_objects() {
        let two = |a: &str, b: &str| {
            parse(&format!(
                r#"{{"routes":[{{"prefix":"/a/","storage":"s","allow_unsafe":true,{a}}},
                   {{"prefix":"/b/","allow_unsafe":true,{b}}}]}}"#
            ))
        };
        let imagor = r#""result_keys":"imagor""#;
        let cfg = two(imagor, r#""storage":"t""#).unwrap();
        assert_eq!(cfg.routes[0].result_keys, ResultKeys::Imagor);
        assert_eq!(cfg.routes[1].result_keys, ResultKeys::Pixmesh);
        assert!(two(imagor, &format!(r#""storage":"s",{imagor}"#)).is_ok());
        for b in [
            format!(r#""storage":"t",{imagor}"#),
            format!(r#""storage":"s","base_dir":"x",{imagor}"#),
            format!(r#""storage":"s","path_prefix":"x",{imagor}"#),
        ] {
            let err = two(imagor, &b).unwrap_err().to_string();
            assert!(
                err.contains("names its renditions as imagor does"),
                "{b}: {err}"
            );
        }
        for grammar in ["imgproxy", "imagekit", "query"] {
            let err = two(
                &format!(r#""grammar":"{grammar}",{imagor}"#),
                r#""storage":"t""#,
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains("for the thumbor grammar"), "{grammar}: {err}");
        }
        assert!(two(r#""result_keys":"digest""#, r#""storage":"t""#).is_err());
        let err = two(
            r#""grammar":"imgproxy","plus_as_space":true"#,
            r#""storage":"t""#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("plus_as_space is for the thumbor grammar"),
            "{err}"
        );
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
            r#"{"routes":[{"prefix":"/img/","storage":"s","secret":"k","signature_length":10}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imgproxy","storage":"s","keys":[{"key":"ab","salt":"00"}],"signature_size":7}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s","secret":"k","grammar":"nope"}]}"#,
            r#"{"routes":[{"prefix":"/img/","storage":"s","secret":"k","canonical_base_url":"ftp://x"}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k"},{"prefix":"/a/","storage":"t","secret":"k"}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imgproxy","storage":"s"}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imgproxy","storage":"s","secret":"k"}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imgproxy","storage":"s","keys":[{"key":"xy","salt":"00"}]}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imgproxy","storage":"s","keys":[{"key":"ab","salt":"00"}],"signature_size":33}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imgproxy","storage":"s","allow_unsafe":true,"signature_size":8}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imgproxy","storage":"s","keys":[{"key":"ab"}]}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imagekit","storage":"s"}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"imagekit","storage":"s","secret":"k","signature_hash":"sha256"}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"query","storage":"s","secret":"k","keys":[{"key":"ab","salt":"00"}]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","handles":{"a":"b"}}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"query","storage":"s","secret":"k","handles":{"a/b":"b"}}]}"#,
            r#"{"routes":[{"prefix":"/a/","grammar":"query","storage":"s","secret":"k","handles":{"a":""}}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","auto_format":"yes"}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","cache_key_headers":["a b"]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","cache_key_headers":["X-A","x-a"]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","cache_key_headers":["Cookie"]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","cache_key_headers":["accept"]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","cache_key_cookies":["a=b"]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","cache_key_cookies":["a","a"]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","cache_key_cookies":["1","2","3","4","5","6","7","8","9"]}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","path_prefix":"a/../b"}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","path_prefix":"a//b"}]}"#,
            r#"{"routes":[{"prefix":"/a/","storage":"s","secret":"k","path_prefix":"./a"}]}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
