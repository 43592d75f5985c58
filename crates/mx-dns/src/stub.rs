//! A general stub resolver: any record type, the AA and AD bits, and questions sent to one
//! chosen server, for `mxroute check`.
//!
//! [`HickoryClient`](crate::HickoryClient) answers routing's three questions through
//! hickory-resolver, which hides the header bits and always picks the server itself. The check
//! needs to see those bits and to ask each authoritative server of a domain in turn, so this
//! module builds and reads the messages itself (hickory-proto) over its own sockets: UDP with
//! EDNS0, TCP when the answer is truncated.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use mx_core::Failure;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

use crate::error::DnsError;

/// RFC 9715 / DNS Flag Day 2020: an EDNS payload size that avoids IP fragmentation.
const EDNS_PAYLOAD: u16 = 1232;
/// Servers may ignore our EDNS size; a datagram can never exceed this.
const MAX_DATAGRAM: usize = 65_535;
/// The resolv.conf format has no port; nameservers listen on the standard one.
const DNS_PORT: u16 = 53;

/// Record types the check asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordKind {
    A,
    Aaaa,
    Mx,
    Cname,
    Ns,
    Txt,
    Tlsa,
    Ptr,
    Soa,
}

impl RecordKind {
    fn record_type(self) -> RecordType {
        match self {
            RecordKind::A => RecordType::A,
            RecordKind::Aaaa => RecordType::AAAA,
            RecordKind::Mx => RecordType::MX,
            RecordKind::Cname => RecordType::CNAME,
            RecordKind::Ns => RecordType::NS,
            RecordKind::Txt => RecordType::TXT,
            RecordKind::Tlsa => RecordType::TLSA,
            RecordKind::Ptr => RecordType::PTR,
            RecordKind::Soa => RecordType::SOA,
        }
    }
}

impl fmt::Display for RecordKind {
    /// The presentation-format mnemonic ("AAAA", "TLSA", ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordKind::A => "A",
            RecordKind::Aaaa => "AAAA",
            RecordKind::Mx => "MX",
            RecordKind::Cname => "CNAME",
            RecordKind::Ns => "NS",
            RecordKind::Txt => "TXT",
            RecordKind::Tlsa => "TLSA",
            RecordKind::Ptr => "PTR",
            RecordKind::Soa => "SOA",
        })
    }
}

/// The data of one record. Names are normalised like [`mx_core::normalize_dns_name`]
/// (lower-case, no trailing dot, the root is "").
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    Cname(String),
    Ns(String),
    Ptr(String),
    /// The character-strings of one TXT record concatenated, as SPF (RFC 7208 §3.3) and
    /// MTA-STS (RFC 8461 §3.1) read them; invalid UTF-8 is replaced, not an error.
    Txt(String),
    /// `data` is the certificate association data in lower-case hex.
    Tlsa {
        usage: u8,
        selector: u8,
        matching: u8,
        data: String,
    },
    Soa {
        mname: String,
        rname: String,
        serial: u32,
        minimum: u32,
    },
    /// Any other type (an RRSIG next to the answer when DO is set, for instance).
    Other {
        rtype: u16,
    },
}

/// One resource record of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubRecord {
    /// The owner name, normalised.
    pub name: String,
    pub ttl: u32,
    pub data: Rdata,
}

/// A real answer: NOERROR (possibly with no records: NODATA) or NXDOMAIN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StubAnswer {
    pub nxdomain: bool,
    /// The AA bit: the server answered from its own zone data.
    pub authoritative: bool,
    /// The AD bit: the (validating) resolver checked the answer with DNSSEC. Only meaningful
    /// when the path to that resolver is trusted.
    pub authenticated: bool,
    pub answers: Vec<StubRecord>,
    pub authority: Vec<StubRecord>,
    pub additional: Vec<StubRecord>,
    /// RFC 2308 §5: min(SOA TTL, SOA minimum) of the SOA in the authority section, if any.
    pub negative_ttl: Option<u32>,
}

/// How questions are asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StubOptions {
    /// Time allowed for one try (one UDP exchange, or the TCP exchange after a truncation).
    pub timeout: Duration,
    /// Tries per server; only timeouts and network errors are retried.
    pub attempts: usize,
    /// The RD bit: false when asking authoritative servers directly.
    pub recursion_desired: bool,
    /// The EDNS DO bit (RFC 3225), so that a validating resolver sets AD.
    pub dnssec_ok: bool,
}

impl Default for StubOptions {
    fn default() -> Self {
        StubOptions {
            timeout: Duration::from_secs(3),
            attempts: 2,
            recursion_desired: true,
            dnssec_ok: true,
        }
    }
}

/// A stub resolver over a list of servers, asked in order.
#[derive(Clone, Debug)]
pub struct StubResolver {
    servers: Vec<SocketAddr>,
    options: StubOptions,
}

impl StubResolver {
    /// A resolver asking these servers in this order.
    pub fn new(servers: Vec<SocketAddr>, options: StubOptions) -> Result<Self, DnsError> {
        if servers.is_empty() {
            return Err(DnsError::NoNameserver);
        }
        Ok(StubResolver { servers, options })
    }

    /// The nameservers of the system configuration (`/etc/resolv.conf`), on port 53.
    pub fn system(options: StubOptions) -> Result<Self, DnsError> {
        let (config, _) = hickory_resolver::system_conf::read_system_conf()
            .map_err(|e| DnsError::SystemConfig(e.to_string()))?;
        let mut servers: Vec<SocketAddr> = Vec::new();
        for server in config.name_servers() {
            let addr = SocketAddr::new(server.ip, DNS_PORT);
            if !servers.contains(&addr) {
                servers.push(addr);
            }
        }
        Self::new(servers, options)
    }

    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Tries the servers in order and returns the first real answer (NOERROR or NXDOMAIN).
    ///
    /// Any failure moves on to the next server: one broken resolver must not decide what
    /// another could answer. When none answers, the most telling failure is returned (a
    /// server's own SERVFAIL says more than silence).
    pub async fn lookup(&self, name: &str, kind: RecordKind) -> Result<StubAnswer, Failure> {
        let qname = parse_name(name)?;
        let mut worst: Option<Failure> = None;
        for &server in &self.servers {
            match self.ask_server(server, &qname, kind).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure.keep_most_telling(&mut worst),
            }
        }
        Err(worst.unwrap_or_else(|| Failure::Network("no nameserver".into())))
    }

    /// Asks exactly one server, which need not be among [`StubResolver::servers`] (the check
    /// uses it to ask each authoritative server of a domain directly).
    pub async fn lookup_at(
        &self,
        server: SocketAddr,
        name: &str,
        kind: RecordKind,
    ) -> Result<StubAnswer, Failure> {
        let qname = parse_name(name)?;
        self.ask_server(server, &qname, kind).await
    }

    /// Up to `attempts` tries at one server. Only silence and transport errors are worth a
    /// second try; a server that answered will answer the same again.
    async fn ask_server(
        &self,
        server: SocketAddr,
        name: &Name,
        kind: RecordKind,
    ) -> Result<StubAnswer, Failure> {
        let question = Query::query(name.clone(), kind.record_type());
        let mut last = Failure::Timeout;
        for _ in 0..self.options.attempts.max(1) {
            match self.try_once(server, &question).await {
                Ok(response) => return interpret(response),
                Err(failure @ (Failure::Timeout | Failure::Network(_))) => last = failure,
                Err(failure) => return Err(failure),
            }
        }
        Err(last)
    }

    /// One UDP exchange, and the TCP exchange when the UDP answer is truncated.
    async fn try_once(&self, server: SocketAddr, question: &Query) -> Result<Message, Failure> {
        let id: u16 = rand::random();
        let request = self.encode(id, question)?;
        let response = udp_exchange(server, &request, id, question, self.options.timeout).await?;
        if !response.metadata.truncation {
            return Ok(response);
        }
        // RFC 7766 §6.2.1 / RFC 1035 §4.2.2: the same question again over TCP, new id.
        let id: u16 = rand::random();
        let request = self.encode(id, question)?;
        let response = tcp_exchange(server, &request, id, question, self.options.timeout).await?;
        if response.metadata.truncation {
            return Err(Failure::Truncated);
        }
        Ok(response)
    }

    fn encode(&self, id: u16, question: &Query) -> Result<Vec<u8>, Failure> {
        let mut message = Message::new(id, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = self.options.recursion_desired;
        message.add_query(question.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        edns.set_dnssec_ok(self.options.dnssec_ok);
        message.set_edns(edns);
        message
            .to_vec()
            .map_err(|e| Failure::Malformed(format!("cannot encode the query: {e}")))
    }
}

/// The in-addr.arpa (RFC 1035 §3.5) or ip6.arpa (RFC 3596 §2.5) name of an address, for PTR
/// lookups; normalised (no trailing dot).
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0x0f, byte >> 4));
            }
            name.push_str("ip6.arpa");
            name
        }
    }
}

/// "example.com", "example.com." or an A-label IDN; anything that is not a valid name in
/// presentation format (empty labels, spaces, non-ASCII, too long) is malformed input.
fn parse_name(input: &str) -> Result<Name, Failure> {
    let bad = |why: &str| Failure::Malformed(format!("bad name {input:?}: {why}"));
    if !input.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad(
            "only printable ASCII is allowed (use the A-label form)",
        ));
    }
    if input == "." {
        return Ok(Name::root());
    }
    let bare = input.strip_suffix('.').unwrap_or(input);
    if bare.is_empty() || bare.split('.').any(str::is_empty) {
        return Err(bad("empty label"));
    }
    Name::from_ascii(format!("{bare}."))
        .map_err(|e| bad(&e.to_string()))
        .and_then(|name| {
            if name.is_fqdn() {
                Ok(name)
            } else {
                Err(bad("not absolute"))
            }
        })
}

/// Whether a received message is the answer to our question (RFC 5452 §9.1): a response with
/// our id and the very question we asked (name case-insensitively, type, class).
fn is_ours(metadata_id: u16, is_response: bool, queries: &[Query], id: u16, q: &Query) -> bool {
    is_response
        && metadata_id == id
        && matches!(queries, [only] if only.query_type() == q.query_type()
            && only.query_class() == q.query_class()
            && only.name().eq_ignore_root(q.name()))
}

/// What a received datagram is to this exchange.
enum Received {
    /// Our answer.
    Answer(Box<Message>),
    /// Our id and question, but the rest cannot be read: the server's answer is broken.
    Broken(String),
    /// Someone else's datagram (or a forgery): keep waiting.
    Stranger,
}

fn classify(bytes: &[u8], id: u16, question: &Query) -> Received {
    match Message::from_vec(bytes) {
        Ok(message) => {
            let response = message.metadata.message_type == MessageType::Response;
            if is_ours(
                message.metadata.id,
                response,
                &message.queries,
                id,
                question,
            ) {
                Received::Answer(Box::new(message))
            } else {
                Received::Stranger
            }
        }
        Err(error) => {
            // Only a datagram that is provably ours (id and question) may fail the try;
            // otherwise a forger could stop us with garbage.
            let mut decoder = BinDecoder::new(bytes);
            let Ok(header) = Header::read(&mut decoder) else {
                return Received::Stranger;
            };
            let mut queries = Vec::new();
            for _ in 0..header.counts.queries {
                match Query::read(&mut decoder) {
                    Ok(query) => queries.push(query),
                    Err(_) => return Received::Stranger,
                }
            }
            let response = header.metadata.message_type == MessageType::Response;
            if is_ours(header.metadata.id, response, &queries, id, question) {
                Received::Broken(error.to_string())
            } else {
                Received::Stranger
            }
        }
    }
}

/// One query over UDP (RFC 5452): a fresh socket on an ephemeral port per query, connected to
/// the server so that the kernel drops datagrams from elsewhere and reports ICMP errors. The
/// source is checked again anyway, and strangers are ignored until the deadline.
async fn udp_exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    question: &Query,
    timeout: Duration,
) -> Result<Message, Failure> {
    let deadline = Instant::now() + timeout;
    let network = |what: &str, e: std::io::Error| Failure::Network(format!("{what} {server}: {e}"));
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| network("UDP bind for", e))?;
    socket
        .connect(server)
        .await
        .map_err(|e| network("UDP connect to", e))?;
    match timeout_at(deadline, socket.send(request)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(network("UDP send to", e)),
        Err(_) => return Err(Failure::Timeout),
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, from) = match timeout_at(deadline, socket.recv_from(&mut buf)).await {
            Ok(Ok(received)) => received,
            Ok(Err(e)) => return Err(network("UDP receive from", e)),
            Err(_) => return Err(Failure::Timeout),
        };
        if from != server {
            continue;
        }
        let Some(bytes) = buf.get(..len) else {
            continue;
        };
        match classify(bytes, id, question) {
            Received::Answer(message) => return Ok(*message),
            Received::Broken(why) => return Err(Failure::Malformed(why)),
            Received::Stranger => continue,
        }
    }
}

/// The same question over TCP (RFC 7766 §8: two-byte length prefix), within one timeout. Any
/// transport failure here is [`Failure::Truncated`]: the server said the answer is longer
/// than UDP can carry, and we could not fetch it.
async fn tcp_exchange(
    server: SocketAddr,
    request: &[u8],
    id: u16,
    question: &Query,
    timeout: Duration,
) -> Result<Message, Failure> {
    let len = u16::try_from(request.len())
        .map_err(|_| Failure::Malformed("query too long for TCP".into()))?;
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let _ = stream.set_nodelay(true);
        let mut frame = Vec::with_capacity(request.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(request);
        stream.write_all(&frame).await?;
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await?;
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        stream.read_exact(&mut body).await?;
        Ok::<_, std::io::Error>(body)
    };
    let body = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(body)) => body,
        Ok(Err(_)) | Err(_) => return Err(Failure::Truncated),
    };
    // A connection cannot be spoofed blindly: an answer that is not ours is a broken server.
    match classify(&body, id, question) {
        Received::Answer(message) => Ok(*message),
        Received::Broken(why) => Err(Failure::Malformed(why)),
        Received::Stranger => Err(Failure::Malformed(
            "TCP answer does not match the question".into(),
        )),
    }
}

/// Response code to outcome: NOERROR and NXDOMAIN are answers, the rest failures.
fn interpret(response: Message) -> Result<StubAnswer, Failure> {
    let nxdomain = match response.metadata.response_code {
        ResponseCode::NoError => false,
        ResponseCode::NXDomain => true,
        ResponseCode::ServFail => return Err(Failure::ServFail),
        ResponseCode::Refused => return Err(Failure::Refused),
        other => return Err(Failure::Malformed(format!("response code {other}"))),
    };
    let negative_ttl = response
        .authorities
        .iter()
        .filter_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        })
        .min();
    Ok(StubAnswer {
        nxdomain,
        authoritative: response.metadata.authoritative,
        authenticated: response.metadata.authentic_data,
        answers: convert_all(&response.answers),
        authority: convert_all(&response.authorities),
        additional: convert_all(&response.additionals),
        negative_ttl,
    })
}

/// Records of the Internet class; the OPT pseudo-record is not among them (hickory keeps it
/// apart as `Message::edns`).
fn convert_all(records: &[Record]) -> Vec<StubRecord> {
    records
        .iter()
        .filter(|r| r.dns_class == DNSClass::IN)
        .map(convert)
        .collect()
}

fn convert(record: &Record) -> StubRecord {
    let name = crate::hickory::core_name;
    let data = match &record.data {
        RData::A(a) => Rdata::A(a.0),
        RData::AAAA(aaaa) => Rdata::Aaaa(aaaa.0),
        RData::MX(mx) => Rdata::Mx {
            preference: mx.preference,
            exchange: name(&mx.exchange),
        },
        RData::CNAME(cname) => Rdata::Cname(name(&cname.0)),
        RData::NS(ns) => Rdata::Ns(name(&ns.0)),
        RData::PTR(ptr) => Rdata::Ptr(name(&ptr.0)),
        RData::TXT(txt) => {
            let joined: Vec<u8> = txt
                .txt_data
                .iter()
                .flat_map(|s| s.iter().copied())
                .collect();
            Rdata::Txt(String::from_utf8_lossy(&joined).into_owned())
        }
        RData::TLSA(tlsa) => Rdata::Tlsa {
            usage: u8::from(tlsa.cert_usage),
            selector: u8::from(tlsa.selector),
            matching: u8::from(tlsa.matching),
            data: hex(&tlsa.cert_data),
        },
        RData::SOA(soa) => Rdata::Soa {
            mname: name(&soa.mname),
            rname: name(&soa.rname),
            serial: soa.serial,
            minimum: soa.minimum,
        },
        _ => Rdata::Other {
            rtype: u16::from(record.record_type()),
        },
    };
    StubRecord {
        name: name(&record.name),
        ttl: record.ttl,
        data,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("192.0.2.10".parse().unwrap()),
            "10.2.0.192.in-addr.arpa"
        );
        assert_eq!(
            reverse_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }

    #[test]
    fn names_with_or_without_the_root_dot() {
        assert_eq!(
            parse_name("Example.COM").unwrap(),
            parse_name("example.com.").unwrap()
        );
        assert!(parse_name("xn--bcher-kva.example").is_ok());
        assert!(parse_name("_25._tcp.mx.example").is_ok());
        assert_eq!(parse_name(".").unwrap(), Name::root());
        for bad in ["", "a..b", ".a", "a b", "bücher.example", &"a".repeat(64)] {
            assert!(
                matches!(parse_name(bad), Err(Failure::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn kinds_display_as_mnemonics() {
        assert_eq!(RecordKind::Aaaa.to_string(), "AAAA");
        assert_eq!(RecordKind::Tlsa.to_string(), "TLSA");
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0xff]), "00abff");
    }
}
