//! Hostile and ordinary images built in code (nothing is committed), shared by the test
//! crates that render them: `hostile.rs` (through the pipeline, under a counting allocator)
//! and `memory_budget.rs` (through the real binary). Each crate uses a part of them.
#![allow(dead_code)]

pub mod counting;

use image::{ImageEncoder, RgbImage};

pub fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `width`×`height` gradient.
pub fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    })
}

pub fn png_of(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(
            picture(width, height).as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

pub fn jpeg_of(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80)
        .write_image(
            picture(width, height).as_raw(),
            width,
            height,
            image::ExtendedColorType::Rgb8,
        )
        .unwrap();
    out
}

/// A simple lossy WebP (`RIFF`, `WEBP`, one `VP8 ` chunk).
pub fn webp_of(width: u32, height: u32) -> Vec<u8> {
    let img = picture(width, height);
    webp::Encoder::from_rgb(img.as_raw(), width, height)
        .encode(80.0)
        .to_vec()
}

/// One PNG chunk: length, type, data, CRC.
pub fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let mut c = (data.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    c.extend_from_slice(&crc.finalize().to_be_bytes());
    c
}

/// `png` with `chunk` right after `IHDR`.
pub fn png_with_chunk(png: &[u8], chunk: &[u8]) -> Vec<u8> {
    const AFTER_IHDR: usize = 8 + 4 + 4 + 13 + 4;
    let mut out = png[..AFTER_IHDR].to_vec();
    out.extend_from_slice(chunk);
    out.extend_from_slice(&png[AFTER_IHDR..]);
    out
}

/// Writes bits least significant first, as deflate packs them.
pub struct Bits {
    out: Vec<u8>,
    acc: u64,
    count: u32,
}

impl Bits {
    fn new() -> Bits {
        Bits {
            out: Vec::new(),
            acc: 0,
            count: 0,
        }
    }

    /// `count` bits of `value`, least significant first.
    fn put(&mut self, value: u64, count: u32) {
        self.acc |= value << self.count;
        self.count += count;
        while self.count >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.count -= 8;
        }
    }

    /// A Huffman code of `len` bits, most significant bit first.
    fn code(&mut self, code: u32, len: u32) {
        let reversed = code.reverse_bits() >> (32 - len);
        self.put(u64::from(reversed), len);
    }

    fn finish(mut self) -> Vec<u8> {
        if self.count > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

/// A zlib stream that inflates to `n` zero bytes (n ≥ 1): one fixed-Huffman block, a literal
/// zero, then matches of 258 at distance 1 (13 bits each), zeros for the rest.
pub fn zlib_zeros(n: u64) -> Vec<u8> {
    let mut bits = Bits::new();
    bits.put(1, 1); // BFINAL
    bits.put(1, 2); // BTYPE 01: fixed Huffman codes
    let literal_zero = |bits: &mut Bits| bits.code(0x30, 8);
    literal_zero(&mut bits);
    let matches = (n - 1) / 258;
    for _ in 0..matches {
        bits.code(0xC0 + (285 - 280), 8); // length 258
        bits.code(0, 5); // distance 1
    }
    for _ in 0..(n - 1) % 258 {
        literal_zero(&mut bits);
    }
    bits.code(0, 7); // end of block
    let mut out = vec![0x78, 0x01];
    out.extend_from_slice(&bits.finish());
    // Adler-32 of n zeros: a stays 1, b adds it n times.
    let adler = ((n % 65_521) << 16) | 1;
    out.extend_from_slice(&(adler as u32).to_be_bytes());
    out
}

/// A PNG whose `iCCP` profile is `zlib` (compressed).
pub fn png_with_iccp(zlib: &[u8]) -> Vec<u8> {
    let mut data = b"bomb\0\0".to_vec(); // name, NUL, compression method 0
    data.extend_from_slice(zlib);
    png_with_chunk(&png_of(8, 8), &png_chunk(b"iCCP", &data))
}

/// An RGB display profile (ICC v4.3) whose seven LUT tags (`A2B0`–`A2B2`, `B2A0`–`B2A2`,
/// `gamt`) all point at one `mft2` table of `grid`³ entries: a few MiB that a parser expands
/// once per tag.
pub fn icc_sharing_one_lut(grid: u8) -> Vec<u8> {
    let g = usize::from(grid);
    let mut lut = b"mft2\0\0\0\0".to_vec();
    lut.extend_from_slice(&[3, 3, grid, 0]);
    for v in [1i32, 0, 0, 0, 1, 0, 0, 0, 1] {
        lut.extend_from_slice(&(v << 16).to_be_bytes());
    }
    lut.extend_from_slice(&[0, 2, 0, 2]); // two input and two output table entries
    let ramps = [0u8, 0, 0xFF, 0xFF].repeat(3);
    lut.extend_from_slice(&ramps);
    lut.extend_from_slice(&[0x80, 0].repeat(g * g * g * 3));
    lut.extend_from_slice(&ramps);
    let tags: [&[u8; 4]; 7] = [
        b"A2B0", b"A2B1", b"A2B2", b"B2A0", b"B2A1", b"B2A2", b"gamt",
    ];
    let at = 128 + 4 + 12 * tags.len();
    let mut icc = vec![0u8; 128];
    icc[0..4].copy_from_slice(&((at + lut.len()) as u32).to_be_bytes());
    icc[8..12].copy_from_slice(&[4, 0x30, 0, 0]);
    icc[12..16].copy_from_slice(b"mntr");
    icc[16..20].copy_from_slice(b"RGB ");
    icc[20..24].copy_from_slice(b"XYZ ");
    icc[24..30].copy_from_slice(&[0x07, 0xE8, 0, 1, 0, 1]); // 2024-01-01
    icc[36..40].copy_from_slice(b"acsp");
    for (i, v) in [0x0000_F6D6u32, 0x0001_0000, 0x0000_D32D]
        .iter()
        .enumerate()
    {
        icc[68 + 4 * i..72 + 4 * i].copy_from_slice(&v.to_be_bytes()); // D50
    }
    icc.extend_from_slice(&(tags.len() as u32).to_be_bytes());
    for tag in tags {
        icc.extend_from_slice(tag);
        icc.extend_from_slice(&(at as u32).to_be_bytes());
        icc.extend_from_slice(&(lut.len() as u32).to_be_bytes());
    }
    icc.extend_from_slice(&lut);
    icc
}

/// A JPEG with an ICC profile of `len` bytes in `APP2` segments.
pub fn jpeg_with_icc(len: usize) -> Vec<u8> {
    let jpeg = jpeg_of(8, 8);
    let profile = vec![0x55; len];
    let chunks: Vec<&[u8]> = profile.chunks(65_519).collect();
    let mut out = jpeg[..2].to_vec();
    for (i, chunk) in chunks.iter().enumerate() {
        out.extend_from_slice(&[0xFF, 0xE2]);
        out.extend_from_slice(&((chunk.len() + 16) as u16).to_be_bytes());
        out.extend_from_slice(b"ICC_PROFILE\0");
        out.extend_from_slice(&[i as u8 + 1, chunks.len() as u8]);
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// A RIFF chunk: fourcc, little-endian size, payload, padding to an even size.
pub fn riff_chunk(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut c = fourcc.to_vec();
    c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    c.extend_from_slice(payload);
    if payload.len() % 2 == 1 {
        c.push(0);
    }
    c
}

/// An extended WebP (`VP8X`, with the ICC or EXIF flag when `before` or `after` starts with
/// such a chunk) of an 8×8 image: `before` is written before the image data, `after` after
/// it; `riff_size` overrides the RIFF size.
pub fn extended_webp(before: &[u8], after: &[u8], riff_size: Option<u32>) -> Vec<u8> {
    let simple = webp_of(8, 8);
    let vp8 = &simple[12..];
    let flag = |chunk: &[u8]| match chunk.get(..4) {
        Some(b"ICCP") => 0x20,
        Some(b"EXIF") => 0x08,
        _ => 0,
    };
    let mut vp8x = vec![flag(before) | flag(after), 0, 0, 0];
    vp8x.extend_from_slice(&[7, 0, 0, 7, 0, 0]); // canvas 8×8, minus one
    let mut body = b"WEBP".to_vec();
    body.extend_from_slice(&riff_chunk(b"VP8X", &vp8x));
    body.extend_from_slice(before);
    body.extend_from_slice(vp8);
    body.extend_from_slice(after);
    let size = riff_size.unwrap_or(body.len() as u32);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A chunk header claiming `size` bytes, with none of them present.
pub fn riff_chunk_claiming(fourcc: &[u8; 4], size: u32) -> Vec<u8> {
    let mut c = fourcc.to_vec();
    c.extend_from_slice(&size.to_le_bytes());
    c
}

pub const GIF_PALETTE: [u8; 12] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];

/// A GIF whose logical screen is `screen`, with `count` frames of `frame` (width, height) at
/// the origin, all of palette index 1. The frame is LZW-encoded once.
pub fn gif_frames(screen: (u16, u16), frame: (u16, u16), count: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = gif::Encoder::new(&mut out, screen.0, screen.1, &GIF_PALETTE).unwrap();
    let mut f = gif::Frame {
        width: frame.0,
        height: frame.1,
        buffer: std::borrow::Cow::Owned(vec![1; usize::from(frame.0) * usize::from(frame.1)]),
        ..gif::Frame::default()
    };
    f.make_lzw_pre_encoded();
    for _ in 0..count {
        encoder.write_lzw_pre_encoded_frame(&f).unwrap();
    }
    drop(encoder);
    out
}

/// A 4×4 GIF with an ICC profile of `len` bytes in an `ICCRGBG1012` application extension.
pub fn gif_with_icc(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = gif::Encoder::new(&mut out, 4, 4, &GIF_PALETTE).unwrap();
    let profile = vec![0x55; len];
    encoder
        .write_raw_extension(gif::AnyExtension(0xFF), &[b"ICCRGBG1012", &profile])
        .unwrap();
    let frame = gif::Frame {
        width: 4,
        height: 4,
        buffer: std::borrow::Cow::Owned(vec![1; 16]),
        ..gif::Frame::default()
    };
    encoder.write_frame(&frame).unwrap();
    drop(encoder);
    out
}

/// Cuts of `data` at a spread of lengths.
pub fn truncations(data: &[u8]) -> Vec<Vec<u8>> {
    let len = data.len();
    let mut cuts: Vec<usize> = vec![1, 8, 16, 30, 40, 64, 100];
    cuts.extend((1..10).map(|i| len * i / 10));
    cuts.extend([len.saturating_sub(12), len.saturating_sub(2), len - 1]);
    cuts.sort_unstable();
    cuts.dedup();
    cuts.into_iter()
        .filter(|&c| c < len)
        .map(|c| data[..c].to_vec())
        .collect()
}
