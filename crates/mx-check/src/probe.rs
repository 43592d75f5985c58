//! The SMTP probe of one exchanger address: connect, read the greeting, EHLO, STARTTLS and
//! the TLS handshake, EHLO again, QUIT. Never MAIL. Every step is bounded by a timeout and
//! every reply by a line length and a line count, so a hostile or broken server can neither
//! hang the check nor exhaust its memory; whatever the server does becomes data, never a panic.
//!
//! The handshake accepts any certificate so that it completes and the chain can be captured;
//! the chain is then judged separately against the trust roots (see [`TlsProbe`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::tls;

/// Longest reply line we accept (RFC 5321 allows 512; real servers stay well below 4 KiB).
pub const MAX_LINE: usize = 4096;
/// Most lines in one reply.
pub const MAX_REPLY_LINES: usize = 100;

/// Longest wait for the reply to QUIT (it tells us nothing we need).
pub const QUIT_BOUND: Duration = Duration::from_secs(3);

/// How to probe.
#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// The SMTP port; 25 in real life, a loopback port in tests.
    pub port: u16,
    /// Bound on the TCP connect.
    pub connect_timeout: Duration,
    /// Bound on each reply (the whole reply, not each read) and on the TLS handshake.
    pub command_timeout: Duration,
    /// The name we give in EHLO/HELO.
    pub helo_name: String,
    /// The roots the captured chain is judged against: system bundle plus `--ca-file`
    /// (see [`crate::tls::roots`]).
    pub tls_roots: Arc<RootCertStore>,
}

impl ProbeOptions {
    /// Port 25, 10 s to connect, 30 s per reply.
    pub fn new(helo_name: &str, tls_roots: Arc<RootCertStore>) -> ProbeOptions {
        ProbeOptions {
            port: 25,
            connect_timeout: Duration::from_secs(10),
            command_timeout: Duration::from_secs(30),
            helo_name: helo_name.to_string(),
            tls_roots,
        }
    }
}

/// What the probe of one address saw.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SmtpProbe {
    pub ip: IpAddr,
    pub port: u16,
    /// The TCP connection was established.
    pub connected: bool,
    /// The first thing that went wrong in the SMTP session ("connection refused", "timed out
    /// waiting for the banner", "greeting was 421 ...", ...). Trouble with STARTTLS itself
    /// (a refusal, a failed handshake) is in [`TlsProbe::error`] instead.
    pub error: Option<String>,
    /// The text of the greeting, all lines joined with " ".
    pub banner: Option<String>,
    pub banner_code: Option<u16>,
    /// First word of the first greeting line, lower-case, when it looks like a domain name.
    pub banner_host: Option<String>,
    /// EHLO was answered 250 (false when only HELO worked, or the session ended earlier).
    pub ehlo: bool,
    /// EHLO keywords before STARTTLS, upper-case ("STARTTLS", "SIZE", "PIPELINING", ...).
    pub extensions: Vec<String>,
    /// STARTTLS was offered.
    pub starttls: bool,
    /// Present when STARTTLS was offered (and so attempted).
    pub tls: Option<TlsProbe>,
    /// Wall time of the whole probe.
    pub elapsed_ms: u64,
}

/// The STARTTLS part of a probe.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsProbe {
    /// The handshake completed.
    pub established: bool,
    /// Why STARTTLS or the handshake failed ("STARTTLS answered 454 ...", "TLS handshake
    /// failed: ...", "timed out in the TLS handshake").
    pub error: Option<String>,
    /// "TLSv1.3", "TLSv1.2".
    pub version: Option<String>,
    /// IANA name of the cipher suite, such as "TLS13_AES_256_GCM_SHA384".
    pub cipher: Option<String>,
    /// The leaf certificate.
    pub certificate: Option<CertInfo>,
    /// The chain links to one of the trust roots, name aside. An expired (or not yet
    /// valid) leaf is judged at a moment inside its own validity, so a lapsed certificate
    /// from a trusted CA shows as `trusted` and `expired`.
    pub trusted: bool,
    /// The leaf is valid for the MX host name (SAN dNSName, wildcards included).
    pub name_matches: bool,
    pub expired: bool,
    pub not_yet_valid: bool,
    /// rustls/webpki's verdict for the MX host name now, when it is not a pass: "issuer is
    /// not a trusted CA", "certificate does not name mx.example.com; it is only for ...",
    /// "certificate has expired".
    pub verify_error: Option<String>,
}

/// The leaf certificate, for people.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Distinguished name, as "CN=mx.example.com, O=Example".
    pub subject: String,
    /// The SAN dNSNames.
    pub dns_names: Vec<String>,
    pub issuer: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    /// Whole days until `not_after` (negative once expired).
    pub days_left: i64,
    /// Issuer and subject are the same name (and key identifiers, when present, agree).
    pub self_signed: bool,
}

impl SmtpProbe {
    fn new(ip: IpAddr, port: u16) -> SmtpProbe {
        SmtpProbe {
            ip,
            port,
            connected: false,
            error: None,
            banner: None,
            banner_code: None,
            banner_host: None,
            ehlo: false,
            extensions: Vec::new(),
            starttls: false,
            tls: None,
            elapsed_ms: 0,
        }
    }
}

/// Probe `ip` (port `opts.port`) as the exchanger `mx_host`: the TLS SNI and the name the
/// certificate is checked for. Every step has its own bound, so the whole probe takes at
/// most `connect_timeout` plus a dozen `command_timeout`s (in practice: one, for a silent
/// server).
pub async fn probe_smtp(ip: IpAddr, mx_host: &str, opts: &ProbeOptions) -> SmtpProbe {
    let start = Instant::now();
    let mut probe = SmtpProbe::new(ip, opts.port);
    session(&mut probe, mx_host, opts).await;
    probe.elapsed_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    probe
}

async fn session(p: &mut SmtpProbe, mx_host: &str, opts: &ProbeOptions) {
    let addr = SocketAddr::new(p.ip, opts.port);
    let tcp = match timeout(opts.connect_timeout, TcpStream::connect(addr)).await {
        Err(_) => {
            p.error = Some(format!(
                "timed out connecting (after {})",
                seconds(opts.connect_timeout)
            ));
            return;
        }
        Ok(Err(e)) => {
            p.error = Some(io_phrase(&e));
            return;
        }
        Ok(Ok(tcp)) => tcp,
    };
    let _ = tcp.set_nodelay(true);
    p.connected = true;
    let wait = opts.command_timeout;
    let mut wire = Wire::new(tcp);

    let banner = match wire.reply(wait, "banner").await {
        Ok(r) => r,
        Err(e) => {
            p.error = Some(e);
            return;
        }
    };
    p.banner_code = Some(banner.code);
    p.banner = Some(banner.text());
    p.banner_host = banner.lines.first().and_then(|l| banner_host(l));
    if banner.code != 220 {
        p.error = Some(format!("greeting was {} instead of 220", banner.summary()));
        wire.quit(wait).await;
        return;
    }

    match wire
        .command(&format!("EHLO {}", opts.helo_name), wait, "EHLO reply")
        .await
    {
        Err(e) => {
            p.error = Some(e);
            return;
        }
        Ok(r) if r.code == 250 => {
            p.ehlo = true;
            p.extensions = keywords(&r);
        }
        Ok(r) if r.code >= 500 => {
            match wire
                .command(&format!("HELO {}", opts.helo_name), wait, "HELO reply")
                .await
            {
                Err(e) => {
                    p.error = Some(e);
                    return;
                }
                Ok(h) if h.code == 250 => {}
                Ok(h) => {
                    p.error = Some(format!(
                        "EHLO answered {} and HELO {}",
                        r.summary(),
                        h.summary()
                    ));
                    wire.quit(wait).await;
                    return;
                }
            }
        }
        Ok(r) => {
            p.error = Some(format!("EHLO answered {}", r.summary()));
            wire.quit(wait).await;
            return;
        }
    }
    p.starttls = p.extensions.iter().any(|k| k == "STARTTLS");
    if !p.starttls {
        wire.quit(wait).await;
        return;
    }

    let failed = |e: String| TlsProbe {
        error: Some(e),
        ..TlsProbe::default()
    };
    match wire.command("STARTTLS", wait, "STARTTLS reply").await {
        Err(e) => {
            p.tls = Some(failed(e));
            return;
        }
        Ok(r) if r.code != 220 => {
            p.tls = Some(failed(format!("STARTTLS answered {}", r.summary())));
            wire.quit(wait).await;
            return;
        }
        Ok(_) => {}
    }
    if !wire.buf.is_empty() {
        // Bytes sent before the handshake would be read as if they came over TLS.
        p.tls = Some(failed(
            "the server sent data after its 220 to STARTTLS, before the handshake".into(),
        ));
        return;
    }
    let (tls_probe, stream) = handshake(wire.stream, mx_host, opts).await;
    p.tls = Some(tls_probe);
    let Some(stream) = stream else { return };
    let mut wire = Wire::new(stream);
    match wire
        .command(
            &format!("EHLO {}", opts.helo_name),
            wait,
            "EHLO reply after STARTTLS",
        )
        .await
    {
        Err(e) => {
            p.error = Some(e);
            return;
        }
        Ok(r) if r.code != 250 => {
            p.error = Some(format!("EHLO after STARTTLS answered {}", r.summary()));
        }
        Ok(_) => {}
    }
    wire.quit(wait).await;
    let _ = timeout(wait, wire.stream.shutdown()).await;
}

/// STARTTLS accepted: the handshake (any certificate), then the verdict on the chain.
async fn handshake(
    tcp: TcpStream,
    mx_host: &str,
    opts: &ProbeOptions,
) -> (TlsProbe, Option<tokio_rustls::client::TlsStream<TcpStream>>) {
    let mut t = TlsProbe::default();
    let host = mx_host.trim_end_matches('.').to_ascii_lowercase();
    let config = match tls::accept_any_config() {
        Ok(c) => c,
        Err(e) => {
            t.error = Some(format!("TLS configuration: {e}"));
            return (t, None);
        }
    };
    let Ok(name) = ServerName::try_from(host.clone()) else {
        t.error = Some(format!("{mx_host:?} is not a host name usable for SNI"));
        return (t, None);
    };
    let connector = TlsConnector::from(config);
    let stream = match timeout(opts.command_timeout, connector.connect(name.clone(), tcp)).await {
        Err(_) => {
            t.error = Some("timed out in the TLS handshake".into());
            return (t, None);
        }
        Ok(Err(e)) => {
            let why = match tls::rustls_error(&e) {
                Some(r) => tls::describe_error(r, &host),
                None => io_phrase(&e),
            };
            t.error = Some(format!("TLS handshake failed: {why}"));
            return (t, None);
        }
        Ok(Ok(s)) => s,
    };
    t.established = true;
    let (_, conn) = stream.get_ref();
    t.version = conn.protocol_version().map(|v| match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
        other => format!("{other:?}"),
    });
    t.cipher = conn.negotiated_cipher_suite().map(|s| {
        let suite = s.suite();
        suite
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{suite:?}"))
    });
    match conn.peer_certificates() {
        Some(chain) if !chain.is_empty() => judge(&mut t, chain, &name, &host, &opts.tls_roots),
        _ => t.verify_error = Some("the server sent no certificate".into()),
    }
    (t, Some(stream))
}

/// Fill the certificate fields of `t` from the captured `chain` (leaf first).
fn judge(
    t: &mut TlsProbe,
    chain: &[CertificateDer<'static>],
    name: &ServerName<'static>,
    host: &str,
    roots: &Arc<RootCertStore>,
) {
    let leaf = &chain[0];
    let intermediates = &chain[1..];
    let now = unix_now();
    let mut window = None;
    match cert_info(leaf.as_ref(), now) {
        Ok((info, not_before, not_after)) => {
            t.expired = now > not_after;
            t.not_yet_valid = now < not_before;
            t.certificate = Some(info);
            window = Some((not_before, not_after));
        }
        Err(e) => t.verify_error = Some(e),
    }
    let provider = tls::provider();
    if roots.is_empty() {
        t.verify_error
            .get_or_insert_with(|| "no trusted CA certificates to verify against".into());
    } else {
        match WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone()).build() {
            Ok(verifier) => {
                if let Err(e) =
                    verifier.verify_server_cert(leaf, intermediates, name, &[], UnixTime::now())
                {
                    t.verify_error = Some(tls::describe_error(&e, host));
                }
            }
            Err(e) => t.verify_error = Some(format!("cannot build the verifier: {e}")),
        }
    }
    let Ok(parsed) = ParsedCertificate::try_from(leaf) else {
        t.verify_error
            .get_or_insert_with(|| "the certificate cannot be parsed".into());
        return;
    };
    t.name_matches = rustls::client::verify_server_name(&parsed, name).is_ok();
    let when = match window {
        Some((from, until)) if (t.expired || t.not_yet_valid) && until >= from => {
            let middle = from + (until - from) / 2;
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(middle).unwrap_or(0)))
        }
        _ => UnixTime::now(),
    };
    t.trusted = !roots.is_empty()
        && rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            roots,
            intermediates,
            when,
            provider.signature_verification_algorithms.all,
        )
        .is_ok();
}

/// The leaf, parsed with x509-parser, and its validity as Unix seconds.
fn cert_info(der: &[u8], now: i64) -> Result<(CertInfo, i64, i64), String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
    let not_before = cert.validity().not_before.timestamp();
    let not_after = cert.validity().not_after.timestamp();
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                GeneralName::DNSName(n) => Some(n.to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let mut ski = None;
    let mut aki = None;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => {}
        }
    }
    let same_name = cert.subject().as_raw() == cert.issuer().as_raw();
    let same_key = match (&ski, &aki) {
        (Some(s), Some(a)) => s == a,
        _ => true,
    };
    let info = CertInfo {
        subject: cert.subject().to_string(),
        dns_names,
        issuer: cert.issuer().to_string(),
        not_before: rfc3339(not_before),
        not_after: rfc3339(not_after),
        days_left: (not_after - now).div_euclid(86_400),
        self_signed: same_name && same_key,
    };
    Ok((info, not_before, not_after))
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Unix seconds as "2026-01-31T12:00:00Z".
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// First word of a greeting line, lower-case, when it looks like a domain name.
fn banner_host(line: &str) -> Option<String> {
    let word = line.split_whitespace().next()?;
    let name = word.trim_end_matches('.').to_ascii_lowercase();
    looks_like_domain(&name).then_some(name)
}

/// At least two labels of letters, digits and inner hyphens, 63 octets at most each,
/// 253 in all, and a last label that is not all digits (so no IPv4 literal).
fn looks_like_domain(name: &str) -> bool {
    let labels: Vec<&str> = name.split('.').collect();
    name.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|l| !l.bytes().all(|b| b.is_ascii_digit()))
}

/// The EHLO keywords: first word of every line but the first, upper-case.
fn keywords(r: &Reply) -> Vec<String> {
    r.lines
        .iter()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_ascii_uppercase)
        .collect()
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// A short phrase for an I/O error.
fn io_phrase(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset by the server".into(),
        ConnectionAborted => "connection aborted".into(),
        TimedOut => "timed out".into(),
        UnexpectedEof => "connection closed".into(),
        HostUnreachable => "host unreachable".into(),
        NetworkUnreachable => "network unreachable".into(),
        _ => e.to_string(),
    }
}

/// One SMTP reply: its code and the text of each line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join(" ")
    }

    /// "421 Service not available", shortened for messages.
    fn summary(&self) -> String {
        let mut s = format!("{} {}", self.code, self.text());
        if s.len() > 200 {
            let mut cut = 200;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
            s.push('…');
        }
        s.trim_end().to_string()
    }
}

/// Why a reply could not be read.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    Closed,
    Io(String),
    LineTooLong,
    TooManyLines,
    Malformed(String),
}

/// Parse one reply line: (code, last line?, text).
fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ReadError> {
    let bad = || ReadError::Malformed(String::from_utf8_lossy(line).chars().take(80).collect());
    if line.len() < 3 || !line[..3].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let code = line[..3]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if !(200..=599).contains(&code) {
        return Err(bad());
    }
    let last = match line.get(3) {
        None | Some(b' ') => true,
        Some(b'-') => false,
        Some(_) => return Err(bad()),
    };
    let text = String::from_utf8_lossy(line.get(4..).unwrap_or_default())
        .trim_end()
        .to_string();
    Ok((code, last, text))
}

/// An SMTP connection: reply lines with bounds, commands out.
struct Wire<S> {
    stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire<S> {
    fn new(stream: S) -> Wire<S> {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    /// One line without its CR LF, at most [`MAX_LINE`] octets.
    async fn line(&mut self) -> Result<Vec<u8>, ReadError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                if pos > MAX_LINE {
                    return Err(ReadError::LineTooLong);
                }
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(ReadError::LineTooLong);
            }
            let mut chunk = [0u8; 4096];
            let n = self
                .stream
                .read(&mut chunk)
                .await
                .map_err(|e| ReadError::Io(io_phrase(&e)))?;
            if n == 0 {
                return Err(ReadError::Closed);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, ReadError> {
        let mut reply = Reply {
            code: 0,
            lines: Vec::new(),
        };
        loop {
            let raw = self.line().await?;
            let (code, last, text) = parse_line(&raw)?;
            if reply.lines.is_empty() {
                reply.code = code;
            } else if code != reply.code {
                return Err(ReadError::Malformed(format!(
                    "code {code} inside a {} reply",
                    reply.code
                )));
            }
            if reply.lines.len() >= MAX_REPLY_LINES {
                return Err(ReadError::TooManyLines);
            }
            reply.lines.push(text);
            if last {
                return Ok(reply);
            }
        }
    }

    /// The next reply, within `wait`; errors as sentences naming `what`.
    async fn reply(&mut self, wait: Duration, what: &str) -> Result<Reply, String> {
        match timeout(wait, self.read_reply()).await {
            Err(_) => Err(format!("timed out waiting for the {what}")),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(match e {
                ReadError::Closed => format!("connection closed while waiting for the {what}"),
                ReadError::Io(io) => format!("{io} while waiting for the {what}"),
                ReadError::LineTooLong => {
                    format!("a line of the {what} is longer than {MAX_LINE} octets")
                }
                ReadError::TooManyLines => {
                    format!("the {what} has more than {MAX_REPLY_LINES} lines")
                }
                ReadError::Malformed(line) => format!("malformed {what}: {line:?}"),
            }),
        }
    }

    /// Send `command` (CR LF added) and read its reply, all within `wait`.
    async fn command(
        &mut self,
        command: &str,
        wait: Duration,
        what: &str,
    ) -> Result<Reply, String> {
        let verb = command.split(' ').next().unwrap_or(command);
        let line = format!("{command}\r\n");
        let sent = timeout(wait, async {
            self.stream.write_all(line.as_bytes()).await?;
            self.stream.flush().await
        })
        .await;
        match sent {
            Err(_) => return Err(format!("timed out sending {verb}")),
            Ok(Err(e)) => return Err(format!("{} while sending {verb}", io_phrase(&e))),
            Ok(Ok(())) => {}
        }
        self.reply(wait, what).await
    }

    /// QUIT and its reply, whatever happens; a server that does not answer QUIT is not
    /// waited for longer than [`QUIT_BOUND`].
    async fn quit(&mut self, wait: Duration) {
        let _ = self
            .command("QUIT", wait.min(QUIT_BOUND), "QUIT reply")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn replies(input: &[u8]) -> Vec<Result<Reply, ReadError>> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(input).await.unwrap();
        drop(client);
        let mut wire = Wire::new(server);
        let mut out = Vec::new();
        loop {
            let r = wire.read_reply().await;
            let stop = r.is_err();
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn multi_line_replies_and_bounds() {
        let got = replies(b"220-mx.example.com ESMTP\r\n220 ready\n250 ok\r\n").await;
        assert_eq!(
            got[0],
            Ok(Reply {
                code: 220,
                lines: vec!["mx.example.com ESMTP".into(), "ready".into()]
            })
        );
        assert_eq!(got[1].as_ref().unwrap().code, 250);
        assert_eq!(got[2], Err(ReadError::Closed));

        let long = [b"220 ".as_slice(), &[b'x'; 5000], b"\r\n"].concat();
        assert_eq!(replies(&long).await[0], Err(ReadError::LineTooLong));
        let endless = vec![b'x'; 100_000];
        assert_eq!(replies(&endless).await[0], Err(ReadError::LineTooLong));
        let many = b"250-x\r\n".repeat(150);
        assert_eq!(replies(&many).await[0], Err(ReadError::TooManyLines));
        assert!(matches!(
            replies(b"hello\r\n").await[0],
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            replies(b"250-a\r\n550 b\r\n").await[0],
            Err(ReadError::Malformed(_))
        ));
        assert!(matches!(
            replies(b"250x\r\n").await[0],
            Err(ReadError::Malformed(_))
        ));
        assert_eq!(replies(b"250\r\n").await[0].as_ref().unwrap().code, 250);
    }

    #[test]
    fn banner_hosts() {
        assert_eq!(
            banner_host("MX.Example.COM ESMTP ready").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(
            banner_host("mx.example.com.").as_deref(),
            Some("mx.example.com")
        );
        assert_eq!(banner_host("ESMTP ready"), None);
        assert_eq!(banner_host("192.0.2.1 ESMTP"), None);
        assert_eq!(banner_host("[192.0.2.1] ESMTP"), None);
        assert_eq!(banner_host(""), None);
        assert_eq!(banner_host("-bad-.example ok"), None);
    }

    #[test]
    fn ehlo_keywords() {
        let r = Reply {
            code: 250,
            lines: vec![
                "mx.example.com hello".into(),
                "size 1000".into(),
                "STARTTLS".into(),
                "8BITMIME".into(),
            ],
        };
        assert_eq!(keywords(&r), vec!["SIZE", "STARTTLS", "8BITMIME"]);
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }
}
