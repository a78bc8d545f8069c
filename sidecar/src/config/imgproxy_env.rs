//! imgproxy's environment variables → pixmesh's configuration: `pixmesh-sidecar
//! from-imgproxy-env --sidecar-out pixmesh.toml --filter-out filter.json` writes both files
//! from the environment it runs in, for an imgproxy deployment that reads its sources from S3.
//!
//! | imgproxy | pixmesh |
//! |---|---|
//! | `IMGPROXY_KEY`, `IMGPROXY_SALT` (hex, comma-separated pairs for rotation) | the route's `keys`; without them `allow_unsafe` (imgproxy then takes any signature) |
//! | `IMGPROXY_SIGNATURE_SIZE` | `signature_size` (`allow_weak_signatures` under 8 bytes, as imgproxy allows) |
//! | `IMGPROXY_PATH_PREFIX` | the route's `prefix` (instead of `--prefix`) |
//! | `IMGPROXY_BASE_URL=s3://BUCKET/DIR/` | the route's storage (`[storages.images]`, that bucket) and `base_dir` |
//! | `IMGPROXY_ALLOWED_SOURCES=s3://B1/,s3://B2/` | one storage per bucket, named after it, which `s3://B/…` sources may name (`handles`) |
//! | `IMGPROXY_USE_S3` (required), `IMGPROXY_S3_ENDPOINT`, `IMGPROXY_S3_REGION`, `IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE` (imgproxy's default: true), `IMGPROXY_S3_ASSUME_ROLE_ARN`, `_EXTERNAL_ID` | each storage's `endpoint`, `region`, `force_path_style`, `role_arn`, `external_id` |
//! | `IMGPROXY_MAX_SRC_RESOLUTION` (megapixels), `IMGPROXY_MAX_SRC_FILE_SIZE`, `IMGPROXY_MAX_ANIMATION_FRAMES`, `IMGPROXY_WORKERS`, `IMGPROXY_REQUESTS_QUEUE_SIZE`, `IMGPROXY_DOWNLOAD_TIMEOUT` (s) | `[limits]` `max_source_pixels`, `max_source_bytes`, `max_animation_frames`, `workers`, `max_queue`, `storage_timeout_ms` |
//! | `IMGPROXY_QUALITY`, `IMGPROXY_FORMAT_QUALITY` (`jpeg=70,webp=60,avif=50`), `IMGPROXY_JPEG_PROGRESSIVE` | `[encoding]` qualities and `jpeg_progressive` |
//! | `IMGPROXY_AUTO_WEBP` / `IMGPROXY_ENABLE_WEBP_DETECTION`, `IMGPROXY_AUTO_AVIF` / `IMGPROXY_ENABLE_AVIF_DETECTION` | the route's `auto_format`, `auto_avif` |
//! | `IMGPROXY_TTL` (default 31536000) | `cache_control`, as imgproxy writes it (`max-age=N, public`; `no-cache` for 0) |
//!
//! The global `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` / `AWS_REGION`
//! are not copied: pixmesh's default credential chain reads them where it serves, as
//! imgproxy's S3 client does. Every other `IMGPROXY_*` variable is reported
//! ([`Mapped::unmapped`]); values pixmesh cannot honour (a non-S3 base URL, `IMGPROXY_USE_S3`
//! off, keys without salts) are errors.

use std::collections::BTreeMap;

use toml::{Table, Value};

use super::imagor_env::{EnvError, Mapped, number_var, parse_bool, unmapped};

/// Variables this mapping reads.
const KNOWN: &[&str] = &[
    "IMGPROXY_KEY",
    "IMGPROXY_SALT",
    "IMGPROXY_SIGNATURE_SIZE",
    "IMGPROXY_PATH_PREFIX",
    "IMGPROXY_BASE_URL",
    "IMGPROXY_ALLOWED_SOURCES",
    "IMGPROXY_USE_S3",
    "IMGPROXY_S3_ENDPOINT",
    "IMGPROXY_S3_REGION",
    "IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE",
    "IMGPROXY_S3_ASSUME_ROLE_ARN",
    "IMGPROXY_S3_ASSUME_ROLE_EXTERNAL_ID",
    "IMGPROXY_MAX_SRC_RESOLUTION",
    "IMGPROXY_MAX_SRC_FILE_SIZE",
    "IMGPROXY_MAX_ANIMATION_FRAMES",
    "IMGPROXY_WORKERS",
    "IMGPROXY_REQUESTS_QUEUE_SIZE",
    "IMGPROXY_DOWNLOAD_TIMEOUT",
    "IMGPROXY_QUALITY",
    "IMGPROXY_FORMAT_QUALITY",
    "IMGPROXY_JPEG_PROGRESSIVE",
    "IMGPROXY_AUTO_WEBP",
    "IMGPROXY_ENABLE_WEBP_DETECTION",
    "IMGPROXY_AUTO_AVIF",
    "IMGPROXY_ENABLE_AVIF_DETECTION",
    "IMGPROXY_TTL",
];

/// The storage of the base URL's bucket.
const BASE_STORAGE: &str = "images";

fn invalid(name: &str, reason: impl Into<String>) -> EnvError {
    EnvError::Invalid {
        name: name.to_owned(),
        reason: reason.into(),
    }
}

/// Maps imgproxy's variables in `env` onto a sidecar TOML and a filter JSON whose one route
/// speaks imgproxy's URLs, at `IMGPROXY_PATH_PREFIX` or else `prefix`.
pub fn map(env: &BTreeMap<String, String>, prefix: &str) -> Result<Mapped, EnvError> {
    let get = |name: &str| env.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let flag = |name: &str| -> Result<Option<bool>, EnvError> {
        get(name)
            .map(|v| parse_bool(v).ok_or_else(|| invalid(name, "not a boolean")))
            .transpose()
    };
    let unmapped = unmapped(env, &["IMGPROXY_"], KNOWN);

    // Where sources are: the base URL's bucket, and the buckets sources may name.
    let base = get("IMGPROXY_BASE_URL").map(|url| {
        s3_bucket(url).ok_or_else(|| {
            invalid(
                "IMGPROXY_BASE_URL",
                "pixmesh reads S3 only: write s3://BUCKET/ or s3://BUCKET/DIR/",
            )
        })
    });
    let base = base.transpose()?;
    let mut named = Vec::new();
    for source in get("IMGPROXY_ALLOWED_SOURCES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        match s3_bucket(source) {
            Some((bucket, "")) => named.push(bucket),
            _ => {
                return Err(invalid(
                    "IMGPROXY_ALLOWED_SOURCES",
                    format!("{source}: pixmesh maps whole S3 buckets only (s3://BUCKET/)"),
                ));
            }
        }
    }
    if base.is_none() && named.is_empty() {
        return Err(invalid(
            "IMGPROXY_BASE_URL",
            "set IMGPROXY_BASE_URL=s3://BUCKET/ or IMGPROXY_ALLOWED_SOURCES=s3://BUCKET/,… \
             (pixmesh reads the buckets it is told about)",
        ));
    }
    if flag("IMGPROXY_USE_S3")? != Some(true) {
        return Err(invalid(
            "IMGPROXY_USE_S3",
            "pixmesh reads sources from S3: set IMGPROXY_USE_S3=true as imgproxy needs too",
        ));
    }

    let s3 = |bucket: &str| -> Result<Table, EnvError> {
        let mut t = Table::new();
        t.insert("type".into(), "s3".into());
        t.insert("bucket".into(), bucket.into());
        for (name, key) in [
            ("IMGPROXY_S3_ENDPOINT", "endpoint"),
            ("IMGPROXY_S3_REGION", "region"),
            ("IMGPROXY_S3_ASSUME_ROLE_ARN", "role_arn"),
            ("IMGPROXY_S3_ASSUME_ROLE_EXTERNAL_ID", "external_id"),
        ] {
            if let Some(v) = get(name) {
                t.insert(key.into(), v.into());
            }
        }
        let path_style = flag("IMGPROXY_S3_ENDPOINT_USE_PATH_STYLE")?.unwrap_or(true);
        t.insert("force_path_style".into(), Value::Boolean(path_style));
        Ok(t)
    };
    let mut storages = Table::new();
    let mut handles = serde_json::Map::new();
    let (storage, base_dir) = match base {
        Some((bucket, dir)) => {
            storages.insert(BASE_STORAGE.into(), Value::Table(s3(bucket)?));
            handles.insert(bucket.into(), BASE_STORAGE.into());
            (BASE_STORAGE.to_owned(), dir.trim_matches('/').to_owned())
        }
        None => (named[0].to_owned(), String::new()),
    };
    for bucket in named {
        if !handles.contains_key(bucket) {
            storages.insert(bucket.into(), Value::Table(s3(bucket)?));
            handles.insert(bucket.into(), bucket.into());
        }
    }
    handles.remove(&storage);

    let mut sidecar = Table::new();
    sidecar.insert("storages".into(), Value::Table(storages));
    let ttl = number_var(&get, "IMGPROXY_TTL", i64::from(u32::MAX))?.unwrap_or(31_536_000);
    let cache_control = match ttl {
        ..=0 => "no-cache".to_owned(),
        ttl => format!("max-age={ttl}, public"),
    };
    sidecar.insert("cache_control".into(), cache_control.into());
    let limits = limits(&get)?;
    if !limits.is_empty() {
        sidecar.insert("limits".into(), Value::Table(limits));
    }
    let mut encoding = Table::new();
    if let Some(q) = quality("IMGPROXY_QUALITY", get("IMGPROXY_QUALITY"))? {
        for key in ["jpeg_quality", "webp_quality", "avif_quality"] {
            encoding.insert(key.into(), Value::Integer(q));
        }
    }
    for pair in get("IMGPROXY_FORMAT_QUALITY")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let name = "IMGPROXY_FORMAT_QUALITY";
        let (format, q) = pair
            .split_once('=')
            .ok_or_else(|| invalid(name, format!("{pair}: not FORMAT=QUALITY")))?;
        let q = quality(name, Some(q.trim()))?.unwrap_or_default();
        match format.trim() {
            "jpeg" | "jpg" => encoding.insert("jpeg_quality".into(), Value::Integer(q)),
            "webp" => encoding.insert("webp_quality".into(), Value::Integer(q)),
            "avif" => encoding.insert("avif_quality".into(), Value::Integer(q)),
            // Formats pixmesh has no quality setting for (PNG, GIF are lossless; JXL, HEIC,
            // TIFF are not written) change nothing.
            _ => None,
        };
    }
    if let Some(p) = flag("IMGPROXY_JPEG_PROGRESSIVE")? {
        encoding.insert("jpeg_progressive".into(), Value::Boolean(p));
    }
    if !encoding.is_empty() {
        sidecar.insert("encoding".into(), Value::Table(encoding));
    }
    let sidecar_toml =
        toml::to_string(&sidecar).map_err(|e| invalid("(sidecar config)", e.to_string()))?;

    // The filter's route.
    let prefix = match get("IMGPROXY_PATH_PREFIX") {
        Some(p) => format!("/{}/", p.trim_matches('/')).replace("//", "/"),
        None => prefix.to_owned(),
    };
    let mut route = serde_json::json!({
        "prefix": prefix,
        "grammar": "imgproxy",
        "storage": storage,
    });
    if !base_dir.is_empty() {
        route["base_dir"] = base_dir.into();
    }
    if !handles.is_empty() {
        route["handles"] = handles.into();
    }
    let split = |name: &str| -> Vec<String> {
        get(name)
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let (keys, salts) = (split("IMGPROXY_KEY"), split("IMGPROXY_SALT"));
    if keys.len() != salts.len() {
        return Err(invalid(
            "IMGPROXY_KEY",
            "IMGPROXY_KEY and IMGPROXY_SALT must list as many hex values each",
        ));
    }
    if keys.is_empty() {
        route["allow_unsafe"] = true.into();
    } else {
        let pairs: Vec<_> = keys
            .iter()
            .zip(&salts)
            .map(|(k, s)| serde_json::json!({ "key": k, "salt": s }))
            .collect();
        route["keys"] = pairs.into();
    }
    if let Some(size) = number_var(&get, "IMGPROXY_SIGNATURE_SIZE", 32)? {
        if size < 1 {
            return Err(invalid("IMGPROXY_SIGNATURE_SIZE", "1 to 32 bytes"));
        }
        route["signature_size"] = size.into();
        if size < pixmesh_core::config::MIN_SIGNATURE_BYTES as i64 {
            route["allow_weak_signatures"] = true.into();
        }
    }
    let auto_webp = flag("IMGPROXY_AUTO_WEBP")?.or(flag("IMGPROXY_ENABLE_WEBP_DETECTION")?);
    let auto_avif = flag("IMGPROXY_AUTO_AVIF")?.or(flag("IMGPROXY_ENABLE_AVIF_DETECTION")?);
    if auto_webp == Some(true) || auto_avif == Some(true) {
        route["auto_format"] = true.into();
    }
    if auto_avif == Some(true) {
        route["auto_avif"] = true.into();
    }
    let filter = serde_json::json!({ "routes": [route] });
    pixmesh_core::config::FilterConfig::from_json(filter.to_string().as_bytes()).map_err(|e| {
        invalid(
            "IMGPROXY_KEY/IMGPROXY_SALT",
            format!("the route is not valid: {e}"),
        )
    })?;
    Ok(Mapped {
        sidecar_toml,
        filter_json: serde_json::to_string_pretty(&filter).expect("JSON serializes"),
        unmapped,
    })
}

/// `s3://BUCKET/DIR` → (`BUCKET`, `DIR`), the bucket a valid storage handle.
fn s3_bucket(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, dir) = rest.split_once('/').unwrap_or((rest, ""));
    pixmesh_core::query::is_handle(bucket).then_some((bucket, dir))
}

/// A quality, 1–100.
fn quality(name: &str, value: Option<&str>) -> Result<Option<i64>, EnvError> {
    value
        .map(|v| {
            v.parse::<i64>()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| invalid(name, format!("{v}: not a quality from 1 to 100")))
        })
        .transpose()
}

/// `[limits]` (imgproxy's 0 is "no limit" for the file size and the queue, which leaves
/// pixmesh's default).
fn limits<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Table, EnvError> {
    let mut t = Table::new();
    if let Some(v) = get("IMGPROXY_MAX_SRC_RESOLUTION") {
        let pixels = v
            .parse::<f64>()
            .ok()
            .filter(|mp| mp.is_finite() && *mp > 0.0 && *mp < 1e9)
            .ok_or_else(|| {
                invalid(
                    "IMGPROXY_MAX_SRC_RESOLUTION",
                    "not a positive megapixel count",
                )
            })?;
        t.insert(
            "max_source_pixels".into(),
            Value::Integer((pixels * 1e6) as i64),
        );
    }
    for (name, key) in [
        ("IMGPROXY_MAX_SRC_FILE_SIZE", "max_source_bytes"),
        ("IMGPROXY_MAX_ANIMATION_FRAMES", "max_animation_frames"),
        ("IMGPROXY_WORKERS", "workers"),
        ("IMGPROXY_REQUESTS_QUEUE_SIZE", "max_queue"),
    ] {
        if let Some(n) = number_var(get, name, i64::from(u32::MAX))?.filter(|n| *n > 0) {
            t.insert(key.into(), Value::Integer(n));
        }
    }
    if let Some(secs) = number_var(get, "IMGPROXY_DOWNLOAD_TIMEOUT", 86_400)? {
        if secs < 1 {
            return Err(invalid("IMGPROXY_DOWNLOAD_TIMEOUT", "at least 1 second"));
        }
        t.insert("storage_timeout_ms".into(), Value::Integer(secs * 1000));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, StorageConfig};
    use pixmesh_core::config::FilterConfig;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const KEY: &str = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
    const SALT: &str = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";

    #[test]
    fn an_imgproxy_deployment_on_s3() {
        let m = map(
            &env(&[
                ("IMGPROXY_KEY", &format!("{KEY},736563726574")),
                ("IMGPROXY_SALT", &format!("{SALT}, 68656C6C6F")),
                ("IMGPROXY_SIGNATURE_SIZE", "8"),
                ("IMGPROXY_USE_S3", "true"),
                ("IMGPROXY_S3_ENDPOINT", "http://127.0.0.1:9000"),
                ("IMGPROXY_S3_REGION", "eu-west-1"),
                ("IMGPROXY_BASE_URL", "s3://photos/public/"),
                ("IMGPROXY_ALLOWED_SOURCES", "s3://photos/,s3://archive/"),
                ("IMGPROXY_MAX_SRC_RESOLUTION", "16.8"),
                ("IMGPROXY_MAX_SRC_FILE_SIZE", "10485760"),
                ("IMGPROXY_WORKERS", "4"),
                ("IMGPROXY_DOWNLOAD_TIMEOUT", "5"),
                ("IMGPROXY_QUALITY", "75"),
                ("IMGPROXY_FORMAT_QUALITY", "webp=70,avif=50,jxl=60"),
                ("IMGPROXY_ENABLE_WEBP_DETECTION", "true"),
                ("IMGPROXY_PATH_PREFIX", "/img"),
                ("IMGPROXY_TTL", "3600"),
                ("IMGPROXY_LOG_FORMAT", "json"),
                ("IMGPROXY_TRUSTED_SIGNATURES", "abc"),
                ("AWS_ACCESS_KEY_ID", "AKID"),
                ("PATH", "/bin"),
            ]),
            "/",
        )
        .unwrap();
        assert_eq!(
            m.unmapped,
            ["IMGPROXY_LOG_FORMAT", "IMGPROXY_TRUSTED_SIGNATURES"]
        );
        let cfg = Config::from_toml(&m.sidecar_toml).unwrap();
        assert_eq!(cfg.cache_control, "max-age=3600, public");
        assert_eq!(cfg.limits.max_source_pixels, 16_800_000);
        assert_eq!(cfg.limits.max_source_bytes, 10_485_760);
        assert_eq!(cfg.limits.workers, Some(4));
        assert_eq!(cfg.limits.storage_timeout_ms, 5000);
        assert_eq!(
            (
                cfg.encoding.jpeg_quality,
                cfg.encoding.webp_quality,
                cfg.encoding.avif_quality
            ),
            (75, 70, 50)
        );
        assert_eq!(
            cfg.storages.keys().collect::<Vec<_>>(),
            ["archive", "images"]
        );
        assert!(!m.sidecar_toml.contains("AKID"), "the chain reads it");
        let route = &FilterConfig::from_json(m.filter_json.as_bytes())
            .unwrap()
            .routes[0];
        assert_eq!(route.prefix, "/img/");
        assert_eq!(
            (route.storage.as_str(), route.base_dir.as_str()),
            ("images", "public")
        );
        assert_eq!(route.storage_for(Some("photos")), Some("images"));
        assert_eq!(route.storage_for(Some("archive")), Some("archive"));
        assert_eq!((route.keys.len(), route.signature_size), (2, Some(8)));
        assert!(route.auto_format && !route.auto_avif && !route.allow_unsafe);
        // The mapped route verifies what imgproxy signs with the first pair.
        let signer = route.imgproxy_signer().unwrap();
        let router = pixmesh_core::router::Router::from_json(m.filter_json.as_bytes()).unwrap();
        let url = format!(
            "/img/{}/rs:fit:300:200/plain/a.jpg",
            signer.sign("/rs:fit:300:200/plain/a.jpg")
        );
        assert!(matches!(
            router.decide("GET", &url, None, std::time::SystemTime::now()),
            pixmesh_core::router::Decision::Render(_)
        ));
    }

    #[test]
    fn without_keys_any_signature_and_imgproxy_defaults() {
        let m = map(
            &env(&[
                ("IMGPROXY_USE_S3", "1"),
                ("IMGPROXY_ALLOWED_SOURCES", "s3://photos/"),
            ]),
            "/ip/",
        )
        .unwrap();
        assert!(m.unmapped.is_empty());
        let cfg = Config::from_toml(&m.sidecar_toml).unwrap();
        assert_eq!(cfg.cache_control, "max-age=31536000, public");
        let route = &FilterConfig::from_json(m.filter_json.as_bytes())
            .unwrap()
            .routes[0];
        assert_eq!(
            (route.prefix.as_str(), route.storage.as_str()),
            ("/ip/", "photos")
        );
        assert!(route.allow_unsafe && route.handles.is_empty());
        let StorageConfig::S3(s3) = &cfg.storages["photos"] else {
            panic!("an S3 storage");
        };
        assert_eq!(s3.force_path_style, Some(true), "imgproxy's default");
    }

    #[test]
    fn what_pixmesh_cannot_honour_is_an_error() {
        for (pairs, want) in [
            (vec![("IMGPROXY_USE_S3", "1")], "IMGPROXY_BASE_URL"),
            (
                vec![("IMGPROXY_BASE_URL", "https://cdn.example.com/")],
                "S3 only",
            ),
            (vec![("IMGPROXY_BASE_URL", "s3://b/")], "IMGPROXY_USE_S3"),
            (
                vec![
                    ("IMGPROXY_USE_S3", "1"),
                    ("IMGPROXY_ALLOWED_SOURCES", "s3://b/dir/"),
                ],
                "whole S3 buckets",
            ),
            (
                vec![
                    ("IMGPROXY_USE_S3", "1"),
                    ("IMGPROXY_BASE_URL", "s3://b/"),
                    ("IMGPROXY_KEY", KEY),
                ],
                "as many",
            ),
            (
                vec![
                    ("IMGPROXY_USE_S3", "1"),
                    ("IMGPROXY_BASE_URL", "s3://b/"),
                    ("IMGPROXY_KEY", "zz"),
                    ("IMGPROXY_SALT", "00"),
                ],
                "not valid",
            ),
            (
                vec![
                    ("IMGPROXY_USE_S3", "1"),
                    ("IMGPROXY_BASE_URL", "s3://b/"),
                    ("IMGPROXY_QUALITY", "101"),
                ],
                "IMGPROXY_QUALITY",
            ),
        ] {
            let err = map(&env(&pairs), "/").unwrap_err().to_string();
            assert!(err.contains(want), "{pairs:?}: {err}");
        }
    }
}
