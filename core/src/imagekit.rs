//! The ImageKit URL grammar: parse ⇄ generate, and its mapping onto [`Transform`].
//!
//! ```text
//! tr:STEP[:STEP…]/IMAGE-PATH          (transformation in the path, first segment after the endpoint)
//! IMAGE-PATH?tr=STEP[:STEP…]          (transformation in the query)
//! STEP  = PARAM[,PARAM…]
//! PARAM = NAME-VALUE | e-EFFECT[-VALUE]
//! ```
//!
//! The route prefix plays ImageKit's URL endpoint. Query parameters other than `tr`, `ik-s` and
//! `ik-t` are not part of the transform (ImageKit passes them on; cache busters such as
//! `updatedAt` work) but are covered by the signature (see [`crate::sign::ImagekitSigner`]).
//!
//! Semantics follow ImageKit's documentation: without `c`, `w`/`h` keep the aspect ratio, fill
//! the box and crop (`c-maintain_ratio`), enlarging small sources; `c-force` stretches;
//! `c-at_max` fits inside without enlarging, `c-at_max_enlarge` fits and enlarges. `c-at_least`
//! (both sides at least the box's, no crop) has no transform: 501. `fo` anchors
//! the crop; `ar-W-H` derives the missing side from the given one. Chained steps (`…:…`, one per
//! entry of the SDKs' `transformation` array) apply in order; they map onto the one
//! [`Transform`] when the steps after the first only rotate (adding up), set the format and
//! encoding (the later step winning), apply effects in the transform's order onto an image not
//! yet padded or given a background, or give it a background (see `later_step`); an image layer
//! only in the last step. Other chains are 501, like every parameter the pipeline cannot
//! perform. The generated URL is the equivalent single step. [`PARAMS`] is the table of
//! parameters; unknown ones are 400.
//!
//! Effects and padding, with where pixmesh's definition had to be chosen:
//!
//! - `rt-90|180|270` rotates the output clockwise (`rt-N90`: counter-clockwise); `w`/`h` are
//!   those of the image before rotation. `rt-auto` and other angles are 501.
//! - `e-grayscale`.
//! - `bl-RADIUS` (1–100): a Gaussian of sigma RADIUS/2, as thumbor's `blur` in pixmesh.
//! - `e-sharpen[-N]`: ImageKit documents no scale for N, so pixmesh defines an unsharp mask of
//!   sigma 1 and strength N/10 (0–100), `e-sharpen` being `e-sharpen-10` (strength 1).
//! - `cm-pad_resize`: fit inside `w`×`h`, enlarging, and pad to exactly the box with `bg`
//!   (ImageKit's documented default is black), placed by `fo` (`fo-left` puts the padding on
//!   the right).
//! - `bg-RRGGBB` or `bg-RRGGBBAA`, where AA is ImageKit's decimal opacity `00`–`99` (percent);
//!   without `cm-pad_resize` it composites transparency onto the colour. Other forms
//!   (`bg-blurred`, names) are 501.
//!
//! - `cm-extract`: keeps a `w`×`h` region of the source (pixels, or fractions of the source
//!   below 1, as ImageKit's relative sizes) at `x`,`y` (pixels or fractions below 1; a missing
//!   one is 0) or, without them, placed by `fo` (centred by default), and does not resize: the
//!   output is the region. ImageKit refuses regions outside the image; pixmesh clamps them, and
//!   a region wholly outside is 400. `xc`/`yc` (centre coordinates), `cm-pad_extract` and
//!   `c`, `ar` or `dpr` with an extraction (a second step) are 501.
//!
//! `t-true` trims uniform borders of the top-left pixel's colour before anything else, with
//! ImageKit's default threshold 10; `t-N` (1–99) with threshold N, as the largest channel
//! difference still counted as border (see [`crate::transform::Trim`]). `fo-auto` places the
//! crop by pixmesh's attention heuristic (edges, skin tones, saturation; see
//! [`Transform::smart`]), where ImageKit uses its own saliency model; with `cm-extract` it is
//! 501. `cp-true` keeps the source's ICC profile in the output, its pixels unconverted (JPEG,
//! PNG and WebP outputs; see [`Transform::keep_icc`]), and `cp-false`, ImageKit's default,
//! converts to sRGB and writes none.
//! `l-image,i-PATH,…,l-end` (one image layer, in the step) is a watermark: see
//! `layer_watermark` for the subset pixmesh does; text and other layers are 501.
//!
//! Formats: `f-jpg`, `f-png`, `f-webp`, `f-gif` (first frame), `f-avif` fix the output; `f-orig` keeps the
//! source's format, also on a route with `auto_format` (ImageKit's account-wide "best format"
//! setting, which `f-orig` overrides there too); `f-auto` chooses from the client's `Accept`
//! header (see [`crate::accept`]); `f-avif` writes AVIF. The video and vector formats are 501.
//! `pr-true` asks for a progressive JPEG and `pr-false` for a baseline one; without `pr`, the
//! sidecar's configured default applies.
//!
//! The round-trip table in the tests is this module's specification.

use crate::grammar::{
    FormatChoice, GrammarError, Target, apply_dpr, decode_query_component, invalid,
    parse_blur_radius, parse_crop_pixels, parse_crop_size, parse_decimal, parse_dimension,
    parse_format, parse_quality, query_param, unsupported,
};
use crate::percent::decode;
use crate::transform::{
    Color, Crop as CropRegion, CropAt, Fit, Fraction, HAlign, Hundredths, MAX_DIMENSION,
    OutputFormat, Rotation, Sharpen, Span, Transform, Trim, TrimColor, VAlign,
};
use crate::watermark::{Axis, Offset, Watermark, WatermarkImage, anchor_of, axes_at};

/// ImageKit's trim threshold for `t-true`.
const DEFAULT_TRIM_THRESHOLD: u8 = 10;
/// Largest threshold `t-N` takes.
const MAX_TRIM_THRESHOLD: u8 = 99;

/// Most steps a chain may have.
pub const MAX_STEPS: usize = 16;
/// Most parameters a transformation may have, over all steps.
pub const MAX_PARAMS: usize = 64;

/// Where the transformation string is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// `tr:…/IMAGE`.
    Path,
    /// `IMAGE?tr=…`.
    Query,
}

/// One `NAME-VALUE` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Name: `w`, `c`, `e-sharpen`, ….
    pub name: String,
    /// Value; `None` for value-less effects (`e-grayscale`).
    pub value: Option<String>,
}

/// A parsed ImageKit URL (the part after the endpoint).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagekitUrl {
    /// Where the transformation was written; [`Placement::Path`] when there is none.
    pub placement: Placement,
    /// The chained steps, each a list of parameters; empty when there is no transformation.
    pub steps: Vec<Vec<Param>>,
    /// The image path as written (still percent-encoded).
    pub image: String,
}

impl ImagekitUrl {
    /// Parses `path` (everything after the endpoint and its `/`) and the raw `query`.
    pub fn parse(path: &str, query: &str) -> Result<Self, GrammarError> {
        let in_path = path
            .strip_prefix("tr:")
            .and_then(|rest| rest.split_once('/'));
        let in_query = query_param(query, "tr")?;
        let (placement, spec, image) = match (in_path, in_query) {
            (Some(_), Some(_)) => {
                return Err(invalid("tr is given both in the path and in the query"));
            }
            (Some((spec, image)), None) => (Placement::Path, spec.to_owned(), image),
            (None, Some(spec)) => (Placement::Query, decode_query_component(spec)?, path),
            (None, None) => (Placement::Path, String::new(), path),
        };
        if image.is_empty() {
            return Err(invalid("missing image path"));
        }
        Ok(ImagekitUrl {
            placement,
            steps: parse_steps(&spec)?,
            image: image.to_owned(),
        })
    }

    /// The transformation string without `tr:`.
    pub fn transformation(&self) -> String {
        self.steps
            .iter()
            .map(|step| {
                step.iter()
                    .map(|p| match &p.value {
                        Some(v) => format!("{}-{v}", p.name),
                        None => p.name.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The URL after the endpoint: `tr:…/IMAGE`, `IMAGE?tr=…` or `IMAGE`.
    pub fn to_path(&self) -> String {
        if self.steps.is_empty() {
            return self.image.clone();
        }
        match self.placement {
            Placement::Path => format!("tr:{}/{}", self.transformation(), self.image),
            Placement::Query => format!("{}?tr={}", self.image, self.transformation()),
        }
    }

    /// Everything the URL asks for, grammar-neutral (expiry comes from `ik-t`, not from here).
    pub fn to_target(&self) -> Result<Target, GrammarError> {
        let steps: Vec<&Vec<Param>> = self.steps.iter().filter(|s| !s.is_empty()).collect();
        let mut s = State::default();
        let mut watermark = None;
        for (i, step) in steps.iter().enumerate() {
            let (params, layer) = split_layer(step.iter())?;
            if let Some(l) = layer {
                // The watermark goes on the final image: only the last step's is.
                if i + 1 < steps.len() {
                    return Err(unsupported(
                        "chained transformations: a layer before another step",
                    ));
                }
                watermark = Some(layer_watermark(&l)?);
            }
            if i == 0 {
                for p in params {
                    let spec = param_spec(p)?;
                    if s.seen.contains(&spec.name) {
                        return Err(invalid(format!("{} is given twice", p.name)));
                    }
                    s.seen.push(spec.name);
                    (spec.apply)(&mut s, &p.name, p.value.as_deref())?;
                }
            } else {
                later_step(&mut s, &params)?;
            }
        }
        if s.pad && s.seen.contains(&"c") {
            return Err(invalid("c cannot be combined with cm-pad_resize"));
        }
        let (width, height, crop) = if s.extract {
            (0, 0, Some(extract_region(&mut s)?))
        } else {
            if s.x.is_some() || s.y.is_some() {
                return Err(unsupported("x and y without cm-extract"));
            }
            let side =
                |n: &str, v: &Option<String>| v.as_deref().map_or(Ok(0), |v| dimension(n, Some(v)));
            (side("w", &s.w)?, side("h", &s.h)?, None)
        };
        let background = match (s.pad, s.background) {
            // ImageKit pads with black unless `bg` says otherwise.
            (true, None) => Some(Color::BLACK),
            (_, bg) => bg.and_then(Color::visible),
        };
        let mut transform = Transform {
            width,
            height,
            fit: s.fit,
            adaptive: false,
            padding: None,
            upscale: s.upscale,
            flip_h: s.flip_h,
            flip_v: s.flip_v,
            h_align: s.h_align,
            v_align: s.v_align,
            format: s.format,
            quality: s.quality,
            rotation: s.rotation,
            grayscale: s.grayscale,
            blur: s.blur,
            sharpen: s.sharpen,
            pad: s.pad,
            background,
            crop,
            focus: None,
            progressive: s.progressive,
            max_bytes: None,
            trim: s.trim,
            smart: s.smart,
            keep_icc: s.keep_icc,
            proportion: None,
            effects: Default::default(),
            final_effects: Default::default(),
        };
        if let Some((aw, ah)) = s.aspect {
            derive_side(&mut transform, aw, ah)?;
        }
        apply_dpr(&mut transform, s.dpr)?;
        let image = decode(&self.image)
            .ok_or_else(|| invalid("the image path has a malformed percent escape"))?;
        Ok(Target {
            handle: None,
            image,
            version: None,
            transform,
            format_choice: s.format_choice,
            expires: None,
            watermark,
        })
    }

    /// This URL with the watermark `w` as an image layer at the end of its transformation;
    /// `None` when ImageKit cannot say it (see `layer_watermark` for what it can).
    pub fn with_watermark(mut self, w: &Watermark) -> Option<Self> {
        let layer = layer_params(w)?;
        match self.steps.first_mut() {
            Some(step) => step.extend(layer),
            None => self.steps.push(layer),
        }
        Some(self)
    }

    /// The canonical URL (transformation in the path) asking for `t` on `image`; `None` when
    /// the grammar cannot express `t` (fill or stretch without enlarging; padding other than a
    /// fit that enlarges; a blur over ImageKit's radius 100; a sharpen of sigma other than 1 or
    /// strength not a multiple of 0.1; a background opacity that is not a whole percent; a byte
    /// budget, which ImageKit has no parameter for).
    pub fn from_transform(t: &Transform, image: &str) -> Option<Self> {
        if !t.effects.is_empty() || !t.final_effects.is_empty() || t.proportion.is_some() {
            return None; // thumbor's ordered filters and proportion
        }
        if t.focus.is_some() {
            return None; // `fo-custom` reads coordinates stored with the image
        }
        if t.max_bytes.is_some() {
            return None;
        }
        if t.smart
            && (t.crop.is_some() || (t.h_align, t.v_align) != (HAlign::Center, VAlign::Middle))
        {
            return None;
        }
        let mut step = Vec::new();
        let mut param = |name: &str, value: String| {
            step.push(Param {
                name: name.to_owned(),
                value: Some(value),
            })
        };
        if let Some(c) = t.crop {
            // An extraction is its own step: with a resize it would be a chain.
            let geometry = |t: &Transform| {
                (
                    t.width, t.height, t.fit, t.upscale, t.pad, t.h_align, t.v_align,
                )
            };
            let extract = Transform {
                upscale: true,
                ..Transform::default()
            };
            if geometry(t) != geometry(&extract) {
                return None;
            }
            // ImageKit writes fractions strictly between 0 and 1 only.
            let span = |s: Span| match s {
                Span::Pixels(p) => Some(p.to_string()),
                Span::Fraction(f) if f.0 > 0 && f < Fraction::ONE => Some(f.to_string()),
                Span::Fraction(_) => None,
            };
            param("w", span(c.width)?);
            param("h", span(c.height)?);
            param("cm", "extract".to_owned());
            match c.at {
                CropAt::Offset(x, y) => {
                    let zero = |s: Span| match s {
                        Span::Fraction(Fraction(0)) => Some("0".to_owned()),
                        s => span(s),
                    };
                    param("x", zero(x)?);
                    param("y", zero(y)?);
                }
                CropAt::Anchor(h, v) => {
                    let fo = FOCUS.iter().find(|f| (f.1, f.2) == (h, v))?;
                    if fo.0 != "center" {
                        param("fo", fo.0.to_owned());
                    }
                }
            }
        } else if t.width > 0 {
            param("w", t.width.to_string());
        }
        if t.height > 0 && t.crop.is_none() {
            param("h", t.height.to_string());
        }
        if t.adaptive || t.padding.is_some() {
            return None;
        }
        match (t.fit, t.upscale, t.pad) {
            _ if t.crop.is_some() => {}
            (Fit::FitIn, true, true) => param("cm", "pad_resize".to_owned()),
            (_, _, true) => return None,
            (Fit::Fill, true, _) => {}
            (Fit::Stretch, true, _) => param("c", "force".to_owned()),
            (Fit::FitIn, false, _) => param("c", "at_max".to_owned()),
            (Fit::FitIn, true, _) => param("c", "at_max_enlarge".to_owned()),
            (Fit::Cover, true, _) => param("c", "at_least".to_owned()),
            (Fit::Fill | Fit::Stretch | Fit::Cover, false, _)
            | (Fit::Auto | Fit::AutoDown | Fit::FillClamped, _, _) => return None,
        }
        match (t.pad, t.background) {
            // Transparent padding: opacity 00.
            (true, None) => param("bg", "00000000".to_owned()),
            (_, Some(c)) => param("bg", background_value(c)?),
            (false, None) => {}
        }
        if let Some(fo) = FOCUS
            .iter()
            .find(|f| (f.1, f.2) == (t.h_align, t.v_align))
            .filter(|f| f.0 != "center" && t.crop.is_none())
        {
            param("fo", fo.0.to_owned());
        }
        if t.smart {
            param("fo", "auto".to_owned());
        }
        if let Some(trim) = t.trim {
            let plain = trim.color == TrimColor::TopLeft && !trim.equal_hor && !trim.equal_ver;
            if !plain || !(1..=MAX_TRIM_THRESHOLD).contains(&trim.threshold) {
                return None;
            }
            param("t", trim.threshold.to_string());
        }
        match (t.flip_h, t.flip_v) {
            (true, true) => param("fl", "h_v".to_owned()),
            (true, false) => param("fl", "h".to_owned()),
            (false, true) => param("fl", "v".to_owned()),
            (false, false) => {}
        }
        match t.format {
            OutputFormat::Source => {}
            OutputFormat::Fixed(f) => param("f", f.name().to_owned()),
            OutputFormat::Compatible => return None,
        }
        if let Some(q) = t.quality {
            param("q", q.to_string());
        }
        if let Some(progressive) = t.progressive {
            param("pr", progressive.to_string());
        }
        if t.keep_icc {
            param("cp", "true".to_owned());
        }
        if t.rotation != Rotation::None {
            param("rt", t.rotation.degrees().to_string());
        }
        if let Some(sigma) = t.blur {
            let radius = sigma.doubled();
            if radius > Hundredths(10_000) {
                return None;
            }
            param("bl", radius.to_string());
        }
        if t.grayscale {
            step.push(Param {
                name: "e-grayscale".to_owned(),
                value: None,
            });
        }
        if let Some(s) = t.sharpen {
            if s.sigma != Hundredths::ONE || s.amount.0 % 10 != 0 {
                return None;
            }
            let value = match s.amount.0 / 10 {
                10 => None,
                n => Some(n.to_string()),
            };
            step.push(Param {
                name: "e-sharpen".to_owned(),
                value,
            });
        }
        Some(ImagekitUrl {
            placement: Placement::Path,
            steps: if step.is_empty() { vec![] } else { vec![step] },
            image: crate::percent::encode(image, |b| crate::percent::is_unreserved(b) || b == b'/'),
        })
    }
}

/// The table entry of `p`: unknown effects are 501, other unknown names 400.
fn param_spec(p: &Param) -> Result<&'static ParamSpec, GrammarError> {
    PARAMS.iter().find(|s| s.name == p.name).ok_or_else(|| {
        if p.name.starts_with("e-") {
            unsupported(format!("effect {}", p.name))
        } else {
            invalid(format!("unknown parameter {}", p.name))
        }
    })
}

/// Applies a chained step after the first onto `s`, where the one transform expresses it
/// exactly: a rotation (added to the earlier ones), the format and encoding (`f`, `q`, `pr`,
/// `cp`: the later step wins), effects in the transform's order (grayscale, blur, sharpen,
/// each once) on an image not yet padded or given a background (they commute with rotations
/// and flips), a background onto one that has none yet, and no-op switches (`md-false`, …).
/// Resizing, cropping, flips and the rest after a step are 501.
fn later_step(s: &mut State, params: &[&Param]) -> Result<(), GrammarError> {
    let mut seen = Vec::new();
    for p in params {
        let spec = param_spec(p)?;
        if seen.contains(&spec.name) {
            return Err(invalid(format!("{} is given twice", p.name)));
        }
        seen.push(spec.name);
        let rank = |s: &State| {
            [s.grayscale, s.blur.is_some(), s.sharpen.is_some()]
                .iter()
                .rposition(|&set| set)
                .map_or(0, |i| i + 1)
        };
        let effect_rank = match spec.name {
            "e-grayscale" => Some(1),
            "bl" => Some(2),
            "e-sharpen" => Some(3),
            _ => None,
        };
        let refuse = |what: &str| {
            Err(unsupported(format!(
                "chained transformations: {} {what}",
                p.name
            )))
        };
        match spec.name {
            "rt" => {
                let before = std::mem::take(&mut s.rotation);
                (spec.apply)(s, &p.name, p.value.as_deref())?;
                let total = i64::from(before.degrees()) + i64::from(s.rotation.degrees());
                s.rotation = Rotation::from_degrees(total).unwrap_or_default();
            }
            "f" | "q" | "pr" | "cp" | "md" | "orig" | "lo" => {
                (spec.apply)(s, &p.name, p.value.as_deref())?;
            }
            "e-grayscale" | "bl" | "e-sharpen" => {
                if s.pad || s.background.is_some() {
                    return refuse("after padding or a background");
                }
                if effect_rank <= Some(rank(s)) {
                    return refuse("after the same or a later effect");
                }
                (spec.apply)(s, &p.name, p.value.as_deref())?;
            }
            "bg" => {
                if s.pad || s.background.is_some() {
                    return refuse("after padding or a background");
                }
                (spec.apply)(s, &p.name, p.value.as_deref())?;
            }
            _ => return refuse("after the first step"),
        }
    }
    Ok(())
}

/// Splits a step's parameters into the base image's and those of its one image layer
/// (`l-image,…,l-end`).
fn split_layer<'a>(
    params: impl Iterator<Item = &'a Param>,
) -> Result<(Vec<&'a Param>, Option<Vec<&'a Param>>), GrammarError> {
    let (mut base, mut layer, mut open) = (Vec::new(), None::<Vec<&Param>>, false);
    for p in params {
        match (p.name.as_str(), p.value.as_deref(), open) {
            ("l", Some("image"), false) if layer.is_none() => {
                open = true;
                layer = Some(Vec::new());
            }
            ("l", Some("image"), _) => return Err(unsupported("more than one overlay (l-image)")),
            ("l", Some("end"), true) => open = false,
            ("l", Some(kind @ ("text" | "video" | "subtitles" | "solid")), _) => {
                return Err(unsupported(format!("overlays of type {kind} (l-{kind})")));
            }
            ("l", _, _) => {
                return Err(invalid(format!(
                    "unknown layer l-{}",
                    p.value.as_deref().unwrap_or("")
                )));
            }
            (_, _, true) => layer.get_or_insert_with(Vec::new).push(p),
            ("i" | "ie" | "lx" | "ly" | "lfo", _, false) => {
                return Err(invalid(format!(
                    "{} outside a layer (l-image … l-end)",
                    p.name
                )));
            }
            _ => base.push(p),
        }
    }
    if open {
        return Err(invalid("l-image without l-end"));
    }
    Ok((base, layer))
}

/// The watermark of an image layer: `i-PATH` (`@@` for `/`) or `ie-BASE64`, resolved like the
/// source's path; `lx-N,ly-N` (whole pixels, both) place its top-left corner, or `lfo-POSITION`
/// (`center` by default) places it by the nine positions of `fo`; `w-N` or `h-N` (whole
/// pixels, one of them) scale it keeping its aspect ratio, up or down. Negative positions
/// (`lx-N…`), arithmetic expressions, `lfo` with `lx`/`ly`, `w` with `h`, and the layer's other
/// transformations (`o`, `rt`, nested layers, …) are 501.
fn layer_watermark(params: &[&Param]) -> Result<Watermark, GrammarError> {
    let (mut image, mut lx, mut ly, mut lfo, mut w, mut h) = (None, None, None, None, None, None);
    let pixels = |name: &str, v: &str| -> Result<u32, GrammarError> {
        if v.starts_with('N') {
            return Err(unsupported(format!(
                "overlay negative positions ({name}-{v})"
            )));
        }
        if !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unsupported(format!("overlay expressions ({name}-{v})")));
        }
        parse_dimension(name, v)
    };
    for p in params {
        let v = value(&p.name, p.value.as_deref())?;
        let slot = match p.name.as_str() {
            "i" => {
                let path = decode(v)
                    .ok_or_else(|| invalid("i: malformed percent escape"))?
                    .replace("@@", "/");
                image.replace(path).map(|_| ())
            }
            "ie" => {
                use base64::Engine;
                let text = decode(v).ok_or_else(|| invalid("ie: malformed percent escape"))?;
                let path = base64::engine::general_purpose::STANDARD
                    .decode(&text)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| invalid("ie: not base64 of a path"))?;
                image.replace(path).map(|_| ())
            }
            "lx" => lx.replace(pixels("lx", v)?).map(|_| ()),
            "ly" => ly.replace(pixels("ly", v)?).map(|_| ()),
            "lfo" => {
                let f = FOCUS
                    .iter()
                    .find(|f| f.0 == v)
                    .ok_or_else(|| invalid(format!("lfo: unknown position {v:?}")))?;
                lfo.replace((f.1, f.2)).map(|_| ())
            }
            "w" => w.replace(pixels("w", v)?).map(|_| ()),
            "h" => h.replace(pixels("h", v)?).map(|_| ()),
            "l" => return Err(unsupported("nested overlays")),
            other => return Err(unsupported(format!("overlay parameter {other}"))),
        };
        if slot.is_some() {
            return Err(invalid(format!("{} is given twice in the layer", p.name)));
        }
    }
    let image = image
        .filter(|i| !i.is_empty())
        .ok_or_else(|| invalid("l-image needs i or ie"))?;
    let (x, y) = match (lx, ly, lfo) {
        (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(unsupported("overlay lfo with lx or ly"));
        }
        (Some(x), Some(y), None) => (
            Axis::Start(Offset::Pixels(x as i32)),
            Axis::Start(Offset::Pixels(y as i32)),
        ),
        (Some(_), None, None) | (None, Some(_), None) => {
            return Err(unsupported("overlay lx without ly (or ly without lx)"));
        }
        (None, None, anchor) => axes_at(anchor.unwrap_or((HAlign::Center, VAlign::Middle)), (0, 0)),
    };
    let (width, height) = match (w, h) {
        (Some(_), Some(_)) => return Err(unsupported("overlay w and h together")),
        (w, h) => (w.map(Span::Pixels), h.map(Span::Pixels)),
    };
    Ok(Watermark {
        image: WatermarkImage::Path(image),
        x,
        y,
        opacity: Fraction::ONE,
        width,
        height,
    })
}

/// The `l-image,…,l-end` parameters of `w`: `None` when ImageKit cannot say it (another image
/// than a path, opacity, offsets from an edge or the centre, percentages, tiling, fractions).
fn layer_params(w: &Watermark) -> Option<Vec<Param>> {
    let WatermarkImage::Path(path) = &w.image else {
        return None;
    };
    if w.opacity != Fraction::ONE {
        return None;
    }
    let mut out = Vec::new();
    let mut param = |name: &str, value: String| {
        out.push(Param {
            name: name.to_owned(),
            value: Some(value),
        })
    };
    param("l", "image".to_owned());
    let plain = !path.contains('@')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if plain {
        param("i", path.replace('/', "@@"));
    } else {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(path);
        param(
            "ie",
            crate::percent::encode(&b64, crate::percent::is_unreserved),
        );
    }
    match anchor_of(w.x, w.y)? {
        ((h, v), (0, 0)) => {
            let fo = FOCUS.iter().find(|f| (f.1, f.2) == (h, v))?;
            if fo.0 != "center" {
                param("lfo", fo.0.to_owned());
            }
        }
        ((HAlign::Left, VAlign::Top), (x, y)) if x >= 0 && y >= 0 => {
            param("lx", x.to_string());
            param("ly", y.to_string());
        }
        _ => return None,
    }
    match (w.width, w.height) {
        (None, None) => {}
        (Some(Span::Pixels(p)), None) => param("w", p.to_string()),
        (None, Some(Span::Pixels(p))) => param("h", p.to_string()),
        _ => return None,
    }
    param("l", "end".to_owned());
    Some(out)
}

fn parse_steps(spec: &str) -> Result<Vec<Vec<Param>>, GrammarError> {
    if spec.is_empty() {
        return Ok(Vec::new());
    }
    let mut count = 0;
    let mut steps = Vec::new();
    for step in spec.split(':') {
        if steps.len() == MAX_STEPS {
            return Err(invalid(format!(
                "more than {MAX_STEPS} transformation steps"
            )));
        }
        let mut params = Vec::new();
        for p in step.split(',').filter(|p| !p.is_empty()) {
            count += 1;
            if count > MAX_PARAMS {
                return Err(invalid(format!("more than {MAX_PARAMS} parameters")));
            }
            params.push(parse_param(p)?);
        }
        steps.push(params);
    }
    Ok(steps)
}

fn parse_param(p: &str) -> Result<Param, GrammarError> {
    let (name, value) = match p.split_once('-') {
        Some(("e", effect)) => match effect.split_once('-') {
            Some((e, v)) => (format!("e-{e}"), Some(v)),
            None => (format!("e-{effect}"), None),
        },
        Some((name, value)) => (name.to_owned(), Some(value)),
        None => return Err(invalid(format!("parameter {p:?} needs a value"))),
    };
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    if !name_ok(&name) {
        return Err(invalid(format!("bad parameter name {name:?}")));
    }
    if value.is_some_and(str::is_empty) {
        return Err(invalid(format!("{name}: empty value")));
    }
    Ok(Param {
        name,
        value: value.map(str::to_owned),
    })
}

/// What the parameters have set so far; starts at ImageKit's defaults (`c-maintain_ratio`).
struct State {
    /// `w` and `h` as written: box sides, or with `cm-extract` the region's size.
    w: Option<String>,
    h: Option<String>,
    /// `cm-extract`: keep a region of the source instead of resizing.
    extract: bool,
    /// `x`, `y`: the extracted region's top-left corner.
    x: Option<Span>,
    y: Option<Span>,
    aspect: Option<(f64, f64)>,
    fit: Fit,
    upscale: bool,
    h_align: HAlign,
    v_align: VAlign,
    flip_h: bool,
    flip_v: bool,
    dpr: f64,
    quality: Option<u8>,
    format: OutputFormat,
    format_choice: FormatChoice,
    rotation: Rotation,
    grayscale: bool,
    blur: Option<Hundredths>,
    sharpen: Option<Sharpen>,
    pad: bool,
    background: Option<Color>,
    progressive: Option<bool>,
    /// `t-…`.
    trim: Option<Trim>,
    /// `fo-auto`.
    smart: bool,
    /// `cp-true`.
    keep_icc: bool,
    seen: Vec<&'static str>,
}

impl Default for State {
    fn default() -> Self {
        State {
            w: None,
            h: None,
            extract: false,
            x: None,
            y: None,
            aspect: None,
            fit: Fit::Fill,
            upscale: true,
            h_align: HAlign::Center,
            v_align: VAlign::Middle,
            flip_h: false,
            flip_v: false,
            dpr: 1.0,
            quality: None,
            format: OutputFormat::Source,
            format_choice: FormatChoice::Unnamed,
            rotation: Rotation::None,
            grayscale: false,
            blur: None,
            sharpen: None,
            pad: false,
            background: None,
            progressive: None,
            trim: None,
            smart: false,
            keep_icc: false,
            seen: Vec::new(),
        }
    }
}

type Apply = fn(&mut State, &str, Option<&str>) -> Result<(), GrammarError>;

/// One transformation parameter and what it does.
pub struct ParamSpec {
    /// The parameter name.
    pub name: &'static str,
    apply: Apply,
}

const fn spec(name: &'static str, apply: Apply) -> ParamSpec {
    ParamSpec { name, apply }
}

/// Every parameter ImageKit documents for images that pixmesh recognises. Those the pipeline
/// cannot perform are 501 unless their value asks for nothing (`bl-0`, `rt-0`, `md-false`, …).
pub static PARAMS: &[ParamSpec] = &[
    spec("w", |s, n, v| {
        s.w = Some(value(n, v)?.to_owned());
        Ok(())
    }),
    spec("h", |s, n, v| {
        s.h = Some(value(n, v)?.to_owned());
        Ok(())
    }),
    spec("ar", aspect_ratio),
    spec("c", crop),
    spec("cm", crop_mode),
    spec("fo", focus),
    spec("fl", flip),
    spec("q", |s, n, v| {
        s.quality = Some(parse_quality(n, value(n, v)?)?);
        Ok(())
    }),
    spec("f", |s, n, v| {
        (s.format, s.format_choice) = match value(n, v)? {
            "auto" => (OutputFormat::Source, FormatChoice::Auto),
            "orig" => (OutputFormat::Source, FormatChoice::Named),
            f => (
                OutputFormat::Fixed(parse_format(n, f)?),
                FormatChoice::Named,
            ),
        };
        Ok(())
    }),
    spec("dpr", |s, n, v| {
        s.dpr = match value(n, v)? {
            "auto" => return Err(unsupported("dpr-auto")),
            d => parse_decimal(n, d)?,
        };
        Ok(())
    }),
    spec("rt", rotate),
    spec("bl", |s, n, v| {
        let radius = value(n, v)?;
        if parse_decimal(n, radius)? > 100.0 {
            return Err(invalid(format!("{n}: the radius is limited to 100")));
        }
        s.blur = parse_blur_radius(n, radius)?;
        Ok(())
    }),
    spec("e-sharpen", |s, n, v| {
        let strength = match v {
            None => Some(Hundredths::ONE),
            Some(v) => {
                let tenths = parse_decimal(n, v)?;
                if tenths > 100.0 {
                    return Err(invalid(format!("{n}: the value is limited to 100")));
                }
                Hundredths::from_f64(tenths / 10.0).filter(|a| a.0 > 0)
            }
        };
        s.sharpen = strength.map(|amount| Sharpen {
            sigma: Hundredths::ONE,
            amount,
        });
        Ok(())
    }),
    spec("e-grayscale", |s, n, v| match v {
        None => {
            s.grayscale = true;
            Ok(())
        }
        Some(_) => Err(invalid(format!("{n} takes no value"))),
    }),
    spec("orig", false_or_unsupported),
    spec("md", false_or_unsupported),
    spec("pr", |s, n, v| {
        s.progressive = Some(true_or_false(n, v)?);
        Ok(())
    }),
    spec("lo", false_or_unsupported),
    spec("cp", |s, n, v| {
        s.keep_icc = true_or_false(n, v)?;
        Ok(())
    }),
    spec("t", trim),
    spec("x", |s, n, v| {
        s.x = Some(crop_offset(n, value(n, v)?)?);
        Ok(())
    }),
    spec("y", |s, n, v| {
        s.y = Some(crop_offset(n, value(n, v)?)?);
        Ok(())
    }),
    spec("xc", unsupported_param),
    spec("yc", unsupported_param),
    spec("bg", background),
    spec("b", unsupported_param),
    spec("r", unsupported_param),
    spec("n", unsupported_param),
    spec("z", unsupported_param),
    spec("di", unsupported_param),
    // Documented parameters the pipeline has no counterpart for: opacity, pages of multi-page
    // sources, colour replacement, the layer blend mode, and the video ones (codecs, trimming,
    // adaptive streaming).
    spec("o", unsupported_param),
    spec("pg", unsupported_param),
    spec("cr", unsupported_param),
    spec("lm", unsupported_param),
    spec("vc", unsupported_param),
    spec("ac", unsupported_param),
    spec("so", unsupported_param),
    spec("eo", unsupported_param),
    spec("du", unsupported_param),
    spec("sr", unsupported_param),
];

fn value<'a>(name: &str, v: Option<&'a str>) -> Result<&'a str, GrammarError> {
    v.ok_or_else(|| invalid(format!("{name} needs a value")))
}

/// `w`/`h`: pixels; values below 1 are ImageKit's relative sizes, `auto` its client hints (501).
fn dimension(name: &str, v: Option<&str>) -> Result<u32, GrammarError> {
    match value(name, v)? {
        "auto" => Err(unsupported(format!("{name}-auto"))),
        v if (v.starts_with("0.") || v.starts_with('.')) && parse_decimal(name, v).is_ok() => {
            Err(unsupported(format!("relative {name} ({name}-{v})")))
        }
        v => parse_dimension(name, v),
    }
}

fn aspect_ratio(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    let v = value(name, v)?;
    let (w, h) = v
        .split_once('-')
        .ok_or_else(|| invalid(format!("{name}: expected ar-WIDTH-HEIGHT, got {v:?}")))?;
    let (w, h) = (parse_decimal(name, w)?, parse_decimal(name, h)?);
    if w == 0.0 || h == 0.0 {
        return Err(invalid(format!("{name}: the ratio cannot be zero")));
    }
    s.aspect = Some((w, h));
    Ok(())
}

/// The region `cm-extract` keeps: `w`×`h` (pixels, or fractions of the source below 1) at
/// `x`,`y` (0 when one is missing) or, without them, placed by `fo` (centred by default). The
/// output is the region itself: `c`, `ar` and `dpr` would need a second step (501).
fn extract_region(s: &mut State) -> Result<CropRegion, GrammarError> {
    for (given, what) in [
        (s.smart, "fo-auto with cm-extract"),
        (s.seen.contains(&"c"), "c with cm-extract"),
        (s.aspect.is_some(), "ar with cm-extract"),
        (s.dpr != 1.0, "dpr with cm-extract"),
    ] {
        if given {
            return Err(unsupported(what));
        }
    }
    let size = |n: &str, v: &Option<String>| match v {
        Some(v) => parse_crop_size(n, v, false),
        None => Err(invalid("cm-extract needs w and h")),
    };
    let (width, height) = (size("w", &s.w)?, size("h", &s.h)?);
    let at = match (s.x, s.y) {
        (None, None) => CropAt::Anchor(s.h_align, s.v_align),
        _ if s.seen.contains(&"fo") => {
            return Err(invalid("cm-extract takes x and y or fo, not both"));
        }
        (x, y) => CropAt::Offset(x.unwrap_or(Span::Pixels(0)), y.unwrap_or(Span::Pixels(0))),
    };
    // The anchor belongs to the region; the (absent) fill crop keeps the default.
    (s.h_align, s.v_align) = (HAlign::Center, VAlign::Middle);
    Ok(CropRegion { width, height, at })
}

/// `x`/`y` of `cm-extract`: whole pixels, or a fraction of the source below 1.
fn crop_offset(name: &str, v: &str) -> Result<Span, GrammarError> {
    match parse_decimal(name, v)? {
        f if f > 0.0 && f < 1.0 => Fraction::from_f64(f)
            .map(Span::Fraction)
            .ok_or_else(|| invalid(format!("{name}: {v:?} is not a position"))),
        _ => parse_crop_pixels(name, v),
    }
}

/// Derives the missing side from `ar-W-H` and the given one.
fn derive_side(t: &mut Transform, aw: f64, ah: f64) -> Result<(), GrammarError> {
    let derive = |side: u32, ratio: f64| -> Result<u32, GrammarError> {
        let v = (f64::from(side) * ratio).round().max(1.0);
        if v > f64::from(MAX_DIMENSION) {
            return Err(invalid(format!(
                "ar: the derived size is over the limit of {MAX_DIMENSION}"
            )));
        }
        Ok(v as u32)
    };
    match (t.width, t.height) {
        (0, 0) => Err(unsupported("ar without w or h")),
        (w, 0) => {
            t.height = derive(w, ah / aw)?;
            Ok(())
        }
        (0, h) => {
            t.width = derive(h, aw / ah)?;
            Ok(())
        }
        _ => Err(invalid("ar cannot be combined with both w and h")),
    }
}

fn crop(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    (s.fit, s.upscale) = match value(name, v)? {
        "maintain_ratio" => (Fit::Fill, true),
        "force" => (Fit::Stretch, true),
        "at_max" => (Fit::FitIn, false),
        "at_max_enlarge" => (Fit::FitIn, true),
        // Both sides at least the box's, keeping the aspect ratio, cropping nothing.
        "at_least" => (Fit::Cover, true),
        other => return Err(invalid(format!("{name}: unknown crop strategy {other:?}"))),
    };
    Ok(())
}

fn crop_mode(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    match value(name, v)? {
        "pad_resize" => {
            (s.fit, s.upscale, s.pad) = (Fit::FitIn, true, true);
            Ok(())
        }
        "extract" => {
            s.extract = true;
            Ok(())
        }
        "pad_extract" => Err(unsupported("cm-pad_extract")),
        other => Err(invalid(format!("{name}: unknown crop mode {other:?}"))),
    }
}

/// `bg-RRGGBB` or `bg-RRGGBBAA` (AA: decimal opacity 00–99); other forms are 501.
fn background(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    let v = value(name, v)?;
    let hex = |h: &str| Color::from_hex(h).filter(|_| h.len() == 6);
    s.background = Some(
        match v.len() {
            6 => hex(v),
            8 => hex(&v[..6])
                .zip(
                    v[6..]
                        .parse::<u8>()
                        .ok()
                        .filter(|_| v[6..].bytes().all(|b| b.is_ascii_digit())),
                )
                .map(|(c, percent)| Color {
                    a: percent_to_alpha(percent),
                    ..c
                }),
            _ => None,
        }
        .ok_or_else(|| {
            let word = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
            if v.bytes().all(word) && !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                // ImageKit's other backgrounds: `blurred`, `blurred_auto`, `gradient…`, names.
                unsupported(format!("{name}-{v}"))
            } else {
                invalid(format!("{name}: {v:?} is not RRGGBB or RRGGBBAA"))
            }
        })?,
    );
    Ok(())
}

/// The `bg` value of a colour: `RRGGBB`, or `RRGGBBAA` with a whole-percent opacity.
fn background_value(c: Color) -> Option<String> {
    let rgb = format!("{:02X}{:02X}{:02X}", c.r, c.g, c.b);
    if c.is_opaque() {
        return Some(rgb);
    }
    let percent = ((u32::from(c.a) * 100 + 127) / 255) as u8;
    (percent < 100 && percent_to_alpha(percent) == c.a).then(|| format!("{rgb}{percent:02}"))
}

/// ImageKit's opacity percent (0–99) as 8-bit alpha, rounded.
fn percent_to_alpha(percent: u8) -> u8 {
    ((u32::from(percent) * 255 + 50) / 100).min(255) as u8
}

/// `fo` anchors: (name, horizontal, vertical).
const FOCUS: [(&str, HAlign, VAlign); 9] = [
    ("center", HAlign::Center, VAlign::Middle),
    ("top", HAlign::Center, VAlign::Top),
    ("bottom", HAlign::Center, VAlign::Bottom),
    ("left", HAlign::Left, VAlign::Middle),
    ("right", HAlign::Right, VAlign::Middle),
    ("top_left", HAlign::Left, VAlign::Top),
    ("top_right", HAlign::Right, VAlign::Top),
    ("bottom_left", HAlign::Left, VAlign::Bottom),
    ("bottom_right", HAlign::Right, VAlign::Bottom),
];

/// `fo`: a fixed anchor, or `auto` (smart crop); `face`, `custom` and object names (`fo-dog`)
/// are 501.
fn focus(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    let v = value(name, v)?;
    if v == "auto" {
        s.smart = true;
        return Ok(());
    }
    if let Some(&(_, h, vv)) = FOCUS.iter().find(|f| f.0 == v) {
        (s.h_align, s.v_align) = (h, vv);
        return Ok(());
    }
    if v.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        return Err(unsupported(format!("fo-{v}")));
    }
    Err(invalid(format!("{name}: unknown focus {v:?}")))
}

fn flip(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    (s.flip_h, s.flip_v) = match value(name, v)? {
        "h" => (true, false),
        "v" => (false, true),
        "h_v" | "v_h" => (true, true),
        other => return Err(invalid(format!("{name}: unknown flip {other:?}"))),
    };
    Ok(())
}

/// `rt-DEGREES` clockwise, `rt-NDEGREES` counter-clockwise: quarter turns; `auto` and other
/// angles are 501.
fn rotate(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    let v = value(name, v)?;
    let (counter, degrees) = match v.strip_prefix('N') {
        Some(d) => (true, d),
        None => (false, v),
    };
    if degrees == "auto" {
        return Err(unsupported("rt-auto"));
    }
    if degrees.is_empty() || degrees.len() > 3 || !degrees.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid(format!("{name}: {v:?} is not an angle")));
    }
    let d: i64 = degrees.parse().unwrap_or_default();
    s.rotation = Rotation::from_degrees(if counter { -d } else { d })
        .ok_or_else(|| unsupported(format!("rotation ({name}-{v})")))?;
    Ok(())
}

/// `t-true` (threshold 10), `t-N` (1–99) or `t-false`: trim uniform borders.
fn trim(s: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    let threshold = match value(name, v)? {
        "false" => None,
        "true" => Some(DEFAULT_TRIM_THRESHOLD),
        n => Some(
            n.parse::<u8>()
                .ok()
                .filter(|t| {
                    n.bytes().all(|b| b.is_ascii_digit()) && (1..=MAX_TRIM_THRESHOLD).contains(t)
                })
                .ok_or_else(|| {
                    invalid(format!(
                        "{name}: {n:?} is not true, false or a threshold 1-{MAX_TRIM_THRESHOLD}"
                    ))
                })?,
        ),
    };
    s.trim = threshold.map(|threshold| Trim {
        threshold,
        color: TrimColor::TopLeft,
        equal_hor: false,
        equal_ver: false,
    });
    Ok(())
}

/// `true` or `false`, as ImageKit writes booleans.
fn true_or_false(name: &str, v: Option<&str>) -> Result<bool, GrammarError> {
    match value(name, v)? {
        "true" => Ok(true),
        "false" => Ok(false),
        v => Err(invalid(format!("{name}: {v:?} is not true or false"))),
    }
}

/// Boolean switches the pipeline cannot honour when `true` (`orig`, `md`, `lo`).
fn false_or_unsupported(_: &mut State, name: &str, v: Option<&str>) -> Result<(), GrammarError> {
    match value(name, v)? {
        "false" => Ok(()),
        "true" => Err(unsupported(format!("{name}-true"))),
        v => Err(invalid(format!("{name}: {v:?} is not true or false"))),
    }
}

fn unsupported_param(_: &mut State, name: &str, _: Option<&str>) -> Result<(), GrammarError> {
    Err(unsupported(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::testing::{cover as fill, split_query as split};
    use crate::transform::Format;

    /// URLs after the endpoint, in canonical form: `generate(parse(s)) == s` for each.
    const ROUND_TRIP: &[&str] = &[
        "a.jpg",
        "tr:w-300,h-300/dir/a.jpg",
        "tr:w-300,h-300:rt-90/a.jpg",
        "tr:w-300,l-image,i-wm@@logo.png,lx-10,ly-20,w-50,l-end/a.jpg",
        "a.jpg?tr=l-image,ie-d20vYSBiLnBuZw==,lfo-bottom_right,h-40,l-end",
        "a.jpg?tr=w-300,h-200,c-at_max,f-webp",
        "tr:w-300,ar-4-3,fo-top_left,q-80,fl-h_v/a%20b.jpg",
        "tr:e-grayscale,e-sharpen-10,bl-0,md-false/a.jpg",
        "tr:w-300,h-200,cm-pad_resize,bg-FFFFFF/a.jpg",
        "tr:w-300,f-auto/a.jpg",
        "a.gif?tr=w-100,f-gif",
        "tr:w-300,h-200,fo-auto,t-true/a.jpg",
        "a.jpg?tr=t-25",
    ];

    #[test]
    fn canonical_urls_round_trip() {
        for &url in ROUND_TRIP {
            let (path, query) = split(url);
            let parsed = ImagekitUrl::parse(path, query).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(parsed.to_path(), url, "generate(parse({url}))");
        }
    }

    #[test]
    fn parses_every_part() {
        let p = ImagekitUrl::parse("tr:w-300,e-sharpen-5:rt-90/x/a.jpg", "v=1").unwrap();
        assert_eq!(p.placement, Placement::Path);
        assert_eq!(p.steps.len(), 2);
        assert_eq!(
            p.steps[0][1],
            Param {
                name: "e-sharpen".into(),
                value: Some("5".into())
            }
        );
        assert_eq!(p.image, "x/a.jpg");
        let q = ImagekitUrl::parse("x/a.jpg", "updatedAt=1&tr=w-300%2Ch-200").unwrap();
        assert_eq!(q.placement, Placement::Query);
        assert_eq!(q.transformation(), "w-300,h-200");
        assert_eq!(
            ImagekitUrl::parse("tr:w-1", "").unwrap().image,
            "tr:w-1",
            "the last segment is always the image"
        );
    }

    fn target(url: &str) -> Result<Target, GrammarError> {
        let (path, query) = split(url);
        ImagekitUrl::parse(path, query)?.to_target()
    }

    #[test]
    fn maps_onto_the_transform_model() {
        for (url, expected) in [
            ("a.jpg", fill(0, 0)),
            ("tr:w-300,h-200/a.jpg", fill(300, 200)),
            ("a.jpg?tr=w-300,h-200,c-maintain_ratio", fill(300, 200)),
            ("tr:w-300,ar-3-2/a.jpg", fill(300, 200)),
            ("tr:h-200,ar-1.5-1/a.jpg", fill(300, 200)),
            ("tr:w-150,h-100,dpr-2/a.jpg", fill(300, 200)),
            (
                "tr:w-300,h-200,c-force/a.jpg",
                Transform {
                    fit: Fit::Stretch,
                    ..fill(300, 200)
                },
            ),
            (
                "tr:w-300,h-200,c-at_max,f-png/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    upscale: false,
                    format: OutputFormat::Fixed(Format::Png),
                    ..fill(300, 200)
                },
            ),
            (
                "tr:w-300,c-at_max_enlarge,fl-v,q-60,f-orig/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    flip_v: true,
                    quality: Some(60),
                    ..fill(300, 0)
                },
            ),
            (
                "tr:w-300,h-200,fo-bottom_right,rt-0,bl-0,md-false,orig-false/a.jpg",
                Transform {
                    h_align: HAlign::Right,
                    v_align: VAlign::Bottom,
                    ..fill(300, 200)
                },
            ),
            ("tr::w-300,h-200:/a.jpg", fill(300, 200)),
            (
                "tr:rt-90,e-grayscale,bl-5,e-sharpen/a.jpg",
                Transform {
                    rotation: Rotation::Cw90,
                    grayscale: true,
                    blur: Some(Hundredths(250)),
                    sharpen: Some(Sharpen {
                        sigma: Hundredths::ONE,
                        amount: Hundredths::ONE,
                    }),
                    ..fill(0, 0)
                },
            ),
            (
                "tr:rt-N90,e-sharpen-25,bl-0/a.jpg",
                Transform {
                    rotation: Rotation::Cw270,
                    sharpen: Some(Sharpen {
                        sigma: Hundredths::ONE,
                        amount: Hundredths(250),
                    }),
                    ..fill(0, 0)
                },
            ),
            (
                "tr:w-300,h-200,cm-pad_resize,bg-FF000050,fo-left/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    pad: true,
                    h_align: HAlign::Left,
                    background: Some(Color {
                        a: 128,
                        ..Color::rgb(255, 0, 0)
                    }),
                    ..fill(300, 200)
                },
            ),
            (
                "tr:w-300,h-200,cm-pad_resize/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    pad: true,
                    background: Some(Color::BLACK),
                    ..fill(300, 200)
                },
            ),
            (
                "tr:w-300,h-200,cm-pad_resize,bg-FFFFFF00/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    pad: true,
                    ..fill(300, 200)
                },
            ),
            (
                "tr:bg-00FF00,e-sharpen-0/a.jpg",
                Transform {
                    background: Some(Color::rgb(0, 255, 0)),
                    ..fill(0, 0)
                },
            ),
        ] {
            assert_eq!(target(url).unwrap().transform, expected, "{url}");
        }
        assert_eq!(target("tr:w-1/dir/a%20b.jpg").unwrap().image, "dir/a b.jpg");
    }

    #[test]
    fn f_auto_leaves_the_format_to_the_client_and_f_orig_keeps_the_source() {
        for (url, choice, format) in [
            (
                "tr:w-300/a.jpg",
                FormatChoice::Unnamed,
                OutputFormat::Source,
            ),
            (
                "tr:w-300,f-auto/a.jpg",
                FormatChoice::Auto,
                OutputFormat::Source,
            ),
            (
                "tr:w-300,f-orig/a.jpg",
                FormatChoice::Named,
                OutputFormat::Source,
            ),
            (
                "tr:w-300,f-gif/a.jpg",
                FormatChoice::Named,
                OutputFormat::Fixed(Format::Gif),
            ),
            (
                "a.jpg?tr=f-jpg",
                FormatChoice::Named,
                OutputFormat::Fixed(Format::Jpeg),
            ),
        ] {
            let t = target(url).unwrap();
            assert_eq!(
                (t.format_choice, t.transform.format),
                (choice, format),
                "{url}"
            );
        }
        assert!(
            matches!(target("tr:f-auto,f-png/a.jpg"), Err(GrammarError::Invalid(m)) if m.contains('f')),
            "auto and a format at once"
        );
        assert_eq!(
            ImagekitUrl::from_transform(
                &Transform {
                    format: OutputFormat::Compatible,
                    ..fill(300, 200)
                },
                "a.jpg"
            ),
            None,
            "what auto chose is never written back as a URL"
        );
    }

    #[test]
    fn from_transform_inverts_to_target() {
        for url in [
            "tr:w-300,h-200/a.jpg",
            "tr:w-300,h-200,c-force/a.jpg",
            "tr:w-300,c-at_max,fo-top,fl-h,f-webp,q-80/dir/a%20b.jpg",
            "tr:w-300,f-gif/a.jpg",
            "tr:w-300,f-jpeg,q-70,pr-true/a.jpg",
            "tr:w-300,f-avif,pr-false/a.jpg",
            "tr:h-200,c-at_max_enlarge/a.jpg",
            "tr:w-300,h-200,cm-pad_resize,bg-FF000050,fo-bottom,rt-270,bl-3,e-grayscale,e-sharpen/a.jpg",
            "tr:w-300,h-200,cm-pad_resize,bg-00000000/a.jpg",
            "tr:w-300,bg-102030,e-sharpen-15/a.jpg",
        ] {
            let t = target(url).unwrap();
            let back = ImagekitUrl::from_transform(&t.transform, &t.image).unwrap();
            assert_eq!(back.to_path(), url);
        }
        assert_eq!(
            ImagekitUrl::from_transform(&Transform::default(), "a.jpg"),
            None,
            "fill without enlarging has no ImageKit URL"
        );
        for t in [
            Transform {
                max_bytes: Some(10_000),
                ..fill(300, 200)
            },
            Transform {
                pad: true,
                ..fill(300, 200)
            },
            Transform {
                background: Some(Color {
                    a: 1,
                    ..Color::WHITE
                }),
                ..fill(300, 200)
            },
            Transform {
                sharpen: Some(Sharpen {
                    sigma: Hundredths(150),
                    amount: Hundredths::ONE,
                }),
                ..fill(300, 200)
            },
        ] {
            assert_eq!(ImagekitUrl::from_transform(&t, "a.jpg"), None, "{t:?}");
        }
    }

    #[test]
    fn extract_keeps_a_region_at_its_own_size() {
        use crate::transform::{Crop as Region, Fraction};
        let region = |width, height, at| Region { width, height, at };
        let px = Span::Pixels;
        let fr = |f| Span::Fraction(Fraction(f));
        for (url, crop) in [
            (
                "tr:w-100,h-50,cm-extract,x-10,y-20/a.jpg",
                region(px(100), px(50), CropAt::Offset(px(10), px(20))),
            ),
            (
                "tr:w-0.5,h-0.25,cm-extract,fo-bottom_right/a.jpg",
                region(
                    fr(5000),
                    fr(2500),
                    CropAt::Anchor(HAlign::Right, VAlign::Bottom),
                ),
            ),
            (
                "tr:w-100,h-50,cm-extract/a.jpg",
                region(
                    px(100),
                    px(50),
                    CropAt::Anchor(HAlign::Center, VAlign::Middle),
                ),
            ),
            (
                "tr:w-100,h-50,cm-extract,x-0.5,y-0,rt-90,e-grayscale/a.jpg",
                region(px(100), px(50), CropAt::Offset(fr(5000), px(0))),
            ),
        ] {
            let t = target(url).unwrap().transform;
            assert_eq!(t.crop, Some(crop), "{url}");
            assert_eq!((t.width, t.height), (0, 0), "{url}: no resize");
            let back = ImagekitUrl::from_transform(&t, "a.jpg").unwrap();
            assert_eq!(back.to_path(), url);
        }
        assert_eq!(
            target("tr:w-100,h-50,cm-extract,x-10/a.jpg")
                .unwrap()
                .transform
                .crop,
            Some(region(px(100), px(50), CropAt::Offset(px(10), px(0))))
        );
        for crop in [
            region(Span::FULL, px(5), CropAt::Offset(px(0), px(0))),
            region(px(5), px(5), CropAt::Offset(fr(10_000), px(0))),
        ] {
            let t = Transform {
                crop: Some(crop),
                upscale: true,
                ..Transform::default()
            };
            assert_eq!(ImagekitUrl::from_transform(&t, "a.jpg"), None, "{crop:?}");
        }
        let resized = Transform {
            crop: Some(region(px(5), px(5), CropAt::Offset(px(0), px(0)))),
            ..fill(10, 10)
        };
        assert_eq!(
            ImagekitUrl::from_transform(&resized, "a.jpg"),
            None,
            "an extraction and a resize are two steps"
        );
    }

    #[test]
    fn unsupported_parameters_are_named_not_ignored() {
        for (url, what) in [
            (
                "tr:w-300:w-100/a.jpg",
                "chained transformations: w after the first step",
            ),
            (
                "tr:rt-90:fl-h/a.jpg",
                "chained transformations: fl after the first step",
            ),
            (
                "tr:w-300,h-200,cm-pad_resize:bl-5/a.jpg",
                "chained transformations: bl after padding or a background",
            ),
            (
                "tr:bg-FF0000:e-grayscale/a.jpg",
                "chained transformations: e-grayscale after padding or a background",
            ),
            (
                "tr:e-sharpen:e-grayscale/a.jpg",
                "chained transformations: e-grayscale after the same or a later effect",
            ),
            (
                "tr:l-image,i-a.png,l-end:rt-90/a.jpg",
                "chained transformations: a layer before another step",
            ),
            ("tr:rt-45/a.jpg", "rotation (rt-45)"),
            ("tr:rt-N100/a.jpg", "rotation (rt-N100)"),
            ("tr:rt-auto/a.jpg", "rt-auto"),
            ("tr:w-0.5/a.jpg", "relative w (w-0.5)"),
            ("tr:h-auto/a.jpg", "h-auto"),
            ("tr:ar-4-3/a.jpg", "ar without w or h"),
            (
                "tr:w-10,h-10,cm-extract,c-at_max/a.jpg",
                "c with cm-extract",
            ),
            ("tr:w-10,cm-extract,ar-4-3/a.jpg", "ar with cm-extract"),
            ("tr:w-10,h-10,cm-extract,dpr-2/a.jpg", "dpr with cm-extract"),
            ("tr:cm-pad_extract/a.jpg", "cm-pad_extract"),
            (
                "tr:w-10,h-10,cm-extract,fo-auto/a.jpg",
                "fo-auto with cm-extract",
            ),
            ("tr:fo-face/a.jpg", "fo-face"),
            ("tr:x-10/a.jpg", "x and y without cm-extract"),
            ("tr:f-jxl/a.jpg", "f jxl"),
            ("tr:bg-blurred/a.jpg", "bg-blurred"),
            ("tr:bg-red/a.jpg", "bg-red"),
            ("tr:b-5_FF0000/a.jpg", "b"),
            ("tr:r-20/a.jpg", "r"),
            ("tr:dpr-auto/a.jpg", "dpr-auto"),
            ("tr:e-bgremove/a.jpg", "effect e-bgremove"),
            ("tr:orig-true/a.jpg", "orig-true"),
            ("tr:md-true/a.jpg", "md-true"),
            ("tr:lo-true/a.jpg", "lo-true"),
            (
                "tr:l-text,i-hi,l-end/a.jpg",
                "overlays of type text (l-text)",
            ),
            (
                "tr:l-image,i-a.png,lx-N10,ly-0,l-end/a.jpg",
                "overlay negative positions (lx-N10)",
            ),
            (
                "tr:l-image,i-a.png,lx-bw_mul_0.5,ly-0,l-end/a.jpg",
                "overlay expressions (lx-bw_mul_0.5)",
            ),
            (
                "tr:l-image,i-a.png,lx-10,l-end/a.jpg",
                "overlay lx without ly (or ly without lx)",
            ),
            (
                "tr:l-image,i-a.png,lx-1,ly-1,lfo-top,l-end/a.jpg",
                "overlay lfo with lx or ly",
            ),
            (
                "tr:l-image,i-a.png,w-10,h-10,l-end/a.jpg",
                "overlay w and h together",
            ),
            ("tr:l-image,i-a.png,o-50,l-end/a.jpg", "overlay parameter o"),
            (
                "tr:l-image,i-a.png,l-end,l-image,i-b.png,l-end/a.jpg",
                "more than one overlay (l-image)",
            ),
            ("tr:n-thumb/a.jpg", "n"),
            ("tr:o-50/a.jpg", "o"),
            ("tr:pg-2/a.jpg", "pg"),
            ("tr:cr-FF0000_00FF00/a.jpg", "cr"),
            ("tr:vc-h264/a.jpg", "vc"),
            ("tr:so-5/a.jpg", "so"),
            ("tr:sr-240_360/a.jpg", "sr"),
        ] {
            assert_eq!(
                target(url),
                Err(GrammarError::Unsupported(what.into())),
                "{url}"
            );
        }
    }

    /// Image layer rows: canonical URL ⇄ the watermark it asks for.
    #[test]
    fn image_layers_are_watermarks() {
        let w = |path: &str, x, y, width: Option<u32>, height: Option<u32>| Watermark {
            image: WatermarkImage::Path(path.into()),
            x,
            y,
            opacity: Fraction::ONE,
            width: width.map(Span::Pixels),
            height: height.map(Span::Pixels),
        };
        let (start, centre, end) = (Axis::Start, Axis::Center(Offset::ZERO), Axis::End);
        let px = Offset::Pixels;
        for (url, want) in [
            (
                "tr:l-image,i-logo.png,l-end/a.jpg",
                w("logo.png", centre, centre, None, None),
            ),
            (
                "tr:w-300,l-image,i-wm@@logo.png,lx-10,ly-20,w-50,l-end/a.jpg",
                w("wm/logo.png", start(px(10)), start(px(20)), Some(50), None),
            ),
            (
                "tr:l-image,i-logo.png,lfo-bottom_right,h-40,l-end/a.jpg",
                w(
                    "logo.png",
                    end(Offset::ZERO),
                    end(Offset::ZERO),
                    None,
                    Some(40),
                ),
            ),
            (
                "tr:l-image,ie-d20vYSBiLnBuZw%3D%3D,lfo-top,l-end/a.jpg",
                w("wm/a b.png", centre, start(Offset::ZERO), None, None),
            ),
        ] {
            let (path, query) = split(url);
            let t = target(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.watermark.as_ref(), Some(&want), "{url}");
            let back = ImagekitUrl::from_transform(&t.transform, &t.image)
                .and_then(|u| u.with_watermark(&want))
                .unwrap_or_else(|| panic!("{url}"));
            assert_eq!(back.to_path(), url, "{path}?{query}");
        }
        let mut faded = w("logo.png", centre, centre, None, None);
        faded.opacity = Fraction(5000);
        let plain = ImagekitUrl::from_transform(&Transform::default(), "a.jpg");
        assert_eq!(
            plain.and_then(|u| u.with_watermark(&faded)),
            None,
            "no opacity here"
        );
        for bad in [
            "tr:l-image,lx-1,ly-1,l-end/a.jpg",
            "tr:l-image,i-a.png/a.jpg",
            "tr:lx-10/a.jpg",
            "tr:l-image,i-a.png,lfo-middle,l-end/a.jpg",
            "tr:l-image,i-a.png,i-b.png,l-end/a.jpg",
            "tr:l-bogus/a.jpg",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_and_unknown_parameters_are_invalid_and_named() {
        for (url, named) in [
            ("tr:zz-1/a.jpg", "zz"),
            ("tr:w/a.jpg", "w"),
            ("tr:w-/a.jpg", "w"),
            ("tr:w-abc/a.jpg", "w"),
            ("tr:w-99999/a.jpg", "w"),
            ("tr:w-1,w-2/a.jpg", "w"),
            ("tr:c-squash/a.jpg", "c"),
            ("tr:cm-bad/a.jpg", "cm"),
            ("tr:fo-Top/a.jpg", "fo"),
            ("tr:q-0/a.jpg", "q"),
            ("tr:fl-x/a.jpg", "fl"),
            ("tr:rt-abc/a.jpg", "rt"),
            ("tr:rt-N/a.jpg", "rt"),
            ("tr:bl-101/a.jpg", "bl"),
            ("tr:bl-x/a.jpg", "bl"),
            ("tr:e-sharpen-101/a.jpg", "e-sharpen"),
            ("tr:e-sharpen-x/a.jpg", "e-sharpen"),
            ("tr:e-grayscale-1/a.jpg", "e-grayscale"),
            ("tr:bg-FFF/a.jpg", "bg"),
            ("tr:bg-FFFFFFZZ/a.jpg", "bg"),
            ("tr:bg-FFFFFF100/a.jpg", "bg"),
            ("tr:w-10,h-10,c-at_max,cm-pad_resize/a.jpg", "c"),
            ("tr:md-yes/a.jpg", "md"),
            ("tr:cp-yes/a.jpg", "cp"),
            ("tr:cp-true,cp-false/a.jpg", "cp"),
            ("tr:ar-4/a.jpg", "ar"),
            ("tr:ar-0-3,w-10/a.jpg", "ar"),
            ("tr:w-10,h-10,ar-4-3/a.jpg", "ar"),
            ("tr:W-10/a.jpg", "W"),
            ("tr:t-x/a.jpg", "t"),
            ("tr:cm-extract,x-10/a.jpg", "cm-extract needs w and h"),
            (
                "tr:w-10,h-10,cm-extract,x-1,fo-top/a.jpg",
                "cm-extract takes x",
            ),
            ("tr:w-0,h-10,cm-extract/a.jpg", "w"),
            ("tr:w-10,h-10,cm-extract,x-1.5/a.jpg", "x"),
            ("tr:w-10,h-1.5,cm-extract/a.jpg", "h"),
            ("a.jpg?tr=w-0.%0A", "w"),
        ] {
            match target(url) {
                Err(GrammarError::Invalid(m)) => assert!(m.contains(named), "{url}: {m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
        for bad in [
            "",
            "tr:w-1/",
            "tr:w-1/a.jpg?tr=w-2",
            "a.jpg?tr=w-1&tr=w-2",
            "a%zz.jpg",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad:?} gave {:?}",
                target(bad)
            );
        }
        let many = vec!["w-1"; MAX_PARAMS + 1].join(",");
        assert!(matches!(
            ImagekitUrl::parse(&format!("tr:{many}/a.jpg"), ""),
            Err(GrammarError::Invalid(_))
        ));
        let steps = vec!["w-1"; MAX_STEPS + 1].join(":");
        assert!(matches!(
            ImagekitUrl::parse(&format!("tr:{steps}/a.jpg"), ""),
            Err(GrammarError::Invalid(_))
        ));
    }

    /// Chains the one transform expresses: (URL, transform, the single step written back).
    #[test]
    fn chained_steps_collapse_into_one_when_exact() {
        let sharp = Some(Sharpen {
            sigma: Hundredths::ONE,
            amount: Hundredths::ONE,
        });
        for (url, expected, canonical) in [
            (
                "tr:w-300,h-300:rt-90/a.jpg",
                Transform {
                    rotation: Rotation::Cw90,
                    ..fill(300, 300)
                },
                "tr:w-300,h-300,rt-90/a.jpg",
            ),
            (
                "tr:w-300,h-200,rt-90:rt-N180/a.jpg",
                Transform {
                    rotation: Rotation::Cw270,
                    ..fill(300, 200)
                },
                "tr:w-300,h-200,rt-270/a.jpg",
            ),
            (
                "tr:w-300,h-200,f-png:f-webp,q-80:pr-true/a.jpg",
                Transform {
                    format: OutputFormat::Fixed(Format::Webp),
                    quality: Some(80),
                    progressive: Some(true),
                    ..fill(300, 200)
                },
                "tr:w-300,h-200,f-webp,q-80,pr-true/a.jpg",
            ),
            (
                "a.jpg?tr=w-300,c-at_max:e-grayscale:bl-10,e-sharpen:bg-FFFFFF,md-false",
                Transform {
                    fit: Fit::FitIn,
                    upscale: false,
                    grayscale: true,
                    blur: Some(Hundredths(500)),
                    sharpen: sharp,
                    background: Some(Color::WHITE),
                    ..fill(300, 0)
                },
                "tr:w-300,c-at_max,bg-FFFFFF,bl-10,e-grayscale,e-sharpen/a.jpg",
            ),
            (
                "tr:w-300,h-200::cp-true,f-png/a.jpg",
                Transform {
                    keep_icc: true,
                    format: OutputFormat::Fixed(Format::Png),
                    ..fill(300, 200)
                },
                "tr:w-300,h-200,f-png,cp-true/a.jpg",
            ),
        ] {
            let t = target(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(t.transform, expected, "{url}");
            let back = ImagekitUrl::from_transform(&t.transform, &t.image).unwrap();
            assert_eq!(back.to_path(), canonical, "{url}");
            assert_eq!(back.to_target().map(|b| b.transform), Ok(expected), "{url}");
        }
        let layered = target("tr:w-300:rt-90,l-image,i-logo.png,l-end/a.jpg").unwrap();
        assert_eq!(layered.transform.rotation, Rotation::Cw90);
        assert!(layered.watermark.is_some(), "a layer in the last step");
    }

    /// `cp` rows: URL ⇄ whether the ICC profile is kept, and the URL written back.
    #[test]
    fn cp_keeps_or_converts_the_colour_profile() {
        for (url, keep_icc, canonical) in [
            (
                "tr:w-300,f-png,cp-true/a.jpg",
                true,
                "tr:w-300,f-png,cp-true/a.jpg",
            ),
            (
                "a.jpg?tr=cp-true,w-300,f-png",
                true,
                "tr:w-300,f-png,cp-true/a.jpg",
            ),
            ("tr:w-300,cp-false/a.jpg", false, "tr:w-300/a.jpg"),
        ] {
            let t = target(url)
                .unwrap_or_else(|e| panic!("{url}: {e}"))
                .transform;
            assert_eq!(t.keep_icc, keep_icc, "{url}");
            let back = ImagekitUrl::from_transform(&t, "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{url}");
            assert_eq!(back.to_target().map(|b| b.transform), Ok(t), "{url}");
        }
    }

    #[test]
    fn trim_and_smart_crop_map_onto_the_transform_and_back() {
        let trim = |threshold| {
            Some(Trim {
                threshold,
                color: TrimColor::TopLeft,
                equal_hor: false,
                equal_ver: false,
            })
        };
        // (URL, transform, the URL from_transform writes for it)
        for (url, expected, canonical) in [
            (
                "tr:w-300,h-200,fo-auto/a.jpg",
                Transform {
                    smart: true,
                    ..fill(300, 200)
                },
                "tr:w-300,h-200,fo-auto/a.jpg",
            ),
            (
                "tr:t-true,w-300/a.jpg",
                Transform {
                    trim: trim(10),
                    width: 300,
                    upscale: true,
                    ..Transform::default()
                },
                "tr:w-300,t-10/a.jpg",
            ),
            (
                "a.jpg?tr=t-99",
                Transform {
                    trim: trim(99),
                    upscale: true,
                    ..Transform::default()
                },
                "tr:t-99/a.jpg",
            ),
            (
                "tr:t-false/a.jpg",
                Transform {
                    upscale: true,
                    ..Transform::default()
                },
                "a.jpg",
            ),
        ] {
            assert_eq!(target(url).map(|t| t.transform), Ok(expected), "{url}");
            let back = ImagekitUrl::from_transform(&expected, "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{url}");
        }
        for bad in [
            "tr:t-0/a.jpg",
            "tr:t-100/a.jpg",
            "tr:t-1.5/a.jpg",
            "tr:t-yes/a.jpg",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}: {:?}",
                target(bad)
            );
        }
        // What ImageKit cannot say: thresholds outside 1–99, another colour, smart crop with an
        // alignment.
        for t in [
            Transform {
                trim: trim(0),
                ..fill(10, 10)
            },
            Transform {
                trim: Some(Trim {
                    color: TrimColor::BottomRight,
                    ..trim(5).unwrap()
                }),
                ..fill(10, 10)
            },
            Transform {
                smart: true,
                h_align: HAlign::Left,
                ..fill(10, 10)
            },
        ] {
            assert_eq!(ImagekitUrl::from_transform(&t, "a.jpg"), None, "{t:?}");
        }
    }
}
