//! The C codecs the pipeline calls directly: [`libwebp`] (scaled decoding, animations) and
//! [`dav1d`] (AV1 inside AVIF). Each binding answers with a [`CodecError`], which the pipeline
//! turns into the [`PipelineError`](crate::pipeline::PipelineError) variant of the same name.

pub mod dav1d;
pub mod libwebp;

/// Why a codec call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CodecError {
    /// Not a variant the codec decodes (HTTP 415).
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    /// Corrupt or truncated data (HTTP 422).
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// Over a limit, or out of memory (HTTP 413).
    #[error("image too large: {0}")]
    TooLarge(String),
    /// The codec could not be set up, or encoding failed (HTTP 500).
    #[error("encoding failed: {0}")]
    Encode(String),
}
