//! What the driver tells a session before it starts: the server's limits and offers, and who
//! is on the other end.

use std::net::IpAddr;

/// The server's side of the session. Shared by all sessions of a listener through an `Arc`.
///
/// Build it with struct update syntax: `ServerConfig { hostname: "mx.example".into(),
/// ..ServerConfig::default() }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Our name, in the greeting and the first EHLO line.
    pub hostname: String,
    /// Largest message accepted, in octets after dot-unstuffing; advertised as `SIZE`.
    /// Default 25 MiB.
    pub max_message_size: usize,
    /// Accepted recipients per transaction; one more gets `452 4.5.3` (RFC 5321 §4.5.3.1.10
    /// asks for at least 100). Default 100.
    pub max_recipients: usize,
    /// Longest command line, CRLF included (RFC 5321 §4.5.3.1.4: 512). AUTH lines and SASL
    /// responses get 12288 instead (RFC 4954 §4). Default 512.
    pub max_command_line: usize,
    /// Longest text line in a message, CRLF included, not counting a stuffed dot
    /// (RFC 5321 §4.5.3.1.6: 1000). Default 1000.
    pub max_text_line: usize,
    /// After this many client errors the session sends `421 4.7.0` and closes; 0 means no
    /// limit. Default 10. (What counts as a client error: see the crate docs.)
    pub max_errors: usize,
    /// Whether the driver can do TLS, so STARTTLS is offered on a plain connection.
    pub starttls_available: bool,
    /// Whether AUTH is offered at all (PLAIN and LOGIN). Default true.
    pub auth_enabled: bool,
    /// Offer and accept AUTH only under TLS (RFC 4954 §4 recommends it for plain-text
    /// mechanisms). Default true.
    pub auth_requires_tls: bool,
    /// Offer CHUNKING and accept BDAT (RFC 3030). Default true.
    pub chunking: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_command_line: 512,
            max_text_line: 1000,
            max_errors: 10,
            starttls_available: false,
            auth_enabled: true,
            auth_requires_tls: true,
            chunking: true,
        }
    }
}

/// The client's side as the driver knows it when the connection is accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub ip: IpAddr,
    /// The connection is already under TLS (implicit TLS, RFC 8314): no STARTTLS is offered.
    pub tls: bool,
}
