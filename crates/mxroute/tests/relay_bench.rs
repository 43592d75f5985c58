//! The relay benchmark's setup, small and as a test (`bench/relay` is the full one): Postfix's
//! `smtp-source` sends a few hundred 1 KB messages through the real `mxroute relay`, which
//! routes them by MX, through the lab DNS server (`mxroute lab dns`), to Postfix's
//! `smtp-sink` receivers on 127.0.1.x. One domain in six has a dead primary first (an address
//! where nothing listens), so its mail must fail over to the backup. Every message must
//! arrive at the sinks exactly once, nothing unknown may arrive, and the queue must be empty
//! afterwards.
//!
//! Only the sink and source binaries of Postfix are run, never a Postfix MTA. Without them
//! the test is skipped with a printed reason, except under `CI`, where it fails. Loopback
//! only; every wait is bounded.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod run;
use run::{BIN, NoLine, line_after};

/// Domains in the zone; mail is spread evenly over them.
const DOMAINS: usize = 60;
/// Every this many domains has the dead primary first.
const DEAD_EVERY: usize = 6;
/// Messages sent through the relay (1 KB each).
const MESSAGES: usize = 300;
/// Messages per domain (one smtp-source run each).
const PER_DOMAIN: usize = MESSAGES / DOMAINS;
const _: () = assert!(MESSAGES.is_multiple_of(DOMAINS), "an even spread");
/// smtp-source processes running at once.
const SESSIONS: usize = 8;
/// The sinks' addresses, and the dead primary's (nothing listens there).
const SINKS: [&str; 3] = ["127.0.1.11", "127.0.1.12", "127.0.1.13"];
const DEAD: &str = "127.0.1.19";
/// From spawning a process to its ready line or listening socket.
const READY_WAIT: Duration = Duration::from_secs(30);
/// For every message to be at the sinks and the queue to be empty.
const DELIVERY_WAIT: Duration = Duration::from_secs(120);
/// One smtp-source run (a handful of messages).
const SOURCE_WAIT: Duration = Duration::from_secs(60);

fn tool(names: &[&str]) -> Option<PathBuf> {
    names.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// A child process of this test, killed and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A port free on every one of `ips` (exchangers share a port, as real MX hosts share 25).
fn shared_port(ips: &[&str]) -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind((ips[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        if ips[1..]
            .iter()
            .all(|ip| TcpListener::bind((*ip, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {ips:?}");
}

fn domain(i: usize) -> String {
    format!("d{i:03}.relaybench.test")
}

fn zone() -> String {
    let mut z = String::from(
        "$ORIGIN relaybench.test.\n$TTL 3600\n\
         @ IN SOA ns hostmaster 1 3600 600 86400 300\n@ IN NS ns\nns IN A 127.0.0.1\n",
    );
    z.push_str(&format!("dead IN A {DEAD}\n"));
    for (k, ip) in SINKS.iter().enumerate() {
        z.push_str(&format!("mx{} IN A {ip}\n", k + 1));
    }
    for i in 0..DOMAINS {
        let (a, b) = (i % SINKS.len() + 1, (i + 1) % SINKS.len() + 1);
        if i % DEAD_EVERY == 0 {
            z.push_str(&format!("d{i:03} IN MX 10 dead\nd{i:03} IN MX 20 mx{a}\n"));
        } else {
            z.push_str(&format!("d{i:03} IN MX 10 mx{a}\nd{i:03} IN MX 20 mx{b}\n"));
        }
    }
    z
}

/// Spawn `cmd` with stdout piped and wait (bounded) for a line starting with `prefix`;
/// returns the rest of that line. A thread drains stdout for the child's life.
fn spawn_ready(mut cmd: Command, prefix: &'static str, what: &str) -> (Proc, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let child = Proc(child);
    match line_after(stdout, prefix, READY_WAIT) {
        Ok(rest) => (child, rest),
        Err(NoLine::Timeout) => panic!("{what} was not ready within {READY_WAIT:?}"),
        Err(NoLine::Exited) => panic!("{what} exited before it was ready"),
    }
}

fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + READY_WAIT;
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{what} never listened on {addr}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Every recipient (lower-cased) of every message smtp-sink dumped into `dir`, with the
/// sink it arrived at.
fn dumped_recipients(dir: &Path) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    for (k, _) in SINKS.iter().enumerate() {
        let prefix = format!("sink{}.", k + 1);
        let Ok(entries) = fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let bytes = fs::read(e.path()).unwrap_or_default();
            for line in String::from_utf8_lossy(&bytes).lines() {
                if let Some(rest) = line.strip_prefix("X-Rcpt-Args: <") {
                    let rcpt = rest.split('>').next().unwrap_or("").to_ascii_lowercase();
                    out.push((rcpt, k));
                }
            }
        }
    }
    out
}

/// `GET /metrics` from the relay's loopback metrics endpoint.
fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

fn queued_messages(spool: &Path) -> u64 {
    let out = Command::new(BIN)
        .args(["queue", "stats", "--json", "--spool"])
        .arg(spool)
        .output()
        .expect("mxroute queue stats");
    assert!(out.status.success(), "queue stats: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("queue stats JSON");
    v["messages"].as_u64().expect("messages count")
}

#[test]
fn smtp_source_through_the_relay_reaches_smtp_sinks_exactly_once() {
    let sink = tool(&["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]);
    let source = tool(&["/usr/sbin/smtp-source", "/usr/lib/postfix/sbin/smtp-source"]);
    let (Some(sink), Some(source)) = (sink, source) else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "smtp-sink or smtp-source is not installed: CI must install the Debian package `postfix`"
            );
        }
        println!("SKIPPED: smtp-sink or smtp-source is not installed (apt-get install postfix)");
        return;
    };
    let started = Instant::now();
    let root = running_as_root();
    let dir = tempfile::tempdir().unwrap();
    let dumps = dir.path().join("dumps");
    fs::create_dir_all(&dumps).unwrap();
    if root {
        // smtp-sink drops to `nobody`: it must reach and write its dump directory.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&dumps, fs::Permissions::from_mode(0o777)).unwrap();
    }

    // The receivers: one smtp-sink per address, all on one port; the dead primary's
    // address on that port must refuse connections.
    let mut ips: Vec<&str> = SINKS.to_vec();
    ips.push(DEAD);
    let port = shared_port(&ips);
    let mut sinks = Vec::new();
    for (k, ip) in SINKS.iter().enumerate() {
        let mut cmd = Command::new(&sink);
        if root {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd
            .arg("-D")
            .arg(dumps.join(format!("sink{}.", k + 1)))
            .arg(format!("{ip}:{port}"))
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn smtp-sink");
        sinks.push(Proc(child));
    }
    for ip in SINKS {
        wait_listening(format!("{ip}:{port}").parse().unwrap(), "smtp-sink");
    }
    let dead: SocketAddr = format!("{DEAD}:{port}").parse().unwrap();
    assert!(
        TcpStream::connect(dead).is_err(),
        "something listens on the dead primary {dead}"
    );

    // The lab DNS server, from a zone file.
    let zone_file = dir.path().join("bench.zone");
    fs::write(&zone_file, zone()).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["lab", "dns", "--zone"])
        .arg(&zone_file)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::inherit());
    let (_dns, line) = spawn_ready(cmd, "lab dns: serving ", "mxroute lab dns");
    let dns_addr: SocketAddr = line
        .split(" on ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));

    // The relay: default durability; loopback addresses, the lab DNS, the sinks' port.
    let metrics_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let spool = dir.path().join("spool");
    let config = dir.path().join("relay.toml");
    fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nhostname = \"relay.relaybench.test\"\n\
             max_connections_per_ip = 100\nmaildir_root = \"{maildir}\"\n\
             [spool]\npath = \"{spool}\"\nmin_free_bytes = 0\n\
             [dns]\nnameservers = [\"{dns_addr}\"]\n\
             [delivery]\nport = {port}\n\
             [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
            maildir = dir.path().join("maildir").display(),
            spool = spool.display(),
        ),
    )
    .unwrap();
    let log = fs::File::create(dir.path().join("relay.log")).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--log-format", "json", "relay", "--config"])
        .arg(&config)
        .env("MXROUTE_LOG", "info")
        .stderr(log);
    let (mut relay, line) = spawn_ready(cmd, "relay: accepting SMTP on ", "mxroute relay");
    let relay_addr: SocketAddr = line.trim().parse().expect("relay address");

    // The load: one smtp-source run per domain (smtp-source has one recipient address per
    // run; -N makes each message's recipient unique), SESSIONS at a time. Even domains get
    // a new connection per message, odd ones reuse one connection (-d).
    let jobs: Vec<(usize, usize)> = (0..DOMAINS).map(|i| (i, PER_DOMAIN)).collect();
    let queue = Arc::new(Mutex::new(jobs.clone()));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let workers: Vec<_> = (0..SESSIONS)
        .map(|_| {
            let (queue, failures, source) = (queue.clone(), failures.clone(), source.clone());
            thread::spawn(move || {
                loop {
                    let Some((i, n)) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let mut cmd = Command::new(&source);
                    cmd.args(["-s", "1", "-m", &n.to_string(), "-l", "1024", "-N"])
                        .args(["-M", "client.relaybench.test"]);
                    if i % 2 == 1 {
                        cmd.arg("-d");
                    }
                    let mut child = cmd
                        .args(["-f", "sender@client.relaybench.test", "-t"])
                        .arg(format!("r@{}", domain(i)))
                        .arg(relay_addr.to_string())
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("spawn smtp-source");
                    let deadline = Instant::now() + SOURCE_WAIT;
                    let status = loop {
                        if let Some(s) = child.try_wait().unwrap() {
                            break Some(s);
                        }
                        if Instant::now() > deadline {
                            let _ = child.kill();
                            let _ = child.wait();
                            break None;
                        }
                        thread::sleep(Duration::from_millis(5));
                    };
                    if status.is_none_or(|s| !s.success()) {
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            let _ = e.read_to_string(&mut err);
                        }
                        failures.lock().unwrap().push(format!(
                            "{}: {status:?} {}",
                            domain(i),
                            err.trim()
                        ));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "smtp-source failed: {failures:#?}");
    let accepted = started.elapsed();

    // Delivery: wait (bounded) until every message is at a sink and the queue is empty.
    let deadline = Instant::now() + DELIVERY_WAIT;
    loop {
        let got = dumped_recipients(&dumps).len();
        if got >= MESSAGES && queued_messages(&spool) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {DELIVERY_WAIT:?}: {got} of {MESSAGES} messages at the sinks, {} still queued",
            queued_messages(&spool)
        );
        thread::sleep(Duration::from_millis(50));
    }
    let delivered = started.elapsed();

    // The dead primary was on the route (tried, or skipped as recently unreachable).
    let metrics = scrape(format!("127.0.0.1:{metrics_port}").parse().unwrap());
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mxroute_delivery_attempts_total") && l.contains("dead.")),
        "no delivery attempt at the dead primary in the metrics:\n{metrics}"
    );

    // Stop the relay (SIGTERM, bounded) and the sinks, then count.
    let _ = Command::new("kill")
        .args(["-TERM", &relay.0.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while relay.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the relay did not stop on SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
    drop(sinks);

    let mut seen: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for (rcpt, sink) in dumped_recipients(&dumps) {
        let e = seen.entry(rcpt).or_insert((0, sink));
        e.0 += 1;
    }
    let mut want = Vec::new();
    for &(i, n) in &jobs {
        for k in 1..=n {
            want.push(format!("{k}r@{}", domain(i)));
        }
    }
    assert_eq!(want.len(), MESSAGES);
    let lost: Vec<_> = want.iter().filter(|r| !seen.contains_key(*r)).collect();
    let duplicated: Vec<_> = seen.iter().filter(|(_, (n, _))| *n > 1).collect();
    let unknown: Vec<_> = seen.keys().filter(|r| !want.contains(r)).collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    assert!(
        unknown.is_empty(),
        "unknown recipients at the sinks: {unknown:?}"
    );
    // Dead-primary domains' mail went to their backup; the others' to their primary (all
    // exchangers are up but the dead one).
    for &(i, _) in &jobs {
        let sink = seen[&format!("1r@{}", domain(i))].1;
        assert_eq!(
            sink,
            i % SINKS.len(),
            "{}'s mail at sink {}",
            domain(i),
            sink + 1
        );
    }
    assert_eq!(queued_messages(&spool), 0);
    println!(
        "relay_bench: {MESSAGES} messages over {DOMAINS} domains ({} with a dead primary), \
         accepted in {accepted:.2?}, all at the sinks and the queue empty after {delivered:.2?}",
        DOMAINS.div_ceil(DEAD_EVERY)
    );
}
