//! URL signatures and their constant-time verification.
//!
//! - thumbor/imagor: `base64url(HMAC(secret, path-after-HASH/))` with `=` padding kept, HMAC-SHA1
//!   by default, optionally SHA-256/SHA-512 and truncated to N characters.
//! - imgproxy: `base64url-nopad(HMAC-SHA256(key, salt ‖ path-after-signature))`, the path with its
//!   leading `/`; key and salt are hex; the digest may be truncated to N bytes; several key/salt
//!   pairs may be valid at once (rotation).
//! - ImageKit: `hex(HMAC-SHA1(private key, URL-after-endpoint ‖ expiry))` in `ik-s`, where the URL
//!   keeps its query without `ik-s`/`ik-t` and expiry is `ik-t` or `9999999999`.
//! - query style: `hex(HMAC-SHA256(secret, path-after-prefix[?query-without-sig]))` in `sig`.
//!
//! Every verification compares in constant time.

use std::fmt::Write;

use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

/// HMAC hash of a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    /// HMAC-SHA1 (thumbor's and imagor's default).
    #[default]
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

fn hmac_bytes(alg: HashAlg, key: &[u8], msg: &[u8]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
            .expect("HMAC accepts keys of any length");
        mac.update(msg);
        mac.finalize().into_bytes().to_vec()
    }
    match alg {
        HashAlg::Sha1 => run::<Hmac<sha1::Sha1>>(key, msg),
        HashAlg::Sha256 => run::<Hmac<sha2::Sha256>>(key, msg),
        HashAlg::Sha512 => run::<Hmac<sha2::Sha512>>(key, msg),
    }
}

/// Signs and verifies thumbor/imagor paths.
#[derive(Clone)]
pub struct ThumborSigner {
    secret: Vec<u8>,
    alg: HashAlg,
    truncate: Option<usize>,
}

impl std::fmt::Debug for ThumborSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThumborSigner")
            .field("secret", &"<redacted>")
            .field("alg", &self.alg)
            .field("truncate", &self.truncate)
            .finish()
    }
}

impl ThumborSigner {
    /// A signer with `secret`, hash `alg` and an optional truncation of the base64 text.
    pub fn new(secret: impl Into<Vec<u8>>, alg: HashAlg, truncate: Option<usize>) -> Self {
        ThumborSigner {
            secret: secret.into(),
            alg,
            truncate,
        }
    }

    /// The signature of `signed_part` (the path after `HASH/`, without a leading `/`).
    pub fn sign(&self, signed_part: &str) -> String {
        let mut sig = URL_SAFE.encode(hmac_bytes(self.alg, &self.secret, signed_part.as_bytes()));
        if let Some(n) = self.truncate {
            sig.truncate(n);
        }
        sig
    }

    /// Whether `signature` signs `signed_part`; compares in constant time.
    pub fn verify(&self, signed_part: &str, signature: &str) -> bool {
        ct_eq(&self.sign(signed_part), signature)
    }
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Decodes a hex string (either case); `None` when it is not an even number of hex digits.
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One imgproxy key/salt pair, already decoded from hex.
#[derive(Clone)]
struct KeySalt {
    key: Vec<u8>,
    salt: Vec<u8>,
}

/// Signs and verifies imgproxy paths with one or more key/salt pairs.
#[derive(Clone)]
pub struct ImgproxySigner {
    pairs: Vec<KeySalt>,
    size: usize,
}

impl std::fmt::Debug for ImgproxySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImgproxySigner")
            .field("pairs", &self.pairs.len())
            .field("size", &self.size)
            .finish()
    }
}

impl ImgproxySigner {
    /// Full signature length in bytes (imgproxy's `IMGPROXY_SIGNATURE_SIZE` default).
    pub const FULL_SIZE: usize = 32;

    /// A signer from hex `(key, salt)` pairs, the first used for signing, truncating digests to
    /// `size` bytes (1–32; `None` keeps all 32). `None` when a pair is not valid hex, there are no
    /// pairs, or the size is out of range.
    pub fn new<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
        size: Option<usize>,
    ) -> Option<Self> {
        let pairs = pairs
            .into_iter()
            .map(|(k, s)| {
                Some(KeySalt {
                    key: decode_hex(k).filter(|k| !k.is_empty())?,
                    salt: decode_hex(s)?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        let size = size.unwrap_or(Self::FULL_SIZE);
        (!pairs.is_empty() && (1..=Self::FULL_SIZE).contains(&size))
            .then_some(ImgproxySigner { pairs, size })
    }

    fn sign_with(&self, pair: &KeySalt, path: &str) -> String {
        let mut msg = pair.salt.clone();
        msg.extend_from_slice(path.as_bytes());
        let digest = hmac_bytes(HashAlg::Sha256, &pair.key, &msg);
        URL_SAFE_NO_PAD.encode(&digest[..self.size])
    }

    /// The signature of `path` (everything after the signature, with its leading `/`), made with
    /// the first pair.
    pub fn sign(&self, path: &str) -> String {
        self.sign_with(&self.pairs[0], path)
    }

    /// Whether `signature` signs `path` under any of the pairs; each comparison is constant time
    /// and every pair is tried.
    pub fn verify(&self, path: &str, signature: &str) -> bool {
        self.pairs.iter().fold(false, |ok, p| {
            ct_eq(&self.sign_with(p, path), signature) | ok
        })
    }
}

/// The `ik-t` value ImageKit signs when a URL does not expire.
pub const IMAGEKIT_NO_EXPIRY: &str = "9999999999";

/// Signs and verifies ImageKit URLs (`ik-s`) with the account's private key.
#[derive(Clone)]
pub struct ImagekitSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for ImagekitSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ImagekitSigner { key: <redacted> }")
    }
}

impl ImagekitSigner {
    /// A signer with the private key.
    pub fn new(private_key: impl Into<Vec<u8>>) -> Self {
        ImagekitSigner {
            key: private_key.into(),
        }
    }

    /// The `ik-s` of `url` (after the endpoint, with its query but without `ik-s`/`ik-t`) and the
    /// `ik-t` value, or [`IMAGEKIT_NO_EXPIRY`] when it has none.
    pub fn sign(&self, url: &str, expiry: Option<&str>) -> String {
        let mut msg = url.to_owned();
        msg.push_str(expiry.unwrap_or(IMAGEKIT_NO_EXPIRY));
        hex(&hmac_bytes(HashAlg::Sha1, &self.key, msg.as_bytes()))
    }

    /// Whether `signature` is the `ik-s` of `url` and `expiry`; hex digits of either case.
    pub fn verify(&self, url: &str, expiry: Option<&str>, signature: &str) -> bool {
        ct_eq(&self.sign(url, expiry), &signature.to_ascii_lowercase())
    }
}

/// Signs and verifies query-style URLs (`sig`): hex HMAC-SHA256 with the route's secret.
#[derive(Clone)]
pub struct QuerySigner {
    secret: Vec<u8>,
}

impl std::fmt::Debug for QuerySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuerySigner { secret: <redacted> }")
    }
}

impl QuerySigner {
    /// A signer with `secret`.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        QuerySigner {
            secret: secret.into(),
        }
    }

    /// The `sig` of `url`: the path after the route prefix, plus `?` and the query without `sig`
    /// when that query is not empty.
    pub fn sign(&self, url: &str) -> String {
        hex(&hmac_bytes(HashAlg::Sha256, &self.secret, url.as_bytes()))
    }

    /// Whether `signature` is the `sig` of `url`; hex digits of either case.
    pub fn verify(&self, url: &str, signature: &str) -> bool {
        ct_eq(&self.sign(url), &signature.to_ascii_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// imagor's README example: secret `mysecret`.
    const IMAGOR_PATH: &str =
        "500x500/top/raw.githubusercontent.com/cshum/imagor/master/testdata/gopher.png";

    #[test]
    fn imagor_documented_sha1_vector() {
        let s = ThumborSigner::new("mysecret", HashAlg::Sha1, None);
        assert_eq!(s.sign(IMAGOR_PATH), "cST4Ko5_FqwT3BDn-Wf4gO3RFSk=");
        assert!(s.verify(IMAGOR_PATH, "cST4Ko5_FqwT3BDn-Wf4gO3RFSk="));
        assert!(!s.verify(IMAGOR_PATH, "cST4Ko5_FqwT3BDn-Wf4gO3RFSk"));
        assert!(!s.verify("500x501/top/x.png", "cST4Ko5_FqwT3BDn-Wf4gO3RFSk="));
        assert!(
            !ThumborSigner::new("other", HashAlg::Sha1, None)
                .verify(IMAGOR_PATH, "cST4Ko5_FqwT3BDn-Wf4gO3RFSk=")
        );
    }

    #[test]
    fn sha256_and_truncation() {
        let full = ThumborSigner::new("mysecret", HashAlg::Sha256, None).sign(IMAGOR_PATH);
        assert_eq!(full.len(), 44, "32 bytes in padded base64");
        let short = ThumborSigner::new("mysecret", HashAlg::Sha256, Some(40));
        assert_eq!(short.sign(IMAGOR_PATH), full[..40]);
        assert!(short.verify(IMAGOR_PATH, &full[..40]));
        assert_eq!(
            ThumborSigner::new("k", HashAlg::Sha512, None)
                .sign("x")
                .len(),
            88
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = ThumborSigner::new("hunter2", HashAlg::Sha1, None);
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    /// imgproxy's examples (examples/signature.*): a 32-byte key and salt.
    const IMGPROXY_KEY: &str = "943b421c9eb07c830af81030552c86009268de4e532ba2ee2eab8247c6da0881";
    const IMGPROXY_SALT: &str = "520f986b998545b4785e0defbc4f3c1203f22de2374a3d53cb7a7fe9fea309c5";
    const IMGPROXY_PATH: &str = "/rs:fit:300:300/plain/http://img.example.com/pretty/image.jpg";
    const IMGPROXY_SIG: &str = "m3k5QADfcKPDj-SDI2AIogZbC3FlAXszuwhtWXYqavc";

    #[test]
    fn imgproxy_documented_vectors() {
        let s = ImgproxySigner::new([(IMGPROXY_KEY, IMGPROXY_SALT)], None).unwrap();
        assert_eq!(s.sign(IMGPROXY_PATH), IMGPROXY_SIG);
        assert!(s.verify(IMGPROXY_PATH, IMGPROXY_SIG));
        assert!(!s.verify(IMGPROXY_PATH, &IMGPROXY_SIG[..42]));
        assert!(!s.verify("/rs:fit:300:301/plain/x.jpg", IMGPROXY_SIG));
        // docs.imgproxy.net "Signing a URL": key `secret`, salt `hello`.
        let docs = ImgproxySigner::new([("736563726574", "68656C6C6F")], None).unwrap();
        assert_eq!(
            docs.sign(
                "/rs:fill:300:400:0/g:sm/aHR0cDovL2V4YW1w/bGUuY29tL2ltYWdl/cy9jdXJpb3NpdHku/anBn.png"
            ),
            "oKfUtW34Dvo2BGQehJFR4Nr0_rIjOtdtzJ3QFsUcXH8"
        );
    }

    #[test]
    fn imgproxy_rotation_and_truncation() {
        let old = ("00ff", "01");
        let rotated =
            ImgproxySigner::new([("abcd", "ef"), old, (IMGPROXY_KEY, IMGPROXY_SALT)], None)
                .unwrap();
        assert!(
            rotated.verify(IMGPROXY_PATH, IMGPROXY_SIG),
            "any pair verifies"
        );
        let only_old = ImgproxySigner::new([old], None).unwrap();
        assert!(rotated.verify("/x", &only_old.sign("/x")));
        assert_ne!(
            rotated.sign("/x"),
            only_old.sign("/x"),
            "the first pair signs"
        );
        let short = ImgproxySigner::new([(IMGPROXY_KEY, IMGPROXY_SALT)], Some(8)).unwrap();
        assert_eq!(
            short.sign(IMGPROXY_PATH),
            "m3k5QADfcKM",
            "8 bytes, then base64"
        );
        assert!(short.verify(IMGPROXY_PATH, "m3k5QADfcKM"));
        for bad in [
            ImgproxySigner::new([("zz", "00")], None),
            ImgproxySigner::new([("abc", "00")], None),
            ImgproxySigner::new([("", "00")], None),
            ImgproxySigner::new([], None),
            ImgproxySigner::new([("ab", "00")], Some(0)),
            ImgproxySigner::new([("ab", "00")], Some(33)),
        ] {
            assert!(bad.is_none());
        }
        assert!(!format!("{rotated:?}").contains("abcd"));
    }

    /// ImageKit's SDK signing examples: private key `dummy-key`, endpoint
    /// `https://ik.imagekit.io/demo/`.
    #[test]
    fn imagekit_documented_vectors() {
        let s = ImagekitSigner::new("dummy-key");
        for (url, sig) in [
            (
                "sdk-testing-files/future-search.png",
                "32dbbbfc5f945c0403c71b54c38e76896ef2d6b0",
            ),
            (
                "sdk-testing-files/future-search.png?version=1.0&cache=false",
                "f2e5a1b8b6a0b03fd63789dfc6413a94acef9fd8",
            ),
            (
                "sdk-testing-files/future-search.png?version=2.0&tr=w-300,h-200",
                "601d97a7834b7554f4dabf0d3fc3a219ceeb6b31",
            ),
            (
                "tr:w-300,h-200/sdk-testing-files/future-search.png?version=2.0",
                "dd1ee8f83d019bc59fd57a5fc4674a11eb8a3496",
            ),
        ] {
            assert_eq!(s.sign(url, None), sig, "{url}");
            assert!(s.verify(url, None, &sig.to_ascii_uppercase()));
            assert!(!s.verify(url, Some("1700000000"), sig), "expiry is signed");
        }
        assert!(!format!("{s:?}").contains("dummy"));
    }

    #[test]
    fn query_signatures() {
        let s = QuerySigner::new("k");
        let sig = s.sign("photos/a.jpg?w=300");
        assert_eq!(sig.len(), 64);
        assert!(s.verify("photos/a.jpg?w=300", &sig));
        assert!(!s.verify("photos/a.jpg?w=301", &sig));
        assert!(!QuerySigner::new("j").verify("photos/a.jpg?w=300", &sig));
    }

    #[test]
    fn hex_decoding() {
        assert_eq!(decode_hex("00fF"), Some(vec![0, 255]));
        assert_eq!(decode_hex(""), Some(vec![]));
        for bad in ["0", "0g", "+1", "é0"] {
            assert_eq!(decode_hex(bad), None, "{bad}");
        }
    }
}
