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
//!
//! Every render request carries the filter's proof that it made it ([`pixmesh_core::vouch`]):
//! the sidecar renders nothing else. An image request must have no body (Envoy's transcoder
//! would merge one into the render request): one is refused with 400.
//!
//! Call mode (`"call"` in the configuration, for gateways that take a wasm filter and nothing
//! else): instead of rewriting the request for the transcoder, the filter calls the sidecar's
//! `RenderCall` itself (`dispatch_grpc_call`) and answers with its status, headers and body
//! (`send_http_response`), adding the same `Link`, `Vary` and `nosniff` headers.
//!
//! Host data is never `unwrap`ped: headers are read as bytes, and a value that is not UTF-8
//! counts as absent (a `:path` that is not UTF-8 is never rendered).

mod metrics;

use std::rc::Rc;

use std::time::Duration;

use pixmesh_core::call::{self, CallConfig, CallResponse};
use pixmesh_core::config::{FilterConfig, RENDER_KEY_ENV};
use pixmesh_core::router::{Decision, GRAMMAR_HEADER, Rejection, Router};
use pixmesh_core::vouch::{self, Voucher};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, Bytes, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(PixmeshRoot { config: None })
    });
}}

/// Holds the validated configuration, parsed once per VM in `on_configure`.
struct PixmeshRoot {
    config: Option<Rc<Configured>>,
}

/// What every request of this VM shares.
struct Configured {
    router: Router,
    voucher: Voucher,
    /// Call mode's settings; `None`: the transcoder.
    call: Option<CallConfig>,
}

/// The configuration in `bytes`, its `{"env": …}` secrets read from the VM's environment, and
/// the render key from there too when it has none of its own.
fn configure(bytes: &[u8]) -> Result<Configured, pixmesh_core::config::ConfigError> {
    let config = FilterConfig::from_json_with_env(bytes, &|name| std::env::var(name).ok())?;
    let voucher = config.voucher(std::env::var(RENDER_KEY_ENV).ok().as_deref())?;
    let call = config.call.clone();
    Ok(Configured {
        router: Router::new(config),
        voucher,
        call,
    })
}

/// A header value as text; not UTF-8 counts as absent.
fn text(value: Option<Bytes>) -> Option<String> {
    value.and_then(|v| String::from_utf8(v).ok())
}

impl Context for PixmeshRoot {}

impl RootContext for PixmeshRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            log::error!("pixmesh: the plugin has no configuration");
            return false;
        };
        match configure(&bytes) {
            Ok(configured) => {
                self.config = Some(Rc::new(configured));
                metrics::define();
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
            config: Rc::clone(self.config.as_ref()?),
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
    config: Rc<Configured>,
    /// `Link` header for the response, when the route has a canonical base URL.
    link: Option<String>,
    /// The output format was chosen from `Accept`: the response varies with it.
    vary_accept: bool,
    /// The route's renditions vary with these request headers (and cookies): `Vary` value.
    vary: Option<String>,
    /// This request was rewritten into a render request.
    rendering: bool,
}

impl Context for Pixmesh {
    fn on_grpc_call_response(&mut self, _token_id: u32, status_code: u32, response_size: usize) {
        let answer = match status_code {
            0 => proxy_wasm::hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size)
                .ok()
                .flatten()
                .and_then(|bytes| CallResponse::decode(&bytes).ok())
                .unwrap_or_else(|| {
                    log::warn!("pixmesh: the sidecar's answer could not be read");
                    metrics::call_error();
                    call::failed(13)
                }),
            code => {
                log::warn!("pixmesh: the call to the sidecar failed with gRPC status {code}");
                metrics::call_error();
                call::failed(code)
            }
        };
        self.answer(answer);
    }
}

impl Pixmesh {
    /// Calls the sidecar for `r` (call mode); the answer comes in `on_grpc_call_response`.
    fn call(
        &mut self,
        call: &CallConfig,
        r: &pixmesh_core::router::Render,
        proof: &str,
        headers: &[(String, String)],
    ) -> Action {
        let max = call.max_bytes.to_string();
        let mut metadata: Vec<(&str, &[u8])> = vec![
            (vouch::HEADER, proof.as_bytes()),
            (call::MAX_BYTES_HEADER, max.as_bytes()),
        ];
        metadata.extend(
            headers
                .iter()
                .filter(|(name, _)| {
                    name.eq_ignore_ascii_case("if-none-match")
                        || name.eq_ignore_ascii_case("x-request-id")
                        // W3C trace context: the sidecar's spans continue the client's trace.
                        || name.eq_ignore_ascii_case("traceparent")
                        || name.eq_ignore_ascii_case("tracestate")
                        || name.eq_ignore_ascii_case(GRAMMAR_HEADER)
                })
                .map(|(name, value)| (name.as_str(), value.as_bytes())),
        );
        let sent = self.dispatch_grpc_call(
            // The cluster, or a GrpcService naming it and the :authority.
            &call.upstream(),
            call::SERVICE,
            call::METHOD,
            metadata,
            Some(&r.request.to_proto()),
            Duration::from_millis(call.timeout_ms),
        );
        match sent {
            Ok(_) => Action::Pause,
            Err(status) => {
                log::warn!("pixmesh: cannot call the sidecar: {status:?}");
                metrics::call_error();
                self.answer(call::failed(14));
                Action::Pause
            }
        }
    }

    /// Answers a call-mode request with the sidecar's `answer`, adding what the response path
    /// adds in transcoder mode.
    fn answer(&mut self, answer: CallResponse) {
        let mut headers: Vec<(&str, &str)> = answer
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        if let (200 | 304, Some(link)) = (answer.status, &self.link) {
            headers.push(("link", link));
        }
        if self.vary_accept {
            headers.push(("vary", "Accept"));
        }
        if let Some(vary) = &self.vary {
            headers.push(("vary", vary));
        }
        headers.push(("x-content-type-options", "nosniff"));
        let body = (answer.status != 304).then_some(answer.body.as_slice());
        // The local reply goes through this filter's response hooks too: nothing to add there.
        self.rendering = false;
        self.send_http_response(u32::from(answer.status), headers, body);
    }

    /// Answers the request here with `r`'s status and message.
    fn reject(&self, r: &Rejection) -> Action {
        let body = format!("{}\n", r.message);
        self.send_http_response(
            u32::from(r.status),
            vec![
                ("content-type", "text/plain; charset=utf-8"),
                ("x-content-type-options", "nosniff"),
            ],
            Some(body.as_bytes()),
        );
        Action::Pause
    }
}

/// The answer to an image request that came with a body.
fn body_refused() -> Rejection {
    Rejection {
        status: 400,
        message: "image requests take no body".into(),
    }
}

impl HttpContext for Pixmesh {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let raw_path = self
            .get_http_request_header_bytes(":path")
            .unwrap_or_default();
        let method = text(self.get_http_request_header_bytes(":method")).unwrap_or_default();
        let headers: Vec<(String, String)> = self
            .get_http_request_headers_bytes()
            .into_iter()
            .filter_map(|(name, value)| Some((name, String::from_utf8(value).ok()?)))
            .collect();
        let now = self.get_current_time();
        let path = String::from_utf8_lossy(&raw_path);
        let decision = match self
            .config
            .router
            .decide_request(&method, &path, &headers, now)
        {
            // Other routes' paths are theirs, whatever their bytes.
            Decision::Pass => Decision::Pass,
            // No grammar has a URL that is not UTF-8: never render what the lossy text says.
            _ if std::str::from_utf8(&raw_path).is_err() => Decision::Reject(Rejection {
                status: 400,
                message: "the URL is not UTF-8".into(),
            }),
            decision => decision,
        };
        if !matches!(decision, Decision::Pass) {
            metrics::original(&method, &path);
        }
        match decision {
            Decision::Pass => {
                metrics::passed();
                Action::Continue
            }
            Decision::Reject(r) => {
                log::info!("pixmesh: {} {method} {path}: {}", r.status, r.message);
                metrics::refused(r.status, self.config.router.grammar(&path));
                self.reject(&r)
            }
            Decision::Render(r) => {
                metrics::rendered();
                if !r.skipped.is_empty() {
                    log::info!(
                        "pixmesh: {method} {path}: skipped unknown filters {}",
                        r.skipped.join(", ")
                    );
                }
                let proof = self.config.voucher.vouch(&r.request, now);
                self.link = r.link.clone();
                self.vary_accept = r.vary_accept;
                self.vary = r.vary.clone();
                let config = Rc::clone(&self.config);
                let grammar = config.router.grammar(&path).map_or("-", |g| g.name());
                if let Some(call) = &config.call {
                    let mut headers = headers;
                    headers.retain(|(name, _)| !name.eq_ignore_ascii_case(GRAMMAR_HEADER));
                    headers.push((GRAMMAR_HEADER.to_owned(), grammar.to_owned()));
                    return self.call(call, &r, &proof, &headers);
                }
                self.set_http_request_header(GRAMMAR_HEADER, Some(grammar));
                self.set_http_request_header(":path", Some(&r.upstream_path));
                self.set_http_request_header(vouch::HEADER, Some(&proof));
                self.rendering = true;
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        // The transcoder would merge a body into the render request. The sidecar would refuse
        // it (it no longer matches the proof), but it is the client's mistake: a 400, before
        // anything reaches the sidecar (the transcoder holds the request until its body ends).
        // An empty body (HTTP/2 headers, then an empty DATA frame ending the stream) is fine.
        if self.rendering && body_size > 0 {
            log::info!("pixmesh: 400: image request with a body");
            metrics::refused(400, None);
            self.rendering = false;
            return self.reject(&body_refused());
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if !self.rendering {
            return Action::Continue;
        }
        // The transcoder leaks these on unary success; they mean nothing to HTTP clients.
        self.set_http_response_header("grpc-status", None);
        self.set_http_response_header("grpc-message", None);
        if let Some(status) = text(self.get_http_response_header_bytes("x-http-status")) {
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
            text(self.get_http_response_header_bytes(":status")).as_deref(),
            Some("200" | "304")
        );
        if let (true, Some(link)) = (ok, &self.link) {
            self.add_http_response_header("link", link);
        }
        // Images carry their real type and errors are JSON: never let a browser guess.
        self.set_http_response_header("x-content-type-options", Some("nosniff"));
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
            let status = text(self.get_http_response_trailer_bytes("grpc-status"));
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
