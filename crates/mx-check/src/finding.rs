//! The findings a check can report: stable codes, their levels, and one sentence of advice
//! each. docs/check.md explains every code at length; a test keeps the two in step.

use std::fmt;

use mx_core::Level;
use serde::Serialize;

/// One thing the check found, about the domain or one of its records or hosts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub code: FindingCode,
    pub level: Level,
    /// The record or host it concerns: the domain, an exchanger host, `host/ip`, or a
    /// policy name such as `_mta-sts.example.com`.
    pub subject: String,
    /// What was seen.
    pub message: String,
    /// What to do about it, in one sentence.
    pub advice: &'static str,
}

impl Finding {
    pub fn new(code: FindingCode, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            code,
            level: code.level(),
            subject: subject.into(),
            message: message.into(),
            advice: code.advice(),
        }
    }
}

macro_rules! finding_codes {
    ($( $variant:ident = $name:literal, $level:ident, $advice:literal; )*) => {
        /// Stable finding codes. The names are a public interface: never rename one.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum FindingCode { $( $variant, )* }

        impl FindingCode {
            /// Every code, in documentation order.
            pub const ALL: &'static [FindingCode] = &[ $( FindingCode::$variant, )* ];

            pub fn as_str(self) -> &'static str {
                match self { $( FindingCode::$variant => $name, )* }
            }

            pub fn level(self) -> Level {
                match self { $( FindingCode::$variant => Level::$level, )* }
            }

            /// One sentence: what to do about it.
            pub fn advice(self) -> &'static str {
                match self { $( FindingCode::$variant => $advice, )* }
            }
        }
    };
}

finding_codes! {
    // --- DNS shape --------------------------------------------------------------------------
    DomainNxdomain = "domain_nxdomain", Error,
        "Register or publish the domain, or stop using it in mail addresses.";
    MxLookupFailed = "mx_lookup_failed", Error,
        "Fix the domain's authoritative servers (lame delegation, DNSSEC or server failure) so MX queries are answered.";
    DomainCname = "domain_cname", Warning,
        "Publish MX records at the domain itself; a CNAME there hides every other record type the domain needs (SPF, DMARC, MTA-STS).";
    CnameLoop = "cname_loop", Error,
        "Break the CNAME loop so the name ends at real records.";
    ImplicitMx = "implicit_mx", Info,
        "Publish an explicit MX record (or a null MX if the domain takes no mail) instead of relying on the address fallback.";
    ImplicitMxNoAddress = "implicit_mx_no_address", Warning,
        "Publish an MX record for the domain, or a null MX (\"MX 0 .\") if it takes no mail.";
    NullMx = "null_mx", Info,
        "Nothing to do if the domain really takes no mail; remove the null MX if it should.";
    NullMxMixed = "null_mx_mixed", Error,
        "Remove either the null MX or the other MX records: together they mean no mail is delivered.";
    NullMxNonzeroPreference = "null_mx_nonzero_preference", Warning,
        "Write the null MX as \"MX 0 .\" as RFC 7505 requires.";
    MxTargetIpLiteral = "mx_target_ip_literal", Error,
        "Point the MX at a host name that has A/AAAA records; an MX target must be a name, not an address.";
    MxTargetCname = "mx_target_cname", Warning,
        "Point the MX at the canonical host name instead of an alias (RFC 2181 §10.3).";
    MxTargetNxdomain = "mx_target_nxdomain", Error,
        "Create the exchanger's A/AAAA records or point the MX at an existing host.";
    MxTargetNoAddress = "mx_target_no_address", Error,
        "Give the exchanger an A and/or AAAA record.";
    MxTargetTempfail = "mx_target_tempfail", Warning,
        "Fix the DNS servers of the exchanger's zone so its address queries are answered.";
    DuplicateMx = "duplicate_mx", Warning,
        "List each exchanger host once, at the preference you mean.";
    SharedAddress = "shared_address", Warning,
        "Give backup exchangers their own addresses; two names for one machine is no redundancy.";
    SingleExchanger = "single_exchanger", Info,
        "Consider a second exchanger (or rely on senders' queues of several days, which is often enough).";
    PrivateAddress = "private_address", Warning,
        "Publish only public, routable addresses for exchangers seen from the Internet.";
    Ipv4Only = "ipv4_only", Info,
        "Add AAAA records when the exchangers are reachable over IPv6, for IPv6-only senders.";
    Ipv6Only = "ipv6_only", Warning,
        "Add A records: most senders still deliver over IPv4 only.";
    MxTtlLow = "mx_ttl_low", Warning,
        "Raise the MX TTL to at least an hour unless a migration is under way.";
    MxTtlHigh = "mx_ttl_high", Warning,
        "Lower the MX TTL to a few days at most so changes reach senders in reasonable time.";
    TooManyExchangers = "too_many_exchangers", Warning,
        "Keep to five exchanger addresses or fewer; senders such as Postfix and Exim never try the rest.";
    NsDisagree = "ns_disagree", Error,
        "Bring every authoritative server to the same zone version (check zone transfers and serials).";
    NsNoAnswer = "ns_no_answer", Warning,
        "Fix or remove the authoritative server that does not answer (a lame delegation slows every lookup).";
    NsCheckSkipped = "ns_check_skipped", Info,
        "Make the domain's NS host names resolvable so each server can be compared.";
    OutsideZone = "outside_zone", Info,
        "Check the name live after publishing, or add its zone to the file.";
    // --- SMTP probes ------------------------------------------------------------------------
    SmtpUnreachable = "smtp_unreachable", Warning,
        "Open the SMTP port on this address or remove the address from DNS.";
    NoExchangerReachable = "no_exchanger_reachable", Error,
        "Bring at least one exchanger online: senders can only queue and retry until they bounce.";
    SmtpBannerBad = "smtp_banner_bad", Error,
        "Make the server greet with 220 when it is ready to take mail.";
    SmtpEhloRefused = "smtp_ehlo_refused", Warning,
        "Enable ESMTP (EHLO): without it there is no STARTTLS, SIZE or 8BITMIME.";
    StarttlsMissing = "starttls_missing", Warning,
        "Offer STARTTLS with a certificate for the MX host name.";
    TlsHandshakeFailed = "tls_handshake_failed", Error,
        "Fix the TLS configuration; senders that try STARTTLS and fail may fall back to plain text or defer.";
    TlsCertNameMismatch = "tls_cert_name_mismatch", Warning,
        "Install a certificate whose names include the MX host name.";
    TlsCertUntrusted = "tls_cert_untrusted", Warning,
        "Use a certificate from a public CA (MTA-STS requires it; DANE can pin your own).";
    TlsCertExpired = "tls_cert_expired", Error,
        "Renew the certificate.";
    TlsCertExpiring = "tls_cert_expiring", Warning,
        "Renew the certificate before it expires (automate it).";
    PtrMissing = "ptr_missing", Warning,
        "Ask the address's owner to publish a PTR record naming the exchanger.";
    FcrdnsMismatch = "fcrdns_mismatch", Warning,
        "Make the PTR name resolve back to the same address (forward-confirmed reverse DNS).";
    BannerPtrMismatch = "banner_ptr_mismatch", Info,
        "Greet with the host name the address's PTR record gives.";
    // --- Policies ---------------------------------------------------------------------------
    MtaStsMissing = "mta_sts_missing", Info,
        "Publish an MTA-STS policy so senders insist on verified TLS.";
    MtaStsRecordInvalid = "mta_sts_record_invalid", Error,
        "Fix the _mta-sts TXT record: \"v=STSv1; id=<1-32 letters or digits>\".";
    MtaStsPolicyUnavailable = "mta_sts_policy_unavailable", Error,
        "Serve the policy at https://mta-sts.<domain>/.well-known/mta-sts.txt with a valid certificate and text/plain.";
    MtaStsPolicyInvalid = "mta_sts_policy_invalid", Error,
        "Fix the policy file: version STSv1, a mode, max_age and one mx line per exchanger pattern.";
    MtaStsMxMismatch = "mta_sts_mx_mismatch", Error,
        "Add an mx line to the policy matching this exchanger, or senders enforcing it will not deliver there.";
    MtaStsNotEnforced = "mta_sts_not_enforced", Info,
        "Move the policy to mode enforce once TLS reports show no failures.";
    MtaStsMaxAgeShort = "mta_sts_max_age_short", Warning,
        "Raise max_age to at least a day (86400), better weeks, so the policy protects between fetches.";
    TlsRptMissing = "tls_rpt_missing", Info,
        "Publish a _smtp._tls TXT record to receive TLS failure reports.";
    TlsRptInvalid = "tls_rpt_invalid", Warning,
        "Fix the _smtp._tls TXT record: \"v=TLSRPTv1; rua=mailto:...\".";
    DaneMissing = "dane_missing", Info,
        "Publish TLSA records at _25._tcp.<exchanger> in a DNSSEC-signed zone to let senders authenticate TLS.";
    DaneInsecure = "dane_insecure", Warning,
        "Sign the exchanger's zone with DNSSEC: senders ignore TLSA records that are not validated.";
}

impl fmt::Display for FindingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FindingCode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FindingCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown finding code {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_match_serde() {
        let mut seen = std::collections::HashSet::new();
        for code in FindingCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            let json = serde_json::to_value(code).expect("serialises");
            assert_eq!(json.as_str(), Some(code.as_str()));
            assert_eq!(code.as_str().parse::<FindingCode>(), Ok(*code));
            assert!(code.advice().ends_with('.'), "{code}: advice is a sentence");
        }
    }

    #[test]
    fn every_code_is_documented_with_its_level() {
        let doc = include_str!("../../../docs/check.md");
        for code in FindingCode::ALL {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", code.as_str())))
                .unwrap_or_else(|| panic!("docs/check.md has no table row for {code}"));
            assert!(
                row.contains(&format!("| {} |", code.level().as_str())),
                "docs/check.md gives {code} another level: {row}"
            );
        }
    }
}
