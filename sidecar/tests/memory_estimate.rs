//! `pipeline::memory_needed`, what the sidecar reserves from its memory budget before a render,
//! is an upper bound of what the render allocates, for each kind of render: shrink-on-load,
//! full-size decodes, animations kept as animations, AVIF output, trim and smart crop.
//!
//! Allocations are counted by this binary's global allocator, so what C libraries allocate
//! with their own `malloc` (libjpeg-turbo, libwebp, libdav1d) is not seen here: the peak RSS
//! test (`memory_budget.rs`) covers those through the real binary.

mod support;

use pixmesh_core::transform::{
    Fit, Format, Hundredths, OutputFormat, Padding, Transform, Trim, TrimColor,
};
use pixmesh_sidecar::pipeline::{self, Limits};
use support::counting::{Counting, peak_during};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A fixture of this crate's `testdata/`.
fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fit(width: u32, height: u32, format: Format) -> Transform {
    Transform {
        width,
        height,
        fit: Fit::FitIn,
        format: OutputFormat::Fixed(format),
        ..Transform::default()
    }
}

/// One test, so no other test allocates while a render is measured.
#[test]
fn every_render_allocates_at_most_what_memory_needed_reserved() {
    let fill = |width, height, format| Transform {
        fit: Fit::Fill,
        ..fit(width, height, format)
    };
    let cases: Vec<(&str, Vec<u8>, Transform)> = vec![
        (
            "JPEG shrunk on load",
            testdata("medium.jpg"),
            fit(300, 300, Format::Jpeg),
        ),
        (
            "JPEG to AVIF",
            testdata("medium.jpg"),
            fit(800, 800, Format::Avif),
        ),
        (
            "PNG with alpha",
            testdata("alpha.png"),
            fit(800, 800, Format::Png),
        ),
        (
            "PNG to AVIF",
            testdata("alpha.png"),
            fit(1000, 1000, Format::Avif),
        ),
        (
            "WebP scaled on load",
            testdata("medium.webp"),
            fit(640, 640, Format::Webp),
        ),
        (
            "GIF kept animated",
            testdata("anim.gif"),
            fit(200, 200, Format::Gif),
        ),
        (
            "GIF to animated WebP",
            testdata("anim.gif"),
            fill(240, 120, Format::Webp),
        ),
        (
            "GIF enlarged",
            testdata("anim.gif"),
            Transform {
                upscale: true,
                ..fit(1000, 1000, Format::Gif)
            },
        ),
        (
            "smart crop",
            testdata("medium.jpg"),
            Transform {
                smart: true,
                ..fill(400, 400, Format::Jpeg)
            },
        ),
        (
            "trim",
            testdata("alpha.png"),
            Transform {
                trim: Some(Trim {
                    threshold: 10,
                    color: TrimColor::TopLeft,
                    equal_hor: false,
                    equal_ver: false,
                }),
                ..fit(500, 0, Format::Png)
            },
        ),
        (
            "blurred and padded",
            testdata("flower.webp"),
            Transform {
                blur: Some(Hundredths(300)),
                pad: true,
                ..fit(900, 900, Format::Png)
            },
        ),
        (
            // Ordered effects: an alpha channel added before the padding (transparent
            // corners) and after it, blurs and sharpening on both sides.
            "ordered effects on both sides of the padding",
            testdata("medium.jpg"),
            Transform {
                pad: true,
                effects: "round_corner(30,0,0,0,true):blur(6):sharpen(2,1,true)"
                    .parse()
                    .unwrap(),
                final_effects: "blur(4):round_corner(50,0,0,0,true):sharpen(1,2,true)"
                    .parse()
                    .unwrap(),
                ..fit(900, 900, Format::Png)
            },
        ),
        (
            // imgproxy's `pd`: a thumbnail with a large canvas around it (no `pad`).
            "padded around a thumbnail",
            testdata("medium.jpg"),
            Transform {
                padding: Some(Padding {
                    left: 1000,
                    top: 1000,
                    right: 1000,
                    bottom: 1000,
                }),
                ..fit(100, 0, Format::Png)
            },
        ),
        (
            "AVIF with alpha, enlarged",
            fixture("bars-alpha.avif"),
            Transform {
                upscale: true,
                ..fit(1200, 1200, Format::Png)
            },
        ),
    ];
    let limits = Limits::default();
    let mut report = Vec::new();
    let mut over = Vec::new();
    for (name, source, t) in &cases {
        let needed = pipeline::memory_needed(source, t, &limits)
            .unwrap_or_else(|e| panic!("{name}: estimate: {e}"));
        let (rendered, used) = peak_during(|| pipeline::render(source, t, &limits));
        let rendered = rendered.unwrap_or_else(|e| panic!("{name}: render: {e}"));
        report.push(format!(
            "{name} ({}x{}): allocated {} KiB at the peak, reserved {} KiB",
            rendered.width,
            rendered.height,
            used >> 10,
            needed >> 10
        ));
        if used > needed {
            over.push(*name);
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(over.is_empty(), "allocated more than reserved: {over:?}");
}
