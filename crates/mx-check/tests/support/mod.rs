//! Shared helpers for mx-check's integration tests (probe, MTA-STS, findings):
//!
//! - [`TestCa`]: a certificate authority made with rcgen, with leaf certificates for any
//!   names (valid, expired) and self-signed ones; [`test_ca`] is one shared per test binary.
//! - [`exchanger`]: a real mx-relay listening on a loopback address as a lab exchanger, with
//!   STARTTLS off, with a certificate signed by [`test_ca`], or self-signed, and optionally
//!   silent (the relay's own fault switch). Several can share one port on 127.0.0.x
//!   addresses ([`shared_port`]), as real MX hosts share port 25.
//! - [`https_server`]: a small HTTPS server (tokio-rustls) answering fixed routes, for the
//!   MTA-STS policy fetch.
//!
//! Loopback only, port 0 or a port found free, and every wait bounded by [`BOUND`].

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mx_relay::faults::{Faults, SessionFault};
use mx_relay::{Config, Relay};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The longest any test helper waits for one thing (generous: debug builds, busy machines).
pub const BOUND: Duration = Duration::from_secs(20);

/// A test certificate authority.
pub struct TestCa {
    params: CertificateParams,
    key: KeyPair,
    /// The CA certificate.
    pub cert: CertificateDer<'static>,
    pub cert_pem: String,
}

/// A certificate with its private key; `chain` is leaf first (then the CA, for CA-signed
/// leaves, as servers usually send it).
pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub cert_pem: String,
    key_der: Vec<u8>,
    pub key_pem: String,
}

impl Leaf {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// Write `<stem>.crt` (the chain) and `<stem>.key` into `dir`; returns both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write certificate");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }

    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key())
            .expect("server certificate");
        Arc::new(config)
    }
}

fn leaf_params(names: &[&str]) -> CertificateParams {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("leaf names");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names.first().copied().unwrap_or("leaf"));
    params.distinguished_name = dn;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params
}

impl TestCa {
    /// A new CA named `CN=<name>`.
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        TestCa {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            params,
            key,
        }
    }

    /// A leaf for `names` (SAN dNSNames; the first is also the CN), valid from 1975 to 4096.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.sign(leaf_params(names))
    }

    /// A leaf for `names` that expired at the start of 2021.
    pub fn expired_leaf(&self, names: &[&str]) -> Leaf {
        let mut params = leaf_params(names);
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        self.sign(params)
    }

    /// A leaf for `names` not valid before 2090.
    pub fn future_leaf(&self, names: &[&str]) -> Leaf {
        let mut params = leaf_params(names);
        params.not_before = rcgen::date_time_ymd(2090, 1, 1);
        params.not_after = rcgen::date_time_ymd(2091, 1, 1);
        self.sign(params)
    }

    /// A leaf for `names`, valid since yesterday and ending `days` days from now.
    pub fn leaf_expiring_in_days(&self, names: &[&str], days: u64) -> Leaf {
        let mut params = leaf_params(names);
        let now = std::time::SystemTime::now();
        params.not_before = (now - Duration::from_secs(86_400)).into();
        params.not_after = (now + Duration::from_secs(days * 86_400)).into();
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> Leaf {
        let key = KeyPair::generate().expect("leaf key");
        let issuer = Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).expect("sign leaf");
        Leaf {
            chain: vec![cert.der().clone(), self.cert.clone()],
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_der: key.serialize_der(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A root store holding this CA only.
    pub fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.clone()).expect("add CA");
        Arc::new(roots)
    }

    /// Write the CA certificate as PEM to `dir/ca.pem` (for `tls::roots(Some(..))`).
    pub fn write_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.cert_pem).expect("write CA");
        path
    }
}

/// A self-signed certificate for `names`.
pub fn self_signed(names: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("key");
    let cert = leaf_params(names).self_signed(&key).expect("self-signed");
    Leaf {
        chain: vec![cert.der().clone()],
        cert_pem: cert.pem(),
        key_der: key.serialize_der(),
        key_pem: key.serialize_pem(),
    }
}

/// The CA shared by a test binary: exchangers' `CaSigned` certificates come from it.
pub fn test_ca() -> &'static TestCa {
    static CA: OnceLock<TestCa> = OnceLock::new();
    CA.get_or_init(|| TestCa::new("mxroute test CA"))
}

/// A port free on every one of `ips` (exchangers share a port, as real MX hosts share 25).
pub fn shared_port(ips: &[&str]) -> u16 {
    for _ in 0..50 {
        let first = std::net::TcpListener::bind((ips[0], 0)).expect("bind");
        let port = first.local_addr().expect("addr").port();
        let others: Vec<_> = ips[1..]
            .iter()
            .map(|ip| std::net::TcpListener::bind((*ip, port)))
            .collect();
        if others.iter().all(Result::is_ok) {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

/// A port on `ip` where nothing listens (bound, then released).
pub fn closed_port(ip: &str) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

/// The certificate of a lab exchanger.
pub enum ExchangerTls {
    /// `starttls = false`: STARTTLS is not offered.
    None,
    /// A certificate for this name signed by [`test_ca`].
    CaSigned(String),
    /// A self-signed certificate for this name.
    SelfSigned(String),
    /// A certificate of your own (an expired one, say).
    Leaf(Leaf),
}

/// What kind of exchanger to start.
pub struct ExchangerSetup {
    /// The relay's name in its greeting and EHLO.
    pub hostname: String,
    pub tls: ExchangerTls,
    /// Accept connections and never say a word (the relay's `SessionFault::Silent`).
    pub silent: bool,
}

impl ExchangerSetup {
    /// STARTTLS with a certificate for `hostname` from [`test_ca`]; not silent.
    pub fn new(hostname: &str) -> ExchangerSetup {
        ExchangerSetup {
            hostname: hostname.to_string(),
            tls: ExchangerTls::CaSigned(hostname.to_string()),
            silent: false,
        }
    }

    pub fn tls(mut self, tls: ExchangerTls) -> ExchangerSetup {
        self.tls = tls;
        self
    }

    pub fn silent(mut self) -> ExchangerSetup {
        self.silent = true;
        self
    }
}

/// A running lab exchanger. Dropping it aborts the relay's tasks; [`Self::stop`] is the
/// orderly way.
pub struct RunningExchanger {
    pub relay: Relay,
    pub addr: SocketAddr,
    pub hostname: String,
    /// Spool, Maildir and certificate files.
    pub dir: tempfile::TempDir,
}

impl RunningExchanger {
    pub fn ip(&self) -> IpAddr {
        self.addr.ip()
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The relay's live fault switches (silence, 421 greeting, recipient replies).
    pub fn faults(&self) -> Faults {
        self.relay.faults()
    }

    pub async fn stop(self) {
        let _ = tokio::time::timeout(BOUND, self.relay.shutdown()).await;
    }
}

/// Start a real mx-relay on `ip:port` (port 0 for any) as the exchanger `setup` describes.
/// It accepts mail for nobody, and anything it would deliver goes nowhere (DNS and routes
/// point at closed loopback ports).
pub async fn exchanger(ip: &str, port: u16, setup: ExchangerSetup) -> RunningExchanger {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::parse(
        &format!(
            "[server]\nhostname = \"{}\"\ngreet_pause_ms = 0\ncommand_timeout_secs = 30\n",
            setup.hostname
        ),
        "exchanger",
    )
    .expect("exchanger config");
    let addr: SocketAddr = SocketAddr::new(ip.parse().expect("ip"), port);
    config.server.listen = vec![addr];
    config.server.maildir_root = dir.path().join("maildir");
    config.spool.path = dir.path().join("spool");
    config.spool.min_free_bytes = 0;
    config.dns.nameservers = vec![SocketAddr::from(([127, 0, 0, 1], 1))];
    let leaf = match setup.tls {
        ExchangerTls::None => None,
        ExchangerTls::CaSigned(name) => Some(test_ca().leaf(&[&name])),
        ExchangerTls::SelfSigned(name) => Some(self_signed(&[&name])),
        ExchangerTls::Leaf(leaf) => Some(leaf),
    };
    config.server.starttls = leaf.is_some();
    if let Some(leaf) = leaf {
        let (cert, key) = leaf.write(dir.path(), "exchanger");
        config.server.tls_cert = Some(cert);
        config.server.tls_key = Some(key);
    }
    let relay = tokio::time::timeout(BOUND, Relay::start(&config))
        .await
        .expect("exchanger starts in time")
        .unwrap_or_else(|e| panic!("exchanger on {addr} does not start: {e}"));
    if setup.silent {
        relay.faults().set_session(SessionFault::Silent);
    }
    let addr = relay.local_addrs()[0];
    RunningExchanger {
        relay,
        addr,
        hostname: setup.hostname,
        dir,
    }
}

/// One canned HTTP response.
#[derive(Clone, Debug)]
pub struct HttpResponse {
    pub status: u16,
    /// Sent as given, after the status line (Content-Length or Transfer-Encoding and
    /// Connection: close are added).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Send the body with chunked transfer-encoding, in chunks of 7 octets.
    pub chunked: bool,
}

impl HttpResponse {
    /// 200, `text/plain`.
    pub fn text(body: &str) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: body.as_bytes().to_vec(),
            chunked: false,
        }
    }

    /// 200, `text/html`.
    pub fn html(body: &str) -> HttpResponse {
        HttpResponse {
            headers: vec![("Content-Type".into(), "text/html".into())],
            ..HttpResponse::text(body)
        }
    }

    /// `status` with a short text/plain body.
    pub fn status(status: u16) -> HttpResponse {
        HttpResponse {
            status,
            ..HttpResponse::text("no\n")
        }
    }

    /// 301 to `location`.
    pub fn redirect(location: &str) -> HttpResponse {
        let mut r = HttpResponse::status(301);
        r.headers.push(("Location".into(), location.into()));
        r
    }

    pub fn chunked(mut self) -> HttpResponse {
        self.chunked = true;
        self
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} X\r\n", self.status);
        for (n, v) in &self.headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out.push_str("Connection: close\r\n");
        let mut out = if self.chunked {
            out.push_str("Transfer-Encoding: chunked\r\n\r\n");
            let mut out = out.into_bytes();
            for chunk in self.body.chunks(7) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            return out;
        } else {
            out.push_str(&format!("Content-Length: {}\r\n\r\n", self.body.len()));
            out.into_bytes()
        };
        out.extend_from_slice(&self.body);
        out
    }
}

/// A running [`https_server`]: the request heads it received, in order. Dropping it stops
/// the server.
pub struct HttpsServer {
    pub requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl HttpsServer {
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTPS server on `ip` (port 0) presenting `cert`, answering GETs for the paths of
/// `routes` with their response and anything else with 404. One request per connection.
pub async fn https_server(
    ip: &str,
    cert: &Leaf,
    routes: Vec<(&str, HttpResponse)>,
) -> (SocketAddr, HttpsServer) {
    let listener = TcpListener::bind((ip, 0)).await.expect("bind https");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
    let routes: Arc<Vec<(String, HttpResponse)>> = Arc::new(
        routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect(),
    );
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let routes = routes.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(BOUND, async move {
                    let mut tls = acceptor.accept(tcp).await.ok()?;
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 2048];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16384 {
                        let n = tls.read(&mut chunk).await.ok()?;
                        if n == 0 {
                            return None;
                        }
                        head.extend_from_slice(&chunk[..n]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    seen.lock().unwrap().push(head.clone());
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let response = routes
                        .iter()
                        .find(|(p, _)| *p == path)
                        .map(|(_, r)| r.clone())
                        .unwrap_or_else(|| HttpResponse::status(404));
                    tls.write_all(&response.to_bytes()).await.ok()?;
                    tls.shutdown().await.ok()
                })
                .await;
            });
        }
    });
    (addr, HttpsServer { requests, task })
}
