//! The gRPC image service: `Render` (streaming, behind the transcoder), `RenderUnary` (call
//! mode) and `Health`.
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

/// Size of each streamed `HttpBody` message.
const CHUNK: usize = 64 * 1024;

/// The tonic service: renders what the filter vouched for ([`pixmesh_core::vouch`]).
#[derive(Clone)]
pub struct ImageService {
    renderer: Arc<Renderer>,
    voucher: Voucher,
}

impl ImageService {
    /// The service of `renderer`, rendering only requests `voucher` accepts.
    pub fn new(renderer: Arc<Renderer>, voucher: Voucher) -> Self {
        ImageService { renderer, voucher }
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
        let rendition = self.renderer.handle(req, &md, &self.voucher).await?;
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
        let rendition = self.renderer.handle(req, &md, &self.voucher).await?;
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

    async fn health(
        &self,
        _request: Request<v1::HealthRequest>,
    ) -> Result<Response<v1::HealthResponse>, Status> {
        Ok(Response::new(v1::HealthResponse {
            status: v1::health_response::Status::Serving.into(),
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
