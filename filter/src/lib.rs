//! pixmesh's proxy-wasm HTTP filter.
//!
//! Request path: [`pixmesh_core::router::Router`] decides whether a request is an image URL;
//! if so its `:path` becomes the transcoder's render path, otherwise it passes untouched or is
//! answered here (400/403/404/405/414/501, plain text).
//!
//! The request's headers go to the router, which reads `Accept` where a URL asks for its
//! format to be chosen ("auto"; see [`pixmesh_core::accept`]) and the headers and cookies a
//! route's renditions vary with ([`pixmesh_core::cachekey`]).
//!
//! Response path, only for requests this filter rewrote: strip the `grpc-status` the transcoder
//! leaks, apply the sidecar's `x-http-status` (304/413/415/422/…), add the canonical `Link`
//! header, add `Vary: Accept` to every response (304s and errors too) of a request whose
//! format was chosen from `Accept`, and `Vary` on the route's cache-key headers (and `cookie`), and turn a gRPC error that arrives in trailers (after the
//! body started) into a reset, so a truncated image is never cached as a complete 200.

use std::rc::Rc;

use pixmesh_core::router::{Decision, Router};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PixmeshRoot { router: None })
    });
}}

/// Holds the validated configuration, parsed once per VM in `on_configure`.
struct PixmeshRoot {
    router: Option<Rc<Router>>,
}

impl Context for PixmeshRoot {}

impl RootContext for PixmeshRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log::error!("pixmesh: the plugin has no configuration");
            return false;
        };
        match Router::from_json(&bytes) {
            Ok(router) => {
                self.router = Some(Rc::new(router));
                true
            }
            Err(e) => {
                log::error!("pixmesh: {e}");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Pixmesh {
            router: Rc::clone(self.router.as_ref()?),
            link: None,
            vary_accept: false,
            vary: None,
            rendering: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Per-request state: only what the response path needs.
struct Pixmesh {
    router: Rc<Router>,
    /// `Link` header for the response, when the route has a canonical base URL.
    link: Option<String>,
    /// The output format was chosen from `Accept`: the response varies with it.
    vary_accept: bool,
    /// The route's renditions vary with these request headers (and cookies): `Vary` value.
    vary: Option<String>,
    /// This request was rewritten into a render request.
    rendering: bool,
}

impl Context for Pixmesh {}

impl HttpContext for Pixmesh {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let path = self.get_http_request_header(":path").unwrap_or_default();
        let method = self.get_http_request_header(":method").unwrap_or_default();
        let headers = self.get_http_request_headers();
        let now = self.get_current_time();
        match self.router.decide_request(&method, &path, &headers, now) {
            Decision::Pass => Action::Continue,
            Decision::Reject(r) => {
                log::debug!("pixmesh: {} {method} {path}: {}", r.status, r.message);
                let body = format!("{}\n", r.message);
                self.send_http_response(
                    u32::from(r.status),
                    vec![("content-type", "text/plain; charset=utf-8")],
                    Some(body.as_bytes()),
                );
                Action::Pause
            }
            Decision::Render(r) => {
                self.set_http_request_header(":path", Some(&r.upstream_path));
                self.link = r.link;
                self.vary_accept = r.vary_accept;
                self.vary = r.vary;
                self.rendering = true;
                Action::Continue
            }
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.rendering {
            return Action::Continue;
        }
        // The transcoder leaks these on unary success; they mean nothing to HTTP clients.
        self.set_http_response_header("grpc-status", None);
        self.set_http_response_header("grpc-message", None);
        if let Some(status) = self.get_http_response_header("x-http-status") {
            self.set_http_response_header("x-http-status", None);
            match status.parse::<u16>() {
                Ok(s @ 100..=599) => {
                    self.set_http_response_header(":status", Some(&s.to_string()));
                    if s == 304 {
                        self.set_http_response_header("content-type", None);
                        self.set_http_response_header("content-length", None);
                    }
                }
                _ => log::warn!("pixmesh: sidecar sent invalid x-http-status {status:?}"),
            }
        }
        let ok = matches!(
            self.get_http_response_header(":status").as_deref(),
            Some("200" | "304")
        );
        if let (true, Some(link)) = (ok, &self.link) {
            self.add_http_response_header("link", link);
        }
        if self.vary_accept {
            self.add_http_response_header("vary", "Accept");
        }
        if let Some(vary) = &self.vary {
            self.add_http_response_header("vary", vary);
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.rendering {
            let status = self.get_http_response_trailer("grpc-status");
            if status.as_deref().is_some_and(|s| s != "0") {
                log::warn!(
                    "pixmesh: render failed after the response started (grpc-status {status:?}); resetting"
                );
                // Headers are already downstream, so Envoy turns this into a stream reset.
                self.send_http_response(502, vec![], None);
                return Action::Pause;
            }
        }
        Action::Continue
    }
}
