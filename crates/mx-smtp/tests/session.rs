//! The server session driven through whole conversations.

mod common;

use common::{Driver, Seen, config};
use mx_smtp::{
    BodyType, EnhancedStatus, MessageDecision, PeerInfo, RcptDecision, Reply, ServerConfig,
    ServerSession, SmtpError,
};
use std::sync::Arc;

fn greeted(config: ServerConfig) -> Driver {
    let mut d = Driver::new(config);
    d.write(b"EHLO client.test\r\n");
    d.clear();
    d
}

fn tls_session(config: ServerConfig) -> Driver {
    let mut d = Driver::with_peer(
        config,
        PeerInfo {
            tls: true,
            ..common::peer()
        },
    );
    d.write(b"EHLO client.test\r\n");
    d.clear();
    d
}

#[test]
fn greeting_and_ehlo() {
    let s = ServerSession::new(Arc::new(config()), common::peer());
    assert_eq!(s.greeting().to_bytes(), b"220 mx.test ESMTP\r\n");
    let mut d = Driver::new(config());
    d.write(b"EHLO client.test\r\n");
    assert_eq!(
        d.replies(),
        [concat!(
            "250-mx.test\r\n",
            "250-PIPELINING\r\n",
            "250-SIZE 26214400\r\n",
            "250-8BITMIME\r\n",
            "250-SMTPUTF8\r\n",
            "250-ENHANCEDSTATUSCODES\r\n",
            "250-STARTTLS\r\n",
            "250 CHUNKING\r\n",
        )]
    );
    assert_eq!(d.s.helo(), Some("client.test"));
}

#[test]
fn ehlo_offers_auth_only_under_tls_and_starttls_only_before() {
    let d = tls_session(config());
    let mut d2 = Driver::with_peer(
        config(),
        PeerInfo {
            tls: true,
            ..common::peer()
        },
    );
    d2.write(b"EHLO c\r\n");
    let ehlo = d2.replies()[0];
    assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"));
    assert!(!ehlo.contains("STARTTLS"));
    drop(d);

    let plain_auth = ServerConfig {
        auth_requires_tls: false,
        starttls_available: false,
        chunking: false,
        ..config()
    };
    let mut d = Driver::new(plain_auth);
    d.write(b"EHLO c\r\n");
    let ehlo = d.replies()[0];
    assert!(ehlo.contains("AUTH PLAIN LOGIN"));
    assert!(!ehlo.contains("STARTTLS"));
    assert!(ehlo.ends_with("250 AUTH PLAIN LOGIN\r\n"));
}

#[test]
fn helo_has_no_extensions() {
    let mut d = Driver::new(config());
    d.write(b"HELO client.test\r\n")
        .write(b"MAIL FROM:<a@b.test> SIZE=10\r\n")
        .write(b"MAIL FROM:<a@b.test>\r\n")
        .write(b"BDAT 3\r\nabc")
        .write(b"STARTTLS\r\n")
        .write(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    assert_eq!(
        d.codes(),
        [
            "250 mx.test",
            "555 5.5.4 Parameter not recognized or not implemented: no extensions after HELO",
            "250 2.1.0 Ok",
            "503 5.5.1 Bad sequence of commands: BDAT needs EHLO",
            "503 5.5.1 Bad sequence of commands: send EHLO first",
            "503 5.5.1 Bad sequence of commands: send EHLO first",
        ]
    );
}

#[test]
fn full_transaction() {
    let mut d = greeted(config());
    d.write(b"MAIL FROM:<alice@example.net> BODY=8BITMIME\r\n")
        .write(b"RCPT TO:<bob@example.org>\r\n")
        .write(b"DATA\r\n")
        .write(b"Subject: hi\r\n\r\nhello\r\n.\r\n")
        .write(b"QUIT\r\n");
    assert_eq!(
        d.replies(),
        [
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "354 End data with <CR><LF>.<CR><LF>\r\n",
            "250 2.0.0 Ok: queued as Q1\r\n",
            "221 2.0.0 Bye\r\n",
        ]
    );
    let m = d.messages()[0];
    assert_eq!(m.body, b"Subject: hi\r\n\r\nhello\r\n");
    assert_eq!(m.envelope.mail_from.as_deref(), Some("alice@example.net"));
    assert_eq!(m.envelope.recipients, ["bob@example.org"]);
    assert_eq!(m.envelope.helo, "client.test");
    assert_eq!(m.envelope.body_type, BodyType::EightBitMime);
    assert!(m.envelope.esmtp && !m.envelope.tls && !m.envelope.chunked);
    assert_eq!(m.envelope.received_protocol(), "ESMTP");
    assert!(d.closed());
}

#[test]
fn pipelined_with_pending_decision_keeps_order() {
    let mut d = greeted(config());
    // One write: MAIL, a refused RCPT, an accepted RCPT, DATA, the message, a second
    // transaction and QUIT. Each RCPT stops the session until its decision.
    d.write(
        concat!(
            "MAIL FROM:<alice@example.net>\r\n",
            "RCPT TO:<nobody@example.org>\r\n",
            "RCPT TO:<bob@example.org>\r\n",
            "DATA\r\n",
            "one\r\n",
            ".\r\n",
            "MAIL FROM:<>\r\n",
            "RCPT TO:<carol@example.org>\r\n",
            "DATA\r\n",
            "two\r\n",
            ".\r\n",
            "QUIT\r\n",
        )
        .as_bytes(),
    );
    let seen: Vec<String> = d
        .seen
        .iter()
        .map(|e| match e {
            Seen::Reply(r) => r.trim_end().to_string(),
            Seen::Rcpt(a) => format!("check {a}"),
            Seen::Message(m) => format!("message {:?}", String::from_utf8_lossy(&m.body)),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "250 2.1.0 Ok",
            "check nobody@example.org",
            "550 5.1.1 No such user",
            "check bob@example.org",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "message \"one\\r\\n\"",
            "250 2.0.0 Ok: queued as Q1",
            "250 2.1.0 Ok",
            "check carol@example.org",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "message \"two\\r\\n\"",
            "250 2.0.0 Ok: queued as Q2",
            "221 2.0.0 Bye",
            "Close",
        ]
    );
    assert_eq!(d.messages()[1].envelope.mail_from, None);
}

#[test]
fn nothing_is_processed_while_a_decision_is_pending() {
    let mut s = ServerSession::new(Arc::new(config()), common::peer());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nNOOP\r\n");
    let mut replies = 0;
    let address = loop {
        match s.next_event().unwrap() {
            mx_smtp::Event::Reply(_) => replies += 1,
            mx_smtp::Event::CheckRecipient { address, sender } => {
                assert_eq!(sender.as_deref(), Some("a@b.test"));
                break address;
            }
            other => panic!("{other:?}"),
        }
    };
    assert_eq!((replies, address.as_str()), (2, "x@y.test"));
    s.feed(b"QUIT\r\n");
    assert!(s.next_event().is_none());
    assert!(s.next_event().is_none());
    assert_eq!(s.buffered(), 12);
    // Wrong answers are refused and change nothing.
    assert!(matches!(
        s.message_decision(MessageDecision::Accepted {
            queue_id: "x".into()
        }),
        Err(SmtpError::UnexpectedDecision { .. })
    ));
    assert!(matches!(
        s.auth_decision(true),
        Err(SmtpError::UnexpectedDecision { .. })
    ));
    assert!(matches!(
        s.tls_started(),
        Err(SmtpError::UnexpectedDecision { .. })
    ));
    assert_eq!(
        s.recipient_decision(RcptDecision::Reject(Reply::new(250, None, "no"))),
        Err(SmtpError::NotARejection { code: 250 })
    );
    assert_eq!(
        s.recipient_decision(RcptDecision::Reject(Reply::new(
            550,
            EnhancedStatus::new(4, 1, 1),
            "no"
        ))),
        Err(SmtpError::NotARejection { code: 550 })
    );
    s.recipient_decision(RcptDecision::Accept).unwrap();
    let rest: Vec<String> = std::iter::from_fn(|| s.next_event())
        .map(|e| format!("{e:?}"))
        .collect();
    assert_eq!(rest.len(), 4, "{rest:?}"); // 250 2.1.5, 250 NOOP, 221, Close
    assert!(rest[3].contains("Close"));
    assert!(s.recipient_decision(RcptDecision::Accept).is_err());
}

#[test]
fn driver_421_closes() {
    let mut s = ServerSession::new(Arc::new(config()), common::peer());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nNOOP\r\n");
    while let Some(e) = s.next_event() {
        if let mx_smtp::Event::CheckRecipient { .. } = e {
            s.recipient_decision(RcptDecision::Reject(Reply::new(
                421,
                EnhancedStatus::new(4, 3, 2),
                "shutting down",
            )))
            .unwrap();
        }
    }
    assert!(s.is_closed());
}

#[test]
fn sequence_errors() {
    let mut d = Driver::new(config());
    d.write(b"MAIL FROM:<a@b.test>\r\n")
        .write(b"EHLO c\r\n")
        .write(b"RCPT TO:<a@b.test>\r\n")
        .write(b"DATA\r\n")
        .write(b"MAIL FROM:<a@b.test>\r\n")
        .write(b"MAIL FROM:<a@b.test>\r\n")
        .write(b"DATA\r\n")
        .write(b"RCPT TO:<nobody@b.test>\r\n")
        .write(b"DATA\r\n")
        .write(b"RSET\r\n")
        .write(b"RCPT TO:<a@b.test>\r\n");
    assert_eq!(
        d.codes(),
        [
            "503 5.5.1 Bad sequence of commands: send HELO/EHLO first",
            "250 CHUNKING",
            "503 5.5.1 Bad sequence of commands: need MAIL before RCPT",
            "503 5.5.1 Bad sequence of commands: need MAIL first",
            "250 2.1.0 Ok",
            "503 5.5.1 Bad sequence of commands: nested MAIL command",
            "503 5.5.1 Bad sequence of commands: need RCPT first",
            "550 5.1.1 No such user",
            "554 5.5.1 No valid recipients",
            "250 2.0.0 Ok",
            "503 5.5.1 Bad sequence of commands: need MAIL before RCPT",
        ]
    );
}

#[test]
fn simple_commands() {
    let mut d = Driver::new(config());
    d.write(b"NOOP\r\nVRFY bob\r\nEXPN list\r\nHELP\r\nRSET\r\nFOO bar\r\nETRN x\r\nqUiT\r\n");
    assert_eq!(
        d.codes(),
        [
            "250 2.0.0 Ok",
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
            "502 5.5.1 Command not implemented",
            "214 2.0.0 See RFC 5321",
            "250 2.0.0 Ok",
            "500 5.5.1 Command unrecognized",
            "502 5.5.1 Command not implemented",
            "221 2.0.0 Bye",
        ]
    );
    assert!(d.closed());
}

#[test]
fn syntax_errors() {
    let mut d = greeted(config());
    d.write(b"EHLO\r\n")
        .write(b"MAIL FROM:a@b.test\r\n")
        .write(b"MAIL FROM:<a@b.test> BODY=9BIT\r\n")
        .write(b"MAIL FROM:<a@b.test> RET=FULL\r\n")
        .write(b"MAIL FROM:<a@b.test> FOO=1\r\n")
        .write(b"MAIL FROM:<a@>\r\n")
        .write(b"MAIL FROM:<a..b@c.test>\r\n")
        .write(b"MAIL FROM:<Postmaster>\r\n")
        .write(b"VRFY\r\n");
    assert_eq!(
        d.codes(),
        [
            "501 5.5.2 Syntax: EHLO domain",
            "501 5.5.2 Syntax: MAIL FROM:<reverse-path> [parameters]",
            "501 5.5.4 Invalid argument: BODY",
            "555 5.5.4 Parameter not recognized or not implemented: not offered",
            "555 5.5.4 Parameter not recognized or not implemented: FOO=1",
            "501 5.1.7 Bad sender address syntax",
            "501 5.1.7 Bad sender address syntax",
            "501 5.1.7 Bad sender address syntax",
            "501 5.5.2 Syntax: VRFY string",
        ]
    );
}

#[test]
fn bare_cr_or_lf_in_command_line_refuses_the_line() {
    let mut d = greeted(config());
    // Only CRLF ends a command line, so each of these is ONE line, refused whole: the MAIL
    // hidden after a bare LF or CR never runs.
    d.write(b"NOOP\nMAIL FROM:<evil@x.test>\r\n")
        .write(b"NOOP\rMAIL FROM:<evil@x.test>\r\n")
        .write(b"RSET\r\r\n")
        .write(b"MAIL FROM:<a@b.test>\r\n");
    assert_eq!(
        d.codes(),
        [
            "500 5.5.2 Syntax error: bare <CR> or <LF> in command line",
            "500 5.5.2 Syntax error: bare <CR> or <LF> in command line",
            "500 5.5.2 Syntax error: bare <CR> or <LF> in command line",
            "250 2.1.0 Ok",
        ]
    );
}

#[test]
fn invalid_utf8_is_refused() {
    let mut d = greeted(config());
    d.write(b"NOOP \xff\xfe\r\n");
    assert_eq!(d.codes(), ["500 5.5.2 Syntax error: invalid UTF-8"]);
}

#[test]
fn addresses() {
    let mut d = greeted(config());
    d.write(b"MAIL FROM:<>\r\n")
        .write(b"RCPT TO:<Postmaster>\r\n")
        .write(b"RCPT TO:<POSTMASTER>\r\n")
        .write(b"RCPT TO:<@relay1.test,@relay2.test:user@c.test>\r\n")
        .write(b"RCPT TO:<a%b@c.test>\r\n")
        .write(b"RCPT TO:<a!b@c.test>\r\n")
        .write(b"RCPT TO:<\"odd user\"@c.test>\r\n")
        .write(b"RCPT TO:<>\r\n")
        .write("RCPT TO:<jörg@c.test>\r\n".as_bytes())
        .write(b"RCPT TO:<a@b.test> NOTIFY=NEVER\r\n")
        .write(b"RCPT TO:<a@[192.0.2.1]>\r\n");
    let checked: Vec<&str> = d
        .seen
        .iter()
        .filter_map(|e| match e {
            Seen::Rcpt(a) => Some(a.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        checked,
        [
            "postmaster",
            "postmaster",
            "user@c.test",
            "a%b@c.test",
            "a!b@c.test",
            "\"odd user\"@c.test",
        ]
    );
    assert_eq!(
        &d.codes()[7..],
        [
            "501 5.1.3 Bad recipient address syntax",
            "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter on MAIL",
            "555 5.5.4 Parameter not recognized or not implemented: not offered",
            // smtp-proto does not read address literals.
            "501 5.1.3 Bad recipient address syntax",
        ]
    );
}

#[test]
fn smtputf8_addresses() {
    let mut d = greeted(config());
    d.write("MAIL FROM:<jörg@exämple.test>\r\n".as_bytes())
        .write("MAIL FROM:<jörg@exämple.test> SMTPUTF8\r\n".as_bytes())
        .write("RCPT TO:<用户@例子.test>\r\n".as_bytes())
        .write(b"DATA\r\n")
        .write(b"x\r\n.\r\n");
    assert_eq!(
        d.codes()[..3],
        [
            "553 5.6.7 Non-ASCII address requires the SMTPUTF8 parameter on MAIL",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
        ]
    );
    let m = d.messages()[0];
    assert!(m.envelope.smtputf8);
    assert_eq!(m.envelope.recipients, ["用户@例子.test"]);
    assert_eq!(m.envelope.received_protocol(), "UTF8SMTP");
}

#[test]
fn dot_unstuffing_and_exact_body() {
    let mut d = greeted(config());
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    d.write(b"..\r\n...\r\n.a.b.\r\n a\r\n\r\n\r\n.. x\r\nend\x00\x7f\xff\r\n.\r\n");
    assert_eq!(
        d.messages()[0].body,
        b".\r\n..\r\na.b.\r\n a\r\n\r\n\r\n. x\r\nend\x00\x7f\xff\r\n"
    );
    // Empty body.
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n.\r\n");
    assert_eq!(d.messages()[1].body, b"");
}

#[test]
fn long_command_line() {
    let mut d = greeted(config());
    // 512 octets with CRLF is allowed, 513 is not.
    let ok = format!("NOOP {}\r\n", "x".repeat(512 - 7));
    let long = format!("NOOP {}\r\n", "x".repeat(513 - 7));
    d.write(ok.as_bytes())
        .write(long.as_bytes())
        .write(b"NOOP\r\n");
    assert_eq!(
        d.codes(),
        ["250 2.0.0 Ok", "500 5.5.6 Line too long", "250 2.0.0 Ok"]
    );

    // A very long line in small pieces is not buffered and its tail is not a command.
    let mut d = greeted(config());
    d.write(b"NOOP ");
    for _ in 0..1000 {
        d.write(&[b'x'; 100]);
        assert!(d.s.buffered() <= 512);
    }
    d.write(b" QUIT\r\nNOOP\r\n");
    assert_eq!(d.codes(), ["500 5.5.6 Line too long", "250 2.0.0 Ok"]);
    assert!(!d.closed());
}

#[test]
fn long_text_line() {
    let mut d = greeted(config());
    let ok = format!("{}\r\n", "y".repeat(998));
    let long = format!("{}\r\n", "y".repeat(999));
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    d.write(format!(".{ok}.\r\n").as_bytes()); // the stuffed dot does not count
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    d.write(format!("{long}.\r\n").as_bytes());
    let codes = d.codes();
    assert_eq!(codes[3], "250 2.0.0 Ok: queued as Q1");
    assert_eq!(
        codes[7],
        "550 5.5.6 Message refused: a text line is longer than 1000 octets"
    );
    assert_eq!(d.messages().len(), 1);
}

#[test]
fn size_limits() {
    let small = ServerConfig {
        max_message_size: 100,
        ..config()
    };
    let mut d = greeted(small.clone());
    d.write(b"MAIL FROM:<a@b.test> SIZE=101\r\n")
        .write(b"MAIL FROM:<a@b.test> SIZE=99999999999999999999999999\r\n")
        .write(b"MAIL FROM:<a@b.test> SIZE=100\r\n")
        .write(b"RCPT TO:<c@d.test>\r\nDATA\r\n");
    assert_eq!(
        d.codes(),
        [
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
        ]
    );
    d.clear();
    // 1000 octets, in pieces; the session reads to the end and then refuses.
    for _ in 0..10 {
        d.write(&[b'z'; 98]).write(b"\r\n");
    }
    assert!(d.seen.is_empty());
    d.write(b".\r\nNOOP\r\n");
    assert_eq!(
        d.codes(),
        [
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "250 2.0.0 Ok"
        ]
    );
    // Exactly the limit is fine.
    let mut d = greeted(small);
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n");
    d.write(&[b'z'; 98]).write(b"\r\n.\r\n");
    assert_eq!(d.messages()[0].body.len(), 100);
}

#[test]
fn too_many_recipients() {
    let mut d = greeted(ServerConfig {
        max_recipients: 2,
        max_errors: 2,
        ..config()
    });
    d.write(b"MAIL FROM:<a@b.test>\r\n");
    for i in 0..5 {
        d.write(format!("RCPT TO:<r{i}@d.test>\r\n").as_bytes());
    }
    d.write(b"DATA\r\nx\r\n.\r\n");
    assert_eq!(
        d.codes(),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.1.5 Ok",
            "452 4.5.3 Too many recipients",
            "452 4.5.3 Too many recipients",
            "452 4.5.3 Too many recipients",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as Q1",
        ]
    );
    assert_eq!(
        d.messages()[0].envelope.recipients,
        ["r0@d.test", "r1@d.test"]
    );
}

#[test]
fn error_limit_closes() {
    let mut d = greeted(ServerConfig {
        max_errors: 3,
        ..config()
    });
    d.write(b"FOO\r\nBAR\r\nNOOP\r\nBAZ\r\nNOOP\r\n");
    assert_eq!(
        d.codes(),
        [
            "500 5.5.1 Command unrecognized",
            "500 5.5.1 Command unrecognized",
            "250 2.0.0 Ok",
            "500 5.5.1 Command unrecognized",
            "421 4.7.0 Too many errors, closing connection",
        ]
    );
    assert!(d.closed());
    d.write(b"NOOP\r\n");
    assert_eq!(d.codes().len(), 5);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut d = greeted(config());
    d.write(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<a@b.test>\r\n");
    assert_eq!(
        d.seen,
        [
            Seen::Reply("220 2.0.0 Ready to start TLS\r\n".into()),
            Seen::StartTls
        ]
    );
    assert!(d.s.is_tls());
    assert_eq!(d.s.buffered(), 0);
    d.clear();
    // After the handshake: EHLO is required again, and nothing pipelined was kept.
    d.write(b"MAIL FROM:<a@b.test>\r\n")
        .write(b"EHLO again\r\n");
    let codes = d.codes();
    assert_eq!(
        codes[0],
        "503 5.5.1 Bad sequence of commands: send HELO/EHLO first"
    );
    let ehlo = d.replies()[1];
    assert!(!ehlo.contains("STARTTLS"));
    assert!(ehlo.contains("AUTH PLAIN LOGIN"));
    d.clear();
    d.write(b"STARTTLS\r\n");
    assert_eq!(
        d.codes(),
        ["503 5.5.1 Bad sequence of commands: TLS already active"]
    );
}

#[test]
fn starttls_refusals() {
    let mut d = Driver::new(config());
    d.write(b"STARTTLS\r\n")
        .write(b"EHLO c\r\n")
        .write(b"STARTTLS now\r\n")
        .write(b"MAIL FROM:<a@b.test>\r\nSTARTTLS\r\n");
    assert_eq!(
        d.codes(),
        [
            "503 5.5.1 Bad sequence of commands: send EHLO first",
            "250 CHUNKING",
            "501 5.5.4 Syntax error (no parameters allowed)",
            "250 2.1.0 Ok",
            "503 5.5.1 Bad sequence of commands: mail transaction in progress",
        ]
    );
    let mut d = greeted(ServerConfig {
        starttls_available: false,
        ..config()
    });
    d.write(b"STARTTLS\r\n");
    assert_eq!(d.codes(), ["502 5.5.1 STARTTLS not available"]);
}

#[test]
fn auth_requires_tls() {
    let mut d = greeted(config());
    d.write(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    assert_eq!(d.codes(), ["530 5.7.0 Must issue a STARTTLS command first"]);
}

#[test]
fn auth_plain_initial_response() {
    let mut d = tls_session(config());
    // base64("\0user\0secret")
    d.write(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    assert_eq!(
        d.seen,
        [
            Seen::Auth {
                mechanism: "PLAIN",
                authzid: None,
                username: "user".into(),
                password: "secret".into()
            },
            Seen::Reply("235 2.7.0 Authentication successful\r\n".into()),
        ]
    );
    assert_eq!(d.s.authenticated(), Some("user"));
    d.clear();
    d.write(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n")
        .write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\n");
    assert_eq!(
        d.codes()[0],
        "503 5.5.1 Bad sequence of commands: already authenticated"
    );
    let m = d.messages()[0];
    assert_eq!(m.envelope.authenticated.as_deref(), Some("user"));
    assert_eq!(m.envelope.received_protocol(), "ESMTPSA");
}

#[test]
fn auth_plain_continuation_and_failure() {
    let mut d = tls_session(config());
    // base64("admin\0user\0wrong")
    d.write(b"AUTH PLAIN\r\n")
        .write(b"YWRtaW4AdXNlcgB3cm9uZw==\r\n");
    assert_eq!(
        d.seen,
        [
            Seen::Reply("334 \r\n".into()),
            Seen::Auth {
                mechanism: "PLAIN",
                authzid: Some("admin".into()),
                username: "user".into(),
                password: "wrong".into()
            },
            Seen::Reply("535 5.7.8 Authentication credentials invalid\r\n".into()),
        ]
    );
    assert_eq!(d.s.authenticated(), None);
}

#[test]
fn auth_login() {
    let mut d = tls_session(config());
    d.write(b"AUTH LOGIN\r\n")
        .write(b"dXNlcg==\r\n")
        .write(b"c2VjcmV0\r\n");
    assert_eq!(
        d.seen,
        [
            Seen::Reply("334 VXNlcm5hbWU6\r\n".into()),
            Seen::Reply("334 UGFzc3dvcmQ6\r\n".into()),
            Seen::Auth {
                mechanism: "LOGIN",
                authzid: None,
                username: "user".into(),
                password: "secret".into()
            },
            Seen::Reply("235 2.7.0 Authentication successful\r\n".into()),
        ]
    );
    // With the user name as initial response.
    let mut d = tls_session(config());
    d.write(b"AUTH LOGIN dXNlcg==\r\nc2VjcmV0\r\n");
    assert_eq!(
        d.codes(),
        ["334 UGFzc3dvcmQ6", "235 2.7.0 Authentication successful"]
    );
}

#[test]
fn auth_errors() {
    let mut d = tls_session(config());
    d.write(b"AUTH PLAIN AHVzZXIAc2VjcmV0=\r\n") // bad padding
        .write(b"AUTH PLAIN\r\n")
        .write(b"not base64!\r\n")
        .write(b"AUTH LOGIN\r\n")
        .write(b"*\r\n")
        .write(b"AUTH PLAIN dXNlcg==\r\n") // no NULs
        .write(b"AUTH CRAM-MD5\r\n")
        .write(b"AUTH FOO\r\n")
        .write(b"MAIL FROM:<a@b.test>\r\nAUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    assert_eq!(
        d.codes(),
        [
            "501 5.5.2 Invalid base64 data",
            "334 ",
            "501 5.5.2 Invalid base64 data",
            "334 VXNlcm5hbWU6",
            "501 5.0.0 Authentication cancelled",
            "501 5.5.2 Malformed authentication data",
            "504 5.5.4 Unrecognized authentication type",
            "504 5.5.4 Unrecognized authentication type",
            "250 2.1.0 Ok",
            "503 5.5.1 Bad sequence of commands: mail transaction in progress",
        ]
    );
    assert!(d.seen.iter().all(|e| !matches!(e, Seen::Auth { .. })));
}

#[test]
fn auth_lines_may_be_longer_than_commands() {
    let mut d = tls_session(config());
    let long = "A".repeat(2000);
    d.write(format!("AUTH PLAIN {long}\r\n").as_bytes());
    // Read as an AUTH line (not "line too long"); the data itself is not valid PLAIN.
    assert_eq!(d.codes(), ["501 5.5.2 Malformed authentication data"]);
    d.write(b"AUTH PLAIN\r\n")
        .write(format!("{}\r\n", "A".repeat(13000)).as_bytes());
    assert_eq!(
        d.codes()[2],
        "500 5.5.6 Authentication exchange line is too long"
    );
}

#[test]
fn auth_disabled() {
    let mut d = tls_session(ServerConfig {
        auth_enabled: false,
        ..config()
    });
    d.write(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n");
    assert_eq!(d.codes(), ["502 5.5.1 Command not implemented"]);
}

#[test]
fn bdat_chunks() {
    let mut d = greeted(config());
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n")
        .write(b"BDAT 7\r\nline1\r\n")
        .write(b"BDAT 13\r\nQUIT\r\nline2")
        .write(b"\r\nBDAT 0 LAST\r\n");
    assert_eq!(
        d.codes(),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: 7 octets received",
            "250 2.0.0 Ok: 20 octets received",
            "250 2.0.0 Ok: queued as Q1",
        ]
    );
    let m = d.messages()[0];
    assert_eq!(m.body, b"line1\r\nQUIT\r\nline2\r\n");
    assert!(m.envelope.chunked);
    assert!(!d.closed());
}

#[test]
fn bdat_pipelined_and_last_in_one() {
    let mut d = greeted(config());
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 5 LAST\r\nab\r\n.NOOP\r\n");
    assert_eq!(
        d.codes()[2..],
        ["250 2.0.0 Ok: queued as Q1", "250 2.0.0 Ok"]
    );
    assert_eq!(d.messages()[0].body, b"ab\r\n.");
}

#[test]
fn bdat_refused_chunks_are_still_read() {
    let mut d = greeted(config());
    // No transaction: the chunk's octets must not run as commands.
    let evil = b"MAIL FROM:<evil@x.test>\r\n";
    d.write(format!("BDAT {}\r\n", evil.len()).as_bytes())
        .write(evil)
        .write(b"NOOP\r\n");
    assert_eq!(
        d.codes(),
        [
            "503 5.5.1 Bad sequence of commands: need MAIL first",
            "250 2.0.0 Ok"
        ]
    );
    // Mixing: DATA after BDAT is a sequence error; the transaction goes on with BDAT.
    d.clear();
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 3\r\nab\n")
        .write(b"DATA\r\n")
        .write(b"RCPT TO:<e@d.test>\r\n")
        .write(b"BDAT 2 LAST\r\n\r\n");
    assert_eq!(
        d.codes(),
        [
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: 3 octets received",
            "503 5.5.1 Bad sequence of commands: DATA after BDAT",
            "503 5.5.1 Bad sequence of commands: RCPT after BDAT",
            // "ab\n" has a bare LF: refused like DATA would be.
            "550 5.5.2 Message refused: it contains a bare <CR> or <LF>",
        ]
    );
    assert!(d.messages().is_empty());
    // Chunking switched off: still read, answered 502.
    let mut d = greeted(ServerConfig {
        chunking: false,
        ..config()
    });
    d.write(b"BDAT 6\r\nQUIT\r\nNOOP\r\n");
    assert_eq!(
        d.codes(),
        ["502 5.5.1 Command not implemented", "250 2.0.0 Ok"]
    );
    // An unreadable size cannot be skipped: answered, and the session goes on.
    d.write(b"BDAT 99999999999999999999999\r\n");
    assert_eq!(d.codes()[2], "501 5.5.4 Invalid argument: chunk size");
}

#[test]
fn bdat_too_big() {
    let mut d = greeted(ServerConfig {
        max_message_size: 10,
        ..config()
    });
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n")
        .write(b"BDAT 8\r\n12345678")
        .write(b"BDAT 8\r\n12345678")
        .write(b"BDAT 2 LAST\r\nab")
        .write(b"NOOP\r\n");
    assert_eq!(
        d.codes()[2..],
        [
            "250 2.0.0 Ok: 8 octets received",
            "552 5.3.4 Message size exceeds fixed maximum message size",
            "503 5.5.1 Bad sequence of commands: need MAIL first",
            "250 2.0.0 Ok",
        ]
    );
}

#[test]
fn eof_mid_data_drops_the_message() {
    let mut d = greeted(config());
    d.write(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nhalf a message\r\n")
        .eof();
    assert!(d.messages().is_empty());
    assert!(d.closed());
}

#[test]
fn eof_after_pipelined_commands_answers_them_first() {
    let mut s = ServerSession::new(Arc::new(config()), common::peer());
    s.feed(b"EHLO c\r\nNOOP\r\nNOOP");
    s.eof();
    let events: Vec<String> = std::iter::from_fn(|| s.next_event())
        .map(|e| format!("{e:?}"))
        .collect();
    assert_eq!(events.len(), 3, "{events:?}"); // EHLO, NOOP, Close; the partial line is dropped
    assert!(events[2].contains("Close"));
}

#[test]
fn early_talker_reply() {
    assert_eq!(
        ServerSession::early_talker_reply().to_bytes(),
        b"554 5.5.0 Protocol error: client sent data before the greeting\r\n"
    );
}

#[test]
fn message_rejected_by_driver() {
    let mut s = ServerSession::new(Arc::new(config()), common::peer());
    s.feed(b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\nx\r\n.\r\nNOOP\r\n");
    let mut replies = Vec::new();
    while let Some(e) = s.next_event() {
        match e {
            mx_smtp::Event::Reply(r) => replies.push(r.to_string()),
            mx_smtp::Event::CheckRecipient { .. } => {
                s.recipient_decision(RcptDecision::Accept).unwrap()
            }
            mx_smtp::Event::Message(_) => s
                .message_decision(MessageDecision::Rejected(Reply::new(
                    554,
                    EnhancedStatus::new(5, 7, 1),
                    "Spam",
                )))
                .unwrap(),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(&replies[4..], ["554 5.7.1 Spam\r\n", "250 2.0.0 Ok\r\n"]);
}
