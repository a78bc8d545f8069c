//! The fragment for an existing Envoy: taken from the rendered bootstrap (one template), so the
//! fragment and pixmesh's own Envoy configure the filters, route and cluster alike.

use std::net::{Ipv4Addr, SocketAddr};

use yaml_serde::{Mapping, Value};

use super::bootstrap::{Bootstrap, render};
use super::{Checked, Endpoint, EnvoyConfigError, InlineSecrets};

/// What a fragment is rendered from.
#[derive(Debug, Clone)]
pub struct Fragment {
    /// The filter's JSON configuration (validated; it decides call or transcoder mode).
    pub filter_config: String,
    /// The filter's `.wasm`, as Envoy will find it.
    pub filter_wasm: String,
    /// Where the sidecar listens.
    pub sidecar: Endpoint,
    /// The sidecar's cluster: [`super::DEFAULT_CLUSTER`] unless named; in call mode the filter
    /// configuration's `call.cluster`, which this must then equal.
    pub cluster: Option<String>,
    /// The sidecar route's timeout (transcoder mode), e.g. `30s`.
    pub route_timeout: String,
    /// Whether inline secrets may be copied into the output.
    pub inline_secrets: InlineSecrets,
}

/// What the fragment's top says about where each part goes.
const HEADER: &str = "\
# pixmesh for an existing Envoy (`pixmesh-sidecar envoy fragment`). In the HttpConnectionManager
# that serves the image URLs:
# - http_filters: insert these entries, in this order, before envoy.filters.http.router;
# - routes: put these entries first in every virtual host serving image URLs (none in call mode);
# and in static_resources.clusters (or your CDS):
# - clusters: append these.
# Keep normalize_path and merge_slashes off on that listener, or see README \"Path
# normalisation\" for which signed URLs then fail. The filter reads its secrets from Envoy's
# environment: every variable in vm_config.environment_variables.host_env_keys must be set.
";

/// Renders the fragment: one YAML document with `http_filters`, `routes` and `clusters`.
pub fn fragment(p: &Fragment) -> Result<String, EnvoyConfigError> {
    let checked = Checked::new(&p.filter_config, p.inline_secrets)?;
    let cluster = checked.cluster(p.cluster.as_deref())?;
    let whole = render(
        &Bootstrap {
            filter_config: p.filter_config.clone(),
            filter_wasm: p.filter_wasm.clone(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            admin_port: 0,
            stats_port: 0,
            health_path: "/healthz".to_owned(),
            sidecar: p.sidecar.clone(),
            route_timeout: p.route_timeout.clone(),
            inline_secrets: p.inline_secrets,
        },
        &checked,
        Some(&cluster),
    )?;
    let parts = parts(&whole, &cluster)
        .ok_or_else(|| EnvoyConfigError::Template("the fragment's parts".to_owned()))?;
    let yaml = yaml_serde::to_string(&parts)
        .map_err(|e| EnvoyConfigError::Template(format!("the fragment as YAML: {e}")))?;
    Ok(format!("{HEADER}{yaml}"))
}

/// `http_filters` (all but the router), `routes` (those to `cluster`) and `clusters` of the
/// rendered bootstrap; `None` if it does not have the template's shape.
fn parts(bootstrap: &str, cluster: &str) -> Option<Value> {
    let doc: Value = yaml_serde::from_str(bootstrap).ok()?;
    let resources = doc.get("static_resources")?;
    let hcm = resources
        .get("listeners")?
        .get(0)?
        .get("filter_chains")?
        .get(0)?
        .get("filters")?
        .get(0)?
        .get("typed_config")?;
    let filters: Vec<Value> = hcm
        .get("http_filters")?
        .as_sequence()?
        .iter()
        // The router is the host's; so is its health endpoint (`/healthz` is pixmesh's own
        // Envoy's).
        .filter(|f| {
            !matches!(
                f.get("name").and_then(Value::as_str),
                Some("envoy.filters.http.router" | "envoy.filters.http.health_check")
            )
        })
        .cloned()
        .collect();
    let routes: Vec<Value> = hcm
        .get("route_config")?
        .get("virtual_hosts")?
        .get(0)?
        .get("routes")?
        .as_sequence()?
        .iter()
        .filter(|r| {
            r.get("route")
                .and_then(|r| r.get("cluster"))
                .and_then(Value::as_str)
                == Some(cluster)
        })
        .cloned()
        .collect();
    // The sidecar's cluster, not the admin interface's (the stats listener is not part of it).
    let clusters: Vec<Value> = resources
        .get("clusters")?
        .as_sequence()?
        .iter()
        .filter(|c| c.get("name").and_then(Value::as_str) == Some(cluster))
        .cloned()
        .collect();
    let mut out = Mapping::new();
    out.insert("http_filters".into(), Value::Sequence(filters));
    out.insert("routes".into(), Value::Sequence(routes));
    out.insert("clusters".into(), Value::Sequence(clusters));
    Some(Value::Mapping(out))
}
