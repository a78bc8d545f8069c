//! pixmesh's Envoy configuration, rendered from the filter's configuration
//! (`pixmesh-sidecar envoy bootstrap` / `envoy fragment`; the e2e tests and the demo render it
//! here too, so there is one renderer).
//!
//! - [`bootstrap()`]: a whole Envoy bootstrap of pixmesh's own (`envoy/pixmesh.yaml.tmpl`): a
//!   listener with pixmesh's edge settings, the filters, the sidecar route and cluster.
//! - [`fragment()`]: what an existing Envoy adds to its own configuration: the `http_filters`
//!   entries (before its router), the `routes` (first in its virtual host) and the `clusters`.
//!
//! The filter configuration decides the mode: with `"call"` the filter calls the sidecar itself
//! (`dispatch_grpc_call`), and only the wasm filter and the sidecar's cluster (named by
//! `call.cluster`) are needed; otherwise the gRPC-JSON transcoder (its descriptor inline, as
//! `proto_descriptor_bin`) and the route of the sidecar's gRPC path come with them.
//!
//! Secrets: the filter reads the render key and every secret written `{"env": NAME}` from the
//! wasm VM's environment (`vm_config.environment_variables.host_env_keys`, listed here), so the
//! rendered configuration holds none. A secret written inline in the filter configuration would
//! be copied into the output: refused unless the caller says otherwise ([`InlineSecrets`]).

mod bootstrap;
mod fragment;

use std::fmt;

pub use bootstrap::{Bootstrap, bootstrap};
pub use fragment::{Fragment, fragment};

use pixmesh_core::config::{ConfigError, FilterConfig, RENDER_KEY_ENV};

/// The cluster the sidecar is reached through in transcoder mode, unless named otherwise (in call
/// mode the filter configuration's `call.cluster` names it).
pub const DEFAULT_CLUSTER: &str = "pixmesh_sidecar";

/// Why no configuration was rendered.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyConfigError {
    /// The filter configuration is refused (as the filter would refuse it in Envoy).
    #[error(transparent)]
    FilterConfig(#[from] ConfigError),
    /// The filter configuration holds secrets written inline, which the output would carry.
    #[error(
        "the filter configuration holds secrets inline ({}), which would be copied into the \
         Envoy configuration: write each as {{\"env\": \"NAME\"}} and give Envoy the variable \
         (the render key: {RENDER_KEY_ENV}), or allow inline secrets",
        .0.join(", ")
    )]
    InlineSecrets(Vec<String>),
    /// A parameter cannot be written into the configuration.
    #[error("invalid {what}: {value:?} ({expected})")]
    Param {
        /// Which parameter.
        what: &'static str,
        /// Its value.
        value: String,
        /// What it must look like.
        expected: &'static str,
    },
    /// The template names a placeholder the renderer does not know (a bug, caught by tests).
    #[error("envoy/pixmesh.yaml.tmpl: unknown placeholder {0:?}")]
    Template(String),
    /// The fragment's cluster name contradicts the filter configuration's `call.cluster`.
    #[error(
        "the filter configuration calls the sidecar through cluster {call:?} (call.cluster), \
         not {given:?}"
    )]
    ClusterMismatch {
        /// `call.cluster`.
        call: String,
        /// The cluster asked for.
        given: String,
    },
}

/// Whether secrets written inline in the filter configuration may be copied into the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InlineSecrets {
    /// Refuse them ([`EnvoyConfigError::InlineSecrets`]): the output holds no secret.
    Refuse,
    /// Copy them: the output is then a secret too.
    Allow,
}

/// Where Envoy reaches the sidecar: an IP address (a `STATIC` cluster) or a host name (a
/// `STRICT_DNS` cluster, e.g. a Kubernetes Service), and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// IP address or DNS name (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// `127.0.0.1:port`.
    pub fn loopback(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
        }
    }

    /// Whether the host is an IP address (else a DNS name).
    fn is_ip(&self) -> bool {
        self.host.parse::<std::net::IpAddr>().is_ok()
    }

    /// The cluster type Envoy resolves this endpoint with.
    fn cluster_type(&self) -> &'static str {
        if self.is_ip() { "STATIC" } else { "STRICT_DNS" }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EnvoyConfigError;

    /// `HOST:PORT`, `[IPV6]:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || EnvoyConfigError::Param {
            what: "sidecar address",
            value: s.to_owned(),
            expected: "HOST:PORT, an IP address or a DNS name and a port",
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(v6) => v6.strip_suffix(']').ok_or_else(bad)?,
            None => host,
        };
        let endpoint = Endpoint {
            host: host.to_owned(),
            port: port.parse().map_err(|_| bad())?,
        };
        let dns_name = |h: &str| {
            !h.is_empty()
                && h.len() <= 253
                && h.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        };
        if endpoint.port == 0 || !(endpoint.is_ip() || dns_name(&endpoint.host)) {
            return Err(bad());
        }
        Ok(endpoint)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The filter configuration, checked as the filter will check it (secrets written
/// `{"env": NAME}` stand in for values Envoy's environment gives at run time), and what the
/// rendering needs from it.
struct Checked {
    /// The JSON text, compact.
    json: String,
    /// `call.cluster` in call mode.
    call_cluster: Option<String>,
    /// The environment variables the filter reads: the render key's and every `{"env": …}`.
    env_keys: Vec<String>,
    /// Where inline secrets are, as JSON paths (never their values).
    inline_secrets: Vec<String>,
}

impl Checked {
    fn new(filter_config: &str, inline: InlineSecrets) -> Result<Checked, EnvoyConfigError> {
        // A variable's stand-in: distinct per name (check_shared_keys compares keys), hex (for
        // imgproxy's key/salt pairs) and at least 32 bytes (a render key).
        let stand_in = |name: &str| {
            let mut hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
            while hex.len() < 64 {
                hex.push_str("00");
            }
            Some(hex)
        };
        let cfg = FilterConfig::from_json_with_env(filter_config.as_bytes(), &stand_in)?;
        let json: serde_json::Value =
            serde_json::from_str(filter_config).map_err(|e| ConfigError::Json(e.to_string()))?;
        let mut env_keys = vec![RENDER_KEY_ENV.to_owned()];
        env_names(&json, &mut env_keys);
        env_keys.sort();
        env_keys.dedup();
        let checked = Checked {
            json: json.to_string(),
            call_cluster: cfg.call.map(|c| c.cluster),
            env_keys,
            inline_secrets: inline_secrets(&json),
        };
        if inline == InlineSecrets::Refuse && !checked.inline_secrets.is_empty() {
            return Err(EnvoyConfigError::InlineSecrets(checked.inline_secrets));
        }
        Ok(checked)
    }

    /// The sidecar's cluster: `call.cluster` in call mode (where `asked` must agree), else
    /// `asked` or [`DEFAULT_CLUSTER`].
    fn cluster(&self, asked: Option<&str>) -> Result<String, EnvoyConfigError> {
        let name = match (&self.call_cluster, asked) {
            (Some(call), Some(given)) if call != given => {
                return Err(EnvoyConfigError::ClusterMismatch {
                    call: call.clone(),
                    given: given.to_owned(),
                });
            }
            (Some(call), _) => call.clone(),
            (None, given) => given.unwrap_or(DEFAULT_CLUSTER).to_owned(),
        };
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-|".contains(&b));
        if !ok {
            return Err(EnvoyConfigError::Param {
                what: "cluster name",
                value: name,
                expected: "letters, digits, `_`, `.`, `-` and `|`",
            });
        }
        Ok(name)
    }
}

/// The variables of every `{"env": NAME}` in `v`.
fn env_names(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            if let (1, Some(serde_json::Value::String(name))) = (map.len(), map.get("env")) {
                out.push(name.clone());
            }
            map.values().for_each(|v| env_names(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| env_names(v, out)),
        _ => {}
    }
}

/// Where the configuration writes a secret's value inline (`render_key`, a route's `secret`,
/// an imgproxy pair's `key` or `salt` as a string), as JSON paths.
fn inline_secrets(json: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    if json.get("render_key").is_some_and(|v| v.is_string()) {
        found.push("render_key".to_owned());
    }
    let routes = json.get("routes").and_then(|r| r.as_array());
    for (i, route) in routes.into_iter().flatten().enumerate() {
        if route.get("secret").is_some_and(|v| v.is_string()) {
            found.push(format!("routes[{i}].secret"));
        }
        let keys = route.get("keys").and_then(|k| k.as_array());
        for (j, pair) in keys.into_iter().flatten().enumerate() {
            for field in ["key", "salt"] {
                if pair.get(field).is_some_and(|v| v.is_string()) {
                    found.push(format!("routes[{i}].keys[{j}].{field}"));
                }
            }
        }
    }
    found
}

/// `s` as a JSON string literal, which YAML reads as the same string.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

#[cfg(test)]
mod tests;
