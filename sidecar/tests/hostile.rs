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

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};

use pixmesh_core::transform::{Fit, Format, OutputFormat, Transform};
use pixmesh_sidecar::pipeline::{self, Limits, PipelineError};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const MIB: u64 = 1 << 20;

/// What `memory_needed` itself may allocate (it runs before anything is reserved): header
/// parsing, plus what a decoder copies of the source.
fn header_bound(source: &[u8]) -> u64 {
    32 * MIB + 2 * source.len() as u64
}

/// What a render whose header is refused may allocate before it answers.
const REFUSAL_BOUND: u64 = 8 * MIB;

mod support;

use support::counting::{Counting, peak_during};
use support::*;

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
