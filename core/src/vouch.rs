//! The filter's proof to the sidecar that it made a render request: a MAC over the whole
//! request, keyed by a secret only the two share (`render_key`).
//!
//! The sidecar renders any object of any configured storage it is asked for, so it must render
//! only what the filter checked (route, signature, prefix, base dir). Two things could ask it
//! otherwise: a request body, which Envoy's gRPC-JSON transcoder merges into the request the
//! filter wrote (body fields override query fields), and anything else that reaches the
//! sidecar's port (in a mesh it is a Service). Both fail this check: the MAC covers
//! [`RenderRequest::to_query`], every field the sidecar reads, so a changed field, a missing
//! header or another key is refused.
//!
//! The header value is `v1.EXPIRES.MAC`: `EXPIRES` in Unix seconds, `MAC` the unpadded
//! base64url HMAC-SHA256 of `pixmesh-render/v1\nEXPIRES\nQUERY`. A header seen on the wire is
//! good for that one request until it expires ([`VALIDITY_SECS`]).

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::render::RenderRequest;

/// The request header (gRPC metadata at the sidecar) that carries the proof.
pub const HEADER: &str = "x-pixmesh-vouch";

/// How long a proof stays good: long enough for clock skew between Envoy and the sidecar and
/// a request queued in Envoy, short enough that a captured one is soon useless.
pub const VALIDITY_SECS: u64 = 300;

/// Shortest key accepted, in bytes: 256 bits, as HMAC-SHA256 wants.
pub const MIN_KEY_LEN: usize = 32;

/// Why a key or a proof was refused. Messages are public: they never carry the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VouchError {
    /// The configured key is too short to be a secret.
    #[error("render_key must be at least {MIN_KEY_LEN} bytes (for example 64 hex digits)")]
    WeakKey,
    /// The request carries no proof.
    #[error("the render request carries no {HEADER} header")]
    Missing,
    /// The header is not `v1.EXPIRES.MAC`.
    #[error("the {HEADER} header is malformed")]
    Malformed,
    /// The proof has expired (or is dated too far ahead).
    #[error("the {HEADER} header has expired")]
    Expired,
    /// The MAC does not match the request: another request, or another key.
    #[error("the render request is not the one the filter vouched for")]
    Mismatch,
}

/// Makes and checks proofs with one key.
#[derive(Clone)]
pub struct Voucher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Voucher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Voucher(<redacted>)")
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

impl Voucher {
    /// A voucher keyed by `key` (at least [`MIN_KEY_LEN`] bytes).
    pub fn new(key: &[u8]) -> Result<Self, VouchError> {
        if key.len() < MIN_KEY_LEN {
            return Err(VouchError::WeakKey);
        }
        let mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| VouchError::WeakKey)?;
        Ok(Voucher { mac })
    }

    fn mac(&self, expires: u64, req: &RenderRequest) -> [u8; 32] {
        let mut mac = self.mac.clone();
        mac.update(format!("pixmesh-render/v1\n{expires}\n").as_bytes());
        mac.update(req.to_query().as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The header value vouching for `req`, made at `now`.
    pub fn vouch(&self, req: &RenderRequest, now: SystemTime) -> String {
        let expires = unix_secs(now) + VALIDITY_SECS;
        let mac = URL_SAFE_NO_PAD.encode(self.mac(expires, req));
        format!("v1.{expires}.{mac}")
    }

    /// Whether `header` (the [`HEADER`] value, `None` without one) vouches for `req` at `now`.
    pub fn check(
        &self,
        req: &RenderRequest,
        header: Option<&str>,
        now: SystemTime,
    ) -> Result<(), VouchError> {
        let header = header.ok_or(VouchError::Missing)?;
        let mut parts = header.split('.');
        let (Some("v1"), Some(expires), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VouchError::Malformed);
        };
        let expires: u64 = expires.parse().map_err(|_| VouchError::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| VouchError::Malformed)?;
        if !bool::from(mac.as_slice().ct_eq(&self.mac(expires, req))) {
            return Err(VouchError::Mismatch);
        }
        let now = unix_secs(now);
        // Dated further ahead than one validity: not made by a filter with a sane clock.
        if expires < now || expires > now + 2 * VALIDITY_SECS {
            return Err(VouchError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::Transform;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn request() -> RenderRequest {
        RenderRequest {
            storage: "photos".into(),
            key: "a/b.jpg".into(),
            version: None,
            transform: Transform {
                width: 100,
                height: 100,
                ..Transform::default()
            },
            cache_key: None,
            watermark: None,
            result_path: None,
        }
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_proof_holds_for_its_request_until_it_expires() {
        let v = Voucher::new(KEY).unwrap();
        let proof = v.vouch(&request(), at(1_000));
        assert_eq!(v.check(&request(), Some(&proof), at(1_000)), Ok(()));
        assert_eq!(v.check(&request(), Some(&proof), at(1_300)), Ok(()));
        assert_eq!(
            v.check(&request(), Some(&proof), at(1_301)),
            Err(VouchError::Expired)
        );
        assert_eq!(
            v.check(&request(), Some(&proof), at(0)),
            Err(VouchError::Expired),
            "dated too far ahead"
        );
    }

    #[test]
    fn any_other_request_key_or_header_is_refused() {
        let v = Voucher::new(KEY).unwrap();
        let proof = v.vouch(&request(), at(1_000));
        let other_key = RenderRequest {
            key: "private/b.jpg".into(),
            ..request()
        };
        let other_storage = RenderRequest {
            storage: "results".into(),
            ..request()
        };
        let bigger = RenderRequest {
            transform: Transform {
                width: 4000,
                height: 4000,
                ..Transform::default()
            },
            ..request()
        };
        let cache_key = RenderRequest {
            cache_key: Some("x".into()),
            ..request()
        };
        for req in [other_key, other_storage, bigger, cache_key] {
            assert_eq!(
                v.check(&req, Some(&proof), at(1_000)),
                Err(VouchError::Mismatch),
                "{req:?}"
            );
        }
        let stranger = Voucher::new(b"another key of thirty-two bytes!").unwrap();
        assert_eq!(
            stranger.check(&request(), Some(&proof), at(1_000)),
            Err(VouchError::Mismatch)
        );
        assert_eq!(
            v.check(&request(), None, at(1_000)),
            Err(VouchError::Missing)
        );
        let (_, mac) = proof.rsplit_once('.').unwrap();
        let later = format!("v1.2000.{mac}");
        assert_eq!(
            v.check(&request(), Some(&later), at(1_000)),
            Err(VouchError::Mismatch),
            "the expiry is signed"
        );
        for bad in ["", "v1", "v1.x.y", "v2.1300.AAAA", "v1.1300.!!", "v1.1.2.3"] {
            assert_eq!(
                v.check(&request(), Some(bad), at(1_000)),
                Err(VouchError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(Voucher::new(b"secret").unwrap_err(), VouchError::WeakKey);
        assert_eq!(Voucher::new(&KEY[1..]).unwrap_err(), VouchError::WeakKey);
    }
}
