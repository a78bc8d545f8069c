//! imagor's environment variables → pixmesh's configuration, so an imagor deployment can switch
//! by changing the image: `pixmesh-sidecar from-imagor-env --sidecar-out pixmesh.toml
//! --filter-out filter.json` writes both files from the environment it runs in.
//!
//! | imagor | pixmesh |
//! |---|---|
//! | `S3_LOADER_BUCKET` (`bucket/dir` too, `*`), `S3_LOADER_BUCKET_ROUTER_CONFIG` | `[storages.loader]` `bucket` (`*` and `routing_file` for the router) |
//! | `AWS_REGION`, `AWS_LOADER_REGION` / `_ACCESS_KEY_ID` / `_SECRET_ACCESS_KEY` / `_SESSION_TOKEN`, `S3_ENDPOINT`, `S3_LOADER_ENDPOINT`, `S3_FORCE_PATH_STYLE` | the loader's `region`, keys, `endpoint`, `force_path_style` |
//! | (imagor reads a `+` in the image as a space) | the route's `plus_as_space` |
//! | `S3_LOADER_BASE_DIR`, `S3_LOADER_PATH_PREFIX` | the route's `base_dir`, `path_prefix` (with `*`, inside the bucket the path names: `wildcard_bucket`) |
//! | `S3_SAFE_CHARS` | `escape_keys = true` (imagor always escapes) and `safe_chars`, loader and results |
//! | `S3_RESULT_STORAGE_BUCKET` and its `AWS_RESULT_STORAGE_*`, `S3_RESULT_STORAGE_ENDPOINT` | `[storages.results]`, `[result_storage]` |
//! | `S3_RESULT_STORAGE_BASE_DIR`, `S3_RESULT_STORAGE_ACL`, `S3_RESULT_STORAGE_TAGGING`, `S3_STORAGE_CLASS` | `base_dir`, `acl`, `tagging`, `storage_class` |
//! | `S3_RESULT_STORAGE_EXPIRATION` (a Go duration: `168h`, `1h30m`) | `expiration_secs` |
//! | `IMAGOR_RESULT_STORAGE_PATH_STYLE` (`original`, `digest`) | `path_style`; with a result storage the route's `result_keys = "imagor"`, so renditions keep imagor's names |
//! | `S3_RESULT_STORAGE_PATH_PREFIX` | `[result_storage] path_prefix` |
//! | `S3_STORAGE_BUCKET` and its `AWS_STORAGE_*`, `S3_STORAGE_ENDPOINT`, `_BASE_DIR`, `_PATH_PREFIX`, `_ACL`, `_TAGGING`, `_EXPIRATION` (and `S3_STORAGE_CLASS`) | `[storages.sources]`, `[source_storage]` (copies of sources, read first) |
//! | `IMAGOR_SECRET`, `IMAGOR_UNSAFE`, `IMAGOR_SIGNER_TYPE`, `IMAGOR_SIGNER_TRUNCATE` | the route's `secret`, `allow_unsafe`, `signature_hash`, `signature_length` |
//! | `IMAGOR_AUTO_WEBP`, `IMAGOR_AUTO_AVIF` | the route's `auto_format` (and `auto_avif`) |
//! | `IMAGOR_CACHE_HEADER_TTL`, `IMAGOR_CACHE_HEADER_SWR`, `IMAGOR_CACHE_HEADER_NO_CACHE` | `cache_control`, written as imagor writes it (its defaults, 168h and 24h, when unset) |
//! | `IMAGOR_PROCESS_CONCURRENCY`, `IMAGOR_PROCESS_QUEUE_SIZE`, `IMAGOR_LOAD_TIMEOUT` | `[limits]` `workers`, `max_queue`, `storage_timeout_ms` |
//! | `VIPS_MAX_RESOLUTION`, `VIPS_MAX_ANIMATION_FRAMES` | `[limits]` `max_source_pixels`, `max_animation_frames` |
//!
//! The global `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` are not copied:
//! pixmesh's default credential chain reads them from the environment it serves in, as imagor's
//! does. Every other `S3_*`, `IMAGOR_*`, `VIPS_*`, `AWS_LOADER_*`, `AWS_STORAGE_*` or
//! `AWS_RESULT_STORAGE_*` variable is reported, all of them at once ([`Mapped::unmapped`]: a
//! typo, or a setting pixmesh has no equivalent of); contradictions (a base dir both in
//! `S3_LOADER_BUCKET` and `S3_LOADER_BASE_DIR`) and what pixmesh does not do (path styles
//! other than `original` and `digest`, a `*` bucket for a writing role) are errors: nothing
//! is silently dropped.

use std::collections::BTreeMap;

use toml::{Table, Value};

/// Why the environment cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A variable pixmesh knows but cannot honour.
    #[error("{name}: {reason}")]
    Unsupported {
        /// The variable.
        name: String,
        /// Why.
        reason: String,
    },
    /// A value is malformed, or contradicts another.
    #[error("{name}: {reason}")]
    Invalid {
        /// The variable.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// No loader is configured.
    #[error("set S3_LOADER_BUCKET or S3_LOADER_BUCKET_ROUTER_CONFIG")]
    NoLoader,
}

/// The two configuration files.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapped {
    /// The sidecar's TOML.
    pub sidecar_toml: String,
    /// The filter's JSON.
    pub filter_json: String,
    /// The peer's variables in the environment that neither file says anything about (a typo,
    /// or a setting pixmesh has no equivalent of), sorted: for the operator to read.
    pub unmapped: Vec<String>,
}

/// Variables this mapping reads, besides the global AWS credentials it leaves to the chain.
const KNOWN: &[&str] = &[
    "AWS_REGION",
    "S3_ENDPOINT",
    "S3_FORCE_PATH_STYLE",
    "S3_SAFE_CHARS",
    "S3_STORAGE_CLASS",
    "S3_LOADER_BUCKET",
    "S3_LOADER_BUCKET_ROUTER_CONFIG",
    "S3_LOADER_ENDPOINT",
    "S3_LOADER_BASE_DIR",
    "S3_LOADER_PATH_PREFIX",
    "AWS_LOADER_REGION",
    "AWS_LOADER_ACCESS_KEY_ID",
    "AWS_LOADER_SECRET_ACCESS_KEY",
    "AWS_LOADER_SESSION_TOKEN",
    "S3_RESULT_STORAGE_BUCKET",
    "S3_RESULT_STORAGE_ENDPOINT",
    "S3_RESULT_STORAGE_BASE_DIR",
    "S3_RESULT_STORAGE_PATH_PREFIX",
    "S3_RESULT_STORAGE_ACL",
    "S3_RESULT_STORAGE_TAGGING",
    "S3_RESULT_STORAGE_EXPIRATION",
    "AWS_RESULT_STORAGE_REGION",
    "AWS_RESULT_STORAGE_ACCESS_KEY_ID",
    "AWS_RESULT_STORAGE_SECRET_ACCESS_KEY",
    "AWS_RESULT_STORAGE_SESSION_TOKEN",
    "IMAGOR_SECRET",
    "IMAGOR_UNSAFE",
    "IMAGOR_SIGNER_TYPE",
    "IMAGOR_SIGNER_TRUNCATE",
    "IMAGOR_RESULT_STORAGE_PATH_STYLE",
    "S3_STORAGE_BUCKET",
    "S3_STORAGE_ENDPOINT",
    "S3_STORAGE_BASE_DIR",
    "S3_STORAGE_PATH_PREFIX",
    "S3_STORAGE_ACL",
    "S3_STORAGE_TAGGING",
    "S3_STORAGE_EXPIRATION",
    "AWS_STORAGE_REGION",
    "AWS_STORAGE_ACCESS_KEY_ID",
    "AWS_STORAGE_SECRET_ACCESS_KEY",
    "AWS_STORAGE_SESSION_TOKEN",
    "IMAGOR_STORAGE_PATH_STYLE",
    "IMAGOR_AUTO_WEBP",
    "IMAGOR_AUTO_AVIF",
    "IMAGOR_CACHE_HEADER_TTL",
    "IMAGOR_CACHE_HEADER_SWR",
    "IMAGOR_CACHE_HEADER_NO_CACHE",
    "IMAGOR_PROCESS_CONCURRENCY",
    "IMAGOR_PROCESS_QUEUE_SIZE",
    "IMAGOR_LOAD_TIMEOUT",
    "VIPS_MAX_RESOLUTION",
    "VIPS_MAX_ANIMATION_FRAMES",
];

/// Prefixes whose variables must all be known.
const OWNED_PREFIXES: &[&str] = &[
    "S3_",
    "IMAGOR_",
    "VIPS_",
    "AWS_LOADER_",
    "AWS_STORAGE_",
    "AWS_RESULT_STORAGE_",
];

/// Maps imagor's variables in `env` onto a sidecar TOML and a filter JSON whose one route, at
/// `prefix`, speaks imagor's URLs.
pub fn map(env: &BTreeMap<String, String>, prefix: &str) -> Result<Mapped, EnvError> {
    let get = |name: &str| env.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let unmapped = unmapped(env, OWNED_PREFIXES, KNOWN);
    let invalid = |name: &str, reason: &str| EnvError::Invalid {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };

    let force_path_style = get("S3_FORCE_PATH_STYLE")
        .map(|v| parse_bool(v).ok_or_else(|| invalid("S3_FORCE_PATH_STYLE", "not a boolean")))
        .transpose()?;
    let safe_chars = get("S3_SAFE_CHARS");
    if let Some(s) = safe_chars {
        pixmesh_core::keys::SafeChars::from_setting(s)
            .map_err(|e| invalid("S3_SAFE_CHARS", &e.to_string()))?;
    }

    // The loader.
    let router = get("S3_LOADER_BUCKET_ROUTER_CONFIG");
    let (bucket, bucket_dir) = match (get("S3_LOADER_BUCKET"), router) {
        (None, None) => return Err(EnvError::NoLoader),
        (Some(b), Some(_)) if b != "*" => {
            return Err(invalid(
                "S3_LOADER_BUCKET",
                "with S3_LOADER_BUCKET_ROUTER_CONFIG the routing file names the buckets: unset it or set *",
            ));
        }
        (_, Some(_)) => ("*".to_owned(), None),
        (Some("*"), None) => ("*".to_owned(), None),
        (Some(b), None) => match b.split_once('/') {
            Some((bucket, dir)) => (bucket.to_owned(), Some(dir.trim_matches('/').to_owned())),
            None => (b.to_owned(), None),
        },
    };
    let base_dir = match (
        bucket_dir.filter(|d| !d.is_empty()),
        get("S3_LOADER_BASE_DIR"),
    ) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "S3_LOADER_BASE_DIR",
                "S3_LOADER_BUCKET already names a directory (bucket/dir)",
            ));
        }
        (Some(d), None) => d,
        (None, d) => d.unwrap_or_default().trim_matches('/').to_owned(),
    };
    let mut loader = s3_table(
        &bucket,
        get("S3_LOADER_ENDPOINT").or(get("S3_ENDPOINT")),
        get("AWS_LOADER_REGION").or(get("AWS_REGION")),
        force_path_style,
        credentials(&get, "AWS_LOADER")?,
    );
    loader.insert("escape_keys".into(), Value::Boolean(true));
    if let Some(s) = safe_chars {
        loader.insert("safe_chars".into(), s.into());
    }
    if let Some(file) = router {
        loader.insert("routing_file".into(), file.into());
    } else if bucket == "*" {
        // imagor reads any bucket a key names; pixmesh only those it is told to, and `*` says
        // so explicitly, for the operator to narrow.
        loader.insert(
            "allowed_buckets".into(),
            Value::Array(vec![Value::String("*".into())]),
        );
    }
    let mut storages = Table::new();
    storages.insert("loader".into(), Value::Table(loader));

    // The writing roles: result storage and storage (copies of sources).
    let mut sidecar = Table::new();
    for role in [Role::Results, Role::Sources] {
        if let Some((storage, table)) = writing_role(&get, role, force_path_style)? {
            storages.insert(role.storage_name().into(), Value::Table(storage));
            sidecar.insert(role.section().into(), Value::Table(table));
        }
    }
    if get("S3_STORAGE_CLASS").is_some()
        && get("S3_RESULT_STORAGE_BUCKET").is_none()
        && get("S3_STORAGE_BUCKET").is_none()
    {
        return Err(invalid(
            "S3_STORAGE_CLASS",
            "set without S3_RESULT_STORAGE_BUCKET or S3_STORAGE_BUCKET",
        ));
    }
    sidecar.insert("storages".into(), Value::Table(storages));
    sidecar.insert("cache_control".into(), cache_control(&get)?.into());
    let limits = limits(&get)?;
    if !limits.is_empty() {
        sidecar.insert("limits".into(), Value::Table(limits));
    }
    let sidecar_toml =
        toml::to_string(&sidecar).map_err(|e| invalid("(sidecar config)", &e.to_string()))?;

    // The filter's route, reading image paths as imagor does (a `+` is a space).
    let mut route = serde_json::json!({
        "prefix": prefix,
        "storage": "loader",
        "plus_as_space": true,
    });
    if !base_dir.is_empty() {
        route["base_dir"] = base_dir.into();
    }
    if let Some(p) = get("S3_LOADER_PATH_PREFIX") {
        route["path_prefix"] = p.trim_matches('/').into();
    }
    if bucket == "*" && router.is_none() {
        // The bucket is the first segment; the base dir and path prefix apply inside it.
        route["wildcard_bucket"] = true.into();
    }
    if let Some(secret) = get("IMAGOR_SECRET") {
        route["secret"] = secret.into();
    }
    if let Some(v) = get("IMAGOR_UNSAFE") {
        let unsafe_ok = parse_bool(v).ok_or_else(|| invalid("IMAGOR_UNSAFE", "not a boolean"))?;
        route["allow_unsafe"] = unsafe_ok.into();
    }
    if let Some(v) = get("IMAGOR_SIGNER_TYPE") {
        if !matches!(v, "sha1" | "sha256" | "sha512") {
            return Err(invalid("IMAGOR_SIGNER_TYPE", "not sha1, sha256 or sha512"));
        }
        route["signature_hash"] = v.into();
    }
    if let Some(v) = get("IMAGOR_SIGNER_TRUNCATE") {
        let n: usize = v
            .parse()
            .map_err(|_| invalid("IMAGOR_SIGNER_TRUNCATE", "not a number"))?;
        if n > 0 {
            route["signature_length"] = n.into();
        }
    }
    let auto_webp = bool_var(&get, "IMAGOR_AUTO_WEBP")?.unwrap_or(false);
    let auto_avif = bool_var(&get, "IMAGOR_AUTO_AVIF")?.unwrap_or(false);
    if auto_webp || auto_avif {
        route["auto_format"] = true.into();
    }
    if auto_avif {
        route["auto_avif"] = true.into();
    }
    if get("S3_RESULT_STORAGE_BUCKET").is_some() {
        // The renditions imagor stored stay found: named as imagor names them.
        route["result_keys"] = "imagor".into();
    }
    let filter = serde_json::json!({ "routes": [route] });
    pixmesh_core::config::FilterConfig::from_json(filter.to_string().as_bytes()).map_err(|e| {
        invalid(
            "IMAGOR_SECRET/IMAGOR_UNSAFE",
            &format!("the route is not valid: {e}"),
        )
    })?;
    Ok(Mapped {
        sidecar_toml,
        filter_json: serde_json::to_string_pretty(&filter).expect("JSON serializes"),
        unmapped,
    })
}

/// The variables of `env` under one of `prefixes` that are not in `known`, sorted.
pub(super) fn unmapped(
    env: &BTreeMap<String, String>,
    prefixes: &[&str],
    known: &[&str],
) -> Vec<String> {
    env.keys()
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
        .filter(|name| !known.contains(&name.as_str()))
        .cloned()
        .collect()
}

/// A Go boolean variable.
fn bool_var<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    name: &str,
) -> Result<Option<bool>, EnvError> {
    get(name)
        .map(|v| {
            parse_bool(v).ok_or_else(|| EnvError::Invalid {
                name: name.to_owned(),
                reason: "not a boolean".into(),
            })
        })
        .transpose()
}

/// A whole-number variable of at most `max`.
pub(super) fn number_var<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    name: &str,
    max: i64,
) -> Result<Option<i64>, EnvError> {
    get(name)
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| EnvError::Invalid {
                    name: name.to_owned(),
                    reason: format!("not a whole number up to {max}"),
                })
        })
        .transpose()
}

/// imagor's `Cache-Control` for renditions (`getCacheControl` in imagor.go, for a request
/// that is not `private`): `IMAGOR_CACHE_HEADER_TTL` (default 168h) and `_SWR` (default 24h,
/// written when under the TTL); a TTL of 0 or `IMAGOR_CACHE_HEADER_NO_CACHE` is no caching.
fn cache_control<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<String, EnvError> {
    let duration = |name: &str, default: i64| -> Result<i64, EnvError> {
        match get(name) {
            None => Ok(default),
            Some("0" | "0s") => Ok(0),
            Some(v) => go_duration_secs(v).ok_or_else(|| EnvError::Invalid {
                name: name.to_owned(),
                reason: "not a duration (e.g. 168h, 0 for none)".into(),
            }),
        }
    };
    let ttl = duration("IMAGOR_CACHE_HEADER_TTL", 168 * 3600)?;
    let swr = duration("IMAGOR_CACHE_HEADER_SWR", 24 * 3600)?;
    if ttl == 0 || bool_var(get, "IMAGOR_CACHE_HEADER_NO_CACHE")? == Some(true) {
        return Ok("private, no-cache, no-store, must-revalidate".into());
    }
    let mut value = format!("public, s-maxage={ttl}, max-age={ttl}, no-transform");
    if swr > 0 && swr < ttl {
        value.push_str(&format!(", stale-while-revalidate={swr}"));
    }
    Ok(value)
}

/// `[limits]` from imagor's process and libvips settings (a value of 0 or below is imagor's
/// "no limit", which leaves pixmesh's default).
fn limits<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Table, EnvError> {
    let mut t = Table::new();
    for (name, key) in [
        ("IMAGOR_PROCESS_CONCURRENCY", "workers"),
        ("IMAGOR_PROCESS_QUEUE_SIZE", "max_queue"),
        ("VIPS_MAX_RESOLUTION", "max_source_pixels"),
        ("VIPS_MAX_ANIMATION_FRAMES", "max_animation_frames"),
    ] {
        if let Some(n) = number_var(get, name, i64::from(u32::MAX))?.filter(|n| *n > 0) {
            t.insert(key.into(), Value::Integer(n));
        }
    }
    if let Some(v) = get("IMAGOR_LOAD_TIMEOUT") {
        let secs = go_duration_secs(v).ok_or_else(|| EnvError::Invalid {
            name: "IMAGOR_LOAD_TIMEOUT".into(),
            reason: "not a duration of at least 1s (e.g. 20s)".into(),
        })?;
        t.insert(
            "storage_timeout_ms".into(),
            Value::Integer(secs.saturating_mul(1000)),
        );
    }
    Ok(t)
}

/// imagor's roles that write to S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// `S3_RESULT_STORAGE_*`: renditions.
    Results,
    /// `S3_STORAGE_*`: copies of sources.
    Sources,
}

impl Role {
    /// The infix of its variables: `S3_{infix}_BUCKET`, `AWS_{infix}_REGION`.
    fn infix(self) -> &'static str {
        match self {
            Role::Results => "RESULT_STORAGE",
            Role::Sources => "STORAGE",
        }
    }

    /// The name of its `[storages.NAME]`.
    fn storage_name(self) -> &'static str {
        match self {
            Role::Results => "results",
            Role::Sources => "sources",
        }
    }

    /// Its section in the sidecar config.
    fn section(self) -> &'static str {
        match self {
            Role::Results => "result_storage",
            Role::Sources => "source_storage",
        }
    }
}

/// The storage and the role section of a writing `role`, `None` when its bucket is unset (and
/// then none of its other variables may be set).
fn writing_role<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    role: Role,
    force_path_style: Option<bool>,
) -> Result<Option<(Table, Table)>, EnvError> {
    let r = role.infix();
    let var = |suffix: &str| format!("S3_{r}_{suffix}");
    let invalid = |name: String, reason: &str| EnvError::Invalid {
        name,
        reason: reason.to_owned(),
    };
    let path_style_var = format!("IMAGOR_{r}_PATH_STYLE");
    let Some(bucket) = get(&var("BUCKET")) else {
        let own = [
            "ENDPOINT",
            "BASE_DIR",
            "PATH_PREFIX",
            "ACL",
            "TAGGING",
            "EXPIRATION",
        ]
        .map(&var)
        .into_iter()
        .chain(
            [
                "REGION",
                "ACCESS_KEY_ID",
                "SECRET_ACCESS_KEY",
                "SESSION_TOKEN",
            ]
            .map(|s| format!("AWS_{r}_{s}")),
        )
        .chain([path_style_var]);
        for name in own {
            if get(&name).is_some() {
                return Err(invalid(name, &format!("set without {}", var("BUCKET"))));
            }
        }
        return Ok(None);
    };
    if bucket == "*" {
        return Err(EnvError::Unsupported {
            name: var("BUCKET"),
            reason: "a writing role needs a fixed bucket".into(),
        });
    }
    let (bucket, dir) = match bucket.split_once('/') {
        Some((b, d)) => (b, Some(d.trim_matches('/'))),
        None => (bucket, None),
    };
    let base_dir = match (dir.filter(|d| !d.is_empty()), get(&var("BASE_DIR"))) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                var("BASE_DIR"),
                &format!("{} already names a directory (bucket/dir)", var("BUCKET")),
            ));
        }
        (Some(d), None) => d.to_owned(),
        (None, d) => d.unwrap_or_default().trim_matches('/').to_owned(),
    };
    let mut storage = s3_table(
        bucket,
        get(&var("ENDPOINT")).or(get("S3_ENDPOINT")),
        get(&format!("AWS_{r}_REGION")).or(get("AWS_REGION")),
        force_path_style,
        credentials(get, &format!("AWS_{r}"))?,
    );
    for (name, key) in [
        (var("ACL"), "acl"),
        (var("TAGGING"), "tagging"),
        ("S3_STORAGE_CLASS".to_owned(), "storage_class"),
    ] {
        if let Some(v) = get(&name) {
            storage.insert(key.into(), v.into());
        }
    }
    if role == Role::Results
        && let Some(v) = get("S3_SAFE_CHARS")
    {
        storage.insert("safe_chars".into(), v.into());
    }
    let mut table = Table::new();
    table.insert("storage".into(), role.storage_name().into());
    table.insert("base_dir".into(), base_dir.into());
    if let Some(p) = get(&var("PATH_PREFIX")) {
        table.insert("path_prefix".into(), p.trim_matches('/').into());
    }
    if let Some(exp) = get(&var("EXPIRATION")) {
        let secs = go_duration_secs(exp).ok_or_else(|| {
            invalid(
                var("EXPIRATION"),
                "not a duration of at least 1s (e.g. 168h)",
            )
        })?;
        table.insert("expiration_secs".into(), Value::Integer(secs));
    }
    match (role, get(&path_style_var)) {
        (_, None | Some("original")) => {}
        (Role::Results, Some("digest")) => {
            table.insert("path_style".into(), "digest".into());
        }
        (_, Some(_)) => {
            return Err(EnvError::Unsupported {
                name: path_style_var,
                reason: match role {
                    Role::Results => "only original and digest are mapped".into(),
                    Role::Sources => "copies of sources are kept under their own path".into(),
                },
            });
        }
    }
    Ok(Some((storage, table)))
}

/// `[storages.NAME]` of an S3 bucket.
fn s3_table(
    bucket: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    force_path_style: Option<bool>,
    credentials: Option<(String, String, Option<String>)>,
) -> Table {
    let mut t = Table::new();
    t.insert("type".into(), "s3".into());
    t.insert("bucket".into(), bucket.into());
    if let Some(e) = endpoint {
        t.insert("endpoint".into(), e.into());
    }
    if let Some(r) = region {
        t.insert("region".into(), r.into());
    }
    if let Some(f) = force_path_style {
        t.insert("force_path_style".into(), Value::Boolean(f));
    }
    if let Some((id, secret, token)) = credentials {
        t.insert("access_key_id".into(), id.into());
        t.insert("secret_access_key".into(), secret.into());
        if let Some(token) = token {
            t.insert("session_token".into(), token.into());
        }
    }
    t
}

/// A role's own keys (`{ROLE}_ACCESS_KEY_ID`, `_SECRET_ACCESS_KEY`, `_SESSION_TOKEN`): both or
/// neither of the first two.
fn credentials<'a>(
    get: &impl Fn(&str) -> Option<&'a str>,
    role: &str,
) -> Result<Option<(String, String, Option<String>)>, EnvError> {
    let id = get(&format!("{role}_ACCESS_KEY_ID"));
    let secret = get(&format!("{role}_SECRET_ACCESS_KEY"));
    let token = get(&format!("{role}_SESSION_TOKEN"));
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some((
            id.to_owned(),
            secret.to_owned(),
            token.map(str::to_owned),
        ))),
        (None, None) if token.is_none() => Ok(None),
        _ => Err(EnvError::Invalid {
            name: format!("{role}_ACCESS_KEY_ID"),
            reason: format!(
                "set both {role}_ACCESS_KEY_ID and {role}_SECRET_ACCESS_KEY, or neither"
            ),
        }),
    }
}

/// Go's `strconv.ParseBool`.
pub(super) fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A Go duration (`24h`, `1h30m`, `1.5h`, `90s`, `500ms`) in whole seconds, `None` when it is
/// malformed, negative or under one second.
pub fn go_duration_secs(s: &str) -> Option<i64> {
    let mut rest = s;
    let mut nanos: f64 = 0.0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_end);
        if num.is_empty() || num == "." {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += value * scale;
        rest = next;
    }
    let secs = (nanos / 1e9).floor();
    (1.0..i64::MAX as f64)
        .contains(&secs)
        .then_some(secs as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Limits, PathStyle, StorageConfig};
    use pixmesh_core::config::FilterConfig;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The seed's Docker Compose example (with a result-storage expiration, a storage class and
    /// digest keys besides).
    #[test]
    fn the_seed_compose_example() {
        let m = map(
            &env(&[
                ("PORT", "8000"),
                ("IMAGOR_SECRET", "mysecret"),
                ("AWS_ACCESS_KEY_ID", "AKIDGLOBAL"),
                ("AWS_SECRET_ACCESS_KEY", "global-secret"),
                ("AWS_REGION", "eu-west-1"),
                ("S3_SAFE_CHARS", "[]"),
                ("S3_LOADER_BUCKET", "mybucket"),
                ("S3_LOADER_BASE_DIR", "images"),
                ("S3_STORAGE_BUCKET", "mybucket"),
                ("S3_STORAGE_BASE_DIR", "images"),
                ("S3_STORAGE_ACL", "public-read"),
                ("S3_RESULT_STORAGE_BUCKET", "mybucket"),
                ("S3_RESULT_STORAGE_BASE_DIR", "images/result"),
                ("S3_RESULT_STORAGE_ACL", "public-read"),
                ("S3_RESULT_STORAGE_EXPIRATION", "168h"),
                ("S3_STORAGE_CLASS", "STANDARD_IA"),
                ("IMAGOR_RESULT_STORAGE_PATH_STYLE", "digest"),
            ]),
            "/",
        )
        .unwrap();
        let cfg = Config::from_toml(&m.sidecar_toml).unwrap();
        let StorageConfig::S3(loader) = &cfg.storages["loader"] else {
            panic!("loader is S3")
        };
        assert_eq!(loader.bucket, "mybucket");
        assert_eq!(loader.region.as_deref(), Some("eu-west-1"));
        assert!(loader.escape_keys);
        assert_eq!(loader.safe_chars.as_deref(), Some("[]"));
        assert_eq!(
            loader.access_key_id, None,
            "global keys stay with the default chain"
        );
        let StorageConfig::S3(results) = &cfg.storages["results"] else {
            panic!("results is S3")
        };
        assert_eq!(results.acl.as_deref(), Some("public-read"));
        assert_eq!(results.storage_class.as_deref(), Some("STANDARD_IA"));
        let rs = cfg.result_storage.unwrap();
        assert_eq!(rs.base_dir, "images/result");
        assert_eq!(rs.expiration_secs, Some(168 * 3600));
        assert_eq!(rs.path_style, PathStyle::Digest);
        let StorageConfig::S3(sources) = &cfg.storages["sources"] else {
            panic!("sources is S3")
        };
        assert_eq!(sources.bucket, "mybucket");
        assert_eq!(sources.acl.as_deref(), Some("public-read"));
        assert_eq!(sources.storage_class.as_deref(), Some("STANDARD_IA"));
        let ss = cfg.source_storage.unwrap();
        assert_eq!(
            (ss.storage.as_str(), ss.base_dir.as_str()),
            ("sources", "images")
        );
        assert!(!m.sidecar_toml.contains("global-secret"));

        let filter =
            pixmesh_core::config::FilterConfig::from_json(m.filter_json.as_bytes()).unwrap();
        let route = &filter.routes[0];
        assert_eq!(route.prefix, "/");
        assert_eq!(route.storage, "loader");
        assert_eq!(route.base_dir, "images");
        assert_eq!(route.secret.as_ref().map(|s| s.expose()), Some("mysecret"));
        assert!(!route.allow_unsafe);
        assert_eq!(
            route.result_keys,
            pixmesh_core::config::ResultKeys::Imagor,
            "imagor's stored renditions stay found"
        );
        assert!(
            route.plus_as_space,
            "a + in the image is a space, as imagor reads it"
        );
    }

    /// The seed's bucket-routing Compose example, and per-role keys, endpoints and prefixes.
    #[test]
    fn routing_files_wildcards_and_per_role_settings() {
        let m = map(
            &env(&[
                ("IMAGOR_UNSAFE", "1"),
                ("AWS_REGION", "us-east-1"),
                (
                    "S3_LOADER_BUCKET_ROUTER_CONFIG",
                    "/etc/imagor/bucket-routing.yaml",
                ),
            ]),
            "/",
        )
        .unwrap();
        let table: Table = toml::from_str(&m.sidecar_toml).unwrap();
        let loader = table["storages"]["loader"].as_table().unwrap();
        assert_eq!(loader["bucket"].as_str(), Some("*"));
        assert_eq!(
            loader["routing_file"].as_str(),
            Some("/etc/imagor/bucket-routing.yaml")
        );
        assert!(m.filter_json.contains("\"allow_unsafe\": true"));

        let m = map(
            &env(&[
                ("IMAGOR_UNSAFE", "true"),
                ("S3_LOADER_BUCKET", "photos/originals/"),
                ("S3_ENDPOINT", "http://minio:9000"),
                ("S3_FORCE_PATH_STYLE", "1"),
                ("S3_LOADER_PATH_PREFIX", "/avatars"),
                ("AWS_LOADER_REGION", "ap-southeast-1"),
                ("AWS_LOADER_ACCESS_KEY_ID", "AKIDLOADER"),
                ("AWS_LOADER_SECRET_ACCESS_KEY", "loader-secret"),
            ]),
            "/img/",
        )
        .unwrap();
        let cfg = Config::from_toml(&m.sidecar_toml).unwrap();
        let StorageConfig::S3(loader) = &cfg.storages["loader"] else {
            panic!("loader is S3")
        };
        assert_eq!(loader.bucket, "photos");
        assert_eq!(loader.endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(loader.force_path_style, Some(true));
        assert_eq!(loader.region.as_deref(), Some("ap-southeast-1"));
        assert_eq!(loader.access_key_id.as_deref(), Some("AKIDLOADER"));
        assert!(cfg.result_storage.is_none());
        let filter =
            pixmesh_core::config::FilterConfig::from_json(m.filter_json.as_bytes()).unwrap();
        assert_eq!(filter.routes[0].base_dir, "originals");
        assert_eq!(filter.routes[0].path_prefix, "avatars");
        assert_eq!(filter.routes[0].prefix, "/img/");

        let wildcard = map(
            &env(&[("S3_LOADER_BUCKET", "*"), ("IMAGOR_SECRET", "s")]),
            "/",
        )
        .unwrap();
        assert!(wildcard.sidecar_toml.contains("bucket = \"*\""));
        let cfg = Config::from_toml(&wildcard.sidecar_toml).unwrap();
        let StorageConfig::S3(loader) = &cfg.storages["loader"] else {
            panic!("loader is S3")
        };
        assert_eq!(
            loader.allowed_buckets,
            ["*"],
            "imagor's any bucket, said explicitly"
        );
    }

    #[test]
    fn unknown_unsupported_and_contradictory_values_are_errors() {
        let base = [("S3_LOADER_BUCKET", "b"), ("IMAGOR_SECRET", "s")];
        let with = |extra: &[(&str, &str)]| {
            let mut e = env(&base);
            e.extend(env(extra));
            map(&e, "/")
        };
        assert!(with(&[]).is_ok());
        assert!(
            with(&[("PATH", "/bin"), ("AWS_PROFILE", "x")]).is_ok(),
            "not imagor's"
        );
        let prefixed = with(&[
            ("S3_RESULT_STORAGE_BUCKET", "r"),
            ("S3_RESULT_STORAGE_PATH_PREFIX", "/avatars/"),
            ("S3_STORAGE_BUCKET", "s"),
            ("S3_STORAGE_PATH_PREFIX", "uploads"),
            ("S3_STORAGE_EXPIRATION", "24h"),
        ])
        .unwrap();
        let cfg = Config::from_toml(&prefixed.sidecar_toml).unwrap();
        assert_eq!(cfg.result_storage.unwrap().path_prefix, "avatars");
        let ss = cfg.source_storage.unwrap();
        assert_eq!(ss.path_prefix, "uploads");
        assert_eq!(ss.expiration_secs, Some(86400));
        for (extra, want) in [
            (
                vec![("IMAGOR_CACHE_HEADER_TTL", "1 hour")],
                "IMAGOR_CACHE_HEADER_TTL",
            ),
            (vec![("IMAGOR_AUTO_WEBP", "yes")], "IMAGOR_AUTO_WEBP"),
            (vec![("VIPS_MAX_RESOLUTION", "lots")], "VIPS_MAX_RESOLUTION"),
            (
                vec![("S3_STORAGE_ACL", "private")],
                "without S3_STORAGE_BUCKET",
            ),
            (
                vec![("AWS_STORAGE_REGION", "x")],
                "without S3_STORAGE_BUCKET",
            ),
            (vec![("S3_STORAGE_BUCKET", "*")], "fixed bucket"),
            (
                vec![
                    ("S3_STORAGE_BUCKET", "s"),
                    ("IMAGOR_STORAGE_PATH_STYLE", "digest"),
                ],
                "own path",
            ),
            (vec![("S3_SAFE_CHARS", "ab")], "S3_SAFE_CHARS"),
            (vec![("S3_FORCE_PATH_STYLE", "yes")], "S3_FORCE_PATH_STYLE"),
            (vec![("IMAGOR_UNSAFE", "maybe")], "IMAGOR_UNSAFE"),
            (
                vec![("S3_LOADER_BASE_DIR", "x"), ("S3_LOADER_BUCKET", "b/y")],
                "already names",
            ),
            (vec![("AWS_LOADER_ACCESS_KEY_ID", "k")], "both"),
            (
                vec![("S3_RESULT_STORAGE_ACL", "private")],
                "without S3_RESULT_STORAGE_BUCKET",
            ),
            (
                vec![
                    ("S3_RESULT_STORAGE_BUCKET", "r"),
                    ("S3_RESULT_STORAGE_EXPIRATION", "1 day"),
                ],
                "EXPIRATION",
            ),
            (
                vec![
                    ("S3_RESULT_STORAGE_BUCKET", "r"),
                    ("IMAGOR_RESULT_STORAGE_PATH_STYLE", "suffix"),
                ],
                "original and digest",
            ),
            (
                vec![("S3_LOADER_BUCKET_ROUTER_CONFIG", "/r.yaml")],
                "routing file names the buckets",
            ),
            (vec![("IMAGOR_SIGNER_TYPE", "md5")], "IMAGOR_SIGNER_TYPE"),
        ] {
            let err = with(extra.as_slice()).unwrap_err().to_string();
            assert!(err.contains(want), "{extra:?}: {err}");
        }
        assert_eq!(
            map(&env(&[("IMAGOR_UNSAFE", "1")]), "/"),
            Err(EnvError::NoLoader)
        );
        let err = map(&env(&[("S3_LOADER_BUCKET", "b")]), "/").unwrap_err();
        assert!(err.to_string().contains("allow_unsafe"), "{err}");
    }

    /// Every variable of imagor's that is not mapped is reported, all at once; the mapped
    /// ones land where `serve` reads them.
    #[test]
    fn unmapped_variables_are_all_reported_and_the_rest_is_mapped() {
        let m = map(
            &env(&[
                ("S3_LOADER_BUCKET", "b"),
                ("IMAGOR_UNSAFE", "1"),
                ("S3_LOADER_BUKET", "typo"),
                ("IMAGOR_BASE_PARAMS", "filters:fill(white)"),
                ("VIPS_CONCURRENCY", "4"),
                ("IMAGOR_AUTO_AVIF", "true"),
                ("IMAGOR_CACHE_HEADER_TTL", "1h"),
                ("IMAGOR_CACHE_HEADER_SWR", "10m"),
                ("IMAGOR_PROCESS_CONCURRENCY", "3"),
                ("IMAGOR_PROCESS_QUEUE_SIZE", "-1"),
                ("IMAGOR_LOAD_TIMEOUT", "20s"),
                ("VIPS_MAX_RESOLUTION", "16800000"),
                ("PATH", "/bin"),
            ]),
            "/",
        )
        .unwrap();
        assert_eq!(
            m.unmapped,
            ["IMAGOR_BASE_PARAMS", "S3_LOADER_BUKET", "VIPS_CONCURRENCY"]
        );
        let cfg = Config::from_toml(&m.sidecar_toml).unwrap();
        assert_eq!(
            cfg.cache_control,
            "public, s-maxage=3600, max-age=3600, no-transform, stale-while-revalidate=600"
        );
        assert_eq!(cfg.limits.workers, Some(3));
        assert_eq!(cfg.limits.max_queue, Limits::default().max_queue);
        assert_eq!(cfg.limits.storage_timeout_ms, 20_000);
        assert_eq!(cfg.limits.max_source_pixels, 16_800_000);
        let route = &FilterConfig::from_json(m.filter_json.as_bytes())
            .unwrap()
            .routes[0];
        assert!(route.auto_format && route.auto_avif);
        assert_eq!(
            route.result_keys,
            pixmesh_core::config::ResultKeys::Pixmesh,
            "no result storage, nothing to keep finding"
        );
        // imagor's defaults when nothing is said, and its no-cache.
        let cc = |extra: &[(&str, &str)]| {
            let mut e = env(&[("S3_LOADER_BUCKET", "b"), ("IMAGOR_UNSAFE", "1")]);
            e.extend(env(extra));
            Config::from_toml(&map(&e, "/").unwrap().sidecar_toml)
                .unwrap()
                .cache_control
        };
        assert_eq!(
            cc(&[]),
            "public, s-maxage=604800, max-age=604800, no-transform, stale-while-revalidate=86400"
        );
        for no_cache in [
            [("IMAGOR_CACHE_HEADER_NO_CACHE", "1")],
            [("IMAGOR_CACHE_HEADER_TTL", "0")],
        ] {
            assert_eq!(
                cc(&no_cache),
                "private, no-cache, no-store, must-revalidate"
            );
        }
    }

    /// `S3_LOADER_BUCKET=*` with a base dir: imagor reads the base dir inside the bucket the
    /// path names, and so does the mapped route.
    #[test]
    fn a_wildcard_bucket_keeps_the_base_dir_inside_the_bucket() {
        let m = map(
            &env(&[
                ("S3_LOADER_BUCKET", "*"),
                ("S3_LOADER_BASE_DIR", "public"),
                ("IMAGOR_UNSAFE", "1"),
            ]),
            "/",
        )
        .unwrap();
        let router = pixmesh_core::router::Router::from_json(m.filter_json.as_bytes()).unwrap();
        let decision = router.decide(
            "GET",
            "/unsafe/tenant-a/x.jpg",
            None,
            std::time::SystemTime::now(),
        );
        let pixmesh_core::router::Decision::Render(r) = decision else {
            panic!("{decision:?}");
        };
        assert_eq!(r.request.key, "tenant-a/public/x.jpg");
    }

    #[test]
    fn go_durations() {
        for (d, secs) in [
            ("24h", 86400),
            ("168h", 604800),
            ("1h30m", 5400),
            ("1.5h", 5400),
            ("90s", 90),
            ("1m0.5s", 60),
            ("1000ms", 1),
        ] {
            assert_eq!(go_duration_secs(d), Some(secs), "{d}");
        }
        for bad in ["", "24", "h", "500ms", "0s", "-1h", "1d", "1 h", "1.h.5"] {
            assert_eq!(go_duration_secs(bad), None, "{bad}");
        }
    }
}
