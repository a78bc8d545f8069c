//! End-to-end: the peers' sizing modes, as their own test suites and documentation state them,
//! through Envoy in both modes (the transcoder and call mode). The source is a 2560×1600 photo
//! (`medium.jpg`), and a 1600×2560 one turned a quarter (`portrait.jpg`) for the adaptive modes.
//! thumbor's filters, in URL order, on a flat grey PNG made here, pixel for pixel.

use pixmesh_tests::{Stack, tools};

/// (path, width, height): what thumbor and imagor answer for each URL (thumbor's
/// `transformer.py`: fill enlarges unless `no_upscale()`, `full-fit-in` covers the box and
/// enlarges, `adaptive-` turns a box whose orientation differs from the source's).
const CASES: &[(&str, u32, u32)] = &[
    // Fill enlarges a small region to the box (was 190×127: never enlarged).
    ("/img/unsafe/10x10:200x200/300x200/a.jpg", 300, 200),
    ("/img/unsafe/4000x0/a.jpg", 4000, 2500),
    (
        "/img/unsafe/10x10:200x200/300x200/filters:no_upscale()/a.jpg",
        190,
        127,
    ),
    // fit-in never enlarges unless asked.
    ("/img/unsafe/fit-in/4000x4000/a.jpg", 2560, 1600),
    (
        "/img/unsafe/fit-in/4000x4000/filters:upscale()/a.jpg",
        4000,
        2500,
    ),
    // full-fit-in: each side at least the box's, nothing cropped.
    ("/img/unsafe/full-fit-in/300x300/a.jpg", 480, 300),
    ("/img/unsafe/full-fit-in/2000x2000/a.jpg", 3200, 2000),
    // adaptive: the portrait box turns for the landscape source, not for the portrait one.
    ("/img/unsafe/adaptive-fit-in/200x400/a.jpg", 320, 200),
    ("/img/unsafe/adaptive-fit-in/200x400/portrait.jpg", 200, 320),
    ("/img/unsafe/adaptive-full-fit-in/200x400/a.jpg", 400, 250),
    // imagor's padding GxH:IxJ: canvas around the box `fill` pads to.
    (
        "/img/unsafe/fit-in/300x200/10x10:20x30/filters:fill(ff0000)/a.jpg",
        330,
        240,
    ),
    // ImageKit's c-at_least: the same cover.
    ("/ik/tr:w-300,h-300,c-at_least/a.jpg", 480, 300),
    // imgproxy's rt:auto (what its Python client writes by default): fill when the box and
    // the source have the same orientation, else fit.
    ("/ip/insecure/rs:auto:300:200/plain/a.jpg", 300, 200),
    ("/ip/insecure/rs:auto:200:300/plain/a.jpg", 200, 125),
    ("/ip/insecure/rs:auto:200:300/plain/portrait.jpg", 200, 300),
    // imgproxy's fill without el:1 on a source that cannot cover the box: the source's scale,
    // cropped to the box clamped to the image (`processing/prepare.go`: `calcScale` undoes a
    // shrink below 1, `calcSizes` keeps the box as the result crop; `cropImage` in
    // `processing/crop.go` clamps it). fill-down crops to the box's aspect ratio instead
    // (`calcSizes`' ResizeFillDown branch); enlarged, both fill the box.
    ("/ip/insecure/rs:fill:2000:2000/plain/a.jpg", 2000, 1600),
    ("/ip/insecure/rs:fill:4000:1000/plain/a.jpg", 2560, 1000),
    ("/ip/insecure/rs:fill:3000:2000/plain/a.jpg", 2560, 1600),
    ("/ip/insecure/rs:auto:4000:3000/plain/a.jpg", 2560, 1600),
    (
        "/ip/insecure/rs:fill-down:2000:2000/plain/a.jpg",
        1600,
        1600,
    ),
    ("/ip/insecure/rs:fill:2000:2000:1/plain/a.jpg", 2000, 2000),
    // With a dpr, short of enlarging, `calcScale` lowers the dpr until the source covers the
    // box: 1500×1000 at dpr 2 on 2560×1600 is the box at dpr 1.6, 2400×1600.
    (
        "/ip/insecure/rs:fill:1500:1000/dpr:2/plain/a.jpg",
        2400,
        1600,
    ),
    // A zoom multiplies the target size but is never lowered: 1000×1000 at zoom 2 is fill
    // 2000×2000, the source kept at its scale and cut to the box clamped.
    ("/ip/insecure/rs:fill:1000:1000/z:2/plain/a.jpg", 2000, 1600),
    // `rt:auto` with a dpr: the same choice as without it, then the fill as `fill`'s with a
    // dpr (2400×1600, above) or the fit of the scaled box (2000×3000 fits 2560×1600 as
    // 2000×1250).
    (
        "/ip/insecure/rs:auto:1500:1000/dpr:2/plain/a.jpg",
        2400,
        1600,
    ),
    (
        "/ip/insecure/rs:auto:1000:1500/dpr:2/plain/a.jpg",
        2000,
        1250,
    ),
    ("/ip/insecure/rs:fit:150:100/zoom:2/plain/a.jpg", 300, 188),
    // imgproxy's pd: around the image after resize, crop and extend
    // (`processing/padding.go`, after `extend` in `processing/processing.go`), top right
    // bottom left, CSS-like (`applyPaddingOption` in `options/parser/apply.go`), times the
    // dpr (`imath.ScaleToEven`), on the rotated image.
    (
        "/ip/insecure/rs:fit:300:200/ex:1/pd:10:20/plain/a.jpg",
        340,
        220,
    ),
    (
        "/ip/insecure/rs:fill:300:200:1/pd:1:2:3:4/plain/a.jpg",
        306,
        204,
    ),
    (
        "/ip/insecure/rs:fill:150:100:1/dpr:2/pd:5/plain/a.jpg",
        320,
        220,
    ),
    ("/ip/insecure/pd:5/plain/flat.png", 50, 30),
    ("/ip/insecure/rot:90/pd:1:2:3:4/plain/flat.png", 26, 44),
    // Around the image whatever its size, without ex: `rs:fit:300:200` makes 2560×1600
    // 300×188 (`imath.Scale`: 1600 / 8.53 rounded), padded 10 a side; the 40×20 `flat.png`
    // stays 40×20 in a fit and in a fill without el:1, padded to 60×40.
    ("/ip/insecure/rs:fit:300:200/pd:10/plain/a.jpg", 320, 208),
    ("/ip/insecure/rs:fit:300:200/pd:10/plain/flat.png", 60, 40),
    ("/ip/insecure/rs:fill:300:200/pd:10/plain/flat.png", 60, 40),
    // Turned first (the 200×300 box is the turned image's: 188×300), then padded.
    (
        "/ip/insecure/rs:fit:200:300/rot:90/pd:1:2:3:4/plain/a.jpg",
        194,
        304,
    ),
];

/// (path, size, pixels (x, y, RGBA)): thumbor's filters in URL order on `flat.png`, a 40×20
/// PNG of grey 100, each pixel computed from thumbor's own arithmetic (its C extensions:
/// brightness adds N % of 255, contrast scales around 128 by (N+100)²/100 %, saturation moves
/// each channel from √(0.299r² + 0.587g² + 0.114b²), round_corner paints outside the ellipse);
/// grayscale is Rec. 709 luma.
type FilterCase = (&'static str, (u32, u32), &'static [(u32, u32, [u8; 4])]);
const FILTER_CASES: &[FilterCase] = &[
    // Brightness before fill: the image only; after it, the padding too.
    (
        "/img/unsafe/fit-in/40x40/filters:brightness(10):fill(ff0000)/flat.png",
        (40, 40),
        &[(20, 20, [125, 125, 125, 255]), (20, 0, [255, 0, 0, 255])],
    ),
    (
        "/img/unsafe/fit-in/40x40/filters:fill(ff0000):brightness(10)/flat.png",
        (40, 40),
        &[(20, 20, [125, 125, 125, 255]), (20, 0, [255, 25, 25, 255])],
    ),
    // The demo's URL (was 501 "filter grayscale after fill"): padded gold, turned, all grey.
    (
        "/img/unsafe/fit-in/40x30/filters:fill(ffd700):rotate(90):grayscale()/flat.png",
        (30, 40),
        &[
            (0, 20, [207, 207, 207, 255]),
            (15, 20, [100, 100, 100, 255]),
        ],
    ),
    // A blur after fill (was 501) blurs the padded image: far from the edge, as it was.
    (
        "/img/unsafe/fit-in/40x40/filters:fill(ff0000):blur(2)/flat.png",
        (40, 40),
        &[(20, 0, [255, 0, 0, 255]), (20, 20, [100, 100, 100, 255])],
    ),
    // Contrast 50: 225·(100−128)/100 + 128 = 65; then brightness: 90. The other way: 122.
    (
        "/img/unsafe/filters:contrast(50):brightness(10)/flat.png",
        (40, 20),
        &[(5, 5, [90, 90, 90, 255])],
    ),
    (
        "/img/unsafe/filters:brightness(10):contrast(50)/flat.png",
        (40, 20),
        &[(5, 5, [122, 122, 122, 255])],
    ),
    // rgb(10,−10,0): (125, 75, 100); saturation(−100): all √9113.75 = 95.47, truncated.
    (
        "/img/unsafe/filters:rgb(10,-10,0):saturation(-100)/flat.png",
        (40, 20),
        &[(5, 5, [95, 95, 95, 255])],
    ),
    // proportion scales the fitted image; fill still pads to the box, centred.
    (
        "/img/unsafe/filters:proportion(0.5)/flat.png",
        (20, 10),
        &[(10, 5, [100, 100, 100, 255])],
    ),
    (
        "/img/unsafe/fit-in/40x40/filters:proportion(0.5):fill(ff0000)/flat.png",
        (40, 40),
        &[
            (20, 20, [100, 100, 100, 255]),
            (5, 20, [255, 0, 0, 255]),
            (20, 12, [255, 0, 0, 255]),
        ],
    ),
    // imgproxy's pd (not thumbor's, but on the same image): transparent, then flattened onto
    // `bg` (`processing/flatten.go`), top and bottom 2, left and right 4.
    (
        "/ip/insecure/pd:2:4/bg:ff0000/plain/flat.png",
        (48, 24),
        &[
            (1, 12, [255, 0, 0, 255]),
            (24, 0, [255, 0, 0, 255]),
            (24, 12, [100, 100, 100, 255]),
        ],
    ),
    (
        "/ip/insecure/pd:2/plain/flat.png",
        (44, 24),
        &[(0, 0, [0, 0, 0, 0]), (22, 12, [100, 100, 100, 255])],
    ),
    // Around an image smaller than the box (a fill without el:1 keeps its size): transparent
    // in PNG, `bg` when set.
    (
        "/ip/insecure/rs:fill:300:200/pd:10/plain/flat.png",
        (60, 40),
        &[
            (0, 0, [0, 0, 0, 0]),
            (9, 20, [0, 0, 0, 0]),
            (10, 20, [100, 100, 100, 255]),
            (49, 29, [100, 100, 100, 255]),
            (50, 29, [0, 0, 0, 0]),
        ],
    ),
    (
        "/ip/insecure/rs:fill:300:200/pd:10/bg:00ff00/plain/flat.png",
        (60, 40),
        &[
            (0, 0, [0, 255, 0, 255]),
            (30, 39, [0, 255, 0, 255]),
            (30, 20, [100, 100, 100, 255]),
        ],
    ),
    // Corners painted blue; the no-op metadata filters change nothing.
    (
        "/img/unsafe/filters:round_corner(5,0,0,255):strip_exif():strip_icc()/flat.png",
        (40, 20),
        &[
            (0, 0, [0, 0, 255, 255]),
            (39, 19, [0, 0, 255, 255]),
            (20, 10, [100, 100, 100, 255]),
        ],
    ),
    (
        "/img/unsafe/filters:round_corner(5,0,0,255,true)/flat.png",
        (40, 20),
        &[(0, 0, [0, 0, 255, 0]), (20, 10, [100, 100, 100, 255])],
    ),
];

/// (path, status): filters refused by name.
const FILTER_REFUSALS: &[(&str, u16)] = &[
    ("/img/unsafe/filters:brightness(101)/flat.png", 400),
    ("/img/unsafe/filters:noise(1000)/flat.png", 400),
    ("/img/unsafe/filters:label(hi,10,10,12)/flat.png", 501),
    // imgproxy's pd with a dpr and no el:1: imgproxy lowers the padding's factor by the
    // source's size.
    (
        "/ip/insecure/rs:fit:300:200/dpr:2/pd:10/plain/flat.png",
        501,
    ),
];

async fn stack(call_mode: bool) -> (Stack, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let photo = tools::testdata_images().join("medium.jpg");
    std::fs::copy(&photo, dir.path().join("a.jpg")).unwrap();
    let portrait = image::open(&photo).unwrap().rotate90();
    portrait.save(dir.path().join("portrait.jpg")).unwrap();
    image::RgbImage::from_pixel(40, 20, image::Rgb([100, 100, 100]))
        .save(dir.path().join("flat.png"))
        .unwrap();
    let sidecar = format!(
        "[storages.photos]\ntype = \"local\"\nroot = {:?}\n",
        dir.path().display().to_string()
    );
    let filter = serde_json::json!({ "routes": [
        { "prefix": "/img/", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "allow_unsafe": true },
        { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true },
    ]});
    let mut builder = Stack::builder(&filter.to_string(), &sidecar);
    if call_mode {
        builder = builder.call_mode();
    }
    (builder.start().await, dir)
}

async fn sizes_as_the_peers_answer(call_mode: bool) {
    let (stack, _dir) = stack(call_mode).await;
    let mut failures = Vec::new();
    for &(path, width, height) in CASES {
        let r = stack.get(path, &[]).await;
        let got = match (r.status, image::load_from_memory(&r.body)) {
            (200, Ok(img)) => (img.width(), img.height()),
            (status, _) => {
                failures.push(format!("{path}: {status} {}", r.text().trim()));
                continue;
            }
        };
        if got != (width, height) {
            failures.push(format!("{path}: {}x{}, not {width}x{height}", got.0, got.1));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

async fn filters_as_thumbor_computes_them(call_mode: bool) {
    let (stack, _dir) = stack(call_mode).await;
    let mut failures = Vec::new();
    for &(path, size, pixels) in FILTER_CASES {
        let r = stack.get(path, &[]).await;
        let img = match (r.status, image::load_from_memory(&r.body)) {
            (200, Ok(img)) => img.to_rgba8(),
            (status, _) => {
                failures.push(format!("{path}: {status} {}", r.text().trim()));
                continue;
            }
        };
        if img.dimensions() != size {
            failures.push(format!("{path}: {:?}, not {size:?}", img.dimensions()));
            continue;
        }
        for &(x, y, rgba) in pixels {
            let got = img.get_pixel(x, y).0;
            if got != rgba {
                failures.push(format!("{path}: ({x}, {y}) is {got:?}, not {rgba:?}"));
            }
        }
    }
    for &(path, status) in FILTER_REFUSALS {
        let r = stack.get(path, &[]).await;
        if r.status != status {
            failures.push(format!("{path}: {} {}, not {status}", r.status, r.text()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_in_url_order_with_thumbors_arithmetic() {
    filters_as_thumbor_computes_them(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_apply_the_same_in_call_mode() {
    filters_as_thumbor_computes_them(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizing_modes_answer_as_thumbor_imagor_and_imagekit() {
    sizes_as_the_peers_answer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizing_modes_answer_the_same_in_call_mode() {
    sizes_as_the_peers_answer(true).await;
}
