//! pixmesh's pure logic, written and tested once for both sides of the wire.
//!
//! The wasm filter uses it to turn an incoming image URL into a canonical [`render::RenderRequest`];
//! the sidecar uses it to name result objects and compute ETags from that same request. Nothing
//! here performs I/O, reads the clock or allocates without a bound set by its input, so every
//! module builds for `wasm32-wasip1` and natively.
//!
//! - [`transform`]: the grammar-neutral transform model; [`color`]: colours in URLs.
//! - [`grammar`]: what the grammars share: errors, the neutral [`grammar::Target`], expiry.
//! - [`thumbor`]: the thumbor/imagor path grammar, parse ⇄ generate.
//! - [`imgproxy`]: the imgproxy path grammar, parse ⇄ generate.
//! - [`imagor_key`]: the name imagor gives a rendition in its result storage.
//! - [`imagekit`]: the ImageKit URL grammar, parse ⇄ generate.
//! - [`query`]: the query-string (Skymage-style) grammar, parse ⇄ generate.
//! - [`sign`]: URL signatures and their constant-time verification.
//! - [`normalisation`]: what a client may have signed for a path Envoy normalised.
//! - [`keys`]: request-path normalization, path prefixes, base-dir joins and S3 key escaping.
//! - [`buckets`]: the bucket a key is read from (wildcard bucket, bucket routing files).
//! - [`tagging`]: S3 object tagging strings (`k=v&k2=v2`), validated and re-encoded.
//! - [`link`]: the canonical `Link` header.
//! - [`config`] and [`router`]: the filter's configuration and the per-request decision.
//! - [`accept`]: the output format "auto" chooses from the client's `Accept` header.
//! - [`cachekey`]: renditions that vary with configured request headers and cookies.
//! - [`render`]: the render request sent to the sidecar, its canonical form, ETag and result key.
//! - [`vouch`]: the filter's MAC over a render request, which the sidecar checks.
//! - [`call`]: the filter's call mode: the sidecar's answer, and the answer when a call fails.
//! - [`watermark`]: an image from storage composited onto the result.
//! - [`role`]: which source keys a storage role keeps (its path prefix) and where (its base dir).

pub mod accept;
pub mod buckets;
pub mod cachekey;
pub mod call;
pub mod color;
pub mod config;
pub mod effect;
pub mod grammar;
pub mod imagekit;
pub mod imagor_key;
pub mod imgproxy;
pub mod keys;
pub mod link;
pub mod normalisation;
mod percent;
pub mod query;
pub mod render;
pub mod role;
pub mod router;
pub mod sign;
pub mod tagging;
pub mod thumbor;
pub mod transform;
pub mod vouch;
pub mod watermark;
