//! The filter's per-request decision: pass the request on untouched, rewrite it into a render
//! request for the sidecar, or answer it at once with an error.

use crate::config::{ConfigError, FilterConfig, Grammar, RouteConfig};
use crate::keys;
use crate::link;
use crate::render::{RENDER_PATH, RenderRequest, is_internal};
use crate::sign::ThumborSigner;
use crate::thumbor::{GrammarError, Signature, ThumborPath};

/// Longest request path handled, in bytes.
pub const MAX_URL_LEN: usize = 8 * 1024;

/// What the filter does with a request.
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
    /// The canonical request itself.
    pub request: RenderRequest,
}

/// An error answer. `message` is public: it never holds secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status.
    pub status: u16,
    /// Short plain-text body.
    pub message: String,
}

fn reject(status: u16, message: impl Into<String>) -> Decision {
    Decision::Reject(Rejection {
        status,
        message: message.into(),
    })
}

struct Route {
    cfg: RouteConfig,
    signer: Option<ThumborSigner>,
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
            .map(|cfg| Route {
                signer: cfg.secret.as_ref().map(|s| {
                    ThumborSigner::new(s.expose(), cfg.signature_hash, cfg.signature_length)
                }),
                cfg,
            })
            .collect();
        routes.sort_by_key(|r| std::cmp::Reverse(r.cfg.prefix.len()));
        Router { routes }
    }

    /// Parses and validates JSON configuration into a router.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        FilterConfig::from_json(bytes).map(Router::new)
    }

    /// Decides what to do with a request of `method` for `path` (the raw `:path`, with query).
    pub fn decide(&self, method: &str, path: &str) -> Decision {
        if is_internal(path) {
            return reject(404, "not found");
        }
        let path = path.split_once('?').map_or(path, |(p, _query)| p);
        let Some(route) = self
            .routes
            .iter()
            .find(|r| path.starts_with(r.cfg.prefix.as_str()))
        else {
            return Decision::Pass;
        };
        if method != "GET" && method != "HEAD" {
            return reject(405, "only GET and HEAD are allowed");
        }
        if path.len() > MAX_URL_LEN {
            return reject(414, "URL too long");
        }
        let rest = &path[route.cfg.prefix.len()..];
        match route.cfg.grammar {
            Grammar::Thumbor => route.thumbor(rest),
        }
    }
}

impl Route {
    fn thumbor(&self, rest: &str) -> Decision {
        let url = match ThumborPath::parse(rest) {
            Ok(url) => url,
            Err(e) => return grammar_rejection(e),
        };
        match (&url.signature, &self.signer) {
            (Signature::Unsafe, _) if self.cfg.allow_unsafe => {}
            (Signature::Unsafe, _) => return reject(403, "unsigned URLs are not allowed here"),
            (Signature::Hash(_), None) => {
                return reject(403, "signed URLs are not configured here");
            }
            (Signature::Hash(sig), Some(signer)) => {
                let signed = rest.split_once('/').map_or("", |(_sig, signed)| signed);
                if !signer.verify(signed, sig) {
                    return reject(403, "invalid signature");
                }
            }
        }
        let transform = match url.to_transform() {
            Ok(t) => t,
            Err(e) => return grammar_rejection(e),
        };
        let image = match url.image_path().map(|p| keys::normalize(&p)) {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return reject(400, e.to_string()),
            Err(e) => return grammar_rejection(e),
        };
        let request = RenderRequest {
            storage: self.cfg.storage.clone(),
            key: keys::join(&self.cfg.base_dir, &image),
            transform,
        };
        Decision::Render(Render {
            upstream_path: format!("{RENDER_PATH}?{}", request.to_query()),
            link: self
                .cfg
                .canonical_base_url
                .as_deref()
                .map(|base| link::canonical(base, &image)),
            request,
        })
    }
}

fn grammar_rejection(e: GrammarError) -> Decision {
    match e {
        GrammarError::Invalid(m) => reject(400, m),
        GrammarError::Unsupported(_) => reject(501, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::{Fit, Format};

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
        let r = rendered(router().decide("GET", &path));
        assert_eq!(r.request.storage, "photos");
        assert_eq!(r.request.key, "originals/a b/c.jpg");
        assert_eq!(r.request.transform.fit, Fit::FitIn);
        assert_eq!(r.request.transform.format, Some(Format::Webp));
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
        let r = rendered(router().decide("HEAD", "/img/open/unsafe/10x10/a.png"));
        assert_eq!(
            (r.request.storage.as_str(), r.request.key.as_str()),
            ("public", "a.png")
        );
        assert_eq!(r.link, None);
        assert_eq!(
            rejected(router().decide("GET", "/img/unsafe/10x10/a.png")).0,
            403
        );
    }

    #[test]
    fn statuses_for_bad_requests() {
        let r = router();
        assert_eq!(r.decide("GET", "/other/path"), Decision::Pass);
        assert_eq!(
            rejected(r.decide("GET", "/_pixmesh/v1/render?storage=photos&key=x")).0,
            404
        );
        assert_eq!(
            rejected(r.decide("POST", "/pixmesh.v1.ImageService/Render")).0,
            404,
            "a raw gRPC call would skip signature checks"
        );
        assert_eq!(rejected(r.decide("POST", "/img/open/unsafe/a.jpg")).0, 405);
        assert_eq!(rejected(r.decide("GET", "/img/open/unsafe/")).0, 400);
        assert_eq!(
            rejected(r.decide("GET", "/img/open/unsafe/../secret.jpg")).0,
            400
        );
        assert_eq!(
            rejected(r.decide("GET", "/img/open/unsafe/a%0D%0Ab.jpg")).0,
            400
        );
        assert_eq!(
            rejected(r.decide("GET", "/img/open/unsafe/smart/a/b.jpg")).0,
            501
        );
        assert_eq!(
            rejected(r.decide("GET", "/img/cST4Ko5_FqwT3BDn-Wf4gO3RFSk=/500x500/a.png")),
            (403, "invalid signature".to_owned())
        );
        let long = format!("/img/open/unsafe/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(rejected(r.decide("GET", &long)).0, 414);
    }

    #[test]
    fn signature_covers_the_raw_path() {
        let signer = ThumborSigner::new("mysecret", Default::default(), None);
        let sig = signer.sign("300x200/a.jpg");
        assert!(matches!(
            router().decide("GET", &format!("/img/{sig}/300x200/a.jpg")),
            Decision::Render(_)
        ));
        assert_eq!(
            rejected(router().decide("GET", &format!("/img/{sig}/300x201/a.jpg"))).0,
            403
        );
    }
}
