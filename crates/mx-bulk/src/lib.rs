//! `mxroute bulk`'s engine: MX routes for millions of domains, as fast as the DNS server answers.
//! It only asks the questions of mx-core's `Resolution` (so `route` and `bulk` cannot disagree)
//! over a few long-lived UDP sockets, streaming input to output in bounded memory.
//!
//! The pure parts ([`wire`], [`input`], [`cache`], [`output`], [`json`]) hold no sockets; [`transport`]
//! (with `mmsg`, its Linux `sendmmsg`/`recvmmsg` bursts), [`engine`] and [`pipeline`] do the I/O.

pub mod cache;
pub mod engine;
pub mod input;
pub mod json;
mod mmsg;
pub mod output;
pub mod pipeline;
pub mod transport;
pub mod wire;

use std::net::SocketAddr;

pub use engine::{Engine, EngineConfig};
pub use input::{Line, parse_line, parse_resolv_conf};
pub use output::{BulkRecord, Reorder};
pub use pipeline::{RunOptions, Stats, Summary, run};

/// Everything that can stop a bulk run (per-domain DNS trouble is not an error: it is a
/// `tempfail` route in the output).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BulkError {
    /// No nameserver to ask.
    #[error("no nameserver given")]
    NoNameserver,
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// A UDP socket could not be opened or configured.
    #[error("cannot open a UDP socket towards {server}: {source}")]
    Socket {
        server: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// Reading the input failed (not a bad line: those are reported as `invalid`).
    #[error("cannot read the input: {0}")]
    Input(#[source] std::io::Error),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[source] std::io::Error),
    /// A route task panicked (a bug: the run stops rather than drop the line silently).
    #[error("a route task failed: {0}")]
    Task(String),
    /// A route could not be encoded as JSON.
    #[error("cannot encode a route as JSON: {0}")]
    Encode(#[from] json::JsonError),
}
