//! End to end: a real relay (in-process, its own temp dirs, port 0) and real clients over
//! loopback: swaks, python3's smtplib and a raw TCP client.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use data_encoding::BASE64;
use mx_spool::{FileSpool, QueueId, RecipientStatus, Spool};

/// A queued message: id, sender, recipients with their status, body.
type SpoolEntry = (String, String, Vec<(String, RecipientStatus)>, Vec<u8>);

/// Every message in a spool, read without its lock (a forked child of another test may
/// hold a copy of the lock descriptor for a moment; see `Env::start`).
fn spool_contents(spool: &Path) -> Vec<SpoolEntry> {
    let spool = FileSpool::open_readonly(spool).expect("open the spool read-only");
    spool
        .list()
        .expect("list")
        .into_iter()
        .map(|id| {
            let m = spool.load(&id).expect("load");
            let rcpts = m
                .state
                .recipients
                .iter()
                .map(|r| (r.address.clone(), r.status))
                .collect();
            let body = spool.body(&id).expect("body");
            (id.to_string(), m.envelope.mail_from, rcpts, body)
        })
        .collect()
}

/// The body stored in the spool starts with our Received header; the rest is the message.
fn without_received(body: &[u8]) -> (String, Vec<u8>) {
    let mut file = b"Return-Path: <>\r\n".to_vec();
    file.extend_from_slice(body);
    let d = split_delivered(&file);
    (d.received, d.rest)
}

async fn shutdown_within(relay: mx_relay::Relay, bound: Duration) {
    tokio::time::timeout(bound, relay.shutdown())
        .await
        .unwrap_or_else(|_| panic!("relay did not shut down within {bound:?}"));
}

// ---- 1. delivery into Maildir -------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_message_lands_in_maildir_byte_for_byte() {
    if skip_unless(swaks_available(false), "swaks") {
        return;
    }
    let env = Env::new();
    let (relay, addr) = env.start().await;

    // CRLF line ends, a line that is only a dot, lines starting with one and two dots, 8-bit
    // UTF-8, and no line break at the end. swaks (checked on the wire) sends the headers and
    // body as they are, doubles every leading dot, and ends with "\r\n.\r\n": the message
    // the relay receives is this text followed by CRLF.
    let content = [
        "From: Sender <sender@elsewhere.example>",
        "To: Alice <alice@example.com>",
        "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        "Hello Alice,",
        ".this line starts with a dot",
        "..and this one with two",
        ".",
        "Grüße aus Köln – 8-bit UTF-8: € ✓ 日本語",
        "last line",
    ]
    .join("\r\n");
    let file = env.path().join("swaks-data.eml");
    std::fs::write(&file, &content).unwrap();
    let data_arg = format!("@{}", file.display());
    let out = swaks(
        addr,
        &[
            "--from",
            "sender@elsewhere.example",
            "--to",
            "alice@example.com",
            "--data",
            &data_arg,
        ],
    )
    .await;
    let log = transcript(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("<-  250 2.0.0 Ok: queued as "), "{log}");

    env.wait_delivered(&["alice"], 1).await;
    let files = env.maildir_new("alice");
    let d = split_delivered(&files[0]);
    assert_eq!(d.return_path, "Return-Path: <sender@elsewhere.example>\r\n");
    check_received(&d.received, "client.test", TRUSTED_IP, "ESMTP");
    assert!(
        d.received.contains("\r\n\tfor <alice@example.com>;"),
        "{:?}",
        d.received
    );
    let mut expected = content.into_bytes();
    expected.extend_from_slice(b"\r\n");
    assert_eq!(
        String::from_utf8_lossy(&d.rest),
        String::from_utf8_lossy(&expected)
    );
    assert_eq!(d.rest, expected, "byte for byte");
    // Nothing left behind in the Maildir's tmp/ or the spool's.
    assert!(names(&env.mailbox("alice").join("tmp")).is_empty());
    assert!(env.spool_tmp_files().is_empty());
    shutdown_within(relay, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_two_local_recipients_get_identical_copies_and_the_spool_drains() {
    if skip_unless(python_available(), "python3") {
        return;
    }
    let env = Env::new();
    let (relay, addr) = env.start().await;
    let message: &[u8] =
        b"From: py@elsewhere.example\r\nTo: alice@example.com, bob@example.com\r\n\
        Subject: two recipients\r\n\r\nHello both.\r\n.leading dot\r\n\r\nBye.\r\n";
    let out = python_sendmail(
        env.path(),
        addr,
        TRUSTED_IP,
        "py@elsewhere.example",
        &["alice@example.com", "Bob@Example.COM"],
        message,
    )
    .await;
    assert!(out.status.success(), "{}", transcript(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("refused: {}"),
        "{}",
        transcript(&out)
    );

    env.wait_delivered(&["alice", "bob"], 1).await;
    let alice = env.maildir_new("alice");
    let bob = env.maildir_new("bob");
    assert_eq!(alice, bob, "both mailboxes get the identical copy");
    let d = split_delivered(&alice[0]);
    assert_eq!(d.return_path, "Return-Path: <py@elsewhere.example>\r\n");
    check_received(&d.received, "py.client.test", TRUSTED_IP, "ESMTP");
    assert!(
        !d.received.contains("for <"),
        "two recipients: none named, {:?}",
        d.received
    );
    assert_eq!(d.rest, message);
    assert!(env.queue_files().is_empty());
    shutdown_within(relay, Duration::from_secs(20)).await;
}

// ---- 2. relay from a trusted network --------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_client_relays_to_an_external_domain_and_the_message_waits_in_the_spool() {
    let env = Env::new();
    let (relay, addr) = env.start().await;
    let mut c = Smtp::session(TRUSTED_IP, addr).await;
    let data = b"Subject: outbound\r\n\r\nTo the world.\r\n";
    let reply = c
        .send_message("carol@example.com", &["bob@elsewhere.example"], data)
        .await;
    assert!(reply.starts("250 2.0.0 Ok: queued as "), "{reply:?}");
    let id = reply.queue_id();
    // 250 means on disk: the message file is there the moment the reply is.
    assert!(
        env.queue_files().contains(&format!("{id}.msg")),
        "{:?}",
        env.queue_files()
    );
    c.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;

    let spool = spool_contents(env.spool());
    assert_eq!(spool.len(), 1, "{spool:?}");
    let (sid, from, rcpts, body) = &spool[0];
    assert_eq!(sid, &id);
    assert_eq!(from, "carol@example.com");
    assert_eq!(rcpts.len(), 1, "{rcpts:?}");
    assert_eq!(rcpts[0].0, "bob@elsewhere.example");
    // Pending: not delivered (nor bounced). Outbound delivery, when there is one, may have
    // tried it already: elsewhere.example is routed to a closed loopback port.
    assert!(!rcpts[0].1.is_final(), "{rcpts:?}");
    let (received, rest) = without_received(body);
    check_received(&received, "client.test", TRUSTED_IP, "ESMTP");
    assert_eq!(rest, data);
    assert!(
        !env.mailbox("bob").exists(),
        "nothing local for a remote rcpt"
    );
}

// ---- 3. never an open relay -----------------------------------------------------------------

/// The RCPT forms of nmap's smtp-open-relay script, aimed at `target` (a domain that is not
/// ours), with `ip` our address and `srv` our name.
fn nmap_rcpt_forms(target: &str, ip: &str, srv: &str) -> Vec<String> {
    let to = format!("relaytest@{target}");
    [
        format!("<{to}>"),
        format!("<relaytest%{target}@[{ip}]>"),
        format!("<relaytest%{target}@{srv}>"),
        format!("<\"{to}\">"),
        format!("<\"relaytest%{target}\">"),
        format!("<{to}@[{ip}]>"),
        format!("<\"{to}\"@[{ip}]>"),
        format!("<{to}@{srv}>"),
        format!("<@[{ip}]:{to}>"),
        format!("<@{srv}:{to}>"),
        format!("<{target}!relaytest>"),
        format!("<{target}!relaytest@[{ip}]>"),
        format!("<{target}!relaytest@{srv}>"),
    ]
    .into()
}

/// nmap's 16 (MAIL FROM, RCPT TO) pairs, in its order.
fn nmap_pairs(target: &str, ip: &str, srv: &str) -> Vec<(String, String)> {
    let rcpts = nmap_rcpt_forms(target, ip, srv);
    let literal = format!("<antispam@[{ip}]>");
    let mut pairs = vec![
        ("<>".to_string(), rcpts[0].clone()),
        (format!("<antispam@{target}>"), rcpts[0].clone()),
        (format!("<antispam@{srv}>"), rcpts[0].clone()),
    ];
    pairs.extend(rcpts.iter().map(|r| (literal.clone(), r.clone())));
    pairs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nmap_open_relay_forms_are_all_refused_to_an_untrusted_client() {
    let env = Env::new().trust_only_localhost();
    let (relay, addr) = env.start().await;
    let target = "elsewhere.example";
    let ip = addr.ip().to_string();
    let mut pairs = nmap_pairs(target, &ip, HOSTNAME);
    assert_eq!(pairs.len(), 16);
    // And every RCPT form with each of these senders (the null sender, our address as a
    // literal, and a forged sender of our own domain).
    let senders = [
        "<>".to_string(),
        format!("<antispam@[{ip}]>"),
        "<antispam@example.com>".to_string(),
    ];
    for from in &senders {
        for to in nmap_rcpt_forms(target, &ip, HOSTNAME) {
            let pair = (from.clone(), to);
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }

    let mut table = Vec::new();
    let mut accepted = Vec::new();
    for (from, to) in &pairs {
        // One connection per pair: refusals of malformed addresses count as client errors,
        // and a session that reached max_errors would answer 421 to everything after.
        let mut c = Smtp::connect_from(UNTRUSTED_IP, addr).await;
        c.expect_reply(220).await;
        c.expect(&format!("EHLO {target}"), 250).await;
        let mail = c.cmd(&format!("MAIL FROM:{from}")).await;
        let rcpt = c.cmd(&format!("RCPT TO:{to}")).await;
        let data = c.cmd("DATA").await;
        if data.code == 354 {
            c.send(b"Subject: relay test\r\n\r\nrelayed\r\n.\r\n").await;
            let _ = c.reply().await;
        }
        let _ = c.cmd("QUIT").await;
        let line = format!(
            "MAIL FROM:{from} -> {} | RCPT TO:{to} -> {} | DATA -> {}",
            mail.text.trim_end(),
            rcpt.text.trim_end(),
            data.text.trim_end()
        );
        if !(500..600).contains(&rcpt.code) || data.code == 354 {
            accepted.push(line.clone());
        }
        table.push(line);
    }
    let table = table.join("\n");
    assert!(
        accepted.is_empty(),
        "relayed or not refused with 5xx:\n{}\n\nall forms:\n{table}",
        accepted.join("\n")
    );
    // The refusals are meant: the plain senders were accepted, so RCPT itself refused.
    for from in [
        "<>",
        "<antispam@example.com>",
        &format!("<antispam@{target}>"),
    ] {
        assert!(
            table
                .lines()
                .filter(|l| l.starts_with(&format!("MAIL FROM:{from} ->")))
                .all(|l| l.contains(" -> 250 2.1.0")),
            "MAIL FROM:{from} should be accepted:\n{table}"
        );
    }
    // Every RCPT form met the policy at least once after an accepted MAIL FROM (MAIL
    // FROM:<antispam@[ip]> is itself refused, 501 5.1.7, so nmap's own pairs with it never
    // reach RCPT).
    for to in nmap_rcpt_forms(target, &ip, HOSTNAME) {
        assert!(
            table
                .lines()
                .any(|l| l.contains(" -> 250 2.1.0 Ok | RCPT TO:")
                    && l.contains(&format!("RCPT TO:{to} ->"))),
            "{to} never tried after an accepted MAIL FROM:\n{table}"
        );
    }
    println!("{table}");
    assert!(env.queue_files().is_empty(), "{:?}", env.queue_files());
    shutdown_within(relay, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_may_send_to_local_users_only() {
    if skip_unless(python_available(), "python3") {
        return;
    }
    let env = Env::new().trust_only_localhost();
    let (relay, addr) = env.start().await;
    let message = b"Subject: from outside\r\n\r\nHi Alice.\r\n";
    let out = python_sendmail(
        env.path(),
        addr,
        UNTRUSTED_IP,
        "stranger@elsewhere.example",
        &["alice@example.com"],
        message,
    )
    .await;
    assert!(out.status.success(), "{}", transcript(&out));
    env.wait_delivered(&["alice"], 1).await;
    let d = split_delivered(&env.maildir_new("alice")[0]);
    check_received(&d.received, "py.client.test", UNTRUSTED_IP, "ESMTP");
    assert_eq!(d.rest, message);

    // Unknown local users and other domains are refused to the same client.
    let mut c = Smtp::session(UNTRUSTED_IP, addr).await;
    c.expect("MAIL FROM:<stranger@elsewhere.example>", 250)
        .await;
    let r = c.expect("RCPT TO:<nobody@example.com>", 550).await;
    assert!(r.starts("550 5.1.1"), "{r:?}");
    let r = c.expect("RCPT TO:<bob@elsewhere.example>", 554).await;
    assert!(r.starts("554 5.7.1"), "{r:?}");
    c.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;
}

/// The queue id in a swaks transcript.
fn swaks_queue_id(log: &str) -> String {
    let at = log
        .find("queued as ")
        .unwrap_or_else(|| panic!("no queue id:\n{log}"));
    log[at + "queued as ".len()..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticated_client_may_relay_after_starttls() {
    if skip_unless(swaks_available(true), "swaks with TLS (Net::SSLeay)") {
        return;
    }
    let env = Env::new().trust_only_localhost();
    let (relay, addr) = env.start().await;
    // swaks connects from the untrusted address: only AUTH can let it relay.
    let relay_args = |password: &'static str| {
        vec![
            "--local-interface",
            UNTRUSTED,
            "--tls",
            "--auth",
            "PLAIN",
            "--auth-user",
            ACCOUNT,
            "--auth-password",
            password,
            "--from",
            ACCOUNT,
            "--to",
            "dave@elsewhere.example",
        ]
    };

    let out = swaks(addr, &relay_args(PASSWORD)).await;
    let log = transcript(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("<~  235 2.7.0"), "{log}");
    assert!(log.contains("<~  250 2.0.0 Ok: queued as "), "{log}");
    let id = swaks_queue_id(&log);
    assert!(env.queue_files().contains(&format!("{id}.msg")), "{log}");

    let out = swaks(addr, &relay_args("wrong password")).await;
    let log = transcript(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("<~* 535 5.7.8"), "{log}");

    // TLS alone is not a licence to relay.
    let out = swaks(
        addr,
        &[
            "--local-interface",
            UNTRUSTED,
            "--tls",
            "--from",
            ACCOUNT,
            "--to",
            "dave@elsewhere.example",
        ],
    )
    .await;
    let log = transcript(&out);
    assert!(!out.status.success(), "{log}");
    assert!(log.contains("<~* 554 5.7.1"), "{log}");

    // Before STARTTLS, AUTH is neither offered nor accepted.
    let mut c = Smtp::connect_from(UNTRUSTED_IP, addr).await;
    c.expect_reply(220).await;
    let ehlo = c.expect("EHLO client.test", 250).await;
    assert!(ehlo.text.contains("250-STARTTLS\r\n"), "{ehlo:?}");
    assert!(!ehlo.text.contains("AUTH"), "{ehlo:?}");
    let plain = BASE64.encode(format!("\0{ACCOUNT}\0{PASSWORD}").as_bytes());
    let r = c.expect(&format!("AUTH PLAIN {plain}"), 530).await;
    assert!(r.starts("530 5.7.0"), "{r:?}");
    c.expect("MAIL FROM:<alice@example.com>", 250).await;
    c.expect("RCPT TO:<dave@elsewhere.example>", 554).await;
    c.expect("QUIT", 221).await;

    shutdown_within(relay, Duration::from_secs(20)).await;
    let spool = spool_contents(env.spool());
    assert_eq!(spool.len(), 1, "only the authenticated message: {spool:?}");
    let (sid, from, rcpts, body) = &spool[0];
    assert_eq!(sid, &id);
    assert_eq!(from, ACCOUNT);
    assert_eq!(rcpts.len(), 1, "{rcpts:?}");
    assert_eq!(rcpts[0].0, "dave@elsewhere.example");
    assert!(!rcpts[0].1.is_final(), "{rcpts:?}");
    let (received, _) = without_received(body);
    check_received(&received, "client.test", UNTRUSTED_IP, "ESMTPSA");
    let spool = FileSpool::open_readonly(env.spool()).unwrap();
    let m = spool.load(&id.parse::<QueueId>().unwrap()).unwrap();
    assert_eq!(m.envelope.auth_user.as_deref(), Some(ACCOUNT));
    assert_eq!(m.envelope.client_ip, Some(UNTRUSTED_IP));
}

// ---- 4. SMTP smuggling ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggled_end_of_data_variants_are_refused_whole() {
    let env = Env::new().trust_only_localhost();
    let (relay, addr) = env.start().await;
    let variants: [&[u8]; 9] = [
        b"\n.\n",
        b"\r.\r",
        b"\r.\n",
        b"\n.\r",
        b"\n.\r\n",
        b"\r\n.\n",
        b"\r.\r\n",
        b"\r\n.\r",
        b"\r\n\x00.\r\n",
    ];
    const SMUGGLED: &[u8] = b"MAIL FROM:<evil@evil.example>\r\nRCPT TO:<alice@example.com>\r\n\
        DATA\r\nsmuggled\r\n.\r\n";
    let mut problems = Vec::new();
    for (i, variant) in variants.iter().enumerate() {
        let mut c = Smtp::session(UNTRUSTED_IP, addr).await;
        let from = format!("good-{i}@sender.example");
        c.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        c.expect("RCPT TO:<alice@example.com>", 250).await;
        c.expect("DATA", 354).await;
        // The data with the variant and the smuggled transaction, then QUIT: everything at
        // once, as a pipelining attacker would send it.
        let mut wire = format!("Subject: smuggling {i}\r\n\r\nbefore").into_bytes();
        wire.extend_from_slice(variant);
        wire.extend_from_slice(SMUGGLED);
        wire.extend_from_slice(b"QUIT\r\n");
        c.send(&wire).await;
        let (rest, _) = c.read_to_end().await;
        let replies = String::from_utf8_lossy(&rest).into_owned();
        let queued = replies.matches("Ok: queued as").count();
        let data_starts = replies.matches("354 ").count();
        let shown = format!("variant {variant:?}: replies {replies:?}");
        println!("{shown}");
        if queued > 1 || data_starts > 0 {
            problems.push(format!("{shown}: a second transaction ran"));
        }
        // Every variant is refused whole: a bare CR or LF by the session (550 5.5.2), and
        // the NUL one because a next hop that drops NUL octets (some do) would see an end
        // of data there and run the smuggled transaction when we relay the message.
        let expected = if variant.contains(&0) {
            "550 5.6.0 "
        } else {
            "550 5.5.2 "
        };
        if !replies.starts_with(expected) {
            problems.push(format!("{shown}: expected {expected:?}"));
        }
        if !replies.ends_with("221 2.0.0 Bye\r\n") {
            problems.push(format!("{shown}: QUIT not answered last"));
        }
    }
    shutdown_within(relay, Duration::from_secs(20)).await;

    // Every message the relay kept, in the spool or delivered, by sender.
    let mut kept: Vec<(String, Vec<u8>)> = spool_contents(env.spool())
        .into_iter()
        .map(|(_, from, _, body)| (from, without_received(&body).1))
        .collect();
    for file in env.maildir_new("alice") {
        let d = split_delivered(&file);
        let from = d
            .return_path
            .trim_end()
            .trim_start_matches("Return-Path: <")
            .trim_end_matches('>')
            .to_string();
        kept.push((from, d.rest));
    }
    for (i, _) in variants.iter().enumerate() {
        let from = format!("good-{i}@sender.example");
        let n = kept.iter().filter(|(f, _)| *f == from).count();
        if n > 1 {
            problems.push(format!("variant {i}: {n} messages kept"));
        }
    }
    let evil: Vec<_> = kept
        .iter()
        .filter(|(f, _)| !f.ends_with("@sender.example"))
        .collect();
    if !evil.is_empty() {
        problems.push(format!("messages from other senders: {evil:?}"));
    }
    for (from, body) in &kept {
        // The commands of the smuggled transaction (the stored body has no final dot).
        let commands = &SMUGGLED[..SMUGGLED.len() - b"smuggled\r\n.\r\n".len()];
        if body.windows(commands.len()).any(|w| w == commands) {
            problems.push(format!(
                "the message of {from} carries the smuggled transaction: {:?}",
                String::from_utf8_lossy(body)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- 5. limits ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_over_512_octets_gets_500() {
    let env = Env::new();
    let (relay, addr) = env.start().await;
    let mut c = Smtp::session(TRUSTED_IP, addr).await;
    // 512 octets with the CRLF is the limit (RFC 5321 §4.5.3.1.4); one more is refused.
    let at_limit = format!("NOOP {}", "x".repeat(512 - 2 - 5));
    assert_eq!(at_limit.len() + 2, 512);
    c.expect(&at_limit, 250).await;
    let over = format!("NOOP {}", "x".repeat(512 - 2 - 5 + 1));
    let r = c.expect(&over, 500).await;
    assert!(r.starts("500 5.5.6"), "{r:?}");
    // Far over, and the tail of the long line is never taken for a command.
    let r = c.cmd(&format!("NOOP {}QUIT", "y".repeat(100_000))).await;
    assert!(r.starts("500 5.5.6"), "{r:?}");
    // The session goes on.
    c.expect("NOOP", 250).await;
    c.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_max_message_size_gets_552_and_nothing_is_stored() {
    let mut env = Env::new();
    env.config.server.max_message_size = 10 * 1024;
    let (relay, addr) = env.start().await;
    let mut c = Smtp::session(TRUSTED_IP, addr).await;
    let ehlo = c.cmd("EHLO client.test").await;
    assert!(ehlo.text.contains("250-SIZE 10240\r\n"), "{ehlo:?}");

    // 20 KiB in 80-octet lines, no SIZE= declared: refused at the end of data.
    let line = format!("{}\r\n", "z".repeat(78));
    let big = line.repeat(20 * 1024 / line.len());
    let r = c
        .send_message("sender@example.com", &["alice@example.com"], big.as_bytes())
        .await;
    assert!(r.starts("552 5.3.4"), "{r:?}");
    assert!(env.queue_files().is_empty(), "{:?}", env.queue_files());
    assert!(env.spool_tmp_files().is_empty());

    // Declared too big: refused at MAIL.
    let r = c.cmd("MAIL FROM:<sender@example.com> SIZE=20480").await;
    assert!(r.starts("552 5.3.4"), "{r:?}");

    // The session is still usable, and a message under the limit goes through.
    let small = line.repeat(10);
    let r = c
        .send_message(
            "sender@example.com",
            &["alice@example.com"],
            small.as_bytes(),
        )
        .await;
    assert_eq!(r.code, 250, "{r:?}");
    env.wait_delivered(&["alice"], 1).await;
    assert_eq!(
        split_delivered(&env.maildir_new("alice")[0]).rest,
        small.as_bytes()
    );
    c.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_recipient_over_max_recipients_gets_452() {
    let mut env = Env::new();
    env.config.server.max_recipients = 3;
    let (relay, addr) = env.start().await;
    let mut c = Smtp::session(TRUSTED_IP, addr).await;
    c.expect("MAIL FROM:<sender@example.com>", 250).await;
    for n in 1..=3 {
        c.expect(&format!("RCPT TO:<r{n}@elsewhere.example>"), 250)
            .await;
    }
    let r = c.expect("RCPT TO:<r4@elsewhere.example>", 452).await;
    assert!(r.starts("452 4.5.3"), "{r:?}");
    // The three accepted still make a message.
    c.expect("DATA", 354).await;
    c.send(b"Subject: three\r\n\r\nx\r\n.\r\n").await;
    let id = c.expect_reply(250).await.queue_id();
    c.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;
    let spool = spool_contents(env.spool());
    assert_eq!(spool.len(), 1);
    assert_eq!(spool[0].0, id);
    let rcpts: Vec<&str> = spool[0].2.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "r1@elsewhere.example",
            "r2@elsewhere.example",
            "r3@elsewhere.example"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_gets_421_after_the_command_timeout() {
    let mut env = Env::new();
    env.config.server.command_timeout_secs = 1;
    let (relay, addr) = env.start().await;
    let mut c = Smtp::session(TRUSTED_IP, addr).await;
    let start = Instant::now();
    // Say nothing; the next thing to arrive is the server giving up.
    let r = c.reply().await;
    let waited = start.elapsed();
    assert!(r.starts("421 4.4.2"), "{r:?}");
    let (rest, _) = c.read_to_end().await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the timeout"
    );
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    shutdown_within(relay, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn third_connection_from_one_address_gets_421() {
    let mut env = Env::new();
    env.config.server.max_connections_per_ip = 2;
    let (relay, addr) = env.start().await;
    let mut first = Smtp::session(TRUSTED_IP, addr).await;
    let _second = Smtp::session(TRUSTED_IP, addr).await;
    let mut third = Smtp::connect_from(TRUSTED_IP, addr).await;
    let (all, _) = third.read_to_end().await;
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("421 4.7.0 "), "{all:?}");
    assert_eq!(all.matches("\r\n").count(), 1, "{all:?}");
    // Another address has its own allowance.
    let mut other = Smtp::session(UNTRUSTED_IP, addr).await;
    other.expect("QUIT", 221).await;
    // Once one of the two leaves, its slot is free again. (The slot is given back just after
    // the socket closes, so the first try may still be turned away.)
    first.expect("QUIT", 221).await;
    let _ = first.read_to_end().await;
    let start = Instant::now();
    loop {
        let mut c = Smtp::connect_from(TRUSTED_IP, addr).await;
        let r = c.reply().await;
        if r.code == 220 {
            c.expect("QUIT", 221).await;
            break;
        }
        assert!(r.starts("421 4.7.0"), "{r:?}");
        assert!(
            start.elapsed() < EVENT_BOUND,
            "slot not given back within {EVENT_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shutdown_within(relay, Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_talker_gets_554_and_no_greeting() {
    let mut env = Env::new().trust_only_localhost();
    env.config.server.greet_pause_ms = 500;
    let (relay, addr) = env.start().await;

    let mut talker = Smtp::connect_from(UNTRUSTED_IP, addr).await;
    talker.send(b"EHLO x\r\n").await;
    let (all, reset) = talker.read_to_end().await;
    let all = String::from_utf8_lossy(&all);
    assert!(all.starts_with("554 5.5.0 "), "{all:?} (reset: {reset})");
    assert!(!all.contains("220"), "{all:?}");
    assert_eq!(all.matches("\r\n").count(), 1, "{all:?}");

    // A patient stranger is greeted after the pause; the trusted client without one.
    let start = Instant::now();
    let mut patient = Smtp::connect_from(UNTRUSTED_IP, addr).await;
    patient.expect_reply(220).await;
    assert!(
        start.elapsed() >= Duration::from_millis(450),
        "greeted after {:?}",
        start.elapsed()
    );
    patient.expect("QUIT", 221).await;
    let mut trusted = Smtp::connect_from(TRUSTED_IP, addr).await;
    trusted.send(b"EHLO at-once.test\r\n").await;
    trusted.expect_reply(220).await;
    trusted.expect_reply(250).await;
    trusted.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;
}

// ---- 6. disk full ---------------------------------------------------------------------------

/// A tmpfs mounted for the test, unmounted when dropped (lazily if still busy).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs {
                dir: dir.to_path_buf(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a failed test left the relay's files open): detach it anyway.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_spool_disk_gets_452_and_leaves_nothing_partial() {
    let mut env = Env::new();
    let fs_dir = env.path().join("spoolfs");
    let _tmpfs = match Tmpfs::mount(&fs_dir, "512k") {
        Ok(t) => t,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount a tmpfs for the disk-full test, and CI is set: {e}"
            );
            println!("SKIPPED full_spool_disk_gets_452_and_leaves_nothing_partial: mount: {e}");
            return;
        }
    };
    env.config.spool.path = fs_dir.join("spool");
    env.config.spool.min_free_bytes = 0;
    let (relay, addr) = env.start().await;
    let mut c = Smtp::session(TRUSTED_IP, addr).await;
    let line = format!("{}\r\n", "k".repeat(98));
    let message = |kib: usize, tag: &str| {
        format!(
            "Subject: {tag}\r\n\r\n{}",
            line.repeat(kib * 1024 / line.len())
        )
        .into_bytes()
    };

    // Stored: 100 KiB, for a remote recipient so that it stays in the spool.
    let first = message(100, "first");
    let r = c
        .send_message("sender@example.com", &["far@elsewhere.example"], &first)
        .await;
    let first_id = r.queue_id();
    // Does not fit: the real ENOSPC path (no early check with min_free_bytes = 0).
    let r = c
        .send_message(
            "sender@example.com",
            &["far@elsewhere.example"],
            &message(600, "too big for the disk"),
        )
        .await;
    assert!(r.starts("452 4.3.1"), "{r:?}");
    assert!(
        env.spool_tmp_files().is_empty(),
        "{:?}",
        env.spool_tmp_files()
    );
    assert_eq!(env.queue_files(), [format!("{first_id}.msg")]);
    // The space of the refused message is free again: a small one fits.
    let small = message(2, "small");
    let r = c
        .send_message("sender@example.com", &["far@elsewhere.example"], &small)
        .await;
    let small_id = r.queue_id();
    c.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;

    // The early check: less free space than min_free_bytes refuses before writing anything.
    env.config.spool.min_free_bytes = 1 << 30;
    let (relay, addr) = env.start().await;
    let mut c = Smtp::session(TRUSTED_IP, addr).await;
    let r = c
        .send_message(
            "sender@example.com",
            &["far@elsewhere.example"],
            &message(1, "tiny"),
        )
        .await;
    assert!(r.starts("452 4.3.1"), "{r:?}");
    c.expect("QUIT", 221).await;
    shutdown_within(relay, Duration::from_secs(20)).await;

    assert!(
        env.spool_tmp_files().is_empty(),
        "{:?}",
        env.spool_tmp_files()
    );
    let spool = spool_contents(env.spool());
    let ids: Vec<&str> = spool.iter().map(|m| m.0.as_str()).collect();
    assert_eq!(ids, [first_id.as_str(), small_id.as_str()]);
    assert_eq!(without_received(&spool[0].3).1, first, "intact");
    assert_eq!(without_received(&spool[1].3).1, small, "intact");
}

// ---- 7. graceful shutdown -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_421_to_idle_sessions_and_a_restart_delivers_pending_copies() {
    let mut env = Env::new();
    // The Maildir root is a plain file: local delivery fails and the copy stays pending.
    let blocked = env.path().join("maildir");
    std::fs::write(&blocked, b"not a directory").unwrap();
    env.config.server.maildir_root = blocked.clone();
    let (relay, addr) = env.start().await;

    let mut sender = Smtp::session(TRUSTED_IP, addr).await;
    let data = b"Subject: survives a restart\r\n\r\nStill here.\r\n";
    let r = sender
        .send_message("sender@elsewhere.example", &["alice@example.com"], data)
        .await;
    let id = r.queue_id();
    let mut idle = Smtp::session(TRUSTED_IP, addr).await;

    let stopping = tokio::spawn(relay.shutdown());
    for c in [&mut idle, &mut sender] {
        let r = c.reply().await;
        assert!(r.starts("421 4.3.2"), "{r:?}");
        let (rest, _) = c.read_to_end().await;
        assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    }
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("shutdown finishes")
        .expect("shutdown task");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );

    let spool = spool_contents(env.spool());
    assert_eq!(spool.len(), 1, "{spool:?}");
    assert_eq!(spool[0].0, id);
    assert!(
        !spool[0].2[0].1.is_final(),
        "the local copy is still pending: {:?}",
        spool[0].2
    );

    // Repair the Maildir root and start again on the same directories.
    std::fs::remove_file(&blocked).unwrap();
    let (relay, _) = env.start().await;
    env.wait_delivered(&["alice"], 1).await;
    let d = split_delivered(&env.maildir_new("alice")[0]);
    assert_eq!(d.return_path, "Return-Path: <sender@elsewhere.example>\r\n");
    assert_eq!(d.rest, data);
    shutdown_within(relay, Duration::from_secs(20)).await;
}
