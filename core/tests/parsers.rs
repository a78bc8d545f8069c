//! Property tests for every URL parser: on any input they return (no panic, no hang), what they
//! keep is bounded by the documented limits, and whatever parses survives generate ⇄ parse.
//!
//! Inputs come from two strategies per parser: arbitrary Unicode text, and text over the
//! grammar's own alphabet (separators, option names, digits, escapes), which reaches far deeper
//! into the parsers than random text does.

use std::time::{Duration, SystemTime};

use pixmesh_core::accept;
use pixmesh_core::effect::{Effect, Effects, MAX_CORNER_RADIUS, RoundCorner};
use pixmesh_core::grammar::GrammarError;
use pixmesh_core::imagekit::{self, ImagekitUrl};
use pixmesh_core::imagor_key;
use pixmesh_core::imgproxy::{self, ImgproxyPath, Source};
use pixmesh_core::query::{self, QueryUrl};
use pixmesh_core::router::{Decision, MAX_URL_LEN, Router};
use pixmesh_core::thumbor::{self, ThumborPath};
use pixmesh_core::transform::{
    Color, Crop, CropAt, Fit, Focus, Format, Fraction, HAlign, Hundredths, MAX_CROP_PIXELS,
    MAX_DIMENSION, MAX_PROPORTION, MAX_SHARPEN_AMOUNT, MAX_SIGMA, OutputFormat, Padding, Rotation,
    Sharpen, Span, Transform, Trim, TrimColor, VAlign,
};
use proptest::prelude::*;

/// Text built from the pieces URL grammars are made of, up to `max` pieces.
fn grammar_text(max: usize) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_owned()),
        Just(":".to_owned()),
        Just(",".to_owned()),
        Just("-".to_owned()),
        Just("(".to_owned()),
        Just(")".to_owned()),
        Just("@".to_owned()),
        Just(".".to_owned()),
        Just("?".to_owned()),
        Just("&".to_owned()),
        Just("=".to_owned()),
        Just("%".to_owned()),
        Just("%2F".to_owned()),
        Just("%0A".to_owned()),
        Just("\n".to_owned()),
        Just("..".to_owned()),
        Just("x".to_owned()),
        prop_oneof![
            Just("unsafe"),
            Just("insecure"),
            Just("plain"),
            Just("enc"),
            Just("tr"),
            Just("filters"),
            Just("fit-in"),
            Just("rs"),
            Just("fit"),
            Just("fill"),
            Just("w"),
            Just("h"),
            Just("g"),
            Just("dpr"),
            Just("q"),
            Just("f"),
            Just("c"),
            Just("ar"),
            Just("e-sharpen"),
            Just("s3://b"),
            Just("b64"),
            Just("upscale()"),
            Just("expire"),
            Just("exp"),
            Just("sig"),
            Just("ik-s"),
            Just("ik-t"),
            Just("rotate(90)"),
            Just("rot"),
            Just("rt"),
            Just("bl"),
            Just("sh"),
            Just("bg"),
            Just("bga"),
            Just("ex"),
            Just("sa"),
            Just("fill"),
            Just("background_color"),
            Just("grayscale()"),
            Just("e-grayscale"),
            Just("cm"),
            Just("pad_resize"),
            Just("contain"),
            Just("blur"),
            Just("sharpen"),
            Just("transparent"),
            Just("ff0000"),
        ]
        .prop_map(str::to_owned),
        (0u64..100_000).prop_map(|n| n.to_string()),
        "[a-zA-Z0-9_=]{1,12}",
    ];
    prop::collection::vec(piece, 0..max).prop_map(|v| v.concat())
}

/// `Accept` header values built from media ranges, parameters and separators.
fn accept_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("image/webp"),
        Just("IMAGE/WEBP"),
        Just("image/*"),
        Just("*/*"),
        Just(","),
        Just(";"),
        Just("q="),
        Just("0"),
        Just("1"),
        Just("."),
        Just(" "),
        Just("\""),
        Just("="),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), grammar_text(80)]
}

fn split(url: &str) -> (&str, &str) {
    url.split_once('?').unwrap_or((url, ""))
}

/// A target's transform always respects the model's bounds.
fn check_bounds(r: &Result<pixmesh_core::grammar::Target, GrammarError>) {
    if let Ok(t) = r {
        assert!(t.transform.width <= MAX_DIMENSION && t.transform.height <= MAX_DIMENSION);
        let t = &t.transform;
        assert!(t.quality.is_none_or(|q| (1..=100).contains(&q)));
        assert!(t.blur.is_none_or(|s| s.0 > 0 && s <= MAX_SIGMA));
        assert!(t.sharpen.is_none_or(|s| {
            s.sigma.0 > 0
                && s.sigma <= MAX_SIGMA
                && s.amount.0 > 0
                && s.amount <= MAX_SHARPEN_AMOUNT
        }));
        assert!(t.background.is_none_or(|c| c.a > 0));
    }
}

/// Any transform the model can hold.
fn any_transform() -> impl Strategy<Value = Transform> {
    let fit = prop_oneof![
        Just(Fit::Fill),
        Just(Fit::FitIn),
        Just(Fit::Stretch),
        Just(Fit::Auto),
        Just(Fit::Cover),
        Just(Fit::FillClamped),
        Just(Fit::AutoDown)
    ];
    let h = prop_oneof![
        Just(HAlign::Left),
        Just(HAlign::Center),
        Just(HAlign::Right)
    ];
    let v = prop_oneof![
        Just(VAlign::Top),
        Just(VAlign::Middle),
        Just(VAlign::Bottom)
    ];
    // `Compatible` is left out: the router chooses it, no URL can ask for it.
    let format = prop_oneof![
        Just(OutputFormat::Source),
        prop::sample::select(Format::ALL.to_vec()).prop_map(OutputFormat::Fixed),
    ];
    let rotation = prop::sample::select(Rotation::ALL.to_vec());
    let sigma = (1..=MAX_SIGMA.0).prop_map(Hundredths);
    let amount = prop_oneof![
        Just(Hundredths::ONE),
        (1..=MAX_SHARPEN_AMOUNT.0).prop_map(Hundredths)
    ];
    let color = prop_oneof![
        Just(Color::rgb(255, 0, 0)),
        any::<[u8; 4]>().prop_map(|[r, g, b, a]| Color {
            r,
            g,
            b,
            a: a.max(1)
        }),
    ];
    let span = |min: u32| {
        prop_oneof![
            (min..=MAX_CROP_PIXELS).prop_map(Span::Pixels),
            (min as u16..=Fraction::ONE.0).prop_map(|f| Span::Fraction(Fraction(f))),
        ]
    };
    let crop = (
        span(1),
        span(1),
        prop_oneof![
            (span(0), span(0)).prop_map(|(l, t)| CropAt::Offset(l, t)),
            (h.clone(), v.clone()).prop_map(|(h, v)| CropAt::Anchor(h, v)),
        ],
    )
        .prop_map(|(width, height, at)| Crop { width, height, at });
    let sorted = |a: u32, b: u32| (a.min(b), a.max(b));
    let focus = prop_oneof![
        (0..=10_000u32, 0..=10_000u32, 0..=10_000u32, 0..=10_000u32).prop_map(
            move |(a, b, c, d)| {
                let ((l, r), (t, bt)) = (sorted(a, c), sorted(b, d));
                let f = |v: u32| Span::Fraction(Fraction(v as u16));
                Focus {
                    left: f(l),
                    top: f(t),
                    right: f(r),
                    bottom: f(bt),
                }
            }
        ),
        (
            0..=MAX_CROP_PIXELS,
            0..=MAX_CROP_PIXELS,
            0..=MAX_CROP_PIXELS,
            0..=MAX_CROP_PIXELS
        )
            .prop_map(move |(a, b, c, d)| {
                let ((l, r), (t, bt)) = (sorted(a, c), sorted(b, d));
                Focus {
                    left: Span::Pixels(l),
                    top: Span::Pixels(t),
                    right: Span::Pixels(r),
                    bottom: Span::Pixels(bt),
                }
            }),
    ];
    let trim = (
        any::<u8>(),
        prop_oneof![
            Just(TrimColor::TopLeft),
            Just(TrimColor::BottomRight),
            any::<[u8; 3]>().prop_map(|[r, g, b]| TrimColor::Color(Color::rgb(r, g, b))),
        ],
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(threshold, color, equal_hor, equal_ver)| Trim {
            threshold,
            color,
            equal_hor,
            equal_ver,
        });
    let percent = -100..=100i8;
    let effect = prop_oneof![
        Just(Effect::Grayscale),
        sigma.clone().prop_map(Effect::Blur),
        (sigma.clone(), amount.clone())
            .prop_map(|(sigma, amount)| Effect::Sharpen(Sharpen { sigma, amount })),
        percent.clone().prop_map(Effect::Brightness),
        percent.clone().prop_map(Effect::Contrast),
        percent.clone().prop_map(Effect::Saturation),
        (percent.clone(), percent.clone(), percent).prop_map(|(r, g, b)| Effect::Rgb(r, g, b)),
        (0..=100u8).prop_map(Effect::Noise),
        (
            1..=MAX_CORNER_RADIUS,
            1..=MAX_CORNER_RADIUS,
            any::<[u8; 3]>(),
            any::<bool>()
        )
            .prop_map(
                |(a, b, [r, g, bl], transparent)| Effect::RoundCorner(RoundCorner {
                    a,
                    b,
                    color: Color::rgb(r, g, bl),
                    transparent,
                })
            ),
    ];
    let effects = prop::collection::vec(effect, 0..5);
    (
        (
            0..=2000u32,
            0..=2000u32,
            fit,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            h,
            v,
        ),
        (format, prop::option::of(1..=100u8), rotation, any::<bool>()),
        (
            prop::option::of(prop_oneof![sigma.clone(), Just(Hundredths(250))]),
            prop::option::of((sigma, amount)),
            any::<bool>(),
            prop::option::of(color),
        ),
        (prop::option::of(crop), prop::option::of(focus)),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(1..=u32::MAX),
        ),
        (
            prop::option::of(trim),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            effects.clone(),
            effects,
            prop::option::of((1..=MAX_PROPORTION.0).prop_map(Hundredths)),
            prop::option::of((0..=40u32, 0..=40u32, 0..=40u32, 1..=40u32).prop_map(
                |(left, top, right, bottom)| Padding {
                    left,
                    top,
                    right,
                    bottom,
                },
            )),
        ),
    )
        .prop_map(
            |(
                (width, height, fit, upscale, flip_h, flip_v, h_align, v_align),
                (format, quality, rotation, grayscale),
                (blur, sharpen, pad, background),
                (crop, focus),
                (progressive, max_bytes),
                (trim, smart, keep_icc, adaptive),
                (mut effects, final_effects, proportion, padding),
            )| Transform {
                proportion,
                // Around the padded box with `pad`, around the image without it (see
                // `Transform::padding`).
                padding,
                width,
                height,
                // With one side given, auto is a fit (see `Fit::Auto`).
                fit: match fit {
                    Fit::Auto | Fit::AutoDown if width == 0 || height == 0 => Fit::FitIn,
                    // Upscaled, the clamped fill is the fill (see `Fit::FillClamped`).
                    Fit::FillClamped if upscale => Fit::Fill,
                    fit => fit,
                },
                upscale,
                flip_h,
                flip_v,
                h_align,
                v_align,
                format,
                quality,
                rotation,
                grayscale,
                blur,
                sharpen: sharpen.map(|(sigma, amount)| Sharpen { sigma, amount }),
                pad,
                background,
                crop,
                focus,
                progressive,
                max_bytes,
                trim,
                smart,
                keep_icc,
                // Only a fit's box with both sides can turn (see `Transform::adaptive`).
                adaptive: adaptive
                    && matches!(fit, Fit::FitIn | Fit::Cover)
                    && width > 0
                    && height > 0,
                // The ordered effects start with one the fixed fields cannot hold (thumbor
                // puts a first grayscale, blur or sharpen there), and the final ones run
                // after something that pads (without it they are the same as the others).
                effects: {
                    if matches!(
                        effects.first(),
                        Some(Effect::Grayscale | Effect::Blur(_) | Effect::Sharpen(_))
                    ) {
                        effects.insert(0, Effect::Noise(0));
                    }
                    Effects::from_slice(&effects).unwrap()
                },
                final_effects: match pad || background.is_some() || padding.is_some() {
                    true => Effects::from_slice(&final_effects).unwrap(),
                    false => Effects::default(),
                },
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Every grammar that can write a transform reads it back unchanged: the grammars and the
    /// canonical (thumbor) form agree on what each option means.
    #[test]
    fn every_grammar_reads_back_what_it_writes(t in any_transform()) {
        let thumbor = ThumborPath::from_transform(&t, "a.jpg");
        // Crops thumbor cannot say are canonical-only (`filters:crop(…)`), refused in URLs.
        let tiny_focus = t.focus.is_some_and(|f| {
            [f.left, f.top, f.right, f.bottom]
                .iter()
                .all(|e| matches!(e, Span::Pixels(0 | 1)))
        });
        // So are trims thumbor cannot say (`filters:trim(…)`).
        let sayable_trim = t.trim.is_none_or(|x| thumbor::Trim::from_transform(x).is_some());
        if let Some(x) = t.trim {
            prop_assert_eq!(x.to_string().parse::<Trim>(), Ok(x));
        }
        // So is padding around the image rather than the box (`filters:padding(image)`).
        let sayable_padding = t.pad || t.padding.is_none();
        if t.crop.is_none_or(|c| thumbor::Crop::from_region(c).is_some())
            && !matches!(t.fit, Fit::Auto | Fit::AutoDown | Fit::FillClamped)
            && !tiny_focus
            && sayable_trim
            && sayable_padding
        {
            prop_assert_eq!(thumbor.to_transform(), Ok(t), "{}", thumbor.to_path());
        } else {
            prop_assert!(thumbor.to_transform().is_err(), "{}", thumbor.to_path());
        }
        if let Some(c) = t.crop {
            prop_assert_eq!(c.to_string().parse::<Crop>(), Ok(c));
        }
        for list in [t.effects, t.final_effects] {
            prop_assert_eq!(list.to_string().parse::<Effects>(), Ok(list));
        }
        if let Some(f) = t.focus {
            prop_assert_eq!(f.to_string().parse::<Focus>(), Ok(f));
        }
        if let Some(p) = ImgproxyPath::from_transform(&t, "a.jpg") {
            prop_assert_eq!(p.to_target().map(|x| x.transform), Ok(t), "{}", p.to_path());
        }
        if let Some(u) = ImagekitUrl::from_transform(&t, "a.jpg") {
            let text = u.to_path();
            let (path, query) = split(&text);
            let back = ImagekitUrl::parse(path, query).and_then(|u| u.to_target());
            prop_assert_eq!(back.map(|x| x.transform), Ok(t), "{}", text);
        }
        if let Some(u) = QueryUrl::from_transform(&t, "h", "a.jpg") {
            let text = u.to_path();
            let (path, query) = split(&text);
            let back = QueryUrl::parse(path, query).and_then(|u| u.to_target());
            prop_assert_eq!(back.map(|x| x.transform), Ok(t), "{}", text);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn accept_negotiation_is_total_and_honours_exclusions(
        accept in prop_oneof![any::<String>(), accept_text()],
    ) {
        for avif in [false, true] {
            let chosen = accept::negotiate(Some(&accept), avif);
            prop_assert!(matches!(
                chosen,
                OutputFormat::Compatible | OutputFormat::Fixed(Format::Webp)
            ) || (avif && chosen == OutputFormat::Fixed(Format::Avif)));
            let excluded = format!("{accept},image/webp;q=0,image/avif;q=0");
            prop_assert_eq!(
                accept::negotiate(Some(&excluded), avif),
                OutputFormat::Compatible
            );
            let listed = format!("image/webp,{accept}");
            if !accept.to_ascii_lowercase().contains("webp")
                && !accept.to_ascii_lowercase().contains("avif")
            {
                prop_assert_eq!(
                    accept::negotiate(Some(&listed), avif),
                    OutputFormat::Fixed(Format::Webp)
                );
            }
        }
    }

    #[test]
    fn thumbor_parser_is_total_and_round_trips(s in any_text()) {
        if let Ok(p) = ThumborPath::parse(&s) {
            prop_assert!(p.filters.len() <= thumbor::MAX_FILTERS);
            prop_assert_eq!(&ThumborPath::parse(&p.to_path()).unwrap(), &p);
            check_bounds(&p.to_target());
        }
    }

    #[test]
    fn imagor_names_are_total_and_never_escape_their_form(s in any_text(), webp in any::<bool>()) {
        let format = webp.then_some(OutputFormat::Fixed(Format::Webp));
        if let Some(name) = imagor_key::result_path(&s, format, webp) {
            prop_assert!(imagor_key::is_result_path(&name), "{name:?}");
            prop_assert!(name.len() <= imagor_key::MAX_RESULT_PATH_LEN);
        }
    }

    #[test]
    fn imgproxy_parser_is_total_and_round_trips(s in any_text()) {
        if let Ok(p) = ImgproxyPath::parse(&s) {
            prop_assert!(p.options.len() <= imgproxy::MAX_OPTIONS);
            prop_assert!(p.options.iter().all(|o| o.args.len() <= imgproxy::MAX_ARGS));
            let text = match &p.source {
                Source::Plain(t) | Source::Base64(t) | Source::Encrypted(t) => t,
            };
            prop_assert!(text.len() <= s.len());
            prop_assert_eq!(&ImgproxyPath::parse(&p.to_path()).unwrap(), &p);
            check_bounds(&p.to_target());
        }
    }

    #[test]
    fn imagekit_parser_is_total_and_round_trips(s in any_text()) {
        let (path, query) = split(&s);
        if let Ok(p) = ImagekitUrl::parse(path, query) {
            prop_assert!(p.steps.len() <= imagekit::MAX_STEPS);
            prop_assert!(p.steps.iter().map(Vec::len).sum::<usize>() <= imagekit::MAX_PARAMS);
            let again = p.to_path();
            let (path2, query2) = split(&again);
            let reparsed = ImagekitUrl::parse(path2, query2).unwrap();
            // Empty chained steps (`tr:w-1::`) may collapse; the transformation text may not.
            prop_assert_eq!(reparsed.transformation(), p.transformation());
            prop_assert_eq!(&reparsed.image, &p.image);
            check_bounds(&p.to_target());
        }
    }

    #[test]
    fn query_parser_is_total_and_round_trips(s in any_text()) {
        let (path, q) = split(&s);
        if let Ok(p) = QueryUrl::parse(path, q) {
            prop_assert!(p.params.len() <= query::MAX_PARAMS);
            let again = p.to_path();
            let (path2, q2) = split(&again);
            prop_assert_eq!(&QueryUrl::parse(path2, q2).unwrap(), &p);
            check_bounds(&p.to_target());
        }
    }

    #[test]
    fn router_answers_every_request_with_a_documented_status(
        prefix in prop_oneof![Just("/t/"), Just("/ip/"), Just("/ik/"), Just("/q/"), Just("/")],
        rest in any_text(),
        accept in prop::option::of(prop_oneof![any::<String>(), accept_text()]),
        secs in 0u64..4_000_000_000,
    ) {
        let path = format!("{prefix}{rest}");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        match router().decide("GET", &path, accept.as_deref(), now) {
            Decision::Pass => prop_assert_eq!(prefix, "/"),
            Decision::Reject(r) => {
                prop_assert!(
                    [400, 403, 404, 410, 414, 501].contains(&r.status),
                    "{} {}", r.status, r.message
                );
                prop_assert!(
                    !r.message.chars().any(char::is_control),
                    "the message echoes a control character: {:?}", r.message
                );
            }
            Decision::Render(r) => {
                let format = r.request.transform.format;
                prop_assert!(
                    !r.vary_accept
                        || matches!(format, OutputFormat::Compatible | OutputFormat::Fixed(Format::Webp)),
                    "negotiation chooses WebP or the compatible format, not {:?}", format
                );
                prop_assert!(
                    r.vary_accept || format != OutputFormat::Compatible,
                    "the compatible format only comes from negotiation"
                );
                prop_assert!(!r.request.key.is_empty());
                prop_assert!(!r.request.key.starts_with('/'));
                prop_assert!(!r.request.key.split('/').any(|s| s == ".."));
                prop_assert!(!r.request.key.chars().any(char::is_control));
            }
        }
    }
}

fn router() -> Router {
    Router::from_json(
        br#"{"routes":[
            {"prefix":"/t/","storage":"s","base_dir":"base","allow_unsafe":true,
             "result_keys":"imagor","auto_format":true},
            {"prefix":"/ip/","grammar":"imgproxy","storage":"s","base_dir":"base","allow_unsafe":true,
             "handles":{"b":"s"}},
            {"prefix":"/ik/","grammar":"imagekit","storage":"s","base_dir":"base","allow_unsafe":true},
            {"prefix":"/q/","grammar":"query","storage":"s","base_dir":"base","allow_unsafe":true,
             "auto_format":true}
        ]}"#,
    )
    .unwrap()
}

/// Inputs at the length limit built to hit each parser's worst case still return.
#[test]
fn pathological_inputs_at_the_length_limit_return() {
    let r = router();
    let now = SystemTime::UNIX_EPOCH;
    let n = MAX_URL_LEN / 2;
    for body in [
        format!("unsafe/filters:{}a/b.jpg", "(".repeat(n)),
        format!("unsafe/filters:a({})/b.jpg", "(".repeat(n)),
        format!("unsafe/filters:{}/b.jpg", "a():".repeat(n / 4)),
        format!("insecure/{}/plain/a.jpg", "a:".repeat(n)),
        format!("insecure/{}plain/a.jpg", "a:/".repeat(n / 3)),
        format!("insecure/{}.png", "QUFB/".repeat(n / 5)),
        format!("tr:{}/a.jpg", ":".repeat(n)),
        format!("tr:{}/a.jpg", ",".repeat(n)),
        format!("tr:{}/a.jpg", "e-a-".repeat(n / 4)),
        format!("h/a.jpg?{}", "&".repeat(n)),
        format!("h/a.jpg?{}", "w=1&".repeat(n / 4)),
        "%".repeat(n),
        "/".repeat(n),
    ] {
        for prefix in ["/t/", "/ip/", "/ik/", "/q/"] {
            let d = r.decide("GET", &format!("{prefix}{body}"), Some(&body), now);
            assert!(
                !matches!(d, Decision::Pass),
                "{prefix}{}",
                &body[..40.min(body.len())]
            );
        }
    }
}
