//! The filter's call mode: where only a wasm filter can be added (Istio's WasmPlugin, Envoy
//! Gateway's EnvoyExtensionPolicy), the filter calls the sidecar itself (Envoy's
//! `dispatch_grpc_call`, `pixmesh.v1.ImageService/RenderCall`) and answers the client with what
//! comes back, instead of handing the request to the gRPC-JSON transcoder. The sidecar answers
//! with the whole HTTP response in one `CallResponse` (a unary call's metadata never reaches
//! the filter); this module decodes it, and makes the answer when the call itself fails.

use serde::Deserialize;

/// The gRPC service called.
pub const SERVICE: &str = "pixmesh.v1.ImageService";
/// The method called.
pub const METHOD: &str = "RenderCall";
/// Request metadata: the largest rendition the filter takes; the sidecar refuses larger ones
/// (413) before sending them.
pub const MAX_BYTES_HEADER: &str = "x-pixmesh-max-bytes";

/// `"call"` in the filter's configuration: render through the sidecar directly.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallConfig {
    /// The Envoy cluster of the sidecar (HTTP/2).
    pub cluster: String,
    /// How long a render may take, in milliseconds (then 504).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// The largest rendition answered, in bytes: the whole image passes through the wasm VM's
    /// memory (413 beyond).
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    /// The call's HTTP/2 `:authority`. Envoy sends the cluster name unless this is set, and the
    /// names Istio (`outbound|PORT||HOST`) and Envoy Gateway (`httproute/NS/NAME/rule/N`) give
    /// clusters are no valid authority: the sidecar (and a mesh proxy in front of it) resets
    /// such a stream. Required when `cluster` is not a valid authority; e.g. the sidecar
    /// Service's `HOST:PORT`.
    #[serde(default)]
    pub authority: Option<String>,
}

/// The most characters `cluster` and `authority` may have together ([`CallConfig::upstream`]).
const MAX_UPSTREAM: usize = 127 - 4;

/// Whether `s` is a valid HTTP/2 `:authority` (RFC 3986 host and port characters).
fn is_authority(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]%".contains(&b))
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_max_bytes() -> u64 {
    8 << 20
}

impl CallConfig {
    /// What is wrong with these settings, if anything.
    pub fn problem(&self) -> Option<&'static str> {
        if self.cluster.is_empty() {
            return Some("call.cluster is empty");
        }
        if !(100..=600_000).contains(&self.timeout_ms) {
            return Some("call.timeout_ms must be between 100 and 600000");
        }
        if !(1024..=(64 << 20)).contains(&self.max_bytes) {
            return Some("call.max_bytes must be between 1 KiB and 64 MiB");
        }
        match &self.authority {
            Some(a) if !is_authority(a) => {
                return Some("call.authority is not a valid HTTP/2 :authority (HOST[:PORT])");
            }
            Some(a) if !self.cluster.is_ascii() || self.cluster.len() + a.len() > MAX_UPSTREAM => {
                return Some(
                    "call.cluster and call.authority are too long together (123 characters at most)",
                );
            }
            None if !is_authority(&self.cluster) => {
                return Some(
                    "call.cluster is not a valid HTTP/2 :authority, which Envoy would send: \
                     set call.authority (e.g. the sidecar Service's HOST:PORT)",
                );
            }
            _ => {}
        }
        None
    }

    /// The sidecar for `dispatch_grpc_call`: the cluster's name, or with an authority a
    /// serialized `envoy.config.core.v3.GrpcService { envoy_grpc { cluster_name, authority } }`
    /// (Envoy takes either). The SDK passes it as text, so the encoding is kept ASCII: every
    /// length under 128 (checked by [`CallConfig::problem`]).
    pub fn upstream(&self) -> String {
        let Some(authority) = &self.authority else {
            return self.cluster.clone();
        };
        fn field(out: &mut String, number: u8, text: &str) {
            out.push(char::from(number << 3 | 2));
            out.push(char::from(text.len().min(127) as u8));
            out.push_str(text);
        }
        let mut envoy_grpc = String::new();
        field(&mut envoy_grpc, 1, &self.cluster);
        field(&mut envoy_grpc, 2, authority);
        let mut service = String::new();
        field(&mut service, 1, &envoy_grpc);
        service
    }
}

/// The sidecar's answer: status, headers and body of the HTTP response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    /// HTTP status.
    pub status: u16,
    /// Header names and values.
    pub headers: Vec<(String, String)>,
    /// The image, or the error's JSON.
    pub body: Vec<u8>,
}

/// Why a `CallResponse` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed CallResponse from the sidecar")]
pub struct DecodeError;

/// The answer when the call itself failed with gRPC status `code` (Envoy's view: the sidecar
/// unreachable is 14, a timeout 4 or 14): 503 when unavailable, 504 on a timeout, else 502,
/// with a body like the transcoder's.
pub fn failed(code: u32) -> CallResponse {
    let (status, message) = match code {
        4 => (504, "the render timed out"),
        14 => (503, "the image service is unavailable"),
        _ => (502, "the image service failed"),
    };
    CallResponse {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!(r#"{{"code":{code},"message":"{message}"}}"#).into_bytes(),
    }
}

/// A protobuf reader: varints and length-delimited fields, as `CallResponse` has.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.0.split_first().ok_or(DecodeError)?;
            self.0 = rest;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(DecodeError)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| DecodeError)?;
        if len > self.0.len() {
            return Err(DecodeError);
        }
        let (field, rest) = self.0.split_at(len);
        self.0 = rest;
        Ok(field)
    }

    /// The next field's number and wire type; `None` at the end.
    fn key(&mut self) -> Result<Option<(u64, u64)>, DecodeError> {
        if self.0.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        Ok(Some((key >> 3, key & 7)))
    }

    /// Skips a field of `wire` type that this reader does not want.
    fn skip(&mut self, wire: u64) -> Result<(), DecodeError> {
        match wire {
            0 => self.varint().map(drop),
            2 => self.bytes().map(drop),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                self.0 = self.0.get(n..).ok_or(DecodeError)?;
                Ok(())
            }
            _ => Err(DecodeError),
        }
    }
}

fn text(bytes: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError)
}

impl CallResponse {
    /// Decodes `pixmesh.v1.CallResponse`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader(bytes);
        let mut out = CallResponse::default();
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, 0) => out.status = u16::try_from(r.varint()?).map_err(|_| DecodeError)?,
                (2, 2) => {
                    let mut h = Reader(r.bytes()?);
                    let (mut name, mut value) = (String::new(), String::new());
                    while let Some((field, wire)) = h.key()? {
                        match (field, wire) {
                            (1, 2) => name = text(h.bytes()?)?,
                            (2, 2) => value = text(h.bytes()?)?,
                            (_, wire) => h.skip(wire)?,
                        }
                    }
                    out.headers.push((name, value));
                }
                (3, 2) => out.body = r.bytes()?.to_vec(),
                (_, wire) => r.skip(wire)?,
            }
        }
        if !(100..=599).contains(&out.status) {
            return Err(DecodeError);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `CallResponse { status: 200, headers: [etag: "x", content-type: image/png], body: "PNG" }`
    /// as prost encodes it (fields in order, strings length-prefixed).
    const ENCODED: &[u8] = b"\x08\xc8\x01\x12\x0b\x0a\x04etag\x12\x03\"x\"\
        \x12\x19\x0a\x0ccontent-type\x12\x09image/png\x1a\x03PNG";

    #[test]
    fn decodes_what_the_sidecar_sends() {
        let r = CallResponse::decode(ENCODED).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers,
            [
                ("etag".to_owned(), "\"x\"".to_owned()),
                ("content-type".to_owned(), "image/png".to_owned())
            ]
        );
        assert_eq!(r.body, b"PNG");
    }

    #[test]
    fn refuses_what_is_not_a_call_response() {
        for bad in [
            &ENCODED[..ENCODED.len() - 1],
            b"\x08",
            b"\x1a\x7f",
            b"\x08\x00",
            b"\x0b",
            b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
        ] {
            assert_eq!(CallResponse::decode(bad), Err(DecodeError), "{bad:?}");
        }
        let mut unknown = b"\x20\x05\x2a\x01z".to_vec();
        unknown.extend_from_slice(ENCODED);
        assert_eq!(
            CallResponse::decode(&unknown).unwrap(),
            CallResponse::decode(ENCODED).unwrap(),
            "unknown fields are skipped"
        );
    }

    fn config(cluster: &str, authority: Option<&str>) -> CallConfig {
        CallConfig {
            cluster: cluster.into(),
            timeout_ms: default_timeout_ms(),
            max_bytes: default_max_bytes(),
            authority: authority.map(Into::into),
        }
    }

    #[test]
    fn a_cluster_name_that_is_no_authority_needs_one() {
        assert_eq!(config("pixmesh_sidecar", None).problem(), None);
        for cluster in [
            "outbound|50051||pixmesh-sidecar.pixmesh.svc.cluster.local",
            "httproute/pixmesh/pixmesh/rule/0",
        ] {
            let problem = config(cluster, None).problem().unwrap();
            assert!(problem.contains("call.authority"), "{problem}");
            assert_eq!(
                config(cluster, Some("pixmesh-sidecar.pixmesh:50051")).problem(),
                None
            );
        }
        assert!(config("x", Some("a b")).problem().is_some());
        assert!(config("x", Some("")).problem().is_some());
    }

    #[test]
    fn the_upstream_is_the_cluster_or_a_grpc_service_with_the_authority() {
        assert_eq!(
            config("pixmesh_sidecar", None).upstream(),
            "pixmesh_sidecar"
        );
        // envoy.config.core.v3.GrpcService { envoy_grpc (1) { cluster_name (1), authority (2) } }
        assert_eq!(
            config("c|x", Some("h:1")).upstream().as_bytes(),
            b"\x0a\x0a\x0a\x03c|x\x12\x03h:1"
        );
        let longest = "c".repeat(MAX_UPSTREAM - 1);
        let c = config(&longest, Some("h"));
        assert_eq!(c.problem(), None);
        assert_eq!(c.upstream().len(), 2 + 127);
        assert!(c.upstream().is_ascii());
        let c = config(&format!("{longest}c"), Some("h"));
        assert!(c.problem().unwrap().contains("too long"));
    }

    #[test]
    fn failed_calls_answer_like_the_transcoder() {
        assert_eq!(failed(14).status, 503);
        assert_eq!(failed(4).status, 504);
        assert_eq!(failed(13).status, 502);
        let body = String::from_utf8(failed(14).body).unwrap();
        assert_eq!(
            body,
            r#"{"code":14,"message":"the image service is unavailable"}"#
        );
    }
}
