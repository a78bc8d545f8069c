//! Hostile images through the pipeline the sidecar runs: `memory_needed` (what the render
//! reserves, from the header alone), then `render`. The corpus is generated here (nothing is
//! committed): ICC bombs (a PNG `iCCP` whose zlib stream inflates to hundreds of MiB, JPEG
//! `APP2` and WebP `ICCP` profiles over the pipeline's limit, WebP metadata chunks that claim
//! gigabytes past the end of the file), GIFs whose frames are far larger than their logical
//! screen, GIFs of many large frames, declared-size bombs, bad chunks and CRCs, and truncations
//! of a valid image of every format.
//!
//! For every item: no panic; `memory_needed`'s own work (the header) stays small; what `render`
//! allocates at its peak stays within what `memory_needed` reserved, or, when the header is
//! refused, within a small fixed bound; and every failure is a 413, 415 or 422.
//!
//! Allocations are counted by this binary's global allocator (as in `memory_estimate.rs`), so
//! what C libraries allocate with their own `malloc` (libjpeg-turbo, libwebp, libdav1d) is not
//! seen here.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};

use image::{ImageEncoder, RgbImage};
use pixmesh_core::transform::{Fit, Format, OutputFormat, Transform};
use pixmesh_sidecar::pipeline::{self, Limits, PipelineError};

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicU64 = AtomicU64::new(0);
static PEAK: AtomicU64 = AtomicU64::new(0);

fn grew(bytes: usize) {
    let now = IN_USE.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    IN_USE.fetch_sub(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as the new block arriving before the old one leaves, as a move does.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The most bytes in use at once while `f` runs, beyond what was in use before it.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(before))
}

const MIB: u64 = 1 << 20;

/// What `memory_needed` itself may allocate (it runs before anything is reserved): header
/// parsing, plus what a decoder copies of the source.
fn header_bound(source: &[u8]) -> u64 {
    32 * MIB + 2 * source.len() as u64
}

/// What a render whose header is refused may allocate before it answers.
const REFUSAL_BOUND: u64 = 8 * MIB;

// ---------------------------------------------------------------------------------------------
// Building blocks.

fn testdata(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/images")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A `width`×`height` gradient.
fn picture(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
    })
}

fn png_of(width: u32, height: u32) -> Vec<u8> {
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

fn jpeg_of(width: u32, height: u32) -> Vec<u8> {
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
fn webp_of(width: u32, height: u32) -> Vec<u8> {
    let img = picture(width, height);
    webp::Encoder::from_rgb(img.as_raw(), width, height)
        .encode(80.0)
        .to_vec()
}

/// One PNG chunk: length, type, data, CRC.
fn png_chunk(kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
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
fn png_with_chunk(png: &[u8], chunk: &[u8]) -> Vec<u8> {
    const AFTER_IHDR: usize = 8 + 4 + 4 + 13 + 4;
    let mut out = png[..AFTER_IHDR].to_vec();
    out.extend_from_slice(chunk);
    out.extend_from_slice(&png[AFTER_IHDR..]);
    out
}

/// Writes bits least significant first, as deflate packs them.
struct Bits {
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
fn zlib_zeros(n: u64) -> Vec<u8> {
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
fn png_with_iccp(zlib: &[u8]) -> Vec<u8> {
    let mut data = b"bomb\0\0".to_vec(); // name, NUL, compression method 0
    data.extend_from_slice(zlib);
    png_with_chunk(&png_of(8, 8), &png_chunk(b"iCCP", &data))
}

/// An RGB display profile (ICC v4.3) whose seven LUT tags (`A2B0`–`A2B2`, `B2A0`–`B2A2`,
/// `gamt`) all point at one `mft2` table of `grid`³ entries: a few MiB that a parser expands
/// once per tag.
fn icc_sharing_one_lut(grid: u8) -> Vec<u8> {
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
fn jpeg_with_icc(len: usize) -> Vec<u8> {
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
fn riff_chunk(fourcc: &[u8; 4], payload: &[u8]) -> Vec<u8> {
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
fn extended_webp(before: &[u8], after: &[u8], riff_size: Option<u32>) -> Vec<u8> {
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
fn riff_chunk_claiming(fourcc: &[u8; 4], size: u32) -> Vec<u8> {
    let mut c = fourcc.to_vec();
    c.extend_from_slice(&size.to_le_bytes());
    c
}

const GIF_PALETTE: [u8; 12] = [255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0];

/// A GIF whose logical screen is `screen`, with `count` frames of `frame` (width, height) at
/// the origin, all of palette index 1. The frame is LZW-encoded once.
fn gif_frames(screen: (u16, u16), frame: (u16, u16), count: usize) -> Vec<u8> {
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
fn gif_with_icc(len: usize) -> Vec<u8> {
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
fn truncations(data: &[u8]) -> Vec<Vec<u8>> {
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

// ---------------------------------------------------------------------------------------------
// The corpus.

/// What an item must come to.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Refused from its header by both `memory_needed` and `render`, with one of these
    /// statuses.
    Refused(&'static [u16]),
    /// Rendered within its reservation, or failed with 413, 415 or 422.
    Either,
}

struct Item {
    name: String,
    source: Vec<u8>,
    t: Transform,
    expect: Expect,
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

fn corpus() -> Vec<Item> {
    let mut items = Vec::new();
    let mut add = |name: &str, source: Vec<u8>, t: Transform, expect: Expect| {
        items.push(Item {
            name: name.to_owned(),
            source,
            t,
            expect,
        });
    };
    let png_out = fit(100, 100, Format::Png);
    let gif_out = fit(100, 100, Format::Gif);
    let refused_icc = Expect::Refused(&[415, 422]);

    // ICC bombs and oversized profiles.
    add(
        "PNG iCCP inflating to 400 MiB",
        png_with_iccp(&zlib_zeros(400 * MIB)),
        png_out,
        refused_icc,
    );
    add(
        "PNG iCCP inflating to 400 MiB, profile kept",
        png_with_iccp(&zlib_zeros(400 * MIB)),
        Transform {
            keep_icc: true,
            ..png_out
        },
        refused_icc,
    );
    add(
        "PNG iCCP of 3.5 MiB",
        png_with_iccp(&zlib_zeros(7 * MIB / 2)),
        png_out,
        Expect::Either,
    );
    let shared = icc_sharing_one_lut(84);
    assert!(
        moxcms::ColorProfile::new_from_slice(&shared).is_ok(),
        "a profile moxcms reads"
    );
    add(
        "PNG with a 3.5 MiB profile whose seven LUT tags share one table",
        png_with_iccp(&fdeflate::compress_to_vec(&shared)),
        png_out,
        Expect::Either,
    );
    add(
        "JPEG with a 16 MiB ICC profile in APP2",
        jpeg_with_icc(255 * 65_519),
        fit(100, 100, Format::Jpeg),
        refused_icc,
    );
    add(
        "JPEG with a 3.5 MiB ICC profile in APP2",
        jpeg_with_icc(7 << 19),
        fit(100, 100, Format::Jpeg),
        Expect::Either,
    );
    add(
        "WebP ICCP claiming 4 GiB past the end",
        extended_webp(&[], &riff_chunk_claiming(b"ICCP", 0xFFFF_FF00), None),
        fit(100, 100, Format::Webp),
        Expect::Refused(&[422]),
    );
    add(
        "WebP EXIF claiming 4 GiB past the end",
        extended_webp(&[], &riff_chunk_claiming(b"EXIF", 0xFFFF_FF00), None),
        fit(100, 100, Format::Webp),
        Expect::Refused(&[422]),
    );
    add(
        "WebP with a 12 MiB ICCP",
        extended_webp(&riff_chunk(b"ICCP", &vec![0x55; 12 << 20]), &[], None),
        fit(100, 100, Format::Webp),
        refused_icc,
    );
    add(
        "WebP with a 3.5 MiB ICCP",
        extended_webp(&riff_chunk(b"ICCP", &vec![0x55; 7 << 19]), &[], None),
        fit(100, 100, Format::Webp),
        Expect::Either,
    );
    add(
        "GIF with a 12 MiB ICC extension",
        gif_with_icc(12 << 20),
        png_out,
        refused_icc,
    );
    add(
        "GIF with a 3.5 MiB ICC extension",
        gif_with_icc(7 << 19),
        png_out,
        Expect::Either,
    );

    // GIF frames larger than their screen, and many of them.
    let big_frame = gif_frames((1, 1), (7000, 7000), 1);
    add(
        "GIF: one 7000x7000 frame on a 1x1 screen",
        big_frame.clone(),
        png_out,
        Expect::Either,
    );
    add(
        "GIF: one 7000x7000 frame on a 1x1 screen, kept as a GIF",
        big_frame,
        gif_out,
        Expect::Either,
    );
    add(
        "GIF: two 7000x7000 frames on a 1x1 screen, animated",
        gif_frames((1, 1), (7000, 7000), 2),
        gif_out,
        Expect::Refused(&[413]),
    );
    add(
        "GIF: 100 frames of 2000x2000 on a 1x1 screen, animated",
        gif_frames((1, 1), (2000, 2000), 100),
        gif_out,
        Expect::Refused(&[413]),
    );
    add(
        "GIF: 100 frames of 2000x2000 on a 1x1 screen, animated WebP",
        gif_frames((1, 1), (2000, 2000), 100),
        fit(100, 100, Format::Webp),
        Expect::Refused(&[413]),
    );
    add(
        "GIF: 10 frames of 2000x2000 on a 2000x2000 screen, animated",
        gif_frames((2000, 2000), (2000, 2000), 10),
        gif_out,
        Expect::Either,
    );
    add(
        "GIF: 5000 frames of 1x1",
        gif_frames((1, 1), (1, 1), 5000),
        gif_out,
        Expect::Either,
    );

    // Declared-size bombs.
    let mut png = png_of(4, 4);
    png[16..24].copy_from_slice(&[0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0]); // 100000×100000
    let crc = crc32fast::hash(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    add(
        "PNG claiming 100000x100000",
        png,
        png_out,
        Expect::Refused(&[413]),
    );
    let mut jpeg = jpeg_of(8, 8);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
    add(
        "JPEG claiming 65535x65535",
        jpeg,
        fit(100, 100, Format::Jpeg),
        Expect::Refused(&[413]),
    );
    let mut webp = extended_webp(&[], &[], None);
    webp[24..30].copy_from_slice(&[0xFF, 0x3F, 0, 0xFF, 0x3F, 0]); // canvas 16384×16384
    add(
        "WebP canvas of 16384x16384",
        webp,
        fit(100, 100, Format::Webp),
        Expect::Refused(&[413]),
    );
    add(
        "GIF screen of 65535x65535",
        gif_frames((65_535, 65_535), (1, 1), 1),
        png_out,
        Expect::Refused(&[413]),
    );
    let mut avif = fixture("bars-alpha.avif");
    let at = avif.windows(4).position(|w| w == b"ispe").unwrap() + 8;
    avif[at..at + 8].copy_from_slice(&[0, 0, 0xEA, 0x60, 0, 0, 0xEA, 0x60]); // 60000×60000
    add(
        "AVIF claiming 60000x60000",
        avif,
        png_out,
        Expect::Refused(&[413]),
    );

    // Bad chunks and CRCs.
    let png = png_of(16, 16);
    let idat = png.windows(4).position(|w| w == b"IDAT").unwrap();
    let len = u32::from_be_bytes(png[idat - 4..idat].try_into().unwrap()) as usize;
    let mut bad_crc = png.clone();
    bad_crc[idat + 4 + len] ^= 0xFF;
    add("PNG with a bad IDAT CRC", bad_crc, png_out, Expect::Either);
    add(
        "PNG with an unknown critical chunk",
        png_with_chunk(&png, &png_chunk(b"CRIT", b"data")),
        png_out,
        Expect::Either,
    );
    let mut huge_chunk = png.clone();
    huge_chunk[idat - 4..idat].copy_from_slice(&0x7FFF_FFF0u32.to_be_bytes());
    add(
        "PNG whose IDAT claims 2 GiB",
        huge_chunk,
        png_out,
        Expect::Either,
    );
    add(
        "PNG iCCP that does not inflate",
        png_with_iccp(&[0x78, 0x01, 0xFF, 0xFF, 0xFF, 0xFF]),
        png_out,
        Expect::Either,
    );
    let mut jpeg = jpeg_of(16, 16);
    let app = jpeg.windows(2).position(|w| w == [0xFF, 0xDB]).unwrap();
    jpeg[app + 2..app + 4].copy_from_slice(&[0xFF, 0xFF]);
    add(
        "JPEG whose DQT claims 64 KiB",
        jpeg,
        fit(100, 100, Format::Jpeg),
        Expect::Either,
    );

    // Truncations of a valid image of every format.
    let animated_webp = pipeline::render(
        &testdata("anim.gif"),
        &fit(64, 64, Format::Webp),
        &Limits::default(),
    )
    .unwrap()
    .bytes;
    let valid: Vec<(&str, Vec<u8>, Transform)> = vec![
        ("PNG", png_of(64, 48), png_out),
        ("JPEG", jpeg_of(64, 48), fit(32, 32, Format::Jpeg)),
        ("WebP", webp_of(64, 48), fit(32, 32, Format::Webp)),
        (
            "extended WebP",
            extended_webp(&riff_chunk(b"ICCP", &[0x55; 300]), &[], None),
            fit(32, 32, Format::Webp),
        ),
        ("animated WebP", animated_webp, fit(32, 32, Format::Webp)),
        ("GIF", testdata("anim.gif"), fit(64, 64, Format::Gif)),
        ("AVIF", fixture("bars-alpha.avif"), png_out),
    ];
    for (name, data, t) in valid {
        add(&format!("{name}, whole"), data.clone(), t, Expect::Either);
        for cut in truncations(&data) {
            let n = cut.len();
            add(&format!("{name} cut at {n}"), cut, t, Expect::Either);
        }
    }
    items
}

fn status(e: &PipelineError) -> u16 {
    e.http_status()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_owned())
}

/// One test, so no other test allocates while a render is measured.
#[test]
fn hostile_images_are_refused_or_rendered_within_their_reservation() {
    the_zlib_bomb_inflates_to_what_it_claims();
    let limits = Limits::default();
    let corpus = corpus();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for item in &corpus {
        let name = &item.name;
        let (needed, header_peak) = peak_during(|| {
            catch_unwind(AssertUnwindSafe(|| {
                pipeline::memory_needed(&item.source, &item.t, &limits)
            }))
        });
        let (rendered, peak) = peak_during(|| {
            catch_unwind(AssertUnwindSafe(|| {
                pipeline::render(&item.source, &item.t, &limits)
            }))
        });
        let mut fail = |why: String| failures.push(format!("{name}: {why}"));
        let needed = match needed {
            Ok(n) => n,
            Err(p) => {
                fail(format!("memory_needed panicked: {}", panic_message(&*p)));
                continue;
            }
        };
        let rendered = match rendered {
            Ok(r) => r,
            Err(p) => {
                fail(format!("render panicked: {}", panic_message(&*p)));
                continue;
            }
        };
        let outcome = match &rendered {
            Ok(r) => format!("{}x{} {}", r.width, r.height, r.format.name()),
            Err(e) => format!("{} {e}", status(e)),
        };
        report.push(format!(
            "{name}: {outcome}; header {} KiB, reserved {}, render peak {} KiB",
            header_peak >> 10,
            match &needed {
                Ok(n) => format!("{} KiB", n >> 10),
                Err(e) => format!("refused ({})", status(e)),
            },
            peak >> 10
        ));
        if header_peak > header_bound(&item.source) {
            fail(format!(
                "memory_needed allocated {} MiB reading the header",
                header_peak / MIB
            ));
        }
        if let Err(e) = &needed
            && !matches!(status(e), 413 | 415 | 422)
        {
            fail(format!("memory_needed: status {} ({e})", status(e)));
        }
        if let Err(e) = &rendered
            && !matches!(status(e), 413 | 415 | 422)
        {
            fail(format!("render: status {} ({e})", status(e)));
        }
        let bound = match &needed {
            Ok(n) => *n,
            Err(_) => REFUSAL_BOUND,
        };
        if peak > bound {
            fail(format!(
                "render allocated {} KiB at its peak, more than the {} KiB {}",
                peak >> 10,
                bound >> 10,
                if needed.is_ok() {
                    "memory_needed reserved"
                } else {
                    "a refusal may"
                }
            ));
        }
        match (item.expect, &needed, &rendered) {
            (Expect::Refused(statuses), Err(n), Err(r))
                if statuses.contains(&status(n)) && status(n) == status(r) => {}
            (Expect::Refused(statuses), _, _) => fail(format!(
                "expected a refusal from the header ({statuses:?}) by both, got {}",
                match &needed {
                    Ok(_) => format!("a reservation, then {outcome}"),
                    Err(e) => format!("{} from memory_needed, then {outcome}", status(e)),
                }
            )),
            (Expect::Either, Err(n), Ok(_)) => fail(format!(
                "memory_needed refused ({}) what render rendered",
                status(n)
            )),
            (Expect::Either, _, _) => {}
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(
        failures.is_empty(),
        "{} of {} items failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
}

/// The corpus builders make what they claim (a bomb that does not inflate proves nothing);
/// checked before anything is measured.
fn the_zlib_bomb_inflates_to_what_it_claims() {
    let n = 3 * 258 * 1000 + 77;
    let inflated = fdeflate::decompress_to_vec(&zlib_zeros(n as u64)).unwrap();
    assert_eq!(inflated.len(), n);
    assert!(inflated.iter().all(|&b| b == 0));
    let png = png_with_iccp(&zlib_zeros(1000));
    let mut decoder = image::codecs::png::PngDecoder::new(Cursor::new(&png)).unwrap();
    let icc = image::ImageDecoder::icc_profile(&mut decoder)
        .unwrap()
        .unwrap();
    assert_eq!(icc.len(), 1000);
}
