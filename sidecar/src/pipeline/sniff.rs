//! Step 1: sniff the format from the magic bytes, refuse truncated files, and walk JPEG segments (a
//! multi-scan JPEG's coefficient buffer counts in the estimate).

use pixmesh_core::transform::Format;

use super::error::PipelineError;

/// Detects the format from the leading bytes. JPEG, PNG, WebP and GIF are decoded; anything
/// else is [`PipelineError::UnsupportedFormat`] naming what was recognised, or `"unknown"`.
pub(super) fn sniff_format(data: &[u8]) -> Result<Format, PipelineError> {
    let at = |offset: usize, magic: &[u8]| data.get(offset..offset + magic.len()) == Some(magic);
    if at(0, &[0xFF, 0xD8, 0xFF]) {
        return Ok(Format::Jpeg);
    }
    if at(0, b"\x89PNG\r\n\x1a\n") {
        return Ok(Format::Png);
    }
    if at(0, b"RIFF") && at(8, b"WEBP") {
        return Ok(Format::Webp);
    }
    if at(0, b"GIF87a") || at(0, b"GIF89a") {
        return Ok(Format::Gif);
    }
    // An AVIF sequence too: the AVIF reader names it when it refuses it.
    if at(4, b"ftyp") && matches!(data.get(8..12), Some(b"avif" | b"avis")) {
        return Ok(Format::Avif);
    }
    let detected = if at(0, b"II*\0") || at(0, b"MM\0*") {
        "tiff"
    } else if at(0, b"BM") {
        "bmp"
    } else if at(4, b"ftyp") {
        match data.get(8..12) {
            Some(b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1") => {
                "heif"
            }
            _ => "iso-bmff",
        }
    } else if at(0, &[0xFF, 0x0A]) || at(0, b"\0\0\0\x0CJXL \r\n\x87\n") {
        "jxl"
    } else if at(0, &[0, 0, 1, 0]) {
        "ico"
    } else if at(0, b"qoif") {
        "qoi"
    } else if at(0, b"8BPS") {
        "psd"
    } else if at(0, b"%PDF") {
        "pdf"
    } else if at(0, b"<svg") || at(0, b"<?xml") {
        "svg"
    } else {
        "unknown"
    };
    Err(PipelineError::UnsupportedFormat(detected.to_owned()))
}

/// Rejects a JPEG without an end-of-image marker after its first scan. The JPEG decoder is
/// lenient and would render a truncated file with a grey lower part; a CDN would cache that as
/// the image, so a truncated upload or an interrupted copy is a 422 instead. (PNG and WebP
/// decoders already fail on truncation: both formats declare their lengths.)
pub(super) fn check_complete(data: &[u8], format: Format) -> Result<(), PipelineError> {
    if format != Format::Jpeg {
        return Ok(());
    }
    let complete = jpeg_segments(data)
        .find(|s| s.marker == SOS)
        .is_some_and(|sos| {
            // Inside entropy-coded data a 0xFF is always followed by 0x00 or a restart marker,
            // so FF D9 after the first scan starts is the real end-of-image marker. It is
            // normally the last two bytes: searched from the end.
            data[sos.offset..]
                .windows(2)
                .rev()
                .any(|w| w == [0xFF, 0xD9])
        });
    if complete {
        Ok(())
    } else {
        Err(PipelineError::Corrupt(
            "jpeg is truncated (no end-of-image marker)".to_owned(),
        ))
    }
}

/// The start-of-scan marker.
pub(super) const SOS: u8 = 0xDA;

/// One marker segment of a JPEG's header.
pub(super) struct JpegSegment<'a> {
    pub(super) marker: u8,
    /// Where the marker starts in the file.
    pub(super) offset: usize,
    /// The segment's payload after its length (empty for standalone markers); cut short when
    /// the file is.
    pub(super) payload: &'a [u8],
}

/// The marker segments of a JPEG up to and including its first start-of-scan, walked by their
/// lengths (so markers inside an EXIF thumbnail are skipped); ends early where the segments do.
pub(super) fn jpeg_segments(data: &[u8]) -> impl Iterator<Item = JpegSegment<'_>> {
    let mut pos = 2; // after SOI
    let mut done = false;
    std::iter::from_fn(move || {
        loop {
            if done || data.get(pos) != Some(&0xFF) {
                return None;
            }
            let marker = *data.get(pos + 1)?;
            let offset = pos;
            match marker {
                0xFF => pos += 1, // fill byte
                0x01 | 0xD0..=0xD8 => {
                    pos += 2; // standalone markers
                    return Some(JpegSegment {
                        marker,
                        offset,
                        payload: &[],
                    });
                }
                _ => {
                    let len = u16::from_be_bytes([*data.get(pos + 2)?, *data.get(pos + 3)?]);
                    let end = (pos + 2 + usize::from(len)).min(data.len());
                    let payload = data.get(pos + 4..end).unwrap_or_default();
                    pos += 2 + usize::from(len);
                    done = marker == SOS;
                    return Some(JpegSegment {
                        marker,
                        offset,
                        payload,
                    });
                }
            }
        }
    })
}

/// What a JPEG's start-of-frame says about its coefficients.
pub(super) struct JpegFrame {
    pub(super) progressive: bool,
    pub(super) width: u64,
    pub(super) height: u64,
    /// Each component's horizontal and vertical sampling factors (at least 1).
    pub(super) sampling: Vec<(u64, u64)>,
}

impl JpegFrame {
    /// Parses a start-of-frame payload; `None` when it is cut short.
    pub(super) fn parse(marker: u8, p: &[u8]) -> Option<JpegFrame> {
        let count = usize::from(*p.get(5)?);
        let sampling = p
            .get(6..6 + 3 * count)?
            .chunks_exact(3)
            .map(|c| (u64::from(c[1] >> 4).max(1), u64::from(c[1] & 0x0F).max(1)))
            .collect();
        Some(JpegFrame {
            progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
            height: u64::from(u16::from_be_bytes([p[1], p[2]])),
            width: u64::from(u16::from_be_bytes([p[3], p[4]])),
            sampling,
        })
    }

    /// Bytes of every DCT coefficient: 64 of 2 bytes per block, each component's blocks
    /// rounded up to whole MCUs as libjpeg allocates them.
    pub(super) fn coefficient_bytes(&self) -> u64 {
        let h_max = self.sampling.iter().map(|s| s.0).max().unwrap_or(1);
        let v_max = self.sampling.iter().map(|s| s.1).max().unwrap_or(1);
        let blocks = |side: u64, factor: u64, max: u64| {
            (side * factor)
                .div_ceil(max)
                .div_ceil(8)
                .next_multiple_of(factor)
        };
        self.sampling
            .iter()
            .map(|&(h, v)| blocks(self.width, h, h_max) * blocks(self.height, v, v_max) * 128)
            .sum()
    }
}

/// Bytes of the coefficient buffer a JPEG decoder keeps for the whole image when the JPEG has
/// more than one scan (progressive, or sequential with its components in separate scans):
/// every DCT coefficient, 2 bytes per sample at full resolution, whatever the DCT scaling.
/// 0 for a single-scan JPEG (decoded a row of blocks at a time) or a header that does not say.
pub(super) fn jpeg_coefficient_bytes(data: &[u8]) -> u64 {
    let mut frame = None;
    for segment in jpeg_segments(data) {
        match segment.marker {
            // Start of frame (not DHT C4, JPG C8, DAC CC).
            m @ (0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF) => {
                frame = JpegFrame::parse(m, segment.payload);
            }
            SOS => {
                let Some(frame) = &frame else {
                    return 0;
                };
                let in_first_scan = segment.payload.first().map_or(0, |&n| usize::from(n));
                if !frame.progressive && in_first_scan >= frame.sampling.len() {
                    return 0;
                }
                return frame.coefficient_bytes();
            }
            _ => {}
        }
    }
    0
}
