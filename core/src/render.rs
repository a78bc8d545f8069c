//! The render request the filter sends to the sidecar, and what both sides derive from it.
//!
//! The filter encodes it as the query string of [`RENDER_PATH`]; Envoy's gRPC-JSON transcoder
//! maps each query parameter onto the field of `pixmesh.v1.RenderRequest` with the same name
//! (proto/pixmesh/v1/images.proto), so the names below are that message's field names.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use crate::keys::{SafeChars, escape};
use crate::percent::{encode, is_unreserved};
use crate::thumbor::ThumborPath;
use crate::transform::{Fit, Format, HAlign, OutputFormat, Rotation, Transform, VAlign};
use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};

/// Paths under this prefix belong to the transcoder; clients may never call them directly.
pub const INTERNAL_PREFIX: &str = "/_pixmesh/";

/// The transcoder's REST path for the streaming `Render` RPC.
pub const RENDER_PATH: &str = "/_pixmesh/v1/render";

/// The gRPC path prefix of `pixmesh.v1.ImageService`. The transcoder rewrites [`RENDER_PATH`]
/// to it and Envoy routes it to the sidecar, so clients may never call it directly either: a raw
/// gRPC call would skip signature checks.
pub const GRPC_PREFIX: &str = "/pixmesh.v1.ImageService/";

/// Whether `path` is one clients must never reach: [`INTERNAL_PREFIX`] or [`GRPC_PREFIX`].
pub fn is_internal(path: &str) -> bool {
    path.starts_with(INTERNAL_PREFIX) || path.starts_with(GRPC_PREFIX)
}

/// A canonical request for one rendition of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderRequest {
    /// Named storage (sidecar configuration) that holds the source.
    pub storage: String,
    /// Object key inside that storage, already joined under the route's base dir.
    pub key: String,
    /// The version of the object to read ([`is_version_id`]); `None` reads the current one.
    pub version: Option<String>,
    /// What to do to it.
    pub transform: Transform,
    /// Digest of the request headers and cookies the route's renditions vary with
    /// ([`crate::cachekey`]); `None` when they vary with none.
    pub cache_key: Option<String>,
    /// The watermark composited onto the result: its image an object
    /// ([`WatermarkImage::Object`]) or, until the sidecar puts its configured one in place,
    /// the default ([`WatermarkImage::Default`]).
    pub watermark: Option<Watermark>,
    /// The rendition's name in result storage when it is not named after its canonical form:
    /// imagor's name for it ([`crate::imagor_key`]) on a route with `"result_keys": "imagor"`,
    /// so renditions stored by imagor are found. Not part of the canonical form (the rendition
    /// is the same), but part of what the filter vouches for.
    pub result_path: Option<String>,
}

/// Longest object version ID accepted, in bytes (S3 documents 1024).
pub const MAX_VERSION_ID_LEN: usize = 1024;

/// Whether `id` can be an object version ID: 1 to [`MAX_VERSION_ID_LEN`] visible ASCII
/// characters. S3's IDs are opaque URL-ready strings; what a server does not know is its 404.
pub fn is_version_id(id: &str) -> bool {
    (1..=MAX_VERSION_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

impl RenderRequest {
    /// The query string (without `?`) that the transcoder maps onto `pixmesh.v1.RenderRequest`.
    /// Default values are left out.
    pub fn to_query(&self) -> String {
        let mut q = String::new();
        self.fields(|name, value| {
            if !q.is_empty() {
                q.push('&');
            }
            let text = match value {
                Value::Text(t) => t,
                Value::Enum(name, _) => name.to_owned(),
            };
            let _ = write!(q, "{name}={}", encode(&text, is_unreserved));
        });
        q
    }

    /// The protobuf encoding of `pixmesh.v1.RenderRequest` (the filter's call mode sends it
    /// to the sidecar itself): the same fields as [`RenderRequest::to_query`], defaults left
    /// out, in the order of that method.
    pub fn to_proto(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.fields(|name, value| {
            let number = field_number(name);
            match value {
                Value::Enum(_, n) => {
                    varint(&mut out, u64::from(number) << 3);
                    varint(&mut out, u64::from(n));
                }
                Value::Text(text) => match PROTO_SCALARS.contains(&name) {
                    // Numbers and booleans go as varints; their text is their decimal form.
                    true => {
                        varint(&mut out, u64::from(number) << 3);
                        let n = match text.as_str() {
                            "true" => 1,
                            t => t.parse::<u64>().expect("a number field holds a number"),
                        };
                        varint(&mut out, n);
                    }
                    false => {
                        varint(&mut out, (u64::from(number) << 3) | 2);
                        varint(&mut out, text.len() as u64);
                        out.extend_from_slice(text.as_bytes());
                    }
                },
            }
        });
        out
    }

    /// Calls `field` with each field that differs from its default, by its proto name.
    fn fields(&self, mut field: impl FnMut(&'static str, Value)) {
        let t = &self.transform;
        let mut out = Fields(&mut field);
        out.text("storage", &self.storage);
        out.text("key", &self.key);
        if let Some(version) = &self.version {
            out.text("version_id", version);
        }
        if t.width > 0 {
            out.text("width", &t.width.to_string());
        }
        if t.height > 0 {
            out.text("height", &t.height.to_string());
        }
        match t.fit {
            Fit::Fill => {}
            Fit::FitIn => out.enumeration("fit", "FIT_FIT_IN", 2),
            Fit::Stretch => out.enumeration("fit", "FIT_STRETCH", 3),
            Fit::Cover => out.enumeration("fit", "FIT_COVER", 4),
            Fit::Auto => out.enumeration("fit", "FIT_AUTO", 5),
            Fit::FillClamped => out.enumeration("fit", "FIT_FILL_CLAMPED", 6),
            Fit::AutoDown => out.enumeration("fit", "FIT_AUTO_DOWN", 7),
        }
        for (on, name) in [
            (t.adaptive, "adaptive"),
            (t.upscale, "upscale"),
            (t.flip_h, "flip_h"),
            (t.flip_v, "flip_v"),
        ] {
            if on {
                out.text(name, "true");
            }
        }
        match t.h_align {
            HAlign::Center => {}
            HAlign::Left => out.enumeration("h_align", "H_ALIGN_LEFT", 1),
            HAlign::Right => out.enumeration("h_align", "H_ALIGN_RIGHT", 3),
        }
        match t.v_align {
            VAlign::Middle => {}
            VAlign::Top => out.enumeration("v_align", "V_ALIGN_TOP", 1),
            VAlign::Bottom => out.enumeration("v_align", "V_ALIGN_BOTTOM", 3),
        }
        match t.format {
            OutputFormat::Source => {}
            OutputFormat::Fixed(f) => {
                let (name, n) = match f {
                    Format::Jpeg => ("FORMAT_JPEG", 1),
                    Format::Png => ("FORMAT_PNG", 2),
                    Format::Webp => ("FORMAT_WEBP", 3),
                    Format::Gif => ("FORMAT_GIF", 4),
                    Format::Avif => ("FORMAT_AVIF", 6),
                };
                out.enumeration("format", name, n)
            }
            OutputFormat::Compatible => out.enumeration("format", "FORMAT_COMPATIBLE", 5),
        }
        if let Some(quality) = t.quality {
            out.text("quality", &quality.to_string());
        }
        if t.rotation != Rotation::None {
            out.text("rotate", &t.rotation.degrees().to_string());
        }
        if t.grayscale {
            out.text("grayscale", "true");
        }
        if let Some(sigma) = t.blur {
            out.text("blur_sigma_x100", &sigma.0.to_string());
        }
        if let Some(s) = t.sharpen {
            out.text("sharpen_sigma_x100", &s.sigma.0.to_string());
            out.text("sharpen_amount_x100", &s.amount.0.to_string());
        }
        if t.pad {
            out.text("pad", "true");
        }
        if let Some(c) = t.background {
            out.text("background_rgba", &c.to_rgba_u32().to_string());
        }
        if let Some(c) = t.crop {
            out.text("crop", &c.to_string());
        }
        if let Some(f) = t.focus {
            out.text("focus", &f.to_string());
        }
        match t.progressive {
            None => {}
            Some(true) => out.enumeration("progressive", "PROGRESSIVE_ON", 1),
            Some(false) => out.enumeration("progressive", "PROGRESSIVE_OFF", 2),
        }
        if let Some(max) = t.max_bytes {
            out.text("max_bytes", &max.to_string());
        }
        if let Some(trim) = t.trim {
            out.text("trim", &trim.to_string());
        }
        if t.smart {
            out.text("smart_crop", "true");
        }
        if t.keep_icc {
            out.text("keep_icc", "true");
        }
        if let Some(p) = t.padding {
            out.text("padding", &p.to_string());
        }
        if let Some(p) = t.proportion {
            out.text("proportion_x100", &p.0.to_string());
        }
        if !t.effects.is_empty() {
            out.text("effects", &t.effects.to_string());
        }
        if !t.final_effects.is_empty() {
            out.text("final_effects", &t.final_effects.to_string());
        }
        if let Some(key) = &self.cache_key {
            out.text("cache_key", key);
        }
        if let Some(name) = &self.result_path {
            out.text("result_path", name);
        }
        if let Some(w) = &self.watermark {
            match &w.image {
                WatermarkImage::Default => out.text("watermark_default", "true"),
                WatermarkImage::Object { storage, key } => {
                    out.text("watermark_storage", storage);
                    out.text("watermark_key", key);
                }
                // The router resolves paths; an unresolved one has no wire form and reads as
                // a missing object.
                WatermarkImage::Path(path) => out.text("watermark_key", path),
            }
            if w.x != Axis::Start(Offset::ZERO) {
                out.text("watermark_x", &w.x.to_string());
            }
            if w.y != Axis::Start(Offset::ZERO) {
                out.text("watermark_y", &w.y.to_string());
            }
            out.text("watermark_opacity", &w.opacity.to_string());
            if let Some(s) = w.width {
                out.text("watermark_width", &s.to_string());
            }
            if let Some(s) = w.height {
                out.text("watermark_height", &s.to_string());
            }
        }
    }

    /// One string per distinct rendition: `STORAGE/OPTIONS-/KEY`, the options written in the
    /// thumbor grammar, then `versionId=VERSION/` when a version is read (`/` and `%` in it
    /// percent-encoded) and `cache_key=DIGEST/` when the rendition varies with request headers
    /// or cookies ([`crate::cachekey`]), before the `-` segment that ends them. Equal transforms
    /// give equal strings whatever grammar the URL used; different versions of one object give
    /// different strings, hence different ETags and result keys. The format negotiated from
    /// `Accept` is part of the transform, so the WebP and the compatible rendition of one URL
    /// differ (`filters:format(compatible)` marks the latter).
    ///
    /// A watermark is the last filter, `watermark(STORAGE/KEY,…)` (see
    /// [`ThumborPath::push_watermark`]; a `/` in its key percent-encoded), so its storage and
    /// key are in the ETag and result key.
    ///
    /// The form is unambiguous: no option segment is `-` or holds a `/`, and a storage name has
    /// none, so the first `/-/` ends what selects the rendition and the rest is the key, whatever
    /// the key looks like (object `300x200/a.jpg` untransformed is `s/-/300x200/a.jpg`, object
    /// `a.jpg` at 300×200 `s/300x200/-/a.jpg`).
    pub fn canonical(&self) -> String {
        let mut path = ThumborPath::from_transform(&self.transform, "");
        if let Some(w) = &self.watermark {
            path.push_watermark(w);
        }
        let mut c = format!("{}/{}", self.storage, path.options());
        if let Some(version) = &self.version {
            let escaped = encode(version, |b| b != b'/' && b != b'%');
            let _ = write!(c, "versionId={escaped}/");
        }
        if let Some(key) = &self.cache_key {
            let _ = write!(c, "cache_key={key}/");
        }
        let _ = write!(c, "-/{}", self.key);
        c
    }
}

/// A field's value: text (numbers and booleans in their decimal and `true` forms), or an enum
/// value's name (the query) and number (protobuf).
enum Value {
    Text(String),
    Enum(&'static str, u32),
}

/// What [`RenderRequest::fields`] hands its fields to.
struct Fields<'f, F: FnMut(&'static str, Value)>(&'f mut F);

impl<F: FnMut(&'static str, Value)> Fields<'_, F> {
    fn text(&mut self, name: &'static str, value: &str) {
        (self.0)(name, Value::Text(value.to_owned()));
    }

    fn enumeration(&mut self, name: &'static str, symbol: &'static str, number: u32) {
        (self.0)(name, Value::Enum(symbol, number));
    }
}

/// Fields of `pixmesh.v1.RenderRequest` that are numbers or booleans (varints on the wire).
const PROTO_SCALARS: &[&str] = &[
    "width",
    "height",
    "upscale",
    "flip_h",
    "flip_v",
    "quality",
    "rotate",
    "grayscale",
    "blur_sigma_x100",
    "sharpen_sigma_x100",
    "sharpen_amount_x100",
    "pad",
    "background_rgba",
    "smart_crop",
    "keep_icc",
    "adaptive",
    "max_bytes",
    "watermark_default",
    "proportion_x100",
];

/// The field number of `pixmesh.v1.RenderRequest`'s field `name` (proto/pixmesh/v1/images.proto).
fn field_number(name: &str) -> u32 {
    match name {
        "storage" => 1,
        "key" => 2,
        "width" => 3,
        "height" => 4,
        "fit" => 5,
        "upscale" => 6,
        "flip_h" => 7,
        "flip_v" => 8,
        "h_align" => 9,
        "v_align" => 10,
        "format" => 11,
        "quality" => 12,
        "rotate" => 13,
        "grayscale" => 14,
        "blur_sigma_x100" => 15,
        "sharpen_sigma_x100" => 16,
        "sharpen_amount_x100" => 17,
        "pad" => 18,
        "background_rgba" => 19,
        "version_id" => 20,
        "cache_key" => 21,
        "result_path" => 22,
        "crop" => 30,
        "focus" => 31,
        "trim" => 32,
        "smart_crop" => 33,
        "keep_icc" => 34,
        "adaptive" => 35,
        "effects" => 36,
        "final_effects" => 37,
        "proportion_x100" => 38,
        "padding" => 39,
        "progressive" => 50,
        "max_bytes" => 51,
        "watermark_storage" => 60,
        "watermark_key" => 61,
        "watermark_default" => 62,
        "watermark_x" => 63,
        "watermark_y" => 64,
        "watermark_opacity" => 65,
        "watermark_width" => 66,
        "watermark_height" => 67,
        other => unreachable!("no field {other} in pixmesh.v1.RenderRequest"),
    }
}

/// Appends `n` as a protobuf varint.
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Strong ETag of a rendition: the canonical request plus the source object's own ETag, so a
/// changed source changes the ETag.
pub fn etag(canonical: &str, source_etag: &str) -> String {
    let mut h = Sha256::new();
    h.update(canonical.as_bytes());
    h.update([0]);
    h.update(source_etag.as_bytes());
    let digest = h.finalize();
    let mut out = String::from("\"");
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out.push('"');
    out
}

/// The ETag of a rendition served to a request whose cache key is `cache_key`
/// ([`crate::cachekey`]): the rendition's own `etag` when it has none, else a strong ETag of
/// both, so each value of the headers and cookies a route varies on has its own ETag while
/// the rendition itself (its pixels, its result-storage object) is shared.
pub fn varied_etag(etag: &str, cache_key: Option<&str>) -> String {
    match cache_key {
        None => etag.to_owned(),
        Some(key) => self::etag(etag, key),
    }
}

/// Result-storage key of a rendition: the canonical request, escaped like imagor's result keys,
/// under `base_dir`.
pub fn result_key(base_dir: &str, canonical: &str, safe: &SafeChars) -> String {
    crate::keys::join(base_dir, &escape(canonical, safe))
}

/// Result-storage key of a rendition in imagor's digest path style
/// (`IMAGOR_RESULT_STORAGE_PATH_STYLE=digest`): the SHA-1 of the canonical request in hex, split
/// as imagor splits it, `ab/cd/ef01…`, under `base_dir`. Keys stay short and evenly spread
/// whatever the request looks like, but no longer tell what they hold.
pub fn digest_result_key(base_dir: &str, canonical: &str) -> String {
    let digest = sha1::Sha1::digest(canonical.as_bytes());
    let mut hex = String::with_capacity(40);
    for b in digest {
        let _ = write!(hex, "{b:02x}");
    }
    crate::keys::join(
        base_dir,
        &format!("{}/{}/{}", &hex[..2], &hex[2..4], &hex[4..]),
    )
}

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, `*` matches).
pub fn if_none_match(header: &str, etag: &str) -> bool {
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_owned();
    let want = bare(etag);
    header
        .split(',')
        .any(|t| t.trim() == "*" || bare(t) == want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{
        Color, Crop, CropAt, Fraction, Hundredths, Padding, Sharpen, Span, Trim, TrimColor,
    };

    fn request(t: Transform) -> RenderRequest {
        RenderRequest {
            storage: "photos".into(),
            key: "a b/ü+.jpg".into(),
            version: None,
            transform: t,
            cache_key: None,
            watermark: None,
            result_path: None,
        }
    }

    fn version(v: &str) -> RenderRequest {
        RenderRequest {
            version: Some(v.into()),
            ..request(Transform::default())
        }
    }

    #[test]
    fn a_cache_key_travels_in_the_query_and_tells_renditions_apart() {
        let keyed = |k: &str| RenderRequest {
            cache_key: Some(k.repeat(16)),
            ..request(Transform::default())
        };
        assert_eq!(
            keyed("0a").to_query(),
            format!(
                "storage=photos&key=a%20b%2F%C3%BC%2B.jpg&cache_key={}",
                "0a".repeat(16)
            )
        );
        let (a, b) = (keyed("0a").canonical(), keyed("0b").canonical());
        assert_eq!(
            a,
            format!("photos/cache_key={}/-/a b/ü+.jpg", "0a".repeat(16))
        );
        let plain = request(Transform::default()).canonical();
        assert!(a != b && a != plain && b != plain);
        let safe = SafeChars::default();
        assert_ne!(result_key("r", &a, &safe), result_key("r", &b, &safe));
        assert_ne!(result_key("r", &a, &safe), result_key("r", &plain, &safe));
        assert_ne!(etag(&a, "\"same\""), etag(&b, "\"same\""));
        assert_ne!(etag(&a, "\"same\""), etag(&plain, "\"same\""));
    }

    #[test]
    fn varied_etags_differ_per_cache_key_and_from_the_rendition() {
        let tag = etag("photos/-/a.jpg", "\"src\"");
        assert_eq!(varied_etag(&tag, None), tag);
        let (a, b) = (varied_etag(&tag, Some("0a")), varied_etag(&tag, Some("0b")));
        assert!(a != b && a != tag && b != tag);
        assert!(a.starts_with('"') && a.ends_with('"'), "a strong ETag: {a}");
        assert_eq!(a, varied_etag(&tag, Some("0a")), "stable");
    }

    #[test]
    fn a_version_travels_in_the_query_and_tells_renditions_apart() {
        assert_eq!(
            version("3HL4kqtJ+lcpX/ro.D_-").to_query(),
            "storage=photos&key=a%20b%2F%C3%BC%2B.jpg&version_id=3HL4kqtJ%2BlcpX%2Fro.D_-"
        );
        let (v1, v2) = (version("v1").canonical(), version("v2").canonical());
        assert_eq!(v1, "photos/versionId=v1/-/a b/ü+.jpg");
        let current = request(Transform::default()).canonical();
        assert!(v1 != v2 && v1 != current && v2 != current);
        let safe = SafeChars::default();
        assert_eq!(
            result_key("r", &v1, &safe),
            "r/photos/versionId%3Dv1/-/a+b/%C3%BC%2B.jpg"
        );
        assert_ne!(result_key("r", &v1, &safe), result_key("r", &v2, &safe));
        assert_ne!(etag(&v1, "\"same\""), etag(&v2, "\"same\""));
    }

    #[test]
    fn version_ids_are_visible_ascii_of_bounded_length() {
        for good in [
            "v1",
            "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
            "null",
        ] {
            assert!(is_version_id(good), "{good}");
        }
        let long = "a".repeat(MAX_VERSION_ID_LEN + 1);
        for bad in ["", "a b", "a\nb", "ü", long.as_str()] {
            assert!(!is_version_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn query_carries_only_what_differs_from_defaults() {
        assert_eq!(
            request(Transform::default()).to_query(),
            "storage=photos&key=a%20b%2F%C3%BC%2B.jpg"
        );
        let t = Transform {
            width: 300,
            height: 200,
            fit: Fit::FitIn,
            adaptive: false,
            padding: None,
            upscale: true,
            flip_h: true,
            flip_v: true,
            h_align: HAlign::Left,
            v_align: VAlign::Bottom,
            format: OutputFormat::Fixed(Format::Webp),
            quality: Some(80),
            rotation: Rotation::Cw270,
            grayscale: true,
            blur: Some(Hundredths(250)),
            sharpen: Some(Sharpen {
                sigma: Hundredths(50),
                amount: Hundredths(150),
            }),
            pad: true,
            background: Some(Color::rgb(255, 0, 0)),
            crop: Some(Crop {
                width: Span::Pixels(100),
                height: Span::Fraction(Fraction(5000)),
                at: CropAt::Anchor(HAlign::Right, VAlign::Top),
            }),
            focus: None,
            progressive: Some(true),
            max_bytes: Some(20_000),
            trim: None,
            smart: false,
            keep_icc: false,
            proportion: None,
            effects: "brightness(10):grayscale()".parse().unwrap(),
            final_effects: "round_corner(4|2,0,0,0)".parse().unwrap(),
        };
        assert_eq!(
            request(t).to_query(),
            "storage=photos&key=a%20b%2F%C3%BC%2B.jpg&width=300&height=200&fit=FIT_FIT_IN\
             &upscale=true&flip_h=true&flip_v=true&h_align=H_ALIGN_LEFT&v_align=V_ALIGN_BOTTOM\
             &format=FORMAT_WEBP&quality=80&rotate=270&grayscale=true&blur_sigma_x100=250\
             &sharpen_sigma_x100=50&sharpen_amount_x100=150&pad=true&background_rgba=4278190335\
             &crop=100%2C0.5%2Cright-top&progressive=PROGRESSIVE_ON&max_bytes=20000\
             &effects=brightness%2810%29%3Agrayscale%28%29\
             &final_effects=round_corner%284%7C2%2C0%2C0%2C0%29"
        );
        assert_eq!(
            request(t).canonical(),
            "photos/fit-in/-300x-200/left/bottom/filters:crop(100,0.5,right-top):format(webp)\
             :quality(80):upscale():rotate(90):grayscale():blur(5):sharpen(1.5,0.5,true)\
             :brightness(10):grayscale():fill(ff0000):round_corner(4|2,0,0,0)\
             :progressive(true):max_bytes(20000)/-/a b/ü+.jpg"
        );
        let offset = Transform {
            crop: Some(Crop {
                width: Span::Pixels(100),
                height: Span::Pixels(50),
                at: CropAt::Offset(Span::Pixels(10), Span::Pixels(20)),
            }),
            ..Transform::default()
        };
        assert_eq!(
            request(offset).canonical(),
            "photos/10x20:110x70/-/a b/ü+.jpg",
            "a crop thumbor can say is written its way"
        );
        // Padding around the image (imgproxy's `pd`, no `pad`): its own field and its own
        // canonical form, apart from padding around the box.
        let around = Transform {
            width: 300,
            height: 200,
            fit: Fit::FitIn,
            padding: Some(Padding {
                left: 4,
                top: 1,
                right: 2,
                bottom: 3,
            }),
            ..Transform::default()
        };
        assert_eq!(
            request(around).to_query(),
            "storage=photos&key=a%20b%2F%C3%BC%2B.jpg&width=300&height=200&fit=FIT_FIT_IN\
             &padding=4%2C1%2C2%2C3"
        );
        assert_eq!(
            request(around).canonical(),
            "photos/fit-in/300x200/4x1:2x3/filters:padding(image)/-/a b/ü+.jpg"
        );
        assert_eq!(
            request(Transform {
                pad: true,
                ..around
            })
            .canonical(),
            "photos/fit-in/300x200/4x1:2x3/filters:fill(transparent)/-/a b/ü+.jpg"
        );
    }

    #[test]
    fn canonical_form_and_result_key() {
        let t = Transform {
            width: 300,
            fit: Fit::FitIn,
            format: OutputFormat::Fixed(Format::Webp),
            quality: Some(80),
            ..Transform::default()
        };
        let c = request(t).canonical();
        assert_eq!(
            c,
            "photos/fit-in/300x/filters:format(webp):quality(80)/-/a b/ü+.jpg"
        );
        assert_eq!(
            result_key("results", &c, &SafeChars::default()),
            "results/photos/fit-in/300x/filters%3Aformat(webp)%3Aquality(80)/-/a+b/%C3%BC%2B.jpg"
        );
        assert_eq!(
            request(Transform::default()).canonical(),
            "photos/-/a b/ü+.jpg"
        );
    }

    #[test]
    fn canonical_forms_never_read_a_key_as_options_or_options_as_a_key() {
        let plain = |key: &str| RenderRequest {
            key: key.into(),
            ..request(Transform::default())
        };
        let sized = |key: &str| RenderRequest {
            key: key.into(),
            ..request(Transform {
                width: 300,
                height: 200,
                ..Transform::default()
            })
        };
        let versioned = |key: &str, v: &str| RenderRequest {
            version: Some(v.into()),
            ..plain(key)
        };
        let keyed = |key: &str| RenderRequest {
            cache_key: Some("0a".repeat(16)),
            ..plain(key)
        };
        let digest = "0a".repeat(16);
        let forms = [
            // Once `STORAGE/OPTIONS/KEY`: both were photos/300x200/cat.jpg.
            plain("300x200/cat.jpg").canonical(),
            sized("cat.jpg").canonical(),
            // Once `…/KEY?versionId=V` and `…/KEY#cache_key=D`.
            plain("cat.jpg?versionId=v1").canonical(),
            versioned("cat.jpg", "v1").canonical(),
            plain(&format!("cat.jpg#cache_key={digest}")).canonical(),
            keyed("cat.jpg").canonical(),
            // A key that looks like the end of the options.
            plain("-/cat.jpg").canonical(),
            plain("versionId=v1/-/cat.jpg").canonical(),
            versioned("cat.jpg", "v1/-/x").canonical(),
        ];
        for (i, a) in forms.iter().enumerate() {
            for b in &forms[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(forms[0], "photos/-/300x200/cat.jpg");
        assert_eq!(forms[1], "photos/300x200/filters:no_upscale()/-/cat.jpg");
        assert_eq!(forms[8], "photos/versionId=v1%2F-%2Fx/-/cat.jpg");
    }

    #[test]
    fn digest_result_keys_are_the_sha1_of_the_canonical_request() {
        // `printf photos/a.jpg | sha1sum` = 441d0513b2eee46ea9b5c481500fcb6244144358
        let key = digest_result_key("results", "photos/a.jpg");
        assert_eq!(key, "results/44/1d/0513b2eee46ea9b5c481500fcb6244144358");
        assert_eq!(
            digest_result_key("", "photos/a.jpg"),
            "44/1d/0513b2eee46ea9b5c481500fcb6244144358"
        );
        assert_ne!(key, digest_result_key("results", "photos/b.jpg"));
        let c = request(Transform {
            width: 300,
            ..Transform::default()
        })
        .canonical();
        let key = digest_result_key("r/", &c);
        let (dir, rest) = key.split_at(2);
        assert_eq!(dir, "r/");
        assert!(rest.len() == 42 && rest.as_bytes()[2] == b'/' && rest.as_bytes()[5] == b'/');
    }

    #[test]
    fn every_output_format_has_its_own_query_value_canonical_form_and_etag() {
        let formats = [
            OutputFormat::Source,
            OutputFormat::Fixed(Format::Jpeg),
            OutputFormat::Fixed(Format::Png),
            OutputFormat::Fixed(Format::Webp),
            OutputFormat::Fixed(Format::Gif),
            OutputFormat::Compatible,
            OutputFormat::Fixed(Format::Avif),
        ];
        let renditions: Vec<(String, String, String)> = formats
            .iter()
            .map(|&format| {
                let r = request(Transform {
                    width: 300,
                    format,
                    ..Transform::default()
                });
                let canonical = r.canonical();
                (r.to_query(), etag(&canonical, "\"src\""), canonical)
            })
            .collect();
        for (i, a) in renditions.iter().enumerate() {
            for b in &renditions[i + 1..] {
                assert_ne!(a.0, b.0);
                assert_ne!(a.1, b.1);
                assert_ne!(a.2, b.2);
            }
        }
        assert!(renditions[4].0.ends_with("&format=FORMAT_GIF"));
        assert!(renditions[5].0.ends_with("&format=FORMAT_COMPATIBLE"));
        assert!(renditions[6].0.ends_with("&format=FORMAT_AVIF"));
        assert_eq!(
            renditions[6].2,
            "photos/300x/filters:format(avif):no_upscale()/-/a b/ü+.jpg"
        );
        assert_eq!(
            renditions[5].2,
            "photos/300x/filters:format(compatible):no_upscale()/-/a b/ü+.jpg"
        );
    }

    /// The query and the canonical form of each transform, asserting they all differ.
    fn distinct_forms(variants: &[Transform]) -> Vec<(String, String)> {
        let forms: Vec<(String, String)> = variants
            .iter()
            .map(|&t| (request(t).to_query(), request(t).canonical()))
            .collect();
        for (i, a) in forms.iter().enumerate() {
            for b in &forms[i + 1..] {
                assert_ne!(a.0, b.0);
                assert_ne!(a.1, b.1);
            }
        }
        forms
    }

    #[test]
    fn every_fit_is_its_own_rendition() {
        let base = Transform {
            width: 300,
            height: 200,
            ..Transform::default()
        };
        let fits = [
            Fit::Fill,
            Fit::FitIn,
            Fit::Stretch,
            Fit::Cover,
            Fit::Auto,
            Fit::FillClamped,
            Fit::AutoDown,
        ];
        let forms = distinct_forms(&fits.map(|fit| Transform { fit, ..base }));
        assert!(
            forms[5].0.contains("&fit=FIT_FILL_CLAMPED"),
            "{}",
            forms[5].0
        );
        assert_eq!(
            forms[5].1,
            "photos/300x200/filters:fit(fill-clamped):no_upscale()/-/a b/ü+.jpg"
        );
        assert!(forms[6].0.contains("&fit=FIT_AUTO_DOWN"), "{}", forms[6].0);
    }

    #[test]
    fn trim_smart_crop_and_keep_icc_are_part_of_the_rendition() {
        let trim = |threshold, color| Trim {
            threshold,
            color,
            equal_hor: false,
            equal_ver: false,
        };
        let base = Transform {
            width: 300,
            height: 200,
            ..Transform::default()
        };
        let variants = [
            base,
            Transform {
                trim: Some(trim(0, TrimColor::TopLeft)),
                ..base
            },
            Transform {
                trim: Some(trim(10, TrimColor::TopLeft)),
                ..base
            },
            Transform {
                trim: Some(trim(10, TrimColor::BottomRight)),
                ..base
            },
            Transform {
                trim: Some(Trim {
                    equal_ver: true,
                    ..trim(10, TrimColor::Color(Color::rgb(1, 2, 3)))
                }),
                ..base
            },
            Transform {
                smart: true,
                ..base
            },
            Transform {
                keep_icc: true,
                ..base
            },
        ];
        let forms = distinct_forms(&variants);
        assert!(
            forms[2].0.ends_with("&trim=10%2Ctop-left"),
            "{}",
            forms[2].0
        );
        assert!(forms[4].0.ends_with("&trim=10%2C010203%2Cequal-ver"));
        assert!(forms[5].0.ends_with("&smart_crop=true"));
        assert!(forms[6].0.ends_with("&keep_icc=true"));
        assert_eq!(
            forms[3].1,
            "photos/trim:bottom-right:10/300x200/filters:no_upscale()/-/a b/ü+.jpg"
        );
        assert_eq!(
            forms[4].1,
            "photos/300x200/filters:trim(10,010203,equal-ver):no_upscale()/-/a b/ü+.jpg"
        );
        assert_eq!(
            forms[5].1,
            "photos/300x200/smart/filters:no_upscale()/-/a b/ü+.jpg"
        );
        assert_eq!(
            forms[6].1,
            "photos/300x200/filters:no_upscale():keep_icc()/-/a b/ü+.jpg"
        );
    }

    #[test]
    fn encoder_settings_are_part_of_the_rendition() {
        let base = Transform {
            format: OutputFormat::Fixed(Format::Jpeg),
            ..Transform::default()
        };
        let variants = [
            base,
            Transform {
                progressive: Some(true),
                ..base
            },
            Transform {
                progressive: Some(false),
                ..base
            },
            Transform {
                max_bytes: Some(10_000),
                ..base
            },
            Transform {
                max_bytes: Some(10_001),
                ..base
            },
        ];
        let forms = distinct_forms(&variants);
        assert!(forms[2].0.ends_with("&progressive=PROGRESSIVE_OFF"));
        assert!(forms[2].1.contains(":progressive(false)/"));
        assert!(forms[3].0.ends_with("&max_bytes=10000"));
    }

    #[test]
    fn etag_depends_on_request_and_source() {
        let a = etag("photos/a.jpg", "\"abc\"");
        assert_eq!(a.len(), 34);
        assert!(a.starts_with('"') && a.ends_with('"'));
        assert_eq!(a, etag("photos/a.jpg", "\"abc\""));
        assert_ne!(a, etag("photos/a.jpg", "\"abd\""));
        assert_ne!(a, etag("photos/b.jpg", "\"abc\""));
    }

    #[test]
    fn a_watermark_travels_in_the_query_and_its_key_tells_renditions_apart() {
        use crate::transform::{Fraction, Span};
        use crate::watermark::{Axis, Offset, Watermark, WatermarkImage};
        let marked = |key: &str| {
            let mut w = Watermark::new(WatermarkImage::Object {
                storage: "s3".into(),
                key: key.into(),
            });
            w.x = Axis::End(Offset::Pixels(10));
            w.y = Axis::Repeat(4);
            w.opacity = Fraction(5000);
            w.width = Some(Span::Fraction(Fraction(2500)));
            RenderRequest {
                watermark: Some(w),
                ..request(Transform::default())
            }
        };
        assert_eq!(
            marked("wm/a b.png").to_query(),
            "storage=photos&key=a%20b%2F%C3%BC%2B.jpg&watermark_storage=s3\
             &watermark_key=wm%2Fa%20b.png&watermark_x=end%2B10&watermark_y=repeat%2B4\
             &watermark_opacity=0.5&watermark_width=0.25"
        );
        let (a, b) = (
            marked("wm/a.png").canonical(),
            marked("wm/b.png").canonical(),
        );
        assert_eq!(
            a,
            "photos/filters:watermark(s3/wm%2Fa.png,-10,repeat+4,50,25)/-/a b/ü+.jpg"
        );
        let plain = request(Transform::default()).canonical();
        assert!(a != b && a != plain);
        assert_ne!(etag(&a, "\"same\""), etag(&b, "\"same\""));
        let safe = SafeChars::default();
        assert_ne!(result_key("r", &a, &safe), result_key("r", &b, &safe));
        let default = RenderRequest {
            watermark: Some(Watermark::new(WatermarkImage::Default)),
            ..request(Transform::default())
        };
        assert!(
            default
                .to_query()
                .ends_with("&watermark_default=true&watermark_opacity=1.0")
        );
    }

    #[test]
    fn if_none_match_semantics() {
        assert!(if_none_match("\"x\"", "\"x\""));
        assert!(if_none_match("\"a\", W/\"x\"", "\"x\""));
        assert!(if_none_match("*", "\"x\""));
        assert!(!if_none_match("\"y\"", "\"x\""));
        assert!(!if_none_match("", "\"x\""));
    }
}
