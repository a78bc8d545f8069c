//! The wire request (the proto the transcoder fills from the render query) into the canonical
//! [`RenderRequest`], refusing values the filter never sends.

use pixmesh_core::grammar::GrammarError;
use pixmesh_core::render::{RenderRequest, is_version_id};
use pixmesh_core::transform::{
    Color, CropSpecError, Effects, Fit, Format, HAlign, Hundredths, MAX_DIMENSION, MAX_PROPORTION,
    MAX_SHARPEN_AMOUNT, MAX_SIGMA, OutputFormat, Rotation, Sharpen, Transform, VAlign,
};
use pixmesh_core::watermark::{Axis, Offset, Watermark, WatermarkImage, parse_opacity, parse_size};
use pixmesh_proto::v1;

use crate::serving::status::RenderError;

/// Converts the wire request into the canonical model, rejecting values the filter never sends.
pub fn to_core(r: v1::RenderRequest) -> Result<RenderRequest, RenderError> {
    let bad = |m: String| RenderError::BadRequest(m);
    let watermark = watermark_from_wire(&r)?;
    if r.storage.is_empty() || r.key.is_empty() {
        return Err(bad("storage and key are required".into()));
    }
    if r.width > MAX_DIMENSION || r.height > MAX_DIMENSION {
        return Err(bad(format!("dimensions are limited to {MAX_DIMENSION}")));
    }
    let fit = match v1::Fit::try_from(r.fit) {
        Ok(v1::Fit::Unspecified | v1::Fit::Fill) => Fit::Fill,
        Ok(v1::Fit::FitIn) => Fit::FitIn,
        Ok(v1::Fit::Stretch) => Fit::Stretch,
        Ok(v1::Fit::Cover) => Fit::Cover,
        Ok(v1::Fit::Auto) => Fit::Auto,
        Ok(v1::Fit::FillClamped) => Fit::FillClamped,
        Ok(v1::Fit::AutoDown) => Fit::AutoDown,
        Err(_) => return Err(bad(format!("unknown fit {}", r.fit))),
    };
    let h_align = match v1::HAlign::try_from(r.h_align) {
        Ok(v1::HAlign::Unspecified | v1::HAlign::Center) => HAlign::Center,
        Ok(v1::HAlign::Left) => HAlign::Left,
        Ok(v1::HAlign::Right) => HAlign::Right,
        Err(_) => return Err(bad(format!("unknown h_align {}", r.h_align))),
    };
    let v_align = match v1::VAlign::try_from(r.v_align) {
        Ok(v1::VAlign::Unspecified | v1::VAlign::Middle) => VAlign::Middle,
        Ok(v1::VAlign::Top) => VAlign::Top,
        Ok(v1::VAlign::Bottom) => VAlign::Bottom,
        Err(_) => return Err(bad(format!("unknown v_align {}", r.v_align))),
    };
    let format = match v1::Format::try_from(r.format) {
        Ok(v1::Format::Unspecified) => OutputFormat::Source,
        Ok(v1::Format::Jpeg) => OutputFormat::Fixed(Format::Jpeg),
        Ok(v1::Format::Png) => OutputFormat::Fixed(Format::Png),
        Ok(v1::Format::Webp) => OutputFormat::Fixed(Format::Webp),
        Ok(v1::Format::Gif) => OutputFormat::Fixed(Format::Gif),
        Ok(v1::Format::Compatible) => OutputFormat::Compatible,
        Ok(v1::Format::Avif) => OutputFormat::Fixed(Format::Avif),
        Err(_) => return Err(bad(format!("unknown format {}", r.format))),
    };
    let quality = match r.quality {
        0 => None,
        q @ 1..=100 => Some(q as u8),
        q => return Err(bad(format!("quality {q} is not between 1 and 100"))),
    };
    let rotation = Rotation::from_degrees(i64::from(r.rotate))
        .filter(|rot| u32::from(rot.degrees()) == r.rotate)
        .ok_or_else(|| bad(format!("rotate {} is not 0, 90, 180 or 270", r.rotate)))?;
    let hundredths =
        |v: u32, max: Hundredths, what: &str| -> Result<Option<Hundredths>, RenderError> {
            match u16::try_from(v).ok().map(Hundredths) {
                _ if v == 0 => Ok(None),
                Some(h) if h <= max => Ok(Some(h)),
                _ => Err(bad(format!("{what} {v} is over {}", max.0))),
            }
        };
    let blur = hundredths(r.blur_sigma_x100, MAX_SIGMA, "blur_sigma_x100")?;
    let proportion = hundredths(r.proportion_x100, MAX_PROPORTION, "proportion_x100")?;
    let padding = match r.padding.as_str() {
        "" => None,
        p => Some(
            p.parse::<pixmesh_core::transform::Padding>()
                .ok()
                .filter(|p| *p != Default::default())
                .ok_or_else(|| {
                    bad(format!(
                        "padding {p:?} is not four sides of at most {MAX_DIMENSION} pixels, \
                         not all zero"
                    ))
                })?,
        ),
    };
    let sharpen = match (
        hundredths(r.sharpen_sigma_x100, MAX_SIGMA, "sharpen_sigma_x100")?,
        hundredths(
            r.sharpen_amount_x100,
            MAX_SHARPEN_AMOUNT,
            "sharpen_amount_x100",
        )?,
    ) {
        (Some(sigma), Some(amount)) => Some(Sharpen { sigma, amount }),
        (None, None) => None,
        _ => return Err(bad("sharpen needs both a sigma and an amount".into())),
    };
    let background = Color::from_rgba_u32(r.background_rgba).visible();
    let crop = match r.crop.as_str() {
        "" => None,
        c => Some(c.parse().map_err(|e: CropSpecError| bad(e.to_string()))?),
    };
    let focus = match r.focus.as_str() {
        "" => None,
        f => Some(f.parse().map_err(|e: CropSpecError| bad(e.to_string()))?),
    };
    let trim = match r.trim.as_str() {
        "" => None,
        t => Some(t.parse().map_err(|e: CropSpecError| bad(e.to_string()))?),
    };
    let effects = |text: &str| -> Result<Effects, RenderError> {
        text.parse().map_err(|e: GrammarError| bad(e.to_string()))
    };
    let (effects, final_effects) = (effects(&r.effects)?, effects(&r.final_effects)?);
    let progressive = match v1::Progressive::try_from(r.progressive) {
        Ok(v1::Progressive::Unspecified) => None,
        Ok(v1::Progressive::On) => Some(true),
        Ok(v1::Progressive::Off) => Some(false),
        Err(_) => return Err(bad(format!("unknown progressive {}", r.progressive))),
    };
    let version = match r.version_id {
        v if v.is_empty() => None,
        v if is_version_id(&v) => Some(v),
        _ => {
            return Err(bad(
                "version_id is not 1 to 1024 visible ASCII characters".into()
            ));
        }
    };
    let cache_key = match r.cache_key {
        k if k.is_empty() => None,
        k if pixmesh_core::cachekey::is_digest(&k) => Some(k),
        _ => return Err(bad("cache_key is not a digest".into())),
    };
    let result_path = match r.result_path {
        p if p.is_empty() => None,
        p if pixmesh_core::imagor_key::is_result_path(&p) => Some(p),
        _ => {
            return Err(bad(
                "result_path is not 1 to 1024 bytes of non-empty segments other than ., .. and -"
                    .into(),
            ));
        }
    };

    Ok(RenderRequest {
        storage: r.storage,
        key: r.key,
        version,
        cache_key,
        watermark,
        result_path,
        transform: Transform {
            width: r.width,
            height: r.height,
            fit,
            adaptive: r.adaptive,
            upscale: r.upscale,
            flip_h: r.flip_h,
            flip_v: r.flip_v,
            h_align,
            v_align,
            format,
            quality,
            rotation,
            grayscale: r.grayscale,
            blur,
            sharpen,
            pad: r.pad,
            background,
            crop,
            focus,
            progressive,
            max_bytes: (r.max_bytes > 0).then_some(r.max_bytes),
            trim,
            smart: r.smart_crop,
            keep_icc: r.keep_icc,
            proportion,
            padding,
            effects,
            final_effects,
        },
    })
}

/// The watermark of a wire request: none without `watermark_key` or `watermark_default`.
fn watermark_from_wire(r: &v1::RenderRequest) -> Result<Option<Watermark>, RenderError> {
    let bad = |m: String| RenderError::BadRequest(m);
    let image = match (r.watermark_default, r.watermark_key.is_empty()) {
        (false, true) => {
            let rest = [
                &r.watermark_storage,
                &r.watermark_x,
                &r.watermark_y,
                &r.watermark_opacity,
                &r.watermark_width,
                &r.watermark_height,
            ];
            if rest.iter().any(|f| !f.is_empty()) {
                return Err(bad("watermark fields without a watermark".into()));
            }
            return Ok(None);
        }
        (true, true) if r.watermark_storage.is_empty() => WatermarkImage::Default,
        (true, _) => {
            return Err(bad(
                "watermark_default with a watermark storage or key".into()
            ));
        }
        (false, false) => {
            let key = &r.watermark_key;
            if r.watermark_storage.is_empty()
                || pixmesh_core::keys::normalize(key).as_deref() != Ok(key.as_str())
            {
                return Err(bad(
                    "watermark_storage and a normalized watermark_key are required".into(),
                ));
            }
            WatermarkImage::Object {
                storage: r.watermark_storage.clone(),
                key: key.clone(),
            }
        }
    };
    let axis = |text: &str| -> Result<Axis, RenderError> {
        match text {
            "" => Ok(Axis::Start(Offset::ZERO)),
            t => t
                .parse()
                .map_err(|e: pixmesh_core::watermark::WatermarkSpecError| bad(e.to_string())),
        }
    };
    let size = |text: &str| match text {
        "" => Ok(None),
        t => parse_size(t).map(Some).map_err(|e| bad(e.to_string())),
    };
    Ok(Some(Watermark {
        image,
        x: axis(&r.watermark_x)?,
        y: axis(&r.watermark_y)?,
        opacity: parse_opacity(&r.watermark_opacity).map_err(|e| bad(e.to_string()))?,
        width: size(&r.watermark_width)?,
        height: size(&r.watermark_height)?,
    }))
}

#[cfg(test)]
mod tests {
    use pixmesh_core::transform::{Crop, CropAt, Focus, Fraction, Span, Trim, TrimColor};

    use super::*;

    #[test]
    fn wire_request_maps_onto_the_canonical_model() {
        let wire = v1::RenderRequest {
            storage: "photos".into(),
            key: "a/b.jpg".into(),
            width: 300,
            height: 200,
            fit: v1::Fit::FitIn.into(),
            upscale: true,
            flip_h: true,
            flip_v: false,
            h_align: v1::HAlign::Left.into(),
            v_align: v1::VAlign::Bottom.into(),
            format: v1::Format::Webp.into(),
            quality: 80,
            version_id: "v+1".into(),
            ..Default::default()
        };
        let req = to_core(wire.clone()).unwrap();
        assert_eq!(
            req.canonical(),
            "photos/fit-in/-300x200/left/bottom/filters:format(webp):quality(80):upscale()\
             /versionId=v+1/-/a/b.jpg"
        );
        let effects = v1::RenderRequest {
            rotate: 90,
            grayscale: true,
            blur_sigma_x100: 250,
            sharpen_sigma_x100: 50,
            sharpen_amount_x100: 200,
            pad: true,
            background_rgba: 0xff00_0080,
            ..wire
        };
        let t = to_core(effects).unwrap().transform;
        assert_eq!(t.rotation, Rotation::Cw90);
        assert!(t.grayscale && t.pad);
        assert_eq!(t.blur, Some(Hundredths(250)));
        assert_eq!(
            t.sharpen,
            Some(Sharpen {
                sigma: Hundredths(50),
                amount: Hundredths(200)
            })
        );
        assert_eq!(t.background.map(Color::hex).as_deref(), Some("ff000080"));
    }

    /// The filter's query encoding, read back the way the transcoder reads it (each parameter
    /// onto the field of its name), gives the same transform.
    #[test]
    fn query_encoding_round_trips_through_the_wire() {
        let t = Transform {
            width: 300,
            height: 200,
            fit: Fit::Stretch,
            upscale: true,
            flip_h: true,
            flip_v: true,
            h_align: HAlign::Right,
            v_align: VAlign::Top,
            format: OutputFormat::Fixed(Format::Png),
            quality: Some(55),
            rotation: Rotation::Cw270,
            grayscale: true,
            blur: Some(Hundredths(10_000)),
            sharpen: Some(Sharpen {
                sigma: Hundredths(1),
                amount: Hundredths(1_000),
            }),
            pad: true,
            background: Some(Color::rgb(1, 2, 3)),
            progressive: Some(false),
            max_bytes: Some(u32::MAX),
            crop: Some(Crop {
                width: Span::Pixels(65_535),
                height: Span::Fraction(Fraction(1)),
                at: CropAt::Offset(Span::Fraction(Fraction::ONE), Span::Pixels(0)),
            }),
            focus: Some(Focus {
                left: Span::Pixels(1),
                top: Span::Pixels(2),
                right: Span::Pixels(3),
                bottom: Span::Pixels(65_535),
            }),
            trim: Some(Trim {
                threshold: 255,
                color: TrimColor::Color(Color::rgb(0, 10, 255)),
                equal_hor: true,
                equal_ver: true,
            }),
            smart: true,
            keep_icc: true,
            adaptive: true,
            proportion: Some(Hundredths(1_000)),
            padding: Some(pixmesh_core::transform::Padding {
                left: 1,
                top: 0,
                right: 16_384,
                bottom: 3,
            }),
            effects: "brightness(-100):round_corner(16384|1,0,10,255,true):blur(200)"
                .parse()
                .unwrap(),
            final_effects: "rgb(1,-2,100):noise(100):sharpen(10,0.01,true)"
                .parse()
                .unwrap(),
        };
        let anchored = Crop {
            width: Span::FULL,
            height: Span::Pixels(7),
            at: CropAt::Anchor(HAlign::Right, VAlign::Top),
        };
        let formats = [
            OutputFormat::Source,
            OutputFormat::Fixed(Format::Jpeg),
            OutputFormat::Fixed(Format::Png),
            OutputFormat::Fixed(Format::Webp),
            OutputFormat::Fixed(Format::Gif),
            OutputFormat::Compatible,
            OutputFormat::Fixed(Format::Avif),
        ];
        for (i, format) in formats.into_iter().enumerate() {
            let req = RenderRequest {
                storage: "s".into(),
                key: "k".into(),
                version: None,
                watermark: None,
                cache_key: (i % 2 == 1).then(|| "0123456789abcdef".repeat(2)),
                transform: Transform { format, ..t },
                result_path: (i % 3 == 1)
                    .then(|| "fit-in/300x200/filters:format(webp)/a b+c.jpg".into()),
            };
            assert_eq!(to_core(wire_from_query(&req.to_query())).unwrap(), req);
            let req = RenderRequest {
                transform: Transform {
                    format,
                    crop: Some(anchored),
                    ..t
                },
                ..req.clone()
            };
            assert_eq!(to_core(wire_from_query(&req.to_query())).unwrap(), req);
            let progressive = RenderRequest {
                transform: Transform {
                    progressive: Some(true),
                    max_bytes: None,
                    ..req.transform
                },
                ..req.clone()
            };
            assert_eq!(
                to_core(wire_from_query(&progressive.to_query())).unwrap(),
                progressive
            );
            let fit = [
                Fit::Fill,
                Fit::FitIn,
                Fit::Cover,
                Fit::Auto,
                Fit::FillClamped,
                Fit::AutoDown,
            ][i % 6];
            let fitted = RenderRequest {
                transform: Transform {
                    fit,
                    ..req.transform
                },
                ..req.clone()
            };
            assert_eq!(
                to_core(wire_from_query(&fitted.to_query())).unwrap(),
                fitted
            );
            // Padding around the image, without pad (imgproxy's `pd`).
            let around_image = RenderRequest {
                transform: Transform {
                    pad: false,
                    ..req.transform
                },
                ..req.clone()
            };
            assert_eq!(
                to_core(wire_from_query(&around_image.to_query())).unwrap(),
                around_image
            );
        }
    }

    /// `%XX` escapes decoded, as the transcoder decodes query values.
    fn unescape(value: &str) -> String {
        let mut out = Vec::new();
        let mut bytes = value.bytes();
        while let Some(b) = bytes.next() {
            match b {
                b'%' => {
                    let hex = [bytes.next().unwrap(), bytes.next().unwrap()];
                    let hex = std::str::from_utf8(&hex).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                }
                b => out.push(b),
            }
        }
        String::from_utf8(out).unwrap()
    }

    /// The wire request the transcoder makes of a render query.
    fn wire_from_query(query: &str) -> v1::RenderRequest {
        let mut wire = v1::RenderRequest::default();
        for pair in query.split('&') {
            let (name, value) = pair.split_once('=').unwrap();
            let num = || value.parse::<u32>().unwrap();
            let yes = || value == "true";
            match name {
                "storage" => wire.storage = value.into(),
                "key" => wire.key = value.into(),
                "width" => wire.width = num(),
                "height" => wire.height = num(),
                "fit" => wire.fit = v1::Fit::from_str_name(value).unwrap().into(),
                "upscale" => wire.upscale = yes(),
                "flip_h" => wire.flip_h = yes(),
                "flip_v" => wire.flip_v = yes(),
                "h_align" => wire.h_align = v1::HAlign::from_str_name(value).unwrap().into(),
                "v_align" => wire.v_align = v1::VAlign::from_str_name(value).unwrap().into(),
                "format" => wire.format = v1::Format::from_str_name(value).unwrap().into(),
                "quality" => wire.quality = num(),
                "rotate" => wire.rotate = num(),
                "grayscale" => wire.grayscale = yes(),
                "blur_sigma_x100" => wire.blur_sigma_x100 = num(),
                "sharpen_sigma_x100" => wire.sharpen_sigma_x100 = num(),
                "sharpen_amount_x100" => wire.sharpen_amount_x100 = num(),
                "pad" => wire.pad = yes(),
                "background_rgba" => wire.background_rgba = num(),
                "version_id" => wire.version_id = value.into(),
                "cache_key" => wire.cache_key = value.into(),
                "result_path" => wire.result_path = unescape(value),
                "crop" => wire.crop = value.replace("%2C", ","),
                "focus" => wire.focus = value.replace("%2C", ","),
                "progressive" => {
                    wire.progressive = v1::Progressive::from_str_name(value).unwrap().into()
                }
                "max_bytes" => wire.max_bytes = num(),
                "trim" => wire.trim = value.replace("%2C", ","),
                "smart_crop" => wire.smart_crop = yes(),
                "keep_icc" => wire.keep_icc = yes(),
                "adaptive" => wire.adaptive = yes(),
                "effects" => wire.effects = unescape(value),
                "proportion_x100" => wire.proportion_x100 = num(),
                "padding" => wire.padding = value.replace("%2C", ","),
                "final_effects" => wire.final_effects = unescape(value),
                "watermark_storage" => wire.watermark_storage = unescape(value),
                "watermark_key" => wire.watermark_key = unescape(value),
                "watermark_default" => wire.watermark_default = yes(),
                "watermark_x" => wire.watermark_x = unescape(value),
                "watermark_y" => wire.watermark_y = unescape(value),
                "watermark_opacity" => wire.watermark_opacity = unescape(value),
                "watermark_width" => wire.watermark_width = unescape(value),
                "watermark_height" => wire.watermark_height = unescape(value),
                other => panic!("{other} is not a RenderRequest field"),
            }
        }
        wire
    }

    #[test]
    fn watermarks_round_trip_through_the_wire_and_malformed_ones_are_refused() {
        let object = WatermarkImage::Object {
            storage: "s".into(),
            key: "wm/a b.png".into(),
        };
        let mut tiled = Watermark::new(object.clone());
        (tiled.x, tiled.y) = (Axis::Repeat(12), Axis::End(Offset::Percent(5)));
        tiled.opacity = Fraction(2500);
        tiled.width = Some(Span::Pixels(40));
        tiled.height = Some(Span::Fraction(Fraction(5000)));
        let mut centred = Watermark::new(WatermarkImage::Default);
        (centred.x, centred.y) = (Axis::Center(Offset::Pixels(-3)), Axis::Start(Offset::ZERO));
        for w in [Watermark::new(object), tiled, centred] {
            let req = RenderRequest {
                storage: "s".into(),
                key: "k".into(),
                version: None,
                cache_key: None,
                transform: Transform::default(),
                watermark: Some(w),
                result_path: None,
            };
            assert_eq!(to_core(wire_from_query(&req.to_query())).unwrap(), req);
        }
        let base = v1::RenderRequest {
            storage: "s".into(),
            key: "k".into(),
            watermark_storage: "s".into(),
            watermark_key: "wm.png".into(),
            watermark_opacity: "1.0".into(),
            ..Default::default()
        };
        assert!(to_core(base.clone()).unwrap().watermark.is_some());
        for bad in [
            v1::RenderRequest {
                watermark_key: String::new(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_storage: String::new(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_key: "../wm.png".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_key: "/wm.png".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_default: true,
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_opacity: "1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_x: "left".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                watermark_width: "0".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                storage: "s".into(),
                key: "k".into(),
                watermark_x: "center".into(),
                ..Default::default()
            },
        ] {
            assert!(
                matches!(to_core(bad.clone()), Err(RenderError::BadRequest(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_what_the_filter_never_sends() {
        let base = v1::RenderRequest {
            storage: "s".into(),
            key: "k".into(),
            ..Default::default()
        };
        for bad in [
            v1::RenderRequest {
                storage: String::new(),
                ..base.clone()
            },
            v1::RenderRequest {
                quality: 101,
                ..base.clone()
            },
            v1::RenderRequest {
                fit: 99,
                ..base.clone()
            },
            v1::RenderRequest {
                width: MAX_DIMENSION + 1,
                ..base.clone()
            },
            v1::RenderRequest {
                rotate: 45,
                ..base.clone()
            },
            v1::RenderRequest {
                rotate: 450,
                ..base.clone()
            },
            v1::RenderRequest {
                blur_sigma_x100: 10_001,
                ..base.clone()
            },
            v1::RenderRequest {
                sharpen_sigma_x100: 100,
                ..base.clone()
            },
            v1::RenderRequest {
                sharpen_sigma_x100: 100,
                sharpen_amount_x100: 1_001,
                ..base.clone()
            },
            v1::RenderRequest {
                version_id: "v 1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                cache_key: "mobile".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                result_path: "../other/a.jpg".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                result_path: "s/300x200/-/a.jpg".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                crop: "0,5,1,1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                crop: "5,5,up-left".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                crop: "1.5,5,0,0".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                focus: "0.5,0.5,0.4,0.6".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                focus: "0.5,1,0.5,1".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                trim: "300,top-left".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                trim: "10,left".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                proportion_x100: 1_001,
                ..base.clone()
            },
            // Padding: four sides, each at most MAX_DIMENSION, never all zero.
            v1::RenderRequest {
                pad: true,
                padding: "1,2,3".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                pad: true,
                padding: "1,2,3,16385".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                pad: true,
                padding: "0,0,0,0".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                effects: "brightness(101)".into(),
                ..base.clone()
            },
            v1::RenderRequest {
                final_effects: vec!["noise(1)"; 33].join(":"),
                ..base.clone()
            },
            v1::RenderRequest {
                final_effects: "label(x)".into(),
                ..base.clone()
            },
        ] {
            assert!(matches!(to_core(bad), Err(RenderError::BadRequest(_))));
        }
        assert!(to_core(base).is_ok());
    }
}
