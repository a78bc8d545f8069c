//! Steps 1–3 together: what the header says about a render before any pixel is decoded ([`Plan`]);
//! and step 5b, the geometry planned again on the decoded pixels when the transform trims or crops
//! by attention.

use image::ImageDecoder;
use image::metadata::Orientation;
use pixmesh_core::transform::{Fit, Format, MAX_DIMENSION, Transform};

use super::decode::shrink_on_load;
use super::error::PipelineError;
use super::geometry::{
    Geometry, Rect, budgeted, check_avif_output, check_output_size, compute_geometry_at,
    crop_region, fit_for,
};
use super::header::{check_source_size, read_header, read_orientation, upright_size};
use super::icc;
use super::limits::Limits;
use super::pixels::Pixels;
use super::smart;
use super::sniff::{check_complete, sniff_format};
use super::trim;

/// Step 5b: the geometry on the decoded `pixels` of an upright `width`×`height` source, in
/// source pixels, and the trimmed box it lies in: the planned one in the whole source, unless
/// the transform trims (the geometry is planned again on the trimmed box, [`trim::frame`]) or
/// places its fill crop by attention ([`smart::place`], unless a focus places it).
pub(super) fn replan(
    pixels: &Pixels,
    (width, height): (u32, u32),
    planned: Geometry,
    t: &Transform,
    limits: &Limits,
) -> Result<(Geometry, Rect), PipelineError> {
    if t.trim.is_none() && !t.smart {
        return Ok((planned, Rect::full(width, height)));
    }
    let frame = trim::frame(pixels, (width, height), t.trim);
    let (fw, fh) = (frame.width as u32, frame.height as u32);
    let geometry = match t.trim {
        Some(_) => {
            let g = geometry(fw, fh, t, limits)?.within(&frame);
            let derived = |requested: u32, side: u32| requested == 0 && side > MAX_DIMENSION;
            let one_side = (t.width == 0) != (t.height == 0);
            if one_side && (derived(t.width, g.width) || derived(t.height, g.height)) {
                return Err(PipelineError::TooLarge(format!(
                    "the trimmed image would be {}x{}: a side derived from the trimmed box is \
                     limited to {MAX_DIMENSION}",
                    g.width, g.height
                )));
            }
            g
        }
        None => planned,
    };
    if !t.smart || t.focus.is_some() || !matches!(fit_for(t, fw, fh), Fit::Fill | Fit::FillClamped)
    {
        return Ok((geometry, frame));
    }
    let region = crop_region(fw, fh, t.crop)?;
    let region = Rect {
        left: region.left + frame.left,
        top: region.top + frame.top,
        ..region
    };
    let scale = (
        f64::from(width) / f64::from(pixels.width),
        f64::from(height) / f64::from(pixels.height),
    );
    Ok((smart::place(pixels, scale, &region, geometry), frame))
}

/// What the header says about a render, before any pixel is decoded: steps 1–3 below.
pub(super) struct Plan<D> {
    pub(super) source_format: Format,
    pub(super) decoder: D,
    pub(super) orientation: Orientation,
    /// The upright source size.
    pub(super) width: u32,
    pub(super) height: u32,
    pub(super) geometry: Geometry,
    /// The shrink-on-load factor (JPEG: 1, 2, 4 or 8; WebP: any, at least 1).
    pub(super) shrink: f64,
}

/// Sniffs, bounds the metadata ([`icc::metadata_bytes`]), reads the header, checks the limits
/// and computes the geometry.
pub(super) fn plan<'a>(
    source: &'a [u8],
    t: &Transform,
    limits: &Limits,
) -> Result<Plan<impl ImageDecoder + 'a>, PipelineError> {
    let source_format = sniff_format(source)?;
    check_complete(source, source_format)?;
    icc::metadata_bytes(source, source_format)?;
    let mut decoder = read_header(source, source_format, limits)?;
    check_source_size(decoder.dimensions(), limits)?;
    let orientation = read_orientation(&mut decoder);
    let (width, height) = upright_size(decoder.dimensions(), orientation);
    let geometry = geometry(width, height, t, limits)?;
    let budget = budgeted(geometry, (width, height), t, limits);
    check_avif_output(&budget, t, source_format, limits)?;
    let shrink = shrink_on_load(source_format, &geometry);
    Ok(Plan {
        source_format,
        decoder,
        orientation,
        width,
        height,
        geometry,
        shrink,
    })
}

/// The geometry of `t` on an upright `width`×`height` source: the manual crop, the focal point
/// inside it, the fit; checked against the output limit.
pub(super) fn geometry(
    width: u32,
    height: u32,
    t: &Transform,
    limits: &Limits,
) -> Result<Geometry, PipelineError> {
    let region = crop_region(width, height, t.crop)?;
    let focus = t.focus.map(|f| {
        let (x, y) = f.centre(width, height);
        (x - region.left, y - region.top)
    });
    let geometry =
        compute_geometry_at(region.width as u32, region.height as u32, t, focus).within(&region);
    check_output_size(&geometry, t, limits)?;
    Ok(geometry)
}
