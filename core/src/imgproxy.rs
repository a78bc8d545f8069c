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
//! box at 1x, clamped), and `auto` is 501 (`fill-down` and `fit` are exact).
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
    Expiry, FormatChoice, GrammarError, Target, apply_dpr, invalid, parse_bool, parse_crop_size,
    parse_decimal, parse_dimension, parse_format, parse_quality, parse_rotation, parse_sigma,
    parse_unix_seconds, require_zero, sharpen, unsupported,
};
use crate::percent::{decode, encode, is_unreserved};
use crate::render::{MAX_VERSION_ID_LEN, is_version_id};
use crate::thumbor::Signature;
use crate::transform::{
    Color, Crop as CropRegion, CropAt, Fit, Focus, Format, Fraction, HAlign, Hundredths,
    MAX_DIMENSION, OutputFormat, Padding, Rotation, Sharpen, Span, Transform, Trim, TrimColor,
    VAlign,
};
use crate::watermark::{
    Offset, Watermark, WatermarkImage, axes_placed, opacity_text, placement_of,
};

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
            Fit::FitIn if o.auto_fit && width > 0 && height > 0 => Fit::Auto,
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
        let crops =
            matches!(fit, Fit::Fill | Fit::FillClamped | Fit::Auto) && width > 0 && height > 0;
        // `auto`'s fill has the same three behaviours, decided with the orientation by the
        // sidecar, which knows only the clamped fill.
        if fit == Fit::Auto && crops && o.dpr != 1.0 {
            return Err(unsupported(
                "dpr with resizing type auto without enlarge (fill, fill-down or el:1 are exact)",
            ));
        }
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
            Fit::Cover => return None,
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

/// `wm:OPACITY[:POSITION[:X_OFFSET[:Y_OFFSET[:SCALE]]]]`: the sidecar's default watermark
/// (imgproxy's `IMGPROXY_WATERMARK_PATH`), on the final image, as in imgproxy. OPACITY 0–1
/// (0: no watermark, as imgproxy's `wm:0` switches a preset's off); POSITION a compass gravity
/// (`ce` by default) with offsets in whole pixels pointing inwards from the edges it names, or
/// `re`, tiles with X_OFFSET and Y_OFFSET pixels between them; SCALE (0–1) fits the watermark
/// inside that fraction of the result's width and height, up or down (0: its own size).
/// Fractional offsets (imgproxy's relative ones) and scales over 1 are 501.
fn watermark(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let opacity = parse_decimal(name, required(name, args)?)?;
    let opacity = Fraction::from_f64(opacity)
        .ok_or_else(|| invalid(format!("{name}: the opacity is at most 1")))?;
    if opacity.0 == 0 {
        o.watermark = None;
        return Ok(());
    }
    let offset = |i: usize| -> Result<i32, GrammarError> {
        let Some(v) = arg(args, i) else {
            return Ok(0);
        };
        let (negative, digits) = v.strip_prefix('-').map_or((false, v), |d| (true, d));
        let d = parse_decimal(name, digits)?;
        if d.fract() != 0.0 {
            return Err(unsupported(format!("{name} fractional offsets")));
        }
        let px = if negative { -d } else { d };
        match Offset::pixels(px as i64) {
            Some(Offset::Pixels(p)) => Ok(p),
            _ => Err(invalid(format!(
                "{name}: offsets are limited to {MAX_DIMENSION}"
            ))),
        }
    };
    let (dx, dy) = (offset(2)?, offset(3)?);
    let anchor = match arg(args, 1).unwrap_or("ce") {
        "re" => None,
        kind => GRAVITIES
            .iter()
            .find(|g| g.0 == kind)
            .map(|&(_, h, v)| Some((h, v)))
            .ok_or_else(|| invalid(format!("{name}: unknown position {kind:?}")))?,
    };
    let (x, y) = axes_placed(anchor, (dx, dy))
        .ok_or_else(|| invalid(format!("{name}: negative tile spacing")))?;
    let scale = match arg(args, 4) {
        None => None,
        Some(v) => {
            let s = parse_decimal(name, v)?;
            if s > 1.0 {
                return Err(unsupported(format!("{name} scale over 1")));
            }
            Fraction::from_f64(s)
                .filter(|f| f.0 > 0)
                .map(Span::Fraction)
        }
    };
    o.watermark = Some(Watermark {
        image: WatermarkImage::Default,
        x,
        y,
        opacity,
        width: scale,
        height: scale,
    });
    Ok(())
}

/// `wmu:BASE64URL` (`watermark_url`): the watermark image instead of the default, for `wm`
/// (alone it asks for nothing, as in imgproxy). pixmesh reads it from storage: a key (or
/// `local:///KEY`) resolved like the source's path, or `s3://BUCKET/KEY` in the source's own
/// bucket; other buckets, versions and `http(s)://` URLs are 501.
fn watermark_url(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let url = URL_SAFE_NO_PAD
        .decode(required(name, args)?.trim_end_matches('='))
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| invalid(format!("{name}: not base64url of a URL")))?;
    o.watermark_url = Some(url);
    Ok(())
}

/// `w` with the image of `wmu`'s `url`, for a source in the storage `handle` names.
fn stored_watermark(
    mut w: Watermark,
    url: &str,
    handle: Option<&str>,
) -> Result<Watermark, GrammarError> {
    let in_wmu = |e: GrammarError| match e {
        GrammarError::Unsupported(m) => unsupported(format!("watermark_url: {m}")),
        GrammarError::Invalid(m) => invalid(format!("watermark_url: {m}")),
    };
    let r = resolve_source(url).map_err(in_wmu)?;
    if r.version.is_some() {
        return Err(unsupported("watermark_url: object versions"));
    }
    if r.handle.is_some() && r.handle.as_deref() != handle {
        return Err(unsupported(
            "watermark_url: a bucket other than the source's",
        ));
    }
    w.image = WatermarkImage::Path(r.image);
    Ok(w)
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

/// `c:W:H[:GRAVITY]` as parsed: width, height, and the crop's own gravity if it has one.
type CropOption = (Span, Span, Option<(HAlign, VAlign)>);

/// What the options have set so far, as imgproxy means them (after rotation and flips); starts
/// at imgproxy's defaults.
struct Options {
    fit: Fit,
    /// `rt:auto`: `fill` when the source and the box have the same orientation, else `fit`.
    auto_fit: bool,
    width: u32,
    height: u32,
    enlarge: bool,
    gravity: (HAlign, VAlign),
    /// `g` had non-zero offsets: 501 where the gravity places something.
    gravity_offset: bool,
    dpr: f64,
    /// `z:X[:Y]`: the box's factors per axis (imgproxy multiplies its target size by them).
    zoom: (f64, f64),
    quality: Option<u8>,
    format: Option<Format>,
    flip_h: bool,
    flip_v: bool,
    rotation: Rotation,
    grayscale: bool,
    blur: Option<Hundredths>,
    sharpen: Option<Hundredths>,
    extend: bool,
    extend_gravity: (HAlign, VAlign),
    /// `ex`'s gravity had non-zero offsets.
    extend_offset: bool,
    background: Option<Color>,
    background_alpha: u8,
    expires: Option<Expiry>,
    /// `c:W:H[:GRAVITY]`: the region's size and its own gravity (the `g` one when `None`).
    crop: Option<CropOption>,
    /// `g:fp:X:Y`: the focus point, in the rotated, flipped image.
    focus: Option<(Fraction, Fraction)>,
    max_bytes: Option<u32>,
    progressive: Option<bool>,
    /// `t:…`.
    trim: Option<Trim>,
    /// `g:sm`.
    smart: bool,
    /// `scp:0`.
    keep_icc: bool,
    /// `wm:…`: the default watermark, placed on the final image.
    watermark: Option<Watermark>,
    /// `wmu:…`: the watermark's URL, decoded, instead of the default.
    watermark_url: Option<String>,
    /// `skp:…`: the source formats whose processing imgproxy skips, as written.
    skip_processing: Vec<String>,
    /// `pd:…`: top, right, bottom and left padding, in the output's orientation; `None` where
    /// no `pd` has set the side (imgproxy copies only sides that are set).
    padding: [Option<u32>; 4],
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fit: Fit::FitIn,
            auto_fit: false,
            width: 0,
            height: 0,
            enlarge: false,
            gravity: (HAlign::Center, VAlign::Middle),
            gravity_offset: false,
            dpr: 1.0,
            zoom: (1.0, 1.0),
            quality: None,
            format: None,
            flip_h: false,
            flip_v: false,
            rotation: Rotation::None,
            grayscale: false,
            blur: None,
            sharpen: None,
            extend: false,
            extend_gravity: (HAlign::Center, VAlign::Middle),
            extend_offset: false,
            background: None,
            background_alpha: 255,
            expires: None,
            crop: None,
            focus: None,
            max_bytes: None,
            progressive: None,
            trim: None,
            smart: false,
            keep_icc: false,
            watermark: None,
            watermark_url: None,
            skip_processing: Vec::new(),
            padding: [None; 4],
        }
    }
}

/// Applies one option: `(options, long name, arguments)`.
type Apply = fn(&mut Options, &str, &[String]) -> Result<(), GrammarError>;

/// One option of the table: its names (long first) and what it does.
pub struct OptionSpec {
    /// Long name first, then the short names.
    pub names: &'static [&'static str],
    /// Most arguments it takes.
    max_args: usize,
    apply: Apply,
}

const fn spec(names: &'static [&'static str], max_args: usize, apply: Apply) -> OptionSpec {
    OptionSpec {
        names,
        max_args,
        apply,
    }
}

/// Every processing option imgproxy documents. Those the pipeline cannot perform are 501 unless
/// their arguments ask for nothing (`bl:0`, `rot:0`, `pd:0`, `sm:1`, `ar:1`, …).
pub static OPTIONS: &[OptionSpec] = &[
    spec(&["resize", "rs"], 5, resize),
    spec(&["size", "s"], 4, size),
    spec(&["resizing_type", "rt"], 1, resizing_type),
    spec(&["width", "w"], 1, width),
    spec(&["height", "h"], 1, height),
    spec(&["enlarge", "el"], 1, enlarge),
    spec(&["extend", "ex"], 4, extend),
    // `g:obj:CLASS…` and `g:objw:CLASS:WEIGHT…` take any number of arguments.
    spec(&["gravity", "g"], MAX_ARGS, gravity),
    spec(&["dpr"], 1, dpr),
    spec(&["quality", "q"], 1, quality),
    spec(&["format", "f", "ext"], 1, format),
    spec(&["flip", "fl"], 2, flip),
    spec(&["rotate", "rot"], 1, rotate),
    spec(&["blur", "bl"], 1, blur),
    spec(&["sharpen", "sh"], 1, sharpen_option),
    spec(&["pixelate", "pix"], 1, zero_or_unsupported),
    spec(&["padding", "pd"], 4, padding),
    spec(&["strip_metadata", "sm"], 1, always_on),
    spec(&["auto_rotate", "ar"], 1, always_on),
    spec(&["expires", "exp"], 1, expires),
    spec(&["cachebuster", "cb"], 1, cachebuster),
    spec(&["min-width", "mw"], 1, unsupported_option),
    spec(&["min-height", "mh"], 1, unsupported_option),
    spec(&["zoom", "z"], 2, zoom),
    spec(
        &["extend_aspect_ratio", "extend_ar", "exar"],
        4,
        unsupported_option,
    ),
    spec(&["crop", "c"], 5, crop),
    spec(
        &["crop_aspect_ratio", "crop_ar", "car"],
        2,
        unsupported_option,
    ),
    spec(&["trim", "t"], 4, trim),
    spec(&["background", "bg"], 3, background),
    spec(&["background_alpha", "bga"], 1, background_alpha),
    spec(&["adjust", "a"], 3, unsupported_option),
    spec(&["brightness", "br"], 1, unsupported_option),
    spec(&["contrast", "co"], 1, unsupported_option),
    spec(&["saturation", "sa"], 1, saturation),
    spec(&["monochrome", "mc"], 2, unsupported_option),
    spec(&["duotone", "dt"], 3, unsupported_option),
    spec(&["colorize", "col"], 3, unsupported_option),
    spec(&["unsharp_masking", "ush"], 3, unsupported_option),
    spec(&["blur_detections", "bd"], 16, unsupported_option),
    spec(&["draw_detections", "dd"], 16, unsupported_option),
    spec(
        &["objects_position", "obj_pos", "op"],
        3,
        unsupported_option,
    ),
    spec(&["gradient", "gr"], 5, unsupported_option),
    spec(&["watermark", "wm"], 5, watermark),
    spec(&["watermark_url", "wmu"], 1, watermark_url),
    spec(&["watermark_text", "wmt"], 1, unsupported_option),
    spec(&["watermark_size", "wms"], 3, unsupported_option),
    spec(
        &["watermark_rotate", "wm_rot", "wmr"],
        1,
        unsupported_option,
    ),
    spec(&["watermark_shadow", "wmsh"], 1, unsupported_option),
    spec(&["style", "st"], 1, unsupported_option),
    spec(&["keep_copyright", "kcr"], 1, unsupported_option),
    spec(&["strip_color_profile", "scp"], 1, strip_color_profile),
    spec(&["enforce_thumbnail", "eth"], 1, unsupported_option),
    spec(&["dpi"], 1, unsupported_option),
    spec(&["format_quality", "fq"], 16, unsupported_option),
    spec(&["autoquality", "aq"], 6, unsupported_option),
    spec(&["max_bytes", "mb"], 1, max_bytes),
    spec(&["jpeg_options", "jpgo"], 6, jpeg_options),
    spec(&["png_options", "pngo"], 3, unsupported_option),
    spec(&["webp_options", "webpo"], 3, unsupported_option),
    spec(&["avif_options", "avifo"], 2, unsupported_option),
    spec(&["page", "pg"], 1, unsupported_option),
    spec(&["pages", "pgs"], 1, unsupported_option),
    spec(&["disable_animation", "da"], 1, unsupported_option),
    spec(&["video_thumbnail_second", "vts"], 1, unsupported_option),
    spec(&["video_thumbnail_keyframes", "vtk"], 1, unsupported_option),
    spec(&["video_thumbnail_tile", "vtt"], 10, unsupported_option),
    spec(
        &["video_thumbnail_animation", "vta"],
        10,
        unsupported_option,
    ),
    spec(&["fallback_image_url", "fiu"], 1, unsupported_option),
    spec(&["skip_processing", "skp"], MAX_ARGS, skip_processing),
    spec(&["raw"], 1, unsupported_option),
    spec(&["filename", "fn"], 2, unsupported_option),
    spec(&["return_attachment", "att"], 1, unsupported_option),
    spec(&["preset", "pr"], 16, unsupported_option),
    spec(&["hashsum", "hs"], 2, unsupported_option),
    spec(&["max_src_resolution", "msr"], 1, unsupported_option),
    spec(&["max_src_file_size", "msfs"], 1, unsupported_option),
    spec(&["max_animation_frames", "maf"], 1, unsupported_option),
    spec(
        &["max_animation_frame_resolution", "mafr"],
        1,
        unsupported_option,
    ),
    spec(&["max_result_dimension", "mrd"], 1, unsupported_option),
    spec(&["resizing_algorithm", "ra"], 1, unsupported_option),
    spec(&["preserve_hdr", "ph"], 1, preserve_hdr),
];

/// The compass gravities: (name, horizontal, vertical).
const GRAVITIES: [(&str, HAlign, VAlign); 9] = [
    ("no", HAlign::Center, VAlign::Top),
    ("so", HAlign::Center, VAlign::Bottom),
    ("ea", HAlign::Right, VAlign::Middle),
    ("we", HAlign::Left, VAlign::Middle),
    ("noea", HAlign::Right, VAlign::Top),
    ("nowe", HAlign::Left, VAlign::Top),
    ("soea", HAlign::Right, VAlign::Bottom),
    ("sowe", HAlign::Left, VAlign::Bottom),
    ("ce", HAlign::Center, VAlign::Middle),
];

/// The argument at `i` when present and not empty (empty arguments leave a value unchanged).
fn arg(args: &[String], i: usize) -> Option<&str> {
    args.get(i).map(String::as_str).filter(|a| !a.is_empty())
}

fn required<'a>(name: &str, args: &'a [String]) -> Result<&'a str, GrammarError> {
    arg(args, 0).ok_or_else(|| invalid(format!("{name}: missing argument")))
}

fn resize(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    if let Some(rt) = arg(args, 0) {
        resizing_type(o, name, &[rt.to_owned()])?;
    }
    size(o, name, args.get(1..).unwrap_or_default())
}

fn size(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    if let Some(w) = arg(args, 0) {
        o.width = parse_dimension(name, w)?;
    }
    if let Some(h) = arg(args, 1) {
        o.height = parse_dimension(name, h)?;
    }
    if let Some(el) = arg(args, 2) {
        o.enlarge = parse_bool(name, el)?;
    }
    if let Some(ex) = arg(args, 3) {
        extend(o, "extend", &[ex.to_owned()])?;
    }
    Ok(())
}

fn resizing_type(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.auto_fit = false;
    o.fit = match required(name, args)? {
        "fit" => Fit::FitIn,
        // Short of enlarging, a source smaller than the box keeps its scale and is cropped to
        // the box clamped to it (enlarged, it is plain fill: see `to_target`).
        "fill" => Fit::FillClamped,
        "force" => Fit::Stretch,
        // `fill` that, short of enlarging, crops to the box's aspect ratio instead of to the
        // box: what the transform's fill without upscaling does (and, enlarged, plain fill).
        "fill-down" => Fit::Fill,
        "auto" => {
            o.auto_fit = true;
            o.fit = Fit::FitIn;
            return Ok(());
        }
        other => return Err(invalid(format!("{name}: unknown resizing type {other:?}"))),
    };
    Ok(())
}

fn width(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.width = parse_dimension(name, required(name, args)?)?;
    Ok(())
}

fn height(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.height = parse_dimension(name, required(name, args)?)?;
    Ok(())
}

fn enlarge(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.enlarge = parse_bool(name, required(name, args)?)?;
    Ok(())
}

/// `ex:EXTEND[:GRAVITY[:X:Y]]`: pad to the box; the gravity defaults to `ce`.
fn extend(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.extend = parse_bool(name, required(name, args)?)?;
    o.extend_gravity = (HAlign::Center, VAlign::Middle);
    o.extend_offset = false;
    if let Some(kind) = arg(args, 1) {
        if matches!(kind, "sm" | "obj" | "objw") {
            return Err(invalid(format!(
                "{name}: gravity {kind} cannot place an extension"
            )));
        }
        (o.extend_gravity, o.extend_offset) = compass(name, kind, &args[2..])?;
    }
    Ok(())
}

/// `pd:TOP[:RIGHT[:BOTTOM[:LEFT]]]`, CSS-like: a side not given (or empty) copies the one
/// opposite it (right and bottom copy top, left copies right), as imgproxy's
/// `applyPaddingOption` (`options/parser/apply.go`) does, where that side is set.
fn padding(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let given = |i: usize| arg(args, i).map(|a| parse_dimension(name, a)).transpose();
    let [top, right, bottom, left] = &mut o.padding;
    if let Some(v) = given(0)? {
        *top = Some(v);
    }
    *right = given(1)?.or(*top).or(*right);
    *bottom = given(2)?.or(*top).or(*bottom);
    *left = given(3)?.or(*right).or(*left);
    Ok(())
}

/// A compass gravity, and whether its offsets are not all zero (the transform has no offsets:
/// where the gravity places something, non-zero ones are 501).
fn compass(
    name: &str,
    kind: &str,
    offsets: &[String],
) -> Result<((HAlign, VAlign), bool), GrammarError> {
    match kind {
        "sm" => return Err(unsupported("smart gravity (g:sm)")),
        "fp" => return Err(unsupported("focus point gravity (g:fp)")),
        "obj" | "objw" => return Err(unsupported("object gravity (g:obj)")),
        _ => {}
    }
    let &(_, h, v) = GRAVITIES
        .iter()
        .find(|g| g.0 == kind)
        .ok_or_else(|| invalid(format!("{name}: unknown gravity {kind:?}")))?;
    let mut offset = false;
    for o in offsets.iter().filter(|a| !a.is_empty()) {
        offset |= parse_decimal(name, o.strip_prefix('-').unwrap_or(o))? != 0.0;
    }
    Ok(((h, v), offset))
}

/// `c:W:H[:GRAVITY[:X:Y]]`: keep a W×H region of the source (pixels, fractions below 1, 0 the
/// whole side), placed by GRAVITY or else by `g`; `c:0:0` crops nothing.
fn crop(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let size = |i: usize| arg(args, i).map_or(Ok(Span::FULL), |v| parse_crop_size(name, v, true));
    let (w, h) = (size(0)?, size(1)?);
    let gravity = match arg(args, 2) {
        Some(kind) => match compass(name, kind, args.get(3..).unwrap_or_default())? {
            (_, true) => return Err(unsupported("gravity offsets")),
            (anchor, false) => Some(anchor),
        },
        None => None,
    };
    o.crop = ((w, h) != (Span::FULL, Span::FULL)).then_some((w, h, gravity));
    Ok(())
}

/// `g:GRAVITY[:X:Y]`, or `g:fp:X:Y`, the focus point as fractions (0–1) of the image.
fn gravity(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let kind = required(name, args)?;
    if matches!(kind, "obj" | "objw") {
        return Err(unsupported("object gravity (g:obj)"));
    }
    if args.len() > 3 {
        return Err(invalid(format!("{name}: at most 3 arguments")));
    }
    o.focus = None;
    o.gravity_offset = false;
    o.smart = kind == "sm";
    if o.smart {
        if args[1..].iter().any(|a| !a.is_empty()) {
            return Err(invalid(format!("{name}: sm takes no offsets")));
        }
        o.gravity = (HAlign::Center, VAlign::Middle);
        return Ok(());
    }
    if kind == "fp" {
        let coordinate = |i: usize| {
            let v = arg(args, i).ok_or_else(|| invalid(format!("{name}: fp needs X and Y")))?;
            Fraction::from_f64(parse_decimal(name, v)?)
                .ok_or_else(|| invalid(format!("{name}: fp coordinates are between 0 and 1")))
        };
        o.focus = Some((coordinate(1)?, coordinate(2)?));
        o.gravity = (HAlign::Center, VAlign::Middle);
        return Ok(());
    }
    (o.gravity, o.gravity_offset) = compass(name, kind, &args[1..])?;
    Ok(())
}

/// `t:THRESHOLD[:COLOR[:EQUAL_HOR[:EQUAL_VER]]]`: trim uniform borders.
fn trim(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let threshold = parse_decimal(name, required(name, args)?)?;
    if threshold > 255.0 {
        return Err(invalid(format!("{name}: the threshold is at most 255")));
    }
    let color = match arg(args, 1) {
        None => TrimColor::TopLeft,
        Some(hex) => TrimColor::Color(
            Color::from_hex(hex)
                .filter(|_| hex.len() == 6)
                .ok_or_else(|| invalid(format!("{name}: {hex:?} is not an RRGGBB colour")))?,
        ),
    };
    let flag = |i: usize| arg(args, i).map_or(Ok(false), |v| parse_bool(name, v));
    o.trim = Some(Trim {
        // Channel differences are whole: "more than 10.5" is "more than 10".
        threshold: threshold.floor() as u8,
        color,
        equal_hor: flag(2)?,
        equal_ver: flag(3)?,
    });
    Ok(())
}

/// `scp:BOOL`: false keeps the source's ICC profile (and its pixels) in the output.
fn strip_color_profile(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.keep_icc = !parse_bool(name, required(name, args)?)?;
    Ok(())
}

fn blur(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.blur = parse_sigma(name, required(name, args)?)?;
    Ok(())
}

fn sharpen_option(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.sharpen = parse_sigma(name, required(name, args)?)?;
    Ok(())
}

/// `bg:R:G:B` or `bg:HEX` (3 or 6 digits); without arguments, no background.
fn background(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.background = match args {
        [] => None,
        [hex] if hex.is_empty() => None,
        [hex] => Some(
            Color::from_hex(hex)
                .filter(|_| matches!(hex.len(), 3 | 6))
                .ok_or_else(|| invalid(format!("{name}: {hex:?} is not a hex colour")))?,
        ),
        [r, g, b] => {
            let channel = |c: &str| {
                c.parse::<u8>()
                    .ok()
                    .filter(|_| c.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| invalid(format!("{name}: {c:?} is not a value 0-255")))
            };
            Some(Color::rgb(channel(r)?, channel(g)?, channel(b)?))
        }
        _ => return Err(invalid(format!("{name}: expected R:G:B or a hex colour"))),
    };
    Ok(())
}

/// `bga:ALPHA`, 0–1: the background's opacity.
fn background_alpha(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let alpha = parse_decimal(name, required(name, args)?)?;
    if alpha > 1.0 {
        return Err(invalid(format!("{name}: alpha is between 0 and 1")));
    }
    o.background_alpha = (alpha * 255.0).round() as u8;
    Ok(())
}

/// `sa:0` removes all colour (grayscale), `sa:1` changes nothing; other saturations are 501.
fn saturation(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let v = parse_decimal(name, required(name, args)?)?;
    if v == 0.0 {
        o.grayscale = true;
    } else if v == 1.0 {
        o.grayscale = false;
    } else {
        return Err(unsupported(name));
    }
    Ok(())
}

/// `skp:FORMAT…`: skip the processing of sources in these formats when the output keeps the
/// source's format (see `to_target`).
fn skip_processing(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    for f in args.iter().filter(|a| !a.is_empty()) {
        if !f.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(invalid(format!("{name}: {f:?} is not a format")));
        }
        o.skip_processing.push(f.to_ascii_lowercase());
    }
    Ok(())
}

/// `ph:BOOL`: keep an HDR (more than 8 bits) source HDR where the output format can carry it,
/// and convert it otherwise, as imgproxy does. pixmesh writes 8-bit outputs only, so every
/// output is one that cannot: accepted either way.
fn preserve_hdr(_: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    parse_bool(name, required(name, args)?).map(|_| ())
}

fn dpr(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.dpr = parse_decimal(name, required(name, args)?)?;
    if o.dpr == 0.0 {
        return Err(invalid(format!("{name} must be greater than 0")));
    }
    Ok(())
}

/// `z:FACTOR` or `z:X:Y`: imgproxy divides its shrink factors by them and multiplies the
/// target size (`processing/prepare.go`, `calcScale` and `calcSizes`); each greater than 0.
fn zoom(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let x = parse_decimal(name, required(name, args)?)?;
    let y = match arg(args, 1) {
        Some(y) => parse_decimal(name, y)?,
        None => x,
    };
    if x == 0.0 || y == 0.0 {
        return Err(invalid(format!("{name} must be greater than 0")));
    }
    o.zoom = (x, y);
    Ok(())
}

fn quality(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.quality = match required(name, args)? {
        "0" => None,
        q => Some(parse_quality(name, q)?),
    };
    Ok(())
}

/// `mb:BYTES`: a byte budget for lossy outputs; 0 removes it.
fn max_bytes(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    let value = required(name, args)?;
    let bytes = value
        .parse::<u32>()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| {
            invalid(format!(
                "{name}: {value:?} is not a whole number of bytes up to {}",
                u32::MAX
            ))
        })?;
    o.max_bytes = (bytes > 0).then_some(bytes);
    Ok(())
}

/// `jpgo:PROGRESSIVE:NO_SUBSAMPLE:TRELLIS_QUANT:OVERSHOOT_DERINGING:OPTIMIZE_SCANS:QUANT_TABLE`:
/// the scan mode is applied; the others must ask for what pixmesh's JPEG encoder does (4:2:0,
/// no trellis quantization or overshoot deringing, standard scans and table 0), else 501.
fn jpeg_options(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    required(name, args)?;
    if let Some(p) = arg(args, 0) {
        o.progressive = Some(parse_bool(name, p)?);
    }
    for (i, what) in [
        "no_subsample",
        "trellis_quant",
        "overshoot_deringing",
        "optimize_scans",
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(v) = arg(args, i + 1)
            && parse_bool(name, v)?
        {
            return Err(unsupported(format!("{name} {what}")));
        }
    }
    if let Some(table) = arg(args, 5) {
        match table.parse::<u8>() {
            Ok(0) => {}
            Ok(1..=8) => return Err(unsupported(format!("{name} quant_table {table}"))),
            _ => return Err(invalid(format!("{name}: quant_table {table:?} is not 0-8"))),
        }
    }
    Ok(())
}

fn format(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.format = Some(parse_format(name, required(name, args)?)?);
    Ok(())
}

fn flip(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.flip_h = parse_bool(name, required(name, args)?)?;
    if let Some(v) = arg(args, 1) {
        o.flip_v = parse_bool(name, v)?;
    }
    Ok(())
}

fn rotate(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.rotation = parse_rotation(name, required(name, args)?, true)?;
    Ok(())
}

/// Options whose all-zero arguments ask for nothing (`bl:0`, `pd:0:0`); anything else is 501.
fn zero_or_unsupported(_: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    required(name, args)?;
    args.iter()
        .filter(|a| !a.is_empty())
        .try_for_each(|a| require_zero(name, a))
}

/// Options the pipeline always performs (strip metadata, auto-rotate): turning them off is 501.
fn always_on(_: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    if !parse_bool(name, required(name, args)?)? {
        return Err(unsupported(format!("{name}:false")));
    }
    Ok(())
}

fn expires(o: &mut Options, name: &str, args: &[String]) -> Result<(), GrammarError> {
    o.expires = Some(parse_unix_seconds(name, required(name, args)?)?);
    Ok(())
}

/// `cb:STRING` only changes the URL (and so every cache key); it asks nothing of the pipeline.
fn cachebuster(_: &mut Options, _: &str, _: &[String]) -> Result<(), GrammarError> {
    Ok(())
}

fn unsupported_option(_: &mut Options, name: &str, _: &[String]) -> Result<(), GrammarError> {
    Err(unsupported(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paths in canonical form: `generate(parse(s)) == s` for each.
    const ROUND_TRIP: &[&str] = &[
        "insecure/rs:fit:300:200/plain/photos/a.jpg@webp",
        "insecure/rs:fill:300:200:1/g:nowe/q:80/plain/photos/a.jpg",
        "insecure/rs:fit:300:200/wm:0.5:soea:10:10:0.25/plain/photos/a.jpg",
        "insecure/wm:1:re:8:4/plain/photos/a.jpg",
        "insecure/rs:force:300:200/fl:1:0/plain/a.jpg@png",
        "insecure/rs::300/plain/a.jpg",
        "insecure/w:300/h:200/el:1/ex:0/plain/s3://photos/a%20b.jpg",
        "insecure/plain/local:///dir/a.jpg",
        "insecure/plain/a.jpg@",
        "insecure/bl:0/sh:0/rot:0/pd:0:0/sm:1/ar:t/cb:v2/exp:4102444800/plain/a.jpg@png",
        "insecure/scp:1/strip_color_profile:t/plain/a.jpg",
        "insecure/t:10/scp:0/rs:fill:300:200/g:sm/plain/a.jpg",
        "insecure/trim:0:ff0000:1:0/plain/a.jpg@png",
        "insecure/t:25.5::t/plain/a.jpg",
        "insecure/rs:fill:300:200:1/g:nowe/fl:1:0/rot:90/plain/a.jpg",
        "insecure/rs:fit:300:200/ex:1:so/bg:ff0000/bga:0.5/plain/a.jpg",
        "insecure/rs:fit:300:200:0:1/bg:255:255:255/plain/a.jpg@jpg",
        "insecure/sa:0/bl:2.5/sh:0.7/rot:-90/bg:/plain/a.jpg",
        "insecure/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
        "insecure/cGhvdG9zL2EuanBn",
        "insecure/rs:fill:300:200/-/q:80/f:webp/plain/a.jpg",
        "insecure/-/rs:fit:300:200/-/-/plain/a.jpg",
        "insecure/enc/AbCd.png",
        "m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg",
    ];

    #[test]
    fn canonical_paths_round_trip() {
        for &path in ROUND_TRIP {
            let parsed = ImgproxyPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(parsed.to_path(), path, "generate(parse({path}))");
            assert_eq!(ImgproxyPath::parse(&parsed.to_path()).unwrap(), parsed);
        }
    }

    #[test]
    fn parses_every_part() {
        let p = ImgproxyPath::parse("/_/rs:fill:1:2/g:so:0:0/plain/s3://b/k%40x.jpg@webp").unwrap();
        assert_eq!(p.signature, Signature::Unsafe);
        assert_eq!(p.options.len(), 2);
        assert_eq!(p.options[1].args, ["so", "0", "0"]);
        assert_eq!(p.source, Source::Plain("s3://b/k%40x.jpg".into()));
        assert_eq!(p.extension.as_deref(), Some("webp"));
        assert_eq!(p.source_url().unwrap(), "s3://b/k@x.jpg");
        let t = p.to_target().unwrap();
        assert_eq!(
            (t.handle.as_deref(), t.image.as_str()),
            (Some("b"), "k@x.jpg")
        );
        let b64 = ImgproxyPath::parse(
            "insecure/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png",
        )
        .unwrap();
        assert_eq!(
            b64.source_url().unwrap(),
            "http://example.com/images/curiosity.jpg"
        );
        assert_eq!(b64.extension.as_deref(), Some("png"));
    }

    fn target(path: &str) -> Result<Target, GrammarError> {
        ImgproxyPath::parse(path)?.to_target()
    }

    #[test]
    fn maps_onto_the_transform_model() {
        for (path, expected) in [
            (
                "insecure/plain/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    ..Transform::default()
                },
            ),
            (
                "insecure/rs:fill:300:200:1/g:soea/q:80/f:jpg/plain/a.png",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::Fill,
                    upscale: true,
                    h_align: HAlign::Right,
                    v_align: VAlign::Bottom,
                    format: OutputFormat::Fixed(Format::Jpeg),
                    quality: Some(80),
                    ..Transform::default()
                },
            ),
            (
                "insecure/s:150:100/rt:force/dpr:2/fl:0:1/q:0/plain/a.png@webp",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::Stretch,
                    flip_v: true,
                    format: OutputFormat::Fixed(Format::Webp),
                    ..Transform::default()
                },
            ),
            (
                "insecure/f:png/w:10/w:20/plain/a.jpg@webp",
                Transform {
                    width: 20,
                    fit: Fit::FitIn,
                    format: OutputFormat::Fixed(Format::Webp),
                    ..Transform::default()
                },
            ),
            (
                "insecure/w:100/plain/anim.gif@gif",
                Transform {
                    width: 100,
                    fit: Fit::FitIn,
                    format: OutputFormat::Fixed(Format::Gif),
                    ..Transform::default()
                },
            ),
        ] {
            assert_eq!(target(path).unwrap().transform, expected, "{path}");
        }
    }

    #[test]
    fn a_format_or_extension_names_the_format_and_nothing_leaves_it_to_the_route() {
        for (path, choice) in [
            ("insecure/plain/a.jpg", FormatChoice::Unnamed),
            ("insecure/plain/a.jpg@", FormatChoice::Unnamed),
            ("insecure/YS5qcGc", FormatChoice::Unnamed),
            ("insecure/plain/a.jpg@png", FormatChoice::Named),
            ("insecure/YS5qcGc.webp", FormatChoice::Named),
            ("insecure/f:gif/plain/a.jpg", FormatChoice::Named),
            ("insecure/ext:jpg/plain/a.jpg", FormatChoice::Named),
        ] {
            assert_eq!(target(path).unwrap().format_choice, choice, "{path}");
        }
    }

    #[test]
    fn from_transform_inverts_to_target() {
        let t = Transform {
            width: 300,
            height: 0,
            fit: Fit::Fill,
            upscale: true,
            flip_h: true,
            flip_v: false,
            h_align: HAlign::Left,
            v_align: VAlign::Top,
            format: OutputFormat::Fixed(Format::Png),
            quality: Some(70),
            ..Transform::default()
        };
        let p = ImgproxyPath::from_transform(&t, "dir/a b@c?.jpg").unwrap();
        // imgproxy crops the flipped image: the source's left is the mirror image's right.
        assert_eq!(
            p.to_path(),
            "insecure/rs:fill:300:0:1/g:noea/q:70/fl:1:0/plain/dir/a%20b%40c%3F.jpg@png"
        );
        let back = p.to_target().unwrap();
        assert_eq!((back.transform, back.image.as_str()), (t, "dir/a b@c?.jpg"));
        let default = ImgproxyPath::from_transform(&Transform::default(), "a.jpg").unwrap();
        assert_eq!(default.to_target().unwrap().transform, Transform::default());
        let strong = Transform {
            sharpen: Some(Sharpen {
                sigma: Hundredths::ONE,
                amount: Hundredths(200),
            }),
            ..Transform::default()
        };
        assert_eq!(
            ImgproxyPath::from_transform(&strong, "a.jpg"),
            None,
            "imgproxy's sharpen has no amount"
        );
    }

    #[test]
    fn rotation_flips_and_gravities_are_translated() {
        let red = Some(Color::rgb(255, 0, 0));
        for (path, expected) in [
            (
                // Crop the rotated image's top-left corner: the source's bottom-left.
                "insecure/rs:fill:300:200/rot:90/g:nowe/plain/a.jpg",
                Transform {
                    width: 200,
                    height: 300,
                    fit: Fit::FillClamped,
                    rotation: Rotation::Cw90,
                    h_align: HAlign::Left,
                    v_align: VAlign::Bottom,
                    ..Transform::default()
                },
            ),
            (
                // imgproxy crops after flipping: keeping the west of the mirror image keeps
                // the source's east.
                "insecure/rs:fill:300:200/fl:1:0/g:we/plain/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::FillClamped,
                    flip_h: true,
                    h_align: HAlign::Right,
                    ..Transform::default()
                },
            ),
            (
                "insecure/rot:270/fl:1:0/plain/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    rotation: Rotation::Cw270,
                    flip_v: true,
                    ..Transform::default()
                },
            ),
            (
                "insecure/rs:fit:300:200/ex:1:so/bg:f00/plain/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::FitIn,
                    pad: true,
                    v_align: VAlign::Bottom,
                    background: red,
                    ..Transform::default()
                },
            ),
            (
                // The crop gravity plays no part in a fit: the extension's places the image.
                "insecure/s:300:200:0:1/g:no/bg:255:0:0/bga:0.5/plain/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::FitIn,
                    pad: true,
                    background: Some(Color {
                        a: 128,
                        ..Color::rgb(255, 0, 0)
                    }),
                    ..Transform::default()
                },
            ),
            (
                "insecure/rs:fill:300:200/g:so/ex:1:so/plain/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::FillClamped,
                    pad: true,
                    v_align: VAlign::Bottom,
                    ..Transform::default()
                },
            ),
            (
                "insecure/sa:0/bl:2.5/sh:0.7/bg:ff0000/bga:0/plain/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    grayscale: true,
                    blur: Some(Hundredths(250)),
                    sharpen: Some(Sharpen {
                        sigma: Hundredths(70),
                        amount: Hundredths::ONE,
                    }),
                    ..Transform::default()
                },
            ),
            (
                "insecure/sa:0/sa:1/bl:0/bg:ff0000/bg:/rot:90/rot:0/plain/a.jpg",
                Transform {
                    fit: Fit::FitIn,
                    ..Transform::default()
                },
            ),
        ] {
            assert_eq!(target(path).map(|t| t.transform), Ok(expected), "{path}");
        }
    }

    #[test]
    fn from_transform_inverts_every_rotation_flip_and_alignment() {
        let anchors = [HAlign::Left, HAlign::Center, HAlign::Right]
            .into_iter()
            .flat_map(|h| [VAlign::Top, VAlign::Middle, VAlign::Bottom].map(|v| (h, v)));
        for (h_align, v_align) in anchors {
            for rotation in Rotation::ALL {
                for (flip_h, flip_v, pad, fit) in [
                    (false, false, false, Fit::Fill),
                    (true, false, true, Fit::Fill),
                    (false, true, true, Fit::FitIn),
                    (true, true, false, Fit::FitIn),
                    (true, false, true, Fit::Stretch),
                ] {
                    let t = Transform {
                        width: 300,
                        height: 200,
                        fit,
                        flip_h,
                        flip_v,
                        h_align,
                        v_align,
                        rotation,
                        pad,
                        ..Transform::default()
                    };
                    let p = ImgproxyPath::from_transform(&t, "a.jpg").unwrap();
                    assert_eq!(p.to_target().map(|t| t.transform), Ok(t), "{}", p.to_path());
                }
            }
        }
    }

    #[test]
    fn crops_are_sized_regions_placed_by_gravity() {
        use crate::transform::{Crop as Region, Fraction, Span};
        let region = |w, h, ha, va| {
            Some(Region {
                width: w,
                height: h,
                at: CropAt::Anchor(ha, va),
            })
        };
        let (px, half) = (Span::Pixels, Span::Fraction(Fraction(5000)));
        for (path, crop) in [
            (
                "insecure/c:100:50/plain/a.jpg",
                region(px(100), px(50), HAlign::Center, VAlign::Middle),
            ),
            // Without its own gravity, the crop takes `g`'s.
            (
                "insecure/g:nowe/c:0.5:0/plain/a.jpg",
                region(half, Span::FULL, HAlign::Left, VAlign::Top),
            ),
            (
                "insecure/crop:100:50:soea/g:no/plain/a.jpg",
                region(px(100), px(50), HAlign::Right, VAlign::Bottom),
            ),
            // imgproxy crops the rotated image: its top-left is the source's bottom-left.
            (
                "insecure/rot:90/c:100:50:nowe/plain/a.jpg",
                region(px(50), px(100), HAlign::Left, VAlign::Bottom),
            ),
            (
                "insecure/fl:1/c:100:50:we/plain/a.jpg",
                region(px(100), px(50), HAlign::Right, VAlign::Middle),
            ),
            ("insecure/c:0:0/plain/a.jpg", None),
        ] {
            assert_eq!(target(path).map(|t| t.transform.crop), Ok(crop), "{path}");
        }
        for bad in [
            "insecure/c:1.5:10/plain/a.jpg",
            "insecure/c:-1:10/plain/a.jpg",
            "insecure/c:100:100:up/plain/a.jpg",
            "insecure/c:70000:1/plain/a.jpg",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}: {:?}",
                target(bad)
            );
        }
        for rotation in Rotation::ALL {
            for (flip_h, flip_v) in [(false, false), (true, false), (false, true)] {
                for (h, v) in [(HAlign::Left, VAlign::Top), (HAlign::Right, VAlign::Middle)] {
                    let t = Transform {
                        width: 30,
                        height: 20,
                        rotation,
                        flip_h,
                        flip_v,
                        crop: region(px(100), half, h, v),
                        ..Transform::default()
                    };
                    let p = ImgproxyPath::from_transform(&t, "a.jpg").unwrap();
                    assert_eq!(p.to_target().map(|t| t.transform), Ok(t), "{}", p.to_path());
                }
            }
        }
        let offset = Transform {
            crop: Some(Region {
                width: px(10),
                height: px(10),
                at: CropAt::Offset(px(1), px(2)),
            }),
            ..Transform::default()
        };
        assert_eq!(
            ImgproxyPath::from_transform(&offset, "a.jpg"),
            None,
            "imgproxy places crops by gravity"
        );
    }

    /// `wm` rows: canonical path ⇄ the watermark it asks for (imgproxy's default image).
    #[test]
    fn watermarks_are_the_default_image_placed_by_gravity() {
        use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};
        let px = Offset::Pixels;
        let w = |x, y, opacity, scale: Option<u16>| Watermark {
            image: WatermarkImage::Default,
            x,
            y,
            opacity: Fraction(opacity),
            width: scale.map(|s| Span::Fraction(Fraction(s))),
            height: scale.map(|s| Span::Fraction(Fraction(s))),
        };
        let centre = Axis::Center(Offset::ZERO);
        for (path, want) in [
            ("insecure/wm:1/plain/a.jpg", w(centre, centre, 10_000, None)),
            (
                "insecure/wm:0.5:soea:10:20/plain/a.jpg",
                w(Axis::End(px(10)), Axis::End(px(20)), 5000, None),
            ),
            (
                "insecure/wm:0.5:no:0:5/plain/a.jpg",
                w(centre, Axis::Start(px(5)), 5000, None),
            ),
            (
                "insecure/wm:0.25:we:-3/plain/a.jpg",
                w(Axis::Start(px(-3)), centre, 2500, None),
            ),
            (
                "insecure/wm:1:ce:0:0:0.25/plain/a.jpg",
                w(centre, centre, 10_000, Some(2500)),
            ),
            (
                "insecure/wm:0.3:re:8:4/plain/a.jpg",
                w(Axis::Repeat(8), Axis::Repeat(4), 3000, None),
            ),
            (
                "insecure/wm:1:re/plain/a.jpg",
                w(Axis::Repeat(0), Axis::Repeat(0), 10_000, None),
            ),
        ] {
            let t = target(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert_eq!(t.watermark.as_ref(), Some(&want), "{path}");
            let back = ImgproxyPath::from_transform(&t.transform, &t.image)
                .and_then(|p| p.with_watermark(&want))
                .unwrap();
            let wm = path.split('/').nth(1).unwrap_or_default();
            assert!(
                back.to_path().contains(&format!("/{wm}/")),
                "{path}: {}",
                back.to_path()
            );
            assert_eq!(target(&back.to_path()).unwrap(), t, "{path}");
        }
        assert_eq!(
            target("insecure/wm:0:soea/plain/a.jpg").unwrap().watermark,
            None,
            "wm:0 is off"
        );
        assert_eq!(
            target("insecure/wm:1:nowe/wm:0/plain/a.jpg")
                .unwrap()
                .watermark,
            None,
            "the later option wins"
        );
        for bad in [
            "insecure/wm:1.5/plain/a.jpg",
            "insecure/wm:x/plain/a.jpg",
            "insecure/wm:1:up/plain/a.jpg",
            "insecure/wm:1:re:-1:0/plain/a.jpg",
            "insecure/wm:1:ce:99999/plain/a.jpg",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}"
            );
        }
        // `wmu` names the image: a key resolved like the source's.
        let logo = WatermarkImage::Path("wm/logo.png".into());
        let t = target("insecure/wm:0.5:soea/wmu:d20vbG9nby5wbmc/plain/a.jpg").unwrap();
        let w = t.watermark.clone().unwrap();
        assert_eq!((&w.image, w.opacity), (&logo, Fraction(5000)));
        let back = ImgproxyPath::from_transform(&t.transform, &t.image)
            .and_then(|p| p.with_watermark(&w))
            .unwrap();
        assert!(
            back.to_path()
                .ends_with("/wm:0.5:soea/wmu:d20vbG9nby5wbmc/plain/a.jpg")
        );
        let in_bucket = "insecure/wm:1/wmu:czM6Ly9iL3dtL2xvZ28ucG5n/plain/s3://b/a.jpg";
        assert_eq!(target(in_bucket).unwrap().watermark.unwrap().image, logo);
        assert_eq!(
            target("insecure/wmu:d20vbG9nby5wbmc/plain/a.jpg")
                .unwrap()
                .watermark,
            None,
            "wmu alone asks for nothing, as in imgproxy"
        );
        assert!(matches!(
            target("insecure/wm:1/wmu:!!/plain/a.jpg"),
            Err(GrammarError::Invalid(_))
        ));
    }

    #[test]
    fn the_focus_point_is_turned_back_to_the_source() {
        use crate::transform::Fraction;
        let point = |x, y| Some(Focus::point(Fraction(x), Fraction(y)));
        for (path, focus) in [
            (
                "insecure/rs:fill:10:10/g:fp:0.25:0.75/plain/a.jpg",
                point(2500, 7500),
            ),
            // Flipped left to right: the mirror image's x = 0.25 is the source's 0.75.
            (
                "insecure/fl:1/g:fp:0.25:0.75/plain/a.jpg",
                point(7500, 7500),
            ),
            // Rotated 90° clockwise: the rotated image's top-right is the source's top-left.
            ("insecure/rot:90/g:fp:1:0/plain/a.jpg", point(0, 0)),
            ("insecure/g:fp:0.5:0.5/g:no/plain/a.jpg", None),
        ] {
            assert_eq!(target(path).map(|t| t.transform.focus), Ok(focus), "{path}");
        }
        for bad in [
            "insecure/g:fp:1.5:0/plain/a.jpg",
            "insecure/g:fp:0.5/plain/a.jpg",
            "insecure/g:fp:x:0/plain/a.jpg",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}"
            );
        }
        for rotation in Rotation::ALL {
            for (flip_h, flip_v) in [(false, false), (true, false), (true, true)] {
                let t = Transform {
                    width: 30,
                    height: 20,
                    rotation,
                    flip_h,
                    flip_v,
                    focus: point(1234, 9000),
                    ..Transform::default()
                };
                let p = ImgproxyPath::from_transform(&t, "a.jpg").unwrap();
                assert_eq!(p.to_target().map(|t| t.transform), Ok(t), "{}", p.to_path());
            }
        }
    }

    #[test]
    fn s3_sources_may_name_an_object_version() {
        let version = |path: &str| {
            let t = target(path).unwrap();
            (t.handle.unwrap(), t.image, t.version)
        };
        let v123 = (
            "b".to_owned(),
            "dir/a.jpg".to_owned(),
            Some("v123".to_owned()),
        );
        for path in [
            "insecure/rs:fit:10:10/plain/s3://b/dir/a.jpg%3Fv123",
            "insecure/plain/s3://b/dir/a.jpg%3FversionId=v123@webp",
            // base64url of `s3://b/dir/a.jpg?v123`
            "insecure/czM6Ly9iL2Rpci9hLmpwZz92MTIz.png",
        ] {
            assert_eq!(version(path), v123, "{path}");
        }
        assert_eq!(version("insecure/plain/s3://b/a.jpg").2, None);
        assert_eq!(
            version("insecure/plain/s3://b/a.jpg%3F").2,
            None,
            "empty: current"
        );
        // Only s3:// sources have versions: elsewhere `?` is part of the key.
        assert_eq!(
            target("insecure/plain/local:///a.jpg%3Fv1").unwrap().image,
            "/a.jpg?v1"
        );
    }

    #[test]
    fn sources() {
        assert_eq!(
            target("insecure/plain/local:///a/b.jpg").unwrap().image,
            "/a/b.jpg"
        );
        for (path, what) in [
            ("insecure/plain/http://example.com/a.jpg", "http:// sources"),
            ("insecure/plain/gs://b/a.jpg", "gs:// sources"),
            ("insecure/enc/AbCd", "encrypted source URLs"),
        ] {
            assert_eq!(
                target(path),
                Err(GrammarError::Unsupported(what.into())),
                "{path}"
            );
        }
        for bad in [
            "insecure/plain/s3://b",
            "insecure/plain/s3:///a.jpg",
            "insecure/plain/s3://a%0Ab/a.jpg",
            "insecure/plain/a%0Ab://x/a.jpg",
            "insecure/plain/s3://b/a.jpg%3Fv%201",
            "insecure/plain/s3://b/a.jpg%3Fv%0A1",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn resizing_type_auto_fills_or_fits_by_orientation_where_both_sides_are_given() {
        let fit = |path: &str| {
            ImgproxyPath::parse(path)
                .unwrap()
                .to_target()
                .unwrap()
                .transform
                .fit
        };
        assert_eq!(fit("insecure/rs:auto:300:200/plain/a.jpg"), Fit::Auto);
        assert_eq!(fit("insecure/rt:auto/s:300:300/plain/a.jpg"), Fit::Auto);
        // One side: fill and fit are the same resize.
        assert_eq!(fit("insecure/rt:auto/w:300/plain/a.jpg"), Fit::FitIn);
        let t = ImgproxyPath::parse("insecure/rs:auto:300:200:1/plain/a.jpg")
            .unwrap()
            .to_target()
            .unwrap()
            .transform;
        let back = ImgproxyPath::from_transform(&t, "a.jpg").unwrap();
        assert_eq!(back.to_target().unwrap().transform, t);
        // Gravity offsets where auto may crop are 501, as for fill.
        assert!(matches!(
            ImgproxyPath::parse("insecure/rs:auto:300:200/g:ce:10:20/plain/a.jpg")
                .unwrap()
                .to_target(),
            Err(GrammarError::Unsupported(_))
        ));
    }

    const PAD_DPR_MSG: &str = "padding (pd) with a dpr other than 1 without el:1";
    const AUTO_DPR_MSG: &str =
        "dpr with resizing type auto without enlarge (fill, fill-down or el:1 are exact)";

    #[test]
    fn unsupported_options_are_named_not_ignored() {
        for (path, what) in [
            (
                "insecure/rs:fill:10:10/g:no/ex:1/plain/a.jpg",
                "extend gravity other than the crop gravity",
            ),
            (
                "insecure/ex:1:fp:0.5:0.5/plain/a.jpg",
                "focus point gravity (g:fp)",
            ),
            ("insecure/ex:1:no:10/plain/a.jpg", "gravity offsets"),
            ("insecure/sa:0.5/plain/a.jpg", "saturation"),
            ("insecure/mc:1/plain/a.jpg", "monochrome"),
            (
                "insecure/g:fp:0.5:0.5/c:10:10/plain/a.jpg",
                "focus point gravity with a crop",
            ),
            (
                "insecure/rs:fill:10:10/g:no:10:0/plain/a.jpg",
                "gravity offsets",
            ),
            // imgproxy lowers the dpr, and with it the padding's factor, by the source's size.
            (
                "insecure/rs:fit:300:200/dpr:2/pd:10/plain/a.jpg",
                PAD_DPR_MSG,
            ),
            (
                "insecure/rs:fill:300:200/dpr:0.5/pd:10/plain/a.jpg",
                PAD_DPR_MSG,
            ),
            (
                "insecure/rs:fit:300:200/ex:1/dpr:2/pd:10/plain/a.jpg",
                PAD_DPR_MSG,
            ),
            ("insecure/rs:auto:300:200/dpr:2/plain/a.jpg", AUTO_DPR_MSG),
            ("insecure/rs:auto:300:200/dpr:0.5/plain/a.jpg", AUTO_DPR_MSG),
            ("insecure/pix:5/plain/a.jpg", "pixelate"),
            ("insecure/sm:0/plain/a.jpg", "strip_metadata:false"),
            ("insecure/ar:false/plain/a.jpg", "auto_rotate:false"),
            ("insecure/c:100:100:sm/plain/a.jpg", "smart gravity (g:sm)"),
            ("insecure/c:100:100:no:5/plain/a.jpg", "gravity offsets"),
            ("insecure/pr:thumb/plain/a.jpg", "preset"),
            ("insecure/msr:10/plain/a.jpg", "max_src_resolution"),
            (
                "insecure/g:obj:face:cat:dog:car/plain/a.jpg",
                "object gravity (g:obj)",
            ),
            (
                "insecure/g:objw:all:2:face:3/plain/a.jpg",
                "object gravity (g:obj)",
            ),
            ("insecure/webpo:lossy:1:photo/plain/a.jpg", "webp_options"),
            ("insecure/avifo:auto:1/plain/a.jpg", "avif_options"),
            (
                "insecure/vtt:1:2:2:10:10:1:1:1:0.5:0.5/plain/a.mp4",
                "video_thumbnail_tile",
            ),
            (
                "insecure/vta:1:100:5:10:10:1:1:1:0.5:0.5/plain/a.mp4",
                "video_thumbnail_animation",
            ),
            (
                "insecure/wm:1/wmu:aHR0cHM6Ly94LmV4YW1wbGUvbC5wbmc/plain/a.jpg",
                "watermark_url: https:// sources",
            ),
            (
                "insecure/wm:1/wmu:czM6Ly9vdGhlci1idWNrZXQvbC5wbmc/plain/a.jpg",
                "watermark_url: a bucket other than the source's",
            ),
            (
                "insecure/wm:0.5:ce:1.5/plain/a.jpg",
                "watermark fractional offsets",
            ),
            (
                "insecure/wm:0.5:ce:0:0:2/plain/a.jpg",
                "watermark scale over 1",
            ),
            ("insecure/plain/a.jpg@jxl", "extension jxl"),
            (
                "insecure/dpr:0.5/plain/a.jpg",
                "dpr without a width or height",
            ),
            (
                "insecure/dpr:2/el:1/plain/a.jpg",
                "dpr without a width or height",
            ),
            (
                "insecure/z:0.5/plain/a.jpg",
                "zoom without a width or height",
            ),
            (
                "insecure/rs:fit:300:200/z:2:1/plain/a.jpg",
                "zoom with different factors per axis",
            ),
            (
                "insecure/rs:fill:10:10/g:so:5:5/plain/a.jpg",
                "gravity offsets",
            ),
            ("insecure/g:no:0:3/c:10:10/plain/a.jpg", "gravity offsets"),
            (
                "insecure/skp:jpg:png/plain/a.jpg",
                "skip_processing of jpg, png sources",
            ),
            (
                "insecure/skp:JPG/plain/a.jpg@jpeg",
                "skip_processing of jpg sources",
            ),
            (
                "insecure/rs:fit:1:1/-/rs:fit:2:2/plain/a.jpg",
                "chained pipelines that process the image in more than one pipeline",
            ),
            (
                "insecure/rot:90/-/q:80/-/bl:2/plain/a.jpg",
                "chained pipelines that process the image in more than one pipeline",
            ),
        ] {
            assert_eq!(
                target(path),
                Err(GrammarError::Unsupported(what.into())),
                "{path}"
            );
        }
    }

    #[test]
    fn malformed_and_unknown_options_are_invalid_and_named() {
        for (path, named) in [
            ("insecure/nonsense:1/plain/a.jpg", "nonsense"),
            ("insecure/rs:stretch:1:1/plain/a.jpg", "resize"),
            ("insecure/w:abc/plain/a.jpg", "width"),
            ("insecure/w:99999/plain/a.jpg", "width"),
            ("insecure/q:101/plain/a.jpg", "quality"),
            ("insecure/el:maybe/plain/a.jpg", "enlarge"),
            ("insecure/g:up/plain/a.jpg", "gravity"),
            ("insecure/g:no:1:2:3/plain/a.jpg", "gravity"),
            ("insecure/dpr:0/plain/a.jpg", "dpr"),
            ("insecure/z:0/plain/a.jpg", "zoom"),
            ("insecure/z:1:0/plain/a.jpg", "zoom"),
            ("insecure/z:-1/plain/a.jpg", "zoom"),
            ("insecure/rot:45/plain/a.jpg", "rotate"),
            ("insecure/rot:x/plain/a.jpg", "rotate"),
            ("insecure/bl:100.5/plain/a.jpg", "blur"),
            ("insecure/sh:-1/plain/a.jpg", "sharpen"),
            ("insecure/bg:ff/plain/a.jpg", "background"),
            ("insecure/bg:ff000080/plain/a.jpg", "background"),
            ("insecure/bg:1:2/plain/a.jpg", "background"),
            ("insecure/bg:256:0:0/plain/a.jpg", "background"),
            ("insecure/bga:1.5/plain/a.jpg", "background_alpha"),
            ("insecure/ex:1:sm/plain/a.jpg", "extend"),
            ("insecure/ex:1:up/plain/a.jpg", "extend"),
            ("insecure/skp:j.pg/plain/a.jpg", "skip_processing"),
            ("insecure/ph:maybe/plain/a.jpg", "preserve_hdr"),
            ("insecure/sa:x/plain/a.jpg", "saturation"),
            ("insecure/exp:soon/plain/a.jpg", "expires"),
            ("insecure/w/plain/a.jpg", ""),
            ("insecure/w:/plain/a.jpg", "width"),
            ("insecure/rs:fit:1:1:0:0:0/plain/a.jpg", "rs"),
            ("insecure/plain/a.jpg@bmpx", "extension"),
            ("insecure/Rs:fit/plain/a.jpg", "Rs"),
            ("insecure/rs:fit:1:1/-/nonsense:1/plain/a.jpg", "nonsense"),
        ] {
            match target(path) {
                Err(GrammarError::Invalid(m)) => assert!(m.contains(named), "{path}: {m}"),
                other => panic!("{path}: {other:?}"),
            }
        }
        for bad in [
            "",
            "insecure",
            "insecure/",
            "insecure/rs:fit:1:1",
            "insecure/rs:fit:1:1/",
            "insecure/plain/",
            "insecure/plain/@png",
            "bad*sig/plain/a.jpg",
            "insecure/plain/a%zz.jpg",
            "insecure/!!!.png",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad:?} gave {:?}",
                target(bad)
            );
        }
    }

    #[test]
    fn expiry_and_bounds() {
        assert_eq!(
            target("insecure/exp:1700000000/plain/a.jpg")
                .unwrap()
                .expires,
            Some(Expiry::UnixSeconds(1_700_000_000))
        );
        let many = vec!["cb:1"; MAX_OPTIONS + 1].join("/");
        assert!(matches!(
            target(&format!("insecure/{many}/plain/a.jpg")),
            Err(GrammarError::Invalid(_))
        ));
        let args = vec!["0"; MAX_ARGS + 1].join(":");
        assert!(matches!(
            target(&format!("insecure/pd:{args}/plain/a.jpg")),
            Err(GrammarError::Invalid(_))
        ));
    }

    #[test]
    fn every_option_name_is_unique_and_lowercase() {
        let mut seen = std::collections::HashSet::new();
        for spec in OPTIONS {
            for name in spec.names {
                assert!(seen.insert(*name), "{name} twice");
                assert!(parse_option(&format!("{name}:1")).is_ok(), "{name}");
            }
        }
    }

    #[test]
    fn trim_smart_gravity_and_keeping_the_profile_map_onto_the_transform_and_back() {
        let trim = |threshold, color, equal_hor, equal_ver| {
            Some(Trim {
                threshold,
                color,
                equal_hor,
                equal_ver,
            })
        };
        let red = TrimColor::Color(Color::rgb(255, 0, 0));
        // (URL, transform, the URL from_transform writes for it)
        for (path, expected, canonical) in [
            (
                "insecure/t:10/plain/a.jpg",
                Transform {
                    trim: trim(10, TrimColor::TopLeft, false, false),
                    ..fit_in()
                },
                "insecure/rs:fit:0:0/t:10/plain/a.jpg",
            ),
            (
                "insecure/trim:25.9:FF0000:1/plain/a.jpg",
                Transform {
                    trim: trim(25, red, true, false),
                    ..fit_in()
                },
                "insecure/rs:fit:0:0/t:25:ff0000:1:0/plain/a.jpg",
            ),
            (
                "insecure/t:0::0:true/plain/a.jpg",
                Transform {
                    trim: trim(0, TrimColor::TopLeft, false, true),
                    ..fit_in()
                },
                "insecure/rs:fit:0:0/t:0::0:1/plain/a.jpg",
            ),
            (
                "insecure/rs:fill:300:200/g:sm/rot:90/plain/a.jpg",
                Transform {
                    width: 200,
                    height: 300,
                    fit: Fit::FillClamped,
                    rotation: Rotation::Cw90,
                    smart: true,
                    ..Transform::default()
                },
                "insecure/rs:fill:300:200/g:sm/rot:90/plain/a.jpg",
            ),
            (
                "insecure/g:nowe/g:sm/plain/a.jpg",
                Transform {
                    smart: true,
                    ..fit_in()
                },
                "insecure/rs:fit:0:0/g:sm/plain/a.jpg",
            ),
            (
                "insecure/g:sm/g:so/plain/a.jpg",
                Transform {
                    v_align: VAlign::Bottom,
                    ..fit_in()
                },
                "insecure/rs:fit:0:0/g:so/plain/a.jpg",
            ),
            (
                "insecure/scp:0/plain/a.jpg@png",
                Transform {
                    keep_icc: true,
                    format: OutputFormat::Fixed(Format::Png),
                    ..fit_in()
                },
                "insecure/rs:fit:0:0/scp:0/plain/a.jpg@png",
            ),
            (
                "insecure/strip_color_profile:false/scp:1/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
        ] {
            assert_eq!(target(path).map(|t| t.transform), Ok(expected), "{path}");
            let back = ImgproxyPath::from_transform(&expected, "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{path}");
            assert_eq!(back.to_target().map(|t| t.transform), Ok(expected));
        }
        for bad in [
            "insecure/t:256/plain/a.jpg",
            "insecure/t:-1/plain/a.jpg",
            "insecure/t:/plain/a.jpg",
            "insecure/t:10:red/plain/a.jpg",
            "insecure/t:10:f00/plain/a.jpg",
            "insecure/t:10::maybe/plain/a.jpg",
            "insecure/g:sm:1:1/plain/a.jpg",
            "insecure/scp:perhaps/plain/a.jpg",
        ] {
            assert!(
                matches!(target(bad), Err(GrammarError::Invalid(_))),
                "{bad}: {:?}",
                target(bad)
            );
        }
        assert_eq!(
            target("insecure/c:100:100/g:sm/plain/a.jpg"),
            Err(GrammarError::Unsupported(
                "a crop placed by smart gravity (c: with g:sm)".into()
            ))
        );
        // What imgproxy cannot say: the bottom-right corner's colour; smart with a focus.
        for t in [
            Transform {
                trim: trim(5, TrimColor::BottomRight, false, false),
                ..Transform::default()
            },
            Transform {
                smart: true,
                focus: Some(Focus::point(Fraction(0), Fraction(0))),
                ..Transform::default()
            },
        ] {
            assert_eq!(ImgproxyPath::from_transform(&t, "a.jpg"), None, "{t:?}");
        }
    }

    /// Options imgproxy's clients write that ask for nothing pixmesh would do differently:
    /// (URL, the transform, the URL `from_transform` writes for it).
    #[test]
    fn options_that_change_nothing_are_accepted() {
        let fit = |width, height| Transform {
            width,
            height,
            ..fit_in()
        };
        for (path, expected, canonical) in [
            // Without a size, dpr scales the source, never enlarged unless asked.
            (
                "insecure/dpr:2/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
            (
                "insecure/dpr:1.5/el:0/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
            // A zoom without a size likewise, with the dpr: 0.5 × 2 scales nothing.
            (
                "insecure/z:2/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
            (
                "insecure/z:0.5/dpr:2/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
            // Offsets of a gravity that places nothing: a fit, an unused extension gravity.
            (
                "insecure/rs:fit:300:200/g:no:10:20/plain/a.jpg",
                Transform {
                    v_align: VAlign::Top,
                    ..fit(300, 200)
                },
                "insecure/rs:fit:300:200/g:no/plain/a.jpg",
            ),
            (
                "insecure/rs:fill:300:0/g:ce:0.5:-10/ex:0:so:5:5/plain/a.jpg",
                Transform {
                    fit: Fit::FillClamped,
                    ..fit(300, 0)
                },
                "insecure/rs:fill:300:0/plain/a.jpg",
            ),
            // Skipping the processing of formats the output is not in: imgproxy processes too.
            (
                "insecure/skp:jpg:png/rs:fit:300:200/plain/a.jpg@webp",
                Transform {
                    format: OutputFormat::Fixed(Format::Webp),
                    ..fit(300, 200)
                },
                "insecure/rs:fit:300:200/plain/a.jpg@webp",
            ),
            (
                "insecure/skip_processing:svg/f:png/plain/a.svg",
                Transform {
                    format: OutputFormat::Fixed(Format::Png),
                    ..fit_in()
                },
                "insecure/rs:fit:0:0/plain/a.jpg@png",
            ),
            (
                "insecure/skp:/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
            // `auto` with a side derived from the other: fill and fit are the same resize.
            (
                "insecure/rt:auto/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
            (
                "insecure/rs:auto:300:0/plain/a.jpg",
                fit(300, 0),
                "insecure/rs:fit:300:0/plain/a.jpg",
            ),
            (
                "insecure/rs:auto:300:200/rt:fit/plain/a.jpg",
                fit(300, 200),
                "insecure/rs:fit:300:200/plain/a.jpg",
            ),
            // `fill-down` is the transform's fill, which never enlarges past the box's ratio.
            (
                "insecure/rs:fill-down:300:200/g:no/plain/a.jpg",
                Transform {
                    fit: Fit::Fill,
                    v_align: VAlign::Top,
                    ..fit(300, 200)
                },
                "insecure/rs:fill-down:300:200/g:no/plain/a.jpg",
            ),
            // Enlarged, `fill` is the same fill as `fill-down`.
            (
                "insecure/rt:fill/s:300:200:1/plain/a.jpg",
                Transform {
                    fit: Fit::Fill,
                    upscale: true,
                    ..fit(300, 200)
                },
                "insecure/rs:fill:300:200:1/plain/a.jpg",
            ),
            (
                "insecure/rt:fill-down/s:300:200:1/plain/a.jpg",
                Transform {
                    fit: Fit::Fill,
                    upscale: true,
                    ..fit(300, 200)
                },
                "insecure/rs:fill:300:200:1/plain/a.jpg",
            ),
            // Outputs are 8-bit: an HDR source is converted, as imgproxy does for outputs
            // that cannot carry HDR.
            (
                "insecure/ph:1/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
            (
                "insecure/preserve_hdr:false/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
        ] {
            assert_eq!(target(path).map(|t| t.transform), Ok(expected), "{path}");
            let back = ImgproxyPath::from_transform(&expected, "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{path}");
            assert_eq!(
                back.to_target().map(|t| t.transform),
                Ok(expected),
                "{path}"
            );
        }
    }

    /// Chained pipelines where only one processes: (URL, transform, the URL written back).
    #[test]
    fn chains_where_one_pipeline_processes_collapse() {
        for (path, expected, canonical) in [
            (
                "insecure/rs:fill:300:200/g:no/-/q:80/f:webp/plain/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    fit: Fit::FillClamped,
                    v_align: VAlign::Top,
                    quality: Some(80),
                    format: OutputFormat::Fixed(Format::Webp),
                    ..Transform::default()
                },
                "insecure/rs:fill:300:200/g:no/q:80/plain/a.jpg@webp",
            ),
            (
                "insecure/q:90/scp:0/-/rs:fit:300:0/bl:1/-/mb:1000/plain/a.jpg",
                Transform {
                    width: 300,
                    fit: Fit::FitIn,
                    quality: Some(90),
                    keep_icc: true,
                    blur: Some(Hundredths::ONE),
                    max_bytes: Some(1000),
                    ..Transform::default()
                },
                "insecure/rs:fit:300:0/scp:0/q:90/mb:1000/bl:1/plain/a.jpg",
            ),
            (
                "insecure/-/-/plain/a.jpg",
                fit_in(),
                "insecure/rs:fit:0:0/plain/a.jpg",
            ),
        ] {
            assert_eq!(target(path).map(|t| t.transform), Ok(expected), "{path}");
            let back = ImgproxyPath::from_transform(&expected, "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{path}");
            assert_eq!(
                back.to_target().map(|t| t.transform),
                Ok(expected),
                "{path}"
            );
        }
    }

    fn fit_in() -> Transform {
        Transform {
            fit: Fit::FitIn,
            ..Transform::default()
        }
    }

    #[test]
    fn fill_keeps_a_small_source_at_its_scale_and_fill_down_crops_it_to_the_ratio() {
        let fill = |fit| Transform {
            width: 300,
            height: 200,
            fit,
            ..Transform::default()
        };
        for (path, expected, canonical) in [
            (
                "insecure/rs:fill:300:200/plain/a.jpg",
                fill(Fit::FillClamped),
                "insecure/rs:fill:300:200/plain/a.jpg",
            ),
            (
                "insecure/rt:fill/w:300/h:200/el:0/plain/a.jpg",
                fill(Fit::FillClamped),
                "insecure/rs:fill:300:200/plain/a.jpg",
            ),
            (
                "insecure/rs:fill-down:300:200/plain/a.jpg",
                fill(Fit::Fill),
                "insecure/rs:fill-down:300:200/plain/a.jpg",
            ),
            (
                "insecure/rs:fill:300:200:1/plain/a.jpg",
                Transform {
                    upscale: true,
                    ..fill(Fit::Fill)
                },
                "insecure/rs:fill:300:200:1/plain/a.jpg",
            ),
            (
                "insecure/rs:fill-down:300:200:1/plain/a.jpg",
                Transform {
                    upscale: true,
                    ..fill(Fit::Fill)
                },
                "insecure/rs:fill:300:200:1/plain/a.jpg",
            ),
            // Without enlarging, fill-down is exact with a dpr (the box scales with it).
            (
                "insecure/rs:fill-down:150:100/dpr:2/plain/a.jpg",
                fill(Fit::Fill),
                "insecure/rs:fill-down:300:200/plain/a.jpg",
            ),
            (
                "insecure/rs:fill:150:100/dpr:2/el:1/plain/a.jpg",
                Transform {
                    upscale: true,
                    ..fill(Fit::Fill)
                },
                "insecure/rs:fill:300:200:1/plain/a.jpg",
            ),
            // `fill` with a dpr: the fill of the scaled box, cut to its ratio short of it.
            (
                "insecure/rs:fill:150:100/dpr:2/plain/a.jpg",
                fill(Fit::Fill),
                "insecure/rs:fill-down:300:200/plain/a.jpg",
            ),
            // A zoom multiplies the box, and fills as without it (one factor or two equal).
            (
                "insecure/rs:fill:150:100/z:2/plain/a.jpg",
                fill(Fit::FillClamped),
                "insecure/rs:fill:300:200/plain/a.jpg",
            ),
            (
                "insecure/rs:fill-down:100:50/zoom:1.5:1.5/dpr:2/plain/a.jpg",
                Transform {
                    height: 150,
                    ..fill(Fit::Fill)
                },
                "insecure/rs:fill-down:300:150/plain/a.jpg",
            ),
        ] {
            assert_eq!(target(path).map(|t| t.transform), Ok(expected), "{path}");
            let back = ImgproxyPath::from_transform(&expected, "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{path}");
            assert_eq!(back.to_target().map(|t| t.transform), Ok(expected));
        }
        // A clamped fill that enlarges is written as the fill it is.
        let up = Transform {
            upscale: true,
            ..fill(Fit::FillClamped)
        };
        let back = ImgproxyPath::from_transform(&up, "a.jpg").unwrap();
        assert_eq!(back.to_path(), "insecure/rs:fill:300:200:1/plain/a.jpg");
    }

    #[test]
    fn padding_surrounds_the_image_or_the_extended_box() {
        let padding = |left, top, right, bottom| {
            Some(Padding {
                left,
                top,
                right,
                bottom,
            })
        };
        // Around the image, whatever its size (no `ex`).
        let around = |width, height, fit, p| Transform {
            width,
            height,
            fit,
            padding: p,
            ..Transform::default()
        };
        // Around the box `ex:1` extends to.
        let padded = |width, height, fit, p| Transform {
            pad: true,
            ..around(width, height, fit, p)
        };
        let up = |t: Transform| Transform { upscale: true, ..t };
        for (path, expected, canonical) in [
            // CSS shorthand: 1 to 4 values, top right bottom left.
            (
                "insecure/pd:10/plain/a.jpg",
                around(0, 0, Fit::FitIn, padding(10, 10, 10, 10)),
                "insecure/rs:fit:0:0/pd:10:10:10:10/plain/a.jpg",
            ),
            (
                "insecure/padding:10:20/plain/a.jpg",
                around(0, 0, Fit::FitIn, padding(20, 10, 20, 10)),
                "insecure/rs:fit:0:0/pd:10:20:10:20/plain/a.jpg",
            ),
            (
                "insecure/pd:1:2:3/plain/a.jpg",
                around(0, 0, Fit::FitIn, padding(2, 1, 2, 3)),
                "insecure/rs:fit:0:0/pd:1:2:3:2/plain/a.jpg",
            ),
            (
                "insecure/pd:1:2:3:4/plain/a.jpg",
                around(0, 0, Fit::FitIn, padding(4, 1, 2, 3)),
                "insecure/rs:fit:0:0/pd:1:2:3:4/plain/a.jpg",
            ),
            // An empty side copies as a missing one; a side no `pd` set is 0 and copies
            // nothing; a later `pd` changes only what it sets or copies.
            (
                "insecure/pd::5/plain/a.jpg",
                around(0, 0, Fit::FitIn, padding(5, 0, 5, 0)),
                "insecure/rs:fit:0:0/pd:0:5:0:5/plain/a.jpg",
            ),
            (
                "insecure/pd:1:2:3:4/pd::::7/plain/a.jpg",
                around(0, 0, Fit::FitIn, padding(7, 1, 1, 1)),
                "insecure/rs:fit:0:0/pd:1:1:1:7/plain/a.jpg",
            ),
            // Around an image that may be smaller than the box: a fit, a fill that keeps a
            // small source's scale, auto, one side.
            (
                "insecure/rs:fit:300:200/pd:10/plain/a.jpg",
                around(300, 200, Fit::FitIn, padding(10, 10, 10, 10)),
                "insecure/rs:fit:300:200/pd:10:10:10:10/plain/a.jpg",
            ),
            (
                "insecure/rs:fill:300:200/pd:0:10/plain/a.jpg",
                around(300, 200, Fit::FillClamped, padding(10, 0, 10, 0)),
                "insecure/rs:fill:300:200/pd:0:10:0:10/plain/a.jpg",
            ),
            (
                "insecure/rs:fill-down:300:200/g:we/pd:1:2:3:4/plain/a.jpg",
                Transform {
                    h_align: HAlign::Left,
                    ..around(300, 200, Fit::Fill, padding(4, 1, 2, 3))
                },
                "insecure/rs:fill-down:300:200/g:we/pd:1:2:3:4/plain/a.jpg",
            ),
            (
                "insecure/rs:auto:300:200/pd:10/plain/a.jpg",
                around(300, 200, Fit::Auto, padding(10, 10, 10, 10)),
                "insecure/rs:auto:300:200/pd:10:10:10:10/plain/a.jpg",
            ),
            (
                "insecure/w:300/pd:10/bg:ff0000/plain/a.jpg",
                Transform {
                    background: Some(Color::rgb(255, 0, 0)),
                    ..around(300, 0, Fit::FitIn, padding(10, 10, 10, 10))
                },
                "insecure/rs:fit:300:0/pd:10:10:10:10/bg:ff0000/plain/a.jpg",
            ),
            // Around the box `ex` extends to.
            (
                "insecure/rs:fit:300:200/ex:1/bg:ff0000/pd:10/plain/a.jpg",
                Transform {
                    background: Some(Color::rgb(255, 0, 0)),
                    ..padded(300, 200, Fit::FitIn, padding(10, 10, 10, 10))
                },
                "insecure/rs:fit:300:200/ex:1/pd:10:10:10:10/bg:ff0000/plain/a.jpg",
            ),
            (
                "insecure/rs:fill:300:200/g:so/ex:1:so/pd:5/plain/a.jpg",
                Transform {
                    v_align: VAlign::Bottom,
                    ..padded(300, 200, Fit::FillClamped, padding(5, 5, 5, 5))
                },
                "insecure/rs:fill:300:200/g:so/ex:1:so/pd:5:5:5:5/plain/a.jpg",
            ),
            // Enlarged, with a dpr: the dpr scales the padding (half to even).
            (
                "insecure/rs:fill:150:100:1/dpr:1.5/pd:3:5/plain/a.jpg",
                up(around(225, 150, Fit::Fill, padding(8, 4, 8, 4))),
                "insecure/rs:fill:225:150:1/pd:4:8:4:8/plain/a.jpg",
            ),
            (
                "insecure/rs:fit:150:100:1/dpr:2/ex:1/pd:5/plain/a.jpg",
                up(padded(300, 200, Fit::FitIn, padding(10, 10, 10, 10))),
                "insecure/rs:fit:300:200:1/ex:1/pd:10:10:10:10/plain/a.jpg",
            ),
            (
                "insecure/rs:force:300:200:1/pd:0:0:6/plain/a.jpg",
                up(around(300, 200, Fit::Stretch, padding(0, 0, 0, 6))),
                "insecure/rs:force:300:200:1/pd:0:0:6:0/plain/a.jpg",
            ),
            (
                "insecure/rs:fit:300:0:1/pd:6/plain/a.jpg",
                up(around(300, 0, Fit::FitIn, padding(6, 6, 6, 6))),
                "insecure/rs:fit:300:0:1/pd:6:6:6:6/plain/a.jpg",
            ),
            // imgproxy pads the rotated image; the transform pads before rotating.
            (
                "insecure/rot:90/pd:1:2:3:4/plain/a.jpg",
                Transform {
                    rotation: Rotation::Cw90,
                    ..around(0, 0, Fit::FitIn, padding(1, 2, 3, 4))
                },
                "insecure/rs:fit:0:0/pd:1:2:3:4/rot:90/plain/a.jpg",
            ),
            (
                "insecure/rs:fit:200:300/rot:270/ex:1/pd:1:2:3:4/plain/a.jpg",
                Transform {
                    rotation: Rotation::Cw270,
                    ..padded(300, 200, Fit::FitIn, padding(3, 4, 1, 2))
                },
                "insecure/rs:fit:200:300/ex:1/pd:1:2:3:4/rot:270/plain/a.jpg",
            ),
            // Without a size, a dpr of 1 or more changes nothing, the padding included.
            (
                "insecure/dpr:2/pd:3/plain/a.jpg",
                around(0, 0, Fit::FitIn, padding(3, 3, 3, 3)),
                "insecure/rs:fit:0:0/pd:3:3:3:3/plain/a.jpg",
            ),
            // All zero: no padding.
            (
                "insecure/rs:fit:300:200/pd:0/plain/a.jpg",
                Transform {
                    width: 300,
                    height: 200,
                    ..fit_in()
                },
                "insecure/rs:fit:300:200/plain/a.jpg",
            ),
        ] {
            assert_eq!(target(path).map(|t| t.transform), Ok(expected), "{path}");
            let back = ImgproxyPath::from_transform(&expected, "a.jpg").unwrap();
            assert_eq!(back.to_path(), canonical, "{path}");
            assert_eq!(back.to_target().map(|t| t.transform), Ok(expected));
        }
        for (path, named) in [
            ("insecure/pd:-1/plain/a.jpg", "padding"),
            ("insecure/pd:1.5/plain/a.jpg", "padding"),
            ("insecure/pd:16385/plain/a.jpg", "padding"),
            (
                "insecure/pd:1:2:3:4:5/plain/a.jpg",
                "pd: at most 4 arguments",
            ),
            (
                "insecure/rs:fill:300:200:1/dpr:2/pd:9000/plain/a.jpg",
                "padding",
            ),
        ] {
            let err = target(path).unwrap_err();
            assert!(
                matches!(&err, GrammarError::Invalid(m) if m.contains(named)),
                "{path}: {err:?}"
            );
        }
    }
}
