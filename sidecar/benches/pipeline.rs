//! `cargo bench -p pixmesh-sidecar --bench pipeline`: the render pipeline on every test image in
//! testdata/images (and the samples), per output format and operation.
//!
//! Wall time per render on one thread, as criterion reports it. `bench/run` compares CPU time
//! against libvips on the same images; this bench is for tracking pixmesh against itself.

use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pixmesh_core::transform::{Fit, Format, OutputFormat, Transform};
use pixmesh_sidecar::pipeline::{Limits, render};

/// The test images: testdata/images and the samples.
fn images() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut images: Vec<PathBuf> = ["testdata/images", "samples"]
        .iter()
        .filter_map(|dir| std::fs::read_dir(root.join(dir)).ok())
        .flatten()
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| ["jpg", "jpeg", "png", "webp"].contains(&&*e.to_string_lossy()))
        })
        .collect();
    images.sort();
    images
}

/// The operations benchmarked on each image, by name.
fn operations() -> Vec<(&'static str, Transform)> {
    let thumb = |fit, format| Transform {
        width: 800,
        height: 800,
        fit,
        format: OutputFormat::Fixed(format),
        quality: Some(80),
        ..Transform::default()
    };
    vec![
        ("fit-in-800-jpeg", thumb(Fit::FitIn, Format::Jpeg)),
        ("fit-in-800-webp", thumb(Fit::FitIn, Format::Webp)),
        (
            "fill-300x300-jpeg",
            Transform {
                width: 300,
                height: 300,
                ..thumb(Fit::Fill, Format::Jpeg)
            },
        ),
        ("fit-in-800-png", thumb(Fit::FitIn, Format::Png)),
    ]
}

fn pipeline(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, transform) in operations() {
        let mut group = c.benchmark_group(name);
        group.sample_size(10);
        for path in images() {
            let source = std::fs::read(&path).expect("test image readable");
            if render(&source, &transform, &limits).is_err() {
                continue; // the corrupt/hostile test files: not a speed matter
            }
            group.throughput(Throughput::Bytes(source.len() as u64));
            let image = path.file_name().unwrap_or_default().to_string_lossy();
            group.bench_with_input(BenchmarkId::from_parameter(image), &source, |b, source| {
                b.iter(|| render(source, &transform, &limits))
            });
        }
        group.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
