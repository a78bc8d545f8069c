//! End-to-end: watermarks stored in Garage, through Envoy, the filter and the sidecar. The same
//! watermark asked for in every grammar gives the same pixels, bytes and ETag; a missing one is
//! a 404; its key is part of the ETag.

use pixmesh_tests::http::Response;
use pixmesh_tests::{Garage, Stack, tools};

/// 40×20: the left half opaque red, the right half opaque green.
fn logo() -> Vec<u8> {
    let img = image::RgbaImage::from_fn(40, 20, |x, _| {
        if x < 20 {
            image::Rgba([255, 0, 0, 255])
        } else {
            image::Rgba([0, 255, 0, 255])
        }
    });
    let mut out = Vec::new();
    image::DynamicImage::ImageRgba8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode the logo");
    out
}

struct World {
    stack: Stack,
    _garage: Garage,
}

impl World {
    async fn start() -> World {
        let garage = Garage::start().await;
        let bucket = garage.default_bucket().to_owned();
        garage
            .put(&bucket, "medium.jpg", tools::test_image("medium.jpg"))
            .await;
        garage.put(&bucket, "wm/logo.png", logo()).await;
        garage.put(&bucket, "wm/other.png", logo()).await;
        garage
            .put(&bucket, "wm/not-an-image.png", b"plain text".to_vec())
            .await;
        let sidecar = format!(
            "[storages.photos]\n{}\n[watermark]\nstorage = \"photos\"\nkey = \"wm/logo.png\"\n",
            garage.storage_toml(&bucket)
        );
        let filter = serde_json::json!({ "routes": [
            { "prefix": "/img/", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/q/", "grammar": "query", "storage": "photos", "allow_unsafe": true,
              "handles": { "photos": "photos" } },
        ]});
        let stack = Stack::builder(&filter.to_string(), &sidecar).start().await;
        World {
            stack,
            _garage: garage,
        }
    }

    async fn get(&self, url: &str) -> Response {
        self.stack.get(url, &[]).await
    }
}

fn pixels(url: &str, r: &Response) -> image::RgbaImage {
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    assert_eq!(r.header("content-type"), Some("image/png"), "{url}");
    image::load_from_memory(&r.body)
        .unwrap_or_else(|e| panic!("{url}: not an image: {e}"))
        .to_rgba8()
}

/// Requests every URL and asserts the same bytes and ETag; returns the image and the ETag.
async fn same(w: &World, urls: &[&str]) -> (image::RgbaImage, String) {
    let first = w.get(urls[0]).await;
    let img = pixels(urls[0], &first);
    let etag = first.header("etag").expect("an ETag").to_owned();
    for &url in &urls[1..] {
        let r = w.get(url).await;
        let other = pixels(url, &r);
        assert!(
            other.as_raw() == img.as_raw(),
            "{url} and {} differ",
            urls[0]
        );
        assert!(
            r.body == first.body,
            "{url} and {} differ in bytes",
            urls[0]
        );
        assert_eq!(r.header("etag"), Some(etag.as_str()), "{url}");
    }
    (img, etag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watermarks_from_storage_are_the_same_in_every_grammar() {
    let w = World::start().await;
    let plain_url = "/img/unsafe/fit-in/300x200/filters:format(png)/medium.jpg";
    let plain = pixels(plain_url, &w.get(plain_url).await);
    assert_eq!(plain.dimensions(), (300, 188));

    // The logo at its own size in the bottom-right corner, opaque: every grammar, imgproxy's
    // through the configured default (the same object, so the same canonical request).
    let (corner, corner_tag) = same(
        &w,
        &[
            "/img/unsafe/fit-in/300x200/filters:format(png):watermark(wm/logo.png,-0,-0,0)/medium.jpg",
            "/ip/insecure/rs:fit:300:200/wm:1:soea/plain/medium.jpg@png",
            "/ik/tr:w-300,h-200,c-at_max,f-png,l-image,i-wm@@logo.png,lfo-bottom_right,l-end/medium.jpg",
            "/q/photos/medium.jpg?w=300&h=200&fit=scale-down&f=png&watermark=wm/logo.png&wm_pos=bottom-right",
        ],
    )
    .await;
    assert_eq!(corner.dimensions(), (300, 188));
    assert_eq!(
        corner.get_pixel(299, 187).0,
        [0, 255, 0, 255],
        "the logo's right half"
    );
    assert_eq!(
        corner.get_pixel(260, 168).0,
        [255, 0, 0, 255],
        "its top-left corner"
    );
    assert_eq!(
        corner.get_pixel(259, 167),
        plain.get_pixel(259, 167),
        "outside it"
    );
    assert_eq!(corner.get_pixel(0, 0), plain.get_pixel(0, 0));

    // Half transparent, 10 pixels in from the corner, scaled to a quarter of the image.
    let (scaled, _) = same(
        &w,
        &[
            "/img/unsafe/fit-in/300x200/filters:format(png):watermark(wm/logo.png,-10,-10,50,25,25)/medium.jpg",
            "/ip/insecure/rs:fit:300:200/wm:0.5:soea:10:10:0.25/plain/medium.jpg@png",
            "/q/photos/medium.jpg?w=300&h=200&fit=scale-down&f=png&watermark=wm/logo.png\
             &wm_pos=bottom-right&wm_x=10&wm_y=10&wm_opacity=0.5&wm_scale=0.25",
        ],
    )
    .await;
    // 75×38 (a quarter of 300 wide), its bottom-right corner at (289, 177): half red.
    let blended = scaled.get_pixel(216, 141).0;
    let under = plain.get_pixel(216, 141).0;
    for c in 0..3 {
        let expect = (u16::from([255u8, 0, 0][c]) + u16::from(under[c])) / 2;
        assert!(
            u16::from(blended[c]).abs_diff(expect) <= 2,
            "{blended:?} is half red over {under:?}"
        );
    }
    assert_eq!(
        scaled.get_pixel(213, 139),
        plain.get_pixel(213, 139),
        "left of it"
    );

    // Tiled over the whole image.
    let (tiled, _) = same(
        &w,
        &[
            "/img/unsafe/fit-in/300x200/filters:format(png):watermark(wm/logo.png,repeat,repeat,0)/medium.jpg",
            "/ip/insecure/rs:fit:300:200/wm:1:re/plain/medium.jpg@png",
            "/q/photos/medium.jpg?w=300&h=200&fit=scale-down&f=png&watermark=wm/logo.png&wm_pos=repeat",
        ],
    )
    .await;
    for (x, y) in [(0, 0), (25, 5), (45, 25), (265, 180), (299, 187)] {
        let want = if x % 40 < 20 {
            [255, 0, 0, 255]
        } else {
            [0, 255, 0, 255]
        };
        assert_eq!(tiled.get_pixel(x, y).0, want, "({x}, {y})");
    }

    // The watermark's key is part of the ETag, and of the result: another object, another
    // ETag (even with the same pixels); no watermark, another one again.
    let other_url =
        "/img/unsafe/fit-in/300x200/filters:format(png):watermark(wm/other.png,-0,-0,0)/medium.jpg";
    let other = w.get(other_url).await;
    assert_eq!(pixels(other_url, &other).as_raw(), corner.as_raw());
    let other_tag = other.header("etag").expect("an ETag");
    // imgproxy names another image than its default with `wmu` (base64url of wm/other.png).
    let ip_other =
        "/ip/insecure/rs:fit:300:200/wm:1:soea/wmu:d20vb3RoZXIucG5n/plain/medium.jpg@png";
    assert_eq!(w.get(ip_other).await.header("etag"), Some(other_tag));
    let plain_tag = w.get(plain_url).await.header("etag").map(str::to_owned);
    assert_ne!(other_tag, corner_tag);
    assert_ne!(plain_tag.as_deref(), Some(corner_tag.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_broken_watermarks_are_refused_with_their_status() {
    let w = World::start().await;
    for (url, status) in [
        (
            "/img/unsafe/filters:watermark(wm/none.png,0,0,0)/medium.jpg",
            404,
        ),
        ("/ik/tr:w-100,l-image,i-wm@@none.png,l-end/medium.jpg", 404),
        ("/q/photos/medium.jpg?w=100&watermark=wm/none.png", 404),
        (
            "/img/unsafe/filters:watermark(wm/not-an-image.png,0,0,0)/medium.jpg",
            422,
        ),
        (
            "/img/unsafe/filters:watermark(..%2Fx.png,0,0,0)/medium.jpg",
            400,
        ),
        (
            "/img/unsafe/filters:watermark(https://x.example/l.png,0,0,0)/medium.jpg",
            501,
        ),
        (
            "/ip/insecure/wm:1/wmu:aHR0cHM6Ly94LmV4YW1wbGUvbC5wbmc/plain/medium.jpg",
            501,
        ),
        (
            "/ip/insecure/wm:1/wmu:d20vbm9uZS5wbmc/plain/medium.jpg",
            404,
        ),
    ] {
        let r = w.get(url).await;
        assert_eq!(r.status, status, "{url}: {}", r.text());
        assert_eq!(
            r.header("x-http-status"),
            None,
            "{url}: leaked internal status"
        );
    }
}
