//! The gRPC image service: `Render` (streaming, behind the transcoder), `RenderCall` (the
//! filter's call mode: the whole HTTP answer in one message), `RenderUnary` and `Health`.
//!
//! The service answers with the rendition's response headers (`etag`, `last-modified`,
//! `cache-control`, `x-http-status` for a 304) and streams its body in chunks.

use std::pin::Pin;
use std::sync::Arc;

use pixmesh_core::vouch::Voucher;
use pixmesh_proto::google::api::HttpBody;
use pixmesh_proto::v1;
use tokio_stream::Stream;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Response, Status};

use super::state::{Body, Renderer, Rendition};
use super::status::http_status;
use crate::telemetry::health::{Phase, Readiness};
use crate::telemetry::metrics::Rpc;

/// Size of each streamed `HttpBody` message.
const CHUNK: usize = 64 * 1024;

/// Request metadata: the largest rendition the caller takes (`RenderCall`).
const MAX_BYTES_HEADER: &str = "x-pixmesh-max-bytes";

/// The body of an error, as Envoy's gRPC-JSON transcoder writes one (`convert_grpc_status`):
/// `google.rpc.Status` in JSON, without details.
fn error_body(status: &Status) -> Vec<u8> {
    serde_json::json!({ "code": status.code() as i32, "message": status.message() })
        .to_string()
        .into_bytes()
}

/// The refusal of a rendition of `len` bytes over the `max` the filter's call mode takes (413).
pub(super) fn over_call_limit(len: usize, max: usize) -> Status {
    let mut refused = Status::failed_precondition(format!(
        "the rendition ({len} bytes) is larger than the filter's call mode takes ({max} bytes): \
         raise call.max_bytes, or serve this route through the transcoder"
    ));
    refused
        .metadata_mut()
        .insert("x-http-status", MetadataValue::from(413));
    tracing::info!(bytes = len, max, "rendition over the call mode's limit");
    refused
}

/// `RenderCall`'s answer to an error.
fn call_error(status: &Status) -> v1::CallResponse {
    v1::CallResponse {
        status: u32::from(http_status(status)),
        headers: vec![v1::Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        body: error_body(status).into(),
    }
}

/// The tonic service: renders what the filter vouched for ([`pixmesh_core::vouch`]).
#[derive(Clone)]
pub struct ImageService {
    renderer: Arc<Renderer>,
    voucher: Voucher,
    readiness: Arc<Readiness>,
}

impl ImageService {
    /// The service of `renderer`, rendering only requests `voucher` accepts; its `Health`
    /// answers serving.
    pub fn new(renderer: Arc<Renderer>, voucher: Voucher) -> Self {
        ImageService {
            renderer,
            voucher,
            readiness: Arc::new(Readiness::new(Phase::Serving)),
        }
    }

    /// Its `Health` answers from `readiness`.
    pub fn with_readiness(mut self, readiness: Arc<Readiness>) -> Self {
        self.readiness = readiness;
        self
    }
}

type BodyStream = Pin<Box<dyn Stream<Item = Result<HttpBody, Status>> + Send>>;

#[tonic::async_trait]
impl v1::image_service_server::ImageService for ImageService {
    type RenderStream = BodyStream;

    async fn render(
        &self,
        request: Request<v1::RenderRequest>,
    ) -> Result<Response<Self::RenderStream>, Status> {
        let (md, _, req) = request.into_parts();
        let rendition = (self.renderer)
            .answer(Rpc::Render, req, &md, &self.voucher)
            .await?;
        let headers = self.renderer.headers(&rendition);
        let (messages, held): (Vec<Result<HttpBody, Status>>, _) = match rendition {
            Rendition::NotModified { .. } => (Vec::new(), None),
            Rendition::Image {
                body: Body { bytes, held },
                content_type,
                ..
            } => {
                let messages = (0..bytes.len())
                    .step_by(CHUNK)
                    .map(|start| {
                        Ok(HttpBody {
                            content_type: if start == 0 {
                                content_type.clone()
                            } else {
                                String::new()
                            },
                            data: bytes.slice(start..(start + CHUNK).min(bytes.len())),
                            extensions: Vec::new(),
                        })
                    })
                    .collect();
                (messages, Some(held))
            }
        };
        // The stream keeps the body's share of the budget until it is sent or dropped.
        let stream = tokio_stream::StreamExt::map(tokio_stream::iter(messages), move |m| {
            let _ = &held;
            m
        });
        let mut response = Response::new(Box::pin(stream) as BodyStream);
        *response.metadata_mut() = headers;
        Ok(response)
    }

    async fn render_unary(
        &self,
        request: Request<v1::RenderRequest>,
    ) -> Result<Response<HttpBody>, Status> {
        let (md, _, req) = request.into_parts();
        let rendition = (self.renderer)
            .answer(Rpc::RenderUnary, req, &md, &self.voucher)
            .await?;
        let headers = self.renderer.headers(&rendition);
        let body = match rendition {
            Rendition::NotModified { .. } => HttpBody::default(),
            Rendition::Image {
                body, content_type, ..
            } => HttpBody {
                content_type,
                data: body.bytes,
                extensions: Vec::new(),
            },
        };
        let mut response = Response::new(body);
        *response.metadata_mut() = headers;
        Ok(response)
    }

    async fn render_call(
        &self,
        request: Request<v1::RenderRequest>,
    ) -> Result<Response<v1::CallResponse>, Status> {
        let (md, _, req) = request.into_parts();
        let max = md
            .get(MAX_BYTES_HEADER)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        let rendition = match (self.renderer)
            .answer_within(Rpc::RenderCall, req, &md, &self.voucher, max)
            .await
        {
            Ok(rendition) => rendition,
            Err(status) => return Ok(Response::new(call_error(&status))),
        };
        let mut headers: Vec<v1::Header> = self
            .renderer
            .headers(&rendition)
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(name, value) => Some(v1::Header {
                    name: name.as_str().to_owned(),
                    value: value.to_str().ok()?.to_owned(),
                }),
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .filter(|h| h.name != "x-http-status")
            .collect();
        let answer = match rendition {
            Rendition::NotModified { .. } => v1::CallResponse {
                status: 304,
                headers,
                body: Default::default(),
            },
            Rendition::Image {
                body, content_type, ..
            } => {
                headers.push(v1::Header {
                    name: "content-type".into(),
                    value: content_type,
                });
                v1::CallResponse {
                    status: 200,
                    headers,
                    body: body.bytes,
                }
            }
        };
        Ok(Response::new(answer))
    }

    async fn health(
        &self,
        _request: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        let status = if self.readiness.state().is_ready() {
            v1::health_response::Status::Serving
        } else {
            v1::health_response::Status::NotServing
        };
        Ok(Response::new(v1::HealthResponse {
            status: status.into(),
        }))
    }
}

impl Renderer {
    fn headers(&self, r: &Rendition) -> MetadataMap {
        let mut md = MetadataMap::new();
        let mut put = |name: &'static str, value: &str| {
            if let Ok(v) = MetadataValue::try_from(value) {
                md.insert(name, v);
            }
        };
        match r {
            Rendition::NotModified { etag } => {
                put("etag", etag);
                put("x-http-status", "304");
            }
            Rendition::Image {
                etag,
                last_modified,
                ..
            } => {
                put("etag", etag);
                if let Some(lm) = last_modified {
                    put("last-modified", lm);
                }
            }
        }
        md.insert("cache-control", self.cache_control.clone());
        md
    }
}
