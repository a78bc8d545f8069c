//! The imgproxy path grammar: parse ⇄ generate, and its mapping onto [`Transform`].
//!
//! ```text
//! /SIGNATURE|insecure|_/OPTION[/OPTION…]/plain/SOURCE[@EXT]
//! /SIGNATURE|insecure|_/OPTION[/OPTION…]/BASE64URL_SOURCE[.EXT]     (the base64 may be split by /)
//! OPTION = NAME[:ARG[:ARG…]]                                        (long or short NAME)
//! SOURCE = s3://BUCKET/KEY[?VERSION] | local:///KEY | KEY
//! ```
//!
//! `?VERSION` reads that version of the object, as imgproxy does: what follows the first `?` of
//! an `s3://` source (percent-encoded as `%3F` in a plain source) is the version ID, as written;
//! `?versionId=VERSION`, S3's own spelling, means the same. An empty one reads the current
//! version.
//!
//! Options are segments holding a `:` (or `-`, separating chained pipelines); the first other segment starts the source (`plain`,
//! `enc` or base64url, whose alphabet has no `:`). An option given twice applies twice, the
//! later one winning, as in imgproxy. The signature covers everything after it, leading `/`
//! included (see [`crate::sign::ImgproxySigner`]). The request's query string is not part of the
//! grammar and is ignored, as imgproxy does.
//!
//! [`OPTIONS`] is the table of every option name imgproxy documents; each entry either maps onto
//! the transform or answers 501 naming the option. Names not in the table are 400.
//!
//! imgproxy rotates (`rot`, clockwise) and flips *before* it crops and extends, so `rs:fill:…`,
//! `g:…`, `ex:1:…` and `fl:…` describe the rotated, flipped image; pixmesh's transform rotates
//! last (see [`crate::transform`]). [`ImgproxyPath::to_target`] translates: the box's sides
//! swap under a quarter turn, the gravities are turned back, and the flips trade axes. The crop
//! (`g`) and the extension (`ex`'s gravity) share one alignment in the transform, so a fill
//! crop extended at another place is 501.
//!
//! `c:W:H[:GRAVITY]` (`crop`) keeps a W×H region of the source before resizing: whole pixels,
//! fractions of the side below 1, 0 the whole side; placed by GRAVITY (a compass gravity;
//! `sm`, `fp`, `obj` and non-zero offsets are 501), or by `g` without one, as imgproxy does. A
//! region larger than the image is clamped to it. Like `g`, it describes the rotated, flipped
//! image, and is translated back. Crops placed at an offset (thumbor's, ImageKit's `x`/`y`)
//! have no imgproxy URL.
//!
//! Gravity offsets (`g:no:5:5`, `ex:1:so:0:10`) have no counterpart in the transform: they are
//! 501 where the gravity places something (a fill crop of both sides, a `c:` crop that takes
//! `g`'s gravity, an extension), and accepted where it places nothing (a fit, `ex:0`). `dpr`
//! without a width or height scales the source itself, which imgproxy never enlarges unless
//! `el:1`: such a dpr of 1 or more is a no-op (below 1, or with `el:1`, 501). `z:F` (`zoom`)
//! multiplies the box like a dpr but fills and fits as without one (imgproxy lowers a dpr to
//! what the source allows, never a zoom: `processing/prepare.go`); without a size, dpr × zoom
//! of 1 or more is a no-op; different factors per axis (`z:2:1`) would stretch: 501.
//! `skp:FORMAT…` (`skip_processing`) returns the source untouched when it is in one of the
//! formats and the output keeps its format; pixmesh always processes, so it is accepted only
//! with a named output format outside the list (where imgproxy processes as well), else 501.
//! `ph` (`preserve_hdr`) is accepted either way: imgproxy converts an HDR source for outputs
//! that cannot carry it, and every pixmesh output is 8-bit.
//!
//! Resizing types (imgproxy's rules: `calcScale` and `calcSizes` in `processing/prepare.go`,
//! the result crop in `processing/crop.go`): `fit`, `force`; `fill` is
//! [`Fit::FillClamped`]: without `el:1`, a source that cannot cover the box keeps its scale and
//! is cropped to the box clamped to the image (100×100 in `rs:fill:300:200` stays 100×100,
//! 400×100 becomes 300×100); `fill-down` is the transform's [`Fit::Fill`], which crops such a
//! source to the box's aspect ratio instead (100×100 → 100×67). With `el:1` both are the
//! fill that enlarges ([`Fit::Fill`] with upscale), and so is `auto`'s fill. `auto` is
//! [`Fit::Auto`]: `fill` when the upright source and the box have the same orientation (a
//! square counts as landscape), else `fit`, decided by the sidecar from the source; with a
//! side derived from the other it is a fit (the two are the same resize). Short of enlarging,
//! imgproxy lowers a dpr to what the source allows, which moves `fill`'s (and `auto`'s) result
//! between three behaviours by the source's size: with both sides and a dpr other than 1
//! without `el:1`, `fill` is the transform's fill of the scaled box (exact for sources at least
//! as large as the box at 1x; a smaller one is cut to the box's ratio where imgproxy keeps the
//! box at 1x, clamped), and `auto` is [`Fit::AutoDown`], whose fill is that one (`fill-down`
//! and `fit` are exact).
//!
//! `pd:TOP[:RIGHT[:BOTTOM[:LEFT]]]` (`padding`, CSS-like: a missing or empty RIGHT or BOTTOM
//! is TOP, LEFT is RIGHT; `applyPaddingOption` in `options/parser/apply.go`) adds a transparent
//! canvas around the image after the resize, the crop and `ex`, whatever the image's size
//! (`processing/padding.go`, after `extend` in `processing/processing.go`), coloured like
//! everything transparent by `flatten` (`bg`, or white for formats without alpha), each side
//! multiplied by the dpr and rounded half to even; in the output's orientation (turned back
//! for the transform, which pads before rotating). It maps onto [`Transform::padding`]: around
//! the box `pad` pads to with `ex:1`, around the image without it (`rs:fit:300:200/pd:10` on
//! a 2560×1600 source is 300×188 inside 320×208; `rs:fill:300:200/pd:10` on a 40×20 source,
//! which the fill keeps at its size, is 60×40). A dpr other than 1 without `el:1` is 501: imgproxy lowers it, the
//! padding's factor included, by the source's size. Padding is generated as `pd` with all four
//! sides, after `ex:1` where the transform pads to the box.
//!
//! Chained pipelines (`…/-/…`, imgproxy Pro) process the result of one pipeline with the
//! next; the transform is one pipeline, so a chain is accepted when at most one of its
//! pipelines processes the image and the others only set what imgproxy applies to the result
//! whichever pipeline names it (`q`, `f`, `mb`, `scp`, `sm`, `cb`, `exp`, …: `RESULT_OPTIONS`);
//! other chains are 501. The generated URL is the equivalent single pipeline.
//!
//! `g:fp:X:Y` centres the fill crop on the point (fractions of the image, 0–1) as far as the
//! image allows; turned back through the rotation and flips like the other gravities. It is
//! of the image after `c:` in imgproxy, of the source in pixmesh: the two together are 501.
//!
//! `t:THRESHOLD[:COLOR[:EQUAL_HOR[:EQUAL_VER]]]` (`trim`) cuts uniform borders from the source
//! before anything else (see [`crate::transform::Trim`]): THRESHOLD 0–255 (a fraction is
//! rounded down, as channel differences are whole), COLOR `RRGGBB` (the top-left pixel's
//! without it). imgproxy trims before auto-rotation, pixmesh the upright source, so the sides
//! `EQUAL_HOR` and `EQUAL_VER` speak of differ for sources with a quarter-turn EXIF
//! orientation.
//!
//! `g:sm` places the fill crop by pixmesh's attention heuristic (libvips' `attention`, which
//! imgproxy's smart gravity is); a `c:` crop placed by it (no gravity of its own) is 501.
//!
//! `scp:0` (`strip_color_profile`) keeps the source's ICC profile in the output, the pixels
//! unconverted (JPEG, PNG and WebP outputs; AVIF and GIF answer 501); the default `scp:1`
//! converts to sRGB and writes no profile.
//!
//! Effects: `bl:SIGMA` is a Gaussian blur and `sh:SIGMA` an unsharp mask of strength 1 (both
//! sigma ≤ 100; imgproxy's sharpen is libvips' curve-shaped variant of it); `sa:0` (saturation
//! 0) is grayscale and `sa:1` nothing, other saturations 501. `ex:1[:GRAVITY]` pads to the box
//! with `bg` (`bg:R:G:B`, `bg:RRGGBB`, `bga:ALPHA`), transparent without it; `bg` also
//! composites transparency onto it, in every format, as imgproxy does.
//!
//! Encoding: `q` is the quality; `mb:BYTES` (`max_bytes`) lowers the quality of a JPEG, WebP
//! or AVIF until it fits, and sends the smallest try when nothing does (`mb:0`: no limit);
//! `jpgo:PROGRESSIVE` (`jpeg_options`) asks for a progressive or a baseline JPEG, its other
//! arguments only as pixmesh encodes anyway (`no_subsample`, `trellis_quant`,
//! `overshoot_deringing`, `optimize_scans` false, `quant_table` 0; anything else is 501).
//! Without `jpgo`, the sidecar's configured default applies, like `IMGPROXY_JPEG_PROGRESSIVE`.
//!
//! `wm:OPACITY[:POSITION[:X[:Y[:SCALE]]]]` (`watermark`) puts the sidecar's configured
//! watermark (`IMGPROXY_WATERMARK_PATH`'s counterpart) on the final image, as imgproxy does
//! after rotation and padding (see `watermark` below), or the image `wmu:BASE64URL` names (a
//! key in the source's storage, see `watermark_url`); `wmt`, `wms`, `wmr` and `wmsh` are 501.
//!
//! Formats: `f:`/`format:`/`ext:` or the source's extension (`@webp`, `.png`) fix the output
//! (`gif`: the first frame; `avif`); with neither, the source's format, or, on a route with
//! `auto_format`, the client's choice from its `Accept` header, as `IMGPROXY_AUTO_WEBP` does
//! (see [`crate::accept`]). `IMGPROXY_ENFORCE_WEBP`, which overrides a named format, has no
//! equivalent.
//!
//! The round-trip table in the tests is this module's specification.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::grammar::{
    FormatChoice, GrammarError, Target, apply_dpr, invalid, parse_format, sharpen, unsupported,
};
use crate::percent::{decode, encode, is_unreserved};
use crate::render::{MAX_VERSION_ID_LEN, is_version_id};
use crate::thumbor::Signature;
use crate::transform::{
    Color, Crop as CropRegion, CropAt, Fit, Focus, Format, Fraction, HAlign, Hundredths,
    MAX_DIMENSION, OutputFormat, Padding, Rotation, Sharpen, Span, Transform, TrimColor, VAlign,
};
use crate::watermark::{Watermark, WatermarkImage, opacity_text, placement_of};

mod options;

use options::{GRAVITIES, Options, stored_watermark};
pub use options::{OPTIONS, OptionSpec};

/// Most options one URL may carry.
pub const MAX_OPTIONS: usize = 64;
/// Most arguments one option may carry.
pub const MAX_ARGS: usize = 16;

/// The segment that separates chained pipelines (`…/-/…`), kept in
/// [`ImgproxyPath::options`] as an option of this name without arguments.
pub const PIPELINE_SEPARATOR: &str = "-";

/// Options that set the result whichever pipeline of a chain they are in (imgproxy applies them
/// to its main options): encoding, metadata, skipping, caching and limits.
const RESULT_OPTIONS: &[&str] = &[
    "strip_metadata",
    "keep_copyright",
    "strip_color_profile",
    "enforce_thumbnail",
    "quality",
    "format_quality",
    "max_bytes",
    "format",
    "skip_processing",
    "raw",
    "cachebuster",
    "expires",
    "filename",
    "return_attachment",
    "max_animation_frames",
    "max_animation_frame_resolution",
    "max_result_dimension",
];

/// One `NAME:ARG:ARG` segment, kept as written (or [`PIPELINE_SEPARATOR`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgOption {
    /// Option name, long or short, e.g. `rs`.
    pub name: String,
    /// Arguments, possibly empty strings (`rs::300` leaves the type unchanged).
    pub args: Vec<String>,
}

/// How the source URL is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `plain/SOURCE`, still percent-encoded.
    Plain(String),
    /// Base64url (no padding), as written, possibly with `/` inside.
    Base64(String),
    /// `enc/…`: an AES-encrypted source, as written.
    Encrypted(String),
}

/// A parsed imgproxy path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImgproxyPath {
    /// `insecure` (or `_`) or the signature.
    pub signature: Signature,
    /// The processing options, in order.
    pub options: Vec<ImgOption>,
    /// The source URL.
    pub source: Source,
    /// The extension after `@` (plain) or `.` (base64/encrypted); `Some("")` when the separator
    /// is there with nothing after it (keep the source format, as with no extension).
    pub extension: Option<String>,
}

impl ImgproxyPath {
    /// Parses `path` (with or without its leading `/`).
    pub fn parse(path: &str) -> Result<Self, GrammarError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let (sig, mut rest) = path
            .split_once('/')
            .ok_or_else(|| invalid("missing processing options and source"))?;
        let signature = match sig {
            "insecure" | "_" => Signature::Unsafe,
            s if is_signature(s) => Signature::Hash(s.to_owned()),
            _ => {
                return Err(invalid(
                    "the path must start with a URL signature or insecure",
                ));
            }
        };
        let mut options = Vec::new();
        let source = loop {
            let (seg, after) = rest.split_once('/').unwrap_or((rest, ""));
            match seg {
                "" => return Err(invalid("missing source")),
                "plain" => break Source::Plain(after.to_owned()),
                "enc" => break Source::Encrypted(after.to_owned()),
                seg if seg == "-" || seg.contains(':') => {
                    if options.len() == MAX_OPTIONS {
                        return Err(invalid(format!("more than {MAX_OPTIONS} options")));
                    }
                    options.push(match seg {
                        // The separator of chained pipelines, kept as a nameless option.
                        "-" => ImgOption {
                            name: PIPELINE_SEPARATOR.to_owned(),
                            args: Vec::new(),
                        },
                        seg => parse_option(seg)?,
                    });
                    rest = after;
                }
                _ => break Source::Base64(rest.to_owned()),
            }
        };
        let (source, extension) = match source {
            Source::Plain(s) => {
                let (s, ext) = split_extension(&s, '@');
                (Source::Plain(s), ext)
            }
            Source::Base64(s) => {
                let (s, ext) = split_extension(&s, '.');
                (Source::Base64(s), ext)
            }
            Source::Encrypted(s) => {
                let (s, ext) = split_extension(&s, '.');
                (Source::Encrypted(s), ext)
            }
        };
        let empty = match &source {
            Source::Plain(s) | Source::Base64(s) | Source::Encrypted(s) => s.is_empty(),
        };
        if empty {
            return Err(invalid("missing source"));
        }
        Ok(ImgproxyPath {
            signature,
            options,
            source,
            extension,
        })
    }

    /// Everything after the signature, with its leading `/`: what a signature signs.
    pub fn signed_part(&self) -> String {
        let mut out = String::new();
        for o in &self.options {
            out.push('/');
            out.push_str(&o.name);
            for a in &o.args {
                out.push(':');
                out.push_str(a);
            }
        }
        let (marker, text, sep) = match &self.source {
            Source::Plain(s) => ("/plain/", s, '@'),
            Source::Base64(s) => ("/", s, '.'),
            Source::Encrypted(s) => ("/enc/", s, '.'),
        };
        out.push_str(marker);
        out.push_str(text);
        if let Some(ext) = &self.extension {
            out.push(sep);
            out.push_str(ext);
        }
        out
    }

    /// The whole path without its leading `/`: `insecure/…` or `SIGNATURE/…`.
    pub fn to_path(&self) -> String {
        let sig = match &self.signature {
            Signature::Unsafe => "insecure",
            Signature::Hash(h) => h,
        };
        format!("{sig}{}", self.signed_part())
    }

    /// The source URL, decoded: percent escapes of a plain source resolved, base64 decoded.
    pub fn source_url(&self) -> Result<String, GrammarError> {
        match &self.source {
            Source::Plain(s) => {
                decode(s).ok_or_else(|| invalid("the source has a malformed percent escape"))
            }
            Source::Base64(s) => URL_SAFE_NO_PAD
                .decode(s.replace('/', "").trim_end_matches('='))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| invalid("the source is not base64url-encoded UTF-8")),
            Source::Encrypted(_) => Err(unsupported("encrypted source URLs")),
        }
    }

    /// Everything the URL asks for, grammar-neutral.
    pub fn to_target(&self) -> Result<Target, GrammarError> {
        let mut o = Options::default();
        let spec_of = |opt: &ImgOption| {
            OPTIONS
                .iter()
                .find(|s| s.names.contains(&opt.name.as_str()))
                .ok_or_else(|| invalid(format!("unknown option {}", opt.name)))
        };
        // Chained pipelines collapse into one transform when at most one of them processes:
        // the others only set the result's options, which apply whatever their pipeline.
        let mut processing = 0;
        for pipeline in self.options.split(|opt| opt.name == PIPELINE_SEPARATOR) {
            let mut processes = false;
            for opt in pipeline {
                processes |= !RESULT_OPTIONS.contains(&spec_of(opt)?.names[0]);
            }
            processing += usize::from(processes);
        }
        if processing > 1 {
            return Err(unsupported(
                "chained pipelines that process the image in more than one pipeline",
            ));
        }
        for opt in self.options.iter().filter(|o| o.name != PIPELINE_SEPARATOR) {
            let spec = spec_of(opt)?;
            if opt.args.len() > spec.max_args {
                return Err(invalid(format!(
                    "{}: at most {} arguments",
                    opt.name, spec.max_args
                )));
            }
            (spec.apply)(&mut o, spec.names[0], &opt.args)?;
        }
        if let Some(ext) = self.extension.as_deref().filter(|e| !e.is_empty()) {
            o.format = Some(parse_format("extension", ext)?);
        }
        let Resolved {
            handle,
            image,
            version,
        } = resolve_source(&self.source_url()?)?;
        let watermark = match (o.watermark, o.watermark_url) {
            (Some(w), Some(url)) => Some(stored_watermark(w, &url, handle.as_deref())?),
            (w, _) => w,
        };
        // imgproxy's options describe the image after rotation and flips; the transform's are
        // before them (see the module documentation).
        let turn_back = o.rotation.inverse();
        let (width, height) = if o.rotation.swaps_sides() {
            (o.height, o.width)
        } else {
            (o.width, o.height)
        };
        let crop_anchor = turn_back.apply_to_anchor(mirror(o.gravity, o.flip_h, o.flip_v));
        let pad_anchor = turn_back.apply_to_anchor(o.extend_gravity);
        // With one side derived from the other, fill and fit are the same resize.
        let fit = match o.fit {
            // `auto` with a dpr, short of enlarging: its fill is the fill of the scaled box,
            // as `fill`'s is below.
            Fit::FitIn if o.auto_fit && width > 0 && height > 0 => match o.dpr != 1.0 {
                true if !o.enlarge => Fit::AutoDown,
                _ => Fit::Auto,
            },
            // Enlarged, `fill` and `fill-down` are the same fill.
            Fit::FillClamped if o.enlarge => Fit::Fill,
            // With a dpr, short of enlarging, imgproxy lowers the dpr to what the source
            // allows (`processing/prepare.go`, `calcScale`): a source covering the box at 1x
            // but not the box scaled by the dpr is cut to the box's aspect ratio, the
            // transform's fill of the scaled box. Only a source smaller than the box itself
            // differs (imgproxy: the box at 1x, clamped; here: cut to the box's ratio).
            Fit::FillClamped if o.dpr != 1.0 && width > 0 && height > 0 => Fit::Fill,
            fit => fit,
        };
        let crops = matches!(
            fit,
            Fit::Fill | Fit::FillClamped | Fit::Auto | Fit::AutoDown
        ) && width > 0
            && height > 0;
        // The transform has no gravity offsets: they are 501 where the gravity places
        // something (a fill crop, a `c:` crop without its own gravity, an extension).
        let crop_uses_g = o.crop.is_some_and(|(_, _, gravity)| gravity.is_none());
        if (o.gravity_offset && (crops || crop_uses_g)) || (o.extend && o.extend_offset) {
            return Err(unsupported("gravity offsets"));
        }
        let (h_align, v_align) = match o.extend {
            true if crops && crop_anchor != pad_anchor => {
                return Err(unsupported("extend gravity other than the crop gravity"));
            }
            true => pad_anchor,
            false => crop_anchor,
        };
        if o.smart && o.crop.is_some_and(|(_, _, gravity)| gravity.is_none()) {
            return Err(unsupported("a crop placed by smart gravity (c: with g:sm)"));
        }
        let crop = o.crop.map(|(w, h, gravity)| {
            let (width, height) = if o.rotation.swaps_sides() {
                (h, w)
            } else {
                (w, h)
            };
            let (h_anchor, v_anchor) =
                turn_back.apply_to_anchor(mirror(gravity.unwrap_or(o.gravity), o.flip_h, o.flip_v));
            CropRegion {
                width,
                height,
                at: CropAt::Anchor(h_anchor, v_anchor),
            }
        });
        let focus = match (o.focus, o.crop) {
            // imgproxy's focus point is of the cropped image; pixmesh's of the source.
            (Some(_), Some(_)) => return Err(unsupported("focus point gravity with a crop")),
            (Some((x, y)), None) => {
                let x = if o.flip_h { x.complement() } else { x };
                let y = if o.flip_v { y.complement() } else { y };
                let (x, y) = turn_back.apply_to_point((x, y));
                Some(Focus::point(x, y))
            }
            (None, _) => None,
        };
        let (flip_h, flip_v) = o.rotation.flips_before((o.flip_h, o.flip_v));
        let mut transform = Transform {
            width,
            height,
            fit,
            adaptive: false,
            padding: None,
            upscale: o.enlarge,
            flip_h,
            flip_v,
            h_align,
            v_align,
            format: o.format.map_or(OutputFormat::Source, OutputFormat::Fixed),
            quality: o.quality,
            rotation: o.rotation,
            grayscale: o.grayscale,
            blur: o.blur,
            sharpen: sharpen(o.sharpen, Some(Hundredths::ONE)),
            pad: o.extend,
            background: o.background.and_then(|c| {
                Color {
                    a: o.background_alpha,
                    ..c
                }
                .visible()
            }),
            crop,
            focus,
            progressive: o.progressive,
            max_bytes: o.max_bytes,
            trim: o.trim,
            smart: o.smart,
            keep_icc: o.keep_icc,
            proportion: None,
            effects: Default::default(),
            final_effects: Default::default(),
        };
        // A zoom multiplies the box as a dpr does, and fills and fits as without it (imgproxy
        // lowers the dpr to what the source allows, not the zoom); different factors per axis
        // would stretch the image.
        let (zoom, zoom_y) = o.zoom;
        if zoom != zoom_y {
            return Err(unsupported("zoom with different factors per axis"));
        }
        // Without a size, imgproxy's dpr and zoom scale the source itself, which it never
        // enlarges unless asked: together 1 or more, they are then a no-op.
        let no_size = transform.width == 0 && transform.height == 0;
        let unsized_noop = no_size && o.dpr * zoom >= 1.0 && !o.enlarge && watermark.is_none();
        if no_size && !unsized_noop && zoom != 1.0 {
            return Err(unsupported("zoom without a width or height"));
        }
        apply_dpr(
            &mut transform,
            if unsized_noop { 1.0 } else { o.dpr * zoom },
        )?;
        let dpr = if unsized_noop { 1.0 } else { o.dpr };
        padding_onto(&mut transform, o.padding, o.enlarge, dpr)?;
        if !o.skip_processing.is_empty() {
            // imgproxy skips processing when the source is one of the listed formats and the
            // output keeps it; pixmesh always processes, so only an output format outside the
            // list (where imgproxy processes too) is exact.
            let listed = |f: Format| {
                o.skip_processing
                    .iter()
                    .any(|n| Format::from_name(n) == Some(f))
            };
            if o.format.is_none_or(listed) {
                return Err(unsupported(format!(
                    "skip_processing of {} sources",
                    o.skip_processing.join(", ")
                )));
            }
        }
        Ok(Target {
            handle,
            image,
            version,
            transform,
            format_choice: if o.format.is_some() {
                FormatChoice::Named
            } else {
                FormatChoice::Unnamed
            },
            expires: o.expires,
            watermark,
        })
    }

    /// [`ImgproxyPath::from_transform`] with the watermark `w` (`wm:…`, last): `None` when
    /// imgproxy cannot say it (see `watermark_option`).
    pub fn with_watermark(mut self, w: &Watermark) -> Option<Self> {
        let url = match &w.image {
            WatermarkImage::Default => None,
            WatermarkImage::Path(path) => Some(URL_SAFE_NO_PAD.encode(path)),
            WatermarkImage::Object { .. } => return None,
        };
        self.options.push(ImgOption {
            name: "wm".to_owned(),
            args: watermark_option(w)?,
        });
        if let Some(url) = url {
            self.options.push(ImgOption {
                name: "wmu".to_owned(),
                args: vec![url],
            });
        }
        Some(self)
    }

    /// The canonical unsigned path that asks for `t` on `image` (a relative key). Inverse of
    /// [`ImgproxyPath::to_target`]; `None` when imgproxy cannot say `t` (a sharpening amount
    /// other than 1).
    pub fn from_transform(t: &Transform, image: &str) -> Option<Self> {
        if !t.effects.is_empty() || !t.final_effects.is_empty() || t.proportion.is_some() {
            return None; // thumbor's ordered filters and proportion
        }
        let mut options = Vec::new();
        let mut opt = |name: &str, args: Vec<String>| {
            options.push(ImgOption {
                name: name.to_owned(),
                args,
            })
        };
        let rt = match t.fit {
            _ if t.adaptive => return None,
            Fit::FitIn => "fit",
            Fit::Fill if t.upscale => "fill",
            Fit::Fill => "fill-down",
            Fit::FillClamped => "fill",
            Fit::Stretch => "force",
            Fit::Auto => "auto",
            // Only with a dpr, which the generated URL does not write.
            Fit::AutoDown | Fit::Cover => return None,
        };
        let r = t.rotation;
        let (width, height) = if r.swaps_sides() {
            (t.height, t.width)
        } else {
            (t.width, t.height)
        };
        let mut rs = vec![rt.to_owned(), width.to_string(), height.to_string()];
        if t.upscale {
            rs.push("1".to_owned());
        }
        opt("rs", rs);
        let (flip_h, flip_v) = r.flips_before((t.flip_h, t.flip_v));
        if let Some(c) = t.crop {
            // imgproxy places crops by gravity only (offsets from a corner would need the
            // corner turned with the image): offset regions have no imgproxy URL here.
            let CropAt::Anchor(h, v) = c.at else {
                return None;
            };
            if (c.width, c.height) == (Span::FULL, Span::FULL) {
                return None; // `c:0:0` is no crop at all
            }
            let (w, hgt) = if r.swaps_sides() {
                (c.height, c.width)
            } else {
                (c.width, c.height)
            };
            let span = |s: Span| match s {
                Span::Pixels(p) => p.to_string(),
                Span::Fraction(f) if f == Fraction::ONE => "0".to_owned(),
                Span::Fraction(f) => f.to_string(),
            };
            let g = gravity_name(mirror(r.apply_to_anchor((h, v)), flip_h, flip_v));
            opt("c", vec![span(w), span(hgt), g.to_owned()]);
        }
        let final_anchor = r.apply_to_anchor((t.h_align, t.v_align));
        let crops = matches!(t.fit, Fit::Fill | Fit::FillClamped | Fit::Auto)
            && t.width > 0
            && t.height > 0;
        if t.smart {
            // A focus wins over smart gravity in pixmesh; imgproxy's `g` is one or the other.
            if t.focus.is_some() || (t.h_align, t.v_align) != (HAlign::Center, VAlign::Middle) {
                return None;
            }
            opt("g", vec!["sm".to_owned()]);
        } else if let Some(f) = t.focus {
            let (x, y) = f.as_point()?;
            if t.crop.is_some() || (t.h_align, t.v_align) != (HAlign::Center, VAlign::Middle) {
                return None;
            }
            let (x, y) = r.apply_to_point((x, y));
            let x = if flip_h { x.complement() } else { x };
            let y = if flip_v { y.complement() } else { y };
            opt("g", vec!["fp".to_owned(), x.to_string(), y.to_string()]);
        } else if !t.pad || crops {
            let g = gravity_name(mirror(final_anchor, flip_h, flip_v));
            if g != "ce" {
                opt("g", vec![g.to_owned()]);
            }
        }
        if t.pad {
            let mut ex = vec!["1".to_owned()];
            let g = gravity_name(final_anchor);
            if g != "ce" {
                ex.push(g.to_owned());
            }
            opt("ex", ex);
        }
        if let Some(p) = t.padding {
            // Around the box `ex` pads to, in the output's orientation.
            let p = rotate_sides(r, p);
            let sides = [p.top, p.right, p.bottom, p.left];
            opt("pd", sides.iter().map(u32::to_string).collect());
        }
        if let Some(trim) = t.trim {
            let mut args = vec![trim.threshold.to_string()];
            let color = match trim.color {
                TrimColor::TopLeft => String::new(),
                TrimColor::Color(c) => c.hex(),
                TrimColor::BottomRight => return None,
            };
            if trim.equal_hor || trim.equal_ver {
                let b = |v: bool| if v { "1" } else { "0" }.to_owned();
                args.extend([color, b(trim.equal_hor), b(trim.equal_ver)]);
            } else if !color.is_empty() {
                args.push(color);
            }
            opt("t", args);
        }
        if t.keep_icc {
            opt("scp", vec!["0".to_owned()]);
        }
        if let Some(q) = t.quality {
            opt("q", vec![q.to_string()]);
        }
        if let Some(max) = t.max_bytes {
            opt("mb", vec![max.to_string()]);
        }
        if let Some(progressive) = t.progressive {
            opt("jpgo", vec![if progressive { "1" } else { "0" }.to_owned()]);
        }
        if flip_h || flip_v {
            let b = |v: bool| if v { "1" } else { "0" }.to_owned();
            opt("fl", vec![b(flip_h), b(flip_v)]);
        }
        if r != Rotation::None {
            opt("rot", vec![r.degrees().to_string()]);
        }
        if t.grayscale {
            opt("sa", vec!["0".to_owned()]);
        }
        if let Some(sigma) = t.blur {
            opt("bl", vec![sigma.to_string()]);
        }
        match t.sharpen {
            Some(Sharpen { sigma, amount }) if amount == Hundredths::ONE => {
                opt("sh", vec![sigma.to_string()]);
            }
            Some(_) => return None,
            None => {}
        }
        if let Some(c) = t.background {
            opt("bg", vec![Color { a: 255, ..c }.hex()]);
            if !c.is_opaque() {
                let alpha = format!("{:.4}", f64::from(c.a) / 255.0);
                opt("bga", vec![alpha]);
            }
        }
        Some(ImgproxyPath {
            signature: Signature::Unsafe,
            options,
            source: Source::Plain(encode(image, |b| {
                is_unreserved(b) || b"/:!$&'()*+,;=".contains(&b)
            })),
            extension: match t.format {
                OutputFormat::Source => None,
                OutputFormat::Fixed(f) => Some(f.name().to_owned()),
                OutputFormat::Compatible => return None,
            },
        })
    }
}

/// The `wm:…` option of `w`: `None` when imgproxy cannot say it (percentages, tiling along one
/// axis only, a size other than one scale of both sides).
fn watermark_option(w: &Watermark) -> Option<Vec<String>> {
    if w.opacity.0 == 0 || w.width != w.height {
        return None;
    }
    let (anchor, (dx, dy)) = placement_of(w.x, w.y)?;
    let position = anchor.map_or("re", gravity_name);
    let scale = match w.width {
        None => None,
        Some(Span::Fraction(f)) => Some(f.to_string()),
        Some(Span::Pixels(_)) => return None,
    };
    let mut args = vec![opacity_text(w.opacity)];
    let tail = [
        (position != "ce" || dx != 0 || dy != 0 || scale.is_some()).then(|| position.to_owned()),
        (dx != 0 || dy != 0 || scale.is_some()).then(|| dx.to_string()),
        (dy != 0 || scale.is_some()).then(|| dy.to_string()),
        scale,
    ];
    args.extend(tail.into_iter().flatten());
    Some(args)
}

/// The anchor seen in the image mirrored as imgproxy's `fl` says.
fn mirror((h, v): (HAlign, VAlign), flip_h: bool, flip_v: bool) -> (HAlign, VAlign) {
    (
        if flip_h { h.mirrored() } else { h },
        if flip_v { v.mirrored() } else { v },
    )
}

/// The compass name of an anchor.
fn gravity_name(anchor: (HAlign, VAlign)) -> &'static str {
    GRAVITIES
        .iter()
        .find(|g| (g.1, g.2) == anchor)
        .map_or("ce", |g| g.0)
}

/// Whether `s` may be a signature segment: 1 to 128 base64url characters (`insecure` and `_`
/// included).
pub fn is_signature(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

/// `path` (`[/]SIGNATURE/…`, as received) the way imgproxy reads and signs it
/// (`handlers/path.go`, `RedenormalizePath`): `%3A` in the options (everything before
/// `/plain/`, or the whole path without one) is a `:` again, as proxies and CDNs escape it,
/// and a plain source whose `scheme://` a listener merged is whole again
/// ([`crate::normalisation::unmerged_source`]). The signature segment stays as it is. Only
/// the upper-case escape, as in imgproxy.
pub fn as_imgproxy_reads(path: &str) -> String {
    let unmerged = crate::normalisation::unmerged_source(path);
    let path = unmerged.as_deref().unwrap_or(path);
    let lead = if path.starts_with('/') { "/" } else { "" };
    let Some((sig, after)) = path[lead.len()..].split_once('/') else {
        return path.to_owned();
    };
    let (options, plain) = match after.strip_prefix("plain/") {
        Some(plain) => ("", Some(plain)),
        None => match after.split_once("/plain/") {
            Some((options, plain)) => (options, Some(plain)),
            None => (after, None),
        },
    };
    let options = options.replace("%3A", ":");
    match plain {
        None => format!("{lead}{sig}/{options}"),
        Some(plain) if options.is_empty() => format!("{lead}{sig}/plain/{plain}"),
        Some(plain) => format!("{lead}{sig}/{options}/plain/{plain}"),
    }
}

/// Splits `SOURCE<sep>EXT` at the last `sep`.
fn split_extension(s: &str, sep: char) -> (String, Option<String>) {
    match s.rsplit_once(sep) {
        Some((src, ext)) if !ext.contains('/') => (src.to_owned(), Some(ext.to_owned())),
        _ => (s.to_owned(), None),
    }
}

fn parse_option(seg: &str) -> Result<ImgOption, GrammarError> {
    let mut parts = seg.split(':');
    let name = parts.next().unwrap_or_default();
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        return Err(invalid(format!("bad option name {name:?}")));
    }
    let args: Vec<String> = parts.take(MAX_ARGS + 1).map(str::to_owned).collect();
    if args.len() > MAX_ARGS {
        return Err(invalid(format!("{name}: more than {MAX_ARGS} arguments")));
    }
    Ok(ImgOption {
        name: name.to_owned(),
        args,
    })
}

/// What a source URL names.
struct Resolved {
    /// The S3 bucket (a storage handle), for `s3://` sources.
    handle: Option<String>,
    /// The key.
    image: String,
    /// The object version, for `s3://…?VERSION` sources.
    version: Option<String>,
}

/// Maps a decoded source URL onto a storage handle (an S3 bucket), a key and a version.
fn resolve_source(url: &str) -> Result<Resolved, GrammarError> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .ok_or_else(|| invalid("s3:// sources need a bucket and a key"))?;
        if !crate::query::is_handle(bucket) {
            return Err(invalid(
                "s3:// bucket names are letters, digits, `.`, `_` and `-`",
            ));
        }
        let (key, version) = match key.split_once('?') {
            None => (key, None),
            Some((key, query)) => {
                let id = query.strip_prefix("versionId=").unwrap_or(query);
                let version = (!id.is_empty()).then(|| id.to_owned());
                if let Some(v) = &version
                    && !is_version_id(v)
                {
                    return Err(invalid(format!(
                        "the s3:// version ID is not 1 to {MAX_VERSION_ID_LEN} visible ASCII characters"
                    )));
                }
                (key, version)
            }
        };
        return Ok(Resolved {
            handle: Some(bucket.to_owned()),
            image: key.to_owned(),
            version,
        });
    }
    if let Some(key) = url.strip_prefix("local://") {
        return Ok(Resolved {
            handle: None,
            image: key.to_owned(),
            version: None,
        });
    }
    if let Some((scheme, _)) = url.split_once("://")
        && !scheme.contains('/')
    {
        let named = !scheme.is_empty()
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        return Err(if named {
            unsupported(format!("{scheme}:// sources"))
        } else {
            invalid("the source has a malformed URL scheme")
        });
    }
    Ok(Resolved {
        handle: None,
        image: url.to_owned(),
        version: None,
    })
}

/// Sets `t`'s padding from `pd` (see the module documentation). imgproxy embeds it around its
/// image after the resize, the crop and `ex`, whatever the image's size, each side times the dpr
/// rounded half to even; the transform's padding surrounds the box `pad` pads to (`ex:1`) or,
/// without `pad`, the image, before the rotation (so the sides are turned back). Without
/// `el:1`, imgproxy lowers a dpr by the source's size: a dpr other than 1 is then 501.
fn padding_onto(
    t: &mut Transform,
    padding: [Option<u32>; 4],
    enlarge: bool,
    dpr: f64,
) -> Result<(), GrammarError> {
    let [top, right, bottom, left] = padding.map(Option::unwrap_or_default);
    if [top, right, bottom, left] == [0; 4] {
        return Ok(());
    }
    if dpr != 1.0 && !enlarge {
        return Err(unsupported(
            "padding (pd) with a dpr other than 1 without el:1",
        ));
    }
    let scaled = |side: u32| {
        let v = (f64::from(side) * dpr).round_ties_even();
        (v <= f64::from(MAX_DIMENSION))
            .then_some(v as u32)
            .ok_or_else(|| {
                invalid(format!(
                    "padding: the scaled padding is over the limit of {MAX_DIMENSION}"
                ))
            })
    };
    let out = Padding {
        top: scaled(top)?,
        right: scaled(right)?,
        bottom: scaled(bottom)?,
        left: scaled(left)?,
    };
    t.padding = Some(rotate_sides(t.rotation.inverse(), out));
    Ok(())
}

/// The padding `p` of an image becomes once the image is rotated by `r` (clockwise).
fn rotate_sides(r: Rotation, p: Padding) -> Padding {
    (0..r.degrees() / 90).fold(p, |p, _| Padding {
        top: p.left,
        right: p.top,
        bottom: p.right,
        left: p.bottom,
    })
}

#[cfg(test)]
mod tests;
