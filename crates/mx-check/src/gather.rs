//! The I/O half of a check: asks DNS, the exchangers and the MTA-STS web server, and fills a
//! [`DomainReport`] for the pure lint to judge.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use mx_core::{Failure, IpStrategy, Policy, Status};
use mx_dns::{
    ClientOptions, HickoryClient, Nameservers, Rdata, RecordKind, Router, StubAnswer, StubOptions,
    StubResolver, reverse_name,
};

use crate::error::CheckError;
use crate::lint::lint;
use crate::mta_sts::{
    FetchOptions, fetch_policy, parse_policy, parse_sts_record, parse_tlsrpt_record,
};
use crate::probe::{ProbeOptions, probe_smtp};
use crate::report::{
    AddressReport, DomainReport, ExchangerReport, Mode, MtaStsReport, NameserverReport, TlsaReport,
    TxtReport,
};

/// At most this many exchanger addresses are probed per domain, so that a domain listing
/// hundreds cannot turn one check into a scan.
const MAX_PROBED_ADDRESSES: usize = 16;
/// At most this many authoritative server addresses are compared.
const MAX_NAMESERVER_ADDRESSES: usize = 8;

#[derive(Clone)]
pub struct CheckOptions {
    /// Resolvers to ask; empty means the system's.
    pub nameservers: Vec<SocketAddr>,
    pub dns_timeout: Duration,
    /// Port on which each authoritative server is asked directly (53, or the lab's port).
    pub authoritative_port: u16,
    /// SMTP probes; `None` skips them (and with them PTR and banner checks stay DNS-only).
    pub smtp: Option<ProbeOptions>,
    /// MTA-STS policy fetch (HTTPS port, timeout, trust anchors).
    pub fetch: FetchOptions,
    /// Offline: the apexes of the zone text being linted. Names outside them are not
    /// checkable, and only the DNS shape is judged.
    pub zone_apexes: Option<Vec<String>>,
}

pub struct Checker {
    options: CheckOptions,
    stub: StubResolver,
    router: Router,
}

impl Checker {
    pub fn new(options: CheckOptions) -> Result<Checker, CheckError> {
        let stub_options = StubOptions {
            timeout: options.dns_timeout,
            ..StubOptions::default()
        };
        let (stub, nameservers) = if options.nameservers.is_empty() {
            (StubResolver::system(stub_options)?, Nameservers::System)
        } else {
            (
                StubResolver::new(options.nameservers.clone(), stub_options)?,
                Nameservers::Explicit(options.nameservers.clone()),
            )
        };
        let client = HickoryClient::new(
            &nameservers,
            &ClientOptions {
                timeout: options.dns_timeout,
                ..ClientOptions::default()
            },
        )?;
        // Every address of every exchanger, both families, nothing cut: the check judges the
        // whole published picture, not one sender's view of it.
        let policy = Policy {
            ip_strategy: IpStrategy::Any,
            mx_address_limit: usize::MAX,
            ..Policy::default()
        };
        let router = Router::new(Arc::new(client), policy).with_seed(0);
        Ok(Checker {
            options,
            stub,
            router,
        })
    }

    fn mode(&self) -> Mode {
        if self.options.zone_apexes.is_some() {
            Mode::Zone
        } else {
            Mode::Live
        }
    }

    /// Checks one domain (already validated by the caller with `normalize_domain`).
    pub async fn check(&self, domain: &str) -> DomainReport {
        let mut report = DomainReport {
            domain: domain.to_string(),
            mode: self.mode(),
            complete: true,
            findings: Vec::new(),
            route: None,
            mx_ttl: None,
            exchangers: Vec::new(),
            nameservers: Vec::new(),
            nameservers_skipped: None,
            outside_zone: Vec::new(),
            mta_sts: None,
            tls_rpt: None,
        };
        // The MX RRset is asked for again, raw: hickory-resolver clamps the TTLs it returns
        // (to a day at most), and the check must judge the TTL the zone publishes.
        let (route, mx) = futures_util::join!(
            self.router.route(domain),
            self.stub.lookup(domain, RecordKind::Mx)
        );
        match &mx {
            Ok(answer) => {
                report.mx_ttl = answer
                    .answers
                    .iter()
                    .filter(|r| matches!(r.data, Rdata::Mx { .. }))
                    .map(|r| r.ttl)
                    .min();
            }
            // Silence or a broken path on our side: the verdict is out, not the domain's.
            Err(Failure::Timeout | Failure::Network(_)) => report.complete = false,
            Err(_) => {}
        }
        let route = match route {
            Ok(route) => route,
            Err(e) => {
                report.complete = false;
                report.nameservers_skipped = Some(format!("route failed: {e}"));
                return report;
            }
        };
        report.exchangers = route
            .exchangers
            .iter()
            .filter(|e| e.host != ".")
            .map(|e| ExchangerReport {
                preference: e.preference,
                host: e.host.clone(),
                addresses: e
                    .addresses
                    .iter()
                    .map(|ip| AddressReport {
                        ip: *ip,
                        ptr: Vec::new(),
                        fcrdns: None,
                        smtp: None,
                    })
                    .collect(),
                tlsa: None,
            })
            .collect();
        // The route shuffles equal preferences; a report reads best in a fixed order.
        report
            .exchangers
            .sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
        let takes_mail = route.status == Status::Ok
            || (route.status != Status::NullMx && !report.exchangers.is_empty());
        report.route = Some(route);

        match &self.options.zone_apexes {
            Some(apexes) => {
                report.outside_zone = report
                    .exchangers
                    .iter()
                    .map(|e| e.host.clone())
                    .filter(|h| mx_core::name_as_ip(h).is_none())
                    .filter(|h| !apexes.iter().any(|apex| in_zone(h, apex)))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
            }
            None => {
                let exchangers = std::mem::take(&mut report.exchangers);
                let (exchangers, (nameservers, skipped)) =
                    futures_util::join!(self.exchangers(exchangers), self.nameservers(domain));
                report.exchangers = exchangers;
                report.nameservers = nameservers;
                report.nameservers_skipped = skipped;
                if takes_mail {
                    let (sts, rpt) =
                        futures_util::join!(self.mta_sts(domain), self.tls_rpt(domain));
                    report.mta_sts = Some(sts);
                    report.tls_rpt = Some(rpt);
                }
            }
        }
        report.findings = lint(&report);
        report
    }

    /// TLSA, PTR, forward confirmation and the SMTP probe of every exchanger address.
    async fn exchangers(&self, mut exchangers: Vec<ExchangerReport>) -> Vec<ExchangerReport> {
        let mut budget = MAX_PROBED_ADDRESSES;
        let mut work = Vec::new();
        for (i, e) in exchangers.iter().enumerate() {
            for (j, a) in e.addresses.iter().enumerate() {
                let probe = budget > 0;
                budget = budget.saturating_sub(1);
                work.push(self.address(i, j, e.host.clone(), a.ip, probe));
            }
        }
        let tlsa = join_all(exchangers.iter().map(|e| self.tlsa(e.host.clone())));
        let (addresses, tlsa) = futures_util::join!(join_all(work), tlsa);
        for (i, j, report) in addresses {
            exchangers[i].addresses[j] = report;
        }
        for (e, tlsa) in exchangers.iter_mut().zip(tlsa) {
            e.tlsa = Some(tlsa);
        }
        exchangers
    }

    async fn address(
        &self,
        i: usize,
        j: usize,
        host: String,
        ip: IpAddr,
        probe: bool,
    ) -> (usize, usize, AddressReport) {
        let smtp = async {
            match (&self.options.smtp, probe) {
                (Some(options), true) => Some(probe_smtp(ip, &host, options).await),
                _ => None,
            }
        };
        let ((ptr, fcrdns), smtp) = futures_util::join!(self.reverse(ip), smtp);
        (
            i,
            j,
            AddressReport {
                ip,
                ptr,
                fcrdns,
                smtp,
            },
        )
    }

    /// PTR names of `ip` and whether one of them resolves back to it; `None` when the PTR
    /// lookup itself failed, so a broken resolver is not reported as a missing record.
    async fn reverse(&self, ip: IpAddr) -> (Vec<String>, Option<bool>) {
        let answer = match self.stub.lookup(&reverse_name(ip), RecordKind::Ptr).await {
            Ok(answer) => answer,
            Err(_) => return (Vec::new(), None),
        };
        let names: Vec<String> = answer
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                Rdata::Ptr(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        if names.is_empty() {
            return (names, Some(false));
        }
        let kind = if ip.is_ipv4() {
            RecordKind::A
        } else {
            RecordKind::Aaaa
        };
        let forward = join_all(names.iter().map(|n| self.stub.lookup(n, kind))).await;
        let confirmed = forward
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .any(|a| addresses(a).contains(&ip));
        (names, Some(confirmed))
    }

    /// A and AAAA of `host`, whatever answered; failures count as no address.
    async fn addresses_of(&self, host: &str) -> Vec<IpAddr> {
        let (v4, v6) = futures_util::join!(
            self.stub.lookup(host, RecordKind::A),
            self.stub.lookup(host, RecordKind::Aaaa)
        );
        [v4, v6]
            .iter()
            .filter_map(|a| a.as_ref().ok())
            .flat_map(addresses)
            .collect()
    }

    async fn tlsa(&self, host: String) -> TlsaReport {
        match self
            .stub
            .lookup(&format!("_25._tcp.{host}"), RecordKind::Tlsa)
            .await
        {
            Ok(answer) => TlsaReport {
                records: answer
                    .answers
                    .iter()
                    .filter(|r| matches!(r.data, Rdata::Tlsa { .. }))
                    .count(),
                dnssec_secure: answer.authenticated,
                error: None,
            },
            Err(failure) => TlsaReport {
                records: 0,
                dnssec_secure: false,
                error: Some(format!("TLSA lookup failed: {failure}")),
            },
        }
    }

    /// The domain's authoritative servers, each asked for the MX RRset directly.
    async fn nameservers(&self, domain: &str) -> (Vec<NameserverReport>, Option<String>) {
        let Some((apex, hosts)) = self.delegation(domain).await else {
            return (Vec::new(), None);
        };
        let mut targets: Vec<(String, Option<IpAddr>)> = Vec::new();
        for host in &hosts {
            let ips = self.addresses_of(host).await;
            if ips.is_empty() {
                targets.push((host.clone(), None));
            }
            targets.extend(ips.into_iter().map(|ip| (host.clone(), Some(ip))));
        }
        targets.truncate(MAX_NAMESERVER_ADDRESSES);
        if targets.iter().all(|(_, ip)| ip.is_none()) {
            return (
                Vec::new(),
                Some(format!(
                    "no address for the authoritative servers of {apex} ({})",
                    hosts.join(", ")
                )),
            );
        }
        let port = self.options.authoritative_port;
        let asked = targets.into_iter().map(|(host, ip)| async move {
            let Some(ip) = ip else {
                return NameserverReport {
                    host: host.clone(),
                    address: None,
                    mx: None,
                    error: Some(format!("{host} has no address")),
                };
            };
            match self
                .stub
                .lookup_at(SocketAddr::new(ip, port), domain, RecordKind::Mx)
                .await
            {
                Ok(answer) => NameserverReport {
                    host,
                    address: Some(ip),
                    mx: Some(rrset_summary(&answer)),
                    error: None,
                },
                Err(failure) => NameserverReport {
                    host,
                    address: Some(ip),
                    mx: None,
                    error: Some(failure.to_string()),
                },
            }
        });
        (join_all(asked).await, None)
    }

    /// The closest enclosing NS RRset below the top-level domains: (apex, NS hosts). Root and
    /// TLD servers are not the domain owner's to fix, so they are not compared.
    async fn delegation(&self, domain: &str) -> Option<(String, Vec<String>)> {
        let mut name = domain;
        while name.contains('.') {
            match self.stub.lookup(name, RecordKind::Ns).await {
                Ok(answer) if answer.nxdomain => return None,
                Ok(answer) => {
                    let mut hosts: Vec<String> = answer
                        .answers
                        .iter()
                        .filter(|r| r.name == name)
                        .filter_map(|r| match &r.data {
                            Rdata::Ns(host) => Some(host.clone()),
                            _ => None,
                        })
                        .collect();
                    if !hosts.is_empty() {
                        hosts.sort();
                        hosts.dedup();
                        return Some((name.to_string(), hosts));
                    }
                }
                Err(_) => return None,
            }
            name = name.split_once('.').map_or("", |(_, parent)| parent);
        }
        None
    }

    async fn mta_sts(&self, domain: &str) -> MtaStsReport {
        let mut report = MtaStsReport::default();
        let txt = match self
            .stub
            .lookup(&format!("_mta-sts.{domain}"), RecordKind::Txt)
            .await
        {
            Ok(answer) => txt_records(&answer),
            Err(failure) => {
                report.record_error = Some(format!("TXT lookup failed: {failure}"));
                return report;
            }
        };
        // RFC 8461 §3.1: records not starting with v=STSv1 are ignored; more than one that
        // does is an error.
        report.records = txt
            .into_iter()
            .filter(|t| t.starts_with("v=STSv1"))
            .collect();
        match report.records.as_slice() {
            [] => return report,
            [record] => {
                if let Err(e) = parse_sts_record(record) {
                    report.record_error = Some(e);
                    return report;
                }
            }
            _ => {
                report.record_error = Some(format!(
                    "{} v=STSv1 records; RFC 8461 requires exactly one",
                    report.records.len()
                ));
                return report;
            }
        }
        let host = format!("mta-sts.{domain}");
        let ips = self.addresses_of(&host).await;
        if ips.is_empty() {
            report.fetch_error = Some(format!("{host} has no address"));
            return report;
        }
        match fetch_policy(domain, &ips, &self.options.fetch).await {
            Err(e) => report.fetch_error = Some(e),
            Ok(text) => {
                match parse_policy(&text) {
                    Ok(policy) => report.policy = Some(policy),
                    Err(e) => report.policy_error = Some(e),
                }
                report.policy_text = Some(text);
            }
        }
        report
    }

    async fn tls_rpt(&self, domain: &str) -> TxtReport {
        let mut report = TxtReport::default();
        match self
            .stub
            .lookup(&format!("_smtp._tls.{domain}"), RecordKind::Txt)
            .await
        {
            Ok(answer) => {
                report.records = txt_records(&answer)
                    .into_iter()
                    .filter(|t| t.starts_with("v=TLSRPTv1"))
                    .collect();
                report.error = match report.records.as_slice() {
                    [] => None,
                    [record] => parse_tlsrpt_record(record).err(),
                    more => Some(format!(
                        "{} v=TLSRPTv1 records; RFC 8460 requires exactly one",
                        more.len()
                    )),
                };
            }
            Err(failure) => report.error = Some(format!("TXT lookup failed: {failure}")),
        }
        report
    }
}

fn in_zone(name: &str, apex: &str) -> bool {
    let apex = apex.trim_end_matches('.').to_ascii_lowercase();
    apex.is_empty() || name == apex || name.ends_with(&format!(".{apex}"))
}

fn addresses(answer: &StubAnswer) -> Vec<IpAddr> {
    answer
        .answers
        .iter()
        .filter_map(|r| match r.data {
            Rdata::A(ip) => Some(IpAddr::V4(ip)),
            Rdata::Aaaa(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        })
        .collect()
}

fn txt_records(answer: &StubAnswer) -> Vec<String> {
    answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            Rdata::Txt(text) => Some(text.clone()),
            _ => None,
        })
        .collect()
}

/// What one server said about the MX RRset, in a form two servers can be compared by.
fn rrset_summary(answer: &StubAnswer) -> Vec<String> {
    if answer.nxdomain {
        return vec!["NXDOMAIN".into()];
    }
    let mut items: Vec<String> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            Rdata::Mx {
                preference,
                exchange,
            } => Some(format!(
                "{preference} {}",
                if exchange.is_empty() { "." } else { exchange }
            )),
            Rdata::Cname(target) => Some(format!("CNAME {target}")),
            _ => None,
        })
        .collect();
    items.sort();
    items
}

/// The names of zone text worth checking as mail domains: every owner of MX records, every
/// zone apex, and every alias that leads to one of those or loops (an alias used as a mail
/// domain, or a broken chain). Other aliases (`www`) are not mail domains.
pub fn mail_domains_in_zone(
    mx_owners: &[String],
    apexes: &[String],
    cnames: &[(String, String)],
) -> Vec<String> {
    use std::collections::{BTreeMap, HashSet};
    let mut names: BTreeSet<String> = mx_owners.iter().cloned().collect();
    names.extend(
        apexes
            .iter()
            .map(|a| a.trim_end_matches('.').to_ascii_lowercase())
            .filter(|a| !a.is_empty()),
    );
    let targets: BTreeMap<&str, &str> = cnames
        .iter()
        .map(|(owner, target)| (owner.as_str(), target.as_str()))
        .collect();
    for owner in targets.keys() {
        let mut seen = HashSet::new();
        let mut at = *owner;
        while let Some(next) = targets.get(at) {
            if !seen.insert(at) {
                break;
            }
            at = next;
        }
        let loops = targets.contains_key(at);
        if loops || mx_owners.iter().any(|m| m == at) {
            names.insert((*owner).to_string());
        }
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_mail_domains_take_aliases_of_mail_domains_and_loops_only() {
        let s = |v: &str| v.to_string();
        let names = mail_domains_in_zone(
            &[s("example.test"), s("other.test")],
            &[s("example.test."), s(".")],
            &[
                (s("alias.test"), s("example.test")),
                (s("www.example.test"), s("web.example.test")),
                (s("a.test"), s("b.test")),
                (s("b.test"), s("a.test")),
                (s("two.test"), s("alias.test")),
            ],
        );
        assert_eq!(
            names,
            [
                "a.test",
                "alias.test",
                "b.test",
                "example.test",
                "other.test",
                "two.test"
            ]
        );
    }
}
