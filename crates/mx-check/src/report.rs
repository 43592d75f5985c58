//! What a check of one domain gathered: the route, the raw facts the lint reads, the probe
//! results, and the findings. JSON, the text report and the HTML page all come from it.

use std::net::IpAddr;

use mx_core::{Level, Route};
use serde::Serialize;

use crate::finding::Finding;
use crate::mta_sts::StsPolicy;
use crate::probe::SmtpProbe;

/// How the facts were gathered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Asked the DNS and the exchangers themselves.
    Live,
    /// Computed from zone text before it is published.
    Zone,
}

#[derive(Clone, Debug, Serialize)]
pub struct DomainReport {
    pub domain: String,
    pub mode: Mode,
    /// False when the check itself could not finish (our resolver timed out, say); the
    /// findings are then incomplete and the exit code is 75.
    pub complete: bool,
    pub findings: Vec<Finding>,
    /// The route exactly as `mxroute route --json` computes it.
    pub route: Option<Route>,
    /// Smallest TTL of the MX RRset, when there is one.
    pub mx_ttl: Option<u32>,
    pub exchangers: Vec<ExchangerReport>,
    /// The domain's authoritative servers, each asked directly (live mode).
    pub nameservers: Vec<NameserverReport>,
    /// Why the authoritative servers could not be compared, when they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nameservers_skipped: Option<String>,
    /// Names the offline check could not look at because they lie outside the zone text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outside_zone: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mta_sts: Option<MtaStsReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_rpt: Option<TxtReport>,
}

impl DomainReport {
    pub fn worst_level(&self) -> Option<Level> {
        self.findings.iter().map(|f| f.level).max()
    }

    pub fn has_error(&self) -> bool {
        self.worst_level() == Some(Level::Error)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct ExchangerReport {
    pub preference: u16,
    pub host: String,
    pub addresses: Vec<AddressReport>,
    /// TLSA records at `_25._tcp.<host>` (live mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tlsa: Option<TlsaReport>,
}

#[derive(Clone, Debug, Serialize)]
pub struct AddressReport {
    pub ip: IpAddr,
    /// PTR names of the address (live mode).
    pub ptr: Vec<String>,
    /// Whether some PTR name resolves back to this address; `None` when not looked up.
    pub fcrdns: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpProbe>,
}

#[derive(Clone, Debug, Serialize)]
pub struct TlsaReport {
    pub records: usize,
    /// The resolver set AD: the answer was DNSSEC-validated.
    pub dnssec_secure: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct NameserverReport {
    pub host: String,
    pub address: Option<IpAddr>,
    /// The MX RRset this server answered, as sorted "preference host" strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mx: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// MTA-STS as far as it got: the TXT record, then the policy fetch, then its parse.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MtaStsReport {
    /// The `v=STSv1` TXT record(s) at `_mta-sts.<domain>`.
    pub records: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<StsPolicy>,
}

/// A policy TXT record set (TLS-RPT) and what is wrong with it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TxtReport {
    pub records: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
