/// Why a check could not be set up at all (per-domain trouble is a finding, not an error).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("DNS: {0}")]
    Dns(#[from] mx_dns::DnsError),
    #[error("TLS trust anchors: {0}")]
    Tls(String),
    #[error("{0:?}: {1}")]
    BadDomain(String, String),
}
