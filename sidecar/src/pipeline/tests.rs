//! The render as a whole: each step seen through [`render`] on real and built images.

use super::*;
use crate::pipeline::{
    decode::*, effects::*, encode::*, error::*, geometry::*, limits::*, memory::*, pixels::*,
    resize::*, sniff::*,
};
use std::io::Cursor;

use image::codecs::png::PngEncoder;
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat};
use image::{GenericImageView, Rgb, RgbImage, Rgba, RgbaImage};
use moxcms::ColorProfile;
use pixmesh_core::transform::OutputFormat;
use pixmesh_core::transform::{
    Color, Fit, Format, HAlign, Hundredths, MAX_BYTES_MIN_QUALITY, Rotation, Sharpen, Transform,
    VAlign,
};

pub(super) fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn transform(width: u32, height: u32, fit: Fit) -> Transform {
    Transform {
        width,
        height,
        fit,
        ..Transform::default()
    }
}

fn encode_as(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

fn decoded(r: &Rendered) -> DynamicImage {
    image::load_from_memory_with_format(&r.bytes, image_format(r.format)).unwrap()
}

/// The offset just after the first `name` box header in `data` (a naive search, enough
/// for the small files the encoder writes).
fn find_box(data: &[u8], name: &[u8; 4]) -> Option<usize> {
    data.windows(4).position(|w| w == name).map(|i| i + 4)
}

/// An AVIF's size from its `ispe` (image spatial extents) property; panics when it is not
/// an AVIF.
fn avif_size(data: &[u8]) -> (u32, u32) {
    assert_eq!(&data[4..12], b"ftypavif", "an AVIF file type box");
    let at = find_box(data, b"ispe").expect("an ispe property") + 4; // version, flags
    let u32_at = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().unwrap());
    (u32_at(at), u32_at(at + 4))
}

/// The start-of-frame marker of a JPEG (0xC0 baseline, 0xC2 progressive, …), found by
/// walking its marker segments.
fn jpeg_sof(data: &[u8]) -> u8 {
    jpeg_segments(data)
        .map(|s| s.marker)
        .find(|&m| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC))
        .expect("a start-of-frame marker")
}

fn jpeg_of(t: Transform) -> Transform {
    Transform {
        format: OutputFormat::Fixed(Format::Jpeg),
        ..t
    }
}

#[test]
fn progressive_jpeg_per_request_and_by_configuration() {
    let source = testdata("medium.jpg");
    let limits = Limits::default();
    let baseline_config = Encoding::default();
    let progressive_config = Encoding {
        jpeg_progressive: true,
        ..Encoding::default()
    };
    for (progressive, config, sof) in [
        (None, &baseline_config, 0xC0),
        (Some(true), &baseline_config, 0xC2),
        (None, &progressive_config, 0xC2),
        (Some(false), &progressive_config, 0xC0),
    ] {
        let t = Transform {
            progressive,
            ..jpeg_of(transform(300, 200, Fit::Fill))
        };
        let r = render_with(&source, &t, &limits, config).unwrap();
        assert_eq!(jpeg_sof(&r.bytes), sof, "{progressive:?} {config:?}");
        assert_eq!(decoded(&r).dimensions(), (300, 200));
    }
    // A progressive JPEG of the same quality is the same picture.
    let t = jpeg_of(transform(300, 200, Fit::Fill));
    let baseline = decoded(&render(&source, &t, &limits).unwrap()).to_rgb8();
    let progressive =
        decoded(&render_with(&source, &t, &limits, &progressive_config).unwrap()).to_rgb8();
    let diff: u64 = baseline
        .as_raw()
        .iter()
        .zip(progressive.as_raw())
        .map(|(&a, &b)| u64::from(a.abs_diff(b)))
        .sum();
    assert!(
        diff / (baseline.as_raw().len() as u64) < 2,
        "mean difference {diff}"
    );
    // Other formats are not affected.
    let png = Transform {
        progressive: Some(true),
        format: OutputFormat::Fixed(Format::Png),
        ..transform(100, 100, Fit::Fill)
    };
    let r = render(&source, &png, &limits).unwrap();
    assert_eq!(r.format, Format::Png);
}

#[test]
fn configured_quality_applies_per_format_unless_the_url_names_one() {
    let source = testdata("medium.jpg");
    let limits = Limits::default();
    let low = Encoding {
        jpeg_quality: 30,
        webp_quality: 30,
        avif_quality: 30,
        ..Encoding::default()
    };
    let high = Encoding {
        jpeg_quality: 95,
        webp_quality: 95,
        avif_quality: 95,
        ..Encoding::default()
    };
    for format in [Format::Jpeg, Format::Webp, Format::Avif] {
        let t = Transform {
            format: OutputFormat::Fixed(format),
            ..transform(200, 150, Fit::Fill)
        };
        let size =
            |t: &Transform, e: &Encoding| render_with(&source, t, &limits, e).unwrap().bytes.len();
        assert!(size(&t, &low) < size(&t, &high), "{format:?}");
        // The configuration is only a default: a URL's quality wins.
        let named = Transform {
            quality: Some(60),
            ..t
        };
        let bytes = |e: &Encoding| render_with(&source, &named, &limits, e).unwrap().bytes;
        assert_eq!(bytes(&low), bytes(&high), "{format:?}");
        // Each format reads its own setting.
        let only_this = Encoding {
            jpeg_quality: if format == Format::Jpeg { 30 } else { 95 },
            webp_quality: if format == Format::Webp { 30 } else { 95 },
            avif_quality: if format == Format::Avif { 30 } else { 95 },
            ..Encoding::default()
        };
        assert_eq!(
            render_with(&source, &t, &limits, &only_this).unwrap().bytes,
            render_with(&source, &t, &limits, &low).unwrap().bytes,
            "{format:?}"
        );
    }
}

/// A fake encoder whose output grows with the quality, counting its calls.
fn sized_by_quality(calls: &mut Vec<u8>) -> impl FnMut(u8) -> Result<Vec<u8>, PipelineError> {
    move |q| {
        calls.push(q);
        Ok(vec![q; usize::from(q) * 100])
    }
}

#[test]
fn max_bytes_finds_the_highest_quality_that_fits_in_few_encodes() {
    for start in [100u8, 80, 57, 11] {
        for max in [500u32, 999, 1_000, 4_321, 5_000, 7_999] {
            let mut calls = Vec::new();
            let out = fit_bytes(
                start,
                Some(max),
                MAX_BYTES_ENCODES,
                sized_by_quality(&mut calls),
            )
            .unwrap();
            // Nothing under the floor is tried: then the floor's result, the smallest.
            let best = (max / 100)
                .min(u32::from(start))
                .max(u32::from(MAX_BYTES_MIN_QUALITY)) as usize;
            assert_eq!(out.len(), best * 100, "start {start}, max {max}");
            assert!(calls.len() <= MAX_BYTES_ENCODES, "{calls:?}");
            assert_eq!(calls[0], start);
        }
    }
    // Fits at once: one encode.
    let mut calls = Vec::new();
    let out = fit_bytes(
        80,
        Some(8_000),
        MAX_BYTES_ENCODES,
        sized_by_quality(&mut calls),
    )
    .unwrap();
    assert_eq!((out.len(), calls.len()), (8_000, 1));
    // No budget: one encode, whatever its size.
    let mut calls = Vec::new();
    let out = fit_bytes(80, None, MAX_BYTES_ENCODES, sized_by_quality(&mut calls)).unwrap();
    assert_eq!((out.len(), calls.len()), (8_000, 1));
    // Nothing fits: the smallest try, at the lowest quality searched.
    let mut calls = Vec::new();
    let out = fit_bytes(
        80,
        Some(10),
        MAX_BYTES_ENCODES,
        sized_by_quality(&mut calls),
    )
    .unwrap();
    assert_eq!(out.len(), usize::from(MAX_BYTES_MIN_QUALITY) * 100);
    assert!(calls.len() <= MAX_BYTES_ENCODES, "{calls:?}");
    assert_eq!(calls.iter().min(), Some(&MAX_BYTES_MIN_QUALITY));
    // Asked below the search's floor: nothing lower is tried.
    let mut calls = Vec::new();
    let out = fit_bytes(5, Some(10), MAX_BYTES_ENCODES, sized_by_quality(&mut calls)).unwrap();
    assert_eq!((out.len(), calls), (500, vec![5]));
    // Encoder errors are errors.
    let failing = |_| Err(PipelineError::Encode("boom".into()));
    assert!(fit_bytes(80, Some(10), MAX_BYTES_ENCODES, failing).is_err());
}

#[test]
fn max_bytes_shrinks_lossy_outputs_of_real_images() {
    let source = testdata("medium.jpg");
    let limits = Limits::default();
    for format in [Format::Jpeg, Format::Webp, Format::Avif] {
        let t = Transform {
            format: OutputFormat::Fixed(format),
            ..transform(240, 180, Fit::Fill)
        };
        let full = render(&source, &t, &limits).unwrap().bytes.len();
        let budget = (full / 2) as u32;
        let fitted = render(
            &source,
            &Transform {
                max_bytes: Some(budget),
                ..t
            },
            &limits,
        )
        .unwrap();
        assert!(
            fitted.bytes.len() <= budget as usize,
            "{format:?}: {} > {budget} (from {full})",
            fitted.bytes.len()
        );
        assert!(
            fitted.bytes.len() > budget as usize / 4,
            "{format:?}: not the best fit"
        );
        assert_eq!((fitted.width, fitted.height), (240, 180));
        // A budget nothing meets: the lowest quality searched, the smallest result.
        let lowest = render(
            &source,
            &Transform {
                quality: Some(MAX_BYTES_MIN_QUALITY),
                ..t
            },
            &limits,
        )
        .unwrap();
        let tiny = render(
            &source,
            &Transform {
                max_bytes: Some(100),
                ..t
            },
            &limits,
        )
        .unwrap();
        assert_eq!(tiny.bytes, lowest.bytes, "{format:?}");
        // A budget already met changes nothing.
        let roomy = Transform {
            max_bytes: Some(full as u32),
            ..t
        };
        assert_eq!(render(&source, &roomy, &limits).unwrap().bytes.len(), full);
    }
    // Lossless formats are left as they are.
    let png = Transform {
        format: OutputFormat::Fixed(Format::Png),
        ..transform(100, 100, Fit::Fill)
    };
    let tight = Transform {
        max_bytes: Some(100),
        ..png
    };
    assert_eq!(
        render(&source, &tight, &limits).unwrap().bytes,
        render(&source, &png, &limits).unwrap().bytes
    );
}

#[test]
fn avif_output_keeps_size_and_alpha() {
    let limits = Limits::default();
    let photo = render(
        &testdata("medium.jpg"),
        &Transform {
            format: OutputFormat::Fixed(Format::Avif),
            ..transform(320, 0, Fit::FitIn)
        },
        &limits,
    )
    .unwrap();
    assert_eq!(photo.format, Format::Avif);
    assert_eq!(avif_size(&photo.bytes), (photo.width, photo.height));
    assert_eq!(photo.width, 320);
    assert!(
        find_box(&photo.bytes, b"auxC").is_none(),
        "an opaque image has no alpha plane"
    );
    let alpha = render(
        &testdata("alpha.png"),
        &Transform {
            format: OutputFormat::Fixed(Format::Avif),
            ..transform(64, 64, Fit::FitIn)
        },
        &limits,
    )
    .unwrap();
    assert!(
        find_box(&alpha.bytes, b"auxC").is_some(),
        "a transparent image keeps its alpha plane"
    );
    // The smallest images encode too.
    let one = png(DynamicImage::ImageRgba8(RgbaImage::from_pixel(
        1,
        1,
        Rgba([10, 20, 30, 40]),
    )));
    let r = render(
        &one,
        &Transform {
            format: OutputFormat::Fixed(Format::Avif),
            ..Transform::default()
        },
        &limits,
    )
    .unwrap();
    assert_eq!(avif_size(&r.bytes), (1, 1));
    // And read back (as AVIF, the source's format): one translucent pixel.
    let back = render(&r.bytes, &Transform::default(), &limits).unwrap();
    assert_eq!((back.format, back.width, back.height), (Format::Avif, 1, 1));
}

#[test]
fn avif_output_has_the_configured_bit_depth() {
    let t = Transform {
        format: OutputFormat::Fixed(Format::Avif),
        ..transform(64, 0, Fit::FitIn)
    };
    let bits = |depth: u8| {
        let encoding = Encoding {
            avif_bit_depth: depth,
            ..Encoding::default()
        };
        let r = render_with(&testdata("medium.jpg"), &t, &Limits::default(), &encoding).unwrap();
        // `pixi`: version and flags, the channel count, then each channel's bits.
        let at = find_box(&r.bytes, b"pixi").expect("a pixi property") + 4;
        let channels = usize::from(r.bytes[at]);
        r.bytes[at + 1..at + 1 + channels].to_vec()
    };
    assert_eq!(Encoding::default().avif_bit_depth, 8);
    assert_eq!(bits(8), [8, 8, 8]);
    assert_eq!(bits(10), [10, 10, 10]);
}

/// A 4-quadrant RGB image: red top-left, green top-right, blue bottom-left, white bottom-right.
fn quadrants(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        match (x < width / 2, y < height / 2) {
            (true, true) => Rgb([255, 0, 0]),
            (false, true) => Rgb([0, 255, 0]),
            (true, false) => Rgb([0, 0, 255]),
            (false, false) => Rgb([255, 255, 255]),
        }
    })
}

/// Whether `px` is within `tolerance` of `expected` on every channel.
fn near(px: Rgb<u8>, expected: [u8; 3], tolerance: u8) -> bool {
    px.0.iter()
        .zip(expected)
        .all(|(&a, b)| a.abs_diff(b) <= tolerance)
}

#[test]
fn geometry_follows_thumbor_semantics() {
    let g = |w0, h0, t: Transform| {
        let g = compute_geometry(w0, h0, &t);
        (g.width, g.height)
    };
    let up = |mut t: Transform| {
        t.upscale = true;
        t
    };
    // (source, transform) → output size
    let cases = [
        ((2560, 1600), transform(320, 320, Fit::FitIn), (320, 200)),
        ((2560, 1600), transform(0, 100, Fit::FitIn), (160, 100)),
        ((2560, 1600), transform(400, 0, Fit::Fill), (400, 250)),
        ((2560, 1600), transform(200, 200, Fit::Fill), (200, 200)),
        ((2560, 1600), transform(100, 300, Fit::Stretch), (100, 300)),
        ((480, 360), transform(1000, 1000, Fit::FitIn), (480, 360)),
        (
            (480, 360),
            up(transform(1000, 1000, Fit::FitIn)),
            (1000, 750),
        ),
        // Fill without upscaling keeps the box's aspect ratio at the largest size inside.
        ((480, 360), transform(1000, 500, Fit::Fill), (480, 240)),
        ((480, 360), up(transform(1000, 500, Fit::Fill)), (1000, 500)),
        ((480, 360), transform(1000, 2000, Fit::Stretch), (480, 360)),
        ((480, 360), transform(0, 0, Fit::Fill), (480, 360)),
        ((1, 10_000), transform(10, 10, Fit::FitIn), (1, 10)),
    ];
    for ((w0, h0), t, expected) in cases {
        assert_eq!(g(w0, h0, t), expected, "{w0}x{h0} {t:?}");
    }
}

#[test]
fn fill_crops_by_alignment() {
    let mut t = transform(100, 100, Fit::Fill);
    let crop = |t: &Transform| compute_geometry(400, 200, t).crop;
    assert_eq!(crop(&t).left, 100.0);
    t.h_align = HAlign::Left;
    assert_eq!(crop(&t).left, 0.0);
    t.h_align = HAlign::Right;
    assert_eq!(crop(&t).left, 200.0);
    assert_eq!((crop(&t).width, crop(&t).height), (200.0, 200.0));
    let mut t = transform(100, 100, Fit::Fill);
    t.v_align = VAlign::Bottom;
    assert_eq!(compute_geometry(200, 400, &t).crop.top, 200.0);
}

#[test]
fn fill_keeps_the_aligned_corner() {
    // 200x100 source, 50x50 box anchored left: only the left half (red/blue) remains.
    let src = encode_as(
        &DynamicImage::ImageRgb8(quadrants(200, 100)),
        ImageFormat::Png,
    );
    let mut t = transform(50, 50, Fit::Fill);
    t.h_align = HAlign::Left;
    let out = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
    assert_eq!(out.dimensions(), (50, 50));
    assert!(near(*out.get_pixel(5, 5), [255, 0, 0], 8));
    assert!(
        near(*out.get_pixel(45, 5), [255, 0, 0], 8),
        "green was cropped away"
    );
    assert!(near(*out.get_pixel(5, 45), [0, 0, 255], 8));
}

#[test]
fn resizes_real_images_in_every_format() {
    let limits = Limits::default();
    for (name, source_format) in [
        ("medium.jpg", Format::Jpeg),
        ("medium_progressive.jpg", Format::Jpeg),
        ("alpha.png", Format::Png),
        ("flower.webp", Format::Webp),
        ("anim.gif", Format::Gif),
    ] {
        let source = testdata(name);
        let r = render(&source, &transform(300, 0, Fit::FitIn), &limits).unwrap();
        assert_eq!(r.format, source_format, "{name} keeps its format");
        for format in Format::ALL {
            let mut t = transform(160, 120, Fit::Fill);
            t.format = OutputFormat::Fixed(format);
            let r = render(&source, &t, &limits).unwrap();
            assert_eq!((r.width, r.height), (160, 120), "{name} → {format:?}");
            if format == Format::Avif {
                // pixmesh reads no AVIF: its header says the size.
                assert_eq!(avif_size(&r.bytes), (160, 120), "{name} → avif");
                continue;
            }
            assert_eq!(decoded(&r).dimensions(), (160, 120), "{name} → {format:?}");
        }
    }
}

#[test]
fn png_keeps_alpha_and_jpeg_flattens_it_on_white() {
    // Halves of 16 pixels, so no JPEG block straddles the edge.
    let img = RgbaImage::from_fn(32, 32, |x, _| {
        if x < 16 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    let src = encode_as(&DynamicImage::ImageRgba8(img), ImageFormat::Png);
    let png = render(&src, &Transform::default(), &Limits::default()).unwrap();
    let png = decoded(&png);
    assert!(png.color().has_alpha());
    assert_eq!(png.get_pixel(0, 0).0[3], 0);
    let t = Transform {
        format: OutputFormat::Fixed(Format::Jpeg),
        ..Transform::default()
    };
    let jpeg = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
    let (white, blue) = (*jpeg.get_pixel(2, 2), *jpeg.get_pixel(29, 29));
    assert!(
        near(white, [255, 255, 255], 4),
        "transparent → white, got {white:?}"
    );
    assert!(near(blue, [0, 0, 255], 24), "{blue:?}");
    assert_eq!(
        flatten_onto(&[10, 20, 30, 255, 10, 20, 30, 0], Color::WHITE),
        [10, 20, 30, 255, 255, 255]
    );
}

#[test]
fn quality_changes_the_lossy_encodings() {
    let source = testdata("medium.jpg");
    for format in [Format::Jpeg, Format::Webp] {
        let size = |q| {
            let mut t = transform(400, 0, Fit::FitIn);
            t.format = OutputFormat::Fixed(format);
            t.quality = Some(q);
            render(&source, &t, &Limits::default()).unwrap().bytes.len()
        };
        assert!(size(20) < size(95), "{format:?}");
    }
}

#[test]
fn flips_mirror_the_pixels() {
    let src = encode_as(
        &DynamicImage::ImageRgb8(quadrants(20, 20)),
        ImageFormat::Png,
    );
    let mut t = Transform {
        flip_h: true,
        ..Transform::default()
    };
    let h = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
    assert_eq!(*h.get_pixel(0, 0), Rgb([0, 255, 0]));
    assert_eq!(*h.get_pixel(19, 19), Rgb([0, 0, 255]));
    t.flip_v = true;
    let hv = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
    assert_eq!(*hv.get_pixel(0, 0), Rgb([255, 255, 255]));
    assert_eq!(*hv.get_pixel(19, 19), Rgb([255, 0, 0]));
    // Odd heights leave the middle row in place.
    let odd = Pixels {
        width: 1,
        height: 3,
        alpha: false,
        data: vec![1, 1, 1, 2, 2, 2, 3, 3, 3],
    };
    assert_eq!(flip(odd, false, true).data, [3, 3, 3, 2, 2, 2, 1, 1, 1]);
}

/// A JPEG with an EXIF APP1 segment declaring `orientation`.
fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let jpeg = encode_as(&DynamicImage::ImageRgb8(img.clone()), ImageFormat::Jpeg);
    let mut tiff = b"II*\0\x08\0\0\0".to_vec(); // little-endian, IFD at offset 8
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&orientation.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn honours_exif_orientation() {
    // Orientation 6: the stored pixels must be rotated 90° clockwise to be upright.
    let stored = quadrants(40, 20);
    let src = jpeg_with_orientation(&stored, 6);
    let r = render(&src, &Transform::default(), &Limits::default()).unwrap();
    assert_eq!((r.width, r.height), (20, 40));
    let out = decoded(&r).to_rgb8();
    // After a clockwise turn, the stored bottom-left (blue) is the top-left.
    assert!(
        near(*out.get_pixel(3, 3), [0, 0, 255], 40),
        "{:?}",
        out.get_pixel(3, 3)
    );
    assert!(
        near(*out.get_pixel(16, 3), [255, 0, 0], 40),
        "{:?}",
        out.get_pixel(16, 3)
    );
}

#[test]
fn unsupported_and_corrupt_sources_are_typed_errors() {
    let t = transform(10, 10, Fit::FitIn);
    let limits = Limits::default();
    let status = |bytes: &[u8]| match render(bytes, &t, &limits) {
        Ok(r) => panic!("{} bytes rendered as {r:?}", bytes.len()),
        Err(e) => e.http_status(),
    };
    assert_eq!(status(b""), 415);
    assert_eq!(status(b"hello, world"), 415);
    assert!(matches!(
        render(b"II*\0....", &t, &limits),
        Err(PipelineError::UnsupportedFormat(f)) if f == "tiff"
    ));
    assert_eq!(status(b"GIF89a...."), 422, "a GIF cut inside its header");
    let jpeg = testdata("medium.jpg");
    assert_eq!(status(&jpeg[..jpeg.len() / 3]), 422, "truncated JPEG");
    assert_eq!(status(&jpeg[..20]), 422, "header only");
    assert_eq!(
        status(&jpeg[..jpeg.len() - 2]),
        422,
        "no end-of-image marker"
    );
    let mut trailing = jpeg.clone();
    trailing.extend_from_slice(b"trailing bytes after EOI are tolerated");
    assert!(render(&trailing, &t, &limits).is_ok());
    let webp = testdata("flower.webp");
    assert_eq!(status(&webp[..webp.len() / 2]), 422, "truncated WebP");
    let png = encode_as(
        &DynamicImage::ImageRgb8(quadrants(64, 64)),
        ImageFormat::Png,
    );
    assert_eq!(status(&png[..png.len() - 30]), 422, "truncated PNG");
}

/// CRC-32 (IEEE) as PNG chunks use it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A tiny PNG whose header claims `width`×`height`: a decompression bomb's header.
fn png_claiming(width: u32, height: u32) -> Vec<u8> {
    let mut png = encode_as(&DynamicImage::ImageRgb8(quadrants(4, 4)), ImageFormat::Png);
    // Signature (8) + length (4) → "IHDR" at 12, data at 16..29, CRC at 29..33.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

#[test]
fn limits_are_checked_from_the_header_before_decoding() {
    let t = transform(10, 10, Fit::FitIn);
    let bomb = png_claiming(100_000, 100_000);
    let err = render(&bomb, &t, &Limits::default()).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    assert!(err.to_string().contains("100000x100000"), "{err}");

    let small = Limits {
        max_source_pixels: 1_000_000,
        ..Limits::default()
    };
    let err = render(&testdata("medium.jpg"), &t, &small).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");

    let tiny_output = Limits {
        max_output_pixels: 100 * 100,
        ..Limits::default()
    };
    let big = transform(2000, 2000, Fit::FitIn);
    let err = render(&testdata("medium.jpg"), &big, &tiny_output).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    assert!(render(&testdata("medium.jpg"), &t, &tiny_output).is_ok());
}

#[test]
fn memory_estimates_cover_the_decode_and_refuse_what_render_refuses() {
    let jpeg = testdata("medium.jpg"); // 1280x800
    let full = 1280 * 800 * 3;
    let needed = |t: &Transform| memory_needed(&jpeg, t, &Limits::default()).unwrap();
    let large = needed(&transform(1200, 0, Fit::FitIn));
    assert!(large >= 2 * full + jpeg.len() as u64, "{large}");
    // A thumbnail decodes at an eighth of the size (shrink-on-load).
    let thumb = needed(&transform(100, 0, Fit::FitIn));
    assert!(thumb < large / 4, "{thumb} vs {large}");
    assert!(thumb >= 2 * (160 * 100 * 3), "{thumb}");
    // Padding counts the padded canvas.
    let padded = Transform {
        pad: true,
        ..transform(3000, 3000, Fit::FitIn)
    };
    assert!(needed(&padded) >= 4 * 3000 * 3000 * 4);
    let png = testdata("alpha.png");
    let decoded = image::load_from_memory(&png).unwrap();
    let bytes = u64::from(decoded.width()) * u64::from(decoded.height()) * 4;
    let t = transform(50, 50, Fit::FitIn);
    assert!(memory_needed(&png, &t, &Limits::default()).unwrap() >= 2 * bytes);

    let bomb = png_claiming(100_000, 100_000);
    let err = memory_needed(&bomb, &t, &Limits::default()).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    let err = memory_needed(b"not an image", &t, &Limits::default()).unwrap_err();
    assert_eq!(err.http_status(), 415, "{err}");
}

#[test]
fn multi_scan_jpegs_count_their_whole_coefficient_buffer() {
    let rgb = RgbImage::from_fn(100, 60, |x, y| Rgb([x as u8, y as u8, (x * y) as u8]));
    let encode = |progressive: bool, subsamp| {
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_subsamp(subsamp).unwrap();
        c.set_progressive(progressive).unwrap();
        c.compress_to_vec(turbojpeg::Image {
            pixels: rgb.as_raw().as_slice(),
            width: 100,
            pitch: 300,
            height: 60,
            format: turbojpeg::PixelFormat::RGB,
        })
        .unwrap()
    };
    // 4:2:0: luma 13x8 blocks, rounded up to whole 2x2 MCUs (14x8); each chroma 7x4.
    let progressive = encode(true, turbojpeg::Subsamp::Sub2x2);
    assert_eq!(jpeg_sof(&progressive), 0xC2);
    assert_eq!(
        jpeg_coefficient_bytes(&progressive),
        (14 * 8 + 2 * 7 * 4) * 128
    );
    let flat = encode(true, turbojpeg::Subsamp::None);
    assert_eq!(jpeg_coefficient_bytes(&flat), 3 * 13 * 8 * 128);
    // One interleaved scan: decoded a row of blocks at a time.
    let baseline = encode(false, turbojpeg::Subsamp::Sub2x2);
    assert_eq!(jpeg_coefficient_bytes(&baseline), 0);
    // A header cut short, or not a JPEG at all, says nothing (and does not panic).
    for cut in 0..progressive.len().min(700) {
        jpeg_coefficient_bytes(&progressive[..cut]);
    }
    assert_eq!(jpeg_coefficient_bytes(b"not a jpeg"), 0);

    // The estimate counts the buffer, once, on top of the (scaled) decode.
    let t = transform(20, 0, Fit::FitIn);
    let limits = Limits::default();
    let base = memory_needed(&baseline, &t, &limits).unwrap();
    let prog = memory_needed(&progressive, &t, &limits).unwrap();
    let extra = (14 * 8 + 2 * 7 * 4) * 128;
    assert!(prog >= base + extra - 1024, "{prog} vs {base}");
}

#[test]
fn webp_output_is_capped_at_its_maximum_side() {
    let p = Pixels {
        width: MAX_WEBP_DIMENSION + 1,
        height: 1,
        alpha: false,
        data: vec![0; (MAX_WEBP_DIMENSION as usize + 1) * 3],
    };
    let err = encode(p, Format::Webp, &Transform::default(), &Encoding::default()).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
}

#[test]
fn gif_output_is_capped_at_its_maximum_side() {
    let p = Pixels {
        width: MAX_GIF_DIMENSION + 1,
        height: 1,
        alpha: false,
        data: vec![0; (MAX_GIF_DIMENSION as usize + 1) * 3],
    };
    let err = encode(p, Format::Gif, &Transform::default(), &Encoding::default()).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
}

/// Palette of the test GIFs: index 0 red, 1 green, 2 blue, 3 transparent.
const GIF_PALETTE: [u8; 12] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];
const GIF_COLORS: [[u8; 4]; 4] = [
    [255, 0, 0, 255],
    [0, 255, 0, 255],
    [0, 0, 255, 255],
    [0, 0, 0, 0],
];

/// A GIF whose logical screen is `screen`, with one frame per `(left, top, width, height,
/// palette index)`, each filled with its index.
fn gif_with(screen: (u16, u16), frames: &[(u16, u16, u16, u16, u8)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = gif::Encoder::new(&mut out, screen.0, screen.1, &GIF_PALETTE).unwrap();
    for &(left, top, width, height, index) in frames {
        let frame = gif::Frame {
            left,
            top,
            width,
            height,
            transparent: Some(3),
            buffer: std::borrow::Cow::Owned(vec![index; usize::from(width) * usize::from(height)]),
            ..gif::Frame::default()
        };
        encoder.write_frame(&frame).unwrap();
    }
    drop(encoder);
    out
}

/// Offset of the first image descriptor (`0x2C`) of a GIF written by [`gif_with`].
fn first_image_descriptor(gif: &[u8]) -> usize {
    let mut i = 13 + GIF_PALETTE.len();
    while gif[i] == 0x21 {
        i += 2;
        while gif[i] != 0 {
            i += usize::from(gif[i]) + 1;
        }
        i += 1;
    }
    assert_eq!(gif[i], 0x2C);
    i
}

fn as_png() -> Transform {
    Transform {
        format: OutputFormat::Fixed(Format::Png),
        ..Transform::default()
    }
}

#[test]
fn gif_sources_render_their_first_frame() {
    let anim = testdata("anim.gif");
    let r = render(&anim, &as_png(), &Limits::default()).unwrap();
    assert_eq!((r.width, r.height), (245, 245));
    let ours = decoded(&r).to_rgba8();
    let first = image::load_from_memory_with_format(&anim, ImageFormat::Gif)
        .unwrap()
        .to_rgba8();
    assert!(ours == first, "the first frame, pixel for pixel");
    let decoder = image::codecs::gif::GifDecoder::new(Cursor::new(&anim)).unwrap();
    let second = image::AnimationDecoder::into_frames(decoder)
        .nth(1)
        .unwrap()
        .unwrap()
        .into_buffer();
    assert!(ours != second, "not a later frame");
    let kept = render(&anim, &transform(100, 0, Fit::FitIn), &Limits::default()).unwrap();
    assert_eq!(
        (kept.format, kept.width, kept.height),
        (Format::Gif, 100, 100),
        "a GIF stays a GIF"
    );
}

#[test]
fn a_gif_frame_is_placed_on_its_screen_and_clipped_to_it() {
    // Screen 8×4; a green 4×2 frame at (2, 1); a red frame after it must not show.
    let gif = gif_with((8, 4), &[(2, 1, 4, 2, 1), (0, 0, 8, 4, 0)]);
    let out = decoded(&render(&gif, &as_png(), &Limits::default()).unwrap()).to_rgba8();
    assert_eq!(out.dimensions(), (8, 4));
    for (x, y, px) in out.enumerate_pixels() {
        let inside = (2..6).contains(&x) && (1..3).contains(&y);
        let expected = if inside { GIF_COLORS[1] } else { GIF_COLORS[3] };
        assert_eq!(px.0, expected, "({x}, {y})");
    }
    // A blue 4×4 frame at (2, 2) on a 4×4 screen: only its top-left quarter is visible.
    let gif = gif_with((4, 4), &[(2, 2, 4, 4, 2)]);
    let out = decoded(&render(&gif, &as_png(), &Limits::default()).unwrap()).to_rgba8();
    for (x, y, px) in out.enumerate_pixels() {
        let visible = x >= 2 && y >= 2;
        let expected = if visible {
            GIF_COLORS[2]
        } else {
            GIF_COLORS[3]
        };
        assert_eq!(px.0, expected, "({x}, {y})");
    }
    // Frames wholly off the screen, beside it or below it, leave it transparent.
    for frame in [(60_000, 3, 2, 2, 0), (0, 60_000, 2, 2, 0), (4, 0, 1, 1, 0)] {
        let gif = gif_with((4, 4), &[frame]);
        let out = decoded(&render(&gif, &as_png(), &Limits::default()).unwrap()).to_rgba8();
        assert!(out.pixels().all(|px| px.0 == GIF_COLORS[3]), "{frame:?}");
    }
}

#[test]
fn damaged_gifs_are_errors_not_panics() {
    let gif = gif_with((8, 4), &[(2, 1, 4, 2, 1), (0, 0, 8, 4, 0)]);
    let t = transform(4, 4, Fit::Fill);
    // xorshift64: a fixed sequence, so a failure reproduces.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..2_000 {
        let mut damaged = gif.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % damaged.len() as u64) as usize;
            damaged[at] = next() as u8;
        }
        if next() % 4 == 0 {
            damaged.truncate((next() % damaged.len() as u64) as usize);
        }
        // Ok or a typed error; a panic fails the test.
        let _ = render(&damaged, &t, &Limits::default());
    }
}

#[test]
fn frames_after_the_first_are_never_read() {
    let frames: Vec<_> = (0..10_000u32)
        .map(|i| (0, 0, 2, 2, (i % 3) as u8))
        .collect();
    let mut gif = gif_with((2, 2), &frames);
    // Replace the trailer by the start of a frame that never ends.
    gif.pop();
    gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 2, 0, 2, 0, 0, 2, 0xFF, 0xFF, 0xFF]);
    let r = render(&gif, &as_png(), &Limits::default()).unwrap();
    let out = decoded(&r).to_rgba8();
    assert!(
        out.pixels().all(|px| px.0 == GIF_COLORS[0]),
        "the first frame, red"
    );
}

#[test]
fn hostile_gifs_are_refused_from_their_headers() {
    let t = transform(10, 10, Fit::FitIn);
    let huge_screen = gif_with((65_535, 65_535), &[(0, 0, 1, 1, 0)]);
    let err = render(&huge_screen, &t, &Limits::default()).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    assert!(err.to_string().contains("65535x65535"), "{err}");

    // A 10×10 screen whose first frame claims 60000×60000: refused before decoding it.
    let mut huge_frame = gif_with((10, 10), &[(0, 0, 10, 10, 0)]);
    let at = first_image_descriptor(&huge_frame);
    huge_frame[at + 5..at + 9].copy_from_slice(&[0x60, 0xEA, 0x60, 0xEA]);
    let err = render(&huge_frame, &t, &Limits::default()).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    assert!(
        err.to_string().contains("first frame is 60000x60000"),
        "{err}"
    );

    let no_frames = gif_with((10, 10), &[]);
    assert_eq!(
        render(&no_frames, &t, &Limits::default())
            .unwrap_err()
            .http_status(),
        422
    );
    let whole = gif_with((10, 10), &[(0, 0, 10, 10, 0)]);
    let err = render(&whole[..whole.len() - 6], &t, &Limits::default()).unwrap_err();
    assert_eq!(err.http_status(), 422, "a truncated first frame: {err}");
}

#[test]
fn gif_frames_count_their_own_size_not_the_screen() {
    // 100×100 frames on a 2×2 screen: decoding costs the frames' pixels.
    let limits = Limits {
        max_source_pixels: 25_000,
        ..Limits::default()
    };
    let frames = gif_with((2, 2), &[(0, 0, 100, 100, 1); 3]);
    let animated = transform(2, 2, Fit::FitIn); // a GIF stays an animated GIF
    for err in [
        render(&frames, &animated, &limits).unwrap_err(),
        memory_needed(&frames, &animated, &limits).unwrap_err(),
    ] {
        assert_eq!(err.http_status(), 413, "{err}");
        assert!(err.to_string().contains("30000 pixels in all"), "{err}");
    }
    // Two of them fit; the estimate counts a frame, not the 2×2 screen.
    let two = gif_with((2, 2), &[(0, 0, 100, 100, 1); 2]);
    let needed = memory_needed(&two, &animated, &limits).unwrap();
    assert!(needed >= 100 * 100 * 5, "{needed}");
    assert!(render(&two, &animated, &limits).is_ok());
    // A still reads the first frame only, counted as well.
    let needed = memory_needed(&frames, &as_png(), &limits).unwrap();
    assert!(needed >= 100 * 100 * 5, "{needed}");
    let out = decoded(&render(&frames, &as_png(), &limits).unwrap()).to_rgba8();
    assert_eq!(out.dimensions(), (2, 2));
    assert!(out.pixels().all(|px| px.0 == GIF_COLORS[1]));
}

#[test]
fn avif_outputs_are_limited_from_the_header() {
    let limits = Limits {
        max_avif_output_pixels: 100 * 100,
        ..Limits::default()
    };
    let avif = |t: Transform| Transform {
        format: OutputFormat::Fixed(Format::Avif),
        ..t
    };
    let jpeg = testdata("medium.jpg");
    for t in [
        avif(transform(200, 0, Fit::FitIn)),
        Transform {
            pad: true,
            ..avif(transform(120, 90, Fit::FitIn))
        },
    ] {
        for err in [
            render(&jpeg, &t, &limits).unwrap_err(),
            memory_needed(&jpeg, &t, &limits).unwrap_err(),
        ] {
            assert_eq!(err.http_status(), 413, "{err}");
            assert!(err.to_string().contains("max_avif_output_pixels"), "{err}");
        }
    }
    let small = render(&jpeg, &avif(transform(100, 0, Fit::FitIn)), &limits).unwrap();
    assert_eq!((small.format, small.width), (Format::Avif, 100));
    // Other formats keep the general limit; an AVIF source stays AVIF, and is limited.
    assert!(render(&jpeg, &transform(200, 0, Fit::FitIn), &limits).is_ok());
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/bars-alpha.avif"); // 64×32
    let source = std::fs::read(path).unwrap();
    let enlarged = Transform {
        upscale: true,
        ..transform(200, 200, Fit::FitIn)
    };
    let err = render(&source, &enlarged, &limits).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    let png = Transform {
        format: OutputFormat::Fixed(Format::Png),
        ..enlarged
    };
    assert!(render(&source, &png, &limits).is_ok());
}

#[test]
fn max_bytes_spends_few_encodes_on_large_avif_outputs() {
    assert_eq!(
        max_bytes_encodes(Format::Avif, 1000, 1000),
        MAX_BYTES_ENCODES
    );
    assert_eq!(max_bytes_encodes(Format::Avif, 4000, 4000), 2);
    assert_eq!(max_bytes_encodes(Format::Avif, 8000, 6250), 1);
    assert_eq!(max_bytes_encodes(Format::Avif, 0, 0), MAX_BYTES_ENCODES);
    for format in [Format::Jpeg, Format::Webp] {
        assert_eq!(max_bytes_encodes(format, 8000, 6250), MAX_BYTES_ENCODES);
    }
    for encodes in [1, 2, 3] {
        let mut calls = Vec::new();
        let out = fit_bytes(80, Some(10), encodes, sized_by_quality(&mut calls)).unwrap();
        assert_eq!(calls.len(), encodes, "{calls:?}");
        assert_eq!(out.len(), usize::from(*calls.iter().min().unwrap()) * 100);
    }
    // Cut short after a fitting try: that one.
    let mut calls = Vec::new();
    let out = fit_bytes(80, Some(6_000), 2, sized_by_quality(&mut calls)).unwrap();
    assert_eq!(calls, vec![80, 44]);
    assert_eq!(out.len(), 4_400);
}

#[test]
fn gif_output_has_all_or_nothing_transparency() {
    // Four 8-pixel columns of blue at alpha 0, 100, 200 and 255.
    let alphas = [0u8, 100, 200, 255];
    let src = png(DynamicImage::ImageRgba8(RgbaImage::from_fn(
        32,
        8,
        |x, _| Rgba([0, 0, 255, alphas[x as usize / 8]]),
    )));
    let t = Transform {
        format: OutputFormat::Fixed(Format::Gif),
        ..Transform::default()
    };
    let r = render(&src, &t, &Limits::default()).unwrap();
    assert_eq!(r.format, Format::Gif);
    let out = decoded(&r).to_rgba8();
    for (x, _, px) in out.enumerate_pixels() {
        let expected = if alphas[x as usize / 8] >= 128 {
            [0, 0, 255, 255]
        } else {
            [0, 0, 0, 0]
        };
        if expected[3] == 0 {
            assert_eq!(px.0[3], 0, "column {x} is transparent");
        } else {
            assert_eq!(px.0, expected, "column {x} is opaque blue");
        }
    }
}

#[test]
fn gif_output_of_a_photo_stays_close_to_it() {
    let t = Transform {
        format: OutputFormat::Fixed(Format::Gif),
        ..transform(160, 120, Fit::Fill)
    };
    let gif = render(&testdata("medium.jpg"), &t, &Limits::default()).unwrap();
    let png = render(
        &testdata("medium.jpg"),
        &Transform {
            format: OutputFormat::Fixed(Format::Png),
            ..t
        },
        &Limits::default(),
    )
    .unwrap();
    let (a, b) = (decoded(&gif).to_rgb8(), decoded(&png).to_rgb8());
    let diff: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    let mean = diff as f64 / a.as_raw().len() as f64;
    assert!(mean < 6.0, "256 colours are close to the photo: {mean}");
}

/// A lossless WebP of `img`.
fn webp_of(img: &RgbaImage) -> Vec<u8> {
    webp::Encoder::from_rgba(img.as_raw(), img.width(), img.height())
        .encode_lossless()
        .to_vec()
}

#[test]
fn the_compatible_format_never_sends_webp_and_never_flattens() {
    let compatible = |t: Transform| Transform {
        format: OutputFormat::Compatible,
        ..t
    };
    let half_transparent = RgbaImage::from_fn(16, 16, |x, _| {
        Rgba([255, 0, 0, if x < 8 { 0 } else { 255 }])
    });
    let opaque_with_alpha = RgbaImage::from_pixel(16, 16, Rgba([0, 255, 0, 255]));
    for (name, source, expected) in [
        ("medium.jpg", testdata("medium.jpg"), Format::Jpeg),
        ("alpha.png", testdata("alpha.png"), Format::Png),
        ("anim.gif", testdata("anim.gif"), Format::Gif),
        ("opaque flower.webp", testdata("flower.webp"), Format::Jpeg),
        ("transparent webp", webp_of(&half_transparent), Format::Png),
        (
            "webp with an opaque alpha channel",
            webp_of(&opaque_with_alpha),
            Format::Jpeg,
        ),
    ] {
        let t = compatible(transform(8, 8, Fit::Fill));
        let r = render(&source, &t, &Limits::default()).unwrap();
        assert_eq!(r.format, expected, "{name}");
    }
    let r = render(
        &webp_of(&half_transparent),
        &compatible(Transform::default()),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        decoded(&r).to_rgba8().get_pixel(0, 0).0[3],
        0,
        "the transparency is kept"
    );
    let onto_white = Transform {
        background: Some(Color::WHITE),
        ..compatible(Transform::default())
    };
    let r = render(&webp_of(&half_transparent), &onto_white, &Limits::default()).unwrap();
    assert_eq!(
        r.format,
        Format::Jpeg,
        "flattened by the URL, the result is opaque"
    );
}

#[test]
fn shrink_on_load_leaves_at_least_twice_the_reduction_to_the_resize() {
    let shrink = |w0, h0, t: Transform| shrink_on_load(Format::Jpeg, &compute_geometry(w0, h0, &t));
    assert_eq!(shrink(2560, 1600, transform(320, 320, Fit::FitIn)), 4.0); // 8× → 1/4
    assert_eq!(shrink(2560, 1600, transform(160, 0, Fit::FitIn)), 8.0); // 16× → 1/8
    assert_eq!(shrink(2560, 1600, transform(1000, 0, Fit::FitIn)), 1.0); // 2.56× → none
    assert_eq!(shrink(2560, 1600, transform(600, 0, Fit::FitIn)), 2.0); // 4.3× → 1/2
    // Fill crops the long side: the short side's reduction decides.
    assert_eq!(shrink(2560, 1600, transform(400, 400, Fit::Fill)), 2.0); // 4× → 1/2
    // Stretch: the least-reduced direction decides.
    assert_eq!(shrink(2560, 1600, transform(100, 1600, Fit::Stretch)), 1.0);
    assert_eq!(shrink(2560, 1600, transform(320, 0, Fit::FitIn)), 4.0);
    let png = compute_geometry(2560, 1600, &transform(100, 0, Fit::FitIn));
    assert_eq!(
        shrink_on_load(Format::Png, &png),
        1.0,
        "only JPEG and WebP decode scaled"
    );
}

/// Mean absolute difference per channel between two same-sized pixel buffers.
fn mean_abs_diff(a: &Pixels, b: &Pixels) -> f64 {
    assert_eq!((a.width, a.height, a.alpha), (b.width, b.height, b.alpha));
    let sum: u64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| u64::from(x.abs_diff(y)))
        .sum();
    sum as f64 / a.data.len() as f64
}

#[test]
fn shrink_on_load_matches_a_full_size_decode() {
    let source = testdata("medium.jpg");
    for t in [
        transform(320, 320, Fit::FitIn),
        transform(150, 150, Fit::Fill),
        transform(100, 60, Fit::Stretch),
    ] {
        let geometry = compute_geometry(2560, 1600, &t);
        let shrink = shrink_on_load(Format::Jpeg, &geometry);
        assert!(shrink > 1.0, "{t:?}");
        let shrink = shrink as u8;
        let full = normalise(decode_jpeg(&source, 1).unwrap().unwrap()).unwrap();
        let full = resize(full, &geometry).unwrap();
        let scaled = normalise(decode_jpeg(&source, shrink).unwrap().unwrap()).unwrap();
        assert_eq!(scaled.width, 2560 / u32::from(shrink));
        let scaled = resize(
            scaled,
            &geometry.on_decoded(
                2560,
                1600,
                2560 / u32::from(shrink),
                1600 / u32::from(shrink),
            ),
        )
        .unwrap();
        let diff = mean_abs_diff(&full, &scaled);
        assert!(diff < 2.0, "{t:?}: mean difference {diff:.2} of 255");
    }
}

#[test]
fn shrink_on_load_keeps_orientation_and_crop() {
    // 400x200 stored, orientation 6 → upright 200x400; 1/4 decode for a 40-pixel-wide fit.
    let src = jpeg_with_orientation(&quadrants(400, 200), 6);
    let r = render(&src, &transform(40, 0, Fit::FitIn), &Limits::default()).unwrap();
    assert_eq!((r.width, r.height), (40, 80));
    let out = decoded(&r).to_rgb8();
    assert!(
        near(*out.get_pixel(5, 5), [0, 0, 255], 40),
        "{:?}",
        out.get_pixel(5, 5)
    );
    assert!(
        near(*out.get_pixel(34, 5), [255, 0, 0], 40),
        "{:?}",
        out.get_pixel(34, 5)
    );
    // Fill anchored at the bottom keeps the bottom: stored right half, white then green.
    let mut t = transform(20, 20, Fit::Fill);
    t.v_align = VAlign::Bottom;
    let out = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
    assert_eq!(out.dimensions(), (20, 20));
    assert!(
        near(*out.get_pixel(2, 17), [255, 255, 255], 40),
        "{:?}",
        out.get_pixel(2, 17)
    );
    assert!(
        near(*out.get_pixel(17, 17), [0, 255, 0], 40),
        "{:?}",
        out.get_pixel(17, 17)
    );
}

#[test]
fn webp_shrink_on_load_decodes_at_twice_the_output_size() {
    let shrink = |w0, h0, t: Transform| shrink_on_load(Format::Webp, &compute_geometry(w0, h0, &t));
    assert_eq!(shrink(2560, 1600, transform(800, 800, Fit::FitIn)), 1.6); // 3.2× → 1/1.6
    assert_eq!(shrink(2560, 1600, transform(160, 0, Fit::FitIn)), 8.0); // 16× → 1/8
    assert_eq!(shrink(2560, 1600, transform(1000, 0, Fit::FitIn)), 1.28); // 2.56×
    assert_eq!(shrink(2560, 1600, transform(1100, 0, Fit::FitIn)), 1.0); // 2.33×: not worth it
    // Fill: the short side's reduction decides; stretch: the least-reduced direction.
    assert_eq!(shrink(2560, 1600, transform(400, 400, Fit::Fill)), 2.0);
    assert_eq!(shrink(2560, 1600, transform(100, 1600, Fit::Stretch)), 1.0);
}

#[test]
fn webp_shrink_on_load_matches_a_full_size_decode() {
    let source = testdata("medium.webp");
    for t in [
        transform(800, 800, Fit::FitIn),
        transform(150, 150, Fit::Fill),
        transform(100, 60, Fit::Stretch),
    ] {
        let geometry = compute_geometry(2560, 1600, &t);
        let shrink = shrink_on_load(Format::Webp, &geometry);
        assert!(shrink > 1.0, "{t:?}");
        let full = normalise(decode_webp(&source, (2560, 1600), 1.0).unwrap()).unwrap();
        assert_eq!((full.width, full.height), (2560, 1600));
        let full = resize(full, &geometry).unwrap();
        let scaled = normalise(decode_webp(&source, (2560, 1600), shrink).unwrap()).unwrap();
        let expected = |n: f64| (n / shrink).round() as u32;
        assert_eq!(
            (scaled.width, scaled.height),
            (expected(2560.0), expected(1600.0)),
            "{t:?}"
        );
        let (w, h) = (scaled.width, scaled.height);
        let scaled = resize(scaled, &geometry.on_decoded(2560, 1600, w, h)).unwrap();
        let diff = mean_abs_diff(&full, &scaled);
        assert!(diff < 2.0, "{t:?}: mean difference {diff:.2} of 255");
    }
    // Through the whole pipeline: the size asked for.
    let r = render(
        &source,
        &transform(800, 800, Fit::FitIn),
        &Limits::default(),
    )
    .unwrap();
    assert_eq!((r.width, r.height), (800, 500));
}

#[test]
fn webp_shrink_on_load_keeps_alpha() {
    // Left half opaque red, right half fully transparent; 1/4 decode for a 50-pixel fit.
    let img = RgbaImage::from_fn(400, 200, |x, _| {
        if x < 200 {
            Rgba([255, 0, 0, 255])
        } else {
            Rgba([0, 0, 255, 0])
        }
    });
    let geometry = compute_geometry(400, 200, &transform(50, 0, Fit::FitIn));
    assert_eq!(shrink_on_load(Format::Webp, &geometry), 4.0);
    let t = Transform {
        format: OutputFormat::Fixed(Format::Png),
        ..transform(50, 0, Fit::FitIn)
    };
    let out = decoded(&render(&webp_of(&img), &t, &Limits::default()).unwrap()).to_rgba8();
    assert_eq!(out.dimensions(), (50, 25));
    assert_eq!(*out.get_pixel(5, 12), Rgba([255, 0, 0, 255]));
    assert_eq!(out.get_pixel(45, 12)[3], 0);
}

#[test]
fn cmyk_jpegs_are_decoded_too() {
    let (w, h) = (64usize, 48usize);
    let cmyk = vec![0u8; w * h * 4];
    let mut compressor = turbojpeg::Compressor::new().unwrap();
    compressor.set_quality(90).unwrap();
    let jpeg = compressor
        .compress_to_vec(turbojpeg::Image {
            pixels: cmyk.as_slice(),
            width: w,
            pitch: w * 4,
            height: h,
            format: turbojpeg::PixelFormat::CMYK,
        })
        .unwrap();
    assert!(
        decode_jpeg(&jpeg, 1).unwrap().is_none(),
        "routed to the fallback decoder"
    );
    let r = render(&jpeg, &transform(32, 0, Fit::FitIn), &Limits::default()).unwrap();
    assert_eq!((r.width, r.height), (32, 24));
}

// -----------------------------------------------------------------------------------------
// Effects, padding, background and rotation.

fn png(img: DynamicImage) -> Vec<u8> {
    encode_as(&img, ImageFormat::Png)
}

fn render_rgba(src: &[u8], t: &Transform) -> RgbaImage {
    decoded(&render(src, t, &Limits::default()).unwrap()).to_rgba8()
}

/// `medium.jpg` fitted into `w`×`h`, as PNG (lossless, so pixels compare exactly).
fn photo(w: u32, h: u32) -> Transform {
    Transform {
        format: OutputFormat::Fixed(Format::Png),
        ..transform(w, h, Fit::FitIn)
    }
}

/// Sum of absolute differences between neighbours: high-frequency energy.
fn energy(img: &RgbaImage) -> u64 {
    let (w, h) = img.dimensions();
    let mut e = 0u64;
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel(x, y).0;
            for q in [(x + 1, y), (x, y + 1)]
                .into_iter()
                .filter(|&(qx, qy)| qx < w && qy < h)
                .map(|(qx, qy)| img.get_pixel(qx, qy).0)
            {
                e += p
                    .iter()
                    .zip(q)
                    .map(|(&a, b)| u64::from(a.abs_diff(b)))
                    .sum::<u64>();
            }
        }
    }
    e
}

#[test]
fn rotation_turns_the_result_clockwise() {
    let src = png(DynamicImage::ImageRgb8(quadrants(40, 20)));
    let (red, green, blue, white) = (
        [255, 0, 0, 255],
        [0, 255, 0, 255],
        [0, 0, 255, 255],
        [255, 255, 255, 255],
    );
    for (rotation, dims, top_left, top_right) in [
        (Rotation::None, (40, 20), red, green),
        (Rotation::Cw90, (20, 40), blue, red),
        (Rotation::Cw180, (40, 20), white, blue),
        (Rotation::Cw270, (20, 40), green, white),
    ] {
        let t = Transform {
            rotation,
            ..Transform::default()
        };
        let out = render_rgba(&src, &t);
        assert_eq!(out.dimensions(), dims, "{rotation:?}");
        assert_eq!(out.get_pixel(0, 0).0, top_left, "{rotation:?}");
        assert_eq!(out.get_pixel(dims.0 - 1, 0).0, top_right, "{rotation:?}");
    }
    // The box is that of the image before it turns: 30x15, then 15x30.
    let t = Transform {
        rotation: Rotation::Cw90,
        ..transform(30, 30, Fit::FitIn)
    };
    assert_eq!(render_rgba(&src, &t).dimensions(), (15, 30));

    // On a photo the rotated image is the same pixels, moved.
    let photo_src = testdata("medium.jpg");
    let plain = render_rgba(&photo_src, &photo(300, 200));
    let (w, h) = plain.dimensions();
    for (rotation, moved) in [
        (
            Rotation::Cw90,
            (|x, y, _w, h| (y, h - 1 - x)) as fn(u32, u32, u32, u32) -> (u32, u32),
        ),
        (Rotation::Cw270, |x, y, w, _h| (w - 1 - y, x)),
        (Rotation::Cw180, |x, y, w, h| (w - 1 - x, h - 1 - y)),
    ] {
        let t = Transform {
            rotation,
            ..photo(300, 200)
        };
        let out = render_rgba(&photo_src, &t);
        let expected = if rotation == Rotation::Cw180 {
            (w, h)
        } else {
            (h, w)
        };
        assert_eq!(out.dimensions(), expected, "{rotation:?}");
        let (ow, oh) = out.dimensions();
        for (x, y) in [
            (0, 0),
            (ow - 1, 0),
            (0, oh - 1),
            (ow - 1, oh - 1),
            (ow / 3, oh / 2),
        ] {
            let (sx, sy) = moved(x, y, w, h);
            assert_eq!(
                out.get_pixel(x, y),
                plain.get_pixel(sx, sy),
                "{rotation:?} ({x}, {y})"
            );
        }
    }
}

#[test]
fn grayscale_is_the_luma_of_each_pixel() {
    let src = testdata("medium.jpg");
    let colour = render_rgba(&src, &photo(200, 200));
    let gray = render_rgba(
        &src,
        &Transform {
            grayscale: true,
            ..photo(200, 200)
        },
    );
    assert_eq!(gray.dimensions(), colour.dimensions());
    let mut colourful = 0;
    for (g, c) in gray.pixels().zip(colour.pixels()) {
        let [r, gg, b, a] = g.0;
        assert!(r == gg && gg == b && a == 255, "{:?}", g.0);
        assert_eq!(r, luma(c.0[0], c.0[1], c.0[2]));
        colourful += usize::from(c.0[0] != c.0[1] || c.0[1] != c.0[2]);
    }
    assert!(colourful > 1000, "the source has colour to remove");
    // Alpha is kept.
    let alpha = png(DynamicImage::ImageRgba8(RgbaImage::from_pixel(
        4,
        4,
        Rgba([200, 10, 10, 77]),
    )));
    let out = render_rgba(
        &alpha,
        &Transform {
            grayscale: true,
            ..Transform::default()
        },
    );
    assert_eq!(out.get_pixel(1, 1).0, [50, 50, 50, 77]);
}

#[test]
fn blur_lowers_detail_and_keeps_flat_images_flat() {
    let src = testdata("medium.jpg");
    let sharp = render_rgba(&src, &photo(400, 400));
    for sigma in [
        Hundredths(50),
        Hundredths(200),
        Hundredths(800),
        MAX_SIGMA_FOR_TEST,
    ] {
        let t = Transform {
            blur: Some(sigma),
            ..photo(400, 400)
        };
        let blurred = render_rgba(&src, &t);
        assert_eq!(blurred.dimensions(), sharp.dimensions());
        let (e0, e1) = (energy(&sharp), energy(&blurred));
        assert!(e1 * 10 < e0 * 9, "sigma {sigma}: energy {e1} vs {e0}");
        // Colours are kept on average (a blur moves light around, it does not add any).
        let mean = |img: &RgbaImage| {
            img.pixels().map(|p| u64::from(p.0[1])).sum::<u64>()
                / u64::from(img.width() * img.height())
        };
        if sigma <= Hundredths(800) {
            assert!(mean(&sharp).abs_diff(mean(&blurred)) <= 3, "sigma {sigma}");
        }
    }
    let mut weaker = u64::MAX;
    for sigma in [
        Hundredths(100),
        Hundredths(300),
        Hundredths(600),
        Hundredths(2000),
    ] {
        let e = energy(&render_rgba(
            &src,
            &Transform {
                blur: Some(sigma),
                ..photo(400, 400)
            },
        ));
        assert!(e < weaker, "a larger sigma blurs more ({sigma})");
        weaker = e;
    }
    let flat = png(DynamicImage::ImageRgb8(RgbImage::from_pixel(
        64,
        48,
        Rgb([37, 150, 201]),
    )));
    for sigma in [
        Hundredths(30),
        Hundredths(250),
        Hundredths(3000),
        MAX_SIGMA_FOR_TEST,
    ] {
        let out = render_rgba(
            &flat,
            &Transform {
                blur: Some(sigma),
                ..Transform::default()
            },
        );
        assert!(
            out.pixels().all(|p| p.0 == [37, 150, 201, 255]),
            "sigma {sigma}"
        );
    }
}

const MAX_SIGMA_FOR_TEST: Hundredths = pixmesh_core::transform::MAX_SIGMA;

#[test]
fn blur_does_not_darken_transparent_edges() {
    // Left half transparent black, right half opaque red.
    let img = RgbaImage::from_fn(32, 8, |x, _| {
        if x < 16 {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([255, 0, 0, 255])
        }
    });
    for sigma in [Hundredths(200), Hundredths(600)] {
        let out = render_rgba(
            &png(DynamicImage::ImageRgba8(img.clone())),
            &Transform {
                blur: Some(sigma),
                ..Transform::default()
            },
        );
        let edge = out.get_pixel(15, 4).0;
        assert!(
            edge[3] > 0 && edge[3] < 255,
            "the edge became translucent: {edge:?}"
        );
        for p in out.pixels().filter(|p| p.0[3] >= 32) {
            assert!(p.0[0] >= 245 && p.0[1] <= 8 && p.0[2] <= 8, "{:?}", p.0);
        }
    }
}

#[test]
fn the_box_blur_approximates_the_gaussian() {
    for sigma in [4.0, 5.5, 10.0, 33.3, 100.0] {
        let variance: f64 = box_radii(sigma)
            .iter()
            .map(|&r| {
                let w = (2 * r + 1) as f64;
                (w * w - 1.0) / 12.0
            })
            .sum();
        let ratio = variance.sqrt() / sigma;
        assert!((0.93..=1.07).contains(&ratio), "sigma {sigma}: {ratio}");
    }
    for sigma in [0.01, 0.5, 1.0, 3.99] {
        let w = gaussian_weights(sigma);
        assert_eq!(w.iter().sum::<u32>(), 65536, "sigma {sigma}");
        assert!(w.len() % 2 == 1 && w[w.len() / 2] == *w.iter().max().unwrap());
    }
    // A single bright pixel spreads symmetrically.
    let (w, h) = (41, 41);
    let mut dot = vec![0u8; w * h];
    dot[20 * w + 20] = 255;
    let mut spread = dot;
    gaussian::<1>(&mut spread, w, h, 1.0);
    assert_eq!(spread[20 * w + 19], spread[20 * w + 21]);
    assert_eq!(spread[19 * w + 20], spread[21 * w + 20]);
    assert!(spread[20 * w + 20] < 255 && spread[20 * w + 19] > 0);
}

#[test]
fn sharpen_adds_detail_and_keeps_flat_images_flat() {
    let src = testdata("medium.jpg");
    let plain = render_rgba(&src, &photo(400, 400));
    let mut previous = energy(&plain);
    for amount in [Hundredths(50), Hundredths(200), Hundredths(500)] {
        let t = Transform {
            sharpen: Some(Sharpen {
                sigma: Hundredths(100),
                amount,
            }),
            ..photo(400, 400)
        };
        let e = energy(&render_rgba(&src, &t));
        assert!(e > previous, "amount {amount}: {e} vs {previous}");
        previous = e;
    }
    let flat = png(DynamicImage::ImageRgb8(RgbImage::from_pixel(
        30,
        20,
        Rgb([90, 60, 30]),
    )));
    let t = Transform {
        sharpen: Some(Sharpen {
            sigma: Hundredths(800),
            amount: Hundredths(1000),
        }),
        ..Transform::default()
    };
    assert!(
        render_rgba(&flat, &t)
            .pixels()
            .all(|p| p.0 == [90, 60, 30, 255])
    );
    // On luminance: a gray image stays gray.
    let t = Transform {
        grayscale: true,
        sharpen: Some(Sharpen {
            sigma: Hundredths(150),
            amount: Hundredths(300),
        }),
        ..photo(200, 200)
    };
    assert!(
        render_rgba(&src, &t)
            .pixels()
            .all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2])
    );
}

#[test]
fn padding_fills_the_box_with_the_background() {
    let blue = Color::rgb(0, 0, 255);
    let src = png(DynamicImage::ImageRgb8(quadrants(200, 100)));
    let t = Transform {
        pad: true,
        background: Some(blue),
        ..transform(100, 100, Fit::FitIn)
    };
    let r = render(&src, &t, &Limits::default()).unwrap();
    assert_eq!((r.width, r.height), (100, 100));
    let out = decoded(&r);
    assert!(
        !out.color().has_alpha(),
        "an opaque background needs no alpha"
    );
    let out = out.to_rgba8();
    for y in (0..25).chain(75..100) {
        assert!(
            out.rows()
                .nth(y as usize)
                .unwrap()
                .all(|p| p.0 == [0, 0, 255, 255]),
            "row {y}"
        );
    }
    assert_eq!(
        out.get_pixel(10, 30).0,
        [255, 0, 0, 255],
        "the image is centred"
    );
    assert_eq!(out.get_pixel(90, 70).0, [255, 255, 255, 255]);
    // Aligned to the top: all the padding below.
    let top = Transform {
        v_align: VAlign::Top,
        ..t
    };
    let out = render_rgba(&src, &top);
    assert_eq!(out.get_pixel(10, 5).0, [255, 0, 0, 255]);
    assert!(
        out.rows()
            .skip(50)
            .all(|mut row| row.all(|p| p.0 == [0, 0, 255, 255]))
    );

    // A photo letterboxed in red, as PNG and as JPEG.
    let photo_src = testdata("medium.jpg");
    let t = Transform {
        pad: true,
        background: Some(Color::rgb(255, 0, 0)),
        ..photo(300, 300)
    };
    let out = render_rgba(&photo_src, &t);
    assert_eq!(out.dimensions(), (300, 300));
    assert_eq!(out.get_pixel(150, 0).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(150, 299).0, [255, 0, 0, 255]);
    assert_ne!(out.get_pixel(150, 150).0, [255, 0, 0, 255]);
    let jpeg = Transform {
        format: OutputFormat::Fixed(Format::Jpeg),
        ..t
    };
    let out = decoded(&render(&photo_src, &jpeg, &Limits::default()).unwrap()).to_rgb8();
    assert_eq!(out.dimensions(), (300, 300));
    assert!(
        near(*out.get_pixel(150, 3), [255, 0, 0], 12),
        "{:?}",
        out.get_pixel(150, 3)
    );

    // Without a background the padding is transparent, and white in JPEG.
    let clear = Transform {
        pad: true,
        ..transform(100, 100, Fit::FitIn)
    };
    let out = render_rgba(&src, &clear);
    assert_eq!(out.get_pixel(50, 5).0[3], 0);
    assert_eq!(out.get_pixel(50, 50).0[3], 255);
    let jpeg = Transform {
        format: OutputFormat::Fixed(Format::Jpeg),
        ..clear
    };
    let out = decoded(&render(&src, &jpeg, &Limits::default()).unwrap()).to_rgb8();
    assert!(near(*out.get_pixel(50, 5), [255, 255, 255], 4));

    // Padding then rotation: the box is that of the image before it turns.
    let turned = Transform {
        rotation: Rotation::Cw90,
        ..transform(100, 50, Fit::FitIn)
    };
    let turned = Transform {
        pad: true,
        ..turned
    };
    assert_eq!(render_rgba(&src, &turned).dimensions(), (50, 100));
    // Only requested sides are padded (the source is 200x100 and is not enlarged).
    for (w, h, dims) in [
        (300, 0, (300, 100)),
        (0, 150, (200, 150)),
        (100, 0, (100, 50)),
    ] {
        let t = Transform {
            pad: true,
            ..transform(w, h, Fit::FitIn)
        };
        assert_eq!(render_rgba(&src, &t).dimensions(), dims, "{w}x{h}");
    }
}

#[test]
fn the_padded_canvas_is_checked_against_the_output_limit() {
    let limits = Limits {
        max_output_pixels: 700_000,
        ..Limits::default()
    };
    let t = transform(1000, 1000, Fit::FitIn);
    assert!(render(&testdata("medium.jpg"), &t, &limits).is_ok());
    let padded = Transform { pad: true, ..t };
    let err = render(&testdata("medium.jpg"), &padded, &limits).unwrap_err();
    assert_eq!(err.http_status(), 413, "{err}");
    assert!(err.to_string().contains("1000x1000"), "{err}");
}

#[test]
fn transparency_is_composited_onto_the_background() {
    // Halves of 16 pixels, so no JPEG block straddles the edge.
    let img = RgbaImage::from_fn(32, 32, |x, _| {
        if x < 16 {
            Rgba([0, 255, 0, 0])
        } else {
            Rgba([0, 0, 255, 255])
        }
    });
    let src = png(DynamicImage::ImageRgba8(img));
    let red = Some(Color::rgb(255, 0, 0));
    let jpeg = Transform {
        format: OutputFormat::Fixed(Format::Jpeg),
        background: red,
        ..Transform::default()
    };
    let out = decoded(&render(&src, &jpeg, &Limits::default()).unwrap()).to_rgb8();
    assert!(
        near(*out.get_pixel(2, 2), [255, 0, 0], 8),
        "{:?}",
        out.get_pixel(2, 2)
    );
    assert!(
        near(*out.get_pixel(29, 29), [0, 0, 255], 24),
        "{:?}",
        out.get_pixel(29, 29)
    );
    // PNG too: the background is under the image whatever the format.
    let out = render_rgba(
        &src,
        &Transform {
            background: red,
            ..Transform::default()
        },
    );
    assert_eq!(out.get_pixel(2, 2).0, [255, 0, 0, 255]);
    assert_eq!(out.get_pixel(29, 29).0, [0, 0, 255, 255]);
    // A translucent background keeps an alpha channel.
    let out = render_rgba(
        &src,
        &Transform {
            background: Some(Color {
                a: 128,
                ..Color::rgb(255, 0, 0)
            }),
            ..Transform::default()
        },
    );
    assert_eq!(out.get_pixel(2, 2).0, [255, 0, 0, 128]);
    assert_eq!(out.get_pixel(29, 29).0, [0, 0, 255, 255]);
    // The real alpha PNG, flattened: no alpha left, and no pixel of the background shows
    // through opaque ones.
    let r = render(
        &testdata("alpha.png"),
        &Transform {
            background: red,
            ..photo(300, 300)
        },
        &Limits::default(),
    )
    .unwrap();
    let out = decoded(&r);
    assert!(!out.color().has_alpha());
    let source =
        decoded(&render(&testdata("alpha.png"), &photo(300, 300), &Limits::default()).unwrap())
            .to_rgba8();
    let out = out.to_rgba8();
    let mut transparent = 0;
    for (o, s) in out.pixels().zip(source.pixels()) {
        match s.0[3] {
            0 => {
                transparent += 1;
                assert_eq!(o.0, [255, 0, 0, 255]);
            }
            255 => assert_eq!(o.0, s.0),
            _ => {}
        }
    }
    assert!(transparent > 0, "alpha.png has transparent pixels");
}

/// `img` encoded as `format` (JPEG at quality 100, or PNG) with `icc` embedded.
fn tagged(img: &RgbImage, format: ImageFormat, icc: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::new();
    let (w, h) = img.dimensions();
    if format == ImageFormat::Jpeg {
        let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 100);
        encoder.set_icc_profile(icc).unwrap();
        encoder
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
            .unwrap();
    } else {
        let mut encoder = PngEncoder::new(&mut out);
        encoder.set_icc_profile(icc).unwrap();
        encoder
            .write_image(img.as_raw(), w, h, ExtendedColorType::Rgb8)
            .unwrap();
    }
    out
}

/// Three 16-pixel columns: sRGB's red, green and blue as Display P3 values (CSS Color 4:
/// `color(display-p3 0.9175 0.2003 0.1386)` is `#f00`, `0.4584 0.9853 0.2983` is `#0f0`,
/// `0.0 0.0 0.9596` is `#00f`, rounded to 8 bits).
fn p3_primaries() -> RgbImage {
    RgbImage::from_fn(48, 16, |x, _| match x / 16 {
        0 => Rgb([234, 51, 35]),
        1 => Rgb([117, 251, 76]),
        _ => Rgb([0, 0, 245]),
    })
}

#[test]
fn display_p3_sources_are_converted_to_srgb() {
    let p3 = ColorProfile::new_display_p3().encode().unwrap();
    let t = Transform {
        format: OutputFormat::Fixed(Format::Png),
        ..transform(24, 0, Fit::FitIn)
    };
    for format in [ImageFormat::Png, ImageFormat::Jpeg] {
        let src = tagged(&p3_primaries(), format, p3.clone());
        let out = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
        assert_eq!(out.dimensions(), (24, 8));
        for (x, expected) in [(4, [255, 0, 0]), (12, [0, 255, 0]), (20, [0, 0, 255])] {
            let px = *out.get_pixel(x, 4);
            assert!(near(px, expected, 8), "{format:?} column {x}: {px:?}");
        }
    }
    // Untagged, or tagged sRGB: the values stay as they are.
    let srgb = ColorProfile::new_srgb().encode().unwrap();
    for src in [
        png(DynamicImage::ImageRgb8(p3_primaries())),
        tagged(&p3_primaries(), ImageFormat::Png, srgb),
    ] {
        let out = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
        assert_eq!(*out.get_pixel(4, 4), Rgb([234, 51, 35]));
    }
    // A profile that does not parse is ignored, not an error.
    let src = tagged(
        &p3_primaries(),
        ImageFormat::Png,
        b"not an icc profile".to_vec(),
    );
    let out = decoded(&render(&src, &t, &Limits::default()).unwrap()).to_rgb8();
    assert_eq!(*out.get_pixel(4, 4), Rgb([234, 51, 35]));
}

#[test]
fn outputs_carry_no_exif_xmp_or_icc() {
    // A JPEG with EXIF (an orientation and an artist), XMP and a Display P3 ICC profile.
    let mut src = jpeg_with_orientation(&quadrants(64, 32), 1);
    let artist = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x3b\x01\x02\0\x05\0\0\0\x1a\0\0\0\0\0\0\0Anne\0";
    let xmp = b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta xmlns:x='adobe:ns:meta/'/>";
    let mut icc = b"ICC_PROFILE\0\x01\x01".to_vec();
    icc.extend_from_slice(&ColorProfile::new_display_p3().encode().unwrap());
    for (marker, payload) in [(0xE1u8, &artist[..]), (0xE1, &xmp[..]), (0xE2, &icc[..])] {
        let mut segment = vec![0xFF, marker];
        segment.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        segment.extend_from_slice(payload);
        src.splice(2..2, segment);
    }
    let has = |bytes: &[u8], needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for needle in [
        &b"Exif\0\0"[..],
        b"Anne",
        b"ns.adobe.com/xap",
        b"ICC_PROFILE",
    ] {
        assert!(has(&src, needle), "the source carries {needle:?}");
    }
    for format in [Format::Jpeg, Format::Png, Format::Webp, Format::Gif] {
        let t = Transform {
            format: OutputFormat::Fixed(format),
            ..transform(32, 0, Fit::FitIn)
        };
        let out = render(&src, &t, &Limits::default()).unwrap().bytes;
        for needle in [
            &b"Exif"[..],
            b"EXIF",
            b"eXIf",
            b"Anne",
            b"ns.adobe.com/xap",
            b"XMP ",
            b"ICC_PROFILE",
            b"iCCP",
            b"ICCP",
        ] {
            assert!(!has(&out, needle), "{format:?} output carries {needle:?}");
        }
    }
}
