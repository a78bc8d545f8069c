//! Named steps of [`render`] on their own, for `benches/steps.rs` (criterion, per step): the
//! same functions `render` calls, run on the output of the step before. Not an API.

use pixmesh_core::transform::{Format, Transform};

use super::encode::{Encoding, Rendered, has_transparency};
use super::error::PipelineError;
use super::geometry::Geometry;
use super::limits::Limits;
use super::pixels::{Pixels, apply_orientation, normalise};
use super::plan::plan;
/// Pixels between two steps, with the geometry and transform they were planned for.
#[derive(Clone)]
pub struct Stage {
    pixels: Pixels,
    geometry: Geometry,
    t: Transform,
    source_format: Format,
}

/// Sniff, read the header, plan, decode (shrink-on-load included), orient, normalise.
pub fn decode(source: &[u8], t: &Transform, limits: &Limits) -> Result<Stage, PipelineError> {
    let plan = plan(source, t, limits)?;
    let (width, height) = (plan.width, plan.height);
    let image = super::decode(
        source,
        plan.decoder,
        plan.source_format,
        limits,
        plan.shrink,
    )?;
    let pixels = normalise(apply_orientation(image, plan.orientation))?;
    let geometry = plan
        .geometry
        .on_decoded(width, height, pixels.width, pixels.height);
    Ok(Stage {
        pixels,
        geometry,
        t: *t,
        source_format: plan.source_format,
    })
}

impl Stage {
    fn with(&self, pixels: Pixels) -> Stage {
        Stage {
            pixels,
            geometry: self.geometry,
            t: self.t,
            source_format: self.source_format,
        }
    }

    /// The resize, the crop folded in.
    pub fn resize(&self) -> Result<Stage, PipelineError> {
        Ok(self.with(super::resize(self.pixels.clone(), &self.geometry)?))
    }

    /// Grayscale, as the transform asks.
    pub fn grayscale(&self) -> Stage {
        self.with(super::grayscale(self.pixels.clone(), self.t.grayscale))
    }

    /// Blur, as the transform asks.
    pub fn blur(&self) -> Stage {
        self.with(super::blur(self.pixels.clone(), self.t.blur))
    }

    /// Sharpen, as the transform asks.
    pub fn sharpen(&self) -> Stage {
        self.with(super::sharpen(self.pixels.clone(), self.t.sharpen))
    }

    /// Rotate, as the transform asks.
    pub fn rotate(&self) -> Stage {
        self.with(super::rotate(self.pixels.clone(), self.t.rotation))
    }

    /// Encode in the transform's format, with the default [`Encoding`].
    pub fn encode(&self) -> Result<Rendered, PipelineError> {
        let format = self
            .t
            .format
            .resolve(self.source_format, || has_transparency(&self.pixels));
        super::encode(self.pixels.clone(), format, &self.t, &Encoding::default())
    }
}
