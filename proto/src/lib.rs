//! The gRPC contract between the pixmesh filter (through Envoy's gRPC-JSON transcoder) and the
//! sidecar, generated from `pixmesh/v1/images.proto`.

/// `google.api` messages used by the contract.
pub mod google {
    /// `google.api.HttpBody` and the HTTP rule annotations.
    pub mod api {
        tonic::include_proto!("google.api");
    }
}

/// The `pixmesh` proto package (nested as generated code refers to it).
pub mod pixmesh {
    /// `pixmesh.v1`: the image service.
    pub mod v1 {
        tonic::include_proto!("pixmesh.v1");
    }
}

pub use pixmesh::v1;

/// The encoded `FileDescriptorSet` (with its `google.api.http` options) for Envoy's
/// `grpc_json_transcoder.proto_descriptor`.
pub const DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/pixmesh.pb"));

/// Fully qualified service name, for the transcoder's `services` list.
pub const SERVICE_NAME: &str = "pixmesh.v1.ImageService";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_prefix_matches_the_service() {
        assert_eq!(
            pixmesh_core::render::GRPC_PREFIX,
            format!("/{SERVICE_NAME}/"),
            "the filter must reject raw gRPC calls to this service"
        );
    }

    #[test]
    fn descriptor_keeps_the_http_rules() {
        // The HTTP path must be in the descriptor Envoy loads, and it must be the path the
        // filter rewrites to.
        let needle = pixmesh_core::render::RENDER_PATH.as_bytes();
        assert!(
            DESCRIPTOR_SET.windows(needle.len()).any(|w| w == needle),
            "the descriptor set lost the google.api.http options"
        );
        assert!(DESCRIPTOR_SET.windows(4).any(|w| w == b"HEAD"));
    }
}
