//! The SMTP probe against real servers on loopback: mx-relay lab exchangers with STARTTLS
//! certificates of every kind, a silent one, a closed port, and hand-written misbehaving
//! servers.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mx_check::probe::{ProbeOptions, SmtpProbe, probe_smtp};
use mx_check::tls;
use support::{ExchangerSetup, ExchangerTls, exchanger, test_ca};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const MX: &str = "mx1.example.test";

fn options(port: u16) -> ProbeOptions {
    ProbeOptions {
        port,
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(10),
        helo_name: "check.example.test".into(),
        tls_roots: test_ca().roots(),
    }
}

async fn probe(ip: &str, opts: &ProbeOptions) -> SmtpProbe {
    tokio::time::timeout(
        Duration::from_secs(60),
        probe_smtp(ip.parse().unwrap(), MX, opts),
    )
    .await
    .expect("the probe ends by itself")
}

#[tokio::test]
async fn ca_signed_certificate_for_the_mx_name() {
    let ex = exchanger("127.0.0.1", 0, ExchangerSetup::new(MX)).await;
    // Roots as the binary builds them: system bundle plus a --ca-file with the test CA.
    let dir = tempfile::tempdir().unwrap();
    let roots = tls::roots(Some(&test_ca().write_pem(dir.path()))).unwrap();
    let opts = ProbeOptions {
        tls_roots: Arc::new(roots),
        ..options(ex.port())
    };
    let p = probe("127.0.0.1", &opts).await;
    assert!(p.connected, "{p:?}");
    assert_eq!(p.error, None, "{p:?}");
    assert_eq!(p.banner_code, Some(220));
    assert_eq!(p.banner_host.as_deref(), Some(MX), "{:?}", p.banner);
    assert!(p.ehlo);
    assert!(p.starttls);
    assert!(
        p.extensions.iter().any(|e| e == "STARTTLS"),
        "{:?}",
        p.extensions
    );
    assert!(p.extensions.iter().all(|e| *e == e.to_uppercase()));
    let tls = p.tls.as_ref().expect("TLS attempted");
    assert!(tls.established, "{tls:?}");
    assert_eq!(tls.error, None);
    assert!(tls.trusted, "{tls:?}");
    assert!(tls.name_matches, "{tls:?}");
    assert!(!tls.expired && !tls.not_yet_valid);
    assert_eq!(tls.verify_error, None);
    assert!(
        tls.version
            .as_deref()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{tls:?}"
    );
    assert!(tls.cipher.is_some());
    let cert = tls.certificate.as_ref().expect("certificate");
    assert_eq!(cert.dns_names, vec![MX.to_string()]);
    assert!(cert.subject.contains(MX), "{}", cert.subject);
    assert!(cert.issuer.contains("mxroute test CA"), "{}", cert.issuer);
    assert!(!cert.self_signed);
    assert_eq!(cert.not_after.len(), "2000-01-01T00:00:00Z".len());
    assert!(cert.not_after.ends_with('Z'));
    assert!(cert.days_left > 365);
    // The report is JSON.
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(json["tls"]["trusted"], true);
    ex.stop().await;
}

#[tokio::test]
async fn certificate_for_another_name() {
    let setup = ExchangerSetup::new(MX).tls(ExchangerTls::CaSigned("other.example.test".into()));
    let ex = exchanger("127.0.0.1", 0, setup).await;
    let p = probe("127.0.0.1", &options(ex.port())).await;
    let tls = p.tls.as_ref().expect("TLS attempted");
    assert!(tls.established, "{tls:?}");
    assert!(tls.trusted, "{tls:?}");
    assert!(!tls.name_matches, "{tls:?}");
    let why = tls.verify_error.as_deref().unwrap_or_default();
    assert!(
        why.contains(MX) && why.contains("other.example.test"),
        "{why}"
    );
    ex.stop().await;
}

#[tokio::test]
async fn starttls_not_offered() {
    let setup = ExchangerSetup::new(MX).tls(ExchangerTls::None);
    let ex = exchanger("127.0.0.1", 0, setup).await;
    let p = probe("127.0.0.1", &options(ex.port())).await;
    assert!(p.connected && p.ehlo, "{p:?}");
    assert_eq!(p.error, None);
    assert!(!p.starttls);
    assert!(p.tls.is_none());
    assert!(!p.extensions.is_empty());
    ex.stop().await;
}

#[tokio::test]
async fn silent_server_times_out() {
    let ex = exchanger("127.0.0.1", 0, ExchangerSetup::new(MX).silent()).await;
    let opts = ProbeOptions {
        command_timeout: Duration::from_millis(500),
        ..options(ex.port())
    };
    let start = Instant::now();
    let p = probe("127.0.0.1", &opts).await;
    assert!(p.connected, "{p:?}");
    let error = p.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("timed out") && error.contains("banner"),
        "{error}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(
        p.elapsed_ms >= 400 && p.elapsed_ms < 5000,
        "{}",
        p.elapsed_ms
    );
    assert_eq!(p.banner, None);
    ex.stop().await;
}

#[tokio::test]
async fn nothing_listening() {
    let port = support::closed_port("127.0.0.1");
    let p = probe("127.0.0.1", &options(port)).await;
    assert!(!p.connected);
    assert!(
        p.error.as_deref().unwrap_or_default().contains("refused"),
        "{p:?}"
    );
    assert!(p.tls.is_none());
}

#[tokio::test]
async fn self_signed_certificate() {
    let setup = ExchangerSetup::new(MX).tls(ExchangerTls::SelfSigned(MX.into()));
    let ex = exchanger("127.0.0.1", 0, setup).await;
    let p = probe("127.0.0.1", &options(ex.port())).await;
    let tls = p.tls.as_ref().expect("TLS attempted");
    assert!(tls.established, "{tls:?}");
    assert!(!tls.trusted, "{tls:?}");
    assert!(tls.name_matches);
    assert!(tls.certificate.as_ref().unwrap().self_signed);
    let why = tls.verify_error.as_deref().unwrap_or_default();
    assert!(why.contains("not a trusted CA"), "{why}");
    ex.stop().await;
}

#[tokio::test]
async fn expired_certificate_from_a_trusted_ca() {
    let leaf = test_ca().expired_leaf(&[MX]);
    let ex = exchanger(
        "127.0.0.1",
        0,
        ExchangerSetup::new(MX).tls(ExchangerTls::Leaf(leaf)),
    )
    .await;
    let p = probe("127.0.0.1", &options(ex.port())).await;
    let tls = p.tls.as_ref().expect("TLS attempted");
    assert!(
        tls.established && tls.trusted && tls.name_matches,
        "{tls:?}"
    );
    assert!(tls.expired && !tls.not_yet_valid, "{tls:?}");
    assert!(
        tls.verify_error
            .as_deref()
            .unwrap_or_default()
            .contains("expired")
    );
    let cert = tls.certificate.as_ref().unwrap();
    assert_eq!(cert.not_after, "2021-01-01T00:00:00Z");
    assert!(cert.days_left < 0);
    ex.stop().await;
}

/// Lab exchangers on two loopback addresses share one port, as MX hosts share 25; one of
/// them is silent, and each probe sees only its own.
#[tokio::test]
async fn exchangers_share_a_port() {
    let port = support::shared_port(&["127.0.0.2", "127.0.0.3"]);
    let good = exchanger("127.0.0.2", port, ExchangerSetup::new(MX)).await;
    let mute = exchanger(
        "127.0.0.3",
        port,
        ExchangerSetup::new("mx2.example.test").silent(),
    )
    .await;
    let opts = ProbeOptions {
        command_timeout: Duration::from_millis(500),
        ..options(port)
    };
    let (a, b) = tokio::join!(probe("127.0.0.2", &opts), probe("127.0.0.3", &opts));
    assert_eq!(a.error, None, "{a:?}");
    assert!(a.tls.as_ref().is_some_and(|t| t.trusted && t.name_matches));
    assert!(
        b.error.as_deref().unwrap_or_default().contains("timed out"),
        "{b:?}"
    );
    good.stop().await;
    mute.stop().await;
}

/// A hand-written server: sends `script[0]` at once, then `script[i]` after each thing the
/// client sends (the probe waits for every reply, so one read is one command), then keeps
/// reading until the client goes.
async fn scripted(script: Vec<Vec<u8>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let mut buf = [0u8; 1024];
        for (i, out) in script.iter().enumerate() {
            if i > 0 {
                // Wait for the client's next move (one command, or a TLS ClientHello).
                if !matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    return;
                }
            }
            if s.write_all(out).await.is_err() {
                return;
            }
        }
        while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
    });
    port
}

#[tokio::test]
async fn endless_greeting_line_is_cut_off() {
    let mut flood = b"220 ".to_vec();
    flood.extend(vec![b'x'; 64 * 1024]);
    let port = scripted(vec![flood]).await;
    let p = probe("127.0.0.1", &options(port)).await;
    let error = p.error.as_deref().unwrap_or_default();
    assert!(error.contains("longer than"), "{error}");
}

#[tokio::test]
async fn too_many_reply_lines() {
    let mut ehlo = b"250-mx\r\n".repeat(500);
    ehlo.extend_from_slice(b"250 OK\r\n");
    let port = scripted(vec![b"220 mx1.example.test ESMTP\r\n".to_vec(), ehlo]).await;
    let p = probe("127.0.0.1", &options(port)).await;
    assert_eq!(p.banner_host.as_deref(), Some(MX));
    let error = p.error.as_deref().unwrap_or_default();
    assert!(error.contains("more than 100 lines"), "{error}");
}

#[tokio::test]
async fn helo_fallback_and_odd_greetings() {
    let port = scripted(vec![
        b"220-[192.0.2.1] first line\r\n220 second line\r\n".to_vec(),
        b"502 5.5.1 EHLO not implemented\r\n".to_vec(),
        b"250 hello\r\n".to_vec(),
        b"221 bye\r\n".to_vec(),
    ])
    .await;
    let p = probe("127.0.0.1", &options(port)).await;
    assert_eq!(p.error, None, "{p:?}");
    assert_eq!(
        p.banner.as_deref(),
        Some("[192.0.2.1] first line second line")
    );
    assert_eq!(p.banner_host, None);
    assert!(!p.ehlo && !p.starttls && p.tls.is_none());

    let port = scripted(vec![
        b"421 4.3.2 go away\r\n".to_vec(),
        b"221 bye\r\n".to_vec(),
    ])
    .await;
    let p = probe("127.0.0.1", &options(port)).await;
    assert_eq!(p.banner_code, Some(421));
    assert!(
        p.error.as_deref().unwrap_or_default().contains("421"),
        "{p:?}"
    );

    let port = scripted(vec![b"garbage\r\n".to_vec()]).await;
    let p = probe("127.0.0.1", &options(port)).await;
    assert!(
        p.error.as_deref().unwrap_or_default().contains("malformed"),
        "{p:?}"
    );
}

#[tokio::test]
async fn starttls_refused_or_broken() {
    let port = scripted(vec![
        b"220 mx1.example.test ESMTP\r\n".to_vec(),
        b"250-mx1.example.test\r\n250 STARTTLS\r\n".to_vec(),
        b"454 4.7.0 TLS not available\r\n".to_vec(),
        b"221 bye\r\n".to_vec(),
    ])
    .await;
    let p = probe("127.0.0.1", &options(port)).await;
    assert!(p.starttls);
    let tls = p.tls.as_ref().unwrap();
    assert!(!tls.established);
    assert!(
        tls.error.as_deref().unwrap_or_default().contains("454"),
        "{tls:?}"
    );

    // 220 to STARTTLS, then plain text instead of a handshake.
    let port = scripted(vec![
        b"220 mx1.example.test ESMTP\r\n".to_vec(),
        b"250-mx1.example.test\r\n250 STARTTLS\r\n".to_vec(),
        b"220 go ahead\r\n".to_vec(),
        b"this is not TLS\r\n".to_vec(),
    ])
    .await;
    let p = probe("127.0.0.1", &options(port)).await;
    let tls = p.tls.as_ref().unwrap();
    assert!(!tls.established);
    assert!(
        tls.error
            .as_deref()
            .unwrap_or_default()
            .contains("TLS handshake failed"),
        "{tls:?}"
    );

    // Text right behind the 220 would be taken as if it came over TLS (CVE-2011-0411 style).
    let port = scripted(vec![
        b"220 mx1.example.test ESMTP\r\n".to_vec(),
        b"250-mx1.example.test\r\n250 STARTTLS\r\n".to_vec(),
        b"220 go ahead\r\n250 injected\r\n".to_vec(),
    ])
    .await;
    let p = probe("127.0.0.1", &options(port)).await;
    let tls = p.tls.as_ref().unwrap();
    assert!(!tls.established);
    assert!(
        tls.error
            .as_deref()
            .unwrap_or_default()
            .contains("after its 220"),
        "{tls:?}"
    );
}
