//! Every S3 request made for a render request carries its request id (Envoy's `x-request-id`)
//! as `x-request-id`, so an S3 server that logs request headers (MinIO's audit log, a proxy in
//! front of the bucket) can be matched with pixmesh's logs. The id comes from the render
//! request's task ([`crate::telemetry::logging::request_id`]); work shared by identical requests
//! carries the id of the one that does it. A traced request's S3 requests carry its W3C
//! `traceparent` too ([`crate::telemetry::traces::outgoing`]).

use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};

/// The SDK interceptor adding the header (signed with the rest).
#[derive(Debug)]
pub struct RequestId;

impl Intercept for RequestId {
    fn name(&self) -> &'static str {
        "pixmesh::RequestId"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if let Some(id) = crate::telemetry::logging::request_id() {
            // Visible ASCII (it came as gRPC metadata) and bounded: a valid header value.
            context
                .request_mut()
                .headers_mut()
                .insert("x-request-id", id);
        }
        // The render request's span, when traced, as the parent of the storage's.
        for (name, value) in crate::telemetry::traces::outgoing() {
            // Made by the propagator from a parsed context; a value it could not send is left out.
            let _ = context.request_mut().headers_mut().try_insert(name, value);
        }
        Ok(())
    }
}
