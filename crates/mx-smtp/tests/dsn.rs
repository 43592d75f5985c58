//! Delivery status notifications: the message is read back with a small strict parser of
//! our own (exact fields, in order) and with mail-parser (an independent MIME reading).

use mail_parser::{MessageParser, MimeHeaders, PartType};
use mx_smtp::dsn::{self, Action, Dsn, DsnInput, DsnKind, MAX_RETURNED_HEADERS, RecipientReport};
use mx_smtp::{EnhancedStatus, Reply};
use proptest::prelude::*;

const ARRIVAL: u64 = 1_767_225_600; // Thu, 01 Jan 2026 00:00:00 +0000
const NOW: u64 = ARRIVAL + 3 * 3600; // Thu, 01 Jan 2026 03:00:00 +0000
const RETRY_UNTIL: u64 = ARRIVAL + 5 * 86_400; // Tue, 06 Jan 2026 00:00:00 +0000

const ORIGINAL_HEADERS: &[u8] =
    b"Received: from client.example.org (client.example.org [192.0.2.7])\r\n\
    \tby mx.example.org with ESMTPS id 4F2A9C; Thu, 01 Jan 2026 00:00:00 +0000\r\n\
    From: Alice <alice@example.org>\r\n\
    To: Bob <bob@example.net>, Carol <carol@example.com>\r\n\
    Subject: quarterly figures\r\n\
    Message-ID: <20260101000000.abc@example.org>\r\n\
    Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n";
const ORIGINAL_BODY: &[u8] = b"The figures are attached.\r\n\
    SECRET-BODY-MARKER: nothing of this may come back\r\n";

fn original() -> Vec<u8> {
    [ORIGINAL_HEADERS, b"\r\n", ORIGINAL_BODY].concat()
}

fn user_unknown() -> Reply {
    Reply::multiline(
        550,
        EnhancedStatus::new(5, 1, 1),
        [
            "<bob@example.net>: Recipient address rejected:",
            "User unknown",
        ],
    )
}

fn bob() -> RecipientReport {
    RecipientReport {
        final_recipient: "bob@example.net".into(),
        action: Action::Failed,
        status: EnhancedStatus::new(5, 1, 1),
        remote_mta: Some("mx1.example.net".into()),
        diagnostic: Some(user_unknown()),
        last_attempt: Some(NOW),
        will_retry_until: None,
    }
}

fn carol() -> RecipientReport {
    RecipientReport {
        final_recipient: "rfc822;carol@example.com".into(),
        action: Action::Failed,
        status: EnhancedStatus::new(5, 4, 4),
        remote_mta: None,
        diagnostic: None,
        last_attempt: None,
        will_retry_until: None,
    }
}

fn input<'a>(original: &'a [u8], recipients: Vec<RecipientReport>) -> DsnInput<'a> {
    DsnInput {
        reporting_mta: "mx.example.org",
        original_envelope_id: Some("QQ314159"),
        arrival_date: ARRIVAL,
        now: NOW,
        original_sender: "alice@example.org",
        recipients,
        original_message: original,
        kind: DsnKind::Failed,
        message_id_domain: "example.org",
    }
}

// ------------------------------------------------------------------------------------
// A strict reader for what we write.

/// Header fields as (name, unfolded value), in order.
type Fields = Vec<(String, String)>;

/// Header fields unfolded (CRLF before white space removed), in order, and the body.
fn split_message(message: &[u8]) -> (Fields, &[u8]) {
    let end = find(message, b"\r\n\r\n").expect("a header/body separator") + 2;
    let head = std::str::from_utf8(&message[..end]).expect("headers are UTF-8");
    (unfold(head), &message[end + 2..])
}

/// Fields, each `name: value` CRLF, possibly folded.
fn unfold(head: &str) -> Fields {
    let mut fields: Fields = Vec::new();
    for line in head.split_terminator("\r\n") {
        if line.starts_with([' ', '\t']) {
            fields
                .last_mut()
                .expect("a field to continue")
                .1
                .push_str(line);
        } else {
            let (name, value) = line.split_once(':').expect("name: value");
            fields.push((name.to_owned(), value.to_owned()));
        }
    }
    fields
        .into_iter()
        .map(|(n, v)| (n, v.trim().to_owned()))
        .collect()
}

/// The body parts of a multipart body (RFC 2046 §5.1.1), with the preamble and epilogue.
fn split_parts<'a>(body: &'a [u8], boundary: &str) -> (&'a [u8], Vec<&'a [u8]>, &'a [u8]) {
    let delimiter = format!("\r\n--{boundary}");
    // The first delimiter may come at the very start; treat the body as if after a CRLF.
    let mut pieces = Vec::new();
    let mut rest = body;
    let first = find(rest, &delimiter.as_bytes()[2..]).expect("a first delimiter");
    let preamble = &rest[..first.saturating_sub(2)];
    rest = &rest[first + delimiter.len() - 2..];
    loop {
        if let Some(after) = rest.strip_prefix(b"--") {
            let epilogue = after.strip_prefix(b"\r\n").expect("CRLF after close");
            return (preamble, pieces, epilogue);
        }
        rest = rest.strip_prefix(b"\r\n").expect("CRLF after a delimiter");
        let next = find(rest, delimiter.as_bytes()).expect("another delimiter");
        pieces.push(&rest[..next]);
        rest = &rest[next + delimiter.len()..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn value<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn boundary_of(fields: &[(String, String)]) -> String {
    let ct = value(fields, "Content-Type").expect("Content-Type");
    let start = ct.find("boundary=\"").expect("quoted boundary") + "boundary=\"".len();
    let len = ct[start..].find('"').expect("closing quote");
    ct[start..start + len].to_owned()
}

/// The three parts, each split into its fields and body.
struct Read<'a> {
    fields: Fields,
    boundary: String,
    parts: Vec<(Fields, &'a [u8])>,
}

fn read(dsn: &Dsn) -> Read<'_> {
    let (fields, body) = split_message(&dsn.message);
    let boundary = boundary_of(&fields);
    let (_, parts, epilogue) = split_parts(body, &boundary);
    assert!(epilogue.is_empty());
    let parts = parts.into_iter().map(split_message).collect();
    Read {
        fields,
        boundary,
        parts,
    }
}

/// The delivery-status body as groups of fields: the per-message group, then one group per
/// recipient (RFC 3464 §2.1), each unfolded and in order.
fn status_groups(body: &[u8]) -> Vec<Fields> {
    let text = std::str::from_utf8(body).expect("7-bit");
    assert!(text.is_ascii());
    let text = text.strip_suffix("\r\n").expect("ends with CRLF");
    text.split("\r\n\r\n")
        .map(|group| unfold(&format!("{group}\r\n")))
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

/// CRLF only, and no line over 998 octets.
fn assert_wire_clean(message: &[u8]) {
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && message[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(message.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    assert!(message.ends_with(b"\r\n"));
    for line in message.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "line of {} octets", line.len() - 1);
    }
}

// ------------------------------------------------------------------------------------

#[test]
fn top_level_headers_are_exact() {
    let original = original();
    let dsn = dsn::build(&input(&original, vec![bob(), carol()])).expect("a DSN");
    assert_eq!(dsn.mail_from, "");
    assert_eq!(dsn.recipient, "alice@example.org");
    assert!(!dsn.is_8bit());
    assert!(!dsn.needs_smtputf8());

    let r = read(&dsn);
    let boundary = r.boundary.clone();
    assert!(boundary.starts_with("=_mxroute-dsn."), "{boundary}");
    assert_eq!(
        r.fields,
        owned(&[
            (
                "From",
                "Mail Delivery System <MAILER-DAEMON@mx.example.org>"
            ),
            ("To", "<alice@example.org>"),
            ("Subject", "Undelivered Mail Returned to Sender"),
            ("Date", "Thu, 01 Jan 2026 03:00:00 +0000"),
            (
                "Message-ID",
                value(&r.fields, "Message-ID").unwrap() // checked below
            ),
            ("MIME-Version", "1.0"),
            ("Auto-Submitted", "auto-replied"),
            (
                "Content-Type",
                &format!("multipart/report; report-type=delivery-status; boundary=\"{boundary}\"")
            ),
        ])
    );
    let id = value(&r.fields, "Message-ID").unwrap();
    assert!(
        id.starts_with(&format!("<dsn.{NOW}.")) && id.ends_with("@example.org>"),
        "{id}"
    );
}

#[test]
fn identity_is_deterministic_and_pinned() {
    let original = original();
    let a = dsn::build(&input(&original, vec![bob(), carol()])).unwrap();
    let b = dsn::build(&input(&original, vec![bob(), carol()])).unwrap();
    assert_eq!(a, b, "same inputs, same message");
    let fields = split_message(&a.message).0;
    // Pinned: FNV-1a-128 over the inputs (see the module documentation). A change here
    // changes every DSN's identity, which is fine, but should be on purpose.
    assert_eq!(
        value(&fields, "Message-ID").unwrap(),
        "<dsn.1767236400.1032f16afd9aec0c2be22f3fcdede08d@example.org>"
    );
    assert_eq!(boundary_of(&fields), "=_mxroute-dsn.d8f3e4f86e3a9a75");

    // Any input that differs gives another Message-ID.
    let other_body = [ORIGINAL_HEADERS, b"X-Extra: 1\r\n\r\n", ORIGINAL_BODY].concat();
    let variants = [
        dsn::build(&input(&original, vec![bob()])).unwrap(),
        dsn::build(&DsnInput {
            now: NOW + 1,
            ..input(&original, vec![bob(), carol()])
        })
        .unwrap(),
        dsn::build(&DsnInput {
            original_sender: "alice2@example.org",
            ..input(&original, vec![bob(), carol()])
        })
        .unwrap(),
        dsn::build(&input(&other_body, vec![bob(), carol()])).unwrap(),
    ];
    let id = |d: &Dsn| {
        value(&split_message(&d.message).0, "Message-ID")
            .unwrap()
            .to_owned()
    };
    for v in &variants {
        assert_ne!(id(v), id(&a));
    }
}

#[test]
fn multipart_structure() {
    let original = original();
    let dsn = dsn::build(&input(&original, vec![bob(), carol()])).unwrap();
    let (fields, body) = split_message(&dsn.message);
    let boundary = boundary_of(&fields);
    let (preamble, parts, epilogue) = split_parts(body, &boundary);
    assert_eq!(preamble, b"This is a MIME-encapsulated message.\r\n");
    assert_eq!(parts.len(), 3);
    assert!(epilogue.is_empty());
    assert!(
        dsn.message
            .ends_with(format!("\r\n--{boundary}--\r\n").as_bytes())
    );
    // The boundary occurs nowhere but in the delimiters and the Content-Type.
    assert_eq!(count(&dsn.message, boundary.as_bytes()), 4 + 1);

    let types: Vec<_> = parts
        .iter()
        .map(|p| {
            value(&split_message(p).0, "Content-Type")
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        types,
        [
            "text/plain; charset=us-ascii",
            "message/delivery-status",
            "text/rfc822-headers"
        ]
    );

    // An independent reading.
    let m = MessageParser::default()
        .parse(&dsn.message)
        .expect("parses");
    assert_eq!(m.subject(), Some("Undelivered Mail Returned to Sender"));
    assert_eq!(
        m.from().and_then(|f| f.first()).and_then(|a| a.address()),
        Some("MAILER-DAEMON@mx.example.org")
    );
    assert_eq!(
        m.to().and_then(|f| f.first()).and_then(|a| a.address()),
        Some("alice@example.org")
    );
    assert!(
        m.message_id()
            .is_some_and(|id| id.ends_with("@example.org"))
    );
    assert_eq!(m.date().map(|d| d.to_timestamp()), Some(NOW as i64));
    let ct = m.content_type().unwrap();
    assert_eq!(ct.ctype(), "multipart");
    assert_eq!(ct.subtype(), Some("report"));
    assert_eq!(ct.attribute("report-type"), Some("delivery-status"));
    assert_eq!(ct.attribute("boundary"), Some(boundary.as_str()));
    let PartType::Multipart(children) = &m.parts[0].body else {
        panic!("not multipart");
    };
    assert_eq!(children.len(), 3);
    let child = |i: usize| &m.parts[children[i] as usize];
    assert!(child(0).is_content_type("text", "plain"));
    assert!(child(1).is_content_type("message", "delivery-status"));
    assert!(child(2).is_content_type("text", "rfc822-headers"));
    assert!(
        child(0)
            .text_contents()
            .unwrap()
            .contains("<bob@example.net>")
    );
    assert!(
        std::str::from_utf8(child(1).contents())
            .unwrap()
            .contains("Final-Recipient: rfc822; bob@example.net")
    );
    let raw3 = &dsn.message[child(2).raw_body_offset() as usize..child(2).offset_end as usize];
    assert!(
        raw3.starts_with(ORIGINAL_HEADERS),
        "part 3 as mail-parser reads it"
    );
}

#[test]
fn delivery_status_fields_in_order() {
    let original = original();
    let dsn = dsn::build(&input(&original, vec![bob(), carol()])).unwrap();
    let r = read(&dsn);
    assert!(r.parts[1].1.ends_with(b"\r\n"));
    let groups = status_groups(r.parts[1].1);
    assert_eq!(
        groups,
        vec![
            owned(&[
                ("Reporting-MTA", "dns; mx.example.org"),
                ("Original-Envelope-Id", "QQ314159"),
                ("Arrival-Date", "Thu, 01 Jan 2026 00:00:00 +0000"),
            ]),
            owned(&[
                ("Final-Recipient", "rfc822; bob@example.net"),
                ("Action", "failed"),
                ("Status", "5.1.1"),
                ("Remote-MTA", "dns; mx1.example.net"),
                (
                    "Diagnostic-Code",
                    "smtp; 550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"
                ),
                ("Last-Attempt-Date", "Thu, 01 Jan 2026 03:00:00 +0000"),
            ]),
            owned(&[
                ("Final-Recipient", "rfc822; carol@example.com"),
                ("Action", "failed"),
                ("Status", "5.4.4"),
            ]),
        ]
    );
}

#[test]
fn explanation_names_each_recipient_and_the_reply() {
    let original = original();
    let dsn = dsn::build(&input(&original, vec![bob(), carol()])).unwrap();
    let r = read(&dsn);
    let text = std::str::from_utf8(r.parts[0].1).unwrap();
    assert!(text.is_ascii());
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("<bob@example.net>: delivery failed"),
        "{text}"
    );
    assert!(
        flat.contains("The mail server mx1.example.net answered:"),
        "{text}"
    );
    assert!(flat.contains("550-5.1.1 <bob@example.net>: Recipient address rejected:"));
    assert!(flat.contains("550 5.1.1 User unknown"));
    assert!(
        flat.contains("<carol@example.com>: delivery failed"),
        "{text}"
    );
    assert!(flat.contains("(status 5.4.4)"));
}

#[test]
fn original_headers_byte_for_byte_and_no_body() {
    let original = original();
    let dsn = dsn::build(&input(&original, vec![bob()])).unwrap();
    let r = read(&dsn);
    assert_eq!(r.parts[2].1, ORIGINAL_HEADERS);
    assert!(find(&dsn.message, b"SECRET-BODY-MARKER").is_none());
    assert!(find(&dsn.message, b"The figures are attached").is_none());
}

#[test]
fn without_a_separator_at_most_64_kib() {
    // All headers, no body: returned whole.
    let dsn = dsn::build(&input(ORIGINAL_HEADERS, vec![bob()])).unwrap();
    assert_eq!(read(&dsn).parts[2].1, ORIGINAL_HEADERS);

    // No empty line anywhere in a big message: cut at a line end, within the limit.
    let line = b"X-Filler: 0123456789abcdef0123456789abcdef0123456789abcdef\r\n";
    let big = line.repeat(5000);
    let dsn = dsn::build(&input(&big, vec![bob()])).unwrap();
    let part = read(&dsn).parts[2].1;
    assert!(part.len() <= MAX_RETURNED_HEADERS && part.len() > MAX_RETURNED_HEADERS - line.len());
    assert_eq!(part, &big[..part.len()]);
    assert!(part.ends_with(b"\r\n"));
    assert_wire_clean(&dsn.message);
}

#[test]
fn null_sender_gets_nothing() {
    let original = original();
    for sender in ["", "<>", " <> "] {
        let mut i = input(&original, vec![bob()]);
        i.original_sender = sender;
        assert_eq!(dsn::build(&i), None, "{sender:?}");
    }
    // Nor does a report on nobody.
    assert_eq!(dsn::build(&input(&original, vec![])), None);
}

#[test]
fn delayed_notice() {
    let original = original();
    let delayed = RecipientReport {
        action: Action::Delayed,
        status: EnhancedStatus::new(4, 4, 1),
        diagnostic: Some(Reply::new(
            451,
            EnhancedStatus::new(4, 4, 1),
            "Try again later",
        )),
        will_retry_until: Some(RETRY_UNTIL),
        ..bob()
    };
    let dsn = dsn::build(&DsnInput {
        kind: DsnKind::Delayed,
        original_envelope_id: None,
        ..input(&original, vec![delayed])
    })
    .unwrap();
    let r = read(&dsn);
    assert_eq!(
        value(&r.fields, "Subject"),
        Some("Delayed Mail (still being retried)")
    );
    let groups = status_groups(r.parts[1].1);
    assert_eq!(
        groups,
        vec![
            owned(&[
                ("Reporting-MTA", "dns; mx.example.org"),
                ("Arrival-Date", "Thu, 01 Jan 2026 00:00:00 +0000"),
            ]),
            owned(&[
                ("Final-Recipient", "rfc822; bob@example.net"),
                ("Action", "delayed"),
                ("Status", "4.4.1"),
                ("Remote-MTA", "dns; mx1.example.net"),
                ("Diagnostic-Code", "smtp; 451 4.4.1 Try again later"),
                ("Last-Attempt-Date", "Thu, 01 Jan 2026 03:00:00 +0000"),
                ("Will-Retry-Until", "Tue, 06 Jan 2026 00:00:00 +0000"),
            ]),
        ]
    );
    let text = std::str::from_utf8(r.parts[0].1).unwrap();
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(flat.contains("do not need to send it again"), "{text}");
    assert!(
        flat.contains("until Tue, 06 Jan 2026 00:00:00 +0000"),
        "{text}"
    );

    // Will-Retry-Until belongs to delayed recipients only.
    let failed = RecipientReport {
        will_retry_until: Some(RETRY_UNTIL),
        ..bob()
    };
    let dsn = dsn::build(&input(&original, vec![failed])).unwrap();
    assert!(find(&dsn.message, b"Will-Retry-Until").is_none());
}

#[test]
fn boundary_collision_in_the_original_is_avoided() {
    let original = original();
    let first = dsn::build(&input(&original, vec![bob()])).unwrap();
    let planted = boundary_of(&split_message(&first.message).0);

    // The boundary does not depend on the original message, so it can be planted there,
    // as a delimiter line and as part of a longer one.
    let hostile = [
        ORIGINAL_HEADERS,
        format!("X-Trap: --{planted}\r\n--{planted}--\r\n--{planted}.1\r\n").as_bytes(),
        b"\r\nbody\r\n",
    ]
    .concat();
    let dsn = dsn::build(&input(&hostile, vec![bob()])).unwrap();
    let r = read(&dsn);
    assert_ne!(r.boundary, planted);
    assert!(!r.boundary.starts_with(&format!("{planted}.1")));
    assert_eq!(r.parts.len(), 3);
    let returned = &hostile[..find(&hostile, b"\r\n\r\n").unwrap() + 2];
    assert_eq!(r.parts[2].1, returned);
    assert_eq!(count(&dsn.message, r.boundary.as_bytes()), 5);

    // And a remote reply can carry it too.
    let reply = Reply::new(550, EnhancedStatus::new(5, 7, 1), &format!("--{planted}"));
    let rcpt = RecipientReport {
        diagnostic: Some(reply),
        ..bob()
    };
    let dsn = dsn::build(&input(&original, vec![rcpt])).unwrap();
    let r = read(&dsn);
    assert_ne!(r.boundary, planted);
    assert_eq!(r.parts.len(), 3);
}

#[test]
fn long_and_hostile_text_keeps_lines_short() {
    let long_word = "x".repeat(3000);
    let reply = Reply::multiline(
        554,
        EnhancedStatus::new(5, 7, 1),
        [
            format!("rejected {}", "because ".repeat(300)),
            long_word.clone(),
            "Injected: field\r\nBcc: victim@example.com".to_owned(),
        ],
    );
    let rcpt = RecipientReport {
        final_recipient: format!("{}@example.net", "y".repeat(1200)),
        remote_mta: Some(format!("{}\r\nX-Evil: 1", "m".repeat(1100))),
        diagnostic: Some(reply),
        ..bob()
    };
    let header_line = format!("X-Long: {}\r\n", "z".repeat(5000));
    let original = [header_line.as_bytes(), b"Subject: s\r\n\r\nbody\r\n"].concat();
    let mut i = input(&original, vec![rcpt]);
    let envid = format!("env\r\nBcc: x@example.com {}", "e".repeat(2000));
    i.original_envelope_id = Some(&envid);
    let dsn = dsn::build(&i).unwrap();
    assert_wire_clean(&dsn.message);

    let r = read(&dsn);
    let groups = status_groups(r.parts[1].1);
    let diag = value(&groups[1], "Diagnostic-Code").unwrap();
    assert!(diag.starts_with("smtp; 554 5.7.1 rejected because because"));
    assert!(
        diag.len() + "Diagnostic-Code: ".len() <= 998,
        "{}",
        diag.len()
    );
    assert!(diag.ends_with("..."));
    // No injected field anywhere: CR LF in inputs became spaces inside the field.
    for (fields, _) in &r.parts {
        assert!(value(fields, "Bcc").is_none());
    }
    assert!(
        groups
            .iter()
            .flatten()
            .all(|(n, _)| n != "X-Evil" && n != "Bcc")
    );
    // The long original header line comes back as continuation lines of the same field.
    let part3 = r.parts[2].1;
    let unfolded: Vec<u8> = String::from_utf8(part3.to_vec())
        .unwrap()
        .replace("\r\n ", "")
        .into_bytes();
    assert_eq!(
        unfolded,
        [header_line.as_bytes(), b"Subject: s\r\n"].concat()
    );
}

#[test]
fn eight_bit_originals_and_addresses() {
    let headers = "From: Jöran <jöran@exämple.org>\r\nSubject: Grüße\r\n".as_bytes();
    let original = [headers, b"\r\nbody\r\n"].concat();
    let rcpt = RecipientReport {
        final_recipient: "用户+x@例子.广告".into(),
        diagnostic: Some(Reply::new(
            550,
            EnhancedStatus::new(5, 1, 1),
            "Benutzer unbekannt: ü",
        )),
        ..bob()
    };
    let mut i = input(&original, vec![rcpt]);
    i.original_sender = "jöran@exämple.org";
    let dsn = dsn::build(&i).unwrap();
    assert!(dsn.is_8bit());
    assert!(dsn.needs_smtputf8());
    assert_eq!(dsn.recipient, "jöran@exämple.org");
    assert_wire_clean(&dsn.message);

    let r = read(&dsn);
    assert_eq!(value(&r.fields, "Content-Transfer-Encoding"), Some("8bit"));
    assert_eq!(value(&r.fields, "To"), Some("<jöran@exämple.org>"));
    // Part 3 keeps the bytes, labelled 8bit.
    assert_eq!(r.parts[2].1, headers);
    assert_eq!(
        value(&r.parts[2].0, "Content-Transfer-Encoding"),
        Some("8bit")
    );
    // Part 2 stays 7-bit (status_groups asserts ASCII).
    let groups = status_groups(r.parts[1].1);
    assert_eq!(
        value(&groups[1], "Final-Recipient"),
        Some("utf-8; \\x{7528}\\x{6237}\\x{2B}x@\\x{4F8B}\\x{5B50}.\\x{5E7F}\\x{544A}")
    );
    assert_eq!(
        value(&groups[1], "Diagnostic-Code"),
        Some("smtp; 550 5.1.1 Benutzer unbekannt: ?")
    );
    // Part 1 says what it is.
    assert_eq!(
        value(&r.parts[0].0, "Content-Type"),
        Some("text/plain; charset=utf-8")
    );
    assert!(
        std::str::from_utf8(r.parts[0].1)
            .unwrap()
            .contains("<用户+x@例子.广告>")
    );

    // An ASCII DSN of an 8-bit-free original stays 7-bit.
    let plain = original_ascii_only();
    assert!(!plain.is_8bit());
}

fn original_ascii_only() -> Dsn {
    let original = original();
    dsn::build(&input(&original, vec![bob()])).unwrap()
}

#[test]
fn status_for_reply_follows_rfc_3463() {
    let r = |code, status: Option<EnhancedStatus>| Reply::new(code, status, "x");
    let s = EnhancedStatus::new;
    assert_eq!(
        dsn::status_for_reply(&r(550, Some(s(5, 1, 1))), "5.0.0"),
        s(5, 1, 1)
    );
    assert_eq!(
        dsn::status_for_reply(&r(452, Some(s(4, 2, 2))), "5.0.0"),
        s(4, 2, 2)
    );
    assert_eq!(dsn::status_for_reply(&r(550, None), "5.0.0"), s(5, 0, 0));
    assert_eq!(dsn::status_for_reply(&r(550, None), "5.1.1"), s(5, 1, 1));
    assert_eq!(dsn::status_for_reply(&r(554, None), "junk"), s(5, 0, 0));
    assert_eq!(dsn::status_for_reply(&r(554, None), "4.1.1"), s(5, 0, 0));
    assert_eq!(dsn::status_for_reply(&r(421, None), "5.1.1"), s(4, 0, 0));
    assert_eq!(dsn::status_for_reply(&r(250, None), "5.0.0"), s(2, 0, 0));
    // The basic code decides the class.
    assert_eq!(
        dsn::status_for_reply(&r(550, Some(s(4, 2, 2))), "5.0.0"),
        s(5, 2, 2)
    );
    assert_eq!(
        dsn::status_for_reply(&r(451, Some(s(5, 7, 1))), "5.0.0"),
        s(4, 7, 1)
    );
    // No valid final reply: permanent.
    assert_eq!(dsn::status_for_reply(&r(354, None), "5.5.0"), s(5, 5, 0));
    assert_eq!(dsn::status_for_reply(&r(999, None), "5.0.0"), s(5, 0, 0));
    // An invalid enhanced code is ignored.
    assert_eq!(
        dsn::status_for_reply(&r(550, Some(s(5, 1000, 1))), "5.0.0"),
        s(5, 0, 0)
    );
}

// ------------------------------------------------------------------------------------

fn fast_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

/// Messages made of the octets that matter: line ends of every kind, NUL, 8-bit, the
/// boundary prefix, long runs.
fn message_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        3 => prop::sample::select(vec![
            b"\r\n".to_vec(),
            b"\n".to_vec(),
            b"\r".to_vec(),
            b"\r\n\r\n".to_vec(),
            b"\r\n ".to_vec(),
            b"--=_mxroute-dsn.".to_vec(),
            b"Subject: x".to_vec(),
            "é".as_bytes().to_vec(),
            vec![0],
        ]),
        1 => (1usize..3000).prop_map(|n| vec![b'a'; n]),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<String>(),
        1 => "[a-z \r\n]{0,2000}",
        1 => (1usize..3000).prop_map(|n| "w".repeat(n)),
    ]
}

proptest! {
    #![proptest_config(fast_config(300))]

    /// Whatever the original and the remote said: no panic, CRLF only, no line over 998,
    /// three parts, and a 7-bit delivery-status part.
    #[test]
    fn never_a_bad_line(
        original in message_bytes(),
        reply_lines in prop::collection::vec(text(), 0..4),
        code in 0u16..1000,
        address in text(),
        host in text(),
        sender in text(),
        kind in prop::bool::ANY,
    ) {
        let reply = Reply::multiline(code, EnhancedStatus::new(5, 1, 1), &reply_lines);
        let rcpt = RecipientReport {
            final_recipient: address,
            action: if kind { Action::Delayed } else { Action::Failed },
            status: dsn::status_for_reply(&reply, "5.0.0"),
            remote_mta: Some(host.clone()),
            diagnostic: Some(reply),
            last_attempt: Some(NOW),
            will_retry_until: Some(u64::MAX),
        };
        let i = DsnInput {
            reporting_mta: &host,
            original_envelope_id: Some(&sender),
            arrival_date: ARRIVAL,
            now: NOW,
            original_sender: &sender,
            recipients: vec![rcpt.clone(), rcpt],
            original_message: &original,
            kind: if kind { DsnKind::Delayed } else { DsnKind::Failed },
            message_id_domain: &host,
        };
        let Some(dsn) = dsn::build(&i) else {
            let null = sender.trim().trim_start_matches('<').trim_end_matches('>');
            prop_assert!(null.chars().all(|c| c.is_control() || c.is_whitespace()), "{:?}", sender);
            return Ok(());
        };
        assert_wire_clean(&dsn.message);
        let r = read(&dsn);
        prop_assert_eq!(r.parts.len(), 3);
        let groups = status_groups(r.parts[1].1);
        prop_assert_eq!(groups.len(), 3);
        prop_assert!(r.parts[2].1.len() <= MAX_RETURNED_HEADERS);
        prop_assert!(MessageParser::default().parse(&dsn.message).is_some());
    }
}
