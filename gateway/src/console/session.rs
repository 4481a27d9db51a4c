//! The console's sign-in session: a cookie signed with a key derived from the admin
//! token, and the CSRF token every state-changing form carries.
//!
//! No session is kept on the server, so every gateway sharing a cluster (and the same
//! admin token) accepts it, and a new admin token ends every session at once. The
//! cookie says when it expires and a random id; its HMAC proves this gateway's admin
//! token made it. The CSRF token is an HMAC of the session id: it changes with each
//! sign-in, and a page of another site can neither read it nor make it.

use hmac::Mac;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The session cookie's name.
pub const COOKIE_NAME: &str = "otg_console";
/// How long a sign-in lasts.
pub const SESSION_SECONDS: i64 = 8 * 3600;

/// The keys of the console, derived from the admin token.
#[derive(Clone)]
pub struct SessionKeys {
    key: [u8; 32],
}

/// A valid session, read from its cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    id: String,
    pub expires_at: i64,
}

impl SessionKeys {
    /// The key is an HMAC of a fixed label under the admin token, so the token itself is
    /// never what signs, and the console's key is of no use elsewhere.
    pub fn derive(admin_token: &str) -> Self {
        let mut mac = HmacSha256::new_from_slice(admin_token.as_bytes()).expect("HMAC takes any key");
        mac.update(b"otg console session key, v1");
        SessionKeys { key: mac.finalize().into_bytes().into() }
    }

    /// A new session's cookie value, valid until `now_s + SESSION_SECONDS`.
    pub fn new_session(&self, now_s: i64) -> (Session, String) {
        let session = Session { id: hex::encode(rand::random::<[u8; 16]>()), expires_at: now_s + SESSION_SECONDS };
        let payload = format!("{}.{}", session.expires_at, session.id);
        let value = format!("{payload}.{}", self.sign(&payload));
        (session, value)
    }

    /// The session a cookie value proves, if it is this gateway's and unexpired.
    pub fn session(&self, cookie: &str, now_s: i64) -> Option<Session> {
        let (payload, signature) = cookie.rsplit_once('.')?;
        if !bool::from(self.sign(payload).as_bytes().ct_eq(signature.as_bytes())) {
            return None;
        }
        let (expires_at, id) = payload.split_once('.')?;
        let expires_at: i64 = expires_at.parse().ok()?;
        (expires_at > now_s).then(|| Session { id: id.to_owned(), expires_at })
    }

    /// The CSRF token of a session: what its forms carry and what a change must show.
    pub fn csrf_token(&self, session: &Session) -> String {
        self.sign(&format!("csrf.{}", session.id))
    }

    /// Whether `presented` is the session's CSRF token (compared in constant time).
    pub fn csrf_matches(&self, session: &Session, presented: &str) -> bool {
        bool::from(self.csrf_token(session).as_bytes().ct_eq(presented.as_bytes()))
    }

    fn sign(&self, text: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key");
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// Whether a presented admin token is the gateway's (constant time).
pub fn token_matches(presented: &str, admin_token: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(admin_token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_072_000;

    #[test]
    fn a_session_lives_until_it_expires_and_only_under_its_token() {
        let keys = SessionKeys::derive("admin-token-0123456789");
        let (session, cookie) = keys.new_session(NOW);
        assert_eq!(keys.session(&cookie, NOW + 60), Some(session.clone()));
        assert_eq!(keys.session(&cookie, NOW + SESSION_SECONDS), None, "expired");
        assert_eq!(SessionKeys::derive("another-token-0123456789").session(&cookie, NOW), None);
        let (expires_at, rest) = cookie.split_once('.').unwrap();
        let extended = format!("{}.{rest}", expires_at.parse::<i64>().unwrap() + 3600);
        assert_eq!(keys.session(&extended, NOW), None, "the expiry is signed");
        assert_eq!(keys.session("garbage", NOW), None);
    }

    #[test]
    fn csrf_tokens_belong_to_one_session() {
        let keys = SessionKeys::derive("admin-token-0123456789");
        let (first, _) = keys.new_session(NOW);
        let (second, _) = keys.new_session(NOW);
        let token = keys.csrf_token(&first);
        assert!(keys.csrf_matches(&first, &token));
        assert!(!keys.csrf_matches(&second, &token));
        assert!(!keys.csrf_matches(&first, ""));
    }
}
