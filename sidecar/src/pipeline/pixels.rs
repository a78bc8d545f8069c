//! Step 5: orient (EXIF) and normalise to 8-bit RGB(A) [`Pixels`], what every later step works on.

use fast_image_resize as fr;
use image::DynamicImage;
use image::metadata::Orientation;

use super::error::PipelineError;

/// Applies the EXIF orientation so the pixels are upright.
pub(super) fn apply_orientation(mut image: DynamicImage, orientation: Orientation) -> DynamicImage {
    if orientation != Orientation::NoTransforms {
        image.apply_orientation(orientation);
    }
    image
}

/// Packed 8-bit RGB or RGBA pixels, row-major with no padding.
#[derive(Clone)]
pub(super) struct Pixels {
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) alpha: bool,
    pub(super) data: Vec<u8>,
}

impl Pixels {
    pub(super) fn channels(&self) -> usize {
        if self.alpha { 4 } else { 3 }
    }

    pub(super) fn pixel_type(&self) -> fr::PixelType {
        if self.alpha {
            fr::PixelType::U8x4
        } else {
            fr::PixelType::U8x3
        }
    }

    /// Bytes per row.
    pub(super) fn stride(&self) -> usize {
        self.width as usize * self.channels()
    }
}

/// Converts to 8-bit RGB, or RGBA when the source has an alpha channel. 8-bit RGB(A) sources are
/// not copied.
pub(super) fn normalise(image: DynamicImage) -> Result<Pixels, PipelineError> {
    let (width, height) = (image.width(), image.height());
    if width == 0 || height == 0 {
        return Err(PipelineError::Corrupt(format!(
            "decoded image is {width}x{height}"
        )));
    }
    let alpha = image.color().has_alpha();
    let data = if alpha {
        image.into_rgba8().into_raw()
    } else {
        image.into_rgb8().into_raw()
    };
    Ok(Pixels {
        width,
        height,
        alpha,
        data,
    })
}
