//! The durable mail spool: a message answered with 250 is on disk (fsync'd) before the reply, survives a crash, and stays until it is delivered or bounced.
//! Embedded by default (plain files, no server); storage is behind a trait so a shared database backend can follow.
//!
//! [`FileSpool`] is the embedded backend. Its on-disk format, the exact fsyncs behind the
//! durability promise and the recovery rules are described for operators in `docs/spool.md`;
//! the module docs of the private `file` and `format` modules say the same for readers of
//! the code.
//!
//! ```no_run
//! use mx_spool::{Envelope, FileSpool, Spool};
//!
//! let (spool, report) = FileSpool::open("/var/spool/mxroute".as_ref())?;
//! println!("recovered {} messages", report.recovered);
//! let envelope = Envelope::new("alice@example.com", vec!["bob@example.org".into()]);
//! let id = spool.store(envelope, b"Subject: hi\r\n\r\nhello\r\n")?;
//! // Only now may the SMTP server answer 250 with `id`.
//! # Ok::<(), mx_spool::SpoolError>(())
//! ```

mod commit;
mod error;
mod file;
mod format;
mod id;
mod types;

pub use commit::{Committer, Done, Named, SyncMode};
pub use error::SpoolError;
pub use file::{FileSpool, RecoveryReport};
pub use id::QueueId;
pub use types::{DeliveryState, Envelope, QueuedMessage, RecipientState, RecipientStatus};

/// Where accepted messages live until they are delivered or bounced.
///
/// The methods are synchronous and may block on disk flushes; async callers run them with
/// `tokio::task::spawn_blocking`. Implementations must be safe to call from many threads at
/// once.
pub trait Spool: Send + Sync {
    /// Stores a message durably and returns its new id.
    ///
    /// The spool assigns `envelope.id` (a fresh [`QueueId`]) and `envelope.size` (the exact
    /// length of `body`); whatever the caller put there is replaced. Every other field is
    /// kept as given. `body` is the message as received, after SMTP dot-unstuffing.
    ///
    /// `Ok` means the message survives a crash or power loss from this moment on: only
    /// then may the server answer 250. On any error nothing of the message is left behind,
    /// and [`SpoolError::NoSpace`] asks for a 452 4.3.1 reply.
    fn store(&self, envelope: Envelope, body: &[u8]) -> Result<QueueId, SpoolError>;

    /// The ids of all queued messages, sorted (which, for ids this crate made, is the order
    /// of arrival).
    fn list(&self) -> Result<Vec<QueueId>, SpoolError>;

    /// The envelope and current delivery state of a message (not its body).
    fn load(&self, id: &QueueId) -> Result<QueuedMessage, SpoolError>;

    /// The message bytes exactly as they were given to [`Spool::store`].
    fn body(&self, id: &QueueId) -> Result<Vec<u8>, SpoolError>;

    /// Replaces the delivery state of a message, durably and atomically: after a crash the
    /// state read back is either the old one or this one, never a mix.
    ///
    /// The state must list the envelope's recipients, in the envelope's order
    /// ([`SpoolError::StateMismatch`] otherwise), so that no recipient can be forgotten.
    fn update_state(&self, id: &QueueId, state: &DeliveryState) -> Result<(), SpoolError>;

    /// Removes a message (delivered, bounced or deleted by an operator), durably: on `Ok` it
    /// will not come back after a crash.
    fn remove(&self, id: &QueueId) -> Result<(), SpoolError>;
}
