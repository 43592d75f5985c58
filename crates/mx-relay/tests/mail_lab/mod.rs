//! Shared plumbing for the delivery tests: relays configured in a temp dir, the lab DNS
//! server, a plain SMTP client, and bounded waits on Maildir files. Loopback only.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mx_lab::{LabDns, ZoneSet};
use mx_relay::Config;

/// A relay named `name` with its spool and Maildir under `dir/name`; `extra` is TOML read
/// inside `[server]` (and may open further sections).
pub fn config(dir: &Path, name: &str, extra: &str) -> Config {
    let d = dir.join(name);
    let mut c = Config::parse(
        &format!(
            "[server]\nhostname = \"{name}.test\"\ngreet_pause_ms = 0\nstarttls = true\n{extra}"
        ),
        name,
    )
    .unwrap();
    c.spool.path = d.join("spool");
    c.spool.min_free_bytes = 0;
    c.server.maildir_root = d.join("maildir");
    c
}

/// A port free on every one of `ips` (exchangers share a port, as real MX hosts share 25).
pub fn shared_port(ips: &[&str]) -> u16 {
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

pub async fn lab(zone: &str) -> LabDns {
    let zones = ZoneSet::parse(zone, "<test zone>", None).unwrap();
    LabDns::start(&zones, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Send one message with a plain SMTP client; returns the reply to the final dot.
pub fn send(addr: SocketAddr, from: &str, rcpts: &[&str], subject: &str) -> String {
    send_many(addr, from, rcpts, &[subject.to_string()]).remove(0)
}

/// Send one message per subject over a single SMTP connection; returns the replies to the
/// final dots, in order.
pub fn send_many(addr: SocketAddr, from: &str, rcpts: &[&str], subjects: &[String]) -> Vec<String> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut reply = || {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] == b' ' {
                return all;
            }
        }
    };
    assert!(reply().starts_with("220"));
    let mut say = |line: String| {
        w.write_all(line.as_bytes()).unwrap();
        reply()
    };
    assert!(say("EHLO client.test\r\n".into()).starts_with("250"));
    let mut replies = Vec::new();
    for subject in subjects {
        assert!(say(format!("MAIL FROM:<{from}>\r\n")).starts_with("250"));
        for rc in rcpts {
            let got = say(format!("RCPT TO:<{rc}>\r\n"));
            assert!(got.starts_with("250"), "RCPT {rc}: {got}");
        }
        assert!(say("DATA\r\n".into()).starts_with("354"));
        replies.push(say(format!(
            "Subject: {subject}\r\n\r\nhello {subject}\r\n.\r\n"
        )));
    }
    let _ = say("QUIT\r\n".into());
    replies
}

/// Every message in a mailbox's `new/`.
pub fn mail_in(root: &Path, domain: &str, mailbox: &str) -> Vec<String> {
    std::fs::read_dir(root.join(domain).join(mailbox).join("new"))
        .map(|e| {
            e.map(|f| {
                String::from_utf8_lossy(&std::fs::read(f.unwrap().path()).unwrap()).into_owned()
            })
            .collect()
        })
        .unwrap_or_default()
}

/// Wait (bounded) for `n` messages containing `needle` in a mailbox.
pub async fn wait_for(
    root: PathBuf,
    domain: &str,
    mailbox: &str,
    needle: &str,
    n: usize,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<String> = mail_in(&root, domain, mailbox)
            .into_iter()
            .filter(|m| m.contains(needle))
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {n} message(s) with {needle:?} in {domain}/{mailbox}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Send one message from a test task and require the relay to accept it (250).
pub async fn submit(addr: SocketAddr, from: &str, rcpts: &[&str], subject: &str) {
    let from = from.to_string();
    let rcpts: Vec<String> = rcpts.iter().map(|r| r.to_string()).collect();
    let subject = subject.to_string();
    let reply = tokio::task::spawn_blocking(move || {
        let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        send(addr, &from, &rcpts, &subject)
    })
    .await
    .unwrap();
    assert!(reply.starts_with("250"), "{reply}");
}

/// The Prometheus page of a relay's metrics endpoint (blocking: call it off the runtime's
/// threads).
pub fn scrape(metrics: SocketAddr) -> String {
    let mut s = TcpStream::connect(metrics).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample whose name (with labels) is exactly `series`; 0 when absent.
pub fn sample(page: &str, series: &str) -> f64 {
    page.lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}
