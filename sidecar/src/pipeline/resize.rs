//! Step 6: resize (Lanczos3, `fast_image_resize`), the fill crop folded into the resize so crop and
//! resize are one pass.

use fast_image_resize as fr;

use super::error::PipelineError;
use super::geometry::Geometry;
use super::pixels::Pixels;

/// Crops and scales per `g`: nothing when the geometry is the identity, a plain copy when it is
/// a whole-pixel crop at scale 1, otherwise one Lanczos3 pass with the crop folded in.
pub(super) fn resize(src: Pixels, g: &Geometry) -> Result<Pixels, PipelineError> {
    let whole_pixels = g.crop.left.fract() == 0.0
        && g.crop.top.fract() == 0.0
        && g.crop.width == f64::from(g.width)
        && g.crop.height == f64::from(g.height);
    if whole_pixels {
        if g.width == src.width && g.height == src.height {
            return Ok(src);
        }
        return Ok(crop_copy(
            &src,
            g.crop.left as u32,
            g.crop.top as u32,
            g.width,
            g.height,
        ));
    }
    let fail = |e: &dyn std::fmt::Display| PipelineError::Encode(format!("resize: {e}"));
    let pixel_type = src.pixel_type();
    let src_view = fr::images::ImageRef::new(src.width, src.height, &src.data, pixel_type)
        .map_err(|e| fail(&e))?;
    let mut dst = fr::images::Image::new(g.width, g.height, pixel_type);
    let options = fr::ResizeOptions::new()
        .resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3))
        .crop(g.crop.left, g.crop.top, g.crop.width, g.crop.height);
    fr::Resizer::new()
        .resize(&src_view, &mut dst, &options)
        .map_err(|e| fail(&e))?;
    Ok(Pixels {
        width: g.width,
        height: g.height,
        alpha: src.alpha,
        data: dst.into_vec(),
    })
}

/// Copies the `width`×`height` rectangle at (`left`, `top`); the caller keeps it inside `src`.
pub(super) fn crop_copy(src: &Pixels, left: u32, top: u32, width: u32, height: u32) -> Pixels {
    let channels = src.channels();
    let (left, top) = (left.min(src.width - width), top.min(src.height - height));
    let row_len = width as usize * channels;
    let mut data = Vec::with_capacity(row_len * height as usize);
    for row in src
        .data
        .chunks_exact(src.stride())
        .skip(top as usize)
        .take(height as usize)
    {
        let start = left as usize * channels;
        data.extend_from_slice(&row[start..start + row_len]);
    }
    Pixels {
        width,
        height,
        alpha: src.alpha,
        data,
    }
}
