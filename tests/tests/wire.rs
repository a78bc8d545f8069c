//! The two encodings of a render request agree: the protobuf the filter's call mode sends
//! (`RenderRequest::to_proto`, hand-written in pixmesh-core for the wasm filter) decodes, with
//! the generated code, into the very request the sidecar reads from the transcoder's query
//! (`RenderRequest::to_query`): every field survives core → protobuf → the sidecar's model.

use pixmesh_core::router::{Decision, Router};
use pixmesh_proto::v1;
use prost::Message;

#[test]
fn the_protobuf_form_carries_every_field() {
    let router = Router::from_json(
        serde_json::json!({ "routes": [
            { "prefix": "/t/", "storage": "photos", "allow_unsafe": true, "base_dir": "o",
              "cache_key_headers": ["X-Device"] },
            { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true,
              "handles": { "bucket": "photos" } },
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let urls = [
        "/t/unsafe/a.jpg",
        "/t/unsafe/fit-in/300x200/10x20:30x40/filters:fill(ff0000)/a.jpg",
        "/t/unsafe/adaptive-full-fit-in/300x200/filters:no_upscale()/a.jpg",
        "/t/unsafe/fit-in/-300x200/left/bottom/filters:format(webp):quality(80):upscale()/d/a b+ü.jpg",
        "/t/unsafe/10x20:110x70/smart/filters:rotate(90):grayscale():blur(4):sharpen(1.5,0.5,true):fill(ff000080):progressive(true):max_bytes(20000):keep_icc()/a.png",
        "/t/unsafe/trim:bottom-right:10/300x0/filters:focal(10x10:20x20):format(avif)/a.jpg",
        "/t/unsafe/fit-in/300x200/filters:proportion(0.5):brightness(10):rgb(1,-2,3):fill(ffd700):rotate(90):grayscale():round_corner(5|9,1,2,3,true):noise(4)/a.jpg",
        "/t/unsafe/300x200/filters:watermark(wm/logo.png,-10,repeat,50,25,0.3):format(gif)/a.gif",
        "/ip/insecure/rs:fill:300:200/g:no/c:100:50/plain/s3://bucket/a.jpg%3Fv1@png",
    ];
    let mut seen = 0;
    for url in urls {
        let headers = [("x-device".to_owned(), "tablet".to_owned())];
        let Decision::Render(r) =
            router.decide_request("GET", url, &headers, std::time::UNIX_EPOCH)
        else {
            panic!("{url}: not rendered");
        };
        let wire = v1::RenderRequest::decode(r.request.to_proto().as_slice())
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let back = pixmesh_sidecar::serving::wire::to_core(wire)
            .unwrap_or_else(|e| panic!("{url}: {}", e.detail()));
        assert_eq!(back, r.request, "{url}");
        seen += 1;
    }
    assert_eq!(seen, urls.len());
}

#[test]
fn the_filter_reads_call_responses_as_the_sidecar_encodes_them() {
    let sent = v1::CallResponse {
        status: 304,
        headers: vec![
            v1::Header {
                name: "etag".into(),
                value: "\"0123\"".into(),
            },
            v1::Header {
                name: "cache-control".into(),
                value: "public, max-age=31536000".into(),
            },
        ],
        body: vec![0xff; 70_000].into(),
    };
    let read = pixmesh_core::call::CallResponse::decode(&sent.encode_to_vec()).unwrap();
    assert_eq!(read.status, 304);
    assert_eq!(
        read.headers,
        [
            ("etag".to_owned(), "\"0123\"".to_owned()),
            (
                "cache-control".to_owned(),
                "public, max-age=31536000".to_owned()
            )
        ]
    );
    assert_eq!(read.body, sent.body);
}
