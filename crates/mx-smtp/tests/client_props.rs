//! Properties of the client session: no server input makes it panic or hang, every message
//! handed over gets exactly one outcome with one result per recipient, and how the server's
//! replies are cut into reads changes nothing.

use std::collections::VecDeque;

use mx_smtp::client::{Action, Phase, StartTls};
use mx_smtp::{ClientConfig, ClientSession, CloseReason, DeliveryStatus, OutboundMessage};
use proptest::prelude::*;

fn fast(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Everything a driver sees, and the checks every run must pass.
#[derive(Debug, Default)]
struct Trace {
    actions: Vec<Action>,
    /// Recipients of each message accepted by `send_message`, in order.
    sent: Vec<Vec<String>>,
}

/// Drives `c` with `reads` (an empty queue is the end of the stream) until it closes.
/// `tls_ok` answers the handshakes in turn (true when it runs out).
fn drive(
    mut c: ClientSession,
    mut reads: VecDeque<Vec<u8>>,
    mut messages: VecDeque<OutboundMessage>,
    mut tls_ok: VecDeque<bool>,
) -> Trace {
    let mut t = Trace::default();
    // Generous: every pass consumes input or moves the session on.
    for _ in 0..100_000 {
        let action = c.next_action();
        t.actions.push(action.clone());
        match action {
            Action::Send { bytes, .. } => assert!(bytes.ends_with(b"\r\n"), "{bytes:?}"),
            Action::Receive { .. } => match reads.pop_front() {
                Some(bytes) => c.feed(&bytes),
                None => c.eof(),
            },
            Action::StartTls => {
                if tls_ok.pop_front().unwrap_or(true) {
                    c.tls_started().unwrap();
                } else {
                    c.tls_failed("no");
                }
            }
            Action::Ready => match messages.pop_front() {
                Some(m) => {
                    let recipients = m.recipients.clone();
                    c.send_message(m).unwrap();
                    t.sent.push(recipients);
                }
                None => c.quit().unwrap(),
            },
            Action::MessageDone(_) => {}
            Action::Close(_) => {
                assert_eq!(c.next_action(), action);
                t.check();
                return t;
            }
        }
    }
    panic!("no Close after 100000 actions");
}

impl Trace {
    fn done(&self) -> Vec<&mx_smtp::MessageOutcome> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::MessageDone(o) => Some(o),
                _ => None,
            })
            .collect()
    }

    fn check(&self) {
        let done = self.done();
        assert_eq!(done.len(), self.sent.len(), "one outcome per message");
        for (outcome, recipients) in done.iter().zip(&self.sent) {
            let got: Vec<&String> = outcome.recipients.iter().map(|r| &r.recipient).collect();
            assert_eq!(got, recipients.iter().collect::<Vec<_>>());
            for r in &outcome.recipients {
                let class = r.reply.code() / 100;
                let want = match r.status {
                    DeliveryStatus::Delivered => 2,
                    DeliveryStatus::Temporary => 4,
                    DeliveryStatus::Permanent => 5,
                };
                assert_eq!(class, want, "{r:?}");
                assert!(r.reply.is_well_formed(), "{r:?}");
            }
        }
        let Some(Action::Close(close)) = self.actions.last() else {
            panic!("no Close");
        };
        assert!(close.reply.is_well_formed(), "{close:?}");
    }

    /// Without the `Receive`s, whose number depends on how the input was cut.
    fn without_receives(&self) -> Vec<Action> {
        self.actions
            .iter()
            .filter(|a| !matches!(a, Action::Receive { .. }))
            .cloned()
            .collect()
    }
}

/// Cuts `bytes` at the given fractions.
fn cut(bytes: &[u8], at: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = at
        .iter()
        .map(|p| p % (bytes.len() + 1))
        .chain([0, bytes.len()])
        .collect();
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

fn config(pipelining: bool, starttls: StartTls) -> ClientConfig {
    ClientConfig {
        helo_name: "client.test".into(),
        pipelining,
        starttls,
        data_block_size: 16,
        ..ClientConfig::default()
    }
}

/// Reply-like lines most of the time, so that sessions get deep; raw bytes sometimes.
fn server_read() -> impl Strategy<Value = Vec<u8>> {
    let code = prop::sample::select(vec![
        "220", "221", "250", "354", "421", "450", "451", "452", "454", "500", "502", "503", "550",
        "552", "553", "554", "199", "600", "2x0",
    ]);
    let sep = prop::sample::select(vec![" ", "-", "", "_"]);
    let text = prop::sample::select(vec![
        "",
        "Ok",
        "2.0.0 Ok",
        "5.1.1 No",
        "4.7.0 x",
        "mx.test",
        "PIPELINING",
        "STARTTLS",
        "SIZE 100",
        "SIZE 99999999999999999999999",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ]);
    let end = prop::sample::select(vec!["\r\n", "\r\n", "\r\n", "\n", "\r", ""]);
    let line = (code, sep, text, end).prop_map(|(c, s, t, e)| format!("{c}{s}{t}{e}").into_bytes());
    prop_oneof![
        6 => prop::collection::vec(line, 1..4).prop_map(|lines| lines.concat()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

fn address() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "a@example.org",
        "b@example.org",
        "josé@example.org",
        "",
        "x>y@z",
        "c@example.org\r\nRSET",
        "postmaster",
    ])
    .prop_map(str::to_owned)
}

fn outbound() -> impl Strategy<Value = OutboundMessage> {
    (
        address(),
        prop::collection::vec(address(), 0..4),
        prop::collection::vec(
            prop::sample::select(vec![&b"."[..], b"\r\n", b"a", b"\n", b"\r", b"\xc3\xa9"]),
            0..20,
        ),
        any::<bool>(),
        any::<bool>(),
        0u64..200,
    )
        .prop_map(
            |(from, recipients, body, body_8bit, smtputf8, size)| OutboundMessage {
                mail_from: from,
                recipients,
                body: body.concat(),
                body_8bit,
                smtputf8,
                size,
            },
        )
}

fn starttls() -> impl Strategy<Value = StartTls> {
    prop::sample::select(vec![
        StartTls::Opportunistic,
        StartTls::Required,
        StartTls::Never,
    ])
}

proptest! {
    #![proptest_config(fast(512))]

    #[test]
    fn any_server_input_ends_in_close_without_panic(
        reads in prop::collection::vec(server_read(), 0..30),
        messages in prop::collection::vec(outbound(), 0..4),
        pipelining in any::<bool>(),
        policy in starttls(),
        tls_ok in prop::collection::vec(any::<bool>(), 0..3),
    ) {
        drive(
            ClientSession::new(config(pipelining, policy)),
            reads.into(),
            messages.into(),
            tls_ok.into(),
        );
    }

    #[test]
    fn arbitrary_bytes_end_in_close_without_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        messages in prop::collection::vec(outbound(), 0..3),
    ) {
        let mut reads: Vec<Vec<u8>> = vec![b"220 mx\r\n".to_vec(), b"250 mx\r\n".to_vec()];
        reads.extend(cut(&bytes, &cuts));
        drive(
            ClientSession::new(config(true, StartTls::Opportunistic)),
            reads.into(),
            messages.into(),
            VecDeque::new(),
        );
    }
}

/// What a well-behaved server answers to one transaction, grouped as it would arrive,
/// and the results the client must report. Mirrors RFC 5321 §3.3 and RFC 2920 §3.1.
struct Model {
    turns: Vec<String>,
    expected: Vec<DeliveryStatus>,
    /// Whether the server holds the transaction open afterwards (so RSET comes next).
    open: bool,
}

fn status(code: u16) -> DeliveryStatus {
    match code / 100 {
        2 => DeliveryStatus::Delivered,
        4 => DeliveryStatus::Temporary,
        _ => DeliveryStatus::Permanent,
    }
}

fn model(pipelined: bool, rset: bool, mail: u16, rcpts: &[u16], data: u16, end: u16) -> Model {
    let line = |code: u16| format!("{code} {}.0.0 reply {code}\r\n", code / 100);
    let mail_ok = mail / 100 == 2;
    let any_rcpt = mail_ok && rcpts.iter().any(|c| c / 100 == 2);
    // A server refuses DATA without a transaction or without any accepted recipient.
    let data = if !mail_ok {
        503
    } else if !any_rcpt {
        554
    } else {
        data
    };
    let mut turns = Vec::new();
    if pipelined {
        let mut batch = if rset { line(250) } else { String::new() };
        batch += &line(mail);
        for &c in rcpts {
            batch += &line(if mail_ok { c } else { 503 });
        }
        batch += &line(data);
        turns.push(batch);
        if data == 354 {
            turns.push(line(end));
        }
    } else {
        if rset {
            turns.push(line(250));
        }
        turns.push(line(mail));
        if mail_ok {
            turns.extend(rcpts.iter().map(|&c| line(c)));
            if any_rcpt {
                turns.push(line(data));
                if data == 354 {
                    turns.push(line(end));
                }
            }
        }
    }
    let expected = rcpts
        .iter()
        .map(|&c| {
            if !mail_ok {
                status(mail)
            } else if c / 100 != 2 {
                status(c)
            } else if data != 354 {
                status(data)
            } else {
                status(end)
            }
        })
        .collect();
    Model {
        turns,
        expected,
        open: mail_ok && (data != 354),
    }
}

proptest! {
    #![proptest_config(fast(256))]

    /// Two transactions over one connection with random replies, pipelined or not, with
    /// every read cut at random points: the results follow the model, RSET comes exactly
    /// when the first transaction was left open, and the writes are the same as with
    /// uncut reads.
    #[test]
    fn transactions_follow_the_model_whatever_the_cuts(
        pipelining in any::<bool>(),
        tx in prop::collection::vec(
            (
                prop::sample::select(vec![250u16, 451, 550]),
                prop::collection::vec(prop::sample::select(vec![250u16, 251, 450, 452, 550, 553]), 1..5),
                prop::sample::select(vec![354u16, 451, 554]),
                prop::sample::select(vec![250u16, 452, 552]),
            ),
            2,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let ehlo = if pipelining {
            "250-mx.test\r\n250-PIPELINING\r\n250 ENHANCEDSTATUSCODES\r\n"
        } else {
            "250-mx.test\r\n250 ENHANCEDSTATUSCODES\r\n"
        };
        let mut turns = vec!["220 mx.test ESMTP\r\n".to_owned(), ehlo.to_owned()];
        let mut messages = VecDeque::new();
        let mut expected = Vec::new();
        let mut rset = false;
        for (n, (mail, rcpts, data, end)) in tx.iter().enumerate() {
            let m = model(pipelining, rset, *mail, rcpts, *data, *end);
            turns.extend(m.turns);
            expected.push(m.expected);
            rset = m.open;
            let recipients = (0..rcpts.len()).map(|i| format!("r{n}-{i}@example.org")).collect();
            messages.push_back(OutboundMessage::new("s@example.net", recipients, b".x\r\n".to_vec()));
        }
        turns.push("221 2.0.0 Bye\r\n".to_owned());

        let whole: VecDeque<Vec<u8>> = turns.iter().map(|t| t.clone().into_bytes()).collect();
        let config = config(true, StartTls::Opportunistic);
        let reference = drive(ClientSession::new(config.clone()), whole, messages.clone(), VecDeque::new());

        // Each read cut into pieces; a piece never reaches into the next read, since a
        // server only answers what it has been sent.
        let mut pieces = VecDeque::new();
        for (i, t) in turns.iter().enumerate() {
            let mine: Vec<usize> = cuts.iter().skip(i).step_by(turns.len()).copied().collect();
            pieces.extend(cut(t.as_bytes(), &mine));
        }
        let cut_run = drive(ClientSession::new(config), pieces, messages, VecDeque::new());
        prop_assert_eq!(cut_run.without_receives(), reference.without_receives());

        let got: Vec<Vec<DeliveryStatus>> = reference
            .done()
            .iter()
            .map(|o| o.recipients.iter().map(|r| r.status).collect())
            .collect();
        prop_assert_eq!(got, expected);
        let Some(Action::Close(close)) = reference.actions.last() else { unreachable!() };
        prop_assert_eq!(close.reason, CloseReason::Quit);
        prop_assert!(reference.done().iter().all(|o| o.recipients.iter().all(|r| r.remote)));

        let rsets = reference
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Send { bytes, .. } if bytes.starts_with(b"RSET")))
            .count();
        let first_open = model(pipelining, false, tx[0].0, &tx[0].1, tx[0].2, tx[0].3).open;
        prop_assert_eq!(rsets, usize::from(first_open));
        // Without pipelining, never more than one command in a write.
        if !pipelining {
            for a in &reference.actions {
                if let Action::Send { bytes, timeout } = a
                    && *timeout != Phase::DataBlock
                {
                    prop_assert_eq!(bytes.windows(2).filter(|w| w == b"\r\n").count(), 1);
                }
            }
        }
    }
}
