use super::*;
use crate::transform::{Color, Effects, Focus, Format, Hundredths, Sharpen};

/// Paths in canonical form: `generate(parse(s)) == s` for each.
const ROUND_TRIP: &[&str] = &[
    "unsafe/photo.jpg",
    "unsafe/300x200/photo.jpg",
    "unsafe/fit-in/300x200/photo.jpg",
    "unsafe/full-fit-in/300x/photo.jpg",
    "unsafe/adaptive-fit-in/x200/photo.jpg",
    "unsafe/adaptive-full-fit-in/-300x-200/photo.jpg",
    "unsafe/stretch/300x200/photo.jpg",
    "unsafe/-x-/photo.jpg",
    "unsafe/-300x200/photo.jpg",
    "unsafe/meta/trim/photo.jpg",
    "unsafe/trim:bottom-right:25/photo.jpg",
    "unsafe/trim:top-left/photo.jpg",
    "unsafe/trim:10/photo.jpg",
    "unsafe/10x20:300x400/photo.jpg",
    "unsafe/0.1x0.2:0.9x0.8/photo.jpg",
    "unsafe/300x200/10x20/photo.jpg",
    "unsafe/300x200/10x20:30x40/photo.jpg",
    "unsafe/300x200/left/top/photo.jpg",
    "unsafe/300x200/right/bottom/smart/photo.jpg",
    "unsafe/300x200/center/middle/photo.jpg",
    "unsafe/fit-in/300x200/filters:format(webp):quality(80)/photo.jpg",
    "unsafe/filters:watermark(s3/logo.png,10,-10,50):fill(white)/photo.jpg",
    "unsafe/filters:label(a:b(c)d,1,2)/dir/photo.jpg",
    "unsafe/filters:upscale()/photo.jpg",
    "unsafe/fit-in/300x200/filters:fill(ff0000)/photo.jpg",
    "unsafe/fit-in/300x200/left/filters:fill(transparent):rotate(270)/photo.jpg",
    "unsafe/filters:rotate(90):grayscale():blur(5,2):sharpen(1.5,0.5,true)/photo.jpg",
    "unsafe/filters:background_color(white):format(jpeg)/photo.jpg",
    "unsafe/b64:cGhvdG9zL2EuanBn/photo.jpg",
    "unsafe/dir%2Ffit-in/photo%20one.jpg",
    "cST4Ko5_FqwT3BDn-Wf4gO3RFSk=/500x500/top/raw.githubusercontent.com/cshum/imagor/master/testdata/gopher.png",
];

#[test]
fn canonical_paths_round_trip() {
    for &path in ROUND_TRIP {
        let parsed = ThumborPath::parse(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(parsed.to_path(), path, "generate(parse({path}))");
        assert_eq!(ThumborPath::parse(&parsed.to_path()).unwrap(), parsed);
    }
}

#[test]
fn parses_every_part() {
    let p = ThumborPath::parse(
        "/unsafe/meta/trim:bottom-right:5/1x2:3x4/fit-in/stretch/-300x-0/5x6:7x8/right/bottom/smart/filters:a(1):b()/x/y.png",
    )
    .unwrap();
    assert_eq!(p.signature, Signature::Unsafe);
    assert!(p.meta && p.stretch && p.smart && p.flip_h && p.flip_v);
    assert_eq!(
        p.trim,
        Some(Trim {
            from: Some(TrimFrom::BottomRight),
            tolerance: Some(5)
        })
    );
    assert_eq!(
        p.crop,
        Some(Crop {
            left: 1.0,
            top: 2.0,
            right: 3.0,
            bottom: 4.0
        })
    );
    assert_eq!(p.fit_in, Some(FitIn::FitIn));
    assert_eq!((p.width, p.height), (300, 0));
    assert_eq!(
        p.padding,
        Some(Padding {
            left: 5,
            top: 6,
            right: 7,
            bottom: 8
        })
    );
    assert_eq!(
        (p.h_align, p.v_align),
        (Some(HAlign::Right), Some(VAlign::Bottom))
    );
    assert_eq!(p.filters.len(), 2);
    assert_eq!(p.image, "x/y.png");
}

#[test]
fn last_segment_is_always_the_image() {
    for kw in ["smart", "fit-in", "300x200", "left", "trim", "meta"] {
        let p = ThumborPath::parse(&format!("unsafe/{kw}")).unwrap();
        assert_eq!(p.image, kw);
    }
}

#[test]
fn rejects_malformed_paths() {
    for bad in [
        "",
        "unsafe/",
        "nothash/300x200/a.jpg",
        "unsafe/filters:format(webp)",
        "unsafe/filters:format(webp/a.jpg",
        "unsafe/filters:format(webp)x/a.jpg",
        "unsafe/filters:Bad(1)/a.jpg",
        "unsafe/filters:a(1):/a.jpg",
        "unsafe/99999x1/a.jpg",
        "unsafe/a%zz.jpg",
    ] {
        let r = ThumborPath::parse(bad).and_then(|p| p.image_path());
        assert!(
            matches!(r, Err(GrammarError::Invalid(_))),
            "{bad:?} gave {r:?}"
        );
    }
}

#[test]
fn filter_count_is_bounded() {
    let many = vec!["quality(5)"; MAX_FILTERS + 1].join(":");
    let r = ThumborPath::parse(&format!("unsafe/filters:{many}/a.jpg"));
    assert!(matches!(r, Err(GrammarError::Invalid(_))));
}

#[test]
fn image_path_decodes_b64_and_percent() {
    let p = ThumborPath::parse(&format!("unsafe/{}", encode_b64_image("photos/ä b.jpg"))).unwrap();
    assert_eq!(p.image_path().unwrap(), "photos/ä b.jpg");
    let p = ThumborPath::parse("unsafe/b64:@@@notbase64").unwrap();
    assert_eq!(
        p.image_path().unwrap(),
        "b64:@@@notbase64",
        "literal fallback"
    );
    let p = ThumborPath::parse("unsafe/fit-in%2Fa%20b.jpg").unwrap();
    assert_eq!(p.image_path().unwrap(), "fit-in/a b.jpg");
}

#[test]
fn maps_onto_the_transform_model() {
    let t = ThumborPath::parse(
        "unsafe/fit-in/-300x200/left/filters:format(jpg):quality(80):upscale()/a.png",
    )
    .unwrap()
    .to_transform()
    .unwrap();
    assert_eq!(
        t,
        Transform {
            width: 300,
            height: 200,
            fit: Fit::FitIn,
            upscale: true,
            flip_h: true,
            flip_v: false,
            h_align: HAlign::Left,
            v_align: VAlign::Middle,
            format: OutputFormat::Fixed(Format::Jpeg),
            quality: Some(80),
            ..Transform::default()
        }
    );
    let back = ThumborPath::from_transform(&t, "a.png");
    assert_eq!(back.to_transform().unwrap(), t);
}

#[test]
fn the_format_filter_names_the_format_and_gif_is_one() {
    for (path, format, choice) in [
        ("unsafe/a.gif", OutputFormat::Source, FormatChoice::Unnamed),
        (
            "unsafe/filters:format(gif)/a.jpg",
            OutputFormat::Fixed(Format::Gif),
            FormatChoice::Named,
        ),
        (
            "unsafe/filters:format(WEBP)/a.gif",
            OutputFormat::Fixed(Format::Webp),
            FormatChoice::Named,
        ),
    ] {
        let t = ThumborPath::parse(path).unwrap().to_target().unwrap();
        assert_eq!(
            (t.transform.format, t.format_choice),
            (format, choice),
            "{path}"
        );
    }
    let compatible = Transform {
        format: OutputFormat::Compatible,
        ..Transform::default()
    };
    assert_eq!(
        ThumborPath::from_transform(&compatible, "a.jpg").to_path(),
        "unsafe/filters:format(compatible)/a.jpg",
        "the choice of auto has its own canonical form, which no URL may use"
    );
}

fn transform(path: &str) -> Result<Transform, GrammarError> {
    ThumborPath::parse(path)?.to_transform()
}

#[test]
fn the_fit_in_family_maps_onto_fits_that_cover_or_turn_the_box() {
    for (path, fit, adaptive, upscale) in [
        ("unsafe/fit-in/300x200/a.jpg", Fit::FitIn, false, false),
        // thumbor enlarges in full-fit-in without being asked, as in fill mode.
        ("unsafe/full-fit-in/300x200/a.jpg", Fit::Cover, false, true),
        (
            "unsafe/adaptive-fit-in/300x200/a.jpg",
            Fit::FitIn,
            true,
            false,
        ),
        (
            "unsafe/adaptive-full-fit-in/300x200/a.jpg",
            Fit::Cover,
            true,
            true,
        ),
        (
            "unsafe/adaptive-full-fit-in/300x200/filters:no_upscale()/a.jpg",
            Fit::Cover,
            true,
            false,
        ),
        // A box with one side given has the source's orientation: nothing to turn.
        (
            "unsafe/adaptive-fit-in/300x0/a.jpg",
            Fit::FitIn,
            false,
            false,
        ),
    ] {
        let t = transform(path).unwrap();
        assert_eq!(
            (t.fit, t.adaptive, t.upscale),
            (fit, adaptive, upscale),
            "{path}"
        );
        let back = ThumborPath::from_transform(&t, "a.jpg");
        assert_eq!(back.to_transform(), Ok(t), "{path}");
    }
    assert_eq!(
        ThumborPath::from_transform(
            &transform("unsafe/adaptive-full-fit-in/300x200/a.jpg").unwrap(),
            "a.jpg"
        )
        .to_path(),
        "unsafe/adaptive-full-fit-in/300x200/a.jpg"
    );
}

#[test]
fn imagor_padding_surrounds_what_fill_pads() {
    let padding = |path: &str| transform(path).map(|t| t.padding);
    let p = |left, top, right, bottom| {
        Some(Padding {
            left,
            top,
            right,
            bottom,
        })
    };
    assert_eq!(
        padding("unsafe/fit-in/300x200/10x20:30x40/filters:fill(ff0000)/a.jpg"),
        Ok(p(10, 20, 30, 40))
    );
    assert_eq!(
        padding("unsafe/fit-in/300x200/10x20/filters:fill(none)/a.jpg"),
        Ok(p(10, 20, 10, 20))
    );
    // imagor applies it with `fill` only.
    assert_eq!(padding("unsafe/fit-in/300x200/10x20:30x40/a.jpg"), Ok(None));
    assert_eq!(
        padding("unsafe/fit-in/300x200/0x0/filters:fill(red)/a.jpg"),
        Ok(None)
    );
    assert_eq!(
        padding("unsafe/fit-in/300x200/99999x1/filters:fill(red)/a.jpg"),
        Err(invalid("padding is limited to 16384 pixels a side"))
    );
    let t = transform("unsafe/fit-in/300x200/10x20:30x40/filters:fill(ff0000)/a.jpg").unwrap();
    let back = ThumborPath::from_transform(&t, "a.jpg");
    assert_eq!(
        back.to_path(),
        "unsafe/fit-in/300x200/10x20:30x40/filters:fill(ff0000)/a.jpg"
    );
    assert_eq!(back.to_transform(), Ok(t));
    // Padding around the image (imgproxy's `pd` without `ex:1`) is canonical-only, apart
    // from no padding and from padding around the box, and refused in URLs.
    let around = Transform {
        pad: false,
        background: None,
        ..t
    };
    let canonical = ThumborPath::from_transform(&around, "a.jpg");
    assert_eq!(
        canonical.to_path(),
        "unsafe/fit-in/300x200/10x20:30x40/filters:padding(image)/a.jpg"
    );
    assert_eq!(
        canonical.to_transform(),
        Err(invalid("unknown filter padding"))
    );
    let with_background = Transform {
        background: Some(Color::rgb(0, 0, 255)),
        ..around
    };
    assert_eq!(
        ThumborPath::from_transform(&with_background, "a.jpg").to_path(),
        "unsafe/fit-in/300x200/10x20:30x40/filters:padding(image):background_color(0000ff)\
         /a.jpg"
    );
    // Effects on the padded image stay after it, apart from those before the padding.
    let brightened = |effects: &str, final_effects: &str| Transform {
        effects: effects.parse().unwrap(),
        final_effects: final_effects.parse().unwrap(),
        ..around
    };
    assert_ne!(
        ThumborPath::from_transform(&brightened("brightness(10)", ""), "a.jpg").to_path(),
        ThumborPath::from_transform(&brightened("", "brightness(10)"), "a.jpg").to_path(),
    );
}

#[test]
fn fill_enlarges_small_sources_unless_no_upscale_and_fits_only_with_upscale() {
    let upscale = |path: &str| transform(path).unwrap().upscale;
    // thumbor and imagor: a 190×190 crop filled into 300×200 comes out 300×200.
    assert!(upscale("unsafe/10x10:200x200/300x200/a.jpg"));
    assert!(upscale("unsafe/300x0/a.jpg"));
    assert!(!upscale("unsafe/300x200/filters:no_upscale()/a.jpg"));
    assert!(!upscale(
        "unsafe/300x200/filters:upscale():no_upscale()/a.jpg"
    ));
    assert!(!upscale("unsafe/fit-in/300x200/a.jpg"));
    assert!(upscale("unsafe/fit-in/300x200/filters:upscale()/a.jpg"));
    // Without a size the output is the source's size: nothing to enlarge.
    assert_eq!(transform("unsafe/a.jpg"), Ok(Transform::default()));
    assert_eq!(
        transform("unsafe/300x200/filters:no_upscale(1)/a.jpg"),
        Err(invalid("no_upscale() takes no arguments"))
    );
    // Written back as thumbor says it.
    for path in [
        "unsafe/300x200/a.jpg",
        "unsafe/300x200/filters:no_upscale()/a.jpg",
        "unsafe/fit-in/300x200/filters:upscale()/a.jpg",
        "unsafe/filters:upscale()/a.jpg",
    ] {
        let t = transform(path).unwrap();
        assert_eq!(ThumborPath::from_transform(&t, "a.jpg").to_path(), path);
    }
}

#[test]
fn maps_the_filters_onto_the_transform_model() {
    let red = Some(Color::rgb(255, 0, 0));
    for (path, expected) in [
        (
            "unsafe/filters:rotate(90)/a.jpg",
            Transform {
                rotation: Rotation::Cw270,
                ..Transform::default()
            },
        ),
        (
            "unsafe/filters:rotate(270):rotate(180):rotate(360)/a.jpg",
            Transform {
                rotation: Rotation::Cw270,
                ..Transform::default()
            },
        ),
        (
            "unsafe/filters:grayscale():blur(5)/a.jpg",
            Transform {
                grayscale: true,
                blur: Some(Hundredths(250)),
                ..Transform::default()
            },
        ),
        (
            "unsafe/filters:blur(10,1.5)/a.jpg",
            Transform {
                blur: Some(Hundredths(150)),
                ..Transform::default()
            },
        ),
        (
            "unsafe/filters:blur(4,8):sharpen(2,0.5,true)/a.jpg",
            Transform {
                blur: Some(Hundredths(200)),
                sharpen: Some(Sharpen {
                    sigma: Hundredths(50),
                    amount: Hundredths(200),
                }),
                ..Transform::default()
            },
        ),
        (
            "unsafe/filters:blur(0):sharpen(0,1)/a.jpg",
            Transform::default(),
        ),
        (
            "unsafe/filters:sharpen(1.5)/a.jpg",
            Transform {
                sharpen: Some(Sharpen {
                    sigma: Hundredths(150),
                    amount: Hundredths::ONE,
                }),
                ..Transform::default()
            },
        ),
        (
            "unsafe/fit-in/300x200/filters:fill(red)/a.jpg",
            Transform {
                width: 300,
                height: 200,
                fit: Fit::FitIn,
                pad: true,
                background: red,
                ..Transform::default()
            },
        ),
        (
            "unsafe/300x200/filters:fill(F00,true):background_color(ff0000)/a.jpg",
            Transform {
                width: 300,
                height: 200,
                pad: true,
                background: red,
                upscale: true,
                ..Transform::default()
            },
        ),
        (
            "unsafe/filters:fill(none)/a.jpg",
            Transform {
                pad: true,
                ..Transform::default()
            },
        ),
        (
            "unsafe/filters:background_color(ff000080)/a.jpg",
            Transform {
                background: Some(Color {
                    a: 0x80,
                    ..Color::rgb(255, 0, 0)
                }),
                ..Transform::default()
            },
        ),
    ] {
        assert_eq!(transform(path), Ok(expected), "{path}");
        let back = ThumborPath::from_transform(&expected, "a.jpg");
        assert_eq!(back.to_transform(), Ok(expected), "{}", back.to_path());
    }
    let t = transform(
        "unsafe/fit-in/10x20/filters:rotate(90):blur(3):sharpen(1,2,1):grayscale():fill(FFF)/a.jpg",
    )
    .unwrap();
    assert_eq!(
        ThumborPath::from_transform(&t, "a.jpg").to_path(),
        "unsafe/fit-in/10x20/filters:rotate(90):grayscale():blur(3):sharpen(1,2,true):fill(ffffff)/a.jpg",
        "the canonical form"
    );
}

#[test]
fn manual_crops_are_pixels_or_ratios() {
    use crate::transform::{Crop as Region, CropAt, Fraction, Span};
    let px = Span::Pixels;
    let fr = |f| Span::Fraction(Fraction(f));
    for (path, crop) in [
        (
            "unsafe/10x20:300x400/a.jpg",
            Region {
                width: px(290),
                height: px(380),
                at: CropAt::Offset(px(10), px(20)),
            },
        ),
        (
            "unsafe/0.1x0.25:0.9x1/a.jpg",
            Region {
                width: fr(8000),
                height: fr(7500),
                at: CropAt::Offset(fr(1000), fr(2500)),
            },
        ),
        (
            "unsafe/0x0:1x5/a.jpg",
            Region {
                width: px(1),
                height: px(5),
                at: CropAt::Offset(px(0), px(0)),
            },
        ),
    ] {
        let t = transform(path).unwrap();
        assert_eq!(t.crop, Some(crop), "{path}");
        let back = ThumborPath::from_transform(&t, "a.jpg");
        assert_eq!(back.to_path(), path);
    }
    assert_eq!(
        transform("unsafe/0x0:0x0/300x200/a.jpg").unwrap().crop,
        None,
        "thumbor's no-crop"
    );
    for bad in [
        "unsafe/10x10:5x20/a.jpg",
        "unsafe/10x10:20x10/a.jpg",
        "unsafe/0.5x0:1.5x10/a.jpg",
        "unsafe/0x0:70000x10/a.jpg",
        "unsafe/0.00001x0:0.00002x1/a.jpg",
        "unsafe/filters:crop(10,10,0,0)/a.jpg",
    ] {
        assert!(
            matches!(transform(bad), Err(GrammarError::Invalid(_))),
            "{bad}: {:?}",
            transform(bad)
        );
    }
    // Crops thumbor cannot say have a canonical form no URL may use.
    for (crop, canonical) in [
        (
            Region {
                width: px(100),
                height: fr(5000),
                at: CropAt::Anchor(HAlign::Right, VAlign::Top),
            },
            "unsafe/filters:crop(100,0.5,right-top)/a.jpg",
        ),
        (
            Region {
                width: px(1),
                height: px(1),
                at: CropAt::Offset(px(0), px(0)),
            },
            "unsafe/filters:crop(1,1,0,0)/a.jpg",
        ),
        (
            Region {
                width: fr(6000),
                height: fr(1000),
                at: CropAt::Offset(fr(5000), fr(0)),
            },
            "unsafe/filters:crop(0.6,0.1,0.5,0.0)/a.jpg",
        ),
    ] {
        let t = Transform {
            crop: Some(crop),
            ..Transform::default()
        };
        assert_eq!(
            ThumborPath::from_transform(&t, "a.jpg").to_path(),
            canonical
        );
        assert_eq!(crop.to_string().parse::<Region>(), Ok(crop));
    }
}

#[test]
fn focal_regions_are_pixels_or_ratios() {
    let px = Span::Pixels;
    let fr = |f| Span::Fraction(Fraction(f));
    for (path, focus) in [
        (
            "unsafe/400x100/filters:focal(146x206:279x360)/a.jpg",
            Focus {
                left: px(146),
                top: px(206),
                right: px(279),
                bottom: px(360),
            },
        ),
        (
            "unsafe/400x100/filters:focal(0.35x0.25:0.6x0.3)/a.jpg",
            Focus {
                left: fr(3500),
                top: fr(2500),
                right: fr(6000),
                bottom: fr(3000),
            },
        ),
        (
            "unsafe/10x20:300x400/400x100/filters:focal(50x50:50x50)/a.jpg",
            Focus {
                left: px(50),
                top: px(50),
                right: px(50),
                bottom: px(50),
            },
        ),
    ] {
        let t = transform(path).unwrap();
        assert_eq!(t.focus, Some(focus), "{path}");
        assert_eq!(ThumborPath::from_transform(&t, "a.jpg").to_path(), path);
    }
    for bad in [
        "unsafe/filters:focal()/a.jpg",
        "unsafe/filters:focal(10x10:5x20)/a.jpg",
        "unsafe/filters:focal(1.5x0:2x10)/a.jpg",
        "unsafe/filters:focal(0x0:1x1,pixels)/a.jpg",
    ] {
        assert!(
            matches!(transform(bad), Err(GrammarError::Invalid(_))),
            "{bad}: {:?}",
            transform(bad)
        );
    }
    assert_eq!(
        transform("unsafe/filters:focal(1x1:2x2):focal(1x1:3x3)/a.jpg"),
        Err(GrammarError::Unsupported("filter focal given twice".into()))
    );
    let tiny = Transform {
        focus: Some(Focus {
            left: px(0),
            top: px(0),
            right: px(1),
            bottom: px(1),
        }),
        ..Transform::default()
    };
    assert_eq!(
        ThumborPath::from_transform(&tiny, "a.jpg").to_path(),
        "unsafe/filters:focal(0x0:1x1,pixels)/a.jpg",
        "a region in pixels that would read as ratios is canonical-only"
    );
}

#[test]
fn filter_order_and_repetition_rules() {
    for (path, what) in [
        (
            "unsafe/filters:fill(red):grayscale():fill(blue)/a.jpg",
            "filter fill after grayscale after fill or background_color",
        ),
        (
            "unsafe/filters:background_color(red):noise(2):background_color(red)/a.jpg",
            "filter background_color after noise after fill or background_color",
        ),
        (
            "unsafe/filters:fill(red):background_color(blue)/a.jpg",
            "fill and background_color with different colours",
        ),
        (
            "unsafe/filters:sharpen(1,1,false)/a.jpg",
            "sharpen on every channel (luminance_only false)",
        ),
        (
            "unsafe/filters:fill(red,false)/a.jpg",
            "fill that keeps transparent areas (fill_transparent false)",
        ),
        ("unsafe/filters:fill(auto)/a.jpg", "fill(auto)"),
        ("unsafe/filters:fill(blur)/a.jpg", "fill(blur)"),
    ] {
        assert_eq!(
            transform(path),
            Err(GrammarError::Unsupported(what.into())),
            "{path}"
        );
    }
    // Rotation commutes with padding, so its place among the filters does not matter.
    assert_eq!(
        transform("unsafe/fit-in/1x2/filters:fill(red):rotate(90)/a.jpg"),
        transform("unsafe/fit-in/1x2/filters:rotate(90):fill(red)/a.jpg"),
    );
}

#[test]
fn filters_apply_in_the_order_given() {
    let effects = |s: &str| s.parse::<Effects>().unwrap();
    // Effects after fill or background_color run on the padded (and rotated) image.
    let t = transform("unsafe/fit-in/300x200/filters:fill(ffd700):rotate(90):grayscale()/a.jpg")
        .unwrap();
    assert_eq!((t.pad, t.grayscale), (true, false));
    assert_eq!(t.final_effects, effects("grayscale()"));
    assert_eq!(t.rotation, Rotation::Cw270);
    let t = transform("unsafe/filters:background_color(red):blur(2):sharpen(1)/a.jpg").unwrap();
    assert_eq!(t.blur, None);
    assert_eq!(t.final_effects, effects("blur(2):sharpen(1,1,true)"));
    // Before them, colour filters run before the padding, after grayscale, blur and
    // sharpen in their own fields; once a list has started, those join it in order.
    let t = transform("unsafe/filters:blur(3):brightness(10):blur(2):fill(red):contrast(-5)/a.jpg")
        .unwrap();
    assert_eq!(t.blur, Hundredths::from_f64(1.5));
    assert_eq!(t.effects, effects("brightness(10):blur(2)"));
    assert_eq!(t.final_effects, effects("contrast(-5)"));
    // A filter given twice applies twice.
    let t = transform("unsafe/filters:sharpen(1):sharpen(2)/a.jpg").unwrap();
    assert_eq!(t.effects, effects("sharpen(1,2,true)"));
    // A rotation after corners turns them: the final effects run after the rotation.
    let t = transform(
        "unsafe/filters:fill(red):round_corner(10|20,0,0,0):rotate(90):round_corner(5,0,0,0)/a.jpg",
    )
    .unwrap();
    assert_eq!(
        t.final_effects,
        effects("round_corner(20|10,0,0,0):round_corner(5,0,0,0)")
    );
    // Every one of these is its own canonical form.
    for path in [
        "unsafe/fit-in/300x200/filters:rotate(90):fill(ffd700):grayscale()/a.jpg",
        "unsafe/filters:grayscale():brightness(10):contrast(-20):saturation(30):rgb(1,2,3)\
         :noise(5):round_corner(3|4,1,2,3,true)/a.jpg",
        "unsafe/filters:brightness(10):fill(ff0000):round_corner(3|4,1,2,3)/a.jpg",
        "unsafe/filters:blur(2):background_color(ff0000):blur(4):grayscale()/a.jpg",
    ] {
        let t = transform(path).unwrap();
        let back = ThumborPath::from_transform(&t, "a.jpg").to_path();
        assert_eq!(back, path.replace(' ', ""), "{path}");
    }
    // Final effects without padding are written before it, turned back by the rotation.
    let t = Transform {
        rotation: Rotation::Cw90,
        final_effects: effects("round_corner(1|2,0,0,0):noise(3)"),
        ..Transform::default()
    };
    let back = transform(&ThumborPath::from_transform(&t, "a.jpg").to_path()).unwrap();
    assert_eq!(back.effects, effects("round_corner(2|1,0,0,0):noise(3)"));
    assert_eq!(back.rotation, Rotation::Cw90);
}

#[test]
fn colour_filters_check_their_arguments() {
    let effects = |s: &str| s.parse::<Effects>().unwrap();
    for (path, list) in [
        ("brightness(-100)", "brightness(-100)"),
        ("contrast(100)", "contrast(100)"),
        ("saturation(-40)", "saturation(-40)"),
        ("rgb(10,-5,0)", "rgb(10,-5,0)"),
        ("noise(100)", "noise(100)"),
        (
            "round_corner(20,255,255,255)",
            "round_corner(20,255,255,255)",
        ),
        (
            "round_corner(20|5,0,0,0,1)",
            "round_corner(20|5,0,0,0,true)",
        ),
        ("round_corner(20,0,0,0,false)", "round_corner(20,0,0,0)"),
        ("noise(10,42)", "noise(10)"),
    ] {
        let t = transform(&format!("unsafe/filters:{path}/a.jpg")).unwrap();
        assert_eq!(t.effects, effects(list), "{path}");
    }
    for (filter, message) in [
        (
            "brightness(101)",
            "brightness: \"101\" is not a whole number from -100 to 100",
        ),
        (
            "contrast(x)",
            "contrast: \"x\" is not a whole number from -100 to 100",
        ),
        ("saturation()", "saturation() takes 1 arguments"),
        ("rgb(1,2)", "rgb() takes 3 arguments"),
        (
            "noise(101)",
            "noise: \"101\" is not a whole number from 0 to 100",
        ),
        ("noise(10,x)", "noise: seed \"x\" is not a whole number"),
        (
            "round_corner(0,0,0,0)",
            "round_corner: radius \"0\" is not a whole number from 1 to 16384",
        ),
        (
            "round_corner(5,0,0)",
            "round_corner() takes 4 or 5 arguments",
        ),
        (
            "round_corner(5,0,0,300)",
            "round_corner: colour channel \"300\" is not a whole number from 0 to 255",
        ),
    ] {
        assert_eq!(
            transform(&format!("unsafe/filters:{filter}/a.jpg")),
            Err(GrammarError::Invalid(message.into())),
            "{filter}"
        );
    }
    // proportion scales the fitted image, before the effects it does not commute with.
    let t = transform("unsafe/fit-in/300x200/filters:brightness(5):proportion(0.5)/a.jpg");
    assert_eq!(t.map(|t| t.proportion), Ok(Hundredths::from_f64(0.5)));
    let t = transform("unsafe/filters:proportion(1.25):blur(2):fill(red)/a.jpg").unwrap();
    assert_eq!(
        ThumborPath::from_transform(&t, "a.jpg").to_path(),
        "unsafe/filters:proportion(1.25):blur(2):fill(ff0000)/a.jpg"
    );
    for (path, after) in [
        (
            "blur(2):proportion(0.5)",
            "blur, sharpen, noise or round_corner",
        ),
        (
            "noise(2):proportion(0.5)",
            "blur, sharpen, noise or round_corner",
        ),
        ("fill(red):proportion(0.5)", "fill or background_color"),
        ("proportion(0.5):proportion(0.5)", "proportion"),
    ] {
        assert_eq!(
            transform(&format!("unsafe/filters:{path}/a.jpg")),
            Err(GrammarError::Unsupported(format!(
                "filter proportion after {after}"
            ))),
            "{path}"
        );
    }
    for bad in [
        "proportion(0)",
        "proportion(10.01)",
        "proportion(-1)",
        "proportion()",
    ] {
        assert!(
            matches!(
                transform(&format!("unsafe/filters:{bad}/a.jpg")),
                Err(GrammarError::Invalid(_))
            ),
            "{bad}"
        );
    }
    // No-ops: outputs carry no metadata.
    for noop in ["strip_exif()", "strip_icc()", "strip_metadata()"] {
        assert_eq!(
            transform(&format!("unsafe/filters:{noop}/a.jpg")),
            Ok(Transform::default()),
            "{noop}"
        );
    }
    assert_eq!(
        transform("unsafe/filters:keep_icc():strip_metadata()/a.jpg"),
        Err(GrammarError::Invalid(
            "keep_icc() and strip_metadata() contradict each other".into()
        ))
    );
    assert_eq!(
        transform("unsafe/filters:watermark(w.png,0,0,0):brightness(5)/a.jpg"),
        Err(GrammarError::Unsupported(
            "filter brightness after watermark".into()
        ))
    );
    assert_eq!(
        transform("unsafe/filters:watermark(w.png,0,0,0):proportion(0.5)/a.jpg"),
        Err(GrammarError::Unsupported(
            "filter proportion after watermark".into()
        ))
    );
}

#[test]
fn unsupported_features_are_named_not_ignored() {
    for (path, what) in [
        ("unsafe/meta/a.jpg", "meta"),
        (
            "unsafe/10x10/filters:label(hi,1,1,10)/a.jpg",
            "filter label",
        ),
        ("unsafe/filters:format(jxl)/a.jpg", "format(jxl)"),
    ] {
        let r = ThumborPath::parse(path).unwrap().to_transform();
        assert_eq!(r, Err(GrammarError::Unsupported(what.into())), "{path}");
    }
}

/// `watermark(…)` rows: canonical path ⇄ the watermark it asks for.
#[test]
fn watermarks_map_onto_the_model_and_back() {
    use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};
    let w = |x, y, opacity, width: Option<Span>, height: Option<Span>| Watermark {
        image: WatermarkImage::Path("wm/logo.png".into()),
        x,
        y,
        opacity: Fraction(opacity),
        width,
        height,
    };
    let (px, pct) = (Offset::Pixels, Offset::Percent);
    let frac = |f| Some(Span::Fraction(Fraction(f)));
    for (path, want) in [
        (
            "unsafe/filters:watermark(wm/logo.png,10,-10,50)/a.jpg",
            w(Axis::Start(px(10)), Axis::End(px(10)), 5000, None, None),
        ),
        (
            "unsafe/filters:watermark(wm/logo.png,center,center,0)/a.jpg",
            w(
                Axis::Center(Offset::ZERO),
                Axis::Center(Offset::ZERO),
                10_000,
                None,
                None,
            ),
        ),
        (
            "unsafe/filters:watermark(wm/logo.png,-0,0,100)/a.jpg",
            w(
                Axis::End(Offset::ZERO),
                Axis::Start(Offset::ZERO),
                0,
                None,
                None,
            ),
        ),
        (
            "unsafe/filters:watermark(wm/logo.png,20p,-5p,33.33)/a.jpg",
            w(Axis::Start(pct(20)), Axis::End(pct(5)), 6667, None, None),
        ),
        (
            "unsafe/300x200/filters:format(png):watermark(wm/logo.png,repeat,repeat,25,20)/a.jpg",
            w(Axis::Repeat(0), Axis::Repeat(0), 7500, frac(2000), None),
        ),
        (
            "unsafe/filters:watermark(wm/logo.png,repeat,10,0,none,12.5)/a.jpg",
            w(
                Axis::Repeat(0),
                Axis::Start(px(10)),
                10_000,
                None,
                frac(1250),
            ),
        ),
        (
            "unsafe/filters:fill(ff0000):watermark(wm/logo.png,0,0,0,50,50)/a.jpg",
            w(
                Axis::Start(px(0)),
                Axis::Start(px(0)),
                10_000,
                frac(5000),
                frac(5000),
            ),
        ),
    ] {
        let p = ThumborPath::parse(path).unwrap();
        let t = p.to_target().unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(t.watermark.as_ref(), Some(&want), "{path}");
        let mut back = ThumborPath::from_transform(&t.transform, &t.image);
        back.push_watermark(&want);
        assert_eq!(back.to_path(), path, "{path}");
    }
    // imagor's keywords and thumbor's "0 is no ratio".
    let t = ThumborPath::parse("unsafe/filters:watermark(a%2Cb.png,right,bottom,10,0,none)/a.jpg")
        .unwrap()
        .to_target()
        .unwrap();
    let wm = t.watermark.unwrap();
    assert_eq!(wm.image, WatermarkImage::Path("a,b.png".into()));
    assert_eq!(
        (wm.x, wm.y),
        (Axis::End(Offset::ZERO), Axis::End(Offset::ZERO))
    );
    assert_eq!((wm.width, wm.height), (None, None));
    // Canonical-only forms: what thumbor cannot say is written so that URLs cannot use it.
    let mut odd = Watermark::new(WatermarkImage::Object {
        storage: "s3".into(),
        key: "wm/logo.png".into(),
    });
    odd.x = Axis::Center(px(5));
    odd.width = Some(Span::Pixels(40));
    let mut canonical = ThumborPath::new("a.jpg");
    canonical.push_watermark(&odd);
    assert_eq!(
        canonical.to_path(),
        "unsafe/filters:watermark(s3/wm%2Flogo.png,center+5,0,0,40px)/a.jpg"
    );
    assert!(matches!(
        ThumborPath::parse(&canonical.to_path())
            .unwrap()
            .to_target(),
        Err(GrammarError::Invalid(_))
    ));
}

#[test]
fn watermark_filters_are_checked() {
    for (path, what) in [
        (
            "unsafe/filters:watermark(http://x/l.png,0,0,0)/a.jpg",
            "watermark images from URLs",
        ),
        (
            "unsafe/filters:watermark(l.png,0,0,0):rotate(90)/a.jpg",
            "filter rotate after watermark",
        ),
        (
            "unsafe/filters:watermark(l.png,0,0,0):fill(red)/a.jpg",
            "filter fill after watermark",
        ),
        (
            "unsafe/filters:watermark(l.png,0,0,0):blur(2)/a.jpg",
            "filter blur after watermark",
        ),
        (
            "unsafe/filters:watermark(l.png,0,0,0):watermark(l.png,0,0,0)/a.jpg",
            "filter watermark after watermark",
        ),
    ] {
        let r = ThumborPath::parse(path).unwrap().to_target();
        assert_eq!(r, Err(GrammarError::Unsupported(what.into())), "{path}");
    }
    for bad in [
        "unsafe/filters:watermark(l.png,0,0)/a.jpg",
        "unsafe/filters:watermark(,0,0,0)/a.jpg",
        "unsafe/filters:watermark(l.png,x,0,0)/a.jpg",
        "unsafe/filters:watermark(l.png,101p,0,0)/a.jpg",
        "unsafe/filters:watermark(l.png,0,0,101)/a.jpg",
        "unsafe/filters:watermark(l.png,0,0,0,-5)/a.jpg",
        "unsafe/filters:watermark(l.png,0,0,0,101)/a.jpg",
        "unsafe/filters:watermark(l.png,start+1,0,0)/a.jpg",
        "unsafe/filters:watermark(l%ZZ.png,0,0,0)/a.jpg",
    ] {
        assert!(
            matches!(
                ThumborPath::parse(bad).unwrap().to_target(),
                Err(GrammarError::Invalid(_))
            ),
            "{bad}"
        );
    }
    assert!(
        ThumborPath::parse("unsafe/filters:rotate(90):watermark(l.png,0,0,0):quality(5)/a.jpg")
            .unwrap()
            .to_target()
            .is_ok(),
        "filters that do not change pixels may follow"
    );
}

#[test]
fn expire_is_imagors_unix_milliseconds() {
    let p = ThumborPath::parse("unsafe/filters:expire(1700000000000):quality(5)/a.jpg").unwrap();
    let t = p.to_target().unwrap();
    assert_eq!(t.expires, Some(Expiry::UnixMillis(1_700_000_000_000)));
    assert_eq!(t.transform.quality, Some(5));
    assert_eq!(t.image, "a.jpg");
    let none = ThumborPath::parse("unsafe/a.jpg").unwrap();
    assert_eq!(none.to_target().unwrap().expires, None);
    for bad in [
        "expire()",
        "expire(-1)",
        "expire(1.5)",
        "expire(99999999999999999999999)",
    ] {
        let p = ThumborPath::parse(&format!("unsafe/filters:{bad}/a.jpg")).unwrap();
        assert!(
            matches!(p.to_target(), Err(GrammarError::Invalid(_))),
            "{bad}"
        );
    }
}

#[test]
fn max_bytes_and_avif_map_onto_the_transform_and_back() {
    let path = "unsafe/fit-in/300x200/filters:format(avif):quality(50):max_bytes(40000)/a.jpg";
    let t = ThumborPath::parse(path).unwrap().to_transform().unwrap();
    assert_eq!(t.format, OutputFormat::Fixed(Format::Avif));
    assert_eq!((t.quality, t.max_bytes), (Some(50), Some(40_000)));
    assert_eq!(ThumborPath::from_transform(&t, "a.jpg").to_path(), path);
    let t = ThumborPath::parse("unsafe/filters:max_bytes(4294967295)/a.jpg")
        .unwrap()
        .to_transform()
        .unwrap();
    assert_eq!(t.max_bytes, Some(u32::MAX));
    for (arg, progressive) in [("true", true), ("false", false), ("1", true), ("0", false)] {
        let path = format!("unsafe/filters:progressive({arg})/a.jpg");
        let t = ThumborPath::parse(&path).unwrap().to_transform().unwrap();
        assert_eq!(t.progressive, Some(progressive), "{path}");
        assert_eq!(
            ThumborPath::from_transform(&t, "a.jpg").to_path(),
            format!("unsafe/filters:progressive({progressive})/a.jpg")
        );
    }
}

#[test]
fn bad_filter_arguments_are_invalid() {
    for path in [
        "unsafe/filters:quality(0)/a.jpg",
        "unsafe/filters:quality(101)/a.jpg",
        "unsafe/filters:quality(x)/a.jpg",
        "unsafe/filters:format(bmpx)/a.jpg",
        "unsafe/filters:format(compatible)/a.jpg",
        "unsafe/filters:max_bytes(0)/a.jpg",
        "unsafe/filters:max_bytes(-5)/a.jpg",
        "unsafe/filters:max_bytes(1.5)/a.jpg",
        "unsafe/filters:max_bytes(4294967296)/a.jpg",
        "unsafe/filters:max_bytes()/a.jpg",
        "unsafe/filters:progressive(maybe)/a.jpg",
        "unsafe/filters:progressive()/a.jpg",
        "unsafe/filters:upscale(1)/a.jpg",
        "unsafe/filters:nonsense(1)/a.jpg",
        "unsafe/filters:rotate(45)/a.jpg",
        "unsafe/filters:rotate()/a.jpg",
        "unsafe/filters:rotate(x)/a.jpg",
        "unsafe/filters:grayscale(1)/a.jpg",
        "unsafe/filters:blur()/a.jpg",
        "unsafe/filters:blur(201)/a.jpg",
        "unsafe/filters:blur(5,101)/a.jpg",
        "unsafe/filters:blur(-1)/a.jpg",
        "unsafe/filters:sharpen(11,1,true)/a.jpg",
        "unsafe/filters:sharpen(1,1,maybe)/a.jpg",
        "unsafe/filters:sharpen(1,2,true,4)/a.jpg",
        "unsafe/filters:fill()/a.jpg",
        "unsafe/filters:fill(notacolour)/a.jpg",
        "unsafe/filters:fill(red,perhaps)/a.jpg",
        "unsafe/filters:background_color(red,blue)/a.jpg",
        "unsafe/fit-in/stretch/1x1/a.jpg",
        "unsafe/filters:keep_icc(1)/a.jpg",
        "unsafe/filters:keep_icc():strip_icc()/a.jpg",
        "unsafe/filters:trim(10,ff0000)/a.jpg",
    ] {
        let r = ThumborPath::parse(path).unwrap().to_transform();
        assert!(matches!(r, Err(GrammarError::Invalid(_))), "{path}: {r:?}");
    }
}

#[test]
fn trim_smart_and_keep_icc_map_onto_the_transform_and_back() {
    let trim = |threshold, color| {
        Some(crate::transform::Trim {
            threshold,
            color,
            equal_hor: false,
            equal_ver: false,
        })
    };
    // (URL, transform, canonical path of the transform)
    for (path, expected, canonical) in [
        (
            "unsafe/trim/a.jpg",
            Transform {
                trim: trim(0, TrimColor::TopLeft),
                ..Transform::default()
            },
            "unsafe/trim/a.jpg",
        ),
        (
            "unsafe/trim:top-left:0/a.jpg",
            Transform {
                trim: trim(0, TrimColor::TopLeft),
                ..Transform::default()
            },
            "unsafe/trim/a.jpg",
        ),
        (
            "unsafe/trim:bottom-right:25/300x200/a.jpg",
            Transform {
                width: 300,
                height: 200,
                trim: trim(25, TrimColor::BottomRight),
                upscale: true,
                ..Transform::default()
            },
            "unsafe/trim:bottom-right:25/300x200/a.jpg",
        ),
        (
            "unsafe/trim:40/300x200/smart/a.jpg",
            Transform {
                width: 300,
                height: 200,
                trim: trim(40, TrimColor::TopLeft),
                smart: true,
                upscale: true,
                ..Transform::default()
            },
            "unsafe/trim:40/300x200/smart/a.jpg",
        ),
        (
            "unsafe/300x200/smart/filters:focal(0.5x0.5:0.5x0.5)/a.jpg",
            Transform {
                width: 300,
                height: 200,
                smart: true,
                focus: Some(Focus::point(Fraction(5000), Fraction(5000))),
                upscale: true,
                ..Transform::default()
            },
            "unsafe/300x200/smart/filters:focal(0.5x0.5:0.5x0.5)/a.jpg",
        ),
        (
            "unsafe/filters:keep_icc():format(png)/a.jpg",
            Transform {
                keep_icc: true,
                format: OutputFormat::Fixed(Format::Png),
                ..Transform::default()
            },
            "unsafe/filters:format(png):keep_icc()/a.jpg",
        ),
        (
            "unsafe/filters:strip_icc()/a.jpg",
            Transform::default(),
            "unsafe/a.jpg",
        ),
    ] {
        let t = ThumborPath::parse(path).unwrap().to_transform();
        assert_eq!(t, Ok(expected), "{path}");
        let back = ThumborPath::from_transform(&expected, "a.jpg");
        assert_eq!(back.to_path(), canonical, "{path}");
        assert_eq!(back.to_transform(), Ok(expected), "{canonical}");
    }
    // What thumbor cannot say is canonical-only, refused in URLs.
    let imgproxy_trim = Transform {
        trim: Some(crate::transform::Trim {
            threshold: 10,
            color: TrimColor::Color(Color::rgb(255, 0, 0)),
            equal_hor: true,
            equal_ver: false,
        }),
        ..Transform::default()
    };
    let canonical = ThumborPath::from_transform(&imgproxy_trim, "a.jpg");
    assert_eq!(
        canonical.to_path(),
        "unsafe/filters:trim(10,ff0000,equal-hor)/a.jpg"
    );
    assert!(matches!(
        canonical.to_transform(),
        Err(GrammarError::Invalid(_))
    ));
}
