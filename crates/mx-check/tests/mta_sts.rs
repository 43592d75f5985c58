//! MTA-STS and TLS-RPT: record and policy parsing, MX pattern matching, and the policy
//! fetch against a local HTTPS server with a test-CA certificate.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use mx_check::mta_sts::{
    FetchOptions, StsMode, fetch_policy, mx_matches, parse_policy, parse_sts_record,
    parse_tlsrpt_record,
};
use support::{HttpResponse, https_server, test_ca};

const PATH: &str = "/.well-known/mta-sts.txt";
const POLICY: &str = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.test\r\nmx: *.example.net\r\nmax_age: 604800\r\n";

#[test]
fn sts_records() {
    assert_eq!(
        parse_sts_record("v=STSv1; id=20240101;").unwrap().id,
        "20240101"
    );
    assert_eq!(
        parse_sts_record("v=STSv1;id=abcXYZ09").unwrap().id,
        "abcXYZ09"
    );
    assert_eq!(
        parse_sts_record("v=STSv1; id=1; ext=whatever").unwrap().id,
        "1"
    );
    let err = |t: &str| parse_sts_record(t).unwrap_err();
    assert!(err("id=1; v=STSv1").contains("v=STSv1"));
    assert!(err("v=STSv2; id=1").contains("v=STSv1"));
    assert!(err("").contains("v=STSv1"));
    assert!(err("v=STSv1;").contains("no id"));
    assert!(err("v=STSv1; id=").contains("1 to 32"));
    assert!(err("v=STSv1; id=2024-01-01").contains("1 to 32"));
    assert!(err(&format!("v=STSv1; id={}", "a".repeat(33))).contains("1 to 32"));
    assert!(err("v=STSv1; id=1; id=2").contains("more than once"));
    assert!(err("v=STSv1; junk").contains("name=value"));
}

#[test]
fn policies() {
    let p = parse_policy(POLICY).unwrap();
    assert_eq!(p.mode, StsMode::Enforce);
    assert_eq!(p.mx, vec!["mx1.example.test", "*.example.net"]);
    assert_eq!(p.max_age, 604_800);
    // LF lines, no trailing newline, unknown keys, mode none without mx.
    let p = parse_policy("version: STSv1\nmode: none\nmax_age: 0\nfuture: yes").unwrap();
    assert_eq!(p.mode, StsMode::None);
    assert!(p.mx.is_empty());
    let p = parse_policy("version:STSv1\nmode:testing\nmx:MX.Example.Test.\nmax_age:31557600\n")
        .unwrap();
    assert_eq!(p.mode, StsMode::Testing);
    assert_eq!(p.mx, vec!["mx.example.test"]);
    assert_eq!(
        serde_json::to_value(&p).unwrap()["mode"],
        serde_json::json!("testing")
    );

    let err = |t: &str| parse_policy(t).unwrap_err();
    assert!(err("mode: enforce\nmx: a.test\nmax_age: 1\n").contains("version"));
    assert!(err("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n").contains("STSv2"));
    assert!(err("version: STSv1\nmx: a.test\nmax_age: 1\n").contains("no mode"));
    assert!(err("version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n").contains("strict"));
    assert!(err("version: STSv1\nmode: enforce\nmx: a.test\n").contains("no max_age"));
    assert!(
        err("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: 31557601\n").contains("max_age")
    );
    assert!(err("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: -1\n").contains("max_age"));
    assert!(err("version: STSv1\nmode: enforce\nmx: a.test\nmax_age: soon\n").contains("max_age"));
    assert!(err("version: STSv1\nmode: enforce\nmax_age: 1\n").contains("no mx"));
    assert!(err("version: STSv1\nmode: testing\nmax_age: 1\n").contains("no mx"));
    assert!(err("version: STSv1\nmode: enforce\nmx: bad host\nmax_age: 1\n").contains("mx"));
    assert!(err("version: STSv1\nthis line has no colon\n").contains("line 2"));
    assert!(err("<html>not found</html>").contains("key: value"));
}

#[test]
fn mx_patterns() {
    assert!(mx_matches("mx1.example.com", "mx1.example.com"));
    assert!(mx_matches("MX1.example.COM", "mx1.EXAMPLE.com."));
    assert!(!mx_matches("mx1.example.com", "mx2.example.com"));
    assert!(mx_matches("*.example.com", "mx.example.com"));
    assert!(mx_matches("*.example.com.", "MX.Example.Com"));
    assert!(!mx_matches("*.example.com", "example.com"));
    assert!(!mx_matches("*.example.com", "a.b.example.com"));
    assert!(!mx_matches("*.example.com", ".example.com"));
    assert!(!mx_matches("*.example.com", "mx.example.org"));
    assert!(!mx_matches("mx.*.example.com", "mx.a.example.com"));
    assert!(!mx_matches("", "mx.example.com"));
}

#[test]
fn tlsrpt_records() {
    let r = parse_tlsrpt_record("v=TLSRPTv1; rua=mailto:tls@example.com,https://r.example.com/tls")
        .unwrap();
    assert_eq!(
        r.rua,
        vec!["mailto:tls@example.com", "https://r.example.com/tls"]
    );
    let r = parse_tlsrpt_record("v=TLSRPTv1;rua=mailto:a@b.test;").unwrap();
    assert_eq!(r.rua, vec!["mailto:a@b.test"]);
    let err = |t: &str| parse_tlsrpt_record(t).unwrap_err();
    assert!(err("rua=mailto:a@b.test; v=TLSRPTv1").contains("v=TLSRPTv1"));
    assert!(err("v=TLSRPTv2; rua=mailto:a@b.test").contains("v=TLSRPTv1"));
    assert!(err("v=TLSRPTv1").contains("no rua"));
    assert!(err("v=TLSRPTv1; rua=http://r.example.com").contains("http://r.example.com"));
    assert!(err("v=TLSRPTv1; rua=mailto:a@b.test,ftp://x").contains("ftp://x"));
    assert!(err("v=TLSRPTv1; rua=mailto:").contains("mailto:"));
    assert!(err("v=TLSRPTv1; rua=").contains("rua"));
}

/// A policy server for mta-sts.example.test on `ip` with `routes`; the fetch options trust
/// the test CA and point at its port.
async fn server(
    ip: &str,
    names: &[&str],
    routes: Vec<(&str, HttpResponse)>,
) -> (Vec<IpAddr>, FetchOptions, support::HttpsServer) {
    let leaf = test_ca().leaf(names);
    let (addr, server) = https_server(ip, &leaf, routes).await;
    let opts = FetchOptions {
        port: addr.port(),
        timeout: Duration::from_secs(10),
        tls_roots: test_ca().roots(),
    };
    (vec![addr.ip()], opts, server)
}

const NAME: &[&str] = &["mta-sts.example.test"];

#[tokio::test]
async fn fetch_good_policy() {
    let (ips, opts, server) =
        server("127.0.0.5", NAME, vec![(PATH, HttpResponse::text(POLICY))]).await;
    let body = fetch_policy("example.test", &ips, &opts).await.unwrap();
    assert_eq!(body, POLICY);
    assert_eq!(parse_policy(&body).unwrap().mode, StsMode::Enforce);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].starts_with("GET /.well-known/mta-sts.txt HTTP/1.1\r\n"));
    assert!(
        requests[0].contains("Host: mta-sts.example.test\r\n"),
        "{}",
        requests[0]
    );
    assert!(requests[0].contains("Connection: close\r\n"));
}

#[tokio::test]
async fn fetch_chunked_policy() {
    let (ips, opts, _server) = server(
        "127.0.0.5",
        NAME,
        vec![(PATH, HttpResponse::text(POLICY).chunked())],
    )
    .await;
    assert_eq!(
        fetch_policy("example.test.", &ips, &opts).await.unwrap(),
        POLICY
    );
}

#[tokio::test]
async fn fetch_not_found() {
    let (ips, opts, _server) = server("127.0.0.5", NAME, vec![]).await;
    assert_eq!(
        fetch_policy("example.test", &ips, &opts).await.unwrap_err(),
        "HTTP 404"
    );
}

#[tokio::test]
async fn fetch_wrong_content_type() {
    let (ips, opts, _server) =
        server("127.0.0.5", NAME, vec![(PATH, HttpResponse::html(POLICY))]).await;
    assert_eq!(
        fetch_policy("example.test", &ips, &opts).await.unwrap_err(),
        "content-type text/html, expected text/plain"
    );
}

#[tokio::test]
async fn fetch_redirect_is_not_followed() {
    let to = "https://elsewhere.example.test/mta-sts.txt";
    let (ips, opts, server) = server(
        "127.0.0.5",
        NAME,
        vec![
            (PATH, HttpResponse::redirect(to)),
            ("/mta-sts.txt", HttpResponse::text(POLICY)),
        ],
    )
    .await;
    let err = fetch_policy("example.test", &ips, &opts).await.unwrap_err();
    assert!(
        err.contains("HTTP 301") && err.contains(to) && err.contains("redirect"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn fetch_certificate_for_another_name() {
    let (ips, opts, server) = server(
        "127.0.0.5",
        &["mta-sts.other.test"],
        vec![(PATH, HttpResponse::text(POLICY))],
    )
    .await;
    let err = fetch_policy("example.test", &ips, &opts).await.unwrap_err();
    assert!(
        err.starts_with("certificate not valid for mta-sts.example.test: "),
        "{err}"
    );
    assert!(err.contains("mta-sts.other.test"), "{err}");
    assert!(
        server.requests().is_empty(),
        "no request after a failed verification"
    );
}

#[tokio::test]
async fn fetch_untrusted_certificate() {
    let leaf = support::self_signed(NAME);
    let (addr, _server) =
        https_server("127.0.0.5", &leaf, vec![(PATH, HttpResponse::text(POLICY))]).await;
    let opts = FetchOptions {
        port: addr.port(),
        timeout: Duration::from_secs(10),
        tls_roots: test_ca().roots(),
    };
    let err = fetch_policy("example.test", &[addr.ip()], &opts)
        .await
        .unwrap_err();
    assert!(
        err.starts_with("certificate not valid for mta-sts.example.test: "),
        "{err}"
    );
    assert!(err.contains("not a trusted CA"), "{err}");
}

#[tokio::test]
async fn fetch_tries_the_next_address_when_one_is_closed() {
    let (ips, opts, _server) =
        server("127.0.0.5", NAME, vec![(PATH, HttpResponse::text(POLICY))]).await;
    // Nothing listens on 127.0.0.6 at the server's port (it is bound on 127.0.0.5 only).
    let both = vec!["127.0.0.6".parse().unwrap(), ips[0]];
    assert_eq!(
        fetch_policy("example.test", &both, &opts).await.unwrap(),
        POLICY
    );
    let err = fetch_policy("example.test", &both[..1], &opts)
        .await
        .unwrap_err();
    assert!(err.contains("refused"), "{err}");
    let err = fetch_policy("example.test", &[], &opts).await.unwrap_err();
    assert_eq!(err, "no address for mta-sts.example.test");
}
