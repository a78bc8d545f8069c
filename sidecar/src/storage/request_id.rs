//! Every S3 request made for a render request carries its request id (Envoy's `x-request-id`)
//! as `x-request-id`, so an S3 server that logs request headers (MinIO's audit log, a proxy in
//! front of the bucket) can be matched with pixmesh's logs. The id comes from the render
//! request's task ([`crate::telemetry::logging::request_id`]); work shared by identical requests
//! carries the id of the one that does it.

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
        Ok(())
    }
}
