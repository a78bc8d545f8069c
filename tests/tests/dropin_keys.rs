//! End-to-end through Envoy (both of the filter's modes): imgproxy URLs as imgproxy reads,
//! signs and refuses them. Signatures are made with imgproxy's algorithm (HMAC-SHA256 of salt
//! and path, `pixmesh_core::sign::ImgproxySigner`) over the path as imgproxy's
//! `handlers/path.go` normalises it, and the URLs are then sent as a proxy or CDN passes them
//! on (`%3A` for `:` in the options); `plain/local:///KEY` reads KEY from the route's storage;
//! refusals answer imgproxy's statuses unless the route asks for pixmesh's.

use pixmesh_core::sign::ImgproxySigner;
use pixmesh_tests::{Stack, tools};

/// imgproxy's documentation pair: key `secret`, salt `hello`.
const KEY: &str = "736563726574";
const SALT: &str = "68656C6C6F";

async fn stack(call_mode: bool) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("dir")).unwrap();
    let photo = tools::testdata_images().join("medium.jpg");
    std::fs::copy(&photo, dir.path().join("dir/x.jpg")).unwrap();
    let sidecar = format!(
        "[storages.photos]\ntype = \"local\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos",
          "keys": [ { "key": KEY, "salt": SALT } ] },
        { "prefix": "/open/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/precise/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true,
          "statuses": "pixmesh" },
    ]});
    let mut builder = Stack::builder(&filter.to_string(), &sidecar);
    if call_mode {
        builder = builder.call_mode();
    }
    (builder.start().await, dir)
}

fn signed(path: &str) -> String {
    let signer = ImgproxySigner::new([(KEY, SALT)], None).unwrap();
    format!("{}{path}", signer.sign(path))
}

async fn as_imgproxy(call_mode: bool) {
    let (stack, _dir) = stack(call_mode).await;
    let mut failures = Vec::new();
    let path = "/rs:fill:300:200/g:no/plain/local:///dir/x.jpg@png";
    let sig = signed(path);
    let sig = sig.split('/').next().unwrap();
    // Signed over imgproxy's form; received with the options escaped, as a proxy passes them.
    for received in [
        path.to_owned(),
        path.replace("rs:fill:300:200/g:no", "rs%3Afill%3A300%3A200/g%3Ano"),
    ] {
        let url = format!("/ip/{sig}{received}");
        let r = stack.get(&url, &[]).await;
        match (r.status, image::load_from_memory(&r.body)) {
            (200, Ok(img)) if (img.width(), img.height()) == (300, 200) => {}
            (200, Ok(img)) => failures.push(format!("{url}: {}x{}", img.width(), img.height())),
            (status, _) => failures.push(format!("{url}: {status} {}", r.text().trim())),
        }
    }
    // imgproxy refuses a signature of the escaped form.
    let escaped = path.replace("rs:fill:", "rs%3Afill%3A");
    let r = stack.get(&format!("/ip/{}", signed(&escaped)), &[]).await;
    if r.status != 403 {
        failures.push(format!("signed escaped form: {} (want 403)", r.status));
    }
    // Refusals: imgproxy's statuses, and pixmesh's where the route asks for them.
    for (path, peer, precise) in [
        (
            "insecure/nope:1/plain/local:///dir/x.jpg",
            (404, "Invalid URL"),
            400,
        ),
        (
            "insecure/exp:1/plain/local:///dir/x.jpg",
            (404, "Invalid URL"),
            410,
        ),
        (
            "rs:fit:10:10/plain/local:///dir/x.jpg",
            (403, "Forbidden"),
            400,
        ),
        ("plain", (404, "Invalid URL"), 400),
    ] {
        let r = stack.get(&format!("/open/{path}"), &[]).await;
        if (r.status, r.text().trim()) != peer {
            failures.push(format!(
                "/open/{path}: {} {:?}, want {peer:?}",
                r.status,
                r.text()
            ));
        }
        let r = stack.get(&format!("/precise/{path}"), &[]).await;
        if r.status != precise {
            failures.push(format!("/precise/{path}: {}, want {precise}", r.status));
        }
    }
    let r = stack
        .get("/ip/insecure/plain/local:///dir/x.jpg", &[])
        .await;
    if (r.status, r.text().trim()) != (403, "Forbidden") {
        failures.push(format!(
            "unsigned on a keyed route: {} {}",
            r.status,
            r.text()
        ));
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgproxy_urls_are_signed_read_and_refused_as_imgproxy_does() {
    as_imgproxy(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imgproxy_urls_answer_the_same_in_call_mode() {
    as_imgproxy(true).await;
}
