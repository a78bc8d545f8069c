use super::*;
use crate::grammar::Expiry;
use crate::transform::Trim;

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
    let b64 =
        ImgproxyPath::parse("insecure/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png")
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
    // `auto` with a dpr, short of enlarging: its fill is the fill of the scaled box
    // (`Fit::AutoDown`), which no URL without a dpr says; enlarged, the plain auto.
    assert_eq!(
        target("insecure/rs:auto:150:100/dpr:2/plain/a.jpg").map(|t| t.transform),
        Ok(fill(Fit::AutoDown))
    );
    assert_eq!(
        ImgproxyPath::from_transform(&fill(Fit::AutoDown), "a.jpg"),
        None
    );
    assert_eq!(
        target("insecure/rs:auto:150:100:1/dpr:2/plain/a.jpg").map(|t| t.transform),
        Ok(Transform {
            upscale: true,
            ..fill(Fit::Auto)
        })
    );
    assert_eq!(
        target("insecure/rs:auto:300:200/plain/a.jpg").map(|t| t.transform),
        Ok(fill(Fit::Auto))
    );
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
