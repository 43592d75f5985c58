//! Interop with a receiver that is not ours: Postfix's smtp-sink (only the sink binary is
//! run, never a Postfix MTA), reached through a static route.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mx_relay::{Config, Relay};

fn smtp_sink() -> Option<PathBuf> {
    ["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

struct Sink(Child);

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn send(addr: SocketAddr, body: &str) {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
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
    for (line, expect) in [
        ("EHLO client.test\r\n".to_string(), "250"),
        ("MAIL FROM:<alice@home.example>\r\n".into(), "250"),
        ("RCPT TO:<bob@sink.example>\r\n".into(), "250"),
        ("DATA\r\n".into(), "354"),
        (format!("{body}.\r\n"), "250"),
    ] {
        w.write_all(line.as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(expect), "{line:?}: {got}");
    }
    w.write_all(b"QUIT\r\n").unwrap();
}

fn dumps(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|e| {
            e.filter_map(|f| f.ok())
                .map(|f| {
                    String::from_utf8_lossy(&std::fs::read(f.path()).unwrap_or_default())
                        .into_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_round_trips_through_postfix_smtp_sink() {
    let Some(sink) = smtp_sink() else {
        if std::env::var_os("CI").is_some() {
            panic!("smtp-sink is not installed: CI must install the Debian package `postfix`");
        }
        println!("SKIPPED: smtp-sink is not installed (apt-get install postfix)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("dump");
    std::fs::create_dir_all(&dump).unwrap();
    // smtp-sink drops to `nobody` when started as root; it must be able to write its dumps.
    std::fs::set_permissions(&dump, std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = TcpListener::bind("127.0.0.2:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(sink);
    if running_as_root() {
        cmd.args(["-u", "nobody"]);
    }
    let child = cmd
        .arg("-d")
        .arg(dump.join("msg."))
        .arg(format!("127.0.0.2:{port}"))
        .arg("16")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _sink = Sink(child);
    let sink_addr: SocketAddr = format!("127.0.0.2:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(sink_addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "smtp-sink never listened on {sink_addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let mut c = Config::parse(
        &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\ngreet_pause_ms = 0\nhostname = \"relay.test\"\n[dns]\nnameservers = [\"127.0.0.1:1\"]\n[routing]\nstatic_routes = {{ \"sink.example\" = \"[127.0.0.2]:{port}\" }}\n"
        ),
        "<interop>",
    )
    .unwrap();
    c.spool.path = dir.path().join("spool");
    c.spool.min_free_bytes = 0;
    c.server.maildir_root = dir.path().join("maildir");
    let relay = Relay::start(&c).await.unwrap();
    let a = relay.local_addrs()[0];
    let body =
        "Subject: interop\r\nX-Token: 7f3a9c\r\n\r\n..a line that was dot-stuffed\r\nbody\r\n";
    tokio::task::spawn_blocking(move || send(a, body))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let dumped = loop {
        if let Some(d) = dumps(&dump)
            .into_iter()
            .find(|d| d.contains("X-Token: 7f3a9c"))
        {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "smtp-sink never received the message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(dumped.contains("Subject: interop"), "{dumped}");
    assert!(dumped.contains("by relay.test (mxroute)"), "{dumped}");
    assert!(dumped.contains("bob@sink.example"), "{dumped}");
    // The queue empties: smtp-sink's 250 made the recipient final.
    let queue = dir.path().join("spool/queue");
    while std::fs::read_dir(&queue).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "the message stayed queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    relay.shutdown().await;
}

fn running_as_root() -> bool {
    // The effective user id, without another dependency: /proc/self/status has it.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
