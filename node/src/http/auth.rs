//! HTTP basic authentication against the bcrypt hashes of a web config file
//! (Prometheus's `basic_auth_users`).
//!
//! bcrypt is deliberately slow (tens of ms per check), so a successful
//! check is remembered under a SHA-256 of user, password and hash — the
//! password itself is never kept — and verification runs off the async
//! workers. Failed checks are not cached.

use std::collections::{BTreeMap, HashSet};

use base64::Engine as _;
use parking_lot::Mutex;
use sha2::{Digest, Sha256};

/// Most remembered successful logins before the cache is cleared.
const CACHE_MAX: usize = 1024;

pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// Hash checked for unknown users, so that response time does not tell
    /// which user names exist.
    dummy: String,
    ok_cache: Mutex<HashSet<[u8; 32]>>,
}

impl BasicAuth {
    pub fn new(users: BTreeMap<String, String>) -> BasicAuth {
        BasicAuth {
            users,
            dummy: bcrypt::hash("pharos-dummy", 10).unwrap_or_default(),
            ok_cache: Mutex::new(HashSet::new()),
        }
    }

    /// Decodes an `Authorization: Basic …` header value into user and
    /// password.
    pub fn parse_header(value: &str) -> Option<(String, String)> {
        let (scheme, rest) = value.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let s = String::from_utf8(raw).ok()?;
        let (u, p) = s.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }

    fn key(user: &str, password: &str, hash: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [user, password, hash] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finalize().into()
    }

    /// Whether the credentials are valid. Blocking (bcrypt): call from a
    /// blocking context.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let key = BasicAuth::key(user, password, hash);
        if known && self.ok_cache.lock().contains(&key) {
            return true;
        }
        let ok = bcrypt::verify(password, hash).unwrap_or(false) && known;
        if ok {
            let mut c = self.ok_cache.lock();
            if c.len() >= CACHE_MAX {
                c.clear();
            }
            c.insert(key);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_bcrypt_and_caches() {
        let mut users = BTreeMap::new();
        users.insert("alice".to_string(), bcrypt::hash("s3cret", 4).unwrap());
        let a = BasicAuth::new(users);
        assert!(a.verify("alice", "s3cret"));
        assert!(a.verify("alice", "s3cret"));
        assert!(!a.verify("alice", "wrong"));
        assert!(!a.verify("bob", "s3cret"));
        assert_eq!(a.ok_cache.lock().len(), 1);
    }

    #[test]
    fn parses_header() {
        let v = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("u:p:q")
        );
        assert_eq!(
            BasicAuth::parse_header(&v),
            Some(("u".into(), "p:q".into()))
        );
        assert_eq!(BasicAuth::parse_header("Bearer x"), None);
        assert_eq!(BasicAuth::parse_header("Basic !!!"), None);
    }
}
