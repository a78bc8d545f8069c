//! The sidecar's error model: one enum, a public message per variant, the detail for logs,
//! and the gRPC status Envoy turns into the right HTTP status.

use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::pipeline::PipelineError;
use crate::serving::budget::BudgetError;
use crate::serving::pool::PoolError;
use crate::storage::StorageError;

/// The HTTP status a gRPC error answers with: the `x-http-status` [`RenderError::to_status`]
/// puts on it, else 500.
pub(super) fn http_status(status: &tonic::Status) -> u16 {
    status
        .metadata()
        .get("x-http-status")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(500)
}

/// Why a render failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RenderError {
    /// The request names a storage the sidecar does not have (400).
    #[error("unknown storage {0:?}")]
    UnknownStorage(String),
    /// The request is malformed (400): the filter and the sidecar disagree on the contract.
    #[error("bad render request: {0}")]
    BadRequest(String),
    /// Reading the source failed.
    #[error("source: {0}")]
    Source(StorageError),
    /// Writing the rendition to result storage failed, with `report_errors` on: 504 on a
    /// timeout, 503 when unreachable, else 502 (the request itself was fine).
    #[error("result storage: {0}")]
    ResultStorage(StorageError),
    /// Decoding, resizing or encoding failed.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// No render worker was free and the queue was full (503), or a worker was lost (500).
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The render alone needs more memory than the sidecar's budget (413).
    #[error(transparent)]
    Memory(#[from] BudgetError),
    /// Reading the watermark failed: statuses as for the source (404 when it is missing, as
    /// imagor answers for a missing watermark).
    #[error("watermark: {0}")]
    WatermarkSource(StorageError),
    /// The watermark is not an image pixmesh decodes or is corrupt (422: the request is well
    /// formed, what it names cannot be used), or exceeds the image limits (413).
    #[error("watermark: {0}")]
    WatermarkImage(PipelineError),
    /// The URL asks for the configured default watermark (imgproxy's `wm`) and the sidecar
    /// has none (501).
    #[error("not implemented: the default watermark (none is configured)")]
    NoDefaultWatermark,
    /// The request is not one the filter vouched for ([`pixmesh_core::vouch`]): a changed
    /// field (a request body merged in by the transcoder), another key, no proof at all (a
    /// caller that is not the filter), or an expired one (403).
    #[error("forbidden: {0}")]
    NotVouched(#[from] pixmesh_core::vouch::VouchError),
}

/// The status of a storage error reading what a render needs (the source, the watermark).
fn read_status(e: &StorageError) -> u16 {
    match e {
        StorageError::Unroutable(_) => 400,
        StorageError::NotFound => 404,
        StorageError::AccessDenied => 403,
        StorageError::TooLarge { .. } => 413,
        StorageError::VersionsUnsupported => 501,
        StorageError::Unavailable(_) => 503,
        StorageError::Timeout => 504,
        StorageError::WrongRegion(_) | StorageError::NoSuchBucket | StorageError::Other(_) => 502,
    }
}

impl RenderError {
    /// The HTTP status the client sees.
    pub fn http_status(&self) -> u16 {
        match self {
            RenderError::UnknownStorage(_) | RenderError::BadRequest(_) => 400,
            RenderError::Source(e) | RenderError::WatermarkSource(e) => read_status(e),
            RenderError::ResultStorage(e) => match e {
                StorageError::Unavailable(_) => 503,
                StorageError::Timeout => 504,
                _ => 502,
            },
            RenderError::Pipeline(e) => e.http_status(),
            RenderError::Pool(PoolError::Busy { .. }) => 503,
            RenderError::Pool(PoolError::Lost(_)) => 500,
            RenderError::Memory(_) => 413,
            RenderError::WatermarkImage(e) => match e {
                PipelineError::TooLarge(_) => 413,
                PipelineError::Encode(_) => 500,
                PipelineError::Cancelled(_) => 503,
                _ => 422,
            },
            RenderError::NoDefaultWatermark => 501,
            RenderError::NotVouched(_) => 403,
        }
    }

    /// Detail for logs; may name keys and endpoints, never credentials.
    pub fn detail(&self) -> String {
        match self {
            RenderError::Source(e) => format!("source: {}", e.detail()),
            RenderError::ResultStorage(e) => format!("result storage: {}", e.detail()),
            RenderError::WatermarkSource(e) => format!("watermark: {}", e.detail()),
            RenderError::Pool(PoolError::Lost(detail)) => format!("render worker failed: {detail}"),
            other => other.to_string(),
        }
    }

    /// The gRPC status: a code the transcoder maps to the same HTTP status where one exists,
    /// plus `x-http-status`, which the filter applies for the statuses it cannot express. Storage
    /// outages use `INTERNAL`, not `UNAVAILABLE`, so Envoy's retry-on-unavailable (meant for a
    /// sidecar that is down) does not multiply a slow storage's latency.
    pub fn to_status(&self) -> tonic::Status {
        let status = self.http_status();
        let code = match status {
            400 => Code::InvalidArgument,
            403 => Code::PermissionDenied,
            404 => Code::NotFound,
            504 => Code::DeadlineExceeded,
            413 | 415 | 422 => Code::FailedPrecondition,
            501 => Code::Unimplemented,
            _ => Code::Internal,
        };
        let mut s = tonic::Status::new(code, self.to_string());
        s.metadata_mut()
            .insert("x-http-status", MetadataValue::from(status));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (
                RenderError::Source(StorageError::NotFound),
                404,
                Code::NotFound,
            ),
            (
                RenderError::Source(StorageError::AccessDenied),
                403,
                Code::PermissionDenied,
            ),
            (
                RenderError::Source(StorageError::Unavailable("x".into())),
                503,
                Code::Internal,
            ),
            (
                RenderError::Source(StorageError::Timeout),
                504,
                Code::DeadlineExceeded,
            ),
            (
                RenderError::Source(StorageError::Other("x".into())),
                502,
                Code::Internal,
            ),
            (
                RenderError::ResultStorage(StorageError::AccessDenied),
                502,
                Code::Internal,
            ),
            (
                RenderError::ResultStorage(StorageError::Timeout),
                504,
                Code::DeadlineExceeded,
            ),
            (
                RenderError::ResultStorage(StorageError::Unavailable("x".into())),
                503,
                Code::Internal,
            ),
            (
                RenderError::Source(StorageError::VersionsUnsupported),
                501,
                Code::Unimplemented,
            ),
            (
                RenderError::Source(StorageError::WrongRegion("x".into())),
                502,
                Code::Internal,
            ),
            (
                RenderError::UnknownStorage("x".into()),
                400,
                Code::InvalidArgument,
            ),
            (
                RenderError::Source(StorageError::Unroutable(
                    pixmesh_core::buckets::RouteError::InvalidBucket,
                )),
                400,
                Code::InvalidArgument,
            ),
            (
                RenderError::Source(StorageError::NoSuchBucket),
                502,
                Code::Internal,
            ),
            (
                RenderError::Pipeline(PipelineError::UnsupportedFormat("gif".into())),
                415,
                Code::FailedPrecondition,
            ),
            (
                RenderError::Pool(PoolError::Busy { queued: 64 }),
                503,
                Code::Internal,
            ),
            (
                RenderError::Memory(BudgetError::TooLarge {
                    needed_mib: 2048,
                    budget_mib: 1024,
                }),
                413,
                Code::FailedPrecondition,
            ),
            (
                RenderError::WatermarkSource(StorageError::NotFound),
                404,
                Code::NotFound,
            ),
            (
                RenderError::WatermarkSource(StorageError::Timeout),
                504,
                Code::DeadlineExceeded,
            ),
            (
                RenderError::WatermarkImage(PipelineError::UnsupportedFormat("unknown".into())),
                422,
                Code::FailedPrecondition,
            ),
            (
                RenderError::WatermarkImage(PipelineError::Corrupt("x".into())),
                422,
                Code::FailedPrecondition,
            ),
            (
                RenderError::WatermarkImage(PipelineError::TooLarge("x".into())),
                413,
                Code::FailedPrecondition,
            ),
            (RenderError::NoDefaultWatermark, 501, Code::Unimplemented),
        ];
        for (err, http, code) in cases {
            assert_eq!(err.http_status(), http, "{err:?}");
            let st = err.to_status();
            assert_eq!(st.code(), code, "{err:?}");
            assert_eq!(
                st.metadata().get("x-http-status").unwrap(),
                &http.to_string()
            );
        }
    }

    #[test]
    fn public_messages_hide_storage_details() {
        let e = RenderError::Source(StorageError::Unavailable(
            "connect to http://10.0.0.1:9000 failed".into(),
        ));
        assert!(!e.to_status().message().contains("10.0.0.1"));
        assert!(e.detail().contains("10.0.0.1"));
        let e = RenderError::ResultStorage(StorageError::Other("HTTP 500 at 10.0.0.2".into()));
        assert!(!e.to_status().message().contains("10.0.0.2"));
        assert!(e.detail().contains("10.0.0.2"));
    }
}
