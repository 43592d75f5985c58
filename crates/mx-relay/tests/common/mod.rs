//! Plumbing for the end-to-end tests: a relay configured in code inside a temporary
//! directory, a raw SMTP client over loopback, the external clients (swaks, python3's
//! smtplib), and bounded waits on events.
//!
//! Everything here talks to loopback only, and every wait has a bound: a hung relay fails a
//! test with a message instead of hanging the test run.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mx_relay::{Config, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The relay's name in its greeting, EHLO and Received headers.
pub const HOSTNAME: &str = "mx.example.com";
/// The one account with a password (it is also a mailbox).
pub const ACCOUNT: &str = "alice@example.com";
pub const PASSWORD: &str = "correct horse battery staple";
/// The trusted client address, and an untrusted one (with `trust_only_localhost`).
pub const TRUSTED_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
pub const UNTRUSTED_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
pub const UNTRUSTED: &str = "127.0.0.2";
/// Longest wait for one reply from the relay (generous: the machine may be busy).
pub const REPLY_BOUND: Duration = Duration::from_secs(20);
/// Longest wait for an asynchronous effect: a Maildir file appearing, the spool draining.
pub const EVENT_BOUND: Duration = Duration::from_secs(10);
/// Longest run of an external client (killed past it by `timeout`).
pub const TOOL_BOUND_SECS: u64 = 90;

/// One argon2 hash for the whole test binary: hashing is slow in a debug build.
pub fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| mx_relay::users::hash_password(PASSWORD).expect("hash"))
}

/// A relay's configuration and directories: `<tmp>/spool`, `<tmp>/maildir`, `<tmp>/users`.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: Config,
}

impl Env {
    /// Listen on 127.0.0.1:0, no greet pause, local domain example.com with the users
    /// alice (with [`PASSWORD`]), bob and carol; trusted networks as by default (127/8).
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let users = dir.path().join("users");
        std::fs::write(
            &users,
            format!(
                "# e2e users\n{ACCOUNT}:{}\nbob@example.com\ncarol@example.com\n",
                password_hash()
            ),
        )
        .expect("users file");
        let mut config = Config::default();
        config.server.listen = vec![SocketAddr::from((TRUSTED_IP, 0))];
        config.server.hostname = Some(HOSTNAME.to_string());
        config.server.local_domains = vec!["example.com".to_string()];
        config.server.users_file = Some(users);
        config.server.maildir_root = dir.path().join("maildir");
        config.server.greet_pause_ms = 0;
        config.spool.path = dir.path().join("spool");
        // The tests' own disk may be nearly full; the disk-full test sets this itself.
        config.spool.min_free_bytes = 0;
        // Nothing may leave loopback: elsewhere.example (the one remote domain the tests
        // have mail accepted for) is routed to a closed loopback port, and DNS, should
        // anything ask, goes to loopback too.
        config
            .routing
            .static_routes
            .insert("elsewhere.example".to_string(), "[127.0.0.1]:1".to_string());
        config.dns.nameservers = vec![SocketAddr::from((TRUSTED_IP, 1))];
        config
            .routing_policy()
            .expect("the routing section is valid");
        Env { dir, config }
    }

    /// Only 127.0.0.1 is trusted, so a client bound to 127.0.0.2 is a stranger.
    pub fn trust_only_localhost(mut self) -> Env {
        self.config.server.trusted_networks = vec!["127.0.0.1/32".parse().expect("net")];
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Starts a relay on this configuration. A spool still locked is waited for (bounded):
    /// the lock is an flock, and a child process that another test forks (swaks, python3)
    /// holds a copy of its descriptor from fork to exec, so right after a shutdown the
    /// lock may still be held for a moment by a process that is not a relay at all.
    pub async fn start(&self) -> (Relay, SocketAddr) {
        let start = Instant::now();
        let relay = loop {
            match Relay::start(&self.config).await {
                Ok(relay) => break relay,
                Err(mx_relay::RelayError::Spool(e))
                    if e.contains("in use by another process") && start.elapsed() < EVENT_BOUND =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("relay does not start: {e}"),
            }
        };
        let addr = relay.local_addrs()[0];
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{addr}");
        (relay, addr)
    }

    pub fn spool(&self) -> &Path {
        &self.config.spool.path
    }

    /// File names in `spool/queue/`, sorted.
    /// Message files in `spool/queue/`, sorted (state files come and go with delivery runs).
    pub fn queue_files(&self) -> Vec<String> {
        names(&self.spool().join("queue"))
            .into_iter()
            .filter(|n| n.ends_with(".msg"))
            .collect()
    }

    /// File names in `spool/tmp/`, sorted.
    pub fn spool_tmp_files(&self) -> Vec<String> {
        names(&self.spool().join("tmp"))
    }

    pub fn mailbox(&self, mailbox: &str) -> PathBuf {
        self.config
            .server
            .maildir_root
            .join("example.com")
            .join(mailbox)
    }

    /// The messages in `maildir/example.com/<mailbox>/new/`, by file name.
    pub fn maildir_new(&self, mailbox: &str) -> Vec<Vec<u8>> {
        let new = self.mailbox(mailbox).join("new");
        names(&new)
            .into_iter()
            .map(|n| std::fs::read(new.join(n)).expect("read maildir file"))
            .collect()
    }

    /// Waits until `mailbox/new/` holds `count` messages and the spool queue is empty.
    pub async fn wait_delivered(&self, mailboxes: &[&str], count: usize) {
        wait_until(
            &format!("{count} message(s) in each of {mailboxes:?} and an empty spool queue"),
            || {
                mailboxes
                    .iter()
                    .all(|m| names(&self.mailbox(m).join("new")).len() == count)
                    && self.queue_files().is_empty()
            },
        )
        .await;
    }
}

/// Sorted names of the entries of `dir`; none if it does not exist.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    names.sort();
    names
}

/// Polls `done` every 20 ms until it holds, for at most [`EVENT_BOUND`]. This waits on an
/// event (a file appearing or going) that has no notification of its own.
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < EVENT_BOUND,
            "timed out after {EVENT_BOUND:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One SMTP reply: its code and its lines exactly as received (CRLF included).
#[derive(Clone, Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    /// The id of `250 2.0.0 Ok: queued as <id>`.
    pub fn queue_id(&self) -> String {
        assert_eq!(self.code, 250, "not a queued reply: {self:?}");
        let (_, id) = self
            .text
            .trim_end()
            .rsplit_once("queued as ")
            .unwrap_or_else(|| panic!("no queue id in {:?}", self.text));
        assert!(
            id.len() == 22 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "queue id {id:?}"
        );
        id.to_string()
    }

    pub fn starts(&self, prefix: &str) -> bool {
        self.text.starts_with(prefix)
    }
}

/// A raw SMTP client: exactly the bytes we write go on the wire.
pub struct Smtp {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Smtp {
    pub async fn connect(addr: SocketAddr) -> Smtp {
        Smtp::connect_from(TRUSTED_IP, addr).await
    }

    /// Connects with the source address `ip` (any 127/8 address works on loopback).
    pub async fn connect_from(ip: IpAddr, addr: SocketAddr) -> Smtp {
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(ip, 0))
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let stream = tokio::time::timeout(REPLY_BOUND, socket.connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        Smtp {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects, reads the 220 greeting and says EHLO.
    pub async fn session(ip: IpAddr, addr: SocketAddr) -> Smtp {
        let mut c = Smtp::connect_from(ip, addr).await;
        c.expect_reply(220).await;
        c.expect("EHLO client.test", 250).await;
        c
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(REPLY_BOUND, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// The next reply, or None at end of stream (or a reset) before a complete reply.
    pub async fn try_reply(&mut self) -> Option<Reply> {
        let deadline = tokio::time::Instant::now() + REPLY_BOUND;
        let mut start = 0;
        loop {
            // A reply ends with the line whose fourth octet is not '-'.
            while let Some(nl) = self.buf[start..].windows(2).position(|w| w == b"\r\n") {
                let line_end = start + nl + 2;
                let line = &self.buf[start..line_end];
                if line.get(3) != Some(&b'-') {
                    let raw: Vec<u8> = self.buf.drain(..line_end).collect();
                    let text = String::from_utf8_lossy(&raw).into_owned();
                    let code = text
                        .get(..3)
                        .and_then(|c| c.parse().ok())
                        .unwrap_or_else(|| panic!("not an SMTP reply: {text:?}"));
                    return Some(Reply { code, text });
                }
                start = line_end;
            }
            let mut chunk = [0u8; 8192];
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "no reply within {REPLY_BOUND:?}; partial input {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Ok(Ok(n)) => n,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Ok(Err(e)) => panic!("read: {e}"),
            };
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    pub async fn reply(&mut self) -> Reply {
        self.try_reply()
            .await
            .expect("connection closed while waiting for a reply")
    }

    pub async fn expect_reply(&mut self, code: u16) -> Reply {
        let reply = self.reply().await;
        assert_eq!(reply.code, code, "expected {code}, got {:?}", reply.text);
        reply
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    pub async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let reply = self.cmd(line).await;
        assert_eq!(reply.code, code, "{line:?}: got {:?}", reply.text);
        reply
    }

    /// Everything until the server closes (a reset counts as closing), bounded in time.
    /// Also says whether the end was a reset rather than an orderly close.
    pub async fn read_to_end(&mut self) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + REPLY_BOUND;
        let mut all = std::mem::take(&mut self.buf);
        loop {
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => panic!(
                    "connection still open after {REPLY_BOUND:?}; got {:?}",
                    String::from_utf8_lossy(&all)
                ),
                Ok(Ok(0)) => return (all, false),
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return (all, true);
                }
                Ok(Err(e)) => panic!("read: {e}"),
            }
        }
    }

    /// MAIL, RCPT for each recipient (all must be accepted), DATA with `data` (already
    /// dot-stuffed, without the final `.CRLF`): the final reply.
    pub async fn send_message(&mut self, from: &str, to: &[&str], data: &[u8]) -> Reply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for rcpt in to {
            self.expect(&format!("RCPT TO:<{rcpt}>"), 250).await;
        }
        self.expect("DATA", 354).await;
        self.send(data).await;
        self.send(b".\r\n").await;
        self.reply().await
    }
}

/// The parts of a delivered Maildir file.
#[derive(Debug)]
pub struct Delivered {
    /// `Return-Path: <...>\r\n`.
    pub return_path: String,
    /// Our `Received:` header with its folded lines, through its final CRLF.
    pub received: String,
    /// Everything after: the message as the client sent it.
    pub rest: Vec<u8>,
}

/// Splits a Maildir file into Return-Path, our Received header (first line and every
/// continuation line starting with white space) and the rest.
pub fn split_delivered(file: &[u8]) -> Delivered {
    let line_end = |from: usize| -> usize {
        file[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p + 2)
            .unwrap_or_else(|| {
                panic!(
                    "no CRLF after offset {from} in {:?}",
                    String::from_utf8_lossy(file)
                )
            })
    };
    let rp_end = line_end(0);
    let mut end = line_end(rp_end);
    while matches!(file.get(end), Some(b'\t' | b' ')) {
        end = line_end(end);
    }
    Delivered {
        return_path: String::from_utf8(file[..rp_end].to_vec()).expect("ascii"),
        received: String::from_utf8(file[rp_end..end].to_vec()).expect("ascii"),
        rest: file[end..].to_vec(),
    }
}

/// Checks the shape of our Received header.
pub fn check_received(received: &str, helo: &str, ip: IpAddr, with: &str) {
    let start = format!("Received: from {helo} ([{ip}])\r\n");
    assert!(received.starts_with(&start), "{received:?} vs {start:?}");
    let by = format!("by {HOSTNAME} (mxroute) with {with}");
    assert!(received.contains(&by), "{received:?} lacks {by:?}");
    // Exactly this protocol, not a longer name that starts with it (ESMTP vs ESMTPS).
    let after = &received[received.find(&by).expect("by") + by.len()..];
    assert!(
        after.starts_with(';') || after.starts_with("\r\n"),
        "{received:?}"
    );
    assert!(received.ends_with(" +0000\r\n"), "{received:?}");
    for line in received.trim_end_matches("\r\n").split("\r\n") {
        assert!(!line.contains(['\r', '\n']), "bare CR/LF in {received:?}");
    }
}

/// The expected effect of SMTP dot-stuffing on a message: a line's leading dot doubled.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 16);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    out
}

/// True when the test should not run: `what` is missing. Under CI (env `CI` set) a missing
/// tool is a failure instead: CI must install what the tests need.
pub fn skip_unless(available: bool, what: &str) -> bool {
    if available {
        return false;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} is not available, and CI is set: install it"
    );
    println!("SKIPPED: {what} is not available");
    true
}

/// swaks is installed (and, when `tls`, built with TLS support: Net::SSLeay).
pub fn swaks_available(tls: bool) -> bool {
    let Ok(out) = Command::new("swaks").arg("--support").output() else {
        return false;
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    !tls || text.contains("=== TLS supported")
}

pub fn python_available() -> bool {
    Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs an external client under coreutils `timeout`, off the async threads.
pub async fn run_tool(program: &str, args: Vec<String>) -> Output {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &TOOL_BOUND_SECS.to_string(), &program]);
        cmd.args(&args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    })
    .await
    .expect("tool task")
}

/// Both output streams, for failure messages.
pub fn transcript(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// swaks against the relay at `addr`, with `extra` arguments.
pub async fn swaks(addr: SocketAddr, extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "--server".into(),
        addr.ip().to_string(),
        "--port".into(),
        addr.port().to_string(),
        "--helo".into(),
        "client.test".into(),
        "--timeout".into(),
        "30".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    run_tool("swaks", args).await
}

/// A python3 smtplib client: `sendmail(sender, recipients, <file>)` from `source`, with
/// EHLO `py.client.test`. Exits non-zero (traceback on stderr) on any refusal.
pub async fn python_sendmail(
    dir: &Path,
    addr: SocketAddr,
    source: IpAddr,
    sender: &str,
    recipients: &[&str],
    message: &[u8],
) -> Output {
    const SCRIPT: &str = r#"
import smtplib, sys
host, port, source, sender, path = sys.argv[1:6]
recipients = sys.argv[6:]
with open(path, "rb") as f:
    message = f.read()
with smtplib.SMTP(host, int(port), local_hostname="py.client.test", timeout=30,
                  source_address=(source, 0)) as s:
    refused = s.sendmail(sender, recipients, message)
    print("refused:", refused)
"#;
    let script = dir.join("sendmail.py");
    std::fs::write(&script, SCRIPT).expect("script");
    let msg = dir.join(format!("message-{}.eml", std::process::id()));
    std::fs::write(&msg, message).expect("message file");
    let mut args = vec![
        script.display().to_string(),
        addr.ip().to_string(),
        addr.port().to_string(),
        source.to_string(),
        sender.to_string(),
        msg.display().to_string(),
    ];
    args.extend(recipients.iter().map(|r| r.to_string()));
    run_tool("python3", args).await
}
