//! Signatures per the Standard Webhooks specification: the signed content is
//! `{webhook-id}.{webhook-timestamp}.{body}`, the signature HMAC-SHA256 of it
//! keyed with the base64-decoded part of the `whsec_` secret, sent as
//! `webhook-signature: v1,{base64}`.
//!
//! Written here with `hmac` and `sha2` (already in the build through sqlx)
//! rather than the `standardwebhooks` crate, which would bring a second
//! `base64` and the `time` crate for three lines of HMAC. The tests verify
//! the signatures with the specification's own Python package.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix of a secret as the specification writes it.
pub const SECRET_PREFIX: &str = "whsec_";

/// A new secret: 32 random bytes, `whsec_` + base64.
pub fn new_secret() -> String {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).expect("the operating system's random generator");
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The key bytes of a `whsec_` secret; `None` if it is not one.
pub fn key(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX)?).ok().filter(|k| !k.is_empty())
}

/// The `webhook-signature` header value for a message.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the specification's reference implementations
    /// (standard-webhooks, libraries' test vectors).
    #[test]
    fn signs_the_specifications_example_as_its_libraries_do() {
        let key = key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        assert_eq!(
            signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_new_secret_is_32_random_bytes_behind_the_prefix() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(key(&a).unwrap().len(), 32);
        assert_eq!(key("sk_abc"), None);
        assert_eq!(key("whsec_"), None);
    }
}
