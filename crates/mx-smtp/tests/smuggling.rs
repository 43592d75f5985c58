//! SMTP smuggling (CVE-2023-51764, CVE-2023-51765, CVE-2023-51766 and the 2023 SEC Consult
//! research): an end-of-data sequence that another server reads as the end, followed by a
//! second transaction inside the same data. Here only `<CRLF>.<CRLF>` ends DATA, and a
//! message with a bare CR or LF is refused whole.

mod common;

use common::{Seen, config, run_split};

const VARIANTS: [&[u8]; 9] = [
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

fn stream(end_variant: &[u8]) -> Vec<u8> {
    let mut s = b"EHLO client.test\r\n\
        MAIL FROM:<alice@good.test>\r\n\
        RCPT TO:<bob@d.test>\r\n\
        DATA\r\n\
        Subject: hello\r\n\
        \r\n\
        body"
        .to_vec();
    s.extend_from_slice(end_variant);
    s.extend_from_slice(
        b"MAIL FROM:<evil@x.test>\r\n\
        RCPT TO:<victim@d.test>\r\n\
        DATA\r\n\
        Subject: smuggled\r\n\
        \r\n\
        smuggled\r\n\
        .\r\n\
        QUIT\r\n",
    );
    s
}

fn check(variant: &[u8], seen: &[Seen]) {
    let messages: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Seen::Message(m) => Some(m),
            _ => None,
        })
        .collect();
    assert!(
        messages.len() <= 1,
        "{variant:?}: {} messages",
        messages.len()
    );
    for m in &messages {
        assert_eq!(m.envelope.mail_from.as_deref(), Some("alice@good.test"));
        assert_eq!(m.envelope.recipients, ["bob@d.test"]);
    }
    assert!(
        !seen.contains(&Seen::Rcpt("victim@d.test".into())),
        "{variant:?}: the smuggled RCPT ran"
    );
    let replies: Vec<&str> = seen
        .iter()
        .filter_map(|e| match e {
            Seen::Reply(r) => Some(r.as_str()),
            _ => None,
        })
        .collect();
    let end = &replies[replies.len() - 2..];
    if variant.contains(&0) {
        // `\r\n\0.\r\n` has no bare CR or LF: one ordinary message, the smuggling attempt
        // being part of its text.
        assert_eq!(end, ["250 2.0.0 Ok: queued as Q1\r\n", "221 2.0.0 Bye\r\n"]);
        let body = String::from_utf8_lossy(&messages[0].body);
        assert!(body.contains("MAIL FROM:<evil@x.test>"));
        assert!(body.ends_with("smuggled\r\n"));
    } else {
        assert!(messages.is_empty(), "{variant:?}");
        assert_eq!(
            end,
            [
                "550 5.5.2 Message refused: it contains a bare <CR> or <LF>\r\n",
                "221 2.0.0 Bye\r\n"
            ],
            "{variant:?}"
        );
    }
    assert_eq!(seen.last(), Some(&Seen::Close));
}

#[test]
fn every_variant_in_one_write() {
    for variant in VARIANTS {
        check(variant, &run_split(config(), &[&stream(variant)]));
    }
}

#[test]
fn every_variant_split_anywhere() {
    for variant in VARIANTS {
        let s = stream(variant);
        let whole = run_split(config(), &[&s]);
        check(variant, &whole);
        for cut in 0..=s.len() {
            let split = run_split(config(), &[&s[..cut], &s[cut..]]);
            assert_eq!(split, whole, "{variant:?} cut at {cut}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(
            run_split(config(), &bytes),
            whole,
            "{variant:?} byte by byte"
        );
    }
}

#[test]
fn the_real_terminator_is_the_control() {
    // With a proper `\r\n.\r\n` the second transaction is real: the harness would see it.
    let seen = run_split(config(), &[&stream(b"\r\n.\r\n")]);
    let senders: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            Seen::Message(m) => m.envelope.mail_from.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(senders, ["alice@good.test", "evil@x.test"]);
}

#[test]
fn smuggling_inside_bdat_is_refused_too() {
    // A relay may send a BDAT message on with DATA, so a bare LF in it is refused as well.
    let chunk = b"body\n.\nMAIL FROM:<evil@x.test>\r\n";
    let mut s = b"EHLO c\r\nMAIL FROM:<alice@good.test>\r\nRCPT TO:<bob@d.test>\r\n".to_vec();
    s.extend_from_slice(format!("BDAT {} LAST\r\n", chunk.len()).as_bytes());
    s.extend_from_slice(chunk);
    s.extend_from_slice(b"QUIT\r\n");
    let seen = run_split(config(), &[&s]);
    assert!(!seen.iter().any(|e| matches!(e, Seen::Message(_))));
    assert!(seen.contains(&Seen::Reply(
        "550 5.5.2 Message refused: it contains a bare <CR> or <LF>\r\n".into()
    )));
}
