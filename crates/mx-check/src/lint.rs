//! The lint itself: pure rules from gathered facts to findings. No I/O here, so every rule
//! can be read in one place and tested on plain data.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use mx_core::{Code, Status};

use crate::finding::{Finding, FindingCode as F};
use crate::mta_sts::{StsMode, mx_matches};
use crate::report::{DomainReport, Mode};

/// MX TTLs below this make every sender re-ask often and leave no slack when DNS is down.
pub const MX_TTL_LOW: u32 = 300;
/// MX TTLs above a week keep senders on old exchangers long after a change.
pub const MX_TTL_HIGH: u32 = 604_800;
/// Postfix (smtp_mx_address_limit) and Exim (hosts_max_try) stop after five.
pub const SENDER_ADDRESS_LIMIT: usize = 5;
/// A certificate this close to its end is worth a warning.
pub const CERT_EXPIRY_WARNING_DAYS: i64 = 14;
/// RFC 8461 suggests weeks; under a day the policy barely outlives one fetch.
pub const STS_MAX_AGE_SHORT: u64 = 86_400;

pub fn lint(report: &DomainReport) -> Vec<Finding> {
    let mut out = Vec::new();
    dns_shape(report, &mut out);
    smtp(report, &mut out);
    policies(report, &mut out);
    out
}

fn dns_shape(report: &DomainReport, out: &mut Vec<Finding>) {
    let domain = report.domain.as_str();
    let Some(route) = &report.route else {
        return;
    };
    if route.status == Status::Nxdomain {
        out.push(Finding::new(
            F::DomainNxdomain,
            domain,
            format!("{domain} does not exist (NXDOMAIN)"),
        ));
    }
    let implicit_without_address =
        route.implicit && route.exchangers.iter().all(|e| e.addresses.is_empty());
    for diag in &route.diagnostics {
        let subject = diag.subject.as_deref().unwrap_or(domain);
        let code = match diag.code {
            Code::DomainCname => F::DomainCname,
            Code::CnameLoop => F::CnameLoop,
            Code::MxLookupFailed => F::MxLookupFailed,
            Code::ImplicitMx if implicit_without_address => F::ImplicitMxNoAddress,
            Code::ImplicitMx => F::ImplicitMx,
            Code::NullMx => F::NullMx,
            Code::NullMxMixed => F::NullMxMixed,
            Code::NullMxNonzeroPreference => F::NullMxNonzeroPreference,
            Code::MxTargetIpLiteral => F::MxTargetIpLiteral,
            Code::MxTargetCname => F::MxTargetCname,
            Code::DuplicateMx => F::DuplicateMx,
            // The implicit MX's missing address is the domain's problem, reported above.
            Code::MxTargetNxdomain | Code::MxTargetNoAddress if route.implicit => continue,
            Code::MxTargetNxdomain => F::MxTargetNxdomain,
            Code::MxTargetNoAddress => F::MxTargetNoAddress,
            // Offline, the lab refuses names outside the zone text: not a fault of the zone.
            Code::MxTargetTempfail
                if report.mode == Mode::Zone
                    && (report.outside_zone.iter().any(|n| n == subject)
                        || diag.message.contains("REFUSED")) =>
            {
                continue;
            }
            Code::MxTargetTempfail => F::MxTargetTempfail,
            // Reported per address below, with the kind of range.
            Code::MxTargetPrivateAddress => continue,
            // Policy-driven diagnostics: the check sets no local names, static routes or limit.
            Code::DomainLiteral | Code::StaticRoute | Code::MxIsLocal | Code::AddressLimit => {
                continue;
            }
        };
        out.push(Finding::new(code, subject, diag.message.clone()));
    }
    for name in &report.outside_zone {
        out.push(Finding::new(
            F::OutsideZone,
            name.clone(),
            format!("{name} lies outside the zone text and cannot be checked offline"),
        ));
    }

    let mut reachable: Vec<_> = route
        .exchangers
        .iter()
        .filter(|e| !e.addresses.is_empty())
        .collect();
    // The route shuffles equal preferences; findings read best in a fixed order.
    reachable.sort_by(|a, b| (a.preference, &a.host).cmp(&(b.preference, &b.host)));
    let mut hosts_by_ip: BTreeMap<IpAddr, BTreeSet<&str>> = BTreeMap::new();
    for e in &reachable {
        for ip in &e.addresses {
            hosts_by_ip.entry(*ip).or_default().insert(e.host.as_str());
        }
    }
    for (ip, hosts) in &hosts_by_ip {
        if hosts.len() > 1 {
            let names: Vec<&str> = hosts.iter().copied().collect();
            out.push(Finding::new(
                F::SharedAddress,
                ip.to_string(),
                format!("{} all resolve to {ip}", names.join(", ")),
            ));
        }
    }
    for e in &reachable {
        let special: Vec<String> = e
            .addresses
            .iter()
            .filter_map(|ip| special_range(ip).map(|kind| format!("{ip} ({kind})")))
            .collect();
        if !special.is_empty() {
            out.push(Finding::new(
                F::PrivateAddress,
                e.host.clone(),
                format!(
                    "{} has non-public address(es) {}, unreachable from the Internet",
                    e.host,
                    special.join(", ")
                ),
            ));
        }
    }
    if route.status == Status::Ok && !route.implicit {
        let hosts: BTreeSet<&str> = reachable.iter().map(|e| e.host.as_str()).collect();
        if hosts.len() == 1 {
            out.push(Finding::new(
                F::SingleExchanger,
                domain,
                format!("{domain} has one usable exchanger and no backup"),
            ));
        }
        let addresses: Vec<&IpAddr> = reachable.iter().flat_map(|e| &e.addresses).collect();
        if !addresses.is_empty() && addresses.iter().all(|ip| ip.is_ipv4()) {
            out.push(Finding::new(
                F::Ipv4Only,
                domain,
                format!("every exchanger of {domain} has IPv4 addresses only"),
            ));
        }
        if !addresses.is_empty() && addresses.iter().all(|ip| ip.is_ipv6()) {
            out.push(Finding::new(
                F::Ipv6Only,
                domain,
                format!("every exchanger of {domain} has IPv6 addresses only"),
            ));
        }
        if addresses.len() > SENDER_ADDRESS_LIMIT {
            out.push(Finding::new(
                F::TooManyExchangers,
                domain,
                format!(
                    "{} exchanger addresses; senders stop after {SENDER_ADDRESS_LIMIT}",
                    addresses.len()
                ),
            ));
        }
    }
    if let Some(ttl) = report.mx_ttl {
        if ttl < MX_TTL_LOW {
            out.push(Finding::new(
                F::MxTtlLow,
                domain,
                format!("MX TTL is {ttl} s (below {MX_TTL_LOW} s)"),
            ));
        } else if ttl > MX_TTL_HIGH {
            out.push(Finding::new(
                F::MxTtlHigh,
                domain,
                format!("MX TTL is {ttl} s (above {MX_TTL_HIGH} s)"),
            ));
        }
    }
    nameservers(report, out);
}

fn nameservers(report: &DomainReport, out: &mut Vec<Finding>) {
    let domain = report.domain.as_str();
    if let Some(why) = &report.nameservers_skipped {
        out.push(Finding::new(F::NsCheckSkipped, domain, why.clone()));
    }
    for ns in &report.nameservers {
        if let Some(error) = &ns.error {
            let at = ns.address.map(|ip| format!(" ({ip})")).unwrap_or_default();
            out.push(Finding::new(
                F::NsNoAnswer,
                ns.host.clone(),
                format!(
                    "authoritative server {}{at} gave no MX answer: {error}",
                    ns.host
                ),
            ));
        }
    }
    let answers: BTreeSet<&Vec<String>> = report
        .nameservers
        .iter()
        .filter_map(|ns| ns.mx.as_ref())
        .collect();
    if answers.len() > 1 {
        let each: Vec<String> = report
            .nameservers
            .iter()
            .filter_map(|ns| {
                let mx = ns.mx.as_ref()?;
                let shown = if mx.is_empty() {
                    "no MX".to_string()
                } else {
                    mx.join(", ")
                };
                Some(format!("{} says {shown}", ns.host))
            })
            .collect();
        out.push(Finding::new(
            F::NsDisagree,
            domain,
            format!("the authoritative servers disagree: {}", each.join("; ")),
        ));
    }
}

/// The name of the special-purpose range an address is in, if any.
pub fn special_range(ip: &IpAddr) -> Option<&'static str> {
    if !mx_core::is_special_purpose(ip) {
        return None;
    }
    Some(match ip {
        IpAddr::V4(v4) if v4.is_loopback() => "loopback",
        IpAddr::V4(v4) if v4.is_private() => "private (RFC 1918)",
        IpAddr::V4(v4) if v4.is_link_local() => "link-local",
        IpAddr::V4(v4) if v4.is_documentation() => "documentation",
        IpAddr::V4(v4) if v4.octets()[0] == 100 => "shared (CGNAT)",
        IpAddr::V6(v6) if v6.is_loopback() => "loopback",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xfe00) == 0xfc00 => "unique local",
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => "link-local",
        IpAddr::V6(v6) if v6.segments()[0] == 0x2001 && v6.segments()[1] == 0x0db8 => {
            "documentation"
        }
        _ => "special-purpose",
    })
}

fn smtp(report: &DomainReport, out: &mut Vec<Finding>) {
    let mut probed = 0;
    let mut greeted = 0;
    for e in &report.exchangers {
        for a in &e.addresses {
            let subject = format!("{}/{}", e.host, a.ip);
            if let Some(p) = &a.smtp {
                probed += 1;
                let error = p.error.clone().unwrap_or_default();
                if !p.connected {
                    out.push(Finding::new(
                        F::SmtpUnreachable,
                        subject.clone(),
                        format!("port {} on {}: {error}", p.port, a.ip),
                    ));
                } else if p.banner_code != Some(220) {
                    let seen = match (&p.banner_code, &p.banner) {
                        (Some(code), Some(text)) => format!("greeted with {code} {text}"),
                        _ => format!("no greeting: {error}"),
                    };
                    out.push(Finding::new(F::SmtpBannerBad, subject.clone(), seen));
                } else {
                    greeted += 1;
                    if !p.ehlo {
                        out.push(Finding::new(
                            F::SmtpEhloRefused,
                            subject.clone(),
                            "EHLO was refused; the server speaks plain SMTP only",
                        ));
                    } else if !p.starttls {
                        out.push(Finding::new(
                            F::StarttlsMissing,
                            subject.clone(),
                            "EHLO does not offer STARTTLS: mail to this address travels in plain text",
                        ));
                    }
                    if let Some(tls) = &p.tls {
                        tls_findings(&e.host, &subject, tls, out);
                    }
                }
                if let Some(banner_host) = &p.banner_host
                    && !a.ptr.is_empty()
                    && !a.ptr.iter().any(|n| n.eq_ignore_ascii_case(banner_host))
                {
                    out.push(Finding::new(
                        F::BannerPtrMismatch,
                        subject.clone(),
                        format!(
                            "greets as {banner_host} but the PTR of {} is {}",
                            a.ip,
                            a.ptr.join(", ")
                        ),
                    ));
                }
            }
            match a.fcrdns {
                Some(_) if a.ptr.is_empty() => out.push(Finding::new(
                    F::PtrMissing,
                    subject.clone(),
                    format!("{} has no PTR record", a.ip),
                )),
                Some(false) => out.push(Finding::new(
                    F::FcrdnsMismatch,
                    subject.clone(),
                    format!(
                        "PTR of {} is {}, which does not resolve back to it",
                        a.ip,
                        a.ptr.join(", ")
                    ),
                )),
                _ => {}
            }
        }
    }
    if probed > 0 && greeted == 0 {
        out.push(Finding::new(
            F::NoExchangerReachable,
            report.domain.clone(),
            format!("none of the {probed} exchanger address(es) greeted with 220"),
        ));
    }
}

fn tls_findings(host: &str, subject: &str, tls: &crate::probe::TlsProbe, out: &mut Vec<Finding>) {
    let why = tls.verify_error.clone().unwrap_or_default();
    if !tls.established {
        let error = tls.error.clone().unwrap_or_default();
        out.push(Finding::new(
            F::TlsHandshakeFailed,
            subject,
            format!("STARTTLS offered but the handshake failed: {error}"),
        ));
        return;
    }
    if tls.expired {
        out.push(Finding::new(
            F::TlsCertExpired,
            subject,
            format!("the certificate has expired: {why}"),
        ));
    } else if !tls.trusted && !tls.not_yet_valid {
        out.push(Finding::new(
            F::TlsCertUntrusted,
            subject,
            format!("the certificate does not chain to a trusted CA: {why}"),
        ));
    }
    if !tls.name_matches {
        let names = tls
            .certificate
            .as_ref()
            .map(|c| c.dns_names.join(", "))
            .unwrap_or_default();
        out.push(Finding::new(
            F::TlsCertNameMismatch,
            subject,
            format!("the certificate names {names}, not {host}"),
        ));
    }
    if let Some(cert) = &tls.certificate
        && !tls.expired
        && cert.days_left < CERT_EXPIRY_WARNING_DAYS
    {
        out.push(Finding::new(
            F::TlsCertExpiring,
            subject,
            format!(
                "the certificate expires in {} day(s), on {}",
                cert.days_left, cert.not_after
            ),
        ));
    }
}

fn policies(report: &DomainReport, out: &mut Vec<Finding>) {
    let domain = report.domain.as_str();
    for e in &report.exchangers {
        if let Some(tlsa) = &e.tlsa {
            let subject = format!("_25._tcp.{}", e.host);
            if tlsa.records == 0 && tlsa.error.is_none() {
                out.push(Finding::new(
                    F::DaneMissing,
                    subject,
                    format!("{} publishes no TLSA records", e.host),
                ));
            } else if tlsa.records > 0 && !tlsa.dnssec_secure {
                out.push(Finding::new(
                    F::DaneInsecure,
                    subject,
                    format!(
                        "{} TLSA record(s) but the answer was not DNSSEC-validated",
                        tlsa.records
                    ),
                ));
            }
        }
    }
    if let Some(sts) = &report.mta_sts {
        let subject = format!("_mta-sts.{domain}");
        if let Some(error) = &sts.record_error {
            out.push(Finding::new(F::MtaStsRecordInvalid, subject, error.clone()));
        } else if sts.records.is_empty() {
            out.push(Finding::new(
                F::MtaStsMissing,
                subject,
                format!("{domain} publishes no MTA-STS record"),
            ));
        } else if let Some(error) = &sts.fetch_error {
            out.push(Finding::new(
                F::MtaStsPolicyUnavailable,
                format!("https://mta-sts.{domain}/.well-known/mta-sts.txt"),
                error.clone(),
            ));
        } else if let Some(error) = &sts.policy_error {
            out.push(Finding::new(
                F::MtaStsPolicyInvalid,
                format!("https://mta-sts.{domain}/.well-known/mta-sts.txt"),
                error.clone(),
            ));
        } else if let Some(policy) = &sts.policy {
            if policy.mode != StsMode::Enforce {
                out.push(Finding::new(
                    F::MtaStsNotEnforced,
                    subject.clone(),
                    format!("the policy's mode is {}", policy.mode.as_str()),
                ));
            }
            if policy.max_age < STS_MAX_AGE_SHORT {
                out.push(Finding::new(
                    F::MtaStsMaxAgeShort,
                    subject.clone(),
                    format!("max_age is {} s", policy.max_age),
                ));
            }
            if policy.mode != StsMode::None {
                for e in &report.exchangers {
                    if !policy.mx.iter().any(|p| mx_matches(p, &e.host)) {
                        out.push(Finding::new(
                            F::MtaStsMxMismatch,
                            e.host.clone(),
                            format!(
                                "{} matches none of the policy's mx patterns ({})",
                                e.host,
                                policy.mx.join(", ")
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let Some(rpt) = &report.tls_rpt {
        let subject = format!("_smtp._tls.{domain}");
        if let Some(error) = &rpt.error {
            out.push(Finding::new(F::TlsRptInvalid, subject, error.clone()));
        } else if rpt.records.is_empty() {
            out.push(Finding::new(
                F::TlsRptMissing,
                subject,
                format!("{domain} publishes no TLS-RPT record"),
            ));
        }
    }
}
