//! Delivery over MX routes, end to end on loopback: a sending relay resolves through the lab
//! DNS server and delivers to receiving relays (the exchangers) on 127.0.0.2 and 127.0.0.3,
//! which share one port as real MX hosts share port 25.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use mx_relay::Relay;

mod mail_lab;
use mail_lab::{config, lab, mail_in, submit, wait_for};

fn shared_port() -> u16 {
    mail_lab::shared_port(&["127.0.0.2", "127.0.0.3"])
}

const ZONE: &str = "
remote.example.      MX 10 mx1.remote.example.
remote.example.      MX 20 mx2.remote.example.
mx1.remote.example.  A 127.0.0.2
mx2.remote.example.  A 127.0.0.3
nullmx.example.      MX 0 .
flaky.example.       MX 10 mx1.remote.example.
shared.example.      MX 10 mx1.remote.example.
";

async fn exchanger(dir: &Path, name: &str, ip: &str, port: u16) -> Relay {
    let mut c = config(
        dir,
        name,
        "local_domains = [\"remote.example\"]\ncatch_all_domains = []\n",
    );
    c.server.listen = vec![format!("{ip}:{port}").parse().unwrap()];
    c.server.trusted_networks = vec![];
    std::fs::create_dir_all(dir.join(name)).unwrap();
    let users = dir.join(name).join("users");
    std::fs::write(&users, "bob@remote.example\ncarol@remote.example\n").unwrap();
    c.server.users_file = Some(users);
    Relay::start(&c).await.unwrap()
}

async fn sender(dir: &Path, dns: SocketAddr, port: u16) -> Relay {
    let mut c = config(
        dir,
        "sender",
        "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"home.example\"]\ncatch_all_domains = [\"home.example\"]\n[delivery]\nfirst_retry_secs = 1\nmax_retry_interval_secs = 1\nconnect_timeout_secs = 5\n[routing]\n# A DNS failure is not cached here, so the retry after recovery is seen at once.\ntempfail_ttl = 0\n",
    );
    c.dns.nameservers = vec![dns];
    c.dns.timeout_secs = Some(1.0);
    c.delivery.port = port;
    Relay::start(&c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_goes_to_the_primary_and_to_the_backup_when_the_primary_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    let port = shared_port();
    let mx1 = exchanger(dir.path(), "mx1", "127.0.0.2", port).await;
    let mx2 = exchanger(dir.path(), "mx2", "127.0.0.3", port).await;
    let out = sender(dir.path(), dns.addr(), port).await;
    let a = out.local_addrs()[0];
    submit(a, "alice@home.example", &["bob@remote.example"], "first").await;
    let got = wait_for(
        dir.path().join("mx1/maildir"),
        "remote.example",
        "bob",
        "hello first",
        1,
    )
    .await;
    assert!(
        got[0].contains("by sender.test (mxroute)"),
        "the sender's Received header travels: {}",
        got[0]
    );
    assert!(mail_in(&dir.path().join("mx2/maildir"), "remote.example", "bob").is_empty());

    // The primary goes away: the next message goes to the backup in the same run.
    mx1.shutdown().await;
    submit(a, "alice@home.example", &["bob@remote.example"], "second").await;
    wait_for(
        dir.path().join("mx2/maildir"),
        "remote.example",
        "bob",
        "hello second",
        1,
    )
    .await;
    out.shutdown().await;
    mx2.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_recipient_replies_and_bounces_to_the_sender() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    let port = shared_port();
    let mx1 = exchanger(dir.path(), "mx1", "127.0.0.2", port).await;
    let out = sender(dir.path(), dns.addr(), port).await;
    let a = out.local_addrs()[0];
    // bob exists at the exchanger, nobody does not: one delivered, one bounced.
    submit(
        a,
        "alice@home.example",
        &["bob@remote.example", "nobody@remote.example"],
        "mixed",
    )
    .await;
    wait_for(
        dir.path().join("mx1/maildir"),
        "remote.example",
        "bob",
        "hello mixed",
        1,
    )
    .await;
    // The bounce comes back to alice, who is local to the sender.
    let bounce = wait_for(
        dir.path().join("sender/maildir"),
        "home.example",
        "alice",
        "nobody@remote.example",
        1,
    )
    .await;
    let b = &bounce[0];
    assert!(
        b.contains("Return-Path: <>"),
        "a bounce is sent with the null sender: {b}"
    );
    assert!(
        b.contains("multipart/report; report-type=delivery-status"),
        "{b}"
    );
    assert!(b.contains("Action: failed"), "{b}");
    assert!(b.contains("Status: 5.1.1"), "{b}");
    assert!(
        b.contains("Subject: mixed"),
        "the original headers are returned: {b}"
    );
    assert!(
        !b.contains("bob@remote.example\r\nAction"),
        "bob was delivered: {b}"
    );
    out.shutdown().await;
    mx1.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_route_statuses_bounce_at_once_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    let port = shared_port();
    let out = sender(dir.path(), dns.addr(), port).await;
    let a = out.local_addrs()[0];
    submit(
        a,
        "alice@home.example",
        &["x@nullmx.example", "y@nosuch.example"],
        "doomed",
    )
    .await;
    let bounces = wait_for(
        dir.path().join("sender/maildir"),
        "home.example",
        "alice",
        "Subject: doomed",
        1,
    )
    .await;
    let b = bounces.join("\n");
    assert!(b.contains("Status: 5.1.10"), "null MX: {b}");
    assert!(b.contains("Status: 5.1.2"), "no such domain: {b}");
    out.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_failure_defers_and_delivery_follows_recovery_and_null_sender_never_bounces() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(&format!("{ZONE}$FAULT flaky.example. servfail\n")).await;
    let port = shared_port();
    let mx1 = exchanger(dir.path(), "mx1", "127.0.0.2", port).await;
    let out = sender(dir.path(), dns.addr(), port).await;
    let a = out.local_addrs()[0];
    // flaky.example's exchanger is mx1, which is not a relay for that domain: once DNS
    // answers, mx1 refuses with 554 5.7.1 and the sender gets a bounce.
    submit(a, "alice@home.example", &["bob@flaky.example"], "later").await;
    // While DNS fails, the message waits: no bounce.
    let spool = dir.path().join("sender/spool/queue");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state = std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().ends_with(".state"));
        if let Some(state) = state {
            let text = std::fs::read_to_string(state.path()).unwrap();
            assert!(text.contains("deferred"), "{text}");
            assert!(text.contains("4.4.3"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "never deferred");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(mail_in(&dir.path().join("sender/maildir"), "home.example", "alice").is_empty());
    // DNS recovers: the retry reaches mx1, which refuses the unknown domain with 550, and the
    // bounce comes back, proving the message was retried rather than dropped.
    dns.faults().clear("flaky.example.", None);
    let bounce = wait_for(
        dir.path().join("sender/maildir"),
        "home.example",
        "alice",
        "bob@flaky.example",
        1,
    )
    .await;
    assert!(bounce[0].contains("Status: 5."), "{}", bounce[0]);

    // A message from the null sender that fails makes no bounce.
    submit(a, "", &["z@nullmx.example"], "null").await;
    let queue = spool.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&queue).unwrap().count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the null-sender message never left the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = mail_in(&dir.path().join("sender/maildir"), "home.example", "alice");
    assert!(
        !all.iter().any(|m| m.contains("Subject: null")),
        "a bounce for the null sender was made"
    );
    out.shutdown().await;
    mx1.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_domain_on_the_same_exchanger_asks_dns_for_its_mx_only() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    let port = shared_port();
    let mx1 = exchanger(dir.path(), "mx1", "127.0.0.2", port).await;
    let out = sender(dir.path(), dns.addr(), port).await;
    let a = out.local_addrs()[0];
    submit(a, "alice@home.example", &["bob@remote.example"], "first").await;
    wait_for(
        dir.path().join("mx1/maildir"),
        "remote.example",
        "bob",
        "hello first",
        1,
    )
    .await;
    // mx1 is no relay for shared.example: its 554 comes back as a bounce, which shows the
    // route was resolved and used.
    submit(a, "alice@home.example", &["x@shared.example"], "second").await;
    wait_for(
        dir.path().join("sender/maildir"),
        "home.example",
        "alice",
        "Subject: second",
        1,
    )
    .await;
    assert_eq!(dns.query_count("shared.example", "MX"), 1);
    assert_eq!(
        dns.query_count("mx1.remote.example", "A"),
        1,
        "the relay asked again for the address of an exchanger it had just looked up"
    );
    out.shutdown().await;
    mx1.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_as_best_mx_bounce_with_5_4_6() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    let port = shared_port();
    let mut c = config(
        dir.path(),
        "sender",
        "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"home.example\"]\ncatch_all_domains = [\"home.example\"]\n[routing]\nlocal_names = [\"mx1.remote.example\"]\n",
    );
    c.dns.nameservers = vec![dns.addr()];
    c.delivery.port = port;
    let out = Relay::start(&c).await.unwrap();
    let a = out.local_addrs()[0];
    submit(a, "alice@home.example", &["bob@remote.example"], "loop").await;
    let b = wait_for(
        dir.path().join("sender/maildir"),
        "home.example",
        "alice",
        "Subject: loop",
        1,
    )
    .await;
    assert!(b[0].contains("Status: 5.4.6"), "{}", b[0]);
    out.shutdown().await;
    dns.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_until_the_queue_lifetime_ends_gives_exactly_one_dsn() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(&format!("{ZONE}$FAULT flaky.example. servfail\n")).await;
    let port = shared_port();
    let mut c = config(
        dir.path(),
        "sender",
        "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"home.example\"]\ncatch_all_domains = [\"home.example\"]\n[delivery]\nfirst_retry_secs = 1\nmax_retry_interval_secs = 1\nqueue_lifetime_secs = 3\n[routing]\ntempfail_ttl = 0\n",
    );
    c.dns.nameservers = vec![dns.addr()];
    c.dns.timeout_secs = Some(1.0);
    c.delivery.port = port;
    let out = Relay::start(&c).await.unwrap();
    let a = out.local_addrs()[0];
    submit(a, "alice@home.example", &["bob@flaky.example"], "expiring").await;
    let b = wait_for(
        dir.path().join("sender/maildir"),
        "home.example",
        "alice",
        "Subject: expiring",
        1,
    )
    .await;
    assert!(b[0].contains("Action: failed"), "{}", b[0]);
    assert!(b[0].contains("4.4.7") || b[0].contains("4.4.3"), "{}", b[0]);
    // The queue empties, and no second notice follows.
    let queue = dir.path().join("sender/spool/queue");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&queue).unwrap().count() > 0 {
        assert!(
            Instant::now() < deadline,
            "the expired message never left the queue"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dsns: Vec<String> = mail_in(&dir.path().join("sender/maildir"), "home.example", "alice")
        .into_iter()
        .filter(|m| m.contains("Subject: expiring"))
        .collect();
    assert_eq!(dsns.len(), 1, "exactly one DSN");
    out.shutdown().await;
    dns.shutdown().await;
}

/// Send many messages over one connection (one transaction each).
fn send_many(addr: SocketAddr, rcpt: &str, n: usize) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut reply = || loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line.len() < 4 || line.as_bytes()[3] == b' ' {
            return line;
        }
    };
    assert!(reply().starts_with("220"));
    w.write_all(b"EHLO many.test\r\n").unwrap();
    assert!(reply().starts_with("250"));
    for i in 0..n {
        // Pipelined, as a real bulk sender does.
        w.write_all(
            format!("MAIL FROM:<alice@home.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n").as_bytes(),
        )
        .unwrap();
        for expect in ["250", "250", "354"] {
            let got = reply();
            assert!(got.starts_with(expect), "message {i}: {got}");
        }
        w.write_all(format!("Subject: split {i}\r\n\r\nn {i}\r\n.\r\n").as_bytes())
            .unwrap();
        let got = reply();
        assert!(got.starts_with("250"), "message {i}: {got}");
    }
    w.write_all(b"QUIT\r\n").unwrap();
}

fn count(root: &Path, domain: &str, mailbox: &str) -> usize {
    std::fs::read_dir(root.join(domain).join(mailbox).join("new"))
        .map(|e| e.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_6_equal_preference_exchangers_share_the_load() {
    const N: usize = 2000;
    let dir = tempfile::tempdir().unwrap();
    let dns = lab("balanced.example. MX 10 a.balanced.example.\nbalanced.example. MX 10 b.balanced.example.\na.balanced.example. A 127.0.0.2\nb.balanced.example. A 127.0.0.3\n").await;
    let port = shared_port();
    let mut relays = Vec::new();
    for (name, ip) in [("mxa", "127.0.0.2"), ("mxb", "127.0.0.3")] {
        let mut c = config(
            dir.path(),
            name,
            "local_domains = [\"balanced.example\"]\ncatch_all_domains = [\"balanced.example\"]\n",
        );
        c.server.listen = vec![format!("{ip}:{port}").parse().unwrap()];
        relays.push(Relay::start(&c).await.unwrap());
    }
    // A fixed seed makes the k-th route computed always get the k-th shuffle, so the split
    // is the same on every run: the bound below cannot flake.
    let mut c = config(
        dir.path(),
        "sender",
        "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"home.example\"]\n[routing]\nshuffle_seed = 5321\n",
    );
    c.dns.nameservers = vec![dns.addr()];
    c.delivery.port = port;
    let out = Relay::start(&c).await.unwrap();
    let a = out.local_addrs()[0];
    let started = Instant::now();
    tokio::task::spawn_blocking(move || send_many(a, "user@balanced.example", N))
        .await
        .unwrap();
    let (ra, rb) = (
        dir.path().join("mxa/maildir"),
        dir.path().join("mxb/maildir"),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let (na, nb) = loop {
        let (na, nb) = (
            count(&ra, "balanced.example", "user"),
            count(&rb, "balanced.example", "user"),
        );
        if na + nb >= N {
            break (na, nb);
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {N} delivered",
            na + nb
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!(
        "{N} messages in {:.1} s: a {na} ({:.1}%), b {nb} ({:.1}%)",
        started.elapsed().as_secs_f64(),
        100.0 * na as f64 / N as f64,
        100.0 * nb as f64 / N as f64
    );
    assert_eq!(na + nb, N, "a message was delivered twice");
    // Binomial(400, 1/2) has a standard deviation of 10: 40-60% is 4 of them.
    assert!(
        (N * 40 / 100..=N * 60 / 100).contains(&na),
        "a {na}, b {nb}"
    );
    out.shutdown().await;
    for r in relays {
        r.shutdown().await;
    }
    dns.shutdown().await;
}

/// A misbehaving primary exchanger: answers EHLO, then does `after_mail` (a 421, or silence
/// after the final dot). Real SMTP bytes over loopback; no real MTA can be told to do this.
fn misbehaving_primary(port: u16, fail_at_mail: bool) -> std::thread::JoinHandle<()> {
    let listener = TcpListener::bind(("127.0.0.2", port)).unwrap();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut w = stream;
        let _ = w.write_all(b"220 primary.test ESMTP\r\n");
        let mut line = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let cmd = line.to_ascii_uppercase();
            let reply: &[u8] = if cmd.starts_with("EHLO") {
                b"250 primary.test\r\n"
            } else if cmd.starts_with("MAIL") && fail_at_mail {
                let _ = w.write_all(b"421 4.3.2 Going down now\r\n");
                return;
            } else if cmd.starts_with("MAIL") || cmd.starts_with("RCPT") {
                b"250 2.0.0 ok\r\n"
            } else if cmd.starts_with("DATA") {
                let _ = w.write_all(b"354 go on\r\n");
                // Read the data to its end, then say nothing at all.
                loop {
                    line.clear();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_secs(5));
                return;
            } else {
                b"250 2.0.0 ok\r\n"
            };
            if w.write_all(reply).is_err() {
                return;
            }
        }
    })
}

async fn backup_takes_over(fail_at_mail: bool, subject: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    let port = shared_port();
    let primary = misbehaving_primary(port, fail_at_mail);
    let mx2 = exchanger(dir.path(), "mx2", "127.0.0.3", port).await;
    let mut c = config(
        dir.path(),
        "sender",
        "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"home.example\"]\n[delivery]\ndata_end_timeout_secs = 1\nstarttls = \"never\"\n",
    );
    c.dns.nameservers = vec![dns.addr()];
    c.delivery.port = port;
    let out = Relay::start(&c).await.unwrap();
    let a = out.local_addrs()[0];
    submit(a, "alice@home.example", &["bob@remote.example"], subject).await;
    // In the same run, well before any retry (300 s by default), the backup has it.
    let started = Instant::now();
    wait_for(
        dir.path().join("mx2/maildir"),
        "remote.example",
        "bob",
        &format!("hello {subject}"),
        1,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(60));
    out.shutdown().await;
    mx2.shutdown().await;
    dns.shutdown().await;
    let _ = primary.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_421_from_the_primary_moves_to_the_backup_in_the_same_run() {
    backup_takes_over(true, "after421").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reply_after_the_final_dot_moves_to_the_backup() {
    backup_takes_over(false, "silentdot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_transaction_250_450_550_delivers_retries_and_bounces_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab(ZONE).await;
    let port = shared_port();
    let mut c = config(
        dir.path(),
        "mx1",
        "local_domains = [\"remote.example\"]\ncatch_all_domains = [\"remote.example\"]\n",
    );
    c.server.listen = vec![format!("127.0.0.2:{port}").parse().unwrap()];
    c.server.trusted_networks = vec![];
    let mx1 = Relay::start(&c).await.unwrap();
    mx1.faults().set_recipient(
        "carol@remote.example",
        450,
        "4.2.1",
        "Mailbox busy, try later",
    );
    mx1.faults()
        .set_recipient("dave@remote.example", 550, "5.1.1", "No such user");
    let out = sender(dir.path(), dns.addr(), port).await;
    let a = out.local_addrs()[0];
    submit(
        a,
        "alice@home.example",
        &[
            "bob@remote.example",
            "carol@remote.example",
            "dave@remote.example",
        ],
        "trio",
    )
    .await;
    let mx1_mail = dir.path().join("mx1/maildir");
    wait_for(mx1_mail.clone(), "remote.example", "bob", "hello trio", 1).await;
    let bounce = wait_for(
        dir.path().join("sender/maildir"),
        "home.example",
        "alice",
        "Subject: trio",
        1,
    )
    .await;
    assert!(bounce[0].contains("dave@remote.example"), "{}", bounce[0]);
    assert!(bounce[0].contains("Status: 5.1.1"), "{}", bounce[0]);
    assert!(
        !bounce[0].contains("Final-Recipient: rfc822; carol"),
        "carol is only deferred: {}",
        bounce[0]
    );
    assert!(mail_in(&mx1_mail, "remote.example", "carol").is_empty());
    // Carol's mailbox frees up: the retry delivers to her alone.
    mx1.faults().clear();
    wait_for(mx1_mail.clone(), "remote.example", "carol", "hello trio", 1).await;
    let queue = dir.path().join("sender/spool/queue");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&queue).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "the message stayed queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        mail_in(&mx1_mail, "remote.example", "bob").len(),
        1,
        "bob got a duplicate"
    );
    assert_eq!(mail_in(&mx1_mail, "remote.example", "carol").len(), 1);
    assert!(mail_in(&mx1_mail, "remote.example", "dave").is_empty());
    let bounces = mail_in(&dir.path().join("sender/maildir"), "home.example", "alice");
    assert_eq!(bounces.len(), 1, "exactly one bounce");
    out.shutdown().await;
    mx1.shutdown().await;
    dns.shutdown().await;
}
