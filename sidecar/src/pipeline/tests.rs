//! The render as a whole: each step seen through [`render`] on real and built images; and the
//! helpers (`pub(super)`) the steps' own tests share.

use super::*;
use crate::pipeline::{
    decode::*, effects::*, encode::*, error::*, limits::*, memory::*, pixels::*, sniff::*,
};
use std::io::Cursor;

use image::codecs::png::PngEncoder;
use image::{DynamicImage, ExtendedColorType, ImageEncoder, ImageFormat};
use image::{GenericImageView, Rgb, RgbImage, Rgba, RgbaImage};
use moxcms::ColorProfile;
use pixmesh_core::transform::OutputFormat;
use pixmesh_core::transform::{
    Color, Fit, Format, HAlign, MAX_BYTES_MIN_QUALITY, Transform, VAlign,
};

pub(super) fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(super) fn transform(width: u32, height: u32, fit: Fit) -> Transform {
    Transform {
        width,
        height,
        fit,
        ..Transform::default()
    }
}

pub(super) fn encode_as(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), format).unwrap();
    out
}

pub(super) fn decoded(r: &Rendered) -> DynamicImage {
    image::load_from_memory_with_format(&r.bytes, image_format(r.format)).unwrap()
}

/// The offset just after the first `name` box header in `data` (a naive search, enough
/// for the small files the encoder writes).
pub(super) fn find_box(data: &[u8], name: &[u8; 4]) -> Option<usize> {
    data.windows(4).position(|w| w == name).map(|i| i + 4)
}

/// An AVIF's size from its `ispe` (image spatial extents) property; panics when it is not
/// an AVIF.
pub(super) fn avif_size(data: &[u8]) -> (u32, u32) {
    assert_eq!(&data[4..12], b"ftypavif", "an AVIF file type box");
    let at = find_box(data, b"ispe").expect("an ispe property") + 4; // version, flags
    let u32_at = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().unwrap());
    (u32_at(at), u32_at(at + 4))
}

/// The start-of-frame marker of a JPEG (0xC0 baseline, 0xC2 progressive, …), found by
/// walking its marker segments.
pub(super) fn jpeg_sof(data: &[u8]) -> u8 {
    jpeg_segments(data)
        .map(|s| s.marker)
        .find(|&m| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC))
        .expect("a start-of-frame marker")
}

pub(super) fn jpeg_of(t: Transform) -> Transform {
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
pub(super) fn quadrants(width: u32, height: u32) -> RgbImage {
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
pub(super) fn near(px: Rgb<u8>, expected: [u8; 3], tolerance: u8) -> bool {
    px.0.iter()
        .zip(expected)
        .all(|(&a, b)| a.abs_diff(b) <= tolerance)
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
pub(super) fn jpeg_with_orientation(img: &RgbImage, orientation: u16) -> Vec<u8> {
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
pub(super) fn crc32(bytes: &[u8]) -> u32 {
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
pub(super) fn png_claiming(width: u32, height: u32) -> Vec<u8> {
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

/// Palette of the test GIFs: index 0 red, 1 green, 2 blue, 3 transparent.
pub(super) const GIF_PALETTE: [u8; 12] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];
pub(super) const GIF_COLORS: [[u8; 4]; 4] = [
    [255, 0, 0, 255],
    [0, 255, 0, 255],
    [0, 0, 255, 255],
    [0, 0, 0, 0],
];

/// A GIF whose logical screen is `screen`, with one frame per `(left, top, width, height,
/// palette index)`, each filled with its index.
pub(super) fn gif_with(screen: (u16, u16), frames: &[(u16, u16, u16, u16, u8)]) -> Vec<u8> {
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
pub(super) fn first_image_descriptor(gif: &[u8]) -> usize {
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

pub(super) fn as_png() -> Transform {
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
pub(super) fn webp_of(img: &RgbaImage) -> Vec<u8> {
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

/// `img` encoded as `format` (JPEG at quality 100, or PNG) with `icc` embedded.
pub(super) fn tagged(img: &RgbImage, format: ImageFormat, icc: Vec<u8>) -> Vec<u8> {
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
pub(super) fn p3_primaries() -> RgbImage {
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

pub(super) fn png(img: DynamicImage) -> Vec<u8> {
    encode_as(&img, ImageFormat::Png)
}
