use thiserror::Error;

/// Everything that can go wrong in the routing core: only bad input, since the core does no I/O.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CoreError {
    #[error("empty domain")]
    EmptyDomain,
    #[error("invalid domain {input:?}: {reason}")]
    InvalidDomain { input: String, reason: String },
    #[error("invalid domain literal {input:?}: {reason}")]
    InvalidLiteral { input: String, reason: String },
    #[error("invalid static route {input:?}: {reason}")]
    InvalidStaticRoute { input: String, reason: String },
    #[error(
        "invalid IP strategy {0:?} (expected ipv4_then_ipv6, ipv6_then_ipv4, ipv4_only, ipv6_only or any)"
    )]
    InvalidIpStrategy(String),
}
