//! End-to-end: output formats through a real Envoy, the filter, the sidecar and Garage.
//!
//! - Where a request asks for "auto" (ImageKit `f-auto`, query `f=auto`, any URL naming no
//!   format on a route with `auto_format`), a client listing `image/webp` gets WebP and any
//!   other client the source's format; every such response says `Vary: Accept`, 304s included.
//!   The two renditions have their own ETags and result-storage objects, so neither ever
//!   answers for the other.
//! - GIF sources render their first frame; GIF is an output format in every grammar; hostile
//!   GIFs are refused from their headers.
//! - AVIF is an output format in every grammar and, on a route with `auto_avif`, auto's first
//!   choice; the JPEG scan mode and `max_bytes` reach the encoder from every grammar that has
//!   them (through the transcoder's enum and field names).
//! - AVIF sources (libaom's, and pixmesh's own renditions stored back as sources) render in
//!   every format, AVIF by default; a damaged one is a 422.

use std::time::{Duration, Instant};

use image::GenericImageView;
use pixmesh_tests::http::Response;
use pixmesh_tests::{Garage, Stack, tools};

const RESULTS_BUCKET: &str = "results";
const RESULTS_DIR: &str = "renditions";

/// What Chrome sends for images.
const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
/// What Safari 13, which cannot show WebP, sent for images.
const OLD_SAFARI: &str = "image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5";

struct World {
    garage: Garage,
    stack: Stack,
}

impl World {
    async fn start() -> World {
        let garage = Garage::start().await;
        garage.create_bucket(RESULTS_BUCKET).await;
        for name in ["medium.jpg", "alpha.png", "flower.webp", "anim.gif"] {
            garage
                .put(garage.default_bucket(), name, tools::test_image(name))
                .await;
        }
        let s3 = |bucket: &str| garage.storage_toml(bucket);
        let sidecar = format!(
            "[storages.photos]\n{}\n[storages.results]\n{}\n\
             [result_storage]\nstorage = \"results\"\nbase_dir = \"{RESULTS_DIR}\"\n",
            s3(garage.default_bucket()),
            s3(RESULTS_BUCKET),
        );
        let filter = serde_json::json!({ "routes": [
            { "prefix": "/auto/", "storage": "photos", "allow_unsafe": true, "auto_format": true },
            { "prefix": "/avif/", "storage": "photos", "allow_unsafe": true, "auto_format": true,
              "auto_avif": true },
            { "prefix": "/t/", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/q/", "grammar": "query", "storage": "photos", "allow_unsafe": true },
        ]});
        let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;
        World { garage, stack }
    }

    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.stack.get(path, headers).await
    }

    async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.garage
            .put(self.garage.default_bucket(), key, bytes)
            .await;
    }

    /// The result-storage keys of renditions of `source`, once `count` of them are there.
    async fn renditions_of(&self, source: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let keys: Vec<String> = self
                .garage
                .list(RESULTS_BUCKET, RESULTS_DIR)
                .await
                .into_iter()
                .filter(|k| k.ends_with(&format!("/{source}")))
                .collect();
            if keys.len() >= count || Instant::now() > deadline {
                return keys;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

fn decode(r: &Response) -> image::DynamicImage {
    assert_eq!(r.status, 200, "body: {}", r.text());
    image::load_from_memory(&r.body)
        .unwrap_or_else(|e| panic!("the body is not an image ({e}): {}", r.text()))
}

/// Asserts a 200 of `content_type`, `dims` and, when `vary`, `Vary: Accept` (else no `Vary`).
fn assert_image(url: &str, r: &Response, content_type: &str, dims: (u32, u32), vary: bool) {
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    assert_eq!(r.header("content-type"), Some(content_type), "{url}");
    assert_eq!(decode(r).dimensions(), dims, "{url}");
    let expected = if vary { vec!["Accept"] } else { vec![] };
    assert_eq!(r.header_all("vary"), expected, "{url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_gives_webp_to_clients_that_list_it_and_the_source_format_to_others() {
    let w = World::start().await;
    for url in [
        "/auto/unsafe/fit-in/320x320/medium.jpg",
        "/ik/tr:w-320,h-320,c-at_max,f-auto/medium.jpg",
        "/q/photos/medium.jpg?w=320&h=320&fit=scale-down&f=auto",
    ] {
        let r = w.get(url, &[("accept", CHROME)]).await;
        assert_image(url, &r, "image/webp", (320, 200), true);
        for other in ["image/jpeg", OLD_SAFARI, "image/webp;q=0,image/*"] {
            let r = w.get(url, &[("accept", other)]).await;
            assert_image(url, &r, "image/jpeg", (320, 200), true);
        }
    }
    let two_lines = [("accept", "image/jpeg"), ("accept", "image/webp")];
    let r = w
        .get("/auto/unsafe/fit-in/320x320/medium.jpg", &two_lines)
        .await;
    assert_image("two Accept lines", &r, "image/webp", (320, 200), true);

    // The source's format, without flattening: PNG stays PNG with its transparency, and a WebP
    // source becomes JPEG (it is opaque) for a client that cannot show WebP.
    let r = w
        .get(
            "/auto/unsafe/fit-in/192x192/alpha.png",
            &[("accept", OLD_SAFARI)],
        )
        .await;
    assert_image("alpha.png", &r, "image/png", (192, 120), true);
    assert!(decode(&r).color().has_alpha());
    let r = w
        .get("/auto/unsafe/flower.webp", &[("accept", OLD_SAFARI)])
        .await;
    assert_image("flower.webp", &r, "image/jpeg", (480, 360), true);

    // A URL that names its format, or a route without auto_format, is not negotiated.
    let named = "/auto/unsafe/fit-in/320x320/filters:format(png)/medium.jpg";
    let r = w.get(named, &[("accept", CHROME)]).await;
    assert_image(named, &r, "image/png", (320, 200), false);
    let plain = "/t/unsafe/fit-in/320x320/medium.jpg";
    let r = w.get(plain, &[("accept", CHROME)]).await;
    assert_image(plain, &r, "image/jpeg", (320, 200), false);
    let orig = "/ik/tr:w-320,h-320,c-at_max,f-orig/flower.webp";
    let r = w.get(orig, &[("accept", OLD_SAFARI)]).await;
    assert_image(orig, &r, "image/webp", (320, 240), false);

    // Errors vary too: a cache must not keep one client's answer for another.
    let r = w
        .get("/auto/unsafe/missing.jpg", &[("accept", CHROME)])
        .await;
    assert_eq!(r.status, 404, "body: {}", r.text());
    assert_eq!(r.header_all("vary"), ["Accept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webp_and_the_jpeg_rendition_never_answer_for_each_other() {
    let w = World::start().await;
    let jpeg = std::fs::read(tools::testdata_images().join("medium.jpg")).unwrap();
    w.put("negotiated.jpg", jpeg).await;
    let url = "/auto/unsafe/fit-in/200x200/negotiated.jpg";
    let as_webp = [("accept", "image/webp,*/*")];
    let as_jpeg = [("accept", "image/jpeg")];
    let webp = w.get(url, &as_webp).await;
    let jpeg = w.get(url, &as_jpeg).await;
    assert_image(url, &webp, "image/webp", (200, 125), true);
    assert_image(url, &jpeg, "image/jpeg", (200, 125), true);
    let (webp_tag, jpeg_tag) = (webp.header("etag").unwrap(), jpeg.header("etag").unwrap());
    assert_ne!(webp_tag, jpeg_tag);

    for (accept, tag, expected) in [
        (as_jpeg[0], webp_tag, 200),
        (as_webp[0], jpeg_tag, 200),
        (as_webp[0], webp_tag, 304),
        (as_jpeg[0], jpeg_tag, 304),
    ] {
        let r = w.get(url, &[accept, ("if-none-match", tag)]).await;
        assert_eq!(r.status, expected, "{accept:?} with If-None-Match {tag}");
        assert_eq!(r.header_all("vary"), ["Accept"], "{accept:?}, {expected}");
        if expected == 200 {
            let same = if accept == as_webp[0] { &webp } else { &jpeg };
            assert_eq!(r.body, same.body, "{accept:?} gets its own rendition");
        } else {
            assert!(r.body.is_empty());
            assert_eq!(r.header("etag"), Some(tag));
        }
    }

    // Both renditions are in result storage, under their own keys, and are served from there.
    let keys = w.renditions_of("negotiated.jpg", 2).await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("format(webp)")), "{keys:?}");
    assert!(
        keys.iter().any(|k| k.contains("format(compatible)")),
        "{keys:?}"
    );
    w.garage
        .s3_client()
        .delete_object()
        .bucket(w.garage.default_bucket())
        .key("negotiated.jpg")
        .send()
        .await
        .unwrap();
    for (accept, first) in [(as_webp, &webp), (as_jpeg, &jpeg)] {
        let again = w.get(url, &accept).await;
        assert_eq!(again.status, 200, "{accept:?}: {}", again.text());
        assert_eq!(again.body, first.body, "{accept:?} from result storage");
        assert_eq!(again.header("content-type"), first.header("content-type"));
        assert_eq!(again.header_all("vary"), ["Accept"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gif_sources_render_their_first_frame() {
    let w = World::start().await;
    let anim = std::fs::read(tools::testdata_images().join("anim.gif")).unwrap();
    let first_frame = image::load_from_memory(&anim).unwrap().to_rgba8();

    let r = w.get("/t/unsafe/anim.gif", &[]).await;
    assert_image("anim.gif", &r, "image/gif", (245, 245), false);
    assert!(
        decode(&r).to_rgba8() == first_frame,
        "the first frame, whose few colours survive GIF encoding exactly"
    );
    let r = w.get("/t/unsafe/filters:format(png)/anim.gif", &[]).await;
    assert_image("anim.gif as PNG", &r, "image/png", (245, 245), false);
    assert!(decode(&r).to_rgba8() == first_frame);
    let r = w.get("/t/unsafe/fit-in/100x100/anim.gif", &[]).await;
    assert_image("anim.gif resized", &r, "image/gif", (100, 100), false);

    // Thousands of frames cost one: the stream is not even read past the first.
    w.put("many-frames.gif", many_frames_then_garbage(10_000))
        .await;
    let r = w
        .get("/t/unsafe/filters:format(png)/many-frames.gif", &[])
        .await;
    assert_image("many-frames.gif", &r, "image/png", (1, 1), false);
    assert_eq!(decode(&r).to_rgba8().get_pixel(0, 0).0, [0, 0, 0, 255]);

    w.put("huge.gif", tiny_gif(65_535, 65_535)).await;
    let r = w.get("/t/unsafe/fit-in/100x100/huge.gif", &[]).await;
    assert_eq!(r.status, 413, "body: {}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grammar_can_ask_for_gif() {
    let w = World::start().await;
    for url in [
        "/t/unsafe/fit-in/160x160/filters:format(gif)/medium.jpg",
        "/ip/insecure/rs:fit:160:160/f:gif/plain/medium.jpg",
        "/ip/insecure/rs:fit:160:160/plain/medium.jpg@gif",
        "/ik/tr:w-160,h-160,c-at_max,f-gif/medium.jpg",
        "/q/photos/medium.jpg?w=160&h=160&fit=scale-down&f=gif",
    ] {
        let r = w.get(url, &[("accept", CHROME)]).await;
        assert_image(url, &r, "image/gif", (160, 100), false);
    }
}

/// Asserts an AVIF response (pixmesh reads no AVIF: the file type box and `Vary` only).
fn assert_avif(url: &str, r: &Response, vary: bool) {
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("image/avif"), "{url}");
    assert_eq!(r.body.get(4..12), Some(&b"ftypavif"[..]), "{url}");
    let expected = if vary { vec!["Accept"] } else { vec![] };
    assert_eq!(r.header_all("vary"), expected, "{url}");
}

/// The start-of-frame marker of a JPEG: 0xC0 baseline, 0xC2 progressive.
fn jpeg_sof(data: &[u8]) -> u8 {
    let mut pos = 2;
    loop {
        assert_eq!(data[pos], 0xFF, "a JPEG marker at {pos}");
        let marker = data[pos + 1];
        if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
            return marker;
        }
        pos += 2 + usize::from(u16::from_be_bytes([data[pos + 2], data[pos + 3]]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avif_progressive_jpeg_and_max_bytes_in_every_grammar_that_has_them() {
    let w = World::start().await;
    for url in [
        "/t/unsafe/fit-in/160x160/filters:format(avif)/medium.jpg",
        "/ip/insecure/rs:fit:160:160/f:avif/plain/medium.jpg",
        "/ip/insecure/rs:fit:160:160/plain/medium.jpg@avif",
        "/ik/tr:w-160,h-160,c-at_max,f-avif/medium.jpg",
        "/q/photos/medium.jpg?w=160&h=160&fit=scale-down&f=avif",
    ] {
        let r = w.get(url, &[("accept", "image/jpeg")]).await;
        assert_avif(url, &r, false);
    }
    // auto_avif: AVIF first, then WebP, then the source's format; all vary on Accept.
    let url = "/avif/unsafe/fit-in/160x160/medium.jpg";
    assert_avif(url, &w.get(url, &[("accept", CHROME)]).await, true);
    let r = w.get(url, &[("accept", "image/avif;q=0,image/webp")]).await;
    assert_image(url, &r, "image/webp", (160, 100), true);
    let r = w.get(url, &[("accept", OLD_SAFARI)]).await;
    assert_image(url, &r, "image/jpeg", (160, 100), true);
    // Without auto_avif, Chrome still gets WebP.
    let url = "/auto/unsafe/fit-in/160x160/medium.jpg";
    let r = w.get(url, &[("accept", CHROME)]).await;
    assert_image(url, &r, "image/webp", (160, 100), true);

    for (url, sof) in [
        ("/t/unsafe/fit-in/320x320/medium.jpg", 0xC0),
        (
            "/t/unsafe/fit-in/320x320/filters:progressive(true)/medium.jpg",
            0xC2,
        ),
        ("/ip/insecure/rs:fit:320:320/jpgo:1/plain/medium.jpg", 0xC2),
        ("/ip/insecure/rs:fit:320:320/jpgo:0/plain/medium.jpg", 0xC0),
        ("/ik/tr:w-320,h-320,c-at_max,pr-true/medium.jpg", 0xC2),
    ] {
        let r = w.get(url, &[]).await;
        assert_image(url, &r, "image/jpeg", (320, 200), false);
        assert_eq!(jpeg_sof(&r.body), sof, "{url}");
    }

    let full = w.get("/t/unsafe/fit-in/320x320/medium.jpg", &[]).await;
    let budget = full.body.len() / 2;
    let mut fitted = Vec::new();
    for url in [
        format!("/t/unsafe/fit-in/320x320/filters:max_bytes({budget})/medium.jpg"),
        format!("/ip/insecure/rs:fit:320:320/mb:{budget}/plain/medium.jpg@jpg"),
    ] {
        let r = w.get(&url, &[]).await;
        assert_image(&url, &r, "image/jpeg", (320, 200), false);
        assert!(r.body.len() <= budget, "{url}: {} bytes", r.body.len());
        fitted.push(r.body);
    }
    assert_eq!(fitted[0], fitted[1], "the same budget gives the same image");
    let r = w
        .get("/ik/tr:w-320,f-avif,q-50/medium.jpg", &[("accept", CHROME)])
        .await;
    assert_avif("f-avif,q-50", &r, false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avif_sources_render_in_every_format() {
    let w = World::start().await;
    let bars = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sidecar/testdata/bars-420.avif"),
    )
    .unwrap();
    w.put("bars.avif", bars.clone()).await;
    // A rendition stored back as a source: pixmesh reads what it writes.
    let own = w
        .get(
            "/t/unsafe/fit-in/320x320/filters:format(avif)/medium.jpg",
            &[],
        )
        .await;
    assert_avif("own", &own, false);
    w.put("own.avif", own.body.clone()).await;

    let r = w.get("/t/unsafe/32x16/bars.avif", &[]).await;
    assert_avif("the source's format", &r, false);
    for (url, content_type) in [
        ("/t/unsafe/32x16/filters:format(png)/bars.avif", "image/png"),
        (
            "/ip/insecure/rs:fill:32:16/plain/bars.avif@jpg",
            "image/jpeg",
        ),
        ("/ik/tr:w-32,h-16,f-webp/bars.avif", "image/webp"),
    ] {
        let r = w.get(url, &[]).await;
        assert_image(url, &r, content_type, (32, 16), false);
        // The first bar is red, the last white.
        let img = decode(&r).to_rgb8();
        let (red, white) = (img.get_pixel(3, 8).0, img.get_pixel(29, 8).0);
        assert!(red[0] > 200 && red[1] < 60 && red[2] < 60, "{url}: {red:?}");
        assert!(white.iter().all(|&c| c > 200), "{url}: {white:?}");
    }
    let url = "/t/unsafe/fit-in/160x160/filters:format(jpeg)/own.avif";
    assert_image(url, &w.get(url, &[]).await, "image/jpeg", (160, 100), false);

    let mut damaged = bars;
    let mdat = damaged.windows(4).position(|w| w == b"mdat").unwrap() + 4;
    damaged[mdat..mdat + 8].fill(0xff);
    w.put("damaged.avif", damaged).await;
    let r = w.get("/t/unsafe/32x16/damaged.avif", &[]).await;
    assert_eq!(r.status, 422, "{}", r.text());
}

/// A GIF of a `width`×`height` screen holding one black 1×1 frame.
fn tiny_gif(width: u16, height: u16) -> Vec<u8> {
    let mut gif = b"GIF89a".to_vec();
    gif.extend_from_slice(&width.to_le_bytes());
    gif.extend_from_slice(&height.to_le_bytes());
    // A global palette of two colours: black, white.
    gif.extend_from_slice(&[0x80, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF]);
    gif.extend_from_slice(&frame_1x1(0));
    gif.push(0x3B);
    gif
}

/// One 1×1 frame of palette index `index` (0 or 1): the image descriptor and its LZW data
/// (clear code, the index, end code, in 3-bit codes).
fn frame_1x1(index: u8) -> Vec<u8> {
    let lzw = [0x44 | (index << 3), 0x01];
    vec![
        0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0, // descriptor: at 0,0, 1×1, no local palette
        2, 2, lzw[0], lzw[1], 0, // minimum code size 2, one 2-byte sub-block, end
    ]
}

/// A 1×1 GIF whose first frame is black, followed by `frames` white frames and then bytes that
/// are no GIF at all.
fn many_frames_then_garbage(frames: usize) -> Vec<u8> {
    let mut gif = tiny_gif(1, 1);
    gif.pop();
    for _ in 0..frames {
        gif.extend_from_slice(&frame_1x1(1));
    }
    gif.extend_from_slice(b"\x2C\x00\x00not a frame");
    gif
}
