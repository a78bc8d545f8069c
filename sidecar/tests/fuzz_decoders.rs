//! Mutation fuzzing of every decoder the sidecar runs, bounded for `scripts/test`: small valid
//! images of each source format (JPEG baseline and progressive, PNG with alpha, GIF animated,
//! WebP lossy, AVIF), with bytes flipped, runs overwritten, truncated or spliced by proptest,
//! go through `memory_needed` then `render` as the service runs them. Whatever the bytes: no
//! panic, and a failure is a client error the service answers (413, 415, 422; 400 or 501 for
//! what a request asks of an image that turned out different), never a 500.
//!
//! `PROPTEST_CASES` sets the cases per format (proptest's default 256: under a second; 5,000:
//! ten seconds, in a debug build).

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use image::{ImageEncoder, RgbaImage};
use pixmesh_core::transform::{Fit, Format, OutputFormat, Transform};
use pixmesh_sidecar::pipeline::{self, Limits, PipelineError};
use proptest::prelude::*;

/// A 40×30 gradient with a translucent corner.
fn pixels() -> RgbaImage {
    RgbaImage::from_fn(40, 30, |x, y| {
        let a = if x < 8 && y < 8 { 96 } else { 255 };
        image::Rgba([(x * 6) as u8, (y * 8) as u8, ((x + y) * 3) as u8, a])
    })
}

fn jpeg(progressive: bool) -> Vec<u8> {
    let rgb = image::DynamicImage::ImageRgba8(pixels()).to_rgb8();
    let image = turbojpeg::Image {
        pixels: rgb.as_raw().as_slice(),
        width: 40,
        pitch: 40 * 3,
        height: 30,
        format: turbojpeg::PixelFormat::RGB,
    };
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_progressive(progressive).unwrap();
    c.compress_to_vec(image).unwrap()
}

fn png() -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(pixels().as_raw(), 40, 30, image::ExtendedColorType::Rgba8)
        .unwrap();
    out
}

fn gif() -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut enc = image::codecs::gif::GifEncoder::new(Cursor::new(&mut out));
        enc.set_repeat(image::codecs::gif::Repeat::Infinite)
            .unwrap();
        for shift in [0u8, 60, 120] {
            let mut frame = pixels();
            frame
                .pixels_mut()
                .for_each(|p| p.0[0] = p.0[0].wrapping_add(shift));
            enc.encode_frame(image::Frame::new(frame)).unwrap();
        }
    }
    out
}

fn webp() -> Vec<u8> {
    webp::Encoder::from_rgba(pixels().as_raw(), 40, 30)
        .encode(75.0)
        .to_vec()
}

fn avif() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/bars-420.avif"
    ))
    .unwrap()
}

/// One way to damage a file.
#[derive(Debug, Clone)]
enum Damage {
    /// XOR these bytes at these positions (taken modulo the length).
    Flip(Vec<(usize, u8)>),
    /// Overwrite a run at a position with one byte value (lengths, markers, counts).
    Run { at: usize, len: usize, byte: u8 },
    /// Keep this many bytes (modulo the length).
    Truncate(usize),
    /// Insert bytes at a position.
    Splice { at: usize, bytes: Vec<u8> },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        prop::collection::vec((any::<usize>(), 1u8..), 1..16).prop_map(Damage::Flip),
        (any::<usize>(), 1usize..64, any::<u8>()).prop_map(|(at, len, byte)| Damage::Run {
            at,
            len,
            byte
        }),
        any::<usize>().prop_map(Damage::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(at, bytes)| Damage::Splice { at, bytes }),
    ]
}

fn apply(mut data: Vec<u8>, d: &Damage) -> Vec<u8> {
    let n = data.len();
    match d {
        Damage::Flip(flips) => {
            for &(at, x) in flips {
                data[at % n] ^= x;
            }
        }
        Damage::Run { at, len, byte } => {
            let at = at % n;
            let end = (at + len).min(n);
            data[at..end].fill(*byte);
        }
        Damage::Truncate(keep) => data.truncate(keep % n),
        Damage::Splice { at, bytes } => {
            let at = at % n;
            data.splice(at..at, bytes.iter().copied());
        }
    }
    data
}

/// Small limits, so that a damaged header claiming a huge image is refused cheaply.
fn limits() -> Limits {
    Limits {
        max_source_pixels: 4_000_000,
        max_output_pixels: 4_000_000,
        max_animation_frames: 16,
        ..Limits::default()
    }
}

/// A thumbnail in the source's format, and one that crops, blurs and re-encodes as WebP.
fn transforms() -> [Transform; 2] {
    [
        Transform {
            width: 16,
            fit: Fit::FitIn,
            ..Transform::default()
        },
        Transform {
            width: 20,
            height: 20,
            smart: true,
            blur: Some(pixmesh_core::transform::Hundredths(150)),
            format: OutputFormat::Fixed(Format::Webp),
            ..Transform::default()
        },
    ]
}

/// Renders `data` as the service would; panics (failing the case) on a panic or a 500.
fn survive(data: &[u8]) {
    for t in transforms() {
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            pipeline::memory_needed(data, &t, &limits())?;
            pipeline::render(data, &t, &limits()).map(|_| ())
        }));
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => check_status(&e),
            Err(_) => panic!("the pipeline panicked on {} bytes", data.len()),
        }
    }
}

fn check_status(e: &PipelineError) {
    let status = e.http_status();
    assert!(
        matches!(status, 400 | 413 | 415 | 422 | 501),
        "{status} for a damaged image: {e}"
    );
}

macro_rules! fuzz_format {
    ($name:ident, $make:expr) => {
        proptest! {
            #[test]
            fn $name(d in damage()) {
                static SOURCE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
                let source = SOURCE.get_or_init(|| $make);
                survive(&apply(source.clone(), &d));
            }
        }
    };
}

fuzz_format!(damaged_baseline_jpegs_never_panic, jpeg(false));
fuzz_format!(damaged_progressive_jpegs_never_panic, jpeg(true));
fuzz_format!(damaged_pngs_never_panic, png());
fuzz_format!(damaged_animated_gifs_never_panic, gif());
fuzz_format!(damaged_webps_never_panic, webp());
fuzz_format!(damaged_avifs_never_panic, avif());

#[test]
fn the_undamaged_sources_render() {
    for (name, data) in [
        ("jpeg", jpeg(false)),
        ("progressive jpeg", jpeg(true)),
        ("png", png()),
        ("gif", gif()),
        ("webp", webp()),
        ("avif", avif()),
    ] {
        for t in transforms() {
            pipeline::render(&data, &t, &limits()).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
