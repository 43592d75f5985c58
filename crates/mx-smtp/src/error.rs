use thiserror::Error;

/// Misuse of a [`ServerSession`](crate::ServerSession) by its driver. Client input never
/// produces an error: whatever the client sends becomes a reply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SmtpError {
    /// A decision or `tls_started` arrived that the session did not ask for.
    #[error("unexpected {got}: the session is waiting for {waiting}")]
    UnexpectedDecision {
        got: &'static str,
        waiting: &'static str,
    },
    /// A rejection carried a reply that is not a well-formed 4xx or 5xx reply.
    #[error("a rejection needs a well-formed 4xx or 5xx reply, got {code}")]
    NotARejection { code: u16 },
}
