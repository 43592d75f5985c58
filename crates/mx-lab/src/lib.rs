//! The lab: an in-process authoritative DNS server loaded from zone text, with per-name fault switches.
//! Used by `mxroute route --zone`, the tests, and users rehearsing a routing change.
//!
//! Faults (`$FAULT <name> <kind> [TYPE]` in zone text, or [`Faults`] live): `servfail`,
//! `refused`, `timeout`, `truncate`, `delay:<ms>` and `drop:<percent>` (a deterministic share
//! of the UDP queries unanswered; [`Faults::set_loss`] makes the whole server lossy).

#![warn(missing_docs)]

mod faults;
mod server;
mod zone;

use std::net::SocketAddr;
use std::path::PathBuf;

pub use faults::{Fault, Faults};
pub use server::LabDns;
pub use zone::ZoneSet;

/// Everything that can go wrong in the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The zone text is malformed; `line` is 1-based and points at the offending entry
    /// (its first line, for an entry continued with parentheses).
    #[error("{label}:{line}: {message}")]
    Parse {
        /// The file path or `<inline>` label given to the parser.
        label: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The zone text is well-formed but a zone cannot be built from it.
    #[error("{label}: zone {apex}: {message}")]
    Zone {
        /// The file path or `<inline>` label.
        label: String,
        /// The apex of the zone that failed.
        apex: String,
        /// What is wrong.
        message: String,
    },
    /// The `origin` argument is not a valid domain name.
    #[error("invalid origin {origin:?}: {message}")]
    Origin {
        /// The origin as given.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A record type given to [`Faults::try_set`] (or similar) is not known.
    #[error("unknown record type {0:?}")]
    RecordType(String),
    /// Reading a zone file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Binding the listening sockets failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
