//! The whole Envoy bootstrap: `envoy/pixmesh.yaml.tmpl` rendered.

use std::net::SocketAddr;

use base64::Engine as _;

use super::{Checked, Endpoint, EnvoyConfigError, InlineSecrets, quoted};

/// The Envoy configuration template shipped in `envoy/`.
pub const TEMPLATE: &str = include_str!("../../../envoy/pixmesh.yaml.tmpl");

/// The lines around what only the transcoder mode has.
const TRANSCODER_BEGIN: &str = "# {{#transcoder}}";
const TRANSCODER_END: &str = "# {{/transcoder}}";

/// What a bootstrap is rendered from.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// The filter's JSON configuration (validated; it decides call or transcoder mode).
    pub filter_config: String,
    /// The filter's `.wasm`, as Envoy will find it.
    pub filter_wasm: String,
    /// The listener's address; port 0 picks a free one.
    pub listen: SocketAddr,
    /// The admin interface's port on 127.0.0.1; 0 picks a free one.
    pub admin_port: u16,
    /// The stats listener's port, on the listener's address: `GET /stats/prometheus` only,
    /// answered by the admin interface; 0 picks a free one (the admin port must then be known
    /// for it to answer).
    pub stats_port: u16,
    /// The path Envoy answers itself with the sidecar's health (200 while its gRPC health
    /// check passes, else 503), e.g. `/healthz`.
    pub health_path: String,
    /// Where the sidecar listens.
    pub sidecar: Endpoint,
    /// The sidecar route's timeout (transcoder mode), e.g. `30s`.
    pub route_timeout: String,
    /// Whether inline secrets may be copied into the output.
    pub inline_secrets: InlineSecrets,
}

/// Renders the bootstrap: an error when the filter configuration is refused (as the filter
/// would refuse it), holds secrets inline that `inline_secrets` refuses, or a parameter cannot
/// be written.
pub fn bootstrap(p: &Bootstrap) -> Result<String, EnvoyConfigError> {
    let checked = Checked::new(&p.filter_config, p.inline_secrets)?;
    render(p, &checked, None)
}

/// Renders the template for `p` with `checked`'s filter configuration, the sidecar's cluster
/// named `cluster` (else by the configuration).
pub(super) fn render(
    p: &Bootstrap,
    checked: &Checked,
    cluster: Option<&str>,
) -> Result<String, EnvoyConfigError> {
    let timeout = &p.route_timeout;
    let seconds = timeout.strip_suffix('s').unwrap_or_default();
    let (whole, fraction) = seconds.split_once('.').unwrap_or((seconds, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(whole) && digits(fraction)) {
        return Err(EnvoyConfigError::Param {
            what: "route timeout",
            value: timeout.clone(),
            expected: "seconds with an `s`, e.g. 30s or 2.5s",
        });
    }
    let path_ok = |p: &str| {
        p.starts_with('/')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
    };
    if !path_ok(&p.health_path) {
        return Err(EnvoyConfigError::Param {
            what: "health path",
            value: p.health_path.clone(),
            expected: "a path of letters, digits and / - _ . ~, e.g. /healthz",
        });
    }
    if p.filter_wasm.is_empty() {
        return Err(EnvoyConfigError::Param {
            what: "wasm path",
            value: String::new(),
            expected: "the filter's .wasm file",
        });
    }
    let cluster = checked.cluster(cluster)?;
    let descriptor =
        base64::engine::general_purpose::STANDARD.encode(pixmesh_proto::DESCRIPTOR_SET);
    let env_keys = serde_json::to_string(&checked.env_keys).unwrap_or_default();
    let call_mode = checked.call_cluster.is_some();
    let mut kept = String::with_capacity(TEMPLATE.len());
    let mut in_transcoder = false;
    for line in TEMPLATE.lines() {
        match line.trim() {
            TRANSCODER_BEGIN => in_transcoder = true,
            TRANSCODER_END => in_transcoder = false,
            _ if in_transcoder && call_mode => {}
            _ => {
                kept.push_str(line);
                kept.push('\n');
            }
        }
    }
    let listen_address = quoted(&p.listen.ip().to_string());
    let listen_port = p.listen.port().to_string();
    let admin_port = p.admin_port.to_string();
    let stats_port = p.stats_port.to_string();
    let health_path = quoted(&p.health_path);
    let sidecar_host = quoted(&p.sidecar.host);
    let sidecar_port = p.sidecar.port.to_string();
    let filter_config = quoted(&checked.json);
    let filter_wasm = quoted(&p.filter_wasm);
    let value = |name: &str| -> Option<&str> {
        Some(match name {
            "LISTEN_ADDRESS" => &listen_address,
            "LISTEN_PORT" => &listen_port,
            "ADMIN_PORT" => &admin_port,
            "STATS_PORT" => &stats_port,
            "HEALTH_PATH" => &health_path,
            "SIDECAR_CLUSTER" => &cluster,
            "SIDECAR_CLUSTER_TYPE" => p.sidecar.cluster_type(),
            "SIDECAR_HOST" => &sidecar_host,
            "SIDECAR_PORT" => &sidecar_port,
            "FILTER_CONFIG_JSON_STRING" => &filter_config,
            "VM_ENV_KEYS" => &env_keys,
            "FILTER_WASM" => &filter_wasm,
            "DESCRIPTOR_BIN" => &descriptor,
            "ROUTE_TIMEOUT" => timeout,
            _ => return None,
        })
    };
    // One pass: values are never scanned for placeholders themselves.
    let mut rendered = String::with_capacity(kept.len() + descriptor.len() + filter_config.len());
    let mut rest = kept.as_str();
    while let Some(open) = rest.find("{{") {
        rendered.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after.find("}}").unwrap_or(after.len());
        let name = &after[..close];
        let value = value(name).ok_or_else(|| EnvoyConfigError::Template(name.to_owned()))?;
        rendered.push_str(value);
        rest = after.get(close + 2..).unwrap_or_default();
    }
    rendered.push_str(rest);
    Ok(rendered)
}
