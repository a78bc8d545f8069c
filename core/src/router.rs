//! The filter's per-request decision: pass the request on untouched, rewrite it into a render
//! request for the sidecar, or answer it at once with an error.
//!
//! Every grammar goes through the same steps, so statuses mean the same everywhere:
//!
//! | status | when |
//! |---|---|
//! | 400 | the URL does not parse, names an unknown option, or its image path is unsafe (`..`, control characters) |
//! | 403 | unsigned where the route requires signatures, signed where it has no keys, or a wrong signature |
//! | 404 | internal paths; a query-style storage handle the route does not list |
//! | 405 / 414 | not GET or HEAD / URL longer than [`MAX_URL_LEN`] |
//! | 410 | the URL's expiry (imagor `expire`, imgproxy `exp`, ImageKit `ik-t`, query `exp`) has passed |
//! | 501 | the URL asks for something the pipeline cannot do yet; the message names it |
//!
//! These are the statuses of a route with `"statuses": "pixmesh"`; by default a route answers
//! as its grammar's peer does where they differ (imgproxy: 404 `Invalid URL` for 400 and 410,
//! see [`Statuses`]).

use std::time::SystemTime;

use crate::accept;
use crate::cachekey::CacheKey;
use crate::config::{ConfigError, FilterConfig, Grammar, ResultKeys, RouteConfig, Statuses};
use crate::grammar::{
    FormatChoice, GrammarError, Target, parse_unix_seconds, query_param, query_without, with_query,
};
use crate::imagekit::ImagekitUrl;
use crate::imgproxy::{ImgproxyPath, is_signature};
use crate::keys;
use crate::link;
use crate::normalisation::signed_forms;
use crate::query::{QueryUrl, SIGNATURE_PARAM};
use crate::render::{RENDER_PATH, RenderRequest, is_internal};
use crate::sign::{ImagekitSigner, ImgproxySigner, QuerySigner, ThumborSigner};
use crate::thumbor::ThumborPath;
use crate::watermark::WatermarkImage;

/// Longest request path handled, in bytes.
pub const MAX_URL_LEN: usize = 8 * 1024;

/// ImageKit's signature and expiry query parameters.
const IK_SIGNATURE: &str = "ik-s";
const IK_EXPIRY: &str = "ik-t";

/// What the filter does with a request.
// One per request, consumed at once: boxing `Render` would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not an image route: leave the request alone.
    Pass,
    /// An image request: rewrite `:path` and add the `Link` header to the response.
    Render(Render),
    /// Answer now with this status and plain-text message.
    Reject(Rejection),
}

/// A request rewritten for the transcoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Render {
    /// New `:path`: [`RENDER_PATH`] with the render request as its query.
    pub upstream_path: String,
    /// `Link` header value for the response, when the route has a canonical base URL.
    pub link: Option<String>,
    /// The output format was chosen from the client's `Accept` header: every response to this
    /// request, 304s and errors included, must carry `Vary: Accept`.
    pub vary_accept: bool,
    /// `Vary` value for every response to this request (304s and errors included): the request
    /// headers (and `cookie`) the route's renditions vary with ([`crate::cachekey`]).
    pub vary: Option<String>,
    /// The canonical request itself.
    pub request: RenderRequest,
    /// Filters of the URL skipped because pixmesh does not know them (thumbor and imagor skip
    /// them too; a route with `strict_filters` refuses them instead): for the filter's log.
    pub skipped: Vec<String>,
}

/// Request header (gRPC metadata) with which the filter tells the sidecar the grammar of the
/// route a render request came by ([`Grammar::name`]), for its log line only: it selects
/// nothing, so it is outside the vouched request.
pub const GRAMMAR_HEADER: &str = "x-pixmesh-grammar";

/// An error answer. `message` is public: it never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// Short plain-text body.
    pub message: String,
}

fn rejection(status: u16, message: impl Into<String>) -> Rejection {
    Rejection {
        status,
        message: message.into(),
    }
}

fn reject(status: u16, message: impl Into<String>) -> Decision {
    Decision::Reject(rejection(status, message))
}

impl From<GrammarError> for Rejection {
    fn from(e: GrammarError) -> Self {
        match e {
            GrammarError::Invalid(m) => rejection(400, m),
            GrammarError::Unsupported(_) => rejection(501, e.to_string()),
        }
    }
}

/// Why [`Router::sign`] could not sign a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// No route's prefix matches the URL.
    #[error("no image route matches {0:?}")]
    NoRoute(String),
    /// The route has no signing key.
    #[error("route {0:?} has no signing key")]
    NoKey(String),
    /// The URL is not in the grammar's unsigned form.
    #[error("{0}")]
    NotUnsigned(String),
}

/// A route's signature checker, by grammar.
enum Signer {
    Thumbor(ThumborSigner),
    Imgproxy(ImgproxySigner),
    Imagekit(ImagekitSigner),
    Query(QuerySigner),
}

struct Route {
    cfg: RouteConfig,
    signer: Option<Signer>,
    cache_key: CacheKey,
}

/// The validated routing table, built once per configuration.
pub struct Router {
    /// Longest prefix first.
    routes: Vec<Route>,
}

impl Router {
    /// Builds the table from a validated config.
    pub fn new(cfg: FilterConfig) -> Self {
        let mut routes: Vec<Route> = cfg
            .routes
            .into_iter()
            .map(|cfg| {
                let secret = cfg.secret.as_ref().map(|s| s.expose().as_bytes().to_vec());
                let signer = match cfg.grammar {
                    Grammar::Thumbor => secret.map(|s| {
                        Signer::Thumbor(ThumborSigner::new(
                            s,
                            cfg.signature_hash,
                            cfg.signature_length,
                        ))
                    }),
                    Grammar::Imgproxy => cfg.imgproxy_signer().map(Signer::Imgproxy),
                    Grammar::Imagekit => secret.map(|s| Signer::Imagekit(ImagekitSigner::new(s))),
                    Grammar::Query => secret.map(|s| Signer::Query(QuerySigner::new(s))),
                };
                let cache_key = CacheKey::new(&cfg.cache_key_headers, &cfg.cache_key_cookies);
                Route {
                    cfg,
                    signer,
                    cache_key,
                }
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.cfg.prefix.len()));
        Router { routes }
    }

    /// Parses and validates JSON configuration into a router.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        FilterConfig::from_json(bytes).map(Router::new)
    }

    fn route(&self, path: &str) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| path.starts_with(r.cfg.prefix.as_str()))
    }

    /// The grammar of the route `path` (with or without its query) falls under, if any (the
    /// filter's metrics, and [`GRAMMAR_HEADER`] for the sidecar's log line).
    pub fn grammar(&self, path: &str) -> Option<Grammar> {
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        self.route(path).map(|r| r.cfg.grammar)
    }

    /// Decides what to do with a request of `method` for `path` (the raw `:path`, with query),
    /// sent with `accept` (its `Accept` header lines joined with `,`, `None` without one: see
    /// [`crate::accept`]) and received at `now` (for URL expiry).
    pub fn decide(
        &self,
        method: &str,
        path: &str,
        accept: Option<&str>,
        now: SystemTime,
    ) -> Decision {
        self.decide_with(method, path, accept, &[], now)
    }

    /// [`Router::decide`] for a request with all its header lines (`(name, value)`, names in
    /// any case): `Accept` is read from them, and the request headers and cookies a route's
    /// renditions vary with ([`crate::cachekey`]).
    pub fn decide_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(String, String)],
        now: SystemTime,
    ) -> Decision {
        let accept: Vec<&str> = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("accept"))
            .map(|(_, value)| value.as_str())
            .collect();
        let accept = (!accept.is_empty()).then(|| accept.join(","));
        self.decide_with(method, path, accept.as_deref(), headers, now)
    }

    fn decide_with(
        &self,
        method: &str,
        path: &str,
        accept: Option<&str>,
        headers: &[(String, String)],
        now: SystemTime,
    ) -> Decision {
        if is_internal(path) {
            return reject(404, "not found");
        }
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let Some(route) = self.route(path) else {
            return Decision::Pass;
        };
        if method != "GET" && method != "HEAD" {
            return reject(405, "only GET and HEAD are allowed");
        }
        if path.len() + query.len() > MAX_URL_LEN {
            return reject(414, "URL too long");
        }
        let rest = &path[route.cfg.prefix.len()..];
        let parsed = match route.cfg.grammar {
            Grammar::Thumbor => route.thumbor(rest),
            Grammar::Imgproxy => route.imgproxy(rest).map(Parsed::from),
            Grammar::Imagekit => route.imagekit(rest, query).map(Parsed::from),
            Grammar::Query => route.query(rest, query).map(Parsed::from),
        };
        let rendered = parsed.and_then(|p| {
            let mut r = route.render(p.target, p.imagor_path.as_deref(), accept, headers, now)?;
            r.skipped = p.skipped;
            Ok(r)
        });
        match rendered {
            Ok(r) => Decision::Render(r),
            Err(r) if route.cfg.statuses == Statuses::Pixmesh => Decision::Reject(r),
            Err(r) => Decision::Reject(route.as_peer_refuses(r, rest)),
        }
    }

    /// Signs `url`, an unsigned URL of a configured route in that route's grammar (thumbor
    /// `unsafe/…`, imgproxy `insecure/…`, ImageKit or query URLs without `ik-s`/`sig`), with the
    /// route's key: the URL a client may then request. Expiry stays whatever the URL says
    /// (`filters:expire(…)`, `exp:…`, `ik-t=…`, `exp=…`).
    /// An absolute `http(s)://HOST/…` URL keeps its origin.
    pub fn sign(&self, url: &str) -> Result<String, SignError> {
        let (origin, url) = split_origin(url);
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let route = self
            .route(path)
            .ok_or_else(|| SignError::NoRoute(path.to_owned()))?;
        let prefix = route.cfg.prefix.as_str();
        let rest = &path[prefix.len()..];
        let signer = route
            .signer
            .as_ref()
            .ok_or_else(|| SignError::NoKey(prefix.to_owned()))?;
        let not_unsigned = |form: &str| SignError::NotUnsigned(format!("expected {prefix}{form}"));
        let signed = match signer {
            Signer::Thumbor(s) => {
                let signed = rest
                    .strip_prefix("unsafe/")
                    .ok_or_else(|| not_unsigned("unsafe/…"))?;
                with_query(&format!("{prefix}{}/{signed}", s.sign(signed)), query)
            }
            Signer::Imgproxy(s) => {
                let signed = rest
                    .strip_prefix("insecure")
                    .or_else(|| rest.strip_prefix('_'))
                    .filter(|r| r.starts_with('/'))
                    .ok_or_else(|| not_unsigned("insecure/…"))?;
                with_query(&format!("{prefix}{}{signed}", s.sign(signed)), query)
            }
            Signer::Imagekit(s) => {
                if query_param(query, IK_SIGNATURE).ok().flatten().is_some() {
                    return Err(not_unsigned("… without ik-s"));
                }
                let expiry = query_param(query, IK_EXPIRY)
                    .map_err(|e| SignError::NotUnsigned(e.to_string()))?;
                let unsigned = with_query(rest, &query_without(query, &[IK_SIGNATURE, IK_EXPIRY]));
                let sig = s.sign(&unsigned, expiry);
                let sep = if unsigned.contains('?') { '&' } else { '?' };
                match expiry {
                    Some(t) => {
                        format!("{prefix}{unsigned}{sep}{IK_EXPIRY}={t}&{IK_SIGNATURE}={sig}")
                    }
                    None => format!("{prefix}{unsigned}{sep}{IK_SIGNATURE}={sig}"),
                }
            }
            Signer::Query(s) => {
                if query_param(query, SIGNATURE_PARAM).ok().flatten().is_some() {
                    return Err(not_unsigned("… without sig"));
                }
                let unsigned = with_query(rest, &query_without(query, &[SIGNATURE_PARAM]));
                let sep = if unsigned.contains('?') { '&' } else { '?' };
                format!(
                    "{prefix}{unsigned}{sep}{SIGNATURE_PARAM}={}",
                    s.sign(&unsigned)
                )
            }
        };
        Ok(format!("{origin}{signed}"))
    }
}

/// Splits `https://host` off an absolute URL; relative URLs have an empty origin.
fn split_origin(url: &str) -> (&str, &str) {
    let Some(after_scheme) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return ("", url);
    };
    let at = after_scheme.find('/').unwrap_or(after_scheme.len());
    url.split_at(url.len() - after_scheme.len() + at)
}

/// A URL read by its grammar, before the parts every grammar shares.
struct Parsed {
    target: Target,
    /// thumbor: filters skipped because pixmesh does not know them.
    skipped: Vec<String>,
    /// thumbor: the path after the signature as imagor verified it (its `Params.Path`), from
    /// which [`crate::imagor_key`] names the rendition.
    imagor_path: Option<String>,
}

impl From<Target> for Parsed {
    fn from(target: Target) -> Self {
        Parsed {
            target,
            skipped: Vec::new(),
            imagor_path: None,
        }
    }
}

impl Route {
    /// Checks a URL's signature: `None` for an unsigned URL, else the signature and a verifier.
    fn check_signature(
        &self,
        signature: Option<&str>,
        verify: impl FnOnce(&Signer, &str) -> bool,
    ) -> Result<(), Rejection> {
        match (signature, &self.signer) {
            (None, _) if self.cfg.allow_unsafe => Ok(()),
            (None, _) => Err(rejection(403, "unsigned URLs are not allowed here")),
            // A route without keys takes any signature where it takes unsigned URLs, as imgproxy
            // without a key and imagor in unsafe mode do: URLs signed for another server keep
            // working, and nothing is open that unsigned URLs do not open already.
            (Some(_), None) if self.cfg.allow_unsafe => Ok(()),
            (Some(_), None) => Err(rejection(403, "signed URLs are not configured here")),
            (Some(sig), Some(signer)) if verify(signer, sig) => Ok(()),
            (Some(_), Some(_)) => Err(rejection(403, "invalid signature")),
        }
    }

    /// The object key of a normalised image path: joined under the base dir after the path
    /// prefix is taken off, or, on a `wildcard_bucket` route, the same inside the bucket the
    /// first segment names (imagor's `S3_LOADER_BUCKET=*`, `s3storage.resolve`), which must be a
    /// valid S3 bucket name.
    fn key(&self, image: &str) -> Result<String, Rejection> {
        let (bucket, path) = match self.cfg.wildcard_bucket {
            true => crate::buckets::split_bucket(image)
                .map(|(b, p)| (Some(b), p))
                .map_err(|e| rejection(400, e.to_string()))?,
            false => (None, image),
        };
        let key = keys::map_key(&self.cfg.base_dir, &self.cfg.path_prefix, path)
            .map_err(|e| rejection(400, e.to_string()))?;
        Ok(match bucket {
            Some(bucket) => format!("{bucket}/{key}"),
            None => key,
        })
    }

    /// `r` as the route's peer answers it ([`Statuses::Peer`]). imgproxy: a signature segment
    /// that cannot be one (`rs:fit:…` where the signature belongs) is 403, as imgproxy refuses
    /// it with or without keys (`security/signature.go`); a path without one, a URL that does
    /// not parse, names an unknown option or has expired (`exp:`) is 404 `Invalid URL`
    /// (`handlers/errors.go`, `options/parser/errors.go`); a wrong signature 403 `Forbidden`.
    /// Refusals imgproxy has no counterpart for (405, 414, 501) keep pixmesh's status. pixmesh's
    /// reason stays in the filter's log only under [`Statuses::Pixmesh`].
    fn as_peer_refuses(&self, r: Rejection, rest: &str) -> Rejection {
        if self.cfg.grammar != Grammar::Imgproxy {
            return r;
        }
        let body = rest.strip_prefix('/').unwrap_or(rest);
        let bad_signature = match body.split_once('/') {
            Some((sig, after)) => !sig.is_empty() && !after.is_empty() && !is_signature(sig),
            None => false,
        };
        match r.status {
            400 | 403 if bad_signature => rejection(403, "Forbidden"),
            400 | 410 => rejection(404, "Invalid URL"),
            403 => rejection(403, "Forbidden"),
            _ => r,
        }
    }

    /// A thumbor/imagor path. As imagor does: a path without `unsafe/` or a signature is an
    /// unsigned one (accepted where the route allows unsigned URLs, else 403, not 400); a
    /// signature may arrive percent-encoded (`…%3D/`); and when the HMAC of the path as
    /// received does not match, the HMAC of the path unescaped is tried (client libraries sign
    /// either form).
    fn thumbor(&self, rest: &str) -> Result<Parsed, Rejection> {
        let trimmed = rest.strip_prefix('/').unwrap_or(rest);
        let (first, signed) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        let first = match first.contains('%') {
            true => crate::percent::decode(first).unwrap_or_else(|| first.to_owned()),
            false => first.to_owned(),
        };
        let (path, mut imagor_path) = if first == "unsafe" || crate::thumbor::is_signature(&first) {
            (format!("{first}/{signed}"), signed.to_owned())
        } else {
            // No signature segment: the whole path is options and image.
            (format!("unsafe/{trimmed}"), trimmed.to_owned())
        };
        let mut url = self.read_plus(ThumborPath::parse(&path)?);
        let unescaped = crate::percent::decode(signed).filter(|raw| raw != signed);
        let mut only_unescaped = false;
        self.check_signature(url.signature.hash(), |signer, sig| {
            let Signer::Thumbor(s) = signer else {
                return false;
            };
            if let Some(form) = signed_forms(signed).into_iter().find(|f| s.verify(f, sig)) {
                imagor_path = form;
                return true;
            }
            only_unescaped = unescaped.as_deref().is_some_and(|raw| s.verify(raw, sig));
            if let Some(raw) = unescaped.as_ref().filter(|_| only_unescaped) {
                imagor_path = raw.clone();
            }
            only_unescaped
        })?;
        let skipped = match self.cfg.strict_filters {
            true => Vec::new(),
            false => url.skip_unknown_filters(),
        };
        let target = url.to_target()?;
        if only_unescaped {
            // The signature covers the unescaped path: it must ask for what the path received
            // asks for. Else a twice-escaped key (`a%2525b.jpg`, read as `a%25b.jpg`) would be
            // served under the signature of another (`a%25b.jpg` signed, read as `a%b.jpg`).
            let as_signed = unescaped
                .as_deref()
                .and_then(|raw| ThumborPath::parse(&format!("{first}/{raw}")).ok())
                .map(|p| self.read_plus(p))
                .and_then(|mut p| {
                    if !self.cfg.strict_filters {
                        p.skip_unknown_filters();
                    }
                    p.to_target().ok()
                });
            if as_signed.as_ref() != Some(&target) {
                return Err(rejection(403, "invalid signature"));
            }
        }
        Ok(Parsed {
            target,
            skipped,
            imagor_path: Some(imagor_path),
        })
    }

    /// An imgproxy path, read and its signature verified as imgproxy reads it
    /// ([`crate::imgproxy::as_imgproxy_reads`]): options escaped by a proxy (`rs%3Afill%3A…`)
    /// and a plain source whose slashes a listener merged (`s3:/B/K`, `local:/K`) are what
    /// they were (`rs:fill:…`, `s3://B/K`, `local:///K`).
    /// The signature is checked before the rest is parsed, as imgproxy does
    /// (`handlers/processing/handler.go`): a URL that does not parse is refused for its
    /// signature first.
    fn imgproxy(&self, rest: &str) -> Result<Target, Rejection> {
        let rest = &crate::imgproxy::as_imgproxy_reads(rest);
        let body = rest.strip_prefix('/').unwrap_or(rest);
        let signature = match body.split_once('/') {
            Some(("insecure" | "_", _)) => None,
            Some((sig, signed)) if is_signature(sig) && !signed.is_empty() => Some(sig),
            // Not a URL: the parser says why.
            _ => {
                return Err(ImgproxyPath::parse(rest).err().map_or_else(
                    || rejection(400, "the path must start with a URL signature or insecure"),
                    Rejection::from,
                ));
            }
        };
        self.check_signature(signature, |signer, sig| {
            let Signer::Imgproxy(s) = signer else {
                return false;
            };
            body.get(sig.len()..)
                .is_some_and(|signed| signed_forms(signed).iter().any(|f| s.verify(f, sig)))
        })?;
        let url = ImgproxyPath::parse(rest)?;
        let target = url.to_target()?;
        if let Some(bucket) = &target.handle
            && self.cfg.storage_for(Some(bucket)).is_none()
        {
            return Err(GrammarError::Unsupported(format!(
                "s3://{bucket}/ sources (the bucket is not configured for this route)"
            ))
            .into());
        }
        Ok(target)
    }

    fn imagekit(&self, rest: &str, query: &str) -> Result<Target, Rejection> {
        let signature = query_param(query, IK_SIGNATURE)?;
        let expiry = query_param(query, IK_EXPIRY)?;
        self.check_signature(signature, |signer, sig| {
            let unsigned = with_query(rest, &query_without(query, &[IK_SIGNATURE, IK_EXPIRY]));
            let Signer::Imagekit(s) = signer else {
                return false;
            };
            signed_forms(&unsigned)
                .iter()
                .any(|form| s.verify(form, expiry, sig))
        })?;
        let mut target = ImagekitUrl::parse(rest, query)?.to_target()?;
        target.expires = expiry
            .map(|t| parse_unix_seconds(IK_EXPIRY, t))
            .transpose()?;
        Ok(target)
    }

    fn query(&self, rest: &str, query: &str) -> Result<Target, Rejection> {
        let signature = query_param(query, SIGNATURE_PARAM)?;
        self.check_signature(signature, |signer, sig| {
            let unsigned = with_query(rest, &query_without(query, &[SIGNATURE_PARAM]));
            let Signer::Query(s) = signer else {
                return false;
            };
            signed_forms(&unsigned)
                .iter()
                .any(|form| s.verify(form, sig))
        })?;
        Ok(QueryUrl::parse(rest, query)?.to_target()?)
    }

    /// `url` with a `+` in its image read as a space where the route says so
    /// (`plus_as_space`, imagor's reading): written `%20`, so that it decodes to one.
    fn read_plus(&self, mut url: ThumborPath) -> ThumborPath {
        if self.cfg.plus_as_space && !url.image.starts_with("b64:") {
            url.image = url.image.replace('+', "%20");
        }
        url
    }

    /// Whether this route reads the thumbor path `name` (an imagor rendition name) as the
    /// request `target` (its format negotiated) is: the same image, transform and watermark.
    fn reads_as(&self, name: &str, target: &Target) -> bool {
        // A `+` in a generated name is a `+` (imagor unescaped the image it came from), so the
        // name is read without `plus_as_space`.
        let Ok(mut url) = ThumborPath::parse(&format!("unsafe/{name}")) else {
            return false;
        };
        if !self.cfg.strict_filters {
            url.skip_unknown_filters();
        }
        let Ok(mut named) = url.to_target() else {
            return false;
        };
        if named.format_choice != FormatChoice::Named {
            named.transform.format = target.transform.format;
        }
        named.image == target.image
            && named.handle == target.handle
            && named.transform == target.transform
            && named.watermark == target.watermark
    }

    /// The common tail of every grammar: expiry, storage, key, the negotiated format, `Link`
    /// and, on a route with imagor result keys, imagor's name of the rendition (from
    /// `imagor_path`, the path after the signature).
    fn render(
        &self,
        mut target: Target,
        imagor_path: Option<&str>,
        accept: Option<&str>,
        headers: &[(String, String)],
        now: SystemTime,
    ) -> Result<Render, Rejection> {
        if target.expires.is_some_and(|e| e.is_past(now)) {
            return Err(rejection(410, "this URL has expired"));
        }
        let storage = self
            .cfg
            .storage_for(target.handle.as_deref())
            .ok_or_else(|| rejection(404, "unknown storage handle"))?;
        let image = keys::normalize(&target.image).map_err(|e| rejection(400, e.to_string()))?;
        let key = self.key(&image)?;
        let vary_accept = match target.format_choice {
            FormatChoice::Auto => true,
            FormatChoice::Unnamed => self.cfg.auto_format,
            FormatChoice::Named => false,
        };
        if vary_accept {
            target.transform.format = accept::negotiate(accept, self.cfg.auto_avif);
        }
        // imagor has no object versions: a versioned read is named as pixmesh names it. A name
        // imagor generated must read back as this very request, or the rendition stored under
        // it would answer another URL.
        let result_path = match (self.cfg.result_keys, imagor_path) {
            (ResultKeys::Imagor, Some(path)) if target.version.is_none() => {
                let format = vary_accept.then_some(target.transform.format);
                crate::imagor_key::result_path(path, format, self.cfg.plus_as_space)
                    .filter(|name| name == path || self.reads_as(name, &target))
            }
            _ => None,
        };
        // A watermark's path is resolved like the source's: same storage, path prefix and
        // base dir.
        let watermark = match target.watermark {
            Some(mut w) => {
                if let WatermarkImage::Path(path) = &w.image {
                    let key = keys::map_key(&self.cfg.base_dir, &self.cfg.path_prefix, path)
                        .map_err(|e| rejection(400, format!("watermark: {e}")))?;
                    w.image = WatermarkImage::Object {
                        storage: storage.to_owned(),
                        key,
                    };
                }
                Some(w)
            }
            None => None,
        };
        let request = RenderRequest {
            storage: storage.to_owned(),
            key,
            version: target.version,
            transform: target.transform,
            cache_key: self.cache_key.digest(headers),
            watermark,
            result_path,
        };
        Ok(Render {
            upstream_path: format!("{RENDER_PATH}?{}", request.to_query()),
            link: self
                .cfg
                .canonical_base_url
                .as_deref()
                .map(|base| link::canonical(base, &image)),
            vary_accept,
            vary: self.cache_key.vary(),
            request,
            skipped: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{Fit, Format, OutputFormat};

    /// When every request in these tests arrives, in unix seconds (2023-11-14T22:13:20Z).
    const NOW_SECS: u64 = 1_700_000_000;
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(NOW_SECS)
    }

    fn router() -> Router {
        Router::from_json(
            br#"{"routes":[
                {"prefix":"/img/","storage":"photos","base_dir":"originals","secret":"mysecret",
                 "canonical_base_url":"https://www.example.com"},
                {"prefix":"/img/open/","storage":"public","allow_unsafe":true}
            ]}"#,
        )
        .unwrap()
    }

    fn rejected(d: Decision) -> (u16, String) {
        match d {
            Decision::Reject(r) => (r.status, r.message),
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn rendered(d: Decision) -> Render {
        match d {
            Decision::Render(r) => r,
            other => panic!("expected a render, got {other:?}"),
        }
    }

    #[test]
    fn signed_url_becomes_a_render_request() {
        let signer = ThumborSigner::new("mysecret", Default::default(), None);
        let signed = "fit-in/300x200/filters:format(webp)/a%20b/c.jpg";
        let path = format!("/img/{}/{signed}?cb=1", signer.sign(signed));
        let r = rendered(router().decide("GET", &path, None, now()));
        assert_eq!(r.request.storage, "photos");
        assert_eq!(r.request.key, "originals/a b/c.jpg");
        assert_eq!(r.request.transform.fit, Fit::FitIn);
        assert_eq!(
            r.request.transform.format,
            OutputFormat::Fixed(Format::Webp)
        );
        assert_eq!(
            r.upstream_path,
            "/_pixmesh/v1/render?storage=photos&key=originals%2Fa%20b%2Fc.jpg&width=300&height=200&fit=FIT_FIT_IN&format=FORMAT_WEBP"
        );
        assert_eq!(
            r.link.as_deref(),
            Some("<https://www.example.com/a%20b/c.jpg>; rel=\"canonical\"")
        );
    }

    #[test]
    fn longest_prefix_wins_and_unsafe_is_per_route() {
        let r = rendered(router().decide("HEAD", "/img/open/unsafe/10x10/a.png", None, now()));
        assert_eq!(
            (r.request.storage.as_str(), r.request.key.as_str()),
            ("public", "a.png")
        );
        assert_eq!(r.link, None);
        assert_eq!(
            rejected(router().decide("GET", "/img/unsafe/10x10/a.png", None, now())).0,
            403
        );
    }

    #[test]
    fn statuses_for_bad_requests() {
        let r = router();
        assert_eq!(r.decide("GET", "/other/path", None, now()), Decision::Pass);
        assert_eq!(
            rejected(r.decide(
                "GET",
                "/_pixmesh/v1/render?storage=photos&key=x",
                None,
                now()
            ))
            .0,
            404
        );
        assert_eq!(
            rejected(r.decide("POST", "/pixmesh.v1.ImageService/Render", None, now())).0,
            404,
            "a raw gRPC call would skip signature checks"
        );
        assert_eq!(
            rejected(r.decide("POST", "/img/open/unsafe/a.jpg", None, now())).0,
            405
        );
        assert_eq!(
            rejected(r.decide("GET", "/img/open/unsafe/", None, now())).0,
            400
        );
        assert_eq!(
            rejected(r.decide("GET", "/img/open/unsafe/../secret.jpg", None, now())).0,
            400
        );
        assert_eq!(
            rejected(r.decide("GET", "/img/open/unsafe/a%0D%0Ab.jpg", None, now())).0,
            400
        );
        assert_eq!(
            rejected(r.decide("GET", "/img/open/unsafe/meta/a/b.jpg", None, now())).0,
            501
        );
        assert_eq!(
            rejected(r.decide(
                "GET",
                "/img/cST4Ko5_FqwT3BDn-Wf4gO3RFSk=/500x500/a.png",
                None,
                now()
            )),
            (403, "invalid signature".to_owned())
        );
        let long = format!("/img/open/unsafe/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(rejected(r.decide("GET", &long, None, now())).0, 414);
    }

    #[test]
    fn signature_covers_the_raw_path() {
        let signer = ThumborSigner::new("mysecret", Default::default(), None);
        let sig = signer.sign("300x200/a.jpg");
        assert!(matches!(
            router().decide("GET", &format!("/img/{sig}/300x200/a.jpg"), None, now()),
            Decision::Render(_)
        ));
        assert_eq!(
            rejected(router().decide("GET", &format!("/img/{sig}/300x201/a.jpg"), None, now())).0,
            403
        );
    }

    const IMGPROXY_KEY: &str = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
    const IMGPROXY_SALT: &str = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";

    /// One route per grammar, all unsafe-capable and signed, plus strict (signed-only) ones.
    fn grammars() -> Router {
        let json = serde_json::json!({ "routes": [
            { "prefix": "/t/", "storage": "photos", "secret": "mysecret", "allow_unsafe": true },
            { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true,
              "statuses": "pixmesh",
              "keys": [ { "key": "736563726574", "salt": "68656C6C6F" },
                        { "key": IMGPROXY_KEY, "salt": IMGPROXY_SALT } ],
              "handles": { "photos-bucket": "photos", "cold-bucket": "archive" } },
            { "prefix": "/demo/", "grammar": "imagekit", "storage": "photos", "secret": "dummy-key",
              "allow_unsafe": true },
            { "prefix": "/v1/ex/", "grammar": "query", "storage": "photos", "secret": "qsecret",
              "allow_unsafe": true, "handles": { "my-s3-bucket": "photos", "archive": "archive" } },
            { "prefix": "/strict/t/", "storage": "photos", "secret": "mysecret" },
            { "prefix": "/strict/ip/", "grammar": "imgproxy", "storage": "photos",
              "keys": [ { "key": IMGPROXY_KEY, "salt": IMGPROXY_SALT } ], "signature_size": 8 },
            { "prefix": "/strict/ik/", "grammar": "imagekit", "storage": "photos", "secret": "k" },
            { "prefix": "/strict/q/", "grammar": "query", "storage": "photos", "secret": "k" },
            { "prefix": "/open/ik/", "grammar": "imagekit", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/open/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true },
            { "prefix": "/open/t/", "storage": "photos", "allow_unsafe": true },
        ]});
        Router::from_json(json.to_string().as_bytes()).unwrap()
    }

    /// URLs that mean the same in each grammar yield the same render request, byte for byte.
    /// (`None`: the grammar cannot say it.)
    #[test]
    fn same_meaning_same_request_in_every_grammar() {
        let table: &[[Option<&str>; 4]] = &[
            [
                Some("/t/unsafe/fit-in/300x200/filters:format(png)/dir/a.jpg"),
                Some("/ip/insecure/rs:fit:300:200/plain/dir/a.jpg@png"),
                Some("/demo/tr:w-300,h-200,c-at_max,f-png/dir/a.jpg"),
                Some("/v1/ex/photos/dir/a.jpg?w=300&h=200&fit=scale-down&f=png"),
            ],
            [
                Some(
                    "/t/unsafe/300x200/left/top/filters:format(webp):quality(80):upscale()/dir/a.jpg",
                ),
                Some("/ip/insecure/rs:fill:300:200:1/g:nowe/q:80/plain/dir/a.jpg@webp"),
                Some("/demo/tr:w-300,h-200,fo-top_left,f-webp,q-80/dir/a.jpg"),
                Some("/v1/ex/photos/dir/a.jpg?w=300&h=200&fit=crop&gravity=top-left&f=webp&q=80"),
            ],
            [
                Some("/t/unsafe/stretch/300x200/filters:upscale()/dir/a.jpg"),
                Some("/ip/insecure/rs:force:150:100:1/dpr:2/plain/dir/a.jpg"),
                Some("/demo/tr:w-150,h-100,c-force,dpr-2/dir/a.jpg"),
                Some("/v1/ex/my-s3-bucket/dir/a.jpg?w=150&h=100&fit=fill&dpr=2"),
            ],
            [
                Some("/t/unsafe/fit-in/-300x/filters:upscale()/dir/a.jpg"),
                Some("/ip/insecure/w:300/el:1/fl:1/plain/s3://photos-bucket/dir/a.jpg"),
                Some("/demo/dir/a.jpg?tr=w-300,c-at_max_enlarge,fl-h"),
                None,
            ],
            [
                Some("/t/unsafe/300x/filters:upscale()/dir/a%20b.jpg"),
                Some("/ip/insecure/rs:fill:300:0:1/plain/dir/a%20b.jpg"),
                Some("/demo/tr:w-300/dir/a%20b.jpg?updatedAt=1"),
                Some("/v1/ex/photos/dir/a%20b.jpg?w=300"),
            ],
        ];
        let r = grammars();
        for row in table {
            let requests: Vec<RenderRequest> = row
                .iter()
                .flatten()
                .map(|url| rendered(r.decide("GET", url, None, now())).request)
                .collect();
            for (url, req) in row.iter().flatten().zip(&requests) {
                assert_eq!(req, &requests[0], "{url} differs from {:?}", row[0]);
            }
        }
    }

    /// A watermark path is resolved like the source's: the same request from thumbor and query
    /// URLs, never outside the base dir; imgproxy's is the sidecar's default.
    #[test]
    fn watermark_paths_resolve_like_sources() {
        use crate::watermark::{Axis, Offset, WatermarkImage};
        let r = grammars();
        let t = rendered(r.decide(
            "GET",
            "/t/unsafe/300x200/filters:upscale():watermark(wm/logo.png,-10,-10,50,25,25)/dir/a.jpg",
            None,
            now(),
        ))
        .request;
        let q = rendered(r.decide(
            "GET",
            "/v1/ex/photos/dir/a.jpg?w=300&h=200&fit=cover&watermark=wm/logo.png\
             &wm_pos=bottom-right&wm_x=10&wm_y=10&wm_opacity=0.5&wm_scale=0.25",
            None,
            now(),
        ))
        .request;
        assert_eq!(t, q);
        let w = t.watermark.unwrap();
        assert_eq!(
            w.image,
            WatermarkImage::Object {
                storage: "photos".into(),
                key: "wm/logo.png".into()
            }
        );
        assert_eq!(w.x, Axis::End(Offset::Pixels(10)));
        let ip = rendered(r.decide(
            "GET",
            "/ip/insecure/wm:0.5:soea:10:10/plain/a.jpg",
            None,
            now(),
        ));
        assert_eq!(ip.request.watermark.unwrap().image, WatermarkImage::Default);
        let corner = [
            "/t/unsafe/300x200/filters:upscale():watermark(wm/logo.png,-0,-0,0)/dir/a.jpg",
            "/demo/tr:w-300,h-200,l-image,i-wm@@logo.png,lfo-bottom_right,l-end/dir/a.jpg",
            "/ip/insecure/rs:fill:300:200:1/wm:1:soea/wmu:d20vbG9nby5wbmc/plain/dir/a.jpg",
            "/v1/ex/photos/dir/a.jpg?w=300&h=200&watermark=wm/logo.png&wm_pos=bottom-right",
        ]
        .map(|url| rendered(r.decide("GET", url, None, now())).request);
        assert!(corner.iter().all(|req| req == &corner[0]), "{corner:?}");
        assert!(corner[0].watermark.is_some());
        for url in [
            "/t/unsafe/filters:watermark(..%2Fsecret.png,0,0,0)/a.jpg",
            "/v1/ex/photos/a.jpg?watermark=../secret.png",
            "/demo/tr:l-image,i-..@@secret.png,l-end/a.jpg",
        ] {
            assert_eq!(rejected(r.decide("GET", url, None, now())).0, 400, "{url}");
        }
    }

    #[test]
    fn documented_signature_vectors_pass_the_router() {
        let r = grammars();
        // imgproxy docs (key `secret`, salt `hello`): the signature passes, the source is
        // remote (501).
        let docs = "/ip/oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png";
        assert_eq!(
            rejected(r.decide("GET", docs, None, now())),
            (501, "not implemented: http:// sources".into())
        );
        // imgproxy examples, verified with the second (rotated-in) pair: the source is remote.
        let example = "/ip/m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg";
        assert_eq!(
            rejected(r.decide("GET", example, None, now())),
            (501, "not implemented: http:// sources".into())
        );
        assert_eq!(
            rejected(r.decide(
                "GET",
                &example.replace(":300/plain", ":301/plain"),
                None,
                now()
            ))
            .0,
            403
        );
        // ImageKit SDK examples (private key `dummy-key`, endpoint `…/demo/`).
        for url in [
            "/demo/tr:w-300,h-200/sdk-testing-files/future-search.png?version=2.0&ik-s=dd1ee8f83d019bc59fd57a5fc4674a11eb8a3496",
            "/demo/sdk-testing-files/future-search.png?version=2.0&tr=w-300,h-200&ik-s=601d97a7834b7554f4dabf0d3fc3a219ceeb6b31",
        ] {
            let req = rendered(r.decide("GET", url, None, now())).request;
            assert_eq!(req.key, "sdk-testing-files/future-search.png");
            assert_eq!((req.transform.width, req.transform.height), (300, 200));
            let tampered = url.replace("version=2.0", "version=2.1");
            assert_eq!(rejected(r.decide("GET", &tampered, None, now())).0, 403);
        }
    }

    /// imgproxy signs the path as it reads it (`handlers/path.go`): options a proxy escaped
    /// (`%3A`) and a merged `local:/` source are verified in their written form; the escapes of
    /// the source itself are signed as received.
    #[test]
    fn imgproxy_signatures_cover_the_path_imgproxy_reads() {
        let r = grammars();
        let signer = ImgproxySigner::new([(IMGPROXY_KEY, IMGPROXY_SALT)], Some(8)).unwrap();
        let signed = "/rs:fill:300:200/g:no/plain/local:///dir/a%3Ab.jpg@png";
        let sig = signer.sign(signed);
        for received in [
            signed.to_owned(),
            signed.replace("rs:fill:300:200/g:no", "rs%3Afill%3A300%3A200/g%3Ano"),
            signed.replace("local:///", "local:/"),
            signed
                .replace("rs:fill:", "rs%3Afill%3A")
                .replace("local:///", "local:/"),
        ] {
            let url = format!("/strict/ip/{sig}{received}");
            let req = rendered(r.decide("GET", &url, None, now())).request;
            assert_eq!(req.storage, "photos", "{url}");
            assert_eq!(req.key, "dir/a:b.jpg", "{url}");
            assert_eq!((req.transform.width, req.transform.height), (300, 200));
        }
        // What imgproxy refuses: a signature of the escaped options, and the source's own
        // escapes unescaped (`%3A` after `/plain/` is part of the key as signed).
        let escaped = "/rs%3Afill%3A300%3A200/g%3Ano/plain/local:///dir/a%3Ab.jpg@png";
        let url = format!("/strict/ip/{}{escaped}", signer.sign(escaped));
        assert_eq!(rejected(r.decide("GET", &url, None, now())).0, 403);
        let url = format!("/strict/ip/{sig}{}", signed.replace("a%3Ab", "a:b"));
        assert_eq!(rejected(r.decide("GET", &url, None, now())).0, 403);
    }

    /// imgproxy routes answer refusals as imgproxy does unless they ask for pixmesh's
    /// statuses (`/ip/` does).
    #[test]
    fn imgproxy_routes_refuse_as_imgproxy_does() {
        let r = grammars();
        let past = NOW_SECS - 10;
        let invalid = (404, "Invalid URL".to_owned());
        let forbidden = (403, "Forbidden".to_owned());
        for (path, peer, precise) in [
            // handlers/errors.go: no signature segment.
            ("plain".to_owned(), &invalid, 400),
            // options/parser/errors.go: unknown option, bad arguments, no source.
            ("insecure/nope:1/plain/a.jpg".to_owned(), &invalid, 400),
            ("insecure/rs:fit:abc/plain/a.jpg".to_owned(), &invalid, 400),
            ("insecure/rs:fit:10:10".to_owned(), &invalid, 400),
            // apply.go: `Expired URL` is an option argument error.
            (format!("insecure/exp:{past}/plain/a.jpg"), &invalid, 410),
            // security/signature.go: an option where the signature belongs, with or without
            // keys.
            ("rs:fit:10:10/plain/a.jpg".to_owned(), &forbidden, 400),
            // An unsafe key is an invalid URL too.
            ("insecure/plain/../x.jpg".to_owned(), &invalid, 400),
        ] {
            for route in ["/open/ip/", "/strict/ip/"] {
                let url = format!("{route}{path}");
                let want = match (route, peer.0) {
                    // Where keys are required, an unsigned URL is refused before it parses.
                    ("/strict/ip/", 404) if path.starts_with("insecure/") => &forbidden,
                    _ => peer,
                };
                assert_eq!(&rejected(r.decide("GET", &url, None, now())), want, "{url}");
            }
            let url = format!("/ip/{path}");
            assert_eq!(
                rejected(r.decide("GET", &url, None, now())).0,
                precise,
                "{url}"
            );
        }
        // Refusals imgproxy has no counterpart for keep pixmesh's status.
        let unsupported = "/open/ip/insecure/plain/http://example.com/a.jpg";
        assert_eq!(rejected(r.decide("GET", unsupported, None, now())).0, 501);
        assert_eq!(
            rejected(r.decide("POST", "/open/ip/insecure/plain/a.jpg", None, now())).0,
            405
        );
        // Other grammars are unchanged.
        assert_eq!(
            rejected(r.decide("GET", "/open/t/unsafe/filters:nope(/a.jpg", None, now())).0,
            400
        );
    }

    /// imagor's `S3_LOADER_BUCKET=*` with a base dir and a path prefix: the bucket comes from
    /// the first segment, the rest is read under the base dir inside it.
    #[test]
    fn wildcard_bucket_routes_keep_the_base_dir_inside_the_bucket() {
        let json = serde_json::json!({ "routes": [
            { "prefix": "/w/", "storage": "any", "allow_unsafe": true, "wildcard_bucket": true,
              "base_dir": "public", "path_prefix": "img" },
            { "prefix": "/n/", "storage": "any", "allow_unsafe": true, "base_dir": "public" },
        ]});
        let r = Router::from_json(json.to_string().as_bytes()).unwrap();
        let key = |url: &str| rendered(r.decide("GET", url, None, now())).request.key;
        assert_eq!(key("/w/unsafe/tenant-a/img/x.jpg"), "tenant-a/public/x.jpg");
        assert_eq!(
            key("/w/unsafe//tenant-a/./img/d/x.jpg"),
            "tenant-a/public/d/x.jpg"
        );
        assert_eq!(key("/n/unsafe/tenant-a/x.jpg"), "public/tenant-a/x.jpg");
        for (url, why) in [
            ("/w/unsafe/Tenant_A/img/x.jpg", "invalid bucket"),
            ("/w/unsafe/192.168.0.1/img/x.jpg", "invalid bucket"),
            ("/w/unsafe/tenant-a/x.jpg", "not under img/"),
            ("/w/unsafe/tenant-a", "no object"),
        ] {
            let (status, message) = rejected(r.decide("GET", url, None, now()));
            assert_eq!(status, 400, "{url}");
            assert!(message.contains(why), "{url}: {message}");
        }
    }

    #[test]
    fn imgproxy_local_sources_read_the_route_storage() {
        let r = grammars();
        for url in [
            "/ip/insecure/plain/local:///x.jpg",
            "/ip/insecure/plain/local:/x.jpg",
            "/ip/insecure/plain/local%3A%2F%2F%2Fx.jpg",
            "/ip/insecure/rs%3Afit%3A10%3A10/plain/local:/x.jpg",
        ] {
            let req = rendered(r.decide("GET", url, None, now())).request;
            assert_eq!(
                (req.storage.as_str(), req.key.as_str()),
                ("photos", "x.jpg"),
                "{url}"
            );
        }
    }

    #[test]
    fn sign_produces_urls_the_router_accepts() {
        let r = grammars();
        for unsigned in [
            "/strict/t/unsafe/fit-in/300x200/a.jpg",
            "/strict/t/unsafe/300x200/a.jpg?cb=1",
            "/strict/ip/insecure/rs:fit:300:200/plain/a.jpg@png",
            "/strict/ip/_/rs:fill:300:200/cGhvdG9zL2EuanBn.webp",
            "/strict/ik/tr:w-300,h-200/a.jpg",
            "/strict/ik/a.jpg?v=1&tr=w-300",
            "/strict/ik/a.jpg?ik-t=4102444800",
            "/strict/q/photos/a.jpg",
            "/strict/q/photos/a.jpg?w=300&fit=cover&exp=4102444800",
            "/strict/q/photos/a.jpg?w=300&&q=80",
        ] {
            assert_eq!(
                rejected(r.decide("GET", unsigned, None, now())).0,
                403,
                "{unsigned} is refused unsigned"
            );
            let signed = r.sign(unsigned).unwrap();
            assert!(
                matches!(r.decide("GET", &signed, None, now()), Decision::Render(_)),
                "{signed}"
            );
        }
        assert_eq!(
            r.sign(
                "/strict/ip/insecure/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg"
            )
            .unwrap(),
            "/strict/ip/m3k5QADfcKM/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg",
            "imgproxy signature truncated to 8 bytes"
        );
        assert_eq!(
            r.sign("/demo/tr:w-300,h-200/sdk-testing-files/future-search.png?version=2.0")
                .unwrap(),
            "/demo/tr:w-300,h-200/sdk-testing-files/future-search.png?version=2.0&ik-s=dd1ee8f83d019bc59fd57a5fc4674a11eb8a3496"
        );
        assert_eq!(
            r.sign("https://img.example.com/strict/q/photos/a.jpg")
                .unwrap(),
            format!(
                "https://img.example.com{}",
                r.sign("/strict/q/photos/a.jpg").unwrap()
            ),
            "an absolute URL keeps its origin"
        );
        assert_eq!(
            r.sign("/elsewhere/a.jpg"),
            Err(SignError::NoRoute("/elsewhere/a.jpg".into()))
        );
        assert_eq!(
            r.sign("/open/ik/a.jpg"),
            Err(SignError::NoKey("/open/ik/".into()))
        );
        for not_unsigned in [
            "/strict/t/abcdefgh12/a.jpg",
            "/strict/ip/sig/plain/a.jpg",
            "/strict/ik/a.jpg?ik-s=00",
            "/strict/q/photos/a.jpg?sig=00",
        ] {
            assert!(
                matches!(r.sign(not_unsigned), Err(SignError::NotUnsigned(_))),
                "{not_unsigned}"
            );
        }
    }

    #[test]
    fn imagor_result_keys_name_renditions_after_the_path_imagor_verified() {
        let r = Router::from_json(
            br#"{"routes":[
                {"prefix":"/im/","storage":"s","secret":"mysecret","allow_unsafe":true,
                 "result_keys":"imagor","auto_format":true},
                {"prefix":"/px/","storage":"t","secret":"other","allow_unsafe":true}
            ]}"#,
        )
        .unwrap();
        let name = |url: &str, accept: Option<&str>| {
            rendered(r.decide("GET", url, accept, now()))
                .request
                .result_path
        };
        let path = "fit-in/100x100/filters:quality(80)/a.jpg";
        // Unsigned, with and without `unsafe/`: the path after it, as received.
        assert_eq!(
            name(&format!("/im/unsafe/{path}"), None).as_deref(),
            Some(path)
        );
        assert_eq!(name(&format!("/im/{path}"), None).as_deref(), Some(path));
        // Signed: the form the signature covers (here the unescaped one).
        let signer = ThumborSigner::new("mysecret", crate::sign::HashAlg::Sha1, None);
        let sig = signer.sign("300x200/a b.jpg");
        assert_eq!(
            name(&format!("/im/{sig}/300x200/a%20b.jpg"), None).as_deref(),
            Some("300x200/a b.jpg")
        );
        let sig = signer.sign("300x200/a%20b.jpg");
        assert_eq!(
            name(&format!("/im/{sig}/300x200/a%20b.jpg"), None).as_deref(),
            Some("300x200/a%20b.jpg")
        );
        // Auto format adds `format(webp)` as imagor's AUTO_WEBP does; `expire` is taken out.
        assert_eq!(
            name("/im/unsafe/300x200/a.jpg", Some(CHROME)).as_deref(),
            Some("300x200/filters:format(webp)/a.jpg")
        );
        assert_eq!(
            name("/im/unsafe/300x200/a.jpg", Some("image/png")).as_deref(),
            Some("300x200/a.jpg")
        );
        let exp = (NOW_SECS + 60) * 1000;
        assert_eq!(
            name(
                &format!("/im/unsafe/300x200/filters:expire({exp})/a.jpg"),
                None
            )
            .as_deref(),
            Some("300x200/a.jpg")
        );
        // The name is vouched for with the rest of the request; pixmesh's routes send none.
        let url = "/im/unsafe/300x200/a.jpg";
        assert!(
            rendered(r.decide("GET", url, None, now()))
                .upstream_path
                .contains("result_path=")
        );
        assert_eq!(name("/px/unsafe/300x200/a.jpg", None), None);
        // Names pixmesh cannot keep as imagor writes them fall back to its own: a `-` segment,
        // a `+` in the image (a space to imagor, read as `a b.jpg`).
        assert_eq!(name("/im/unsafe/300x200/-/a.jpg", None), None);
        assert_eq!(name("/im/unsafe/300x200/a+b.jpg", Some(CHROME)), None);
        // A generated name must read back as the request itself.
        let route = &r.routes.iter().find(|r| r.cfg.prefix == "/im/").unwrap();
        let target = |path: &str| {
            let mut t = route.thumbor(path).ok().unwrap().target;
            t.transform.format = OutputFormat::Fixed(Format::Webp);
            t
        };
        let webp = target("unsafe/300x200/a.jpg");
        assert!(route.reads_as("300x200/filters:format(webp)/a.jpg", &webp));
        for other in [
            "300x200/filters:format(webp)/b.jpg",
            "300x201/filters:format(webp)/a.jpg",
            "300x200/filters:format(png)/a.jpg",
            "300x200/filters:format(webp):grayscale()/a.jpg",
            "300x200/filters:nope(/a.jpg",
        ] {
            assert!(!route.reads_as(other, &webp), "{other}");
        }
        assert!(
            route.reads_as("300x200/a.jpg", &webp),
            "an unnamed format is negotiated"
        );
    }

    #[test]
    fn a_plus_in_the_image_is_a_space_where_the_route_reads_it_as_imagor_does() {
        let r = Router::from_json(
            br#"{"routes":[
                {"prefix":"/im/","storage":"s","secret":"mysecret","plus_as_space":true,
                 "result_keys":"imagor","auto_format":true},
                {"prefix":"/th/","storage":"s","secret":"mysecret"}
            ]}"#,
        )
        .unwrap();
        let signer = ThumborSigner::new("mysecret", crate::sign::HashAlg::Sha1, None);
        let path = "fit-in/100x100/filters:quality(80)/dir+1/a+b%2Bc.jpg";
        let sig = signer.sign(path);
        let imagor = rendered(r.decide("GET", &format!("/im/{sig}/{path}"), Some(CHROME), now()));
        assert_eq!(imagor.request.key, "dir 1/a b+c.jpg");
        assert_eq!(
            imagor.request.result_path.as_deref(),
            Some("fit-in/100x100/filters:quality(80):format(webp)/dir 1/a b+c.jpg")
        );
        let thumbor = rendered(r.decide("GET", &format!("/th/{sig}/{path}"), None, now()));
        assert_eq!(thumbor.request.key, "dir+1/a+b+c.jpg");
        // Only the image: a filter's argument keeps its `+`.
        let wm = "filters:watermark(w+m.png,0,0,50)/a.jpg";
        let sig = signer.sign(wm);
        let d = rendered(r.decide("GET", &format!("/im/{sig}/{wm}"), None, now()));
        let Some(WatermarkImage::Object { key, .. }) = d.request.watermark.map(|w| w.image) else {
            panic!("a watermark object")
        };
        assert_eq!(key, "w+m.png");
    }

    #[test]
    fn thumbor_paths_are_read_as_imagor_reads_them() {
        let r = grammars();
        // No signature segment: 403 where URLs must be signed (it was 400), the unsigned path
        // where the route accepts those.
        assert_eq!(
            rejected(r.decide("GET", "/strict/t/fit-in/100x100/a.jpg", None, now())),
            (403, "unsigned URLs are not allowed here".to_owned())
        );
        assert_eq!(
            rendered(r.decide("GET", "/t/fit-in/100x100/a.jpg", None, now())).request,
            rendered(r.decide("GET", "/t/unsafe/fit-in/100x100/a.jpg", None, now())).request
        );
        // A signature percent-encoded on the way (`=` as `%3D`).
        let signed = r.sign("/strict/t/unsafe/fit-in/100x100/a.jpg").unwrap();
        let hash = signed
            .trim_start_matches("/strict/t/")
            .split('/')
            .next()
            .unwrap();
        assert!(hash.ends_with('='), "a padded signature: {hash}");
        let escaped = signed.replace(hash, &hash.replace('=', "%3D"));
        let want = rendered(r.decide("GET", &signed, None, now())).request;
        assert_eq!(
            rendered(r.decide("GET", &escaped, None, now())).request,
            want
        );
        // Signed over the unescaped path, requested escaped (as browsers send a space).
        let signer = ThumborSigner::new("mysecret", crate::sign::HashAlg::Sha1, None);
        let sig = signer.sign("fit-in/100x100/a b.jpg");
        let url = format!("/strict/t/{sig}/fit-in/100x100/a%20b.jpg");
        assert_eq!(
            rendered(r.decide("GET", &url, None, now())).request.key,
            "a b.jpg"
        );
        // Neither form signed: still refused.
        let url = format!("/strict/t/{sig}/fit-in/100x100/other%20b.jpg");
        assert_eq!(rejected(r.decide("GET", &url, None, now())).0, 403);
        // A signature over the unescaped path covers only what that path asks for: the
        // signed URL for key `a%b.jpg` (`a%25b.jpg` in the path) does not serve the key
        // `a%25b.jpg` (`a%2525b.jpg`, which unescapes to the signed path).
        let sig = signer.sign("fit-in/100x100/a%25b.jpg");
        let url = format!("/strict/t/{sig}/fit-in/100x100/a%25b.jpg");
        assert_eq!(
            rendered(r.decide("GET", &url, None, now())).request.key,
            "a%b.jpg"
        );
        let url = format!("/strict/t/{sig}/fit-in/100x100/a%2525b.jpg");
        assert_eq!(
            rejected(r.decide("GET", &url, None, now())),
            (403, "invalid signature".to_owned())
        );
    }

    #[test]
    fn unknown_thumbor_filters_are_skipped_unless_the_route_is_strict() {
        let json = |strict: bool| {
            format!(
                r#"{{"routes":[{{"prefix":"/t/","storage":"p","allow_unsafe":true,
                    "strict_filters":{strict}}}]}}"#
            )
        };
        let lenient = Router::from_json(json(false).as_bytes()).unwrap();
        let url = "/t/unsafe/100x100/filters:my_plugin(1):quality(80):other()/a.jpg";
        let r = rendered(lenient.decide("GET", url, None, now()));
        assert_eq!(r.skipped, ["my_plugin", "other"]);
        let plain = "/t/unsafe/100x100/filters:quality(80)/a.jpg";
        assert_eq!(
            r.request,
            rendered(lenient.decide("GET", plain, None, now())).request,
            "as if they were not there"
        );
        // Filters pixmesh knows but does not do yet are still named: 501, never skipped.
        let known = "/t/unsafe/100x100/filters:equalize()/a.jpg";
        assert_eq!(rejected(lenient.decide("GET", known, None, now())).0, 501);
        let strict = Router::from_json(json(true).as_bytes()).unwrap();
        assert_eq!(
            rejected(strict.decide("GET", url, None, now())),
            (400, "unknown filter my_plugin".to_owned())
        );
    }

    #[test]
    fn signatures_are_checked_per_route() {
        let r = grammars();
        for (url, status, message) in [
            ("/strict/ip/insecure/plain/a.jpg", 403, "Forbidden"),
            ("/strict/ip/AAAAAAAAAAA/plain/a.jpg", 403, "Forbidden"),
            ("/strict/ik/a.jpg?ik-s=00", 403, "invalid signature"),
            (
                "/strict/ik/a.jpg?ik-s=00&ik-s=01",
                400,
                "ik-s is given twice",
            ),
            (
                "/strict/q/photos/a.jpg?w=1",
                403,
                "unsigned URLs are not allowed here",
            ),
            ("/strict/q/photos/a.jpg?sig=zz", 403, "invalid signature"),
        ] {
            assert_eq!(
                rejected(r.decide("GET", url, None, now())),
                (status, message.to_owned()),
                "{url}"
            );
        }
        // Routes without keys that take unsigned URLs take any signature, as imgproxy without a
        // key and imagor in unsafe mode do.
        for url in [
            "/open/ik/a.jpg?ik-s=00",
            "/open/ip/AAAAAAAAAAA/rs:fit:300:200/plain/dir/a.jpg",
            "/open/ip/_/rs:fit:300:200/plain/dir/a.jpg",
            "/open/t/kE9rBx_2aGgxBPoNxX5CLC6-fjs=/fit-in/300x200/dir/a.jpg",
        ] {
            assert!(
                matches!(r.decide("GET", url, None, now()), Decision::Render(_)),
                "{url}"
            );
        }
        // Where a route has keys, a wrong signature stays wrong even though it takes unsigned
        // URLs.
        assert_eq!(
            rejected(r.decide(
                "GET",
                "/ip/AAAAAAAAAAA/rs:fit:300:200/plain/dir/a.jpg",
                None,
                now()
            )),
            (403, "invalid signature".to_owned())
        );
        // A signed query URL whose parameters are changed afterwards.
        let signed = r.sign("/strict/q/photos/a.jpg?w=300").unwrap();
        let tampered = signed.replace("w=300", "w=3000");
        assert_eq!(rejected(r.decide("GET", &tampered, None, now())).0, 403);
    }

    #[test]
    fn expired_urls_are_gone() {
        let r = grammars();
        let past = NOW_SECS - 1;
        let future = NOW_SECS + 1;
        for (url, status) in [
            (
                format!("/t/unsafe/filters:expire({})/a.jpg", past * 1000),
                410,
            ),
            (
                format!("/t/unsafe/filters:expire({})/a.jpg", NOW_SECS * 1000),
                200,
            ),
            (format!("/ip/insecure/exp:{past}/plain/a.jpg"), 410),
            (format!("/ip/insecure/exp:{NOW_SECS}/plain/a.jpg"), 200),
            (format!("/demo/a.jpg?ik-t={past}"), 410),
            (format!("/demo/a.jpg?ik-t={future}"), 200),
            (format!("/v1/ex/photos/a.jpg?exp={past}"), 410),
            (format!("/v1/ex/photos/a.jpg?exp={future}"), 200),
            ("/t/unsafe/filters:expire(soon)/a.jpg".to_owned(), 400),
            ("/demo/a.jpg?ik-t=soon".to_owned(), 400),
        ] {
            let status_of = match r.decide("GET", &url, None, now()) {
                Decision::Render(_) => 200,
                Decision::Reject(rej) => rej.status,
                Decision::Pass => 0,
            };
            assert_eq!(status_of, status, "{url}");
        }
        let signed = r.sign(&format!("/strict/ik/a.jpg?ik-t={past}")).unwrap();
        assert_eq!(
            rejected(r.decide("GET", &signed, None, now())),
            (410, "this URL has expired".to_owned()),
            "a valid signature does not revive an expired URL"
        );
    }

    #[test]
    fn storage_handles() {
        let r = grammars();
        let storage = |url: &str| rendered(r.decide("GET", url, None, now())).request.storage;
        assert_eq!(storage("/v1/ex/photos/a.jpg"), "photos");
        assert_eq!(storage("/v1/ex/my-s3-bucket/a.jpg"), "photos");
        assert_eq!(storage("/v1/ex/archive/a.jpg"), "archive");
        assert_eq!(
            storage("/ip/insecure/plain/s3://cold-bucket/a.jpg"),
            "archive"
        );
        assert_eq!(storage("/ip/insecure/plain/local:///a.jpg"), "photos");
        assert_eq!(
            rejected(r.decide("GET", "/v1/ex/nope/a.jpg", None, now())),
            (404, "unknown storage handle".into())
        );
        assert_eq!(
            rejected(r.decide("GET", "/ip/insecure/plain/s3://nope/a.jpg", None, now())),
            (
                501,
                "not implemented: s3://nope/ sources (the bucket is not configured for this route)"
                    .into()
            )
        );
    }

    /// One route per grammar with `auto_format`, and the same without it.
    fn auto_routes() -> Router {
        Router::from_json(
            br#"{"routes":[
                {"prefix":"/auto/t/","storage":"s","allow_unsafe":true,"auto_format":true},
                {"prefix":"/auto/ip/","grammar":"imgproxy","storage":"s","allow_unsafe":true,
                 "auto_format":true},
                {"prefix":"/auto/ik/","grammar":"imagekit","storage":"s","allow_unsafe":true,
                 "auto_format":true},
                {"prefix":"/auto/q/","grammar":"query","storage":"s","allow_unsafe":true,
                 "auto_format":true},
                {"prefix":"/t/","storage":"s","allow_unsafe":true},
                {"prefix":"/ik/","grammar":"imagekit","storage":"s","allow_unsafe":true},
                {"prefix":"/q/","grammar":"query","storage":"s","allow_unsafe":true}
            ]}"#,
        )
        .unwrap()
    }

    const CHROME: &str = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8";
    const WEBP: OutputFormat = OutputFormat::Fixed(Format::Webp);

    /// The format and `Vary` a request gets with `accept`.
    fn negotiated(r: &Router, url: &str, accept: Option<&str>) -> (OutputFormat, bool) {
        let render = rendered(r.decide("GET", url, accept, now()));
        (render.request.transform.format, render.vary_accept)
    }

    #[test]
    fn urls_asking_for_auto_get_webp_only_when_the_client_lists_it() {
        let r = auto_routes();
        for url in ["/ik/tr:w-300,f-auto/a.jpg", "/q/s/a.jpg?w=300&f=auto"] {
            assert_eq!(negotiated(&r, url, Some(CHROME)), (WEBP, true), "{url}");
            for other in [Some("image/jpeg"), Some("image/*,*/*"), None] {
                assert_eq!(
                    negotiated(&r, url, other),
                    (OutputFormat::Compatible, true),
                    "{url} {other:?}"
                );
            }
        }
    }

    #[test]
    fn auto_format_routes_negotiate_only_urls_that_name_no_format() {
        let r = auto_routes();
        for url in [
            "/auto/t/unsafe/300x0/a.jpg",
            "/auto/ip/insecure/w:300/plain/a.jpg",
            "/auto/ik/tr:w-300/a.jpg",
            "/auto/q/s/a.jpg?w=300",
        ] {
            assert_eq!(negotiated(&r, url, Some(CHROME)), (WEBP, true), "{url}");
            assert_eq!(
                negotiated(&r, url, Some("image/png,image/*;q=0.8")),
                (OutputFormat::Compatible, true),
                "{url}"
            );
        }
        for (url, format) in [
            (
                "/auto/t/unsafe/filters:format(png)/a.jpg",
                OutputFormat::Fixed(Format::Png),
            ),
            (
                "/auto/ip/insecure/plain/a.jpg@gif",
                OutputFormat::Fixed(Format::Gif),
            ),
            ("/auto/ik/tr:f-orig/a.jpg", OutputFormat::Source),
            ("/auto/q/s/a.jpg?f=jpg", OutputFormat::Fixed(Format::Jpeg)),
            ("/t/unsafe/300x0/a.jpg", OutputFormat::Source),
            ("/ik/tr:w-300/a.jpg", OutputFormat::Source),
        ] {
            assert_eq!(negotiated(&r, url, Some(CHROME)), (format, false), "{url}");
        }
    }

    #[test]
    fn auto_avif_routes_rank_avif_above_webp() {
        let r = Router::from_json(
            br#"{"routes":[
                {"prefix":"/a/","grammar":"imagekit","storage":"s","allow_unsafe":true,
                 "auto_format":true,"auto_avif":true}
            ]}"#,
        )
        .unwrap();
        let avif = OutputFormat::Fixed(Format::Avif);
        for url in ["/a/tr:w-300/a.jpg", "/a/tr:w-300,f-auto/a.jpg"] {
            assert_eq!(negotiated(&r, url, Some(CHROME)), (avif, true), "{url}");
            assert_eq!(
                negotiated(&r, url, Some("image/webp")),
                (WEBP, true),
                "{url}"
            );
            assert_eq!(
                negotiated(&r, url, Some("image/avif;q=0,image/webp")),
                (WEBP, true),
                "{url}"
            );
        }
        let avif = rendered(r.decide("GET", "/a/tr:w-300/a.jpg", Some(CHROME), now()));
        assert!(avif.upstream_path.contains("format=FORMAT_AVIF"));
        let webp = rendered(r.decide("GET", "/a/tr:w-300/a.jpg", Some("image/webp"), now()));
        assert_ne!(avif.request.canonical(), webp.request.canonical());
        assert_eq!(
            negotiated(&r, "/a/tr:w-300,f-jpg/a.jpg", Some(CHROME)),
            (OutputFormat::Fixed(Format::Jpeg), false)
        );
    }

    #[test]
    fn the_negotiated_format_is_part_of_the_canonical_request() {
        let r = auto_routes();
        let url = "/q/s/a.jpg?w=300&f=auto";
        let webp = rendered(r.decide("GET", url, Some("image/webp"), now()));
        let other = rendered(r.decide("GET", url, Some("image/jpeg"), now()));
        assert!(webp.upstream_path.contains("format=FORMAT_WEBP"));
        assert!(other.upstream_path.contains("format=FORMAT_COMPATIBLE"));
        assert_ne!(webp.request.canonical(), other.request.canonical());
        let plain = rendered(r.decide("GET", "/q/s/a.jpg?w=300", None, now()));
        assert_ne!(
            other.request.canonical(),
            plain.request.canonical(),
            "a WebP source renders differently for a client without WebP"
        );
        let named = rendered(r.decide("GET", "/q/s/a.jpg?w=300&f=webp", None, now()));
        assert_eq!(
            webp.request, named.request,
            "auto's WebP is the rendition that names WebP"
        );
    }

    #[test]
    fn an_s3_object_version_reaches_the_sidecar() {
        let r = grammars();
        let render = rendered(r.decide(
            "GET",
            "/ip/insecure/plain/s3://cold-bucket/a.jpg%3Fv%2B1",
            None,
            now(),
        ));
        assert_eq!(render.request.version.as_deref(), Some("v+1"));
        assert!(
            render
                .upstream_path
                .contains("&key=a.jpg&version_id=v%2B1&"),
            "{}",
            render.upstream_path
        );
        let current = rendered(r.decide(
            "GET",
            "/ip/insecure/plain/s3://cold-bucket/a.jpg",
            None,
            now(),
        ));
        assert_eq!(current.request.version, None);
        assert!(!current.upstream_path.contains("version"));
    }

    #[test]
    fn no_grammar_escapes_the_base_dir_or_passes_control_characters() {
        let r = grammars();
        let dotdot_b64 = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            "../secret.jpg",
        );
        for url in [
            "/ip/insecure/plain/../secret.jpg".to_owned(),
            "/ip/insecure/plain/%2E%2E/secret.jpg".to_owned(),
            format!("/ip/insecure/{dotdot_b64}.jpg"),
            "/ip/insecure/plain/s3://photos-bucket/../x.jpg".to_owned(),
            "/ip/insecure/plain/a%0D%0Ab.jpg".to_owned(),
            "/demo/tr:w-10/%2e%2e/secret.jpg".to_owned(),
            "/demo/a%0Ab.jpg".to_owned(),
            "/v1/ex/photos/../secret.jpg".to_owned(),
            "/v1/ex/photos/a%00b.jpg".to_owned(),
            "/v1/ex/../secret.jpg".to_owned(),
        ] {
            assert_eq!(rejected(r.decide("GET", &url, None, now())).0, 400, "{url}");
        }
    }

    fn hdrs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn routes_with_a_cache_key_digest_the_listed_headers_and_cookies_and_vary_on_them() {
        let r = Router::from_json(
            br#"{"routes":[
                {"prefix":"/k/","storage":"s","allow_unsafe":true,
                 "cache_key_headers":["X-Device"],"cache_key_cookies":["ab"]},
                {"prefix":"/plain/","storage":"s","allow_unsafe":true}]}"#,
        )
        .unwrap();
        let render = |path: &str, h: &[(&str, &str)]| {
            rendered(r.decide_request("GET", path, &hdrs(h), now()))
        };
        let url = "/k/unsafe/300x0/a.jpg";
        let mobile = render(url, &[("x-device", "mobile"), ("cookie", "ab=1; z=2")]);
        assert_eq!(mobile.vary.as_deref(), Some("x-device, cookie"));
        assert!(!mobile.vary_accept);
        let key = mobile.request.cache_key.clone().expect("a cache key");
        assert!(crate::cachekey::is_digest(&key), "{key}");
        assert!(mobile.upstream_path.ends_with(&format!("&cache_key={key}")));
        assert!(
            !mobile.upstream_path.contains("mobile"),
            "values travel digested"
        );
        let same = render(url, &[("X-Device", "mobile"), ("Cookie", "z=3; ab=1")]);
        assert_eq!(same.request, mobile.request);
        for other in [
            &[("x-device", "desktop"), ("cookie", "ab=1")][..],
            &[("x-device", "mobile"), ("cookie", "ab=2")],
            &[("x-device", ""), ("cookie", "ab=1")],
            &[("cookie", "ab=1")],
            &[("x-device", "mobile")],
        ] {
            let o = render(url, other);
            assert_ne!(
                o.request.canonical(),
                mobile.request.canonical(),
                "{other:?}"
            );
        }
        // Routes without a cache key: no key, no Vary, whatever is sent; decide() sends nothing.
        let plain = render("/plain/unsafe/300x0/a.jpg", &[("x-device", "mobile")]);
        assert_eq!((plain.request.cache_key, plain.vary), (None, None));
        let bare = rendered(r.decide("GET", url, None, now()));
        assert_eq!(bare.vary.as_deref(), Some("x-device, cookie"));
        assert_ne!(bare.request, mobile.request);
        assert_eq!(
            bare.request.cache_key,
            render(url, &[]).request.cache_key,
            "decide() is a request without headers"
        );
    }

    #[test]
    fn decide_request_reads_accept_from_the_headers() {
        let r = auto_routes();
        let url = "/auto/t/unsafe/300x0/a.jpg";
        for (h, format) in [
            (hdrs(&[("Accept", CHROME)]), WEBP),
            (
                hdrs(&[("accept", "image/jpeg"), ("ACCEPT", "image/webp")]),
                WEBP,
            ),
            (hdrs(&[("accept", "image/jpeg")]), OutputFormat::Compatible),
            (hdrs(&[]), OutputFormat::Compatible),
        ] {
            let got = rendered(r.decide_request("GET", url, &h, now()));
            assert_eq!(got.request.transform.format, format, "{h:?}");
            assert!(got.vary_accept);
        }
    }

    /// A route with a `path_prefix` serves only paths under it, in every grammar, and joins
    /// what follows it under its base dir (the seed's example: avatars/user-1.jpg, prefix
    /// avatars, base dir source → source/user-1.jpg).
    #[test]
    fn path_prefix_is_required_stripped_and_joined_under_the_base_dir() {
        let json = serde_json::json!({ "routes": [
            { "prefix": "/t/", "storage": "photos", "allow_unsafe": true,
              "base_dir": "source", "path_prefix": "avatars",
              "canonical_base_url": "https://www.example.com" },
            { "prefix": "/ip/", "grammar": "imgproxy", "storage": "photos", "allow_unsafe": true,
              "base_dir": "source", "path_prefix": "/avatars/", "statuses": "pixmesh" },
            { "prefix": "/ik/", "grammar": "imagekit", "storage": "photos", "allow_unsafe": true,
              "base_dir": "source", "path_prefix": "avatars" },
            { "prefix": "/q/", "grammar": "query", "storage": "photos", "allow_unsafe": true,
              "base_dir": "source", "path_prefix": "avatars" },
        ]});
        let r = Router::from_json(json.to_string().as_bytes()).unwrap();
        for url in [
            "/t/unsafe/avatars/user-1.jpg",
            "/t/unsafe//avatars/./user-1.jpg",
            "/ip/insecure/plain/avatars/user-1.jpg",
            "/ik/avatars/user-1.jpg",
            "/q/photos/avatars/user-1.jpg",
        ] {
            let render = rendered(r.decide("GET", url, None, now()));
            assert_eq!(render.request.key, "source/user-1.jpg", "{url}");
        }
        let render = rendered(r.decide("GET", "/t/unsafe/avatars/user-1.jpg", None, now()));
        assert_eq!(
            render.link.as_deref(),
            Some("<https://www.example.com/avatars/user-1.jpg>; rel=\"canonical\""),
            "the canonical URL keeps the path the client asked for"
        );
        for url in [
            "/t/unsafe/other/user-1.jpg",
            "/t/unsafe/avatarsX/user-1.jpg",
            "/t/unsafe/avatars",
            "/ip/insecure/plain/other/avatars/user-1.jpg",
            "/ik/user-1.jpg",
            "/q/photos/user-1.jpg",
        ] {
            let (status, message) = rejected(r.decide("GET", url, None, now()));
            assert_eq!(status, 400, "{url}");
            assert_eq!(message, "the image path is not under avatars/", "{url}");
        }
    }
}
