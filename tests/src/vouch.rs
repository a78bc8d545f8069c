//! The render key of this test process ([`pixmesh_core::vouch`]): every [`crate::Stack`]'s
//! filter and sidecar share it, and tests that call the sidecar's service directly vouch for
//! their requests with it, as the filter does.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use pixmesh_core::vouch::{HEADER, Voucher};
use pixmesh_proto::v1;
use pixmesh_sidecar::serving::{grpc::ImageService, state::Renderer, wire::to_core};
use tonic::metadata::MetadataValue;

/// A random key, made once per test process.
pub fn render_key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).expect("random bytes");
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    })
}

/// The voucher of [`render_key`].
pub fn voucher() -> Voucher {
    Voucher::new(render_key().as_bytes()).expect("a long key")
}

/// The sidecar's service over `renderer`, keyed with [`render_key`].
pub fn service(renderer: Arc<Renderer>) -> ImageService {
    ImageService::new(renderer, voucher())
}

/// `req` with the proof the filter would send with it.
pub fn vouched(req: v1::RenderRequest) -> tonic::Request<v1::RenderRequest> {
    let proof = to_core(req.clone())
        .map(|core| voucher().vouch(&core, SystemTime::now()))
        // A request the sidecar refuses anyway: any proof will do.
        .unwrap_or_default();
    let mut request = tonic::Request::new(req);
    request.metadata_mut().insert(
        HEADER,
        MetadataValue::try_from(proof.as_str()).expect("a proof is ASCII"),
    );
    request
}
