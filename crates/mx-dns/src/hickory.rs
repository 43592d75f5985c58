//! [`DnsClient`] on hickory-resolver: UDP with TCP fallback, timeouts, and its errors told apart.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError as HickoryDnsError, NetError};
use hickory_resolver::{Resolver, TokioResolver};
use mx_core::{Answer, Failure, Outcome, QType, Question, Record, RecordData};

use crate::client::{BoxFuture, DnsClient};
use crate::error::DnsError;

/// Where questions go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nameservers {
    /// The system's resolvers (`/etc/resolv.conf`).
    System,
    /// These servers, tried in order (UDP, TCP when an answer is truncated).
    Explicit(Vec<SocketAddr>),
}

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Time allowed for one try of one question.
    pub timeout: Duration,
    /// Tries per question (per server set) before giving up with a timeout.
    pub attempts: usize,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(5),
            attempts: 2,
        }
    }
}

/// One hickory resolver per nameserver, asked in the order given.
///
/// hickory's own pool hands back a SERVFAIL or REFUSED from the first server it asks; a mail
/// router must instead try the next server, as the C library resolver does, or one broken
/// resolver would defer mail that another could route.
pub struct HickoryClient {
    resolvers: Vec<TokioResolver>,
}

impl HickoryClient {
    pub fn new(nameservers: &Nameservers, options: &ClientOptions) -> Result<Self, DnsError> {
        let (servers, mut opts) = match nameservers {
            Nameservers::System => {
                let (config, opts) = hickory_resolver::system_conf::read_system_conf()
                    .map_err(|e| DnsError::SystemConfig(e.to_string()))?;
                (config.name_servers().to_vec(), opts)
            }
            Nameservers::Explicit(servers) => {
                let servers = servers
                    .iter()
                    .map(|addr| {
                        let mut udp = ConnectionConfig::udp();
                        udp.port = addr.port();
                        let mut tcp = ConnectionConfig::tcp();
                        tcp.port = addr.port();
                        NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                    })
                    .collect();
                (servers, ResolverOpts::default())
            }
        };
        if servers.is_empty() {
            return Err(DnsError::NoNameserver);
        }
        opts.timeout = options.timeout;
        opts.attempts = options.attempts;
        // Routes are cached whole by RouteCache with their own TTL rules; a second cache
        // underneath would serve records past what the route promised.
        opts.cache_size = 0;
        opts.use_hosts_file = ResolveHosts::Never;
        opts.preserve_intermediates = true;
        opts.try_tcp_on_error = true;
        opts.edns0 = true;
        opts.ndots = 0;
        opts.num_concurrent_reqs = 1;
        let resolvers = servers
            .into_iter()
            .map(|server| {
                Resolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    TokioRuntimeProvider::default(),
                )
                .with_options(opts.clone())
                .build()
                .map_err(|e| DnsError::Build(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(HickoryClient { resolvers })
    }

    /// The first answer any server gives; if none answers, the most telling failure.
    async fn ask(&self, question: &Question) -> Outcome {
        let name = Name::from_ascii(format!("{}.", question.name))
            .map_err(|e| Failure::Malformed(format!("bad name {}: {e}", question.name)))?;
        let rtype = match question.qtype {
            QType::Mx => RecordType::MX,
            QType::A => RecordType::A,
            QType::Aaaa => RecordType::AAAA,
        };
        let mut worst: Option<Failure> = None;
        for resolver in &self.resolvers {
            match ask_one(resolver, name.clone(), rtype).await {
                Ok(answer) => return Ok(answer),
                Err(failure) => failure.keep_most_telling(&mut worst),
            }
        }
        Err(worst.unwrap_or(Failure::Network("no nameserver".into())))
    }
}

async fn ask_one(resolver: &TokioResolver, name: Name, rtype: RecordType) -> Outcome {
    let mut answer = match resolver.lookup(name.clone(), rtype).await {
        Ok(lookup) => Answer {
            nxdomain: false,
            records: lookup.answers().iter().map(convert_record).collect(),
            negative_ttl: None,
        },
        Err(err) => classify(err)?,
    };
    if answer.records.is_empty() {
        answer.records = cname_of(resolver, name).await;
    }
    Ok(answer)
}

/// hickory reports a negative answer without the CNAME chain that led to it, yet routing
/// must know whether the name was an alias (the implicit MX is the chain's end, and loops
/// must be caught). Asking for the CNAME itself recovers the first hop; the core follows the
/// rest. A failure here leaves the negative answer as it was.
async fn cname_of(resolver: &TokioResolver, name: Name) -> Vec<Record> {
    match resolver.lookup(name, RecordType::CNAME).await {
        Ok(lookup) => lookup
            .answers()
            .iter()
            .filter(|r| matches!(r.data, RData::CNAME(_)))
            .map(convert_record)
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl DnsClient for HickoryClient {
    fn query<'a>(&'a self, question: &'a Question) -> BoxFuture<'a, Outcome> {
        Box::pin(self.ask(question))
    }
}

/// Tell NXDOMAIN and NODATA (answers) apart from the failures, which are all temporary.
fn classify(err: NetError) -> Outcome {
    match err {
        NetError::Dns(HickoryDnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => Ok(Answer {
                nxdomain: true,
                records: Vec::new(),
                negative_ttl: no.negative_ttl,
            }),
            ResponseCode::NoError => Ok(Answer {
                nxdomain: false,
                records: Vec::new(),
                negative_ttl: no.negative_ttl,
            }),
            ResponseCode::ServFail => Err(Failure::ServFail),
            ResponseCode::Refused => Err(Failure::Refused),
            other => Err(Failure::Malformed(format!("response code {other}"))),
        },
        NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::ServFail)) => {
            Err(Failure::ServFail)
        }
        NetError::Dns(HickoryDnsError::ResponseCode(ResponseCode::Refused)) => {
            Err(Failure::Refused)
        }
        NetError::Dns(HickoryDnsError::ResponseCode(code)) => {
            Err(Failure::Malformed(format!("response code {code}")))
        }
        NetError::Timeout => Err(Failure::Timeout),
        NetError::Truncated => Err(Failure::Truncated),
        NetError::Proto(e) => Err(Failure::Malformed(e.to_string())),
        other => Err(Failure::Network(other.to_string())),
    }
}

/// A hickory record as mx-core's [`Record`]: MX, A, AAAA and CNAME data, anything else
/// `Other`, every name through [`core_name`]. Shared with mx-bulk, so `route` and `bulk`
/// hand mx-core the same data.
pub fn convert_record(record: &hickory_proto::rr::Record) -> Record {
    let data = match &record.data {
        RData::MX(mx) => RecordData::Mx {
            preference: mx.preference,
            exchange: core_name(&mx.exchange),
        },
        RData::A(a) => RecordData::A(a.0),
        RData::AAAA(aaaa) => RecordData::Aaaa(aaaa.0),
        RData::CNAME(cname) => RecordData::Cname(core_name(&cname.0)),
        _ => RecordData::Other,
    };
    Record {
        name: core_name(&record.name),
        ttl: record.ttl,
        data,
    }
}

/// mx-core's `normalize_dns_name` of a wire name (lower case, no trailing dot), with one
/// allocation instead of two: it runs for every name of every answer.
///
/// Labels made only of the characters hickory's `to_ascii` writes as they are (letters,
/// digits, `_`, `-` after the first byte, `*` as the first) are copied straight from the
/// name's bytes; any other label sends the whole name through `to_ascii`, which escapes it.
/// Both give the same text: `to_ascii` goes through `fmt` a character at a time, and was a
/// tenth of a bulk run's own work.
pub fn core_name(name: &Name) -> String {
    if let Some(text) = plain_core_name(name) {
        return text;
    }
    let mut text = name.to_ascii();
    if text.ends_with('.') {
        text.pop();
    }
    text.make_ascii_lowercase();
    text
}

/// [`core_name`] of a name none of whose bytes `to_ascii` would escape; None otherwise.
fn plain_core_name(name: &Name) -> Option<String> {
    if name.is_root() {
        return None;
    }
    let mut text = Vec::with_capacity(name.len());
    for label in name.iter() {
        if !is_plain_label(label) {
            return None;
        }
        if !text.is_empty() {
            text.push(b'.');
        }
        text.extend_from_slice(label);
    }
    text.make_ascii_lowercase();
    // Only ASCII bytes were let through.
    String::from_utf8(text).ok()
}

/// A label that hickory's `Name::from_ascii` takes and `Name::to_ascii` writes as it is, with
/// no escape: letters, digits and `_`, `-` after the first byte, `*` as the first.
pub fn is_plain_label(label: &[u8]) -> bool {
    let plain = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    match label.split_first() {
        Some((&first, rest)) => {
            (plain(first) || first == b'*') && rest.iter().all(|&b| plain(b) || b == b'-')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `core_name` was before its fast path: hickory's escaped text, normalised.
    fn escaped_core_name(name: &Name) -> String {
        let mut text = name.to_ascii();
        if text.ends_with('.') {
            text.pop();
        }
        text.make_ascii_lowercase();
        text
    }

    #[test]
    fn plain_and_escaped_names() {
        for (labels, expected) in [
            (vec![&b"MX1"[..], b"Example", b"COM"], "mx1.example.com"),
            (vec![&b"*"[..], b"example"], "*.example"),
            (vec![&b"_dmarc"[..], b"example"], "_dmarc.example"),
            (vec![&b"a-b"[..], b"example"], "a-b.example"),
            (vec![&b"-ab"[..], b"example"], "\\-ab.example"),
            (vec![&b"a.b"[..], b"example"], "a\\.b.example"),
            (vec![&b"a b"[..], b"example"], "a\\040b.example"),
        ] {
            let name = Name::from_labels(labels).unwrap();
            assert_eq!(core_name(&name), expected);
            assert_eq!(core_name(&name), escaped_core_name(&name));
        }
        assert_eq!(core_name(&Name::root()), escaped_core_name(&Name::root()));
    }

    proptest! {
        #[test]
        fn the_fast_path_writes_what_hickory_writes(
            labels in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![
                        8 => proptest::sample::select(
                            b"abcXYZ019-_*".to_vec()
                        ),
                        1 => any::<u8>(),
                    ],
                    1..12,
                ),
                1..5,
            ),
            fqdn in any::<bool>(),
        ) {
            let mut name = Name::from_labels(labels.iter().map(|l| l.as_slice())).unwrap();
            name.set_fqdn(fqdn);
            prop_assert_eq!(core_name(&name), escaped_core_name(&name));
        }
    }
}
