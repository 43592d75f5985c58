use thiserror::Error;

/// Errors of the DNS crate: configuration problems and bad input. DNS failures themselves are
/// not errors here; they are outcomes (`mx_core::Failure`) that routing turns into `tempfail`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DnsError {
    #[error("cannot read the system resolver configuration: {0}")]
    SystemConfig(String),
    #[error("no nameserver configured")]
    NoNameserver,
    #[error("cannot build the resolver: {0}")]
    Build(String),
    #[error(transparent)]
    Input(#[from] mx_core::CoreError),
}
