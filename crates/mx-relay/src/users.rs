//! The users file: one `address[:argon2-hash]` per line. An address is a known mailbox of a
//! local domain; with a hash it is also an account that may AUTH and relay.

use std::collections::HashMap;
use std::path::Path;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use mx_core::normalize_domain;

use crate::RelayError;

#[derive(Default)]
pub struct Users {
    /// "mailbox@domain" (normalised) to its password hash, if it has one.
    entries: HashMap<String, Option<String>>,
}

/// Only the count: hashes stay out of logs and panic messages.
impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Users({} entries)", self.entries.len())
    }
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, RelayError> {
        let text = std::fs::read_to_string(path).map_err(|source| RelayError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Users::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, label: &str) -> Result<Users, RelayError> {
        let mut entries = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: String| RelayError::Users {
                label: label.to_string(),
                line: n + 1,
                message,
            };
            let (address, hash) = match line.split_once(':') {
                Some((a, h)) => (a.trim(), Some(h.trim().to_string())),
                None => (line, None),
            };
            let key = user_key(address)
                .ok_or_else(|| bad(format!("{address:?} is not mailbox@domain")))?;
            if let Some(hash) = &hash
                && argon2::PasswordHash::new(hash).is_err()
            {
                return Err(bad(format!(
                    "the password of {address} is not an argon2 PHC hash (make one with `mxroute relay hash-password`)"
                )));
            }
            entries.insert(key, hash);
        }
        Ok(Users { entries })
    }

    pub fn has_mailbox(&self, mailbox: &str, domain: &str) -> bool {
        self.entries.contains_key(&format!("{mailbox}@{domain}"))
    }

    /// Check an AUTH login. Unknown users cost the same work as known ones, so timing does not
    /// tell which accounts exist.
    pub fn verify(&self, username: &str, password: &str) -> bool {
        let hash = user_key(username).and_then(|key| self.entries.get(&key).cloned().flatten());
        let argon = Argon2::default();
        match hash {
            Some(hash) => argon
                .verify_password(password.as_bytes(), hash.as_str())
                .is_ok(),
            None => {
                if let Some(dummy) = dummy_hash() {
                    let _ = argon.verify_password(password.as_bytes(), dummy);
                }
                false
            }
        }
    }
}

/// A hash of a random password nobody knows, made once, so that checking an unknown user
/// costs what checking a known one does.
fn dummy_hash() -> Option<&'static str> {
    static DUMMY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    DUMMY
        .get_or_init(|| hash_password(&format!("{:?}", std::time::SystemTime::now())).ok())
        .as_deref()
}

fn user_key(address: &str) -> Option<String> {
    let (local, domain) = address.rsplit_once('@')?;
    let mailbox = crate::policy::mailbox_name(local)?;
    let domain = normalize_domain(domain).ok()?;
    Some(format!("{mailbox}@{domain}"))
}

/// A new argon2id PHC hash for a users file line.
pub fn hash_password(password: &str) -> Result<String, RelayError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| RelayError::Password(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_verify_only_with_their_password() {
        let hash = hash_password("s3cret").unwrap();
        let users = Users::parse(
            &format!("# users\nalice@example.com:{hash}\nBob@Example.com\n"),
            "<t>",
        )
        .unwrap();
        assert!(users.verify("alice@example.com", "s3cret"));
        assert!(users.verify("ALICE@example.com", "s3cret"));
        assert!(!users.verify("alice@example.com", "wrong"));
        assert!(
            !users.verify("bob@example.com", ""),
            "no hash: mailbox only, no login"
        );
        assert!(!users.verify("nobody@example.com", "s3cret"));
        assert!(users.has_mailbox("bob", "example.com"));
    }

    #[test]
    fn bad_lines_name_their_line() {
        let err = Users::parse("a@example.com\nnot-an-address\n", "users").unwrap_err();
        assert!(err.to_string().contains("users:2"), "{err}");
        let err = Users::parse("a@example.com:plaintext\n", "users").unwrap_err();
        assert!(err.to_string().contains("users:1"), "{err}");
    }
}
