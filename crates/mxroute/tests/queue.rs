//! `mxroute queue` against a real spool: reading beside a running relay, changing only when
//! it is stopped.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mxroute");

/// The child, and its stdout kept open so its status lines never meet a closed pipe.
struct Relay {
    child: Child,
    _stdout: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(dir: &std::path::Path) -> (Relay, std::net::SocketAddr) {
    let config = dir.join("relay.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nlocal_domains = [\"example.com\"]\ncatch_all_domains = [\"example.com\"]\ngreet_pause_ms = 0\nmaildir_root = \"{d}/maildir\"\n[spool]\npath = \"{d}/spool\"\nmin_free_bytes = 0\n[dns]\n# Tests contact loopback only: a dead resolver keeps remote mail waiting in the queue.\nnameservers = [\"127.0.0.1:1\"]\ntimeout_secs = 0.2\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["relay", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("relay exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("relay: accepting SMTP on ") {
            break addr.parse().unwrap();
        }
    };
    (
        Relay {
            child,
            _stdout: lines,
        },
        addr,
    )
}

fn send(addr: std::net::SocketAddr, rcpts: &[&str]) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut expect = |code: &str| loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.starts_with(code), "expected {code}, got {line:?}");
        if line.as_bytes()[3] == b' ' {
            break;
        }
    };
    expect("220");
    w.write_all(b"EHLO q\r\n").unwrap();
    expect("250");
    w.write_all(b"MAIL FROM:<s@sender.example>\r\n").unwrap();
    expect("250");
    for r in rcpts {
        w.write_all(format!("RCPT TO:<{r}>\r\n").as_bytes())
            .unwrap();
        expect("250");
    }
    w.write_all(b"DATA\r\n").unwrap();
    expect("354");
    w.write_all(b"Subject: queued\r\n\r\nbody\r\n.\r\n")
        .unwrap();
    expect("250");
    w.write_all(b"QUIT\r\n").unwrap();
}

fn queue(dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .arg("queue")
        .args(args)
        .arg("--spool")
        .arg(dir.join("spool"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn queue_reads_and_changes_beside_the_relay_and_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (relay, addr) = start_relay(dir.path());
    send(addr, &["bob@example.com", "carol@remote.example"]);
    // The local copy is delivered by a background worker: wait for it (bounded).
    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        let (code, out, err) = queue(dir.path(), &["list", "--json"]);
        assert_eq!(code, 0, "{err}");
        let rows: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(rows.len(), 1, "{out}");
        if rows[0]["recipients"][0]["status"] == "delivered" {
            break rows[0].clone();
        }
        assert!(
            Instant::now() < deadline,
            "local copy never delivered: {out}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(row["from"], "s@sender.example");
    assert_eq!(row["recipients"][1]["address"], "carol@remote.example");
    let remote = row["recipients"][1]["status"].as_str().unwrap().to_string();
    assert!(remote == "pending" || remote == "deferred", "{remote}");
    let id = row["id"].as_str().unwrap().to_string();

    let (code, out, _) = queue(dir.path(), &["show", &id, "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        shown["headers"]
            .as_str()
            .unwrap()
            .contains("Subject: queued")
    );
    assert_eq!(shown["client_ip"], "127.0.0.1");

    let (code, out, _) = queue(dir.path(), &["stats", "--json"]);
    assert_eq!(code, 0);
    let stats: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(stats["messages"], 1);
    assert_eq!(stats["pending_by_domain"]["remote.example"], 1);

    // Changes go through the running relay, which holds the spool.
    let (code, out, err) = queue(dir.path(), &["retry", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("due now"), "{out}");
    assert_eq!(queue(dir.path(), &["show", "nosuchid"]).0, 65);
    let (code, out, err) = queue(dir.path(), &["delete", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("deleted"), "{out}");
    let (_, out, _) = queue(dir.path(), &["list"]);
    assert!(out.contains("queue is empty"), "{out}");

    // And offline, with the relay stopped.
    send(addr, &["dave@remote.example"]);
    drop(relay);
    let (_, out, _) = queue(dir.path(), &["list", "--json"]);
    let second: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let second = second["id"].as_str().unwrap().to_string();
    let (code, out, err) = queue(dir.path(), &["retry", "--all"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 message(s)"), "{out}");
    let (code, _, err) = queue(dir.path(), &["delete", &second]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = queue(dir.path(), &["list"]);
    assert!(out.contains("queue is empty"), "{out}");
}
