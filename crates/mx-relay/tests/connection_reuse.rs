//! Outbound connection reuse and limits, end to end on loopback: a sending relay delivers
//! through the lab DNS to a receiving relay on 127.0.0.2, whose Prometheus endpoint counts
//! the connections it sees.
//!
//! The metrics recorder is global to the process, so both relays count into the same
//! counters: the tests here run one at a time (LOCK), feed the sender over a single SMTP
//! connection, and reason about differences.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mx_lab::{LabDns, ZoneSet};
use mx_relay::Relay;

mod mail_lab;
use mail_lab::{config, sample as value, scrape};

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One exchanger only: a failure cannot hide behind a backup.
const ZONE: &str = "
remote.example.      MX 10 mx1.remote.example.
mx1.remote.example.  A 127.0.0.2
";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The receiving relay, serving metrics (which installs the process's recorder).
async fn exchanger(dir: &Path, port: u16) -> Relay {
    let mut c = config(
        dir,
        "mx1",
        "local_domains = [\"remote.example\"]\ncatch_all_domains = []\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    c.server.listen = vec![format!("127.0.0.2:{port}").parse().unwrap()];
    c.server.trusted_networks = vec![];
    std::fs::create_dir_all(dir.join("mx1")).unwrap();
    let users = dir.join("mx1").join("users");
    std::fs::write(&users, "bob@remote.example\n").unwrap();
    c.server.users_file = Some(users);
    Relay::start(&c).await.unwrap()
}

async fn sender(dir: &Path, dns: SocketAddr, port: u16, delivery: &str) -> Relay {
    let mut c = config(
        dir,
        "sender",
        &format!(
            "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"home.example\"]\ncatch_all_domains = [\"home.example\"]\n[delivery]\nconnect_timeout_secs = 5\n{delivery}\n[routing]\ntempfail_ttl = 0\n"
        ),
    );
    c.dns.nameservers = vec![dns];
    c.dns.timeout_secs = Some(1.0);
    c.delivery.port = port;
    Relay::start(&c).await.unwrap()
}

/// Send `subjects.len()` messages to bob@remote.example over one SMTP connection.
fn send_many(addr: SocketAddr, subjects: &[String]) {
    for done in mail_lab::send_many(
        addr,
        "alice@home.example",
        &["bob@remote.example"],
        subjects,
    ) {
        assert!(done.starts_with("250"), "{done}");
    }
}

fn subjects(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn count_in(root: &Path, needle: &str) -> usize {
    let new = root.join("remote.example").join("bob").join("new");
    std::fs::read_dir(new)
        .map(|e| {
            e.filter(|f| {
                f.as_ref()
                    .ok()
                    .and_then(|f| std::fs::read(f.path()).ok())
                    .is_some_and(|b| String::from_utf8_lossy(&b).contains(needle))
            })
            .count()
        })
        .unwrap_or_default()
}

/// Wait (bounded) for `n` messages containing `needle`.
async fn wait_for(root: PathBuf, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while count_in(&root, needle) < n {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} message(s) with {needle:?}: {} arrived",
            count_in(&root, needle)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn lab() -> LabDns {
    let zones = ZoneSet::parse(ZONE, "<reuse>", None).unwrap();
    LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_messages_share_connections() {
    let _serial = LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let dns = lab().await;
    let port = free_port();
    let mx1 = exchanger(dir.path(), port).await;
    let metrics = mx1.metrics_addr().unwrap();
    let out = sender(dir.path(), dns.addr(), port, "").await;
    let before = tokio::task::spawn_blocking(move || scrape(metrics))
        .await
        .unwrap();
    let a = out.local_addrs()[0];
    tokio::task::spawn_blocking(move || send_many(a, &subjects("reuse", 20)))
        .await
        .unwrap();
    wait_for(dir.path().join("mx1/maildir"), "hello reuse-", 20).await;
    let after = tokio::task::spawn_blocking(move || scrape(metrics))
        .await
        .unwrap();
    // Both relays count into one recorder: one of the new connections is ours to the sender.
    let seen = value(&after, "mxroute_smtp_connections_total")
        - value(&before, "mxroute_smtp_connections_total")
        - 1.0;
    assert!(
        (1.0..20.0).contains(&seen),
        "20 messages over {seen} connection(s)"
    );
    let reused = value(
        &after,
        "mxroute_delivery_connections_total{reused=\"true\"}",
    ) - value(
        &before,
        "mxroute_delivery_connections_total{reused=\"true\"}",
    );
    let fresh = value(
        &after,
        "mxroute_delivery_connections_total{reused=\"false\"}",
    ) - value(
        &before,
        "mxroute_delivery_connections_total{reused=\"false\"}",
    );
    assert_eq!(fresh, seen, "{after}");
    assert_eq!(reused + fresh, 20.0, "{after}");
    out.shutdown().await;
    mx1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_per_destination_carries_everything() {
    let _serial = LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let dns = lab().await;
    let port = free_port();
    // Start (and stop) the exchanger once so the recorder is installed before the sender
    // takes its connection, whose open and close must both be counted.
    exchanger(dir.path(), port).await.shutdown().await;
    let out = sender(
        dir.path(),
        dns.addr(),
        port,
        "first_retry_secs = 1\nmax_retry_interval_secs = 1\nmax_connections_per_destination = 1",
    )
    .await;
    // The exchanger is down while the messages come in: they are all deferred, and all
    // due again together once it is back.
    let a = out.local_addrs()[0];
    tokio::task::spawn_blocking(move || send_many(a, &subjects("limit", 10)))
        .await
        .unwrap();
    let mx1 = exchanger(dir.path(), port).await;
    let metrics = mx1.metrics_addr().unwrap();
    // Our connection to the sender is closed once its session has seen the QUIT.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = value(
        &tokio::task::spawn_blocking(move || scrape(metrics))
            .await
            .unwrap(),
        "mxroute_smtp_connections_active",
    );
    // Sampled from a thread of its own: scraping is blocking I/O.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut peak: f64 = 0.0;
            while !stop.load(Ordering::Relaxed) {
                let active = value(&scrape(metrics), "mxroute_smtp_connections_active");
                peak = peak.max(active - baseline);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        })
    };
    wait_for(dir.path().join("mx1/maildir"), "hello limit-", 10).await;
    stop.store(true, Ordering::Relaxed);
    let peak = tokio::task::spawn_blocking(move || sampler.join().unwrap())
        .await
        .unwrap();
    assert!(peak <= 1.0, "{peak} connections at once");
    out.shutdown().await;
    mx1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_connection_to_a_restarted_server_is_replaced() {
    let _serial = LOCK.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let dns = lab().await;
    let port = free_port();
    let mx1 = exchanger(dir.path(), port).await;
    // A deferral would wait an hour: arrival within the test's wait means none happened.
    let out = sender(
        dir.path(),
        dns.addr(),
        port,
        "first_retry_secs = 3600\nmax_retry_interval_secs = 3600\nidle_connection_secs = 60",
    )
    .await;
    let a = out.local_addrs()[0];
    tokio::task::spawn_blocking(move || send_many(a, &subjects("before", 1)))
        .await
        .unwrap();
    wait_for(dir.path().join("mx1/maildir"), "hello before-", 1).await;
    // The server goes away and comes back while the sender holds its session idle.
    mx1.shutdown().await;
    let mx1 = exchanger(dir.path(), port).await;
    tokio::task::spawn_blocking(move || send_many(a, &subjects("after", 1)))
        .await
        .unwrap();
    wait_for(dir.path().join("mx1/maildir"), "hello after-", 1).await;
    out.shutdown().await;
    mx1.shutdown().await;
}
