//! Why a render failed: [`PipelineError`], the HTTP status of each kind, and the codecs' and
//! `image`'s errors mapped onto it.

use image::ImageError;
use pixmesh_core::transform::Format;

use super::codecs::CodecError;

/// Why a render failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PipelineError {
    /// Not an image format pixmesh decodes, or a variant of one it cannot decode (HTTP 415).
    /// Names what was detected (`"gif"`, `"tiff"`, …) or `"unknown"`.
    #[error("unsupported image format: {0}")]
    UnsupportedFormat(String),
    /// Corrupt or truncated image data (HTTP 422).
    #[error("corrupt image: {0}")]
    Corrupt(String),
    /// The source or the output exceeds a limit (HTTP 413).
    #[error("image too large: {0}")]
    TooLarge(String),
    /// Resizing or encoding failed (HTTP 500).
    #[error("encoding failed: {0}")]
    Encode(String),
    /// The manual crop lies wholly outside the image, so nothing is left (HTTP 400).
    #[error("the crop region lies outside the {0} image")]
    CropOutside(String),
    /// The request asks for something the pipeline cannot do for this source or output,
    /// e.g. keeping an ICC profile in AVIF (HTTP 501). Names what.
    #[error("not implemented: {0}")]
    Unsupported(String),
    /// Every caller waiting for the render went away ([`crate::pipeline::cancel`]); nobody sees the
    /// status (503 for the logs).
    #[error(transparent)]
    Cancelled(#[from] crate::pipeline::cancel::Cancelled),
}

impl PipelineError {
    /// The HTTP status the client sees.
    pub fn http_status(&self) -> u16 {
        match self {
            PipelineError::UnsupportedFormat(_) => 415,
            PipelineError::Corrupt(_) => 422,
            PipelineError::TooLarge(_) => 413,
            PipelineError::Encode(_) => 500,
            PipelineError::CropOutside(_) => 400,
            PipelineError::Unsupported(_) => 501,
            PipelineError::Cancelled(_) => 503,
        }
    }
}

impl From<CodecError> for PipelineError {
    fn from(e: CodecError) -> Self {
        match e {
            CodecError::UnsupportedFormat(s) => PipelineError::UnsupportedFormat(s),
            CodecError::Corrupt(s) => PipelineError::Corrupt(s),
            CodecError::TooLarge(s) => PipelineError::TooLarge(s),
            CodecError::Encode(s) => PipelineError::Encode(s),
        }
    }
}

/// A decoder's `usize` dimension as the `u32` images use.
pub(super) fn dimension(n: usize) -> Result<u32, PipelineError> {
    u32::try_from(n).map_err(|_| PipelineError::TooLarge(format!("dimension {n}")))
}

/// Maps an `image` error onto the pipeline's error model.
pub(super) fn image_error(e: ImageError, format: Format, step: &str) -> PipelineError {
    match e {
        ImageError::Limits(e) => PipelineError::TooLarge(format!("{}: {e}", format.name())),
        ImageError::Unsupported(e) => {
            PipelineError::UnsupportedFormat(format!("{} variant: {e}", format.name()))
        }
        other => PipelineError::Corrupt(format!("{} {step}: {other}", format.name())),
    }
}
