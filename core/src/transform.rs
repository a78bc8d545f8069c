//! The grammar-neutral transform model every URL grammar maps onto.

/// Largest width or height a URL may ask for. Larger requests are rejected before any work.
pub const MAX_DIMENSION: u32 = 16_384;

/// How the source is fitted into the requested box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fit {
    /// Scale to cover the box, then crop what overflows (thumbor's default).
    #[default]
    Fill,
    /// Scale to fit inside the box, keeping the aspect ratio (thumbor `fit-in`).
    FitIn,
    /// Scale to exactly the box, ignoring the aspect ratio (thumbor `stretch`).
    Stretch,
}

/// Horizontal anchor of a crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HAlign {
    /// Keep the left edge.
    Left,
    /// Keep the centre.
    #[default]
    Center,
    /// Keep the right edge.
    Right,
}

/// Vertical anchor of a crop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VAlign {
    /// Keep the top edge.
    Top,
    /// Keep the middle.
    #[default]
    Middle,
    /// Keep the bottom edge.
    Bottom,
}

/// An output image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JPEG (`image/jpeg`).
    Jpeg,
    /// PNG (`image/png`).
    Png,
    /// WebP (`image/webp`).
    Webp,
}

impl Format {
    /// Every format, in the order they are documented.
    pub const ALL: [Format; 3] = [Format::Jpeg, Format::Png, Format::Webp];

    /// The name used in URLs and result keys.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }

    /// Parses a URL format name (`jpg` is an alias of `jpeg`); `None` when unknown.
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(Format::Jpeg),
            "png" => Some(Format::Png),
            "webp" => Some(Format::Webp),
            _ => None,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jpeg => "image/jpeg",
            Format::Png => "image/png",
            Format::Webp => "image/webp",
        }
    }
}

/// What to do to the source image. `Default` is "re-encode as is".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transform {
    /// Target width in pixels; 0 derives it from the height and the source aspect ratio.
    pub width: u32,
    /// Target height in pixels; 0 derives it from the width and the source aspect ratio.
    pub height: u32,
    /// How the source is fitted into the box.
    pub fit: Fit,
    /// Allow the output to be larger than the source. Off by default.
    pub upscale: bool,
    /// Mirror left to right.
    pub flip_h: bool,
    /// Mirror top to bottom.
    pub flip_v: bool,
    /// Horizontal anchor when [`Fit::Fill`] crops.
    pub h_align: HAlign,
    /// Vertical anchor when [`Fit::Fill`] crops.
    pub v_align: VAlign,
    /// Output format; `None` keeps the source format.
    pub format: Option<Format>,
    /// Encoder quality 1–100 for lossy formats; `None` uses the format's default.
    pub quality: Option<u8>,
}
