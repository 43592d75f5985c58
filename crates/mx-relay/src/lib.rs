//! The relay: SMTP listener, relay policy (never an open relay), durable spool, and the inbound
//! MX role that delivers mail for our own domains into Maildir.

pub mod config;
pub mod faults;
pub mod maildir;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod server;
pub mod tls;
pub mod trace;
pub mod users;

use std::path::PathBuf;

use thiserror::Error;

pub use config::Config;
pub use server::Relay;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("{label}: {message}")]
    Config { label: String, message: String },
    #[error("{label}:{line}: {message}")]
    Users {
        label: String,
        line: usize,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hash the password: {0}")]
    Password(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("spool: {0}")]
    Spool(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
