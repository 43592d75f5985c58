//! The optional "delayed" notice (RFC 3464, action `delayed`), end to end on loopback: a
//! sending relay whose destination's DNS fails (servfail, so every run defers) sends the
//! sender one delay notice once the message has waited `delay_warning_secs`, and no more.
//! The sender's domain is local and catch-all, so notices land in its Maildir.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mx_lab::LabDns;
use mx_relay::Relay;

mod mail_lab;
use mail_lab::{config, send};

const ZONE: &str = "
remote.example.      MX 10 mx1.remote.example.
mx1.remote.example.  A 127.0.0.2
flaky.example.       MX 10 mx1.remote.example.
$FAULT flaky.example. servfail
";

async fn sender(dir: &Path, dns: SocketAddr, delay_warning_secs: u64) -> Relay {
    let mut c = config(
        dir,
        "sender",
        &format!(
            "listen = [\"127.0.0.1:0\"]\nlocal_domains = [\"home.example\"]\ncatch_all_domains = [\"home.example\"]\n[delivery]\nfirst_retry_secs = 1\nmax_retry_interval_secs = 1\nconnect_timeout_secs = 5\ndelay_warning_secs = {delay_warning_secs}\n[routing]\ntempfail_ttl = 0\n"
        ),
    );
    c.dns.nameservers = vec![dns];
    c.dns.timeout_secs = Some(1.0);
    Relay::start(&c).await.unwrap()
}

/// Every message in the catch-all domain's Maildirs (any mailbox).
fn all_mail(root: &Path, domain: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(boxes) = std::fs::read_dir(root.join(domain)) else {
        return out;
    };
    for mailbox in boxes.flatten() {
        if let Ok(files) = std::fs::read_dir(mailbox.path().join("new")) {
            for f in files.flatten() {
                out.push(String::from_utf8_lossy(&std::fs::read(f.path()).unwrap()).into_owned());
            }
        }
    }
    out
}

fn notices(root: &Path) -> Vec<String> {
    all_mail(root, "home.example")
        .into_iter()
        .filter(|m| m.contains("Subject: Delayed Mail"))
        .collect()
}

/// The original message's state file in the sender's queue, if it is still queued.
fn states(queue: &Path) -> Vec<String> {
    std::fs::read_dir(queue)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".state"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The message-level run count in a state file (`],"attempts":N` follows the recipients).
fn runs_in(state: &str) -> u32 {
    state
        .split_once(r#"],"attempts":"#)
        .map(|(_, rest)| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Wait until the queued message has been tried at least `runs` times (by its state file).
async fn wait_runs(queue: PathBuf, runs: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for text in states(&queue) {
            if runs_in(&text) >= runs {
                return text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the message was never tried {runs} times"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn lab() -> LabDns {
    mail_lab::lab(ZONE).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_delay_notice_while_the_message_stays_queued() {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab().await;
    let out = sender(dir.path(), dns.addr(), 2).await;
    let a = out.local_addrs()[0];
    let reply = tokio::task::spawn_blocking(move || {
        send(a, "alice@home.example", &["bob@flaky.example"], "waiting")
    })
    .await
    .unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    let maildir = dir.path().join("sender/maildir");
    let deadline = Instant::now() + Duration::from_secs(30);
    let notice = loop {
        if let Some(n) = notices(&maildir).into_iter().next() {
            break n;
        }
        assert!(Instant::now() < deadline, "no delay notice arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(notice.contains("Action: delayed"), "{notice}");
    assert!(notice.contains("Will-Retry-Until:"), "{notice}");
    assert!(notice.contains("Status: 4."), "{notice}");
    assert!(notice.contains("bob@flaky.example"), "{notice}");
    assert!(notice.contains("Subject: waiting"), "{notice}");
    // The message is still queued, flagged, and several more retries send nothing more.
    let queue = dir.path().join("sender/spool/queue");
    let first = wait_runs(queue.clone(), 1).await;
    let runs = runs_in(&first);
    let later = wait_runs(queue.clone(), runs + 3).await;
    assert!(later.contains(r#""delay_notice_sent":true"#), "{later}");
    assert!(later.contains("deferred"), "{later}");
    assert_eq!(notices(&maildir).len(), 1, "exactly one delay notice");
    assert_eq!(states(&queue).len(), 1, "the message stays queued");
    out.shutdown().await;
    dns.shutdown().await;
}

/// Send a message that keeps deferring, let it wait well past 2 s and several runs, and
/// return what arrived in the sender's domain.
async fn no_notice_case(from: &'static str, delay_warning_secs: u64) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let dns = lab().await;
    let out = sender(dir.path(), dns.addr(), delay_warning_secs).await;
    let a = out.local_addrs()[0];
    let reply = tokio::task::spawn_blocking(move || send(a, from, &["bob@flaky.example"], "quiet"))
        .await
        .unwrap();
    assert!(reply.starts_with("250"), "{reply}");
    let queue = dir.path().join("sender/spool/queue");
    let state = wait_runs(queue.clone(), 5).await;
    assert!(state.contains("deferred"), "{state}");
    assert!(!state.contains(r#""delay_notice_sent":true"#), "{state}");
    let mail = all_mail(&dir.path().join("sender/maildir"), "home.example");
    out.shutdown().await;
    dns.shutdown().await;
    mail
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delay_notice_for_the_null_sender() {
    let mail = no_notice_case("", 2).await;
    assert!(mail.is_empty(), "{mail:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_delay_notice_when_turned_off() {
    let mail = no_notice_case("alice@home.example", 0).await;
    assert!(mail.is_empty(), "{mail:?}");
}
