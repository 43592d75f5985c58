//! Dead-primary memory, end to end on loopback: the primary exchanger's address refuses
//! connections (nothing listens there), the backup is a receiving relay. The first message
//! tries the primary, is refused, and goes to the backup; the next one goes straight to the
//! backup without a connect to the primary. A route whose every address is remembered dead
//! is still tried, so the memory alone never keeps mail from going out.
//!
//! Attempts are counted in the process's Prometheus recorder (installed by the receiving
//! relay's metrics endpoint), by exchanger name and outcome.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mx_relay::Relay;

mod mail_lab;
use mail_lab::{config, lab, sample, scrape, shared_port, submit, wait_for};

/// `dead.example`: a refusing primary (127.0.0.3) and a working backup (127.0.0.4).
/// `solo.example`: only the refusing address.
const ZONE: &str = "
dead.example.        MX 10 mx1.dead.example.
dead.example.        MX 20 mx2.dead.example.
mx1.dead.example.    A 127.0.0.3
mx2.dead.example.    A 127.0.0.4
solo.example.        MX 10 mx.solo.example.
mx.solo.example.     A 127.0.0.3
";

/// The backup: takes any mail for dead.example into Maildir, serves metrics.
async fn backup(dir: &Path, port: u16) -> Relay {
    let mut c = config(
        dir,
        "mx2",
        "local_domains = [\"dead.example\"]\ncatch_all_domains = [\"dead.example\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    c.server.listen = vec![format!("127.0.0.4:{port}").parse().unwrap()];
    c.server.trusted_networks = vec![];
    Relay::start(&c).await.unwrap()
}

async fn sender(dir: &Path, dns: SocketAddr, port: u16) -> Relay {
    let mut c = config(
        dir,
        "sender",
        "listen = [\"127.0.0.1:0\"]\n[delivery]\nconnect_timeout_secs = 5\nfirst_retry_secs = 3600\nmax_retry_interval_secs = 3600\n[routing]\ntempfail_ttl = 0\n",
    );
    c.dns.nameservers = vec![dns];
    c.dns.timeout_secs = Some(1.0);
    c.delivery.port = port;
    Relay::start(&c).await.unwrap()
}

async fn attempts(metrics: SocketAddr, exchanger: &str, outcome: &str) -> f64 {
    let series = format!(
        "mxroute_delivery_attempts_total{{exchanger=\"{exchanger}\",outcome=\"{outcome}\"}}"
    );
    let page = tokio::task::spawn_blocking(move || scrape(metrics))
        .await
        .unwrap();
    sample(&page, &series)
}

/// Wait (bounded) until a counter reaches `n`.
async fn wait_attempts(metrics: SocketAddr, exchanger: &str, outcome: &str, n: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let seen = attempts(metrics, exchanger, outcome).await;
        if seen >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{exchanger} {outcome}: {seen} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_message_skips_a_refusing_primary() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    // Nothing listens on 127.0.0.3 at this port: connects there are refused.
    let port = shared_port(&["127.0.0.3", "127.0.0.4"]);
    let mx2 = backup(dir.path(), port).await;
    let metrics = mx2.metrics_addr().unwrap();
    let out = sender(dir.path(), dns.addr(), port).await;
    let a = out.local_addrs()[0];
    let maildir = dir.path().join("mx2/maildir");

    submit(a, "alice@home.example", &["bob@dead.example"], "first").await;
    wait_for(maildir.clone(), "dead.example", "bob", "hello first", 1).await;
    assert_eq!(attempts(metrics, "mx1.dead.example", "next").await, 1.0);

    // The second message goes straight to the backup: no new connect to the primary.
    submit(a, "alice@home.example", &["bob@dead.example"], "second").await;
    wait_for(maildir.clone(), "dead.example", "bob", "hello second", 1).await;
    assert_eq!(attempts(metrics, "mx1.dead.example", "next").await, 1.0);
    assert_eq!(
        attempts(metrics, "mx1.dead.example", "recently_unreachable").await,
        1.0
    );
    assert_eq!(attempts(metrics, "mx2.dead.example", "done").await, 2.0);

    // Every address of solo.example is remembered dead: it is tried all the same (and
    // refused again), never given up on for the memory alone.
    submit(a, "alice@home.example", &["carol@solo.example"], "solo").await;
    wait_attempts(metrics, "mx.solo.example", "next", 1.0).await;
    assert_eq!(
        attempts(metrics, "mx.solo.example", "recently_unreachable").await,
        0.0
    );
    out.shutdown().await;
    mx2.shutdown().await;
}
