//! MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): parsing of the `_mta-sts` and `_smtp._tls`
//! TXT records and of the policy file, MX pattern matching, and the HTTPS fetch of the
//! policy with a small HTTP/1.1 client of our own over tokio-rustls.
//!
//! Errors are one readable sentence each, meant to end up in a finding.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use crate::tls;

/// The largest policy body we read (RFC 8461 §3.3 lets senders stop at 64 KiB).
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// The largest `max_age` (RFC 8461 §3.2: 31557600 seconds, about a year).
pub const MAX_MAX_AGE: u64 = 31_557_600;
/// The largest HTTP response head we read.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The `_mta-sts.{domain}` TXT record.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct StsRecord {
    pub id: String,
}

/// Split `v=X; a=b; c=d;` into trimmed (name, value) pairs; empty fields (a trailing `;`)
/// are skipped.
fn tag_fields(txt: &str) -> Result<Vec<(&str, &str)>, String> {
    txt.split(';')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|f| {
            f.split_once('=')
                .map(|(n, v)| (n.trim(), v.trim()))
                .ok_or_else(|| format!("field {f:?} is not name=value"))
        })
        .collect()
}

/// Parse an MTA-STS TXT record (RFC 8461 §3.1): `v=STSv1` first, then `id=` (1 to 32
/// letters and digits); other fields are extensions and ignored.
pub fn parse_sts_record(txt: &str) -> Result<StsRecord, String> {
    let fields = tag_fields(txt)?;
    match fields.first() {
        Some(("v", "STSv1")) => {}
        _ => return Err("the record does not start with v=STSv1".into()),
    }
    let mut id = None;
    for (name, value) in &fields[1..] {
        if *name == "id" {
            if id.is_some() {
                return Err("id= appears more than once".into());
            }
            id = Some(*value);
        }
    }
    let id = id.ok_or("the record has no id=")?;
    if id.is_empty() || id.len() > 32 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(format!("id={id:?} is not 1 to 32 letters and digits"));
    }
    Ok(StsRecord { id: id.to_string() })
}

/// The policy mode.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StsMode {
    Enforce,
    Testing,
    None,
}

impl StsMode {
    /// "enforce", "testing", "none".
    pub fn as_str(&self) -> &'static str {
        match self {
            StsMode::Enforce => "enforce",
            StsMode::Testing => "testing",
            StsMode::None => "none",
        }
    }
}

/// The policy file, `https://mta-sts.{domain}/.well-known/mta-sts.txt`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct StsPolicy {
    pub mode: StsMode,
    /// MX patterns, lower-case, as given ("mx1.example.com", "*.example.net").
    pub mx: Vec<String>,
    /// Seconds.
    pub max_age: u64,
}

/// Parse a policy (RFC 8461 §3.2): `key: value` lines ended by CRLF or LF. `version: STSv1`,
/// `mode` and `max_age` (0 to 31557600) are required, `mx` (repeatable) unless the mode is
/// `none`; unknown keys are extensions and ignored; of a repeated key other than `mx` the
/// first is used.
pub fn parse_policy(text: &str) -> Result<StsPolicy, String> {
    let mut version = None;
    let mut mode = None;
    let mut max_age = None;
    let mut mx = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("line {}: {line:?} is not \"key: value\"", i + 1));
        };
        let (key, value) = (key.trim(), value.trim());
        match key {
            "version" => {
                version.get_or_insert(value);
            }
            // Of a repeated key the first counts; the later ones fall to `_`.
            "mode" if mode.is_none() => {
                mode = Some(match value {
                    "enforce" => StsMode::Enforce,
                    "testing" => StsMode::Testing,
                    "none" => StsMode::None,
                    other => {
                        return Err(format!("mode {other:?} is not enforce, testing or none"));
                    }
                });
            }
            "max_age" if max_age.is_none() => {
                let n = (!value.is_empty()
                    && value.len() <= 10
                    && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .filter(|n| *n <= MAX_MAX_AGE)
                .ok_or_else(|| {
                    format!("max_age {value:?} is not a number of seconds from 0 to {MAX_MAX_AGE}")
                })?;
                max_age = Some(n);
            }
            "mx" => {
                let pattern = value.trim_end_matches('.').to_ascii_lowercase();
                if !valid_mx_pattern(&pattern) {
                    return Err(format!(
                        "mx {value:?} is not a host name or *.domain pattern"
                    ));
                }
                mx.push(pattern);
            }
            _ => {}
        }
    }
    match version {
        Some("STSv1") => {}
        Some(other) => return Err(format!("version {other:?} is not STSv1")),
        None => return Err("the policy has no \"version: STSv1\" line".into()),
    }
    let mode = mode.ok_or("the policy has no mode")?;
    let max_age = max_age.ok_or("the policy has no max_age")?;
    if mx.is_empty() && mode != StsMode::None {
        return Err("the policy has no mx line".into());
    }
    Ok(StsPolicy { mode, mx, max_age })
}

/// A host name, or `*.` followed by one.
fn valid_mx_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Does the MX host `host` match the policy pattern `pattern` (RFC 8461 §4.1)? Case-
/// insensitive, trailing dots ignored; `*.example.com` matches exactly one more label on
/// the left (`mx.example.com`, not `example.com` nor `a.b.example.com`).
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if pattern.is_empty() || host.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == parent),
        None => pattern == host,
    }
}

/// The `_smtp._tls.{domain}` TXT record.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct TlsRptRecord {
    pub rua: Vec<String>,
}

/// Parse a TLS-RPT record (RFC 8460 §3): `v=TLSRPTv1` first, `rua=` with comma-separated
/// `mailto:` or `https:` URIs; other fields are extensions and ignored.
pub fn parse_tlsrpt_record(txt: &str) -> Result<TlsRptRecord, String> {
    let fields = tag_fields(txt)?;
    match fields.first() {
        Some(("v", "TLSRPTv1")) => {}
        _ => return Err("the record does not start with v=TLSRPTv1".into()),
    }
    let mut rua = None;
    for (name, value) in &fields[1..] {
        if *name == "rua" {
            if rua.is_some() {
                return Err("rua= appears more than once".into());
            }
            rua = Some(*value);
        }
    }
    let rua = rua.ok_or("the record has no rua=")?;
    let mut uris = Vec::new();
    for uri in rua.split(',').map(str::trim) {
        let lower = uri.to_ascii_lowercase();
        let ok = match () {
            _ if lower.starts_with("mailto:") => uri.len() > 7 && uri[7..].contains('@'),
            _ if lower.starts_with("https://") => uri.len() > 8,
            _ => false,
        };
        if !ok {
            return Err(format!(
                "rua {uri:?} is not a mailto: address or an https: URL"
            ));
        }
        uris.push(uri.to_string());
    }
    Ok(TlsRptRecord { rua: uris })
}

/// How to fetch a policy.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// 443 in real life, a loopback port in tests.
    pub port: u16,
    /// Bound on the TCP connect to each address, and again on the rest of the exchange
    /// (TLS, request, response) with the first address that connects.
    pub timeout: Duration,
    pub tls_roots: Arc<RootCertStore>,
}

impl FetchOptions {
    /// Port 443, 20 s.
    pub fn new(tls_roots: Arc<RootCertStore>) -> FetchOptions {
        FetchOptions {
            port: 443,
            timeout: Duration::from_secs(20),
            tls_roots,
        }
    }
}

/// GET `https://mta-sts.{domain}/.well-known/mta-sts.txt` from one of `addresses` (the
/// caller resolved `mta-sts.{domain}`; they are tried in order while the TCP connect fails
/// or times out; the first connected address gives the answer, good or bad), the
/// certificate verified for `mta-sts.{domain}` against `tls_roots`. HTTP/1.1 with `Host`
/// and `Connection: close`; redirects are not followed (RFC 8461 §3.3); 200 and
/// `text/plain` are required; the body is capped at [`MAX_POLICY_BYTES`]; chunked transfer
/// encoding is understood. Returns the body.
pub async fn fetch_policy(
    domain: &str,
    addresses: &[IpAddr],
    opts: &FetchOptions,
) -> Result<String, String> {
    let host = format!(
        "mta-sts.{}",
        domain.trim_end_matches('.').to_ascii_lowercase()
    );
    let name = ServerName::try_from(host.clone())
        .map_err(|_| format!("{host} is not a valid host name"))?;
    let config = tls::verified_config(opts.tls_roots.clone()).map_err(|e| e.to_string())?;
    let connector = TlsConnector::from(config);
    let mut last = format!("no address for {host}");
    for ip in addresses {
        let addr = SocketAddr::new(*ip, opts.port);
        let tcp = match timeout(opts.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                last = format!("cannot connect to {addr}: {}", io_phrase(&e));
                continue;
            }
            Err(_) => {
                last = format!("timed out connecting to {addr}");
                continue;
            }
        };
        return match timeout(opts.timeout, fetch_one(tcp, &host, &name, &connector)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "timed out fetching https://{host}/.well-known/mta-sts.txt from {addr}"
            )),
        };
    }
    Err(last)
}

async fn fetch_one(
    tcp: TcpStream,
    host: &str,
    name: &ServerName<'static>,
    connector: &TlsConnector,
) -> Result<String, String> {
    let mut stream =
        connector
            .connect(name.clone(), tcp)
            .await
            .map_err(|e| match tls::rustls_error(&e) {
                Some(rustls::Error::InvalidCertificate(c)) => format!(
                    "certificate not valid for {host}: {}",
                    tls::describe_certificate_error(c, host)
                ),
                Some(r) => format!("TLS handshake with {host} failed: {r}"),
                None => format!("TLS handshake with {host} failed: {}", io_phrase(&e)),
            })?;
    let request = format!(
        "GET /.well-known/mta-sts.txt HTTP/1.1\r\nHost: {host}\r\nUser-Agent: mxroute-check\r\nAccept: text/plain\r\nConnection: close\r\n\r\n"
    );
    let sent = async {
        stream.write_all(request.as_bytes()).await?;
        stream.flush().await
    };
    sent.await
        .map_err(|e| format!("sending the request to {host}: {}", io_phrase(&e)))?;
    let body = read_response(&mut stream).await?;
    let _ = stream.shutdown().await;
    Ok(body)
}

/// Read one HTTP/1.x response and judge it as an MTA-STS policy response.
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, String> {
    let mut r = HttpReader {
        stream,
        buf: Vec::new(),
    };
    let head_end = loop {
        if let Some(pos) = find(&r.buf, b"\r\n\r\n") {
            break pos;
        }
        if r.buf.len() > MAX_HEAD_BYTES {
            return Err("the HTTP response head is larger than 16 KiB".into());
        }
        if r.fill().await? == 0 {
            return Err("the connection closed before the HTTP response head ended".into());
        }
    };
    let head = String::from_utf8_lossy(&r.buf[..head_end]).into_owned();
    r.buf.drain(..head_end + 4);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let status = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/1.") && code.len() == 3 => code
            .parse::<u16>()
            .map_err(|_| format!("malformed HTTP status line {status_line:?}"))?,
        _ => return Err(format!("malformed HTTP status line {status_line:?}")),
    };
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if (300..400).contains(&status) {
        return Err(match header("location") {
            Some(to) => format!(
                "HTTP {status} redirect to {to}; RFC 8461 forbids following redirects for the policy"
            ),
            None => format!(
                "HTTP {status} redirect; RFC 8461 forbids following redirects for the policy"
            ),
        });
    }
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    match header("content-type") {
        None => return Err("no content-type, expected text/plain".into()),
        Some(ct) => {
            let media = ct.split(';').next().unwrap_or_default().trim();
            if !media.eq_ignore_ascii_case("text/plain") {
                return Err(format!("content-type {media}, expected text/plain"));
            }
        }
    }
    let chunked =
        header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        r.chunked_body().await?
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("malformed content-length {len:?}"))?;
        if len > MAX_POLICY_BYTES {
            return Err(format!("the policy is {len} bytes, more than 64 KiB"));
        }
        r.exactly(len).await?
    } else {
        r.until_end().await?
    };
    String::from_utf8(body).map_err(|_| "the policy is not UTF-8 text".into())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct HttpReader<'a, S> {
    stream: &'a mut S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + Unpin> HttpReader<'_, S> {
    /// Read more into the buffer; 0 at the end. A TLS peer closing without close_notify
    /// is taken as the end (the framing checks catch a truncated body).
    async fn fill(&mut self) -> Result<usize, String> {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk).await {
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(format!("reading the response: {}", io_phrase(&e))),
        }
    }

    async fn exactly(&mut self, len: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < len {
            if self.fill().await? == 0 {
                return Err("the connection closed before the end of the policy".into());
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    async fn until_end(&mut self) -> Result<Vec<u8>, String> {
        while self.fill().await? > 0 {
            if self.buf.len() > MAX_POLICY_BYTES {
                return Err("the policy is larger than 64 KiB".into());
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    async fn line(&mut self) -> Result<String, String> {
        loop {
            if let Some(pos) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if self.buf.len() > 1024 {
                return Err("malformed chunked encoding: overlong chunk header".into());
            }
            if self.fill().await? == 0 {
                return Err("the connection closed inside the chunked body".into());
            }
        }
    }

    async fn chunked_body(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let header = self.line().await?;
            let size = header.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("malformed chunk size {size:?}"))?;
            if size == 0 {
                // Trailers, if any, until the empty line; the body is complete anyway.
                for _ in 0..100 {
                    match self.line().await {
                        Ok(l) if !l.is_empty() => continue,
                        _ => break,
                    }
                }
                return Ok(body);
            }
            if body.len() + size > MAX_POLICY_BYTES {
                return Err("the policy is larger than 64 KiB".into());
            }
            let chunk = self.exactly(size + 2).await?;
            if !chunk.ends_with(b"\r\n") {
                return Err("malformed chunked encoding: chunk not followed by CRLF".into());
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
}

fn io_phrase(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        UnexpectedEof => "connection closed".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn response(raw: &[u8]) -> Result<String, String> {
        let mut input = raw;
        read_response(&mut input).await
    }

    #[tokio::test]
    async fn http_framing() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(response(ok).await.unwrap(), "hello");
        let chunked = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        assert_eq!(response(chunked).await.unwrap(), "abcde");
        let to_end = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it";
        assert_eq!(response(to_end).await.unwrap(), "all of it");
        let short = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 50\r\n\r\nabc";
        assert!(response(short).await.unwrap_err().contains("closed"));
        let big = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 70000\r\n\r\n";
        assert!(response(big).await.unwrap_err().contains("64 KiB"));
        let mut huge = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec();
        huge.extend(vec![b'x'; 70_000]);
        assert!(response(&huge).await.unwrap_err().contains("64 KiB"));
        let no_type = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(
            response(no_type)
                .await
                .unwrap_err()
                .contains("no content-type")
        );
        assert!(
            response(b"garbage\r\n\r\n")
                .await
                .unwrap_err()
                .contains("status line")
        );
        assert!(
            response(b"HTTP/1.1 200 OK\r\n")
                .await
                .unwrap_err()
                .contains("closed")
        );
    }
}
