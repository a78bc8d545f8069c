//! `cargo bench -p pixmesh-sidecar --bench steps`: each named step of the pipeline on its own,
//! on medium.jpg of testdata/images (a 2560×1600 photo) scaled to fit 800×800: decode
//! (with shrink-on-load), resize, the effects at the output size, and each encoder. The inputs
//! are the previous step's outputs, prepared once outside the timed loop; each timed step also
//! copies its input (the steps take ownership), so the numbers add up to a little more than
//! what `benches/pipeline.rs` measures for the whole render.
//!
//! Wall time on one thread, as criterion reports it: for tracking pixmesh against itself.

use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use pixmesh_core::transform::{
    Fit, Format, Hundredths, OutputFormat, Rotation, Sharpen, Transform,
};
use pixmesh_sidecar::pipeline::Limits;
use pixmesh_sidecar::pipeline::steps::{self, Stage};

fn source() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/images/medium.jpg");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn transform(format: Format) -> Transform {
    Transform {
        width: 800,
        height: 800,
        fit: Fit::FitIn,
        format: OutputFormat::Fixed(format),
        quality: Some(80),
        grayscale: true,
        blur: Some(Hundredths(200)),
        sharpen: Some(Sharpen {
            sigma: Hundredths(100),
            amount: Hundredths(100),
        }),
        rotation: Rotation::Cw90,
        ..Transform::default()
    }
}

/// An effect step.
type Step = fn(&Stage) -> Stage;

fn steps_bench(c: &mut Criterion) {
    let source = source();
    let limits = Limits::default();
    let t = transform(Format::Jpeg);
    let mut group = c.benchmark_group("steps");
    group.sample_size(20);
    group.bench_function("decode", |b| {
        b.iter(|| steps::decode(&source, &t, &limits).unwrap())
    });
    let decoded = steps::decode(&source, &t, &limits).unwrap();
    group.bench_function("resize", |b| b.iter(|| decoded.resize().unwrap()));
    let resized = decoded.resize().unwrap();
    let effects: [(&str, Step); 4] = [
        ("grayscale", Stage::grayscale),
        ("blur", Stage::blur),
        ("sharpen", Stage::sharpen),
        ("rotate", Stage::rotate),
    ];
    for (name, step) in effects {
        group.bench_function(name, |b| b.iter(|| step(&resized)));
    }
    for (name, format) in [
        ("encode-jpeg", Format::Jpeg),
        ("encode-webp", Format::Webp),
        ("encode-png", Format::Png),
        ("encode-avif", Format::Avif),
    ] {
        let stage = steps::decode(&source, &transform(format), &limits)
            .unwrap()
            .resize()
            .unwrap();
        group.bench_function(name, |b| b.iter(|| stage.encode().unwrap()));
    }
    group.finish();
}

criterion_group!(benches, steps_bench);
criterion_main!(benches);
