//! The server side of STARTTLS: a certificate from the configuration, or a self-signed one
//! made at start-up (opportunistic TLS between MTAs rarely verifies certificates, and
//! encryption with an unverified certificate still beats plaintext).

use std::path::Path;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::RelayError;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, RelayError> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Load a PEM certificate chain and private key.
pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, RelayError> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| RelayError::Tls(format!("{}: {e}", cert.display())))?;
    if certs.is_empty() {
        return Err(RelayError::Tls(format!(
            "{}: no certificate in the file",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| RelayError::Tls(format!("{}: {e}", key.display())))?;
    server_config(certs, key)
}

/// A self-signed certificate for `hostname`, made in memory.
pub fn self_signed(hostname: &str) -> Result<Arc<ServerConfig>, RelayError> {
    let certified = rcgen::generate_simple_self_signed(vec![hostname.to_string()])
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    server_config(vec![cert], key)
}
