//! Compiles the contract with protox (no system protoc) into
//! - the prost/tonic code of this crate, and
//! - `pixmesh.pb`, the descriptor set Envoy's transcoder loads. It is written with
//!   `encode_file_descriptor_set` because prost-types would drop the `(google.api.http)` options,
//!   and Envoy would then start but never transcode.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true);
    compiler.open_files(["pixmesh/v1/images.proto"])?;
    std::fs::write(
        out.join("pixmesh.pb"),
        compiler.encode_file_descriptor_set(),
    )?;
    tonic_prost_build::configure()
        // Image bytes as `Bytes`: the sidecar streams slices of one rendition (and hands the
        // whole of it to a unary response) without copying it.
        .bytes(".google.api.HttpBody.data")
        .bytes(".pixmesh.v1.CallResponse.body")
        .compile_fds(compiler.file_descriptor_set())?;
    for dir in ["google", "pixmesh"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    Ok(())
}
