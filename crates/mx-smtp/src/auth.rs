//! SASL PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login) as used by SMTP AUTH
//! (RFC 4954). smtp-proto parses the AUTH command; the exchange after it is ours.

use std::fmt;

use data_encoding::BASE64;

/// The mechanisms offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMechanism {
    Plain,
    Login,
}

impl AuthMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMechanism::Plain => "PLAIN",
            AuthMechanism::Login => "LOGIN",
        }
    }
}

/// A password: its `Debug` does not show it, so events can be logged whole.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Why a client's SASL data is refused (both are `501 5.5.2`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SaslError {
    Base64,
    Malformed,
}

/// Credentials from a completed exchange.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub authzid: Option<String>,
    pub username: String,
    pub password: Password,
}

/// Decodes one client response. `=` alone is an empty response (RFC 4954 §4).
pub(crate) fn decode_response(text: &str) -> Result<Vec<u8>, SaslError> {
    if text == "=" {
        return Ok(Vec::new());
    }
    // BASE64 is strict: padding required, no whitespace, no non-zero trailing bits.
    BASE64
        .decode(text.as_bytes())
        .map_err(|_| SaslError::Base64)
}

/// A PLAIN message: `[authzid] NUL authcid NUL passwd`, UTF-8, authcid and passwd not
/// empty (RFC 4616 §2).
pub(crate) fn parse_plain(text: &str) -> Result<Credentials, SaslError> {
    let raw = decode_response(text)?;
    let mut parts = raw.split(|&b| b == 0);
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::Malformed);
    };
    if username.is_empty() || password.is_empty() {
        return Err(SaslError::Malformed);
    }
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| SaslError::Malformed);
    Ok(Credentials {
        authzid: (!authzid.is_empty()).then(|| utf8(authzid)).transpose()?,
        username: utf8(username)?,
        password: Password(utf8(password)?),
    })
}

/// One LOGIN answer (user name or password): base64 of UTF-8 text without NUL.
pub(crate) fn parse_login_field(text: &str) -> Result<String, SaslError> {
    let raw = decode_response(text)?;
    if raw.is_empty() || raw.contains(&0) {
        return Err(SaslError::Malformed);
    }
    String::from_utf8(raw).map_err(|_| SaslError::Malformed)
}

/// The LOGIN prompts, base64 of `Username:` and `Password:`.
pub(crate) const LOGIN_USERNAME: &str = "VXNlcm5hbWU6";
pub(crate) const LOGIN_PASSWORD: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain() {
        let c = parse_plain(&BASE64.encode(b"\0user\0pass")).unwrap();
        assert_eq!(c.authzid, None);
        assert_eq!(c.username, "user");
        assert_eq!(c.password.expose(), "pass");
        let c = parse_plain(&BASE64.encode(b"admin\0user\0s3cret")).unwrap();
        assert_eq!(c.authzid.as_deref(), Some("admin"));
        assert_eq!(parse_plain("AGFAYg"), Err(SaslError::Base64));
        assert_eq!(parse_plain("!!!!"), Err(SaslError::Base64));
        assert_eq!(parse_plain("="), Err(SaslError::Malformed));
        assert_eq!(
            parse_plain(&BASE64.encode(b"\0user\0")),
            Err(SaslError::Malformed)
        );
        assert_eq!(
            parse_plain(&BASE64.encode(b"\0u\0p\0x")),
            Err(SaslError::Malformed)
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn login() {
        assert_eq!(BASE64.encode(b"Username:"), LOGIN_USERNAME);
        assert_eq!(BASE64.encode(b"Password:"), LOGIN_PASSWORD);
        assert_eq!(parse_login_field("dXNlcg==").unwrap(), "user");
        assert_eq!(parse_login_field("="), Err(SaslError::Malformed));
    }
}
