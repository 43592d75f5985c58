//! Every finding code, produced by a real setup: lab zones over real DNS packets, two lab
//! servers with different zone versions, lab exchangers (real mx-relay listeners and two small
//! scripted SMTP servers) configured to misbehave, and an HTTPS server on loopback serving
//! MTA-STS policies under a test CA the check is told to trust.
//!
//! Each scenario table lists the codes its domains must produce; the last test checks that the
//! tables together cover `FindingCode::ALL`, so a new code cannot land without a test.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mx_check::mta_sts::FetchOptions;
use mx_check::probe::ProbeOptions;
use mx_check::{CheckOptions, Checker, DomainReport, FindingCode, Mode};
use mx_lab::{LabDns, ZoneSet};
use support::{
    BOUND, ExchangerSetup, ExchangerTls, HttpResponse, closed_port, exchanger, https_server,
    self_signed, shared_port, test_ca,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// (domain, codes it must produce).
type Table = &'static [(&'static str, &'static [&'static str])];

const DNS_CASES: Table = &[
    ("missing.test", &["domain_nxdomain"]),
    ("servfail.test", &["mx_lookup_failed"]),
    ("alias.test", &["domain_cname"]),
    ("loop1.test", &["cname_loop"]),
    ("implicit.test", &["implicit_mx"]),
    ("bare.test", &["implicit_mx_no_address"]),
    ("nullmx.test", &["null_mx"]),
    ("nullmixed.test", &["null_mx_mixed"]),
    ("nullpref.test", &["null_mx_nonzero_preference"]),
    ("literal.test", &["mx_target_ip_literal"]),
    ("viacname.test", &["mx_target_cname"]),
    ("dangling.test", &["mx_target_nxdomain"]),
    ("noaddr.test", &["mx_target_no_address"]),
    ("flaky.test", &["mx_target_tempfail"]),
    ("twice.test", &["duplicate_mx"]),
    ("shared.test", &["shared_address"]),
    (
        "single.test",
        &["single_exchanger", "private_address", "ipv4_only"],
    ),
    ("v6only.test", &["ipv6_only"]),
    ("lowttl.test", &["mx_ttl_low"]),
    ("highttl.test", &["mx_ttl_high"]),
    ("crowded.test", &["too_many_exchangers"]),
    ("lame.test", &["ns_no_answer"]),
    ("nameless.test", &["ns_check_skipped"]),
];

const DNS_ZONE: &str = r#"
$TTL 3600
.                   IN SOA ns.lab. hostmaster.lab. 1 3600 600 86400 300
$FAULT servfail.test servfail MX
$FAULT mx.flaky.test servfail AAAA
servfail.test.      IN MX 10 mx.single.test.
alias.test.         IN CNAME single.test.
loop1.test.         IN CNAME loop2.test.
loop2.test.         IN CNAME loop1.test.
implicit.test.      IN A 192.0.2.30
bare.test.          IN TXT "nothing for mail"
nullmx.test.        IN MX 0 .
nullmixed.test.     IN MX 0 .
nullmixed.test.     IN MX 10 mx.single.test.
nullpref.test.      IN MX 10 .
literal.test.       IN MX 10 192.0.2.25.
viacname.test.      IN MX 10 mailalias.viacname.test.
mailalias.viacname.test. IN CNAME mx.single.test.
dangling.test.      IN MX 10 gone.dangling.test.
noaddr.test.        IN MX 10 text.noaddr.test.
text.noaddr.test.   IN TXT "no address"
flaky.test.         IN MX 10 mx.flaky.test.
mx.flaky.test.      IN A 192.0.2.51
twice.test.         IN MX 10 mx.single.test.
twice.test.         IN MX 20 mx.single.test.
shared.test.        IN MX 10 mx.single.test.
shared.test.        IN MX 20 backup.shared.test.
backup.shared.test. IN A 192.0.2.10
single.test.        IN MX 10 mx.single.test.
mx.single.test.     IN A 192.0.2.10
v6only.test.        IN MX 10 mx.v6only.test.
mx.v6only.test.     IN AAAA 2001:db8::25
lowttl.test.     60 IN MX 10 mx.single.test.
highttl.test. 2592000 IN MX 10 mx.single.test.
crowded.test.       IN MX 10 big.crowded.test.
big.crowded.test.   IN A 192.0.2.20
big.crowded.test.   IN A 192.0.2.21
big.crowded.test.   IN A 192.0.2.22
big.crowded.test.   IN A 192.0.2.23
big.crowded.test.   IN A 192.0.2.24
big.crowded.test.   IN A 192.0.2.25
lame.test.          IN SOA ns1.lame.test. hostmaster.lame.test. 1 3600 600 86400 300
lame.test.          IN NS ns1.lame.test.
lame.test.          IN MX 10 mx.single.test.
ns1.lame.test.      IN A 127.0.0.254
nameless.test.      IN SOA ns1.nowhere.test. hostmaster.nameless.test. 1 3600 600 86400 300
nameless.test.      IN NS ns1.nowhere.test.
nameless.test.      IN MX 10 mx.single.test.
"#;

fn live_options(nameserver: SocketAddr) -> CheckOptions {
    let roots = test_ca().roots();
    CheckOptions {
        nameservers: vec![nameserver],
        dns_timeout: Duration::from_millis(500),
        authoritative_port: nameserver.port(),
        smtp: None,
        fetch: FetchOptions {
            port: 1,
            timeout: Duration::from_secs(5),
            tls_roots: roots,
        },
        zone_apexes: None,
    }
}

fn probing(mut options: CheckOptions, smtp_port: u16) -> CheckOptions {
    let mut probe = ProbeOptions::new("checker.test", test_ca().roots());
    probe.port = smtp_port;
    probe.connect_timeout = Duration::from_secs(5);
    probe.command_timeout = Duration::from_secs(2);
    options.smtp = Some(probe);
    options
}

fn codes(report: &DomainReport) -> BTreeSet<&'static str> {
    report.findings.iter().map(|f| f.code.as_str()).collect()
}

/// Checks every domain of `table` and asserts its codes appear.
async fn expect(checker: &Checker, table: &[(&str, &[&str])]) -> Vec<DomainReport> {
    let mut reports = Vec::new();
    for (domain, wanted) in table {
        let report = tokio::time::timeout(BOUND * 3, checker.check(domain))
            .await
            .unwrap_or_else(|_| panic!("check of {domain} is bounded"));
        let got = codes(&report);
        for code in *wanted {
            assert!(
                got.contains(code),
                "{domain}: expected {code}, got {got:?}\n{:#?}",
                report.findings
            );
        }
        reports.push(report);
    }
    reports
}

async fn lab(zone: &str, listen: &str) -> LabDns {
    let zones = ZoneSet::parse(zone, "<test>", None).expect("zone parses");
    LabDns::start(&zones, listen.parse().expect("addr"))
        .await
        .expect("lab starts")
}

#[tokio::test]
async fn dns_shape_findings_over_real_packets() {
    let lab = lab(DNS_ZONE, "127.0.0.1:0").await;
    let checker = Checker::new(live_options(lab.addr())).expect("checker");
    let reports = expect(&checker, DNS_CASES).await;
    for report in &reports {
        assert_eq!(report.mode, Mode::Live);
        assert!(
            report.route.is_some(),
            "{}: the route is part of the report",
            report.domain
        );
    }
    // A sound pair of exchangers draws none of the shape findings above.
    let single = reports
        .iter()
        .find(|r| r.domain == "single.test")
        .expect("single");
    assert_eq!(single.mx_ttl, Some(3600));
    assert!(!single.has_error(), "{:#?}", single.findings);
    // The authoritative server that never answers is named, not the domain's MX.
    let lame = reports
        .iter()
        .find(|r| r.domain == "lame.test")
        .expect("lame");
    let finding = lame
        .findings
        .iter()
        .find(|f| f.code == FindingCode::NsNoAnswer)
        .expect("ns_no_answer");
    assert_eq!(finding.subject, "ns1.lame.test");
    lab.shutdown().await;
}

const NS_CASES: Table = &[("split.test", &["ns_disagree"])];

/// Two lab servers hold different versions of one zone, as a stale secondary would.
#[tokio::test]
async fn authoritative_servers_that_disagree() {
    let zone = |serial: u32, mx: &str| {
        format!(
            "$ORIGIN split.test.\n\
             @ IN SOA ns1 hostmaster {serial} 3600 600 86400 300\n\
             @ IN NS ns1\n@ IN NS ns2\n\
             ns1 IN A 127.0.0.1\nns2 IN A 127.0.0.2\n\
             @ IN MX 10 {mx}\n\
             mx1 IN A 192.0.2.10\nmx2 IN A 192.0.2.11\n"
        )
    };
    let primary = lab(&zone(2, "mx2"), "127.0.0.1:0").await;
    let port = primary.addr().port();
    let secondary = lab(&zone(1, "mx1"), &format!("127.0.0.2:{port}")).await;
    let checker = Checker::new(live_options(primary.addr())).expect("checker");
    let reports = expect(&checker, NS_CASES).await;
    let servers: Vec<_> = reports[0]
        .nameservers
        .iter()
        .map(|ns| (ns.host.as_str(), ns.mx.clone()))
        .collect();
    assert_eq!(
        servers,
        [
            (
                "ns1.split.test",
                Some(vec!["10 mx2.split.test".to_string()])
            ),
            (
                "ns2.split.test",
                Some(vec!["10 mx1.split.test".to_string()])
            ),
        ]
    );
    // The same zone on both: no finding.
    secondary.shutdown().await;
    let agreeing = lab(&zone(2, "mx2"), &format!("127.0.0.2:{port}")).await;
    let report = checker.check("split.test").await;
    assert!(
        !codes(&report).contains("ns_disagree"),
        "{:#?}",
        report.findings
    );
    agreeing.shutdown().await;
    primary.shutdown().await;
}

const SMTP_CASES: Table = &[
    ("good.test", &[]),
    ("notls.test", &["starttls_missing"]),
    ("wrongname.test", &["tls_cert_name_mismatch"]),
    ("selfsigned.test", &["tls_cert_untrusted"]),
    ("expired.test", &["tls_cert_expired"]),
    ("expiring.test", &["tls_cert_expiring"]),
    (
        "silent.test",
        &["smtp_banner_bad", "no_exchanger_reachable"],
    ),
    ("down.test", &["smtp_unreachable", "no_exchanger_reachable"]),
    ("banner.test", &["banner_ptr_mismatch"]),
    ("noptr.test", &["ptr_missing"]),
    ("forged.test", &["fcrdns_mismatch"]),
    ("helo.test", &["smtp_ehlo_refused"]),
    ("badtls.test", &["tls_handshake_failed"]),
];

/// One exchanger per domain, each on its own 127.0.0.x address, all on one port.
const SMTP_ZONE: &str = r#"
$TTL 3600
good.test.          IN MX 10 mx.good.test.
mx.good.test.       IN A 127.0.0.61
notls.test.         IN MX 10 mx.notls.test.
mx.notls.test.      IN A 127.0.0.62
wrongname.test.     IN MX 10 mx.wrongname.test.
mx.wrongname.test.  IN A 127.0.0.63
selfsigned.test.    IN MX 10 mx.selfsigned.test.
mx.selfsigned.test. IN A 127.0.0.64
expired.test.       IN MX 10 mx.expired.test.
mx.expired.test.    IN A 127.0.0.65
expiring.test.      IN MX 10 mx.expiring.test.
mx.expiring.test.   IN A 127.0.0.66
silent.test.        IN MX 10 mx.silent.test.
mx.silent.test.     IN A 127.0.0.67
down.test.          IN MX 10 mx.down.test.
mx.down.test.       IN A 127.0.0.68
banner.test.        IN MX 10 mx.banner.test.
mx.banner.test.     IN A 127.0.0.69
noptr.test.         IN MX 10 mx.noptr.test.
mx.noptr.test.      IN A 127.0.0.70
forged.test.        IN MX 10 mx.forged.test.
mx.forged.test.     IN A 127.0.0.71
helo.test.          IN MX 10 mx.helo.test.
mx.helo.test.       IN A 127.0.0.72
badtls.test.        IN MX 10 mx.badtls.test.
mx.badtls.test.     IN A 127.0.0.73
61.0.0.127.in-addr.arpa. IN PTR mx.good.test.
62.0.0.127.in-addr.arpa. IN PTR mx.notls.test.
63.0.0.127.in-addr.arpa. IN PTR mx.wrongname.test.
64.0.0.127.in-addr.arpa. IN PTR mx.selfsigned.test.
65.0.0.127.in-addr.arpa. IN PTR mx.expired.test.
66.0.0.127.in-addr.arpa. IN PTR mx.expiring.test.
67.0.0.127.in-addr.arpa. IN PTR mx.silent.test.
68.0.0.127.in-addr.arpa. IN PTR mx.down.test.
69.0.0.127.in-addr.arpa. IN PTR mx.banner.test.
71.0.0.127.in-addr.arpa. IN PTR elsewhere.forged.test.
elsewhere.forged.test. IN A 192.0.2.99
72.0.0.127.in-addr.arpa. IN PTR mx.helo.test.
73.0.0.127.in-addr.arpa. IN PTR mx.badtls.test.
"#;

/// A scripted SMTP server for what a relay will not do: `refuse_ehlo` answers EHLO with 502
/// (HELO works); otherwise it offers STARTTLS and then answers the handshake with plain text.
async fn scripted_smtp(ip: &str, port: u16, refuse_ehlo: bool) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind((ip, port))
        .await
        .expect("bind scripted server");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = tcp.into_split();
                let mut lines = BufReader::new(read).lines();
                let _ = write.write_all(b"220 scripted.test ESMTP\r\n").await;
                while let Ok(Ok(Some(line))) = tokio::time::timeout(BOUND, lines.next_line()).await
                {
                    let verb = line
                        .split_whitespace()
                        .next()
                        .unwrap_or("")
                        .to_ascii_uppercase();
                    let reply: &[u8] = match (verb.as_str(), refuse_ehlo) {
                        ("EHLO", true) => b"502 5.5.1 EHLO not implemented\r\n",
                        ("EHLO", false) => b"250-scripted.test\r\n250 STARTTLS\r\n",
                        ("HELO", _) => b"250 scripted.test\r\n",
                        ("STARTTLS", _) => {
                            let _ = write.write_all(b"220 2.0.0 go ahead\r\n").await;
                            let _ = write.write_all(b"this is not a TLS record\r\n").await;
                            return;
                        }
                        ("QUIT", _) => {
                            let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                            return;
                        }
                        _ => b"500 5.5.2 what?\r\n",
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    })
}

#[tokio::test]
async fn smtp_findings_from_misbehaving_lab_exchangers() {
    let ips: Vec<String> = (61..=73).map(|n| format!("127.0.0.{n}")).collect();
    let ip_refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let port = shared_port(&ip_refs);
    let ca = test_ca();
    let mut running = Vec::new();
    let setups = [
        ("127.0.0.61", ExchangerSetup::new("mx.good.test")),
        (
            "127.0.0.62",
            ExchangerSetup::new("mx.notls.test").tls(ExchangerTls::None),
        ),
        (
            "127.0.0.63",
            ExchangerSetup::new("mx.wrongname.test")
                .tls(ExchangerTls::CaSigned("mail.someone-else.test".into())),
        ),
        (
            "127.0.0.64",
            ExchangerSetup::new("mx.selfsigned.test")
                .tls(ExchangerTls::Leaf(self_signed(&["mx.selfsigned.test"]))),
        ),
        (
            "127.0.0.65",
            ExchangerSetup::new("mx.expired.test")
                .tls(ExchangerTls::Leaf(ca.expired_leaf(&["mx.expired.test"]))),
        ),
        (
            "127.0.0.66",
            ExchangerSetup::new("mx.expiring.test").tls(ExchangerTls::Leaf(
                ca.leaf_expiring_in_days(&["mx.expiring.test"], 5),
            )),
        ),
        ("127.0.0.67", ExchangerSetup::new("mx.silent.test").silent()),
        // 127.0.0.68: nothing listens.
        ("127.0.0.69", ExchangerSetup::new("relay7.hosting.test")),
        ("127.0.0.70", ExchangerSetup::new("mx.noptr.test")),
        ("127.0.0.71", ExchangerSetup::new("mx.forged.test")),
    ];
    for (ip, setup) in setups {
        running.push(exchanger(ip, port, setup).await);
    }
    let scripted = [
        scripted_smtp("127.0.0.72", port, true).await,
        scripted_smtp("127.0.0.73", port, false).await,
    ];
    let lab = lab(SMTP_ZONE, "127.0.0.1:0").await;
    let checker = Checker::new(probing(live_options(lab.addr()), port)).expect("checker");
    let reports = expect(&checker, SMTP_CASES).await;

    let good = &reports[0];
    let smtp_codes: Vec<_> = good
        .findings
        .iter()
        .filter(|f| f.level != mx_core::Level::Info && f.code != FindingCode::PrivateAddress)
        .collect();
    assert!(
        smtp_codes.is_empty(),
        "a well-run exchanger: {smtp_codes:#?}"
    );
    let probe = good.exchangers[0].addresses[0]
        .smtp
        .as_ref()
        .expect("probed");
    assert_eq!(probe.banner_code, Some(220));
    assert_eq!(probe.banner_host.as_deref(), Some("mx.good.test"));
    assert!(probe.starttls);
    let tls = probe.tls.as_ref().expect("tls");
    assert!(
        tls.established && tls.trusted && tls.name_matches,
        "{tls:#?}"
    );
    assert_eq!(good.exchangers[0].addresses[0].fcrdns, Some(true));
    // A silent port costs at most the probe's bound, not forever.
    let silent = reports
        .iter()
        .find(|r| r.domain == "silent.test")
        .expect("silent");
    let elapsed = silent.exchangers[0].addresses[0]
        .smtp
        .as_ref()
        .expect("probed")
        .elapsed_ms;
    assert!(elapsed < 10_000, "silent probe took {elapsed} ms");

    for handle in scripted {
        handle.abort();
    }
    for exchanger in running {
        exchanger.stop().await;
    }
    lab.shutdown().await;
    let _ = closed_port;
}

const POLICY_CASES: Table = &[
    ("sts-good.test", &[]),
    (
        "sts-none.test",
        &["mta_sts_missing", "tls_rpt_missing", "dane_missing"],
    ),
    ("sts-badrecord.test", &["mta_sts_record_invalid"]),
    ("sts-404.test", &["mta_sts_policy_unavailable"]),
    ("sts-badpolicy.test", &["mta_sts_policy_invalid"]),
    ("sts-mismatch.test", &["mta_sts_mx_mismatch"]),
    (
        "sts-testing.test",
        &["mta_sts_not_enforced", "mta_sts_max_age_short"],
    ),
    ("rpt-bad.test", &["tls_rpt_invalid"]),
    ("dane.test", &["dane_insecure"]),
];

fn policy_zone(https_ip: &str) -> String {
    let mut zone = String::from("$TTL 3600\n");
    for domain in [
        "sts-good",
        "sts-none",
        "sts-badrecord",
        "sts-404",
        "sts-badpolicy",
        "sts-mismatch",
        "sts-testing",
        "rpt-bad",
        "dane",
    ] {
        zone.push_str(&format!(
            "{domain}.test. IN MX 10 mx.{domain}.test.\n\
             mx.{domain}.test. IN A 192.0.2.10\n\
             mta-sts.{domain}.test. IN A {https_ip}\n"
        ));
        if domain != "sts-none" {
            let id = if domain == "sts-badrecord" {
                "not valid!"
            } else {
                "20261123"
            };
            zone.push_str(&format!(
                "_mta-sts.{domain}.test. IN TXT \"v=STSv1; id={id}\"\n"
            ));
            let rua = if domain == "rpt-bad" {
                "ftp://reports.test"
            } else {
                "mailto:tls@reports.test"
            };
            zone.push_str(&format!(
                "_smtp._tls.{domain}.test. IN TXT \"v=TLSRPTv1; rua={rua}\"\n"
            ));
        }
    }
    zone.push_str(
        "_25._tcp.mx.dane.test. IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    );
    zone
}

fn policy(mode: &str, mx: &str, max_age: u32) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: {max_age}\r\n")
}

/// Each domain's policy host gets its own HTTPS server (they share one certificate naming
/// every mta-sts host), so each check is told the port of its own.
#[tokio::test]
async fn policy_findings_with_a_local_https_server() {
    let names: Vec<String> = POLICY_CASES
        .iter()
        .map(|(d, _)| format!("mta-sts.{d}"))
        .collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cert = test_ca().leaf(&name_refs);
    let path = "/.well-known/mta-sts.txt";
    let lab = lab(&policy_zone("127.0.0.80"), "127.0.0.1:0").await;
    for (domain, wanted) in POLICY_CASES {
        let response = match *domain {
            "sts-404.test" => HttpResponse::status(404),
            "sts-badpolicy.test" => HttpResponse::text("version: STSv1\r\nmode: sometimes\r\n"),
            "sts-mismatch.test" => {
                HttpResponse::text(&policy("enforce", "*.provider.test", 604800))
            }
            "sts-testing.test" => {
                HttpResponse::text(&policy("testing", &format!("mx.{domain}"), 3600))
            }
            _ => HttpResponse::text(&policy("enforce", &format!("mx.{domain}"), 604800)),
        };
        let (addr, server) = https_server("127.0.0.80", &cert, vec![(path, response)]).await;
        let mut options = live_options(lab.addr());
        options.fetch.port = addr.port();
        let checker = Checker::new(options).expect("checker");
        let reports = expect(&checker, &[(*domain, *wanted)]).await;
        let report = &reports[0];
        if *domain == "sts-good.test" {
            let policy_codes: Vec<_> = report
                .findings
                .iter()
                .filter(|f| {
                    f.code.as_str().starts_with("mta_sts") || f.code.as_str().starts_with("tls_rpt")
                })
                .collect();
            assert!(policy_codes.is_empty(), "{policy_codes:#?}");
            let fetched = report
                .mta_sts
                .as_ref()
                .and_then(|s| s.policy.as_ref())
                .expect("policy");
            assert_eq!(fetched.max_age, 604800);
            let heads = server.requests();
            assert_eq!(heads.len(), 1, "{heads:?}");
            assert!(
                heads[0].contains("Host: mta-sts.sts-good.test"),
                "{heads:?}"
            );
        }
        drop(server);
    }
    lab.shutdown().await;
}

#[test]
fn the_scenarios_cover_every_finding_code() {
    let covered: BTreeSet<&str> = [DNS_CASES, NS_CASES, SMTP_CASES, POLICY_CASES]
        .iter()
        .flat_map(|t| t.iter())
        .flat_map(|(_, codes)| codes.iter().copied())
        .chain(["outside_zone"]) // offline only: crates/mxroute/tests/check.rs
        .collect();
    let missing: Vec<&str> = FindingCode::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !covered.contains(c))
        .collect();
    assert!(
        missing.is_empty(),
        "finding codes without a producing test: {missing:?}"
    );
    let _ = Arc::new(());
}
