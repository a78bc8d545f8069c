//! Keeping the source's ICC profile ([`Transform::keep_icc`]): the output carries the profile's
//! exact bytes and its pixels stay in the source's colour space (no conversion to sRGB).
//!
//! The profile is written into the encoded bytes after encoding, each format as its
//! specification says, so every encoder (and the `max_bytes` search) stays as it is:
//!
//! - JPEG: `APP2` segments `ICC_PROFILE\0`, sequence number, count, then up to 65,519 bytes of
//!   the profile each (ICC.1, annex B.4), right after the JFIF `APP0` segment;
//! - PNG: an `iCCP` chunk (profile name, compression method 0, the zlib-compressed profile)
//!   right after `IHDR`, before any `PLTE` or `IDAT`;
//! - WebP: the extended format: a `VP8X` header (added to a simple lossy or lossless file)
//!   with the ICC flag, and an `ICCP` chunk right after it, as the container specification
//!   orders them (animated WebPs already have a `VP8X`).
//!
//! AVIF (ravif writes no `colr` profile box) and GIF (pixmesh's GIF encoders write no ICC
//! application extension) cannot carry it: a source with a profile to keep and one of those
//! outputs is refused (501) before anything is decoded, never rendered without it. A profile
//! of a grey or CMYK colour space is refused too (501): pixmesh's outputs are RGB, so it would
//! describe pixels that are not there. A source without a profile renders as without
//! `keep_icc`.

use image::ImageDecoder;
use pixmesh_core::transform::{Format, Transform};

use super::encode::Rendered;
use super::error::PipelineError;

/// Largest profile bytes one JPEG `APP2` segment carries: 65,535 minus the length field and
/// the 14-byte `ICC_PROFILE\0` + sequence + count header.
const JPEG_CHUNK: usize = 65_519;

/// The source's ICC profile to embed in the output, when the transform keeps it and there is
/// one; refuses, before anything is decoded, what cannot be kept (see the module
/// documentation). `source` is the source's format, which decides the output's unless the
/// transform fixes it.
pub(super) fn kept(
    decoder: &mut impl ImageDecoder,
    t: &Transform,
    source: Format,
) -> Result<Option<Vec<u8>>, PipelineError> {
    if !t.keep_icc {
        return Ok(None);
    }
    let Some(icc) = decoder
        .icc_profile()
        .ok()
        .flatten()
        .filter(|b| !b.is_empty())
    else {
        return Ok(None);
    };
    if let Ok(profile) = moxcms::ColorProfile::new_from_slice(&icc)
        && profile.color_space != moxcms::DataColorSpace::Rgb
    {
        return Err(PipelineError::Unsupported(format!(
            "keeping an ICC profile of the {:?} colour space (outputs are RGB)",
            profile.color_space
        )));
    }
    // Only "compatible" depends on transparency, and it never chooses AVIF or GIF for a
    // source of another format.
    match t.format.resolve(source, || false) {
        f @ (Format::Avif | Format::Gif) => Err(cannot_carry(f)),
        Format::Jpeg | Format::Png | Format::Webp => Ok(Some(icc)),
    }
}

fn cannot_carry(format: Format) -> PipelineError {
    PipelineError::Unsupported(format!(
        "keeping the ICC profile in {} output",
        format.name()
    ))
}

/// `rendered` with `icc` embedded (unchanged without one).
pub(super) fn embed(rendered: Rendered, icc: Option<&[u8]>) -> Result<Rendered, PipelineError> {
    let Some(icc) = icc else {
        return Ok(rendered);
    };
    let bytes = match rendered.format {
        Format::Jpeg => jpeg(&rendered.bytes, icc)?,
        Format::Png => png(&rendered.bytes, icc)?,
        Format::Webp => webp(&rendered.bytes, icc, (rendered.width, rendered.height))?,
        f @ (Format::Avif | Format::Gif) => return Err(cannot_carry(f)),
    };
    Ok(Rendered { bytes, ..rendered })
}

fn malformed(format: &str) -> PipelineError {
    PipelineError::Encode(format!("{format}: unexpected encoder output"))
}

/// The JPEG with `APP2` ICC segments after its `APP0` (or right after `SOI` without one).
fn jpeg(data: &[u8], icc: &[u8]) -> Result<Vec<u8>, PipelineError> {
    if data.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err(malformed("jpeg"));
    }
    let chunks: Vec<&[u8]> = icc.chunks(JPEG_CHUNK).collect();
    let count = u8::try_from(chunks.len()).map_err(|_| {
        PipelineError::Unsupported(format!(
            "an ICC profile of {} bytes in a JPEG (at most 255 segments of {JPEG_CHUNK})",
            icc.len()
        ))
    })?;
    let mut at = 2;
    if data.get(2..4) == Some(&[0xFF, 0xE0]) {
        let len = data
            .get(4..6)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
            .ok_or_else(|| malformed("jpeg"))?;
        at = 4 + len;
        if at > data.len() {
            return Err(malformed("jpeg"));
        }
    }
    let mut out = Vec::with_capacity(data.len() + icc.len() + 18 * chunks.len());
    out.extend_from_slice(&data[..at]);
    for (i, chunk) in chunks.iter().enumerate() {
        // i < count ≤ 255 and the chunk fits one segment: the casts are exact.
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&((chunk.len() + 16) as u16).to_be_bytes());
        out.extend_from_slice(b"ICC_PROFILE\0");
        out.extend_from_slice(&[i as u8 + 1, count]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&data[at..]);
    Ok(out)
}

/// The PNG with an `iCCP` chunk right after `IHDR`.
fn png(data: &[u8], icc: &[u8]) -> Result<Vec<u8>, PipelineError> {
    // Signature (8), then IHDR: length (4), type (4), 13 bytes of data, CRC (4).
    const AFTER_IHDR: usize = 8 + 4 + 4 + 13 + 4;
    if data.len() < AFTER_IHDR || &data[12..16] != b"IHDR" {
        return Err(malformed("png"));
    }
    let mut chunk_data = b"ICC profile\0\0".to_vec(); // name, NUL, compression method 0
    chunk_data.extend_from_slice(&fdeflate::compress_to_vec(icc));
    let len = u32::try_from(chunk_data.len())
        .ok()
        .filter(|&l| l <= 0x7FFF_FFFF)
        .ok_or_else(|| PipelineError::Unsupported("an ICC profile over 2 GB".into()))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(b"iCCP");
    crc.update(&chunk_data);
    let mut out = Vec::with_capacity(data.len() + chunk_data.len() + 12);
    out.extend_from_slice(&data[..AFTER_IHDR]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b"iCCP");
    out.extend_from_slice(&chunk_data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    out.extend_from_slice(&data[AFTER_IHDR..]);
    Ok(out)
}

/// VP8X flag: the file has an ICC profile.
const VP8X_ICC: u8 = 0x20;
/// VP8X flag: the image has alpha.
const VP8X_ALPHA: u8 = 0x10;

/// The WebP in the extended format with an `ICCP` chunk after `VP8X`; `(width, height)` is
/// the canvas, for a `VP8X` added to a simple file.
fn webp(data: &[u8], icc: &[u8], (width, height): (u32, u32)) -> Result<Vec<u8>, PipelineError> {
    if data.len() < 20 || &data[..4] != b"RIFF" || &data[8..12] != b"WEBP" {
        return Err(malformed("webp"));
    }
    let chunk = |fourcc: &[u8; 4], payload: &[u8]| -> Result<Vec<u8>, PipelineError> {
        let len = u32::try_from(payload.len())
            .map_err(|_| PipelineError::Unsupported("an ICC profile over 4 GB".into()))?;
        let mut c = fourcc.to_vec();
        c.extend_from_slice(&len.to_le_bytes());
        c.extend_from_slice(payload);
        if payload.len() % 2 == 1 {
            c.push(0);
        }
        Ok(c)
    };
    let iccp = chunk(b"ICCP", icc)?;
    let first = &data[12..16];
    let mut body = Vec::with_capacity(data.len() + iccp.len() + 18);
    if first == b"VP8X" {
        // VP8X: fourcc, size 10, flags, 3 reserved, 3 + 3 bytes of canvas size.
        let end = 12 + 8 + 10;
        if data.len() < end {
            return Err(malformed("webp"));
        }
        body.extend_from_slice(&data[12..end]);
        body[8] |= VP8X_ICC;
        body.extend_from_slice(&iccp);
        body.extend_from_slice(&data[end..]);
    } else if first == b"VP8 " || first == b"VP8L" {
        // A VP8L bitstream says whether alpha is used in bit 28 after its signature byte; a
        // lossy image with alpha is already extended (ALPH + VP8).
        let alpha = first == b"VP8L"
            && data
                .get(21..25)
                .is_some_and(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & (1 << 28) != 0);
        let side = |n: u32| -> Result<[u8; 3], PipelineError> {
            let v = n.checked_sub(1).filter(|&v| v < 1 << 24);
            let v = v.ok_or_else(|| malformed("webp"))?;
            let b = v.to_le_bytes();
            Ok([b[0], b[1], b[2]])
        };
        let mut vp8x = [0u8; 10];
        vp8x[0] = VP8X_ICC | if alpha { VP8X_ALPHA } else { 0 };
        vp8x[4..7].copy_from_slice(&side(width)?);
        vp8x[7..10].copy_from_slice(&side(height)?);
        body.extend_from_slice(&chunk(b"VP8X", &vp8x)?);
        body.extend_from_slice(&iccp);
        body.extend_from_slice(&data[12..]);
    } else {
        return Err(malformed("webp"));
    }
    let riff = u32::try_from(body.len() + 4)
        .map_err(|_| PipelineError::Unsupported("an ICC profile over 4 GB".into()))?;
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&riff.to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Bounding what the header's metadata costs.

/// Largest ICC profile pixmesh reads from a source (inflated, for a PNG `iCCP`): real profiles,
/// printers' CMYK LUTs included, stay well under a few MiB, while a PNG's zlib-compressed
/// profile can inflate a thousandfold. Larger is refused (422) before any decoder reads it.
pub const MAX_ICC_BYTES: u64 = 4 << 20;

/// What reading the header's metadata holds at once, per metadata byte ([`metadata_bytes`]): the
/// decoder's copy (a PNG `iCCP` while it inflates: twice, as its buffer grows), the profile
/// handed to the pipeline, the parsed profile (moxcms keeps a copy of a LUT per tag, and its
/// seven LUT tags may all point at one table: about ten copies in all, `tests/hostile.rs`) and,
/// kept, its bytes in the output; generously.
pub(super) const METADATA_COPIES: u64 = 16;

fn icc_too_large(format: Format, size: &str) -> PipelineError {
    PipelineError::Corrupt(format!(
        "{}: the embedded ICC profile is {size}, more than the {} MiB pixmesh reads",
        format.name(),
        MAX_ICC_BYTES >> 20
    ))
}

/// The bytes of metadata the header decoders copy out of `source` (ICC profiles, inflated; EXIF,
/// XMP and text), which [`super::memory_needed`] counts [`METADATA_COPIES`] times, walked from
/// the container without allocating. Refuses before any decoder reads it (422) an ICC profile
/// over [`MAX_ICC_BYTES`] (a PNG's inflated in a fixed window, never whole) and, in a WebP, a
/// metadata chunk that claims more bytes than the file has (the WebP reader allocates what a
/// chunk claims before reading it).
pub(super) fn metadata_bytes(source: &[u8], format: Format) -> Result<u64, PipelineError> {
    let (icc, other) = match format {
        Format::Png => png_metadata(source)?,
        Format::Jpeg => jpeg_metadata(source),
        Format::Webp => webp_metadata(source)?,
        Format::Gif => gif_metadata(source),
        Format::Avif => (avif_icc(source), 0),
    };
    if icc > MAX_ICC_BYTES {
        return Err(icc_too_large(format, &format!("{icc} bytes")));
    }
    Ok(icc.saturating_add(other))
}

fn be32(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn le32(b: &[u8]) -> u64 {
    u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// A PNG's ICC profile (its first `iCCP` before `IDAT`, the one the `png` crate inflates) and
/// its text and EXIF chunks, which it keeps.
fn png_metadata(data: &[u8]) -> Result<(u64, u64), PipelineError> {
    let (mut icc, mut other) = (None, 0u64);
    let mut idat = false;
    let mut pos = 8usize;
    while let Some(header) = data.get(pos..).and_then(|rest| rest.get(..8)) {
        let len = usize::try_from(be32(header)).unwrap_or(usize::MAX);
        let start = pos + 8;
        let end = start.saturating_add(len);
        // A chunk cut short: the decoder reads what there is, then fails.
        let body = &data[start.min(data.len())..end.min(data.len())];
        match &header[4..8] {
            b"IDAT" => idat = true,
            b"IEND" => break,
            b"iCCP" if icc.is_none() && !idat => icc = Some(png_icc_len(body)?),
            b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" => other += body.len() as u64,
            _ => {}
        }
        pos = end.saturating_add(4);
    }
    Ok((icc.unwrap_or(0), other))
}

/// The inflated length of an `iCCP` chunk's profile, counted in a fixed 64 KiB window; refused
/// past [`MAX_ICC_BYTES`]. A chunk the `png` crate ignores (a bad name or method) counts 0; a
/// stream that breaks off counts what it inflated to until then.
fn png_icc_len(body: &[u8]) -> Result<u64, PipelineError> {
    let Some(nul) = body.iter().take(80).position(|&b| b == 0) else {
        return Ok(0);
    };
    if nul == 0 || body.get(nul + 1) != Some(&0) {
        return Ok(0);
    }
    let mut input = &body[nul + 2..];
    // Back-references reach 32 KiB back: the window keeps that much history.
    const HISTORY: usize = 32 << 10;
    let mut window = vec![0u8; 2 * HISTORY];
    let mut decompressor = fdeflate::Decompressor::new();
    let (mut at, mut total) = (0usize, 0u64);
    loop {
        if at == window.len() {
            window.copy_within(HISTORY.., 0);
            at = HISTORY;
        }
        let Ok((consumed, produced)) = decompressor.read(input, &mut window, at, true) else {
            return Ok(total);
        };
        input = &input[consumed..];
        at += produced;
        total += produced as u64;
        if total > MAX_ICC_BYTES {
            return Err(icc_too_large(
                Format::Png,
                &format!("compressed to {} bytes and inflates past that", body.len()),
            ));
        }
        if decompressor.is_done() || (consumed == 0 && produced == 0) {
            return Ok(total);
        }
    }
}

/// A JPEG's ICC profile (`APP2` `ICC_PROFILE` segments) and other application segments
/// (EXIF, XMP), which the JPEG reader copies.
fn jpeg_metadata(data: &[u8]) -> (u64, u64) {
    let (mut icc, mut other) = (0u64, 0u64);
    for segment in super::sniff::jpeg_segments(data) {
        let len = segment.payload.len() as u64;
        match segment.marker {
            0xE2 if segment.payload.starts_with(b"ICC_PROFILE\0") => icc += len,
            0xE0..=0xEF => other += len,
            _ => {}
        }
    }
    (icc, other)
}

/// An extended WebP's `ICCP`, `EXIF` and `XMP ` chunks (the first of each, as the WebP reader
/// records them); refuses one that runs past the end of the file.
fn webp_metadata(data: &[u8]) -> Result<(u64, u64), PipelineError> {
    if data.get(12..16) != Some(&b"VP8X"[..]) {
        return Ok((0, 0));
    }
    let riff_end = 8u64.saturating_add(le32(&data[4..8]));
    // The first ICCP, EXIF and XMP chunk's sizes.
    let mut sizes: [Option<u64>; 3] = [None; 3];
    let mut pos = 12usize;
    while (pos as u64) < riff_end
        && let Some(header) = data.get(pos..).and_then(|rest| rest.get(..8))
    {
        let size = le32(&header[4..8]);
        let kind = [b"ICCP", b"EXIF", b"XMP "]
            .iter()
            .position(|k| header[..4] == k[..]);
        if let Some(kind) = kind
            && sizes[kind].is_none()
        {
            if (pos as u64 + 8).saturating_add(size) > data.len() as u64 {
                return Err(PipelineError::Corrupt(format!(
                    "webp: the {} chunk claims {size} bytes, past the end of the file",
                    String::from_utf8_lossy(&header[..4]).trim_end()
                )));
            }
            sizes[kind] = Some(size);
        }
        let next = (pos as u64 + 8).saturating_add(size + (size & 1));
        pos = usize::try_from(next).unwrap_or(usize::MAX);
    }
    let [icc, exif, xmp] = sizes.map(|s| s.unwrap_or(0));
    Ok((icc, exif.saturating_add(xmp)))
}

/// A GIF's ICC profiles (`ICCRGBG1012` application extensions) and XMP (`XMP DataXMP`), which
/// the GIF reader collects, over the whole file (it reads them between frames too).
fn gif_metadata(data: &[u8]) -> (u64, u64) {
    let (mut icc, mut other) = (0u64, 0u64);
    let Some(&flags) = data.get(10) else {
        return (0, 0);
    };
    let palette = |flags: u8| match flags & 0x80 {
        0 => 0,
        _ => 3 << ((flags & 7) + 1),
    };
    // The sub-blocks starting at `pos`: their payload bytes and where they end.
    let sub_blocks = |mut pos: usize| -> (u64, usize) {
        let mut bytes = 0u64;
        while let Some(&n) = data.get(pos) {
            pos += 1 + usize::from(n);
            if n == 0 {
                break;
            }
            bytes += u64::from(n);
        }
        (bytes, pos)
    };
    let mut pos = 13 + palette(flags);
    loop {
        match data.get(pos) {
            Some(0x21) => {
                let label = data.get(pos + 1).copied();
                let id = data
                    .get(pos + 2)
                    .and_then(|&n| data.get(pos + 3..pos + 3 + usize::from(n)));
                if label == Some(0xFF)
                    && let Some(id) = id
                {
                    let (bytes, end) = sub_blocks(pos + 3 + id.len());
                    match id {
                        b"ICCRGBG1012" => icc += bytes,
                        b"XMP DataXMP" => other += bytes,
                        _ => {}
                    }
                    pos = end;
                } else {
                    pos = sub_blocks(pos + 2).1;
                }
            }
            Some(0x2C) => {
                let Some(&local) = data.get(pos + 9) else {
                    break;
                };
                // Descriptor, local palette, LZW minimum code size, then the data sub-blocks.
                pos = sub_blocks(pos + 10 + palette(local) + 1).1;
            }
            _ => break,
        }
    }
    (icc, other)
}

/// An AVIF's ICC profiles: every `colr` box of type `prof` or `rICC`, by its declared size
/// (a box's header cannot hide in the file, and a false match only adds to the count).
fn avif_icc(data: &[u8]) -> u64 {
    data.windows(8)
        .enumerate()
        .filter(|(at, w)| *at >= 4 && &w[..4] == b"colr" && matches!(&w[4..], b"prof" | b"rICC"))
        .map(|(at, _)| be32(&data[at - 4..at]).saturating_sub(12))
        .fold(0u64, u64::saturating_add)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::codecs::jpeg::{JpegDecoder, JpegEncoder};
    use image::codecs::png::{PngDecoder, PngEncoder};
    use image::codecs::webp::WebPDecoder;
    use image::{ExtendedColorType, ImageEncoder, RgbImage, RgbaImage};
    use moxcms::ColorProfile;
    use pixmesh_core::transform::{Fit, OutputFormat};

    use super::super::{Limits, memory_needed, render};
    use super::*;

    /// `img` as a PNG or JPEG (quality 100) with `icc` embedded by `image`'s encoders.
    fn tagged(img: &RgbaImage, format: Format, icc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (w, h) = img.dimensions();
        if format == Format::Jpeg {
            let rgb = image::DynamicImage::ImageRgba8(img.clone()).to_rgb8();
            let mut encoder = JpegEncoder::new_with_quality(&mut out, 100);
            encoder.set_icc_profile(icc.to_vec()).unwrap();
            encoder
                .write_image(rgb.as_raw(), w, h, ExtendedColorType::Rgb8)
                .unwrap();
        } else {
            let mut encoder = PngEncoder::new(&mut out);
            encoder.set_icc_profile(icc.to_vec()).unwrap();
            encoder
                .write_image(img.as_raw(), w, h, ExtendedColorType::Rgba8)
                .unwrap();
        }
        out
    }

    /// The ICC profile `image`'s decoder reads from an encoded output.
    fn profile_of(bytes: &[u8], format: Format) -> Option<Vec<u8>> {
        let cursor = Cursor::new(bytes);
        match format {
            Format::Jpeg => JpegDecoder::new(cursor).unwrap().icc_profile().unwrap(),
            Format::Png => PngDecoder::new(cursor).unwrap().icc_profile().unwrap(),
            Format::Webp => WebPDecoder::new(cursor).unwrap().icc_profile().unwrap(),
            other => panic!("{other:?} carries no profile"),
        }
    }

    /// sRGB red as Display P3 values, in 16×16 pixels, opaque or half transparent.
    fn p3_red(alpha: u8) -> RgbaImage {
        RgbaImage::from_pixel(16, 16, image::Rgba([234, 51, 35, alpha]))
    }

    fn keep(format: Format) -> Transform {
        Transform {
            width: 8,
            fit: Fit::FitIn,
            format: OutputFormat::Fixed(format),
            keep_icc: true,
            ..Transform::default()
        }
    }

    #[test]
    fn jpeg_png_and_webp_outputs_carry_the_exact_profile_and_unconverted_pixels() {
        let p3 = ColorProfile::new_display_p3().encode().unwrap();
        for (source_format, alpha) in [(Format::Jpeg, 255), (Format::Png, 255), (Format::Png, 128)]
        {
            let source = tagged(&p3_red(alpha), source_format, &p3);
            for format in [Format::Jpeg, Format::Png, Format::Webp] {
                let out = render(&source, &keep(format), &Limits::default()).unwrap();
                let what = format!("{source_format:?} (alpha {alpha}) to {format:?}");
                assert_eq!(
                    profile_of(&out.bytes, format).as_deref(),
                    Some(&p3[..]),
                    "{what}"
                );
                let pixels = image::load_from_memory(&out.bytes).unwrap().to_rgba8();
                assert_eq!(pixels.dimensions(), (8, 8), "{what}");
                let px = pixels.get_pixel(4, 4).0;
                if alpha == 255 || format == Format::Jpeg {
                    // Still the P3 values, not sRGB's (255, 0, 0); JPEG flattens onto white.
                    let expected = if alpha == 255 {
                        [234, 51, 35]
                    } else {
                        [244, 153, 145]
                    };
                    for (c, e) in px[..3].iter().zip(expected) {
                        assert!(c.abs_diff(e) <= 6, "{what}: {px:?}");
                    }
                } else {
                    assert!(px[3].abs_diff(alpha) <= 2, "{what}: alpha kept, {px:?}");
                }
            }
            // Without keep_icc, the default: converted, no profile.
            let t = Transform {
                keep_icc: false,
                ..keep(Format::Png)
            };
            let out = render(&source, &t, &Limits::default()).unwrap();
            assert_eq!(profile_of(&out.bytes, Format::Png), None);
        }
    }

    #[test]
    fn a_profile_over_one_jpeg_segment_is_split_and_reassembled() {
        // Not a profile moxcms parses (it is kept as it is), 2.5 segments long.
        let blob: Vec<u8> = (0..JPEG_CHUNK * 5 / 2).map(|i| (i % 251) as u8).collect();
        let source = tagged(&p3_red(255), Format::Png, &blob);
        let out = render(&source, &keep(Format::Jpeg), &Limits::default()).unwrap();
        assert_eq!(profile_of(&out.bytes, Format::Jpeg), Some(blob));
        let segments = out
            .bytes
            .windows(12)
            .filter(|w| w == b"ICC_PROFILE\0")
            .count();
        assert_eq!(segments, 3);
    }

    #[test]
    fn outputs_that_cannot_carry_a_profile_are_refused_not_stripped() {
        let p3 = ColorProfile::new_display_p3().encode().unwrap();
        let source = tagged(&p3_red(255), Format::Png, &p3);
        for format in [Format::Avif, Format::Gif] {
            let e = render(&source, &keep(format), &Limits::default()).unwrap_err();
            assert_eq!(e.http_status(), 501, "{format:?}: {e}");
            assert!(e.to_string().contains(format.name()), "{e}");
        }
        let gray = ColorProfile::new_gray_with_gamma(2.2).encode().unwrap();
        let source = tagged(&p3_red(255), Format::Png, &gray);
        let e = render(&source, &keep(Format::Png), &Limits::default()).unwrap_err();
        assert_eq!(e.http_status(), 501, "{e}");
        // Without a profile there is nothing to keep: AVIF renders.
        let mut plain = Vec::new();
        PngEncoder::new(&mut plain)
            .write_image(p3_red(255).as_raw(), 16, 16, ExtendedColorType::Rgba8)
            .unwrap();
        assert!(render(&plain, &keep(Format::Gif), &Limits::default()).is_ok());
    }

    #[test]
    fn profiles_over_the_limit_are_refused_before_any_decoder_reads_them() {
        let limits = Limits::default();
        // Zeros: a PNG's compressed profile of a few KiB.
        let over = vec![0u8; MAX_ICC_BYTES as usize + 1];
        for (format, t) in [
            (Format::Png, keep(Format::Png)),
            (Format::Png, Transform::default()),
            (Format::Jpeg, keep(Format::Jpeg)),
        ] {
            let source = tagged(&p3_red(255), format, &over);
            for err in [
                render(&source, &t, &limits).unwrap_err(),
                memory_needed(&source, &t, &limits).unwrap_err(),
            ] {
                assert_eq!(err.http_status(), 422, "{format:?}: {err}");
                assert!(err.to_string().contains("ICC profile"), "{err}");
            }
        }
        // Under it, what the header's metadata holds is reserved.
        let under = vec![0u8; 1 << 20];
        for format in [Format::Png, Format::Jpeg] {
            let source = tagged(&p3_red(255), format, &under);
            let needed = memory_needed(&source, &keep(format), &limits).unwrap();
            assert!(needed >= METADATA_COPIES << 20, "{format:?}: {needed}");
            assert!(render(&source, &keep(format), &limits).is_ok());
        }
    }

    #[test]
    fn webp_metadata_chunks_past_the_end_of_the_file_are_refused() {
        let mut lossless = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut lossless)
            .write_image(p3_red(255).as_raw(), 16, 16, ExtendedColorType::Rgba8)
            .unwrap();
        let with = webp(&lossless, b"not a profile", (16, 16)).unwrap();
        let t = Transform::default();
        assert!(render(&with, &t, &Limits::default()).is_ok());
        // An EXIF chunk after the image claims 4 GB: the WebP reader would allocate them all
        // to read the orientation.
        let mut claiming = with.clone();
        claiming[20] |= 0x08; // VP8X: has EXIF
        claiming.extend_from_slice(b"EXIF");
        claiming.extend_from_slice(&0xFFFF_FF00u32.to_le_bytes());
        let riff = (claiming.len() - 8) as u32;
        claiming[4..8].copy_from_slice(&riff.to_le_bytes());
        for err in [
            render(&claiming, &t, &Limits::default()).unwrap_err(),
            memory_needed(&claiming, &t, &Limits::default()).unwrap_err(),
        ] {
            assert_eq!(err.http_status(), 422, "{err}");
            assert!(err.to_string().contains("past the end"), "{err}");
        }
    }

    #[test]
    fn metadata_walks_never_panic_on_damaged_containers() {
        let png_chunk = |kind: &[u8; 4], len: u32| {
            let mut c = b"\x89PNG\r\n\x1a\n".to_vec();
            c.extend_from_slice(&len.to_be_bytes());
            c.extend_from_slice(kind);
            c
        };
        // Lengths that run past the end, up to the largest.
        for len in [0, 1, 0x7FFF_FFFF, u32::MAX] {
            for kind in [b"iCCP", b"tEXt", b"IDAT", b"abcd"] {
                assert!(metadata_bytes(&png_chunk(kind, len), Format::Png).is_ok());
            }
        }
        // xorshift64: a fixed sequence, so a failure reproduces.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let starts: [&[u8]; 5] = [
            b"\x89PNG\r\n\x1a\n",
            b"\xFF\xD8\xFF",
            b"RIFF\0\0\0\0WEBPVP8X",
            b"GIF89a",
            b"\0\0\0\x20ftypavif",
        ];
        for _ in 0..5_000 {
            let start = starts[(next() % 5) as usize];
            let mut data = start.to_vec();
            data.extend((0..next() % 300).map(|_| next() as u8));
            for format in [
                Format::Png,
                Format::Jpeg,
                Format::Webp,
                Format::Gif,
                Format::Avif,
            ] {
                // Ok or a typed error; a panic fails the test.
                let _ = metadata_bytes(&data, format);
            }
        }
    }

    #[test]
    fn a_real_photo_keeps_its_profile_in_a_lossless_webp_container_too() {
        let photo = super::super::tests::testdata("medium.jpg");
        let rgb = image::load_from_memory(&photo).unwrap().to_rgb8();
        let small = RgbImage::from_fn(64, 40, |x, y| *rgb.get_pixel(x * 40, y * 40));
        let rgba = image::DynamicImage::ImageRgb8(small).to_rgba8();
        let p3 = ColorProfile::new_display_p3().encode().unwrap();
        // A simple lossless WebP (VP8L) from `image`: the VP8X header is added to it.
        let mut lossless = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut lossless)
            .write_image(rgba.as_raw(), 64, 40, ExtendedColorType::Rgba8)
            .unwrap();
        assert_eq!(&lossless[12..16], b"VP8L");
        let with = webp(&lossless, &p3, (64, 40)).unwrap();
        assert_eq!(&with[12..16], b"VP8X");
        assert_eq!(profile_of(&with, Format::Webp), Some(p3.clone()));
        let back = image::load_from_memory(&with).unwrap().to_rgba8();
        assert_eq!(back.as_raw(), rgba.as_raw(), "the image data is untouched");
        // And the pipeline's own lossy WebP of a tagged JPEG.
        let source = tagged(&rgba, Format::Jpeg, &p3);
        let out = render(&source, &keep(Format::Webp), &Limits::default()).unwrap();
        assert_eq!(profile_of(&out.bytes, Format::Webp), Some(p3));
    }
}
