//! pixmesh's pure logic, written and tested once for both sides of the wire.
//!
//! The wasm filter uses it to turn an incoming image URL into a canonical [`render::RenderRequest`];
//! the sidecar uses it to name result objects and compute ETags from that same request. Nothing
//! here performs I/O, reads the clock or allocates without a bound set by its input, so every
//! module builds for `wasm32-wasip1` and natively.
//!
//! - [`transform`]: the grammar-neutral transform model.
//! - [`thumbor`]: the thumbor/imagor path grammar, parse ⇄ generate.
//! - [`sign`]: URL signatures and their constant-time verification.
//! - [`keys`]: request-path normalization, base-dir joins and S3 key escaping.
//! - [`link`]: the canonical `Link` header.
//! - [`config`] and [`router`]: the filter's configuration and the per-request decision.
//! - [`render`]: the render request sent to the sidecar, its canonical form, ETag and result key.

pub mod config;
pub mod keys;
pub mod link;
mod percent;
pub mod render;
pub mod router;
pub mod sign;
pub mod thumbor;
pub mod transform;
