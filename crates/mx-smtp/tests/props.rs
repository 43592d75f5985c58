//! Properties: no input makes the session panic, cutting the input anywhere changes
//! nothing, and DATA matches a plain reference reading of RFC 5321 §4.5.2 and §4.1.1.4.

mod common;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use common::{Seen, config, run_split};
use mx_smtp::{
    EnhancedStatus, Event, MessageDecision, PeerInfo, RcptDecision, Reply, ServerConfig,
    ServerSession,
};
use proptest::prelude::*;

/// A conversation that touches most paths: pipelining, a refused recipient, dot-stuffing,
/// a too-long line, BDAT, STARTTLS with plaintext after it, AUTH after TLS.
const CONVERSATION: &[u8] = b"EHLO client.test\r\n\
    MAIL FROM:<alice@example.net> SIZE=100\r\n\
    RCPT TO:<nobody@example.org>\r\n\
    RCPT TO:<Postmaster>\r\n\
    DATA\r\n\
    ..leading dot\r\n\
    .\r\n\
    NOOP xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n\
    MAIL FROM:<>\r\n\
    RCPT TO:<bob@example.org>\r\n\
    BDAT 10\r\nabc\r\n.\r\n\r\n\
    BDAT 4 LAST\r\nEND\n\
    RSET\r\n\
    STARTTLS\r\nMAIL FROM:<evil@x.test>\r\n";

const AFTER_TLS: &[u8] = b"EHLO again.test\r\n\
    AUTH LOGIN\r\ndXNlcg==\r\nc2VjcmV0\r\n\
    MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.org>\r\nDATA\r\nx\r\n.\r\n\
    QUIT\r\n";

fn small_config() -> ServerConfig {
    ServerConfig {
        max_command_line: 64,
        ..config()
    }
}

/// Runs CONVERSATION then AFTER_TLS (the harness completes the handshake at once, so
/// feeding both in one piece would throw AFTER_TLS away with the plaintext).
fn run_conversation(cuts: &[usize]) -> Vec<Seen> {
    let mut d = common::Driver::new(small_config());
    // Octets written after "STARTTLS\r\n" in the same write are plaintext and must be
    // dropped; in a later write they would be TLS records, which the harness cannot fake.
    // So no cut falls after that line's CR.
    let tls_line_end = CONVERSATION
        .windows(10)
        .position(|w| w == b"STARTTLS\r\n")
        .unwrap()
        + 9;
    for (input, max_cut) in [(CONVERSATION, tls_line_end), (AFTER_TLS, AFTER_TLS.len())] {
        let mut last = 0;
        let mut cuts: Vec<usize> = cuts
            .iter()
            .map(|c| (c % (input.len() + 1)).min(max_cut))
            .collect();
        cuts.sort_unstable();
        for cut in cuts {
            d.write(&input[last..cut]);
            last = cut;
        }
        d.write(&input[last..]);
    }
    d.eof();
    d.seen
}

#[test]
fn conversation_is_as_expected() {
    let seen = run_conversation(&[]);
    let replies: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            Seen::Reply(r) => Some(r.lines().last().unwrap().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(
        replies,
        [
            "250 CHUNKING",
            "250 2.1.0 Ok",
            "550 5.1.1 No such user",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as Q1",
            "500 5.5.6 Line too long",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "250 2.0.0 Ok: 10 octets received",
            "550 5.5.2 Message refused: it contains a bare <CR> or <LF>",
            "250 2.0.0 Ok",
            "220 2.0.0 Ready to start TLS",
            "250 CHUNKING",
            "334 VXNlcm5hbWU6",
            "334 UGFzc3dvcmQ6",
            "235 2.7.0 Authentication successful",
            "250 2.1.0 Ok",
            "250 2.1.5 Ok",
            "354 End data with <CR><LF>.<CR><LF>",
            "250 2.0.0 Ok: queued as Q2",
            "221 2.0.0 Bye",
        ]
    );
    let m = seen
        .iter()
        .find_map(|e| match e {
            Seen::Message(m) => Some(m),
            _ => None,
        })
        .unwrap();
    assert_eq!(m.body, b".leading dot\r\n");
    assert_eq!(m.envelope.recipients, ["postmaster"]);
}

#[test]
fn conversation_split_at_every_single_point() {
    let whole = run_conversation(&[]);
    for cut in 0..=CONVERSATION.len().max(AFTER_TLS.len()) {
        assert_eq!(run_conversation(&[cut]), whole, "cut at {cut}");
    }
    let all: Vec<usize> = (0..=CONVERSATION.len()).collect();
    assert_eq!(run_conversation(&all), whole, "byte by byte");
}

/// The reading of DATA that RFC 5321 describes, written as plainly as possible: the data
/// ends at the first CRLF.CRLF (the DATA line's CRLF counting as the first), each line
/// loses one leading dot, and any CR or LF outside a CRLF pair taints the message.
fn reference(data: &[u8]) -> Option<(Result<Vec<u8>, ()>, usize)> {
    let mut s = b"\r\n".to_vec();
    s.extend_from_slice(data);
    let end = s.windows(5).position(|w| w == b"\r\n.\r\n")?;
    let raw = &s[2..end + 2];
    let consumed = end + 5 - 2;
    let tainted = raw.iter().enumerate().any(|(i, &b)| match b {
        b'\r' => raw.get(i + 1) != Some(&b'\n'),
        b'\n' => i == 0 || raw[i - 1] != b'\r',
        _ => false,
    });
    if tainted {
        return Some((Err(()), consumed));
    }
    let mut body = Vec::new();
    for line in raw.split_inclusive(|&b| b == b'\n') {
        body.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    Some((Ok(body), consumed))
}

/// ChaCha, proptest's default generator, dominates the run time in unoptimised test
/// builds; XorShift is plenty for finding inputs.
fn fast_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_algorithm: proptest::test_runner::RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    }
}

fn data_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => Just(b'a'),
            3 => Just(b'.'),
            3 => Just(b'\r'),
            3 => Just(b'\n'),
            1 => Just(0u8),
            1 => any::<u8>(),
        ],
        0..60,
    )
}

proptest! {
    #![proptest_config(fast_config(2000))]

    /// DATA agrees with the reference on where the data ends, the body and the refusal,
    /// and whatever follows the end is read as commands.
    #[test]
    fn data_matches_reference(data in data_bytes(), cut in any::<prop::sample::Index>()) {
        let mut stream = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n".to_vec();
        let start = stream.len();
        stream.extend_from_slice(&data);
        stream.extend_from_slice(b"\r\n.\r\nNOOP\r\n");
        let cut = cut.index(stream.len() + 1);
        let seen = run_split(config(), &[&stream[..cut], &stream[cut..]]);
        let (expected, consumed) = reference(&stream[start..]).expect("ends");
        let messages: Vec<_> = seen.iter().filter_map(|e| match e {
            Seen::Message(m) => Some(m.body.clone()),
            _ => None,
        }).collect();
        let after: Vec<u8> = stream[start + consumed..].to_vec();
        // What follows the end runs as commands: count its CRLF lines.
        let commands = after.windows(2).filter(|w| w == b"\r\n").count();
        match expected {
            Ok(body) => prop_assert_eq!(messages, vec![body]),
            Err(()) => {
                prop_assert!(messages.is_empty());
                prop_assert!(seen.contains(&Seen::Reply(
                    "550 5.5.2 Message refused: it contains a bare <CR> or <LF>\r\n".into()
                )));
            }
        }
        let replies = seen.iter().filter(|e| matches!(e, Seen::Reply(_))).count();
        // EHLO, MAIL, RCPT, 354, the end-of-data reply, then one per command line (lines
        // with bare CR/LF inside are still one reply each).
        prop_assert_eq!(replies, 5 + commands);
    }

    /// Any body made of lines, dot-stuffed by the client, arrives exactly, by DATA and by
    /// BDAT in random chunks.
    #[test]
    fn bodies_arrive_exactly(
        lines in prop::collection::vec(
            prop::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\r' && *b != b'\n'), 0..20),
            0..12,
        ),
        chunk in 1usize..17,
    ) {
        let mut body = Vec::new();
        let mut stuffed = Vec::new();
        for line in &lines {
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
            if line.first() == Some(&b'.') {
                stuffed.push(b'.');
            }
            stuffed.extend_from_slice(line);
            stuffed.extend_from_slice(b"\r\n");
        }
        let mut data = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nDATA\r\n".to_vec();
        data.extend_from_slice(&stuffed);
        data.extend_from_slice(b".\r\n");
        let seen = run_split(config(), &[&data]);
        let got: Vec<_> = seen.iter().filter_map(|e| match e {
            Seen::Message(m) => Some(m.body.clone()),
            _ => None,
        }).collect();
        prop_assert_eq!(&got, &vec![body.clone()]);

        let mut bdat = b"EHLO c\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\n".to_vec();
        let pieces: Vec<&[u8]> = body.chunks(chunk).collect();
        for piece in &pieces {
            bdat.extend_from_slice(format!("BDAT {}\r\n", piece.len()).as_bytes());
            bdat.extend_from_slice(piece);
        }
        bdat.extend_from_slice(b"BDAT 0 LAST\r\n");
        let seen = run_split(config(), &[&bdat]);
        let got: Vec<_> = seen.iter().filter_map(|e| match e {
            Seen::Message(m) => Some(m.body.clone()),
            _ => None,
        }).collect();
        prop_assert_eq!(got, vec![body]);
    }
}

/// Mostly whole command lines, some message lines and some noise, so that random input
/// reaches deep states (transactions, messages, AUTH, STARTTLS) as well as broken ones.
fn token() -> impl Strategy<Value = Vec<u8>> {
    let line = |s: &'static str| Just(s.as_bytes().to_vec());
    prop_oneof![
        3 => line("EHLO c\r\n"),
        1 => line("HELO c\r\n"),
        4 => line("MAIL FROM:<a@b.test>\r\n"),
        1 => line("MAIL FROM:<> SMTPUTF8 SIZE=10 BODY=8BITMIME\r\n"),
        5 => line("RCPT TO:<c@d.test>\r\n"),
        1 => line("RCPT TO:<Postmaster>\r\n"),
        1 => line("RCPT TO:<\u{fc}@d.test>\r\n"),
        4 => line("DATA\r\n"),
        2 => prop::collection::vec(any::<u8>(), 0..12).prop_map(|chunk| {
            let mut v = format!("BDAT {}\r\n", chunk.len()).into_bytes();
            v.extend_from_slice(&chunk);
            v
        }),
        1 => line("BDAT 0 LAST\r\n"),
        1 => line("BDAT 2 LAST\r\n"),
        1 => line("STARTTLS\r\n"),
        1 => line("AUTH PLAIN AHVzZXIAc2VjcmV0\r\n"),
        1 => line("AUTH LOGIN\r\n"),
        1 => line("AUTH PLAIN\r\n"),
        1 => line("dXNlcg==\r\n"),
        1 => line("*\r\n"),
        1 => line("RSET\r\n"),
        1 => line("NOOP\r\n"),
        1 => line("QUIT\r\n"),
        4 => line("text line\r\n"),
        3 => line(".\r\n"),
        1 => line("..stuffed\r\n"),
        1 => line("\r"),
        1 => line("\n"),
        1 => line("."),
        2 => prop::collection::vec(any::<u8>(), 0..8),
        1 => (0usize..600).prop_map(|n| vec![b'x'; n]),
    ]
}

fn small_limits() -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        max_message_size: 40,
        max_recipients: 3,
        max_command_line: 40,
        max_text_line: 20,
        max_errors: 30,
        starttls_available: true,
        auth_requires_tls: false,
        ..ServerConfig::default()
    }
}

proptest! {
    #![proptest_config(fast_config(3000))]

    /// Random input, random cuts, random (and sometimes wrong) decisions: never a panic,
    /// never an event after Close, never more than one decision pending.
    #[test]
    fn never_panics(
        tokens in prop::collection::vec(token(), 0..60),
        cuts in prop::collection::vec(0usize..2000, 0..6),
        choices in prop::collection::vec(any::<u8>(), 1..32),
        tls in any::<bool>(),
        eof in any::<bool>(),
        tight in any::<bool>(),
    ) {
        let input: Vec<u8> = tokens.concat();
        let config = if tight { small_limits() } else { config() };
        let peer = PeerInfo { ip: IpAddr::V6(Ipv6Addr::LOCALHOST), tls };
        let mut s = ServerSession::new(Arc::new(config), peer);
        let mut choice = choices.iter().cycle();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(input.len());
        let mut last = 0;
        let mut closed = false;
        for cut in cuts {
            s.feed(&input[last..cut]);
            last = cut;
            while let Some(event) = s.next_event() {
                prop_assert!(!closed, "event after Close: {:?}", event);
                let c = *choice.next().unwrap();
                if c % 7 == 0 {
                    // A wrong answer must be refused and change nothing.
                    let is_auth = matches!(event, Event::Authenticate { .. });
                    prop_assert!(is_auth || s.auth_decision(true).is_err());
                }
                match event {
                    Event::Reply(reply) => {
                        prop_assert!(reply.is_well_formed() || reply.is_intermediate());
                        let bytes = reply.to_bytes();
                        prop_assert!(bytes.ends_with(b"\r\n"));
                    }
                    Event::StartTls => {
                        if c % 2 == 0 {
                            s.feed(b"NOOP\r\n"); // plaintext before the handshake: dropped
                        }
                        s.tls_started().unwrap();
                    }
                    Event::CheckRecipient { .. } => {
                        prop_assert!(s.next_event().is_none());
                        let d = if c % 3 == 0 {
                            RcptDecision::Reject(Reply::new(
                                if c % 5 == 0 { 421 } else { 550 },
                                EnhancedStatus::new(if c % 5 == 0 { 4 } else { 5 }, 1, 1),
                                "no",
                            ))
                        } else {
                            RcptDecision::Accept
                        };
                        s.recipient_decision(d).unwrap();
                    }
                    Event::Authenticate { .. } => {
                        prop_assert!(s.next_event().is_none());
                        s.auth_decision(c % 2 == 0).unwrap();
                    }
                    Event::Message(m) => {
                        prop_assert!(s.next_event().is_none());
                        prop_assert!(!m.envelope.recipients.is_empty());
                        let d = if c % 4 == 0 {
                            MessageDecision::Rejected(Reply::new(451, EnhancedStatus::new(4, 3, 0), "later"))
                        } else {
                            MessageDecision::Accepted { queue_id: "Q\r\n250 fake".into() }
                        };
                        s.message_decision(d).unwrap();
                    }
                    Event::Close => closed = true,
                }
            }
        }
        if eof {
            s.eof();
            let mut saw_close = closed;
            while let Some(event) = s.next_event() {
                prop_assert!(!saw_close, "event after Close: {:?}", event);
                match event {
                    Event::Close => saw_close = true,
                    Event::CheckRecipient { .. } => s.recipient_decision(RcptDecision::Accept).unwrap(),
                    Event::Authenticate { .. } => s.auth_decision(false).unwrap(),
                    Event::Message(_) => s.message_decision(MessageDecision::Accepted { queue_id: "Q".into() }).unwrap(),
                    Event::StartTls => s.tls_started().unwrap(),
                    Event::Reply(_) => {}
                }
            }
            prop_assert!(saw_close);
        }
    }
}
