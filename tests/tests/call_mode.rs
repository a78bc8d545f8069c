//! End-to-end: the filter's call mode answers exactly as the transcoder mode does. Two stacks
//! with the same configuration, one handing image requests to Envoy's gRPC-JSON transcoder, the
//! other calling the sidecar itself (`"call"`), get the same requests in every grammar:
//! renditions, negotiated formats, HEAD, 304s and errors must come back with the same status,
//! byte-identical bodies and the same headers. And a rendition over call mode's cap is a 413.

use pixmesh_core::router::Router;
use pixmesh_tests::foreign::essentials;
use pixmesh_tests::{Stack, tools};

fn filter_config() -> String {
    serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "samples", "secret": "thumbor-secret",
          "allow_unsafe": true, "canonical_base_url": "https://images.example.com/img" },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "samples",
          "keys": [ { "key": "736563726574", "salt": "68656C6C6F" } ] },
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "samples", "allow_unsafe": true,
          "cache_key_headers": ["X-Device"] },
        { "prefix": "/v1/ex/", "grammar": "query", "storage": "samples", "allow_unsafe": true,
          "auto_format": true },
    ]})
    .to_string()
}

struct World {
    transcoder: Stack,
    call: Stack,
    router: Router,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(call_max_bytes: Option<u64>) -> World {
        let dir = tempfile::tempdir().unwrap();
        for name in ["medium.jpg", "alpha.png", "flower.webp"] {
            std::fs::copy(tools::testdata_images().join(name), dir.path().join(name)).unwrap();
        }
        std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
        let sidecar = format!(
            "[limits]\nmax_output_pixels = 4000000\n\
             [storages.samples]\ntype = \"local\"\nroot = {:?}\n",
            dir.path().display().to_string()
        );
        let mut filter: serde_json::Value = serde_json::from_str(&filter_config()).unwrap();
        let router = Router::from_json(filter.to_string().as_bytes()).unwrap();
        let transcoder = Stack::builder(&filter.to_string(), &sidecar).start().await;
        if let Some(max) = call_max_bytes {
            filter["call"] = serde_json::json!({ "cluster": "pixmesh_sidecar", "max_bytes": max });
        }
        let call = Stack::builder(&filter.to_string(), &sidecar)
            .call_mode()
            .start()
            .await;
        World {
            transcoder,
            call,
            router,
            _dir: dir,
        }
    }

    fn signed(&self, url: &str) -> String {
        self.router
            .sign(url)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_mode_answers_as_the_transcoder_does() {
    let w = World::start(None).await;
    let rendition = w.signed("/img/unsafe/fit-in/300x200/filters:format(webp)/medium.jpg");
    let first = w.transcoder.get(&rendition, &[]).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let etag = first.header("etag").unwrap().to_owned();

    let gets: Vec<(String, Vec<(&str, &str)>)> = vec![
        (rendition.clone(), vec![]),
        (rendition.clone(), vec![("if-none-match", etag.as_str())]),
        ("/img/unsafe/200x200/smart/alpha.png".into(), vec![]),
        (
            w.signed("/ip/insecure/rs:fill:200:200/plain/flower.webp@png"),
            vec![],
        ),
        (
            "/ik/tr:w-300:rt-90/medium.jpg".into(),
            vec![("x-device", "tablet")],
        ),
        (
            "/v1/ex/samples/medium.jpg?w=300".into(),
            vec![("accept", "image/webp,*/*")],
        ),
        (
            "/v1/ex/samples/medium.jpg?w=300".into(),
            vec![("accept", "image/jpeg")],
        ),
        // Errors: from the sidecar (404, 415, 413, 400) and from the filter (403, 501).
        ("/img/unsafe/100x100/missing.jpg".into(), vec![]),
        ("/img/unsafe/100x100/notes.txt".into(), vec![]),
        (
            "/img/unsafe/3000x3000/filters:upscale()/medium.jpg".into(),
            vec![],
        ),
        (
            "/img/unsafe/100x100:200x200/50x50/medium.jpg".into(),
            vec![],
        ),
        (
            "/img/AAAAAAAAAAAAAAAAAAAAAAAAAAA=/100x100/medium.jpg".into(),
            vec![],
        ),
        ("/img/unsafe/meta/100x100/medium.jpg".into(), vec![]),
    ];
    let mut differences = Vec::new();
    for (url, headers) in &gets {
        let t = w.transcoder.get(url, headers).await;
        let c = w.call.get(url, headers).await;
        if essentials(&t) != essentials(&c) {
            differences.push(format!(
                "GET {url} {headers:?}:\n  transcoder {} {:?} {}\n  call       {} {:?} {}",
                t.status,
                essentials(&t).1,
                t.text().chars().take(120).collect::<String>(),
                c.status,
                essentials(&c).1,
                c.text().chars().take(120).collect::<String>()
            ));
        }
    }
    let (t, c) = (
        w.transcoder.head(&rendition).await,
        w.call.head(&rendition).await,
    );
    if essentials(&t) != essentials(&c) {
        differences.push(format!(
            "HEAD {rendition}: {:?} / {:?}",
            essentials(&t).1,
            essentials(&c).1
        ));
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renditions_over_the_call_modes_cap_are_refused() {
    let w = World::start(Some(16 * 1024)).await;
    let small = w.call.get("/img/unsafe/100x100/medium.jpg", &[]).await;
    assert_eq!(small.status, 200, "{}", small.text());
    let large = w
        .call
        .get("/img/unsafe/1500x0/filters:format(png)/medium.jpg", &[])
        .await;
    assert_eq!(large.status, 413, "{}", large.text());
    assert!(large.text().contains("call mode"), "{}", large.text());
    let through_the_transcoder = w
        .transcoder
        .get("/img/unsafe/1500x0/filters:format(png)/medium.jpg", &[])
        .await;
    assert_eq!(through_the_transcoder.status, 200);
}
