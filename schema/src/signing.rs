//! Device request signatures: HMAC-SHA256 over method, path, request time and body.
//!
//! One implementation serves the gateway (verify), the device client and the
//! loadtest (sign), so the two sides cannot drift apart.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use sha2::Sha256;

type HmacSha256 = hmac::Hmac<Sha256>;

/// Header names of a signed device request.
pub const DEVICE_ID_HEADER: &str = "X-Device-Id";
pub const REQUEST_TIME_HEADER: &str = "X-Request-Time";
pub const SIGNATURE_HEADER: &str = "X-Signature";
/// otg addition, unsigned and optional: `live` or `backlog`, the device's word on what
/// its batch holds, so a full gateway can refuse backlog before reading it.
pub const PRIORITY_HEADER: &str = "X-OTG-Priority";
/// A batch whose newest record is at most this old is live: what a device assumes for
/// the hint, and the gateway's default `live_window_s`.
pub const LIVE_WINDOW_MS: i64 = 10 * 60_000;

/// The 32-byte HMAC key of one device. Shown to the administrator once, as base64url.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceSecret(pub [u8; 32]);

impl DeviceSecret {
    /// Reads the base64url form (padding tolerated); `None` unless it is 32 bytes.
    pub fn from_base64(text: &str) -> Option<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
        Some(DeviceSecret(bytes.try_into().ok()?))
    }

    pub fn to_base64(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// Lowercase hex signature of a request.
    pub fn sign(&self, method: &str, path: &str, request_time: &str, body: &[u8]) -> String {
        hex::encode(self.mac(method, path, request_time, body).finalize().into_bytes())
    }

    /// Checks a hex signature in constant time; malformed hex is simply wrong.
    pub fn verify(&self, method: &str, path: &str, request_time: &str, body: &[u8], signature: &str) -> bool {
        let Ok(claimed) = hex::decode(signature) else {
            return false;
        };
        self.mac(method, path, request_time, body).verify_slice(&claimed).is_ok()
    }

    fn mac(&self, method: &str, path: &str, request_time: &str, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes any key length");
        for part in [method.as_bytes(), b"\n", path.as_bytes(), b"\n", request_time.as_bytes(), b"\n"] {
            mac.update(part);
        }
        mac.update(body);
        mac
    }
}

impl std::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors of PROTOCOL.md.
    const SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8";
    const REQUEST_TIME: &str = "1764072000123";

    #[test]
    fn secret_decodes_to_the_bytes_0_to_31() {
        let secret = DeviceSecret::from_base64(SECRET).unwrap();
        assert_eq!(secret.0.to_vec(), (0u8..32).collect::<Vec<_>>());
        assert_eq!(secret.to_base64(), SECRET);
    }

    #[test]
    fn protocol_vector_for_an_upload() {
        let body = include_bytes!("../tests/fixtures/protocol_vector.msgpack");
        assert_eq!(body.len(), 219);
        let secret = DeviceSecret::from_base64(SECRET).unwrap();
        let expected = "f7688861d7b1b16243a3011a68a2a6db48dc488b01f00601a25c03cfdcba5310";
        assert_eq!(secret.sign("POST", "/v1/sync/batches", REQUEST_TIME, body), expected);
        assert!(secret.verify("POST", "/v1/sync/batches", REQUEST_TIME, body, expected));
    }

    #[test]
    fn protocol_vector_for_a_get() {
        let secret = DeviceSecret::from_base64(SECRET).unwrap();
        let expected = "51565086d4bf7a2ce4224093fb45f86fa6f5e340c7d8f800a9ee184312f4a9fb";
        assert_eq!(secret.sign("GET", "/v1/sync/config", REQUEST_TIME, b""), expected);
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let secret = DeviceSecret::from_base64(SECRET).unwrap();
        let good = secret.sign("POST", "/p", "1", b"body");
        assert!(!secret.verify("POST", "/p", "1", b"bodY", &good));
        assert!(!secret.verify("POST", "/q", "1", b"body", &good));
        assert!(!secret.verify("POST", "/p", "2", b"body", &good));
        assert!(!secret.verify("POST", "/p", "1", b"body", "zz"));
        assert!(!secret.verify("POST", "/p", "1", b"body", &good[..62]));
    }

    #[test]
    fn secrets_of_the_wrong_length_are_refused() {
        assert!(DeviceSecret::from_base64("AAEC").is_none());
        assert!(DeviceSecret::from_base64("not base64!").is_none());
    }
}
