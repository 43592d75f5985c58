//! TLS client plumbing shared by the relay's delivery and `mxroute check`: trust anchors
//! (system bundle plus a CA file), verified and accept-any client configurations.
//!
//! Accept-any is what MTAs use for opportunistic STARTTLS (RFC 7435) and what a probe needs
//! to finish a handshake and judge the certificate afterwards; certificate errors are spelled
//! out in readable phrases.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// What can go wrong building a client configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The extra CA file is unreadable or holds no usable certificate.
    #[error("{path}: {message}")]
    CaFile { path: String, message: String },
    /// rustls refused the configuration.
    #[error("{0}")]
    Config(#[from] rustls::Error),
}

/// Where the system's CA bundle lives, by distribution; the first that exists is used.
pub const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The trust roots: every parsable certificate of the first system bundle that exists
/// (none is not an error: the store may then hold only `extra_ca_file`'s), plus every
/// certificate of `extra_ca_file`, which must be readable and hold at least one usable one.
pub fn roots(extra_ca_file: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if let Some(bundle) = SYSTEM_BUNDLES.iter().find(|p| Path::new(p).is_file())
        && let Ok(certs) = CertificateDer::pem_file_iter(bundle)
    {
        roots.add_parsable_certificates(certs.filter_map(Result::ok));
    }
    if let Some(path) = extra_ca_file {
        let ca_file = |message: String| TlsError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| ca_file(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_file("no certificate in the file".into()));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(ca_file("no usable CA certificate".into()));
        }
    }
    Ok(roots)
}

/// rustls' ring provider (the only one built into the workspace).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration that completes the handshake with any certificate (signatures
/// over the handshake are still checked), so a probe can capture the chain and judge it
/// afterwards with [`rustls::client::WebPkiServerVerifier`].
pub fn accept_any_config() -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that verifies the server against `roots` (WebPKI, with the name).
pub fn verified_config(roots: Arc<RootCertStore>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts every certificate; checks the handshake signatures with the provider's algorithms.
#[derive(Debug)]
pub struct AcceptAny(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One readable phrase for a certificate error met verifying a certificate for `host`
/// ("issuer is not a trusted CA", "certificate is only for a.example, b.example", ...).
pub fn describe_certificate_error(e: &CertificateError, host: &str) -> String {
    match e {
        CertificateError::UnknownIssuer => "issuer is not a trusted CA".into(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "certificate has expired".into()
        }
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
            "certificate is not valid yet".into()
        }
        CertificateError::NotValidForName => format!("certificate does not name {host}"),
        CertificateError::NotValidForNameContext { presented, .. } => {
            if presented.is_empty() {
                format!("certificate does not name {host} (it names no host)")
            } else {
                let names: Vec<String> = presented.iter().map(|p| tidy_name(p)).collect();
                format!(
                    "certificate does not name {host}; it is only for {}",
                    names.join(", ")
                )
            }
        }
        CertificateError::BadSignature => "bad signature in the certificate chain".into(),
        CertificateError::BadEncoding => "certificate is malformed".into(),
        other => other.to_string(),
    }
}

/// webpki presents names as `DnsName("a.example")`; keep the name.
fn tidy_name(presented: &str) -> String {
    presented
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
        .unwrap_or(presented)
        .to_string()
}

/// One readable phrase for a rustls error, certificate errors spelled out for `host`.
pub fn describe_error(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => describe_certificate_error(c, host),
        other => other.to_string(),
    }
}

/// The rustls error inside an I/O error from tokio-rustls, if there is one.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_names_the_file() {
        let err = roots(Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn empty_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "no certificates here\n").unwrap();
        let err = roots(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("empty.pem") && err.contains("no certificate"),
            "{err}"
        );
    }
}
