//! The client session talking to the crate's own server session, in memory: whatever the
//! client sends goes into the server, whatever the server replies goes into the client.
//! The body the server receives must be the one the client was given, octet for octet.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use mx_smtp::client::{Action, StartTls};
use mx_smtp::{
    ClientConfig, ClientSession, CloseReason, DeliveryStatus, EnhancedStatus, Event, Message,
    MessageDecision, MessageOutcome, OutboundMessage, PeerInfo, RcptDecision, Reply, ServerConfig,
    ServerSession,
};
use proptest::prelude::*;

struct Pair {
    client: ClientSession,
    server: ServerSession,
    /// Replies written by the server and not yet read by the client.
    wire: Vec<u8>,
    /// What the server's policy saw and stored.
    received: Vec<Message>,
    outcomes: Vec<MessageOutcome>,
    client_tls: usize,
    server_tls: usize,
}

impl Pair {
    fn new(client: ClientConfig, server: ServerConfig) -> Self {
        let peer = PeerInfo {
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
            tls: false,
        };
        let server = ServerSession::new(Arc::new(server), peer);
        let wire = server.greeting().to_bytes();
        Self {
            client: ClientSession::new(client),
            server,
            wire,
            received: Vec::new(),
            outcomes: Vec::new(),
            client_tls: 0,
            server_tls: 0,
        }
    }

    /// Runs the server on what it has been fed, answering its decisions: every recipient
    /// whose local part starts with `nobody` is refused, everything else accepted.
    fn serve(&mut self) {
        while let Some(event) = self.server.next_event() {
            match event {
                Event::Reply(reply) => self.wire.extend_from_slice(&reply.to_bytes()),
                Event::StartTls => {
                    self.server_tls += 1;
                    self.server.tls_started().unwrap();
                }
                Event::CheckRecipient { address, .. } => {
                    let decision = if address.starts_with("nobody") {
                        RcptDecision::Reject(Reply::new(
                            550,
                            EnhancedStatus::new(5, 1, 1),
                            "No such user",
                        ))
                    } else {
                        RcptDecision::Accept
                    };
                    self.server.recipient_decision(decision).unwrap();
                }
                Event::Authenticate { .. } => panic!("the client does not authenticate"),
                Event::Message(message) => {
                    self.received.push(message);
                    let queue_id = format!("Q{}", self.received.len());
                    self.server
                        .message_decision(MessageDecision::Accepted { queue_id })
                        .unwrap();
                }
                Event::Close => {}
            }
        }
    }

    /// Delivers `messages` and returns how the connection ended.
    fn run(&mut self, messages: Vec<OutboundMessage>) -> mx_smtp::ConnectionOutcome {
        let mut messages = VecDeque::from(messages);
        for _ in 0..100_000 {
            match self.client.next_action() {
                Action::Send { bytes, .. } => {
                    self.server.feed(&bytes);
                    self.serve();
                }
                Action::Receive { .. } => {
                    assert!(!self.wire.is_empty(), "both sides wait: deadlock");
                    let bytes = std::mem::take(&mut self.wire);
                    self.client.feed(&bytes);
                }
                Action::StartTls => {
                    self.client_tls += 1;
                    self.client.tls_started().unwrap();
                }
                Action::Ready => match messages.pop_front() {
                    Some(m) => self.client.send_message(m).unwrap(),
                    None => self.client.quit().unwrap(),
                },
                Action::MessageDone(outcome) => self.outcomes.push(outcome),
                Action::Close(outcome) => {
                    assert!(self.server.is_closed(), "the server saw QUIT");
                    return outcome;
                }
            }
        }
        panic!("no Close");
    }
}

fn client_config(pipelining: bool) -> ClientConfig {
    ClientConfig {
        helo_name: "relay.test".into(),
        pipelining,
        ..ClientConfig::default()
    }
}

fn server_config(starttls: bool) -> ServerConfig {
    ServerConfig {
        hostname: "mx.test".into(),
        starttls_available: starttls,
        ..ServerConfig::default()
    }
}

fn message(recipients: &[&str], body: &[u8]) -> OutboundMessage {
    OutboundMessage::new(
        "alice@example.net",
        recipients.iter().map(|r| r.to_string()).collect(),
        body.to_vec(),
    )
}

/// What the server must store: the body, with a CRLF added when its last line had none.
fn on_the_wire(body: &[u8]) -> Vec<u8> {
    let mut want = body.to_vec();
    if !want.is_empty() && !want.ends_with(b"\r\n") {
        want.extend_from_slice(b"\r\n");
    }
    want
}

#[test]
fn delivery_through_starttls_with_one_refused_recipient() {
    let body = b".leading dot\r\n..two dots\r\n.\r\nSubject: x\r\n\r\n.\r\nend";
    let mut p = Pair::new(client_config(true), server_config(true));
    let close = p.run(vec![
        message(
            &["bob@example.org", "nobody@example.org", "carol@example.org"],
            body,
        ),
        message(&["dave@example.org"], b"second\r\n"),
    ]);
    assert_eq!(close.reason, CloseReason::Quit);
    assert_eq!(close.reply.code(), 221);
    assert!(close.tls && p.client.is_tls() && p.server.is_tls());
    assert_eq!((p.client_tls, p.server_tls), (1, 1));

    assert_eq!(p.received.len(), 2);
    assert_eq!(p.received[0].body, on_the_wire(body));
    assert_eq!(
        p.received[0].envelope.recipients,
        ["bob@example.org", "carol@example.org"]
    );
    assert_eq!(
        p.received[0].envelope.declared_size,
        Some(body.len() as u64)
    );
    assert!(p.received[0].envelope.tls && p.received[0].envelope.esmtp);
    assert_eq!(p.received[0].envelope.helo, "relay.test");
    assert_eq!(p.received[1].body, b"second\r\n");

    let statuses: Vec<(DeliveryStatus, String)> = p.outcomes[0]
        .recipients
        .iter()
        .map(|r| (r.status, r.reply.to_string()))
        .collect();
    assert_eq!(
        statuses,
        [
            (
                DeliveryStatus::Delivered,
                "250 2.0.0 Ok: queued as Q1\r\n".to_owned()
            ),
            (
                DeliveryStatus::Permanent,
                "550 5.1.1 No such user\r\n".to_owned()
            ),
            (
                DeliveryStatus::Delivered,
                "250 2.0.0 Ok: queued as Q1\r\n".to_owned()
            ),
        ]
    );
    assert!(p.outcomes[1].all_delivered());
}

#[test]
fn all_refused_then_rset_then_delivery() {
    for pipelining in [false, true] {
        let mut p = Pair::new(client_config(pipelining), server_config(false));
        let close = p.run(vec![
            message(&["nobody1@example.org", "nobody2@example.org"], b"lost\r\n"),
            message(&["bob@example.org"], b"found\r\n"),
        ]);
        assert_eq!(close.reason, CloseReason::Quit);
        assert_eq!(p.received.len(), 1);
        assert_eq!(p.received[0].body, b"found\r\n");
        assert!(
            p.outcomes[0]
                .recipients
                .iter()
                .all(|r| r.status == DeliveryStatus::Permanent)
        );
        assert!(p.outcomes[1].all_delivered());
    }
}

#[test]
fn eight_bit_and_utf8_go_through_with_their_parameters() {
    let mut m = message(
        &["josé@example.org"],
        "Subject: é\r\n\r\ncafé\r\n".as_bytes(),
    );
    m.mail_from = "jörg@example.net".into();
    assert!(m.body_8bit && m.smtputf8);
    let mut p = Pair::new(client_config(true), server_config(false));
    p.run(vec![m]);
    let env = &p.received[0].envelope;
    assert!(env.smtputf8);
    assert_eq!(env.body_type, mx_smtp::BodyType::EightBitMime);
    assert_eq!(env.recipients, ["josé@example.org"]);
    assert_eq!(env.mail_from.as_deref(), Some("jörg@example.net"));
}

#[test]
fn too_big_for_the_server_is_refused_before_sending() {
    let server = ServerConfig {
        max_message_size: 10,
        ..server_config(false)
    };
    let mut p = Pair::new(client_config(true), server);
    p.run(vec![message(&["bob@example.org"], b"0123456789abcdef\r\n")]);
    assert!(p.received.is_empty());
    let r = &p.outcomes[0].recipients[0];
    assert_eq!(
        (r.status, r.reply.code(), r.remote),
        (DeliveryStatus::Permanent, 552, false)
    );
}

#[test]
fn opportunistic_tls_not_offered_and_never() {
    let mut p = Pair::new(client_config(true), server_config(false));
    p.run(vec![message(&["bob@example.org"], b"x\r\n")]);
    assert!(!p.client.is_tls() && p.client_tls == 0);
    let mut p = Pair::new(
        ClientConfig {
            starttls: StartTls::Never,
            ..client_config(true)
        },
        server_config(true),
    );
    p.run(vec![message(&["bob@example.org"], b"x\r\n")]);
    assert!(!p.client.is_tls() && p.server_tls == 0);
    assert_eq!(p.received.len(), 1);
}

/// Lines of a body: printable text, with dots where they matter most.
fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        Just(String::new()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        "\\.[ -~]{0,20}",
        "[ -~]{0,40}",
        "[ -~]{0,10}\\.[ -~]{0,10}",
    ];
    (prop::collection::vec(line, 0..30), any::<bool>()).prop_map(|(lines, last_crlf)| {
        let mut body = lines.join("\r\n");
        if last_crlf && !lines.is_empty() {
            body.push_str("\r\n");
        }
        body.into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Dot-stuffing by the client and unstuffing by the server give the body back, for
    /// several messages on one connection, pipelined or not, in blocks of any size.
    #[test]
    fn bodies_round_trip(
        bodies in prop::collection::vec(body_strategy(), 1..4),
        pipelining in any::<bool>(),
        starttls in any::<bool>(),
        block in 1usize..64,
    ) {
        let config = ClientConfig {
            data_block_size: block,
            ..client_config(pipelining)
        };
        let mut p = Pair::new(config, server_config(starttls));
        let messages = bodies
            .iter()
            .map(|b| message(&["bob@example.org", "nobody@example.org"], b))
            .collect();
        let close = p.run(messages);
        prop_assert_eq!(close.reason, CloseReason::Quit);
        prop_assert_eq!(p.received.len(), bodies.len());
        for (got, body) in p.received.iter().zip(&bodies) {
            prop_assert_eq!(&got.body, &on_the_wire(body));
            prop_assert_eq!(&got.envelope.recipients, &["bob@example.org".to_owned()]);
        }
        for outcome in &p.outcomes {
            let statuses: Vec<DeliveryStatus> = outcome.recipients.iter().map(|r| r.status).collect();
            prop_assert_eq!(statuses, [DeliveryStatus::Delivered, DeliveryStatus::Permanent]);
        }
    }
}
