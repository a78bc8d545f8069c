//! Signed URLs through listeners that normalise paths before the filter sees them, as Istio's
//! settings do (`BASE`: `normalize_path`; `MERGE_SLASHES`: and `merge_slashes`;
//! `DECODE_AND_MERGE_SLASHES`: and `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD`),
//! against pixmesh's own listener, which normalises nothing. pixmesh added to a foreign Envoy
//! with its fragment, against Garage; every grammar.
//!
//! What survives: escapes Envoy adds or removes (`%7E` → `~`, `|` → `%7C`): the filter verifies
//! the forms clients sign; imgproxy's `s3://` and `local:///` sources, whose merged slashes can
//! only have been those (`pixmesh_core::normalisation`). What cannot: merged slashes in keys,
//! dot segments and, with unescaped slashes, `%2F` in keys: the path no longer says what was
//! signed (403). README's "Path normalisation" is this table.

use pixmesh_core::router::Router;
use pixmesh_sidecar::envoy_config::{self, Endpoint, Fragment, InlineSecrets};
use pixmesh_tests::foreign::{get_raw, merge, start_app};
use pixmesh_tests::http::Response;
use pixmesh_tests::{Envoy, Garage, Sidecar, Stack, tools, vouch};

fn filter_config(call: bool) -> String {
    let mut json = serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "secret": "thumbor-secret" },
        { "prefix": "/open/", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos",
          "keys": [ { "key": "736563726574", "salt": "68656C6C6F" } ] },
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "secret": "ik-secret" },
        { "prefix": "/v1/ex/", "grammar": "query", "storage": "photos", "secret": "q-secret" },
    ]});
    json["render_key"] = vouch::render_key().into();
    if call {
        json["call"] = serde_json::json!({ "cluster": "pixmesh_sidecar" });
    }
    json.to_string()
}

/// The listeners compared: pixmesh's own, then Istio's three normalisations.
const LISTENERS: [&str; 4] = ["own", "BASE", "MERGE_SLASHES", "DECODE_AND_MERGE_SLASHES"];

/// `HttpConnectionManager` settings of each normalising listener.
fn settings(listener: &str) -> &'static str {
    match listener {
        "BASE" => "normalize_path: true",
        "MERGE_SLASHES" => "normalize_path: true\nmerge_slashes: true",
        _ => {
            "normalize_path: true\nmerge_slashes: true\n\
             path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD"
        }
    }
}

/// One URL and the status each listener of [`LISTENERS`] answers it with.
struct Case {
    what: &'static str,
    path: String,
    statuses: [u16; 4],
}

fn cases(router: &Router) -> Vec<Case> {
    let sign = |url: &str| router.sign(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let case = |what, path: String, statuses| Case {
        what,
        path,
        statuses,
    };
    let all = [200; 4];
    let thumbor = sign("/img/unsafe/fit-in/100x100/medium.jpg");
    let signature = thumbor.split('/').nth(2).unwrap().to_owned();
    assert!(signature.ends_with('='), "{signature}");
    vec![
        case(
            "thumbor, `~` signed as %7E (Envoy decodes it)",
            sign("/img/unsafe/fit-in/100x100/a%7Eb.jpg"),
            all,
        ),
        case(
            "thumbor, `~` signed raw",
            sign("/img/unsafe/fit-in/100x100/a~b.jpg"),
            all,
        ),
        case(
            "imgproxy, `~` signed as %7E",
            sign("/ip/insecure/rs:fit:100:100/plain/a%7Eb.jpg"),
            all,
        ),
        case(
            "imagekit, `~` signed as %7E",
            sign("/ik/tr:w-100/a%7Eb.jpg"),
            all,
        ),
        case(
            "query, `~` signed as %7E",
            sign("/v1/ex/photos/a%7Eb.jpg?w=100"),
            all,
        ),
        case(
            "thumbor, `|` sent raw (Envoy escapes it)",
            sign("/img/unsafe/fit-in/100x100/a|b.jpg"),
            all,
        ),
        case(
            "imgproxy, `|` sent raw",
            sign("/ip/insecure/rs:fit:100:100/plain/a|b.jpg"),
            all,
        ),
        case(
            "thumbor, signature with `=` as %3D",
            thumbor.replace(&signature, &signature.replace('=', "%3D")),
            all,
        ),
        case(
            "thumbor, %2F in the key",
            sign("/img/unsafe/fit-in/100x100/dir%2Fx.jpg"),
            [200, 200, 200, 403],
        ),
        case(
            "imgproxy, %2F in the key",
            sign("/ip/insecure/rs:fit:100:100/plain/dir%2Fx.jpg"),
            [200, 200, 200, 403],
        ),
        case(
            "thumbor, `//` in the key",
            sign("/img/unsafe/fit-in/100x100/dir//x.jpg"),
            [200, 200, 403, 403],
        ),
        case(
            "imgproxy, an s3:// source (merged to s3:/, read back)",
            sign("/ip/insecure/rs:fit:100:100/plain/s3://photos/medium.jpg"),
            all,
        ),
        case(
            "imgproxy, a local:/// source (merged to local:/, read back)",
            sign("/ip/insecure/rs:fit:100:100/plain/local:///dir/x.jpg"),
            all,
        ),
        case(
            "thumbor, a `.` segment",
            sign("/img/unsafe/fit-in/100x100/dir/./x.jpg"),
            [200, 403, 403, 403],
        ),
        case(
            "thumbor, a `..` segment (never a key)",
            sign("/img/unsafe/fit-in/100x100/dir/../medium.jpg"),
            [400, 403, 403, 403],
        ),
        case(
            "unsigned, `//`, `.` and %7E: the same key",
            "/open/unsafe/fit-in/100x100/dir//./x%7E.jpg".to_owned(),
            all,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_through_normalising_listeners() {
    let garage = Garage::start().await;
    let bucket = garage.default_bucket().to_owned();
    let jpeg = tools::test_image("medium.jpg");
    for key in [
        "medium.jpg",
        "a~b.jpg",
        "a|b.jpg",
        "dir/x.jpg",
        "dir/x~.jpg",
    ] {
        garage.put(&bucket, key, jpeg.clone()).await;
    }
    let sidecar = Sidecar::start(&format!(
        "[storages.photos]\n{}",
        garage.storage_toml(&bucket)
    ))
    .await;
    let port = sidecar.addr().port();
    let (app_port, _) = start_app().await;
    let router = Router::from_json(filter_config(false).as_bytes()).unwrap();
    let own = Stack::builder(&filter_config(false), "")
        .external_sidecar(port)
        .start()
        .await;
    let wasm = tools::filter_wasm().display().to_string();
    let normalising = |listener: &'static str, call: bool| {
        let fragment = envoy_config::fragment(&Fragment {
            filter_config: filter_config(call),
            filter_wasm: wasm.clone(),
            sidecar: Endpoint::loopback(port),
            cluster: None,
            route_timeout: "30s".into(),
            inline_secrets: InlineSecrets::Allow,
        })
        .unwrap();
        let config = pixmesh_tests::foreign::config(app_port, settings(listener));
        assert!(config.contains("normalize_path: true"));
        merge(&config, &fragment)
    };
    let mut envoys: Vec<(String, Envoy, usize)> = Vec::new();
    for (i, listener) in LISTENERS.iter().enumerate().skip(1) {
        let config = normalising(listener, false);
        envoys.push((listener.to_string(), Envoy::start(&config).await, i));
    }
    // Call mode reads the same normalised path.
    let config = normalising("MERGE_SLASHES", true);
    envoys.push((
        "MERGE_SLASHES, call mode".into(),
        Envoy::start(&config).await,
        2,
    ));

    for case in cases(&router) {
        let reference: Response = get_raw(&own.envoy, &case.path).await;
        assert_eq!(
            reference.status,
            case.statuses[0],
            "own listener: {}: {}: {}",
            case.what,
            case.path,
            reference.text()
        );
        for (name, envoy, i) in &envoys {
            let r = get_raw(envoy, &case.path).await;
            assert_eq!(
                r.status,
                case.statuses[*i],
                "{name}: {}: {}: {}",
                case.what,
                case.path,
                r.text()
            );
            if r.status == 200 {
                assert_eq!(r.header("content-type"), Some("image/jpeg"), "{name}");
                assert!(
                    r.body == reference.body,
                    "{name}: {}: the same image",
                    case.what
                );
            }
        }
    }

    // `..` climbs out of pixmesh's prefix before any filter runs: Envoy routes what is left.
    for (name, envoy, _) in &envoys {
        let r = get_raw(envoy, "/img/../healthz").await;
        assert_eq!((r.status, r.text().as_str()), (200, "healthy\n"), "{name}");
    }
}
