//! End-to-end: one image requested through Envoy in all four URL grammars (thumbor/imagor,
//! imgproxy, ImageKit, query style), each on its own signed route, must come back
//! pixel-identical; and every grammar answers the same statuses for unsigned, unsupported and
//! expired URLs. Trim, smart crop and keeping the ICC profile are checked the same way on
//! synthetic images written next to the photo.
//!
//! Every request goes through both of the filter's modes (the transcoder, and call mode) and
//! must get the same status, body bytes and headers from each.
//!
//! The sources are a local directory served by the sidecar's `local` storage, so this suite needs
//! only Envoy and the filter's `.wasm`.

use image::GenericImageView;
use pixmesh_core::router::Router;
use pixmesh_tests::foreign::essentials;
use pixmesh_tests::http::Response;
use pixmesh_tests::{Stack, tools};

const IMAGE: &str = "photos/medium.jpg";

/// The filter config: one strictly signed route per grammar, all on storage `samples`.
fn filter_config() -> String {
    serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "samples", "secret": "thumbor-secret" },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "samples",
          "keys": [ { "key": "736563726574", "salt": "68656C6C6F" } ], "statuses": "pixmesh" },
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "samples",
          "secret": "imagekit-private-key" },
        { "prefix": "/v1/ex/", "grammar": "query", "storage": "samples", "secret": "query-secret",
          "handles": { "my-s3-bucket": "samples" } },
    ]})
    .to_string()
}

/// The same configuration behind both of the filter's modes: every request goes through both
/// and must get the same answer (status, body bytes, headers), so each test here holds for the
/// transcoder and for call mode.
struct World {
    stack: Stack,
    call: Stack,
    router: Router,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("photos")).expect("mkdir");
        std::fs::copy(
            tools::testdata_images().join("medium.jpg"),
            dir.path().join(IMAGE),
        )
        .expect("copy the test image");
        let sidecar = format!(
            "[storages.samples]\ntype = \"local\"\nroot = {:?}\n",
            dir.path().display().to_string()
        );
        let filter = filter_config();
        let stack = Stack::builder(&filter, &sidecar).start().await;
        let call = Stack::builder(&filter, &sidecar).call_mode().start().await;
        let router = Router::from_json(filter.as_bytes()).expect("filter config");
        World {
            stack,
            call,
            router,
            _dir: dir,
        }
    }

    /// GETs `path` in both modes; the answers must agree.
    async fn get(&self, path: &str) -> Response {
        let r = self.stack.get(path, &[]).await;
        let called = self.call.get(path, &[]).await;
        assert!(
            essentials(&called) == essentials(&r),
            "{path}: call mode answered {} {:?}, the transcoder {} {:?}",
            called.status,
            essentials(&called).1,
            r.status,
            essentials(&r).1
        );
        r
    }

    /// GETs the signed form of an unsigned URL in both modes.
    async fn get_signed(&self, unsigned: &str) -> Response {
        let signed = self
            .router
            .sign(unsigned)
            .unwrap_or_else(|e| panic!("{unsigned}: {e}"));
        self.get(&signed).await
    }
}

fn decode(url: &str, r: &Response) -> image::DynamicImage {
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    image::load_from_memory(&r.body)
        .unwrap_or_else(|e| panic!("{url}: the body is not an image: {e}"))
}

/// Requests each URL (signed) and asserts the outputs are the same image, pixel for pixel and
/// byte for byte; returns it.
async fn same_pixels(w: &World, content_type: &str, urls: &[&str]) -> image::RgbaImage {
    let mut first: Option<(String, Response, image::RgbaImage)> = None;
    for &url in urls {
        let r = w.get_signed(url).await;
        let pixels = decode(url, &r).to_rgba8();
        assert_eq!(r.header("content-type"), Some(content_type), "{url}");
        match &first {
            None => first = Some((url.to_owned(), r, pixels)),
            Some((first_url, first_r, first_pixels)) => {
                assert_eq!(
                    pixels.dimensions(),
                    first_pixels.dimensions(),
                    "{url} vs {first_url}"
                );
                assert!(
                    pixels.as_raw() == first_pixels.as_raw(),
                    "{url} and {first_url} differ in pixels"
                );
                assert!(
                    r.body == first_r.body,
                    "{url} and {first_url} differ in bytes"
                );
                assert_eq!(r.header("etag"), first_r.header("etag"), "{url}");
            }
        }
    }
    first.expect("at least one URL").2
}

/// [`same_pixels`], returning the dimensions.
async fn same_image(w: &World, content_type: &str, urls: &[&str]) -> (u32, u32) {
    same_pixels(w, content_type, urls).await.dimensions()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_in_every_grammar_gives_the_same_pixels() {
    let w = World::start().await;
    let source = image::open(tools::testdata_images().join("medium.jpg"))
        .expect("test image")
        .dimensions();

    // Fit inside 300×200 without enlarging, as PNG.
    let dims = same_image(
        &w,
        "image/png",
        &[
            "/img/unsafe/fit-in/300x200/filters:format(png)/photos/medium.jpg",
            "/ip/insecure/rs:fit:300:200/plain/photos/medium.jpg@png",
            "/ik/tr:w-300,h-200,c-at_max,f-png/photos/medium.jpg",
            "/v1/ex/samples/photos/medium.jpg?w=300&h=200&fit=scale-down&f=png",
        ],
    )
    .await;
    assert!(dims.0 <= 300 && dims.1 <= 200 && (dims.0 == 300 || dims.1 == 200));
    assert!(
        (f64::from(dims.0) / f64::from(dims.1) - f64::from(source.0) / f64::from(source.1)).abs()
            < 0.02,
        "{dims:?} keeps the aspect ratio of {source:?}"
    );

    // Fill 200×200 anchored top-left, enlarging allowed, WebP quality 70; DPR folded in.
    let dims = same_image(
        &w,
        "image/webp",
        &[
            "/img/unsafe/200x200/left/top/filters:format(webp):quality(70):upscale()/photos/medium.jpg",
            "/ip/insecure/rs:fill:100:100:1/dpr:2/g:nowe/q:70/plain/photos/medium.jpg@webp",
            "/ik/photos/medium.jpg?tr=w-200,h-200,fo-top_left,f-webp,q-70",
            "/v1/ex/my-s3-bucket/photos/medium.jpg?w=200&h=200&fit=crop&gravity=top-left&f=webp&q=70",
        ],
    )
    .await;
    assert_eq!(dims, (200, 200));
}

/// The source fitted into 300×200 (it is 2560×1600): 300×188.
const FITTED: (u32, u32) = (300, 188);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn effects_and_padding_are_the_same_in_every_grammar_that_has_them() {
    let w = World::start().await;

    // Rotation, 90° clockwise, of the image fitted into 300×200. thumbor turns
    // counter-clockwise; imgproxy's box is that of the rotated image. The query grammar has no
    // rotation.
    let dims = same_image(
        &w,
        "image/png",
        &[
            "/img/unsafe/fit-in/300x200/filters:rotate(270):format(png)/photos/medium.jpg",
            "/ip/insecure/rs:fit:200:300/rot:90/plain/photos/medium.jpg@png",
            "/ik/tr:w-300,h-200,c-at_max,rt-90,f-png/photos/medium.jpg",
        ],
    )
    .await;
    assert_eq!(dims, (FITTED.1, FITTED.0));

    // Grayscale (imgproxy: saturation 0). The query grammar has none.
    let gray = same_pixels(
        &w,
        "image/png",
        &[
            "/img/unsafe/fit-in/300x200/filters:grayscale():format(png)/photos/medium.jpg",
            "/ip/insecure/rs:fit:300:200/sa:0/plain/photos/medium.jpg@png",
            "/ik/tr:w-300,h-200,c-at_max,e-grayscale,f-png/photos/medium.jpg",
        ],
    )
    .await;
    assert_eq!(gray.dimensions(), FITTED);
    assert!(gray.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));

    // Gaussian blur of sigma 2.5: a radius of 5 in thumbor and ImageKit.
    let dims = same_image(
        &w,
        "image/png",
        &[
            "/img/unsafe/fit-in/300x200/filters:blur(5):format(png)/photos/medium.jpg",
            "/ip/insecure/rs:fit:300:200/bl:2.5/plain/photos/medium.jpg@png",
            "/ik/tr:w-300,h-200,c-at_max,bl-5,f-png/photos/medium.jpg",
            "/v1/ex/samples/photos/medium.jpg?w=300&h=200&fit=scale-down&blur=2.5&f=png",
        ],
    )
    .await;
    assert_eq!(dims, FITTED);

    // Unsharp mask of sigma 1, strength 1, as WebP.
    let dims = same_image(
        &w,
        "image/webp",
        &[
            "/img/unsafe/fit-in/300x200/filters:sharpen(1,1,true):format(webp)/photos/medium.jpg",
            "/ip/insecure/rs:fit:300:200/sh:1/plain/photos/medium.jpg@webp",
            "/ik/tr:w-300,h-200,c-at_max,e-sharpen,f-webp/photos/medium.jpg",
            "/v1/ex/samples/photos/medium.jpg?w=300&h=200&fit=scale-down&sharpen=1&f=webp",
        ],
    )
    .await;
    assert_eq!(dims, FITTED);

    // Letterboxed into 300×300 on red, enlarging: fit-in + fill, rt:fit + extend, pad_resize,
    // fit=contain.
    let boxed = same_pixels(
        &w,
        "image/png",
        &[
            "/img/unsafe/fit-in/300x300/filters:upscale():fill(ff0000):format(png)/photos/medium.jpg",
            "/ip/insecure/rs:fit:300:300:1:1/bg:ff0000/plain/photos/medium.jpg@png",
            "/ik/tr:w-300,h-300,cm-pad_resize,bg-FF0000,f-png/photos/medium.jpg",
            "/v1/ex/samples/photos/medium.jpg?w=300&h=300&fit=contain&bg=ff0000&f=png",
        ],
    )
    .await;
    assert_eq!(boxed.dimensions(), (300, 300));
    assert_eq!(boxed.get_pixel(150, 0).0, [255, 0, 0, 255], "padding above");
    assert_eq!(
        boxed.get_pixel(150, 299).0,
        [255, 0, 0, 255],
        "padding below"
    );

    // The same, the image at the top, as JPEG.
    let top = same_pixels(
        &w,
        "image/jpeg",
        &[
            "/img/unsafe/fit-in/300x300/top/filters:upscale():fill(red):format(jpeg)/photos/medium.jpg",
            "/ip/insecure/rs:fit:300:300:1/ex:1:no/bg:255:0:0/plain/photos/medium.jpg@jpg",
            "/ik/tr:w-300,h-300,cm-pad_resize,bg-FF0000,fo-top,f-jpg/photos/medium.jpg",
            "/v1/ex/samples/photos/medium.jpg?w=300&h=300&fit=contain&gravity=top&bg=red&f=jpg",
        ],
    )
    .await;
    assert_eq!(top.dimensions(), (300, 300));
    let below = top.get_pixel(150, 290).0;
    assert!(
        below[0] > 240 && below[1] < 16 && below[2] < 16,
        "{below:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grammar_refuses_unsigned_unsupported_and_expired_urls() {
    let w = World::start().await;
    for unsigned in [
        "/img/unsafe/fit-in/300x200/photos/medium.jpg",
        "/ip/insecure/rs:fit:300:200/plain/photos/medium.jpg",
        "/ik/tr:w-300,h-200/photos/medium.jpg",
        "/v1/ex/samples/photos/medium.jpg?w=300",
    ] {
        let r = w.get(unsigned).await;
        assert_eq!(r.status, 403, "{unsigned}: {}", r.text());
        assert!(
            r.text().contains("unsigned URLs are not allowed"),
            "{unsigned}"
        );
    }
    for (unsupported, named) in [
        (
            "/img/unsafe/filters:equalize()/photos/medium.jpg",
            "filter equalize",
        ),
        ("/ip/insecure/pix:5/plain/photos/medium.jpg", "pixelate"),
        ("/ik/tr:e-contrast/photos/medium.jpg", "e-contrast"),
        (
            "/v1/ex/samples/photos/medium.jpg?gravity=face",
            "gravity=face",
        ),
    ] {
        let r = w.get_signed(unsupported).await;
        assert_eq!(r.status, 501, "{unsupported}: {}", r.text());
        assert!(r.text().contains(named), "{unsupported}: {}", r.text());
    }
    for expired in [
        "/img/unsafe/filters:expire(1000)/photos/medium.jpg",
        "/ip/insecure/exp:1/plain/photos/medium.jpg",
        "/ik/photos/medium.jpg?ik-t=1",
        "/v1/ex/samples/photos/medium.jpg?exp=1",
    ] {
        let r = w.get_signed(expired).await;
        assert_eq!(r.status, 410, "{expired}: {}", r.text());
    }
    let r = w.get_signed("/v1/ex/elsewhere/photos/medium.jpg").await;
    assert_eq!(r.status, 404, "unknown storage handle: {}", r.text());
}

/// Mean absolute difference of two same-sized images, per channel value.
fn mean_difference(a: &image::RgbaImage, b: &image::RgbaImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let diff: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    diff as f64 / a.as_raw().len() as f64
}

/// GETs each URL (signed) and asserts they are the same image pixel for pixel, whatever their
/// canonical forms (and so ETags); returns it.
async fn same_pixels_any_form(w: &World, urls: &[&str]) -> image::RgbaImage {
    let mut first: Option<(&str, image::RgbaImage)> = None;
    for &url in urls {
        let pixels = decode(url, &w.get_signed(url).await).to_rgba8();
        match &first {
            None => first = Some((url, pixels)),
            Some((first_url, first_pixels)) => assert!(
                pixels.dimensions() == first_pixels.dimensions()
                    && pixels.as_raw() == first_pixels.as_raw(),
                "{url} and {first_url} differ"
            ),
        }
    }
    first.expect("at least one URL").1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_crops_are_the_same_in_every_grammar_that_has_them() {
    let w = World::start().await;
    let source = image::open(tools::testdata_images().join("medium.jpg"))
        .expect("test image")
        .to_rgba8();
    assert_eq!(source.dimensions(), (2560, 1600));

    // The bottom-right 640×400 at its own size: by its corners (thumbor, in pixels and in
    // ratios) and by x/y (ImageKit), which are one transform…
    let by_offset = same_pixels(
        &w,
        "image/png",
        &[
            "/img/unsafe/1920x1200:2560x1600/filters:upscale():format(png)/photos/medium.jpg",
            "/ik/tr:w-640,h-400,cm-extract,x-1920,y-1200,f-png/photos/medium.jpg",
        ],
    )
    .await;
    assert_eq!(by_offset.dimensions(), (640, 400));
    same_pixels(
        &w,
        "image/png",
        &[
            "/img/unsafe/0.75x0.75:1x1/filters:upscale():format(png)/photos/medium.jpg",
            "/ik/tr:w-0.25,h-0.25,cm-extract,x-0.75,y-0.75,f-png/photos/medium.jpg",
        ],
    )
    .await;
    // …and by gravity (imgproxy, ImageKit `fo`), other transforms (imgproxy fits and never
    // enlarges by default, ImageKit enlarges) with the same pixels.
    let by_gravity = same_pixels_any_form(
        &w,
        &[
            "/ip/insecure/c:640:400:soea/plain/photos/medium.jpg@png",
            "/ik/tr:w-640,h-400,cm-extract,fo-bottom_right,f-png/photos/medium.jpg",
        ],
    )
    .await;
    assert!(by_gravity.as_raw() == by_offset.as_raw());
    let expected = image::imageops::crop_imm(&source, 1920, 1200, 640, 400).to_image();
    assert!(
        mean_difference(&by_offset, &expected) < 2.0,
        "the crop is that region of the source"
    );

    // Cropped, then fitted into 320×200: the top-left quarter, scaled down 4×.
    let fitted = same_pixels_any_form(
        &w,
        &[
            "/img/unsafe/0x0:1280x800/fit-in/320x200/filters:format(png)/photos/medium.jpg",
            "/ip/insecure/c:1280:800:nowe/rs:fit:320:200/plain/photos/medium.jpg@png",
        ],
    )
    .await;
    assert_eq!(fitted.dimensions(), (320, 200));
    let quarter = image::imageops::crop_imm(&source, 0, 0, 1280, 800).to_image();
    let expected =
        image::imageops::resize(&quarter, 320, 200, image::imageops::FilterType::Lanczos3);
    assert!(
        mean_difference(&fitted, &expected) < 4.0,
        "the fit is of the top-left quarter"
    );
    // Filled into a square from a crop: the fill crop stays inside the region.
    let square = same_pixels_any_form(
        &w,
        &[
            "/img/unsafe/0x0:1280x800/100x100/filters:format(png)/photos/medium.jpg",
            "/ip/insecure/c:0.5:0.5:nowe/rs:fill:100:100/plain/photos/medium.jpg@png",
        ],
    )
    .await;
    assert_eq!(square.dimensions(), (100, 100));

    // A region wholly outside the image leaves nothing: 400.
    for outside in [
        "/img/unsafe/3000x0:3100x10/photos/medium.jpg",
        "/ik/tr:w-10,h-10,cm-extract,x-5000,y-0/photos/medium.jpg",
    ] {
        let r = w.get_signed(outside).await;
        assert_eq!(r.status, 400, "{outside}: {}", r.text());
        assert!(
            r.text().contains("crop region lies outside"),
            "{}",
            r.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn focal_points_are_the_same_in_every_grammar_that_has_them() {
    let w = World::start().await;
    // A 400×100 strip from the 2560×1600 source, centred on x = 0.25 (640 px) as far as the
    // image allows: the fill crop is 2560×640, so only the vertical place moves, to 0.8.
    let focused = same_pixels(
        &w,
        "image/png",
        &[
            "/img/unsafe/400x100/filters:focal(0.25x0.8:0.25x0.8):format(png):upscale()/photos/medium.jpg",
            "/ip/insecure/rs:fill:400:100:1/g:fp:0.25:0.8/plain/photos/medium.jpg@png",
            "/v1/ex/samples/photos/medium.jpg?w=400&h=100&fit=crop&gravity=0.25x0.8&f=png",
        ],
    )
    .await;
    assert_eq!(focused.dimensions(), (400, 100));
    // 0.8 × 1600 = 1280 is the centre: the strip spans 960–1600, as anchored at the bottom.
    let bottom = same_pixels_any_form(
        &w,
        &["/img/unsafe/400x100/bottom/filters:format(png)/photos/medium.jpg"],
    )
    .await;
    assert!(
        focused.as_raw() == bottom.as_raw(),
        "clamped at the bottom edge"
    );
    let centred = same_pixels_any_form(
        &w,
        &["/img/unsafe/400x100/filters:format(png)/photos/medium.jpg"],
    )
    .await;
    assert!(focused.as_raw() != centred.as_raw());
}

/// Writes `bytes` as `photos/NAME` in the world's storage directory.
fn put(w: &World, name: &str, bytes: &[u8]) {
    std::fs::write(w._dir.path().join("photos").join(name), bytes).expect("write a test image");
}

fn png_bytes(img: image::DynamicImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encode a PNG");
    out
}

/// The share of strongly coloured pixels.
fn colourful(img: &image::RgbaImage) -> f64 {
    let coloured = img
        .pixels()
        .filter(|p| {
            let c = &p.0[..3];
            c.iter().max().unwrap_or(&0) - c.iter().min().unwrap_or(&0) > 100
        })
        .count();
    coloured as f64 / f64::from(img.width() * img.height())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_and_smart_crop_are_the_same_in_every_grammar() {
    let w = World::start().await;
    // 600×300: a 50-pixel white border around flat grey, with a saturated red/blue
    // checkerboard in the right 150 pixels of the inside.
    let framed = image::RgbImage::from_fn(600, 300, |x, y| {
        let inside = (50..550).contains(&x) && (50..250).contains(&y);
        image::Rgb(match (inside, x >= 400, (x / 4 + y / 4) % 2 == 0) {
            (false, _, _) => [255, 255, 255],
            (true, false, _) => [128, 128, 128],
            (true, true, true) => [230, 20, 20],
            (true, true, false) => [20, 20, 230],
        })
    });
    put(
        &w,
        "framed.png",
        &png_bytes(image::DynamicImage::ImageRgb8(framed)),
    );

    // Trimmed alone: the 500×200 inside.
    let trimmed = same_pixels(
        &w,
        "image/png",
        &[
            "/img/unsafe/trim:10/filters:upscale()/photos/framed.png",
            "/ip/insecure/t:10/rs:fill:0:0:1/plain/photos/framed.png",
            "/ik/tr:t-10/photos/framed.png",
            "/v1/ex/samples/photos/framed.png?trim=10",
        ],
    )
    .await;
    assert_eq!(trimmed.dimensions(), (500, 200));
    assert_eq!(trimmed.get_pixel(0, 0).0, [128, 128, 128, 255]);

    // Trimmed, then filled into 200×200 by smart crop: the crop lands on the checkerboard.
    let smart = same_pixels(
        &w,
        "image/png",
        &[
            "/img/unsafe/trim:10/200x200/smart/filters:upscale():format(png)/photos/framed.png",
            "/ip/insecure/t:10/rs:fill:200:200:1/g:sm/plain/photos/framed.png@png",
            "/ik/tr:w-200,h-200,t-10,fo-auto,f-png/photos/framed.png",
            "/v1/ex/samples/photos/framed.png?w=200&h=200&fit=crop&gravity=smart&trim=10&f=png",
        ],
    )
    .await;
    assert_eq!(smart.dimensions(), (200, 200));
    assert!(colourful(&smart) > 0.7, "smart: {}", colourful(&smart));
    let centred = same_pixels_any_form(
        &w,
        &["/img/unsafe/trim:10/200x200/filters:upscale():format(png)/photos/framed.png"],
    )
    .await;
    assert!(
        colourful(&centred) < 0.1,
        "centred: {}",
        colourful(&centred)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_icc_profile_is_the_same_in_every_grammar_that_has_it() {
    use image::{ImageDecoder, ImageEncoder};
    let w = World::start().await;
    // sRGB red in Display P3 values, tagged Display P3.
    let p3 = moxcms::ColorProfile::new_display_p3()
        .encode()
        .expect("a P3 profile");
    let img = image::RgbImage::from_pixel(64, 64, image::Rgb([234, 51, 35]));
    let mut png = Vec::new();
    let mut encoder = image::codecs::png::PngEncoder::new(&mut png);
    encoder.set_icc_profile(p3.clone()).expect("iCCP");
    encoder
        .write_image(img.as_raw(), 64, 64, image::ExtendedColorType::Rgb8)
        .expect("encode");
    put(&w, "p3.png", &png);

    let profile = |bytes: &[u8], format: &str| {
        let cursor = std::io::Cursor::new(bytes);
        match format {
            "png" => image::codecs::png::PngDecoder::new(cursor).and_then(|mut d| d.icc_profile()),
            "jpeg" => {
                image::codecs::jpeg::JpegDecoder::new(cursor).and_then(|mut d| d.icc_profile())
            }
            _ => image::codecs::webp::WebPDecoder::new(cursor).and_then(|mut d| d.icc_profile()),
        }
        .expect("a readable output")
    };
    for format in ["png", "jpeg", "webp"] {
        let ext = if format == "jpeg" { "jpg" } else { format };
        let thumbor =
            format!("/img/unsafe/fit-in/32x32/filters:format({format}):keep_icc()/photos/p3.png");
        let imgproxy = format!("/ip/insecure/rs:fit:32:32/scp:0/plain/photos/p3.png@{ext}");
        let kept = same_pixels(&w, &format!("image/{format}"), &[&thumbor, &imgproxy]).await;
        assert_eq!(kept.dimensions(), (32, 32));
        let r = w.get_signed(&thumbor).await;
        assert_eq!(profile(&r.body, format), Some(p3.clone()), "{format}");
        let px = kept.get_pixel(16, 16).0;
        assert!(
            px[0].abs_diff(234) <= 6 && px[1].abs_diff(51) <= 6,
            "unconverted: {px:?}"
        );
        // By default: converted to sRGB, no profile.
        let plain = format!("/img/unsafe/fit-in/32x32/filters:format({format})/photos/p3.png");
        let r = w.get_signed(&plain).await;
        assert_eq!(r.status, 200, "{plain}");
        assert_eq!(profile(&r.body, format), None, "{plain}");
    }
    // AVIF cannot carry it: 501, naming it, never the image without its profile.
    for url in [
        "/img/unsafe/fit-in/32x32/filters:format(avif):keep_icc()/photos/p3.png",
        "/ip/insecure/rs:fit:32:32/scp:0/plain/photos/p3.png@avif",
    ] {
        let r = w.get_signed(url).await;
        assert_eq!(r.status, 501, "{url}: {}", r.text());
        assert!(r.text().contains("avif"), "{url}: {}", r.text());
    }
}
