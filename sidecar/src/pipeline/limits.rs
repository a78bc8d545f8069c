//! The limits a render is checked against from the header ([`Limits`]: source and output pixels,
//! animation frames, AVIF outputs), and the largest side each output format can hold.

/// Largest width or height of an AVIF that pixmesh writes (libavif's default limit is
/// 16384×16384 pixels in all).
pub const MAX_AVIF_DIMENSION: u32 = 16_384;

/// Largest width or height a JPEG can have.
pub const MAX_JPEG_DIMENSION: u32 = 65_535;

/// Largest width or height a WebP can have.
pub const MAX_WEBP_DIMENSION: u32 = 16_383;

/// Largest width or height a GIF can have.
pub const MAX_GIF_DIMENSION: u32 = 65_535;

/// Resource limits checked from the image header before any pixel is decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest source image, in pixels (width × height from the header). Default 50 MP.
    pub max_source_pixels: u64,
    /// Largest output image, in pixels. Default 50 MP.
    pub max_output_pixels: u64,
    /// Frames of an animation kept in an animated GIF or WebP output (the first ones); 1
    /// renders every animation as its first frame. Default [`DEFAULT_MAX_ANIMATION_FRAMES`].
    pub max_animation_frames: u32,
    /// Largest AVIF output, in pixels (padding included), checked from the header (413
    /// beyond): rav1e's encode time grows with the pixels, about 0.6 s of CPU per megapixel
    /// at the default speed (release build: 10 s for 16 MP, 32 s for 50 MP). Default
    /// [`DEFAULT_MAX_AVIF_OUTPUT_PIXELS`].
    pub max_avif_output_pixels: u64,
}

/// Default [`Limits::max_animation_frames`].
pub const DEFAULT_MAX_ANIMATION_FRAMES: u32 = 100;

/// Default [`Limits::max_avif_output_pixels`]: 16 MP (4896×3264), libavif's default limit of
/// 16384×16384 pixels in all being far beyond what one render should spend on one encode.
pub const DEFAULT_MAX_AVIF_OUTPUT_PIXELS: u64 = 16_000_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_source_pixels: 50_000_000,
            max_output_pixels: 50_000_000,
            max_animation_frames: DEFAULT_MAX_ANIMATION_FRAMES,
            max_avif_output_pixels: DEFAULT_MAX_AVIF_OUTPUT_PIXELS,
        }
    }
}
