//! `mxroute lab up`: the lab DNS server and an exchanger per loopback A record, reachable
//! with real SMTP, until stopped.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Lab(
    Child,
    Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
);

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `mxroute lab up` in `dir`; returns it (killed on drop, its stdout kept open so the
/// lab's later lines never meet a closed pipe) and the lines printed before it was ready.
fn lab_up(dir: &std::path::Path) -> (Lab, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mxroute"))
        .args(["lab", "up", "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut lab = Lab(child, None);
    let mut printed = Vec::new();
    loop {
        let line = lines.next().expect("lab up exited early").unwrap();
        if line.starts_with("lab up: ready") {
            break;
        }
        printed.push(line);
    }
    lab.1 = Some(lines);
    (lab, printed)
}

#[test]
fn lab_up_runs_an_exchanger_per_address_and_they_take_mail() {
    let dir = tempfile::tempdir().unwrap();
    let (_lab, table) = lab_up(dir.path());
    let text = table.join("\n");
    assert!(text.contains("nameservers = [\"127.0.0.1:"), "{text}");
    let mailhost1 = table
        .iter()
        .find(|l| l.starts_with("mailhost1.example.com "))
        .unwrap_or_else(|| panic!("no mailhost1 row:\n{text}"));
    let listen = mailhost1.split_whitespace().nth(1).unwrap().to_string();
    assert!(listen.starts_with("127.0.0.11:"), "{mailhost1}");
    assert!(mailhost1.contains(" example.com "), "{mailhost1}");
    assert!(
        table
            .iter()
            .any(|l| l.starts_with("mx-b.balanced.example ")),
        "{text}"
    );

    let stream = TcpStream::connect(&listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut r = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    let mut reply = || loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.len() < 4 || l.as_bytes()[3] == b' ' {
            return l;
        }
    };
    assert!(reply().starts_with("220"));
    for (cmd, code) in [
        ("EHLO t\r\n", "250"),
        ("MAIL FROM:<a@x.test>\r\n", "250"),
        ("RCPT TO:<bob@example.com>\r\n", "250"),
        ("DATA\r\n", "354"),
        ("Subject: lab up\r\n\r\nhello\r\n.\r\n", "250"),
    ] {
        w.write_all(cmd.as_bytes()).unwrap();
        let got = reply();
        assert!(got.starts_with(code), "{cmd:?}: {got}");
    }
    let new = dir
        .path()
        .join("mailhost1.example.com/maildir/example.com/bob/new");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&new).map(|e| e.count()).unwrap_or(0) == 0 {
        assert!(
            Instant::now() < deadline,
            "the message never reached mailhost1's Maildir"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn greeting(listen: &str) -> String {
    let stream = TcpStream::connect(listen).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line
}

fn switch(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mxroute"))
        .args(["lab", "switch", "--dir"])
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn lab_switches_change_a_running_exchanger() {
    let dir = tempfile::tempdir().unwrap();
    let (_lab, printed) = lab_up(dir.path());
    let listen = printed
        .iter()
        .find(|l| l.starts_with("mailhost1.example.com "))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("a mailhost1 row")
        .to_string();
    assert!(greeting(&listen).starts_with("220"));
    assert_eq!(switch(dir.path(), &["mailhost1.example.com", "421"]).0, 0);
    assert!(greeting(&listen).starts_with("421"), "421 switch");
    assert_eq!(
        switch(dir.path(), &["mailhost1.example.com", "normal"]).0,
        0
    );
    assert!(greeting(&listen).starts_with("220"), "back to normal");
    assert_eq!(switch(dir.path(), &["mailhost1.example.com", "stop"]).0, 0);
    assert!(
        TcpStream::connect(&listen).is_err(),
        "stopped exchanger still listens"
    );
    assert_eq!(switch(dir.path(), &["mailhost1.example.com", "start"]).0, 0);
    assert!(greeting(&listen).starts_with("220"), "restarted");
    let (code, out) = switch(dir.path(), &["nosuch.host", "stop"]);
    assert_eq!(code, 65, "{out}");
}

/// `mxroute check` against the running lab reports what its exchangers really do: the lab's
/// self-signed STARTTLS certificates, missing PTR and policies, and an exchanger switched to
/// greet with 421.
#[test]
fn check_against_the_lab_reports_smtp_and_policy_findings() {
    let dir = tempfile::tempdir().unwrap();
    let (_lab, printed) = lab_up(dir.path());
    let dns = printed[0]
        .strip_prefix("lab dns: ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("first line names the DNS server: {printed:?}"))
        .to_string();
    let port = printed
        .iter()
        .find(|l| l.starts_with("mailhost1.example.com "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|listen| listen.rsplit(':').next())
        .expect("a mailhost1 row")
        .to_string();
    assert_eq!(switch(dir.path(), &["mailhost2.example.com", "421"]).0, 0);
    let out = Command::new(env!("CARGO_BIN_EXE_mxroute"))
        .args(["check", "example.com", "--json", "--probe-timeout", "5"])
        .args(["--nameserver", &dns, "--smtp-port", &port])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a 421 greeting is an error: {stdout}"
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    let findings = report["findings"].as_array().expect("findings");
    let has = |code: &str, subject: &str| {
        findings
            .iter()
            .any(|f| f["code"] == code && f["subject"].as_str().unwrap_or("").starts_with(subject))
    };
    assert!(
        has("tls_cert_untrusted", "mailhost1.example.com/127.0.0.11"),
        "{stdout}"
    );
    assert!(
        has("ptr_missing", "mailhost1.example.com/127.0.0.11"),
        "{stdout}"
    );
    assert!(
        has("smtp_banner_bad", "mailhost2.example.com/127.0.0.12"),
        "{stdout}"
    );
    assert!(has("mta_sts_missing", "_mta-sts.example.com"), "{stdout}");
    assert!(has("tls_rpt_missing", "_smtp._tls.example.com"), "{stdout}");
    assert!(
        has("dane_missing", "_25._tcp.mailhost1.example.com"),
        "{stdout}"
    );
    let probe = &report["exchangers"][0]["addresses"][0]["smtp"];
    assert_eq!(probe["banner_code"], 220, "{probe}");
    assert_eq!(probe["starttls"], true, "{probe}");
    assert_eq!(probe["tls"]["established"], true, "{probe}");
    assert_eq!(report["route"]["status"], "ok");
}
