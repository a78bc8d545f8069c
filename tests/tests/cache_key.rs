//! End-to-end: renditions that vary with request headers and cookies (imgproxy's cache key
//! headers and cookies), through a real Envoy, the filter, the sidecar and Garage. Each distinct
//! value (absent and empty included) has its own ETag; every response, 304s and errors too,
//! says `Vary` on them. The pixels do not depend on the values, so one result-storage object
//! serves them all: a client cannot mint renders and writes by sending new values.

use pixmesh_tests::http::Response;
use pixmesh_tests::{Garage, Stack, eventually, tools};

const RESULTS_BUCKET: &str = "results";
const RESULTS_DIR: &str = "renditions";
const URL: &str = "/k/unsafe/fit-in/100x100/medium.jpg";

async fn start() -> (Garage, Stack) {
    let garage = Garage::start().await;
    garage.create_bucket(RESULTS_BUCKET).await;
    garage
        .put(
            garage.default_bucket(),
            "medium.jpg",
            tools::test_image("medium.jpg"),
        )
        .await;
    let s3 = |bucket: &str| garage.storage_toml(bucket);
    let sidecar = format!(
        "[storages.photos]\n{}\n[storages.results]\n{}\n\
         [result_storage]\nstorage = \"results\"\nbase_dir = \"{RESULTS_DIR}\"\n",
        s3(garage.default_bucket()),
        s3(RESULTS_BUCKET),
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/k/", "storage": "photos", "allow_unsafe": true,
          "cache_key_headers": ["X-Device"], "cache_key_cookies": ["ab"] },
        { "prefix": "/t/", "storage": "photos", "allow_unsafe": true },
    ]});
    let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;
    (garage, stack)
}

fn etag(r: &Response) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header_all("vary"), ["x-device, cookie"]);
    r.header("etag").expect("an ETag").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_header_and_cookie_value_is_its_own_rendition() {
    let (garage, stack) = start().await;
    let get = |headers: &'static [(&'static str, &'static str)]| stack.get(URL, headers);

    let mobile = etag(&get(&[("x-device", "mobile")]).await);
    let desktop = etag(&get(&[("X-Device", "desktop")]).await);
    let empty = etag(&get(&[("x-device", "")]).await);
    let absent = etag(&get(&[]).await);
    let cookie = etag(&get(&[("x-device", "mobile"), ("cookie", "ab=b; other=1")]).await);
    let all = [&mobile, &desktop, &empty, &absent, &cookie];
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            assert_ne!(a, b, "{all:?}");
        }
    }
    // The same values give the same rendition; unlisted cookies and headers do not count.
    let again = get(&[
        ("x-device", "mobile"),
        ("cookie", "other=2"),
        ("x-other", "1"),
    ])
    .await;
    assert_eq!(etag(&again), mobile);

    // One result-storage object for every value (there were five, one per value: any
    // number of values minted as many renders and writes).
    eventually("the rendition in result storage", || async {
        garage
            .list(RESULTS_BUCKET, RESULTS_DIR)
            .await
            .iter()
            .any(|k| k.contains("medium.jpg"))
    })
    .await;
    for value in ["tablet", "watch", "tv"] {
        let r = stack.get(URL, &[("x-device", value)]).await;
        assert!(!all.contains(&&etag(&r)), "{value}: its own ETag");
    }
    let stored = garage.list(RESULTS_BUCKET, RESULTS_DIR).await;
    assert_eq!(
        stored.iter().filter(|k| k.contains("medium.jpg")).count(),
        1,
        "{stored:?}"
    );

    // An ETag of one value never answers for another; 304s vary too.
    let r = stack
        .get(URL, &[("x-device", "desktop"), ("if-none-match", &mobile)])
        .await;
    assert_eq!(etag(&r), desktop);
    let r = stack
        .get(URL, &[("x-device", "mobile"), ("if-none-match", &mobile)])
        .await;
    assert_eq!(r.status, 304, "{}", r.text());
    assert_eq!(r.header_all("vary"), ["x-device, cookie"]);

    // Errors vary too; routes without a cache key do not.
    let missing = stack
        .get(
            "/k/unsafe/fit-in/100x100/nope.jpg",
            &[("x-device", "mobile")],
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header_all("vary"), ["x-device, cookie"]);
    let plain = stack
        .get(
            "/t/unsafe/fit-in/100x100/medium.jpg",
            &[("x-device", "mobile")],
        )
        .await;
    assert_eq!(plain.status, 200);
    assert!(plain.header_all("vary").is_empty());
    assert!(!all.contains(&&plain.header("etag").unwrap().to_owned()));
}
