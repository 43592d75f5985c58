//! The Prometheus endpoint reflects what the relay did.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;

use mx_relay::{Config, Relay};

fn smtp(addr: std::net::SocketAddr, lines: &[&str]) -> Vec<String> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut replies = Vec::new();
    let mut read_reply = |replies: &mut Vec<String>| loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let done = line.as_bytes().get(3) == Some(&b' ');
        replies.push(line.trim_end().to_string());
        if done {
            break;
        }
    };
    read_reply(&mut replies);
    for l in lines {
        writer.write_all(l.as_bytes()).unwrap();
        read_reply(&mut replies);
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_accepted_messages_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::parse(
        r#"
        [server]
        listen = ["127.0.0.1:0"]
        local_domains = ["example.com"]
        catch_all_domains = ["example.com"]
        greet_pause_ms = 0
        [metrics]
        listen = "127.0.0.1:0"
        "#,
        "<test>",
    )
    .unwrap();
    config.spool.path = dir.path().join("spool");
    config.spool.min_free_bytes = 0;
    config.server.maildir_root = dir.path().join("maildir");
    let relay = Relay::start(&config).await.unwrap();
    let addr = relay.local_addrs()[0];
    let metrics = relay.metrics_addr().expect("metrics endpoint");
    let replies = tokio::task::spawn_blocking(move || {
        smtp(
            addr,
            &[
                "EHLO t\r\n",
                "MAIL FROM:<a@x.example>\r\n",
                "RCPT TO:<b@example.com>\r\n",
                "DATA\r\n",
                "Subject: m\r\n\r\nbody\r\n.\r\n",
                "QUIT\r\n",
            ],
        )
    })
    .await
    .unwrap();
    assert!(
        replies.iter().any(|r| r.starts_with("250 2.0.0")),
        "{replies:?}"
    );
    let body = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    })
    .await
    .unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("mxroute_messages_accepted_total 1"), "{body}");
    // End of DATA to 250, as a histogram with buckets around the 20 ms target.
    assert!(body.contains("mxroute_accept_seconds_count 1"), "{body}");
    assert!(
        body.contains("mxroute_accept_seconds_bucket{le=\"0.02\"}"),
        "{body}"
    );
    assert!(body.contains("mxroute_smtp_connections_total"), "{body}");
    assert!(body.contains("mxroute_spool_messages"), "{body}");
    relay.shutdown().await;
}
